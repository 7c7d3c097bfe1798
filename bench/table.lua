-- Turns bench/agents' result lines into one Markdown table: per workload
-- and contender, the median of the repetitions, and spool's figures as
-- ratios to the floor measured in the same run.
--
--   spool lua bench/table.lua RESULTS.jsonl
--
-- Each line: { workload, contender, tool_steps, db_bytes?, ...the
-- driver's JSON line }.
local json = require "spool.json"

local rows, order = {}, {}
for line in io.lines(arg[1]) do
  local r = json.decode(line)
  if type(r) == "table" and r.workload then
    local key = r.workload .. "\0" .. r.contender
    if not rows[key] then
      rows[key] = { workload = r.workload, contender = r.contender, reps = {} }
      order[#order + 1] = key
    end
    table.insert(rows[key].reps, r)
  end
end

local function median(list, f)
  local v = {}
  for _, r in ipairs(list) do
    local x = f(r)
    if x then
      v[#v + 1] = x
    end
  end
  if #v == 0 then
    return nil
  end
  table.sort(v)
  return v[(#v + 1) // 2]
end

local function fig(r)
  local steps = math.max(1, r.tool_steps or (r.runs * r.steps))
  return {
    cpu_us = (r.cpu_user_s + r.cpu_sys_s) / steps * 1e6,
    wall_s = r.wall_s,
    wall_us = r.wall_s / steps * 1e6,
    rss_mib = r.max_rss_kb and r.max_rss_kb / 1024,
    -- (peak - before) / N, where N runs were in flight at once
    per_run_kib = (r.concurrency or 1) > 1 and r.max_rss_kb and r.rss_before_kb
      and (r.max_rss_kb - r.rss_before_kb) / r.concurrency or nil,
    bytes = r.db_bytes and r.db_bytes / steps,
    failed = (r.failed or 0) + (r.bad_answers or 0) + (r.timed_out or 0),
  }
end

local function fmt(x, pat)
  return x and string.format(pat, x) or "–"
end

print("| workload | contender | CPU µs / tool step | wall s | peak RSS MiB "
  .. "| KiB / run in flight | DB bytes / step | failed | CPU vs floor "
  .. "| wall vs floor |")
print("|---|---|---|---|---|---|---|---|---|---|")
for _, key in ipairs(order) do
  local row = rows[key]
  local m = {}
  for _, k in ipairs { "cpu_us", "wall_s", "rss_mib", "per_run_kib", "bytes",
                       "failed" } do
    m[k] = median(row.reps, function(r) return fig(r)[k] end)
  end
  local floor = rows[row.workload .. "\0floor"]
  local f = {}
  if floor then
    f.cpu_us = median(floor.reps, function(r) return fig(r).cpu_us end)
    f.wall_s = median(floor.reps, function(r) return fig(r).wall_s end)
  end
  print(string.format("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |",
    row.workload, row.contender, fmt(m.cpu_us, "%.0f"), fmt(m.wall_s, "%.2f"),
    fmt(m.rss_mib, "%.1f"), fmt(m.per_run_kib, "%.0f"), fmt(m.bytes, "%.0f"),
    fmt(m.failed, "%d"),
    f.cpu_us and m.cpu_us and string.format("%.2f×", m.cpu_us / f.cpu_us)
      or "–",
    f.wall_s and m.wall_s and string.format("%.2f×", m.wall_s / f.wall_s)
      or "–"))
end
