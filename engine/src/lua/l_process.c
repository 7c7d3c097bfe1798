/*
 * l_process.c: child processes on the loop (spool.core.process_spawn), for
 * the engine's own use (an MCP server over stdio); agents never reach
 * spool.core. The child's stdin is written, its stdout read a line at a
 * time, its stderr logged a line at a time under its name.
 *
 *   process_spawn{ command = { file, arg... }, env = { "K=V", ... },
 *                  cwd =, name = } -> proc | nil, err
 *   proc:write(text)          -> true | nil, err    (queued, no yield)
 *   proc:read_line(ms)        -> line | nil, err    ("EPIPE" at its end,
 *                                "ETIMEDOUT");
 *                                ms 0: no timeout
 *
 * A child does not keep the loop alive (nor does a read without a
 * timeout): a process whose work is done exits, and its children are
 * killed with it.
 *   proc:flush(ms[, below])   -> true | nil, err     (waits until fewer
 *                                than `below` bytes written are still
 *                                queued: all taken, by default)
 *   proc:wait(ms)             -> exit_status, signal | nil, err
 *   proc:kill([signal])       (SIGTERM by default)
 *   proc:pid()
 *   proc:close()              kills it if it runs (SIGKILL), frees it
 *
 *   process_stdio() -> proc | nil, err
 *     this process's own stdin and stdout, as a proc without a child
 *     (`spool mcp`, an MCP server a client launched): read_line reads
 *     stdin, write writes stdout; kill and wait do nothing. Unlike a
 *     child's, its reading keeps the loop alive, until stdin ends.
 *
 * Bounds: a line of stdout longer than 16 MiB, or more than 16 MiB written
 * and not yet taken by the child, is an error (the child is killed), not a
 * growing buffer. Lines not read yet stop the reading at 1 MiB: the child
 * (or, for stdin, the client) waits on a full pipe until they are.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "spool_int.h"

#define PROCESS_MT "spool.Process"
#define MAX_LINE (16u << 20)
#define MAX_QUEUED (16u << 20)
#define HIGH_WATER (1u << 20)

typedef struct proc proc;

/* What a task waits for. */
enum { WAIT_EXIT, WAIT_LINE, WAIT_FLUSH };

typedef struct waiter {
  spool__op op;
  proc *p;
  spool__task *t;
  uv_timer_t timer;
  int kind;
  size_t below; /* WAIT_FLUSH: until fewer bytes than this are queued */
} waiter;

struct proc {
  spool_engine *e;
  uv_process_t process;
  uv_pipe_t in, out, err;
  int handles; /* open uv handles: the memory goes with the last */
  int running, out_eof, broken, closed;
  int self;   /* process_stdio's: no child, no stderr */
  int paused; /* lines enough wait to be read: reading stopped */
  int64_t exit_status;
  int term_signal;
  size_t queued; /* bytes written, not yet taken */
  spool__buf out_buf, err_buf;
  char *name;
  waiter *reader, *exit_waiter, *flusher;
};

typedef struct box {
  proc *p; /* NULL once closed */
} box;

typedef struct write_req {
  uv_write_t req;
  proc *p;
  size_t len;
  char data[];
} write_req;

static void maybe_free(proc *p) {
  if (p->handles > 0)
    return;
  spool__buf_free(&p->out_buf);
  spool__buf_free(&p->err_buf);
  free(p->name);
  free(p);
}

static void on_closed(uv_handle_t *h) {
  proc *p = h->data;
  p->handles--;
  maybe_free(p);
}

static void close_handle(proc *p, uv_handle_t *h) {
  if (!uv_is_closing(h))
    uv_close(h, on_closed);
}

/* ---- waiters ---- */

static void on_waiter_timer_closed(uv_handle_t *h) {
  free(h->data);
}

static void end_waiter(waiter *w) {
  proc *p = w->p;
  if (p && p->reader == w)
    p->reader = NULL;
  if (p && p->exit_waiter == w)
    p->exit_waiter = NULL;
  if (p && p->flusher == w)
    p->flusher = NULL;
  uv_timer_stop(&w->timer);
  w->timer.data = w;
  uv_close((uv_handle_t *)&w->timer, on_waiter_timer_closed);
}

