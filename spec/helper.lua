-- spec/helper.lua: run by busted before the specs (see .busted). After
-- every test, in every spec file, it checks that the test left the engine
-- as it found it: no task but the test runner, no HTTP transfer in flight,
-- no thread running. A leak shows up as an error on that test.
--
-- busted keeps one finally() per test (each call replaces the last); here
-- every call counts, and they run last-registered first, like defers, so
-- a test's helpers can each clean up what they started.
local busted = require "busted"
local h = require "spec.support"

busted.subscribe({ "test", "start" }, function(element)
  local set = element.env and element.env.finally
  if set then
    local fns = {}
    element.env.finally = function(fn)
      fns[#fns + 1] = fn
      set(function()
        local first_err
        for i = #fns, 1, -1 do
          local ok, err = pcall(fns[i])
          first_err = first_err or (not ok and err) or nil
        end
        if first_err then
          error(first_err, 0)
        end
      end)
    end
  end
  return nil, true
end)

busted.subscribe({ "test", "end" }, function()
  h.assert_clean()
  return nil, true
end)
