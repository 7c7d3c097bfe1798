/*
 * l_trace.c: spans, as spool.core shows them to lua/spool/run/trace.lua.
 * The Lua side decides what a span is (names, parents, attributes); this
 * encodes a finished one as an OTLP JSON Span object, once, and hands the
 * bytes to the exporter (io/otlp.h) and to the host's span callback.
 *
 *   tracing()              -> boolean   are spans wanted at all?
 *   trace_id()             -> 32 hex    a new trace id
 *   span_id()              -> 16 hex    a new span id
 *   trace_now()            -> ns        the wall clock, in nanoseconds
 *   trace_sampled(trace, parent_sampled|nil) -> boolean   the sampler
 *   span_end(span, err, name, value, ...)   encode and send it: span =
 *                            { trace, id, parent, remote, name, kind,
 *                            start, finish (default: now),
 *                            events = { { name, time, attrs } },
 *                            links = { { trace, id, attrs } } }; err (a
 *                            string: the status is ERROR, with it as the
 *                            message); then its attributes as pairs (a
 *                            nil value leaves one out)
 *   trace_stats()          -> { queued, exported, rejected, dropped,
 *                               retries, failures }
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "codec/json.h"
#include "io/otlp.h"
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

static int l_trace_id(lua_State *L) {
  unsigned char id[16];
  random_id(engine(L), id, sizeof id);
  push_hex(L, id, sizeof id);
  return 1;
}

static int l_span_id(lua_State *L) {
  unsigned char id[8];
  random_id(engine(L), id, sizeof id);
  push_hex(L, id, sizeof id);
  return 1;
}

static long long now_ns(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
  return ns + engine(L)->clock_offset_ms * 1000000LL;
}

static int l_trace_now(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)now_ns(L));
  return 1;
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

static int l_trace_sampled(lua_State *L) {
  spool_engine *e = engine(L);
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  unsigned char id[16];
  if (read_id(s, len, id, sizeof id) != 0)
    return luaL_argerror(L, 1, "a trace id (32 hex digits)");
  if (e->otlp == NULL) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (!lua_isnoneornil(L, 2) && spool__otlp_parent_based(e->otlp))
    lua_pushboolean(L, lua_toboolean(L, 2));
  else
    lua_pushboolean(L, spool__otlp_sample(e->otlp, id));
  return 1;
}

/* ---- encoding ---- */

typedef struct enc {
  lua_State *L;
  spool__buf *b;
  size_t limit; /* bytes of a string value; 0: none */
  int failed;   /* out of memory */
  int top;      /* span_end's last argument */
} enc;

static inline void put(enc *w, const char *s, size_t n) {
  spool__buf *b = w->b;
  if (b->cap - b->len > n) { /* the common case: room reserved */
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
  } else if (spool__buf_add(b, s, n) != 0) {
    w->failed = 1;
  }
}

/* A string literal, its length known at compile time. */
#define PUT(w, lit) put((w), (lit), sizeof(lit) - 1)

static void put_int(enc *w, long long v, int quoted) {
  char digits[24], *p = digits + sizeof digits;
  unsigned long long u =
      v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
  if (quoted)
    *--p = '"';
  do
    *--p = (char)('0' + u % 10);
  while (u /= 10);
  if (v < 0)
    *--p = '-';
  if (quoted)
    *--p = '"';
  put(w, p, (size_t)(digits + sizeof digits - p));
}

/* A string, cut at `limit` bytes on a character boundary; bytes that are
 * not UTF-8 become U+FFFD (a span must not be refused for one). */
static void put_text(enc *w, const char *s, size_t n, size_t limit) {
  if (limit && n > limit) {
    n = limit;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
      n--;
  }
  size_t mark = w->b->len;
  int rc = spool__json_write_string(w->b, s, n);
  if (rc == -2) {
    w->b->len = mark;
    spool__buf clean = {0};
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end && !w->failed) {
      size_t k = spool__utf8_seq(p, end);
      if (k == 0) {
        w->failed |= spool__buf_add(&clean, "\xEF\xBF\xBD", 3) != 0;
        p++;
      } else {
        w->failed |= spool__buf_add(&clean, p, k) != 0;
        p += k;
      }
    }
    rc =
        spool__json_write_string(w->b, clean.data ? clean.data : "", clean.len);
    spool__buf_free(&clean);
  }
  if (rc != 0)
    w->failed = 1;
}

