-- spool.tokens: how many tokens a text will cost, before the call.
--
-- The estimate is bytes / 4 (close for English with every provider's
-- tokenizer), times a factor calibrated from what the provider reported:
-- each model_call event keeps the uncalibrated estimate of its request
-- (`context.estimate`) beside the provider's usage.input_tokens, and the
-- thread's latest such pair sets the factor. So the count follows the
-- thread's own language and model, and rendering a thread at a given step
-- always gives the same numbers (`spool prompt --thread`).
--
--   tokens.estimate(text [, factor])      -> tokens
--   tokens.message(msg [, factor [, sizes]])  -> tokens of a chat message
--   tokens.bytes(msg)                     -> the bytes of it that count
--   tokens.factor(events)                 -> the calibration factor

local M = {}

-- Per message: role and framing, as providers count them.
local MESSAGE_OVERHEAD = 4

local MIN_FACTOR, MAX_FACTOR = 0.5, 3


function M.estimate(text, factor)
  if type(text) ~= "string" or text == "" then
    return 0
  end
  return math.ceil(#text / 4 * (factor or 1))
end


function M.bytes(msg)
  local content = msg.content
  local n = type(content) == "string" and #content or 0
  local calls = msg.tool_calls
  if calls then
    for i = 1, #calls do
      local c = calls[i]
      n = n + #tostring(c.name or "") + #tostring(c.arguments or "")
    end
  end
  return n
end


-- `sizes` (optional) remembers each message's bytes for one render, which
-- counts a message more than once (its event, the request); a thread's
-- steps keep the sizes of the messages they keep (spool._window.memo).
local function size_of(msg, sizes)
  local n = sizes and sizes[msg]
  if not n then
    n = M.bytes(msg)
    if sizes then
      sizes[msg] = n
    end
  end
  return n
end


local ceil = math.ceil

-- (Counted for every message at every step: kept lean.)
function M.message(msg, factor, sizes)
  local calls = msg.tool_calls
  local n = calls and MESSAGE_OVERHEAD * (1 + #calls) or MESSAGE_OVERHEAD
  local bytes = size_of(msg, sizes)
  if bytes > 0 then
    n = n + ceil(bytes / 4 * (factor or 1))
  end
  return n
end


-- The factor from the latest model call that has both numbers, or 1.
function M.factor(events)
  for i = #events, 1, -1 do
    local ev = events[i]
    if ev.type == "model_call" then
      local d = ev.data
      local est = type(d.context) == "table" and tonumber(d.context.estimate)
      local used = type(d.usage) == "table" and tonumber(d.usage.input_tokens)
      if est and est > 0 and used and used > 0 then
        return math.min(MAX_FACTOR, math.max(MIN_FACTOR, used / est))
      end
    end
  end
  return 1
end


-- The longest prefix of `text` within `n` tokens, cut at a UTF-8
-- character boundary.
function M.head(text, n, factor)
  local bytes = math.floor(n * 4 / (factor or 1))
  if bytes >= #text then
    return text
  end
  while bytes > 0 do
    local b = text:byte(bytes + 1)
    if not b or b < 0x80 or b >= 0xC0 then
      break -- the next byte starts a character: cut before it
    end
    bytes = bytes - 1
  end
  return text:sub(1, bytes)
end


return M
