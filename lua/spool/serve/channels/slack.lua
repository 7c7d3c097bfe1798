-- spool.serve.channels.slack: approvals and questions in Slack.
--
--   -- spool.lua
--   channels = { slack = {
--     token_env = "SLACK_BOT_TOKEN",                  -- xoxb-..., chat:write
--     signing_secret_env = "SLACK_SIGNING_SECRET",
--     api_url = "https://slack.com/api",             -- the default
--     agents = { "support" },    -- what /spool and @mentions may start
--   } }
--   -- an agent
--   humans = { channel = "slack", to = "#approvals" }
--
-- A request goes out with chat.postMessage: an approval with Approve and
-- Reject buttons, a question with a text input, a wait for an event as a
-- notice. Slack posts the clicks (block_actions), slash commands and
-- Events API callbacks to the control API's /v1/channels/slack, signed
-- with the app's signing secret: "v0=" .. HMAC-SHA256 of
-- "v0:<timestamp>:<body>", the timestamp within 5 minutes, each signature
-- accepted once. The message is then updated with the outcome
-- (chat.update); a click on a request already answered gets an ephemeral
-- note through the interaction's response_url.

local core = require "spool.core"
local json = require "spool.json"
local http = require "spool.base.http"
local common = require "spool.serve.channels.common"

local M = {}

M.MAX_AGE_S = 300

local function api_url(settings)
  return (settings.api_url or "https://slack.com/api"):gsub("/+$", "")
end


-- Calls a Web API method; returns the decoded answer or nil, err.
local function call(settings, method, body)
  local token = core.getenv(settings.token_env or "SLACK_BOT_TOKEN")
  if not token then
    return nil, "no Slack token: set $" .. (settings.token_env
      or "SLACK_BOT_TOKEN")
  end
  local res, err = http.request { method = "POST",
    url = api_url(settings) .. "/" .. method, body = json.encode(body),
    headers = { ["content-type"] = "application/json; charset=utf-8",
                authorization = "Bearer " .. token }, timeout_ms = 10000 }
  if not res then
    return nil, err
  end
  local doc = json.decode(res.body)
  if res.status ~= 200 or type(doc) ~= "table" or doc.ok ~= true then
    return nil, string.format("Slack %s answered %d: %s", method, res.status,
      type(doc) == "table" and tostring(doc.error) or res.body:sub(1, 100))
  end
  return doc
end


function M.check(target)
  if type(target.to) ~= "string" then
    return "a Slack target needs to = \"#channel\" (or a channel id)"
  end
end


-- Slack's limit: 3,000 characters in a section's text.
local function clip(text, n)
  return common.clip(text, n)
end


local function text_block(text)
  return { type = "section", text = { type = "mrkdwn",
                                      text = clip(text, 2900) } }
end


function M.same_message(a, b)
  return type(a) == "table" and type(b) == "table" and a.ts == b.ts
    and a.channel == b.channel
end


local function button(label, action, token, style)
  return { type = "button", action_id = action, value = token, style = style,
           text = { type = "plain_text", text = label } }
end


-- The blocks of a request's message.
function M.blocks(request)
  local head = string.format("*%s* (thread `%s`) needs %s", request.agent,
    request.thread, request.text)
  local blocks = json.array({ text_block(head) })
  if request.kind == "approval" then
    blocks[2] = { type = "actions", block_id = "spool",
      elements = json.array({
        button("Approve", "spool_approve", request.token, "primary"),
        button("Reject", "spool_reject", request.token, "danger") }) }
  elseif request.kind == "ask" then
    blocks[2] = { type = "input", block_id = "spool", dispatch_action = true,
      label = { type = "plain_text", text = "Your answer" },
      element = { type = "plain_text_input",
                  action_id = "spool_answer:" .. request.token } }
  end
  return blocks
end


function M.deliver(request, target, settings)
  local doc, err = call(settings, "chat.postMessage", { channel = target.to,
    text = clip(request.agent .. " needs " .. request.text, 3000),
    blocks = M.blocks(request) })
  if not doc then
    return nil, err
  end
  return { channel = doc.channel, ts = doc.ts }
end


-- Shows the outcome in place of the buttons.
function M.settled(ref, line, settings)
  return call(settings, "chat.update", { channel = ref.channel, ts = ref.ts,
    text = clip(line, 3000), blocks = json.array({ text_block(line) }) })
end


