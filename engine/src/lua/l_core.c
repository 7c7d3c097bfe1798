/*
 * l_core.c: spool.core, the engine as Lua sees it. Thin bindings only: each
 * function checks its arguments, calls into C, and returns. What agents call
 * is the Lua library in lua/spool/; this module is its foundation and is
 * private to it.
 *
 *   spawn(f, ...)         -> task id      run f(...) as a task of its own
 *   sleep(ms)                             wait, letting other runs proceed
 *   now()                 -> ms           monotonic clock, a float
 *   time()                -> ms           wall clock since the epoch, integer
 *   emit(thread, agent, type, seq, depth, json, text)  an event for the host
 *   listening()           -> boolean      does the host want events?
 *   log(level, msg)                       "error" | "warn" | "info" | "debug"
 *   sha256(s)             -> hex
 *   hmac_sha256(key, s)   -> hex          signatures of webhooks
 *   equal(a, b)           -> boolean      in time independent of the bytes
 *   random_id()           -> 26 chars     time-sortable (ULID layout)
 *   getenv(name)          -> string | nil
 *   private_token(path)   -> token | nil, err   the token in a file only
 *                            its owner may read, made there if missing
 *   project()             -> the project folder, absolute
 *   stats()               -> { tasks, http_pending, lua_kb, store_pending,
 *                              store_transactions, store_appends }
 *   rusage()              -> { user_s, sys_s, max_rss_kb, rss_kb }
 *   in_task()             -> boolean      may the caller yield?
 *   task_id()             -> id | nil     the calling task's
 *   interrupt(id, why)    -> boolean      wake a task from an HTTP call or
 *                                         a sleep with nil, why
 *   version               the engine's version, "x.y.z"
 * plus http_request and http_stream (l_http.c), sse (l_sse.c), the
 * tracing functions (l_trace.c), ed25519_*
 * (l_ed25519.c), listen
 * (l_server.c), read_file / write_file
 * (l_fs.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/http.h"
#include "base/errors.h"
#include "spool_int.h"
#include "io/store.h"

static spool_engine *engine(lua_State *L) {
  return lua_touserdata(L, lua_upvalueindex(1));
}

/* A task started from Lua: its errors are logged, its results dropped. */
static void on_spawned_done(spool__task *t, int how, int nres, void *ud) {
  (void)nres;
  (void)ud;
  if (how == SPOOL__TASK_ERROR)
    spool__log(t->e, SPOOL__LOG_ERROR, "task %llu failed: %s", t->id,
               lua_tostring(t->e->L, -1));
}

static int l_core_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  spool__task *t =
      spool__task_spawn(engine(L), L, lua_gettop(L) - 1, on_spawned_done, 0);
  lua_pushinteger(L, (lua_Integer)t->id);
  return 1;
}

/* ---- sleep ---- */

typedef struct sleep_op {
  spool__op op;
  uv_timer_t timer;
  spool__task *t;
} sleep_op;

static void on_timer_closed(uv_handle_t *h) {
  free(h->data);
}

static void on_sleep_done(uv_timer_t *timer) {
  sleep_op *s = timer->data;
  spool__task_wake(s->t, 0);
  uv_close((uv_handle_t *)&s->timer, on_timer_closed);
}

static void sleep_cancel(spool__op *op) {
  sleep_op *s = (sleep_op *)op;
  uv_close((uv_handle_t *)&s->timer, on_timer_closed);
}

static int l_core_sleep(lua_State *L) {
  lua_Number ms = luaL_checknumber(L, 1);
  luaL_argcheck(L, ms >= 0, 1, "must not be negative");
  spool__task *t = spool__task_check(L, "spool.sleep");
  sleep_op *s = calloc(1, sizeof *s);
  if (s == NULL)
    return luaL_error(L, "out of memory");
  s->op.cancel = sleep_cancel;
  s->op.interruptible = 1;
  s->t = t;
  uv_timer_init(engine(L)->loop, &s->timer);
  s->timer.data = s;
  uv_timer_start(&s->timer, on_sleep_done, (uint64_t)ms, 0);
  return spool__task_wait(L, t, &s->op);
}

/* ---- clocks, ids, hashes ---- */

static int l_core_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e6);
  return 1;
}

/* Wall-clock ms. Tests move it with $SPOOL_TEST_TIME_OFFSET_MS, so that
 * deadlines and leases come due without waiting. */
static int l_core_time(lua_State *L) {
  uv_timeval64_t tv;
  uv_gettimeofday(&tv);
  lua_pushinteger(L, (lua_Integer)tv.tv_sec * 1000 + tv.tv_usec / 1000 +
                         engine(L)->clock_offset_ms);
  return 1;
}

