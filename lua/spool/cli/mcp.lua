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
-- Replies may queue this much for a client slow to read them before no
-- more requests are read (backpressure, not a growing buffer); one reply
-- may be no larger than stdout's queue takes at all.
local QUEUED_MAX = 1024 * 1024
local REPLY_MAX = 16 * 1024 * 1024

local stdio, err = core.process_stdio()
if not stdio then
  cli:fail(err)
end

-- Every message goes out through one writer, in order. A client that
-- stops reading stops it (and, as replies then wait in the outbox, the
-- reading of new requests), and loses nothing.
local outbox, writing, written = {}, true, false
local queued, caught_up = core.signal(), core.signal()

local function send(msg)
  local line = json.encode(msg) .. "\n"
  if #line > REPLY_MAX then
    core.log("error", string.format("MCP: a reply of %d bytes is more "
      .. "than stdout takes; the client is told instead", #line))
    line = json.encode({ jsonrpc = "2.0", id = msg.id or json.null,
      error = { code = -32603, message = "the reply is too large" } })
      .. "\n"
  end
  outbox[#outbox + 1] = line
  queued:notify()
  return true
end

core.spawn(function()
  while writing or #outbox > 0 do
    if #outbox == 0 then
      caught_up:notify()
      queued:wait(1000)
    else
      local line = table.remove(outbox, 1)
      local ok, werr = stdio:write(line)
      if not ok and tostring(werr):match("^ENOBUFS") then
        stdio:flush(0, REPLY_MAX - #line + 1)
        ok, werr = stdio:write(line)
      end
      if not ok then
        core.log("error", "MCP: cannot write to stdout: " .. tostring(werr))
        outbox, writing = {}, false
      end
      stdio:flush(0, QUEUED_MAX) -- while the client is slow to read
    end
  end
  written = true
  caught_up:notify()
end)

local peer = {
  session = {}, key = "stdio", by = "mcp",
  notify = function(method, params)
    send({ jsonrpc = "2.0", method = method, params = params })
  end,
  alive = function() return true end, -- stdin's end says it
  ask = server.asker(send, "mcp"),
}

local handling = 0

local function handle(msg)
  handling = handling + 1
  local ok, reply = pcall(server.handle, msg, peer)
  handling = handling - 1
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
  -- (A client slow to read its replies is sent no more until it has.)
  while #outbox > 0 and writing do
    caught_up:wait(1000)
  end
  local line, rerr = stdio:read_line(0)
  if not line then
    if not tostring(rerr):match("^EPIPE: stdin closed") then
      core.log("error", "MCP: stdin: " .. tostring(rerr))
    end
    break
  end
  if line:match("%S") then
    local msg, jerr = json.decode(line)
    if msg == nil then
      send({ jsonrpc = "2.0", id = json.null, error = { code = -32700,
        message = "not JSON: " .. tostring(jerr):gsub("^EJSON: ", "") } })
    else
      core.spawn(handle, msg)
    end
  end
end

-- stdin ended: the requests already read are answered (within the drain
-- time), the runs in flight store their step, and every reply is written.
local deadline = core.now() + DRAIN_MS
while handling > 0 and core.now() < deadline do
  core.sleep(10)
end
ticking = false
runner.draining = true
while runner.running() > 0 and core.now() < deadline do
  core.sleep(10)
end
store.release_all()
writing = false
queued:notify()
while not written and core.now() < deadline do
  caught_up:wait(math.max(1, math.ceil(deadline - core.now())))
end
stdio:flush(math.max(1, math.ceil(deadline - core.now())))
