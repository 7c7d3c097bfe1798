-- spool.run.hub: events as they become durable, for whoever follows them
-- (private). The control API's event streams follow one thread each;
-- metrics and webhooks listen to every event. Nothing is told of an event
-- before it is committed, so a follower never sees one that a crash then
-- takes back.
--
--   hub.follow(id) -> signal        notified after each commit of thread id
--   hub.unfollow(id, signal)
--   hub.listen(fn, types)           fn(thread, event) for every event of
--                                   these types ({ [type] = true })
--   hub.notify_all()                wake every follower (shutdown)
--   hub.wake(id)                    wake thread id's followers (another
--                                   worker committed to it)
--
-- And notices about the engine as a whole (a thread starts, waits or
-- ends, an agent reloads), which are not stored: each subscriber gets those sent
-- while it is subscribed, up to a bounded backlog.
--
--   hub.subscribe() -> sub          sub.signal, sub.queue, sub.dropped
--   hub.unsubscribe(sub)
--   hub.broadcast(notice)
--
-- And the text a thread's model writes, piece by piece as it comes (not
-- durable either: the whole text is in the model_call event). A run
-- streams its model calls while someone reads (spool.loop).
--
--   hub.read_text(id[, signal]) -> reader   reader.signal (the one given:
--                                   a follower's, to wait on both), reader.pieces (a
--                                   queue; each a string, or RESET when an
--                                   attempt broke off and the text starts
--                                   again), reader.overflow
--   hub.stop_reading(id, reader)
--   hub.text_wanted(id) -> boolean
--   hub.text(id, piece | hub.RESET)

local thread_mod = require "spool.run.thread"
local core = require "spool.core"

local M = {}

local followers = {} -- thread id -> { [signal] = true }
local readers = {} -- thread id -> { [reader] = true }
local listeners = {} -- event type -> { fn, ... }
local subscribers = {} -- sub -> true

M.backlog = 1000 -- notices a subscriber may fall behind by


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


function M.listen(fn, types)
  for t in pairs(types) do
    local fns = listeners[t] or {}
    fns[#fns + 1] = fn
    listeners[t] = fns
  end
end


-- The number of threads followed, for tests that check none is left.
function M.followed()
  local n = 0
  for _ in pairs(followers) do
    n = n + 1
  end
  return n
end


function M.wake(id)
  for sig in pairs(followers[id] or {}) do
    sig:notify()
  end
end


function M.notify_all()
  for _, set in pairs(followers) do
    for sig in pairs(set) do
      sig:notify()
    end
  end
  for sub in pairs(subscribers) do
    sub.signal:notify()
  end
end


function M.subscribe()
  local sub = { signal = core.signal(), queue = {}, dropped = 0 }
  subscribers[sub] = true
  return sub
end


function M.subscribed()
  local n = 0
  for _ in pairs(subscribers) do
    n = n + 1
  end
  return n
end


function M.unsubscribe(sub)
  subscribers[sub] = nil
end


function M.broadcast(notice)
  for sub in pairs(subscribers) do
    local q = sub.queue
    if #q >= M.backlog then
      table.remove(q, 1)
      sub.dropped = sub.dropped + 1
    end
    q[#q + 1] = notice
    sub.signal:notify()
  end
end


-- ---- the model's text, as it comes ----

M.RESET = setmetatable({}, { __tostring = function() return "reset" end })
-- What a reader may fall behind by, in bytes: past it, pieces are dropped
-- and reader.overflow says so (the text is whole in the event).
M.text_backlog = 1024 * 1024

function M.read_text(id, signal)
  local reader = { signal = signal or core.signal(), pieces = {}, bytes = 0,
                   overflow = false }
  local set = readers[id]
  if not set then
    set = {}
    readers[id] = set
  end
  set[reader] = true
  return reader
end


function M.stop_reading(id, reader)
  local set = readers[id]
  if set then
    set[reader] = nil
    if next(set) == nil then
      readers[id] = nil
    end
  end
end


function M.text_wanted(id)
  return readers[id] ~= nil
end


function M.text(id, piece)
  for reader in pairs(readers[id] or {}) do
    local n = piece == M.RESET and 0 or #piece
    if reader.bytes + n > M.text_backlog then
      reader.overflow = true
    else
      reader.bytes = reader.bytes + n
      reader.pieces[#reader.pieces + 1] = piece
    end
    reader.signal:notify()
  end
end


-- Takes the pieces a reader has not taken yet.
function M.take_text(reader)
  local pieces = reader.pieces
  reader.pieces, reader.bytes = {}, 0
  return pieces
end


thread_mod.on_commit = function(thread, first, last)
  -- A thread that starts is a notice (the ones that wait or end are the
  -- webhooks': spool.serve.webhooks), so a list of threads shows it.
  if first == 1 and not thread.parent and next(subscribers) then
    M.broadcast({ type = "thread.started", thread = thread.id,
                  agent = thread.agent, at = thread.events[1].at,
                  status = "running" })
  end
  -- (Most of a step's events have no listener: a tool step's three have
  -- one among them.)
  for i = first, last do
    local ev = thread.events[i]
    local fns = listeners[ev.type]
    if fns then
      for j = 1, #fns do
        local ok, err = pcall(fns[j], thread, ev)
        if not ok then
          core.log("error", "event listener failed: " .. tostring(err))
        end
      end
    end
  end
  M.wake(thread.id)
end


return M
