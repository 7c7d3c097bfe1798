/*
 * http.c: a curl multi handle driven by a uv loop, after curl's multi-uv
 * example. curl tells us which sockets to watch (socket callback -> one
 * uv_poll_t each) and when to call it back (timer callback -> one
 * uv_timer_t); uv events go back to curl_multi_socket_action, and finished
 * transfers are read from curl_multi_info_read.
 *
 * A guarded transfer (an agent's) is checked at every connection by
 * curl's pre-request callback, which sees the address actually connected
 * to: after DNS, after each redirect, on a reused connection alike.
 *
 * This file never touches Lua, never blocks, and never calls curl from
 * inside a curl callback (but curl_easy_getinfo, which only reads).
 */
#include "io/http.h"
#include "spool.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct spool__http {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  int pending;
  int closing;
  int in_curl;    /* inside curl_multi_socket_action (and so its callbacks) */
  int ncancelled; /* transfers cancelled meanwhile, waiting to be reaped */
  spool__http_xfer *xfers; /* in flight, for spool__http_free */
};

struct spool__http_conns {
  CURLSH *share;
  CURL *spare; /* a finished transfer's handle, reset, for the next */
  int refs;
};

struct spool__http_xfer {
  spool__http *h;
  CURL *easy;
  spool__http_conns *conns;
  struct curl_slist *headers;
  struct curl_slist *rcpt;
  spool__buf upload; /* what an upload sends, and how much went */
  size_t uploaded;
  spool__http_done_cb cb;
  spool__http_head_cb on_head;
  spool__http_data_cb on_data;
  void *ud;
  size_t received;
  int head_done;
  int cancelled; /* cancelled inside a curl callback: reaped after it */
  spool__buf body;
  spool__buf resp_headers;
  size_t max_response;
  int too_big;
  uint64_t started_ns;
  uint64_t ended_ns;
  long status;
  const char *error;
  const char *error_name; /* errors.h's, from what ended it */
  spool__net_rule *allow; /* a guarded transfer's exceptions */
  size_t nallow;
  int refused;
  char errbuf[CURL_ERROR_SIZE];
  char errmsg[CURL_ERROR_SIZE + 512];
  spool__http_xfer *prev, *next;
};

typedef struct sock_ctx {
  uv_poll_t poll;
  curl_socket_t fd;
  spool__http *h;
} sock_ctx;

static void check_done(spool__http *h);

static void on_sock_closed(uv_handle_t *handle) {
  free(handle->data);
}

static void on_poll(uv_poll_t *poll, int status, int events) {
  sock_ctx *ctx = poll->data;
  spool__http *h = ctx->h;
  int flags = 0;
  if (status < 0)
    flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE)
    flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE)
    flags |= CURL_CSELECT_OUT;
  int running;
  h->in_curl++;
  curl_multi_socket_action(h->multi, ctx->fd, flags, &running);
  h->in_curl--;
  check_done(h);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp,
                     void *socketp) {
  spool__http *h = userp;
  sock_ctx *ctx = socketp;
  (void)easy;
  if (what == CURL_POLL_REMOVE) {
    if (ctx) {
      uv_poll_stop(&ctx->poll);
      curl_multi_assign(h->multi, fd, NULL);
      uv_close((uv_handle_t *)&ctx->poll, on_sock_closed);
    }
    return 0;
  }
  if (ctx == NULL) {
    ctx = calloc(1, sizeof *ctx);
    if (ctx == NULL)
      return -1;
    ctx->fd = fd;
    ctx->h = h;
    if (uv_poll_init_socket(h->loop, &ctx->poll, fd) != 0) {
      free(ctx);
      return -1;
    }
    ctx->poll.data = ctx;
    curl_multi_assign(h->multi, fd, ctx);
  }
  int events = 0;
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
    events |= UV_READABLE;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
    events |= UV_WRITABLE;
  uv_poll_start(&ctx->poll, events, on_poll);
  return 0;
}

static void on_timeout(uv_timer_t *timer) {
  spool__http *h = timer->data;
  int running;
  h->in_curl++;
  curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  h->in_curl--;
  check_done(h);
}

/* curl asks to be called back after timeout_ms; this only arms the timer. */
static int on_timer(CURLM *multi, long timeout_ms, void *userp) {
  spool__http *h = userp;
  (void)multi;
  if (h->closing)
    return 0;
  if (timeout_ms < 0)
    uv_timer_stop(&h->timer);
  else
    uv_timer_start(&h->timer, on_timeout, (uint64_t)timeout_ms, 0);
  return 0;
}

/* curl_global_init is not thread-safe before 7.84: run it once per
 * process, whichever engine comes first. */
static void global_init(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
}

