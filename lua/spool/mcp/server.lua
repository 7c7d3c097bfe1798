-- spool.mcp.server: the project's agents as MCP tools (issue 23), whatever
-- carries the messages: `spool serve` at /mcp (spool.mcp.endpoint, Streamable
-- HTTP) or `spool mcp` (stdio, spool.cli.mcp).
--
--   server.handle(msg, peer) -> reply | nil      (must run in a task)
--
-- msg is one JSON-RPC message from the client, decoded; the reply is the
-- message to send back (nil for a notification, or a call the client
-- cancelled). peer is the transport's side of one client:
--
--   peer.session      a table kept for the client's session (initialize
--                     records its capabilities and protocol version in it)
--   peer.key          names the session among the calls in flight here
--   peer.by           who answers a person's request through it ("mcp",
--                     "api:<name>": the caller the token names)
--   peer.notify(method, params)    a notification sent before the reply
--                     (progress)
--   peer.alive() -> bool   is the client still there? (asked while a call
--                     waits long; a transport that cannot tell says true)
--   peer.ask          a request to the client (elicitation), made with
--                     M.asker; nil where the transport cannot ask
--
-- tools/list lists every agent that loads: its name, its description, and
-- an input schema of one string, `input`. tools/call starts a thread on
-- that input and answers when it stops running: its result when done
-- (text, and structuredContent when an object), isError when it failed
-- or was cancelled. A thread that waits for a person answers with the
-- thread's id and what it waits for; where the client can elicit, the
-- person is asked through it and the thread goes on. Progress: with a
-- progressToken, one notification per stored step. A client's
-- notifications/cancelled cancels the thread its call started.

local core = require "spool.core"
local json = require "spool.json"
local loader = require "spool.run.loader"
local runner = require "spool.run.runner"
local thread_mod = require "spool.run.thread"
local await = require "spool.run.await"
local hub = require "spool.run.hub"
local human = require "spool.human"

local M = {}

-- Newest first; a client asking for another gets the newest.
M.VERSIONS = { "2025-11-25", "2025-06-18", "2025-03-26" }

local SUPPORTED = {}
for _, v in ipairs(M.VERSIONS) do
  SUPPORTED[v] = true
end

-- How long a call waits between two looks at a client that may have gone.
local LOOK_MS = 15000
-- How long a person has to answer an elicitation.
local ELICIT_MS = 10 * 60 * 1000

local INPUT_SCHEMA = {
  type = "object",
  properties = { input = { type = "string",
    description = "What the agent is asked, in words." } },
  required = { "input" },
}

-- JSON-RPC's error codes.
local INVALID_REQUEST, NO_METHOD, INVALID_PARAMS = -32600, -32601, -32602

local calls = {} -- peer.key .. "/" .. request id -> thread id, in flight


local function rpc_error(id, code, message)
  return { jsonrpc = "2.0", id = id,
           error = { code = code, message = message } }
end


local function text_result(text, is_error, structured, thread)
  return { content = json.array { { type = "text", text = text } },
           isError = is_error or nil, structuredContent = structured,
           _meta = thread and { ["spool/thread"] = thread } or nil }
end


local function initialize(params, peer)
  local asked = type(params) == "table" and params.protocolVersion
  local version = SUPPORTED[asked] and asked or M.VERSIONS[1]
  local caps = type(params) == "table" and params.capabilities
  peer.session.version = version
  peer.session.elicitation = type(caps) == "table"
    and type(caps.elicitation) == "table"
    and (next(caps.elicitation) == nil or caps.elicitation.form ~= nil)
  return {
    protocolVersion = version,
    capabilities = { tools = { listChanged = false } },
    serverInfo = { name = "spool", version = core.version },
    instructions = "Each tool is a spool agent: give it an input, and it "
      .. "answers when its thread ends, or says what it waits for.",
  }
end


local function list_tools()
  local tools = json.array()
  for _, entry in ipairs(loader.list()) do
    local agent = not entry.error and loader.current(entry.name)
    if agent then
      tools[#tools + 1] = { name = entry.name,
        description = agent.description ~= entry.name and agent.description
          or ("The spool agent " .. entry.name .. "."),
        inputSchema = INPUT_SCHEMA,
        _meta = { ["spool/version"] = entry.version } }
    end
  end
  return { tools = tools }
end


-- What a person is asked through the client, and how the form's answer
-- becomes a response: nil when it does not fit the form (the thread goes
-- on waiting). Nothing for a request no form answers (an event).
local function elicitation(w)
  if w.kind == "ask" then
    return { message = w.question, requestedSchema = { type = "object",
      properties = { answer = { type = "string", title = "Answer" } },
      required = { "answer" } } },
      function(content)
        return type(content.answer) == "string"
          and { answer = content.answer } or nil
      end
  elseif w.kind == "approval" then
    return { message = "Approve " .. w.text:gsub("^approval of ", "")
      .. "?", requestedSchema = { type = "object",
      properties = {
        approve = { type = "boolean", title = "Approve" },
        reason = { type = "string", title = "Reason, if not" } },
      required = { "approve" } } },
      function(content)
        local reason = content.reason
        if type(content.approve) ~= "boolean"
            or (reason ~= nil and type(reason) ~= "string") then
          return nil
        end
        if content.approve then
          return { approve = true }
        end
        return { reject = true, reason = reason }
      end
  end
