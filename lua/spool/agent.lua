-- spool.agent: what an agent file returns, checked when it loads.
--
--   return spool.agent {
--     name = "refund",          -- defaults to the file name
--     description = "...",      -- for people, and for parents that call it
--     prompt = "refund.md",     -- prompts/refund.md, the system message
--     max_steps = 6,            -- the loop's bound (default 10)
--     max_errors = 3,           -- consecutive failed steps before failing
--     mode = "tools",           -- or "json": intents as JSON text replies
--     tools = {                 -- the switch: intent name -> tool
--       issue_refund = { description = "...", params = { ... },
--                        run = function(args, ctx) ... end },
--       finish = spool.done { params = { ... } },
--     },
--     output = { ... },         -- schema of a plain-text final answer
--     vars = function(thread) return { ... } end,     -- template variables
--     context = function(thread, agent) return messages end,
--     on_max_steps = function(thread) return answer_or_nil end,
--     step = function(thread, agent) ... end,         -- own the whole step
--     model = { name = "...", temperature = 0 },      -- overrides
--     stream = true,     -- stream replies (default: the engine's option)
--     window = { tokens = 32000, reserve = 2000,      -- see spool.context
--                policies = { tool_result = { truncate = 800 } },
--                compact = { prompt = "compact.md", keep_recent = 4 } },
--     humans = { channel = "slack", to = "#approvals" },  -- where people are
--                                     -- asked (spool.serve.channels); a list
--                                     -- escalates, after_ms apart
--     prefetch = { order = function(input, ctx) return ... end },  -- before
--                  -- step 1, concurrently; each result becomes an event
--     budget = { steps = 40, tokens = 200000,    -- sub-agents included;
--                cost_usd = 0.50, wall_ms = 600000 },  -- spool.model.pricing
--     lenient = true,    -- repair the model's JSON (false: strict only)
--     escalate = false,  -- after max_errors, ask a person instead of failing
--     on_budget = function(thread, what) return answer_or_nil end,
--     pin_version = false, -- true: a thread runs the version it started on
--     limits = { step_instructions = n, run_instructions = n,  -- what its
--                memory_mb = n, tool_calls = n },  -- runs may spend (see
--                                                  -- spool.run.limits)
--     migrate = function(call, thread) return call_or_nil end,  -- see below
--   }
--
-- Tool fields besides description, params and run: approve = true (or a
-- function(args) deciding per call, or { deadline_ms = n, when = fn }) to
-- wait for a human's approval first; idempotent =
-- true if running it twice is harmless (it is re-run after a crash);
-- side_effects = false if it changes nothing (it needs no durable intent
-- before it runs).
--
-- Hot reload: a thread takes the agent's current version at each step
-- (unless pin_version). A call that waited for a human while its tool was
-- removed, or its parameters changed so the stored arguments no longer
-- fit, goes to `migrate` with { name, args, from, to, problem }: return
-- { name =, args = } to run that call instead, or nil to tell the model
-- (an error event naming the change).
--
-- Mistakes in the definition are errors at load time, with the agent's
-- file named, not surprises at step 7.

local core = require "spool.core"
local run_limits = require "spool.run.limits"
local schema = require "spool.schema"
local sandbox = require "spool.run.sandbox"
local channels = require "spool.serve.channels.common"
local llm = require "spool.llm"
local window = require "spool.run.window"

local M = {}

-- A version's memory account (spool.run.loader) closes when the version goes.
local AGENT = { __name = "spool.agent", __gc = function(a)
  run_limits.close_account(a)
end }
local TOOL_NAME = "^[%a_][%w_%-]*$"

local TOOL_FIELDS = {
  description = true, params = true, run = true, terminal = true,
  result = true, idempotent = true, side_effects = true, approve = true,
  human = true, event = true, mcp = true,
}

local KNOWN = {
  name = true, description = true, prompt = true, max_steps = true,
  max_errors = true, mode = true, tools = true, output = true, vars = true,
  context = true, on_max_steps = true, step = true, model = true,
  budget = true, on_budget = true, lenient = true, escalate = true,
  pin_version = true, migrate = true, stream = true, window = true,
  prefetch = true, humans = true, limits = true,
}


-- A terminal tool: calling it ends the thread with its arguments as the
-- result. `spool.done` alone takes { answer = string } and the result is
-- the answer; `spool.done { params = ..., description = ... }` makes a
-- terminal tool with structured arguments.
M.done = setmetatable({
  terminal = true,
  description = "Finish with the final answer.",
  params = { answer = "string" },
  result = function(args) return args.answer end,
}, {
  __call = function(_, spec)
    spec = spec or {}
    return {
      terminal = true,
      description = spec.description or "Finish with this result.",
      params = spec.params,
      run = spec.run,
    }
  end,
})


local function check_function(v, what, where)
  if v ~= nil and type(v) ~= "function" then
    error(string.format("%s: %s must be a function, not a %s", where, what,
      type(v)), 0)
  end
end


local function normalize_tool(name, spec, where)
  if type(name) ~= "string" or not name:match(TOOL_NAME) or #name > 64 then
    error(string.format("%s: tool name '%s' must be letters, digits, _ or -",
      where, tostring(name)), 0)
  end
  local w = string.format("%s: tool '%s'", where, name)
  if type(spec) == "function" then
    spec = { run = spec }
  end
  if type(spec) ~= "table" then
    error(w .. " must be a table or a function", 0)
  end
  for k in pairs(spec) do
    if not TOOL_FIELDS[k] then
      error(string.format("%s has an unknown field '%s'", w, tostring(k)), 0)
    end
  end
  check_function(spec.run, "run", w)
  if spec.human ~= nil and spec.human ~= "ask" and spec.human ~= "event" then
    error(w .. ": human is \"ask\" (spool.human.ask) or \"event\" "
      .. "(spool.wait_for)", 0)
  end
  if not spec.terminal and not spec.human and spec.run == nil then
    error(w .. " has no run function", 0)
  end
  local approve = spec.approve
  if type(approve) == "function" then
    approve = { when = approve }
  end
  if approve ~= nil and approve ~= true and approve ~= false
      and type(approve) ~= "table" then
    error(w .. ": approve is true, a function(args) -> boolean, or "
      .. "{ deadline_ms = n, when = function }", 0)
  end
  if type(approve) == "table" and approve.when ~= nil then
    check_function(approve.when, "approve.when", w)
  end
  if type(approve) == "table" and approve.deadline_ms ~= nil
      and math.type(approve.deadline_ms) ~= "integer" then
    error(w .. ": approve.deadline_ms must be an integer", 0)
  end
  if type(approve) == "table" then
    approve = { deadline_ms = approve.deadline_ms, when = approve.when }
  end
  local description = spec.description or name
  if type(description) ~= "string" then
    error(w .. ": description must be a string", 0)
  end
  return {
    name = name,
    description = description,
    -- Plain data: the API checks arguments against it outside any run.
    schema = sandbox.plain(schema.params(spec.params, w), w .. ": params"),
    run = spec.run,
    result = spec.result,
    terminal = spec.terminal and true or false,
    idempotent = spec.idempotent and true or false,
    side_effects = spec.side_effects ~= false,
    approve = approve and (approve == true and {} or approve) or nil,
    human = spec.human,
    event = spec.event,
    -- A tool of an MCP server (spool.mcp.tool): its schema and description
    -- come from the server before the first model call.
    mcp = type(spec.mcp) == "table" and { server = tostring(spec.mcp.server),
      tool = tostring(spec.mcp.tool) } or nil,
  }
end


-- Checks and normalizes a definition. `where` names its file in errors.
function M.define(def, where)
  where = where or "spool.agent"
  if type(def) ~= "table" then
    error(where .. ": spool.agent expects a table", 0)
  end
  for k in pairs(def) do
    if not KNOWN[k] then
      error(string.format("%s: unknown field '%s' in spool.agent{}", where,
        tostring(k)), 0)
    end
  end
  -- What the definition says as data is copied plain: the engine reads it
  -- outside runs too (the API, channels, the start of a run), where agent
  -- code (a metatable's) must never run.
  local function data(k)
    return def[k] ~= nil and sandbox.plain(def[k], where .. ": " .. k) or nil
  end
  local a = setmetatable({
    name = def.name,
    description = def.description,
    prompt = def.prompt,
    max_steps = def.max_steps or 10,
    max_errors = def.max_errors or 3,
    mode = def.mode or "tools",
    tools = {},
    tool_names = {},
    vars = def.vars,
    context = def.context,
    on_max_steps = def.on_max_steps,
    step = def.step,
    model = data("model"),
    budget = data("budget"),
    on_budget = def.on_budget,
    lenient = def.lenient ~= false,
    escalate = def.escalate and true or false,
    pin_version = def.pin_version and true or false,
    migrate = def.migrate,
    stream = def.stream,
    window = data("window"),
    prefetch = def.prefetch,
    humans = def.humans ~= nil
      and channels.check(data("humans"), where) or nil,
    limits = data("limits"),
  }, AGENT)
  local lok, lerr = run_limits.check(a.limits,
    where .. ": limits")
  if not lok then
    error(lerr, 0)
  end
  if a.prompt ~= nil and type(a.prompt) ~= "string" then
    error(where .. ": prompt must be a file name in prompts/", 0)
  end
  if math.type(a.max_steps) ~= "integer" or a.max_steps < 1 then
    error(where .. ": max_steps must be a positive integer", 0)
  end
  if math.type(a.max_errors) ~= "integer" or a.max_errors < 1 then
    error(where .. ": max_errors must be a positive integer", 0)
  end
  if a.mode ~= "tools" and a.mode ~= "json" then
    error(where .. ": mode must be \"tools\" or \"json\"", 0)
  end
  if a.model ~= nil and type(a.model) ~= "table" then
    error(where .. ": model must be a table of overrides", 0)
  end
  if a.model and a.model.provider ~= nil then
    local ok, err = pcall(llm.provider, a.model.provider)
    if not ok then
      error(where .. ": model: " .. err, 0)
    end
  end
  if a.stream ~= nil and type(a.stream) ~= "boolean" then
    error(where .. ": stream must be true or false", 0)
  end
  if a.window ~= nil then
    local werr = window.check(a.window)
    if werr then
      error(where .. ": " .. werr, 0)
    end
  end
  if a.prefetch ~= nil then
    if type(a.prefetch) ~= "table" then
      error(where .. ": prefetch must be a table { name = function(input, "
        .. "ctx) ... end }", 0)
    end
    for name, f in pairs(a.prefetch) do
      local ok = type(name) == "string" and (type(f) == "function"
        or (type(f) == "table" and type(f.agent) == "string"))
      if not ok then
        error(string.format("%s: prefetch.%s must be a function(input, ctx) "
          .. "or { agent = \"name\", input = function(input) ... end }",
          where, tostring(name)), 0)
      end
    end
  end
  if a.budget ~= nil then
    local shape = ": budget must be { steps = n, tokens = n, cost_usd = x, "
      .. "wall_ms = n }"
    if type(a.budget) ~= "table" then
      error(where .. shape, 0)
    end
    for k, v in pairs(a.budget) do
      local ok = (k == "cost_usd" and type(v) == "number" and v >= 0)
        or ((k == "steps" or k == "tokens" or k == "wall_ms")
          and math.type(v) == "integer")
      if not ok then
        error(where .. shape, 0)
      end
    end
  end
  for _, f in ipairs { "vars", "context", "on_max_steps", "step",
                       "on_budget", "migrate" } do
    check_function(def[f], f, where)
  end
  if def.tools ~= nil and type(def.tools) ~= "table" then
    error(where .. ": tools must be a table of name = tool", 0)
  end
  -- The list part holds all of a server's tools (spool.mcp.tools): they
  -- become tools of their own once a run lists them (spool.mcp.resolve).
  local servers = def.tools and #def.tools or 0
  for i = 1, servers do
    local entry = def.tools[i]
    if type(entry) ~= "table" or type(entry.mcp_server) ~= "table" then
      error(string.format("%s: tools[%d] is not spool.mcp.tools(...): "
        .. "every other tool needs a name", where, i), 0)
    end
    a.mcp_servers = a.mcp_servers or {}
    a.mcp_servers[i] = sandbox.plain(entry.mcp_server, where .. ": tools")
  end
  for name, spec in pairs(def.tools or {}) do
    if not (math.type(name) == "integer" and name >= 1 and name <= servers)
    then
      a.tools[name] = normalize_tool(name, spec, where)
      a.tool_names[#a.tool_names + 1] = name
    end
  end
  table.sort(a.tool_names)
  a.uses_mcp = a.mcp_servers ~= nil
  for _, t in pairs(a.tools) do
    a.uses_mcp = a.uses_mcp or t.mcp ~= nil
  end
  if def.output ~= nil then
    if type(def.output) ~= "table" then
      error(where .. ": output must be a schema table", 0)
    end
    a.output = sandbox.plain(def.output.type and def.output
      or schema.params(def.output, where .. ": output"), where .. ": output")
    schema.check_vocabulary(a.output, where .. ": output")
  end
  if a.step == nil and a.prompt == nil then
    error(where .. ": an agent needs a prompt (or its own step function)", 0)
  end
  return a
end


-- A tool as a definition's tools table gives it, checked and normalized
-- (spool.mcp.resolve makes those of a whole server with it).
M.tool = normalize_tool


function M.is_agent(v)
  return getmetatable(v) == AGENT
end


return M
