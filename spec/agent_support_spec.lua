-- agents/support.lua, the pipeline: each step runs one small agent as a
-- child thread, chosen from the results already in the thread.
local h = require "spec.support"

local function run(dir, input)
  return h.run_cli(dir, "support", input)
end

-- The agents the top thread called, in order.
local function calls(events)
  local out = {}
  for _, ev in ipairs(events) do
    if ev.type == "agent_call" and ev.parent == nil then
      out[#out + 1] = ev.data.agent
    end
  end
  return out
end

describe("agents/support", function()
  local dir

  before_each(function()
    dir = h.copy_project()
  end)

  after_each(function()
    h.remove(dir)
  end)

  it("classifies, looks up, refunds and replies to a refund request", function()
    local events, code = run(dir, "Hi, this is Ana. Order 5531 arrived "
      .. "and both mugs are broken. Can I get my money back?")
    assert.are.equal(0, code)
    assert.are.same({ "classify", "lookup", "refund", "reply" }, calls(events))
    local last = events[#events]
    assert.are.equal("done", last.type)
    assert.matches("^Dear Ana,", last.data.result)
    assert.matches("29.00 EUR", last.data.result)
  end)

  it("skips the refund for a status question", function()
    local events, code = run(dir, "Where is my order 5532?")
    assert.are.equal(0, code)
    assert.are.same({ "classify", "lookup", "reply" }, calls(events))
  end)

  it("only classifies and replies when no order is named", function()
    local events, code = run(dir, "Do you sell green tea?")
    assert.are.equal(0, code)
    assert.are.same({ "classify", "reply" }, calls(events))
  end)

  it("records each child thread with its parent and depth", function()
    local events = run(dir, "Where is my order 5532?")
    local top = events[1].thread
    for _, ev in ipairs(events) do
      if ev.thread ~= top then
        assert.are.equal(top, ev.parent)
      end
    end
  end)
end)
