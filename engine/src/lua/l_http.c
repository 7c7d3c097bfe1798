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
 * conns = a connection cache from http_conns() makes the request reuse
 * only that cache's connections (a run keeps one for its model calls to
 * local servers; see http.h for why). conns:close() lets its connections
 * go once no transfer uses them; so does the GC.
 *
 * guard = a rule list from net_guard{ "127.0.0.1:9000", "10.0.0.0/8", ... }
 * makes the request an agent's: each connection it makes is checked, and
 * loopback, link-local and metadata addresses are refused (EACCES) unless
 * a rule allows them (netguard.h has the syntax). redirects = n follows up
 * to n redirects, each checked the same way.
 *
 * A response with any status is a response: deciding what a 500 means is
 * the caller's business. Only a transfer that did not complete is an error.
 * Header values never appear in errors (they may hold API keys).
 *
 * Mail goes through the same transfers: mail_request takes the same table
 * with smtp(s):// or imap(s):// URLs and protocols limited to those, plus
 * mail_from=, mail_rcpt={...}, upload=true (the body is the message),
 * username=, password=, require_tls= (STARTTLS or fail); the result's
 * status is the server's last reply code, its body what IMAP answered.
 *
 * A streamed response (a model's Server-Sent Events) is read as it comes,
 * in the style of OpenResty's cosockets:
 *
 *   local s = http_stream{ same fields as http_request }   starts it
 *   s:head([timeout_ms]) -> status, headers | nil, "ECODE: ..."
 *   s:read([timeout_ms]) -> bytes | nil (the end) | nil, "ECODE: ..."
 *   s:close()                                 stops it (so does the GC)
 *
 * A wait that times out answers ETIMEDOUT and leaves the transfer going:
 * the caller decides whether to wait again or close. A task cancelled
 * while it waits stops the transfer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/http.h"
#include "spool_int.h"

#define CONNS_MT "spool.HttpConns"
#define GUARD_MT "spool.NetGuard"

/* A guard's rules: what net_guard() makes. */
typedef struct net_guard {
  size_t n;
  spool__net_rule rules[];
} net_guard;

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

/* stack: ... -> ..., { lower-case name = value } from header lines */
static void push_headers(lua_State *L, const spool__buf *hb) {
  lua_newtable(L);
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
}

/* Builds the result of a finished transfer. stack: xfer -> result(s) */
static int push_result(lua_State *L) {
  spool__http_xfer *x = lua_touserdata(L, 1);
  const char *err = spool__http_error(x);
  if (err) {
    return spool__push_fail(L, "%s: %s", spool__http_error_name(x), err);
  }
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, spool__http_status(x));
  lua_setfield(L, -2, "status");
  const spool__buf *body = spool__http_body(x);
  lua_pushlstring(L, body->data ? body->data : "", body->len);
  lua_setfield(L, -2, "body");
  lua_pushnumber(L, spool__http_seconds(x));
  lua_setfield(L, -2, "seconds");
  push_headers(L, spool__http_headers(x));
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

/* The mail fields of a request table at index 1 (mail_request only).
 * Addresses with control characters are refused: they would become SMTP
 * commands of their own. */
static void read_mail_fields(lua_State *L, spool__http_request *r,
                             const char **rcpt) {
  r->protocols = lua_tostring(L, lua_upvalueindex(2));
  lua_getfield(L, 1, "mail_from");
  r->mail_from = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "username");
  r->username = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "password");
  r->password = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "upload");
  r->upload = lua_toboolean(L, -1);
  lua_getfield(L, 1, "require_tls");
  r->require_tls = lua_toboolean(L, -1);
  if (r->mail_from && strpbrk(r->mail_from, "\r\n"))
    luaL_error(L, "spool.core.mail_request: mail_from holds a line break");
  lua_getfield(L, 1, "mail_rcpt");
  if (lua_istable(L, -1)) {
    int t = lua_gettop(L);
    size_t n = lua_rawlen(L, t);
    if (n > 64)
      luaL_error(L, "spool.core.mail_request: more than 64 recipients");
    for (size_t i = 0; i < n; i++) {
      luaL_checkstack(L, 1, NULL);
      lua_rawgeti(L, t, (lua_Integer)i + 1); /* stays on the stack */
      rcpt[i] = luaL_checkstring(L, -1);
      if (strpbrk(rcpt[i], "\r\n"))
        luaL_error(L, "spool.core.mail_request: a recipient holds a line "
                      "break");
    }
    r->mail_rcpt = rcpt;
    r->nrcpt = n;
  }
}

