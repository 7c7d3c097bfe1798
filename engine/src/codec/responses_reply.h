/*
 * responses_reply.h: an OpenAI Responses API response read straight into
 * what spool keeps of it — the response's id and status, the text of its
 * message items (output_text and refusal parts), its function_call items
 * with their raw argument strings, the reason it is incomplete, and usage
 * — without a table for the rest of the document
 * (spool.model.providers.openai_responses's parse).
 *
 * As chat_reply.h does for Chat Completions, it reads the common shape
 * only: a document it does not take (no output array, a failed response,
 * an id that is not a string, a function_call with no name, a refusal that
 * is not a string, a count written as a string, a key it reads given
 * twice, invalid JSON, over SPOOL__CHAT_MAX_CALLS calls, ...) is reported
 * as such, and the Lua reader, which takes them all, reads it instead.
 * Both give the same reply for every document this one takes
 * (spec/wire_spec.lua).
 */
#ifndef SPOOL_RESPONSES_REPLY_H
#define SPOOL_RESPONSES_REPLY_H

#include <stddef.h>

#include "base/buf.h"
#include "codec/chat_reply.h"

/* The usage counts, in spool's order (as chat_reply.h's). */
typedef struct spool__responses_reply {
  spool__buf text; /* the spans below point into it */
  spool__buf said; /* the message items' texts, one after another */
  spool__buf item; /* the texts of the message item being read */
  int has_text;    /* some part had a text (said may be "") */
  int refused;     /* a message item had a refusal part */
  spool__chat_span id, status, reason; /* reason: incomplete_details' */
  spool__chat_call *calls; /* function_call items; id unset: none given;
                              arguments unset: "{}" */
  size_t ncalls, cap;
  long long count[SPOOL__CHAT_COUNTS];
  int has_count[SPOOL__CHAT_COUNTS]; /* 0: not a whole number >= 0 */
} spool__responses_reply;

/* Reads body[0..n) into r (zeroed first; reuse it across calls, and free
 * it with spool__responses_reply_free). Returns 0 when read, 1 when the
 * body is not of the shape this reader takes, -1 when out of memory.
 * `scratch` is the JSON parser's work buffer. */
int spool__responses_reply_read(spool__responses_reply *r, const char *body,
                                size_t n, spool__buf *scratch);

void spool__responses_reply_free(spool__responses_reply *r);

#endif
