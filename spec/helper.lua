-- spec/helper.lua: run by busted before the specs (see .busted). After
-- every test, in every spec file, it checks that the test left the engine
-- as it found it: no task but the test runner, no HTTP transfer in flight,
-- no thread running. A leak shows up as an error on that test.
local busted = require "busted"
local h = require "spec.support"

busted.subscribe({ "test", "end" }, function()
  h.assert_clean()
  return nil, true
end)
