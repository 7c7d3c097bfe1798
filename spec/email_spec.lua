-- The email channel end to end: requests go out over SMTP and replies come
-- back over IMAP, both through libcurl, to a minimal SMTP and IMAP server
-- started by the test (engine/test/mail_standin.c); and replies posted to
-- the signed inbound route.
local h = require "spec.support"
local core = require "spool.core"
local json = require "spool.json"
local http = require "spool.base.http"
local config = require "spool.base.config"
local serve = require "spool.serve"
local runner = require "spool.run.runner"
local channels = require "spool.serve.channels"
local email = require "spool.serve.channels.email"
local webhooks = require "spool.serve.webhooks"
local people = require "spec.fixtures.people"
local model, stored, wait_status = people.model, people.stored,
  people.wait_status
local function start(input)
  return people.start("mailer", input)
end

local STANDIN = os.getenv("SPOOL_MAIL_STANDIN") or "./build/mail_standin"
-- Secrets come from the environment: these variables are always set.
local USER_ENV, PASSWORD_ENV = "HOME", "PATH"

local AGENTS = {
  ["agents/mailer.lua"] = [[
local spool = require "spool"
return spool.agent { prompt = "p.md",
  humans = { channel = "email", to = "ops@example.test" },
  tools = { deploy = { params = { version = "string" }, approve = true,
                       run = function(a) return "deployed " .. a.version end },
            ask = spool.human.ask, finish = spool.done } }]],
  ["prompts/p.md"] = "Do the job.",
}


local dir, settings

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
  dir = h.tmpdir()
  local pid = tonumber((h.sh(string.format("%s %s %s >/dev/null 2>&1 & "
    .. "echo $!", h.q(STANDIN), h.q(dir), h.q(dir .. "/ports")))))
  finally(function() h.sh("kill " .. pid .. "; rm -rf " .. h.q(dir)) end)
  local ports = h.wait_for(function()
    local f = io.open(dir .. "/ports")
    local line = f and f:read("l")
    if f then
      f:close()
    end
    return line
  end, 5000, "the mail stand-in to listen")
  local smtp, imap = ports:match("^(%d+) (%d+)$")
  settings = { from = "spool@example.test",
    smtp_url = "smtp://127.0.0.1:" .. smtp,
    imap_url = "imap://127.0.0.1:" .. imap .. "/INBOX",
    username_env = USER_ENV, password_env = PASSWORD_ENV }
  for k, v in pairs(extra or {}) do
    settings[k] = v
  end
  local cfg = config.get()
  local saved = cfg.file.channels
  cfg.file.channels = { email = settings, retry_ms = 10 }
  finally(function() cfg.file.channels = saved end)
end

-- The n-th message the stand-in received over SMTP: headers, text, and
-- its envelope.
local function sent(n)
  return h.wait_for(function()
    local f = io.open(dir .. "/sent/" .. n .. ".eml")
    if not f then
      return nil
    end
    local raw = f:read("a")
    f:close()
    local subject = raw:match("\nSubject: ([^\r\n]*)")
    return { raw = raw, subject = subject,
             token = subject and subject:match("%[ref:([%w_%.%-]+)%]"),
             to = raw:match("\nTo: ([^\r\n]*)"),
             envelope = h.slurp(dir .. "/sent/" .. n .. ".env") }
  end, 5000, "message " .. n .. " to be sent")
end

local function deliver_reply(uid, from, subject, body)
  h.write_files(dir, { ["inbox/" .. uid .. ".eml"] = table.concat({
    "From: " .. from, "To: spool@example.test", "Subject: " .. subject,
    "Date: Tue, 24 Nov 2026 10:00:00 +0000", "", body }, "\r\n") })
end

-- Starts a run that asks where to deploy and answers its mail with body.
local function answer_question(body)
  setup()
  local t = start("ask where")
  deliver_reply(1, "ana@example.test", "Re: [ref:" .. sent(1).token .. "]",
    body)
  email.poll_once(channels, settings)
  return t
end




