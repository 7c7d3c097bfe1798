-- spool.base.config: the project's settings, resolved once when the engine opens.
--
-- Precedence: options given to the engine (CLI flags) override environment
-- variables, which override the project's spool.lua. The model settings
-- decide between a real OpenAI-compatible endpoint and the built-in mock:
-- with no API key and no base URL anywhere, agents talk to the mock.
--
-- This module reads spool.lua once at open; it never holds secrets, only
-- the *name* of the environment variable that holds the API key.

local core = require "spool.core"
local cron = require "spool.base.cron"
local limits = require "spool.run.limits"

local M = {}

local settings = nil


local function read_project_file(project)
  local path = project .. "/spool.lua"
  local f = io.open(path, "r")
  if not f then
    return {}
  end
  local text = f:read("a")
  f:close()
  local env = setmetatable({}, { __index = { os = { getenv = os.getenv } } })
  local chunk, err = load(text, "@spool.lua", "t", env)
  if not chunk then
    return nil, "EINVAL: " .. err
  end
  local ok, value = pcall(chunk)
  if not ok then
    return nil, "EINVAL: " .. tostring(value)
  end
  if type(value) ~= "table" then
    return nil, "EINVAL: spool.lua must return a table of settings"
  end
  return value
end


local function nonempty(s)
  if s ~= nil and s ~= "" then
    return s
  end
end


-- What each provider defaults to. A base URL is the prefix the provider's
-- path is appended to ({base}/chat/completions, {base}/responses,
-- {base}/messages). ANTHROPIC_BASE_URL follows Anthropic's SDK and lacks
-- the /v1.
local PROVIDERS = {
  openai = { key_env = "OPENAI_API_KEY", base_env = "OPENAI_BASE_URL",
             base_url = "https://api.openai.com/v1", name = "gpt-4o-mini" },
  ["openai-responses"] = { key_env = "OPENAI_API_KEY",
             base_env = "OPENAI_BASE_URL",
             base_url = "https://api.openai.com/v1", name = "gpt-4o-mini" },
  anthropic = { key_env = "ANTHROPIC_API_KEY", base_env = "ANTHROPIC_BASE_URL",
             base_suffix = "/v1", base_url = "https://api.anthropic.com/v1",
             name = "claude-sonnet-4-5" },
}

-- The reliability settings of a model and their defaults (spool.llm).
local MODEL_DEFAULTS = {
  timeout_ms = 120000, connect_timeout_ms = 10000,
  first_token_timeout_ms = 60000, idle_timeout_ms = 60000,
  max_retries = 2, retry_base_ms = 500, retry_max_ms = 20000,
  max_retry_after_ms = 60000,
}


