/*
 * test_sched.c: the scheduler (sched.c) with tasks made of C functions:
 * tasks run in the order they were spawned, never inside the spawn; a
 * task waits on one op and gets what its waker pushes; an interrupt wakes
 * only an interruptible wait, cancelling its op; the tick-end hook runs
 * after each drain; freeing the engine cancels every task, each op once.
 */
#include <lauxlib.h>

#include "spool_int.h"
#include "test.h"

typedef struct probe {
  spool__op op;
  spool__task *waiting; /* the task that waits on op */
  int cancelled;        /* op->cancel calls */
  int order[8], n;      /* the tasks' ids in the order they ran */
  int ended[8];         /* by id: 1 + how it ended */
  lua_Integer got[8];   /* by id: its first result, if an integer */
  char name[8][16];     /* by id: its third result (a failure's name) */
  int ticks;
  struct task_ref {
    struct probe *p;
    int id;
  } refs[8]; /* each task's done-callback data */
} probe;

static void cancel_op(spool__op *op) {
  ((probe *)op)->cancelled++;
}

/* A task: records its id; task 1 then waits on the probe's op. */
static int task_body(lua_State *L) {
  probe *p = lua_touserdata(L, 1);
  int id = (int)luaL_checkinteger(L, 2);
  p->order[p->n++] = id;
  if (id != 1)
    return 0;
  spool__task *t = spool__task_check(L, "a test task");
  p->waiting = t;
  return spool__task_wait(L, t, &p->op);
}

static void on_task_done(spool__task *t, int how, int nres, void *ud) {
  struct task_ref *ref = ud;
  if (how == SPOOL__TASK_OK && nres > 0 && lua_isinteger(t->co, -nres))
    ref->p->got[ref->id] = lua_tointeger(t->co, -nres);
  if (how == SPOOL__TASK_OK && nres == 3 && lua_isstring(t->co, -1))
    snprintf(ref->p->name[ref->id], sizeof ref->p->name[0], "%s",
             lua_tostring(t->co, -1));
  ref->p->ended[ref->id] = 1 + how;
}

static void spawn(spool_engine *e, probe *p, int id) {
  lua_State *L = e->L;
  lua_pushcfunction(L, task_body);
  lua_pushlightuserdata(L, p);
  lua_pushinteger(L, id);
  p->refs[id].p = p;
  p->refs[id].id = id;
  ASSERT(spool__task_spawn(e, L, 2, on_task_done, &p->refs[id]) != NULL);
}

static probe *ticking; /* whose ticks count_tick counts */

static void count_tick(spool_engine *e) {
  (void)e;
  ticking->ticks++;
}

static spool_engine *open_engine(probe *p) {
  spool_engine *e = NULL;
  ASSERT_EQ(spool_engine_new(&e), 0);
  ASSERT_EQ(spool_engine_set(e, "project", SPOOL_SOURCE_DIR), 0);
  ASSERT_EQ(spool_engine_set(e, "store", ":memory:"), 0);
  ASSERT_EQ(spool_engine_open(e), 0);
  p->op.cancel = cancel_op;
  return e;
}

TEST_IMPL(sched_runs_in_order_and_wakes) {
  probe p = {0};
  spool_engine *e = open_engine(&p);
  void (*engine_tick)(spool_engine *) = e->sched.tick_end;
  ticking = &p;
  e->sched.tick_end = count_tick;
  spawn(e, &p, 1);
  spawn(e, &p, 2);
  spawn(e, &p, 3);
  ASSERT_EQ(p.n, 0); /* never inside the spawn */
  ASSERT_EQ(spool_engine_run(e, SPOOL_RUN_NOWAIT), 1);
  ASSERT_EQ(p.n, 3);
  ASSERT_EQ(p.order[0], 1);
  ASSERT_EQ(p.order[1], 2);
  ASSERT_EQ(p.order[2], 3);
  ASSERT(p.ticks >= 1);
  ASSERT_EQ(p.ended[2], 1 + SPOOL__TASK_OK);
  ASSERT_EQ(p.ended[3], 1 + SPOOL__TASK_OK);
  ASSERT_EQ(p.ended[1], 0); /* it waits */
  /* Its waker pushes the results and wakes it; it ends with them. */
  lua_pushinteger(p.waiting->co, 42);
  spool__task_wake(p.waiting, 1);
  ASSERT_EQ(spool_engine_run(e, SPOOL_RUN_NOWAIT), 0);
  ASSERT_EQ(p.ended[1], 1 + SPOOL__TASK_OK);
  ASSERT_EQ(p.got[1], 42);
  ASSERT_EQ(p.cancelled, 0);
  e->sched.tick_end = engine_tick;
  spool_engine_free(e);
}

TEST_IMPL(sched_interrupts_only_interruptible_waits) {
  probe p = {0};
  spool_engine *e = open_engine(&p);
  spawn(e, &p, 1);
  ASSERT_EQ(spool_engine_run(e, SPOOL_RUN_NOWAIT), 1);
  unsigned long long id = p.waiting->id;
  /* A wait whose abandonment would change something elsewhere stays. */
  ASSERT_EQ(spool__task_interrupt(e, id, "stop"), 0);
  ASSERT_EQ(p.cancelled, 0);
  ASSERT_EQ(spool__task_interrupt(e, id + 1000, "stop"), 0); /* no task */
  p.op.interruptible = 1;
  ASSERT_EQ(spool__task_interrupt(e, id, "ECANCELED: stop"), 1);
  ASSERT_EQ(p.cancelled, 1);
  ASSERT_EQ(spool_engine_run(e, SPOOL_RUN_NOWAIT), 0);
  ASSERT_EQ(p.ended[1], 1 + SPOOL__TASK_OK); /* nil, why, its name */
  ASSERT_STR_EQ(p.name[1], "ECANCELED");
  ASSERT_EQ(spool__task_interrupt(e, id, "again"), 0);
  spool_engine_free(e);
}

TEST_IMPL(sched_cancels_every_task_when_freed) {
  probe p = {0};
  spool_engine *e = open_engine(&p);
  spawn(e, &p, 1); /* will wait */
  ASSERT_EQ(spool_engine_run(e, SPOOL_RUN_NOWAIT), 1);
  spawn(e, &p, 2); /* queued, never run */
  spool_engine_free(e);
  ASSERT_EQ(p.cancelled, 1); /* the op, once */
  ASSERT_EQ(p.ended[1], 1 + SPOOL__TASK_CANCELLED);
  ASSERT_EQ(p.ended[2], 1 + SPOOL__TASK_CANCELLED);
  ASSERT_EQ(p.n, 1); /* task 2 never ran */
}
