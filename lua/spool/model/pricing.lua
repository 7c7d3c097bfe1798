-- spool.model.pricing: what a model call cost, from a price table the project
-- can edit. Prices are US dollars per million tokens:
--
--   -- spool.lua
--   prices = { ["my-model"] = { input = 0.5, cached_input = 0.25, output = 1.5 } }
--
-- The project's prices override these defaults (the providers' public list
-- prices when this was written; check yours). A name matches its longest
-- listed prefix, so "gpt-4o-mini-2024-07-18" costs what "gpt-4o-mini" does.
-- Cached input tokens cost cached_input (input when not given). A model
-- with no price has no cost, rather than a wrong one.

local config = require "spool.base.config"

local M = {}

M.DEFAULTS = {
  ["gpt-4o-mini"] = { input = 0.15, cached_input = 0.075, output = 0.60 },
  ["gpt-4o"] = { input = 2.50, cached_input = 1.25, output = 10.00 },
  ["gpt-4.1"] = { input = 2.00, cached_input = 0.50, output = 8.00 },
  ["gpt-4.1-mini"] = { input = 0.40, cached_input = 0.10, output = 1.60 },
  ["gpt-4.1-nano"] = { input = 0.10, cached_input = 0.025, output = 0.40 },
  ["o4-mini"] = { input = 1.10, cached_input = 0.275, output = 4.40 },
  ["claude-sonnet-4"] = { input = 3.00, cached_input = 0.30, output = 15.00 },
  ["claude-haiku-4-5"] = { input = 1.00, cached_input = 0.10, output = 5.00 },
  ["claude-opus-4"] = { input = 15.00, cached_input = 1.50, output = 75.00 },
  ["mock-1"] = { input = 0, output = 0 },
}


local NONE = {}

local function project_prices()
  local ok, cfg = pcall(config.get)
  return ok and type(cfg.file.prices) == "table" and cfg.file.prices or NONE
end


-- The price of a model: the project's, else the default, by longest
-- prefix; nil when neither lists it.
-- Longest-prefix answers, remembered per price table and name.
local memo = setmetatable({}, { __mode = "k" })

local function lookup(table_, name)
  local names = memo[table_]
  if not names then
    names = {}
    memo[table_] = names
  end
  local hit = names[name]
  if hit == nil then
    local best, best_len = false, -1
    for prefix, price in pairs(table_) do
      if #prefix > best_len and name:sub(1, #prefix) == prefix then
        best, best_len = price, #prefix
      end
    end
    hit = best
    names[name] = hit
  end
  return hit or nil
end


-- The last answer, as every model call of a step asks for the same model.
local last = { name = nil, prices = nil, price = nil }

function M.price(name)
  if type(name) ~= "string" then
    return nil
  end
  local prices = project_prices()
  if name ~= last.name or prices ~= last.prices then
    last.name, last.prices = name, prices
    last.price = lookup(prices, name) or lookup(M.DEFAULTS, name)
  end
  return last.price
end


-- The cost in USD of a call's usage ({ input_tokens, output_tokens,
-- cached_tokens }), or nil when the model has no price.
function M.cost(name, usage)
  local p = M.price(name)
  if not p or type(usage) ~= "table" then
    return nil
  end
  local input = usage.input_tokens or 0
  local cached = math.min(usage.cached_tokens or 0, input)
  return ((input - cached) * (p.input or 0)
    + cached * (p.cached_input or p.input or 0)
    + (usage.output_tokens or 0) * (p.output or 0)) / 1e6
end


return M
