-- spool.extract: the JSON value in a model's reply, found and repaired by
-- the engine's lenient extractor (engine/src/codec/extract.c).
--
--   spool.extract(text [, opts]) -> value, info | nil, "ECODE: why"
--
--   opts.schema  a JSON Schema: the first candidate that fits it wins
--                (several objects in one reply: pick the one that fits)
--   opts.coerce  with a schema, make the unambiguous, safe fixes of
--                spool.coerce (default true), and read the text as the
--                schema asks: several values where an array is expected
--                become that array when each fits its items; a bulleted
--                list, its items; prose where a string is expected, that
--                string
--   opts.partial the text is a prefix of a reply still streaming: a
--                number it ends in is left out (12 may become 125), a key
--                whose value has not begun is left out, and a required
--                property not seen yet is listed in info.pending rather
--                than failing the schema
--   opts.max     how many candidates to consider (default 8; 64 with a
--                schema, which chooses among them)
--
--   info = { repaired = bool, repairs = { "line 1, column 9: ...", ... },
--            truncated = bool (the text ended inside the value: it is
--            only what was complete so far), fenced = bool, from, to,
--            candidates = n, pending = { "value.answer", ... } (partial),
--            incomplete = "EJSON: ..." (a value in the text that failed,
--            or where the search stopped: not among the candidates) }
--
-- Strict JSON comes back exactly as spool.json.decode reads it, with no
-- repairs. Errors: EJSON (no value could be recovered: position and
-- reason), ESCHEMA (values were found, none fits the schema).

local json = require "spool.json"
local schema = require "spool.schema"
local coerce = require "spool.coerce"

local M = {}

-- Candidates read when an array is expected: every value in the text
-- counts, so none is dropped without a word.
local GATHER_MAX = 256


local function info_of(c, extra, n, incomplete)
  local repairs = c.repairs -- the extractor's, already a json.array
  if extra and #extra > 0 then
    repairs = json.array()
    table.move(c.repairs, 1, #c.repairs, 1, repairs)
    table.move(extra, 1, #extra, #repairs + 1, repairs)
  end
  return { repaired = #repairs > 0, repairs = repairs, truncated = c.truncated,
           fenced = c.fenced, from = c.from, to = c.to, candidates = n,
           incomplete = incomplete }
end


-- Coerces (unless opts.coerce is false) and checks one value; returns the
-- value and its notes, or nil and the problem.
local function fit(value, opts, pending)
  local notes
  if opts.coerce ~= false then
    value, notes = coerce.coerce(value, opts.schema, opts.name, opts.partial)
  end
  local ok, problem = schema.check(value, opts.schema, opts.name, pending)
  if not ok then
    return nil, problem
  end
  return value, notes or {}
end


-- An array expected, and the text holds several values that are not one:
-- all of them, when each fits the items; never one of them alone.
local function gather(candidates, opts)
  local s, name = opts.schema, opts.name or "value"
  if #candidates >= GATHER_MAX then
    return nil, string.format("%s: expected an array; the text holds more "
      .. "than %d separate values", name, GATHER_MAX - 1)
  end
  if candidates.incomplete then
    return nil, string.format("%s: expected an array; the text holds %d "
      .. "separate values and more that could not be read (%s)", name,
      #candidates, candidates.incomplete:gsub("^EJSON: ", ""))
  end
  local items, repairs = json.array(), json.array()
  local in_order = table.move(candidates, 1, #candidates, 1, {})
  table.sort(in_order, function(a, b) return a.from < b.from end)
  candidates = in_order -- fences are found first; the list is the text's
  for i, c in ipairs(candidates) do
    local item_opts = { schema = s.items or {}, coerce = opts.coerce,
                        partial = opts.partial,
                        name = string.format("%s[%d]", name, i) }
    local v, notes = fit(c.value, item_opts)
    if v == nil then
      return nil, string.format("%s: expected an array; the text holds %d "
        .. "separate values, not one list, and not all are items of it (%s)",
        name, #candidates, notes)
    end
    items[i] = v
    for _, r in ipairs(c.repairs) do
      repairs[#repairs + 1] = r
    end
    for _, r in ipairs(notes) do
      repairs[#repairs + 1] = r
    end
  end
  repairs[#repairs + 1] = string.format("%s: gathered the %d separate values "
    .. "in the text into the array expected here", name, #candidates)
  local value, notes = fit(items, opts)
  if value == nil then
    return nil, notes
  end
  local truncated = false
  for _, c in ipairs(candidates) do
    truncated = truncated or c.truncated
  end
  local first, last = candidates[1], candidates[#candidates]
  return value, info_of({ repairs = repairs, truncated = truncated,
                          fenced = first.fenced, from = first.from,
                          to = last.to }, notes, #candidates)
end


-- No JSON in the text: what the schema makes of it, or nil.
local function from_prose(text, opts)
  local s = opts.schema
  if opts.coerce == false or type(s) ~= "table" then
    return nil
  end
  local name = opts.name or "value"
  local trimmed = coerce.trim(text)
  local value, note
  if s.type == "array" then
    local items = coerce.bullets(text)
    if not items then
      return nil
    end
    value = json.array(items)
    note = string.format("%s: read the bulleted list (%d items) as the "
      .. "array expected here", name, #items)
  elseif s.type == "string" and trimmed ~= "" then
    value = trimmed
    note = string.format("%s: read the whole reply as the string expected "
      .. "here", name)
  else
    return nil
  end
  local v, notes = fit(value, opts)
  if v == nil then
    return nil
  end
  table.insert(notes, 1, note)
  return v, info_of({ repairs = {}, truncated = false, fenced = false,
                      from = 1, to = #text }, notes, 0)
end


function M.extract(text, opts)
  if type(text) ~= "string" then
    error("spool.extract expects the reply text, not a " .. type(text), 2)
  end
  opts = opts or {}
  local s = opts.schema
  local wants_array = type(s) == "table" and s.type == "array"
    and opts.coerce ~= false
  local candidates, err = json._extract(text,
    wants_array and GATHER_MAX or opts.max or (s and 64 or 8), opts.partial)
  if not candidates then
    local v, info = from_prose(text, opts)
    if v ~= nil then
      return v, info
    end
    return nil, err
  end
  if not s then
    return candidates[1].value, info_of(candidates[1], nil, #candidates,
      candidates.incomplete)
  end
  if wants_array and #candidates > 1
      and schema.type_of(candidates[1].value) ~= "array" then
    local v, info = gather(candidates, opts)
    if v == nil then
      return nil, "ESCHEMA: " .. info
    end
    return v, info
  end
  local first_problem
  for _, c in ipairs(candidates) do
    local pending = opts.partial and c.truncated and json.array() or nil
    local value, notes = fit(c.value, opts, pending)
    if value ~= nil then
      local info = info_of(c, notes, #candidates, candidates.incomplete)
      info.pending = pending
      return value, info
    end
    first_problem = first_problem or notes
  end
  -- No value fits: prose where a string is expected, or a bulleted list
  -- where an array is (its items may hold brackets: [x] done).
  local v, info = from_prose(text, opts)
  if v ~= nil then
    return v, info
  end
  return nil, "ESCHEMA: " .. first_problem
end


return M
