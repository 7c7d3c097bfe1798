-- spool.serve.schedules: threads started on a clock, from spool.lua's
--
--   schedules = { nightly = { agent = "report", cron = "0 3 * * *",
--                             input = "yesterday", catch_up_ms = 3600000 } }
--
-- (cron in UTC, see spool.base.cron). Every worker that serves checks
-- each second; a slot's thread has an id made of the schedule and the
-- minute (t_nightly_202612050300), so however many workers see the slot,
-- the store takes one thread for it. After downtime, only the latest
-- missed slot runs, and only if it is at most catch_up_ms old (an hour
-- by default): a worker that was down for a day does not run a day's
-- slots at once.

local core = require "spool.core"
local config = require "spool.base.config"
local cron = require "spool.base.cron"
local loader = require "spool.run.loader"
local runner = require "spool.run.runner"
local store = require "spool.run.store"

local M = {}

local started = {} -- schedule name -> the slot this process has seen to


-- The thread of schedule `name` for the slot at `t` (seconds).
function M.thread_id(name, t)
  return "t_" .. name .. "_" .. os.date("!%Y%m%d%H%M", t)
end


-- Starts the thread of each schedule's latest slot, unless some worker
-- has. (task)
function M.fire()
  local now = core.time() // 1000
  for name, s in pairs(config.get().schedules or {}) do
    local slot = cron.latest(s.spec, now, s.catch_up_ms // 1000)
    if slot and started[name] ~= slot then
      local id = M.thread_id(name, slot)
      local _, err, code = store.load(id)
      if code == "ENOTFOUND" then
        local agent, lerr = loader.load(s.agent)
        if agent then
          runner.start(agent, s.input, id)
        else
          core.log("error", "schedule " .. name .. ": " .. tostring(lerr))
        end
        started[name] = slot
      elseif err == nil then
        started[name] = slot -- another worker started it
      end -- else the store failed: the next tick tries again
    end
  end
end


return M
