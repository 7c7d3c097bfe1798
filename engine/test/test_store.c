/*
 * test_store.c: the store (store.h) with its SQLite back end in a file, on
 * its own thread, driven as the engine drives it: ops submitted in a tick,
 * flushed together, answered on the loop. A thread's events append only
 * at the sequence expected; the appends of one tick commit in one
 * transaction, and one that conflicts leaves the others committed; state
 * writes check their versions; closing finishes what was submitted.
 */
#include <stdlib.h>
#include <unistd.h>
#include <uv.h>

#include "io/store.h"
#include "test.h"

typedef struct fixture {
  uv_loop_t loop;
  spool__store *store;
  char dir[64], path[96];
} fixture;

typedef struct answer {
  int done;
  spool__store_status result;
  char json[2048];
} answer;

static void on_done(spool__store_op *op, void *ud) {
  answer *a = ud;
  a->done++;
  a->result = op->result;
  snprintf(a->json, sizeof a->json, "%.*s", (int)op->json.len,
           op->json.data ? op->json.data : "");
  spool__store_op_free(op);
}

static void setup(fixture *f) {
  char err[256];
  snprintf(f->dir, sizeof f->dir, "/tmp/spool-store-XXXXXX");
  ASSERT(mkdtemp(f->dir) != NULL);
  snprintf(f->path, sizeof f->path, "%s/test.db", f->dir);
  ASSERT_EQ(uv_loop_init(&f->loop), 0);
  ASSERT_EQ(spool__store_open(&f->loop, &spool__store_sqlite, f->path,
                              &f->store, err, sizeof err),
            0);
}

static void teardown(fixture *f) {
  spool__store_close(f->store);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  ASSERT_EQ(uv_loop_close(&f->loop), 0);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
  ASSERT_EQ(system(cmd), 0);
}

/* Hands over what was submitted and turns the loop until it is answered
 * (at most 2,000 turns: the store thread wakes the loop when done). */
