/*
 * l_store.c: the store as Lua sees it (spool.core.store_*). Each function
 * copies its arguments into a store op, submits it and yields the calling
 * task until the store thread has run it; reads return JSON text for the
 * Lua library to decode. Private to lua/spool/run/store.lua.
 *
 *   store_open(path)                            -> true | nil, err (no yield)
 *   store_append{ thread=, agent=, parent=, expected_seq=, status=,
 *                 deadline=, owner=, epoch=, now=, events = {...},
 *                 first = n, writes = {...}, claim=, lease_ms=, release= }
 *       -> versions JSON, bytes, epoch | nil, err: events[first..] are
 *       stored (first defaults to 1), each { seq, step, type, at, v, data }
 *       with its data encoded here as json.encode would (bytes: the size
 *       of what that made); claim: the lease is taken first (for
 *       lease_ms), in the same transaction, and epoch is its claim's;
 *       release: the lease is given back after; data JSON cannot hold is
 *       nil, "EINVAL: event N's data cannot be stored: ...", "EINVAL"
 *   store_load(id)                              -> JSON | nil, err
 *   store_head(id)                -> JSON: the thread's row, no events
 *   store_list{ status=, agent=, limit=, before=, before_id= } -> JSON
 *   store_counts([agent])                       -> JSON {status: n}
 *   store_children(id)                          -> JSON
 *   store_state_get(ns, key, now)               -> JSON
 *   store_state_list(ns, after, limit, now)     -> JSON
 *   store_claim(id, owner, lease_ms, now[, dead_epoch]) -> JSON:
 *       {epoch} | {held_by, epoch, ms_left}; with dead_epoch, takes the
 *       lease from a holder known dead if it is still at that epoch
 *   store_release(id, owner, epoch, free_at)    -> true (id false: all of
 *                                                  the owner's)
 *   store_hold(owner, lease_ms, count)          (no yield) the leases held:
 *       while count > 0 the store renews them (spool__store_hold)
 *   store_ready(owner, lease_ms, now, limit)    -> JSON [{id, epoch}...]
 *   store_notify(id)          -> true: other workers hear of the thread
 *                                (PostgreSQL; nothing on SQLite)
 *   store_backlog(now)                          -> how many store_ready
 *                                                  would find
 *   store_delete(id)                            -> true | nil, err
 *   store_due(now)                              -> JSON
 *   store_purge(now, finished_before)           -> JSON
 *   store_version_put(hash, agent, sources_json, now) -> true
 *   store_version_get(hash)                     -> sources JSON | nil, err
 *   store_migrate(from, now)  -> counts JSON: the store at `from` copied
 *                                into this one (which must be empty)
 * Errors are "ECONFLICT: ...", "ENOTFOUND: ...", "ECORRUPT: ...",
 * "EIO: ...".
 */
#include <stdlib.h>
#include <string.h>

#include "spool_int.h"
#include "io/store.h"

#define APPEND_GUARD_MT "spool.store.append"

typedef struct store_wait {
  spool__op op;
  spool__store_op *sop;
  spool__task *t;
} store_wait;

static spool_engine *engine(lua_State *L) {
  return lua_touserdata(L, lua_upvalueindex(1));
}

static spool__store *check_store(lua_State *L) {
  spool_engine *e = engine(L);
  if (e->store == NULL)
    luaL_error(L, "the store is not open");
  return e->store;
}

static void wait_cancel(spool__op *op) {
  store_wait *w = (store_wait *)op;
  w->sop->cancelled = 1; /* the store thread finishes it; done frees it */
  free(w);
}

/* stack: op -> result(s) */
static int push_result(lua_State *L) {
  spool__store_op *op = lua_touserdata(L, 1);
  static const char *const codes[] = {"", "ECONFLICT", "ENOTFOUND", "ECORRUPT",
                                      "EIO"};
  if (op->result != SPOOL__STORE_OK) {
    return spool__push_fail(L, "%s: %s", codes[op->result], op->errmsg);
  }
  if (op->json.len > 0)
    lua_pushlstring(L, op->json.data, op->json.len);
  else
    lua_pushboolean(L, 1);
  if (op->kind != SPOOL__STORE_APPEND)
    return 1;
  lua_Integer bytes = 0;
  for (int i = 0; i < op->nevents; i++)
    bytes += (lua_Integer)strlen(op->events[i].data);
  lua_pushinteger(L, bytes);
  lua_pushinteger(L, op->epoch);
  return 3;
}

