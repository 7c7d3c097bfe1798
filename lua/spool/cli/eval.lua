-- spool eval: an agent over a case set, with its pass rate (spool.cli.evaluate).
-- Run by the CLI as a script; `arg` holds the command's arguments.
--
--   spool eval AGENT --cases FILE [--repeat N] [--concurrency C]
--             [--json | --junit FILE] [--min-pass RATE]
--             [--record DIR | --replay DIR] [--compare A B]
--
-- --compare runs two versions of the agent on the same cases (A and B are
-- each "current", an agent file, or git:REV) and lists the cases whose
-- outcome changed; --min-pass then applies to B. Exit 0 when the pass rate
-- is at least --min-pass (default 0: report only), 1 below it, 2 on bad
-- usage.

local config = require "spool.base.config"
local core = require "spool.core"
local json = require "spool.json"
local run_eval = require "spool.cli.evaluate"

local USAGE = "usage: spool eval AGENT --cases FILE [--repeat N] "
  .. "[--concurrency C] [--json | --junit FILE] [--min-pass RATE] "
  .. "[--record DIR | --replay DIR] [--compare A B]"

local cli = require("spool.cli.command").new("eval", USAGE)


local function parse(argv)
  local o = cli:parse(argv, {
    ["--cases"] = "value", ["--repeat"] = "count", ["--concurrency"] = "count",
    ["--json"] = "flag", ["--junit"] = "value", ["--min-pass"] = "rate",
    ["--record"] = "value", ["--replay"] = "value", ["--compare"] = "pair" },
    { "agent" })
  if not o.agent or not o.cases then
    cli:usage("needs an agent and --cases FILE")
  end
  if o.record and o.replay then
    cli:usage("--record and --replay exclude each other")
  end
  if o.json and o.junit then
    cli:usage("--json and --junit exclude each other")
  end
  return o
end


local function pct(x)
  return string.format("%3.0f%%", x * 100)
end


