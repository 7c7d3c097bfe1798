-- spool.schema: parameter shorthand and checks with actionable messages.
local schema = require "spool.schema"
local json = require "spool.json"

describe("spool.schema", function()
  describe("params", function()
    it("expands the shorthand into JSON Schema", function()
      local s = schema.params({ id = "string", note = "string?",
                                tags = "string[]",
                                n = { type = "integer", minimum = 1 } }, "t")
      assert.are.equal("object", s.type)
      assert.is_false(s.additionalProperties)
      assert.are.same({ "id", "n", "tags" }, s.required)
      assert.are.same({ type = "array", items = { type = "string" } },
        s.properties.tags)
      assert.are.same({ type = "integer", minimum = 1 }, s.properties.n)
    end)

    it("takes an object schema as it is", function()
      local full = { type = "object", properties = { a = { type = "string" } } }
      assert.are.equal(full, schema.params(full, "t"))
    end)

    it("marks table properties optional with optional = true", function()
      local s = schema.params({ r = { enum = { "a" }, optional = true } }, "t")
      assert.is_nil(s.required)
      assert.are.same({ enum = { "a" } }, s.properties.r)
    end)

    it("encodes an empty parameter list as an object with no properties", function()
      assert.are.equal('{"additionalProperties":false,"properties":{},'
        .. '"type":"object"}', json.encode(schema.params(nil, "t")))
    end)

    it("rejects unknown type names, naming the tool", function()
      local ok, err = pcall(schema.params, { a = "strin" }, "tool 'x'")
      assert.is_false(ok)
      assert.are.equal("tool 'x': parameter 'a' has unknown type 'strin'", err)
    end)
  end)

  describe("check", function()
    local s = schema.params({
      tag = "string",
      count = { type = "integer", minimum = 1, maximum = 10 },
      mode = { enum = { "fast", "safe" }, optional = true },
      labels = { type = "array", items = { type = "string" }, maxItems = 2,
                 optional = true },
      nested = { type = "object", properties = { x = { type = "number" } },
                 required = { "x" }, optional = true },
      name = { type = "string", minLength = 2, maxLength = 5, optional = true },
    }, "t")

    local function problems(v)
      local ok, err = schema.check(v, s, "deploy")
      return ok and "ok" or err
    end

    it("accepts a valid value", function()
      assert.are.equal("ok", problems({ tag = "v1", count = 3 }))
      assert.are.equal("ok", problems({ tag = "v1", count = 3.0 }))
    end)

    it("names the path and the problem", function()
      assert.are.equal("deploy.tag: expected string, got integer",
        problems({ tag = 1, count = 1 }))
      assert.are.equal("deploy.count: is required", problems({ tag = "a" }))
      assert.are.equal("deploy.count: expected integer, got number",
        problems({ tag = "a", count = 1.5 }))
      assert.are.equal("deploy.count: must be <= 10",
        problems({ tag = "a", count = 11 }))
      assert.are.equal('deploy.mode: must be one of "fast", "safe", got "slow"',
        problems({ tag = "a", count = 1, mode = "slow" }))
      assert.are.equal("deploy.labels[2]: expected string, got boolean",
        problems({ tag = "a", count = 1, labels = { "x", true } }))
      assert.are.equal("deploy.labels: must have at most 2 items",
        problems({ tag = "a", count = 1, labels = json.array { "a", "b", "c" } }))
      assert.are.equal("deploy.nested.x: is required",
        problems({ tag = "a", count = 1, nested = {} }))
      assert.are.equal("deploy.extra: is not a known parameter",
        problems({ tag = "a", count = 1, extra = 1 }))
      assert.are.equal("deploy.name: must have at least 2 characters",
        problems({ tag = "a", count = 1, name = "é" }))
    end)

    it("lists every problem at once", function()
      assert.are.equal("deploy.count: is required; deploy.tag: expected "
        .. "string, got null", problems({ tag = json.null }))
    end)

    it("checks const, anyOf and oneOf", function()
      local alt = { anyOf = { { type = "string" }, { type = "integer" } } }
      assert.is_true(schema.check("a", alt))
      assert.is_true(schema.check(1, alt))
      assert.are.equal("value: matches none of the allowed forms",
        select(2, schema.check(true, alt)))
      local one = { oneOf = { { type = "number" }, { type = "integer" } } }
      assert.are.equal("value: matches more than one allowed form",
        select(2, schema.check(1, one)))
      assert.are.equal('value: must be "x"',
        select(2, schema.check("y", { const = "x" })))
    end)
  end)
end)

describe("spool.schema pattern", function()
  local function fits(v, re)
    return (schema.check(v, { type = "string", pattern = re }))
  end

  it("checks the cheap subset of regular expressions", function()
    assert.is_true(fits("12345", "^[0-9]+$"))
    assert.is_false(fits("12a45", "^[0-9]+$"))
    assert.is_true(fits("v1.20", "^v\\d+\\.\\d+$"))
    assert.is_false(fits("v1x20", "^v\\d+\\.\\d+$"))
    assert.is_true(fits("EUR", "^[A-Z]{3}$"))
    assert.is_false(fits("EURO", "^[A-Z]{3}$"))
    assert.is_true(fits("ab", "^a{1,3}b$"))
    assert.is_false(fits("aaaab", "^a{1,3}b$"))
    assert.is_true(fits("id_7-x", "^[\\w-]+$"))
    assert.is_true(fits("xx@yy", "@"))
    assert.are.equal("deploy.tag: must match the pattern ^v\\d+$",
      select(2, schema.check("x", { type = "string", pattern = "^v\\d+$" },
        "deploy.tag")))
  end)

  it("does not check what it cannot translate, and says why", function()
    assert.is_nil(schema.translate_pattern("^(a|b)$"))
    assert.matches("alternation", select(2, schema.translate_pattern("a|b")))
    assert.is_true(fits("zzz", "^(a|b)$")) -- not checked, never a false "no"
  end)
end)

