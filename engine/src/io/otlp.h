/*
 * otlp.h: traces out of the engine, as OpenTelemetry's OTLP/HTTP with JSON
 * bodies, without an OpenTelemetry SDK. No Lua here: l_trace.c encodes
 * each finished span as one OTLP JSON Span object and hands it over; this
 * batches spans, posts them to the collector on the loop (http.h), retries
 * what the protocol says may be retried, and drops (and counts) what does
 * not fit its bounded queue. Nothing here ever blocks the loop.
 *
 * Configured from the standard variables (read once, at engine open):
 *   OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER (otlp | none),
 *   OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS, _TIMEOUT, _PROTOCOL,
 *   OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
 *   OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG,
 *   OTEL_BSP_SCHEDULE_DELAY, OTEL_BSP_MAX_QUEUE_SIZE,
 *   OTEL_BSP_MAX_EXPORT_BATCH_SIZE, OTEL_BSP_EXPORT_TIMEOUT,
 *   OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT.
 * Tracing is on when an endpoint is set (or OTEL_TRACES_EXPORTER=otlp,
 * which means the default http://localhost:4318). The headers (which often
 * carry a vendor's API key) go nowhere but the requests: never into logs,
 * errors or Lua.
 */
#ifndef SPOOL_OTLP_H
#define SPOOL_OTLP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "io/http.h"

typedef struct spool__otlp spool__otlp;

/* Root samplers (OTEL_TRACES_SAMPLER); parent-based ones follow a parent's
 * sampled flag when there is a parent. */
typedef enum {
  SPOOL__SAMPLE_ON,
  SPOOL__SAMPLE_OFF,
  SPOOL__SAMPLE_RATIO
} spool__sample_root;

typedef struct spool__otlp_stats {
  long long queued;   /* spans waiting now (in batches not yet sent) */
  long long exported; /* spans the collector accepted */
  long long rejected; /* spans it accepted the request of but refused */
  long long dropped;  /* spans never sent: queue full, or the batch gave up */
  long long retries;  /* export requests tried again */
  long long failures; /* export requests that failed (each attempt) */
} spool__otlp_stats;

/* Messages about the configuration (a bad variable ignored, a protocol not
 * spoken) go to `warn` with `ud`, once, from spool__otlp_new. */
typedef void (*spool__otlp_warn_cb)(void *ud, const char *msg);

/* Reads the environment; 0, or -1 when out of memory. Without an endpoint
 * the exporter sends nothing, but still samples (an embedder may take the
 * spans through spool_engine_on_span). */
int spool__otlp_new(uv_loop_t *loop, spool__http *http, spool__otlp **out,
                    spool__otlp_warn_cb warn, void *ud);
/* Stops its timer and any transfer; the memory goes when the loop runs the
 * timer's close callback. NULL is a no-op. */
void spool__otlp_free(spool__otlp *x);

/* Does it post spans to a collector? */
int spool__otlp_exports(const spool__otlp *x);
/* Queues one encoded span (an OTLP JSON Span object); counts it dropped
 * when the queue is full. */
void spool__otlp_add(spool__otlp *x, const char *span_json, size_t len);
/* Sends every queued span now rather than at the next scheduled export. */
void spool__otlp_flush(spool__otlp *x);
/* Does it hold spans, or have an export out? */
int spool__otlp_busy(const spool__otlp *x);
/* The process is about to exit: sends every queued span now, and from
 * now on waits to retry an export only if the collector answered (a 429
 * or a 503; not a refused connection) and the wait ends before the
 * returned deadline (uv_now, at most OTEL_BSP_EXPORT_TIMEOUT away); what
 * is left is dropped and counted. The caller turns the loop while
 * spool__otlp_busy, until the deadline. */
uint64_t spool__otlp_closing(spool__otlp *x);
/* Past the deadline: the export out is cancelled, and every span still
 * held is dropped (and counted). */
void spool__otlp_abandon(spool__otlp *x);
void spool__otlp_stats_get(const spool__otlp *x, spool__otlp_stats *out);

/* The root sampler: decides for a trace with no parent. */
int spool__otlp_sample(const spool__otlp *x, const unsigned char trace_id[16]);
/* Does the sampler follow a parent's decision (parentbased_*)? */
int spool__otlp_parent_based(const spool__otlp *x);
/* The most bytes of one string attribute (0: no limit). */
size_t spool__otlp_value_limit(const spool__otlp *x);
/* Where spans go, without user:password@ (for logs). */
const char *spool__otlp_endpoint_shown(const spool__otlp *x);

/* The sampler's root decision on its own, for tests: `ratio` in [0, 1]
 * against the trace id's low 56 bits, as OpenTelemetry's probability
 * sampler does it. */
int spool__otlp_ratio_sample(double ratio, const unsigned char trace_id[16]);

#endif
