-- `spool llm`, end to end: a real process calling a mock model process
-- through each provider's adapter, whole and streamed.
local h = require "spec.support"
local json = require "spool.json"

local MOCKS = h.ROOT .. "/spec/fixtures/mocks/"

local function last_line(out)
  local last
  for line in out:gmatch("[^\n]+") do
    last = line
  end
  return last
end

describe("spool llm", function()
  local mock, dir

  before_each(function()
    mock = h.mock_process(MOCKS .. "providers.lua")
    dir = h.tmpdir()
    h.write_files(dir, { ["tools.json"] = json.encode(json.array({
      { name = "add", description = "Add two numbers.",
        parameters = { type = "object", properties = {
          a = { type = "number" }, b = { type = "number" } } } } })) })
  end)

  after_each(function()
    mock.stop()
    h.remove(dir)
  end)

  local function llm(args, env)
    return h.cli("llm --base-url " .. mock.url .. " " .. args, nil, env)
  end

  for _, provider in ipairs { "openai", "openai-responses", "anthropic" } do
    for _, stream in ipairs { "", " --stream" } do
      it(provider .. stream .. ": --json ends with the normalized reply",
        function()
        local out, err, code = llm("--provider " .. provider .. stream
          .. " --json --tools " .. dir .. "/tools.json 'add 2 and 3'")
        assert.are.equal(0, code, err)
        local reply = json.decode(last_line(out))
        assert.are.equal("tool_calls", reply.finish_reason)
        assert.are.equal(json.null, reply.text)
        assert.are.equal("add", reply.tool_calls[1].name)
        assert.are.same({ a = 2, b = 3 }, reply.tool_calls[1].arguments)
        assert.is_string(reply.tool_calls[1].id)
        assert.is_true(reply.usage.input_tokens > 0)
        out, err, code = llm("--provider " .. provider .. stream
          .. " --json 'say hello'")
        assert.are.equal(0, code, err)
        reply = json.decode(last_line(out))
        assert.are.equal("Hello from the mock model.", reply.text)
        assert.are.equal("stop", reply.finish_reason)
        assert.are.same({}, reply.tool_calls)
        if stream ~= "" then
          -- the pieces came first, one JSON line each
          local pieces = {}
          for line in out:gmatch("[^\n]+") do
            local doc = json.decode(line)
            if doc.delta then
              pieces[#pieces + 1] = doc.delta
            end
          end
          assert.is_true(#pieces > 1)
          assert.are.equal(reply.text, table.concat(pieces))
        end
      end)
    end

    it(provider .. ": exits 1 with the provider's message", function()
      local out, err, code = llm("--provider " .. provider
        .. " --max-retries 1 'overload me'")
      assert.are.equal(1, code)
      assert.are.equal("", out)
      assert.matches(provider:gsub("%-", "%%-") .. " returned HTTP 529: "
        .. ".*Overloaded %(after 2 attempts%)", err)
      out, err, code = llm("--provider " .. provider
        .. " --stream 'error in the stream'")
      assert.are.equal(1, code)
      assert.matches("reported an error in the stream: .*the stream broke",
        err)
    end)
  end

  it("prints streamed text as it arrives, and plain text", function()
    local out, err, code = llm("--provider anthropic --stream 'say hello'")
    assert.are.equal(0, code, err)
    assert.are.equal("Hello from the mock model.\n", out)
    out = llm("'say hello'", nil)
    assert.are.equal("Hello from the mock model.\n", out)
    out = llm("-", nil) -- nothing on stdin
    assert.matches("needs a prompt", select(2, llm("-")))
  end)

  it("sends the key only in the provider's header", function()
    local secret = "sk-spec-" .. ("x"):rep(20)
    for provider, var in pairs { anthropic = "ANTHROPIC_API_KEY",
                                 openai = "OPENAI_API_KEY" } do
      local out, err, code = llm("--provider " .. provider
        .. " --json 'which key'", var .. "=" .. secret)
      assert.are.equal(0, code, err)
      assert.are.equal("key in " .. (provider == "anthropic" and "x-api-key"
        or "authorization"), json.decode(last_line(out)).text)
      assert.is_nil(out:find(secret, 1, true))
      assert.is_nil(err:find(secret, 1, true))
      -- nor in an error
      out, err = llm("--provider " .. provider .. " --max-retries 0 "
        .. "'overload me'", var .. "=" .. secret)
      assert.is_nil(err:find(secret, 1, true))
    end
  end)

  it("spool run --stream prints the model's text as it arrives", function()
    local project = h.tmpdir()
    h.write_files(project, {
      ["spool.lua"] = 'return { mock = "mock.lua" }',
      ["mock.lua"] = 'return { rules = { { reply = { text = "Streamed, '
        .. 'piece by piece." } } } }',
      ["prompts/echo.md"] = "Answer.",
      ["agents/echo.lua"] = 'return require("spool").agent { prompt = '
        .. '"echo.md", max_steps = 1 }',
    })
    local out, err, code = h.cli("--project " .. h.q(project) .. " --db "
      .. h.q(project .. "/t.db") .. " run echo --stream --input hi")
    assert.are.equal(0, code, err)
    -- The pieces, on one line of their own, before the events that follow.
    local line = out:match("\n(Streamed, piece by piece%.)\n")
    assert.is_not_nil(line, out)
    out, err, code = h.cli("--project " .. h.q(project) .. " --db "
      .. h.q(project .. "/t.db") .. " run echo --stream --json --input hi")
    assert.are.equal(0, code, err)
    local deltas = {}
    for _, ev in ipairs(h.json_lines(out)) do
      if ev.type == "delta" then
        deltas[#deltas + 1] = ev.text
      elseif ev.type == "model_call" then
        assert.is_true(ev.data.streamed)
        assert.are.equal("Streamed, piece by piece.", ev.data.text)
      end
    end
    assert.is_true(#deltas > 1)
    assert.are.equal("Streamed, piece by piece.", table.concat(deltas))
    h.remove(project)
  end)

  it("names a project's unknown provider", function()
    local project = h.tmpdir()
    h.write_files(project, { ["spool.lua"] =
      'return { model = { provider = "nope" } }' })
    local _, err, code = h.cli("--project " .. h.q(project) .. " llm hi")
    h.remove(project)
    assert.are.equal(1, code) -- the engine does not open, as for any bad spool.lua
    assert.matches("spool.lua: unknown model provider 'nope'", err, 1, true)
  end)

  it("keeps a fallback's own model name, whatever $SPOOL_MODEL says",
    function()
    local project = h.tmpdir()
    local other = h.mock_process(MOCKS .. "echo_model.lua")
    h.write_files(project, { ["spool.lua"] = string.format([[
      return { model = { base_url = %q, fallback = { { provider = "anthropic",
        name = "claude-fallback", base_url = %q } } } }]], mock.url,
      other.url) })
    local out, err, code = h.cli("--project " .. h.q(project)
      .. " llm --json --max-retries 0 'overload me'", nil,
      "SPOOL_MODEL=gpt-from-env")
    other.stop()
    h.remove(project)
    assert.are.equal(0, code, err)
    -- the primary ran on the environment's model and was overloaded; the
    -- fallback asked for the model it names
    assert.are.equal("model claude-fallback", json.decode(last_line(out)).text)
  end)

  it("refuses bad usage with exit 2", function()
    for _, args in ipairs { "--provider nope x", "--max-retries -1 x",
                            "--bogus x", "a b", "--tools /nonexistent x" } do
      local _, err, code = llm(args)
      assert.are.equal(2, code, args)
      assert.matches("usage: spool llm", err)
    end
  end)
end)
