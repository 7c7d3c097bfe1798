-- spool.serve.evals: what `spool eval` left of its evaluations for spool
-- serve to show (private): the report beside each evaluation's store in
-- .spool/evals (X.db.json; the newest ten are kept, spool.cli.eval), read
-- when asked. Must run in a task.
--
--   evals.latest() -> { [agent] = { report, ... } }   the newest report of
--                     each version of each agent, newest first
--
-- A report: { agent, version, runs, passes, pass_rate, flaky, at, cases }.
-- One that does not read as a list of reports is skipped.

local core = require "spool.core"
local json = require "spool.json"

local M = {}

local DIR = ".spool/evals"

function M.latest()
  local names = {}
  for _, name in ipairs(core.list_dir(DIR) or {}) do
    if name:match("^[%w%-]+%.db%.json$") then
      names[#names + 1] = name
    end
  end
  table.sort(names, function(a, b) return a > b end) -- (named by time)
  local by_agent, seen = {}, {}
  for _, name in ipairs(names) do
    local reports = json.decode(core.read_file(DIR .. "/" .. name) or "")
    for _, r in ipairs(type(reports) == "table" and reports or {}) do
      local key = type(r) == "table" and type(r.agent) == "string"
        and tostring(r.agent) .. " " .. tostring(r.version)
      if key and not seen[key] then
        seen[key] = true
        by_agent[r.agent] = by_agent[r.agent] or json.array()
        table.insert(by_agent[r.agent], r)
      end
    end
  end
  return by_agent
end

return M
