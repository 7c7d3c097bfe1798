/*
 * sandbox.c: the limits on what agent code may spend — Lua instructions
 * per step and per run, and memory — and the time slices that keep one
 * run's CPU from stalling the others.
 *
 * A set of limits belongs to a task (an agent's run, or an agent being
 * loaded) or, outside any task, to the engine's main context. While it is
 * the one in force, a count hook on its coroutines counts instructions and
 * raises a limit error past a budget, and the Lua heap charges new blocks
 * to its memory account (lua_heap.h), refusing growth past its limit.
 * After raising, the hook lets the code that catches the error run a
 * little further (GRACE instructions) before raising again, so the library
 * can record what failed; agent code cannot catch these errors for good
 * (spool.run.sandbox passes them through its pcall).
 *
 * The hook also ends a run's time slice: agent code that has run for
 * SLICE_NS yields to the loop (Lua 5.4 lets count hooks yield), and the
 * scheduler resumes it after the loop has polled, so other runs and the
 * control API keep going. Only agent code is sliced, never the library's,
 * whose Lua code may count on running without interruption between its
 * own waits.
 *
 *   limits_push{ step_instructions=, run_instructions=, memory=, keep= }
 *                         -> handle | nil, "ELIMIT: ..." (no account left);
 *                            keep: the account leftovers count for after
 *   account_open(bytes)   -> id (0: none left)   an account of its own
 *   account_close(id)     account_used(id) -> bytes
 *   limits_pop(handle)
 *   step_begin([limit])   -> what the step before had used, and its
 *                            limit; a new step starts (with `limit`)
 *   step_restore(used, limit)  continue a step (after a sub-agent's)
 *   step_spent()          -> boolean: did this step pass its budget?
 *   limit_error(e)        -> "ELIMIT: ...", kind | nil   kind: "step",
 *                            "run", "memory" (a memory error is told
 *                            once: this forgets the refusal)
 *   is_limit(e)           -> boolean
 *   is_task(co)           -> boolean: is co a task's own coroutine?
 *   took_slice(co)        -> boolean: did the hook yield co (an agent's
 *                            coroutine) to end a slice?
 *   give_slice()          yields the caller's coroutine for the rest of
 *                            the slice (the run's to the loop)
 *   memory()              -> { used, limit, total, cap }
 *   set_memory_cap(bytes)
 *   system_memory()       -> bytes the process may use (its cgroup's
 *                            limit, else the machine's memory)
 */
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "base/lua_heap.h"
#include "spool_int.h"

/* Instructions between two calls of the hook: rare enough to cost little
 * (a W1 step runs ~100 of them), often enough to slice at ~50 µs. */
#define HOOK_EVERY 1000
#define GRACE (10 * 1000 * 1000LL)
#define SLICE_NS (2 * 1000 * 1000ULL)

struct spool__limits {
  long long step_limit, run_limit; /* instructions; 0: none */
  long long step_used, run_used;
  long long step_until, run_until; /* raise once used passes these */
  int account;                     /* the memory account, 0: the engine's */
  int heir;            /* what the account's blocks count for once it closes */
  lua_State *hooked;   /* the coroutine the hook was set on */
  spool__limits *prev; /* the limits this push replaced */
};

/* Keys of the two error values the hook raises (registry, by address). */
static char STEP_KEY, RUN_KEY;

static spool_engine *engine_of_state(lua_State *L) {
  void *heap;
  lua_getallocf(L, &heap);
  return spool__lua_heap_owner(heap);
}

static spool__limits **slot(spool_engine *e, lua_State *L) {
  spool__task *t = spool__task_current(L);
  return t ? &t->limits : &e->main_limits;
}

/* Is the function running at `ar` an agent's (its file in agents/ or
 * lib/, as the loader names their chunks)? */
static int agent_code(lua_State *L, lua_Debug *ar) {
  if (!lua_getinfo(L, "S", ar))
    return 0;
  return strncmp(ar->source, "@agents/", 8) == 0 ||
         strncmp(ar->source, "@lib/", 5) == 0;
}

static void raise_limit(lua_State *L, const char *key) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, key);
  lua_error(L);
}

/* Past a budget, agent code gets the error at every call of the hook: a
 * handler that catches it (a __close that raises, an error handler) gets
 * no further. The library's own code, which records the failure, gets
 * GRACE instructions before it is stopped too. stack: -> (raises) */
