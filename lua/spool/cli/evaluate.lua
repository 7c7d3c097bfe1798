-- spool.cli.evaluate: runs an agent over a set of cases and measures how often it
-- does the right thing (spool eval, spool replay). Private; the
-- expectations are spool.eval.
--
-- A case is { name, input, answers = { response, ... }, expect = {
-- expectation, ... } }: the input starts a thread; each time the thread
-- waits for a person, the next scripted answer resumes it ({ answer =
-- text } | { approve = true, args = {...} } | { reject = true, reason = }
-- | { event = name, data = ... }); when it stops, the expectations judge
-- the run (spool.eval.observe). Each case runs `repeat` times, the runs
-- `concurrency` at a time as threads on the engine's loop.
--
-- opts.progress(done, total, passed), if given, is called as each run
-- ends.
--
-- Cassettes make evals deterministic and offline: with record = DIR every
-- model reply of a run is saved in DIR/<case>.json, keyed by case, run and
-- call index (not by request bytes, which change whenever a prompt does);
-- with replay = DIR the runs get those replies back in order, and no model
-- is called.

local config = require "spool.base.config"
local core = require "spool.core"
local eval = require "spool.eval"
local json = require "spool.json"
local loader = require "spool.run.loader"
local runner = require "spool.run.runner"
local store = require "spool.run.store"
local thread_mod = require "spool.run.thread"

local M = {}


-- ---- cases ----

local function checked_case(c, where)
  if type(c) ~= "table" then
    return nil, where .. ": a case is an object { input, answers, expect }"
  end
  if c.input == nil then
    return nil, where .. ": the case has no input"
  end
  if c.answers ~= nil and type(c.answers) ~= "table" then
    return nil, where .. ": answers must be a list of responses"
  end
  for i, a in ipairs(c.answers or {}) do
    if type(a) ~= "table" then
      return nil, string.format("%s: answers[%d] must be an object such as "
        .. "{\"approve\": true} or {\"answer\": \"...\"}", where, i)
    end
  end
  local expect = c.expect or {}
  if type(expect) == "function" then
    expect = { expect }
  end
  local list = {}
  if #expect > 0 or next(expect) == nil then
    for i, f in ipairs(expect) do
      if type(f) ~= "function" then
        return nil, string.format("%s: expect[%d] is not a function", where, i)
      end
      list[i] = f
    end
  else
    local ok, made = pcall(eval.from_json, expect)
    if not ok then
      return nil, where .. ": " .. made
    end
    list = made
  end
  return { name = c.name, input = c.input, answers = c.answers or {},
           expect = list, ["repeat"] = c["repeat"] }
end


