-- spool.run.render: each event type as chat message or as tagged block
-- (spool.context's default renderers), and a value as compact text. Below
-- the window planner, compaction and spool.context, which all render.

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
-- What a person who approved a call with other arguments changed.
local function edited_note(ev)
  local edited = ev.data.edited_args
  if edited == nil then
    return ""
  end
  return "(A person changed the arguments to " .. json.encode(edited)
    .. " before it ran.) "
end


M.chat_renderers = {
  input = function(ev)
    return { role = "user", content = user_text(ev.data.input) }
  end,
  model_call = function(ev)
    local msg = { role = "assistant", content = ev.data.text }
    if ev.data.dropped_tool_calls and (msg.content or "") == "" then
      msg.content = string.format("(%d tool calls, over the limit)",
        ev.data.dropped_tool_calls)
    end
    if ev.data.tool_calls and #ev.data.tool_calls > 0 then
      local calls = json.array()
      local from = ev.data.tool_calls
      for i = 1, #from do
        local c = from[i]
        calls[i] = { id = c.id, name = c.name, arguments = c.arguments }
      end
      msg.tool_calls = calls
    end
    return msg
  end,
  tool_result = function(ev)
    if ev.data.call_id then
      return { role = "tool", tool_call_id = ev.data.call_id,
               name = ev.data.name, content = edited_note(ev)
                 .. M.render_value(ev.data.result) }
    end
    return { role = "user", content = string.format("Result of %s: %s",
      ev.data.name, M.render_value(ev.data.result)) }
  end,
  prefetch = function(ev)
    return { role = "user", content = string.format("Fetched before you "
      .. "started, %s:\n%s", ev.data.name, ev.data.error
        and ("error: " .. ev.data.error) or M.render_value(ev.data.result)) }
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
               name = ev.data.name, content = edited_note(ev) .. "error: "
                 .. ev.data.error }
    end
    return { role = "user", content = "error: " .. ev.data.error
      .. "\nPlease correct this and answer again." }
  end,
}


-- The built-in chat renderers, as this module made them: each a function
-- of its event alone, so a step may keep what it rendered for the next
-- (spool.run.window.memo). A replacement put into chat_renderers is not
-- known to be, and renders afresh each time.
M.pure_renderers = {}
for _, render in pairs(M.chat_renderers) do
  M.pure_renderers[render] = true
end


-- Plans the thread's window (spool.run.window) and acts on the plan: writes
-- the summaries a { summarize = n } policy wants, compacts when the thread
-- is over budget, and as a last resort drops the oldest parts and cuts
-- results (a `warning` event says so when even that is not enough). With
-- opts.dry (spool prompt) it only plans: no model call, no new event.
-- Returns the messages and the plan.
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
    return ev.data.name .. "_result", edited_note(ev)
      .. M.render_value(ev.data.result)
  end,
  error = function(ev)
    return "error", edited_note(ev) .. ev.data.error
  end,
  model_call = function(ev)
    if ev.data.text and ev.data.text ~= "" and #(ev.data.tool_calls or {}) == 0
    then
      return "assistant", ev.data.text
    end
  end,
  prefetch = function(ev)
    return ev.data.name, ev.data.error and ("error: " .. ev.data.error)
      or M.render_value(ev.data.result)
  end,
  agent_result = function(ev)
    return ev.data.agent .. "_result", M.render_value(ev.data.result
      or ev.data.error)
  end,
}


return M
