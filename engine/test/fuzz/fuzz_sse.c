/*
 * fuzz_sse.c: libFuzzer target for the event stream parser (sse.c). The
 * events must not depend on how the bytes were split: the input is parsed
 * whole, then again in pieces whose sizes come from the input itself, and
 * the two transcripts must be equal.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/sse.h"

static int record(void *ud, const char *type, size_t type_len, const char *data,
                  size_t data_len, const char *id) {
  spool__buf *t = ud;
  /* the type and the data may hold NULs, never run short */
  if (strlen(type) > type_len || strlen(data) > data_len)
    abort();
  spool__buf_printf(t, "%zu:", type_len);
  spool__buf_add(t, type, type_len);
  spool__buf_printf(t, "|%s|%zu:", id, data_len);
  spool__buf_add(t, data, data_len);
  spool__buf_addc(t, '\n');
  return 0;
}

static void parse(const uint8_t *d, size_t n, size_t piece, spool__buf *t) {
  spool__sse p;
  spool__sse_init(&p, 512);
  int rc = 0;
  for (size_t off = 0; off < n && rc == 0; off += piece) {
    size_t len = n - off < piece ? n - off : piece;
    rc = spool__sse_feed(&p, (const char *)d + off, len, record, t);
  }
  spool__buf_printf(t, "rc=%d", rc);
  spool__sse_free(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  size_t piece = (size_t)(data[0] % 7) + 1;
  spool__buf whole = {0}, pieces = {0};
  parse(data + 1, size - 1, size, &whole);
  parse(data + 1, size - 1, piece, &pieces);
  /* Bounds add up the same however the bytes are split, so even a failed
   * parse (an over-long line) fails at the same place: always compare. */
  if (whole.len != pieces.len ||
      memcmp(whole.data, pieces.data, whole.len) != 0)
    abort();
  spool__buf_free(&whole);
  spool__buf_free(&pieces);
  return 0;
}
