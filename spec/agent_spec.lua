-- spool.agent and the agent loader: mistakes are caught when an agent
-- loads, with the file named.
local spool = require "spool"
local agent = require "spool.agent"
local loader = require "spool.run.loader"
local h = require "spec.support"

local function define_error(def)
  local ok, err = pcall(agent.define, def, "agents/x.lua")
  assert.is_false(ok)
  return err
end

describe("spool.agent", function()
  it("normalizes tools into the switch", function()
    local a = agent.define({ prompt = "p.md", tools = {
      b = { params = { x = "string" }, run = function() end },
      a = function() end,
      done = spool.done,
    } }, "agents/x.lua")
    assert.are.same({ "a", "b", "done" }, a.tool_names)
    assert.are.equal("a", a.tools.a.description)
    assert.is_true(a.tools.done.terminal)
    assert.are.same({ "x" }, a.tools.b.schema.required)
    assert.are.equal(10, a.max_steps)
  end)

  it("rejects mistakes with the file and the field named", function()
    assert.are.equal("agents/x.lua: unknown field 'max_stpes' in "
      .. "spool.agent{}", define_error({ prompt = "p", max_stpes = 2 }))
    assert.are.equal("agents/x.lua: max_steps must be a positive integer",
      define_error({ prompt = "p", max_steps = 0 }))
    assert.are.equal("agents/x.lua: tool 'go' has no run function",
      define_error({ prompt = "p", tools = { go = {} } }))
    assert.are.equal("agents/x.lua: tool 'go' has an unknown field 'params_'",
      define_error({ prompt = "p", tools = { go = { run = print, params_ = {} } } }))
    assert.are.equal("agents/x.lua: tool name 'bad name' must be letters, "
      .. "digits, _ or -", define_error({ prompt = "p", tools = {
        ["bad name"] = print } }))
    assert.are.equal("agents/x.lua: an agent needs a prompt (or its own step "
      .. "function)", define_error({}))
    assert.are.equal('agents/x.lua: mode must be "tools" or "json"',
      define_error({ prompt = "p", mode = "xml" }))
    assert.are.equal("agents/x.lua: context must be a function, not a string",
      define_error({ prompt = "p", context = "chat" }))
    -- Full JSON Schema is checked against its vocabulary too.
    assert.are.equal("agents/x.lua: tool 'go': params.properties.name.type: type "
      .. "'strng' is not a JSON Schema type (string, number, integer, "
      .. "boolean, object, array, null) (did you mean 'string'?)",
      define_error({ prompt = "p", tools = { go = { run = print, params = {
        type = "object", properties = { name = { type = "strng" } } } } } }))
    assert.are.equal("agents/x.lua: tool 'go': params: 'requird' is not a "
      .. "JSON Schema keyword (did you mean 'required'?)",
      define_error({ prompt = "p", tools = { go = { run = print, params = {
        type = "object", requird = { "name" } } } } }))
    assert.are.equal("agents/x.lua: tool 'go': params.properties.name: "
      .. "'maxLenght' is not a JSON Schema keyword (did you mean "
      .. "'maxLength'?)", define_error({ prompt = "p", tools = { go = {
        run = print, params = { name = { type = "string", maxLenght = 3 } } }
      } }))
    assert.are.equal("agents/x.lua: output.properties.v: 'enm' is not a JSON "
      .. "Schema keyword (did you mean 'enum'?)", define_error({ prompt = "p",
        output = { type = "object", properties = { v = { enm = { 1 } } } } }))
  end)
end)

