-- Hundreds of runs in flight on one loop. Asserted on what the mock model
-- saw at once (its peak of requests in flight), never on wall-clock time.
local h = require "spec.support"
local runner = require "spool.run.runner"

describe("the engine", function()
  it("keeps 500 runs in flight at once, each a coroutine", function()
    local N = 500
    local mock = h.mock { latency_ms = 300, rules = {
      { when = { turns = 0 }, reply = { tool = "echo", args = { n = 1 } } },
      { reply = function(conv) return { text = conv.tool_results[1].content } end },
    } }
    local agent = h.agent({ tools = { echo = {
      params = { n = "integer" },
      run = function(args) return args.n end,
    } } }, mock)
    local threads = {}
    for i = 1, N do
      threads[i] = runner.start(agent, "run " .. i)
    end
    h.wait_for(function() return runner.running() == 0 end, 60000,
      "all runs to finish")
    local stats = mock.stats()
    mock.close()
    for _, t in ipairs(threads) do
      assert.are.equal("done", t:status())
      assert.are.equal("1", t:outcome())
    end
    assert.are.equal(2 * N, stats.requests)
    -- Every run's first model call was in flight at the same time.
    assert.are.equal(N, stats.peak_inflight)
  end)
end)
