-- spool.serve.evals: what `spool eval` left of its evaluations for spool
-- serve to show (private): the report beside each evaluation's store in
-- .spool/evals (X.db.json; the newest ten are kept, spool.cli.eval), read
-- when asked. Must run in a task.
--
--   evals.latest() -> { [agent] = { report, ... } }   the newest report of
--                     each version of each agent, newest first
--
-- Each as { agent, version, runs, passes, pass_rate, flaky, at } (the
-- cases stay in the file). A file that does not read as a list of reports
-- is logged and left out, as is a report whose fields are not what they
-- should be.

local core = require "spool.core"
local json = require "spool.json"

local M = {}

local DIR = ".spool/evals"

-- What is shown of a report (not its cases), if it is one.
local function summary(r)
  local function count(v)
    return math.type(v) == "integer" and v >= 0 and v or nil
  end
  local rate = type(r) == "table" and r.pass_rate
  if type(r) ~= "table" or type(r.agent) ~= "string"
      or type(r.version) ~= "string" or type(rate) ~= "number"
      or rate ~= rate or rate < 0 or rate > 1 then
    return nil
  end
  return { agent = r.agent, version = r.version, runs = count(r.runs),
           passes = count(r.passes), pass_rate = rate,
           flaky = count(r.flaky), at = count(r.at) }
end


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
    local text, err = core.read_file(DIR .. "/" .. name)
    local reports = text and json.decode(text)
    if type(reports) ~= "table" then
      core.log("warn", string.format("%s/%s is not an eval report, left "
        .. "out: %s", DIR, name, tostring(err or "not JSON")))
    end
    for _, r in ipairs(type(reports) == "table" and reports or {}) do
      local s = summary(r)
      local key = s and s.agent .. " " .. s.version
      if key and not seen[key] then
        seen[key] = true
        by_agent[s.agent] = by_agent[s.agent] or json.array()
        table.insert(by_agent[s.agent], s)
      end
    end
  end
  return by_agent
end

return M
