-- spool.serve.channels.common: what agent definitions and the channel
-- adapters share (private): which channels there are, their settings in
-- spool.lua, checking an agent's `humans`, and text cut to a platform's
-- limit. Below spool.serve.channels, so an agent file is checked without
-- loading the service.

local config = require "spool.base.config"

local M = {}

local modules = {}

-- The channels there are: a name comes from an agent's `humans`, and is
-- never used to look a module up anywhere else.
local KNOWN = { slack = true, discord = true, email = true }


function M.module(name)
  if not KNOWN[name] then
    return nil
  end
  if modules[name] == nil then
    local ok, mod = pcall(require, "spool.serve.channels." .. name) -- by name: adapters are plugins
    modules[name] = ok and mod or false
  end
  return modules[name] or nil
end


-- The project's settings of a channel (spool.lua: channels.<name>).
function M.settings(name)
  local all = config.get().file.channels
  return type(all) == "table" and type(all[name]) == "table" and all[name]
    or {}
end


-- Checks an agent's `humans`; returns the list of targets, or raises.
function M.check(humans, where)
  if type(humans) ~= "table" then
    error(where .. ": humans must be { channel = ..., to = ... } or a list "
      .. "of them", 0)
  end
  local list = humans.channel and { humans } or humans
  for i, t in ipairs(list) do
    if type(t) ~= "table" or type(t.channel) ~= "string" then
      error(string.format("%s: humans[%d] needs a channel", where, i), 0)
    end
    local mod = M.module(t.channel)
    if not mod then
      error(string.format("%s: humans[%d]: unknown channel '%s' (slack, "
        .. "discord, email)", where, i, t.channel), 0)
    end
    if t.after_ms ~= nil and (math.type(t.after_ms) ~= "integer"
        or t.after_ms < 0) then
      error(string.format("%s: humans[%d].after_ms must be a whole number "
        .. "of ms", where, i), 0)
    end
    if mod.check then
      local err = mod.check(t)
      if err then
        error(string.format("%s: humans[%d]: %s", where, i, err), 0)
      end
    end
  end
  return list
end


-- `text` cut to n bytes (on a UTF-8 boundary, with an ellipsis): what
-- platforms with message size limits get.
function M.clip(text, n)
  text = tostring(text)
  if #text <= n then
    return text
  end
  local cut = n - 3
  while cut > 0 and (text:byte(cut + 1) or 0) & 0xC0 == 0x80 do
    cut = cut - 1
  end
  return text:sub(1, cut) .. "…"
end



return M
