-- spool.serve: `spool serve`, the engine as a service (private). An HTTP
-- server on the engine's loop answers the control API (spool.serve.api); every
-- request passes the same gate first:
--
--   1. Rate: optionally, requests per second per client address (429).
--   2. Route and method (404, 405).
--   3. Host: on a loopback address, the Host header must name this server
--      (a web page cannot reach it through DNS rebinding).
--   4. Token: every route but the web inspector's files (which hold no
--      data: spool.serve.inspector) needs "Authorization: Bearer <token>", on
--      loopback too (a model that steers an agent's HTTP tool, or a local
--      process, must not be able to approve a call). The token is
--      $SPOOL_TOKEN (or --token-env), else the project's own, kept in
--      .spool/api-token, readable by its owner only (`spool token` prints
--      it); spool.lua's api_tokens = { name = "ENV_VAR" } adds tokens of
--      their own, so each caller is known by name. Compared in constant
--      time. Who answered a person's request is the caller the token
--      names, never what the body says. The inbound webhook routes
--      (/v1/hooks/...) instead need a valid, fresh, unseen Spool-Signature
--      (spool.serve.webhooks).
--   5. A POST must be JSON (415), of a bounded size (413), an object (400,
--      422).
--
-- Errors are {"error": {"code", "message"}}; nothing internal (a Lua
-- error, a path on disk) reaches a client: it is logged instead.
--
-- Shutdown drains: stop accepting, let each run finish the step it is in
-- (spool.run.runner.draining stops them between steps), then return; what
-- did not finish is recovered by the next start.

local core = require "spool.core"
local json = require "spool.json"
local api = require "spool.serve.api"
local runner = require "spool.run.runner"
local store = require "spool.run.store"
local schedules = require "spool.serve.schedules"
local loader = require "spool.run.loader"
local metrics = require "spool.serve.metrics"
local hub = require "spool.run.hub"
local webhooks = require "spool.serve.webhooks"
local channels = require "spool.serve.channels"
local common = require "spool.serve.channels.common"
local config = require "spool.base.config"
local inspector = require "spool.serve.inspector"

local M = {}

local server = nil
local settings = nil
local ticker = nil -- the deadline ticker: { signal, done }
local notices = nil -- what other workers tell (PostgreSQL), or nil
local buckets = {} -- peer -> { tokens, at }: the rate limit's state


local LOOPBACK = { ["127.0.0.1"] = true, ["::1"] = true, localhost = true }


-- OpenAI's error types, by status: its clients (spool.serve.openai's)
-- read them; spool's own read the code.
local ERROR_TYPES = { [400] = "invalid_request_error",
  [401] = "authentication_error", [403] = "permission_error",
  [404] = "not_found_error", [409] = "conflict_error",
  [422] = "invalid_request_error", [429] = "rate_limit_error" }

local function error_body(status, code, message)
  return json.encode({ error = { code = code, message = message,
    type = ERROR_TYPES[status] or (status >= 500 and "server_error")
      or "invalid_request_error", param = json.null } })
end


