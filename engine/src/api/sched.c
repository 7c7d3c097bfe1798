/*
 * sched.c: tasks as Lua coroutines on the uv loop. A task is created by
 * spool__task_spawn, yields only through spool__task_wait (so every yield
 * has an op that will wake it), and is resumed only from the ready queue,
 * which the check handle drains after each poll. Completions never resume a
 * coroutine directly: they push results and queue the task, so no Lua runs
 * inside a curl or uv callback's stack and runs take turns fairly.
 *
 * This file owns coroutine lifetime: anchoring, resuming, and closing. It
 * knows nothing of agents, HTTP or JSON.
 */
#include <assert.h>
#include <stdlib.h>

#include "base/errors.h"
#include "spool_int.h"

/* Debian 12 ships Lua 5.4.4, which has lua_resetthread but not its
 * successor lua_closethread (5.4.6). */
#if LUA_VERSION_RELEASE_NUM >= 50406
#define close_thread(co, from) lua_closethread(co, from)
#else
#define close_thread(co, from) lua_resetthread(co)
#endif

static spool__task **task_slot(lua_State *co) {
  return (spool__task **)lua_getextraspace(co);
}

spool__task *spool__task_current(lua_State *L) {
  return *task_slot(L);
}

spool__task *spool__task_check(lua_State *L, const char *what) {
  spool__task *t = spool__task_current(L);
  if (t == NULL || t->co != L || !lua_isyieldable(L))
    luaL_error(L,
               "%s must be called from a run (an agent, a handler or a "
               "script), not from a coroutine of your own or at load time",
               what);
  return t;
}

/* The idle handle only keeps the loop from blocking in poll while tasks
 * are ready; the check handle does the work. */
static void on_idle(uv_idle_t *h) {
  (void)h;
}

static void queue(spool__task *t) {
  spool__sched *s = &t->e->sched;
  if (t->queued)
    return;
  t->queued = 1;
  t->next_ready = NULL;
  if (s->ready_tail)
    s->ready_tail->next_ready = t;
  else
    s->ready_head = t;
  s->ready_tail = t;
  if (!uv_is_active((uv_handle_t *)&s->idle))
    uv_idle_start(&s->idle, on_idle);
}

static void unlink_task(spool__task *t) {
  spool__sched *s = &t->e->sched;
  assert(s->ntasks > 0 && !t->queued);
  if (t->prev)
    t->prev->next = t->next;
  else
    s->all = t->next;
  if (t->next)
    t->next->prev = t->prev;
  s->ntasks--;
}

/* Ends a task: calls its done callback, then releases the coroutine. */
static void finish(spool__task *t, int how, int nres) {
  spool_engine *e = t->e;
  unlink_task(t);
  if (t->done)
    t->done(t, how, nres, t->done_ud);
  if (how != SPOOL__TASK_OK) {
    /* Pending to-be-closed variables run: agent code among them runs under
     * the task's limits, spent, so it is stopped at once. */
    spool__limits_expire(t->limits);
    spool__limits_enter(e, t->limits);
    close_thread(t->co, e->L);
  }
  lua_settop(t->co, 0);
  lua_sethook(t->co, NULL, 0, 0);
  *task_slot(t->co) = NULL;
  luaL_unref(e->L, LUA_REGISTRYINDEX, t->co_ref);
  if (e->limits_now == t->limits)
    spool__limits_enter(e, e->main_limits);
  spool__limits_free(e, t->limits);
  free(t);
}

/* A task whose slice ended waits for the loop to poll before it runs
 * again: the idle handle keeps that poll from blocking. */
static void queue_later(spool__task *t) {
  spool__sched *s = &t->e->sched;
  t->queued = 1;
  t->next_ready = NULL;
  if (s->later_tail)
    s->later_tail->next_ready = t;
  else
    s->later_head = t;
  s->later_tail = t;
}

