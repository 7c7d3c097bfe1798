/*
 * pg_listen.c: PostgreSQL notifications on the loop (see pg_listen.h).
 *
 * States: connecting (a work item on the thread pool owns `pending`), up
 * (conn and poll are live), waiting (the retry timer runs). Closing
 * stops what it can at once and frees the listener when the last of its
 * handles has closed and no connect is in flight.
 */
#include "io/pg_listen.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct spool__pg_listener {
  uv_loop_t *loop;
  char *url, *listen_sql;
  spool__pg_notified cb;
  void *ud;
  PGconn *conn;    /* up: the listening connection */
  PGconn *pending; /* connecting: what the work item made */
  uv_work_t work;
  uv_poll_t poll;
  uv_timer_t retry;
  unsigned backoff_ms;
  int connecting, polling, closing;
  int handles; /* open uv handles: the retry timer, the poll if any */
};

static void connect_later(spool__pg_listener *l);

static void maybe_free(spool__pg_listener *l) {
  if (!l->closing || l->handles > 0 || l->connecting)
    return;
  PQfinish(l->conn);
  free(l->url);
  free(l->listen_sql);
  free(l);
}

static void on_closed(uv_handle_t *h) {
  spool__pg_listener *l = h->data;
  l->handles--;
  maybe_free(l);
}

/* The poll's handle closed: its connection can go now (its fd must not
 * close while polled), and a new one is made unless closing. */
static void on_poll_closed(uv_handle_t *h) {
  spool__pg_listener *l = h->data;
  PQfinish(l->conn);
  l->conn = NULL;
  l->polling = 0;
  on_closed(h);
  if (!l->closing)
    connect_later(l);
}

static void drop_connection(spool__pg_listener *l) {
  if (l->polling) {
    uv_poll_stop(&l->poll);
    uv_close((uv_handle_t *)&l->poll, on_poll_closed);
  }
}

static void on_readable(uv_poll_t *p, int status, int events) {
  spool__pg_listener *l = p->data;
  (void)events;
  if (status < 0 || !PQconsumeInput(l->conn)) {
    drop_connection(l);
    return;
  }
  PGnotify *n;
  while (!l->closing && (n = PQnotifies(l->conn)) != NULL) {
    l->cb(n->extra, l->ud);
    PQfreemem(n);
  }
}

/* On the thread pool: connect and LISTEN, blocking. */
static void do_connect(uv_work_t *w) {
  spool__pg_listener *l = w->data;
  const char *keys[] = {"dbname", "application_name", NULL};
  const char *values[] = {l->url, "spool-listen", NULL};
  PGconn *c = PQconnectdbParams(keys, values, 1);
  if (c && PQstatus(c) == CONNECTION_OK) {
    PGresult *r = PQexec(c, l->listen_sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (ok && PQsetnonblocking(c, 1) == 0) {
      l->pending = c;
      return;
    }
  }
  PQfinish(c);
  l->pending = NULL;
}

static void after_connect(uv_work_t *w, int status) {
  spool__pg_listener *l = w->data;
  l->connecting = 0;
  PGconn *c = status == 0 ? l->pending : NULL;
  l->pending = NULL;
  if (l->closing) {
    PQfinish(c);
    maybe_free(l);
    return;
  }
  if (c == NULL || uv_poll_init_socket(l->loop, &l->poll, PQsocket(c)) != 0) {
    PQfinish(c);
    connect_later(l);
    return;
  }
  l->conn = c;
  l->poll.data = l;
  uv_unref((uv_handle_t *)&l->poll);
  l->polling = 1;
  l->handles++;
  l->backoff_ms = 1000;
  uv_poll_start(&l->poll, UV_READABLE, on_readable);
}

static void connect_now(uv_timer_t *t) {
  spool__pg_listener *l = t->data;
  if (l->closing || l->connecting)
    return;
  l->connecting = 1;
  l->work.data = l;
  if (uv_queue_work(l->loop, &l->work, do_connect, after_connect) != 0) {
    l->connecting = 0;
    connect_later(l);
  }
}

static void connect_later(spool__pg_listener *l) {
  uv_timer_start(&l->retry, connect_now, l->backoff_ms, 0);
  if (l->backoff_ms < 8000)
    l->backoff_ms *= 2;
}

spool__pg_listener *spool__pg_listen(uv_loop_t *loop, const char *url,
                                     const char *channel, spool__pg_notified cb,
                                     void *ud) {
  spool__pg_listener *l = calloc(1, sizeof *l);
  size_t n = strlen(channel) + 16;
  if (l == NULL || (l->url = strdup(url)) == NULL ||
      (l->listen_sql = malloc(n)) == NULL) {
    if (l)
      free(l->url);
    free(l);
    return NULL;
  }
  snprintf(l->listen_sql, n, "LISTEN %s", channel);
  l->loop = loop;
  l->cb = cb;
  l->ud = ud;
  l->backoff_ms = 1000;
  uv_timer_init(loop, &l->retry);
  l->retry.data = l;
  /* Listening alone must not keep a loop alive. */
  uv_unref((uv_handle_t *)&l->retry);
  l->handles = 1;
  connect_now(&l->retry);
  return l;
}

int spool__pg_listening(const spool__pg_listener *l) {
  return l && l->polling;
}

void spool__pg_listen_close(spool__pg_listener *l) {
  if (l == NULL)
    return;
  l->closing = 1;
  uv_timer_stop(&l->retry);
  uv_close((uv_handle_t *)&l->retry, on_closed);
  drop_connection(l);
}
