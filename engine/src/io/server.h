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
  int max_connections;         /* 0 means 10000; past it, a new connection
                                  takes the place of the one idle the
                                  longest, or is closed at once */
  int max_per_peer;            /* 0 means 1024: connections from one address
                                  (an IPv6 /64); more are closed at once */
} spool__server_opts;

int spool__server_start(uv_loop_t *loop, const spool__server_opts *o,
                        spool__srv_cb cb, void *ud, spool__server **out,
                        char *err, size_t errlen);
int spool__server_port(const spool__server *s);
int spool__server_connections(const spool__server *s);
/* Stops listening; idle connections close now, and each busy one after
 * its answer (sent with Connection: close). For a graceful shutdown,
 * before spool__server_close. */
void spool__server_drain(spool__server *s);
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
/* Has a streamed response started? */
int spool__srv_req_streaming(const spool__srv_req *r);
/* A pointer the caller keeps with the request (NULL at first). */
void *spool__srv_req_user(const spool__srv_req *r);
void spool__srv_req_set_user(spool__srv_req *r, void *user);

/*
 * Sends the response and releases the request. `headers` is a block of
 * "Name: value\r\n" lines (or NULL); Content-Length and Connection are
 * added here. The body is copied.
 */
void spool__srv_respond(spool__srv_req *r, int status, const char *headers,
                        const char *body, size_t len);

/*
 * A streamed response instead (Server-Sent Events): the status line and
 * headers now, with no Content-Length (the body ends when the connection
 * closes); then any number of sends; then spool__srv_stream_end, which
 * releases the request and closes the connection once the data is out.
 * While streaming, the connection is read only to notice the client going
 * away. Start and send return 0, or -1 when the client is gone or too far
 * behind (more than SPOOL__SRV_STREAM_MAX_QUEUED bytes unsent: it is
 * dropped) — the caller should stop and end the stream.
 */
#define SPOOL__SRV_STREAM_MAX_QUEUED (256u << 10)
int spool__srv_stream_start(spool__srv_req *r, int status, const char *headers);
int spool__srv_stream_send(spool__srv_req *r, const char *data, size_t len);
void spool__srv_stream_end(spool__srv_req *r);

/* Drops the request without a response, closing its connection (the
 * client sees the connection end). For shutdown. */
void spool__srv_abandon(spool__srv_req *r);

#endif
