-- `spool serve` as a process, driven with curl: every route, the token,
-- SIGHUP, and SIGTERM under load with nothing lost.
local h = require "spec.support"
local json = require "spool.json"
local workers = require "spec.serve_support"

local curl, auth = workers.curl, workers.auth

local function serve(...)
  local s = workers.serve(...)
  finally(s.kill)
  return s
end

local BIN = h.q(h.BIN)

local AGENT = [[
local spool = require "spool"
return spool.agent { prompt = "p.md", max_steps = 20, tools = {
  note = { params = { text = "string" }, side_effects = false,
           run = function(a) return "noted " .. a.text end },
  refund = { params = { amount = "number" }, approve = true,
             run = function(a) return "refunded " .. a.amount end },
  finish = spool.done } }
]]

-- Notes `n` times (n from the input, "steps:N"), asks approval for a
-- refund when the input starts with "refund", then finishes.
local MOCK = [[
return { latency_ms = tonumber(os.getenv("SPEC_LATENCY") or "0"), rules = {
  { reply = function(conv)
      local n = tonumber(conv.user:match("steps:(%d+)") or "0")
      if conv.user:match("^refund") and conv.turns == 0 then
        return { tool = "refund", args = { amount = 5 } }
      end
      if conv.turns < n then
        return { tool = "note", args = { text = "step " .. conv.turns } }
      end
      return { tool = "finish", args = { answer = "done after "
        .. conv.turns } }
    end } } }
]]

local function project(latency)
  local dir = h.tmpdir()
  h.write_files(dir, { ["agents/w.lua"] = AGENT, ["prompts/p.md"] = "Work.",
                       ["mock.lua"] = MOCK })
  local mock = h.mock_process(dir .. "/mock.lua", nil,
    "SPEC_LATENCY=" .. (latency or 0))
  finally(function()
    mock.stop()
    h.remove(dir)
  end)
  return dir, mock
end

