/*
 * otlp_config.h: the OpenTelemetry variables as otlp.c uses them (private
 * to io/otlp*.c). Parsed the way the specification's "SDK environment
 * variables" say: an empty value is unset, a bad one is reported and
 * ignored.
 */
#ifndef SPOOL_OTLP_CONFIG_H
#define SPOOL_OTLP_CONFIG_H

#include <stddef.h>

#include "base/buf.h"
#include "io/otlp.h"

typedef struct spool__otlp_config {
  char *url;       /* where to post; NULL: spans are not exported */
  char *url_shown; /* the same without user:password@ */
  char **headers;  /* "Name: value", the user's then ours */
  size_t nheaders;
  long timeout_ms;         /* one export request */
  long schedule_delay_ms;  /* how long a span may wait for its batch */
  long export_timeout_ms;  /* the most a flush at exit waits */
  long max_queue;          /* spans */
  long max_batch;          /* spans per request */
  size_t max_queue_bytes;  /* encoded spans waiting, in bytes */
  size_t value_limit;      /* bytes of one string attribute; 0: none */
  spool__sample_root root; /* the root sampler */
  double ratio;            /* its probability, for SPOOL__SAMPLE_RATIO */
  int parent_based;        /* parentbased_*: follow a parent's decision */
  spool__buf resource;     /* the Resource, as OTLP JSON */
} spool__otlp_config;

/* Fills c from the environment; each problem goes to warn. 0, or -1 when
 * out of memory. */
int spool__otlp_config_read(spool__otlp_config *c, spool__otlp_warn_cb warn,
                            void *ud);
void spool__otlp_config_free(spool__otlp_config *c);

#endif
