-- People reached where they work: an agent asks in Slack or Discord, the
-- answer comes back through that platform's signed callback to the
-- control API, and the thread resumes. The platforms are stand-ins on
-- 127.0.0.1 speaking their Web APIs; the callbacks are signed as the
-- platforms sign them (Slack: v0 HMAC-SHA256 with the signing secret;
-- Discord: Ed25519 with a test key).
local h = require "spec.support"
local core = require "spool.core"
local json = require "spool.json"
local http = require "spool.base.http"
local config = require "spool.base.config"
local serve = require "spool.serve"
local runner = require "spool.run.runner"
local slack = require "spool.serve.channels.slack"
local people = require "spec.fixtures.people"
local model, stored, wait_status = people.model, people.stored,
  people.wait_status
local start = people.start

-- Secrets come from the environment: these variables are always set.
local SLACK_SECRET_ENV, TOKEN_ENV = "PATH", "HOME"
local SLACK_SECRET = core.getenv(SLACK_SECRET_ENV)
local BOT_TOKEN = core.getenv(TOKEN_ENV)
-- A test key (RFC 8032's second).
local DISCORD_SEED =
  "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"
local DISCORD_KEY = core.ed25519_public(DISCORD_SEED)

local AGENTS = {
  ["agents/deployer.lua"] = [[
local spool = require "spool"
return spool.agent { prompt = "p.md",
  humans = { channel = "slack", to = "#ops" },
  tools = { deploy = { params = { version = "string" }, approve = true,
                       run = function(a) return "deployed " .. a.version end },
            finish = spool.done } }]],
  ["agents/asker.lua"] = [[
local spool = require "spool"
return spool.agent { prompt = "p.md",
  humans = { channel = "discord", to = "123456" },
  tools = { ask = spool.human.ask, finish = spool.done } }]],
  ["agents/escalator.lua"] = [[
local spool = require "spool"
return spool.agent { prompt = "p.md",
  humans = { { channel = "slack", to = "#first" },
             { channel = "discord", to = "42", after_ms = 20 } },
  tools = { deploy = { params = { version = "string" }, approve = true,
                       run = function(a) return "deployed " .. a.version end },
            finish = spool.done } }]],
  ["prompts/p.md"] = "Do the job.",
}


-- The platforms' Web APIs: every request kept, each answered as they do.
local function platforms()
  local got = {}
  local server = assert(core.listen { port = 0, handler = function(req)
    got[#got + 1] = { method = req.method, path = req.path,
                      headers = req.headers, body = json.decode(req.body) }
    if req.path:match("^/slack/") then
      return { headers = { ["content-type"] = "application/json" },
               body = json.encode({ ok = true, channel = "C0OPS",
                                    ts = "1700000000.000100" }) }
    end
    return { headers = { ["content-type"] = "application/json" },
             body = json.encode({ id = "9000" .. #got }) }
  end })
  finally(function() server:close() end)
  return "http://127.0.0.1:" .. server:port(), got
end

local base, api, got

local function setup(extra)
  -- Last of all: what answers set off in the background (updating the
  -- messages that asked) has finished.
  finally(function()
    h.wait_for(function() return core.stats().tasks <= 1 end, 5000,
      "the background work of the answers")
  end)
  local mock = model()
  finally(mock.close)
  local _, restore = h.project(AGENTS, mock)
  finally(restore)
  api, got = platforms()
  local cfg = config.get()
  local saved = cfg.file.channels
  cfg.file.channels = {
    slack = { token_env = TOKEN_ENV, signing_secret_env = SLACK_SECRET_ENV,
              api_url = api .. "/slack", agents = { "deployer" } },
    discord = { bot_token_env = TOKEN_ENV, public_key = DISCORD_KEY,
                api_url = api .. "/discord" },
  }
  for k, v in pairs(extra or {}) do
    cfg.file.channels[k] = v
  end
  finally(function() cfg.file.channels = saved end)
  local port = assert(serve.start { port = 0, token = "spec-token-0123456789" })
  finally(function() serve.stop(2000) end)
  base = "http://127.0.0.1:" .. port
end

local function sent(pattern, n)
  return h.wait_for(function()
    local found = {}
    for _, r in ipairs(got) do
      if r.path:match(pattern) then
        found[#found + 1] = r
      end
    end
    return #found >= (n or 1) and found[n or 1]
  end, 5000, "a request to " .. pattern)
end

local function form_encode(t)
  local parts = {}
  for k, v in pairs(t) do
    parts[#parts + 1] = k .. "=" .. tostring(v):gsub("[^%w%-%._~]", function(c)
      return string.format("%%%02X", c:byte())
    end)
  end
  return table.concat(parts, "&")
end

-- POSTs a Slack callback, signed (or as `tamper` says).
local function slack_post(body, ctype, tamper)
  tamper = tamper or {}
  local ts = tostring(tamper.ts or (core.time() // 1000))
  local sig = "v0=" .. core.hmac_sha256(tamper.secret or SLACK_SECRET,
    "v0:" .. ts .. ":" .. body)
  local res = assert(http.request { method = "POST",
    url = base .. "/v1/channels/slack", body = body, headers = {
      ["content-type"] = ctype or "application/x-www-form-urlencoded",
      ["x-slack-request-timestamp"] = ts, ["x-slack-signature"] = sig } })
  return res.status, json.decode(res.body) or res.body
end

local function click(action_id, value, user)
  return form_encode { payload = json.encode({
    type = "block_actions", user = { id = "U1", username = user or "ana" },
    actions = { { action_id = action_id, value = value,
                  type = value and "button" or "plain_text_input" } },
    container = { type = "message", message_ts = "1700000000.000100",
                  channel_id = "C0OPS" },
    channel = { id = "C0OPS" }, response_url = api .. "/slack/respond",
  }) }
end

local function discord_post(doc, tamper)
  tamper = tamper or {}
  local body = json.encode(doc)
  local ts = tostring(tamper.ts or (core.time() // 1000))
  local sig = core.ed25519_sign(tamper.seed or DISCORD_SEED, ts .. body)
  local res = assert(http.request { method = "POST",
    url = base .. "/v1/channels/discord", body = body, headers = {
      ["content-type"] = "application/json",
      ["x-signature-ed25519"] = sig, ["x-signature-timestamp"] = ts } })
  return res.status, json.decode(res.body)
end




describe("channels", function()
  describe("Slack", function()
    it("verifies Slack's published test vector", function()
      local body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&"
        .. "team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&"
        .. "user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&"
        .. "text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2F"
        .. "T1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id="
        .. "398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
      local headers = { ["x-slack-request-timestamp"] = "1531420618",
        ["x-slack-signature"] = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d2"
          .. "1a10bd27519666489c69b503" }
      assert.is_true(slack.verify(headers, body,
        "8f742231b10e8888abcd99yyyzzz85a5", 1531420618))
      assert.is_nil(slack.verify(headers, body .. "x",
        "8f742231b10e8888abcd99yyyzzz85a5", 1531420618))
      assert.matches("too old", select(2, slack.verify(headers, body,
        "8f742231b10e8888abcd99yyyzzz85a5", 1531420618 + 301)))
    end)

    it("asks for an approval, takes the click, and the thread finishes",
      function()
      setup()
      local t = start("deployer", "deploy 1.2")
      assert.are.equal("waiting", t:status())
      local post = sent("/slack/chat.postMessage")
      assert.are.equal("Bearer " .. BOT_TOKEN, post.headers.authorization)
      assert.are.equal("#ops", post.body.channel)
      local buttons = post.body.blocks[2].elements
      assert.are.equal("spool_approve", buttons[1].action_id)
      local token = buttons[1].value
      assert.matches("^" .. t.id .. "%.%d+%.", token)
      local status = slack_post(click("spool_approve", token))
      assert.are.equal(200, status)
      local done = wait_status(t.id, "done")
      assert.are.equal("deployed 1.2", done:outcome())
      local answer
      for _, ev in ipairs(done.events) do
        if ev.type == "human_response" then
          answer = ev.data
        end
      end
      assert.are.equal("slack:ana", answer.by)
      assert.are.equal("slack", answer.channel)
      assert.is_true(answer.approved)
      local update = sent("/slack/chat.update")
      assert.are.equal("Approved by slack:ana", update.body.text)
      assert.are.equal("1700000000.000100", update.body.ts)
      -- A second click, once answered: a clear note, only to the clicker.
      status = slack_post(click("spool_reject", token, "bo"))
      assert.are.equal(200, status)
      local note = sent("/slack/respond")
      assert.are.equal("ephemeral", note.body.response_type)
      assert.matches("already answered", note.body.text)
    end)

    it("takes a typed answer", function()
      setup()
      -- An agent whose question goes to Slack: a text input, not buttons.
      local loader = require "spool.run.loader"
      local agent = assert(loader.load("asker"))
      agent.humans = { { channel = "slack", to = "#ops" } }
      local t = runner.start(agent, "ask me")
      h.wait_run(t)
      local input = sent("/slack/chat.postMessage").body.blocks[2]
      assert.are.equal("input", input.type)
      assert.is_true(input.dispatch_action)
      local action = input.element.action_id
      assert.matches("^spool_answer:", action)
      local payload = json.encode({ type = "block_actions",
        user = { id = "U3", username = "cy" },
        actions = { { type = "plain_text_input", action_id = action,
                      value = "eu-west" } },
        container = { message_ts = "1700000000.000100" },
        channel = { id = "C0OPS" } })
      assert.are.equal(200, slack_post(form_encode { payload = payload }))
      local done = wait_status(t.id, "done")
      assert.are.equal("eu-west", done:outcome())
      assert.are.equal("Answered by slack:cy: eu-west",
        sent("/slack/chat.update").body.text)
      loader.forget("asker")
    end)

    it("refuses forged, stale and replayed callbacks", function()
      setup()
      local t = start("deployer", "deploy 2.0")
      local token = sent("/slack/chat.postMessage").body.blocks[2]
        .elements[1].value
      local body = click("spool_approve", token)
      local status, err = slack_post(body, nil, { secret = "not the secret" })
      assert.are.equal(401, status)
      assert.are.equal("the signature does not match", err.error.message)
      status, err = slack_post(body, nil, { ts = core.time() // 1000 - 600 })
      assert.are.equal(401, status)
      assert.matches("too old", err.error.message)
      assert.are.equal("waiting", stored(t.id):status())
      -- the same signed request twice: the second is a replay
      local ts, once = core.time() // 1000, click("spool_reject", "nope.1.-",
        core.random_id())
      assert.are.equal(200, (slack_post(once, nil, { ts = ts })))
      local second = slack_post(once, nil, { ts = ts })
      assert.are.equal(401, second)
      -- an unknown (unsigned) token: the clicker is told
      local note = sent("/slack/respond")
      assert.are.equal("unknown request token: the token's signature does "
        .. "not match", note.body.text)
      -- a signature is used once, whatever the letter case of its hex
      local ts2, twice = core.time() // 1000, form_encode { command = "/spool",
        text = "deployer deploy " .. core.random_id() }
      local sig = "v0=" .. core.hmac_sha256(SLACK_SECRET, "v0:" .. ts2 .. ":"
        .. twice)
      local function post_sig(signature)
        return assert(http.request { method = "POST",
          url = base .. "/v1/channels/slack", body = twice, headers = {
            ["content-type"] = "application/x-www-form-urlencoded",
            ["x-slack-request-timestamp"] = tostring(ts2),
            ["x-slack-signature"] = signature } }).status
      end
      assert.are.equal(200, post_sig(sig))
      assert.are.equal(401, post_sig(sig))
      assert.are.equal(401, post_sig(sig:upper():gsub("^V0", "v0")))
      assert.are.equal("waiting", stored(t.id):status())
      local res = assert(http.get(base .. "/metrics", { headers = {
        Authorization = "Bearer spec-token-0123456789" } }))
      assert.matches('spool_channel_refusals_total{channel="slack",'
        .. 'status="401"} %d+', res.body)
    end)

    it("answers url_verification, and starts threads from /spool", function()
      setup()
      -- (bodies differ from run to run: a signed body is accepted once)
      local challenge = core.random_id()
      local status, v = slack_post(json.encode({ type = "url_verification",
        challenge = challenge }), "application/json")
      assert.are.equal(200, status)
      assert.are.equal(challenge, v.challenge)
      status, v = slack_post(form_encode { command = "/spool",
        text = "deployer deploy 3.1", user_name = "ana",
        trigger_id = core.random_id() })
      assert.are.equal(200, status)
      local id = v.text:match("^Started thread (t_%w+)$")
      assert.is_truthy(id, v.text)
      local t = wait_status(id, "waiting")
      assert.are.equal("deploy 3.1", t:input())
      status, v = slack_post(form_encode { command = "/spool",
        text = "asker what now " .. core.random_id() })
      assert.matches("^Not started: agent 'asker' may not be started from "
        .. "slack", v.text)
    end)
  end)

  describe("Discord", function()
    it("answers PING, asks through a modal, and the thread finishes",
      function()
      setup()
      local status, v = discord_post({ type = 1, id = core.random_id() })
      assert.are.equal(200, status)
      assert.are.same({ type = 1 }, v)
      local t = start("asker", "ask me")
      local post = sent("/discord/channels/123456/messages")
      assert.are.equal("Bot " .. BOT_TOKEN, post.headers.authorization)
      local custom_id = post.body.components[1].components[1].custom_id
      assert.matches("^spool:ask:", custom_id)
      local token = custom_id:sub(#"spool:ask:" + 1)
      local user = { member = { user = { id = "7", username = "bo" } } }
      status, v = discord_post({ type = 3, data = { custom_id = custom_id },
                                 member = user.member })
      assert.are.equal(200, status)
      assert.are.equal(9, v.type) -- a modal
      assert.are.equal("spool:answer:" .. token, v.data.custom_id)
      status, v = discord_post({ type = 5, member = user.member, data = {
        custom_id = v.data.custom_id, components = { { type = 1,
          components = { { type = 4, custom_id = "answer",
                           value = "eu-west" } } } } } })
      assert.are.equal(200, status)
      assert.are.equal(7, v.type)
      assert.are.equal("Answered by discord:bo: eu-west", v.data.content)
      local done = wait_status(t.id, "done")
      assert.are.equal("eu-west", done:outcome())
      -- too late: an ephemeral note
      status, v = discord_post({ type = 5, member = user.member, data = {
        custom_id = "spool:answer:" .. token, components = { { type = 1,
          components = { { type = 4, custom_id = "answer",
                           value = "us-east" } } } } } })
      assert.are.equal(4, v.type)
      assert.are.equal(64, v.data.flags)
      assert.matches("already answered", v.data.content)
    end)

    it("refuses bad signatures, stale timestamps and replays", function()
      setup()
      local other = string.rep("11", 32)
      local status, v = discord_post({ type = 1 }, { seed = other })
      assert.are.equal(401, status)
      assert.are.equal("invalid request signature", v.error.message)
      status, v = discord_post({ type = 1 },
        { ts = core.time() // 1000 - 3600 })
      assert.are.equal(401, status)
      assert.matches("stale", v.error.message)
      local ts, ping = core.time() // 1000, { type = 1, id = core.random_id() }
      assert.are.equal(200, (discord_post(ping, { ts = ts })))
      assert.are.equal(401, (discord_post(ping, { ts = ts })))
      -- the same signature in capitals is the same signature: refused
      local body = json.encode({ type = 1, id = core.random_id() })
      local sig = core.ed25519_sign(DISCORD_SEED, ts .. body)
      local function post_sig(signature)
        return assert(http.request { method = "POST",
          url = base .. "/v1/channels/discord", body = body, headers = {
            ["content-type"] = "application/json",
            ["x-signature-ed25519"] = signature,
            ["x-signature-timestamp"] = tostring(ts) } }).status
      end
      assert.are.equal(200, post_sig(sig))
      assert.are.equal(401, post_sig(sig:upper()))
    end)
  end)

  it("escalates to the next channel, and every message shows the outcome",
    function()
    setup()
    local t = start("escalator", "deploy 4.0")
    sent("/slack/chat.postMessage")
    local post = sent("/discord/channels/42/messages")
    local approve = post.body.components[1].components[1].custom_id
    local status, v = discord_post({ type = 3, data = { custom_id = approve },
      user = { id = "8", username = "cy" } })
    assert.are.equal(200, status)
    assert.are.equal("Approved by discord:cy", v.data.content)
    assert.are.equal("done", wait_status(t.id, "done"):status())
    -- the Slack message the escalation began with is updated too
    local update = sent("/slack/chat.update")
    assert.are.equal("Approved by discord:cy", update.body.text)
  end)

  it("keeps long requests within the platforms' limits", function()
    setup()
    local t = start("deployer", "deploy " .. string.rep("9", 5000))
    local post = sent("/slack/chat.postMessage")
    assert.is_true(#post.body.blocks[1].text.text <= 3000)
    assert.is_true(#post.body.text <= 3000)
    assert.are.equal("waiting", stored(t.id):status())
  end)

  it("signs tokens when a channel secret is set", function()
    setup { secret_env = SLACK_SECRET_ENV }
    local t = start("deployer", "deploy 5.0")
    local token = sent("/slack/chat.postMessage").body.blocks[2]
      .elements[1].value
    local id, seq, mac = token:match("^(.-)%.(%d+)%.(%x+)$")
    assert.are.equal(t.id, id)
    assert.are.equal(16, #mac)
    local forged = id .. "." .. seq .. "." .. ("0"):rep(16)
    assert.are.equal(200, slack_post(click("spool_approve", forged)))
    local note = sent("/slack/respond")
    assert.matches("signature does not match", note.body.text)
    assert.are.equal("waiting", stored(t.id):status())
  end)
end)
