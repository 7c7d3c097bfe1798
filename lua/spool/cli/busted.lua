-- spool.cli.busted: runs busted inside the engine (spool test), so specs run
-- under Lua 5.4 with the real engine and loop, whatever /usr/bin/lua is.
-- The specs themselves run inside a task: they may call anything an agent
-- may, including functions that wait on I/O.

require "spool"
require "busted.runner" { standalone = false }