/* A string as put_text writes it, quicker for the common case: plain
 * ASCII that needs no escapes (names, ids, models, most values). */
static void put_string(enc *w, const char *s, size_t n, size_t limit) {
  if (limit && n > limit) {
    put_text(w, s, n, limit);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') {
      put_text(w, s, n, limit);
      return;
    }
  }
  spool__buf *b = w->b;
  if (b->cap - b->len > n + 2) {
    char *p = b->data + b->len;
    *p = '"';
    memcpy(p + 1, s, n);
    p[n + 1] = '"';
    b->len += n + 2;
    b->data[b->len] = '\0';
    return;
  }
  PUT(w, "\"");
  put(w, s, n);
  PUT(w, "\"");
}

static void put_name(enc *w, const char *s, size_t n) {
  put_string(w, s, n, 0);
}

/* ,"name":"<hex>" from the id at idx, checked; written lowercase. */
static void put_id(enc *w, const char *name, size_t name_len, int idx,
                   size_t n) {
  lua_State *L = w->L;
  size_t len;
  const char *s = lua_tolstring(L, idx, &len);
  unsigned char id[16];
  if (read_id(s, len, id, n) != 0)
    luaL_error(L, "span_end: %s must be %d hex digits", name, (int)(2 * n));
  put(w, name, name_len);
  char hex[32];
  for (size_t i = 0; i < len; i++)
    hex[i] = (char)(s[i] >= 'A' && s[i] <= 'F' ? s[i] - 'A' + 'a' : s[i]);
  put(w, hex, len);
  PUT(w, "\"");
}

#define PUT_ID(w, lit, idx, n) put_id((w), (lit), sizeof(lit) - 1, (idx), (n))

/* Has the value at idx an AnyValue? Not a function, nor a NaN: such an
 * attribute is left out. */
static int value_ok(lua_State *L, int idx) {
  switch (lua_type(L, idx)) {
  case LUA_TSTRING:
  case LUA_TBOOLEAN:
  case LUA_TTABLE:
    return 1;
  case LUA_TNUMBER: {
    if (lua_isinteger(L, idx))
      return 1;
    lua_Number d = lua_tonumber(L, idx);
    return d == d && d - d == 0; /* finite */
  }
  default:
    return 0;
  }
}

static void put_value(enc *w, int idx, int depth) {
  lua_State *L = w->L;
  idx = lua_absindex(L, idx);
  switch (lua_type(L, idx)) {
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    PUT(w, "{\"stringValue\":");
    put_string(w, s, n, w->limit);
    PUT(w, "}");
    break;
  }
  case LUA_TBOOLEAN:
    if (lua_toboolean(L, idx))
      PUT(w, "{\"boolValue\":true}");
    else
      PUT(w, "{\"boolValue\":false}");
    break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      PUT(w, "{\"intValue\":");
      put_int(w, (long long)lua_tointeger(L, idx), 1);
    } else {
      PUT(w, "{\"doubleValue\":");
      if (spool__json_write_double(w->b, lua_tonumber(L, idx)) != 0)
        w->failed = 1;
    }
    PUT(w, "}");
    break;
  default: { /* an array of scalars (finish reasons, stop sequences) */
    PUT(w, "{\"arrayValue\":{\"values\":[");
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx), k = 0;
    for (lua_Integer i = 1; i <= n && depth < 2; i++) {
      lua_rawgeti(L, idx, i);
      if (value_ok(L, -1) && lua_type(L, -1) != LUA_TTABLE) {
        if (k++)
          PUT(w, ",");
        put_value(w, -1, depth + 1);
      }
      lua_pop(L, 1);
    }
    PUT(w, "]}}");
  }
  }
}

