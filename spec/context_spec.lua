-- spool.context: rendering a thread for the model.
local context = require "spool.context"
local thread_mod = require "spool.run.thread"
local json = require "spool.json"

local function thread_of(events)
  local t = thread_mod.new("a", "v", nil, nil)
  for _, e in ipairs(events) do
    t.step = e.step or t.step
    t:append(e[1], e[2])
  end
  return t
end

local function call(id, name)
  return { id = id, name = name, arguments = "{}" }
end

describe("spool.context", function()
  describe("chat", function()
    it("renders input, calls and results as native chat messages", function()
      local msgs = context.chat(thread_of {
        { "input", { input = "hi" } },
        { "model_call", { text = "looking", tool_calls = { call("c1", "find") } } },
        { "intent", { call_id = "c1", name = "find", args = {} } },
        { "tool_result", { call_id = "c1", name = "find", result = { n = 1 } } },
      })
      assert.are.same({ role = "user", content = "hi" }, msgs[1])
      assert.are.equal("assistant", msgs[2].role)
      assert.are.equal("looking", msgs[2].content)
      assert.are.equal("c1", msgs[2].tool_calls[1].id)
      assert.are.same({ role = "tool", tool_call_id = "c1", name = "find",
                        content = '{"n":1}' }, msgs[3])
      assert.are.equal(3, #msgs)
    end)

    it("renders a table input as compact JSON", function()
      local msgs = context.chat(thread_of { { "input", { input = { b = 2, a = 1 } } } })
      assert.are.equal('{"a":1,"b":2}', msgs[1].content)
    end)

    it("answers every call, even one with no result in the thread", function()
      -- A crash left c2 without a result; c3 never ran (the thread ended).
      local msgs = context.chat(thread_of {
        { "input", { input = "go" } },
        { "model_call", { tool_calls = { call("c1", "a"), call("c2", "b"),
                                         call("c3", "c") } } },
        { "tool_result", { call_id = "c1", name = "a", result = "ok" } },
        { "error", { call_id = "c3", name = "c", error = "bad" } },
      })
      assert.are.equal(5, #msgs)
      -- in the order of the calls, whatever the order of the answers
      assert.are.same({ "c1", "c2", "c3" }, { msgs[3].tool_call_id,
        msgs[4].tool_call_id, msgs[5].tool_call_id })
      assert.matches("no result was recorded", msgs[4].content)
      assert.are.equal("error: bad", msgs[5].content)
    end)

    it("settles owed calls before the next message", function()
      local msgs = context.chat(thread_of {
        { "input", { input = "go" } },
        { "model_call", { tool_calls = { call("c1", "a") } } },
        { "error", { error = "a step-level problem" } },
      })
      assert.are.same({ "user", "assistant", "tool", "user" },
        { msgs[1].role, msgs[2].role, msgs[3].role, msgs[4].role })
      assert.are.equal("c1", msgs[3].tool_call_id)
      assert.matches("^error: a step%-level problem", msgs[4].content)
    end)

    it("drops a result for a call that is not pending", function()
      local msgs = context.chat(thread_of {
        { "input", { input = "go" } },
        { "tool_result", { call_id = "ghost", name = "a", result = 1 } },
      })
      assert.are.equal(1, #msgs)
    end)

    it("lets an agent replace the renderer of one event type", function()
      local msgs = context.chat(thread_of {
        { "input", { input = "go" } },
        { "model_call", { tool_calls = { call("c1", "big") } } },
        { "tool_result", { call_id = "c1", name = "big", result = ("x"):rep(1000) } },
      }, nil, { tool_result = function(ev)
        return { role = "tool", tool_call_id = ev.data.call_id,
                 content = ev.data.result:sub(1, 10) .. " [truncated]" }
      end })
      assert.are.equal("xxxxxxxxxx [truncated]", msgs[3].content)
    end)
  end)

  describe("structured", function()
    it("renders the thread as tagged blocks in one user message", function()
      local msgs = context.structured(thread_of {
        { "input", { input = "deploy v2" } },
        { "model_call", { tool_calls = { call("c1", "list_tags") } } },
        { "intent", { call_id = "c1", name = "list_tags", args = { repo = "x" } } },
        { "tool_result", { call_id = "c1", name = "list_tags",
                           result = json.array { "v1", "v2" } } },
        { "error", { error = "oops" } },
      })
      assert.are.equal(1, #msgs)
      assert.are.equal("user", msgs[1].role)
      assert.are.equal("<input>\ndeploy v2\n</input>\n\n"
        .. "<list_tags>\n{\"repo\":\"x\"}\n</list_tags>\n\n"
        .. "<list_tags_result>\n[\"v1\",\"v2\"]\n</list_tags_result>\n\n"
        .. "<error>\noops\n</error>", msgs[1].content)
    end)
  end)
end)
