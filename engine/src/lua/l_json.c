/*
 * l_json.c: spool.json, the exact JSON codec agents and the library use.
 *
 *   json.decode(text)   -> value | nil, "EJSON: line 1, column 5 ...: why"
 *   json.encode(value)  -> text (raises on values JSON cannot hold)
 *   json.null           a sentinel for null (a light userdata)
 *   json.array([t])     marks t (or a new table) as an array, so an empty
 *                       one encodes as [] rather than {}
 *   json.is_array(t)
 *   json.raw(text)      text that is already one JSON value (checked
 *                       here), written as it is wherever encode meets it:
 *                       a part encoded once and spliced into many
 *                       documents. tostring gives the text back; two are
 *                       equal when their texts are.
 *
 * Decoded arrays carry the array mark, so every document round-trips:
 * integers stay integers, floats keep their exact value (1.0 stays 1.0),
 * an integer past 64 bits comes back as json.raw of its digits (exact, and
 * written back as the same number; tostring gives the digits),
 * [] and {} stay apart, null survives as json.null. Object keys are written
 * in sorted order, so the same value always encodes to the same bytes.
 *
 * The parser lives in json.c; this file only builds and walks Lua values.
 */
#include <stdlib.h>
#include <string.h>

#include "codec/extract.h"
#include "codec/json.h"
#include "spool_int.h"

#define ARRAY_MT "spool.json.array"
#define MAX_TEXT (64u << 20) /* bytes of encoded JSON */
#define SCRATCH_MT "spool.json.scratch"
#define RAW_MT "spool.json.raw"

typedef struct builder {
  lua_State *L;
  int array_mt; /* stack index of the array mark */
  int results;  /* extract: stack index of the results table */
  int top;      /* extract: the stack top before the current candidate */
  int n;        /* extract: candidates kept */
  int depth;
  /* Per open container: 0 for an object, else 1 + elements so far. */
  lua_Integer count[SPOOL_JSON_MAX_DEPTH + 1];
  /* Per open container: the stack top when it began, and its members
   * held on the stack above it, not yet in a table (-1 once its table is
   * made): a container is made at its end at its exact size, and only
   * one past HOLD members grows as members come. */
  int base[SPOOL_JSON_MAX_DEPTH + 1];
  int held[SPOOL_JSON_MAX_DEPTH + 1];
} builder;

/* Members of a container kept on the stack before its table is made:
 * adding keys to a table one by one rehashes it at every power of two,
 * which cost decoding half its time. */
#define HOLD 16

typedef struct encoder {
  lua_State *L;
  spool__buf *out;
  int array_mt, raw_mt; /* stack indices of the array mark and json.raw's
                           metatable */
  int depth;
  struct {
    const char *key; /* NULL for an array index */
    size_t keylen;
    lua_Integer index;
  } path[SPOOL_JSON_MAX_DEPTH + 1];
} encoder;

/*
 * Upvalues of decode/encode: 1 = this scratch userdata, 2 = the array mark,
 * 3 = json.raw's metatable.
 * No function here calls Lua code, but making a Lua value may run a
 * finalizer, and a finalizer may use json: decode keeps its builder on
 * the C stack, and encode and extract take the scratch for one call at a
 * time (take_scratch). Buffers live in the scratch, so a Lua error in the
 * middle leaks nothing.
 */
typedef struct scratch {
  spool__buf unescape;
  spool__buf out;
  spool__extract_work work;
  builder b;
  encoder en;
  int busy; /* an encode or an extract is using it */
} scratch;

static int scratch_gc(lua_State *L) {
  scratch *s = luaL_checkudata(L, 1, SCRATCH_MT);
  spool__buf_free(&s->unescape);
  spool__buf_free(&s->out);
  spool__extract_work_free(&s->work);
  return 0;
}

/* __close, as an encode or an extract returns or raises: the scratch is
 * free again, and keeps no big document's memory. */
static int scratch_close(lua_State *L) {
  scratch *s = luaL_checkudata(L, 1, SCRATCH_MT);
  s->busy = 0;
  if (s->out.cap > (1u << 20))
    spool__buf_free(&s->out);
  return 0;
}

/* The scratch for an encode or an extract, pushed on the stack: the
 * state's own, marked busy until the call ends; or, if a call is using
 * it (making a Lua value may run a finalizer, which may use json too),
 * one of this call's own, which the collector frees. */
