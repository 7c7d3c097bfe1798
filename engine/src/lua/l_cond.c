/*
 * l_cond.c: spool.core.signal, a condition variable: how one task waits
 * for another without polling — an event stream waiting for a thread's
 * next event, a request waiting for a run's result.
 *
 *   local s = core.signal()
 *   s:wait(timeout_ms) -> true (notified) | false (timed out)   in a task
 *   s:notify()         wakes every task waiting on s
 *
 * A notify with no task waiting is kept: the next wait returns at once, so
 * a notify that lands between checking and waiting is never lost.
 */
#include <stdlib.h>

#include "spool_int.h"

#define SIGNAL_MT "spool.Signal"

typedef struct waiter waiter;

typedef struct signal_box {
  waiter *head; /* tasks waiting, in the order they began */
  int pending;  /* notified while no one waited */
} signal_box;

struct waiter {
  spool__op op;
  spool__task *t;
  uv_timer_t timer;
  signal_box *sig; /* NULL once unlinked */
  waiter *prev, *next;
};

static void on_timer_closed(uv_handle_t *h) {
  free(h->data);
}

static void unlink_waiter(waiter *w) {
  if (w->sig == NULL)
    return;
  if (w->prev)
    w->prev->next = w->next;
  else
    w->sig->head = w->next;
  if (w->next)
    w->next->prev = w->prev;
  w->sig = NULL;
}

/* Wakes the waiter's task with `notified` and releases the waiter. */
static void finish(waiter *w, int notified) {
  unlink_waiter(w);
  uv_timer_stop(&w->timer);
  lua_pushboolean(w->t->co, notified);
  spool__task_wake(w->t, 1);
  uv_close((uv_handle_t *)&w->timer, on_timer_closed);
}

static void on_timeout(uv_timer_t *timer) {
  finish(timer->data, 0);
}

static void waiter_cancel(spool__op *op) {
  waiter *w = (waiter *)op;
  unlink_waiter(w);
  uv_close((uv_handle_t *)&w->timer, on_timer_closed);
}

static int signal_wait(lua_State *L) {
  signal_box *sig = luaL_checkudata(L, 1, SIGNAL_MT);
  lua_Number ms = luaL_checknumber(L, 2);
  luaL_argcheck(L, ms >= 0, 2, "must not be negative");
  spool__task *t = spool__task_check(L, "signal:wait");
  if (sig->pending) {
    sig->pending = 0;
    lua_pushboolean(L, 1);
    return 1;
  }
  waiter *w = calloc(1, sizeof *w);
  if (w == NULL)
    return luaL_error(L, "out of memory");
  w->op.cancel = waiter_cancel;
  w->op.interruptible = 1;
  w->t = t;
  w->sig = sig;
  /* Append, so tasks are woken in the order they began to wait. */
  waiter **tail = &sig->head;
  while (*tail) {
    w->prev = *tail;
    tail = &(*tail)->next;
  }
  *tail = w;
  uv_timer_init(t->e->loop, &w->timer);
  w->timer.data = w;
  uv_timer_start(&w->timer, on_timeout, (uint64_t)ms, 0);
  return spool__task_wait(L, t, &w->op);
}

static int signal_notify(lua_State *L) {
  signal_box *sig = luaL_checkudata(L, 1, SIGNAL_MT);
  if (sig->head == NULL) {
    sig->pending = 1;
    return 0;
  }
  while (sig->head)
    finish(sig->head, 1);
  return 0;
}

/* A waiting task keeps its signal alive (it is on the task's stack); by
 * the time one is collected, shutdown has cancelled every waiter. */
static int signal_gc(lua_State *L) {
  signal_box *sig = luaL_checkudata(L, 1, SIGNAL_MT);
  while (sig->head)
    unlink_waiter(sig->head);
  return 0;
}

static int l_core_signal(lua_State *L) {
  signal_box *sig = lua_newuserdatauv(L, sizeof *sig, 0);
  sig->head = NULL;
  sig->pending = 0;
  luaL_setmetatable(L, SIGNAL_MT);
  return 1;
}

void spool__open_cond(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"wait", signal_wait},
      {"notify", signal_notify},
      {NULL, NULL},
  };
  spool__class(L, SIGNAL_MT, methods, signal_gc, NULL);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_core_signal);
  lua_setfield(L, -2, "signal");
}