static void on_done(spool__store_op *sop, void *ud) {
  store_wait *w = ud;
  if (sop->cancelled) {
    spool__store_op_free(sop);
    return;
  }
  spool__task *t = w->t;
  free(w);
  spool__task_wake_with(t, push_result, sop);
  spool__store_op_free(sop);
}

/* Submits op for the calling task and yields. */
static int submit(lua_State *L, spool__store_op *op) {
  spool__store *s = check_store(L);
  spool__task *t = spool__task_current(L);
  if (t == NULL || t->co != L || !lua_isyieldable(L)) {
    spool__store_op_free(op);
    return luaL_error(L, "the store can only be used from a run");
  }
  store_wait *w = calloc(1, sizeof *w);
  if (w == NULL) {
    spool__store_op_free(op);
    return luaL_error(L, "out of memory");
  }
  w->op.cancel = wait_cancel;
  w->sop = op;
  w->t = t;
  spool__store_submit(s, op, on_done, w);
  return spool__task_wait(L, t, &w->op);
}

/* A new op, or a raised error. The op leaks if a later argument check
 * raises, so all checks run before this. */
static spool__store_op *new_op(lua_State *L, spool__store_kind kind) {
  spool__store_op *op = spool__store_op_new(kind);
  if (op == NULL)
    luaL_error(L, "out of memory");
  return op;
}

/* Copies a string into op; raises (after freeing op) when out of memory. */
static const char *dup(lua_State *L, spool__store_op *op, const char *s) {
  if (s == NULL)
    return NULL;
  const char *c = spool__store_op_strdup(op, s);
  if (c == NULL) {
    spool__store_op_free(op);
    luaL_error(L, "out of memory");
  }
  return c;
}

static const char *opt_field_str(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  const char *v = lua_isnil(L, -1) ? NULL : luaL_checkstring(L, -1);
  lua_pop(L, 1); /* the string stays alive: the table holds it */
  return v;
}

static long long opt_field_int(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  long long v = (long long)luaL_optinteger(L, -1, 0);
  lua_pop(L, 1);
  return v;
}