static scratch *take_scratch(lua_State *L) {
  scratch *sc = lua_touserdata(L, lua_upvalueindex(1));
  if (sc->busy) {
    sc = lua_newuserdatauv(L, sizeof *sc, 0);
    memset(sc, 0, sizeof *sc);
    luaL_setmetatable(L, SCRATCH_MT);
    return sc;
  }
  sc->busy = 1;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_toclose(L, -1);
  return sc;
}

/* ---- decode ---- */

/* Makes the table of open container `d` from the members held above its
 * base, sized for `room` of them, and leaves it in their place.
 * stack: [key,] value ... -> table */
static void make_table(builder *b, int d, int room) {
  lua_State *L = b->L;
  int base = b->base[d], n = b->held[d];
  int array = b->count[d] > 0;
  luaL_checkstack(L, 4, "JSON too deep");
  lua_createtable(L, array ? room : 0, array ? 0 : room);
  if (array) {
    lua_pushvalue(L, b->array_mt);
    lua_setmetatable(L, -2);
    for (int i = 1; i <= n; i++) {
      lua_pushvalue(L, base + i);
      lua_rawseti(L, -2, i);
    }
  } else {
    for (int i = 1; i <= 2 * n; i += 2) { /* in order: the last key wins */
      lua_pushvalue(L, base + i);
      lua_pushvalue(L, base + i + 1);
      lua_rawset(L, -3);
    }
  }
  if (n > 0) {
    lua_replace(L, base + 1);
    lua_settop(L, base + 1);
  }
  b->held[d] = -1;
}

/* Puts the value on top of the stack into its container (or leaves it as
 * the result). stack: [key,] value -> (held, or in the container) */
static int place(builder *b) {
  lua_State *L = b->L;
  int d = b->depth;
  if (d == 0)
    return 0;
  lua_Integer *n = &b->count[d];
  if (b->held[d] >= 0) {
    if (*n > 0)
      (*n)++;
    if (++b->held[d] == HOLD)
      make_table(b, d, 2 * HOLD);
  } else if (*n > 0) {
    lua_rawseti(L, -2, (*n)++);
  } else {
    lua_rawset(L, -3);
  }
  return 0;
}

static int b_null(void *ud) {
  builder *b = ud;
  luaL_checkstack(b->L, 2, "JSON too deep");
  lua_pushlightuserdata(b->L, NULL);
  return place(b);
}

static int b_boolean(void *ud, int v) {
  builder *b = ud;
  luaL_checkstack(b->L, 2, "JSON too deep");
  lua_pushboolean(b->L, v);
  return place(b);
}

static int b_integer(void *ud, long long v) {
  builder *b = ud;
  luaL_checkstack(b->L, 2, "JSON too deep");
  lua_pushinteger(b->L, (lua_Integer)v);
  return place(b);
}

static int b_number(void *ud, double v) {
  builder *b = ud;
  luaL_checkstack(b->L, 2, "JSON too deep");
  lua_pushnumber(b->L, (lua_Number)v);
  return place(b);
}

/* json.raw's value: the text, checked once to be one JSON value. */
typedef struct raw_json {
  size_t len;
  char text[];
} raw_json;

static void push_raw(lua_State *L, const char *text, size_t len) {
  raw_json *raw = lua_newuserdatauv(L, sizeof *raw + len, 0);
  raw->len = len;
  memcpy(raw->text, text, len);
  luaL_setmetatable(L, RAW_MT);
}

static int b_big_integer(void *ud, const char *s, size_t n) {
  builder *b = ud;
  luaL_checkstack(b->L, 2, "JSON too deep");
  push_raw(b->L, s, n);
  return place(b);
}

static int b_string(void *ud, const char *s, size_t n) {
  builder *b = ud;
  luaL_checkstack(b->L, 2, "JSON too deep");
  lua_pushlstring(b->L, s, n);
  return place(b);
}

static int b_key(void *ud, const char *s, size_t n) {
  builder *b = ud;
  luaL_checkstack(b->L, 2, "JSON too deep");
  lua_pushlstring(b->L, s, n);
  return 0;
}

static int begin(builder *b, lua_Integer count) {
  luaL_checkstack(b->L, 4, "JSON too deep");
  int d = ++b->depth;
  b->count[d] = count;
  b->base[d] = lua_gettop(b->L);
  b->held[d] = 0;
  return 0;
}

static int b_begin_array(void *ud) {
  return begin(ud, 1);
}

