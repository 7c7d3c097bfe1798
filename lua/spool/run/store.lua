-- spool.run.store: durable threads and business state, over the engine's store
-- thread (engine/src/io/store.c). Every function here yields the calling run
-- until the store has answered; none may be called outside a run.
--
--   store.append(thread, writes) -> versions | nil, err   one durable step
--                                   (a new thread's first takes its lease;
--                                   one that stops its run gives it back)
--   store.load(id)               -> thread record | nil, err
--   store.head(id)               -> its thread row alone
--   store.list{ status, agent, limit, before } -> threads
--   store.children(id)           -> threads
--   store.claim(id) / release(id)              the lease of this process
--   store.take_over(limit)       -> { {id, epoch}... }   lapsed leases, claimed
--   store.delete(id), store.due(), store.purge(finished_before)
--   store.migrate(from)          -> counts        another store copied in
--   store.state_get(ns, key), store.state_list(ns, after, limit)
--
-- A thread record is { thread = { id, agent, parent, status, created_at,
-- updated_at, events, deadline }, events = { event, ... } }. A failure is
-- nil, the message and the error's name (the message begins with it), as
-- the engine's bindings return one (luv's convention): callers branch on
-- the name, people read the message.

local core = require "spool.core"
local json = require "spool.json"

local M = {}

-- How long a lease lasts unless renewed (spool.lua's lease_ms). While this
-- process holds any, the store renews them all every third of it, so a
-- lease lapses only when its holder stopped: died, hung, or lost the
-- database. Any process may then claim the thread; the claim's new epoch
-- fences the old holder off (an append names the epoch of its claim).
M.default_lease_ms = 30 * 1000
M.lease_ms = M.default_lease_ms

local listener -- the latest store.listen's, if any

-- The leases this process holds: thread id -> epoch of its claim.
local held, nheld = {}, 0

-- What this process did with leases, for /metrics: claims taken, leases
-- taken over from a stopped holder, and appends refused because another
-- process had claimed the thread since (a lost lease).
M.counts = { claims = 0, takeovers = 0, lost = 0 }

local function hold(id, epoch)
  if held[id] == nil then
    nheld = nheld + 1
  end
  held[id] = epoch
  core.store_hold(M.owner, M.lease_ms, nheld)
end

local function let_go(id)
  if held[id] ~= nil then
    held[id], nheld = nil, nheld - 1
    core.store_hold(M.owner, M.lease_ms, nheld)
  end
end

-- Who this process is, as a lease holder: host:pid, plus a random part so
-- two engines of one process never share a lease.
M.owner = core.process_id() .. ":" .. core.random_id():sub(-6)


function M.open(path)
  M.path = path
  return core.store_open(path)
end


-- Tells the other workers that thread `id` changed (PostgreSQL: NOTIFY;
-- a store on one machine has nobody to tell). Each step tells them too.
function M.notify(id)
  return core.store_notify(id)
end


-- Hears what the other workers tell: fn({ id, ... }) in a task of its own
-- for the threads they changed. A listener (:up(), :close()), or nil where
-- the store has no notifications (SQLite: its workers poll).
function M.listen(fn)
  local path = M.path or ""
  if not (path:match("^postgres://") or path:match("^postgresql://")) then
    return nil
  end
  listener = core.store_listen(M.path, fn)
  return listener
end


-- Do notifications reach this process now (a listener is up)?
function M.listening()
  return listener ~= nil and listener:up()
end


local function decoded(text, err, code)
  if not text then
    return nil, err, code
  end
  local value, jerr = json.decode(text)
  if value == nil then
    return nil, "ECORRUPT: the store answered with bad JSON (" .. jerr .. ")",
      "ECORRUPT"
  end
  return value
end


-- When the request a waiting thread waits on is due (0: never, or the
-- thread does not wait).
local function deadline_of(thread, status)
  local req = status == "waiting" and thread:pending_request()
  return req and req.data.deadline or 0
end


-- Writes the engine makes in its own namespaces (spool_*, spool.*): only
-- these reach them. A run's writes are the agent's, whichever way they
-- got into the thread (spool.state refuses those names; a thread is
-- handed to agent code, which may push to its writes directly). append
-- checks; write_state is for the engine and scripts, and takes any.
local engine_writes = setmetatable({}, { __mode = "k" })

function M.engine_write(w)
  engine_writes[w] = true
  return w
end


-- Why a step's write may not be stored, or nil.
local function refusal(w)
  if type(w) ~= "table" or type(w.ns) ~= "string" or type(w.key) ~= "string"
      or (w.if_version ~= nil and math.type(w.if_version) ~= "integer") then
    return "EACCES: state write that is not { ns, key, value, if_version }"
  end
  if w.ns:match("^spool[_%.]") and not engine_writes[w] then
    return string.format("EACCES: state %s/%s is the engine's own namespace",
      w.ns, w.key)
  end
end


-- Makes the thread's new events (and the step's state writes) durable.
function M.append(thread, writes)
  for _, w in ipairs(writes or {}) do
    local why = refusal(w)
    if why then
      return nil, why
    end
  end
  local ws = {}
  for i, w in ipairs(writes or {}) do
    ws[i] = { ns = w.ns, key = w.key, if_version = w.if_version,
              expires_at = w.expires_at,
              value = w.value ~= nil and json.encode(w.value) or nil }
  end
  -- The new events go as they are: the store encodes their data, and
  -- says how many bytes that made. A new thread's first step takes its
  -- lease with it, and the step after which the run stops (the thread
  -- waits or ended) gives it back: one transaction each, not two, and
  -- whoever reads that step may claim the thread at once.
  local id, status = thread.id, thread:status()
  local claim = thread.persisted == 0 and held[id] == nil
  local release = status ~= "running"
  local versions, bytes, epoch = core.store_append {
    thread = id, agent = thread.agent, parent = thread.parent,
    expected_seq = thread.persisted, status = status,
    deadline = deadline_of(thread, status), owner = M.owner,
    epoch = held[id], claim = claim, lease_ms = M.lease_ms,
    release = release,
    now = core.time(), events = thread.events, first = thread.persisted + 1,
    writes = ws,
  }
  if not versions then
    local err, code = bytes, epoch
    if code == "ECONFLICT" and err:find("lost its lease", 1, true) then
      M.counts.lost = M.counts.lost + 1
      let_go(id)
    end
    return nil, err, code
  end
  if claim then
    M.counts.claims = M.counts.claims + 1
    hold(id, epoch)
  end
  if release then
    let_go(id)
  end
  thread.bytes = (thread.bytes or 0) + bytes -- what was stored, once
  if #ws == 0 then
    return {} -- (most steps write no state: no versions to read)
  end
  return json.decode(versions)
