-- Extraction throughput: spool.extract over a corpus of realistic model
-- replies (JSON in fences and prose, with the mistakes models make, some
-- cut off), next to strict decoders on the repaired documents: lua-cjson
-- and spool.json. Prints a Markdown table. Run: spool lua bench/extract.lua
local core = require "spool.core"
local json = require "spool.json"
local spool = require "spool"
local cjson = require "cjson"

local seed = 42
local function rand(n) -- deterministic, so runs compare
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed % n + 1
end

local words = { "refund", "order", "shipping", "the customer", "damaged",
  "teapot", "within 30 days", "tracking", "Ana Silva", "caf\u{e9}",
  "d\u{e9}j\u{e0} vu", "\u{1F600}", "a \"quoted\" word", "line\nbreak" }

local function value(depth)
  local k = rand(depth > 2 and 4 or 7)
  if k == 1 then return rand(100000) end
  if k == 2 then return rand(1000) / 7 end
  if k == 3 then return words[rand(#words)] end
  if k == 4 then return rand(2) == 1 end
  if k == 5 then
    local a = json.array()
    for i = 1, rand(6) do a[i] = value(depth + 1) end
    return a
  end
  local o = {}
  for i = 1, rand(8) do o["field_" .. i .. "_" .. rand(50)] = value(depth + 1) end
  return o
end

-- A reply as a model writes it, with a defect now and then.
local function reply()
  local top = value(0)
  if type(top) ~= "table" then
    top = { answer = top }
  end
  local doc = json.encode(top)
  local kind = rand(8)
  if kind == 2 then
    doc = doc:gsub('"(field_%d+_%d+)":', "%1:") -- unquoted keys
  elseif kind == 3 then
    doc = doc:gsub("}$", ",}") -- a trailing comma
  elseif kind == 4 then
    doc = doc:gsub("true", "True"):gsub("false", "False")
  elseif kind == 5 then
    return doc:sub(1, math.floor(#doc * 0.8)) -- cut off by max_tokens
  end
  local wrap = rand(3)
  if wrap == 1 then
    return doc
  elseif wrap == 2 then
    return "Here is the result:\n```json\n" .. doc .. "\n```\nLet me know!"
  end
  return "Based on the order, the answer is " .. doc .. ". Anything else?"
end

local corpus, bytes = {}, 0
while bytes < 2 * 1024 * 1024 do
  local r = reply()
  corpus[#corpus + 1] = r
  bytes = bytes + #r
end

local function measure(fn, docs, total)
  local reps, t0 = 0, core.now()
  repeat
    for _, d in ipairs(docs) do fn(d) end
    reps = reps + 1
  until core.now() - t0 > 1500
  local secs = (core.now() - t0) / 1000
  return total * reps / secs / (1024 * 1024)
end

local repaired, rbytes, failures = {}, 0, 0
for _, r in ipairs(corpus) do
  local v, err = spool.extract(r)
  if v == nil then
    failures = failures + 1
    if os.getenv("SHOW_FAILURES") then
      print(err, r)
    end
  else
    local d = json.encode(v)
    repaired[#repaired + 1] = d
    rbytes = rbytes + #d
  end
end

local rows = {
  { "spool.extract (replies: fences, prose, repairs)", #corpus, bytes,
    measure(spool.extract, corpus, bytes) },
  { "lua-cjson decode (the repaired documents)", #repaired, rbytes,
    measure(cjson.decode, repaired, rbytes) },
  { "spool.json.decode (the repaired documents)", #repaired, rbytes,
    measure(json.decode, repaired, rbytes) },
}
print(string.format("corpus: %d replies, %.1f MiB; %d could not be recovered",
  #corpus, bytes / 1048576, failures))
print("")
print("| decoder | documents | MiB | MiB/s |")
print("|---|---|---|---|")
for _, r in ipairs(rows) do
  print(string.format("| %s | %d | %.1f | %.1f |", r[1], r[2], r[3] / 1048576,
    r[4]))
end
