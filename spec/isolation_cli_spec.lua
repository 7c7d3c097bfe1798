-- Isolation end to end: `spool serve` as a process, 200 runs in flight,
-- and one run whose tools loop for ever and then fill memory. Only that
-- run's calls fail; the 200 finish, and the API answers all along.
local h = require "spec.support"
local core = require "spool.core"
local json = require "spool.json"
local http = require "spool.base.http"

local BIN = h.q(h.BIN)
local TOKEN = "isolation-spec-token-0123"

local AGENTS = {
  ["agents/work.lua"] = [[
local spool = require "spool"
return spool.agent { prompt = "p.md", tools = {
  note = { params = { n = "integer" }, side_effects = false,
           run = function(a) return "noted " .. a.n end },
  finish = spool.done } }
]],
  -- A run that spins, then fills memory, each in a tool of its own.
  ["agents/rogue.lua"] = [[
local spool = require "spool"
return spool.agent { prompt = "p.md",
  limits = { step_instructions = 2000000000, memory_mb = 64 },
  tools = {
    spin = { side_effects = false, run = function()
      local n = 0
      while true do n = n + 1 end
    end },
    bomb = { side_effects = false, run = function()
      local hoard = {}
      for i = 1, 1e9 do hoard[i] = ("x"):rep(4000) .. i end
    end },
    finish = spool.done } }
]],
  ["prompts/p.md"] = "Work.",
  -- The project lets a step run longer than the default; the rogue agent
  -- asks for that much (an agent may not ask for more than the project).
  ["spool.lua"] = "return { limits = { step_instructions = 2000000000 } }",
  -- work: three notes, then finish; rogue: spin, bomb, then finish with
  -- what the tools said.
  ["mock.lua"] = [[
return { latency_ms = 20, rules = { { reply = function(conv)
  if conv.user == "rogue" then
    if conv.turns == 0 then return { tool = "spin", args = {} } end
    if conv.turns == 1 then return { tool = "bomb", args = {} } end
    local said = {}
    for _, r in ipairs(conv.tool_results) do said[#said + 1] = r.content end
    return { tool = "finish", args = { answer = table.concat(said, " | ") } }
  end
  if conv.turns < 3 then return { tool = "note", args = { n = conv.turns } } end
  return { tool = "finish", args = { answer = "done " .. conv.user } }
end } } }
]],
}


-- Starts `spool serve` on the project; returns its base URL.
local function serve(dir, mock)
  local run = string.format("exec env SPOOL_TOKEN=%s %s --project %s "
    .. "--base-url %s serve --port 0 --port-file %s/port --max-runs 1000 "
    .. "--no-watch 2>%s/serve.log", TOKEN, BIN, h.q(dir), mock.url,
    h.q(dir), h.q(dir))
  h.sh(string.format("(sh -c %s & echo $! >%s/serve.pid) >/dev/null 2>&1",
    h.q(run), h.q(dir)))
  local port = h.wait_for(function()
    return tonumber(h.slurp(dir .. "/port"):match("%d+"))
  end, 10000, "serve to listen")
  finally(function()
    h.sh("kill -9 " .. h.slurp(dir .. "/serve.pid"):match("%d+")
      .. " 2>/dev/null")
  end)
  return "http://127.0.0.1:" .. port
end


local function api(base, method, path, body, timeout_ms)
  local res, err = http.request { method = method, url = base .. path,
    timeout_ms = timeout_ms or 10000,
    headers = { Authorization = "Bearer " .. TOKEN,
                ["Content-Type"] = body and "application/json" or nil },
    body = body and json.encode(body) or nil }
  if not res then
    return nil, err
  end
  return res.status, json.decode(res.body)
end


describe("isolation under load", function()
  it("fails only the run that spins and fills memory; 200 others finish "
    .. "and the API answers all along", function()
    local dir = h.tmpdir()
    finally(function() h.remove(dir) end)
    h.write_files(dir, AGENTS)
    local mock = h.mock_process(dir .. "/mock.lua")
    finally(mock.stop)
    local base = serve(dir, mock)

    local status, rogue = api(base, "POST", "/v1/threads",
      { agent = "rogue", input = "rogue" })
    assert.are.equal(201, status)
    local started, ids = 0, {}
    for i = 1, 200 do
      core.spawn(function()
        local s, v = api(base, "POST", "/v1/threads",
          { agent = "work", input = "job " .. i })
        assert(s == 201, "start " .. i .. ": " .. tostring(s))
        ids[i] = v.id
        started = started + 1
      end)
    end
    h.wait_for(function() return started == 200 end, 60000, "200 starts")

    -- Poll while the rogue run is in its tools: every answer must come,
    -- within a timeout far above any fair wait (the engine is never
    -- frozen), and some work must end meanwhile.
    local polls, in_tools, work_done_meanwhile = 0, 0, 0
    local deadline = core.now() + 120000
    while core.now() < deadline do
      local s, v = api(base, "GET", "/v1/threads/" .. rogue.id, nil, 5000)
      assert.are.equal(200, s, "the API stopped answering: " .. tostring(v))
      polls = polls + 1
      if v.status ~= "running" then
        break
      end
      local errors = 0
      for _, ev in ipairs(v.events) do
        errors = errors + (ev.type == "error" and 1 or 0)
      end
      if errors < 2 then
        in_tools = in_tools + 1
        local _, list = api(base, "GET", "/v1/threads?status=done&limit=5",
          nil, 5000)
        work_done_meanwhile = math.max(work_done_meanwhile, #list.threads)
      end
      core.sleep(20)
    end
    assert.is_true(in_tools >= 3, "the rogue run's tools were seen running "
      .. in_tools .. " times")
    assert.is_true(work_done_meanwhile > 0,
      "no other run finished while the rogue one spun")

    local _, v = api(base, "GET", "/v1/threads/" .. rogue.id)
    assert.are.equal("done", v.status)
    assert.matches("the step ran past its budget of 2000000000 Lua "
      .. "instructions", v.result)
    assert.matches("the run went over its memory budget of 64 MiB", v.result)

    h.wait_for(function()
      local _, list = api(base, "GET", "/v1/threads?status=running&limit=5")
      return #list.threads == 0
    end, 120000, "the 200 runs to finish")
    for i = 1, 200 do
      local s, t = api(base, "GET", "/v1/threads/" .. ids[i] .. "?events=false")
      assert.are.equal(200, s)
      assert.are.equal("done", t.status, ids[i])
      assert.are.equal("done job " .. i, t.result)
    end
  end)
end)
