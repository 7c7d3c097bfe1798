-- spool.extract: finding and repairing the JSON in a model's reply.
local spool = require "spool"
local json = spool.json
local cjson = require "cjson"

-- The extracted value as canonical JSON, or "ERR <message>".
local function x(text, opts)
  local v, info = spool.extract(text, opts)
  if v == nil then
    return "ERR " .. info
  end
  return json.encode(v), info
end

local function repaired(text)
  local v, info = spool.extract(text)
  assert(v ~= nil, info)
  return info.repaired, info
end

describe("spool.extract", function()
  describe("strict JSON", function()
    local valid = {
      '{"a":2.3e100,"b":"str","c":null,"d":false,"e":[1,2,3]}',
      "  { \n } \t ", "[]", '[1,"hi",true,false,null,{},[]]', "0", "-0",
      "2300e-3", '"\\"\\\\\\/\\b\\f\\n\\r\\t"', '"\\u260E"', '"\\ud83d\\ude00"',
      '"★"', '"["', '"{a:b}"', '"/* foo */"', '"[1,2,3,]"',
      "12345678901234567890", '{"id": 9007199254740993}',
    }

    it("parses valid documents exactly as spool.json does, with no repair",
      function()
      for _, text in ipairs(valid) do
        local v, info = spool.extract(text)
        assert.is_false(info.repaired, text)
        assert.are.equal(json.encode(json.decode(text)), json.encode(v), text)
      end
    end)

    it("agrees with lua-cjson where lua-cjson is exact", function()
      for _, text in ipairs { '{"a":"b","c":[true,false,null]}',
                              '["x",{"y":"z"}]', '"caf\\u00e9"' } do
        assert.are.same(cjson.decode(text), (spool.extract(text)))
      end
    end)

    it("keeps every number's exact value", function()
      local v = spool.extract('Result: {"big": 9007199254740993, "f": 0.1, '
        .. '"i": 3}')
      assert.are.equal(9007199254740993, v.big)
      assert.are.equal(0.1, v.f)
      assert.are.equal("integer", math.type(v.i))
    end)
  end)

  describe("finding the value", function()
    it("finds it inside markdown fences", function()
      assert.are.equal('{"a":"b"}', x('```json\n{"a":"b"}\n```'))
      assert.are.equal('{"a":"b"}', x('```\n{"a":"b"}\n```'))
      assert.are.equal('{"a":"b"}', x('```{"a":"b"}```'))
      assert.are.equal('{"a":"b"}', x('Here it is:\n```json\n{"a":"b"}\n'))
      local _, info = x('Sure.\n```json\n{"a":1}\n```\nDone.')
      assert.is_true(info.fenced)
    end)

    it("finds it inside prose", function()
      assert.are.equal('{"ok":true}', x('The answer is {"ok": true}. Thanks!'))
      assert.are.equal('[1,2]', x('I think [1, 2] works best'))
      assert.are.equal('{"a":1}', x('{"a": 1}}]}')) -- closers left over
      assert.are.equal('{"a":1}', x('/* foo */ {"a": 1}'))
    end)

    it("takes the first object or array, and a scalar only when the text "
      .. "holds nothing else", function()
      assert.are.equal('{"a":1}', x('{"a":1} and then {"b":2}'))
      assert.are.equal('42', x('  42 \n'))
      assert.are.equal('"hi"', x('"hi"'))
      assert.are.equal('true', x('True'))
      assert.matches("^ERR EJSON: .*no JSON value", x("The answer is 42"))
      assert.matches("^ERR EJSON: .*no JSON value", x("Hello there"))
      assert.matches("^ERR EJSON: ", x(""))
    end)

    it("picks the candidate that fits the schema", function()
      local schema = { type = "object", required = { "tag" },
                       properties = { tag = { type = "string" } } }
      local v, info = spool.extract('First {"note": "x"}, then {"tag": "v2"}',
        { schema = schema })
      assert.are.same({ tag = "v2" }, v)
      assert.are.equal(2, info.candidates)
      local none, err = spool.extract('{"note": "x"}', { schema = schema })
      assert.is_nil(none)
      assert.are.equal("ESCHEMA: value.tag: is required", err)
    end)
  end)

  describe("repairs", function()
    local cases = {
      -- keys and strings
      { "{a:2}", '{"a":2}' },
      { "{2: 2}", '{"2":2}' },
      { "{'a':'foo'}", '{"a":"foo"}' },
      { "{“a”:“b”}", '{"a":"b"}' },
      { "{‘a’:‘b’}", '{"a":"b"}' },
      { "{'a':'foo\"bar'}", '{"a":"foo\\"bar"}' },
      { "{'a':'foo\\'bar'}", '{"a":"foo\'bar"}' },
      { '{a":"foo","b":"bar"}', '{"a":"foo","b":"bar"}' },
      { '{"a":foo","b":"bar"}', '{"a":"foo","b":"bar"}' },
      { "{message: hello world}", '{"message":"hello world"}' },
      { "{greeting: hello world\nnext: \"line\"}",
        '{"greeting":"hello world","next":"line"}' },
      { "{url: https://www.example.com/, \"id\": 2}",
        '{"id":2,"url":"https://www.example.com/"}' },
      -- commas
      { "[1,2,3,]", "[1,2,3]" },
      { '{"a":2  ,  }', '{"a":2}' },
      { "[,1,2,3]", "[1,2,3]" },
      { '{"a":1,,"b":2}', '{"a":1,"b":2}' },
      { '{"array": [{}{}]}', '{"array":[{},{}]}' },
      { "[1\n2\n3]", "[1,2,3]" },
      { '{"a":2\n"b":3\nc:4}', '{"a":2,"b":3,"c":4}' },
      { '[{"i":1{"i":2}]', '[{"i":1},{"i":2}]' },
      -- colons and missing values
      { '{"a" "b"}', '{"a":"b"}' },
      { '{"a" 2}', '{"a":2}' },
      { '{"a":}', '{"a":null}' },
      { '{"a":,"b":2}', '{"a":null,"b":2}' },
      -- backticks as quotes; a missing colon before a literal; a comma
      -- after the whole value
      { "{`k`: `v`}", '{"k":"v"}' },
      { '{"a" true, "b" null}', '{"a":true,"b":null}' },
      { "42,", "42" },
      { '"hello",', '"hello"' },
      -- spaces that are not ASCII, between tokens
      { '\u{FEFF}{\u{200B}"a":\u{2003}1,\u{2002}"b"\u{180E}:2\u{2060}}',
        '{"a":1,"b":2}' },
      { '[1,\u{2028}2,\u{3000}3\u{202F}]', "[1,2,3]" },
      -- cut off by max_tokens
      { "[", "[]" },
      { '{"a":{"b":2}', '{"a":{"b":2}}' },
      { "[[1,2,3,", "[[1,2,3]]" },
      { '{"foo":"bar', '{"foo":"bar"}' },
      { '{"text":"Hello Sergey,I hop', '{"text":"Hello Sergey,I hop"}' },
      { '{"foo"', '{"foo":null}' },
      { '{"a":tr', '{"a":true}' },
      { '{"a":fals', '{"a":false}' },
      { '[1,nu', '[1,null]' },
      { '{"a":-', '{"a":0}' },
      { '{"foo":"bar\\u20', '{"foo":"bar"}' },
      -- brackets
      { '{"a":2]', '{"a":2}' },
      { "[2,}", "[2]" },
      { '{\n"values":[1,2,3\n}', '{"values":[1,2,3]}' },
      -- comments
      { '{"flag":/*boolean*/true}', '{"flag":true}' },
      { '{\n"a":"foo",//hello\n"b":"bar"\n}', '{"a":"foo","b":"bar"}' },
      { '{ "key": { "key2": "value2" # comment\n }, "key3": "value3" }',
        '{"key":{"key2":"value2"},"key3":"value3"}' },
      -- Python and JavaScript
      { "[True, False, None]", "[true,false,null]" },
      { '{"a":undefined}', '{"a":null}' },
      { "[NaN, Infinity]", "[null,null]" },
      -- escapes and control characters
      { '{"a":"hello\nworld"}', '{"a":"hello\\nworld"}' },
      { '{"a":"tab\there"}', '{"a":"tab\\there"}' },
      { '{"a":"\\a"}', '{"a":"a"}' },
      -- quotes inside strings
      { '{"tv":"The TV has a 24" screen"}', '{"tv":"The TV has a 24\\" screen"}' },
      { '{"key": "apple "bee" carrot"}', '{"key":"apple \\"bee\\" carrot"}' },
      { '["a" 2]', '["a",2]' },
      { '{"a":"b,c,"d":"e"}', '{"a":"b,c","d":"e"}' },
      { '["abc]\n', '["abc"]' },
      -- numbers
      { "[.5, 5., +1]", "[0.5,5.0,1]" },
      { '{"a":2e}', '{"a":2.0}' },
      { '{"zip":0789}', '{"zip":"0789"}' },
      { "[0.0.1,2]", '["0.0.1",2]' },
      { '{"id":746de9ad-d4ff-4c66}', '{"id":"746de9ad-d4ff-4c66"}' },
      { '{"date":2024-10-18T18:35:22Z}', '{"date":"2024-10-18T18:35:22Z"}' },
      -- the rest
      { '"hello" + " world"', '"hello world"' },
      { "{\"g\": 'hello' +\n 'world'}", '{"g":"helloworld"}' },
      { "[1,2,3,...]", "[1,2,3]" },
      { '{"a":2,"b":3,...,"z":26}', '{"a":2,"b":3,"z":26}' },
      { '{"_id":ObjectId("123"), "n": NumberLong(2)}', '{"_id":"123","n":2}' },
      { "{regex: /a-z+/}", '{"regex":"/a-z+/"}' },
      { '{"a":\194\160"b"}', '{"a":"b"}' },
    }

    it("repairs what models get wrong, and says that it did", function()
      for _, case in ipairs(cases) do
        local got, info = x(case[1])
        assert.are.equal(case[2], got, case[1])
        assert.is_true(info.repaired, case[1])
        assert.is_true(#info.repairs > 0, case[1])
      end
    end)

    it("names each repair with its position", function()
      local _, info = repaired('{"a": 1, "b": [True, 2,],}')
      assert.are.same({
        "line 1, column 16: read True as true",
        "line 1, column 23: removed a trailing comma",
        "line 1, column 25: removed a trailing comma",
      }, info.repairs)
    end)

    it("marks a value cut off by the end of the text", function()
      local _, info = x('{"items": [1, 2, 3')
      assert.is_true(info.truncated)
      -- A literal cut off is completed, and says so.
      local v, cut = spool.extract('{"ok": tr')
      assert.are.equal(true, v.ok)
      assert.is_true(cut.truncated)
      assert.are.same({ "line 1, column 8: completed tr, which the text cut "
        .. "off, as true", "line 1, column 1: closed an object the text cut "
        .. "off" }, cut.repairs)
      local _, whole = x('{"items": [1, 2, 3]}')
      assert.is_false(whole.truncated)
    end)
  end)

  describe("what cannot be recovered", function()
    it("is an error with a position and a reason", function()
      for text, msg in pairs {
        ['{:2}'] = "line 1, column 2 %(byte 1%): expected a key, found ':'",
        ['{"a",'] = "line 1, column 5 %(byte 4%): expected ':' after an "
          .. "object key",
        ['{"a": @}'] = "line 1, column 7 %(byte 6%): unexpected '@', "
          .. "expected a value",
        ['"\\uZ000"'] = "line 1, column 2 %(byte 1%): invalid unicode escape",
        ['[' .. ('['):rep(600)] = "line 1, column 514 %(byte 513%): nesting "
          .. "deeper than 512 levels",
      } do
        assert.matches("^ERR EJSON: " .. msg, x(text), 1, false)
      end
    end)

    it("refuses invalid documents no repair should touch", function()
      assert.matches("^ERR", x("no json here"))
      assert.matches("^ERR", x("} ]"))
      assert.matches("^ERR", x("3 + 4 = 7"))
    end)
  end)

  it("never hands back invalid UTF-8, in values or in messages", function()
    for _, text in ipairs { '{a: b\255c}', '{"k\255": 1}', '[x\237\096]',
                            '"\\u\178' } do
      local v, info = spool.extract(text)
      local ok = pcall(json.encode, { value = v, info = info })
      assert.is_true(ok, text)
    end
    local v = spool.extract('{a: b\255c}')
    assert.are.equal("b\u{FFFD}c", v.a)
  end)

  describe("coercion", function()
    local s = { type = "object", properties = {
      n = { type = "integer" }, f = { type = "number" }, ok = { type = "boolean" },
      id = { type = "string" }, tags = { type = "array", items = { type = "string" } },
    } }

    it("makes the unambiguous, safe fixes a schema asks for, as repairs",
      function()
      local v, info = spool.extract('{"n": "42", "f": "1.5", "ok": "true", '
        .. '"id": 5531, "tags": "urgent"}', { schema = s, name = "args" })
      assert.are.same({ n = 42, f = 1.5, ok = true, id = "5531",
                        tags = { "urgent" } }, v)
      assert.are.equal("integer", math.type(v.n))
      assert.are.equal(5, #info.repairs)
      assert.matches('args.n: read the string "42" as the number 42',
        table.concat(info.repairs, "\n"), 1, true)
    end)

    it("leaves ambiguous values alone", function()
      local v, err = spool.extract('{"n": "forty-two"}', { schema = s })
      assert.is_nil(v)
      assert.are.equal("ESCHEMA: value.n: expected integer, got string", err)
      v = spool.extract('{"n": "1.5"}', { schema = s, coerce = true })
      assert.is_nil(v)
    end)

    it("can be turned off", function()
      assert.is_nil((spool.extract('{"n": "42"}', { schema = s,
                                                    coerce = false })))
    end)
  end)

  describe("partial replies (streaming)", function()
    it("parses a prefix and says what is complete", function()
      local reply = '{"answer": "The capital is Paris", "confidence": 0.9}'
      for cut = 15, #reply - 1, 7 do
        local v, info = spool.extract(reply:sub(1, cut))
        assert.is_table(v)
        assert.is_true(info.truncated)
      end
      local v, info = spool.extract(reply)
      assert.is_false(info.truncated)
      assert.are.equal(0.9, v.confidence)
    end)
  end)
end)
