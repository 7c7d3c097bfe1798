/*
 * server.c: inbound HTTP/1.1 with uv_tcp and http-parser. One request per
 * connection is in the hands of the callback at a time: reading stops at
 * the end of each request (server_parse.c) and goes on once
 * spool__srv_respond answered it, so bytes of pipelined requests wait in
 * the connection's backlog.
 *
 * Limits bound what one client can cost: body size (413), header size
 * (http-parser's own 80 KiB), the time to deliver a whole request (a slow
 * client is closed), the number of connections from one address, and the
 * number in total. At the total, a new connection takes the place of the
 * one idle the longest (nginx reuses its idle keep-alive connections the
 * same way), so connections opened and left silent cannot lock others
 * out.
 *
 * No Lua here.
 */
#include "io/server.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "io/server_parse.h"
#include "io/server_peers.h"

typedef struct conn conn;

/* After its last response, a connection the server closes is shut down
 * for writing and read (and dropped) for this long before it is closed:
 * a client still sending (a body refused with 413) then reads the answer
 * instead of a reset. */
#define LINGER_MS 2000

struct spool__server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  spool__srv_cb cb;
  void *ud;
  spool__server_opts opts;
  int port;
  int nconns; /* connections whose handles are not closed yet */
  int nlive;  /* of them, those not closing: what the caps count */
  int closing;
  int draining; /* not listening; each connection closes after its answer */
  int listener_open;
  int listener_closing;
  conn *conns;
  conn *idle_head, *idle_tail; /* idle ones, the longest idle first */
  spool__peers *peers;
  char readbuf[64 * 1024];
};

struct conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  spool__srv_parser ps;
  spool__server *srv;
  spool__srv_req *req; /* complete, waiting for its response */
  spool__buf backlog;  /* received bytes not yet parsed */
  int pending;         /* req is complete and waiting for its response */
  int in_process;
  int reading;
  int closing;
  int handles_open;
  int close_after_write;
  int writes;    /* uv_writes not yet completed */
  int lingering; /* shut down for writing; reading until EOF or the timer */
  uv_shutdown_t shutdown;
  int streaming; /* req's response is a stream (spool__srv_stream_*) */
  char peer[48];
  spool__peer_key key;
  int counted; /* in srv->peers */
  int idle;    /* in the idle list */
  conn *prev, *next;
  conn *idle_prev, *idle_next;
};

typedef struct write_req {
  uv_write_t req;
  conn *c;
  char *data;
} write_req;

static void conn_close(conn *c);
static void conn_process(conn *c);
static void start_reading(conn *c);
static void stop_reading(conn *c);
static void update_idle(conn *c);

static const char *status_text(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 201:
    return "Created";
  case 202:
    return "Accepted";
  case 204:
    return "No Content";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 413:
    return "Payload Too Large";
  case 415:
    return "Unsupported Media Type";
  case 422:
    return "Unprocessable Entity";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 502:
    return "Bad Gateway";
  case 503:
    return "Service Unavailable";
  case 504:
    return "Gateway Timeout";
  case 529:
    return "Overloaded";
  default:
    return "Status";
  }
}

/* ---- writing ---- */

static void on_linger_timeout(uv_timer_t *t) {
  conn_close(t->data);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)req;
  (void)status; /* closed by EOF, an error, or the timer */
}

static void linger(conn *c) {
  if (c->closing || c->lingering)
    return;
  c->lingering = 1;
  c->backlog.len = 0;
  if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    conn_close(c);
    return;
  }
  uv_timer_start(&c->timer, on_linger_timeout, LINGER_MS, 0);
  start_reading(c);
}

static void on_written(uv_write_t *w, int status) {
  write_req *wr = (write_req *)w;
  conn *c = wr->c;
  free(wr->data);
  free(wr);
  c->writes--;
  if (status < 0)
    conn_close(c);
  else if (c->close_after_write && c->writes == 0)
    linger(c); /* once the last queued write is out, not an earlier one */
  else
    update_idle(c);
}

/* Queues out's bytes on the connection (taking the buffer); closes the
 * connection when that fails. */
static void conn_send(conn *c, spool__buf *out) {
  write_req *wr = malloc(sizeof *wr);
  if (wr == NULL) {
    spool__buf_free(out);
    conn_close(c);
    return;
  }
  wr->c = c;
  wr->data = out->data;
  uv_buf_t b = uv_buf_init(out->data, (unsigned)out->len);
  if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
    free(wr->data);
    free(wr);
    conn_close(c);
    return;
  }
  c->writes++;
}

