-- spool.serve.channels: people reached where they work (private). When a thread
-- starts to wait for a person, its agent's `humans` say where to ask:
--
--   humans = { { channel = "slack", to = "#approvals" },
--              { channel = "email", to = "ops@example.com",
--                after_ms = 600000 } }      -- escalate if still waiting
--
-- Each channel is a module in spool.channels (slack, discord, email) that
-- delivers a request and turns that channel's callbacks into answers; the
-- project's spool.lua holds its settings (channels = { slack = {...} }),
-- with secrets only as the names of environment variables.
--
-- A request is known to the outside by a token, "<thread>.<seq>.<mac>":
-- the thread, the human_request event, and an HMAC that makes tokens
-- unforgeable (keyed with $SPOOL_CHANNEL_SECRET, or channels.secret_env,
-- else with a random key spool keeps in the store). An
-- answer resumes the thread through spool.run.runner, recorded as a
-- human_response with `by` (who) and `channel` (where); an answer to a
-- request no longer pending is refused with 409 and a clear message, and
-- the messages sent for a request are updated with its outcome. Refusals
-- are logged and counted (spool_channel_refusals_total).
--
-- Deliveries run in tasks of their own; an escalation waits in memory, so
-- a process that stops forgets the escalations it had not made yet.

local core = require "spool.core"
local json = require "spool.json"
local config = require "spool.base.config"
local common = require "spool.serve.channels.common"
local human = require "spool.human"
local hub = require "spool.run.hub"
local metrics = require "spool.serve.metrics"
local loader = require "spool.run.loader"
local runner = require "spool.run.runner"
local store = require "spool.run.store"
local thread_mod = require "spool.run.thread"

local M = {}

M.NAMESPACE = "spool_channels" -- business state: what was sent per token

-- The channels' own documents (the token key, what was sent where): the
-- engine's, in a namespace agents cannot reach (spool.state refuses
-- spool_*), so they are read and written in the store directly.
local function own_get(key)
  local doc = store.state_get(M.NAMESPACE, key)
  return doc and doc.value
end


local function own_put(key, value, opts)
  return store.write_state { { ns = M.NAMESPACE, key = key, value = value,
    if_version = opts.if_version,
    expires_at = opts.ttl_ms and core.time() + opts.ttl_ms } }
end


-- ---- tokens ----

-- The key of token MACs: $SPOOL_CHANNEL_SECRET (or channels.secret_env);
-- without one, a random key made once and kept in the store, so tokens
-- are unforgeable by default and agree across processes and restarts.
local stored_key

local function secret()
  local all = config.get().file.channels or {}
  local key = core.getenv(all.secret_env or "SPOOL_CHANNEL_SECRET")
  if key and key ~= "" then
    return key
  end
  if not stored_key then
    stored_key = own_get("_key")
    if not stored_key then
      local candidate = core.sha256(core.random_id() .. core.random_id())
      own_put("_key", candidate, { if_version = 0 })
      stored_key = own_get("_key") or candidate
    end
  end
  return stored_key
end


local function mac(id, seq)
  return core.hmac_sha256(secret(), id .. "." .. seq):sub(1, 16)
end


function M.token(id, seq)
  return string.format("%s.%d.%s", id, seq, mac(id, seq))
end


-- The thread and request a token names; nil and why when it is not one.
function M.parse_token(token)
  local id, seq, sig = tostring(token):match("^([%w_]+)%.(%d+)%.([%w%-]+)$")
  if not id then
    return nil, "not a request token"
  end
  seq = tonumber(seq)
  if not core.equal(sig, mac(id, seq)) then
    return nil, "the token's signature does not match"
  end
  return id, seq
end


-- ---- refusals ----

-- An error answer in the control API's one shape, {"error": {"code",
-- "message"}}, for the channels' own routes too.
local CODES = { [400] = "bad_request", [401] = "bad_signature",
                [403] = "forbidden", [404] = "not_found", [409] = "conflict",
                [422] = "invalid" }

function M.error_reply(status, message)
  return { status = status, body = json.encode({ error = {
    code = CODES[status] or "error", message = message } }),
    headers = { ["content-type"] = "application/json" } }
end


function M.refuse(channel, status, why)
  core.log("warn", string.format("channel %s refused a callback (%d): %s",
    channel, status, why))
  metrics.add("spool_channel_refusals_total", { channel = channel,
    status = tostring(status) })
  return nil, status, why
end


