/*
 * fuzz_responses_reply.c: libFuzzer target for the Responses API reply reader
 * (responses_reply.c). What it takes is valid JSON, every string it keeps
 * lies within its buffer, each tool input it writes back is one JSON
 * value, and reading the same body again, into the same reply, gives the
 * same answer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/responses_reply.h"
#include "codec/json.h"

static void check_span(const spool__responses_reply *r,
                       const spool__chat_span *s) {
  if (s->set && (s->at > r->text.len || s->len > r->text.len - s->at))
    abort();
}

static void check(const spool__responses_reply *r) {
  check_span(r, &r->id);
  check_span(r, &r->status);
  check_span(r, &r->reason);
  if (r->ncalls > r->cap || (!r->has_text && r->said.len > 0))
    abort();
  for (size_t i = 0; i < r->ncalls; i++) {
    const spool__chat_call *c = &r->calls[i];
    check_span(r, &c->id);
    check_span(r, &c->arguments);
    if (!c->name.set) /* a tool_use without a name is not taken */
      abort();
    check_span(r, &c->name);
  }
  for (int i = 0; i < SPOOL__CHAT_COUNTS; i++)
    if (r->has_count[i] && r->count[i] < 0)
      abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  spool__responses_reply r = {0};
  spool__buf scratch = {0};
  const char *body = (const char *)data;
  int rc = spool__responses_reply_read(&r, body, size, &scratch);
  if (rc == 0) {
    check(&r);
    spool__json_error err;
    if (spool__json_check(body, size, &scratch, &err) != 0)
      abort(); /* it took what is not JSON */
    size_t ncalls = r.ncalls, text = r.text.len, said = r.said.len;
    if (spool__responses_reply_read(&r, body, size, &scratch) != 0 ||
        r.ncalls != ncalls || r.text.len != text || r.said.len != said)
      abort();
    check(&r);
  }
  spool__responses_reply_free(&r);
  spool__buf_free(&scratch);
  return 0;
}
