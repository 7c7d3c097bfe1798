-- Hot reload from the command line: `spool reload`, `spool run --watch`
-- (with SIGHUP), and pinned threads resumed by another process, which
-- rebuilds their version from the files the store kept.
local h = require "spec.support"
local json = require "spool.json"

local BIN = h.q(h.BIN)

-- Runs spool on the project `dir`; returns stdout, stderr, exit code.
local function spool(dir, args)
  local tmp = h.tmpdir()
  local out = tmp .. "/out"
  local _, code = h.sh(string.format("%s --project %s %s >%s 2>%s.err", BIN,
    h.q(dir), args, h.q(out), h.q(out)))
  local stdout, stderr = h.slurp(out), h.slurp(out .. ".err")
  h.remove(tmp)
  return stdout, stderr, code
end

local function exists(path)
  local f = io.open(path)
  if f then
    f:close()
  end
  return f ~= nil
end

-- The agent: asks approval for a refund, then finishes; the mock answers
-- the last step with the system prompt it was sent.
local AGENT = [[
local spool = require "spool"
return spool.agent {
  prompt = "w.md",
  %s
  tools = {
    refund = { params = { amount = "number" }, approve = true,
               run = function(a) return "refunded" end },
    note = { params = { text = "string" }, side_effects = false,
             run = function() return "noted" end },
    finish = spool.done,
  },
}
]]

local MOCK = [[
local core = require "spool.core"
local dir = os.getenv("SPEC_DIR")
return { rules = {
  { when = { turns = 0, user = "^refund" },
    reply = { tool = "refund", args = { amount = 5 } } },
  { when = { turns = 0 }, reply = function()
      -- Say the first request arrived, then wait for the test's edit.
      io.open(dir .. "/asked", "w"):close()
      for _ = 1, 2000 do
        local f = io.open(dir .. "/go")
        if f then f:close() break end
        core.sleep(5)
      end
      return { tool = "note", args = { text = "x" } }
    end },
  { reply = function(conv)
      return { tool = "finish", args = { answer = conv.system } }
    end },
} }
]]

local function project(pin)
  local dir = h.tmpdir()
  h.write_files(dir, {
    ["agents/w.lua"] = AGENT:format(pin and "pin_version = true," or ""),
    ["prompts/w.md"] = "Old rules.",
    ["mock.lua"] = MOCK,
  })
  local mock = h.mock_process(dir .. "/mock.lua", nil, "SPEC_DIR=" .. h.q(dir))
  return dir, mock, "--base-url " .. mock.url .. " --db " .. h.q(dir
    .. "/spool.db")
end

local function answer_of(out)
  for _, ev in ipairs(h.json_lines(out)) do
    if ev.type == "done" then
      return ev.data.result
    end
  end
end


describe("spool reload", function()
  it("checks every agent, and exits 1 naming the broken ones", function()
    local out, err, code = spool(h.ROOT .. "/spec/fixtures/broken", "reload")
    assert.are.equal(1, code)
    assert.matches("reload  agent ok: loaded version %x+", out)
    assert.matches("agents/syntax.lua:4: '}' expected", err)
    assert.matches("agents/typo.lua: unknown field 'max_stpes'", err)
    local ok_out, _, ok_code = spool(h.ROOT, "reload --json")
    assert.are.equal(0, ok_code)
    local report = json.decode(ok_out)
    assert.are.equal(0, report.errors)
    assert.is_string(report.agents.refund.version)
  end)
end)


describe("a pinned thread resumed by another process", function()
  for _, case in ipairs { { pin = true, want = "Old rules." },
                          { pin = false, want = "New rules." } } do
    it(string.format("runs %s version", case.pin and "the version it "
      .. "started on" or "the current"), function()
      local dir, mock, flags = project(case.pin)
      local out, _, code = spool(dir, flags .. " run w --json --input "
        .. "refund")
      assert.are.equal(3, code)
      local id = h.json_lines(out)[1].thread
      h.write_files(dir, { ["prompts/w.md"] = "New rules." })
      out, _, code = spool(dir, flags .. " resume " .. id
        .. " --approve --json")
      assert.are.equal(0, code)
      assert.are.equal(case.want, answer_of(out))
      local shown = spool(dir, flags .. " show " .. id)
      if case.pin then
        assert.not_matches("%-%- agent w: version", shown)
      else
        assert.matches("%-%- agent w: version %x+ %-> %x+ %-%-", shown)
      end
      mock.stop()
      h.remove(dir)
    end)
  end
end)


