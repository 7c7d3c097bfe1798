-- spool.run.thread: a thread is the record of one agent's work on one input,
-- an append-only list of events. Everything about a run (its status, its
-- step, what it waits for, its error count, its usage) is derived from the
-- events, never kept as a separate record that could disagree with them.
--
--   thread = { id, agent, parent, depth, version, events = { event, ... } }
--   event  = { seq, step, type, data, at, v }
--
-- Event types: input, model_call, intent, tool_result, error,
-- human_request, human_response, agent_call, agent_result, done, failed,
-- cancelled.
--
-- Events are appended in memory and made durable by Thread:commit, which
-- the loop calls at each step boundary (and before a tool with side
-- effects runs). `persisted` counts the events already in the store.
-- `M.on_commit(thread, first, last)`, if set, is told of each range of
-- events made durable (the control API streams them). `M.before_commit(
-- thread, first, last)`, if set, may return state writes that commit in
-- the same transaction as those events (the webhooks' outbox).

local core = require "spool.core"
local json = require "spool.json"
local store = require "spool.run.store"
local task = require "spool.base.task"

local M = {}

-- The methods, apart from the metatable: a thread is handed to agent
-- code, which must not reach (and change) the methods every thread shares.
local Thread = {}
local THREAD = { __index = Thread, __name = "spool.run.thread" }

local TERMINAL = { done = "done", failed = "failed", cancelled = "cancelled" }

-- What the events say so far (status, the request waited on, the latest
-- model call's open calls, usage) is folded in C, with the events
-- appended since the last look, at each question: the loop asks several
-- times a step (engine/src/lua/l_thread.c, kept at thread.derived).
local thread_status = core.thread_status


function M.new_id()
  return "t_" .. core.random_id()
end


-- Creates a thread (no events yet). `sink(thread, event)` is told of every
-- event once it is stored (Thread:commit): what the host shows of a
-- thread is what a later process finds.
function M.new(agent, version, parent, sink, id)
  return setmetatable({
    id = id or M.new_id(),
    agent = agent,
    version = version,
    parent = parent and parent.id or nil,
    depth = parent and parent.depth + 1 or 0,
    events = {},
    step = 0,
    persisted = 0,
    writes = {},
    sink = sink,
  }, THREAD)
end


-- Rebuilds a thread from a store record ({ thread, events }).
function M.from_record(record, sink, depth)
  local row = record.thread
  local t = setmetatable({
    id = row.id,
    agent = row.agent,
    parent = row.parent ~= json.null and row.parent or nil,
    depth = depth or 0,
    events = record.events,
    step = 0,
    persisted = #record.events,
    writes = {},
    sink = sink,
    bytes = record.bytes, -- what its stored events take (spool.run.store)
  }, THREAD)
  for _, ev in ipairs(t.events) do
    if ev.step > t.step then
      t.step = ev.step
    end
    if ev.v == json.null then
      ev.v = nil
    end
  end
  return t
end


-- Appends an event and returns it (not yet durable: see commit).
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
  return ev
end


-- Replaces an event not yet durable (a state conflict undoes what a call
-- did): the derived state, and what steps kept of their rendering, start
-- afresh.
function Thread:replace(i, type, data)
  assert(i > self.persisted, "a durable event is never replaced")
  local old = self.events[i]
  local ev = { seq = old.seq, step = old.step, type = type, data = data,
               at = core.time(), v = old.v }
  self.events[i] = ev
  self.derived = nil
  local run = task.runs[self]
  if run then
    run.render_memo = nil -- it rendered the event replaced
  end
  return ev
end


-- The new events whose data JSON cannot hold (agent code may append
-- anything), each replaced by one of the same type saying why, so the
-- step stores and the thread can still end. Whether any was.
local function mend(self)
  local mended = false
  for i = self.persisted + 1, #self.events do
    local ev = self.events[i]
    local ok, err = pcall(json.encode, ev.data)
    if not ok then
      local data = type(ev.data) == "table" and ev.data or {}
      self:replace(i, ev.type, {
        call_id = type(data.call_id) == "string" and data.call_id or nil,
        name = type(data.name) == "string" and data.name or nil,
        error = "this event's data could not be stored: "
          .. tostring(err):gsub("^spool.json.encode: ", ""),
      })
      mended = true
    end
  end
  return mended
end


-- Makes the new events and the step's state writes durable, in one
-- transaction. Returns true, or nil and "ECODE: why" (nothing was stored).
function Thread:commit()
  if self.persisted == #self.events and #self.writes == 0 then
    return true
  end
  local writes = self.writes
  local extra = M.before_commit and M.before_commit(self, self.persisted + 1,
    #self.events)
  if extra then
    writes = {}
    for i, w in ipairs(self.writes) do
      writes[i] = w
    end
    for _, w in ipairs(extra) do
      writes[#writes + 1] = w
    end
  end
  local versions, err, code = store.append(self, writes)
  if not versions and code == "EINVAL" and mend(self) then
    versions, err = store.append(self, writes) -- (the store encodes data)
  end
  if not versions then
    return nil, err
  end
  local first = self.persisted + 1
  self.persisted = #self.events
  local run = task.runs[self]
  if run and run.eval then -- it keeps what the run wrote (spool.cli.evaluate)
    local kept = run.eval.writes
    for _, w in ipairs(self.writes) do
      kept[#kept + 1] = { ns = w.ns, key = w.key, value = w.value }
    end
  end
  self.writes = {}
  if self.sink then
    for i = first, self.persisted do
      self.sink(self, self.events[i])
    end
  end
  if M.on_commit and first <= self.persisted then
    M.on_commit(self, first, self.persisted)
  end
  return true
end


-- Ends the thread with a result.
function Thread:finish(result)
  return self:append("done", { result = result })
end


-- Ends the thread as failed, with a message saying why.
function Thread:fail(message)
  return self:append("failed", { error = message })
end


-- running | waiting | done | failed | cancelled, from the latest event
-- that changes it (among the first `upto` events: pass self.persisted for
-- the status as stored).
function Thread:status(upto)
  if upto == nil or upto == #self.events then
    return thread_status(self)
  end
  for i = upto, 1, -1 do
    local ev = self.events[i]
    local s = TERMINAL[ev.type]
    if s then
      return s
    elseif ev.type == "human_request" then
      return "waiting"
    elseif ev.type == "human_response" then
      return "running"
    end
  end
  return "running"
end


-- Whether all the latest model call asked for is done: each of its tool
-- calls answered, or its reply without calls followed by what it led to.
-- (spool.run.recover reads the events for what is left only when not.)
Thread.settled = core.thread_settled


-- The human_request event the thread waits on, if it waits.
Thread.pending_request = core.thread_request


-- The human_response to a call, if one was given.
function Thread:response_to(call_id)
  for i = #self.events, 1, -1 do
    local ev = self.events[i]
    if ev.type == "human_response" and ev.data.call_id == call_id then
      return ev
    end
  end
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
    elseif ev.type == "cancelled" then
      return nil, "cancelled" .. (ev.data.reason and (": " .. ev.data.reason)
        or "")
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
      if step ~= nil and not step_had_error then
        return n
      end
      step, step_had_error = ev.step, false
      if ev.step == 0 then
        return n
      end
    end
    if ev.type == "human_response" then
      return n -- a person stepped in: count again from here
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


-- What the thread used, its sub-agents included: { steps, input_tokens,
-- output_tokens, cost_usd (of the calls whose model has a price) }.
function Thread:usage()
  local input, output, cost, child_steps = core.thread_usage(self)
  return { steps = self.step + child_steps, input_tokens = input,
           output_tokens = output, cost_usd = cost }
end


-- The agent_call event of a sub-agent still running (no agent_result).
function Thread:open_child_call()
  for i = #self.events, 1, -1 do
    local ev = self.events[i]
    if ev.type == "agent_result" then
      return nil
    elseif ev.type == "agent_call" then
      return ev
    end
  end
end


-- Events of a given type (or all), in order.
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
