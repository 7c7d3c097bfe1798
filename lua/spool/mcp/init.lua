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


return M
