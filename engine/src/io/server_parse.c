/*
 * server_parse.c: http-parser's callbacks, building one spool__srv_req at
 * a time, and the request's accessors (server.h). The bytes may arrive in
 * any pieces; what the handler sees must not depend on how they were cut
 * (the fuzz target checks exactly that). No sockets here.
 *
 * What a request may not carry is refused here, before any handler runs:
 * trailers never reach it, no header value may hide a NUL, and headers
 * that decide where a request goes, who sent it or where its body ends
 * may appear only once.
 */
#include "io/server_parse.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { H_NONE, H_FIELD, H_VALUE };

void spool__srv_req_free(spool__srv_req *r) {
  if (r == NULL)
    return;
  spool__buf_free(&r->target);
  spool__buf_free(&r->hdrs);
  spool__buf_free(&r->body);
  free(r->index);
  free(r);
}

static int on_message_begin(http_parser *p) {
  spool__srv_parser *sp = p->data;
  if (sp->req == NULL) {
    sp->req = calloc(1, sizeof *sp->req);
    if (sp->req == NULL)
      return -1;
    memcpy(sp->req->peer, sp->peer, sizeof sp->peer);
  }
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  spool__srv_parser *sp = p->data;
  return spool__buf_add(&sp->req->target, at, len);
}

/* After the headers, http-parser reports a chunked body's trailer fields
 * through these same callbacks. They are dropped (RFC 9112 7.1.2 lets a
 * recipient discard them): the index is built by then, and nothing spool
 * serves reads trailers. Merging them would let a field sent after the
 * body, which a proxy in front may never have checked, stand in for a
 * header. */
static int on_header_field(http_parser *p, const char *at, size_t len) {
  spool__srv_req *r = ((spool__srv_parser *)p->data)->req;
  if (r->index != NULL)
    return 0; /* a trailer */
  if (r->hstate == H_VALUE && spool__buf_addc(&r->hdrs, '\0') != 0)
    return -1;
  if (r->hstate != H_FIELD)
    r->nheaders++;
  r->hstate = H_FIELD;
  for (size_t i = 0; i < len; i++) {
    char ch = at[i];
    if (ch >= 'A' && ch <= 'Z')
      ch = (char)(ch - 'A' + 'a');
    if (spool__buf_addc(&r->hdrs, ch) != 0)
      return -1;
  }
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  spool__srv_parser *sp = p->data;
  spool__srv_req *r = sp->req;
  if (r->index != NULL)
    return 0; /* a trailer */
  /* http-parser lets a NUL through as a value's first byte. The index
   * splits on NUL, so what followed would become a header of its own (an
   * Authorization no proxy in front saw): refused, as RFC 9110 5.5 says. */
  if (memchr(at, '\0', len) != NULL) {
    sp->why = "NUL byte in a header value";
    return -1;
  }
  if (r->hstate == H_FIELD && spool__buf_addc(&r->hdrs, '\0') != 0)
    return -1;
  r->hstate = H_VALUE;
  return spool__buf_add(&r->hdrs, at, len);
}

/* Headers that must appear at most once. Two Hosts or two Authorizations
 * would let a proxy in front check one while the handler read the other
 * ("last wins"); two framings of the body are how requests are smuggled
 * past a proxy. */
static const char *const once[] = {"host", "authorization", "content-length",
                                   "transfer-encoding"};
static const char *const twice[] = {
    "duplicate Host header", "duplicate Authorization header",
    "duplicate Content-Length header", "duplicate Transfer-Encoding header"};

static const char *check_headers(const spool__srv_req *r) {
  int seen[4] = {0};
  for (int i = 0; i < r->nheaders; i++)
    for (int k = 0; k < 4; k++)
      if (strcmp(r->index[2 * i], once[k]) == 0 && seen[k]++ > 0)
        return twice[k];
  if (seen[2] && seen[3])
    return "both Content-Length and Transfer-Encoding";
  return NULL;
}

