/*
 * test_server.c: the inbound HTTP server (server.h) against a raw TCP
 * client, for what an HTTP library would hide: pipelined requests answered
 * in order, malformed requests, bodies over the limit, slow clients, and
 * the connection cap. Every loop run here is bounded by a timer.
 */
#include <uv.h>

#include "buf.h"
#include "server.h"
#include "test.h"

/* ---- a server whose handler answers with the request target, after a
 * delay given in the query ("?ms=N") ---- */

typedef struct delayed {
  uv_timer_t timer;
  spool__srv_req *req;
} delayed;

static int handled;

static void on_delay_closed(uv_handle_t *h) {
  free(h->data);
}

static void answer(spool__srv_req *req) {
  const char *t = spool__srv_req_target(req);
  spool__srv_respond(req, 200, "Content-Type: text/plain\r\n", t, strlen(t));
}

static void on_delay(uv_timer_t *t) {
  delayed *d = t->data;
  answer(d->req);
  uv_close((uv_handle_t *)&d->timer, on_delay_closed);
}

static void handler(spool__srv_req *req, void *ud) {
  uv_loop_t *loop = ud;
  handled++;
  const char *ms = strstr(spool__srv_req_target(req), "ms=");
  if (ms == NULL) {
    answer(req);
    return;
  }
  delayed *d = calloc(1, sizeof *d);
  d->req = req;
  uv_timer_init(loop, &d->timer);
  d->timer.data = d;
  uv_timer_start(&d->timer, on_delay, (uint64_t)atoi(ms + 3), 0);
}

/* ---- a raw client: connect, send bytes, collect everything until the
 * server closes or `until` appears `count` times ---- */

typedef struct client {
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  const char *send;
  spool__buf in;
  int closed;
  int refused;
} client;

static void on_client_closed(uv_handle_t *h) {
  ((client *)h->data)->closed = 1;
}

static void on_alloc(uv_handle_t *h, size_t n, uv_buf_t *b) {
  (void)h;
  b->base = malloc(n);
  b->len = n;
}

static void on_client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  client *c = s->data;
  if (n > 0)
    spool__buf_add(&c->in, b->base, (size_t)n);
  free(b->base);
  if (n < 0 && !uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, on_client_closed);
}

static void on_client_written(uv_write_t *w, int status) {
  (void)w;
  (void)status;
}

static void on_client_connect(uv_connect_t *req, int status) {
  client *c = req->data;
  if (status < 0) {
    c->refused = 1;
    uv_close((uv_handle_t *)&c->tcp, on_client_closed);
    return;
  }
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_client_read);
  if (c->send && *c->send) {
    uv_buf_t b = uv_buf_init((char *)c->send, (unsigned)strlen(c->send));
    uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, on_client_written);
  }
}

static void client_start(client *c, uv_loop_t *loop, int port,
                         const char *send) {
  memset(c, 0, sizeof *c);
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", port, &addr);
  uv_tcp_init(loop, &c->tcp);
  c->tcp.data = c;
  c->connect.data = c;
  c->send = send;
  uv_tcp_connect(&c->connect, &c->tcp, (struct sockaddr *)&addr,
                 on_client_connect);
}

static int count(const spool__buf *b, const char *needle) {
  int n = 0;
  for (const char *p = b->data; p && (p = strstr(p, needle)); p++)
    n++;
  return n;
}

static void on_deadline(uv_timer_t *t) {
  *(int *)t->data = 1;
}

/* Runs the loop until the client closed, or saw `until` n times, or 5 s. */
static void run_until(uv_loop_t *loop, client *c, const char *until, int n) {
  uv_timer_t deadline;
  int expired = 0;
  uv_timer_init(loop, &deadline);
  deadline.data = &expired;
  uv_timer_start(&deadline, on_deadline, 5000, 0);
  while (!c->closed && !expired && (until == NULL || count(&c->in, until) < n))
    uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&deadline, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  if (expired)
    fprintf(stderr, "client received: [%s]\n", c->in.data ? c->in.data : "");
  ASSERT(!expired);
}

static void client_close(uv_loop_t *loop, client *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, on_client_closed);
  while (!c->closed)
    uv_run(loop, UV_RUN_ONCE);
  spool__buf_free(&c->in);
}

static spool__server *start(uv_loop_t *loop, spool__server_opts *o) {
  spool__server *s = NULL;
  char err[128];
  handled = 0;
  ASSERT_EQ(spool__server_start(loop, o, handler, loop, &s, err, sizeof err),
            0);
  return s;
}

static void finish(uv_loop_t *loop, spool__server *s) {
  spool__server_close(s);
  uv_run(loop, UV_RUN_DEFAULT);
  ASSERT_EQ(uv_loop_close(loop), 0);
}

TEST_IMPL(server_pipelining_in_order) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  spool__server_opts o = {0};
  spool__server *s = start(&loop, &o);
  client c;
  /* The first request is slow, the second fast: responses must still come
   * back in request order, each after its own request was handled. */
  client_start(&c, &loop, spool__server_port(s),
               "GET /first?ms=100 HTTP/1.1\r\nHost: x\r\n\r\n"
               "GET /second HTTP/1.1\r\nHost: x\r\n\r\n");
  run_until(&loop, &c, "HTTP/1.1 200 OK", 2);
  const char *first = strstr(c.in.data, "/first");
  const char *second = strstr(c.in.data, "/second");
  ASSERT(first && second && first < second);
  ASSERT_CONTAINS(c.in.data, "Connection: keep-alive");
  ASSERT_EQ(handled, 2);
  client_close(&loop, &c);
  finish(&loop, s);
}

