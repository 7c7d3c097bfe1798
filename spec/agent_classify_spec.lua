-- agents/classify.lua against the demo's mock model.
local h = require "spec.support"
local loader = require "spool.run.loader"

describe("agents/classify", function()
  local agent = assert(loader.load("classify"))

  it("sorts a refund request and finds its order id", function()
    local t = h.run(agent, "My order 5531 arrived broken, I want a refund.")
    assert.are.equal("done", t:status())
    local r = t:outcome()
    assert.are.equal("refund", r.category)
    assert.are.equal("5531", r.order_id)
    assert.is_string(r.summary)
  end)

  it("sorts a status question", function()
    local r = h.run(agent, "Where is my order 5532? It should arrive soon."):outcome()
    assert.are.equal("order_status", r.category)
    assert.are.equal("5532", r.order_id)
  end)

  it("leaves the order id out when there is none", function()
    local r = h.run(agent, "Do you sell green tea?"):outcome()
    assert.are.equal("question", r.category)
    assert.is_nil(r.order_id)
  end)

  it("ends in one step, through its terminal tool", function()
    local t = h.run(agent, "refund order 5533 please")
    assert.are.same({ "input", "model_call", "intent", "done" }, h.types(t))
  end)
end)
