-- spool.run.recover: what a step settles before it decides anything new
-- (private). The calls of the last model call not yet answered — the run
-- paused for a person, or the process died mid-step — are settled from the
-- stored events, in order, fitted to the agent version now running, so a
-- resumed thread goes on where it stopped and never runs a finished call
-- twice.

local core = require "spool.core"
local schema = require "spool.schema"
local durable = require "spool.run.durable"
local route = require "spool.run.route"

local M = {}

local NONE = {}

-- Fits a stored call to the agent's version now running: its tool may
-- have been removed, or its parameters changed, while it waited. The
-- agent's migrate hook decides, or the model is told. Returns the tool,
-- call and arguments to run, or nil (an error event says why, or the
-- migrated call waits for a person).
local function version_change(p, agent)
  local from, to = p.intent.v, agent.version
  if from and to and from ~= to then
    return string.format(" (version %s -> %s)", from, to)
  end
  return ""
end


local function removed(p, agent)
  return string.format("the tool '%s' no longer exists in this agent%s",
    tostring(p.call.name), version_change(p, agent))
end


local function fit_to_version(thread, agent, p, args)
  local call = p.call
  local tool = agent.tools[call.name]
  local problem
  if not tool then
    problem = removed(p, agent)
  else
    local ok, err = schema.check(args, tool.schema, call.name)
    if ok then
      return tool, call, args
    end
    problem = string.format("the tool '%s' changed while this call waited "
      .. "(%s)%s", call.name, err, version_change(p, agent))
  end
  local from, to = p.intent.v, agent.version
  if agent.migrate then
    local m = agent.migrate({ name = call.name, args = args, from = from,
                              to = to, problem = problem }, thread)
    if m ~= nil then
      local mtool = type(m) == "table" and agent.tools[m.name]
      local ok, err = false, "migrate must return { name = <tool>, args = "
        .. "{...} } or nil"
      if mtool then
        ok, err = schema.check(m.args, mtool.schema, m.name)
      end
      if not ok then
        route.tool_error(thread, call, problem .. "; migrate: " .. err)
        return nil
      end
      local mcall = { id = call.id, name = m.name }
      thread:append("intent", { call_id = call.id, name = m.name,
                                args = m.args, migrated_from = call.name })
      if route.needs_human(mtool, m.args) then
        -- A person approved another call: this one is asked for anew.
        route.request_human(thread, mtool, mcall, m.args)
        return nil
      end
      return mtool, mcall, m.args
    end
  end
  route.tool_error(thread, call, problem)
  return nil
end


-- Settles a call whose intent was stored but which has no result: the
-- human answered it, or the process stopped while it ran.
local function settle_stored(thread, agent, p)
  local call = p.call
  local step = p.intent.step
  local response = p.response and p.response.data
  if response and response.via then
    -- The request came from a sub-agent this tool's handler called: run
    -- the handler again, as stored; its spool.call continues that child.
    local tool = agent.tools[call.name]
    if not tool then
      route.tool_error(thread, call, removed(p, agent))
      return
    end
    route.execute(thread, agent, tool, call, p.intent.data.args, step)
    return
  end
  if response and response.kind == "event" then
    thread:append("tool_result", { call_id = call.id, name = call.name,
      result = response.data ~= nil and response.data
        or ("the event '" .. tostring(response.event) .. "' came without "
          .. "data") })
    return
  end
  if response and response.kind == "ask" then
    thread:append("tool_result", { call_id = call.id, name = call.name,
      result = response.answer ~= nil and response.answer
        or "no answer was given before the deadline" })
    return
  end
  if response and response.approved == false then
    thread:append("tool_result", { call_id = call.id, name = call.name,
      rejected = true, result = "A human rejected this call"
        .. (response.reason and (": " .. response.reason) or ".") })
    return
  end
  local tool, args
  tool, call, args = fit_to_version(thread, agent, p,
    (response and response.args) or p.intent.data.args)
  if not tool then
    return
  end
  local safe = tool.idempotent or not tool.side_effects
  local edited = response and response.args ~= nil
    and not schema.same(response.args, p.intent.data.args) and args or nil
  if response and not p.started then
    -- Approved (or answered through a sub-agent): the handler runs now,
    -- once. A durable "started" marker tells a later recovery it began.
    if not tool.terminal then
      thread:append("started", { call_id = call.id, name = call.name })
      durable.commit(thread)
      core.crash_point("after_intent")
    end
    route.execute(thread, agent, tool, call, args, step, edited)
    return
  end
  if safe and p.started and p.started.data.rerun then
    -- Run again after one interruption, and interrupted again: a call
    -- that stops the process whenever it runs must not stop every
    -- restart too.
    route.tool_error(thread, call, "this call was interrupted twice (the process "
      .. "stopped while it ran, and again when it ran once more after a "
      .. "restart), so it is not run again")
    return
  end
  if safe then
    thread:append("started", { call_id = call.id, name = call.name,
                               rerun = true })
    durable.commit(thread)
    core.crash_point("in_rerun")
    route.execute(thread, agent, tool, call, args, step)
    return
  end
  route.tool_error(thread, call, "this call was interrupted (the process stopped "
    .. "while it ran), so it may or may not have taken effect: check before "
    .. "calling it again")
