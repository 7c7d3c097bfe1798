-- spool.serve.webhooks: notices to the team's systems when a thread needs a
-- person, finishes or fails, and the signatures both ways (private).
--
-- Out: spool.lua's `webhooks` lists targets:
--
--   webhooks = { { url = "https://example.com/spool",
--                  events = { "waiting", "done", "failed", "cancelled" },
--                  agents = { "support" },           -- all when absent
--                  secret_env = "SPOOL_WEBHOOK_SECRET",  -- required
--                  attempts = 6, backoff_ms = 1000 } }
--
-- Each notice is a POST of JSON { id, type = "thread.waiting" | ...,
-- thread, agent, status, at, waiting_for | result | error }, with headers
-- Spool-Delivery (the notice's id: the same on every retry), Spool-Event,
-- Spool-Attempt and Spool-Signature: "t=<ms since the epoch>,v1=<hex
-- HMAC-SHA256 of '<t>.<body>' keyed with the secret>".
--
-- Notices are durable: each is written to an outbox (business state in
-- the engine's namespace spool.outbox) in the same transaction as the
-- event it tells of, so no notice is lost to a crash, nor held by a
-- process. The process that committed it tries it at once, in a task of
-- its own; a failure (no answer, 408, 429, 5xx) is tried again later,
-- with exponential backoff and jitter (Retry-After honoured, in seconds or
-- as a date), by any process that serves (M.deliver_due, every second):
-- `spool run` exits without waiting for retries. A process claims a notice
-- before it sends it (a compare-and-set), so two never send one at once.
-- Only threads started directly (not sub-agents) notify.
--
-- In: M.verify checks a signed request (the control API's /v1/hooks
-- routes) — signed the same way over "<path>.<body>" — rejecting
-- signatures outside the time window and any accepted before within it.

local core = require "spool.core"
local store = require "spool.run.store"
local json = require "spool.json"
local http = require "spool.base.http"
local config = require "spool.base.config"
local hub = require "spool.run.hub"
local metrics = require "spool.serve.metrics"
local human = require "spool.human"
local thread_mod = require "spool.run.thread"
local trace = require "spool.run.trace"

local M = {}

M.max_in_flight = 10000
local in_flight = 0

local KIND = { human_request = "waiting", done = "done", failed = "failed",
               cancelled = "cancelled" }


-- Notices being delivered (or waiting to retry) now.
function M.in_flight()
  return in_flight
end


function M.sign(secret, at, body)
  return string.format("t=%d,v1=%s", at, core.hmac_sha256(secret,
    at .. "." .. body))
end


-- Where a URL goes, without credentials, path or query (any of which may
-- hold a secret).
local function host_of(url)
  local authority = url:match("^https?://([^/?#]+)") or "?"
  return authority:match("@([^@]*)$") or authority
end


local function wants(target, kind, agent)
  local function has(list, v)
    if list == nil then
      return true
    end
    for _, x in ipairs(list) do
      if x == v then
        return true
      end
    end
    return false
  end
  return has(target.events or { "waiting", "done", "failed" }, kind)
    and has(target.agents, agent)
end


local OUTBOX = "spool.outbox"
local CLAIM_MS = 60000 -- a sender that died lets go of a notice after this


local function notice_of(thread, ev, kind)
  local n = { id = "d_" .. core.random_id(), type = "thread." .. kind,
              thread = thread.id, agent = thread.agent, at = ev.at,
              status = kind }
  if kind == "waiting" then
    n.waiting_for = human.view(ev.data)
  elseif kind == "done" then
    n.result = ev.data.result
  else
    n.error = ev.data.error or ev.data.reason
  end
  return n
end


-- The outbox keys written for a notice, for its first try once committed.
local keys_of = setmetatable({}, { __mode = "k" })

-- The outbox writes of a commit (spool.run.thread's before_commit): one per
-- notice and target that wants it. The notices are kept on the thread for
-- the commit's listeners (the /v1/events stream shows the same ids).
thread_mod.before_commit = function(thread, first, last)
  if thread.parent then
    return nil
  end
  local targets = config.get().webhooks
  local writes
  for i = first, last do
    local ev = thread.events[i]
    local kind = KIND[ev.type]
    if kind then
      local notice = notice_of(thread, ev, kind)
      thread.notices = thread.notices or {}
      thread.notices[ev.seq] = notice
      local keys = {}
      for ti, target in ipairs(targets or {}) do
        if wants(target, kind, thread.agent) then
          keys[#keys + 1] = notice.id .. "." .. ti
          writes = writes or {}
          writes[#writes + 1] = store.engine_write { ns = OUTBOX,
            key = keys[#keys], value = { notice = notice, url = target.url,
              attempt = 0, next_at = core.time(),
              traceparent = trace.header() } }
        end
      end
      keys_of[notice] = keys
    end
  end
  return writes
end


local function target_of(url)
  for _, t in ipairs(config.get().webhooks or {}) do
    if t.url == url then
      return t
    end
  end
end


-- The outbox's passes (deliver_due, below) sleep until this, unless a
-- retry this process scheduled is due sooner.
local quiet_until = 0

local function wake_at(t)
  quiet_until = math.min(quiet_until, t)
end


local DELIVERY = trace.schema { "server.address", "spool.delivery",
  "spool.attempt", "gen_ai.conversation.id", "http.response.status_code",
  "error.type" }

-- One try of one notice in the outbox, if it is due and nobody else is
-- at it: claimed, sent, then deleted (sent, or refused for good) or put
-- back with its next try's time. Must run in a task.
local function try(key)
  local doc = store.state_get(OUTBOX, key)
  local item = doc and doc.value
  local now = core.time()
  if type(item) ~= "table" or (item.next_at or 0) > now
      or (item.claimed_until or 0) > now then
    return
  end
  local target = target_of(item.url)
  if not target then -- no longer configured
    store.write_state { { ns = OUTBOX, key = key,
      if_version = doc.version } }
    return
  end
  item.claimed_until = now + CLAIM_MS
  local versions = store.write_state { { ns = OUTBOX,
    key = key, value = item, if_version = doc.version } }
  if not versions then
    return -- another process has it
  end
  local version = versions[1]
  local notice, attempt = item.notice, item.attempt + 1
  local body = json.encode(notice)
  local secret = core.getenv(target.secret_env)
  local headers = { ["Content-Type"] = "application/json",
                    ["Spool-Delivery"] = notice.id,
                    ["Spool-Event"] = notice.type,
                    ["Spool-Attempt"] = tostring(attempt) }
  if secret then
    headers["Spool-Signature"] = M.sign(secret, core.time(), body)
  end
  local where = host_of(target.url)
  -- A delivery is a span of the run whose event it tells of.
  local span = trace.start("webhook " .. notice.type, trace.CLIENT,
    trace.parse(item.traceparent))
  headers.traceparent = span and trace.format(span) or nil
  local res = http.request { url = target.url, method = "POST",
    headers = headers, body = body, timeout_ms = 10000 }
  local status = res and res.status or 0
  local failed = status < 200 or status > 299
  trace.finish(span, failed and ("the delivery got " .. (status > 0
      and ("HTTP " .. status) or "no answer")) or nil, DELIVERY, where,
    notice.id, attempt, notice.thread, status > 0 and status or nil,
    failed and (status > 0 and tostring(status) or "no_answer") or nil)
  local done, result
  if status >= 200 and status < 300 then
    done, result = true, "delivered"
  elseif status ~= 0 and status ~= 408 and status ~= 429 and status < 500 then
    core.log("warn", string.format("webhook %s to %s refused with %d; not "
      .. "retried", notice.id, where, status))
    done, result = true, "refused"
  elseif attempt >= (target.attempts or 6) then
    core.log("error", string.format("webhook %s to %s failed %d times; "
      .. "dropped", notice.id, where, attempt))
    done, result = true, "dropped"
  end
  metrics.add("spool_webhooks_total", { result = result or "retried" })
  if done then
    store.write_state { { ns = OUTBOX, key = key,
      if_version = version } }
    return
  end
  local backoff = target.backoff_ms or 1000
  local delay = backoff * 2 ^ (attempt - 1)
  delay = delay / 2 + math.random() * delay / 2 -- jitter: 50-100%
  local after = res and http.retry_after_ms(res.headers,
    status)
  delay = math.min(math.max(delay, after or 0), 3600000)
  item.attempt, item.next_at, item.claimed_until = attempt,
    core.time() + math.floor(delay), nil
  if store.write_state { { ns = OUTBOX, key = key, value = item,
      if_version = version } } then
    wake_at(item.next_at)
  end
end


local function try_in_task(key)
  if in_flight >= M.max_in_flight then
    return -- the outbox keeps it for a later pass
  end
  in_flight = in_flight + 1
  core.spawn(function()
    local ok, err = pcall(try, key)
    in_flight = in_flight - 1
    if not ok then
      core.log("error", "webhook " .. key .. ": " .. tostring(err))
    end
  end)
end


-- Tries every notice of the outbox that is due (a pass of a process that
-- serves, every second). A pass that finds nothing due lets the outbox be
-- until its next notice is (30 s at most: other processes add to it), so
-- notices backing off are not read again each second. Must run in a task.
local RESCAN_MS = 30000

function M.deliver_due()
  local now = core.time()
  if now < quiet_until then
    return
  end
  -- Lowered by what this pass finds, and by retries scheduled meanwhile.
  quiet_until = now + RESCAN_MS
  local after, tried = "", false
  for _ = 1, 100 do
    local items = store.state_list(OUTBOX, after, 500)
    if not items or #items == 0 then
      break
    end
    for _, item in ipairs(items) do
      local v = item.value
      if type(v) == "table" then
        local due = math.max(v.next_at or 0, v.claimed_until or 0)
        if due <= now then
          tried = true
          try_in_task(item.key)
        else
          wake_at(due)
        end
      end
      after = item.key
    end
  end
  if tried then
    quiet_until = 0 -- (the next pass looks again)
  end
end


hub.listen(function(thread, ev)
  local notice = thread.notices and thread.notices[ev.seq]
  if not notice then
    return
  end
  thread.notices[ev.seq] = nil
  hub.broadcast(notice) -- the control API's /v1/events
  for _, key in ipairs(keys_of[notice] or {}) do
    try_in_task(key) -- the first try, now
  end
end, KIND) -- (the events notices are made of)


-- ---- inbound: signed requests ----

-- What an inbound signature covers: the time, the path and the body, so a
-- request signed for one thread cannot be replayed against another.
function M.sign_request(secret, at, path, body)
  return M.sign(secret, at, path .. "." .. body)
end


-- Checks a request's Spool-Signature. Returns a token for M.settle, or
-- nil and why (for a 401). A valid signature is held while the request is
-- handled, and kept (against replays) only if it succeeded: a sender may
-- retry a request that failed.
function M.verify(header, path, body, secret, max_age_ms)
  local at, sig = (header or ""):match("^t=(%d+),v1=(%x+)$")
  if not at then
    return nil, "a Spool-Signature header (t=...,v1=...) is required"
  end
  sig = sig:lower()
  local now = core.time()
  at = math.tointeger(tonumber(at))
  if not at or math.abs(now - at) > max_age_ms then
    return nil, "the signature's time is outside the accepted window"
  end
  if not core.equal(M.sign_request(secret, at, path, body),
      "t=" .. at .. ",v1=" .. sig) then
    return nil, "the signature does not match"
  end
  -- Seen in the store, for twice the window: a replay after a restart, or
  -- to another process over the same store, is refused too.
  local first, err = store.first_seen("hook:" .. sig, 2 * max_age_ms)
  if first == nil then
    return nil, "the store cannot record the request: " .. tostring(err)
  elseif not first then
    return nil, "this request was already received (a replay)"
  end
  return sig
end


-- After the request was handled: keep its signature if it succeeded.
function M.settle(sig, succeeded)
  if not succeeded then
    store.forget_seen("hook:" .. sig)
  end
end


return M
