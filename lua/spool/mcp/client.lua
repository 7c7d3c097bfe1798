-- spool.mcp.client: one MCP server, spoken to over stdio (private; issue
-- 23). The server is a child process on the loop (spool.core's
-- process_spawn): newline-delimited JSON-RPC 2.0 on its stdin and stdout,
-- its stderr to the log. While a request waits, one task reads its output
-- and hands each answer to the request that waits for it (and each
-- notification to on_notice); with none waiting, nothing reads, so an
-- idle server keeps no task alive (`spool run` exits when its run ends),
-- and what it writes meanwhile waits in the pipe for the next request.
-- Requests wait on a signal with a timeout; one that times out is
-- cancelled at the server.
--
--   local c, err = client.stdio(name, { command = { file, arg... },
--                                       env = { K = "v" }, timeout_ms = n })
--   local c, err = client.http(name, { url = "https://.../mcp",
--                                      headers = { K = "v" }, timeout_ms = n })
--   c:request(method, params[, timeout_ms]) -> result | nil, err, code
--   c:notify(method[, params])
--   c:list_tools()                 -> { tool, ... }   every page
--   c:call_tool(name, args[, meta, timeout_ms]) -> result | nil, err, code
--   c.server                       -> what initialize answered
--   c.on_notice = fn(msg)          -- the server's notifications
--   c:close()
--
-- Protocol: the 2025-06-18 revision (initialize, notifications/initialized,
-- tools/list with cursors, tools/call); a server may answer with another
-- version it speaks, which is kept in c.protocol. A tool call asks for
-- progress; each notification of it gives the call another timeout_ms, up
-- to max_ms in all (ten timeouts unless the spec says).

local core = require "spool.core"
local json = require "spool.json"
local http = require "spool.base.http"
local trace = require "spool.run.trace"

local M = {}

M.PROTOCOL = "2025-06-18"

-- What a server inherits of spool's environment (as the official SDK
-- does): enough to run, never spool's secrets; the configured env adds.
local INHERITED = { "HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER",
                    "LANG", "TMPDIR" }

local Client = {}
Client.__index = Client


local function fail(code, fmt, ...)
  local msg = code .. ": " .. string.format(fmt, ...)
  return nil, msg, code
end


function Client:send(msg)
  if self.closed then
    return fail("EPIPE", "MCP server %s is closed", self.name)
  end
  local ok, err, code = self.proc:write(json.encode(msg) .. "\n")
  if not ok then
    return nil, err, code
  end
  return true
end


function Client:notify(method, params)
  return self:send { jsonrpc = "2.0", method = method, params = params }
end


-- Answers what the server asks of spool: a ping; anything else is a
-- method spool does not offer.
function Client:answer(msg)
  if msg.method == "ping" then
    self:send { jsonrpc = "2.0", id = msg.id, result = {} }
  else
    self:send { jsonrpc = "2.0", id = msg.id, error = { code = -32601,
      message = "spool does not offer " .. tostring(msg.method) } }
  end
end


-- Every request waiting fails with `why` (the server went away).
function Client:fail_all(why)
  for _, w in pairs(self.pending) do
    w.failed = why
    w.signal:notify()
  end
end


-- One message from the server: an answer goes to the request that waits
-- for it; a request of the server's is answered; a notification goes to
-- on_notice, and progress on a request of ours keeps it waiting longer.
function Client:dispatch(msg)
  if type(msg) ~= "table" then
    return
  end
  if msg.method ~= nil and msg.id ~= nil then
    self:answer(msg)
  elseif msg.method ~= nil then
    local params = msg.params
    if msg.method == "notifications/progress" and type(params) == "table"
    then
      local w = self.pending[params.progressToken]
      if w then
        w.progress_at = core.now()
      end
    end
    if self.on_notice then
      local ok, herr = pcall(self.on_notice, msg)
      if not ok then
        core.log("error", "MCP server " .. self.name .. ": " .. tostring(herr))
      end
    end
  else
    local w = self.pending[msg.id]
    if w then
      w.msg = msg
      w.signal:notify()
    end
  end
