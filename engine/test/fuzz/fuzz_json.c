/*
 * fuzz_json.c: libFuzzer target for the Lua JSON codec (l_json.c over
 * json.c and extract.c), through a Lua state as agents use it. Built only
 * with -DSPOOL_FUZZ=ON (clang, ASan, UBSan); scripts/test runs it for a
 * bounded time over the seed corpus in corpus/json.
 *
 * Arbitrary bytes go to spool.json.decode. A failure must be a
 * positioned "EJSON: ..." message; a value must encode, and its encoding
 * must decode to a value that encodes to the same bytes (the codec
 * promises every document round-trips). Every value the lenient extractor
 * finds in the same bytes must encode too. A broken promise is a crash.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int luaopen_spool_json(lua_State *L);

static const char checks[] =
    "local json, text = ...\n"
    "local v, err = json.decode(text)\n"
    "if v == nil then\n"
    "  assert(type(err) == 'string', 'no error message')\n"
    "  assert(err:find('^EJSON: line %d+, column %d+ %(byte %d+%): '), err)\n"
    "else\n"
    "  local a = json.encode(v)\n"
    "  local w, werr = json.decode(a)\n"
    "  assert(w ~= nil, werr) -- (false is a value: not assert(decode(a)))\n"
    "  local b = json.encode(w)\n"
    "  assert(a == b, 'the round trip changed ' .. a .. ' into ' .. b)\n"
    "end\n"
    "local found = json._extract(text)\n"
    "for _, c in ipairs(found or {}) do\n"
    "  json.encode(c.value)\n"
    "end\n";

static lua_State *L;
static int checks_ref;

/* One state for the whole run: a fresh one per input would cost more than
 * the work it checks. */
static void setup(void) {
  L = luaL_newstate();
  if (L == NULL)
    abort();
  luaL_openlibs(L);
  if (luaL_loadbuffer(L, checks, sizeof checks - 1, "=fuzz_json") != LUA_OK)
    abort();
  checks_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  luaL_requiref(L, "spool.json", luaopen_spool_json, 0);
  lua_setfield(L, LUA_REGISTRYINDEX, "fuzz_json");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (L == NULL)
    setup();
  lua_rawgeti(L, LUA_REGISTRYINDEX, checks_ref);
  lua_getfield(L, LUA_REGISTRYINDEX, "fuzz_json");
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    fprintf(stderr, "fuzz_json: %s\n", lua_tostring(L, -1));
    abort();
  }
  return 0;
}
