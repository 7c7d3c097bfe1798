-- spool.context: what the model sees, rendered from the thread's events.
--
--   context.chat(thread, agent)        -> messages in the provider-neutral
--                                         chat form (role, content,
--                                         tool_calls, tool_call_id)
--   context.structured(thread, agent)  -> one user message holding the
--                                         thread as tagged blocks
--   context.render_value(v)            -> a value as compact text
--   context.read_more                  a tool reading what a policy cut
--
-- The chat rendering is always valid for a provider: every tool call the
-- model made is answered by a tool message, in order, even when the thread
-- holds no result for it (a crash, or a terminal intent); such a call is
-- answered with a note that it has no result.
--
-- Each event type renders through a function in `context.chat_renderers` /
-- `context.block_renderers`; an agent customises one type by passing its
-- own table of overrides as the third argument.
--
-- Both renderings keep the thread within the agent's token budget
-- (agent.window, spool.run.window): per-type policies (keep, drop, truncate,
-- summarize), pinned events, and compaction — a model call that folds the
-- oldest events into a summary event when the thread outgrows its window.
-- The events themselves are never changed: a render is a view.

local core = require "spool.core"
local config = require "spool.base.config"
local window = require "spool.run.window"
local compact = require "spool.run.compact"
local render = require "spool.run.render"

local M = {}


-- The default renderers (spool.run.render): an agent's overrides of some
-- event types go in the third argument of chat and structured.
M.render_value = render.render_value
M.chat_renderers = render.chat_renderers
M.block_renderers = render.block_renderers


local NONE = {}

-- The messages of `form` and their plan, acted on; opts as chat's (only
-- chat's steps keep a memo).
local function windowed(thread, agent, form, renderers, opts, memo)
  local plan_opts = { form = form, renderers = renderers,
                      events = opts.events, fixed_tokens = opts.fixed_tokens,
                      model = opts.model, report = opts.dry, memo = memo,
                      factor = opts.factor }
  local plan = window.plan(thread, agent, plan_opts)
  local model = opts.model or config.get().model
  if not opts.dry and #plan.needs_summary > 0 then
    local ok, err = compact.summarize(thread, plan, model)
    if not ok then
      core.log("warn", "thread " .. thread.id .. ": summarizing an event "
        .. "failed, it stays truncated: " .. tostring(err))
    end
    plan = window.plan(thread, agent, plan_opts)
  end
  if not opts.dry and plan.fold and #plan.fold > 0 and plan.settings.compact
  then
    local ev, err = compact.compact(thread, plan, model)
    if ev then
      plan = window.plan(thread, agent, plan_opts)
    else
      core.log("warn", "thread " .. thread.id .. ": compaction failed, the "
        .. "oldest events are left out instead: " .. tostring(err))
    end
  end
  if plan.total > plan.limit then
    window.drop_overflow(plan)
    if plan.overflow and not opts.dry then
      local msg = string.format("the request is %d tokens over the window's "
        .. "budget of %d, with nothing left to cut (the system prompt, the "
        .. "tools, the first input, the latest human answer and the newest "
        .. "exchange stay)", plan.overflow, plan.limit)
      thread:append("warning", { about = "window", message = msg,
                                 tokens = plan.total, budget = plan.limit })
      core.log("warn", "thread " .. thread.id .. ": " .. msg)
    end
  end
  return window.messages(plan), plan
end


-- The thread as chat messages within the agent's window. `opts` (from
-- spool.loop): fixed_tokens (the system prompt and tools), model, dry,
-- events (a prefix of the thread's, to render an earlier step), factor
-- (their calibration factor, spool.tokens.factor, when the caller has it),
-- memo (the loop's own: what its steps keep, spool.run.window.memo; any
-- other is ignored, so that what a run keeps never reaches agent code).
function M.chat(thread, agent, renderers, opts)
  opts = opts or NONE
  local memo = opts.memo
  if memo ~= nil and memo ~= window.memo(thread) then
    memo = nil
  end
  return windowed(thread, agent, "chat", renderers, opts, memo)
end


-- The whole thread as one user message of <tag>...</tag> blocks, the
-- "own your context window" rendering: compact, and in the author's words.
-- The same window, policies and compaction as chat apply.
function M.structured(thread, agent, renderers, opts)
  return windowed(thread, agent, "blocks", renderers, opts or NONE, nil)
end


-- A tool an agent may offer so the model can read what a truncation cut:
-- tools = { read_more = spool.context.read_more }. The marker a truncated
-- event shows says which seq and offset to ask for.
M.read_more = {
  description = "Read more of an event of this conversation that was cut "
    .. "short (the note where it was cut gives seq and from).",
  params = { seq = "integer", from = "integer" },
  run = function(args, ctx)
    local ev = ctx.thread.events[args.seq]
    if not ev then
      return nil, string.format("there is no event %d in this thread",
        args.seq)
    end
    local text = ev.data.result ~= nil and M.render_value(ev.data.result)
      or M.render_value(ev.data)
    local from = math.max(1, args.from)
    local piece = text:sub(from, from + 7999)
    local rest = #text - (from + #piece) + 1
    if rest > 0 then
      piece = piece .. string.format("\n[… %d more bytes; call read_more "
        .. "with seq %d and from %d]", rest, args.seq, from + #piece)
    end
    return piece
  end,
}


return M