/* Fills r from the request table at index 1. Header lines are built on
 * the Lua stack (so an error frees them) and stay there for the caller;
 * `lines` and `rcpt` must hold 64. */
static void read_request(lua_State *L, spool__http_request *r,
                         const char **lines, const char **rcpt) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checkstack(L, 16, NULL);
  lua_getfield(L, 1, "url");
  r->url = luaL_checkstring(L, -1);
  lua_getfield(L, 1, "method");
  r->method = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "body");
  if (!lua_isnil(L, -1))
    r->body = luaL_checklstring(L, -1, &r->body_len);
  /* Only mail_request (the closure with the protocols upvalue) reaches
   * beyond http(s): agents' spool.http must not read file:// or ldap://. */
  if (!lua_isnoneornil(L, lua_upvalueindex(2)))
    read_mail_fields(L, r, rcpt);
  r->timeout_ms = opt_ms(L, "timeout_ms");
  r->connect_timeout_ms = opt_ms(L, "connect_timeout_ms");
  r->max_response = (size_t)opt_ms(L, "max_response");
  lua_getfield(L, 1, "conns");
  spool__http_conns **conns = luaL_testudata(L, -1, CONNS_MT);
  if (!lua_isnil(L, -1) && conns == NULL)
    luaL_error(L, "spool.http.request: conns must come from http_conns()");
  r->conns = conns ? *conns : NULL;
  lua_getfield(L, 1, "guard");
  if (!lua_isnil(L, -1)) {
    net_guard *g = luaL_testudata(L, -1, GUARD_MT);
    if (g == NULL)
      luaL_error(L, "spool.http.request: guard must come from net_guard()");
    r->guard = 1;
    r->allow = g->rules;
    r->nallow = g->n;
  }
  lua_getfield(L, 1, "redirects");
  lua_Integer redirects = luaL_optinteger(L, -1, 0);
  if (redirects < 0 || redirects > 20)
    luaL_error(L, "spool.http.request: redirects must be 0 to 20");
  r->max_redirects = (long)redirects;
  lua_getfield(L, 1, "headers");
  int nh = 0;
  if (lua_istable(L, -1)) {
    int ht = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, ht)) {
      if (nh == 64)
        luaL_error(L, "spool.http.request: more than 64 headers");
      luaL_checkstack(L, 2, NULL);
      if (lua_type(L, -2) != LUA_TSTRING)
        luaL_error(L, "spool.http.request: header names must be strings");
      const char *name = lua_tostring(L, -2);
      const char *value = luaL_checkstring(L, -1);
      if (strpbrk(name, ":\r\n") || strpbrk(value, "\r\n"))
        luaL_error(L,
                   "spool.http.request: header '%s' contains a newline or "
                   "a colon in its name",
                   name);
      lines[nh++] = lua_pushfstring(L, "%s: %s", name, value);
      lua_insert(L, -3); /* keep the line below the key and value */
      lua_pop(L, 1);
    }
  }
  r->headers = lines;
  r->nheaders = (size_t)nh;
}

