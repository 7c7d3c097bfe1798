-- spool.run.hub: committed events, told to the listeners of their types.
local core = require "spool.core"
local hub = require "spool.run.hub"
local thread = require "spool.run.thread"

describe("spool.run.hub", function()
  it("tells each listener the events of its types, in order, and a "
    .. "listener that fails stops neither the others nor the next events",
    function()
    -- Types of this spec's own: the engine's listeners see none of them.
    local a, b = "spec_a_" .. core.random_id(), "spec_b_" .. core.random_id()
    local seen = {}
    hub.listen(function(_, ev)
      seen[#seen + 1] = "first:" .. ev.seq
      if ev.seq == 1 then
        error("listener broke")
      end
    end, { [a] = true })
    hub.listen(function(_, ev)
      seen[#seen + 1] = "second:" .. ev.seq
    end, { [a] = true, [b] = true })
    local t = { id = "t_hub", agent = "m", events = {
      { seq = 1, type = a, data = {} }, { seq = 2, type = "other", data = {} },
      { seq = 3, type = b, data = {} }, { seq = 4, type = a, data = {} } } }
    thread.on_commit(t, 1, 4)
    assert.are.same({ "first:1", "second:1", "second:3", "first:4",
                      "second:4" }, seen)
  end)
end)
