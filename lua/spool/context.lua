-- spool.context: what the model sees, rendered from the thread's events.
--
--   context.chat(thread, agent)        -> messages in the provider-neutral
--                                         chat form (role, content,
--                                         tool_calls, tool_call_id)
--   context.structured(thread, agent)  -> one user message holding the
--                                         thread as tagged blocks
--   context.render_value(v)            -> a value as compact text
--
-- The chat rendering is always valid for a provider: every tool call the
-- model made is answered by a tool message, in order, even when the thread
-- holds no result for it (a crash, or a terminal intent); such a call is
-- answered with a note that it has no result.
--
-- Each event type renders through a function in `context.chat_renderers` /
-- `context.block_renderers`; an agent customises one type by passing its
-- own table of overrides as the third argument.

local json = require "spool.json"

local M = {}


-- Renders a tool result or error detail compactly: strings as they are,
-- anything else as compact JSON.
function M.render_value(v)
  if type(v) == "string" then
    return v
  elseif v == nil then
    return "null"
  end
  local ok, s = pcall(json.encode, v)
  return ok and s or tostring(v)
end


local function user_text(input)
  if type(input) == "string" then
    return input
  end
  return M.render_value(input)
end


-- Default chat renderers: event -> message(s) to append (or nil).
M.chat_renderers = {
  input = function(ev)
    return { role = "user", content = user_text(ev.data.input) }
  end,
  model_call = function(ev)
    local msg = { role = "assistant", content = ev.data.text }
    if ev.data.tool_calls and #ev.data.tool_calls > 0 then
      local calls = json.array()
      for i, c in ipairs(ev.data.tool_calls) do
        calls[i] = { id = c.id, name = c.name, arguments = c.arguments }
      end
      msg.tool_calls = calls
    end
    return msg
  end,
  tool_result = function(ev)
    if ev.data.call_id then
      return { role = "tool", tool_call_id = ev.data.call_id,
               name = ev.data.name, content = M.render_value(ev.data.result) }
    end
    return { role = "user", content = string.format("Result of %s: %s",
      ev.data.name, M.render_value(ev.data.result)) }
  end,
  human_response = function(ev)
    if ev.data.call_id == nil and ev.data.kind == "ask" and not ev.data.via then
      return { role = "user", content = "A person answered: "
        .. tostring(ev.data.answer or "(no answer before the deadline)") }
    end
  end,
  error = function(ev)
    if ev.data.call_id then
      return { role = "tool", tool_call_id = ev.data.call_id,
               name = ev.data.name, content = "error: " .. ev.data.error }
    end
    return { role = "user", content = "error: " .. ev.data.error
      .. "\nPlease correct this and answer again." }
  end,
}


-- Adds the tool messages still owed for the calls of the last assistant
-- message, so no tool call is ever left without an answer.
local function settle(messages, owed)
  for _, call in ipairs(owed) do
    messages[#messages + 1] = {
      role = "tool", tool_call_id = call.id, name = call.name,
      content = "error: no result was recorded for this call",
    }
  end
end


function M.chat(thread, agent, renderers)
  renderers = renderers or {}
  local messages = {}
  local owed, owed_index = {}, {}
  for _, ev in ipairs(thread.events) do
    local render = renderers[ev.type] or M.chat_renderers[ev.type]
    local msg = render and render(ev, thread, agent)
    if msg then
      if msg.role == "tool" then
        local i = owed_index[msg.tool_call_id]
        if i then
          owed[i] = false
          owed_index[msg.tool_call_id] = nil
          messages[#messages + 1] = msg
        end
        -- A result for a call that is not pending is dropped: a provider
        -- would reject it.
      else
        local pending = {}
        for _, c in ipairs(owed) do
          if c then
            pending[#pending + 1] = c
          end
        end
        settle(messages, pending)
        owed, owed_index = {}, {}
        messages[#messages + 1] = msg
        for _, c in ipairs(msg.tool_calls or {}) do
          owed[#owed + 1] = c
          owed_index[c.id] = #owed
        end
      end
    end
  end
  local pending = {}
  for _, c in ipairs(owed) do
    if c then
      pending[#pending + 1] = c
    end
  end
  settle(messages, pending)
  return messages
end


-- Default block renderers for the structured form: event -> tag, body,
-- attributes (or nil to leave the event out).
M.block_renderers = {
  input = function(ev)
    return "input", user_text(ev.data.input)
  end,
  intent = function(ev)
    return ev.data.name, M.render_value(ev.data.args)
  end,
  tool_result = function(ev)
    return ev.data.name .. "_result", M.render_value(ev.data.result)
  end,
  error = function(ev)
    return "error", ev.data.error
  end,
  model_call = function(ev)
    if ev.data.text and ev.data.text ~= "" and #(ev.data.tool_calls or {}) == 0
    then
      return "assistant", ev.data.text
    end
  end,
  agent_result = function(ev)
    return ev.data.agent .. "_result", M.render_value(ev.data.result
      or ev.data.error)
  end,
}


-- The whole thread as one user message of <tag>...</tag> blocks, the
-- "own your context window" rendering: compact, and in the author's words.
function M.structured(thread, agent, renderers)
  renderers = renderers or {}
  local blocks = {}
  for _, ev in ipairs(thread.events) do
    local render = renderers[ev.type] or M.block_renderers[ev.type]
    if render then
      local tag, body = render(ev, thread, agent)
      if tag then
        blocks[#blocks + 1] = string.format("<%s>\n%s\n</%s>", tag, body, tag)
      end
    end
  end
  return { { role = "user", content = table.concat(blocks, "\n\n") } }
end


return M
