-- Soak: 1,000 concurrent runs against the mock model (2 s a reply) while
-- the agent they run is rewritten 100 times, through the folder watcher.
-- No run fails, every event names a version that was published, and the
-- engine holds no more than it did before: Lua heap after a full
-- collection, and references in the Lua registry (handles, callbacks).
local h = require "spec.support"
local core = require "spool.core"
local loader = require "spool.run.loader"
local watcher = require "spool.run.watch"
local runner = require "spool.run.runner"

local RUNS, REWRITES = 1000, 100
local LATENCY_MS = 2000

local function agent_file(rev)
  return string.format([[
-- revision %d
local spool = require "spool"
return spool.agent {
  prompt = "soak.md",
  max_steps = 200,
  tools = {
    note = { description = "Note something.", params = { text = "string" },
             side_effects = false, run = function() return "noted" end },
    finish = spool.done,
  },
}
]], rev)
end

local function heap_kb()
  collectgarbage("collect")
  collectgarbage("collect")
  return collectgarbage("count")
end


describe("hot reload under load", function()
  it(string.format("keeps %d concurrent runs going through %d rewrites",
    RUNS, REWRITES), function()
    local rewriting = true
    local mock = h.mock { latency_ms = LATENCY_MS, rules = { { reply =
      function(conv)
        if rewriting or conv.turns == 0 then
          return { tool = "note", args = { text = "step " .. conv.turns } }
        end
        return { tool = "finish", args = { answer = "ok" } }
      end } } }
    local dir, restore = h.project({ ["agents/soak.lua"] = agent_file(0),
                                     ["prompts/soak.md"] = "Revision 0." },
                                   mock)
    local keep_recent = runner.keep_recent
    runner.keep_recent = 0
    local first = assert(loader.load("soak"))
    assert(watcher.watch())
    local published = { [first.version] = true }
    local history_start = #loader.history
    local heap0, registry0 = heap_kb(), core.registry_size()

    local ids = {}
    for i = 1, RUNS do
      ids[i] = runner.start(loader.current("soak"), "run " .. i).id
    end
    local version = first.version
    for rev = 1, REWRITES do
      if rev % 2 == 1 then
        h.write_files(dir, { ["agents/soak.lua"] = agent_file(rev) })
      else
        h.write_files(dir, { ["prompts/soak.md"] = "Revision " .. rev .. "." })
      end
      version = h.wait_for(function()
        local v = loader.current("soak").version
        return v ~= version and v
      end, 20000, "revision " .. rev)
      published[version] = true
    end
    rewriting = false
    h.wait_for(function() return runner.running() == 0 end, 120000,
      "the runs to end")

    for i = history_start + 1, #loader.history do
      published[loader.history[i]] = true
    end
    local failed, unknown, switched = 0, 0, 0
    for _, id in ipairs(ids) do
      local t = assert(runner.load(id))
      if t:status() ~= "done" then
        failed = failed + 1
      end
      local seen = {}
      for _, ev in ipairs(t.events) do
        if not published[ev.v] then
          unknown = unknown + 1
        end
        seen[ev.v] = true
      end
      if next(seen, next(seen)) then
        switched = switched + 1
      end
    end
    assert.are.equal(0, failed, "runs that did not finish")
    assert.are.equal(0, unknown, "events naming an unknown version")
    -- The runs were in flight during the rewrites, and met them.
    assert.is_true(switched > RUNS / 2, switched .. " runs switched version")

    ids = nil
    h.wait_for(function() return core.stats().tasks == 1 end, 10000,
      "the last reload to end")
    local heap1, registry1 = heap_kb(), core.registry_size()
    print(string.format("\nsoak: %d runs, %d versions; Lua heap %.0f KiB -> "
      .. "%.0f KiB, registry %d -> %d", RUNS, REWRITES + 1, heap0, heap1,
      registry0, registry1))
    assert.are.equal(registry0, registry1)
    -- What a reload keeps is per version (its hash in the history and in
    -- the store's index), a few KiB for all of them; one run's events are
    -- several KiB each, so keeping runs would show as megabytes.
    assert.is_true(heap1 - heap0 < 512, string.format("the heap grew by "
      .. "%.0f KiB", heap1 - heap0))

    runner.keep_recent = keep_recent
    restore()
    mock.close()
  end)
end)
