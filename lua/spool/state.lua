-- spool.state: business state, apart from execution state. Namespaced JSON
-- documents that outlive threads, are shared between agents, and are read
-- by the team's other systems (`spool state export NS`).
--
--   state.get(ns, key)                 -> value, version | nil
--   state.put(ns, key, value [, opts]) -> true     opts: if_version, ttl_ms
--   state.delete(ns, key [, opts])     -> true     opts: if_version
--   state.list(ns [, opts])            -> { { key, value, version }, ... }
--                                         opts: after (a key), limit
--
-- Inside a run, writes join the current step: they are visible to the rest
-- of the step at once, and committed in the same transaction as the
-- step's events, so a crash never leaves the two disagreeing. A write with
-- if_version is a compare-and-set (0 means "absent"): a version that
-- differs already returns nil, "ECONFLICT: ..." to the handler; one that
-- changes before the step commits fails the call that wrote it (the
-- model is told, nothing it wrote is stored) and the thread goes on.
-- Outside a run (a script), writes commit at once.
--
-- Namespaces starting with spool_ or spool. are the engine's own (channel
-- keys, idempotency records): agents can neither read nor write them.
--
-- Namespaces may have a TTL in spool.lua: state = { sessions = { ttl_ms =
-- 3600000 } }; expired documents read as absent and `spool gc` deletes them.

local config = require "spool.base.config"
local core = require "spool.core"
local json = require "spool.json"
local store = require "spool.run.store"
local task = require "spool.base.task"

local M = {}


local function check_names(ns, key)
  if type(ns) ~= "string" or not ns:match("^[%w_%.%-]+$") or #ns > 64 then
    error("spool.state: the namespace must be 1-64 letters, digits, _, . "
      .. "or -", 3)
  end
  if ns:match("^spool[_%.]") then
    error(string.format("spool.state: the namespace '%s' is the engine's own "
      .. "(names starting with spool_ or spool. are reserved)", ns), 3)
  end
  if type(key) ~= "string" or key == "" or #key > 512 then
    error("spool.state: the key must be a string of 1-512 bytes", 3)
  end
end


local current_thread = task.thread


local function ttl_of(ns, opts)
  if opts and opts.ttl_ms then
    return opts.ttl_ms
  end
  local cfg = config.get()
  local spec = cfg.state and cfg.state[ns]
  return spec and spec.ttl_ms
end


-- The pending write of the current step to ns/key, if any.
local function pending(thread, ns, key)
  if not thread then
    return nil
  end
  for i = #thread.writes, 1, -1 do
    local w = thread.writes[i]
    if w.ns == ns and w.key == key then
      return w
    end
  end
end


function M.get(ns, key)
  check_names(ns, key)
  local w = pending(current_thread(), ns, key)
  if w then
    return w.value, nil
  end
  local doc, err = store.state_get(ns, key)
  if err then
    error("spool.state.get: " .. err, 2)
  end
  if doc == nil then
    return nil
  end
  return doc.value, doc.version
end


local function write(ns, key, value, opts)
  local ttl = ttl_of(ns, opts)
  local w = { ns = ns, key = key, value = value,
              if_version = opts and opts.if_version,
              expires_at = ttl and (core.time() + ttl) or nil }
  local thread = current_thread()
  if thread then
    if w.if_version and not pending(thread, ns, key) then
      -- Checked now too, so a handler can react; the commit checks again.
      local doc, err = store.state_get(ns, key)
      if err then
        return nil, err
      end
      local have = doc and doc.version or 0
      if have ~= w.if_version then
        return nil, string.format("ECONFLICT: state %s/%s is at version "
          .. "%d, not %d", ns, key, have, w.if_version)
      end
    end
    -- The call that wrote it: a conflict at the commit fails that call.
    w.call_id = task.call()
    thread.writes[#thread.writes + 1] = w
    return true
  end
  local versions, err = store.write_state({ w })
  if not versions then
    return nil, err
  end
  return true
end


function M.put(ns, key, value, opts)
  check_names(ns, key)
  if value == nil then
    error("spool.state.put: the value is nil (use spool.state.delete)", 2)
  end
  local ok, err = pcall(json.encode, value)
  if not ok then
    error("spool.state.put: " .. err, 2)
  end
  return write(ns, key, value, opts)
end


function M.delete(ns, key, opts)
  check_names(ns, key)
  return write(ns, key, nil, opts)
end


function M.list(ns, opts)
  check_names(ns, "x")
  opts = opts or {}
  local items, err = store.state_list(ns, opts.after,
    opts.limit)
  if not items then
    error("spool.state.list: " .. err, 2)
  end
  local thread = current_thread()
  if thread and #thread.writes > 0 then
    -- Overlay the step's own writes, so the step sees what it wrote.
    local by_key = {}
    for _, item in ipairs(items) do
      by_key[item.key] = item
    end
    for _, w in ipairs(thread.writes) do
      if w.ns == ns then
        by_key[w.key] = w.value ~= nil and { key = w.key, value = w.value }
          or false
      end
    end
    items = {}
    for _, item in pairs(by_key) do
      if item then
        items[#items + 1] = item
      end
    end
    table.sort(items, function(a, b) return a.key < b.key end)
  end
  return items
end


return M
