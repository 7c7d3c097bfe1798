-- spool.serve.channels.discord: approvals and questions in Discord.
--
--   -- spool.lua
--   channels = { discord = {
--     bot_token_env = "DISCORD_BOT_TOKEN",
--     public_key_env = "DISCORD_PUBLIC_KEY",     -- the app's, in hex (or
--     public_key = "<hex>": it is public)
--     api_url = "https://discord.com/api/v10",  -- the default
--   } }
--   -- an agent
--   humans = { channel = "discord", to = "<channel id>" }
--
-- A request goes out as a bot message with components: Approve and Reject
-- buttons, or an Answer button that opens a modal with a text input.
-- Discord posts the interactions to the control API's
-- /v1/channels/discord, signed with Ed25519 over "<timestamp><body>"
-- (headers X-Signature-Ed25519, X-Signature-Timestamp); spool answers the
-- PING handshake, updates the message with the outcome (interaction
-- response type 7), and tells a late clicker, privately, that the request
-- was already answered.

local core = require "spool.core"
local json = require "spool.json"
local http = require "spool.base.http"
local common = require "spool.serve.channels.common"

local M = {}

M.MAX_AGE_S = 300

local PING, COMPONENT, MODAL_SUBMIT = 1, 3, 5
local PONG, MESSAGE, UPDATE_MESSAGE, MODAL = 1, 4, 7, 9
local EPHEMERAL = 64

local function api_url(settings)
  return (settings.api_url or "https://discord.com/api/v10"):gsub("/+$", "")
end


local function call(settings, method, path, body)
  local token = core.getenv(settings.bot_token_env or "DISCORD_BOT_TOKEN")
  if not token then
    return nil, "no Discord bot token: set $" .. (settings.bot_token_env
      or "DISCORD_BOT_TOKEN")
  end
  local res, err = http.request { method = method,
    url = api_url(settings) .. path, body = json.encode(body),
    headers = { ["content-type"] = "application/json",
                authorization = "Bot " .. token }, timeout_ms = 10000 }
  if not res then
    return nil, err
  end
  if res.status < 200 or res.status > 299 then
    return nil, string.format("Discord %s %s answered %d: %s", method, path,
      res.status, res.body:sub(1, 100))
  end
  return json.decode(res.body) or {}
end


-- Discord's limit: 2,000 characters of content.
local function clip(text)
  return common.clip(text, 1990)
end


function M.same_message(a, b)
  return type(a) == "table" and type(b) == "table"
    and tostring(a.message) == tostring(b.message)
end


function M.check(target)
  if type(target.to) ~= "string" or not target.to:match("^%d+$") then
    return "a Discord target needs to = \"<channel id>\" (digits)"
  end
end


local function button(style, label, custom_id)
  return { type = 2, style = style, label = label, custom_id = custom_id }
end


function M.components(request)
  local row
  if request.kind == "approval" then
    row = { button(3, "Approve", "spool:approve:" .. request.token),
            button(4, "Reject", "spool:reject:" .. request.token) }
  elseif request.kind == "ask" then
    row = { button(1, "Answer", "spool:ask:" .. request.token) }
  else
    return json.array()
  end
  return json.array({ { type = 1, components = json.array(row) } })
end


function M.deliver(request, target, settings)
  local doc, err = call(settings, "POST", "/channels/" .. target.to
    .. "/messages", { content = clip(string.format("**%s** (thread `%s`) "
      .. "needs %s", request.agent, request.thread, request.text)),
      components = M.components(request) })
  if not doc then
    return nil, err
  end
  return { channel = target.to, message = doc.id }
end


function M.settled(ref, line, settings)
  return call(settings, "PATCH", "/channels/" .. ref.channel .. "/messages/"
    .. tostring(ref.message), { content = clip(line),
      components = json.array() })
end


local function reply(value)
  return { status = 200, body = json.encode(value),
           headers = { ["content-type"] = "application/json" } }
end


-- Handles a POST to /v1/channels/discord.
function M.inbound(req, channels, settings)
  -- The app's public key is no secret: spool.lua may hold it as it is.
  local key = settings.public_key
    or core.getenv(settings.public_key_env or "DISCORD_PUBLIC_KEY")
  if not key then
    return channels.error_reply(404, "Discord is not set up here")
  end
  local sig = req.headers["x-signature-ed25519"] or ""
  local ts = req.headers["x-signature-timestamp"] or ""
  local why
  if not tonumber(ts) or math.abs(core.time() // 1000 - tonumber(ts))
      > M.MAX_AGE_S then
    why = "the timestamp is missing or stale: a replay?"
  elseif not core.ed25519_verify(key, sig, ts .. req.body) then
    why = "invalid request signature"
  elseif not channels.fresh("discord", sig, M.MAX_AGE_S * 2000) then
    why = "this signature was used before: a replay"
  end
  if why then
    channels.refuse("discord", 401, why)
    return channels.error_reply(401, why)
  end
  local doc = json.decode(req.body)
  if type(doc) ~= "table" then
    return channels.error_reply(400, "the interaction is not JSON")
  end
  if doc.type == PING then
    return reply({ type = PONG })
  end
  local data = type(doc.data) == "table" and doc.data or {}
  local user = type(doc.member) == "table" and doc.member.user or doc.user
  local by = "discord:" .. tostring(type(user) == "table"
    and (user.username or user.id) or "someone")
  local verb, token = tostring(data.custom_id):match("^spool:(%a+):(.+)$")
  if not verb then
    return channels.error_reply(400, "not a spool interaction")
  end
  local response
  if doc.type == COMPONENT and verb == "ask" then
    return reply({ type = MODAL, data = { custom_id = "spool:answer:" .. token,
      title = "Answer", components = json.array({ { type = 1,
        components = json.array({ { type = 4, custom_id = "answer",
          style = 2, label = "Your answer", required = true } }) } }) } })
  elseif doc.type == COMPONENT and verb == "approve" then
    response = { approve = true }
  elseif doc.type == COMPONENT and verb == "reject" then
    response = { reject = true, reason = "rejected in Discord" }
  elseif doc.type == MODAL_SUBMIT and verb == "answer" then
    local row = type(data.components) == "table" and data.components[1] or {}
    local input = type(row.components) == "table" and row.components[1] or {}
    response = { answer = tostring(input.value or "") }
  else
    return channels.error_reply(400, "not a spool interaction")
  end
  local message = type(doc.message) == "table" and doc.message.id or nil
  local ok, line_or_status, msg = channels.answer(token, response,
    { channel = "discord", by = by, ref = { message = message } })
  if not ok then
    return reply({ type = MESSAGE, data = { content = msg,
                                            flags = EPHEMERAL } })
  end
  return reply({ type = UPDATE_MESSAGE, data = { content = clip(line_or_status),
                                                 components = json.array() } })
end


return M
