-- Several `spool serve` workers over one store (issue 22): a worker killed
-- and restarted at once, and a worker that stops answering while others
-- serve. Every thread finishes; nothing is stored twice; a worker that
-- lost its leases cannot append. On a SQLite file in the project, or on
-- the PostgreSQL database scripts/with-postgres names in SPOOL_DB.
local h = require "spec.support"
local json = require "spool.json"
local workers = require "spec.serve_support"
local core = require "spool.core"

local curl = workers.curl

local PG, db_of, sql = workers.pg, workers.store_of, workers.sql

local function serve(dir, mock, opts)
  local s = workers.serve(dir, mock, "", nil, db_of(dir), opts)
  finally(s.kill)
  return s
end

-- Records each step in business state (committed with the step, keyed by
-- thread and step) and in a file (every execution, committed or not).
local AGENT = [[
local spool = require "spool"
return spool.agent { prompt = "p.md", max_steps = 30, tools = {
  refund = { params = { amount = "number" }, approve = true,
    run = function(a) return "refunded " .. a.amount end },
  late_refund = { params = { amount = "number" },
    approve = { deadline_ms = 1500 },
    run = function(a) return "refunded " .. a.amount end },
  record = { params = { text = "string" }, idempotent = true,
    run = function(a, ctx)
      local key = ctx.thread.id .. "/" .. a.text
      spool.state.put("ledger", key, { key = ctx.idempotency_key })
      assert(spool.fs.append("effects.log", key .. "\n"))
      return "recorded " .. a.text
    end },
  finish = spool.done } }
]]

local MOCK = [[
return { latency_ms = tonumber(os.getenv("SPEC_LATENCY") or "0"), rules = {
  { reply = function(conv)
      local n = tonumber(conv.user:match("steps:(%d+)") or "0")
      if conv.user:match("^refund") and conv.turns == 0 then
        return { tool = "refund", args = { amount = 5 } }
      end
      if conv.user:match("^deadline") and conv.turns == 0 then
        return { tool = "late_refund", args = { amount = 5 } }
      end
      if conv.turns < n then
        return { tool = "record", args = { text = "step " .. conv.turns } }
      end
      return { tool = "finish", args = { answer = "done after "
        .. conv.turns } }
    end } } }
]]

-- Runs w as a sub-agent: w's approval surfaces on the boss's thread.
local BOSS = [[
local spool = require "spool"
return spool.agent { max_steps = 3, step = function(thread)
  local result, err = spool.call(thread, "w", "refund steps:1")
  if result == nil then
    thread:fail("w failed: " .. tostring(err))
  else
    thread:finish("boss says: " .. result)
  end
end }
]]

local function project(latency, settings)
  local dir = h.tmpdir()
  h.write_files(dir, { ["agents/w.lua"] = AGENT, ["prompts/p.md"] = "Work.",
                       ["agents/boss.lua"] = BOSS,
                       ["mock.lua"] = MOCK,
                       ["spool.lua"] = "return " .. (settings or "{}") })
  local mock = h.mock_process(dir .. "/mock.lua", nil,
    "SPEC_LATENCY=" .. latency)
  finally(function()
    mock.stop()
    h.remove(dir)
  end)
  return dir, mock
end

local function start(s, n, steps)
  local ids = {}
  for i = 1, n do
    local status, v = curl(s, "POST", "/v1/threads",
      string.format('{"agent":"w","input":"job %d steps:%d"}', i, steps))
    assert.are.equal(201, status, v)
    ids[i] = v.id
  end
  return ids
end

-- Waits until every thread has stored `events` events or more.
local function under_way(s, ids, events)
  h.wait_for(function()
    for _, id in ipairs(ids) do
      local _, v = curl(s, "GET", "/v1/threads/" .. id)
      if type(v) ~= "table" or #(v.events or {}) < events then
        return false
      end
    end
    return true
  end, 20000, "the runs to be under way")
end

