/*
 * l_window.c: a context window's units (spool.run.window), counted and
 * listed at every step of every run: each message's tokens at the
 * thread's calibration factor, which changes from step to step, so
 * nothing of it can be kept; and the messages of the units, in order, for
 * the request. In Lua these were an eighth of a tool step's instructions.
 *
 *   core.sizes_tokens(sizes, factor) -> tokens of messages of these sizes
 *     (a list of bytes), as spool.tokens.of_bytes counts each one
 *   core.units_tokens(units, factor, set) -> the tokens of window units
 *     { overhead = n, bytes = { n, ... } }: each one's overhead and sizes,
 *     and the same at factor 1 (a request's uncalibrated estimate); `set`
 *     also stores each unit's count in unit.tokens
 *   core.units_messages(units) -> a new list of the units' messages
 *     (unit.messages), in order
 *
 * The rule is spool.tokens.of_bytes, ceil(bytes / 4 * factor), in the
 * same double arithmetic, so the sums are those the Lua functions made
 * (spec/tokens_spec.lua compares them).
 */
#include <math.h>

#include "spool_int.h"

/* More tokens than this in one message is no count (and would not fit an
 * integer). */
#define MAX_TOKENS 0x1p62

int spool__tokens_of(lua_Number bytes, lua_Number factor, lua_Integer *tokens) {
  *tokens = 0;
  if (!(bytes > 0))
    return 0;
  lua_Number t = ceil(bytes / 4 * factor);
  if (!(t < MAX_TOKENS && t > -MAX_TOKENS))
    return -1;
  *tokens = (lua_Integer)t;
  return 0;
}

/* The tokens of the sizes in the table at `idx`; *plain gets them at
 * factor 1. */
static lua_Integer sum_sizes(lua_State *L, int idx, lua_Number factor,
                             lua_Unsigned *plain) {
  lua_Unsigned n = 0; /* (sums wrap as Lua's integers do) */
  lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
  for (lua_Integer i = 1; i <= len; i++) {
    lua_rawgeti(L, idx, i);
    int isnum;
    lua_Number b = lua_tonumberx(L, -1, &isnum);
    lua_pop(L, 1);
    if (!isnum)
      return luaL_error(L, "size %d is not a number of bytes", (int)i);
    lua_Integer t, at_one;
    if (spool__tokens_of(b, factor, &t) != 0 ||
        spool__tokens_of(b, 1, &at_one) != 0)
      return luaL_error(L, "size %d makes no token count", (int)i);
    n += (lua_Unsigned)t;
    *plain += (lua_Unsigned)at_one;
  }
  return (lua_Integer)n;
}

static int l_sizes_tokens(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Unsigned plain = 0;
  lua_pushinteger(L, sum_sizes(L, 1, luaL_optnumber(L, 2, 1), &plain));
  return 1;
}

/* A unit's field, by the key string kept as upvalue `key` (a raw get:
 * no string to make each time). stack: unit -> unit, value */
static int unit_field(lua_State *L, int unit, int key) {
  lua_pushvalue(L, lua_upvalueindex(key));
  return lua_rawget(L, unit);
}

enum { KEY_OVERHEAD = 1, KEY_BYTES, KEY_TOKENS, KEY_MESSAGES };

static int l_units_tokens(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Number factor = luaL_optnumber(L, 2, 1);
  int set = lua_toboolean(L, 3);
  lua_settop(L, 1);
  lua_Unsigned total = 0, plain = 0; /* (wrapping as Lua's integers do) */
  lua_Integer units = (lua_Integer)lua_rawlen(L, 1);
  for (lua_Integer i = 1; i <= units; i++) {
    if (lua_rawgeti(L, 1, i) != LUA_TTABLE)
      return luaL_error(L, "unit %d is not a table", (int)i);
    int isnum;
    unit_field(L, 2, KEY_OVERHEAD);
    lua_Integer n = lua_tointegerx(L, -1, &isnum);
    if (!isnum)
      return luaL_error(L, "unit %d has no overhead", (int)i);
    if (unit_field(L, 2, KEY_BYTES) != LUA_TTABLE)
      return luaL_error(L, "unit %d has no sizes", (int)i);
    plain += (lua_Unsigned)n;
    n = (lua_Integer)((lua_Unsigned)n +
                      (lua_Unsigned)sum_sizes(L, 4, factor, &plain));
    lua_pop(L, 2);
    if (set) {
      lua_pushvalue(L, lua_upvalueindex(KEY_TOKENS));
      lua_pushinteger(L, n);
      lua_rawset(L, 2);
    }
    lua_pop(L, 1);
    total += (lua_Unsigned)n;
  }
  lua_pushinteger(L, (lua_Integer)total);
  lua_pushinteger(L, (lua_Integer)plain);
  return 2;
}

static int l_units_messages(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_Integer units = (lua_Integer)lua_rawlen(L, 1), n = 0;
  lua_createtable(L, (int)(units < 1024 ? 2 * units : 0), 0); /* 2 */
  for (lua_Integer i = 1; i <= units; i++) {
    if (lua_rawgeti(L, 1, i) != LUA_TTABLE)
      return luaL_error(L, "unit %d is not a table", (int)i);
    if (unit_field(L, 3, KEY_MESSAGES) != LUA_TTABLE)
      return luaL_error(L, "unit %d has no messages", (int)i);
    lua_Integer len = (lua_Integer)lua_rawlen(L, 4);
    for (lua_Integer j = 1; j <= len; j++) {
      lua_rawgeti(L, 4, j);
      lua_rawseti(L, 2, ++n);
    }
    lua_pop(L, 2);
  }
  return 1;
}

void spool__open_window(lua_State *L) {
  lua_pushcfunction(L, l_sizes_tokens);
  lua_setfield(L, -2, "sizes_tokens");
  lua_pushliteral(L, "overhead");
  lua_pushliteral(L, "bytes");
  lua_pushliteral(L, "tokens");
  lua_pushliteral(L, "messages");
  lua_pushvalue(L, -4);
  lua_pushvalue(L, -4);
  lua_pushvalue(L, -4);
  lua_pushvalue(L, -4);
  lua_pushcclosure(L, l_units_tokens, 4);
  lua_setfield(L, -6, "units_tokens");
  lua_pushcclosure(L, l_units_messages, 4);
  lua_setfield(L, -2, "units_messages");
}
