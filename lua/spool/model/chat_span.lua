-- spool.model.chat_span: the span of a model call (private to spool.llm),
-- with the GenAI semantic conventions' attributes (v1.41): what was asked
-- at the start (sampling may read those), what came back at the end, and
-- each failed attempt as an event. Token usage is reported here and on no
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


-- Starts the span of a call to `model` (nil when tracing is off). Its id
-- goes out with the request as traceparent.
function M.start(model, req)
  if not trace.enabled() then
    return nil
  end
  local url = model.mock and "" or (model.base_url or "")
  local host, port = url:match("^https?://%[?([^/%]]-)%]?:(%d+)")
  if not host then
    host = url:match("^https?://([^/:]+)")
    port = host and (url:match("^https://") and 443 or 80)
  end
  local thread = req.thread or task.thread()
  local attrs = {
    ["gen_ai.operation.name"] = "chat",
    ["gen_ai.provider.name"] = PROVIDERS[model.provider] or model.provider,
    ["spool.model.mock"] = model.mock and true or nil,
    ["gen_ai.request.model"] = model.name,
    ["gen_ai.request.max_tokens"] = req.max_tokens or model.max_tokens,
    ["gen_ai.request.temperature"] = req.temperature or model.temperature,
    ["gen_ai.request.stream"] = req.stream and true or nil,
    ["gen_ai.output.type"] = req.json and "json" or nil,
    ["gen_ai.conversation.id"] = thread and thread.id or nil,
    ["server.address"] = host,
    ["server.port"] = tonumber(port),
  }
  if trace.content then
    attrs["gen_ai.input.messages"] = trace.text(input_messages(req))
    attrs["gen_ai.system_instructions"] = req.system
      and trace.text({ { type = "text", content = req.system } }) or nil
  end
  return trace.start("chat " .. tostring(model.name), trace.CLIENT, attrs)
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


-- Ends it with the reply (or the error) and the attempts.
function M.finish(span, reply, err, attempts)
  if not span then
    return
  end
  for _, a in ipairs(attempts or {}) do
    if a.error then
      trace.event(span, "spool.model.attempt_failed", {
        ["spool.attempt"] = a.attempt, ["gen_ai.request.model"] = a.model,
        ["http.response.status_code"] = a.status, ["error.message"] = a.error,
        ["spool.retry_in_ms"] = a.retry_in_ms,
      })
    end
  end
  local attrs = span.attrs
  if reply then
    local u = reply.usage or {}
    attrs["gen_ai.response.model"] = reply.model
    attrs["gen_ai.response.id"] = reply.id
    attrs["gen_ai.response.finish_reasons"] = reply.finish_reason
      and { reply.finish_reason } or nil
    attrs["gen_ai.usage.input_tokens"] = u.input_tokens
    attrs["gen_ai.usage.output_tokens"] = u.output_tokens
    attrs["gen_ai.usage.cache_read.input_tokens"] = u.cached_tokens
    attrs["gen_ai.usage.cache_creation.input_tokens"] = u.cache_creation_tokens
    attrs["gen_ai.usage.reasoning.output_tokens"] = u.reasoning_tokens
    if trace.content then
      local parts = parts_of({ content = reply.text,
                               tool_calls = reply.tool_calls })
      attrs["gen_ai.output.messages"] = trace.text({ { role = "assistant",
        parts = parts, finish_reason = reply.finish_reason } })
    end
    trace.finish(span)
  else
    trace.finish(span, err or "the model call failed",
      error_type(attempts and attempts[#attempts]))
  end
end


return M
