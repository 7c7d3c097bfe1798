-- spool.extract: the JSON value in a model's reply, found and repaired by
-- the engine's lenient extractor (engine/src/codec/extract.c).
--
--   spool.extract(text [, opts]) -> value, info | nil, "ECODE: why"
--
--   opts.schema  a JSON Schema: the first candidate that fits it wins
--                (several objects in one reply: pick the one that fits)
--   opts.coerce  with a schema, make unambiguous, safe fixes: "42" for an
--                integer, 42 for a string, "true" for a boolean, a single
--                value where an array of one was expected (default true)
--   opts.max     how many candidates to consider (default 8)
--
--   info = { repaired = bool, repairs = { "line 1, column 9: ...", ... },
--            truncated = bool (the text ended inside the value: it is
--            only what was complete so far), fenced = bool, from, to,
--            candidates = n }
--
-- Strict JSON comes back exactly as spool.json.decode reads it, with no
-- repairs. Errors: EJSON (no value could be recovered: position and
-- reason), ESCHEMA (values were found, none fits the schema).

local json = require "spool.json"
local schema = require "spool.schema"

local M = {}


local function info_of(c, extra, n)
  local repairs = json.array()
  for _, r in ipairs(c.repairs) do
    repairs[#repairs + 1] = r
  end
  for _, r in ipairs(extra or {}) do
    repairs[#repairs + 1] = r
  end
  return { repaired = #repairs > 0, repairs = repairs, truncated = c.truncated,
           fenced = c.fenced, from = c.from, to = c.to, candidates = n }
end


function M.extract(text, opts)
  if type(text) ~= "string" then
    error("spool.extract expects the reply text, not a " .. type(text), 2)
  end
  opts = opts or {}
  local candidates, err = json._extract(text, opts.max or 8)
  if not candidates then
    return nil, err
  end
  if not opts.schema then
    return candidates[1].value, info_of(candidates[1], nil, #candidates)
  end
  local first_problem
  for _, c in ipairs(candidates) do
    local value, coerced = c.value, nil
    if opts.coerce ~= false then
      value, coerced = schema.coerce(value, opts.schema, opts.name)
    end
    local ok, problem = schema.check(value, opts.schema, opts.name)
    if ok then
      return value, info_of(c, coerced, #candidates)
    end
    first_problem = first_problem or problem
  end
  return nil, "ESCHEMA: " .. first_problem
end


return M