static int l_http_request(lua_State *L) {
  spool_engine *e = lua_touserdata(L, lua_upvalueindex(1));
  spool__task *t = spool__task_check(L, "spool.http.request");
  spool__http_request r = {0};
  const char *lines[64], *rcpt[64];
  read_request(L, &r, lines, rcpt);
  http_op *h = calloc(1, sizeof *h);
  if (h == NULL)
    return luaL_error(L, "out of memory");
  h->op.cancel = http_cancel;
  h->op.interruptible = 1;
  h->t = t;
  char err[256];
  if (spool__http_start(e->http, &r, on_done, h, &h->x, err, sizeof err)) {
    free(h);
    return spool__push_fail(L, "EHTTP: %s", err);
  }
  return spool__task_wait(L, t, &h->op);
}

/* ---- streamed responses ---- */

#define STREAM_MT "spool.HttpStream"

typedef struct http_stream http_stream;

/* A task waiting in head() or read(), with its timer. Freed when the wait
 * ends (after the timer closes, if it has one). */
typedef struct stream_wait {
  spool__op op;
  uv_timer_t timer;
  int has_timer;
  long timeout_ms;
  spool__task *t;
  http_stream *s; /* NULL once the wait is over */
  int for_head;   /* head() rather than read() */
} stream_wait;

struct http_stream {
  spool__http_xfer *x; /* NULL once the transfer ended or was stopped */
  spool__buf pending;  /* body bytes not read yet */
  spool__buf head;     /* the response's header lines */
  long status;
  int head_done;
  int ended;
  char error[320]; /* "ECODE: message" when the transfer failed */
  stream_wait *w;
};

static void on_wait_timer_closed(uv_handle_t *h) {
  free(h->data);
}

static void free_wait(stream_wait *w) {
  if (w->has_timer) {
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, on_wait_timer_closed);
  } else {
    free(w);
  }
}

/* stack: stream -> status, headers | nil, error */
static int push_head(lua_State *L) {
  http_stream *s = lua_touserdata(L, 1);
  if (!s->head_done) {
    return spool__push_fail(L, "%s",
                            s->error[0] ? s->error : "EHTTP: no response");
  }
  lua_pushinteger(L, s->status);
  push_headers(L, &s->head);
  return 2;
}

/* stack: stream -> bytes | nil | nil, error */
static int push_read(lua_State *L) {
  http_stream *s = lua_touserdata(L, 1);
  if (s->pending.len > 0) {
    lua_pushlstring(L, s->pending.data, s->pending.len);
    spool__buf_clear(&s->pending);
    return 1;
  }
  if (s->error[0] == '\0') {
    lua_pushnil(L);
    return 1;
  }
  return spool__push_fail(L, "%s", s->error);
}

/* Ends the stream's wait, if any, waking its task with push's results. */
static void wake(http_stream *s, lua_CFunction push) {
  stream_wait *w = s->w;
  if (w == NULL)
    return;
  s->w = NULL;
  w->s = NULL;
  spool__task *t = w->t;
  free_wait(w);
  spool__task_wake_with(t, push, s);
}

static void on_stream_head(spool__http_xfer *x, void *ud) {
  http_stream *s = ud;
  const spool__buf *hb = spool__http_headers(x);
  s->status = spool__http_status(x);
  s->head_done = 1;
  spool__buf_clear(&s->head);
  if (hb->len)
    spool__buf_add(&s->head, hb->data, hb->len);
  if (s->w && s->w->for_head)
    wake(s, push_head);
}

static void on_stream_data(spool__http_xfer *x, const char *data, size_t len,
                           void *ud) {
  http_stream *s = ud;
  (void)x;
  if (spool__buf_add(&s->pending, data, len) != 0)
    snprintf(s->error, sizeof s->error, "ENOMEM: out of memory");
  if (s->w && !s->w->for_head)
    wake(s, push_read);
}

static void on_stream_done(spool__http_xfer *x, void *ud) {
  http_stream *s = ud;
  const char *err = spool__http_error(x);
  s->x = NULL;
  s->ended = 1;
  if (err)
    snprintf(s->error, sizeof s->error, "%s: %s", spool__http_error_name(x),
             err);
  else if (!s->head_done)
    on_stream_head(x, s); /* a head curl never reported, as with HTTP/0.9 */
  if (s->w)
    wake(s, s->w->for_head ? push_head : push_read);
}

