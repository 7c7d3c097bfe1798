-- Durable steps inside one engine (the store is an in-memory SQLite
-- database under `spool test`): what each step stores and when, business
-- state committed with the step, group commit, pause and resume.
local h = require "spec.support"
local spool = require "spool"
local core = require "spool.core"
local store = require "spool.run.store"
local runner = require "spool.run.runner"
local json = spool.json

local types = h.types
local scripted = h.scripted

describe("durable steps", function()
  local mock

  after_each(function()
    if mock then
      mock.close()
      mock = nil
    end
  end)

  it("stores every event of a finished thread, exactly as it ran", function()
    mock = scripted { { tool = "add", args = { a = 1, b = 2 } }, "3" }
    local t = h.run(h.agent({ tools = { add = { params = { a = "number",
      b = "number" }, run = function(args) return args.a + args.b end } } },
      mock), "1 + 2")
    local record = assert(store.load(t.id))
    assert.are.equal("done", record.thread.status)
    assert.are.equal(#t.events, record.thread.events)
    assert.are.same(types(t.events), types(record.events))
    for i, ev in ipairs(record.events) do
      assert.are.same(t.events[i].data, ev.data)
      assert.are.equal(t.events[i].step, ev.step)
      assert.are.equal(i, ev.seq)
    end
    assert.are.equal("integer", math.type(record.events[4].data.result))
  end)

  it("counts threads by status, of one agent or of all", function()
    mock = scripted { "done" }
    local agent = h.agent({}, mock)
    local before = assert(store.by_status())
    local t = h.run(agent, "hi")
    assert.are.equal("done", t:status())
    local after = assert(store.by_status())
    assert.are.equal((before.done or 0) + 1, after.done)
    for status, n in pairs(before) do
      if status ~= "done" then
        assert.are.equal(n, after[status], status)
      end
    end
    local mine = assert(store.by_status(agent.name))
    assert.is_true(mine.done >= 1)
    assert.are.same({}, assert(store.by_status("nobody-has-this-agent")))
  end)

  it("stores the intent before a tool with side effects runs", function()
    local seen
    mock = scripted { { tool = "act", args = {} }, "ok" }
    local t = h.run(h.agent({ tools = { act = { run = function(_, ctx)
      seen = types(store.load(ctx.thread.id).events)
      return "acted"
    end } } }, mock), "x")
    assert.are.equal("done", t:status())
    assert.are.same({ "input", "model_call", "intent" }, seen)
  end)

  it("needs no commit before a tool without side effects", function()
    local seen
    mock = scripted { { tool = "look", args = {} }, "ok" }
    h.run(h.agent({ tools = { look = { side_effects = false,
      run = function(_, ctx)
        seen = types(store.load(ctx.thread.id).events)
        return "looked"
      end } } }, mock), "x")
    assert.are.same({ "input" }, seen)
  end)

  it("commits the steps of runs that finish together in one transaction",
    function()
    mock = h.mock { latency_ms = 50, rules = { { reply = "done" } } }
    local agent = h.agent({}, mock)
    local before = core.stats()
    local threads = {}
    for i = 1, 40 do
      threads[i] = runner.start(agent, "run " .. i)
    end
    for _, t in ipairs(threads) do
      h.wait_run(t)
      assert.are.equal("done", t:status())
    end
    local after = core.stats()
    local appends = after.store_appends - before.store_appends
    local transactions = after.store_transactions - before.store_transactions
    assert.is_true(appends >= 80) -- input + final step of each run
    assert.is_true(transactions < appends / 4,
      transactions .. " transactions for " .. appends .. " appends")
  end)

  it("stores each event's data as json.encode writes it, and counts its "
    .. "bytes", function()
    mock = scripted { { tool = "add", args = { a = 1, b = 2 } }, "3" }
    local t = h.run(h.agent({ tools = { add = { params = { a = "number",
      b = "number" }, run = function(args) return { sum = args.a + args.b,
      note = "é\n\"q\"" } end } } }, mock), "1 + 2")
    local text = assert(core.store_load(t.id))
    local bytes = 0
    for _, ev in ipairs(t.events) do
      local data = json.encode(ev.data)
      bytes = bytes + #data
      assert.truthy(text:find(data, 1, true), data)
    end
    assert.are.equal(bytes, t.bytes)
  end)

  it("refuses a step whose event data json.encode refuses, naming where, "
    .. "and stores none of it", function()
    local id = "t_" .. core.random_id()
    local now = core.time()
    assert(core.store_claim(id, "me", 1000, now))
    local ok, err, code = core.store_append { thread = id, agent = "a",
      expected_seq = 0, status = "running", owner = "me", epoch = 1,
      now = now, events = {
        { seq = 1, step = 0, type = "input", at = now, data = { input = "x" } },
        { seq = 2, step = 0, type = "note", at = now,
          data = { deep = { f = print } } } } }
    assert.is_nil(ok)
    assert.are.equal("EINVAL", code) -- (a code: the caller mends by it)
    assert.are.equal("EINVAL: event 2's data cannot be stored: cannot "
      .. "encode a function at $.deep.f", err)
    local _, _, code = store.head(id)
    assert.are.equal("ENOTFOUND", code)
    -- Only events from `first` on go; the same step then stores.
    local versions, bytes = assert(core.store_append { thread = id,
      agent = "a", expected_seq = 0, status = "done", owner = "me",
      epoch = 1, now = now, first = 2, events = {
        { seq = 0, step = 0, type = "never", at = now, data = print },
        { seq = 1, step = 0, type = "input", at = now, data = { input = "x" } },
      } })
    assert.are.equal("[]", versions)
    assert.are.equal(#'{"input":"x"}', bytes)
    assert.are.same({ "input" }, types(store.load(id).events))
  end)

  it("stores an event whose data JSON cannot hold as one saying why, and "
    .. "the thread goes on to its end", function()
    mock = scripted { "fine" }
    local a = h.agent({ max_steps = 3, step = function(thread)
      thread:append("note", { call_id = "c9", f = print })
      thread:finish("done anyway")
    end }, mock)
    local t = h.run(a, "go")
    assert.are.equal("done", t:status())
    local record = assert(store.load(t.id))
    assert.are.equal("done", record.thread.status)
    local note = record.events[2]
    assert.are.equal("note", note.type)
    assert.are.equal("c9", note.data.call_id)
    assert.matches("could not be stored: cannot encode a function at %$%.f",
      note.data.error)
  end)

  it("keeps a thread's storage growing by its new events only", function()
    mock = scripted { { tool = "n", args = {} }, { tool = "n", args = {} },
                      { tool = "n", args = {} }, "done" }
    local t = h.run(h.agent({ tools = { n = { side_effects = false,
      run = function() return 1 end } } }, mock), "x")
    local record = store.load(t.id)
    -- Earlier events are never rewritten: each keeps the time it was made.
    for i, ev in ipairs(record.events) do
      assert.are.equal(t.events[i].at, ev.at)
    end
  end)
end)

describe("business state", function()
  local mock

  after_each(function()
    if mock then
      mock.close()
      mock = nil
    end
  end)

  local ns = "spec_" .. core.random_id():sub(-8)

  it("puts, gets, lists and deletes documents outside a run step", function()
    assert(spool.state.put(ns, "a", { n = 1 }))
    assert(spool.state.put(ns, "b", json.array { 1, 2 }))
    local v, version = spool.state.get(ns, "a")
    assert.are.same({ n = 1 }, v)
    assert.are.equal(1, version)
    assert(spool.state.put(ns, "a", { n = 2 }))
    assert.are.equal(2, select(2, spool.state.get(ns, "a")))
    local items = spool.state.list(ns)
    assert.are.same({ "a", "b" }, { items[1].key, items[2].key })
    assert(spool.state.delete(ns, "a"))
    assert.is_nil(spool.state.get(ns, "a"))
    assert.is_nil(spool.state.get(ns, "never"))
  end)

  it("commits a handler's writes with its step, visible to the rest of "
    .. "the step at once", function()
    local inside, stored_inside
    mock = scripted { { tool = "save", args = {} }, "saved" }
    local t = h.run(h.agent({ tools = { save = { run = function(_, ctx)
      spool.state.put(ns, "k", { by = ctx.thread.id })
      inside = spool.state.get(ns, "k")
      stored_inside = store.state_get(ns, "k")
      return "ok"
    end } } }, mock), "x")
    assert.are.equal("done", t:status())
    assert.are.same({ by = t.id }, inside)
    assert.is_nil(stored_inside) -- not committed while the step ran
    assert.are.same({ by = t.id }, (spool.state.get(ns, "k")))
  end)

  it("fails the call whose compare-and-set lost, storing none of its "
    .. "writes, and goes on", function()
    assert(spool.state.put(ns, "cas", "v1"))
    mock = scripted { { tool = "bump", args = {} }, "after the conflict" }
    local t = h.run(h.agent({ tools = { bump = { run = function()
      local _, version = spool.state.get(ns, "cas")
      spool.state.put(ns, "other_key", "written with it")
      local ok, err = spool.state.put(ns, "cas", "mine",
        { if_version = version })
      assert(ok, err)
      -- Another writer gets in between the write and the commit.
      assert(store.write_state({ { ns = ns, key = "cas", value = "other" } }))
      return "bumped"
    end } } }, mock), "x")
    assert.is_nil(t.halted)
    assert.are.equal("done", t:status())
    assert.are.equal("other", (spool.state.get(ns, "cas")))
    assert.is_nil((spool.state.get(ns, "other_key")))
    local stored = store.load(t.id)
    assert.are.same({ "input", "model_call", "intent", "error", "model_call",
      "done" }, types(stored.events))
    assert.matches("^this call failed: nothing it wrote was stored: the "
      .. "state " .. ns .. "/cas is at version 2, not 1",
      stored.events[4].data.error)
  end)

  it("reads expired documents as absent", function()
    assert(spool.state.put(ns, "ttl", "soon gone", { ttl_ms = 1 }))
    core.sleep(5)
    assert.is_nil(spool.state.get(ns, "ttl"))
  end)

  it("checks names and values", function()
    assert.has_error(function() spool.state.put("bad ns", "k", 1) end)
    assert.has_error(function() spool.state.put(ns, "", 1) end)
    assert.has_error(function() spool.state.put(ns, "k", nil) end)
    assert.has_error(function() spool.state.put(ns, "k", print) end)
  end)
end)

describe("pause and resume", function()
  local mock

  after_each(function()
    if mock then
      mock.close()
      mock = nil
    end
  end)

  it("holds no task or memory for a waiting thread, and resumes from the "
    .. "store", function()
    local ran = 0
    mock = scripted { { tool = "go", args = { n = 1 } },
      function(conv) return "result: " .. conv.tool_results[1].content end }
    local agent = h.agent({ tools = { go = { params = { n = "integer" },
      approve = true, run = function(args)
        ran = ran + 1
        return args.n * 10
      end } } }, mock)
    local t = h.run(agent, "x")
    assert.are.equal("waiting", t:status())
    assert.is_false(runner.is_live(t.id))
    assert.are.equal("waiting", store.load(t.id).thread.status)
    -- Resume builds the thread from the store, not from this object.
    local resumed, err = runner.resume(t.id, { approve = true,
                                               args = { n = 4 } })
    assert.is_nil(err)
    assert.are_not.equal(t, resumed)
    h.wait_run(resumed)
    assert.are.equal("result: (A person changed the arguments to {\"n\":4} "
      .. "before it ran.) 40", resumed:outcome())
    assert.are.equal(1, ran)
  end)

  it("checks that a response fits what the thread waits for", function()
    mock = scripted { { tool = "ask_human", args = { question = "Why?" } } }
    local t = h.run(h.agent({ tools = { ask_human = spool.human.ask } }, mock),
      "x")
    assert.are.equal("waiting", t:status())
    local req = t:pending_request()
    assert.are.equal("ask", req.data.kind)
    assert.are.equal("Why?", req.data.question)
    local human = require "spool.human"
    assert.is_nil((human.response_for(req, { approve = true })))
    assert.matches("waits for an answer to \"Why%?\"",
      select(2, human.response_for(req, { approve = true })))
    assert.are.equal("because", human.response_for(req,
      { answer = "because" }).answer)
    require("spool.run.runner").cancel(t.id, "test over")
  end)
end)
