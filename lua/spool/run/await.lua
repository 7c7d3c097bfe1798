-- spool.run.await: waits for a thread to stop running (private): to end,
-- or to wait for a person or an event. What a caller that started a
-- thread, or answered one, holds its reply on: the control API's wait_ms,
-- an MCP client's tools/call. Must run in a task.
--
--   await(id, ms[, on_change]) -> thread, row | nil, "ECODE: why"
--
-- After at most ms it returns the thread as it is, running or not (and
-- at once when the server drains). on_change(thread), if given, sees the
-- thread as stored each time it may have moved on: a step committed here,
-- or by another worker (whose commits wake it where the store has
-- notifications, PostgreSQL). The thread is read again from the store
-- each time, so its events are the durable ones, never one a crash could
-- take back.

local core = require "spool.core"
local hub = require "spool.run.hub"
local runner = require "spool.run.runner"
local store = require "spool.run.store"
local thread_mod = require "spool.run.thread"

-- Without a wake (another worker's commit where nothing notifies), the
-- store is read again this often.
local POLL_MS = 1000
-- How long a run that stopped may take to let go of its thread.
local SETTLE_MS = 10 * 1000

local function stored(id)
  local record, err = store.load(id)
  if not record then
    return nil, err
  end
  return thread_mod.from_record(record), record.thread
end

local function wait(id, sig, ms, on_change)
  local deadline = core.now() + ms
  while true do
    local live = runner.find(id)
    if live and live.halted then
      return nil, "EIO: the thread could not be stored: "
        .. tostring(live.halted):gsub("^%u+: ", "")
    end
    local left = deadline - core.now()
    if live and live.persisted == 0 then
      sig:wait(math.max(left, 1000)) -- its input is being stored
    else
      local t, row = stored(id)
      if not t then
        return nil, row
      end
      if on_change then
        on_change(t)
      end
      if t:status() ~= "running" then
        -- The run commits its stop, then lets go of the thread (its
        -- lease): a caller told the thread waits must be able to answer
        -- it at once, here or on any other worker.
        runner.settle(id, SETTLE_MS)
        return t, row
      elseif left <= 0 or runner.draining then
        return t, row
      end
      sig:wait(runner.is_live(id) and left or math.min(left, POLL_MS))
    end
  end
end

local function await(id, ms, on_change)
  local sig = hub.follow(id)
  local ok, t, row = pcall(wait, id, sig, ms, on_change)
  hub.unfollow(id, sig)
  if not ok then
    error(t, 0)
  end
  return t, row
end

return await
