-- spec/support.lua: what the specs share (local h = require "spec.support").
--
-- Specs run inside the engine, in a task, so they can wait on I/O like an
-- agent does: h.wait_for polls with spool.sleep while the loop runs the
-- runs, mock models and servers the spec started.
--
-- After every test, spec/helper.lua calls h.assert_clean: nothing the test
-- started may still run in the engine.

local core = require "spool.core"
local spool = require "spool"
local agent_mod = require "spool.agent"
local prompt = require "spool.prompt"
local runner = require "spool.run.runner"
local loader = require "spool.run.loader"
local watcher = require "spool.run.watch"
local config = require "spool.base.config"
local test = require "spool.test"
local json = require "spool.json"
local mock_mod = require "spool.mock"

local h = {}

h.BIN = os.getenv("SPOOL_BIN") or "./build/spool"
h.ROOT = core.project()


-- Polls pred() every few ms until it returns a true value, which is
-- returned; raises after timeout_ms (default 10 s).
function h.wait_for(pred, timeout_ms, what)
  local deadline = core.now() + (timeout_ms or 10000)
  while true do
    local v = pred()
    if v then
      return v
    end
    if core.now() > deadline then
      error("timed out waiting for " .. (what or "a condition"), 2)
    end
    core.sleep(2)
  end
end


-- Starts an in-process mock model with a script table (see spool.mock).
function h.mock(script)
  local mock = assert(mock_mod.start { script = script })
  return mock
end


-- A mock model that follows a list of replies, one per assistant turn (a
-- reply may be a function(conv)); `seen` collects every request.
function h.scripted(replies)
  local seen = {}
  local mock = h.mock { rules = { { reply = function(conv)
    seen[#seen + 1] = conv
    local r = replies[conv.turns + 1]
    if type(r) == "function" then
      r = r(conv)
    end
    return r or { text = "out of script" }
  end } } }
  return mock, seen
end


-- A model of `provider` at a mock (spool.base.config.resolve_model), retrying
-- at once; `settings` override any model setting.
function h.model_at(mock, provider, settings)
  local fm = { retry_base_ms = 1, timeout_ms = 10000 }
  for k, v in pairs(settings or {}) do
    fm[k] = v
  end
  return assert(config.resolve_model({ provider = provider,
    mock = "off", base_url = mock.url() }, fm))
end


-- Waits until a mock answered everything: a handler may still sleep after
-- the client gave up on it, and a test leaves nothing running.
function h.settle_mock(mock)
  h.wait_for(function() return mock.stats().inflight == 0 end, 10000,
    "the mock to finish its requests")
end


-- Defines an agent for a test: `system` is its prompt text, and the model
-- is the given mock (or any OpenAI-compatible URL).
function h.agent(def, mock_or_url)
  local system = def.system or "You are a test agent."
  def.system = nil
  def.prompt = def.prompt or "test.md"
  local url = type(mock_or_url) == "string" and mock_or_url
    or (mock_or_url and mock_or_url.url())
  if url then
    def.model = def.model or {}
    def.model.mock = false
    def.model.base_url = url
    def.model.name = def.model.name or "mock-1"
    def.model.timeout_ms = def.model.timeout_ms or 10000
    def.model.retry_base_ms = def.model.retry_base_ms or 1 -- retry at once
  end
  local a = agent_mod.define(def, "test agent")
  a.name = a.name or ("test_" .. core.random_id():sub(-10))
  a.version = "test"
  a.prompt_template = prompt.compile(system, "prompts/test.md")
  loader.register(a) -- so resume can find it by name
  return a
end


-- Waits until no task runs the thread (it ended, waits, or stopped).
function h.wait_run(thread, timeout_ms)
  h.wait_for(function() return not runner.is_live(thread.id) end,
    timeout_ms or 20000, "the run of thread " .. thread.id)
  return thread
end


-- Runs an agent on an input until its run ends; returns the thread.
function h.run(agent, input, timeout_ms)
  return h.wait_run(runner.start(agent, input), timeout_ms)
end


-- The error texts and the types of a thread's events (or of a list of
-- events), in order: spool.test's, which agent authors use.
h.errors = test.errors
h.types = test.types


-- Runs a shell command; returns its stdout and exit code. This blocks the
-- test engine's loop, so use it only for processes that need nothing from
-- this engine.
function h.sh(cmd)
  local f = assert(io.popen(cmd, "r"))
  local out = f:read("a")
  local _, _, code = f:close()
  return out, code
end


-- Quotes a string for the shell.
function h.q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end


-- A fresh temporary folder.
function h.tmpdir()
  local out = h.sh("mktemp -d /tmp/spool-spec.XXXXXX")
  return (out:gsub("%s+$", ""))
end


-- A copy of the demo project (agents, prompts, data, mock, spool.lua) in a
-- temporary folder, so a test may change files and state freely.
function h.copy_project()
  local dir = h.tmpdir()
  local _, code = h.sh(string.format("cp -r %s/agents %s/prompts %s/data "
    .. "%s/mock %s/spool.lua %s/", h.ROOT, h.ROOT, h.ROOT, h.ROOT, h.ROOT,
    dir))
  assert(code == 0, "cannot copy the demo project")
  return dir
end


-- Writes files (relative path -> text) under dir, making folders; a text
-- of false deletes the file.
function h.write_files(dir, files)
  for rel, text in pairs(files) do
    local path = dir .. "/" .. rel
    if text == false then
      os.remove(path)
    else
      h.sh("mkdir -p " .. h.q(path:match("^(.*)/")))
      local f = assert(io.open(path, "wb"))
      f:write(text)
      f:close()
    end
  end
