/*
 * test_otlp.c: the span exporter's reading of the OpenTelemetry variables
 * (io/otlp_config.c) and its sampler. Its sending is tested end to end
 * against a receiver built on OpenTelemetry's own definitions
 * (spec/otel_spec.lua).
 */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "io/otlp.h"
#include "io/otlp_config.h"
#include "test.h"

static const char *const VARS[] = {
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
};

typedef struct warnings {
  char text[2048];
  int n;
} warnings;

static void on_warn(void *ud, const char *msg) {
  warnings *w = ud;
  w->n++;
  strncat(w->text, msg, sizeof w->text - strlen(w->text) - 2);
  strcat(w->text, "\n");
}

static void read_config(spool__otlp_config *c, warnings *w) {
  memset(w, 0, sizeof *w);
  ASSERT_EQ(spool__otlp_config_read(c, on_warn, w), 0);
}

static void clear_env(void) {
  for (size_t i = 0; i < sizeof VARS / sizeof *VARS; i++)
    unsetenv(VARS[i]);
}

static const char *header(const spool__otlp_config *c, const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; i < c->nheaders; i++)
    if (strncmp(c->headers[i], name, n) == 0 && c->headers[i][n] == ':')
      return c->headers[i] + n + 2;
  return NULL;
}

TEST_IMPL(otlp_reads_the_endpoint) {
  spool__otlp_config c;
  warnings w;
  clear_env();
  read_config(&c, &w);
  ASSERT(c.url == NULL); /* nothing set: no export */
  spool__otlp_config_free(&c);

  /* The generic endpoint is a base: v1/traces is added, after a "/". */
  setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://u:secret@c:4318/base", 1);
  read_config(&c, &w);
  ASSERT_STR_EQ(c.url, "http://u:secret@c:4318/base/v1/traces");
  ASSERT_STR_EQ(c.url_shown, "http://c:4318/base/v1/traces");
  spool__otlp_config_free(&c);
  setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/", 1);
  read_config(&c, &w);
  ASSERT_STR_EQ(c.url, "http://c:4318/v1/traces");
  spool__otlp_config_free(&c);

  /* The signal's own is used as it is; an empty path becomes "/". */
  setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://t:443", 1);
  read_config(&c, &w);
  ASSERT_STR_EQ(c.url, "https://t:443/");
  spool__otlp_config_free(&c);
  setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://t/custom/path", 1);
  read_config(&c, &w);
  ASSERT_STR_EQ(c.url, "https://t/custom/path");
  spool__otlp_config_free(&c);

  /* The log never shows a password (one with a '#' in it too) or a
   * query, where a vendor's key may go; a query after an empty path. */
  setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
         "http://user:pa#ss@c:4318?api_key=SECRET", 1);
  read_config(&c, &w);
  ASSERT_STR_EQ(c.url, "http://user:pa#ss@c:4318/?api_key=SECRET");
  ASSERT_STR_EQ(c.url_shown, "http://c:4318/");
  spool__otlp_config_free(&c);
  setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://t/v1/x?key=K#f", 1);
  read_config(&c, &w);
  ASSERT_STR_EQ(c.url_shown, "https://t/v1/x");
  spool__otlp_config_free(&c);

  /* An empty value is an unset one. */
  setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "", 1);
  read_config(&c, &w);
  ASSERT_STR_EQ(c.url, "http://c:4318/v1/traces");
  spool__otlp_config_free(&c);

  /* OTEL_TRACES_EXPORTER=none, and the SDK switched off, send nothing;
   * =otlp alone means the default endpoint; another exporter is said. */
  setenv("OTEL_TRACES_EXPORTER", "none", 1);
  read_config(&c, &w);
  ASSERT(c.url == NULL);
  spool__otlp_config_free(&c);
  clear_env();
  setenv("OTEL_TRACES_EXPORTER", "otlp", 1);
  read_config(&c, &w);
  ASSERT_STR_EQ(c.url, "http://localhost:4318/v1/traces");
  spool__otlp_config_free(&c);
  setenv("OTEL_SDK_DISABLED", "true", 1);
  read_config(&c, &w);
  ASSERT(c.url == NULL);
  spool__otlp_config_free(&c);
  clear_env();
  setenv("OTEL_TRACES_EXPORTER", "otlp,console", 1); /* a list */
  read_config(&c, &w);
  ASSERT_STR_EQ(c.url, "http://localhost:4318/v1/traces");
  ASSERT_CONTAINS(w.text, "spool exports \"otlp\" only");
  spool__otlp_config_free(&c);
  setenv("OTEL_TRACES_EXPORTER", "zipkin", 1);
  read_config(&c, &w);
  ASSERT(c.url == NULL);
  ASSERT_CONTAINS(w.text, "OTEL_TRACES_EXPORTER=zipkin");
  spool__otlp_config_free(&c);

  /* Not HTTP: said, and nothing sent. The protocol: JSON, said. */
  clear_env();
  setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://c:4317", 1);
  read_config(&c, &w);
  ASSERT(c.url == NULL);
  ASSERT_CONTAINS(w.text, "must start with http:// or https://");
  spool__otlp_config_free(&c);
  setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318", 1);
  setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", 1);
  read_config(&c, &w);
  ASSERT_CONTAINS(w.text, "spool sends http/json");
  spool__otlp_config_free(&c);
  clear_env();
}