describe("a waiting thread whose agent changed on disk", function()
  it("finishes on its last version when the agent was deleted", function()
    local dir, mock, flags = project(false)
    local out, _, code = spool(dir, flags .. " run w --json --input refund")
    assert.are.equal(3, code)
    local id = h.json_lines(out)[1].thread
    h.write_files(dir, { ["agents/w.lua"] = false,
                         ["prompts/w.md"] = false })
    out, _, code = spool(dir, flags .. " resume " .. id .. " --approve --json")
    assert.are.equal(0, code)
    assert.are.equal("Old rules.", answer_of(out))
    mock.stop()
    h.remove(dir)
  end)

  it("says so when the stored version is corrupt", function()
    local dir, mock, flags = project(true)
    local out, _, code = spool(dir, flags .. " run w --json --input refund")
    assert.are.equal(3, code)
    local id = h.json_lines(out)[1].thread
    local _, sql = h.sh(string.format("sqlite3 %s \"UPDATE versions SET "
      .. "sources = '{\\\"agent\\\":1}'\"", h.q(dir .. "/spool.db")))
    assert.are.equal(0, sql)
    local _, err
    _, err, code = spool(dir, flags .. " resume " .. id .. " --approve")
    assert.are.equal(1, code)
    assert.matches("stored version %x+ of w is not a bundle of files", err)
    mock.stop()
    h.remove(dir)
  end)
end)


describe("spool run, while agents are edited", function()
  -- Starts `spool run w` in the background; waits for its first model call.
  local function start_run(dir, flags, extra)
    -- sh records its pid and becomes spool (exec), so signals reach spool.
    local run = string.format("echo $$ >%s/run.pid; exec %s --project %s %s "
      .. "run w %s --json --input go >%s/run.out 2>%s/run.err", h.q(dir), BIN,
      h.q(dir), flags, extra, h.q(dir), h.q(dir))
    h.sh(string.format("(sh -c %s; echo $? >%s/run.code) >/dev/null 2>&1 &",
      h.q(run), h.q(dir)))
    h.wait_for(function() return exists(dir .. "/asked") end, 10000,
      "the first model call")
    local f = assert(io.open(dir .. "/run.pid"))
    local pid = assert(tonumber(f:read("l")))
    f:close()
    return pid
  end

  -- Lets the mock answer, waits for the run to end; returns out, code.
  local function finish(dir)
    h.write_files(dir, { go = "" })
    local code = h.wait_for(function()
      return tonumber(h.slurp(dir .. "/run.code"):match("%d+"))
    end, 20000, "the run to end")
    return h.slurp(dir .. "/run.out"), code
  end

  -- Edits the prompt during the run's first model call, sends SIGHUP if
  -- told, and waits for the reload event if one is due; returns the
  -- run's output and exit code.
  local function edit_during_run(extra, hup)
    local dir, mock, flags = project(false)
    finally(function() mock.stop(); h.remove(dir) end)
    local pid = start_run(dir, flags, extra)
    h.write_files(dir, { ["prompts/w.md"] = "New rules." })
    if hup then
      h.sh("kill -HUP " .. pid)
    end
    if hup or extra == "--watch" then
      h.wait_for(function()
        return h.slurp(dir .. "/run.out"):match('"type":"reload"')
      end, 10000, "the reload event")
    end
    return finish(dir)
  end

  for _, case in ipairs {
    { "with --watch, gives the next step an edited prompt", "--watch",
      false, "New rules." },
    { "reloads on SIGHUP, with no watcher", "", true, "New rules." },
    { "without --watch or SIGHUP, keeps the version it loaded", "", false,
      "Old rules." },
  } do
    it(case[1], function()
      local out, code = edit_during_run(case[2], case[3])
      assert.are.equal(0, code)
      assert.are.equal(case[4], answer_of(out))
    end)
  end

  it("stops on SIGINT, the thread resumable", function()
    local dir, mock, flags = project(false)
    finally(function() mock.stop(); h.remove(dir) end)
    local pid = start_run(dir, flags, "--watch")
    h.sh("kill -INT " .. pid)
    local code = h.wait_for(function()
      return tonumber(h.slurp(dir .. "/run.code"):match("%d+"))
    end, 20000, "the run to stop")
    assert.are.equal(1, code)
    assert.matches("interrupted %(signal 2%).*spool resume", h.slurp(dir
      .. "/run.err"))
    h.write_files(dir, { go = "" })
  end)
end)
