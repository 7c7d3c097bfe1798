-- spool.llm against the providers' real wire traffic: the bytes in
-- spec/fixtures/recorded/ (sources in its README.md) replayed by the mock
-- model as they are, whole, in 7-byte writes and with CRLF line ends, and
-- the normalized reply checked field by field.
local h = require "spec.support"
local llm = require "spool.llm"

local DIR = h.ROOT .. "/spec/fixtures/recorded/"

local function read(name)
  local f = assert(io.open(DIR .. name, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- `s` cut into writes of `n` bytes (UTF-8 sequences split too).
local pieces = require("spool.model.mock_wire").pieces

local function crlf(s)
  return (s:gsub("\n", "\r\n"))
end

local function usage(input, output, cached, reasoning, written)
  return { input_tokens = input, output_tokens = output,
           total_tokens = input + output, cached_tokens = cached,
           reasoning_tokens = reasoning, cache_creation_tokens = written }
end

local function call(id, name, arguments, args)
  return { id = id, name = name, arguments = arguments, args = args }
end

local ADD_ARGS = '{"a": 2, "b": 3}'
local TWO_THREE = { a = 2, b = 3 }

-- Replies the adapters must make of recorded successes. `stream`: the
-- fixture is an event stream; `streamed`: what on_text gets, when it is
-- not the text.
local REPLIES = {
  -- OpenAI Chat Completions
  { file = "openai_chat_text.sse", provider = "openai", stream = true,
    id = "chatcmpl-CRdytk5LO0hrSMS9Co5OPHLFCuLSF",
    text = 'Hi! In Portuguese, you say "Olá!"', finish = "stop",
    usage = usage(20, 10, 0, 0) },
  { file = "openai_chat_reasoning.sse", provider = "openai", stream = true,
    text = "Oi!", finish = "stop", usage = usage(19, 148, 0, 128) },
  { file = "openai_chat_parallel_tools.sse", provider = "openai",
    stream = true, finish = "tool_calls", usage = usage(106, 50, 0, 0),
    calls = {
      call("call_vgTL4QSVMl9ocwrlDENBvKCl", "add", ADD_ARGS, TWO_THREE),
      call("call_0163ysRAfpd1kX8JEsq8piJv", "multiply", ADD_ARGS,
        TWO_THREE) } },
  { file = "openai_chat_length.sse", provider = "openai", stream = true,
    text = '{"', finish = "length", usage = usage(79, 1, nil, 0) },
  { file = "openai_chat_refusal.sse", provider = "openai", stream = true,
    text = "I'm sorry, I can't assist with that request.", streamed = "",
    finish = "content_filter", usage = usage(79, 11, nil, 0) },
  { file = "openai_chat_parallel_tools.json", provider = "openai",
    id = "chatcmpl-CRdyxdsCExOS7bMCJ0q5fBEN9lCYM",
    finish = "tool_calls", usage = usage(110, 50, 0, 0), calls = {
      call("call_H0yMeWt85QiaFMjrlPqAyCYY", "add", ADD_ARGS, TWO_THREE),
      call("call_Xh3xOMoQueLZUgW7HYVvwwql", "multiply", ADD_ARGS,
        TWO_THREE) } },
  { file = "openai_chat_reasoning.json", provider = "openai",
    text = "Oi!", finish = "stop", usage = usage(19, 203, 0, 192) },
  { file = "openai_chat_refusal.json", provider = "openai",
    text = "I'm very sorry, but I can't assist with that.",
    finish = "content_filter", usage = usage(79, 12, nil, 0) },
  { file = "openai_chat_content_filter.json", provider = "openai",
    finish = "content_filter", usage = usage(82, 34) },
  { file = "openai_chat_cached_usage.json", provider = "openai",
    text = "Oi!", finish = "stop", usage = usage(6226, 1411, 1152, 768) },

  -- OpenAI Responses
  { file = "responses_reasoning_text.sse", provider = "openai-responses",
    stream = true,
    id = "resp_0374dd39c9ea81bb0168f2381531e88192bcc27c60d5000651",
    text = "Olá!", finish = "stop", usage = usage(19, 136, 0, 128) },
  { file = "responses_parallel_tools.sse", provider = "openai-responses",
    stream = true, finish = "tool_calls", usage = usage(52, 50, 0, 0),
    calls = {
      call("call_3kTB5GwkneSeSzqRU0vGYPDL", "add", '{"a":2,"b":3}',
        TWO_THREE),
      call("call_Jt8bB5S9YYfmIi76VQmbBbRU", "multiply", '{"a":2,"b":3}',
        TWO_THREE) } },
  { file = "responses_incomplete.sse", provider = "openai-responses",
    stream = true, streamed = "", finish = "length",
    text = "Rivers are vital components of Earth's hydrological system, "
      .. "serving as lifelines for", usage = usage(16, 16, 0, 0) },
  { file = "responses_reasoning_text.json", provider = "openai-responses",
    id = "resp_05edda4810c41de00168f23812e34481909c921eeab19085a0",
    text = "Oi!", finish = "stop", usage = usage(19, 136, 0, 128) },
  { file = "responses_parallel_tools.json", provider = "openai-responses",
    finish = "tool_calls", usage = usage(108, 51, 0, 0), calls = {
      call("call_4duuhyRqgE5yacjdB7N3qLs3", "add", '{"a":2,"b":3}',
        TWO_THREE),
      call("call_R9NaXdicUFYsl6ROHrFdxe2A", "multiply", '{"a":2,"b":3}',
        TWO_THREE) } },
  { file = "responses_text_escaped.json", provider = "openai-responses",
    text = "The results are as follows:\n- **Addition**: 2 + 3 = 5\n- "
      .. "**Multiplication**: 2 × 3 = 6", finish = "stop",
    usage = usage(154, 36, 0, 0) },

  -- Anthropic Messages
  { file = "anthropic_text.sse", provider = "anthropic", stream = true,
    id = "msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK", text = "Hello there!",
    finish = "stop", usage = usage(11, 6) },
  { file = "anthropic_tool_use.sse", provider = "anthropic", stream = true,
    text = "I'll check the current weather in Paris for you.",
    finish = "tool_calls", usage = usage(377, 65, 0), calls = {
      call("toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather",
        '{"location": "Paris"}', { location = "Paris" }) } },
  { file = "anthropic_parallel_tools.sse", provider = "anthropic",
    stream = true, text = "I'll add and multiply the numbers 2 and 3 for you.",
    finish = "tool_calls", usage = usage(502, 137, 0), calls = {
      call("toolu_01GrN36ErVgy85ECZ6pbzBL4", "add", ADD_ARGS, TWO_THREE),
      call("toolu_0113xQa4VtccyoXcHaukkzom", "multiply", ADD_ARGS,
        TWO_THREE) } },
  { file = "anthropic_thinking_tool_use.sse", provider = "anthropic",
    stream = true, finish = "tool_calls", usage = usage(423, 119, 0),
    calls = { call("toolu_0171KFcBwn1Z64XzvQfz3sZS", "weather",
      '{"location": "Florence, Italy"}', { location = "Florence, Italy" }) } },
  -- cache writes and reads count as input; message_delta's usage is
  -- cumulative, so it replaces message_start's
  { file = "anthropic_cache_usage.sse", provider = "anthropic",
    stream = true, text = "Hello there!", finish = "stop",
    -- 12 tokens written to the cache: a share of the input, as read ones
    -- are (the traces' gen_ai.usage.cache_creation.input_tokens)
    usage = usage(40 + 12 + 7, 8, 7, 3, 12) },
  { file = "anthropic_refusal.sse", provider = "anthropic", stream = true,
    finish = "content_filter", usage = usage(20, 120, nil, 67) },
  { file = "anthropic_max_tokens.sse", provider = "anthropic", stream = true,
    text = "I'll create a comprehensive tax guide for someone with multiple "
      .. "W2s and save it in a file called taxes.txt. Let me do that for you "
      .. "now.",
    finish = "length", usage = usage(450, 124, 0), calls = {
      -- cut off mid-JSON: kept as written, not parsed
      call("toolu_01EKqbqmZrGRXy18eN7m9kvY", "make_file",
        '{"filename": "taxes.txt", "lines_of_text": [\n"# COMPREHENSIVE '
        .. 'TAX GUIDE FOR INDIVIDUALS WITH MULTIPLE W-2s",\n"",\n"## '
        .. 'INTRODUCTION",\n"",\n"Filing taxes') } },
  { file = "anthropic_thinking_tool_use.json", provider = "anthropic",
    id = "msg_0161zGUJcy7n6Gtc3W2yEfEi", finish = "tool_calls",
    usage = usage(423, 126, 0), calls = {
      call("toolu_018GcaTNHipGG9yeZ3srYF9d", "weather",
        '{"location":"Florence, Italy"}', { location = "Florence, Italy" }) } },
  { file = "anthropic_tool_use.json", provider = "anthropic",
    text = "I'll get the weather information for Florence, Italy for you.",
    finish = "tool_calls", usage = usage(394, 67, 0), calls = {
      call("toolu_01TdBhfkiVbuyrCtsoQ2P4v8", "weather",
        '{"location":"Florence, Italy"}', { location = "Florence, Italy" }) } },
}

-- Recorded failures: an error body with its status, or an error inside a
-- 200 stream. Each is tried with max_retries = 1: `attempts` says whether
-- spool.llm retried it.
local FAILURES = {
  { file = "openai_error_model_not_found.json", provider = "openai",
    status = 404, attempts = 1,
    error = "openai returned HTTP 404: The model `invalid-model-xyz` does "
      .. "not exist or you do not have access to it." },
  { file = "openai_chat_error_event.sse", provider = "openai", stream = true,
    attempts = 2,
    error = "openai reported an error in the stream: The server had an "
      .. "error while processing your request. Sorry about that!" },
  { file = "responses_error_previous_response_not_found.json",
    provider = "openai-responses", status = 400, attempts = 1,
    error = "openai-responses returned HTTP 400: previous_response_not_found: "
      .. "Previous response with id 'resp_000000000000000000000000000000' "
      .. "not found." },
  { file = "responses_failed.sse", provider = "openai-responses",
    stream = true, attempts = 2,
    error = "openai-responses reported an error in the stream: the response "
      .. "failed: server_error: The model failed to generate a response." },
  { file = "responses_error_event.sse", provider = "openai-responses",
    stream = true, attempts = 2,
    error = "openai-responses reported an error in the stream: "
      .. "ERR_SOMETHING: Something went wrong" },
  { file = "responses_error_event_nested.sse", provider = "openai-responses",
    stream = true, attempts = 2,
    error = "openai-responses reported an error in the stream: "
      .. "unknown-error: Foobar" },
  { file = "anthropic_error_invalid_request.json", provider = "anthropic",
    status = 400, headers = { ["x-should-retry"] = "false" }, attempts = 1,
    error = "anthropic returned HTTP 400: invalid_request_error: prompt is "
      .. "too long: 205429 tokens > 200000 maximum" },
  { file = "anthropic_error_overloaded.json", provider = "anthropic",
    status = 529, attempts = 2,
    error = "anthropic returned HTTP 529: overloaded_error: Overloaded" },
  { file = "anthropic_overloaded_event.sse", provider = "anthropic",
    stream = true, attempts = 2,
    error = "anthropic reported an error in the stream: overloaded_error: "
      .. "Overloaded" },
  { file = "anthropic_api_error_event.sse", provider = "anthropic",
    stream = true, attempts = 2,
    error = "anthropic reported an error in the stream: api_error: "
      .. "Overloaded" },
}

local model_at = h.model_at

local settle = h.settle_mock

-- How a fixture goes on the wire: whole, in small writes, or (a variant
-- no provider sends, which the SSE standard allows) with CRLF line ends.
local WAYS = {
  whole = function(s) return s end,
  ["7-byte writes"] = function(s) return pieces(s, 7) end,
  CRLF = function(s) return crlf(s) end,
}

local function ways_for(c)
  if c.stream then
    return { "whole", "7-byte writes", "CRLF" }
  end
  return { "whole" }
end

describe("recorded provider traffic", function()
  local mock

  after_each(function()
    if mock then
      settle(mock)
      mock.close()
      mock = nil
    end
  end)

  local function ask(c, reply, settings)
    mock = h.mock { rules = { { reply = reply } } }
    local got = {}
    local r, err, attempts = llm.chat {
      model = model_at(mock, c.provider, settings), system = "Be brief.",
      messages = { { role = "user", content = "hi" } }, stream = c.stream,
      on_text = function(p) got[#got + 1] = p end }
    return r, err, attempts, table.concat(got)
  end

  for _, c in ipairs(REPLIES) do
    for _, way in ipairs(ways_for(c)) do
      it(c.file .. " (" .. c.provider .. ", " .. way .. ")", function()
        local bytes = WAYS[way](read(c.file))
        local r, err, _, streamed = ask(c, c.stream and { sse = bytes }
          or { body = bytes })
        assert.is_nil(err)
        assert.are.equal(c.provider, r.provider)
        assert.are.equal(c.text or "", r.text or "")
        assert.are.equal(c.finish, r.finish_reason)
        assert.are.same(c.usage, r.usage)
        assert.are.same(c.calls or {}, r.tool_calls)
        if c.id then
          assert.are.equal(c.id, r.id)
        end
        if c.stream then
          assert.are.equal(c.streamed or c.text or "", streamed)
        else
          assert.are.equal("", streamed)
        end
        assert.are.equal(1, #r.attempts)
        assert.are.equal(200, r.attempts[1].status)
      end)
    end
  end

  for _, c in ipairs(FAILURES) do
    local modes = c.stream and ways_for(c) or { "whole", "streamed" }
    for _, way in ipairs(modes) do
      it(c.file .. " (" .. c.provider .. ", " .. way .. ")", function()
        local bytes = read(c.file)
        local reply
        if c.status then
          reply = { status = c.status, body = bytes, headers = c.headers }
        else
          reply = { sse = WAYS[way](bytes) }
        end
        local r, err, attempts = ask({ provider = c.provider,
          stream = c.stream or way == "streamed" }, reply, { max_retries = 1 })
        assert.is_nil(r)
        local want = "EMODEL: " .. c.error .. string.format(" (after %d %s)",
          c.attempts, c.attempts == 1 and "attempt" or "attempts")
        assert.are.equal(want, err)
        assert.are.equal(c.attempts, #attempts)
        assert.are.equal(c.status or 200, attempts[1].status)
      end)
    end
  end
end)
