-- spool.json: the exact codec. lua-cjson serves as an oracle on documents
-- where it is exact (no floats, no large integers, no empty arrays).
local json = require "spool.json"
local schema = require "spool.schema"
local cjson = require "cjson"

local function roundtrip(text)
  local v, err = json.decode(text)
  assert(err == nil, err)
  return json.encode(v)
end

describe("spool.json", function()
  describe("decode", function()
    it("keeps integers as integers and floats as floats", function()
      local v = json.decode('{"a": 1, "b": 1.0, "c": -0, "d": 2.5e3}')
      assert.are.equal("integer", math.type(v.a))
      assert.are.equal("float", math.type(v.b))
      assert.are.equal("integer", math.type(v.c))
      assert.are.equal(2500.0, v.d)
    end)

    it("keeps 64-bit integers exactly", function()
      local v = json.decode("[9007199254740993, -9223372036854775808]")
      assert.are.equal(9007199254740993, v[1])
      assert.are.equal(math.mininteger, v[2])
    end)

    it("keeps an integer past 64 bits exactly, as json.raw of its digits",
      function()
      local text = '{"id":123456789012345678901,"neg":-99999999999999999999}'
      local v = json.decode(text)
      assert.are.equal("123456789012345678901", tostring(v.id))
      assert.are.equal("-99999999999999999999", tostring(v.neg))
      assert.are.equal(text, json.encode(v)) -- the same digits, not 1.2e+20
      assert.are.equal(json.raw("123456789012345678901"), v.id)
      assert.are_not.equal(json.raw("123456789012345678902"), v.id)
      assert.are.equal("integer", schema.type_of(v.id))
      assert.is_true(schema.check(v, { type = "object", properties = {
        id = { type = "integer", minimum = 0 } } }))
      -- The library's own encoded parts are no integer, and no error.
      assert.is_false((schema.check(json.raw('{"a":1}'), { type = "object",
        required = { "a" } })))
      -- A float with as many digits is still a double.
      assert.are.equal("float", math.type(json.decode("123456789012345678901.0")))
    end)

    it("represents null, and empty arrays apart from empty objects", function()
      local v = json.decode('{"x": null, "a": [], "o": {}}')
      assert.are.equal(json.null, v.x)
      assert.is_true(json.is_array(v.a))
      assert.is_false(json.is_array(v.o))
    end)

    it("returns nil and a positioned error for invalid JSON", function()
      local v, err = json.decode('{"a": 1,}')
      assert.is_nil(v)
      assert.are.equal("EJSON: line 1, column 8 (byte 7): trailing comma "
        .. "before '}'", err)
      assert.matches("invalid UTF%-8", select(2, json.decode('"\255"')))
      assert.matches("empty input", select(2, json.decode("")))
    end)

    it("refuses a number too large for a double, naming where", function()
      -- decoded, it would be an infinity that encode then refuses
      for _, text in ipairs { "1e999", '{"wait_ms": 1e400}', "[-2e308]" } do
        local v, err = json.decode(text)
        assert.is_nil(v)
        assert.matches("^EJSON: line 1, column %d+ %(byte %d+%): number out "
          .. "of range", err)
      end
      assert.matches("%(byte 12%)", select(2, json.decode('{"wait_ms": 1e400}')))
      assert.are.equal(0.0, json.decode("1e-400"))
      local extracted = json._extract('{"a": 1e999}')
      assert.are.equal(json.null, extracted[1].value.a)
      assert.matches("too large for a double", extracted[1].repairs[1])
    end)

    it("builds containers of every size, nested, whole and in order",
      function()
        -- Members are held on the stack and a container's table made at
        -- its end (past 16 members, as they come): every size either
        -- side of that, at every depth, keeps every member in its place.
        for _, n in ipairs { 0, 1, 2, 15, 16, 17, 31, 32, 33, 100, 5000 } do
          local arr, obj = {}, {}
          for i = 1, n do
            arr[i] = string.format('{"i": %d, "l": [%d, "s%d"]}', i, i, i)
            obj[i] = string.format('"k%d": [%d]', i, i)
          end
          local doc = string.format('{"arr": [%s], "obj": {%s}, "after": 1}',
            table.concat(arr, ", "), table.concat(obj, ", "))
          local v = assert(json.decode(doc))
          assert.are.equal(n, #v.arr)
          assert.is_true(json.is_array(v.arr))
          assert.is_false(json.is_array(v.obj))
          assert.are.equal(1, v.after)
          for i = 1, n do
            assert.are.equal(i, v.arr[i].i)
            assert.are.same({ i, "s" .. i }, { v.arr[i].l[1], v.arr[i].l[2] })
            assert.is_true(json.is_array(v.arr[i].l))
            assert.are.equal(i, v.obj["k" .. i][1])
          end
        end
        -- A key given twice keeps its last value, whatever the size.
        for _, n in ipairs { 2, 16, 40 } do
          local members = {}
          for i = 1, n do
            members[i] = string.format('"k%d": %d', i % 3, i)
          end
          local v = json.decode("{" .. table.concat(members, ", ") .. "}")
          for k = 0, 2 do
            local last
            for i = 1, n do
              if i % 3 == k then last = i end
            end
            assert.are.equal(last, v["k" .. k])
          end
        end
        -- As deep as allowed, with members held at every level.
        local depth = 500
        local doc = string.rep('{"a": 1, "b": [2, 3], "c": ', depth) .. "0"
          .. string.rep("}", depth)
        local v = assert(json.decode(doc))
        for _ = 1, depth do
          assert.are.equal(1, v.a)
          assert.are.same({ 2, 3 }, { v.b[1], v.b[2] })
          v = v.c
        end
        assert.are.equal(0, v)
        -- A million members in one array.
        local big = assert(json.decode("[" .. string.rep("7,", 999999)
          .. "7]"))
        assert.are.equal(1000000, #big)
        assert.are.equal(7, big[1000000])
      end)

    -- Leaves tables whose finalizers run `use` (json work of their own),
    -- for the collector to find while the next call works.
    local function litter(use)
      for _ = 1, 200 do
        setmetatable({}, { __gc = use })
      end
    end

    -- A JSON array of n records {"i": i, "s": ["x", {"y": i}]}.
    local function records(n)
      local items = {}
      for i = 1, n do
        items[i] = string.format('{"i": %d, "s": ["x", {"y": %d}]}', i, i)
      end
      return "[" .. table.concat(items, ",") .. "]"
    end

    it("decodes in a finalizer that runs while it decodes", function()
      -- Making a table may run a finalizer; one that decodes too must not
      -- take the first decode's place (it once read out of bounds).
      local inner = 0
      local function use()
        local v = json.decode('{"a": [1, 2, {"b": [3]}], "c": "d"}')
        inner = inner + (v.a[3].b[1] == 3 and 1 or 0)
      end
      local doc = records(2000)
      for _ = 1, 20 do
        litter(use)
        local v = assert(json.decode(doc))
        assert.are.equal(2000, #v)
        for i = 1, 2000, 97 do
          assert.are.equal(i, v[i].i)
          assert.are.equal(i, v[i].s[2].y)
        end
      end
      collectgarbage()
      assert.is_true(inner > 0, "the finalizers ran")
    end)

    it("encodes and extracts in finalizers that run meanwhile", function()
      -- An object of over 32 keys makes a Lua value as it is encoded (and
      -- extraction makes the values it reads): a finalizer that runs then
      -- and uses json must not write into the first call's output.
      local inner = 0
      local function use()
        local text = json.encode({ z = json.array { 1, 2 } })
        local found = json._extract('x {"q": 1} y')
        inner = inner + ((text == '{"z":[1,2]}' and found[1].value.q == 1)
          and 1 or 0)
      end
      local wide = {}
      for i = 1, 40 do
        wide["k" .. i] = { i, { deep = ("v"):rep(i) } }
      end
      local want = json.encode(wide)
      local text = "Here: " .. records(300) .. " done"
      for _ = 1, 30 do
        litter(use)
        local list = {}
        for i = 1, 50 do
          list[i] = wide
        end
        assert.are.equal("[" .. want:rep(50, ",") .. "]",
          json.encode(json.array(list)))
        litter(use)
        local found = json._extract(text)
        assert.are.equal(300, #found[1].value)
        assert.are.equal(300, found[1].value[300].s[2].y)
      end
      collectgarbage()
      assert.is_true(inner > 0, "the finalizers ran")
    end)

    it("agrees with lua-cjson where lua-cjson is exact", function()
      local docs = {
        '{"name": "caf\\u00e9", "tags": ["a", "b"], "ok": true}',
        '[{"id": "x1", "n": 3}, {"id": "x2", "n": -7}]',
        '"line\\nbreak \\"quoted\\" \\\\ slash\\/"',
        '{"nested": {"deeper": {"deepest": [1, 2, [3, [4]]]}}}',
      }
      for _, doc in ipairs(docs) do
        local mine, theirs = json.decode(doc), cjson.decode(doc)
        assert.are.same(theirs, mine)
      end
    end)
  end)

  describe("encode", function()
    it("round-trips documents byte for byte in canonical form", function()
      for _, text in ipairs {
        '{"a":1,"b":[true,false,null],"c":{"d":"e"}}',
        '[1.0,0.1,-0.0,1e+300,123456789012345678]',
        '{"empty_array":[],"empty_object":{}}',
        '"\\u0001 tab\\t newline\\n unicode \u{1F600}"',
      } do
        assert.are.equal(text, roundtrip(text))
      end
    end)

    it("writes object keys in sorted order, so output is deterministic", function()
      assert.are.equal('{"a":1,"b":2,"c":3}', json.encode({ c = 3, a = 1, b = 2 }))
    end)

    it("writes an object of more keys than half Lua's stack limit",
      function()
      local big = {}
      for i = 1, 600000 do
        big["k" .. i] = i
      end
      local text = json.encode(big)
      assert.are.equal('{"k1":1,"k10":10,', text:sub(1, 17))
      assert.are.equal(600000, select(2, text:gsub('"k%d+":', "")))
    end)

    it("writes doubles that read back exactly", function()
      for _, x in ipairs { 0.1, 1 / 3, 2 ^ 53 + 0.0, 6.02214076e23, 5e-324 } do
        assert.are.equal(x, json.decode(json.encode(x)))
      end
    end)

    it("writes each double as the shortest of %.15g, %.16g, %.17g that "
      .. "reads back, whole numbers included", function()
      local function reference(x)
        local text
        for prec = 15, 17 do
          text = string.format("%." .. prec .. "g", x)
          if tonumber(text) == x then
            break
          end
        end
        return text:find("[.e]") and text or text .. ".0"
      end
      local cases = { 0.0, -0.0, 1.0, -1.0, 1e15 - 1, -(1e15 - 1), 1e15,
                      -1e15, 2.0 ^ 53, 2.0 ^ 63, -2.0 ^ 63, 0.5, 123.25 }
      math.randomseed(7)
      for _ = 1, 3000 do
        local whole = math.random(-10 ^ math.random(0, 16), 10 ^ 16) + 0.0
        cases[#cases + 1] = whole
        cases[#cases + 1] = whole / 8
        cases[#cases + 1] = whole * 1e3
      end
      for _, x in ipairs(cases) do
        assert.are.equal(reference(x), json.encode(x))
      end
      assert.are.equal("-0.0", json.encode(-0.0))
    end)

    it("escapes what must be escaped wherever it falls in a string",
      function()
      local function reference(s)
        local named = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b",
                        ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r",
                        ["\t"] = "\\t" }
        return '"' .. s:gsub('[%c"\\]', function(c)
          if c == "\127" then
            return c
          end
          return named[c] or string.format("\\u%04x", c:byte())
        end) .. '"'
      end
      for _, special in ipairs { '"', "\\", "\n", "\1", "\31", "\127", "é",
                                 "\u{10FFFF}" } do
        for at = 0, 20 do
          local s = ("x"):rep(at) .. special .. ("y"):rep(20 - at)
          assert.are.equal(reference(s), json.encode(s))
        end
      end
      assert.matches("invalid UTF%-8", select(2, pcall(json.encode,
        ("a"):rep(9) .. "\255")))
    end)

    it("writes objects of any key count, with integer keys refused "
      .. "wherever they fall", function()
      for _, n in ipairs { 1, 31, 32, 33, 64 } do
        local t, keys = {}, {}
        for i = 1, n do
          t["k" .. i] = i
          keys[i] = "k" .. i
        end
        table.sort(keys)
        local parts = {}
        for i, k in ipairs(keys) do
          parts[i] = string.format('"%s":%s', k, k:sub(2))
        end
        assert.are.equal("{" .. table.concat(parts, ",") .. "}",
          json.encode(t))
        t[n + 100] = true -- in the hash part, after some string keys
        assert.matches("both string and integer",
          select(2, pcall(json.encode, { inner = t })))
      end
    end)

    it("does not escape slashes and keeps UTF-8 as is", function()
      assert.are.equal('"a/b é"', json.encode("a/b é"))
    end)

    it("encodes json.array() as [] and an empty table as {}", function()
      assert.are.equal("[]", json.encode(json.array()))
      assert.are.equal("{}", json.encode({}))
      assert.are.equal("[1,2]", json.encode(json.array({ 1, 2 })))
    end)

    it("names the path of a value it cannot encode", function()
      local bad = { tools = { { run = print } } }
      local ok, err = pcall(json.encode, bad)
      assert.is_false(ok)
      assert.matches("cannot encode a function at %$%.tools%[1%]%.run", err)
      assert.matches("invalid UTF%-8", select(2, pcall(json.encode, "\255")))
      assert.matches("NaN", select(2, pcall(json.encode, 0 / 0)))
      assert.matches("sparse", select(2, pcall(json.encode, { 1, nil, 3 })))
      assert.matches("both string and integer",
        select(2, pcall(json.encode, { 1, x = 2 })))
    end)

    it("names a sparse array by its own path, whatever was encoded before",
      function()
      -- A long key encoded earlier, then collected: a path entry left from
      -- that call must not be read (it was, after the free).
      do
        json.encode({ a = { [("k"):rep(60) .. math.random()] = 1 } })
      end
      collectgarbage()
      collectgarbage()
      assert.matches("sparse array %(it has holes%) at %$%.a$",
        select(2, pcall(json.encode, { a = { [1] = 1, [3] = 3 } })))
      local deep = { [1] = 1, [3] = 3 }
      for i = 1, 5 do
        deep = { ["key" .. i] = deep }
      end
      local core = require "spool.core"
      local id, now = "t_" .. core.random_id(), core.time()
      for _ = 1, 3 do
        local ok, err, code = core.store_append { thread = id, agent = "a",
          expected_seq = 0, status = "done", owner = "me", epoch = 1,
          now = now, events = { { seq = 1, step = 0, type = "input",
            at = now, data = deep } } }
        assert.is_nil(ok)
        assert.are.equal("EINVAL", code)
        assert.matches("sparse array %(it has holes%) at "
          .. "%$%.key5%.key4%.key3%.key2%.key1$", err)
      end
    end)

    it("splices json.raw text as it is, and checks it once", function()
      local part = json.raw('{"b": [1, 2.0]}')
      assert.are.equal('{"a":{"b": [1, 2.0]},"c":[{"b": [1, 2.0]},1]}',
        json.encode({ a = part, c = json.array({ part, 1 }) }))
      assert.are.equal("null", json.encode(json.raw("null")))
      local ok, err = pcall(json.raw, '{"b": [1,}')
      assert.is_false(ok)
      assert.matches("not one JSON value: line 1, column 10", err)
      assert.is_false(pcall(json.raw, "1 2"))
      assert.matches("cannot encode a userdata at %$%.f",
        select(2, pcall(json.encode, { f = io.stdout })))
    end)

    it("refuses cycles instead of recursing forever", function()
      local t = {}
      t.self = t
      assert.matches("too deep", select(2, pcall(json.encode, t)))
    end)
  end)
end)
