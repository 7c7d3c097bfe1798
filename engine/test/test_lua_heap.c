/*
 * test_lua_heap.c: the Lua state's allocator (lua_heap.h), by the
 * lua_Alloc contract directly, then as a Lua state's allocator under a
 * workload that grows and shrinks objects across its size classes.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <string.h>

#include "lua_heap.h"
#include "test.h"

static void fill(unsigned char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    p[i] = (unsigned char)(seed + i * 7);
}

static int intact(const unsigned char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != (unsigned char)(seed + i * 7))
      return 0;
  return 1;
}

TEST_IMPL(lua_heap_contract) {
  spool__lua_heap *h = spool__lua_heap_new();
  ASSERT(h != NULL);
  /* Every size up to past the largest class, grown and shrunk across
   * class boundaries and into malloc's range: the contents move along. */
  enum { N = 700 };
  static unsigned char *blocks[N];
  for (size_t n = 1; n < N; n++) {
    blocks[n] = spool__lua_heap_alloc(h, NULL, LUA_TTABLE, n);
    ASSERT(blocks[n] != NULL);
    ASSERT_EQ(0, (int)((size_t)blocks[n] % 16));
    fill(blocks[n], n, (unsigned)n);
  }
  for (size_t n = 1; n < N; n++) {
    size_t bigger = n * 3 + 5;
    blocks[n] = spool__lua_heap_alloc(h, blocks[n], n, bigger);
    ASSERT(blocks[n] != NULL);
    ASSERT(intact(blocks[n], n, (unsigned)n));
    fill(blocks[n], bigger, (unsigned)n + 1);
    size_t smaller = n / 2 + 1;
    blocks[n] = spool__lua_heap_alloc(h, blocks[n], bigger, smaller);
    ASSERT(blocks[n] != NULL);
    ASSERT(intact(blocks[n], smaller, (unsigned)n + 1));
  }
  for (size_t n = 1; n < N; n++)
    ASSERT(spool__lua_heap_alloc(h, blocks[n], n / 2 + 1, 0) == NULL);
  /* Freed blocks serve the next requests of their class, intact. */
  for (size_t n = 1; n < N; n++) {
    blocks[n] = spool__lua_heap_alloc(h, NULL, 0, n);
    fill(blocks[n], n, 3);
  }
  for (size_t n = 1; n < N; n++) {
    ASSERT(intact(blocks[n], n, 3));
    spool__lua_heap_alloc(h, blocks[n], n, 0);
  }
  spool__lua_heap_free(h);
  spool__lua_heap_free(NULL);
}

TEST_IMPL(lua_heap_runs_lua) {
  spool__lua_heap *h = spool__lua_heap_new();
  lua_State *L = lua_newstate(spool__lua_heap_alloc, h);
  ASSERT(L != NULL);
  luaL_openlibs(L);
  /* Tables and strings of every size, grown, shrunk by collection, and
   * checked after many cycles of reuse. */
  const char *script =
      "local sum = 0\n"
      "for round = 1, 30 do\n"
      "  local keep = {}\n"
      "  for i = 1, 400 do\n"
      "    local t = {}\n"
      "    for j = 1, i % 40 do t[j] = j; t['k' .. j] = ('x'):rep(j) end\n"
      "    keep[i] = t\n"
      "  end\n"
      "  for i = 1, 400, 3 do keep[i] = nil end\n"
      "  collectgarbage()\n"
      "  for i = 2, 400, 3 do\n"
      "    local t = keep[i]\n"
      "    for j = 1, i % 40 do sum = sum + t[j] + #t['k' .. j] end\n"
      "  end\n"
      "end\n"
      "return sum\n";
  ASSERT_EQ(LUA_OK, luaL_dostring(L, script));
  long long want = 0;
  for (int round = 1; round <= 30; round++)
    for (int i = 2; i <= 400; i += 3)
      for (int j = 1; j <= i % 40; j++)
        want += 2 * j;
  ASSERT_EQ(want, (long long)lua_tointeger(L, -1));
  lua_close(L);
  spool__lua_heap_free(h);
}
