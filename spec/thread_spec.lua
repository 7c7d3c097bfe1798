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
