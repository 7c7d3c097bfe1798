-- Owning the context window: budgets, policies, pinned events, compaction
-- and pre-fetch (spool.context over spool.run.window and spool.run.compact).
local h = require "spec.support"
local core = require "spool.core"
local context = require "spool.context"
local json = require "spool.json"
local thread_mod = require "spool.run.thread"
local task = require "spool.base.task"
local tokens = require "spool.tokens"
local window = require "spool.run.window"
local loop = require "spool.loop"
local run_request = require "spool.run.request"

local function thread_of(events)
  local t = thread_mod.new("a", "v", nil, nil)
  for _, e in ipairs(events) do
    t.step = e.step or t.step
    t:append(e[1], e[2])
  end
  return t
end

local function call(id, name, args)
  return { id = id, name = name, arguments = args or "{}" }
end

-- The invariant every provider enforces: the conversation starts with the
-- user; each assistant message with tool calls is followed at once by one
-- tool message per call, in order; no tool message stands anywhere else.
local function assert_valid_chat(msgs)
  assert.are.equal("user", msgs[1].role, "the first message is the user's")
  local i = 1
  while i <= #msgs do
    local m = msgs[i]
    assert.are_not.equal("tool", m.role, "a tool message answers no call "
      .. "(message " .. i .. ")")
    i = i + 1
    for _, c in ipairs(m.tool_calls or {}) do
      local answer = msgs[i]
      assert.is_table(answer, "call " .. c.id .. " has no answer")
      assert.are.equal("tool", answer.role)
      assert.are.equal(c.id, answer.tool_call_id)
      i = i + 1
    end
  end
end

local function agent_with(window_settings, tools)
  return { name = "a", window = window_settings, tools = tools or {},
           tool_names = {} }
end

