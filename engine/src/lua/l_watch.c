/*
 * l_watch.c: watching the folders agents live in (spool.core.watch). Each
 * folder gets a uv_fs_event; changes (a save, a rename-and-replace, a file
 * added or deleted) are gathered, and after `debounce_ms` without another
 * change the callback runs once, as a task of its own, with the names that
 * changed. Which code is current is decided in Lua (spool.run.loader), at
 * step boundaries; this file only notices and reports.
 *
 *   watch({ dir, ... }, callback, debounce_ms [, { name, ... }])
 *     -> watcher, missing | nil, err
 * With a list of names, only changes to entries of those names count
 * (the parent of agents/ also holds logs and databases that change all
 * the time).
 *   watcher:close()
 *
 * A folder that does not exist is skipped and listed in `missing`; the
 * caller watches its parent to notice when it appears.
 */
#include <stdlib.h>
#include <string.h>

#include "spool_int.h"

#define WATCHER_MT "spool.Watcher"
#define MAX_DIRS 8

typedef struct watcher {
  spool_engine *e;
  uv_fs_event_t events[MAX_DIRS];
  uv_timer_t debounce;
  int ndirs;
  int open_handles;
  int closed;
  int callback_ref;
  int self_ref;
  unsigned debounce_ms;
  spool__buf changed; /* names, NUL-separated, since the last callback */
  spool__buf only;    /* names that count, NUL-separated; empty: all */
} watcher;

typedef struct box {
  watcher *w; /* NULL once closed */
} box;

static void on_handle_closed(uv_handle_t *h) {
  watcher *w = h->data;
  if (--w->open_handles == 0) {
    spool__buf_free(&w->changed);
    spool__buf_free(&w->only);
    free(w);
  }
}

static void on_callback_done(spool__task *t, int how, int nres, void *ud) {
  (void)nres;
  (void)ud;
  if (how == SPOOL__TASK_ERROR)
    spool__log(t->e, SPOOL__LOG_ERROR, "reload failed: %s",
               lua_tostring(t->e->L, -1));
}

/* stack: watcher -> (spawns the callback with the changed names) */
static int start_callback(lua_State *L) {
  watcher *w = lua_touserdata(L, 1);
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->callback_ref);
  lua_newtable(L);
  int n = 0;
  for (size_t off = 0; off < w->changed.len;) {
    const char *name = w->changed.data + off;
    lua_pushstring(L, name);
    lua_rawseti(L, -2, ++n);
    off += strlen(name) + 1;
  }
  spool__buf_clear(&w->changed);
  spool__task_spawn(w->e, L, 1, on_callback_done, NULL);
  return 0;
}

static void on_quiet(uv_timer_t *t) {
  watcher *w = t->data;
  if (w->closed)
    return;
  lua_State *L = w->e->L;
  lua_pushcfunction(L, start_callback);
  lua_pushlightuserdata(L, w);
  if (spool__pcall(L, 1, 0) != LUA_OK) {
    spool__log(w->e, SPOOL__LOG_ERROR, "cannot start a reload: %s",
               lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

/* Is `name` in the NUL-separated list? */
static int listed(const spool__buf *list, const char *name) {
  for (size_t off = 0; off < list->len;) {
    const char *item = list->data + off;
    if (strcmp(item, name) == 0)
      return 1;
    off += strlen(item) + 1;
  }
  return 0;
}

static void on_change(uv_fs_event_t *h, const char *name, int events,
                      int status) {
  watcher *w = h->data;
  (void)events;
  const char *n = name ? name : "";
  if (status < 0 || w->closed || (w->only.len > 0 && !listed(&w->only, n)))
    return;
  spool__log(w->e, SPOOL__LOG_DEBUG, "watch: %s changed",
             name ? name : "(a file)");
  /* Remember each name once; a burst of saves is one change. */
  int seen = listed(&w->changed, n);
  if (!seen && w->changed.len < (64u << 10))
    spool__buf_add(&w->changed, n, strlen(n) + 1);
  uv_timer_start(&w->debounce, on_quiet, w->debounce_ms, 0);
}

static void close_watcher(lua_State *L, box *b) {
  watcher *w = b->w;
  if (w == NULL)
    return;
  b->w = NULL;
  w->closed = 1;
  luaL_unref(L, LUA_REGISTRYINDEX, w->callback_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, w->self_ref);
  for (int i = 0; i < w->ndirs; i++)
    uv_close((uv_handle_t *)&w->events[i], on_handle_closed);
  uv_close((uv_handle_t *)&w->debounce, on_handle_closed);
}

static int watcher_close(lua_State *L) {
  close_watcher(L, luaL_checkudata(L, 1, WATCHER_MT));
  return 0;
}

static int l_core_watch(lua_State *L) {
  spool_engine *e = lua_touserdata(L, lua_upvalueindex(1));
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_Integer debounce = luaL_optinteger(L, 3, 50);
  luaL_argcheck(L, debounce >= 0 && debounce <= 60000, 3, "0 to 60000 ms");
  int ndirs = (int)luaL_len(L, 1);
  luaL_argcheck(L, ndirs >= 1 && ndirs <= MAX_DIRS, 1, "1 to 8 folders");
  lua_newtable(L); /* missing */
  int missing = lua_gettop(L), nmissing = 0;
  box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->w = NULL;
  luaL_setmetatable(L, WATCHER_MT);
  watcher *w = calloc(1, sizeof *w);
  if (w == NULL)
    return luaL_error(L, "out of memory");
  w->e = e;
  w->debounce_ms = (unsigned)debounce;
  if (lua_istable(L, 4)) {
    for (lua_Integer i = 1; i <= luaL_len(L, 4); i++) {
      lua_geti(L, 4, i);
      const char *name = lua_tostring(L, -1);
      if (name)
        spool__buf_add(&w->only, name, strlen(name) + 1);
      lua_pop(L, 1);
    }
  }
  uv_timer_init(e->loop, &w->debounce);
  w->debounce.data = w;
  w->open_handles = 1;
  for (int i = 0; i < ndirs; i++) {
    lua_geti(L, 1, i + 1);
    const char *dir = lua_tostring(L, -1);
    uv_fs_event_init(e->loop, &w->events[i]);
    w->events[i].data = w;
    w->open_handles++;
    w->ndirs++;
    int rc =
        dir ? uv_fs_event_start(&w->events[i], on_change, dir, 0) : UV_EINVAL;
    if (rc == UV_ENOENT) {
      lua_pushvalue(L, -1);
      lua_rawseti(L, missing, ++nmissing);
      rc = 0;
    }
    if (rc != 0) {
      int n = spool__push_fail(L, "EIO: cannot watch %s: %s", dir ? dir : "?",
                               uv_strerror(rc));
      w->callback_ref = w->self_ref = LUA_NOREF;
      b->w = w;
      close_watcher(L, b);
      return n;
    }
    lua_pop(L, 1);
  }
  lua_pushvalue(L, 2);
  w->callback_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  w->self_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* open until closed */
  b->w = w;
  lua_pushvalue(L, missing);
  return 2;
}

void spool__open_watch(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"close", watcher_close},
      {NULL, NULL},
  };
  spool__class(L, WATCHER_MT, methods, watcher_close, watcher_close);
  lua_pop(L, 1);
  lua_pushlightuserdata(L, spool__engine_of(L));
  lua_pushcclosure(L, l_core_watch, 1);
  lua_setfield(L, -2, "watch");
}