end


-- The reader: one line, one message. It ends when no request waits
-- (request() interrupts its read then).
function Client:read_loop()
  while not self.closed and next(self.pending) ~= nil do
    local line, err, code = self.proc:read_line(0)
    if line then
      local msg = json.decode(line)
      if type(msg) ~= "table" then
        core.log("warn", string.format("MCP server %s wrote a line that is "
          .. "not a JSON-RPC message: %s", self.name, line:sub(1, 200)))
      end
      self:dispatch(msg)
    elseif code ~= "EIDLE" then
      self.dead = err
      self:fail_all(string.format("EIO: MCP server %s stopped: %s",
        self.name, tostring(err)))
      break
    end
  end
  self.reading, self.reader = false, nil
  self.stopped:notify()
end


function Client:ensure_reader()
  if self.reading then
    return
  end
  self.reading = true
  core.spawn(function()
    self.reader = core.task_id()
    self:read_loop()
  end)
end


-- A request of ours, as it starts: its id, and what it waits on. A tool
-- call asks for progress (its id is the token): each notification of it
-- gives the call another timeout, up to the server's max_ms in all.
function Client:begin(method, params)
  self.next_id = self.next_id + 1
  local id = self.next_id
  params = params or {}
  if method == "tools/call" then
    params._meta = params._meta or {}
    params._meta.progressToken = id
    -- The trace the call is part of, where MCP carries it (SEP-414).
    params._meta.traceparent = trace.header()
  end
  local w = { signal = core.signal(), start = core.now() }
  self.pending[id] = w
  return id, { jsonrpc = "2.0", id = id, method = method, params = params },
    w
end


-- When request w stops waiting: a timeout after its start or its last
-- progress, and never past max_ms.
function Client:deadline(w, timeout_ms)
  return math.ceil(math.min((w.progress_at or w.start) + timeout_ms,
    w.start + (self.max_ms or 10 * self.timeout_ms)))
end


-- How long until then (at least 1 ms: 0 would mean no limit).
function Client:left(w, timeout_ms)
  return math.max(1, math.ceil(self:deadline(w, timeout_ms) - core.now()))
end


-- What a request that got no answer says: timed out, or interrupted (its
-- thread was cancelled). Either way the server is told it may stop.
function Client:unanswered(id, method, timeout_ms, why, code)
  self:notify("notifications/cancelled", { requestId = id,
    reason = why and tostring(why) or "timed out" })
  if why then
    return nil, why, code
  end
  return fail("ETIMEDOUT", "MCP server %s did not answer %s in %d ms",
    self.name, method, timeout_ms)
end


-- The result of an answer, or the server's refusal.
function Client:result_of(method, msg)
  local e = msg.error
  if e ~= nil then
    local message = type(e) == "table" and e.message or e
    return fail("EMCP", "MCP server %s refused %s: %s", self.name, method,
      tostring(message))
  end
  return msg.result
end


function Client:request(method, params, timeout_ms)
  if self.dead then
    return fail("EIO", "MCP server %s stopped: %s", self.name,
      tostring(self.dead))
  end
  timeout_ms = timeout_ms or self.timeout_ms
  local id, msg, w = self:begin(method, params)
  local ok, err, code = self:send(msg)
  if not ok then
    self.pending[id] = nil
    return nil, err, code
  end
  self:ensure_reader()
  local answered, why, wcode
  repeat
    answered, why, wcode = w.signal:wait(self:left(w, timeout_ms))
  until answered ~= false or self:deadline(w, timeout_ms) <= core.now()
  self.pending[id] = nil
  if next(self.pending) == nil and self.reader then
    core.interrupt(self.reader, "EIDLE: no request waits")
  end
  if not answered then
    return self:unanswered(id, method, timeout_ms, why, wcode)
  end
  if w.failed then
    return nil, w.failed, w.failed:match("^(E%u+)")
  end
  return self:result_of(method, w.msg)