int spool__http_new(uv_loop_t *loop, spool__http **out) {
  static uv_once_t once = UV_ONCE_INIT;
  *out = NULL;
  uv_once(&once, global_init);
  spool__http *h = calloc(1, sizeof *h);
  if (h == NULL)
    return -1;
  h->loop = loop;
  h->multi = curl_multi_init();
  if (h->multi == NULL || uv_timer_init(loop, &h->timer) != 0) {
    if (h->multi)
      curl_multi_cleanup(h->multi);
    free(h);
    return -1;
  }
  h->timer.data = h;
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
  *out = h;
  return 0;
}

int spool__http_pending(const spool__http *h) {
  return h ? h->pending : 0;
}

static size_t on_body(char *data, size_t size, size_t n, void *userp) {
  spool__http_xfer *x = userp;
  size_t len = size * n;
  if (x->received + len > x->max_response) {
    x->too_big = 1;
    return 0; /* makes curl fail the transfer with a write error */
  }
  x->received += len;
  if (x->cancelled)
    return len; /* its owner is gone: drop the bytes */
  if (x->on_data) {
    x->on_data(x, data, len, x->ud);
    return len;
  }
  return spool__buf_add(&x->body, data, len) == 0 ? len : 0;
}

static size_t on_header(char *data, size_t size, size_t n, void *userp) {
  spool__http_xfer *x = userp;
  size_t len = size * n;
  /* Each new status line (after a 100 Continue or a redirect) starts the
   * headers of a new response: keep only the final one's. */
  if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
    spool__buf_clear(&x->resp_headers);
    return len;
  }
  if (len == 2 && data[0] == '\r') {
    /* The end of a head: the final one unless it was a 1xx. */
    long status = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && !x->head_done) {
      x->head_done = 1;
      x->status = status;
      if (x->on_head && !x->cancelled)
        x->on_head(x, x->ud);
    }
    return len;
  }
  if (x->resp_headers.len + len > (256u << 10))
    return 0;
  return spool__buf_add(&x->resp_headers, data, len) == 0 ? len : 0;
}

static size_t on_read(char *dest, size_t size, size_t n, void *userp) {
  spool__http_xfer *x = userp;
  size_t left = x->upload.len - x->uploaded, len = size * n;
  if (len > left)
    len = left;
  memcpy(dest, x->upload.data + x->uploaded, len);
  x->uploaded += len;
  return len;
}

/* The URL as a refusal shows it: no user or password, nothing past the
 * path (a query may hold a token), at most ~200 bytes. */
static void shown_url(const char *url, char *out, size_t len) {
  const char *scheme = url ? strstr(url, "://") : NULL;
  if (scheme == NULL) {
    snprintf(out, len, "the URL");
    return;
  }
  const char *host = scheme + 3;
  size_t auth = strcspn(host, "/?#");
  const char *rest = host; /* past the last '@' of the authority */
  for (size_t i = 0; i < auth; i++)
    if (host[i] == '@')
      rest = host + i + 1;
  int n = (int)strcspn(rest, "?#");
  snprintf(out, len, "%.*s%.*s%s", (int)(host - url), url, n > 200 ? 200 : n,
           rest, n > 200 ? "..." : "");
}

#if LIBCURL_VERSION_NUM >= 0x075000
/* curl's pre-request callback: the connection is made (or reused), the
 * request not sent. */
static int on_prereq(void *ud, char *ip, char *local_ip, int port,
                     int local_port) {
  spool__http_xfer *x = ud;
  char why[400], url[256];
  (void)local_port;
  if (spool__net_check(x->allow, x->nallow, ip, local_ip, port, why,
                       sizeof why) == NULL)
    return CURL_PREREQFUNC_OK;
  char *effective = NULL;
  curl_easy_getinfo(x->easy, CURLINFO_EFFECTIVE_URL, &effective);
  shown_url(effective, url, sizeof url);
  snprintf(x->errmsg, sizeof x->errmsg, "%s %s", url, why);
  x->refused = 1;
  return CURL_PREREQFUNC_ABORT;
}
#endif

static void unlink_xfer(spool__http_xfer *x) {
  spool__http *h = x->h;
  if (x->prev)
    x->prev->next = x->next;
  else
    h->xfers = x->next;
  if (x->next)
    x->next->prev = x->prev;
  h->pending--;
}

spool__http_conns *spool__http_conns_new(void) {
  spool__http_conns *c = calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  c->share = curl_share_init();
  if (c->share == NULL ||
      curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) !=
          CURLSHE_OK) {
    if (c->share)
      curl_share_cleanup(c->share);
    free(c);
    return NULL;
  }
  c->refs = 1;
  return c;
}

