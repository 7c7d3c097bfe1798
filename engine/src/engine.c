/*
 * engine.c: spool_engine and the public API of spool.h: options, the loop,
 * the Lua state and its bootstrap, the event queue, and the calls that cross
 * into the Lua library (lua/spool/engine.lua), always under protection.
 *
 * What a thread is and how it runs is Lua's business; this file only moves
 * requests and results across the boundary.
 */
#define _GNU_SOURCE /* dladdr */
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

#include "errors.h"
#include "http.h"
#include "json.h"
#include "lua_heap.h"
#include "spool_int.h"
#include "store.h"

#define ENGINE_KEY "spool.engine"

struct spool_event {
  const char *thread, *agent, *type, *json, *text;
  long long seq;
  int depth;
};

typedef struct spool__queued_event {
  struct spool__queued_event *next;
  struct spool_event ev;
  char strings[]; /* thread, agent, type, json, text, each NUL-terminated */
} queued_event;

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
static const char *text_of(const char *msg) {
  const char *colon = msg ? strchr(msg, ':') : NULL;
  if (colon == NULL || colon == msg || msg[0] != 'E' || colon[1] != ' ')
    return msg ? msg : "";
  for (const char *p = msg; p < colon; p++)
    if (*p < 'A' || *p > 'Z')
      return msg;
  return colon + 2;
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
  if ((rc = spool__sched_init(e)) != 0)
    return rc;
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
                     msg ? text_of(msg) : "cannot open");
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
  spool__host_tools_free(e);
  free(e->project_abs);
  free(e->lua_dir);
  spool__buf_free(&e->errmsg);
  spool__buf_free(&e->result);
  spool__buf_free(&e->lua_warning);
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
  if (e->L)
    spool__sched_cancel_all(e);
  /* Ops already handed to the store thread finish (a submitted step is
   * committed); their waiters are gone, so their callbacks only free. */
  spool__store_close(e->store);
  if (e->L) {
    spool__limits_free(e, e->main_limits);
    e->main_limits = e->limits_now = NULL;
    lua_close(e->L); /* collects servers, which close their sockets */
  }
  spool__lua_heap_free(e->heap);
  spool__http_free(e->http);
  while (e->events_head) {
    queued_event *q = e->events_head;
    e->events_head = q->next;
    free(q);
  }
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

