-- spool.run.route: the switch (private; spool.loop re-exports route).
-- What the model chose becomes an intent routed to one of the agent's own
-- tools: its arguments decoded and checked against the tool's schema, a
-- person asked first where the tool says so, the handler run within the
-- step's budget, and its result or error recorded for the model. A final
-- answer is checked against the agent's output schema.

local core = require "spool.core"
local json = require "spool.json"
local schema = require "spool.schema"
local extract = require "spool.extract"
local task = require "spool.base.task"
local durable = require "spool.run.durable"
local trace = require "spool.run.trace"
local version = require "spool.run.version"

local M = {}

local function tool_error(thread, call, msg, where)
  thread:append("error", { call_id = call.id, name = call.name, error = msg,
                           where = where })
end


-- A replay answers calls from its recording, and runs no handler
-- (spool.cli.evaluate): the same call (name and arguments) gets what the
-- recording's got, in order; a call the recording never made gets an
-- error saying so.
local function recorded_outcome(recorded, tool, args)
  local list = recorded[tool.name .. "\0" .. json.encode(args)]
  local o = list and table.remove(list, 1)
  if not o then
    return false, string.format("replay: the recording has no call to '%s' "
      .. "with these arguments, and replays run no handler", tool.name)
  end
  if o.ok then
    return true, o.result
  end
  return false, o.error
end


-- Runs a tool's handler; returns ok, result | false, message, where. A
-- handler that passes the step's instruction budget, or the run's memory
-- budget, fails (the model is told); one that passes the run's
-- instruction budget ends the run.
local function run_handler(tool, args, ctx)
  local eval = (task.runs[ctx.thread] or task.NO_RUN).eval
  local replay = eval and eval.recorded_tools
  if replay then
    return recorded_outcome(replay, tool, args)
  end
  if core.step_spent() then
    return false, "not run: this step's instruction budget is spent "
      .. "(limits.step_instructions); call it again"
  end
  task.set_call(ctx.call_id)
  local ok, res, err = pcall(tool.run, args, ctx)
  task.set_call(nil)
  if not ok then
    if res == durable.PAUSED or (type(res) == "table" and res.store_error) then
      error(res, 0) -- a pause or a store failure ends the step, not the tool
    end
    local limit, kind = core.limit_error(res)
    if kind == "run" then
      error(res, 0)
    elseif limit then
      return false, (limit:gsub("^ELIMIT: ", ""))
    end
    return false, durable.split_error(res)
  end
  if res == nil and err ~= nil then
    return false, durable.error_text(err)
  end
  if res == nil then
    res = json.null
  end
  local encodable, eerr = pcall(json.encode, res)
  if not encodable then
    return false, string.format("tool '%s' returned a value JSON cannot hold "
      .. "(%s)", tool.name, eerr:gsub("^spool.json.encode: ", ""))
  end
  return true, res
end


-- run_handler inside the span of the tool's execution (spool.run.trace),
-- which is the current span meanwhile: the handler's own requests, model
-- calls and sub-agents are its children.
local TOOL = trace.schema { "gen_ai.operation.name", "gen_ai.tool.name",
  "gen_ai.tool.type", "gen_ai.tool.call.id", "gen_ai.conversation.id",
  "error.type", "gen_ai.tool.call.arguments", "gen_ai.tool.call.result" }
local span_names = setmetatable({}, { __mode = "k" }) -- tool -> its span's

