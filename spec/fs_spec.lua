-- spool.fs: the project's files, and only those an agent may touch. Each
-- case runs `spool lua` (or `spool run`) in a temporary project, so a
-- symlink, a hidden file or an engine folder is set up freely and nothing
-- outside that project, nor the repository, is ever written.
local h = require "spec.support"
local json = require "spool.json"

-- Runs `code` in the project `dir` with spool.fs at hand: try(name, fn,
-- ...) records what fn answered under name ("ok", "ok: <value>", the
-- error it returned, or "raised: <message>"). Returns those answers.
local function probe(dir, code, env)
  local tmp = h.tmpdir()
  h.write_files(tmp, { ["probe.lua"] = [[
local fs = require "spool.fs"
local json = require "spool.json"
local out = {}
local function try(name, f, ...)
  local ok, v, err = pcall(f, ...)
  if not ok then
    out[name] = "raised: " .. tostring(v):gsub("^[^:]*:%d+: ", "")
  elseif v == nil then
    out[name] = tostring(err)
  else
    out[name] = v == true and "ok" or ("ok: " .. tostring(v))
  end
end
]] .. code .. "\nprint(json.encode(out))\n" })
  local out, code_ = h.sh(string.format("%s %s --project %s lua %s 2>&1",
    env or "", h.q(h.BIN), h.q(dir), h.q(tmp .. "/probe.lua")))
  h.remove(tmp)
  assert(code_ == 0, out)
  return assert(json.decode(out:match("[^\n]*\n?$")), out)
end


-- A project with the demo's folders, spool.lua (mock = "mock/m.lua") and
-- hidden files (the engine makes its store, .spool/spool.db, on opening);
-- `files` adds to it.
local function project(files)
  local dir = h.tmpdir()
  local all = {
    ["spool.lua"] = 'return { mock = "mock/m.lua", secret = "s3cr3t" }',
    ["mock/m.lua"] = "return {}",
    ["agents/a.lua"] = "-- agent code",
    ["prompts/a.md"] = "A prompt.",
    ["lib/helper.lua"] = "return {}",
    ["data/x.txt"] = "data",
    [".env"] = "KEY=s3cr3t",
    [".spool/token"] = "not for agents",
    [".git/config"] = "[core]",
  }
  for k, v in pairs(files or {}) do
    all[k] = v
  end
  h.write_files(dir, all)
  return dir
end


-- Both ways spool.fs resolves a path: openat2(RESOLVE_BENEATH) where the
-- kernel has it, and the walk with O_NOFOLLOW that replaces it where it
-- does not (SPOOL_TEST_FS_WALK=1 forces the walk).
for _, way in ipairs { { "openat2", "" }, { "the walk", "SPOOL_TEST_FS_WALK=1" } } do
  local how, env = way[1], way[2]

  describe("spool.fs (" .. how .. ")", function()
    local dir, outside

    before_each(function()
      outside = h.tmpdir()
      h.write_files(outside, { ["secret.txt"] = "outside" })
      dir = project()
      h.sh(string.format("mkdir -p %s/notes && ln -s /etc/passwd %s/notes/passwd"
        .. " && ln -s %s %s/away && ln -s %s/created.txt %s/dangling"
        .. " && ln -s data %s/alias",
        h.q(dir), h.q(dir), h.q(outside), h.q(dir), h.q(outside), h.q(dir),
        h.q(dir)))
    end)

    after_each(function()
      h.remove(dir)
      h.remove(outside)
    end)

    it("reads, writes, appends and creates folders inside the project",
      function()
      local r = probe(dir, [[
        try("write", fs.write, "out/a/b.txt", "one\n")
        try("append", fs.append, "out/a/b.txt", "two\n")
        try("read", fs.read, "out/a/b.txt")
        try("dot", fs.read, "./out//a/./b.txt")
        try("json", function()
          assert(fs.write("out/v.json", '{"x":1}'))
          return fs.read_json("out/v.json").x
        end)
        try("missing", fs.read, "no/such/file")
        try("data", fs.read, "data/x.txt")
        try("agent code is readable", fs.read, "agents/a.lua")
      ]], env)
      assert.are.same({ write = "ok", append = "ok",
        read = "ok: one\ntwo\n", dot = "ok: one\ntwo\n", json = "ok: 1",
        missing = "ENOENT: no/such/file: No such file or directory",
        data = "ok: data", ["agent code is readable"] = "ok: -- agent code" },
        r)
    end)

    it("refuses to read through a symlink to a file outside the project",
      function()
      local r = probe(dir, [[
        try("passwd", fs.read, "notes/passwd")
        try("folder", fs.read, "away/secret.txt")
      ]], env)
      assert.are.equal("ELOOP: notes/passwd: spool.fs does not follow "
        .. "symbolic links", r.passwd)
      assert.matches("^ELOOP: away/secret.txt: ", r.folder)
    end)

    it("refuses to write or make folders through a symlink out of the project",
      function()
      local r = probe(dir, [[
        try("write", fs.write, "away/planted.txt", "x")
        try("append", fs.append, "away/secret.txt", "x")
        try("mkdir", fs.write, "away/new/deeper/planted.txt", "x")
        try("dangling", fs.write, "dangling", "x")
      ]], env)
      for _, k in ipairs { "write", "append", "mkdir", "dangling" } do
        assert.matches("^ELOOP: ", r[k], 1, false)
      end
      assert.are.equal("outside", h.slurp(outside .. "/secret.txt"))
      assert.are.equal("", h.slurp(outside .. "/planted.txt"))
      assert.are.equal("", h.slurp(outside .. "/created.txt"))
      local _, code = h.sh("test -e " .. h.q(outside .. "/new"))
      assert.are_not.equal(0, code)
    end)

    -- The decision: no symlink is followed, even one that stays inside,
    -- so a link can never lead an agent to a file it may not touch by
    -- name (alias -> .spool, say) and both ways behave alike.
    it("refuses a symlink that points inside the project, too", function()
      local r = probe(dir, [[
        try("alias", fs.read, "alias/x.txt")
        try("real", fs.read, "data/x.txt")
      ]], env)
      assert.matches("^ELOOP: alias/x.txt: ", r.alias)
      assert.are.equal("ok: data", r.real)
    end)
  end)
end
