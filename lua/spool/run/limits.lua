-- spool.run.limits: what a run of agent code may spend (private).
--
-- The engine enforces them (engine/src/lua/sandbox.c): Lua instructions per
-- step and per run, counted by a hook; memory a run holds, counted by the
-- Lua heap; and the number of tool calls one model reply may make. The
-- project sets defaults in spool.lua and an agent may set its own:
--
--   limits = {
--     step_instructions = 500000000, -- one step, its tools included
--     run_instructions = 5000000000, -- one run (a resume), sub-agents too
--     memory_mb = 128,               -- what a run may hold
--     tool_calls = 64,               -- calls in one model reply
--   }
--
-- spool.lua alone may also set engine_memory_mb, the cap on the engine's
-- whole Lua state (default: half of the memory the process may use).
-- Loading an agent file runs under LOAD limits: a file whose top level
-- loops for ever or fills memory fails to load; the engine goes on.

local core = require "spool.core"
local version = require "spool.run.version"

local M = {}

M.DEFAULTS = {
  step_instructions = 500000000, run_instructions = 5000000000,
  memory_mb = 128, tool_calls = 64,
}

local LOAD = { step_instructions = 100000000, memory_mb = 64 }

local KEYS = { step_instructions = true, run_instructions = true,
               memory_mb = true, tool_calls = true }


-- Checks a limits table (`where` names it); returns it or nil, message.
function M.check(t, where, engine_wide)
  if t == nil then
    return {}
  end
  if type(t) ~= "table" then
    return nil, where .. " must be a table { step_instructions = n, "
      .. "run_instructions = n, memory_mb = n, tool_calls = n }"
  end
  for k, v in pairs(t) do
    if not KEYS[k] and not (engine_wide and k == "engine_memory_mb") then
      return nil, string.format("%s has an unknown field '%s' (%s)", where,
        tostring(k), "step_instructions, run_instructions, memory_mb, "
          .. "tool_calls" .. (engine_wide and ", engine_memory_mb" or ""))
    end
    if type(v) ~= "number" or v <= 0 or v ~= v or v == math.huge then
      return nil, string.format("%s.%s must be a positive number", where, k)
    end
  end
  return t
end


-- The limits of the project (spool.lua's over the defaults), and the cap
-- on the engine's Lua state it puts in force. Returns them or nil, err.
function M.init(file_limits)
  local t, err = M.check(file_limits, "spool.lua: limits", true)
  if not t then
    return nil, "EINVAL: " .. err
  end
  local out = {}
  for k, v in pairs(M.DEFAULTS) do
    out[k] = t[k] or v
  end
  local cap = t.engine_memory_mb and t.engine_memory_mb * 2 ^ 20
    or math.max(512 * 2 ^ 20, core.system_memory() / 2)
  core.set_memory_cap(cap)
  out.engine_memory_mb = cap / 2 ^ 20
  return out
end


-- An agent's limits: its own over the project's. Kept in the version's
-- record (spool.run.version), per project table.
function M.of(project, agent)
  local record = version.of[agent]
  local memo = record.limits
  if memo and memo.project == project then
    return memo.limits
  end
  -- An agent may ask for less than the project allows, never more (no
  -- agent can switch the instruction hook, and its time slices, off).
  local out = {}
  for k in pairs(KEYS) do
    local own = agent.limits and agent.limits[k]
    out[k] = own and math.min(own, project[k]) or project[k]
  end
  record.limits = { project = project, limits = out }
  return out
end


-- The memory account of an agent version (spool.run.loader opens it): what
-- the version keeps between its runs counts there.
function M.set_account(agent, account)
  version.of[agent].account = account
end


function M.account(agent)
  return version.of[agent].account
end


-- Closes the version's account; its definition is going (a finalizer:
-- a weak key stays readable until the collection after).
function M.close_account(agent)
  local record = version.of[agent]
  if record.account then
    core.account_close(record.account)
    record.account = nil
  end
end


-- A k-th of each of `limits`' budgets, for k tasks that share them.
function M.share(limits, k)
  if k <= 1 then
    return limits
  end
  local out = {}
  for key, v in pairs(limits) do
    out[key] = math.max(1, v // k)
  end
  return out
end


-- Puts a run's limits in force for the calling task; returns the handle
-- limits_pop takes, or nil and "ELIMIT: why" (no budget can be kept).
function M.push_run(limits, agent)
  return core.limits_push { step_instructions = limits.step_instructions,
    run_instructions = limits.run_instructions,
    memory = limits.memory_mb * 2 ^ 20, keep = agent and version.of[agent].account }
end


-- What an agent version keeps between its runs (module-level data): its
-- own account, which each run's leftovers pass to. Past the version's
-- memory budget, its runs are refused: a hoard cannot grow run by run
-- into the engine's cap. Returns nil or "ELIMIT: why".
function M.kept_over(limits, agent)
  local budget = limits.memory_mb * 2 ^ 20
  local record = version.of[agent]
  local account = record.account
  local kept = account and core.account_used(account) or 0
  if kept > budget and not record.collected then
    -- What its runs left may be garbage not yet collected: a full
    -- collection, once per version (its runs are refused from then on, so
    -- what it keeps cannot shrink), not at every refused run.
    record.collected = true
    collectgarbage()
    kept = core.account_used(account)
  end
  if kept > budget then
    return string.format("ELIMIT: agent %s keeps %d MiB between its runs "
      .. "(data its module holds), over its memory budget of %d MiB "
      .. "(limits.memory_mb); a new version (a reload) starts afresh",
      agent.name, kept // 2 ^ 20, limits.memory_mb)
  end
end


-- Runs f(...) under the limits of loading an agent; what it leaves
-- counts for account `keep` (the version's). Returns what pcall would, a
-- limit's error turned into its message.
function M.load(keep, f, ...)
  local handle, err = core.limits_push { step_instructions =
    LOAD.step_instructions, memory = LOAD.memory_mb * 2 ^ 20, keep = keep }
  if not handle then
    return false, err
  end
  local res = table.pack(pcall(f, ...))
  if not res[1] then
    local _, kind = core.limit_error(res[2])
    if kind == "memory" then
      res[2] = string.format("loading took more than %d MiB of memory",
        LOAD.memory_mb)
    elseif kind then
      res[2] = string.format("loading ran past %d Lua instructions (an "
        .. "endless loop at the top level?)", LOAD.step_instructions)
    end
  end
  core.limits_pop(handle)
  return table.unpack(res, 1, res.n)
end


return M