void spool__http_conns_release(spool__http_conns *c) {
  if (c && --c->refs == 0) {
    curl_easy_cleanup(c->spare);  /* a share in use cannot be cleaned up */
    curl_share_cleanup(c->share); /* closes its idle connections */
    free(c);
  }
}

/* A handle for a new transfer: the owner's spare (reset to no options but
 * the share), or a new one. */
static CURL *easy_for(spool__http_conns *c) {
  if (c && c->spare) {
    CURL *easy = c->spare;
    c->spare = NULL;
    return easy;
  }
  return curl_easy_init();
}

static void free_xfer(spool__http_xfer *x) {
  spool__http_conns *c = x->conns;
  if (c && c->spare == NULL && c->refs > 1 && x->easy) {
    curl_easy_reset(x->easy);
    c->spare = x->easy;
  } else {
    curl_easy_cleanup(x->easy);
  }
  spool__http_conns_release(c);
  curl_slist_free_all(x->headers);
  curl_slist_free_all(x->rcpt);
  spool__buf_free(&x->upload);
  spool__buf_free(&x->body);
  spool__buf_free(&x->resp_headers);
  free(x->allow);
  free(x);
}

int spool__http_start(spool__http *h, const spool__http_request *r,
                      spool__http_done_cb cb, void *ud, spool__http_xfer **out,
                      char *err, size_t errlen) {
  spool__http_xfer *x = calloc(1, sizeof *x);
  if (x == NULL || (x->easy = easy_for(r->conns)) == NULL) {
    free(x);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  x->h = h;
  x->cb = cb;
  x->on_head = r->on_head;
  x->on_data = r->on_data;
  x->ud = ud;
  x->max_response = r->max_response ? r->max_response : SPOOL_HTTP_MAX_RESPONSE;
  CURL *c = x->easy;
  for (size_t i = 0; i < r->nheaders; i++) {
    struct curl_slist *l = curl_slist_append(x->headers, r->headers[i]);
    if (l == NULL)
      goto nomem;
    x->headers = l;
  }
  /* Without this curl waits up to a second for "100 Continue" on large
   * bodies, which servers rarely send. */
  struct curl_slist *l = curl_slist_append(x->headers, "Expect:");
  if (l == NULL)
    goto nomem;
  x->headers = l;
  curl_easy_setopt(c, CURLOPT_URL, r->url);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, x->headers);
  curl_easy_setopt(c, CURLOPT_PRIVATE, x);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, x->errbuf);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "spool/" SPOOL_VERSION);
  curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
  const char *protocols = r->protocols ? r->protocols : "http,https";
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, protocols);
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, protocols);
  if (r->max_redirects > 0) {
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, r->max_redirects);
  }
  if (r->guard) {
#if LIBCURL_VERSION_NUM >= 0x075000
    if (r->nallow) {
      x->allow = malloc(r->nallow * sizeof *x->allow);
      if (x->allow == NULL)
        goto nomem;
      memcpy(x->allow, r->allow, r->nallow * sizeof *x->allow);
      x->nallow = r->nallow;
    }
    curl_easy_setopt(c, CURLOPT_PREREQFUNCTION, on_prereq);
    curl_easy_setopt(c, CURLOPT_PREREQDATA, x);
#else
    snprintf(err, errlen,
             "libcurl older than 7.80 cannot check the "
             "addresses agents reach");
    free_xfer(x);
    return -1;
#endif
  }
  for (size_t i = 0; i < r->nrcpt; i++) {
    struct curl_slist *rl = curl_slist_append(x->rcpt, r->mail_rcpt[i]);
    if (rl == NULL)
      goto nomem;
    x->rcpt = rl;
  }
  if (r->mail_from)
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, r->mail_from);
  if (x->rcpt)
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, x->rcpt);
  if (r->username)
    curl_easy_setopt(c, CURLOPT_USERNAME, r->username);
  if (r->password)
    curl_easy_setopt(c, CURLOPT_PASSWORD, r->password);
  if (r->require_tls)
    curl_easy_setopt(c, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);
  if (r->upload) {
    if (r->body && spool__buf_add(&x->upload, r->body, r->body_len) != 0)
      goto nomem;
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(c, CURLOPT_READDATA, x);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)x->upload.len);
  } else if (r->body) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    curl_easy_setopt(c, CURLOPT_COPYPOSTFIELDS, r->body);
  }
  if (r->conns) {
    curl_easy_setopt(c, CURLOPT_SHARE, r->conns->share);
    x->conns = r->conns;
    r->conns->refs++;
  }
  /* A custom method holds for every request of a redirect chain; GET
   * without a body and POST with one are curl's own, and it follows a 303
   * (or a 302 after a POST) with a GET, as browsers do. */
  int own_method = r->method && !r->upload &&
                   ((!r->body && strcmp(r->method, "GET") == 0) ||
                    (r->body && strcmp(r->method, "POST") == 0));
  if (r->method && !(r->max_redirects > 0 && own_method))
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
  if (r->timeout_ms > 0)
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, r->timeout_ms);
  if (r->connect_timeout_ms > 0)
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, r->connect_timeout_ms);
  x->started_ns = uv_hrtime();
  CURLMcode mc = curl_multi_add_handle(h->multi, c);
  if (mc != CURLM_OK) {
    snprintf(err, errlen, "curl: %s", curl_multi_strerror(mc));
    free_xfer(x);
    return -1;
  }
  x->next = h->xfers;
  if (h->xfers)
    h->xfers->prev = x;
  h->xfers = x;
  h->pending++;
  if (out)
    *out = x;
  return 0;
