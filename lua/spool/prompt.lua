-- spool.prompt: prompt templates, plain text files with substitutions and
-- two kinds of section. No code runs inside a template.
--
--   {{name}}  {{a.b}}              a value; tables render as compact JSON
--   {{#each items}} ... {{/each}}  once per element; inside, {{this}},
--                                  {{this.x}} or just {{x}}, and {{@index}}
--   {{#if x}} ... {{else}} ... {{/if}}   x is true, a non-empty string,
--                                  a non-zero number or a non-empty table
--
-- A name that is not defined is an error naming the template and line
-- (a typo must not silently render as nothing), except as the condition of
-- an {{#if}}. Templates are parsed once and cached by content hash.

local core = require "spool.core"
local json = require "spool.json"

local M = {}

local cache = setmetatable({}, { __mode = "v" })


local function parse_error(name, text, pos, msg)
  local line = select(2, text:sub(1, pos):gsub("\n", "")) + 1
  error(string.format("%s:%d: %s", name, line, msg), 0)
end


-- Parses text into a tree of nodes: strings, { var = path, line = n },
-- { each = path, body = {...} }, { cond = path, body = {...}, alt = {...} }.
local function parse(text, name)
  local root = {}
  local stack = { { nodes = root } }
  local pos = 1
  while true do
    local s, e, tag = text:find("{{(.-)}}", pos)
    local top = stack[#stack]
    local nodes = top.in_alt and top.node.alt or top.nodes
    if not s then
      nodes[#nodes + 1] = text:sub(pos)
      break
    end
    if s > pos then
      nodes[#nodes + 1] = text:sub(pos, s - 1)
    end
    local line = select(2, text:sub(1, s):gsub("\n", "")) + 1
    tag = tag:match("^%s*(.-)%s*$")
    local kind, arg = tag:match("^([#/]%a+)%s*(.-)$")
    if kind == "#each" or kind == "#if" then
      if not arg:match("^[@%w_%.]+$") then
        parse_error(name, text, s, "'" .. kind .. "' needs a name")
      end
      local node = { line = line, body = {} }
      if kind == "#each" then
        node.each = arg
      else
        node.cond = arg
        node.alt = {}
      end
      nodes[#nodes + 1] = node
      stack[#stack + 1] = { nodes = node.body, node = node, kind = kind }
    elseif kind == "/each" or kind == "/if" then
      if #stack == 1 or "#" .. kind:sub(2) ~= top.kind then
        parse_error(name, text, s, "'{{" .. kind .. "}}' without its opening")
      end
      stack[#stack] = nil
    elseif tag == "else" then
      if top.kind ~= "#if" or top.in_alt then
        parse_error(name, text, s, "'{{else}}' outside an {{#if}}")
      end
      top.in_alt = true
    elseif tag:match("^[@%w_%.]+$") then
      nodes[#nodes + 1] = { var = tag, line = line }
    else
      parse_error(name, text, s, "'{{" .. tag .. "}}' is not a variable name "
        .. "or a section")
    end
    pos = e + 1
  end
  if #stack > 1 then
    local open = stack[#stack]
    error(string.format("%s:%d: '{{%s}}' is never closed", name,
      open.node.line, open.kind), 0)
  end
  return root
end


-- Compiles template text; `name` (e.g. "prompts/deploy.md") is used in
-- errors. Returns a template table { name, hash, tree, static = the text
-- when it has no {{...}} at all, so that it renders as it is with any
-- vars }.
function M.compile(text, name)
  local hash = core.sha256(text)
  local t = cache[hash .. name]
  if t then
    return t
  end
  local tree = parse(text, name)
  t = { name = name, hash = hash, text = text, tree = tree,
        static = #tree == 1 and type(tree[1]) == "string" and tree[1]
          or nil }
  cache[hash .. name] = t
  return t
end


local MISSING = {}


-- Looks a dotted path up in the scope chain (innermost first).
local function lookup(scopes, path)
  if path == "this" or path == "@index" then
    local v = scopes[#scopes][path]
    if v == nil then
      return MISSING
    end
    return v
  end
  local first, rest = path:match("^([^%.]+)%.?(.*)$")
  if first == "this" then
    first, rest = rest:match("^([^%.]+)%.?(.*)$")
    if not first then
      return MISSING
    end
    local v = scopes[#scopes].this
    if type(v) ~= "table" then
      return MISSING
    end
    scopes = { v }
  end
  local v = MISSING
  for i = #scopes, 1, -1 do
    local scope = scopes[i]
    local this = scope.this
    if type(this) == "table" and this[first] ~= nil then
      v = this[first]
      break
    end
    if scope[first] ~= nil and first ~= "this" then
      v = scope[first]
      break
    end
  end
  if v == MISSING then
    return MISSING
  end
  for part in rest:gmatch("[^%.]+") do
    if type(v) ~= "table" then
      return MISSING
    end
    v = v[tonumber(part) or part]
    if v == nil then
      return MISSING
    end
  end
  return v
end


local function truthy(v)
  if v == MISSING or v == nil or v == false or v == json.null then
    return false
  end
  if type(v) == "string" then
    return v ~= ""
  elseif type(v) == "number" then
    return v ~= 0
  elseif type(v) == "table" then
    return next(v) ~= nil
  end
  return true
end


local function to_text(v)
  if type(v) == "string" then
    return v
  elseif type(v) == "table" then
    return json.encode(v)
  elseif v == json.null then
    return "null"
  end
  return tostring(v)
end


local function render(nodes, scopes, out, name)
  for _, node in ipairs(nodes) do
    if type(node) == "string" then
      out[#out + 1] = node
    elseif node.var then
      local v = lookup(scopes, node.var)
      if v == MISSING then
        error(string.format("%s:%d: '%s' is not defined", name, node.line,
          node.var), 0)
      end
      out[#out + 1] = to_text(v)
    elseif node.each then
      local list = lookup(scopes, node.each)
      if list == MISSING then
        error(string.format("%s:%d: '%s' is not defined", name, node.line,
          node.each), 0)
      end
      if type(list) == "table" then
        for i, item in ipairs(list) do
          scopes[#scopes + 1] = { this = item, ["@index"] = i }
          render(node.body, scopes, out, name)
          scopes[#scopes] = nil
        end
      end
    else
      if truthy(lookup(scopes, node.cond)) then
        render(node.body, scopes, out, name)
      else
        render(node.alt, scopes, out, name)
      end
    end
  end
end


-- Renders a compiled template with vars. Raises on an undefined name.
function M.render(template, vars)
  local out = {}
  render(template.tree, { vars or {} }, out, template.name)
  return table.concat(out)
end


return M
