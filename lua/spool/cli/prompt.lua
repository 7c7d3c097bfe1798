-- spool prompt AGENT --thread ID [--step N] [--json]: what the model saw at
-- a step of a stored thread (or, without --step, would see at its next
-- one), with the tokens of each event and what the window's policies did.
-- Run by the CLI as a script; `arg` holds the command's arguments.
--
-- The render is a dry one: nothing is called and nothing is written. A
-- step's view is rebuilt from the events before its model call, including
-- any compaction made then, with the token calibration of that moment.

local json = require "spool.json"
local llm = require "spool.llm"
local loader = require "spool.run.loader"
local run_request = require "spool.run.request"
local runner = require "spool.run.runner"

local USAGE = "usage: spool prompt AGENT --thread ID [--step N] [--json]"

local cli = require("spool.cli.command").new("prompt", USAGE)


local function parse(argv)
  local o = cli:parse(argv, { ["--thread"] = "value", ["--step"] = "count",
                              ["--json"] = "flag" }, { "agent" })
  if not o.agent or not o.thread then
    cli:usage("needs an agent and --thread ID")
  end
  return o
end


local o = parse(arg or {})
local agent, aerr = loader.load(o.agent)
if not agent then
  cli:fail(aerr)
end
local thread, terr = runner.load(o.thread)
if not thread then
  cli:fail(terr)
end

-- The events the model had seen when step N was made: those before the
-- step's model call.
local events, call = {}, nil
for _, ev in ipairs(thread.events) do
  if o.step and ev.type == "model_call" and ev.step == o.step then
    call = ev
    break
  end
  events[#events + 1] = ev
end
if o.step and not call then
  cli:fail(string.format("thread %s has no step %d (it made %d)", thread.id,
    o.step, thread.step))
end
local step = o.step or thread.step + 1
local view = setmetatable({ events = events, step = step },
  { __index = thread })
local ok, req = pcall(run_request.request, view, agent, { dry = true,
                                                  events = events })
if not ok then
  cli:fail("EAGENT: " .. tostring(req))
end
local request = llm.request(req)
local body = request.body
-- Where the request goes, as spool.base.config's rule resolved the model.
local model = req.model
local endpoint = { url = request.url, model = model.name,
                   provider = model.provider, mock = model.mock or nil,
                   key_env = not model.mock and model.api_key_env or nil }
local plan = req.context.plan or {}
local version = call and call.v or (events[#events] or {}).v

if o.json then
  io.write(json.encode({
    thread = thread.id, agent = agent.name, step = step,
    seen = call ~= nil, version = version, agent_version = agent.version,
    budget = plan.limit, total = plan.total, factor = plan.factor,
    reported_input_tokens = call and call.data.usage
      and call.data.usage.input_tokens or nil,
    events = plan.report or json.array(), body = json.decode(body),
    endpoint = endpoint,
  }), "\n")
  os.exit(0)
end

local out = {}
out[#out + 1] = string.format("thread %s  agent %s  step %d (%s)", thread.id,
  agent.name, step, call and "as the model saw it" or "the next request")
out[#out + 1] = string.format("endpoint: POST %s · %s (%s)%s", endpoint.url,
  tostring(endpoint.model), tostring(endpoint.provider), endpoint.mock
    and " · the built-in mock" or (endpoint.key_env and (" · key $"
      .. endpoint.key_env) or ""))
if version and version ~= agent.version then
  out[#out + 1] = string.format("note: the thread ran agent version %s; "
    .. "this is what version %s renders", version, agent.version)
end
if plan.limit then
  out[#out + 1] = string.format("window: %d of %d tokens (%d, less %d for "
    .. "the reply); calibration ×%.2f", plan.total, plan.limit,
    plan.settings.tokens, plan.settings.reserve, plan.factor)
end
if call and call.data.usage then
  out[#out + 1] = string.format("the provider counted %d input tokens",
    call.data.usage.input_tokens or 0)
end
out[#out + 1] = "  seq  type              tokens   shown  policy"
for _, r in ipairs(plan.report or {}) do
  out[#out + 1] = string.format("%5d  %-16s %7s %7s  %s", r.seq, r.type,
    r.tokens and tostring(r.tokens) or "", r.shown and tostring(r.shown)
      or "", r.action and (r.action .. (r.into and (" into event "
        .. r.into) or "")) or "")
end
out[#out + 1] = "request:"
out[#out + 1] = body
io.write(table.concat(out, "\n"), "\n")
os.exit(0)
