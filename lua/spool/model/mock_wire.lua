-- spool.model.mock_wire: the mock model's side of each provider's wire format.
-- It reads a request in any format into the Chat Completions shape the
-- mock's rules match on, and writes a result (what a rule decided) as the
-- format's response body or stream events, after the providers' published
-- references.
--
--   wire.format(path)               -> "openai" | "openai-responses" |
--                                      "anthropic" | nil
--   wire.chat_view(body, format)    -> { messages, tools } (chat shape)
--   wire.body(format, r)            -> JSON text
--   wire.events(format, r, chunk)   -> { { event=?, data= }, ... }
--   wire.error_body(format, status, message)
--
-- r = { id, model, created, text, calls = { { id, name, arguments } },
--       finish ("stop" | "tool_calls" | "length"), usage = { input,
--       output } }

local json = require "spool.json"
local wire = require "spool.model.wire"

local M = {}

local null = json.null

local PATHS = { ["/chat/completions"] = "openai",
                ["/responses"] = "openai-responses",
                ["/messages"] = "anthropic" }

function M.format(path)
  return PATHS[path]
end


-- ---- requests, read into the chat shape ----

local text_of = wire.text_of
M.text_of = text_of


local function chat_tools(list, name_of)
  local tools = {}
  for _, t in ipairs(type(list) == "table" and list or {}) do
    local name = type(t) == "table" and name_of(t)
    if type(name) == "string" then
      tools[#tools + 1] = { type = "function", ["function"] = { name = name } }
    end
  end
  return tools
end


local function from_anthropic(body)
  local messages = {}
  local system = body.system
  if system ~= nil then
    messages[1] = { role = "system", content = text_of(system) }
  end
  for _, m in ipairs(type(body.messages) == "table" and body.messages or {}) do
    if type(m) == "table" and type(m.content) == "string" then
      messages[#messages + 1] = { role = m.role, content = m.content }
    elseif type(m) == "table" and type(m.content) == "table" then
      local text, calls = {}, {}
      for _, b in ipairs(m.content) do
        if type(b) ~= "table" then -- skip
        elseif b.type == "text" then
          text[#text + 1] = b.text
        elseif b.type == "tool_use" then
          calls[#calls + 1] = { id = b.id, type = "function", ["function"] = {
            name = b.name, arguments = json.encode(b.input or {}) } }
        elseif b.type == "tool_result" then
          messages[#messages + 1] = { role = "tool", tool_call_id = b.tool_use_id,
                                      content = text_of(b.content) }
        end
      end
      if #text > 0 or #calls > 0 then
        messages[#messages + 1] = { role = m.role,
          content = #text > 0 and table.concat(text, "\n") or nil,
          tool_calls = #calls > 0 and calls or nil }
      end
    end
  end
  return { messages = messages,
           tools = chat_tools(body.tools, function(t) return t.name end) }
end


local function from_responses(body)
  local messages = {}
  if type(body.instructions) == "string" then
    messages[1] = { role = "system", content = body.instructions }
  end
  local input = body.input
  if type(input) == "string" then
    input = { { role = "user", content = input } }
  end
  for _, item in ipairs(type(input) == "table" and input or {}) do
    if type(item) ~= "table" then -- skip
    elseif item.type == "function_call" then
      local last = messages[#messages]
      if not (last and last.role == "assistant" and last.tool_calls) then
        last = { role = "assistant", tool_calls = {} }
        messages[#messages + 1] = last
      end
      last.tool_calls[#last.tool_calls + 1] = { id = item.call_id,
        type = "function", ["function"] = { name = item.name,
                                            arguments = item.arguments } }
    elseif item.type == "function_call_output" then
      messages[#messages + 1] = { role = "tool", tool_call_id = item.call_id,
                                  content = text_of(item.output) }
    elseif item.role then
      messages[#messages + 1] = { role = item.role,
                                  content = text_of(item.content) }
    end
  end
  return { messages = messages,
           tools = chat_tools(body.tools, function(t) return t.name end) }
end


function M.chat_view(body, format)
  if format == "anthropic" then
    return from_anthropic(body)
  elseif format == "openai-responses" then
    return from_responses(body)
  end
  return body
end


-- ---- errors ----

local ANTHROPIC_ERRORS = {
  [400] = "invalid_request_error", [401] = "authentication_error",
  [403] = "permission_error", [404] = "not_found_error",
  [413] = "request_too_large", [429] = "rate_limit_error",
  [500] = "api_error", [529] = "overloaded_error",
}

function M.error_object(format, status, message)
  if format == "anthropic" then
    return { type = ANTHROPIC_ERRORS[status] or "api_error", message = message }
  end
  return { message = message, type = "mock_error", param = null,
           code = tostring(status) }
end

function M.error_body(format, status, message)
  local err = M.error_object(format, status, message)
  if format == "anthropic" then
    return json.encode({ type = "error", error = err })
  end
  return json.encode({ error = err })
end


-- ---- bodies ----

local function decoded_args(c)
  local v = json.decode(c.arguments)
  return type(v) == "table" and v or {}
end


local function chat_body(r)
  local message = { role = "assistant", content = r.text or null }
  if #r.calls > 0 then
    local list = json.array()
    for i, c in ipairs(r.calls) do
      list[i] = { id = c.id, type = "function",
                  ["function"] = { name = c.name, arguments = c.arguments } }
    end
    message.tool_calls = list
  end
  return { id = r.id, object = "chat.completion", created = r.created,
           model = r.model,
           choices = json.array({ { index = 0, message = message,
                                    finish_reason = r.finish } }),
           usage = { prompt_tokens = r.usage.input,
                     completion_tokens = r.usage.output,
                     total_tokens = r.usage.input + r.usage.output } }
end


local function responses_items(r)
  local items = json.array()
  if r.text then
    items[#items + 1] = { type = "message", id = "msg_" .. r.id,
      status = "completed", role = "assistant",
      content = json.array({ { type = "output_text", text = r.text,
                               annotations = json.array() } }) }
  end
  for i, c in ipairs(r.calls) do
    items[#items + 1] = { type = "function_call", id = "fc_" .. r.id .. "_" .. i,
      call_id = c.id, name = c.name, arguments = c.arguments,
      status = "completed" }
  end
  return items
end


local function responses_body(r, status)
  local incomplete = r.finish == "length"
  return { id = "resp_" .. r.id, object = "response", created_at = r.created,
           status = status or (incomplete and "incomplete" or "completed"),
           model = r.model, output = responses_items(r),
           incomplete_details = incomplete and { reason = "max_output_tokens" }
             or null,
           error = null,
           usage = { input_tokens = r.usage.input,
                     input_tokens_details = { cached_tokens = 0 },
                     output_tokens = r.usage.output,
                     output_tokens_details = { reasoning_tokens = 0 },
                     total_tokens = r.usage.input + r.usage.output } }
end


local STOP = { stop = "end_turn", tool_calls = "tool_use",
               length = "max_tokens" }

local function anthropic_body(r)
  local content = json.array()
  if r.text then
    content[#content + 1] = { type = "text", text = r.text }
  end
  for _, c in ipairs(r.calls) do
    content[#content + 1] = { type = "tool_use", id = c.id, name = c.name,
                              input = decoded_args(c) }
  end
  return { id = "msg_" .. r.id, type = "message", role = "assistant",
           model = r.model, content = content,
           stop_reason = STOP[r.finish] or r.finish, stop_sequence = null,
           usage = { input_tokens = r.usage.input,
                     output_tokens = r.usage.output,
                     cache_creation_input_tokens = 0,
                     cache_read_input_tokens = 0 } }
end


function M.body(format, r)
  if format == "anthropic" then
    return json.encode(anthropic_body(r))
  elseif format == "openai-responses" then
    return json.encode(responses_body(r))
  end
  return json.encode(chat_body(r))
end


-- ---- streams ----

-- `s` cut into pieces of `n` bytes (UTF-8 sequences split too, as a
-- network does).
function M.pieces(s, n)
  local out = {}
  for i = 1, #s, n do
    out[#out + 1] = s:sub(i, i + n - 1)
  end
  return out
end


local function chat_events(r, chunk)
  local out = {}
  local function send(delta, finish, extra)
    local doc = { id = r.id, object = "chat.completion.chunk",
                  created = r.created, model = r.model,
                  choices = json.array({ { index = 0, delta = delta,
                                           finish_reason = finish or null } }) }
    for k, v in pairs(extra or {}) do doc[k] = v end
    out[#out + 1] = { data = json.encode(doc) }
  end
  send({ role = "assistant", content = "" })
  for _, p in ipairs(M.pieces(r.text or "", chunk)) do
    send({ content = p })
  end
  for i, c in ipairs(r.calls) do
    send({ tool_calls = json.array({ { index = i - 1, id = c.id,
      type = "function", ["function"] = { name = c.name, arguments = "" } } }) })
    for _, p in ipairs(M.pieces(c.arguments, chunk)) do
      send({ tool_calls = json.array({ { index = i - 1,
        ["function"] = { arguments = p } } }) })
    end
  end
  send({}, r.finish)
  out[#out + 1] = { data = json.encode({ id = r.id,
    object = "chat.completion.chunk", created = r.created, model = r.model,
    choices = json.array(), usage = chat_body(r).usage }) }
  out[#out + 1] = { data = "[DONE]" }
  return out
end


local function responses_events(r, chunk)
  local out, seq = {}, 0
  local function send(kind, doc)
    doc.type = kind
    doc.sequence_number = seq
    seq = seq + 1
    out[#out + 1] = { event = kind, data = json.encode(doc) }
  end
  local start = responses_body(r, "in_progress")
  start.output = json.array()
  start.usage = null
  send("response.created", { response = start })
  send("response.in_progress", { response = start })
  local items = responses_items(r)
  for i, item in ipairs(items) do
    local at = i - 1
    if item.type == "message" then
      send("response.output_item.added", { output_index = at, item = {
        type = "message", id = item.id, status = "in_progress",
        role = "assistant", content = json.array() } })
      local part = { type = "output_text", text = "",
                     annotations = json.array() }
      send("response.content_part.added", { item_id = item.id,
        output_index = at, content_index = 0, part = part })
      for _, p in ipairs(M.pieces(r.text, chunk)) do
        send("response.output_text.delta", { item_id = item.id,
          output_index = at, content_index = 0, delta = p })
      end
      send("response.output_text.done", { item_id = item.id,
        output_index = at, content_index = 0, text = r.text })
      send("response.content_part.done", { item_id = item.id,
        output_index = at, content_index = 0, part = item.content[1] })
    else
      send("response.output_item.added", { output_index = at, item = {
        type = "function_call", id = item.id, call_id = item.call_id,
        name = item.name, arguments = "", status = "in_progress" } })
      for _, p in ipairs(M.pieces(item.arguments, chunk)) do
        send("response.function_call_arguments.delta", { item_id = item.id,
          output_index = at, delta = p })
      end
      send("response.function_call_arguments.done", { item_id = item.id,
        output_index = at, arguments = item.arguments })
    end
    send("response.output_item.done", { output_index = at, item = item })
  end
  local final = responses_body(r)
  send(final.status == "incomplete" and "response.incomplete"
    or "response.completed", { response = final })
  return out
end


local function anthropic_events(r, chunk)
  local out = {}
  local function send(kind, doc)
    doc.type = kind
    out[#out + 1] = { event = kind, data = json.encode(doc) }
  end
  local body = anthropic_body(r)
  send("message_start", { message = {
    id = body.id, type = "message", role = "assistant", model = r.model,
    content = json.array(), stop_reason = null, stop_sequence = null,
    usage = { input_tokens = r.usage.input, output_tokens = 1,
              cache_creation_input_tokens = 0, cache_read_input_tokens = 0 } } })
  for i, b in ipairs(body.content) do
    local at = i - 1
    if b.type == "text" then
      send("content_block_start", { index = at,
        content_block = { type = "text", text = "" } })
      if i == 1 then
        send("ping", {})
      end
      for _, p in ipairs(M.pieces(b.text, chunk)) do
        send("content_block_delta", { index = at,
          delta = { type = "text_delta", text = p } })
      end
    else
      send("content_block_start", { index = at, content_block = {
        type = "tool_use", id = b.id, name = b.name, input = {} } })
      for _, p in ipairs(M.pieces(r.calls[i - (r.text and 1 or 0)].arguments,
          chunk)) do
        send("content_block_delta", { index = at,
          delta = { type = "input_json_delta", partial_json = p } })
      end
    end
    send("content_block_stop", { index = at })
  end
  send("message_delta", { delta = { stop_reason = body.stop_reason,
                                    stop_sequence = null },
                          usage = { output_tokens = r.usage.output } })
  send("message_stop", {})
  return out
end


function M.events(format, r, chunk)
  chunk = chunk or 4
  if format == "anthropic" then
    return anthropic_events(r, chunk)
  elseif format == "openai-responses" then
    return responses_events(r, chunk)
  end
  return chat_events(r, chunk)
end


-- The event a provider sends for an error inside a stream.
function M.error_event(format, err)
  if format == "anthropic" then
    return { event = "error", data = json.encode({ type = "error",
      error = { type = err.type or "overloaded_error",
                message = err.message or "Overloaded" } }) }
  elseif format == "openai-responses" then
    return { event = "error", data = json.encode({ type = "error",
      code = err.type or "server_error", message = err.message
        or "The server had an error", param = null, sequence_number = 0 }) }
  end
  return { data = json.encode({ error = { message = err.message
    or "The server had an error", type = err.type or "server_error",
    param = null, code = null } }) }
end


-- An event as Server-Sent Events text.
function M.sse(ev)
  if ev.event then
    return "event: " .. ev.event .. "\ndata: " .. ev.data .. "\n\n"
  end
  return "data: " .. ev.data .. "\n\n"
end


return M
