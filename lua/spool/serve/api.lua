-- spool.serve.api: the control API's routes (private). Each handler gets the
-- request, the path's parameters and the decoded JSON body, and returns
-- status, value (encoded as JSON) [, headers] — or raises M.fail(...) /
-- an engine error ("ECODE: why"), which spool.serve turns into a JSON
-- error with the right status. docs/openapi.json describes every route;
-- spec/serve_spec.lua keeps the two in agreement.

local core = require "spool.core"
local json = require "spool.json"
local store = require "spool.run.store"
local thread_mod = require "spool.run.thread"
local runner = require "spool.run.runner"
local loader = require "spool.run.loader"
local hub = require "spool.run.hub"
local await = require "spool.run.await"
local step_request = require "spool.run.step_request"
local metrics = require "spool.serve.metrics"
local human = require "spool.human"
local channels = require "spool.serve.channels"
local common = require "spool.serve.channels.common"
local mcp_endpoint = require "spool.mcp.endpoint"
local inspector = require "spool.serve.inspector"
local evals = require "spool.serve.evals"
local openai = require "spool.serve.openai"
local openai_chat = require "spool.serve.openai_chat"
local openai_responses = require "spool.serve.openai_responses"

local M = {}

local MAX_WAIT_MS = 300000
local IDEMPOTENCY_NS = "spool.idempotency"
local IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000
local STATUSES = { running = true, waiting = true, done = true, failed = true,
                   cancelled = true }
local NONE = {}


-- An error for the client: raised, and answered by spool.serve.
function M.fail(status, code, message, headers)
  error(setmetatable({ status = status, code = code, message = message,
                       headers = headers }, {
    __tostring = function(e) return e.message end }), 0)
end


-- Raises the API error for an engine error "ECODE: why", with the status
-- and code the error table gives it (engine/src/base/errors.h); a 500 is ours:
-- logged, never described.

function M.engine_error(err)
  local ecode, why = tostring(err):match("^(%u+): (.*)$")
  local e = core.errors[ecode]
  if e and e.status ~= 500 then
    M.fail(e.status, e.api, why)
  end
  error(err, 0)
end


-- A 503 when the server takes no new thread now (draining, or at its
-- most runs), saying when to try again.
function M.admit()
  local refused, why = runner.admission()
  if refused then
    M.fail(503, refused, why,
      { ["Retry-After"] = refused == "draining" and "5" or "1" })
  end
end


local function field(body, name, kind, required)
  local v = body[name]
  if v == nil or v == json.null then
    if required then
      M.fail(422, "invalid", string.format("the body needs \"%s\" (a %s)",
        name, kind))
    end
    return nil
  end
  local ok = (kind == "string" and type(v) == "string")
    or (kind == "integer" and math.type(v) == "integer")
    or (kind == "object" and type(v) == "table" and not json.is_array(v))
    or kind == "any"
  if not ok then
    M.fail(422, "invalid", string.format("\"%s\" must be a %s, not %s", name,
      kind, json.encode(v)))
  end
  return v
end


-- A query parameter's value, decoded; nil when absent or empty. A value
-- with a NUL byte is refused: the store would read it cut short.
local function query_param(query, name)
  for k, v in (query or ""):gmatch("([^&=]+)=?([^&]*)") do
    if k == name then
      local value = v:gsub("+", " "):gsub("%%(%x%x)", function(h)
        return string.char(tonumber(h, 16))
      end)
      if value:find("\0", 1, true) then
        M.fail(422, "invalid", name .. " must not hold a NUL byte")
      end
      return value ~= "" and value or nil
    end
  end
end


-- A thread as the API shows it (from its durable events).
local function thread_view(t, row, with_events)
  local status = t:status()
  local view = {
    id = t.id, agent = t.agent, parent = t.parent or json.null,
    status = status, step = t.step, usage = t:usage(),
    created_at = row and row.created_at, updated_at = row and row.updated_at,
  }
  local req = t:pending_request()
  if status == "waiting" and req then
    view.waiting_for = human.view(req.data)
  end
  if status == "done" or status == "failed" or status == "cancelled" then
    local result, err = t:outcome()
    if status == "done" then
      view.result = result == nil and json.null or result
    else
      view.error = err or status
    end
  end
  if with_events then
    view.events = json.array(t.events)
  end
  return view
