-- spool.run.trace: OpenTelemetry spans of what a thread does, named and
-- described as the GenAI semantic conventions (v1.41) say. Private: the
-- runner, the loop's parts and spool.llm call it; engine/src/lua/l_trace.c
-- encodes each finished span once, and engine/src/io/otlp.c exports it.
--
--   invoke_agent {agent}  INTERNAL  a run of a thread: from a start or a
--                          resume until it ends, waits or stops. A thread
--                          that waited for days has one per run, each
--                          linked to the one before (the wait between
--                          them is a span of its own).
--   chat {model}          CLIENT    a model call, retries and fallbacks
--                          included (each failed attempt is an event);
--                          token usage is on these spans only.
--   execute_tool {tool}   INTERNAL  a tool's handler.
--   await {kind}          INTERNAL  a wait for a person or an event, from
--                          the request to the answer.
--   compact               INTERNAL  a compaction (its summary call inside).
--
-- A thread's spans share one trace: the caller's, when the thread was
-- started with a W3C traceparent (POST /v1/threads, $TRACEPARENT), else
-- one named by the thread's id (the first half of its SHA-256), so any
-- later run of the thread, in any process, joins the same trace, and the
-- services the trace goes to never learn the thread's id from it. A
-- sub-agent's run is a child of the step or tool that called it. Outbound
-- model calls, agents' HTTP requests, MCP calls and webhooks carry the
-- current span as traceparent.
--
-- Message contents (prompts, replies, tool arguments and results) go on
-- spans only with OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true:
-- they hold customer data. Off when nothing takes spans
-- (core.tracing()): then every function here returns at once.

local core = require "spool.core"
local json = require "spool.json"
local config = require "spool.base.config"
local task = require "spool.base.task"

local M = {}

local INTERNAL, CLIENT = 1, 3
M.INTERNAL, M.CLIENT = INTERNAL, CLIENT

-- Message contents on spans (opt-in; see above).
M.content = (core.getenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
  or ""):lower() == "true"


-- ---- W3C trace context ----

-- A traceparent header's context { trace, id, sampled, remote = true },
-- or nil when it is not one (then the caller starts a trace of its own,
-- as the W3C recommendation says).
function M.parse(header)
  if type(header) ~= "string" or #header > 512 then
    return nil
  end
  local version, trace, id, flags, rest = header:match(
    "^%s*(%x%x)%-(%x+)%-(%x+)%-(%x%x)(.-)%s*$")
  if not version or #trace ~= 32 or #id ~= 16 or version == "ff"
      or header:find("%u") -- lowercase hex only
      or (version == "00" and rest ~= "")
      or (rest ~= "" and rest:sub(1, 1) ~= "-")
      or trace == string.rep("0", 32) or id == string.rep("0", 16) then
    return nil
  end
  return { trace = trace, id = id, remote = true,
           sampled = tonumber(flags, 16) % 2 == 1 }
end


-- The traceparent of a span: version 00, its sampled flag.
M.format = core.span_traceparent


-- A caller's traceparent as spool keeps it (with a thread's input): made
-- again from what it says, in version 00, never the bytes as they came.
-- nil when it is not one.
function M.canonical(header)
  local ctx = M.parse(header)
  return ctx and string.format("00-%s-%s-%s", ctx.trace, ctx.id,
    ctx.sampled and "01" or "00")
end


-- The traceparent outbound requests of the calling task carry: its
-- current span's, or nil.
function M.header()
  local span = task.span()
  return span and core.span_traceparent(span) or nil
end


-- ---- spans ----

-- A new span (engine/src/lua/l_trace.c), a child of `parent` (a span, or a
-- context as M.parse makes; nil: the task's current span, or none); nil
-- when tracing is off. Its attributes are given when it ends (M.finish).
function M.start(name, kind, parent)
  if not core.tracing() then
    return nil
  end
  return core.span_start(name, kind, parent or task.span())
end


-- The names of a kind of span's attributes, made once (where the kind of
-- span is defined): a span gives their values, in this order, when it
-- ends. C encodes each name once, not once a span. A name ending in [] is
-- a list: a string given for it is a list of one
-- (gen_ai.response.finish_reasons), without a table made for it.
M.schema = core.span_schema


-- Ends a span (nil: nothing) with its attributes: the values of `schema`'s
-- names, in order (nil leaves one out). `err`: a message, and the span's
-- status is ERROR; its error.type (low-cardinality: "timeout", a status
-- code, "tool_error") is then one of the values. An unsampled span is
-- dropped here.
function M.finish(span, err, schema, ...)
  if span then
    core.span_end(span, err ~= nil and err ~= false and tostring(err) or nil,
      schema, ...)
  end