-- Reads a case file: JSON lines (.jsonl), or Lua (.lua) returning a list
-- of cases whose expectations may be functions. Returns the cases or nil
-- and a message naming the file and line.
function M.load_cases(path)
  local f, err = io.open(path, "r")
  if not f then
    return nil, "ENOTFOUND: cannot read the cases: " .. err
  end
  local text = f:read("a")
  f:close()
  local raw = {}
  if path:match("%.lua$") then
    local env = setmetatable({}, { __index = _G })
    local chunk, lerr = load(text, "@" .. path, "t", env)
    if not chunk then
      return nil, "EINVAL: " .. lerr
    end
    local ok, list = pcall(chunk)
    if not ok or type(list) ~= "table" then
      return nil, "EINVAL: " .. path .. ": "
        .. (ok and "must return a list of cases" or tostring(list))
    end
    for i, c in ipairs(list) do
      raw[#raw + 1] = { case = c, where = string.format("%s: case %d", path,
        i) }
    end
  else
    local n = 0
    for line in (text .. "\n"):gmatch("([^\n]*)\n") do
      n = n + 1
      if line:match("%S") then
        local c, jerr = json.decode(line)
        if c == nil then
          return nil, string.format("EINVAL: %s:%d: %s", path, n, jerr)
        end
        raw[#raw + 1] = { case = c, where = string.format("%s:%d", path, n) }
      end
    end
  end
  local cases, names = {}, {}
  for i, r in ipairs(raw) do
    local c, cerr = checked_case(r.case, r.where)
    if not c then
      return nil, "EINVAL: " .. cerr
    end
    c.name = c.name or ("case " .. i)
    if names[c.name] then
      return nil, string.format("EINVAL: %s: the name %q is used twice",
        r.where, c.name)
    end
    names[c.name] = true
    cases[#cases + 1] = c
  end
  if #cases == 0 then
    return nil, "EINVAL: " .. path .. " holds no cases"
  end
  return cases
end


-- ---- cassettes ----

local Cassette = {}
local CASSETTE = { __index = Cassette } -- runs' agents see no methods table


local function recorded(reply)
  local calls = json.array()
  for i, c in ipairs(reply.tool_calls or {}) do
    calls[i] = { id = c.id, name = c.name, arguments = c.arguments }
  end
  return { text = reply.text, tool_calls = calls,
           finish_reason = reply.finish_reason, usage = reply.usage,
           model = reply.model, provider = reply.provider, id = reply.id }
end


-- Stands in for spool.llm's chat for the runs it belongs to.
function Cassette:call(req, chat)
  self.i = self.i + 1
  if self.mode == "replay" then
    local rec = self.calls[self.i]
    if rec == nil then
      return nil, string.format("EMODEL: the cassette of %s has no call %d "
        .. "(the recording made %d)", self.label, self.i, #self.calls), {}
    elseif rec.error then
      return nil, rec.error, {}
    end
    local reply = json.decode(json.encode(rec))
    for _, c in ipairs(reply.tool_calls) do
      local args = json.decode(c.arguments or "")
      c.args = type(args) == "table" and args or nil
    end
    reply.latency_ms = 0
    reply.attempts = { { attempt = 1, status = 200, latency_ms = 0,
                         model = rec.model, provider = rec.provider } }
    return reply
  end
  local reply, err, attempts = chat(req)
  self.calls[self.i] = reply and recorded(reply) or { error = err }
  return reply, err, attempts
end


local function new_cassette(mode, calls, label)
  return setmetatable({ mode = mode, calls = calls or {}, i = 0,
                        label = label }, CASSETTE)
end


-- A file per case: its name made safe, and a hash so two names that
-- become the same never share a file.
local function cassette_path(dir, name)
  return string.format("%s/%s-%s.json", dir, name:gsub("[^%w%-_%.]", "_"),
    core.sha256(name):sub(1, 8))
end


-- The recorded runs of a case: { { call, ... }, ... } per run.
local function read_cassette(dir, name)
  local path = cassette_path(dir, name)
  local f = io.open(path, "r")
  if not f then -- recorded before names carried a hash
    f = io.open(dir .. "/" .. name:gsub("[^%w%-_%.]", "_") .. ".json", "r")
  end
  if not f then
    return nil, "ENOTFOUND: no cassette for case " .. string.format("%q", name)
      .. " (" .. path .. "): record one with --record"
  end
  local doc, err = json.decode(f:read("a"))
  f:close()
  if type(doc) ~= "table" or type(doc.runs) ~= "table" then
    return nil, "EINVAL: " .. path .. " is not a cassette" .. (err and (": "
      .. err) or "")
  end
  return doc.runs
end


local function write_cassette(dir, name, runs)
  os.execute("mkdir -p '" .. dir:gsub("'", "'\\''") .. "'")
  local f, err = io.open(cassette_path(dir, name), "w")
  if not f then
    return nil, err
  end
  f:write(json.encode({ case = name, runs = runs }), "\n")
  f:close()
  return true
end


-- ---- runs ----

-- The thread and its sub-agents' threads as stored, root first.
local function family(root)
  local out = { root }
  for _, ev in ipairs(root.events) do
    if ev.type == "agent_call" and ev.data.thread then
      local record = store.load(ev.data.thread)
      if record then
        for _, t in ipairs(family(thread_mod.from_record(record))) do
          out[#out + 1] = t
        end
      end
    end
  end
  return out
end


-- Runs one case once; returns the run record (spool.eval.observe) with
-- .failure set when an expectation failed.
function M.run_case(agent, case, cassette, tools)
  local box = { writes = {}, cassette = cassette, recorded_tools = tools }
  local t = runner.start(agent, case.input, nil, nil, box)
  local next_answer = 1
  while true do
    runner.settle(t.id)
    if t.halted then
      return { thread = t.id, status = "halted", failure = "the thread could "
        .. "not be stored: " .. tostring(t.halted), calls = json.array(),
        intents = json.array(), writes = json.array(), steps = 0, tokens = 0, cost_usd = 0, latency_ms = 0 }
    end
    local answer = case.answers[next_answer]
    if t:status() ~= "waiting" or answer == nil then
      break
    end
    next_answer = next_answer + 1
    local response = { by = "eval" }
    for k, v in pairs(answer) do
      response[k] = v
    end
    local resumed, err = runner.resume(t.id, response, box)
    if not resumed then
      local run = eval.observe(family(t), box.writes)
      run.failure = "the scripted answer " .. next_answer - 1
        .. " was refused: " .. tostring(err)
      return run
    end
    t = resumed
  end
  local run = eval.observe(family(t), box.writes)
  run.failure = eval.check(case.expect, run)
  return run
end


-- Runs `jobs` (functions) at most `concurrency` at a time, each in a task
-- of its own; returns when all are done.
local function pool(jobs, concurrency)
  local nexti, running = 1, 0
  local done = core.signal()
  local function worker()
    while nexti <= #jobs do
      local job = jobs[nexti]
      nexti = nexti + 1
      local ok, err = pcall(job)
      if not ok then
        core.log("error", "eval job failed: " .. tostring(err))
      end
    end
    running = running - 1
    done:notify()
  end
  for _ = 1, math.min(concurrency, #jobs) do
    running = running + 1
    core.spawn(worker)
  end
  while running > 0 do
    done:wait(60000)
  end
end


local function mean(list, field)
  if #list == 0 then
    return 0
  end
  local s = 0
  for _, r in ipairs(list) do
    s = s + (r[field] or 0)
  end
  return s / #list
end


-- Runs the agent over the cases. opts: repeat (default 1), concurrency
-- (default 8), record / replay (a cassette folder). Returns the report:
-- { agent, version, runs, passes, pass_rate, flaky, cases = { { name,
-- runs, passes, pass_rate, flaky, steps, tokens, cost_usd, latency_ms,
-- failure = { message, thread, run } } } } — or nil and an error.
function M.run(agent_name, cases, opts)
  opts = opts or {}
  local agent, err = loader.load(agent_name)
  if not agent then
    return nil, err
  end
  local jobs, results, tapes = {}, {}, {}
  local done, passed = 0, 0
  for _, case in ipairs(cases) do
    local n = case["repeat"] or opts["repeat"] or 1
    results[case.name] = {}
    local recorded_runs
    if opts.replay then
      local runs, rerr = read_cassette(opts.replay, case.name)
      if not runs then
        return nil, rerr
      end
      recorded_runs = runs
    end
    tapes[case.name] = {}
    for r = 1, n do
      local cassette
      if opts.replay then
        -- More runs than were recorded replay the recording again.
        cassette = new_cassette("replay", recorded_runs[(r - 1)
          % math.max(1, #recorded_runs) + 1], string.format("case %q, run %d",
          case.name, r))
      elseif opts.record then
        cassette = new_cassette("record", nil, case.name)
        tapes[case.name][r] = cassette.calls
      end
      jobs[#jobs + 1] = function()
        local ok, run = pcall(M.run_case, agent, case, cassette)
        if not ok then -- the harness failed on this run: it did not pass
          run = { failure = "the run could not be judged: " .. tostring(run),
                  calls = json.array(), intents = json.array(),
                  writes = json.array(), steps = 0,
                  tokens = 0, cost_usd = 0, latency_ms = 0 }
        end
        run.run = r
        results[case.name][r] = run
        done = done + 1
        passed = passed + (run.failure and 0 or 1)
        if opts.progress then
          opts.progress(done, #jobs, passed)
        end
      end
    end
  end
  pool(jobs, opts.concurrency or 8)
  if opts.record then
    for _, case in ipairs(cases) do
      local runs = json.array()
      for r, calls in ipairs(tapes[case.name]) do
        runs[r] = json.array(calls)
      end
      local ok, werr = write_cassette(opts.record, case.name, runs)
      if not ok then
        return nil, "EIO: cannot write the cassette: " .. tostring(werr)
      end
    end
  end
  local report = { agent = agent.name, version = agent.version, runs = 0,
                   passes = 0, flaky = 0, cases = json.array() }
  for _, case in ipairs(cases) do
    local runs = results[case.name]
    local c = { name = case.name, runs = #runs, passes = 0,
                steps = mean(runs, "steps"), tokens = mean(runs, "tokens"),
                latency_ms = mean(runs, "latency_ms"), cost_usd = 0 }
    for _, run in ipairs(runs) do
      c.cost_usd = c.cost_usd + (run.cost_usd or 0)
      if run.failure then
        c.failure = c.failure or { message = run.failure,
                                   thread = run.thread, run = run.run }
      else
        c.passes = c.passes + 1
      end
    end
    c.pass_rate = c.runs > 0 and c.passes / c.runs or 0
    c.flaky = c.passes > 0 and c.passes < c.runs
    report.runs = report.runs + c.runs
    report.passes = report.passes + c.passes
    report.flaky = report.flaky + (c.flaky and 1 or 0)
    report.cases[#report.cases + 1] = c
  end
  report.pass_rate = report.runs > 0 and report.passes / report.runs or 0
  return report
end


-- ---- versions ----

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end


-- Runs fn() with the project's agents, prompts and lib taken from
-- `version`: "current", a file (the agent's file instead of the current
-- one, the rest as it is), or "git:REV" (the project as committed at REV).
-- Returns fn's results, or nil and an error.
function M.with_version(version, agent_name, fn)
  if version == nil or version == "current" then
    return fn()
  end
  if not tostring(agent_name):match("^[%w_%-]+$") then
    return nil, "EINVAL: not an agent name: " .. tostring(agent_name)
  end
  local cfg = config.get()
  local dir = os.tmpname()
  os.remove(dir)
  local cmd
  if version:match("^git:") then
    -- The project's folder as committed: it may sit below the repository's
    -- top (rev-parse --show-prefix).
    cmd = string.format("mkdir -p %s && prefix=$(git -C %s rev-parse "
      .. "--show-prefix) && top=$(git -C %s rev-parse --show-toplevel) && "
      .. "git -C \"$top\" archive --format=tar %s:\"$prefix\" | tar -x -C %s",
      sh_quote(dir), sh_quote(cfg.project), sh_quote(cfg.project),
      sh_quote(version:sub(5)), sh_quote(dir))
  else
    -- The project as it is (sub-agents too), with this one file swapped.
    cmd = string.format("mkdir -p %s && cp -R %s %s/agents && cp -R %s "
      .. "%s/prompts && cp %s %s/agents/%s.lua && (test ! -d %s || cp -R %s "
      .. "%s/lib)", sh_quote(dir), sh_quote(cfg.agents_dir), sh_quote(dir),
      sh_quote(cfg.prompts_dir), sh_quote(dir), sh_quote(version),
      sh_quote(dir), agent_name, sh_quote(cfg.lib_dir), sh_quote(cfg.lib_dir),
      sh_quote(dir))
  end
  -- A CLI command with no run of its own yet: a blocking copy is fine.
  if not os.execute("(" .. cmd .. ") 2>/dev/null") then
    os.execute("rm -rf " .. sh_quote(dir))
    return nil, "ENOTFOUND: cannot take the agent from " .. version
  end
  local saved = { cfg.agents_dir, cfg.prompts_dir, cfg.lib_dir }
  cfg.agents_dir, cfg.prompts_dir, cfg.lib_dir =
    dir .. "/agents", dir .. "/prompts", dir .. "/lib"
  loader.forget() -- every agent: sub-agents come from that folder too
  local out = table.pack(pcall(fn))
  cfg.agents_dir, cfg.prompts_dir, cfg.lib_dir = saved[1], saved[2], saved[3]
  loader.forget() -- every agent: sub-agents come from that folder too
  os.execute("rm -rf " .. sh_quote(dir))
  if not out[1] then
    error(out[2], 0)
  end
  return table.unpack(out, 2, out.n)
end


-- Two reports side by side: the cases whose outcome changed.
function M.compare(a, b)
  local by_name = {}
  for _, c in ipairs(a.cases) do
    by_name[c.name] = c
  end
  local changed = json.array()
  for _, c in ipairs(b.cases) do
    local before = by_name[c.name]
    if before and before.pass_rate ~= c.pass_rate then
      changed[#changed + 1] = { name = c.name, a = before.pass_rate,
                                b = c.pass_rate,
                                better = c.pass_rate > before.pass_rate }
    end
  end
  return changed
end


-- ---- replay of a stored thread ----

-- What each call a stored family of threads made came to, as the
-- replay's handlers answer from it: "<name>\0<args as JSON>" -> {
-- { ok, result | error }, ... } in the order they ran.
local function recorded_outcomes(threads)
  local out = {}
  for _, t in ipairs(threads) do
    local by_call, last = {}, nil
    for _, ev in ipairs(t.events) do
      local d = ev.data
      if ev.type == "intent" then
        last = { name = d.name,
                 key = d.name .. "\0" .. json.encode(d.args or {}) }
        if d.call_id then
          by_call[d.call_id] = last
        end
      elseif ev.type == "human_response" and d.args and d.call_id
          and by_call[d.call_id] then
        -- Approved with edited arguments: the call ran with those.
        local c = by_call[d.call_id]
        c.key = c.name .. "\0" .. json.encode(d.args)
      elseif (ev.type == "tool_result" and not d.rejected)
          or (ev.type == "error" and d.call_id) or ev.type == "done" then
        local c = d.call_id and by_call[d.call_id] or last
        if c and not c.outcome then
          c.outcome = ev.type == "error" and { ok = false, error = d.error }
            or { ok = true, result = d.result }
          local list = out[c.key] or {}
          out[c.key] = list
          list[#list + 1] = c.outcome
        end
      end
    end
  end
  return out
end


-- The case and cassette that re-run a stored thread: its input, the
-- answers people gave, and the model's replies in the order they came.
-- The recorded run also says what each call came to (`tools`).
function M.case_of_thread(id)
  local record, err = store.load(id)
  if not record then
    return nil, err
  end
  local root = thread_mod.from_record(record)
  local threads = family(root)
  local calls, answers = {}, {}
  for ti, t in ipairs(threads) do
    for _, ev in ipairs(t.events) do
      local d = ev.data
      local reply
      if ev.type == "model_call" then
        reply = { text = d.text, tool_calls = d.tool_calls or json.array(),
          finish_reason = d.finish_reason, usage = d.usage, model = d.model,
          provider = d.provider }
      elseif ev.type == "compaction" or ev.type == "event_summary" then
        -- The window's own model calls went through the cassette too.
        reply = { text = d.summary, tool_calls = json.array(),
          finish_reason = "stop", usage = d.usage, model = d.model }
      end
      if reply then
        calls[#calls + 1] = { at = ev.at, order = ti, seq = ev.seq,
                              reply = reply }
      end
    end
  end
  table.sort(calls, eval.in_order)
  for i, c in ipairs(calls) do
    calls[i] = c.reply
  end
  for _, ev in ipairs(root.events) do
    if ev.type == "human_response" then
      local d = ev.data
      if d.kind == "approval" or d.approved ~= nil then
        answers[#answers + 1] = d.approved and { approve = true, args = d.args }
          or { reject = true, reason = d.reason }
      elseif d.event then
        answers[#answers + 1] = { event = d.event, data = d.data }
      else
        answers[#answers + 1] = { answer = d.answer }
      end
    end
  end
  local recorded_run = eval.observe(threads, {})
  recorded_run.agent = root.agent
  recorded_run.tools = recorded_outcomes(threads)
  return { name = id, input = root:input(), answers = answers, expect = {} },
    calls, recorded_run
end


local function shown_call(c)
  return c and ("called " .. c.name .. " " .. json.encode(c.args or {}))
end


local function shown_asked(a)
  return a and (a.kind == "approval"
    and ("asked for approval of " .. a.name .. " " .. json.encode(a.args or {}))
    or ("asked " .. json.encode(a.question or a.name or a.kind)))
end


-- The first place two lists differ, shown (what i: the recording ..., the
-- new code ...), or nil.
local function first_difference(what, before, after, show, none)
  for i = 1, math.max(#before, #after) do
    local x, y = show(before[i]), show(after[i])
    if x ~= y then
      return string.format("%s %d: the recording %s, the new code %s", what,
        i, x or none, y or none)
    end
  end
end


-- Deletes the threads a replay made (a family, children first): they are
-- a comparison's, not the project's.
local function forget(root_id)
  local record = store.load(root_id)
  if not record then
    return
  end
  local threads = family(thread_mod.from_record(record))
  for i = #threads, 1, -1 do
    store.delete(threads[i].id)
  end
end


-- Re-runs a stored thread through the current agent code: the model's
-- replies and people's answers come from the recording, and so do the
-- tools' results — no handler runs, unless opts.live. Compares the calls
-- made (names and arguments), the people asked, and the end. The threads
-- the replay made are deleted unless opts.keep. Returns { same = bool,
-- divergence = text, recorded = run, replayed = run }.
function M.replay(id, agent_name, opts)
  opts = opts or {}
  local case, calls, before = M.case_of_thread(id)
  if not case then
    return nil, calls
  end
  local agent, err = loader.load(agent_name or before.agent)
  if not agent then
    return nil, err
  end
  local after = M.run_case(agent, case, new_cassette("replay", calls,
    "thread " .. id), not opts.live and before.tools or nil)
  if not opts.keep then
    forget(after.thread)
  end
  local out = { recorded = before, replayed = after, same = true }
  out.divergence = first_difference("call", before.calls, after.calls,
      shown_call, "made no more calls")
    or first_difference("person asked", before.asked, after.asked,
      shown_asked, "asked no one more")
  if not out.divergence and (before.status ~= after.status
      or json.encode(before.answer) ~= json.encode(after.answer)) then
    out.divergence = string.format("the end: the recording %s %s, the new "
      .. "code %s %s", before.status, json.encode(before.answer or
        before.error), after.status, json.encode(after.answer or after.error))
  end
  out.same = out.divergence == nil
  return out
end

return M
