-- The benchmark's driver (bench/driver.lua, behind bench/spool-driver),
-- run small: the benchmark reads the library's private modules, so a
-- change there must not leave it timing runs that never finish.
local h = require "spec.support"
local json = require "spool.json"

describe("bench/spool-driver", function()
  it("runs its agent to the right answer against the bench mock", function()
    local mock = h.mock_process(h.ROOT .. "/bench/calc_mock.lua", "",
      "SPOOL_BENCH_STEPS=3 SPOOL_BENCH_LATENCY_MS=0")
    finally(mock.stop)
    local out, code = h.sh(string.format("cd %s && SPOOL_BIN=%s timeout 60 "
      .. "bench/spool-driver --base %s --runs 6 --concurrency 3 --steps 3 "
      .. "--warmup 1 --timeout-s 30", h.q(h.ROOT), h.q(h.BIN), mock.url))
    assert.are.equal(0, code, out)
    local report = json.decode(out:match("{.*}"))
    assert.are.equal(6, report.runs)
    assert.are.same({ 0, 0, 0 }, { report.failed, report.timed_out,
                                   report.bad_answers })
  end)
end)
