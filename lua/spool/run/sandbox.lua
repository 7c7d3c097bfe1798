-- spool.run.sandbox: what agent code can reach (private).
--
-- Agents are the team's code, loaded as text into an environment of their
-- own (spool.run.loader). This module makes that environment: the safe parts
-- of Lua's standard library, and `require` of the modules in ALLOWED and of
-- the project's helper modules — nothing of the engine's own (its store,
-- configuration, mock model, runner) and no io, os, load or debug.
--
-- What an agent may change is its own:
--  - the library it requires is a copy made for its version (functions
--    shared, tables copied), so replacing spool.fs.read in one agent
--    changes nothing another agent or the engine sees;
--  - values the library hands out that stay the engine's (provider
--    modules, sentinels) are frozen, and `rawset` cannot write them or an
--    environment;
--  - metatables that agent code did not set can be neither read nor
--    replaced, and no finalizer (__gc) can be set: a finalizer would run
--    later, outside the run that made it and outside its limits; nor a
--    __close, whose error would replace (swallow) a limit's;
--  - a run's own coroutine cannot be yielded, resumed or closed by agent
--    code: a run waits only through spool functions, which the scheduler
--    wakes. Coroutines an agent makes for itself work as in plain Lua.
--  - errors that end a call or a run (a CPU or memory limit) pass through
--    the agent's pcall, xpcall and coroutine.resume, so agent code cannot
--    swallow them and carry on past its limit.
--
-- This keeps agents apart from each other and from the engine; it is not
-- a boundary against hostile agent authors (see SECURITY.md).

local core = require "spool.core"
local json = require "spool.json"

local M = {}

local getmetatable_raw = debug.getmetatable
local setmetatable_raw = setmetatable
local rawset_raw, type, next, error = rawset, type, next, error
local pcall_raw, xpcall_raw = pcall, xpcall
local co_yield, co_resume, co_wrap, co_close, co_create =
  coroutine.yield, coroutine.resume, coroutine.wrap, coroutine.close,
  coroutine.create

-- The modules agents may require: the public library, and lua-cjson.
M.ALLOWED = {
  spool = true, ["spool.json"] = true, ["spool.llm"] = true,
  ["spool.http"] = true, ["spool.fs"] = true, ["spool.context"] = true,
  ["spool.prompt"] = true, ["spool.schema"] = true, ["spool.loop"] = true,
  ["spool.state"] = true, ["spool.human"] = true, ["spool.extract"] = true,
  ["spool.tokens"] = true, ["spool.mcp"] = true, cjson = true,
  ["cjson.safe"] = true,
}

-- Tables no agent may write, even with rawset: environments and frozen
-- values. Metatables set by agent code: the only ones agents may see.
local protected = setmetatable_raw({}, { __mode = "k" })
local agent_metatables = setmetatable_raw({}, { __mode = "k" })


local function refuse_write(_, k)
  error(string.format("cannot set '%s': this table belongs to the engine",
    tostring(k)), 2)
end


-- Freezes a table in place: its fields move to a hidden table that reads
-- go through, and every write is an error. Returns t.
function M.freeze(t)
  if protected[t] then
    return t
  end
  local fields = {}
  for k, v in next, t do
    fields[k] = v
  end
  for k in next, fields do
    t[k] = nil
  end
  local mt = getmetatable_raw(t)
  setmetatable_raw(t, {
    __index = fields,
    __newindex = refuse_write,
    -- An iterator of its own: handing out `next, fields` would hand out
    -- the fields themselves, to be written.
    __pairs = function()
      return function(_, k) return next(fields, k) end, t, nil
    end,
    __len = function() return #fields end,
    __tostring = mt and mt.__tostring,
    __call = mt and mt.__call,
    __metatable = false,
  })
  protected[t] = true
  return t
end


-- Is t frozen (M.freeze)? Then it never changes, and reads of it run no
-- agent code.
function M.frozen(t)
  return protected[t] == true
end


