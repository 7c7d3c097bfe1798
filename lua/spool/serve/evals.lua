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

-- A report file is written once, when its evaluation ends, and named by
-- its time: each is read once, its summaries kept while it is there.
local read_before = {} -- file name -> { summaries }

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


-- A file's summaries; nil (and logged) if it is not a list of reports,
-- which may be a file still being written: read again next time.
local function summaries_of(name)
  local text, err = core.read_file(DIR .. "/" .. name)
  local reports = text and json.decode(text)
  if type(reports) ~= "table" then
    core.log("warn", string.format("%s/%s is not an eval report, left "
      .. "out: %s", DIR, name, tostring(err or "not JSON")))
    return nil
  end
  local out = {}
  for _, r in ipairs(reports) do
    out[#out + 1] = summary(r)
  end
  return out
end


function M.latest()
  local names = {}
  for _, name in ipairs(core.list_dir(DIR) or {}) do
    if name:match("^[%w%-]+%.db%.json$") then
      names[#names + 1] = name
    end
  end
  table.sort(names, function(a, b) return a > b end) -- (named by time)
  local by_agent, seen, kept = {}, {}, {}
  for _, name in ipairs(names) do
    kept[name] = read_before[name] or summaries_of(name)
    for _, s in ipairs(kept[name] or {}) do
      local key = s.agent .. " " .. s.version
      if key and not seen[key] then
        seen[key] = true
        by_agent[s.agent] = by_agent[s.agent] or json.array()
        table.insert(by_agent[s.agent], s)
      end
    end
  end
  read_before = kept -- (the pruned ones go)
  return by_agent
end

return M
