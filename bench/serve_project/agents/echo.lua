-- One model call, then done: a run's fixed cost through the control API.
local spool = require "spool"
return spool.agent { prompt = "echo.md", tools = { finish = spool.done } }
