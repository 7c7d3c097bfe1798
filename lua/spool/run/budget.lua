-- spool.run.budget: what a thread may spend (private; agent.budget):
-- steps, tokens, cost and wall time, its sub-agents included, under the
-- cap its parent left it; what is left for a sub-agent; ending a thread at
-- a limit, with the agent's hook given the last word.

local core = require "spool.core"
local task = require "spool.base.task"

local M = {}

-- A thread's limits: the agent's budget, and the cap its parent passed
-- down (spool.run.runner), whichever is tighter; math.huge where none
-- (NO_LIMITS, all nil, when neither sets any).
local LIMITS = { "steps", "tokens", "cost_usd", "wall_ms" }

local NO_LIMITS = {}
local huge, min = math.huge, math.min

local function limits(thread, agent)
  local budget = agent and agent.budget or NO_LIMITS
  local cap = (task.runs[thread] or task.NO_RUN).budget_cap or NO_LIMITS
  if budget == NO_LIMITS and cap == NO_LIMITS then
    return NO_LIMITS -- (most threads: no budget, and no parent's cap)
  end
  return {
    steps = min(budget.steps or huge, cap.steps or huge),
    tokens = min(budget.tokens or huge, cap.tokens or huge),
    cost_usd = min(budget.cost_usd or huge, cap.cost_usd or huge),
    wall_ms = min(budget.wall_ms or huge, cap.wall_ms or huge),
  }
end


-- When the thread started, ms since the epoch.
local function started_at(thread)
  local first = thread.events[1]
  return first and first.at or core.time()
end


-- The thread's wall-clock deadline (ms since the epoch), or nil.
function M.deadline(thread, agent)
  local wall = limits(thread, agent).wall_ms
  if wall and wall ~= math.huge then
    return started_at(thread) + wall
  end
end


-- Over budget? Returns which limit and a message saying so, or nil.
local function over_budget(thread, agent)
  local lim = limits(thread, agent)
  if lim == NO_LIMITS then
    return nil
  end
  local u = thread:usage()
  local used = u.input_tokens + u.output_tokens
  if used >= lim.tokens then
    return "tokens", string.format("the token budget (%d) is spent: %d used",
      lim.tokens, used)
  end
  if u.steps >= lim.steps then
    return "steps", string.format("the step budget (%d) is spent", lim.steps)
  end
  if u.cost_usd >= lim.cost_usd then
    return "cost_usd", string.format("the cost budget ($%.4f) is spent: "
      .. "$%.4f used", lim.cost_usd, u.cost_usd)
  end
  local elapsed = core.time() - started_at(thread)
  if elapsed >= lim.wall_ms then
    return "wall_ms", string.format("the time budget (%d ms) is spent: %d ms "
      .. "since the thread started", lim.wall_ms, elapsed)
  end
end


-- What is left of a thread's budget, for a sub-agent it starts.
function M.remaining_budget(thread, agent)
  local lim = limits(thread, agent)
  if lim == NO_LIMITS then
    return nil
  end
  local u = thread:usage()
  local used = { tokens = u.input_tokens + u.output_tokens, steps = u.steps,
                 cost_usd = u.cost_usd,
                 wall_ms = core.time() - started_at(thread) }
  local out = {}
  for _, k in ipairs(LIMITS) do
    if lim[k] ~= math.huge then
      out[k] = math.max(0, lim[k] - used[k])
    end
  end
  return next(out) and out or nil
end


-- Ends a thread at a limit: the agent's hook may give a final answer.
local function at_limit(thread, hook, message, ...)
  local answer
  if hook then
    answer = hook(thread, ...)
  end
  if answer ~= nil then
    thread:finish(answer)
  else
    thread:fail(message)
  end
end


M.over_budget = over_budget
M.at_limit = at_limit


return M
