/*
 * test_lua_heap.c: the Lua state's allocator (lua_heap.h), by the
 * lua_Alloc contract directly, then as a Lua state's allocator under a
 * workload that grows and shrinks objects across its size classes.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <string.h>

#include "base/lua_heap.h"
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

/* Each block counts for the account current when it was made, whichever
 * account is current when it is freed; growth moves it to the account
 * that grew it; a closed account's blocks count as the engine's. */
TEST_IMPL(lua_heap_accounts) {
  spool__lua_heap *h = spool__lua_heap_new();
  size_t base = spool__lua_heap_total(h);
  int a = spool__lua_heap_account_open(h, 0),
      b = spool__lua_heap_account_open(h, 0);
  ASSERT(a > 0 && b > 0 && a != b);
  spool__lua_heap_use(h, a);
  void *small = spool__lua_heap_alloc(h, NULL, LUA_TTABLE, 40);
  void *big = spool__lua_heap_alloc(h, NULL, LUA_TSTRING, 5000);
  ASSERT_EQ(5040, (int)spool__lua_heap_used(h, a));
  spool__lua_heap_use(h, b);
  small = spool__lua_heap_alloc(h, small, 40, 90); /* b grows a's block */
  ASSERT_EQ(5000, (int)spool__lua_heap_used(h, a));
  ASSERT_EQ(90, (int)spool__lua_heap_used(h, b));
  big = spool__lua_heap_alloc(h, big, 5000, 100); /* a shrink stays a's */
  ASSERT_EQ(100, (int)spool__lua_heap_used(h, a));
  spool__lua_heap_use(h, 0);
  spool__lua_heap_alloc(h, big, 100, 0); /* freed by the engine, for a */
  ASSERT_EQ(0, (int)spool__lua_heap_used(h, a));
  spool__lua_heap_account_close(h, b, 0);
  ASSERT_EQ(90, (int)spool__lua_heap_used(h, 0) - (int)base);
  spool__lua_heap_alloc(h, small, 90, 0);
  ASSERT_EQ(0, (int)(spool__lua_heap_used(h, 0) - base));
  ASSERT_EQ(base, spool__lua_heap_total(h));
  spool__lua_heap_account_close(h, a, 0);
  spool__lua_heap_free(h);
}

/* A limit refuses growth past it (shrinks never fail), and says why; the
 * heap's cap does the same for all accounts together. */
TEST_IMPL(lua_heap_limits) {
  spool__lua_heap *h = spool__lua_heap_new();
  int a = spool__lua_heap_account_open(h, 10000);
  spool__lua_heap_use(h, a);
  void *p = spool__lua_heap_alloc(h, NULL, 0, 9000);
  ASSERT(p != NULL);
  ASSERT(spool__lua_heap_alloc(h, NULL, 0, 2000) == NULL);
  ASSERT_EQ(a, spool__lua_heap_refused(h, a));
  ASSERT(spool__lua_heap_alloc(h, p, 9000, 12000) == NULL); /* intact */
  p = spool__lua_heap_alloc(h, p, 9000, 100);
  ASSERT(p != NULL);
  void *q = spool__lua_heap_alloc(h, NULL, 0, 2000);
  ASSERT(q != NULL);
  spool__lua_heap_forget_refusal(h, a);
  ASSERT_EQ(0, spool__lua_heap_refused(h, a));
  spool__lua_heap_alloc(h, q, 2000, 0);
  spool__lua_heap_alloc(h, p, 100, 0);
  spool__lua_heap_use(h, 0);
  spool__lua_heap_set_cap(h, spool__lua_heap_total(h) + 1000);
  ASSERT(spool__lua_heap_alloc(h, NULL, 0, 2000) == NULL);
  ASSERT_EQ(-1, spool__lua_heap_refused(h, 0));
  spool__lua_heap_account_close(h, a, 0);
  spool__lua_heap_free(h);
}

/* Account numbers are 16-bit tags: after 65,535 accounts the closed ones'
 * numbers serve again, and blocks a closed account left behind keep
 * counting for the engine, not for the account that reuses the number. */
TEST_IMPL(lua_heap_reuses_accounts) {
  spool__lua_heap *h = spool__lua_heap_new();
  int first = spool__lua_heap_account_open(h, 0);
  spool__lua_heap_use(h, first);
  void *small = spool__lua_heap_alloc(h, NULL, 0, 32);
  void *big = spool__lua_heap_alloc(h, NULL, 0, 4096);
  spool__lua_heap_use(h, 0);
  spool__lua_heap_account_close(h, first, 0);
  size_t engine = spool__lua_heap_used(h, 0);
  int reused = 0;
  for (int i = 0; i < 70000 && !reused; i++) {
    int id = spool__lua_heap_account_open(h, 0);
    ASSERT(id > 0);
    if (id == first) {
      reused = 1;
      spool__lua_heap_use(h, id);
      spool__lua_heap_alloc(h, small, 32, 0);
      spool__lua_heap_alloc(h, big, 4096, 0);
      ASSERT_EQ(0, (int)spool__lua_heap_used(h, id));
      ASSERT_EQ(engine - 32 - 4096, spool__lua_heap_used(h, 0));
      spool__lua_heap_use(h, 0);
    }
    spool__lua_heap_account_close(h, id, 0);
  }
  ASSERT(reused);
  spool__lua_heap_free(h);
}

/* A closed account's blocks count for its heir: freed later, they come off
 * the heir; once the closed number serves again, its large blocks count
 * as the engine's, and its small ones stay the heir's. */
TEST_IMPL(lua_heap_heirs) {
  spool__lua_heap *h = spool__lua_heap_new();
  int heir = spool__lua_heap_account_open(h, 0);
  int run = spool__lua_heap_account_open(h, 0);
  spool__lua_heap_use(h, run);
  void *small = spool__lua_heap_alloc(h, NULL, 0, 48);
  void *big = spool__lua_heap_alloc(h, NULL, 0, 3000);
  void *kept = spool__lua_heap_alloc(h, NULL, 0, 2000);
  spool__lua_heap_use(h, 0);
  spool__lua_heap_account_close(h, run, heir);
  ASSERT_EQ(5048, (int)spool__lua_heap_used(h, heir));
  spool__lua_heap_alloc(h, big, 3000, 0);
  ASSERT_EQ(2048, (int)spool__lua_heap_used(h, heir));
  size_t engine = spool__lua_heap_used(h, 0);
  /* Recycle every number: the sweep happens on the way. */
  int reused = 0;
  for (int i = 0; i < 70000 && !reused; i++) {
    int id = spool__lua_heap_account_open(h, 0);
    ASSERT(id > 0);
    reused = id == run;
    spool__lua_heap_account_close(h, id, 0);
  }
  ASSERT(reused);
  /* With every block from malloc (SPOOL_LUA_MALLOC, ASan) all are large. */
  size_t small_left = spool__lua_heap_used(h, heir);
  ASSERT(small_left == 48 || small_left == 0);
  ASSERT_EQ(engine + 2048 - small_left, spool__lua_heap_used(h, 0));
  spool__lua_heap_alloc(h, small, 48, 0);
  spool__lua_heap_alloc(h, kept, 2000, 0);
  ASSERT_EQ(0, (int)spool__lua_heap_used(h, heir));
  ASSERT_EQ(engine, spool__lua_heap_used(h, 0));
  spool__lua_heap_account_close(h, heir, 0);
  spool__lua_heap_free(h);
}
