-- spool.run.loader: agents, their prompts and helper modules, as versions
-- (private). spool.run.compile makes a version of an agent's files;
-- spool.run.watch reloads when they change.
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
local hub = require "spool.run.hub"
local compile = require "spool.run.compile"

local M = {}

local current = {}     -- name -> agent, the version new steps use
local registered = {}  -- name -> agent defined in code (M.register)
local problems = {}    -- name -> the last reload's error, if it failed
local stored = {}      -- version -> when its files were last put in the store
M.versions = setmetatable({}, { __mode = "v" }) -- version -> agent, in use
M.history = {}         -- every version published, oldest first (capped)
M.reloads = 0          -- how many reloads ran

local NAME = "^[%w_%-]+$"


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
  local read = core.in_task() and compile.read_async or compile.read_now
  local def, err = compile.compile(name, read, compile.project_dirs())
  if not def then
    return nil, err
  end
  local ok, cerr = compile.check(def)
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
  local def, err = compile.compile(name, compile.read_now, {
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
  local def, cerr = compile.compile(name, function(path) return bundle.files[path] end,
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
  local dirs = compile.project_dirs()
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
      local def, err = compile.compile(name, compile.read_async, dirs)
      if def then
        local ok, cerr = compile.check(def)
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
  for _, file in ipairs(core.list_dir(compile.project_dirs().agents, true) or {}) do
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