-- The store a report's threads are in, as the user can name it: relative
-- to the working folder when it is in it.
local function store_name()
  local path = config.get().store
  if path:match("^postgres") then
    -- The store's URL may hold a password: say which database, not how
    -- to reach it ("$SPOOL_DB" is what the person gave).
    return "$SPOOL_DB"
  end
  local cwd = os.getenv("PWD")
  if cwd and path:sub(1, #cwd + 1) == cwd .. "/" then
    return path:sub(#cwd + 2)
  end
  return path
end


local function text_report(r, out)
  out[#out + 1] = string.format("agent %s (version %s): %d of %d runs passed "
    .. "(%s), %d flaky case%s", r.agent, r.version, r.passes, r.runs,
    pct(r.pass_rate), r.flaky, r.flaky == 1 and "" or "s")
  out[#out + 1] = string.format("  %-28s %7s %6s %7s %8s %10s %9s", "case",
    "passes", "rate", "steps", "tokens", "cost $", "ms")
  for _, c in ipairs(r.cases) do
    out[#out + 1] = string.format("  %-28s %3d/%-3d %6s %7.1f %8.0f %10.6f "
      .. "%9.0f%s", c.name:sub(1, 28), c.passes, c.runs, pct(c.pass_rate),
      c.steps, c.tokens, c.cost_usd, c.latency_ms, c.flaky and "  flaky" or "")
    if c.failure then
      out[#out + 1] = string.format("      run %d failed: %s\n"
        .. "        spool --db %s show %s", c.failure.run, c.failure.message,
        r.store, c.failure.thread)
    end
  end
end


local function xml(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;",
    [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&apos;" }))
end


-- JUnit XML: a testsuite per agent, a testcase per case, failed when any
-- of its runs failed (the message says how many, and the first failure).
local function junit(r)
  local out = { '<?xml version="1.0" encoding="UTF-8"?>' }
  local failures = 0
  for _, c in ipairs(r.cases) do
    if c.passes < c.runs then
      failures = failures + 1
    end
  end
  out[#out + 1] = string.format('<testsuites tests="%d" failures="%d">',
    #r.cases, failures)
  out[#out + 1] = string.format('  <testsuite name="%s" tests="%d" '
    .. 'failures="%d" errors="0" skipped="0">', xml(r.agent), #r.cases,
    failures)
  for _, c in ipairs(r.cases) do
    out[#out + 1] = string.format('    <testcase classname="%s" name="%s" '
      .. 'time="%.3f">', xml(r.agent), xml(c.name), c.latency_ms / 1000)
    if c.passes < c.runs then
      out[#out + 1] = string.format('      <failure message="%s">%d of %d '
        .. 'runs failed; run %d: %s (thread %s)</failure>',
        xml(c.failure.message), c.runs - c.passes, c.runs, c.failure.run,
        xml(c.failure.message), xml(c.failure.thread))
    end
    out[#out + 1] = "    </testcase>"
  end
  out[#out + 1] = "  </testsuite>"
  out[#out + 1] = "</testsuites>"
  return table.concat(out, "\n") .. "\n"
end


local o = parse(arg or {})
local cases, cerr = run_eval.load_cases(o.cases)
if not cases then
  cli:fail(cerr)
end
-- Long evaluations say how far they are on stderr, every few seconds.
local PROGRESS_MS = 2000
local started = core.now()
local shown = started

local function progress(done, total, passed)
  local now = core.now()
  if now - shown >= PROGRESS_MS and done < total then
    shown = now
    cli:say(string.format("eval: %d of %d runs done, %d passed (%.0f s)",
      done, total, passed, (now - started) / 1000))
  end
end

local opts = { ["repeat"] = o["repeat"], concurrency = o.concurrency,
               record = o.record, replay = o.replay, progress = progress }

local function evaluate(version)
  local report, err = run_eval.with_version(version, o.agent, function()
    return run_eval.run(o.agent, cases, opts)
  end)
  if not report then
    cli:fail(err)
  end
  report.store = store_name()
  return report
end

local report, compare_a, out = nil, nil, {}
if o.compare then
  local a, b = evaluate(o.compare[1]), evaluate(o.compare[2])
  local changed = run_eval.compare(a, b)
  report, compare_a = b, a
  if o.json then
    io.write(json.encode({ a = a, b = b, changed = changed }), "\n")
  else
    out[#out + 1] = "A = " .. o.compare[1]
    text_report(a, out)
    out[#out + 1] = "B = " .. o.compare[2]
    text_report(b, out)
    out[#out + 1] = string.format("%d case%s changed:", #changed,
      #changed == 1 and "" or "s")
    for _, c in ipairs(changed) do
      out[#out + 1] = string.format("  %-28s %s -> %s  %s", c.name, pct(c.a),
        pct(c.b), c.better and "better" or "WORSE")
    end
    out[#out + 1] = string.format("overall: %s -> %s", pct(a.pass_rate),
      pct(b.pass_rate))
  end
else
  report = evaluate(nil)
  if o.json then
    io.write(json.encode(report), "\n")
  else
    text_report(report, out)
  end
end
-- The report beside the evaluation's own store (.spool/evals/X.db.json),
-- pruned with it: what spool serve shows of each agent version's latest
-- evaluations. (Not when --db named another store.)
local function keep(reports)
  local store, project = config.get().store, config.get().project .. "/"
  if store:sub(1, #project) ~= project
      or not store:match("/%.spool/evals/[^/]+%.db$") then
    return
  end
  local kept = json.array()
  for _, r in ipairs(reports) do
    local cases = json.array()
    for _, c in ipairs(r.cases or {}) do
      cases[#cases + 1] = { name = c.name, runs = c.runs, passes = c.passes,
                            pass_rate = c.pass_rate }
    end
    kept[#kept + 1] = { agent = r.agent, version = r.version, runs = r.runs,
      passes = r.passes, pass_rate = r.pass_rate, flaky = r.flaky,
      at = core.time(), cases = cases }
  end
  local ok, err = core.write_file(store:sub(#project + 1) .. ".json",
    json.encode(kept), "w")
  if not ok then
    cli:say("eval: the report was not kept for spool serve: " .. tostring(err))
  end
end
keep(o.compare and { compare_a, report } or { report })

if o.junit then
  local f, err = io.open(o.junit, "w")
  if not f then
    cli:fail("cannot write " .. o.junit .. ": " .. tostring(err))
  end
  f:write(junit(report))
  f:close()
end
if #out > 0 then
  io.write(table.concat(out, "\n"), "\n")
end
if o.min_pass and report.pass_rate < o.min_pass then
  cli:say(string.format("eval: the pass rate %s is below --min-pass %s",
    pct(report.pass_rate), pct(o.min_pass)))
  os.exit(1)
end
os.exit(0)
