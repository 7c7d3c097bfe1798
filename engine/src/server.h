/*
 * server.h: inbound HTTP/1.1 on a uv loop (uv_tcp + http-parser). No Lua
 * here. The server hands each complete request to a callback and waits for
 * spool__srv_respond before it reads the connection's next request, so
 * pipelined requests are answered in order.
 */
#ifndef SPOOL_SERVER_H
#define SPOOL_SERVER_H

#include <stddef.h>
#include <uv.h>

typedef struct spool__server spool__server;
typedef struct spool__srv_req spool__srv_req;

/* Called once per complete request; the request is owned by the server
 * until spool__srv_respond, which must be called exactly once. */
typedef void (*spool__srv_cb)(spool__srv_req *req, void *ud);

typedef struct spool__server_opts {
  const char *host;            /* NULL means 127.0.0.1 */
  int port;                    /* 0 picks a free port */
  size_t max_body;             /* 0 means 8 MiB; larger bodies get 413 */
  unsigned request_timeout_ms; /* 0 means 30 s: a connection must deliver
                                  each whole request within this time */
  int max_connections;         /* 0 means 10000; more are closed at once */
} spool__server_opts;

int spool__server_start(uv_loop_t *loop, const spool__server_opts *o,
                        spool__srv_cb cb, void *ud, spool__server **out,
                        char *err, size_t errlen);
int spool__server_port(const spool__server *s);
int spool__server_connections(const spool__server *s);
/* Stops listening and closes every connection. Requests still awaiting a
 * response stay valid; responding to them then only frees them. The server
 * memory goes when the loop runs the close callbacks. NULL is a no-op. */
void spool__server_close(spool__server *s);

const char *spool__srv_req_method(const spool__srv_req *r);
/* The request target as sent: path plus optional "?query". */
const char *spool__srv_req_target(const spool__srv_req *r);
/* Header names are lower-cased; returns NULL past the last index. */
const char *spool__srv_req_header(const spool__srv_req *r, int i,
                                  const char **value);
const char *spool__srv_req_body(const spool__srv_req *r, size_t *len);
/* The peer's address as text, e.g. "127.0.0.1". */
const char *spool__srv_req_peer(const spool__srv_req *r);

/*
 * Sends the response and releases the request. `headers` is a block of
 * "Name: value\r\n" lines (or NULL); Content-Length and Connection are
 * added here. The body is copied.
 */
void spool__srv_respond(spool__srv_req *r, int status, const char *headers,
                        const char *body, size_t len);

/* Drops the request without a response, closing its connection (the
 * client sees the connection end). For shutdown. */
void spool__srv_abandon(spool__srv_req *r);

#endif