TEST_IMPL(server_rejects_malformed) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  spool__server_opts o = {0};
  spool__server *s = start(&loop, &o);
  client c;
  client_start(&c, &loop, spool__server_port(s), "HELLO WORLD\r\n\r\n");
  run_until(&loop, &c, NULL, 0);
  ASSERT_CONTAINS(c.in.data, "HTTP/1.1 400 Bad Request");
  ASSERT_CONTAINS(c.in.data, "Connection: close");
  ASSERT_EQ(handled, 0);
  client_close(&loop, &c);
  finish(&loop, s);
}

TEST_IMPL(server_limits_body) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  spool__server_opts o = {0};
  o.max_body = 10;
  spool__server *s = start(&loop, &o);
  client c;
  client_start(&c, &loop, spool__server_port(s),
               "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n"
               "01234567890123456789");
  run_until(&loop, &c, NULL, 0);
  ASSERT_CONTAINS(c.in.data, "HTTP/1.1 413 Payload Too Large");
  ASSERT_EQ(handled, 0);
  client_close(&loop, &c);
  /* A chunked body that grows past the limit is refused the same way. */
  client_start(&c, &loop, spool__server_port(s),
               "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               "\r\n8\r\n01234567\r\n8\r\n01234567\r\n0\r\n\r\n");
  run_until(&loop, &c, NULL, 0);
  ASSERT_CONTAINS(c.in.data, "HTTP/1.1 413");
  client_close(&loop, &c);
  finish(&loop, s);
}

TEST_IMPL(server_closes_slow_clients) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  spool__server_opts o = {0};
  o.request_timeout_ms = 100;
  spool__server *s = start(&loop, &o);
  client c;
  /* Headers that never end: the server must give up on its own. */
  client_start(&c, &loop, spool__server_port(s), "GET / HTTP/1.1\r\nHost: ");
  run_until(&loop, &c, NULL, 0);
  ASSERT(c.closed);
  ASSERT_EQ(c.in.len, 0);
  ASSERT_EQ(handled, 0);
  client_close(&loop, &c);
  finish(&loop, s);
}

TEST_IMPL(server_honours_connection_close) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  spool__server_opts o = {0};
  spool__server *s = start(&loop, &o);
  client c;
  client_start(&c, &loop, spool__server_port(s),
               "GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  run_until(&loop, &c, NULL, 0);
  ASSERT(c.closed);
  ASSERT_CONTAINS(c.in.data, "HTTP/1.1 200 OK");
  ASSERT_CONTAINS(c.in.data, "Connection: close");
  client_close(&loop, &c);
  finish(&loop, s);
}

TEST_IMPL(server_caps_connections) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  spool__server_opts o = {0};
  o.max_connections = 2;
  spool__server *s = start(&loop, &o);
  client a, b, c;
  client_start(&a, &loop, spool__server_port(s), "");
  client_start(&b, &loop, spool__server_port(s), "");
  for (int i = 0; i < 20 && spool__server_connections(s) < 2; i++)
    uv_run(&loop, UV_RUN_ONCE);
  ASSERT_EQ(spool__server_connections(s), 2);
  /* The third is accepted and closed at once; the first two still work. */
  client_start(&c, &loop, spool__server_port(s),
               "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  run_until(&loop, &c, NULL, 0);
  ASSERT(c.closed);
  ASSERT_EQ(c.in.len, 0);
  client_close(&loop, &c);
  client_close(&loop, &a);
  client_close(&loop, &b);
  finish(&loop, s);
}

TEST_IMPL(server_close_with_request_pending) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  spool__server_opts o = {0};
  spool__server *s = start(&loop, &o);
  client c;
  client_start(&c, &loop, spool__server_port(s),
               "GET /?ms=50 HTTP/1.1\r\nHost: x\r\n\r\n");
  while (handled == 0)
    uv_run(&loop, UV_RUN_ONCE);
  /* Closing the server while the handler works: the late response only
   * frees the request, and nothing leaks (the sanitizer build checks). */
  spool__server_close(s);
  run_until(&loop, &c, NULL, 0);
  ASSERT(c.closed);
  client_close(&loop, &c);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

TEST_IMPL(server_drains_gracefully) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  spool__server_opts o = {0};
  spool__server *s = start(&loop, &o);
  int port = spool__server_port(s);
  client idle, busy;
  client_start(&idle, &loop, port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  run_until(&loop, &idle, "HTTP/1.1 200", 1); /* now idle, kept alive */
  client_start(&busy, &loop, port, "GET /?ms=50 HTTP/1.1\r\nHost: x\r\n\r\n");
  while (handled < 2)
    uv_run(&loop, UV_RUN_ONCE);
  /* Draining: the idle connection goes; the busy one gets its answer,
   * marked as the last, and then goes; nobody new gets in. */
  spool__server_drain(s);
  run_until(&loop, &idle, NULL, 0);
  ASSERT(idle.closed);
  run_until(&loop, &busy, NULL, 0);
  ASSERT_EQ(count(&busy.in, "HTTP/1.1 200"), 1);
  ASSERT_EQ(count(&busy.in, "Connection: close"), 1);
  client late;
  client_start(&late, &loop, port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  run_until(&loop, &late, NULL, 0);
  ASSERT(late.refused || late.in.len == 0);
  client_close(&loop, &idle);
  client_close(&loop, &busy);
  client_close(&loop, &late);
  finish(&loop, s); /* after a drain, close frees what is left */
}
