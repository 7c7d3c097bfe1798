-- spool llm: one model call from the command line, through the same
-- adapters agents use (spool.llm). Run by the CLI as a script: `arg` holds
-- the command's arguments.
--
--   spool llm [--provider P] [--model M] [--base-url URL] [--system TEXT]
--             [--tools FILE] [--stream] [--json] [--max-retries N]
--             [PROMPT | -]
--
-- Providers: openai (Chat Completions), openai-responses, anthropic.
-- --base-url is the prefix the provider's path is appended to. Without a
-- key in the provider's variable and without --base-url, the built-in
-- mock model answers. --stream prints the text as it arrives; --json makes
-- the last line of stdout one object {text, tool_calls = [{id, name,
-- arguments}], finish_reason, usage}, arguments parsed (with --stream,
-- each piece of text comes first as a line {"delta": "..."}). A failed
-- call exits 1 with the provider's message on stderr; bad usage exits 2.

local config = require "spool.base.config"
local json = require "spool.json"
local llm = require "spool.llm"

local USAGE = "usage: spool llm [--provider openai|openai-responses|anthropic] "
  .. "[--model M] [--base-url URL] [--system TEXT] [--tools FILE] [--stream] "
  .. "[--json] [--max-retries N] [PROMPT | -]"

local cli = require("spool.cli.command").new("llm", USAGE)


local function parse(argv)
  local o = cli:parse(argv, {
    ["--provider"] = "value", ["--model"] = "value", ["--base-url"] = "value",
    ["--system"] = "value", ["--tools"] = "value", ["--max-retries"] = "natural",
    ["--stream"] = "flag", ["--json"] = "flag" }, { "prompt" })
  if o.prompt == nil or o.prompt == "-" then
    o.prompt = io.read("a")
  end
  if o.prompt == nil or o.prompt == "" then
    cli:usage("needs a prompt (an argument, or - for stdin)")
  end
  return o
end


local function read_tools(path)
  local f, err = io.open(path, "r")
  if not f then
    cli:usage("--tools: " .. err)
  end
  local list, jerr = json.decode(f:read("a"))
  f:close()
  if type(list) ~= "table" or not json.is_array(list) then
    cli:usage("--tools: " .. path .. " must hold a JSON array of {name, "
      .. "description, parameters}" .. (jerr and (" (" .. jerr .. ")") or ""))
  end
  return list
end


local function output(reply)
  local calls = json.array()
  for i, c in ipairs(reply.tool_calls) do
    calls[i] = { id = c.id, name = c.name,
                 arguments = c.args ~= nil and c.args or c.arguments }
  end
  local u = reply.usage or {}
  return json.encode({
    text = reply.text or json.null,
    tool_calls = calls,
    finish_reason = reply.finish_reason or json.null,
    usage = { input_tokens = u.input_tokens, output_tokens = u.output_tokens,
              total_tokens = u.total_tokens, cached_tokens = u.cached_tokens,
              reasoning_tokens = u.reasoning_tokens },
  })
end


local o = parse(arg or {})
local cfg = config.get()
local file_model = cfg.file.model
if type(file_model) == "table" and o.provider
    and (file_model.provider or "openai") ~= o.provider then
  file_model = nil -- the project's settings are for another provider
end
local model, err = config.resolve_model({ provider = o.provider,
  model = o.model, base_url = o.base_url }, file_model)
if not model then
  cli:usage((err:gsub("^EINVAL: ", "")))
end
-- The command line is the project's configuration: its URL gets the key.
config.allow_key(model.api_key_env, model.base_url)

local on_text
if o.stream and o.json then
  on_text = function(piece)
    io.write(json.encode({ delta = piece }), "\n")
    io.flush()
  end
elseif o.stream then
  on_text = function(piece)
    io.write(piece)
    io.flush()
  end
end

local reply, cerr = llm.chat {
  model = model, system = o.system, stream = o.stream, on_text = on_text,
  max_retries = o.max_retries,
  tools = o.tools and read_tools(o.tools) or nil,
  messages = { { role = "user", content = o.prompt } },
}
if not reply then
  if o.stream and not o.json then
    io.write("\n")
  end
  cli:fail((cerr:gsub("^EMODEL: ", "")))
end
if o.json then
  io.write(output(reply), "\n")
elseif o.stream then
  io.write("\n")
else
  io.write(reply.text or "", "\n")
end
for _, c in ipairs(o.json and {} or reply.tool_calls) do
  io.write(string.format("tool call %s(%s)\n", c.name, c.arguments))
end
os.exit(0)
