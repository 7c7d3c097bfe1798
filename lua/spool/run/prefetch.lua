-- spool.run.prefetch: what an agent declares it will almost surely need,
-- fetched before its first model call (private; spool.run.runner runs it).
--
--   prefetch = {
--     order = function(input, ctx) return spool.http.get(...) end,
--     profile = function(input) return spool.state.get("users", input.user) end,
--     history = { agent = "lookup", input = function(input) return ... end },
--   }
--
-- Functions run concurrently, each as a task of its own, so their waits
-- overlap; sub-agents ({ agent = name }) run after them, one at a time, as
-- children of the thread. Each result (or error) becomes a `prefetch`
-- event { name, result | error } that the context renders like a tool
-- result: the model starts with the data instead of asking for it, a round
-- trip saved per fetch. A thread that already has its prefetch events (a
-- resumed one) does not fetch again.

local core = require "spool.core"
local json = require "spool.json"
local config = require "spool.base.config"
local limits = require "spool.run.limits"

local M = {}


local function outcome(ok, res, err)
  if not ok then
    local limit = core.limit_error(res)
    return { error = limit and limit:gsub("^ELIMIT: ", "") or tostring(res) }
  elseif res == nil then
    return { error = tostring(err or "no result") }
  elseif not pcall(json.encode, res) then
    return { error = "the result is not JSON-encodable" }
  end
  return { result = res }
end


-- Fetches what `agent` declares for `thread`; `call(thread, name, input)`
-- runs a sub-agent (spool.run.runner.call, handed down: the runner is
-- above this module).
function M.run(thread, agent, call)
  local have = {}
  for _, ev in ipairs(thread.events) do
    if ev.type == "prefetch" then
      have[ev.data.name] = true
    end
  end
  local fns, agents = {}, {}
  for name, spec in pairs(agent.prefetch) do
    if not have[name] then
      local list = type(spec) == "function" and fns or agents
      list[#list + 1] = name
    end
  end
  table.sort(fns)
  table.sort(agents)
  local input = thread:input()
  local results, left = {}, #fns
  local all_in = core.signal()
  -- Agent code in tasks of their own, which share the run's budgets: each
  -- of k fetches gets a k-th of them, so prefetching cannot multiply them.
  local share = limits.share(limits.of(config.get().limits, agent), #fns)
  for _, name in ipairs(fns) do
    core.spawn(function()
      local handle, err = limits.push_run(share, agent)
      if handle then
        results[name] = outcome(pcall(agent.prefetch[name], input,
          { thread = thread, agent = agent }))
        core.limits_pop(handle)
      else
        results[name] = { error = err }
      end
      left = left - 1
      if left == 0 then
        all_in:notify()
      end
    end)
  end
  while left > 0 do
    all_in:wait(60000) -- each fetch bounds its own I/O
  end
  for _, name in ipairs(fns) do
    local r = results[name]
    thread:append("prefetch", { name = name, result = r.result,
                                error = r.error })
  end
  for _, name in ipairs(agents) do
    local spec = agent.prefetch[name]
    local child_input = input
    if spec.input then
      child_input = spec.input(input)
    end
    local res, err = call(thread, spec.agent,
      child_input)
    local r = outcome(true, res, err)
    thread:append("prefetch", { name = name, agent = spec.agent,
                                result = r.result, error = r.error })
  end
end


return M
