-- The providers' wire formats in C — Chat Completions, Anthropic Messages
-- and the Responses API (core.chat_reply, core.chat_body and their
-- likes; engine/src/lua/l_wire*.c): on documents and requests random in
-- shape, the replies and the bytes are the Lua readers' and writers'
-- (spool.model.providers.*), a step's messages are written once, and
-- hostile input finds the bounds the Lua side has.
local core = require "spool.core"
local json = require "spool.json"
local openai = require "spool.model.providers.openai"
local anthropic = require "spool.model.providers.anthropic"
local responses = require "spool.model.providers.openai_responses"

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

local COUNTS = { "15", "0", "-3", "15.0", "-0.0", "15.5", '"15"', "null",
  "true", "1e300", "123456789012345678901234567890", "{}", "[1]", ABSENT }

-- A document made by `make`, or made wrong now and then: a key given
-- twice (the last one counts), cut off, or no object at all.
local function mangled(make, twice)
  local doc = make()
  local k = r(1, 30)
  if k == 1 then
    doc = doc:gsub("^{", twice[1])
  elseif k == 2 then
    doc = doc:gsub("^{", twice[2])
  elseif k == 3 then
    doc = doc:sub(1, r(0, #doc - 1))
  elseif k == 4 then
    doc = pick { "[]", "5", '"x"', "null", "" }
  end
  return doc
end

-- Checks that `parse` gives the reply its Lua reader gives (`fast`, the
-- name of its C reader in core, stubbed out), on 4,000 documents, and
-- that both readers were exercised.
local function same_replies(parse, fast, document)
  local seed = os.time()
  math.randomseed(seed)
  local reader = core[fast]
  local taken = 0
  for round = 1, 4000 do
    local body = document()
    core[fast] = function() return nil end
    local want = table.pack(pcall(parse, body))
    core[fast] = reader
    local got = table.pack(pcall(parse, body))
    assert.are.same(want, got, string.format("seed %d, round %d: %s", seed,
      round, body))
    if reader(body) then
      taken = taken + 1
    end
  end
  assert.is_true(taken > 400 and taken < 3600, "C read " .. taken)
end

-- What `module`'s stream reader makes of `events` (each an event's data):
-- each event's results, the text it showed, and the reply.
local function read_stream(module, events)
  local shown = {}
  local acc = module.stream(function(text) shown[#shown + 1] = text end)
  local results = {}
  for i, data in ipairs(events) do
    results[i] = table.pack(pcall(acc.event, { data = data }))
    if results[i][1] == false or results[i][2] then
      break
    end
  end
  return { results = results, shown = shown,
           reply = table.pack(pcall(acc.reply)) }
end

-- Checks that `module`'s stream reader gives what it gives with its C
-- reader (`fast`, in core) stubbed out, on 4,000 streams made by
-- `stream`, and that the C reader took many events and left many.
local function same_streams(module, fast, stream)
  local seed = os.time()
  math.randomseed(seed)
  local reader = core[fast]
  local taken, left = 0, 0
  local function counted(...)
    local got = table.pack(reader(...))
    if got[1] then taken = taken + 1 else left = left + 1 end
    return table.unpack(got, 1, got.n)
  end
  for round = 1, 4000 do
    local events = stream()
    core[fast] = counted
    local got = read_stream(module, events)
    core[fast] = function() return nil end
    local want = read_stream(module, events)
    core[fast] = reader
    assert.are.same(want, got, string.format("seed %d, round %d: %s",
      seed, round, table.concat(events, "\n")))
  end
  assert.is_true(taken > 2000 and left > 1000,
    string.format("C took %d events, left %d", taken, left))
end

-- A Chat Completions usage object, of any shape.
local function chat_usage()
  local details = { ABSENT, "null", "[]", "5", "{}" }
  return v { ABSENT, "null", "[]", '"x"', "{}", object {
    { "prompt_tokens", v(COUNTS) }, { "completion_tokens", v(COUNTS) },
    { "total_tokens", v(COUNTS) },
    { "prompt_tokens_details", r() < 0.6 and object {
      { "cached_tokens", v(COUNTS) } } or v(details) },
    { "completion_tokens_details", r() < 0.6 and object {
      { "reasoning_tokens", v(COUNTS) } } or v(details) },
  } }
end

-- Chat Completions replies are read in C when they have the common shape
-- (core.chat_reply); the Lua reader takes the rest.
describe("the chat reply reader", function()
  local usage = chat_usage

  local function call()
    local fn = object {
      { "name", v { '"add"', '"add"', '"x\\u00e9"', "null", ABSENT, '["x"]' } },
      { "arguments", v { [["{\"a\": 1, \"b\": 2}"]], '""', '{"a": 1}', "null",
        "5", ABSENT, '"{\\"a\\":"' } },
    }
    if r() < 0.05 then
      return pick { "5", "null", "[]" }
    end
    return object {
      { "id", v { '"call_1"', '"c2"', "null", "4", ABSENT } },
      { "type", '"function"' },
      { "function", r() < 0.93 and fn or v { "null", '"x"', ABSENT, "[]" } },
    }
  end

  local function message()
    local calls = {}
    for i = 1, r(0, 3) do
      calls[i] = call()
    end
    return object {
      { "role", '"assistant"' },
      { "content", v { '"Hello"', '""', "null", '[{"type": "text", "text": '
        .. '"hi"}]', "7", ABSENT, '"caf\\u00e9\\n\\"q\\""' } },
      { "refusal", v { ABSENT, ABSENT, '"I cannot"', '""', "null" } },
      { "tool_calls", r() < 0.7 and "[" .. table.concat(calls, ", ") .. "]"
        or v { "null", "{}", '"x"', ABSENT } },
    }
  end

  local function choice()
    return object {
      { "index", "0" },
      { "finish_reason", v { '"stop"', '"tool_calls"', '"length"', "null",
        "3", ABSENT } },
      { "logprobs", "null" },
      { "message", r() < 0.9 and message() or v { "null", "[]", '"x"',
        ABSENT } },
    }
  end

  local function document()
    local choices = r() < 0.85 and "[" .. choice() .. (r() < 0.2 and ", "
      .. choice() or "") .. "]" or v { "[]", "{}", "null", "[5]" }
    return object {
      { "id", v { '"chatcmpl-1"', '"chatcmpl-1"', "null", "5", ABSENT } },
      { "object", '"chat.completion"' }, { "created", "1796541970" },
      { "model", '"m"' }, { "choices", choices }, { "usage", usage() },
      { "system_fingerprint", r() < 0.3 and '{"x": [1, {"y": null}]}' or nil },
    }
  end


  it("gives the Lua reader's reply, for documents of every shape", function()
    same_replies(openai.parse, "chat_reply", function()
      return mangled(document, { '{"usage": {"prompt_tokens": 99}, ',
                                 '{"id": "first", ' })
    end)
  end)

  it("reads a plain reply and its tool calls' raw arguments", function()
    local reply = core.chat_reply([[{"id": "c1", "choices": [{"index": 0,
      "finish_reason": "tool_calls", "message": {"role": "assistant",
      "content": null, "tool_calls": [{"id": "call_1", "type": "function",
      "function": {"name": "add", "arguments": "{\"a\": 1}"}}, {"type":
      "function", "function": {"name": "sub"}}]}}], "usage":
      {"prompt_tokens": 15, "completion_tokens": 4.0, "total_tokens": 19,
      "prompt_tokens_details": {"cached_tokens": 8}}}]])
    assert.are.same({ id = "c1", finish_reason = "tool_calls",
      tool_calls = {
        { id = "call_1", name = "add", arguments = '{"a": 1}' },
        { id = "call_2", name = "sub", arguments = "{}" } },
      usage = { input_tokens = 15, output_tokens = 4, total_tokens = 19,
                cached_tokens = 8 } }, reply)
    assert.is_nil(core.chat_reply('{"choices": []}'))
    assert.is_nil(core.chat_reply('{"choices": [{"message": {}}], "id": 5}'))
  end)
end)

-- A streamed reply's chunks are read in C when they have the common shape
-- (core.chat_chunk); the Lua stream reader takes the rest of the stream
-- from the first that has not.
describe("the chat stream reader", function()
  local function call()
    if r() < 0.03 then
      return pick { "5", "null", "[]" }
    end
    local fn = object {
      { "name", v { '"add"', '"sub"', '"x\\u00e9"', "null", ABSENT, ABSENT,
        '["x"]', "5" } },
      { "arguments", v { [["{\"a\""]], '": 1}"', '""', "null", ABSENT,
        '{"a": 1}', "5" } },
    }
    return object {
      { "index", v { "0", "0", "0", "1", "1", "2", "null", ABSENT, "-1", "1.0",
        "1.5", '"1"', "99", "true", "1e300", "{}" } },
      { "id", v { '"call_1"', '"c2"', "null", "4", ABSENT, ABSENT } },
      { "type", v { '"function"', ABSENT } },
      { "function", r() < 0.9 and fn or v { "null", '"x"', ABSENT, "[]" } },
    }
  end

  local function delta()
    local calls = {}
    for i = 1, r(0, 2) do
      calls[i] = call()
    end
    return object {
      { "role", v { '"assistant"', ABSENT, ABSENT } },
      { "content", v { '"Hel"', '"lo"', '""', "null", ABSENT, ABSENT,
        '"caf\\u00e9\\n"', "7", "[1]" } },
      { "refusal", v { ABSENT, ABSENT, ABSENT, '"no"', '""', "null" } },
      { "tool_calls", r() < 0.5 and array(calls)
        or v { ABSENT, "null", "{}", "[]" } },
    }
  end

  local function choice()
    return object {
      { "index", "0" },
      { "delta", r() < 0.9 and delta() or v { "null", "[]", '"x"', ABSENT,
        "{}" } },
      { "finish_reason", v { ABSENT, "null", "null", '"stop"',
        '"tool_calls"', '""', "3" } },
      { "logprobs", "null" },
    }
  end

  local function chunk()
    local choices = r() < 0.85 and "[" .. choice() .. (r() < 0.05 and ", "
      .. pick { choice(), "5" } or "") .. "]"
      or v { "[]", "{}", "null", "[5]", ABSENT }
    return object {
      { "id", v { '"chatcmpl-1"', '"chatcmpl-1"', "null", "5", ABSENT } },
      { "object", '"chat.completion.chunk"' }, { "created", "1796541970" },
      { "model", '"m"' }, { "choices", choices },
      { "usage", r() < 0.2 and chat_usage() or v { ABSENT, "null" } },
      { "error", r() < 0.02 and v { '{"message": "boom"}', "null" } or nil },
    }
  end

  local function stream()
    local events = {}
    for i = 1, r(1, 8) do
      events[i] = mangled(chunk, { '{"choices": [], ', '{"id": "first", ' })
    end
    if r() < 0.8 then
      events[#events + 1] = "[DONE]"
    end
    return events
  end

  it("gives the Lua reader's reply and text, for streams of every shape",
    function()
      same_streams(openai, "chat_chunk", stream)
    end)

  it("reads text and tool calls in pieces, as a provider streams them",
    function()
      local shown = {}
      local acc = openai.stream(function(text) shown[#shown + 1] = text end)
      local function chunk(choice, extra)
        return { data = '{"id": "c1", "object": "chat.completion.chunk", '
          .. '"choices": [' .. choice .. ']' .. (extra or "") .. '}' }
      end
      for _, ev in ipairs {
        chunk('{"index": 0, "delta": {"role": "assistant", "content": "", '
          .. '"refusal": null}, "finish_reason": null}', ', "usage": null'),
        chunk('{"index": 0, "delta": {"content": "Adding"}}'),
        chunk('{"index": 0, "delta": {"content": " now."}}'),
        chunk('{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": '
          .. '"call_1", "type": "function", "function": {"name": "add", '
          .. '"arguments": ""}}]}}'),
        chunk('{"index": 0, "delta": {"tool_calls": [{"index": 0, '
          .. '"function": {"arguments": "{\\"a\\": "}}]}}'),
        chunk('{"index": 0, "delta": {"tool_calls": [{"index": 0, '
          .. '"function": {"arguments": "1}"}}, {"index": 1, "id": "call_2", '
          .. '"function": {"name": "sub", "arguments": "{}"}}]}}'),
        chunk('{"index": 0, "delta": {}, "finish_reason": "tool_calls"}'),
        { data = '{"id": "c1", "choices": [], "usage": {"prompt_tokens": 9, '
          .. '"completion_tokens": 5, "total_tokens": 14}}' },
      } do
        assert.is_nil(acc.event(ev))
      end
      assert.is_true(acc.event { data = "[DONE]" })
      assert.are.same({ "Adding", " now." }, shown)
      assert.are.same({ id = "c1", text = "Adding now.",
        finish_reason = "tool_calls",
        tool_calls = { { id = "call_1", name = "add", arguments = '{"a": 1}' },
                       { id = "call_2", name = "sub", arguments = "{}" } },
        usage = { input_tokens = 9, output_tokens = 5, total_tokens = 14 } },
        acc.reply())
    end)

  it("leaves a chunk it does not take, and st as it was", function()
    local st = { text = {}, refusal = {}, calls = {} }
    for _, data in ipairs {
      '{"error": {"message": "overloaded"}}',
      '{"choices": [{"delta": {}}, {"delta": {}}]}',
      '{"choices": [{"delta": {"tool_calls": [{"index": 1}]}}]}',
      '{"choices": [{"delta": {"tool_calls": [5]}}]}',
      '{"choices": [{"delta": {"content": "a", "content": "b"}}]}',
      '{"id": 5}', "[1]", '{"choices": [{"delta": {"content": "cut',
    } do
      assert.is_nil(core.chat_chunk(data, st), data)
      assert.are.same({ text = {}, refusal = {}, calls = {} }, st)
    end
    -- A state without its lists is named, before anything in it changes.
    local bad = { calls = {}, refusal = {} }
    assert.has_error(function()
      core.chat_chunk('{"id": "X", "usage": {}, "choices": [{"delta": '
        .. '{"content": "a"}}]}', bad)
    end, "core.chat_chunk: st.text is not a table")
    assert.are.same({ calls = {}, refusal = {} }, bad)
  end)
end)

describe("the Anthropic reply reader", function()

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
    return object {
      { "id", v { '"msg_1"', '"msg_1"', "null", "5", ABSENT } },
      { "type", '"message"' }, { "role", '"assistant"' },
      { "model", '"claude-x"' }, { "content", content },
      { "stop_reason", v { '"end_turn"', '"tool_use"', '"max_tokens"',
        '"refusal"', '"pause_turn"', '"other"', "null", "3", ABSENT } },
      { "stop_sequence", "null" }, { "usage", usage() },
    }
  end

  it("gives the Lua reader's reply, for documents of every shape", function()
    same_replies(anthropic.parse, "anthropic_reply", function()
      return mangled(document, { '{"usage": {"input_tokens": 99}, ',
                                 '{"content": [], ' })
    end)
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

  -- A streamed message, its events now and then of another shape: deltas
  -- (and pings, and blocks' stops) are read in C (core.stream_event).
  local INDEXES = { "0", "0", "0", "1", "1", "2", "null", ABSENT, "-1", "1.0",
    "1.5", '"1"', "true", "{}", "1e300", "123456789012345678901234567890" }

  local function event(kind, members)
    table.insert(members, 1, { "type", r() < 0.97 and string.format("%q", kind)
      or v { ABSENT, "5", "null", '"unknown"' } })
    return object(members)
  end

  local function delta(index)
    local d = object {
      { "type", v { '"text_delta"', '"text_delta"', '"input_json_delta"',
        '"input_json_delta"', '"thinking_delta"', "5", ABSENT } },
      { "text", v { '"Hel"', '"lo"', '""', '"caf\\u00e9"', "5", "null",
        "{}", ABSENT } },
      { "partial_json", v { '"{\\"a\\": "', '"1}"', '""', "7", ABSENT } },
    }
    return event("content_block_delta", {
      { "index", r() < 0.8 and index or v(INDEXES) },
      { "delta", r() < 0.93 and d or v { '"x"', "null", ABSENT, "5", "[]",
        "true" } } })
  end

  local function stream()
    local events = { event("message_start", { { "message", r() < 0.95
      and object { { "id", v { '"msg_1"', "null", "5", ABSENT } },
                   { "usage", usage() } } or v { "null", "[]" } } }) }
    for i = 1, r(0, 3) do
      local index = tostring(i - 1)
      events[#events + 1] = event("content_block_start", {
        { "index", r() < 0.9 and index or v(INDEXES) },
        { "content_block", r() < 0.95 and (r() < 0.5
          and '{"type": "text", "text": ""}'
          or '{"type": "tool_use", "id": "toolu_1", "name": "add", '
            .. '"input": {}}') or v { "null", "5" } } })
      for _ = 1, r(0, 4) do
        events[#events + 1] = delta(index)
        if r() < 0.1 then
          events[#events + 1] = event("ping", {})
        end
      end
      events[#events + 1] = event("content_block_stop", { { "index", index } })
    end
    events[#events + 1] = event("message_delta", {
      { "delta", object { { "stop_reason", v { '"end_turn"', '"tool_use"',
        "null", ABSENT } } } }, { "usage", usage() } })
    if r() < 0.05 then
      events[#events + 1] = event("error", { { "error",
        '{"type": "overloaded_error", "message": "busy"}' } })
    end
    events[#events + 1] = event("message_stop", {})
    for i, data in ipairs(events) do
      events[i] = r() < 0.1 and mangled(function() return data end,
        { '{"type": "ping", ', '{"index": 1, ' }) or data
    end
    return events
  end

  it("reads a stream's deltas in C, with the Lua reader's reply and text",
    function()
      same_streams(anthropic, "stream_event", stream)
    end)
end)

describe("the Responses reply reader", function()
  local function usage()
    local details = { ABSENT, "null", "[]", "5", "{}" }
    return v { ABSENT, "null", "[]", '"x"', "{}", object {
      { "input_tokens", v(COUNTS) }, { "output_tokens", v(COUNTS) },
      { "total_tokens", v(COUNTS) },
      { "input_tokens_details", r() < 0.6 and object {
        { "cached_tokens", v(COUNTS) } } or v(details) },
      { "output_tokens_details", r() < 0.6 and object {
        { "reasoning_tokens", v(COUNTS) } } or v(details) },
    } }
  end

  local function part()
    if r() < 0.05 then
      return pick { "5", '"x"', "null", "[]" }
    end
    return object {
      { "type", v { '"output_text"', '"output_text"', '"refusal"',
        '"reasoning_text"', "5", ABSENT } },
      { "text", v { '"Hello"', '""', '"caf\\u00e9 \\"q\\"\\n"', "null", "7",
        ABSENT } },
      { "refusal", r() < 0.3 and v { '"I cannot"', '""', "null", "5", "[]",
        ABSENT } or nil },
      { "annotations", r() < 0.2 and "[]" or nil },
    }
  end

  local function item()
    local k = r(1, 20)
    if k == 1 then
      return pick { "5", '"x"', "null", "[]" }
    elseif k <= 9 then
      local parts = {}
      for i = 1, r(0, 3) do
        parts[i] = part()
      end
      return object {
        { "type", v { '"message"', '"message"', '"reasoning"', ABSENT } },
        { "id", '"msg_1"' }, { "role", '"assistant"' },
        { "status", '"completed"' },
        { "content", r() < 0.9 and array(parts)
          or v { "{}", "null", '"x"' } },
      }
    end
    return object {
      { "type", v { '"function_call"', '"function_call"', '"function_call"',
        '"custom_tool_call"' } },
      { "id", v { '"fc_1"', "null", "5", ABSENT } },
      { "call_id", v { '"call_1"', '"call_2"', "null", "4", "false",
        ABSENT } },
      { "name", v { '"add"', '"add"', '"x\\u00e9"', "null", ABSENT, "[1]" } },
      { "arguments", v { [["{\"a\": 1}"]], '""', '{"a": 1}', "null", "5",
        ABSENT } },
      { "status", '"completed"' },
    }
  end

  local function document()
    local items = {}
    for i = 1, r(0, 4) do
      items[i] = item()
    end
    return object {
      { "id", v { '"resp_1"', '"resp_1"', "null", "5", ABSENT } },
      { "object", '"response"' },
      { "status", v { '"completed"', '"completed"', '"incomplete"',
        '"failed"', '"in_progress"', "null", "5", ABSENT } },
      { "incomplete_details", v { ABSENT, "null", object {
        { "reason", v { '"max_output_tokens"', '"content_filter"',
          '"other"', "null", "5", ABSENT } } } } },
      { "error", r() < 0.1 and '{"message": "boom", "code": "server_error"}'
        or nil },
      { "output", r() < 0.9 and array(items)
        or v { "{}", "null", '"x"', ABSENT } },
      { "usage", usage() },
    }
  end

  it("gives the Lua reader's reply, for documents of every shape", function()
    same_replies(responses.parse, "responses_reply", function()
      return mangled(document, { '{"usage": {"input_tokens": 99}, ',
                                 '{"output": [], ' })
    end)
  end)

  it("reads text, refusals, calls and usage, and leaves the rest", function()
    local doc = core.responses_reply([[{"id": "resp_1", "status":
      "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
      "output": [{"type": "reasoning", "summary": []}, {"type": "message",
      "content": [{"type": "output_text", "text": "Let me "}, {"type":
      "refusal", "refusal": "not"}]}, {"type": "function_call", "id": "fc_1",
      "call_id": "call_1", "name": "add", "arguments": "{\"a\": 1}"},
      {"type": "function_call", "id": "fc_2", "name": "sub"}], "usage":
      {"input_tokens": 10, "output_tokens": 4.0, "total_tokens": 14,
      "input_tokens_details": {"cached_tokens": 8}}}]])
    assert.are.same({ id = "resp_1", status = "incomplete",
      reason = "max_output_tokens", text = "Let me not", refused = true,
      tool_calls = {
        { id = "call_1", name = "add", arguments = '{"a": 1}' },
        { id = "fc_2", name = "sub" } },
      usage = { input_tokens = 10, output_tokens = 4, total_tokens = 14,
                input_tokens_details = { cached_tokens = 8 },
                output_tokens_details = {} } }, doc)
    local reply = responses.parse([[{"output": [{"type": "function_call",
      "call_id": "c", "name": "add"}]}]])
    assert.are.equal("{}", reply.tool_calls[1].arguments)
    assert.are.equal("tool_calls", reply.finish_reason)
    -- A failed response, a call without a name: the Lua reader's.
    assert.is_nil(core.responses_reply('{"status": "failed", "output": []}'))
    assert.is_nil(core.responses_reply(
      '{"output": [{"type": "function_call"}]}'))
    local _, err = responses.parse('{"output": [{"type": "function_call"}]}')
    assert.are.equal("a function_call item has no name", err)
  end)

  -- A streamed response, its events now and then of another shape: the
  -- events it only shows or skips are read in C (core.stream_event).
  local function event(kind, members)
    table.insert(members, 1, { "type", r() < 0.97 and string.format("%q", kind)
      or v { ABSENT, "5", "null", '"unknown"' } })
    table.insert(members, { "sequence_number", "7" })
    return object(members)
  end

  local function stream()
    local events = { event("response.created", { { "response",
      '{"id": "resp_1", "status": "in_progress", "output": []}' } }) }
    for i = 1, r(0, 3) do
      local at = { "output_index", r() < 0.9 and tostring(i - 1)
        or v { "null", '"1"', "1.5", ABSENT } }
      events[#events + 1] = event("response.output_item.added",
        { at, { "item", item() } })
      for _ = 1, r(0, 4) do
        events[#events + 1] = event(pick { "response.output_text.delta",
          "response.output_text.delta", "response.function_call_arguments"
          .. ".delta", "response.content_part.added" }, { at,
          { "item_id", '"msg_1"' }, { "content_index", v { "0", "null" } },
          { "delta", v { '"Hel"', '"lo"', '""', '"caf\\u00e9"', "5", "null",
            "{}", "[]", "true", ABSENT } } })
      end
      events[#events + 1] = event("response.output_item.done",
        { at, { "item", item() } })
    end
    if r() < 0.05 then
      events[#events + 1] = event(pick { "response.failed", "error" },
        { { "response", '{"error": {"message": "busy"}}' },
          { "message", '"busy"' } })
    end
    events[#events + 1] = event(pick { "response.completed",
      "response.completed", "response.incomplete" },
      { { "response", r() < 0.95 and document() or v { "null", "5" } } })
    for i, data in ipairs(events) do
      events[i] = r() < 0.1 and mangled(function() return data end,
        { '{"type": "error", ', '{"delta": "x", ' }) or data
    end
    return events
  end

  it("reads a stream's deltas in C, with the Lua reader's reply and text",
    function()
      same_streams(responses, "stream_event", stream)
    end)
end)

-- So many calls the C readers leave them (their memory is outside the Lua
-- heap and its limits), to the Lua readers.
describe("the reply readers", function()
  local function calls(n, form)
    local out = {}
    for i = 1, n do
      out[i] = string.format(form, i)
    end
    return table.concat(out, ",")
  end

  local READERS = {
    { parse = openai.parse, fast = "chat_reply", body = function(n)
      return '{"choices": [{"message": {"tool_calls": [' .. calls(n,
        '{"id": "c%d", "function": {"name": "f", "arguments": "{}"}}')
        .. ']}}]}'
    end },
    { parse = anthropic.parse, fast = "anthropic_reply", body = function(n)
      return '{"content": [' .. calls(n, '{"type": "tool_use", "id": "c%d", '
        .. '"name": "f", "input": {}}') .. ']}'
    end },
    { parse = responses.parse, fast = "responses_reply", body = function(n)
      return '{"output": [' .. calls(n, '{"type": "function_call", '
        .. '"call_id": "c%d", "name": "f", "arguments": "{}"}') .. ']}'
    end },
  }

  it("leave a reply of very many calls to the Lua readers", function()
    for _, reader in ipairs(READERS) do
      assert.is_table(core[reader.fast](reader.body(1024)), reader.fast)
      local body = reader.body(1100)
      assert.is_nil(core[reader.fast](body), reader.fast)
      local reply = reader.parse(body)
      assert.are.equal(1100, #reply.tool_calls)
      assert.are.equal("c1100", reply.tool_calls[1100].id)
    end
  end)
end)

-- Requests in spool's chat form, random in shape.
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
  if r() < 0.1 then
    c.arguments = { a = 1, b = json.array { 1, 2 } }
  elseif r() < 0.05 then
    c = pick { "x", 5 }
  end
  return c
end

local function message()
  local role = pick { "user", "assistant", "assistant", "tool", "system",
    "developer", nil }
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
  if r() < 0.1 then
    m.tag = "result" -- the blocks form's: not sent
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

-- own_forms: the writer keeps its forms in the caller's table itself.
local WRITERS = {
  { name = "chat", module = openai, fast = "chat_body", own_forms = true },
  { name = "Anthropic", module = anthropic, fast = "anthropic_body" },
  { name = "Responses", module = responses, fast = "responses_body" },
}

-- What format w's build makes of req: true and the body, or false and
-- the error; with its writer in C, or (in_c false) its Lua one alone.
local function built(w, model, req, in_c)
  local fast = core[w.fast]
  if not in_c then
    core[w.fast] = function() error("not here") end
  end
  local out = table.pack(pcall(w.module.build, model, req))
  core[w.fast] = fast
  if out[1] then
    out[2] = out[2].body
  else
    out[2] = tostring(out[2]):gsub("^.-spool%.json", "spool.json")
  end
  return out
end

for _, w in ipairs(WRITERS) do
  describe("the " .. w.name .. " request writer", function()
    it("writes the Lua writer's bytes, for requests of every shape",
      function()
        local seed = os.time()
        math.randomseed(seed)
        for round = 1, 3000 do
          local model = { name = pick { "claude-x", "m" }, temperature =
            pick { nil, 0.2 }, max_tokens = pick { nil, 1024 } }
          local req = request()
          local want = built(w, model, req, false)
          local got = built(w, model, req, true)
          assert.are.same(want, got, string.format("seed %d, round %d", seed,
            round))
          if want[1] then
            assert.is_table(json.decode(got[2]))
          end
        end
      end)

    it("writes each kept message once, from step to step, as a fresh "
      .. "write does", function()
      local seed = os.time()
      math.randomseed(seed)
      for round = 1, 300 do
        -- A thread's messages grow step by step; the walk keeps each
        -- (message -> false), and another format's writer may have kept
        -- its own forms in the same table.
        local kept, messages = {}, {}
        for step = 1, r(1, 6) do
          for _ = 1, r(1, 3) do
            local m = message()
            messages[#messages + 1] = m
            if r() < 0.8 then
              kept[m] = not w.own_forms and r() < 0.2
                and '{"content":"openai\'s","role":"user"}' or false
            end
          end
          local req = { system = "s", messages = messages }
          local fresh = built(w, { name = "m" }, req, true)
          req.message_forms = kept
          local again = built(w, { name = "m" }, req, true)
          assert.are.same(fresh, again, string.format("seed %d, round %d, "
            .. "step %d", seed, round, step))
        end
      end
    end)

    it("stops at its bound, not after writing it all", function()
      local big = ("a"):rep(2 ^ 20)
      local messages = {}
      for i = 1, 1000 do
        messages[i] = { role = "user", content = big }
      end
      local req = { messages = messages }
      local before = core.rusage().max_rss_kb
      local got = built(w, { name = "m" }, req, true)
      assert.is_false(got[1])
      assert.matches("larger than 64 MiB", got[2])
      -- (not after writing all 1,000 MiB)
      assert.is_true(core.rusage().max_rss_kb - before < 500 * 1024)
      assert.are.same(got, built(w, { name = "m" }, req, false))
    end)

    it("counts nesting from the body's root, as json.encode does", function()
      local deep = "x"
      for _ = 1, 510 do
        deep = json.array { deep }
      end
      local req = { messages = { { role = "user", content = deep } } }
      local got = built(w, { name = "m" }, req, true)
      assert.are.same(built(w, { name = "m" }, req, false), got)
      assert.is_false(got[1])
      assert.matches("nesting too deep", got[2])
    end)

    it("writes the body a message's __index asks for meanwhile apart",
      function()
        local inner
        local m = setmetatable({}, { __index = function(_, k)
          if k == "content" then
            inner = w.module.build({ name = "inner" }, { messages = {} }).body
            return "hi"
          end
          if k == "role" then
            return "user"
          end
        end })
        local req = { messages = { m } }
        local got = built(w, { name = "m" }, req, true)
        assert.are.same(built(w, { name = "m" }, req, false), got)
        assert.are.equal(w.module.build({ name = "inner" },
          { messages = {} }).body, inner)
      end)
  end)
end

describe("the request writers' kept forms", function()
  local a = { role = "user", content = "hi" }
  local b = { role = "assistant", content = "", tool_calls = { {
    id = "t1", name = "add", arguments = '{"b":1,"a":2}' } } }
  local c = { role = "tool", tool_call_id = "t1", content = "3" }
  local empty = { role = "assistant", content = "" }

  -- The body, and again with the forms the first write kept.
  local function twice(module, kept)
    local req = { messages = { a, b, empty, c }, message_forms = kept }
    return module.build({ name = "m" }, req).body,
      module.build({ name = "m" }, req).body
  end

  it("are kept only of a message the caller keeps, beside its own",
    function()
      local kept = { [a] = false, [b] = false, [empty] = false }
      local body, again = twice(anthropic, kept)
      assert.are.equal('{"max_tokens":4096,"messages":[{"content":[{"text":'
        .. '"hi","type":"text"}],"role":"user"},{"content":[{"id":"t1",'
        .. '"input":{"a":2,"b":1},"name":"add","type":"tool_use"}],"role":'
        .. '"assistant"},{"content":[{"content":"3","tool_use_id":"t1","type":'
        .. '"tool_result"}],"role":"user"}],"model":"m"}', body)
      assert.are.equal(body, again)
      body, again = twice(responses, kept)
      assert.are.equal('{"input":[{"content":"hi","role":"user"},{"arguments":'
        .. '"{\\"b\\":1,\\"a\\":2}","call_id":"t1","name":"add","type":'
        .. '"function_call"},{"call_id":"t1","output":"3","type":'
        .. '"function_call_output"}],"model":"m","store":false}', body)
      assert.are.equal(body, again)
      -- The walk's own entries are untouched: OpenAI's forms go there.
      assert.is_false(kept[a])
      assert.is_nil(kept[c])
    end)
end)

-- A thread's messages are written once: the forms a step keeps
-- (core.chat_body's `kept`) make the bytes a fresh write makes.
describe("the chat request writer, with kept forms", function()
  local function body(messages, kept)
    return core.chat_body("m", "sys", messages, nil, nil, nil, nil, nil,
      kept)
  end

  it("writes a kept message's form, and keeps only what it is asked to",
    function()
      local a = { role = "user", content = "caf\195\169" }
      local b = { role = "assistant", tool_calls = { { id = "c1",
        name = "add", arguments = '{"a":1}' } } }
      local c = { role = "tool", tool_call_id = "c1", content = "2" }
      local fresh = body({ a, b, c })
      local kept = { [a] = false, [b] = false }
      assert.are.equal(fresh, body({ a, b, c }, kept))
      assert.are.equal('{"content":"caf\195\169","role":"user"}', kept[a])
      assert.is_string(kept[b])
      assert.is_nil(kept[c]) -- not asked for: written each time
      assert.are.equal(fresh, body({ a, b, c }, kept))
      -- once kept, a message's form is what is written
      kept[a] = '{"content":"kept","role":"user"}'
      assert.are.equal("kept", json.decode(body({ a, b }, kept))
        .messages[2].content)
    end)

  it("keeps nothing of a message it could not write", function()
    local bad = { role = "user", content = "\255" }
    local kept = { [bad] = false }
    assert.has_error(function() body({ bad }, kept) end)
    assert.is_false(kept[bad])
  end)
end)

-- What reviews of the readers and writers found (each failed before).
describe("the writers and readers in C, on hostile input", function()
  local function write(fast, messages)
    if fast == "anthropic_body" then
      return pcall(core.anthropic_body, "m", nil, messages, nil, 10, nil,
        nil, nil, function() return {} end)
    end
    return pcall(core[fast], "m", nil, messages)
  end

  it("walk a list no further than its length", function()
    -- Each element is an assistant's message with nothing to say, which
    -- makes no block or item, through an __index in C (no Lua runs): the
    -- walk to the first nil never ended.
    local silent = { role = "assistant", content = false, tool_calls = false,
                     __index = getmetatable }
    local endless = setmetatable({}, silent)
    local calls = setmetatable({}, { __index = function()
      return { name = "f" } end })
    for _, fast in ipairs { "anthropic_body", "responses_body" } do
      local ok, err = write(fast, endless)
      assert.is_false(ok, fast)
      assert.matches("messages: an element past the list's length", err)
      ok, err = write(fast, { { role = "assistant", tool_calls = calls } })
      assert.is_false(ok, fast)
      assert.matches("tool_calls: an element past the list's length", err)
      ok, err = write(fast, setmetatable({}, { __len = function()
        return 2 ^ 40 end }))
      assert.is_false(ok, fast)
      assert.matches("messages: more than 1048576 of them", err)
    end
  end)

  it("are not held for good by a call whose coroutine died of an error",
    function()
      -- coroutine.resume leaves a coroutine that raised with its
      -- to-be-closed slots open: the scratch the call had was never given
      -- back, and every reader and writer in C refused from then on.
      local boom = setmetatable({}, { __index = function() error("boom") end })
      for _, fast in ipairs { "anthropic_body", "responses_body",
                              "chat_body" } do
        local co = coroutine.create(function() write(fast, { boom }) end)
        assert(coroutine.resume(co))
        co = coroutine.create(function()
          core[fast]("m", nil, { boom }, nil, 10, nil, nil, nil, print)
        end)
        local ok, err = coroutine.resume(co)
        assert.is_false(ok)
        assert.matches("boom", err)
        assert.is_table(core.chat_reply('{"choices": [{"message": '
          .. '{"content": "hi"}}]}'), fast)
        assert.are.equal('{"messages":[],"model":"m"}',
          core.chat_body("m", nil, {}))
      end
    end)
end)

describe("the chat writer, on hostile input", function()
  it("bounds a body inside one message's tool calls", function()
    local big = ("a"):rep(2 ^ 20)
    local calls = {}
    for i = 1, 1000 do
      calls[i] = { name = "f", arguments = big }
    end
    local before = core.rusage().max_rss_kb
    local ok, err = pcall(core.chat_body, "m", nil,
      { { role = "assistant", tool_calls = calls } })
    assert.is_false(ok)
    assert.matches("larger than 64 MiB", err)
    -- it stopped at the bound, not after writing all 1,000 MiB
    assert.is_true(core.rusage().max_rss_kb - before < 500 * 1024)
    local w = WRITERS[1]
    local got = built(w, { name = "m" }, { messages = {
      { role = "assistant", tool_calls = calls } } }, false)
    assert.is_false(got[1])
    assert.matches("larger than 64 MiB", got[2])
  end)

  it("splices only tools that are one JSON value", function()
    for _, fast in ipairs { "chat_body", "responses_body" } do
      local ok, err = pcall(core[fast], "m", nil, {}, "}{")
      assert.is_false(ok)
      assert.matches("tools must be a json.raw", err)
    end
    local ok, err = pcall(core.anthropic_body, "m", nil, {}, "}{", 10, nil,
      nil, nil, print)
    assert.is_false(ok)
    assert.matches("tools must be a json.raw", err)
  end)
end)
