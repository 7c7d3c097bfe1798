/*
 * server_parse.h: reading requests for server.c. http-parser's callbacks
 * assemble a spool__srv_req from whatever pieces the bytes arrive in. No
 * sockets and no uv here, so the parser is fuzzed on its own
 * (engine/test/fuzz/fuzz_server.c).
 */
#ifndef SPOOL_SERVER_PARSE_H
#define SPOOL_SERVER_PARSE_H

#include <http_parser.h>
#include <stddef.h>

#include "base/buf.h"
#include "io/server.h"

struct conn;

struct spool__srv_req {
  struct conn *c; /* server.c's connection; NULL once it is gone */
  char method[16];
  spool__buf target;
  spool__buf hdrs;    /* name\0value\0 pairs */
  const char **index; /* name, value, ..., NULL: built once, at the end of
                         the headers; never touched after */
  int nheaders;
  int hstate;
  spool__buf body;
  int too_big;
  int keep_alive;
  int streaming;
  void *user;
  char peer[48];
};

typedef struct spool__srv_parser {
  http_parser parser;
  spool__srv_req *req; /* being read (owned here) until taken */
  size_t max_body;
  char peer[48];   /* copied into each request */
  int complete;    /* req is whole; nothing more is read until it is taken */
  int status;      /* after a failure: 400 or 413 */
  const char *why; /* after a failure: a static message for the client */
} spool__srv_parser;

void spool__srv_parser_init(spool__srv_parser *sp, size_t max_body,
                            const char *peer);

/*
 * Reads from data[0..len). Returns the number of bytes used, which is less
 * than len when a request is complete (sp->complete; the rest belongs to
 * the next request), or -1 when the bytes are no request: sp->status and
 * sp->why say what to answer, and the connection must not be read again.
 */
long spool__srv_parse(spool__srv_parser *sp, const char *data, size_t len);

/* Hands over the complete request (the caller frees it with
 * spool__srv_req_free); reading goes on with the next one. */
spool__srv_req *spool__srv_parser_take(spool__srv_parser *sp);

/* Frees a request still being read. */
void spool__srv_parser_free(spool__srv_parser *sp);

/* Is a request partly read (bytes of it seen, not complete)? */
int spool__srv_parser_busy(const spool__srv_parser *sp);

void spool__srv_req_free(spool__srv_req *r);

#endif