int spool_engine_run(spool_engine *e, spool_run_mode mode) {
  if (e == NULL)
    return SPOOL_EINVAL;
  if (e->api_ref == LUA_NOREF)
    return spool__fail(e, SPOOL_ESTATE, "the engine is not open");
  e->stop = 0;
  switch (mode) {
  case SPOOL_RUN_IDLE:
    while (e->sched.ntasks > 0 && !e->stop)
      uv_run(e->loop, UV_RUN_ONCE);
    return 0;
  case SPOOL_RUN_ONCE:
    uv_run(e->loop, UV_RUN_ONCE);
    return e->sched.ntasks > 0;
  case SPOOL_RUN_NOWAIT:
    uv_run(e->loop, UV_RUN_NOWAIT);
    return e->sched.ntasks > 0;
  case SPOOL_RUN_FOREVER:
    while (!e->stop)
      if (uv_run(e->loop, UV_RUN_DEFAULT) == 0 && !e->stop)
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
  uv_timer_t *timer = malloc(sizeof *timer);
  if (timer == NULL)
    return spool__fail(e, SPOOL_ENOMEM, "out of memory");
  uv_timer_init(e->loop, timer);
  timer->data = e;
  uv_timer_start(timer, on_run_for_timeout, ms, 0);
  e->stop = 0;
  while (e->sched.ntasks > 0 && !e->stop)
    uv_run(e->loop, UV_RUN_ONCE);
  e->stop = 0;
  uv_close((uv_handle_t *)timer, free_handle);
  return e->sched.ntasks > 0;
}

void spool_engine_stop(spool_engine *e) {
  if (e && e->loop) {
    e->stop = 1;
    uv_stop(e->loop);
  }
}

/* ---- events ---- */

void spool_engine_on_event(spool_engine *e, spool_event_cb cb, void *ud) {
  if (e == NULL)
    return;
  e->on_event = cb;
  e->on_event_ud = ud;
}

int spool__events_queue(spool_engine *e, const spool__event_fields *f) {
  if (e->on_event == NULL)
    return 0;
  size_t lt = strlen(f->thread) + 1, la = strlen(f->agent) + 1,
         ly = strlen(f->type) + 1;
  queued_event *q =
      malloc(sizeof *q + lt + la + ly + f->json_len + 1 + f->text_len + 1);
  if (q == NULL)
    return -1;
  char *p = q->strings;
  q->ev.thread = memcpy(p, f->thread, lt);
  q->ev.agent = memcpy(p += lt, f->agent, la);
  q->ev.type = memcpy(p += la, f->type, ly);
  q->ev.json = memcpy(p += ly, f->json, f->json_len);
  p[f->json_len] = '\0';
  q->ev.text = memcpy(p += f->json_len + 1, f->text, f->text_len);
  p[f->text_len] = '\0';
  q->ev.seq = f->seq;
  q->ev.depth = f->depth;
  q->next = NULL;
  if (e->events_tail)
    e->events_tail->next = q;
  else
    e->events_head = q;
  e->events_tail = q;
  return 0;
}

static void events_flush(spool_engine *e) {
  while (e->events_head) {
    queued_event *q = e->events_head;
    e->events_head = q->next;
    if (e->events_head == NULL)
      e->events_tail = NULL;
    if (e->on_event)
      e->on_event(&q->ev, e->on_event_ud);
    free(q);
  }
}

void spool__engine_tick_end(spool_engine *e) {
  spool__store_flush(e->store);
  events_flush(e);
}

const char *spool_event_thread(const spool_event *ev) {
  return ev->thread;
}
const char *spool_event_agent(const spool_event *ev) {
  return ev->agent;
}
const char *spool_event_type(const spool_event *ev) {
  return ev->type;
}
long long spool_event_seq(const spool_event *ev) {
  return ev->seq;
}
int spool_event_depth(const spool_event *ev) {
  return ev->depth;
}
const char *spool_event_json(const spool_event *ev) {
  return ev->json;
}
const char *spool_event_text(const spool_event *ev) {
  return ev->text;
}

/* ---- calls into the Lua library ---- */

/*
 * Calls api[fn] with the nargs values on top of e->L, directly (it must not
 * yield). The Lua side returns its result, or nil and "ECODE: message".
 * stack: args -> result (on success only; nothing is left on failure)
 */
static int call_api(spool_engine *e, const char *fn, int nargs) {
  lua_State *L = e->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->api_ref);
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  lua_insert(L, -(nargs + 1));
  if (spool__pcall(L, nargs, 2) != LUA_OK) {
    int rc = spool__fail(e, SPOOL_EINTERNAL, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return rc;
  }
  if (lua_isnil(L, -2)) {
    const char *msg = lua_tostring(L, -1);
    int rc = spool__fail(e, spool__error_code_of(msg), "%s",
                         msg ? text_of(msg) : "failed");
    lua_pop(L, 2);
    return rc;
  }
  lua_pop(L, 1);
  return 0;
}

/* A task the API waits for; its done callback fills in the outcome. */
typedef struct waited {
  int done;
  int rc;        /* await_api: 0 or a SPOOL_E* code */
  int exit_code; /* spool_script_run */
} waited;

/* stack: done-callback, waited, f, args -> (spawns f(args) as a task) */
static int spawn_waited(lua_State *L) {
  spool__task_done_cb done = (spool__task_done_cb)lua_touserdata(L, 1);
  waited *w = lua_touserdata(L, 2);
  lua_remove(L, 1);
  lua_remove(L, 1);
  spool__task_spawn(spool__engine_of(L), L, lua_gettop(L) - 1, done, w);
  return 0;
}

/* Spawns the function below its nargs arguments on e->L as a task and
 * turns the loop until the task ends. */
static int spawn_and_wait(spool_engine *e, int nargs, spool__task_done_cb done,
                          waited *w) {
  lua_State *L = e->L;
  lua_pushlightuserdata(L, (void *)done);
  lua_pushlightuserdata(L, w);
  lua_pushcfunction(L, spawn_waited);
  lua_insert(L, -(nargs + 4));
  lua_insert(L, -(nargs + 3));
  lua_insert(L, -(nargs + 3));
  /* stack: spawn_waited, done, w, f, args */
  if (spool__pcall(L, nargs + 3, 0) != LUA_OK) {
    int rc = spool__fail(e, SPOOL_ENOMEM, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return rc;
  }
  while (!w->done)
    uv_run(e->loop, UV_RUN_ONCE);
  return 0;
}

static void on_await_done(spool__task *t, int how, int nres, void *ud) {
  waited *w = ud;
  spool_engine *e = t->e;
  w->done = 1;
  if (how == SPOOL__TASK_CANCELLED) {
    w->rc = spool__fail(e, SPOOL_ESTATE, "the engine was closed");
    return;
  }
  if (how == SPOOL__TASK_ERROR) {
    w->rc = spool__fail(e, SPOOL_EINTERNAL, "%s", lua_tostring(e->L, -1));
    return;
  }
  lua_State *co = t->co;
  int first = lua_gettop(co) - nres + 1;
  if (nres == 0 || lua_isnil(co, first)) {
    const char *msg = nres >= 2 ? lua_tostring(co, first + 1) : NULL;
    w->rc = spool__fail(e, spool__error_code_of(msg), "%s",
                        msg ? text_of(msg) : "failed");
    return;
  }
  size_t n = 0;
  const char *s = lua_tolstring(co, first, &n);
  spool__buf_clear(&e->result);
  if (spool__buf_add(&e->result, s ? s : "", s ? n : 0) != 0)
    w->rc = spool__fail(e, SPOOL_ENOMEM, "out of memory");
  else
    w->rc = 0;
}

/*
 * Runs api[fn] with the nargs values on top of e->L as a task (so it may
 * use the store) and turns the loop until it returns. Its string result is
 * left in e->result.
 */
static int await_api(spool_engine *e, const char *fn, int nargs) {
  lua_State *L = e->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->api_ref);
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  lua_insert(L, -(nargs + 1));
  waited w = {0, 0, 0};
  int rc = spawn_and_wait(e, nargs, on_await_done, &w);
  return rc != 0 ? rc : w.rc;
}

/* Copies the string on top of e->L into e->result and pops it. */
static const char *keep_result(spool_engine *e) {
  size_t n;
  const char *s = lua_tolstring(e->L, -1, &n);
  spool__buf_clear(&e->result);
  if (s == NULL || spool__buf_add(&e->result, s, n) != 0) {
    lua_pop(e->L, 1);
    return NULL;
  }
  lua_pop(e->L, 1);
  return e->result.data;
}

static int check_open(spool_engine *e) {
  if (e == NULL)
    return SPOOL_EINVAL;
  if (!e->opened || e->api_ref == LUA_NOREF)
    return spool__fail(e, SPOOL_ESTATE, "the engine is not open");
  return 0;
}

/* Checks the engine and that every string argument is given. */
static int check_args(spool_engine *e, int n, ...) {
  int rc = check_open(e);
  if (rc != 0)
    return rc;
  va_list ap;
  va_start(ap, n);
  for (int i = 0; i < n; i++)
    if (va_arg(ap, const void *) == NULL) {
      va_end(ap);
      return spool__fail(e, SPOOL_EINVAL, "a required argument is NULL");
    }
  va_end(ap);
  return 0;
}

static int copy_id(spool_engine *e, char id_out[SPOOL_ID_SIZE]) {
  if (e->result.data == NULL || e->result.len >= SPOOL_ID_SIZE)
    return spool__fail(e, SPOOL_EINTERNAL, "bad thread id");
  memcpy(id_out, e->result.data, e->result.len + 1);
  return 0;
}

int spool_thread_start(spool_engine *e, const char *agent, const char *input,
                       char id_out[SPOOL_ID_SIZE]) {
  int rc = check_args(e, 3, agent, input, id_out);
  if (rc != 0)
    return rc;
  lua_pushstring(e->L, agent);
  lua_pushstring(e->L, input);
  if ((rc = call_api(e, "start_thread", 2)) != 0)
    return rc;
  if (keep_result(e) == NULL)
    return spool__fail(e, SPOOL_ENOMEM, "out of memory");
  return copy_id(e, id_out);
}

int spool_thread_status(spool_engine *e, const char *id, spool_status *out) {
  static const char *const names[] = {"running", "waiting", "done", "failed",
                                      "cancelled"};
  int rc = check_args(e, 2, id, out);
  if (rc != 0)
    return rc;
  lua_pushstring(e->L, id);
  if ((rc = await_api(e, "thread_status", 1)) != 0)
    return rc;
  for (int i = 0; i < 5; i++)
    if (strcmp(e->result.data, names[i]) == 0) {
      *out = (spool_status)i;
      return 0;
    }
  return spool__fail(e, SPOOL_EINTERNAL, "unknown thread status");
}

/* The API functions that take one id and return a string (or nothing). */
static int id_call(spool_engine *e, const char *fn, const char *id,
                   const char **out) {
  int rc = check_args(e, 1, id);
  if (rc != 0)
    return rc;
  lua_pushstring(e->L, id);
  if ((rc = await_api(e, fn, 1)) != 0)
    return rc;
  if (out)
    *out = e->result.data;
  return 0;
}

int spool_thread_result(spool_engine *e, const char *id,
                        const char **json_out) {
  if (json_out == NULL)
    return e ? spool__fail(e, SPOOL_EINVAL, "json_out is NULL") : SPOOL_EINVAL;
  return id_call(e, "thread_result", id, json_out);
}

int spool_thread_request(spool_engine *e, const char *id,
                         spool_response_kind *kind, const char **name,
                         const char **text) {
  int rc = check_args(e, 4, id, kind, name, text);
  if (rc != 0)
    return rc;
  lua_pushstring(e->L, id);
  if ((rc = await_api(e, "thread_request", 1)) != 0)
    return rc;
  /* "kind\0name\0text": three strings in the one result buffer. */
  const char *k = e->result.data, *n = k + strlen(k) + 1;
  *kind = strcmp(k, "ask") == 0     ? SPOOL_ANSWER
          : strcmp(k, "event") == 0 ? SPOOL_EVENT
                                    : SPOOL_APPROVE;
  *name = *n ? n : NULL;
  *text = n + strlen(n) + 1;
  return 0;
}

int spool_thread_json(spool_engine *e, const char *id, const char **json_out) {
  if (json_out == NULL)
    return e ? spool__fail(e, SPOOL_EINVAL, "json_out is NULL") : SPOOL_EINVAL;
  return id_call(e, "thread_json", id, json_out);
}

int spool_thread_text(spool_engine *e, const char *id, const char **text_out) {
  if (text_out == NULL)
    return e ? spool__fail(e, SPOOL_EINVAL, "text_out is NULL") : SPOOL_EINVAL;
  return id_call(e, "thread_text", id, text_out);
}

int spool_thread_export(spool_engine *e, const char *id,
                        const char **jsonl_out) {
  if (jsonl_out == NULL)
    return e ? spool__fail(e, SPOOL_EINVAL, "jsonl_out is NULL") : SPOOL_EINVAL;
  return id_call(e, "export", id, jsonl_out);
}

int spool_thread_cancel(spool_engine *e, const char *id) {
  return id_call(e, "cancel", id, NULL);
}

int spool_thread_delete(spool_engine *e, const char *id) {
  return id_call(e, "delete", id, NULL);
}

static void set_field(lua_State *L, const char *name, const char *value) {
  if (value) {
    lua_pushstring(L, value);
    lua_setfield(L, -2, name);
  }
}

int spool_thread_resume(spool_engine *e, const char *id,
                        const spool_response *r) {
  static const char *const kinds[] = {NULL, "answer", "approve", "reject",
                                      "event"};
  int rc = check_args(e, 1, id);
  if (rc != 0)
    return rc;
  if (r && (r->kind < SPOOL_ANSWER || r->kind > SPOOL_EVENT))
    return spool__fail(e, SPOOL_EINVAL, "unknown response kind %d", r->kind);
  if (r && r->kind == SPOOL_ANSWER && r->text == NULL)
    return spool__fail(e, SPOOL_EINVAL, "an answer needs its text");
  if (r && r->kind == SPOOL_EVENT && r->text == NULL)
    return spool__fail(e, SPOOL_EINVAL, "an event needs its name (text)");
  lua_State *L = e->L;
  lua_pushstring(L, id);
  lua_newtable(L);
  if (r) {
    lua_pushstring(L, kinds[r->kind]);
    lua_setfield(L, -2, "kind");
    set_field(L, "text", r->text);
    set_field(L, "args_json", r->args_json);
    set_field(L, "by", r->by);
    set_field(L, "channel", r->channel);
  }
  return await_api(e, "resume", 2);
}

int spool_thread_fork(spool_engine *e, const char *id, long long at_seq,
                      char id_out[SPOOL_ID_SIZE]) {
  int rc = check_args(e, 2, id, id_out);
  if (rc != 0)
    return rc;
  lua_pushstring(e->L, id);
  lua_pushinteger(e->L, (lua_Integer)at_seq);
  if ((rc = await_api(e, "fork", 2)) != 0)
    return rc;
  return copy_id(e, id_out);
}

int spool_thread_list(spool_engine *e, const spool_thread_filter *f,
                      const char **out) {
  int rc = check_args(e, 1, out);
  if (rc != 0)
    return rc;
  lua_State *L = e->L;
  lua_newtable(L);
  if (f) {
    set_field(L, "status", f->status);
    set_field(L, "agent", f->agent);
    lua_pushinteger(L, f->limit);
    lua_setfield(L, -2, "limit");
    lua_pushinteger(L, (lua_Integer)f->before);
    lua_setfield(L, -2, "before");
    lua_pushboolean(L, f->text);
    lua_setfield(L, -2, "text");
  }
  if ((rc = await_api(e, "list", 1)) != 0)
    return rc;
  *out = e->result.data;
  return 0;
}

/* Runs an engine-wide API function (its nargs arguments pushed) that
 * answers with a JSON report; *report_json may be NULL. */
static int await_report(spool_engine *e, const char *fn, int nargs,
                        const char **report_json) {
  int rc = await_api(e, fn, nargs);
  if (rc == 0 && report_json)
    *report_json = e->result.data;
  return rc;
}

int spool_engine_recover(spool_engine *e, const char **report_json) {
  int rc = check_open(e);
  return rc != 0 ? rc : await_report(e, "recover", 0, report_json);
}

int spool_engine_reload(spool_engine *e, const char **report_json) {
  int rc = check_open(e);
  return rc != 0 ? rc : await_report(e, "reload", 0, report_json);
}

int spool_serve_start(spool_engine *e, const spool_serve_opts *o,
                      int *port_out) {
  int rc = check_open(e);
  if (rc != 0)
    return rc;
  if (o && (o->port < 0 || o->port > 65535 || o->max_runs < 0 || o->rate < 0))
    return spool__fail(e, SPOOL_EINVAL, "serve options out of range");
  lua_State *L = e->L;
  lua_newtable(L);
  if (o) {
    set_field(L, "host", o->host);
    set_field(L, "token_env", o->token_env);
    lua_pushinteger(L, o->port);
    lua_setfield(L, -2, "port");
    if (o->max_runs > 0) {
      lua_pushinteger(L, o->max_runs);
      lua_setfield(L, -2, "max_runs");
    }
    if (o->rate > 0) {
      lua_pushinteger(L, o->rate);
      lua_setfield(L, -2, "rate");
    }
  }
  if ((rc = await_api(e, "serve_start", 1)) != 0)
    return rc;
  if (port_out)
    *port_out = atoi(e->result.data);
  return 0;
}

int spool_serve_stop(spool_engine *e, unsigned drain_ms, int *left_out) {
  int rc = check_open(e);
  if (rc != 0)
    return rc;
  lua_pushinteger(e->L, (lua_Integer)drain_ms);
  if ((rc = await_api(e, "serve_stop", 1)) != 0)
    return rc;
  if (left_out)
    *left_out = atoi(e->result.data);
  return 0;
}

int spool_engine_gc(spool_engine *e, const char *older_than_days,
                    const char **report_json) {
  int rc = check_open(e);
  if (rc != 0)
    return rc;
  lua_pushstring(e->L, older_than_days);
  return await_report(e, "gc", 1, report_json);
}

int spool_state_export(spool_engine *e, const char *ns,
                       const char **jsonl_out) {
  if (jsonl_out == NULL)
    return e ? spool__fail(e, SPOOL_EINVAL, "jsonl_out is NULL") : SPOOL_EINVAL;
  return id_call(e, "state_export", ns, jsonl_out);
}

int spool_extract(spool_engine *e, const char *text, size_t len,
                  const char *schema_json, int flags, const char **out) {
  int rc = check_args(e, 2, text, out);
  if (rc != 0)
    return rc;
  lua_pushlstring(e->L, text, len);
  lua_pushstring(e->L, schema_json);
  lua_pushboolean(e->L, flags & SPOOL_EXTRACT_LINES);
  if ((rc = call_api(e, "extract", 3)) != 0)
    return rc;
  if ((*out = keep_result(e)) == NULL)
    return spool__fail(e, SPOOL_ENOMEM, "out of memory");
  return 0;
}

int spool_prompt_render(spool_engine *e, const char *agent, const char *input,
                        const char **body_out) {
  int rc = check_args(e, 3, agent, input, body_out);
  if (rc != 0)
    return rc;
  lua_pushstring(e->L, agent);
  lua_pushstring(e->L, input);
  if ((rc = call_api(e, "render_request", 2)) != 0)
    return rc;
  if ((*body_out = keep_result(e)) == NULL)
    return spool__fail(e, SPOOL_ENOMEM, "out of memory");
  return 0;
}

int spool_mock_start(spool_engine *e, const char *script, const char *host,
                     int port, int *port_out) {
  int rc = check_open(e);
  if (rc != 0)
    return rc;
  if (port < 0 || port > 65535)
    return spool__fail(e, SPOOL_EINVAL, "port %d is out of range", port);
  lua_pushstring(e->L, script); /* NULL pushes nil */
  lua_pushstring(e->L, host);
  lua_pushinteger(e->L, port);
  if ((rc = call_api(e, "mock_start", 3)) != 0)
    return rc;
  if (port_out)
    *port_out = (int)lua_tointeger(e->L, -1);
  lua_pop(e->L, 1);
  return 0;
}

static void on_script_done(spool__task *t, int how, int nres, void *ud) {
  waited *w = ud;
  lua_State *L = t->e->L;
  (void)nres;
  w->done = 1;
  w->exit_code = 0;
  if (how == SPOOL__TASK_CANCELLED) {
    w->exit_code = 1;
  } else if (how == SPOOL__TASK_ERROR) {
    /* os.exit inside a script raises {exit = code} (see _engine.lua). */
    if (lua_istable(L, -1)) {
      lua_getfield(L, -1, "exit");
      w->exit_code = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 1;
      lua_pop(L, 1);
    } else {
      const char *msg = lua_tostring(L, -1);
      spool__say(t->e, "error", msg ? msg : "the script failed");
      w->exit_code = 1;
    }
  }
}

int spool_script_run(spool_engine *e, const char *path, int argc, char **argv,
                     int *exit_out) {
  int rc = check_args(e, 1, path);
  if (rc != 0)
    return rc;
  if (argc > 0 && argv == NULL)
    return spool__fail(e, SPOOL_EINVAL, "argv is NULL");
  lua_State *L = e->L;
  lua_pushstring(L, path);
  lua_createtable(L, argc, 1);
  lua_pushstring(L, path);
  lua_rawseti(L, -2, 0);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i + 1);
  }
  if ((rc = call_api(e, "load_script", 2)) != 0)
    return rc;
  /* stack: the script's main function */
  waited w = {0, 0, 0};
  if ((rc = spawn_and_wait(e, 0, on_script_done, &w)) != 0)
    return rc;
  if (exit_out)
    *exit_out = w.exit_code;
  return 0;
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
