-- spool.base.task: the record of each run, and what each task (coroutine)
-- of a run is working on — its thread, the tool call its handler runs and
-- the span it is in, for spool.state, spool.call, spool.llm and the
-- traces — and whether its model calls are the engine's own. Private; it requires nothing, so the runner and
-- the modules below it share it without a cycle. Weak: a finished
-- coroutine, or a thread no one holds, leaves nothing.

local M = {}

local working = setmetatable({}, { __mode = "k" })
local quiet = setmetatable({}, { __mode = "k" })
local runs = setmetatable({}, { __mode = "k" })

-- The record of each thread's run in this process: task.runs[thread], nil
-- for a thread no runner drives here (a table, not a function: the loop
-- reads it several times a step).
M.runs = runs

-- The run record of a thread no runner drives: empty, and it keeps
-- nothing written to it (runs[thread] or NO_RUN).
M.NO_RUN = setmetatable({}, { __newindex = function() end })


-- A run: one thread driven in this process, from its start or resume
-- until it ends, waits or halts. What only the run uses is its record's,
-- never the thread's (the thread is its event log and what derives from
-- it). spool.run.runner makes the record; the modules that use a field
-- find it by the thread they are given (M.runs[thread]):
--   agent        the agent version its steps run
--   budget_cap   what its parent left it of the budgets (sub-agents)
--   eval         the evaluation it runs in (spool.cli.evaluate): the
--                cassette, recorded tool outcomes, and the writes it made
--   conns        its model connections over plain HTTP (spool.llm)
--   render_memo  what its steps kept of their rendering (spool.run.window)
--   model_task   the task waiting on its model call, while one is out
--   tool_task    the task waiting on an MCP server's tool, while one is out
--   cancel       why it was asked to stop, once it was
--   stopped      a signal notified when the run stops here
function M.begin_run(thread, record)
  record.thread = thread
  runs[thread] = record
  return record
end


-- Ends `thread`'s run here; returns its record (nil if it had none).
function M.end_run(thread)
  local record = runs[thread]
  runs[thread] = nil
  return record
end


-- Runs f(...) in this task on `thread`, and returns what it returns; what
-- the task worked on before comes back after, however f ends.
function M.on(thread, f, ...)
  local co = coroutine.running()
  local outer = working[co]
  working[co] = { thread = thread, span = outer and outer.span }
  local res = table.pack(pcall(f, ...))
  working[co] = outer
  if not res[1] then
    error(res[2], 0)
  end
  return table.unpack(res, 2, res.n)
end


function M.thread()
  local w = working[coroutine.running()]
  return w and w.thread
end


-- The tool call the task's handler is running, if any.
function M.call()
  local w = working[coroutine.running()]
  return w and w.call_id
end


function M.set_call(call_id)
  local w = working[coroutine.running()]
  if w then
    w.call_id = call_id
  end
end


-- The span (spool.run.trace) the task works in: what its outbound
-- requests carry, and the parent of the spans it starts.
function M.span()
  local w = working[coroutine.running()]
  return w and w.span
end


-- Makes `span` the task's current span; returns the one it was.
function M.set_span(span)
  local w = working[coroutine.running()]
  if w then
    local outer = w.span
    w.span = span
    return outer
  end
end


-- Model calls the engine records itself (the loop's own step, a
-- compaction): spool.llm records the others — an agent's own code calling
-- spool.llm.chat — so every call a thread makes is in its events and its
-- budgets. quietly(f, ...) runs f with that recording off in this task.
function M.quietly(f, ...)
  local co = coroutine.running()
  local was = quiet[co]
  quiet[co] = true
  local res = table.pack(pcall(f, ...))
  quiet[co] = was
  if not res[1] then
    error(res[2], 0)
  end
  return table.unpack(res, 2, res.n)
end


function M.is_quiet()
  return quiet[coroutine.running()] == true
end


return M
