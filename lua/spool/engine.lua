-- spool.engine: the entry points the C engine calls (private). Each
-- returns its result, or nil and "ECODE: message" for a failure the caller
-- should report (ENOTFOUND, EINVAL, EAGENT, ESTATE, ECONFLICT, EIO).
--
-- Functions marked (task) use the store and run inside a task the engine
-- spawns and waits for; the others run directly under lua_pcall and never
-- yield.

local core = require "spool.core"
local json = require "spool.json"
local config = require "spool.base.config"
local loader = require "spool.run.loader"
local watcher = require "spool.run.watch"
local runner = require "spool.run.runner"
local store = require "spool.run.store"
local request = require "spool.run.request"
local thread_mod = require "spool.run.thread"
local format = require "spool.run.format"
local human = require "spool.human"
local extract = require "spool.extract"
local llm = require "spool.llm"
local mock = require "spool.mock"
-- Loaded with the engine, though nothing here calls them: the public
-- library, so a broken install fails at open; the webhooks and channels,
-- which follow every thread's ends and waits (spool.run.hub).
require "spool"
require "spool.serve.webhooks"
require "spool.serve.channels"

local M = {}


function M.open(opts)
  local ok, err = config.init(opts)
  if not ok then
    return false, err
  end
  ok, err = store.open(config.get().store)
  store.lease_ms = config.get().lease_ms or store.default_lease_ms
  if not ok then
    return false, err
  end
  if opts.watch == "on" then
    ok, err = watcher.watch()
    if not ok then
      return false, err
    end
  end
  return true
end


-- The control API (spool.serve), loaded when a process serves: every
-- other command would load the service for nothing (see spec/house_spec).
-- (task)
function M.serve_start(opts)
  return require("spool.serve").start(opts)
end


function M.serve_stop(drain_ms) -- (task)
  return require("spool.serve").stop(drain_ms)
end


-- Re-reads the project's agents; see spool.run.loader.reload. (task)
function M.reload()
  return json.encode(loader.reload())
end


function M.start_thread(agent_name, input)
  local agent, err = loader.load(agent_name)
  if not agent then
    return nil, err
  end
  -- A process started inside a trace names it in $TRACEPARENT (the
  -- OpenTelemetry convention for context passed in the environment).
  return runner.start(agent, input, nil, nil, nil,
    core.getenv("TRACEPARENT")).id
end


function M.thread_status(id) -- (task)
  local t, err = runner.get(id)
  if not t then
    return nil, err
  end
  if t.halted then
    return "failed"
  end
  return t:status()
end


function M.thread_result(id) -- (task)
  local t, err = runner.get(id)
  if not t then
    return nil, err
  end
  if t.halted then
    return json.encode({ error = "the run stopped: " .. t.halted })
  end
  local status = t:status()
  if status == "running" or status == "waiting" then
    local req = t:pending_request()
    if not req then
      return nil, "ESTATE: thread " .. id .. " is still running"
    end
    return nil, string.format("ESTATE: thread %s waits for %s", id,
      human.describe(req.data))
  end
  local result, failure = t:outcome()
  if status == "done" then
    return json.encode(result == nil and json.null or result)
  end
  return json.encode({ error = failure or status })
end


-- What a waiting thread waits for: "kind\0name\0text" (kind: ask,
-- approval or event; name: the tool or the event, or empty). (task)
function M.thread_request(id)
  local t, err = runner.get(id)
  if not t then
    return nil, err
  end
  local req = not t.halted and t:status() == "waiting" and t:pending_request()
  if not req then
    return nil, "ESTATE: thread " .. id .. " is not waiting"
  end
  local d = req.data
  local name = d.kind == "approval" and d.name or d.kind == "event" and d.event
  return table.concat({ d.kind, tostring(name or ""), human.describe(d) },
    "\0")
end


-- { thread = row, events = {...} } as JSON. (task)
function M.thread_json(id)
  local t, err = runner.get(id)
  if not t then
    return nil, err
  end
  local record = store.load(id)
  local row = record and record.thread or { id = id, agent = t.agent }
  row.status = t:status()
  return json.encode({ thread = row, events = json.array(t.events) })
end


