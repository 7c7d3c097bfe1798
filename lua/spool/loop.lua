-- spool.loop: the default agent loop, prompt + switch + context + loop,
-- written as a reducer over the thread's events.
--
-- A step renders the context, calls the model, and routes what it chose
-- through the switch (the agent's tools). Before deciding anything, the
-- loop looks at the last model call: any of its tool calls not yet
-- answered (the run paused for a human, or the process died mid-step) is
-- settled first, from the stored events, so a resumed thread continues
-- exactly where it stopped and never runs a finished call twice.
--
--   loop.run(thread, agent[, resolve])  drive a thread until it ends or waits
--   loop.step(thread, agent)      one default step (agents may call it)
--   loop.request(thread, agent[, { dry, events }])   the chat request the
--                                 next step sends
--   loop.route(thread, agent, call)  run one intent through the switch
--   loop.model_for(agent)         the model an agent's steps call
--
-- The loop's parts are in spool.run: request (what the next step sends),
-- route (the switch), recover (settling what a stopped run left), budget
-- (what a thread may spend) and durable (commits, and what stops a run);
-- this module is the step and the run that put them together.
--
-- Durability: the loop commits at every step boundary, and before a tool
-- with side effects runs (so its intent is stored first; a tool declared
-- side_effects = false skips that commit). What the model says is data:
-- its tool names pick from the agent's own table, its arguments are
-- decoded and checked against the tool's schema, and nothing it says is
-- ever run as code.

local core = require "spool.core"
local json = require "spool.json"
local llm = require "spool.llm"
local config = require "spool.base.config"
local pricing = require "spool.model.pricing"
local run_limits = require "spool.run.limits"
local task = require "spool.base.task"
local durable = require "spool.run.durable"
local request = require "spool.run.request"
local route = require "spool.run.route"
local recover = require "spool.run.recover"
local budget = require "spool.run.budget"
local trace = require "spool.run.trace"
local hub = require "spool.run.hub"

local M = {}

-- What agents use of the loop's parts (spool.run.*).
M.PAUSED = durable.PAUSED
-- opts: dry, events (spool.run.request's), never its memo: what the
-- loop's steps keep is their own.
function M.request(thread, agent, opts)
  return request.request(thread, agent,
    opts and { dry = opts.dry, events = opts.events })
end
M.model_for = request.model_for
M.route = route.route


-- Each piece of a streamed reply goes to the host as a "delta" event, and
-- to the thread's readers (spool.run.hub: the API's streams); neither is
-- stored: the model_call event holds the whole reply.
local function delta_emitter(thread, host)
  return function(piece)
    if host then
      core.emit(thread.id, thread.agent, "delta", 0, thread.depth or 0,
        json.encode({ thread = thread.id, agent = thread.agent,
                      type = "delta", text = piece }), piece)
    end
    hub.text(thread.id, piece)
  end
end


-- A model call's attempts, as an event keeps them: none when the first
-- attempt answered at once (the event's own model, provider and latency
-- say all there is — a tenth of a durable step's bytes).
local function attempts_data(attempts)
  local a = attempts and attempts[1]
  if #(attempts or {}) == 1 and a.status and a.status < 300
      and a.error == nil and a.queued_ms == nil then
    return nil
  end
  local out = json.array()
  for i, a in ipairs(attempts or {}) do
    out[i] = { attempt = a.attempt, model = a.model, provider = a.provider,
               status = a.status, latency_ms = a.latency_ms,
               queued_ms = a.queued_ms, error = a.error,
               retry_in_ms = a.retry_in_ms }
  end
  return out
end


function M.step(thread, agent)
  local req = request.request(thread, agent, { memo = true })
  -- Someone reads the text as it comes (an API stream): the call streams,
  -- unless the agent says it must not.
  local read = hub.text_wanted(thread.id)
  if req.stream == nil then
    req.stream = agent.stream
    if req.stream == nil then
      req.stream = read or config.get().stream
    end
  end
  local host = core.listening()
  if req.stream and (host or read) then
    req.on_text = delta_emitter(thread, host)
    req.on_reset = function()
      if host then
        core.emit(thread.id, thread.agent, "delta_reset", 0,
          thread.depth or 0, json.encode({ thread = thread.id,
            agent = thread.agent, type = "delta_reset" }),
          "↺ the reply broke off; again, from the start:")
      end
      hub.text(thread.id, hub.RESET)
    end
  end
  req.deadline = req.deadline or budget.deadline(thread, agent)
  req.thread = thread
  -- The plan (its units, the size of every message) is for spool prompt:
  -- not kept alive while the call is out, with thousands of runs waiting.
  req.context.plan = nil
  -- While the call is out, cancelling the thread interrupts it.
  local run = task.runs[thread] or task.NO_RUN
  run.model_task = core.task_id()
  local reply, err, attempts = task.quietly(llm.chat,
    req) -- recorded below, as the model_call event
  run.model_task = nil
  if not reply and run.cancel then
    return -- the loop records the cancellation
  elseif not reply and attempts and #attempts > 0
      and attempts[#attempts].deadline then
    return -- out of time: the loop ends the thread at its budget
  elseif not reply then
    thread:append("failed", {
      error = (err:gsub("^EMODEL: ", "model call failed: ")),
      attempts = attempts_data(attempts),
    })
    return
  end
  -- A reply may make only so many calls: a model steered into making
  -- thousands must not run thousands of handlers. None of them runs; the
  -- model is told, and the event says how many there were.
  local calls, dropped = json.array(), nil
  local max_calls = run_limits.of(config.get().limits, agent).tool_calls
  if #reply.tool_calls > max_calls then
    dropped = #reply.tool_calls
  else
    for i, c in ipairs(reply.tool_calls) do
      calls[i] = { id = c.id, name = c.name, arguments = c.arguments }
    end
  end
  thread:append("model_call", {
    model = reply.model, latency_ms = reply.latency_ms, usage = reply.usage,
    finish_reason = reply.finish_reason, request_sha256 = reply.request_sha256,
    response_id = reply.id, text = reply.text, tool_calls = calls,
    provider = reply.provider, streamed = req.stream or nil,
    cost_usd = pricing.cost(reply.model, reply.usage),
    context = { estimate = req.context.estimate, budget = req.context.budget },
    attempts = attempts_data(reply.attempts), dropped_tool_calls = dropped,
  })
  if dropped then
    thread:append("error", { error = string.format("your reply made %d tool "
      .. "calls, and none ran: at most %d may be made in one reply "
      .. "(limits.tool_calls); make fewer at a time", dropped, max_calls) })
  end
  core.crash_point("after_model_call")
  recover.settle(thread, agent, recover.pending(thread))
end


-- `resolve(thread, agent)`, if given, returns the agent version each step
-- runs (hot reload: spool.run.runner); steps never change version midway.
function M.run(thread, agent, resolve)
  while thread:status() == "running" do
    if resolve then
      agent = resolve(thread, agent)
    end
    -- Each turn (a step, or settling calls) has an instruction budget.
    core.step_begin(run_limits.of(config.get().limits, agent).step_instructions)
    local step = agent.step or M.step
    local cancel = (task.runs[thread] or task.NO_RUN).cancel
    if cancel then
      thread:append("cancelled", { reason = cancel })
      break
    end
    local pending = recover.pending(thread)
    if #pending > 0 or pending.final_text then
      recover.settle(thread, agent, pending)
    else
      local which, why = budget.over_budget(thread, agent)
      if which then
        budget.at_limit(thread, agent.on_budget, why, which)
      elseif thread.step >= agent.max_steps then
        budget.at_limit(thread, agent.on_max_steps, string.format("max_steps (%d) "
          .. "reached without a final answer", agent.max_steps))
      else
        thread.step = thread.step + 1
        step(thread, agent)
      end
    end
    local n = thread:consecutive_errors()
    if n >= agent.max_errors and thread:status() == "running" then
      local why = string.format("%d steps in a row failed: %s", n,
        table.concat(thread:recent_errors(n), "; "))
      if agent.escalate then
        -- A person decides how to go on; the answer goes to the model.
        thread:append("human_request", { kind = "ask", escalation = true,
          question = why .. ". How should the agent go on?",
          span = trace.run_span_id(thread) })
      else
        thread:fail(why)
      end
    end
    durable.commit(thread)
  end
  durable.commit(thread)
end


return M
