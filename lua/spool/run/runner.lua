-- spool.run.runner: threads in flight in this engine (private).
--
-- Starting a thread stores its input event, then a task drives it with
-- spool.loop until it ends or waits; a waiting thread holds no task and no
-- memory here, only its events in the store. Resuming loads the events,
-- appends the human's response, and drives the thread again, in any
-- process. Each run holds the thread's lease in the store, so two
-- processes never run one thread at once.
--
-- Sub-agents run as child threads inside their parent's task. When a child
-- waits for a human, the parent records the same request (with `via`
-- naming the child) and waits too: the answer is given to the parent and
-- passed down. A parent's step that called spool.call again on resume
-- continues the child it already started rather than starting another.
--
-- Hot reload: each step runs the agent's current version (spool.run.loader),
-- unless the agent pins threads to the version they started on. Before a
-- version's first event is stored, its files are, so any later process can
-- rebuild it.

local core = require "spool.core"
local json = require "spool.json"
local thread_mod = require "spool.run.thread"
local loop = require "spool.loop"
local durable = require "spool.run.durable"
local budget = require "spool.run.budget"
local loader = require "spool.run.loader"
local format = require "spool.run.format"
local store = require "spool.run.store"
local task = require "spool.base.task"
local trace = require "spool.run.trace"
local human = require "spool.human"
local config = require "spool.base.config"
local limits = require "spool.run.limits"
local prefetch = require "spool.run.prefetch"
local resolve_mcp = require "spool.mcp.resolve"

local M = {}

