-- spool.base.cron: five-field cron expressions, in UTC (private).
--
--   local spec, err = cron.parse("0 3 * * 1-5")
--   cron.matches(spec, t)              -- t: seconds since the epoch
--   cron.latest(spec, now, window)     -- the latest matching minute in
--                                         (now - window, now], or nil
--
-- Fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12),
-- day of week (0-7, 0 and 7 Sunday). Each is `*`, a number, a range
-- `a-b`, any of those with a step `/n`, or a list of them `a,b-c/2`.
-- Names (JAN, MON) and `@daily`-style shorthands are not read. As in
-- Vixie cron, when both day fields are restricted (neither begins with
-- `*`), a day matching either matches.

local M = {}

local FIELDS = {
  { name = "minute", lo = 0, hi = 59 },
  { name = "hour", lo = 0, hi = 23 },
  { name = "day of month", lo = 1, hi = 31 },
  { name = "month", lo = 1, hi = 12 },
  { name = "day of week", lo = 0, hi = 7 },
}

-- One field: the set of values it allows, or nil and why.
local function field(text, f)
  local set = {}
  for part in (text .. ","):gmatch("([^,]*),") do
    local range, step = part:match("^([^/]+)/(%d+)$")
    range, step = range or part, tonumber(step) or 1
    local lo, hi
    if range == "*" then
      lo, hi = f.lo, f.hi
    else
      local a, b = range:match("^(%d+)%-(%d+)$")
      lo = tonumber(a or range:match("^%d+$"))
      hi = tonumber(b) or (part:find("/") and f.hi or lo)
    end
    if not lo or not hi or lo < f.lo or hi > f.hi or lo > hi or step < 1 then
      return nil, string.format("%s field '%s' is not a value, range or "
        .. "step in %d-%d", f.name, part, f.lo, f.hi)
    end
    for v = lo, hi, step do
      set[v] = true
    end
  end
  return set
end


function M.parse(expr)
  if type(expr) ~= "string" then
    return nil, "a cron expression is a string of five fields"
  end
  local parts = {}
  for p in expr:gmatch("%S+") do
    parts[#parts + 1] = p
  end
  if #parts ~= 5 then
    return nil, string.format("'%s' has %d fields, not the five of "
      .. "'minute hour day-of-month month day-of-week'", expr, #parts)
  end
  -- (Vixie cron counts a day field that begins with * as unrestricted.)
  local spec = { any_dom = parts[3]:sub(1, 1) == "*",
                 any_dow = parts[5]:sub(1, 1) == "*" }
  for i, f in ipairs(FIELDS) do
    local set, err = field(parts[i], f)
    if not set then
      return nil, err
    end
    spec[i] = set
  end
  spec[5][0] = spec[5][0] or spec[5][7]
  return spec
end


function M.matches(spec, t)
  local d = os.date("!*t", t)
  if not (spec[1][d.min] and spec[2][d.hour] and spec[4][d.month]) then
    return false
  end
  local dom, dow = spec[3][d.day] == true, spec[5][d.wday - 1] == true
  if spec.any_dom or spec.any_dow then
    return dom and dow
  end
  return dom or dow
end


function M.latest(spec, now, window)
  local minute = now - now % 60
  for t = minute, now - window + 1, -60 do
    if M.matches(spec, t) then
      return t
    end
  end
  return nil
end


return M