end


-- The calls of the last model call that have no answer yet, in order, each
-- with how far it got: { call, intent = ev, request = ev, response = ev,
-- started = ev }.
function M.pending(thread)
  if thread:settled() then
    return {}
  end
  local start
  for i = #thread.events, 1, -1 do
    if thread.events[i].type == "model_call" then
      start = i
      break
    end
  end
  if not start then
    return {}
  end
  local events = thread.events
  local mc = events[start]
  local calls = mc.data.tool_calls or NONE
  local ncalls = #calls
  local by_id = {}
  for i = 1, ncalls do
    local c = calls[i]
    by_id[c.id] = { call = { id = c.id, name = c.name,
                             arguments = c.arguments } }
  end
  local any_after = false
  for i = start + 1, #events do
    local ev = events[i]
    local p = ev.data.call_id and by_id[ev.data.call_id]
    if p then
      if ev.type == "intent" then
        p.intent = ev
        if ev.data.migrated_from then
          -- A new call under the old id: what the old one got is spent.
          p.call = { id = p.call.id, name = ev.data.name }
          p.request, p.response, p.started = nil, nil, nil
        end
      elseif ev.type == "human_request" then
        p.request = ev
      elseif ev.type == "human_response" then
        p.response = ev
      elseif ev.type == "started" then
        p.started = ev
      elseif ev.type == "tool_result" or ev.type == "error" then
        p.answered = true
      end
    end
    if ev.type ~= "human_response" then
      any_after = true
    end
  end
  local out = {}
  for i = 1, ncalls do
    local p = by_id[calls[i].id]
    if not p.answered then
      out[#out + 1] = p
    end
  end
  -- A reply with no tool calls that was never routed (the process stopped
  -- right after the model answered) is routed on resume.
  if ncalls == 0 and not any_after then
    out.final_text = mc.data.text or ""
  end
  out.cut_off = mc.data.finish_reason == "length" or nil
  return out
end


-- A reply cut off by its length limit: none of its calls runs (the last
-- one's arguments are cut, and the model may have meant more), and its
-- text is no answer. The model is told, so it can say less.
local CUT_OFF = "your reply was cut off at its length limit (max_tokens) "
  .. "before it was complete"


-- Settles pending calls in order; stops at the first that waits.
function M.settle(thread, agent, pending)
  if pending.final_text and pending.cut_off then
    thread:append("error", { error = CUT_OFF .. ", so it is not taken as "
      .. "your answer: answer again, more briefly" })
    return
  end
  if pending.final_text then
    if agent.mode == "json" then
      route.json_intent(thread, agent, pending.final_text)
    else
      route.final_answer(thread, agent, pending.final_text)
    end
    return
  end
  for _, p in ipairs(pending) do
    if p.request and not p.response then
      return -- still waiting for the human
    end
    if p.intent then
      settle_stored(thread, agent, p)
    elseif pending.cut_off then
      route.tool_error(thread, p.call, CUT_OFF .. ", so this call did not run: "
        .. "make it again (fewer or shorter calls at a time)")
    else
      route.route(thread, agent, p.call)
    end
    if thread:status() ~= "running" then
      return
    end
  end
end


return M
