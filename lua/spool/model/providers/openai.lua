-- spool.model.providers.openai: the OpenAI Chat Completions wire format, spoken by
-- OpenAI and by every OpenAI-compatible server (vLLM, llama.cpp, Ollama,
-- LM Studio). Pure functions: build a request, parse a response, follow a
-- stream's events. No I/O (spool.llm does that).
--
-- Every provider module has this shape: build(model, req) -> { path,
-- headers, body }, authorize(headers, key), error_message(body), parse(body)
-- -> reply | nil, err, and stream(on_text) -> { event(ev), reply() }.
--
-- Messages arrive in spool's neutral chat form (see spool.context) and
-- leave in the provider's: assistant tool calls become
-- { id, type = "function", ["function"] = { name, arguments } }.

local core = require "spool.core"
local json = require "spool.json"
local wire = require "spool.model.wire"

local M = {}


local function convert_message(m)
  if m.role == "assistant" then
    local out = { role = "assistant", content = m.content or json.null }
    if m.tool_calls and #m.tool_calls > 0 then
      local calls = json.array()
      local from = m.tool_calls
      for i = 1, #from do
        local c = from[i]
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


local function wire_tool(t)
  return { type = "function", ["function"] = { name = t.name,
    description = t.description, parameters = t.parameters } }
end


