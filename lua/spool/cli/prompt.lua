-- spool prompt AGENT --thread ID [--step N] [--json]: what the model saw at
-- a step of a stored thread (or, without --step, would see at its next
-- one), with the tokens of each event and what the window's policies did.
-- Run by the CLI as a script; `arg` holds the command's arguments.
--
-- The render is a dry one (spool.run.step_request).

local json = require "spool.json"
local loader = require "spool.run.loader"
local runner = require "spool.run.runner"
local step_request = require "spool.run.step_request"

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

local v, verr = step_request(thread, agent, o.step)
if not v then
  -- (A step the thread never made is a failure here, not a missing file.)
  cli:fail((verr:gsub("^ENOTFOUND: ", "")))
end

if o.json then
  io.write(json.encode({ thread = v.thread, agent = v.agent, step = v.step,
    seen = v.seen, version = v.version, agent_version = v.agent_version,
    budget = v.budget, total = v.total, factor = v.factor,
    reported_input_tokens = v.reported_input_tokens, events = v.events,
    body = v.body, endpoint = v.endpoint }), "\n")
  os.exit(0)
end

local step, endpoint, version = v.step, v.endpoint, v.version
local out = {}
out[#out + 1] = string.format("thread %s  agent %s  step %d (%s)", thread.id,
  agent.name, step, v.seen and "as the model saw it" or "the next request")
out[#out + 1] = string.format("endpoint: POST %s · %s (%s)%s", endpoint.url,
  tostring(endpoint.model), tostring(endpoint.provider), endpoint.mock
    and " · the built-in mock" or (endpoint.key_env and (" · key $"
      .. endpoint.key_env) or ""))
if version and version ~= agent.version then
  out[#out + 1] = string.format("note: the thread ran agent version %s; "
    .. "this is what version %s renders", version, agent.version)
end
if v.budget then
  out[#out + 1] = string.format("window: %d of %d tokens (%d, less %d for "
    .. "the reply); calibration ×%.2f", v.total, v.budget,
    v.settings.tokens, v.settings.reserve, v.factor)
end
if v.reported_input_tokens then
  out[#out + 1] = string.format("the provider counted %d input tokens",
    v.reported_input_tokens)
end
out[#out + 1] = "  seq  type              tokens   shown  policy"
for _, r in ipairs(v.events) do
  out[#out + 1] = string.format("%5d  %-16s %7s %7s  %s", r.seq, r.type,
    r.tokens and tostring(r.tokens) or "", r.shown and tostring(r.shown)
      or "", r.action and (r.action .. (r.into and (" into event "
        .. r.into) or "")) or "")
end
out[#out + 1] = "request:"
out[#out + 1] = v.text
io.write(table.concat(out, "\n"), "\n")
os.exit(0)