local function run_traced(tool, args, ctx)
  local name = span_names[tool]
  if not name then
    name = "execute_tool " .. tool.name
    span_names[tool] = name
  end
  local span = trace.start(name, trace.INTERNAL)
  if not span then
    return run_handler(tool, args, ctx)
  end
  local outer = task.set_span(span)
  local raised, ok, res, where = pcall(run_handler, tool, args, ctx)
  task.set_span(outer)
  local err, err_type
  if not raised then -- a pause, a store failure, the run's budget
    err = ok ~= durable.PAUSED and (type(ok) == "table" and ok.store_error
      or tostring(ok)) or nil
    err_type = "run_stopped"
  elseif not ok then
    err, err_type = res, "tool_error"
  end
  trace.finish(span, err, TOOL, "execute_tool", tool.name, "function",
    ctx.call_id, ctx.thread.id, err and err_type,
    trace.content and trace.text(args) or nil,
    trace.content and raised and ok and trace.text(res) or nil)
  if not raised then
    error(ok, 0)
  end
  return ok, res, where
end


local function handler_ctx(thread, agent, call, step)
  return {
    thread = thread, agent = agent, call_id = call.id,
    idempotency_key = string.format("%s:%d:%s", thread.id, step,
      call.id or call.name),
  }
end


-- Runs an approved (or unapproved) call's handler and records its result.
local function execute(thread, agent, tool, call, args, step, edited)
  local ctx = handler_ctx(thread, agent, call, step)
  if tool.terminal then
    local result = args
    if tool.result then
      result = tool.result(args)
    elseif tool.run then
      local ok, res, where = run_traced(tool, args, ctx)
      if not ok then
        tool_error(thread, call, res, where)
        return
      end
      result = res
    end
    thread:finish(result)
    return
  end
  local ok, res, where = run_traced(tool, args, ctx)
  if ok then
    -- A person who changed the arguments is named beside the result: the
    -- model would otherwise read it as its own call's.
    thread:append("tool_result", { call_id = call.id, name = call.name,
                                   result = res, edited_args = edited })
  else
    tool_error(thread, call, res, where)
    thread.events[#thread.events].data.edited_args = edited
  end
  core.crash_point("after_tool")
end


-- Does value fit schema s, an agent version's (a tool's parameters, its
-- output)? Each schema is compiled the first time (spool.schema.compile)
-- and kept with the version: a step checks through closures instead of
-- reading every keyword of the schema again.
local function fits(agent, s, value)
  local record = version.of[agent]
  local compiled = record.checks
  if not compiled then
    compiled = setmetatable({}, { __mode = "k" })
    record.checks = compiled
  end
  local c = compiled[s]
  if c == nil then
    c = schema.compile(s) or false
    compiled[s] = c
  end
  if c then
    return c(value)
  end
  return schema.check(value, s) == true
end


-- Reads a model's text as JSON: leniently (spool.extract, repairs noted,
-- coerced to the schema) unless the agent says lenient = false.
-- Returns value, repairs | nil, message for the model.
local function read_json(agent, text, want, name)
  if agent.lenient == false then
    local v, err = json.decode(text)
    if v == nil then
      return nil, string.format("%s is not valid JSON (%s)", name,
        err:gsub("^EJSON: ", ""))
    end
    return v
  end
  -- Most replies are valid JSON that fits: the strict decoder (in C) reads
  -- them far faster than the extractor, which is for the rest.
  local v = json.decode(text)
  if type(v) == "table" and (want == nil or fits(agent, want, v)) then
    return v
  end
  local info
  v, info = extract.extract(text, { schema = want, name = name })
  if v == nil then
    if info:match("^ESCHEMA: ") then
      return nil, (info:gsub("^ESCHEMA: ", ""))
    end
    return nil, string.format("%s is not valid JSON (%s)", name,
      info:gsub("^EJSON: ", ""))
  end
  if info.truncated then
    -- What was cut off is not what the model meant: a tool never runs on
    -- arguments, nor does an answer count, that the model did not finish.
    return nil, string.format("%s is not valid JSON (it ends before it is "
      .. "complete, as if cut off)", name)
  end
  return v, info.repaired and info.repairs or nil
end


-- Does this call wait first: for a person (an approval, an answer) or an
-- outside event?
local function needs_human(tool, args)
  return tool.human ~= nil or (tool.approve ~= nil
    and (tool.approve.when == nil or tool.approve.when(args)))
