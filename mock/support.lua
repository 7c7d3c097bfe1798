-- The mock model's script for the demo agents: deterministic replies that
-- look like what a capable model would answer, chosen by the system prompt
-- (which agent is asking) and the conversation so far. See spool.mock for
-- the rule format.

local function input_of(conv)
  return json.decode(conv.user or "") or {}
end

local function result_of(conv, name)
  for i = #conv.tool_results, 1, -1 do
    local r = conv.tool_results[i]
    if r.name == name then
      return json.decode(r.content) or r.content
    end
  end
end

local function money(x)
  return string.format("%.2f", x)
end

return {
  model = "mock-1",
  rules = {
    -- classify: keywords decide the category; digits are the order id.
    {
      when = { system = "sort incoming customer messages" },
      reply = function(conv)
        local text = (conv.user or ""):lower()
        local category = "question"
        if text:find("refund") or text:find("broken") or text:find("damaged")
            or text:find("money back") then
          category = "refund"
        elseif text:find("where") or text:find("arrive") or text:find("status")
        then
          category = "order_status"
        end
        local order_id = (conv.user or ""):match("%f[%d](%d%d%d%d+)%f[%D]")
        local summaries = {
          refund = "Wants a refund: the items arrived damaged.",
          order_status = "Asks where the order is and when it arrives.",
          question = "Has a question about our products or policies.",
        }
        local args = { category = category, order_id = order_id,
                       summary = summaries[category] }
        return { tool = "classify", args = args }
      end,
    },
    -- lookup, first turn: fetch the order and the policy section at once.
    {
      when = { system = "gather the facts", turns = 0 },
      reply = function(conv)
        local input = input_of(conv)
        local request = (input.request or ""):lower()
        local section = "shipping"
        if request:find("damaged") or request:find("broken") then
          section = "damaged"
        elseif request:find("return") or request:find("refund") then
          section = "change-of-mind"
        end
        return { tool_calls = {
          { name = "get_order", args = { order_id = input.order_id } },
          { name = "get_policy", args = { section = section } },
        } }
      end,
    },
    -- lookup, after the tools answered: summarize.
    {
      when = { system = "gather the facts" },
      reply = function(conv)
        local order = result_of(conv, "get_order")
        local policy = result_of(conv, "get_policy") or "no policy found"
        if type(order) ~= "table" then
          return "The order does not exist (" .. tostring(order) .. ")."
        end
        local items = {}
        for _, it in ipairs(order.items) do
          items[#items + 1] = string.format("%d x %s", it.qty, it.name)
        end
        return string.format("Order %s for %s: %s; total %s %s; status %s "
          .. "(ordered %s%s). Policy: %s", order.id, order.customer,
          table.concat(items, ", "), money(order.total), order.currency,
          order.status, order.ordered, order.delivered
            and (", delivered " .. order.delivered) or "", policy)
      end,
    },
    -- refund, first turn: refund the order total.
    {
      when = { system = "carry out refunds", turns = 0 },
      reply = function(conv)
        local input = input_of(conv)
        local total = tonumber(tostring(input.facts or ""):match("total ([%d%.]+)"))
        if not total then
          return "No refund: the facts do not show the order total."
        end
        return { tool = "issue_refund", args = { order_id = input.order_id,
          amount = total, reason = "items arrived damaged" } }
      end,
    },
    -- refund, after the tool answered.
    {
      when = { system = "carry out refunds" },
      reply = function(conv)
        local r = result_of(conv, "issue_refund")
        if type(r) == "table" then
          return string.format("Refund %s of %s %s issued: the items arrived "
            .. "damaged, which the policy refunds in full.", r.refund_id,
            money(r.amount), r.currency)
        end
        return "No refund was issued: " .. tostring(r)
      end,
    },
    -- reply: a short email from what the pipeline found and did.
    {
      when = { system = "write the reply" },
      reply = function(conv)
        local input = input_of(conv)
        local name = tostring(input.facts or ""):match("for (%u%a+)")
          or tostring(input.message or ""):match("[Tt]his is (%a+)")
        local lines = { "Dear " .. (name or "customer") .. "," , "" }
        if input.category == "refund" and tostring(input.action):find("^Refund")
        then
          lines[#lines + 1] = "I'm sorry your order arrived damaged. "
            .. tostring(input.action):gsub(":.*", ".")
            .. " You'll see the money on your account within 5 working "
            .. "days, and there is no need to send anything back."
        elseif input.category == "refund" then
          lines[#lines + 1] = "I looked into your order. "
            .. tostring(input.action)
        elseif input.category == "order_status" then
          lines[#lines + 1] = "Here is where your order stands: "
            .. tostring(input.facts)
        else
          lines[#lines + 1] = "Thank you for your message. "
            .. tostring(input.facts)
        end
        lines[#lines + 1] = ""
        lines[#lines + 1] = "Warm regards,"
        lines[#lines + 1] = "The Teacup & Kettle team"
        return table.concat(lines, "\n")
      end,
    },
  },
}
