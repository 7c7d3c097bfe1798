-- spool.serve.metrics: what this process did, in Prometheus' text format
-- (private). Counted from durable events (spool.run.hub) and from the control
-- API's requests; labels are bounded (agent names, statuses, codes).

local core = require "spool.core"
local hub = require "spool.run.hub"

local M = {}

local counters = {} -- metric name -> { [label text] = n }

-- Histograms: name -> { help, buckets, series = { [label text] =
-- { counts, sum, n } }, nseries }. counts[i] is what fell in bucket i
-- alone (at most its bound, more than the one before): one increment per
-- value, as every model call observes several; rendering sums them up.
-- The GenAI ones are OpenTelemetry's gen_ai.client.* (semantic conventions
-- v1.41), with their buckets, named as Prometheus names OpenTelemetry
-- metrics (dots become underscores, the unit a suffix).
local histograms = {}
local MAX_SERIES = 1000 -- per histogram: label values come from outside

local function add_series(h, key)
  local s = { counts = {}, sum = 0, n = 0, buckets = h.buckets }
  for i = 1, #h.buckets do
    s.counts[i] = 0
  end
  h.series[key] = s
  h.nseries = h.nseries + 1
  return s
end

-- A histogram; one without labels has its one series from the start.
local function histogram(name, help, buckets, unlabelled)
  local h = { help = help, buckets = buckets, series = {}, nseries = 0 }
  histograms[name] = h
  if unlabelled then
    add_series(h, "")
  end
end

histogram("spool_model_latency_seconds", "Time the model took to answer a "
  .. "step.", { 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 }, true)
histogram("gen_ai_client_token_usage", "Tokens used by each model call "
  .. "(OpenTelemetry gen_ai.client.token.usage), by token type.",
  { 1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
    16777216, 67108864 })
histogram("gen_ai_client_operation_duration_seconds", "Time each model call "
  .. "took, retries included (OpenTelemetry "
  .. "gen_ai.client.operation.duration).",
  { 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
    40.96, 81.92 })

-- A histogram's series of labels `key`, or nil when it has MAX_SERIES.
local function series_of(name, key)
  local h = histograms[name]
  local s = h.series[key]
  if not s and h.nseries < MAX_SERIES then
    s = add_series(h, key)
  end
  return s
end

local function observe_in(s, v)
  if not s then
    return
  end
  s.n = s.n + 1
  s.sum = s.sum + v
  local buckets = s.buckets
  for i = 1, #buckets do
    if v <= buckets[i] then
      s.counts[i] = s.counts[i] + 1
      return
    end
  end
end

local function observe(name, key, v)
  observe_in(series_of(name, key), v)
end

local latency_series = series_of("spool_model_latency_seconds", "")

local HELP = {
  spool_runs_started_total = "Threads started (top level and sub-agents).",
  spool_runs_ended_total = "Threads that ended, by agent and status.",
  spool_waits_total = "Times a thread began to wait, by kind.",
  spool_steps_total = "Model calls made, by agent.",
  spool_tokens_total = "Tokens the model read and wrote.",
  spool_step_errors_total = "Error events (bad tool calls, failed tools).",
  spool_http_requests_total = "Control API requests, by status code.",
  spool_channel_deliveries_total = "Requests delivered to people, by "
    .. "channel.",
  spool_channel_failures_total = "Requests a channel could not deliver.",
  spool_channel_refusals_total = "Channel callbacks refused (bad "
    .. "signature, replay, stale or unknown request), by channel and status.",
  spool_model_retries_total = "Model call attempts that were tried again, "
    .. "by provider.",
  spool_model_failures_total = "Model calls that failed after their "
    .. "retries, by provider.",
  spool_lease_claims_total = "Leases on threads this worker took.",
  spool_lease_takeovers_total = "Threads this worker took over from a "
    .. "worker that stopped (its lease lapsed, or its process died).",
  spool_lease_lost_total = "Appends this worker could not make because "
    .. "another worker had claimed the thread since (fenced off).",
  spool_trace_spans_total = "Spans of this process's traces, by what "
    .. "became of them: exported, rejected by the collector, or dropped "
    .. "(the queue was full, or the collector failed for good).",
  spool_trace_export_retries_total = "Span exports tried again (the "
    .. "collector answered 429, 502, 503 or 504, or did not answer).",
}


local NONE = {}

