-- spool.mcp: tools from MCP servers (issue 23). The servers are named in
-- spool.lua (mcp = { fs = { command = { ... } } }, see spool.mcp.servers);
-- an agent takes a tool of one as it takes any other:
--
--   tools = {
--     read = spool.mcp.tool("fs", "read_text_file"),
--     write = spool.mcp.tool("fs", "write_file", { approve = true }),
--   }
--
-- Its description and input schema come from the server (its tool list,
-- read once per agent version, before the first model call); the schema
-- checks the model's arguments before anything is sent. The call is an
-- ordinary tool call: its intent is stored first (unless side_effects =
-- false), approve, deadlines, budgets and idempotency keys (sent in
-- _meta) work as for any tool. opts: description (instead of the
-- server's), approve, idempotent, side_effects.
--
-- Or all of a server's tools, as an entry of the tools table's list part:
--
--   tools = { spool.mcp.tools("fs", { only = { "read_text_file",
--               "list_directory" }, prefix = "fs_" }), finish = spool.done }
--
-- opts: only (names to take; each must exist) or except (names to
-- leave), prefix (put before each name), approve (true, or the names
-- that need a person's approval), idempotent, side_effects. They become
-- tools of their own when a run first needs the list (spool.mcp.resolve);
-- a name the server gives that a model would refuse (a '.', say) takes
-- '_' for it, and a name another tool has is an error, not a shadow.

local servers = require "spool.mcp.servers"

local M = {}


function M.tool(server, name, opts)
  if type(server) ~= "string" or type(name) ~= "string" then
    error("spool.mcp.tool(server, tool[, opts]): the server's name and "
      .. "the tool's, as strings", 2)
  end
  opts = opts or {}
  return {
    mcp = { server = server, tool = name },
    description = opts.description,
    -- Any arguments, until the server's schema replaces it.
    params = { type = "object" },
    approve = opts.approve,
    idempotent = opts.idempotent,
    side_effects = opts.side_effects,
    run = function(args, ctx)
      return servers.call(server, name, args, ctx)
    end,
  }
end


local TOOLS_OPTS = { only = "list", except = "list", prefix = "string",
  approve = "approve", idempotent = "boolean", side_effects = "boolean" }

local function names(v)
  if type(v) ~= "table" then
    return false
  end
  for k, name in pairs(v) do
    if math.type(k) ~= "integer" or type(name) ~= "string" then
      return false
    end
  end
  return true
end

function M.tools(server, opts)
  if type(server) ~= "string" then
    error("spool.mcp.tools(server[, opts]): the server's name, a string", 2)
  end
  opts = opts or {}
  if type(opts) ~= "table" then
    error("spool.mcp.tools: opts must be a table", 2)
  end
  for k, v in pairs(opts) do
    local kind = TOOLS_OPTS[k]
    local ok = kind == "list" and names(v)
      or kind == "string" and type(v) == "string"
        and v:match("^[%a_][%w_%-]*$") ~= nil
      or kind == "boolean" and type(v) == "boolean"
      or kind == "approve" and (v == true or v == false or names(v))
    if not ok then
      error(string.format("spool.mcp.tools(%q): %s", server, kind
        and (k .. " must be " .. (kind == "list" and "a list of tool names"
          or kind == "approve" and "true or a list of tool names"
          or kind == "string" and "letters, digits, _ or -" or "a boolean"))
        or ("unknown option '" .. tostring(k) .. "' (only, except, prefix, "
          .. "approve, idempotent, side_effects)")), 2)
    end
  end
  if opts.only and opts.except then
    error(string.format("spool.mcp.tools(%q): only or except, not both",
      server), 2)
  end
  return { mcp_server = { server = server, only = opts.only,
    except = opts.except, prefix = opts.prefix, approve = opts.approve,
    idempotent = opts.idempotent, side_effects = opts.side_effects } }
end


return M
