-- Hot reload: agents, prompts and helper modules edited while runs are in
-- flight; each step takes the current version, a broken edit keeps the
-- previous one, and every event names the version that made it.
local h = require "spec.support"
local core = require "spool.core"
local json = require "spool.json"
local loader = require "spool.run.loader"
local watcher = require "spool.run.watch"
local runner = require "spool.run.runner"
local api = require "spool.engine"

-- An agent with one harmless tool and a prompt; `extra` adds fields.
local function agent_file(name, extra)
  return string.format([[
local spool = require "spool"
return spool.agent {
  prompt = "%s.md",
  tools = {
    note = { description = "Note something.", params = { text = "string" },
             side_effects = false, run = function(a) return "noted" end },
    finish = spool.done,
  },
  %s
}
]], name, extra or "")
end

-- A temporary project (h.project), put back however the test ends.
local function project(files, mock)
  local dir, restore = h.project(files, mock)
  finally(restore)
  return dir
end

-- A scripted mock model, closed however the test ends.
local function scripted(replies)
  local mock, seen = h.scripted(replies)
  finally(mock.close)
  return mock, seen
end

local function version_of(name)
  local a = loader.current(name)
  return a and a.version
end

local function wait_version_change(name, old)
  return h.wait_for(function()
    local v = version_of(name)
    return v ~= old and v
  end, 10000, "a new version of " .. name)
end