static void conn_write(conn *c, int status, const char *headers,
                       const char *body, size_t len, int keep_alive) {
  spool__buf out = {0};
  int rc =
      spool__buf_printf(&out,
                        "HTTP/1.1 %d %s\r\n%sContent-Length: %zu\r\n"
                        "Connection: %s\r\n\r\n",
                        status, status_text(status), headers ? headers : "",
                        len, keep_alive ? "keep-alive" : "close");
  if (rc == 0 && len > 0)
    rc = spool__buf_add(&out, body, len);
  if (rc != 0) {
    spool__buf_free(&out);
    conn_close(c);
    return;
  }
  if (!keep_alive) {
    c->close_after_write = 1;
    stop_reading(c); /* what it sends now is dropped; linger reads on */
  }
  conn_send(c, &out);
}

static void restart_timer(conn *c);

void spool__srv_respond(spool__srv_req *r, int status, const char *headers,
                        const char *body, size_t len) {
  conn *c = r->c;
  if (c == NULL || c->closing) {
    spool__srv_req_free(r); /* the client went away while the handler worked */
    return;
  }
  int keep_alive = r->keep_alive && !c->srv->closing && !c->srv->draining;
  c->req = NULL;
  c->pending = 0;
  /* The body may point into the request (an echo): write, then free. */
  conn_write(c, status, headers, body, len, keep_alive);
  spool__srv_req_free(r);
  if (!keep_alive)
    return;
  restart_timer(c);
  start_reading(c);
  conn_process(c);
  update_idle(c);
}

int spool__srv_stream_start(spool__srv_req *r, int status,
                            const char *headers) {
  conn *c = r->c;
  if (c == NULL || c->closing)
    return -1;
  spool__buf out = {0};
  if (spool__buf_printf(&out, "HTTP/1.1 %d %s\r\n%sConnection: close\r\n\r\n",
                        status, status_text(status),
                        headers ? headers : "") != 0) {
    spool__buf_free(&out);
    return -1;
  }
  c->streaming = r->streaming = 1;
  conn_send(c, &out);
  /* Read on, to notice the client going away (what it sends is dropped). */
  c->backlog.len = 0;
  start_reading(c);
  return c->closing ? -1 : 0;
}

int spool__srv_stream_send(spool__srv_req *r, const char *data, size_t len) {
  conn *c = r->c;
  if (c == NULL || c->closing)
    return -1;
  if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) >
      SPOOL__SRV_STREAM_MAX_QUEUED) {
    conn_close(c); /* too far behind: it reconnects and resumes */
    return -1;
  }
  spool__buf out = {0};
  if (spool__buf_add(&out, data, len) != 0) {
    spool__buf_free(&out);
    return -1;
  }
  conn_send(c, &out);
  return c->closing ? -1 : 0;
}

void spool__srv_stream_end(spool__srv_req *r) {
  conn *c = r->c;
  if (c != NULL && !c->closing) {
    c->req = NULL;
    c->pending = 0;
    if (c->writes == 0)
      conn_close(c);
    else
      c->close_after_write = 1;
  }
  spool__srv_req_free(r);
}

void spool__srv_abandon(spool__srv_req *r) {
  conn *c = r->c;
  if (c) {
    c->req = NULL;
    c->pending = 0;
    conn_close(c);
  }
  spool__srv_req_free(r);
}

/* ---- reading ---- */

/* The code of an error the server answers itself, as the control API
 * names it in {"error": {"code", "message"}}. */
static const char *error_code(int status) {
  switch (status) {
  case 413:
    return "too_large";
  case 431:
    return "headers_too_large";
  default:
    return "bad_request";
  }
}

static void fail_request(conn *c, int status, const char *msg) {
  char body[240];
  int n = snprintf(body, sizeof body,
                   "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}",
                   error_code(status), msg);
  if (n < 0 || (size_t)n >= sizeof body)
    n = snprintf(body, sizeof body,
                 "{\"error\":{\"code\":\"%s\",\"message\":\"\"}}",
                 error_code(status));
  stop_reading(c);
  conn_write(c, status, "Content-Type: application/json\r\n", body, (size_t)n,
             0);
}

static void conn_process(conn *c) {
  if (c->in_process)
    return;
  c->in_process = 1;
  while (!c->pending && !c->closing && !c->close_after_write &&
         c->backlog.len > 0) {
    long used = spool__srv_parse(&c->ps, c->backlog.data, c->backlog.len);
    if (used < 0) {
      fail_request(c, c->ps.status, c->ps.why);
      break;
    }
    size_t n = (size_t)used;
    memmove(c->backlog.data, c->backlog.data + n, c->backlog.len - n);
    c->backlog.len -= n;
    if (c->ps.complete) {
      spool__srv_req *r = spool__srv_parser_take(&c->ps);
      r->c = c;
      c->req = r;
      c->pending = 1;
      uv_timer_stop(&c->timer);
      c->srv->cb(r, c->srv->ud);
      break; /* a synchronous response re-enters conn_process itself */
    }
    if (n == 0)
      break;
  }
  /* Bound what a client may pipeline ahead of its responses. */
  if (c->pending && c->backlog.len > sizeof c->srv->readbuf)
    stop_reading(c);
  c->in_process = 0;
  if (!c->pending && !c->closing && !c->close_after_write &&
      c->backlog.len > 0 && c->ps.status == 0)
    conn_process(c); /* a response arrived while we were in the loop */
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  conn *c = h->data;
  (void)suggested;
  buf->base = c->srv->readbuf;
  buf->len = sizeof c->srv->readbuf;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn *c = s->data;
  if (nread < 0) {
    conn_close(c);
    return;
  }
  if (nread == 0 || c->streaming || c->lingering)
    return;
  if (spool__buf_add(&c->backlog, buf->base, (size_t)nread) != 0) {
    conn_close(c);
    return;
  }
  conn_process(c);
  update_idle(c);
}

