-- spool.mock: the built-in mock model, an OpenAI-compatible chat server on
-- the engine's own loop, deterministic and driven by a script.
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
--   { status = 500, error = "..." }     an HTTP error, OpenAI's error shape
--   { body = "raw bytes" }              a raw (possibly malformed) body
--   latency_ms = n                      in any table: answer after n ms
--
-- `conv` describes the request: body (decoded), raw (the bytes), system,
-- user, last_user,
-- last, after, turns, tools (set of offered names), tool_results (list of
-- { name, call_id, content }).
--
-- GET /_mock/stats answers { requests, inflight, peak_inflight, errors };
-- POST /_mock/reset zeroes them.

local core = require "spool.core"
local json = require "spool.json"

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


local function text_of(content)
  if type(content) == "string" then
    return content
  elseif type(content) == "table" then
    local parts = {}
    for _, p in ipairs(content) do
      if type(p) == "table" and type(p.text) == "string" then
        parts[#parts + 1] = p.text
      end
    end
    return table.concat(parts, "\n")
  end
  return ""
end


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


-- The reply a script gives a request body (decoded), as a table.
function M.reply_for(script, body, raw)
  local conv = M.conversation(body)
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


local function error_body(status, message)
  return json.encode({ error = { message = message, type = "mock_error",
                                 code = status } })
end


-- Builds the HTTP response for a reply table.
local function completion(script, reply, conv, request_bytes, seq)
  if reply.status and reply.status ~= 200 then
    return reply.status, reply.body or error_body(reply.status,
      reply.error or "mock error")
  end
  if reply.body then
    return 200, reply.body
  end
  local message = { role = "assistant", content = json.null }
  local finish = "stop"
  local calls = reply.tool_calls
  if reply.tool then
    calls = { { name = reply.tool, args = reply.args } }
  end
  local out_bytes = 0
  if calls and #calls > 0 then
    local list = json.array()
    for i, c in ipairs(calls) do
      local args = c.args or {}
      if type(args) ~= "string" then
        args = json.encode(args)
      end
      out_bytes = out_bytes + #args
      list[i] = { id = string.format("call_%d_%d", conv.turns + 1, i),
                  type = "function",
                  ["function"] = { name = c.name, arguments = args } }
    end
    message.tool_calls = list
    finish = "tool_calls"
  end
  local text = reply.text
  if reply.json ~= nil then
    text = json.encode(reply.json)
  end
  if text then
    message.content = text
    out_bytes = out_bytes + #text
  end
  local usage = reply.usage or {
    prompt_tokens = tokens(request_bytes),
    completion_tokens = tokens(out_bytes),
  }
  usage.total_tokens = usage.total_tokens
    or (usage.prompt_tokens + usage.completion_tokens)
  return 200, json.encode({
    id = "chatcmpl-mock-" .. seq,
    object = "chat.completion",
    created = core.time() // 1000,
    model = conv.body.model or script.model or "mock-1",
    choices = json.array({ { index = 0, message = message,
                             finish_reason = reply.finish_reason or finish } }),
    usage = usage,
  })
end


local JSON_HEADERS = { ["content-type"] = "application/json" }


-- Starts a mock model. opts: script (a path or a table; nil echoes the
-- last user message), host, port, project. Returns the mock (with
-- :port(), :url(), :stats(), :close()) or nil, err.
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
  local stats = { requests = 0, inflight = 0, peak_inflight = 0, errors = 0 }

  local function chat(req)
    local body, err = json.decode(req.body)
    if type(body) ~= "table" then
      stats.errors = stats.errors + 1
      return { status = 400, headers = JSON_HEADERS,
               body = error_body(400, "request body is not JSON: "
                 .. tostring(err)) }
    end
    local ok, reply, conv = pcall(M.reply_for, script, body, req.body)
    if not ok then
      stats.errors = stats.errors + 1
      return { status = 500, headers = JSON_HEADERS,
               body = error_body(500, "mock script failed: "
                 .. tostring(reply)) }
    end
    local latency = reply.latency_ms or script.latency_ms or 0
    if latency > 0 then
      core.sleep(latency)
    end
    local status, out = completion(script, reply, conv, #req.body,
      stats.requests)
    return { status = status, headers = JSON_HEADERS, body = out }
  end

  local function handler(req)
    local path = req.path:gsub("^/v1", "")
    if path == "/chat/completions" and req.method == "POST" then
      stats.requests = stats.requests + 1
      stats.inflight = stats.inflight + 1
      if stats.inflight > stats.peak_inflight then
        stats.peak_inflight = stats.inflight
      end
      local ok, res = pcall(chat, req)
      stats.inflight = stats.inflight - 1
      if not ok then
        error(res, 0)
      end
      return res
    elseif path == "/models" and req.method == "GET" then
      return { headers = JSON_HEADERS, body = json.encode({ object = "list",
        data = json.array({ { id = script.model or "mock-1",
                              object = "model", owned_by = "spool" } }) }) }
    elseif req.path == "/_mock/stats" then
      return { headers = JSON_HEADERS, body = json.encode(stats) }
    elseif req.path == "/_mock/reset" and req.method == "POST" then
      stats.requests, stats.peak_inflight, stats.errors = 0, stats.inflight, 0
      return { headers = JSON_HEADERS, body = "{}" }
    end
    return { status = 404, headers = JSON_HEADERS,
             body = error_body(404, "no route " .. req.method .. " "
               .. req.path) }
  end

  local server, err = core.listen { host = opts.host or "127.0.0.1",
                                    port = opts.port or 0, handler = handler,
                                    max_body = 64 * 1024 * 1024 }
  if not server then
    return nil, err
  end
  local host = opts.host or "127.0.0.1"
  function mock.port() return server:port() end
  function mock.url() return string.format("http://%s:%d/v1", host,
    server:port()) end
  function mock.stats() return stats end
  function mock.close() server:close() end
  return mock
end


local local_mock = nil


-- The URL of the project's in-process mock model, started on first use
-- with the project's mock script (spool.lua: mock = "mock/x.lua").
function M.local_url()
  if not local_mock then
    local cfg = require("spool.config").get()
    local mock, err = M.start { script = cfg.mock_script,
                                project = cfg.project }
    if not mock then
      error("cannot start the mock model: " .. err, 0)
    end
    local_mock = mock
  end
  return local_mock.url()
end


return M
