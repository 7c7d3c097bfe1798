-- refund: the action executor. Issues a refund by appending it to the
-- shop's refund ledger (out/refunds.jsonl), after checking the amount
-- against the order and that the order was not refunded already. Refunds
-- over 50 EUR wait for a human's approval (spool resume ID --approve).
local spool = require "spool"

local LEDGER = "out/refunds.jsonl"

local function already_refunded(order_id)
  local text = spool.fs.read(LEDGER)
  for line in (text or ""):gmatch("[^\n]+") do
    local entry = spool.json.decode(line)
    if entry and entry.order_id == order_id then
      return entry
    end
  end
end

return spool.agent {
  description = "Issues a refund for an order when the policy allows it.",
  prompt = "refund.md",
  max_steps = 4,
  tools = {
    issue_refund = {
      description = "Refund an amount (EUR) for an order.",
      -- Small refunds go through; larger ones wait for a person.
      approve = function(args) return args.amount > 50 end,
      params = {
        order_id = "string",
        amount = { type = "number", exclusiveMinimum = 0 },
        reason = { type = "string", maxLength = 200 },
      },
      run = function(args, ctx)
        local orders = assert(spool.fs.read_json("data/orders.json"))
        local order = orders[args.order_id]
        if not order then
          return nil, "there is no order " .. args.order_id
        end
        if args.amount > order.total then
          return nil, string.format("amount %.2f is more than the order "
            .. "total %.2f", args.amount, order.total)
        end
        local previous = already_refunded(args.order_id)
        if previous then
          return nil, "order " .. args.order_id .. " was already refunded ("
            .. previous.refund_id .. ")"
        end
        local entry = {
          -- The same call always gets the same id: a retried refund is
          -- recognisably the same refund.
          refund_id = "R-" .. spool.sha256(ctx.idempotency_key):sub(1, 8),
          order_id = args.order_id,
          amount = args.amount,
          currency = order.currency,
          reason = args.reason,
          thread = ctx.thread.id,
        }
        assert(spool.fs.append(LEDGER, spool.json.encode(entry) .. "\n"))
        return { refund_id = entry.refund_id, amount = entry.amount,
                 currency = entry.currency, status = "issued" }
      end,
    },
  },
}
