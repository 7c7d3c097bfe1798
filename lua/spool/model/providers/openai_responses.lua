-- spool.model.providers.openai_responses: the OpenAI Responses API (POST
-- /v1/responses), after its published reference. Pure functions, the
-- shape of spool.model.providers.openai.
--
-- The conversation goes in `input` as items: messages by role, an
-- assistant's tool calls as function_call items and their results as
-- function_call_output items, paired by call_id. The system prompt is
-- `instructions`. spool keeps the thread itself, so every request sends
-- the whole input with store = false.

local core = require "spool.core"
local json = require "spool.json"
local wire = require "spool.model.wire"

local M = {}


local function convert(messages)
  local input = json.array()
  for _, m in ipairs(messages or {}) do
    if m.role == "assistant" then
      if m.content and m.content ~= "" and m.content ~= json.null then
        input[#input + 1] = { role = "assistant", content = m.content }
      end
      for _, c in ipairs(m.tool_calls or {}) do
        input[#input + 1] = { type = "function_call", call_id = c.id,
                              name = c.name, arguments = c.arguments }
      end
    elseif m.role == "tool" then
      input[#input + 1] = { type = "function_call_output",
                            call_id = m.tool_call_id, output = m.content }
    else
      input[#input + 1] = { role = m.role, content = m.content }
    end
  end
  return input
end


local function wire_tool(t)
  return { type = "function", name = t.name, description = t.description,
           parameters = t.parameters }
end


-- The body as Lua writes it: what core.responses_body must write byte for
-- byte (spec/wire_spec.lua), and what names a value no JSON can
-- hold.
local function body_in_lua(model, req, messages, tools)
  local body = { model = model.name, input = convert(messages),
                 store = false, tools = tools }
  if req.system and req.system ~= "" then
    body.instructions = req.system
  end
  if req.json then
    body.text = { format = { type = "json_object" } }
  end
  body.temperature = req.temperature or model.temperature
  body.max_output_tokens = req.max_tokens or model.max_tokens
  if req.stream then
    body.stream = true
  end
  return json.encode(body)
end


local NO_MESSAGES = {}

-- Builds { path, headers, body }; req as spool.model.providers.openai's
-- build takes it. The body is written in C (core.responses_body); a value
-- that writer does not take is left to the Lua one, which says what is
-- wrong with it.
function M.build(model, req)
  local tools = req.tools and #req.tools > 0
    and wire.tools_json(req, "openai-responses", wire_tool) or nil
  local messages = req.messages or NO_MESSAGES
  local ok, body = pcall(core.responses_body, model.name, req.system,
    messages, tools, req.json, req.temperature or model.temperature,
    req.max_tokens or model.max_tokens, req.stream, req.message_forms)
  if not ok then
    body = body_in_lua(model, req, messages, tools)
  end
  return {
    path = "/responses",
    headers = { ["content-type"] = "application/json" },
    body = body,
  }
end


-- The key goes as with Chat Completions.
M.authorize = require("spool.model.providers.openai").authorize


local function message_of(err)
  if type(err) == "table" and type(err.message) == "string" then
    return type(err.code) == "string" and (err.code .. ": " .. err.message)
      or err.message
  end
end


function M.error_message(body)
  return wire.error_message(body, message_of)
end


local USAGE = { input = "input_tokens", output = "output_tokens",
                input_details = "input_tokens_details",
                output_details = "output_tokens_details" }

local function usage_of(u)
  return wire.openai_usage(u, USAGE)
end


local INCOMPLETE = { max_output_tokens = "length",
                     content_filter = "content_filter" }


-- How a response ended, as spool says it.
local function finish_of(status, reason, refused, ncalls)
  if status == "incomplete" then
    return INCOMPLETE[reason] or "length"
  elseif refused then
    return "content_filter"
  elseif ncalls > 0 then
    return "tool_calls"
  end
  return "stop"
end


-- A reply from a response object (the body, or the one response.completed
-- carries). Reasoning and other item types are skipped.
local function reply_of(doc)
  if doc.status == "failed" then
    return nil, "the response failed: "
      .. (message_of(doc.error) or "no reason given")
  end
  if type(doc.output) ~= "table" then
    return nil, "the response has no output"
  end
  local reply = { id = doc.id, tool_calls = {}, usage = usage_of(doc.usage) }
  local text, refused = {}, false
  for _, item in ipairs(doc.output) do
    if type(item) == "table" and item.type == "message" then
      for _, part in ipairs(type(item.content) == "table" and item.content
          or {}) do
        if type(part) == "table" and part.type == "output_text"
            and type(part.text) == "string" then
          text[#text + 1] = part.text
        elseif type(part) == "table" and part.type == "refusal" then
          refused = true
          text[#text + 1] = part.refusal
        end
      end
    elseif type(item) == "table" and item.type == "function_call" then
      if type(item.name) ~= "string" then
        return nil, "a function_call item has no name"
      end
      reply.tool_calls[#reply.tool_calls + 1] = {
        id = item.call_id or item.id, name = item.name,
        arguments = type(item.arguments) == "string" and item.arguments
          or "{}" }
    end
  end
  reply.text = #text > 0 and table.concat(text) or nil
  local details = type(doc.incomplete_details) == "table"
    and doc.incomplete_details or {}
  reply.finish_reason = finish_of(doc.status, details.reason, refused,
    #reply.tool_calls)
  return reply
end


-- Parses a response into spool's reply (see spool.model.providers.openai).
-- The common shape is read in C, the fields this reads
-- (core.responses_reply); this reads every other, and says what is wrong
-- with a body that is no reply.
function M.parse(body)
  local fast = core.responses_reply(body)
  if fast then
    local calls = fast.tool_calls
    for _, c in ipairs(calls) do
      c.arguments = c.arguments or "{}"
    end
    return { id = fast.id, text = fast.text, tool_calls = calls,
             usage = usage_of(fast.usage),
             finish_reason = finish_of(fast.status, fast.reason,
               fast.refused, #calls) }
  end
  local doc, err = wire.decode(body)
  if not doc then
    return nil, err
  end
  return reply_of(doc)
end


-- A streamed response: typed events (response.created, ...
-- output_item.added, output_text.delta, function_call_arguments.delta,
-- output_item.done, ...) ending in response.completed (or .incomplete),
-- which carries the whole response; response.failed and error end it
-- with an error. Text deltas go to on_text; the final response is the
-- reply, with the items gathered from the events when its output is empty.
-- The events it only shows or skips are read in C (core.stream_event), the
-- rest decoded whole.
local DECODED = { ["response.output_item.added"] = true,
  ["response.output_item.done"] = true, ["response.completed"] = true,
  ["response.incomplete"] = true, ["response.failed"] = true, error = true }

function M.stream(on_text)
  local st = { items = {} }
  local acc = {}

  function acc.event(ev)
    local kind, _, delta = core.stream_event(ev.data)
    if kind ~= nil and not DECODED[kind] then
      if kind == "response.output_text.delta" and delta and on_text then
        on_text(delta)
      end
      return
    end
    local doc = json.decode(ev.data)
    if type(doc) ~= "table" then
      return nil, { message = "a stream event is not JSON: "
        .. ev.data:sub(1, 80) }
    end
    local kind = doc.type or ev.type
    local at = (math.tointeger(doc.output_index) or 0) + 1
    if kind == "response.output_text.delta" and type(doc.delta) == "string"
    then
      if on_text then on_text(doc.delta) end
    elseif kind == "response.output_item.added"
        or kind == "response.output_item.done" then
      st.items[at] = doc.item
    elseif kind == "response.completed" or kind == "response.incomplete" then
      st.final = type(doc.response) == "table" and doc.response or {}
      return true
    elseif kind == "response.failed" then
      local r = type(doc.response) == "table" and doc.response or {}
      return nil, { message = "the response failed: "
        .. (message_of(r.error) or "no reason given"), retryable = true }
    elseif kind == "error" then
      local e = type(doc.error) == "table" and doc.error or doc
      return nil, { message = message_of(e) or "error in the stream",
                    retryable = true }
    end
  end

  function acc.reply()
    if not st.final then
      return nil, "the stream ended before response.completed"
    end
    local doc = st.final
    if type(doc.output) ~= "table" or #doc.output == 0 then
      local items = json.array()
      for i = 1, #st.items do
        items[#items + 1] = st.items[i]
      end
      doc.output = items
    end
    return reply_of(doc)
  end

  return acc
end


return M
