-- spool.serve.openai: the project's agents as OpenAI-compatible models
-- (private), so any OpenAI client (the official SDKs, chat UIs, the AI
-- SDK) calls an agent with a base URL and the agent's name as the model.
-- This is what the two formats share (spool.serve.openai_chat,
-- spool.serve.openai_responses), and GET /v1/models.
--
-- A conversation is a thread. A request starts one on the conversation
-- (its one user message, or the whole conversation as a transcript when
-- there is more) and answers when the thread stops running: its result is
-- the assistant's message, the usage adds up every model call the thread
-- made (its sub-agents' included), and `spool` names the thread.
--
-- A thread that waits for a person ends the reply with what it asks, and
-- the message after it answers, in the same conversation: a question is
-- answered by the next user message; an approval only by a message that
-- is the word "approve" (or "reject", optionally with ": why"), so no
-- other reply gives it by accident.
--
-- Streamed, the answer is the agent's own model text as it is generated
-- (spool.run.hub), then at the end whatever of the result was not
-- streamed (a structured result, a sub-agent's answer).
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
local wire = require "spool.model.wire"

local M = {}

M.MAX_WAIT_MS = 300000 -- a reply waits this long for its thread


-- ---- the conversation ----

-- The text of a message's content (spool.model.wire).
M.text_of = wire.text_of


-- A body's list of messages (field `name`) as { { role, text } }, or a
-- 400 naming what is wrong.
function M.messages(api, list, name)
  if type(list) ~= "table" or not json.is_array(list) or #list == 0 then
    api.fail(400, "invalid_request", string.format("\"%s\" must be a list "
      .. "of messages, not empty", name))
  end
  local out = {}
  for i, m in ipairs(list) do
    if type(m) ~= "table" or type(m.role) ~= "string" then
      api.fail(400, "invalid_request", string.format("%s[%d] must be a "
        .. "message with a \"role\"", name, i - 1))
    end
    out[i] = { role = m.role, text = wire.text_of(m.content) }
  end
  return out
end


-- The thread's input: the one user message as it is, or the conversation
-- as a transcript (each message on its own, with who said it).
-- `messages`: { { role, text } }.
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
    return users[1].text
  end
  local lines = {}
  for _, m in ipairs(messages) do
    lines[#lines + 1] = string.format("%s: %s", tostring(m.role), m.text)
  end
  return table.concat(lines, "\n\n")
end


-- What the last user message says to a thread that waits: the runner's
-- response, or nil when it does not answer (an approval needs the word).
local function answer_of(req, wait, text)
  local by = { by = req.principal or "api", channel = "openai" }
  if wait.kind == "ask" then
    by.answer = text
    return by
  elseif wait.kind == "approval" then
    local word, rest = text:match("^%s*(%a+)%s*(.-)%s*$")
    word = word and word:lower()
    if word == "approve" and rest == "" then
      by.approve = true
      return by
    elseif word == "reject" and (rest == "" or rest:sub(1, 1) == ":") then
      by.reject = true
      by.reason = rest:match("^:%s*(.+)$")
      return by
    end
  end
end


-- ---- the thread's reply ----

function M.usage(t)
  local u = t:usage()
  return u.input_tokens or 0, u.output_tokens or 0
end


-- What a thread that waits asks, as the assistant says it; it ends with
-- the thread's mark, which the next request finds it by.
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

M.MARK = "%[spool thread (t_[%w_%-]+)%]%s*$"


-- The text a request's `data` (of a human_request) puts to the caller.
function M.wait_text(t, data)
  return wait_text(t, human.view(data))
end


-- The assistant's text for a thread that stopped running, and the view
-- spool adds; or nil, the view and the error for one that failed.
function M.outcome(t)
  local status = t:status(t.persisted)
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
  elseif status == "running" then
    return string.format("(thread %s still runs; follow it at "
      .. "/v1/threads/%s)", t.id, t.id), view
  end
  local _, err = t:outcome()
  return nil, view, err or status
end


-- The thread as it stands: this process's run, or the store's.
function M.current(id)
  local live = runner.find(id)
  if live then
    return live
  end
  local record = id:match("^[%w_%-]+$") and #id <= 64 and store.load(id)
  return record and thread_mod.from_record(record)
end


-- ---- starting, answering, waiting ----

-- Starts a thread of agent `name` on a conversation ({ { role, text } }),
-- with the id given; or, when `continues` names a thread that waits,
-- answers it with the last message. Returns the thread's id.
function M.begin(api, req, name, messages, new_id, continues)
  local last = messages[#messages]
  local t = continues and M.current(continues)
  if t and t.agent == name and t:status(t.persisted) == "waiting"
      and last and last.role == "user" then
    local response = answer_of(req, t:pending_request().data, last.text)
    if response then -- (else the wait is said again)
      local ok, err = runner.respond(t.id, response)
      if not ok then
        api.engine_error(err)
      end
    end
    return t.id
  end
  api.admit()
  local agent, err = loader.load(name)
  if not agent then
    if tostring(err):match("^ENOTFOUND") then
      api.fail(404, "model_not_found", string.format("the model '%s' does "
        .. "not exist: the models are the project's agents (GET /v1/models)",
        name))
    end
    api.engine_error(err)
  end
  runner.start(agent, input_of(messages), new_id, nil, nil,
    req.headers["traceparent"])
  return new_id
end


-- Waits for the thread to stop running; the thread, or a 504.
function M.settled(api, id)
  local t, row = await(id, M.MAX_WAIT_MS)
  if not t then
    api.engine_error(row)
  end
  if t:status() == "running" then
    api.fail(504, "timeout", string.format("thread %s still runs after "
      .. "%d s; follow it at /v1/threads/%s", id, M.MAX_WAIT_MS // 1000, id))
  end
  return t
end


-- Starts (or answers) as M.begin does, and streams: `emit.open(s, id)`,
-- `emit.text(s, piece)` for each piece of the model's text as it comes,
-- and `emit.close(s, t, extra)` when the thread stops running, with what
-- of the result was not streamed ("" when all was). Each returns false
-- when the client is gone. A piece lost (an attempt broke off, the
-- client fell too far behind) stops the live text: the rest comes whole.
function M.stream(api, req, name, messages, continues, emit)
  -- Read from before the thread starts: its first model call streams.
  local reading = thread_mod.new_id()
  local sig = hub.follow(reading)
  local reader = hub.read_text(reading, sig)
  local ok, id = pcall(M.begin, api, req, name, messages, reading, continues)
  if ok and id ~= reading then -- it answers a thread that waited
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
    if not s or not emit.open(s, id) then
      return
    end
    local sent, live, t = {}, true, nil
    local function pass_text()
      for _, piece in ipairs(hub.take_text(reader)) do
        if piece == hub.RESET or reader.overflow then
          live = false
        elseif live then
          sent[#sent + 1] = piece
          if not emit.text(s, piece) then
            return false
          end
        end
      end
      return true
    end
    local deadline = core.now() + M.MAX_WAIT_MS
    repeat
      if not pass_text() then
        return
      end
      t = M.current(id)
      if t and t:status(t.persisted) ~= "running" then
        break
      end
      sig:wait(1000)
    until core.now() > deadline or runner.draining
    if not pass_text() or not t then
      return
    end
    local content, _, failure = M.outcome(t)
    content = content or ("The agent failed: " .. tostring(failure))
    local streamed = table.concat(sent)
    local extra = ""
    if streamed:sub(-#content) ~= content then
      extra = (streamed ~= "" and "\n\n" or "") .. content
    end
    emit.close(s, t, extra, streamed .. extra)
  end)
  hub.stop_reading(reading, reader)
  hub.unfollow(reading, sig)
  if not ok then
    error(id, 0)
  elseif not sok then
    error(err, 0)
  end
end


-- ---- the routes ----

local function model(a)
  return { id = a.name, object = "model", created = 0, owned_by = "spool",
           version = a.version }
end


function M.models()
  local data = json.array()
  for _, a in ipairs(loader.list()) do
    if a.version then
      data[#data + 1] = model(a)
    end
  end
  return 200, { object = "list", data = data }
end


function M.model(api, p)
  for _, a in ipairs(loader.list()) do
    if a.name == p.id and a.version then
      return 200, model(a)
    end
  end
  api.fail(404, "model_not_found", string.format("the model '%s' does not "
    .. "exist: the models are the project's agents (GET /v1/models)", p.id))
end


-- The model named in a body, or a 400.
function M.model_of(api, body)
  if type(body.model) ~= "string" or body.model == "" then
    api.fail(400, "invalid_request", "\"model\" must be the name of an "
      .. "agent (GET /v1/models)")
  end
  return body.model
end


return M