end


-- Writes state outside any thread (a script, a test, the CLI).
function M.write_state(writes)
  local ws = {}
  for i, w in ipairs(writes) do
    ws[i] = { ns = w.ns, key = w.key, if_version = w.if_version,
              expires_at = w.expires_at,
              value = w.value ~= nil and json.encode(w.value) or nil }
  end
  local versions, err, code = core.store_append { now = core.time(),
                                                  writes = ws }
  if not versions then
    return nil, err, code
  end
  return json.decode(versions)
end


-- A thread's record { thread, events, bytes }: bytes is the size of what
-- was stored (a thread kept in memory is counted by it).
function M.load(id)
  local text, err, code = core.store_load(id)
  local record, derr, dcode = decoded(text, err, code)
  if record then
    record.bytes = #text
  end
  return record, derr, dcode
end


-- A thread's row { id, agent, parent, status, events, ... } without its
-- events: enough to tell whether it has new ones.
function M.head(id)
  return decoded(core.store_head(id))
end


function M.list(filter)
  return decoded(core.store_list(filter or {}))
end


function M.children(id)
  return decoded(core.store_children(id))
end


-- Takes the lease on a thread for this process: a new epoch, so whoever
-- held it before can no longer append. A lease held by a process of this
-- host that no longer runs is taken over at once (if nobody else took it
-- first); another holder's lease only once it lapses.
function M.claim(id)
  if held[id] then
    -- Claimed again by its own holder, a live run would be fenced off.
    return nil, "ECONFLICT: thread " .. id .. " is being run by this "
      .. "process", "ECONFLICT"
  end
  local got, err, code = decoded(core.store_claim(id, M.owner, M.lease_ms,
    core.time()))
  if not got then
    return nil, err, code
  end
  local holder = got.held_by
  local host, pid = (holder or ""):match("^(.*):(%d+):%w+$")
  if host == core.process_id():match("^(.*):%d+$")
      and not core.process_alive(tonumber(pid)) then
    M.counts.takeovers = M.counts.takeovers + 1
    core.log("info", "thread " .. id .. ": taking over the lease of dead "
      .. "process " .. pid)
    got, err, code = decoded(core.store_claim(id, M.owner, M.lease_ms,
      core.time(), got.epoch))
    if not got then
      return nil, err, code
    end
  end
  if got.held_by then
    return nil, string.format("ECONFLICT: thread %s is being run by another "
      .. "process (%s) for %d ms more", id, got.held_by, got.ms_left),
      "ECONFLICT"
  end
  M.counts.claims = M.counts.claims + 1
  hold(id, got.epoch)
  return true
