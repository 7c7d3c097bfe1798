-- spool.mock: the built-in mock model, a chat server on the engine's own
-- loop, deterministic and driven by a script. It speaks every format
-- spool.llm does (spool.model.mock_wire): OpenAI Chat Completions at
-- /v1/chat/completions, OpenAI Responses at /v1/responses, Anthropic
-- Messages at /v1/messages, each whole or streamed ("stream": true).
--
-- A mock script is a Lua file returning
--
--   { model = "mock-1", latency_ms = 0, rules = { rule, ... } }
--
-- (or just the list of rules). The first rule whose `when` matches the
-- request gives the reply. `when` is a table of conditions, all of which
-- must hold, or a function(conv) -> boolean:
--
--   system = "pattern"     the system prompt matches (Lua pattern)
--   user = "pattern"       the first user message (the input) matches
--   last_user = "pattern"  the latest user message matches
--   last = "tool"          the role of the last message
--   after = "get_order"    the last message answers a call of this tool
--   turns = 2              assistant messages so far
--   offers = "refund"      the request offers this tool
--
-- A reply is a string (plain text) or a table, or a function(conv) that
-- returns one:
--
--   { text = "..." }                    plain text
--   { json = { ... } }                  text that is this value as JSON
--   { tool = "name", args = { ... } }   one tool call (args may be a string)
--   { tool_calls = { { name =, args = }, ... } }
--   { status = 500, error = "..." }     an HTTP error, in the format's shape
--   { body = "raw bytes" }              a raw (possibly malformed) body
--   { sse = "raw stream" | { piece, ... } }  a recorded event stream, sent
--                                       as it is (pieces as separate writes)
--   latency_ms = n                      in any table: answer after n ms
--
-- and faults, for the reliability of spool.llm:
--
--   retry_after = s, retry_after_ms = n  with a status: those headers
--   headers = { name = value }          with a status: more headers
--   { drop = true }                     close the connection, no answer
--                                       (curl itself retries this once on
--                                       a reused connection)
--   { reset = true }                    hang up halfway through the body
--   stall_ms = n, stall_after = k       (streams) pause after k events
--   cut_after = k                       (streams) end after k events
--   stream_error = { type=, message= }  (streams) an error event after
--                                       cut_after (default 1) events
--   chunk = n                           (streams) bytes of text per delta
--
-- `conv` describes the request: body (decoded), raw (the bytes), format
-- (the provider's), headers (lower-case names), system,
-- user, last_user,
-- last, after, turns, tools (set of offered names), tool_results (list of
-- { name, call_id, content }).
--
-- GET /_mock/stats answers { requests, inflight, peak_inflight, errors,
-- streams, connections (open now, this one's included) }; POST
-- /_mock/reset zeroes them.

local core = require "spool.core"
local json = require "spool.json"
local wire = require "spool.model.mock_wire"
local config = require "spool.base.config"

local M = {}

local ECHO = { rules = { { reply = function(conv)
  return { text = "(mock) " .. (conv.last_user or "") }
end } } }


-- Loads a script file (relative paths are taken from the project folder).
function M.load_script(path, project)
  if type(path) == "table" then
    return path
  end
  local full = path:sub(1, 1) == "/" and path or (project .. "/" .. path)
  local f, err = io.open(full, "r")
  if not f then
    return nil, "ENOTFOUND: mock script " .. err
  end
  local text = f:read("a")
  f:close()
  local env = setmetatable({ json = json }, { __index = _G })
  local chunk, cerr = load(text, "@" .. path, "t", env)
  if not chunk then
    return nil, "EINVAL: " .. cerr
  end
  local ok, script = pcall(chunk)
  if not ok then
    return nil, "EINVAL: " .. tostring(script)
  end
  if type(script) ~= "table" then
    return nil, "EINVAL: mock script " .. path .. " must return a table"
  end
  return script
end


local text_of = wire.text_of


-- Derives the conversation state rules match on.
function M.conversation(body)
  local conv = { body = body, turns = 0, tools = {}, tool_results = {} }
  local systems, names = {}, {}
  for _, m in ipairs(type(body.messages) == "table" and body.messages or {}) do
    if type(m) == "table" then
      local role = m.role
      if role == "system" or role == "developer" then
        systems[#systems + 1] = text_of(m.content)
      elseif role == "user" then
        conv.user = conv.user or text_of(m.content)
        conv.last_user = text_of(m.content)
      elseif role == "assistant" then
        conv.turns = conv.turns + 1
        for _, c in ipairs(type(m.tool_calls) == "table" and m.tool_calls
            or {}) do
          if type(c) == "table" and type(c["function"]) == "table" then
            names[c.id or ""] = c["function"].name
          end
        end
      elseif role == "tool" then
        conv.tool_results[#conv.tool_results + 1] = {
          call_id = m.tool_call_id, name = names[m.tool_call_id or ""],
          content = text_of(m.content),
        }
      end
      conv.last = role
    end
  end
  if conv.last == "tool" then
    conv.after = conv.tool_results[#conv.tool_results].name
  end
  conv.system = table.concat(systems, "\n")
  for _, t in ipairs(type(body.tools) == "table" and body.tools or {}) do
    if type(t) == "table" and type(t["function"]) == "table" then
      conv.tools[t["function"].name] = true
    end
  end
  return conv
end


local function find(s, pattern)
  return type(s) == "string" and s:find(pattern) ~= nil
end


local function matches(when, conv)
  if when == nil then
    return true
  elseif type(when) == "function" then
    return when(conv) and true or false
  end
  for k, want in pairs(when) do
    local ok
    if k == "system" or k == "user" or k == "last_user" then
      ok = find(conv[k], want)
    elseif k == "last" or k == "after" or k == "turns" then
      ok = conv[k] == want
    elseif k == "offers" then
      ok = conv.tools[want] == true
    else
      error("mock rule: unknown condition '" .. tostring(k) .. "'", 0)
    end
    if not ok then
      return false
    end
  end
  return true
end


-- The reply a script gives a request body (decoded, in `format`), as a
-- table.
function M.reply_for(script, body, raw, format, headers)
  local conv = M.conversation(wire.chat_view(body, format or "openai"))
  conv.body = body
  conv.headers = headers or {}
  conv.format = format or "openai"
  conv.raw = raw
  local rules = script.rules or script
  for _, rule in ipairs(rules) do
    if matches(rule.when, conv) then
      local reply = rule.reply
      if type(reply) == "function" then
        reply = reply(conv)
      end
      if type(reply) == "string" then
        reply = { text = reply }
      end
      return reply, conv
    end
  end
  return { text = "(mock) no rule matched this request" }, conv
end


local function tokens(n)
  return (n + 3) // 4
end


-- What a reply table says, as a result spool.model.mock_wire can write in any
-- format.
local function result(script, reply, conv, request_bytes, seq)
  local calls = reply.tool_calls
  if reply.tool then
    calls = { { name = reply.tool, args = reply.args } }
  end
  local r = { id = "mock-" .. seq, created = core.time() // 1000,
              model = conv.body.model or script.model or "mock-1",
              calls = {}, finish = "stop" }
  local out_bytes = 0
  for i, c in ipairs(calls or {}) do
    local args = c.args or {}
    if type(args) ~= "string" then
      args = json.encode(args)
    end
    out_bytes = out_bytes + #args
    r.calls[i] = { id = string.format("call_%d_%d", conv.turns + 1, i),
                   name = c.name, arguments = args }
    r.finish = "tool_calls"
  end
  r.text = reply.text
  if reply.json ~= nil then
    r.text = json.encode(reply.json)
  end
  out_bytes = out_bytes + #(r.text or "")
  r.finish = reply.finish_reason or r.finish
  local u = reply.usage or {}
  r.usage = { input = u.prompt_tokens or tokens(request_bytes),
              output = u.completion_tokens or tokens(out_bytes) }
  return r
end


local function error_headers(format, reply)
  local h = { ["content-type"] = "application/json" }
  if reply.retry_after then
    h["retry-after"] = tostring(reply.retry_after)
  end
  if reply.retry_after_ms then
    h["retry-after-ms"] = tostring(reply.retry_after_ms)
  end
  if format == "anthropic" then
    h["request-id"] = "req_mock"
  end
  for k, v in pairs(reply.headers or {}) do
    h[k] = v
  end
  return h
end


-- Sends a reply as a stream of events, with the faults it asks for.
local function stream_reply(req, format, reply, r)
  local s = req.stream(200, { ["content-type"] = "text/event-stream",
                              ["cache-control"] = "no-cache" })
  local events = wire.events(format, r, reply.chunk)
  local stop = reply.cut_after
  if reply.stream_error then
    stop = stop or 1
  end
  for i, ev in ipairs(events) do
    if stop and i > stop then
      break
    end
    if reply.stall_ms and i == (reply.stall_after or 1) + 1 then
      core.sleep(reply.stall_ms)
    end
    if not s:send(wire.sse(ev)) then
      return
    end
  end
  if reply.stream_error then
    s:send(wire.sse(wire.error_event(format, reply.stream_error)))
  end
end


local JSON_HEADERS = { ["content-type"] = "application/json" }


-- Starts a mock model. opts: script (a path or a table; nil echoes the
-- last user message), host, port, project. Returns the mock (with
-- :port(), :url(), :stats(), :close(), and .script, which a request reads
-- when it comes) or nil, err.
function M.start(opts)
  local script = ECHO
  if opts.script then
    local s, err = M.load_script(opts.script, opts.project or core.project())
    if not s then
      return nil, err
    end
    script = s
  end
  local mock = { script = script }
  local stats = { requests = 0, inflight = 0, peak_inflight = 0, errors = 0,
                  streams = 0 }
  local server -- the handler reports its connections

  local function chat(req, format)
    local script = mock.script -- (the one in force when the request came)
    local body, err = json.decode(req.body)
    if type(body) ~= "table" then
      stats.errors = stats.errors + 1
      return { status = 400, headers = JSON_HEADERS,
               body = wire.error_body(format, 400, "request body is not JSON: "
                 .. tostring(err)) }
    end
    local ok, reply, conv = pcall(M.reply_for, script, body, req.body, format,
      req.headers)
    if not ok then
      stats.errors = stats.errors + 1
      return { status = 500, headers = JSON_HEADERS,
               body = wire.error_body(format, 500, "mock script failed: "
                 .. tostring(reply)) }
    end
    local latency = reply.latency_ms or script.latency_ms or 0
    if latency > 0 then
      core.sleep(latency)
    end
    if reply.drop then
      return { drop = true }
    elseif reply.reset then
      -- Promise a body, send a piece, hang up: what a crashed upstream does.
      local st = req.stream(200, { ["content-type"] = "application/json",
                                   ["content-length"] = "4096" })
      st:send('{"id": "cut')
      return
    elseif reply.status and reply.status ~= 200 then
      return { status = reply.status, headers = error_headers(format, reply),
               body = reply.body or wire.error_body(format, reply.status,
                 reply.error or "mock error") }
    elseif reply.body then
      return { status = 200, headers = JSON_HEADERS, body = reply.body }
    elseif reply.sse then
      -- Recorded stream bytes, replayed as they are.
      local st = req.stream(200, { ["content-type"] = "text/event-stream" })
      for _, piece in ipairs(type(reply.sse) == "table" and reply.sse
          or { reply.sse }) do
        st:send(piece)
      end
      return
    end
    local r = result(script, reply, conv, #req.body, stats.requests)
    if body.stream == true then
      stats.streams = stats.streams + 1
      stream_reply(req, format, reply, r)
      return
    end
    return { status = 200, headers = JSON_HEADERS,
             body = wire.body(format, r) }
  end

  local function handler(req)
    local path = req.path:gsub("^/v1", "")
    local format = wire.format(path)
    if format and req.method == "POST" then
      stats.requests = stats.requests + 1
      stats.inflight = stats.inflight + 1
      if stats.inflight > stats.peak_inflight then
        stats.peak_inflight = stats.inflight
      end
      local ok, res = pcall(chat, req, format)
      stats.inflight = stats.inflight - 1
      if not ok then
        error(res, 0)
      end
      return res
    elseif path == "/models" and req.method == "GET" then
      return { headers = JSON_HEADERS, body = json.encode({ object = "list",
        data = json.array({ { id = mock.script.model or "mock-1",
                              object = "model", owned_by = "spool" } }) }) }
    elseif req.path == "/_mock/stats" then
      stats.connections = server:connections()
      return { headers = JSON_HEADERS, body = json.encode(stats) }
    elseif req.path == "/_mock/reset" and req.method == "POST" then
      stats.requests, stats.peak_inflight, stats.errors = 0, stats.inflight, 0
      stats.streams = 0
      return { headers = JSON_HEADERS, body = "{}" }
    end
    return { status = 404, headers = JSON_HEADERS,
             body = wire.error_body("openai", 404, "no route " .. req.method .. " "
               .. req.path) }
  end

  local err
  server, err = core.listen { host = opts.host or "127.0.0.1",
                              port = opts.port or 0, handler = handler,
                              max_body = 64 * 1024 * 1024,
                              -- the engine's runs, all from one address
                              -- (bench W2: 10,000 at once)
                              max_per_peer = 10000 }
  if not server then
    return nil, err
  end
  local host = opts.host or "127.0.0.1"
  function mock.port() return server:port() end
  function mock.url() return string.format("http://%s:%d/v1", host,
    server:port()) end
  function mock.stats() return stats end
  function mock.connections() return server:connections() end
  function mock.close() server:close() end
  return mock
end


local local_mock = nil


-- The URL of the project's in-process mock model, started on first use
-- with the project's mock script (spool.lua: mock = "mock/x.lua").
function M.local_url()
  if not local_mock then
    local cfg = config.get()
    local mock, err = M.start { script = cfg.mock_script,
                                project = cfg.project }
    if not mock then
      error("cannot start the mock model: " .. err, 0)
    end
    local_mock = mock
  end
  return local_mock.url()
end


-- Makes the project's in-process mock follow `script` (a table, as a
-- script file returns) from the next request on; returns the script it
-- followed. spool.test's scripted models work this way.
function M.set_local_script(script)
  M.local_url()
  local before = local_mock.script
  local_mock.script = script
  return before
end


return M
