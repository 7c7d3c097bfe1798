-- spool.base.http: HTTP for the engine's own code (private): webhooks,
-- channels, the specs' clients. It reaches any address and passes any
-- field to spool.core.http_request; agents use spool.http, which does not.
-- Every call yields the run until the response arrives.
--
--   http.request{ url=, method=, headers=, body=, timeout_ms=, ... }
--     -> { status, headers, body, seconds } | nil, "ECODE: message"
--   http.get(url [, opts])          -> response | nil, err
--   http.post_json(url, value [, opts]) -> response, decoded body | nil, err
--   http.shown(url)  -> the URL without credentials, query or fragment
--   http.retry_after_ms(headers, status) -> how long a server asks us to
--     wait, or nil
--
-- A response with any status is returned as is; only a transfer that did
-- not complete (refused, timed out, too large) is an error.

local core = require "spool.core"
local json = require "spool.json"

local M = {}

M.default_timeout_ms = 30000


function M.request(opts)
  if type(opts) ~= "table" or type(opts.url) ~= "string" then
    error("spool.http.request expects { url = ..., ... }", 2)
  end
  if opts.timeout_ms == nil then
    local copy = {}
    for k, v in pairs(opts) do
      copy[k] = v
    end
    copy.timeout_ms = M.default_timeout_ms
    opts = copy
  end
  return core.http_request(opts)
end


-- get and post_json around a request function (spool.http has its own).
function M.verbs(request)
  local function get(url, opts)
    local req = { url = url, method = "GET" }
    for k, v in pairs(opts or {}) do
      req[k] = v
    end
    return request(req)
  end

  local function post_json(url, value, opts)
    local req = { url = url, method = "POST", body = json.encode(value),
                  headers = { ["content-type"] = "application/json" } }
    for k, v in pairs(opts or {}) do
      req[k] = v
    end
    local res, err = request(req)
    if not res then
      return nil, err
    end
    return res, json.decode(res.body)
  end

  return get, post_json
end


M.get, M.post_json = M.verbs(function(req) return M.request(req) end)


-- A URL as a message may show it: without credentials, query or fragment
-- (where keys and tokens go).
function M.shown(url)
  return (url:gsub("^(%a[%w+.-]*://)[^/?#]*@", "%1"):gsub("[?#].*$", ""))
end


-- "1s", "6m0s", "250ms", "1h2m3.5s" (OpenAI's x-ratelimit-reset-*) -> ms.
local function duration_ms(s)
  if type(s) ~= "string" or s == "" then
    return nil
  end
  local total, rest = 0, s
  for num, unit in s:gmatch("([%d%.]+)(%a+)") do
    local n = tonumber(num)
    local scale = ({ h = 3600000, m = 60000, s = 1000, ms = 1 })[unit]
    if not n or not scale then
      return nil
    end
    total = total + n * scale
    rest = rest:gsub("^[%d%.]+%a+", "", 1)
  end
  if rest ~= "" then
    return nil
  end
  return math.ceil(total)
end


local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6,
                 Jul = 7, Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12 }

-- How long the server asks us to wait, in ms, or nil: retry-after-ms,
-- then Retry-After (seconds or an HTTP date), then for a 429 the rate
-- limit's reset.
function M.retry_after_ms(headers, status)
  headers = headers or {}
  local ms = tonumber(headers["retry-after-ms"])
  if ms and ms >= 0 then
    return math.ceil(ms)
  end
  local ra = headers["retry-after"]
  if ra then
    local secs = tonumber(ra)
    if secs and secs >= 0 then
      return math.ceil(secs * 1000)
    end
    local d, mon, y, h, mi, sec =
      ra:match("^%a+, (%d+) (%a+) (%d+) (%d+):(%d+):(%d+) GMT$")
    if d and MONTHS[mon] then
      -- os.time reads a local time; the offset at that instant makes it UTC.
      local t = { year = tonumber(y), month = MONTHS[mon], day = tonumber(d),
                  hour = tonumber(h), min = tonumber(mi), sec = tonumber(sec) }
      local here = os.time(t)
      local utc = here + (here - os.time(os.date("!*t", here)))
      return math.max(0, utc * 1000 - core.time())
    end
  end
  if status == 429 then
    return duration_ms(headers["x-ratelimit-reset-requests"])
      or duration_ms(headers["x-ratelimit-reset-tokens"])
  end
end


return M
