-- reply: the response writer. No tools: its plain-text answer is the
-- email to the customer.
local spool = require "spool"

return spool.agent {
  description = "Writes the reply to the customer.",
  prompt = "reply.md",
  max_steps = 2,
}
