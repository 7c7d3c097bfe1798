-- The spool command line, end to end: real processes, real HTTP to the
-- mock model (in a process of its own, or inside the CLI's engine).
local h = require "spec.support"
local json = require "spool.json"
local http = require "spool.base.http" -- the engine's: it reaches loopback

local BIN = h.q(h.BIN)
local BROKEN = h.q(h.ROOT .. "/spec/fixtures/broken")
local MOCKS = h.ROOT .. "/spec/fixtures/mocks/"

local spool = h.cli

local json_lines = h.json_lines

describe("spool (CLI)", function()
  describe("usage", function()
    it("prints help and versions", function()
      local out, _, code = spool("--help")
      assert.are.equal(0, code)
      assert.matches("usage: spool", out)
      out, _, code = spool("--version")
      assert.are.equal(0, code)
      assert.matches("^spool %d+%.%d+%.%d+ %(Lua 5%.4", out)
    end)

    it("answers --help after any command with that command's usage", function()
      for _, case in ipairs {
        { "run", "run AGENT" }, { "replay", "replay THREAD" },
        { "eval", "eval AGENT %-%-cases" }, { "threads", "threads %[%-%-status" },
        { "serve", "%-%-drain%-ms" }, { "token", "token %[%-%-token%-env" },
        { "resume", "resume ID" }, { "recover", "recover" },
      } do
        local out, err, code = spool(case[1] .. " --help")
        assert.are.equal(0, code, case[1] .. ": " .. err)
        assert.matches(case[2], out, 1, false)
        assert.not_matches("mock%-llm %[", out) -- only this command's lines
      end
    end)

    it("writes every line on stderr as JSON with --log-format json",
      function()
      local dir = h.tmpdir()
      finally(function() h.remove(dir) end)
      h.write_files(dir, { ["boom.lua"] = "error('boom')" })
      for _, args in ipairs { "--log-format json frobnicate",
          "--log-format json --bogus run x", "--bogus --log-format json",
          "--log-format json", "--log-format json run nosuch --input x",
          "--log-format json eval x", "--log-format json llm --provider nope hi",
          "--log-format json extract --schema /nx",
          "--log-format json --db :memory: show caf\xe9",
          "--log-format json lua " .. h.q(dir .. "/boom.lua") } do
        local _, err, code = spool(args)
        assert.are_not.equal(0, code, args)
        local lines = 0
        for line in err:gmatch("[^\n]+") do
          local v = json.decode(line)
          assert.is_table(v, args .. ": not JSON: " .. line)
          assert.are.equal("error", v.level)
          assert.matches("^%d+%-%d+%-%d+T", v.time)
          lines = lines + 1
        end
        assert.are.equal(1, lines, args)
      end
      local _, err = spool("--log-format json frobnicate")
      assert.matches("unknown command 'frobnicate'\nRun 'spool --help'",
        json.decode(err).msg, 1, true)
      -- a byte that is not UTF-8 (in a thread id here) still goes out
      _, err = spool("--log-format json --db :memory: show caf\xe9")
      assert.are.equal("unknown thread 'caf\u{FFFD}'", json.decode(err).msg)
    end)

    it("exits 2 for an unknown thread or agent, from every command",
      function()
      for _, args in ipairs { "run nosuch --input x", "prompt nosuch --input x",
          "eval nosuch --cases " .. h.q(h.ROOT .. "/evals/support.jsonl"),
          "resume t_nope --answer x", "show t_nope", "export t_nope",
          "cancel t_nope", "delete t_nope", "fork t_nope --at 1",
          "replay t_nope", "prompt classify --thread t_nope" } do
        local _, err, code = spool("--db :memory: " .. args)
        assert.are.equal(2, code, args .. ": " .. err)
        assert.matches("^spool: unknown %a+ '[%w_]+'", err)
      end
    end)

    it("refuses a spool.lua whose settings do not fit, naming the setting",
      function()
      local dir = h.tmpdir()
      finally(function() h.remove(dir) end)
      for _, case in ipairs {
        { "limits = { memory_mb = -1 }", "limits.memory_mb must be a positive" },
        { "api_keys = 'x'", "api_keys = { NAME = {" },
        { "http = { allow = 5 }", "http = { allow = {" },
        { "webhooks = { { url = 'http://127.0.0.1:9/h' } }",
          "webhooks%[1%] needs secret_env" },
        { "api_tokens = { ['bad name'] = 'X' }",
          "api_tokens.bad name must name an environment variable" },
        { "api_tokens = 5", "api_tokens = { name =" },
      } do
        h.write_files(dir, { ["spool.lua"] = "return { " .. case[1] .. " }" })
        local _, err, code = spool("--project " .. h.q(dir)
          .. " --db :memory: threads")
        assert.are.equal(1, code, case[1])
        assert.matches("^spool: spool.lua: " .. case[2], err)
      end
    end)

    it("exits 2 with a helpful message on misuse", function()
      for _, case in ipairs {
        { "", "usage: spool" },
        { "frobnicate", "unknown command 'frobnicate'" },
        { "--bogus run x", "unknown option '%-%-bogus'" },
        { "run", "run needs an agent name" },
        { "run classify", "run needs an input" },
        { "run classify --input", "%-%-input needs a value" },
        { "run classify extra words --input x", "unexpected argument 'extra'" },
        { "run classify --input x --frob", "unknown option '%-%-frob'" },
        { "mock-llm --port 70000", "%-%-port needs a number" },
        { "--mock maybe run classify --input x", "option 'mock' is" },
        { "run nosuch --input x", "unknown agent 'nosuch': there is no "
          .. "agents/nosuch.lua" },
        { "run ../etc/passwd --input x", "invalid agent name" },
        { "--project /nonexistent run classify --input x",
          "project folder '/nonexistent'" },
      } do
        local _, err, code = spool(case[1])
        assert.are.equal(case[1] == "--project /nonexistent run classify --input x"
          and 1 or 2, code, case[1])
        assert.matches(case[2], err, 1, false)
      end
    end)
  end)

  describe("run", function()
    it("runs the demo pipeline on the built-in mock model", function()
      local dir = h.copy_project()
      local out, err, code = spool("--project " .. h.q(dir) .. " run support "
        .. "--input 'Hi, this is Ana. My order 5531 arrived broken.'")
      assert.are.equal(0, code, err)
      assert.matches("support ▸", out, 1, true)
      assert.matches("classify → classify", out, 1, true)
      assert.matches("lookup ← get_order", out, 1, true)
      assert.matches("refund → issue_refund", out, 1, true)
      assert.matches("support ✓ Dear Ana,", out, 1, true)
      local ledger = io.open(dir .. "/out/refunds.jsonl"):read("a")
      assert.matches('"order_id":"5531"', ledger, 1, true)
      h.sh("rm -rf " .. h.q(dir))
    end)

    it("prints events as JSON lines with --json", function()
      local out, _, code = spool("run classify --json --input 'Order 5531 "
        .. "arrived broken, refund please'")
      assert.are.equal(0, code)
      local events = json_lines(out)
      assert.are.same({ "input", "model_call", "intent", "done" },
        { events[1].type, events[2].type, events[3].type, events[4].type })
      for i, ev in ipairs(events) do
        assert.are.equal(i, ev.seq)
        assert.are.equal(events[1].thread, ev.thread)
        assert.are.equal(12, #ev.v)
      end
      assert.are.equal("5531", events[4].data.result.order_id)
    end)

    it("reads the input from stdin with -", function()
      local out, _, code = spool("run classify --json -", "Do you sell tea?")
      assert.are.equal(0, code)
      assert.are.equal("Do you sell tea?", json_lines(out)[1].data.input)
    end)

    it("talks to any OpenAI-compatible server given --base-url", function()
      local mock = h.mock_process(h.ROOT .. "/mock/support.lua")
      local out, err, code = spool("--base-url " .. mock.url .. " --model "
        .. "test-model run classify --json --input 'refund order 5531'")
      mock.stop()
      assert.are.equal(0, code, err)
      assert.are.equal("test-model", json_lines(out)[2].data.model)
    end)

    it("never writes the API key to events, logs or errors", function()
      local secret = "sk-test-" .. h.spool.sha256("secret"):sub(1, 24)
      local mock = h.mock_process(h.ROOT .. "/mock/support.lua")
      local out, err, code = spool("--base-url " .. mock.url .. " --log debug "
        .. "run support --json --input 'order 5531 arrived broken'",
        nil, "OPENAI_API_KEY=" .. secret)
      mock.stop()
      assert.are.equal(0, code, err)
      local out2, err2 = spool("--base-url http://127.0.0.1:1/v1 --log debug "
        .. "run classify --input x", nil, "OPENAI_API_KEY=" .. secret)
      for _, text in ipairs { out, err, out2, err2 } do
        assert.is_nil(text:find(secret, 1, true))
      end
    end)

    it("feeds arguments that are not JSON back to the model", function()
      local mock = h.mock_process(MOCKS .. "garbage_args.lua")
      local out, _, code = spool("--base-url " .. mock.url .. " run classify "
        .. "--json --input 'refund please'")
      mock.stop()
      assert.are.equal(0, code)
      local events = json_lines(out)
      assert.are.equal("error", events[3].type)
      assert.matches("^the arguments of 'classify' are not valid JSON "
        .. "%(line 1, column 14 %(byte 13%): unexpected .@.", events[3].data.error)
      -- The second reply is repaired, and the repairs are recorded.
      assert.are.equal("intent", events[5].type)
      assert.are.equal("broken mugs", events[5].data.args.summary)
      assert.is_true(#events[5].data.repairs >= 3)
      assert.are.equal("done", events[#events].type)
    end)

    it("says so when a streamed reply broke off and comes again", function()
      local mock = h.mock_process(MOCKS .. "broken_stream.lua")
      local out, err, code = spool("--base-url " .. mock.url .. " run classify "
        .. "--stream --input 'a question'")
      mock.stop()
      assert.are.equal(0, code, err)
      assert.matches("hello the[^\n]*\n[^\n]*↺ the reply broke off; again, "
        .. "from the start:\n", out)
    end)

    it("exits 1 and names the problem when the model fails", function()
      local mock = h.mock_process(MOCKS .. "http500.lua")
      local out, _, code = spool("--base-url " .. mock.url .. " run classify "
        .. "--input x")
      mock.stop()
      assert.are.equal(1, code)
      assert.matches("model call failed: openai returned HTTP 500: upstream "
        .. "exploded", out, 1, true)
      out, _, code = spool("--base-url http://127.0.0.1:1/v1 run classify "
        .. "--input x")
      assert.are.equal(1, code)
      assert.matches("cannot reach openai at http://127.0.0.1:1/v1", out,
        1, true)
    end)

    it("reports broken agents with their file and line", function()
      for _, case in ipairs {
        { "syntax", "agents/syntax.lua:4: '}' expected" },
        { "noreturn", "agents/noreturn.lua must return spool.agent{...}" },
        { "global", "agents cannot create globals: assigning 'helper'" },
        { "typo", "unknown field 'max_stpes'" },
        { "noprompt", "prompt 'missing.md' cannot be read" },
        { "escape", "require 'io' is not allowed in an agent" },
      } do
        local _, err, code = spool("--project " .. BROKEN .. " run " .. case[1]
          .. " --input x")
        assert.are.equal(1, code, case[1])
        assert.matches(case[2], err, 1, true)
      end
    end)

    it("refuses an agent whose prompt uses an undefined name", function()
      local out, err, code = spool("--project " .. BROKEN .. " run badvar "
        .. "--input x")
      assert.are.equal(1, code)
      assert.are.equal("", out) -- checked at load: no thread was started
      assert.matches("prompts/typo.md:1: 'nmae' is not defined", err, 1, true)
    end)
  end)

  describe("prompt", function()
    it("prints exactly the body the first step sends", function()
      local dir = h.tmpdir()
      local record = dir .. "/requests"
      local mock = h.mock_process(MOCKS .. "record.lua", nil,
        "SPOOL_RECORD=" .. h.q(record))
      local _, err, code = spool("--base-url " .. mock.url .. " run reply "
        .. "--input 'hello'")
      mock.stop()
      assert.are.equal(0, code, err)
      local sent = io.open(record):read("l")
      local printed = spool("--base-url " .. mock.url .. " prompt reply "
        .. "--input 'hello'")
      assert.are.equal(sent, (printed:gsub("\n$", "")))
      h.sh("rm -rf " .. h.q(dir))
    end)

    it("shows the rendered system prompt and the tools", function()
      local out, _, code = spool("prompt classify --input 'hi'")
      assert.are.equal(0, code)
      local body = json.decode(out)
      assert.are.equal("system", body.messages[1].role)
      assert.matches("^You sort incoming customer messages",
        body.messages[1].content)
      assert.are.equal("classify", body.tools[1]["function"].name)
    end)
  end)

  describe("extract", function()
    it("prints the value, with the repairs on stderr", function()
      local out, err, code = spool("extract", 'Here:\n```json\n{name: '
        .. '"Ana", tags: [a, b,],}\n```')
      assert.are.equal(0, code)
      assert.are.equal('{"name":"Ana","tags":["a","b"]}\n', out)
      assert.matches("repaired: line 3, column 2: quoted the key 'name'", err,
        1, true)
    end)

    it("prints one object with --json, and checks a schema", function()
      local dir = h.tmpdir()
      local f = io.open(dir .. "/s.json", "w")
      f:write('{"type": "object", "required": ["n"], "properties": '
        .. '{"n": {"type": "integer"}}}')
      f:close()
      local out, _, code = spool("extract --json --schema " .. h.q(dir
        .. "/s.json"), '{"n": "7"} and {"x": 1}')
      assert.are.equal(0, code)
      local doc = json.decode(out)
      assert.are.same({ n = 7 }, doc.value)
      assert.are.same({ 'value.n: read the string "7" as the number 7' },
        doc.repairs)
      local err
      out, err, code = spool("extract --schema " .. h.q(dir .. "/s.json"),
        '{"x": 1}')
      assert.are.equal(1, code)
      assert.matches("value.n: is required", err, 1, true)
      h.remove(dir)
    end)

    it("opens no store: it neither creates nor locks one", function()
      local dir = h.tmpdir()
      local out, _, code = spool("--project " .. h.q(dir) .. " extract",
        '{"a": 1,}')
      assert.are.equal(0, code)
      assert.are.equal('{"a":1}\n', out)
      local listing = h.sh("ls -A " .. h.q(dir))
      assert.are.equal("", listing)
      h.remove(dir)
    end)

    it("exits 1 with a position and reason when there is no JSON", function()
      local _, err, code = spool("extract", "I cannot help with that.")
      assert.are.equal(1, code)
      assert.matches("spool: line 1, column 1 %(byte 0%): no JSON value", err)
      _, err, code = spool("extract", '{"a": @}')
      assert.are.equal(1, code)
      assert.matches("unexpected '@', expected a value", err, 1, true)
    end)
  end)

  describe("mock-llm", function()
    it("serves an OpenAI-compatible API and stops on SIGTERM", function()
      local empty = h.tmpdir() -- a project with no mock script: echo
      local mock = h.mock_process(nil, nil, "SPOOL_PROJECT=" .. h.q(empty))
      local res = assert(http.get(mock.url .. "/models"))
      assert.are.equal(200, res.status)
      assert.are.equal("mock-1", json.decode(res.body).data[1].id)
      res = assert(http.post_json(mock.url .. "/chat/completions", {
        model = "m", messages = { { role = "user", content = "ping" } } }))
      assert.are.equal(200, res.status)
      local reply = json.decode(res.body)
      assert.are.equal("(mock) ping", reply.choices[1].message.content)
      res = assert(http.get(mock.url:gsub("/v1$", "") .. "/nope"))
      assert.are.equal(404, res.status)
      local _, code = h.sh("kill -TERM " .. mock.pid .. "; for i in $(seq 100); "
        .. "do kill -0 " .. mock.pid .. " 2>/dev/null || exit 0; sleep 0.05; "
        .. "done; exit 1")
      assert.are.equal(0, code)
      mock.stop()
      h.sh("rm -rf " .. h.q(empty))
    end)
  end)
end)
