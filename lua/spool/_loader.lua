-- spool._loader: loads agent files and their prompts (private).
--
-- An agent file is loaded as text (never bytecode) into a fresh, strict
-- environment: reading an undefined global or creating one is an error, and
-- `require` reaches only the spool library and lua-cjson. The file must
-- return spool.agent{...}. Its prompt template is read and parsed with it.
--
-- The version of an agent is a content hash of the agent file and its
-- prompt; every event the agent produces records it.
--
-- Loaded agents are cached by name: a file is read from disk once per
-- engine (hot reload, which watches the files, replaces entries).

local core = require "spool.core"
local config = require "spool.config"
local agent_mod = require "spool.agent"
local prompt = require "spool.prompt"

local M = {}

local cache = {}

local ALLOWED_REQUIRE = { cjson = true, ["cjson.safe"] = true, spool = true }
local PRIVATE = { ["spool.core"] = true }


local function read(path)
  local f, err = io.open(path, "rb")
  if not f then
    return nil, err
  end
  local text = f:read("a")
  f:close()
  return text
end


local function agent_require(name)
  if type(name) ~= "string" then
    error("require expects a module name", 2)
  end
  local public_spool = name:match("^spool%.[%w_]+$") and not PRIVATE[name]
    and not name:match("^spool%._")
  if not (ALLOWED_REQUIRE[name] or public_spool) then
    error(string.format("require '%s' is not allowed in an agent (allowed: "
      .. "spool, spool.<module>, cjson)", name), 2)
  end
  return require(name)
end


-- The globals an agent sees. Standard libraries that touch the process or
-- the file system (io, os.execute, debug, load*) are left out.
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
    require = agent_require,
    _VERSION = _VERSION,
  }
end


local function strict_env(where)
  local base = base_env()
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


-- Loads an agent from a file. `shown` is the path used in messages;
-- prompts are read from prompts_dir (default: the project's).
function M.load_file(path, name, shown, prompts_dir)
  shown = shown or path
  local src = read(path)
  if not src then
    return nil, string.format("ENOTFOUND: unknown agent '%s': there is no %s "
      .. "in the project (%s)", name, shown, config.get().project)
  end
  local chunk, cerr = load(src, "@" .. shown, "t", strict_env(shown))
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
  local hashed = src
  if def.prompt then
    local dir = prompts_dir or config.get().prompts_dir
    local ptext = read(dir .. "/" .. def.prompt)
    if not ptext then
      return nil, string.format("EAGENT: %s: prompt '%s' cannot be read "
        .. "(no prompts/%s)", shown, def.prompt, def.prompt)
    end
    local tok, tpl = pcall(prompt.compile, ptext, "prompts/" .. def.prompt)
    if not tok then
      return nil, "EAGENT: " .. tpl
    end
    def.prompt_template = tpl
    hashed = hashed .. "\0" .. ptext
  end
  def.version = core.sha256(hashed):sub(1, 12)
  return def
end


-- Loads agents/<name>.lua of the project (cached).
function M.load(name)
  if type(name) ~= "string" or not name:match("^[%w_%-]+$") then
    return nil, "EINVAL: invalid agent name '" .. tostring(name)
      .. "' (letters, digits, _ and - only)"
  end
  local a = cache[name]
  if a then
    return a
  end
  local cfg = config.get()
  local err
  a, err = M.load_file(cfg.agents_dir .. "/" .. name .. ".lua", name,
    "agents/" .. name .. ".lua")
  if a then
    cache[name] = a
  end
  return a, err
end


-- Makes an agent defined in code (a test's, an embedding application's)
-- loadable by name, like a file in agents/.
function M.register(agent)
  cache[agent.name] = agent
end


-- Drops cached agents (all of them, or one), so the next load reads disk.
function M.forget(name)
  if name then
    cache[name] = nil
  else
    cache = {}
  end
end


return M
