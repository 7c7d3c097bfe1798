/*
 * test_sse.c: the event stream parser (sse.h). Each case feeds bytes, in
 * one piece and then one byte at a time, and compares a transcript of the
 * events ("type|id|data" per event).
 */
#include "codec/sse.h"
#include "test.h"

static int record(void *ud, const char *type, size_t type_len, const char *data,
                  size_t data_len, const char *id) {
  spool__buf *t = ud;
  spool__buf_add(t, type, type_len);
  spool__buf_printf(t, "|%s|", id);
  spool__buf_add(t, data, data_len);
  spool__buf_addc(t, ';');
  return 0;
}

/* The transcript of `in`, fed in pieces of `piece` bytes; "ERR" appended
 * when the feed failed. The caller frees the result. */
static char *events(const char *in, size_t len, size_t piece, size_t max) {
  spool__sse p;
  spool__sse_init(&p, max);
  spool__buf t = {0};
  spool__buf_adds(&t, "");
  for (size_t off = 0; off < len; off += piece) {
    size_t n = len - off < piece ? len - off : piece;
    if (spool__sse_feed(&p, in + off, n, record, &t) != 0) {
      spool__buf_adds(&t, "ERR");
      break;
    }
  }
  spool__sse_free(&p);
  return t.data;
}

static int record_none(void *ud, const char *type, size_t type_len,
                       const char *data, size_t data_len, const char *id) {
  (void)ud, (void)type, (void)type_len, (void)data, (void)data_len, (void)id;
  return 0;
}

static void expect(const char *in, const char *want) {
  size_t len = strlen(in);
  char *whole = events(in, len, len ? len : 1, 0);
  char *bytes = events(in, len, 1, 0);
  ASSERT_STR_EQ(whole, want);
  ASSERT_STR_EQ(bytes, want);
  free(whole);
  free(bytes);
}

TEST_IMPL(sse_events) {
  expect("data: hi\n\n", "message||hi;");
  expect("event: delta\ndata: {\"a\":1}\n\n", "delta||{\"a\":1};");
  /* data lines join with a newline; one leading space is stripped */
  expect("data: a\ndata:  b\ndata\n\n", "message||a\n b\n;");
  /* every line ending, a CRLF split anywhere */
  expect("data: 1\r\n\r\ndata: 2\r\rdata: 3\n\n", "message||1;message||2;"
                                                  "message||3;");
  /* comments, unknown fields and retry dispatch nothing */
  expect(": ping\nretry: 10\nfoo: bar\ndata: x\n\n", "message||x;");
  /* id persists; an event without data is not dispatched and resets the
   * type */
  expect("id: 7\nevent: a\n\ndata: x\n\nid\ndata: y\n\n",
         "message|7|x;message||y;");
  /* a BOM at the start only */
  expect("\xEF\xBB\xBF"
         "data: x\n\n",
         "message||x;");
  expect("\xEF\xBB"
         "data: x\n\n",
         "");
  /* an event cut off by the end of the stream is never dispatched */
  expect("data: whole\n\ndata: cut", "message||whole;");
  expect("", "");
}

/* The last id and retry stay in the parser, for a client that reconnects;
 * a retry of anything but digits is ignored. */
TEST_IMPL(sse_reconnect) {
  spool__sse p;
  spool__sse_init(&p, 0);
  ASSERT_EQ(p.retry_ms, -1);
  const char *in = "id: e-1\nretry: 500\ndata: \n\nretry: 5x\n"
                   "data: {}\n\nretry:\n";
  ASSERT_EQ(spool__sse_feed(&p, in, strlen(in), record_none, NULL), 0);
  ASSERT_EQ(p.retry_ms, 500);
  ASSERT_STR_EQ(p.id.data, "e-1");
  in = "retry: 99999999999999999999\n";
  ASSERT_EQ(spool__sse_feed(&p, in, strlen(in), record_none, NULL), 0);
  ASSERT(p.retry_ms > 0); /* bounded, not wrapped */
  spool__sse_free(&p);
}

static int stop_at_first(void *ud, const char *type, size_t type_len,
                         const char *data, size_t data_len, const char *id) {
  (void)type, (void)type_len, (void)data, (void)data_len, (void)id;
  ++*(int *)ud;
  return 42;
}

TEST_IMPL(sse_bounds) {
  /* a line beyond the bound fails, in one piece or many */
  const char *in = "data: 0123456789abcdef\n\n";
  char *whole = events(in, strlen(in), strlen(in), 8);
  char *bytes = events(in, strlen(in), 1, 8);
  ASSERT_STR_EQ(whole, "ERR");
  ASSERT_STR_EQ(bytes, "ERR");
  free(whole);
  free(bytes);
  /* so does an event whose lines are short but whose data is not */
  in = "data: 0123\ndata: 4567\ndata: 89ab\n\n";
  whole = events(in, strlen(in), 3, 12);
  ASSERT_STR_EQ(whole, "ERR");
  free(whole);
  /* a callback's nonzero answer stops the feed and is returned */
  spool__sse p;
  spool__sse_init(&p, 0);
  int calls = 0;
  ASSERT_EQ(
      spool__sse_feed(&p, "data: a\n\ndata: b\n\n", 18, stop_at_first, &calls),
      42);
  ASSERT_EQ(calls, 1);
  spool__sse_free(&p);
}

/* An "event" field's value is the event's type whole, NULs included
 * (only an "id" with a NUL is ignored). */
typedef struct named {
  char type[8];
  size_t len;
} named;

static int record_type(void *ud, const char *type, size_t type_len,
                       const char *data, size_t data_len, const char *id) {
  (void)data, (void)data_len, (void)id;
  named *n = ud;
  n->len = type_len;
  memcpy(n->type, type, type_len < sizeof n->type ? type_len : 0);
  return 0;
}

TEST_IMPL(sse_type_with_nul) {
  static const char in[] = "event: a\0b\ndata: x\n\n";
  spool__sse p;
  spool__sse_init(&p, 0);
  named got = {{0}, 0};
  ASSERT_EQ(spool__sse_feed(&p, in, sizeof in - 1, record_type, &got), 0);
  ASSERT_EQ(got.len, 3);
  ASSERT(memcmp(got.type, "a\0b", 3) == 0);
  spool__sse_free(&p);
}
