-- spool.run.loader: agents, their prompts and helper modules, as versions
-- (private).
--
-- An agent file is loaded as text (never bytecode) into a fresh, strict
-- environment (spool.run.sandbox): reading an undefined global or creating one
-- is an error, and `require` reaches the public library (a copy of it for
-- this version), lua-cjson and the project's helper modules
-- (lib/<name>.lua), each loaded fresh for this version. The file must
-- return spool.agent{...}; its prompt must exist and render.
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
-- step (spool.run.runner), never in the middle of one.

local core = require "spool.core"
local json = require "spool.json"
local config = require "spool.base.config"
local agent_mod = require "spool.agent"
local prompt = require "spool.prompt"
local requires = require "spool.run.requires"
local hub = require "spool.run.hub"
local sandbox = require "spool.run.sandbox"
local limits = require "spool.run.limits"
local thread_mod = require "spool.run.thread"

local M = {}

local current = {}     -- name -> agent, the version new steps use
local registered = {}  -- name -> agent defined in code (M.register)
local problems = {}    -- name -> the last reload's error, if it failed
local stored = {}      -- version -> when its files were last put in the store
M.versions = setmetatable({}, { __mode = "v" }) -- version -> agent, in use
M.history = {}         -- every version published, oldest first (capped)
M.reloads = 0          -- how many reloads ran

local NAME = "^[%w_%-]+$"


-- Reads a file now (the first load of an agent, outside any run).
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


local function builtin(mod)
  return sandbox.ALLOWED[mod] == true
end