static void over_budget(lua_State *L, int agent, long long used,
                        long long *until, const char *key) {
  if (agent || used > *until) {
    *until = used + GRACE;
    raise_limit(L, key);
  }
}

static void count_hook(lua_State *L, lua_Debug *ar) {
  spool_engine *e = engine_of_state(L);
  spool__limits *l = e->limits_now;
  if (l == NULL)
    return;
  l->step_used += HOOK_EVERY;
  l->run_used += HOOK_EVERY;
  int over_run = l->run_limit && l->run_used > l->run_limit;
  int over_step = l->step_limit && l->step_used > l->step_limit;
  int agent = -1; /* not looked up yet: it costs a lua_getinfo */
  if (over_run || over_step) {
    agent = agent_code(L, ar);
    if (over_run)
      over_budget(L, agent, l->run_used, &l->run_until, &RUN_KEY);
    if (over_step)
      over_budget(L, agent, l->step_used, &l->step_until, &STEP_KEY);
  }
  spool__task *t = e->sched.current;
  if (t == NULL || uv_hrtime() - e->sched.slice_start <= SLICE_NS ||
      !lua_isyieldable(L) || !(agent >= 0 ? agent : agent_code(L, ar)))
    return;
  /* A run's own coroutine yields to the scheduler; a coroutine the agent
   * made yields to its resumer, spool.run.sandbox's, which passes the slice
   * on up (see took_slice). Either way: a hook's yield, which returns,
   * and the VM yields. */
  if (L == t->co)
    t->sliced = 1;
  else
    e->sliced_co = L;
  lua_yield(L, 0);
}

void spool__limits_enter(spool_engine *e, spool__limits *l) {
  e->limits_now = l;
  spool__lua_heap_use(e->heap, l ? l->account : 0);
}

void spool__limits_expire(spool__limits *l) {
  for (; l; l = l->prev) {
    l->step_limit = l->step_used ? l->step_used : 1;
    l->step_until = l->step_limit;
  }
}

int spool__limits_refused(spool_engine *e, spool__limits *l) {
  return l && spool__lua_heap_refused(e->heap, l->account) != 0;
}

void spool__limits_free(spool_engine *e, spool__limits *l) {
  while (l) {
    spool__limits *prev = l->prev;
    spool__lua_heap_account_close(e->heap, l->account, l->heir);
    free(l);
    l = prev;
  }
}

/* ---- bindings ---- */

static spool_engine *engine(lua_State *L) {
  return lua_touserdata(L, lua_upvalueindex(1));
}

static long long opt_count(lua_State *L, int t, const char *name) {
  lua_getfield(L, t, name);
  lua_Number n = luaL_optnumber(L, -1, 0);
  lua_pop(L, 1);
  if (n < 0 || n != n)
    luaL_error(L, "limits.%s must be a positive number", name);
  return n >= 9e18 ? 0 : (long long)n;
}

