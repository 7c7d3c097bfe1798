-- spool's agents as MCP tools (issue 23), driven by the official MCP SDK's
-- client (spec/npm/sdk_client.mjs, pinned in spec/npm): over `spool
-- serve`'s /mcp (Streamable HTTP) and over `spool mcp` (stdio). Listing,
-- calling with progress, a thread that waits for a person (reported, or
-- asked through the client's forms), a cancelled call; and the gate.
local h = require "spec.support"
local json = require "spool.json"
local workers = require "spec.serve_support"

local curl = workers.curl

-- The agent w of spec/fixtures/desk: notes steps, refunds (with a
-- person's approval), asks a person; its mock model is there too.
local DESK = h.ROOT .. "/spec/fixtures/desk"

local CLIENT = h.ROOT .. "/spec/npm/sdk_client.mjs"

local function project(latency)
  local dir = h.tmpdir()
  h.sh(string.format("cp -R %s/. %s", h.q(DESK), h.q(dir)))
  h.write_files(dir, { ["agents/broken.lua"] = "return {" })
  local mock = h.mock_process(dir .. "/mock.lua", nil,
    "SPEC_LATENCY=" .. (latency or 0))
  finally(function()
    mock.stop()
    h.remove(dir)
  end)
  return dir, mock
end

local function serve(dir, mock)
  local s = workers.serve(dir, mock)
  finally(s.kill)
  return s
end

-- Runs the SDK's client on a plan; returns its lines, decoded, and what
-- it printed (stderr too: a stdio server's log).
local function sdk(plan)
  local err = os.tmpname()
  local out, code = h.sh("node " .. h.q(CLIENT) .. " "
    .. h.q(json.encode(plan)) .. " 2>" .. h.q(err))
  out = out .. h.slurp(err)
  os.remove(err)
  local lines = {}
  for line in out:gmatch("[^\n]+") do
    lines[#lines + 1] = json.decode(line)
  end
  assert(code == 0, out)
  return lines, out
end

local function text_of(result)
  return result.content[1].text
end

local function over_http(s)
  return { url = s.url .. "/mcp", token = s.token }
end

describe("spool as an MCP server", function()
  it("lists its agents and runs one for the SDK's client over HTTP, with "
    .. "progress per step", function()
    local dir, mock = project()
    local s = serve(dir, mock)
    local lines, out = sdk { http = over_http(s), steps = {
      { list = true },
      { call = "w", arguments = { input = "steps:3" }, progress = true },
      { call = "w", arguments = { nothing = 1 } },
      { call = "nobody", arguments = { input = "x" } } } }
    assert.are.equal("spool", lines[1].server.name, out)
    assert.is_string(lines[1].session)
    local tools = {}
    for _, t in ipairs(lines[2].tools) do
      tools[t.name] = t
    end
    assert.is_nil(tools.broken, out) -- the broken agent is not offered
    assert.is_table(tools.boss, out)
    assert.matches("Does small jobs", tools.w.description)
    assert.are.same({ "input" }, tools.w.inputSchema.required)
    local call = lines[3]
    assert.are.equal("done after 3", text_of(call.result), out)
    assert.is_not_true(call.result.isError)
    local thread = call.result._meta["spool/thread"]
    assert.matches("^t_", thread)
    assert.is_true(#call.progress >= 3, out)
    for i, p in ipairs(call.progress) do
      assert.are.equal(i, p.progress)
    end
    -- The thread is an ordinary one: the API has it, done.
    local _, v = curl(s, "GET", "/v1/threads/" .. thread)
    assert.are.equal("done", v.status)
    assert.are.equal("done after 3", v.result)
    assert.is_true(lines[4].result.isError, out)
    assert.matches('need "input"', text_of(lines[4].result))
    assert.matches("unknown tool: nobody", lines[5].error, 1, true)
  end)

  it("says what a waiting thread waits for, or asks through the client's "
    .. "forms where it can", function()
    local dir, mock = project()
    local s = serve(dir, mock)
    local lines, out = sdk { http = over_http(s), steps = {
      { call = "w", arguments = { input = "refund please" } } } }
    local waiting = lines[2].result
    assert.is_not_true(waiting.isError)
    assert.are.equal("waiting", waiting.structuredContent.status, out)
    assert.are.equal("approval", waiting.structuredContent.waiting_for.kind)
    assert.are.equal("refund", waiting.structuredContent.waiting_for.name)
    local thread = waiting.structuredContent.thread
    assert.matches("Thread " .. thread .. " waits for approval of refund",
      text_of(waiting), 1, true)
    local _, v = curl(s, "GET", "/v1/threads/" .. thread)
    assert.are.equal("waiting", v.status)
    -- A client that can show forms is asked, and its answer goes on.
    lines, out = sdk { http = over_http(s),
      elicit = { action = "accept", content = { answer = "blue" } },
      steps = { { call = "w", arguments = { input = "ask me" } } } }
    assert.are.equal("done after 1: blue", text_of(lines[2].result), out)
    assert.are.equal("Which colour?", lines[3].elicited[1].message)
    lines, out = sdk { http = over_http(s),
      elicit = { action = "accept", content = { approve = true } },
      steps = { { call = "w", arguments = { input = "refund please" } } } }
    assert.are.equal("done after 1: refunded 5", text_of(lines[2].result),
      out)
    assert.matches("^Approve refund", lines[3].elicited[1].message)
    -- Declined: the thread waits, and the result says so.
    lines, out = sdk { http = over_http(s), elicit = { action = "decline" },
      steps = { { call = "w", arguments = { input = "refund please" } } } }
    assert.are.equal("waiting", lines[2].result.structuredContent.status, out)
    -- Who approved is the caller the token names.
    local id = lines[2].result.structuredContent.thread
    assert.are.equal(202, (curl(s, "POST", "/v1/threads/" .. id .. "/events",
      '{"type":"reject","reason":"no"}')))
  end)

  it("keeps a thread waiting when a form's answer does not fit the form, "
    .. "and answers the call when the thread is answered elsewhere",
    function()
    local dir, mock = project()
    local s = serve(dir, mock)
    -- A reason that is not text was once a thread failed, and an internal
    -- error (a path in spool) in the result.
    local lines, out = sdk { http = over_http(s), elicit = {
        action = "accept", content = { approve = "true", reason = { x = 1 } } },
      steps = { { call = "w", arguments = { input = "refund please" } } } }
    local waiting = lines[2].result
    assert.are.equal("waiting", waiting.structuredContent.status, out)
    assert.is_nil(text_of(waiting):find("lua", 1, true))
    local _, v = curl(s, "GET", "/v1/threads/"
      .. waiting.structuredContent.thread)
    assert.are.equal("waiting", v.status)
    -- A person who never answers the form; the thread is approved through
    -- the API instead: the call ends then, not when the form gives up.
    local file = dir .. "/sdk.out"
    h.sh(string.format("node %s %s >%s 2>&1 &", h.q(CLIENT),
      h.q(json.encode { http = over_http(s), elicit = { hang = true },
        steps = { { call = "w", arguments = { input = "refund now" } } } }),
      h.q(file)))
    local id = h.wait_for(function()
      local _, list = curl(s, "GET", "/v1/threads?status=waiting")
      for _, t in ipairs(list.threads) do
        if t.id ~= waiting.structuredContent.thread then
          return t.id
        end
      end
    end, 10000, "the call's thread to wait")
    h.wait_for(function() return h.slurp(file):find("hanging") end, 10000,
      "the form to be shown")
    assert.are.equal(202, (curl(s, "POST", "/v1/threads/" .. id .. "/events",
      '{"type":"approve"}')))
    h.wait_for(function()
      return h.slurp(file):find("done after 1: refunded 5", 1, true)
    end, 10000, "the call to answer: " .. h.slurp(file))
  end)

  it("answers every malformed message as JSON-RPC says, on both transports",
    function()
    local dir, mock = project(300)
    local s = serve(dir, mock)
    local status, v = curl(s, "POST", "/mcp", "{}")
    assert.are.equal(400, status)
    assert.are.equal(-32600, v.error.code)
    assert.are.equal(json.null, v.id)
    for body, want in pairs {
      ['{"jsonrpc":"2.0","id":1,"method":5}'] = { -32600, 1 },
      ['{"jsonrpc":"1.0","id":4,"method":"ping"}'] = { -32600, 4 },
      ['{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}'] = { -32600 },
      ['{"jsonrpc":"2.0","id":5,"method":"ping","params":"x"}'] = { -32602,
        5 } } do
      status, v = curl(s, "POST", "/mcp", body)
      assert.are.equal(want[1], v.error and v.error.code, body)
      assert.are.equal(want[2] or json.null, v.id, body)
    end
    -- Over stdio: a line that is not JSON, one that is not a request, and
    -- a request id used twice while its call is in flight.
    local call = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":'
      .. '{"name":"w","arguments":{"input":"steps:1"}}}'
    local out = h.sh(string.format("(printf '%%s\n' %s %s %s %s; sleep 3) | "
      .. "%s --project %s --base-url %s --db :memory: mcp", h.q("nonsense"),
      h.q("[1,2]"), h.q(call), h.q(call), h.q(h.BIN), h.q(dir), mock.url))
    local replies = h.json_lines(out)
    assert.are.equal(4, #replies, out)
    local codes = {}
    for _, r in ipairs(replies) do
      codes[#codes + 1] = r.error and r.error.code or r.result.content[1].text
    end
    assert.are.same({ -32700, -32600, -32600, "done after 1" }, codes)
  end)

  it("stops reading a stdio client's requests while it does not read the "
    .. "replies, and writes every reply before it exits", function()
    local dir, mock = project()
    local command = string.format("-- %s --project %s --base-url %s --db "
      .. ":memory: mcp", h.q(h.BIN), h.q(dir), mock.url)
    local flood = h.q(h.ROOT .. "/spec/npm/stdio_flood.mjs")
    -- 24 MB of requests (a reply queue of 16 MiB at most), unread for 2 s:
    -- replies were dropped, silently.
    local got = json.decode(h.sh("node " .. flood .. " 60 400000 2000 open "
      .. command))
    assert.are.same({ replies = 60, ids_in_order = true, errors = 0,
                      exit_code = 0, rest = 0 }, got)
    -- stdin closed at once: the last replies were cut off mid-line.
    got = json.decode(h.sh("node " .. flood .. " 60 400000 500 eof "
      .. command))
    assert.are.same({ replies = 60, ids_in_order = true, errors = 0,
                      exit_code = 0, rest = 0 }, got)
  end)

  it("cancels the thread of a call the client cancels", function()
    local dir, mock = project(400)
    local s = serve(dir, mock)
    local lines, out = sdk { http = over_http(s), steps = {
      { call = "w", arguments = { input = "steps:20" }, cancel_after_ms = 1500 } } }
    assert.matches("the spec cancels it", lines[2].error, 1, true)
    h.wait_for(function()
      local _, v = curl(s, "GET", "/v1/threads?status=cancelled")
      return #v.threads == 1
    end, 10000, "the thread to be cancelled: " .. out .. s.log())
  end)

  it("keeps the API's gate at /mcp", function()
    local dir, mock = project()
    local s = serve(dir, mock)
    local init = '{"jsonrpc":"2.0","id":1,"method":"initialize","params":'
      .. '{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":'
      .. '{"name":"curl","version":"1"}}}'
    local status = curl(s, "POST", "/mcp", init, "-H 'Authorization: x'")
    assert.are.equal(401, status)
    status = curl(s, "POST", "/mcp", init,
      "-H 'Origin: http://evil.example'")
    assert.are.equal(403, status)
    -- (initialize agrees on a version; the header comes after it.)
    status = curl(s, "POST", "/mcp",
      '{"jsonrpc":"2.0","id":9,"method":"ping"}',
      "-H 'MCP-Protocol-Version: 1999'")
    assert.are.equal(400, status)
    status = curl(s, "GET", "/mcp")
    assert.are.equal(405, status)
    local v
    status, v = curl(s, "POST", "/mcp", init)
    assert.are.equal(200, status)
    assert.are.equal("2025-06-18", v.result.protocolVersion)
    local _, _, body = curl(s, "POST", "/mcp",
      '{"jsonrpc":"2.0","method":"notifications/initialized"}')
    status = curl(s, "POST", "/mcp",
      '{"jsonrpc":"2.0","method":"notifications/initialized"}')
    assert.are.equal(202, status)
    assert.are.equal("", body)
    status, v = curl(s, "POST", "/mcp",
      '{"jsonrpc":"2.0","id":2,"method":"resources/list"}')
    assert.are.equal(200, status)
    assert.are.equal(-32601, v.error.code)
  end)

  it("runs over stdio as `spool mcp`, launched by the SDK's client",
    function()
    local dir, mock = project()
    local lines, out = sdk { stdio = { command = h.BIN, args = {
        "--project", dir, "--base-url", mock.url, "--db", dir .. "/spool.db",
        "mcp" } },
      elicit = { action = "accept", content = { answer = "green" } },
      steps = {
        { list = true },
        { call = "w", arguments = { input = "steps:2" }, progress = true },
        { call = "w", arguments = { input = "ask me" } } } }
    assert.are.equal("spool", lines[1].server.name, out)
    assert.are.equal(2, #lines[2].tools, out)
    assert.are.equal("done after 2", text_of(lines[3].result), out)
    -- (The SDK hands notifications to their handler a tick later than it
    -- matches a reply: those that come in the same read as the reply are
    -- dropped. The first comes well before.)
    assert.is_true(#lines[3].progress >= 1, out)
    assert.are.equal("done after 1: green", text_of(lines[4].result), out)
    -- The threads are in the project's store, for any worker to see.
    local listed = h.cli("--project " .. h.q(dir) .. " --db "
      .. h.q(dir .. "/spool.db") .. " threads --json")
    assert.are.equal(2, #json.decode(listed))
    -- A line that is not JSON-RPC is answered, and the next one too.
    local base = h.q(h.BIN) .. " --project " .. h.q(dir) .. " --base-url "
      .. mock.url .. " --db :memory: mcp"
    out = h.sh("printf 'nonsense\\n{\"jsonrpc\":\"2.0\",\"id\":7,"
      .. "\"method\":\"ping\"}\\n' | " .. base .. " | cat")
    local replies = h.json_lines(out)
    assert.are.equal(-32700, replies[1].error.code, out)
    assert.are.equal(7, replies[2].id)
    -- Requests from a file: refused, not polled (libuv cannot poll one).
    local file = dir .. "/requests.json"
    h.write_files(dir, { ["requests.json"] = "{}\n" })
    local said = h.sh(base .. " < " .. h.q(file) .. " 2>&1 | cat")
    assert.matches("stdin and stdout must be pipes", said, 1, true)
  end)
end)
