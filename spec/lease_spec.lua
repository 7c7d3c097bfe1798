-- Leases and fencing (issue 22), through the store's bindings: a claim
-- takes a new epoch, an append must name the epoch and owner of the
-- latest claim, a lapsed lease is taken over by anyone, and of several
-- takers of a dead holder's lease exactly one wins.
-- And the thread row each step leaves, through the same bindings.
local h = require "spec.support"
local core = require "spool.core"
local json = require "spool.json"
local store = require "spool.run.store"

describe("leases", function()
  local id, t0

  before_each(function()
    id = "t_lease_" .. core.random_id()
    t0 = core.time()
  end)

  -- core.store_claim's answer: { epoch } or { held_by, epoch, ms_left }.
  local function claim(owner, at, dead_epoch)
    return json.decode(assert(core.store_claim(id, owner, 1000, at,
      dead_epoch)))
  end

  local function step(owner, epoch, seq, at)
    return core.store_append { thread = id, agent = "a", expected_seq = seq,
      status = "running", owner = owner, epoch = epoch, now = at,
      writes = {}, events = { { seq = seq + 1, step = seq, type = "input",
                                at = at, data = {} } } }
  end

  it("refuses an append without a claim", function()
    local ok, err, code = step("us", 0, 0, t0)
    assert.is_nil(ok)
    assert.are.equal("ECONFLICT", code)
    assert.matches("an append without a lease (claim it first)", err, 1, true)
  end)

  it("fences off a run whose lease lapsed and was claimed again", function()
    assert.are.same({ epoch = 1 }, claim("us", t0))
    assert(step("us", 1, 0, t0))
    -- Held: another owner is told who holds it and for how long.
    assert.are.same({ held_by = "us", epoch = 1, ms_left = 500 },
      claim("other", t0 + 500))
    -- Lapsed (the holder paused, say): anyone may claim it. The old run's
    -- next append is refused though its sequence is right.
    assert.are.same({ epoch = 2 }, claim("other", t0 + 1001))
    local ok, err = step("us", 1, 1, t0 + 1100)
    assert.is_nil(ok)
    assert.matches("this run lost its lease (claim 1; the thread is at "
      .. "claim 2, held by other)", err, 1, true)
    assert(step("other", 2, 1, t0 + 1100))
    -- A released lease keeps its epoch, and appends nothing more.
    assert(core.store_release(id, "other", 2))
    ok, err = step("other", 2, 2, t0 + 1200)
    assert.is_nil(ok)
    assert.matches("held by nobody", err, 1, true)
    assert.are.same({ epoch = 3 }, claim("us", t0 + 1200))
    assert(step("us", 3, 2, t0 + 1200))
  end)

  it("lets one of several takers of a dead holder's lease win", function()
    assert.are.same({ epoch = 1 }, claim("dead", t0))
    -- Each taker saw the dead holder at epoch 1: the first forced claim
    -- wins, the others find the lease taken (before fencing, each forced
    -- claim took it, and two resumes ran one thread).
    assert.are.same({ epoch = 2 }, claim("a", t0 + 10, 1))
    assert.are.same({ held_by = "a", epoch = 2, ms_left = 1000 },
      claim("b", t0 + 10, 1))
    assert.are.same({ held_by = "a", epoch = 2, ms_left = 1000 },
      claim("c", t0 + 10, 1))
  end)

  it("is renewed while its holder holds it, and lapses after", function()
    local owner = "beat_" .. core.random_id():sub(-6)
    local function held_by()
      return json.decode(assert(core.store_claim(id, "other", 300,
        core.time()))).held_by
    end
    assert(core.store_claim(id, owner, 300, core.time()))
    core.store_hold(owner, 300, 1) -- beats every 100 ms
    core.sleep(700)
    assert.are.equal(owner, held_by())
    core.store_hold(owner, 300, 0)
    core.sleep(700)
    assert.is_nil(held_by()) -- lapsed: "other" took it
    core.store_hold(store.owner, store.lease_ms, 0)
  end)

  it("takes over threads left running whose lease lapsed", function()
    assert(core.store_claim(id, "gone", 1000, t0 - 5000))
    assert(core.store_append { thread = id, agent = "a", expected_seq = 0,
      status = "running", owner = "gone", epoch = 1, now = t0 - 5000,
      events = { { seq = 1, step = 0, type = "input", at = t0 - 5000,
                   data = { input = 1 } } } })
    local rows = assert(store.take_over(1000))
    local mine
    for _, row in ipairs(rows) do
      if row.id == id then
        mine = row
      end
      store.release(row.id)
    end
    assert.are.same({ id = id, epoch = 2 }, mine)
    -- Taken and given back: a released lease is ready again at once.
    rows = assert(store.take_over(1000))
    local again = false
    for _, row in ipairs(rows) do
      again = again or row.id == id
      store.release(row.id)
    end
    assert.is_true(again)
    h.assert_clean()
  end)

  it("keeps a step stored in the tick a hostile read fails in", function()
    -- PostgreSQL refuses text that is not UTF-8, and a failed statement
    -- aborted the whole tick's transaction: the append beside it was
    -- told "stored" and was gone (its COMMIT had answered ROLLBACK).
    assert(claim("us", t0))
    local bad
    core.spawn(function()
      bad = table.pack(core.store_state_get("ns", "k\xff", t0))
    end)
    local ok, err = core.store_append { thread = id, agent = "a",
      expected_seq = 0, status = "running", owner = "us", epoch = 1,
      now = t0, writes = { { ns = "spec_ns2", key = id, value = "1" } },
      events = { { seq = 1, step = 0, type = "input", at = t0,
                   data = {} } } }
    assert(ok, err)
    h.wait_for(function() return bad ~= nil end, 5000, "the read")
    assert(core.store_load(id))
    assert.are.equal('{"value":1', (core.store_state_get("spec_ns2", id,
      core.time())):sub(1, 10))
  end)

  it("is taken with a new thread's first step, and given back with the "
    .. "step after which its run stops", function()
    local function append(owner, seq, status, flags)
      local op = { thread = id, agent = "a", expected_seq = seq,
        status = status, owner = owner, epoch = flags.epoch, now = t0,
        claim = flags.claim, lease_ms = 1000, release = flags.release,
        events = { { seq = seq + 1, step = seq, type = "input", at = t0,
                     data = {} } } }
      return core.store_append(op)
    end
    -- Held by another: the first step is refused, and nothing is stored.
    assert.are.same({ epoch = 1 }, claim("other", t0))
    local ok, err, code = append("us", 0, "running", { claim = true })
    assert.is_nil(ok)
    assert.are.equal("ECONFLICT", code)
    assert.matches("being run by another process", err, 1, true)
    assert.is_nil((core.store_load(id)))
    -- Free: taken, at the next epoch, in the step's own transaction.
    assert(core.store_release(id, "other", 1))
    local versions, bytes, epoch = append("us", 0, "running",
      { claim = true })
    assert(versions, bytes)
    assert.are.equal(2, epoch)
    assert.are.same({ held_by = "us", epoch = 2, ms_left = 1000 },
      claim("other", t0))
    -- A step that stops the run gives the lease back with it.
    assert(append("us", 1, "waiting", { epoch = 2, release = true }))
    assert.are.same({ epoch = 3 }, claim("other", t0))
    -- A step refused (a lost lease) gives nothing back.
    ok, err = append("us", 2, "done", { epoch = 2, release = true })
    assert.is_nil(ok)
    assert.matches("lost its lease", err, 1, true)
    assert.are.same({ held_by = "other", epoch = 3, ms_left = 1000 },
      claim("third", t0))
  end)

  it("is held by no one once a run stopped, as its last step says",
    function()
    -- Through a run: the thread's first step claimed it, its last gave it
    -- back (nothing is left for a later release to do).
    local agent = h.agent { step = function(thread)
      thread:finish("done")
    end }
    local t = h.run(agent, "hi")
    assert.are.equal("done", t:status())
    assert.is_false(store.holds(t.id))
    local lease = json.decode(assert(core.store_claim(t.id, "other", 1000,
      core.time())))
    assert.are.same({ epoch = 2 }, lease)
  end)

  it("is never claimed twice by its own holder, which would fence its run",
    function()
    assert(store.claim(id))
    local ok, err = store.claim(id)
    assert.is_nil(ok)
    assert.matches("is being run by this process", err, 1, true)
    assert(store.release(id))
    assert(store.claim(id))
    assert(store.release(id))
  end)

  it("parks a thread it took over but cannot resume, instead of taking it "
    .. "every second", function()
    assert(core.store_claim(id, "gone", 1000, t0 - 5000))
    assert(core.store_append { thread = id, agent = "no_such_agent",
      expected_seq = 0, status = "running", owner = "gone", epoch = 1,
      now = t0 - 5000, events = { { seq = 1, step = 0, type = "input",
                                    at = t0 - 5000, data = { input = 1 } } } })
    local runner = require "spool.run.runner"
    local function mine(rows)
      for _, row in ipairs(rows) do
        if row.id == id then
          return true
        end
      end
    end
    runner.take_over()
    -- Parked: not ready for a minute, but a person may still claim it.
    local rows = assert(store.take_over(1000))
    for _, row in ipairs(rows) do
      store.release(row.id)
    end
    assert.is_nil(mine(rows))
    assert(store.claim(id))
    assert(store.release(id))
  end)
end)

