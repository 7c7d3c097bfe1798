-- Durable threads, end to end through the CLI: every test works on a copy
-- of spec/fixtures/durable with its own database, and runs each command as
-- a process of its own, so a resume really happens "in a later process".
local h = require "spec.support"
local json = require "spool.json"

local FIXTURE = h.ROOT .. "/spec/fixtures/durable"

describe("durable threads", function()
  local dir

  -- Runs `spool --project dir ARGS` with optional environment assignments;
  -- returns stdout, stderr, exit code.
  local function spool(args, env)
    local out_file, err_file = dir .. "/.out", dir .. "/.err"
    local _, code = h.sh(string.format("%s %s --project %s %s >%s 2>%s",
      env or "", h.q(h.BIN), h.q(dir), args, out_file, err_file))
    return h.slurp(out_file), h.slurp(err_file), code
  end

  local function events(id)
    local out, err, code = spool("export " .. id)
    assert.are.equal(0, code, err)
    return h.json_lines(out)
  end

  local types = h.types

  local function file_lines(name)
    local f = io.open(dir .. "/" .. name)
    if not f then
      return {}
    end
    local lines = {}
    for l in f:lines() do
      lines[#lines + 1] = l
    end
    f:close()
    return lines
  end

  -- Starts an agent; returns the thread id, exit code and stderr.
  local function start(agent, input, env)
    local out, err, code = spool("run " .. agent .. " --json --input "
      .. h.q(input or "go"), env)
    local first = out:match("[^\n]+")
    return first and json.decode(first).thread, code, err
  end

  local function status(id)
    local out = spool("show --json " .. id)
    local doc = json.decode(out)
    return doc and doc.thread.status
  end

  before_each(function()
    dir = h.tmpdir()
    h.sh(string.format("cp -r %s/. %s/", h.q(FIXTURE), h.q(dir)))
  end)

  after_each(function()
    h.remove(dir)
  end)

  describe("approval", function()
    it("pauses, lets the process exit, and runs the tool once when approved "
      .. "in a new process", function()
      local id, code, err = start("deploy")
      assert.are.equal(3, code)
      assert.matches("waits for approval of deploy", err)
      assert.matches("spool resume " .. id, err, 1, true)
      assert.are.equal("waiting", status(id))
      assert.are.same({}, file_lines("deploys.log"))
      local out
      out, err, code = spool("resume " .. id .. " --approve")
      assert.are.equal(0, code, err)
      assert.matches("deploy ✓ Deployed:", out, 1, true)
      assert.are.equal(1, #file_lines("deploys.log"))
      assert.are.same({ "input", "model_call", "intent", "tool_result",
        "model_call", "intent", "human_request", "human_response", "started",
        "tool_result", "model_call", "done" }, types(events(id)))
      local state = spool("state export deploys")
      assert.matches('"key":"v2"', state, 1, true)
      -- Resuming again finds nothing to do.
      _, err, code = spool("resume " .. id .. " --approve")
      assert.are.equal(1, code)
      assert.matches("has ended %(done%)", err)
    end)

    it("tells the model a rejection and its reason", function()
      local id = start("deploy")
      local out, err, code = spool("resume " .. id .. " --reject --reason "
        .. h.q("freeze until Monday"))
      assert.are.equal(0, code, err)
      assert.matches("Deployment cancelled. A human rejected this call: "
        .. "freeze until Monday", out, 1, true)
      assert.are.same({}, file_lines("deploys.log"))
    end)

    it("runs the tool with arguments the human edited, and tells the model",
      function()
      local id = start("deploy")
      local out, err, code = spool("resume " .. id .. " --approve --args "
        .. h.q('{"tag": "v1"}'))
      assert.are.equal(0, code, err)
      assert.matches("^v1 ", file_lines("deploys.log")[1])
      local result
      for _, ev in ipairs(events(id)) do
        result = ev.type == "tool_result" and ev or result
      end
      assert.are.same({ tag = "v1" }, result.data.edited_args)
      -- What the model read next: the note, then the result.
      out = spool("prompt deploy --thread " .. id .. " --json")
      assert.matches('A person changed the arguments to {\\"tag\\":\\"v1\\"} '
        .. 'before it ran.', out, 1, true)
    end)

    it("refuses edited arguments the tool would reject", function()
      local id = start("deploy")
      local _, err, code = spool("resume " .. id .. " --approve --args "
        .. h.q('{"tag": 2}'))
      assert.are.equal(2, code)
      assert.matches("edited arguments do not fit the tool: deploy.tag: "
        .. "expected string, got integer", err)
      assert.are.equal("waiting", status(id))
      _, err, code = spool("resume " .. id .. " --answer hi")
      assert.are.equal(2, code)
      assert.matches("waits for approval of deploy", err)
      _, err, code = spool("resume " .. id)
      assert.are.equal(2, code)
      assert.matches("give a response", err)
    end)

    it("denies an approval whose deadline passed", function()
      local id = start("deploy")
      local out, err, code = spool("recover",
        "SPOOL_TEST_TIME_OFFSET_MS=7200000")
      assert.are.equal(0, code, err)
      assert.matches('"expired":["' .. id .. '"]', out, 1, true)
      local evs = events(id)
      assert.are.equal("done", evs[#evs].type)
      assert.matches("no response before the deadline", evs[#evs].data.result)
      local response
      for _, ev in ipairs(evs) do
        if ev.type == "human_response" then
          response = ev.data
        end
      end
      assert.are.equal("deadline", response.by)
      assert.is_false(response.approved)
    end)

    it("refuses an answer that comes after the deadline, saying so, and "
      .. "leaves nothing running", function()
      local id = start("deploy")
      local _, err, code = spool("resume " .. id .. " --approve",
        "SPOOL_TEST_TIME_OFFSET_MS=7200000")
      assert.are.equal(1, code)
      assert.matches("thread " .. id .. " waited for approval of deploy "
        .. '{"tag":"v2"} until %d+%-%d+%-%d+ %d+:%d+:%d+ UTC: that deadline '
        .. "has passed, so the call was denied", err)
      assert.are.equal("done", status(id))
      assert.are.same({}, file_lines("deploys.log"))
    end)

    it("fires due deadlines in any process that resumes a thread", function()
      local late = start("deploy")
      local other = start("greet")
      local _, err, code = spool("resume " .. other .. " --answer Cy",
        "SPOOL_TEST_TIME_OFFSET_MS=7200000")
      assert.are.equal(0, code, err)
      assert.are.equal("done", status(late))
      assert.are.same({}, file_lines("deploys.log"))
    end)
  end)

  describe("questions", function()
    it("takes a free-text answer", function()
      local id, code = start("greet")
      assert.are.equal(3, code)
      local out, err
      out, err, code = spool("resume " .. id .. " --answer Ana")
      assert.are.equal(0, code, err)
      assert.matches("greet ✓ Hello, Ana!", out, 1, true)
      _, err, code = spool("resume " .. id .. " --approve")
      assert.are.equal(1, code)
    end)
  end)

  describe("sub-agents", function()
    it("surface an approval on the parent, answered there", function()
      local id, code = start("boss")
      assert.are.equal(3, code)
      local list = spool("threads --status waiting")
      assert.matches(id .. "%s+boss%s+waiting", list)
      assert.matches("deploy%s+waiting.*%(in " .. id .. "%)", list)
      local child = list:match("(t_%w+)%s+deploy")
      local _, err
      _, err, code = spool("resume " .. child .. " --approve")
      assert.are.equal(2, code)
      assert.matches("is a sub%-agent of " .. id .. ": resume the parent", err)
      local out
      out, err, code = spool("resume " .. id .. " --approve")
      assert.are.equal(0, code, err)
      assert.matches("boss ✓ boss says: Deployed:", out, 1, true)
      assert.are.equal(1, #file_lines("deploys.log"))
      -- The parent's usage counts the child's tokens.
      local evs = events(id)
      local result = evs[#evs - 1]
      assert.are.equal("agent_result", result.type)
      assert.is_true(result.data.usage.input_tokens > 0)
    end)
  end)

  describe("crashes", function()
    it("reports a call interrupted by kill -9 to the model, never re-running "
      .. "it", function()
      local id, code = start("writer", "write", "SPOOL_TEST_CRASH=after_intent")
      assert.are.equal(137, code)
      assert.are.same({ "input", "model_call", "intent" }, types(events(id)))
      local out, err
      out, err, code = spool("recover")
      assert.are.equal(0, code, err)
      assert.matches('"resumed":["' .. id .. '"]', out, 1, true)
      local evs = events(id)
      assert.are.same({ "input", "model_call", "intent", "error", "model_call",
        "done" }, types(evs))
      assert.matches("^this call was interrupted", evs[4].data.error)
      assert.are.same({}, file_lines("writes.log"))
    end)

    it("re-runs an idempotent call with the same idempotency key", function()
      local id, code = start("writer", "write again",
        "SPOOL_TEST_CRASH=after_intent")
      assert.are.equal(137, code)
      local _, err
      _, err, code = spool("resume " .. id)
      assert.are.equal(0, code, err)
      assert.are.same({ "input", "model_call", "intent", "started",
        "tool_result", "model_call", "done" }, types(events(id)))
      assert.are.same({ "k1" }, file_lines("writes.log"))
    end)

    it("runs an idempotent call again only once: a call that stops the "
      .. "process each time is not a poison pill", function()
      local id, code = start("writer", "write again",
        "SPOOL_TEST_CRASH=after_intent")
      assert.are.equal(137, code)
      local _
      _, _, code = spool("recover", "SPOOL_TEST_CRASH=in_rerun")
      assert.are.equal(137, code)
      local out, err
      out, err, code = spool("recover")
      assert.are.equal(0, code, err)
      assert.matches('"resumed":["' .. id .. '"]', out, 1, true)
      local evs = events(id)
      assert.are.same({ "input", "model_call", "intent", "started", "error",
        "model_call", "done" }, types(evs))
      assert.matches("^this call was interrupted twice", evs[5].data.error)
      assert.are.same({}, file_lines("writes.log"))
    end)

    it("stores neither the state write nor the step when killed before the "
      .. "commit", function()
      local id, code = start("writer", "write", "SPOOL_TEST_CRASH=after_tool")
      assert.are.equal(137, code)
      -- The handler ran (its file write is outside the store), but its state
      -- write and its result were never committed.
      assert.are.same({ "k1" }, file_lines("writes.log"))
      assert.are.same({ "input", "model_call", "intent" }, types(events(id)))
      assert.are.equal("", (spool("state export notes")))
      spool("recover")
      assert.are.equal("", (spool("state export notes")))
      assert.are.equal("error", events(id)[4].type)
    end)

    it("shows only what is stored: a run killed before its commit printed "
      .. "nothing of the step", function()
      for _, point in ipairs { "after_tool", "store_before_commit" } do
        local out, _, code = spool("run writer --json --input write",
          "SPOOL_TEST_CRASH=" .. point)
        assert.are.equal(137, code)
        local printed = h.json_lines(out)
        local stored = #printed > 0 and events(printed[1].thread) or {}
        assert.are.same(types(stored), types(printed), point)
      end
    end)

    it("stores nothing of a step killed inside the store's commit", function()
      local _, code = start("writer", "write",
        "SPOOL_TEST_CRASH=store_before_commit")
      assert.are.equal(137, code)
      local out
      out, _, code = spool("threads --json")
      assert.are.equal(0, code)
      assert.are.same({}, json.decode(out))
    end)
  end)

  describe("replay", function()
    it("answers tools from the recording, runs no handler, and compares "
      .. "the people asked", function()
      local id = start("deploy")
      local _, err, code = spool("resume " .. id .. " --approve")
      assert.are.equal(0, code, err)
      assert.are.equal(1, #file_lines("deploys.log"))
      local out
      out, err, code = spool("replay " .. id .. " --json")
      assert.are.equal(0, code, err)
      local r = json.decode(out)
      assert.is_true(r.same, r.divergence)
      assert.are.equal(1, #file_lines("deploys.log")) -- no second deploy
      -- The replay's threads are not the project's.
      local listed = json.decode((spool("threads --json")))
      assert.are.equal(1, #listed)
      -- The same agent without its approval rule diverges there.
      local edited = h.slurp(dir .. "/agents/deploy.lua"):gsub(
        "approve = { deadline_ms = 3600000 },", "")
      h.write_files(dir, { ["no_approval.lua"] = edited })
      out, err, code = spool("replay " .. id .. " --json --agent-file "
        .. h.q(dir .. "/no_approval.lua"))
      assert.are.equal(1, code, err)
      r = json.decode(out)
      assert.is_false(r.same)
      assert.are.equal('person asked 1: the recording asked for approval of '
        .. 'deploy {"tag":"v2"}, the new code asked no one more', r.divergence)
      assert.are.equal(1, #file_lines("deploys.log"))
      -- Only --live runs the handlers.
      _, err, code = spool("replay " .. id .. " --live")
      assert.are.equal(0, code, err)
      assert.are.equal(2, #file_lines("deploys.log"))
    end)
  end)

  describe("concurrency", function()
    it("lets only one of two simultaneous resumes run the thread", function()
      local id = start("deploy")
      local cmd = string.format("%s --project %s resume %s --approve "
        .. ">/dev/null 2>%s/err.%%d; echo $? >%s/code.%%d", h.q(h.BIN),
        h.q(dir), id, h.q(dir), h.q(dir))
      h.sh("(" .. cmd:format(1, 1) .. ") & (" .. cmd:format(2, 2) .. ") & wait")
      local codes, errs = {}, {}
      for i = 1, 2 do
        codes[i] = tonumber(file_lines("code." .. i)[1])
        errs[i] = table.concat(file_lines("err." .. i), "\n")
      end
      table.sort(codes)
      assert.are.same({ 0, 1 }, codes)
      local loser = errs[1] ~= "" and errs[1] or errs[2]
      assert.is_truthy(loser:find("being run by another process", 1, true)
        or loser:find("not waiting", 1, true) or loser:find("has ended", 1, true)
        or loser:find("another process appended", 1, true), loser)
      assert.are.equal(1, #file_lines("deploys.log"))
      assert.are.equal("done", status(id))
    end)
  end)

  describe("takeover", function()
    it("lets one of three resumes racing over a dead process's lease run "
      .. "the thread, its idempotent call once", function()
      -- Each forced takeover of a dead holder's lease took it: 1 trial in
      -- 30 ran the call twice at once. Now the first wins the epoch.
      for trial = 1, 4 do
        h.remove(dir .. "/writes.log")
        local id, code = start("writer", "write again",
          "SPOOL_TEST_CRASH=after_intent")
        assert.are.equal(137, code)
        local cmd = string.format("%s --project %s resume %s >/dev/null "
          .. "2>%s/err.%%d; echo $? >%s/code.%%d", h.q(h.BIN), h.q(dir), id,
          h.q(dir), h.q(dir))
        h.sh("(" .. cmd:format(1, 1) .. ") & (" .. cmd:format(2, 2) .. ") & ("
          .. cmd:format(3, 3) .. ") & wait")
        local winners = 0
        for i = 1, 3 do
          local c = tonumber(file_lines("code." .. i)[1])
          winners = winners + (c == 0 and 1 or 0)
          if c ~= 0 then
            local err = table.concat(file_lines("err." .. i), "\n")
            assert.is_truthy(err:find("being run by another process", 1, true)
              or err:find("has ended", 1, true), err)
          end
        end
        assert.are.equal(1, winners, "trial " .. trial)
        assert.are.same({ "k1" }, file_lines("writes.log"))
        assert.are.equal("done", status(id))
      end
    end)
  end)

  describe("threads as data", function()
    it("lists, shows, exports, forks, cancels and deletes", function()
      local id = start("deploy")
      local out, err, code = spool("threads")
      assert.are.equal(0, code)
      assert.matches(id .. "%s+deploy%s+waiting%s+7", out)
      out, err, code = spool("show " .. id)
      assert.are.equal(0, code, err)
      assert.matches("needs approval: deploy {\"tag\":\"v2\"}", out, 1, true)
      -- Fork after the first model call: the fork routes that call again
      -- and reaches the same approval.
      local fork
      fork, err, code = spool("fork " .. id .. " --at 2")
      assert.are.equal(0, code, err)
      fork = fork:match("t_%w+")
      assert.are.same({ "input", "model_call" }, types(events(fork)))
      -- two threads now: a list cut short says so
      out = spool("threads --limit 1")
      assert.matches("^t_%w+ .*\n%(only the newest 1 are shown: %-%-limit N "
        .. "shows more%)\n$", out)
      assert.not_matches("only the newest", (spool("threads --limit 2")))
      _, _, code = spool("resume " .. fork)
      assert.are.equal(3, code)
      assert.are.equal(7, #events(fork))
      _, err, code = spool("fork " .. id .. " --at 99")
      assert.are.equal(2, code)
      assert.matches("has events 1 to 7: a fork keeps a number of them in "
        .. "that range, not 99", err)
      -- Cancel, then nothing can resume it.
      out, err, code = spool("cancel " .. id)
      assert.are.equal(0, code, err)
      assert.are.equal("cancelled", status(id))
      _, err, code = spool("resume " .. id .. " --approve")
      assert.are.equal(1, code)
      assert.matches("has ended %(cancelled%)", err)
      -- Delete, then it is gone.
      _, err, code = spool("delete " .. fork)
      assert.are.equal(0, code, err)
      _, err, code = spool("show " .. fork)
      assert.are.equal(2, code)
      assert.matches("unknown thread '" .. fork .. "'", err)
      out = spool("threads --status waiting --json")
      assert.are.same({}, json.decode(out))
    end)

    it("deletes old finished threads and reclaims space with gc", function()
      local id = start("greet")
      spool("resume " .. id .. " --answer Bo")
      local out, err, code = spool("gc --older-than 30")
      assert.are.equal(0, code, err)
      assert.matches('"threads":0', out, 1, true)
      out, err, code = spool("gc --older-than 30",
        "SPOOL_TEST_TIME_OFFSET_MS=" .. 40 * 86400000)
      assert.are.equal(0, code, err)
      assert.matches('"threads":1', out, 1, true)
      _, _, code = spool("show " .. id)
      assert.are.equal(2, code)
    end)
  end)

  describe("the database", function()
    local function sql(stmt)
      local out, code = h.sh(string.format("sqlite3 %s %s",
        h.q(dir .. "/.spool/spool.db"), h.q(stmt)))
      assert.are.equal(0, code, out)
      return out
    end

    it("names a corrupt row and changes nothing", function()
      local id = start("greet")
      sql("UPDATE events SET data = '{broken' WHERE seq = 2")
      local _, err, code = spool("show " .. id)
      assert.are.equal(1, code)
      assert.matches("thread " .. id .. ", event 2: the stored data is not "
        .. "JSON", err, 1, true)
      _, err, code = spool("resume " .. id .. " --answer x")
      assert.are.equal(1, code)
      assert.matches("event 2: the stored data is not JSON", err, 1, true)
      assert.are.equal("{broken\n", sql("SELECT data FROM events WHERE seq = 2"))
    end)

    it("recover skips a corrupt thread, names it, and exits 1", function()
      local out, err, code = spool("recover")
      assert.are.equal(0, code, err)
      assert.matches('{"expired":[],"resumed":[],"skipped":[]}', out, 1, true)
      local id
      id, code = start("writer", "write", "SPOOL_TEST_CRASH=after_intent")
      assert.are.equal(137, code)
      sql("UPDATE events SET data = '{broken' WHERE seq = 2")
      out, err, code = spool("recover")
      assert.are.equal(1, code)
      local report = json.decode(out:match("^recovered: (.*)"))
      assert.are.same({}, report.resumed)
      assert.are.equal(id, report.skipped[1].id)
      assert.matches("event 2: the stored data is not JSON",
        report.skipped[1].error, 1, true)
      assert.matches("thread " .. id .. " cannot be resumed", err, 1, true)
      assert.matches("some threads could not be resumed", err, 1, true)
      assert.are.equal("{broken\n", sql("SELECT data FROM events WHERE seq = 2"))
    end)

    it("reads a store it may not write, and names it when a write fails",
      function()
      local id = start("greet", "first")
      local folder = dir .. "/.spool"
      local db = folder .. "/spool.db"
      -- Root may write anything: drop that in a user namespace when the
      -- tests run as root.
      local drop = ""
      if h.sh("id -u"):match("^0%s") then
        if select(2, h.sh("unshare -U true 2>/dev/null")) ~= 0 then
          pending("running as root without user namespaces: permissions "
            .. "cannot be taken away here")
          return
        end
        drop = "unshare -U"
      end
      h.sh("chmod 0444 " .. h.q(db) .. " && chmod 0555 " .. h.q(folder))
      finally(function()
        h.sh("chmod -R u+w " .. h.q(dir))
      end)
      local ran, touched = h.sh(drop .. " sh -c " .. h.q("echo ran; touch "
        .. h.q(folder .. "/x")) .. " 2>/dev/null")
      assert.are.equal("ran\n", ran)
      assert.are_not.equal(0, touched, "the folder is out of reach")
      local out, err, code = spool("threads", drop)
      assert.are.equal(0, code, err)
      assert.matches(id, out, 1, true)
      out, err, code = spool("export " .. id, drop)
      assert.are.equal(0, code, err)
      assert.are.equal("input", h.json_lines(out)[1].type)
      _, err, code = spool("run greet --input x", drop)
      assert.are.equal(1, code)
      assert.matches("attempt to write a readonly database (the store was "
        .. "opened read-only: its file or folder is not writable here)", err,
        1, true)
      -- a folder it may write, a file it may not
      h.sh("chmod 0755 " .. h.q(folder))
      out, err, code = spool("show " .. id, drop)
      assert.are.equal(0, code, err)
      assert.matches("status waiting", out)
      h.sh("chmod 0644 " .. h.q(db))
      -- reached through a link in a folder it may not write: the real
      -- file's folder is what counts, and that one may be written
      local links = dir .. "/links"
      h.sh("mkdir " .. h.q(links) .. " && ln -s " .. h.q(db) .. " "
        .. h.q(links .. "/spool.db") .. " && chmod 0555 " .. h.q(links))
      _, err, code = spool("--db " .. h.q(links .. "/spool.db")
        .. " run greet --input x", drop)
      assert.are.equal(3, code, err) -- it ran, and waits for its answer
      -- a -wal left behind by a killed writer holds what the file does
      -- not: reading the file alone would lose it, so it is refused
      local copy = dir .. "/copy"
      h.sh("mkdir " .. h.q(copy))
      -- (copied from inside the writer's session, while it holds the -wal)
      h.sh(string.format("printf '%%s\\n' 'PRAGMA wal_autocheckpoint = 0;' "
        .. "'UPDATE threads SET updated_at = updated_at + 1;' "
        .. "'.shell cp %s %s %s/' | sqlite3 %s", h.q(db), h.q(db .. "-wal"),
        h.q(copy), h.q(db)))
      h.sh("chmod 0555 " .. h.q(copy))
      _, err, code = spool("--db " .. h.q(copy .. "/spool.db") .. " threads",
        drop)
      assert.are.equal(1, code)
      assert.matches("its %-wal file holds changes not yet in the database",
        err)
    end)

    it("upgrades a schema 2 database, keeping every thread and event",
      function()
      local id = start("greet", "first")
      local before = events(id)
      -- Back to schema 2's layout: events keyed by the thread's text id,
      -- leases without an epoch.
      sql([[
        DROP TABLE leases;
        CREATE TABLE leases(thread_id TEXT PRIMARY KEY, owner TEXT NOT NULL,
          expires_at INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE t2(id TEXT PRIMARY KEY, agent TEXT NOT NULL,
          parent TEXT, created_at INTEGER NOT NULL,
          updated_at INTEGER NOT NULL, status TEXT NOT NULL,
          deadline INTEGER, last_seq INTEGER NOT NULL);
        INSERT INTO t2 SELECT id, agent, parent, created_at, updated_at,
          status, deadline, last_seq FROM threads;
        CREATE TABLE e2(thread_id TEXT NOT NULL, seq INTEGER NOT NULL,
          step INTEGER NOT NULL, type TEXT NOT NULL, at INTEGER NOT NULL,
          v TEXT, data TEXT NOT NULL, PRIMARY KEY (thread_id, seq))
          WITHOUT ROWID;
        INSERT INTO e2 SELECT t.id, e.seq, e.step, e.type, e.at, e.v, e.data
          FROM events e JOIN threads t ON t.n = e.thread;
        DROP TABLE events; DROP TABLE threads;
        ALTER TABLE t2 RENAME TO threads; ALTER TABLE e2 RENAME TO events;
        CREATE INDEX threads_by_status ON threads(status, created_at);
        CREATE INDEX threads_by_parent ON threads(parent);
        CREATE INDEX threads_by_deadline ON threads(deadline)
          WHERE deadline IS NOT NULL;
        PRAGMA user_version = 2;]])
      -- Not while another (older) process runs one of its threads.
      sql("INSERT INTO leases VALUES ('" .. id .. "', 'other', "
        .. "(strftime('%s', 'now') + 600) * 1000)")
      local _, err, code = spool("threads")
      assert.are.equal(1, code)
      assert.matches("schema version 2 and this spool would upgrade it to "
        .. "4, but another spool process is running 1 of its threads", err)
      assert.are.equal("2\n", sql("PRAGMA user_version"))
      sql("DELETE FROM leases")
      assert.are.same(before, events(id))
      assert.are.equal("4\n", sql("PRAGMA user_version"))
      assert.are.equal("integer\n",
        sql("SELECT DISTINCT typeof(thread) FROM events"))
      local second = start("greet", "second")
      assert.are.equal(status(id), status(second))
      local out = spool("threads")
      assert.matches(id, out, 1, true)
      assert.matches(second, out, 1, true)
    end)

    it("refuses a database from a newer schema, and a foreign one", function()
      start("greet")
      sql("PRAGMA user_version = 9")
      local _, err, code = spool("threads")
      assert.are.equal(1, code)
      assert.matches("schema version 9, newer than this spool reads %(4%)", err)
      assert.are.equal("9\n", sql("PRAGMA user_version"))
      local other = dir .. "/other.db"
      h.sh("sqlite3 " .. h.q(other) .. " 'CREATE TABLE people(name TEXT)'")
      _, err, code = spool("--db " .. h.q(other) .. " threads")
      assert.are.equal(1, code)
      assert.matches("holds tables that are not spool's", err)
    end)
  end)
end)


describe("a sub-agent called from a tool's handler", function()
  it("gets the answer to its question, and its parent goes on", function()
    local loader = require "spool.run.loader"
    local runner = require "spool.run.runner"
    local mock = h.mock { rules = { { reply = function(conv)
      if conv.system == "PARENT" then
        if conv.turns == 0 then
          return { tool = "delegate", args = { q = "x" } }
        end
        return { tool = "finish", args = { answer = "parent got: "
          .. conv.tool_results[#conv.tool_results].content } }
      end
      if conv.turns == 0 then
        return { tool = "ask", args = { question = "what?" } }
      end
      return { tool = "finish", args = { answer = "kid heard "
        .. conv.tool_results[#conv.tool_results].content } }
    end } } }
    finally(mock.close)
    local _, restore = h.project({
      ["agents/par.lua"] = [[
local spool = require "spool"
return spool.agent { prompt = "par.md", tools = {
  delegate = { params = { q = "string" }, side_effects = false,
    run = function(a, ctx) return spool.call(ctx.thread, "kid", a.q) end },
  finish = spool.done } }]],
      ["agents/kid.lua"] = [[
local spool = require "spool"
return spool.agent { prompt = "kid.md",
  tools = { ask = spool.human.ask, finish = spool.done } }]],
      ["prompts/par.md"] = "PARENT", ["prompts/kid.md"] = "KID",
    }, mock)
    finally(restore)
    local t = h.run(assert(loader.load("par")), "go")
    assert.are.equal("waiting", t:status())
    h.wait_run(assert(runner.resume(t.id, { answer = "42" })))
    local after = assert(runner.load(t.id))
    assert.are.equal("done", after:status())
    assert.are.equal("parent got: kid heard 42", after:outcome())
    local kids = require("spool.run.store").children(t.id)
    assert.are.equal(1, #kids)
    assert.are.equal("done", kids[1].status)
  end)
end)


describe("a thread waiting for an outside event", function()
  it("goes on with the event's data as the tool's result", function()
    local loader = require "spool.run.loader"
    local runner = require "spool.run.runner"
    local mock = h.mock { rules = { { reply = function(conv)
      if conv.turns == 0 then
        return { tool = "wait_payment", args = {} }
      end
      return { tool = "finish", args = { answer = "paid: "
        .. conv.tool_results[#conv.tool_results].content } }
    end } } }
    finally(mock.close)
    local _, restore = h.project({
      ["agents/shop.lua"] = [[
local spool = require "spool"
return spool.agent { prompt = "shop.md", tools = {
  wait_payment = spool.wait_for("payment", "Wait until the customer paid."),
  finish = spool.done } }]],
      ["prompts/shop.md"] = "Sell.",
    }, mock)
    finally(restore)
    local t = h.run(assert(loader.load("shop")), "a teapot")
    assert.are.equal("waiting", t:status())
    assert.are.equal("event", t:pending_request().data.kind)
    local _, err = runner.resume(t.id, { event = "refund", data = {} })
    assert.matches("waits for the event 'payment', not 'refund'", err)
    _, err = runner.resume(t.id, { answer = "yes" })
    assert.matches("waits for the event 'payment'", err)
    h.wait_run(assert(runner.resume(t.id, { event = "payment",
      data = { amount = 30 } })))
    local after = assert(runner.load(t.id))
    assert.are.equal("done", after:status())
    assert.are.equal('paid: {"amount":30}', after:outcome())
  end)
end)