describe("the agent loader", function()
  local dir = h.ROOT .. "/spec/fixtures/broken/agents/"

  local function load(name)
    return loader.load_file(dir .. name .. ".lua", name,
      "agents/" .. name .. ".lua", dir .. "../prompts")
  end

  it("loads an agent and versions it by content", function()
    local a = assert(load("ok"))
    assert.are.equal("ok", a.name)
    assert.matches("^%x+$", a.version)
    assert.are.equal(12, #a.version)
  end)

  it("reports each kind of broken agent clearly", function()
    for name, msg in pairs {
      syntax = "^EAGENT: agents/syntax.lua:4: '}' expected",
      noreturn = "^EAGENT: agents/noreturn.lua must return spool.agent{...}, not "
        .. "a nil",
      global = "agents cannot create globals: assigning 'helper' %(declare it "
        .. "local%)",
      escape = "require 'io' is not allowed in an agent",
      nofile = "^ENOTFOUND: unknown agent 'nofile'",
      noprompt = "prompt 'missing.md' cannot be read %(no prompts/missing.md%)",
      badvar = nil,
    } do
      local a, err = load(name)
      assert.is_nil(a)
      assert.matches(msg, err)
    end
  end)

  it("gives agents no io, os.execute, debug or load", function()
    local tmp = h.tmpdir()
    local path = tmp .. "/probe.lua"
    local f = assert(io.open(path, "w"))
    f:write([[
      local spool = require "spool"
      local seen = {}
      for _, name in ipairs { "io", "debug", "load", "loadfile", "dofile",
                              "package", "collectgarbage" } do
        if pcall(function() return _ENV[name] end) then
          seen[#seen + 1] = name
        end
      end
      assert(#seen == 0, "agents can see: " .. table.concat(seen, ", "))
      assert(os.execute == nil and os.exit == nil and os.getenv == nil)
      assert(not pcall(require, "spool.core"))
      assert(not pcall(require, "spool.run.runner"))
      return spool.agent { prompt = "classify.md" }
    ]])
    f:close()
    local a, err = loader.load_file(path, "probe", "agents/probe.lua")
    h.sh("rm -rf " .. h.q(tmp))
    assert.is_nil(err)
    assert.are.equal("probe", a.name)
  end)

  it("keeps agents apart from the host, and from modules outside spool",
    function()
      local tmp = h.tmpdir()
      finally(function() h.remove(tmp) end)
      h.write_files(tmp, { ["spool/evil.lua"] = "return { io = io }" })
      local saved = package.path
      package.path = tmp .. "/?.lua;" .. package.path
      finally(function() package.path = saved end)
      local dir, restore = h.project({ ["agents/apart.lua"] = [[
        local spool = require "spool"
        string.agent_marker = 1
        assert(getmetatable("") == nil, "the string metatable")
        assert(getmetatable(_ENV) == nil, "the environment's metatable")
        local ok, err = pcall(require, "spool.evil")
        assert(not ok and err:match("not allowed"), "spool.evil: " .. tostring(err))
        return spool.agent { step = function() end }
      ]] })
      finally(restore)
      assert(dir)
      local a, err = loader.load("apart")
      assert.is_nil(err)
      assert.is_truthy(a)
      assert.is_nil(string.agent_marker)
    end)

  it("loads a prompt over a structured input, and still finds typos",
    function()
      local _, restore = h.project({
        ["agents/sub.lua"] = [[
          local spool = require "spool"
          return spool.agent { prompt = "sub.md" }
        ]],
        ["prompts/sub.md"] = "Look up {{input.order_id}} for {{input.who.name}}.",
        ["agents/typo.lua"] = [[
          local spool = require "spool"
          return spool.agent { prompt = "typo.md" }
        ]],
        ["prompts/typo.md"] = "Look up {{inptu.order_id}}.",
      })
      finally(restore)
      local a, err = loader.load("sub")
      assert.is_nil(err)
      assert.truthy(a)
      a, err = loader.load("typo")
      assert.is_nil(a)
      assert.matches("'inptu.order_id' is not defined", err)
    end)

  it("reads the helper modules an agent requires by literal name",
    function()
      local _, restore = h.project({
        ["agents/helped.lua"] = [==[
          local spool = require "spool"
          -- local old = require "gone"      (a comment: not read)
          local note = "write require('nowhere') to use it"
          local policy = require [[policy]]
          local name = "policy"
          local same = require(name)  -- computed, but read above
          assert(same == policy)
          local ok, err = pcall(function() local n = "other"; return require(n) end)
          assert(not ok and err:match("required by a string literal"), err)
          return spool.agent { step = function() end }
        ]==],
        ["agents/cycle.lua"] = [[
          local spool = require "spool"
          local a = require "ping"
          return spool.agent { step = function() end }
        ]],
        ["agents/renamed.lua"] = [[
          local spool = require "spool"
          return spool.agent { name = "other", step = function() end }
        ]],
        ["lib/policy.lua"] = "return { limit = 50 }",
        ["lib/ping.lua"] = 'return require "pong"',
        ["lib/pong.lua"] = 'return require "ping"',
      })
      finally(restore)
      local a, err = loader.load("helped")
      assert.is_nil(err)
      assert.are.same({ "agents/helped.lua", "lib/policy.lua" },
        (function()
          local paths = {}
          for path in pairs(a.files) do
            paths[#paths + 1] = path
          end
          table.sort(paths)
          return paths
        end)())
      _, err = loader.load("cycle")
      assert.matches("require 'ping': helper modules require each other in a "
        .. "cycle", err)
      _, err = loader.load("renamed")
      assert.matches("agents/renamed.lua: name 'other' must be the file's "
        .. "name, 'renamed'", err)
    end)

  it("refuses names that could leave agents/", function()
    for _, name in ipairs { "../x", "a/b", "", "a b" } do
      local a, err = loader.load(name)
      assert.is_nil(a)
      assert.matches("^EINVAL: invalid agent name", err)
    end
  end)
end)
