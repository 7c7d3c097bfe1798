/*
 * store.c: the store thread and the hand-over between it and the loop
 * (see store.h). Back-end neutral: the database work is the back end's.
 *
 * Ownership: an op belongs to the loop thread until spool__store_flush
 * hands it over, to the store thread until it is on the done list, and to
 * the loop thread again in its callback, which frees it.
 *
 * A database in memory never waits on a disk, so it has no thread (as
 * Redis keeps its data on its one thread): flush runs the tick's batch on
 * the loop and its callbacks at once (they only queue tasks). The
 * hand-over to a thread and back cost more than the work: two wake-ups
 * and two context switches per step.
 */
#include "io/store.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct spool__store {
  const spool__store_backend *be;
  void *db;
  char *path;
  uv_thread_t thread;
  uv_mutex_t mu;
  uv_cond_t cv;
  uv_async_t async;
  /* guarded by mu */
  spool__store_op *inbox, *inbox_tail;
  spool__store_op *done, *done_tail;
  int stop;
  long long transactions, appends; /* committed */
  int open_state;                  /* 0 opening, 1 open, -1 failed */
  char open_err[256];
  /* loop thread only */
  spool__store_op *outbox, *outbox_tail;
  int pending;
  int inline_db;        /* in memory: no thread, batches run in flush */
  uv_timer_t heartbeat; /* renews the leases held, while there are any */
  char *owner;
  long long lease_ms;
  int handles; /* uv handles not yet closed: the memory goes with the last */
};

const spool__store_backend *spool__store_backend_for(const char *path) {
  if (strncmp(path, "postgres://", 11) == 0 ||
      strncmp(path, "postgresql://", 13) == 0)
    return &spool__store_postgres;
  return &spool__store_sqlite;
}

void spool__crash_point(const char *name) {
  const char *want = getenv("SPOOL_TEST_CRASH");
  if (want && strcmp(want, name) == 0) {
    fprintf(stderr, "spool: crash point %s: killing the process\n", name);
    raise(SIGKILL);
  }
}

spool__store_op *spool__store_op_new(spool__store_kind kind) {
  spool__store_op *op = calloc(1, sizeof *op);
  if (op)
    op->kind = kind;
  return op;
}

char *spool__store_op_strndup(spool__store_op *op, const char *s, size_t n) {
  if (op->nstrings == op->capstrings) {
    int cap = op->capstrings ? op->capstrings * 2 : 8;
    char **p = realloc(op->strings, sizeof *p * (size_t)cap);
    if (p == NULL)
      return NULL;
    op->strings = p;
    op->capstrings = cap;
  }
  char *copy = malloc(n + 1);
  if (copy == NULL)
    return NULL;
  memcpy(copy, s, n);
  copy[n] = '\0';
  op->strings[op->nstrings++] = copy;
  return copy;
}

const char *spool__store_op_strdup(spool__store_op *op, const char *s) {
  return s ? spool__store_op_strndup(op, s, strlen(s)) : NULL;
}

void spool__store_op_free(spool__store_op *op) {
  if (op == NULL)
    return;
  for (int i = 0; i < op->nstrings; i++)
    free(op->strings[i]);
  free(op->strings);
  free(op->events);
  free(op->writes);
  spool__buf_free(&op->json);
  free(op);
}

static void fail_all(spool__store_op *batch, const char *why) {
  for (spool__store_op *op = batch; op; op = op->next) {
    if (op->result == SPOOL__STORE_OK) {
      op->result = SPOOL__STORE_EIO;
      snprintf(op->errmsg, sizeof op->errmsg, "%s", why);
    }
  }
}

/* Runs one batch in one transaction. */
static void run_batch(spool__store *s, spool__store_op *batch) {
  char err[256];
  int need_maintenance = 0;
  if (s->be->begin(s->db, err, sizeof err) != 0) {
    fail_all(batch, err);
    return;
  }
  for (spool__store_op *op = batch; op; op = op->next) {
    s->be->exec(s->db, op);
    if (op->kind == SPOOL__STORE_PURGE && op->result == SPOOL__STORE_OK)
      need_maintenance = 1;
  }
  spool__crash_point("store_before_commit");
  if (s->be->commit(s->db, err, sizeof err) != 0) {
    s->be->rollback(s->db);
    fail_all(batch, err);
    return;
  }
  long long appends = 0;
  for (spool__store_op *op = batch; op; op = op->next)
    appends += op->kind == SPOOL__STORE_APPEND;
  uv_mutex_lock(&s->mu);
  s->transactions++;
  s->appends += appends;
  uv_mutex_unlock(&s->mu);
  if (need_maintenance && s->be->maintain)
    s->be->maintain(s->db);
}

