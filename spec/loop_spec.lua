-- spool.loop: the default loop, against the mock model over real HTTP.
local h = require "spec.support"
local runner = require "spool.run.runner"
local spool = require "spool"
local json = spool.json

local scripted = h.scripted

local add = {
  description = "Add two numbers.",
  params = { a = "number", b = "number" },
  run = function(args) return args.a + args.b end,
}

describe("spool.loop", function()
  local mock

  after_each(function()
    if mock then
      mock.close()
      mock = nil
    end
  end)

  it("runs a tool call, then takes plain text as the final answer", function()
    local seen
    mock, seen = scripted {
      { tool = "add", args = { a = 2, b = 3 } },
      { text = "The sum is 5." },
    }
    local a = h.agent({ tools = { add = add } }, mock)
    local t = h.run(a, "what is 2 + 3?")
    assert.are.same({ "input", "model_call", "intent", "tool_result",
                      "model_call", "done" }, h.types(t))
    assert.are.equal("The sum is 5.", t:outcome())
    assert.are.equal(5, t.events[4].data.result)
    assert.are.equal("integer", math.type(t.events[4].data.result))
    -- The second request carried the call and its answer, paired.
    local msgs = seen[2].body.messages
    assert.are.equal("assistant", msgs[3].role)
    assert.are.equal("tool", msgs[4].role)
    assert.are.equal(msgs[3].tool_calls[1].id, msgs[4].tool_call_id)
    assert.are.equal("5", msgs[4].content)
  end)

  it("never runs a tool on arguments a reply cut off at its length limit",
    function()
      local sent = {}
      local send_email = {
        description = "Send an email.",
        params = { to = "string", body = "string" },
        run = function(args) sent[#sent + 1] = args return "sent" end,
      }
      local seen
      mock, seen = scripted {
        { tool_calls = {
          { name = "send_email", args = { to = "bo@example.com",
                                          body = "Hello Bo." } },
          { name = "send_email", args = '{"to": "ana@example.com", "body": '
            .. '"Dear Ana, your refund of 29 EUR will not' } },
          finish_reason = "length" },
        { text = "I will write less." },
      }
      local a = h.agent({ tools = { send_email = send_email } }, mock)
      local t = h.run(a, "write to Ana and Bo")
      assert.are.same({}, sent) -- not even the complete first call
      assert.are.same({ "input", "model_call", "error", "error",
                        "model_call", "done" }, h.types(t))
      for _, e in ipairs(h.errors(t)) do
        assert.matches("^your reply was cut off at its length limit "
          .. "%(max_tokens%) before it was complete, so this call did not "
          .. "run", e)
      end
      -- Every call id was answered, as the provider requires.
      local msgs = seen[2].body.messages
      assert.are.equal(msgs[3].tool_calls[1].id, msgs[4].tool_call_id)
      assert.are.equal(msgs[3].tool_calls[2].id, msgs[5].tool_call_id)
    end)

  it("takes no cut-off JSON as arguments or as an answer, whatever the "
    .. "finish reason says", function()
      local ran = 0
      mock = scripted {
        { tool = "add", args = '{"a": 1, "b": 2' }, -- a closing brace short
        { text = '{"verdict": "appro' },            -- a cut-off answer
        { text = "Answered in full, but not the right shape." },
        { json = { verdict = "approved" } },
      }
      local a = h.agent({ tools = { add = { params = { a = "number",
        b = "number" }, run = function() ran = ran + 1 return 3 end } },
        output = { verdict = "string" }, max_errors = 5 }, mock)
      local t = h.run(a, "go")
      assert.are.equal(0, ran)
      assert.are.equal("done", t:status())
      assert.are.same({ verdict = "approved" }, t:outcome())
      local errors = h.errors(t)
      assert.matches("the arguments of 'add' are not valid JSON %(it ends "
        .. "before it is complete", errors[1])
      assert.matches("%(it ends before it is complete, as if cut off%)",
        errors[2])
    end)

  it("takes no text cut off at the length limit as the final answer",
    function()
      mock = scripted {
        { text = "The refund policy says that", finish_reason = "length" },
        { text = "Refunds within 30 days." },
      }
      local a = h.agent({}, mock)
      local t = h.run(a, "policy?")
      assert.are.equal("Refunds within 30 days.", t:outcome())
      assert.matches("cut off at its length limit .* not taken as your "
        .. "answer", h.errors(t)[1])
    end)

  it("fails the call whose compare-and-set lost, and the thread goes on",
    function()
      local seen
      mock, seen = scripted {
        function(conv)
          return { tool = "bump", args = { wait_ms = tonumber(conv.user) } }
        end,
        function(conv)
          return { text = conv.tool_results[1].content }
        end,
      }
      local ns = "counters_" .. require("spool.core").random_id()
      -- (third run: `read` says the handler has read, and it waits for
      -- `written` before it writes)
      local third, read, written = false, false, false
      local bump = {
        params = { wait_ms = "integer" },
        run = function(args)
          local value, version = spool.state.get(ns, "n")
          read = true
          for _ = 1, 2000 do
            if not third or written then
              break
            end
            spool.sleep(5)
          end
          local ok, err = spool.state.put(ns, "n", (value or 0) + 1,
            { if_version = version or 0 })
          if not ok then
            return "conflict seen by the handler: " .. err
          end
          spool.sleep(args.wait_ms) -- the other run commits meanwhile
          return "bumped"
        end,
      }
      local a = h.agent({ tools = { bump = bump } }, mock)
      local slow = runner.start(a, "200")
      local fast = runner.start(a, "0")
      h.wait_run(slow)
      h.wait_run(fast)
      assert.are.equal("done", fast:status())
      assert.are.equal("bumped", fast:outcome())
      -- The slow one's write lost at its commit: its call failed, the
      -- model was told, and the thread ended normally.
      assert.are.equal("done", slow:status())
      assert.matches("^error: this call failed: nothing it wrote was stored: "
        .. "the state " .. ns .. "/n is at version 1, not 0", slow:outcome())
      assert.are.equal(1, (spool.state.get(ns, "n")))
      assert.is_false(runner.is_live(slow.id))
      -- A third run sees the conflict in its handler: someone wrote
      -- between its read and its write.
      third, read = true, false
      local t = runner.start(a, "0")
      h.wait_for(function() return read end, 10000, "the handler's read")
      assert(spool.state.put(ns, "n", 99)) -- outside a run: stored now
      written = true
      h.wait_run(t)
      assert.are.equal("conflict seen by the handler: ECONFLICT: state " .. ns
        .. "/n is at version 2, not 1", t:outcome())
      assert.is_true(#seen >= 6)
    end)

  it("tells the model a table a handler raised or returned, as JSON",
    function()
      mock = scripted {
        { tool_calls = { { name = "raises", args = {} },
                         { name = "returns", args = {} } } },
        { text = "noted" },
      }
      local a = h.agent({ tools = {
        raises = { side_effects = false, run = function()
          error({ code = "E42", detail = "no stock" })
        end },
        returns = { side_effects = false, run = function()
          return nil, { code = "E43" }
        end },
      } }, mock)
      local t = h.run(a, "go")
      assert.are.same({ '{"code":"E42","detail":"no stock"}', '{"code":"E43"}' },
        h.errors(t))
    end)

  it("records and budgets the model calls an agent's own step makes",
    function()
      mock = h.mock { rules = { { reply = { text = "an answer",
        usage = { prompt_tokens = 100, completion_tokens = 20 } } } } }
      local a = h.agent({ budget = { tokens = 500 }, max_steps = 50,
        step = function(thread, agent)
          for _ = 1, 2 do
            assert(spool.llm.chat { model = spool.loop.model_for(agent),
              messages = { { role = "user", content = "hi" } } })
          end
        end }, mock)
      local t = h.run(a, "go")
      local calls = 0
      for _, ev in ipairs(t.events) do
        calls = calls + (ev.type == "llm_call" and 1 or 0)
      end
      -- 120 tokens a call: the budget of 500 ends it after the 3rd step.
      assert.are.equal("failed", t:status())
      assert.matches("the token budget %(500%) is spent", select(2,
        t:outcome()))
      assert.are.equal(6, calls)
      assert.are.equal(600, t:usage().input_tokens)
    end)

  it("cancels the sub-agents a cancelled thread has running", function()
    mock = h.mock { latency_ms = 100, rules = { { reply = function(conv)
      if conv.system:match("parent") then
        return conv.turns == 0 and { tool = "delegate", args = {} }
          or { text = "parent done" }
      end
      return conv.turns < 50 and { tool = "work", args = {} }
        or { text = "child done" }
    end } } }
    local child = h.agent({ system = "You are the child.", max_steps = 60,
      tools = { work = { side_effects = false,
                         run = function() return "worked" end } } }, mock)
    local parent = h.agent({ system = "You are the parent.", tools = {
      delegate = { side_effects = false, run = function(_, ctx)
        return spool.call(ctx.thread, child.name, "go")
      end } } }, mock)
    local t = runner.start(parent, "go")
    local child_id = h.wait_for(function()
      local ev = t.events[#t.events]
      return ev and ev.type == "agent_call" and ev.data.thread
    end, 10000, "the sub-agent to start")
    h.wait_for(function() return runner.is_live(child_id) end)
    assert(runner.cancel(t.id, "stop it"))
    h.wait_run(t)
    assert.are.equal("cancelled", t:status())
    local c = require("spool.run.thread").from_record(
      assert(require("spool.run.store").load(child_id)))
    assert.are.equal("cancelled", c:status())
    h.settle_mock(mock)
  end)

  it("talks to a local model over one connection of its own, closed when "
    .. "the run ends", function()
    mock = scripted {
      { tool = "add", args = { a = 1, b = 1 } },
      { tool = "add", args = { a = 2, b = 2 } },
      { text = "done" },
    }
    local a = h.agent({ tools = { add = add } }, mock)
    local first = runner.start(a, "one")
    local second = runner.start(a, "two")
    h.wait_run(first)
    h.wait_run(second)
    assert.are.equal(6, mock.stats().requests)
    -- each run reused its own connection; none stays open after it
    h.wait_for(function() return mock.connections() == 0 end, 5000,
      "the runs' connections to close")
  end)

  it("runs several tool calls in order and answers every call id", function()
    local seen
    mock, seen = scripted {
      { tool_calls = { { name = "add", args = { a = 1, b = 1 } },
                       { name = "add", args = { a = 2, b = 2 } },
                       { name = "add", args = { a = 3, b = 3 } } } },
      { text = "2, 4 and 6" },
    }
    local t = h.run(h.agent({ tools = { add = add } }, mock), "add pairs")
    assert.are.equal("done", t:status())
    local msgs = seen[2].body.messages
    local calls = msgs[3].tool_calls
    assert.are.equal(3, #calls)
    for i = 1, 3 do
      assert.are.equal(calls[i].id, msgs[3 + i].tool_call_id)
      assert.are.equal(tostring(2 * i), msgs[3 + i].content)
    end
  end)

  it("answers a made-up tool with an error the model can act on", function()
    local seen
    mock, seen = scripted {
      { tool = "multiply", args = { a = 2, b = 3 } },
      { tool = "add", args = { a = 2, b = 3 } },
      { text = "5" },
    }
    local t = h.run(h.agent({ tools = { add = add } }, mock), "2 + 3")
    assert.are.equal("done", t:status())
    assert.are.equal("error", t.events[3].type)
    assert.are.equal("unknown tool 'multiply'; the tools are: add",
      t.events[3].data.error)
    local answer = seen[2].body.messages[4]
    assert.are.equal("tool", answer.role)
    assert.matches("^error: unknown tool 'multiply'", answer.content)
  end)

  it("repairs malformed arguments and records each repair", function()
    mock = scripted {
      { tool_calls = { { name = "add", args = "{a: 2, b: 3,}" } } },
      { text = "5" },
    }
    local t = h.run(h.agent({ tools = { add = add } }, mock), "2 + 3")
    assert.are.same({ "input", "model_call", "intent", "tool_result",
                      "model_call", "done" }, h.types(t))
    local repairs = t.events[3].data.repairs
    assert.are.equal("line 1, column 2: quoted the key 'a'", repairs[1])
    assert.are.equal("line 1, column 8: quoted the key 'b'", repairs[2])
    assert.are.equal(3, #repairs) -- and the trailing comma
    assert.are.equal(5, t.events[4].data.result)
  end)

  it("coerces arguments only where that is unambiguous, saying so", function()
    mock = scripted {
      { tool = "add", args = { a = "2", b = 3 } },
      { tool = "add", args = { a = "two", b = 3 } },
      { text = "done" },
    }
    local t = h.run(h.agent({ tools = { add = add } }, mock), "2 + 3")
    assert.are.same({ 'add.a: read the string "2" as the number 2' },
      t.events[3].data.repairs)
    assert.are.equal("add.a: expected number, got string",
      t.events[6].data.error)
  end)

  it("reports what it cannot repair, with position and reason", function()
    mock = scripted {
      { tool_calls = { { name = "add", args = "{\"a\": 2 @}" } } },
      { tool = "add", args = { a = 2, b = 3, c = 4 } },
      { tool = "add", args = { a = 2, b = 3 } },
      { text = "5" },
    }
    local t = h.run(h.agent({ tools = { add = add } }, mock), "2 + 3")
    assert.are.equal("done", t:status())
    local errors = {}
    for ev in t:each("error") do
      errors[#errors + 1] = ev.data.error
    end
    assert.are.same({
      "the arguments of 'add' are not valid JSON (line 1, column 9 (byte "
        .. "8): expected ',' or '}' after an object member, found '@')",
      "add.c: is not a known parameter",
    }, errors)
  end)

  it("reads strictly when the agent says lenient = false", function()
    mock = scripted {
      { tool_calls = { { name = "add", args = "{a: 2, b: 3}" } } },
      { tool = "add", args = { a = "2", b = 3 } },
      { tool = "add", args = { a = 2, b = 3 } },
      { text = "5" },
    }
    local t = h.run(h.agent({ lenient = false, max_errors = 3,
      tools = { add = add } }, mock), "2 + 3")
    assert.are.equal("done", t:status())
    local errors = {}
    for ev in t:each("error") do
      errors[#errors + 1] = ev.data.error
    end
    assert.matches("^the arguments of 'add' are not valid JSON %(line 1, "
      .. "column 2 %(byte 1%): expected a string key", errors[1])
    assert.are.equal("add.a: expected number, got string", errors[2])
  end)

  it("asks a person after max_errors failed steps when it may escalate",
    function()
    local seen
    mock, seen = scripted {
      { tool = "nope", args = {} }, { tool = "nope", args = {} },
      { tool = "add", args = { a = 1, b = 1 } }, { text = "2" },
    }
    local agent = h.agent({ max_errors = 2, escalate = true,
      tools = { add = add } }, mock)
    local t = h.run(agent, "x")
    assert.are.equal("waiting", t:status())
    local req = t:pending_request().data
    assert.is_true(req.escalation)
    assert.matches("^2 steps in a row failed: unknown tool 'nope'",
      req.question)
    local resumed = require("spool.run.runner").resume(t.id,
      { answer = "use the add tool" })
    h.wait_run(resumed)
    assert.are.equal("2", resumed:outcome())
    local last = seen[#seen].body.messages
    assert.are.equal("A person answered: use the add tool",
      last[#last - 2].content)
  end)

  it("feeds a handler's error back without file names", function()
    local seen
    mock, seen = scripted {
      { tool = "boom", args = {} },
      { text = "sorry" },
    }
    local a = h.agent({ tools = { boom = {
      run = function() error("the warehouse is closed") end } } }, mock)
    local t = h.run(a, "x")
    local ev = t.events[4]
    assert.are.equal("error", ev.type)
    assert.are.equal("the warehouse is closed", ev.data.error)
    assert.matches("spec/loop_spec.lua:%d+", ev.data.where)
    assert.are.equal("error: the warehouse is closed",
      seen[2].body.messages[4].content)
  end)

  it("treats a handler's nil, err as an error", function()
    mock = scripted { { tool = "find", args = {} }, { text = "none" } }
    local a = h.agent({ tools = { find = {
      run = function() return nil, "no such order" end } } }, mock)
    local t = h.run(a, "x")
    assert.are.equal("no such order", t.events[4].data.error)
  end)

  it("rejects a handler result that JSON cannot hold", function()
    mock = scripted { { tool = "f", args = {} }, { text = "ok" } }
    local a = h.agent({ tools = { f = { run = function() return print end } } },
      mock)
    local t = h.run(a, "x")
    assert.matches("^tool 'f' returned a value JSON cannot hold",
      t.events[4].data.error)
  end)

  it("ends on a terminal intent, with its arguments as the result", function()
    mock = scripted { { tool = "finish", args = { verdict = "ok", score = 7 } } }
    local a = h.agent({ tools = { finish = spool.done {
      params = { verdict = "string", score = "integer" } } } }, mock)
    local t = h.run(a, "x")
    assert.are.equal("done", t:status())
    assert.are.same({ verdict = "ok", score = 7 }, t:outcome())
  end)

  it("takes spool.done's answer as the result", function()
    mock = scripted { { tool = "done", args = { answer = "42" } } }
    local t = h.run(h.agent({ tools = { done = spool.done } }, mock), "x")
    assert.are.equal("42", t:outcome())
  end)

  it("fails at max_steps, naming the limit", function()
    mock = scripted { { tool = "add", args = { a = 1, b = 1 } },
                      { tool = "add", args = { a = 1, b = 1 } } }
    local t = h.run(h.agent({ max_steps = 2, tools = { add = add } }, mock), "x")
    assert.are.equal("failed", t:status())
    assert.are.equal("max_steps (2) reached without a final answer",
      select(2, t:outcome()))
  end)

  it("lets on_max_steps give a final answer instead", function()
    mock = scripted { { tool = "add", args = { a = 1, b = 1 } } }
    local t = h.run(h.agent({
      max_steps = 1, tools = { add = add },
      on_max_steps = function(thread)
        return "partial: " .. thread.events[4].data.result
      end,
    }, mock), "x")
    assert.are.equal("done", t:status())
    assert.are.equal("partial: 2", t:outcome())
  end)

  it("fails after max_errors steps in a row fail, listing them", function()
    mock = scripted { { tool = "nope", args = {} }, { tool = "nope", args = {} },
                      { tool = "nope", args = {} } }
    local t = h.run(h.agent({ tools = { add = add } }, mock), "x")
    assert.are.equal("failed", t:status())
    assert.matches("^3 steps in a row failed: unknown tool 'nope'",
      select(2, t:outcome()))
  end)

  it("resets the error count after a step that succeeds", function()
    mock = scripted {
      { tool = "nope", args = {} }, { tool = "nope", args = {} },
      { tool = "add", args = { a = 1, b = 1 } },
      { tool = "nope", args = {} }, { tool = "nope", args = {} },
      { text = "done" },
    }
    local t = h.run(h.agent({ tools = { add = add } }, mock), "x")
    assert.are.equal("done", t:status())
  end)

  it("checks a final answer against the output schema and re-asks", function()
    local seen
    mock, seen = scripted {
      { text = "the total is 5" },
      { text = 'Here you go:\n```json\n{"total": "five"}\n```' },
      { text = 'Sure! {"total": "5",}' },
    }
    local t = h.run(h.agent({ output = { total = "number" } }, mock), "x")
    assert.are.equal("done", t:status())
    assert.are.same({ total = 5 }, t:outcome())
    assert.matches("^error: the answer must be JSON matching the output "
      .. "schema", seen[2].body.messages[4].content)
    assert.matches("output.total: expected number, got string",
      seen[3].body.messages[6].content)
    local done = t.events[#t.events].data
    assert.are.same({ "line 1, column 20: removed a trailing comma",
      'output.total: read the string "5" as the number 5' }, done.repairs)
  end)

  it("routes intents given as JSON text in json mode", function()
    local seen
    mock, seen = scripted {
      { json = { intent = "add", a = 4, b = 5 } },
      { json = { intent = "finish", answer = "9" } },
    }
    local t = h.run(h.agent({ mode = "json", tools = {
      add = add, finish = spool.done } }, mock), "4 + 5")
    assert.are.equal("9", t:outcome())
    assert.are.same({ type = "json_object" }, seen[1].body.response_format)
    assert.is_nil(seen[1].body.tools)
    assert.are.equal("Result of add: 9", seen[2].body.messages[4].content)
  end)

  it("fails with the provider's message on an HTTP error", function()
    mock = scripted { { status = 500, error = "the model is on fire" } }
    local t = h.run(h.agent({}, mock), "x")
    assert.are.equal("failed", t:status())
    assert.are.equal("model call failed: openai returned HTTP 500: the model "
      .. "is on fire (after 3 attempts)", select(2, t:outcome()))
  end)

  it("records a model call's attempts only when there was more than the "
    .. "first", function()
    mock = scripted { { text = "at once" } }
    local t = h.run(h.agent({}, mock), "x")
    assert.are.equal("model_call", t.events[2].type)
    assert.is_nil(t.events[2].data.attempts)
    mock.close()
    local tries = 0
    mock = scripted { function()
      tries = tries + 1
      if tries == 1 then
        return { status = 500, error = "hiccup" }
      end
      return { text = "second time" }
    end }
    t = h.run(h.agent({}, mock), "x")
    assert.are.equal("second time", t:outcome())
    local attempts = t.events[2].data.attempts
    assert.are.equal(2, #attempts)
    assert.are.equal(500, attempts[1].status)
    assert.are.equal(200, attempts[2].status)
  end)

  it("fails clearly on a malformed reply body", function()
    mock = scripted { { body = "<html>502 Bad Gateway</html>" } }
    local t = h.run(h.agent({}, mock), "x")
    assert.matches("^model call failed: malformed reply from openai: the "
      .. "response is not JSON", select(2, t:outcome()))
  end)

  it("fails clearly when the endpoint is unreachable", function()
    local t = h.run(h.agent({}, "http://127.0.0.1:1/v1"), "x")
    assert.are.equal("failed", t:status())
    assert.matches("^model call failed: cannot reach openai at "
      .. "http://127.0.0.1:1/v1/chat/completions: ECONNECT",
      select(2, t:outcome()))
  end)

  it("turns an error in agent code into the thread's failure", function()
    mock = scripted { { text = "hi" } }
    local t = h.run(h.agent({ context = function() error("bad context") end },
      mock), "x")
    assert.are.equal("failed", t:status())
    assert.matches("^agent error: .*bad context", select(2, t:outcome()))
  end)

  it("never executes what the model says", function()
    mock = scripted {
      { tool = "os.execute", args = { cmd = "touch /tmp/spool-pwned" } },
      { text = "os.exit(1)" },
    }
    local t = h.run(h.agent({ tools = { add = add } }, mock), "x")
    assert.are.equal("done", t:status())
    assert.are.equal("os.exit(1)", t:outcome())
    assert.is_nil(io.open("/tmp/spool-pwned"))
  end)
end)