-- The body as Lua writes it: what core.chat_body must write byte for byte
-- (spec/wire_spec.lua), and what names a value no JSON can hold.
local function body_in_lua(model, req, tools)
  local messages = json.array()
  if req.system and req.system ~= "" then
    messages[1] = { role = "system", content = req.system }
  end
  local from = req.messages or {}
  for i = 1, #from do
    messages[#messages + 1] = convert_message(from[i])
  end
  local body = { model = model.name, messages = messages, tools = tools }
  if req.json then
    body.response_format = { type = "json_object" }
  end
  body.temperature = req.temperature or model.temperature
  body.max_tokens = req.max_tokens or model.max_tokens
  if req.stream then
    body.stream = true
    body.stream_options = { include_usage = true }
  end
  return json.encode(body)
end


local NO_MESSAGES = {}

-- Builds { path, headers, body } for a chat request. `req` holds system,
-- messages, tools ({ name, description, parameters }), json, temperature,
-- max_tokens, tools_wire, message_forms (the messages' forms kept from
-- step to step, spool.run.request). The body is written in C
-- (core.chat_body); a value that writer does not take is left to the Lua
-- one, which says what is wrong with it.
function M.build(model, req)
  local tools = req.tools and #req.tools > 0
    and wire.tools_json(req, "openai", wire_tool) or nil
  local ok, body = pcall(core.chat_body, model.name, req.system,
    req.messages or NO_MESSAGES, tools, req.json,
    req.temperature or model.temperature, req.max_tokens or model.max_tokens,
    req.stream, req.message_forms)
  if not ok then
    body = body_in_lua(model, req, tools)
  end
  return {
    path = "/chat/completions",
    headers = { ["content-type"] = "application/json" },
    body = body,
  }
end


-- Adds the key's header; kept apart from build so a rendered request
-- (spool prompt) never holds a secret.
function M.authorize(headers, key)
  headers["authorization"] = "Bearer " .. key
end


-- The provider's own error message from an error object or body.
local function message_of(err)
  if type(err) == "table" and type(err.message) == "string" then
    return err.message
  elseif type(err) == "string" then
    return err
  end
end


function M.error_message(body)
  return wire.error_message(body, message_of)
end


local USAGE = { input = "prompt_tokens", output = "completion_tokens",
                input_details = "prompt_tokens_details",
                output_details = "completion_tokens_details" }

local function usage_of(u)
  return wire.openai_usage(u, USAGE)
end


-- Parses a successful response into a normalized reply:
-- { text, tool_calls = { { id, name, arguments } }, finish_reason, usage =
-- { input_tokens, output_tokens, total_tokens, cached_tokens,
-- reasoning_tokens }, id }.
-- `arguments` stay the raw string the model produced. The common shape
-- is read in C, straight into the reply (core.chat_reply); this reads
-- every other (and says what is wrong with a body that is no reply).
local function parse_document(body)
  local doc, err = wire.decode(body)
  if not doc then
    return nil, err
  end
  local choice = type(doc.choices) == "table" and doc.choices[1]
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
  -- A refusal comes with content null and finish_reason "stop": its text
  -- is the reply, and the model declined (as in the Responses API).
  if (reply.text or "") == "" and type(msg.refusal) == "string"
      and msg.refusal ~= "" then
    reply.text = msg.refusal
    reply.finish_reason = "content_filter"
  end
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
  reply.usage = usage_of(doc.usage)
  return reply
end


function M.parse(body)
  local reply = core.chat_reply(body)
  if reply then
    return reply
  end
  return parse_document(body)
end


-- A streamed reply, event by event (spool.llm feeds it). `on_text` gets
-- each piece of text as it arrives (a refusal's is not streamed: it is
-- the reply's text). Chunks carry deltas: tool calls are
-- keyed by index, their arguments arrive in fragments; the last chunk
-- (stream_options.include_usage) has the usage and no choices; "[DONE]"
-- ends the stream. A chunk of the common shape is read in C, straight
-- into the state (core.chat_chunk); from the first that is not, the
-- chunks are read here.
function M.stream(on_text)
  local st = { text = {}, refusal = {}, calls = {}, usage = usage_of(nil) }
  local acc = {}
  local general = false

  -- Takes one event; returns true at the end of the stream, or nil and
  -- { message, retryable } for an error the provider reported in it.
  function acc.event(ev)
    if ev.data == "[DONE]" then
      st.done = true
      return true
    end
    if not general then
      local taken, text = core.chat_chunk(ev.data, st)
      if taken then
        if text and on_text then on_text(text) end
        return
      end
      general = true
    end
    local doc = json.decode(ev.data)
    if type(doc) ~= "table" then
      return nil, { message = "a stream chunk is not JSON: "
        .. ev.data:sub(1, 80) }
    end
    if doc.error ~= nil then
      return nil, { message = message_of(doc.error) or "error in the stream",
                    retryable = true }
    end
    st.id = st.id or doc.id
    if type(doc.usage) == "table" then
      st.usage = usage_of(doc.usage)
    end
    for _, choice in ipairs(type(doc.choices) == "table" and doc.choices or {})
    do
      local delta = type(choice) == "table" and choice.delta
      if type(delta) == "table" then
        if type(delta.content) == "string" and delta.content ~= "" then
          st.text[#st.text + 1] = delta.content
          if on_text then on_text(delta.content) end
        end
        if type(delta.refusal) == "string" and delta.refusal ~= "" then
          st.refusal[#st.refusal + 1] = delta.refusal
        end
        for _, tc in ipairs(type(delta.tool_calls) == "table"
            and delta.tool_calls or {}) do
          local i = (math.tointeger(tc.index) or #st.calls) + 1
          local call = st.calls[i] or { arguments = {} }
          st.calls[i] = call
          local fn = type(tc["function"]) == "table" and tc["function"] or {}
          call.id = call.id or (type(tc.id) == "string" and tc.id or nil)
          call.name = call.name or (type(fn.name) == "string" and fn.name
            or nil)
          if type(fn.arguments) == "string" then
            call.arguments[#call.arguments + 1] = fn.arguments
          end
        end
      end
      if type(choice) == "table" and type(choice.finish_reason) == "string"
      then
        st.finish_reason = choice.finish_reason
      end
    end
  end

  -- The reply, once the stream ended; nil and a message if it was cut.
  function acc.reply()
    if not st.done and not st.finish_reason then
      return nil, "the stream ended before the reply was complete"
    end
    local reply = { id = st.id, tool_calls = {}, usage = st.usage,
                    finish_reason = st.finish_reason,
                    text = #st.text > 0 and table.concat(st.text) or nil }
    if not reply.text and #st.refusal > 0 then
      reply.text = table.concat(st.refusal)
      reply.finish_reason = "content_filter"
    end
    for i = 1, #st.calls do
      local c = st.calls[i]
      if not c or not c.name then
        return nil, string.format("tool call %d has no function name", i)
      end
      reply.tool_calls[i] = { id = c.id or string.format("call_%d", i),
        name = c.name, arguments = table.concat(c.arguments) }
    end
    return reply
  end

  return acc
end


return M
