/*
 * l_http.c: spool.core.http_request, the one way Lua code makes an HTTP
 * request. It starts a transfer on the engine's curl multi handle and yields
 * the calling task until the transfer ends.
 *
 *   http_request{ url=, method=, headers={name=value}, body=,
 *                 timeout_ms=, connect_timeout_ms=, max_response= }
 *     -> { status=, headers={lower-case name=value}, body=, seconds= }
 *     |  nil, "ECODE: message"   (ETIMEDOUT, ECONNECT, ETOOBIG, EHTTP)
 *
 * A response with any status is a response: deciding what a 500 means is
 * the caller's business. Only a transfer that did not complete is an error.
 * Header values never appear in errors (they may hold API keys).
 */
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "spool_int.h"

typedef struct http_op {
  spool__op op;
  spool__http_xfer *x;
  spool__task *t;
} http_op;

static void http_cancel(spool__op *op) {
  http_op *h = (http_op *)op;
  spool__http_cancel(h->x);
  free(h);
}

static const char *error_code(const char *msg) {
  if (strstr(msg, "timed out") || strstr(msg, "Timeout"))
    return "ETIMEDOUT";
  if (strstr(msg, "larger than"))
    return "ETOOBIG";
  if (strstr(msg, "connect") || strstr(msg, "resolve"))
    return "ECONNECT";
  return "EHTTP";
}

/* Builds the result of a finished transfer. stack: xfer -> result(s) */
static int push_result(lua_State *L) {
  spool__http_xfer *x = lua_touserdata(L, 1);
  const char *err = spool__http_error(x);
  if (err) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", error_code(err), err);
    return 2;
  }
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, spool__http_status(x));
  lua_setfield(L, -2, "status");
  const spool__buf *body = spool__http_body(x);
  lua_pushlstring(L, body->data ? body->data : "", body->len);
  lua_setfield(L, -2, "body");
  lua_pushnumber(L, spool__http_seconds(x));
  lua_setfield(L, -2, "seconds");
  lua_newtable(L);
  const spool__buf *hb = spool__http_headers(x);
  const char *p = hb->data, *end = hb->data ? hb->data + hb->len : NULL;
  while (p && p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *line_end = eol ? eol : end;
    const char *colon = memchr(p, ':', (size_t)(line_end - p));
    if (colon) {
      luaL_Buffer name;
      luaL_buffinit(L, &name);
      for (const char *c = p; c < colon; c++)
        luaL_addchar(&name, (char)((*c >= 'A' && *c <= 'Z') ? *c + 32 : *c));
      luaL_pushresult(&name);
      const char *v = colon + 1, *ve = line_end;
      while (v < ve && (*v == ' ' || *v == '\t'))
        v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
        ve--;
      lua_pushlstring(L, v, (size_t)(ve - v));
      lua_rawset(L, -3);
    }
    p = eol ? eol + 1 : end;
  }
  lua_setfield(L, -2, "headers");
  return 1;
}

static void on_done(spool__http_xfer *x, void *ud) {
  http_op *h = ud;
  spool__task *t = h->t;
  free(h);
  spool__task_wake_with(t, push_result, x);
}

static long opt_ms(lua_State *L, const char *field) {
  lua_getfield(L, 1, field);
  lua_Integer v = luaL_optinteger(L, -1, 0);
  lua_pop(L, 1);
  return (long)v;
}

static int l_http_request(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  spool_engine *e = lua_touserdata(L, lua_upvalueindex(1));
  spool__task *t = spool__task_check(L, "spool.http.request");
  spool__http_request r = {0};
  lua_getfield(L, 1, "url");
  r.url = luaL_checkstring(L, -1);
  lua_getfield(L, 1, "method");
  r.method = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "body");
  if (!lua_isnil(L, -1))
    r.body = luaL_checklstring(L, -1, &r.body_len);
  r.timeout_ms = opt_ms(L, "timeout_ms");
  r.connect_timeout_ms = opt_ms(L, "connect_timeout_ms");
  r.max_response = (size_t)opt_ms(L, "max_response");
  /* Header lines are built on the Lua stack, so an error frees them. */
  lua_getfield(L, 1, "headers");
  int nh = 0;
  const char *lines[64];
  if (lua_istable(L, -1)) {
    int ht = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, ht)) {
      if (nh == 64)
        return luaL_error(L, "spool.http.request: more than 64 headers");
      luaL_checkstack(L, 2, NULL);
      if (lua_type(L, -2) != LUA_TSTRING)
        return luaL_error(L, "spool.http.request: header names must be "
                             "strings");
      const char *name = lua_tostring(L, -2);
      const char *value = luaL_checkstring(L, -1);
      if (strpbrk(name, ":\r\n") || strpbrk(value, "\r\n"))
        return luaL_error(L,
                          "spool.http.request: header '%s' contains a "
                          "newline or a colon in its name",
                          name);
      lines[nh++] = lua_pushfstring(L, "%s: %s", name, value);
      lua_insert(L, -3); /* keep the line below the key and value */
      lua_pop(L, 1);
    }
  }
  r.headers = lines;
  r.nheaders = (size_t)nh;
  http_op *h = calloc(1, sizeof *h);
  if (h == NULL)
    return luaL_error(L, "out of memory");
  h->op.cancel = http_cancel;
  h->t = t;
  char err[256];
  if (spool__http_start(e->http, &r, on_done, h, &h->x, err, sizeof err)) {
    free(h);
    lua_pushnil(L);
    lua_pushfstring(L, "EHTTP: %s", err);
    return 2;
  }
  return spool__task_wait(L, t, &h->op);
}

void spool__open_http(lua_State *L) {
  lua_pushlightuserdata(L, spool__engine_of(L));
  lua_pushcclosure(L, l_http_request, 1);
  lua_setfield(L, -2, "http_request");
}
