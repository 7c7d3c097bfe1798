/*
 * engine.c: a spool_engine's life — options, opening (the Lua state and its
 * bootstrap), the loop, errors and logs, and freeing. The host's events
 * are events.c's; the calls that cross into the Lua library are calls.c's.
 */
#define _GNU_SOURCE /* dladdr */
#include <assert.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lualib.h>

#include "base/errors.h"
#include "io/http.h"
#include "io/otlp.h"
#include "codec/json.h"
#include "base/lua_heap.h"
#include "spool_int.h"
#include "io/store.h"

#define ENGINE_KEY "spool.engine"

const char *spool_version(void) {
  return SPOOL_VERSION;
}

int spool_version_num(void) {
  return SPOOL_VERSION_NUM;
}

/* ---- errors and logs ---- */

int spool__fail(spool_engine *e, int code, const char *fmt, ...) {
  va_list ap;
  char msg[1024];
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  spool__buf_clear(&e->errmsg);
  spool__buf_adds(&e->errmsg, msg);
  return code;
}

const char *spool_engine_errmsg(const spool_engine *e) {
  if (e == NULL)
    return "no engine (NULL)";
  return e->errmsg.data ? e->errmsg.data : "";
}

static const char *const log_level_names[] = {"error", "warn", "info", "debug"};

/* msg as a JSON string, each byte that is not UTF-8 (a file name, a
 * message cut short) written as U+FFFD, so that the line still goes out. */
static int write_text(spool__buf *b, const char *msg, size_t len) {
  if (spool__utf8_valid_prefix(msg, len) == len)
    return spool__json_write_string(b, msg, len);
  spool__buf clean = {0};
  const unsigned char *p = (const unsigned char *)msg, *end = p + len;
  int rc = 0;
  while (p < end && rc == 0) {
    size_t n = spool__utf8_seq(p, end);
    rc = n ? spool__buf_add(&clean, p, n) : spool__utf8_put(&clean, 0xFFFD);
    p += n ? n : 1;
  }
  if (rc == 0)
    rc = spool__json_write_string(b, clean.data, clean.len);
  spool__buf_free(&clean);
  return rc;
}

/* One line on stderr: "spool: [level: ]message", or with log_format
 * "json" one object {"time", "level", "msg"} (UTC, milliseconds) for log
 * collectors. Each line is written with one call, so lines of concurrent
 * writers do not interleave. */
static void write_line(const spool_engine *e, spool__log_level level,
                       int text_level, const char *msg, size_t len) {
  spool__buf line = {0};
  int rc;
  if (e->log_json) {
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    time_t secs = (time_t)tv.tv_sec;
    struct tm tm;
    gmtime_r(&secs, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    rc = spool__buf_printf(&line,
                           "{\"time\":\"%s.%03dZ\",\"level\":\"%s\","
                           "\"msg\":",
                           when, (int)(tv.tv_usec / 1000),
                           log_level_names[level]);
    if (rc == 0)
      rc = write_text(&line, msg, len);
    if (rc == 0)
      rc = spool__buf_adds(&line, "}\n");
  } else {
    rc = spool__buf_printf(&line, "spool: %s%s%.*s\n",
                           text_level ? log_level_names[level] : "",
                           text_level ? ": " : "", (int)len, msg);
  }
  if (rc == 0)
    fwrite(line.data, 1, line.len, stderr);
  spool__buf_free(&line);
}

void spool__log(spool_engine *e, spool__log_level level, const char *fmt, ...) {
  if (level > e->log_level)
    return;
  spool__buf msg = {0};
  va_list ap;
  va_start(ap, fmt);
  int rc = spool__buf_vprintf(&msg, fmt, ap);
  va_end(ap);
  if (rc == 0)
    write_line(e, level, 1, msg.data, msg.len);
  spool__buf_free(&msg);
}

int spool__say(const spool_engine *e, const char *level, const char *msg) {
  for (int i = 0; i < 4; i++)
    if (level && strcmp(level, log_level_names[i]) == 0) {
      write_line(e, (spool__log_level)i, 0, msg, strlen(msg));
      return 0;
    }
  return SPOOL_EINVAL;
}

int spool_engine_say(spool_engine *e, const char *level, const char *msg) {
  if (e == NULL || msg == NULL)
    return SPOOL_EINVAL;
  if (spool__say(e, level, msg) != 0)
    return spool__fail(e, SPOOL_EINVAL,
                       "level is \"error\", \"warn\", \"info\" or "
                       "\"debug\"");
  return 0;
}

spool_engine *spool__engine_of(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, ENGINE_KEY);
  spool_engine *e = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return e;
}

