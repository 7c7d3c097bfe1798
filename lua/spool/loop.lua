-- spool.loop: the default agent loop, prompt + switch + context + loop.
--
-- One step: render the context, call the model, and route what it chose
-- through the switch (the agent's tools). A step ends with its events in
-- the thread; the loop repeats until a terminal intent, a final answer,
-- max_steps, or max_errors consecutive failed steps.
--
--   loop.run(thread, agent)       drive a thread to its end
--   loop.step(thread, agent)      one default step (agents may call it)
--   loop.request(thread, agent)   the chat request the next step sends
--   loop.route(thread, agent, call)  run one intent through the switch
--
-- What the model says is data: its tool names pick from the agent's own
-- table, its arguments are decoded and checked against the tool's schema,
-- and nothing it says is ever run as code.

local json = require "spool.json"
local schema = require "spool.schema"
local llm = require "spool.llm"
local prompt = require "spool.prompt"
local context = require "spool.context"
local config = require "spool.config"

local M = {}


-- Splits "agents/x.lua:12: boom" into "boom" and "agents/x.lua:12": the
-- model gets the message, the event keeps where it came from.
local function split_error(err)
  local msg = type(err) == "string" and err or tostring(err)
  local where, rest = msg:match("^([^\n:]+:%d+): (.*)$")
  if where then
    return rest, where
  end
  return msg
end


local function template_vars(thread, agent)
  local tools = json.array()
  for _, name in ipairs(agent.tool_names) do
    local t = agent.tools[name]
    tools[#tools + 1] = { name = name, description = t.description,
                          params = json.encode(t.schema) }
  end
  local vars = { input = thread:input(), agent = agent.name, tools = tools,
                 thread = { id = thread.id, step = thread.step } }
  if agent.vars then
    for k, v in pairs(agent.vars(thread) or {}) do
      vars[k] = v
    end
  end
  return vars
end


-- The model an agent uses: the project's, with the agent's overrides.
function M.model_for(agent)
  local base = config.get().model
  if not agent.model then
    return base
  end
  local m = {}
  for k, v in pairs(base) do
    m[k] = v
  end
  for k, v in pairs(agent.model) do
    m[k] = v
  end
  return m
end


function M.request(thread, agent)
  local system
  if agent.prompt_template then
    system = prompt.render(agent.prompt_template, template_vars(thread, agent))
  end
  local messages = (agent.context or context.chat)(thread, agent)
  local tools
  if agent.mode == "tools" and #agent.tool_names > 0 then
    tools = {}
    for i, name in ipairs(agent.tool_names) do
      local t = agent.tools[name]
      tools[i] = { name = name, description = t.description,
                   parameters = t.schema }
    end
  end
  return { model = M.model_for(agent), system = system, messages = messages,
           tools = tools, json = agent.mode == "json" }
end


local function tool_error(thread, call, msg, where)
  thread:append("error", { call_id = call.id, name = call.name, error = msg,
                           where = where })
end


-- Runs a tool's handler; returns ok, result | false, message, where.
local function run_handler(tool, args, ctx)
  local ok, res, err = pcall(tool.run, args, ctx)
  if not ok then
    return false, split_error(res)
  end
  if res == nil and err ~= nil then
    return false, tostring(err)
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


-- Routes one intent { id, name, arguments (JSON text) | args (decoded) }.
function M.route(thread, agent, call)
  local tool = agent.tools[call.name]
  if not tool then
    tool_error(thread, call, string.format("unknown tool '%s'; the tools are: "
      .. "%s", tostring(call.name), table.concat(agent.tool_names, ", ")))
    return
  end
  local args = call.args
  if args == nil then
    local err
    args, err = json.decode(call.arguments or "")
    if args == nil then
      tool_error(thread, call, string.format("the arguments of '%s' are not "
        .. "valid JSON (%s)", call.name, err:gsub("^EJSON: ", "")))
      return
    end
  end
  if schema.type_of(args) ~= "object" then
    tool_error(thread, call, string.format("the arguments of '%s' must be a "
      .. "JSON object", call.name))
    return
  end
  local ok, verr = schema.check(args, tool.schema, call.name)
  if not ok then
    tool_error(thread, call, verr)
    return
  end
  thread:append("intent", { call_id = call.id, name = call.name, args = args })
  local ctx = {
    thread = thread, agent = agent, call_id = call.id,
    idempotency_key = string.format("%s:%d:%s", thread.id, thread.step,
      call.id or call.name),
  }
  if tool.terminal then
    local result = args
    if tool.result then
      result = tool.result(args)
    elseif tool.run then
      local rok, res, where = run_handler(tool, args, ctx)
      if not rok then
        tool_error(thread, call, res, where)
        return
      end
      result = res
    end
    thread:finish(result)
    return
  end
  local rok, res, where = run_handler(tool, args, ctx)
  if rok then
    thread:append("tool_result", { call_id = call.id, name = call.name,
                                   result = res })
  else
    tool_error(thread, call, res, where)
  end
end


-- A reply with no tool call: the final answer, checked against the agent's
-- output schema when it declares one.
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
  local body = text:match("^%s*```%w*%s*\n(.-)\n%s*```%s*$") or text
  local value, err = json.decode(body)
  if value == nil then
    thread:append("error", { error = "the answer must be JSON matching the "
      .. "output schema (" .. err:gsub("^EJSON: ", "") .. ")" })
    return
  end
  local ok, verr = schema.check(value, agent.output, "output")
  if not ok then
    thread:append("error", { error = verr })
    return
  end
  thread:finish(value)
end


-- In json mode the reply is {"intent": "<tool>", ...arguments}.
local function json_intent(thread, agent, text)
  local value = json.decode(text or "")
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


function M.step(thread, agent)
  local reply, err = llm.chat(M.request(thread, agent))
  if not reply then
    thread:fail((err:gsub("^EMODEL: ", "model call failed: ")))
    return
  end
  local calls = json.array()
  for i, c in ipairs(reply.tool_calls) do
    calls[i] = { id = c.id, name = c.name, arguments = c.arguments }
  end
  thread:append("model_call", {
    model = reply.model, latency_ms = reply.latency_ms, usage = reply.usage,
    finish_reason = reply.finish_reason, request_sha256 = reply.request_sha256,
    response_id = reply.id, text = reply.text, tool_calls = calls,
  })
  if agent.mode == "json" then
    json_intent(thread, agent, reply.text)
    return
  end
  if #reply.tool_calls == 0 then
    final_answer(thread, agent, reply.text)
    return
  end
  for _, call in ipairs(reply.tool_calls) do
    M.route(thread, agent, call)
    if thread:status() ~= "running" then
      return
    end
  end
end


function M.run(thread, agent)
  local step = agent.step or M.step
  while thread:status() == "running" do
    if thread.step >= agent.max_steps then
      local answer
      if agent.on_max_steps then
        answer = agent.on_max_steps(thread)
      end
      if answer ~= nil then
        thread:finish(answer)
      else
        thread:fail(string.format("max_steps (%d) reached without a final "
          .. "answer", agent.max_steps))
      end
      return
    end
    thread.step = thread.step + 1
    step(thread, agent)
    local n = thread:consecutive_errors()
    if thread:status() == "running" and n >= agent.max_errors then
      thread:fail(string.format("%d steps in a row failed: %s", n,
        table.concat(thread:recent_errors(n), "; ")))
    end
  end
end


M.split_error = split_error

return M
