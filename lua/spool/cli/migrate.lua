-- spool migrate --from SOURCE --to TARGET: copies a store into an empty
-- one, exactly: threads, events, business state (idempotency keys with
-- it) and agent versions. SOURCE and TARGET are SQLite files or
-- postgres:// URLs; the usual move is from the embedded file to a
-- PostgreSQL database for many workers. Stop the source's workers first.
-- The engine has opened TARGET as its store (main.c sets --db to it).

local json = require "spool.json"
local store = require "spool.run.store"

local cli = require("spool.cli.command").new("migrate",
  "usage: spool migrate --from SOURCE --to TARGET")
local o = cli:parse(arg, { ["--from"] = "value", ["--to"] = "value" }, {})
if not o.from or not o.to then
  cli:usage("both --from and --to are needed")
end
if o.from == o.to then
  cli:fail("EINVAL: the source and the target are the same store")
end
if not (o.from:match("^postgres://") or o.from:match("^postgresql://")) then
  local f = io.open(o.from, "r")
  if not f then
    cli:fail("ENOTFOUND: no store at " .. o.from)
  end
  f:close()
end
local counts, err = store.migrate(o.from)
if not counts then
  cli:fail(err)
end
io.write(json.encode(counts), "\n")