end


-- Makes a temporary project of `files` the one this engine loads agents
-- from, its model the given mock; returns the folder and a function that
-- puts everything back (stops watching, forgets the project's agents).
function h.project(files, mock)
  local dir = h.tmpdir()
  h.write_files(dir, files)
  local cfg = config.get()
  local saved = { cfg.agents_dir, cfg.prompts_dir, cfg.lib_dir, cfg.model }
  cfg.agents_dir, cfg.prompts_dir, cfg.lib_dir =
    dir .. "/agents", dir .. "/prompts", dir .. "/lib"
  if mock then
    cfg.model = { provider = "openai", name = "mock-1", base_url = mock.url(),
                  api_key_env = "SPOOL_SPEC_NO_KEY", timeout_ms = 10000,
                  connect_timeout_ms = 10000 }
  end
  return dir, function()
    watcher.unwatch()
    for rel in pairs(files) do
      local name = rel:match("^agents/(.+)%.lua$")
      if name then
        loader.forget(name)
      end
    end
    cfg.agents_dir, cfg.prompts_dir, cfg.lib_dir, cfg.model =
      saved[1], saved[2], saved[3], saved[4]
    h.remove(dir)
  end
end


-- Lets spool.http (the agents' HTTP) reach what `list` allows, as
-- spool.lua's http = { allow = list } does, until the function it returns
-- is called: spool.http refuses loopback (where the specs' servers are).
function h.allow_http(list)
  local cfg = config.get()
  local saved = cfg.http_guard
  cfg.http_guard = assert(core.net_guard(list))
  return function()
    cfg.http_guard = saved
  end
end


-- Parses `spool run --json` output: one event per line.
function h.json_lines(out)
  local events = {}
  for line in out:gmatch("[^\n]+") do
    events[#events + 1] = assert(json.decode(line))
  end
  return events
end


-- Runs `spool --project dir [extra] run agent --json --input input` and
-- returns its events and exit code.
function h.run_cli(dir, agent, input, extra)
  local out, code = h.sh(string.format("%s --project %s %s run %s --json "
    .. "--input %s", h.q(h.BIN), h.q(dir), extra or "", agent, h.q(input)))
  return h.json_lines(out), code
end


-- A file's whole text, or "" if it cannot be read.
function h.slurp(path)
  local f = io.open(path, "rb")
  local s = f and f:read("a") or ""
  if f then
    f:close()
  end
  return s
end


function h.remove(path)
  h.sh("rm -rf " .. h.q(path))
end


-- Runs the CLI with arguments (and environment assignments); returns
-- stdout, stderr, exit code.
function h.cli(args, stdin, env)
  local dir = h.tmpdir()
  local cmd = string.format("cd %s && %s %s %s >%s/out 2>%s/err", h.q(h.ROOT),
    env or "", h.q(h.BIN), args, dir, dir)
  if stdin then
    cmd = string.format("printf '%%s' %s | (%s)", h.q(stdin), cmd)
  end
  local _, code = h.sh(cmd)
  local function slurp(name)
    local f = io.open(dir .. "/" .. name)
    local s = f:read("a")
    f:close()
    return s
  end
  local out, err = slurp("out"), slurp("err")
  h.sh("rm -rf " .. h.q(dir))
  return out, err, code
end


-- Starts `spool mock-llm` as a separate process, with extra arguments and
-- environment assignments ("NAME=value ..."); returns { url, port, pid,
-- stop = function }. The process is stopped by PID.
function h.mock_process(script, extra, env)
  local dir = h.tmpdir()
  local port_file = dir .. "/port"
  local cmd = string.format("%s %s mock-llm --port 0 --port-file %s %s %s "
    .. ">%s/out 2>%s/err & echo $!", env or "", h.q(h.BIN), h.q(port_file),
    script and ("--script " .. h.q(script)) or "", extra or "", dir, dir)
  local pid = assert(tonumber((h.sh(cmd))), "no pid")
  local port = h.wait_for(function()
    local f = io.open(port_file, "r")
    local p = f and tonumber(f:read("l"))
    if f then
      f:close()
    end
    return p
  end, 10000, "the mock process to listen")
  return {
    pid = pid, port = port,
    url = string.format("http://127.0.0.1:%d/v1", port),
    stop = function()
      h.sh("kill " .. pid .. " 2>/dev/null; rm -rf " .. h.q(dir))
    end,
  }
end


-- The Lua library's modules: { name = "spool.run.loader", path = ... },
-- sorted by name, read from the lua_dir the engine loads them from.
function h.library_modules()
  local dir = config.get().lua_dir
  local out = {}
  local find = io.popen("cd " .. h.q(dir) .. " && find spool -name '*.lua'")
  for file in find:lines() do
    local name = file:gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
    out[#out + 1] = { name = name, path = dir .. "/" .. file }
  end
  find:close()
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end


-- Fails the current test if anything it started is still running.
function h.assert_clean()
  local stats = core.stats()
  assert(stats.http_pending == 0, "HTTP transfers left in flight: "
    .. stats.http_pending)
  assert(stats.tasks == 1, "tasks left running: " .. (stats.tasks - 1))
  assert(stats.store_pending == 0, "store operations left in flight: "
    .. stats.store_pending)
  assert(runner.running() == 0, "threads left running: " .. runner.running())
end


h.spool = spool

return h
