-- spool.coerce: the fixes that make an extracted value fit its schema
-- (schema-aligned parsing). Each fix is unambiguous and safe, and each is
-- noted as "path: what was done", so a guess is never silent:
--
--   "42" for an integer, 42 for a string, "true" for a boolean
--   a string holding JSON where an object or array is expected
--   a scalar where an object with one required property is expected
--   one value where an array is expected (the caller decides whether the
--     text held only that one)
--   an enum value in another case ("HIGH" for "high"), or one of the
--     aliases the schema declares: { enum = {"high", "low"},
--     aliases = { urgent = "high" } }
--   null for an absent property whose schema allows null
--
-- A union of types is left alone: nothing about it is unambiguous.

local json = require "spool.json"
local schema = require "spool.schema"

local M = {}


local function note(notes, fmt, ...)
  notes[#notes + 1] = string.format(fmt, ...)
end


-- s without the blanks around it (in linear time: a pattern such as
-- "^%s*(.-)%s*$" backtracks over long runs of spaces).
function M.trim(s)
  local first = s:find("%S")
  if not first then
    return ""
  end
  local last = #s
  while s:find("^%s", last) do
    last = last - 1
  end
  return s:sub(first, last)
end
local trim = M.trim


-- The one value in names (name = value) whose name is v in any case; nil
-- if none, or several that differ.
local function match_case(v, names)
  local lower, found = v:lower(), nil
  for name, value in pairs(names) do
    if type(name) == "string" and name:lower() == lower then
      if found ~= nil and not schema.same(found, value) then
        return nil
      end
      found = value
    end
  end
  return found
end


-- The enum value v names, by case or by alias; nil if none or several.
local function enum_match(v, s)
  local names = {}
  for _, e in ipairs(s.enum) do
    if type(e) == "string" then
      names[e] = e
    end
  end
  local found = match_case(v, names)
  if found == nil and type(s.aliases) == "table" then
    found = match_case(v, s.aliases)
  end
  return found
end


local function in_enum(v, s)
  for _, e in ipairs(s.enum) do
    if schema.same(v, e) then
      return true
    end
  end
  return false
end


local function allows_null(s)
  if type(s) ~= "table" then
    return false
  end
  if s.nullable == true or s.type == "null" then
    return true
  end
  if type(s.type) == "table" then
    for _, t in ipairs(s.type) do
      if t == "null" then
        return true
      end
    end
  end
  return false
end


local coerce

local function coerce_scalar(v, s, want, got, path, notes)
  if (want == "integer" or want == "number") and got == "string" then
    -- Exactly a JSON number, read exactly (1e999 is none; a 20-digit
    -- integer keeps its digits).
    local n = #v <= 4096 and json.decode(trim(v)) or nil
    local t = n ~= nil and schema.type_of(n)
    if t == "integer" or (t == "number" and want == "number") then
      note(notes, "%s: read the string %q as the number %s", path, v,
        tostring(n))
      return n
    end
  elseif want == "string" and (got == "integer" or got == "number") then
    local t = json.encode(v)
    note(notes, "%s: read the number %s as the string %q", path, t, t)
    return t
  elseif want == "boolean" and got == "string"
      and (v == "true" or v == "false") then
    note(notes, "%s: read the string %q as a boolean", path, v)
    return v == "true"
  elseif (want == "object" or want == "array") and got == "string" then
    local decoded = json.decode(v)
    if decoded ~= nil and schema.type_of(decoded) == want then
      note(notes, "%s: read the JSON in a string as the %s", path, want)
      return coerce(decoded, s, path, notes)
    end
  end
  if want == "object" and got ~= "object" and got ~= "array"
      and got ~= "null" and type(s.required) == "table"
      and #s.required == 1 then
    local name = s.required[1]
    note(notes, "%s: read %s as the object's one required property '%s'",
      path, got, name)
    return coerce({ [name] = v }, s, path, notes)
  end
  if want == "array" and got ~= "array" and got ~= "null" then
    note(notes, "%s: wrapped a single value in the array expected here", path)
    return coerce(json.array { v }, s, path, notes)
  end
  return v
end


coerce = function(v, s, path, notes, partial)
  if type(s) ~= "table" then
    return v
  end
  if type(s.enum) == "table" and type(v) == "string" and not in_enum(v, s)
  then
    local e = enum_match(v, s)
    if e ~= nil then
      note(notes, "%s: read %q as the allowed value %s", path, v,
        json.encode(e))
      return e
    end
  end
  local want = s.type
  if type(want) ~= "string" then
    return v
  end
  local got = schema.type_of(v)
  if got ~= want and not (want == "number" and got == "integer") then
    v = coerce_scalar(v, s, want, got, path, notes)
    got = schema.type_of(v)
  end
  if want == "object" and got == "object" and type(s.properties) == "table" then
    local required = {}
    for _, name in ipairs(s.required or {}) do
      required[name] = true
    end
    local names = {}
    for k in pairs(s.properties) do
      names[#names + 1] = k
    end
    table.sort(names) -- notes in a stable order
    for _, k in ipairs(names) do
      local sub = s.properties[k]
      if v[k] ~= nil then
        v[k] = coerce(v[k], sub, path .. "." .. k, notes, partial)
      elseif not required[k] and not partial and allows_null(sub) then
        note(notes, "%s.%s: gave the absent optional property null", path, k)
        v[k] = json.null
      end
    end
  elseif want == "array" and got == "array" and s.items then
    for i = 1, #v do
      v[i] = coerce(v[i], s.items, string.format("%s[%d]", path, i), notes,
        partial)
    end
  end
  return v
end


-- Returns value made to fit s where that is unambiguous and safe, and the
-- list of what was changed. `partial`: the value is still streaming in, so
-- an absent property is not yet absent (no null is filled in).
function M.coerce(value, s, name, partial)
  local notes = {}
  local v = coerce(value, s, name or "value", notes, partial)
  return v, notes
end


-- The items of a bulleted or numbered list in text ("- a", "* a", "• a",
-- "1. a", "1) a"), or nil when it has none.
function M.bullets(text)
  local items = {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    local at = line:match("^%s*[-*+]%s+()") or line:match("^%s*\u{2022}%s*()")
      or line:match("^%s*%d+[.)]%s+()")
    local item = at and trim(line:sub(at))
    if item and item ~= "" then
      items[#items + 1] = item
    end
  end
  return #items > 0 and items or nil
end


return M
