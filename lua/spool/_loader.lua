-- spool._loader: agents, their prompts and helper modules, as versions
-- (private).
--
-- An agent file is loaded as text (never bytecode) into a fresh, strict
-- environment: reading an undefined global or creating one is an error, and
-- `require` reaches the spool library, lua-cjson and the project's helper
-- modules (lib/<name>.lua), each loaded fresh for this version. The file
-- must return spool.agent{...}; its prompt must exist and render.
--
-- A version is the content hash of every file the agent read (its file,
-- its prompt, its helpers); every event records the version that made it,
-- and its files are kept in the store, so a thread pinned to a version can
-- resume it in any later process.
--
-- Generations: `current[name]` is the version new steps use. A reload
-- compiles every agent off to the side and publishes only those that
-- changed and passed their checks; a broken edit leaves the running version
-- in place and is reported. Runs pick up the current version at their next
-- step (spool._runner), never in the middle of one.

local core = require "spool.core"
local json = require "spool.json"
local config = require "spool.config"
local agent_mod = require "spool.agent"
local prompt = require "spool.prompt"

local M = {}

local current = {}     -- name -> agent, the version new steps use
local registered = {}  -- name -> agent defined in code (M.register)
local problems = {}    -- name -> the last reload's error, if it failed
local stored = {}      -- version -> true once its files are in the store
M.versions = setmetatable({}, { __mode = "v" }) -- version -> agent, in use
M.history = {}         -- every version published, oldest first (capped)

local ALLOWED_REQUIRE = { cjson = true, ["cjson.safe"] = true, spool = true }
local PRIVATE = { ["spool.core"] = true }
local NAME = "^[%w_%-]+$"


-- Reads a file now (for the first load of an agent, outside any run).
local function read_now(path)
  local f, err = io.open(path, "rb")
  if not f then
    return nil, err
  end
  local text = f:read("a")
  f:close()
  return text
end


-- Reads a file on the thread pool (inside a run: reloads).
local function read_async(path)
  return core.read_file(path, true)
end


local function base_env()
  return {
    assert = assert, error = error, ipairs = ipairs, next = next,
    pairs = pairs, pcall = pcall, print = print, select = select,
    tonumber = tonumber, tostring = tostring, type = type, xpcall = xpcall,
    setmetatable = setmetatable, getmetatable = getmetatable,
    rawequal = rawequal, rawget = rawget, rawset = rawset, rawlen = rawlen,
    string = string, table = table, math = math, utf8 = utf8,
    coroutine = coroutine,
    os = { time = os.time, clock = os.clock, date = os.date },
    _VERSION = _VERSION,
  }
end


local function strict_env(where, require_fn)
  local base = base_env()
  base.require = require_fn
  return setmetatable({}, {
    __index = function(_, k)
      local v = base[k]
      if v == nil then
        error(string.format("undefined global '%s' (in %s)", tostring(k),
          where), 2)
      end
      return v
    end,
    __newindex = function(_, k)
      error(string.format("agents cannot create globals: assigning '%s' "
        .. "(declare it local)", tostring(k)), 2)
    end,
  })
end


