-- spool.model.wire: what the providers' wire formats share (private):
-- their tools' encoded form, reading a response body and a message's text,
-- the provider's own words in an error body, and
-- usage in OpenAI's two shapes (Chat Completions and Responses name the
-- same counts differently).

local json = require "spool.json"
local count = require("spool.tokens").count

local M = {}


-- The text of a message's content: a string, or parts of which the text
-- ones count (chat's "text", Anthropic's text blocks, the Responses API's
-- input_text and output_text).
function M.text_of(content)
  if type(content) == "string" then
    return content
  elseif type(content) == "table" then
    local parts = {}
    for _, p in ipairs(content) do
      if type(p) == "table" and type(p.text) == "string" then
        parts[#parts + 1] = p.text
      end
    end
    return table.concat(parts, "\n")
  end
  return ""
end


-- The tools' wire form in one format, encoded (a json.raw): what
-- `form(tool)` makes of each of req.tools, made once and kept in
-- req.tools_wire[format], where the request gives one (an agent
-- version's, spool.run.request), as its tools stay the same from step to
-- step.
function M.tools_json(req, format, form)
  local kept = req.tools_wire
  local raw = kept and kept[format]
  if not raw then
    local tools = json.array()
    for i, t in ipairs(req.tools) do
      tools[i] = form(t)
    end
    raw = json.raw(json.encode(tools))
    if kept then
      kept[format] = raw
    end
  end
  return raw
end


-- A response body as a table, or nil and why not.
function M.decode(body)
  local doc, err = json.decode(body)
  if doc == nil then
    return nil, "the response is not JSON (" .. err .. ")"
  elseif type(doc) ~= "table" then
    return nil, "the response is not an object"
  end
  return doc
end


-- The message of an error body ({ error = ... }), as `message_of` (the
-- provider's) reads its error object; nil if the body has none.
function M.error_message(body, message_of)
  local doc = json.decode(body or "")
  return type(doc) == "table" and message_of(doc.error) or nil
end


-- Usage as spool counts it, from an OpenAI usage object whose fields are
-- named by `names` = { input, output, input_details, output_details }.
function M.openai_usage(u, names)
  u = type(u) == "table" and u or {}
  local input = type(u[names.input_details]) == "table"
    and u[names.input_details] or {}
  local output = type(u[names.output_details]) == "table"
    and u[names.output_details] or {}
  return {
    input_tokens = count(u[names.input]) or 0,
    output_tokens = count(u[names.output]) or 0,
    total_tokens = count(u.total_tokens) or 0,
    cached_tokens = count(input.cached_tokens),
    reasoning_tokens = count(output.reasoning_tokens),
  }
end


return M
