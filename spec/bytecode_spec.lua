-- The library's precompiled chunks (engine/src/lua/l_bytecode.c): used when
-- built and current, never when the source was edited since, and a broken
-- one is named. Works on a copy of the library, so the chunks can differ
-- from the sources on purpose.
local h = require "spec.support"

describe("precompiled library chunks", function()
  local dir

  before_each(function()
    dir = h.tmpdir()
    h.sh(string.format("cp -r %s/lua %s/lua && mkdir -p %s/luac/spool "
      .. "%s/project", h.q(h.ROOT), h.q(dir), h.q(dir), h.q(dir)))
    -- A chunk that says where it came from, built from a changed source.
    h.sh(string.format("sed 's/^return M$/M.from = \"chunk\"; return M/' "
      .. "%s/lua/spool/tokens.lua > %s/tokens.lua && luac5.4 -o "
      .. "%s/luac/spool/tokens.luac %s/tokens.lua", h.q(dir), h.q(dir),
      h.q(dir), h.q(dir)))
    local f = assert(io.open(dir .. "/project/which.lua", "w"))
    f:write('print(require("spool.tokens").from or "source")\n')
    f:close()
  end)

  after_each(function()
    h.remove(dir)
  end)

  -- Dates the source and its chunk, then asks which one spool loaded;
  -- returns its output and exit code.
  local function which(source_date, chunk_date)
    for file, when in pairs { ["lua/spool/tokens.lua"] = source_date,
                              ["luac/spool/tokens.luac"] = chunk_date } do
      h.sh(string.format("touch -d %s %s", h.q(when),
        h.q(dir .. "/" .. file)))
    end
    return h.sh(string.format("SPOOL_LUA_DIR=%s %s --project %s lua %s 2>&1",
      h.q(dir .. "/lua"), h.q(h.BIN), h.q(dir .. "/project"),
      h.q(dir .. "/project/which.lua")))
  end

  it("loads a chunk built after its source", function()
    local out, code = which("2020-01-01", "2020-01-02")
    assert.are.equal(0, code, out)
    assert.are.equal("chunk\n", out)
  end)

  it("reads the source once it is newer than its chunk", function()
    local out, code = which("2020-01-02", "2020-01-01")
    assert.are.equal(0, code, out)
    assert.are.equal("source\n", out)
  end)

  it("names a broken chunk", function()
    local f = assert(io.open(dir .. "/luac/spool/tokens.luac", "w"))
    f:write("\27Lua not really")
    f:close()
    local out, code = which("2020-01-01", "2020-01-02")
    assert.are_not.equal(0, code)
    assert.matches("error loading module 'spool.tokens' from '.*"
      .. "luac/spool/tokens.luac'", out)
  end)
end)