static void store_main(void *arg) {
  spool__store *s = arg;
  char err[256];
  int rc = s->be->open(&s->db, s->path, err, sizeof err);
  uv_mutex_lock(&s->mu);
  s->open_state = rc == 0 ? 1 : -1;
  if (rc != 0)
    snprintf(s->open_err, sizeof s->open_err, "%s", err);
  uv_cond_broadcast(&s->cv);
  uv_mutex_unlock(&s->mu);
  if (rc != 0)
    return;
  for (;;) {
    uv_mutex_lock(&s->mu);
    while (s->inbox == NULL && !s->stop)
      uv_cond_wait(&s->cv, &s->mu);
    spool__store_op *batch = s->inbox;
    s->inbox = s->inbox_tail = NULL;
    int stop = s->stop;
    uv_mutex_unlock(&s->mu);
    if (batch == NULL && stop)
      break;
    run_batch(s, batch);
    spool__store_op *last = batch;
    while (last->next)
      last = last->next;
    uv_mutex_lock(&s->mu);
    if (s->done_tail)
      s->done_tail->next = batch;
    else
      s->done = batch;
    s->done_tail = last;
    uv_mutex_unlock(&s->mu);
    uv_async_send(&s->async);
  }
  s->be->close(s->db);
}

/* On the loop thread: runs the callbacks of a list of finished ops. */
static void run_callbacks(spool__store *s, spool__store_op *op) {
  while (op) {
    spool__store_op *next = op->next;
    op->next = NULL;
    if (--s->pending == 0)
      uv_unref((uv_handle_t *)&s->async);
    op->done(op, op->ud);
    op = next;
  }
}

static void on_async(uv_async_t *a) {
  spool__store *s = a->data;
  uv_mutex_lock(&s->mu);
  spool__store_op *op = s->done;
  s->done = s->done_tail = NULL;
  uv_mutex_unlock(&s->mu);
  run_callbacks(s, op);
}

