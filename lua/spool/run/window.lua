-- spool.run.window: plans what the model sees of a thread within its token
-- budget (private; agents use spool.context). Pure: it reads events and
-- decides; spool.context acts on the plan (compaction, summaries).
--
-- A plan renders each event (a renderer of spool.context), applies the
-- agent's policy for its type — keep, drop, { truncate = n tokens },
-- { summarize = n tokens } — hides what a compaction event covers behind
-- its summary, and groups the messages into units: a message, and for an
-- assistant message with tool calls, their answers. Units are what
-- compaction folds and overflow drops, whole, so a tool call never loses
-- its result. Units holding a pinned event (the first input, the latest
-- human answer) are never folded or dropped.
--
--   plan = window.plan(thread, agent, { form = "chat" | "blocks",
--     renderers =, events =, fixed_tokens =, model =, report = bool,
--     memo = window.memo(thread) | nil, factor = tokens.factor(events)
--     when the caller has it })
--   plan = { units, report, total, limit, settings, factor, fold,
--            needs_summary, summary = compaction event | nil,
--            tokens_at_one = the units' tokens at factor 1,
--            forms = the walk's kept wire forms of its messages | nil,
--            messages, walk = a kept walk's (core.window_walk) | nil }
--   (report, what became of each event, is filled only when asked; a
--   plan made with a memo has no units until a function below needs
--   them, and holds until the thread's next plan)
--   window.messages(plan)  -> the chat messages
--   window.units(plan)     -> its units
--   window.tokens(plan, factor)  -> their tokens at that factor
--   window.drop_overflow(plan)   when compaction could not make room
--     (plan.overflow: the tokens over the budget nothing could cut)

local core = require "spool.core"
local json = require "spool.json"
local tokens = require "spool.tokens"
local task = require "spool.base.task"
local version = require "spool.run.version"
local rendering = require "spool.run.render"

local M = {}

-- A result is cut at 4,000 tokens by default, or at a quarter of the
-- budget in a smaller window, so that a few fit.
M.DEFAULT_TRUNCATE = 4000

local DEFAULT_TOKENS = 128000
local DEFAULT_RESERVE = 4096


local make_settings

-- The agent's window settings, with defaults. agent.window = { tokens,
-- reserve, policies = { [event type] = policy }, compact = false | {
-- prompt, keep_recent, target } }.
function M.settings(agent, model)
  if not agent then
    return make_settings(nil, model)
  end
  -- An agent version and a model always make the same settings: kept, for
  -- the few models an agent is planned with (a kept walk needs the same
  -- settings table from step to step).
  local record = version.of[agent] -- (spool.run.version)
  local memo = record.window
  if not memo or memo.window ~= agent.window or memo.n >= 8 then
    memo = { window = agent.window, by_model = {}, n = 0 }
    record.window = memo
  end
  local key = model or memo -- (no model: the defaults)
  local settings = memo.by_model[key]
  if not settings then
    settings = make_settings(agent, model)
    memo.by_model[key] = settings
    memo.n = memo.n + 1
  end
  return settings
end


make_settings = function(agent, model)
  local w = agent and agent.window or {}
  model = model or {}
  local size = w.tokens or model.context_tokens or DEFAULT_TOKENS
  local reserve = w.reserve or model.max_tokens or DEFAULT_RESERVE
  -- A reserve as large as the window (a model's max_tokens near its
  -- context size) still leaves the messages a quarter of it.
  local limit = math.max(size - reserve, size // 4)
  local policies = { tool_result = { truncate = math.max(1,
    math.min(M.DEFAULT_TRUNCATE, limit // 4)) } }
  for k, v in pairs(w.policies or {}) do
    policies[k] = v
  end
  local c = type(w.compact) == "table" and w.compact or {}
  return {
    tokens = size,
    reserve = reserve,
    limit = limit,
    policies = policies,
    compact = w.compact ~= false,
    prompt = c.prompt or "compact.md",
    keep_recent = c.keep_recent or 4,
    target = c.target or 0.5,
  }
end


-- Checks an agent's window table; returns nil or a message.
function M.check(w)
  if type(w) ~= "table" then
    return "window must be a table { tokens, reserve, policies, compact }"
  end
  for _, k in ipairs { "tokens", "reserve" } do
    if w[k] ~= nil and (math.type(w[k]) ~= "integer" or w[k] < 1) then
      return "window." .. k .. " must be a positive integer"
    end
  end
  if w.tokens and w.reserve and w.reserve >= w.tokens then
    return "window.reserve must be less than window.tokens"
  end
  for ev_type, p in pairs(w.policies or {}) do
    local ok = p == "keep" or p == "drop"
    if type(p) == "table" then
      local n = p.truncate or p.summarize
      ok = math.type(n) == "integer" and n > 0
        and (p.truncate == nil or p.summarize == nil)
    end
    if not ok then
      return string.format("window.policies.%s must be \"keep\", \"drop\", "
        .. "{ truncate = n } or { summarize = n } (n tokens)", ev_type)
    end
  end
  if w.compact ~= nil and w.compact ~= false and type(w.compact) ~= "table"
  then
    return "window.compact must be false or { prompt, keep_recent, target }"
  end
  return nil
end


-- Seqs never folded or dropped: the first input, the latest human answer;
-- and the call that answer went to, if it answered a question (the call's
-- result is then the person's words).
local function pins(events)
  local set, human = {}, nil
  for i = 1, #events do
    local ev = events[i]
    if ev.type == "input" and not next(set) then
      set[ev.seq] = true
    elseif ev.type == "human_response" then
      human = ev
    end
  end
  if human then
    set[human.seq] = true
  end
  return set, human and human.data.kind == "ask" and human.data.call_id
    or nil
end


local function covered(ranges, seq)
  for _, r in ipairs(ranges or {}) do
    if seq >= r[1] and seq <= r[2] then
      return true
    end
  end
  return false
end


-- Cuts a message as its policy (c.policy: "drop", { truncate = n } or
-- { summarize = n }, of spool.run.window's cut records below) wants at the
-- plan's factor; returns the message and what was done, or the message as
-- it is and nil. A changed message is a copy: renderers may share tables.
local function cut_message(plan, c, summaries)
  local ev, msg, pol = c.ev, c.raw, c.policy
  local factor = plan.factor
  local full = tokens.estimate(msg.content, factor)
  local limit = pol ~= "drop" and (pol.truncate or pol.summarize)
  if limit and full <= limit then
    return msg, nil
  end
  local copy = {}
  for k, v in pairs(msg) do
    copy[k] = v
  end
  msg = copy
  local what = msg.role == "tool" and "result" or ev.type
  if pol == "drop" then
    msg.content = string.format("[omitted by the context policy (%d tokens); "
      .. "the whole %s is event %d of this thread]", full, what, ev.seq)
    return msg, "dropped"
  end
  if pol.summarize and summaries[ev.seq] then
    msg.content = string.format("[summary of event %d, %d tokens]\n%s",
      ev.seq, full, summaries[ev.seq])
    return msg, "summarized"
  end
  local head = tokens.head(msg.content, limit, factor)
  local hint = plan.read_more and c.plain
    and string.format("; call read_more with seq %d and from %d for the rest",
      ev.seq, #head + 1)
    or ""
  msg.content = string.format("%s\n[… %d of %d tokens cut by the context "
    .. "policy: the whole %s is event %d of this thread%s]", head,
    full - tokens.estimate(head, factor), full, what, ev.seq, hint)
  if pol.summarize then
    plan.needs_summary[#plan.needs_summary + 1] = ev
    return msg, "truncated (summary due)"
  end
  return msg, "truncated"
end


-- What a thread's earlier steps rendered, kept for its next: the walk of
-- its events in C (core.window_walk, engine/src/lua/l_walk.c), when every
-- message in it came from a built-in chat renderer (a pure function of its
-- event, and events never change). Only the loop's own steps use it, never
-- a render whose messages reach an agent's code, which might change them.
-- Kept in the run's record (spool.base.task), so it goes when the run
-- stops; nil for a thread no runner drives. { walk }.
function M.memo(thread)
  local run = task.runs[thread]
  if not run then
    return nil
  end
  local memo = run.render_memo
  if not memo then
    memo = {}
    run.render_memo = memo
  end
  return memo
end


-- The policy that may change an event's message at some calibration
-- factor (never above tokens.MAX_FACTOR), or nil: what a policy leaves
-- alone at any factor is kept as it is, and only the rest waits for a
-- plan's factor (`finish`).
local function acting_policy(settings, ev, msg, pinned)
  local pol = settings.policies[ev.type]
  if pol == nil or pol == "keep" or type(msg.content) ~= "string" then
    return nil
  end
  if pol == "drop" then
    return not pinned[ev.seq] and pol or nil
  end
  if tokens.estimate(msg.content, tokens.MAX_FACTOR)
    <= (pol.truncate or pol.summarize)
  then
    return nil
  end
  return pol
end


-- The chat form's message in place of what a compaction hides.
local function summary_message(s)
  return { role = "user", content = string.format("Summary of earlier work "
    .. "(events %d–%d, compacted to fit the context window):\n%s",
    s.data.ranges[1][1], s.data.upto, s.data.summary) }
end


-- The answer of a call that has none (a crash, or a terminal intent): the
-- chat stays valid for the provider, every call answered.
local function unanswered_note(c)
  return { role = "tool", tool_call_id = c.id, name = c.name,
           content = "error: no result was recorded for this call" }
end


-- What a plan needs to cut a message its policy may change (see below).
local function cut_record(ev, msg, pol)
  local value = ev.data.result
  return { ev = ev, raw = msg, policy = pol,
           plain = value ~= nil and msg.content
             == rendering.render_value(value) }
end


-- A plan walks the thread's events into units. The loop's steps keep
-- their walk (memo.walk: the same rules in C, l_walk.c), so a step walks
-- only the events that are new; any other plan walks afresh, here. A walk
-- holds nothing that depends on the calibration factor, which changes
-- every step: it counts messages in bytes, and leaves the messages a
-- policy may cut (`cuts`) for each plan to cut at its own factor. A new
-- compaction or human answer changes what is hidden or pinned, and so may
-- an input (the first is pinned): a kept walk then starts afresh.
--
--   walk = { events, settings, n = events walked,
--     summary, ranges, pinned, summaries, units (closed), unit (open),
--     owed = its calls, answers = { [call id] = false | { msg, bytes,
--     cut } }, unanswered = how many of those are false, cuts = { { cut,
--     unit, index } } (where each goes) }
--   unit = { messages, bytes, overhead, first, last, kind, tokens, pinned,
--     settled (its calls' answers are in: it changes no more but for last) }
--   cut = { ev, raw (the message as rendered), policy, plain (it shows
--     the event's result as it is, so read_more's offsets hold), entry
--     (of the report) }

local function new_walk(events, settings)
  local pinned, pinned_call = pins(events)
  local w = { events = events, settings = settings, n = 0,
              pinned = pinned, pinned_call = pinned_call,
              summaries = {}, units = {},
              owed = {}, answers = {}, unanswered = 0, cuts = {},
              summary_placed = false }
  for i = 1, #events do
    if events[i].type == "compaction" then
      w.summary = events[i]
    end
  end
  w.ranges = w.summary and w.summary.data.ranges or {}
  w.ranged = #w.ranges > 0
  return w
end


local function put(u, msg, bytes, cut, cuts)
  local i = #u.messages + 1
  u.messages[i], u.bytes[i] = msg, bytes
  u.overhead = u.overhead + tokens.overhead(msg)
  if cut then -- (one answer may go twice: a model repeating a call id)
    cuts[#cuts + 1] = { cut = cut, unit = u, index = i }
  end
end


-- Closes unit `u` with one answer per call of its assistant message, in
-- call order; a call without one gets a note saying so.
local function settle(w, u, cuts)
  local owed = w.owed
  for i = 1, #owed do
    local c = owed[i]
    local a = w.answers[c.id]
    if a then
      put(u, a.msg, a.bytes, a.cut, cuts)
    else
      local note = unanswered_note(c)
      put(u, note, tokens.bytes(note), nil, cuts)
    end
  end
end


-- Whether unit `u` holds a pinned event: once, as it closes (a closed
-- unit's events never change, nor do a walk's pins).
local function holds_pin(w, u)
  for seq in pairs(w.pinned) do
    if seq >= u.first and seq <= u.last then
      return true
    end
  end
  return false
end


local function start_unit(w, msg, bytes, cut, seq, kind)
  if w.unit then
    if not w.unit.settled then
      settle(w, w.unit, w.cuts)
    end
    w.unit.pinned = holds_pin(w, w.unit)
    w.units[#w.units + 1] = w.unit
    if #w.owed > 0 then
      w.owed, w.answers = {}, {}
    end
    w.unanswered = 0
  end
  local u = { messages = {}, bytes = {}, overhead = 0, first = seq,
              last = seq, kind = kind, tokens = 0, pinned = false }
  put(u, msg, bytes, cut, w.cuts)
  w.unit = u
  local calls = msg.tool_calls
  if calls then
    for i = 1, #calls do
      local c = calls[i]
      w.owed[#w.owed + 1] = c
      if w.answers[c.id] == nil then -- (a model may repeat an id)
        w.answers[c.id] = false
        w.unanswered = w.unanswered + 1
      end
    end
  end
  u.settled = w.unanswered == 0
end


-- An answer to one of the open unit's calls: once all are in, the unit is
-- settled where it is (a plan then takes it as it is; a call answered
-- twice keeps its first answer).
local function answer(w, id, a)
  w.answers[id] = a
  w.unanswered = w.unanswered - 1
  if w.unanswered == 0 then
    settle(w, w.unit, w.cuts)
    w.unit.settled = true
  end
end


-- Renders one event: its message, or nil. `how` = { thread, agent,
-- blocks, renderers, defaults, report }.
local function render_event(how, ev, render)
  if how.blocks then
    local tag, body = render(ev, how.thread, how.agent)
    return tag and { role = "user", tag = tag, content = body,
                     call_id = ev.data.call_id } or nil
  end
  return render(ev, how.thread, how.agent)
end


-- Walks the events after those `w` has seen (`factor` counts the report's
-- tokens).
local function walk(w, how, factor)
  local events, report = w.events, how.report
  local renderers, defaults, blocks = how.renderers, how.defaults, how.blocks
  local ranges, ranged, pinned = w.ranges, w.ranged, w.pinned
  for i = w.n + 1, #events do
    local ev = events[i]
    local ev_type = ev.type
    if ev_type == "event_summary" then
      w.summaries[ev.data.of] = ev.data.summary
    end
    local render = renderers[ev_type] or defaults[ev_type]
    local hidden = ranged and covered(ranges, ev.seq)
    if hidden and not pinned[ev.seq] then
      if not w.summary_placed then
        w.summary_placed = true
        local s = w.summary
        local msg = blocks
          and { role = "user", tag = "summary", content = s.data.summary }
          or summary_message(s)
        start_unit(w, msg, tokens.bytes(msg), nil, s.seq, "summary")
      end
      if render and report then
        report[#report + 1] = { seq = ev.seq, type = ev_type,
          action = "compacted", into = w.summary.seq }
      end
    elseif render then
      local msg = render_event(how, ev, render)
      if msg then
        local bytes = tokens.bytes(msg)
        local entry = report and { seq = ev.seq, type = ev_type,
          tokens = tokens.overhead(msg) + tokens.of_bytes(bytes, factor) }
        local pol, cut = acting_policy(w.settings, ev, msg, pinned), nil
        if pol == "drop" and msg.role ~= "tool" and msg.tag == nil then
          msg = nil -- only an answer's place must be kept
          if entry then
            entry.action = "dropped"
          end
        elseif pol then
          cut = cut_record(ev, msg, pol)
          cut.entry = entry
        elseif entry then
          entry.shown = entry.tokens
        end
        if entry then
          report[#report + 1] = entry
        end
        if msg and msg.role == "tool" and not blocks then
          local id = msg.tool_call_id
          if w.answers[id] == false then
            answer(w, id, { msg = msg, bytes = bytes, cut = cut })
          elseif entry then
            entry.action, entry.shown = "dropped: answers no pending call", nil
          end
        elseif msg then
          start_unit(w, msg, bytes, cut, ev.seq)
        end
      end
    end
    local u = w.unit
    if u and ev.seq > u.last and not hidden then
      u.last = ev.seq -- events a unit's renderers skip stay with it
    end
  end
  w.n = #events
end


-- Cuts a message where it goes, as its policy wants at this plan's factor:
-- once a plan (`done`, by cut), wherever it goes.
local function cut_now(plan, w, place, done)
  local c = place.cut
  local msg = done[c]
  if not msg then
    local action
    msg, action = cut_message(plan, c, w.summaries)
    done[c] = msg
    if c.entry then
      c.entry.action = action
      c.entry.shown = tokens.message(msg, plan.factor)
    end
  end
  place.unit.messages[place.index] = msg
  place.unit.bytes[place.index] = tokens.bytes(msg)
end


local function copy(list)
  return table.move(list, 1, #list, 1, {})
end


-- The plan's units from the walk, at the plan's factor: the open unit is
-- settled in a copy, as its calls may still get their answers.
local function finish(plan, w, fixed_tokens)
  local done = {}
  for i = 1, #w.cuts do
    cut_now(plan, w, w.cuts[i], done)
  end
  local units = copy(w.units)
  local open = w.unit
  if open and open.settled then
    open.pinned = holds_pin(w, open) -- (its last may have moved)
    units[#units + 1] = open
  elseif open then
    local view = { messages = copy(open.messages), bytes = copy(open.bytes),
                   overhead = open.overhead, first = open.first,
                   last = open.last, kind = open.kind }
    local cuts = {}
    settle(w, view, cuts)
    for i = 1, #cuts do
      cut_now(plan, w, cuts[i], done)
    end
    view.pinned = holds_pin(w, view)
    units[#units + 1] = view
  end
  -- Every unit's tokens at this plan's factor (in C: it is done for every
  -- message at every step).
  local messages, at_one = core.units_tokens(units, plan.factor, true)
  local total = (fixed_tokens or 0) + messages
  plan.tokens_at_one = at_one -- (until drop_overflow changes the units)
  plan.units, plan.total, plan.summary = units, total, w.summary
  plan.pinned_call = w.pinned_call
end


-- What the walk in C (l_walk.c) calls back for: the messages and cut
-- records this file makes, and the cuts at a plan's factor.
local KEPT_WALK = {
  pure = rendering.pure_renderers,
  summary = summary_message, note = unanswered_note, cut_record = cut_record,
  cut = function(plan, c, summaries)
    return (cut_message(plan, c, summaries))
  end,
  message_overhead = tokens.MESSAGE_OVERHEAD, max_factor = tokens.MAX_FACTOR,
}

-- A plan from the memo's walk, which goes on from where the last step's
-- left off. Its units are made only when a plan needs them (units_of):
-- most plans fit, and need only the messages and their tokens.
local function from_kept_walk(plan, memo, how, events, fixed_tokens)
  local w = memo.walk
  if not (w and w:continues(events, plan.settings, how.defaults)) then
    w = core.window_walk(events, plan.settings, how.defaults, KEPT_WALK)
  end
  memo.walk = nil -- (until it has walked: an error leaves no walk half done)
  local keep = w:advance(how.thread, how.agent)
  memo.walk = keep and w or nil
  local messages, total, at_one
  messages, total, at_one, plan.summary, plan.pinned_call = w:plan(plan)
  plan.messages, plan.tokens_at_one = messages, at_one
  plan.total = (fixed_tokens or 0) + total
  plan.walk = w
  -- Its messages are a built-in renderer's, and no agent code sees them
  -- before the request is written: their forms may be kept.
  plan.forms = keep and w:forms() or nil
end


-- The plan's units: a kept walk's made now, at the plan's factor.
local function units_of(plan)
  if not plan.units then
    plan.units = plan.walk:units()
    core.units_tokens(plan.units, plan.factor, true)
  end
  return plan.units
end
M.units = units_of


local NO_RENDERERS = {}

function M.plan(thread, agent, opts)
  opts = opts or {}
  local events = opts.events or thread.events
  local blocks = opts.form == "blocks"
  local plan = {
    settings = M.settings(agent, opts.model),
    factor = opts.factor or tokens.factor(events),
    report = {}, needs_summary = {}, form = opts.form or "chat",
    read_more = agent and agent.tools and agent.tools.read_more ~= nil,
  }
  local how = { thread = thread, agent = agent, blocks = blocks,
    renderers = opts.renderers or NO_RENDERERS,
    defaults = blocks and rendering.block_renderers or rendering.chat_renderers,
    -- what each event became: built for a dry render (spool prompt) only
    report = opts.report and plan.report or nil }
  -- The memo keeps a walk of the built-in chat renderers' messages.
  local memo = not blocks and not how.report and next(how.renderers) == nil
    and opts.memo or nil
  if memo then
    from_kept_walk(plan, memo, how, events, opts.fixed_tokens)
  else
    local w = new_walk(events, plan.settings)
    walk(w, how, plan.factor)
    finish(plan, w, opts.fixed_tokens)
  end
  plan.limit = plan.settings.limit
  if plan.total > plan.limit then
    M.choose_fold(plan)
  end
  return plan
end


-- Picks the oldest units to fold so that what is left, with room for the
-- summary, comes under target × limit; the latest keep_recent units stay.
function M.choose_fold(plan)
  local s, units = plan.settings, units_of(plan)
  local target = plan.limit * s.target
  local fold, freed = {}, 0
  for i, u in ipairs(units) do
    if i > #units - s.keep_recent then
      break
    end
    if not u.pinned then
      fold[#fold + 1] = u
      freed = freed + u.tokens
      if plan.total - freed + M.summary_tokens(plan) <= target then
        break
      end
    end
  end
  -- Folding the last summary alone frees nothing: no call for that.
  local real = false
  for _, u in ipairs(fold) do
    real = real or u.kind ~= "summary"
  end
  plan.fold = real and fold or {}
end


-- Room allowed for a compaction's summary.
function M.summary_tokens(plan)
  return math.max(200, math.min(2000, plan.limit // 10))
end


-- The fewest tokens a result is cut to when the window has no more room.
M.MIN_RESULT_TOKENS = 64

local function mark(plan, u, action)
  for _, r in ipairs(plan.report) do
    if r.seq >= u.first and r.seq <= u.last then
      r.action = action
    end
  end
end


-- Drops the oldest unpinned units but the latest `spare` while the plan is
-- over; returns how many, and the index where the first was.
local function drop_oldest(plan, spare)
  local kept, dropped, at = {}, 0, nil
  local units = plan.units
  for i, u in ipairs(units) do
    if plan.total > plan.limit and not u.pinned and i <= #units - spare then
      plan.total = plan.total - u.tokens
      dropped = dropped + 1
      at = at or #kept + 1
      mark(plan, u, "omitted: over the budget")
    else
      kept[#kept + 1] = u
    end
  end
  plan.units = kept
  return dropped, at
end


local function is_result(m)
  return type(m.content) == "string"
    and (m.role == "tool" or (m.tag ~= nil and m.tag:match("_result$")))
end


-- Cuts the longest results, the newest too, down to what the budget
-- leaves (MIN_RESULT_TOKENS at the least); in a pinned unit as well, but
-- not the result that is the pinned answer of a person.
local function cut_results(plan)
  local factor, found, answer = plan.factor, {}, plan.pinned_call
  local at = {} -- unit -> its place in the plan
  for n, u in ipairs(plan.units) do
    at[u] = n
    for i, m in ipairs(u.messages) do
      if is_result(m) and (answer == nil
          or (m.tool_call_id or m.call_id) ~= answer) then
        found[#found + 1] = { unit = u, index = i,
                              size = tokens.estimate(m.content, factor) }
      end
    end
  end
  -- A unit is cut in a copy of its own: the walk the plan came from keeps
  -- its units for the next step's plan, which must not find them cut.
  local copies = {}
  local function own(u)
    local c = copies[u]
    if not c then
      c = { messages = copy(u.messages), bytes = copy(u.bytes),
            overhead = u.overhead, first = u.first, last = u.last,
            kind = u.kind, tokens = u.tokens, pinned = u.pinned }
      copies[u] = c
      plan.units[at[u]] = c
    end
    return c
  end
  table.sort(found, function(a, b) return a.size > b.size end)
  local marker = "\n[… %d of %d tokens cut to fit the context window]"
  for _, f in ipairs(found) do
    local excess = plan.total - plan.limit
    if excess <= 0 then
      break
    end
    local marked = tokens.estimate(marker:format(f.size, f.size), factor)
    local keep = math.max(M.MIN_RESULT_TOKENS, f.size - excess - marked)
    if keep + marked < f.size then -- (a cut must make it smaller)
      local u = own(f.unit)
      local old = u.messages[f.index]
      local msg = {}
      for k, v in pairs(old) do
        msg[k] = v
      end
      local head = tokens.head(old.content, keep, factor)
      msg.content = head .. marker:format(f.size
        - tokens.estimate(head, factor), f.size)
      u.messages[f.index], u.bytes[f.index] = msg, tokens.bytes(msg)
      local before = u.tokens
      u.tokens = u.overhead + tokens.of_sizes(u.bytes, factor)
      plan.total = plan.total - before + u.tokens
      mark(plan, u, "truncated: over the budget")
    end
  end
end


-- The last resort, when compaction is off or could not make room, in
-- order until the plan fits: leave out the oldest unpinned units but the
-- latest keep_recent, with a note where they were; then those too, but
-- the newest (what the model answers); then cut the longest results, the
-- newest's too. What is pinned, the system prompt and the tools are never
-- cut: if they alone are over, plan.overflow says by how many tokens.
function M.drop_overflow(plan)
  units_of(plan)
  plan.tokens_at_one, plan.messages = nil, nil
  local dropped, at = drop_oldest(plan, plan.settings.keep_recent)
  local more, more_at = drop_oldest(plan, 1)
  if more > 0 then
    at = math.min(at or more_at, more_at)
    dropped = dropped + more
  end
  if dropped > 0 then
    local note = { role = "user", tag = "omitted",
      content = string.format("[%d earlier parts of this conversation were "
        .. "omitted to fit the context window]", dropped) }
    if plan.form ~= "blocks" then
      note.tag = nil
    end
    local unit = { messages = { note }, bytes = { tokens.bytes(note) },
      overhead = tokens.overhead(note), tokens = tokens.message(note,
        plan.factor), first = 0, last = 0 }
    table.insert(plan.units, at, unit)
    plan.total = plan.total + unit.tokens
  end
  if plan.total > plan.limit then
    cut_results(plan)
  end
  plan.overflow = plan.total > plan.limit and plan.total - plan.limit or nil
end


-- The tokens of the plan's messages at `factor`.
function M.tokens(plan, factor)
  if factor == 1 and plan.tokens_at_one then
    return plan.tokens_at_one
  end
  return (core.units_tokens(units_of(plan), factor))
end


-- The plan's messages: chat messages, or for the blocks form one user
-- message of <tag> blocks.
function M.messages(plan)
  if plan.form == "blocks" then
    local parts = {}
    for _, u in ipairs(plan.units) do
      for _, m in ipairs(u.messages) do
        parts[#parts + 1] = string.format("<%s>\n%s\n</%s>", m.tag, m.content,
          m.tag)
      end
    end
    return { { role = "user", content = table.concat(parts, "\n\n") } }
  end
  return plan.messages -- (a kept walk's, made with the plan)
    or core.units_messages(plan.units) -- (in C: every step lists them)
end


-- The folded units as text for the summarizer: each message tagged with
-- its role (and the tool it answers).
function M.fold_text(plan)
  local parts = {}
  if plan.summary then
    parts[1] = "<previous_summary>\n" .. plan.summary.data.summary
      .. "\n</previous_summary>"
  end
  for _, u in ipairs(plan.fold or {}) do
    if u.kind ~= "summary" then
      for _, m in ipairs(u.messages) do
        local tag = m.tag or m.role
        local body = m.content
        if type(body) ~= "string" or body == "" then
          body = ""
        end
        for _, c in ipairs(m.tool_calls or {}) do
          body = body .. (body ~= "" and "\n" or "")
            .. string.format("calls %s(%s)", c.name, c.arguments or "")
        end
        if m.role == "tool" then
          tag = "result" .. (m.name and (" of " .. m.name) or "")
        end
        parts[#parts + 1] = string.format("<%s>\n%s\n</%s>", tag, body,
          tag:match("^%S+"))
      end
    end
  end
  return table.concat(parts, "\n\n")
end


-- The seq ranges a new compaction covers: the old one's and the folded
-- units'.
function M.fold_ranges(plan)
  local ranges = json.array()
  for _, r in ipairs(plan.summary and plan.summary.data.ranges or {}) do
    ranges[#ranges + 1] = json.array({ r[1], r[2] })
  end
  for _, u in ipairs(plan.fold or {}) do
    if u.kind ~= "summary" then
      ranges[#ranges + 1] = json.array({ u.first, u.last })
    end
  end
  table.sort(ranges, function(a, b) return a[1] < b[1] end)
  -- Ranges that touch become one, so they stay few as compactions repeat.
  local merged = json.array()
  for _, r in ipairs(ranges) do
    local last = merged[#merged]
    if last and r[1] <= last[2] + 1 then
      last[2] = math.max(last[2], r[2])
    else
      merged[#merged + 1] = r
    end
  end
  return merged
end


return M