#define MAX_ATTRIBUTES 128

/* "attributes":[...] from the table at idx (string keys only), plus
 * droppedAttributesCount past the limit. */
static void put_attributes(enc *w, int idx) {
  lua_State *L = w->L;
  PUT(w, "\"attributes\":[");
  int n = 0, dropped = 0;
  if (lua_type(L, idx) == LUA_TTABLE) {
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      if (lua_type(L, -2) == LUA_TSTRING && value_ok(L, -1)) {
        /* Room for the common attribute, so its pieces go in unchecked. */
        if (w->b->cap - w->b->len < 512 && spool__buf_reserve(w->b, 512) != 0)
          w->failed = 1;
        if (n >= MAX_ATTRIBUTES) {
          dropped++;
        } else {
          size_t kn;
          const char *k = lua_tolstring(L, -2, &kn);
          if (n++)
            PUT(w, ",{\"key\":");
          else
            PUT(w, "{\"key\":");
          put_name(w, k, kn);
          PUT(w, ",\"value\":");
          put_value(w, -1, 0);
          PUT(w, "}");
        }
      }
      lua_pop(L, 1);
    }
  }
  PUT(w, "]");
  if (dropped) {
    PUT(w, ",\"droppedAttributesCount\":");
    put_int(w, dropped, 0);
  }
}

/* The attribute pair at (i, i + 1), unless its value is nil or has no
 * AnyValue; returns whether it was written. */
static int put_pair(enc *w, int i, int n) {
  lua_State *L = w->L;
  if (lua_type(L, i) != LUA_TSTRING || !value_ok(L, i + 1))
    return 0;
  if (w->b->cap - w->b->len < 512 && spool__buf_reserve(w->b, 512) != 0)
    w->failed = 1;
  size_t kn;
  const char *k = lua_tolstring(L, i, &kn);
  if (n)
    PUT(w, ",{\"key\":");
  else
    PUT(w, "{\"key\":");
  put_name(w, k, kn);
  PUT(w, ",\"value\":");
  put_value(w, i + 1, 0);
  PUT(w, "}");
  return 1;
}

/* "attributes":[...] from the name, value pairs at from..top. */
static void put_pairs(enc *w, int from) {
  lua_State *L = w->L;
  int n = 0, dropped = 0;
  PUT(w, "\"attributes\":[");
  for (int i = from; i < w->top; i += 2) {
    if (n >= MAX_ATTRIBUTES)
      dropped += !lua_isnil(L, i + 1);
    else
      n += put_pair(w, i, n);
  }
  PUT(w, "]");
  if (dropped) {
    PUT(w, ",\"droppedAttributesCount\":");
    put_int(w, dropped, 0);
  }
}

static long long field_int(lua_State *L, int t, const char *name) {
  lua_getfield(L, t, name);
  int ok;
  long long v = (long long)lua_tointegerx(L, -1, &ok);
  lua_pop(L, 1);
  if (!ok)
    luaL_error(L, "span_end: %s must be an integer", name);
  return v;
}

static void put_events(enc *w, int t) {
  lua_State *L = w->L;
  if (lua_getfield(L, t, "events") == LUA_TTABLE) {
    PUT(w, ",\"events\":[");
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, i);
      int ev = lua_gettop(L);
      luaL_checktype(L, ev, LUA_TTABLE);
      if (i > 1)
        PUT(w, ",");
      PUT(w, "{\"timeUnixNano\":");
      put_int(w, field_int(L, ev, "time"), 1);
      lua_getfield(L, ev, "name");
      size_t len;
      const char *name = luaL_checklstring(L, -1, &len);
      PUT(w, ",\"name\":");
      put_name(w, name, len);
      PUT(w, ",");
      lua_getfield(L, ev, "attrs");
      put_attributes(w, -1);
      lua_pop(L, 3);
      PUT(w, "}");
    }
    PUT(w, "]");
  }
  lua_pop(L, 1);
}

