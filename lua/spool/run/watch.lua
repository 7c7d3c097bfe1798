-- spool.run.watch: the folders agents are made of, watched (private;
-- spool serve, spool run --watch): a change reloads the agents
-- (spool.run.loader.reload) after a short quiet time.

local core = require "spool.core"
local compile = require "spool.run.compile"
local loader = require "spool.run.loader"

local M = {}


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
  local dirs = compile.project_dirs()
  local list = { dirs.agents, dirs.prompts, dirs.lib }
  local files, missing = core.watch(list, function() loader.reload() end,
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
        loader.reload()
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


return M
