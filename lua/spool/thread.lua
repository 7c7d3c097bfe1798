-- spool.thread: a thread is the record of one agent's work on one input,
-- an append-only list of events. Everything else about a run (its status,
-- its step, its error count) is derived from the events, never kept as a
-- separate mutable record that could disagree with them.
--
--   thread = { id, agent, parent, depth, version, events = { event, ... } }
--   event  = { seq, step, type, data, at, v }
--
-- Event types: input, model_call, intent, tool_result, error, done, failed,
-- agent_call, agent_result.

local core = require "spool.core"

local M = {}

local Thread = {}
Thread.__index = Thread

-- The status each event type leaves a thread in.
local STATUS_AFTER = {
  done = "done",
  failed = "failed",
  cancelled = "cancelled",
}


-- Creates a thread (no events yet). `sink(thread, event)` is told of every
-- event appended, after it is in the list.
function M.new(agent, version, parent, sink)
  return setmetatable({
    id = "t_" .. core.random_id(),
    agent = agent,
    version = version,
    parent = parent and parent.id or nil,
    depth = parent and parent.depth + 1 or 0,
    events = {},
    step = 0,
    sink = sink,
  }, Thread)
end


-- Appends an event and returns it.
function Thread:append(type, data)
  local ev = {
    seq = #self.events + 1,
    step = self.step,
    type = type,
    data = data or {},
    at = core.time(),
    v = self.version,
  }
  self.events[#self.events + 1] = ev
  if self.sink then
    self.sink(self, ev)
  end
  return ev
end


-- Ends the thread with a result.
function Thread:finish(result)
  return self:append("done", { result = result })
end


-- Ends the thread as failed, with a message saying why.
function Thread:fail(message)
  return self:append("failed", { error = message })
end


-- running | done | failed | cancelled, from the last terminal event.
function Thread:status()
  for i = #self.events, 1, -1 do
    local s = STATUS_AFTER[self.events[i].type]
    if s then
      return s
    end
  end
  return "running"
end


-- The input event's value.
function Thread:input()
  local first = self.events[1]
  return first and first.type == "input" and first.data.input or nil
end


-- The result of a done thread, or nil and the error of a failed one.
function Thread:outcome()
  for i = #self.events, 1, -1 do
    local ev = self.events[i]
    if ev.type == "done" then
      return ev.data.result
    elseif ev.type == "failed" then
      return nil, ev.data.error
    end
  end
end


-- The number of steps, counted back from the last, whose events include an
-- error: a successful step resets the count.
function Thread:consecutive_errors()
  local n, step, step_had_error = 0, nil, false
  for i = #self.events, 1, -1 do
    local ev = self.events[i]
    if ev.step ~= step then
      if step ~= nil then
        if not step_had_error then
          return n
        end
      end
      step, step_had_error = ev.step, false
      if ev.step == 0 then
        return n
      end
    end
    if ev.type == "error" and not step_had_error then
      step_had_error = true
      n = n + 1
    end
  end
  return n
end


-- The error messages of the last n steps that had errors, oldest first.
function Thread:recent_errors(n)
  local out = {}
  for i = #self.events, 1, -1 do
    local ev = self.events[i]
    if ev.type == "error" then
      table.insert(out, 1, ev.data.error)
      if #out >= n then
        break
      end
    end
  end
  return out
end


-- Events of a given type, in order.
function Thread:each(type)
  local i = 0
  return function()
    repeat
      i = i + 1
      local ev = self.events[i]
      if ev and (type == nil or ev.type == type) then
        return ev
      end
    until ev == nil
  end
end


M.Thread = Thread

return M