end


-- Requests to clients (elicitation) that wait for their answers, by id:
-- ids are random, and an answer counts only from the caller (the token's
-- principal) that was asked, whichever session or worker it comes through.
local asked = {}

-- A peer.ask for a transport that sends a message with send(msg) -> ok:
-- ask(method, params, signal) -> waiting | nil. waiting.answered is set,
-- and signal notified, when the answer comes; M.forget(waiting) ends it.
function M.asker(send, principal)
  return function(method, params, signal)
    local id = "spool-" .. core.random_id()
    local waiting = { id = id, signal = signal, principal = principal }
    asked[id] = waiting
    if not send({ jsonrpc = "2.0", id = id, method = method,
                  params = params }) then
      asked[id] = nil
      return nil
    end
    return waiting
  end
end


function M.forget(waiting)
  if waiting then
    asked[waiting.id] = nil
  end
end


-- A client's answer to a request of ours (a message with an id and no
-- method), from `principal`: handed to the request that waits for it.
function M.answered(msg, principal)
  local waiting = type(msg.id) == "string" and asked[msg.id]
  if waiting and waiting.principal == principal then
    asked[msg.id] = nil
    waiting.answered, waiting.answer = true, msg.result
    waiting.signal:notify()
  end
end


-- Asks the person through the client. "answered" once the thread has the
-- answer; "moved" if the thread went on without it (answered elsewhere,
-- cancelled); false if there is no answer to have (the client cannot
-- ask, declined, went away, or the call or the server is ending).
local function elicit(id, data, peer, key)
  local request, response_of = elicitation(human.view(data))
  if not request or not peer.ask or not peer.session.elicitation then
    return false
  end
  local sig = hub.follow(id)
  local waiting = peer.ask("elicitation/create", request, sig)
  local deadline = core.now() + ELICIT_MS
  local ok, outcome = pcall(function()
    while waiting and not waiting.answered do
      if core.now() >= deadline or runner.draining or calls[key] ~= id then
        return false
      end
      if not sig:wait(LOOK_MS) and not peer.alive() then
        return false
      end
      local t = not waiting.answered and await(id, 0)
      local now = t and t:status() == "waiting" and t:pending_request()
      if t and (not now or now.data.call_id ~= data.call_id) then
        return "moved"
      end
    end
    return waiting ~= nil
  end)
  M.forget(waiting)
  hub.unfollow(id, sig)
  if not ok then
    error(outcome, 0)
  end
  if outcome ~= true then
    return outcome
  end
  local answer = waiting.answer
  if type(answer) ~= "table" or answer.action ~= "accept"
      or type(answer.content) ~= "table" then
    return false
  end
  local response = response_of(answer.content)
  if not response then
    core.log("warn", "MCP: an answer to thread " .. id .. " did not fit "
      .. "the form it was asked with; the thread still waits")
    return false
  end
  response.by, response.channel = peer.by, "mcp"
  local rok, err = runner.respond(id, response)
  if not rok then
    core.log("warn", "MCP: the answer to thread " .. id .. " was refused: "
      .. tostring(err))
    return false
  end
  return "answered"
end


local function outcome(t)
  local status = t:status()
  if status == "done" then
    local result = t:outcome()
    local text = type(result) == "string" and result or json.encode(result)
    local structured = type(result) == "table" and not json.is_array(result)
      and result or nil
    return text_result(text, false, structured, t.id)
  elseif status == "waiting" then
    local w = human.view(t:pending_request().data)
    return text_result(string.format("Thread %s waits for %s. Answer it "
      .. "through spool: POST /v1/threads/%s/events, or `spool resume %s`.",
      t.id, w.text, t.id, t.id), false,
      { thread = t.id, status = "waiting", waiting_for = w }, t.id)
  end
  local _, err = t:outcome()
  return text_result(string.format("thread %s %s: %s", t.id, status,
    tostring(err or status)), true, nil, t.id)
end