/* Adds a traceback to string errors; other error values pass unchanged, so
 * a script's os.exit sentinel reaches its caller intact. */
static int msghandler(lua_State *L) {
  if (lua_type(L, 1) == LUA_TSTRING)
    luaL_traceback(L, L, lua_tostring(L, 1), 1);
  else if (lua_isnoneornil(L, 1))
    luaL_traceback(L, L, "(error with no message)", 1);
  return 1;
}

int spool__pcall(lua_State *L, int nargs, int nres) {
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  int st = lua_pcall(L, nargs, nres, base);
  lua_remove(L, base);
  return st;
}

/* ---- options ---- */

int spool_engine_new(spool_engine **out) {
  if (out == NULL)
    return SPOOL_EINVAL;
  spool_engine *e = calloc(1, sizeof *e);
  *out = e;
  if (e == NULL)
    return SPOOL_ENOMEM;
  e->api_ref = LUA_NOREF;
  e->log_level = SPOOL__LOG_WARN;
  /* Read now, so a host's lines before spool_engine_open agree with the
   * engine's; "log_format" overrides it. */
  const char *format = getenv("SPOOL_LOG_FORMAT");
  e->log_json = format && strcmp(format, "json") == 0;
  return 0;
}

static int set_string(spool_engine *e, char **slot, const char *value) {
  char *copy = NULL;
  if (value && (copy = strdup(value)) == NULL)
    return spool__fail(e, SPOOL_ENOMEM, "out of memory");
  free(*slot);
  *slot = copy;
  return 0;
}

static int parse_log_level(const char *v, spool__log_level *out) {
  for (int i = 0; i < 4; i++)
    if (strcmp(v, log_level_names[i]) == 0) {
      *out = (spool__log_level)i;
      return 0;
    }
  return -1;
}

int spool_engine_set(spool_engine *e, const char *key, const char *value) {
  if (e == NULL || key == NULL)
    return SPOOL_EINVAL;
  if (e->opened)
    return spool__fail(e, SPOOL_ESTATE,
                       "option '%s' must be set before spool_engine_open", key);
  if (strcmp(key, "project") == 0)
    return set_string(e, &e->opt_project, value);
  if (strcmp(key, "lua_dir") == 0)
    return set_string(e, &e->opt_lua_dir, value);
  if (strcmp(key, "model") == 0)
    return set_string(e, &e->opt_model, value);
  if (strcmp(key, "base_url") == 0)
    return set_string(e, &e->opt_base_url, value);
  if (strcmp(key, "api_key_env") == 0)
    return set_string(e, &e->opt_api_key_env, value);
  if (strcmp(key, "store") == 0)
    return set_string(e, &e->opt_store, value);
  if (strcmp(key, "agents_dir") == 0)
    return set_string(e, &e->opt_agents_dir, value);
  if (strcmp(key, "prompts_dir") == 0)
    return set_string(e, &e->opt_prompts_dir, value);
  if (strcmp(key, "mock") == 0 || strcmp(key, "watch") == 0 ||
      strcmp(key, "stream") == 0) {
    if (value && strcmp(value, "on") != 0 && strcmp(value, "off") != 0)
      return spool__fail(e, SPOOL_EINVAL,
                         "option '%s' is \"on\" or \"off\", not \"%s\"", key,
                         value);
    char **slot = key[0] == 'm'   ? &e->opt_mock
                  : key[0] == 'w' ? &e->opt_watch
                                  : &e->opt_stream;
    return set_string(e, slot, value);
  }
  if (strcmp(key, "log_format") == 0) {
    if (value == NULL ||
        (strcmp(value, "text") != 0 && strcmp(value, "json") != 0))
      return spool__fail(e, SPOOL_EINVAL,
                         "option 'log_format' is \"text\" or \"json\"");
    e->log_json = strcmp(value, "json") == 0;
    return 0;
  }
  if (strcmp(key, "log") == 0) {
    if (value == NULL || parse_log_level(value, &e->log_level) != 0)
      return spool__fail(e, SPOOL_EINVAL,
                         "option 'log' is error, warn, info or debug");
    return 0;
  }
  return spool__fail(e, SPOOL_EINVAL, "unknown option '%s'", key);
}

