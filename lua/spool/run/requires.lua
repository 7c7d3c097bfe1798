-- spool.run.requires: the modules a Lua source requires by literal name
-- (private). The loader reads an agent's helper modules when it loads the
-- agent, so they are part of its version; this finds them: `require "x"`,
-- `require 'x'`, `require("x")`, `require [[x]]`, skipping comments and
-- strings. A require with a computed name is not found here (and fails
-- when it runs, saying why).

local M = {}


local function newlines(text, from, to)
  return select(2, text:sub(from, to):gsub("\n", ""))
end


-- The end of a long bracket opened at `pos` ("[[", "[==["), or #text.
local function long_end(text, pos)
  local eq = text:match("^%[(=*)%[", pos)
  local close = "]" .. eq .. "]"
  local e = text:find(close, pos + #eq + 2, true)
  return e and e + #close - 1 or #text
end


-- The end of a quoted string opened at `pos`, or the end of its line.
local function quoted_end(text, pos)
  local q = text:sub(pos, pos)
  local j = pos + 1
  while j <= #text do
    local c = text:sub(j, j)
    if c == "\\" then
      j = j + 2
    elseif c == q or c == "\n" then
      return j
    else
      j = j + 1
    end
  end
  return #text
end


-- The literal module name at `pos` (after `require`), if there is one.
local function literal_at(text, pos)
  local start = text:match("^%s*%(?%s*()", pos)
  local c = text:sub(start, start)
  if c == '"' or c == "'" then
    return text:match("^" .. c .. "([^" .. c .. "\\\n]*)" .. c, start)
  elseif c == "[" and text:match("^%[=*%[", start) then
    local eq = text:match("^%[(=*)%[", start)
    return text:match("^%[" .. eq .. "%[(.-)%]" .. eq .. "%]", start)
  end
end


-- Words that open and close blocks: enough to know whether a require
-- sits inside a function body (a lazy load) or runs with its module.
local OPENS = { ["function"] = true, ["do"] = true, ["if"] = true,
  ["repeat"] = true }
local CLOSES = { ["end"] = true, ["until"] = true }


-- Returns { { name = "x", line = n, lazy = bool }, ... } in the order
-- they appear; `lazy` when the require is inside a function body.
function M.find(text)
  local out = {}
  local i, line = 1, 1
  local blocks, functions = {}, 0
  while i <= #text do
    -- Jump to the next character that can start something of interest.
    local j = text:find("[\n%-\"'%[%a_]", i)
    if not j then
      break
    end
    local c = text:sub(j, j)
    local stop
    if c == "\n" then
      line = line + 1
      stop = j
    elseif c == "-" then
      if text:sub(j + 1, j + 1) ~= "-" then
        stop = j
      elseif text:match("^%[=*%[", j + 2) then
        stop = long_end(text, j + 2)
      else
        stop = (text:find("\n", j, true) or #text + 1) - 1
      end
    elseif c == '"' or c == "'" then
      stop = quoted_end(text, j)
    elseif c == "[" then
      stop = text:match("^%[=*%[", j) and long_end(text, j) or j
    else
      local word = text:match("^[%w_]+", j)
      stop = j + #word - 1
      local before = j > 1 and text:sub(j - 1, j - 1) or ""
      if before == "." or before == ":" then -- a field, not a keyword
        word = nil
      end
      if word == "require" then
        local name = literal_at(text, stop + 1)
        if name then
          out[#out + 1] = { name = name, line = line, lazy = functions > 0 }
        end
      elseif OPENS[word] then
        blocks[#blocks + 1] = word
        functions = functions + (word == "function" and 1 or 0)
      elseif CLOSES[word] and #blocks > 0 then
        functions = functions - (table.remove(blocks) == "function" and 1 or 0)
      end
    end
    if c ~= "\n" then
      line = line + newlines(text, j, stop)
    end
    i = stop + 1
  end
  return out
end


return M
