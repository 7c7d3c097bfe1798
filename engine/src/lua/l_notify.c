/*
 * l_notify.c: what other workers tell this one through PostgreSQL
 * (spool.core.store_listen), over io/pg_listen.c. Each notification's
 * payload (a thread id) is gathered; the callback runs as a task of its
 * own with the ids gathered since it last ran, each once.
 *
 *   store_listen(url, callback) -> listener   callback({ id, ... })
 *   listener:up()      -> is its connection up now
 *   listener:close()
 */
#include <stdlib.h>
#include <string.h>

#include "io/pg_listen.h"
#include "spool_int.h"

#define LISTENER_MT "spool.Listener"
#define MAX_GATHERED (64u << 10) /* bytes of ids between two callbacks */

typedef struct listener {
  spool_engine *e;
  spool__pg_listener *pg;
  uv_timer_t soon; /* runs the callback on the next loop turn */
  spool__buf ids;  /* NUL-separated, since the last callback */
  int callback_ref, self_ref;
  int closed;
} listener;

typedef struct box {
  listener *l; /* NULL once closed */
} box;

static void on_timer_closed(uv_handle_t *h) {
  listener *l = h->data;
  spool__buf_free(&l->ids);
  free(l);
}

static void on_callback_done(spool__task *t, int how, int nres, void *ud) {
  (void)nres;
  (void)ud;
  if (how == SPOOL__TASK_ERROR)
    spool__log(t->e, SPOOL__LOG_ERROR, "a notification's handler failed: %s",
               lua_tostring(t->e->L, -1));
}

/* stack: listener -> (spawns the callback with the ids gathered) */
static int start_callback(lua_State *L) {
  listener *l = lua_touserdata(L, 1);
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, l->callback_ref);
  lua_newtable(L);
  int n = 0;
  for (size_t off = 0; off < l->ids.len;) {
    const char *id = l->ids.data + off;
    lua_pushstring(L, id);
    lua_rawseti(L, -2, ++n);
    off += strlen(id) + 1;
  }
  spool__buf_clear(&l->ids);
  spool__task_spawn(l->e, L, 1, on_callback_done, NULL);
  return 0;
}

static void on_soon(uv_timer_t *t) {
  listener *l = t->data;
  if (l->closed || l->ids.len == 0)
    return;
  lua_State *L = l->e->L;
  lua_pushcfunction(L, start_callback);
  lua_pushlightuserdata(L, l);
  if (spool__pcall(L, 1, 0) != LUA_OK) {
    spool__log(l->e, SPOOL__LOG_ERROR, "cannot handle a notification: %s",
               lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

static int gathered(const spool__buf *ids, const char *id) {
  for (size_t off = 0; off < ids->len;) {
    if (strcmp(ids->data + off, id) == 0)
      return 1;
    off += strlen(ids->data + off) + 1;
  }
  return 0;
}

static void on_notified(const char *payload, void *ud) {
  listener *l = ud;
  size_t n = strlen(payload);
  /* Past the bound, ids are dropped: their followers poll the store. */
  if (!gathered(&l->ids, payload) && l->ids.len + n < MAX_GATHERED)
    spool__buf_add(&l->ids, payload, n + 1);
  if (!uv_is_active((uv_handle_t *)&l->soon))
    uv_timer_start(&l->soon, on_soon, 0, 0);
}

static void close_listener(lua_State *L, box *b) {
  listener *l = b->l;
  if (l == NULL)
    return;
  b->l = NULL;
  l->closed = 1;
  luaL_unref(L, LUA_REGISTRYINDEX, l->callback_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, l->self_ref);
  spool__pg_listen_close(l->pg);
  uv_close((uv_handle_t *)&l->soon, on_timer_closed);
}

static int listener_close(lua_State *L) {
  close_listener(L, luaL_checkudata(L, 1, LISTENER_MT));
  return 0;
}

static int listener_up(lua_State *L) {
  box *b = luaL_checkudata(L, 1, LISTENER_MT);
  lua_pushboolean(L, b->l && spool__pg_listening(b->l->pg));
  return 1;
}

static int l_store_listen(lua_State *L) {
  spool_engine *e = lua_touserdata(L, lua_upvalueindex(1));
  const char *url = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->l = NULL;
  luaL_setmetatable(L, LISTENER_MT);
  listener *l = calloc(1, sizeof *l);
  if (l == NULL)
    return luaL_error(L, "out of memory");
  l->e = e;
  uv_timer_init(e->loop, &l->soon);
  l->soon.data = l;
  l->pg = spool__pg_listen(e->loop, url, "spool", on_notified, l);
  if (l->pg == NULL) {
    l->closed = 1;
    uv_close((uv_handle_t *)&l->soon, on_timer_closed);
    return luaL_error(L, "out of memory");
  }
  lua_pushvalue(L, 2);
  l->callback_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  l->self_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* open until closed */
  b->l = l;
  return 1;
}

void spool__open_notify(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"close", listener_close},
      {"up", listener_up},
      {NULL, NULL},
  };
  spool__class(L, LISTENER_MT, methods, listener_close, listener_close);
  lua_pop(L, 1);
  lua_pushlightuserdata(L, spool__engine_of(L));
  lua_pushcclosure(L, l_store_listen, 1);
  lua_setfield(L, -2, "store_listen");
}
