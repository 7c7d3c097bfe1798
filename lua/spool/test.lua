-- spool.test: specs for a project's own agents, run by `spool test` on a
-- scripted model — the engine's in-process mock, so no network, no key
-- and no cost — with the agents, prompts and tools as they are.
--
--   local test = require "spool.test"
--
--   describe("refund", function()
--     it("asks a person before refunding", function()
--       local model = test.model {      -- one reply per model call, in order
--         { tool = "issue_refund", args = { order_id = "5531", amount = 20 } },
--         "Refunded 20.",
--       }
--       local run = test.run("refund", "Order 5531 arrived broken")
--       assert.are.equal("waiting", run.status)
--       assert.are.equal("issue_refund", run.request.name)
--       run = test.answer(run, { approve = true })
--       assert.are.equal("done", run.status)
--       assert.are.equal("Refunded 20.", run.result)
--       assert.are.equal(2, #model.requests)
--     end)
--   end)
--
-- test.model(replies) makes the mock follow a list of replies, one per
-- model call in the order the calls come (sub-agents' included); a reply
-- is what a mock script's rule gives (spool.mock): "text", { json = v },
-- { tool = name, args = {...} }, { tool_calls = {...} }, { status = 500 },
-- or a function(conv) returning one. A table with `rules` is a whole mock
-- script instead, its rules chosen by what each request holds. Calls past
-- the end of the list get an error reply that says so. model.requests
-- holds each request as the mock saw it (conv: system, last_user, tools,
-- tool_results, body).
--
-- test.run(agent, input) runs the project's agent until its run stops (it
-- ends, or waits for a person or an event) and returns what became of it:
--
--   run.id, run.status      "done", "failed", "waiting", "cancelled"
--   run.result, run.error   the outcome (done / failed)
--   run.request             what it waits for: { kind = "ask" | "approval"
--                           | "event", question, name, args, event }
--   run.events              its events: { seq, type, data, step }
--   run.usage               tokens and cost of its model calls
--   run:types()             the types of its events, in order
--   run:errors()            the texts of its error events (test.types and
--                           test.errors take a list of events too)
--   run:calls(name)         the arguments of each call of tool `name`
--
-- test.answer(run, response) answers what it waits for and returns the
-- run after that: { answer = "text" }, { approve = true [, args = {...}] },
-- { reject = true [, reason = "..."] }, { event = "name", data = value }.
-- test.thread(id) reads any thread (a sub-agent's, from its agent_call
-- event) the same way. Specs run in a task of the engine, so these wait
-- for the runs while the loop runs them.

local request = require "spool.run.request"
local mock = require "spool.mock"
local loader = require "spool.run.loader"
local runner = require "spool.run.runner"

local M = {}

-- How long a run may take before test.run gives up on it.
M.timeout_ms = 30000


-- Raises what the engine said (its message, without the name it begins
-- with), in the words of `fn`, at the spec's line.
local function fail(fn, err)
  error(string.format("spool.test.%s: %s", fn,
    (tostring(err):gsub("^%u+: ", ""))), 3)
end


function M.model(replies)
  if type(replies) ~= "table" then
    error("spool.test.model: give a list of replies, or a mock script "
      .. "with rules", 2)
  end
  local model = { requests = {} }
  local script = replies
  if not replies.rules then
    local n = 0
    script = { rules = { { reply = function(conv)
      n = n + 1
      local r = replies[n]
      if type(r) == "function" then
        r = r(conv)
      end
      -- (A 400: a model call that fails for good, not one retried.)
      return r or { status = 400, error = string.format("spool.test: "
        .. "model call %d, but the script has %d replies", n, #replies) }
    end } } }
  end
  -- Each request as the mock saw it, whichever rule answers.
  local rules = {}
  for i, rule in ipairs(script.rules) do
    local reply = rule.reply
    rules[i] = setmetatable({ reply = function(conv)
      model.requests[#model.requests + 1] = conv
      if type(reply) == "function" then
        return reply(conv)
      end
      return reply
    end }, { __index = rule })
  end
  mock.set_local_script(setmetatable({ rules = rules },
    { __index = script }))
  return model
end


-- The types of a run's events (or of a list of events), in order.
function M.types(run_or_events)
  local out = {}
  for i, ev in ipairs(run_or_events.events or run_or_events) do
    out[i] = ev.type
  end
  return out
end


-- The texts of a run's error events (or of a list's), in order.
function M.errors(run_or_events)
  local out = {}
  for _, ev in ipairs(run_or_events.events or run_or_events) do
    if ev.type == "error" then
      out[#out + 1] = ev.data.error
    end
  end
  return out
end


local function view(thread)
  local status = thread:status()
  local result, err = thread:outcome()
  local req = status == "waiting" and thread:pending_request()
  local run = {
    id = thread.id, agent = thread.agent, status = status,
    result = status == "done" and result or nil,
    error = status ~= "done" and err or nil,
    request = req and req.data or nil,
    events = thread.events, usage = thread:usage(),
  }
  run.types, run.errors = M.types, M.errors
  function run:calls(name)
    local out = {}
    for _, ev in ipairs(self.events) do
      if ev.type == "intent" and ev.data.name == name then
        out[#out + 1] = ev.data.args
      end
    end
    return out
  end
  return run
end


-- Waits for the run of thread `id` to stop, and reads it.
local function settled(id)
  if not runner.settle(id, M.timeout_ms) then
    error(string.format("spool.test: thread %s still runs after %d ms", id,
      M.timeout_ms), 3)
  end
  return M.thread(id)
end


function M.run(agent_name, input)
  local agent, err = loader.load(agent_name)
  if not agent then
    fail("run", err)
  end
  local model = request.model_for(agent)
  if not model.mock then
    error(string.format("spool.test.run: agent %s calls %s, not the "
      .. "scripted model (spool test runs agents on the mock unless --mock "
      .. "off; an agent's model must not name a base_url)", agent_name,
      tostring(model.base_url)), 2)
  end
  local thread = runner.start(agent, input)
  if thread.halted then
    fail("run", "the thread could not start: " .. thread.halted)
  end
  return settled(thread.id)
end


function M.answer(run, response)
  local thread, err = runner.respond(run.id, response)
  if not thread then
    fail("answer", err)
  end
  return settled(thread.id)
end


function M.thread(id)
  local thread, err = runner.get(id)
  if not thread then
    fail("thread", err)
  end
  return view(thread)
end


return M