static void resume(spool__task *t) {
  spool_engine *e = t->e;
  spool__sched *s = &e->sched;
  int nres = 0;
  spool__log(e, SPOOL__LOG_DEBUG, "task %llu resume", t->id);
  assert(s->current == NULL && t->pending == NULL); /* never nested */
  s->current = t;
  s->slice_start = uv_hrtime();
  spool__limits_enter(e, t->limits);
  int st = lua_resume(t->co, e->L, t->nargs, &nres);
  s->current = NULL;
  spool__limits_enter(e, e->main_limits);
  t->nargs = 0;
  if (st == LUA_YIELD) {
    if (t->sliced) {
      t->sliced = 0;
      lua_pop(t->co, nres);
      spool__log(e, SPOOL__LOG_DEBUG, "task %llu slice", t->id);
      queue_later(t);
      return;
    }
    if (t->pending != NULL) {
      lua_pop(t->co, nres);
      spool__log(e, SPOOL__LOG_DEBUG, "task %llu yield", t->id);
      return;
    }
    /* A bare coroutine.yield at the top of a run has nothing to wait on;
     * treat it as the error it is rather than parking the task forever. */
    lua_pop(t->co, nres);
    lua_pushliteral(t->co, "coroutine.yield called outside a coroutine "
                           "(a run can only wait through spool functions)");
    st = LUA_ERRRUN;
  }
  if (st == LUA_OK) {
    spool__log(e, SPOOL__LOG_DEBUG, "task %llu end", t->id);
    finish(t, SPOOL__TASK_OK, nres);
    return;
  }
  /* stack of e->L: -> message with traceback, or a non-string error value
   * as it was raised (a script's exit code travels that way) */
  if (lua_type(t->co, -1) == LUA_TSTRING)
    luaL_traceback(e->L, t->co, lua_tostring(t->co, -1), 0);
  else
    lua_xmove(t->co, e->L, 1);
  spool__log(e, SPOOL__LOG_DEBUG, "task %llu error", t->id);
  finish(t, SPOOL__TASK_ERROR, 0);
  lua_pop(e->L, 1);
}

static void drain(spool__sched *s) {
  /* Tasks woken while draining run in this same pass, after the ones
   * already queued, so a burst of completions is handled in one turn. */
  while (s->ready_head) {
    spool__task *t = s->ready_head;
    s->ready_head = t->next_ready;
    if (s->ready_head == NULL)
      s->ready_tail = NULL;
    t->queued = 0;
    resume(t);
  }
  if (s->later_head) {
    s->ready_head = s->later_head;
    s->ready_tail = s->later_tail;
    s->later_head = s->later_tail = NULL;
    return; /* the idle handle stays on: the loop polls, then they run */
  }
  uv_idle_stop(&s->idle);
}

static void on_check(uv_check_t *h) {
  spool_engine *e = h->data;
  int was = e->sched.in_check;
  e->sched.in_check = 1;
  drain(&e->sched);
  if (e->sched.tick_end)
    e->sched.tick_end(e);
  e->sched.in_check = was;
}

int spool__sched_init(spool_engine *e) {
  spool__sched *s = &e->sched;
  int rc = uv_check_init(e->loop, &s->check);
  if (rc == 0)
    rc = uv_idle_init(e->loop, &s->idle);
  if (rc != 0)
    return spool__fail(e, SPOOL_EIO, "uv: %s", uv_strerror(rc));
  s->check.data = e;
  s->idle.data = e;
  uv_check_start(&s->check, on_check);
  /* The check handle alone must not keep a host's loop alive. */
  uv_unref((uv_handle_t *)&s->check);
  s->next_id = 1;
  return 0;
}

spool__task *spool__task_spawn(spool_engine *e, lua_State *L, int nargs,
                               spool__task_done_cb done, void *ud) {
  lua_State *co = lua_newthread(L);
  /* A new thread copies its creator's hook: a task has limits only if it
   * puts them in force itself (sandbox.c). */
  lua_sethook(co, NULL, 0, 0);
  spool__task *t = calloc(1, sizeof *t);
  if (t == NULL) {
    luaL_error(L, "out of memory");
    return NULL;
  }
  /* stack: f, args, co */
  lua_insert(L, -(nargs + 2));
  /* stack: co, f, args */
  lua_xmove(L, co, nargs + 1);
  t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  t->e = e;
  t->co = co;
  t->nargs = nargs;
  t->done = done;
  t->done_ud = ud;
  t->id = e->sched.next_id++;
  *task_slot(co) = t;
  spool__sched *s = &e->sched;
  t->next = s->all;
  if (s->all)
    s->all->prev = t;
  s->all = t;
  s->ntasks++;
  spool__log(e, SPOOL__LOG_DEBUG, "task %llu spawn", t->id);
  queue(t);
  return t;
}