end


local function request_human(thread, tool, call, args)
  local req = { call_id = call.id, name = call.name }
  if tool.human == "ask" then
    req.kind, req.question = "ask", args.question
  elseif tool.human == "event" then
    req.kind, req.event = "event", tool.event
  else
    req.kind, req.args = "approval", args
  end
  local deadline = tool.approve and tool.approve.deadline_ms
  if deadline then
    req.deadline = core.time() + deadline
  end
  req.span = trace.run_span_id(thread)
  thread:append("human_request", req)
end


-- Routes one new intent { id, name, arguments (JSON text) | args }.
function M.route(thread, agent, call)
  local tool = agent.tools[call.name]
  if not tool then
    tool_error(thread, call, string.format("unknown tool '%s'; the tools are: "
      .. "%s", tostring(call.name), table.concat(agent.tool_names, ", ")))
    return
  end
  local args, repairs = call.args, nil
  -- A lenient read has checked the arguments against the schema already.
  local checked = false
  if args == nil then
    local text = call.arguments or ""
    if text:match("^%s*$") then
      text = "{}" -- some servers send "" for a call with no arguments
    end
    args, repairs = read_json(agent, text, tool.schema, call.name)
    if args == nil then
      tool_error(thread, call, (repairs:gsub("^" .. call.name
        .. " is not valid JSON", "the arguments of '" .. call.name
        .. "' are not valid JSON")))
      return
    end
    checked = agent.lenient ~= false
  end
  if schema.type_of(args) ~= "object" then
    tool_error(thread, call, string.format("the arguments of '%s' must be a "
      .. "JSON object", call.name))
    return
  end
  local ok, verr = checked or fits(agent, tool.schema, args), nil
  if not ok then
    ok, verr = schema.check(args, tool.schema, call.name)
  end
  if not ok then
    tool_error(thread, call, verr)
    return
  end
  thread:append("intent", { call_id = call.id, name = call.name, args = args,
                            repairs = repairs })
  if needs_human(tool, args) then
    request_human(thread, tool, call, args)
    return
  end
  if tool.side_effects and not tool.terminal then
    durable.commit(thread) -- the intent is stored before anything happens
    core.crash_point("after_intent")
  end
  execute(thread, agent, tool, call, args, thread.step)
end


local function final_answer(thread, agent, text)
  if text == nil or text:match("^%s*$") then
    thread:append("error", { error = "the reply was empty: answer, or call "
      .. "one of the tools" })
    return
  end
  if not agent.output then
    thread:finish(text)
    return
  end
  local value, repairs = read_json(agent, text, agent.output, "output")
  if value == nil then
    thread:append("error", { error = repairs:gsub("^output is not valid JSON",
      "the answer must be JSON matching the output schema") })
    return
  end
  local ok, verr = fits(agent, agent.output, value), nil
  if not ok then
    ok, verr = schema.check(value, agent.output, "output")
  end
  if not ok then
    thread:append("error", { error = verr })
    return
  end
  local ev = thread:finish(value)
  ev.data.repairs = repairs
end


-- In json mode the reply is {"intent": "<tool>", ...arguments}.
local function json_intent(thread, agent, text)
  local value = read_json(agent, text or "", nil, "the reply")
  if type(value) ~= "table" or type(value.intent) ~= "string" then
    thread:append("error", { error = "the reply must be one JSON object with "
      .. "an \"intent\" field naming one of: "
      .. table.concat(agent.tool_names, ", ") })
    return
  end
  local args = {}
  for k, v in pairs(value) do
    if k ~= "intent" then
      args[k] = v
    end
  end
  M.route(thread, agent, { name = value.intent, args = args })
end


M.tool_error = tool_error
M.execute = execute
M.needs_human = needs_human
M.request_human = request_human
M.final_answer = final_answer
M.json_intent = json_intent


return M
