-- spool.base.task: what each task (coroutine) of a run is working on — its
-- thread and the tool call its handler runs, for spool.state, spool.call
-- and spool.llm — and whether its model calls are the engine's own.
-- Private; it requires nothing, so the runner and the modules below it
-- share it without a cycle. Weak: a finished coroutine leaves nothing.

local M = {}

local working = setmetatable({}, { __mode = "k" })
local quiet = setmetatable({}, { __mode = "k" })


-- Runs f(...) in this task on `thread`, and returns what it returns; what
-- the task worked on before comes back after, however f ends.
function M.on(thread, f, ...)
  local co = coroutine.running()
  local outer = working[co]
  working[co] = { thread = thread }
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