static void waiter_cancel(spool__op *op) {
  end_waiter((waiter *)op);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_stdout(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

/* The next complete line of stdout, taken from the buffer, or -1. */
static int take_line(proc *p, lua_State *L) {
  char *nl =
      p->out_buf.len ? memchr(p->out_buf.data, '\n', p->out_buf.len) : NULL;
  if (nl == NULL)
    return -1;
  size_t n = (size_t)(nl - p->out_buf.data);
  size_t text = n > 0 && p->out_buf.data[n - 1] == '\r' ? n - 1 : n;
  lua_pushlstring(L, p->out_buf.data, text);
  memmove(p->out_buf.data, nl + 1, p->out_buf.len - n - 1);
  p->out_buf.len -= n + 1;
  if (p->paused && p->out_buf.len <= HIGH_WATER) {
    p->paused = 0;
    uv_read_start((uv_stream_t *)&p->out, on_alloc, on_stdout);
  }
  return 0;
}

/* What a read gives: a line, or why there is none. */
static int line_result(lua_State *L, proc *p) {
  if (take_line(p, L) == 0)
    return 1;
  if (p->broken)
    return spool__push_fail(L,
                            "EIO: %s wrote more than %d bytes without a "
                            "line being read",
                            p->name, (int)MAX_LINE);
  return spool__push_fail(L, "EPIPE: %s closed its output", p->name);
}

static int exit_result(lua_State *L, proc *p) {
  lua_pushinteger(L, (lua_Integer)p->exit_status);
  lua_pushinteger(L, p->term_signal);
  return 2;
}

/* For spool__task_wake_with: the proc comes as argument 1. */
static int push_line(lua_State *L) {
  proc *p = lua_touserdata(L, 1);
  lua_pop(L, 1);
  return line_result(L, p);
}

static int push_exit(lua_State *L) {
  proc *p = lua_touserdata(L, 1);
  lua_pop(L, 1);
  return exit_result(L, p);
}

static int push_timeout(lua_State *L) {
  lua_pop(L, 1);
  return spool__push_fail(L, "ETIMEDOUT: the process did not answer in time");
}

/* Wakes the reader if a line (or the end) is there. */
static void serve_reader(proc *p) {
  waiter *w = p->reader;
  if (w == NULL)
    return;
  int ready = p->out_eof || p->broken ||
              (p->out_buf.len && memchr(p->out_buf.data, '\n', p->out_buf.len));
  if (!ready)
    return;
  spool__task *t = w->t;
  end_waiter(w);
  spool__task_wake_with(t, push_line, p);
}

static void serve_exit_waiter(proc *p) {
  waiter *w = p->exit_waiter;
  if (w == NULL || p->running)
    return;
  spool__task *t = w->t;
  end_waiter(w);
  spool__task_wake_with(t, push_exit, p);
}

static int push_true(lua_State *L) {
  lua_pop(L, 1);
  lua_pushboolean(L, 1);
  return 1;
}

/* Wakes the task that waits for the queue to shrink, once it has. */
static void serve_flusher(proc *p) {
  waiter *w = p->flusher;
  if (w == NULL || p->queued >= w->below)
    return;
  spool__task *t = w->t;
  end_waiter(w);
  spool__task_wake_with(t, push_true, NULL);
}

static void on_wait_timeout(uv_timer_t *timer) {
  waiter *w = timer->data;
  spool__task *t = w->t;
  end_waiter(w);
  spool__task_wake_with(t, push_timeout, NULL);
}

/* ---- the child's pipes ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  static char chunk[65536]; /* loop thread only; consumed in on_read */
  buf->base = chunk;
  buf->len = sizeof chunk;
}

static void on_stdout(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  proc *p = s->data;
  if (n > 0) {
    if (p->out_buf.len + (size_t)n > MAX_LINE) {
      /* A line past the bound: stop the child. */
      p->broken = 1;
      uv_read_stop(s);
      if (p->running && !p->self)
        uv_process_kill(&p->process, SIGKILL);
    } else {
      spool__buf_add(&p->out_buf, buf->base, (size_t)n);
      /* Lines nobody reads yet: the writer waits (the pipe fills) until
       * they are, rather than a buffer growing. */
      if (p->out_buf.len > HIGH_WATER &&
          memchr(p->out_buf.data, '\n', p->out_buf.len) != NULL) {
        p->paused = 1;
        uv_read_stop(s);
      }
    }
  } else if (n < 0) {
    p->out_eof = 1;
    uv_read_stop(s);
  }
  serve_reader(p);
}

/* Each whole line of stderr goes to the log, under the child's name. */
static void on_stderr(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  proc *p = s->data;
  if (n <= 0) {
    if (n < 0)
      uv_read_stop(s);
    return;
  }
  spool__buf_add(&p->err_buf, buf->base, (size_t)n);
  char *nl;
  while (p->err_buf.len &&
         (nl = memchr(p->err_buf.data, '\n', p->err_buf.len)) != NULL) {
    size_t len = (size_t)(nl - p->err_buf.data);
    spool__log(p->e, SPOOL__LOG_INFO, "%s: %.*s", p->name, (int)len,
               p->err_buf.data);
    memmove(p->err_buf.data, nl + 1, p->err_buf.len - len - 1);
    p->err_buf.len -= len + 1;
  }
  if (p->err_buf.len > 4096) { /* a line without an end: logged in part */
    spool__log(p->e, SPOOL__LOG_INFO, "%s: %.*s", p->name, 4096,
               p->err_buf.data);
    spool__buf_clear(&p->err_buf);
  }
}

static void on_child_exit(uv_process_t *h, int64_t status, int signal) {
  proc *p = h->data;
  p->running = 0;
  p->exit_status = status;
  p->term_signal = signal;
  serve_exit_waiter(p);
}

static void on_written(uv_write_t *req, int status) {
  write_req *w = (write_req *)req;
  proc *p = w->p;
  p->queued -= w->len;
  (void)status; /* a child that stopped reading: its read side tells */
  free(w);
  serve_flusher(p);
}

/* ---- the Lua side ---- */

static proc *check_proc(lua_State *L) {
  box *b = luaL_checkudata(L, 1, PROCESS_MT);
  if (b->p == NULL)
    luaL_error(L, "the process was closed");
  return b->p;
}

static int proc_write(lua_State *L) {
  proc *p = check_proc(L);
  size_t n;
  const char *text = luaL_checklstring(L, 2, &n);
  if (!p->running || uv_is_closing((uv_handle_t *)&p->in))
    return spool__push_fail(L, "EPIPE: %s is not running", p->name);
  if (p->queued + n > MAX_QUEUED)
    return spool__push_fail(L, "ENOBUFS: %s is not reading its input", p->name);
  write_req *w = malloc(sizeof *w + (n ? n : 1));
  if (w == NULL)
    return luaL_error(L, "out of memory");
  memcpy(w->data, text, n);
  w->p = p;
  w->len = n;
  uv_buf_t buf = uv_buf_init(w->data, (unsigned)n);
  int rc = uv_write(&w->req, (uv_stream_t *)&p->in, &buf, 1, on_written);
  if (rc != 0) {
    free(w);
    return spool__push_fail(L, "EPIPE: cannot write to %s: %s", p->name,
                            uv_strerror(rc));
  }
  p->queued += n;
  lua_pushboolean(L, 1);
  return 1;
}

/* Starts a wait of one kind. */
static int start_wait(lua_State *L, proc *p, int kind, size_t below) {
  static const char *const names[] = {"proc:wait", "proc:read_line",
                                      "proc:flush"};
  waiter **slot = kind == WAIT_LINE   ? &p->reader
                  : kind == WAIT_EXIT ? &p->exit_waiter
                                      : &p->flusher;
  lua_Integer ms = luaL_optinteger(L, 2, 30000);
  spool__task *t = spool__task_check(L, names[kind]);
  if (*slot != NULL)
    return luaL_error(L, "another task already waits on %s", p->name);
  waiter *w = calloc(1, sizeof *w);
  if (w == NULL)
    return luaL_error(L, "out of memory");
  w->op.cancel = waiter_cancel;
  w->op.interruptible = 1;
  w->p = p;
  w->t = t;
  w->kind = kind;
  w->below = below;
  uv_timer_init(p->e->loop, &w->timer);
  w->timer.data = w;
  if (ms > 0)
    uv_timer_start(&w->timer, on_wait_timeout, (uint64_t)ms, 0);
  *slot = w;
  return spool__task_wait(L, t, &w->op);
}

static int proc_read_line(lua_State *L) {
  proc *p = check_proc(L);
  if (take_line(p, L) == 0)
    return 1;
  if (p->out_eof || p->broken)
    return line_result(L, p);
  return start_wait(L, p, WAIT_LINE, 0);
}

/* proc:flush(ms[, below]): waits until fewer than `below` bytes written
 * are still queued (default 1: all of them taken). */
static int proc_flush(lua_State *L) {
  proc *p = check_proc(L);
  lua_Integer below = luaL_optinteger(L, 3, 1);
  luaL_argcheck(L, below >= 1, 3, "must be 1 or more");
  if (p->queued < (size_t)below) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (!p->running)
    return spool__push_fail(L, "EPIPE: %s is not running", p->name);
  return start_wait(L, p, WAIT_FLUSH, (size_t)below);
}

static int proc_wait(lua_State *L) {
  proc *p = check_proc(L);
  if (!p->running)
    return exit_result(L, p);
  return start_wait(L, p, WAIT_EXIT, 0);
}

static int proc_kill(lua_State *L) {
  proc *p = check_proc(L);
  int sig = (int)luaL_optinteger(L, 2, SIGTERM);
  if (p->running && !p->self)
    uv_process_kill(&p->process, sig);
  return 0;
}

static int proc_pid(lua_State *L) {
  proc *p = check_proc(L);
  lua_pushinteger(L, p->self ? uv_os_getpid() : p->process.pid);
  return 1;
}

static int push_closed(lua_State *L) {
  lua_pop(L, 1);
  return spool__push_fail(L, "EPIPE: the process was closed");
}

/* Ends a wait; the task waiting, if `wake`, with an error. */
static void end_wait(waiter *w, int wake) {
  if (w == NULL)
    return;
  spool__task *t = w->t;
  end_waiter(w);
  if (wake)
    spool__task_wake_with(t, push_closed, NULL);
}

/* Closes the process; `wake`: the tasks waiting on it are told (a close
 * from Lua), else they are being torn down with the engine (a __gc). */
static void close_proc(box *b, int wake) {
  proc *p = b->p;
  if (p == NULL)
    return;
  b->p = NULL;
  p->closed = 1;
  end_wait(p->reader, wake);
  end_wait(p->exit_waiter, wake);
  end_wait(p->flusher, wake);
  close_handle(p, (uv_handle_t *)&p->in);
  close_handle(p, (uv_handle_t *)&p->out);
  if (p->self)
    return;
  close_handle(p, (uv_handle_t *)&p->err);
  /* Killed and closed at once: the engine may be going, and a handle left
   * for the exit would outlive it. (A child killed here stays a zombie
   * until spool exits; one that exited on its own was reaped.) */
  if (p->running)
    uv_process_kill(&p->process, SIGKILL);
  close_handle(p, (uv_handle_t *)&p->process);
}
static int proc_close(lua_State *L) {
  close_proc(luaL_checkudata(L, 1, PROCESS_MT), 1);
  return 0;
}

static int proc_gc(lua_State *L) {
  close_proc(luaL_checkudata(L, 1, PROCESS_MT), 0);
  return 0;
}

/* A list of strings at t[field] as a NULL-terminated array; its strings
 * stay on the Lua stack (in the table) while the array is used. */
static char **string_list(lua_State *L, int t, const char *field, int need) {
  lua_getfield(L, t, field);
  if (lua_isnil(L, -1) && !need) {
    lua_pop(L, 1);
    return NULL;
  }
  luaL_argcheck(L, lua_istable(L, -1), 1, field);
  int n = (int)luaL_len(L, -1);
  luaL_argcheck(L, n >= (need ? 1 : 0) && n < 4096, 1, field);
  char **list = lua_newuserdatauv(L, sizeof *list * (size_t)(n + 1), 0);
  for (int i = 0; i < n; i++) {
    lua_geti(L, -2, i + 1);
    list[i] = (char *)luaL_checkstring(L, -1);
    lua_pop(L, 1); /* the string stays in the table */
  }
  list[n] = NULL;
  lua_remove(L, -2); /* the list's userdata stays until the call returns */
  return list;
}

static int l_process_spawn(lua_State *L) {
  spool_engine *e = lua_touserdata(L, lua_upvalueindex(1));
  luaL_checktype(L, 1, LUA_TTABLE);
  char **args = string_list(L, 1, "command", 1);
  char **env = string_list(L, 1, "env", 0);
  lua_getfield(L, 1, "cwd");
  const char *cwd = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "name");
  const char *name = luaL_optstring(L, -1, args[0]);
  box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->p = NULL;
  luaL_setmetatable(L, PROCESS_MT);
  proc *p = calloc(1, sizeof *p);
  if (p == NULL || (p->name = strdup(name)) == NULL) {
    free(p);
    return luaL_error(L, "out of memory");
  }
  p->e = e;
  uv_pipe_init(e->loop, &p->in, 0);
  uv_pipe_init(e->loop, &p->out, 0);
  uv_pipe_init(e->loop, &p->err, 0);
  p->in.data = p->out.data = p->err.data = p->process.data = p;
  p->handles = 3;
  uv_stdio_container_t stdio[3] = {
      {.flags = UV_CREATE_PIPE | UV_READABLE_PIPE,
       .data.stream = (uv_stream_t *)&p->in},
      {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE,
       .data.stream = (uv_stream_t *)&p->out},
      {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE,
       .data.stream = (uv_stream_t *)&p->err},
  };
  uv_process_options_t o = {0};
  o.exit_cb = on_child_exit;
  o.file = args[0];
  o.args = args;
  o.env = env;
  o.cwd = cwd;
  o.stdio = stdio;
  o.stdio_count = 3;
  int rc = uv_spawn(e->loop, &p->process, &o);
  if (rc != 0) {
    /* uv_spawn initialised the process handle even so: close it too. */
    p->handles++;
    b->p = p;
    close_proc(b, 0);
    return spool__push_fail(L, "ENOENT: cannot start %s (%s): %s", name,
                            args[0], uv_strerror(rc));
  }
  p->handles++;
  p->running = 1;
  uv_unref((uv_handle_t *)&p->process);
  uv_unref((uv_handle_t *)&p->in);
  uv_unref((uv_handle_t *)&p->out);
  uv_unref((uv_handle_t *)&p->err);
  uv_read_start((uv_stream_t *)&p->out, on_alloc, on_stdout);
  uv_read_start((uv_stream_t *)&p->err, on_alloc, on_stderr);
  b->p = p;
  return 1;
}