/* Has a process that exists already ended? A zombie (killed, not yet
 * reaped by its parent) still answers kill(pid, 0): a worker restarted
 * the moment its predecessor was killed saw it alive and left its threads
 * to a lease that never lapsed. */
static int process_ended(pid_t pid) {
  char path[64], stat[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "re");
  if (f == NULL)
    return 0; /* no /proc: kill's answer stands */
  size_t n = fread(stat, 1, sizeof stat - 1, f);
  fclose(f);
  stat[n] = '\0';
  const char *state = strrchr(stat, ')'); /* the name may hold anything */
  return state && (state[1] == ' ') && (state[2] == 'Z' || state[2] == 'X');
}

/* Is a process of this host alive? For leases left by a killed process. */
static int l_core_process_alive(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  int alive = pid > 0 && (kill((pid_t)pid, 0) == 0 || errno != ESRCH);
  lua_pushboolean(L, alive && !process_ended((pid_t)pid));
  return 1;
}

/* "host:pid": who holds a lease. */
static int l_core_process_id(lua_State *L) {
  char host[256];
  size_t n = sizeof host;
  if (uv_os_gethostname(host, &n) != 0)
    snprintf(host, sizeof host, "localhost");
  lua_pushfstring(L, "%s:%d", host, (int)uv_os_getpid());
  return 1;
}

static int l_core_sha256(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!EVP_Digest(s, n, md, &len, EVP_sha256(), NULL))
    return luaL_error(L, "sha256 failed");
  spool__push_hex(L, md, len);
  return 1;
}

static int l_core_hmac_sha256(lua_State *L) {
  size_t klen, n;
  const char *key = luaL_checklstring(L, 1, &klen);
  const char *s = luaL_checklstring(L, 2, &n);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)s, n, md,
           &len) == NULL)
    return luaL_error(L, "hmac_sha256 failed");
  spool__push_hex(L, md, len);
  return 1;
}

/* Tokens and signatures are compared without an early exit, so the time
 * taken says nothing about how much of a guess was right. */
static int l_core_equal(lua_State *L) {
  size_t na, nb;
  const char *a = luaL_checklstring(L, 1, &na);
  const char *b = luaL_checklstring(L, 2, &nb);
  lua_pushboolean(L, na == nb && CRYPTO_memcmp(a, b, na) == 0);
  return 1;
}

/* 48 bits of milliseconds then 80 random bits, in Crockford's base32: ids
 * sort by creation time and never collide in practice. */
static int l_core_random_id(lua_State *L) {
  static const char digits[] = "0123456789abcdefghjkmnpqrstvwxyz";
  unsigned char bytes[16];
  uv_timeval64_t tv;
  uv_gettimeofday(&tv);
  uint64_t ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
  for (int i = 0; i < 6; i++)
    bytes[i] = (unsigned char)(ms >> (8 * (5 - i)));
  if (RAND_bytes(bytes + 6, 10) != 1)
    return luaL_error(L, "no randomness available");
  char out[26];
  /* 128 bits -> 26 base32 digits, most significant first. */
  for (int i = 25; i >= 0; i--) {
    int bit = (25 - i) * 5; /* bit offset from the least significant end */
    unsigned v = 0;
    for (int k = 0; k < 5; k++) {
      int b = bit + k;
      if (b < 128 && (bytes[15 - b / 8] >> (b % 8)) & 1)
        v |= 1u << k;
    }
    out[i] = digits[v];
  }
  lua_pushlstring(L, out, sizeof out);
  return 1;
}

static int l_core_getenv(lua_State *L) {
  const char *v = getenv(luaL_checkstring(L, 1));
  if (v && *v)
    lua_pushstring(L, v);
  else
    lua_pushnil(L);
  return 1;
}

/* ---- the control API's token ---- */

/* stack: -> nil, "ECODE: path: why" */
static int token_error(lua_State *L, const char *path, const char *why) {
  return spool__push_fail(L, "EACCES: %s: %s", path, why);
}

