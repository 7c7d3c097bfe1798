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
--   peer.ask(method, params, ms) -> result | nil, err    a request to the
--                     client (elicitation), or nil where it cannot
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
-- becomes a response (nil for a request no form answers: an event).
local function elicitation(w)
  if w.kind == "ask" then
    return { message = w.question, requestedSchema = { type = "object",
      properties = { answer = { type = "string", title = "Answer" } },
      required = { "answer" } } },
      function(content) return { answer = content.answer } end
  elseif w.kind == "approval" then
    return { message = "Approve " .. w.text:gsub("^approval of ", "")
      .. "?", requestedSchema = { type = "object",
      properties = {
        approve = { type = "boolean", title = "Approve" },
        reason = { type = "string", title = "Reason, if not" } },
      required = { "approve" } } },
      function(content)
        if content.approve == true then
          return { approve = true }
        end
        return { reject = true, reason = content.reason }
      end
  end
end


-- Asks the person through the client; true once the thread has the answer.
local function elicit(id, w, peer)
  local request, response_of = elicitation(w)
  if not request or not peer.ask or not peer.session.elicitation then
    return false
  end
  local answer = peer.ask("elicitation/create", request, ELICIT_MS)
  if type(answer) ~= "table" or answer.action ~= "accept"
      or type(answer.content) ~= "table" then
    return false
  end
  local response = response_of(answer.content)
  response.by, response.channel = peer.by, "mcp"
  local ok, err = runner.respond(id, response)
  if not ok then
    core.log("warn", "MCP: the answer to thread " .. id .. " was refused: "
      .. tostring(err))
    return false
  end
  return true
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
          .. "%s goes on, and GET /v1/threads/%s will have its result",
          id, id), true, nil, id)
      end
      if not peer.alive() then
        return nil -- the client went away; the thread goes on
      end
    elseif status ~= "waiting" or not elicit(id, human.view(
        t:pending_request().data), peer) then
      return outcome(t)
    end
  end
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
  local key = peer.key .. "/" .. json.encode(msg.id)
  calls[key] = id
  runner.start(agent, args.input, id)
  local meta = params._meta
  local ok, result = pcall(follow, id, key,
    type(meta) == "table" and meta.progressToken or nil, peer)
  calls[key] = nil
  if not ok then
    error(result, 0)
  end
  return result and { jsonrpc = "2.0", id = msg.id, result = result }
end


local function cancelled(params, peer)
  local key = type(params) == "table" and params.requestId ~= nil
    and peer.key .. "/" .. json.encode(params.requestId)
  local id = key and calls[key]
  if id then
    calls[key] = nil
    runner.cancel(id, "cancelled by the MCP client"
      .. (type(params.reason) == "string" and (": " .. params.reason) or ""))
  end
end


function M.handle(msg, peer)
  if type(msg) ~= "table" or msg.jsonrpc ~= "2.0" then
    return rpc_error(json.null, INVALID_REQUEST, "not a JSON-RPC 2.0 message")
  end
  local method = msg.method
  if msg.id == nil then
    if method == "notifications/cancelled" then
      cancelled(msg.params, peer)
    end
    return nil -- notifications/initialized, and any other, need nothing
  end
  if type(method) ~= "string" then
    return nil -- a reply to a request of ours: the transport routes those
  end
  if method == "initialize" then
    return { jsonrpc = "2.0", id = msg.id,
             result = initialize(msg.params, peer) }
  elseif method == "ping" then
    return { jsonrpc = "2.0", id = msg.id, result = {} }
  elseif method == "tools/list" then
    return { jsonrpc = "2.0", id = msg.id, result = list_tools() }
  elseif method == "tools/call" then
    return call_tool(msg, peer)
  end
  return rpc_error(msg.id, NO_METHOD, "spool does not offer " .. method)
end


-- Requests to clients (elicitation) that wait for their answers, by id:
-- ids are random, so an answer finds its request whichever session or
-- transport it comes back through.
local asked = {}

-- A peer.ask for a transport that sends a message with send(msg) -> ok.
function M.asker(send)
  return function(method, params, ms)
    local id = "spool-" .. core.random_id()
    local waiting = { signal = core.signal() }
    asked[id] = waiting
    if send({ jsonrpc = "2.0", id = id, method = method, params = params })
    then
      waiting.signal:wait(ms)
    end
    asked[id] = nil
    return waiting.answer
  end
end


-- A client's answer to a request of ours (a message with an id and no
-- method): handed to the request that waits for it, if one does.
function M.answered(msg)
  local waiting = type(msg.id) == "string" and asked[msg.id]
  if waiting then
    asked[msg.id] = nil
    waiting.answer = msg.result
    waiting.signal:notify()
  end
end


-- Is a protocol version (an MCP-Protocol-Version header) one spool speaks?
function M.speaks(version)
  return SUPPORTED[version] == true
end


return M
