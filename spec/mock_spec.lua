-- spool.mock: the built-in mock model's rules and its HTTP surface.
local h = require "spec.support"
local mock_mod = require "spool.mock"
local spool = require "spool"
local json = spool.json
local http = require "spool.base.http" -- the engine's: it reaches loopback

local function body(messages, tools)
  return { model = "m", messages = messages, tools = tools }
end

describe("spool.mock", function()
  describe("conversation", function()
    it("derives what rules match on", function()
      local conv = mock_mod.conversation(body({
        { role = "system", content = "You sort messages." },
        { role = "user", content = "first" },
        { role = "assistant", content = json.null, tool_calls = {
          { id = "c1", type = "function", ["function"] = { name = "find",
            arguments = "{}" } } } },
        { role = "tool", tool_call_id = "c1", content = "found" },
      }, { { type = "function", ["function"] = { name = "find" } } }))
      assert.are.equal("You sort messages.", conv.system)
      assert.are.equal("first", conv.user)
      assert.are.equal("tool", conv.last)
      assert.are.equal("find", conv.after)
      assert.are.equal(1, conv.turns)
      assert.is_true(conv.tools.find)
      assert.are.same({ call_id = "c1", name = "find", content = "found" },
        conv.tool_results[1])
    end)
  end)

  describe("reply_for", function()
    local script = { rules = {
      { when = { system = "sort", turns = 0 }, reply = { tool = "find", args = {} } },
      { when = { after = "find" }, reply = "found it" },
      { when = function(conv) return conv.user == "magic" end, reply = { json = { ok = true } } },
    } }

    it("takes the first rule whose conditions all hold", function()
      assert.are.equal("find", mock_mod.reply_for(script, body({
        { role = "system", content = "sort this" },
        { role = "user", content = "x" } })).tool)
      assert.are.same({ text = "(mock) no rule matched this request" },
        (mock_mod.reply_for(script, body({ { role = "user", content = "x" } }))))
      assert.are.same({ json = { ok = true } },
        (mock_mod.reply_for(script, body({ { role = "user", content = "magic" } }))))
    end)

    it("rejects an unknown condition", function()
      assert.has_error(function()
        mock_mod.reply_for({ { when = { sytem = "x" }, reply = "y" } }, body({}))
      end, "mock rule: unknown condition 'sytem'")
    end)
  end)

  describe("server", function()
    it("answers in the OpenAI wire format, deterministically", function()
      local mock = h.mock { rules = { { reply = { tool_calls = {
        { name = "a", args = { x = 1 } }, { name = "b", args = "{}" } } } } } }
      local res, reply = http.post_json(mock.url() .. "/chat/completions",
        body({ { role = "user", content = "go" } }))
      mock.close()
      assert.are.equal(200, res.status)
      local msg = reply.choices[1].message
      assert.are.equal("tool_calls", reply.choices[1].finish_reason)
      assert.are.equal(json.null, msg.content)
      assert.are.equal("call_1_1", msg.tool_calls[1].id)
      assert.are.equal('{"x":1}', msg.tool_calls[1]["function"].arguments)
      assert.are.equal("call_1_2", msg.tool_calls[2].id)
      assert.is_true(reply.usage.prompt_tokens > 0)
    end)

    it("injects HTTP errors and raw bodies", function()
      local mock = h.mock { rules = {
        { when = { user = "fail" }, reply = { status = 429, error = "slow down" } },
        { reply = { body = "not json" } } } }
      local res, reply = http.post_json(mock.url() .. "/chat/completions",
        body({ { role = "user", content = "fail" } }))
      assert.are.equal(429, res.status)
      assert.are.equal("slow down", reply.error.message)
      res = http.post_json(mock.url() .. "/chat/completions",
        body({ { role = "user", content = "raw" } }))
      mock.close()
      assert.are.equal("not json", res.body)
    end)

    it("answers 400 to a body that is not JSON, and counts requests", function()
      local mock = h.mock { rules = { { reply = "ok" } } }
      local res = assert(http.request { url = mock.url()
        .. "/chat/completions", method = "POST", body = "{nope" })
      assert.are.equal(400, res.status)
      assert.matches("request body is not JSON", res.body)
      local stats = json.decode(assert(http.get(mock.url():gsub("/v1$", "")
        .. "/_mock/stats")).body)
      mock.close()
      assert.are.equal(1, stats.requests)
      assert.are.equal(1, stats.errors)
      assert.are.equal(0, stats.inflight)
    end)

    it("reports a script that raises as a 500", function()
      local mock = h.mock { rules = { { reply = function() error("bug") end } } }
      local res, reply = http.post_json(mock.url() .. "/chat/completions",
        body({ { role = "user", content = "x" } }))
      mock.close()
      assert.are.equal(500, res.status)
      assert.matches("mock script failed: .*bug", reply.error.message)
    end)
  end)
end)
