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
      -- a closer too early: the members after it are merged
      { '{"name": "Ann"}, "age": 31}', '{"age":31,"name":"Ann"}' },
      { '{"user": {"id": 7}}, "role": "admin"}',
        '{"role":"admin","user":{"id":7}}' },
      { '[1, 2], 3]', "[1,2,3]" },
      -- Python tuples and parentheses as arrays
      { "(1, 2, 3)", "[1,2,3]" },
      { '{"point": (3, 4), "tags": ("a", "b")}',
        '{"point":[3,4],"tags":["a","b"]}' },
      { '{"range": (0, 10]}', '{"range":[0,10]}' },
      { "[(1, 'a'), (2, 'b')]", '[[1,"a"],[2,"b"]]' },
      -- double quotes inside strings
      { '{"height": "5\'3"", "weight": 120}',
        '{"height":"5\'3\\"","weight":120}' },
      { '{"quote": "She said "no"", "ok": true}',
        '{"ok":true,"quote":"She said \\"no\\""}' },
      { '{"msg": "He said, "stop!""}', '{"msg":"He said, \\"stop!\\""}' },
      { '{"q": "What does "JSON" stand for?", "a": "notation"}',
        '{"a":"notation","q":"What does \\"JSON\\" stand for?"}' },
      -- escaped JSON: a JSON string printed instead of its value
      { [[{\"name\": \"Ann\", \"tags\": [\"x\"]}]],
        '{"name":"Ann","tags":["x"]}' },
      { [[Output: {\n  \"a\": 1,\n  \"b\": \"say \\\"hi\\\"\"\n}]],
        '{"a":1,"b":"say \\"hi\\""}' },
      -- brackets holding key: value pairs; a quote missing at one end;
      -- acute accents as quotes
      { '["name": "Ann", "age": 31]', '{"age":31,"name":"Ann"}' },
      { '{"tags": ["a", "b", "count": 2}', '{"count":2,"tags":["a","b"]}' },
      { '{"name: "Ann", "age": 31}', '{"age":31,"name":"Ann"}' },
      { '{"city": "Paris, "zip": "75001"}', '{"city":"Paris","zip":"75001"}' },
      { '{"a": "one\n"b": "two"}', '{"a":"one","b":"two"}' },
      { "{´name´: ´Ann´}", '{"name":"Ann"}' },
      -- a stray word between members; JSONP around a scalar
      { '{"a": 1, and "b": 2}', '{"a":1,"b":2}' },
      { '{"a": 1 approx, "b": 2}', '{"a":1,"b":2}' },
      { "callback(42);", "42" },
      { 'cb("done")', '"done"' },
      -- Python triple-quoted strings; unquoted values over several lines
      { '{"code": """def f():\n    return "x"\n"""}',
        '{"code":"def f():\\n    return \\"x\\"\\n"}' },
      { "{'doc': '''It's\nfine'''}", '{"doc":"It\'s\\nfine"}' },
      { "{summary: The order shipped late\n  and arrived damaged\nscore: 2}",
        '{"score":2,"summary":"The order shipped late\\nand arrived damaged"}' },
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

  describe("never an inner fragment", function()
    it("fails with a position where the whole value fails, rather than "
      .. "return a value from inside it", function()
      for _, text in ipairs {
        -- a link inside a string was once returned as ["here"]
        '{"text": "see [here](http://x.io) now" "next": 1 @@}',
        -- and the last object of a list whose bracket is wrong
        'Items: [{"a": 1}, {"a": 2} @ {"a": 3}]',
        '{"outer": {"inner": {"x": 1}} ??? }',
      } do
        assert.matches("^ERR EJSON: line 1, column %d+", x(text), 1)
      end
      -- Braces in prose are skipped whole; the value after them is found.
      assert.are.equal('{"a":1}', x('Use {name} placeholders. Result: {"a": 1}'))
    end)

    it("reads a fence or JSON inside a string value as text", function()
      local reply = '{"code": "```py\\nprint([1])\\n```", "lang": "py",}'
      assert.are.equal('{"code":"```py\\nprint([1])\\n```","lang":"py"}',
        x(reply))
      local _, info = x('Here:\n' .. reply)
      assert.is_false(info.fenced)
      -- A fence of code holds no scalar: print(1) is not the value 1.
      assert.matches("^ERR", x("```python\nprint(1)\n```"))
      assert.are.equal("42", x("```json\n42\n```"))
    end)
  end)

  describe("conventions", function()
    -- Where JSON-repair libraries disagree, spool decides as follows (the
    -- README's table).
    it("bare prose is no value: an error, not a string", function()
      assert.matches("^ERR EJSON: .*no JSON value", x("I could not find it."))
    end)

    it("of several values, the first object or array wins; all are "
      .. "candidates for a schema", function()
      assert.are.equal('{"a":1}', x('{"a": 1}\n{"b": 2}'))
      local _, info = x('{"a": 1} then [2]')
      assert.are.equal(2, info.candidates)
    end)

    it("a key whose value was cut off is null, and the value marked cut "
      .. "off; streaming, the key is left out", function()
      local v, info = spool.extract('{"a": 1, "b": ')
      assert.are.equal(json.null, v.b)
      assert.is_true(info.truncated)
      v = spool.extract('{"a": 1, "b": ', { partial = true })
      assert.is_nil(v.b)
    end)

    it("text after the value is ignored, unless it goes on with the "
      .. "value's members", function()
      assert.are.equal('{"a":1}', x('{"a": 1}\nHope this helps: it is done.'))
      assert.are.equal('{"a":1,"b":2}', x('{"a": 1}, "b": 2}'))
    end)

    it("keeps every digit of an integer past 64 bits", function()
      local v, info = spool.extract('Order {id: 123456789012345678901, n: 2}')
      assert.are.equal("123456789012345678901", tostring(v.id))
      assert.are.equal('{"id":123456789012345678901,"n":2}', json.encode(v))
      assert.is_true(info.repaired) -- the keys, not the number
      assert.are.equal("123456789012345678901",
        tostring(spool.extract("123456789012345678901")))
    end)
  end)

  describe("typed extraction", function()
    local record = { type = "object", required = { "name" },
                     properties = { name = { type = "string" } } }
    local records = { type = "array", items = record }

    it("reads a scalar as the one required property of an object", function()
      local v, info = spool.extract('"Ann"', { schema = record })
      assert.are.same({ name = "Ann" }, v)
      assert.matches("one required property 'name'", info.repairs[1])
    end)

    it("gathers several values in the text into the list expected, and "
      .. "never returns one of them alone", function()
      local text = 'Found:\n{"name": "a"}\n{"name": "b"}\n{"name": "c"}\n'
        .. '{"name": "d"}\n{"name": "e"}'
      local v, info = spool.extract(text, { schema = records })
      assert.are.equal(5, #v)
      assert.are.equal("e", v[5].name)
      assert.matches("gathered the 5 separate values",
        info.repairs[#info.repairs])
      -- One of the five is not a record: an error, not four, not one.
      local bad = text:gsub('{"name": "c"}', '{"title": "c"}')
      local none, err = spool.extract(bad, { schema = records })
      assert.is_nil(none)
      assert.matches("^ESCHEMA: value: expected an array; the text holds 5 "
        .. "separate values", err)
      -- A single value is still wrapped, and says so.
      v, info = spool.extract('{"name": "a"}', { schema = records })
      assert.are.equal(1, #v)
      assert.matches("wrapped a single value", info.repairs[1])
    end)

    it("reads a bulleted or numbered list as an array", function()
      local want = { type = "array", items = { type = "string" } }
      local v, info = spool.extract("Steps:\n- unplug it\n- wait\n* plug it in",
        { schema = want })
      assert.are.same({ "unplug it", "wait", "plug it in" }, v)
      assert.matches("bulleted list %(3 items%)", info.repairs[1])
      v = spool.extract("1. 10\n2) 20", { schema = { type = "array",
        items = { type = "integer" } } })
      assert.are.same({ 10, 20 }, v)
    end)

    it("reads prose as the string a schema expects", function()
      local v, info = spool.extract("  The capital is Paris.\n",
        { schema = { type = "string" } })
      assert.are.equal("The capital is Paris.", v)
      assert.is_true(info.repaired)
    end)

    it("matches enum values by case and by declared aliases", function()
      local s = { type = "object", properties = { priority = {
        enum = { "low", "high" }, aliases = { urgent = "high", p3 = "low" } } } }
      assert.are.equal("high", spool.extract('{"priority": "HIGH"}',
        { schema = s }).priority)
      assert.are.equal("high", spool.extract('{"priority": "Urgent"}',
        { schema = s }).priority)
      assert.are.equal("low", spool.extract('{"priority": "p3"}',
        { schema = s }).priority)
      local v, err = spool.extract('{"priority": "medium"}', { schema = s })
      assert.is_nil(v)
      assert.matches('must be one of "low", "high", got "medium"', err)
    end)

    it("gives an absent optional property null when its schema allows "
      .. "null", function()
      local s = { type = "object", required = { "a" }, properties = {
        a = { type = "integer" }, note = { type = { "string", "null" } },
        tag = { type = "string" } } }
      local v, info = spool.extract('{"a": 1}', { schema = s })
      assert.are.equal(json.null, v.note)
      assert.is_nil(v.tag) -- not nullable: left absent
      assert.matches("value.note: gave the absent optional property null",
        info.repairs[1])
    end)

    it("reads JSON printed inside a string as the object expected", function()
      local v, info = spool.extract('"{\\"name\\": \\"Ann\\"}"',
        { schema = record })
      assert.are.same({ name = "Ann" }, v)
      assert.matches("read the JSON in a string", info.repairs[1])
    end)
  end)

  describe("hostile and tricky replies", function()
    it("bounds the nesting of wrappers like NumberLong(...)", function()
      assert.matches("nesting deeper than 512 levels", x(("a("):rep(100000)))
    end)

    it("reads a long run of digits or spaces in linear time", function()
      local s = { type = "object", properties = { n = { type = "integer" } } }
      local v, err = spool.extract('{"n": "' .. ("1"):rep(5000) .. 'x"}',
        { schema = s })
      assert.is_nil(v)
      assert.matches("expected integer, got string", err)
      v = spool.extract("x" .. (" "):rep(100000) .. "y",
        { schema = { type = "string" } })
      assert.are.equal("x" .. (" "):rep(100000) .. "y", v)
      v = spool.extract("- x" .. (" "):rep(100000) .. "y\n- z",
        { schema = { type = "array", items = { type = "string" } } })
      assert.are.equal(2, #v)
    end)

    it("scans the prose before a fence, and each fence once", function()
      local need_a = { type = "object", required = { "a" } }
      local v = spool.extract('Result: {"a": 1}\nmore\n```json\n{"b": 2}\n```',
        { schema = need_a })
      assert.are.same({ a = 1 }, v)
      local fences = {}
      for i = 1, 18 do
        fences[i] = '```json\n{"i": ' .. i .. '}\n```'
      end
      v = spool.extract(table.concat(fences, "\n"),
        { schema = { type = "array", items = { type = "object" } } })
      assert.are.equal(18, #v)
      assert.are.equal(18, v[18].i)
    end)

    it("reads a fence inside a JSON string as text, escaped backslashes "
      .. "and raw line breaks too", function()
      assert.are.equal('{"dir":"C:\\\\","note":"```json [1] ```"}',
        x('Here you go: {"dir": "C:\\\\", "note": "```json [1] ```"}'))
      local v = spool.extract('{"answer": "Use:\n```json\n{\\"x\\": 1}\n```\n"}')
      assert.matches("^Use:", v.answer)
    end)

    it("never returns a value from inside one that failed, whatever its "
      .. "quotes", function()
      assert.matches("^ERR EJSON", x("{'a': '}', 'b': {\"c\": 1} @}"))
      assert.matches("^ERR EJSON",
        x([[{\"a\": \"}\", \"b\": {\"c\": 1} @}]]))
    end)

    it("keeps keys that hold ':' and close properly", function()
      assert.are.equal('{"a:b,c":1}', x('JSON: {"a:b,c": 1}'))
      assert.are.equal('{"Q: why, really?":"because"}',
        x('JSON: {"Q: why, really?": "because"}'))
      assert.are.equal('{"x":{"ratio 1:2}":5}}', x('{"x": {"ratio 1:2}": 5}}'))
    end)

    it("reads a long number as a number", function()
      local v = spool.extract('JSON: {"x": 3.14159265358979323846264338327950'
        .. '288419716939937510582097494459230781640628}')
      assert.are.equal(math.pi, v.x)
    end)

    it("gathers only when every value in the text was read", function()
      local records = { type = "array", items = { type = "object" } }
      local v, err = spool.extract('{"a":1}\n{"a": 2, @}\n{"a":3}',
        { schema = records })
      assert.is_nil(v)
      assert.matches("could not be read", err)
      local info
      v, info = spool.extract('```json\n{"a": 1, "b": [1, 2\n```\n'
        .. '```json\n{"a": 2}\n```', { schema = records })
      assert.are.equal(2, #v)
      assert.is_true(info.truncated) -- one of them was cut off
    end)

    it("streaming, leaves out a number the whole text may still be",
      function()
      for _, text in ipairs { "4", "  1.5", "```json\n12" } do
        assert.is_nil((spool.extract(text, { partial = true })), text)
      end
      assert.are.equal(4, (spool.extract("4 ", { partial = true })))
    end)

    it("does not read prose as a value", function()
      for _, text in ipairs { "2nd option is better.", '"To be" is a line.',
                              "'Hello' is a greeting.", "...", "-",
                              "10x faster: yes" } do
        assert.matches("^ERR EJSON", x(text), 1, false)
      end
    end)

    it("coerces only to values JSON can hold", function()
      local v, err = spool.extract('{"n": "1e999"}', { schema = { type =
        "object", properties = { n = { type = "number" } } } })
      assert.is_nil(v)
      assert.matches("expected number, got string", err)
      v = spool.extract('{"n": "12345678901234567890"}', { schema = { type =
        "object", properties = { n = { type = "number" } } } })
      assert.are.equal("12345678901234567890", tostring(v.n))
    end)

    it("matches no alias when two could be meant", function()
      local s = { enum = { "high", "low" },
                  aliases = { urgent = "high", URGENT = "low" } }
      assert.is_nil((spool.extract('"Urgent"', { schema = s })))
    end)

    it("reads every value in a fence, and gathers them in the text's order",
      function()
      local items = { type = "array", items = { type = "object",
        required = { "id" }, properties = { id = { type = "integer" } } } }
      local v = spool.extract('```json\n{"id": 1}\n{"id": 2}\n{"id": 3}\n```',
        { schema = items })
      assert.are.equal(3, #v)
      v = spool.extract('{"id": 1}\n```json\n{"id": 2}\n```\n{"id": 3}',
        { schema = items })
      assert.are.same({ 1, 2, 3 }, { v[1].id, v[2].id, v[3].id })
      assert.are.same({ id = 2 }, spool.extract('```json\n{"x": 1}\n{"id": 2}\n'
        .. '```', { schema = { type = "object", required = { "id" } } }))
    end)

    it("finds nothing inside a value that failed, fences and quoted "
      .. "brackets included", function()
      for _, text in ipairs {
        '{"answer": "Use this:\n```json\n{"debug": true}\n```\n", '
          .. '"confidence": <high>}',
        "Result: {'a': 'use }', 'b': <Foo object at 0x7f>, 'c': {'d': 1}}",
        "{'a': 'list ]', 'b': <Foo>, 'c': [1, 2]}",
      } do
        assert.matches("^ERR EJSON", x(text), 1, false)
      end
      -- One that failed before the value is named in info.incomplete.
      local v, info = spool.extract('{"id": @}\n{"id": 3}')
      assert.are.same({ id = 3 }, v)
      assert.matches("^EJSON: line 1, column 8", info.incomplete)
    end)

    it("lets a schema look past many bracketed references", function()
      local v = spool.extract("See [1], [2], [3], [4], [5], [6], [7], [8], [9]. "
        .. '{"a": 1}', { schema = { type = "object", required = { "a" } } })
      assert.are.same({ a = 1 }, v)
      v = spool.extract("See [the docs](https://x.io) for details.",
        { schema = { type = "string" } })
      assert.are.equal("See [the docs](https://x.io) for details.", v)
    end)

    it("closes with a closer meant for the parent without calling the "
      .. "text cut off", function()
      for text, want in pairs { ['{"a": [1, 2}'] = '{"a":[1,2]}',
                                ['[{"a": 1]'] = '[{"a":1}]' } do
        local got, info = x(text)
        assert.are.equal(want, got)
        assert.is_false(info.truncated)
      end
    end)

    it("reads #fff as text, and # with a space as a comment", function()
      assert.are.equal('{"color":"#fff","size":2}',
        x('{"color": #fff, "size": 2}'))
      assert.are.equal('{"a":1,"b":2}', x('{"a": 1, # note\n"b": 2}'))
    end)

    it("merges after an early closer only a quoted key, not prose",
      function()
      assert.are.equal('{"answer":42}',
        x('{"answer": 42}\nNote: I dropped the stray } from your input.'))
      local key = "a:," .. ("x"):rep(300)
      assert.are.equal(json.encode({ [key] = 1 }),
        x('x {"' .. key .. '": 1}'))
    end)

    it("says where it stopped looking, when a text holds too many values",
      function()
      local candidates = json._extract(('{"a":1} '):rep(300), 1000)
      assert.are.equal(256, #candidates)
      assert.are.equal("EJSON: line 1, column 2049 (byte 2048): stopped "
        .. "looking for values after 256 starts", candidates.incomplete)
    end)

    it("fills no null into a value still streaming", function()
      local s = { type = "object", properties = {
        a = { type = "integer" }, note = { type = { "string", "null" } } } }
      local v = spool.extract('{"a": 1, "b": "x', { schema = s,
                                                      partial = true })
      assert.is_nil(v.note)
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

    it("leaves out a number the text ends in, and lists required "
      .. "properties not seen yet as pending", function()
      local s = { type = "object", required = { "answer", "confidence" },
                  properties = { answer = { type = "string" },
                                 confidence = { type = "number" } } }
      local v, info = spool.extract('{"answer": "Paris", "confidence": 0.9',
        { schema = s, partial = true })
      assert.are.same({ answer = "Paris" }, v) -- 0.9 may be 0.95
      assert.are.same({ "value.confidence" }, info.pending)
      assert.matches("left out the number 0.9", info.repairs[1])
      v, info = spool.extract('{"answer": "Par', { schema = s, partial = true })
      assert.are.equal("Par", v.answer) -- text streams as it comes
      assert.are.same({ "value.confidence" }, info.pending)
      assert.are.same({ 1, 2 }, spool.extract("[1, 2, 3", { partial = true }))
      -- Whole, nothing is pending; without partial, missing is an error.
      v, info = spool.extract('{"answer": "Paris", "confidence": 0.9}',
        { schema = s, partial = true })
      assert.are.equal(0.9, v.confidence)
      assert.is_nil(info.pending)
      assert.is_nil((spool.extract('{"answer": "Par', { schema = s })))
    end)
  end)
end)