local function last_answer(t)
  for i = #t.events, 1, -1 do
    if t.events[i].type == "human_response" then
      return t.events[i].data
    end
  end
end

describe("the email channel", function()
  it("sends a question with a line longer than a mail server takes, "
    .. "encoded, and reads it back whole", function()
    setup()
    local question = "Which of these? " .. ("ünïcode and ascii "):rep(120)
    local ok, err = email.send(settings, "ops@example.test",
      "Ä question", question)
    assert(ok, err)
    local msg = sent(1)
    for line in msg.raw:gmatch("[^\r\n]+") do
      assert.is_true(#line <= 998, "a line of " .. #line)
    end
    assert.matches("Content%-Transfer%-Encoding: quoted%-printable", msg.raw)
    assert.are.equal("=?UTF-8?B?" .. email.base64("Ä question") .. "?=",
      msg.subject)
    assert.are.equal(question .. "\n", email.text_of(msg.raw):gsub("\r", ""))
  end)

  it("records a delivery that failed for good on the thread, and escalates "
    .. "at once", function()
    setup { smtp_url = "smtp://127.0.0.1:1" }
    local _, restore = h.project({ ["agents/escalating.lua"] = [[
      local spool = require "spool"
      return spool.agent { prompt = "p.md",
        humans = { { channel = "email", to = "ops@example.test" },
                   { channel = "email", to = "boss@example.test",
                     after_ms = 600000 } },
        tools = { deploy = { params = { version = "string" }, approve = true,
                             run = function() return "done" end } } }]],
      ["prompts/p.md"] = "Do the job." }, model())
    finally(restore)
    local t = people.start("escalating", "deploy 6.0")
    local stored = h.wait_for(function()
      local s = people.stored(t.id)
      local failures = 0
      for _, ev in ipairs(s.events) do
        failures = failures + (ev.type == "delivery_failed" and 1 or 0)
      end
      return failures == 2 and s
    end, 10000, "both deliveries to fail")
    assert.are.equal("waiting", stored:status())
    local ev = stored.events[#stored.events]
    assert.are.equal("boss@example.test", ev.data.to)
    assert.are.equal(3, ev.data.attempts)
    assert.matches("ECONNECT", ev.data.error)
    h.wait_for(function() return core.stats().tasks <= 1 end, 5000,
      "the deliveries to end")
  end)

  it("reads replies: the text part, decoded, without what it quotes",
    function()
    assert.are.equal("Approve, go ahead", email.strip_quoted(
      "Approve, go ahead\r\n\r\nOn Tue, 24 Nov 2026, spool wrote:\r\n"
      .. "> REJECT\r\n"))
    assert.are.equal("eu-west\n\nthanks", email.strip_quoted(
      "eu-west\n> Which region?\n\nthanks\n-- \nAna, ops"))
    local raw = table.concat({
      "From: a@x", "Content-Type: multipart/alternative; boundary=\"b1\"",
      "", "--b1", "Content-Type: text/html", "", "<p>no</p>", "--b1",
      "Content-Type: text/plain; charset=utf-8",
      "Content-Transfer-Encoding: quoted-printable", "",
      "Caf=C3=A9 =", "au lait", "--b1--", "" }, "\r\n")
    assert.are.equal("Café au lait", email.text_of(raw):gsub("%s+$", ""))
    assert.are.equal("yes, approve", email.text_of("Content-Transfer-Encoding: "
      .. "base64\r\n\r\neWVzLCBhcHByb3Zl\r\n"))
    -- Windows-1252's quotes and dash; valid UTF-8 left as it is
    assert.are.equal("“yes” – go", email.to_utf8("\x93yes\x94 \x96 go",
      "windows-1252"))
    assert.are.equal("café", email.to_utf8("café", "us-ascii"))
    -- parts nested past any mail program's habit are not followed
    local deep = "Content-Type: text/plain\r\n\r\nfound"
    for i = 1, 40 do
      deep = "Content-Type: multipart/mixed; boundary=\"b" .. i .. "\"\r\n\r\n--b"
        .. i .. "\r\n" .. deep .. "\r\n--b" .. i .. "--\r\n"
    end
    assert.are.equal("", email.text_of(deep))
  end)

  it("asks for an approval by SMTP, takes the reply by IMAP", function()
    setup()
    local t = start("deploy 1.4")
    assert.are.equal("waiting", t:status())
    local out = sent(1)
    assert.are.equal("ops@example.test", out.to)
    assert.matches("^" .. t.id .. "%.", out.token)
    assert.matches("APPROVE", out.raw)
    assert.matches("from <spool@example.test>", out.envelope, 1, true)
    assert.matches("to <ops@example.test>", out.envelope, 1, true)
    assert.matches("auth %S+", out.envelope) -- it logged in
    deliver_reply(1, "Ana Ops <ana@example.test>", "Re: " .. out.subject,
      "approve\r\n\r\nOn Tue, 24 Nov 2026, spool wrote:\r\n> Reply with "
      .. "APPROVE or REJECT\r\n")
    assert.are.equal(1, email.poll_once(channels, settings))
    local done = wait_status(t.id, "done")
    assert.are.equal("deployed 1.4", done:outcome())
    local a = last_answer(done)
    assert.are.equal("email:ana@example.test", a.by)
    assert.are.equal("email", a.channel)
    assert.is_true(a.approved)
    -- the message is now seen: the next poll finds nothing
    assert.are.equal(0, email.poll_once(channels, settings))
    -- a second reply is too late, and its sender is told so
    deliver_reply(2, "bo@example.test", "Re: " .. out.subject, "reject")
    assert.are.equal(1, email.poll_once(channels, settings))
    local note = sent(2)
    assert.are.equal("bo@example.test", note.to)
    assert.matches("already answered", note.raw)
  end)

  it("takes an answer to a question, and a rejection with its reason",
    function()
    local t = answer_question("eu-west\r\n> Which region?\r\n")
    assert.are.equal("eu-west", wait_status(t.id, "done"):outcome())
    t = start("deploy 2.0")
    deliver_reply(2, "ana@example.test", "Re: [ref:" .. sent(2).token .. "]",
      "Reject: not on a Friday")
    email.poll_once(channels, settings)
    local done = wait_status(t.id, "done")
    local a = last_answer(done)
    assert.is_false(a.approved)
    assert.are.equal("not on a Friday", a.reason)
  end)

  it("refuses unknown senders, unclear and unreferenced replies, and "
    .. "writes back only to allowed senders about real requests", function()
    setup { allow = { "@example.test" } }
    local t = start("deploy 3.0")
    local token = sent(1).token
    deliver_reply(1, "mallory@evil.test", "Re: [ref:" .. token .. "]",
      "approve")
    deliver_reply(2, "ana@example.test", "Re: [ref:" .. token .. "]",
      "maybe later?")
    deliver_reply(3, "ana@example.test", "hello", "approve")
    deliver_reply(4, "ana@example.test", "Automatic reply: [ref:" .. token
      .. "]", "I am out of the office until Monday.")
    deliver_reply(5, "spool@example.test", "Re: [ref:" .. token .. "]",
      "approve")
    assert.are.equal(5, email.poll_once(channels, settings))
    -- one note, to the allowed sender whose reply was unclear
    local note = sent(2)
    assert.are.equal("ana@example.test", note.to)
    assert.matches("neither APPROVE nor REJECT", note.raw)
    assert.matches("Auto%-Submitted: auto%-replied", note.raw)
    assert.is_nil(io.open(dir .. "/sent/3.eml"))
    assert.are.equal("waiting", stored(t.id):status())
  end)

  it("reads what mail programs send: capital boundaries, nested parts, "
    .. "Latin-1", function()
    setup()
    local t = start("ask where")
    local token = sent(1).token
    h.write_files(dir, { ["inbox/1.eml"] = table.concat({
      "From: ana@example.test", "Subject: Re: [ref:" .. token .. "]",
      "Content-Type: multipart/mixed; boundary=\"Apple-Mail-A1B2\"", "",
      "--Apple-Mail-A1B2",
      "Content-Type: multipart/alternative; boundary=\"Inner-XY\"", "",
      "--Inner-XY", "Content-Type: text/plain; charset=iso-8859-1",
      "Content-Transfer-Encoding: quoted-printable", "",
      "Z=FCrich, bitte", "", "On Tue, 24 Nov 2026, spool wrote:",
      "> Which region?", "--Inner-XY", "Content-Type: text/html", "",
      "<p>Z&uuml;rich</p>", "--Inner-XY--", "--Apple-Mail-A1B2--", "" },
      "\r\n") })
    email.poll_once(channels, settings)
    assert.are.equal("Zürich, bitte", wait_status(t.id, "done"):outcome())
    assert.are.equal("caf\u{FFFD}", email.to_utf8("caf\xE9", "utf-8"))
  end)

  it("refuses an empty answer, and addresses that carry commands",
    function()
    local t = answer_question("> Which region?\r\n")
    assert.matches("the reply is empty", sent(2).raw)
    assert.are.equal("waiting", stored(t.id):status())
    local ok, status = email.handle_reply(channels, settings, {
      from = "x@y>\r\nRCPT TO:<victim@evil.test", subject = "[ref:"
        .. sent(1).token .. "]", text = "eu", headers = {} })
    assert.is_nil(ok)
    assert.are.equal(422, status)
    assert.is_nil(email.send(settings, "a@b>\r\nRCPT TO:<c@d>", "s", "t"))
    assert.is_nil(io.open(dir .. "/sent/3.eml"))
  end)

  it("says so when the mail server cannot be reached", function()
    setup { smtp_url = "smtp://127.0.0.1:1" }
    local ok, err = email.send(settings, "ops@example.test", "s", "t")
    assert.is_nil(ok)
    assert.matches("ECONNECT", err)
    local handled, perr = email.poll_once(channels, { imap_url =
      "imap://127.0.0.1:1/INBOX" })
    assert.is_nil(handled)
    assert.matches("ECONNECT", perr)
    -- a request that cannot go out leaves its thread waiting, and says why
    local t = start("deploy 6.0")
    assert.are.equal("waiting", t:status())
    h.wait_for(function() return core.stats().tasks <= 1 end, 5000,
      "the delivery to give up")
    assert.is_nil(io.open(dir .. "/sent/1.eml"))
  end)

  it("takes replies posted to the signed inbound route, and polls while "
    .. "serving", function()
    setup { poll_ms = 20 }
    local cfg = config.get()
    local saved = cfg.hooks
    cfg.hooks = { secret_env = "PATH" }
    finally(function() cfg.hooks = saved end)
    local port = assert(serve.start { port = 0,
      token = "spec-token-0123456789" })
    finally(function() serve.stop(2000) end)
    local t = start("deploy 4.0")
    local token = sent(1).token
    local function post(body, secret)
      local text = json.encode(body)
      return assert(http.request { method = "POST",
        url = "http://127.0.0.1:" .. port .. "/v1/channels/email",
        body = text, headers = { ["content-type"] = "application/json",
          ["spool-signature"] = webhooks.sign_request(secret
            or core.getenv("PATH"), core.time(), "/v1/channels/email",
            text) } })
    end
    local res = post({ from = "ana@example.test", subject = "x" }, "wrong")
    assert.are.equal(401, res.status)
    res = post({ raw = "From: ana@example.test\r\nSubject: Re: [ref:" .. token
      .. "]\r\n\r\nyes\r\n" })
    assert.are.equal(200, res.status, res.body)
    assert.are.equal("done", wait_status(t.id, "done"):status())
    -- and the inbox is polled while the control API is served
    t = start("ask again")
    token = sent(2).token
    deliver_reply(1, "ana@example.test", "Re: [ref:" .. token .. "]",
      "us-east")
    assert.are.equal("us-east", wait_status(t.id, "done"):outcome())
  end)
end)