static int l_process_stdio(lua_State *L) {
  spool_engine *e = lua_touserdata(L, lua_upvalueindex(1));
  box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->p = NULL;
  luaL_setmetatable(L, PROCESS_MT);
  proc *p = calloc(1, sizeof *p);
  if (p == NULL || (p->name = strdup("stdin")) == NULL) {
    free(p);
    return luaL_error(L, "out of memory");
  }
  p->e = e;
  p->self = 1;
  uv_pipe_init(e->loop, &p->in, 0);
  uv_pipe_init(e->loop, &p->out, 0);
  p->in.data = p->out.data = p;
  p->handles = 2;
  p->running = 1;
  b->p = p;
  /* A file (spool mcp < requests.json) cannot be polled: libuv would
   * abort the process on it. */
  int rc = 0;
  for (int fd = 0; fd <= 1; fd++) {
    uv_handle_type kind = uv_guess_handle(fd);
    if (kind != UV_NAMED_PIPE && kind != UV_TTY)
      rc = UV_EINVAL;
  }
  if (rc == 0)
    rc = uv_pipe_open(&p->out, 0);
  if (rc == 0)
    rc = uv_pipe_open(&p->in, 1);
  if (rc == 0)
    rc = uv_read_start((uv_stream_t *)&p->out, on_alloc, on_stdout);
  if (rc != 0) {
    close_proc(b, 0);
    return spool__push_fail(L,
                            "EINVAL: stdin and stdout must be pipes (or a "
                            "terminal): %s",
                            uv_strerror(rc));
  }
  return 1;
}

void spool__open_process(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"write", proc_write}, {"read_line", proc_read_line},
      {"wait", proc_wait},   {"kill", proc_kill},
      {"flush", proc_flush}, {"pid", proc_pid},
      {"close", proc_close}, {NULL, NULL},
  };
  spool__class(L, PROCESS_MT, methods, proc_gc, proc_close);
  lua_pop(L, 1);
  lua_pushlightuserdata(L, spool__engine_of(L));
  lua_pushcclosure(L, l_process_spawn, 1);
  lua_setfield(L, -2, "process_spawn");
  lua_pushlightuserdata(L, spool__engine_of(L));
  lua_pushcclosure(L, l_process_stdio, 1);
  lua_setfield(L, -2, "process_stdio");
}
