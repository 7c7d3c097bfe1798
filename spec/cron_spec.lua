-- Cron expressions for schedules (spool.base.cron), in UTC.
local h = require "spec.support"
local cron = require "spool.base.cron"

-- Seconds since the epoch of a UTC date.
local function at(y, mo, d, h, mi)
  return os.time { year = y, month = mo, day = d, hour = h, min = mi,
                   sec = 0 } - os.time { year = 1970, month = 1, day = 1,
                   hour = 0, min = 0, sec = 0 }
end

describe("cron", function()
  it("reads values, ranges, steps and lists, and names what it cannot",
    function()
    local spec = assert(cron.parse("*/15 3,4 1-7 * 1"))
    assert.is_true(cron.matches(spec, at(2026, 12, 7, 3, 45))) -- a Monday
    assert.is_false(cron.matches(spec, at(2026, 12, 7, 3, 44)))
    assert.is_false(cron.matches(spec, at(2026, 12, 7, 5, 0)))
    for expr, why in pairs {
      ["* * * *"] = "has 4 fields",
      ["60 * * * *"] = "minute field '60'",
      ["* 24 * * *"] = "hour field '24'",
      ["* * 0 * *"] = "day of month field '0'",
      ["* * * 1-13 *"] = "month field '1-13'",
      ["* * * * MON"] = "day of week field 'MON'",
      ["5-1 * * * *"] = "minute field '5-1'",
      ["*/0 * * * *"] = "minute field '*/0'",
    } do
      local spec2, err = cron.parse(expr)
      assert.is_nil(spec2, expr)
      assert.matches(why, err, 1, true)
    end
  end)

  it("matches a day by either day field when both are set, as cron does",
    function()
    local spec = assert(cron.parse("0 0 13 * 5")) -- the 13th, or a Friday
    assert.is_true(cron.matches(spec, at(2026, 11, 13, 0, 0)))  -- Friday 13th
    assert.is_true(cron.matches(spec, at(2026, 12, 13, 0, 0)))  -- a Sunday
    assert.is_true(cron.matches(spec, at(2026, 12, 4, 0, 0)))   -- a Friday
    assert.is_false(cron.matches(spec, at(2026, 12, 5, 0, 0)))
    -- A day field beginning with * is unrestricted: every other day of
    -- the month that is a Monday, not every Monday.
    local odd_mondays = assert(cron.parse("0 0 */2 * 1"))
    assert.is_true(cron.matches(odd_mondays, at(2026, 12, 7, 0, 0)))
    assert.is_false(cron.matches(odd_mondays, at(2026, 12, 3, 0, 0)))
    assert.is_false(cron.matches(odd_mondays, at(2026, 12, 14, 0, 0)))
    local sunday = assert(cron.parse("0 0 * * 7"))
    assert.is_true(cron.matches(sunday, at(2026, 12, 6, 0, 0)))
  end)

  it("finds the latest slot within a window, and none beyond it", function()
    local nightly = assert(cron.parse("0 3 * * *"))
    local now = at(2026, 12, 5, 3, 40) + 17
    assert.are.equal(at(2026, 12, 5, 3, 0), cron.latest(nightly, now, 3600))
    assert.is_nil(cron.latest(nightly, now, 30 * 60)) -- 40 minutes late
    assert.is_nil(cron.latest(nightly, at(2026, 12, 5, 2, 59), 3600))
    local every = assert(cron.parse("* * * * *"))
    assert.are.equal(now - 17, cron.latest(every, now, 60))
  end)

  it("refuses a project whose schedule it cannot read, saying where",
    function()
    local dir = h.tmpdir()
    finally(function() h.remove(dir) end)
    for file, why in pairs {
      ['{ schedules = { nightly = { agent = "a", cron = "61 3 * * *" } } }'] =
        "schedules.nightly.cron: minute field '61'",
      ['{ schedules = { ["a b"] = { agent = "a", cron = "0 3 * * *" } } }'] =
        "a schedule's name is letters, digits, _ and -",
      ['{ schedules = { n = { cron = "0 3 * * *" } } }'] =
        "schedules.n needs agent",
      ['{ lease_ms = 5 }'] = "lease_ms must be a whole number",
    } do
      h.write_files(dir, { ["spool.lua"] = "return " .. file })
      local _, err, code = h.cli("--project " .. h.q(dir)
        .. " --db :memory: threads")
      assert.are.equal(1, code, file)
      assert.matches(why, err, 1, true)
    end
  end)
end)