end


-- Does this process hold the lease on thread `id`?
function M.holds(id)
  return held[id] ~= nil
end


-- Gives the lease back, at once or, with park_ms, for others to take only
-- after that long. Only the claim this process holds: a release never
-- undoes a newer claim, its own or another's.
function M.release(id, park_ms)
  local epoch = held[id]
  if epoch == nil then
    return true
  end
  let_go(id)
  return core.store_release(id, M.owner, epoch,
    park_ms and core.time() + park_ms or 0)
end


-- How many threads there are of each status (of agent, if given):
-- { running = n, ... }.
function M.by_status(agent)
  return decoded(core.store_counts(agent))
end


-- How many threads wait to be taken over (see take_over), claimed by none.
function M.backlog()
  return decoded(core.store_backlog(core.time()))
end


-- Gives back every lease this process holds, in one statement: a worker
-- that shuts down leaves its threads to the others at once, not after
-- their leases lapse. (A run still in its step is fenced off by the next
-- claim, so this is safe even before it stops.)
function M.release_all()
  held, nheld = {}, 0
  core.store_hold(M.owner, M.lease_ms, 0)
  return core.store_release(false, M.owner)
end


-- Claims up to `limit` top-level threads left running whose lease lapsed
-- (their process stopped), oldest first, in one statement; the caller
-- resumes or releases each.
function M.take_over(limit)
  local rows, err, code = decoded(core.store_ready(M.owner, M.lease_ms,
    core.time(), limit))
  if not rows then
    return nil, err, code
  end
  for _, row in ipairs(rows) do
    hold(row.id, row.epoch)
  end
  M.counts.takeovers = M.counts.takeovers + #rows
  return rows
end


-- Copies the store at `from` (a SQLite file or a postgres:// URL) into
-- this one, which must be empty: threads, events, business state (the
-- API's idempotency keys with it) and agent versions, exactly, in one
-- transaction. Returns the counts copied.
function M.migrate(from)
  return decoded(core.store_migrate(from, core.time()))
end


function M.delete(id)
  return core.store_delete(id)
end


function M.due()
  return decoded(core.store_due(core.time()))
end


function M.purge(finished_before)
  return decoded(core.store_purge(core.time(), finished_before))
end


-- Was `key` seen in the last ttl_ms? Records it if not, in the store: a
-- signed request replayed after a restart, or to another process, is
-- still a replay. Returns true (new), false (seen), or nil and an error.
-- forget(key) drops it (a request that failed may be sent again).
local SEEN = "spool.seen"

function M.first_seen(key, ttl_ms)
  local versions, err, code = M.write_state { { ns = SEEN, key = key,
    value = true, if_version = 0, expires_at = core.time() + ttl_ms } }
  if versions then
    return true
  elseif code == "ECONFLICT" then
    return false
  end
  return nil, err, code
end


function M.forget_seen(key)
  return M.write_state { { ns = SEEN, key = key } }
end


function M.state_get(ns, key)
  local doc, err = decoded(core.store_state_get(ns, key, core.time()))
  if err then
    return nil, err
  end
  if doc == json.null then
    return nil
  end
  return doc
end


function M.state_list(ns, after, limit)
  return decoded(core.store_state_list(ns, after or "", limit or 1000,
    core.time()))
end


return M
