-- spool.llm against the mock model over real HTTP: every provider format,
-- whole and streamed, and every fault the mock can inject.
local h = require "spec.support"
local core = require "spool.core"
local config = require "spool.base.config"
local llm = require "spool.llm"
local runner = require "spool.run.runner"
local ratelimit = require "spool.model.ratelimit"
local pricing = require "spool.model.pricing"

local PROVIDERS = { "openai", "openai-responses", "anthropic" }

local ADD = { name = "add", description = "Add two numbers.",
              parameters = { type = "object", properties = {
                a = { type = "number" }, b = { type = "number" } } } }

local model_at = h.model_at

-- A mock that answers with `replies` in turn, one per request (the last
-- one repeats); `seen` collects every request.
local function sequence(replies)
  local seen = {}
  local mock = h.mock { rules = { { reply = function(conv)
    seen[#seen + 1] = conv
    return replies[math.min(#seen, #replies)]
  end } } }
  return mock, seen
end

local function ask(model, extra)
  local req = { model = model, system = "Be brief.",
                messages = { { role = "user", content = "hi" } } }
  for k, v in pairs(extra or {}) do
    req[k] = v
  end
  return llm.chat(req)
end

local settle = h.settle_mock

describe("spool.llm", function()
  local mock

  after_each(function()
    if mock then
      settle(mock)
      mock.close()
      mock = nil
    end
  end)

  for _, provider in ipairs(PROVIDERS) do
    for _, stream in ipairs { false, true } do
      local name = provider .. (stream and ", streamed" or "")

      it(name .. ": a tool call with its arguments, then text", function()
        local seen = {}
        mock = h.mock { rules = {
          { when = function(conv)
              seen[#seen + 1] = conv
              return conv.last == "tool"
            end, reply = { text = "The sum is 5." } },
          { reply = { tool = "add", args = { a = 2, b = 3 } } },
        } }
        local model = model_at(mock, provider)
        local pieces = {}
        local on_text = function(p) pieces[#pieces + 1] = p end
        local r1 = assert(ask(model, { tools = { ADD }, stream = stream,
                                       on_text = on_text }))
        assert.are.equal("tool_calls", r1.finish_reason)
        assert.are.equal(1, #r1.tool_calls)
        assert.are.equal("add", r1.tool_calls[1].name)
        assert.are.same({ a = 2, b = 3 }, r1.tool_calls[1].args)
        assert.is_string(r1.tool_calls[1].id)
        assert.is_true(r1.usage.input_tokens > 0)
        assert.is_true(r1.usage.output_tokens > 0)
        assert.are.equal(provider, r1.provider)
        local r2 = assert(ask(model, { stream = stream, on_text = on_text,
          messages = {
            { role = "user", content = "hi" },
            { role = "assistant", tool_calls = r1.tool_calls },
            { role = "tool", tool_call_id = r1.tool_calls[1].id,
              content = "5" } } }))
        assert.are.equal("The sum is 5.", r2.text)
        assert.are.equal("stop", r2.finish_reason)
        if stream then
          assert.is_true(#pieces > 1)
          assert.are.equal("The sum is 5.", table.concat(pieces))
        else
          assert.are.equal(0, #pieces)
        end
        -- The requests in the provider's own shape.
        local b1, b2 = seen[1].body, seen[2].body
        assert.are.equal(stream or nil, b1.stream)
        if provider == "openai" then
          assert.are.same({ role = "system", content = "Be brief." },
            b1.messages[1])
          assert.are.equal("function", b1.tools[1].type)
          assert.are.equal("add", b1.tools[1]["function"].name)
          assert.are.equal(stream or nil, stream and
            b1.stream_options.include_usage or nil)
          assert.are.equal("tool", b2.messages[4].role)
          assert.are.equal(r1.tool_calls[1].id, b2.messages[4].tool_call_id)
          assert.are.equal(r1.tool_calls[1].id,
            b2.messages[3].tool_calls[1].id)
        elseif provider == "openai-responses" then
          assert.are.equal("Be brief.", b1.instructions)
          assert.is_false(b1.store)
          assert.are.same({ role = "user", content = "hi" }, b1.input[1])
          assert.are.equal("add", b1.tools[1].name)
          assert.are.equal("function", b1.tools[1].type)
          assert.are.equal("function_call", b2.input[2].type)
          assert.are.equal("function_call_output", b2.input[3].type)
          assert.are.equal(b2.input[2].call_id, b2.input[3].call_id)
          assert.are.equal("5", b2.input[3].output)
        else
          assert.are.equal("Be brief.", b1.system)
          assert.are.equal(4096, b1.max_tokens)
          assert.are.equal("2023-06-01", seen[1].headers["anthropic-version"])
          assert.are.equal("add", b1.tools[1].name)
          assert.is_table(b1.tools[1].input_schema)
          assert.are.equal("tool_use", b2.messages[2].content[1].type)
          assert.are.same({ a = 2, b = 3 }, b2.messages[2].content[1].input)
          assert.are.equal("user", b2.messages[3].role)
          assert.are.same({ type = "tool_result", content = "5",
                            tool_use_id = r1.tool_calls[1].id },
            b2.messages[3].content[1])
        end
      end)

      it(name .. ": retries a 429, honouring retry-after-ms", function()
        mock = sequence {
          { status = 429, retry_after_ms = 20, error = "slow down" },
          { text = "ok" } }
        local r = assert(ask(model_at(mock, provider), { stream = stream }))
        assert.are.equal("ok", r.text)
        assert.are.equal(2, #r.attempts)
        assert.are.equal(429, r.attempts[1].status)
        assert.are.equal(20, r.attempts[1].retry_in_ms)
        assert.matches("returned HTTP 429: .*slow down", r.attempts[1].error)
        assert.are.equal(200, r.attempts[2].status)
        assert.is_nil(r.attempts[2].error)
      end)

      it(name .. ": recovers from a 500, an overload and a reset", function()
        mock = sequence {
          { status = 500, error = "boom" },
          { status = 529, error = "Overloaded" },
          { reset = true },
          { text = "ok" } }
        local r = assert(ask(model_at(mock, provider, { max_retries = 3 }),
          { stream = stream }))
        assert.are.equal("ok", r.text)
        assert.are.equal(4, #r.attempts)
        assert.are.equal(500, r.attempts[1].status)
        assert.are.equal(529, r.attempts[2].status)
        assert.matches("ECONNRESET", r.attempts[3].error)
      end)

      it(name .. ": fails naming the provider, status and attempts",
        function()
        mock = sequence { { status = 503, error = "down for maintenance" } }
        local r, err, attempts = ask(model_at(mock, provider),
          { stream = stream })
        assert.is_nil(r)
        assert.are.equal(3, #attempts)
        assert.matches("^EMODEL: " .. provider:gsub("%-", "%%-")
          .. " returned HTTP 503: .*down for maintenance %(after 3 "
          .. "attempts%)$", err)
      end)

      it(name .. ": does not retry what a retry cannot help", function()
        mock = sequence { { status = 400, error = "bad request" },
                          { text = "never" } }
        local r, err, attempts = ask(model_at(mock, provider),
          { stream = stream })
        assert.is_nil(r)
        assert.are.equal(1, #attempts)
        assert.matches("HTTP 400: .*bad request %(after 1 attempt%)$", err)
        -- x-should-retry overrides the status, either way.
        mock.close()
        mock = sequence {
          { status = 500, headers = { ["x-should-retry"] = "false" } },
          { text = "never" } }
        r, err = ask(model_at(mock, provider), { stream = stream })
        assert.is_nil(r)
        assert.matches("%(after 1 attempt%)$", err)
      end)

      it(name .. ": times out a slow first byte, then retries", function()
        mock = sequence { { text = "late", latency_ms = 400 },
                          { text = "ok" } }
        local r = assert(ask(model_at(mock, provider, stream
          and { first_token_timeout_ms = 50 } or { timeout_ms = 50 }),
          { stream = stream }))
        assert.are.equal("ok", r.text)
        assert.matches("ETIMEDOUT", r.attempts[1].error)
        settle(mock)
      end)
    end

    it(provider .. ": retries a stream cut short, saying the text shown "
      .. "starts again", function()
      mock = sequence { { text = "a longer answer", cut_after = 3,
                          chunk = 4 }, { text = "ok" } }
      local shown = {}
      local r = assert(ask(model_at(mock, provider), { stream = true,
        on_text = function(piece) shown[#shown + 1] = piece end,
        on_reset = function() shown[#shown + 1] = "<reset>" end }))
      assert.are.equal("ok", r.text)
      assert.matches("malformed stream from .*ended before",
        r.attempts[1].error)
      -- What was shown before the break (if any came) is reset first.
      local text = table.concat(shown)
      assert.is_true(text == "ok" or text:match("^a lo[^<]*<reset>ok$")
        ~= nil, text)
      if provider == "openai" then
        assert.matches("<reset>ok$", text)
      end
    end)

    it(provider .. ": retries after an error event in a 200 stream",
      function()
      mock = sequence {
        { text = "x", stream_error = { type = "overloaded_error",
                                       message = "Overloaded" } },
        { text = "ok" } }
      local r = assert(ask(model_at(mock, provider), { stream = true }))
      assert.are.equal("ok", r.text)
      assert.matches("reported an error in the stream: .*Overloaded",
        r.attempts[1].error)
    end)

    it(provider .. ": gives up on a stream that stalls", function()
      mock = sequence { { text = "a longer answer", stall_after = 2,
                          stall_ms = 300 } }
      local r, err = ask(model_at(mock, provider, { idle_timeout_ms = 50,
                                                    max_retries = 1 }),
        { stream = true })
      assert.is_nil(r)
      assert.matches("ETIMEDOUT: no data within 50 ms %(after 2 attempts%)$",
        err)
      settle(mock)
    end)
  end

  it("caps a long Retry-After at max_retry_after_ms", function()
    mock = sequence { { status = 429, retry_after = 100 }, { text = "ok" } }
    local r = assert(ask(model_at(mock, "openai",
      { max_retry_after_ms = 30 })))
    assert.are.equal(30, r.attempts[1].retry_in_ms)
  end)

  it("fails on a malformed body once the retries are spent", function()
    mock = sequence { { body = "<html>502 Bad Gateway</html>" } }
    local r, err = ask(model_at(mock, "anthropic", { max_retries = 1 }))
    assert.is_nil(r)
    assert.matches("^EMODEL: malformed reply from anthropic: the response "
      .. "is not JSON .* %(after 2 attempts%)$", err)
  end)

  it("reads how long to wait from the response headers", function()
    assert.are.equal(1500, llm.retry_after_ms({ ["retry-after-ms"] = "1500" }))
    assert.are.equal(2000, llm.retry_after_ms({ ["retry-after"] = "2" }))
    assert.are.equal(90000, llm.retry_after_ms(
      { ["x-ratelimit-reset-requests"] = "1m30s" }, 429))
    assert.are.equal(250, llm.retry_after_ms(
      { ["x-ratelimit-reset-tokens"] = "250ms" }, 429))
    assert.is_nil(llm.retry_after_ms(
      { ["x-ratelimit-reset-requests"] = "1m30s" }, 500))
    local soon = os.date("!%a, %d %b %Y %H:%M:%S GMT",
      (core.time() // 1000) + 60)
    local ms = llm.retry_after_ms({ ["retry-after"] = soon })
    assert.is_true(ms > 55000 and ms <= 60000, tostring(ms))
    assert.is_nil(llm.retry_after_ms({ ["retry-after"] = "whenever" }))
  end)

  it("stops a call in flight when its thread is cancelled", function()
    mock = h.mock { latency_ms = 1500, rules = { { reply = "too late" } } }
    local a = h.agent({}, mock)
    local t = runner.start(a, "x")
    h.wait_for(function() return mock.stats().inflight == 1 end, 5000,
      "the model call to start")
    assert.is_true(runner.cancel(t.id))
    h.wait_run(t)
    assert.are.equal("cancelled", t:status())
    assert.are.equal(0, core.stats().http_pending)
    assert.are_not.equal("model_call", t.events[#t.events - 1].type)
    settle(mock)
  end)

  it("records every attempt in the thread's events", function()
    local n = 0
    mock = h.mock { rules = { { reply = function()
      n = n + 1
      if n == 1 then
        return { status = 429, retry_after_ms = 1 }
      end
      return { text = "done" }
    end } } }
    local t = h.run(h.agent({}, mock), "x")
    assert.are.equal("done", t:status())
    local call = t.events[2]
    assert.are.equal("model_call", call.type)
    assert.are.equal(2, #call.data.attempts)
    assert.are.equal(429, call.data.attempts[1].status)
    assert.are.equal(200, call.data.attempts[2].status)
    -- and a failed call's attempts in the failure
    mock.close()
    mock = h.mock { rules = { { reply = { status = 500 } } } }
    t = h.run(h.agent({}, mock), "x")
    local last = t.events[#t.events]
    assert.are.equal("failed", last.type)
    assert.are.equal(3, #last.data.attempts)
    -- each names its provider and model, so metrics can count by provider
    assert.are.equal("openai", last.data.attempts[3].provider)
    assert.are.equal("mock-1", last.data.attempts[3].model)
  end)

  describe("rate limits", function()
    it("lets a minute's allowance go at once, then meters", function()
      local clock = 0
      local m = ratelimit.meter(60, function() return clock end)
      for _ = 1, 60 do
        assert.are.equal(0, m:take(1))
      end
      assert.are.equal(1000, m:take(1)) -- one a second from here on
      assert.are.equal(2000, m:take(1))
      clock = 1500
      assert.are.equal(1500, m:take(1)) -- waiters queue in order
      m:give_back(1)
      assert.are.equal(1500, m:take(1))
      clock = 600000 -- long idle: the allowance is back
      assert.are.equal(0, m:take(30))
      -- a token meter charges by size
      local t = ratelimit.meter(6000, function() return clock end)
      assert.are.equal(0, t:take(6000))
      assert.are.equal(100, t:take(10))
    end)

    it("queues calls to one provider key, within the deadline", function()
      mock = sequence { { text = "ok" } }
      local model = model_at(mock, "openai", { rpm = 1 })
      assert.are.equal("ok", assert(ask(model)).text)
      -- The next may go in a minute: too late for a deadline 1 s away.
      local r, err, attempts = ask(model, { deadline = core.time() + 1000 })
      assert.is_nil(r)
      assert.matches("the rate limit %(rpm 1, tpm nil%) would hold this call",
        err)
      assert.is_true(attempts[1].queued_ms > 50000)
      assert.are.equal(1, mock.stats().requests)
    end)
  end)

  it("falls back to the next model when one fails for good", function()
    mock = h.mock { rules = { { reply = function(conv)
      if conv.format == "anthropic" then
        return { status = 529, error = "Overloaded" }
      end
      return { text = "from " .. conv.format }
    end } } }
    local model = model_at(mock, "anthropic", { max_retries = 1,
      fallback = { { provider = "openai-responses", base_url = mock.url() } } })
    local r = assert(ask(model, { stream = true }))
    assert.are.equal("from openai-responses", r.text)
    assert.are.equal("openai-responses", r.provider)
    assert.are.equal(3, #r.attempts)
    assert.are.equal("anthropic", r.attempts[2].provider)
    assert.are.equal("openai-responses", r.attempts[3].provider)
    -- A fallback list is checked when the model is resolved.
    assert.is_nil(config.resolve_model({}, { fallback = { "x" } }))
  end)

  describe("cost and budgets", function()
    local cfg = config.get()
    local saved

    before_each(function()
      saved = cfg.file.prices
      cfg.file.prices = { ["mock-1"] = { input = 1000, output = 2000 } }
    end)

    after_each(function()
      cfg.file.prices = saved
    end)

    it("prices a call from the table, by the longest prefix", function()
      assert.are.equal(0.15 * 2 + 0.075 + 0.6,
        pricing.cost("gpt-4o-mini-2024-07-18", { input_tokens = 3e6,
          cached_tokens = 1e6, output_tokens = 1e6 }))
      assert.are.equal(2.5, pricing.cost("gpt-4o", { input_tokens = 1e6 }))
      assert.is_nil(pricing.cost("an-unlisted-model", { input_tokens = 10 }))
      -- the project's table first
      assert.are.equal(0.005, pricing.cost("mock-1", { input_tokens = 1,
        output_tokens = 2 }))
    end)

    it("records each step's cost and ends the thread at its cost budget",
      function()
      mock = h.mock { rules = { { reply = { tool = "add",
                                            args = { a = 1, b = 1 } } } } }
      local a = h.agent({ tools = { add = { params = { a = "number",
        b = "number" }, run = function(x) return x.a + x.b end } },
        max_steps = 50, budget = { cost_usd = 0.2 },
        on_budget = function(_, what) return "stopped by " .. what end },
        mock)
      local t = h.run(a, "add forever")
      assert.are.equal("done", t:status())
      assert.are.equal("stopped by cost_usd", t:outcome())
      local u = t:usage()
      assert.is_true(u.cost_usd >= 0.2)
      for _, ev in ipairs(t.events) do
        if ev.type == "model_call" then
          assert.are.equal(pricing.cost("mock-1", ev.data.usage),
            ev.data.cost_usd)
        end
      end
    end)

    it("ends a thread whose time is up, even mid-call", function()
      mock = h.mock { latency_ms = 400, rules = { { reply = "too slow" } } }
      local a = h.agent({ budget = { wall_ms = 100 },
        on_budget = function(_, what) return "out of " .. what end }, mock)
      local t = h.run(a, "x")
      assert.are.equal("done", t:status())
      assert.are.equal("out of wall_ms", t:outcome())
      settle(mock)
      -- without a hook, the thread fails saying which budget
      a = h.agent({ budget = { wall_ms = 100 } }, mock)
      t = h.run(a, "x")
      assert.are.equal("failed", t:status())
      assert.matches("the time budget %(100 ms%) is spent",
        select(2, t:outcome()))
      settle(mock)
    end)
  end)
end)

describe("the providers' usage", function()
  it("takes no negative or fractional token counts into budgets", function()
    local bodies = {
      openai = { '{"choices":[{"message":{"content":"hi"},"finish_reason":'
        .. '"stop"}],"usage":{"prompt_tokens":-500,"completion_tokens":'
        .. '-7,"total_tokens":1.5}}', "input_tokens" },
      ["openai-responses"] = { '{"id":"r","status":"completed","output":[{'
        .. '"type":"message","content":[{"type":"output_text","text":"hi"}]}'
        .. '],"usage":{"input_tokens":-500,"output_tokens":-7}}',
        "input_tokens" },
      anthropic = { '{"id":"m","content":[{"type":"text","text":"hi"}],'
        .. '"stop_reason":"end_turn","usage":{"input_tokens":-500,'
        .. '"output_tokens":-7}}', "input_tokens" },
    }
    for name, case in pairs(bodies) do
      local reply = assert(require("spool.llm").provider(name).parse(case[1]))
      assert.are.equal(0, reply.usage.input_tokens, name)
      assert.are.equal(0, reply.usage.output_tokens, name)
    end
  end)
end)


describe("model resolution", function()
  local config = require "spool.base.config"
  local loop = require "spool.loop"

  it("is one rule: an agent's base_url takes it off the mock, and a "
    .. "fallback keeps its model's URL and key", function()
    local base = { provider = "openai", name = "mock-1", mock = true,
                   api_key_env = "OPENAI_API_KEY", timeout_ms = 1000 }
    local m = config.derive_model(base, { base_url = "http://llm.local/v1/" })
    assert.is_nil(m.mock)
    assert.are.equal("http://llm.local/v1", m.base_url)
    assert.are.equal("gpt-4o-mini", m.name)
    assert.are.equal(1000, m.timeout_ms)
    local own = { provider = "openai", name = "big", base_url = "http://a/v1",
      api_key_env = "A_KEY", fallback = { { name = "small" },
        { provider = "anthropic", name = "claude-x" } } }
    local primary = config.derive_model(base, own)
    local same = config.derive_model(primary, primary.fallback[1], true)
    assert.are.equal("small", same.name)
    assert.are.equal("http://a/v1", same.base_url)
    assert.are.equal("A_KEY", same.api_key_env)
    assert.is_nil(same.fallback)
    local other = config.derive_model(primary, primary.fallback[2], true)
    assert.are.equal("https://api.anthropic.com/v1", other.base_url)
    assert.are.equal("ANTHROPIC_API_KEY", other.api_key_env)
    -- An agent whose project runs on the mock talks to its own URL.
    local mock = h.mock { rules = { { reply = { text = "from mine" } } } }
    finally(mock.close)
    local a = h.agent({ model = { base_url = mock.url(), max_retries = 0 } })
    assert.is_true(config.get().model.mock)
    assert.are.equal(mock.url(), loop.model_for(a).base_url)
    assert.are.equal("from mine", h.run(a, "hi"):outcome())
  end)
end)