local ALLOWED_SHOWN = (function()
  local names = {}
  for name in pairs(sandbox.ALLOWED) do
    names[#names + 1] = name
  end
  table.sort(names)
  return table.concat(names, ", ")
end)()


local function not_allowed(mod, lib_shown)
  return string.format("require '%s' is not allowed in an agent (allowed: "
    .. "%s, and helper modules in %s/ required by a string literal; there "
    .. "is no %s/%s.lua)", mod, ALLOWED_SHOWN, lib_shown, lib_shown,
    (mod:gsub("%.", "/")))
end


local LOADING = {} -- a helper module whose chunk is running


-- Compiles agent `name` reading files with `read(path)`; returns the agent
-- (with .version, .files) or nil and "ECODE: why". `dirs` gives the real
-- folders and the names used in messages.
local function compile_unbounded(name, read, dirs)
  local files = {}   -- shown path -> text: everything this version is
  local modules = {} -- helper name -> value, loaded once per version
  local library = {} -- the version's copy of the library (spool.run.sandbox)
  local function fetch(dir, shown_dir, rel)
    local shown = shown_dir .. "/" .. rel
    if files[shown] == nil then
      files[shown] = read(dir .. "/" .. rel)
    end
    return files[shown], shown
  end

  -- Reads the helper modules `text` requires (and theirs) now, found by
  -- their literal names: they are part of the version, and no step ever
  -- reads a file. Returns true or nil, "where: why".
  local function read_helpers(text, from)
    for _, r in ipairs(requires.find(text)) do
      local mod = r.name
      if not builtin(mod) then
        local where = string.format("%s:%d: ", from, r.line)
        if not mod:match("^[%w_]+[%w_%.]*$") then
          return nil, where .. not_allowed(mod, dirs.lib_shown)
        end
        local rel = mod:gsub("%.", "/") .. ".lua"
        local seen = files[dirs.lib_shown .. "/" .. rel] ~= nil
        local helper, shown = fetch(dirs.lib, dirs.lib_shown, rel)
        if not helper then
          return nil, where .. not_allowed(mod, dirs.lib_shown)
        end
        if not seen then
          local syntax_ok, serr = load(helper, "@" .. shown, "t", {})
          if not syntax_ok then
            return nil, serr
          end
          local ok, err = read_helpers(helper, shown)
          if not ok then
            return nil, err
          end
        end
      end
    end
    return true
  end

  local agent_require
  agent_require = function(mod)
    if type(mod) ~= "string" then
      error("require expects a module name", 2)
    end
    if builtin(mod) then
      return sandbox.library(mod, library)
    end
    if modules[mod] == LOADING then
      error("require '" .. mod .. "': helper modules require each other in "
        .. "a cycle", 2)
    elseif modules[mod] ~= nil then
      return modules[mod]
    end
    local shown = dirs.lib_shown .. "/" .. mod:gsub("%.", "/") .. ".lua"
    local text = files[shown]
    if not text then
      error(not_allowed(mod, dirs.lib_shown), 2)
    end
    local chunk, err = load(text, "@" .. shown, "t",
      sandbox.env(shown, agent_require))
    if not chunk then
      error(err, 0)
    end
    modules[mod] = LOADING
    local ok, value = pcall(chunk) -- under the agent file's limits
    if not ok then
      modules[mod] = nil
      error(value, 0)
    end
    if value == nil then
      value = true
    end
    modules[mod] = value
    return value
  end

  local shown = dirs.agents_shown .. "/" .. name .. ".lua"
  local src = fetch(dirs.agents, dirs.agents_shown, name .. ".lua")
  if not src then
    -- The project's folder is not named: this reaches API clients.
    return nil, string.format("ENOTFOUND: unknown agent '%s': there is no %s "
      .. "in the project", name, shown)
  end
  local chunk, cerr = load(src, "@" .. shown, "t",
    sandbox.env(shown, agent_require))
  if not chunk then
    return nil, "EAGENT: " .. cerr
  end
  local hok, herr = read_helpers(src, shown)
  if not hok then
    return nil, "EAGENT: " .. herr
  end
  local ok, def = pcall(chunk)
  if not ok and core.is_limit(def) then
    error(def, 0) -- for spool.run.limits to say so
  end
  if not ok then
    -- `return spool.agent{...}` is a tail call: its caller shows as [C].
    return nil, "EAGENT: " .. tostring(def):gsub("^%[C%]: ", shown .. ": ")
  end
  if not agent_mod.is_agent(def) then
    return nil, "EAGENT: " .. shown .. " must return spool.agent{...}, not a "
      .. type(def)
  end
  if def.name ~= nil and def.name ~= name then
    return nil, string.format("EAGENT: %s: name '%s' must be the file's "
      .. "name, '%s' (agents are found by their file names)", shown,
      tostring(def.name), name)
  end
  def.name = name
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
local function check_unbounded(def)
  if not def.prompt_template then
    return true
  end
  local probe = thread_mod.new(def.name, def.version, nil, nil)
  probe:append("input", { input = "" })
  local vars = { input = "", agent = def.name, tools = json.array(),
                 thread = { id = probe.id, step = 1 } }
  for _, tname in ipairs(def.tool_names) do
    vars.tools[#vars.tools + 1] = { name = tname,
      description = def.tools[tname].description, params = "{}" }
  end
  if def.vars then
    local ok, extra = pcall(def.vars, probe)
    if not ok and core.is_limit(extra) then
      error(extra, 0)
    end
    if not ok then
      return true -- needs a real thread: checked when it runs
    end
    for k, v in pairs(extra or {}) do
      vars[k] = v
    end
  end
  local ok, err = pcall(prompt.render, def.prompt_template, vars)
  if not ok and core.is_limit(err) then
    error(err, 0)
  end
  -- What a structured input holds is not known before a run has one.
  if not ok and not tostring(err):match("'input%.[^']*' is not defined$")
  then
    return nil, "EAGENT: " .. tostring(err)
  end
  return true
end


-- Compiling and checking run agent code (its top level, its vars), so
-- they run under the limits of loading: a file that loops or fills memory
-- fails to load, and the engine goes on.
local function bounded(keep, f, ...)
  local res = table.pack(limits.load(keep, f, ...))
  if not res[1] then
    local why = res[2]
    return nil, "EAGENT: " .. (type(why) == "string" and why
      or "loading raised an error that is not a string")
  end
  return table.unpack(res, 2, res.n)
end


-- Each version has a memory account of its own: what it keeps between
-- runs (its module's data, the definition itself) counts there
-- (spool.run.limits.kept_over), and goes when the version does.
local function compile(name, read, dirs)
  local account = core.account_open(0)
  local def, err = bounded(account, compile_unbounded, name, read, dirs)
  if not def then
    core.account_close(account)
    return nil, err
  end
  limits.set_account(def, account)
  return def
end


local function check(def)
  return bounded(limits.account(def), check_unbounded, def)
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


-- The current version of agent `name`, loading it from disk the first
-- time. Returns the agent or nil and "ECODE: why".
function M.load(name)
  if type(name) ~= "string" or not name:match(NAME) then
    return nil, "EINVAL: invalid agent name '" .. tostring(name)
      .. "' (letters, digits, _ and - only)"
  end
  local a = current[name] or registered[name]
  if a then
    return a
  end
  -- Inside a run (a sub-agent's first call) the loop must not wait on disk.
  local read = core.in_task() and read_async or read_now
  local def, err = compile(name, read, project_dirs())
  if not def then
    return nil, err
  end
  local ok, cerr = check(def)
  if not ok then
    return nil, cerr
  end
  if current[name] then
    return current[name] -- another run loaded it while this one read
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
  local known = { M.versions[version], current[name], registered[name] }
  for i = 1, 3 do
    local a = known[i]
    if a and a.name == name and a.version == version then
      return a
    end
  end
  local sources, err = core.store_version_get(version)
  if not sources then
    return nil, err
  end
  local bundle = json.decode(sources)
  if type(bundle) ~= "table" or type(bundle.files) ~= "table" then
    return nil, "ECORRUPT: stored version " .. version .. " of " .. name
      .. " is not a bundle of files"
  end
  -- The bundle is keyed by the paths shown, so they serve as the folders.
  local def, cerr = compile(name, function(path) return bundle.files[path] end,
    { agents = "agents", agents_shown = "agents", prompts = "prompts",
      prompts_shown = "prompts", lib = "lib", lib_shown = "lib" })
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


-- Keeps an agent version's files in the store, and refreshes them hourly
-- while in use (the store's purge spares versions put in the last day).
-- Must run in a task.
local REFRESH_MS = 3600 * 1000

function M.store_version(def)
  local now = core.time()
  if not def.files or (stored[def.version]
      and now - stored[def.version] < REFRESH_MS) then
    return true
  end
  local ok, err = core.store_version_put(def.version, def.name,
    json.encode({ agent = def.name, files = def.files }), now)
  if ok then
    stored[def.version] = now
  end
  return ok, err
end


-- Tells the host (and its event listeners) what a reload did to an agent.
local function report_event(name, entry)
  local text
  if entry.error then
    text = string.format("reload  agent %s is broken, %s: %s", name,
      entry.version and ("still running version " .. entry.version)
        or "not loaded", entry.error)
    core.log("error", text:gsub("^reload  ", "reload: "))
  elseif entry.deleted then
    text = string.format("reload  agent %s was deleted (threads running "
      .. "it finish on version %s)", name, entry.version)
    core.log("info", text:gsub("^reload  ", "reload: "))
  elseif entry.from then
    text = string.format("reload  agent %s: version %s -> %s", name,
      entry.from, entry.version)
    core.log("info", text:gsub("^reload  ", "reload: "))
  else
    text = string.format("reload  agent %s: loaded version %s", name,
      entry.version)
    core.log("debug", text:gsub("^reload  ", "reload: "))
  end
  local notice = { type = entry.error and "reload_failed" or "reload",
    agent = name, version = entry.version, from = entry.from,
    error = entry.error, deleted = entry.deleted, at = core.time() }
  hub.broadcast(notice) -- the control API's /v1/events
  if core.listening() then
    core.emit("", name, notice.type, 0, 0, json.encode(notice), text)
  end
end


-- Reloads may overlap (a change arrives while one reads files); each
-- takes a ticket, and an agent is only ever updated by a reload at least
-- as new as the one that last updated it, which read the files later.
local tickets = 0
local updated_by = {} -- name -> ticket


-- Re-reads every agent of the project (on the thread pool), and publishes
-- each one that changed and passes its checks. Must run in a task. Returns
-- { agents = { name = { version, from, changed, error, deleted } },
-- errors = n }: `version` is what runs now.
function M.reload()
  M.reloads = M.reloads + 1
  tickets = tickets + 1
  local ticket = tickets
  local dirs = project_dirs()
  local names, lerr = core.list_dir(dirs.agents, true)
  if not names then
    -- Nothing is known about the agents now (a checkout in progress?):
    -- keep every version in use, and say so.
    lerr = "cannot read " .. dirs.agents .. ": " .. tostring(lerr)
      :gsub("^%u+: ", "")
    core.log("error", "reload: " .. lerr)
    return { agents = {}, errors = 1, error = lerr }
  end
  table.sort(names)
  local agents, errors, seen = {}, 0, {}
  for _, file in ipairs(names) do
    local name = file:match("^(.+)%.lua$")
    if name and name:match(NAME) then
      seen[name] = true
      local def, err = compile(name, read_async, dirs)
      if def then
        local ok, cerr = check(def)
        if ok and (not current[name] or current[name].version ~= def.version)
        then
          -- Its files are stored before any event can name it.
          ok, cerr = M.store_version(def)
        end
        if not ok then
          def, err = nil, cerr
        end
      end
      -- No yield from here on: what is decided is published at once.
      if ticket >= (updated_by[name] or 0) then
        updated_by[name] = ticket
        local old = current[name]
        local entry
        if def then
          entry = { version = def.version, from = old and old.version,
                    changed = not old or old.version ~= def.version }
          problems[name] = nil
          if entry.changed then
            publish(def)
          end
        else
          errors = errors + 1
          entry = { version = old and old.version,
                    error = (err:gsub("^%u+: ", "")) }
          problems[name] = entry.error
        end
        agents[name] = entry
        if entry.changed or entry.error then
          report_event(name, entry)
        end
      end
    end
  end
  for name, def in pairs(current) do
    if not seen[name] and ticket >= (updated_by[name] or 0) then
      updated_by[name] = ticket
      current[name] = nil -- no new threads; running ones finish on theirs
      agents[name] = { version = def.version, deleted = true }
      report_event(name, agents[name])
    end
  end
  return { agents = agents, errors = errors }
end


-- Watching: one watcher for the folders agents are made of, and one for
-- their parents, which sees a folder created, deleted or replaced (a git
-- checkout) and watches afresh.
local watching = nil


local function basename(path)
  return path:match("([^/]+)/*$")
end


-- Starts (or restarts) watching the project's agents/, prompts/ and lib/;
-- each burst of changes (no change for debounce_ms, default 50) reloads. Returns true or nil, "EIO: why".
function M.watch(debounce_ms)
  debounce_ms = debounce_ms or 50
  M.unwatch()
  local dirs = project_dirs()
  local list = { dirs.agents, dirs.prompts, dirs.lib }
  local files, missing = core.watch(list, function() M.reload() end,
    debounce_ms)
  if not files then
    return nil, missing
  end
  local names, parents, seen, only = {}, {}, {}, {}
  for _, dir in ipairs(list) do
    names[basename(dir)] = true
    only[#only + 1] = basename(dir)
    local parent = dir:match("^(.*)/[^/]+/*$") or "."
    if not seen[parent] then
      seen[parent] = true
      parents[#parents + 1] = parent
    end
  end
  local folders, ferr = core.watch(parents, function(changed)
    for _, name in ipairs(changed) do
      if names[name] then
        local ok, werr = M.watch(debounce_ms)
        if not ok then
          core.log("error", "watch: " .. tostring(werr))
        end
        M.reload()
        return
      end
    end
  end, debounce_ms, only)
  if not folders then
    files:close()
    return nil, ferr
  end
  watching = { files, folders }
  if #missing > 0 then
    core.log("debug", "watch: not there yet: " .. table.concat(missing, ", "))
  end
  return true
end


function M.unwatch()
  for _, w in ipairs(watching or {}) do
    w:close()
  end
  watching = nil
end


-- The current version of an agent (nil if it was deleted), for runs.
function M.current(name)
  return current[name] or registered[name]
end


-- Every agent: those in the agents folder (with the version in use, and
-- the last reload's error, if any) and those registered in code. Must run
-- in a task. Returns { { name, version, error }, ... } by name.
function M.list()
  local seen, out = {}, {}
  local function add(name)
    if not seen[name] then
      seen[name] = true
      local a = M.current(name)
      out[#out + 1] = { name = name, version = a and a.version,
                        error = problems[name] }
    end
  end
  for _, file in ipairs(core.list_dir(project_dirs().agents, true) or {}) do
    local name = file:match("^(.+)%.lua$")
    if name and name:match(NAME) then
      add(name)
    end
  end
  for name in pairs(registered) do
    add(name)
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end


-- The last reload's problem with an agent, if any.
function M.problem(name)
  return problems[name]
end


-- Makes an agent defined in code (a test's, an embedding application's)
-- loadable by name, like a file in agents/.
function M.register(agent)
  registered[agent.name] = agent
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