local function reply(status, body, headers, content_type)
  headers = headers or {}
  headers["Content-Type"] = headers["Content-Type"] or content_type
    or "application/json"
  -- An answer is what it says it is, and is not kept by a cache on the
  -- way (the inspector's files say otherwise for themselves).
  headers["X-Content-Type-Options"] = "nosniff"
  headers["Cache-Control"] = headers["Cache-Control"] or "no-store"
  metrics.add("spool_http_requests_total", { code = status })
  return { status = status, body = body, headers = headers }
end


local function fail(status, code, message, headers)
  return reply(status, error_body(status, code, message), headers)
end


-- Is the Host header this server? (Only checked on loopback, where a
-- browser on the same machine is the threat; beyond it, the token is.)
local function host_ok(host_header)
  if not host_header then
    return false
  end
  local allowed = settings.allowed_hosts
  if allowed then
    return allowed[host_header:lower():gsub(":%d+$", "")] == true
  end
  if not LOOPBACK[settings.host] then
    return true
  end
  local name, port = host_header:lower():match("^%[?([^%]]-)%]?:(%d+)$")
  if not name then
    name = host_header:lower():match("^%[?([^%]]-)%]?$")
  end
  return name ~= nil and LOOPBACK[name] == true
    and (port == nil or tonumber(port) == settings.port)
end


-- The caller a request's token names ("api", or "api:<name>"), or nil.
local function principal(req)
  local scheme, given = (req.headers.authorization or ""):match(
    "^(%a+) +(.+)$")
  if not scheme or scheme:lower() ~= "bearer" then
    return nil
  end
  -- Compare digests: equal length, constant time, whatever was sent.
  local digest, who = core.sha256(given), nil
  for _, t in ipairs(settings.tokens) do
    if core.equal(digest, t.digest) then
      who = t.name
    end
  end
  return who
end


-- Drops the buckets of clients quiet long enough to be full again, so
-- the table holds only the clients of the last seconds.
local function forget_idle_clients()
  local now = core.now()
  for peer, b in pairs(buckets) do
    if now - b.at > 10000 then
      buckets[peer] = nil
    end
  end
end


-- A token bucket per client address: `rate` per second, bursts of 2x.
local function within_rate(peer)
  local rate = settings.rate
  if not rate then
    return true
  end
  local now = core.now()
  local b = buckets[peer]
  if not b then
    b = { tokens = 2 * rate, at = now }
    buckets[peer] = b
  end
  b.tokens = math.min(2 * rate, b.tokens + (now - b.at) * rate / 1000)
  b.at = now
  if b.tokens < 1 then
    return false
  end
  b.tokens = b.tokens - 1
  return true
end


-- A signed route (an inbound webhook) proves itself with its signature
-- instead of the token. Returns the signature, or nil and the error reply.
local function check_signature(req)
  local hooks = config.get().hooks or {}
  local secret = core.getenv(hooks.secret_env or "SPOOL_HOOK_SECRET")
  if not secret or secret == "" then
    return nil, fail(404, "not_found", "inbound webhooks are not set up")
  end
  local sig, why = webhooks.verify(req.headers["spool-signature"], req.path,
    req.body, secret, (hooks.max_age_s or 300) * 1000)
  if not sig then
    return nil, fail(401, "bad_signature", why)
  end
  return sig
end


-- Past the gate: the body, then the route's handler.
local function handle_route(req, route, params)
  local body = {}
  if req.method == "POST" then
    local ctype = (req.headers["content-type"] or ""):lower()
    if not ctype:match("^application/json%s*$")
        and not ctype:match("^application/json%s*;") then
      return fail(415, "unsupported_media_type", "send the body as "
        .. "Content-Type: application/json")
    end
    if req.body ~= "" then
      local value, jerr = json.decode(req.body)
      if value == nil then
        return fail(400, "bad_json", "the body is not valid JSON ("
          .. tostring(jerr):gsub("^EJSON: ", "") .. ")")
      end
      if type(value) ~= "table" or json.is_array(value) then
        return fail(422, "invalid", "the body must be a JSON object")
      end
      body = value
    end
  end
  local ok, status, value, headers, text = pcall(route[3], req, params, body)
  if not ok then
    local e = status
    if type(e) == "table" and e.status then
      return fail(e.status, e.code, e.message, e.headers)
    end
    core.log("error", string.format("%s %s failed: %s", req.method, req.path,
      tostring(e)))
    return fail(500, "internal", "internal error (logged)")
  end
  if status == nil then
    return { status = 200, body = "" } -- a stream, which is over
  end
  if value == nil and text == nil then -- 202: taken, nothing to say
    metrics.add("spool_http_requests_total", { code = status })
    return { status = status, body = "", headers = headers }
  end
  if text then
    return reply(status, text, headers, "text/plain; version=0.0.4; "
      .. "charset=utf-8")
  end
  return reply(status, json.encode(value), headers)
end


local function gate_and_handle(req)
  if not within_rate(req.peer) then
    return fail(429, "rate_limited", "too many requests from this address",
      { ["Retry-After"] = "1" })
  end
  local route, params = api.match(req.method, req.path)
  if not route then
    if #params > 0 then
      return fail(405, "method_not_allowed", req.method .. " is not allowed "
        .. "here", { Allow = table.concat(params, ", ") })
    end
    return fail(404, "not_found", "no such route: " .. req.path)
  end
  if route.channel then
    -- Slack, Discord: the platform signs; its body is its own format.
    local ok, answer = pcall(common.module(route.channel).inbound, req,
      channels, common.settings(route.channel))
    if not ok then
      core.log("error", string.format("%s %s failed: %s", req.method,
        req.path, tostring(answer)))
      return fail(500, "internal", "internal error (logged)")
    end
    return answer
  end
  if route.signed then
    local sig, refused = check_signature(req)
    if not sig then
      return refused
    end
    req.principal = "hook" -- who answers: the holder of the hook secret
    local answer = handle_route(req, route, params)
    webhooks.settle(sig, answer.status < 300)
    return answer
  end
  if not host_ok(req.headers.host) then
    return fail(403, "forbidden_host", "the Host header does not name this "
      .. "server")
  end
  if route.public then
    return handle_route(req, route, params) -- the inspector's files
  end
  req.principal = principal(req)
  if not req.principal then
    return fail(401, "unauthorized", "a valid bearer token is required "
      .. "(spool token prints the project's)",
      { ["WWW-Authenticate"] = "Bearer" })
  end
  return handle_route(req, route, params)
end


-- Counts the requests being handled, so a drain can wait for them.
local handling = 0

local function handle(req)
  handling = handling + 1
  local ok, answer = pcall(gate_and_handle, req)
  handling = handling - 1
  if not ok then
    error(answer, 0)
  end
  return answer
end


-- The project's own token file (see the gate, above).
M.TOKEN_FILE = ".spool/api-token"


-- The token the API asks for: $token_env's, else the project's own (made
-- when missing). Returns it, and where it came from; or nil, err.
function M.token(token_env)
  local token = core.getenv(token_env or "SPOOL_TOKEN")
  if token then
    return token, "$" .. (token_env or "SPOOL_TOKEN")
  end
  local t, err = core.private_token(config.get().project .. "/"
    .. M.TOKEN_FILE)
  if not t then
    local project = config.get().project .. "/"
    local at = err:find(project, 1, true)
    if at then -- no path on disk in a message a client may see
      err = err:sub(1, at - 1) .. err:sub(at + #project)
    end
    return nil, err
  end
  return t, M.TOKEN_FILE
end


-- Every token the API takes: { { name, digest } }.
local function tokens_of(main)
  local list = { { name = "api", digest = core.sha256(main) } }
  -- (its shape checked when the project opened: spool.base.config)
  for name, env in pairs(config.get().file.api_tokens or {}) do
    local t = core.getenv(env)
    if t and #t >= 16 then
      list[#list + 1] = { name = "api:" .. name, digest = core.sha256(t) }
    else
      core.log("warn", string.format("api_tokens.%s: $%s is not set (or "
        .. "shorter than 16 characters): that caller cannot come in", name,
        env))
    end
  end
  return list
end


-- Starts serving. opts: host, port, token_env (default "SPOOL_TOKEN"),
-- token (a token given directly: tests), max_runs, max_body, rate
-- (requests/s per client), allowed_hosts (list), max_connections and
-- max_per_peer (core.listen's). Returns the port, or nil and "ECODE: why".
-- Must run in a task.
function M.start(opts)
  if server then
    return nil, "ESTATE: the control API is already being served"
  end
  local host = opts.host or "127.0.0.1"
  local token, source = opts.token, "the caller"
  if not token then
    token, source = M.token(opts.token_env)
    if not token then
      return nil, source
    end
  end
  local tokens = tokens_of(token)
  local allowed
  if opts.allowed_hosts then
    allowed = {}
    for _, name in ipairs(opts.allowed_hosts) do
      allowed[name:lower()] = true
    end
  end
  settings = { host = host, tokens = tokens, rate = opts.rate,
               allowed_hosts = allowed }
  channels.start_pollers()
  runner.max_runs = opts.max_runs or 1000
  runner.draining = false
  -- Every agent loaded and checked now, so /v1/agents lists them all.
  loader.reload()
  inspector.load()
  local err
  server, err = core.listen { host = host, port = opts.port or 0,
    handler = handle, max_body = opts.max_body or 1024 * 1024,
    timeout_ms = 30000, max_connections = opts.max_connections,
    max_per_peer = opts.max_per_peer }
  if not server then
    settings = nil
    return nil, err
  end
  settings.port = server:port()
  -- Threads a stopped process left running go on here; deadlines that
  -- come due while serving fire within a second.
  local report = runner.recover()
  if #report.resumed > 0 or #report.expired > 0 then
    core.log("info", string.format("recovered %d interrupted threads, "
      .. "expired %d deadlines", #report.resumed, #report.expired))
  end
  -- What other workers commit wakes the streams that follow it here, and
  -- a cancel they were asked for reaches the run here at once.
  notices = store.listen(function(ids)
    local ours = false
    for _, id in ipairs(ids) do
      hub.wake(id)
      ours = ours or runner.is_live(id)
    end
    if ours then
      runner.cancel_requested()
    end
  end)
  local tick = { signal = core.signal() }
  ticker = tick
  core.spawn(function()
    while not tick.signal:wait(1000) do
      runner.fire_due()
      runner.take_over() -- threads whose worker stopped, lease lapsed
      runner.cancel_requested() -- of runs here, through another worker
      schedules.fire()
      webhooks.deliver_due() -- notices the outbox holds, due to be tried
      forget_idle_clients()
    end
    tick.done = true
  end)
  core.log("info", string.format("serving the control API on http://%s:%d "
    .. "(its token: %s)", host:find(":") and ("[" .. host .. "]") or host,
    settings.port, source))
  return settings.port
end


-- Stops serving: no new connections; runs stop between steps; waits up to
-- drain_ms for the steps in flight to be stored. Returns how many runs
-- were still in flight when it gave up. Must run in a task.
function M.stop(drain_ms)
  if not server then
    return 0
  end
  -- Everything shutdown waits for shares the one deadline.
  local deadline = core.now() + (drain_ms or 10000)
  runner.draining = true
  channels.stop_pollers()
  server:drain() -- no new connections; the ones in use close once answered
  ticker.signal:notify()
  hub.notify_all() -- event streams end now; clients reconnect elsewhere
  while (runner.running() > 0 or handling > 0 or not ticker.done
      or #channels.pollers_running() > 0) and core.now() < deadline do
    core.sleep(10)
  end
  server:close()
  server = nil
  if notices then
    notices:close()
    notices = nil
  end
  local left = runner.running()
  if left > 0 then
    core.log("warn", string.format("%d runs were still in their step at "
      .. "shutdown; another worker, or the next start, continues them", left))
  end
  store.release_all()
  local busy = channels.pollers_running(true)
  for i, name in ipairs(busy) do
    busy[i] = "the " .. name .. " poller"
  end
  if not ticker.done then
    busy[#busy + 1] = "the deadline ticker"
  end
  if #busy > 0 then
    core.log("warn", "drain: " .. table.concat(busy, ", ") .. " had not "
      .. "finished by the deadline; left to end with the engine")
  end
  ticker = nil
  settings = nil
  buckets = {}
  runner.draining = false
  return left
end


function M.port()
  return settings and settings.port
end


return M
