-- restock: checks a product's stock and orders more. Both tools are the
-- host application's C functions (examples/inventory/inventory.c); placing
-- an order waits for a person's approval.
local spool = require "spool"

return spool.agent {
  prompt = "restock.md",
  max_steps = 5,
  tools = {
    stock_level = spool.host_tool("stock_level", { side_effects = false }),
    place_order = spool.host_tool("place_order", { approve = true }),
  },
}
