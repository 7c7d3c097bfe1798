-- spool migrate: a SQLite store copied into an empty one exactly, and the
-- threads go on there. The target is the PostgreSQL database
-- scripts/with-postgres names in SPOOL_DB, else another SQLite file.
local h = require "spec.support"
local json = require "spool.json"

local FIXTURE = h.ROOT .. "/spec/fixtures/durable"
local PG = require("spec.serve_support").pg

describe("spool migrate", function()
  local dir, source, target

  before_each(function()
    dir = h.tmpdir()
    h.sh(string.format("cp -r %s/. %s/", h.q(FIXTURE), h.q(dir)))
    source = dir .. "/source.db"
    target = PG or dir .. "/target.db"
  end)

  after_each(function()
    h.remove(dir)
  end)

  -- spool on store db: stdout, stderr, exit code.
  local function spool(db, args, env)
    local out, err = dir .. "/.out", dir .. "/.err"
    local _, code = h.sh(string.format("%s %s --project %s --db %s %s >%s "
      .. "2>%s", env or "", h.q(h.BIN), h.q(dir), h.q(db), args, out, err))
    return h.slurp(out), h.slurp(err), code
  end

  local function start(agent, input, env)
    local out = spool(source, "run " .. agent .. " --json --input "
      .. h.q(input), env)
    return json.decode(out:match("[^\n]+")).thread
  end

  it("copies threads, events, state and versions, and they go on there",
    function()
    local waiting = start("deploy", "go")
    local done = start("writer", "write")
    local crashed = start("writer", "write again",
      "SPOOL_TEST_CRASH=after_intent")
    -- The crashed run's lease is held yet: its workers must be stopped,
    -- and that one's lease lapse, before a copy.
    local out, err, code = h.cli(string.format("migrate --from %s --to %s",
      h.q(source), h.q(target)))
    assert.are.equal(1, code)
    assert.matches("a worker still runs threads of the source store", err)
    h.sh(string.format("sqlite3 %s %s", h.q(source),
      h.q("UPDATE leases SET expires_at = 0")))
    out, err, code = h.cli(string.format("migrate --from %s --to %s",
      h.q(source), h.q(target)))
    assert.are.equal(0, code, err)
    local counts = json.decode(out)
    assert.are.equal(3, counts.threads)
    assert.is_true(counts.events >= 9 and counts.state >= 1
      and counts.versions >= 2, out)
    -- The same, to the byte, read from either store.
    for _, id in ipairs { waiting, done, crashed } do
      assert.are.equal(spool(source, "export " .. id),
        spool(target, "export " .. id))
    end
    assert.are.equal(spool(source, "threads --json"),
      spool(target, "threads --json"))
    assert.are.equal(spool(source, "state export notes"),
      spool(target, "state export notes"))
    -- They go on: one answered, one recovered, and new threads number on.
    _, err, code = spool(target, "resume " .. waiting .. " --approve")
    assert.are.equal(0, code, err)
    _, err, code = spool(target, "recover")
    assert.are.equal(0, code, err)
    for _, id in ipairs { waiting, crashed } do
      local show = json.decode((spool(target, "show --json " .. id)))
      assert.are.equal("done", show.thread.status, id)
    end
    local fresh = json.decode((spool(target, "run greet --json --input "
      .. "Bo"):match("[^\n]+"))).thread
    assert.is_truthy(fresh)
    -- A store with threads in it is never a target.
    _, err, code = h.cli(string.format("migrate --from %s --to %s",
      h.q(source), h.q(target)))
    assert.are.equal(1, code)
    assert.matches("the target store is not empty", err)
  end)

  it("copies nothing from a store with a corrupt row, and names it",
    function()
    start("writer", "write")
    h.sh(string.format("sqlite3 %s %s", h.q(source),
      h.q("UPDATE events SET data = '{\"cut' WHERE seq = 2")))
    local other = dir .. "/other.db"
    local _, err, code = h.cli(string.format("migrate --from %s --to %s",
      h.q(source), h.q(other)))
    assert.are.equal(1, code)
    assert.matches("events row 1 %(column 7%) is not JSON", err)
    assert.matches("nothing was copied", err)
    local out = spool(other, "threads --json")
    assert.are.same({}, json.decode(out))
    _, err, code = h.cli("migrate --from " .. h.q(dir .. "/none.db")
      .. " --to " .. h.q(other))
    assert.are.equal(2, code) -- what does not exist exits 2
    assert.matches("no store at", err)
  end)
end)
