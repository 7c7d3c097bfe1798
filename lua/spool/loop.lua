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
--   loop.request(thread, agent)   the chat request the next step sends
--   loop.route(thread, agent, call)  run one intent through the switch
--
-- Durability: the loop commits at every step boundary, and before a tool
-- with side effects runs (so its intent is stored first; a tool declared
-- side_effects = false skips that commit). What the model says is data:
-- its tool names pick from the agent's own table, its arguments are
-- decoded and checked against the tool's schema, and nothing it says is
-- ever run as code.

local core = require "spool.core"
local json = require "spool.json"
local schema = require "spool.schema"
local llm = require "spool.llm"
local prompt = require "spool.prompt"
local context = require "spool.context"
local window = require "spool.run.window"
local config = require "spool.base.config"
local pricing = require "spool.model.pricing"
local tokens = require "spool.tokens"
local extract = require "spool.extract"
local sandbox = require "spool.run.sandbox"
local run_limits = require "spool.run.limits"
local task = require "spool.base.task"
local version = require "spool.run.version"

-- The run record of a thread no runner drives (spool.base.task): empty.
local NO_RUN = setmetatable({}, { __newindex = function() end })

local M = {}

-- Raised (as an error value) to unwind a run whose thread now waits on a
-- sub-agent that waits for a human; the runner treats it as a pause.
M.PAUSED = sandbox.freeze(setmetatable({},
  { __tostring = function() return "paused" end }))


-- Splits "agents/x.lua:12: boom" into "boom" and "agents/x.lua:12": the
-- model gets the message, the event keeps where it came from.
-- An error value as text: a table the handler raised (or returned as its
-- error) is encoded as JSON, the model reads it whole, not "table: 0x...".
local function error_text(err)
  if type(err) == "table" and not (getmetatable(err) or {}).__tostring then
    local ok, text = pcall(json.encode, err)
    return ok and text or "(an error table JSON cannot hold)"
  end
  return type(err) == "string" and err or tostring(err)
end


local function split_error(err)
  local msg = error_text(err)
  local where, rest = msg:match("^([^\n:]+:%d+): (.*)$")
  if where then
    return rest, where
  end
  return msg
end


-- Raises a store failure: it ends the run, and the runner halts the
-- thread at its last durable step.
function M.store_failed(err)
  error(setmetatable({ store_error = err }, {
    __tostring = function(e) return e.store_error end }), 0)
end


