/*
 * stream_event.h: what the stream readers of the Anthropic Messages API
 * and the Responses API look at first in an event's data, read without a
 * table for the document: its "type", its "index", and its "delta" — a
 * string (the Responses API's text), or an object's "type", "text" and
 * "partial_json" (Anthropic's). Most events of a stream are deltas, and
 * need nothing else; the others are decoded whole, in Lua.
 *
 * It reads the shapes whose meaning in Lua it knows only: an event it
 * does not take (no object, a type that is not a string, an index written
 * as a string, a delta that is a number, a boolean or an array, a key it
 * reads given twice, invalid JSON) is reported as such, and its reader
 * decodes it whole. spec/wire_spec.lua holds both to the same result.
 */
#ifndef SPOOL_STREAM_EVENT_H
#define SPOOL_STREAM_EVENT_H

#include <stddef.h>

#include "base/buf.h"
#include "codec/chat_reply.h"

enum { SPOOL__DELTA_NONE, SPOOL__DELTA_STRING, SPOOL__DELTA_OBJECT };

typedef struct spool__stream_event {
  spool__buf text;       /* the spans below point into it */
  spool__chat_span type; /* unset: none */
  int has_index;         /* "index" was a whole number (else as none) */
  long long index;
  int delta_kind;         /* none (absent or null), a string, an object */
  spool__chat_span delta; /* the string */
  /* the object's members, each unset unless a string */
  spool__chat_span delta_type, delta_text, delta_json;
} spool__stream_event;

/* Reads data[0..n) into e (zeroed first; reuse it, and free it with
 * spool__stream_event_free). Returns 0 when read, 1 when the event is not
 * of a shape this reader takes, -1 when out of memory. `scratch` is the
 * JSON parser's work buffer. */
int spool__stream_event_read(spool__stream_event *e, const char *data, size_t n,
                             spool__buf *scratch);

void spool__stream_event_free(spool__stream_event *e);

#endif