static int b_begin_object(void *ud) {
  return begin(ud, 0);
}

static int b_end(void *ud) {
  builder *b = ud;
  if (b->held[b->depth] >= 0)
    make_table(b, b->depth, b->held[b->depth]);
  b->depth--;
  return place(b);
}

static const spool__json_sink lua_sink = {
    b_null, b_boolean,     b_integer, b_number,       b_big_integer, b_string,
    b_key,  b_begin_array, b_end,     b_begin_object, b_end,
};

static int l_json_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  scratch *sc = lua_touserdata(L, lua_upvalueindex(1));
  /* The builder is this call's own: making a table may run a finalizer,
   * which may decode too (the unescape buffer is used only within one
   * string, so it may be shared). */
  builder own;
  builder *b = &own;
  b->L = L;
  b->depth = 0;
  lua_settop(L, 1);
  lua_pushvalue(L, lua_upvalueindex(2));
  b->array_mt = 2;
  spool__json_error err;
  int rc = spool__json_parse(s, n, &lua_sink, b, &sc->unescape, &err);
  if (rc != 0) {
    char msg[160];
    spool__json_error_format(&err, msg, sizeof msg);
    return spool__push_fail(L, "EJSON: %s", msg);
  }
  return 1;
}

/* ---- extract: candidates from a model's reply (extract.c) ---- */

/* The hooks share the sink's user data, the builder. */
static void x_begin(void *ud) {
  builder *b = ud;
  b->top = lua_gettop(b->L);
  b->depth = 0;
}

static void x_reject(void *ud) {
  builder *b = ud;
  lua_settop(b->L, b->top);
}

/* stack: value -> (stored in the results as { value, repairs, ... }) */
static int x_accept(void *ud, const spool__extract_result *r) {
  builder *b = ud;
  lua_State *L = b->L;
  lua_createtable(L, 0, 6);
  lua_insert(L, -2);
  lua_setfield(L, -2, "value");
  lua_createtable(L, r->nrepairs, 0);
  const char *m = r->repairs;
  for (int i = 1; i <= r->nrepairs; i++) {
    lua_pushstring(L, m);
    lua_rawseti(L, -2, i);
    m += strlen(m) + 1;
  }
  lua_pushvalue(L, b->array_mt);
  lua_setmetatable(L, -2);
  lua_setfield(L, -2, "repairs");
  lua_pushinteger(L, (lua_Integer)r->from + 1);
  lua_setfield(L, -2, "from");
  lua_pushinteger(L, (lua_Integer)r->to);
  lua_setfield(L, -2, "to");
  lua_pushboolean(L, r->fenced);
  lua_setfield(L, -2, "fenced");
  lua_pushboolean(L, r->truncated);
  lua_setfield(L, -2, "truncated");
  lua_rawseti(L, b->results, ++b->n);
  return 0;
}

static const spool__extract_hooks lua_hooks = {x_begin, x_reject, x_accept};

/* extract(text [, max [, partial]]) -> { { value, repairs, from, to,
 * fenced, truncated }, ..., incomplete = "EJSON: ..." (what was not
 * returned, if anything) } | nil, "EJSON: ..." */
static int l_json_extract(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  int max = (int)luaL_optinteger(L, 2, 8);
  int flags = lua_toboolean(L, 3) ? SPOOL_EXTRACT_PARTIAL : 0;
  lua_settop(L, 1);
  scratch *sc = take_scratch(L);         /* 2 */
  lua_pushvalue(L, lua_upvalueindex(2)); /* 3: the array mark */
  lua_newtable(L);                       /* 4: the results */
  builder *b = &sc->b;
  b->L = L;
  b->array_mt = 3;
  b->results = 4;
  b->n = 0;
  spool__json_error err;
  if (spool__extract(s, n, max, flags, &lua_sink, &lua_hooks, b, &sc->work,
                     &err) < 0) {
    char msg[160];
    spool__json_error_format(&err, msg, sizeof msg);
    return spool__push_fail(L, "EJSON: %s", msg);
  }
  lua_settop(L, 4);
  if (err.msg[0]) {
    char msg[160];
    spool__json_error_format(&err, msg, sizeof msg);
    lua_pushfstring(L, "EJSON: %s", msg);
    lua_setfield(L, 4, "incomplete");
  }
  return 1;
}

/* ---- encode ---- */