-- How often a model_call or failed event's call was retried, and its
-- provider.
local function retries(ev)
  local attempts = type(ev.data.attempts) == "table" and ev.data.attempts
    or NONE
  local last = attempts[#attempts] or NONE
  return math.max(0, #attempts - 1),
    tostring(last.provider or ev.data.provider or "unknown")
end


local function label_text(labels)
  if not labels then
    return ""
  end
  local keys = {}
  for k in pairs(labels) do
    keys[#keys + 1] = k
  end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do
    local v = tostring(labels[k]):gsub("[\\\"\n]", { ["\\"] = "\\\\",
      ['"'] = '\\"', ["\n"] = "\\n" })
    parts[i] = string.format('%s="%s"', k, v)
  end
  return "{" .. table.concat(parts, ",") .. "}"
end


-- A two-level memo of names that come from outside (agents, providers,
-- models), bounded all the same: f(a, b) is make(a, b) the first time,
-- and kept, for up to 4096 pairs. The listener below counts every event.
local function bounded_memo(make)
  local by_a, count = {}, 0
  return function(a, b)
    local by_b = by_a[a]
    local v = by_b and by_b[b]
    if v == nil then
      v = make(a, b)
      if count < 4096 then
        count = count + 1
        by_a[a] = by_b or {}
        by_a[a][b] = v
      end
    end
    return v
  end
end


-- The text of one label (its values are few: agents, providers, kinds).
local label1 = bounded_memo(function(k, v)
  return label_text({ [k] = v })
end)


local function add_text(name, key, n)
  local c = counters[name]
  if not c then
    c = {}
    counters[name] = c
  end
  c[key] = (c[key] or 0) + (n or 1)
end


function M.add(name, labels, n)
  add_text(name, label_text(labels), n)
end


-- Sets a counter another module keeps (one with no labels).
function M.set(name, n)
  counters[name] = { [""] = n }
end


local TERMINAL = { done = true, failed = true, cancelled = true }

-- The GenAI histograms' labels of a model call (made once per call
-- record, below, and for a call that failed).
local function genai_key(provider, model, extra_k, extra_v)
  local labels = { gen_ai_operation_name = "chat",
    gen_ai_provider_name = provider, gen_ai_request_model = model }
  if extra_k then
    labels[extra_k] = extra_v
  end
  return label_text(labels)
end


-- A series a call record names ({ histogram, key }), kept in it once made
-- (nil while its histogram has MAX_SERIES).
local function series_in(ref)
  local s = ref.series
  if not s then
    s = series_of(ref[1], ref[2])
    ref.series = s
  end
  return s
end


-- The series a model call of (provider, model) counts in, found once and
-- kept: every step makes a model call. (Each series is made at its first
-- value, as observe makes it: a call that failed, or reported no usage,
-- shows no empty series.)
local series_of_call = bounded_memo(function(provider, model)
  return {
    retries = label1("provider", provider),
    input = { "gen_ai_client_token_usage",
              genai_key(provider, model, "gen_ai_token_type", "input") },
    output = { "gen_ai_client_token_usage",
               genai_key(provider, model, "gen_ai_token_type", "output") },
    duration = { "gen_ai_client_operation_duration_seconds",
                 genai_key(provider, model) },
  }
end)


-- A model call's tokens and time, the engine's (model_call) or an agent's
-- own (llm_call), as OpenTelemetry's client metrics count them; returns
-- its series.
local function genai_call(data, u)
  local r = series_of_call(tostring(data.provider or "unknown"),
    tostring(data.model or "unknown"))
  if tonumber(u.input_tokens) then
    observe_in(series_in(r.input), u.input_tokens)
  end
  if tonumber(u.output_tokens) then
    observe_in(series_in(r.output), u.output_tokens)
  end
  local ms = tonumber(data.latency_ms)
  if ms and data.error == nil then
    observe_in(series_in(r.duration), ms / 1000)
  end
  return r
end


-- A model call that failed for good: its attempts' time, and the last
-- one's status as error.type.
local function genai_failure(data)
  local attempts = type(data.attempts) == "table" and data.attempts or NONE
  local last = attempts[#attempts] or NONE
  local ms = 0
  for _, a in ipairs(attempts) do
    ms = ms + (tonumber(a.latency_ms) or 0)
  end
  local status = tonumber(last.status)
  observe("gen_ai_client_operation_duration_seconds",
    genai_key(tostring(last.provider or "unknown"),
      tostring(last.model or "unknown"), "error_type",
      status and status >= 300 and tostring(status) or "_OTHER"), ms / 1000)
end

-- The counters every model call adds to, made once (rendered once they
-- have a series).
local function counter(name)
  counters[name] = counters[name] or {}
  return counters[name]
end

local steps_total = counter("spool_steps_total")
local retries_total = counter("spool_model_retries_total")
local tokens_total = counter("spool_tokens_total")
local INPUT, OUTPUT = label1("kind", "input"), label1("kind", "output")

hub.listen(function(thread, ev)
  local t = ev.type
  if t == "model_call" then
    local data = ev.data
    local u = type(data.usage) == "table" and data.usage or NONE
    local r = genai_call(data, u)
    local agent = label1("agent", thread.agent)
    steps_total[agent] = (steps_total[agent] or 0) + 1
    if type(data.attempts) == "table" then -- (retried: by its last provider)
      local n, provider = retries(ev)
      add_text("spool_model_retries_total", label1("provider", provider), n)
    else
      retries_total[r.retries] = retries_total[r.retries] or 0
    end
    tokens_total[INPUT] = (tokens_total[INPUT] or 0) + (u.input_tokens or 0)
    tokens_total[OUTPUT] = (tokens_total[OUTPUT] or 0)
      + (u.output_tokens or 0)
    observe_in(latency_series, (tonumber(data.latency_ms) or 0) / 1000)
  elseif t == "llm_call" then
    if ev.data.error == nil then
      genai_call(ev.data, type(ev.data.usage) == "table" and ev.data.usage
        or NONE)
    elseif type(ev.data.attempts) == "table" then
      genai_failure(ev.data)
    end
  elseif t == "input" then
    add_text("spool_runs_started_total", label1("agent", thread.agent))
  elseif TERMINAL[t] then
    M.add("spool_runs_ended_total", { agent = thread.agent, status = t })
    if t == "failed" and type(ev.data.attempts) == "table" then
      local n, provider = retries(ev)
      local key = label1("provider", provider)
      add_text("spool_model_retries_total", key, n)
      add_text("spool_model_failures_total", key)
      genai_failure(ev.data)
    end
  elseif t == "human_request" then
    add_text("spool_waits_total", label1("kind", ev.data.kind or "approval"))
  elseif t == "error" then
    add_text("spool_step_errors_total", label1("agent", thread.agent))
  end
end, { model_call = true, llm_call = true, input = true, done = true,
       failed = true, cancelled = true, human_request = true, error = true })


-- A series' labels with le="bound" added.
local function with_le(key, le)
  if key == "" then
    return '{le="' .. le .. '"}'
  end
  return key:sub(1, -2) .. ',le="' .. le .. '"}'
end


local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do
    keys[#keys + 1] = k
  end
  table.sort(keys)
  return keys
end


local function render_histograms(out)
  for _, name in ipairs(sorted_keys(histograms)) do
    local h = histograms[name]
    out[#out + 1] = "# HELP " .. name .. " " .. h.help
    out[#out + 1] = "# TYPE " .. name .. " histogram"
    for _, k in ipairs(sorted_keys(h.series)) do
      local s = h.series[k]
      local below = 0 -- a bound in full: %g wrote 1048576 as 1.04858e+06
      for i, bound in ipairs(h.buckets) do
        below = below + s.counts[i]
        out[#out + 1] = string.format("%s_bucket%s %d", name,
          with_le(k, string.format("%.14g", bound)), below)
      end
      out[#out + 1] = string.format("%s_bucket%s %d", name, with_le(k, "+Inf"),
        s.n)
      out[#out + 1] = string.format("%s_sum%s %.6f", name, k, s.sum)
      out[#out + 1] = string.format("%s_count%s %d", name, k, s.n)
    end
  end
end


-- The exporter's counts (engine/src/io/otlp.c), as counters and a gauge.
local function trace_gauges(gauges)
  local t = core.trace_stats()
  gauges.spool_trace_spans_queued = { "Spans waiting to be exported.",
    t.queued }
  counters.spool_trace_spans_total = {
    [label1("outcome", "exported")] = t.exported,
    [label1("outcome", "rejected")] = t.rejected,
    [label1("outcome", "dropped")] = t.dropped }
  counters.spool_trace_export_retries_total = { [""] = t.retries }
end


-- The exposition text; `gauges` = { name = { help, value } } adds the
-- values only the caller knows (runs in flight).
function M.render(gauges)
  gauges = gauges or {}
  trace_gauges(gauges)
  local out = {}
  for _, name in ipairs(sorted_keys(counters)) do
    if next(counters[name]) ~= nil then -- (some are made ahead, empty)
      out[#out + 1] = "# HELP " .. name .. " " .. (HELP[name] or name)
      out[#out + 1] = "# TYPE " .. name .. " counter"
      for _, k in ipairs(sorted_keys(counters[name])) do
        out[#out + 1] = string.format("%s%s %d", name, k, counters[name][k])
      end
    end
  end
  render_histograms(out)
  for _, name in ipairs(sorted_keys(gauges)) do
    local g = gauges[name]
    out[#out + 1] = "# HELP " .. name .. " " .. g[1]
    out[#out + 1] = "# TYPE " .. name .. " gauge"
    out[#out + 1] = string.format("%s %s", name, tostring(g[2]))
  end
  return table.concat(out, "\n") .. "\n"
end


return M