-- Compiles agent `name` reading files with `read(path)`; returns the agent
-- (with .version, .files) or nil and "ECODE: why". `shown_dirs` maps the
-- real folders to the names used in messages.
local function compile(name, read, dirs)
  local files = {}   -- shown path -> text, everything this version read
  local modules = {} -- helper name -> value, loaded once per version
  local function fetch(dir, shown_dir, rel)
    local shown = shown_dir .. "/" .. rel
    if files[shown] then
      return files[shown]
    end
    local text = read(dir .. "/" .. rel)
    if text then
      files[shown] = text
    end
    return text, shown
  end

  local agent_require
  agent_require = function(mod)
    if type(mod) ~= "string" then
      error("require expects a module name", 2)
    end
    if ALLOWED_REQUIRE[mod] or (mod:match("^spool%.[%w_]+$")
        and not PRIVATE[mod] and not mod:match("^spool%._")) then
      return require(mod)
    end
    if modules[mod] ~= nil then
      return modules[mod]
    end
    if not mod:match("^[%w_]+[%w_%.]*$") then
      error("require '" .. mod .. "': not a module name", 2)
    end
    local rel = mod:gsub("%.", "/") .. ".lua"
    local text, shown = fetch(dirs.lib, dirs.lib_shown, rel)
    if not text then
      error(string.format("require '%s' is not allowed in an agent (allowed: "
        .. "spool, spool.<module>, cjson, and helper modules in %s/)", mod,
        dirs.lib_shown), 2)
    end
    local chunk, err = load(text, "@" .. shown, "t",
      strict_env(shown, agent_require))
    if not chunk then
      error(err, 0)
    end
    local value = chunk()
    if value == nil then
      value = true
    end
    modules[mod] = value
    return value
  end

  local shown = dirs.agents_shown .. "/" .. name .. ".lua"
  local src = fetch(dirs.agents, dirs.agents_shown, name .. ".lua")
  if not src then
    return nil, string.format("ENOTFOUND: unknown agent '%s': there is no %s "
      .. "in the project (%s)", name, shown, config.get().project)
  end
  local chunk, cerr = load(src, "@" .. shown, "t",
    strict_env(shown, agent_require))
  if not chunk then
    return nil, "EAGENT: " .. cerr
  end
  local ok, def = pcall(chunk)
  if not ok then
    return nil, "EAGENT: " .. tostring(def)
  end
  if not agent_mod.is_agent(def) then
    return nil, "EAGENT: " .. shown .. " must return spool.agent{...}, not a "
      .. type(def)
  end
  def.name = def.name or name
  def.file = shown
  if def.prompt then
    local ptext = fetch(dirs.prompts, dirs.prompts_shown, def.prompt)
    if not ptext then
      return nil, string.format("EAGENT: %s: prompt '%s' cannot be read "
        .. "(no %s/%s)", shown, def.prompt, dirs.prompts_shown, def.prompt)
    end
    local tok, tpl = pcall(prompt.compile, ptext, dirs.prompts_shown .. "/"
      .. def.prompt)
    if not tok then
      return nil, "EAGENT: " .. tpl
    end
    def.prompt_template = tpl
  end
  -- The version: every file read, in a stable order.
  local names = {}
  for path in pairs(files) do
    names[#names + 1] = path
  end
  table.sort(names)
  local parts = {}
  for _, path in ipairs(names) do
    parts[#parts + 1] = path .. "\0" .. files[path]
  end
  def.version = core.sha256(table.concat(parts, "\0")):sub(1, 12)
  def.files = files
  return def
end


local function project_dirs()
  local cfg = config.get()
  return {
    agents = cfg.agents_dir, agents_shown = "agents",
    prompts = cfg.prompts_dir, prompts_shown = "prompts",
    lib = cfg.lib_dir, lib_shown = "lib",
  }
end


-- Checks that a compiled agent's prompt renders (with the variables every
-- step has, and the agent's own if they can be computed without a run).
local function check(def)
  if not def.prompt_template then
    return true
  end
  local probe = require("spool.thread").new(def.name, def.version, nil, nil)
  probe:append("input", { input = "" })
  local vars = { input = "", agent = def.name, tools = json.array(),
                 thread = { id = probe.id, step = 1 } }
  for _, tname in ipairs(def.tool_names) do
    vars.tools[#vars.tools + 1] = { name = tname,
      description = def.tools[tname].description, params = "{}" }
  end
  if def.vars then
    local ok, extra = pcall(def.vars, probe)
    if not ok then
      return true -- needs a real thread: checked when it runs
    end
    for k, v in pairs(extra or {}) do
      vars[k] = v
    end
  end
  local ok, err = pcall(prompt.render, def.prompt_template, vars)
  if not ok then
    return nil, "EAGENT: " .. tostring(err)
  end
  return true
end


local function publish(def)
  local old = current[def.name]
  current[def.name] = def
  M.versions[def.version] = def
  if not old or old.version ~= def.version then
    M.history[#M.history + 1] = def.version
    if #M.history > 10000 then
      table.remove(M.history, 1)
    end
  end
end


-- The current version of agent `name`, loading it (now, from disk) the
-- first time. Returns the agent or nil and "ECODE: why".
function M.load(name)
  if type(name) ~= "string" or not name:match(NAME) then
    return nil, "EINVAL: invalid agent name '" .. tostring(name)
      .. "' (letters, digits, _ and - only)"
  end
  local a = current[name] or registered[name]
  if a then
    return a
  end
  local def, err = compile(name, read_now, project_dirs())
  if not def then
    return nil, err
  end
  local ok, cerr = check(def)
  if not ok then
    return nil, cerr
  end
  publish(def)
  return def
end


-- Loads an agent from one file, outside the project's folders (tests).
function M.load_file(path, name, shown, prompts_dir)
  local dir = path:match("^(.*)/[^/]*$") or "."
  local def, err = compile(name, read_now, {
    agents = dir, agents_shown = (shown or path):match("^(.*)/[^/]*$") or ".",
    prompts = prompts_dir or config.get().prompts_dir,
    prompts_shown = "prompts", lib = config.get().lib_dir, lib_shown = "lib",
  })
  if not def then
    return nil, err
  end
  return def
end


-- The version of an agent a thread is pinned to: from memory, or rebuilt
-- from the files the store kept. Must run in a task.
function M.version(name, version)
  local a = M.versions[version]
  if a then
    return a
  end
  local cur = current[name]
  if cur and cur.version == version then
    return cur
  end
  local sources, err = core.store_version_get(version)
  if not sources then
    return nil, err
  end
  local bundle = json.decode(sources)
  local function read(path)
    local shown = path:gsub("^" .. "\1", "")
    return bundle.files[shown]
  end
  local def, cerr = compile(name, read, {
    agents = "\1agents", agents_shown = "agents",
    prompts = "\1prompts", prompts_shown = "prompts",
    lib = "\1lib", lib_shown = "lib",
  })
  if not def then
    return nil, cerr
  end
  if def.version ~= version then
    return nil, "ECORRUPT: stored version " .. version .. " of " .. name
      .. " hashes to " .. def.version
  end
  M.versions[version] = def
  return def
end


-- Keeps an agent version's files in the store (once per engine and
-- version). Must run in a task.
function M.store_version(def)
  if stored[def.version] or not def.files then
    return true
  end
  local ok, err = core.store_version_put(def.version, def.name,
    json.encode({ agent = def.name, files = def.files }), core.time())
  if ok then
    stored[def.version] = true
  end
  return ok, err
end


-- Re-reads every agent of the project (on the thread pool), and publishes
-- each one that changed and passes its checks. Must run in a task. Returns
-- { name = { version =, changed = bool, error = why } }.
function M.reload()
  local dirs = project_dirs()
  local names = core.list_dir(dirs.agents, true) or {}
  local report, seen = {}, {}
  for _, file in ipairs(names) do
    local name = file:match("^(.+)%.lua$")
    if name and name:match(NAME) then
      seen[name] = true
      local def, err = compile(name, read_async, dirs)
      if def then
        local ok, cerr = check(def)
        if not ok then
          def, err = nil, cerr
        end
      end
      local old = current[name]
      if def then
        local changed = not old or old.version ~= def.version
        if changed then
          publish(def)
          M.store_version(def)
          core.log("info", string.format("reloaded agent %s: version %s -> %s",
            name, old and old.version or "none", def.version))
        end
        problems[name] = nil
        report[name] = { version = def.version, changed = changed }
      else
        err = err:gsub("^%u+: ", "")
        problems[name] = err
        report[name] = { version = old and old.version, error = err }
        core.log("error", string.format("reload of agent %s failed, %s: %s",
          name, old and ("still running version " .. old.version)
            or "not loaded", err))
      end
    end
  end
  for name, def in pairs(current) do
    if not seen[name] then
      current[name] = nil -- deleted: no new threads; running ones finish
      report[name] = { version = def.version, deleted = true }
      core.log("info", "agent " .. name .. " was deleted")
    end
  end
  return report
end


-- Starts watching the project's folders; each burst of changes reloads.
function M.watch()
  local dirs = project_dirs()
  local watchers = {}
  for _, dir in ipairs { dirs.agents, dirs.prompts, dirs.lib } do
    local w = core.watch({ dir }, function() M.reload() end, 50)
    watchers[#watchers + 1] = w -- a folder that is missing is not watched
  end
  return watchers
end


-- The current version of an agent (nil if it was deleted), for runs.
function M.current(name)
  return current[name] or registered[name]
end


-- The last reload's problem with an agent, if any.
function M.problem(name)
  return problems[name]
end


-- Makes an agent defined in code (a test's, an embedding application's)
-- loadable by name, like a file in agents/.
function M.register(agent)
  registered[agent.name] = agent
  M.versions[agent.version] = agent
end


-- Drops loaded agents (all of them, or one), so the next load reads disk.
function M.forget(name)
  if name then
    current[name] = nil
  else
    current = {}
  end
end


return M