/* Raises an error naming where in the value the problem is, e.g.
 * "cannot encode a function at $.tools[2].run". */
static int enc_error(encoder *en, const char *what) {
  luaL_Buffer lb;
  lua_State *L = en->L;
  luaL_buffinit(L, &lb);
  luaL_addstring(&lb, SPOOL__JSON_REFUSED);
  luaL_addstring(&lb, what);
  luaL_addstring(&lb, " at $");
  for (int i = 1; i <= en->depth; i++) {
    if (en->path[i].key) {
      luaL_addchar(&lb, '.');
      luaL_addlstring(&lb, en->path[i].key, en->path[i].keylen);
    } else {
      lua_pushfstring(L, "[%I]", (LUAI_UACINT)en->path[i].index);
      luaL_addvalue(&lb);
    }
  }
  luaL_pushresult(&lb);
  return lua_error(L);
}

static void nomem(encoder *en) {
  luaL_error(en->L, SPOOL__JSON_REFUSED "out of memory");
}

static void encode(encoder *en, int idx);

/* Has the value at idx the metatable at stack index mt? */
static int has_metatable(lua_State *L, int idx, int mt) {
  if (!lua_getmetatable(L, idx))
    return 0;
  int r = lua_rawequal(L, -1, mt);
  lua_pop(L, 1);
  return r;
}

/* Objects of at most this many keys are gathered in one pass. */
#define SMALL_OBJECT 32

/* An object's key, and where its value sits on the stack. */
typedef struct obj_key {
  const char *s;
  size_t len;
  int value; /* stack slot */
} obj_key;

static int key_less(const obj_key *a, const obj_key *b) {
  int c = memcmp(a->s, b->s, a->len < b->len ? a->len : b->len);
  return c ? c < 0 : a->len < b->len;
}

static int cmp_keys(const void *a, const void *b) {
  const obj_key *ka = a, *kb = b;
  return key_less(ka, kb) ? -1 : key_less(kb, ka);
}

/* Orders keys bytewise: insertion sort for the few keys most objects
 * have, qsort beyond. */
static void sort_keys(obj_key *k, int n) {
  if (n > 16) {
    qsort(k, (size_t)n, sizeof *k, cmp_keys);
    return;
  }
  for (int i = 1; i < n; i++) {
    obj_key x = k[i];
    int j = i;
    for (; j > 0 && key_less(&x, &k[j - 1]); j--)
      k[j] = k[j - 1];
    k[j] = x;
  }
}

/* Writes the object whose nk keys are sorted in keys, their values on the
 * stack, and pops what sits above base. */
static void write_object(encoder *en, obj_key *keys, int nk, int base) {
  sort_keys(keys, nk);
  if (spool__buf_addc(en->out, '{') != 0)
    nomem(en);
  for (int i = 0; i < nk; i++) {
    const char *k = keys[i].s;
    size_t klen = keys[i].len;
    en->path[en->depth].key = k;
    en->path[en->depth].keylen = klen;
    if (i > 0 && spool__buf_addc(en->out, ',') != 0)
      nomem(en);
    int rc = spool__json_write_string(en->out, k, klen);
    if (rc == -2)
      enc_error(en, "invalid UTF-8 in an object key");
    if (rc != 0 || spool__buf_addc(en->out, ':') != 0)
      nomem(en);
    encode(en, keys[i].value);
  }
  if (spool__buf_addc(en->out, '}') != 0)
    nomem(en);
  lua_settop(en->L, base - 1);
  en->depth--;
}

/* Most tables are small objects: one pass gathers their keys (each key
 * stays on the stack beside its value) while it checks that they are all
 * strings. Returns whether the table at idx was one and is written; if
 * not, the stack is as it was. */
static int encode_small_object(encoder *en, int idx) {
  lua_State *L = en->L;
  obj_key keys[SMALL_OBJECT];
  int nk = 0;
  int base = lua_gettop(L) + 1;
  luaL_checkstack(L, 2 * SMALL_OBJECT + 4, "JSON too deep");
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (nk == SMALL_OBJECT || lua_type(L, -2) != LUA_TSTRING) {
      lua_settop(L, base - 1);
      return 0;
    }
    keys[nk].s = lua_tolstring(L, -2, &keys[nk].len);
    keys[nk].value = lua_gettop(L);
    nk++;
    lua_pushvalue(L, -2); /* the key again, for lua_next */
  }
  if (nk == 0)
    return 0;
  en->depth++;
  write_object(en, keys, nk, base);
  return 1;
}

