/*
 * l_trace_encode.c: a finished span as one OTLP JSON Span object (the
 * protobuf JSON mapping OTLP specifies: lowerCamelCase keys, ids in hex,
 * 64-bit integers as decimal strings, enums as numbers), written straight
 * from the Lua values its attributes have, and the schemas that name
 * those attributes once for all spans of a kind.
 */
#include <string.h>

#include <lauxlib.h>

#include "codec/json.h"
#include "lua/l_trace.h"

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

/* ---- schemas: a span's attribute names, encoded once ---- */

#define SCHEMA_META "spool.span_schema"
#define MAX_SCHEMA 64

/* Attribute i's text is text[off[i]..off[i + 1]): ,{"key":"NAME","value":
 * (the comma skipped before the first attribute written). */
typedef struct span_schema {
  int n;
  size_t off[MAX_SCHEMA + 1];
  unsigned char list[MAX_SCHEMA]; /* "name[]": one string is a list of it */
  char text[];
} span_schema;

int spool__l_span_schema(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int n = (int)lua_rawlen(L, 1);
  luaL_argcheck(L, n >= 1 && n <= MAX_SCHEMA, 1, "1 to 64 attribute names");
  luaL_Buffer lb;
  luaL_buffinit(L, &lb);
  size_t off[MAX_SCHEMA + 1];
  unsigned char list[MAX_SCHEMA];
  spool__buf name = {0};
  for (int i = 0; i < n; i++) {
    off[i] = luaL_bufflen(&lb);
    lua_rawgeti(L, 1, i + 1);
    size_t len;
    const char *k = lua_tolstring(L, -1, &len);
    list[i] = k && len > 2 && memcmp(k + len - 2, "[]", 2) == 0;
    int rc = k ? spool__json_write_string(&name, k, len - 2 * list[i]) : -2;
    lua_pop(L, 1);
    if (rc != 0) {
      spool__buf_free(&name);
      return luaL_argerror(L, 1, "names must be UTF-8 strings");
    }
    luaL_addstring(&lb, ",{\"key\":");
    luaL_addlstring(&lb, name.data, name.len);
    luaL_addstring(&lb, ",\"value\":");
    spool__buf_clear(&name);
  }
  spool__buf_free(&name);
  off[n] = luaL_bufflen(&lb);
  luaL_pushresult(&lb);
  size_t len;
  const char *text = lua_tolstring(L, -1, &len);
  span_schema *sc = lua_newuserdatauv(L, sizeof *sc + len, 0);
  sc->n = n;
  memcpy(sc->off, off, sizeof off);
  memcpy(sc->list, list, sizeof list);
  memcpy(sc->text, text, len);
  luaL_setmetatable(L, SCHEMA_META);
  return 1;
}

/* "attributes":[...] from the values at from.. in the schema's order (a
 * nil value, or one with no AnyValue, leaves its attribute out). */
static void put_schema_values(enc *w, const span_schema *sc, int from) {
  lua_State *L = w->L;
  int written = 0;
  PUT(w, "\"attributes\":[");
  for (int i = 0; i < sc->n && from + i <= w->top; i++) {
    int idx = from + i;
    if (lua_isnil(L, idx) || !value_ok(L, idx))
      continue;
    if (w->b->cap - w->b->len < 512 && spool__buf_reserve(w->b, 512) != 0)
      w->failed = 1;
    size_t skip = written++ ? 0 : 1;
    put(w, sc->text + sc->off[i] + skip, sc->off[i + 1] - sc->off[i] - skip);
    if (sc->list[i] && lua_type(L, idx) == LUA_TSTRING) {
      PUT(w, "{\"arrayValue\":{\"values\":[");
      put_value(w, idx, 1);
      PUT(w, "]}}}");
    } else {
      put_value(w, idx, 0);
      PUT(w, "}");
    }
  }
  PUT(w, "]");
}

static long long field_int(lua_State *L, int t, const char *name) {
  lua_getfield(L, t, name);
  int ok;
  long long v = (long long)lua_tointegerx(L, -1, &ok);
  lua_pop(L, 1);
  if (!ok)
    luaL_error(L, "span: %s must be an integer", name);
  return v;
}

