-- spool.run.durable: how a step becomes durable, and how a run stops before
-- its thread ends (private; spool.loop re-exports PAUSED). A step commits
-- at its boundaries; a commit that loses a compare-and-set of business
-- state fails the calls that wrote it and commits the rest; a store that
-- cannot be written ends the run (the runner halts the thread at its last
-- durable step).

local json = require "spool.json"
local sandbox = require "spool.run.sandbox"

local M = {}

-- Raised (as an error value) to unwind a run whose thread now waits on a
-- sub-agent that waits for a human; the runner treats it as a pause.
M.PAUSED = sandbox.freeze(setmetatable({},
  { __tostring = function() return "paused" end }))


-- Splits "agents/x.lua:12: boom" into "boom" and "agents/x.lua:12": the
-- model gets the message, the event keeps where it came from.
-- An error value as text: a table the handler raised (or returned as its
-- error) is encoded as JSON, the model reads it whole, not "table: 0x...".
local function error_text(err)
  if type(err) == "table" and not (getmetatable(err) or {}).__tostring then
    local ok, text = pcall(json.encode, err)
    return ok and text or "(an error table JSON cannot hold)"
  end
  return type(err) == "string" and err or tostring(err)
end


local function split_error(err)
  local msg = error_text(err)
  local where, rest = msg:match("^([^\n:]+:%d+): (.*)$")
  if where then
    return rest, where
  end
  return msg
end


-- Raises a store failure: it ends the run, and the runner halts the
-- thread at its last durable step.
function M.store_failed(err)
  error(setmetatable({ store_error = err }, {
    __tostring = function(e) return e.store_error end }), 0)
end


-- A compare-and-set that lost at the commit (another run wrote the same
-- document since): the calls that wrote it fail instead — their results
-- become errors the model reads, their writes are dropped — and the rest
-- of the step is committed. Returns what the last commit did.
local function commit_after_conflicts(thread, err)
  for _ = 1, #thread.writes + 1 do
    local key = err:match("^ECONFLICT: state (.-) is at version")
      or err:match("^EACCES: state (.-) is the engine's own")
    if err:match("^EACCES: state write that is not") then
      -- Agent code pushed something else to the thread's writes.
      local keep = {}
      for _, w in ipairs(thread.writes) do
        if type(w) == "table" and type(w.ns) == "string"
            and type(w.key) == "string" then
          keep[#keep + 1] = w
        end
      end
      thread.writes, key = keep, "?"
    end
    if not key then
      return nil, err
    end
    local calls, stray, keep = {}, false, {}
    for _, w in ipairs(thread.writes) do
      if w.ns .. "/" .. w.key == key then
        if w.call_id then
          calls[w.call_id] = true
        else
          stray = true
        end
      end
    end
    for _, w in ipairs(thread.writes) do
      if not (w.call_id and calls[w.call_id])
          and not (stray and not w.call_id) then
        keep[#keep + 1] = w
      end
    end
    thread.writes = keep
    local why = err:match("^ECONFLICT") and ("nothing it wrote was "
      .. "stored: the state " .. err:gsub("^ECONFLICT: state ", "")
      .. " (another run changed it since it was read); read it again and "
      .. "retry") or ("nothing it wrote was stored: " .. err:gsub("^%u+: ",
      ""))
    local intent -- the call a terminal "done" event ends
    for i = thread.persisted + 1, #thread.events do
      local ev = thread.events[i]
      if ev.type == "intent" then
        intent = ev.data
      end
      local id = ev.data.call_id or (ev.type == "done" and intent
        and intent.call_id)
      if id and calls[id] and (ev.type == "tool_result"
          or ev.type == "error" or ev.type == "done") then
        thread:replace(i, "error", { call_id = id, name = ev.data.name
          or intent.name, error = "this call failed: " .. why })
      end
    end
    if stray then
      thread:append("error", { error = "this step's state write failed: "
        .. why })
    end
    local ok
    ok, err = thread:commit()
    if ok then
      return true
    end
  end
  return nil, err
end


-- Commits the thread or raises, ending the run: a step that cannot be
-- stored must not be followed by another.
function M.commit(thread)
  local ok, err = thread:commit()
  if not ok and (err:match("^ECONFLICT: state ")
      or err:match("^EACCES: state ")) then
    ok, err = commit_after_conflicts(thread, err)
  end
  if not ok then
    M.store_failed(err)
  end
end


M.error_text = error_text
M.split_error = split_error


return M
