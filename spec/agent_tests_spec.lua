-- spool.test, as a team uses it: specs of its own agents in its own
-- project, run by `spool test` on a scripted model. Each test here writes
-- such a spec into a copy of the demo project and runs it there, through
-- the CLI, with nothing but the public module.
local h = require "spec.support"

local BIN = h.BIN:sub(1, 1) == "/" and h.BIN or (h.ROOT .. "/" .. h.BIN)

local function spool_test(files, env)
  local dir = h.copy_project()
  finally(function() h.remove(dir) end)
  h.write_files(dir, files)
  local names = {}
  for rel in pairs(files) do
    if rel:match("_spec%.lua$") then
      names[#names + 1] = h.q(rel)
    end
  end
  table.sort(names)
  local out, code = h.sh(string.format("cd %s && %s timeout 120 %s test -o "
    .. "plainTerminal %s 2>&1", h.q(dir), env or "", h.q(BIN),
    table.concat(names, " ")))
  return out, code, dir
end

describe("spool.test", function()
  it("runs a project's agent on a scripted model, through an approval",
    function()
    local out, code, dir = spool_test { ["spec/refund_spec.lua"] = [=[
local test = require "spool.test"

describe("refund", function()
  it("asks a person before a large refund, then issues it", function()
    local model = test.model {
      { tool = "issue_refund", args = { order_id = "5533", amount = 53.7,
                                        reason = "broken" } },
      "Refunded 53.70 EUR.",
    }
    local run = test.run("refund", "Order 5533 arrived broken")
    assert.are.equal("waiting", run.status)
    assert.are.equal("approval", run.request.kind)
    assert.are.equal("issue_refund", run.request.name)
    assert.are.equal(53.7, run.request.args.amount)
    assert.are.equal(1, #model.requests)
    assert.matches("Order 5533", model.requests[1].last_user)

    run = test.answer(run, { approve = true })
    assert.are.equal("done", run.status)
    assert.are.equal("Refunded 53.70 EUR.", run.result)
    assert.are.same({ { order_id = "5533", amount = 53.7,
                        reason = "broken" } }, run:calls("issue_refund"))
    assert.are.same({}, run:errors())
    assert.are.equal(2, #model.requests)
    assert.are.equal("issue_refund",
      model.requests[2].tool_results[1].name)
    assert.is_true(run.usage.input_tokens > 0)
  end)

  it("tells the model a rejected refund was rejected", function()
    local model = test.model {
      { tool = "issue_refund", args = { order_id = "5533", amount = 53.7,
                                        reason = "broken" } },
      function(conv)
        return "Not refunded: " .. conv.tool_results[1].content
      end,
    }
    local run = test.answer(test.run("refund", "Order 5533, refund it"),
      { reject = true, reason = "ask for a photo first" })
    assert.are.equal("done", run.status)
    assert.matches("ask for a photo first", run.result)
    assert.are.same({ "input", "model_call", "intent", "human_request",
                      "human_response", "tool_result", "model_call", "done" },
                    run:types())
    assert.are.equal(2, #model.requests)
  end)

  it("refunds a small amount without asking", function()
    test.model {
      { tool = "issue_refund", args = { order_id = "5531", amount = 29,
                                        reason = "broken" } },
      "Done.",
    }
    local run = test.run("refund", "Order 5531 arrived broken")
    assert.are.equal("done", run.status)
    assert.is_nil(run.request)
  end)

  it("fails a run that needs more replies than the script has", function()
    test.model { { tool = "issue_refund", args = { order_id = "5531",
                                                   amount = 29 } } }
    local run = test.run("refund", "Order 5531 arrived broken")
    assert.are.equal("failed", run.status)
    assert.matches("model call 2, but the script has 1 replies", run.error)
  end)

  it("says which agent it cannot find", function()
    local ok, err = pcall(test.run, "no_such_agent", "x")
    assert.is_false(ok)
    assert.matches("spool.test.run: .*no_such_agent", err)
  end)

  it("refuses an agent whose model is not the scripted one", function()
    local ok, err = pcall(test.run, "remote", "x")
    assert.is_false(ok)
    assert.matches("agent remote calls http://127.0.0.1:1/v1, not the "
      .. "scripted model", err, 1, true)
  end)

  it("refuses an answer to a run that waits for nothing", function()
    test.model { { tool = "issue_refund", args = { order_id = "5531",
                                                   amount = 29,
                                                   reason = "broken" } },
                 "Done." }
    local run = test.run("refund", "Order 5531 arrived broken")
    assert.are.equal("done", run.status)
    local ok, err = pcall(test.answer, run, { approve = true })
    assert.is_false(ok)
    assert.matches("spool.test.answer: thread .* has ended %(done%)", err)
  end)
end)
]=],
      ["agents/remote.lua"] = [=[
local spool = require "spool"
return spool.agent { prompt = "reply.md",
                     model = { base_url = "http://127.0.0.1:1/v1" } }
]=] }
    assert.are.equal(0, code, out)
    assert.matches("7 successes / 0 failures / 0 errors", out)
    -- The tool ran for real, in the project: once per approved refund.
    local ledger = h.slurp(dir .. "/out/refunds.jsonl")
    assert.are.equal(2, select(2, ledger:gsub("\n", "")))
  end)

  it("fails the command when an agent's spec fails", function()
    local out, code = spool_test { ["spec/reply_spec.lua"] = [=[
local test = require "spool.test"
it("expects what the agent does not do", function()
  test.model { "Hello." }
  local run = test.run("reply", "hi")
  assert.are.equal("Goodbye.", run.result)
end)
]=] }
    assert.are_not.equal(0, code)
    assert.matches("0 successes / 1 failure", out)
    assert.matches("Goodbye", out)
  end)

  it("keeps agents off a real provider unless told to", function()
    local out, code = spool_test({
      ["spec/key_spec.lua"] = [=[
local test = require "spool.test"
it("runs on the mock though a key is set", function()
  test.model { "from the script" }
  assert.are.equal("from the script", test.run("reply", "hi").result)
end)
]=],
      ["spool.lua"] = "return { model = { provider = 'openai', "
        .. "name = 'gpt-4o-mini' } }\n",
    }, "OPENAI_API_KEY=sk-spec-not-a-key")
    assert.are.equal(0, code, out)
    assert.matches("1 success / 0 failures", out)
  end)
end)
