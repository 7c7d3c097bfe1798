-- spool.mcp.servers: the MCP servers spool.lua names (private; issue 23),
--
--   mcp = { fs = { command = { "npx", "server-filesystem", "/srv" },
--                  env = { TOKEN = "${FS_TOKEN}" }, timeout_ms = 30000,
--                  max_ms = 300000 },
--           tickets = { url = "https://tickets.example/mcp",
--                       headers = { Authorization = "Bearer ${TOKEN}" } } }
--
-- (timeout_ms: how long a call waits for its answer, or for the server's
-- next progress on it; max_ms: how long in all, by default ten timeouts)
-- each started when first used and kept: one client per server per
-- process, its tool list cached until the server says it changed
-- (notifications/tools/list_changed). A server that died is started again
-- at its next use, no sooner than a backoff (1 s, doubling to 30 s). An
-- env or header value's ${NAME} is read from spool's environment when the
-- server starts, so secrets stay out of spool.lua (and out of events and
-- logs: nothing here writes a server's environment or headers anywhere).

local core = require "spool.core"
local config = require "spool.base.config"
local client = require "spool.mcp.client"
local task = require "spool.base.task"

local M = {}

local servers = {} -- name -> { client, tools, starting, started_at, backoff }


-- A table's values with each ${NAME} read from the environment.
local function expanded(t)
  local out = {}
  for k, v in pairs(type(t) == "table" and t or {}) do
    out[k] = (tostring(v):gsub("%${([%w_]+)}", function(var)
      return core.getenv(var) or ""
    end))
  end
  return out
end


local function spec_of(name)
  local all = config.get().file.mcp
  local spec = type(all) == "table" and all[name] or nil
  if type(spec) ~= "table" then
    return nil, string.format("ENOTFOUND: no MCP server '%s' in spool.lua's "
      .. "mcp = { ... }", tostring(name))
  end
  return { command = spec.command, url = spec.url,
           env = expanded(spec.env), headers = expanded(spec.headers),
           timeout_ms = spec.timeout_ms, max_ms = spec.max_ms,
           cwd = config.get().project }
end


-- The running client of server `name`, started if it is not. (task)
function M.client(name)
  local s = servers[name]
  if not s then
    s = { backoff = 0, generation = 0 }
    servers[name] = s
  end
  while s.starting do
    s.starting:wait(60000)
  end
  local c = s.client
  if c and not c.dead and not c.closed then
    return c
  end
  local wait = (s.started_at or 0) + s.backoff - core.now()
  if wait > 0 then
    core.sleep(wait)
  end
  s.starting = core.signal()
  local spec, err = spec_of(name)
  if spec then
    c, err = (spec.url and client.http or client.stdio)(name, spec)
  end
  s.started_at = core.now()
  if c then
    c.on_notice = function(msg)
      if msg.method == "notifications/tools/list_changed" then
        s.tools, s.generation = nil, s.generation + 1
      end
    end
    s.client, s.tools, s.backoff = c, nil, 1000
    s.generation = s.generation + 1
  else
    s.backoff = math.min(30000, math.max(1000, s.backoff * 2))
    core.log("error", tostring(err))
  end
  local starting = s.starting
  s.starting = nil
  starting:notify()
  return c, err
end


-- Every tool of server `server`, as it lists them, in its order: { tool,
-- ... }, by name, and the generation they are of. Cached until the server
-- says its list changed (even while it was being read), or it is started
-- again. (task)
function M.tools(server)
  local c, err = M.client(server)
  if not c then
    return nil, err
  end
  local s = servers[server]
  if not s.tools or s.tools.generation ~= s.generation then
    local generation = s.generation
    local list, lerr = c:list_tools()
    if not list then
      return nil, lerr
    end
    local by_name = {}
    for _, t in ipairs(list) do
      by_name[t.name] = t
    end
    s.tools = { list = list, by_name = by_name, generation = generation }
  end
  return s.tools.list, s.tools.by_name, s.tools.generation
end


-- Which tool list of server `name` is the current one: a number that
-- changes when the server says its list changed, or starts again (and
-- what was read of the old list may no longer hold).
function M.generation(name)
  local s = servers[name]
  return s and s.generation or 0
end


-- The tool `tool` of server `server`, as it lists it, and the generation
-- of that list. (task)
function M.tool(server, tool)
  local list, by_name, generation = M.tools(server)
  if not list then
    return nil, by_name -- (why not)
  end
  local t = by_name[tool]
  if not t then
    return nil, string.format("ENOTFOUND: MCP server %s has no tool '%s'",
      server, tostring(tool))
  end
  return t, generation
end


-- Calls it: the value the tool returned, or nil and why (its error, or
-- the server's). The thread's idempotency key goes along in _meta. (task)
function M.call(server, tool, args, ctx)
  local c, err = M.client(server)
  if not c then
    return nil, err
  end
  -- While it waits, a cancel of its thread interrupts it (spool.run.runner)
  -- and the server is told (notifications/cancelled).
  local run = ctx and task.runs[ctx.thread]
  if run then
    run.tool_task = core.task_id()
  end
  local res, cerr = c:call_tool(tool, args, ctx and ctx.idempotency_key
    and { ["spool/idempotencyKey"] = ctx.idempotency_key } or nil)
  if run then
    run.tool_task = nil
  end
  if not res then
    return nil, cerr
  end
  return client.result(res)
end


-- Stops every server (the engine closes).
function M.close_all()
  for name, s in pairs(servers) do
    if s.client then
      s.client:close()
    end
    servers[name] = nil
  end
end


return M