static void stop_stream(http_stream *s, const char *why) {
  if (s->x) {
    spool__http_cancel(s->x);
    s->x = NULL;
    s->ended = 1;
    snprintf(s->error, sizeof s->error, "%s", why);
  }
}

/* stack: wait -> nil, "ETIMEDOUT: ..." */
static int push_timeout(lua_State *L) {
  stream_wait *w = lua_touserdata(L, 1);
  return spool__push_fail(L, "ETIMEDOUT: no %s within %d ms",
                          w->for_head ? "response" : "data",
                          (int)w->timeout_ms);
}

static void on_wait_timeout(uv_timer_t *timer) {
  stream_wait *w = timer->data;
  w->s->w = NULL;
  w->s = NULL;
  spool__task_wake_with(w->t, push_timeout, w);
  free_wait(w);
}

/* The task was cancelled (its run stopped, or the engine is closing). */
static void wait_cancel(spool__op *op) {
  stream_wait *w = (stream_wait *)op;
  if (w->s) {
    w->s->w = NULL;
    stop_stream(w->s, "ECANCELED: the call was cancelled");
  }
  free_wait(w);
}

static int stream_wait_for(lua_State *L, http_stream *s, int for_head,
                           const char *what) {
  spool__task *t = spool__task_check(L, what);
  lua_Integer ms = luaL_optinteger(L, 2, 0);
  luaL_argcheck(L, ms >= 0, 2, "must not be negative");
  if (s->w)
    return luaL_error(L, "%s: another task is waiting on this stream", what);
  stream_wait *w = calloc(1, sizeof *w);
  if (w == NULL)
    return luaL_error(L, "out of memory");
  w->op.cancel = wait_cancel;
  w->op.interruptible = 1;
  w->t = t;
  w->s = s;
  w->for_head = for_head;
  w->timeout_ms = (long)ms;
  if (ms > 0) {
    w->has_timer = 1;
    uv_timer_init(t->e->loop, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, on_wait_timeout, (uint64_t)ms, 0);
  }
  s->w = w;
  lua_settop(L, 1); /* the stream stays on the task's stack, alive */
  return spool__task_wait(L, t, &w->op);
}

static int stream_head(lua_State *L) {
  http_stream *s = luaL_checkudata(L, 1, STREAM_MT);
  if (s->head_done || s->ended) {
    int top = lua_gettop(L);
    lua_pushcfunction(L, push_head);
    lua_pushlightuserdata(L, s);
    lua_call(L, 1, LUA_MULTRET);
    return lua_gettop(L) - top;
  }
  return stream_wait_for(L, s, 1, "http stream head");
}

static int stream_read(lua_State *L) {
  http_stream *s = luaL_checkudata(L, 1, STREAM_MT);
  if (s->pending.len > 0 || s->ended) {
    int top = lua_gettop(L);
    lua_pushcfunction(L, push_read);
    lua_pushlightuserdata(L, s);
    lua_call(L, 1, LUA_MULTRET);
    return lua_gettop(L) - top;
  }
  return stream_wait_for(L, s, 0, "http stream read");
}

static int stream_close(lua_State *L) {
  http_stream *s = luaL_checkudata(L, 1, STREAM_MT);
  stop_stream(s, "ECANCELED: the stream was closed");
  if (s->w) /* another task waits on it: it learns the stream is closed */
    wake(s, s->w->for_head ? push_head : push_read);
  return 0;
}

/* A waiting task holds its stream on its stack, so by the time one is
 * collected no task waits on it. */
static int stream_gc(lua_State *L) {
  http_stream *s = luaL_checkudata(L, 1, STREAM_MT);
  stop_stream(s, "ECANCELED: the stream was closed");
  spool__buf_free(&s->pending);
  spool__buf_free(&s->head);
  return 0;
}

