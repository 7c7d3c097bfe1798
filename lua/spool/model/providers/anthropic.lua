-- spool.model.providers.anthropic: the Anthropic Messages API (POST /v1/messages),
-- after its published reference. Pure functions, the shape of
-- spool.model.providers.openai.
--
-- What differs from Chat Completions: the system prompt is a top-level
-- field; max_tokens is required; an assistant's tool calls are tool_use
-- content blocks whose input is an object; their results go back as
-- tool_result blocks in one user message; the key goes in x-api-key. There
-- is no JSON mode, so json = true asks for JSON in the system prompt.

local core = require "spool.core"
local json = require "spool.json"
local count = require("spool.tokens").count
local wire = require "spool.model.wire"

local M = {}

M.VERSION = "2023-06-01"

local DEFAULT_MAX_TOKENS = 4096

local JSON_ONLY = "Respond with one JSON object and nothing else."


-- Arguments are kept as the model's text; the API wants an object back.
local function input_of(arguments)
  local v = json.decode(arguments or "")
  if type(v) == "table" and not json.is_array(v) then
    return v
  end
  return {}
end


local function convert(messages)
  local out = json.array()
  local function push(role, block)
    local last = out[#out]
    if last and last.role == role then
      last.content[#last.content + 1] = block
    else
      out[#out + 1] = { role = role, content = json.array({ block }) }
    end
  end
  for _, m in ipairs(messages or {}) do
    if m.role == "assistant" then
      if m.content and m.content ~= "" and m.content ~= json.null then
        push("assistant", { type = "text", text = m.content })
      end
      for _, c in ipairs(m.tool_calls or {}) do
        push("assistant", { type = "tool_use", id = c.id, name = c.name,
                            input = input_of(c.arguments) })
      end
    elseif m.role == "tool" then
      push("user", { type = "tool_result", tool_use_id = m.tool_call_id,
                     content = m.content })
    else
      push("user", { type = "text", text = m.content })
    end
  end
  return out
end


local function wire_tool(t)
  return { name = t.name, description = t.description,
           input_schema = t.parameters }
end


-- The body as Lua writes it: what core.anthropic_body must write byte for
-- byte (spec/wire_spec.lua), and what names a value no JSON can hold.
local function body_in_lua(b, messages)
  local body = { model = b.model, max_tokens = b.max_tokens,
    messages = convert(messages), temperature = b.temperature,
    tools = b.tools, stream = b.stream and true or nil }
  if b.system and b.system ~= "" then
    body.system = b.system
  end
  return json.encode(body)
end


local NO_MESSAGES = {}

-- Builds { path, headers, body }; req as spool.model.providers.openai's
-- build takes it. The body is written in C (core.anthropic_body); a value
-- that writer does not take is left to the Lua one, which says what is
-- wrong with it.
function M.build(model, req)
  local system = req.system
  if req.json then
    system = (system and system ~= "") and (system .. "\n\n" .. JSON_ONLY)
      or JSON_ONLY
  end
  local b = { model = model.name, system = system,
    max_tokens = req.max_tokens or model.max_tokens or DEFAULT_MAX_TOKENS,
    temperature = req.temperature or model.temperature, stream = req.stream,
    tools = req.tools and #req.tools > 0
      and wire.tools_json(req, "anthropic", wire_tool) or nil }
  local messages = req.messages or NO_MESSAGES
  local ok, body = pcall(core.anthropic_body, b.model, b.system, messages,
    b.tools, b.max_tokens, b.temperature, b.stream, req.message_forms,
    input_of)
  if not ok then
    body = body_in_lua(b, messages)
  end
  return {
    path = "/messages",
    headers = { ["content-type"] = "application/json",
                ["anthropic-version"] = M.VERSION },
    body = body,
  }
end


function M.authorize(headers, key)
  headers["x-api-key"] = key
end


-- "overloaded_error: Overloaded" from { type = "error", error = { type,
-- message } }.
local function message_of(err)
  if type(err) ~= "table" then
    return nil
  end
  local msg = type(err.message) == "string" and err.message or "error"
  return type(err.type) == "string" and (err.type .. ": " .. msg) or msg
end


function M.error_message(body)
  return wire.error_message(body, message_of)
end


local FINISH = {
  end_turn = "stop", stop_sequence = "stop", pause_turn = "stop",
  tool_use = "tool_calls", max_tokens = "length", refusal = "content_filter",
}


-- Input tokens are split three ways: uncached, written to and read from
-- the prompt cache. spool's input_tokens is their sum. Output tokens may
-- come with output_tokens_details.thinking_tokens, the reasoning share.
local function usage_of(u, into)
  u = type(u) == "table" and u or {}
  into = into or {}
  local function n(k) return count(u[k]) end
  if n("input_tokens") or n("cache_read_input_tokens") then
    into.input_tokens = (n("input_tokens") or 0)
      + (n("cache_creation_input_tokens") or 0)
      + (n("cache_read_input_tokens") or 0)
    into.cached_tokens = n("cache_read_input_tokens")
    local written = n("cache_creation_input_tokens")
    into.cache_creation_tokens = written and written > 0 and written or nil
  end
  into.output_tokens = n("output_tokens") or into.output_tokens or 0
  -- Reasoning is part of output_tokens, broken out where reported.
  local details = type(u.output_tokens_details) == "table"
    and u.output_tokens_details or {}
  into.reasoning_tokens = count(details.thinking_tokens)
    or into.reasoning_tokens
  into.input_tokens = into.input_tokens or 0
  into.total_tokens = into.input_tokens + into.output_tokens
  return into
end


-- A reply from the content blocks of a message.
local function reply_of(id, blocks, stop_reason, usage)
  local reply = { id = id, tool_calls = {}, usage = usage,
                  finish_reason = FINISH[stop_reason] or stop_reason }
  local text = {}
  for _, b in ipairs(blocks) do
    if b.type == "text" and type(b.text) == "string" then
      text[#text + 1] = b.text
    elseif b.type == "tool_use" then
      if type(b.name) ~= "string" then
        return nil, "a tool_use block has no name"
      end
      local args = b.arguments
      if args == nil then
        args = json.encode(type(b.input) == "table" and b.input
          or {})
      end
      reply.tool_calls[#reply.tool_calls + 1] = {
        id = b.id or string.format("toolu_%d", #reply.tool_calls + 1),
        name = b.name, arguments = args }
    end
  end
  reply.text = #text > 0 and table.concat(text) or nil
  return reply
end


-- A tool's input as the Lua reader encodes it: its text decoded and
-- encoded again (keys sorted).
local function canonical(input)
  return input and json.encode(json.decode(input)) or "{}"
end


-- Parses a response into spool's reply (see spool.model.providers.openai).
-- The common shape is read in C, the fields this reads (core.anthropic_reply);
-- this reads every other, and says what is wrong with a body that is no
-- reply.
function M.parse(body)
  local fast = core.anthropic_reply(body)
  if fast then
    for _, c in ipairs(fast.tool_calls) do
      c.arguments = canonical(c.arguments)
    end
    return { id = fast.id, text = fast.text, tool_calls = fast.tool_calls,
             usage = usage_of(fast.usage),
             finish_reason = FINISH[fast.stop_reason] or fast.stop_reason }
  end
  local doc, err = wire.decode(body)
  if not doc then
    return nil, err
  elseif type(doc.content) ~= "table" then
    return nil, "the response has no content"
  end
  return reply_of(doc.id, doc.content, doc.stop_reason, usage_of(doc.usage))
end


-- A streamed message: message_start, then per content block a start, its
-- deltas (text_delta, input_json_delta with partial JSON of a tool's
-- input, thinking deltas that are skipped) and a stop; message_delta with
-- the stop reason and the output tokens so far; message_stop. ping events
-- come at any time; an error event may end the stream. A delta, a ping or
-- a block's stop is read in C (core.stream_event), the rest decoded whole.
local DECODED = { message_start = true, content_block_start = true,
                  message_delta = true, message_stop = true, error = true }

function M.stream(on_text)
  local st = { blocks = {}, usage = usage_of(nil) }
  local acc = {}

  -- A delta to a block that started, or an event this reader skips; false
  -- for one to decode.
  local function took(data)
    local kind, index, _, delta_type, text, partial = core.stream_event(data)
    if kind == "content_block_delta" then
      local b = st.blocks[(index or 0) + 1]
      if not b then
        return false -- (it says what is wrong)
      end
      if delta_type == "text_delta" and text then
        b.parts[#b.parts + 1] = text
        if on_text then on_text(text) end
      elseif delta_type == "input_json_delta" and partial then
        b.parts[#b.parts + 1] = partial
      end
      return true
    end
    return kind ~= nil and not DECODED[kind]
  end

  function acc.event(ev)
    if took(ev.data) then
      return
    end
    local doc = json.decode(ev.data)
    if type(doc) ~= "table" then
      return nil, { message = "a stream event is not JSON: "
        .. ev.data:sub(1, 80) }
    end
    local kind = doc.type or ev.type
    if kind == "message_start" and type(doc.message) == "table" then
      st.id = doc.message.id
      usage_of(doc.message.usage, st.usage)
    elseif kind == "content_block_start" then
      local b = type(doc.content_block) == "table" and doc.content_block or {}
      st.blocks[(math.tointeger(doc.index) or #st.blocks) + 1] = {
        type = b.type, id = b.id, name = b.name, input = b.input,
        parts = { type(b.text) == "string" and b.text or nil } }
    elseif kind == "content_block_delta" then
      local b = st.blocks[(math.tointeger(doc.index) or 0) + 1]
      local d = type(doc.delta) == "table" and doc.delta or {}
      if not b then
        return nil, { message = "a delta for a block that never started" }
      end
      if d.type == "text_delta" and type(d.text) == "string" then
        b.parts[#b.parts + 1] = d.text
        if on_text then on_text(d.text) end
      elseif d.type == "input_json_delta" and type(d.partial_json) == "string"
      then
        b.parts[#b.parts + 1] = d.partial_json
      end
    elseif kind == "message_delta" then
      local d = type(doc.delta) == "table" and doc.delta or {}
      st.stop_reason = d.stop_reason or st.stop_reason
      usage_of(doc.usage, st.usage)
    elseif kind == "message_stop" then
      st.done = true
      return true
    elseif kind == "error" then
      local e = type(doc.error) == "table" and doc.error or {}
      return nil, { message = message_of(e) or "error in the stream",
                    retryable = e.type == "overloaded_error"
                      or e.type == "api_error" or e.type == "rate_limit_error" }
    end
  end

  function acc.reply()
    if not st.done then
      return nil, "the stream ended before message_stop"
    end
    local blocks = {}
    for i = 1, #st.blocks do
      local b = st.blocks[i] or {}
      local joined = table.concat(b.parts or {})
      if b.type == "text" then
        blocks[#blocks + 1] = { type = "text", text = joined }
      elseif b.type == "tool_use" then
        -- The input arrives as JSON text in pieces; none means {}.
        blocks[#blocks + 1] = { type = "tool_use", id = b.id, name = b.name,
                                arguments = joined ~= "" and joined or "{}" }
      end
    end
    return reply_of(st.id, blocks, st.stop_reason, st.usage)
  end

  return acc
end


return M
