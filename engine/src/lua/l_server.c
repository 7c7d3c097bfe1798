/*
 * l_server.c: spool.core.listen, an HTTP server whose handler is a Lua
 * function run as a task per request, so a handler may sleep or make
 * requests of its own while other requests proceed.
 *
 *   listen{ host=, port=, handler=function(req) ... end,
 *           max_body=, timeout_ms=, max_connections=, max_per_peer= }
 *     -> server    (the limits as in server.h; 0 or nil: the default)
 *   req    = { method=, target=, path=, query=, headers={lower-case}, body=,
 *              peer=, stream= }
 *   return { status=200, headers={name=value}, body="..." }  or a string
 *   return { drop = true }    closes the connection with no answer at all
 *   server:port(), server:connections(), server:drain(), server:close()
 *
 * A handler may stream its response instead (Server-Sent Events):
 * `local s = req.stream(status, headers)` sends the head at once; then
 * `s:send(data)` -> true | nil, "EPIPE: ..." as often as it likes; the
 * stream ends (and the connection closes) when the handler returns.
 *
 * A server stays open until closed (or its engine is freed), whether or not
 * Lua still references it. A handler that raises answers 500 and logs the
 * error; the message never reaches the client.
 */
#include <stdlib.h>
#include <string.h>

#include "io/server.h"
#include "spool_int.h"

#define SERVER_MT "spool.Server"
#define STREAM_MT "spool.Stream"

typedef struct lserver {
  spool__server *s; /* NULL once closed */
  spool_engine *e;
  int handler_ref;
  int self_ref; /* pins the userdata while the server is open */
} lserver;

/* What req.stream and the stream it returns hold: the request, while its
 * handler runs (NULL after). Kept in the request (user pointer) too, so
 * either side can cut the link when it goes first. */
typedef struct stream_box {
  spool__srv_req *req;
} stream_box;

static const char internal_error[] =
    "{\"error\":{\"code\":\"internal\",\"message\":\"internal error "
    "(logged)\"}}";

static void respond_500(spool__srv_req *req) {
  spool__srv_respond(req, 500, "Content-Type: application/json\r\n",
                     internal_error, sizeof internal_error - 1);
}

/* stack: ... -> ..., "Name: value\r\n..." from the table at idx (if any) */
static void headers_block(lua_State *L, int idx) {
  int n = 0;
  if (lua_istable(L, idx)) {
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "response headers must map strings to strings");
      const char *name = lua_tostring(L, -2), *v = lua_tostring(L, -1);
      if (strpbrk(name, ":\r\n") || strpbrk(v, "\r\n"))
        luaL_error(L, "response header '%s' is malformed", name);
      luaL_checkstack(L, 3, "too many response headers");
      lua_pushfstring(L, "%s: %s\r\n", name, v);
      lua_replace(L, -2); /* stack: lines..., key, line */
      lua_insert(L, -2);  /* stack: lines..., line, key */
      n++;
    }
  }
  lua_concat(L, n); /* n == 0 pushes "" */
}

/* stack: req lightuserdata, result -> (responds) */
static int respond_from_lua(lua_State *L) {
  spool__srv_req *req = lua_touserdata(L, 1);
  int status = 200;
  size_t len = 0;
  const char *body = "";
  if (lua_type(L, 2) == LUA_TSTRING) {
    body = lua_tolstring(L, 2, &len);
  } else {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_getfield(L, 2, "drop") == LUA_TBOOLEAN && lua_toboolean(L, -1)) {
      spool__srv_abandon(req);
      return 0;
    }
    lua_getfield(L, 2, "status");
    status = (int)luaL_optinteger(L, -1, 200);
    if (status < 100 || status > 599)
      return luaL_error(L, "handler returned an invalid status %d", status);
    lua_getfield(L, 2, "body");
    body = luaL_optlstring(L, -1, "", &len);
    lua_getfield(L, 2, "headers");
  }
  headers_block(L, lua_gettop(L));
  spool__srv_respond(req, status, lua_tostring(L, -1), body, len);
  return 0;
}

