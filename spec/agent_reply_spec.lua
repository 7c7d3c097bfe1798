-- agents/reply.lua: the response writer, no tools.
local h = require "spec.support"
local loader = require "spool.run.loader"

describe("agents/reply", function()
  local agent = assert(loader.load("reply"))

  it("writes an email from the facts and the action", function()
    local t = h.run(agent, {
      message = "My mugs arrived broken", category = "refund",
      facts = "Order 5531 for Ana Silva: total 29.00 EUR",
      action = "Refund R-1 of 29.00 EUR issued: damaged items.",
    })
    local text = t:outcome()
    assert.matches("^Dear Ana,", text)
    assert.matches("Refund R%-1 of 29.00 EUR issued", text)
    assert.matches("The Teacup & Kettle team$", text)
  end)

  it("answers in a single step with no tools offered", function()
    local t = h.run(agent, { message = "hi", category = "other",
                             facts = "none", action = "none" })
    assert.are.same({ "input", "model_call", "done" }, h.types(t))
    assert.are.same({}, agent.tool_names)
  end)
end)
