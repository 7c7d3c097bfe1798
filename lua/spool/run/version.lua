-- spool.run.version: what the engine keeps of each agent version (private).
-- One record per version, keyed by its definition and never stored on it:
-- agent code is handed its definition (ctx.agent), and must reach neither
-- the project's limits through it nor what the engine derived from it.
-- Each field is filled the first time it is needed, by its module, and
-- the record goes with the version (weak keys):
--   limits     its limits over the project's, and the project table they
--              were made from (spool.run.limits)
--   account    the memory account of what it keeps between runs, and
--              whether a full collection was made for it (collected)
--   tools      its tool lists, in the prompt's and the request's forms
--              (spool.loop)
--   model      its model over the project's, and what it was made from
--              (spool.loop)
--   window     its window settings by model (spool.run.window)
--   checks     its schemas compiled, by schema (spool.run.route)

local M = {}

-- The record of agent version `agent`: version.of[agent] (made empty the
-- first time it is read; a table, not a function: a step reads it several
-- times).
M.of = setmetatable({}, { __mode = "k", __index = function(records, agent)
  local record = {}
  records[agent] = record
  return record
end })


return M
