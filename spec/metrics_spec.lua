-- spool.serve.metrics: counters and histograms in Prometheus' text format,
-- fed by durable events.
local core = require "spool.core"
local thread = require "spool.run.thread"
local metrics = require "spool.serve.metrics"

-- Commits model_call events with these usages and latencies, as the loop
-- would, to a thread no one else sees, for a model of its own (the counts
-- live as long as the process).
local function model_calls(model, calls)
  local t = { id = "t_metrics", agent = "m", events = {} }
  for i, c in ipairs(calls) do
    t.events[i] = { seq = i, type = "model_call", data = {
      provider = "openai", model = model, latency_ms = c.ms,
      usage = { input_tokens = c.input, output_tokens = 1 } } }
  end
  thread.on_commit(t, 1, #t.events)
end

local function buckets(text, name, labels)
  local found = {}
  local line = name .. "_bucket{" .. labels .. ',?le="([^"]+)"} (%d+)'
  for le, n in text:gmatch(line) do
    found[#found + 1] = le .. "=" .. n
  end
  return table.concat(found, " ")
end

describe("spool.serve.metrics", function()
  it("renders each histogram bucket as the count at or below its bound",
    function()
    local model = "m" .. core.random_id()
    local latency = buckets(metrics.render(), "spool_model_latency_seconds",
      "")
    -- 64 sits on a bound: it counts in le="64".
    model_calls(model, { { input = 3, ms = 5 }, { input = 20, ms = 150 },
      { input = 64, ms = 150 }, { input = 5000, ms = 90000 } })
    local text = metrics.render()
    local call = 'gen_ai_operation_name="chat",gen_ai_provider_name="openai",'
      .. 'gen_ai_request_model="' .. model .. '"'
    assert.are.equal("1=0 4=1 16=1 64=3 256=3 1024=3 4096=3 16384=4 65536=4 "
      .. "262144=4 1048576=4 4194304=4 16777216=4 67108864=4 +Inf=4",
      buckets(text, "gen_ai_client_token_usage",
        call .. ',gen_ai_token_type="input"'))
    assert.matches("gen_ai_client_token_usage_sum{" .. call
      .. ',gen_ai_token_type="input"} 5087.000000', text, 1, true)
    -- 90 s is past the last bound: only in +Inf.
    assert.matches("gen_ai_client_operation_duration_seconds_bucket{" .. call
      .. ',le="81.92"} 3', text, 1, true)
    assert.matches("gen_ai_client_operation_duration_seconds_bucket{" .. call
      .. ',le="+Inf"} 4', text, 1, true)
    -- The unlabelled one counts on from what it had.
    local had = {}
    for le, n in latency:gmatch("([^ =]+)=(%d+)") do
      had[le] = tonumber(n)
    end
    assert.matches('spool_model_latency_seconds_bucket{le="0.1"} '
      .. ((had["0.1"] or 0) + 1) .. "\n", text)
    assert.matches('spool_model_latency_seconds_bucket{le="0.25"} '
      .. ((had["0.25"] or 0) + 3) .. "\n", text)
  end)

  it("shows a model's series once it has a value, not before", function()
    local model = "m" .. core.random_id()
    local t = { id = "t_metrics", agent = "m", events = {
      { seq = 1, type = "model_call", data = { provider = "openai",
        model = model } } } } -- (no usage, no latency: nothing observed)
    thread.on_commit(t, 1, 1)
    local text = metrics.render()
    assert.is_nil(text:find(model, 1, true))
    model_calls(model, { { input = 3, ms = 5 } })
    text = metrics.render()
    assert.matches('gen_ai_token_type="input"} 1\n', text:match(
      "gen_ai_client_token_usage_count{[^\n]-" .. model:gsub("%-", "%%-")
      .. "[^\n]*\n"))
  end)
end)
