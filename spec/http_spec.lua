-- spool.http (curl multi on the loop) against spool.core.listen (uv_tcp +
-- http-parser), both inside this engine; plus sleep and the rule that
-- engine calls cannot yield from a coroutine of the caller's own.
local h = require "spec.support"
local core = require "spool.core"
local spool = require "spool"
local json = spool.json

local function serve(handler, opts)
  opts = opts or {}
  opts.handler = handler
  local server = assert(core.listen(opts))
  return server, string.format("http://127.0.0.1:%d", server:port())
end

describe("spool.http", function()
  -- The servers here are on loopback, which agents may reach only when
  -- the project allows it.
  local restore
  before_each(function() restore = h.allow_http { "127.0.0.1" } end)
  after_each(function() restore() end)

  it("sends method, headers and body, and returns status, headers, body", function()
    local seen
    local server, base = serve(function(req)
      seen = req
      return { status = 201, headers = { ["x-answer"] = "42",
                                         ["content-type"] = "text/plain" },
               body = "created " .. req.body }
    end)
    local res = assert(spool.http.request { url = base .. "/things?a=1",
      method = "PUT", headers = { ["X-Token"] = "t" }, body = "thing" })
    server:close()
    assert.are.equal(201, res.status)
    assert.are.equal("created thing", res.body)
    assert.are.equal("42", res.headers["x-answer"])
    assert.are.equal("PUT", seen.method)
    assert.are.equal("/things", seen.path)
    assert.are.equal("a=1", seen.query)
    assert.are.equal("t", seen.headers["x-token"])
    assert.are.equal("127.0.0.1", seen.peer)
  end)

  it("returns error statuses as responses, not errors", function()
    local server, base = serve(function() return { status = 503, body = "busy" } end)
    local res = assert(spool.http.get(base .. "/"))
    server:close()
    assert.are.equal(503, res.status)
  end)

  it("answers 500 when a handler raises, without leaking the message", function()
    local server, base = serve(function() error("secret internals") end)
    local res = assert(spool.http.get(base .. "/"))
    server:close()
    assert.are.equal(500, res.status)
    assert.not_matches("secret", res.body)
  end)

  it("fails with ECONNECT when nothing listens", function()
    local res, err = spool.http.get("http://127.0.0.1:1/")
    assert.is_nil(res)
    assert.matches("^ECONNECT: ", err)
  end)

  it("fails with ETIMEDOUT past its timeout, and the server survives", function()
    local server, base = serve(function(req)
      if req.path == "/slow" then
        core.sleep(2000)
      end
      return "ok"
    end)
    local res, err = spool.http.request { url = base .. "/slow", timeout_ms = 50 }
    assert.is_nil(res)
    assert.matches("^ETIMEDOUT: ", err)
    assert.are.equal("ok", assert(spool.http.get(base .. "/fast")).body)
    -- Wait for the slow handler, so the test leaves nothing running.
    h.wait_for(function() return core.stats().tasks == 1 end)
    server:close()
  end)

  it("refuses a response larger than max_response", function()
    local server, base = serve(function() return ("x"):rep(100000) end)
    local res, err = spool.http.request { url = base .. "/", max_response = 1000 }
    server:close()
    assert.is_nil(res)
    assert.matches("^ETOOBIG: response body larger than 1000 bytes", err)
  end)

  it("answers 413 to a body over the server's limit", function()
    local server, base = serve(function() return "ok" end, { max_body = 100 })
    local res = assert(spool.http.request { url = base .. "/", method = "POST",
                                            body = ("y"):rep(5000) })
    server:close()
    assert.are.equal(413, res.status)
  end)

  it("serves requests concurrently: a slow handler blocks no other", function()
    local order = {}
    local server, base = serve(function(req)
      core.sleep(tonumber(req.query:match("ms=(%d+)")))
      order[#order + 1] = req.query
      return "done"
    end)
    local finished = 0
    for _, ms in ipairs { 300, 10, 100 } do
      core.spawn(function()
        spool.http.get(base .. "/?ms=" .. ms)
        finished = finished + 1
      end)
    end
    h.wait_for(function() return finished == 3 end)
    server:close()
    assert.are.same({ "ms=10", "ms=100", "ms=300" }, order)
  end)

  it("reports a stream's failures: no server, no answer, no more data, "
    .. "closed by another task", function()
    local s = assert(core.http_stream { url = "http://127.0.0.1:1/x" })
    local status, err, code = s:head(5000)
    assert.is_nil(status)
    assert.matches("^ECONNECT:", err)
    assert.are.equal("ECONNECT", code)
    -- asked again, once it has ended: the same failure, nothing else
    assert.are.same({ n = 3, nil, err, "ECONNECT" }, table.pack(s:head(5000)))
    local release = core.signal()
    local server, base = serve(function(req)
      if req.path == "/silent" then
        release:wait(5000)
        return "late"
      end
      local st = req.stream(200, { ["content-type"] = "text/plain" })
      st:send("first")
      release:wait(5000)
    end)
    s = assert(core.http_stream { url = base .. "/silent" })
    status, err = s:head(20)
    assert.is_nil(status)
    assert.are.equal("ETIMEDOUT: no response within 20 ms", err)
    s:close()
    s = assert(core.http_stream { url = base .. "/trickle" })
    assert.are.equal(200, (s:head(5000)))
    assert.are.equal(200, (s:head(5000))) -- the head it has, at once
    assert.are.equal("first", s:read(5000))
    local chunk
    chunk, err = s:read(20)
    assert.is_nil(chunk)
    assert.are.equal("ETIMEDOUT: no data within 20 ms", err)
    -- another task closes it while this one waits
    core.spawn(function() core.sleep(10); s:close() end)
    chunk, err = s:read(5000)
    assert.is_nil(chunk)
    assert.matches("^ECANCELED: the stream was closed", err)
    release:notify()
    h.wait_for(function() return server:connections() == 0 end, 5000,
      "the handlers to end")
    server:close()
  end)

  it("keeps a connection cache's connections to itself, and closes them "
    .. "with it", function()
    local server, base = serve(function() return "ok" end)
    local a, b = core.http_conns(), core.http_conns()
    for _ = 1, 3 do
      assert.are.equal("ok", assert(core.http_request {
        url = base .. "/", conns = a }).body)
    end
    assert.are.equal(1, server:connections()) -- one, reused
    assert(core.http_stream { url = base .. "/", conns = b }):close()
    assert(core.http_request { url = base .. "/", conns = b })
    -- the shared pool has none of them to reuse
    assert(core.http_request { url = base .. "/" })
    h.wait_for(function() return server:connections() == 3 end, 5000,
      "a connection each for a, b and the pool")
    a:close()
    b:close()
    h.wait_for(function() return server:connections() == 1 end, 5000,
      "a's and b's connections to close")
    a:close() -- twice is fine; a closed cache is the shared pool again
    assert(core.http_request { url = base .. "/", conns = a })
    assert.are.equal(1, server:connections())
    assert.has_error(function()
      core.http_request { url = base .. "/", conns = {} }
    end, "spool.http.request: conns must come from http_conns()")
    server:close()
  end)

  it("caps the connections from one address (listen's max_per_peer)",
    function()
    local server, base = serve(function() return "ok" end,
      { max_per_peer = 1 })
    local a, b = core.http_conns(), core.http_conns()
    assert.are.equal("ok", assert(core.http_request {
      url = base .. "/", conns = a }).body)
    -- a keeps its connection: b's is one too many, closed unanswered
    local res, err = core.http_request { url = base .. "/", conns = b }
    assert.is_nil(res)
    assert.is_string(err)
    a:close()
    h.wait_for(function() return server:connections() == 0 end, 5000,
      "a's connection to close")
    assert.are.equal("ok", assert(core.http_request {
      url = base .. "/", conns = b }).body)
    b:close()
    server:close()
  end)

  it("starts each call of a connection cache afresh, though it reuses the "
    .. "last call's curl handle", function()
    local server, base = serve(function(req)
      return string.format("%s %s %s %s", req.method, req.path,
        req.headers["x-n"] or "-", req.body ~= "" and req.body or "-")
    end)
    local conns = core.http_conns()
    local function call(r)
      r.conns = conns
      local res = assert(core.http_request(r))
      return res.status, res.body
    end
    assert.are.same({ 200, "POST /a 1 {\"x\":1}" }, { call { method = "POST",
      url = base .. "/a", headers = { ["x-n"] = "1" }, body = '{"x":1}' } })
    assert.are.same({ 200, "GET /b - -" }, { call { url = base .. "/b" } })
    assert.are.same({ 200, "DELETE /c - -" }, { call { method = "DELETE",
      url = base .. "/c" } })
    assert.are.same({ 200, "GET /d - -" }, { call { url = base .. "/d",
      timeout_ms = 5000 } })
    assert.is_nil(core.http_request { url = "http://127.0.0.1:1/",
      conns = conns })
    assert.are.same({ 200, "GET /e - -" }, { call { url = base .. "/e" } })
    assert.are.equal(1, server:connections())
    conns:close()
    server:close()
  end)

  it("lets the collector take a dropped stream mid-transfer, even when it "
    .. "runs inside curl's callbacks", function()
    local hanging = 0
    local server, base = serve(function(req)
      if req.path == "/hang" then
        hanging = hanging + 1
        core.sleep(200)
        hanging = hanging - 1
        return "late"
      end
      local s = req.stream(200, { ["content-type"] = "text/plain" })
      for _ = 1, 200 do
        if not s:send(string.rep("x", 4096)) then
          break
        end
      end
    end)
    -- An eager collector: finalizers run from small allocations, such as
    -- the strings a stream's data becomes inside curl's write callback.
    collectgarbage("incremental", 0, 1000)
    local seed = 7
    for _ = 1, 8 do
      local s = assert(core.http_stream { url = base .. "/stream" })
      assert(s:head(5000))
      local got = 0
      while true do
        seed = (seed * 1103515245 + 12345) % 2147483648
        if seed % 4 == 0 then
          core.http_stream { url = base .. "/hang" } -- dropped at once
        end
        local chunk = s:read(5000)
        if not chunk then
          break
        end
        got = got + #chunk
      end
      s:close()
      assert.are.equal(200 * 4096, got)
    end
    collectgarbage("incremental", 200, 100)
    collectgarbage()
    h.wait_for(function() return hanging == 0 end, 5000, "the slow handlers")
    server:close()
    h.wait_for(function() return core.stats().http_pending == 0 end, 5000,
      "the dropped streams to be reaped")
  end)

  it("rejects header names and values that would split a request", function()
    assert.has_error(function()
      spool.http.request { url = "http://127.0.0.1:1/",
                           headers = { ["x"] = "a\r\nInjected: yes" } }
    end)
  end)
end)

describe("spool.http's reach", function()
  -- What an agent's HTTP may not reach unless spool.lua allows it: the
  -- engine's own API and the machine's private endpoints, checked at each
  -- connection (after DNS, after every redirect).
  local function refusal(url, ip, kind, allow)
    return string.format("EACCES: %s resolves to %s, %s; agents may not "
      .. "reach it unless spool.lua allows it (http = { allow = { \"%s\" } })",
      url, ip, kind, allow)
  end

  it("refuses loopback by default, and reaches what spool.lua allows",
    function()
    local server, base = serve(function() return "ok" end)
    local port = server:port()
    local res, err = spool.http.get(base .. "/v1/threads")
    assert.is_nil(res)
    assert.are.equal(refusal(base .. "/v1/threads", "127.0.0.1",
      "a loopback address", "127.0.0.1:" .. port), err)
    local restore = h.allow_http { "127.0.0.1:" .. (port == 1 and 2 or 1) }
    assert.matches("^EACCES: ", select(2, spool.http.get(base .. "/")))
    restore()
    restore = h.allow_http { "10.0.0.0/8", "127.0.0.1:" .. port }
    assert.are.equal("ok", assert(spool.http.get(base .. "/")).body)
    restore()
    restore = h.allow_http { "127.0.0.0/8" }
    assert.are.equal("ok", assert(spool.http.get(base .. "/")).body)
    restore()
    server:close()
  end)

  it("checks the address a name resolves to, and hides what the URL holds "
    .. "past its path", function()
    local server = assert(core.listen { host = "127.0.0.1", port = 0,
      handler = function() return "ok" end })
    local url = string.format("http://user:s3cr3t@localhost:%d/x?token=s3cr3t",
      server:port())
    local res, err = spool.http.get(url)
    server:close()
    assert.is_nil(res)
    assert.matches("^EACCES: http://localhost:%d+/x resolves to 127%.0%.0%.1, "
      .. "a loopback address", err)
    assert.not_matches("s3cr3t", err)
  end)

  it("refuses loopback written as an IPv4-mapped IPv6 address, IPv6 "
    .. "loopback and the unspecified address", function()
    local server, base = serve(function() return "ok" end)
    local port = server:port()
    local mapped = string.format("http://[::ffff:127.0.0.1]:%d/", port)
    local _, err = spool.http.get(mapped)
    assert.are.equal(refusal(mapped, "::ffff:127.0.0.1", "a loopback address",
      "127.0.0.1:" .. port), err)
    local any = string.format("http://0.0.0.0:%d/", port)
    _, err = spool.http.get(any)
    -- Linux connects 0.0.0.0 to this machine, and curl names the peer
    -- 127.0.0.1 (or 0.0.0.0: refused too, as an unspecified address).
    assert.matches("^EACCES: http://0%.0%.0%.0:%d+/ resolves to ", err)
    server:close()
    local six = core.listen { host = "::1", port = 0,
      handler = function() return "ok" end }
    if six then -- a machine without IPv6 has no ::1 to listen on
      local url = string.format("http://[::1]:%d/", six:port())
      local rule = string.format("[::1]:%d", six:port())
      _, err = spool.http.get(url)
      six:close()
      assert.are.equal(refusal(url, "::1", "a loopback address", rule), err)
    end
  end)

  it("refuses a redirect from an allowed address to one that is not",
    function()
    local inner = serve(function() return "the engine's API" end)
    local outer, base = serve(function(req)
      if req.path == "/file" then
        return { status = 302, headers = { location = "file:///etc/passwd" } }
      elseif req.path == "/post" then
        return { status = 303, headers = { location = "/landing" } }
      elseif req.path == "/landing" then
        return req.method .. " " .. req.path
      end
      return { status = 302, headers = { location = string.format(
        "http://127.0.0.1:%d/v1/threads", inner:port()) } }
    end)
    local restore = h.allow_http { "127.0.0.1:" .. outer:port() }
    local res = assert(spool.http.get(base .. "/"))
    assert.are.equal(302, res.status) -- not followed unless asked
    local err
    res, err = spool.http.get(base .. "/", { redirects = 3 })
    assert.is_nil(res)
    assert.are.equal(refusal(string.format("http://127.0.0.1:%d/v1/threads",
      inner:port()), "127.0.0.1", "a loopback address",
      "127.0.0.1:" .. inner:port()), err)
    res, err = spool.http.get(base .. "/file", { redirects = 3 })
    assert.is_nil(res)
    assert.matches("not supported", err)
    -- an allowed redirect is followed, a 303 after a POST with a GET
    res = assert(spool.http.post_json(base .. "/post", {}, { redirects = 1 }))
    assert.are.equal("GET /landing", res.body)
    restore()
    outer:close()
    inner:close()
  end)

  it("reaches http and https only", function()
    for _, url in ipairs { "file:///etc/passwd", "gopher://127.0.0.1/",
                           "dict://127.0.0.1:11211/stat", "ftp://example.com/",
                           "FILE:///etc/passwd", "127.0.0.1:8080/x" } do
      local res, err = spool.http.get(url)
      assert.is_nil(res)
      assert.are.equal("EACCES: " .. url .. ": spool.http reaches http:// "
        .. "and https:// URLs only", err)
    end
  end)

  it("takes only the documented fields: no way to switch the check off",
    function()
    local server, base = serve(function() return "ok" end)
    local conns = core.http_conns()
    local res, err = spool.http.request { url = base .. "/", guard = false,
      allow = { "127.0.0.1" }, protocols = "http", conns = conns }
    assert.is_nil(res)
    assert.matches("^EACCES: ", err)
    res, err = spool.http.post_json(base .. "/", {}, { guard = false })
    assert.is_nil(res)
    assert.matches("^EACCES: ", err)
    conns:close()
    server:close()
  end)

  it("refuses an agent's tool, while the model client reaches the mock on "
    .. "loopback", function()
    local mock = h.scripted {
      { tool = "fetch", args = {} },
      { text = "done" },
    }
    local a = h.agent({ tools = { fetch = { description = "Fetch.",
      params = {}, run = function()
        local res, err = spool.http.get(mock.url() .. "/models")
        return res and ("status " .. res.status) or err
      end } } }, mock)
    local t = h.run(a, "go")
    assert.are.equal("done", t:status(), select(2, t:outcome()))
    assert.are.equal("tool_result", t.events[4].type)
    assert.matches("^EACCES: http://127%.0%.0%.1:%d+/v1/models resolves to "
      .. "127%.0%.0%.1, a loopback address", t.events[4].data.result)
    local restore = h.allow_http { "127.0.0.1:" .. mock.port() }
    t = h.run(a, "go")
    restore()
    assert.are.equal("status 200", t.events[4].data.result)
    mock.close()
  end)
end)

describe("spool.lua's http.allow", function()
  local dir

  after_each(function()
    h.remove(dir)
  end)

  -- Runs a script in a project whose spool.lua is `settings`: it fetches
  -- from a server on loopback through spool.http and prints the outcome.
  local function fetch_with(settings)
    dir = h.tmpdir()
    h.write_files(dir, { ["spool.lua"] = settings, ["fetch.lua"] = [[
      local core = require "spool.core"
      local http = require "spool.http"
      local s = assert(core.listen { host = "127.0.0.1", port = 0,
        handler = function() return "reached" end })
      local res, err = http.get("http://127.0.0.1:" .. s:port() .. "/")
      s:close()
      print(res and res.body or err)
    ]] })
    return h.sh(string.format("%s --project %s lua %s 2>&1", h.q(h.BIN),
      h.q(dir), h.q(dir .. "/fetch.lua")))
  end

  it("lets agents reach the addresses it lists", function()
    assert.matches("^EACCES: ", (fetch_with("return {}")))
    assert.matches("^EACCES: ", (fetch_with(
      'return { http = { allow = { "10.0.0.0/8", "[::1]" } } }')))
    assert.are.equal("reached\n", (fetch_with(
      'return { http = { allow = { "10.0.0.0/8", "127.0.0.1" } } }')))
  end)

  it("refuses what is not an address, naming it", function()
    local out, code = fetch_with(
      'return { http = { allow = { "127.0.0.1", "localhost:80" } } }')
    assert.are_not.equal(0, code)
    assert.matches("spool.lua: http.allow[2] 'localhost:80' is not an "
      .. "address or a CIDR block with an optional port", out, 1, true)
    out, code = fetch_with('return { http = { allow = "127.0.0.1" } }')
    assert.are_not.equal(0, code)
    assert.matches("spool.lua: http = { allow = {", out, 1, true)
  end)
end)

describe("spool.sleep", function()
  it("lets other runs go while it waits", function()
    local log = {}
    core.spawn(function() core.sleep(30) log[#log + 1] = "slow" end)
    core.spawn(function() core.sleep(1) log[#log + 1] = "fast" end)
    h.wait_for(function() return #log == 2 end)
    assert.are.same({ "fast", "slow" }, log)
  end)

  it("cannot be called from a coroutine of one's own", function()
    local co = coroutine.create(function() core.sleep(1) end)
    local ok, err = coroutine.resume(co)
    assert.is_false(ok)
    assert.matches("spool.sleep must be called from a run", err)
  end)
end)

