-- spool.run.thread: what the events say (status, the request waited on,
-- usage) is kept up to date as events are appended; it must always match
-- reading the whole thread again.
local thread_mod = require "spool.run.thread"
local json = require "spool.json"

-- The same answers, read from scratch the slow way.
local function recount(t)
  local status, request = "running", nil
  local u = { steps = t.step, input_tokens = 0, output_tokens = 0,
              cost_usd = 0 }
  for _, ev in ipairs(t.events) do
    local d = ev.data
    if ev.type == "done" or ev.type == "failed" or ev.type == "cancelled" then
      status, request = ev.type, nil
    elseif ev.type == "human_request" then
      status, request = "waiting", ev
    elseif ev.type == "human_response" then
      status, request = "running", nil
    end
    local counted = ev.type == "model_call" or ev.type == "compaction"
      or ev.type == "event_summary"
    if type(d.usage) == "table" and (counted or ev.type == "agent_result")
    then
      u.input_tokens = u.input_tokens + (d.usage.input_tokens or 0)
      u.output_tokens = u.output_tokens + (d.usage.output_tokens or 0)
      if counted then
        u.cost_usd = u.cost_usd + (d.cost_usd or 0)
      else
        u.steps = u.steps + (d.usage.steps or 0)
        u.cost_usd = u.cost_usd + (d.usage.cost_usd or 0)
      end
    end
  end
  return status, request, u
end

local KINDS = { "model_call", "tool_result", "human_request",
                "human_response", "agent_result", "compaction", "done",
                "failed", "intent" }

