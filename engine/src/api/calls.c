/*
 * calls.c: the spool_thread_* functions and the rest of spool.h that asks
 * the Lua library (lua/spool/engine.lua), always under protection: a call
 * either runs directly (it must not yield) or as a task the call waits
 * for, turning the loop (it may use the store). What a thread is and how
 * it runs is Lua's business; this file only moves requests and results
 * across the boundary.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/errors.h"
#include "spool_int.h"

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
                         msg ? spool__error_text_of(msg) : "failed");
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
  if (e->sched.in_check) {
    lua_pop(e->L, nargs + 1); /* the function and its arguments */
    return spool__refuse_inside(e);
  }
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
    spool__turn(e, UV_RUN_ONCE);
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
                        msg ? spool__error_text_of(msg) : "failed");
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

/* A struct of spool.h whose size field was not set. */
static int unsized(spool_engine *e, const char *type, const char *init) {
  return spool__fail(e, SPOOL_EINVAL,
                     "%s: its size is not set (initialise it with %s)", type,
                     init);
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
  spool_response copy;
  if (r && spool__copy_struct(&copy, sizeof copy, r) != 0)
    return unsized(e, "spool_response", "SPOOL_RESPONSE_INIT");
  r = r ? &copy : NULL;
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
  spool_thread_filter copy;
  if (f && spool__copy_struct(&copy, sizeof copy, f) != 0)
    return unsized(e, "spool_thread_filter", "SPOOL_THREAD_FILTER_INIT");
  f = f ? &copy : NULL;
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
  spool_serve_opts copy;
  if (o && spool__copy_struct(&copy, sizeof copy, o) != 0)
    return unsized(e, "spool_serve_opts", "SPOOL_SERVE_OPTS_INIT");
  o = o ? &copy : NULL;
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
