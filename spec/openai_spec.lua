-- The agents as OpenAI-compatible models (issue 26), called by real
-- clients: the official `openai` SDK and the AI SDK's OpenAI-compatible
-- provider (spec/npm/openai_client.mjs, pinned in spec/npm), against
-- spool serve: the models, a chat completion whole and streamed, a
-- conversation that waits for a person and is answered in the next
-- message, errors in OpenAI's shape, the demo's pipeline.
local h = require "spec.support"
local workers = require "spec.serve_support"
local json = require "spool.json"

local CLIENT = h.ROOT .. "/spec/npm/openai_client.mjs"
local CHAT = h.ROOT .. "/spec/fixtures/chat"

local function serve(project, mock_script)
  local s, stop = workers.serve_copy(project, mock_script)
  finally(stop)
  return s
end


-- Runs the clients on a plan's steps; one decoded line per step.
local function clients(s, steps, key)
  local out, code = h.sh("node " .. h.q(CLIENT) .. " " .. h.q(json.encode({
    baseURL = s.url .. "/v1", apiKey = key or s.token, steps = steps }))
    .. " 2>&1")
  assert(code == 0, out)
  local lines = {}
  for line in out:gmatch("[^\n]+") do
    lines[#lines + 1] = assert(json.decode(line), line)
  end
  return lines
end

local function user(text)
  return { role = "user", content = text }
end

describe("agents as OpenAI models", function()
  it("lists the agents, and answers a chat completion whole and streamed",
    function()
    local s = serve(CHAT, "mock.lua")
    local got = clients(s, {
      { models = true },
      { chat = "helper", messages = { { role = "system", content = "Be kind." },
                                      user("hello there") } },
      { chat = "helper", messages = { user("hello again") }, stream = true,
        usage = true },
    })
    local models = got[1]
    assert.are.equal(1, #models)
    assert.are.equal("helper", models[1].id)
    assert.are.equal("model", models[1].object)
    local c = got[2]
    assert.are.equal("chat.completion", c.object)
    assert.are.equal("helper", c.model)
    assert.are.equal("assistant", c.choices[1].message.role)
    assert.are.equal("Here is my answer, in several words: you said hello "
      .. "there.", c.choices[1].message.content)
    assert.are.equal("stop", c.choices[1].finish_reason)
    assert.truthy(c.usage.prompt_tokens > 0)
    assert.are.equal(c.usage.prompt_tokens + c.usage.completion_tokens,
      c.usage.total_tokens)
    assert.are.equal("done", c.spool.status)
    assert.are.equal("chatcmpl-" .. c.spool.thread, c.id)
    -- Streamed: the model's own text, as it was generated, in pieces.
    local st = got[3]
    assert.are.equal("Here is my answer, in several words: you said hello "
      .. "again.", st.text)
    assert.truthy(st.deltas > 1, "the text came in one piece")
    assert.are.equal("stop", st.finish)
    assert.truthy(st.usage.total_tokens > 0)
    -- The thread is an ordinary one: the API shows it.
    local status, t = workers.curl(s, "GET", "/v1/threads/" .. c.spool.thread
      .. "?events=false")
    assert.are.equal(200, status)
    assert.are.equal("done", t.status)
    assert.are.equal("helper", t.agent)
  end)

  it("asks for approval in the reply, and takes it only as the word "
    .. "approve, in the same conversation", function()
    local s = serve(CHAT, "mock.lua")
    local first = clients(s, { { chat = "helper",
      messages = { user("a refund please") } } })[1]
    local ask = first.choices[1].message.content
    assert.are.equal("waiting", first.spool.status)
    assert.are.equal("approval", first.spool.waiting_for.kind)
    assert.matches('asks approval to run refund with {"amount":5}', ask, 1,
      true)
    assert.matches("[spool thread " .. first.spool.thread .. "]", ask, 1, true)
    local history = { user("a refund please"),
                      { role = "assistant", content = ask } }
    local function next_turn(text, streamed)
      local messages = { table.unpack(history) }
      messages[#messages + 1] = user(text)
      return clients(s, { { chat = "helper", messages = messages,
                            stream = streamed, usage = streamed } })[1]
    end
    -- "yes" is not an approval: the question is asked again.
    local again = next_turn("yes")
    assert.are.equal(first.spool.thread, again.spool.thread)
    assert.are.equal("waiting", again.spool.status)
    -- The word is, streamed this time.
    local done = next_turn("approve", true)
    assert.are.equal("Here is my answer, in several words: refunded 5.",
      done.text)
    assert.are.equal("done", done.spool.status)
    assert.are.equal(first.spool.thread, done.spool.thread)
    local status, t = workers.curl(s, "GET", "/v1/threads/"
      .. first.spool.thread .. "?events=false")
    assert.are.equal(200, status)
    assert.are.equal("done", t.status)
  end)

  it("answers a question with the next message, found by metadata too",
    function()
    local s = serve(CHAT, "mock.lua")
    local first = clients(s, { { chat = "helper",
      messages = { user("which colour?") } } })[1]
    assert.are.equal("ask", first.spool.waiting_for.kind)
    assert.matches("^Which colour%?", first.choices[1].message.content)
    -- A client that keeps no history names the thread in metadata.
    local answer = clients(s, { { chat = "helper", messages = { user("Blue") },
      metadata = { spool_thread = first.spool.thread } } })[1]
    assert.are.equal(first.spool.thread, answer.spool.thread)
    assert.are.equal("Here is my answer, in several words: Blue.",
      answer.choices[1].message.content)
  end)

  it("answers the Responses API, whole and streamed, and continues a "
    .. "thread with previous_response_id", function()
    local s = serve(CHAT, "mock.lua")
    local got = clients(s, {
      { responses = "helper", input = "hello responses" },
      { responses = "helper", input = "hello stream", stream = true },
      { responses = "helper", input = { { role = "user",
          content = { { type = "input_text", text = "a refund please" } } } } },
    })
    local r = got[1]
    assert.are.equal("response", r.object)
    assert.are.equal("completed", r.status)
    assert.are.equal("Here is my answer, in several words: you said hello "
      .. "responses.", r.output_text)
    assert.truthy(r.usage.input_tokens > 0)
    assert.are.equal("resp_" .. r.spool.thread .. "_0", r.id)
    local st = got[2]
    assert.are.equal("Here is my answer, in several words: you said hello "
      .. "stream.", st.text)
    assert.truthy(st.deltas > 1)
    assert.are.same({ "response.created", "response.in_progress",
      "response.output_item.added", "response.content_part.added",
      "response.output_text.delta", "response.output_text.done",
      "response.content_part.done", "response.output_item.done",
      "response.completed" }, st.events)
    assert.are.equal("completed", st.response.status)
    -- An approval, asked in one response and given in the next.
    local ask = got[3]
    assert.are.equal("waiting", ask.spool.status)
    assert.matches("asks approval to run refund", ask.output_text, 1, true)
    local next = clients(s, {
      { responses = "helper", input = "sure", previous = ask.id },
      { responses = "helper", input = "approve", previous = ask.id },
      { retrieve = ask.id },
    })
    assert.are.equal(ask.id, next[1].id) -- "sure" is not an approval
    assert.are.equal("waiting", next[1].spool.status)
    local done = next[2]
    assert.are.equal("resp_" .. ask.spool.thread .. "_1", done.id)
    assert.are.equal(ask.id, done.previous_response_id)
    assert.are.equal("Here is my answer, in several words: refunded 5.",
      done.output_text)
    -- Any response reads again as it was, from the thread's events.
    assert.are.equal(ask.output_text, next[3].output_text)
    -- A thread that ended goes on as a new one, on the conversation.
    local after = clients(s, { { responses = "helper", input = "thanks",
      previous = done.id } })[1]
    assert.are_not.equal(ask.spool.thread, after.spool.thread)
    local _, t = workers.curl(s, "GET", "/v1/threads/" .. after.spool.thread)
    assert.are.equal("user: a refund please\n\nassistant: Here is my "
      .. "answer, in several words: refunded 5.\n\nuser: thanks",
      t.events[1].data.input)
  end)

  it("refuses in OpenAI's error shape", function()
    local s = serve(CHAT, "mock.lua")
    local got = clients(s, {
      { chat = "nosuch", messages = { user("hi") } },
      { chat = "helper", messages = {} },
    })
    assert.are.equal(404, got[1].error.status)
    assert.are.equal("model_not_found", got[1].error.code)
    assert.are.equal("not_found_error", got[1].error.type)
    assert.matches("the model 'nosuch' does not exist", got[1].error.message,
      1, true)
    assert.are.equal(400, got[2].error.status)
    assert.are.equal("invalid_request_error", got[2].error.type)
    local status, m = workers.curl(s, "GET", "/v1/models/helper")
    assert.are.equal(200, status)
    assert.are.equal("helper", m.id)
    status, m = workers.curl(s, "GET", "/v1/models/nosuch")
    assert.are.equal(404, status)
    assert.are.equal("model_not_found", m.error.code)
    -- A thread that fails is an error, whole; streamed, the reply says so.
    got = clients(s, {
      { chat = "helper", messages = { user("break it") } },
      { chat = "helper", messages = { user("break it") }, stream = true },
      { responses = "helper", input = "hi", previous = "resp_t_nosuch_0" },
      { retrieve = "resp_t_nosuch_3" },
    })
    assert.are.equal(500, got[1].error.status)
    assert.are.equal("agent_failed", got[1].error.code)
    assert.matches("the agent helper failed: ", got[1].error.message, 1, true)
    assert.matches("^The agent failed: ", got[2].text)
    assert.are.equal("stop", got[2].finish)
    assert.are.equal(404, got[3].error.status)
    assert.are.equal("previous_response_not_found", got[3].error.code)
    assert.are.equal(404, got[4].error.status)
    -- The API's token is the key; another is refused.
    local bad = clients(s, { { models = true } }, "sk-wrong")[1]
    assert.are.equal(401, bad.error.status)
    assert.are.equal("authentication_error", bad.error.type)
  end)

  it("serves the AI SDK's OpenAI-compatible provider, whole and streamed",
    function()
    local s = serve(CHAT, "mock.lua")
    local got = clients(s, {
      { aisdk = "helper", prompt = "hello sdk" },
      { aisdk = "helper", prompt = "hello stream", stream = true },
    })
    assert.are.equal("Here is my answer, in several words: you said hello "
      .. "sdk.", got[1].text)
    assert.are.equal("stop", got[1].finish)
    assert.are.equal("Here is my answer, in several words: you said hello "
      .. "stream.", got[2].text)
    assert.truthy(got[2].deltas > 1)
  end)

  it("streams a thread's model text on its event stream with "
    .. "?deltas=true, between the durable events", function()
    local s = serve(CHAT, "mock.lua")
    local status, v = workers.curl(s, "POST", "/v1/threads", json.encode({
      agent = "helper", input = "which colour?", wait_ms = 5000 }))
    assert.are.equal(201, status)
    assert.are.equal("waiting", v.status)
    local file = os.tmpname()
    finally(function() os.remove(file) end)
    h.sh(string.format("curl -sN -m 20 %s %s/v1/threads/%s/stream?deltas=true "
      .. ">%s 2>&1 &", workers.auth(s), s.url, v.id, h.q(file)))
    h.wait_for(function()
      return h.slurp(file):find("event: human_request", 1, true)
    end, 10000, "the stream to start")
    status = workers.curl(s, "POST", "/v1/threads/" .. v.id .. "/events",
      json.encode({ type = "answer", text = "Blue" }))
    assert.are.equal(202, status)
    local text = h.wait_for(function()
      local t = h.slurp(file)
      return t:find("event: end", 1, true) and t
    end, 10000, "the thread to end")
    local pieces, first_delta, done_at = {}, nil, nil
    for block in text:gmatch("(.-)\n\n") do
      local kind = block:match("event: (%S+)")
      if kind == "delta" then
        assert.is_nil(block:match("^id:"), "a delta is not durable")
        pieces[#pieces + 1] = json.decode(block:match("data: (.*)$")).text
        first_delta = first_delta or #pieces
      elseif kind == "done" then
        done_at = #pieces
      end
    end
    assert.truthy(#pieces > 1)
    assert.are.equal("Here is my answer, in several words: Blue.",
      table.concat(pieces))
    assert.are.equal(#pieces, done_at) -- every piece before the end
  end)

  it("runs the demo pipeline as the model \"support\"", function()
    local dir = h.tmpdir()
    for _, d in ipairs({ "agents", "prompts", "data", "mock" }) do
      h.sh(string.format("cp -R %s/%s %s/", h.q(h.ROOT), d, h.q(dir)))
    end
    h.sh(string.format("cp %s/spool.lua %s/", h.q(h.ROOT), h.q(dir)))
    local mock = h.mock_process(dir .. "/mock/support.lua")
    local s = workers.serve(dir, mock)
    finally(function()
      s.kill()
      mock.stop()
      h.remove(dir)
    end)
    local message = "Hi, this is Ana. My order 5532 arrived. Where is the "
      .. "invoice?"
    local got = clients(s, {
      { chat = "support", messages = { user(message) } },
      { chat = "support", messages = { user(message) }, stream = true },
    })
    local whole = got[1].choices[1].message.content
    assert.matches("^Dear ", whole)
    assert.are.equal("done", got[1].spool.status)
    -- The pipeline's answer is its last sub-agent's: it comes at the end.
    assert.matches("^Dear ", got[2].text)
    assert.are.equal("stop", got[2].finish)
  end)
end)
