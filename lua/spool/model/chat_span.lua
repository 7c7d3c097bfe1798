-- spool.model.chat_span: the span of a model call (private to spool.llm),
-- with the GenAI semantic conventions' attributes (v1.41), given when the
-- call ends: what was asked, what came back, and each failed attempt as an
-- event. Token usage is reported here and on no
-- other span, so a backend that adds spans up counts each token once.

local trace = require "spool.run.trace"
local task = require "spool.base.task"

local M = {}

-- spool's provider names as the conventions' gen_ai.provider.name.
local PROVIDERS = { openai = "openai", ["openai-responses"] = "openai",
                    anthropic = "anthropic" }


-- A message's parts, as gen_ai.input.messages has them.
local function parts_of(m)
  local parts = {}
  if type(m.content) == "string" and m.content ~= "" then
    parts[#parts + 1] = { type = "text", content = m.content }
  end
  for _, c in ipairs(m.tool_calls or {}) do
    parts[#parts + 1] = { type = "tool_call", id = c.id, name = c.name,
                          arguments = c.arguments }
  end
  if m.role == "tool" then
    parts = { { type = "tool_call_response", id = m.tool_call_id,
                response = m.content } }
  end
  return parts
end


local function input_messages(req)
  local out = {}
  for i, m in ipairs(req.messages or {}) do
    out[i] = { role = m.role, parts = parts_of(m) }
  end
  return out
end


-- What a model's spans say of it: their name ("chat MODEL"), and its
-- server.address and server.port (none for the mock). Kept for each model
-- table (the engine's are made once per version).
local described = setmetatable({}, { __mode = "k" })

local function about(model)
  local d = described[model]
  if d then
    return d
  end
  local url = model.mock and "" or (model.base_url or "")
  local host, port = url:match("^https?://%[?([^/%]]-)%]?:(%d+)")
  if not host then
    host = url:match("^https?://([^/:]+)")
    port = host and (url:match("^https://") and 443 or 80)
  end
  d = { name = "chat " .. tostring(model.name), host = host,
        port = tonumber(port) }
  described[model] = d
  return d
end


-- Starts the span of a call (nil when tracing is off). Its id goes out
-- with the request as traceparent.
function M.start(model)
  return trace.start(about(model).name, trace.CLIENT)
end


-- error.type of a call that failed for good: its last attempt's status, a
-- timeout, a cancellation, or "_OTHER".
local function error_type(last)
  if not last then
    return "_OTHER"
  elseif last.deadline or (last.error or ""):find("ETIMEDOUT", 1, true) then
    return "timeout"
  elseif (last.error or ""):find("ECANCELED", 1, true) then
    return "cancelled"
  elseif last.status and last.status >= 300 then
    return tostring(last.status)
  end
  return "_OTHER"
end


local NONE = {}

local CHAT = trace.schema { "gen_ai.operation.name", "gen_ai.provider.name",
  "gen_ai.request.model", "gen_ai.request.max_tokens",
  "gen_ai.request.temperature", "gen_ai.request.stream", "gen_ai.output.type",
  "gen_ai.conversation.id", "server.address", "server.port",
  "spool.model.mock", "gen_ai.response.model", "gen_ai.response.id",
  "gen_ai.response.finish_reasons[]", "gen_ai.usage.input_tokens",
  "gen_ai.usage.output_tokens", "gen_ai.usage.cache_read.input_tokens",
  "gen_ai.usage.cache_creation.input_tokens",
  "gen_ai.usage.reasoning.output_tokens", "gen_ai.input.messages",
  "gen_ai.system_instructions", "gen_ai.output.messages", "error.type" }

-- Ends it, with what was asked (`model`, `req`) and what came back (the
-- reply, or the error and the attempts).
function M.finish(span, model, req, reply, err, attempts)
  if not span then
    return
  end
  attempts = attempts or NONE
  for i = 1, #attempts do
    local a = attempts[i]
    if a.error then
      trace.event(span, "spool.model.attempt_failed", {
        ["spool.attempt"] = a.attempt, ["gen_ai.request.model"] = a.model,
        ["http.response.status_code"] = a.status, ["error.message"] = a.error,
        ["spool.retry_in_ms"] = a.retry_in_ms,
      })
    end
  end
  local server = about(model)
  local thread = req.thread or task.thread()
  local r = reply or NONE
  local u = r.usage or NONE
  local input, system, output
  if trace.content then
    input = trace.text(input_messages(req))
    system = req.system and trace.text({ { type = "text",
                                           content = req.system } })
    output = reply and trace.text({ { role = "assistant",
      parts = parts_of({ content = r.text, tool_calls = r.tool_calls }),
      finish_reason = r.finish_reason } })
  end
  trace.finish(span, not reply and (err or "the model call failed") or nil,
    CHAT, "chat", PROVIDERS[model.provider] or model.provider, model.name,
    req.max_tokens or model.max_tokens, req.temperature or model.temperature,
    req.stream and true or nil, req.json and "json" or nil,
    thread and thread.id or nil, server.host, server.port,
    model.mock and true or nil, r.model, r.id,
    r.finish_reason, u.input_tokens, u.output_tokens,
    u.cached_tokens, u.cache_creation_tokens, u.reasoning_tokens, input,
    system, output,
    not reply and error_type(attempts[#attempts]) or nil)
end


return M
