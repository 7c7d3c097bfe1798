-- classify: sorts a customer message into a category, with the order id
-- it mentions. One step: the model calls `classify`, which ends the thread
-- with the arguments as its result.
local spool = require "spool"

return spool.agent {
  description = "Sorts a customer message: category, order id, summary.",
  prompt = "classify.md",
  max_steps = 3,
  tools = {
    classify = spool.done {
      description = "Record the category of the customer's message.",
      params = {
        category = { enum = { "refund", "order_status", "question", "other" } },
        order_id = { type = "string", optional = true,
                     description = "the order number, digits only" },
        summary = { type = "string", maxLength = 200 },
      },
    },
  },
}
