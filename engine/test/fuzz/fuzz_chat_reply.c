/*
 * fuzz_chat_reply.c: libFuzzer target for the chat reply reader
 * (chat_reply.c), on a whole reply and on a streamed chunk, and for the
 * stream event reader (stream_event.c). What they take is valid JSON,
 * every string they keep lies within its buffer, a chunk's call deltas
 * name calls within bounds, and reading the same body again, into the
 * same reply, gives the same answer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/chat_reply.h"
#include "codec/stream_event.h"
#include "codec/json.h"

static void check_in(const spool__buf *text, const spool__chat_span *s) {
  if (s->set && (s->at > text->len || s->len > text->len - s->at))
    abort();
}

static void check_span(const spool__chat_reply *r, const spool__chat_span *s) {
  check_in(&r->text, s);
}

static void check(const spool__chat_reply *r, int chunk) {
  check_span(r, &r->id);
  check_span(r, &r->content);
  check_span(r, &r->refusal);
  check_span(r, &r->finish);
  if (r->ncalls > r->cap)
    abort();
  for (size_t i = 0; i < r->ncalls; i++) {
    check_span(r, &r->calls[i].id);
    check_span(r, &r->calls[i].arguments);
    if (!chunk && !r->calls[i].name.set) /* a reply's call has a name */
      abort();
    if (r->calls[i].has_index && (!chunk || r->calls[i].index < 0 ||
                                  r->calls[i].index > SPOOL__CHAT_MAX_CALLS))
      abort();
    check_span(r, &r->calls[i].name);
  }
  for (int i = 0; i < SPOOL__CHAT_COUNTS; i++)
    if (r->has_count[i] && r->count[i] < 0)
      abort();
}

typedef int (*reader)(spool__chat_reply *, const char *, size_t, spool__buf *);

static void read_twice(reader read, int chunk, const char *body, size_t size) {
  spool__chat_reply r = {0};
  spool__buf scratch = {0};
  if (read(&r, body, size, &scratch) == 0) {
    check(&r, chunk);
    spool__json_error err;
    if (spool__json_check(body, size, &scratch, &err) != 0)
      abort(); /* it took what is not JSON */
    size_t ncalls = r.ncalls, text = r.text.len;
    if (read(&r, body, size, &scratch) != 0 || r.ncalls != ncalls ||
        r.text.len != text)
      abort();
    check(&r, chunk);
  }
  spool__chat_reply_free(&r);
  spool__buf_free(&scratch);
}

static void check_event(const spool__stream_event *e) {
  check_in(&e->text, &e->type);
  check_in(&e->text, &e->delta);
  check_in(&e->text, &e->delta_type);
  check_in(&e->text, &e->delta_text);
  check_in(&e->text, &e->delta_json);
  if (e->delta.set != (e->delta_kind == SPOOL__DELTA_STRING))
    abort();
}

static void read_event_twice(const char *data, size_t size) {
  spool__stream_event e = {0};
  spool__buf scratch = {0};
  if (spool__stream_event_read(&e, data, size, &scratch) == 0) {
    check_event(&e);
    spool__json_error err;
    if (spool__json_check(data, size, &scratch, &err) != 0)
      abort();
    size_t text = e.text.len;
    if (spool__stream_event_read(&e, data, size, &scratch) != 0 ||
        e.text.len != text)
      abort();
    check_event(&e);
  }
  spool__stream_event_free(&e);
  spool__buf_free(&scratch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  read_twice(spool__chat_reply_read, 0, (const char *)data, size);
  read_twice(spool__chat_chunk_read, 1, (const char *)data, size);
  read_event_twice((const char *)data, size);
  return 0;
}
