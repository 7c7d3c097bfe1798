-- The Anthropic Messages wire format in C (core.anthropic_reply and
-- core.anthropic_body, engine/src/lua/l_wire_anthropic.c): on documents
-- and requests random in shape, the reply and the bytes are the Lua
-- reader's and writer's (spool.model.providers.anthropic), and a step's
-- messages are written once.
local core = require "spool.core"
local json = require "spool.json"
local anthropic = require "spool.model.providers.anthropic"

local r = math.random

local function pick(list)
  return list[r(#list)]
end

local ABSENT = {}
local function v(list)
  local x = pick(list)
  if x == ABSENT then
    return nil
  end
  return x
end

-- An object's text from { key, value text } members (nil values left
-- out), its members in any order.
local function object(members)
  local parts = {}
  for _, m in ipairs(members) do
    if m[2] ~= nil then
      parts[#parts + 1] = string.format("%q: %s", m[1], m[2])
    end
  end
  for i = #parts, 2, -1 do
    local j = r(i)
    parts[i], parts[j] = parts[j], parts[i]
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

local function array(items)
  return "[" .. table.concat(items, ", ") .. "]"
end

describe("the Anthropic reply reader", function()
  local COUNTS = { "15", "0", "-3", "15.0", "-0.0", "15.5", '"15"', "null",
    "true", "1e300", "123456789012345678901234567890", "{}", "[1]", ABSENT }

  local INPUTS = { '{"a": 1, "b": 2}', "{}", '{"b": [1, 2.5, {"z": null}], '
    .. '"a": "x\\u00e9\\n"}', '{"a": 1, "a": 2}', '{"n": 1e300, "m": -0.0, '
    .. '"big": 123456789012345678901234567890, "t": true, "f": false}',
    '{"deep": {"deeper": [[], {}, [{"x": [1]}]]}}', '"text"', "5", "null",
    "[1, 2]", ABSENT }

  local function usage()
    local details = { ABSENT, "null", "[]", "5", "{}" }
    return v { ABSENT, "null", "[]", '"x"', "{}", object {
      { "input_tokens", v(COUNTS) }, { "output_tokens", v(COUNTS) },
      { "cache_creation_input_tokens", v(COUNTS) },
      { "cache_read_input_tokens", v(COUNTS) },
      { "output_tokens_details", r() < 0.6 and object {
        { "thinking_tokens", v(COUNTS) } } or v(details) },
      { "service_tier", '"standard"' },
    } }
  end

  local function block()
    local k = r(1, 20)
    if k == 1 then
      return pick { "5", '"x"', "null", "[]" }
    elseif k <= 9 then
      return object {
        { "type", v { '"text"', '"text"', '"thinking"', "5", ABSENT } },
        { "text", v { '"Hello"', '""', '"caf\\u00e9 \\"q\\"\\n"', "null", "7",
          '["x"]', ABSENT } },
        { "citations", r() < 0.2 and "[]" or nil },
      }
    end
    return object {
      { "type", v { '"tool_use"', '"tool_use"', '"tool_use"',
        '"server_tool_use"' } },
      { "id", v { '"toolu_01"', '"toolu_02"', "null", "4", ABSENT } },
      { "name", v { '"add"', '"add"', '"x\\u00e9"', "null", ABSENT, '["x"]' } },
      { "input", v(INPUTS) },
      { "arguments", r() < 0.05 and '"{}"' or nil },
    }
  end

  local function document()
    local blocks = {}
    for i = 1, r(0, 4) do
      blocks[i] = block()
    end
    local content = r() < 0.9 and array(blocks)
      or v { "{}", "null", '"x"', ABSENT }
    local doc = object {
      { "id", v { '"msg_1"', '"msg_1"', "null", "5", ABSENT } },
      { "type", '"message"' }, { "role", '"assistant"' },
      { "model", '"claude-x"' }, { "content", content },
      { "stop_reason", v { '"end_turn"', '"tool_use"', '"max_tokens"',
        '"refusal"', '"pause_turn"', '"other"', "null", "3", ABSENT } },
      { "stop_sequence", "null" }, { "usage", usage() },
    }
    local k = r(1, 30)
    if k == 1 then -- a key given twice: the last one counts
      doc = doc:gsub("^{", '{"usage": {"input_tokens": 99}, ')
    elseif k == 2 then
      doc = doc:gsub("^{", '{"content": [], ')
    elseif k == 3 then
      doc = doc:sub(1, r(0, #doc - 1)) -- cut off
    elseif k == 4 then
      doc = pick { "[]", "5", '"x"', "null", "" }
    end
    return doc
  end

  local function lua_only(body)
    local fast = core.anthropic_reply
    core.anthropic_reply = function() return nil end
    local out = table.pack(pcall(anthropic.parse, body))
    core.anthropic_reply = fast
    return out
  end

  it("gives the Lua reader's reply, for documents of every shape", function()
    local seed = os.time()
    math.randomseed(seed)
    local taken = 0
    for round = 1, 4000 do
      local body = document()
      local want = lua_only(body)
      local got = table.pack(pcall(anthropic.parse, body))
      assert.are.same(want, got, string.format("seed %d, round %d: %s", seed,
        round, body))
      if core.anthropic_reply(body) then
        taken = taken + 1
      end
    end
    -- Both readers were exercised.
    assert.is_true(taken > 400 and taken < 3600, "C read " .. taken)
  end)

  it("reads text, tool calls and usage, and leaves the rest", function()
    local doc = core.anthropic_reply([[{"id": "msg_1", "content": [
      {"type": "text", "text": "Let me "}, {"type": "thinking",
      "thinking": "..."}, {"type": "text", "text": "add."}, {"type":
      "tool_use", "id": "toolu_9", "name": "add", "input": {"b": 2,
      "a": [1, {"x": null}]}}, {"type": "tool_use", "name": "sub"}],
      "stop_reason": "tool_use", "usage": {"input_tokens": 10,
      "cache_read_input_tokens": 5, "output_tokens": 4.0,
      "output_tokens_details": {"thinking_tokens": 2}}}]])
    assert.are.same({ id = "msg_1", text = "Let me add.",
      stop_reason = "tool_use",
      tool_calls = {
        { id = "toolu_9", name = "add", arguments = '{"b":2,"a":[1,{"x":null}]}' },
        { id = "toolu_2", name = "sub" } },
      usage = { input_tokens = 10, cache_read_input_tokens = 5,
                output_tokens = 4,
                output_tokens_details = { thinking_tokens = 2 } } }, doc)
    local reply = anthropic.parse([[{"content": [{"type": "tool_use",
      "name": "add", "input": {"b": 2, "a": 1}}], "usage": {}}]])
    assert.are.equal('{"a":1,"b":2}', reply.tool_calls[1].arguments)
    -- No content array, a tool_use without a name: the Lua reader's.
    assert.is_nil(core.anthropic_reply('{"id": "m"}'))
    assert.is_nil(core.anthropic_reply('{"content": [{"type": "tool_use"}]}'))
    local _, err = anthropic.parse('{"content": [{"type": "tool_use"}]}')
    assert.are.equal("a tool_use block has no name", err)
  end)

  it("leaves a reply of very many calls to the Lua reader", function()
    local blocks = {}
    for i = 1, 1100 do
      blocks[i] = string.format('{"type": "tool_use", "id": "t%d", '
        .. '"name": "f", "input": {}}', i)
    end
    local body = '{"content": [' .. table.concat(blocks, ",") .. ']}'
    assert.is_nil(core.anthropic_reply(body))
    local reply = anthropic.parse(body)
    assert.are.equal(1100, #reply.tool_calls)
    assert.are.equal("t1100", reply.tool_calls[1100].id)
  end)
end)

describe("the Anthropic request writer", function()
  local TEXTS = { "", "hi", 'say "no"\n', "caf\195\169 \226\130\172",
    "\0x\1\31", ("long "):rep(50), "</script>" }

  local function content()
    local k = r(1, 12)
    if k <= 7 then
      return TEXTS[k]
    elseif k == 8 then
      return nil
    elseif k == 9 then
      return json.array { { type = "text", text = pick(TEXTS) } }
    elseif k == 10 then
      return json.null
    elseif k == 11 then
      return 42
    end
    return false
  end

  local function call()
    local c = { id = pick { "toolu_1", "c2", nil }, name = pick { "add", nil },
      arguments = pick { '{"a": 1}', '{"b": [1, 2.5], "a": {"z": null}}', "",
        "[1, 2]", '"x"', "{not json", '{"a": 1, "a": 2}', nil } }
    if r() < 0.05 then
      c = pick { "x", 5 }
    end
    return c
  end

  local function message()
    local role = pick { "user", "assistant", "assistant", "tool", "system",
      nil }
    local m = { role = role, content = content() }
    if role == "assistant" and r() < 0.6 then
      m.tool_calls = {}
      for i = 1, r(0, 3) do
        m.tool_calls[i] = call()
      end
      if r() < 0.03 then
        m.tool_calls = pick { "x", false }
      end
    elseif role == "tool" then
      m.tool_call_id = pick { "toolu_1", "c2", nil }
      m.name = "add" -- spool's own field: not sent
    end
    return m
  end

  local ADD = { name = "add", description = "Add two numbers.",
                parameters = { type = "object", properties = {
                  a = { type = "number" }, b = { type = "number" } } } }

  local function request()
    local req = { system = pick { "You add.", "", nil, "caf\195\169" },
      messages = {}, json = r() < 0.2 or nil, stream = r() < 0.3 or nil,
      temperature = pick { nil, 0, 0.7, 1.0, 2 },
      max_tokens = pick { nil, 256 } }
    for i = 1, r(0, 7) do
      req.messages[i] = message()
    end
    if r() < 0.6 then
      req.tools = { ADD, { name = "none", description = "No arguments.",
        parameters = { type = "object", properties = json.array() } } }
      req.tools_wire = r() < 0.5 and {} or nil
    end
    if r() < 0.03 then -- no JSON can hold it: the Lua writer says so
      req.messages[#req.messages + 1] = { role = "user", content = print }
    end
    return req
  end

  local function built(model, req, in_c)
    local fast = core.anthropic_body
    if not in_c then
      core.anthropic_body = function() error("not here") end
    end
    local out = table.pack(pcall(anthropic.build, model, req))
    core.anthropic_body = fast
    if out[1] then
      out[2] = out[2].body
    else
      out[2] = tostring(out[2]):gsub("^.-spool%.json", "spool.json")
    end
    return out
  end

  it("writes the Lua writer's bytes, for requests of every shape", function()
    local seed = os.time()
    math.randomseed(seed)
    for round = 1, 3000 do
      local model = { name = pick { "claude-x", "m" }, temperature = pick {
        nil, 0.2 }, max_tokens = pick { nil, 1024 } }
      local req = request()
      local want = built(model, req, false)
      local got = built(model, req, true)
      assert.are.same(want, got, string.format("seed %d, round %d", seed,
        round))
      if want[1] then
        assert.is_table(json.decode(got[2]))
      end
    end
  end)

  it("writes each kept message once, from step to step, as a fresh write "
    .. "does", function()
    local seed = os.time()
    math.randomseed(seed)
    for round = 1, 300 do
      -- A thread's messages grow step by step; the walk keeps each
      -- (message -> false), and OpenAI's writer may have kept its own
      -- forms in the same table.
      local kept, messages = {}, {}
      for step = 1, r(1, 6) do
        for _ = 1, r(1, 3) do
          local m = message()
          messages[#messages + 1] = m
          if r() < 0.8 then
            kept[m] = r() < 0.2 and '{"content":"openai\'s","role":"user"}'
              or false
          end
        end
        local req = { system = "s", messages = messages }
        local fresh = built({ name = "m" }, req, true)
        req.message_forms = kept
        local again = built({ name = "m" }, req, true)
        assert.are.same(fresh, again, string.format("seed %d, round %d, "
          .. "step %d", seed, round, step))
      end
    end
  end)

  it("keeps a form only of a message the caller keeps", function()
    local a = { role = "user", content = "hi" }
    local b = { role = "assistant", content = "", tool_calls = { {
      id = "t1", name = "add", arguments = '{"b":1,"a":2}' } } }
    local c = { role = "tool", tool_call_id = "t1", content = "3" }
    local empty = { role = "assistant", content = "" }
    local kept = { [a] = false, [b] = false, [empty] = false }
    local body = anthropic.build({ name = "m" }, { messages = { a, b, empty,
      c }, message_forms = kept }).body
    assert.are.equal('{"max_tokens":4096,"messages":[{"content":[{"text":'
      .. '"hi","type":"text"}],"role":"user"},{"content":[{"id":"t1","input":'
      .. '{"a":2,"b":1},"name":"add","type":"tool_use"}],"role":"assistant"},'
      .. '{"content":[{"content":"3","tool_use_id":"t1","type":"tool_result"}'
      .. '],"role":"user"}],"model":"m"}', body)
    -- The walk's own entries are untouched: OpenAI's forms go there.
    assert.is_false(kept[a])
    local same = anthropic.build({ name = "m" }, { messages = { a, b, empty,
      c }, message_forms = kept }).body
    assert.are.equal(body, same)
  end)
end)

describe("the Anthropic writer, on hostile input", function()
  local function lua_build(model, req)
    local fast = core.anthropic_body
    core.anthropic_body = function() error("not here") end
    local ok, out = pcall(anthropic.build, model, req)
    core.anthropic_body = fast
    return ok, ok and out.body or tostring(out)
  end

  it("bounds a body inside one message's tool calls", function()
    local input = { s = ("a"):rep(2 ^ 21) }
    local calls = {}
    for i = 1, 33 do
      calls[i] = { name = "f", arguments = json.encode(input) }
    end
    local messages = { { role = "assistant", tool_calls = calls } }
    local ok, err = pcall(core.anthropic_body, "m", nil, messages, nil, 10,
      nil, nil, nil, function() return input end)
    assert.is_false(ok)
    assert.matches("larger than 64 MiB", err)
    local built, why = lua_build({ name = "m" }, { messages = messages })
    assert.is_false(built)
    assert.matches("larger than 64 MiB", why)
  end)

  it("counts nesting from the body's root, as json.encode does", function()
    local deep = "x"
    for _ = 1, 508 do
      deep = json.array { deep }
    end
    local req = { messages = { { role = "user", content = deep } } }
    local ok, body = pcall(anthropic.build, { name = "m" }, req)
    local lua_ok, lua_body = lua_build({ name = "m" }, req)
    assert.are.equal(lua_ok, ok)
    assert.is_false(ok)
    assert.matches("nesting too deep", lua_body)
    assert.matches("nesting too deep", tostring(body))
  end)

  it("writes the body a message's __index asks for meanwhile apart",
    function()
      local inner
      local message = setmetatable({}, { __index = function(_, k)
        if k == "content" then
          inner = anthropic.build({ name = "inner" }, { messages = {} }).body
          return "hi"
        end
        if k == "role" then
          return "user"
        end
      end })
      local req = { messages = { message } }
      local body = anthropic.build({ name = "m" }, req).body
      assert.are.equal('{"max_tokens":4096,"messages":[{"content":[{"text":'
        .. '"hi","type":"text"}],"role":"user"}],"model":"m"}', body)
      assert.are.equal('{"max_tokens":4096,"messages":[],"model":"inner"}',
        inner)
      local _, lua_body = lua_build({ name = "m" }, req)
      assert.are.equal(lua_body, body)
    end)
end)
