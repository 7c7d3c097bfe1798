-- Runs RUNS threads of agents/calc.lua at once against the model at URL,
-- each STEPS tool steps long, and prints one JSON line: runs, steps (agent
-- steps: STEPS + 1 per run), failed, wall_s, cpu_s, steps_per_s.
-- Run by bench/durable inside `spool lua`, once per store.
local core = require "spool.core"
local json = require "spool.json"
local runner = require "spool.run.runner"
local loader = require "spool.run.loader"

local url, runs, steps = arg[1], tonumber(arg[2]), tonumber(arg[3])
local agent = assert(loader.load("calc"))
agent.model = { mock = false, base_url = url, name = "mock-1",
                timeout_ms = 120000 }

local threads = {}
local t0, c0 = core.now(), os.clock()
for i = 1, runs do
  threads[i] = runner.start(agent, "Start at 0 and add 1, one tool call at a time.")
end
while runner.running() > 0 do
  core.sleep(5)
end
local wall, cpu = (core.now() - t0) / 1000, os.clock() - c0
local failed = 0
for _, t in ipairs(threads) do
  if t:outcome() ~= "The answer is " .. steps .. "." then
    failed = failed + 1
  end
end
local total = runs * (steps + 1)
local function round(x)
  return math.floor(x * 1000 + 0.5) / 1000
end
print(json.encode({ runs = runs, steps = total, failed = failed,
  wall_s = round(wall), cpu_s = round(cpu),
  steps_per_s = math.floor(total / wall) }))
