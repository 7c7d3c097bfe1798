-- spool.serve.openai: the project's agents as OpenAI-compatible models
-- (private), so any OpenAI client (the official SDKs, chat UIs, the AI
-- SDK) calls an agent with a base URL and the agent's name as the model.
--
--   GET  /v1/models              the agents that load
--   POST /v1/chat/completions    { model = agent, messages, stream?,
--                                  stream_options?, metadata? }
--
-- A conversation is a thread. A request starts one on the conversation
-- (its one user message, or the whole conversation as a transcript when
-- there is more) and answers when the thread stops running: its result is
-- the assistant's message, `usage` adds up every model call the thread
-- made (its sub-agents' included), and `spool` names the thread.
--
-- A thread that waits for a person ends the reply with what it asks, and
-- the message after it answers, in the same conversation: a question is
-- answered by the next user message; an approval only by a message that
-- is the word "approve" (or "reject", optionally with ": why"), so no
-- other reply gives it by accident. The thread is found from
-- metadata.spool_thread, or from the last assistant message, which ends
-- with "[spool thread t_...]" (chat UIs send the history back, not
-- metadata).
--
-- With stream = true the answer comes as chat.completion.chunk events:
-- the agent's own model text as it is generated (spool.run.hub), and at
-- the end whatever of the result was not streamed (a structured result,
-- a sub-agent's answer), then [DONE].
--
-- The API's token is the API key (Authorization: Bearer); errors have
-- OpenAI's shape ({ error = { message, type, code, param } }: spool.serve).

local core = require "spool.core"
local json = require "spool.json"
local runner = require "spool.run.runner"
local loader = require "spool.run.loader"
local store = require "spool.run.store"
local thread_mod = require "spool.run.thread"
local hub = require "spool.run.hub"
local await = require "spool.run.await"
local human = require "spool.human"

local M = {}

local MAX_WAIT_MS = 300000 -- a reply waits this long for its thread
local MARK = "%[spool thread (t_[%w_%-]+)%]%s*$"


-- ---- reading the request ----

-- The text of a message's content: a string, or parts of which the text
-- ones count.
local function text_of(content)
  if type(content) == "string" then
    return content
  elseif type(content) == "table" then
    local parts = {}
    for _, p in ipairs(content) do
      if type(p) == "table" and type(p.text) == "string" then
        parts[#parts + 1] = p.text
      end
    end
    return table.concat(parts, "\n")
  end
  return ""
end


-- The thread's input: the one user message as it is, or the conversation
-- as a transcript (each message on its own, with who said it).
local function input_of(messages)
  local users, others = {}, 0
  for _, m in ipairs(messages) do
    if m.role == "user" then
      users[#users + 1] = m
    elseif m.role ~= "system" and m.role ~= "developer" then
      others = others + 1
    end
  end
  if #users == 1 and others == 0 then
    return text_of(users[1].content)
  end
  local lines = {}
  for _, m in ipairs(messages) do
    lines[#lines + 1] = string.format("%s: %s", tostring(m.role),
      text_of(m.content))
  end
  return table.concat(lines, "\n\n")
end


-- The thread a conversation continues: named in metadata, or at the end of
-- its last assistant message.
local function thread_named(body, messages)
  local meta = type(body.metadata) == "table" and body.metadata or {}
  if type(meta.spool_thread) == "string" then
    return meta.spool_thread
  end
  for i = #messages, 1, -1 do
    if messages[i].role == "assistant" then
      return text_of(messages[i].content):match(MARK)
    end
  end
end


-- What the last user message says to a thread that waits: the runner's
-- response, or nil when it does not answer (an approval needs the word).
local function answer_of(req, wait, text)
  local by = { by = req.principal or "api", channel = "openai" }
  if wait.kind == "ask" then
    by.answer = text
    return by
  elseif wait.kind == "approval" then
    local word, reason = text:lower():match("^%s*(%a+)%s*:?%s*(.-)%s*$")
    if word == "approve" and reason == "" then
      by.approve = true
      return by
    elseif word == "reject" then
      by.reject = true
      by.reason = reason ~= "" and text:match(":%s*(.-)%s*$") or nil
      return by
    end
  end
end


-- ---- the reply ----

local function usage_of(t)
  local u = t:usage()
  local input, output = u.input_tokens or 0, u.output_tokens or 0
  return { prompt_tokens = input, completion_tokens = output,
           total_tokens = input + output }
end


-- What a thread that waits asks, as the assistant says it.
local function wait_text(t, wait)
  local how
  if wait.kind == "ask" then
    how = tostring(wait.question) .. "\n\n(Your next message is the answer.)"
  elseif wait.kind == "approval" then
    how = string.format("%s asks approval to run %s with %s.\n\nReply "
      .. "\"approve\" to let it, or \"reject: why\" to refuse.", t.agent,
      tostring(wait.name), json.encode(wait.args or {}))
  else
    how = string.format("%s waits for the event '%s' (send it through "
      .. "/v1/threads/%s/events).", t.agent, tostring(wait.event), t.id)
  end
  return how .. " [spool thread " .. t.id .. "]"
end


-- The assistant's message for a thread that stopped running, or nil and
-- the error for one that failed. Also the view spool adds.
local function outcome(t)
  local status = t:status()
  local view = { thread = t.id, status = status }
  if status == "waiting" then
    local wait = human.view(t:pending_request().data)
    view.waiting_for = wait
    return wait_text(t, wait), view
  elseif status == "done" then
    local result = t:outcome()
    if type(result) ~= "string" then
      result = json.encode(result == nil and json.null or result)
    end
    return result, view
  end
  local _, err = t:outcome()
  return nil, view, err or status
end


-- ---- the routes ----

function M.models()
  local data = json.array()
  for _, a in ipairs(loader.list()) do
    if a.version then
      data[#data + 1] = { id = a.name, object = "model", created = 0,
                          owned_by = "spool", version = a.version }
    end
  end
  return 200, { object = "list", data = data }
end


local function fail(api, status, code, message)
  api.fail(status, code, message)
end


-- Starts the conversation's thread (as `new_id`), or answers the one it
-- continues; returns the thread's id.
local function begin(api, req, body, messages, new_id)
  local name = body.model
  local id = thread_named(body, messages)
  local last = messages[#messages]
  if id and last.role == "user" then
    local record = id:match("^[%w_%-]+$") and #id <= 64 and store.load(id)
    local t = record and thread_mod.from_record(record)
    if t and t.agent == name and t:status() == "waiting" then
      local response = answer_of(req, t:pending_request().data,
        text_of(last.content))
      if response then -- (else the wait is said again)
        local ok, err = runner.respond(id, response)
        if not ok then
          api.engine_error(err)
        end
      end
      return id
    end
  end
  local refused, why = runner.admission()
  if refused then
    api.fail(503, refused, why,
      { ["Retry-After"] = refused == "draining" and "5" or "1" })
  end
  local agent, err = loader.load(name)
  if not agent then
    if tostring(err):match("^ENOTFOUND") then
      fail(api, 404, "model_not_found", string.format("the model '%s' does "
        .. "not exist: the models are the project's agents (GET /v1/models)",
        name))
    end
    api.engine_error(err)
  end
  runner.start(agent, input_of(messages), new_id, nil, nil,
    req.headers["traceparent"])
  return new_id
end


local function check(api, body)
  if type(body.model) ~= "string" or body.model == "" then
    fail(api, 400, "invalid_request", "\"model\" must be the name of an "
      .. "agent (GET /v1/models)")
  end
  local messages = body.messages
  if type(messages) ~= "table" or not json.is_array(messages)
      or #messages == 0 then
    fail(api, 400, "invalid_request", "\"messages\" must be a list of "
      .. "messages, not empty")
  end
  for i, m in ipairs(messages) do
    if type(m) ~= "table" or type(m.role) ~= "string" then
      fail(api, 400, "invalid_request", string.format("messages[%d] needs a "
        .. "\"role\"", i - 1))
    end
  end
  return messages
end


local function completion(id, name, content, view, usage, created)
  return { id = "chatcmpl-" .. id, object = "chat.completion",
           created = created, model = name,
           choices = { { index = 0, finish_reason = "stop",
             logprobs = json.null,
             message = { role = "assistant", content = content } } },
           usage = usage, spool = view }
end


-- Waits for the thread to stop running.
local function settled(api, id)
  local t, row = await(id, MAX_WAIT_MS)
  if not t then
    api.engine_error(row)
  end
  if t:status() == "running" then
    fail(api, 504, "timeout", string.format("thread %s still runs after "
      .. "%d s; follow it at /v1/threads/%s", id, MAX_WAIT_MS // 1000, id))
  end
  return t
end


local function chunk(id, name, created, delta, finish)
  return "data: " .. json.encode({ id = "chatcmpl-" .. id,
    object = "chat.completion.chunk", created = created, model = name,
    choices = { { index = 0, delta = delta,
                  finish_reason = finish or json.null } } }) .. "\n\n"
end


-- The thread as it stands: this process's run, or the store's.
local function current(id)
  local live = runner.find(id)
  if live then
    return live
  end
  local record = store.load(id)
  return record and thread_mod.from_record(record)
end


-- Sends the model's text the run has written since; false when the
-- client is gone. `state.live` turns false once a piece is lost (an
-- attempt broke off, or the client fell too far behind): the rest then
-- comes whole, with the result.
local function send_text(s, reader, state, head)
  for _, piece in ipairs(hub.take_text(reader)) do
    if piece == hub.RESET or reader.overflow then
      state.live = false
    elseif state.live then
      state.sent[#state.sent + 1] = piece
      if not s:send(head({ content = piece })) then
        return false
      end
    end
  end
  return true
end


-- The streamed reply: the model's text as the run writes it, then what
-- the result adds, the end, the usage if asked, [DONE].
local function stream(api, req, body, messages, created)
  local name = body.model
  local function head(delta, finish, id)
    return chunk(id, name, created, delta, finish)
  end
  -- Read from before the thread starts: its first model call streams.
  local new_id = thread_mod.new_id()
  local reading = new_id
  local sig = hub.follow(reading)
  local reader = hub.read_text(reading, sig)
  local ok, id = pcall(begin, api, req, body, messages, new_id)
  if ok and id ~= new_id then -- it answers a thread that waited
    hub.stop_reading(reading, reader)
    hub.unfollow(reading, sig)
    reading = id
    sig = hub.follow(reading)
    reader = hub.read_text(reading, sig)
  end
  local sok, err = ok and pcall(function()
    local s = req.stream(200, { ["Content-Type"] = "text/event-stream",
                                ["Cache-Control"] = "no-store",
                                ["X-Accel-Buffering"] = "no" })
    local function h(delta, finish)
      return head(delta, finish, id)
    end
    if not s or not s:send(h({ role = "assistant", content = "" })) then
      return
    end
    local state, t = { sent = {}, live = true }, nil
    local deadline = core.now() + MAX_WAIT_MS
    repeat
      if not send_text(s, reader, state, h) then
        return
      end
      t = current(id)
      if t and t:status(t.persisted) ~= "running" then
        break
      end
      sig:wait(1000)
    until core.now() > deadline or runner.draining
    if not send_text(s, reader, state, h) then
      return
    end
    local content, view, failure = outcome(t)
    content = content or ("The agent failed: " .. tostring(failure))
    if t:status(t.persisted) == "running" then
      content = string.format("(thread %s still runs; follow it at "
        .. "/v1/threads/%s)", id, id)
    end
    local streamed = table.concat(state.sent)
    if streamed:sub(-#content) ~= content then
      s:send(h({ content = (streamed ~= "" and "\n\n" or "") .. content }))
    end
    s:send(h({}, "stop"))
    if type(body.stream_options) == "table"
        and body.stream_options.include_usage == true then
      s:send("data: " .. json.encode({ id = "chatcmpl-" .. id,
        object = "chat.completion.chunk", created = created, model = name,
        choices = json.array(), usage = usage_of(t), spool = view })
        .. "\n\n")
    end
    s:send("data: [DONE]\n\n")
  end)
  hub.stop_reading(reading, reader)
  hub.unfollow(reading, sig)
  if not ok then
    error(id, 0)
  elseif not sok then
    error(err, 0)
  end
end


function M.chat_completions(api, req, body)
  local messages = check(api, body)
  local created = core.time() // 1000
  if body.stream == true then
    return stream(api, req, body, messages, created)
  end
  local id = begin(api, req, body, messages, thread_mod.new_id())
  local t = settled(api, id)
  local content, view, failure = outcome(t)
  if not content then
    fail(api, 500, "agent_failed", string.format("the agent %s failed: %s "
      .. "(thread %s)", t.agent, tostring(failure), t.id))
  end
  return 200, completion(id, body.model, content, view, usage_of(t), created)
end


return M
