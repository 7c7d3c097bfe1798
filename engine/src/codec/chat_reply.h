/*
 * chat_reply.h: an OpenAI Chat Completions response read straight into
 * what spool keeps of it — the reply's id, text, refusal, finish reason,
 * tool calls with their raw argument strings, and usage — without a table
 * for the rest of the document (spool.model.providers.openai's parse).
 *
 * It reads the common shape only: a document this reader does not take
 * (an id or a finish reason that is not a string or null, arguments sent
 * as an object, a count written as a string, a key it reads given twice,
 * no choices[1].message, invalid JSON, over SPOOL__CHAT_MAX_CALLS calls,
 * ...) is reported as such, and the
 * Lua reader, which takes them all, reads it instead. Both give the same
 * reply for every document this one takes (spec/wire_spec.lua).
 */
#ifndef SPOOL_CHAT_REPLY_H
#define SPOOL_CHAT_REPLY_H

#include <stddef.h>

#include "base/buf.h"

/* A string of the reply: its bytes at `at` in the reply's text buffer. */
typedef struct spool__chat_span {
  size_t at, len;
  int set; /* 0: absent (or not a string) */
} spool__chat_span;

typedef struct spool__chat_call {
  spool__chat_span id, name, arguments; /* arguments unset: "{}" */
  int has_index; /* a streamed delta's: the call it adds to */
  long long index;
} spool__chat_call;

enum { SPOOL__CHAT_ABSENT, SPOOL__CHAT_NULL, SPOOL__CHAT_STRING };

/* More tool calls than this in one reply are not read here (the run's
 * limit on calls is far below it): this reader's memory is outside the
 * Lua heap and its limits, so it stays small. */
#define SPOOL__CHAT_MAX_CALLS 1024

/* The usage counts, in spool's order. */
enum {
  SPOOL__CHAT_INPUT,
  SPOOL__CHAT_OUTPUT,
  SPOOL__CHAT_TOTAL,
  SPOOL__CHAT_CACHED,
  SPOOL__CHAT_REASONING,
  SPOOL__CHAT_COUNTS
};

typedef struct spool__chat_reply {
  spool__buf text; /* the strings below point into it */
  int id_kind, finish_kind;
  spool__chat_span id, content, refusal, finish;
  spool__chat_call *calls;
  size_t ncalls, cap;
  long long count[SPOOL__CHAT_COUNTS];
  int has_count[SPOOL__CHAT_COUNTS]; /* 0: not a whole number >= 0 */
  int usage_seen;                    /* the usage was an object or an array */
} spool__chat_reply;

/* What every reply reader (this one, anthropic_reply.c, responses_reply.c)
 * does with what it keeps. spool__chat_keep appends s[0..n) to `text` as
 * *span: 0, or -1 when out of memory. spool__chat_add_call makes a new
 * call (zeroed) at the end of *calls: NULL when out of memory, or when
 * there are SPOOL__CHAT_MAX_CALLS already (*full is then set).
 * spool__chat_count says whether a JSON number v counts as a whole number
 * (math.tointeger's rule), and which, in *count. */
int spool__chat_keep(spool__buf *text, spool__chat_span *span, const char *s,
                     size_t n);
spool__chat_call *spool__chat_add_call(spool__chat_call **calls, size_t *ncalls,
                                       size_t *cap, int *full);
int spool__chat_count(double v, long long *count);

/* A reader's values that are neither strings nor containers, each passed
 * to one function: whether it is null, and whether it is a whole number
 * (spool__chat_count's rule) and which. A reader whose user data starts
 * with this struct puts these five in its sink. */
typedef struct spool__chat_scalars {
  int (*scalar)(void *ud, int is_null, int whole, long long count);
} spool__chat_scalars;
int spool__chat_on_null(void *ud);
int spool__chat_on_boolean(void *ud, int v);
int spool__chat_on_integer(void *ud, long long v);
int spool__chat_on_number(void *ud, double v);
int spool__chat_on_big_integer(void *ud, const char *digits, size_t n);

/* Reads body[0..n) into r (zeroed first; reuse it across calls, and free
 * it with spool__chat_reply_free). Returns 0 when read, 1 when the body is
 * not of the shape this reader takes, -1 when out of memory. `scratch` is
 * the JSON parser's work buffer. */
int spool__chat_reply_read(spool__chat_reply *r, const char *body, size_t n,
                           spool__buf *scratch);

/* Reads one chunk of a streamed response (an event's data) the same way:
 * what its first choice's delta adds — a piece of text or refusal, tool
 * call deltas, each with the index of the call it adds to (has_index 0:
 * a new call), a finish reason — and its id and usage, as the Lua stream
 * reader takes them. 1 as well for a chunk with an "error", more than one
 * choice, a call delta that is not an object or whose index is not a
 * whole number from 0 to SPOOL__CHAT_MAX_CALLS or null, and the shapes
 * the reply reader leaves. */
int spool__chat_chunk_read(spool__chat_reply *r, const char *data, size_t n,
                           spool__buf *scratch);

void spool__chat_reply_free(spool__chat_reply *r);

#endif
