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


-- The enum value v names, by case or by alias; nil if none or several.
local function enum_match(v, s)
  local lower = v:lower()
  local found
  for _, e in ipairs(s.enum) do
    if type(e) == "string" and e:lower() == lower then
      if found then
        return nil
      end
      found = e
    end
  end
  if found == nil and type(s.aliases) == "table" then
    for alias, e in pairs(s.aliases) do
      if type(alias) == "string" and alias:lower() == lower then
        found = e
      end
    end
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
    local n = math.tointeger(tonumber(v)) or tonumber(v)
    if v:match("^%s*%-?%d+%.?%d*[eE]?[-+]?%d*%s*$") and n
        and (want == "number" or math.type(n) == "integer") then
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


coerce = function(v, s, path, notes)
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
        v[k] = coerce(v[k], sub, path .. "." .. k, notes)
      elseif not required[k] and allows_null(sub) then
        note(notes, "%s.%s: gave the absent optional property null", path, k)
        v[k] = json.null
      end
    end
  elseif want == "array" and got == "array" and s.items then
    for i = 1, #v do
      v[i] = coerce(v[i], s.items, string.format("%s[%d]", path, i), notes)
    end
  end
  return v
end


-- Returns value made to fit s where that is unambiguous and safe, and the
-- list of what was changed.
function M.coerce(value, s, name)
  local notes = {}
  local v = coerce(value, s, name or "value", notes)
  return v, notes
end


-- The items of a bulleted or numbered list in text ("- a", "* a", "• a",
-- "1. a", "1) a"), or nil when it has none.
function M.bullets(text)
  local items = {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    local item = line:match("^%s*[-*+]%s+(.-)%s*$")
      or line:match("^%s*\u{2022}%s*(.-)%s*$")
      or line:match("^%s*%d+[.)]%s+(.-)%s*$")
    if item and item ~= "" then
      items[#items + 1] = item
    end
  end
  return #items > 0 and items or nil
end


return M