-- Follows the thread until it stops running (and a person answers through
-- the client, where one can); returns its outcome, or nil if the call was
-- cancelled or the client went away.
local function follow(id, key, token, peer)
  local step = 0
  local function progress(t)
    if token ~= nil and t.step > step then
      step = t.step
      peer.notify("notifications/progress", { progressToken = token,
        progress = step, message = "step " .. step })
    end
  end
  while true do
    local t, err = await(id, LOOK_MS, progress)
    if not t then
      return text_result("thread " .. id .. ": " .. tostring(err), true)
    end
    if calls[key] ~= id then
      return nil -- cancelled by the client: no reply
    end
    local status = t:status()
    if status == "running" then
      if runner.draining then
        return text_result(string.format("spool is shutting down; thread "
          .. "%s goes on, and `spool show %s` will have its result", id,
          id), true, nil, id)
      end
      if not peer.alive() then
        return nil -- the client went away; the thread goes on
      end
    elseif status ~= "waiting" then
      return outcome(t)
    else
      local asked_person = elicit(id, t:pending_request().data, peer, key)
      if calls[key] ~= id then
        return nil
      end
      if not asked_person then
        return outcome(t)
      end
    end
  end
end


-- A request id is a string or an integer (JSON-RPC; MCP: never null).
local function valid_id(id)
  return type(id) == "string" or math.type(id) == "integer"
end


local function call_tool(msg, peer)
  local params = msg.params
  if type(params) ~= "table" or type(params.name) ~= "string" then
    return rpc_error(msg.id, INVALID_PARAMS, "tools/call needs a tool name")
  end
  local entry = loader.current(params.name)
  if not entry or loader.problem(params.name) then
    return rpc_error(msg.id, INVALID_PARAMS, "unknown tool: " .. params.name)
  end
  local key = peer.key .. "/" .. json.encode(msg.id)
  if calls[key] then
    return rpc_error(msg.id, INVALID_REQUEST, "request id "
      .. json.encode(msg.id) .. " is already in use by a call in flight")
  end
  local args = params.arguments
  if type(args) ~= "table" or type(args.input) ~= "string" then
    return { jsonrpc = "2.0", id = msg.id, result = text_result(
      "the arguments need \"input\", a string", true) }
  end
  local refused, why = runner.admission()
  if refused then
    return { jsonrpc = "2.0", id = msg.id, result = text_result(
      "spool cannot start a thread now: " .. why, true) }
  end
  local agent, err = loader.load(params.name)
  if not agent then
    return { jsonrpc = "2.0", id = msg.id, result = text_result(
      (tostring(err):gsub("^%u+: ", "")), true) }
  end
  local id = thread_mod.new_id()
  calls[key] = id
  local meta = type(params._meta) == "table" and params._meta or {}
  -- The caller's trace, where MCP carries it (SEP-414's _meta.traceparent).
  runner.start(agent, args.input, id, nil, nil, meta.traceparent)
  local token = meta.progressToken
  local ok, result = pcall(follow, id, key, valid_id(token) and token or nil,
    peer)
  if calls[key] == id then
    calls[key] = nil
  end
  if not ok then
    error(result, 0)
  end
  return result and { jsonrpc = "2.0", id = msg.id, result = result }
end


local function cancelled(params, peer)
  local key = type(params) == "table" and valid_id(params.requestId)
    and peer.key .. "/" .. json.encode(params.requestId)
  local id = key and calls[key]
  if id then
    calls[key] = nil
    runner.cancel(id, "cancelled by the MCP client"
      .. (type(params.reason) == "string" and (": " .. params.reason:sub(1,
        200)) or ""))
  end
end


function M.handle(msg, peer)
  local id = type(msg) == "table" and valid_id(msg.id) and msg.id
    or json.null
  if type(msg) ~= "table" or json.is_array(msg) or msg.jsonrpc ~= "2.0"
      or (msg.id ~= nil and id == json.null) then
    return rpc_error(id, INVALID_REQUEST, "not a JSON-RPC 2.0 request: it "
      .. "needs \"jsonrpc\": \"2.0\", and an id (if any) that is a string "
      .. "or an integer")
  end
  local method = msg.method
  if method == nil then
    M.answered(msg, peer.by) -- a client's answer to a request of ours
    return nil
  elseif type(method) ~= "string" then
    return msg.id ~= nil and rpc_error(id, INVALID_REQUEST,
      "\"method\" must be a string") or nil
  elseif msg.params ~= nil and (type(msg.params) ~= "table"
      or json.is_array(msg.params)) then
    return msg.id ~= nil and rpc_error(id, INVALID_PARAMS,
      "\"params\" must be an object") or nil
  end
  if msg.id == nil then
    if method == "notifications/cancelled" then
      cancelled(msg.params, peer)
    end
    return nil -- notifications/initialized, and any other, need nothing
  end
  if method == "initialize" then
    return { jsonrpc = "2.0", id = id,
             result = initialize(msg.params, peer) }
  elseif method == "ping" then
    return { jsonrpc = "2.0", id = id, result = {} }
  elseif method == "tools/list" then
    return { jsonrpc = "2.0", id = id, result = list_tools() }
  elseif method == "tools/call" then
    return call_tool(msg, peer)
  end
  return rpc_error(id, NO_METHOD, "spool does not offer " .. method)
end


-- Is a protocol version (an MCP-Protocol-Version header) one spool speaks?
function M.speaks(version)
  return SUPPORTED[version] == true
end


return M