static void on_handler_done(spool__task *t, int how, int nres, void *ud) {
  spool__srv_req *req = ud;
  lua_State *L = t->e->L;
  stream_box *box = spool__srv_req_user(req);
  if (box) {
    box->req = NULL;
    spool__srv_req_set_user(req, NULL);
  }
  if (spool__srv_req_streaming(req)) {
    if (how == SPOOL__TASK_ERROR)
      spool__log(t->e, SPOOL__LOG_ERROR, "HTTP stream for %s failed: %s",
                 spool__srv_req_target(req), lua_tostring(L, -1));
    spool__srv_stream_end(req); /* the head is out: no status to change */
    return;
  }
  if (how == SPOOL__TASK_CANCELLED) {
    spool__srv_abandon(req);
    return;
  }
  if (how == SPOOL__TASK_ERROR) {
    spool__log(t->e, SPOOL__LOG_ERROR, "HTTP handler for %s %s failed: %s",
               spool__srv_req_method(req), spool__srv_req_target(req),
               lua_tostring(L, -1));
    respond_500(req);
    return;
  }
  lua_pushcfunction(L, respond_from_lua);
  lua_pushlightuserdata(L, req);
  if (nres > 0) {
    lua_xmove(t->co, L, nres);
    lua_settop(L, lua_gettop(L) - nres + 1); /* the first result only */
  } else {
    lua_pushnil(L);
  }
  if (spool__pcall(L, 2, 0) != LUA_OK) {
    spool__log(t->e, SPOOL__LOG_ERROR, "HTTP handler for %s %s: %s",
               spool__srv_req_method(req), spool__srv_req_target(req),
               lua_tostring(L, -1));
    lua_pop(L, 1);
    respond_500(req);
  }
}

static stream_box *check_stream(lua_State *L) {
  return luaL_checkudata(L, 1, STREAM_MT);
}

