-- spool._window: plans what the model sees of a thread within its token
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
--     memo = window.memo(thread) | nil })
--   plan = { units, report, total, limit, settings, factor, fold,
--            needs_summary, summary = compaction event | nil }
--   (report, what became of each event, is filled only when asked)
--   window.messages(plan)  -> the chat messages
--   window.drop_overflow(plan)   when compaction could not make room

local json = require "spool.json"
local tokens = require "spool.tokens"

local M = {}

M.DEFAULT_POLICIES = { tool_result = { truncate = 4000 } }

local DEFAULT_TOKENS = 128000
local DEFAULT_RESERVE = 4096


local make_settings

-- The agent's window settings, with defaults. agent.window = { tokens,
-- reserve, policies = { [event type] = policy }, compact = false | {
-- prompt, keep_recent, target } }.
function M.settings(agent, model)
  -- An agent version and its model always make the same settings: kept.
  local memo = agent and agent.window_memo
  if memo and memo.model == model and memo.window == agent.window then
    return memo.settings
  end
  local settings = make_settings(agent, model)
  if agent then
    agent.window_memo = { model = model, window = agent.window,
                          settings = settings }
  end
  return settings
end


make_settings = function(agent, model)
  local w = agent and agent.window or {}
  model = model or {}
  local policies = {}
  for k, v in pairs(M.DEFAULT_POLICIES) do
    policies[k] = v
  end
  for k, v in pairs(w.policies or {}) do
    policies[k] = v
  end
  local c = type(w.compact) == "table" and w.compact or {}
  return {
    tokens = w.tokens or model.context_tokens or DEFAULT_TOKENS,
    reserve = w.reserve or model.max_tokens or DEFAULT_RESERVE,
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


-- Seqs never folded or dropped: the first input, the latest human answer.
local function pins(events)
  local set, human = {}, nil
  for i = 1, #events do
    local ev = events[i]
    if ev.type == "input" and not next(set) then
      set[ev.seq] = true
    elseif ev.type == "human_response" then
      human = ev.seq
    end
  end
  if human then
    set[human] = true
  end
  return set
end


local function covered(ranges, seq)
  for _, r in ipairs(ranges or {}) do
    if seq >= r[1] and seq <= r[2] then
      return true
    end
  end
  return false
end


-- Applies the event's policy to its message; returns the message (or nil)
-- and what was done. The message is a copy: renderers may share tables.
local function apply_policy(plan, ev, msg, summaries, pinned)
  local pol = plan.settings.policies[ev.type]
  if pinned[ev.seq] and pol == "drop" then
    pol = "keep" -- what is pinned may be cut, never left out
  end
  if pol == nil or pol == "keep" or type(msg.content) ~= "string" then
    return msg, nil
  end
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
    if msg.role ~= "tool" and msg.tag == nil then
      return nil, "dropped"
    end
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
  -- read_more pages through the event's value: the offset is only right
  -- when the message shows that value as it is (a renderer's prefix, as
  -- prefetch's, would shift it).
  local value = ev.data.result
  local plain = value ~= nil
    and msg.content == require("spool.context").render_value(value)
  local hint = plan.read_more and plain
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


-- What a thread's earlier steps rendered, kept for its next: each event's
-- message from a built-in chat renderer (a pure function of the event,
-- and events never change), with its size; and what providers made of
-- those messages (spool.providers.openai). Only the loop's own steps use
-- it, never a render whose messages reach an agent's code, which might
-- change them. What a compaction covers is forgotten; the runner drops
-- the rest when the run stops. { by_renderer = { [render] = { [ev] = msg
-- | false } }, bytes = { [msg] = n }, wire = { [provider] = { [msg] =
-- json.raw } } }.
function M.memo(thread)
  local memo = thread.render_memo
  if not memo then
    memo = { by_renderer = {}, bytes = {}, wire = {} }
    thread.render_memo = memo
  end
  return memo
end


-- Drops what the memo keeps of an event no longer shown.
local function forget(memo, ev)
  for _, seen in pairs(memo.by_renderer) do
    local msg = seen[ev]
    if msg ~= nil then
      seen[ev] = nil
      if msg then
        memo.bytes[msg] = nil
        for _, cache in pairs(memo.wire) do
          cache[msg] = nil
        end
      end
    end
  end
end


function M.plan(thread, agent, opts)
  opts = opts or {}
  local context = require "spool.context"
  local events = opts.events or thread.events
  local blocks = opts.form == "blocks"
  local renderers = opts.renderers or {}
  local defaults = blocks and context.block_renderers or context.chat_renderers
  local memo = not blocks and opts.memo or nil
  local plan = {
    settings = M.settings(agent, opts.model), factor = tokens.factor(events),
    units = {}, report = {}, needs_summary = {}, form = opts.form or "chat",
    read_more = agent and agent.tools and agent.tools.read_more ~= nil,
    -- message sizes, counted once in this render (or an earlier one)
    sizes = memo and setmetatable({}, { __index = memo.bytes }) or {},
  }
  -- What each event became: built for a dry render (spool prompt) only.
  local report = opts.report and plan.report
  local summaries, pinned = {}, pins(events)
  for i = 1, #events do
    local ev = events[i]
    if ev.type == "compaction" then
      plan.summary = ev
    elseif ev.type == "event_summary" then
      summaries[ev.data.of] = ev.data.summary
    end
  end
  local ranges = plan.summary and plan.summary.data.ranges or {}
  local ranged = #ranges > 0
  -- The calls of the unit's assistant message, and the answers found so
  -- far by call id (with their tokens); a unit closes with one answer per
  -- call, in call order. A unit's tokens add up as its messages come.
  local units, owed, answers, answer_tokens = plan.units, {}, {}, {}
  local unit
  local factor, sizes = plan.factor, plan.sizes

  local function settle_owed()
    for i = 1, #owed do
      local c = owed[i]
      local answer, n = answers[c.id], answer_tokens[c.id]
      if not answer then
        answer = { role = "tool", tool_call_id = c.id, name = c.name,
                   content = "error: no result was recorded for this call" }
        n = tokens.message(answer, factor, sizes)
      end
      unit.messages[#unit.messages + 1] = answer
      unit.tokens = unit.tokens + n
    end
    if #owed > 0 then
      owed, answers, answer_tokens = {}, {}, {}
    end
  end

  local function start_unit(msg, seq, kind, n)
    if unit then
      settle_owed()
    end
    unit = { messages = { msg }, first = seq, last = seq, kind = kind,
             tokens = n or tokens.message(msg, factor, sizes), pinned = false }
    units[#units + 1] = unit
    local calls = msg.tool_calls
    if calls then
      for i = 1, #calls do
        local c = calls[i]
        owed[#owed + 1] = c
        answers[c.id] = false
      end
    end
  end

  local summary_placed = false
  for i = 1, #events do
    local ev = events[i]
    local render = renderers[ev.type] or defaults[ev.type]
    if ranged and covered(ranges, ev.seq) and not pinned[ev.seq] then
      if not summary_placed then
        summary_placed = true
        local s = plan.summary
        local text = string.format("Summary of earlier work (events %d–%d, "
          .. "compacted to fit the context window):\n%s", ranges[1][1],
          s.data.upto, s.data.summary)
        start_unit(blocks and { role = "user", tag = "summary",
                                content = s.data.summary }
          or { role = "user", content = text }, s.seq, "summary")
      end
      if render and report then
        report[#report + 1] = { seq = ev.seq, type = ev.type,
          action = "compacted", into = plan.summary.seq }
      end
      if memo then
        forget(memo, ev)
      end
    elseif render then
      local msg
      if blocks then
        local tag, body = render(ev, thread, agent)
        msg = tag and { role = "user", tag = tag, content = body } or nil
      elseif memo and not renderers[ev.type] and context.pure_renderers[render]
      then
        local seen = memo.by_renderer[render]
        if not seen then
          seen = {}
          memo.by_renderer[render] = seen
        end
        msg = seen[ev]
        if msg == nil then
          msg = render(ev, thread, agent) or false
          seen[ev] = msg
          if msg then
            memo.bytes[msg] = tokens.bytes(msg)
          end
        end
      else
        msg = render(ev, thread, agent)
      end
      if msg then
        local full = tokens.message(msg, factor, sizes)
        local action
        msg, action = apply_policy(plan, ev, msg, summaries, pinned)
        local shown = msg and (action and tokens.message(msg, factor, sizes)
          or full)
        if msg and msg.role == "tool" and not blocks then
          local id = msg.tool_call_id
          if answers[id] == false then
            answers[id], answer_tokens[id] = msg, shown
            unit.last = ev.seq
          else
            action = "dropped: answers no pending call"
          end
        elseif msg then
          start_unit(msg, ev.seq, nil, shown)
        end
        if report then
          report[#report + 1] = { seq = ev.seq, type = ev.type,
            tokens = full, action = action, shown = shown }
        end
      end
    end
    if unit and ev.seq > unit.last and not (ranged and covered(ranges, ev.seq))
    then
      unit.last = ev.seq -- events a unit's renderers skip stay with it
    end
  end
  if unit then
    settle_owed()
  end

  local total = opts.fixed_tokens or 0
  for i = 1, #units do
    local u = units[i]
    for seq in pairs(pinned) do
      if seq >= u.first and seq <= u.last then
        u.pinned = true
      end
    end
    total = total + u.tokens
  end
  plan.total = total
  -- A reserve as large as the window (a model's max_tokens near its
  -- context size) still leaves the messages a quarter of it.
  plan.limit = math.max(plan.settings.tokens - plan.settings.reserve,
    plan.settings.tokens // 4)
  if total > plan.limit then
    M.choose_fold(plan)
  end
  return plan
end


-- Picks the oldest units to fold so that what is left, with room for the
-- summary, comes under target × limit; the latest keep_recent units stay.
function M.choose_fold(plan)
  local s, units = plan.settings, plan.units
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


-- Drops the oldest unpinned units (all but the latest keep_recent) until
-- the plan fits, leaving a note where they were: the last resort when
-- compaction is off or failed.
function M.drop_overflow(plan)
  local s = plan.settings
  local kept, dropped, at = {}, 0, nil
  local excess = plan.total - plan.limit
  for i, u in ipairs(plan.units) do
    if excess > 0 and not u.pinned and i <= #plan.units - s.keep_recent then
      excess = excess - u.tokens
      plan.total = plan.total - u.tokens
      dropped = dropped + 1
      at = at or #kept + 1
      for _, r in ipairs(plan.report) do
        if r.seq >= u.first and r.seq <= u.last then
          r.action = "omitted: over the budget"
        end
      end
    else
      kept[#kept + 1] = u
    end
  end
  if dropped > 0 then
    local note = { role = "user", tag = "omitted",
      content = string.format("[%d earlier parts of this conversation were "
        .. "omitted to fit the context window]", dropped) }
    if plan.form ~= "blocks" then
      note.tag = nil
    end
    table.insert(kept, at, { messages = { note }, tokens = tokens.message(note),
                             first = 0, last = 0 })
    plan.total = plan.total + kept[at].tokens
  end
  plan.units = kept
end


-- The plan's messages: chat messages, or for the blocks form one user
-- message of <tag> blocks.
function M.messages(plan)
  local out = {}
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
  local units = plan.units
  for i = 1, #units do
    local messages = units[i].messages
    for j = 1, #messages do
      out[#out + 1] = messages[j]
    end
  end
  return out
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
