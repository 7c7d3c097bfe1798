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
local json = require "spool.json"
local window = require "spool.run.window"
local compact = require "spool.run.compact"

local M = {}


-- Renders a tool result or error detail compactly: strings as they are,
-- anything else as compact JSON.
function M.render_value(v)
  if type(v) == "string" then
    return v
  elseif v == nil then
    return "null"
  end
  local ok, s = pcall(json.encode, v)
  return ok and s or tostring(v)
end


local function user_text(input)
  if type(input) == "string" then
    return input
  end
  return M.render_value(input)
end


-- Default chat renderers: event -> message(s) to append (or nil).
-- What a person who approved a call with other arguments changed.
local function edited_note(ev)
  local edited = ev.data.edited_args
  if edited == nil then
    return ""
  end
  return "(A person changed the arguments to " .. json.encode(edited)
    .. " before it ran.) "
end


M.chat_renderers = {
  input = function(ev)
    return { role = "user", content = user_text(ev.data.input) }
  end,
  model_call = function(ev)
    local msg = { role = "assistant", content = ev.data.text }
    if ev.data.dropped_tool_calls and (msg.content or "") == "" then
      msg.content = string.format("(%d tool calls, over the limit)",
        ev.data.dropped_tool_calls)
    end
    if ev.data.tool_calls and #ev.data.tool_calls > 0 then
      local calls = json.array()
      local from = ev.data.tool_calls
      for i = 1, #from do
        local c = from[i]
        calls[i] = { id = c.id, name = c.name, arguments = c.arguments }
      end
      msg.tool_calls = calls
    end
    return msg
  end,
  tool_result = function(ev)
    if ev.data.call_id then
      return { role = "tool", tool_call_id = ev.data.call_id,
               name = ev.data.name, content = edited_note(ev)
                 .. M.render_value(ev.data.result) }
    end
    return { role = "user", content = string.format("Result of %s: %s",
      ev.data.name, M.render_value(ev.data.result)) }
  end,
  prefetch = function(ev)
    return { role = "user", content = string.format("Fetched before you "
      .. "started, %s:\n%s", ev.data.name, ev.data.error
        and ("error: " .. ev.data.error) or M.render_value(ev.data.result)) }
  end,
  human_response = function(ev)
    if ev.data.call_id == nil and ev.data.kind == "ask" and not ev.data.via then
      return { role = "user", content = "A person answered: "
        .. tostring(ev.data.answer or "(no answer before the deadline)") }
    end
  end,
  error = function(ev)
    if ev.data.call_id then
      return { role = "tool", tool_call_id = ev.data.call_id,
               name = ev.data.name, content = edited_note(ev) .. "error: "
                 .. ev.data.error }
    end
    return { role = "user", content = "error: " .. ev.data.error
      .. "\nPlease correct this and answer again." }
  end,
}


-- The built-in chat renderers, as this module made them: each a function
-- of its event alone, so a step may keep what it rendered for the next
-- (spool.run.window.memo). A replacement put into chat_renderers is not
-- known to be, and renders afresh each time.
M.pure_renderers = {}
for _, render in pairs(M.chat_renderers) do
  M.pure_renderers[render] = true
end


-- Plans the thread's window (spool.run.window) and acts on the plan: writes
-- the summaries a { summarize = n } policy wants, compacts when the thread
-- is over budget, and as a last resort drops the oldest parts and cuts
-- results (a `warning` event says so when even that is not enough). With
-- opts.dry (spool prompt) it only plans: no model call, no new event.
-- Returns the messages and the plan.
local function windowed(thread, agent, opts)
  local plan_opts = { form = opts.form, renderers = opts.renderers,
                      events = opts.events, fixed_tokens = opts.fixed_tokens,
                      model = opts.model, report = opts.dry, memo = opts.memo }
  local plan = window.plan(thread, agent, plan_opts)
  local model = opts.model or require("spool.base.config").get().model
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
-- events (a prefix of the thread's, to render an earlier step).
function M.chat(thread, agent, renderers, opts)
  opts = opts or {}
  return windowed(thread, agent, { form = "chat", renderers = renderers,
    events = opts.events, fixed_tokens = opts.fixed_tokens,
    model = opts.model, dry = opts.dry, memo = opts.memo })
end


-- Default block renderers for the structured form: event -> tag, body,
-- attributes (or nil to leave the event out).
M.block_renderers = {
  input = function(ev)
    return "input", user_text(ev.data.input)
  end,
  intent = function(ev)
    return ev.data.name, M.render_value(ev.data.args)
  end,
  tool_result = function(ev)
    return ev.data.name .. "_result", edited_note(ev)
      .. M.render_value(ev.data.result)
  end,
  error = function(ev)
    return "error", edited_note(ev) .. ev.data.error
  end,
  model_call = function(ev)
    if ev.data.text and ev.data.text ~= "" and #(ev.data.tool_calls or {}) == 0
    then
      return "assistant", ev.data.text
    end
  end,
  prefetch = function(ev)
    return ev.data.name, ev.data.error and ("error: " .. ev.data.error)
      or M.render_value(ev.data.result)
  end,
  agent_result = function(ev)
    return ev.data.agent .. "_result", M.render_value(ev.data.result
      or ev.data.error)
  end,
}


-- The whole thread as one user message of <tag>...</tag> blocks, the
-- "own your context window" rendering: compact, and in the author's words.
-- The same window, policies and compaction as chat apply.
function M.structured(thread, agent, renderers, opts)
  opts = opts or {}
  return windowed(thread, agent, { form = "blocks", renderers = renderers,
    events = opts.events, fixed_tokens = opts.fixed_tokens,
    model = opts.model, dry = opts.dry })
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