/* req.stream(status, headers) -> stream */
static int req_stream(lua_State *L) {
  stream_box *box = lua_touserdata(L, lua_upvalueindex(1));
  int status = (int)luaL_checkinteger(L, 1);
  luaL_argcheck(L, status >= 200 && status <= 599, 1, "an HTTP status");
  if (box->req == NULL || spool__srv_req_streaming(box->req))
    return luaL_error(L, "req.stream: the response has begun or ended");
  lua_settop(L, 2);
  headers_block(L, 2);
  if (spool__srv_stream_start(box->req, status, lua_tostring(L, -1)) != 0) {
    return spool__push_fail(L, "EPIPE: the client went away");
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  return 1;
}

static int stream_send(lua_State *L) {
  stream_box *box = check_stream(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  if (box->req == NULL || !spool__srv_req_streaming(box->req) ||
      spool__srv_stream_send(box->req, data, len) != 0) {
    return spool__push_fail(L, "EPIPE: the client went away");
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int stream_gc(lua_State *L) {
  stream_box *box = check_stream(L);
  if (box->req)
    spool__srv_req_set_user(box->req, NULL);
  box->req = NULL;
  return 0;
}

/* stack: lserver, req -> (spawns the handler task) */
static int start_handler(lua_State *L) {
  lserver *ls = lua_touserdata(L, 1);
  spool__srv_req *req = lua_touserdata(L, 2);
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, ls->handler_ref);
  lua_createtable(L, 0, 8);
  lua_pushstring(L, spool__srv_req_method(req));
  lua_setfield(L, -2, "method");
  const char *target = spool__srv_req_target(req);
  lua_pushstring(L, target);
  lua_setfield(L, -2, "target");
  const char *q = strchr(target, '?');
  lua_pushlstring(L, target, q ? (size_t)(q - target) : strlen(target));
  lua_setfield(L, -2, "path");
  lua_pushstring(L, q ? q + 1 : "");
  lua_setfield(L, -2, "query");
  lua_pushstring(L, spool__srv_req_peer(req));
  lua_setfield(L, -2, "peer");
  size_t blen;
  const char *body = spool__srv_req_body(req, &blen);
  lua_pushlstring(L, body, blen);
  lua_setfield(L, -2, "body");
  lua_newtable(L);
  const char *name, *value;
  for (int i = 0; (name = spool__srv_req_header(req, i, &value)) != NULL; i++) {
    lua_pushstring(L, value);
    lua_setfield(L, -2, name);
  }
  lua_setfield(L, -2, "headers");
  stream_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->req = req;
  luaL_setmetatable(L, STREAM_MT);
  spool__srv_req_set_user(req, box);
  lua_pushcclosure(L, req_stream, 1);
  lua_setfield(L, -2, "stream");
  spool__task_spawn(ls->e, L, 1, on_handler_done, req);
  return 0;
}

static void on_request(spool__srv_req *req, void *ud) {
  lserver *ls = ud;
  lua_State *L = ls->e->L;
  lua_pushcfunction(L, start_handler);
  lua_pushlightuserdata(L, ls);
  lua_pushlightuserdata(L, req);
  if (spool__pcall(L, 2, 0) != LUA_OK) {
    spool__log(ls->e, SPOOL__LOG_ERROR, "cannot start an HTTP handler: %s",
               lua_tostring(L, -1));
    lua_pop(L, 1);
    /* Out of memory after the stream box was made: cut its link first. */
    stream_box *box = spool__srv_req_user(req);
    if (box) {
      box->req = NULL;
      spool__srv_req_set_user(req, NULL);
    }
    respond_500(req);
  }
}

static lserver *check_server(lua_State *L) {
  return luaL_checkudata(L, 1, SERVER_MT);
}

static int server_close(lua_State *L) {
  lserver *ls = check_server(L);
  if (ls->s) {
    spool__server_close(ls->s);
    ls->s = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, ls->handler_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, ls->self_ref);
    ls->handler_ref = ls->self_ref = LUA_NOREF;
  }
  return 0;
}

static int server_drain(lua_State *L) {
  lserver *ls = check_server(L);
  if (ls->s)
    spool__server_drain(ls->s);
  return 0;
}

static int server_port(lua_State *L) {
  lserver *ls = check_server(L);
  luaL_argcheck(L, ls->s != NULL, 1, "server is closed");
  lua_pushinteger(L, spool__server_port(ls->s));
  return 1;
}

static int server_connections(lua_State *L) {
  lserver *ls = check_server(L);
  lua_pushinteger(L, ls->s ? spool__server_connections(ls->s) : 0);
  return 1;
}

static int server_tostring(lua_State *L) {
  lserver *ls = check_server(L);
  if (ls->s)
    lua_pushfstring(L, "spool.Server (port %d)", spool__server_port(ls->s));
  else
    lua_pushliteral(L, "spool.Server (closed)");
  return 1;
}

static int opt_field(lua_State *L, const char *name, lua_Integer def) {
  lua_getfield(L, 1, name);
  lua_Integer v = luaL_optinteger(L, -1, def);
  lua_pop(L, 1);
  return (int)v;
}

static int l_core_listen(lua_State *L) {
  spool_engine *e = lua_touserdata(L, lua_upvalueindex(1));
  luaL_checktype(L, 1, LUA_TTABLE);
  spool__server_opts o = {0};
  lua_getfield(L, 1, "host");
  o.host = luaL_optstring(L, -1, "127.0.0.1");
  o.port = opt_field(L, "port", 0);
  o.max_body = (size_t)opt_field(L, "max_body", 0);
  o.request_timeout_ms = (unsigned)opt_field(L, "timeout_ms", 0);
  o.max_connections = opt_field(L, "max_connections", 0);
  o.max_per_peer = opt_field(L, "max_per_peer", 0);
  lua_getfield(L, 1, "handler");
  luaL_argcheck(L, lua_isfunction(L, -1), 1, "handler must be a function");
  lserver *ls = lua_newuserdatauv(L, sizeof *ls, 0);
  ls->s = NULL;
  ls->e = e;
  ls->handler_ref = ls->self_ref = LUA_NOREF;
  luaL_setmetatable(L, SERVER_MT);
  char err[200];
  if (spool__server_start(e->loop, &o, on_request, ls, &ls->s, err,
                          sizeof err) != 0) {
    return spool__push_fail(L, "ELISTEN: %s", err);
  }
  lua_pushvalue(L, -2);
  ls->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  ls->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

void spool__open_server(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"port", server_port},
      {"connections", server_connections},
      {"close", server_close},
      {"drain", server_drain},
      {NULL, NULL},
  };
  static const luaL_Reg stream_methods[] = {
      {"send", stream_send},
      {NULL, NULL},
  };
  spool__class(L, SERVER_MT, methods, server_close, server_close);
  lua_pushcfunction(L, server_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  spool__class(L, STREAM_MT, stream_methods, stream_gc, NULL);
  lua_pop(L, 1);
  lua_pushlightuserdata(L, spool__engine_of(L));
  lua_pushcclosure(L, l_core_listen, 1);
  lua_setfield(L, -2, "listen");
}
