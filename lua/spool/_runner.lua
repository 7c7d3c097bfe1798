-- spool._runner: threads in flight (private). Starting a thread appends its
-- input event and spawns a task that drives it with spool.loop; a sub-agent
-- call runs a child thread inside the parent's task and returns its outcome.
--
-- Threads that are done stay findable (status, result) in a bounded list of
-- recent threads, so a long-lived engine's memory does not grow per run.

local core = require "spool.core"
local json = require "spool.json"
local thread_mod = require "spool.thread"
local loop = require "spool.loop"
local loader = require "spool._loader"
local format = require "spool.format"

local M = {}

local live = {}          -- id -> thread, while running
local recent = {}        -- id -> thread, finished
local recent_order = {}  -- ids of finished threads, oldest first
M.keep_recent = 1000


-- Tells the host (CLI, embedding application) of each event.
local function sink(thread, ev)
  if not core.listening() then
    return
  end
  local ok, line = pcall(json.encode, {
    thread = thread.id, agent = thread.agent, parent = thread.parent,
    seq = ev.seq, step = ev.step, type = ev.type, data = ev.data, at = ev.at,
    v = ev.v,
  })
  if not ok then
    line = json.encode({ thread = thread.id, seq = ev.seq, type = ev.type,
                         error = "event data is not JSON: " .. line })
  end
  core.emit(thread.id, thread.agent, ev.type, ev.seq, thread.depth, line,
    format.event(thread, ev))
end


local function retire(thread)
  live[thread.id] = nil
  recent[thread.id] = thread
  recent_order[#recent_order + 1] = thread.id
  while #recent_order > M.keep_recent do
    recent[table.remove(recent_order, 1)] = nil
  end
end


-- Drives a thread to its end, turning any error raised by agent code
-- outside a tool handler into the thread's failure.
local function drive(thread, agent)
  local ok, err = xpcall(loop.run, debug.traceback, thread, agent)
  if not ok then
    local msg = tostring(err):match("^[^\n]*")
    core.log("debug", "thread " .. thread.id .. ": " .. tostring(err))
    thread:fail("agent error: " .. msg)
  end
end


local function run_task(thread, agent)
  drive(thread, agent)
  retire(thread)
end


-- Starts a thread of `agent` (a loaded agent) on `input`; returns it.
function M.start(agent, input)
  local thread = thread_mod.new(agent.name, agent.version, nil, sink)
  thread:append("input", { input = input })
  live[thread.id] = thread
  core.spawn(run_task, thread, agent)
  return thread
end


-- Runs agent `name` on `input` as a child of `parent`, inside the calling
-- task; returns the child's result, or nil and its error.
function M.call(parent, name, input)
  local agent, err = loader.load(name)
  if not agent then
    parent:append("agent_result", { agent = name, status = "failed",
                                    error = err })
    return nil, err
  end
  local child = thread_mod.new(agent.name, agent.version, parent, sink)
  parent:append("agent_call", { agent = name, input = input,
                                thread = child.id })
  child:append("input", { input = input })
  live[child.id] = child
  drive(child, agent)
  retire(child)
  local result, cerr = child:outcome()
  parent:append("agent_result", { agent = name, thread = child.id,
                                  status = child:status(), result = result,
                                  error = cerr })
  return result, cerr
end


-- A thread this engine knows, running or recently finished.
function M.find(id)
  return live[id] or recent[id]
end


-- The number of threads in flight.
function M.running()
  local n = 0
  for _ in pairs(live) do
    n = n + 1
  end
  return n
end


return M
