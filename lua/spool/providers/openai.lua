-- spool.providers.openai: the OpenAI Chat Completions wire format, spoken by
-- OpenAI and by every OpenAI-compatible server (vLLM, llama.cpp, Ollama,
-- LM Studio). Pure functions: build a request, parse a response. No I/O.
--
-- Messages arrive in spool's neutral chat form (see spool.context) and
-- leave in the provider's: assistant tool calls become
-- { id, type = "function", ["function"] = { name, arguments } }.

local json = require "spool.json"

local M = {}


local function convert_message(m)
  if m.role == "assistant" then
    local out = { role = "assistant", content = m.content or json.null }
    if m.tool_calls and #m.tool_calls > 0 then
      local calls = json.array()
      for i, c in ipairs(m.tool_calls) do
        calls[i] = { id = c.id, type = "function",
                     ["function"] = { name = c.name, arguments = c.arguments } }
      end
      out.tool_calls = calls
    end
    return out
  elseif m.role == "tool" then
    return { role = "tool", tool_call_id = m.tool_call_id,
             content = m.content }
  end
  return { role = m.role, content = m.content }
end


-- Builds { path, headers, body } for a chat request. `req` holds system,
-- messages, tools ({ name, description, parameters }), json, temperature,
-- max_tokens.
function M.build(model, req)
  local messages = json.array()
  if req.system and req.system ~= "" then
    messages[1] = { role = "system", content = req.system }
  end
  for _, m in ipairs(req.messages or {}) do
    messages[#messages + 1] = convert_message(m)
  end
  local body = { model = model.name, messages = messages }
  if req.tools and #req.tools > 0 then
    local tools = json.array()
    for i, t in ipairs(req.tools) do
      tools[i] = { type = "function", ["function"] = {
        name = t.name, description = t.description,
        parameters = t.parameters } }
    end
    body.tools = tools
  end
  if req.json then
    body.response_format = { type = "json_object" }
  end
  body.temperature = req.temperature or model.temperature
  body.max_tokens = req.max_tokens or model.max_tokens
  return {
    path = "/chat/completions",
    headers = { ["content-type"] = "application/json" },
    body = json.encode(body),
  }
end


-- Adds the key's header; kept apart from build so a rendered request
-- (spool prompt) never holds a secret.
function M.authorize(headers, key)
  headers["authorization"] = "Bearer " .. key
end


-- The provider's own error message from an error response body, if any.
function M.error_message(body)
  local doc = json.decode(body or "")
  if type(doc) == "table" and type(doc.error) == "table"
      and type(doc.error.message) == "string" then
    return doc.error.message
  elseif type(doc) == "table" and type(doc.error) == "string" then
    return doc.error
  end
end


-- Parses a successful response into a normalized reply:
-- { text, tool_calls = { { id, name, arguments } }, finish_reason, usage =
-- { input_tokens, output_tokens, total_tokens, cached_tokens }, id }.
-- `arguments` stay the raw string the model produced.
function M.parse(body)
  local doc, err = json.decode(body)
  if not doc then
    return nil, "the response is not JSON (" .. err .. ")"
  end
  local choice = type(doc) == "table" and type(doc.choices) == "table"
    and doc.choices[1]
  if type(choice) ~= "table" or type(choice.message) ~= "table" then
    return nil, "the response has no choices[1].message"
  end
  local msg = choice.message
  local reply = {
    id = doc.id,
    text = type(msg.content) == "string" and msg.content or nil,
    tool_calls = {},
    finish_reason = choice.finish_reason,
  }
  for i, c in ipairs(type(msg.tool_calls) == "table" and msg.tool_calls or {})
  do
    local fn = type(c) == "table" and c["function"]
    if type(fn) ~= "table" or type(fn.name) ~= "string" then
      return nil, string.format("tool call %d has no function name", i)
    end
    local args = fn.arguments
    if type(args) == "table" then
      args = json.encode(args) -- a few servers send an object, not a string
    elseif type(args) ~= "string" then
      args = "{}"
    end
    reply.tool_calls[i] = {
      id = type(c.id) == "string" and c.id or string.format("call_%d", i),
      name = fn.name,
      arguments = args,
    }
  end
  local u = type(doc.usage) == "table" and doc.usage or {}
  local details = type(u.prompt_tokens_details) == "table"
    and u.prompt_tokens_details or {}
  reply.usage = {
    input_tokens = math.tointeger(u.prompt_tokens) or 0,
    output_tokens = math.tointeger(u.completion_tokens) or 0,
    total_tokens = math.tointeger(u.total_tokens) or 0,
    cached_tokens = math.tointeger(details.cached_tokens),
  }
  return reply
end


return M