static void put_hex(enc *w, const unsigned char *id, size_t n) {
  static const char digits[] = "0123456789abcdef";
  char hex[34];
  hex[0] = '"';
  for (size_t i = 0; i < n; i++) {
    hex[1 + 2 * i] = digits[id[i] >> 4];
    hex[2 + 2 * i] = digits[id[i] & 15];
  }
  hex[1 + 2 * n] = '"';
  put(w, hex, 2 * n + 2);
}

/* ,"events":[...] from the span's user value 2: { { name, time, attrs } }. */
static void put_events(enc *w) {
  lua_State *L = w->L;
  if (lua_getiuservalue(L, 1, 2) == LUA_TTABLE) {
    PUT(w, ",\"events\":[");
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, i);
      int ev = lua_gettop(L);
      if (i > 1)
        PUT(w, ",");
      PUT(w, "{\"timeUnixNano\":");
      put_int(w, field_int(L, ev, "time"), 1);
      lua_getfield(L, ev, "name");
      size_t len;
      const char *name = lua_tolstring(L, -1, &len);
      PUT(w, ",\"name\":");
      put_name(w, name ? name : "", name ? len : 0);
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

/* ,"links":[...] from the span's user value 3: { { trace, id, attrs } },
 * the ids in binary (l_trace.c checked them). */
static void put_links(enc *w) {
  lua_State *L = w->L;
  if (lua_getiuservalue(L, 1, 3) == LUA_TTABLE) {
    PUT(w, ",\"links\":[");
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, i);
      int link = lua_gettop(L);
      size_t tn = 0, in = 0;
      lua_getfield(L, link, "trace");
      const char *trace = lua_tolstring(L, -1, &tn);
      lua_getfield(L, link, "id");
      const char *id = lua_tolstring(L, -1, &in);
      if (trace && id && tn == 16 && in == 8) {
        if (i > 1)
          PUT(w, ",");
        PUT(w, "{\"flags\":257,\"traceId\":");
        put_hex(w, (const unsigned char *)trace, 16);
        PUT(w, ",\"spanId\":");
        put_hex(w, (const unsigned char *)id, 8);
        PUT(w, ",");
        lua_getfield(L, link, "attrs");
        put_attributes(w, -1);
        lua_pop(L, 1);
        PUT(w, "}");
      }
      lua_pop(L, 3);
    }
    PUT(w, "]");
  }
  lua_pop(L, 1);
}

int spool__span_encode(lua_State *L, const spool__span *sp, long long finish,
                       int err_idx, int schema_idx, int top, size_t limit,
                       spool__buf *b) {
  enc w = {L, b, limit, 0, top};
  if (spool__buf_reserve(b, 2048) != 0)
    return -1;
  /* W3C flags: sampled; bits 8 and 9 say whether the parent is remote. */
  if (sp->has_parent && sp->remote)
    PUT(&w, "{\"flags\":769,\"traceId\":");
  else
    PUT(&w, "{\"flags\":257,\"traceId\":");
  put_hex(&w, sp->trace, 16);
  PUT(&w, ",\"spanId\":");
  put_hex(&w, sp->id, 8);
  if (sp->has_parent) {
    PUT(&w, ",\"parentSpanId\":");
    put_hex(&w, sp->parent, 8);
  }
  size_t len;
  lua_getiuservalue(L, 1, 1);
  const char *name = lua_tolstring(L, -1, &len);
  PUT(&w, ",\"name\":");
  put_name(&w, name ? name : "", name ? len : 0);
  lua_pop(L, 1);
  PUT(&w, ",\"kind\":");
  put_int(&w, sp->kind, 0);
  PUT(&w, ",\"startTimeUnixNano\":");
  put_int(&w, sp->start, 1);
  PUT(&w, ",\"endTimeUnixNano\":");
  put_int(&w, finish < sp->start ? sp->start : finish, 1);
  PUT(&w, ",");
  put_schema_values(&w, luaL_checkudata(L, schema_idx, SCHEMA_META),
                    schema_idx + 1);
  put_events(&w);
  put_links(&w);
  if (lua_type(L, err_idx) == LUA_TSTRING) {
    const char *msg = lua_tolstring(L, err_idx, &len);
    PUT(&w, ",\"status\":{\"code\":2,\"message\":");
    put_text(&w, msg, len, 1024);
    PUT(&w, "}");
  }
  PUT(&w, "}");
  return w.failed ? -1 : 0;
}

void spool__open_span_schema(lua_State *L) {
  luaL_newmetatable(L, SCHEMA_META);
  lua_pop(L, 1);
}
