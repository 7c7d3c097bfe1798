-- The benchmark agent (identical for every contender): one tool, add.
local spool = require "spool"
return spool.agent {
  prompt = "calc.md",
  max_steps = 100,
  tools = {
    add = {
      description = "Add two numbers.",
      params = { a = "number", b = "number" },
      side_effects = false,
      run = function(args) return tostring(args.a + args.b) end,
    },
  },
}