int spool_engine_use_loop(spool_engine *e, void *uv_loop) {
  if (e == NULL || uv_loop == NULL)
    return SPOOL_EINVAL;
  if (e->opened)
    return spool__fail(e, SPOOL_ESTATE,
                       "the loop must be chosen before spool_engine_open");
  e->loop = uv_loop;
  return 0;
}

/* ---- opening ---- */

static int has_library(const char *dir) {
  char path[4200];
  if (snprintf(path, sizeof path, "%s/spool/init.lua", dir) >= (int)sizeof path)
    return 0;
  return access(path, R_OK) == 0;
}

/* Looks for share/spool/lua beside the folder holding `file` (an
 * executable in bin/, or libspool.so in lib/). */
static int library_near(const char *file, char *out, size_t size) {
  char dir[4096];
  if (snprintf(dir, sizeof dir, "%s", file) >= (int)sizeof dir)
    return 0;
  char *slash = strrchr(dir, '/');
  if (slash == NULL)
    return 0;
  *slash = '\0';
  return snprintf(out, size, "%s/../share/spool/lua", dir) < (int)size &&
         has_library(out);
}

/* The Lua library: the option, $SPOOL_LUA_DIR, next to the executable once
 * installed (bin/../share/spool/lua), next to libspool.so for an
 * application that links it (lib/../share/spool/lua), the source tree it
 * was built from, and the install prefix it was configured with. */
static int find_lua_dir(spool_engine *e, char *out, size_t size) {
  const char *env = getenv("SPOOL_LUA_DIR");
  if (e->opt_lua_dir || (env && *env)) {
    snprintf(out, size, "%s", e->opt_lua_dir ? e->opt_lua_dir : env);
    if (has_library(out))
      return 0;
    return spool__fail(e, SPOOL_EINVAL,
                       "no spool Lua library in '%s' (expected "
                       "spool/init.lua there)",
                       out);
  }
  char exe[4096];
  size_t len = sizeof exe;
  if (uv_exepath(exe, &len) == 0 && library_near(exe, out, size))
    return 0;
  Dl_info info;
  if (dladdr((void *)spool_version, &info) && info.dli_fname &&
      library_near(info.dli_fname, out, size))
    return 0;
#ifdef SPOOL_SOURCE_LUA_DIR
  snprintf(out, size, "%s", SPOOL_SOURCE_LUA_DIR);
  if (has_library(out))
    return 0;
#endif
#ifdef SPOOL_INSTALL_LUA_DIR
  snprintf(out, size, "%s", SPOOL_INSTALL_LUA_DIR);
  if (has_library(out))
    return 0;
#endif
  return spool__fail(e, SPOOL_EINVAL,
                     "cannot find the spool Lua library; set the lua_dir "
                     "option or SPOOL_LUA_DIR");
}

static int preload(lua_State *L, const char *name, lua_CFunction open) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, open);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
  return 0;
}

static void push_opt(lua_State *L, const char *name, const char *value) {
  if (value) {
    lua_pushstring(L, value);
    lua_setfield(L, -2, name);
  }
}

/* Where the library's precompiled chunks are (see l_bytecode.c): the
 * build's for the source tree it was built from, else beside the library
 * (share/spool/luac once installed). 0 if that folder exists. */
