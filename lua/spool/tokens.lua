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
--   tokens.message(msg [, factor])        -> tokens of a chat message:
--     tokens.overhead(msg) + tokens.of_bytes(tokens.bytes(msg), factor)
--   tokens.bytes(msg)                     -> the bytes of it that count
--   tokens.of_sizes(list of bytes [, factor]) -> the sum of their of_bytes
--   tokens.factor(events)                 -> the calibration factor, within
--                                            MIN_FACTOR..MAX_FACTOR

local core = require "spool.core"

local M = {}

-- Per message: role and framing, as providers count them.
M.MESSAGE_OVERHEAD = 4
local MESSAGE_OVERHEAD = M.MESSAGE_OVERHEAD

M.MIN_FACTOR, M.MAX_FACTOR = 0.5, 3
local MIN_FACTOR, MAX_FACTOR = M.MIN_FACTOR, M.MAX_FACTOR


-- A token count as a provider reported it: a whole number, not negative,
-- else nil. A provider's (or a proxy's) nonsense must not make budgets
-- grow back or go wrong.
function M.count(v)
  v = math.tointeger(v)
  if v and v >= 0 then
    return v
  end
end


function M.estimate(text, factor)
  return M.of_bytes(type(text) == "string" and #text or 0, factor)
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


local ceil = math.ceil

-- The tokens of a message's framing, whatever its content.
function M.overhead(msg)
  local calls = msg.tool_calls
  return calls and MESSAGE_OVERHEAD * (1 + #calls) or MESSAGE_OVERHEAD
end


-- The tokens of n bytes of a message.
function M.of_bytes(n, factor)
  return n > 0 and ceil(n / 4 * (factor or 1)) or 0
end


-- The tokens of messages of these sizes (a list of bytes), less their
-- framing: each one's of_bytes, summed in C (counted for every message
-- at every step).
M.of_sizes = core.sizes_tokens -- (engine/src/lua/l_window.c)


function M.message(msg, factor)
  return M.overhead(msg) + M.of_bytes(M.bytes(msg), factor)
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