int spool__store_open(uv_loop_t *loop, const spool__store_backend *be,
                      const char *path, spool__store **out, char *err,
                      size_t errlen) {
  *out = NULL;
  spool__store *s = calloc(1, sizeof *s);
  if (s == NULL || (s->path = strdup(path)) == NULL) {
    free(s);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  s->be = be;
  uv_mutex_init(&s->mu);
  uv_cond_init(&s->cv);
  if (strcmp(path, ":memory:") == 0) {
    if (be->open(&s->db, path, err, errlen) != 0) {
      uv_mutex_destroy(&s->mu);
      uv_cond_destroy(&s->cv);
      free(s->path);
      free(s);
      return -1;
    }
    s->inline_db = 1;
    s->open_state = 1;
  } else if (uv_thread_create(&s->thread, store_main, s) != 0) {
    snprintf(err, errlen, "cannot start the store thread");
    uv_mutex_destroy(&s->mu);
    uv_cond_destroy(&s->cv);
    free(s->path);
    free(s);
    return -1;
  }
  uv_mutex_lock(&s->mu);
  while (s->open_state == 0)
    uv_cond_wait(&s->cv, &s->mu);
  uv_mutex_unlock(&s->mu);
  if (s->open_state < 0) {
    uv_thread_join(&s->thread);
    snprintf(err, errlen, "%s", s->open_err);
    uv_mutex_destroy(&s->mu);
    uv_cond_destroy(&s->cv);
    free(s->path);
    free(s);
    return -1;
  }
  uv_async_init(loop, &s->async, on_async);
  s->async.data = s;
  /* Only pending ops, not the async itself, should keep a loop alive. */
  uv_unref((uv_handle_t *)&s->async);
  uv_timer_init(loop, &s->heartbeat);
  s->heartbeat.data = s;
  uv_unref((uv_handle_t *)&s->heartbeat);
  s->handles = 2;
  *out = s;
  return 0;
}

void spool__store_submit(spool__store *s, spool__store_op *op,
                         void (*done)(spool__store_op *, void *), void *ud) {
  op->done = done;
  op->ud = ud;
  op->next = NULL;
  if (s->outbox_tail)
    s->outbox_tail->next = op;
  else
    s->outbox = op;
  s->outbox_tail = op;
  if (s->pending++ == 0)
    uv_ref((uv_handle_t *)&s->async);
}

void spool__store_flush(spool__store *s) {
  if (s == NULL || s->outbox == NULL)
    return;
  if (s->inline_db) {
    spool__store_op *batch = s->outbox;
    s->outbox = s->outbox_tail = NULL;
    run_batch(s, batch);
    run_callbacks(s, batch);
    return;
  }
  uv_mutex_lock(&s->mu);
  if (s->inbox_tail)
    s->inbox_tail->next = s->outbox;
  else
    s->inbox = s->outbox;
  s->inbox_tail = s->outbox_tail;
  uv_mutex_unlock(&s->mu);
  /* Signalled after unlocking: a woken store thread would otherwise block
   * at once on the mutex we still hold (a futex call each way, and a
   * context switch on a shared core). It rechecks the inbox, so no wake-up
   * is lost. */
  uv_cond_signal(&s->cv);
  s->outbox = s->outbox_tail = NULL;
}

int spool__store_pending(const spool__store *s) {
  return s ? s->pending : 0;
}

void spool__store_counts(spool__store *s, long long *transactions,
                         long long *appends) {
  *transactions = *appends = 0;
  if (s == NULL)
    return;
  uv_mutex_lock(&s->mu);
  *transactions = s->transactions;
  *appends = s->appends;
  uv_mutex_unlock(&s->mu);
}

static void renewed(spool__store_op *op, void *ud) {
  (void)ud;
  /* A renewal that failed is tried again at the next beat; a lease that
   * lapses meanwhile is fenced (store.h), never shared. */
  spool__store_op_free(op);
}

static void on_heartbeat(uv_timer_t *t) {
  spool__store *s = t->data;
  spool__store_op *op = spool__store_op_new(SPOOL__STORE_RENEW);
  if (op == NULL || spool__store_op_strdup(op, s->owner) == NULL) {
    spool__store_op_free(op);
    return;
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  op->owner = op->strings[0];
  op->lease_ms = s->lease_ms;
  op->now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  spool__store_submit(s, op, renewed, NULL);
  spool__store_flush(s);
}

int spool__store_hold(spool__store *s, const char *owner, long long lease_ms,
                      int leases) {
  if (s->owner == NULL || strcmp(s->owner, owner) != 0) {
    char *copy = strdup(owner);
    if (copy == NULL)
      return -1;
    free(s->owner);
    s->owner = copy;
  }
  s->lease_ms = lease_ms;
  uint64_t every = lease_ms >= 3 ? (uint64_t)lease_ms / 3 : 1;
  if (leases <= 0)
    uv_timer_stop(&s->heartbeat);
  else if (!uv_is_active((uv_handle_t *)&s->heartbeat) ||
           uv_timer_get_repeat(&s->heartbeat) != every)
    uv_timer_start(&s->heartbeat, on_heartbeat, every, every);
  return 0;
}

static void on_closed(uv_handle_t *h) {
  spool__store *s = h->data;
  if (--s->handles > 0)
    return;
  free(s->owner);
  free(s->path);
  free(s);
}

void spool__store_close(spool__store *s) {
  if (s == NULL)
    return;
  spool__store_flush(s);
  if (s->inline_db) {
    s->be->close(s->db);
  } else {
    uv_mutex_lock(&s->mu);
    s->stop = 1;
    uv_cond_signal(&s->cv);
    uv_mutex_unlock(&s->mu);
    uv_thread_join(&s->thread);
    on_async(&s->async); /* what finished after the last wake-up */
  }
  uv_mutex_destroy(&s->mu);
  uv_cond_destroy(&s->cv);
  uv_close((uv_handle_t *)&s->async, on_closed);
  uv_close((uv_handle_t *)&s->heartbeat, on_closed);
}
