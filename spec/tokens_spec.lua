-- Token counts: the sums a window makes at every step (in C,
-- engine/src/lua/l_window.c) are the sums of spool.tokens.of_bytes; and
-- the list of a window's messages made there.
local core = require "spool.core"
local tokens = require "spool.tokens"

-- The rule, as written in Lua.
local function of_sizes_lua(sizes, factor)
  local n = 0
  for _, b in ipairs(sizes) do
    n = n + tokens.of_bytes(b, factor)
  end
  return n
end

local function random_sizes(rng)
  local sizes = {}
  for i = 1, rng(0, 6) do
    local pick = rng(1, 4)
    sizes[i] = pick == 1 and 0 or pick == 2 and rng(1, 7)
      or pick == 3 and rng(8, 5000) or rng(5000, 10 ^ 9)
  end
  return sizes
end

describe("token sums", function()
  it("are each size's of_bytes, summed, at random sizes and factors", function()
    local seed = os.time()
    local rng = math.random
    math.randomseed(seed)
    for round = 1, 2000 do
      local sizes = random_sizes(rng)
      -- Factors as tokens.factor makes them: a ratio of two counts,
      -- clamped, so with all their binary digits.
      local factor = math.min(tokens.MAX_FACTOR, math.max(tokens.MIN_FACTOR,
        rng(1, 100000) / rng(1, 100000)))
      if round % 7 == 0 then
        factor = nil
      end
      assert.are.equal(of_sizes_lua(sizes, factor),
        tokens.of_sizes(sizes, factor),
        string.format("seed %d, round %d", seed, round))
    end
  end)

  it("of a window's units are their overheads and sizes", function()
    local units = {
      { overhead = 4, bytes = { 10, 0, 3 } },
      { overhead = 12, bytes = {} },
      { overhead = 8, bytes = { 4001 } },
    }
    local factor = 1.37
    local want = 0
    for _, u in ipairs(units) do
      want = want + u.overhead + of_sizes_lua(u.bytes, factor)
    end
    local plain = 0
    for _, u in ipairs(units) do
      plain = plain + u.overhead + of_sizes_lua(u.bytes, 1)
    end
    local at_factor, at_one = core.units_tokens(units, factor)
    assert.are.equal(want, at_factor)
    assert.are.equal(plain, at_one, "and at factor 1, in the same pass")
    assert.is_nil(units[1].tokens, "counted without `set`, nothing is stored")
    assert.are.equal(want, (core.units_tokens(units, factor, true)))
    assert.are.equal(4 + 4 + 0 + 2, units[1].tokens)
    assert.are.equal(12, units[2].tokens)
    assert.are.equal(8 + 1371, units[3].tokens)
    assert.are.same({ 0, 0 }, { core.units_tokens({}, factor) })
  end)

  it("wrap past the largest integer as Lua's sums do", function()
    local sizes = { 1.5e19, 1.5e19, 1.5e19 }
    assert.are.equal(of_sizes_lua(sizes, 1), tokens.of_sizes(sizes, 1))
    assert.are.equal(of_sizes_lua(sizes, 1),
      core.units_tokens({ { overhead = 0, bytes = sizes } }, 1))
  end)

  it("name what is wrong with what they are given", function()
    local ok, err = pcall(tokens.of_sizes, { 1, "x" }, 1)
    assert.is_false(ok)
    assert.matches("size 2 is not a number of bytes", err)
    ok, err = pcall(tokens.of_sizes, { 2 ^ 70 }, 1)
    assert.is_false(ok)
    assert.matches("size 1 makes no token count", err)
    ok, err = pcall(tokens.of_sizes, { 8 }, 0 / 0)
    assert.is_false(ok)
    assert.matches("size 1 makes no token count", err)
    ok, err = pcall(core.units_tokens, { { overhead = 4 } }, 1)
    assert.is_false(ok)
    assert.matches("unit 1 has no sizes", err)
    ok, err = pcall(core.units_tokens, { { bytes = {} } }, 1)
    assert.is_false(ok)
    assert.matches("unit 1 has no overhead", err)
    ok, err = pcall(core.units_tokens, { 5 }, 1)
    assert.is_false(ok)
    assert.matches("unit 1 is not a table", err)
  end)
end)

describe("a window's messages", function()
  it("are listed unit by unit, in order", function()
    local a, b, c, d = { role = "user" }, { role = "assistant" },
      { role = "tool" }, { role = "tool" }
    local units = { { messages = { a } }, { messages = {} },
                    { messages = { b, c, d } } }
    local list = core.units_messages(units)
    assert.are.equal(4, #list)
    for i, m in ipairs { a, b, c, d } do
      assert.are.equal(m, list[i], "the message itself, not a copy")
    end
    assert.are_not.equal(units[3].messages, core.units_messages(units),
      "a new list each time")
    assert.are.same({}, core.units_messages({}))
    assert.matches("unit 2 has no messages", select(2,
      pcall(core.units_messages, { { messages = {} }, {} })))
    assert.matches("unit 1 is not a table", select(2,
      pcall(core.units_messages, { "x" })))
  end)
end)
