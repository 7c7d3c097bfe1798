-- spool.eval: what an evaluation expects of a run, as Lua (spool eval).
--
-- An expectation is a function(run) -> ok, message. The helpers below make
-- the usual ones; any function of the run will do:
--
--   local e = require "spool.eval"
--   expect = {
--     e.status("done"),
--     e.answer_matches("refund of %$%d+"),
--     e.called_before("lookup_order", "issue_refund"),
--     e.approved_before("issue_refund"),      -- only after a person said yes
--     e.not_called("delete_account"),
--     e.max_steps(6), e.max_tokens(4000), e.max_cost(0.01),
--     e.wrote("refunds", "5532"),
--     function(run) return #run.calls < 4, "too many calls" end,
--   }
--
-- In a JSON lines case file the same expectations are data:
--   "expect": { "status": "done", "answer_equals": "...", "answer_matches":
--     "...", "called": ["a"], "not_called": ["b"], "called_before":
--     [["a", "b"]], "approved_before": ["b"], "max_steps": 6, "max_tokens":
--     4000, "max_cost": 0.01, "wrote": [["ns", "key"]] }
--
-- run = { thread, status, answer, error, calls = { { name, args, approved
-- } } (the tool calls executed, in order, sub-agents' included), asked =
-- { { kind, name, args, question } } (the people asked, in order), intents
-- (their names), steps, tokens, cost_usd, latency_ms, writes = { { ns, key,
-- value } }, events }

local json = require "spool.json"

local M = {}


local function show(v)
  if type(v) == "string" then
    return string.format("%q", #v > 120 and (v:sub(1, 117) .. "...") or v)
  end
  local ok, s = pcall(json.encode, v)
  return ok and s or tostring(v)
end


function M.status(want)
  return function(run)
    return run.status == want, string.format("status is %s, not %s%s",
      tostring(run.status), want, run.error and (" (" .. run.error .. ")")
        or "")
  end
end


local same = require("spool.schema").same


function M.answer_equals(want)
  return function(run)
    return same(run.answer, want), "the answer is " .. show(run.answer)
      .. ", not " .. show(want)
  end
end


function M.answer_matches(pattern)
  return function(run)
    local text = type(run.answer) == "string" and run.answer
      or (run.answer ~= nil and show(run.answer) or "")
    return text:find(pattern) ~= nil, "the answer " .. show(run.answer)
      .. " does not match " .. show(pattern)
  end
end


local function index_of(run, name, from)
  for i = from or 1, #run.calls do
    if run.calls[i].name == name then
      return i
    end
  end
end


function M.called(name)
  return function(run)
    return index_of(run, name) ~= nil, name .. " was never called (calls: "
      .. table.concat(run.intents, ", ") .. ")"
  end
end


function M.not_called(name)
  return function(run)
    return index_of(run, name) == nil, name .. " was called"
  end
end


-- Every call of `b` comes after a call of `a`.
function M.called_before(a, b)
  return function(run)
    local first_a = index_of(run, a)
    local first_b = index_of(run, b)
    if first_b == nil then
      return false, b .. " was never called"
    end
    return first_a ~= nil and first_a < first_b, string.format("%s was "
      .. "called before %s (calls: %s)", b, a, table.concat(run.intents, ", "))
  end
end


-- `name` ran, and every time only after a person approved that call.
function M.approved_before(name)
  return function(run)
    local seen = false
    for _, c in ipairs(run.calls) do
      if c.name == name then
        seen = true
        if not c.approved then
          return false, name .. " ran without an approval"
        end
      end
    end
    return seen, name .. " was never called"
  end
end


local function at_most(field, what)
  return function(n)
    return function(run)
      return (run[field] or 0) <= n, string.format("%s: %s, more than %s",
        what, tostring(run[field]), tostring(n))
    end
  end
end

M.max_steps = at_most("steps", "steps")
M.max_tokens = at_most("tokens", "tokens")
M.max_cost = at_most("cost_usd", "cost (USD)")


-- The run wrote business state ns/key (and value satisfies pred, if
-- given: a function, or a value to compare with).
function M.wrote(ns, key, pred)
  return function(run)
    for _, w in ipairs(run.writes) do
      if w.ns == ns and w.key == key then
        if pred == nil then
          return true
        elseif type(pred) == "function" then
          return pred(w.value), string.format("%s/%s holds %s", ns, key,
            show(w.value))
        end
        return same(w.value, pred), string.format("%s/%s holds %s, not %s",
          ns, key, show(w.value), show(pred))
      end
    end
    return false, string.format("nothing was written to %s/%s", ns, key)
  end
end


local FROM_JSON = {
  status = function(v) return { M.status(v) } end,
  answer_equals = function(v) return { M.answer_equals(v) } end,
  answer_matches = function(v) return { M.answer_matches(v) } end,
  max_steps = function(v) return { M.max_steps(v) } end,
  max_tokens = function(v) return { M.max_tokens(v) } end,
  max_cost = function(v) return { M.max_cost(v) } end,
}

local function each(f)
  return function(list)
    if type(list) ~= "table" then
      list = { list } -- "called": "x" means ["x"]
    end
    local out = {}
    for _, v in ipairs(list) do
      out[#out + 1] = type(v) == "table" and f(table.unpack(v)) or f(v)
    end
    return out
  end
end

FROM_JSON.called = each(M.called)
FROM_JSON.not_called = each(M.not_called)
FROM_JSON.called_before = each(M.called_before)
FROM_JSON.approved_before = each(M.approved_before)
FROM_JSON.wrote = each(M.wrote)


-- The expectations a case's JSON "expect" object describes; raises on an
-- unknown one, naming it.
function M.from_json(expect)
  local out = {}
  local keys = {}
  for k in pairs(expect or {}) do
    keys[#keys + 1] = k
  end
  -- The status first: when it is wrong, that is the news.
  table.sort(keys, function(a, b)
    if (a == "status") ~= (b == "status") then
      return a == "status"
    end
    return a < b
  end)
  for _, k in ipairs(keys) do
    local make = FROM_JSON[k]
    if not make then
      error(string.format("unknown expectation '%s' (status, answer_equals, "
        .. "answer_matches, called, not_called, called_before, "
        .. "approved_before, max_steps, max_tokens, max_cost, wrote)", k), 0)
    end
    for _, f in ipairs(make(expect[k])) do
      out[#out + 1] = f
    end
  end
  return out
end


-- Orders what happened in a family of threads: by time; within a
-- millisecond by thread (parent first: `order`) and seq. A total order, so
-- called_before never depends on the sort's whims.
function M.in_order(a, b)
  if a.at ~= b.at then
    return a.at < b.at
  elseif a.order ~= b.order then
    return a.order < b.order
  end
  return a.seq < b.seq
end


-- The run record of a finished (or waiting) thread and its sub-agents:
-- `threads` are its threads, root first, each with its events.
function M.observe(threads, writes)
  local root = threads[1]
  -- (lists are JSON arrays, so a run with no calls shows [] in reports)
  local run = { thread = root.id, status = root:status(), calls = json.array(),
                intents = json.array(), writes = writes or json.array(),
                events = root.events,
                steps = 0, tokens = 0, cost_usd = 0 }
  local answer, err = root:outcome()
  run.answer, run.error = answer, err
  local u = root:usage()
  run.steps, run.tokens, run.cost_usd = u.steps,
    u.input_tokens + u.output_tokens, u.cost_usd
  local first, last = root.events[1], root.events[#root.events]
  run.latency_ms = first and last and (last.at - first.at) or 0
  -- The calls that ran: intents answered by a result, and the terminal
  -- intent a done event follows; approved when a person said yes first.
  run.asked = json.array() -- the people asked: approvals and questions, in order
  for ti, t in ipairs(threads) do
    local intents, open = {}, nil
    for _, ev in ipairs(t.events) do
      local d = ev.data
      if ev.type == "human_request" and not d.via then
        run.asked[#run.asked + 1] = { kind = d.kind, name = d.name,
          args = d.args, question = d.question, at = ev.at, seq = ev.seq,
          order = ti }
      end
      if ev.type == "intent" then
        open = { name = d.name, args = d.args, approved = false,
                 thread = t.id, at = ev.at, seq = ev.seq, order = ti }
        intents[#intents + 1] = open
        if d.call_id then
          intents[d.call_id] = open
        end
      elseif ev.type == "human_response" and d.approved and d.call_id
          and intents[d.call_id] then
        intents[d.call_id].approved = true
      elseif ev.type == "tool_result" then
        local c = d.call_id and intents[d.call_id] or open
        if c then
          c.ran = not d.rejected -- a rejected call never ran
        end
      elseif ev.type == "done" and open and open.ran == nil then
        open.ran = true
      end
    end
    for _, c in ipairs(intents) do
      if c.ran then
        run.calls[#run.calls + 1] = c
      end
    end
  end
  table.sort(run.calls, M.in_order)
  table.sort(run.asked, M.in_order)
  for i, c in ipairs(run.calls) do
    run.intents[i] = c.name
  end
  return run
end


-- Runs a case's expectations on a run: nil when all hold, else the first
-- failure's message.
function M.check(expectations, run)
  for i, f in ipairs(expectations) do
    local ok, passed, msg = pcall(f, run)
    if not ok then
      return string.format("expectation %d raised: %s", i, tostring(passed))
    end
    if not passed then
      return msg or string.format("expectation %d failed", i)
    end
  end
  return nil
end


return M