-- The threads the store has as running, read by a process of its own.
local function running(dir)
  return json.decode(h.sh(string.format("%s --project %s --db %s threads "
    .. "--status running --json", h.q(h.BIN), h.q(dir), h.q(db_of(dir)))))
end

local function wait_done(s, ids, timeout_ms, what)
  h.wait_for(function()
    local status, v = curl(s, "GET", "/v1/threads?status=running&limit=100")
    assert(status == 200, v)
    return #v.threads == 0
  end, timeout_ms, what)
end

local function metric(s, name)
  local _, text = curl(s, "GET", "/metrics")
  return tonumber(tostring(text):match("\n" .. name .. " (%d+)")) or 0
end

-- Stops worker s (SIGSTOP). On SQLite, between two of its transactions:
-- a process paused inside one holds the file's write lock, and every
-- other worker waits for it (a limit of one file, not of fencing). On
-- PostgreSQL, inside one, the worst case: the rows it locked are skipped
-- by every claim until the server ends its session.
local function paused_where_wanted(dir, s)
  if PG then
    return sql(dir, "SELECT count(*) FROM pg_stat_activity WHERE "
      .. "application_name = 'spool " .. s.pid .. "' AND xact_start "
      .. "IS NOT NULL"):match("^%s*[1-9]") ~= nil
  end
  local _, code = h.sh(string.format("sqlite3 -cmd '.timeout 100' %s "
    .. "'BEGIN IMMEDIATE; ROLLBACK;' >/dev/null 2>&1",
    h.q(dir .. "/spool.db")))
  return code == 0
end

local function pause(dir, s)
  for _ = 1, 300 do
    h.sh("kill -STOP " .. s.pid)
    if paused_where_wanted(dir, s) then
      return
    end
    h.sh("kill -CONT " .. s.pid)
    core.sleep(10)
  end
  error("the worker never paused where the test wants it")
end

-- Each thread done once, its events in order, each of its steps recorded
-- in the ledger once, by the step that stored it.
local function check(dir, s, ids, steps)
  local out = sql(dir, "SELECT key, version FROM state WHERE ns = 'ledger'")
  local ledger = {}
  for key, version in out:gmatch("([^|\n]+)|(%d+)") do
    ledger[key] = tonumber(version)
  end
  for _, id in ipairs(ids) do
    local _, v = curl(s, "GET", "/v1/threads/" .. id)
    assert.are.equal("done", v.status, id)
    assert.are.equal("done after " .. steps, v.result)
    local done = 0
    for i, ev in ipairs(v.events) do
      assert.are.equal(i, ev.seq)
      done = done + (ev.type == "done" and 1 or 0)
    end
    assert.are.equal(1, done, id)
    for k = 0, steps - 1 do
      assert.are.equal(1, ledger[id .. "/step " .. k], id .. " step " .. k)
    end
  end
end