static int bytecode_dir(const char *lua_dir, char *out, size_t size) {
  struct stat st;
#if defined(SPOOL_SOURCE_LUA_DIR) && defined(SPOOL_BUILD_BYTECODE_DIR)
  if (strcmp(lua_dir, SPOOL_SOURCE_LUA_DIR) == 0) {
    snprintf(out, size, "%s", SPOOL_BUILD_BYTECODE_DIR);
    return stat(out, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
  }
#endif
  int n = snprintf(out, size, "%s/../luac", lua_dir);
  if (n < 0 || (size_t)n >= size)
    return -1;
  return stat(out, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

/* An error outside any protected call: a bug of the engine's C code (all
 * of its entries into Lua are protected); Lua aborts when this returns. */
static int on_lua_panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  fprintf(stderr, "spool: PANIC: unprotected error in call to Lua API (%s)\n",
          msg ? msg : "not a string");
  return 0;
}

/* Lua's warn(): off until "@on", as in the standalone interpreter; a
 * warning may arrive in pieces and is logged whole. */
static void on_lua_warning(void *ud, const char *msg, int tocont) {
  spool_engine *e = ud;
  if (e->lua_warning.len == 0 && !tocont && msg[0] == '@') {
    if (strcmp(msg, "@on") == 0)
      e->lua_warnings = 1;
    else if (strcmp(msg, "@off") == 0)
      e->lua_warnings = 0;
    return;
  }
  if (!e->lua_warnings)
    return;
  if (spool__buf_adds(&e->lua_warning, msg) != 0 || !tocont) {
    spool__log(e, SPOOL__LOG_WARN, "Lua warning: %s",
               e->lua_warning.data ? e->lua_warning.data : msg);
    spool__buf_clear(&e->lua_warning);
  }
}

/* Drops the relative entries ("./?.lua", "./?.so") of a search path:
 * modules are never looked for in the working folder, where an agent may
 * write files. stack: path -> path */
static void absolute_only(lua_State *L) {
  luaL_Buffer b;
  const char *p = lua_tostring(L, -1);
  luaL_buffinit(L, &b);
  while (p && *p) {
    const char *end = strchr(p, ';');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    if (n > 0 && p[0] == '/') {
      luaL_addlstring(&b, p, n);
      luaL_addchar(&b, ';');
    }
    p += n + (end ? 1 : 0);
  }
  luaL_pushresult(&b);
  lua_remove(L, -2);
}

/* stack: -> (sets up package.path, preloads, and loads spool.engine) */
static int bootstrap(lua_State *L) {
  spool_engine *e = lua_touserdata(L, 1);
  const char *lua_dir = lua_tostring(L, 2);
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", lua_dir, lua_dir);
  lua_getfield(L, -2, "path");
  absolute_only(L);
  lua_concat(L, 2);
  lua_setfield(L, -2, "path");
  lua_getfield(L, -1, "cpath");
  absolute_only(L);
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  preload(L, "spool.core", luaopen_spool_core);
  preload(L, "spool.json", luaopen_spool_json);
  char bytecode[4200];
  if (bytecode_dir(lua_dir, bytecode, sizeof bytecode) == 0)
    spool__add_bytecode_searcher(L, lua_dir, bytecode);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "spool.engine");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "open");
  lua_newtable(L);
  push_opt(L, "project", e->project_abs);
  push_opt(L, "lua_dir", lua_dir);
  push_opt(L, "model", e->opt_model);
  push_opt(L, "base_url", e->opt_base_url);
  push_opt(L, "api_key_env", e->opt_api_key_env);
  push_opt(L, "mock", e->opt_mock);
  push_opt(L, "store", e->opt_store);
  push_opt(L, "agents_dir", e->opt_agents_dir);
  push_opt(L, "prompts_dir", e->opt_prompts_dir);
  push_opt(L, "watch", e->opt_watch);
  push_opt(L, "stream", e->opt_stream);
  lua_call(L, 1, 2);
  return 3; /* api table, ok, err */
}

