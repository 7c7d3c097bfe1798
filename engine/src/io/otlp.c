/*
 * otlp.c: the span exporter (otlp.h). Spans wait in batches: the one
 * filling, then those ready to send, oldest first; one request is out at a
 * time. A batch is sent when it is full or when its first span has waited
 * the schedule delay. A request that fails in a way the OTLP specification
 * calls retryable (429, 502, 503, 504, or no answer at all) is sent again
 * after the server's Retry-After or an exponential backoff with jitter, up
 * to MAX_ATTEMPTS times; any other failure (a 400 above all) drops the
 * batch at once. While a batch waits to be retried, new spans queue up to
 * the limits, and past them are dropped and counted: a collector that is
 * down or slow costs the engine a bounded amount of memory and no time.
 */
#include "io/otlp.h"
#include "io/otlp_config.h"
#include "spool.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_ATTEMPTS 5
#define BACKOFF_BASE_MS 1000
#define BACKOFF_MAX_MS 30000
#define RETRY_AFTER_MAX_MS 60000
/* A collector's answer is small ({} or a status); more is not read. */
#define MAX_RESPONSE (4u << 20)
/* A batch is sent once it holds this much (or OTEL_BSP_MAX_EXPORT_BATCH_SIZE
 * spans): well under the bodies collectors take (the Collector's default
 * is 20 MiB), and two copies of it at most are held while it is sent. */
#define MAX_BATCH_BYTES (4u << 20)

typedef struct batch {
  struct batch *next;
  spool__buf body; /* the envelope's head, then the spans, comma-separated */
  long n;
} batch;

struct spool__otlp {
  uv_loop_t *loop;
  spool__http *http;
  spool__otlp_config c;
  spool__otlp_warn_cb warn;
  void *warn_ud;
  spool__buf head; /* what every request body starts with */
  batch *filling;
  batch *ready, *ready_tail;
  batch *sending; /* out now, or waiting to be retried */
  spool__http_xfer *xfer;
  int attempt;     /* of `sending` */
  int backing_off; /* the timer waits to retry `sending` */
  int timer_armed;
  uv_timer_t timer;
  long long queued; /* spans in filling, ready and sending */
  size_t queued_bytes;
  spool__otlp_stats stats;
  int closing;
  uint64_t deadline_ms;
  long last_logged_status; /* the last failure logged, not to repeat it */
  int freed;
  uint64_t rng;
};

static const char TAIL[] = "]}]}]}";

