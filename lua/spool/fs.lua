-- spool.fs: the project's files, read and written off the loop (on the uv
-- thread pool), so a run waiting on the disk never stalls the others.
-- Paths are relative to the project folder and cannot leave it.
--
--   fs.read(path)          -> contents | nil, "ENOENT: ..."
--   fs.read_json(path)     -> value | nil, err
--   fs.write(path, data)   -> true | nil, err   (replaces the file)
--   fs.append(path, data)  -> true | nil, err

local core = require "spool.core"
local json = require "spool.json"

local M = {}


function M.read(path)
  return core.read_file(path)
end


function M.read_json(path)
  local text, err = core.read_file(path)
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
  return core.write_file(path, data, "w")
end


function M.append(path, data)
  return core.write_file(path, data, "a")
end


return M