static int l_http_stream(lua_State *L) {
  spool_engine *e = lua_touserdata(L, lua_upvalueindex(1));
  spool__http_request r = {0};
  const char *lines[64], *rcpt[64];
  read_request(L, &r, lines, rcpt);
  r.on_head = on_stream_head;
  r.on_data = on_stream_data;
  http_stream *s = lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, STREAM_MT);
  char err[256];
  if (spool__http_start(e->http, &r, on_stream_done, s, &s->x, err,
                        sizeof err)) {
    s->x = NULL;
    return spool__push_fail(L, "EHTTP: %s", err);
  }
  return 1;
}

/* ---- address guards ---- */

/* net_guard{ rule, ... } -> guard | nil, "EINVAL: http.allow[i] ..." */
static int l_net_guard(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  size_t n = lua_rawlen(L, 1);
  if (n > 1024) {
    return spool__push_fail(L, "EINVAL: http.allow has more than 1024 rules");
  }
  net_guard *g = lua_newuserdatauv(L, sizeof *g + n * sizeof g->rules[0], 0);
  g->n = n;
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, 1, (lua_Integer)i + 1);
    const char *text =
        lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (text == NULL || spool__net_rule_parse(text, &g->rules[i]) != 0) {
      return spool__push_fail(
          L,
          "EINVAL: http.allow[%d] %s%s%s is not an address or a CIDR block "
          "with an optional port, like \"127.0.0.1:9000\", \"10.0.0.0/8\" or "
          "\"[::1]:8080\"",
          (int)i + 1, text ? "'" : "(a ", text ? text : luaL_typename(L, -1),
          text ? "'" : ")");
    }
    lua_pop(L, 1);
  }
  luaL_setmetatable(L, GUARD_MT);
  return 1;
}

/* ---- connection caches ---- */

static int l_http_conns(lua_State *L) {
  spool__http_conns **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  luaL_setmetatable(L, CONNS_MT);
  if ((*box = spool__http_conns_new()) == NULL)
    return luaL_error(L, "out of memory");
  return 1;
}

/* conns:close(), and the GC: a closed cache is the shared pool again. */
static int conns_close(lua_State *L) {
  spool__http_conns **box = luaL_checkudata(L, 1, CONNS_MT);
  spool__http_conns_release(*box);
  *box = NULL;
  return 0;
}

void spool__open_http(lua_State *L) {
  static const luaL_Reg conns_methods[] = {
      {"close", conns_close},
      {NULL, NULL},
  };
  static const luaL_Reg stream_methods[] = {
      {"head", stream_head},
      {"read", stream_read},
      {"close", stream_close},
      {NULL, NULL},
  };
  static const luaL_Reg no_methods[] = {{NULL, NULL}};
  spool__class(L, CONNS_MT, conns_methods, conns_close, NULL);
  lua_pop(L, 1);
  spool__class(L, GUARD_MT, no_methods, NULL, NULL);
  lua_pop(L, 1);
  spool__class(L, STREAM_MT, stream_methods, stream_gc, NULL);
  lua_pop(L, 1);
  lua_pushlightuserdata(L, spool__engine_of(L));
  lua_pushcclosure(L, l_http_request, 1);
  lua_setfield(L, -2, "http_request");
  lua_pushlightuserdata(L, spool__engine_of(L));
  lua_pushliteral(L, "smtp,smtps,imap,imaps");
  lua_pushcclosure(L, l_http_request, 2);
  lua_setfield(L, -2, "mail_request");
  lua_pushlightuserdata(L, spool__engine_of(L));
  lua_pushcclosure(L, l_http_stream, 1);
  lua_setfield(L, -2, "http_stream");
  lua_pushcfunction(L, l_http_conns);
  lua_setfield(L, -2, "http_conns");
  lua_pushcfunction(L, l_net_guard);
  lua_setfield(L, -2, "net_guard");
}
