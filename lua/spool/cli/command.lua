-- spool.cli.command: what the library's command scripts (spool llm, eval,
-- replay, prompt --thread) share: reading their arguments and failing the
-- same way. Exit 2 for bad usage (with the usage line) or a name that
-- does not exist, 1 for a failure.
--
--   local cli = require("spool.cli.command").new("eval", USAGE)
--   local o = cli:parse(arg, { ["--cases"] = "value", ["--repeat"] =
--     "count", ["--json"] = "flag", ["--compare"] = "pair" }, { "agent" })
--
-- Kinds: flag (true), value (a string), count (a whole number >= 1),
-- natural (>= 0), rate (0 to 1), pair (two values). Options land in `o`
-- under their name without dashes (--max-retries -> max_retries);
-- positionals fill the names given, in order ("-" counts as one).

local core = require "spool.core"

local M = {}

local Cli = {}
Cli.__index = Cli


function M.new(command, usage_line)
  return setmetatable({ command = command, usage_line = usage_line }, Cli)
end


function Cli:usage(msg)
  core.say("error", self.command .. ": " .. msg .. "\n" .. self.usage_line)
  os.exit(2)
end


-- A failure: "ECODE: why" loses its code, as the CLI's other messages
-- have none; what does not exist (ENOTFOUND: a thread, an agent, a file)
-- exits 2 as in every command, the rest 1.
function Cli:fail(msg)
  local code, why = tostring(msg):match("^(E%u+): (.*)$")
  core.say("error", why or tostring(msg))
  os.exit(code == "ENOTFOUND" and 2 or 1)
end


-- What a command tells the person running it on stderr, not its output:
-- in the log's format (--log-format json: one JSON object).
function Cli:say(msg)
  core.say("info", msg)
end


local CHECK = {
  count = function(v)
    local n = math.tointeger(tonumber(v))
    return n and n >= 1 and n or nil, "a whole number, 1 or more"
  end,
  natural = function(v)
    local n = math.tointeger(tonumber(v))
    return n and n >= 0 and n or nil, "a whole number, 0 or more"
  end,
  rate = function(v)
    local n = tonumber(v)
    return n and n >= 0 and n <= 1 and n or nil, "a rate from 0 to 1"
  end,
}


function Cli:parse(argv, options, positionals)
  local o, i, slot = {}, 1, 1
  argv = argv or {}
  local function value(flag)
    i = i + 1
    if argv[i] == nil then
      self:usage(flag .. " needs a value")
    end
    return argv[i]
  end
  while i <= #argv do
    local a = argv[i]
    local kind = options[a]
    local key = a:gsub("^%-%-", ""):gsub("%-", "_")
    if kind == "flag" then
      o[key] = true
    elseif kind == "value" then
      o[key] = value(a)
    elseif kind == "pair" then
      o[key] = { value(a), value(a) }
    elseif kind then
      local v, want = CHECK[kind](value(a))
      if v == nil then
        self:usage(a .. " takes " .. want)
      end
      o[key] = v
    elseif (a == "-" or a:sub(1, 1) ~= "-") and positionals[slot] then
      o[positionals[slot]] = a
      slot = slot + 1
    else
      self:usage("unexpected argument '" .. a .. "'")
    end
    i = i + 1
  end
  return o
end


return M