describe("workers over one store", function()
  it("continue every thread of a worker killed and restarted at once, "
    .. "while the killed one is still a zombie", function()
    local dir, mock = project(200)
    local a = serve(dir, mock, { unreaped = true })
    local ids = start(a, 20, 15)
    under_way(a, ids, 3)
    h.sh("kill -9 " .. a.pid)
    h.wait_for(function()
      return h.slurp("/proc/" .. a.pid .. "/stat"):match("%) Z ")
    end, 5000, "the killed worker to be a zombie")
    local interrupted = #running(dir)
    assert.is_true(interrupted >= 10, "runs a's death interrupted: "
      .. interrupted)
    -- Its leases last 30 s: only knowing their holder is dead lets the
    -- next worker go on before that (it saw a zombie as alive, and left
    -- 14 of 20 threads running for good).
    local b = serve(dir, mock)
    wait_done(b, ids, 20000, "the restarted worker to finish every run")
    check(dir, b, ids, 15)
    b.stop()
  end)

  it("answer, cancel and stream any thread, whichever worker runs it, and "
    .. "hold an idempotency key across workers", function()
    local dir, mock = project(300)
    local a = serve(dir, mock, { name = "a" })
    local b = serve(dir, mock, { name = "b" })
    -- Started on a, answered on b: b runs it from there.
    local status, v = curl(a, "POST", "/v1/threads",
      '{"agent":"w","input":"refund steps:2","wait_ms":5000}')
    assert.are.equal(201, status)
    assert.are.equal("waiting", v.status)
    status = curl(b, "POST", "/v1/threads/" .. v.id .. "/events",
      '{"type":"approve"}')
    assert.are.equal(202, status)
    wait_done(b, { v.id }, 20000, "the answered thread to finish on b")
    -- A sub-agent's approval too: paused, the child is nobody's (it kept
    -- its worker's lease, renewed for good, and b could not answer). And
    -- at once: wait_ms answered "waiting" only after a let go of both
    -- threads (it answered between the boss's commit and a's releases,
    -- and b's claim could find them still held: 409). Several rounds,
    -- for that window was a race.
    for round = 1, 4 do
      status, v = curl(a, "POST", "/v1/threads",
        '{"agent":"boss","input":"go","wait_ms":5000}')
      assert.are.equal(201, status)
      assert.are.equal("waiting", v.status)
      status = curl(b, "POST", "/v1/threads/" .. v.id .. "/events",
        '{"type":"approve"}')
      assert.are.equal(202, status, "round " .. round)
      h.wait_for(function()
        local _, t = curl(b, "GET", "/v1/threads/" .. v.id)
        return t.status == "done"
      end, 20000, "the boss to finish on b: " .. a.log() .. b.log())
    end
    -- On PostgreSQL each hears what the other commits (LISTEN/NOTIFY).
    h.wait_for(function()
      return metric(b, "spool_store_listening") == (PG and 1 or 0)
    end, 10000, "b to listen")
    -- A long run on a, followed and cancelled through b.
    local started, long = curl(a, "POST", "/v1/threads",
      '{"agent":"w","input":"steps:60"}')
    assert.are.equal(201, started, long)
    local stream = dir .. "/stream.txt"
    h.sh(string.format("curl -sN -m 30 %s %s/v1/threads/%s/stream >%s "
      .. "2>/dev/null &", workers.auth(b), b.url, long.id, h.q(stream)))
    local ok, why = pcall(h.wait_for, function()
      local _, n = h.slurp(stream):gsub("event: tool_result", "")
      return n >= 2
    end, 30000, "b's stream to show a's events")
    assert(ok, tostring(why) .. "\nstream: " .. h.slurp(stream):sub(1, 800)
      .. "\na: " .. a.log():sub(-1500) .. "\nb: " .. b.log():sub(-1500))
    status, v = curl(b, "POST", "/v1/threads/" .. long.id .. "/cancel", "{}")
    assert.are.equal(202, status)
    assert.are.equal("cancelling", v.status)
    h.wait_for(function()
      local _, t = curl(a, "GET", "/v1/threads/" .. long.id)
      return t.status == "cancelled"
    end, 10000, "a to stop the run b was asked to cancel")
    h.wait_for(function()
      return h.slurp(stream):match('event: end\ndata: {"status":"cancelled"}')
    end, 5000, "b's stream to end")
    -- One Idempotency-Key, one thread, whichever worker is asked.
    local key = "-H 'Idempotency-Key: order-5531'"
    local s1, t1 = curl(a, "POST", "/v1/threads",
      '{"agent":"w","input":"steps:1"}', key)
    local s2, t2 = curl(b, "POST", "/v1/threads",
      '{"agent":"w","input":"steps:1"}', key)
    assert.are.equal(201, s1)
    assert.is_true(s2 == 200 or s2 == 201, tostring(s2))
    assert.are.equal(t1.id, t2.id)
    a.stop()
    b.stop()
  end)

  it("start one thread per schedule slot, however many workers see it",
    function()
    local dir, mock = project(0, [[{ schedules = { tick = { agent = "w",
      cron = "* * * * *", input = "steps:1" } } }]])
    local a = serve(dir, mock, { name = "a" })
    local b = serve(dir, mock, { name = "b" })
    -- The slots' threads (on PostgreSQL the database holds the other
    -- tests' threads too).
    local function slots(s)
      local _, v = curl(s, "GET", "/v1/threads?agent=w&limit=100")
      local out = {}
      for _, t in ipairs(v.threads) do
        if t.id:match("^t_tick_") then
          out[#out + 1] = t
        end
      end
      return out
    end
    h.wait_for(function()
      local s = slots(b)
      return s[1] and s[1].status == "done"
    end, 10000, "the slot's thread")
    assert.matches("^t_tick_%d%d%d%d%d%d%d%d%d%d%d%d$", slots(b)[1].id)
    core.sleep(2500) -- both workers have seen the slot by now, twice
    local seen, list = {}, slots(a)
    for _, t in ipairs(list) do
      assert.is_nil(seen[t.id])
      seen[t.id] = true
    end
    assert.is_true(#list <= 2, "one thread per minute") -- (one more if the
    -- minute turned meanwhile)
    assert.is_nil(a.log():match("error"))
    assert.is_nil(b.log():match("error"))
    a.stop()
    b.stop()
  end)

  it("fire a deadline once, whichever worker sees it due", function()
    local dir, mock = project(0)
    local a = serve(dir, mock, { name = "a" })
    local b = serve(dir, mock, { name = "b" })
    local c = serve(dir, mock, { name = "c" })
    local ids = {}
    for i = 1, 5 do
      local status, v = curl(a, "POST", "/v1/threads",
        '{"agent":"w","input":"deadline steps:1","wait_ms":5000}')
      assert.are.equal(201, status)
      assert.are.equal("waiting", v.status)
      ids[i] = v.id
    end
    h.wait_for(function()
      for _, id in ipairs(ids) do
        local _, v = curl(c, "GET", "/v1/threads/" .. id)
        if v.status ~= "done" then
          return false
        end
      end
      return true
    end, 15000, "the deadlines to fire")
    for _, id in ipairs(ids) do
      local _, v = curl(b, "GET", "/v1/threads/" .. id)
      local responses = 0
      for _, ev in ipairs(v.events) do
        if ev.type == "human_response" then
          responses = responses + 1
          assert.are.equal("deadline", ev.data.by)
        end
      end
      assert.are.equal(1, responses, id)
      assert.are.equal("done", v.status)
    end
    a.stop()
    b.stop()
    c.stop()
  end)

  it("take over the threads of a worker that stopped answering, and fence "
    .. "it off when it wakes", function()
    local dir, mock = project(200, "{ lease_ms = 1500 }")
    local a = serve(dir, mock, { name = "a" })
    local b = serve(dir, mock, { name = "b" })
    local ids = start(a, 10, 6)
    under_way(a, ids, 3)
    finally(function() h.sh("kill -CONT " .. a.pid .. " 2>/dev/null") end)
    pause(dir, a)
    -- b holds no lease of these: it takes each over once a's lapse.
    wait_done(b, ids, 30000, "the other worker to finish a's runs")
    assert.is_true(metric(b, "spool_lease_takeovers_total") >= 1)
    local _, text = curl(b, "GET", "/metrics")
    assert.matches("\nspool_takeover_backlog 0\n", text)
    -- a wakes mid-step, its model replies in hand: not one is stored. Its
    -- runs find their leases lost; on PostgreSQL, those whose step was in
    -- the transaction a stopped in find it ended by the server instead
    -- (and all of them may have been: its runs step together).
    h.sh("kill -CONT " .. a.pid)
    h.wait_for(function()
      return metric(a, "spool_runs_in_flight") == 0
    end, 15000, "the woken worker's runs to stop: " .. a.log())
    if not (PG and a.log():find("idle-in-transaction", 1, true)) then
      assert.is_true(metric(a, "spool_lease_lost_total") >= 1, a.log())
      assert.matches("lost its lease", a.log())
    end
    check(dir, b, ids, 6)
    assert.are.equal(0, a.stop())
    b.stop()
  end)
end)
