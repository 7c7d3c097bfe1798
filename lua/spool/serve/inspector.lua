-- spool.serve.inspector: the web inspector's files, served by `spool serve`
-- at / (the page) and /ui/NAME (its scripts and styles) (private). They
-- ship with spool (web/inspector beside the Lua library: the source tree's
-- web/, or share/spool/web once installed) and are read once, when the
-- server starts: a fixed set, from memory, so no request names a path on
-- disk. No CDN, nothing from elsewhere: the page works offline.
--
-- The files carry no data and no token: they pass the Host check but not
-- the token's (the page asks for the token once, keeps it in the browser
-- session, and sends it with each API call). Every answer forbids what
-- the page does not do: a Content-Security-Policy with no inline script,
-- style or frame, nothing fetched but from this server.

local core = require "spool.core"
local config = require "spool.base.config"

local M = {}

local TYPES = {
  html = "text/html; charset=utf-8",
  js = "text/javascript; charset=utf-8",
  css = "text/css; charset=utf-8",
  svg = "image/svg+xml",
  png = "image/png",
}

M.HEADERS = {
  ["Content-Security-Policy"] = "default-src 'none'; script-src 'self'; "
    .. "style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    .. "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  ["X-Content-Type-Options"] = "nosniff",
  ["Referrer-Policy"] = "no-referrer",
  ["Cache-Control"] = "no-cache",
}

local files = nil -- name -> { body, type, etag }


-- Where the files are: beside the Lua library.
local function folder()
  return (config.get().lua_dir or "") .. "/../web/inspector"
end


-- Reads the files (once; must run in a task). A missing folder is not an
-- error: the API works without the page, which says where it looked.
function M.load()
  if files then
    return
  end
  files = {}
  local dir = folder()
  for _, name in ipairs(core.list_dir(dir, true) or {}) do
    local ext = name:match("^[%w_%-]+%.(%a+)$")
    if ext and TYPES[ext] then
      local body = core.read_file(dir .. "/" .. name, true)
      if body then
        files[name] = { body = body, type = TYPES[ext],
                        etag = '"' .. core.sha256(body):sub(1, 16) .. '"' }
      end
    end
  end
  if not files["index.html"] then
    core.log("warn", "the web inspector's files are not in " .. dir
      .. ": / answers 404")
  end
end


-- The answer for file `name`: status, body, headers.
function M.file(name, if_none_match)
  local f = files and files[name]
  if not f then
    return 404, "not found\n", { ["Content-Type"] = "text/plain" }
  end
  local headers = { ["Content-Type"] = f.type, ETag = f.etag }
  for k, v in pairs(M.HEADERS) do
    headers[k] = v
  end
  if if_none_match == f.etag then
    return 304, "", headers
  end
  return 200, f.body, headers
end


return M
