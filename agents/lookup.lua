-- lookup: gathers the facts about an order and the returns policy from the
-- shop's data (data/orders.json, data/policy.md). Read-only tools; the
-- final answer is a short factual summary for the agents that follow.
local spool = require "spool"

local function policy_sections()
  local text = assert(spool.fs.read("data/policy.md"))
  local sections = {}
  for name, body in text:gmatch("## ([%w%-]+)\n(.-)\n*%f[#\0]") do
    sections[name] = body:gsub("\n", " ")
  end
  return sections
end

return spool.agent {
  description = "Looks up an order and the returns policy that applies.",
  prompt = "lookup.md",
  max_steps = 5,
  tools = {
    get_order = {
      description = "Fetch an order by its id: items, total, status, dates.",
      params = { order_id = "string" },
      run = function(args)
        local orders = assert(spool.fs.read_json("data/orders.json"))
        local order = orders[args.order_id]
        if not order then
          return nil, "there is no order " .. args.order_id
        end
        return order
      end,
    },
    get_policy = {
      description = "Fetch a section of the returns policy.",
      params = {
        section = { enum = { "damaged", "change-of-mind", "late", "shipping" } },
      },
      run = function(args)
        return policy_sections()[args.section]
      end,
    },
  },
}
