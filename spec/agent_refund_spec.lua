-- agents/refund.lua, the action executor. It changes the shop's refund
-- ledger, so every test runs the CLI in a copy of the project.
local h = require "spec.support"
local json = require "spool.json"

local INPUT = json.encode({ order_id = "5531",
  request = "My mugs arrived broken", facts = "Order 5531 for Ana Silva: "
    .. "2 x Ceramic mug; total 29.00 EUR; status delivered. Policy: damaged "
    .. "items are refunded in full." })

local function run(dir)
  return h.run_cli(dir, "refund", INPUT)
end

local function ledger(dir)
  local f = io.open(dir .. "/out/refunds.jsonl")
  if not f then
    return {}
  end
  local entries = {}
  for line in f:lines() do
    entries[#entries + 1] = json.decode(line)
  end
  f:close()
  return entries
end

local errors = h.errors

describe("agents/refund", function()
  local dir

  before_each(function()
    dir = h.copy_project()
  end)

  after_each(function()
    h.remove(dir)
  end)

  it("records the refund in the ledger", function()
    local events, code = run(dir)
    assert.are.equal(0, code)
    local entries = ledger(dir)
    assert.are.equal(1, #entries)
    assert.are.equal("5531", entries[1].order_id)
    assert.are.equal(29.0, entries[1].amount)
    assert.are.equal(events[1].thread, entries[1].thread)
    assert.matches("^Refund R%-%x+ of 29.00 EUR issued",
      events[#events].data.result)
  end)

  it("never refunds the same order twice", function()
    run(dir)
    local events, code = run(dir)
    assert.are.equal(0, code)
    assert.are.equal(1, #ledger(dir))
    assert.matches("^order 5531 was already refunded %(R%-", errors(events)[1])
  end)

  it("refuses more than the order total, and the model corrects it", function()
    local f = io.open(dir .. "/spool.lua", "w")
    f:write('return { mock = "test.lua" }')
    f:close()
    h.sh(string.format("cp %s %s/test.lua", h.q(h.ROOT
      .. "/spec/fixtures/mocks/refund_too_much.lua"), h.q(dir)))
    local events, code = run(dir)
    assert.are.equal(0, code)
    assert.are.same({ "amount 35.00 is more than the order total 29.00" },
      errors(events))
    assert.are.equal(29, ledger(dir)[1].amount)
  end)
end)
