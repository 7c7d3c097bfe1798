-- spool mcp [--max-runs N]: the project's agents as an MCP server over
-- stdio (spool.mcp.server), for a desktop MCP client to launch:
--
--   { "command": "spool", "args": ["--project", "/srv/agents", "mcp"] }
--
-- One JSON-RPC message a line on stdin, the replies on stdout (the log
-- goes to stderr). Each request is handled in a task of its own, so a
-- long tools/call does not hold up a ping or a cancel. Like `spool
-- serve`, it continues threads a stopped process left running and fires
-- deadlines as they come due. When stdin ends, the runs in flight get
-- up to ten seconds to store their step; what is left, the next worker
-- continues.

local core = require "spool.core"
local json = require "spool.json"
local loader = require "spool.run.loader"
local runner = require "spool.run.runner"
local store = require "spool.run.store"
local server = require "spool.mcp.server"

local cli = require("spool.cli.command").new("mcp",
  "usage: spool mcp [--max-runs N]")
local o = cli:parse(arg, { ["--max-runs"] = "count" }, {})

local DRAIN_MS = 10000

local stdio, err = core.process_stdio()
if not stdio then
  cli:fail(err)
end

local function send(msg)
  return stdio:write(json.encode(msg) .. "\n")
end

local peer = {
  session = {}, key = "stdio", by = "mcp",
  notify = function(method, params)
    send({ jsonrpc = "2.0", method = method, params = params })
  end,
  alive = function() return true end, -- stdin's end says it
  ask = server.asker(send),
}

local function handle(msg)
  local ok, reply = pcall(server.handle, msg, peer)
  if not ok then
    core.log("error", "MCP: " .. tostring(msg.method) .. " failed: "
      .. tostring(reply))
    reply = { jsonrpc = "2.0", id = msg.id,
              error = { code = -32603, message = "internal error (logged)" } }
  end
  if reply then
    send(reply)
  end
end

runner.max_runs = o.max_runs or 1000
loader.reload()
runner.recover()
local ticking = true
core.spawn(function()
  while ticking do
    core.sleep(1000)
    runner.fire_due()
    runner.take_over()
  end
end)

while true do
  local line, rerr = stdio:read_line(0)
  if not line then
    if not tostring(rerr):match("^EPIPE: stdin closed") then
      core.log("error", "MCP: stdin: " .. tostring(rerr))
    end
    break
  end
  if line:match("%S") then
    local msg, jerr = json.decode(line)
    if type(msg) ~= "table" or json.is_array(msg) then
      send({ jsonrpc = "2.0", id = json.null, error = { code = -32700,
        message = "not a JSON-RPC message: " .. tostring(jerr or "")
          :gsub("^EJSON: ", "") } })
    elseif msg.method == nil and msg.id ~= nil then
      server.answered(msg)
    else
      core.spawn(handle, msg)
    end
  end
end

ticking = false
runner.draining = true
local deadline = core.now() + DRAIN_MS
while runner.running() > 0 and core.now() < deadline do
  core.sleep(10)
end
store.release_all()
