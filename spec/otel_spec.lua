-- Traces (issue 25): the spans spool exports over OTLP/HTTP, as a receiver
-- built on the official OpenTelemetry protobuf definitions decodes them
-- (spec/npm/otlp_receiver.mjs: what a collector would accept, checked
-- strictly), from the command line and from spool serve; the traceparent
-- spool's own requests carry; a collector that is down, that answers 503,
-- that refuses a batch; the GenAI metrics on /metrics.
local h = require "spec.support"
local workers = require "spec.serve_support"
local json = require "spool.json"
local core = require "spool.core"
local trace = require "spool.run.trace"

local RECEIVER = h.ROOT .. "/spec/npm/otlp_receiver.mjs"
local TRACED = h.ROOT .. "/spec/fixtures/traced"
local DEMO_INPUT = "Hi, I'm Dana. My order 1001 arrived damaged: the mug was "
  .. "broken. I'd like a refund please."

-- The receiver, as a process of its own; stopped by the spec's finally.
local function receiver()
  local dir = h.tmpdir()
  local pid = tonumber((h.sh(string.format("node %s %s/port >%s/log 2>&1 & "
    .. "echo $!", h.q(RECEIVER), h.q(dir), h.q(dir)))))
  local port = h.wait_for(function()
    return tonumber(h.slurp(dir .. "/port"):match("%d+"))
  end, 10000, "the OTLP receiver to listen")
  local r = { url = "http://127.0.0.1:" .. port }
  function r.received()
    return json.decode((h.sh("curl -s -m 10 " .. r.url .. "/received")))
  end
  function r.script(list)
    h.sh(string.format("curl -s -m 10 -X POST --data-binary %s %s/control",
      h.q(json.encode({ script = list })), r.url))
  end
  -- Every span of the requests it accepted; none it could not decode.
  function r.spans()
    local out = {}
    for _, req in ipairs(r.received().requests) do
      assert.is_nil(req.error, "a request the receiver could not decode")
      if req.answered == 200 then
        for _, s in ipairs(req.spans) do
          out[#out + 1] = s
        end
      end
    end
    return out
  end
  function r.stop()
    h.sh("kill " .. pid .. " 2>/dev/null; rm -rf " .. h.q(dir))
  end
  finally(r.stop)
  return r
end

local function env_for(r, extra)
  return "OTEL_EXPORTER_OTLP_ENDPOINT=" .. r.url .. " " .. (extra or "")
end

-- `spool run` in a project (the demo's, by default), with the environment
-- given: its events (--json), stderr and exit code.
local function run(agent, input, env, project)
  local db = h.tmpdir()
  finally(function() h.remove(db) end)
  local out, err, code = h.cli(string.format("--project %s --db %s/s.db "
    .. "run %s --json --input %s", h.q(project or h.ROOT), h.q(db), agent,
    h.q(input)), nil, env)
  return h.json_lines(out), err, code
end

-- spool serve on a copy of the traced fixture, with the environment
-- given; stopped by the spec's finally.
local function serve_traced(env)
  local s, stop = workers.serve_copy(TRACED, "mock.lua", env)
  finally(stop)
  return s
end

local function by_id(spans)
  local t = {}
  for _, s in ipairs(spans) do
    t[s.spanId] = s
  end
  return t
end

local function named(spans, name)
  local out = {}
  for _, s in ipairs(spans) do
    if s.name == name then
      out[#out + 1] = s
    end
  end
  return out
end

local function ns(s)
  return tonumber(s)
end

-- The trace of a thread started without a traceparent: the first half of
-- its id's SHA-256.
local function trace_of(id)
  return core.sha256(id):sub(1, 32)
end

describe("traces", function()
  it("of the demo pipeline: a run per agent, a span per model call and "
    .. "tool call, with the GenAI attributes, in one tree", function()
    local r = receiver()
    local events, err, code = run("support", DEMO_INPUT, env_for(r,
      "OTEL_SERVICE_NAME=support-desk OTEL_RESOURCE_ATTRIBUTES="
      .. "deployment.environment.name=test,team=cx%2Cops"))
    assert.are.equal(0, code, err)
    -- What the threads did, from their own events.
    local calls, tools, top = {}, {}, nil
    for _, ev in ipairs(events) do
      top = top or (ev.parent == nil and ev.thread) or nil
      if ev.type == "model_call" then
        calls[ev.thread] = (calls[ev.thread] or 0) + 1
      elseif ev.type == "tool_result" or (ev.type == "error"
          and ev.data.call_id) then
        tools[#tools + 1] = { thread = ev.thread, call = ev.data.call_id,
                              name = ev.data.name, failed = ev.type == "error" }
      end
    end
    assert.truthy(top)
    assert.truthy(#tools > 0)
    local spans = r.spans()
    local index = by_id(spans)
    -- One trace, named by the thread's id (found from it).
    local trace_id = trace_of(top)
    for _, s in ipairs(spans) do
      assert.are.equal(trace_id, s.traceId, s.name)
      assert.truthy(ns(s["end"]) >= ns(s.start), s.name)
      assert.are.equal("spool", s.scope)
      if s.parentSpanId then
        local p = assert(index[s.parentSpanId], "the parent of " .. s.name)
        -- Children run inside their parents.
        assert.truthy(ns(s.start) >= ns(p.start), s.name)
        assert.truthy(ns(s["end"]) <= ns(p["end"]), s.name)
      end
    end
    -- The pipeline's run is the root; each sub-agent's run its child.
    local root = named(spans, "invoke_agent support")
    assert.are.equal(1, #root)
    root = root[1]
    assert.is_nil(root.parentSpanId)
    assert.are.equal(1, root.kind) -- INTERNAL
    assert.are.same({ ["gen_ai.operation.name"] = "invoke_agent",
      ["gen_ai.agent.name"] = "support", ["gen_ai.conversation.id"] = top,
      ["spool.thread.status"] = "done" }, {
      ["gen_ai.operation.name"] = root.attributes["gen_ai.operation.name"],
      ["gen_ai.agent.name"] = root.attributes["gen_ai.agent.name"],
      ["gen_ai.conversation.id"] = root.attributes["gen_ai.conversation.id"],
      ["spool.thread.status"] = root.attributes["spool.thread.status"] })
    local run_of = { [top] = root }
    for _, s in ipairs(spans) do
      if s.attributes["gen_ai.operation.name"] == "invoke_agent"
          and s ~= root then
        assert.are.equal(root.spanId, s.parentSpanId, s.name)
        run_of[s.attributes["gen_ai.conversation.id"]] = s
      end
    end
    -- A chat span for each model call, under its thread's run.
    local chats = {}
    for _, s in ipairs(spans) do
      local a = s.attributes
      if a["gen_ai.operation.name"] == "chat" then
        local thread = a["gen_ai.conversation.id"]
        chats[thread] = (chats[thread] or 0) + 1
        assert.are.equal(run_of[thread].spanId, s.parentSpanId)
        assert.are.equal(3, s.kind) -- CLIENT
        assert.are.equal("chat " .. a["gen_ai.request.model"], s.name)
        assert.truthy(a["gen_ai.provider.name"])
        assert.truthy(a["gen_ai.usage.input_tokens"] > 0)
        assert.truthy(a["gen_ai.usage.output_tokens"] > 0)
        assert.are.equal("table", type(a["gen_ai.response.finish_reasons"]))
        assert.truthy(a["gen_ai.response.id"])
        -- Contents are off unless switched on.
        assert.is_nil(a["gen_ai.input.messages"])
        assert.is_nil(a["gen_ai.output.messages"])
      else
        -- Tokens are counted on model calls only.
        assert.is_nil(a["gen_ai.usage.input_tokens"], s.name)
      end
    end
    assert.are.same(calls, chats)
    -- An execute_tool span for each tool call, under its thread's run.
    for _, t in ipairs(tools) do
      local found
      for _, s in ipairs(named(spans, "execute_tool " .. t.name)) do
        if s.attributes["gen_ai.tool.call.id"] == t.call then
          found = s
        end
      end
      assert.truthy(found, t.name .. " " .. t.call)
      assert.are.equal(run_of[t.thread].spanId, found.parentSpanId)
      assert.are.equal(t.name, found.attributes["gen_ai.tool.name"])
      assert.are.equal(t.failed and 2 or nil, found.status.code)
    end
    -- The resource says which service this is.
    local res = r.received().requests[1].resource
    assert.are.equal("support-desk", res["service.name"])
    assert.are.equal("test", res["deployment.environment.name"])
    assert.are.equal("cx,ops", res.team)
    assert.are.equal("spool", res["telemetry.sdk.name"])
  end)

  it("carries message contents only when switched on", function()
    local r = receiver()
    local _, err, code = run("classify", DEMO_INPUT, env_for(r,
      "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true"))
    assert.are.equal(0, code, err)
    local chat = named(r.spans(), "chat mock-1")[1]
    local input = json.decode(chat.attributes["gen_ai.input.messages"])
    assert.are.equal("user", input[1].role)
    assert.matches("order 1001", input[1].parts[1].content, 1, true)
    local output = json.decode(chat.attributes["gen_ai.output.messages"])
    assert.are.equal("assistant", output[1].role)
    assert.are.equal("tool_call", output[1].parts[1].type)
    assert.matches("sort incoming customer messages",
      chat.attributes["gen_ai.system_instructions"], 1, true)
  end)

  it("joins the caller's trace, and every request of the run carries its "
    .. "span", function()
    local r = receiver()
    local caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    local caller_span = "00f067aa0ba902b7"
    local events, err, code = run("fetch", "fetch " .. r.url .. "/tool",
      env_for(r, "TRACEPARENT=00-" .. caller_trace .. "-" .. caller_span
        .. "-01"), TRACED)
    assert.are.equal(0, code, err)
    local spans = r.spans()
    local root = named(spans, "invoke_agent fetch")[1]
    assert.are.equal(caller_trace, root.traceId)
    assert.are.equal(caller_span, root.parentSpanId)
    assert.are.equal(769, root.flags) -- sampled, with a remote parent
    -- The HTTP tool's request carries the tool's span.
    local tool = named(spans, "execute_tool fetch")[1]
    local got = r.received().others[1]
    assert.are.equal("/tool", got.path)
    assert.are.equal("00-" .. caller_trace .. "-" .. tool.spanId .. "-01",
      got.headers.traceparent)
    -- The model's request carries its chat span (the mock model says
    -- what it got, in the answer).
    local answer = events[#events].data.result
    local chat_id = answer:match("^traceparent=00%-" .. caller_trace
      .. "%-(%x+)%-01$")
    assert.truthy(chat_id, answer)
    assert.are.equal("chat mock-1", by_id(spans)[chat_id].name)
    -- A traceparent that is not one starts a trace of the thread's own.
    events = run("fetch", "hello", "TRACEPARENT=00-" .. string.rep("0", 32)
      .. "-" .. caller_span .. "-01 " .. env_for(r), TRACED)
    local id = events[1].thread
    for _, sp in ipairs(r.spans()) do
      if sp.attributes["gen_ai.conversation.id"] == id then
        assert.are.equal(trace_of(id), sp.traceId)
      end
    end
  end)

  it("follows a thread across a wait for a person: a span per run, "
    .. "linked, and the wait between them", function()
    local r = receiver()
    local s = serve_traced(env_for(r, "OTEL_BSP_SCHEDULE_DELAY=50"))
    local status, v = workers.curl(s, "POST", "/v1/threads",
      json.encode({ agent = "fetch", input = "refund", wait_ms = 5000 }))
    assert.are.equal(201, status)
    assert.are.equal("waiting", v.status)
    status = workers.curl(s, "POST", "/v1/threads/" .. v.id .. "/events",
      json.encode({ type = "approve" }))
    assert.are.equal(202, status)
    local spans = h.wait_for(function()
      local all = r.spans()
      return #named(all, "invoke_agent fetch") == 2 and all
    end, 10000, "both runs' spans")
    local runs = named(spans, "invoke_agent fetch")
    table.sort(runs, function(a, b) return ns(a.start) < ns(b.start) end)
    local first, second = runs[1], runs[2]
    assert.are.equal("waiting", first.attributes["spool.thread.status"])
    assert.are.equal("done", second.attributes["spool.thread.status"])
    local wait = named(spans, "await approval")[1]
    assert.are.equal(first.spanId, wait.parentSpanId)
    assert.are.equal("refund", wait.attributes["gen_ai.tool.name"])
    assert.are.equal(true, wait.attributes["spool.wait.approved"])
    assert.truthy(ns(wait.start) <= ns(first["end"]))
    assert.truthy(ns(wait["end"]) <= ns(second.start))
    -- The second run links back to the first, and to the wait.
    local linked = {}
    for _, l in ipairs(second.links) do
      linked[l.spanId] = l.attributes["spool.link"]
    end
    assert.are.same({ [first.spanId] = "previous_run",
                      [wait.spanId] = "wait" }, linked)
    for _, sp in ipairs(spans) do
      assert.are.equal(trace_of(v.id), sp.traceId)
    end
    -- The approved tool ran in the second run.
    assert.are.equal(second.spanId,
      named(spans, "execute_tool refund")[1].parentSpanId)
    -- The same calls, as OpenTelemetry's client metrics.
    local _, metrics = workers.curl(s, "GET", "/metrics")
    assert.matches('gen_ai_client_token_usage_bucket{gen_ai_operation_name='
      .. '"chat",gen_ai_provider_name="openai",gen_ai_request_model='
      .. '"mock%-1",gen_ai_token_type="input",le="%+Inf"} 2', metrics)
    assert.matches('gen_ai_client_operation_duration_seconds_count{'
      .. 'gen_ai_operation_name="chat",gen_ai_provider_name="openai",'
      .. 'gen_ai_request_model="mock%-1"} 2', metrics)
    assert.matches('spool_trace_spans_total{outcome="exported"} %d+', metrics)
  end)

  it("starts a thread in the trace of the POST that asked for it",
    function()
    local r = receiver()
    local s = serve_traced(env_for(r, "OTEL_BSP_SCHEDULE_DELAY=50"))
    local parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    local status, v = workers.curl(s, "POST", "/v1/threads",
      json.encode({ agent = "fetch", input = "fetch " .. r.url .. "/x",
                    wait_ms = 5000 }),
      "-H 'traceparent: " .. parent .. "'")
    assert.are.equal(201, status)
    assert.are.equal("done", v.status)
    local root = h.wait_for(function()
      return named(r.spans(), "invoke_agent fetch")[1]
    end, 10000, "the run's span")
    assert.are.equal("0af7651916cd43dd8448eb211c80319c", root.traceId)
    assert.are.equal("b7ad6b7169203331", root.parentSpanId)
  end)

  it("puts a thread an MCP client starts in the client's trace", function()
    local r = receiver()
    local s = serve_traced(env_for(r, "OTEL_BSP_SCHEDULE_DELAY=50"))
    local plan = { http = { url = s.url .. "/mcp", token = s.token },
      steps = { { call = "fetch", arguments = { input = "hello" },
        meta = { traceparent = "00-0af7651916cd43dd8448eb211c80319c-"
          .. "b7ad6b7169203331-01" } } } }
    local out, code = h.sh("node " .. h.q(h.ROOT .. "/spec/npm/sdk_client.mjs")
      .. " " .. h.q(json.encode(plan)) .. " 2>&1")
    assert.are.equal(0, code, out)
    -- (the mock model says what its request carried)
    assert.matches("traceparent=00-0af7651916cd43dd8448eb211c80319c-", out, 1,
      true)
    local root = h.wait_for(function()
      return named(r.spans(), "invoke_agent fetch")[1]
    end, 10000, "the run's span")
    assert.are.equal("0af7651916cd43dd8448eb211c80319c", root.traceId)
    assert.are.equal("b7ad6b7169203331", root.parentSpanId)
  end)

  it("never holds a run up for a collector that is down: what it cannot "
    .. "send is dropped and counted", function()
    local r = receiver()
    local url = r.url
    r.stop() -- (nothing listens there now)
    local s = serve_traced("OTEL_EXPORTER_OTLP_ENDPOINT="
      .. url .. " OTEL_BSP_SCHEDULE_DELAY=20 OTEL_BSP_MAX_QUEUE_SIZE=3 "
      .. "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=3")
    for _ = 1, 5 do
      local status, v = workers.curl(s, "POST", "/v1/threads",
        json.encode({ agent = "fetch", input = "hello", wait_ms = 5000 }))
      assert.are.equal(201, status)
      assert.are.equal("done", v.status)
    end
    local metrics = h.wait_for(function()
      local _, m = workers.curl(s, "GET", "/metrics")
      local dropped = tonumber(m:match(
        'spool_trace_spans_total{outcome="dropped"} (%d+)'))
      -- 10 spans, and at most 3 held (OTEL_BSP_MAX_QUEUE_SIZE)
      return dropped and dropped >= 7 and m
    end, 20000, "the spans to be dropped")
    assert.matches('spool_trace_spans_total{outcome="exported"} 0', metrics)
    -- Said once, not once a batch.
    local _, n = s.log():gsub("exporting spans to", "")
    assert.are.equal(1, n)
    -- A command exits at once too, saying what it could not send.
    local _, err, code = run("fetch", "hello", "OTEL_EXPORTER_OTLP_ENDPOINT="
      .. url, TRACED)
    assert.are.equal(0, code)
    assert.matches("traces: 2 spans not exported", err, 1, true)
  end)

  it("sends a batch again after a 503, and never after a 400", function()
    local r = receiver()
    r.script({ { status = 503, retryAfter = "0" } })
    local _, err, code = run("fetch", "hello", env_for(r), TRACED)
    assert.are.equal(0, code, err)
    local reqs = r.received().requests
    assert.are.equal(2, #reqs)
    assert.are.equal(503, reqs[1].answered)
    assert.are.equal(200, reqs[2].answered)
    -- The same spans, sent once more: none lost, none twice.
    local ids = function(req)
      local t = {}
      for _, sp in ipairs(req.spans) do
        t[#t + 1] = sp.spanId
      end
      table.sort(t)
      return t
    end
    assert.are.same(ids(reqs[1]), ids(reqs[2]))
    assert.are.equal(2, #reqs[2].spans)
    -- A batch the collector refuses as bad is not sent again.
    r.script({ { status = 400, body = { code = 3, message = "no" } } })
    _, err, code = run("fetch", "hello", env_for(r), TRACED)
    assert.are.equal(0, code, err)
    assert.are.equal(3, #r.received().requests)
    assert.matches("HTTP 400", err, 1, true)
    assert.matches("not retryable", err, 1, true)
  end)

  it("waits at exit no longer than OTEL_BSP_EXPORT_TIMEOUT for a collector "
    .. "that never answers", function()
    local r = receiver()
    r.script({ { hang = true } })
    local _, err, code = run("fetch", "hello", env_for(r,
      "OTEL_BSP_EXPORT_TIMEOUT=500 OTEL_EXPORTER_OTLP_TIMEOUT=600000"),
      TRACED)
    assert.are.equal(0, code, err)
    assert.matches("traces: 2 spans not exported", err, 1, true)
    assert.are.equal("never", r.received().requests[1].answered)
  end)

  it("keeps a caller's traceparent as it reads it, never its bytes",
    function()
    local r = receiver()
    -- A later version may carry more; bytes JSON cannot hold must not
    -- stop the thread from being stored (they did, and hung the caller).
    local odd = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-\255"
    local events, err, code = run("fetch", "hello", env_for(r,
      "TRACEPARENT=" .. h.q(odd)), TRACED)
    assert.are.equal(0, code, err)
    assert.are.equal("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      events[1].data.trace)
    local s = serve_traced(env_for(r, "OTEL_BSP_SCHEDULE_DELAY=50"))
    local out = h.sh(string.format("curl -s -m 10 %s -H 'Content-Type: "
      .. "application/json' -H %s --data-binary %s %s/v1/threads",
      workers.auth(s), h.q("traceparent: " .. odd), h.q(json.encode({
        agent = "fetch", input = "hello", wait_ms = 5000 })), s.url))
    local v = json.decode(out)
    assert.are.equal("done", v.status, out)
  end)

  it("samples as OTEL_TRACES_SAMPLER says", function()
    local r = receiver()
    local _, err, code = run("fetch", "hello", env_for(r,
      "OTEL_TRACES_SAMPLER=always_off"), TRACED)
    assert.are.equal(0, code, err)
    -- The caller's decision, for parent-based samplers (the default).
    _, err, code = run("fetch", "hello", env_for(r, "TRACEPARENT=00-"
      .. "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"), TRACED)
    assert.are.equal(0, code, err)
    assert.are.equal(0, #r.received().requests)
    -- A bad sampler is said, and the default used.
    _, err, code = run("fetch", "hello", env_for(r,
      "OTEL_TRACES_SAMPLER=sometimes"), TRACED)
    assert.are.equal(0, code)
    assert.matches("OTEL_TRACES_SAMPLER=sometimes is not a sampler", err, 1,
      true)
    assert.are.equal(2, #r.spans())
  end)

  it("reads traceparent as the W3C recommendation says", function()
    local ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert.are.same({ trace = "4bf92f3577b34da6a3ce929d0e0e4736",
      id = "00f067aa0ba902b7", sampled = true, remote = true },
      trace.parse(ok))
    assert.are.equal(false, trace.parse(ok:sub(1, -2) .. "0").sampled)
    -- A later version may add fields; version 00 may not.
    assert.truthy(trace.parse("01" .. ok:sub(3) .. "-what-comes-next"))
    for _, bad in ipairs({ ok .. "-x", "ff" .. ok:sub(3), ok:upper(),
        "00-" .. string.rep("0", 32) .. "-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-" .. string.rep("0", 16) .. "-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", "", 7 }) do
      assert.is_nil(trace.parse(bad), tostring(bad))
    end
  end)
end)
