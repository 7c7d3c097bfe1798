/*
 * otlp_config.c: reads the OpenTelemetry environment variables (see
 * otlp.h for the list). Where the specification leaves a choice, spool's
 * is written beside it.
 */
#include "io/otlp_config.h"
#include "codec/json.h"
#include "spool.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* An empty variable is an unset one. */
static const char *env(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

/* The signal's own variable, else the generic one. */
static const char *env2(const char *traces, const char *generic) {
  const char *v = env(traces);
  return v ? v : env(generic);
}

static void warnf(spool__otlp_warn_cb warn, void *ud, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void warnf(spool__otlp_warn_cb warn, void *ud, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (warn)
    warn(ud, msg);
}

/* A whole number of milliseconds (or a count) >= min, else def. */
static long env_long(const char *name, long def, long min,
                     spool__otlp_warn_cb warn, void *ud) {
  const char *v = env(name);
  if (v == NULL)
    return def;
  char *end;
  long n = strtol(v, &end, 10);
  while (isspace((unsigned char)*end))
    end++;
  if (*end || end == v || n < min) {
    warnf(warn, ud, "%s=%s is not a whole number of at least %ld: ignored",
          name, v, min);
    return def;
  }
  return n;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c = tolower(c);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes s[0..n) (trimmed of spaces) into out; -1 on a bad
 * escape. */
static int decode(const char *s, size_t n, spool__buf *out) {
  while (n && isspace((unsigned char)*s))
    s++, n--;
  while (n && isspace((unsigned char)s[n - 1]))
    n--;
  spool__buf_clear(out);
  for (size_t i = 0; i < n; i++) {
    int c = (unsigned char)s[i];
    if (c == '%') {
      int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
      int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
      if (hi < 0 || lo < 0)
        return -1;
      c = hi * 16 + lo;
      i += 2;
    }
    if (spool__buf_addc(out, (char)c) != 0)
      return -1;
  }
  if (spool__buf_addc(out, '\0') != 0)
    return -1;
  out->len--;
  return 0;
}

typedef int (*pair_fn)(void *ud, const char *key, const char *value);

/* Walks "k1=v1,k2=v2" (W3C Baggage's shape, without properties), each
 * side percent-decoded. An entry that does not decode (or that f says is
 * bad, returning 1) is skipped, or with `strict` fails the whole list
 * (-1). -2 when out of memory (f returns -1). */
static int each_pair(const char *list, int strict, pair_fn f, void *ud) {
  spool__buf k = {0}, v = {0};
  int rc = 0;
  const char *p = list;
  while (*p && rc == 0) {
    const char *end = strchr(p, ',');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    const char *eq = memchr(p, '=', n);
    if (eq == NULL) {
      int blank = 1;
      for (size_t i = 0; i < n; i++)
        blank &= isspace((unsigned char)p[i]) != 0;
      if (!blank && strict)
        rc = -1;
    } else if (decode(p, (size_t)(eq - p), &k) != 0 ||
               decode(eq + 1, n - (size_t)(eq - p) - 1, &v) != 0 ||
               k.len == 0) {
      if (strict)
        rc = -1;
    } else {
      int bad = f(ud, k.data, v.data ? v.data : "");
      if (bad < 0)
        rc = -2;
      else if (bad && strict)
        rc = -1;
    }
    p += n + (end != NULL);
  }
  spool__buf_free(&k);
  spool__buf_free(&v);
  return rc;
}

/* ---- headers ---- */

static int header_ok(const char *s, int name) {
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c < 0x20 || c == 0x7f || (name && (c == ':' || c == ' ')))
      return 0;
  }
  return 1;
}

typedef struct headers_ctx {
  spool__otlp_config *c;
  int bad;
} headers_ctx;

static int add_header(void *ud, const char *key, const char *value) {
  headers_ctx *h = ud;
  spool__otlp_config *c = h->c;
  if (!header_ok(key, 1) || !header_ok(value, 0)) {
    h->bad++;
    return 0;
  }
  size_t klen = strlen(key);
  for (size_t i = 0; i < c->nheaders; i++) /* the signal's own wins */
    if (strncasecmp(c->headers[i], key, klen) == 0 &&
        c->headers[i][klen] == ':') {
      free(c->headers[i]);
      c->headers[i] = c->headers[--c->nheaders];
      break;
    }
  char **grown = realloc(c->headers, (c->nheaders + 1) * sizeof *grown);
  if (grown == NULL)
    return -1;
  c->headers = grown;
  size_t len = klen + strlen(value) + 3;
  char *line = malloc(len);
  if (line == NULL)
    return -1;
  snprintf(line, len, "%s: %s", key, value);
  c->headers[c->nheaders++] = line;
  return 0;
}

static int read_headers(spool__otlp_config *c, spool__otlp_warn_cb warn,
                        void *ud) {
  static const char *const names[] = {"OTEL_EXPORTER_OTLP_HEADERS",
                                      "OTEL_EXPORTER_OTLP_TRACES_HEADERS"};
  for (int i = 0; i < 2; i++) {
    const char *v = env(names[i]);
    headers_ctx h = {c, 0};
    if (v && each_pair(v, 0, add_header, &h) == -2)
      return -1;
    if (h.bad) /* the value is a secret: name the variable only */
      warnf(warn, ud,
            "%s: %d header%s with a character a header cannot "
            "hold ignored",
            names[i], h.bad, h.bad == 1 ? "" : "s");
  }
  return add_header(&(headers_ctx){c, 0}, "Content-Type", "application/json");
}

/* ---- the endpoint ---- */

/* The endpoint as a log may show it: no user or password (everything up
 * to the last '@', which a password may hold unencoded), no query or
 * fragment (where a vendor's key may go). */
static char *shown_url(const char *url) {
  const char *start = strstr(url, "://");
  start = start ? start + 3 : url;
  const char *at = strrchr(start, '@');
  const char *rest = at ? at + 1 : start;
  size_t head = (size_t)(start - url), n = strcspn(rest, "?#");
  char *out = malloc(head + n + 1);
  if (out == NULL)
    return NULL;
  memcpy(out, url, head);
  memcpy(out + head, rest, n);
  out[head + n] = '\0';
  return out;
}

/* Is OTEL_TRACES_EXPORTER's list (v) one that has otlp? Others than otlp
 * and none are said. */
static int wants_otlp(const char *v, spool__otlp_warn_cb warn, void *ud) {
  char list[256];
  snprintf(list, sizeof list, "%s", v);
  int wanted = 0, others = 0;
  char *save = NULL;
  for (char *e = strtok_r(list, ", ", &save); e;
       e = strtok_r(NULL, ", ", &save)) {
    if (strcasecmp(e, "otlp") == 0)
      wanted = 1;
    else if (strcasecmp(e, "none") != 0)
      others++;
  }
  if (others)
    warnf(warn, ud, "OTEL_TRACES_EXPORTER=%s: spool exports \"otlp\" only%s", v,
          wanted ? "" : "; no traces are sent");
  return wanted;
}

/* The URL spans go to (NULL: none), per the specification: the traces
 * endpoint is used as it is (an empty path becomes "/"); the generic one
 * is a base that gets "v1/traces". */
static char *endpoint(spool__otlp_warn_cb warn, void *ud) {
  const char *v = env("OTEL_TRACES_EXPORTER");
  const char *sdk = env("OTEL_SDK_DISABLED");
  if (sdk && strcasecmp(sdk, "true") == 0)
    return NULL;
  int wanted = 0;
  if (v && !(wanted = wants_otlp(v, warn, ud)))
    return NULL;
  const char *exact = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
  const char *base = env("OTEL_EXPORTER_OTLP_ENDPOINT");
  if (exact == NULL && base == NULL && !wanted)
    return NULL;
  const char *from = exact ? exact : base ? base : "http://localhost:4318";
  if (strncasecmp(from, "http://", 7) != 0 &&
      strncasecmp(from, "https://", 8) != 0) {
    warnf(warn, ud,
          "%s must start with http:// or https://: no traces are "
          "sent",
          exact ? "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
                : "OTEL_EXPORTER_OTLP_ENDPOINT");
    return NULL;
  }
  /* Where the path begins: after the host, which follows the last '@'
   * before any '/' (a password may hold a '#' or a '?' unencoded). */
  const char *host = strstr(from, "://") + 3;
  for (size_t i = 0, n = strcspn(host, "/"); i < n; i++)
    if (host[i] == '@') {
      host += i + 1;
      n -= i + 1;
      i = (size_t)-1;
    }
  size_t len = strlen(from), end = (size_t)(host - from) + strcspn(host, "/?#");
  char *url = malloc(len + sizeof "/v1/traces");
  if (url == NULL)
    return NULL;
  memcpy(url, from, len + 1);
  if (exact) {
    if (from[end] != '/') { /* an empty path is "/", before any query */
      memmove(url + end + 1, url + end, len - end + 1);
      url[end] = '/';
    }
  } else {
    if (len == 0 || url[len - 1] != '/')
      strcat(url, "/");
    strcat(url, "v1/traces");
  }
  return url;
}

/* ---- the resource ---- */

typedef struct resource_ctx {
  spool__buf *b;
  int n;
  int has_service;
  const char *service; /* OTEL_SERVICE_NAME, which wins */
} resource_ctx;

/* 0, -1 when out of memory, 1 for text that is not UTF-8 (left out). */
static int put_attr(resource_ctx *r, const char *key, const char *value) {
  spool__buf *b = r->b;
  size_t mark = b->len;
  int rc = 0;
  if ((r->n && spool__buf_addc(b, ',') != 0) ||
      spool__buf_adds(b, "{\"key\":") != 0 ||
      (rc = spool__json_write_string(b, key, strlen(key))) != 0 ||
      spool__buf_adds(b, ",\"value\":{\"stringValue\":") != 0 ||
      (rc = spool__json_write_string(b, value, strlen(value))) != 0 ||
      spool__buf_adds(b, "}}") != 0) {
    b->len = mark;
    return rc == -2 ? 1 : -1;
  }
  r->n++;
  return 0;
}

static int resource_pair(void *ud, const char *key, const char *value) {
  resource_ctx *r = ud;
  if (strcmp(key, "service.name") == 0) {
    if (r->service)
      return 0;
    r->has_service = 1;
  }
  return put_attr(r, key, value);
}

static int read_resource(spool__otlp_config *c, spool__otlp_warn_cb warn,
                         void *ud) {
  spool__buf *b = &c->resource;
  resource_ctx r = {b, 0, 0, env("OTEL_SERVICE_NAME")};
  if (spool__buf_adds(b, "{\"attributes\":[") != 0)
    return -1;
  const char *attrs = env("OTEL_RESOURCE_ATTRIBUTES");
  if (attrs) {
    /* A list that does not decode is dropped whole (resource/sdk.md); a
     * value that is not UTF-8 also leaves it out. */
    size_t mark = b->len;
    int rc = each_pair(attrs, 1, resource_pair, &r);
    if (rc == -2)
      return -1;
    if (rc == -1) {
      b->len = mark;
      r.n = 0;
      r.has_service = 0;
      warnf(warn, ud,
            "OTEL_RESOURCE_ATTRIBUTES does not decode (key=value "
            "pairs separated by commas, percent-encoded): ignored");
    }
  }
  char pid[32];
  snprintf(pid, sizeof pid, "%ld", (long)getpid());
  if ((r.service || !r.has_service) &&
      put_attr(&r, "service.name", r.service ? r.service : "spool") < 0)
    return -1;
  if (put_attr(&r, "telemetry.sdk.name", "spool") < 0 ||
      put_attr(&r, "telemetry.sdk.language", "c") < 0 ||
      put_attr(&r, "telemetry.sdk.version", SPOOL_VERSION) < 0 ||
      spool__buf_adds(b,
                      ",{\"key\":\"process.pid\",\"value\":{\"intValue\":\"") ||
      spool__buf_adds(b, pid) || spool__buf_adds(b, "\"}}]}"))
    return -1;
  return 0;
}

/* ---- the sampler ---- */

static void read_sampler(spool__otlp_config *c, spool__otlp_warn_cb warn,
                         void *ud) {
  c->root = SPOOL__SAMPLE_ON;
  c->parent_based = 1;
  c->ratio = 1.0;
  const char *s = env("OTEL_TRACES_SAMPLER");
  if (s == NULL)
    return;
  static const struct {
    const char *name;
    spool__sample_root root;
    int parent_based;
  } known[] = {
      {"always_on", SPOOL__SAMPLE_ON, 0},
      {"always_off", SPOOL__SAMPLE_OFF, 0},
      {"traceidratio", SPOOL__SAMPLE_RATIO, 0},
      {"parentbased_always_on", SPOOL__SAMPLE_ON, 1},
      {"parentbased_always_off", SPOOL__SAMPLE_OFF, 1},
      {"parentbased_traceidratio", SPOOL__SAMPLE_RATIO, 1},
  };
  size_t i;
  for (i = 0; i < sizeof known / sizeof *known; i++)
    if (strcasecmp(s, known[i].name) == 0)
      break;
  if (i == sizeof known / sizeof *known) {
    warnf(warn, ud,
          "OTEL_TRACES_SAMPLER=%s is not a sampler spool knows "
          "(always_on, always_off, traceidratio, parentbased_always_on, "
          "parentbased_always_off, parentbased_traceidratio): "
          "parentbased_always_on is used",
          s);
    return;
  }
  c->root = known[i].root;
  c->parent_based = known[i].parent_based;
  const char *arg = env("OTEL_TRACES_SAMPLER_ARG");
  if (c->root == SPOOL__SAMPLE_RATIO && arg) {
    char *end;
    double p = strtod(arg, &end);
    if (*end || end == arg || !(p >= 0.0 && p <= 1.0))
      warnf(warn, ud,
            "OTEL_TRACES_SAMPLER_ARG=%s is not a probability "
            "from 0 to 1: 1.0 is used",
            arg);
    else
      c->ratio = p;
  }
}

/* ---- all of it ---- */

int spool__otlp_config_read(spool__otlp_config *c, spool__otlp_warn_cb warn,
                            void *ud) {
  memset(c, 0, sizeof *c);
  c->timeout_ms =
      env_long("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", -1, 1, warn, ud);
  if (c->timeout_ms < 0)
    c->timeout_ms = env_long("OTEL_EXPORTER_OTLP_TIMEOUT", 10000, 1, warn, ud);
  c->schedule_delay_ms = env_long("OTEL_BSP_SCHEDULE_DELAY", 5000, 0, warn, ud);
  c->export_timeout_ms =
      env_long("OTEL_BSP_EXPORT_TIMEOUT", 30000, 0, warn, ud);
  c->max_queue = env_long("OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1, warn, ud);
  c->max_batch = env_long("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1, warn, ud);
  if (c->max_batch > c->max_queue)
    c->max_batch = c->max_queue;
  c->max_queue_bytes = 64u << 20; /* as OTLP's suggested body limit */
  c->value_limit =
      (size_t)env_long("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", 0, 0, warn, ud);
  read_sampler(c, warn, ud);
  const char *proto =
      env2("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL");
  const char *gzip = env2("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
                          "OTEL_EXPORTER_OTLP_COMPRESSION");
  c->url = endpoint(warn, ud);
  if (c->url) {
    if (proto && strcasecmp(proto, "http/json") != 0)
      warnf(warn, ud,
            "the OTLP protocol is %s: spool sends http/json, which "
            "an OTLP/HTTP receiver (the Collector, Jaeger) accepts on the "
            "same endpoint",
            proto);
    if (gzip && strcasecmp(gzip, "none") != 0)
      warnf(warn, ud,
            "OTLP compression %s is not supported: spans are sent "
            "uncompressed",
            gzip);
    if ((c->url_shown = shown_url(c->url)) == NULL)
      return -1;
  }
  if (read_headers(c, warn, ud) != 0 || read_resource(c, warn, ud) != 0)
    return -1;
  return 0;
}

void spool__otlp_config_free(spool__otlp_config *c) {
  free(c->url);
  free(c->url_shown);
  for (size_t i = 0; i < c->nheaders; i++)
    free(c->headers[i]);
  free(c->headers);
  spool__buf_free(&c->resource);
  memset(c, 0, sizeof *c);
}
