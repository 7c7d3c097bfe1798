-- Child processes on the loop (spool.core.process_spawn), the ground an
-- MCP server over stdio stands on (issue 23): lines in and out, stderr to
-- the log, exit codes and signals, timeouts, bounds; never a blocked loop.
-- (spool.core is the engine's: spec/sandbox_spec.lua keeps it from agents.)
local h = require "spec.support"
local core = require "spool.core"

local function sh(script, env)
  return assert(core.process_spawn { command = { "/bin/sh", "-c", script },
                                     env = env, name = "child" })
end

describe("child processes", function()
  it("talk in lines: what is written comes back, each line once", function()
    local p = sh("while read -r l; do echo \"got $l\"; done")
    assert(p:write("one\ntwo\n"))
    assert.are.equal("got one", p:read_line(5000))
    assert.are.equal("got two", p:read_line(5000))
    assert(p:write("{\"jsonrpc\":\"2.0\"}\r\n"))
    assert.are.equal('got {"jsonrpc":"2.0"}', p:read_line(5000))
    p:kill()
    local status, signal = p:wait(5000)
    assert.are.equal(0, status)
    assert.are.equal(15, signal)
    local line, err, code = p:read_line(1000)
    assert.is_nil(line)
    assert.are.equal("EPIPE", code, err)
    p:close()
    h.assert_clean()
  end)

  it("reports its exit, its environment, and the end of its output",
    function()
    local p = sh("echo \"$GREETING\"; echo partial without end >&1; "
      .. "printf last; exit 3", { "GREETING=hello" })
    assert.are.equal("hello", p:read_line(5000))
    assert.are.equal("partial without end", p:read_line(5000))
    local line, _, code = p:read_line(5000) -- "last" never ends its line
    assert.is_nil(line)
    assert.are.equal("EPIPE", code)
    assert.are.equal(3, (p:wait(5000)))
    local ok, err = p:write("late\n")
    assert.is_nil(ok)
    assert.matches("EPIPE: child is not running", err)
    p:close()
  end)

  it("times out a read without stopping the loop, and kills on close",
    function()
    local p = sh("sleep 30")
    local t0 = core.now()
    local ticks = 0
    core.spawn(function()
      for _ = 1, 5 do
        core.sleep(20)
        ticks = ticks + 1
      end
    end)
    local line, err, code = p:read_line(200)
    assert.is_nil(line)
    assert.are.equal("ETIMEDOUT", code, err)
    assert.are.equal(5, ticks) -- the loop went on meanwhile
    assert.is_true(core.now() - t0 >= 150)
    local pid = p:pid()
    p:close()
    h.wait_for(function() return not core.process_alive(pid) end, 5000,
      "the child to die")
    h.assert_clean()
  end)

  it("refuses what it cannot start, and a line past its bound", function()
    local p, err = core.process_spawn { command = { "/no/such/program" } }
    assert.is_nil(p)
    assert.matches("cannot start /no/such/program", err)
    p = sh("head -c 17000000 /dev/zero | tr '\\\\0' a")
    local line
    line, err = p:read_line(20000)
    assert.is_nil(line)
    assert.matches("without a line being read", err)
    p:close()
    h.assert_clean()
  end)
end)
