-- spool.serve.openai_chat: POST /v1/chat/completions (private), an agent as
-- an OpenAI chat model (spool.serve.openai has what is shared).
--
--   { model = agent, messages, stream?, stream_options?, metadata? }
--
-- The thread a conversation continues is named in metadata.spool_thread,
-- or at the end of its last assistant message ("[spool thread t_...]"):
-- chat UIs send the history back, not metadata. Streamed, the reply is
-- chat.completion.chunk events, the usage (with
-- stream_options.include_usage), then [DONE].

local core = require "spool.core"
local json = require "spool.json"
local thread_mod = require "spool.run.thread"
local openai = require "spool.serve.openai"

local M = {}


-- The thread a conversation continues: named in metadata, or at the end of
-- its last assistant message.
local function continues(body, messages)
  local meta = type(body.metadata) == "table" and body.metadata or {}
  if type(meta.spool_thread) == "string" then
    return meta.spool_thread
  end
  for i = #messages, 1, -1 do
    if messages[i].role == "assistant" then
      return messages[i].text:match(openai.MARK)
    end
  end
end


local function usage_of(t)
  local input, output = openai.usage(t)
  return { prompt_tokens = input, completion_tokens = output,
           total_tokens = input + output }
end


local function chunk(id, name, created, delta, finish)
  return "data: " .. json.encode({ id = "chatcmpl-" .. id,
    object = "chat.completion.chunk", created = created, model = name,
    choices = { { index = 0, delta = delta,
                  finish_reason = finish or json.null } } }) .. "\n\n"
end


local function stream(api, req, body, messages, created)
  local name, id = body.model, nil
  local include_usage = type(body.stream_options) == "table"
    and body.stream_options.include_usage == true
  openai.stream(api, req, name, messages, continues(body, messages), {
    open = function(s, thread_id)
      id = thread_id
      return s:send(chunk(id, name, created,
        { role = "assistant", content = "" }))
    end,
    text = function(s, piece)
      return s:send(chunk(id, name, created, { content = piece }))
    end,
    close = function(s, t, extra)
      if extra ~= "" and not s:send(chunk(id, name, created,
          { content = extra })) then
        return false
      end
      s:send(chunk(id, name, created, {}, "stop"))
      if include_usage then
        local _, view = openai.outcome(t)
        s:send("data: " .. json.encode({ id = "chatcmpl-" .. id,
          object = "chat.completion.chunk", created = created, model = name,
          choices = json.array(), usage = usage_of(t), spool = view })
          .. "\n\n")
      end
      return s:send("data: [DONE]\n\n")
    end,
  })
end


function M.create(api, req, body)
  local name = openai.model_of(api, body)
  local messages = openai.messages(api, body.messages, "messages")
  local created = core.time() // 1000
  if body.stream == true then
    return stream(api, req, body, messages, created)
  end
  local id = openai.begin(api, req, name, messages, thread_mod.new_id(),
    continues(body, messages))
  local t = openai.settled(api, id)
  local content, view, failure = openai.outcome(t)
  if not content then
    api.fail(500, "agent_failed", string.format("the agent %s failed: %s "
      .. "(thread %s)", t.agent, tostring(failure), t.id))
  end
  return 200, { id = "chatcmpl-" .. id, object = "chat.completion",
    created = created, model = name,
    choices = { { index = 0, finish_reason = "stop", logprobs = json.null,
                  message = { role = "assistant", content = content } } },
    usage = usage_of(t), spool = view }
end


return M
