-- The library's house rules (issue 21): modules require each other only at
-- load time, at the top, and never in a circle — so the order the tree
-- shows (base, model, run, the public library, serve, cli) is the order
-- they load in, and a module can be read knowing only what is below it.
local h = require "spec.support"
local requires = require "spool.run.requires"

-- Requires inside a function body that are meant to be there (a module
-- that must not load unless used), with the reason.
local LAZY = {
  ["spool.engine spool.serve"] = "only spool serve needs the service; "
    .. "every other command would load it (and the control API) for nothing",
}

-- Modules the engine provides in C (spool.h's preloads), not files.
local NATIVE = { ["spool.core"] = true, ["spool.json"] = true }

local function graph()
  local modules, edges = {}, {}
  for _, m in ipairs(h.library_modules()) do
    modules[m.name] = m
    edges[m.name] = {}
    for _, r in ipairs(requires.find(h.slurp(m.path))) do
      if r.name == "spool" or r.name:match("^spool%.") then
        r.from = m.name
        edges[m.name][#edges[m.name] + 1] = r
      end
    end
  end
  return modules, edges
end

describe("the Lua library", function()
  it("requires only modules that exist", function()
    local modules, edges = graph()
    local missing = {}
    for name, list in pairs(edges) do
      for _, r in ipairs(list) do
        if not modules[r.name] and not NATIVE[r.name] then
          missing[#missing + 1] = string.format("%s:%d requires %s", name,
            r.line, r.name)
        end
      end
    end
    table.sort(missing)
    assert.same({}, missing)
  end)

  it("requires at the top of a module, not inside a function", function()
    local _, edges = graph()
    local lazy = {}
    for name, list in pairs(edges) do
      for _, r in ipairs(list) do
        if r.lazy and not LAZY[name .. " " .. r.name] then
          lazy[#lazy + 1] = string.format("%s:%d requires %s in a function",
            name, r.line, r.name)
        end
      end
    end
    table.sort(lazy)
    assert.same({}, lazy)
  end)

  it("has no circle of requires", function()
    local modules, edges = graph()
    local state, path, circles = {}, {}, {}
    local function visit(name)
      state[name] = "open"
      path[#path + 1] = name
      for _, r in ipairs(edges[name] or {}) do
        if state[r.name] == "open" then
          local from = 1
          while path[from] ~= r.name do
            from = from + 1
          end
          circles[#circles + 1] = table.concat(path, " -> ", from)
            .. " -> " .. r.name
        elseif state[r.name] == nil and modules[r.name] then
          visit(r.name)
        end
      end
      path[#path] = nil
      state[name] = "done"
    end
    local names = {}
    for name in pairs(modules) do
      names[#names + 1] = name
    end
    table.sort(names)
    for _, name in ipairs(names) do
      if state[name] == nil then
        visit(name)
      end
    end
    assert.same({}, circles)
  end)

  it("finds requires the way the checks above rely on", function()
    local found = requires.find([==[
local a = require "spool.a"
local function f()
  if x then
    return require("spool.b")
  end
  local t = { ["end"] = 1 } -- end
end
for i = 1, 2 do local c = require 'spool.c' end
repeat local d = require [[spool.d]] until true
return function() return require "spool.e" end
]==])
    local seen = {}
    for _, r in ipairs(found) do
      seen[#seen + 1] = string.format("%s:%d:%s", r.name, r.line,
        tostring(r.lazy))
    end
    assert.same({ "spool.a:1:false", "spool.b:4:true", "spool.c:8:false",
                  "spool.d:9:false", "spool.e:10:true" }, seen)
  end)
end)