/* Reads the token in fd (a file only its owner may read). */
static int read_token(lua_State *L, int fd, const char *path) {
  struct stat st;
  char buf[257];
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
    return token_error(L, path, "not a regular file");
  if (st.st_uid != geteuid())
    return token_error(L, path, "it belongs to another user");
  if (st.st_mode & 077)
    return token_error(L, path,
                       "others may read it: make it private (chmod 600)");
  ssize_t n = read(fd, buf, sizeof buf - 1);
  while (n > 0 &&
         (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
    n--;
  if (n < 16)
    return token_error(L, path, "holds no token (16 to 256 characters)");
  lua_pushlstring(L, buf, (size_t)n);
  return 1;
}

/* Blocking I/O on a small file, once: when serving starts, or for the
 * command line. Two processes starting at once agree on one token. */
static int l_core_private_token(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  const char *slash = strrchr(path, '/');
  if (slash && slash != path) {
    lua_pushlstring(L, path, (size_t)(slash - path));
    mkdir(lua_tostring(L, -1), 0700); /* if missing; errors show below */
    lua_pop(L, 1);
  }
  for (int attempt = 0; attempt < 2; attempt++) {
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
      int n = read_token(L, fd, path);
      close(fd);
      return n;
    }
    if (errno != ENOENT)
      return token_error(L, path, strerror(errno));
    unsigned char bytes[32];
    if (RAND_bytes(bytes, sizeof bytes) != 1)
      return token_error(L, path, "no randomness for a token");
    char hex[65];
    for (int i = 0; i < 32; i++)
      snprintf(hex + 2 * i, 3, "%02x", bytes[i]);
    /* Written whole under a name of its own, then linked into place: a
     * process that reads it never sees it half written, and of two made
     * at once the first linked wins. */
    lua_pushfstring(L, "%s.%d.new", path, (int)getpid());
    const char *tmp = lua_tostring(L, -1);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
      return token_error(L, path, strerror(errno));
    int ok =
        write(fd, hex, 64) == 64 && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    close(fd);
    int linked = ok && link(tmp, path) == 0;
    int raced = ok && !linked && errno == EEXIST;
    unlink(tmp);
    lua_pop(L, 1);
    if (raced)
      continue; /* another process made it first: read theirs */
    if (!linked)
      return token_error(L, path, "cannot write the token");
    lua_pushlstring(L, hex, 64);
    return 1;
  }
  return token_error(L, path, "cannot read or make the token");
}

static int l_core_project(lua_State *L) {
  lua_pushstring(L, engine(L)->project_abs);
  return 1;
}

/* ---- events and logs ---- */

static int l_core_emit(lua_State *L) {
  spool_engine *e = engine(L);
  spool__event_fields f;
  f.thread = luaL_checkstring(L, 1);
  f.agent = luaL_checkstring(L, 2);
  f.type = luaL_checkstring(L, 3);
  f.seq = (long long)luaL_checkinteger(L, 4);
  f.depth = (int)luaL_checkinteger(L, 5);
  f.json = luaL_checklstring(L, 6, &f.json_len);
  f.text = luaL_checklstring(L, 7, &f.text_len);
  if (spool__events_queue(e, &f) != 0)
    return luaL_error(L, "out of memory");
  return 0;
}

static int l_core_listening(lua_State *L) {
  lua_pushboolean(L, engine(L)->on_event != NULL);
  return 1;
}

static int l_core_log(lua_State *L) {
  static const char *const levels[] = {"error", "warn", "info", "debug", NULL};
  int level = luaL_checkoption(L, 1, NULL, levels);
  spool__log(engine(L), (spool__log_level)level, "%s", luaL_checkstring(L, 2));
  return 0;
}

/* core.say(level, msg): spool_engine_say, for the command scripts. */
static int l_core_say(lua_State *L) {
  if (spool__say(engine(L), luaL_checkstring(L, 1), luaL_checkstring(L, 2)))
    return luaL_argerror(L, 1, "\"error\", \"warn\", \"info\" or \"debug\"");
  return 0;
}

static int l_core_stats(lua_State *L) {
  spool_engine *e = engine(L);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, e->sched.ntasks);
  lua_setfield(L, -2, "tasks");
  lua_pushinteger(L, spool__http_pending(e->http));
  lua_setfield(L, -2, "http_pending");
  lua_pushinteger(L, lua_gc(L, LUA_GCCOUNT, 0));
  lua_setfield(L, -2, "lua_kb");
  long long transactions, appends;
  spool__store_counts(e->store, &transactions, &appends);
  lua_pushinteger(L, spool__store_pending(e->store));
  lua_setfield(L, -2, "store_pending");
  lua_pushinteger(L, (lua_Integer)transactions);
  lua_setfield(L, -2, "store_transactions");
  lua_pushinteger(L, (lua_Integer)appends);
  lua_setfield(L, -2, "store_appends");
  return 1;
}

/* The process's CPU time and memory, for benchmarks (libuv's getrusage
 * and resident set). */
