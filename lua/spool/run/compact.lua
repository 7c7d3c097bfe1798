-- spool.run.compact: the model calls that keep a thread within its window
-- (private; spool.context decides when). Both add events to the thread and
-- leave the originals in place, for audit and replay:
--
--   compaction     { upto, ranges = { {first, last}, ... }, summary,
--                    tokens_before, model, usage, cost_usd }
--                  later renders show `summary` instead of those ranges
--   event_summary  { of = seq, summary, model, usage, cost_usd }
--                  a { summarize = n } policy shows it instead of event `of`
--
-- The prompts are files in the project's prompts/ (compact.md and
-- summarize.md unless the agent's window names others), owned like any
-- prompt; without the file, the text below is used.

local core = require "spool.core"
local llm = require "spool.llm"
local config = require "spool.base.config"
local pricing = require "spool.model.pricing"
local prompt = require "spool.prompt"
local render = require "spool.run.render"
local task = require "spool.base.task"
local trace = require "spool.run.trace"
local window = require "spool.run.window"

local M = {}

M.DEFAULT_COMPACT = [[
You compact the history of an agent's work so it can go on within its
context window. Write a summary of the conversation below for the agent
itself: what was asked, what was done (tools called, with the facts and
identifiers they returned: ids, numbers, names, amounts), what was decided,
and what is still open. Keep every fact the agent may need later; drop
pleasantries and repetition. Plain text, no preamble.]]

M.DEFAULT_SUMMARIZE = [[
Summarize this tool result for the agent that asked for it. Keep every
identifier, number, name, date and amount it may need; drop boilerplate.
Plain text, no preamble.]]


-- The prompt file's text from the project's prompts/, else `default`.
-- Read on the thread pool: a compaction happens inside a run, and the
-- loop must not wait on the disk.
local function prompt_text(name, default)
  local text = core.read_file(config.get().prompts_dir .. "/" .. name, true)
  if not text then
    return default
  end
  local tpl = prompt.compile(text, "prompts/" .. name)
  return prompt.render(tpl, {})
end


local function call(thread, model, system, text, max_tokens)
  -- Recorded by the caller, in its compaction or summary event.
  return task.quietly(llm.chat, { model = model,
    system = system, max_tokens = max_tokens,
    messages = { { role = "user", content = text } }, thread = thread })
end


local COMPACT = trace.schema { "gen_ai.conversation.id",
  "spool.tokens_before", "error.type" }

-- Folds the plan's chosen units into a compaction event. Returns the event,
-- or nil and why.
function M.compact(thread, plan, model)
  local text = window.fold_text(plan)
  local span = trace.start("compact", trace.INTERNAL)
  local reply, err = trace.within(span, call, thread, model,
    prompt_text(plan.settings.prompt, M.DEFAULT_COMPACT), text,
    window.summary_tokens(plan))
  trace.finish(span, not reply and err or nil, COMPACT, thread.id,
    plan.total, not reply and "compaction_failed" or nil)
  if not reply then
    return nil, err
  end
  if not reply.text or reply.text == "" then
    return nil, "the model gave no summary"
  end
  local ranges = window.fold_ranges(plan)
  return thread:append("compaction", {
    upto = ranges[#ranges][2], ranges = ranges, summary = reply.text,
    tokens_before = plan.total, model = reply.model, usage = reply.usage,
    cost_usd = pricing.cost(reply.model, reply.usage),
  })
end


-- Summarizes each event a { summarize = n } policy found too long.
function M.summarize(thread, plan, model)
  for _, ev in ipairs(plan.needs_summary) do
    local content = ev.data.result ~= nil
      and render.render_value(ev.data.result)
      or render.render_value(ev.data)
    local reply, err = call(thread, model, prompt_text("summarize.md",
      M.DEFAULT_SUMMARIZE), content, window.summary_tokens(plan))
    if not reply or not reply.text then
      return nil, err or "the model gave no summary"
    end
    thread:append("event_summary", { of = ev.seq, summary = reply.text,
      model = reply.model, usage = reply.usage,
      cost_usd = pricing.cost(reply.model, reply.usage) })
  end
  return true
end


return M