/* The message without its "ECODE: " prefix (the code travels apart). */
static void otlp_warn(void *ud, const char *msg) {
  spool__log(ud, SPOOL__LOG_WARN, "traces: %s", msg);
}

static void on_flush_deadline(uv_timer_t *t) {
  (void)t; /* it only wakes the loop at the deadline */
}

/* Turns the loop until the spans queued are sent, for at most ms (0: the
 * exporter's deadline, $OTEL_BSP_EXPORT_TIMEOUT); what is left then is
 * dropped, and said. */
static void send_spans(spool_engine *e, unsigned ms) {
  if (!spool__otlp_busy(e->otlp))
    return;
  uint64_t deadline = spool__otlp_closing(e->otlp), now = uv_now(e->loop);
  if (ms && now + ms < deadline)
    deadline = now + ms;
  uv_timer_t wake;
  uv_timer_init(e->loop, &wake);
  uv_timer_start(&wake, on_flush_deadline, deadline > now ? deadline - now : 0,
                 0);
  e->turning++;
  while (spool__otlp_busy(e->otlp) && uv_now(e->loop) < deadline)
    uv_run(e->loop, UV_RUN_ONCE);
  e->turning--;
  uv_close((uv_handle_t *)&wake, NULL);
  uv_run(e->loop, UV_RUN_NOWAIT); /* its close callback */
  spool__otlp_abandon(e->otlp);
  spool__otlp_stats s;
  spool__otlp_stats_get(e->otlp, &s);
  if (s.dropped > 0)
    spool__log(e, SPOOL__LOG_WARN,
               "traces: %lld span%s not exported (%lld exported to %s)",
               s.dropped, s.dropped == 1 ? "" : "s", s.exported,
               spool__otlp_endpoint_shown(e->otlp));
}

int spool_engine_flush(spool_engine *e, unsigned ms) {
  if (e == NULL || !e->opened || e->L == NULL)
    return SPOOL_EINVAL;
  if (e->sched.in_check || e->turning)
    return spool__refuse_inside(e);
  send_spans(e, ms);
  return SPOOL_OK;
}

