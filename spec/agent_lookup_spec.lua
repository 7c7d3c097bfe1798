-- agents/lookup.lua: read-only tools over data/, against the demo's mock.
local h = require "spec.support"
local loader = require "spool.run.loader"

describe("agents/lookup", function()
  local agent = assert(loader.load("lookup"))

  it("fetches the order and the policy in one step, then summarizes", function()
    local t = h.run(agent, { order_id = "5531", request = "the mugs arrived broken" })
    assert.are.equal("done", t:status())
    local results = {}
    for ev in t:each("tool_result") do
      results[ev.data.name] = ev.data.result
    end
    assert.are.equal("Ana Silva", results.get_order.customer)
    assert.are.equal(29.0, results.get_order.total)
    assert.matches("refunded in full", results.get_policy)
    assert.matches("total 29.00 EUR", t:outcome())
  end)

  it("tells the model when an order does not exist", function()
    local t = h.run(agent, { order_id = "9999", request = "where is it?" })
    local err
    for ev in t:each("error") do
      err = ev.data.error
    end
    assert.are.equal("there is no order 9999", err)
    assert.matches("does not exist", t:outcome())
  end)

  it("offers only its read-only tools", function()
    assert.are.same({ "get_order", "get_policy" }, agent.tool_names)
  end)
end)
