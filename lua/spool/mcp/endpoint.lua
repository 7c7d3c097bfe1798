-- spool.mcp.endpoint: `spool serve` at /mcp, spool.mcp.server over MCP's
-- Streamable HTTP transport (private). The request has passed the API's
-- gate (Host, token, a JSON object of a bounded size: spool.serve).
--
-- Each POST carries one JSON-RPC message. A notification, or a client's
-- answer to a request of ours, gets 202 and no body. A request gets its
-- reply as JSON; a tools/call, when the client accepts event streams,
-- gets an event stream instead: its progress notifications, requests to
-- the client (elicitation), then the reply. GET and DELETE are 405: the
-- server sends nothing unasked, and keeps nothing to delete.
--
-- Sessions keep no state on the server, so any worker answers any
-- request: initialize gives an Mcp-Session-Id that is random, and says
-- in itself whether the client can be asked through forms (elicitation).
-- What a request needs of its session comes from that id. An answer to a
-- question asked through one worker must come back to it; elsewhere, the
-- question goes unanswered and the call says what the thread waits for.

local core = require "spool.core"
local json = require "spool.json"
local server = require "spool.mcp.server"

local M = {}

-- Why the request is refused, as status, code and message; or nil.
function M.refusal(req, body)
  -- A browser page may not call it from another site (DNS rebinding is
  -- the Host check's; this is the Origin's).
  local origin = req.headers.origin
  if origin ~= nil and origin:lower():match("^https?://([^/]+)$")
      ~= (req.headers.host or ""):lower() then
    return 403, "forbidden_origin", "the Origin header names another site"
  end
  -- (initialize is where the version is agreed: a client sends the header
  -- only after it.)
  local version = req.headers["mcp-protocol-version"]
  if version ~= nil and body.method ~= "initialize"
      and not server.speaks(version) then
    return 400, "bad_request", "MCP-Protocol-Version " .. version
      .. " is not one spool speaks (" .. table.concat(server.VERSIONS, ", ")
      .. ")"
  end
  local session = req.headers["mcp-session-id"]
  if session ~= nil and body.method ~= "initialize"
      and not session:match("^%w+%-?e?$") then
    return 404, "not_found", "no such MCP session: initialize again"
  end
end


local function session_of(req, body)
  if body.method == "initialize" then
    return {} -- its id is made once initialize has read the capabilities
  end
  local id = req.headers["mcp-session-id"]
  return { id = id, elicitation = id ~= nil and id:match("%-e$") ~= nil,
           version = req.headers["mcp-protocol-version"] }
end


local function sse(msg)
  return "event: message\ndata: " .. json.encode(msg) .. "\n\n"
end


-- A tools/call answered on an event stream.
local function streamed(req, body, peer, headers)
  headers["Content-Type"] = "text/event-stream"
  headers["Cache-Control"] = "no-store"
  headers["X-Accel-Buffering"] = "no"
  local s = req.stream(200, headers)
  if not s then
    return nil
  end
  local open = true
  local function send(msg)
    open = open and s:send(msg)
    return open
  end
  peer.notify = function(method, params)
    send(sse({ jsonrpc = "2.0", method = method, params = params }))
  end
  peer.alive = function()
    return send(": keepalive\n\n")
  end
  peer.ask = server.asker(function(msg) return send(sse(msg)) end,
    req.principal)
  local reply = server.handle(body, peer)
  if reply then
    send(sse(reply))
  end
  return nil
end


-- POST /mcp (a route of spool.serve.api, past M.refusal): status[, reply,
-- headers], or nil once it has streamed its answer.
function M.post(req, body)
  local session = session_of(req, body)
  local peer = { session = session, by = req.principal,
                 key = req.principal .. ":"
                   .. (session.id or ("once-" .. core.random_id())),
                 notify = function() end,
                 alive = function() return true end }
  if body.id == nil or body.method == nil then
    -- A notification, or an answer to a request of ours; or no message.
    local reply = server.handle(body, peer)
    if reply then
      return 400, reply
    end
    return 202
  end
  local headers = {}
  local accept = (req.headers.accept or ""):lower()
  if body.method == "tools/call" and accept:find("text/event-stream", 1,
      true) then
    return streamed(req, body, peer, headers)
  end
  local reply = server.handle(body, peer)
  if body.method == "initialize" and reply.result then
    headers["Mcp-Session-Id"] = core.random_id()
      .. (session.elicitation and "-e" or "")
  end
  return 200, reply, headers
end


return M