nomem:
  snprintf(err, errlen, "out of memory");
  free_xfer(x);
  return -1;
}

/* Frees the transfers cancelled while curl was calling us back. */
static void reap_cancelled(spool__http *h) {
  if (h->ncancelled == 0)
    return; /* the usual case: no walk over every transfer in flight */
  h->ncancelled = 0;
  spool__http_xfer *x = h->xfers;
  while (x) {
    spool__http_xfer *next = x->next;
    if (x->cancelled) {
      curl_multi_remove_handle(h->multi, x->easy);
      unlink_xfer(x);
      free_xfer(x);
    }
    x = next;
  }
}

/* errors.h's name for what curl says ended a transfer. */
static const char *name_of(CURLcode rc) {
  switch (rc) {
  case CURLE_OPERATION_TIMEDOUT:
    return "ETIMEDOUT";
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_CONNECT:
    return "ECONNECT";
  case CURLE_FILESIZE_EXCEEDED:
    return "ETOOBIG";
  case CURLE_PARTIAL_FILE:
  case CURLE_GOT_NOTHING:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
    return "ECONNRESET";
  default:
    return "EHTTP";
  }
}

static void check_done(spool__http *h) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
    if (msg->msg != CURLMSG_DONE)
      continue;
    spool__http_xfer *x = NULL;
    CURLcode rc = msg->data.result;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
    curl_multi_remove_handle(h->multi, x->easy);
    unlink_xfer(x);
    x->ended_ns = uv_hrtime();
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
    if (x->refused) {
      x->error = x->errmsg; /* on_prereq wrote why */
      x->error_name = "EACCES";
    } else if (x->too_big) {
      snprintf(x->errmsg, sizeof x->errmsg,
               "response body larger than %zu bytes", x->max_response);
      x->error = x->errmsg;
      x->error_name = "ETOOBIG";
    } else if (rc != CURLE_OK) {
      snprintf(x->errmsg, sizeof x->errmsg, "%s",
               x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
      x->error = x->errmsg;
      x->error_name = name_of(rc);
    }
    if (!x->cancelled)
      x->cb(x, x->ud);
    free_xfer(x);
  }
  reap_cancelled(h);
}

void spool__http_cancel(spool__http_xfer *x) {
  spool__http *h = x->h;
  if (h->in_curl) {
    /* A finalizer run by a callback's allocation: curl may not be called
     * from here (removing the handle would fail and leave it attached). */
    if (!x->cancelled)
      h->ncancelled++;
    x->cancelled = 1;
    return;
  }
  curl_multi_remove_handle(h->multi, x->easy);
  unlink_xfer(x);
  free_xfer(x);
}

static void on_timer_closed(uv_handle_t *handle) {
  free(handle->data);
}

void spool__http_free(spool__http *h) {
  if (h == NULL)
    return;
  h->in_curl = 0; /* never freed from a callback: cancel right away */
  while (h->xfers)
    spool__http_cancel(h->xfers);
  /* Cleanup closes the cached connections, which calls on_socket with
   * CURL_POLL_REMOVE for each: their polls close while h is still alive. */
  curl_multi_cleanup(h->multi);
  h->closing = 1;
  uv_close((uv_handle_t *)&h->timer, on_timer_closed);
}

long spool__http_status(const spool__http_xfer *x) {
  return x->status;
}

const char *spool__http_error(const spool__http_xfer *x) {
  return x->error;
}

const spool__buf *spool__http_body(const spool__http_xfer *x) {
  return &x->body;
}

const spool__buf *spool__http_headers(const spool__http_xfer *x) {
  return &x->resp_headers;
}

const char *spool__http_error_name(const spool__http_xfer *x) {
  return x->error_name;
}

double spool__http_seconds(const spool__http_xfer *x) {
  return (double)(x->ended_ns - x->started_ns) / 1e9;
}
