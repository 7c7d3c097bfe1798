-- The example's model: check, order, report.
return { rules = {
  { when = { turns = 0 }, reply = { tool = "stock_level", args = { sku = "MUG-01" } } },
  { when = { turns = 1 }, reply = function(conv)
    local level = json.decode(conv.tool_results[1].content).level
    return { tool = "place_order", args = { sku = "MUG-01", quantity = 30 - level } }
  end },
  { reply = function(conv)
    local order = json.decode(conv.tool_results[#conv.tool_results].content)
    return string.format("Stock of MUG-01 was low, so I ordered %d (order %s).",
      order.quantity, order.order_id)
  end },
} }