end


function Client:list_tools()
  local tools, cursor = json.array(), nil
  for _ = 1, 1000 do -- pages: a server that never ends them is refused
    local res, err, code = self:request("tools/list",
      cursor and { cursor = cursor } or {})
    if not res then
      return nil, err, code
    end
    for _, t in ipairs(type(res.tools) == "table" and res.tools or {}) do
      tools[#tools + 1] = t
    end
    cursor = type(res.nextCursor) == "string" and res.nextCursor or nil
    if not cursor then
      return tools
    end
  end
  return fail("EMCP", "MCP server %s lists tools without end", self.name)
end


function Client:call_tool(name, args, meta, timeout_ms)
  return self:request("tools/call", { name = name, arguments = args or {},
    _meta = meta }, timeout_ms)
end


function Client:close()
  if self.closed then
    return
  end
  self.closed = true
  self:fail_all(string.format("EPIPE: MCP server %s was closed", self.name))
  self.proc:close()
  if self.reading and core.in_task() then
    self.stopped:wait(1000) -- the reader ends (it was told) before close does
  end
end


-- Starts the server `spec` names and initialises it. (task)
function M.stdio(name, spec)
  if type(spec) ~= "table" or type(spec.command) ~= "table"
      or type(spec.command[1]) ~= "string" then
    return fail("EINVAL", "MCP server %s needs command = { file, arg... }",
      tostring(name))
  end
  local env = {}
  for _, k in ipairs(INHERITED) do
    local v = core.getenv(k)
    if v then
      env[#env + 1] = k .. "=" .. v
    end
  end
  for k, v in pairs(spec.env or {}) do
    env[#env + 1] = tostring(k) .. "=" .. tostring(v)
  end
  local proc, err = core.process_spawn { command = spec.command, env = env,
    name = "mcp " .. name, cwd = spec.cwd }
  if not proc then
    return nil, err, "ENOENT"
  end
  local c = setmetatable({ name = name, proc = proc, next_id = 0,
    pending = {}, timeout_ms = spec.timeout_ms or 30000,
    max_ms = spec.max_ms, reading = false,
    stopped = core.signal() }, Client)
  local ok, ierr, code = c:initialize()
  if not ok then
    c:close()
    return nil, ierr, code
  end
  return c
end


-- ---- Streamable HTTP ----
--
-- Each message is a POST of its own to the server's one URL, with
-- `Accept: application/json, text/event-stream`. The answer is the
-- response's body: one JSON-RPC message, or an event stream read as it
-- comes, whose events carry the server's notifications, its requests (a
-- ping is answered, the rest refused) and, last, the answer. A stream
-- that ends before the answer is resumed where it left off, as the
-- server said (its last event id, sent back as Last-Event-ID on a GET,
-- after its `retry`). The session the server gives at initialize
-- (Mcp-Session-Id) goes with every message; a session the server has
-- forgotten (404) is initialised again and the message sent once more.

local Http = setmetatable({}, { __index = Client })
Http.__index = Http

-- How often a stream that ends without the answer is resumed.
local RESUMES = 5


function Http:headers_for(extra)
  local headers = { ["Accept"] = "application/json, text/event-stream" }
  for k, v in pairs(self.headers) do
    headers[k] = v
  end
  headers["Mcp-Session-Id"] = self.session
  headers["MCP-Protocol-Version"] = self.protocol
  headers["traceparent"] = trace.header()
  for k, v in pairs(extra) do
    headers[k] = v
  end
  return headers
end


-- A notification, or an answer to the server: the reply has no body.
function Http:send(msg)
  local res, err = http.request { url = self.url, method = "POST",
    headers = self:headers_for { ["Content-Type"] = "application/json" },
    body = json.encode(msg), timeout_ms = self.timeout_ms }
  if not res then
    return nil, err, err:match("^(E%u+)")
  end
  if res.status >= 300 then
    return fail("EMCP", "MCP server %s answered HTTP %d", self.name,
      res.status)
  end
  return true
end


-- Starts an exchange (a POST of `body`, or a GET resuming after event
-- `last_id`) and reads its head: stream, status, headers | nil, err, code.
function Http:open(w, timeout_ms, body, last_id)
  local s, err, code = core.http_stream { url = self.url,
    method = body and "POST" or "GET",
    headers = self:headers_for { ["Content-Type"] = body
      and "application/json" or nil, ["Last-Event-ID"] = last_id },
    body = body, timeout_ms = self.max_ms or 10 * self.timeout_ms }
  if not s then
    return nil, err, code
  end
  local status, headers, hcode = s:head(self:left(w, timeout_ms))
  if not status then
    s:close()
    return nil, headers, hcode
  end
  return s, status, headers
end


-- Reads a stream to its end (or the request's deadline): its bytes.
local function read_all(self, s, w, timeout_ms)
  local parts = {}
  while true do
    local chunk, err, code = s:read(self:left(w, timeout_ms))
    if not chunk then
      s:close()
      if err then
        return nil, err, code
      end
      return table.concat(parts)
    end
    parts[#parts + 1] = chunk
  end
end


-- Reads events until the answer (true), the stream's end (false), or a
-- failure (nil, err, code).
function Http:read_events(s, parser, w, timeout_ms)
  while true do
    if self:deadline(w, timeout_ms) <= core.now() then
      return nil, nil -- timed out
    end
    local chunk, err, code = s:read(self:left(w, timeout_ms))
    if not chunk and code ~= "ETIMEDOUT" then
      if err then
        return nil, err, code
      end
      return false
    end
    local events, perr = parser:feed(chunk or "")
    if not events then
      return fail("EPROTO", "MCP server %s sent a broken event stream: %s",
        self.name, tostring(perr))
    end
    for _, ev in ipairs(events) do
      if ev.data ~= "" then
        local msg = json.decode(ev.data)
        if type(msg) ~= "table" then
          return fail("EPROTO", "MCP server %s sent an event that is not "
            .. "JSON-RPC: %s", self.name, ev.data:sub(1, 200))
        end
        self:dispatch(msg)
        if w.msg then
          return true
        end
      end
    end
  end
end


-- The answer from an event stream, resumed where it left off as often as
-- RESUMES allows: true | nil, err, code (nil, nil: timed out).
function Http:answer_from_stream(s, w, timeout_ms)
  local parser, last_id, retry_ms = core.sse(), nil, 1000
  for _ = 0, RESUMES do
    local got, err, code = self:read_events(s, parser, w, timeout_ms)
    s:close()
    if got ~= false then
      return got, err, code
    end
    local id, retry = parser:reconnect()
    last_id, retry_ms = id or last_id, retry or retry_ms
    if not last_id then
      break -- it ended, and gave no place to resume from
    end
    core.sleep(retry_ms)
    local status, headers
    s, status, headers = self:open(w, timeout_ms, nil, last_id)
    if not s then
      return nil, status, headers
    end
    if status ~= 200 then
      s:close()
      return fail("EMCP", "MCP server %s answered HTTP %d when asked to "
        .. "resume its stream", self.name, status)
    end
    parser = core.sse()
  end
  return fail("EPROTO", "MCP server %s ended its stream without an answer",
    self.name)
end


function Http:exchange(method, id, msg, w, timeout_ms, again)
  local s, status, headers = self:open(w, timeout_ms, json.encode(msg))
  if not s then
    return nil, status, headers
  end
  local sse = (headers["content-type"] or ""):lower():find(
    "text/event-stream", 1, true)
  if status ~= 200 or not sse then
    local body, err, code = read_all(self, s, w, timeout_ms)
    if not body then
      return nil, err, code
    end
    -- (A forgotten session is a 404 by the spec; some servers say 400
    -- and name the session.)
    local forgotten = status == 404 or (status == 400
      and body:lower():find("session", 1, true) ~= nil)
    if forgotten and self.session and method ~= "initialize" and not again
    then
      local ok, ierr, icode = self:initialize()
      if not ok then
        return nil, ierr, icode
      end
      return self:exchange(method, id, msg, w, timeout_ms, true)
    end
    if status >= 300 then
      return fail("EMCP", "MCP server %s answered %s with HTTP %d",
        self.name, method, status)
    end
    local answer = json.decode(body)
    if type(answer) ~= "table" then
      return fail("EPROTO", "MCP server %s answered %s with a body that is "
        .. "not JSON-RPC: %s", self.name, method, body:sub(1, 200))
    end
    self:dispatch(answer)
  else
    local got, err, code = self:answer_from_stream(s, w, timeout_ms)
    if not got then
      return nil, err, code
    end
  end
  if method == "initialize" then
    self.session = headers["mcp-session-id"]
  end
  if not w.msg then
    return fail("EPROTO", "MCP server %s did not answer %s", self.name,
      method)
  end
  return true
end


function Http:request(method, params, timeout_ms)
  timeout_ms = timeout_ms or self.timeout_ms
  local id, msg, w = self:begin(method, params)
  local ok, err, code = self:exchange(method, id, msg, w, timeout_ms)
  self.pending[id] = nil
  if not ok then
    if err == nil or code == "ETIMEDOUT" or code == "ECANCELED" then
      return self:unanswered(id, method, timeout_ms, err, code)
    end
    return nil, err, code
  end
  return self:result_of(method, w.msg)
end


function Http:close()
  if self.closed then
    return
  end
  self.closed = true
  if self.session and core.in_task() then
    local headers = { ["Mcp-Session-Id"] = self.session }
    for k, v in pairs(self.headers) do
      headers[k] = v
    end
    http.request { url = self.url, method = "DELETE", headers = headers,
      timeout_ms = 2000 }
  end
end


-- initialize, then notifications/initialized: the session, and the
-- protocol version the server speaks. (task)
function Client:initialize()
  self.session = nil
  local res, err, code = self:request("initialize", {
    protocolVersion = M.PROTOCOL, capabilities = {},
    clientInfo = { name = "spool", version = core.version },
  })
  if not res then
    return nil, err, code
  end
  self.server, self.protocol = res, res.protocolVersion
  self:notify("notifications/initialized")
  return true
end


-- Connects to the server at spec.url and initialises it. (task)
function M.http(name, spec)
  if type(spec) ~= "table" or type(spec.url) ~= "string"
      or not spec.url:match("^https?://") then
    return fail("EINVAL", "MCP server %s needs url = \"http(s)://...\"",
      tostring(name))
  end
  local c = setmetatable({ name = name, url = spec.url, next_id = 0,
    headers = type(spec.headers) == "table" and spec.headers or {},
    timeout_ms = spec.timeout_ms or 30000, max_ms = spec.max_ms,
    pending = {} }, Http)
  local ok, err, code = c:initialize()
  if not ok then
    return nil, err, code
  end
  return c
end


-- A tools/call result as a spool tool result: the text of its text
-- contents (and structuredContent, when given, as the value); images and
-- resources summarised with a reference. isError makes it an error.
function M.result(res)
  local parts = {}
  for _, item in ipairs(type(res.content) == "table" and res.content or {}) do
    if item.type == "text" then
      parts[#parts + 1] = item.text
    elseif item.type == "image" or item.type == "audio" then
      parts[#parts + 1] = string.format("[%s %s, %d bytes of base64]",
        item.type, tostring(item.mimeType), #(item.data or ""))
    elseif item.type == "resource_link" or item.type == "resource" then
      local r = item.resource or item
      parts[#parts + 1] = string.format("[resource %s]", tostring(r.uri))
    end
  end
  local text = table.concat(parts, "\n")
  if res.isError == true then
    return nil, text ~= "" and text or "the tool failed"
  end
  if type(res.structuredContent) == "table" then
    return res.structuredContent
  end
  return text
end


return M
