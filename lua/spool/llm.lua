-- spool.llm: one interface to chat models, whatever the provider.
--
--   llm.chat{ system=, messages=, tools=, json=, model=, temperature=,
--             max_tokens=, stream=, on_text=, on_reset= }
--     -> reply | nil, "EMODEL: ...", attempts
--   llm.request{ ... }       -> { url, body }   the request chat would send
--
-- reply = { text, tool_calls = { { id, name, arguments, args } },
--           finish_reason, usage = { input_tokens, output_tokens,
--           total_tokens, cached_tokens, reasoning_tokens,
--           cache_creation_tokens (Anthropic's, when some) }, model,
--           provider, latency_ms, request_sha256, id, attempts }
--
-- `arguments` is the model's text; `args` the value it parses to (nil when
-- it is not JSON: the loop tells the model). finish_reason is stop,
-- tool_calls, length or content_filter whatever the provider. With
-- stream = true the reply arrives as Server-Sent Events and on_text (if
-- given) gets each piece of text as it comes; on_reset (if given) is
-- called before another attempt's text when one broke off midway.
--
-- `model` is a model table from spool.base.config (the default), possibly with
-- an agent's overrides. The API key is read from the environment variable
-- the model names at the moment of the call, and goes nowhere but the
-- request's headers: never into events, logs, errors or attempts.
--
-- Reliability, from the model's settings (spool.base.config has the defaults):
-- a call is tried up to 1 + max_retries times when the failure is one a
-- retry can help (429, 408, 409, 5xx, 529 overloaded, a reset or refused
-- connection, a timeout, a stream cut short, an error event the provider
-- marks transient; x-should-retry overrides either way). Waits grow
-- exponentially with jitter, or follow Retry-After / retry-after-ms,
-- capped at max_retry_after_ms. Timeouts: connect_timeout_ms, timeout_ms
-- (the whole call), and for streams first_token_timeout_ms and
-- idle_timeout_ms (between chunks). With rpm / tpm set, calls to the same
-- provider key queue for their share of the minute (spool.model.ratelimit).
-- req.deadline (ms since the epoch) bounds the whole call, retries
-- included. When a model has failed for good, the models in its
-- `fallback` list are tried in turn. Every attempt is described in
-- `attempts`: { attempt, model, provider, status, latency_ms, queued_ms,
-- error, retry_in_ms, deadline (true when the deadline stopped it) }.

local core = require "spool.core"
local config = require "spool.base.config"
local http = require "spool.base.http"
local json = require "spool.json"
local mock = require "spool.mock"
local pricing = require "spool.model.pricing"
local ratelimit = require "spool.model.ratelimit"
local sandbox = require "spool.run.sandbox"
local task = require "spool.base.task"
local chat_span = require "spool.model.chat_span"
local trace = require "spool.run.trace"

local M = {}

-- Loaded when first used: a run needs one.
local providers = {
  openai = "spool.model.providers.openai",
  ["openai-responses"] = "spool.model.providers.openai_responses",
  anthropic = "spool.model.providers.anthropic",
}


function M.provider(name)
  local module = providers[name]
  if not module then
    error(string.format("unknown model provider '%s' (openai, "
      .. "openai-responses, anthropic)", tostring(name)), 0)
  end
  -- Frozen: an agent that gets a provider must not change it for others
  -- (its authorize function is handed the API key).
  return sandbox.freeze(require(module))
end


-- The base URL of a model, starting the in-process mock model if the model
-- is the mock.
local function base_url(model)
  if model.mock then
    return mock.local_url()
  end
  return model.base_url
end


-- A URL safe to show: without user:password@.
local shown = http.shown


function M.request(req)
  local model = req.model or config.get().model
  local built = M.provider(model.provider).build(model, req)
  local base = model.mock and "http://127.0.0.1:<mock>/v1" or model.base_url
  return { url = base .. built.path, body = built.body,
           headers = built.headers }
end


-- ---- one attempt ----

local RETRY_STATUS = { [408] = true, [409] = true, [429] = true }

local function retryable_status(status, headers)
  local should = headers and headers["x-should-retry"]
  if should == "true" then
    return true
  elseif should == "false" then
    return false
  end
  return RETRY_STATUS[status] or status >= 500
end


-- How long a server asks us to wait (spool.base.http's, kept here for code
-- that reads it from spool.llm).
M.retry_after_ms = http.retry_after_ms


local function http_failure(p, model, res)
  local msg = p.error_message(res.body) or (res.body or ""):sub(1, 200)
  return {
    status = res.status,
    error = string.format("%s returned HTTP %d: %s", model.provider,
      res.status, msg),
    retryable = retryable_status(res.status, res.headers),
    retry_after_ms = http.retry_after_ms(res.headers, res.status),
  }
end


-- A transport failure (the binding's message and its code) as an outcome.
local function transport_failure(model, url, err, code)
  return {
    error = string.format("cannot reach %s at %s: %s", model.provider,
      shown(url), err),
    retryable = code ~= "ETOOBIG" and code ~= "ECANCELED",
    cancelled = code == "ECANCELED",
  }
end


local function call_whole(p, model, url, headers, body, conns)
  local res, err, code = core.http_request {
    method = "POST", url = url, headers = headers, body = body,
    timeout_ms = model.timeout_ms, connect_timeout_ms = model.connect_timeout_ms,
    conns = conns,
  }
  if not res then
    return transport_failure(model, url, err, code)
  end
  if res.status < 200 or res.status > 299 then
    return http_failure(p, model, res)
  end
  local reply, perr = p.parse(res.body)
  if not reply then
    return { status = res.status, retryable = true,
             error = string.format("malformed reply from %s: %s",
               model.provider, perr) }
  end
  return { status = res.status, reply = reply }
end


-- Reads a stream to its end: the first chunk within the first-token
-- timeout, each next within the idle timeout.
local function call_streamed(p, model, url, headers, body, on_text, conns)
  local s, err, code = core.http_stream {
    method = "POST", url = url, headers = headers, body = body,
    timeout_ms = model.timeout_ms, connect_timeout_ms = model.connect_timeout_ms,
    conns = conns,
  }
  if not s then
    return transport_failure(model, url, err, code)
  end
  local first = model.first_token_timeout_ms or 0
  local status, res_headers, hcode = s:head(first)
  if not status then
    s:close()
    return transport_failure(model, url, res_headers, hcode)
  end
  if status < 200 or status > 299 then
    local parts = {}
    repeat
      local chunk, rerr = s:read(model.idle_timeout_ms or 0)
      parts[#parts + 1] = chunk
    until not chunk or rerr
    s:close()
    return http_failure(p, model, { status = status, headers = res_headers,
                                    body = table.concat(parts) })
  end
  local sse = core.sse()
  local acc = p.stream(on_text)
  local timeout, done = first, false
  while not done do
    local chunk, rerr, rcode = s:read(timeout)
    if not chunk then
      s:close()
      if rerr then
        local f = transport_failure(model, url, rerr, rcode)
        f.status = status
        return f
      end
      break
    end
    timeout = model.idle_timeout_ms or 0
    local events, perr = sse:feed(chunk)
    if not events then
      s:close()
      return { status = status, retryable = false,
               error = string.format("malformed stream from %s: %s",
                 model.provider, perr) }
    end
    for _, ev in ipairs(events) do
      local eerr
      done, eerr = acc.event(ev)
      if eerr then
        s:close()
        return { status = status, retryable = eerr.retryable or false,
                 error = string.format("%s reported an error in the stream: %s",
                   model.provider, eerr.message) }
      end
      if done then
        s:close()
        break
      end
    end
  end
  local reply, rerr = acc.reply()
  if not reply then
    return { status = status, retryable = true,
             error = string.format("malformed stream from %s: %s",
               model.provider, rerr) }
  end
  return { status = status, reply = reply }
end


-- A thread's own connections to a model over plain HTTP (a local server,
-- the mock): the run reuses its connection, and never scans a pool of
-- thousands (see engine/src/io/http.h). Over TLS the shared pool is kept:
-- a handshake per run would cost more, and HTTP/2 multiplexes many calls
-- on few connections. The runner closes them when the run retires.
local function connections(thread, url)
  local run = task.runs[thread]
  if run == nil or url:sub(1, 7) ~= "http://" then
    return nil
  end
  local conns = run.conns
  if conns == nil then
    conns = core.http_conns()
    run.conns = conns
  end
  return conns
end


-- ---- retries ----

local function backoff_ms(model, attempt)
  local base = model.retry_base_ms or 500
  local cap = model.retry_max_ms or 20000
  local d = math.min(cap, base * 2 ^ (attempt - 1))
  -- Half fixed, half random: spread out, never all at once.
  return math.floor(d / 2 + math.random() * d / 2)
end


local function parse_args(calls)
  for _, c in ipairs(calls) do
    local v = json.decode(c.arguments or "")
    if type(v) == "table" then
      c.args = v
    end
  end
end


-- Waits `ms` unless the thread is cancelled meanwhile; returns the
-- interruption ("ECANCELED: ...") if it was.
local function pause(ms)
  if ms <= 0 then
    return nil
  end
  local _, interrupted, code = core.sleep(ms)
  return interrupted, code
end


-- Tries one model until it answers, fails for good or runs out of
-- retries; appends to `attempts`. Returns the reply, or nil and why it
-- stopped: "final" (no point trying another model), "spent".
local function call_model(model, req, attempts, deadline, stream_state, span)
  local p = M.provider(model.provider)
  -- A stream shows the reply as it comes; an attempt that broke off after
  -- some of it is followed by on_reset, so a retry's text is not read as
  -- going on from the broken one's.
  local on_text = req.on_text and function(piece)
    stream_state.shown = true
    req.on_text(piece)
  end
  local built = p.build(model, req)
  local url = base_url(model) .. built.path
  local headers = built.headers
  if span then
    headers.traceparent = trace.format(span)
  end
  if not model.mock and model.api_key_env then
    local key = core.getenv(model.api_key_env)
    if key and not config.key_allowed(model.api_key_env, model.base_url) then
      attempts[#attempts + 1] = { attempt = 1, model = model.name,
        provider = model.provider, error = string.format("EACCES: $%s is "
          .. "not sent to %s: the project configures where each API key "
          .. "may go (spool.lua: model, or api_keys = { %s = { \"%s\" } })",
          model.api_key_env, shown(model.base_url), model.api_key_env,
          shown(model.base_url)) }
      return nil, "final"
    end
    if key then
      p.authorize(headers, key)
    end
  end
  local limiter = ratelimit.for_model(model)
  local max_retries = req.max_retries or model.max_retries or 2
  local cap = model.max_retry_after_ms or 60000
  local t_call = core.now()
  for attempt = 1, max_retries + 1 do
    local cost = ratelimit.estimate(built.body,
      req.max_tokens or model.max_tokens)
    local queued = limiter and limiter:reserve(cost) or 0
    local why, code
    if deadline and core.time() + queued >= deadline then
      why = queued > 0 and string.format("ETIMEDOUT: the rate limit (rpm %s, "
        .. "tpm %s) would hold this call %d ms, past the thread's deadline",
        tostring(model.rpm), tostring(model.tpm), queued)
        or "ETIMEDOUT: the thread's deadline has passed"
      code = "ETIMEDOUT"
    else
      why, code = pause(queued)
    end
    if why then
      if limiter then
        limiter:release(cost)
      end
      attempts[#attempts + 1] = { attempt = attempt, model = model.name,
        provider = model.provider, queued_ms = queued > 0 and queued or nil,
        error = why, deadline = deadline ~= nil and code ~= "ECANCELED" }
      return nil, "final"
    end
    local left = deadline and deadline - core.time()
    local m = model
    if left and left < (model.timeout_ms or math.huge) then
      m = setmetatable({ timeout_ms = math.max(1, math.floor(left)) },
        { __index = model })
    end
    local t0 = core.now()
    local out
    local conns = connections(req.thread, url)
    if stream_state.shown and req.on_reset then
      req.on_reset()
    end
    stream_state.shown = false
    if req.stream then
      out = call_streamed(p, m, url, headers, built.body, on_text, conns)
    else
      out = call_whole(p, m, url, headers, built.body, conns)
    end
    local a = { attempt = attempt, model = model.name,
                provider = model.provider, status = out.status,
                latency_ms = math.floor(core.now() - t0 + 0.5),
                queued_ms = queued > 0 and queued or nil, error = out.error }
    attempts[#attempts + 1] = a
    if m ~= model and not out.reply and a.error
        and a.error:find("ETIMEDOUT", 1, true) then
      -- The timeout was the deadline's.
      a.error = "ETIMEDOUT: the thread's deadline has passed"
      a.deadline = true
      return nil, "final"
    end
    if out.reply then
      local reply = out.reply
      parse_args(reply.tool_calls)
      reply.model = model.name
      reply.provider = model.provider
      reply.latency_ms = math.floor(core.now() - t_call + 0.5)
      reply.request_sha256 = core.sha256(built.body)
      return reply
    end
    if out.cancelled then
      return nil, "final"
    end
    if not out.retryable or attempt > max_retries then
      break
    end
    local wait = out.retry_after_ms and math.min(out.retry_after_ms, cap)
      or backoff_ms(model, attempt)
    if deadline and core.time() + wait >= deadline then
      break -- the answer would come too late
    end
    a.retry_in_ms = wait
    core.log("warn", string.format("model call attempt %d failed (%s); "
      .. "retrying in %d ms", attempt, out.error, wait))
    local interrupted = pause(wait)
    if interrupted then
      attempts[#attempts + 1] = { attempt = attempt + 1, model = model.name,
        provider = model.provider, error = interrupted }
      return nil, "final"
    end
  end
  return nil, "spent"
end


-- The models to try in turn: the model, then its fallbacks, each with the
-- model's reliability settings unless it sets its own.
local function candidates(model)
  local list = { model }
  for _, fb in ipairs(model.fallback or {}) do
    list[#list + 1] = config.derive_model(model, fb, true) -- one rule
  end
  return list
end


-- An evaluation's cassette (spool.cli.evaluate, in the run's record) may
-- answer or record a thread's calls: cassette:call(req, chat) stands in
-- for chat.
local chat


-- A model call that code of an agent's own made (its step, a tool): an
-- llm_call event on the thread the task runs, counted in its usage, cost
-- and budgets like the loop's own model_call.
local function record(thread, reply, err, attempts, req)
  local data = { error = err, streamed = req.stream or nil,
                 attempts = attempts and #attempts > 1 and attempts or nil }
  if reply then
    data.model, data.provider = reply.model, reply.provider
    data.latency_ms, data.usage = reply.latency_ms, reply.usage
    data.finish_reason, data.response_id = reply.finish_reason, reply.id
    data.request_sha256, data.text = reply.request_sha256, reply.text
    data.cost_usd = pricing.cost(reply.model, reply.usage)
    local calls = json.array()
    for i, c in ipairs(reply.tool_calls or {}) do
      calls[i] = { id = c.id, name = c.name, arguments = c.arguments }
    end
    data.tool_calls = calls
  end
  thread:append("llm_call", data)
end


-- The recorded model replies an evaluation plays back (spool.cli.evaluate).
local function cassette_of(thread)
  local run = task.runs[thread]
  return run and run.eval and run.eval.cassette
end


function M.chat(req)
  local thread = not task.is_quiet() and (task.thread() or nil)
  local cassette = cassette_of(req.thread) or cassette_of(thread)
  local reply, err, attempts
  if cassette then
    reply, err, attempts = cassette:call(req, chat)
  else
    reply, err, attempts = chat(req)
  end
  if thread then
    record(thread, reply, err, attempts, req)
  end
  return reply, err, attempts
end


-- A model as the call uses it: a copy by raw access, taken once, of the
-- fields a model has (agent code may hand over a table whose fields change
-- from one read to the next: the URL checked must be the URL called).
local function fixed(model)
  local out = {}
  for k, v in next, model do
    local t = type(v)
    if type(k) == "string" and (t == "string" or t == "number"
        or t == "boolean") then
      out[k] = v
    end
  end
  local fallback = rawget(model, "fallback")
  if type(fallback) == "table" then
    out.fallback = {}
    for i, fb in ipairs(sandbox.plain(fallback, "model.fallback")) do
      out.fallback[i] = fb
    end
  end
  return out
end


chat = function(req)
  -- The engine's own models (the project's, an agent's from
  -- spool.loop.model_for, frozen) are used as they are.
  local primary = req.model == nil and config.get().model
    or sandbox.frozen(req.model) and req.model or fixed(req.model)
  local attempts, stream_state = {}, { shown = false }
  local models = candidates(primary)
  local span = chat_span.start(primary)
  for i, model in ipairs(models) do
    local reply, why = call_model(model, req, attempts, req.deadline,
      stream_state, span)
    if reply then
      reply.attempts = attempts
      chat_span.finish(span, primary, req, reply, nil, attempts)
      return reply
    end
    if why == "final" or i == #models then
      break
    end
    core.log("warn", string.format("model %s (%s) failed; falling back to "
      .. "%s (%s)", model.name, model.provider, models[i + 1].name,
      models[i + 1].provider))
  end
  local last = attempts[#attempts]
  local err = string.format("EMODEL: %s (after %d attempt%s)", last.error,
    #attempts, #attempts == 1 and "" or "s")
  chat_span.finish(span, primary, req, nil, err, attempts)
  return nil, err, attempts
end


return M
