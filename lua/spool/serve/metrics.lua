-- spool.serve.metrics: what this process did, in Prometheus' text format
-- (private). Counted from durable events (spool.run.hub) and from the control
-- API's requests; labels are bounded (agent names, statuses, codes).

local hub = require "spool.run.hub"

local M = {}

local LATENCY_BUCKETS = { 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 }

local counters = {} -- metric name -> { [label text] = n }
local latency = { counts = {}, sum = 0, n = 0 }
for i = 1, #LATENCY_BUCKETS do
  latency.counts[i] = 0
end

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


-- The text of one label, kept: the listener below counts every event, and
-- its labels' values (agents, providers, kinds) are few. Bounded all the
-- same, the values being names from outside.
local one_label, one_label_count = {}, 0

local function label1(k, v)
  local by_value = one_label[k]
  local text = by_value and by_value[v]
  if text then
    return text
  end
  text = label_text({ [k] = v })
  if one_label_count < 4096 then
    one_label_count = one_label_count + 1
    one_label[k] = by_value or {}
    one_label[k][v] = text
  end
  return text
end


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

hub.listen(function(thread, ev)
  local t = ev.type
  if t == "model_call" then
    add_text("spool_steps_total", label1("agent", thread.agent))
    local n, provider = retries(ev)
    add_text("spool_model_retries_total", label1("provider", provider), n)
    local u = type(ev.data.usage) == "table" and ev.data.usage or NONE
    add_text("spool_tokens_total", label1("kind", "input"),
      u.input_tokens or 0)
    add_text("spool_tokens_total", label1("kind", "output"),
      u.output_tokens or 0)
    local s = (tonumber(ev.data.latency_ms) or 0) / 1000
    latency.n = latency.n + 1
    latency.sum = latency.sum + s
    for i = 1, #LATENCY_BUCKETS do
      if s <= LATENCY_BUCKETS[i] then
        latency.counts[i] = latency.counts[i] + 1
      end
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
    end
  elseif t == "human_request" then
    add_text("spool_waits_total", label1("kind", ev.data.kind or "approval"))
  elseif t == "error" then
    add_text("spool_step_errors_total", label1("agent", thread.agent))
  end
end)


-- The exposition text; `gauges` = { name = { help, value } } adds the
-- values only the caller knows (runs in flight).
function M.render(gauges)
  local out = {}
  local names = {}
  for name in pairs(counters) do
    names[#names + 1] = name
  end
  table.sort(names)
  for _, name in ipairs(names) do
    out[#out + 1] = "# HELP " .. name .. " " .. (HELP[name] or name)
    out[#out + 1] = "# TYPE " .. name .. " counter"
    local keys = {}
    for k in pairs(counters[name]) do
      keys[#keys + 1] = k
    end
    table.sort(keys)
    for _, k in ipairs(keys) do
      out[#out + 1] = string.format("%s%s %d", name, k, counters[name][k])
    end
  end
  local h = "spool_model_latency_seconds"
  out[#out + 1] = "# HELP " .. h .. " Time the model took to answer a step."
  out[#out + 1] = "# TYPE " .. h .. " histogram"
  for i, bound in ipairs(LATENCY_BUCKETS) do
    out[#out + 1] = string.format('%s_bucket{le="%g"} %d', h, bound,
      latency.counts[i])
  end
  out[#out + 1] = string.format('%s_bucket{le="+Inf"} %d', h, latency.n)
  out[#out + 1] = string.format("%s_sum %.6f", h, latency.sum)
  out[#out + 1] = string.format("%s_count %d", h, latency.n)
  local gnames = {}
  for name in pairs(gauges or {}) do
    gnames[#gnames + 1] = name
  end
  table.sort(gnames)
  for _, name in ipairs(gnames) do
    local g = gauges[name]
    out[#out + 1] = "# HELP " .. name .. " " .. g[1]
    out[#out + 1] = "# TYPE " .. name .. " gauge"
    out[#out + 1] = string.format("%s %s", name, tostring(g[2]))
  end
  return table.concat(out, "\n") .. "\n"
end


return M
