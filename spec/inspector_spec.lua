-- The web inspector (issue 24), served by `spool serve` at /: its files
-- behind the Host check and a strict Content-Security-Policy, and what a
-- person does with it in a real browser (Debian's Chromium, headless,
-- driven by playwright-core: spec/npm/inspector_e2e.mjs). Screenshots of
-- each page land in build/artifacts/inspector (not committed).
local h = require "spec.support"
local workers = require "spec.serve_support"

local curl = workers.curl
local DESK = h.ROOT .. "/spec/fixtures/desk"
local SHOTS = os.getenv("SPOOL_ARTIFACTS") or (h.ROOT .. "/build/artifacts")

-- An evaluation of w, as `spool eval` keeps it for spool serve.
local function evaluate(dir, mock)
  h.write_files(dir, { ["cases.jsonl"] = table.concat({
    '{"name": "notes", "input": "steps:1", "expect": {"status": "done", '
      .. '"answer_equals": "done after 1"}}',
    '{"name": "refund, approved", "input": "refund", "answers": '
      .. '[{"approve": true}], "expect": {"status": "done"}}' }, "\n") })
  local out, err, code = h.cli(string.format("--project %s --base-url %s "
    .. "eval w --cases %s", h.q(dir), mock.url, h.q(dir .. "/cases.jsonl")))
  assert(code == 0, tostring(out) .. tostring(err))
end

local function serve(evaluated)
  local dir = h.tmpdir()
  h.sh(string.format("cp -R %s/. %s", h.q(DESK), h.q(dir)))
  local mock = h.mock_process(dir .. "/mock.lua")
  if evaluated then
    evaluate(dir, mock)
  end
  local s = workers.serve(dir, mock)
  finally(function()
    s.kill()
    mock.stop()
    h.remove(dir)
  end)
  return s
end

-- GET of a path: status, headers (lower-case names), body.
local function get(s, path, extra)
  local out = h.sh(string.format("curl -s -D - -m 10 %s %s%s", extra or "",
    s.url, path))
  local head, body = out:match("^(.-)\r\n\r\n(.*)$")
  local headers = {}
  for name, value in (head or ""):gmatch("\n([^:\r\n]+): ([^\r\n]*)") do
    headers[name:lower()] = value
  end
  return tonumber((head or ""):match("^HTTP/%S+ (%d+)")), headers, body
end