-- Threads as JSON, or as a text table (a line each) with { text = true }.
function M.list(filter) -- (task)
  filter.limit = filter.limit ~= 0 and filter.limit or 100
  local rows, err = store.list(filter)
  if not rows then
    return nil, err
  end
  if filter.text then
    local lines = {}
    for i, row in ipairs(rows) do
      lines[i] = format.thread_row(row)
    end
    return table.concat(lines, "\n") .. (#lines > 0 and "\n" or "")
  end
  return json.encode(json.array(rows))
end


-- The thread's events as readable lines, sub-agents' threads indented
-- under the agent_call that started them: what `spool run` printed.
function M.thread_text(id) -- (task)
  local lines = {}
  local function add(thread, indent)
    local v
    for _, ev in ipairs(thread.events) do
      if v and ev.v and ev.v ~= v then
        lines[#lines + 1] = string.format("%s     -- agent %s: version %s -> "
          .. "%s --", string.rep("  ", indent), thread.agent, v, ev.v)
      end
      v = ev.v or v
      local text = format.event(thread, ev)
      lines[#lines + 1] = string.rep("  ", indent)
        .. string.format("%3d  ", ev.seq) .. text:gsub("\n", "\n"
          .. string.rep("  ", indent) .. "     ")
      if ev.type == "agent_call" then
        local child = runner.load(ev.data.thread, indent + 1)
        if child then
          add(child, indent + 1)
        end
      end
    end
  end
  local t, err = runner.load(id)
  if not t then
    return nil, err
  end
  lines[1] = string.format("thread %s  agent %s  status %s", t.id, t.agent,
    t:status())
  add(t, 0)
  local u = t:usage()
  lines[#lines + 1] = string.format("usage: %d steps · %d→%d tokens · $%.6f",
    u.steps, u.input_tokens, u.output_tokens, u.cost_usd)
  return table.concat(lines, "\n") .. "\n"
end


-- r = { kind = "answer" | "approve" | "reject" | "event", text, args_json,
-- by, channel }, or an empty table to continue an interrupted thread.
function M.resume(id, r) -- (task)
  local response = { by = r.by or "api", channel = r.channel }
  if r.kind == "answer" then
    response.answer = r.text
  elseif r.kind == "approve" then
    response.approve = true
    if r.args_json then
      local args, jerr = json.decode(r.args_json)
      if type(args) ~= "table" then
        return nil, "EINVAL: the edited arguments are not a JSON object"
          .. (jerr and (" (" .. jerr:gsub("^EJSON: ", "") .. ")") or "")
      end
      response.args = args
    end
  elseif r.kind == "reject" then
    response.reject = true
    response.reason = r.text
  elseif r.kind == "event" then
    response.event = r.text
    if r.args_json then
      local data, jerr = json.decode(r.args_json)
      if data == nil then
        return nil, "EINVAL: the event's data is not JSON (" .. jerr:gsub(
          "^EJSON: ", "") .. ")"
      end
      response.data = data
    end
  else
    response = nil
  end
  -- This process now runs threads: due deadlines fire, and a run a late
  -- answer's deadline started ends before the process may.
  local t, err = runner.respond(id, response, true)
  if not t then
    return nil, err
  end
  return t.id
end


function M.cancel(id) -- (task)
  local ok, err = runner.cancel(id, "cancelled by a user")
  if not ok then
    return nil, err
  end
  return "cancelled"
end


function M.fork(id, at) -- (task)
  local t, err = runner.fork(id, math.tointeger(tonumber(at)))
  if not t then
    return nil, err
  end
  return t.id
end


function M.delete(id) -- (task)
  if runner.find(id) and runner.find(id):status() == "running" then
    return nil, "ECONFLICT: thread " .. id .. " is running in this process"
  end
  local ok, err = store.delete(id)
  if not ok then
    return nil, err
  end
  return "deleted"
end


-- The thread's events as JSON lines, the format of `spool run --json`.
function M.export(id) -- (task)
  local t, err = runner.load(id)
  if not t then
    return nil, err
  end
  local lines = {}
  for i, ev in ipairs(t.events) do
    lines[i] = json.encode({ thread = t.id, agent = t.agent,
      parent = t.parent, seq = ev.seq, step = ev.step, type = ev.type,
      data = ev.data, at = ev.at, v = ev.v })
  end
  return table.concat(lines, "\n") .. (#lines > 0 and "\n" or "")
end


function M.recover() -- (task)
  return json.encode(runner.recover())
end


function M.state_export(ns) -- (task)
  local lines, after = {}, ""
  repeat
    local items, err = store.state_list(ns, after, 1000)
    if not items then
      return nil, err
    end
    for _, item in ipairs(items) do
      lines[#lines + 1] = json.encode(item)
      after = item.key
    end
  until #items < 1000
  return table.concat(lines, "\n") .. (#lines > 0 and "\n" or "")
end


function M.gc(days) -- (task)
  local cfg = config.get()
  days = tonumber(days) or (cfg.retention and cfg.retention.finished_days)
  local before = 0
  if days then
    before = core.time() - math.floor(days * 86400000)
  end
  local report, err = store.purge(before)
  if not report then
    return nil, err
  end
  return json.encode(report)
end


function M.extract(text, schema_json, lines)
  local schema
  if schema_json then
    local err
    schema, err = json.decode(schema_json)
    if type(schema) ~= "table" then
      return nil, "EINVAL: the schema is not a JSON object"
        .. (err and (" (" .. err:gsub("^EJSON: ", "") .. ")") or "")
    end
  end
  local value, info = extract.extract(text,
    { schema = schema })
  if value == nil then
    return nil, info
  end
  if lines then
    local out = { json.encode(value) }
    for i, r in ipairs(info.repairs) do
      out[i + 1] = r
    end
    return table.concat(out, "\n") .. "\n"
  end
  return json.encode({ value = value, repairs = info.repairs,
                       truncated = info.truncated, fenced = info.fenced })
end


function M.render_request(agent_name, input)
  local agent, err = loader.load(agent_name)
  if not agent then
    return nil, err
  end
  local thread = thread_mod.new(agent.name, agent.version, nil, nil)
  thread:append("input", { input = input })
  thread.step = 1
  local ok, req = pcall(request.request, thread, agent, { dry = true })
  if not ok then
    return nil, "EAGENT: " .. tostring(req)
  end
  return llm.request(req).body
end


local mocks = {}


function M.mock_start(script, host, port)
  local cfg = config.get()
  local mock, err = mock.start {
    script = script or cfg.mock_script, host = host, port = port,
    project = cfg.project,
  }
  if not mock then
    return nil, err
  end
  mocks[#mocks + 1] = mock
  return mock.port()
end


-- Loads a script to run as a task: `arg` is set as a global, and os.exit
-- raises { exit = code } so the engine can unwind and free everything.
function M.load_script(path, argv)
  local chunk, err = loadfile(path, "t")
  if not chunk then
    return nil, "EINVAL: " .. err
  end
  _G.arg = argv
  os.exit = function(code)
    if code == true or code == nil then
      code = 0
    elseif code == false then
      code = 1
    end
    error(setmetatable({ exit = math.tointeger(code) or 1 },
      { __tostring = function(e) return "exit " .. e.exit end }), 0)
  end
  return chunk
end


return M