static int l_store_open(lua_State *L) {
  spool_engine *e = engine(L);
  const char *path = luaL_checkstring(L, 1);
  if (e->store)
    return luaL_error(L, "the store is already open");
  char err[300];
  if (spool__store_open(e->loop, spool__store_backend_for(path), path,
                        &e->store, err, sizeof err) != 0) {
    return spool__push_fail(L, "EIO: %s", err);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* An append being made: its op, and the buffer each event's data is
 * encoded in, freed by the GC if encoding raises (a value json.encode
 * refuses) before the op is submitted. */
typedef struct append_guard {
  spool__store_op *op;
  spool__buf data;
  int nevents, at;   /* the events to add, and the one being added */
  lua_Integer first; /* the index of the first among the thread's */
} append_guard;

static int append_guard_gc(lua_State *L) {
  append_guard *g = luaL_checkudata(L, 1, APPEND_GUARD_MT);
  if (g->op)
    spool__store_op_free(g->op);
  g->op = NULL;
  spool__buf_free(&g->data);
  return 0;
}

/* A copy of s kept by the guarded op; raises when out of memory. */
static const char *keep(lua_State *L, append_guard *g, const char *s,
                        size_t n) {
  if (s == NULL)
    return NULL;
  char *c = spool__store_op_strndup(g->op, s, n);
  if (c == NULL)
    luaL_error(L, "out of memory");
  return c;
}

static const char *keep_field(lua_State *L, append_guard *g, int t,
                              const char *k) {
  const char *s = opt_field_str(L, t, k);
  return keep(L, g, s, s ? strlen(s) : 0);
}

/* stack: guard, events -> (nothing): each new event's fields copied into
 * the guarded op, its data encoded; g->at says which, if one raises. */
static int add_events(lua_State *L) {
  append_guard *g = lua_touserdata(L, 1);
  spool__store_op *op = g->op;
  for (int i = 0; i < g->nevents; i++) {
    g->at = i;
    if (lua_geti(L, 2, g->first + i) != LUA_TTABLE)
      return luaL_error(L, "event %d is not a table", (int)(g->first + i));
    int ev_at = lua_gettop(L);
    spool__store_event *ev = &op->events[i];
    ev->seq = opt_field_int(L, ev_at, "seq");
    ev->step = opt_field_int(L, ev_at, "step");
    ev->at = opt_field_int(L, ev_at, "at");
    ev->type = keep_field(L, g, ev_at, "type");
    ev->v = keep_field(L, g, ev_at, "v");
    lua_getfield(L, ev_at, "data");
    spool__buf_clear(&g->data);
    spool__json_append(L, -1, &g->data, 0);
    ev->data = keep(L, g, g->data.data ? g->data.data : "", g->data.len);
    lua_pop(L, 2);
  }
  return 0;
}

static int field_true(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  int yes = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return yes;
}

static int l_store_append(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  check_store(L);
  lua_getfield(L, 1, "events");
  int events = lua_gettop(L);
  lua_getfield(L, 1, "writes");
  int writes = lua_gettop(L);
  lua_Integer first = opt_field_int(L, 1, "first");
  if (first < 1)
    first = 1;
  lua_Integer last = lua_istable(L, events) ? luaL_len(L, events) : 0;
  int nevents = last >= first ? (int)(last - first + 1) : 0;
  int nwrites = lua_istable(L, writes) ? (int)luaL_len(L, writes) : 0;
  luaL_checkstack(L, 8, "step too large");
  append_guard *g = lua_newuserdatauv(L, sizeof *g, 0);
  memset(g, 0, sizeof *g);
  luaL_setmetatable(L, APPEND_GUARD_MT);
  spool__store_op *op = g->op = new_op(L, SPOOL__STORE_APPEND);
  op->thread_id = keep_field(L, g, 1, "thread");
  op->agent = keep_field(L, g, 1, "agent");
  op->parent = keep_field(L, g, 1, "parent");
  op->status = keep_field(L, g, 1, "status");
  op->owner = keep_field(L, g, 1, "owner");
  op->expected_seq = opt_field_int(L, 1, "expected_seq");
  op->deadline = opt_field_int(L, 1, "deadline");
  op->now = opt_field_int(L, 1, "now");
  op->epoch = opt_field_int(L, 1, "epoch");
  op->lease_ms = opt_field_int(L, 1, "lease_ms");
  op->claim = field_true(L, 1, "claim");
  op->release = field_true(L, 1, "release");
  if (nevents > 0 &&
      (op->events = calloc((size_t)nevents, sizeof *op->events)) == NULL)
    return luaL_error(L, "out of memory");
  g->nevents = nevents;
  g->first = first;
  lua_pushcfunction(L, add_events);
  lua_pushvalue(L, -2); /* the guard */
  lua_pushvalue(L, events);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    /* Data JSON cannot hold (agent code may append anything) is the
     * caller's to mend, by its code; anything else is raised. */
    const char *why = lua_tostring(L, -1);
    size_t n = strlen(SPOOL__JSON_REFUSED);
    if (why == NULL || strncmp(why, SPOOL__JSON_REFUSED, n) != 0 ||
        strcmp(why + n, "out of memory") == 0)
      return lua_error(L);
    return spool__push_fail(L, "EINVAL: event %d's data cannot be stored: %s",
                            (int)(first + g->at), why + n);
  }
  if (nwrites > 0 &&
      (op->writes = calloc((size_t)nwrites, sizeof *op->writes)) == NULL)
    return luaL_error(L, "out of memory");
  for (int i = 0; i < nwrites; i++) {
    lua_geti(L, writes, i + 1);
    luaL_checktype(L, -1, LUA_TTABLE);
    spool__store_write *w = &op->writes[i];
    w->ns = keep_field(L, g, -1, "ns");
    w->key = keep_field(L, g, -1, "key");
    w->value = keep_field(L, g, -1, "value");
    lua_getfield(L, -1, "if_version");
    w->if_version = lua_isnil(L, -1) ? -1 : (long long)lua_tointeger(L, -1);
    lua_pop(L, 1);
    w->expires_at = opt_field_int(L, -1, "expires_at");
    lua_pop(L, 1);
  }
  op->nevents = nevents;
  op->nwrites = nwrites;
  g->op = NULL; /* submit owns it now */
  spool__buf_free(&g->data);
  return submit(L, op);
}

/* The ops that take a thread id and nothing else. */
static int thread_op(lua_State *L, spool__store_kind kind) {
  const char *id = luaL_checkstring(L, 1);
  check_store(L);
  spool__store_op *op = new_op(L, kind);
  op->thread_id = dup(L, op, id);
  return submit(L, op);
}

static int l_store_load(lua_State *L) {
  return thread_op(L, SPOOL__STORE_LOAD);
}

static int l_store_head(lua_State *L) {
  return thread_op(L, SPOOL__STORE_HEAD);
}

static int l_store_children(lua_State *L) {
  return thread_op(L, SPOOL__STORE_CHILDREN);
}

static int l_store_notify(lua_State *L) {
  return thread_op(L, SPOOL__STORE_NOTIFY);
}

static int l_store_delete(lua_State *L) {
  return thread_op(L, SPOOL__STORE_DELETE);
}

static int l_store_list(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  check_store(L);
  /* Read and check everything before allocating. */
  const char *status = opt_field_str(L, 1, "status");
  const char *agent = opt_field_str(L, 1, "agent");
  const char *before_id = opt_field_str(L, 1, "before_id");
  long long limit = opt_field_int(L, 1, "limit");
  long long before = opt_field_int(L, 1, "before");
  spool__store_op *op = new_op(L, SPOOL__STORE_LIST);
  op->filter_status = dup(L, op, status);
  op->filter_agent = dup(L, op, agent);
  op->key = dup(L, op, before_id);
  op->limit = limit;
  op->before = before;
  return submit(L, op);
}

static int l_store_counts(lua_State *L) {
  const char *agent = luaL_optstring(L, 1, NULL);
  check_store(L);
  spool__store_op *op = new_op(L, SPOOL__STORE_COUNTS);
  op->filter_agent = dup(L, op, agent);
  return submit(L, op);
}

static int l_store_state_get(lua_State *L) {
  const char *ns = luaL_checkstring(L, 1), *key = luaL_checkstring(L, 2);
  long long now = (long long)luaL_checkinteger(L, 3);
  check_store(L);
  spool__store_op *op = new_op(L, SPOOL__STORE_STATE_GET);
  op->ns = dup(L, op, ns);
  op->key = dup(L, op, key);
  op->now = now;
  return submit(L, op);
}

static int l_store_state_list(lua_State *L) {
  const char *ns = luaL_checkstring(L, 1);
  const char *after = luaL_optstring(L, 2, "");
  long long limit = (long long)luaL_optinteger(L, 3, 1000);
  long long now = (long long)luaL_checkinteger(L, 4);
  check_store(L);
  spool__store_op *op = new_op(L, SPOOL__STORE_STATE_LIST);
  op->ns = dup(L, op, ns);
  op->key = dup(L, op, after);
  op->limit = limit;
  op->now = now;
  return submit(L, op);
}

static int l_store_claim(lua_State *L) {
  const char *id = luaL_checkstring(L, 1), *owner = luaL_checkstring(L, 2);
  long long lease = (long long)luaL_checkinteger(L, 3);
  long long now = (long long)luaL_checkinteger(L, 4);
  int force = !lua_isnoneornil(L, 5);
  long long dead_epoch = (long long)luaL_optinteger(L, 5, 0);
  check_store(L);
  spool__store_op *op = new_op(L, SPOOL__STORE_CLAIM);
  op->force = force;
  op->epoch = dead_epoch;
  op->thread_id = dup(L, op, id);
  op->owner = dup(L, op, owner);
  op->lease_ms = lease;
  op->now = now;
  return submit(L, op);
}

static int l_store_release(lua_State *L) {
  const char *id = lua_toboolean(L, 1) ? luaL_checkstring(L, 1) : NULL;
  const char *owner = luaL_checkstring(L, 2);
  long long epoch = (long long)luaL_optinteger(L, 3, 0);
  long long free_at = (long long)luaL_optinteger(L, 4, 0);
  check_store(L);
  spool__store_op *op = new_op(L, SPOOL__STORE_RELEASE);
  op->thread_id = dup(L, op, id);
  op->owner = dup(L, op, owner);
  op->epoch = epoch;
  op->deadline = free_at;
  return submit(L, op);
}

static int l_store_ready(lua_State *L) {
  const char *owner = luaL_checkstring(L, 1);
  long long lease = (long long)luaL_checkinteger(L, 2);
  long long now = (long long)luaL_checkinteger(L, 3);
  long long limit = (long long)luaL_optinteger(L, 4, 0);
  check_store(L);
  spool__store_op *op = new_op(L, SPOOL__STORE_READY);
  op->owner = dup(L, op, owner);
  op->lease_ms = lease;
  op->now = now;
  op->limit = limit;
  return submit(L, op);
}

static int l_store_hold(lua_State *L) {
  const char *owner = luaL_checkstring(L, 1);
  long long lease = (long long)luaL_checkinteger(L, 2);
  int count = (int)luaL_checkinteger(L, 3);
  luaL_argcheck(L, lease > 0, 2, "a lease lasts a positive time");
  if (spool__store_hold(check_store(L), owner, lease, count) != 0)
    return luaL_error(L, "out of memory");
  return 0;
}

/* The ops that take only the time. */
static int time_op(lua_State *L, spool__store_kind kind) {
  long long now = (long long)luaL_checkinteger(L, 1);
  check_store(L);
  spool__store_op *op = new_op(L, kind);
  op->now = now;
  return submit(L, op);
}

static int l_store_backlog(lua_State *L) {
  return time_op(L, SPOOL__STORE_BACKLOG);
}

static int l_store_due(lua_State *L) {
  return time_op(L, SPOOL__STORE_DUE);
}

static int l_store_purge(lua_State *L) {
  long long now = (long long)luaL_checkinteger(L, 1);
  long long before = (long long)luaL_checkinteger(L, 2);
  check_store(L);
  spool__store_op *op = new_op(L, SPOOL__STORE_PURGE);
  op->now = now;
  op->finished_before = before;
  return submit(L, op);
}

static int l_store_version_put(lua_State *L) {
  const char *hash = luaL_checkstring(L, 1), *agent = luaL_checkstring(L, 2);
  const char *sources = luaL_checkstring(L, 3);
  long long now = (long long)luaL_checkinteger(L, 4);
  check_store(L);
  spool__store_op *op = new_op(L, SPOOL__STORE_VERSION_PUT);
  op->key = dup(L, op, hash);
  op->agent = dup(L, op, agent);
  op->value = dup(L, op, sources);
  op->now = now;
  return submit(L, op);
}

static int l_store_version_get(lua_State *L) {
  const char *hash = luaL_checkstring(L, 1);
  check_store(L);
  spool__store_op *op = new_op(L, SPOOL__STORE_VERSION_GET);
  op->key = dup(L, op, hash);
  return submit(L, op);
}

static int l_store_migrate(lua_State *L) {
  const char *from = luaL_checkstring(L, 1);
  long long now = (long long)luaL_checkinteger(L, 2);
  check_store(L);
  spool__store_op *op = new_op(L, SPOOL__STORE_MIGRATE);
  op->value = dup(L, op, from);
  op->now = now;
  return submit(L, op);
}

static int l_crash_point(lua_State *L) {
  spool__crash_point(luaL_checkstring(L, 1));
  return 0;
}

void spool__open_store(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"store_open", l_store_open},
      {"store_append", l_store_append},
      {"store_load", l_store_load},
      {"store_head", l_store_head},
      {"store_children", l_store_children},
      {"store_list", l_store_list},
      {"store_counts", l_store_counts},
      {"store_state_get", l_store_state_get},
      {"store_state_list", l_store_state_list},
      {"store_claim", l_store_claim},
      {"store_release", l_store_release},
      {"store_hold", l_store_hold},
      {"store_ready", l_store_ready},
      {"store_backlog", l_store_backlog},
      {"store_notify", l_store_notify},
      {"store_delete", l_store_delete},
      {"store_due", l_store_due},
      {"store_purge", l_store_purge},
      {"store_version_put", l_store_version_put},
      {"store_version_get", l_store_version_get},
      {"store_migrate", l_store_migrate},
      {"crash_point", l_crash_point},
      {NULL, NULL},
  };
  lua_pushlightuserdata(L, spool__engine_of(L));
  luaL_setfuncs(L, fns, 1);
  static const luaL_Reg no_methods[] = {{NULL, NULL}};
  spool__class(L, APPEND_GUARD_MT, no_methods, append_guard_gc, NULL);
  lua_pop(L, 1);
}