static int on_headers_complete(http_parser *p) {
  spool__srv_parser *sp = p->data;
  spool__srv_req *r = sp->req;
  if (r->hstate == H_VALUE && spool__buf_addc(&r->hdrs, '\0') != 0)
    return -1;
  if (r->hstate == H_FIELD && spool__buf_add(&r->hdrs, "\0", 2) != 0)
    return -1; /* a name with no value at all */
  r->index = calloc((size_t)r->nheaders * 2 + 1, sizeof *r->index);
  if (r->index == NULL)
    return -1;
  const char *q = r->hdrs.data;
  for (int i = 0; i < r->nheaders * 2; i++) {
    r->index[i] = q;
    q += strlen(q) + 1;
  }
  if ((sp->why = check_headers(r)) != NULL)
    return -1;
  snprintf(r->method, sizeof r->method, "%s",
           http_method_str((enum http_method)p->method));
  r->keep_alive = http_should_keep_alive(p);
  /* A body announced too big is refused now, not after it was sent. */
  if (p->content_length != ULLONG_MAX && p->content_length > sp->max_body) {
    r->too_big = 1;
    return -1;
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  spool__srv_parser *sp = p->data;
  spool__srv_req *r = sp->req;
  if (r->body.len + len > sp->max_body) {
    r->too_big = 1;
    return -1;
  }
  return spool__buf_add(&r->body, at, len);
}

static int on_message_complete(http_parser *p) {
  spool__srv_parser *sp = p->data;
  sp->complete = 1;
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void spool__srv_parser_init(spool__srv_parser *sp, size_t max_body,
                            const char *peer) {
  memset(sp, 0, sizeof *sp);
  http_parser_init(&sp->parser, HTTP_REQUEST);
  sp->parser.data = sp;
  sp->max_body = max_body;
  snprintf(sp->peer, sizeof sp->peer, "%s", peer ? peer : "");
}

long spool__srv_parse(spool__srv_parser *sp, const char *data, size_t len) {
  if (sp->status != 0)
    return -1;
  /* No bytes would tell http-parser the stream ended. */
  if (sp->complete || len == 0)
    return 0;
  size_t n = http_parser_execute(&sp->parser, &settings, data, len);
  enum http_errno err = HTTP_PARSER_ERRNO(&sp->parser);
  if (err == HPE_OK || err == HPE_PAUSED)
    return (long)n;
  if (sp->req && sp->req->too_big) {
    sp->status = 413;
    sp->why = "request body too large";
  } else if (err == HPE_HEADER_OVERFLOW) {
    sp->status = 431;
    sp->why = "request headers too large";
  } else {
    sp->status = 400;
    if (sp->why == NULL)
      sp->why = http_errno_description(err);
  }
  spool__srv_parser_free(sp);
  return -1;
}

spool__srv_req *spool__srv_parser_take(spool__srv_parser *sp) {
  spool__srv_req *r = sp->req;
  sp->req = NULL;
  sp->complete = 0;
  http_parser_pause(&sp->parser, 0);
  return r;
}

void spool__srv_parser_free(spool__srv_parser *sp) {
  spool__srv_req_free(sp->req);
  sp->req = NULL;
  sp->complete = 0;
}

int spool__srv_parser_busy(const spool__srv_parser *sp) {
  return sp->req != NULL && !sp->complete;
}

/* ---- the request's accessors (server.h) ---- */

const char *spool__srv_req_method(const spool__srv_req *r) {
  return r->method;
}

const char *spool__srv_req_target(const spool__srv_req *r) {
  return r->target.data ? r->target.data : "";
}

const char *spool__srv_req_header(const spool__srv_req *r, int i,
                                  const char **value) {
  if (i < 0 || i >= r->nheaders)
    return NULL;
  *value = r->index[2 * i + 1];
  return r->index[2 * i];
}

const char *spool__srv_req_body(const spool__srv_req *r, size_t *len) {
  *len = r->body.len;
  return r->body.data ? r->body.data : "";
}

const char *spool__srv_req_peer(const spool__srv_req *r) {
  return r->peer;
}

int spool__srv_req_streaming(const spool__srv_req *r) {
  return r->streaming;
}

void *spool__srv_req_user(const spool__srv_req *r) {
  return r->user;
}

void spool__srv_req_set_user(spool__srv_req *r, void *user) {
  r->user = user;
}
