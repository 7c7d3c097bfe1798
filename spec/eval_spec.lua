-- Evals: the expectation helpers, the report, cassettes, comparing two
-- versions of an agent, and spool replay — end to end through the CLI
-- against a mock that fails reproducibly (spec/fixtures/eval).
local h = require "spec.support"
local json = require "spool.json"
local e = require "spool.eval"
local thread_mod = require "spool.run.thread"
local run_eval = require "spool.cli.evaluate"

-- (an evaluation's threads in memory: the fixture is part of the source)
local PROJECT = "--project " .. h.q(h.ROOT .. "/spec/fixtures/eval")
  .. " --db :memory: "

local function thread_of(events)
  local t = thread_mod.new("a", "v", nil, nil)
  for _, ev in ipairs(events) do
    t:append(ev[1], ev[2])
  end
  return t
end

describe("spool eval", function()
  describe("expectations", function()
    -- A run that looked up an order, asked for approval of a refund, got
    -- it, refunded, then answered; its sub-agent called classify.
    local root = thread_of {
      { "input", { input = "refund 5532" } },
      { "intent", { call_id = "c1", name = "get_order", args = { id = "5532" } } },
      { "tool_result", { call_id = "c1", name = "get_order", result = {} } },
      { "intent", { call_id = "c2", name = "refund", args = { amount = 60 } } },
      { "human_request", { kind = "approval", call_id = "c2", name = "refund" } },
      { "human_response", { kind = "approval", call_id = "c2", approved = true } },
      { "tool_result", { call_id = "c2", name = "refund", result = "ok" } },
      { "intent", { call_id = "c3", name = "wipe", args = {} } },
      { "human_request", { kind = "approval", call_id = "c3", name = "wipe" } },
      { "human_response", { kind = "approval", call_id = "c3", approved = false } },
      { "tool_result", { call_id = "c3", name = "wipe", rejected = true,
                         result = "A human rejected this call." } },
      { "model_call", { usage = { input_tokens = 100, output_tokens = 20 } } },
      { "done", { result = "Refunded 60 EUR for order 5532." } },
    }
    local run = e.observe({ root }, { { ns = "refunds", key = "5532",
                                        value = { amount = 60 } } })

    local function holds(f)
      local ok, msg = f(run)
      return ok and true or false, msg
    end

    it("reads what the run did", function()
      assert.are.same({ "get_order", "refund" }, run.intents)
      assert.are.equal("done", run.status)
      assert.are.equal(120, run.tokens)
      assert.are.same({ amount = 60 }, run.calls[2].args)
    end)

    it("judge the answer, the calls, approvals, budgets and writes",
      function()
      assert.is_true(holds(e.status("done")))
      assert.is_true(holds(e.answer_matches("Refunded %d+ EUR")))
      assert.is_true(holds(e.answer_equals("Refunded 60 EUR for order 5532.")))
      assert.is_true(holds(e.called("refund")))
      assert.is_true(holds(e.not_called("wipe"))) -- rejected: never ran
      assert.is_true(holds(e.called_before("get_order", "refund")))
      assert.is_true(holds(e.approved_before("refund")))
      assert.is_true(holds(e.max_steps(3)))
      assert.is_true(holds(e.wrote("refunds", "5532", { amount = 60 })))
      assert.is_true(holds(e.wrote("refunds", "5532", function(v)
        return v.amount == 60 end)))
      local failures = {
        { e.status("failed"), "status is done, not failed" },
        { e.answer_equals("x"), 'the answer is "Refunded 60 EUR for order '
          .. '5532.", not "x"' },
        { e.called("wipe"), "wipe was never called (calls: get_order, "
          .. "refund)" },
        { e.called_before("refund", "get_order"), "get_order was called "
          .. "before refund (calls: get_order, refund)" },
        { e.approved_before("get_order"), "get_order ran without an "
          .. "approval" },
        { e.max_tokens(100), "tokens: 120, more than 100" },
        { e.wrote("refunds", "9999"), "nothing was written to refunds/9999" },
      }
      for _, f in ipairs(failures) do
        local ok, msg = holds(f[1])
        assert.is_false(ok)
        assert.are.equal(f[2], msg)
      end
    end)

    it("come from JSON, status first, and unknown ones are named",
      function()
      local list = e.from_json({ called = { "refund" }, status = "failed" })
      assert.are.equal("status is done, not failed", e.check(list, run))
      assert.has_error(function() e.from_json({ answer_is = "x" }) end,
        "unknown expectation 'answer_is' (status, answer_equals, "
        .. "answer_matches, called, not_called, called_before, "
        .. "approved_before, max_steps, max_tokens, max_cost, wrote)")
      assert.matches("expectation 1 raised: .*boom", e.check({ function()
        error("boom") end }, run))
    end)
  end)

  describe("case files", function()
    local dir

    before_each(function() dir = h.tmpdir() end)
    after_each(function() h.remove(dir) end)

    it("name the line of a mistake", function()
      for text, want in pairs {
        ['{"input": "a"}\n{"input": }\n'] = "cases.jsonl:2: EJSON",
        ['{"name": "x", "input": 1}\n{"name": "x", "input": 2}\n'] =
          'cases.jsonl:2: the name "x" is used twice',
        ['{"expect": {}}\n'] = "cases.jsonl:1: the case has no input",
        ['{"input": 1, "expect": {"nope": 1}}\n'] =
          "cases.jsonl:1: unknown expectation 'nope'",
        ["\n\n"] = "holds no cases",
        ['{"input": 1, "answers": ["reject"]}\n'] =
          "cases.jsonl:1: answers[1] must be an object",
      } do
        h.write_files(dir, { ["cases.jsonl"] = text })
        local cases, err = run_eval.load_cases(dir .. "/cases.jsonl")
        assert.is_nil(cases)
        assert.matches(want, err, 1, true)
      end
    end)

    it("take a single name where a list is expected", function()
      h.write_files(dir, { ["cases.jsonl"] =
        '{"input": 1, "expect": {"called": "add", "not_called": "wipe"}}\n' })
      local cases = assert(run_eval.load_cases(dir .. "/cases.jsonl"))
      assert.are.equal(2, #cases[1].expect)
      assert.are.equal("add was never called (calls: )",
        e.check(cases[1].expect, { calls = {}, intents = {} }))
    end)

    it("may be Lua, with functions as expectations", function()
      h.write_files(dir, { ["cases.lua"] = [[
        local e = require "spool.eval"
        return { { name = "lua", input = "1 + 1",
                   expect = { e.status("done"), function(run)
                     return run.answer == "2", "wrong" end } } }]] })
      local cases = assert(run_eval.load_cases(dir .. "/cases.lua"))
      assert.are.equal(2, #cases[1].expect)
    end)
  end)

  describe("end to end", function()
    it("measures a reproducible 20% failure rate, and a fix when compared",
      function()
      local out, err, code = h.cli(PROJECT .. "eval adder --cases "
        .. "spec/fixtures/eval/cases.jsonl --repeat 5 --concurrency 4 --json")
      assert.are.equal(0, code, err)
      local r = json.decode(out)
      assert.are.equal(20, r.runs)
      assert.are.equal(16, r.passes)
      assert.are.equal(0.8, r.pass_rate)
      -- every failure names its assertion and the thread to inspect
      for _, c in ipairs(r.cases) do
        if c.failure then
          assert.matches("^status is failed, not done", c.failure.message)
          assert.matches("^t_", c.failure.thread)
        end
      end
      out, err, code = h.cli(PROJECT .. "eval adder --cases "
        .. "spec/fixtures/eval/cases.jsonl --repeat 5 --concurrency 1 "
        .. "--compare current spec/fixtures/eval/fixed/adder.lua --json")
      assert.are.equal(0, code, err)
      r = json.decode(out)
      assert.are.equal(0.8, r.a.pass_rate)
      assert.are.equal(1.0, r.b.pass_rate)
      assert.are.equal(4, #r.changed) -- one run in five failed, in each
      for _, c in ipairs(r.changed) do
        assert.is_true(c.better)
      end
      assert.are_not.equal(r.a.version, r.b.version)
      -- a git revision of the project against the working tree (20 runs
      -- each, so each sees the same fifth replies garbled)
      out, err, code = h.cli(PROJECT .. "eval adder --cases "
        .. "spec/fixtures/eval/cases.jsonl --repeat 5 --concurrency 1 "
        .. "--compare git:HEAD current --json")
      assert.are.equal(0, code, err)
      r = json.decode(out)
      assert.are.equal(r.a.version, r.b.version)
      assert.matches('"changed":[]', out, 1, true)
      _, err, code = h.cli(PROJECT .. "eval adder --cases "
        .. "spec/fixtures/eval/cases.jsonl --compare git:no-such-rev current")
      assert.are.equal(2, code)
      assert.matches("cannot take the agent from git:no%-such%-rev", err)
    end)

    it("gates CI: JUnit XML, and exit 1 below --min-pass", function()
      local dir = h.tmpdir()
      local _, err, code = h.cli(PROJECT .. "eval adder --cases "
        .. "spec/fixtures/eval/cases.jsonl --repeat 5 --junit "
        .. h.q(dir .. "/junit.xml") .. " --min-pass 0.9")
      assert.are.equal(1, code)
      assert.matches("the pass rate  80%% is below %-%-min%-pass  90%%", err)
      local check, xcode = h.sh("xmllint --noout --schema "
        .. h.q(h.ROOT .. "/spec/fixtures/junit.xsd") .. " "
        .. h.q(dir .. "/junit.xml") .. " 2>&1")
      assert.are.equal(0, xcode, check)
      local xml = h.slurp(dir .. "/junit.xml")
      assert.matches('<testsuite name="adder" tests="4" failures="4"', xml,
        1, true)
      assert.matches('<failure message="status is failed, not done', xml, 1,
        true)
      _, _, code = h.cli(PROJECT .. "eval adder --cases "
        .. "spec/fixtures/eval/cases.jsonl --min-pass 0.5")
      assert.are.equal(0, code)
      for _, args in ipairs { "adder", "adder --cases x --repeat 0",
                              "adder --cases x --min-pass 2",
                              "adder --cases x --record a --replay b" } do
        _, err, code = h.cli(PROJECT .. "eval " .. args)
        assert.are.equal(2, code, args)
        assert.matches("usage: spool eval", err)
      end
      h.remove(dir)
    end)

    it("records cassettes, and replays them offline", function()
      local dir = h.tmpdir()
      local out, err, code = h.cli(PROJECT .. "eval adder --cases "
        .. "spec/fixtures/eval/cases.jsonl --repeat 5 --concurrency 1 "
        .. "--record " .. h.q(dir) .. " --json")
      assert.are.equal(0, code, err)
      assert.are.equal(0.8, json.decode(out).pass_rate)
      -- one file per case, named after it
      local file = h.sh("ls " .. h.q(dir) .. " | grep '^small-'"):match("%S+")
      local tape = json.decode(h.slurp(dir .. "/" .. file))
      assert.are.equal(5, #tape.runs)
      assert.are.equal(1, #tape.runs[1])
      -- No model at all: an unreachable endpoint, and the same results.
      out, err, code = h.cli("--base-url http://127.0.0.1:9/v1 " .. PROJECT
        .. "eval adder --cases spec/fixtures/eval/cases.jsonl --repeat 5 "
        .. "--concurrency 3 --replay " .. h.q(dir) .. " --json")
      assert.are.equal(0, code, err)
      local r = json.decode(out)
      assert.are.equal(0.8, r.pass_rate)
      -- the fix, against the same recording: the replies do not change
      out, err, code = h.cli("--base-url http://127.0.0.1:9/v1 " .. PROJECT
        .. "eval adder --cases spec/fixtures/eval/cases.jsonl --repeat 5 "
        .. "--replay " .. h.q(dir) .. " --compare current "
        .. "spec/fixtures/eval/fixed/adder.lua --json")
      assert.are.equal(0, code, err)
      assert.are.equal(1.0, json.decode(out).b.pass_rate)
      -- a recording shorter than the run: the run fails, saying so
      local small = h.sh("ls " .. h.q(dir) .. " | grep '^small-'"):match("%S+")
      h.write_files(dir, { [small] = '{"case": "small", "runs": [[]]}' })
      out, err, code = h.cli("--base-url http://127.0.0.1:9/v1 " .. PROJECT
        .. "eval adder --cases spec/fixtures/eval/cases.jsonl --replay "
        .. h.q(dir) .. " --json")
      assert.are.equal(0, code, err)
      for _, c in ipairs(json.decode(out).cases) do
        if c.name == "small" then
          assert.matches("the cassette of case \"small\", run 1 has no call 1",
            c.failure.message, 1, true)
        end
      end
      h.sh("rm " .. h.q(dir) .. "/zero-*.json")
      _, err, code = h.cli(PROJECT .. "eval adder --cases "
        .. "spec/fixtures/eval/cases.jsonl --replay " .. h.q(dir))
      assert.are.equal(2, code)
      assert.matches('no cassette for case "zero"', err)
      h.remove(dir)
    end)

    it("compares an agent file with sub-agents against the current one",
      function()
      local out, err, code = h.cli("--base-url http://127.0.0.1:9/v1 "
        .. "--db :memory: eval "
        .. "support --cases evals/support.jsonl --replay "
        .. "evals/cassettes/support --compare agents/support.lua current "
        .. "--json")
      assert.are.equal(0, code, err)
      local r = json.decode(out)
      assert.are.equal(1.0, r.a.pass_rate) -- classify & co. were found
      assert.are.equal(1.0, r.b.pass_rate)
      _, err, code = h.cli("--db :memory: eval 'x;rm' --cases "
        .. "evals/support.jsonl "
        .. "--compare agents/support.lua current")
      assert.are.equal(1, code)
      assert.matches("not an agent name", err)
    end)

    it("shows progress, and keeps the threads it names for inspection",
      function()
      -- the fixture project, with a model slow enough for progress lines
      local dir = h.tmpdir()
      local fixture = h.ROOT .. "/spec/fixtures/eval"
      h.sh("cp -r " .. h.q(fixture .. "/agents") .. " " .. h.q(fixture
        .. "/prompts") .. " " .. h.q(fixture .. "/spool.lua") .. " "
        .. h.q(fixture .. "/cases.jsonl") .. " " .. h.q(dir))
      h.write_files(dir, { ["mock.lua"] = h.slurp(fixture .. "/mock.lua")
        :gsub("return { rules", "return { latency_ms = 400, rules") })
      -- twelve old evaluations, and one that may still be running
      local evals = dir .. "/.spool/evals"
      h.sh("mkdir -p " .. h.q(evals))
      for i = 1, 12 do
        local name = string.format("%s/20000101-0000%02d-1.db", evals, i)
        h.sh("touch -d '2000-01-01' " .. h.q(name) .. " " .. h.q(name .. "-wal"))
      end
      h.sh("touch " .. h.q(evals .. "/20000101-000000-1.db"))
      -- (a writer in WAL mode writes the -wal, not the file)
      h.sh("touch -d '2000-01-01' " .. h.q(evals .. "/20000101-000001-2.db")
        .. " && touch " .. h.q(evals .. "/20000101-000001-2.db-wal"))
      local out, err, code = h.cli("--project " .. h.q(dir) .. " eval adder "
        .. "--cases " .. h.q(dir .. "/cases.jsonl") .. " --repeat 2 --concurrency 1")
      assert.are.equal(0, code, err)
      assert.matches("spool: eval: %d of 8 runs done, %d passed", err)
      -- the command the report gives shows the failed thread
      local db, thread = out:match("spool %-%-db (%S+) show (t_%w+)")
      assert.truthy(db, out)
      local shown, serr, scode = h.cli("--project " .. h.q(dir) .. " --db "
        .. h.q(db:sub(1, 1) == "/" and db or h.ROOT .. "/" .. db)
        .. " show " .. thread)
      assert.are.equal(0, scode, serr)
      assert.matches("status failed", shown)
      -- the ten newest stores stay (and one still being written); older
      -- ones go with their -wal files
      local left = h.sh("ls " .. h.q(evals))
      assert.matches("20000101%-000000%-1%.db\n", left)
      assert.not_matches("20000101%-000001%-1%.db", left)
      assert.not_matches("20000101%-000002%-1%.db", left)
      assert.matches("20000101%-000003%-1%.db\n20000101%-000003%-1%.db%-wal",
        left)
      assert.matches("20000101%-000001%-2%.db\n", left)
      assert.matches(db:match("[^/]+$"):gsub("%p", "%%%0"), left)
      -- a mistake in the command makes no store
      _, _, code = h.cli("--project " .. h.q(dir) .. " eval adder")
      assert.are.equal(2, code)
      local now = h.sh("ls " .. h.q(evals))
      for name in now:gmatch("[^\n]+") do
        assert.truthy(left:find(name, 1, true), name .. " is new")
      end
      h.remove(dir)
    end)

    it("names what is missing: a case file, a thread, a step", function()
      local _, err, code = h.cli(PROJECT .. "eval adder --cases "
        .. "/nonexistent/cases.jsonl")
      assert.are.equal(2, code)
      assert.matches("cannot read the cases: /nonexistent/cases.jsonl", err,
        1, true)
      _, err, code = h.cli(PROJECT .. "--db :memory: replay t_nosuchthread")
      assert.are.equal(2, code)
      assert.matches("unknown thread 't_nosuchthread'", err)
      _, err, code = h.cli(PROJECT .. "--db :memory: prompt adder --thread "
        .. "t_nosuchthread")
      assert.are.equal(2, code)
      assert.matches("t_nosuchthread", err)
    end)

    it("spool replay re-runs a thread through changed code", function()
      local dir = h.tmpdir()
      local db = "--db " .. h.q(dir .. "/t.db") .. " "
      local out, err, code = h.cli(PROJECT .. db .. "run adder --json "
        .. "--input '2 + 3'")
      assert.are.equal(0, code, err)
      local id = h.json_lines(out)[1].thread
      out, err, code = h.cli(PROJECT .. db .. "replay " .. id)
      assert.are.equal(0, code, err)
      assert.matches("same behaviour", out)
      h.write_files(dir, { ["adder.lua"] = [[
        local spool = require "spool"
        return spool.agent { prompt = "adder.md", mode = "json",
          max_steps = 1, tools = { finish = spool.done {
            params = { answer = "number" } } } }]] })
      out, err, code = h.cli(PROJECT .. db .. "replay " .. id
        .. " --agent-file " .. h.q(dir .. "/adder.lua") .. " --json")
      assert.are.equal(1, code, err)
      local r = json.decode(out)
      assert.is_false(r.same)
      assert.matches('^call 1: the recording called finish {"answer":"5"}, '
        .. "the new code made no more calls", r.divergence)
      assert.are.equal("failed", r.replayed.status)
      assert.matches('"calls":[]', out, 1, true) -- a list, even empty
      h.remove(dir)
    end)
  end)
end)
