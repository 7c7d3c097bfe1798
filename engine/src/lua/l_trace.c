/*
 * l_trace.c: spans, as spool.core shows them to lua/spool/run/trace.lua.
 * The Lua side decides what a span is (its name, its parent, its
 * attributes); a span is a userdata of this file's (l_trace.h), whose
 * ids, times and sampling decision never become Lua values unless asked
 * for. Ending one encodes it once (l_trace_encode.c) and hands the bytes to
 * the exporter (io/otlp.h) and to the host's span callback.
 *
 *   tracing()              -> boolean   are spans wanted at all?
 *   trace_id_of(thread id) -> 32 hex    a thread's own trace id
 *   span_start(name, kind, parent) -> span
 *       parent: a span (of this process), or a context { trace = 32 hex,
 *       id = 16 hex | nil, sampled = boolean | nil, remote = boolean } (a
 *       caller's, or a thread's own trace), or nil (a new trace). The
 *       sampler ($OTEL_TRACES_SAMPLER) decides here, once.
 *   span.trace, span.id (hex), span.sampled
 *   span_traceparent(span) -> "00-<trace>-<id>-<flags>"
 *   span_times(span, start_ns, finish_ns)   times other than now
 *   span_event(span, name, attrs)           an event, at this moment
 *   span_link(span, trace, id, attrs)       a link (hex ids)
 *   span_schema(names)     -> schema   attribute names, encoded once
 *   span_end(span, err, schema, value...)   encode and send it (if it is
 *       sampled): err (a string: the status is ERROR, with it as the
 *       message), then the values of the schema's attributes in its order
 *       (nil leaves one out)
 *   trace_stats()          -> { queued, exported, rejected, dropped,
 *                               retries, failures }
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "io/otlp.h"
#include "lua/l_trace.h"
#include "spool_int.h"

static spool_engine *engine(lua_State *L) {
  return lua_touserdata(L, lua_upvalueindex(1));
}

static int l_tracing(lua_State *L) {
  spool_engine *e = engine(L);
  lua_pushboolean(L, spool__otlp_exports(e->otlp) || e->on_span != NULL);
  return 1;
}

static void push_hex(lua_State *L, const unsigned char *id, size_t n) {
  static const char digits[] = "0123456789abcdef";
  char hex[32];
  for (size_t i = 0; i < n; i++) {
    hex[2 * i] = digits[id[i] >> 4];
    hex[2 * i + 1] = digits[id[i] & 15];
  }
  lua_pushlstring(L, hex, 2 * n);
}

/* Ids need not be secret, but must not repeat and must be random in the
 * bits a ratio sampler reads: a PRNG seeded from the system's. */