static void warnf(spool__otlp *x, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void warnf(spool__otlp *x, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (x->warn)
    x->warn(x->warn_ud, msg);
}

int spool__otlp_new(uv_loop_t *loop, spool__http *http, spool__otlp **out,
                    spool__otlp_warn_cb warn, void *ud) {
  *out = NULL;
  spool__otlp *x = calloc(1, sizeof *x);
  if (x == NULL)
    return -1;
  x->loop = loop;
  x->http = http;
  x->warn = warn;
  x->warn_ud = ud;
  x->rng = uv_hrtime() ^ (uint64_t)(uintptr_t)x;
  if (spool__otlp_config_read(&x->c, warn, ud) != 0 ||
      spool__buf_adds(&x->head, "{\"resourceSpans\":[{\"resource\":") != 0 ||
      spool__buf_add(&x->head, x->c.resource.data, x->c.resource.len) != 0 ||
      spool__buf_adds(&x->head,
                      ",\"scopeSpans\":[{\"scope\":{\"name\":\"spool\","
                      "\"version\":\"" SPOOL_VERSION "\"},\"schemaUrl\":"
                      "\"https://opentelemetry.io/schemas/1.41.0\","
                      "\"spans\":[") != 0) {
    spool__otlp_config_free(&x->c);
    spool__buf_free(&x->head);
    free(x);
    return -1;
  }
  uv_timer_init(loop, &x->timer);
  x->timer.data = x;
  uv_unref((uv_handle_t *)&x->timer); /* it never keeps a loop alive */
  *out = x;
  return 0;
}

static void free_batch(batch *b) {
  if (b) {
    spool__buf_free(&b->body);
    free(b);
  }
}

static void forget(spool__otlp *x, batch *b, int dropped) {
  x->queued -= b->n;
  x->queued_bytes -= b->body.len;
  if (dropped)
    x->stats.dropped += b->n;
  free_batch(b);
}

static void on_timer_closed(uv_handle_t *h) {
  spool__otlp *x = h->data;
  spool__otlp_config_free(&x->c);
  spool__buf_free(&x->head);
  free(x);
}

void spool__otlp_free(spool__otlp *x) {
  if (x == NULL)
    return;
  if (x->xfer)
    spool__http_cancel(x->xfer);
  free_batch(x->filling);
  free_batch(x->sending);
  while (x->ready) {
    batch *b = x->ready;
    x->ready = b->next;
    free_batch(b);
  }
  x->freed = 1;
  uv_close((uv_handle_t *)&x->timer, on_timer_closed);
}

int spool__otlp_exports(const spool__otlp *x) {
  return x != NULL && x->c.url != NULL;
}

/* ---- sending ---- */

static void pump(spool__otlp *x);

static void arm(spool__otlp *x, uint64_t ms);

static void seal(spool__otlp *x) {
  batch *b = x->filling;
  if (b == NULL)
    return;
  x->filling = NULL;
  b->next = NULL;
  if (x->ready_tail)
    x->ready_tail->next = b;
  else
    x->ready = b;
  x->ready_tail = b;
}

static long header_retry_after_ms(const spool__buf *headers) {
  if (headers == NULL || headers->data == NULL)
    return -1;
  const char *p = headers->data;
  while (p && *p) {
    if (strncasecmp(p, "Retry-After:", 12) == 0) {
      p += 12;
      while (*p == ' ' || *p == '\t')
        p++;
      char value[128];
      size_t n = strcspn(p, "\r\n");
      if (n >= sizeof value)
        return -1;
      memcpy(value, p, n);
      value[n] = '\0';
      char *end;
      long s = strtol(value, &end, 10);
      if (end != value && *end == '\0' && s >= 0)
        return s > RETRY_AFTER_MAX_MS / 1000 ? RETRY_AFTER_MAX_MS : s * 1000;
      time_t when = curl_getdate(value, NULL); /* an HTTP-date */
      if (when < 0)
        return -1;
      long ms = (long)(when - time(NULL)) * 1000;
      return ms < 0 ? 0 : ms > RETRY_AFTER_MAX_MS ? RETRY_AFTER_MAX_MS : ms;
    }
    p = strchr(p, '\n');
    p = p ? p + 1 : NULL;
  }
  return -1;
}

static uint64_t next_random(spool__otlp *x) {
  uint64_t z = (x->rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* The spans a 200 answer says were refused (partialSuccess). */
static long rejected_spans(const spool__buf *body) {
  if (body == NULL || body->data == NULL)
    return 0;
  const char *p = strstr(body->data, "\"rejectedSpans\"");
  if (p == NULL)
    return 0;
  p += strlen("\"rejectedSpans\"");
  while (*p == ' ' || *p == ':' || *p == '"')
    p++;
  long n = strtol(p, NULL, 10);
  return n > 0 ? n : 0;
}

/* status 0: no answer, for `why`. A failure is said once until exports
 * work again (a collector that is down says so once), and again when what
 * became of the spans changes (retried, then dropped). */
static void log_failure(spool__otlp *x, long status, const char *why,
                        const spool__buf *body, const char *outcome) {
  long key = (status ? status : -1) * 4 + (outcome[0] == 'r' ? 1 : 2);
  if (key == x->last_logged_status)
    return;
  x->last_logged_status = key;
  char msg[256] = "";
  if (body && body->data && body->len) {
    size_t n = body->len < 200 ? body->len : 200;
    size_t j = 0;
    for (size_t i = 0; i < n && j + 1 < sizeof msg; i++) {
      unsigned char c = (unsigned char)body->data[i];
      msg[j++] = c < 0x20 || c >= 0x7f ? '?' : (char)c; /* a log line */
    }
    msg[j] = '\0';
  }
  if (status)
    warnf(x, "exporting spans to %s: HTTP %ld%s%s; %s", x->c.url_shown, status,
          *msg ? ": " : "", msg, outcome);
  else
    warnf(x, "exporting spans to %s: %s; %s", x->c.url_shown, why, outcome);
}

static void on_sent(spool__http_xfer *xfer, void *ud) {
  spool__otlp *x = ud;
  x->xfer = NULL;
  batch *b = x->sending;
  long status = spool__http_status(xfer);
  const char *error = spool__http_error(xfer);
  const char *name = spool__http_error_name(xfer);
  if (status >= 200 && status < 300 &&
      (error == NULL || (name && strcmp(name, "ETOOBIG") == 0))) {
    /* (an answer too long to read still says the spans were taken) */
    long rejected = rejected_spans(spool__http_body(xfer));
    if (rejected > b->n)
      rejected = b->n;
    x->stats.exported += b->n - rejected;
    x->stats.rejected += rejected;
    if (x->last_logged_status != 0)
      warnf(x, "exporting spans to %s works again", x->c.url_shown);
    x->last_logged_status = 0;
    x->sending = NULL;
    forget(x, b, 0);
    pump(x);
    return;
  }
  x->stats.failures++;
  int retryable = error != NULL ? name == NULL || strcmp(name, "ETOOBIG") != 0
                                : status == 429 || status == 502 ||
                                      status == 503 || status == 504;
  long wait = -1;
  if (retryable && x->attempt < MAX_ATTEMPTS) {
    wait = error ? -1 : header_retry_after_ms(spool__http_headers(xfer));
    if (wait < 0) {
      long d = BACKOFF_BASE_MS << (x->attempt - 1);
      if (d > BACKOFF_MAX_MS)
        d = BACKOFF_MAX_MS;
      wait = d / 2 + (long)(next_random(x) % (uint64_t)(d / 2 + 1));
    }
    if (x->closing &&
        (error != NULL || uv_now(x->loop) + (uint64_t)wait >= x->deadline_ms))
      wait = -1; /* the process exits first */
  }
  if (wait < 0) {
    log_failure(x, status, error, spool__http_body(xfer),
                retryable ? "its spans are dropped after the retries"
                          : "its spans are dropped (not retryable)");
    x->sending = NULL;
    forget(x, b, 1);
    pump(x);
    return;
  }
  log_failure(x, status, error, spool__http_body(xfer), "retrying");
  x->stats.retries++;
  x->backing_off = 1;
  arm(x, (uint64_t)wait);
}

static void send_batch(spool__otlp *x) {
  batch *b = x->sending;
  x->attempt++;
  if (b->body.len < sizeof TAIL ||
      memcmp(b->body.data + b->body.len - (sizeof TAIL - 1), TAIL,
             sizeof TAIL - 1) != 0) {
    if (spool__buf_add(&b->body, TAIL, sizeof TAIL - 1) != 0) {
      x->sending = NULL;
      forget(x, b, 1);
      return;
    }
    x->queued_bytes += sizeof TAIL - 1;
  }
  spool__http_request r = {0};
  r.method = "POST";
  r.url = x->c.url;
  r.headers = (const char *const *)x->c.headers;
  r.nheaders = x->c.nheaders;
  r.body = b->body.data;
  r.body_len = b->body.len;
  r.timeout_ms = x->c.timeout_ms;
  r.max_response = MAX_RESPONSE;
  char err[256];
  if (spool__http_start(x->http, &r, on_sent, x, &x->xfer, err, sizeof err) !=
      0) {
    x->stats.failures++;
    log_failure(x, 0, err, NULL, "its spans are dropped");
    x->sending = NULL;
    forget(x, b, 1);
  }
}

static void pump(spool__otlp *x) {
  while (!x->freed && x->sending == NULL && x->ready) {
    x->sending = x->ready;
    x->ready = x->ready->next;
    if (x->ready == NULL)
      x->ready_tail = NULL;
    x->attempt = 0;
    send_batch(x);
  }
  if (x->filling && !x->timer_armed && !x->backing_off)
    arm(x, x->closing ? 0 : (uint64_t)x->c.schedule_delay_ms);
}

static void on_timer(uv_timer_t *t) {
  spool__otlp *x = t->data;
  x->timer_armed = 0;
  if (x->backing_off) {
    x->backing_off = 0;
    send_batch(x);
    if (x->sending == NULL)
      pump(x);
    return;
  }
  seal(x);
  pump(x);
}

static void arm(spool__otlp *x, uint64_t ms) {
  x->timer_armed = 1;
  uv_timer_start(&x->timer, on_timer, ms, 0);
}

/* ---- what the engine calls ---- */

void spool__otlp_add(spool__otlp *x, const char *span, size_t len) {
  if (x == NULL || x->c.url == NULL)
    return;
  if (x->queued >= x->c.max_queue ||
      x->queued_bytes + len + x->head.len > x->c.max_queue_bytes) {
    x->stats.dropped++;
    return;
  }
  batch *b = x->filling;
  if (b == NULL) {
    if ((b = calloc(1, sizeof *b)) == NULL ||
        spool__buf_add(&b->body, x->head.data, x->head.len) != 0) {
      free_batch(b);
      x->stats.dropped++;
      return;
    }
    x->filling = b;
    x->queued_bytes += b->body.len;
  }
  size_t before = b->body.len;
  if ((b->n > 0 && spool__buf_addc(&b->body, ',') != 0) ||
      spool__buf_add(&b->body, span, len) != 0) {
    b->body.len = before;
    x->stats.dropped++;
    return;
  }
  x->queued_bytes += b->body.len - before;
  b->n++;
  x->queued++;
  if (b->n >= x->c.max_batch || b->body.len >= MAX_BATCH_BYTES)
    seal(x);
  pump(x);
}

void spool__otlp_flush(spool__otlp *x) {
  if (x == NULL)
    return;
  seal(x);
  pump(x);
}

int spool__otlp_busy(const spool__otlp *x) {
  return x != NULL && x->queued > 0;
}

uint64_t spool__otlp_closing(spool__otlp *x) {
  uv_update_time(x->loop);
  x->closing = 1;
  x->deadline_ms = uv_now(x->loop) + (uint64_t)x->c.export_timeout_ms;
  uv_ref((uv_handle_t *)&x->timer); /* the caller's loop turns for it */
  if (x->backing_off && x->timer_armed &&
      uv_now(x->loop) + uv_timer_get_due_in(&x->timer) >= x->deadline_ms) {
    uv_timer_stop(&x->timer);
    x->timer_armed = x->backing_off = 0;
    batch *b = x->sending;
    x->sending = NULL;
    forget(x, b, 1);
  }
  spool__otlp_flush(x);
  return x->deadline_ms;
}

void spool__otlp_abandon(spool__otlp *x) {
  if (x == NULL)
    return;
  if (x->xfer) {
    spool__http_cancel(x->xfer);
    x->xfer = NULL;
  }
  uv_timer_stop(&x->timer);
  x->timer_armed = x->backing_off = 0;
  if (x->sending) {
    batch *b = x->sending;
    x->sending = NULL;
    forget(x, b, 1);
  }
  seal(x);
  while (x->ready) {
    batch *b = x->ready;
    x->ready = b->next;
    forget(x, b, 1);
  }
  x->ready_tail = NULL;
}

void spool__otlp_stats_get(const spool__otlp *x, spool__otlp_stats *out) {
  memset(out, 0, sizeof *out);
  if (x) {
    *out = x->stats;
    out->queued = x->queued;
  }
}

/* ---- sampling ---- */

int spool__otlp_ratio_sample(double ratio, const unsigned char id[16]) {
  if (ratio >= 1.0)
    return 1;
  if (ratio <= 0.0)
    return 0;
  uint64_t r = 0;
  for (int i = 9; i < 16; i++)
    r = r << 8 | id[i];
  double threshold = (1.0 - ratio) * 72057594037927936.0; /* 2^56 */
  return (double)r >= threshold;
}

int spool__otlp_sample(const spool__otlp *x, const unsigned char id[16]) {
  switch (x->c.root) {
  case SPOOL__SAMPLE_OFF:
    return 0;
  case SPOOL__SAMPLE_RATIO:
    return spool__otlp_ratio_sample(x->c.ratio, id);
  default:
    return 1;
  }
}

int spool__otlp_parent_based(const spool__otlp *x) {
  return x->c.parent_based;
}

size_t spool__otlp_value_limit(const spool__otlp *x) {
  return x->c.value_limit;
}

const char *spool__otlp_endpoint_shown(const spool__otlp *x) {
  return x->c.url_shown;
}