describe("spool.schema compile", function()
  local r = math.random
  local TYPES = { "integer", "number", "string", "boolean", "null", "array",
                  "object" }
  local STRINGS = { "", "a", "abc", "bx", "éé", "cab", "12" }
  local KEYS = { "a", "b", "c", "d" }

  local function value(depth)
    local k = r(1, depth < 3 and 10 or 7)
    if k == 1 then
      return r(-6, 6)
    elseif k == 2 then
      return r(-60, 60) / 10
    elseif k == 3 then
      return STRINGS[r(#STRINGS)]
    elseif k == 4 then
      return r() < 0.5
    elseif k == 5 then
      return json.null
    elseif k == 6 then
      return r() < 0.5 and 2.0 or json.decode("123456789012345678901234567")
    elseif k == 7 then
      return {}
    elseif k == 8 then
      local a = json.array()
      for i = 1, r(0, 3) do
        a[i] = value(depth + 1)
      end
      return a
    end
    local o = {}
    for _, key in ipairs(KEYS) do
      if r() < 0.5 then
        o[key] = value(depth + 1)
      end
    end
    return o
  end

  local function gen(depth)
    local s = {}
    if r() < 0.85 then
      s.type = r() < 0.15 and { TYPES[r(#TYPES)], TYPES[r(#TYPES)] }
        or TYPES[r(#TYPES)]
    end
    local t = type(s.type) == "table" and s.type[1] or s.type
      or TYPES[r(#TYPES)]
    if r() < 0.08 then
      s.enum = { value(2), value(2), 3, "a" }
    end
    if r() < 0.04 then
      s.const = value(2)
    end
    if t == "integer" or t == "number" then
      for _, k in ipairs { "minimum", "maximum", "exclusiveMinimum",
          "exclusiveMaximum" } do
        if r() < 0.25 then
          s[k] = r(-5, 5) + (r() < 0.3 and 0.5 or 0)
        end
      end
    elseif t == "string" then
      if r() < 0.3 then s.minLength = r(0, 3) end
      if r() < 0.3 then s.maxLength = r(0, 3) end
      if r() < 0.3 then
        s.pattern = ({ "^a", "b$", "^[a-c]+$", "x|y", "^%d+$", "[0-9]" })[r(6)]
      end
    elseif t == "array" and depth < 3 then
      if r() < 0.7 then s.items = gen(depth + 1) end
      if r() < 0.3 then s.minItems = r(0, 2) end
      if r() < 0.3 then s.maxItems = r(0, 2) end
    elseif t == "object" and depth < 3 then
      if r() < 0.8 then
        s.properties = {}
        for _, key in ipairs(KEYS) do
          if r() < 0.5 then
            s.properties[key] = r() < 0.1 and true or gen(depth + 1)
          end
        end
      end
      if r() < 0.5 then
        s.required = {}
        for _, key in ipairs(KEYS) do
          if r() < 0.4 then s.required[#s.required + 1] = key end
        end
      end
      local ap = r(1, 4)
      s.additionalProperties = ap == 1 and false or ap == 2 and true
        or ap == 3 and gen(depth + 1) or nil
    end
    if depth < 3 and r() < 0.1 then
      s[r() < 0.5 and "anyOf" or "oneOf"] = { gen(depth + 1), gen(depth + 1),
                                              r() < 0.3 and gen(depth + 1) or nil }
    end
    return s
  end

  it("gives check's verdict, on random schemas and values", function()
    local seed = os.time()
    math.randomseed(seed)
    local agreed, passed = 0, 0
    for round = 1, 3000 do
      local s = gen(1)
      local c = assert(schema.compile(s), "a well-formed schema compiles")
      for _ = 1, 8 do
        local v = value(1)
        local want = schema.check(v, s) == true
        assert.are.equal(want, c(v), string.format("seed %d, round %d: %s "
          .. "against %s", seed, round, json.encode(v), json.encode(s)))
        agreed = agreed + 1
        passed = passed + (want and 1 or 0)
      end
    end
    -- Both verdicts were exercised.
    assert.is_true(passed > agreed / 20 and passed < agreed * 19 / 20)
  end)

  it("leaves to check the schemas it does not take", function()
    assert.is_nil(schema.compile({ type = "integer", minimum = "3" }))
    assert.is_nil(schema.compile({ type = "object", properties = "x" }))
    assert.is_nil(schema.compile({ type = 5 }))
    assert.is_nil(schema.compile({ type = "object", properties = {
      a = { type = "array", items = { maxItems = {} } } } }))
    local loop = { type = "object", properties = {} }
    loop.properties.self = loop
    assert.is_nil(schema.compile(loop))
    assert.is_function(schema.compile(true))
  end)
end)
