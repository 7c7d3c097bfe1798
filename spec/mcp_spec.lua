-- The MCP client over stdio (spool.mcp.client), against the reference
-- server everyone tests with (@modelcontextprotocol/server-everything,
-- pinned in spec/npm and installed by scripts/setup): initialize, every
-- page of tools/list, tools/call with results and errors, a slow call that
-- times out, and a server that dies mid-call.
local h = require "spec.support"
local core = require "spool.core"
local json = require "spool.json"
local http = require "spool.base.http"
local settings = require "spool.base.config"
local client = require "spool.mcp.client"
local servers = require "spool.mcp.servers"
local runner = require "spool.run.runner"
local spool = require "spool"

local EVERYTHING = h.ROOT
  .. "/spec/npm/node_modules/@modelcontextprotocol/server-everything/dist/"
  .. "index.js"

local function everything(extra)
  local spec = { command = { "node", EVERYTHING, "stdio" } }
  for k, v in pairs(extra or {}) do
    spec[k] = v
  end
  return assert(client.stdio("everything", spec))
end

describe("MCP over stdio", function()
  it("initialises, lists every tool and calls one", function()
    local c = everything()
    finally(function() c:close() end)
    assert.are.equal("mcp-servers/everything", c.server.serverInfo.name)
    assert.are.equal(client.PROTOCOL, c.protocol)
    local tools = assert(c:list_tools())
    local echo
    for _, t in ipairs(tools) do
      if t.name == "echo" then
        echo = t
      end
    end
    assert.is_table(echo, "echo is listed")
    assert.are.equal("object", echo.inputSchema.type)
    local res = assert(c:call_tool("echo", { message = "hi there" }))
    assert.are.equal("Echo: hi there", client.result(res))
    -- Two at once: each answer finds its request.
    local other
    core.spawn(function()
      other = client.result(assert(c:call_tool("echo", { message = "b" })))
    end)
    assert.are.equal("Echo: a", client.result(assert(c:call_tool("echo",
      { message = "a" }))))
    h.wait_for(function() return other ~= nil end, 5000, "the other call")
    assert.are.equal("Echo: b", other)
  end)

  it("tells a refused call and a failed tool apart", function()
    local c = everything()
    finally(function() c:close() end)
    local res, err, code = c:call_tool("no-such-tool", {})
    if res then -- (some servers answer an unknown tool with isError)
      local ok, why = client.result(res)
      assert.is_nil(ok)
      assert.is_string(why)
    else
      assert.are.equal("EMCP", code, err)
      assert.matches("MCP server everything refused tools/call", err, 1, true)
    end
    -- Bad arguments: the server's own schema check.
    res, err = c:call_tool("echo", { message = 42 })
    if res then
      assert.is_nil((client.result(res)))
    else
      assert.matches("refused tools/call", err, 1, true)
    end
  end)

  it("times a slow call out and cancels it, and keeps the server", function()
    local c = everything()
    finally(function() c:close() end)
    local res, err, code = c:call_tool("trigger-long-running-operation",
      { duration = 5, steps = 5 }, nil, 300)
    assert.is_nil(res)
    assert.are.equal("ETIMEDOUT", code, err)
    assert.are.equal("Echo: still here",
      client.result(assert(c:call_tool("echo", { message = "still here" }))))
  end)

  it("keeps a call that reports progress going past its timeout, up to "
    .. "max_ms", function()
    local c = everything { max_ms = 2500 }
    finally(function() c:close() end)
    -- 2 s, with progress every 200 ms: each gives another 600 ms.
    local res, err = c:call_tool("trigger-long-running-operation",
      { duration = 2, steps = 10 }, nil, 600)
    assert.matches("completed", tostring(res and client.result(res)), 1,
      true, err)
    local started = core.now()
    local _, err2, code = c:call_tool("trigger-long-running-operation",
      { duration = 8, steps = 40 }, nil, 600)
    assert.are.equal("ETIMEDOUT", code, err2)
    assert.is_true(core.now() - started >= 2400, "it waited max_ms")
  end)

  it("fails the calls in flight when its server dies, and says so",
    function()
    local c = everything()
    finally(function() c:close() end)
    local done
    core.spawn(function()
      done = table.pack(c:call_tool("trigger-long-running-operation",
        { duration = 10, steps = 5 }, nil, 20000))
    end)
    core.sleep(300)
    c.proc:kill(9)
    h.wait_for(function() return done ~= nil end, 5000, "the call to fail")
    assert.is_nil(done[1])
    assert.are.equal("EIO", done[3], done[2])
    assert.matches("MCP server everything stopped", done[2], 1, true)
    local _, err = c:call_tool("echo", { message = "x" })
    assert.matches("stopped", err, 1, true)
  end)

  it("refuses a server it cannot start, naming it", function()
    local c, err = client.stdio("ghost", { command = { "/no/such/server" } })
    assert.is_nil(c)
    assert.matches("cannot start mcp ghost (/no/such/server)", err, 1, true)
    c, err = client.stdio("bad", { command = "node" })
    assert.is_nil(c)
    assert.matches("needs command = { file, arg... }", err, 1, true)
    h.assert_clean()
  end)

  it("gives an agent a filesystem server's tool, named in spool.lua, in "
    .. "one run on the mock model", function()
    local dir = h.tmpdir()
    finally(function() h.remove(dir) end)
    local fs = h.ROOT .. "/spec/npm/node_modules/@modelcontextprotocol/"
      .. "server-filesystem/dist/index.js"
    h.write_files(dir, {
      ["notes/today.txt"] = "Ship the MCP client.\n",
      ["spool.lua"] = string.format([[return {
  mock = "mock.lua",
  mcp = { fs = { command = { "node", %q, %q } } },
}]], fs, dir .. "/notes"),
      ["agents/reader.lua"] = [[
local spool = require "spool"
return spool.agent { prompt = "p.md", tools = {
  read = spool.mcp.tool("fs", "read_text_file", { side_effects = false }),
  finish = spool.done } }
]],
      ["prompts/p.md"] = "Read the file you are given.",
      ["mock.lua"] = string.format([[return { rules = {
  { when = { turns = 0 }, reply = { tool = "read",
      args = { path = %q } } },
  { reply = function(conv)
      return { tool = "finish",
               args = { answer = conv.tool_results[1].content } }
    end } } }]], dir .. "/notes/today.txt"),
    })
    local db = " --db " .. h.q(dir .. "/spool.db") .. " "
    local out, err, code = h.cli("--project " .. h.q(dir) .. db
      .. "run reader --json --input today", nil, "env -u OPENAI_API_KEY")
    assert.are.equal(0, code, err)
    local events = h.json_lines(out)
    local result, tool_result
    for _, ev in ipairs(events) do
      if ev.type == "done" then
        result = ev.data.result
      elseif ev.type == "tool_result" then
        tool_result = ev.data
      end
    end
    assert.matches("Ship the MCP client.", tostring(result), 1, true)
    assert.matches("Ship the MCP client.", json.encode(
      tool_result), 1, true)
    -- The model saw the server's description and schema.
    local thread = events[1].thread
    local seen, perr0, pcode0 = h.cli("--project " .. h.q(dir) .. db
      .. "prompt reader --thread " .. thread .. " --step 1",
      nil, "env -u OPENAI_API_KEY")
    assert.are.equal(0, pcode0, perr0)
    assert.matches("Read the complete contents of a file", seen, 1, true)
    assert.matches('"head"', seen, 1, true) -- a parameter of its schema
    -- (spool prompt AGENT starts no server: the tool shows, any-arguments.)
    local _, perr, pcode = h.cli("--project " .. h.q(dir) .. " --db :memory: "
      .. "prompt reader --input x", nil, "env -u OPENAI_API_KEY")
    assert.are.equal(0, pcode, perr)
  end)

  it("gives an agent all of a server's tools it selects, and routes a call "
    .. "approved in another process to one", function()
    local dir = h.tmpdir()
    finally(function() h.remove(dir) end)
    local fs = h.ROOT .. "/spec/npm/node_modules/@modelcontextprotocol/"
      .. "server-filesystem/dist/index.js"
    local notes = dir .. "/notes"
    h.write_files(dir, {
      ["notes/today.txt"] = "Ship it.\n",
      ["spool.lua"] = string.format([[return {
  mock = "mock.lua",
  mcp = { fs = { command = { "node", %q, %q } } },
}]], fs, notes),
      ["agents/clerk.lua"] = [[
local spool = require "spool"
return spool.agent { prompt = "p.md", tools = {
  spool.mcp.tools("fs", { prefix = "fs_", approve = { "write_file" },
    only = { "list_directory", "read_text_file", "write_file" } }),
  finish = spool.done } }
]],
      ["prompts/p.md"] = "Keep the notes.",
      ["mock.lua"] = string.format([[return { rules = {
  { when = { turns = 0 }, reply = { tool = "fs_list_directory",
      args = { path = %q } } },
  { when = { turns = 1 }, reply = { tool = "fs_write_file",
      args = { path = %q, content = "Shipped." } } },
  { reply = function(conv)
      local said = {}
      for _, r in ipairs(conv.tool_results) do
        said[#said + 1] = r.content
      end
      return { tool = "finish", args = { answer = table.concat(said, " | ") } }
    end } } }]], notes, notes .. "/done.txt"),
    })
    local base = "--project " .. h.q(dir) .. " --db "
      .. h.q(dir .. "/spool.db") .. " "
    local env = "env -u OPENAI_API_KEY"
    local out, err, code = h.cli(base .. "run clerk --json --input go", nil,
      env)
    assert.are.equal(3, code, err) -- waits for approval of the write
    local thread = h.json_lines(out)[1].thread
    local seen = h.cli(base .. "prompt clerk --thread " .. thread
      .. " --step 2", nil, env)
    assert.matches('"fs_read_text_file"', seen, 1, true)
    assert.matches("Read the complete contents of a file", seen, 1, true)
    assert.is_nil(seen:find('"fs_move_file"', 1, true)) -- not selected
    assert.is_nil(io.open(notes .. "/done.txt"))
    -- A new process: the call names a tool only the server's list makes.
    out, err, code = h.cli(base .. "resume " .. thread .. " --approve --json",
      nil, env)
    assert.are.equal(0, code, err)
    assert.are.equal("Shipped.", h.slurp(notes .. "/done.txt"))
    local result
    for _, ev in ipairs(h.json_lines(out)) do
      result = ev.type == "done" and ev.data.result or result
    end
    assert.matches("today.txt", tostring(result), 1, true)
  end)

  it("refuses a selection of a server's tools it cannot keep", function()
    assert.has_error(function() spool.mcp.tools("fs", { only = { "a" },
      except = { "b" } }) end, 'spool.mcp.tools("fs"): only or except, not '
      .. "both")
    assert.has_error(function() spool.mcp.tools("fs", { pick = 1 }) end,
      'spool.mcp.tools("fs"): unknown option \'pick\' (only, except, '
      .. "prefix, approve, idempotent, side_effects)")
    local ok, err = pcall(spool.agent, { prompt = "p.md",
      tools = { { run = print } } })
    assert.is_false(ok)
    assert.matches("tools[1] is not spool.mcp.tools(...): every other tool "
      .. "needs a name", err, 1, true)
  end)

  it("speaks Streamable HTTP, and starts over when the server forgot its "
    .. "session", function()
    -- A port free now (the server takes it a moment later).
    local probe = assert(core.listen { host = "127.0.0.1", port = 0,
      handler = function() end })
    local port = probe:port()
    probe:close()
    local function start()
      local p = assert(core.process_spawn { command = { "node", EVERYTHING,
        "streamableHttp" }, env = { "PORT=" .. port,
        "PATH=" .. os.getenv("PATH") }, name = "everything-http" })
      h.wait_for(function()
        return http.request { method = "GET",
          url = "http://127.0.0.1:" .. port .. "/mcp", timeout_ms = 500 }
      end, 15000, "the HTTP server to listen")
      return p
    end
    local server = start()
    finally(function() server:close() end)
    local c = assert(client.http("every", { url = "http://127.0.0.1:" .. port
      .. "/mcp", headers = { ["X-Spec"] = "1" } }))
    finally(function() c:close() end)
    assert.is_string(c.session)
    assert.are.equal("mcp-servers/everything", c.server.serverInfo.name)
    local listed = assert(c:list_tools())
    assert.is_true(#listed > 5)
    assert.are.equal("Echo: over http", client.result(assert(c:call_tool(
      "echo", { message = "over http" }))))
    -- Progress on the call's event stream keeps it going past its timeout.
    local res = assert(c:call_tool("trigger-long-running-operation",
      { duration = 1.5, steps = 10 }, nil, 600))
    assert.matches("completed", client.result(res), 1, true)
    -- A new server knows nothing of the old session: initialised again,
    -- and the call made once more.
    local old = c.session
    server:close()
    server = start()
    assert.are.equal("Echo: again", client.result(assert(c:call_tool(
      "echo", { message = "again" }))))
    assert.are_not.equal(old, c.session)
  end)

  it("offers a tool its server adds from the next step, once the server "
    .. "says its list changed", function()
    local config = settings.get()
    local saved = config.file.mcp
    config.file.mcp = { grow = { command = { "node",
      h.ROOT .. "/spec/npm/growing_server.mjs" } } }
    local mock = h.scripted { { tool = "grow", args = {} },
      { tool = "fresh", args = {} }, "done" }
    finally(function()
      config.file.mcp = saved
      servers.close_all()
      mock.close()
    end)
    local agent = h.agent({ tools = { spool.mcp.tools("grow") } }, mock)
    local t = runner.start(agent, "go")
    h.wait_run(t, 15000)
    assert.are.equal("done", t:status(), table.concat(h.errors(t), " | "))
    local events = json.encode(t.events)
    assert.matches("fresh works", events, 1, true)
    -- The model was offered it: the step's request named it.
    assert.are.same({ "fresh", "grow" }, agent.tool_names)
  end)

  it("tells the server when its thread is cancelled mid-call", function()
    local config = settings.get()
    local saved = config.file.mcp
    config.file.mcp = { every = { command = { "node", EVERYTHING, "stdio" } } }
    local mock = h.scripted { { tool = "slow",
      args = { duration = 30, steps = 5 } }, "done" }
    finally(function()
      config.file.mcp = saved
      servers.close_all()
      mock.close()
    end)
    local agent = h.agent({ tools = { slow = spool.mcp.tool("every",
      "trigger-long-running-operation") } }, mock)
    local t = runner.start(agent, "go")
    h.wait_for(function()
      for _, ev in ipairs(t.events) do
        if ev.type == "intent" then
          return true
        end
      end
    end, 15000, "the call to be under way")
    core.sleep(200)
    assert(runner.cancel(t.id, "enough"))
    h.wait_run(t, 10000) -- long before the 30 s the call would take
    assert.are.equal("cancelled", t:status())
    local said
    for _, text in ipairs(h.errors(t)) do
      said = said or text:find("the thread was cancelled", 1, true)
    end
    assert.is_truthy(said, table.concat(h.errors(t), " | "))
  end)
end)