static uint64_t next_random(spool_engine *e) {
  if (e->trace_rng == 0 &&
      RAND_bytes((unsigned char *)&e->trace_rng, sizeof e->trace_rng) != 1)
    e->trace_rng = uv_hrtime();
  uint64_t z = (e->trace_rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static void random_id(spool_engine *e, unsigned char *out, size_t n) {
  do {
    for (size_t i = 0; i < n; i += 8) {
      uint64_t r = next_random(e);
      memcpy(out + i, &r, n - i < 8 ? n - i : 8);
    }
    int zero = 1;
    for (size_t i = 0; i < n; i++)
      zero &= out[i] == 0;
    if (!zero)
      return;
  } while (1);
}

/* trace_id_of(thread id) -> 32 hex: the trace a thread's runs share when
 * no caller named one, the first 128 bits of the id's SHA-256. Found from
 * the id, but the id is not found from it: a trace id goes to every
 * service a run calls (traceparent), a thread id should not. */
static int l_trace_id_of(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  unsigned char md[32];
  unsigned int n = 0;
  if (EVP_Digest(s, len, md, &n, EVP_sha256(), NULL) != 1)
    return luaL_error(L, "trace_id_of: SHA-256 failed");
  push_hex(L, md, 16);
  return 1;
}

static long long now_ns(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
  return ns + engine(L)->clock_offset_ms * 1000000LL;
}

static int hexval(int c) {
  return c >= '0' && c <= '9'   ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                : -1;
}

/* s as n bytes of lowercase-or-uppercase hex, not all zero; 0 or -1. */
static int read_id(const char *s, size_t len, unsigned char *out, size_t n) {
  if (s == NULL || len != 2 * n)
    return -1;
  int zero = 1;
  for (size_t i = 0; i < n; i++) {
    int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return -1;
    out[i] = (unsigned char)(hi * 16 + lo);
    zero &= out[i] == 0;
  }
  return zero ? -1 : 0;
}

/* ---- spans ---- */

/* The id at field `name` of the table at t, into out (n bytes); 0, 1 when
 * absent, -1 when not an id. */
static int field_id(lua_State *L, int t, const char *name, unsigned char *out,
                    size_t n) {
  size_t len;
  lua_getfield(L, t, name);
  const char *s = lua_tolstring(L, -1, &len);
  int rc = s == NULL ? 1 : read_id(s, len, out, n);
  lua_pop(L, 1);
  return rc;
}

static int root_sampled(spool_engine *e, const unsigned char trace[16]) {
  return e->otlp != NULL && spool__otlp_sample(e->otlp, trace);
}

static int l_span_start(lua_State *L) {
  spool_engine *e = engine(L);
  size_t len;
  luaL_checklstring(L, 1, &len);
  lua_Integer kind = luaL_checkinteger(L, 2);
  spool__span *sp = lua_newuserdatauv(L, sizeof *sp, 3);
  memset(sp, 0, sizeof *sp);
  sp->kind = (unsigned char)kind;
  sp->start = now_ns(L);
  random_id(e, sp->id, sizeof sp->id);
  const spool__span *parent = luaL_testudata(L, 3, SPOOL__SPAN_META);
  if (parent) { /* this process's: its trace, and its decision */
    memcpy(sp->trace, parent->trace, 16);
    memcpy(sp->parent, parent->id, 8);
    sp->has_parent = 1;
    sp->sampled = parent->sampled;
  } else if (lua_type(L, 3) == LUA_TTABLE) {
    if (field_id(L, 3, "trace", sp->trace, 16) != 0)
      return luaL_argerror(L, 3, "a context's trace must be 32 hex digits");
    int rc = field_id(L, 3, "id", sp->parent, 8);
    if (rc < 0)
      return luaL_argerror(L, 3, "a context's id must be 16 hex digits");
    sp->has_parent = rc == 0;
    lua_getfield(L, 3, "remote");
    sp->remote = (unsigned char)lua_toboolean(L, -1);
    lua_getfield(L, 3, "sampled");
    int decided = !lua_isnil(L, -1), flag = lua_toboolean(L, -1);
    lua_pop(L, 2);
    if (decided && !sp->remote)
      sp->sampled = (unsigned char)flag; /* a span of this process's */
    else if (decided && e->otlp && spool__otlp_parent_based(e->otlp))
      sp->sampled = (unsigned char)flag;
    else
      sp->sampled = (unsigned char)root_sampled(e, sp->trace);
  } else {
    random_id(e, sp->trace, sizeof sp->trace);
    sp->sampled = (unsigned char)root_sampled(e, sp->trace);
  }
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  luaL_setmetatable(L, SPOOL__SPAN_META);
  return 1;
}

static spool__span *check_span(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, SPOOL__SPAN_META);
}

static int span_index(lua_State *L) {
  spool__span *sp = check_span(L, 1);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "trace") == 0)
    push_hex(L, sp->trace, 16);
  else if (strcmp(k, "id") == 0)
    push_hex(L, sp->id, 8);
  else if (strcmp(k, "sampled") == 0)
    lua_pushboolean(L, sp->sampled);
  else
    lua_pushnil(L);
  return 1;
}

static int l_span_traceparent(lua_State *L) {
  spool__span *sp = check_span(L, 1);
  static const char digits[] = "0123456789abcdef";
  char tp[55];
  memcpy(tp, "00-", 3);
  for (int i = 0; i < 16; i++) {
    tp[3 + 2 * i] = digits[sp->trace[i] >> 4];
    tp[4 + 2 * i] = digits[sp->trace[i] & 15];
  }
  tp[35] = '-';
  for (int i = 0; i < 8; i++) {
    tp[36 + 2 * i] = digits[sp->id[i] >> 4];
    tp[37 + 2 * i] = digits[sp->id[i] & 15];
  }
  memcpy(tp + 52, sp->sampled ? "-01" : "-00", 3);
  lua_pushlstring(L, tp, sizeof tp);
  return 1;
}