static void settle(fixture *f) {
  spool__store_flush(f->store);
  for (int i = 0; i < 2000 && spool__store_pending(f->store) > 0; i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  ASSERT_EQ(spool__store_pending(f->store), 0);
}

static spool__store_event events[] = {
    {.seq = 1, .step = 0, .at = 1000, .type = "input", .data = "{\"a\":1}"},
    {.seq = 2, .step = 1, .at = 1001, .type = "model_call", .data = "{}"},
    {.seq = 3, .step = 1, .at = 1002, .type = "done", .data = "{\"r\":2}"},
};

/* Takes the lease on thread `id` for the one writer of these tests. */
static void claim(fixture *f, const char *id, answer *a) {
  spool__store_op *op = spool__store_op_new(SPOOL__STORE_CLAIM);
  ASSERT(op != NULL);
  op->thread_id = spool__store_op_strdup(op, id);
  op->owner = spool__store_op_strdup(op, "w");
  op->lease_ms = 60000;
  op->now = 1000;
  spool__store_submit(f->store, op, on_done, a);
}

/* An append of events[from..from+n) to thread `id`, expecting `expected`
 * events stored already, under the first claim of its lease. */
static void append(fixture *f, const char *id, long long expected, int from,
                   int n, answer *a) {
  spool__store_op *op = spool__store_op_new(SPOOL__STORE_APPEND);
  ASSERT(op != NULL);
  op->thread_id = spool__store_op_strdup(op, id);
  op->owner = spool__store_op_strdup(op, "w");
  op->epoch = 1;
  op->agent = spool__store_op_strdup(op, "a");
  op->status = spool__store_op_strdup(op, "running");
  op->expected_seq = expected;
  op->now = 1000;
  op->events = calloc((size_t)n, sizeof *op->events); /* the op's to free */
  for (int i = 0; i < n; i++) {
    op->events[i] = events[from + i];
    op->events[i].type = spool__store_op_strdup(op, events[from + i].type);
    op->events[i].data = spool__store_op_strdup(op, events[from + i].data);
  }
  op->nevents = n;
  spool__store_submit(f->store, op, on_done, a);
}

static void load(fixture *f, const char *id, answer *a) {
  spool__store_op *op = spool__store_op_new(SPOOL__STORE_LOAD);
  ASSERT(op != NULL);
  op->thread_id = spool__store_op_strdup(op, id);
  spool__store_submit(f->store, op, on_done, a);
}

TEST_IMPL(store_appends_at_the_expected_seq) {
  fixture f;
  setup(&f);
  answer lease = {0}, first = {0}, second = {0}, stale = {0}, got = {0},
         none = {0};
  claim(&f, "t_one", &lease);
  append(&f, "t_one", 0, 0, 2, &first);
  settle(&f);
  ASSERT_EQ(lease.result, SPOOL__STORE_OK);
  ASSERT_CONTAINS(lease.json, "\"epoch\":1");
  ASSERT_EQ(first.result, SPOOL__STORE_OK);
  append(&f, "t_one", 2, 2, 1, &second);
  append(&f, "t_one", 1, 1, 1, &stale); /* a writer that missed event 2 */
  settle(&f);
  ASSERT_EQ(second.result, SPOOL__STORE_OK);
  ASSERT_EQ(stale.result, SPOOL__STORE_ECONFLICT);
  load(&f, "t_one", &got);
  load(&f, "t_none", &none);
  settle(&f);
  ASSERT_EQ(got.result, SPOOL__STORE_OK);
  ASSERT_CONTAINS(got.json, "\"input\"");
  ASSERT_CONTAINS(got.json, "\"model_call\"");
  ASSERT_CONTAINS(got.json, "\"done\"");
  ASSERT_EQ(none.result, SPOOL__STORE_ENOTFOUND);
  teardown(&f);
}

TEST_IMPL(store_commits_a_tick_together) {
  fixture f;
  setup(&f);
  answer a = {0}, b = {0}, c = {0}, la = {0}, lb = {0};
  claim(&f, "t_a", &la);
  claim(&f, "t_b", &lb);
  settle(&f);
  long long tx0, ap0, tx1, ap1;
  spool__store_counts(f.store, &tx0, &ap0);
  /* Three appends in one tick; the middle one conflicts (a second writer
   * of t_a's first event, which the first append took). */
  append(&f, "t_a", 0, 0, 1, &a);
  append(&f, "t_a", 0, 0, 1, &b);
  append(&f, "t_b", 0, 0, 2, &c);
  settle(&f);
  spool__store_counts(f.store, &tx1, &ap1);
  ASSERT_EQ(a.result, SPOOL__STORE_OK);
  ASSERT_EQ(b.result, SPOOL__STORE_ECONFLICT);
  ASSERT_EQ(c.result, SPOOL__STORE_OK);
  ASSERT_EQ(tx1 - tx0, 1); /* group commit: one transaction */
  la = lb = (answer){0};
  load(&f, "t_a", &la);
  load(&f, "t_b", &lb);
  settle(&f);
  ASSERT_EQ(la.result, SPOOL__STORE_OK);
  ASSERT_EQ(lb.result, SPOOL__STORE_OK);
  ASSERT_CONTAINS(lb.json, "\"model_call\"");
  teardown(&f);
}

/* A state write that must find the document absent. */
static void put_new(fixture *f, const char *value, answer *a) {
  spool__store_op *op = spool__store_op_new(SPOOL__STORE_APPEND);
  ASSERT(op != NULL);
  op->now = 1000;
  op->writes = calloc(1, sizeof *op->writes); /* the op's to free */
  op->writes[0] =
      (spool__store_write){.ns = spool__store_op_strdup(op, "orders"),
                           .key = spool__store_op_strdup(op, "5531"),
                           .value = spool__store_op_strdup(op, value),
                           .if_version = 0};
  op->nwrites = 1;
  spool__store_submit(f->store, op, on_done, a);
}

TEST_IMPL(store_checks_state_versions) {
  fixture f;
  setup(&f);
  answer first = {0}, again = {0}, got = {0};
  put_new(&f, "{\"v\":1}", &first);
  settle(&f);
  ASSERT_EQ(first.result, SPOOL__STORE_OK);
  put_new(&f, "{\"v\":2}", &again);
  settle(&f);
  ASSERT_EQ(again.result, SPOOL__STORE_ECONFLICT);
  spool__store_op *op = spool__store_op_new(SPOOL__STORE_STATE_GET);
  op->ns = spool__store_op_strdup(op, "orders");
  op->key = spool__store_op_strdup(op, "5531");
  spool__store_submit(f.store, op, on_done, &got);
  settle(&f);
  ASSERT_EQ(got.result, SPOOL__STORE_OK);
  ASSERT_CONTAINS(got.json, "\"v\":1");
  teardown(&f);
}

TEST_IMPL(store_close_answers_what_was_submitted) {
  fixture f;
  setup(&f);
  answer a = {0}, lease = {0};
  claim(&f, "t_last", &lease);
  append(&f, "t_last", 0, 0, 1, &a);
  spool__store_flush(f.store);
  teardown(&f); /* closes before the loop ever turned */
  ASSERT_EQ(a.done, 1);
  ASSERT_EQ(a.result, SPOOL__STORE_OK);
}