-- A step that keeps the thread's status and deadline updates only its
-- count (SQLite then leaves those columns' indexes be); one that changes
-- either stores it, however the two change.
describe("a thread's row", function()
  it("has the status and deadline of its latest step", function()
    local id = "t_row_" .. core.random_id()
    local t0 = core.time()
    local epoch = json.decode(assert(core.store_claim(id, "us", 60000, t0)))
      .epoch
    local seq = 0
    local function step(status, deadline)
      assert(core.store_append { thread = id, agent = "a",
        expected_seq = seq, status = status, deadline = deadline,
        owner = "us", epoch = epoch, now = t0, writes = {},
        events = { { seq = seq + 1, step = seq, type = "input", at = t0,
                     data = {} } } })
      seq = seq + 1
      local row = json.decode(assert(core.store_load(id))).thread
      assert.are.equal(status, row.status)
      assert.are.equal(seq, row.events)
      local due = json.decode(assert(core.store_due(t0 + 10)))
      local found = false
      for _, d in ipairs(due) do
        found = found or d == id
      end
      assert.are.equal(deadline ~= nil and deadline <= t0 + 10, found)
    end
    step("running")
    step("running")
    step("waiting", t0 + 5)
    step("waiting", t0 + 5)
    step("waiting", t0 + 50)
    step("waiting", t0 + 5)
    step("waiting")
    step("running")
    step("waiting", t0 + 1)
    step("running")
    step("done")
    step("done")
  end)
end)