-- The names of those settings, for models that inherit them (fallbacks).
M.MODEL_SETTINGS = {}
for k in pairs(MODEL_DEFAULTS) do
  M.MODEL_SETTINGS[#M.MODEL_SETTINGS + 1] = k
end
table.sort(M.MODEL_SETTINGS)
for _, k in ipairs { "temperature", "max_tokens" } do
  M.MODEL_SETTINGS[#M.MODEL_SETTINGS + 1] = k
end


-- Resolves a model: { provider, name, base_url, api_key_env, mock =
-- true|nil, and the settings of MODEL_DEFAULTS }. `opts` (flags) override
-- the environment, which overrides `fm` (spool.lua's model table); with
-- opts.explicit the environment is not read (an agent's own model, a
-- fallback).
function M.resolve_model(opts, fm)
  fm = fm or {}
  if type(fm) == "string" then
    fm = { name = fm }
  end
  local provider = nonempty(opts.provider) or fm.provider or "openai"
  local defaults = PROVIDERS[provider]
  if not defaults then
    return nil, string.format("EINVAL: unknown model provider '%s' (openai, "
      .. "openai-responses, anthropic)", tostring(provider))
  end
  local key_env = opts.api_key_env or fm.api_key_env or defaults.key_env
  -- The environment speaks for the project's default model only: a model
  -- named in full (an agent's, a fallback) keeps its own name and URL.
  local env = not opts.explicit
  local env_base = env and nonempty(core.getenv(defaults.base_env))
  if env_base and defaults.base_suffix
      and not env_base:match("/v%d+/*$") then
    env_base = env_base:gsub("/+$", "") .. defaults.base_suffix
  end
  local base_url = nonempty(opts.base_url) or env_base or fm.base_url
  local name = nonempty(opts.model)
    or (env and nonempty(core.getenv("SPOOL_MODEL")))
    or (env and provider ~= "anthropic" and nonempty(core.getenv("OPENAI_MODEL")))
    or fm.name
  local has_key = core.getenv(key_env) ~= nil
  local mock
  if opts.mock == "on" then
    mock = true
  elseif opts.mock == "off" then
    mock = false
  else
    mock = not has_key and base_url == nil
  end
  for _, k in ipairs { "rpm", "tpm" } do
    if fm[k] ~= nil and (type(fm[k]) ~= "number" or fm[k] <= 0) then
      return nil, string.format("EINVAL: model.%s must be a positive number "
        .. "(per minute)", k)
    end
  end
  if fm.fallback ~= nil and (type(fm.fallback) ~= "table"
      or #fm.fallback == 0) then
    return nil, "EINVAL: model.fallback must be a list of models, e.g. { { "
      .. "provider = \"anthropic\", name = \"...\" } }"
  end
  for i, fb in ipairs(fm.fallback or {}) do
    if type(fb) ~= "table" or (fb.provider and not PROVIDERS[fb.provider]) then
      return nil, string.format("EINVAL: model.fallback[%d] must be a model "
        .. "table with a known provider", i)
    end
  end
  local model = { provider = provider, api_key_env = key_env,
                  temperature = fm.temperature, max_tokens = fm.max_tokens,
                  rpm = fm.rpm, tpm = fm.tpm, fallback = fm.fallback,
                  context_tokens = fm.context_tokens }
  for k, v in pairs(MODEL_DEFAULTS) do
    model[k] = opts[k] or fm[k] or v
  end
  if mock then
    model.mock = true
    model.name = "mock-1"
  else
    model.base_url = (base_url or defaults.base_url):gsub("/+$", "")
    model.name = name or defaults.name
  end
  return model
end


-- The one rule for an agent's model, and for a fallback: `own` (its
-- fields) over `base` (the project's model; for a fallback, the model it
-- falls back from).
--  - The same provider (or none named): base's name, URL and key, with
--    own's fields over them.
--  - Another provider: that provider's defaults (name, URL, key), with
--    own's fields over them; base's reliability settings where own is
--    silent.
--  - Either way, on the mock when base is, unless own names a base_url:
--    then that URL, with own's name or the provider's default one.
-- An agent's model keeps base's fallbacks unless it names its own; a
-- fallback (as_fallback) has none.
function M.derive_model(base, own, as_fallback)
  own = own or {}
  local provider = own.provider or base.provider
  local m
  if provider ~= base.provider then
    local fm = {}
    for k, v in pairs(own) do
      fm[k] = v
    end
    for _, k in ipairs(M.MODEL_SETTINGS) do
      if fm[k] == nil then
        fm[k] = base[k]
      end
    end
    m = assert(M.resolve_model({ mock = base.mock and own.base_url == nil
      and "on" or "off", explicit = true }, fm))
  else
    m = {}
    for k, v in pairs(base) do
      m[k] = v
    end
    for k, v in pairs(own) do
      m[k] = v
    end
    if own.base_url ~= nil and base.mock then
      m.mock = nil
      m.name = own.name or PROVIDERS[provider].name
    end
  end
  if type(m.base_url) == "string" then
    m.base_url = m.base_url:gsub("/+$", "")
  end
  m.fallback = not as_fallback and (own.fallback or base.fallback) or nil
  return m
end


local WEBHOOK_EVENTS = { waiting = true, done = true, failed = true,
                         cancelled = true }

-- Checks spool.lua's webhooks (see spool.serve.webhooks); returns them, or
-- nil and "EINVAL: ..." naming the mistake.
local function check_webhooks(list)
  if list == nil then
    return nil
  end
  local function bad(i, why)
    return nil, string.format("EINVAL: spool.lua: webhooks[%d] %s", i, why)
  end
  if type(list) ~= "table" then
    return nil, "EINVAL: spool.lua: webhooks must be a list of { url = ... }"
  end
  for i, t in ipairs(list) do
    if type(t) ~= "table" or type(t.url) ~= "string"
        or not t.url:match("^https?://[^/]") then
      return bad(i, "needs url = \"http(s)://...\"")
    end
    for _, e in ipairs(t.events or {}) do
      if not WEBHOOK_EVENTS[e] then
        return bad(i, "has an unknown event '" .. tostring(e) .. "' (waiting, "
          .. "done, failed, cancelled)")
      end
    end
    -- A receiver must be able to tell a notice from a forgery: a webhook
    -- goes out signed, or the project does not open.
    if type(t.secret_env) ~= "string" then
      return bad(i, "needs secret_env, the environment variable that holds "
        .. "its signing secret")
    end
    if not core.getenv(t.secret_env) then
      return bad(i, "has no secret: $" .. t.secret_env .. " is not set")
    end
    for _, k in ipairs { "attempts", "backoff_ms" } do
      if t[k] ~= nil and (math.type(t[k]) ~= "integer" or t[k] < 1) then
        return bad(i, k .. " must be a positive integer")
      end
    end
  end
  return list
end


-- Where each API key may be sent: "<key env>\0<base URL>" -> true, for
-- the project's own model and its fallbacks, each provider's default URL
-- (or the one the environment sets), and spool.lua's api_keys. A model an
-- agent chose (spool.llm.chat's model, an agent's overrides) gets its key
-- only if its base URL is one of these: the project's configuration, not
-- agent code, decides where secrets go.
local key_urls = {}


local function allow_key(key_env, base_url)
  if type(key_env) == "string" and type(base_url) == "string" then
    key_urls[key_env .. "\0" .. base_url:gsub("/+$", "")] = true
  end
end

-- For the command line, whose flags are configuration too.
M.allow_key = allow_key


local function collect_key_urls(file, model)
  key_urls = {}
  for _, d in pairs(PROVIDERS) do
    allow_key(d.key_env, d.base_url)
    local env_base = nonempty(core.getenv(d.base_env))
    if env_base then
      allow_key(d.key_env, env_base)
      allow_key(d.key_env, env_base:gsub("/+$", "") .. (d.base_suffix or ""))
    end
  end
  allow_key(model.api_key_env, model.base_url)
  local fm = type(file.model) == "table" and file.model or {}
  allow_key(fm.api_key_env or model.api_key_env, fm.base_url)
  for _, fb in ipairs(fm.fallback or {}) do
    local d = PROVIDERS[fb.provider or model.provider] or {}
    allow_key(fb.api_key_env or d.key_env, fb.base_url or d.base_url)
  end
  if file.api_keys ~= nil and type(file.api_keys) ~= "table" then
    return "EINVAL: spool.lua: api_keys = { NAME = { \"https://base/url\", "
      .. "... } } (the base URLs each key may be sent to)"
  end
  for name, urls in pairs(file.api_keys or {}) do
    if type(name) ~= "string" or type(urls) ~= "table" then
      return "EINVAL: spool.lua: api_keys." .. tostring(name) .. " must be "
        .. "a list of base URLs"
    end
    for _, url in ipairs(urls) do
      allow_key(name, url)
    end
  end
end


-- May the key in $key_env be sent to base_url?
function M.key_allowed(key_env, base_url)
  return key_urls[key_env .. "\0" .. tostring(base_url):gsub("/+$", "")]
    == true
end


-- spool.lua's http = { allow = { rule, ... } }: what agents' HTTP
-- (spool.http) may reach beyond the public internet, as a guard for
-- spool.core.http_request; or nil and "EINVAL: ..." naming the mistake.
local function http_guard(t)
  if t ~= nil and (type(t) ~= "table" or (t.allow ~= nil
      and type(t.allow) ~= "table")) then
    return nil, "EINVAL: spool.lua: http = { allow = { \"127.0.0.1:9000\", "
      .. "\"10.0.0.0/8\", \"[::1]\" } } (addresses agents may reach)"
  end
  local guard, err = core.net_guard(t and t.allow or {})
  if not guard then
    return nil, (err:gsub("^EINVAL: ", "EINVAL: spool.lua: "))
  end
  return guard
end


-- Called once by the engine with its options; returns true or nil, err.
-- spool.lua's api_tokens = { name = "ENV_VAR" }: nil or a message.
local function check_api_tokens(named)
  if named ~= nil and type(named) ~= "table" then
    return "EINVAL: spool.lua: api_tokens = { name = \"ENV_VAR\", ... }"
  end
  for name, env in pairs(named or {}) do
    if type(name) ~= "string" or not name:match("^[%w_%-]+$")
        or type(env) ~= "string" then
      return "EINVAL: spool.lua: api_tokens." .. tostring(name)
        .. " must name an environment variable"
    end
  end
end


-- spool.lua's schedules = { name = { agent, cron, input, catch_up_ms } }:
-- each checked, its cron expression parsed; or nil and a message.
local function check_schedules(list)
  if list == nil then
    return {}
  end
  if type(list) ~= "table" then
    return nil, "EINVAL: spool.lua: schedules = { name = { agent = ..., "
      .. "cron = \"0 3 * * *\", input = ... } }"
  end
  local out = {}
  for name, s in pairs(list) do
    local where = "EINVAL: spool.lua: schedules." .. tostring(name)
    if type(name) ~= "string" or not name:match("^[%w_%-]+$") or #name > 40
    then
      return nil, where .. ": a schedule's name is letters, digits, _ and - "
        .. "(40 at most: it names its threads)"
    end
    if type(s) ~= "table" or type(s.agent) ~= "string" then
      return nil, where .. " needs agent = \"name\""
    end
    local spec, err = cron.parse(s.cron)
    if not spec then
      return nil, where .. ".cron: " .. err
    end
    local catch_up = s.catch_up_ms or 3600 * 1000
    -- (At most a day: each tick looks back that far, a minute at a time.)
    if math.type(catch_up) ~= "integer" or catch_up < 60000
        or catch_up > 24 * 3600 * 1000 then
      return nil, where .. ".catch_up_ms must be a whole number of "
        .. "milliseconds, from 60000 to a day"
    end
    out[name] = { agent = s.agent, input = s.input == nil and "" or s.input,
                  spec = spec, catch_up_ms = catch_up }
  end
  return out
end


function M.init(opts)
  local file, err = read_project_file(opts.project)
  if not file then
    return nil, err
  end
  local terr = check_api_tokens(file.api_tokens)
  if terr then
    return nil, terr
  end
  local webhooks, werr = check_webhooks(file.webhooks)
  if werr then
    return nil, werr
  end
  local guard, gerr = http_guard(file.http)
  if not guard then
    return nil, gerr
  end
  if file.hooks ~= nil and (type(file.hooks) ~= "table"
      or (file.hooks.max_age_s ~= nil and math.type(file.hooks.max_age_s)
        ~= "integer")) then
    return nil, "EINVAL: spool.lua: hooks = { secret_env = \"NAME\", "
      .. "max_age_s = n }"
  end
  local schedules, serr = check_schedules(file.schedules)
  if not schedules then
    return nil, serr
  end
  if file.lease_ms ~= nil and (math.type(file.lease_ms) ~= "integer"
      or file.lease_ms < 100) then
    return nil, "EINVAL: spool.lua: lease_ms must be a whole number of "
      .. "milliseconds, at least 100"
  end
  local db = opts.store or nonempty(core.getenv("SPOOL_DB")) or file.store
    or ".spool/spool.db"
  if db ~= ":memory:" and db:sub(1, 1) ~= "/"
      and not db:match("^postgres://") and not db:match("^postgresql://")
  then
    db = opts.project .. "/" .. db
  end
  settings = {
    project = opts.project,
    store = db,
    lease_ms = file.lease_ms,
    schedules = schedules,
    state = file.state,
    retention = file.retention,
    lua_dir = opts.lua_dir,
    agents_dir = opts.agents_dir
      or (opts.project .. "/" .. (file.agents_dir or "agents")),
    prompts_dir = opts.prompts_dir
      or (opts.project .. "/" .. (file.prompts_dir or "prompts")),
    lib_dir = opts.project .. "/" .. (file.lib_dir or "lib"),
    mock_script = file.mock,
    stream = opts.stream == "on" or (opts.stream == nil and file.stream == true),
    webhooks = webhooks,
    http_guard = guard,
    hooks = file.hooks,
    file = file,
  }
  local lim, lerr = limits.init(file.limits)
  if not lim then
    settings = nil
    return nil, lerr
  end
  settings.limits = lim
  local model, merr = M.resolve_model(opts, file.model)
  if not model then
    settings = nil
    return nil, (merr:gsub("^EINVAL: ", "EINVAL: spool.lua: "))
  end
  settings.model = model
  local kerr = collect_key_urls(file, model)
  if kerr then
    settings = nil
    return nil, kerr
  end
  return true
end


-- The resolved settings (see init). Raises if the engine never opened.
function M.get()
  if not settings then
    error("spool.base.config: the engine has not been opened", 2)
  end
  return settings
end


return M
