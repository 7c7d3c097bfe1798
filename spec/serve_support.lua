-- `spool serve` as a process, for specs that drive one or several:
-- serve() starts one on a project, curl() calls its API with its token.
local h = require "spec.support"
local json = require "spool.json"

local M = {}

-- The PostgreSQL database scripts/with-postgres names in SPOOL_DB, if the
-- specs run beside one: then workers share it, else a SQLite file.
M.pg = (os.getenv("SPOOL_DB") or ""):match("^postgres") and
  os.getenv("SPOOL_DB") or nil

-- The store the workers of project `dir` share.
function M.store_of(dir)
  return M.pg or dir .. "/spool.db"
end

-- Rows of a query on that store, as "a|b" lines.
function M.sql(dir, query)
  if M.pg then
    return h.sh(string.format("psql %s -At -F '|' -c %s", h.q(M.pg),
      h.q(query)))
  end
  return h.sh(string.format("sqlite3 %s %s", h.q(dir .. "/spool.db"),
    h.q(query)))
end

local BIN = h.q(h.BIN)

-- Starts `spool serve` (env: "NAME=value ..." or a command that execs the
-- rest; db: the store, else dir/spool.db); returns { pid, port, url, log =
-- function, code = function, stop = function }. opts.name names its files
-- in dir (default "serve": serve.log, serve.pid ...), so several workers
-- share a project; with opts.unreaped its parent never reaps it, so once
-- killed it stays a zombie (as a worker whose supervisor is slow to
-- notice), and code() never answers. The caller hands s.kill to busted's
-- finally (a spec's global, not a module's).
function M.serve(dir, mock, args, env, db, opts)
  opts = opts or {}
  local base = dir .. "/" .. (opts.name or "serve")
  h.remove(base .. ".port")
  -- The caller's environment decides: a SPOOL_TOKEN of the shell does not.
  local run = string.format("echo $$ >%s.pid; exec env -u SPOOL_TOKEN "
    .. "-u SPOOL_HOOK_SECRET %s %s "
    .. "--project %s --base-url %s --db %s serve --port 0 --port-file "
    .. "%s.port %s 2>>%s.log", h.q(base), env or "", BIN, h.q(dir),
    mock.url, h.q(db or dir .. "/spool.db"), h.q(base), args or "",
    h.q(base))
  h.remove(base .. ".code")
  if opts.unreaped then
    -- sleep becomes the worker's parent, and sleep never waits.
    h.sh(string.format("sh -c %s >/dev/null 2>&1 &", h.q(string.format(
      "echo $$ >%s.parent; sh -c %s & exec sleep 600", h.q(base), h.q(run)))))
  else
    h.sh(string.format("(sh -c %s; echo $? >%s.code) >/dev/null 2>&1 &",
      h.q(run), h.q(base)))
  end
  local s = {}
  s.code = function()
    return tonumber(h.slurp(base .. ".code"):match("%d+"))
  end
  local ok, port = pcall(h.wait_for, function()
    return tonumber(h.slurp(base .. ".port"):match("%d+")) or s.code()
      and error("serve exited")
  end, 10000, "serve to listen")
  if not ok then
    error(tostring(port) .. ": " .. h.slurp(base .. ".log"):sub(-2000))
  end
  s.port = port
  -- Every request needs the token: the one the environment gives, else
  -- the project's own file.
  s.token = (env or ""):match("SPOOL_TOKEN=(%S+)")
    or h.slurp(dir .. "/.spool/api-token"):match("%S+")
  s.pid = tonumber(h.slurp(base .. ".pid"):match("%d+"))
  s.url = "http://127.0.0.1:" .. s.port
  s.log = function() return h.slurp(base .. ".log") end
  s.stop = function(sig)
    h.sh("kill -" .. (sig or "TERM") .. " " .. s.pid .. " 2>/dev/null")
    return h.wait_for(s.code, 20000, "serve to exit")
  end
  -- For the spec's finally: the worker (and its parent) gone for good.
  s.kill = function()
    h.sh("kill -9 " .. s.pid .. " 2>/dev/null")
    local parent = opts.unreaped and h.slurp(base .. ".parent"):match("%d+")
    if parent then
      h.sh("kill -9 " .. parent .. " 2>/dev/null")
    else
      -- Reaped, and its exit code written, before a worker of the same
      -- name may start (which would read that code as its own).
      pcall(h.wait_for, s.code, 5000, "the killed worker's exit")
    end
  end
  return s
end

-- spool serve on a copy of a project folder, its model a mock process
-- following the project's `mock_script` (a path inside it), with the
-- environment assignments given. Returns the server (as M.serve) and a
-- function that stops and removes all of it, for the spec's finally.
function M.serve_copy(project, mock_script, env)
  local dir = h.tmpdir()
  h.sh(string.format("cp -R %s/. %s", h.q(project), h.q(dir)))
  local mock = h.mock_process(dir .. "/" .. mock_script)
  local ok, s = pcall(M.serve, dir, mock, nil, env)
  local function stop()
    if ok then
      s.kill()
    end
    mock.stop()
    h.remove(dir)
  end
  if not ok then
    stop()
    error(s, 0)
  end
  return s, stop
end


-- The header that carries serve `s`'s token.
function M.auth(s)
  return "-H " .. h.q("Authorization: Bearer " .. s.token)
end


-- curl: returns status, decoded JSON body (or the text), raw output. The
-- token goes along unless `extra` has an Authorization header of its own.
function M.curl(s, method, path, body, extra)
  extra = extra or ""
  if not extra:match("Authorization:") then
    extra = extra .. " " .. M.auth(s)
  end
  local out = h.sh(string.format("curl -s -m 10 -o - -w '\\n%%{http_code}' "
    .. "-X %s %s %s %s%s", method, body and ("-H 'Content-Type: "
    .. "application/json' --data-binary " .. h.q(body)) or "", extra,
    s.url, path))
  local text, status = out:match("^(.*)\n(%d+)$")
  return tonumber(status), json.decode(text or "") or text, text
end

return M