-- A compare-and-set that lost at the commit (another run wrote the same
-- document since): the calls that wrote it fail instead — their results
-- become errors the model reads, their writes are dropped — and the rest
-- of the step is committed. Returns what the last commit did.
local function commit_after_conflicts(thread, err)
  for _ = 1, #thread.writes + 1 do
    local key = err:match("^ECONFLICT: state (.-) is at version")
      or err:match("^EACCES: state (.-) is the engine's own")
    if err:match("^EACCES: state write that is not") then
      -- Agent code pushed something else to the thread's writes.
      local keep = {}
      for _, w in ipairs(thread.writes) do
        if type(w) == "table" and type(w.ns) == "string"
            and type(w.key) == "string" then
          keep[#keep + 1] = w
        end
      end
      thread.writes, key = keep, "?"
    end
    if not key then
      return nil, err
    end
    local calls, stray, keep = {}, false, {}
    for _, w in ipairs(thread.writes) do
      if w.ns .. "/" .. w.key == key then
        if w.call_id then
          calls[w.call_id] = true
        else
          stray = true
        end
      end
    end
    for _, w in ipairs(thread.writes) do
      if not (w.call_id and calls[w.call_id])
          and not (stray and not w.call_id) then
        keep[#keep + 1] = w
      end
    end
    thread.writes = keep
    local why = err:match("^ECONFLICT") and ("nothing it wrote was "
      .. "stored: the state " .. err:gsub("^ECONFLICT: state ", "")
      .. " (another run changed it since it was read); read it again and "
      .. "retry") or ("nothing it wrote was stored: " .. err:gsub("^%u+: ",
      ""))
    local intent -- the call a terminal "done" event ends
    for i = thread.persisted + 1, #thread.events do
      local ev = thread.events[i]
      if ev.type == "intent" then
        intent = ev.data
      end
      local id = ev.data.call_id or (ev.type == "done" and intent
        and intent.call_id)
      if id and calls[id] and (ev.type == "tool_result"
          or ev.type == "error" or ev.type == "done") then
        thread:replace(i, "error", { call_id = id, name = ev.data.name
          or intent.name, error = "this call failed: " .. why })
      end
    end
    if stray then
      thread:append("error", { error = "this step's state write failed: "
        .. why })
    end
    local ok
    ok, err = thread:commit()
    if ok then
      return true
    end
  end
  return nil, err
end


-- Commits the thread or raises, ending the run: a step that cannot be
-- stored must not be followed by another.
function M.commit(thread)
  local ok, err = thread:commit()
  if not ok and (err:match("^ECONFLICT: state ")
      or err:match("^EACCES: state ")) then
    ok, err = commit_after_conflicts(thread, err)
  end
  if not ok then
    M.store_failed(err)
  end
end


-- What an agent version says of its tools, in the two forms a step needs
-- (the prompt's, and the request's with its size in bytes): made once per
-- version, as the version never changes.
local function tool_lists(agent)
  local record = version.of(agent)
  local lists = record.tools
  if lists then
    return lists
  end
  lists = { prompt = json.array(), request = nil, request_bytes = 0 }
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
  record.tools = lists
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
  local record = version.of(agent)
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
-- tokens of the whole request), budget, plan }.
function M.request(thread, agent, opts)
  opts = opts or {}
  -- An agent's context function gets messages it may change: not the
  -- ones kept for later steps.
  local memo = opts.memo and not agent.context and window.memo(thread) or nil
  local system
  if agent.prompt_template then
    system = prompt.render(agent.prompt_template, template_vars(thread, agent))
  end
  local lists = tool_lists(agent)
  local tools = lists.request
  local model = M.model_for(agent)
  local factor = tokens.factor(opts.events or thread.events)
  local fixed = tokens.estimate(system, factor)
    + math.ceil(lists.request_bytes / 4 * factor)
  local messages, plan = (agent.context or context.chat)(thread, agent, nil,
    { fixed_tokens = fixed, model = model, dry = opts.dry,
      events = opts.events, memo = memo })
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
           tools = tools, json = agent.mode == "json", memo = memo,
           fresh = memo and plan.fresh,
           context = { estimate = estimate,
                       budget = plan and plan.limit or nil, plan = plan } }
end


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
  local eval = (task.run_of(ctx.thread) or NO_RUN).eval
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
    if res == M.PAUSED or (type(res) == "table" and res.store_error) then
      error(res, 0) -- a pause or a store failure ends the step, not the tool
    end
    local limit, kind = core.limit_error(res)
    if kind == "run" then
      error(res, 0)
    elseif limit then
      return false, (limit:gsub("^ELIMIT: ", ""))
    end
    return false, split_error(res)
  end
  if res == nil and err ~= nil then
    return false, error_text(err)
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
      local ok, res, where = run_handler(tool, args, ctx)
      if not ok then
        tool_error(thread, call, res, where)
        return
      end
      result = res
    end
    thread:finish(result)
    return
  end
  local ok, res, where = run_handler(tool, args, ctx)
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
  if type(v) == "table" and (want == nil or schema.check(v, want)) then
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
  local ok, verr = checked, nil
  if not checked then
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
    M.commit(thread) -- the intent is stored before anything happens
    core.crash_point("after_intent")
  end
  execute(thread, agent, tool, call, args, thread.step)