-- Verifies Slack's signature; returns true or nil and why.
function M.verify(headers, body, signing_secret, now_s)
  local raw_ts = headers["x-slack-request-timestamp"] or ""
  local ts = raw_ts:match("^%d+$") and math.tointeger(tonumber(raw_ts))
  local sig = headers["x-slack-signature"] or ""
  if not ts then
    return nil, "no valid X-Slack-Request-Timestamp"
  end
  if math.abs((now_s or core.time() // 1000) - ts) > M.MAX_AGE_S then
    return nil, "the request is too old (or from the future): a replay?"
  end
  local want = "v0=" .. core.hmac_sha256(signing_secret,
    "v0:" .. raw_ts .. ":" .. body)
  if not core.equal(sig:lower(), want) then
    return nil, "the signature does not match"
  end
  return true
end


local function ok_empty()
  return { status = 200, headers = { ["content-type"] = "text/plain" },
           body = "" }
end


local function json_reply(status, value)
  return { status = status, body = json.encode(value),
           headers = { ["content-type"] = "application/json" } }
end


-- A click or an entered answer (block_actions).
local function on_action(channels, payload, settings)
  local action = type(payload.actions) == "table" and payload.actions[1] or {}
  local user = type(payload.user) == "table" and payload.user or {}
  local by = "slack:" .. tostring(user.username or user.name or user.id)
  local token, response
  if action.action_id == "spool_approve" then
    token, response = action.value, { approve = true }
  elseif action.action_id == "spool_reject" then
    token, response = action.value, { reject = true,
                                       reason = "rejected in Slack" }
  elseif tostring(action.action_id):match("^spool_answer:") then
    token = action.action_id:sub(#"spool_answer:" + 1)
    response = { answer = tostring(action.value or "") }
  else
    return channels.error_reply(400, "not a spool action")
  end
  local container = type(payload.container) == "table" and payload.container
    or {}
  local channel = type(payload.channel) == "table" and payload.channel.id
    or container.channel_id
  local ok, status_or_line, why = channels.answer(token, response,
    { channel = "slack", by = by,
      ref = { channel = channel, ts = container.message_ts } })
  core.spawn(function()
    if ok then
      M.settled({ channel = channel, ts = container.message_ts },
        status_or_line, settings)
    elseif type(payload.response_url) == "string" then
      http.post_json(payload.response_url, { response_type = "ephemeral",
        replace_original = false, text = why }, { timeout_ms = 10000 })
    end
  end)
  return ok_empty()
end


-- "/spool AGENT what to do", and "@app AGENT what to do".
local function start_from_text(channels, text, settings)
  local agent, input = tostring(text):match("^%s*(%S+)%s*(.-)%s*$")
  local id, status, why = channels.start("slack", agent, input,
    settings.agents)
  if not id then
    return nil, status, why
  end
  return id
end


-- Handles a POST to /v1/channels/slack.
function M.inbound(req, channels, settings)
  local secret = core.getenv(settings.signing_secret_env
    or "SLACK_SIGNING_SECRET")
  if not secret then
    return channels.error_reply(404, "Slack is not set up here")
  end
  local ok, why = M.verify(req.headers, req.body, secret)
  if ok and not channels.fresh("slack", req.headers["x-slack-signature"],
      M.MAX_AGE_S * 2000) then
    ok, why = false, "this signature was used before: a replay"
  end
  if not ok then
    channels.refuse("slack", 401, why)
    return channels.error_reply(401, why)
  end
  local ctype = (req.headers["content-type"] or ""):lower()
  if ctype:match("^application/json") then
    local doc = json.decode(req.body)
    if type(doc) == "table" and doc.type == "url_verification" then
      return json_reply(200, { challenge = doc.challenge })
    end
    local ev = type(doc) == "table" and type(doc.event) == "table"
      and doc.event or {}
    if ev.type == "app_mention" then
      local text = tostring(ev.text or ""):gsub("^%s*<@[%w]+>%s*", "")
      start_from_text(channels, text, settings)
    end
    return ok_empty()
  end
  local form = channels.form(req.body)
  if form.payload then
    local payload = json.decode(form.payload)
    if type(payload) ~= "table" then
      return channels.error_reply(400, "the payload is not JSON")
    end
    if payload.type == "block_actions" then
      return on_action(channels, payload, settings)
    end
    return ok_empty()
  end
  if form.command then
    local id, status, err = start_from_text(channels, form.text, settings)
    return json_reply(200, { response_type = "ephemeral",
      text = id and ("Started thread " .. id)
        or ("Not started: " .. tostring(err) .. " (" .. status .. ")") })
  end
  return channels.error_reply(400, "not a Slack callback spool knows")
end


return M
