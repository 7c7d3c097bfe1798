-- spool.http: HTTP for agents' tools. Every call yields the run until the
-- response arrives; other runs proceed meanwhile.
--
--   http.request{ url=, method=, headers=, body=, timeout_ms=,
--                 connect_timeout_ms=, max_response=, redirects= }
--     -> { status, headers, body, seconds } | nil, "ECODE: message"
--   http.get(url [, opts])          -> response | nil, err
--   http.post_json(url, value [, opts]) -> response, decoded body | nil, err
--
-- A response with any status is returned as is; only a transfer that did
-- not complete (refused, timed out, too large) is an error. A 3xx is the
-- response unless redirects = n (at most 20) asks to follow up to n.
--
-- What a model says may steer a URL, so this is not a general client:
--
-- * It reaches http:// and https:// only, redirects included.
-- * Each connection (after DNS, after every redirect, a reused one too) is
--   checked before the request is sent: loopback (the engine's own control
--   API), unspecified, link-local and cloud metadata addresses, IPv4-mapped
--   IPv6 forms included, are refused with EACCES unless spool.lua allows
--   them:  http = { allow = { "127.0.0.1:9000", "10.0.0.0/8", "[::1]" } }
--   (an address or a CIDR block, and an optional port; engine/src/io/netguard.h).
-- * Only the fields above reach the engine: a fresh request is built from
--   them, and the check is set here, so nothing an agent passes turns it
--   off. (The engine's own HTTP — models, webhooks, channels — goes through
--   spool.base.http, configured by the project, and reaches anything.)
--
-- Behind a proxy (http_proxy), the address checked is the proxy's.

local core = require "spool.core"
local config = require "spool.base.config"
local internal = require "spool.base.http"
local trace = require "spool.run.trace"

local M = {}

local DEFAULT_TIMEOUT_MS = 30000

-- The fields a request may have besides url and headers, and their types.
local FIELDS = { method = "string", body = "string", timeout_ms = "number",
                 connect_timeout_ms = "number", max_response = "number",
                 redirects = "number" }

local no_exceptions -- a guard that allows nothing more, made at first use


-- The project's exceptions (spool.base.config); never none at all.
local function guard()
  local g = config.get().http_guard
  if g == nil then
    no_exceptions = no_exceptions or assert(core.net_guard {})
    g = no_exceptions
  end
  return g
end


-- A URL as an error shows it: no user or password, nothing past the path.
local shown = internal.shown


local MAX_RESPONSE = 64 * 2 ^ 20 -- engine/src/io/http.h's bound


local function request(opts)
  if type(opts) ~= "table" or type(opts.url) ~= "string" then
    error("spool.http.request expects { url = ..., ... }", 2)
  end
  local url = opts.url
  local scheme = (url:match("^(%a[%w+.-]*)://") or ""):lower()
  if scheme ~= "http" and scheme ~= "https" then
    return nil, string.format("EACCES: %s: spool.http reaches http:// and "
      .. "https:// URLs only", shown(url))
  end
  local req = { url = url, guard = guard(), timeout_ms = DEFAULT_TIMEOUT_MS }
  for k, t in pairs(FIELDS) do
    local v = opts[k]
    if v ~= nil then
      if type(v) ~= t then
        error(string.format("spool.http.request: %s must be a %s", k, t), 2)
      end
      req[k] = v
    end
  end
  local max = req.max_response
  if max ~= nil and not (max >= 1 and max <= MAX_RESPONSE) then
    -- The body is held by the engine before the run gets it: an agent
    -- may ask for less than the engine's bound, not more.
    error(string.format("spool.http.request: max_response must be 1 to %d "
      .. "bytes", MAX_RESPONSE), 2)
  end
  local headers = opts.headers
  if headers ~= nil then
    if type(headers) ~= "table" then
      error("spool.http.request: headers must be a table of name = value", 2)
    end
    req.headers = {}
    for k, v in pairs(headers) do
      if type(k) ~= "string" or (type(v) ~= "string"
          and type(v) ~= "number") then
        error("spool.http.request: headers must be a table of name = value",
          2)
      end
      req.headers[k] = tostring(v)
    end
  end
  -- The trace the request is part of (the tool's span), unless the agent
  -- sends a traceparent of its own.
  local traceparent = trace.header()
  if traceparent then
    req.headers = req.headers or {}
    local own = false
    for k in pairs(req.headers) do
      own = own or k:lower() == "traceparent"
    end
    if not own then
      req.headers.traceparent = traceparent
    end
  end
  return core.http_request(req)
end


M.request = request
M.get, M.post_json = internal.verbs(request)


return M
