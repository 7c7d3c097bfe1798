-- Recovery continues every thread a stopped process left running, however
-- many there are: it read one page of 1,000 and left the rest running for
-- good (issue 22).
local h = require "spec.support"
local core = require "spool.core"
local runner = require "spool.run.runner"
local store = require "spool.run.store"
local thread_mod = require "spool.run.thread"

describe("recovery", function()
  it("continues every interrupted thread, past any one page", function()
    local agent = h.agent { step = function(thread)
      thread:finish("continued")
    end }
    -- Threads stored mid-run by a process that is gone: their input is
    -- durable, their status running, no run of this process drives them.
    local n = 1007 -- past the page of 1,000 recovery read
    local ids = {}
    for i = 1, n do
      local t = thread_mod.new(agent.name, agent.version, nil, nil)
      t:append("input", { input = i })
      assert(store.claim(t.id))
      assert(store.append(t, {}))
      store.release(t.id)
      ids[i] = t.id
    end
    local report = runner.recover()
    assert.are.equal(n, #report.resumed)
    assert.are.same({}, report.skipped)
    h.wait_for(function() return runner.running() == 0 end, 60000,
      "the recovered runs")
    local done = 0
    for _, id in ipairs(ids) do
      local t = assert(runner.load(id))
      done = done + (t:status() == "done" and 1 or 0)
    end
    assert.are.equal(n, done)
    assert.are.equal(0, #store.list { status = "running", limit = 10 })
  end)
end)
