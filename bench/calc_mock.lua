-- The benchmark model: add(t, 1) while the request holds t < K tool
-- results, then "The answer is K." K is $SPOOL_BENCH_STEPS (default 10),
-- the latency of every answer $SPOOL_BENCH_LATENCY_MS (default 0).
-- Requests whose last tool result is not t are counted as wrong answers.
local K = tonumber(os.getenv("SPOOL_BENCH_STEPS") or "10")
return { latency_ms = tonumber(os.getenv("SPOOL_BENCH_LATENCY_MS") or "0"),
  rules = { { reply = function(conv)
  local t = #conv.tool_results
  if t > 0 and conv.tool_results[t].content ~= tostring(t) then
    return { status = 400, error = "wrong tool result: " .. conv.tool_results[t].content }
  end
  if t < K then
    return { tool = "add", args = { a = t, b = 1 } }
  end
  return "The answer is " .. K .. "."
end } } }