static int l_span_times(lua_State *L) {
  spool__span *sp = check_span(L, 1);
  sp->start = (long long)luaL_checkinteger(L, 2);
  sp->finish = (long long)luaL_checkinteger(L, 3);
  return 0;
}

/* Appends v (at the top) to the list in the span's user value n. */
static void append_to(lua_State *L, int n) {
  if (lua_getiuservalue(L, 1, n) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, n);
  }
  lua_insert(L, -2);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  lua_pop(L, 1);
}

static int l_span_event(lua_State *L) {
  check_span(L, 1);
  luaL_checkstring(L, 2);
  lua_createtable(L, 0, 3);
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "name");
  lua_pushinteger(L, (lua_Integer)now_ns(L));
  lua_setfield(L, -2, "time");
  lua_pushvalue(L, 3);
  lua_setfield(L, -2, "attrs");
  append_to(L, 2);
  return 0;
}

static int l_span_link(lua_State *L) {
  check_span(L, 1);
  size_t tn, in;
  const char *trace = luaL_checklstring(L, 2, &tn);
  const char *id = luaL_checklstring(L, 3, &in);
  unsigned char t[16], s[8];
  if (read_id(trace, tn, t, 16) != 0 || read_id(id, in, s, 8) != 0)
    return luaL_error(L, "span_link: ids must be 32 and 16 hex digits");
  lua_createtable(L, 0, 3);
  lua_pushlstring(L, (const char *)t, 16);
  lua_setfield(L, -2, "trace");
  lua_pushlstring(L, (const char *)s, 8);
  lua_setfield(L, -2, "id");
  lua_pushvalue(L, 4);
  lua_setfield(L, -2, "attrs");
  append_to(L, 3);
  return 0;
}

static int l_span_end(lua_State *L) {
  spool_engine *e = engine(L);
  spool__span *sp = check_span(L, 1);
  if (!sp->sampled)
    return 0;
  long long finish = sp->finish ? sp->finish : now_ns(L);
  spool__buf *b = &e->trace_buf;
  spool__buf_clear(b);
  size_t limit = e->otlp ? spool__otlp_value_limit(e->otlp) : 0;
  if (spool__span_encode(L, sp, finish, 2, 3, lua_gettop(L), limit, b) != 0)
    return luaL_error(L, "span_end: out of memory");
  sp->sampled = 0; /* ended: never sent twice */
  spool__otlp_add(e->otlp, b->data, b->len);
  if (e->on_span && spool__events_queue_span(e, b->data, b->len) != 0)
    return luaL_error(L, "span_end: out of memory");
  /* A span may be large (with message contents): not kept for the next. */
  if (b->cap > 64 * 1024)
    spool__buf_free(b);
  return 0;
}

static void set_count(lua_State *L, const char *name, long long v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, name);
}

static int l_trace_stats(lua_State *L) {
  spool__otlp_stats s;
  spool__otlp_stats_get(engine(L)->otlp, &s);
  lua_createtable(L, 0, 6);
  set_count(L, "queued", s.queued);
  set_count(L, "exported", s.exported);
  set_count(L, "rejected", s.rejected);
  set_count(L, "dropped", s.dropped);
  set_count(L, "retries", s.retries);
  set_count(L, "failures", s.failures);
  return 1;
}

void spool__open_trace(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"tracing", l_tracing},         {"trace_id_of", l_trace_id_of},
      {"span_start", l_span_start},   {"span_traceparent", l_span_traceparent},
      {"span_times", l_span_times},   {"span_event", l_span_event},
      {"span_link", l_span_link},     {"span_end", l_span_end},
      {"trace_stats", l_trace_stats}, {NULL, NULL},
  };
  spool__open_span_schema(L);
  luaL_newmetatable(L, SPOOL__SPAN_META);
  lua_pushcfunction(L, span_index);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushlightuserdata(L, spool__engine_of(L));
  luaL_setfuncs(L, fns, 1);
  lua_pushcfunction(L, spool__l_span_schema);
  lua_setfield(L, -2, "span_schema");
}
