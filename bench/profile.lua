-- Where a run's Lua instructions go: bench/driver.lua with a sampling
-- profiler. Every PROF_EVERY (97) VM instructions of every task spawned
-- after it loads, the running Lua function is counted; at exit the
-- functions are printed by share of samples (PROF_TOP, 30). Run as the
-- driver, with --no-cpu-limits (the run limits set a hook of their own,
-- which would replace this one):
--
--   build/spool --project bench --db :memory: lua bench/profile.lua \
--     --base URL --runs 100 --concurrency 1 --steps 10 --warmup 5 \
--     --timeout-s 300 --no-cpu-limits
--
-- It counts Lua instructions, not time in C (the codec, the store, curl):
-- callgrind gives those (bench/README.md).
local core = require "spool.core"

local EVERY = tonumber(os.getenv("PROF_EVERY") or "97")
local TOP = tonumber(os.getenv("PROF_TOP") or "30")
local samples, total = {}, 0

local function hook()
  local info = debug.getinfo(2, "S")
  if info then
    local key = info.short_src .. ":" .. info.linedefined
    samples[key] = (samples[key] or 0) + 1
    total = total + 1
  end
end

local spawn = core.spawn
core.spawn = function(f, ...)
  return spawn(function(...)
    debug.sethook(hook, "", EVERY)
    return f(...)
  end, ...)
end

local function report()
  debug.sethook()
  local keys = {}
  for k in pairs(samples) do
    keys[#keys + 1] = k
  end
  table.sort(keys, function(a, b) return samples[a] > samples[b] end)
  io.stderr:write(string.format("%d samples of the Lua function running, "
    .. "every %d instructions\n", total, EVERY))
  for i = 1, math.min(#keys, TOP) do
    io.stderr:write(string.format("%5.1f%% %s\n",
      100 * samples[keys[i]] / total, keys[i]))
  end
end

local exit = os.exit
os.exit = function(...)
  report()
  exit(...)
end
assert(loadfile("bench/driver.lua"))(table.unpack(arg))
report()
