-- spool.run.request: the model request of a thread's next step (private;
-- spool.loop re-exports request and model_for): the agent's prompt with
-- its variables, its tools in the prompt's and the request's forms, its
-- model over the project's, and the context within the window.

local core = require "spool.core"
local json = require "spool.json"
local prompt = require "spool.prompt"
local context = require "spool.context"
local window = require "spool.run.window"
local config = require "spool.base.config"
local tokens = require "spool.tokens"
local sandbox = require "spool.run.sandbox"
local version = require "spool.run.version"
local resolve_mcp = require "spool.mcp.resolve"

local M = {}

-- An agent version's MCP tools, made whole from their servers' lists
-- (spool.mcp.resolve). A server that cannot say fails the step, naming
-- it. Outside a run (spool prompt AGENT, which starts no server) they
-- show as any-arguments (and a whole server's, not at all) until a run
-- resolves them.
local function mcp_tools(agent)
  if not core.in_task() then
    return false, false
  end
  local ok, changed = resolve_mcp(agent)
  if not ok then
    error(changed, 0)
  end
  return true, changed
end


-- What an agent version says of its tools, in the two forms a step needs
-- (the prompt's, and the request's with its size in bytes), and the
-- providers' wire forms of them as they are made (`wire`, by provider):
-- made once per version, and again when an MCP server's tool list
-- changed.
local function tool_lists(agent)
  local record = version.of[agent]
  local resolved, changed = mcp_tools(agent)
  local lists = not changed and record.tools
  if lists then
    return lists
  end
  lists = { prompt = json.array(), request = nil, request_bytes = 0,
            wire = {} }
  for i, name in ipairs(agent.tool_names) do
    local t = agent.tools[name]
    lists.prompt[i] = { name = name, description = t.description,
                        params = json.encode(t.schema) }
  end
  if agent.mode == "tools" and #agent.tool_names > 0 then
    lists.request = {}
    for i, name in ipairs(agent.tool_names) do
      local t = agent.tools[name]
      lists.request[i] = { name = name, description = t.description,
                           parameters = t.schema }
    end
    lists.request_bytes = #json.encode(lists.request)
  end
  if resolved then -- (else a run resolves them, and keeps those)
    record.tools = lists
  end
  return lists
end


local function template_vars(thread, agent)
  local vars = { input = thread:input(), agent = agent.name,
                 tools = tool_lists(agent).prompt,
                 thread = { id = thread.id, step = thread.step } }
  if agent.vars then
    for k, v in pairs(agent.vars(thread) or {}) do
      vars[k] = v
    end
  end
  return vars
end


-- The model an agent uses: the project's, with the agent's overrides. An
-- agent that names another provider gets that provider's defaults (key,
-- base URL), and the mock when the project runs on the mock.
function M.model_for(agent)
  local base = config.get().model
  local own = agent.model
  -- Even without overrides the agent gets its own copy: the project's
  -- model is the engine's, never handed to agent code to change.
  -- The same project model and overrides make the same model: kept in the
  -- version's record (spool.run.version).
  local record = version.of[agent]
  local memo = record.model
  if memo and memo.base == base and memo.own == own then
    return memo.model
  end
  local m = config.derive_model(base, own)
  -- Frozen: agent code may be handed it, and must not change it (nor
  -- give it a metatable) between the URL's check and its use.
  sandbox.freeze(m)
  record.model = { base = base, own = own, model = m }
  return m
end


-- The request of the thread's next step. The context function gets the
-- tokens the system prompt and tools take, so the messages fit the rest of
-- the window. opts: dry (plan only, for spool prompt), events (render an
-- earlier step), memo (the loop's own step: reuse what earlier steps
-- rendered, spool.run.window.memo). req.context = { estimate (uncalibrated
-- tokens of the whole request), budget, plan }; req.message_forms: the
-- messages' wire forms the memo's walk keeps (spool.run.window's
-- plan.forms).
function M.request(thread, agent, opts)
  opts = opts or {}
  -- An agent's context function gets messages it may change: not the
  -- ones kept for later steps.
  local memo = opts.memo and not agent.context and window.memo(thread) or nil
  local system
  local template = agent.prompt_template
  if template and template.static and not agent.vars then
    system = template.static -- (no variable: none to gather)
  elseif template then
    system = prompt.render(template, template_vars(thread, agent))
  end
  local lists = tool_lists(agent)
  local tools = lists.request
  local model = M.model_for(agent)
  local factor = tokens.factor(opts.events or thread.events)
  local fixed = tokens.estimate(system, factor)
    + math.ceil(lists.request_bytes / 4 * factor)
  local messages, plan = (agent.context or context.chat)(thread, agent, nil,
    { fixed_tokens = fixed, model = model, dry = opts.dry,
      events = opts.events, memo = memo, factor = factor })
  local estimate = tokens.estimate(system)
    + math.ceil(lists.request_bytes / 4)
  if agent.context then -- its messages need not be its plan's
    for i = 1, #messages do
      estimate = estimate + tokens.message(messages[i])
    end
  else
    estimate = estimate + window.tokens(plan, 1)
  end
  return { model = model, system = system, messages = messages,
           tools = tools, tools_wire = tools and lists.wire,
           -- (a memo's plan only: never an agent's context function's)
           message_forms = memo and plan and plan.forms or nil,
           json = agent.mode == "json",
           context = { estimate = estimate,
                       budget = plan and plan.limit or nil, plan = plan } }
end


return M
