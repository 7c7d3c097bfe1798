/*
 * anthropic_reply.h: an Anthropic Messages response read straight into
 * what spool keeps of it — the message's id, the text of its text blocks,
 * its tool_use blocks (each input written back as JSON text), its stop
 * reason and usage counts — without a table for the rest of the document
 * (spool.model.providers.anthropic's parse).
 *
 * As chat_reply.h does for Chat Completions, it reads the common shape
 * only: a document it does not take (no content array, a block that is no
 * object, an id that is not a string, a tool_use with no name or with an
 * input that is an array, a count written as a string, a key it reads
 * given twice, invalid JSON, over SPOOL__CHAT_MAX_CALLS calls, ...) is
 * reported as such, and the Lua reader, which takes them all, reads it
 * instead. Both give the same reply for every document this one takes
 * (spec/wire_spec.lua).
 */
#ifndef SPOOL_ANTHROPIC_REPLY_H
#define SPOOL_ANTHROPIC_REPLY_H

#include <stddef.h>

#include "base/buf.h"
#include "codec/chat_reply.h"

/* The usage counts, as the API names them. */
enum {
  SPOOL__ANTHROPIC_INPUT,          /* input_tokens */
  SPOOL__ANTHROPIC_OUTPUT,         /* output_tokens */
  SPOOL__ANTHROPIC_CACHE_CREATION, /* cache_creation_input_tokens */
  SPOOL__ANTHROPIC_CACHE_READ,     /* cache_read_input_tokens */
  SPOOL__ANTHROPIC_THINKING,       /* output_tokens_details.thinking_tokens */
  SPOOL__ANTHROPIC_COUNTS
};

typedef struct spool__anthropic_reply {
  spool__buf text;         /* the spans below point into it */
  spool__buf said;         /* the text blocks' texts, one after another */
  int has_text;            /* a text block had a text (said may be "") */
  spool__chat_span id;     /* unset: no id */
  spool__chat_span stop;   /* stop_reason; unset: none */
  spool__chat_call *calls; /* tool_use blocks; arguments: the input
                              object as JSON text, unset when there was
                              none ("{}"); id unset: none given */
  size_t ncalls, cap;
  long long count[SPOOL__ANTHROPIC_COUNTS];
  int has_count[SPOOL__ANTHROPIC_COUNTS]; /* 0: not a whole number >= 0 */
} spool__anthropic_reply;

/* Reads body[0..n) into r (zeroed first; reuse it across calls, and free
 * it with spool__anthropic_reply_free). Returns 0 when read, 1 when the
 * body is not of the shape this reader takes, -1 when out of memory.
 * `scratch` is the JSON parser's work buffer. */
int spool__anthropic_reply_read(spool__anthropic_reply *r, const char *body,
                                size_t n, spool__buf *scratch);

void spool__anthropic_reply_free(spool__anthropic_reply *r);

#endif
