-- spool.mcp.resolve: an agent version's MCP tools made whole, from their
-- servers' tool lists (private). Once per version, in a run (a server
-- must be asked): spool.run.request before the version's first model
-- call, and spool.run.runner when a run starts or takes a new version, so
-- that a call stored before a crash or an approval routes to its tool.
--
--   resolve(agent) -> true | nil, "ECODE: why"
--
-- A tool of spool.mcp.tool gets its server's description (unless the
-- agent gave one) and input schema. An entry of spool.mcp.tools becomes a
-- tool per server tool it selects, added to agent.tools and tool_names.
-- A server that cannot answer leaves the version as it was, to be tried
-- again at its next use.

local agent_mod = require "spool.agent"
local servers = require "spool.mcp.servers"
local mcp = require "spool.mcp"

-- What the server's schema says, as a tool's schema.
local function schema_of(info)
  local input = type(info.inputSchema) == "table" and info.inputSchema
    or { type = "object" }
  input["$schema"] = nil
  return input
end

local function describe(t, name, info)
  t.mcp.schema = schema_of(info)
  t.schema = t.mcp.schema
  if t.description == name and type(info.description) == "string" then
    t.description = info.description
  end
end

local function set(list)
  local s = {}
  for _, v in ipairs(list or {}) do
    s[v] = true
  end
  return s
end

-- The tools an entry of spool.mcp.tools selects, made (no yield: the
-- version changes at once, or not at all).
local function whole_server(agent, entry, list, by_name)
  for _, name in ipairs(entry.only or {}) do
    if not by_name[name] then
      return nil, string.format("ENOTFOUND: agent %s takes the tool '%s' "
        .. "of MCP server %s, which has no such tool", agent.name, name,
        entry.server)
    end
  end
  local only, except = entry.only and set(entry.only), set(entry.except)
  local approve = entry.approve == true or set(entry.approve)
  local made = {}
  for _, info in ipairs(list) do
    if (not only or only[info.name]) and not except[info.name] then
      local name = (entry.prefix or "") .. info.name:gsub("[^%w_%-]", "_")
      if agent.tools[name] or made[name] then
        return nil, string.format("EAGENT: agent %s has two tools named "
          .. "'%s' (one from MCP server %s): give spool.mcp.tools a prefix",
          agent.name, name, entry.server)
      end
      local ok, t = pcall(agent_mod.tool, name, mcp.tool(entry.server,
        info.name, { approve = approve == true or approve[info.name],
                     idempotent = entry.idempotent,
                     side_effects = entry.side_effects }), agent.name)
      if not ok then
        return nil, "EAGENT: " .. tostring(t)
      end
      describe(t, name, info)
      made[name] = t
    end
  end
  for name, t in pairs(made) do
    agent.tools[name] = t
    agent.tool_names[#agent.tool_names + 1] = name
  end
  table.sort(agent.tool_names)
  return true
end

local function resolve(agent)
  for _, entry in ipairs(agent.mcp_servers or {}) do
    if not entry.made then
      local list, by_name = servers.tools(entry.server)
      if not list then
        return nil, by_name
      end
      if not entry.made then -- (another run may have made them meanwhile)
        local ok, err = whole_server(agent, entry, list, by_name)
        if not ok then
          return nil, err
        end
        entry.made = true
      end
    end
  end
  for _, name in ipairs(agent.tool_names) do
    local t = agent.tools[name]
    if t.mcp and not t.mcp.schema then
      local info, err = servers.tool(t.mcp.server, t.mcp.tool)
      if not info then
        return nil, err
      end
      describe(t, name, info)
    end
  end
  return true
end

return resolve