describe("the context window", function()
  local mock

  after_each(function()
    if mock then
      mock.close()
      mock = nil
    end
  end)

  describe("policies", function()
    local big = string.rep("0123456789", 400) -- 4,000 bytes, 1,000 tokens

    local function thread_with_big_result()
      return thread_of {
        { "input", { input = "go" } },
        { "model_call", { tool_calls = { call("c1", "fetch") } } },
        { "tool_result", { call_id = "c1", name = "fetch", result = big } },
        { "model_call", { tool_calls = { call("c2", "note") } } },
        { "error", { call_id = "c2", name = "note", error = big } },
      }
    end

    it("truncates to n tokens with a marker saying what was cut and where",
      function()
      local t = thread_with_big_result()
      local msgs, plan = context.chat(t, agent_with({ policies = {
        tool_result = { truncate = 100 } } }), nil, { dry = true })
      assert_valid_chat(msgs)
      local shown = msgs[3].content
      assert.are.equal(big:sub(1, 400), shown:sub(1, 400))
      assert.matches("%[… 900 of 1000 tokens cut by the context policy: the "
        .. "whole result is event 3 of this thread%]$", shown)
      assert.are.equal(big, t.events[3].data.result) -- stored whole
      assert.are.equal("truncated", plan.report[3].action)
      assert.are.equal(1004, plan.report[3].tokens)
      -- errors keep the default policy: shown whole
      assert.are.equal("error: " .. big, msgs[5].content)
    end)

    it("points at read_more when the agent offers it", function()
      local t = thread_with_big_result()
      local a = agent_with({ policies = { tool_result = { truncate = 10 } } },
        { read_more = context.read_more })
      local msgs = context.chat(t, a, nil, { dry = true })
      assert.matches("call read_more with seq 3 and from 41 for the rest%]$",
        msgs[3].content)
      -- not for a message that adds words around the value: the offset
      -- would be wrong
      local pre = thread_of { { "input", { input = "go" } },
        { "prefetch", { name = "order", result = big } } }
      local pmsgs = context.chat(pre, agent_with({ policies = {
        prefetch = { truncate = 10 } } }, { read_more = context.read_more }),
        nil, { dry = true })
      assert.matches("event 2 of this thread%]$", pmsgs[2].content)
      local more = context.read_more.run({ seq = 3, from = 41 },
        { thread = t })
      assert.are.equal(big:sub(41, 41 + 7999), more:sub(1, 3960))
    end)

    it("drops: an answer becomes a note, anything else disappears",
      function()
      local t = thread_with_big_result()
      t:append("error", { error = "the model answered in prose" })
      t:append("human_response", { kind = "ask", answer = "yes" })
      local msgs = context.chat(t, agent_with({ policies = {
        error = "drop", human_response = "drop" } }), nil, { dry = true })
      assert_valid_chat(msgs)
      -- the error without a call is gone; the latest human answer is
      -- pinned, so it stays
      assert.are.equal(6, #msgs)
      assert.matches("^%[omitted by the context policy %(%d+ tokens%); the "
        .. "whole result is event 5 of this thread%]$", msgs[5].content)
      assert.are.equal("A person answered: yes", msgs[6].content)
    end)

    it("summarizes a long result once, with the mock model", function()
      local seen = 0
      mock = h.mock { rules = { { reply = function(conv)
        seen = seen + 1
        assert(conv.system:find("Summarize this tool result"))
        return { text = "digits 0-9, repeated 400 times" }
      end } } }
      local t = thread_with_big_result()
      local a = agent_with({ policies = { tool_result = { summarize = 50 } } })
      local model = { provider = "openai", name = "mock-1",
                      base_url = mock.url(), timeout_ms = 5000 }
      local msgs = context.chat(t, a, nil, { model = model })
      assert.are.equal(1, seen)
      assert.are.equal("event_summary", t.events[6].type)
      assert.are.equal(3, t.events[6].data.of)
      assert.are.equal("[summary of event 3, 1000 tokens]\ndigits 0-9, "
        .. "repeated 400 times", msgs[3].content)
      context.chat(t, a, nil, { model = model })
      assert.are.equal(1, seen) -- the summary is reused
    end)
  end)

  describe("validity", function()
    it("holds after a crash left a call without its result, after "
      .. "truncation, drops and compaction, whatever the mix", function()
      -- Seeded random threads: calls answered, unanswered, errored,
      -- answered twice; results of any size; random policies.
      local seed = 12345
      local function rand(n)
        seed = (seed * 1103515245 + 12345) % 2147483648
        return seed % n + 1
      end
      for _ = 1, 60 do
        local events = { { "input", { input = "task" } } }
        local id = 0
        for _ = 1, rand(12) do
          local calls = {}
          for _ = 1, rand(3) - 1 do
            id = id + 1
            calls[#calls + 1] = call("c" .. id, "t" .. rand(3))
          end
          events[#events + 1] = { "model_call", { text = rand(2) == 1
            and "thinking" or nil, tool_calls = calls } }
          for _, c in ipairs(calls) do
            local r = rand(5)
            if r == 1 then -- a crash: no result
            elseif r == 2 then
              events[#events + 1] = { "error", { call_id = c.id,
                name = c.name, error = "bad" } }
            else
              events[#events + 1] = { "tool_result", { call_id = c.id,
                name = c.name, result = string.rep("x", rand(3000)) } }
            end
            if r == 5 then -- a duplicate answer
              events[#events + 1] = { "tool_result", { call_id = c.id,
                name = c.name, result = "again" } }
            end
          end
          if rand(4) == 1 then
            events[#events + 1] = { "human_response", { kind = "ask",
              answer = "sure" } }
          end
        end
        local t = thread_of(events)
        local policies = { tool_result = ({ "keep", "drop",
          { truncate = 20 } })[rand(3)], error = ({ "keep", "drop" })[rand(2)] }
        local a = agent_with({ tokens = 400 + rand(1500), reserve = 100,
          policies = policies, compact = false })
        assert_valid_chat((context.chat(t, a, nil, { dry = true })))
        -- and with a compaction covering a random prefix of whole units
        local plan = window.plan(t, a, {})
        plan.fold = {}
        for i = 2, rand(#plan.units) do
          if not plan.units[i].pinned then
            plan.fold[#plan.fold + 1] = plan.units[i]
          end
        end
        if #plan.fold > 0 then
          t:append("compaction", { upto = plan.fold[#plan.fold].last,
            ranges = window.fold_ranges(plan), summary = "so far, so good" })
          assert_valid_chat((context.chat(t, a, nil, { dry = true })))
        end
      end
    end)
  end)

  describe("budget", function()
    it("comes from the model or the agent, less the reply's reserve",
      function()
      local s = window.settings({}, { context_tokens = 8000, max_tokens = 500 })
      assert.are.equal(8000, s.tokens)
      assert.are.equal(500, s.reserve)
      s = window.settings({ window = { tokens = 3000, reserve = 300 } },
        { context_tokens = 8000, max_tokens = 500 })
      assert.are.equal(3000, s.tokens)
      local config = require "spool.base.config"
      local m = assert(config.resolve_model({ mock = "on" },
        { context_tokens = 9000, max_tokens = 300 }))
      s = window.settings({}, m)
      assert.are.equal(9000, s.tokens)
      assert.are.equal(300, s.reserve)
      s = window.settings({}, {})
      assert.are.equal(128000, s.tokens)
      assert.are.equal(4096, s.reserve)
      local plan = window.plan(thread_of { { "input", { input = ("w"):rep(400) } } },
        agent_with({ tokens = 1000, reserve = 200 }), { fixed_tokens = 50 })
      assert.are.equal(800, plan.limit)
      assert.are.equal(50 + 104, plan.total) -- 100 tokens + 4 of framing
    end)

    it("calibrates estimates from the provider's reported usage", function()
      local t = thread_of { { "input", { input = ("w"):rep(400) } } }
      assert.are.equal(1, tokens.factor(t.events))
      t:append("model_call", { text = "ok", context = { estimate = 200 },
                               usage = { input_tokens = 300 } })
      assert.are.equal(1.5, tokens.factor(t.events))
      assert.are.equal(150, tokens.estimate(("w"):rep(400), 1.5))
      t:append("model_call", { text = "ok", context = { estimate = 100 },
                               usage = { input_tokens = 1000 } })
      assert.are.equal(3, tokens.factor(t.events)) -- clamped
      -- and a cut never splits a UTF-8 character
      assert.are.equal("é", tokens.head("éé", 0.75))
    end)

    it("never drops a pinned event, whatever the policy", function()
      local t = thread_of { { "input", { input = "the task" } },
                            { "model_call", { text = "ok" } } }
      local msgs = context.chat(t, agent_with({ policies = { input = "drop" } }),
        nil, { dry = true })
      assert.are.same({ role = "user", content = "the task" }, msgs[1])
      -- but a pinned event may still be cut
      local long = thread_of { { "input", { input = ("w"):rep(4000) } } }
      msgs = context.chat(long, agent_with({ policies = {
        input = { truncate = 100 } } }), nil, { dry = true })
      assert.matches("cut by the context policy", msgs[1].content)
    end)

    it("cuts results at a quarter of a small budget by default", function()
      local s = window.settings(agent_with({ tokens = 2000, reserve = 300 }))
      assert.are.same({ truncate = 425 }, s.policies.tool_result)
      s = window.settings(agent_with(nil), {})
      assert.are.same({ truncate = 4000 }, s.policies.tool_result)
      s = window.settings(agent_with({ tokens = 2000, reserve = 300,
        policies = { tool_result = "keep" } }))
      assert.are.equal("keep", s.policies.tool_result)
    end)

    it("is kept as a last resort by leaving out recent parts, then cutting "
      .. "the newest results", function()
      -- three results of ~1,800 tokens each, kept whole by the policy, in
      -- a window of 1,700: compaction off
      local events = { { "input", { input = "read" } } }
      for i = 1, 3 do
        events[#events + 1] = { "model_call", { tool_calls = {
          call("c" .. i, "fetch") } } }
        events[#events + 1] = { "tool_result", { call_id = "c" .. i,
          name = "fetch", result = ("x"):rep(7200) } }
      end
      local t = thread_of(events)
      local a = agent_with({ tokens = 2000, reserve = 300, compact = false,
        policies = { tool_result = "keep" } })
      local msgs, plan = context.chat(t, a, nil, { fixed_tokens = 100 })
      assert_valid_chat(msgs)
      assert.is_true(plan.total <= plan.limit, plan.total .. " tokens")
      assert.is_nil(plan.overflow)
      -- the older calls are left out, the newest result is cut to fit
      assert.are.equal("read", msgs[1].content)
      assert.matches("^%[2 earlier parts of this conversation were omitted",
        msgs[2].content)
      assert.are.equal("c3", msgs[#msgs].tool_call_id)
      assert.matches("%[… %d+ of 1800 tokens cut to fit the context window%]$",
        msgs[#msgs].content)
      assert.are.equal(7, #t.events) -- no warning: it fits
      -- what spool prompt shows
      local _, dry = context.chat(t, a, nil, { fixed_tokens = 100, dry = true })
      local actions = {}
      for _, r in ipairs(dry.report) do
        actions[r.seq] = r.action
      end
      assert.are.equal("omitted: over the budget", actions[2])
      assert.are.equal("truncated: over the budget", actions[7])
    end)

    it("cuts a result beside a person's pinned answer, never the answer",
      function()
      local t = thread_of {
        { "input", { input = "read, then ask" } },
        { "model_call", { tool_calls = { call("c1", "fetch"),
                                         call("c2", "ask_human") } } },
        { "tool_result", { call_id = "c1", name = "fetch",
                           result = ("x"):rep(12000) } },
        { "human_response", { kind = "ask", call_id = "c2",
                              answer = ("yes, "):rep(40) } },
        { "tool_result", { call_id = "c2", name = "ask_human",
                           result = ("yes, "):rep(40) } },
      }
      local msgs, plan = context.chat(t, agent_with({ tokens = 2000,
        reserve = 300, compact = false, policies = { tool_result = "keep" } }))
      assert_valid_chat(msgs)
      assert.is_nil(plan.overflow)
      assert.is_true(plan.total <= plan.limit)
      assert.matches("cut to fit the context window%]$", msgs[3].content)
      assert.are.equal(("yes, "):rep(40), msgs[4].content)
    end)

    it("never makes a result longer by cutting it", function()
      local calls, events = {}, { { "input", { input = "fan out" } } }
      for i = 1, 30 do
        calls[i] = call("c" .. i, "fetch")
      end
      events[2] = { "model_call", { tool_calls = calls } }
      for i = 1, 30 do
        events[#events + 1] = { "tool_result", { call_id = "c" .. i,
          name = "fetch", result = ("y"):rep(280) } }
      end
      local a = agent_with({ tokens = 2000, reserve = 300, compact = false })
      local plan = window.plan(thread_of(events), a)
      local before = plan.total
      window.drop_overflow(plan)
      assert.is_true(plan.total <= before, plan.total .. " > " .. before)
      assert.are.equal(plan.total - plan.limit, plan.overflow)
    end)

    it("says so in an event and a warning when nothing can make it fit",
      function()
      local t = thread_of { { "input", { input = ("w"):rep(12000) } } }
      local a = agent_with({ tokens = 2000, reserve = 300 })
      local _, plan = context.chat(t, a, nil, { dry = true })
      assert.is_true(plan.overflow > 1000)
      assert.are.equal(1, #t.events) -- a dry render adds nothing
      local msgs
      msgs, plan = context.chat(t, a, nil, {})
      assert.are.equal(1, #msgs)
      local ev = t.events[#t.events]
      assert.are.equal("warning", ev.type)
      assert.are.equal("window", ev.data.about)
      assert.are.equal(1700, ev.data.budget)
      assert.are.equal(plan.total, ev.data.tokens)
      assert.matches("^the request is %d+ tokens over the window's budget of "
        .. "1700, with nothing left to cut", ev.data.message)
    end)

    it("refuses malformed window settings", function()
      for _, w in ipairs { { tokens = 0 }, { policies = { x = "shrink" } },
                           { tokens = 100, reserve = 100 },
                           { policies = { x = { truncate = -1 } } },
                           { compact = "yes" } } do
        assert.is_string(window.check(w))
      end
      assert.is_nil(window.check({ tokens = 100, policies = {
        tool_result = { summarize = 10 }, error = "drop" }, compact = false }))
    end)
  end)

  describe("across steps", function()
    local llm = require "spool.llm"

    -- A thread as a run has it: with a run record, where the memo lives.
    local function running(events)
      local t = thread_of(events)
      task.begin_run(t, {})
      return t
    end

    local function body(t, agent, opts)
      return llm.request(run_request.request(t, agent, opts)).body
    end

    it("a step reuses what earlier steps rendered and sends the same bytes "
      .. "as a fresh render", function()
      local agent = agent_with({ policies = { tool_result = {
        truncate = 50 } } })
      local t = running { { "input", { input = "count" } } }
      local renderers = context.chat_renderers
      local plain = renderers.tool_result
      finally(function() renderers.tool_result = plain end)
      for i = 1, 8 do
        t:append("model_call", { text = i == 3 and "thinking" or nil,
          tool_calls = { call("c" .. i, "add", '{"a":' .. i .. '}') },
          usage = { input_tokens = 90 + i }, context = { estimate = 80 } })
        if i == 4 then
          t:append("error", { call_id = "c4", name = "add", error = "no" })
        else -- one result long enough to be cut
          t:append("tool_result", { call_id = "c" .. i, name = "add",
            result = i == 6 and ("x"):rep(400) or tostring(i) })
        end
        if i == 7 then -- a hot patch of a renderer shows from then on
          renderers.tool_result = function(ev)
            local m = plain(ev)
            m.content = "result: " .. m.content
            return m
          end
        end
        local fresh = body(t, agent)
        assert.are.equal(fresh, body(t, agent, { memo = true }))
        assert.are.equal(fresh, body(t, agent, { memo = true }))
      end
      local sent = json.decode(body(t, agent, { memo = true })).messages
      assert.are.equal("result: 8", sent[#sent].content)
      assert.matches("cut by the context policy", sent[13].content)
      assert.is_table(task.runs[t].render_memo)
    end)

    it("renders afresh with a renderer put in place of a built-in one, and "
      .. "keeps nothing of what a compaction covers", function()
      local agent = agent_with()
      local t = running {
        { "input", { input = "go" } },
        { "model_call", { tool_calls = { call("c1", "add") } } },
        { "tool_result", { call_id = "c1", name = "add", result = "1" } },
        { "model_call", { tool_calls = { call("c2", "add") } } },
        { "tool_result", { call_id = "c2", name = "add", result = "2" } },
      }
      local renderers = context.chat_renderers
      local plain = renderers.tool_result
      finally(function() renderers.tool_result = plain end)
      local n = 0
      renderers.tool_result = function(ev) -- not a function of ev alone
        n = n + 1
        local m = plain(ev)
        m.content = m.content .. " (render " .. n .. ")"
        return m
      end
      for i = 1, 2 do
        local sent = json.decode(body(t, agent, { memo = true })).messages
        assert.are.equal("2 (render " .. 2 * i .. ")", sent[5].content)
      end
      assert.is_nil(task.runs[t].render_memo.walk)
      renderers.tool_result = plain
      body(t, agent, { memo = true })
      assert.is_userdata(task.runs[t].render_memo.walk)
      t:append("compaction", { upto = 3, summary = "added 1",
        ranges = json.array { json.array { 2, 3 } } })
      local sent = json.decode(body(t, agent, { memo = true })).messages
      assert.matches("added 1", sent[2].content)
      -- input, summary, c2 and its result: nothing of what was compacted
      assert.are.equal(4, #sent)
      assert.are.equal(body(t, agent), body(t, agent, { memo = true }))
    end)

    it("walks only a step's new events, and plans as a fresh render does "
      .. "while the factor, open calls, pins and summaries change", function()
      local agent = agent_with({ policies = { tool_result = { truncate = 50 },
        error = { summarize = 50 }, prefetch = "drop" } })
      local t = running { { "input", { input = "go" } } }
      local shown, walks = { c1 = {}, c3 = {} }, {}
      -- Each step appends events; then the memo's request must equal a
      -- fresh one, byte for byte.
      local function step(evs)
        for _, e in ipairs(evs) do
          t:append(e[1], e[2])
        end
        local fresh = body(t, agent)
        assert.are.equal(fresh, body(t, agent, { memo = true }))
        assert.are.equal(fresh, body(t, agent, { memo = true }))
        local w = task.runs[t].render_memo.walk
        walks[#walks + 1] = w or false
        if w then
          assert.are.equal(#t.events, w:walked())
        end
        for _, m in ipairs(json.decode(fresh).messages) do
          assert.is_falsy(type(m.content) == "string"
            and m.content:find("Fetched before"))
          local seen = shown[m.tool_call_id]
          if seen then
            seen[#seen + 1] = m.content
          end
        end
      end
      -- factor = input_tokens / 100: at 1.5 a 200-byte result is cut (75
      -- tokens, over 50), at 0.8 it is shown whole (40)
      local function model_call(calls, input_tokens)
        return { "model_call", { tool_calls = calls, context = {
          estimate = 100 }, usage = { input_tokens = input_tokens } } }
      end
      local long = ("r"):rep(200)
      step {}
      step { model_call({ call("c1", "add"), call("c2", "add") }, 150) }
      step { { "tool_result", { call_id = "c1", name = "add",
                                result = long } } } -- c2 still open
      step { { "tool_result", { call_id = "c2", name = "add",
                                result = "2" } } }
      step { model_call({ call("c3", "add") }, 80) }
      step { { "error", { call_id = "c3", name = "add",
                          error = ("e"):rep(200) } },
             { "event_summary", { of = 6, summary = "many e" } } }
      step { model_call({ call("c4", "add") }, 150),
             { "prefetch", { name = "news", result = "dropped" } } }
      step { { "tool_result", { call_id = "c4", name = "add",
                                result = "4" } } }
      assert.are.equal(walks[1], walks[#walks]) -- one walk, carried on
      step { { "human_response", { kind = "ask", answer = "go on" } } }
      assert.are_not.equal(walks[1], walks[#walks]) -- pins moved: afresh
      step { model_call({ call("c5", "add") }, 120),
             { "compaction", { upto = 4, summary = "added", ranges =
                               json.array { json.array { 2, 4 } } } } }
      assert.are_not.equal(walks[#walks - 1], walks[#walks])
      step { { "tool_result", { call_id = "c5", name = "add", result = "5" } },
             { "intent", { call_id = "c5", name = "add", args = {} } } }
      assert.are.equal(walks[#walks - 1], walks[#walks])
      -- a renderer put in for a type that had none shows that type's
      -- earlier events too
      local renderers = context.chat_renderers
      finally(function() renderers.intent = nil end)
      renderers.intent = function(ev)
        return { role = "user", content = "meant " .. ev.data.name }
      end
      step {}
      assert.is_nil(task.runs[t].render_memo.walk) -- nor is it kept: not a built-in
      -- c1 waited for its answer; the long result was cut or shown whole
      -- as the factor moved, until a compaction folded it away
      local c1 = shown.c1
      assert.are.equal(8, #c1)
      assert.matches("no result was recorded", c1[1])
      assert.matches("cut by the context policy", c1[2])
      assert.are.equal(long, c1[4])
      assert.matches("cut by the context policy", c1[6])
      assert.are.equal("error: " .. ("e"):rep(200), shown.c3[2])
      assert.matches("^%[summary of event 6, 78 tokens%]\nmany e$",
        shown.c3[3])
    end)

    it("sends what a fresh render sends at every step of random threads, "
      .. "over budget and cut to fit as well", function()
      local seed = os.time()
      math.randomseed(seed)
      for round = 1, 60 do
        local agent = agent_with({ tokens = math.random(400, 3000),
          reserve = 100, compact = false, policies = {
            tool_result = ({ "keep", "drop", { truncate = 40 } })[
              math.random(3)],
            error = ({ "keep", { truncate = 30 } })[math.random(2)] } })
        local t = running { { "input", { input = "go" } } }
        local id = 0
        for n = 1, math.random(1, 12) do
          local calls = {}
          for _ = 1, math.random(0, 3) do
            id = id + 1
            calls[#calls + 1] = call("c" .. id, "f")
          end
          t:append("model_call", { tool_calls = calls, context = {
            estimate = 100 }, usage = { input_tokens = math.random(40, 250) } })
          local why = string.format("seed %d, round %d, step %d", seed,
            round, n)
          -- answered in any order, some twice, some never, some in a
          -- later step
          for i = #calls, 1, -1 do
            local j = math.random(i)
            calls[i], calls[j] = calls[j], calls[i]
          end
          for _, c in ipairs(calls) do
            local r = math.random(6)
            if r == 1 then
              t:append("error", { call_id = c.id, name = "f",
                error = ("e"):rep(math.random(1, 3000)) })
            elseif r > 2 then
              t:append("tool_result", { call_id = c.id, name = "f",
                result = ("r"):rep(math.random(1, 4000)) })
            end
            if r == 6 then
              t:append("tool_result", { call_id = c.id, name = "f",
                result = "again" })
            end
            if math.random(3) == 1 then
              assert.are.equal(body(t, agent), body(t, agent,
                { memo = true }), why)
            end
          end
          if math.random(8) == 1 then
            t:append("human_response", { kind = "ask", answer = "on" })
          end
          assert.are.equal(body(t, agent), body(t, agent, { memo = true }),
            why)
        end
      end
    end)

    -- The walk the loop's steps keep is in C (l_walk.c); every other plan
    -- walks in Lua. On random threads of every event type, policy and
    -- shape, at every step, both plan the same units, tokens, messages,
    -- folds and cuts.
    it("plans in C as the walk in Lua does, on random threads of every "
      .. "kind of event", function()
      local seed = os.time()
      math.randomseed(seed)
      local r = math.random
      local function pick(list)
        return list[r(#list)]
      end
      local function shape(plan)
        local units = {}
        for i, u in ipairs(window.units(plan)) do
          local msgs = {}
          for j, m in ipairs(u.messages) do
            msgs[j] = json.encode(m)
          end
          units[i] = { msgs, u.bytes, u.overhead, u.first, u.last,
                       u.kind or false, u.tokens, u.pinned }
        end
        local fold = {}
        for i, u in ipairs(plan.fold or {}) do
          fold[i] = { u.first, u.last }
        end
        return { units = units, fold = fold, total = plan.total,
                 at_one = window.tokens(plan, 1), limit = plan.limit,
                 summary = plan.summary and plan.summary.seq or false,
                 pinned_call = plan.pinned_call or false,
                 needs = #plan.needs_summary }
      end
      local function messages(plan)
        local out = {}
        for i, m in ipairs(window.messages(plan)) do
          out[i] = json.encode(m)
        end
        return out
      end
      for round = 1, 80 do
        local policy = { "keep", "drop", { truncate = r(5, 60) },
                         { summarize = r(5, 60) } }
        local agent = agent_with({ tokens = r(300, 4000), reserve = 100,
          compact = pick { false, nil }, keep_recent = r(1, 4),
          policies = { tool_result = pick(policy), error = pick(policy),
                       prefetch = pick(policy), model_call = pick(policy),
                       input = pick { "keep", "drop" } } })
        local t = running { { "input", { input = ("go "):rep(r(1, 50)) } } }
        local id, open, kinds = 0, {}, nil
        local function event()
          local k = pick(kinds)
          if k == "model_call" then
            local calls = {}
            for _ = 1, r(0, 3) do
              id = id + 1
              local c = call(r(6) == 1 and "c" .. math.max(1, id - 1)
                or "c" .. id, pick { "f", "g" }, ("a"):rep(r(0, 300)))
              calls[#calls + 1] = c
              open[#open + 1] = c
            end
            return "model_call", { tool_calls = calls,
              text = pick { nil, "", ("t"):rep(r(1, 400)) },
              dropped_tool_calls = r(12) == 1 and 40 or nil,
              context = { estimate = 100 },
              usage = { input_tokens = r(40, 300) } }
          elseif k == "answer" and #open > 0 then
            local c = table.remove(open, r(#open))
            if r(5) == 1 then
              return "error", { call_id = c.id, name = c.name,
                                error = ("e"):rep(r(1, 2000)) }
            end
            return "tool_result", { call_id = c.id, name = c.name,
              result = pick { ("r"):rep(r(1, 3000)), { n = r(100) }, 7 },
              edited_args = r(10) == 1 and { a = 1 } or nil }
          elseif k == "loose" then
            return pick { "tool_result", "error" }, { name = "h",
              result = "free", error = "bad" }
          elseif k == "quiet" then -- (no chat renderer)
            return pick { "intent", "started", "human_request",
              "warning" }, { call_id = open[1] and open[1].id, name = "f" }
          elseif k == "human" then
            return "human_response", { kind = pick { "ask", "approval" },
              answer = "on", call_id = r(2) == 1 and open[1]
                and open[1].id or nil, via = r(4) == 1 and "slack" or nil }
          elseif k == "prefetch" then
            return "prefetch", { name = "news", result = ("p"):rep(r(1, 900)),
                                 error = r(4) == 1 and "down" or nil }
          elseif k == "summary" then
            return "event_summary", { of = r(1, #t.events), summary = "short" }
          elseif k == "compaction" then -- (ranges unsorted, overlapping)
            local upto = r(1, #t.events)
            local ranges = json.array()
            for _ = 1, r(1, 4) do
              local a = r(1, upto)
              ranges[#ranges + 1] = json.array { a, r(a, upto) }
            end
            return "compaction", { upto = upto, summary = "so far",
              ranges = ranges }
          elseif k == "input" then
            return "input", { input = "and also" }
          end
          return "model_call", { text = "fine", context = { estimate = 100 },
                                 usage = { input_tokens = r(40, 300) } }
        end
        kinds = { "model_call", "model_call", "answer", "answer", "answer",
          "loose", "quiet", "human", "prefetch", "summary", "compaction",
          "input" }
        for n = 1, r(1, 25) do
          for _ = 1, r(1, 3) do
            t:append(event())
          end
          local why = string.format("seed %d, round %d, step %d", seed,
            round, n)
          local fresh = window.plan(t, agent)
          local kept = window.plan(t, agent, { memo = window.memo(t) })
          assert.are.same(messages(fresh), messages(kept), why)
          assert.are.same(shape(fresh), shape(kept), why)
          if fresh.total > fresh.limit then
            window.drop_overflow(fresh)
            window.drop_overflow(kept)
            assert.are.same(messages(fresh), messages(kept), why)
            assert.are.same(shape(fresh), shape(kept), why)
            assert.are.equal(fresh.overflow, kept.overflow, why)
          end
        end
      end
    end)

    -- What a review of the walk in C found (each failed before).
    describe("the walk in C, on hostile input", function()
      local function kept(t, agent)
        return window.plan(t, agent, { memo = window.memo(t) })
      end

      it("refuses a call into a walk while it walks", function()
        local t = running { { "input", { input = "go" } } }
        local agent = agent_with()
        kept(t, agent)
        local w = task.runs[t].render_memo.walk
        local inner
        local name = setmetatable({}, { __tostring = function()
          inner = table.pack(pcall(w.advance, w, t, agent))
          return "f"
        end })
        for _ = 1, 40 do -- (enough to move its arrays, were it let in)
          t:append("model_call", { tool_calls = { { id = "c" .. #t.events,
            name = name, arguments = "{}" } } })
        end
        kept(t, agent)
        assert.is_false(inner[1])
        assert.matches("in use", inner[2])
      end)

      it("keeps what a run keeps from a context function's plans",
        function()
          local t = running { { "input", { input = "go" } } }
          local agent = agent_with()
          local _, plan = context.chat(t, agent, nil, { memo = {} })
          assert.is_nil(plan.walk)
          assert.is_nil(plan.forms)
          local req = loop.request(t, agent, { memo = true, dry = true })
          assert.is_nil(req.message_forms)
          assert.is_nil(req.context.plan.walk)
          assert.are.equal(1, #req.context.plan.report) -- (dry: reported)
          -- and a context function's plan does not write the request
          agent.context = function(thread, a, _, opts)
            local msgs, p = context.chat(thread, a, nil, opts)
            p.forms = { [msgs[1]] = '{"content":"go","role":"user"},"n":64' }
            return msgs, p
          end
          assert.is_nil(json.decode(body(t, agent, { memo = true })).n)
        end)

      it("reads an event's type whole, NUL bytes and all", function()
        local agent = agent_with()
        local t = running { { "input", { input = "go" } } }
        kept(t, agent)
        t:append("compaction\0x", { upto = 1, summary = "s", ranges =
          json.array { json.array { 1, 1 } } })
        t:append("model_call", { text = "ok" })
        assert.are.equal(body(t, agent), body(t, agent, { memo = true }))
      end)

      it("finds each event among many ranges at once", function()
        local agent = agent_with()
        local t = running { { "input", { input = "go" } } }
        for i = 1, 30 do
          t:append("model_call", { text = "m" .. i })
        end
        local ranges = json.array()
        for i = 30, 2, -1 do -- unsorted, overlapping, some empty
          ranges[#ranges + 1] = json.array { i, i + (i % 3) - 1 }
        end
        t:append("compaction", { upto = 31, summary = "s", ranges = ranges })
        t:append("model_call", { text = "after" })
        assert.are.equal(body(t, agent), body(t, agent, { memo = true }))
      end)
    end)

    it("cuts every place an answer goes, when a model repeats a call id",
      function()
      local agent = agent_with({ policies = { tool_result = {
        truncate = 20 } } })
      local t = running {
        { "input", { input = "go" } },
        { "model_call", { tool_calls = { call("c1", "add"),
                                         call("c1", "add") } } },
        { "tool_result", { call_id = "c1", name = "add",
                           result = ("r"):rep(1000) } },
      }
      local fresh = body(t, agent)
      assert.are.equal(fresh, body(t, agent, { memo = true }))
      local sent = json.decode(fresh).messages
      assert.are.equal(4, #sent)
      assert.matches("cut by the context policy", sent[3].content)
      assert.matches("cut by the context policy", sent[4].content)
    end)

    it("carries its walk on past a plan for another model", function()
      local agent = agent_with()
      local t = running { { "input", { input = "go" } } }
      body(t, agent, { memo = true })
      local w = task.runs[t].render_memo.walk
      context.structured(t, agent, nil, { dry = true })
      context.chat(t, agent, nil, { dry = true, model = { name = "other" } })
      t:append("model_call", { text = "ok" })
      body(t, agent, { memo = true })
      assert.are.equal(w, task.runs[t].render_memo.walk)
    end)

    it("is let go when the run stops", function()
      mock = h.scripted { { tool = "add", args = { a = 1, b = 2 } }, "3" }
      local t = h.run(h.agent({ tools = { add = { params = { a = "number",
        b = "number" }, run = function(args) return args.a + args.b end } } },
        mock), "1 + 2")
      assert.are.equal("done", t:status())
      assert.is_nil(task.runs[t]) -- the run's record, and its memo
    end)

    it("never hands what it keeps to an agent's context function, which "
      .. "may change the messages it gets", function()
      local agent = agent_with()
      agent.context = function(thread, a, _, opts)
        local msgs, plan = context.chat(thread, a, nil, opts)
        for _, m in ipairs(msgs) do
          m.content = (m.content or "") .. "!"
        end
        return msgs, plan
      end
      local t = running {
        { "input", { input = "go" } },
        { "model_call", { tool_calls = { call("c1", "add") } } },
        { "tool_result", { call_id = "c1", name = "add", result = "1" } },
      }
      for _ = 1, 3 do
        local sent = json.decode(body(t, agent, { memo = true })).messages
        assert.are.equal("go!", sent[1].content)
        assert.are.equal("1!", sent[3].content)
      end
    end)
  end)

  describe("compaction", function()
    local function long_thread(n)
      local events = { { "input", { input = "read the pages" } } }
      for i = 1, n do
        events[#events + 1] = { "model_call", { tool_calls = {
          call("c" .. i, "fetch", '{"page":' .. i .. '}') } } }
        events[#events + 1] = { "tool_result", { call_id = "c" .. i,
          name = "fetch", result = ("page " .. i .. " "):rep(60) } }
      end
      return thread_of(events)
    end

    local function summarizer()
      local requests = {}
      mock = h.mock { rules = { { reply = function(conv)
        requests[#requests + 1] = conv
        return { text = "Pages 1 to " .. select(2, conv.last_user:gsub(
          "<result of fetch>", "")) .. " were read." }
      end } } }
      return { provider = "openai", name = "mock-1", base_url = mock.url(),
               timeout_ms = 5000 }, requests
    end

    it("folds the oldest events into a summary event when over budget",
      function()
      local model, requests = summarizer()
      local t = long_thread(20)
      local a = agent_with({ tokens = 2000, reserve = 200 })
      local before = #t.events
      local msgs, plan = context.chat(t, a, nil, { model = model })
      assert_valid_chat(msgs)
      assert.are.equal(1, #requests)
      assert.matches("compact the history", requests[1].system)
      local ev = t.events[before + 1]
      assert.are.equal("compaction", ev.type)
      assert.matches("^Pages 1 to %d+ were read%.$", ev.data.summary)
      assert.is_true(plan.total <= plan.limit)
      -- pinned input first, then the summary, then the latest events
      assert.are.equal("read the pages", msgs[1].content)
      assert.matches("^Summary of earlier work %(events 2–%d+, compacted",
        msgs[2].content)
      assert.are.equal("c20", msgs[#msgs].tool_call_id)
      -- the originals stay for audit and replay
      assert.are.equal(before + 1, #t.events)
      -- the next render uses the summary without another call
      context.chat(t, a, nil, { model = model })
      assert.are.equal(1, #requests)
    end)

    it("takes its prompt from the project's prompts/compact.md", function()
      local model, requests = summarizer()
      local config = require "spool.base.config"
      local cfg = config.get()
      local dir, saved = h.tmpdir(), cfg.prompts_dir
      h.write_files(dir, { ["compact.md"] = "Squeeze {{#if x}}{{/if}}the "
        .. "history, team style." })
      cfg.prompts_dir = dir
      finally(function()
        cfg.prompts_dir = saved
        h.remove(dir)
      end)
      context.chat(long_thread(20), agent_with({ tokens = 2000,
        reserve = 200 }), nil, { model = model })
      assert.are.equal("Squeeze the history, team style.", requests[1].system)
    end)

    it("is shown, not made, by a dry render", function()
      local t = long_thread(20)
      local msgs, plan = context.chat(t, agent_with({ tokens = 2000,
        reserve = 200 }), nil, { dry = true })
      assert_valid_chat(msgs)
      assert.is_true(#plan.fold > 0)
      assert.are.equal(41, #t.events)
      assert.matches("omitted to fit the context window", msgs[2].content)
    end)

    it("without compaction, leaves the oldest out with a note", function()
      local t = long_thread(20)
      local msgs, plan = context.chat(t, agent_with({ tokens = 2000,
        reserve = 200, compact = false }))
      assert_valid_chat(msgs)
      assert.are.equal(41, #t.events)
      assert.is_true(plan.total <= plan.limit)
      assert.matches("^%[%d+ earlier parts of this conversation were omitted",
        msgs[2].content)
    end)

    it("applies to the structured rendering too", function()
      local model = summarizer()
      local t = long_thread(20)
      local msgs = context.structured(t, agent_with({ tokens = 2000,
        reserve = 200 }), nil, { model = model })
      assert.are.equal(1, #msgs)
      assert.matches("^<input>\nread the pages\n</input>\n\n<summary>\nPages 1 "
        .. "to %d+ were read%.\n</summary>", msgs[1].content)
      assert.matches("<fetch_result>\npage 20 ", msgs[1].content)
    end)
  end)

  it("keeps a 40-step thread with large tool outputs under a small budget, "
    .. "compacting once, and the agent finishes right", function()
    local compactions = 0
    mock = h.mock { rules = {
      { when = { system = "compact the history" }, reply = function(conv)
        compactions = compactions + 1
        local last = 0
        for p in conv.last_user:gmatch("page (%d+) of 40") do
          last = math.max(last, tonumber(p))
        end
        return { text = "Pages 1 to " .. last .. " of 40 were fetched." }
      end },
      { reply = function(conv)
        local last = conv.tool_results[#conv.tool_results]
        local page = last and tonumber(last.content:match("page (%d+) of 40"))
          or 0
        if page == 40 then
          return { text = "Read all 40 pages." }
        end
        return { tool = "fetch", args = { page = page + 1 } }
      end },
    } }
    local a = h.agent({
      max_steps = 45,
      window = { tokens = 5000, reserve = 500, compact = { target = 0.25 },
                 policies = { tool_result = { truncate = 100 } } },
      tools = { fetch = {
        description = "Fetch a page.", params = { page = "integer" },
        run = function(args)
          return ("page " .. args.page .. " of 40: lorem ipsum. "):rep(40)
        end } },
    }, mock)
    local t = h.run(a, "Read every page.", 30000)
    assert.are.equal("done", t:status())
    assert.are.equal("Read all 40 pages.", t:outcome())
    local n, results = 0, 0
    for _, ev in ipairs(t.events) do
      if ev.type == "compaction" then
        n = n + 1
      elseif ev.type == "tool_result" then
        results = results + 1
        assert.is_true(#ev.data.result > 1000) -- stored whole
      elseif ev.type == "model_call" then
        assert.is_true(ev.data.usage.input_tokens <= 5000,
          "step " .. ev.step .. " sent " .. ev.data.usage.input_tokens)
      end
    end
    assert.are.equal(1, n)
    assert.are.equal(1, compactions)
    assert.are.equal(40, results)
  end)

  it("keeps every request of a run within a small window whose results "
    .. "are each nearly as large", function()
    for _, compact in ipairs { true, false } do
      local asked = 0
      mock = h.mock { rules = {
        { when = { system = "compact the history" },
          reply = { text = "Earlier pages were fetched." } },
        { reply = function()
          asked = asked + 1
          if asked > 5 then
            return { text = "Done." }
          end
          return { tool = "fetch", args = { page = asked } }
        end },
      } }
      local a = h.agent({
        max_steps = 10,
        window = { tokens = 2000, reserve = 300,
                   compact = compact and {} or false },
        tools = { fetch = { description = "Fetch a page.",
          params = { page = "integer" },
          run = function() return ("lorem ipsum "):rep(600) end } },
      }, mock) -- ~1,800 tokens a result
      local t = h.run(a, "Fetch pages.", 30000)
      assert.are.equal("done", t:status())
      for _, ev in ipairs(t.events) do
        if ev.type == "model_call" and not ev.data.compaction then
          assert.is_true(ev.data.context.estimate <= 1700, string.format(
            "step %d estimated %d tokens", ev.step, ev.data.context.estimate))
        end
        assert.are_not.equal("warning", ev.type)
      end
      mock.close()
      mock = nil
    end
  end)

  it("pre-fetches concurrently, and the data is in the first request",
    function()
    local inflight, peak = 0, 0
    local server = assert(core.listen { host = "127.0.0.1", port = 0,
      handler = function(req)
        inflight = inflight + 1
        peak = math.max(peak, inflight)
        core.sleep(50)
        inflight = inflight - 1
        return { headers = { ["content-type"] = "application/json" },
                 body = json.encode({ path = req.path }) }
      end })
    local base = "http://127.0.0.1:" .. server:port()
    -- The agent's own requests reach loopback only where the project
    -- allows them (spool.lua: http = { allow = { ... } }).
    finally(h.allow_http { "127.0.0.1:" .. server:port() })
    local first
    mock = h.mock { rules = { { reply = function(conv)
      first = first or conv
      return { text = "done" }
    end } } }
    local spool = require "spool"
    local a = h.agent({ prefetch = {
      order = function(input)
        return json.decode(spool.http.get(base .. "/orders/" .. input).body)
      end,
      customer = function()
        return json.decode(spool.http.get(base .. "/customers/7").body)
      end,
      broken = function() error("no such service") end,
    } }, mock)
    local t = h.run(a, "5532")
    server:close()
    assert.are.equal("done", t:status(), select(2, t:outcome()))
    assert.are.equal(2, peak) -- the two fetches overlapped
    assert.are.same({ "input", "prefetch", "prefetch", "prefetch",
                      "model_call", "done" }, h.types(t))
    assert.are.equal("broken", t.events[2].data.name)
    assert.matches("no such service", t.events[2].data.error)
    local text = {}
    for _, m in ipairs(first.body.messages) do
      text[#text + 1] = type(m.content) == "string" and m.content or ""
    end
    text = table.concat(text, "\n")
    assert.matches('{"path":"/orders/5532"}', text, 1, true)
    assert.matches('{"path":"/customers/7"}', text, 1, true)
    assert.are.equal(0, first.turns) -- no round trip to ask for them
  end)

  it("spool prompt --thread shows what the model saw at a step", function()
    local project = h.tmpdir()
    h.write_files(project, {
      ["spool.lua"] = 'return { mock = "mock.lua" }',
      ["mock.lua"] = [[return { rules = {
        { when = { turns = 0 }, reply = { tool = "fetch", args = {} } },
        { reply = { text = "Fetched." } } } }]],
      ["prompts/reader.md"] = "Fetch, then say so.",
      ["agents/reader.lua"] = [[
        local spool = require "spool"
        return spool.agent { prompt = "reader.md",
          window = { policies = { tool_result = { truncate = 50 } } },
          tools = { fetch = { description = "Fetch.", params = {},
            run = function() return string.rep("abcd", 500) end } } }]],
    })
    local base = "--project " .. h.q(project) .. " --db "
      .. h.q(project .. "/t.db") .. " "
    local out, err, code = h.cli(base .. "run reader --json --input go")
    assert.are.equal(0, code, err)
    local id = h.json_lines(out)[1].thread
    out, err, code = h.cli(base .. "prompt reader --json --thread " .. id
      .. " --step 2")
    assert.are.equal(0, code, err)
    local v = json.decode(out)
    assert.is_true(v.seen)
    assert.are.equal(2, v.step)
    local by_type = {}
    for _, r in ipairs(v.events) do
      by_type[r.type] = r
    end
    assert.are.equal("truncated", by_type.tool_result.action)
    -- 2,000 bytes, counted with the calibration of step 1's usage
    assert.are.equal(math.ceil(2000 / 4 * v.factor) + 4,
      by_type.tool_result.tokens)
    assert.is_true(by_type.tool_result.shown < 100)
    local msgs = v.body.messages
    assert.are.equal("tool", msgs[#msgs].role)
    assert.matches("cut by the context policy", msgs[#msgs].content)
    assert.is_number(v.reported_input_tokens)
    assert.is_true(v.endpoint.mock)
    assert.matches("/chat/completions$", v.endpoint.url)
    -- the text form, and a step that never happened
    out, err, code = h.cli(base .. "prompt reader --thread " .. id
      .. " --step 1")
    assert.are.equal(0, code, err)
    assert.matches("step 1 %(as the model saw it%)", out)
    assert.matches("endpoint: POST http://127%.0%.0%.1:<mock>/v1/chat/"
      .. "completions · mock%-1 %(openai%) · the built%-in mock", out)
    assert.matches("seq  type", out)
    _, err, code = h.cli(base .. "prompt reader --thread " .. id
      .. " --step 9")
    assert.are.equal(1, code)
    assert.matches("has no step 9 %(it made 2%)", err)
    h.remove(project)
  end)
end)
