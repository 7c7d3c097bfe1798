-- spool.model.ratelimit: client-side limits per provider key — requests and
-- tokens per minute — so a thousand runs started at once queue here
-- instead of stampeding a provider into 429s.
--
-- Each limit is a GCRA (generic cell rate algorithm) meter: a full
-- minute's allowance may go at once, then units flow at the steady rate.
-- A caller *reserves* its units and is told how long to wait; the meter
-- moves at reservation, so waiters are served in the order they came and
-- nobody polls.
--
--   local lim = ratelimit.for_model(model)  -- nil when the model has no
--                                           -- rpm / tpm settings
--   local wait_ms = lim:reserve(tokens)     -- then sleep wait_ms
--   lim:release(tokens)                     -- if the call is not made
--
-- Tokens are estimated before the call (a request's bytes / 4, plus the
-- reply it may get: max_tokens), as providers do when they meter.

local core = require "spool.core"

local M = {}

local WINDOW_MS = 60000

local Meter = {}
Meter.__index = Meter


-- A meter of `per_minute` units; `now` is a clock in ms (tests pass their
-- own).
function M.meter(per_minute, now)
  return setmetatable({ interval = WINDOW_MS / per_minute, tat = nil,
                        now = now or core.now }, Meter)
end


-- Takes n units; returns the ms to wait before using them.
function Meter:take(n)
  local now = self.now()
  local tat = math.max(self.tat or now, now) + n * self.interval
  self.tat = tat
  return math.max(0, math.ceil(tat - now - WINDOW_MS))
end


-- Gives back n units taken but not used.
function Meter:give_back(n)
  if self.tat then
    self.tat = self.tat - n * self.interval
  end
end


local Limiter = {}
Limiter.__index = Limiter


-- Reserves one request and `tokens` tokens; returns the ms to wait.
function Limiter:reserve(tokens)
  local wait = 0
  if self.requests then
    wait = self.requests:take(1)
  end
  if self.tokens and tokens and tokens > 0 then
    wait = math.max(wait, self.tokens:take(tokens))
  end
  return wait
end


-- Undoes a reservation whose call was never made.
function Limiter:release(tokens)
  if self.requests then
    self.requests:give_back(1)
  end
  if self.tokens and tokens and tokens > 0 then
    self.tokens:give_back(tokens)
  end
end


local limiters = {}


-- The limiter shared by every call with the same provider, endpoint and
-- key, or nil when the model sets no limits.
function M.for_model(model)
  if not model.rpm and not model.tpm then
    return nil
  end
  local key = table.concat({ model.provider, model.base_url or "mock",
    model.api_key_env or "", tostring(model.rpm), tostring(model.tpm) }, " ")
  local lim = limiters[key]
  if not lim then
    lim = setmetatable({
      requests = model.rpm and M.meter(model.rpm) or nil,
      tokens = model.tpm and M.meter(model.tpm) or nil,
    }, Limiter)
    limiters[key] = lim
  end
  return lim
end


-- The tokens a request may cost, before it is sent.
function M.estimate(body, max_tokens)
  return (#body + 3) // 4 + (max_tokens or 0)
end


return M
