/*
 * l_sse.c: spool.core.sse, the event stream parser of sse.c for Lua.
 *
 *   local p = core.sse([max_event_bytes])
 *   p:feed(bytes) -> { { type=, data=, id= }, ... }   the events completed
 *                 |  nil, "EPROTO: ..."               (then always)
 *   p:reconnect() -> last_id | nil, retry_ms | nil     where a client that
 *                    reconnects resumes (Last-Event-ID), and how long it
 *                    waits first, as the stream last said
 *
 * Providers feed it the chunks of a streamed response as they arrive.
 */
#include "spool_int.h"
#include "codec/sse.h"

#define SSE_MT "spool.SSE"

static int push_event(void *ud, const char *type, size_t type_len,
                      const char *data, size_t data_len, const char *id) {
  lua_State *L = ud;
  lua_createtable(L, 0, 3);
  lua_pushlstring(L, type, type_len);
  lua_setfield(L, -2, "type");
  lua_pushlstring(L, data, data_len);
  lua_setfield(L, -2, "data");
  lua_pushstring(L, id);
  lua_setfield(L, -2, "id");
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  return 0;
}

static int sse_feed(lua_State *L) {
  spool__sse *p = luaL_checkudata(L, 1, SSE_MT);
  size_t len;
  const char *bytes = luaL_checklstring(L, 2, &len);
  lua_newtable(L);
  if (spool__sse_feed(p, bytes, len, push_event, L) != 0) {
    return spool__push_fail(L,
                            "EPROTO: the event stream has a line or an event "
                            "larger than %I bytes",
                            (lua_Integer)p->max_event);
  }
  return 1;
}

static int sse_reconnect(lua_State *L) {
  spool__sse *p = luaL_checkudata(L, 1, SSE_MT);
  if (p->id.len > 0)
    lua_pushlstring(L, p->id.data, p->id.len);
  else
    lua_pushnil(L);
  if (p->retry_ms >= 0)
    lua_pushinteger(L, p->retry_ms);
  else
    lua_pushnil(L);
  return 2;
}

static int sse_gc(lua_State *L) {
  spool__sse_free(luaL_checkudata(L, 1, SSE_MT));
  return 0;
}

static int l_core_sse(lua_State *L) {
  lua_Integer max = luaL_optinteger(L, 1, 0);
  luaL_argcheck(L, max >= 0, 1, "must not be negative");
  spool__sse *p = lua_newuserdatauv(L, sizeof *p, 0);
  spool__sse_init(p, (size_t)max);
  luaL_setmetatable(L, SSE_MT);
  return 1;
}

void spool__open_sse(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"feed", sse_feed},
      {"reconnect", sse_reconnect},
      {NULL, NULL},
  };
  spool__class(L, SSE_MT, methods, sse_gc, NULL);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_core_sse);
  lua_setfield(L, -2, "sse");
}