describe("spool serve", function()
  it("lets a run's model connection go when it pauses for a person, a "
    .. "sub-agent's too", function()
    local dir = h.tmpdir()
    h.sh(string.format("cp -r %s/spec/fixtures/durable/. %s", h.q(h.ROOT),
      h.q(dir)))
    local mock = h.mock_process(dir .. "/mock/script.lua")
    finally(function()
      mock.stop()
      h.remove(dir)
    end)
    local s = serve(dir, mock)
    local function mock_connections()
      local out = h.sh("curl -s -m 5 " .. mock.url:gsub("/v1$", "")
        .. "/_mock/stats")
      return json.decode(out).connections
    end
    -- boss calls deploy, which waits for approval of its deploy call
    local status, v = curl(s, "POST", "/v1/threads",
      '{"agent":"boss","input":"go","wait_ms":5000}')
    assert.are.equal(201, status)
    assert.are.equal("waiting", v.status)
    -- only the stats request itself is left open
    h.wait_for(function() return mock_connections() == 1 end, 5000,
      "the paused runs' connections to close")
  end)

  it("answers every route to curl", function()
    local dir, mock = project()
    local s = serve(dir, mock)
    assert.are.equal(200, (curl(s, "GET", "/healthz")))
    local status, v = curl(s, "GET", "/v1/agents")
    assert.are.equal(200, status)
    assert.are.equal("w", v.agents[1].name)
    status, v = curl(s, "POST", "/v1/reload", "{}")
    assert.are.equal(200, status)
    assert.are.equal(0, v.errors)
    status, v = curl(s, "POST", "/v1/threads",
      '{"agent":"w","input":"refund please","wait_ms":5000}')
    assert.are.equal(201, status)
    assert.are.equal("waiting", v.status)
    local id = v.id
    status, v = curl(s, "GET", "/v1/threads?status=waiting")
    assert.are.equal(200, status)
    assert.are.equal(id, v.threads[1].id)
    -- Follow it (curl -N) while it is approved.
    local stream_file = dir .. "/stream"
    h.sh(string.format("curl -sN -m 10 %s %s/v1/threads/%s/stream >%s 2>&1 &",
      auth(s), s.url, id, h.q(stream_file)))
    h.wait_for(function()
      return h.slurp(stream_file):match("event: human_request")
    end, 10000, "the stream to begin")
    status = curl(s, "POST", "/v1/threads/" .. id .. "/events",
      '{"type":"approve","by":"curl"}')
    assert.are.equal(202, status)
    h.wait_for(function()
      return h.slurp(stream_file):match("event: end")
    end, 10000, "the stream to end")
    assert.matches("event: human_response\n", h.slurp(stream_file))
    status, v = curl(s, "GET", "/v1/threads/" .. id)
    assert.are.equal("done", v.status)
    assert.matches('"result":"refunded 5"', json.encode(v.events))
    -- Who approved is the caller the token names; the body only claims.
    local answered
    for _, ev in ipairs(v.events) do
      answered = ev.type == "human_response" and ev or answered
    end
    assert.are.equal("api", answered.data.by)
    assert.are.equal("curl", answered.data.claimed_by)
    status, v = curl(s, "POST", "/v1/threads",
      '{"agent":"w","input":"refund again"}')
    status = curl(s, "POST", "/v1/threads/" .. v.id .. "/cancel", "{}")
    assert.is_true(status == 200 or status == 202)
    local _, _, text = curl(s, "GET", "/metrics")
    assert.matches('spool_runs_ended_total{agent="w",status="done"} 1', text)
    assert.are.equal(0, s.stop())
    assert.matches("draining", s.log())
  end)

  it("asks for its token on loopback too: the project's own, private, "
    .. "unless the environment gives one", function()
    local dir, mock = project()
    local s = serve(dir, mock)
    local mode = h.sh("stat -c %a " .. h.q(dir .. "/.spool/api-token"))
    assert.are.equal("600", mode:match("%d+"))
    local printed = h.sh(string.format("env -u SPOOL_TOKEN %s --project %s "
      .. "token", BIN, h.q(dir)))
    assert.are.equal(s.token, printed:match("%S+"))
    assert.are.equal(64, #s.token)
    assert.are.equal(401, (curl(s, "GET", "/healthz",
      nil, "-H 'Authorization: Bearer wrong'")))
    assert.are.equal(401, (curl(s, "POST", "/v1/threads/x/events",
      '{"type":"approve","by":"the-model"}', "-H 'Authorization: x'")))
    assert.are.equal(200, (curl(s, "GET", "/v1/agents")))
    s.stop()
    -- A token file others may read is refused, not used.
    h.sh("chmod 644 " .. h.q(dir .. "/.spool/api-token"))
    local out, code = h.sh(string.format("env -u SPOOL_TOKEN %s --project %s "
      .. "serve --port 0 2>&1", BIN, h.q(dir)))
    assert.are.equal(1, code)
    assert.matches("%.spool/api%-token: others may read it", out)
    s = serve(dir, mock, "--host 0.0.0.0", "SPOOL_TOKEN=s3cret-token")
    assert.are.equal(401, (curl(s, "GET", "/healthz", nil,
      "-H 'Authorization: Bearer wrong'")))
    assert.are.equal(200, (curl(s, "GET", "/v1/agents")))
    -- Beyond loopback the token is the guard, so any Host is fine.
    assert.are.equal(200, (curl(s, "GET", "/healthz", nil,
      "-H 'Authorization: Bearer s3cret-token' -H 'Host: spool.internal'")))
    s.stop()
    assert.not_matches("s3cret", s.log())
    -- Named callers: spool.lua's api_tokens, each answering as its name;
    -- one whose variable is unset cannot come in, and the log says so.
    h.write_files(dir, { ["spool.lua"] = "return { api_tokens = { ops = "
      .. "'SPEC_OPS_TOKEN', gone = 'SPEC_UNSET_TOKEN' } }" })
    s = serve(dir, mock, "", "SPOOL_TOKEN=s3cret-token "
      .. "SPEC_OPS_TOKEN=ops-token-0123456789")
    local ops = "-H 'Authorization: Bearer ops-token-0123456789'"
    assert.are.equal(200, (curl(s, "GET", "/v1/agents", nil, ops)))
    local status, v = curl(s, "POST", "/v1/threads",
      '{"agent":"w","input":"refund it","wait_ms":5000}', ops)
    assert.are.equal(201, status)
    assert.are.equal(202, (curl(s, "POST", "/v1/threads/" .. v.id .. "/events",
      '{"type":"approve"}', ops)))
    h.wait_for(function()
      return select(2, curl(s, "GET", "/v1/threads/" .. v.id)).status == "done"
    end, 10000, "the thread to finish")
    local _, shown = curl(s, "GET", "/v1/threads/" .. v.id)
    local by
    for _, ev in ipairs(shown.events) do
      by = ev.type == "human_response" and ev.data.by or by
    end
    assert.are.equal("api:ops", by)
    s.stop()
    assert.matches("api_tokens.gone: $SPEC_UNSET_TOKEN is not set", s.log(),
      1, true)
  end)

  it("drains on SIGTERM under load, and the next start finishes every run",
    function()
      local dir, mock = project(100)
      local s = serve(dir, mock, "--drain-ms 5000")
      local ids = {}
      for i = 1, 40 do
        local status, v = curl(s, "POST", "/v1/threads",
          string.format('{"agent":"w","input":"job %d steps:6"}', i))
        assert.are.equal(201, status)
        ids[i] = v.id
      end
      assert.are.equal(0, s.stop("TERM"))
      -- Each run stopped between steps: stored, and still running.
      local out = h.sh(string.format("%s --project %s --db %s threads "
        .. "--status running --json", BIN, h.q(dir), h.q(dir .. "/spool.db")))
      local left = json.decode(out)
      assert.is_true(#left > 0, "no run was left for the restart")
      for _, row in ipairs(left) do
        assert.is_true(row.events >= 2, "a run left without its input")
      end
      s = serve(dir, mock)
      h.wait_for(function()
        local _, v = curl(s, "GET", "/v1/threads?status=running&limit=100")
        return #v.threads == 0
      end, 30000, "the runs to finish after the restart")
      for _, id in ipairs(ids) do
        local _, v = curl(s, "GET", "/v1/threads/" .. id)
        assert.are.equal("done", v.status, id)
        assert.are.equal("done after 6", v.result)
        local notes = 0
        for i, ev in ipairs(v.events) do
          assert.are.equal(i, ev.seq)
          if ev.type == "tool_result" then
            notes = notes + 1
          end
        end
        assert.are.equal(6, notes, id) -- no step lost, none done twice
      end
      s.stop()
    end)

  it("drains within --drain-ms: a poll that hangs is not waited for",
    function()
    local dir, mock = project()
    -- an IMAP server that accepts and never says a word
    local hung = assert(require("spool.core").listen { port = 0,
      timeout_ms = 600000, handler = function() end })
    finally(function() hung:close() end)
    h.write_files(dir, { ["spool.lua"] = string.format([[
return { channels = { email = { from = "spool@example.test",
  smtp_url = "smtp://127.0.0.1:1", imap_url = "imap://127.0.0.1:%d/INBOX",
  poll_ms = 60000 } } }]], hung:port()) })
    local s = serve(dir, mock, "--drain-ms 300")
    h.wait_for(function() return hung:connections() > 0 end, 10000,
      "the poll to connect")
    assert.are.equal(0, s.stop())
    assert.matches("drain: the email poller had not finished by the "
      .. "deadline; left to end with the engine", s.log(), 1, true)
  end)

  it("answers 503 when the disk is full, to a new thread and to an "
    .. "answer, and loses nothing", function()
    -- A disk of its own: a small tmpfs, in a mount namespace of its own.
    if select(2, h.sh("unshare -Urm true 2>/dev/null")) ~= 0 then
      pending("no user namespaces here: cannot mount a small disk")
      return
    end
    local dir, mock = project()
    local disk = dir .. "/disk"
    h.sh("mkdir " .. h.q(disk))
    local s = serve(dir, mock, "", string.format("unshare -Urm sh -c %s sh",
      h.q("mount -t tmpfs -o size=4m tmpfs " .. h.q(disk)
        .. ' && exec "$@"')), disk .. "/spool.db")
    local status, v = curl(s, "POST", "/v1/threads",
      '{"agent":"w","input":"refund it","wait_ms":5000}')
    assert.are.equal(201, status)
    assert.are.equal("waiting", v.status)
    -- the disk as the serving process sees it, filled up
    local fill = string.format("/proc/%d/root%s/fill", s.pid, disk)
    h.sh("dd if=/dev/zero of=" .. h.q(fill) .. " bs=4k 2>/dev/null")
    local body
    status, body = curl(s, "POST", "/v1/threads/" .. v.id .. "/events",
      '{"type":"approve"}')
    assert.are.equal(503, status)
    assert.are.equal("store_failed", body.error.code)
    assert.matches("full", body.error.message)
    status, body = curl(s, "POST", "/v1/threads",
      '{"agent":"w","input":"steps:1"}')
    assert.are.equal(503, status)
    assert.are.equal("store_failed", body.error.code)
    -- space again: the answer is taken, and the thread goes on
    h.sh("rm " .. h.q(fill))
    local _, shown = curl(s, "GET", "/v1/threads/" .. v.id)
    assert.are.equal("waiting", shown.status)
    assert.are.equal(202, (curl(s, "POST", "/v1/threads/" .. v.id
      .. "/events", '{"type":"approve"}')))
    h.wait_for(function()
      local _, t = curl(s, "GET", "/v1/threads/" .. v.id)
      return t.status == "done"
    end, 10000, "the thread to finish")
    s.stop()
  end)

  it("logs a thread it cannot resume, and serves on", function()
    local dir, mock = project()
    local s = serve(dir, mock)
    local status, v = curl(s, "POST", "/v1/threads",
      '{"agent":"w","input":"refund it","wait_ms":5000}')
    assert.are.equal(201, status)
    assert.are.equal(0, s.stop())
    -- as a process killed mid-step leaves it, with a row gone bad
    local _, code = h.sh(string.format("sqlite3 %s %s", h.q(dir .. "/spool.db"),
      h.q("UPDATE threads SET status = 'running' WHERE id = '" .. v.id
        .. "'; UPDATE events SET data = '{broken' WHERE seq = 2 AND thread "
        .. "= (SELECT n FROM threads WHERE id = '" .. v.id .. "')")))
    assert.are.equal(0, code)
    s = serve(dir, mock)
    assert.matches("recover: thread " .. v.id .. " cannot be resumed, and is "
      .. "left as it is: .*event 2: the stored data is not JSON", s.log())
    assert.are.equal(200, (curl(s, "GET", "/v1/agents")))
    s.stop()
  end)

  it("keeps tokens, keys and signing secrets out of its logs", function()
    local dir, mock = project()
    h.write_files(dir, { ["spool.lua"] = string.format([[
return { webhooks = { { url = "%s/hook", secret_env = "SPOOL_WEBHOOK_SECRET",
                        attempts = 2, backoff_ms = 10 } } }]], mock.url) })
    local secrets = { "tok-Secret-1", "hook-Secret-2", "sk-Secret-3",
                      "wh-Secret-4" }
    local s = serve(dir, mock, "", string.format("SPOOL_TOKEN=%s "
      .. "SPOOL_HOOK_SECRET=%s OPENAI_API_KEY=%s SPOOL_WEBHOOK_SECRET=%s "
      .. "SPOOL_LOG=debug SPOOL_LOG_FORMAT=json", table.unpack(secrets)))
    assert.are.equal(401, (curl(s, "GET", "/v1/agents", nil,
      "-H 'Authorization: Bearer tok-Secret-wrong'")))
    local status, v = curl(s, "POST", "/v1/threads",
      '{"agent":"w","input":"refund it","wait_ms":5000}')
    assert.are.equal(201, status)
    local body = '{"type":"approve"}'
    local sig = require("spool.serve.webhooks").sign_request(secrets[2],
      require("spool.core").time(), "/v1/hooks/threads/" .. v.id .. "/events",
      body)
    assert.are.equal(202, (curl(s, "POST", "/v1/hooks/threads/" .. v.id
      .. "/events", body, "-H " .. h.q("Spool-Signature: " .. sig))))
    assert.are.equal(401, (curl(s, "POST", "/v1/hooks/threads/" .. v.id
      .. "/events", body, "-H 'Spool-Signature: t=1,v1=00'")))
    local _, shown, text = curl(s, "GET", "/v1/threads/" .. v.id)
    assert.are.equal("w", shown.agent)
    -- The webhooks (refused by the mock: 404) have been tried by now.
    h.wait_for(function() return s.log():match("webhook .* refused") end,
      10000, "the webhook's refusal")
    s.stop()
    local log = s.log()
    for line in log:gmatch("[^\n]+") do -- its own lines too
      assert.is_table(json.decode(line), "not a JSON log line: " .. line)
    end
    assert.matches('"msg":"signal 15: draining', log)
    assert.is_true(#log > 1000, "debug logging was on")
    for _, secret in ipairs(secrets) do
      assert.is_nil(log:find(secret, 1, true), secret .. " is in the log")
      assert.is_nil(text:find(secret, 1, true), secret .. " is in events")
    end
  end)

  it("keeps webhook notices in the store: spool run does not wait for "
    .. "retries, a serving process sends them", function()
    local dir, mock = project()
    local got = {}
    local server = assert(require("spool.core").listen { port = 0,
      handler = function(req)
        got[#got + 1] = req
        return { status = #got == 1 and 503 or 200, body = "" }
      end })
    finally(function() server:close() end)
    h.write_files(dir, { ["spool.lua"] = string.format([[
return { webhooks = { { url = "http://127.0.0.1:%d/hook", events = { "done" },
  secret_env = "SPOOL_WEBHOOK_SECRET", backoff_ms = 10 } } }]],
      server:port()) })
    local run = string.format("env SPOOL_WEBHOOK_SECRET=s3 %s --project %s "
      .. "--base-url %s --db %s ", BIN, h.q(dir), mock.url,
      h.q(dir .. "/spool.db"))
    -- The run exits after the first try (503); the notice stays. (In the
    -- background: this engine's loop must turn to answer it.)
    h.sh(string.format("(%s run w --input steps:0 >%s 2>&1; echo $? >%s) "
      .. ">/dev/null 2>&1 &",
      run, h.q(dir .. "/run.out"), h.q(dir .. "/run.code")))
    local code = h.wait_for(function()
      return tonumber(h.slurp(dir .. "/run.code"):match("%d+"))
    end, 20000, "spool run to exit")
    assert.are.equal(0, code, h.slurp(dir .. "/run.out"))
    assert.are.equal(1, #got) -- answered 503, and not tried again
    local kept = h.sh(run .. "state export spool.outbox")
    assert.matches('"attempt":1', kept)
    -- A serving process tries it again, and it is gone.
    local s = serve(dir, mock, "", "SPOOL_WEBHOOK_SECRET=s3")
    h.wait_for(function() return #got == 2 end, 10000, "the retry")
    assert.are.equal(got[1].headers["spool-delivery"],
      got[2].headers["spool-delivery"])
    h.wait_for(function()
      return h.sh(run .. "state export spool.outbox") == ""
    end, 10000, "the outbox to empty")
    s.stop()
    -- A webhook with no secret: the project does not open.
    local out
    out, code = h.sh(string.format("env -u SPOOL_WEBHOOK_SECRET %s --project "
      .. "%s threads 2>&1", BIN, h.q(dir)))
    assert.are_not.equal(0, code)
    assert.matches("webhooks%[1%] has no secret: %$SPOOL_WEBHOOK_SECRET is "
      .. "not set", out)
  end)

  it("refuses a signed request replayed after a restart", function()
    local dir, mock = project()
    local env = "SPOOL_HOOK_SECRET=hook-secret-0123456789"
    local body = '{"agent":"w","input":"steps:0"}'
    local sig = require("spool.serve.webhooks").sign_request(
      "hook-secret-0123456789", require("spool.core").time(),
      "/v1/hooks/threads", body)
    local hdr = "-H " .. h.q("Spool-Signature: " .. sig)
    local s = serve(dir, mock, "", env)
    assert.are.equal(201, (curl(s, "POST", "/v1/hooks/threads", body, hdr)))
    s.stop()
    s = serve(dir, mock, "", env)
    local status, v = curl(s, "POST", "/v1/hooks/threads", body, hdr)
    assert.are.equal(401, status)
    assert.matches("already received %(a replay%)", v.error.message)
    local _, list = curl(s, "GET", "/v1/threads")
    assert.are.equal(1, #list.threads)
    s.stop()
  end)

  it("watches agents by default, and reloads on SIGHUP", function()
    local dir, mock = project()
    local function version(s)
      return select(2, curl(s, "GET", "/v1/agents")).agents[1].version
    end
    local s = serve(dir, mock)
    local before = version(s)
    h.write_files(dir, { ["prompts/p.md"] = "Work harder." })
    h.wait_for(function() return version(s) ~= before end, 10000,
      "the watcher's reload")
    s.stop()
    -- Not watching: only SIGHUP picks an edit up.
    s = serve(dir, mock, "--no-watch")
    before = version(s)
    h.write_files(dir, { ["prompts/p.md"] = "Work even harder." })
    h.sh("sleep 0.3")
    assert.are.equal(before, version(s))
    h.sh("kill -HUP " .. s.pid)
    h.wait_for(function() return version(s) ~= before end, 10000,
      "the reload SIGHUP asked for")
    s.stop()
  end)
end)
