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
-- version it speaks, which is kept in c.protocol.

local core = require "spool.core"
local json = require "spool.json"
local http = require "spool.base.http"

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


-- The reader: one line, one message; each answer to its request. It
-- ends when no request waits (request() interrupts its read then).
function Client:read_loop()
  while not self.closed and next(self.pending) ~= nil do
    local line, err, code = self.proc:read_line(0)
    if line then
      local msg = json.decode(line)
      if type(msg) ~= "table" then
        core.log("warn", string.format("MCP server %s wrote a line that is "
          .. "not a JSON-RPC message: %s", self.name, line:sub(1, 200)))
      elseif msg.method ~= nil and msg.id ~= nil then
        self:answer(msg)
      elseif msg.method ~= nil then
        if self.on_notice then
          local ok, herr = pcall(self.on_notice, msg)
          if not ok then
            core.log("error", "MCP server " .. self.name .. ": "
              .. tostring(herr))
          end
        end
      else
        local w = self.pending[msg.id]
        if w then
          w.msg = msg
          w.signal:notify()
        end
      end
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


function Client:request(method, params, timeout_ms)
  if self.dead then
    return fail("EIO", "MCP server %s stopped: %s", self.name,
      tostring(self.dead))
  end
  self.next_id = self.next_id + 1
  local id = self.next_id
  local w = { signal = core.signal() }
  self.pending[id] = w
  local ok, err, code = self:send { jsonrpc = "2.0", id = id,
    method = method, params = params or {} }
  if not ok then
    self.pending[id] = nil
    return nil, err, code
  end
  self:ensure_reader()
  local answered, why, wcode = w.signal:wait(timeout_ms or self.timeout_ms)
  self.pending[id] = nil
  if next(self.pending) == nil and self.reader then
    core.interrupt(self.reader, "EIDLE: no request waits")
  end
  if not answered then
    -- Timed out (false), or the waiting run was interrupted (nil, why):
    -- its thread was cancelled. Either way the server may stop.
    self:notify("notifications/cancelled", { requestId = id,
      reason = why and tostring(why) or "timed out" })
    if answered == nil then
      return nil, why, wcode
    end
    return fail("ETIMEDOUT", "MCP server %s did not answer %s in %d ms",
      self.name, method, timeout_ms or self.timeout_ms)
  end
  if w.failed then
    return nil, w.failed, w.failed:match("^(E%u+)")
  end
  local e = w.msg.error
  if e ~= nil then
    local message = type(e) == "table" and e.message or e
    return fail("EMCP", "MCP server %s refused %s: %s", self.name, method,
      tostring(message))
  end
  return w.msg.result
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
    pending = {}, timeout_ms = spec.timeout_ms or 30000, reading = false,
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
-- response's body: one JSON-RPC message, or an event stream whose events
-- carry the server's notifications and, last, the answer. The session the
-- server gives at initialize (Mcp-Session-Id) goes with every message; a
-- session the server has forgotten (404) is initialised again and the
-- message sent once more.

local Http = setmetatable({}, { __index = Client })
Http.__index = Http


function Http:post(msg, timeout_ms)
  local headers = { ["Content-Type"] = "application/json",
                    ["Accept"] = "application/json, text/event-stream" }
  for k, v in pairs(self.headers) do
    headers[k] = v
  end
  headers["Mcp-Session-Id"] = self.session
  headers["MCP-Protocol-Version"] = self.protocol
  return http.request { url = self.url, method = "POST", headers = headers,
    body = json.encode(msg), timeout_ms = timeout_ms or self.timeout_ms }
end


-- The JSON-RPC messages of a response: its body, or its events' data.
local function messages_of(res)
  local ctype = (res.headers["content-type"] or ""):lower()
  if ctype:find("text/event-stream", 1, true) then
    local parser = core.sse()
    local events, err = parser:feed(res.body .. "\n\n")
    if not events then
      return nil, err
    end
    local out = {}
    for _, ev in ipairs(events) do
      if ev.data ~= "" then
        out[#out + 1] = json.decode(ev.data)
      end
    end
    return out
  end
  if res.body == "" then
    return {}
  end
  local msg, err = json.decode(res.body)
  if msg == nil then
    return nil, err
  end
  return { msg }
end


function Http:send(msg)
  local res, err = self:post(msg)
  if not res then
    return nil, err, err:match("^(E%u+)")
  end
  if res.status >= 300 then
    return fail("EMCP", "MCP server %s answered HTTP %d", self.name,
      res.status)
  end
  return true
end


function Http:request(method, params, timeout_ms, again)
  self.next_id = self.next_id + 1
  local id = self.next_id
  local res, err = self:post({ jsonrpc = "2.0", id = id, method = method,
    params = params or {} }, timeout_ms)
  if not res then
    local code = err:match("^(E%u+)")
    if code == "ETIMEDOUT" or code == "ECANCELED" then
      self:notify("notifications/cancelled", { requestId = id,
        reason = err })
    end
    return nil, err, code
  end
  -- (A forgotten session is a 404 by the spec; some servers say 400 and
  -- name the session.)
  local forgotten = res.status == 404 or (res.status == 400
    and tostring(res.body):lower():find("session", 1, true) ~= nil)
  if forgotten and self.session and method ~= "initialize" and not again
  then
    -- The server forgot the session: a new one, and the message again.
    local ok, ierr, icode = self:initialize()
    if not ok then
      return nil, ierr, icode
    end
    return self:request(method, params, timeout_ms, true)
  end
  if res.status >= 300 then
    return fail("EMCP", "MCP server %s answered %s with HTTP %d", self.name,
      method, res.status)
  end
  if method == "initialize" then
    self.session = res.headers["mcp-session-id"]
  end
  local msgs, merr = messages_of(res)
  if not msgs then
    return fail("EPROTO", "MCP server %s answered %s with a body that is "
      .. "not JSON-RPC: %s", self.name, method, tostring(merr))
  end
  local answer
  for _, msg in ipairs(msgs) do
    if type(msg) == "table" and msg.id == id and msg.method == nil then
      answer = msg
    elseif type(msg) == "table" and msg.method and msg.id == nil
        and self.on_notice then
      pcall(self.on_notice, msg)
    end
  end
  if not answer then
    return fail("EPROTO", "MCP server %s did not answer %s", self.name,
      method)
  end
  if answer.error ~= nil then
    local e = answer.error
    return fail("EMCP", "MCP server %s refused %s: %s", self.name, method,
      tostring(type(e) == "table" and e.message or e))
  end
  return answer.result
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
    timeout_ms = spec.timeout_ms or 30000 }, Http)
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
