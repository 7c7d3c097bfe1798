-- spool.llm: one interface to chat models, whatever the provider.
--
--   llm.chat{ system=, messages=, tools=, json=, model=, temperature=,
--             max_tokens= }  -> reply | nil, "EMODEL: ..."
--   llm.request{ ... }       -> { url, body }   the request chat would send
--
-- reply = { text, tool_calls = { { id, name, arguments } }, finish_reason,
--           usage = { input_tokens, output_tokens, total_tokens },
--           model, latency_ms, request_sha256, id }
--
-- `model` is a model table from spool.config (the default), possibly with
-- an agent's overrides. The API key is read from the environment variable
-- the model names at the moment of the call, and goes nowhere but the
-- request's Authorization header: never into events, logs or errors.
--
-- Providers live in spool.providers.<name> as pure build/parse functions;
-- Anthropic and streaming plug in there.

local core = require "spool.core"
local config = require "spool.config"

local M = {}

local providers = {
  openai = require "spool.providers.openai",
}


local function provider_of(model)
  local p = providers[model.provider]
  if not p then
    error(string.format("unknown model provider '%s'", tostring(model.provider)), 0)
  end
  return p
end


-- The base URL of a model, starting the in-process mock model if the model
-- is the mock.
local function base_url(model)
  if model.mock then
    return require("spool.mock").local_url()
  end
  return model.base_url
end


-- A URL safe to show: without user:password@.
local function shown(url)
  return (url:gsub("//[^/@]*@", "//"))
end


function M.request(req)
  local model = req.model or config.get().model
  local built = provider_of(model).build(model, req)
  local base = model.mock and "http://127.0.0.1:<mock>/v1" or model.base_url
  return { url = base .. built.path, body = built.body,
           headers = built.headers }
end


function M.chat(req)
  local model = req.model or config.get().model
  local p = provider_of(model)
  local built = p.build(model, req)
  local url = base_url(model) .. built.path
  local headers = built.headers
  if not model.mock then
    local key = core.getenv(model.api_key_env)
    if key then
      p.authorize(headers, key)
    end
  end
  local t0 = core.now()
  local res, err = core.http_request {
    method = "POST", url = url, headers = headers, body = built.body,
    timeout_ms = model.timeout_ms, connect_timeout_ms = model.connect_timeout_ms,
  }
  local latency = math.floor(core.now() - t0 + 0.5)
  if not res then
    return nil, string.format("EMODEL: cannot reach the model at %s: %s",
      shown(url), err)
  end
  if res.status < 200 or res.status > 299 then
    local msg = p.error_message(res.body) or (res.body or ""):sub(1, 200)
    return nil, string.format("EMODEL: %s returned HTTP %d: %s",
      model.provider, res.status, msg)
  end
  local reply, perr = p.parse(res.body)
  if not reply then
    return nil, string.format("EMODEL: malformed reply from %s: %s",
      model.provider, perr)
  end
  reply.model = model.name
  reply.latency_ms = latency
  reply.request_sha256 = core.sha256(built.body)
  return reply
end


return M