int spool_engine_open(spool_engine *e) {
  if (e == NULL)
    return SPOOL_EINVAL;
  if (e->opened)
    return spool__fail(e, SPOOL_ESTATE, "the engine is already open");
  e->opened = 1; /* whatever happens next, spool_engine_free undoes it */
  char lua_dir[4096], project[4096];
  const char *proj = e->opt_project ? e->opt_project : ".";
  struct stat st;
  if (realpath(proj, project) == NULL || stat(project, &st) != 0 ||
      !S_ISDIR(st.st_mode))
    return spool__fail(e, SPOOL_EINVAL, "project folder '%s': %s", proj,
                       errno ? strerror(errno) : "not a folder");
  int rc = find_lua_dir(e, lua_dir, sizeof lua_dir);
  if (rc != 0)
    return rc;
  if ((e->project_abs = strdup(project)) == NULL ||
      (e->lua_dir = strdup(lua_dir)) == NULL)
    return spool__fail(e, SPOOL_ENOMEM, "out of memory");
  const char *offset = getenv("SPOOL_TEST_TIME_OFFSET_MS");
  if (offset && *offset)
    e->clock_offset_ms = strtoll(offset, NULL, 10);
  const char *level = getenv("SPOOL_LOG");
  if (level && *level && parse_log_level(level, &e->log_level) != 0)
    spool__log(e, SPOOL__LOG_WARN, "SPOOL_LOG=%s is not a log level", level);
  if (e->loop == NULL) {
    if ((rc = uv_loop_init(&e->own_loop)) != 0)
      return spool__fail(e, SPOOL_EIO, "uv_loop_init: %s", uv_strerror(rc));
    e->loop = &e->own_loop;
    e->own_loop_used = 1;
  }
  if (spool__http_new(e->loop, &e->http) != 0)
    return spool__fail(e, SPOOL_ENOMEM, "cannot create the HTTP client");
  if (spool__otlp_new(e->loop, e->http, &e->otlp, otlp_warn, e) != 0)
    return spool__fail(e, SPOOL_ENOMEM, "cannot create the span exporter");
  if ((rc = spool__sched_init(e)) != 0)
    return rc;
  e->sched.tick_end = spool__engine_tick_end;
  e->sched_ready = 1;
  lua_State *L = NULL;
  if ((e->heap = spool__lua_heap_new()) != NULL)
    L = e->L = lua_newstate(spool__lua_heap_alloc, e->heap);
  if (L == NULL)
    return spool__fail(e, SPOOL_ENOMEM, "cannot create a Lua state");
  spool__lua_heap_set_owner(e->heap, e);
  lua_atpanic(L, on_lua_panic);
  lua_setwarnf(L, on_lua_warning, e);
  /* Every coroutine starts with a copy of the main thread's extra space,
   * which the scheduler reads as "which task is this": make it NULL. */
  *(void **)lua_getextraspace(L) = NULL;
  lua_pushlightuserdata(L, e);
  lua_setfield(L, LUA_REGISTRYINDEX, ENGINE_KEY);
  lua_pushcfunction(L, bootstrap);
  lua_pushlightuserdata(L, e);
  lua_pushstring(L, lua_dir);
  if (spool__pcall(L, 2, 3) != LUA_OK) {
    rc = spool__fail(e, SPOOL_EAGENT, "cannot load the spool library: %s",
                     lua_tostring(L, -1));
    lua_pop(L, 1);
    return rc;
  }
  /* stack: api, ok, err */
  if (!lua_toboolean(L, -2)) {
    const char *msg = lua_tostring(L, -1);
    rc = spool__fail(e, spool__error_code_of(msg), "%s",
                     msg ? spool__error_text_of(msg) : "cannot open");
    lua_pop(L, 3);
    return rc;
  }
  lua_pop(L, 2);
  e->api_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

static void free_engine_memory(spool_engine *e) {
  free(e->opt_project);
  free(e->opt_lua_dir);
  free(e->opt_model);
  free(e->opt_base_url);
  free(e->opt_api_key_env);
  free(e->opt_mock);
  free(e->opt_store);
  free(e->opt_agents_dir);
  free(e->opt_prompts_dir);
  free(e->opt_watch);
  free(e->opt_stream);
  free(e->project_abs);
  free(e->lua_dir);
  spool__buf_free(&e->errmsg);
  spool__buf_free(&e->result);
  spool__buf_free(&e->lua_warning);
  spool__buf_free(&e->trace_buf);
  free(e);
}

/* With a host loop, the engine's own handles close when the host turns its
 * loop; the memory that holds them goes with the last one. */
static void on_engine_handle_closed(uv_handle_t *h) {
  spool_engine *e = h->data;
  if (--e->handles_closing == 0 && !e->own_loop_used)
    free_engine_memory(e);
}

void spool_engine_free(spool_engine *e) {
  if (e == NULL)
    return;
  assert(!e->delivering && !e->sched.in_check); /* see spool.h */
  if (e->L)
    spool__sched_cancel_all(e);
  /* On its own loop, which nothing else turns; a host flushes first
   * (spool_engine_flush), as a host's loop may be turning now. */
  if (e->own_loop_used && !e->turning)
    send_spans(e, 0);
  /* Ops already handed to the store thread finish (a submitted step is
   * committed); their waiters are gone, so their callbacks only free. */
  spool__store_close(e->store);
  if (e->L) {
    spool__limits_free(e, e->main_limits);
    e->main_limits = e->limits_now = NULL;
    lua_close(e->L); /* collects servers, which close their sockets */
  }
  spool__lua_heap_free(e->heap);
  spool__otlp_free(e->otlp);
  spool__http_free(e->http);
  spool__events_free(e);
  if (e->free_host_tools) /* now: the host may free what they hold next */
    e->free_host_tools(e);
  e->free_host_tools = NULL;
  if (e->sched_ready) {
    e->handles_closing = 2;
    spool__sched_close(e, on_engine_handle_closed);
  }
  if (e->own_loop_used) {
    uv_run(e->loop, UV_RUN_DEFAULT); /* runs the close callbacks */
    if (uv_loop_close(e->loop) != 0)
      spool__log(e, SPOOL__LOG_ERROR, "a uv handle was left open");
    free_engine_memory(e);
  } else if (!e->sched_ready) {
    free_engine_memory(e);
  }
}

/* ---- the loop ---- */

int spool__refuse_inside(spool_engine *e) {
  return spool__fail(e, SPOOL_ESTATE,
                     "this function turns the loop, so it cannot run inside "
                     "a callback the loop makes (a host tool, or the event "
                     "callback on the host's own loop): call it once the "
                     "callback has returned");
}

int spool__turn(spool_engine *e, uv_run_mode mode) {
  e->turning++;
  int alive = uv_run(e->loop, mode);
  e->turning--;
  spool__events_flush(e);
  return alive;
}

int spool_engine_run(spool_engine *e, spool_run_mode mode) {
  if (e == NULL)
    return SPOOL_EINVAL;
  if (e->api_ref == LUA_NOREF)
    return spool__fail(e, SPOOL_ESTATE, "the engine is not open");
  if (e->sched.in_check)
    return spool__refuse_inside(e);
  e->stop = 0;
  switch (mode) {
  case SPOOL_RUN_IDLE:
    while (e->sched.ntasks > 0 && !e->stop)
      spool__turn(e, UV_RUN_ONCE);
    return 0;
  case SPOOL_RUN_ONCE:
    spool__turn(e, UV_RUN_ONCE);
    return e->sched.ntasks > 0;
  case SPOOL_RUN_NOWAIT:
    spool__turn(e, UV_RUN_NOWAIT);
    return e->sched.ntasks > 0;
  case SPOOL_RUN_FOREVER:
    /* A turn at a time, so events reach the host between turns. */
    while (!e->stop)
      if (spool__turn(e, UV_RUN_ONCE) == 0 && !e->stop)
        break; /* nothing left that could ever wake the loop */
    return 0;
  }
  return spool__fail(e, SPOOL_EINVAL, "unknown run mode %d", (int)mode);
}

static void on_run_for_timeout(uv_timer_t *t) {
  spool_engine *e = t->data;
  e->stop = 1;
  uv_stop(e->loop);
}

static void free_handle(uv_handle_t *h) {
  free(h);
}

int spool_engine_run_for(spool_engine *e, unsigned ms) {
  if (e == NULL)
    return SPOOL_EINVAL;
  if (e->api_ref == LUA_NOREF)
    return spool__fail(e, SPOOL_ESTATE, "the engine is not open");
  if (e->sched.in_check)
    return spool__refuse_inside(e);
  uv_timer_t *timer = malloc(sizeof *timer);
  if (timer == NULL)
    return spool__fail(e, SPOOL_ENOMEM, "out of memory");
  uv_timer_init(e->loop, timer);
  timer->data = e;
  uv_timer_start(timer, on_run_for_timeout, ms, 0);
  e->stop = 0;
  while (e->sched.ntasks > 0 && !e->stop)
    spool__turn(e, UV_RUN_ONCE);
  e->stop = 0;
  uv_close((uv_handle_t *)timer, free_handle);
  return e->sched.ntasks > 0;
}

void spool_engine_stop(spool_engine *e) {
  if (e && e->loop) {
    e->stop = 1;
    /* Only a loop that is turning: libuv would keep the flag for the next
     * turn (the host's own, it may be) and make it return at once. */
    if (e->turning > 0 || e->sched.in_check)
      uv_stop(e->loop);
  }
}

const char *spool_engine_get(spool_engine *e, const char *key) {
  if (e == NULL || key == NULL)
    return NULL;
  if (strcmp(key, "project") == 0)
    return e->project_abs;
  if (strcmp(key, "lua_dir") == 0)
    return e->lua_dir;
  return NULL;
}