end


local function load_thread(id)
  if not id:match("^[%w_%-]+$") or #id > 64 then
    M.fail(404, "not_found", "unknown thread '" .. id .. "'")
  end
  local record, err = store.load(id)
  if not record then
    M.engine_error(err)
  end
  return thread_mod.from_record(record), record.thread
end


-- Waits (at most ms) for a thread to stop running; returns its view.
local function wait_for_end(id, ms)
  local t, row = await(id, ms)
  if not t then
    M.engine_error(row)
  end
  return thread_view(t, row, false)
end


local function start_thread(req, _, body)
  local name = field(body, "agent", "string", true)
  local input = field(body, "input", "string", true)
  local wait_ms = field(body, "wait_ms", "integer") or 0
  if wait_ms < 0 or wait_ms > MAX_WAIT_MS then
    M.fail(422, "invalid", "\"wait_ms\" must be 0 to " .. MAX_WAIT_MS)
  end
  local key = req.headers["idempotency-key"]
  if key and (#key > 200 or key == "") then
    M.fail(400, "bad_request", "Idempotency-Key must be 1-200 characters")
  end
  -- A retry gets the thread its key started, never a second one; the same
  -- key with another request is a mistake the client should hear of.
  local fingerprint = core.sha256(json.encode({ name, input }))
  local function replay()
    local doc = key and store.state_get(IDEMPOTENCY_NS, key)
    if doc then
      if doc.value.request ~= fingerprint then
        M.fail(422, "idempotency_mismatch", "this Idempotency-Key was used "
          .. "for a different request")
      end
      local view = wait_for_end(doc.value.id, wait_ms)
      view.replayed = true
      return view
    end
  end
  local earlier = replay()
  if earlier then
    return 200, earlier
  end
  M.admit()
  local agent, err = loader.load(name)
  if not agent then
    M.engine_error(err)
  end
  local id = thread_mod.new_id()
  -- The key is stored with the thread's input, in one transaction: a key
  -- never names a thread that was not stored, nor the other way round.
  local writes = key and { store.engine_write { ns = IDEMPOTENCY_NS,
    key = key, if_version = 0,
    value = { id = id, agent = name, request = fingerprint },
    expires_at = core.time() + IDEMPOTENCY_TTL_MS } }
  local thread = runner.start(agent, input, id, writes, nil,
    req.headers["traceparent"])
  local sig = hub.follow(id)
  while thread.persisted == 0 and not thread.halted do
    sig:wait(1000)
  end
  hub.unfollow(id, sig)
  if thread.halted then
    -- The same key at the same moment: the other request started it.
    local other = tostring(thread.halted):match("^ECONFLICT: state")
      and replay()
    if other then
      return 200, other
    end
    M.fail(503, "store_failed", "the thread could not be stored: "
      .. tostring(thread.halted):gsub("^%u+: ", ""))
  end
  return 201, wait_for_end(id, wait_ms), { Location = "/v1/threads/" .. id }
end


local function list_threads(req)
  local status = query_param(req.query, "status")
  if status and not STATUSES[status] then
    M.fail(422, "invalid", "status must be running, waiting, done, failed "
      .. "or cancelled")
  end
  local limit = tonumber(query_param(req.query, "limit") or "50")
  if not limit or limit < 1 or limit > 1000 or limit % 1 ~= 0 then
    M.fail(422, "invalid", "limit must be 1 to 1000")
  end
  local filter = { status = status, agent = query_param(req.query, "agent"),
                   limit = math.tointeger(limit) + 1 }
  local cursor = query_param(req.query, "cursor")
  if cursor then
    local at, id = cursor:match("^(%d+)%.([%w_%-]+)$")
    if not at then
      M.fail(422, "invalid", "cursor is not one this server gave")
    end
    filter.before, filter.before_id = math.tointeger(tonumber(at)), id
  end
  local rows, err = store.list(filter)
  if not rows then
    M.engine_error(err)
  end
  local next_cursor = json.null
  if #rows > limit then
    rows[#rows] = nil
    local last = rows[#rows]
    next_cursor = string.format("%d.%s", last.created_at, last.id)
  end
  local counts
  if query_param(req.query, "counts") == "true" then
    local stored, err = store.by_status(filter.agent)
    if not stored then
      M.engine_error(err)
    end
    counts = {}
    for s in pairs(STATUSES) do
      counts[s] = math.tointeger(stored[s]) or 0
    end
  end
  return 200, { threads = json.array(rows), next_cursor = next_cursor,
                counts = counts }
end


local function get_thread(req, p)
  local t, row = load_thread(p.id)
  return 200, thread_view(t, row, query_param(req.query, "events") ~= "false")
end


-- The body of a POST .../events, as the runner's response table. Who
-- answered is the caller the token names; a `by` in the body is only
-- what the caller claims (a bot relaying a person's click), kept apart.
local function response_of(req, body)
  local kind = field(body, "type", "string", true)
  local r = { by = req.principal or "api",
              claimed_by = field(body, "by", "string"),
              channel = field(body, "channel", "string") or "api" }
  if kind == "answer" then
    r.answer = field(body, "text", "string", true)
  elseif kind == "approve" then
    r.approve = true
    r.args = field(body, "args", "object")
  elseif kind == "reject" then
    r.reject = true
    r.reason = field(body, "reason", "string")
  elseif kind == "event" then
    r.event = field(body, "name", "string", true)
    r.data = field(body, "data", "any")
  else
    M.fail(422, "invalid", "type must be answer, approve, reject or event")
  end
  return r
end


local function send_event(req, p, body)
  local response = response_of(req, body)
  load_thread(p.id) -- 404 before anything else
  local t, err = runner.respond(p.id, response)
  if not t then
    M.engine_error(err)
  end
  return 202, { id = p.id, status = "running" }
end


-- What the model saw at a step (spool.run.step_request), as the thread's
-- agent renders it now.
local function step_view(_, p)
  local t = load_thread(p.id)
  local n = p.n:match("^%d+$") and #p.n <= 9 and math.tointeger(tonumber(p.n))
  if not n then
    M.fail(422, "invalid", "a step is a number, 1 or more")
  elseif n < 1 then
    M.fail(404, "not_found", "steps are numbered from 1")
  end
  local agent, err = loader.load(t.agent)
  if not agent then
    M.engine_error(err)
  end
  local v, verr = step_request(t, agent, n)
  if not v then
    M.engine_error(verr)
  end
  v.text = nil
  return 200, v
end


-- A new thread from the first `at` events of this one; the server runs
-- it on from there.
local function fork_thread(_, p, body)
  load_thread(p.id)
  local at = field(body, "at", "integer", true)
  local t, err = runner.fork(p.id, at)
  if not t then
    M.engine_error(err)
  end
  return 201, { id = t.id, forked_from = p.id, at = at },
    { Location = "/v1/threads/" .. t.id }
end


local function cancel_thread(_, p)
  load_thread(p.id)
  local live = runner.is_live(p.id)
  local ok, where = runner.cancel(p.id, "cancelled through the API")
  if not ok then
    M.engine_error(where)
  end
  local pending = live or where == "elsewhere"
  return pending and 202 or 200, { id = p.id,
    status = pending and "cancelling" or "cancelled" }
end


-- Server-Sent Events: every durable event of a thread after the one the
-- client names (Last-Event-ID, or ?after=SEQ), live, until the thread
-- ends. A comment line every 15 s keeps proxies (and the check that the
-- client is still there) going.
local KEEPALIVE_MS = 15000
local STORE_POLL_MS = 1000

local function sse(ev)
  return string.format("id: %d\nevent: %s\ndata: %s\n\n", ev.seq, ev.type,
    json.encode(ev))
end

local function stream_thread(req, p)
  local after = tonumber(req.headers["last-event-id"]
    or query_param(req.query, "after") or "0")
  if not after or after < 0 or after % 1 ~= 0 then
    M.fail(422, "invalid", "Last-Event-ID (or after) must be an event's seq")
  end
  local sig = hub.follow(p.id)
  -- With deltas=true, the model's text as it comes, between the events
  -- ("delta", with no id: not stored, so not resumable).
  local reader = query_param(req.query, "deltas") == "true"
    and hub.read_text(p.id, sig)
  local ok, err = pcall(function()
    local t = load_thread(p.id)
    local s = req.stream(200, { ["Content-Type"] = "text/event-stream",
                                ["Cache-Control"] = "no-store",
                                ["X-Accel-Buffering"] = "no" })
    if not s then
      return
    end
    local quiet_since = core.now()
    while true do
      for _, piece in ipairs(reader and hub.take_text(reader) or NONE) do
        if not s:send(piece == hub.RESET and "event: delta_reset\ndata: {}\n\n"
            or "event: delta\ndata: " .. json.encode({ text = piece })
              .. "\n\n") then
          return
        end
        quiet_since = core.now()
      end
      for i = after + 1, t.persisted do
        local ev = t.events[i]
        if not s:send(sse({ thread = t.id, agent = t.agent, seq = ev.seq,
          step = ev.step, type = ev.type, data = ev.data, at = ev.at,
          v = ev.v })) then
          return
        end
        after, quiet_since = ev.seq, core.now()
      end
      -- As stored: a run may have appended its end but not committed it.
      local status = t:status(t.persisted)
      if status == "done" or status == "failed" or status == "cancelled" then
        s:send("event: end\ndata: {\"status\":\"" .. status .. "\"}\n\n")
        return
      end
      if runner.draining then
        return -- the client reconnects, with Last-Event-ID, elsewhere
      end
      -- A run of this process wakes the stream with each event; so does
      -- another worker's, through the store's notifications where it has
      -- them (PostgreSQL), and the store is read again every few seconds
      -- anyway (each second without notifications): one lost costs only
      -- latency.
      local wait = runner.is_live(p.id) and KEEPALIVE_MS
        or store.listening() and 5 * STORE_POLL_MS or STORE_POLL_MS
      if not sig:wait(wait) then
        if core.now() - quiet_since >= KEEPALIVE_MS then
          if not s:send(": keepalive\n\n") then
            return
          end
          quiet_since = core.now()
        end
      end
      -- The live thread if this process runs it, else the store: its
      -- events only when its row says it has new ones.
      local live = runner.find(p.id)
      if live then
        t = live
      else
        local head = store.head(p.id)
        if not head or head.events > t.persisted then
          t = load_thread(p.id)
        end
      end
    end
  end)
  hub.unfollow(p.id, sig)
  if reader then
    hub.stop_reading(p.id, reader)
  end
  if not ok then
    error(err, 0)
  end
end


-- Server-Sent Events about the engine as a whole, live (not stored, so
-- not resumable): threads that begin to wait or end (the notices webhooks
-- send) and agents reloaded or broken by an edit.
local function stream_notices(req)
  local sub = hub.subscribe()
  local ok, err = pcall(function()
    local s = req.stream(200, { ["Content-Type"] = "text/event-stream",
                                ["Cache-Control"] = "no-store",
                                ["X-Accel-Buffering"] = "no" })
    if not s or not s:send(": spool " .. core.version .. "\n\n") then
      return
    end
    while not runner.draining do
      if not sub.signal:wait(KEEPALIVE_MS) then
        if not s:send(": keepalive\n\n") then
          return
        end
      end
      if sub.dropped > 0 then
        local n = sub.dropped
        sub.dropped = 0
        if not s:send(string.format("event: dropped\ndata: {\"count\":%d}"
          .. "\n\n", n)) then
          return
        end
      end
      local queue = sub.queue
      sub.queue = {}
      for _, notice in ipairs(queue) do
        if not s:send(string.format("event: %s\ndata: %s\n\n", notice.type,
          json.encode(notice))) then
          return
        end
      end
    end
  end)
  hub.unsubscribe(sub)
  if not ok then
    error(err, 0)
  end
end


local function list_agents()
  local agents, latest = loader.list(), evals.latest()
  for _, a in ipairs(agents) do
    a.evals = latest[a.name] or json.array()
  end
  return 200, { agents = json.array(agents) }
end


local function reload_agents()
  return 200, loader.reload()
end


local function health()
  return 200, { status = runner.draining and "draining" or "ok",
                running = runner.running(), version = core.version,
                worker = store.owner }
end


local function metrics_text()
  metrics.set("spool_lease_claims_total", store.counts.claims)
  metrics.set("spool_lease_takeovers_total", store.counts.takeovers)
  metrics.set("spool_lease_lost_total", store.counts.lost)
  return 200, nil, nil, metrics.render {
    spool_runs_in_flight = { "Threads a task of this process runs now.",
                             runner.running() },
    spool_store_listening = { "1 while other workers' notifications "
      .. "reach this one (PostgreSQL LISTEN); else it polls the store.",
      store.listening() and 1 or 0 },
    spool_takeover_backlog = { "Threads left running by a stopped worker, "
      .. "ready and not yet claimed by any.", store.backlog() or -1 },
    spool_draining = { "1 while the server shuts down.",
                       runner.draining and 1 or 0 },
  }
end


-- MCP's Streamable HTTP: the agents as tools (spool.mcp.endpoint).
local function mcp(req, _, body)
  local status, code, message = mcp_endpoint.refusal(req, body)
  if status then
    M.fail(status, code, message)
  end
  return mcp_endpoint.post(req, body)
end


-- The web inspector's page and files (spool.serve.inspector): public,
-- past the Host check only.
local function inspector_page(req)
  local status, body, headers = inspector.file("index.html",
    req.headers["if-none-match"])
  return status, nil, headers, body
end

local function inspector_file(req, p)
  local status, body, headers = inspector.file(p.file,
    req.headers["if-none-match"])
  return status, nil, headers, body
end


-- The routes: method, path template ({name} matches one segment), handler.
M.routes = {
  { "GET", "/", inspector_page, public = true },
  { "GET", "/ui/{file}", inspector_file, public = true },
  { "GET", "/healthz", health },
  { "GET", "/metrics", metrics_text },
  { "GET", "/v1/agents", list_agents },
  { "POST", "/v1/reload", reload_agents },
  { "POST", "/v1/threads", start_thread },
  { "GET", "/v1/threads", list_threads },
  { "GET", "/v1/threads/{id}", get_thread },
  { "POST", "/v1/threads/{id}/events", send_event },
  { "POST", "/v1/threads/{id}/cancel", cancel_thread },
  { "POST", "/v1/threads/{id}/fork", fork_thread },
  { "GET", "/v1/threads/{id}/steps/{n}", step_view },
  { "GET", "/v1/threads/{id}/stream", stream_thread },
  { "GET", "/v1/events", stream_notices },
  { "POST", "/mcp", mcp },
  -- The agents as OpenAI-compatible models (spool.serve.openai).
  { "GET", "/v1/models", openai.models },
  { "GET", "/v1/models/{id}", function(_, p) return openai.model(M, p) end },
  { "POST", "/v1/chat/completions", function(req, _, body)
    return openai_chat.create(M, req, body)
  end },
  { "POST", "/v1/responses", function(req, _, body)
    return openai_responses.create(M, req, body)
  end },
  { "GET", "/v1/responses/{id}", function(req, p)
    return openai_responses.get(M, req, p)
  end },
  -- Inbound webhooks: the same, signed instead of carrying the token.
  { "POST", "/v1/hooks/threads", start_thread, signed = true },
  { "POST", "/v1/hooks/threads/{id}/events", send_event, signed = true },
  -- Channels for people: each verifies its platform's own signature.
  { "POST", "/v1/channels/slack", channel = "slack" },
  { "POST", "/v1/channels/discord", channel = "discord" },
  { "POST", "/v1/channels/email", function(_, _, body)
    return common.module("email").inbound_json(channels,
      common.settings("email"), body)
  end, signed = true },
}

for _, r in ipairs(M.routes) do
  local names = {}
  r.pattern = "^" .. r[2]:gsub("{(%w+)}", function(name)
    names[#names + 1] = name
    return "([^/]+)"
  end) .. "$"
  r.names = names
end


-- The route for a method and path: route, params | nil, allowed methods.
function M.match(method, path)
  local allowed = {}
  for _, r in ipairs(M.routes) do
    local caps = { path:match(r.pattern) }
    if caps[1] ~= nil then
      if r[1] == method then
        local params = {}
        for i, name in ipairs(r.names) do
          params[name] = caps[i]
        end
        return r, params
      end
      allowed[#allowed + 1] = r[1]
    end
  end
  return nil, allowed
end


return M
