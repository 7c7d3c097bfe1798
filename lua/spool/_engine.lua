-- spool._engine: the entry points the C engine calls (private). Each runs
-- under lua_pcall from engine.c and returns its result, or nil and
-- "ECODE: message" for a failure the caller should report (ENOTFOUND,
-- EINVAL, EAGENT, ESTATE). None of them yields.

local core = require "spool.core"
local json = require "spool.json"
local config = require "spool.config"
local loader = require "spool._loader"
local runner = require "spool._runner"
local loop = require "spool.loop"
local thread_mod = require "spool.thread"

local M = {}


function M.open(opts)
  local ok, err = config.init(opts)
  if not ok then
    return false, err
  end
  -- Load the public library now, so a broken install fails at open.
  require "spool"
  return true
end


function M.start_thread(agent_name, input)
  local agent, err = loader.load(agent_name)
  if not agent then
    return nil, err
  end
  return runner.start(agent, input).id
end


local function find(id)
  local t = runner.find(id)
  if not t then
    return nil, "ENOTFOUND: unknown thread '" .. tostring(id) .. "'"
  end
  return t
end


function M.thread_status(id)
  local t, err = find(id)
  if not t then
    return nil, err
  end
  return t:status()
end


function M.thread_result(id)
  local t, err = find(id)
  if not t then
    return nil, err
  end
  local status = t:status()
  if status == "running" then
    return nil, "ESTATE: thread " .. id .. " is still running"
  end
  local result, failure = t:outcome()
  if status == "done" then
    return json.encode(result == nil and json.null or result)
  end
  return json.encode({ error = failure or status })
end


function M.render_request(agent_name, input)
  local agent, err = loader.load(agent_name)
  if not agent then
    return nil, err
  end
  local thread = thread_mod.new(agent.name, agent.version, nil, nil)
  thread:append("input", { input = input })
  thread.step = 1
  local ok, req = pcall(loop.request, thread, agent)
  if not ok then
    return nil, "EAGENT: " .. tostring(req)
  end
  return require("spool.llm").request(req).body
end


local mocks = {}


function M.mock_start(script, host, port)
  local cfg = config.get()
  local mock, err = require("spool.mock").start {
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
