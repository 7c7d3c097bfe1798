-- support: the pipeline. Each step runs one small agent as a child thread
-- (classify -> lookup -> refund -> reply) and decides the next one from the
-- results already in the thread, so the step is a pure function of the
-- thread's events.
local spool = require "spool"

-- The results of the child agents that ran so far, by agent name.
local function results(thread)
  local r = {}
  for ev in thread:each("agent_result") do
    r[ev.data.agent] = ev.data
  end
  return r
end

local function call(thread, name, input)
  local result, err = spool.call(thread, name, input)
  if result == nil then
    thread:fail(name .. " failed: " .. tostring(err))
  end
  return result
end

return spool.agent {
  description = "Answers a customer message end to end.",
  max_steps = 5,
  step = function(thread)
    local message = thread:input()
    local r = results(thread)
    local class = r.classify and r.classify.result
    if not r.classify then
      call(thread, "classify", message)
    elseif class.order_id and not r.lookup then
      call(thread, "lookup", { order_id = class.order_id,
                               request = class.summary })
    elseif class.category == "refund" and class.order_id and not r.refund then
      call(thread, "refund", { order_id = class.order_id, request = message,
                               facts = r.lookup.result })
    else
      local answer = call(thread, "reply", {
        message = message,
        category = class.category,
        facts = r.lookup and r.lookup.result or "no order was mentioned",
        action = r.refund and r.refund.result or "none",
      })
      if answer then
        thread:finish(answer)
      end
    end
  end,
}
