/*
 * http.h: outbound HTTP as a curl multi handle driven by a uv loop. No Lua
 * and no engine here: a transfer is started with a callback and a user
 * pointer, and the callback runs once when it ends (unless it is cancelled).
 */
#ifndef SPOOL_HTTP_H
#define SPOOL_HTTP_H

#include <stddef.h>
#include <uv.h>

#include "base/buf.h"
#include "io/netguard.h"

typedef struct spool__http spool__http;
typedef struct spool__http_xfer spool__http_xfer;
typedef struct spool__http_conns spool__http_conns;

typedef void (*spool__http_done_cb)(spool__http_xfer *x, void *ud);
typedef void (*spool__http_head_cb)(spool__http_xfer *x, void *ud);
typedef void (*spool__http_data_cb)(spool__http_xfer *x, const char *data,
                                    size_t len, void *ud);

typedef struct spool__http_request {
  const char *method; /* NULL means GET, or POST when there is a body */
  const char *url;
  const char *const *headers; /* "Name: value" lines */
  size_t nheaders;
  const char *body; /* copied; may be NULL */
  size_t body_len;
  long timeout_ms;         /* whole transfer; 0 means none */
  long connect_timeout_ms; /* 0 means curl's default */
  size_t max_response;     /* body bytes; 0 means SPOOL_HTTP_MAX_RESPONSE */
  /* Streaming: with on_data set, body bytes go to it as they arrive instead
   * of into the body buffer (max_response still bounds their total), and
   * on_head (if set) runs once the final response's headers are in. Both
   * run inside curl's callbacks, so they must not call curl; the done
   * callback still ends the transfer. They get the done callback's ud. */
  spool__http_head_cb on_head;
  spool__http_data_cb on_data;
  /* Mail (smtp://, imap://) goes through the same handle. NULL protocols
   * means "http,https"; with upload set, the body is sent as an upload
   * (an SMTP message) rather than as POST data. */
  const char *protocols;
  const char *mail_from;
  const char *const *mail_rcpt;
  size_t nrcpt;
  const char *username, *password;
  int upload;
  int require_tls; /* STARTTLS, or fail */
  /* Whose connections the transfer reuses: NULL, the handle's pool. */
  spool__http_conns *conns;
  /* Follows up to this many redirects (to the same protocols); 0: a 3xx
   * is the response. */
  long max_redirects;
  /* Agents' requests: each connection (the first, one reused, one after a
   * redirect) is checked against netguard.h's list before the request
   * goes out, with `allow` (copied) as the exceptions; a refused one ends
   * the transfer with spool__http_refused set. */
  int guard;
  const spool__net_rule *allow;
  size_t nallow;
} spool__http_request;

/*
 * A connection cache of one owner (a run): transfers given it reuse only
 * its connections. libcurl 7.88 looks for a reusable connection by
 * scanning every open connection to the host, so one pool with 10,000
 * connections to a local model costs more per request than the request.
 * Counted references: the owner's, and one per transfer using it; the
 * last to go closes its connections. It also keeps its last transfer's
 * curl handle for the next (the owner's calls follow one another), so a
 * call does not make and free a handle each time. NULL when out of memory.
 */
spool__http_conns *spool__http_conns_new(void);
void spool__http_conns_release(spool__http_conns *c);

#define SPOOL_HTTP_MAX_RESPONSE (64u << 20)

int spool__http_new(uv_loop_t *loop, spool__http **out);
/* Cancels every transfer without callbacks and closes the handles; the
 * memory goes when the loop runs the close callbacks. NULL is a no-op. */
void spool__http_free(spool__http *h);
/* Transfers in flight. */
int spool__http_pending(const spool__http *h);

/*
 * Starts a transfer. On success *out (if given) identifies it until the
 * callback returns or it is cancelled. On failure (-1, with a message in
 * err) the callback is never called.
 */
int spool__http_start(spool__http *h, const spool__http_request *r,
                      spool__http_done_cb cb, void *ud, spool__http_xfer **out,
                      char *err, size_t errlen);
/* Stops a transfer; its callback is never called. */
void spool__http_cancel(spool__http_xfer *x);

/* Results, readable inside the callbacks only (status and headers from
 * on_head on). */
/* The HTTP status of the final response, or 0 when none arrived. */
long spool__http_status(const spool__http_xfer *x);
/* NULL when the transfer completed (whatever the status), else why not. */
const char *spool__http_error(const spool__http_xfer *x);
const spool__buf *spool__http_body(const spool__http_xfer *x);
/* The final response's header lines, "Name: value\r\n" each. */
const spool__buf *spool__http_headers(const spool__http_xfer *x);
/* errors.h's name of what ended the transfer, when it did not complete:
 * EACCES (the guard refused the address), ETIMEDOUT, ECONNECT,
 * ECONNRESET, ETOOBIG or EHTTP; NULL when it completed. */
const char *spool__http_error_name(const spool__http_xfer *x);
/* Seconds from start to end of the transfer. */
double spool__http_seconds(const spool__http_xfer *x);

#endif