-- A copy of a library value for one agent version: tables copied (their
-- metatables too, so the original's cannot be reached), functions and
-- frozen tables shared. `seen` is the version's: a table copied once is
-- the same copy wherever the version meets it.
local function copy(v, seen)
  if type(v) ~= "table" or protected[v] then
    return v
  end
  local c = seen[v]
  if c then
    return c
  end
  c = {}
  seen[v] = c
  for k, x in next, v do
    c[copy(k, seen)] = copy(x, seen)
  end
  local mt = getmetatable_raw(v)
  if mt ~= nil then
    setmetatable_raw(c, copy(mt, seen))
  end
  return c
end


-- A plain copy of data an agent hands the engine (a schema, settings):
-- tables copied by raw access, without metatables (the JSON array mark
-- kept), and no function, userdata or coroutine in it. The engine reads
-- such data later, outside the run and its limits: reading it must run no
-- agent code. Raises `where: why` on what is not data.
function M.plain(v, where, seen)
  local t = type(v)
  if t ~= "table" then
    if t == "function" or t == "thread"
        or (t == "userdata" and v ~= json.null) then
      error(string.format("%s: a %s cannot be part of it (only data)", where,
        t), 0)
    end
    return v
  end
  seen = seen or {}
  if seen[v] then
    error(where .. ": it contains itself", 0)
  end
  seen[v] = true
  local c = {}
  for k, x in next, v do
    c[M.plain(k, where, seen)] = M.plain(x, where, seen)
  end
  seen[v] = nil
  if json.is_array(v) then
    json.array(c)
  end
  return c
end


-- lua-cjson keeps its settings in the module: an agent version gets an
-- instance of its own (cjson.new), whose nesting depths stay bounded — a
-- deep document must not overflow the engine's C stack.
local MAX_DEPTH = 1000

local function own_cjson(name)
  local inst = require(name).new()
  for _, setting in ipairs { "decode_max_depth", "encode_max_depth" } do
    local set = inst[setting]
    inst[setting] = function(n, ...)
      if type(n) == "number" and n > MAX_DEPTH then
        n = MAX_DEPTH
      end
      return set(n, ...)
    end
  end
  return inst
end


-- The agent version's copy of allowed module `name` (see M.ALLOWED).
function M.library(name, seen)
  if name == "cjson" or name == "cjson.safe" then
    seen[name] = seen[name] or own_cjson(name)
    return seen[name]
  end
  return copy(require(name), seen)
end


-- ---- the base environment ----

local function sandboxed_rawset(t, k, v)
  if protected[t] then
    error("rawset: this table belongs to the engine (agents cannot create "
      .. "globals, or change a frozen table)", 2)
  end
  return rawset_raw(t, k, v)
end


local function sandboxed_getmetatable(v)
  local mt = getmetatable_raw(v)
  if mt ~= nil and agent_metatables[mt] then
    return getmetatable(v) -- honours __metatable, as in plain Lua
  end
  return nil
end


local function sandboxed_setmetatable(t, mt)
  if type(t) ~= "table" then
    error("bad argument #1 to 'setmetatable' (table expected, got "
      .. type(t) .. ")", 2)
  end
  local old = getmetatable_raw(t)
  if old ~= nil and not agent_metatables[old] or protected[t] then
    error("setmetatable: this table's metatable belongs to the engine", 2)
  end
  if mt ~= nil then
    if type(mt) ~= "table" then
      error("bad argument #2 to 'setmetatable' (nil or table expected)", 2)
    end
    if rawget(mt, "__gc") ~= nil then
      error("setmetatable: agents cannot set finalizers (__gc): they would "
        .. "run outside the run and its limits", 2)
    end
    if rawget(mt, "__close") ~= nil then
      -- An error raised while closing replaces the one in flight: a
      -- __close could swallow the error that ends a run at its limit.
      error("setmetatable: agents cannot set __close (to-be-closed "
        .. "variables): an error in one would replace the error that ends "
        .. "a call at its limits", 2)
    end
    agent_metatables[mt] = true
  end
  return setmetatable_raw(t, mt)
end


-- Errors agent code may not swallow: they go on up, as raised.
local function passes(ok, ...)
  if not ok and core.is_limit((...)) then
    error((...), 0)
  end
  return ok, ...
end


local function sandboxed_pcall(f, ...)
  return passes(pcall_raw(f, ...))
end


local function sandboxed_xpcall(f, handler, ...)
  return passes(xpcall_raw(f, function(e)
    if core.is_limit(e) then
      return e -- the agent's handler does not run on a limit
    end
    return handler(e)
  end, ...))
end


local function own_coroutine(co, what)
  if core.is_task(co) then
    error(string.format("coroutine.%s: this is a run's own coroutine; only "
      .. "the engine resumes it", what), 3)
  end
end


local function sandboxed_yield(...)
  if core.in_task() then
    error("coroutine.yield outside a coroutine of the agent's own: a run "
      .. "waits only through spool functions (spool.sleep, spool.http, "
      .. "spool.llm, ...)", 2)
  end
  return co_yield(...)
end


local pack, unpack = table.pack, table.unpack


-- Resumes a coroutine the agent made. When the count hook ended a slice
-- in it (it yielded it, with nothing), the slice is passed on up — this
-- coroutine yields in turn, the run's to the loop — and the coroutine is
-- resumed where it was, so agent code in coroutines is time-sliced too.
local function resume_sliced(co, ...)
  local res = pack(co_resume(co, ...))
  while res[1] and res.n == 1 and core.took_slice(co) do
    core.give_slice()
    res = pack(co_resume(co))
  end
  return unpack(res, 1, res.n)
end


local function sandboxed_resume(co, ...)
  own_coroutine(co, "resume")
  return passes(resume_sliced(co, ...))
end


local function sandboxed_close(co)
  own_coroutine(co, "close")
  return co_close(co)
end


local function sandboxed_wrap(f)
  local co = co_create(f)
  return function(...)
    local function finish(ok, ...)
      if not ok then
        co_close(co)
        error((...), core.is_limit((...)) and 0 or 2)
      end
      return ...
    end
    return finish(resume_sliced(co, ...))
  end
end


local function shallow(t)
  local c = {}
  for k, v in next, t do
    c[k] = v
  end
  return c
end


-- A call into Lua's C library runs to its end, out of the instruction
-- hook's reach; one that allocates as it goes meets the memory limit, but
-- two can loop without allocating for as long as an agent asks. Those get
-- forms the hook can stop (same results). string.rep is the string
-- metatable's too (("").rep), so it is replaced for all code.
local c_rep = string.rep
string.rep = function(s, n, sep)
  if s == "" and (sep == nil or sep == "")
      and math.tointeger(tonumber(n)) then
    return "" -- an empty result, made n times over in C
  end
  return c_rep(s, n, sep)
end

local c_move = table.move
local MOVE_IN_C = 4096 -- elements: a bounded call

local function table_move(a1, f, e, t, a2)
  if math.type(f) ~= "integer" or math.type(e) ~= "integer"
      or math.type(t) ~= "integer" or e < f or e - f < MOVE_IN_C then
    return c_move(a1, f, e, t, a2) -- (which checks what it is given)
  end
  a2 = a2 == nil and a1 or a2
  if not (f > 0 or e < math.maxinteger + f) then
    error("bad argument #3 to 'move' (too many elements to move)", 2)
  elseif t > math.maxinteger - (e - f) then
    error("bad argument #4 to 'move' (destination wrap around)", 2)
  end
  if t > e or t <= f or a1 ~= a2 then
    for i = 0, e - f do
      a2[t + i] = a1[f + i]
    end
  else -- an overlap where copying forwards would overwrite what it reads
    for i = e - f, 0, -1 do
      a2[t + i] = a1[f + i]
    end
  end
  return a2
end


local function base_env()
  local string_lib = shallow(string)
  string_lib.dump = nil -- bytecode is never loaded, and shows no source
  local table_lib = shallow(table)
  table_lib.move = table_move
  local coroutine_lib = shallow(coroutine)
  coroutine_lib.yield = sandboxed_yield
  coroutine_lib.resume = sandboxed_resume
  coroutine_lib.close = sandboxed_close
  coroutine_lib.wrap = sandboxed_wrap
  return {
    assert = assert, error = error, ipairs = ipairs, next = next,
    pairs = pairs, pcall = sandboxed_pcall, print = print, select = select,
    tonumber = tonumber, tostring = tostring, type = type,
    xpcall = sandboxed_xpcall, setmetatable = sandboxed_setmetatable,
    getmetatable = sandboxed_getmetatable, rawequal = rawequal,
    rawget = rawget, rawset = sandboxed_rawset, rawlen = rawlen,
    string = string_lib, table = table_lib, math = shallow(math),
    utf8 = shallow(utf8), coroutine = coroutine_lib,
    os = { time = os.time, clock = os.clock, date = os.date },
    _VERSION = _VERSION,
  }
end


-- A strict environment for the agent file or helper module shown as
-- `where`: reading an undefined global or creating one is an error.
function M.env(where, require_fn)
  local base = base_env()
  base.require = require_fn
  local env = setmetatable_raw({}, {
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
    __metatable = false,
  })
  protected[env] = true
  return env
end


return M
