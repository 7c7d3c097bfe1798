/*
 * store_ops.c: the store's ops (store.h), written once against a SQL
 * driver (store_sql.h) and run on the store thread inside the batch's
 * transaction. Each append runs in a savepoint of its own, so one run's
 * conflict never rolls back another's.
 *
 * Fencing: an append names the owner and epoch of its run's claim on the
 * thread; any later claim bumped the epoch, so a run that lost its lease
 * (paused, partitioned, slow) stores nothing. Stored JSON is checked when
 * read, so a corrupt row is an error that names it, never a wrong answer.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/json.h"
#include "io/store_sql.h"

typedef struct sqlx {
  const spool__sql_driver *d;
  void *db;
} sqlx;

#define NPARAMS(...)                                                           \
  ((int)(sizeof((spool__sql_param[]){__VA_ARGS__}) / sizeof(spool__sql_param)))
/* Runs statement `id` with the parameters given. */
#define Q(x, id, ...)                                                          \
  (x)->d->run((x)->db, (id), (spool__sql_param[]){__VA_ARGS__},                \
              NPARAMS(__VA_ARGS__))
#define Q0(x, id) (x)->d->run((x)->db, (id), NULL, 0)

static void set_error(spool__store_op *op, spool__store_status st,
                      const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(spool__store_op *op, spool__store_status st,
                      const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  op->result = st;
  vsnprintf(op->errmsg, sizeof op->errmsg, fmt, ap);
  va_end(ap);
}

static void db_error(sqlx *x, spool__store_op *op, const char *what) {
  char why[200];
  x->d->error(x->db, why, sizeof why);
  set_error(op, SPOOL__STORE_EIO, "%s: %s", what, why);
}

static const char *text(sqlx *x, int col) {
  size_t n;
  return x->d->text(x->db, col, &n);
}

static int add_text(sqlx *x, spool__buf *b, int col) {
  size_t n;
  const char *t = x->d->text(x->db, col, &n);
  if (t == NULL)
    return spool__buf_adds(b, "null");
  return spool__json_write_string(b, t, n) == 0 ? 0 : -1;
}

static int add_int(sqlx *x, spool__buf *b, int col) {
  if (x->d->null(x->db, col))
    return spool__buf_adds(b, "null");
  return spool__json_write_integer(b, x->d->integer(x->db, col));
}

/* A thread row (id, agent, parent, status, created_at, updated_at,
 * last_seq, deadline) as a JSON object. */
static int add_thread(sqlx *x, spool__buf *b) {
  static const char *const names[] = {"id",     "agent",      "parent",
                                      "status", "created_at", "updated_at",
                                      "events", "deadline"};
  int rc = spool__buf_addc(b, '{');
  for (int i = 0; i < 8 && rc == 0; i++) {
    rc = spool__buf_printf(b, "%s\"%s\":", i ? "," : "", names[i]);
    if (rc == 0)
      rc = i < 4 ? add_text(x, b, i) : add_int(x, b, i);
  }
  return rc == 0 ? spool__buf_addc(b, '}') : -1;
}

/* Appends stored JSON after checking it is JSON; 1 (and why) if not. */
static int add_json(sqlx *x, spool__buf *b, int col, spool__buf *sc, char *why,
                    size_t whylen) {
  size_t n;
  const char *t = x->d->text(x->db, col, &n);
  spool__json_error e;
  if (t == NULL || spool__json_check(t, n, sc, &e) != 0) {
    if (t == NULL)
      snprintf(why, whylen, "no data");
    else
      spool__json_error_format(&e, why, whylen);
    return 1;
  }
  return spool__buf_add(b, t, n);
}

/* Runs `stmt` on op's thread: 0 with its row current, or -1 with op's
 * error set (an unknown thread, or the database's failure). */
static int thread_row(sqlx *x, spool__store_op *op, int stmt) {
  int rc = Q(x, stmt, SQL_TEXT(op->thread_id));
  if (rc == SQL_ROW)
    return 0;
  if (rc == SQL_DONE)
    set_error(op, SPOOL__STORE_ENOTFOUND, "unknown thread '%s'", op->thread_id);
  else
    db_error(x, op, "cannot read the thread");
  return -1;
}

/* ---- one step of one thread ---- */

/* Fencing, first: only the holder of the thread's latest claim appends. A
 * run whose lease lapsed and was claimed again, by anyone, is stopped
 * here, before anything it did is stored. 0, or -1 with op's error. */
static int check_lease(sqlx *x, spool__store_op *op) {
  int rc = Q(x, SQL_LEASE_CHECK, SQL_TEXT(op->thread_id));
  if (rc == SQL_DONE) {
    set_error(op, SPOOL__STORE_ECONFLICT,
              "thread %s: an append without a lease (claim it first)",
              op->thread_id);
    return -1;
  }
  if (rc != SQL_ROW) {
    db_error(x, op, "cannot read the lease");
    return -1;
  }
  const char *holder = text(x, 0);
  long long epoch = x->d->integer(x->db, 2);
  if (op->owner == NULL || epoch != op->epoch ||
      strcmp(holder ? holder : "", op->owner) != 0) {
    set_error(op, SPOOL__STORE_ECONFLICT,
              "thread %s: this run lost its lease (claim %lld; the thread "
              "is at claim %lld, held by %s)",
              op->thread_id, op->epoch, epoch,
              holder && *holder ? holder : "nobody");
    return -1;
  }
  return 0;
}

/* The status a step leaves its thread in. */
static const char *status_of(const spool__store_op *op) {
  return op->status ? op->status : "running";
}

/* The thread's number (which events are keyed by), made if the step is
 * its first, after checking the events it already has; -1 on error.
 * *same: do the status and deadline stored now stay as they are? */
static long long thread_number(sqlx *x, spool__store_op *op, int *same) {
  const char *status = status_of(op);
  long long deadline = op->deadline > 0 ? op->deadline : 0;
  if (op->expected_seq == 0) {
    *same = strcmp(status, "running") == 0 && deadline == 0;
    int rc = Q(x, SQL_THREAD_INSERT, SQL_TEXT(op->thread_id),
               SQL_TEXT(op->agent), SQL_TEXT(op->parent), SQL_INT(op->now));
    if (rc == SQL_CONFLICT) {
      set_error(op, SPOOL__STORE_ECONFLICT, "thread %s already exists",
                op->thread_id);
      return -1;
    }
    if (rc != SQL_ROW) {
      db_error(x, op, "cannot create the thread");
      return -1;
    }
    return x->d->integer(x->db, 0);
  }
  if (thread_row(x, op, SQL_THREAD_SEQ) != 0)
    return -1;
  long long have = x->d->integer(x->db, 0);
  if (have != op->expected_seq) {
    set_error(op, SPOOL__STORE_ECONFLICT,
              "thread %s has %lld events, not the %lld this run expected "
              "(another process appended to it)",
              op->thread_id, have, op->expected_seq);
    return -1;
  }
  const char *was = text(x, 2);
  *same = was && strcmp(was, status) == 0 &&
          (x->d->null(x->db, 3) ? 0 : x->d->integer(x->db, 3)) == deadline;
  return x->d->integer(x->db, 1);
}

static int store_events(sqlx *x, spool__store_op *op) {
  int same;
  long long n = thread_number(x, op, &same);
  if (n < 0)
    return -1;
  for (int i = 0; i < op->nevents; i++) {
    spool__store_event *ev = &op->events[i];
    if (Q(x, SQL_EVENT_INSERT, SQL_INT(n), SQL_INT(ev->seq), SQL_INT(ev->step),
          SQL_TEXT(ev->type), SQL_INT(ev->at), SQL_TEXT(ev->v),
          SQL_TEXT(ev->data)) != SQL_DONE) {
      db_error(x, op, "cannot store an event");
      return -1;
    }
  }
  long long last_seq = op->expected_seq + op->nevents;
  int rc = same ? Q(x, SQL_THREAD_ADVANCE, SQL_INT(n), SQL_INT(last_seq),
                    SQL_INT(op->now))
                : Q(x, SQL_THREAD_UPDATE, SQL_INT(n), SQL_INT(last_seq),
                    SQL_TEXT(status_of(op)),
                    op->deadline > 0 ? SQL_INT(op->deadline) : SQL_NULL,
                    SQL_INT(op->now));
  if (rc < 0) {
    db_error(x, op, "cannot update the thread");
    return -1;
  }
  return 0;
}

/* The step's state writes, each checked against its version; answers the
 * versions written as a JSON array. */
static int store_writes(sqlx *x, spool__store_op *op) {
  spool__buf_adds(&op->json, "[");
  for (int i = 0; i < op->nwrites; i++) {
    spool__store_write *w = &op->writes[i];
    if (w->if_version >= 0) {
      int rc = Q(x, SQL_STATE_VERSION, SQL_TEXT(w->ns), SQL_TEXT(w->key),
                 SQL_INT(op->now));
      if (rc == SQL_FAILED) {
        db_error(x, op, "cannot read state");
        return -1;
      }
      long long have = rc == SQL_ROW ? x->d->integer(x->db, 0) : 0;
      if (have != w->if_version) {
        set_error(op, SPOOL__STORE_ECONFLICT,
                  "state %s/%s is at version %lld, not %lld", w->ns, w->key,
                  have, w->if_version);
        return -1;
      }
    }
    long long version = 0;
    if (w->value == NULL) {
      if (Q(x, SQL_STATE_DELETE, SQL_TEXT(w->ns), SQL_TEXT(w->key)) !=
          SQL_DONE) {
        db_error(x, op, "cannot delete state");
        return -1;
      }
    } else {
      if (Q(x, SQL_STATE_UPSERT, SQL_TEXT(w->ns), SQL_TEXT(w->key),
            SQL_TEXT(w->value), SQL_INT(op->now),
            w->expires_at > 0 ? SQL_INT(w->expires_at) : SQL_NULL) != SQL_ROW) {
        db_error(x, op, "cannot write state");
        return -1;
      }
      version = x->d->integer(x->db, 0);
    }
    spool__buf_printf(&op->json, "%s%lld", i ? "," : "", version);
  }
  spool__buf_adds(&op->json, "]");
  return 0;
}

/* A new thread's lease, taken with its first step: 0 with op->epoch the
 * claim's, or -1 with op's error. */
static int take_lease(sqlx *x, spool__store_op *op) {
  int rc = Q(x, SQL_LEASE_TAKE, SQL_TEXT(op->thread_id), SQL_TEXT(op->owner),
             SQL_INT(op->now + op->lease_ms), SQL_INT(op->now), SQL_INT(0),
             SQL_INT(0));
  if (rc == SQL_ROW) {
    op->epoch = x->d->integer(x->db, 0);
    return 0;
  }
  if (rc == SQL_DONE)
    set_error(op, SPOOL__STORE_ECONFLICT,
              "thread %s is being run by another process", op->thread_id);
  else
    db_error(x, op, "cannot take the lease");
  return -1;
}

/* The lease given back with the step after which the run stops: whoever
 * reads the step may claim the thread at once. */
static int give_lease(sqlx *x, spool__store_op *op) {
  if (Q(x, SQL_LEASE_RELEASE, SQL_TEXT(op->thread_id), SQL_TEXT(op->owner),
        SQL_INT(op->epoch), SQL_INT(0)) == SQL_DONE)
    return 0;
  db_error(x, op, "cannot release the lease");
  return -1;
}

static void op_append(sqlx *x, spool__store_op *op) {
  if (Q0(x, SQL_SAVEPOINT) != SQL_DONE) {
    db_error(x, op, "cannot start the step");
    return;
  }
  int ok = op->thread_id == NULL ||
           ((!op->claim || take_lease(x, op) == 0) && check_lease(x, op) == 0 &&
            store_events(x, op) == 0);
  if (ok && store_writes(x, op) == 0 &&
      (op->thread_id == NULL || !op->release || give_lease(x, op) == 0)) {
    Q0(x, SQL_RELEASE);
    return;
  }
  Q0(x, SQL_ROLLBACK_TO);
  Q0(x, SQL_RELEASE);
  spool__buf_clear(&op->json);
}

/* ---- reads ---- */

static void op_load(sqlx *x, spool__store_op *op) {
  if (thread_row(x, op, SQL_THREAD_GET) != 0)
    return;
  long long last_seq = x->d->integer(x->db, 6);
  spool__buf *b = &op->json;
  spool__buf scratch = {0};
  spool__buf_adds(b, "{\"thread\":");
  add_thread(x, b);
  spool__buf_adds(b, ",\"events\":[");
  long long expect = 1;
  int rc;
  for (rc = Q(x, SQL_EVENTS_GET, SQL_TEXT(op->thread_id), SQL_INT(last_seq));
       rc == SQL_ROW; rc = x->d->next(x->db)) {
    long long seq = x->d->integer(x->db, 0);
    char why[128];
    if (seq != expect) {
      set_error(op, SPOOL__STORE_ECORRUPT,
                "thread %s: event %lld is missing from the store",
                op->thread_id, expect);
      goto done;
    }
    spool__buf_printf(b, "%s{\"seq\":%lld,\"step\":%lld,\"type\":",
                      seq > 1 ? "," : "", seq, x->d->integer(x->db, 1));
    add_text(x, b, 2);
    spool__buf_adds(b, ",\"at\":");
    add_int(x, b, 3);
    spool__buf_adds(b, ",\"v\":");
    add_text(x, b, 4);
    spool__buf_adds(b, ",\"data\":");
    if (add_json(x, b, 5, &scratch, why, sizeof why) != 0) {
      set_error(op, SPOOL__STORE_ECORRUPT,
                "thread %s, event %lld: the stored data is not JSON (%s)",
                op->thread_id, seq, why);
      goto done;
    }
    spool__buf_addc(b, '}');
    expect++;
  }
  if (rc != SQL_DONE) {
    db_error(x, op, "cannot read the events");
    goto done;
  }
  if (expect - 1 != last_seq) {
    set_error(op, SPOOL__STORE_ECORRUPT,
              "thread %s: the store lists %lld events but holds %lld",
              op->thread_id, last_seq, expect - 1);
    goto done;
  }
  spool__buf_adds(b, "]}");
done:
  spool__buf_free(&scratch);
  if (op->result != SPOOL__STORE_OK)
    spool__buf_clear(b);
}

/* A thread's row alone: what a follower polls to learn whether it has
 * new events, for the price of one row. */
static void op_head(sqlx *x, spool__store_op *op) {
  int rc = Q(x, SQL_THREAD_GET, SQL_TEXT(op->thread_id));
  if (rc == SQL_ROW)
    add_thread(x, &op->json);
  else if (rc == SQL_DONE)
    set_error(op, SPOOL__STORE_ENOTFOUND, "unknown thread '%s'", op->thread_id);
  else
    db_error(x, op, "cannot read the thread");
}

/* The thread rows of the statement just run, as an array. */
static void rows_of_threads(sqlx *x, spool__store_op *op, int rc) {
  spool__buf_addc(&op->json, '[');
  for (int n = 0; rc == SQL_ROW; rc = x->d->next(x->db)) {
    if (n++)
      spool__buf_addc(&op->json, ',');
    add_thread(x, &op->json);
  }
  if (rc != SQL_DONE) {
    db_error(x, op, "cannot list threads");
    spool__buf_clear(&op->json);
    return;
  }
  spool__buf_addc(&op->json, ']');
}

static void op_list(sqlx *x, spool__store_op *op) {
  rows_of_threads(x, op,
                  Q(x, SQL_LIST, SQL_TEXT(op->filter_status),
                    SQL_TEXT(op->filter_agent), SQL_INT(op->before),
                    SQL_INT(op->limit > 0 ? op->limit : 100),
                    SQL_TEXT(op->key ? op->key : "")));
}

/* {"running": n, ...}: the threads of each status (of one agent, if
 * given), read through the (status, created_at) index. */
static void op_counts(sqlx *x, spool__store_op *op) {
  int rc = Q(x, SQL_COUNTS, SQL_TEXT(op->filter_agent));
  spool__buf_addc(&op->json, '{');
  for (int n = 0; rc == SQL_ROW; rc = x->d->next(x->db)) {
    if (n++)
      spool__buf_addc(&op->json, ',');
    add_text(x, &op->json, 0);
    spool__buf_addc(&op->json, ':');
    add_int(x, &op->json, 1);
  }
  if (rc != SQL_DONE) {
    db_error(x, op, "cannot count threads");
    spool__buf_clear(&op->json);
    return;
  }
  spool__buf_addc(&op->json, '}');
}

static void op_children(sqlx *x, spool__store_op *op) {
  rows_of_threads(x, op, Q(x, SQL_CHILDREN, SQL_TEXT(op->thread_id)));
}

static void op_state_get(sqlx *x, spool__store_op *op) {
  int rc = Q(x, SQL_STATE_GET, SQL_TEXT(op->ns), SQL_TEXT(op->key),
             SQL_INT(op->now));
  if (rc == SQL_DONE) {
    spool__buf_adds(&op->json, "null");
    return;
  }
  if (rc != SQL_ROW) {
    db_error(x, op, "cannot read state");
    return;
  }
  char why[128];
  spool__buf scratch = {0};
  spool__buf_adds(&op->json, "{\"value\":");
  if (add_json(x, &op->json, 0, &scratch, why, sizeof why) != 0) {
    set_error(op, SPOOL__STORE_ECORRUPT,
              "state %s/%s: the stored value is not JSON (%s)", op->ns, op->key,
              why);
    spool__buf_clear(&op->json);
  } else {
    spool__buf_printf(&op->json, ",\"version\":%lld,\"updated_at\":%lld}",
                      x->d->integer(x->db, 1), x->d->integer(x->db, 2));
  }
  spool__buf_free(&scratch);
}

static void op_state_list(sqlx *x, spool__store_op *op) {
  spool__buf scratch = {0};
  int rc = Q(x, SQL_STATE_LIST, SQL_TEXT(op->ns), SQL_INT(op->now),
             SQL_TEXT(op->key ? op->key : ""),
             SQL_INT(op->limit > 0 ? op->limit : 1000));
  spool__buf_addc(&op->json, '[');
  for (int n = 0; rc == SQL_ROW; rc = x->d->next(x->db)) {
    char why[128];
    spool__buf_adds(&op->json, n++ ? ",{\"key\":" : "{\"key\":");
    add_text(x, &op->json, 0);
    spool__buf_adds(&op->json, ",\"value\":");
    if (add_json(x, &op->json, 1, &scratch, why, sizeof why) != 0) {
      set_error(op, SPOOL__STORE_ECORRUPT,
                "state %s/%s: the stored value is not JSON (%s)", op->ns,
                text(x, 0), why);
      break;
    }
    spool__buf_printf(&op->json, ",\"version\":%lld,\"updated_at\":%lld}",
                      x->d->integer(x->db, 2), x->d->integer(x->db, 3));
  }
  spool__buf_free(&scratch);
  if (op->result == SPOOL__STORE_OK && rc != SQL_DONE)
    db_error(x, op, "cannot list state");
  if (op->result != SPOOL__STORE_OK)
    spool__buf_clear(&op->json);
  else
    spool__buf_addc(&op->json, ']');
}

/* ---- leases ---- */

/* Takes the lease: a new epoch, which fences off every earlier claim. A
 * lease some other owner holds and has not let lapse is refused unless it
 * is forced (its holder is known dead) at the epoch the caller saw: of
 * several takers of one dead holder's lease, one wins. One statement, so
 * two processes claiming at once cannot both win. Answers {"epoch":N}, or
 * {"held_by":OWNER,"epoch":N,"ms_left":MS} when refused. */
static void op_claim(sqlx *x, spool__store_op *op) {
  int rc = Q(x, SQL_LEASE_TAKE, SQL_TEXT(op->thread_id), SQL_TEXT(op->owner),
             SQL_INT(op->now + op->lease_ms), SQL_INT(op->now),
             SQL_INT(op->force ? 1 : 0), SQL_INT(op->epoch));
  if (rc == SQL_ROW) {
    spool__buf_printf(&op->json, "{\"epoch\":%lld}", x->d->integer(x->db, 0));
    return;
  }
  if (rc == SQL_DONE)
    rc = Q(x, SQL_LEASE_GET, SQL_TEXT(op->thread_id));
  if (rc != SQL_ROW) {
    db_error(x, op, "cannot take the lease");
    return;
  }
  const char *holder = text(x, 0);
  spool__buf_adds(&op->json, "{\"held_by\":");
  spool__json_write_string(&op->json, holder ? holder : "",
                           holder ? strlen(holder) : 0);
  spool__buf_printf(&op->json, ",\"epoch\":%lld,\"ms_left\":%lld}",
                    x->d->integer(x->db, 2), x->d->integer(x->db, 1) - op->now);
}

/* Gives back one lease (the claim at op->epoch only; others may take it
 * from op->deadline on, 0: at once), or with no thread all the owner's (a
 * shutdown). */
static void op_release(sqlx *x, spool__store_op *op) {
  int rc = op->thread_id ? Q(x, SQL_LEASE_RELEASE, SQL_TEXT(op->thread_id),
                             SQL_TEXT(op->owner), SQL_INT(op->epoch),
                             SQL_INT(op->deadline))
                         : Q(x, SQL_LEASE_RELEASE_ALL, SQL_TEXT(op->owner));
  if (rc != SQL_DONE)
    db_error(x, op, "cannot release the lease");
}

/* The heartbeat of a process that runs threads: one statement extends all
 * its leases, however many. */
static void op_renew(sqlx *x, spool__store_op *op) {
  if (Q(x, SQL_LEASE_RENEW, SQL_TEXT(op->owner),
        SQL_INT(op->now + op->lease_ms)) != SQL_DONE)
    db_error(x, op, "cannot renew the leases");
  else
    spool__buf_printf(&op->json, "%lld", x->d->changes(x->db));
}

/* Claims up to `limit` top-level threads left running whose lease lapsed,
 * in one statement. Answers [{"id":ID,"epoch":N}...]. */
static void op_ready(sqlx *x, spool__store_op *op) {
  int rc = Q(x, SQL_READY, SQL_INT(op->now), SQL_TEXT(op->owner),
             SQL_INT(op->now + op->lease_ms),
             SQL_INT(op->limit > 0 ? op->limit : 100));
  spool__buf_addc(&op->json, '[');
  for (int n = 0; rc == SQL_ROW; rc = x->d->next(x->db)) {
    spool__buf_adds(&op->json, n++ ? ",{\"id\":" : "{\"id\":");
    add_text(x, &op->json, 0);
    spool__buf_printf(&op->json, ",\"epoch\":%lld}", x->d->integer(x->db, 1));
  }
  if (rc != SQL_DONE) {
    db_error(x, op, "cannot take over the lapsed leases");
    spool__buf_clear(&op->json);
    return;
  }
  spool__buf_addc(&op->json, ']');
}

/* Threads ready to be taken over and not yet claimed: a worker's
 * /metrics reports the queue it and its peers have not drained. */
static void op_backlog(sqlx *x, spool__store_op *op) {
  if (Q(x, SQL_BACKLOG, SQL_INT(op->now)) != SQL_ROW)
    db_error(x, op, "cannot count the threads to take over");
  else
    spool__buf_printf(&op->json, "%lld", x->d->integer(x->db, 0));
}

/* Tells the workers listening that thread `thread_id` changed (a cancel
 * asked of the one that runs it). */
static void op_notify(sqlx *x, spool__store_op *op) {
  if (Q(x, SQL_NOTIFY, SQL_TEXT(op->thread_id)) < 0)
    db_error(x, op, "cannot notify the other workers");
}

/* ---- housekeeping ---- */

static void op_delete(sqlx *x, spool__store_op *op) {
  if (thread_row(x, op, SQL_THREAD_SEQ) != 0)
    return;
  static const int order[] = {SQL_DELETE_EVENTS, SQL_DELETE_LEASES,
                              SQL_DELETE_THREADS};
  for (int i = 0; i < 3; i++) {
    if (Q(x, order[i], SQL_TEXT(op->thread_id)) != SQL_DONE) {
      db_error(x, op, "cannot delete the thread");
      return;
    }
  }
}

static void op_due(sqlx *x, spool__store_op *op) {
  int rc = Q(x, SQL_DUE, SQL_INT(op->now));
  spool__buf_addc(&op->json, '[');
  for (int n = 0; rc == SQL_ROW; rc = x->d->next(x->db)) {
    if (n++)
      spool__buf_addc(&op->json, ',');
    add_text(x, &op->json, 0);
  }
  spool__buf_addc(&op->json, ']');
  if (rc != SQL_DONE)
    db_error(x, op, "cannot list due threads");
}

/* Agent versions younger than this are never purged (see the back ends'
 * SQL_VERSION_PUT: engines re-put the versions they use hourly). */
#define VERSION_GRACE_MS (24LL * 3600 * 1000)

static void op_purge(sqlx *x, spool__store_op *op) {
  long long versions_before = op->finished_before;
  if (versions_before > op->now - VERSION_GRACE_MS)
    versions_before = op->now - VERSION_GRACE_MS;
  const struct {
    int id;
    long long cutoff;
  } order[] = {{SQL_PURGE_STATE, op->now},
               {SQL_PURGE_EVENTS, op->finished_before},
               {SQL_PURGE_THREADS, op->finished_before},
               {SQL_PURGE_VERSIONS, versions_before},
               /* The leases of threads purged now or deleted before (a
                * released lease keeps its row, for its epoch, as long as
                * its thread). */
               {SQL_PURGE_LEASES, op->now}};
  long long counts[5] = {0};
  for (int i = 0; i < 5; i++) {
    if (Q(x, order[i].id, SQL_INT(order[i].cutoff)) != SQL_DONE) {
      db_error(x, op, "cannot purge");
      return;
    }
    counts[i] = x->d->changes(x->db);
  }
  spool__buf_printf(&op->json,
                    "{\"state\":%lld,\"events\":%lld,"
                    "\"threads\":%lld,\"versions\":%lld}",
                    counts[0], counts[1], counts[2], counts[3]);
}

static void op_version_put(sqlx *x, spool__store_op *op) {
  if (Q(x, SQL_VERSION_PUT, SQL_TEXT(op->key), SQL_TEXT(op->agent),
        SQL_TEXT(op->value), SQL_INT(op->now)) != SQL_DONE)
    db_error(x, op, "cannot store the agent version");
}

static void op_version_get(sqlx *x, spool__store_op *op) {
  int rc = Q(x, SQL_VERSION_GET, SQL_TEXT(op->key));
  if (rc == SQL_DONE) {
    set_error(op, SPOOL__STORE_ENOTFOUND, "no stored agent version '%s'",
              op->key);
    return;
  }
  if (rc != SQL_ROW) {
    db_error(x, op, "cannot read the agent version");
    return;
  }
  spool__buf scratch = {0};
  char why[128];
  if (add_json(x, &op->json, 0, &scratch, why, sizeof why) != 0) {
    set_error(op, SPOOL__STORE_ECORRUPT,
              "agent version %s: the stored sources are not JSON (%s)", op->key,
              why);
    spool__buf_clear(&op->json);
  }
  spool__buf_free(&scratch);
}

/* ---- migration ---- */

/* The tables a migration copies, with their columns' kinds: i integer,
 * t text, j JSON text (checked, so a corrupt row stops the copy and is
 * named). Leases are not copied: the source's workers are stopped, and a
 * thread left running is continued by the target's, as any other. */
static const struct table {
  const char *name;
  int dump, load;
  const char *kinds;
} tables[] = {
    {"threads", SQL_DUMP_THREADS, SQL_LOAD_THREAD, "ittttiiii"},
    {"events", SQL_DUMP_EVENTS, SQL_LOAD_EVENT, "iiititj"},
    {"state", SQL_DUMP_STATE, SQL_LOAD_STATE, "ttjiii"},
    {"versions", SQL_DUMP_VERSIONS, SQL_LOAD_VERSION, "ttji"},
};

/* Copies the current row of src's statement into x's table t. */
static int copy_row(sqlx *src, sqlx *x, const struct table *t,
                    spool__store_op *op, spool__buf *scratch) {
  spool__sql_param p[12];
  int n = (int)strlen(t->kinds);
  for (int c = 0; c < n; c++) {
    size_t len;
    const char *v = src->d->text(src->db, c, &len);
    spool__json_error e;
    if (v == NULL)
      p[c] = SQL_NULL;
    else if (t->kinds[c] == 'i')
      p[c] = SQL_INT(src->d->integer(src->db, c));
    else if (t->kinds[c] == 'j' && spool__json_check(v, len, scratch, &e)) {
      char why[128];
      spool__json_error_format(&e, why, sizeof why);
      set_error(op, SPOOL__STORE_ECORRUPT,
                "%s row %s (column %d) is not JSON: %s; nothing was copied",
                t->name, text(src, 0) ? text(src, 0) : "?", c + 1, why);
      return -1;
    } else
      p[c] = SQL_TEXT(v);
  }
  if (x->d->run(x->db, t->load, p, n) != SQL_DONE) {
    db_error(x, op, "cannot copy a row");
    return -1;
  }
  return 0;
}

/* Copies the store at op->value into this one, in this transaction: all
 * of it, or (on any error) nothing. The target must be empty. Answers
 * {"threads":N,"events":N,"state":N,"versions":N}. */
static void op_migrate(sqlx *x, spool__store_op *op) {
  if (Q0(x, SQL_ROWS) != SQL_ROW) {
    db_error(x, op, "cannot read the target");
    return;
  }
  long long rows = x->d->integer(x->db, 0);
  if (rows > 0) {
    set_error(op, SPOOL__STORE_ECONFLICT,
              "the target store is not empty (%lld threads, state documents "
              "and agent versions): migrate into an empty one",
              rows);
    return;
  }
  const spool__store_backend *be = spool__store_backend_for(op->value);
  void *db = NULL;
  char err[256];
  if (be->open(&db, op->value, err, sizeof err) != 0) {
    set_error(op, SPOOL__STORE_EIO, "cannot open the source: %s", err);
    return;
  }
  /* The batch commits whatever else it holds: a failed copy must leave
   * nothing behind. */
  if (Q0(x, SQL_SAVEPOINT) != SQL_DONE) {
    db_error(x, op, "cannot start the copy");
    be->close(db);
    return;
  }
  sqlx src = {be->sql, db};
  /* Its workers must be stopped: a step they stored after the copy
   * would be lost. */
  if (Q(&src, SQL_LEASED, SQL_INT(op->now)) != SQL_ROW ||
      src.d->integer(src.db, 0) > 0) {
    set_error(op, SPOOL__STORE_ECONFLICT,
              "a worker still runs threads of the source store: stop its "
              "workers (or wait for their leases to lapse), then migrate");
    be->close(db);
    return;
  }
  spool__buf scratch = {0};
  long long counts[4] = {0};
  for (int i = 0; i < 4 && op->result == SPOOL__STORE_OK; i++) {
    int rc = Q0(&src, tables[i].dump);
    for (; rc == SQL_ROW; rc = src.d->next(src.db)) {
      if (copy_row(&src, x, &tables[i], op, &scratch) != 0)
        break;
      counts[i]++;
    }
    if (op->result == SPOOL__STORE_OK && rc != SQL_DONE)
      db_error(&src, op, "cannot read the source");
  }
  if (op->result == SPOOL__STORE_OK && Q0(x, SQL_LOADED) == SQL_FAILED)
    db_error(x, op, "cannot finish the copy");
  if (op->result == SPOOL__STORE_OK)
    spool__buf_printf(&op->json,
                      "{\"threads\":%lld,\"events\":%lld,\"state\":%lld,"
                      "\"versions\":%lld}",
                      counts[0], counts[1], counts[2], counts[3]);
  if (op->result != SPOOL__STORE_OK)
    Q0(x, SQL_ROLLBACK_TO);
  Q0(x, SQL_RELEASE);
  spool__buf_free(&scratch);
  be->close(db);
}

void spool__store_sql_exec(const spool__sql_driver *drv, void *db,
                           spool__store_op *op) {
  static void (*const ops[])(sqlx *, spool__store_op *) = {
      [SPOOL__STORE_APPEND] = op_append,
      [SPOOL__STORE_LOAD] = op_load,
      [SPOOL__STORE_HEAD] = op_head,
      [SPOOL__STORE_LIST] = op_list,
      [SPOOL__STORE_COUNTS] = op_counts,
      [SPOOL__STORE_CHILDREN] = op_children,
      [SPOOL__STORE_STATE_GET] = op_state_get,
      [SPOOL__STORE_STATE_LIST] = op_state_list,
      [SPOOL__STORE_CLAIM] = op_claim,
      [SPOOL__STORE_RELEASE] = op_release,
      [SPOOL__STORE_RENEW] = op_renew,
      [SPOOL__STORE_READY] = op_ready,
      [SPOOL__STORE_BACKLOG] = op_backlog,
      [SPOOL__STORE_NOTIFY] = op_notify,
      [SPOOL__STORE_DELETE] = op_delete,
      [SPOOL__STORE_DUE] = op_due,
      [SPOOL__STORE_PURGE] = op_purge,
      [SPOOL__STORE_VERSION_PUT] = op_version_put,
      [SPOOL__STORE_VERSION_GET] = op_version_get,
      [SPOOL__STORE_MIGRATE] = op_migrate,
  };
  sqlx x = {drv, db};
  ops[op->kind](&x, op);
}
