-- spool.fs: the project's files, read and written off the loop (on the uv
-- thread pool), so a run waiting on the disk never stalls the others.
--
--   fs.read(path)          -> contents | nil, "ENOENT: ..."
--   fs.read_json(path)     -> value | nil, err
--   fs.write(path, data)   -> true | nil, err   (replaces the file; makes
--   fs.append(path, data)  -> true | nil, err    missing folders)
--
-- This is the agents' way to files, and what a model says may steer its
-- paths, so it keeps them to what an agent may touch:
--
-- * Paths are relative to the project folder and cannot leave it: an
--   absolute path or a ".." part raises, and no symbolic link is followed,
--   even one pointing inside the project (ELOOP; engine/src/io/confine.c).
-- * The engine's own files are neither read nor written (EACCES): spool.lua
--   (it may hold secrets), the thread store, and anything hidden (a part
--   starting with ".": .spool, which holds the store and the API token,
--   .env, .git).
-- * Code the engine runs is not written (EACCES): the project's agents,
--   prompts and lib folders as configured, mock/ and the mock's script,
--   and no file ending in .lua anywhere. A model that steers a write must
--   never get its text run as code.
--
-- Only a path and data reach the engine: the library's own reads of any
-- file (the agent loader's flag) cannot be asked for from here.

local core = require "spool.core"
local json = require "spool.json"
local config = require "spool.base.config"

local M = {}


-- The parts of a configured path (trusted: ".." is resolved) relative to
-- the project, or nil when it lies outside. A relative one is taken from
-- the project folder.
local function project_parts(path, project)
  if path:sub(1, 1) == "/" then
    if path:sub(1, #project + 1) ~= project .. "/" then
      return path == project and {} or nil
    end
    path = path:sub(#project + 2)
  end
  local out = {}
  for part in path:gmatch("[^/]+") do
    if part == ".." then
      if #out == 0 then
        return nil
      end
      out[#out] = nil
    elseif part ~= "." then
      out[#out + 1] = part
    end
  end
  return out
end


-- Whether `parts` lies under the folder `dir` (parts too). A folder that is
-- the project itself holds the files directly in it.
local function under(parts, dir)
  if #dir == 0 then
    return #parts == 1
  end
  if #parts <= #dir then
    return false
  end
  for i = 1, #dir do
    if parts[i] ~= dir[i] then
      return false
    end
  end
  return true
end


local function same(a, b)
  if #a ~= #b then
    return false
  end
  for i = 1, #a do
    if a[i] ~= b[i] then
      return false
    end
  end
  return true
end


-- Why an agent may not read (or, with `write`, write) `path`, as
-- "EACCES: ...", or nil. Paths the engine refuses outright (absolute, "..",
-- not a string) pass: core raises on them.
local function refusal(path, write)
  if type(path) ~= "string" or path:sub(1, 1) == "/" then
    return nil
  end
  -- The parts as the engine resolves them: empty and "." parts skipped.
  local parts = {}
  for part in path:gmatch("[^/]+") do
    if part == ".." then
      return nil
    elseif part ~= "." then
      parts[#parts + 1] = part
    end
  end
  for _, part in ipairs(parts) do
    if part:sub(1, 1) == "." then
      return string.format("EACCES: %s is hidden (%s); agents cannot read "
        .. "or write hidden files or folders", path, part)
    end
  end
  if #parts == 1 and parts[1] == "spool.lua" then
    return string.format("EACCES: %s is the engine's own file; agents "
      .. "cannot read or write it", path)
  end
  local cfg = config.get()
  local project = cfg.project
  local store = cfg.store ~= ":memory:" and project_parts(cfg.store, project)
  if store and #store > 0 then
    local base = store[#store]
    for _, suffix in ipairs { "", "-wal", "-shm", "-journal" } do
      store[#store] = base .. suffix
      if same(parts, store) then
        return string.format("EACCES: %s is the engine's store; agents "
          .. "cannot read or write it", path)
      end
    end
  end
  if not write then
    return nil
  end
  for _, f in ipairs {
    { cfg.agents_dir, "the project's agent code" },
    { cfg.prompts_dir, "the project's prompts" },
    { cfg.lib_dir, "the project's helper modules" },
    { "mock", "the mock model's scripts" },
  } do
    local dir = f[1] and project_parts(f[1], project)
    if dir and under(parts, dir) then
      return string.format("EACCES: %s is in %s/, %s; agents cannot write "
        .. "there", path, #dir > 0 and table.concat(dir, "/") or ".", f[2])
    end
  end
  local script = type(cfg.mock_script) == "string"
    and project_parts(cfg.mock_script, project)
  if script and same(parts, script) then
    return string.format("EACCES: %s is the mock model's script; agents "
      .. "cannot write it", path)
  end
  if #parts > 0 and parts[#parts]:match("%.lua$") then
    -- Mock scripts, evaluation cases, spool.lua: Lua the engine or the
    -- team's tools may run, wherever it is kept.
    return string.format("EACCES: %s is Lua source; agents cannot write Lua "
      .. "files", path)
  end
  return nil
end


-- A local, so read_json reads as read does whatever is done to M.read.
local function read(path)
  local why = refusal(path, false)
  if why then
    return nil, why
  end
  return core.read_file(path)
end
M.read = read


function M.read_json(path)
  local text, err = read(path)
  if not text then
    return nil, err
  end
  local value, jerr = json.decode(text)
  if value == nil then
    return nil, string.format("EJSON: %s: %s", path,
      jerr:gsub("^EJSON: ", ""))
  end
  return value
end


function M.write(path, data)
  local why = refusal(path, true)
  if why then
    return nil, why
  end
  return core.write_file(path, data, "w")
end


function M.append(path, data)
  local why = refusal(path, true)
  if why then
    return nil, why
  end
  return core.write_file(path, data, "a")
end


return M
