-- The error table (engine/src/base/errors.h) as Lua sees it: spool.core.errors
-- names every error the engine and its library raise, each with its
-- spool.h code, HTTP status and message; no source raises a name it lacks.
local h = require "spec.support"
local core = require "spool.core"
local json = require "spool.json"
local store = require "spool.run.store"

describe("the error table", function()
  it("gives every name its code, status, API code and message", function()
    local n = 0
    for name, e in pairs(core.errors) do
      n = n + 1
      assert.matches("^E[%u%d_]+$", name)
      assert.matches("^E%u+$", e.code, 1, false, name)
      assert.is_truthy(core.errors[e.code], name .. "'s code has a row")
      assert.is_true(e.status >= 400 and e.status < 600, name)
      assert.matches("^[a-z_]+$", e.api)
      assert.is_true(#e.message > 0, name)
    end
    assert.is_true(n > 40)
    assert.are.same({ code = "EIO", status = 503, api = "store_failed",
                      message = "input/output error" }, core.errors.EIO)
    assert.are.equal("EIO", core.errors.ETIMEDOUT.code)
    assert.are.equal("EIO", core.errors.ENOSPC.code) -- a system error
    assert.are.equal(404, core.errors.ENOTFOUND.status)
  end)

  it("knows every name a source raises", function()
    local files = h.sh("cd " .. h.q(h.ROOT) .. " && find lua/spool "
      .. "engine/src -name '*.lua' -o -name '*.c' | sort")
    local unknown, seen = {}, 0
    for file in files:gmatch("[^\n]+") do
      local text = h.slurp(h.ROOT .. "/" .. file)
      for name in text:gmatch("[\"'](E%u%u+): ") do
        seen = seen + 1
        if not core.errors[name] and name ~= "ECODE" then -- (a placeholder)
          unknown[#unknown + 1] = file .. ": " .. name
        end
      end
    end
    assert.is_true(seen > 100)
    assert.are.same({}, unknown)
  end)

  it("comes back from the engine as luv returns it: nil, message, name",
    function()
    local function failure(name, v, msg, code)
      assert.is_nil(v)
      assert.are.equal(name, code)
      assert.matches("^" .. name .. ": ", msg)
      assert.is_truthy(core.errors[code])
    end
    failure("EJSON", json.decode("{"))
    failure("ECONNECT", core.http_request { url = "http://127.0.0.1:1/",
                                            timeout_ms = 5000 })
    local key = "spec-" .. core.random_id()
    assert.is_true(store.first_seen(key, 60000))
    assert.is_false(store.first_seen(key, 60000)) -- (by the name)
    failure("ECONFLICT", store.write_state { { ns = "spool.seen", key = key,
      value = true, if_version = 0 } })
    -- A task woken from its wait by an interrupt.
    local got = {}
    local id = core.spawn(function()
      got = table.pack(core.sleep(60000))
    end)
    core.sleep(1)
    assert.is_true(core.interrupt(id, "ECANCELED: the spec stopped it"))
    h.wait_for(function() return got.n end, 5000, "the sleeper")
    failure("ECANCELED", table.unpack(got, 1, got.n))
  end)
end)