static void start_reading(conn *c) {
  if (!c->reading && !c->closing &&
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
    c->reading = 1;
}

static void stop_reading(conn *c) {
  if (c->reading)
    uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
}

static void on_timeout(uv_timer_t *t) {
  conn *c = t->data;
  if (!c->pending)
    conn_close(c); /* idle, or too slow delivering its request */
}

/* The timer bounds the time to deliver a whole request, counted from the
 * connection's start or its previous response; reads do not reset it, so
 * a client that trickles bytes is closed as surely as an idle one. */
static void restart_timer(conn *c) {
  uv_timer_start(&c->timer, on_timeout, c->srv->opts.request_timeout_ms, 0);
}

/* ---- lifecycle ---- */

static void maybe_free_server(spool__server *s) {
  if (s->closing && !s->listener_open && s->nconns == 0) {
    spool__peers_free(s->peers);
    free(s);
  }
}

/* Idle: waiting for the first byte of a request, on a new connection or
 * one kept alive, with nothing of ours in flight. Closing it costs its
 * client nothing but a reconnect. */
static int is_idle(const conn *c) {
  return !c->closing && !c->lingering && !c->streaming && !c->pending &&
         !c->close_after_write && c->writes == 0 && c->backlog.len == 0 &&
         !spool__srv_parser_busy(&c->ps);
}

/* Keeps the idle list, in the order its connections became idle. Called
 * after everything that may change is_idle. */
static void update_idle(conn *c) {
  spool__server *s = c->srv;
  int idle = is_idle(c);
  if (idle == c->idle)
    return;
  c->idle = idle;
  if (idle) {
    c->idle_prev = s->idle_tail;
    c->idle_next = NULL;
    if (s->idle_tail)
      s->idle_tail->idle_next = c;
    else
      s->idle_head = c;
    s->idle_tail = c;
    return;
  }
  if (c->idle_prev)
    c->idle_prev->idle_next = c->idle_next;
  else
    s->idle_head = c->idle_next;
  if (c->idle_next)
    c->idle_next->idle_prev = c->idle_prev;
  else
    s->idle_tail = c->idle_prev;
  c->idle_prev = c->idle_next = NULL;
}

static void on_conn_handle_closed(uv_handle_t *h) {
  conn *c = h->data;
  if (--c->handles_open > 0)
    return;
  spool__server *s = c->srv;
  spool__buf_free(&c->backlog);
  free(c);
  s->nconns--;
  maybe_free_server(s);
}

static void conn_close(conn *c) {
  if (c->closing)
    return;
  c->closing = 1;
  update_idle(c); /* out of the idle list */
  spool__server *s = c->srv;
  s->nlive--;
  if (c->counted)
    spool__peers_remove(s->peers, &c->key);
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  if (c->req) {
    if (c->pending)
      c->req->c = NULL; /* the handler still holds it */
    else
      spool__srv_req_free(c->req);
    c->req = NULL;
  }
  spool__srv_parser_free(&c->ps);
  uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void read_peer(conn *c) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
    return; /* the empty key, and no name */
  if (ss.ss_family == AF_INET6)
    uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof c->peer);
  else
    uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof c->peer);
  spool__peer_key_of((struct sockaddr *)&ss, &c->key);
}

/* May the new connection c stay? Not past its address's cap; and at the
 * total, only in the place of the connection idle the longest. */
static int admit(spool__server *s, conn *c) {
  int n = spool__peers_add(s->peers, &c->key);
  if (n < 0)
    return 0;
  c->counted = 1;
  if (n > s->opts.max_per_peer)
    return 0;
  if (s->nlive <= s->opts.max_connections)
    return 1;
  if (s->idle_head == NULL)
    return 0;
  conn_close(s->idle_head);
  return 1;
}

