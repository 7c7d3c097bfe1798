-- The control API, end to end over real HTTP: the server runs on this
-- engine's loop (spool.serve), the client is the engine's own spool.base.http
-- (curl; the agents' spool.http refuses loopback), and the agents talk to
-- an in-process mock model.
local h = require "spec.support"
local core = require "spool.core"
local json = require "spool.json"
local http = require "spool.base.http"
local serve = require "spool.serve"
local api = require "spool.serve.api"
local hub = require "spool.run.hub"

local base
local TOKEN = "spec-token-0123456789"

local fixture = require "spec.fixtures.api"
local AGENTS, model = fixture.AGENTS, fixture.model

-- Serves the test project with options; everything is put back after.
local function start(opts, latency)
  local mock = model(latency)
  finally(mock.close)
  local _, restore = h.project(AGENTS, mock)
  finally(restore)
  opts = opts or { port = 0 }
  opts.token = opts.token or TOKEN
  local port = assert(serve.start(opts))
  finally(function() serve.stop(2000) end)
  base = "http://127.0.0.1:" .. port
  return port
end

local function call(method, path, body, headers)
  headers = headers or {}
  if headers.Authorization == nil then
    headers.Authorization = "Bearer " .. TOKEN
  end
  if body ~= nil and headers["Content-Type"] == nil then
    headers["Content-Type"] = "application/json"
  end
  local res = assert(http.request { method = method, url = base .. path,
    headers = headers, body = type(body) == "table" and json.encode(body)
      or body })
  local value = json.decode(res.body)
  return res.status, value, res
end

local function start_thread(agent, input, extra, headers)
  local body = { agent = agent, input = input }
  for k, v in pairs(extra or {}) do
    body[k] = v
  end
  return call("POST", "/v1/threads", body, headers)
end


describe("the control API", function()
  it("answers health, agents and metrics", function()
    start()
    local status, v = call("GET", "/healthz")
    assert.are.equal(200, status)
    assert.are.equal("ok", v.status)
    assert.are.equal(core.version, v.version)
    status, v = call("GET", "/v1/agents")
    assert.are.equal(200, status)
    local by_name = {}
    for _, a in ipairs(v.agents) do
      by_name[a.name] = a
    end
    assert.matches("^%x+$", by_name.echo.version)
    assert.matches("agents/broken.lua:1:", by_name.broken.error)
    start_thread("echo", "hi", { wait_ms = 5000 })
    local _, _, res = call("GET", "/metrics")
    assert.matches("^text/plain", res.headers["content-type"])
    assert.matches('spool_runs_ended_total{agent="echo",status="done"} %d',
      res.body)
    assert.matches('spool_model_latency_seconds_bucket{le="%+Inf"} %d',
      res.body)
    assert.matches("spool_runs_in_flight 0", res.body)
    assert.matches('spool_model_retries_total{provider="openai"} %d',
      res.body)
  end)

  it("starts a thread, waits for its result, and shows it", function()
    start()
    local status, v, res = start_thread("echo", "hello", { wait_ms = 5000 })
    assert.are.equal(201, status)
    assert.are.equal("/v1/threads/" .. v.id, res.headers.location)
    assert.are.equal("done", v.status)
    assert.are.equal("echo: hello", v.result)
    status, v = call("GET", "/v1/threads/" .. v.id)
    assert.are.equal(200, status)
    assert.are.equal("done", v.status)
    assert.are.same({ "input", "model_call", "intent", "done" },
      h.types(v.events))
    local _, lean = call("GET", "/v1/threads/" .. v.id .. "?events=false")
    assert.is_nil(lean.events)
    -- Without wait_ms: at once, as stored.
    status, v = start_thread("echo", "later")
    assert.are.equal(201, status)
    assert.is_truthy(v.status == "running" or v.status == "done")
    h.wait_for(function()
      return select(2, call("GET", "/v1/threads/" .. v.id)).status == "done"
    end)
  end)

  it("pages through threads without skipping or repeating", function()
    start()
    local made = {}
    for i = 1, 7 do
      local _, v = start_thread("echo", "page " .. i, { wait_ms = 5000 })
      made[v.id] = true
    end
    local seen, cursor, pages, rows = {}, nil, 0, 0
    repeat
      local _, v = call("GET", "/v1/threads?agent=echo&limit=3"
        .. (cursor and ("&cursor=" .. cursor) or ""))
      pages = pages + 1
      for _, row in ipairs(v.threads) do
        assert.is_nil(seen[row.id], "repeated " .. row.id)
        seen[row.id] = true
        rows = rows + 1
      end
      cursor = v.next_cursor ~= json.null and v.next_cursor or nil
    until not cursor
    for id in pairs(made) do
      assert.is_true(seen[id], "missed " .. id)
    end
    assert.are.equal(math.ceil(rows / 3), pages)
    local status = call("GET", "/v1/threads?status=sleeping")
    assert.are.equal(422, status)
    status = call("GET", "/v1/threads?cursor=nonsense")
    assert.are.equal(422, status)
  end)

  it("resumes a waiting thread with an approval sent to it", function()
    start()
    local _, v = start_thread("refund", "refund me", { wait_ms = 5000 })
    assert.are.equal("waiting", v.status)
    assert.are.equal("approval", v.waiting_for.kind)
    assert.are.same({ amount = 30 }, v.waiting_for.args)
    local status, e = call("POST", "/v1/threads/" .. v.id .. "/events",
      { type = "answer", text = "yes" })
    assert.are.equal(422, status)
    assert.matches("waits for approval of refund", e.error.message)
    status = call("POST", "/v1/threads/" .. v.id .. "/events",
      { type = "approve", args = { amount = 20 }, by = "ann" })
    assert.are.equal(202, status)
    h.wait_for(function()
      return select(2, call("GET", "/v1/threads/" .. v.id)).status == "done"
    end)
    local _, done = call("GET", "/v1/threads/" .. v.id)
    assert.are.equal("(A person changed the arguments to {\"amount\":20} "
      .. "before it ran.) refunded 20", done.result)
    status, e = call("POST", "/v1/threads/" .. v.id .. "/events",
      { type = "approve" })
    assert.are.equal(409, status)
    assert.are.equal("wrong_state", e.error.code)
    status = call("POST", "/v1/threads/t_nosuch/events", { type = "approve" })
    assert.are.equal(404, status)
    status = call("POST", "/v1/threads/" .. v.id .. "/events",
      { type = "smile" })
    assert.are.equal(422, status)
  end)

  it("keeps a model from approving through an agent's HTTP tool (issue 19)",
    function()
    start()
    local _, v = start_thread("refund", "refund me", { wait_ms = 5000 })
    assert.are.equal("waiting", v.status)
    -- A prompt-injected model steers a generic HTTP tool at this API.
    local url = base .. "/v1/threads/" .. v.id .. "/events"
    local mock = h.scripted {
      { tool = "post", args = { url = url } },
      { text = "done" },
    }
    finally(mock.close)
    local spool = require "spool"
    local a = h.agent({ tools = { post = { description = "POST JSON.",
      params = { url = "string" }, run = function(args)
        local res, err = spool.http.post_json(args.url,
          { type = "approve", by = "the-model" })
        return res and ("status " .. res.status) or err
      end } } }, mock)
    local t = h.run(a, "go")
    assert.matches("^EACCES: " .. url:gsub("%p", "%%%0") .. " resolves to "
      .. "127%.0%.0%.1, a loopback address", t.events[4].data.result)
    local _, still = call("GET", "/v1/threads/" .. v.id)
    assert.are.equal("waiting", still.status)
    call("POST", "/v1/threads/" .. v.id .. "/events", { type = "reject" })
    h.wait_for(function()
      return select(2, call("GET", "/v1/threads/" .. v.id)).status ~= "waiting"
    end)
  end)

  it("delivers an outside event to a thread waiting for it", function()
    start()
    local _, v = start_thread("shop", "shop: a teapot", { wait_ms = 5000 })
    assert.are.equal("event", v.waiting_for.kind)
    assert.are.equal("payment", v.waiting_for.event)
    local status = call("POST", "/v1/threads/" .. v.id .. "/events",
      { type = "event", name = "payment", data = { amount = 42 } })
    assert.are.equal(202, status)
    h.wait_for(function()
      return select(2, call("GET", "/v1/threads/" .. v.id)).status == "done"
    end)
    assert.are.equal('{"amount":42}', select(2, call("GET", "/v1/threads/"
      .. v.id)).result)
  end)

  it("cancels a thread", function()
    start()
    local _, v = start_thread("refund", "refund me", { wait_ms = 5000 })
    local status, c = call("POST", "/v1/threads/" .. v.id .. "/cancel", {})
    assert.are.equal(200, status)
    assert.are.equal("cancelled", c.status)
    assert.are.equal("cancelled", select(2, call("GET", "/v1/threads/"
      .. v.id)).status)
    status = call("POST", "/v1/threads/" .. v.id .. "/cancel", {})
    assert.are.equal(409, status)
  end)

  it("streams a thread's events live, and resumes after Last-Event-ID",
    function()
      start()
      local _, v = start_thread("refund", "refund me", { wait_ms = 5000 })
      local stream
      core.spawn(function()
        stream = assert(http.request { url = base .. "/v1/threads/" .. v.id
          .. "/stream", headers = { ["Last-Event-ID"] = "2",
          Authorization = "Bearer " .. TOKEN } })
      end)
      -- Approve once the stream is following the thread.
      h.wait_for(function() return hub.followed() > 0 end)
      call("POST", "/v1/threads/" .. v.id .. "/events", { type = "approve" })
      h.wait_for(function() return stream end)
      assert.are.equal(200, stream.status)
      assert.matches("^text/event%-stream", stream.headers["content-type"])
      local ids, types = {}, {}
      for id, kind in stream.body:gmatch("id: (%d+)\nevent: ([%w_]+)\n") do
        ids[#ids + 1] = tonumber(id)
        types[#types + 1] = kind
      end
      assert.are.equal(3, ids[1]) -- after Last-Event-ID 2
      for i = 2, #ids do
        assert.are.equal(ids[i - 1] + 1, ids[i])
      end
      assert.are.equal("human_request", types[2])
      assert.are.equal("human_response", types[3]) -- sent after it began
      assert.are.equal("done", types[#types])
      assert.matches('event: end\ndata: {"status":"done"}\n\n$', stream.body)
      assert.are.equal(0, hub.followed())
      -- A stream of an ended thread from ?after=N: the rest, and the end.
      local _, _, res = call("GET", "/v1/threads/" .. v.id .. "/stream?after="
        .. (ids[#ids] - 1))
      assert.matches("^id: " .. ids[#ids] .. "\nevent: done\n", res.body)
      assert.are.equal(404, (call("GET", "/v1/threads/t_nope/stream")))
    end)

  it("streams notices about the whole engine to /v1/events", function()
    start()
    local stream
    core.spawn(function()
      stream = assert(http.request { url = base .. "/v1/events",
        headers = { Authorization = "Bearer " .. TOKEN } })
    end)
    h.wait_for(function() return hub.subscribed() > 0 end)
    local _, waiting = start_thread("refund", "refund me", { wait_ms = 5000 })
    local _, done = start_thread("echo", "hi", { wait_ms = 5000 })
    call("POST", "/v1/reload", {})
    serve.stop(2000) -- ends the stream, so the buffered client sees it
    h.wait_for(function() return stream end)
    assert.are.equal(200, stream.status)
    local seen = {}
    for kind, data in stream.body:gmatch("event: ([%w_.]+)\ndata: ([^\n]+)") do
      local v = json.decode(data)
      seen[#seen + 1] = kind .. " " .. (v.thread or v.agent)
    end
    assert.are.same({ "thread.started " .. waiting.id,
                      "thread.waiting " .. waiting.id,
                      "thread.started " .. done.id,
                      "thread.done " .. done.id,
                      "reload_failed broken" }, seen)
    assert.are.equal(0, hub.subscribed())
  end)

  it("streams every stored event before it says a thread ended", function()
    start(nil, 20)
    for _ = 1, 5 do
      local _, v = start_thread("limited", "loop")
      local _, _, res = call("GET", "/v1/threads/" .. v.id .. "/stream")
      local _, stored = call("GET", "/v1/threads/" .. v.id)
      assert.are.equal("failed", stored.status)
      local ids = {}
      for id in res.body:gmatch("id: (%d+)\n") do
        ids[#ids + 1] = tonumber(id)
      end
      assert.are.equal(#stored.events, #ids)
      assert.are.equal(#stored.events, ids[#ids])
      assert.matches('event: failed\n.-event: end\ndata: {"status":"failed"}',
        res.body)
    end
  end)

  it("answers the requests in flight when it drains", function()
    start(nil, 300)
    local answer
    core.spawn(function()
      answer = { call("POST", "/v1/threads", { agent = "echo",
        input = "slow", wait_ms = 10000 }) }
    end)
    h.wait_for(function()
      return require("spool.run.runner").running() > 0
    end)
    serve.stop(5000)
    h.wait_for(function() return answer end)
    assert.are.equal(201, answer[1])
    assert.is_string(answer[2].id)
  end)

  it("never starts a thread twice for one Idempotency-Key", function()
    start()
    local key = { ["Idempotency-Key"] = "order-" .. core.random_id() }
    local s1, a = start_thread("echo", "once", { wait_ms = 5000 }, key)
    local s2, b = start_thread("echo", "once", { wait_ms = 5000 }, key)
    assert.are.equal(201, s1)
    assert.are.equal(200, s2)
    assert.are.equal(a.id, b.id)
    assert.is_true(b.replayed)
    -- The key with another request: a client bug, said so.
    local s3, e = start_thread("echo", "something else", nil, key)
    assert.are.equal(422, s3)
    assert.are.equal("idempotency_mismatch", e.error.code)
    -- Two at the same moment: one thread.
    local ids, race = {}, "race-" .. core.random_id()
    for i = 1, 2 do
      core.spawn(function()
        local _, v = start_thread("echo", "race", { wait_ms = 5000 },
          { ["Idempotency-Key"] = race })
        ids[i] = v.id
      end)
    end
    h.wait_for(function() return ids[1] and ids[2] end)
    assert.are.equal(ids[1], ids[2])
    local _, page = call("GET", "/v1/threads?agent=echo&limit=100")
    local n = 0
    for _, row in ipairs(page.threads) do
      if row.id == ids[1] then
        n = n + 1
      end
    end
    assert.are.equal(1, n)
  end)

  it("refuses bad requests with the right status and a JSON error",
    function()
      start()
      local cases = {
        { "POST", "/v1/threads", "{bad", nil, 400, "bad_json" },
        { "POST", "/v1/threads", "[1]", nil, 422, "invalid" },
        -- a number past a double's range is bad JSON, not a 500 later
        { "POST", "/v1/threads", '{"agent":"echo","input":"x",'
          .. '"wait_ms":1e400}', nil, 400, "bad_json" },
        { "POST", "/v1/threads", '{"agent":"echo"}', nil, 422, "invalid" },
        { "POST", "/v1/threads", '{"agent":"echo","input":5}', nil, 422,
          "invalid" },
        { "POST", "/v1/threads", '{"agent":"nosuch","input":"x"}', nil, 404,
          "not_found" },
        { "POST", "/v1/threads", '{"agent":"broken","input":"x"}', nil, 422,
          "broken_agent" },
        { "POST", "/v1/threads", '{"agent":"echo","input":"x"}',
          { ["Content-Type"] = "text/plain" }, 415, "unsupported_media_type" },
        { "POST", "/v1/threads", '{"agent":"echo","input":"x"}',
          { Host = "evil.example:80" }, 403, "forbidden_host" },
        { "DELETE", "/v1/threads", nil, nil, 405, "method_not_allowed" },
        { "GET", "/v2/nothing", nil, nil, 404, "not_found" },
        { "GET", "/v1/threads/t_nope", nil, nil, 404, "not_found" },
      }
      for _, c in ipairs(cases) do
        local status, v = call(c[1], c[2], c[3], c[4])
        assert.are.equal(c[5], status, c[1] .. " " .. c[2] .. " " .. tostring(c[3]))
        assert.are.equal(c[6], v.error.code)
        assert.is_string(v.error.message)
        -- No path on disk reaches a client.
        assert.is_nil(v.error.message:find(h.ROOT, 1, true), v.error.message)
        assert.is_nil(v.error.message:find("/tmp/spool-spec", 1, true),
          v.error.message)
      end
      -- Over the body limit: 413, and the server goes on.
      local status, e = call("POST", "/v1/threads", string.rep("x", 2 * 1024
        * 1024))
      assert.are.equal(413, status)
      assert.are.equal("too_large", e.error.code) -- the one error shape
      assert.is_string(e.error.message)
      assert.are.equal(200, (call("GET", "/healthz")))
    end)

  it("answers 503 with Retry-After past the bound on runs in flight",
    function()
      start({ port = 0, max_runs = 1 }, 300)
      local s1 = start_thread("echo", "slow")
      assert.are.equal(201, s1)
      local status, v, res = start_thread("echo", "one too many")
      assert.are.equal(503, status)
      assert.are.equal("busy", v.error.code)
      assert.are.equal("1", res.headers["retry-after"])
      h.wait_for(function() return require("spool.run.runner").running() == 0 end)
    end)

  it("limits requests per client when asked", function()
    start({ port = 0, rate = 5 })
    local limited
    for _ = 1, 30 do
      local status, v, res = call("GET", "/healthz")
      if status == 429 then
        limited = res.headers["retry-after"]
        assert.are.equal("rate_limited", v.error.code)
        break
      end
    end
    assert.are.equal("1", limited)
  end)

  it("answers 1,000 clients at once while slow ones trickle", function()
    local port = start()
    -- Three clients that send half a request and then nothing.
    for _ = 1, 3 do
      h.sh(string.format("bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d; printf "
        .. "\"GET /healthz HTTP/1.1\\r\\nHost: 127\" >&3; sleep 3' "
        .. ">/dev/null 2>&1 &", port))
    end
    local statuses, n, answered = {}, 1000, 0
    for i = 1, n do
      core.spawn(function()
        local res = http.request { url = base .. "/healthz",
          headers = { Connection = "close",
                      Authorization = "Bearer " .. TOKEN } }
        statuses[i] = res and res.status or 0
        answered = answered + 1
      end)
    end
    h.wait_for(function() return answered == n end, 60000, "1,000 answers")
    local ok = 0
    for i = 1, n do
      ok = ok + (statuses[i] == 200 and 1 or 0)
    end
    assert.are.equal(n, ok)
  end)

  it("serves exactly the routes docs/openapi.json describes", function()
    local f = assert(io.open(h.ROOT .. "/docs/openapi.json"))
    local doc = assert(json.decode(f:read("a")))
    f:close()
    local documented, served = {}, {}
    for path, ops in pairs(doc.paths) do
      for method in pairs(ops) do
        documented[#documented + 1] = method:upper() .. " " .. path
      end
    end
    for _, r in ipairs(api.routes) do
      served[#served + 1] = r[1] .. " " .. r[2]
    end
    table.sort(documented)
    table.sort(served)
    assert.are.same(served, documented)
  end)
end)
