-- spool.schema: tool parameters as JSON Schema, and checking values
-- against them with messages a model can act on ("order.id: expected
-- string, got number").
--
-- Agents may write parameters in a shorthand that this module expands:
--
--   params = {
--     order_id = "string",             -- required string
--     note     = "string?",            -- optional
--     tags     = "string[]",           -- array of strings
--     amount   = { type = "number", minimum = 0, description = "EUR" },
--     reason   = { enum = { "damaged", "late" }, optional = true },
--   }
--
-- A table with a `type = "object"` at the top is taken as JSON Schema as is.
-- The checker covers the subset tools use: type, properties, required,
-- additionalProperties, items, enum, const, anyOf, oneOf, minimum, maximum,
-- exclusiveMinimum, exclusiveMaximum, minLength, maxLength, minItems,
-- maxItems, and pattern where it is cheap: the regular expressions made of
-- character classes ([a-z], \d, \w, \s, .), anchors, and the quantifiers
-- * + ? {n} {n,m} are checked (bytewise, as Lua patterns); one that uses
-- alternation, groups or lookaround is reported once in the log and not
-- checked.

local core = require "spool.core"
local json = require "spool.json"

local M = {}

local SIMPLE = {
  string = true, number = true, integer = true, boolean = true,
  object = true, array = true, null = true,
}


-- Expands one shorthand property into { schema, required }.
local function expand_property(name, spec, where)
  if type(spec) == "string" then
    local optional = spec:sub(-1) == "?"
    local t = optional and spec:sub(1, -2) or spec
    local array = t:sub(-2) == "[]"
    if array then
      t = t:sub(1, -3)
    end
    if not SIMPLE[t] then
      error(string.format("%s: parameter '%s' has unknown type '%s'", where,
        name, spec), 0)
    end
    local s = { type = t }
    if array then
      s = { type = "array", items = s }
    end
    return s, not optional
  elseif type(spec) == "table" then
    local s, optional = {}, false
    for k, v in pairs(spec) do
      if k == "optional" then
        optional = v and true or false
      else
        s[k] = v
      end
    end
    return s, not optional
  end
  error(string.format("%s: parameter '%s' must be a type name or a schema "
    .. "table, not a %s", where, name, type(spec)), 0)
end


-- ---- the vocabulary ----

-- The JSON Schema keywords (2020-12, and the older drafts' items and
-- definitions), and where each takes subschemas: "one" a schema, "map"
-- name -> schema, "list" schemas. A schema is checked against these when
-- an agent loads, so a typo ("requird", type = "strng") is an error then,
-- not a constraint silently unchecked.
local KEYWORDS = {
  type = true, enum = true, const = true, required = true, format = true,
  minimum = true, maximum = true, exclusiveMinimum = true,
  exclusiveMaximum = true, multipleOf = true, minLength = true,
  maxLength = true, pattern = true, minItems = true, maxItems = true,
  uniqueItems = true, minProperties = true, maxProperties = true,
  minContains = true, maxContains = true, dependentRequired = true,
  title = true, description = true, default = true, examples = true,
  readOnly = true, writeOnly = true, deprecated = true, nullable = true,
  contentEncoding = true, contentMediaType = true, ["$schema"] = true,
  ["$id"] = true, ["$ref"] = true, ["$comment"] = true, ["$anchor"] = true,
  properties = "map", patternProperties = "map", ["$defs"] = "map",
  definitions = "map", dependentSchemas = "map", prefixItems = "list",
  anyOf = "list", oneOf = "list", allOf = "list", items = "one",
  additionalProperties = "one", ["not"] = "one", ["if"] = "one",
  ["then"] = "one", ["else"] = "one", contains = "one",
  propertyNames = "one", unevaluatedProperties = "one",
  unevaluatedItems = "one",
  -- spool's own: other names for an enum's values (spool.coerce reads a
  -- model's "urgent" as "high" with aliases = { urgent = "high" })
  aliases = true,
}


-- The edit distance of two short words (for "did you mean").
local function distance(a, b)
  local prev = {}
  for j = 0, #b do
    prev[j] = j
  end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end


-- " (did you mean 'x'?)" for the word of `set` nearest to `word`, or "".
local function suggestion(word, set)
  local best, best_d = nil, 3
  for k in pairs(set) do
    local d = distance(word:lower(), k:lower())
    if d < best_d then
      best, best_d = k, d
    end
  end
  return best and string.format(" (did you mean '%s'?)", best) or ""
end


local function check_type(t, at)
  for _, name in ipairs(type(t) == "table" and t or { t }) do
    if not SIMPLE[name] then
      error(string.format("%s: type '%s' is not a JSON Schema type (string, "
        .. "number, integer, boolean, object, array, null)%s", at,
        tostring(name), type(name) == "string"
          and suggestion(name, SIMPLE) or ""), 0)
    end
  end
end


-- Checks a schema's keywords and their values; raises "where: why".
function M.check_vocabulary(schema, where)
  if type(schema) == "boolean" then
    return
  end
  if type(schema) ~= "table" then
    error(where .. ": a schema must be a table (or true/false)", 0)
  end
  for k, v in pairs(schema) do
    local kind = KEYWORDS[k]
    if not kind then
      error(string.format("%s: '%s' is not a JSON Schema keyword%s", where,
        tostring(k), type(k) == "string" and suggestion(k, KEYWORDS) or ""),
        0)
    end
    local at = where .. "." .. k
    if k == "type" then
      check_type(v, at)
    elseif k == "required" then
      if type(v) ~= "table" then
        error(at .. ": must be a list of property names", 0)
      end
      for _, name in ipairs(v) do
        if type(name) ~= "string" then
          error(at .. ": must be a list of property names", 0)
        end
      end
    elseif k == "enum" and type(v) ~= "table" then
      error(at .. ": must be a list of values", 0)
    elseif kind == "one" then
      M.check_vocabulary(v, at)
    elseif kind == "list" or (k == "items" and type(v) == "table"
        and v[1] ~= nil) then
      if type(v) ~= "table" then
        error(at .. ": must be a list of schemas", 0)
      end
      for i, sub in ipairs(v) do
        M.check_vocabulary(sub, at .. "[" .. i .. "]")
      end
    elseif kind == "map" then
      if type(v) ~= "table" then
        error(at .. ": must be a table of name = schema", 0)
      end
      for name, sub in pairs(v) do
        M.check_vocabulary(sub, at .. "." .. tostring(name))
      end
    end
  end
end


-- Returns the JSON Schema for a tool's params (shorthand or full schema).
-- `where` names the tool in error messages. Raises on a malformed spec.
function M.params(spec, where)
  if spec == nil then
    return { type = "object", properties = {}, additionalProperties = false }
  end
  if type(spec) ~= "table" then
    error(where .. ": params must be a table", 0)
  end
  if spec.type == "object" then
    M.check_vocabulary(spec, where .. ": params")
    return spec
  end
  local props, required = {}, {}
  for name, p in pairs(spec) do
    if type(name) ~= "string" then
      error(where .. ": params must be keyed by parameter name", 0)
    end
    local s, req = expand_property(name, p, where)
    props[name] = s
    if req then
      required[#required + 1] = name
    end
  end
  table.sort(required)
  local schema = { type = "object", properties = props,
                   additionalProperties = false }
  M.check_vocabulary(schema, where .. ": params")
  if #required > 0 then
    schema.required = json.array(required)
  end
  return schema
end


-- The JSON type of a Lua value, as JSON Schema names it.
function M.type_of(v)
  local t = type(v)
  if v == nil or v == json.null then
    return "null"
  elseif t == "number" then
    if math.type(v) == "integer" or (v == math.floor(v) and v == v
        and v ~= math.huge and v ~= -math.huge) then
      return "integer"
    end
    return "number"
  elseif t == "table" then
    if json.is_array(v) then
      return "array"
    end
    if next(v) == nil then
      return "object"
    end
    local n = #v
    if n > 0 and next(v, n) == nil then
      return "array"
    end
    return "object"
  elseif t == "userdata" and (getmetatable(v) or {}).__name == "json.raw"
      and tostring(v):find("^%-?%d+$") then
    return "integer" -- past 64 bits (other json.raw values are the
                     -- library's encoded parts, no value of a document)
  end
  return t
end


-- ---- pattern: a subset of ECMA-262 regular expressions as Lua patterns

local ESCAPES = { d = "%d", D = "%D", w = "[%w_]", W = "[^%w_]", s = "%s",
                  S = "%S" }
local IN_CLASS = { d = "%d", w = "%w_", s = "%s" }

-- Translates a regular expression; returns a Lua pattern, or nil and why.
local function translate(re)
  local out, i, n = {}, 1, #re
  local anchored_start = re:sub(1, 1) == "^"
  if anchored_start then
    out[1] = "^"
    i = 2
  end
  while i <= n do
    local c = re:sub(i, i)
    local atom
    if c == "\\" then
      local e = re:sub(i + 1, i + 1)
      if e == "" then
        return nil, "a pattern that ends with a backslash"
      end
      atom = ESCAPES[e] or (e:match("%w") and nil or ("%" .. e))
      if not atom then
        return nil, "the escape \\" .. e
      end
      i = i + 2
    elseif c == "[" then
      local j, class = i + 1, { "[" }
      if re:sub(j, j) == "^" then
        class[2] = "^"
        j = j + 1
      end
      while j <= n and re:sub(j, j) ~= "]" do
        local d = re:sub(j, j)
        if d == "\\" then
          local e = re:sub(j + 1, j + 1)
          class[#class + 1] = IN_CLASS[e] or ("%" .. e)
          j = j + 2
        else
          class[#class + 1] = d:match("[%^%]%%]") and ("%" .. d) or d
          j = j + 1
        end
      end
      if j > n then
        return nil, "an unclosed ["
      end
      class[#class + 1] = "]"
      atom = table.concat(class)
      i = j + 1
    elseif c == "." then
      atom = "."
      i = i + 1
    elseif c == "$" and i == n then
      out[#out + 1] = "$"
      i = i + 1
    elseif c:match("[|()]") then
      return nil, "'" .. c .. "' (alternation or groups)"
    elseif c:match("[%*%+%?{]") then
      return nil, "a quantifier with nothing before it"
    else
      atom = c:match("%p") and ("%" .. c) or c
      i = i + 1
    end
    if atom then
      local q = re:sub(i, i)
      if q == "*" or q == "+" or q == "?" then
        if re:sub(i + 1, i + 1) == "?" then
          return nil, "a lazy quantifier"
        end
        out[#out + 1] = atom .. q
        i = i + 1
      elseif q == "{" then
        local lo, hi, close = re:match("^{(%d+),?(%d*)}()", i)
        local comma = re:sub(i, close or i):find(",")
        if not lo then
          return nil, "a malformed {n,m}"
        end
        lo = tonumber(lo)
        hi = hi ~= "" and tonumber(hi) or (comma and -1 or lo)
        if lo > 100 or hi > 100 then
          return nil, "a repeat count over 100"
        end
        out[#out + 1] = atom:rep(lo)
        if hi == -1 then
          out[#out + 1] = atom .. "*"
        elseif hi > lo then
          out[#out + 1] = (atom .. "?"):rep(hi - lo)
        end
        i = close
      else
        out[#out + 1] = atom
      end
    end
  end
  return table.concat(out)
end

local translated = {}
local warned = {}


-- Does s match the regular expression? nil when the expression is beyond
-- the subset (logged once).
local function matches_pattern(s, re)
  local t = translated[re]
  if t == nil then
    local pat, why = translate(re)
    t = pat or false
    translated[re] = t
    if not pat and not warned[re] then
      warned[re] = true
      core.log("warn", string.format("spool.schema: the "
        .. "pattern %q uses %s, which spool does not check", re, why))
    end
  end
  if not t then
    return nil
  end
  return s:find(t) ~= nil
end


local function type_ok(want, got)
  return want == got or (want == "number" and got == "integer")
end


local function show(v)
  local ok, s = pcall(json.encode, v)
  s = ok and s or tostring(v)
  if #s > 40 then
    s = s:sub(1, 37) .. "..."
  end
  return s
end


-- Are two values the same JSON value? (Tables compare by their encoding:
-- keys are written sorted.)
function M.same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then
    return a == b
  end
  local ok1, ea = pcall(json.encode, a)
  local ok2, eb = pcall(json.encode, b)
  return ok1 and ok2 and ea == eb
end


local check, check_alternatives


-- Checks v against schema s; appends "path: problem" strings to errs.
-- With path nil it only counts the problems: no paths are built and
-- properties are visited in any order (spool.check's first pass).
check = function(v, s, path, errs)
  if type(s) ~= "table" then
    return
  end
  local got = M.type_of(v)
  local want = s.type
  if want then
    local ok = false
    if type(want) == "table" then
      for _, w in ipairs(want) do
        if type_ok(w, got) then
          ok = true
        end
      end
    else
      ok = type_ok(want, got)
    end
    if not ok then
      errs[#errs + 1] = path and string.format("%s: expected %s, got %s",
        path, type(want) == "table" and table.concat(want, " or ") or want,
        got) or false
      return
    end
  end
  if s.const ~= nil and not M.same(v, s.const) then
    errs[#errs + 1] = string.format("%s: must be %s", path, show(s.const))
  end
  if s.enum then
    local found = false
    for _, e in ipairs(s.enum) do
      if M.same(v, e) then
        found = true
      end
    end
    if not found then
      local names = {}
      for i, e in ipairs(s.enum) do
        names[i] = show(e)
      end
      errs[#errs + 1] = string.format("%s: must be one of %s, got %s", path,
        table.concat(names, ", "), show(v))
    end
  end
  if got == "integer" or got == "number" then
    if type(v) ~= "number" then
      v = tonumber(tostring(v)) -- a json.raw integer compares as a double
    end
    if s.minimum and v < s.minimum then
      errs[#errs + 1] = string.format("%s: must be >= %s", path, s.minimum)
    end
    if s.maximum and v > s.maximum then
      errs[#errs + 1] = string.format("%s: must be <= %s", path, s.maximum)
    end
    if s.exclusiveMinimum and v <= s.exclusiveMinimum then
      errs[#errs + 1] = string.format("%s: must be > %s", path,
        s.exclusiveMinimum)
    end
    if s.exclusiveMaximum and v >= s.exclusiveMaximum then
      errs[#errs + 1] = string.format("%s: must be < %s", path,
        s.exclusiveMaximum)
    end
  elseif got == "string" then
    local n = utf8.len(v) or #v
    if s.minLength and n < s.minLength then
      errs[#errs + 1] = string.format("%s: must have at least %d characters",
        path, s.minLength)
    end
    if s.maxLength and n > s.maxLength then
      errs[#errs + 1] = string.format("%s: must have at most %d characters",
        path, s.maxLength)
    end
    if type(s.pattern) == "string" and matches_pattern(v, s.pattern) == false
    then
      errs[#errs + 1] = string.format("%s: must match the pattern %s", path,
        s.pattern)
    end
  elseif got == "array" then
    if s.minItems and #v < s.minItems then
      errs[#errs + 1] = string.format("%s: must have at least %d items", path,
        s.minItems)
    end
    if s.maxItems and #v > s.maxItems then
      errs[#errs + 1] = string.format("%s: must have at most %d items", path,
        s.maxItems)
    end
    if s.items then
      for i, item in ipairs(v) do
        check(item, s.items, path and string.format("%s[%d]", path, i), errs)
      end
    end
  elseif got == "object" then
    local props = s.properties or {}
    if s.required then
      for _, name in ipairs(s.required) do
        if v[name] == nil and errs.pending then
          errs.pending[#errs.pending + 1] = path and path .. "." .. name
        elseif v[name] == nil then
          errs[#errs + 1] = path and string.format("%s.%s: is required", path,
            name) or false
        end
      end
    end
    if path == nil then
      for k, item in pairs(v) do
        local sub = props[k] or s.additionalProperties
        if sub == false then
          errs[#errs + 1] = false
        elseif type(sub) == "table" then
          check(item, sub, nil, errs)
        end
      end
      return check_alternatives(v, s, path, errs)
    end
    local names = {}
    for k in pairs(v) do
      names[#names + 1] = k
    end
    table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(names) do
      local sub = props[k]
      local child = string.format("%s.%s", path, tostring(k))
      if sub then
        check(v[k], sub, child, errs)
      elseif s.additionalProperties == false then
        errs[#errs + 1] = string.format("%s: is not a known parameter", child)
      elseif type(s.additionalProperties) == "table" then
        check(v[k], s.additionalProperties, child, errs)
      end
    end
  end
  return check_alternatives(v, s, path, errs)
end


check_alternatives = function(v, s, path, errs)
  local alts = s.anyOf or s.oneOf
  if alts then
    local passing = 0
    for _, alt in ipairs(alts) do
      local e = {}
      check(v, alt, nil, e)
      if #e == 0 then
        passing = passing + 1
      end
    end
    if passing == 0 then
      errs[#errs + 1] = path and string.format("%s: matches none of the "
        .. "allowed forms", path) or false
    elseif s.oneOf and passing > 1 then
      errs[#errs + 1] = path and string.format("%s: matches more than one "
        .. "allowed form", path) or false
    end
  end
end


M.translate_pattern = translate


-- ---- compiled checks ----
-- A schema made once into closures that give check's verdict (no
-- messages): each keyword is looked up once, when compiled, not at every
-- value. For the schemas the library reads again and again (a version's
-- tool parameters). Only well-formed schemas compile; compile returns nil
-- for the rest, which check interprets.

local function pass()
  return true
end

local function opt_type(v, t)
  return v == nil or type(v) == t
end

-- Is s made only of keywords check reads, each of the type it expects?
local function compilable(s)
  local t = s.type
  if type(t) == "table" then
    for _, w in ipairs(t) do
      if type(w) ~= "string" then
        return false
      end
    end
  elseif t ~= nil and type(t) ~= "string" then
    return false
  end
  for _, k in ipairs { "minimum", "maximum", "exclusiveMinimum",
      "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems" } do
    if not opt_type(s[k], "number") then
      return false
    end
  end
  local ap = s.additionalProperties
  return opt_type(s.enum, "table") and opt_type(s.properties, "table")
    and opt_type(s.required, "table") and opt_type(s.anyOf, "table")
    and opt_type(s.oneOf, "table") and opt_type(s.items, "table")
    and (ap == nil or type(ap) == "boolean" or type(ap) == "table")
end

local compile

local function compile_alternatives(s, depth)
  local alts = s.anyOf or s.oneOf
  if not alts then
    return nil
  end
  local checks = {}
  for i, alt in ipairs(alts) do
    checks[i] = compile(alt, depth)
    if not checks[i] then
      return false
    end
  end
  local one = s.oneOf ~= nil
  return function(v)
    local passing = 0
    for i = 1, #checks do
      if checks[i](v) then
        passing = passing + 1
      end
    end
    return passing > 0 and not (one and passing > 1)
  end
end

-- A property's check (props[k], or else additionalProperties, as check
-- picks them): nil when it is not compilable.
local function compile_properties(s, depth)
  local by_name = {}
  for k, sub in pairs(s.properties or {}) do
    if type(sub) == "table" then
      by_name[k] = compile(sub, depth)
      if not by_name[k] then
        return nil
      end
    elseif sub then
      by_name[k] = pass
    end
  end
  local ap, other = s.additionalProperties, pass
  if ap == false then
    other = false
  elseif type(ap) == "table" then
    other = compile(ap, depth)
    if other == nil then
      return nil
    end
  end
  return by_name, other
end

-- Whether object v has the required properties, and each property passes
-- its check (by_name[k], or else `other`; false: none may be there).
local function object_fits(v, required, by_name, other)
  if required then
    for i = 1, #required do
      if v[required[i]] == nil then
        return false
      end
    end
  end
  for k, item in pairs(v) do
    local c = by_name[k]
    if c == nil then
      c = other
    end
    if not c or not c(item) then
      return false
    end
  end
  return true
end

-- Schemas nest at most this deep here (a cycle would never end).
local MAX_COMPILE_DEPTH = 64

compile = function(s, depth)
  if type(s) ~= "table" then
    return pass
  end
  depth = (depth or 0) + 1
  if depth > MAX_COMPILE_DEPTH or not compilable(s) then
    return nil
  end
  local allowed
  if s.type ~= nil then
    allowed = {}
    for _, w in ipairs(type(s.type) == "table" and s.type or { s.type }) do
      allowed[w] = true
      if w == "number" then
        allowed.integer = true
      end
    end
  end
  local const = s.const
  -- An enum's scalars are looked up; its tables (and json.raw integers,
  -- which compare by their digits) compared one by one.
  local enum, enum_set = s.enum, nil
  if enum then
    enum_set = {}
    for _, e in ipairs(enum) do
      local t = type(e)
      if (t == "string" or t == "boolean" or t == "number") and e == e then
        enum_set[e] = true
      end
    end
  end
  local min, max, xmin, xmax = s.minimum, s.maximum, s.exclusiveMinimum,
    s.exclusiveMaximum
  local min_len, max_len = s.minLength, s.maxLength
  local pattern = type(s.pattern) == "string" and s.pattern or nil
  local min_items, max_items = s.minItems, s.maxItems
  local items = s.items and compile(s.items, depth)
  local required = s.required and table.move(s.required, 1, #s.required, 1,
    {})
  local by_name, other = compile_properties(s, depth)
  local alts = compile_alternatives(s, depth)
  if items == nil and s.items or by_name == nil or alts == false then
    return nil
  end
  local type_of, same, math_type = M.type_of, M.same, math.type
  -- The common schemas get closures of their own: a value of one scalar
  -- type, and an object of properties (a tool's arguments, checked at
  -- every call).
  local only = type(s.type) == "string" and s.type
  if only and const == nil and not (enum or alts or items or min or max
      or xmin or xmax or min_len or max_len or pattern or min_items
      or max_items) then
    if only == "string" or only == "boolean" then
      return function(v)
        return type(v) == only
      end
    elseif only == "number" then
      return function(v)
        return type(v) == "number" or type_of(v) == "integer"
      end
    elseif only == "integer" then
      return function(v)
        return math_type(v) == "integer" or type_of(v) == "integer"
      end
    elseif only == "object" then
      return function(v)
        return type(v) == "table" and type_of(v) == "object"
          and object_fits(v, required, by_name, other)
      end
    end
  end
  return function(v)
    -- type_of's answer, without the call for the common kinds
    local tv, got = type(v), nil
    if tv == "string" or tv == "boolean" then
      got = tv
    elseif tv == "number" and math_type(v) == "integer" then
      got = "integer"
    else
      got = type_of(v)
    end
    if allowed and not allowed[got] then
      return false
    end
    if const ~= nil and not same(v, const) then
      return false
    end
    if enum and not (enum_set[v] and tv ~= "table" and tv ~= "userdata") then
      local found = false
      if tv == "table" or tv == "userdata" then
        for _, e in ipairs(enum) do
          if same(v, e) then
            found = true
            break
          end
        end
      end
      if not found then
        return false
      end
    end
    if got == "integer" or got == "number" then
      if type(v) ~= "number" then
        v = tonumber(tostring(v)) -- a json.raw integer, as a double
      end
      if min and v < min or max and v > max or xmin and v <= xmin
          or xmax and v >= xmax then
        return false
      end
    elseif got == "string" then
      if min_len or max_len then
        local n = utf8.len(v) or #v
        if min_len and n < min_len or max_len and n > max_len then
          return false
        end
      end
      if pattern and matches_pattern(v, pattern) == false then
        return false
      end
    elseif got == "array" then
      if min_items and #v < min_items or max_items and #v > max_items then
        return false
      end
      if items then
        for _, item in ipairs(v) do
          if not items(item) then
            return false
          end
        end
      end
    elseif got == "object" and not object_fits(v, required, by_name, other)
    then
      return false
    end
    if alts then
      return alts(v)
    end
    return true
  end
end


-- check(value, schema)'s verdict as a function(value) -> boolean, or nil
-- when schema is not one compile takes (check it then). A schema changed
-- after it is compiled is not seen: compile what stays the same.
function M.compile(s)
  return compile(s)
end


-- Checks value against schema. Returns true, or false and a message that
-- lists every problem, each prefixed with its path under `name`. With a
-- `pending` list, a required property that is missing is not a problem but
-- is appended there as its path (a value still streaming in).
function M.check(value, schema, name, pending)
  local errs = { pending = pending and {} }
  check(value, schema, nil, errs)
  if #errs == 0 and not pending then
    return true
  end
  -- Again, now saying where each problem is, in a stable order.
  errs = { pending = pending }
  check(value, schema, name or "value", errs)
  if #errs == 0 then
    return true
  end
  return false, table.concat(errs, "; ")
end


return M