end


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
        tool_error(thread, call, problem .. "; migrate: " .. err)
        return nil
      end
      local mcall = { id = call.id, name = m.name }
      thread:append("intent", { call_id = call.id, name = m.name,
                                args = m.args, migrated_from = call.name })
      if needs_human(mtool, m.args) then
        -- A person approved another call: this one is asked for anew.
        request_human(thread, mtool, mcall, m.args)
        return nil
      end
      return mtool, mcall, m.args
    end
  end
  tool_error(thread, call, problem)
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
      tool_error(thread, call, removed(p, agent))
      return
    end
    execute(thread, agent, tool, call, p.intent.data.args, step)
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
      M.commit(thread)
      core.crash_point("after_intent")
    end
    execute(thread, agent, tool, call, args, step, edited)
    return
  end
  if safe and p.started and p.started.data.rerun then
    -- Run again after one interruption, and interrupted again: a call
    -- that stops the process whenever it runs must not stop every
    -- restart too.
    tool_error(thread, call, "this call was interrupted twice (the process "
      .. "stopped while it ran, and again when it ran once more after a "
      .. "restart), so it is not run again")
    return
  end
  if safe then
    thread:append("started", { call_id = call.id, name = call.name,
                               rerun = true })
    M.commit(thread)
    core.crash_point("in_rerun")
    execute(thread, agent, tool, call, args, step)
    return
  end
  tool_error(thread, call, "this call was interrupted (the process stopped "
    .. "while it ran), so it may or may not have taken effect: check before "
    .. "calling it again")
end