TEST_IMPL(otlp_reads_headers_and_the_resource) {
  spool__otlp_config c;
  warnings w;
  clear_env();
  setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318", 1);
  /* Percent-decoded, trimmed, merged: the signal's own win. */
  setenv("OTEL_EXPORTER_OTLP_HEADERS",
         " api-key = a%20b ,x-team=core,broken, =nokey", 1);
  setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "X-Team=traces", 1);
  read_config(&c, &w);
  ASSERT_STR_EQ(header(&c, "api-key"), "a b");
  ASSERT_STR_EQ(header(&c, "X-Team"), "traces");
  ASSERT(header(&c, "x-team") == NULL);
  ASSERT_STR_EQ(header(&c, "Content-Type"), "application/json");
  ASSERT_EQ(w.n, 0);
  spool__otlp_config_free(&c);
  /* A header that would split the request is left out, and the warning
   * names the variable, never the value (it may be a key). */
  setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=sk-secret%0D%0AX-Evil: 1", 1);
  unsetenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS");
  read_config(&c, &w);
  ASSERT(header(&c, "api-key") == NULL);
  ASSERT_CONTAINS(w.text, "OTEL_EXPORTER_OTLP_HEADERS");
  ASSERT(strstr(w.text, "sk-secret") == NULL);
  spool__otlp_config_free(&c);

  /* The resource: OTEL_SERVICE_NAME wins over service.name. */
  setenv("OTEL_RESOURCE_ATTRIBUTES",
         "service.name=from-attrs,deployment.environment.name=prod,"
         "team=a%2Cb",
         1);
  read_config(&c, &w);
  ASSERT_CONTAINS(c.resource.data, "{\"key\":\"service.name\",\"value\":"
                                   "{\"stringValue\":\"from-attrs\"}}");
  ASSERT_CONTAINS(c.resource.data, "\"stringValue\":\"a,b\"");
  spool__otlp_config_free(&c);
  setenv("OTEL_SERVICE_NAME", "desk", 1);
  read_config(&c, &w);
  ASSERT_CONTAINS(c.resource.data, "\"stringValue\":\"desk\"");
  ASSERT(strstr(c.resource.data, "from-attrs") == NULL);
  spool__otlp_config_free(&c);
  /* A list that does not decode is dropped whole. */
  unsetenv("OTEL_SERVICE_NAME");
  setenv("OTEL_RESOURCE_ATTRIBUTES", "team=ok,bad=%zz", 1);
  read_config(&c, &w);
  ASSERT(strstr(c.resource.data, "team") == NULL);
  ASSERT_CONTAINS(c.resource.data, "\"stringValue\":\"spool\"");
  ASSERT_CONTAINS(w.text, "OTEL_RESOURCE_ATTRIBUTES does not decode");
  spool__otlp_config_free(&c);
  clear_env();
}

TEST_IMPL(otlp_samples) {
  spool__otlp_config c;
  warnings w;
  clear_env();
  read_config(&c, &w);
  ASSERT_EQ(c.root, SPOOL__SAMPLE_ON);
  ASSERT_EQ(c.parent_based, 1);
  spool__otlp_config_free(&c);
  setenv("OTEL_TRACES_SAMPLER", "traceidratio", 1);
  setenv("OTEL_TRACES_SAMPLER_ARG", "0.25", 1);
  read_config(&c, &w);
  ASSERT_EQ(c.root, SPOOL__SAMPLE_RATIO);
  ASSERT_EQ(c.parent_based, 0);
  ASSERT(c.ratio == 0.25);
  spool__otlp_config_free(&c);
  setenv("OTEL_TRACES_SAMPLER_ARG", "2", 1);
  read_config(&c, &w);
  ASSERT(c.ratio == 1.0);
  ASSERT_CONTAINS(w.text, "OTEL_TRACES_SAMPLER_ARG=2");
  spool__otlp_config_free(&c);
  clear_env();

  /* The ratio sampler reads the id's low 56 bits: a lower ratio keeps a
   * subset of what a higher one keeps, and about its share. */
  unsigned char id[16];
  int kept[3] = {0, 0, 0};
  const double ratios[3] = {0.1, 0.5, 0.9};
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < 4000; i++) {
    for (int j = 0; j < 16; j++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      id[j] = (unsigned char)x;
    }
    int prev = 1;
    for (int k = 2; k >= 0; k--) {
      int s = spool__otlp_ratio_sample(ratios[k], id);
      ASSERT(!s || prev); /* kept at 0.1 means kept at 0.5 and 0.9 */
      prev = s;
      kept[k] += s;
    }
  }
  ASSERT(kept[0] > 300 && kept[0] < 500);
  ASSERT(kept[1] > 1800 && kept[1] < 2200);
  ASSERT(kept[2] > 3400 && kept[2] < 3800);
  memset(id, 0xff, sizeof id);
  ASSERT_EQ(spool__otlp_ratio_sample(0.0, id), 0);
  memset(id, 0, sizeof id);
  ASSERT_EQ(spool__otlp_ratio_sample(1.0, id), 1);
}
