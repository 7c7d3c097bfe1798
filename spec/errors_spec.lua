-- The error table (engine/src/base/errors.h) as Lua sees it: spool.core.errors
-- names every error the engine and its library raise, each with its
-- spool.h code, HTTP status and message; no source raises a name it lacks.
local h = require "spec.support"
local core = require "spool.core"

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
end)