local live = {}          -- id -> thread, while a task of this engine runs it
local recent = {}        -- id -> thread, halted here lately (not all stored)
local recent_order = {}
local recent_bytes = 0   -- what their stored events take
-- The halted threads kept: a count, and bytes (a few threads with large
-- inputs must not hold the process's memory).
M.keep_recent = 1000
M.keep_recent_bytes = 64 * 2 ^ 20

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

M.sink = sink


-- Makes `thread` live here: its run's record (spool.base.task) holds the
-- agent version its steps run, the evaluation it is part of, and what its
-- parent left it of the budgets.
local function begin(thread, agent, eval, budget_cap)
  live[thread.id] = thread
  local run = task.runs[thread] or task.begin_run(thread, {})
  run.agent, run.eval, run.budget_cap = agent, eval, budget_cap
  return run
end


-- A thread that stops running here ends its run: what only the run used
-- goes (its model connections; what its steps kept of their rendering, so
-- a later run renders afresh), and whoever waits for it (M.settle) goes on.
local function let_go(thread)
  local run = task.end_run(thread)
  if run then
    if run.conns then
      run.conns:close()
    end
    if run.stopped then
      run.stopped:notify()
    end
  end
end


local function retire(thread)
  if live[thread.id] ~= thread then
    return
  end
  live[thread.id] = nil
  let_go(thread)
  -- A thread whose events are all stored is read from the store from now
  -- on; kept here is only one that halted (its last events exist only in
  -- memory). What a run made counts for its agent's version once the run
  -- ends (spool.run.limits.kept_over): the engine must not keep it.
  if not thread.halted and thread.persisted == #thread.events then
    return
  end
  local before = recent[thread.id] -- an earlier run of the same thread
  if before then
    recent_bytes = recent_bytes - (before.bytes or 0)
    for i, id in ipairs(recent_order) do
      if id == thread.id then
        table.remove(recent_order, i)
        break
      end
    end
  end
  recent[thread.id] = thread
  recent_order[#recent_order + 1] = thread.id
  recent_bytes = recent_bytes + (thread.bytes or 0)
  while #recent_order > M.keep_recent
      or (recent_bytes > M.keep_recent_bytes and #recent_order > 0) do
    local gone = table.remove(recent_order, 1)
    recent_bytes = recent_bytes - (recent[gone].bytes or 0)
    recent[gone] = nil
  end
end


-- The recent threads kept in memory: how many, and their stored bytes.
function M.recent_size()
  return #recent_order, recent_bytes
end


-- Makes `agent` the version a thread's next events are recorded with.
local function use_version(thread, agent)
  local ok, err = loader.store_version(agent)
  if not ok then
    durable.store_failed(err)
  end
  task.runs[thread].agent = agent
  thread.version = agent.version
end


-- How many interrupted threads recovery reads from the store at a time.
M.recover_page = 500

-- M.resume's mark for a thread whose lease the caller has just taken.
local CLAIMED = {}
-- How long a thread taken over but not resumable waits to be tried again.
local PARK_MS = 60 * 1000

-- Set while the process shuts down: top-level runs stop at their next step
-- boundary (their last step is stored), for the next start to recover.
M.draining = false
-- The most top-level runs a server takes at once (spool serve sets it).
M.max_runs = math.huge
local DRAINED = setmetatable({}, { __tostring = function() return "drained" end })


-- The version each step runs: the current one, unless pinned. (Also where
-- a draining process stops its runs: between steps.)
local function next_version(thread, agent)
  if M.draining and not thread.parent then
    error(DRAINED, 0)
  end
  if agent.pin_version then
    return agent
  end
  local cur = loader.current(thread.agent)
  if cur == nil or cur == agent then
    return agent -- unchanged, or deleted: running threads finish on theirs
  end
  use_version(thread, cur)
  resolve_mcp(cur)
  return cur
end


-- A thread's run: what its agent prefetches, once, then the loop.
local function run(thread, agent)
  resolve_mcp(agent) -- (if its servers cannot answer, the step will say)
  if agent.prefetch and thread.step == 0 then
    prefetch.run(thread, agent, M.call)
  end
  return loop.run(thread, agent, next_version)
end


-- A run that stopped on an error: a store failure halts it (the thread
-- stays at its last durable step); any other fails the thread.
local function fail_run(thread, err)
  if err == durable.PAUSED then
    -- Only a sub-agent that waits for a person pauses a run this way.
    err = "the run raised spool.durable.PAUSED but waits for nothing"
  end
  if type(err) == "table" and err.store_error then
    thread.halted = err.store_error
    core.log("error", "thread " .. thread.id .. " stopped: the store failed: "
      .. err.store_error)
    return
  end
  local limit = core.limit_error(err)
  local msg = limit and limit:gsub("^ELIMIT: ", "")
    or ("agent error: " .. tostring(err):match("^[^\n]*"))
  core.log("debug", "thread " .. thread.id .. ": " .. tostring(err))
  thread:fail(msg)
  local cok, cerr = thread:commit()
  if not cok then
    thread.halted = cerr
  end
end


local function traced_run(span, thread, agent)
  task.set_span(span)
  return run(thread, agent)
end


-- Drives a thread until it ends or waits, in the span of its run. Errors
-- in agent code outside a tool handler fail the thread; a store failure
-- halts the run (the thread stays at its last durable step, for `spool
-- resume` to continue).
local function drive(thread, agent)
  task.runs[thread].agent = agent
  -- Traces never stop a run: a failure of theirs is logged.
  local traced, span, first_step = pcall(trace.run_begin, thread, agent)
  if not traced then
    core.log("error", "traces: thread " .. thread.id .. ": " .. tostring(span))
    span = nil
  end
  local ok, err = task.on(thread, xpcall, traced_run, function(e)
    if type(e) == "table" or core.is_limit(e) then
      return e -- no traceback: a memory limit leaves nothing to make one
    end
    return debug.traceback(e, 2)
  end, span, thread, agent)
  local stopped = ok or (err == durable.PAUSED
    and thread:status() == "waiting") or err == DRAINED
  if not stopped then
    fail_run(thread, err)
  end
  local ended, why = pcall(trace.run_end, span, thread, agent, first_step)
  if not ended then
    core.log("error", "traces: thread " .. thread.id .. ": " .. tostring(why))
  end
end


local function run_task(thread, agent)
  local run_limits = limits.of(config.get().limits, agent)
  local err = limits.kept_over(run_limits, agent)
  local handle
  if not err then
    handle, err = limits.push_run(run_limits, agent)
  end
  if handle then
    drive(thread, agent)
    core.limits_pop(handle)
  else
    thread:fail(err:gsub("^ELIMIT: ", ""))
    local ok, cerr = thread:commit()
    if not ok then
      thread.halted = cerr
    end
  end
  store.release(thread.id)
  retire(thread)
end


-- Stores a new thread's first events, with its claim (the first commit
-- takes it) and its agent's version: true, or nil and why not.
local function store_start(thread, agent)
  local ok, err = loader.store_version(agent)
  if ok then
    ok, err = thread:commit()
  end
  return ok, err
end


-- Starts a thread of `agent` on `input` (with the id given, or a new one)
-- and returns it at once; a task stores the input and drives it. `writes`
-- (state writes, as spool.state makes them) commit with the input, or
-- the thread is not started at all (.halted says why). `eval`: the
-- evaluation the run is part of (spool.cli.evaluate), if any.
-- `traceparent`: the W3C trace context of the caller, whose trace the
-- thread's spans join (spool.run.trace); kept with the input.
function M.start(agent, input, id, writes, eval, traceparent)
  local thread = thread_mod.new(agent.name, agent.version, nil, sink, id)
  thread:append("input", { input = input, pinned = agent.pin_version or nil,
                           trace = trace.canonical(traceparent) })
  thread.writes = writes or thread.writes
  begin(thread, agent, eval)
  core.spawn(function()
    -- What cannot be stored (an input JSON cannot hold) raises: it must
    -- still end here, or its caller would wait on it for good.
    local done, ok, err = pcall(store_start, thread, agent)
    if not done then
      ok, err = nil, "EINVAL: " .. tostring(ok)
    end
    if not ok then
      thread.halted = err
      store.release(thread.id)
      -- A write that lost a compare-and-set, or an id another process
      -- took first (a schedule's slot), is its caller's answer.
      core.log(err:match("^ECONFLICT") and "debug" or "error",
        "thread " .. thread.id .. " cannot start: " .. err)
      retire(thread)
      return
    end
    run_task(thread, agent)
  end)
  return thread
end


-- Loads a thread from the store (must run in a task).
function M.load(id, depth)
  local record, err = store.load(id)
  if not record then
    return nil, err
  end
  return thread_mod.from_record(record, sink, depth)
end


-- The version of its agent a stored thread continues with: the one it
-- started on if pinned; else the current one, or if the agent was deleted,
-- the one it last ran. Must run in a task.
local function agent_of(thread)
  local first, last = thread.events[1], thread.events[#thread.events]
  local agent, err
  if first and first.data.pinned and first.v then
    agent, err = loader.version(thread.agent, first.v)
  else
    agent, err = loader.load(thread.agent)
    if not agent and err:match("^ENOTFOUND") and last and last.v then
      agent = loader.version(thread.agent, last.v)
    end
  end
  if not agent then
    return nil, err
  end
  local ok, serr = loader.store_version(agent)
  if not ok then
    return nil, serr
  end
  thread.version = agent.version
  return agent
end


-- The chain of waiting threads from `thread` down to the one that asked
-- (following `via`), loaded and claimed.
local function waiting_chain(thread)
  local chain = { thread }
  local t = thread
  while true do
    local req = t:pending_request()
    if not req or not req.data.via then
      return chain
    end
    local child, err = M.load(req.data.via, t.depth + 1)
    if not child then
      return nil, err
    end
    local ok, cerr = store.claim(child.id)
    if not ok then
      return nil, cerr
    end
    chain[#chain + 1] = child
    t = child
  end
end


-- Gives a human's response to a waiting thread (and, through `via`, to the
-- sub-agent that asked). `response` = { answer = text } | { approve = true,
-- args = {...} } | { reject = true, reason = text }, with optional by and
-- channel. Must run in a task; the thread must be claimed.
local function answer(thread, response)
  local chain, err = waiting_chain(thread)
  if not chain then
    return nil, err
  end
  local leaf = chain[#chain]
  local req = leaf:pending_request()
  if not req then
    return nil, "ESTATE: thread " .. thread.id .. " is not waiting"
  end
  local agent = agent_of(leaf)
  if agent then
    resolve_mcp(agent) -- the tool the call names may be a server's
  end
  local tool = agent and agent.tools[req.data.name]
  local data, rerr = human.response_for(req, response, tool)
  if not data then
    return nil, rerr
  end
  for _, t in ipairs(chain) do
    local treq = t:pending_request()
    local d = {}
    for k, v in pairs(data) do
      d[k] = v
    end
    d.call_id, d.via = treq.data.call_id, treq.data.via
    t:append("human_response", d)
    local ok, cerr = t:commit()
    if not ok then
      return nil, cerr
    end
  end
  return true
end


-- Resumes a stored thread: with a response if it waits for one, or just
-- continues it if a crash interrupted it. Returns the thread, driven in a
-- task of its own (in evaluation `eval`, if given). `claimed` (CLAIMED):
-- this process holds its lease already (take_over). Must run in a task.
function M.resume(id, response, eval, claimed)
  if live[id] then
    return nil, "ECONFLICT: thread " .. id .. " is running in this process"
  end
  -- Claim first, then load: what we load cannot change under us.
  if claimed ~= CLAIMED then
    local ok, cerr = store.claim(id)
    if not ok then
      return nil, cerr
    end
  end
  local function give_up(err)
    if claimed ~= CLAIMED then -- (else the caller decides)
      store.release(id)
    end
    return nil, err
  end
  local thread, err = M.load(id)
  if not thread then
    return give_up(err)
  end
  if thread.parent then
    return give_up(string.format("EINVAL: thread %s is a sub-agent of %s: "
      .. "resume the parent", id, thread.parent))
  end
  local agent
  agent, err = agent_of(thread)
  if not agent then
    return give_up(err)
  end
  local status = thread:status()
  if status == "done" or status == "failed" or status == "cancelled" then
    return give_up("ESTATE: thread " .. id .. " has ended (" .. status .. ")")
  end
  if status == "waiting" then
    if response == nil or next(response) == nil then
      local req = thread:pending_request()
      return give_up(string.format("EINVAL: thread %s waits for %s: give a "
        .. "response", id, human.describe(req.data)))
    end
    local aok, aerr = answer(thread, response)
    if not aok then
      return give_up(aerr)
    end
  elseif response and next(response) ~= nil then
    return give_up("ESTATE: thread " .. id .. " is not waiting for a "
      .. "response")
  end
  begin(thread, agent, eval)
  core.spawn(run_task, thread, agent)
  return thread
end


-- Runs agent `name` on `input` as a child of `parent`, inside the calling
-- task; returns the child's result, or nil and its error. Continues the
-- child this step started before, if the step runs again after a pause.
function M.call(parent, name, input)
  local agent, err = loader.load(name)
  if not agent then
    parent:append("agent_result", { agent = name, status = "failed",
                                    error = err })
    return nil, err
  end
  local open = parent:open_child_call()
  local outer = task.runs[parent] or {}
  local child, cap
  if open and open.data.agent == name then
    child = live[open.data.thread]
    if child then
      agent = task.runs[child].agent
    else
      child, err = M.load(open.data.thread, parent.depth + 1)
      if not child then
        durable.store_failed(err)
      end
      -- (Claimed already if an answer came down the chain to it.)
      local ok, cerr = store.holds(child.id) or store.claim(child.id)
      if not ok then
        durable.store_failed(cerr)
      end
      agent = agent_of(child) or agent
    end
    cap = open.data.budget
  else
    child = thread_mod.new(agent.name, agent.version, parent, sink)
    cap = budget.remaining_budget(parent, outer.agent)
    parent:append("agent_call", { agent = name, input = input,
                                  thread = child.id, budget = cap })
    durable.commit(parent)
    child:append("input", { input = input, pinned = agent.pin_version or nil })
    local ok, cerr = store_start(child, agent)
    if not ok then
      durable.store_failed(cerr)
    end
  end
  begin(child, agent, outer.eval, cap)
  -- The child's steps have budgets of their own; the parent's step goes
  -- on where it was when the child returns.
  local used, step_limit = core.step_begin()
  drive(child, agent)
  core.step_restore(used, step_limit)
  if child.halted then
    retire(child)
    durable.store_failed(child.halted)
  end
  local status = child:status()
  if status == "waiting" then
    -- Surface the child's request on the parent and pause the parent.
    local req = child:pending_request().data
    parent:append("human_request", {
      kind = req.kind, name = req.name, args = req.args,
      question = req.question, deadline = req.deadline, via = child.id,
      call_id = task.call(), span = trace.run_span_id(parent),
    })
    durable.commit(parent)
    live[child.id] = nil
    let_go(child)
    -- Paused, the child is nobody's: whichever worker gets the answer
    -- claims it (and the heartbeat stops renewing it).
    store.release(child.id)
    error(durable.PAUSED, 0)
  end
  store.release(child.id)
  retire(child)
  local result, cerr = child:outcome()
  parent:append("agent_result", { agent = name, thread = child.id,
                                  status = status, result = result,
                                  error = cerr, usage = child:usage() })
  return result, cerr
end


-- Gives a person's response to thread `id` (see M.resume), after firing
-- the deadlines that are due. A response that comes after its request's
-- deadline is refused, saying when the deadline passed: the deadline has
-- denied the call (or given the question up) and the thread goes on
-- without it. With `wait`, that run ends here before this returns, so a
-- process that exits next leaves nothing running. Must run in a task.
function M.respond(id, response, wait)
  local late
  if response and next(response) ~= nil and not live[id] then
    local t = M.load(id)
    local req = t and t:status() == "waiting" and t:pending_request()
    if req and req.data.deadline and req.data.deadline <= core.time() then
      late = req.data
    end
  end
  M.fire_due()
  if not late then
    return M.resume(id, response)
  end
  if wait then
    M.settle(id)
  end
  return nil, string.format("ESTATE: thread %s waited for %s until %s UTC: "
    .. "that deadline has passed, so %s", id, human.describe(late),
    os.date("!%Y-%m-%d %H:%M:%S", late.deadline // 1000),
    late.kind == "approval" and "the call was denied"
      or "it went on without an answer")
end


-- A thread that could not be resumed is logged once, not at every tick
-- that finds it due (or its lease lapsed) again: the ids each kind of
-- report skipped last time.
local skipped_before = { due = {}, lapsed = {} }

local function skipped(report, id, err)
  report.skipped[#report.skipped + 1] = { id = id, error = err }
  report.now_skipped[id] = true
  if not skipped_before[report.kind][id] then
    core.log("error", string.format("recover: thread %s cannot be resumed, "
      .. "and is left as it is: %s", id, tostring(err)))
  end
end

local function new_report(kind)
  return { resumed = json.array(), expired = json.array(),
           skipped = json.array(), now_skipped = {}, kind = kind or "due" }
end

local function finish(report)
  skipped_before[report.kind] = report.now_skipped
  report.now_skipped, report.kind = nil, nil
  return report
end

local function fire_due(report)
  for _, id in ipairs(store.due() or {}) do
    local t = M.load(id)
    if t and not t.parent and not live[id] then
      local th, err = M.resume(id, { timeout = true, by = "deadline" })
      if th then
        report.expired[#report.expired + 1] = id
      else
        skipped(report, id, err)
      end
    end
  end
  return report
end


-- Denies the approvals (and gives up the questions) whose deadline has
-- passed, resuming those threads here. Any process that runs threads
-- calls this, so a deadline needs no process of its own to fire it.
-- Returns { expired = {id...}, skipped = {{id, error}...}, resumed = {} }.
function M.fire_due()
  return finish(fire_due(new_report()))
end


-- Resumes every top-level thread left running by a process that stopped,
-- and fires the deadlines that are due. Returns what it did: the threads
-- resumed, expired, and skipped (each with why; also logged).
function M.recover()
  local report = fire_due(new_report())
  -- Every interrupted thread, a page at a time: a store may hold more than
  -- any one page, and each must go on (the page ends where the next
  -- begins, by creation time and id, however the threads change status).
  local filter = { status = "running", limit = M.recover_page }
  repeat
    local rows = store.list(filter) or {}
    for _, row in ipairs(rows) do
      if row.parent == json.null and not live[row.id] then
        local th, err = M.resume(row.id)
        if th then
          report.resumed[#report.resumed + 1] = row.id
        else
          skipped(report, row.id, err)
        end
      end
    end
    local last = rows[#rows]
    filter.before, filter.before_id = last and last.created_at, last and last.id
  until #rows < M.recover_page
  return finish(report)
end


-- Continues threads whose process stopped (their lease lapsed, or it was
-- given back at a shutdown), as many as this process has room for: any
-- process that serves calls this every tick, so such a thread waits a
-- lease at most, not for its own process to come back. Returns how many
-- it took over.
function M.take_over()
  local room = math.min(M.max_runs - M.running(), M.recover_page)
  if M.draining or room <= 0 then
    return 0
  end
  local rows, err = store.take_over(room)
  if not rows then
    core.log("error", "take over: " .. tostring(err))
    return 0
  end
  local report = new_report("lapsed")
  for _, row in ipairs(rows) do
    local th, rerr = M.resume(row.id, nil, nil, CLAIMED)
    if th then
      core.log("info", "thread " .. row.id .. ": taken over (its lease "
        .. "lapsed)")
    else
      -- Parked a minute: a thread that cannot go on (its agent deleted, a
      -- corrupt row) must not be taken again every second by every worker,
      -- ahead of the ones that can.
      store.release(row.id, PARK_MS)
      skipped(report, row.id, rerr)
    end
  end
  finish(report)
  return #rows
end


-- Is live thread t a sub-agent (at any depth) of thread `id`?
local function descends(t, id)
  local p = t.parent
  for _ = 1, 64 do
    if p == nil then
      return false
    elseif p == id then
      return true
    end
    p = live[p] and live[p].parent
  end
  return false
end


-- Cancels asked of another worker wait in the store, under this name, for
-- a day at most (the thread has ended by then, or its run saw them).
local CANCEL_NS, CANCEL_TTL_MS = "spool.cancel", 24 * 3600 * 1000
-- M.cancel's mark: only if no other worker runs the thread.
local HERE_ONLY = {}

-- Carries out the cancels asked of other workers: a run of this process
-- stops; a thread nobody runs (it paused, or its worker stopped) is
-- cancelled here; one another worker runs is left to it. Any process that
-- serves calls this every tick (and on PostgreSQL when told).
function M.cancel_requested()
  local after, page = "", 200
  repeat
    local items = store.state_list(CANCEL_NS, after, page) or {}
    for _, item in ipairs(items) do
      after = item.key
      local reason = type(item.value) == "table" and item.value.reason
      local ok, _, code = true, nil, nil
      if not live[item.key] then
        ok, _, code = M.cancel(item.key, reason, HERE_ONLY)
      else
        M.cancel(item.key, reason)
      end
      if ok or code ~= "ECONFLICT" then -- done, ended or gone: forget it
        store.write_state { { ns = CANCEL_NS, key = item.key } }
      end
    end
  until #items < page
end


-- Cancels a stored thread (and its sub-agents that have not ended):
-- returns true, with "elsewhere" when another worker runs it (the request
-- reaches it through the store; with HERE_ONLY, nil and ECONFLICT).
function M.cancel(id, reason, here_only)
  local t = live[id]
  if t then
    -- It and the sub-agents running for it stop at their next step (a
    -- model call in flight is interrupted now).
    for _, x in pairs(live) do
      local run = (x == t or descends(x, id)) and task.runs[x]
      if run then
        run.cancel = reason or "cancelled"
        if run.model_task then
          core.interrupt(run.model_task, "ECANCELED: the thread was cancelled")
        end
        if run.tool_task then -- an MCP call: its server is told
          core.interrupt(run.tool_task, "ECANCELED: the thread was cancelled")
        end
      end
    end
    return true
  end
  local thread, err = M.load(id)
  if not thread then
    return nil, err
  end
  local status = thread:status()
  if status == "done" or status == "failed" or status == "cancelled" then
    return nil, "ESTATE: thread " .. id .. " has ended (" .. status .. ")"
  end
  local ok, cerr, code = store.claim(id)
  if not ok and code == "ECONFLICT" and here_only == HERE_ONLY then
    return nil, cerr, code
  elseif not ok and code == "ECONFLICT" then
    -- Another worker runs it: the request goes through the store, and
    -- that worker (or whichever takes the thread over) stops the run
    -- within a tick (M.cancel_requested).
    local wok, werr = store.write_state { { ns = CANCEL_NS, key = id,
      value = { reason = reason or "cancelled" },
      expires_at = core.time() + CANCEL_TTL_MS } }
    if not wok then
      return nil, werr
    end
    store.notify(id) -- (the tick finds it anyway: this is only sooner)
    return true, "elsewhere"
  elseif not ok then
    return nil, cerr
  end
  local children = store.children(id) or {}
  for _, row in ipairs(children) do
    if row.status == "running" or row.status == "waiting" then
      M.cancel(row.id, reason)
    end
  end
  thread:append("cancelled", { reason = reason or "cancelled" })
  ok, cerr = thread:commit()
  store.release(id)
  if not ok then
    return nil, cerr
  end
  return true
end


-- A new thread made of the first `at` events of another.
-- Why a fork may not keep the first `at` events, if it may not: it would
-- cut inside a call. A call with an intent and no result would be taken
-- for one a crash interrupted; one a person approved would run again, on
-- that approval, in a thread nobody approved; a sub-agent's call has a
-- child the fork does not have. A call that waits for a person is a fine
-- place: the fork asks again.
local function cut_inside_call(events, at)
  local open, approved, waits, child = {}, {}, {}, nil
  for i = 1, at do
    local ev = events[i]
    local d, call = ev.data or {}, (ev.data or {}).call_id
    if ev.type == "intent" then
      open[call] = ev
    elseif (ev.type == "tool_result" or ev.type == "error") and call then
      open[call], approved[call], waits[call] = nil, nil, nil
    elseif ev.type == "human_request" then
      waits[call or "?"] = ev
    elseif ev.type == "human_response" then
      waits[call or "?"] = nil
      approved[call or "?"] = d.approved == true or nil
    elseif ev.type == "agent_call" then
      child = ev
    elseif ev.type == "agent_result" then
      child = nil
    end
  end
  if child then
    return string.format("the call of sub-agent %s (event %d) has no "
      .. "result yet", tostring(child.data.agent), child.seq)
  end
  for _, req in pairs(waits) do
    if req.data.via then
      return string.format("event %d waits for a person through a "
        .. "sub-agent", req.seq)
    end
  end
  for call, intent in pairs(open) do
    if approved[call] then
      return string.format("the call of %s (event %d) was approved and has "
        .. "not run: a fork would run it on that approval",
        tostring(intent.data.name), intent.seq)
    elseif not waits[call] then
      return string.format("the call of %s (event %d) has started and has "
        .. "no result", tostring(intent.data.name), intent.seq)
    end
  end
end


function M.fork(id, at)
  local src, err = M.load(id)
  if not src then
    return nil, err
  end
  if math.type(at) ~= "integer" or at < 1 or at > #src.events then
    return nil, string.format("EINVAL: thread %s has events 1 to %d: a "
      .. "fork keeps a number of them in that range, not %s", id,
      #src.events, tostring(at))
  end
  local inside = cut_inside_call(src.events, at)
  if inside then
    return nil, string.format("EINVAL: thread %s cannot be forked at event "
      .. "%d: %s. Fork before the call, or after its result.", id, at,
      inside)
  end
  local agent = loader.load(src.agent)
  local t = thread_mod.new(src.agent, agent and agent.version, nil, nil)
  for i = 1, at do
    local ev = src.events[i]
    t.events[i] = { seq = i, step = ev.step, type = ev.type, data = ev.data,
                    at = ev.at, v = ev.v }
    if ev.step > t.step then
      t.step = ev.step
    end
  end
  local ok, cerr = store.claim(t.id)
  if ok then
    ok, cerr = t:commit()
  end
  store.release(t.id)
  if not ok then
    return nil, cerr
  end
  return t
end


-- A thread this engine knows in memory: running here, or finished lately.
function M.find(id)
  return live[id] or recent[id]
end


-- Thread `id` as this process knows it (a run here, or a halted one it
-- keeps), else as stored. Must run in a task.
function M.get(id)
  local t = live[id] or recent[id]
  if t then
    return t
  end
  return M.load(id)
end


-- Is a task of this engine still running the thread?
function M.is_live(id)
  return live[id] ~= nil
end



-- Whether a new thread may start here now: nil, or why not (a code and a
-- message, for a 503).
function M.admission()
  if M.draining then
    return "draining", "the server is shutting down"
  elseif M.running() >= M.max_runs then
    return "busy", string.format("%d runs are in flight, the most this "
      .. "server takes; retry shortly", M.running())
  end
end


-- Waits until thread `id` has no run in this process: it ended, waits for
-- something, or halted. Returns false if it still runs after timeout_ms
-- (default: no limit). Must run in a task.
function M.settle(id, timeout_ms)
  local deadline = timeout_ms and core.now() + timeout_ms or math.huge
  local thread = live[id]
  while thread do
    local left = deadline - core.now()
    if left <= 0 then
      return false
    end
    local run = task.runs[thread]
    run.stopped = run.stopped or core.signal()
    run.stopped:wait(math.min(left, 60000))
    thread = live[id]
  end
  return true
end


-- The number of threads in flight here.
function M.running()
  local n = 0
  for _ in pairs(live) do
    n = n + 1
  end
  return n
end


return M