int spool__task_wait(lua_State *L, spool__task *t, spool__op *op) {
  /* Only the running task waits, on one op at a time. */
  assert(t == t->e->sched.current && t->pending == NULL);
  assert(op != NULL && op->cancel != NULL);
  t->pending = op;
  return lua_yield(L, 0);
}

void spool__task_wake(spool__task *t, int nres) {
  assert(!t->queued); /* one wake per wait */
  t->pending = NULL;
  t->nargs = nres;
  queue(t);
}

/* Pushes the name a failure's message begins with (see errors.h). */
static void push_name(lua_State *L, const char *msg) {
  size_t n = spool__error_name_len(msg);
  if (n > 0)
    lua_pushlstring(L, msg, n);
  else
    lua_pushliteral(L, "EINTERNAL"); /* a message without its name: a bug */
}

void spool__task_wake_with(spool__task *t, lua_CFunction push, void *ud) {
  spool_engine *e = t->e;
  lua_State *L = e->L;
  int top = lua_gettop(L);
  spool__limits *was = e->limits_now;
  /* What a run gets back (a response's body) counts for the run. */
  spool__limits_enter(e, t->limits);
  lua_pushcfunction(L, push);
  lua_pushlightuserdata(L, ud);
  int nres, st = spool__pcall(L, 1, LUA_MULTRET);
  int refused = st == LUA_ERRMEM && spool__limits_refused(e, t->limits);
  spool__limits_enter(e, was);
  if (st == LUA_OK) {
    nres = lua_gettop(L) - top;
  } else {
    if (refused) {
      lua_pop(L, 1);
      lua_pushliteral(L, "ELIMIT: what this call returned would take the "
                         "run past its memory budget (limits.memory_mb)");
    }
    /* stack: message -> nil, message, name */
    lua_pushnil(L);
    lua_insert(L, -2);
    push_name(L, lua_tostring(L, -1));
    nres = 3;
  }
  if (!lua_checkstack(t->co, nres)) {
    lua_settop(L, top);
    lua_pushnil(t->co); /* fits: every coroutine keeps a few free slots */
    nres = 1;
  } else {
    lua_xmove(L, t->co, nres);
  }
  spool__task_wake(t, nres);
}

int spool__task_interrupt(spool_engine *e, unsigned long long id,
                          const char *why) {
  spool__task *t = e->sched.all;
  while (t && t->id != id)
    t = t->next;
  if (t == NULL || t->pending == NULL || !t->pending->interruptible ||
      !lua_checkstack(t->co, 3))
    return 0;
  spool__op *op = t->pending;
  t->pending = NULL;
  op->cancel(op);
  /* nil, the message and its name: a failure as bindings return one. */
  lua_pushnil(t->co);
  lua_pushstring(t->co, why);
  push_name(t->co, why);
  spool__task_wake(t, 3);
  return 1;
}

void spool__sched_cancel_all(spool_engine *e) {
  spool__sched *s = &e->sched;
  while (s->all) {
    spool__task *t = s->all;
    if (t->pending) {
      spool__op *op = t->pending;
      t->pending = NULL;
      op->cancel(op);
    }
    if (t->queued) {
      /* Unlink from its queue; queues are short at shutdown. */
      int later = 0;
      for (spool__task *q = s->later_head; q && !later; q = q->next_ready)
        later = q == t;
      spool__task **head = later ? &s->later_head : &s->ready_head;
      spool__task **tail = later ? &s->later_tail : &s->ready_tail;
      spool__task **pp = head;
      while (*pp != t)
        pp = &(*pp)->next_ready;
      *pp = t->next_ready;
      if (*tail == t) {
        *tail = NULL;
        for (spool__task *q = *head; q; q = q->next_ready)
          *tail = q;
      }
      t->queued = 0;
    }
    spool__log(e, SPOOL__LOG_DEBUG, "task %llu cancel", t->id);
    finish(t, SPOOL__TASK_CANCELLED, 0);
  }
}

void spool__sched_close(spool_engine *e, uv_close_cb on_closed) {
  uv_close((uv_handle_t *)&e->sched.check, on_closed);
  uv_close((uv_handle_t *)&e->sched.idle, on_closed);
}