static void on_connection(uv_stream_t *l, int status) {
  spool__server *s = l->data;
  if (status < 0)
    return;
  conn *c = calloc(1, sizeof *c);
  if (c == NULL)
    return;
  c->srv = s;
  uv_tcp_init(s->loop, &c->tcp);
  uv_timer_init(s->loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->handles_open = 2;
  s->nconns++;
  s->nlive++;
  c->next = s->conns;
  if (s->conns)
    s->conns->prev = c;
  s->conns = c;
  if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  read_peer(c);
  if (!admit(s, c)) {
    conn_close(c); /* it has sent nothing yet: no answer is owed */
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  spool__srv_parser_init(&c->ps, s->opts.max_body, c->peer);
  restart_timer(c);
  start_reading(c);
  update_idle(c);
}

/* Writing to a connection its client reset raises SIGPIPE, whose default
 * action ends the process; libuv writes with write(2), so MSG_NOSIGNAL is
 * not to be had. A process that left SIGPIPE at its default ignores it
 * from now on (the write fails with EPIPE and the connection closes); a
 * handler or a mask the application set is its own and stays. */
static void ignore_sigpipe(void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) != 0 || (sa.sa_flags & SA_SIGINFO) ||
      sa.sa_handler != SIG_DFL)
    return;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGPIPE, &sa, NULL);
}

int spool__server_start(uv_loop_t *loop, const spool__server_opts *o,
                        spool__srv_cb cb, void *ud, spool__server **out,
                        char *err, size_t errlen) {
  *out = NULL;
  spool__server *s = calloc(1, sizeof *s);
  if (s == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  s->loop = loop;
  s->cb = cb;
  s->ud = ud;
  s->opts = *o;
  if (s->opts.host == NULL)
    s->opts.host = "127.0.0.1";
  if (s->opts.max_body == 0)
    s->opts.max_body = 8u << 20;
  if (s->opts.request_timeout_ms == 0)
    s->opts.request_timeout_ms = 30000;
  if (s->opts.max_connections <= 0)
    s->opts.max_connections = 10000;
  /* Above the 1,000 clients at once the control API serves from one
   * machine (spec/serve_spec.lua), with room for a reverse proxy in front
   * or one machine following many threads' event streams; yet about a
   * tenth of the default total, so one address cannot take it all. */
  if (s->opts.max_per_peer <= 0)
    s->opts.max_per_peer = 1024;
  struct sockaddr_storage addr;
  int rc =
      strchr(s->opts.host, ':')
          ? uv_ip6_addr(s->opts.host, o->port, (struct sockaddr_in6 *)&addr)
          : uv_ip4_addr(s->opts.host, o->port, (struct sockaddr_in *)&addr);
  if (rc != 0) {
    snprintf(err, errlen, "invalid listen address '%s'", s->opts.host);
    free(s);
    return -1;
  }
  s->peers = spool__peers_new(s->opts.max_connections,
                              uv_hrtime() ^ (uint64_t)(uintptr_t)s);
  if (s->peers == NULL) {
    snprintf(err, errlen, "out of memory");
    free(s);
    return -1;
  }
  ignore_sigpipe();
  uv_tcp_init(loop, &s->listener);
  s->listener.data = s;
  s->listener_open = 1;
  rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&s->listener, 1024, on_connection);
  if (rc != 0) {
    snprintf(err, errlen, "cannot listen on %s:%d: %s", s->opts.host, o->port,
             uv_strerror(rc));
    spool__server_close(s);
    return -1;
  }
  int len = sizeof addr;
  uv_tcp_getsockname(&s->listener, (struct sockaddr *)&addr, &len);
  s->port = addr.ss_family == AF_INET6
                ? ntohs(((struct sockaddr_in6 *)&addr)->sin6_port)
                : ntohs(((struct sockaddr_in *)&addr)->sin_port);
  *out = s;
  return 0;
}

int spool__server_port(const spool__server *s) {
  return s->port;
}

int spool__server_connections(const spool__server *s) {
  return s->nconns;
}

static void on_listener_closed(uv_handle_t *h) {
  spool__server *s = h->data;
  s->listener_open = 0;
  maybe_free_server(s);
}

static void close_listener(spool__server *s) {
  if (!s->listener_closing) {
    s->listener_closing = 1;
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
  }
}

void spool__server_drain(spool__server *s) {
  if (s == NULL || s->closing || s->draining)
    return;
  s->draining = 1;
  close_listener(s);
  /* Idle keep-alive connections go now; busy ones after their answer. */
  conn *c = s->conns;
  while (c) {
    conn *next = c->next;
    if (c->req == NULL && !spool__srv_parser_busy(&c->ps) && c->writes == 0 &&
        !c->lingering)
      conn_close(c);
    c = next;
  }
}

void spool__server_close(spool__server *s) {
  if (s == NULL || s->closing)
    return;
  s->closing = 1;
  while (s->conns)
    conn_close(s->conns);
  close_listener(s);
  maybe_free_server(s); /* a drain may have closed everything already */
}