static void encode_table(encoder *en, int idx) {
  lua_State *L = en->L;
  if (en->depth >= SPOOL_JSON_MAX_DEPTH)
    enc_error(en, "nesting too deep (is there a cycle?)");
  int marked = has_metatable(L, idx, en->array_mt);
  if (!marked && encode_small_object(en, idx))
    return;
  /* Classify: count keys, and see whether they are exactly 1..n. */
  lua_Integer n = 0, max = 0;
  int strings = 0, others = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    n++;
    if (lua_type(L, -1) == LUA_TSTRING) {
      strings++;
    } else if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1) {
      lua_Integer k = lua_tointeger(L, -1);
      if (k > max)
        max = k;
    } else {
      others++;
    }
  }
  if (others)
    enc_error(en, "cannot encode a table key that is neither a string nor "
                  "a positive integer");
  if (strings && strings != n)
    enc_error(en, "cannot encode a table with both string and integer keys");
  if (marked && strings)
    enc_error(en, "cannot encode an array-marked table with string keys");
  /* (Named before going a level down: the path has no entry there yet.) */
  if (strings == 0 && n > 0 && max != n)
    enc_error(en, "cannot encode a sparse array (it has holes)");
  en->depth++;
  if (strings == 0 && (n > 0 || marked)) {
    if (spool__buf_addc(en->out, '[') != 0)
      nomem(en);
    for (lua_Integer i = 1; i <= n; i++) {
      en->path[en->depth].key = NULL;
      en->path[en->depth].index = i;
      if (i > 1 && spool__buf_addc(en->out, ',') != 0)
        nomem(en);
      lua_rawgeti(L, idx, i);
      encode(en, lua_gettop(L));
      lua_pop(L, 1);
    }
    if (spool__buf_addc(en->out, ']') != 0)
      nomem(en);
    en->depth--;
    return;
  }
  /* An object: push its values, sort its keys (the table keeps their
   * strings alive), then write key:value pairs. */
  luaL_checkstack(L, (int)n + 4, "object too large to encode");
  int base = lua_gettop(L) + 1;
  obj_key small[32];
  obj_key *keys = small;
  if (n > 32)
    keys = lua_newuserdatauv(L, sizeof *keys * (size_t)n, 0);
  int nk = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    /* stack: ... key value -> ... value key: the value stays, the key
     * goes on to lua_next */
    keys[nk].s = lua_tolstring(L, -2, &keys[nk].len);
    lua_insert(L, -2);
    keys[nk].value = lua_gettop(L) - 1;
    nk++;
  }
  write_object(en, keys, nk, base);
}

static void encode(encoder *en, int idx) {
  lua_State *L = en->L;
  int rc = 0;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    rc = spool__buf_adds(en->out, "null");
    break;
  case LUA_TBOOLEAN:
    rc = spool__buf_adds(en->out, lua_toboolean(L, idx) ? "true" : "false");
    break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx))
      rc = spool__json_write_integer(en->out, lua_tointeger(L, idx));
    else if ((rc = spool__json_write_double(en->out, lua_tonumber(L, idx))) ==
             -2)
      enc_error(en, "cannot encode NaN or an infinity");
    break;
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if ((rc = spool__json_write_string(en->out, s, len)) == -2)
      enc_error(en, "invalid UTF-8 in a string");
    break;
  }
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == NULL) {
      rc = spool__buf_adds(en->out, "null");
      break;
    }
    enc_error(en, "cannot encode a light userdata");
    break;
  case LUA_TTABLE:
    luaL_checkstack(L, 8, "JSON too deep");
    encode_table(en, idx);
    break;
  case LUA_TUSERDATA: {
    raw_json *raw =
        has_metatable(L, idx, en->raw_mt) ? lua_touserdata(L, idx) : NULL;
    if (raw == NULL)
      enc_error(en, "cannot encode a userdata");
    rc = spool__buf_add(en->out, raw->text, raw->len);
    break;
  }
  default:
    enc_error(en,
              lua_pushfstring(L, "cannot encode a %s", luaL_typename(L, idx)));
  }
  if (rc != 0)
    nomem(en);
  /* The text is built outside the Lua heap, where no run's memory budget
   * sees it: a table that holds one big string many times must not make a
   * text of gigabytes. The bound is the one on HTTP responses. */
  if (en->out->len > MAX_TEXT)
    enc_error(en, "the JSON text would be larger than 64 MiB");
}