-- The calls of the last model call that have no answer yet, in order, each
-- with how far it got: { call, intent = ev, request = ev, response = ev,
-- started = ev }.
function M.pending(thread)
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
  local calls = {}
  local mc = thread.events[start]
  for _, c in ipairs(mc.data.tool_calls or {}) do
    calls[#calls + 1] = { id = c.id, name = c.name, arguments = c.arguments }
  end
  local by_id = {}
  for _, c in ipairs(calls) do
    by_id[c.id] = { call = c }
  end
  local any_after = false
  for i = start + 1, #thread.events do
    local ev = thread.events[i]
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
  for _, c in ipairs(calls) do
    local p = by_id[c.id]
    if not p.answered then
      out[#out + 1] = p
    end
  end
  -- A reply with no tool calls that was never routed (the process stopped
  -- right after the model answered) is routed on resume.
  if #calls == 0 and not any_after then
    out.final_text = mc.data.text or ""
  end
  out.cut_off = mc.data.finish_reason == "length" or nil
  return out
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
  local ok, verr = schema.check(value, agent.output, "output")
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
      json_intent(thread, agent, pending.final_text)
    else
      final_answer(thread, agent, pending.final_text)
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
      tool_error(thread, p.call, CUT_OFF .. ", so this call did not run: "
        .. "make it again (fewer or shorter calls at a time)")
    else
      M.route(thread, agent, p.call)
    end
    if thread:status() ~= "running" then
      return
    end
  end
end


-- Each piece of a streamed reply goes to the host as a "delta" event
-- (not stored: the model_call event holds the whole reply).
local function delta_emitter(thread)
  return function(piece)
    core.emit(thread.id, thread.agent, "delta", 0, thread.depth or 0,
      json.encode({ thread = thread.id, agent = thread.agent, type = "delta",
                    text = piece }), piece)
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
  local req = M.request(thread, agent, { memo = true })
  if req.stream == nil then
    req.stream = agent.stream
    if req.stream == nil then
      req.stream = config.get().stream
    end
  end
  if req.stream and core.listening() then
    req.on_text = delta_emitter(thread)
    req.on_reset = function()
      core.emit(thread.id, thread.agent, "delta_reset", 0, thread.depth or 0,
        json.encode({ thread = thread.id, agent = thread.agent,
                      type = "delta_reset" }),
        "↺ the reply broke off; again, from the start:")
    end
  end
  req.deadline = req.deadline or M.deadline(thread, agent)
  req.thread = thread
  -- The plan (its units, the size of every message) is for spool prompt:
  -- not kept alive while the call is out, with thousands of runs waiting.
  req.context.plan = nil
  -- While the call is out, cancelling the thread interrupts it.
  local run = task.run_of(thread) or NO_RUN
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
  M.settle(thread, agent, M.pending(thread))
end


-- A thread's limits: the agent's budget, and the cap its parent passed
-- down (spool.run.runner), whichever is tighter; math.huge where none.
local LIMITS = { "steps", "tokens", "cost_usd", "wall_ms" }

local NO_LIMITS = {}
local huge, min = math.huge, math.min

local function limits(thread, agent)
  local budget = agent and agent.budget or NO_LIMITS
  local cap = (task.run_of(thread) or NO_RUN).budget_cap or NO_LIMITS
  return {
    steps = min(budget.steps or huge, cap.steps or huge),
    tokens = min(budget.tokens or huge, cap.tokens or huge),
    cost_usd = min(budget.cost_usd or huge, cap.cost_usd or huge),
    wall_ms = min(budget.wall_ms or huge, cap.wall_ms or huge),
  }
end


-- When the thread started, ms since the epoch.
local function started_at(thread)
  local first = thread.events[1]
  return first and first.at or core.time()
end


-- The thread's wall-clock deadline (ms since the epoch), or nil.
function M.deadline(thread, agent)
  local wall = limits(thread, agent).wall_ms
  if wall ~= math.huge then
    return started_at(thread) + wall
  end
end


-- Over budget? Returns which limit and a message saying so, or nil.
local function over_budget(thread, agent)
  local lim = limits(thread, agent)
  local u = thread:usage()
  local used = u.input_tokens + u.output_tokens
  if used >= lim.tokens then
    return "tokens", string.format("the token budget (%d) is spent: %d used",
      lim.tokens, used)
  end
  if u.steps >= lim.steps then
    return "steps", string.format("the step budget (%d) is spent", lim.steps)
  end
  if u.cost_usd >= lim.cost_usd then
    return "cost_usd", string.format("the cost budget ($%.4f) is spent: "
      .. "$%.4f used", lim.cost_usd, u.cost_usd)
  end
  local elapsed = core.time() - started_at(thread)
  if elapsed >= lim.wall_ms then
    return "wall_ms", string.format("the time budget (%d ms) is spent: %d ms "
      .. "since the thread started", lim.wall_ms, elapsed)
  end
end


-- What is left of a thread's budget, for a sub-agent it starts.
function M.remaining_budget(thread, agent)
  local lim = limits(thread, agent)
  local u = thread:usage()
  local used = { tokens = u.input_tokens + u.output_tokens, steps = u.steps,
                 cost_usd = u.cost_usd,
                 wall_ms = core.time() - started_at(thread) }
  local out = {}
  for _, k in ipairs(LIMITS) do
    if lim[k] ~= math.huge then
      out[k] = math.max(0, lim[k] - used[k])
    end
  end
  return next(out) and out or nil
end


-- Ends a thread at a limit: the agent's hook may give a final answer.
local function at_limit(thread, hook, message, ...)
  local answer
  if hook then
    answer = hook(thread, ...)
  end
  if answer ~= nil then
    thread:finish(answer)
  else
    thread:fail(message)
  end
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
    local cancel = (task.run_of(thread) or NO_RUN).cancel
    if cancel then
      thread:append("cancelled", { reason = cancel })
      break
    end
    local pending = M.pending(thread)
    if #pending > 0 or pending.final_text then
      M.settle(thread, agent, pending)
    else
      local which, why = over_budget(thread, agent)
      if which then
        at_limit(thread, agent.on_budget, why, which)
      elseif thread.step >= agent.max_steps then
        at_limit(thread, agent.on_max_steps, string.format("max_steps (%d) "
          .. "reached without a final answer", agent.max_steps))
      else
        thread.step = thread.step + 1
        step(thread, agent)
      end
    end
    local n = thread:consecutive_errors()
    if thread:status() == "running" and n >= agent.max_errors then
      local why = string.format("%d steps in a row failed: %s", n,
        table.concat(thread:recent_errors(n), "; "))
      if agent.escalate then
        -- A person decides how to go on; the answer goes to the model.
        thread:append("human_request", { kind = "ask", escalation = true,
          question = why .. ". How should the agent go on?" })
      else
        thread:fail(why)
      end
    end
    M.commit(thread)
  end
  M.commit(thread)
end


M.split_error = split_error

return M
