-- spool._hub: events as they become durable, for whoever follows them
-- (private). The control API's event streams follow one thread each;
-- metrics and webhooks listen to every event. Nothing is told of an event
-- before it is committed, so a follower never sees one that a crash then
-- takes back.
--
--   hub.follow(id) -> signal        notified after each commit of thread id
--   hub.unfollow(id, signal)
--   hub.listen(fn)                  fn(thread, event) for every event
--   hub.notify_all()                wake every follower (shutdown)

local thread_mod = require "spool.thread"
local core = require "spool.core"

local M = {}

local followers = {} -- thread id -> { [signal] = true }
local listeners = {}


function M.follow(id)
  local sig = core.signal()
  local set = followers[id]
  if not set then
    set = {}
    followers[id] = set
  end
  set[sig] = true
  return sig
end


function M.unfollow(id, sig)
  local set = followers[id]
  if set then
    set[sig] = nil
    if next(set) == nil then
      followers[id] = nil
    end
  end
end


function M.listen(fn)
  listeners[#listeners + 1] = fn
end


-- The number of threads followed, for tests that check none is left.
function M.followed()
  local n = 0
  for _ in pairs(followers) do
    n = n + 1
  end
  return n
end


function M.notify_all()
  for _, set in pairs(followers) do
    for sig in pairs(set) do
      sig:notify()
    end
  end
end


thread_mod.on_commit = function(thread, first, last)
  for _, fn in ipairs(listeners) do
    for i = first, last do
      local ok, err = pcall(fn, thread, thread.events[i])
      if not ok then
        core.log("error", "event listener failed: " .. tostring(err))
      end
    end
  end
  local set = followers[thread.id]
  if set then
    for sig in pairs(set) do
      sig:notify()
    end
  end
end


return M