describe("the web inspector", function()
  it("serves its page and files without the token, behind the Host check "
    .. "and a strict policy", function()
    local s = serve()
    local status, headers, body = get(s, "/")
    assert.are.equal(200, status)
    assert.matches("^text/html", headers["content-type"])
    assert.matches('<script type="module" src="/ui/app.js">', body, 1, true)
    local csp = headers["content-security-policy"]
    assert.matches("script-src 'self';", csp, 1, true)
    assert.matches("default-src 'none'", csp, 1, true)
    assert.matches("frame-ancestors 'none'", csp, 1, true)
    assert.is_nil(csp:find("unsafe", 1, true))
    assert.are.equal("nosniff", headers["x-content-type-options"])
    status, headers = get(s, "/ui/app.js")
    assert.are.equal(200, status)
    assert.matches("^text/javascript", headers["content-type"])
    -- Unchanged: not sent again.
    status = get(s, "/ui/app.js", "-H " .. h.q("If-None-Match: "
      .. headers.etag))
    assert.are.equal(304, status)
    -- Only the files that ship: no path reaches the disk.
    assert.are.equal(404, (get(s, "/ui/..%2f..%2fspool.lua")))
    assert.are.equal(404, (get(s, "/ui/nothing.js")))
    -- Another site's page cannot load it through DNS rebinding.
    assert.are.equal(403, (get(s, "/", "-H 'Host: evil.example'")))
    -- The data still needs the token.
    assert.are.equal(401, (curl(s, "GET", "/v1/threads", nil,
      "-H 'Authorization: Bearer wrong'")))
  end)

  it("gives a step's exact request and forks a thread through the API, "
    .. "and refuses what does not exist", function()
    local s = serve()
    local status, v = curl(s, "POST", "/v1/threads",
      '{"agent":"w","input":"steps:1","wait_ms":5000}')
    assert.are.equal(201, status)
    local id = v.id
    status, v = curl(s, "GET", "/v1/threads?counts=true&limit=1")
    assert.are.equal(200, status)
    assert.are.same({ running = 0, waiting = 0, done = 1, failed = 0,
                      cancelled = 0 }, v.counts)
    status, v = curl(s, "GET", "/v1/threads/" .. id .. "/steps/1")
    assert.are.equal(200, status)
    assert.is_true(v.seen)
    assert.are.equal("steps:1", v.body.messages[2].content)
    assert.is_nil(v.text)
    assert.are.equal(404, (curl(s, "GET", "/v1/threads/" .. id .. "/steps/9")))
    assert.are.equal(404, (curl(s, "GET", "/v1/threads/t_none/steps/1")))
    assert.are.equal(422, (curl(s, "GET", "/v1/threads/" .. id
      .. "/steps/1e2")))
    -- A NUL byte would reach the store cut short (w%00 matched w).
    assert.are.equal(422, (curl(s, "GET", "/v1/threads?agent=w%00")))
    local _, headers = get(s, "/v1/threads", "-H " .. h.q("Authorization: "
      .. "Bearer " .. s.token))
    assert.are.equal("nosniff", headers["x-content-type-options"])
    assert.are.equal("no-store", headers["cache-control"])
    status, v = curl(s, "POST", "/v1/threads/" .. id .. "/fork", '{"at":1}')
    assert.are.equal(201, status)
    assert.are_not.equal(id, v.id)
    -- The fork runs on from its first event, as a new thread.
    h.wait_for(function()
      local _, f = curl(s, "GET", "/v1/threads/" .. v.id)
      return f.status == "done"
    end, 15000, "the fork to run")
    assert.are.equal(422, (curl(s, "POST", "/v1/threads/" .. id .. "/fork",
      '{"at":0}')))
    -- Never inside a call: an approval given would be spent again (the
    -- refund ran twice), an intent taken for an interrupted call.
    status, v = curl(s, "POST", "/v1/threads",
      '{"agent":"w","input":"refund","wait_ms":5000}')
    local refund = v.id
    assert.are.equal(202, (curl(s, "POST", "/v1/threads/" .. refund
      .. "/events", '{"type":"approve"}')))
    local events
    h.wait_for(function()
      local _, t = curl(s, "GET", "/v1/threads/" .. refund)
      events = t.events
      return t.status == "done"
    end, 10000, "the refund")
    local at = {}
    for _, ev in ipairs(events) do
      at[ev.type] = at[ev.type] or ev.seq
    end
    for _, cut in ipairs { at.intent, at.human_response, at.started } do
      status, v = curl(s, "POST", "/v1/threads/" .. refund .. "/fork",
        '{"at":' .. cut .. '}')
      assert.are.equal(422, status, cut)
      assert.matches("Fork before the call, or after its result",
        v.error.message)
    end
    assert.matches("was approved and has not run", v.error.message, 1, true)
    -- At the request: the fork asks the person again.
    status, v = curl(s, "POST", "/v1/threads/" .. refund .. "/fork",
      '{"at":' .. at.human_request .. '}')
    assert.are.equal(201, status)
    h.wait_for(function()
      local _, f = curl(s, "GET", "/v1/threads/" .. v.id)
      return f.status == "waiting"
    end, 10000, "the fork to ask again")
    assert.are.equal(422, (curl(s, "POST", "/v1/threads/" .. id .. "/fork",
      '{}')))
  end)

  it("lets a person follow a thread and act on it in a browser", function()
    local s = serve(true)
    local shots = SHOTS .. "/inspector"
    h.sh("mkdir -p " .. h.q(shots))
    local out, code = h.sh(string.format("node %s %s %s %s 2>&1",
      h.q(h.ROOT .. "/spec/npm/inspector_e2e.mjs"), h.q(s.url), h.q(s.token),
      h.q(shots)))
    assert(code == 0 and out:find('{"ok":true}', 1, true), out
      .. "\nserve's log:\n" .. s.log():sub(-3000))
    for _, page in ipairs { "login-refused", "threads", "thread-waiting",
                            "thread-done", "inbox", "agents" } do
      assert.is_true(#h.slurp(shots .. "/" .. page .. ".png") > 1000, page)
    end
  end)
end)
