-- spool.human: contacting a human is just another intent.
--
--   tools = { ask_human = spool.human.ask }    the model asks a question
--   tools = { deploy = { ..., approve = true } }   a human approves first
--   approve = { deadline_ms = 3600000 }        denied if not answered in time
--
-- Either way the thread stores a human_request event and waits (status
-- "waiting"); the process may exit. An answer arrives as a human_response
-- (spool resume ID --answer TEXT / --approve [--args JSON] / --reject
-- [--reason TEXT], or the embedding API) and the run continues from the
-- stored events: the approved tool runs exactly once, with the approved
-- (possibly edited) arguments; a rejection and its reason go to the model.

local M = {}

local json = require "spool.json"
local schema = require "spool.schema"

M.ask = {
  description = "Ask a human a question and wait for the answer. Use it "
    .. "when you need information or a decision only a person can give.",
  params = { question = "string" },
  human = "ask",
}


-- A tool that waits for an outside event (a payment confirmed, a form
-- signed): the model calls it, the thread waits, and the event's data,
-- when it is sent (spool resume ID --event NAME --data JSON, or the control
-- API), is the tool's result.
--   tools = { wait_payment = spool.wait_for("payment", "Wait until paid.") }
function M.wait_for(name, description)
  if type(name) ~= "string" or not name:match("^[%w_%.%-]+$") then
    error("spool.wait_for: the event name must be letters, digits, _ . -", 2)
  end
  return {
    description = description or ("Wait for the event '" .. name .. "'."),
    params = {}, human = "event", event = name,
  }
end


-- What a pending request waits for, in words (for errors and listings).
function M.describe(r)
  if r.kind == "ask" then
    return "an answer to: " .. tostring(r.question)
  elseif r.kind == "event" then
    return "the event '" .. tostring(r.event) .. "'"
  end
  return "approval of " .. tostring(r.name) .. " "
    .. json.encode(r.args or {})
end


-- A pending request as clients are shown it (the control API's
-- waiting_for, an MCP client's result).
function M.view(r)
  return { kind = r.kind, question = r.question, name = r.name,
           args = r.args, event = r.event, deadline = r.deadline,
           via = r.via, text = M.describe(r) }
end


-- Checks a response against the request it answers. Returns the
-- human_response data, or nil and "ECODE: why".
function M.response_for(request, response, tool)
  local r = request.data
  local data = { call_id = r.call_id, via = r.via, kind = r.kind,
                 by = response.by or "api", channel = response.channel,
                 claimed_by = response.claimed_by }
  if response.timeout then
    -- The deadline passed: an approval is denied, a question unanswered.
    if r.kind == "approval" then
      data.approved = false
      data.reason = "no response before the deadline"
    end
    return data
  end
  if r.kind == "event" then
    if response.event ~= r.event then
      return nil, string.format("EINVAL: the thread waits for the event "
        .. "'%s'%s", tostring(r.event), response.event
          and (", not '" .. tostring(response.event) .. "'") or "")
    end
    data.event = r.event
    data.data = response.data
    return data
  end
  if r.kind == "ask" then
    if type(response.answer) ~= "string" then
      return nil, string.format("EINVAL: the thread waits for an answer to "
        .. "%q (give an answer, not an approval)", tostring(r.question))
    end
    data.answer = response.answer
    return data
  end
  if response.approve == nil and response.reject == nil then
    return nil, string.format("EINVAL: the thread waits for approval of "
      .. "%s (approve or reject it)", tostring(r.name))
  end
  if response.reject then
    if response.reason ~= nil and type(response.reason) ~= "string" then
      return nil, "EINVAL: a rejection's reason must be text"
    end
    data.approved = false
    data.reason = response.reason
    return data
  end
  data.approved = true
  if response.args ~= nil then
    if type(response.args) ~= "table" then
      return nil, "EINVAL: edited arguments must be a JSON object"
    end
    if tool then
      local ok, err = schema.check(response.args,
        tool.schema, r.name)
      if not ok then
        return nil, "EINVAL: the edited arguments do not fit the tool: " .. err
      end
    end
    data.args = response.args
  end
  return data
end


return M