end


-- Runs f(...) with `span` the task's current span; what was current comes
-- back after, however f ends.
function M.within(span, f, ...)
  if not span then
    return f(...)
  end
  local outer = task.set_span(span)
  local res = table.pack(pcall(f, ...))
  task.set_span(outer)
  if not res[1] then
    error(res[2], 0)
  end
  return table.unpack(res, 2, res.n)
end


-- An event on a span at this moment.
function M.event(span, name, attrs)
  if span then
    core.span_event(span, name, attrs)
  end
end


-- A value as a span attribute carries it: text as it is, the rest as JSON.
function M.text(v)
  if type(v) == "string" then
    return v
  end
  local ok, s = pcall(json.encode, v)
  return ok and s or nil
end


-- ---- runs ----

-- The context a thread's runs are children of, when no span of this
-- process is current: the caller's (stored with the input), or the
-- thread's own trace, named by its id (a root, no parent: see
-- core.trace_id_of), so a thread's trace is found from its id.
local function origin(thread)
  local first = thread.events[1]
  local ctx = first and first.type == "input" and M.parse(first.data.trace)
  if ctx then
    return ctx
  end
  return { trace = core.trace_id_of(thread.id) }
end


-- The wait a run resumes from: the human_request and human_response
-- events, when the thread's last event answers one.
local function resumed_wait(thread)
  local events = thread.events
  local last = events[#events]
  if not last or last.type ~= "human_response" then
    return nil
  end
  for i = #events - 1, 1, -1 do
    if events[i].type == "human_request" then
      return events[i], last
    end
  end
end


local WAIT = M.schema { "spool.wait.kind", "gen_ai.tool.name",
  "gen_ai.tool.call.id", "spool.wait.approved", "spool.wait.by" }

local PREVIOUS_RUN = { ["spool.link"] = "previous_run" }
local WAIT_LINK = { ["spool.link"] = "wait" }

-- The wait a run resumes from, as a span of the run that asked (ended
-- now, with the times of the request and the answer); returns its id.
local function emit_wait(run_span, request, response)
  local r, a = request.data, response.data
  local wait = M.start("await " .. tostring(r.kind), INTERNAL,
    { trace = run_span.trace, id = r.span, sampled = run_span.sampled })
  core.span_times(wait, request.at * 1000000, response.at * 1000000)
  local id = wait.id
  M.finish(wait, nil, WAIT, r.kind, r.name, r.call_id, a.approved, a.by)
  return id
end


-- Begins the span of a run of `thread` (nil when tracing is off), and
-- returns it with the step the run starts at. A run that resumes from a
-- wait links to the run that asked, and the wait is its own span.
function M.run_begin(thread, agent)
  if not core.tracing() then
    return nil
  end
  local span = core.span_start("invoke_agent " .. agent.name, INTERNAL,
    task.span() or origin(thread))
  local request, response = resumed_wait(thread)
  if request and request.data.span and span.sampled then
    local trace = span.trace
    local wait = emit_wait(span, request, response)
    core.span_link(span, trace, request.data.span, PREVIOUS_RUN)
    core.span_link(span, trace, wait, WAIT_LINK)
  end
  local run = task.runs[thread]
  if run then
    run.span = span
  end
  return span, thread.step
end


local RUN = M.schema { "gen_ai.operation.name", "gen_ai.provider.name",
  "gen_ai.agent.name", "gen_ai.agent.version", "gen_ai.conversation.id",
  "spool.thread.parent", "spool.thread.status", "spool.thread.first_step",
  "spool.thread.step", "error.type" }

-- Ends a run's span, saying how the thread stands.
function M.run_end(span, thread, agent, first_step)
  if not span then
    return
  end
  local status = thread:status()
  local _, err = thread:outcome()
  err = status == "failed" and (err or "failed") or nil
  M.finish(span, err, RUN, "invoke_agent", agent.model
      and agent.model.provider or config.get().model.provider,
    agent.name, agent.version, thread.id, thread.parent, status,
    first_step, thread.step, err and "agent_failed" or nil)
end


-- The id of the span of the run that drives `thread` here, for a request
-- to a person to keep (the run that answers links back to it).
function M.run_span_id(thread)
  local run = task.runs[thread]
  local span = run and run.span
  return span and span.sampled and span.id or nil
end


return M
