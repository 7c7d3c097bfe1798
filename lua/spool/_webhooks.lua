-- spool._webhooks: notices to the team's systems when a thread needs a
-- person, finishes or fails, and the signatures both ways (private).
--
-- Out: spool.lua's `webhooks` lists targets:
--
--   webhooks = { { url = "https://example.com/spool",
--                  events = { "waiting", "done", "failed", "cancelled" },
--                  agents = { "support" },           -- all when absent
--                  secret_env = "SPOOL_WEBHOOK_SECRET",
--                  attempts = 6, backoff_ms = 1000 } }
--
-- Each notice is a POST of JSON { id, type = "thread.waiting" | ...,
-- thread, agent, status, at, waiting_for | result | error }, with headers
-- Spool-Delivery (the notice's id: the same on every retry), Spool-Event,
-- and Spool-Signature: "t=<ms since the epoch>,v1=<hex HMAC-SHA256 of
-- '<t>.<body>' keyed with the secret>". A failure (no answer, 408, 429,
-- 5xx) is retried with exponential backoff and jitter (Retry-After
-- honoured), in a task of its own: the loop never waits for a receiver.
-- Notices are kept in memory: a process that stops drops those still
-- being retried. Only threads started directly (not sub-agents) notify.
--
-- In: M.verify checks a signed request (the control API's /v1/hooks
-- routes) — signed the same way over "<path>.<body>" — rejecting
-- signatures outside the time window and any accepted before within it.

local core = require "spool.core"
local store = require "spool.store"
local json = require "spool.json"
local http = require "spool._http"
local config = require "spool.config"
local hub = require "spool._hub"
local metrics = require "spool._metrics"
local human = require "spool.human"

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


local function deliver(target, notice)
  local body = json.encode(notice)
  local attempts = target.attempts or 6
  local backoff = target.backoff_ms or 1000
  local secret = target.secret_env and core.getenv(target.secret_env)
  local where = host_of(target.url)
  if target.secret_env and not secret then
    core.log("warn", string.format("webhook to %s: $%s is not set, so the "
      .. "notice goes out unsigned", where, target.secret_env))
  end
  for attempt = 1, attempts do
    local headers = { ["Content-Type"] = "application/json",
                      ["Spool-Delivery"] = notice.id,
                      ["Spool-Event"] = notice.type,
                      ["Spool-Attempt"] = tostring(attempt) }
    if secret then
      headers["Spool-Signature"] = M.sign(secret, core.time(), body)
    end
    local res = http.request { url = target.url, method = "POST",
      headers = headers, body = body, timeout_ms = 10000 }
    local status = res and res.status or 0
    if status >= 200 and status < 300 then
      metrics.add("spool_webhooks_total", { result = "delivered" })
      return
    end
    if status ~= 0 and status ~= 408 and status ~= 429 and status < 500 then
      core.log("warn", string.format("webhook %s to %s refused with %d; not "
        .. "retried", notice.id, where, status))
      metrics.add("spool_webhooks_total", { result = "refused" })
      return
    end
    if attempt < attempts then
      local delay = backoff * 2 ^ (attempt - 1)
      delay = delay / 2 + math.random() * delay / 2 -- jitter: 50-100%
      local after = res and tonumber(res.headers["retry-after"] or "")
      if after then
        delay = math.max(delay, after * 1000)
      end
      metrics.add("spool_webhooks_total", { result = "retried" })
      core.sleep(math.min(delay, 300000))
    end
  end
  core.log("error", string.format("webhook %s to %s failed %d times; "
    .. "dropped", notice.id, where, attempts))
  metrics.add("spool_webhooks_total", { result = "dropped" })
end


local function notice_of(thread, ev, kind)
  local n = { id = "d_" .. core.random_id(), type = "thread." .. kind,
              thread = thread.id, agent = thread.agent, at = ev.at,
              status = kind }
  if kind == "waiting" then
    local d = ev.data
    n.waiting_for = { kind = d.kind, question = d.question, name = d.name,
      args = d.args, event = d.event, deadline = d.deadline,
      text = human.describe(d) }
  elseif kind == "done" then
    n.result = ev.data.result
  else
    n.error = ev.data.error or ev.data.reason
  end
  return n
end


hub.listen(function(thread, ev)
  local kind = KIND[ev.type]
  if not kind or thread.parent then
    return
  end
  local notice = notice_of(thread, ev, kind)
  hub.broadcast(notice) -- the control API's /v1/events
  for _, target in ipairs(config.get().webhooks or {}) do
    if wants(target, kind, thread.agent) then
      if in_flight >= M.max_in_flight then
        core.log("error", "webhook to " .. host_of(target.url) .. " dropped: "
          .. M.max_in_flight .. " notices are already being delivered")
        metrics.add("spool_webhooks_total", { result = "dropped" })
      else
        in_flight = in_flight + 1
        core.spawn(function()
          local ok, err = pcall(deliver, target, notice)
          in_flight = in_flight - 1
          if not ok then
            core.log("error", "webhook " .. notice.id .. ": " .. tostring(err))
          end
        end)
      end
    end
  end
end)


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