static int l_limits_push(lua_State *L) {
  spool_engine *e = engine(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  long long step = opt_count(L, 1, "step_instructions");
  long long run = opt_count(L, 1, "run_instructions");
  long long memory = opt_count(L, 1, "memory");
  lua_getfield(L, 1, "keep");
  int heir = (int)luaL_optinteger(L, -1, 0);
  lua_pop(L, 1);
  spool__limits *l = calloc(1, sizeof *l);
  if (l == NULL)
    return luaL_error(L, "out of memory");
  l->step_limit = l->step_until = step;
  l->run_limit = l->run_until = run;
  l->heir = heir;
  l->account = spool__lua_heap_account_open(e->heap, (size_t)memory);
  if (l->account == 0 && memory > 0) {
    /* No account left: the run is refused rather than run unbounded. */
    free(l);
    return spool__push_fail(
        L, "ELIMIT: 65,535 runs already have memory budgets in "
           "this engine; try again when some have ended");
  }
  spool__limits **where = slot(e, L);
  l->prev = *where;
  *where = l;
  l->hooked = L;
  /* No instruction budget, no hook: nothing to count, nothing to slice. */
  if (step || run)
    lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
  spool__limits_enter(e, l);
  lua_pushlightuserdata(L, l);
  return 1;
}

static int l_limits_pop(lua_State *L) {
  spool_engine *e = engine(L);
  luaL_checktype(L, 1, LUA_TLIGHTUSERDATA);
  spool__limits *l = lua_touserdata(L, 1);
  spool__limits **where = slot(e, L);
  if (*where != l)
    return luaL_error(L, "limits_pop: not the limits in force here");
  *where = l->prev;
  if (l->prev == NULL)
    lua_sethook(l->hooked, NULL, 0, 0);
  l->prev = NULL;
  spool__limits_free(e, l);
  spool__limits_enter(e, *where);
  return 0;
}

static int l_step_begin(lua_State *L) {
  spool__limits *l = engine(L)->limits_now;
  if (l == NULL)
    return 0;
  lua_pushinteger(L, l->step_used);
  lua_pushinteger(L, l->step_limit);
  if (!lua_isnoneornil(L, 1)) {
    lua_Number n = luaL_checknumber(L, 1);
    l->step_limit = n > 0 && n < 9e18 ? (long long)n : 0;
  }
  l->step_used = 0;
  l->step_until = l->step_limit;
  return 2;
}

static int l_step_restore(lua_State *L) {
  spool__limits *l = engine(L)->limits_now;
  if (l == NULL || lua_isnoneornil(L, 1))
    return 0;
  l->step_used = luaL_checkinteger(L, 1);
  l->step_limit = luaL_optinteger(L, 2, l->step_limit);
  l->step_until = l->step_limit;
  if (l->step_limit && l->step_used > l->step_limit)
    l->step_until = l->step_used + GRACE;
  return 0;
}

static int l_step_spent(lua_State *L) {
  spool__limits *l = engine(L)->limits_now;
  lua_pushboolean(L, l && l->step_limit && l->step_used > l->step_limit);
  return 1;
}

/* stack: e -> (nothing); the kind of limit error e is, or NULL. */
static const char *limit_kind(lua_State *L, int idx, spool_engine *e,
                              int *account) {
  idx = lua_absindex(L, idx);
  *account = e->limits_now ? e->limits_now->account : 0;
  if (lua_istable(L, idx)) {
    const char *kind = NULL;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &STEP_KEY);
    if (lua_rawequal(L, -1, idx))
      kind = "step";
    lua_pop(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &RUN_KEY);
    if (lua_rawequal(L, -1, idx))
      kind = "run";
    lua_pop(L, 1);
    return kind;
  }
  /* A memory error is the string Lua raises when the heap refused a block;
   * it is a limit's when an account or the cap is why. */
  size_t len;
  const char *s =
      lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &len) : NULL;
  if (s && len == 17 && memcmp(s, "not enough memory", 17) == 0 &&
      spool__lua_heap_refused(e->heap, *account) != 0)
    return "memory";
  return NULL;
}

static int l_is_limit(lua_State *L) {
  int account;
  lua_pushboolean(L, limit_kind(L, 1, engine(L), &account) != NULL);
  return 1;
}

static int l_limit_error(lua_State *L) {
  spool_engine *e = engine(L);
  int account;
  const char *kind = limit_kind(L, 1, e, &account);
  spool__limits *l = e->limits_now;
  if (kind == NULL)
    return 0;
  if (strcmp(kind, "step") == 0) {
    lua_pushfstring(L,
                    "ELIMIT: the step ran past its budget of %I Lua "
                    "instructions (limits.step_instructions)",
                    (lua_Integer)(l ? l->step_limit : 0));
  } else if (strcmp(kind, "run") == 0) {
    lua_pushfstring(L,
                    "ELIMIT: the run ran past its budget of %I Lua "
                    "instructions (limits.run_instructions)",
                    (lua_Integer)(l ? l->run_limit : 0));
  } else if (spool__lua_heap_refused(e->heap, account) < 0) {
    lua_pushfstring(L,
                    "ELIMIT: the engine's memory cap (%I MiB, "
                    "limits.engine_memory_mb) is reached",
                    (lua_Integer)(spool__lua_heap_cap(e->heap) >> 20));
  } else {
    lua_pushfstring(
        L,
        "ELIMIT: the run went over its memory budget of %I "
        "MiB (limits.memory_mb)",
        (lua_Integer)(spool__lua_heap_limit(e->heap, account) >> 20));
  }
  lua_pushstring(L, kind);
  spool__lua_heap_forget_refusal(e->heap, account); /* it is told now */
  return 2;
}

/* Did the hook end a slice by yielding `co`, a coroutine the agent made?
 * (Its resumer then passes the slice on with give_slice.) */
static int l_took_slice(lua_State *L) {
  spool_engine *e = engine(L);
  lua_State *co = lua_tothread(L, 1);
  int took = co != NULL && e->sliced_co == co;
  if (took)
    e->sliced_co = NULL;
  lua_pushboolean(L, took);
  return 1;
}

