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