static int l_core_rusage(lua_State *L) {
  uv_rusage_t ru;
  size_t rss = 0;
  if (uv_getrusage(&ru) != 0)
    return luaL_error(L, "getrusage failed");
  uv_resident_set_memory(&rss);
  lua_createtable(L, 0, 4);
  lua_pushnumber(L, (lua_Number)ru.ru_utime.tv_sec +
                        (lua_Number)ru.ru_utime.tv_usec / 1e6);
  lua_setfield(L, -2, "user_s");
  lua_pushnumber(L, (lua_Number)ru.ru_stime.tv_sec +
                        (lua_Number)ru.ru_stime.tv_usec / 1e6);
  lua_setfield(L, -2, "sys_s");
  lua_pushinteger(L, (lua_Integer)ru.ru_maxrss); /* KiB on Linux */
  lua_setfield(L, -2, "max_rss_kb");
  lua_pushinteger(L, (lua_Integer)(rss / 1024));
  lua_setfield(L, -2, "rss_kb");
  return 1;
}

/* Live references in the registry, for tests that check none leak. */
static int l_core_registry_size(lua_State *L) {
  lua_Integer n = 0;
  lua_pushnil(L);
  while (lua_next(L, LUA_REGISTRYINDEX)) {
    /* A released reference's slot holds an integer, its free-list link;
     * the engine never keeps a number in the registry. */
    n += lua_type(L, -1) != LUA_TNUMBER;
    lua_pop(L, 1);
  }
  lua_pushinteger(L, n);
  return 1;
}

static int l_core_task_id(lua_State *L) {
  spool__task *t = spool__task_current(L);
  if (t == NULL)
    return 0;
  lua_pushinteger(L, (lua_Integer)t->id);
  return 1;
}

static int l_core_interrupt(lua_State *L) {
  lua_Integer id = luaL_checkinteger(L, 1);
  const char *why = luaL_checkstring(L, 2);
  lua_pushboolean(
      L, spool__task_interrupt(engine(L), (unsigned long long)id, why));
  return 1;
}

static int l_core_in_task(lua_State *L) {
  spool__task *t = spool__task_current(L);
  lua_pushboolean(L, t != NULL && t->co == L && lua_isyieldable(L));
  return 1;
}

/* core.errors: { ENAME = { code = "EIO" (spool.h's), status = 503, api =
 * "store_failed", message } } for every name errors.h knows. */
static void push_error(const spool__error *err, void *ud) {
  lua_State *L = ud;
  lua_createtable(L, 0, 4);
  lua_pushstring(L, spool_errname(err->code));
  lua_setfield(L, -2, "code");
  lua_pushinteger(L, err->status);
  lua_setfield(L, -2, "status");
  lua_pushstring(L, err->api);
  lua_setfield(L, -2, "api");
  lua_pushstring(L, err->message ? err->message : spool_strerror(err->code));
  lua_setfield(L, -2, "message");
  lua_setfield(L, -2, err->name);
}

static void push_errors(lua_State *L) {
  lua_newtable(L);
  spool__error_each(push_error, L);
}

int luaopen_spool_core(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"spawn", l_core_spawn},
      {"sleep", l_core_sleep},
      {"now", l_core_now},
      {"time", l_core_time},
      {"sha256", l_core_sha256},
      {"hmac_sha256", l_core_hmac_sha256},
      {"equal", l_core_equal},
      {"random_id", l_core_random_id},
      {"getenv", l_core_getenv},
      {"private_token", l_core_private_token},
      {"project", l_core_project},
      {"emit", l_core_emit},
      {"listening", l_core_listening},
      {"log", l_core_log},
      {"say", l_core_say},
      {"stats", l_core_stats},
      {"rusage", l_core_rusage},
      {"in_task", l_core_in_task},
      {"task_id", l_core_task_id},
      {"interrupt", l_core_interrupt},
      {"process_alive", l_core_process_alive},
      {"process_id", l_core_process_id},
      {"registry_size", l_core_registry_size},
      {NULL, NULL},
  };
  spool_engine *e = spool__engine_of(L);
  lua_newtable(L);
  lua_pushlightuserdata(L, e);
  luaL_setfuncs(L, fns, 1);
  spool__open_http(L);
  spool__open_server(L);
  spool__open_fs(L);
  spool__open_store(L);
  spool__open_host(L);
  spool__open_watch(L);
  spool__open_notify(L);
  spool__open_process(L);
  spool__open_cond(L);
  spool__open_sse(L);
  spool__open_trace(L);
  spool__open_ed25519(L);
  spool__open_limits(L);
  spool__open_window(L);
  spool__open_window_walk(L);
  spool__open_thread(L);
  spool__open_wire(L);
  lua_pushliteral(L, SPOOL_VERSION);
  lua_setfield(L, -2, "version");
  push_errors(L);
  lua_setfield(L, -2, "errors");
  return 1;
}
