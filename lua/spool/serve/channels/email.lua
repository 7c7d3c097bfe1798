-- spool.serve.channels.email: requests by email, answers by replying.
--
--   -- spool.lua
--   channels = { email = {
--     from = "spool@example.com",
--     smtp_url = "smtp://smtp.example.com:587", starttls = true,
--     imap_url = "imaps://imap.example.com/INBOX", poll_ms = 60000,
--     username_env = "SPOOL_MAIL_USER", password_env = "SPOOL_MAIL_PASSWORD",
--     allow = { "@example.com" },     -- who may answer (all when absent)
--   } }
--   -- an agent
--   humans = { channel = "email", to = "ops@example.com" }
--
-- A request is sent over SMTP (libcurl) with its token in the subject,
-- "[ref:<token>]", and in the Message-ID, so a reply finds its request by
-- either. Replies are read by polling the IMAP inbox (spool serve, every
-- poll_ms; UID SEARCH UNSEEN, then each message's BODY[], which marks it
-- seen), or posted to the control API's signed inbound route
-- /v1/channels/email as { from, subject, text } or { raw = "<the whole
-- message>" }. The quoted part of a reply is cut off; for an approval its
-- first line says APPROVE (or yes) or REJECT (or no) and a reason, for a
-- question the text is the answer. A reply that answers nothing (already
-- answered, unknown, unclear) gets a reply that says why.

local core = require "spool.core"

local M = {}


local function credentials(settings)
  return core.getenv(settings.username_env or "SPOOL_MAIL_USER"),
    core.getenv(settings.password_env or "SPOOL_MAIL_PASSWORD")
end


function M.check(target)
  if not M.plain_address(target.to) then
    return "an email target needs to = \"someone@example.com\""
  end
end


local function header_safe(s)
  return (tostring(s):gsub("[\r\n]+", " "))
end


-- ---- encoding what is sent (RFC 2045, 2047) ----

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    for k = 0, 3 do
      local six = ((n >> (18 - 6 * k)) & 63) + 1
      out[#out + 1] = k <= #s - i + 1 and B64:sub(six, six) or "="
    end
  end
  return table.concat(out)
end
M.base64 = base64


-- A text as quoted-printable: lines of at most 76 characters, so no line
-- reaches the 998 an SMTP server takes (a long line of a question or
-- approval would otherwise be refused), UTF-8 kept exactly.
local function quoted_printable(text)
  local out = {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    line = line:gsub("\r$", "")
    local enc, width = {}, 0
    for i = 1, #line do
      local c = line:sub(i, i)
      local b = c:byte()
      local piece = c
      if b == 61 or b < 32 and b ~= 9 or b > 126
          or ((b == 32 or b == 9) and i == #line) then
        piece = string.format("=%02X", b)
      end
      if width + #piece > 75 then
        enc[#enc + 1] = "=\r\n" -- a soft break
        width = 0
      end
      enc[#enc + 1] = piece
      width = width + #piece
    end
    out[#out + 1] = table.concat(enc)
  end
  return table.concat(out, "\r\n")
end
M.quoted_printable = quoted_printable


-- A header's text: as it is when plain ASCII, else as encoded words of
-- UTF-8 (whole characters each), folded onto lines of their own.
local function header_text(s)
  s = header_safe(s)
  if not s:find("[\128-\255]") then
    return s
  end
  local words, from = {}, 1
  while from <= #s do
    local to = math.min(from + 44, #s)
    while to < #s and (s:byte(to + 1) or 0) & 0xC0 == 0x80 do
      to = to - 1 -- never split a character
    end
    words[#words + 1] = "=?UTF-8?B?" .. base64(s:sub(from, to)) .. "?="
    from = to + 1
  end
  return table.concat(words, "\r\n ")
end


local function date()
  return os.date("!%a, %d %b %Y %H:%M:%S +0000", core.time() // 1000)
end


-- Sends a plain-text message; returns true or nil and why.
-- A plain address: no angle brackets, spaces or control characters, which
-- would let it carry SMTP commands or other headers.
local function plain_address(a)
  return type(a) == "string" and a:match("^[^%c%s<>,;]+@[^%c%s<>,;]+$") ~= nil
end
M.plain_address = plain_address


function M.send(settings, to, subject, text, extra_headers)
  if not settings.smtp_url or not settings.from then
    return nil, "email is not set up: channels.email needs from and smtp_url"
  end
  if not plain_address(settings.from) then
    return nil, "channels.email.from is not a plain email address"
  elseif not plain_address(to) then
    return nil, "not a plain email address: " .. tostring(to)
  end
  local auto = "Auto-Submitted: auto-generated"
  for _, h in ipairs(extra_headers or {}) do
    if h:lower():match("^auto%-submitted:") then
      auto = nil -- the caller's says which kind
    end
  end
  local lines = {
    "From: " .. header_safe(settings.from),
    "To: " .. header_safe(to),
    "Subject: " .. header_text(subject),
    "Date: " .. date(),
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: quoted-printable",
    -- Machine-made: autoresponders must not answer it (RFC 3834).
    auto,
  }
  for _, h in ipairs(extra_headers or {}) do
    lines[#lines + 1] = header_safe(h)
  end
  local body = table.concat(lines, "\r\n") .. "\r\n\r\n"
    .. quoted_printable(tostring(text)) .. "\r\n"
  local user, password = credentials(settings)
  local res, err = core.mail_request { url = settings.smtp_url,
    mail_from = "<" .. settings.from .. ">", mail_rcpt = { "<" .. to .. ">" },
    upload = true, body = body, username = user, password = password,
    require_tls = settings.starttls, timeout_ms = settings.timeout_ms or 30000 }
  if not res then
    return nil, err
  end
  return true
end


local INSTRUCTIONS = {
  approval = "Reply to this email with APPROVE on the first line, or REJECT "
    .. "and your reason.",
  ask = "Reply to this email with your answer.",
  event = "(The thread waits for an outside event; nothing to answer here.)",
}


function M.deliver(request, target, settings)
  local subject = string.format("[spool] %s needs %s [ref:%s]", request.agent,
    request.kind == "approval" and ("approval of " .. tostring(request.name))
      or request.kind == "ask" and "an answer" or "an event", request.token)
  local text = string.format("%s (thread %s) needs %s.\n\n%s\n\nref:%s\n",
    request.agent, request.thread, request.text,
    INSTRUCTIONS[request.kind] or INSTRUCTIONS.ask, request.token)
  local ok, err = M.send(settings, target.to, subject, text,
    { "Message-ID: <" .. request.token .. "@spool>" })
  if not ok then
    return nil, err
  end
  return { to = target.to }
end


-- ---- reading replies ----

local function unfold_headers(head)
  local headers, last = {}, nil
  for line in (head .. "\n"):gmatch("([^\n]*)\n") do
    line = line:gsub("\r$", "")
    if line:match("^[ \t]") and last then
      headers[last] = headers[last] .. " " .. line:gsub("^%s+", "")
    else
      local name, value = line:match("^([%w%-]+):%s*(.*)$")
      if name then
        last = name:lower()
        headers[last] = headers[last] or value
      end
    end
  end
  return headers
end


local function split(raw)
  local head, body = raw:match("^(.-)\r?\n\r?\n(.*)$")
  return unfold_headers(head or raw), body or ""
end


function M.base64_decode(s)
  s = s:gsub("[^%w%+/]", "")
  local out, bits, n = {}, 0, 0
  for c in s:gmatch(".") do
    bits = (bits << 6) | (B64:find(c, 1, true) - 1)
    n = n + 6
    if n >= 8 then
      n = n - 8
      out[#out + 1] = string.char((bits >> n) & 0xFF)
    end
  end
  return table.concat(out)
end


local function decode_qp(s)
  s = s:gsub("=\r?\n", "")
  return (s:gsub("=(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end


-- The text/plain of a message (the first such part of a multipart one),
-- decoded from quoted-printable or base64.
function M.text_of(raw, depth)
  depth = depth or 0
  if depth > 5 then
    return "" -- parts nested deeper than any mail program makes them
  end
  local headers, body = split(raw)
  local ctype = (headers["content-type"] or "text/plain"):lower()
  -- The boundary as written: its letter case matters.
  local boundary = (headers["content-type"] or "")
    :match('[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]="?([^";]+)"?')
  if ctype:match("^multipart/") and boundary then
    -- The parts lie between the boundary lines.
    local marker = "--" .. boundary
    local parts, from = {}, nil
    for line_start, line in (body .. "\n"):gmatch("()([^\n]*)\n") do
      if line:gsub("\r$", ""):sub(1, #marker) == marker then
        if from then
          parts[#parts + 1] = body:sub(from, line_start - 1)
            :gsub("\r?\n$", "")
        end
        from = line_start + #line + 1
      end
    end
    for _, part in ipairs(parts) do
      local pt = (split(part)["content-type"] or "text/plain"):lower()
      if pt:match("^text/plain") then
        return M.text_of(part, depth + 1)
      elseif pt:match("^multipart/") then -- mixed > alternative > plain
        local text = M.text_of(part, depth + 1)
        if text ~= "" then
          return text
        end
      end
    end
    return ""
  end
  local enc = (headers["content-transfer-encoding"] or ""):lower()
  if enc == "quoted-printable" then
    body = decode_qp(body)
  elseif enc == "base64" then
    body = M.base64_decode(body)
  end
  return M.to_utf8(body, ctype:match('charset="?([%w%-_]+)"?'))
end


-- Text in its charset as UTF-8: Latin-1 and Windows-1252 are converted
-- (most non-UTF-8 mail), and any other byte that is not valid UTF-8
-- becomes U+FFFD, so an answer is never lost to its encoding.
-- Windows-1252's 0x80-0x9F (the rest is Latin-1): € ‚ ƒ „ … † ‡ ˆ ‰ Š ‹
-- Œ Ž ' ' " " • – — ˜ ™ š › œ ž Ÿ.
local CP1252 = {
  [0x80] = 0x20AC, [0x82] = 0x201A, [0x83] = 0x0192, [0x84] = 0x201E,
  [0x85] = 0x2026, [0x86] = 0x2020, [0x87] = 0x2021, [0x88] = 0x02C6,
  [0x89] = 0x2030, [0x8A] = 0x0160, [0x8B] = 0x2039, [0x8C] = 0x0152,
  [0x8E] = 0x017D, [0x91] = 0x2018, [0x92] = 0x2019, [0x93] = 0x201C,
  [0x94] = 0x201D, [0x95] = 0x2022, [0x96] = 0x2013, [0x97] = 0x2014,
  [0x98] = 0x02DC, [0x99] = 0x2122, [0x9A] = 0x0161, [0x9B] = 0x203A,
  [0x9C] = 0x0153, [0x9E] = 0x017E, [0x9F] = 0x0178,
}

local SINGLE_BYTE = { ["iso-8859-1"] = {}, ["latin1"] = {},
  ["iso_8859-1"] = {}, ["windows-1252"] = CP1252, ["cp1252"] = CP1252 }

function M.to_utf8(text, charset)
  charset = (charset or "utf-8"):lower()
  local map = SINGLE_BYTE[charset]
  if map and not utf8.len(text) then
    return (text:gsub("[\128-\255]", function(c)
      return utf8.char(map[c:byte()] or c:byte())
    end))
  end
  if utf8.len(text) then
    return text -- valid UTF-8 stays, whatever the label says
  end
  local out, i = {}, 1
  while i <= #text do
    local b = text:byte(i)
    local n = b >= 0xF0 and 4 or b >= 0xE0 and 3 or b >= 0xC0 and 2 or 1
    local piece = text:sub(i, i + n - 1)
    if #piece == n and utf8.len(piece) == 1 then
      out[#out + 1] = piece
      i = i + n
    else
      out[#out + 1] = "\u{FFFD}"
      i = i + 1
    end
  end
  return table.concat(out)
end


-- The reply without what it quotes: lines starting with ">", and all from
-- "On ... wrote:", "-----Original Message-----" or a signature's "-- ".
function M.strip_quoted(text)
  local out = {}
  for line in (text:gsub("\r", "") .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^On .+wrote:%s*$") or line:match("^%-%-%-%-%-Original")
        or line == "-- " or line:match("^_____+$") then
      break
    end
    if not line:match("^%s*>") then
      out[#out + 1] = line
    end
  end
  return (table.concat(out, "\n"):gsub("^%s+", ""):gsub("%s+$", ""))
end


local function address_of(from)
  return (tostring(from):match("<([^>]+)>") or tostring(from):match("%S+@%S+")
    or tostring(from)):lower()
end


local function allowed(settings, addr)
  if not settings.allow then
    return true
  end
  for _, a in ipairs(settings.allow) do
    if addr == a:lower() or (a:sub(1, 1) == "@" and addr:sub(-#a) == a:lower())
    then
      return true
    end
  end
  return false
end


-- Mail no person wrote: autoresponders (RFC 3834 Auto-Submitted, and the
-- older Precedence and X-Autoreply habits) and bulk mail.
local function automatic(mail)
  local h = mail.headers or {}
  local auto = (h["auto-submitted"] or "no"):lower()
  local precedence = (h["precedence"] or ""):lower()
  return auto ~= "no" or precedence == "bulk" or precedence == "junk"
    or precedence == "list" or h["x-autoreply"] ~= nil
    or h["x-autorespond"] ~= nil
    or tostring(mail.subject or ""):match("^%s*[Aa]utomatic reply")
    or tostring(mail.subject or ""):match("^%s*[Oo]ut of [Oo]ffice")
end


-- Handles one reply: { from, subject, text, in_reply_to, headers }.
-- Returns true, or nil, status and why. A sender is told why a reply was
-- not taken only when it is allowed to answer and named a real request —
-- never in answer to automatic mail, unknown senders or stray mail, which
-- would turn spool into a source of backscatter and mail loops.
function M.handle_reply(channels, settings, mail)
  local addr = address_of(mail.from)
  local token = tostring(mail.subject or ""):match("%[ref:([%w_%.%-]+)%]")
    or tostring(mail.text or ""):match("ref:([%w_%.%-]+)")
    or tostring(mail.in_reply_to or ""):match("<([%w_%.%-]+)@spool>")
  local function refuse(status, why, tell)
    channels.refuse("email", status, why)
    if tell and plain_address(addr) then
      M.send(settings, addr, "Re: [ref:" .. token .. "]",
        "Your reply was not taken: " .. why .. ".",
        { "Auto-Submitted: auto-replied" })
    end
    return nil, status, why
  end
  if automatic(mail) then
    return refuse(422, "automatic mail is not an answer")
  end
  if addr == tostring(settings.from):lower() then
    return refuse(422, "mail from spool itself is not an answer")
  end
  if not plain_address(addr) then
    return refuse(422, "the sender is not a plain address")
  end
  if not allowed(settings, addr) then
    return refuse(403, addr .. " may not answer requests")
  end
  if not token then
    return refuse(404, "it names no request (no [ref:...] in the subject)")
  end
  if not channels.parse_token(token) then
    return refuse(404, "it names no request spool made")
  end
  local req = channels.request_of(token)
  if type(mail.text) ~= "string" then
    return refuse(422, "the reply has no text", true)
  end
  local text = M.strip_quoted(mail.text)
  local response
  if req and req.kind == "approval" then
    local first, rest = text:match("^(%S*)%s*(.-)$")
    first = (first or ""):lower():gsub("%p", "")
    if first == "approve" or first == "approved" or first == "yes" then
      response = { approve = true }
    elseif first == "reject" or first == "rejected" or first == "no" then
      response = { reject = true, reason = rest ~= "" and rest or nil }
    else
      return refuse(422, "the first line says neither APPROVE nor REJECT",
        true)
    end
  else
    if text == "" then
      return refuse(422, "the reply is empty (the answer goes above the "
        .. "quoted request)", true)
    end
    response = { answer = text }
  end
  local ok, status, why = channels.answer(token, response,
    { channel = "email", by = "email:" .. addr })
  if not ok then
    return refuse(status, why, true)
  end
  return true
end


-- Reads the unseen messages of the IMAP inbox and handles each.
function M.poll_once(channels, settings)
  local user, password = credentials(settings)
  local base = settings.imap_url
  local res, err = core.mail_request { url = base, method = "UID SEARCH UNSEEN",
    username = user, password = password, require_tls = settings.starttls,
    timeout_ms = 30000 }
  if not res then
    return nil, err
  end
  local handled = 0
  for uids in res.body:gmatch("%* SEARCH([%d ]*)") do
    for uid in uids:gmatch("%d+") do
      local msg, ferr = core.mail_request { url = base .. "/;UID=" .. uid,
        username = user, password = password, require_tls = settings.starttls,
        timeout_ms = 30000 }
      if msg then
        -- One bad message must not cost the others (it is seen already).
        local ok, perr = pcall(function()
          local headers = split(msg.body)
          M.handle_reply(channels, settings, { from = headers.from,
            subject = headers.subject, in_reply_to = headers["in-reply-to"],
            headers = headers, text = M.text_of(msg.body) })
        end)
        if not ok then
          core.log("warn", "email: message " .. uid .. " could not be read: "
            .. tostring(perr))
        end
        handled = handled + 1
        if settings.stop and settings.stop() then
          return handled
        end
      else
        core.log("warn", "email: cannot fetch message " .. uid .. ": "
          .. tostring(ferr))
      end
    end
  end
  return handled
end


-- The signed inbound route: { from, subject, text } or { raw }.
function M.inbound_json(channels, settings, body)
  local mail = body
  if type(body.raw) == "string" then
    local headers = split(body.raw)
    mail = { from = headers.from, subject = headers.subject,
             in_reply_to = headers["in-reply-to"], headers = headers,
             text = M.text_of(body.raw) }
  elseif type(body.text) == "string" then
    mail = { from = body.from, subject = body.subject, headers = {},
             in_reply_to = body.in_reply_to, text = M.to_utf8(body.text) }
  end
  if type(mail.from) ~= "string" or type(mail.text) ~= "string" then
    return 422, { error = { code = "invalid", message = "a reply needs from "
      .. "and text (or raw)" } }
  end
  local ok, status, why = M.handle_reply(channels, settings, mail)
  if not ok then
    return status, { error = { code = "refused", message = why } }
  end
  return 200, { answered = true }
end


return M
