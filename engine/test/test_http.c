/*
 * test_http.c: outbound HTTP (http.h) against the engine's own server
 * (server.h) on one loop: a response's status, headers and body; what ends
 * a transfer that does not complete, by name (a refused connection, a
 * timeout, a response over the limit, the address guard); a cancelled
 * transfer never calls back. Every loop run is bounded by a timer.
 */
#include <string.h>
#include <uv.h>

#include "io/http.h"
#include "io/server.h"
#include "test.h"

typedef struct outcome {
  int done;
  long status;
  char error_name[32];
  char body[256];
  char headers[1024];
} outcome;

static void on_done(spool__http_xfer *x, void *ud) {
  outcome *o = ud;
  o->done++;
  o->status = spool__http_status(x);
  const char *name = spool__http_error_name(x);
  snprintf(o->error_name, sizeof o->error_name, "%s", name ? name : "");
  const spool__buf *b = spool__http_body(x);
  snprintf(o->body, sizeof o->body, "%.*s", (int)b->len,
           b->data ? b->data : "");
  const spool__buf *h = spool__http_headers(x);
  snprintf(o->headers, sizeof o->headers, "%.*s", (int)h->len,
           h->data ? h->data : "");
}

/* /hold is never answered; /big answers 4 KiB; anything else echoes its
 * method and target, with a header of its own. */
static spool__srv_req *held;

static void handler(spool__srv_req *req, void *ud) {
  (void)ud;
  const char *target = spool__srv_req_target(req);
  if (strcmp(target, "/hold") == 0) {
    held = req;
    return;
  }
  if (strcmp(target, "/big") == 0) {
    static char big[4096];
    memset(big, 'x', sizeof big);
    spool__srv_respond(req, 200, NULL, big, sizeof big);
    return;
  }
  char body[256];
  snprintf(body, sizeof body, "%s %s", spool__srv_req_method(req), target);
  spool__srv_respond(req, 201, "X-Seen: yes\r\n", body, strlen(body));
}

typedef struct fixture {
  uv_loop_t loop;
  spool__server *server;
  spool__http *http;
  char base[64];
} fixture;

static void setup(fixture *f) {
  char err[256];
  ASSERT_EQ(uv_loop_init(&f->loop), 0);
  spool__server_opts so = {0};
  ASSERT_EQ(spool__server_start(&f->loop, &so, handler, NULL, &f->server, err,
                                sizeof err),
            0);
  snprintf(f->base, sizeof f->base, "http://127.0.0.1:%d",
           spool__server_port(f->server));
  ASSERT_EQ(spool__http_new(&f->loop, &f->http), 0);
  held = NULL;
}

static void on_deadline(uv_timer_t *t) {
  uv_stop(t->loop);
}

/* Turns the loop until `o` is done, for at most 10 s. */
static void run_until(fixture *f, outcome *o) {
  uv_timer_t deadline;
  uv_timer_init(&f->loop, &deadline);
  uv_timer_start(&deadline, on_deadline, 10000, 0);
  while (!o->done && uv_timer_get_due_in(&deadline) > 0)
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&deadline, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void teardown(fixture *f) {
  if (held)
    spool__srv_respond(held, 200, NULL, "", 0);
  spool__http_free(f->http);
  spool__server_close(f->server);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  ASSERT_EQ(uv_loop_close(&f->loop), 0);
}

static void start(fixture *f, spool__http_request *r, outcome *o,
                  spool__http_xfer **x) {
  char err[256];
  ASSERT_EQ(spool__http_start(f->http, r, on_done, o, x, err, sizeof err), 0);
}

TEST_IMPL(http_request_and_response) {
  fixture f;
  setup(&f);
  char url[128];
  snprintf(url, sizeof url, "%s/things?a=1", f.base);
  const char *headers[] = {"Content-Type: application/json"};
  spool__http_request r = {.url = url,
                           .headers = headers,
                           .nheaders = 1,
                           .body = "{}",
                           .body_len = 2,
                           .timeout_ms = 5000};
  outcome o = {0};
  start(&f, &r, &o, NULL);
  ASSERT_EQ(spool__http_pending(f.http), 1);
  run_until(&f, &o);
  ASSERT_EQ(o.done, 1);
  ASSERT_EQ(o.status, 201);
  ASSERT_STR_EQ(o.error_name, "");
  ASSERT_STR_EQ(o.body, "POST /things?a=1"); /* a body makes it a POST */
  ASSERT_CONTAINS(o.headers, "X-Seen: yes\r\n");
  ASSERT_EQ(spool__http_pending(f.http), 0);
  teardown(&f);
}

TEST_IMPL(http_failures_by_name) {
  fixture f;
  setup(&f);
  char url[128];
  /* A response over the limit. */
  snprintf(url, sizeof url, "%s/big", f.base);
  spool__http_request big = {
      .url = url, .max_response = 1024, .timeout_ms = 5000};
  outcome o1 = {0};
  start(&f, &big, &o1, NULL);
  run_until(&f, &o1);
  ASSERT_EQ(o1.done, 1);
  ASSERT_STR_EQ(o1.error_name, "ETOOBIG");
  /* No answer before the deadline. */
  snprintf(url, sizeof url, "%s/hold", f.base);
  spool__http_request slow = {.url = url, .timeout_ms = 200};
  outcome o2 = {0};
  start(&f, &slow, &o2, NULL);
  run_until(&f, &o2);
  ASSERT_EQ(o2.done, 1);
  ASSERT_STR_EQ(o2.error_name, "ETIMEDOUT");
  ASSERT_EQ(o2.status, 0);
  /* Agents' requests may not reach this machine. */
  snprintf(url, sizeof url, "%s/x", f.base);
  spool__http_request guarded = {.url = url, .guard = 1, .timeout_ms = 5000};
  outcome o3 = {0};
  start(&f, &guarded, &o3, NULL);
  run_until(&f, &o3);
  ASSERT_EQ(o3.done, 1);
  ASSERT_STR_EQ(o3.error_name, "EACCES");
  /* Nobody listens on port 1. */
  snprintf(url, sizeof url, "http://127.0.0.1:1/x");
  spool__http_request refused = {.url = url, .timeout_ms = 5000};
  outcome o4 = {0};
  start(&f, &refused, &o4, NULL);
  run_until(&f, &o4);
  ASSERT_EQ(o4.done, 1);
  ASSERT_STR_EQ(o4.error_name, "ECONNECT");
  teardown(&f);
}

TEST_IMPL(http_cancel_never_calls_back) {
  fixture f;
  setup(&f);
  char url[128];
  snprintf(url, sizeof url, "%s/hold", f.base);
  spool__http_request r = {.url = url, .timeout_ms = 5000};
  outcome o = {0}, other = {0};
  spool__http_xfer *x = NULL;
  start(&f, &r, &o, &x);
  /* A second transfer, so the loop has something to finish. */
  snprintf(url, sizeof url, "%s/after", f.base);
  spool__http_request r2 = {.url = url, .timeout_ms = 5000};
  for (int i = 0; i < 100 && held == NULL; i++)
    uv_run(&f.loop, UV_RUN_ONCE);
  ASSERT(held != NULL);
  spool__http_cancel(x);
  ASSERT_EQ(spool__http_pending(f.http), 0);
  start(&f, &r2, &other, NULL);
  run_until(&f, &other);
  ASSERT_EQ(other.done, 1);
  ASSERT_EQ(o.done, 0);
  teardown(&f);
}
