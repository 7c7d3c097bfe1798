-- spool.run.step_request: what the model saw at step N of a stored thread
-- (or, with no N, would see at its next step), rendered again, dry: the
-- request body, where it goes, the tokens of each event and what the
-- window's policies did (private). `spool prompt AGENT --thread ID --step
-- N` prints it; the control API and the inspector show it.
--
--   step_request(thread, agent[, step]) -> view | nil, "ECODE: why"
--
-- A step's view is rebuilt from the events before its model call,
-- including any compaction made then, with the token calibration of that
-- moment. Nothing is called and nothing is written.

local json = require "spool.json"
local llm = require "spool.llm"
local http = require "spool.base.http"
local run_request = require "spool.run.request"

local function step_request(thread, agent, step)
  local events, call = {}, nil
  for _, ev in ipairs(thread.events) do
    if step and ev.type == "model_call" and ev.step == step then
      call = ev
      break
    end
    events[#events + 1] = ev
  end
  if step and not call then
    return nil, string.format("ENOTFOUND: thread %s has no step %d (it "
      .. "made %d)", thread.id, step, thread.step)
  end
  step = step or thread.step + 1
  local view = setmetatable({ events = events, step = step },
    { __index = thread })
  local ok, req = pcall(run_request.request, view, agent, { dry = true,
                                                    events = events })
  if not ok then
    return nil, "EAGENT: " .. tostring(req)
  end
  local request = llm.request(req)
  local model = req.model
  local plan = req.context.plan or {}
  return {
    thread = thread.id, agent = agent.name, step = step,
    seen = call ~= nil, version = call and call.v or (events[#events] or {}).v,
    agent_version = agent.version,
    budget = plan.limit, total = plan.total, factor = plan.factor,
    settings = plan.settings,
    reported_input_tokens = call and call.data.usage
      and call.data.usage.input_tokens or nil,
    events = plan.report or json.array(),
    body = json.decode(request.body), text = request.body,
    -- Where it goes, as spool.base.config's rule resolved the model (the
    -- key's variable named, never its value).
    endpoint = { url = http.shown(request.url), model = model.name,
                 provider = model.provider, mock = model.mock or nil,
                 key_env = not model.mock and model.api_key_env or nil },
  }
end

return step_request
