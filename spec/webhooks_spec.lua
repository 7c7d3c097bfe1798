-- Webhooks: signed notices out when a thread waits, ends or fails
-- (retried with backoff), and signed requests in that start or resume
-- threads (fresh, unseen, and matching, or refused).
local h = require "spec.support"
local core = require "spool.core"
local json = require "spool.json"
local http = require "spool.base.http"
local config = require "spool.base.config"
local loader = require "spool.run.loader"
local runner = require "spool.run.runner"
local serve = require "spool.serve"
local webhooks = require "spool.serve.webhooks"

-- Any variable the test process has will do as a shared secret.
local SECRET_ENV = "PATH"
local SECRET = core.getenv(SECRET_ENV)

local fixture = require "spec.fixtures.api"
local AGENTS, model = fixture.AGENTS, fixture.model

-- A receiver: answers each POST with the next status of `statuses` (then
-- 200), and keeps what it got.
local function receiver(statuses)
  local got = {}
  local server = assert(core.listen { port = 0, handler = function(req)
    got[#got + 1] = req
    return { status = statuses and statuses[#got] or 200, body = "ok" }
  end })
  finally(function() server:close() end)
  return "http://127.0.0.1:" .. server:port() .. "/hook", got
end

local function project(targets, hooks)
  local mock = model()
  finally(mock.close)
  local _, restore = h.project(AGENTS, mock)
  finally(restore)
  local cfg = config.get()
  local saved_w, saved_h = cfg.webhooks, cfg.hooks
  cfg.webhooks, cfg.hooks = targets, hooks
  finally(function()
    cfg.webhooks, cfg.hooks = saved_w, saved_h
    h.wait_for(function() return webhooks.in_flight() == 0 end, 10000,
      "the deliveries to end")
  end)
end

local function verify(req)
  local at, sig = req.headers["spool-signature"]:match("^t=(%d+),v1=(%x+)$")
  assert.is_truthy(at, "a signature")
  assert.are.equal(core.hmac_sha256(SECRET, at .. "." .. req.body), sig)
  assert.is_true(math.abs(core.time() - tonumber(at)) < 60000)
end


describe("webhooks out", function()
  it("tell of a thread that waits and then ends, signed", function()
    local url, got = receiver()
    project { { url = url, secret_env = SECRET_ENV } }
    local t = h.run(assert(loader.load("refund")), "refund me")
    h.wait_for(function() return #got >= 1 end)
    local waiting = json.decode(got[1].body)
    assert.are.equal("thread.waiting", waiting.type)
    assert.are.equal(t.id, waiting.thread)
    assert.are.equal("approval", waiting.waiting_for.kind)
    assert.are.equal("thread.waiting", got[1].headers["spool-event"])
    assert.are.equal(waiting.id, got[1].headers["spool-delivery"])
    verify(got[1])
    h.wait_run(assert(runner.resume(t.id, { approve = true })))
    h.wait_for(function() return #got >= 2 end)
    local done = json.decode(got[2].body)
    assert.are.equal("thread.done", done.type)
    assert.are.equal("refunded 30", done.result)
    verify(got[2])
    assert.are_not.equal(waiting.id, done.id)
  end)

  it("retry a failed delivery from the outbox with the same id, and give "
    .. "up on a 4xx", function()
      local url, got = receiver { 503, 500 }
      local url2, got2 = receiver { 400 }
      project { { url = url, backoff_ms = 10, events = { "done" },
                  secret_env = SECRET_ENV },
                { url = url2, backoff_ms = 10, events = { "done" },
                  secret_env = SECRET_ENV } }
      h.run(assert(loader.load("echo")), "hi")
      -- The first try comes at once; the retries from the outbox, which
      -- a serving process passes over every second (here: the test).
      h.wait_for(function()
        webhooks.deliver_due()
        return #got >= 3
      end)
      local ids = {}
      for i, req in ipairs(got) do
        ids[i] = req.headers["spool-delivery"]
        assert.are.equal(tostring(i), req.headers["spool-attempt"])
        verify(req)
      end
      assert.are.equal(ids[1], ids[2])
      assert.are.equal(ids[1], ids[3])
      h.wait_for(function() return #got2 >= 1 end)
      h.wait_for(function() return webhooks.in_flight() == 0 end)
      webhooks.deliver_due()
      h.wait_for(function() return webhooks.in_flight() == 0 end)
      assert.are.equal(1, #got2) -- 400: the receiver said no; not retried
      assert.are.equal(3, #got)
      assert.are.same({}, require("spool.run.store").state_list("spool.outbox"))
    end)

  it("wait as long as a Retry-After date asks", function()
    local at = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 30)
    local got = {}
    local server = assert(core.listen { port = 0, handler = function(req)
      got[#got + 1] = req
      return { status = 503, body = "busy", headers = { ["Retry-After"] = at } }
    end })
    finally(function() server:close() end)
    project { { url = "http://127.0.0.1:" .. server:port() .. "/hook",
                events = { "done" }, secret_env = SECRET_ENV,
                backoff_ms = 10 } }
    h.run(assert(loader.load("echo")), "hi")
    h.wait_for(function() return #got == 1 and webhooks.in_flight() == 0 end)
    local items = require("spool.run.store").state_list("spool.outbox")
    assert.are.equal(1, #items)
    assert.is_true(items[1].value.next_at >= core.time() + 25000)
    webhooks.deliver_due() -- not due yet
    h.wait_for(function() return webhooks.in_flight() == 0 end)
    assert.are.equal(1, #got)
    require("spool.run.store").write_state { require("spool.run.store").engine_write {
      ns = "spool.outbox", key = items[1].key } }
  end)

  it("notify only the events and agents a target asks for", function()
    local url, got = receiver()
    local control, control_got = receiver()
    project { { url = url, events = { "failed" }, secret_env = SECRET_ENV },
              { url = url, agents = { "refund" }, events = { "done" },
                secret_env = SECRET_ENV },
              { url = control, events = { "done" }, secret_env = SECRET_ENV } }
    h.run(assert(loader.load("echo")), "hi")
    -- Once the target that wants it has its notice, the others would too.
    h.wait_for(function() return #control_got == 1 end)
    h.wait_for(function() return webhooks.in_flight() == 0 end)
    assert.are.equal(0, #got)
  end)
end)


describe("webhooks in", function()
  local base

  local function start(hooks, token_env)
    project(nil, hooks)
    local port = assert(serve.start { port = 0, token_env = token_env,
      token = not token_env and "spec-token-0123456789" or nil })
    finally(function() serve.stop(2000) end)
    base = "http://127.0.0.1:" .. port
  end

  local function post(path, body, signature, headers)
    headers = headers or {}
    headers["Content-Type"] = "application/json"
    headers["Spool-Signature"] = signature
    local res = assert(http.request { method = "POST", url = base .. path,
      headers = headers, body = body })
    return res.status, json.decode(res.body)
  end

  local function signed(path, body, at)
    return webhooks.sign_request(SECRET, at or core.time(), path, body)
  end

  it("start and resume threads from signed requests, without the token",
    function()
      start({ secret_env = SECRET_ENV }, "HOME") -- a token is set, too
      local body = '{"agent":"refund","input":"refund me","wait_ms":5000}'
      local sig = signed("/v1/hooks/threads", body)
      local status, v = post("/v1/hooks/threads", body, sig)
      assert.are.equal(201, status)
      assert.are.equal("waiting", v.status)
      -- The same request again is a replay, however its hex is written.
      local again, e = post("/v1/hooks/threads", body, sig)
      assert.are.equal(401, again)
      assert.matches("replay", e.error.message)
      again = post("/v1/hooks/threads", body, (sig:gsub("v1=(%x+)",
        function(hex) return "v1=" .. hex:upper() end)))
      assert.are.equal(401, again)
      local approve = '{"type":"approve","by":"slack"}'
      local path = "/v1/hooks/threads/" .. v.id .. "/events"
      -- Signed for another thread: refused here.
      status = post(path, approve, signed("/v1/hooks/threads/t_other/events",
        approve))
      assert.are.equal(401, status)
      status = post(path, approve, signed(path, approve))
      assert.are.equal(202, status)
      -- The token routes still need the token.
      local res = assert(http.request { url = base .. "/v1/threads/" .. v.id })
      assert.are.equal(401, res.status)
    end)

  it("let a sender retry a request that failed", function()
    start { secret_env = SECRET_ENV }
    local path = "/v1/hooks/threads"
    local body = '{"agent":"nosuch","input":"x"}'
    local sig = signed(path, body)
    assert.are.equal(404, (post(path, body, sig)))
    assert.are.equal(404, (post(path, body, sig))) -- not a replay: it failed
  end)

  it("refuse stale, forged and unsigned requests", function()
    start { secret_env = SECRET_ENV, max_age_s = 60 }
    local path = "/v1/hooks/threads"
    local body = '{"agent":"echo","input":"x"}'
    local cases = {
      { signed(path, body, core.time() - 120000), "outside" },
      { signed(path, body, core.time() + 120000), "outside" },
      { webhooks.sign_request("not the secret", core.time(), path, body),
        "does not match" },
      { nil, "is required" },
      { "v1=abc", "is required" },
    }
    for _, c in ipairs(cases) do
      local status, e = post(path, body, c[1])
      assert.are.equal(401, status)
      assert.are.equal("bad_signature", e.error.code)
      assert.matches(c[2], e.error.message)
    end
    -- A body changed after signing.
    local status = post(path, body:gsub("x", "y"), signed(path, body))
    assert.are.equal(401, status)
  end)

  it("are not there until a secret is set", function()
    start { secret_env = "SPOOL_SPEC_NO_SUCH_SECRET" }
    local body = "{}"
    local status, e = post("/v1/hooks/threads", body,
      webhooks.sign_request("x", core.time(), "/v1/hooks/threads", body))
    assert.are.equal(404, status)
    assert.are.equal("inbound webhooks are not set up", e.error.message)
  end)
end)