-- A signature seen before within its window is a replay: recorded in the
-- store, so a restart (or another process) does not forget it. Returns
-- true for a first sighting; false for a replay, and when the store
-- cannot say (refused rather than risk one).
function M.fresh(channel, key, ttl_ms)
  -- Hex signatures verify in any letter case: the key must not differ.
  local first, err = store.first_seen(channel .. ":" .. tostring(key):lower(),
    ttl_ms)
  if first == nil then
    core.log("error", "channel " .. channel .. ": cannot record a "
      .. "signature: " .. tostring(err))
  end
  return first == true
end


-- ---- delivery ----

local function pending(id, seq)
  local record = store.load(id)
  if not record then
    return nil
  end
  local t = thread_mod.from_record(record)
  local req = t:pending_request()
  if t:status() == "waiting" and req and req.seq == seq then
    return t, req
  end
end


local function remember(token, channel, ref)
  local doc = own_get(token) or { sent = {} }
  doc.sent[#doc.sent + 1] = { channel = channel, ref = ref }
  own_put(token, doc, { ttl_ms = 30 * 86400000 })
end


-- A delivery that failed for good, as an event on the thread that waits
-- (if it still waits for that request): the people watching it see that
-- nobody was asked there.
local function record_failure(request, t, why, attempts)
  if not store.claim(request.thread) then
    return -- running again (answered meanwhile): nothing to say
  end
  local thread = runner.load(request.thread)
  local req = thread and thread:pending_request()
  if req and req.seq == request.seq then
    thread:append("delivery_failed", { channel = t.channel, to = t.to,
      error = why, attempts = attempts, request = request.seq })
    local ok, err = thread:commit()
    if not ok then
      core.log("error", "thread " .. request.thread .. ": " .. tostring(err))
    end
  end
  store.release(request.thread)
end


-- Delivers to one target, tried `retries` times (channels.retries,
-- default 3) with a growing pause (channels.retry_ms, default 1000).
-- Returns the message's reference, or nil and why.
local function deliver_one(request, t)
  local all = config.get().file.channels or {}
  local tries, pause = all.retries or 3, all.retry_ms or 1000
  local why
  for attempt = 1, tries do
    local ok, ref, err = pcall(common.module(t.channel).deliver, request, t,
      common.settings(t.channel))
    if ok and ref then
      return ref
    end
    why = tostring(ok and err or ref)
    if attempt < tries then
      core.sleep(pause * 2 ^ (attempt - 1))
      if not pending(request.thread, request.seq) then
        return nil, "answered meanwhile"
      end
    end
  end
  return nil, why, tries
end


-- Asks the targets in turn, each after its after_ms — at once after one
-- whose delivery failed: escalation is what failure is for.
local function deliver_all(request, targets)
  request.token = M.token(request.thread, request.seq) -- may read the store
  local failed = false
  for i, t in ipairs(targets) do
    if (i > 1 or (t.after_ms or 0) > 0) and not failed then
      core.sleep(t.after_ms or 0)
    end
    if i > 1 and not pending(request.thread, request.seq) then
      return -- answered meanwhile: no need to escalate
    end
    local ref, why, tries = deliver_one(request, t)
    failed = ref == nil
    if ref then
      remember(request.token, t.channel, ref)
      metrics.add("spool_channel_deliveries_total", { channel = t.channel })
    elseif tries then
      core.log("warn", string.format("thread %s: the request could not be "
        .. "delivered by %s (%d tries): %s", request.thread, t.channel, tries,
        why))
      metrics.add("spool_channel_failures_total", { channel = t.channel })
      record_failure(request, t, why, tries)
    end
  end
end


-- A committed human_request of a top-level thread whose agent names
-- humans: deliver it.
hub.listen(function(thread, ev)
  if thread.parent then
    return
  end
  local ok, agent = pcall(loader.load, thread.agent)
  local targets = ok and agent and agent.humans
  if not targets or #targets == 0 then
    return
  end
  local d = ev.data
  local request = { thread = thread.id,
    seq = ev.seq, agent = thread.agent, kind = d.kind or "approval",
    name = d.name, args = d.args, question = d.question, event = d.event,
    deadline = d.deadline,
    text = human.describe(d) }
  core.spawn(deliver_all, request, targets)
end, { human_request = true })


-- ---- answers ----

-- The open request a token names (its human_request data), or nil.
function M.request_of(token)
  local id, seq = M.parse_token(token)
  if not id then
    return nil
  end
  local _, req = pending(id, seq)
  return req and req.data
end


-- ---- pollers: channels that fetch their answers (email over IMAP) ----

local pollers = {}

-- Starts, for the control API's life, a task per channel that polls.
function M.start_pollers()
  local email = common.settings("email")
  if email.imap_url and not pollers.email then
    local p = { running = true }
    email = setmetatable({ stop = function() return not p.running end },
      { __index = email })
    pollers.email = p
    p.task = core.spawn(function()
      local mod = common.module("email")
      while p.running do
        local ok, handled, err = pcall(mod.poll_once, M, email)
        if not ok or handled == nil then
          core.log("warn", "email: polling the inbox failed: "
            .. tostring(ok and err or handled))
        end
        if p.running then
          p.idle = true -- only an idle poller may be interrupted
          core.sleep(email.poll_ms or 60000)
          p.idle = false
        end
      end
      p.done = true
    end)
  end
end


-- Tells every poller to stop: one asleep between polls wakes and ends; a
-- poll in progress finishes the message it holds (it is seen on the server
-- already) and ends before the next. Does not wait: see M.pollers_running.
function M.stop_pollers()
  for _, p in pairs(pollers) do
    p.running = false
    if p.idle then
      core.interrupt(p.task, "ECANCELED: stopping")
    end
  end
end


-- The names of the stopped pollers still in a poll; the others are
-- forgotten. With forget_all, all are (those polling end with the engine).
function M.pollers_running(forget_all)
  local names = {}
  for name, p in pairs(pollers) do
    if not p.running and (p.done or forget_all) then
      pollers[name] = nil
    end
    if not p.done then
      names[#names + 1] = name
    end
  end
  table.sort(names)
  return names
end


-- The outcome of an answer, as a line for the messages that asked.
local function outcome_text(response, by)
  if response.approve then
    return "Approved by " .. by
  elseif response.reject then
    return "Rejected by " .. by .. (response.reason
      and (": " .. response.reason) or "")
  elseif response.event then
    return "Event " .. response.event .. " sent by " .. by
  end
  return "Answered by " .. by .. ": " .. tostring(response.answer)
end


-- Answers the request a token names. meta = { channel, by }. Returns true
-- and the outcome line, or nil, an HTTP status and a message.
function M.answer(token, response, meta)
  local id, seq = M.parse_token(token)
  if not id then
    return M.refuse(meta.channel, 404, "unknown request token: " .. seq)
  end
  if not store.load(id) then
    return M.refuse(meta.channel, 404, "unknown thread " .. id)
  end
  if not pending(id, seq) then
    return M.refuse(meta.channel, 409, "this request was already answered, "
      .. "or its thread no longer waits for it")
  end
  response.by, response.channel = meta.by, meta.channel
  local t, err = runner.resume(id, response)
  if not t then
    core.log("warn", string.format("channel %s: thread %s could not take "
      .. "the answer: %s", meta.channel, id, err))
    if err:match("^EINVAL") then
      return M.refuse(meta.channel, 422, (err:gsub("^%u+: ", "")))
    end
    return M.refuse(meta.channel, 409, "the thread is busy or was just "
      .. "answered; try again shortly")
  end
  local line = outcome_text(response, meta.by)
  core.spawn(function()
    local doc = own_get(token)
    for _, s in ipairs(doc and doc.sent or {}) do
      local mod = common.module(s.channel)
      if mod and mod.settled and not (s.channel == meta.channel
          and mod.same_message and mod.same_message(s.ref, meta.ref)) then
        pcall(mod.settled, s.ref, line, common.settings(s.channel))
      end
    end
  end)
  return true, line
end


-- Starts a thread from a channel (a slash command, a mention): the agent
-- must be one the channel's settings allow. Returns the thread id, or nil,
-- status, message.
function M.start(channel, agent_name, input, allowed)
  local ok = false
  for _, a in ipairs(allowed or {}) do
    ok = ok or a == agent_name
  end
  if not ok then
    return M.refuse(channel, 403, string.format("agent '%s' may not be "
      .. "started from %s", tostring(agent_name), channel))
  end
  local refused, why = runner.admission()
  if refused then
    return nil, 503, why
  end
  local agent, err = loader.load(agent_name)
  if not agent then
    return nil, 404, err
  end
  return runner.start(agent, input).id
end


-- Parses an application/x-www-form-urlencoded body.
function M.form(body)
  local out = {}
  for pair in tostring(body):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    local function dec(s)
      return (s:gsub("+", " "):gsub("%%(%x%x)", function(h)
        return string.char(tonumber(h, 16))
      end))
    end
    out[dec(k)] = dec(v)
  end
  return out
end


return M