/* Gives the rest of a slice up: a run's coroutine yields to the scheduler
 * (resumed after the loop has polled), a coroutine the agent made to its
 * resumer; elsewhere (a C function between) it goes on. */
static int l_give_slice(lua_State *L) {
  spool_engine *e = engine(L);
  spool__task *t = e->sched.current;
  if (t == NULL || !lua_isyieldable(L))
    return 0;
  if (L == t->co)
    t->sliced = 1;
  else
    e->sliced_co = L;
  return lua_yield(L, 0);
}

static int l_is_task(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  lua_pushboolean(L, co != NULL && spool__task_current(co) != NULL &&
                         spool__task_current(co)->co == co);
  return 1;
}

static int l_memory(lua_State *L) {
  spool_engine *e = engine(L);
  int account = e->limits_now ? e->limits_now->account : 0;
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, (lua_Integer)spool__lua_heap_used(e->heap, account));
  lua_setfield(L, -2, "used");
  lua_pushinteger(L, (lua_Integer)spool__lua_heap_limit(e->heap, account));
  lua_setfield(L, -2, "limit");
  lua_pushinteger(L, (lua_Integer)spool__lua_heap_total(e->heap));
  lua_setfield(L, -2, "total");
  lua_pushinteger(L, (lua_Integer)spool__lua_heap_cap(e->heap));
  lua_setfield(L, -2, "cap");
  return 1;
}

/* Accounts of their own, apart from a task's: what an agent version keeps
 * between runs (module-level data) counts there, each run's leftovers
 * passed on to it (limits_push's `keep`). */
/* A byte count from Lua: 0 for none (or nonsense), at most SIZE_MAX / 2
 * (a cast of inf or of 2^64 and above would be undefined). */
static size_t opt_bytes(lua_State *L, int i) {
  lua_Number n = luaL_checknumber(L, i);
  return n > 0 ? (n < (lua_Number)(SIZE_MAX / 2) ? (size_t)n : SIZE_MAX / 2)
               : 0;
}

static int l_account_open(lua_State *L) {
  lua_pushinteger(
      L, spool__lua_heap_account_open(engine(L)->heap, opt_bytes(L, 1)));
  return 1;
}

static int l_account_close(lua_State *L) {
  spool__lua_heap_account_close(engine(L)->heap, (int)luaL_checkinteger(L, 1),
                                0);
  return 0;
}

static int l_account_used(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)spool__lua_heap_used(
                         engine(L)->heap, (int)luaL_checkinteger(L, 1)));
  return 1;
}

static int l_set_memory_cap(lua_State *L) {
  luaL_argcheck(L, luaL_checknumber(L, 1) >= 0, 1, "must not be negative");
  spool__lua_heap_set_cap(engine(L)->heap, opt_bytes(L, 1));
  return 0;
}

static int l_system_memory(lua_State *L) {
  uint64_t n = uv_get_constrained_memory();
  uint64_t total = uv_get_total_memory();
  lua_pushnumber(L, (lua_Number)(n > 0 && n < total ? n : total));
  return 1;
}

static int upvalue_text(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  return 1;
}

/* The error value raised for a kind of limit: a table whose text says
 * which (what the budget was is for limit_error, which knows the run). */
static void make_error(lua_State *L, const void *key, const char *text) {
  lua_newtable(L);
  lua_createtable(L, 0, 2);
  lua_pushstring(L, text);
  lua_pushcclosure(L, upvalue_text, 1);
  lua_setfield(L, -2, "__tostring");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

void spool__open_limits(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"limits_push", l_limits_push},
      {"limits_pop", l_limits_pop},
      {"step_begin", l_step_begin},
      {"step_restore", l_step_restore},
      {"step_spent", l_step_spent},
      {"limit_error", l_limit_error},
      {"is_limit", l_is_limit},
      {"is_task", l_is_task},
      {"took_slice", l_took_slice},
      {"give_slice", l_give_slice},
      {"memory", l_memory},
      {"set_memory_cap", l_set_memory_cap},
      {"account_open", l_account_open},
      {"account_close", l_account_close},
      {"account_used", l_account_used},
      {"system_memory", l_system_memory},
      {NULL, NULL},
  };
  make_error(L, &STEP_KEY, "ELIMIT: the step ran past its instruction budget");
  make_error(L, &RUN_KEY, "ELIMIT: the run ran past its instruction budget");
  lua_pushlightuserdata(L, spool__engine_of(L));
  luaL_setfuncs(L, fns, 1);
}
