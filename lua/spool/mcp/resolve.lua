-- spool.mcp.resolve: an agent version's MCP tools made whole, from their
-- servers' tool lists (private). Once per version, in a run (a server
-- must be asked): spool.run.request before the version's first model
-- call, and spool.run.runner when a run starts or takes a new version, so
-- that a call stored before a crash or an approval routes to its tool.
--
--   resolve(agent) -> true, changed | nil, "ECODE: why"
--
-- A tool of spool.mcp.tool gets its server's description (unless the
-- agent gave one) and input schema. An entry of spool.mcp.tools becomes a
-- tool per server tool it selects, added to agent.tools and tool_names.
-- When a server's list changes (it said so, or it started again), the
-- next resolve reads it again: a tool added is offered from the next
-- step, one removed is gone (a call of it is an unknown tool), a schema
-- changed checks the next call. A server that cannot answer leaves the
-- version as it was, to be tried again at its next use.

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
-- version changes at once, or not at all); those it made from an older
-- list go first.
local function whole_server(agent, entry, list, by_name)
  for _, name in ipairs(entry.only or {}) do
    if not by_name[name] then
      return nil, string.format("ENOTFOUND: agent %s takes the tool '%s' "
        .. "of MCP server %s, which has no such tool", agent.name, name,
        entry.server)
    end
  end
  local old = set(entry.names)
  local only, except = entry.only and set(entry.only), set(entry.except)
  local approve = entry.approve == true or set(entry.approve)
  local made, names = {}, {}
  for _, info in ipairs(list) do
    if (not only or only[info.name]) and not except[info.name] then
      local name = (entry.prefix or "") .. info.name:gsub("[^%w_%-]", "_")
      if (agent.tools[name] and not old[name]) or made[name] then
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
      made[name], names[#names + 1] = t, name
    end
  end
  local kept = {}
  for _, name in ipairs(agent.tool_names) do
    if old[name] then
      agent.tools[name] = nil
    else
      kept[#kept + 1] = name
    end
  end
  for _, name in ipairs(names) do
    agent.tools[name] = made[name]
    kept[#kept + 1] = name
  end
  table.sort(kept)
  agent.tool_names, entry.names = kept, names
  return true
end

-- Returns true and whether the version's tools changed; or nil and why.
local function resolve(agent)
  if not agent.uses_mcp then
    return true, false
  end
  local changed = false
  for _, entry in ipairs(agent.mcp_servers or {}) do
    if entry.generation ~= servers.generation(entry.server) then
      local list, by_name, generation = servers.tools(entry.server)
      if not list then
        return nil, by_name
      end
      -- (Another run may have made them meanwhile.)
      if entry.generation ~= generation then
        local ok, err = whole_server(agent, entry, list, by_name)
        if not ok then
          return nil, err
        end
        entry.generation, changed = generation, true
      end
    end
  end
  for _, name in ipairs(agent.tool_names) do
    local t = agent.tools[name]
    if t.mcp and t.mcp.generation ~= servers.generation(t.mcp.server) then
      local info, generation = servers.tool(t.mcp.server, t.mcp.tool)
      if not info then
        return nil, generation
      end
      describe(t, name, info)
      t.mcp.generation, changed = generation, true
    end
  end
  return true, changed
end

return resolve
