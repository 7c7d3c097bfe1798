-- spool: the library agent authors call.
--
--   local spool = require "spool"
--   return spool.agent { prompt = "x.md", tools = { ... } }
--
-- Tools the embedding application provides: spool.host_tool(name); tools
-- of MCP servers: spool.mcp.tool(server, name).
-- Business state: spool.state.get / put / delete / list. Humans:
-- spool.human.ask (a tool), approve = true on any tool. Outside events:
-- spool.wait_for(name) (a tool).
--
-- Building blocks, for agents that own their step:
--   spool.llm.chat, spool.context.chat / structured, spool.loop.step,
--   spool.loop.route, spool.call (a sub-agent), spool.schema.check,
--   spool.prompt, spool.json, spool.http, spool.fs, spool.sleep, spool.log,
--   spool.sha256

local core = require "spool.core"
local agent = require "spool.agent"
local runner = require "spool.run.runner"

local M = {
  json = require "spool.json",
  llm = require "spool.llm",
  http = require "spool.http",
  fs = require "spool.fs",
  context = require "spool.context",
  prompt = require "spool.prompt",
  schema = require "spool.schema",
  loop = require "spool.loop",
  state = require "spool.state",
  human = require "spool.human",
  mcp = require "spool.mcp",
  wait_for = require("spool.human").wait_for,
  done = agent.done,
  extract = require("spool.extract").extract,
  sleep = core.sleep,
  now = core.now,
  sha256 = core.sha256,
}


function M.agent(def)
  return agent.define(def, debug.getinfo(2, "S").short_src)
end


-- Runs agent `name` on `input` as a child thread of `thread` and returns
-- its result, or nil and its error. The child has its own step budget.
function M.call(thread, name, input)
  return runner.call(thread, name, input)
end


-- A tool the embedding application provides in C (spool.h:
-- spool_tool_register). Its description and parameters come from the
-- registration; `extra` may add tool fields (approve, side_effects,
-- idempotent). Raises if the application registered no such tool.
function M.host_tool(name, extra)
  local reg = core.host_tools()[name]
  if not reg then
    error(string.format("host tool '%s' is not registered by the application "
      .. "(spool_tool_register)", tostring(name)), 2)
  end
  local tool = {
    description = reg.description,
    params = M.json.decode(reg.schema),
    run = function(args, ctx)
      local result, err = core.host_call(name, M.json.encode(args),
        ctx.thread.id)
      if result == nil then
        return nil, (err:gsub("^EHOST: ", ""))
      end
      return M.json.decode(result)
    end,
  }
  for k, v in pairs(extra or {}) do
    tool[k] = v
  end
  return tool
end


-- Logs a line to the engine's log (stderr): level is "error", "warn",
-- "info" or "debug".
function M.log(level, msg)
  core.log(level, msg)
end


return M