static int l_json_encode(lua_State *L) {
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  scratch *sc = take_scratch(L); /* 2 */
  encoder *en = &sc->en;
  en->L = L;
  en->out = &sc->out;
  en->depth = 0;
  lua_pushvalue(L, lua_upvalueindex(2));
  en->array_mt = 3;
  lua_pushvalue(L, lua_upvalueindex(3));
  en->raw_mt = 4;
  spool__buf_clear(en->out);
  encode(en, 1);
  lua_pushlstring(L, en->out->data ? en->out->data : "", en->out->len);
  return 1;
}

static int l_json_array(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  } else {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
  }
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_setmetatable(L, 1);
  return 1;
}

static int l_json_raw(lua_State *L) {
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  scratch *sc = lua_touserdata(L, lua_upvalueindex(1));
  spool__json_error err;
  if (spool__json_check(text, len, &sc->unescape, &err) != 0) {
    char msg[160];
    spool__json_error_format(&err, msg, sizeof msg);
    return luaL_error(L, "spool.json.raw: not one JSON value: %s", msg);
  }
  push_raw(L, text, len);
  return 1;
}

static int raw_tostring(lua_State *L) {
  raw_json *raw = luaL_checkudata(L, 1, RAW_MT);
  lua_pushlstring(L, raw->text, raw->len);
  return 1;
}

static int raw_eq(lua_State *L) {
  raw_json *a = luaL_testudata(L, 1, RAW_MT), *b = luaL_testudata(L, 2, RAW_MT);
  lua_pushboolean(L, a && b && a->len == b->len &&
                         memcmp(a->text, b->text, a->len) == 0);
  return 1;
}

static int l_json_is_array(lua_State *L) {
  lua_settop(L, 1);
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_pushboolean(L, lua_type(L, 1) == LUA_TTABLE && has_metatable(L, 1, 2));
  return 1;
}

void spool__json_append(lua_State *L, int idx, spool__buf *out, int depth) {
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, 4, "JSON too deep");
  /* Not zeroed: the path is long, and each level is written before it is
   * read. */
  encoder en;
  en.L = L;
  en.out = out;
  en.depth = depth;
  for (int i = 1; i <= depth && i <= SPOOL_JSON_MAX_DEPTH; i++) {
    en.path[i].key = NULL; /* (an error names the path from here) */
    en.path[i].index = 1;
  }
  en.array_mt = lua_gettop(L) + 1;
  luaL_getmetatable(L, ARRAY_MT);
  en.raw_mt = lua_gettop(L) + 1;
  luaL_getmetatable(L, RAW_MT);
  encode(&en, idx);
  lua_pop(L, 2);
}

const char *spool__json_raw_text(lua_State *L, int idx, size_t *len) {
  raw_json *raw = luaL_testudata(L, idx, RAW_MT);
  if (raw == NULL)
    return NULL;
  *len = raw->len;
  return raw->text;
}

int luaopen_spool_json(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"decode", l_json_decode},
      {"encode", l_json_encode},
      {"array", l_json_array},
      {"is_array", l_json_is_array},
      {"raw", l_json_raw},
      {"_extract", l_json_extract},
      {NULL, NULL},
  };
  luaL_newmetatable(L, RAW_MT);
  lua_pushliteral(L, "json.raw");
  lua_setfield(L, -2, "__name");
  lua_pushcfunction(L, raw_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushcfunction(L, raw_eq);
  lua_setfield(L, -2, "__eq");
  lua_pop(L, 1);
  lua_newtable(L);
  /* upvalue 1: the scratch buffers, freed by __gc with the state */
  scratch *sc = lua_newuserdatauv(L, sizeof *sc, 0);
  memset(sc, 0, sizeof *sc);
  if (luaL_newmetatable(L, SCRATCH_MT)) {
    lua_pushcfunction(L, scratch_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, scratch_close);
    lua_setfield(L, -2, "__close");
  }
  lua_setmetatable(L, -2);
  /* upvalue 2: the array mark, a metatable named for error messages */
  luaL_newmetatable(L, ARRAY_MT);
  lua_pushliteral(L, "json.array");
  lua_setfield(L, -2, "__name");
  /* upvalue 3: json.raw's metatable */
  luaL_getmetatable(L, RAW_MT);
  luaL_setfuncs(L, fns, 3);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  return 1;
}
