-- spool against the MCP conformance suite (@modelcontextprotocol/
-- conformance, pinned in spec/npm): its client scenarios run spool's MCP
-- client (spec/fixtures/mcp_conformance_client.lua, under `spool lua`)
-- against the suite's servers; its server scenarios run against `spool
-- serve`'s /mcp, through a proxy that adds the token the suite cannot
-- send (spec/npm/token_proxy.mjs).
--
-- Left out: the scenarios that call tools only the suite's reference
-- server has (test_tool_with_progress, ...), the client's elicitation
-- (spool's client does not declare it), OAuth (spool's servers take a
-- static token), and dns-rebinding-protection, which the proxy's Host
-- rewriting would decide instead of spool (spool's own Host and Origin
-- checks are in spec/mcp_server_spec.lua).
local h = require "spec.support"
local workers = require "spec.serve_support"

local NPM = h.ROOT .. "/spec/npm"
local SUITE = NPM .. "/node_modules/.bin/conformance"

-- Runs one scenario; returns whether it passed, and what it printed.
local function scenario(args)
  local out, code = h.sh(h.q(SUITE) .. " " .. args .. " 2>&1")
  local passed, all = out:match("Passed: (%d+)/(%d+), 0 failed")
  return code == 0 and passed ~= nil and passed == all
    and not out:find("FAILURE", 1, true), out
end

describe("the MCP conformance suite", function()
  it("passes spool's client", function()
    local dir = h.tmpdir()
    finally(function() h.remove(dir) end)
    -- (The suite splits the command at spaces.)
    local command = string.format("%s --project %s --db :memory: lua %s",
      h.BIN, dir, h.ROOT .. "/spec/fixtures/mcp_conformance_client.lua")
    assert.is_nil(command:find("[\"' ][\"']"))
    for _, name in ipairs { "initialize", "tools_call", "sse-retry" } do
      local ok, out = scenario("client --scenario " .. name .. " --command "
        .. h.q(command))
      assert(ok, name .. ":\n" .. out)
    end
  end)

  it("passes spool's server", function()
    local dir = h.tmpdir()
    h.write_files(dir, { ["agents/w.lua"] = [[
local spool = require "spool"
return spool.agent { prompt = "p.md", tools = { finish = spool.done } }
]], ["prompts/p.md"] = "Work." })
    local mock = h.mock_process(h.ROOT .. "/mock/support.lua")
    local s = workers.serve(dir, mock)
    local port_file = dir .. "/proxy.port"
    h.sh(string.format("node %s %s %s >%s 2>&1 & echo $! >%s.pid",
      h.q(NPM .. "/token_proxy.mjs"), h.q(s.url), h.q(s.token),
      h.q(port_file), h.q(port_file)))
    finally(function()
      h.sh("kill " .. h.slurp(port_file .. ".pid"):match("%d+")
        .. " 2>/dev/null")
      s.kill()
      mock.stop()
      h.remove(dir)
    end)
    local port = h.wait_for(function()
      return tonumber(h.slurp(port_file):match("^(%d+)"))
    end, 10000, "the proxy to listen")
    for _, name in ipairs { "server-initialize", "ping", "tools-list" } do
      local ok, out = scenario("server --scenario " .. name .. " --url "
        .. "http://127.0.0.1:" .. port .. "/mcp")
      assert(ok, name .. ":\n" .. out)
    end
  end)
end)