describe("spool.run.thread", function()
  it("keeps status, pending request and usage in step with its events",
    function()
      math.randomseed(7)
      for _ = 1, 50 do
        local t = thread_mod.new("a", "v1")
        t:append("input", { input = "go" })
        for _ = 1, math.random(1, 40) do
          local kind = KINDS[math.random(#KINDS)]
          local data = {}
          if kind ~= "intent" and kind ~= "done" and kind ~= "failed" then
            data.usage = { input_tokens = math.random(0, 9),
                           output_tokens = math.random(0, 9),
                           steps = math.random(0, 3),
                           cost_usd = math.random(0, 3) / 100 }
            data.cost_usd = math.random(0, 3) / 100
          end
          if math.random() < 0.3 then
            t.step = t.step + 1
          end
          t:append(kind, data)
          -- asked at random moments, as the loop does
          if math.random() < 0.5 then
            local status, request, u = recount(t)
            assert.are.equal(status, t:status())
            assert.are.equal(request, t:pending_request())
            assert.are.same(u, t:usage())
          end
        end
        local status, request, u = recount(t)
        assert.are.equal(status, t:status())
        assert.are.equal(request, t:pending_request())
        assert.are.same(u, t:usage())
        -- the status as stored reads only the first events
        assert.are.equal((recount({ step = 0, events = { table.unpack(
          t.events, 1, 1) } })), t:status(1))
      end
    end)

  it("knows when the latest model call is settled, as recovery's scan does",
    function()
      local recover = require "spool.run.recover"
      -- The scan itself: the same thread, claiming never to be settled.
      local function scanned(t)
        return recover.pending(setmetatable(
          { settled = function() return false end }, { __index = t }))
      end
      local TYPES = { "model_call", "intent", "tool_result", "error",
                      "human_request", "human_response", "started", "error",
                      "tool_result", "model_call" }
      local seed = os.time()
      math.randomseed(seed)
      for round = 1, 300 do
        local t = thread_mod.new("a", "v1")
        t:append("input", { input = "go" })
        for _ = 1, math.random(0, 25) do
          local kind = TYPES[math.random(#TYPES)]
          local id = "c" .. math.random(1, 4) -- ids repeat, as models do
          local data = { call_id = math.random() < 0.9 and id or nil }
          if kind == "model_call" then
            data = { tool_calls = {}, text = "x",
                     finish_reason = math.random() < 0.2 and "length" or nil }
            for i = 1, math.random(0, 3) do
              data.tool_calls[i] = { id = "c" .. math.random(1, 4),
                                     name = "f", arguments = "{}" }
            end
          elseif kind == "intent" and math.random() < 0.2 then
            data.migrated_from = "old"
          end
          t:append(kind, data)
          if math.random() < 0.5 then
            local fast, slow = recover.pending(t), scanned(t)
            local why = string.format("seed %d, round %d, %d events", seed,
              round, #t.events)
            assert.are.equal(#slow == 0 and slow.final_text == nil,
              t:settled(), why)
            assert.are.equal(#slow, #fast, why)
            assert.are.equal(slow.final_text, fast.final_text, why)
          end
        end
      end
    end)

  it("folds odd shapes as Lua's arithmetic and tonumber read them, "
    .. "asked at random moments, over replaced and shortened event lists",
    function()
    -- The fold as it was written in Lua (the C one, l_thread.c, must give
    -- the same answers), from the first event.
    local TERMINAL = { done = "done", failed = "failed",
                       cancelled = "cancelled" }
    local function fold_in_lua(events)
      local d = { status = "running", input_tokens = 0, output_tokens = 0,
                  cost_usd = 0, child_steps = 0 }
      for _, ev in ipairs(events) do
        local t, data = ev.type, ev.data
        if TERMINAL[t] then
          d.status, d.request = TERMINAL[t], nil
        elseif t == "human_request" then
          d.status, d.request = "waiting", ev
        elseif t == "human_response" then
          d.status, d.request = "running", nil
        end
        if t == "model_call" then
          d.open, d.unanswered, d.ncalls, d.after = {}, 0, 0, false
          for _, c in ipairs(type(data.tool_calls) == "table"
              and data.tool_calls or {}) do
            local id = type(c) == "table" and c.id
            if id == nil then
              d.unanswered = math.huge
            elseif not d.open[id] then
              d.open[id] = true
              d.unanswered = d.unanswered + 1
            end
            d.ncalls = d.ncalls + 1
          end
        elseif d.open then
          d.after = d.after or t ~= "human_response"
          local id = data.call_id
          if id ~= nil and (t == "tool_result" or t == "error")
              and d.open[id] then
            d.open[id] = nil
            d.unanswered = d.unanswered - 1
          end
        end
        if (t == "model_call" or t == "llm_call" or t == "compaction"
            or t == "event_summary" or t == "agent_result")
            and type(data.usage) == "table" then
          local u = data.usage
          d.input_tokens = d.input_tokens + (u.input_tokens or 0)
          d.output_tokens = d.output_tokens + (u.output_tokens or 0)
          if t == "agent_result" then
            d.child_steps = d.child_steps + (u.steps or 0)
            d.cost_usd = d.cost_usd + (tonumber(u.cost_usd) or 0)
          else
            d.cost_usd = d.cost_usd + (tonumber(data.cost_usd) or 0)
          end
        end
      end
      d.settled = d.open == nil
        or (d.unanswered == 0 and (d.ncalls > 0 or d.after))
      return d
    end
    local TYPES = { "model_call", "tool_result", "error", "human_request",
                    "human_response", "agent_result", "llm_call",
                    "compaction", "event_summary", "done", "failed",
                    "cancelled", "intent", 7 }
    local COUNTS = { 3, 2.5, "7", " 8 ", "0x10", "1e2", false, nil, 0 }
    local COSTS = { 0.25, 1, "0.5", "abc", "5\0x", {}, true, nil }
    local IDS = { "c1", "c2", 1, 1.0, 2, false }
    local function pick(list)
      return list[math.random(#list)] -- (nil when it picks a nil)
    end
    local function usage()
      return { input_tokens = pick(COUNTS), output_tokens = pick(COUNTS),
               steps = pick(COUNTS), cost_usd = pick(COSTS) }
    end
    local function calls()
      local r = math.random(6)
      if r == 1 then
        return "not calls"
      end
      local list = {}
      for i = 1, math.random(0, 4) do
        local shape = math.random(8)
        list[i] = shape == 1 and 42 or shape == 2 and { name = "no id" }
          or { id = pick(IDS) }
      end
      if r == 2 then
        list[#list + 2] = { id = "after a hole" }
      end
      return list
    end
    local function same(want, t, why)
      assert.are.equal(want.status, t:status(), why)
      assert.are.equal(want.request, t:pending_request(), why)
      assert.are.equal(want.settled, t:settled(), why)
      local u = t:usage()
      for k, v in pairs { input_tokens = want.input_tokens,
                          output_tokens = want.output_tokens,
                          cost_usd = want.cost_usd,
                          steps = t.step + want.child_steps } do
        assert.are.equal(v, u[k], why .. ": " .. k)
        assert.are.equal(math.type(v), math.type(u[k]), why .. ": " .. k)
      end
    end
    local seed = os.time()
    math.randomseed(seed)
    for round = 1, 400 do
      local t = thread_mod.new("a", "v1")
      t:append("input", { input = "go" })
      for n = 1, math.random(0, 30) do
        local kind = pick(TYPES)
        local data = { call_id = pick(IDS), usage = usage(),
                       cost_usd = pick(COSTS) }
        if kind == "model_call" then
          data.tool_calls = calls()
        end
        if math.random(10) == 1 then
          data.usage = "not a table"
        end
        t:append(kind, data)
        local why = string.format("seed %d, round %d, event %d", seed, round,
          n)
        local r = math.random(12)
        if r == 1 then -- a shorter list (a state for more events is stale)
          t.events = { table.unpack(t.events, 1, math.random(#t.events)) }
        elseif r == 2 then -- the same events in another table
          t.events = { table.unpack(t.events) }
        elseif r == 3 then -- the same table, shortened (and asked before
          -- it grows again: events are only ever appended)
          for i = #t.events, math.random(#t.events) + 1, -1 do
            t.events[i] = nil
          end
        end
        if r == 3 or math.random() < 0.6 then
          same(fold_in_lua(t.events), t, why)
        end
      end
      same(fold_in_lua(t.events), t, string.format("seed %d, round %d",
        seed, round))
    end
  end)

  it("starts again when its events are replaced", function()
    local t = thread_mod.new("a", "v1")
    t:append("input", { input = "go" })
    t:append("human_request", { kind = "ask", question = "?" })
    assert.are.equal("waiting", t:status())
    local rebuilt = thread_mod.from_record({
      thread = { id = t.id, agent = "a", parent = json.null },
      events = { { seq = 1, step = 0, type = "input", data = { input = "go" },
                   at = 1, v = "v1" } },
    })
    assert.are.equal("running", rebuilt:status())
    t.events = rebuilt.events
    assert.are.equal("running", t:status())
    assert.is_nil(t:pending_request())
  end)
end)
