-- spool token [--token-env NAME]: prints the token the control API asks
-- for (spool.serve): $SPOOL_TOKEN (or $NAME) when set, else the project's
-- own, kept in .spool/api-token readable by its owner only, and made now
-- if missing. For clients on this machine:
--
--   curl -H "Authorization: Bearer $(spool token)" http://127.0.0.1:8080/v1/threads

local serve = require "spool.serve"

local cli = require("spool.cli.command").new("token",
  "usage: spool token [--token-env NAME]")
local o = cli:parse(arg, { ["--token-env"] = "value" }, {})
local token, err = serve.token(o.token_env)
if not token then
  cli:fail(err)
end
io.write(token, "\n")