local function versions_in(thread)
  local seen, list = {}, {}
  for _, ev in ipairs(thread.events) do
    if ev.v and not seen[ev.v] then
      seen[ev.v] = true
      list[#list + 1] = ev.v
    end
  end
  return list
end

local NOTE = { tool = "note", args = { text = "x" } }
local FINISH = { tool = "finish", args = { answer = "ok" } }


describe("hot reload", function()
  it("gives the next step an edited prompt, and show marks the switch",
    function()
      local dir
      local v1
      local mock, seen = scripted {
        function()
          -- While the first step waits for the model, edit the prompt, and
          -- answer once the watcher published it.
          h.write_files(dir, { ["prompts/hr1.md"] = "Second prompt." })
          wait_version_change("hr1", v1)
          return NOTE
        end,
        FINISH,
      }
      dir = project({ ["agents/hr1.lua"] = agent_file("hr1"),
                                 ["prompts/hr1.md"] = "First prompt." }, mock)
      local a = assert(loader.load("hr1"))
      assert(watcher.watch())
      v1 = a.version
      local t = runner.start(a, "go")
      local v2 = wait_version_change("hr1", v1)
      h.wait_run(t)
      assert.are.equal("done", t:status())
      assert.are.equal("First prompt.", seen[1].system)
      assert.are.equal("Second prompt.", seen[2].system)
      assert.are.same({ v1, v2 }, versions_in(t))
      local text = assert(api.thread_text(t.id))
      assert.matches("-- agent hr1: version " .. v1 .. " -> " .. v2 .. " --",
        text, 1, true)
    end)

  it("keeps running the previous version when an edit is broken, and "
    .. "picks up the fix", function()
    local dir
    local broken_seen
    local mock, seen = scripted {
      function()
        h.write_files(dir, { ["agents/hr2.lua"] = "return spool.agent {" })
        broken_seen = h.wait_for(function() return loader.problem("hr2") end)
        return NOTE
      end,
      FINISH,
    }
    dir = project({ ["agents/hr2.lua"] = agent_file("hr2"),
                               ["prompts/hr2.md"] = "Prompt." }, mock)
    local a = assert(loader.load("hr2"))
    assert(watcher.watch())
    local t = h.run(a, "go")
    assert.are.equal("done", t:status())
    assert.matches("agents/hr2.lua:1: .*expected", broken_seen)
    assert.are.same({ a.version }, versions_in(t))
    assert.are.equal(a.version, version_of("hr2"))
    assert.are.equal(2, #seen)
    -- A reload says so too, and a fix is picked up.
    local report = loader.reload()
    assert.are.equal(1, report.errors)
    assert.are.equal(a.version, report.agents.hr2.version)
    h.write_files(dir, { ["agents/hr2.lua"] = agent_file("hr2",
      "max_steps = 5,") })
    wait_version_change("hr2", a.version)
    assert.is_nil(loader.problem("hr2"))
  end)

  it("sees a save by rename-and-replace, and a burst of saves as one",
    function()
      local dir = project({ ["agents/hr3.lua"] = agent_file("hr3"),
        ["prompts/hr3.md"] = "One." })
      local v1 = assert(loader.load("hr3")).version
      assert(watcher.watch())
      -- An editor's safe save: write a temporary file, rename it over.
      h.write_files(dir, { ["prompts/.hr3.md.swp"] = "Two." })
      assert(os.rename(dir .. "/prompts/.hr3.md.swp", dir .. "/prompts/hr3.md"))
      local v2 = wait_version_change("hr3", v1)
      -- Backup-then-write: the file is missing for a moment.
      assert(os.rename(dir .. "/agents/hr3.lua", dir .. "/agents/hr3.lua~"))
      h.write_files(dir, { ["agents/hr3.lua"] = agent_file("hr3",
        "max_steps = 4,") })
      local v3 = wait_version_change("hr3", v2)
      assert.are.equal(4, loader.current("hr3").max_steps)
      -- Ten saves 10 ms apart, inside one 200 ms quiet period: one reload,
      -- and the last save is what runs.
      assert(watcher.watch(200))
      local reloads = loader.reloads
      for i = 1, 10 do
        h.write_files(dir, { ["prompts/hr3.md"] = "Save " .. i .. "." })
        core.sleep(10)
      end
      wait_version_change("hr3", v3)
      assert.are.equal("Save 10.", loader.current("hr3").files["prompts/hr3.md"])
      assert.is_true(loader.reloads - reloads <= 2, (loader.reloads - reloads)
        .. " reloads")
    end)

  it("retires a deleted agent and takes it back when it is re-created",
    function()
      local dir = project({ ["agents/hr4.lua"] = agent_file("hr4"),
        ["prompts/hr4.md"] = "Prompt." })
      local v1 = assert(loader.load("hr4")).version
      assert(watcher.watch())
      h.write_files(dir, { ["agents/hr4.lua"] = false })
      h.wait_for(function() return loader.current("hr4") == nil end)
      local _, err = api.start_thread("hr4", "x")
      assert.matches("^ENOTFOUND: unknown agent 'hr4'", err)
      h.write_files(dir, { ["agents/hr4.lua"] = agent_file("hr4") })
      h.wait_for(function() return loader.current("hr4") ~= nil end)
      assert.are.equal(v1, version_of("hr4")) -- the same files, one hash
    end)

  it("keeps every agent when the agents folder cannot be read", function()
    local dir = project({ ["agents/hr10.lua"] = agent_file("hr10"),
                          ["prompts/hr10.md"] = "P." })
    local v1 = assert(loader.load("hr10")).version
    assert(os.rename(dir .. "/agents", dir .. "/agents.moved"))
    local report = loader.reload()
    assert.are.equal(1, report.errors)
    assert.matches("cannot read .*/agents: ", report.error)
    assert.are.equal(v1, version_of("hr10"))
    assert(os.rename(dir .. "/agents.moved", dir .. "/agents"))
  end)

  it("reloads an agent when a helper module it requires changes",
    function()
      local mock, seen = scripted { FINISH, FINISH }
      local dir = project({
        ["agents/hr5.lua"] = agent_file("hr5", [[
vars = function() return { rule = require("policy").rule } end,]]),
        ["prompts/hr5.md"] = "Rule: {{rule}}",
        ["lib/policy.lua"] = 'return { rule = "refunds up to 50" }',
      }, mock)
      local a = assert(loader.load("hr5"))
      assert.is_string(a.files["lib/policy.lua"]) -- part of its version
      assert(watcher.watch())
      h.run(a, "x")
      h.write_files(dir, { ["lib/policy.lua"] =
        'return { rule = "refunds up to 80" }' })
      wait_version_change("hr5", a.version)
      h.run(loader.current("hr5"), "x")
      assert.are.equal("Rule: refunds up to 50", seen[1].system)
      assert.are.equal("Rule: refunds up to 80", seen[2].system)
    end)

  it("watches a helper folder created after the watch began", function()
    local dir = project({
      ["agents/hr6.lua"] = agent_file("hr6"), ["prompts/hr6.md"] = "P." })
    local v1 = assert(loader.load("hr6")).version
    assert(watcher.watch())
    h.write_files(dir, { ["agents/hr6.lua"] = agent_file("hr6",
      'vars = function() return { x = require("late").x } end,') })
    -- lib/late.lua does not exist: the edit is broken until it does.
    h.wait_for(function() return loader.problem("hr6") end)
    h.write_files(dir, { ["lib/late.lua"] = "return { x = 1 }" })
    local v2 = wait_version_change("hr6", v1)
    h.write_files(dir, { ["lib/late.lua"] = "return { x = 2 }" })
    wait_version_change("hr6", v2)
  end)

  it("keeps a pinned thread on the version it started with", function()
    local dir, first
    local mock, seen = scripted {
      function()
        h.write_files(dir, { ["prompts/hr7.md"] = "New." })
        wait_version_change("hr7", first)
        return NOTE
      end,
      FINISH,
    }
    dir = project({
      ["agents/hr7.lua"] = agent_file("hr7", "pin_version = true,"),
      ["prompts/hr7.md"] = "Old." }, mock)
    local a = assert(loader.load("hr7"))
    first = a.version
    assert(watcher.watch())
    local t = h.run(a, "x")
    assert.are.equal("done", t:status(), api.thread_text(t.id))
    assert.are.equal("Old.", seen[1].system)
    assert.are.equal("Old.", seen[2].system)
    assert.are.same({ a.version }, versions_in(t))
    assert.are_not.equal(a.version, version_of("hr7"))
  end)

  describe("a call waiting for approval meets a new version", function()
    local REFUND_V1 = [[
local spool = require "spool"
return spool.agent {
  prompt = "hr8.md",
  tools = {
    refund = { params = { amount = "number" }, approve = true,
               run = function(a) return "refunded " .. a.amount end },
    finish = spool.done,
  },
}
]]
    local function waiting_thread(mock_replies)
      local mock, seen = scripted(mock_replies)
      local dir = project({ ["agents/hr8.lua"] = REFUND_V1,
        ["prompts/hr8.md"] = "P." }, mock)
      local a = assert(loader.load("hr8"))
      local t = h.run(a, "refund me")
      assert.are.equal("waiting", t:status())
      return t, dir, seen
    end

    local function approve(t)
      local th = assert(runner.resume(t.id, { approve = true }))
      h.wait_run(th)
      return assert(runner.load(t.id))
    end

    local function last_of(thread, type)
      for i = #thread.events, 1, -1 do
        if thread.events[i].type == type then
          return thread.events[i]
        end
      end
    end

    it("is refused with an error naming the change", function()
      local t, dir, seen = waiting_thread {
        { tool = "refund", args = { amount = 30 } }, FINISH }
      h.write_files(dir, { ["agents/hr8.lua"] = REFUND_V1:gsub(
        'amount = "number" }', 'amount = "number", currency = "string" }') })
      local report = loader.reload()
      assert.is_true(report.agents.hr8.changed)
      local after = approve(t)
      assert.are.equal("done", after:status())
      local err = last_of(after, "error")
      assert.matches("the tool 'refund' changed while this call waited "
        .. "%(.*currency.*%) %(version %x+ %-> %x+%)", err.data.error)
      assert.is_nil(last_of(after, "tool_result"))
      assert.matches("changed while this call waited",
        json.encode(seen[2].body.messages))
    end)

    it("is refused when the tool was removed", function()
      local t, dir = waiting_thread {
        { tool = "refund", args = { amount = 30 } }, FINISH }
      h.write_files(dir, { ["agents/hr8.lua"] = REFUND_V1:gsub(
        "refund = {.-},\n    finish", "finish") })
      loader.reload()
      local after = approve(t)
      assert.matches("the tool 'refund' no longer exists in this agent",
        last_of(after, "error").data.error)
    end)

    local MIGRATING = [[
local spool = require "spool"
return spool.agent {
  prompt = "hr8.md",
  tools = {
    refund_v2 = { params = { amount = "number", currency = "string" },
      approve = %s,
      run = function(a) return "refunded " .. a.amount .. " " .. a.currency end },
    finish = spool.done,
  },
  migrate = function(call)
    if call.name == "refund" then
      return { name = "refund_v2", args = { amount = call.args.amount,
                                            currency = "EUR" } }
    end
  end,
}
]]

    local function migrated_intent(thread)
      for _, ev in ipairs(thread.events) do
        if ev.type == "intent" and ev.data.migrated_from then
          return ev
        end
      end
    end

    it("runs what the agent's migrate hook decides", function()
      local t, dir = waiting_thread {
        { tool = "refund", args = { amount = 30 } }, FINISH }
      h.write_files(dir, { ["agents/hr8.lua"] = MIGRATING:format("false") })
      loader.reload()
      local after = approve(t)
      assert.are.equal("done", after:status())
      local migrated = migrated_intent(after)
      assert.are.equal("refund_v2", migrated.data.name)
      assert.are.equal("refund", migrated.data.migrated_from)
      assert.are.equal("refunded 30 EUR", last_of(after, "tool_result")
        .data.result)
    end)

    it("asks again when the migrated call needs approval", function()
      local t, dir = waiting_thread {
        { tool = "refund", args = { amount = 30 } }, FINISH }
      h.write_files(dir, { ["agents/hr8.lua"] = MIGRATING:format("true") })
      loader.reload()
      local after = approve(t)
      assert.are.equal("waiting", after:status())
      local req = after:pending_request()
      assert.are.equal("refund_v2", req.data.name)
      assert.are.same({ amount = 30, currency = "EUR" }, req.data.args)
      assert.is_nil(last_of(after, "tool_result"))
      after = approve(after)
      assert.are.equal("done", after:status())
      assert.are.equal("refunded 30 EUR", last_of(after, "tool_result")
        .data.result)
    end)
  end)

  it("reports every agent through the API, as events", function()
    local dir = project({ ["agents/hr9.lua"] = agent_file("hr9"),
      ["agents/hr9b.lua"] = "return 42", ["prompts/hr9.md"] = "P." })
    local report = json.decode(api.reload())
    assert.are.equal(1, report.errors)
    assert.is_string(report.agents.hr9.version)
    assert.matches("agents/hr9b.lua must return spool.agent", report.agents
      .hr9b.error)
    h.write_files(dir, { ["agents/hr9b.lua"] = false })
  end)
end)
