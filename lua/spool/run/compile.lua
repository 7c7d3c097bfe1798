-- spool.run.compile: an agent file, its prompt and its helper modules made
-- into a checked definition, a version (private; spool.run.loader keeps
-- the versions). The file is loaded as text (never bytecode) into a fresh,
-- strict environment (spool.run.sandbox); `require` reaches the public
-- library (a copy of it for this version), lua-cjson and the project's
-- helper modules (lib/<name>.lua). Its version is the content hash of
-- every file it read. Compiling and checking run agent code, so they run
-- under the limits of loading (spool.run.limits).

local core = require "spool.core"
local json = require "spool.json"
local config = require "spool.base.config"
local agent_mod = require "spool.agent"
local prompt = require "spool.prompt"
local requires = require "spool.run.requires"
local sandbox = require "spool.run.sandbox"
local limits = require "spool.run.limits"
local thread_mod = require "spool.run.thread"

local M = {}


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


M.read_now = read_now
M.read_async = read_async
M.project_dirs = project_dirs
M.compile = compile
M.check = check


return M
