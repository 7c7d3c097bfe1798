-- spool._http: HTTP for the engine's own code (private): webhooks,
-- channels, the specs' clients. It reaches any address and passes any
-- field to spool.core.http_request; agents use spool.http, which does not.
-- Every call yields the run until the response arrives.
--
--   http.request{ url=, method=, headers=, body=, timeout_ms=, ... }
--     -> { status, headers, body, seconds } | nil, "ECODE: message"
--   http.get(url [, opts])          -> response | nil, err
--   http.post_json(url, value [, opts]) -> response, decoded body | nil, err
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


return M
