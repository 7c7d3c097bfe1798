-- spool.serve.openai_responses: an agent as a model of OpenAI's Responses
-- API (private; spool.serve.openai has what is shared).
--
--   POST /v1/responses       { model = agent, input (text, or messages),
--                              previous_response_id?, stream? }
--   GET  /v1/responses/{id}
--
-- A response is one turn of a thread: its id is resp_<thread>_<turn>,
-- where the turn counts the person's answers the thread had had. A
-- previous_response_id continues its thread: the input answers it if it
-- waits (as in chat: an approval only by the word "approve"); a thread
-- that ended is continued by a new one, on the conversation so far. So
-- any response can be read again from the thread's events, by any worker.
-- Streamed, the reply is the Responses API's events (response.created,
-- response.output_text.delta..., response.completed).

local core = require "spool.core"
local json = require "spool.json"
local thread_mod = require "spool.run.thread"
local openai = require "spool.serve.openai"

local M = {}


-- The conversation in a body's input: text, or messages (each a string
-- content or parts).
local function messages_of(api, body)
  local input = body.input
  if type(input) == "string" then
    return { { role = "user", text = input } }
  end
  return openai.messages(api, input, "input")
end


local function parse_id(id)
  local thread, turn = tostring(id):match("^resp_(.+)_(%d+)$")
  return thread, tonumber(turn)
end


local function answers(t)
  local n = 0
  for i = 1, t.persisted do
    n = n + (t.events[i].type == "human_response" and 1 or 0)
  end
  return n
end


-- Turn `turn` of a thread: its status, its text (or nil), the error, when
-- it began (s). A turn that ended in a wait says what it asks.
local function turn_of(t, turn)
  local requests, began = {}, t.events[1].at
  local seen = 0
  for i = 1, t.persisted do
    local ev = t.events[i]
    if ev.type == "human_request" then
      requests[#requests + 1] = ev
    elseif ev.type == "human_response" then
      seen = seen + 1
      if seen == turn then
        began = ev.at
      end
    end
  end
  if requests[turn + 1] and turn < seen then
    return "completed", openai.wait_text(t, requests[turn + 1].data), nil,
      began // 1000
  end
  local text, view, failure = openai.outcome(t)
  local status = view.status
  if status == "running" then
    return "in_progress", nil, nil, began // 1000, view
  elseif status == "failed" or status == "cancelled" then
    return status, nil, { code = "agent_failed", message = string.format(
      "the agent %s failed: %s", t.agent, tostring(failure)) },
      began // 1000, view
  end
  return "completed", text, nil, began // 1000, view
end


local function response_object(t, turn, name, previous)
  local status, text, err, created, view = turn_of(t, turn)
  local id = string.format("resp_%s_%d", t.id, turn)
  local output = json.array()
  if text then
    output[1] = { type = "message", id = "msg_" .. t.id .. "_" .. turn,
      status = "completed", role = "assistant",
      content = { { type = "output_text", text = text,
                    annotations = json.array() } } }
  end
  local input, out = openai.usage(t)
  return { id = id, object = "response", created_at = created,
    status = status, model = name or t.agent, output = output,
    error = err or json.null, incomplete_details = json.null,
    previous_response_id = previous or json.null, tools = json.array(),
    usage = { input_tokens = input, output_tokens = out,
              total_tokens = input + out,
              input_tokens_details = { cached_tokens = 0 },
              output_tokens_details = { reasoning_tokens = 0 } },
    spool = view or { thread = t.id, status = t:status(t.persisted) } }
end


-- What previous_response_id continues: the thread if it waits (answered
-- by the input), else the conversation so far before the input.
local function continuation(api, body, messages)
  local previous = body.previous_response_id
  if previous == nil or previous == json.null then
    return nil, messages
  end
  local id, turn = parse_id(previous)
  local t = id and openai.current(id)
  if not t or turn > answers(t) then
    api.fail(404, "previous_response_not_found", string.format("no response "
      .. "'%s' here", tostring(previous)))
  end
  local status = t:status(t.persisted)
  if status == "waiting" then
    return t.id, messages
  elseif status == "running" then
    api.fail(409, "previous_response_in_progress", string.format("response "
      .. "%s is still in progress", previous))
  end
  local _, text = turn_of(t, turn)
  local input = t:input()
  local so_far = {
    { role = "user", text = type(input) == "string" and input
      or json.encode(input) },
    { role = "assistant", text = text or "" } }
  for _, m in ipairs(messages) do
    so_far[#so_far + 1] = m
  end
  return nil, so_far
end


local function event(s, state, kind, fields)
  state.seq = state.seq + 1
  fields.type, fields.sequence_number = kind, state.seq
  return s:send("event: " .. kind .. "\ndata: " .. json.encode(fields)
    .. "\n\n")
end


local function stream(api, req, body, messages, continues)
  local name = body.model
  local state, item = { seq = -1 }, nil
  local function part(text)
    return { type = "output_text", text = text, annotations = json.array() }
  end
  openai.stream(api, req, name, messages, continues, {
    open = function(s, id)
      local t = openai.current(id)
      state.id, state.turn = id, t and answers(t) or 0
      item = "msg_" .. id .. "_" .. state.turn
      local head = { id = string.format("resp_%s_%d", id, state.turn),
        object = "response", created_at = core.time() // 1000,
        status = "in_progress", model = name, output = json.array(),
        previous_response_id = body.previous_response_id or json.null }
      return event(s, state, "response.created", { response = head })
        and event(s, state, "response.in_progress", { response = head })
        and event(s, state, "response.output_item.added", {
          output_index = 0, item = { type = "message", id = item,
            status = "in_progress", role = "assistant",
            content = json.array() } })
        and event(s, state, "response.content_part.added", {
          item_id = item, output_index = 0, content_index = 0,
          part = part("") })
    end,
    text = function(s, piece)
      return event(s, state, "response.output_text.delta", {
        item_id = item, output_index = 0, content_index = 0, delta = piece,
        logprobs = json.array() })
    end,
    close = function(s, t, extra, whole)
      if extra ~= "" and not event(s, state, "response.output_text.delta", {
          item_id = item, output_index = 0, content_index = 0,
          delta = extra, logprobs = json.array() }) then
        return false
      end
      event(s, state, "response.output_text.done", { item_id = item,
        output_index = 0, content_index = 0, text = whole,
        logprobs = json.array() })
      event(s, state, "response.content_part.done", { item_id = item,
        output_index = 0, content_index = 0, part = part(whole) })
      event(s, state, "response.output_item.done", { output_index = 0,
        item = { type = "message", id = item, status = "completed",
                 role = "assistant", content = { part(whole) } } })
      local r = response_object(t, state.turn, name,
        body.previous_response_id)
      local done = r.status == "completed" and "response.completed"
        or "response.failed"
      return event(s, state, done, { response = r })
    end,
  })
end


function M.create(api, req, body)
  local name = openai.model_of(api, body)
  local continues, messages = continuation(api, body,
    messages_of(api, body))
  if body.stream == true then
    return stream(api, req, body, messages, continues)
  end
  local id = openai.begin(api, req, name, messages, thread_mod.new_id(),
    continues)
  local t = openai.settled(api, id)
  return 200, response_object(t, answers(t), name, body.previous_response_id)
end


function M.get(api, _, p)
  local id, turn = parse_id(p.id)
  local t = id and openai.current(id)
  if not t or turn > answers(t) then
    api.fail(404, "not_found", "no response '" .. p.id .. "' here")
  end
  return 200, response_object(t, turn)
end


return M
