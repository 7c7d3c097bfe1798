-- spool as a benchmark contender, speaking the harness's interface:
--
--   bench/spool-driver --base URL --runs R --concurrency C --steps K
--                      --warmup W --timeout-s S [--db FILE]
--                      [--no-cpu-limits] [--provider NAME] [--stream]
--
-- --provider: the wire format spoken to the model (openai, the default,
-- openai-responses or anthropic; the bench mock speaks each). --stream:
-- each model call streamed, as when someone reads the text as it comes.
-- Runs W warm-up runs, then R runs of bench/agents/calc.lua (K tool steps,
-- then the final text), at most C in flight, against the model at URL, and
-- prints one JSON line: runs, warmup, steps, failed, bad_answers,
-- timed_out, wall_s, cpu_user_s, cpu_sys_s, rss_before_kb, max_rss_kb (CPU
-- and wall over the timed runs only). Run inside `spool lua` by
-- bench/spool-driver, which sets the project and the store.
local core = require "spool.core"
local json = require "spool.json"
local runner = require "spool.run.runner"
local loader = require "spool.run.loader"

local o = require("spool.cli.command").new("bench driver", "usage: bench/spool-driver "
  .. "--base URL --runs R --concurrency C --steps K --warmup W --timeout-s S "
  .. "[--db FILE] [--no-cpu-limits] [--provider NAME] [--stream]"):parse(arg, { ["--base"] = "value",
    ["--runs"] = "count", ["--concurrency"] = "count", ["--steps"] = "natural",
    ["--warmup"] = "natural", ["--timeout-s"] = "count", ["--db"] = "value",
    ["--no-cpu-limits"] = "flag", ["--provider"] = "value",
    ["--stream"] = "flag" }, {})

-- Without instruction budgets no count hook is set: what the hook costs.
if o.no_cpu_limits then
  local limits = require("spool.base.config").get().limits
  limits.step_instructions, limits.run_instructions = nil, nil
end

local agent = assert(loader.load("calc"))
agent.model = { mock = false, base_url = assert(o.base, "--base URL"),
                provider = o.provider,
                name = "mock-1", timeout_ms = o.timeout_s * 1000,
                max_retries = 0 }
agent.max_steps = o.steps + 1
agent.stream = o.stream or nil
local INPUT = "Start at 0 and add 1, one tool call at a time."
local ANSWER = "The answer is " .. o.steps .. "."

-- Runs n runs, at most c at a time; returns failed, bad, timed out.
local function batch(n, c, deadline)
  local started, finished, in_flight = 0, 0, 0
  local threads = {}
  local wake = core.signal()
  local function start_one()
    started = started + 1
    in_flight = in_flight + 1
    local t = runner.start(agent, INPUT)
    threads[#threads + 1] = t
    core.spawn(function()
      runner.settle(t.id)
      in_flight = in_flight - 1
      finished = finished + 1
      wake:notify()
    end)
  end
  while finished < n and core.now() < deadline do
    while started < n and in_flight < c do
      start_one()
    end
    wake:wait(math.max(1, deadline - core.now()))
  end
  local failed, bad, timed_out = 0, 0, n - finished
  for _, t in ipairs(threads) do
    local status = t:status()
    if status == "failed" then
      failed = failed + 1
    elseif status == "done" and t:outcome() ~= ANSWER then
      bad = bad + 1
    end
  end
  return failed, bad, timed_out
end

local deadline = core.now() + o.timeout_s * 1000
if (o.warmup or 0) > 0 then
  batch(o.warmup, o.concurrency, deadline)
end
collectgarbage()
local before = core.rusage()
local t0 = core.now()
local failed, bad, timed_out = batch(o.runs, o.concurrency, deadline)
local wall = (core.now() - t0) / 1000
local after = core.rusage()
local function round(x)
  return math.floor(x * 1e6 + 0.5) / 1e6
end
print(json.encode({
  contender = "spool", runs = o.runs, warmup = o.warmup or 0,
  steps = o.steps, failed = failed, bad_answers = bad, timed_out = timed_out,
  wall_s = round(wall), cpu_user_s = round(after.user_s - before.user_s),
  cpu_sys_s = round(after.sys_s - before.sys_s),
  rss_before_kb = before.rss_kb, max_rss_kb = after.max_rss_kb,
}))
os.exit(0)
