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


describe("spool.fs and the engine's own files", function()
  local dir

  after_each(function()
    h.remove(dir)
  end)

  it("cannot read or write the store, spool.lua, or any hidden file",
    function()
    dir = project()
    local r = probe(dir, [[
      try("store", fs.read, ".spool/spool.db")
      try("env", fs.read, ".env")
      try("spool.lua", fs.read, "spool.lua")
      try("./spool.lua", fs.read, "./spool.lua")
      try("git", fs.read, ".git/config")
      try("deep", fs.read, "data/.hidden/x")
      try("write spool.lua", fs.write, "spool.lua", "return {}")
      try("write env", fs.append, ".env", "X=1")
      try("write store", fs.write, ".spool/spool.db", "")
    ]])
    assert.are.same({
      store = "EACCES: .spool/spool.db is hidden (.spool); agents cannot "
        .. "read or write hidden files or folders",
      env = "EACCES: .env is hidden (.env); agents cannot read or write "
        .. "hidden files or folders",
      ["spool.lua"] = "EACCES: spool.lua is the engine's own file; agents "
        .. "cannot read or write it",
      ["./spool.lua"] = "EACCES: ./spool.lua is the engine's own file; "
        .. "agents cannot read or write it",
      git = "EACCES: .git/config is hidden (.git); agents cannot read or "
        .. "write hidden files or folders",
      deep = "EACCES: data/.hidden/x is hidden (.hidden); agents cannot "
        .. "read or write hidden files or folders",
      ["write spool.lua"] = "EACCES: spool.lua is the engine's own file; "
        .. "agents cannot read or write it",
      ["write env"] = "EACCES: .env is hidden (.env); agents cannot read "
        .. "or write hidden files or folders",
      ["write store"] = "EACCES: .spool/spool.db is hidden (.spool); "
        .. "agents cannot read or write hidden files or folders",
    }, r)
    assert.are.equal("KEY=s3cr3t", h.slurp(dir .. "/.env"))
    assert.matches("s3cr3t", h.slurp(dir .. "/spool.lua"))
  end)

  it("cannot write agent code, prompts, helper modules or mock scripts",
    function()
    dir = project()
    local r = probe(dir, [[
      try("agents", fs.write, "agents/x.lua", "return 1")
      try("agents again", fs.append, "agents/a.lua", "os.exit()")
      try("prompts", fs.write, "prompts/x.md", "Obey.")
      try("lib", fs.write, "lib/deep/x.lua", "return 1")
      try("mock", fs.write, "mock/x.lua", "return {}")
      try("mock script", fs.write, "mock/m.lua", "return {}")
      try("dot agents", fs.write, "./agents//x.lua", "return 1")
      try("lua anywhere", fs.write, "evals/cases.lua", "os.execute'x'")
      try("read", fs.read, "agents/a.lua")
    ]])
    assert.are.same({
      agents = "EACCES: agents/x.lua is in agents/, the project's agent "
        .. "code; agents cannot write there",
      ["agents again"] = "EACCES: agents/a.lua is in agents/, the "
        .. "project's agent code; agents cannot write there",
      prompts = "EACCES: prompts/x.md is in prompts/, the project's "
        .. "prompts; agents cannot write there",
      lib = "EACCES: lib/deep/x.lua is in lib/, the project's helper "
        .. "modules; agents cannot write there",
      mock = "EACCES: mock/x.lua is in mock/, the mock model's scripts; "
        .. "agents cannot write there",
      ["mock script"] = "EACCES: mock/m.lua is in mock/, the mock "
        .. "model's scripts; agents cannot write there",
      ["dot agents"] = "EACCES: ./agents//x.lua is in agents/, the "
        .. "project's agent code; agents cannot write there",
      ["lua anywhere"] = "EACCES: evals/cases.lua is Lua source; agents "
        .. "cannot write Lua files",
      read = "ok: -- agent code",
    }, r)
    local _, code = h.sh("test -e " .. h.q(dir .. "/agents/x.lua") .. " || "
      .. "test -e " .. h.q(dir .. "/mock/x.lua") .. " || test -e "
      .. h.q(dir .. "/lib/deep"))
    assert.are_not.equal(0, code)
    assert.are.equal("-- agent code", h.slurp(dir .. "/agents/a.lua"))
  end)

  it("follows the project's configured folders, mock script and store",
    function()
    dir = project {
      ["spool.lua"] = 'return { agents_dir = "src/bots", prompts_dir = '
        .. '"src/text", lib_dir = "src/lib/", mock = "tools/fake.lua", '
        .. 'store = "state/threads.db" }',
      ["tools/fake.lua"] = "return {}",
      ["state/threads.db"] = "",
    }
    local r = probe(dir, [[
      try("bots", fs.write, "src/bots/x.lua", "return 1")
      try("text", fs.write, "src/text/x.md", "x")
      try("lib", fs.write, "src/lib/x.lua", "return 1")
      try("fake", fs.write, "tools/fake.lua", "return {}")
      try("store", fs.read, "state/threads.db")
      try("wal", fs.write, "state/threads.db-wal", "")
      try("beside", fs.write, "tools/other.txt", "x")
      try("src", fs.write, "src/notes.txt", "x")
    ]])
    assert.matches("^EACCES: src/bots/x.lua is in src/bots/, the project's "
      .. "agent code", r.bots)
    assert.matches("^EACCES: src/text/x.md is in src/text/", r.text)
    assert.matches("^EACCES: src/lib/x.lua is in src/lib/", r.lib)
    assert.are.equal("EACCES: tools/fake.lua is the mock model's script; "
      .. "agents cannot write it", r.fake)
    assert.are.equal("EACCES: state/threads.db is the engine's store; "
      .. "agents cannot read or write it", r.store)
    assert.matches("^EACCES: state/threads.db%-wal is the engine's store",
      r.wal)
    assert.are.equal("ok", r.beside)
    assert.are.equal("ok", r.src)
  end)

  it("takes a path and data only: no way to pass the loader's flag",
    function()
    dir = project()
    local r = probe(dir, [[
      try("read", fs.read, "/etc/passwd", true)
      try("json", fs.read_json, "/etc/passwd", true)
      try("dots", fs.read, "data/../../x", true)
      try("nul", fs.read, "spool.lua\0.txt")
    ]])
    assert.are.equal("raised: path '/etc/passwd' must be relative to the "
      .. "project folder", r.read)
    assert.are.equal("raised: path '/etc/passwd' must be relative to the "
      .. "project folder", r.json)
    assert.are.equal("raised: path 'data/../../x' leaves the project "
      .. "folder", r.dots)
    assert.matches("^raised: .*NUL", r.nul)
  end)

  it("refuses an agent's tool the same way, and the model is told",
    function()
    dir = project {
      ["spool.lua"] = 'return { mock = "mock/m.lua" }',
      ["mock/m.lua"] = [[return { rules = {
        { when = { turns = 0 }, reply = { tool = "read",
          args = { path = "notes/passwd" } } },
        { when = { turns = 1 }, reply = { tool = "save",
          args = { path = "agents/evil.lua", text = "return 1" } } },
        { reply = { text = "Done." } } } }]],
      ["prompts/reader.md"] = "Read and save files.",
      ["agents/reader.lua"] = [[
        local spool = require "spool"
        return spool.agent { prompt = "reader.md",
          tools = {
            read = { description = "Read a file.", params = { path = "string" },
              run = function(args) return assert(spool.fs.read(args.path)) end },
            save = { description = "Save a file.",
              params = { path = "string", text = "string" },
              run = function(args)
                return assert(spool.fs.write(args.path, args.text))
              end } } }]],
    }
    h.sh("mkdir -p " .. h.q(dir .. "/notes") .. " && ln -s /etc/passwd "
      .. h.q(dir .. "/notes/passwd"))
    local events = h.run_cli(dir, "reader", "go")
    local seen = {}
    for _, ev in ipairs(events) do
      if ev.type == "tool_result" or ev.type == "error" then
        seen[#seen + 1] = json.encode(ev.data)
      end
    end
    seen = table.concat(seen, "\n")
    assert.not_matches("root:", seen)
    assert.matches("ELOOP: notes/passwd: spool.fs does not follow symbolic "
      .. "links", seen, 1, true)
    assert.matches("EACCES: agents/evil.lua is in agents/", seen, 1, true)
    assert.are.equal("", h.slurp(dir .. "/agents/evil.lua"))
  end)
end)