static void put_links(enc *w, int t) {
  lua_State *L = w->L;
  if (lua_getfield(L, t, "links") == LUA_TTABLE) {
    PUT(w, ",\"links\":[");
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, i);
      int link = lua_gettop(L);
      luaL_checktype(L, link, LUA_TTABLE);
      if (i > 1)
        PUT(w, ",");
      PUT(w, "{\"flags\":257");
      lua_getfield(L, link, "trace");
      PUT_ID(w, ",\"traceId\":\"", -1, 16);
      lua_getfield(L, link, "id");
      PUT_ID(w, ",\"spanId\":\"", -1, 8);
      PUT(w, ",");
      lua_getfield(L, link, "attrs");
      put_attributes(w, -1);
      lua_pop(L, 4);
      PUT(w, "}");
    }
    PUT(w, "]");
  }
  lua_pop(L, 1);
}

/* The span at t as one OTLP JSON Span object. */
static void encode_span(enc *w, int t) {
  lua_State *L = w->L;
  size_t len;
  int has_parent = lua_getfield(L, t, "parent") != LUA_TNIL;
  lua_getfield(L, t, "remote");
  int remote = lua_toboolean(L, -1);
  lua_pop(L, 1);
  /* W3C flags: sampled; bits 8 and 9 say whether the parent is remote. */
  if (has_parent && remote)
    PUT(w, "{\"flags\":769");
  else
    PUT(w, "{\"flags\":257");
  lua_getfield(L, t, "trace");
  PUT_ID(w, ",\"traceId\":\"", -1, 16);
  lua_getfield(L, t, "id");
  PUT_ID(w, ",\"spanId\":\"", -1, 8);
  if (has_parent)
    PUT_ID(w, ",\"parentSpanId\":\"", -3, 8);
  lua_pop(L, 3);
  lua_getfield(L, t, "name");
  const char *name = luaL_checklstring(L, -1, &len);
  PUT(w, ",\"name\":");
  put_name(w, name, len);
  lua_pop(L, 1);
  PUT(w, ",\"kind\":");
  put_int(w, field_int(L, t, "kind"), 0);
  PUT(w, ",\"startTimeUnixNano\":");
  long long start = field_int(L, t, "start");
  put_int(w, start, 1);
  PUT(w, ",\"endTimeUnixNano\":");
  long long finish = now_ns(L);
  if (lua_getfield(L, t, "finish") != LUA_TNIL)
    finish = field_int(L, t, "finish");
  lua_pop(L, 1);
  put_int(w, finish < start ? start : finish, 1);
  PUT(w, ",");
  put_pairs(w, 3);
  put_events(w, t);
  put_links(w, t);
  if (lua_type(L, 2) == LUA_TSTRING) {
    const char *msg = lua_tolstring(L, 2, &len);
    PUT(w, ",\"status\":{\"code\":2,\"message\":");
    put_text(w, msg, len, 1024);
    PUT(w, "}");
  }
  PUT(w, "}");
}

static int l_span_end(lua_State *L) {
  spool_engine *e = engine(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  spool__buf *b = &e->trace_buf;
  spool__buf_clear(b);
  enc w = {L, b, e->otlp ? spool__otlp_value_limit(e->otlp) : 0, 0,
           lua_gettop(L)};
  if (spool__buf_reserve(b, 2048) != 0)
    return luaL_error(L, "span_end: out of memory");
  encode_span(&w, 1);
  if (w.failed)
    return luaL_error(L, "span_end: out of memory");
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
      {"tracing", l_tracing},
      {"trace_id", l_trace_id},
      {"span_id", l_span_id},
      {"trace_now", l_trace_now},
      {"trace_sampled", l_trace_sampled},
      {"span_end", l_span_end},
      {"trace_stats", l_trace_stats},
      {NULL, NULL},
  };
  lua_pushlightuserdata(L, spool__engine_of(L));
  luaL_setfuncs(L, fns, 1);
}
