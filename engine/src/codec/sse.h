/*
 * sse.h: an incremental parser for Server-Sent Events (the WHATWG
 * "event stream" format), the framing every model provider streams in.
 * Bytes go in as they arrive, split anywhere; whole events come out through
 * a callback. No Lua, no I/O.
 *
 * Lines end in CRLF, LF or CR (a CRLF split across two feeds is one line
 * end); a leading BOM is skipped; ":" lines are comments; "data" lines
 * join with "\n"; an event is dispatched at a blank line, and only if it
 * has data; "id" persists from event to event; "retry" (digits only) sets
 * the reconnection time a client should wait; unknown fields are ignored.
 * The last id and the reconnection time stay in the parser, for a client
 * that reconnects when the stream ends (with Last-Event-ID). An event cut off
 * by the end of the stream is never dispatched.
 */
#ifndef SPOOL_SSE_H
#define SPOOL_SSE_H

#include <stddef.h>

#include "base/buf.h"

/* One event: the type ("message" unless an "event" field named one), the
 * data, and the last event id seen ("" if none). The strings are
 * NUL-terminated and valid only during the callback; the type and the
 * data may hold NULs too (an id never does). Return 0 to go on, anything
 * else to stop the feed (which returns that value). */
typedef int (*spool__sse_cb)(void *ud, const char *type, size_t type_len,
                             const char *data, size_t data_len, const char *id);

typedef struct spool__sse {
  spool__buf line;  /* the line being read */
  spool__buf data;  /* data of the event being built */
  spool__buf type;  /* its "event" field */
  spool__buf id;    /* the last event id */
  long retry_ms;    /* the last "retry" field's, or -1 */
  size_t max_event; /* bytes a line or an event's data may take */
  int after_cr;     /* the last byte was CR: a next LF ends nothing */
  int started;      /* past the optional BOM */
  int failed;
} spool__sse;

#define SPOOL_SSE_MAX_EVENT (16u << 20)

/* A parser that bounds lines and events to max_event bytes (0 means
 * SPOOL_SSE_MAX_EVENT). Free it with spool__sse_free. */
void spool__sse_init(spool__sse *p, size_t max_event);
/* Parses len more bytes. 0, the callback's nonzero value, or -1 (out of
 * memory, or a line or an event beyond max_event; the parser then refuses
 * further input). */
int spool__sse_feed(spool__sse *p, const char *bytes, size_t len,
                    spool__sse_cb cb, void *ud);
void spool__sse_free(spool__sse *p);

#endif
