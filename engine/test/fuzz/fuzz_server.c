/*
 * fuzz_server.c: libFuzzer target for the server's request parsing
 * (server_parse.c over http-parser), without sockets. Built only with
 * -DSPOOL_FUZZ=ON (clang, ASan, UBSan); scripts/test runs it for a bounded
 * time over the seed corpus in corpus/server.
 *
 * The input after its first byte is a connection's bytes. They are read
 * twice, the way server.c reads them (a backlog, each complete request
 * taken before the rest is parsed): once in one piece, once cut into
 * reads of sizes drawn from the first byte. A handler must see the same
 * requests, and the connection end the same way, however the bytes were
 * cut (the status of a refusal too, though not always its message): a
 * difference, or a memory error in the accessors, is a crash.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/server_parse.h"

/* Small, so that 413 is reached within -max_len. */
#define MAX_BODY 256

#define check(ok)                                                              \
  do {                                                                         \
    if (!(ok)) {                                                               \
      fprintf(stderr, "fuzz_server.c:%d: %s\n", __LINE__, #ok);                \
      abort();                                                                 \
    }                                                                          \
  } while (0)

/* Appends what a handler can read of r to out, checking its shape. */
static void describe(spool__buf *out, const spool__srv_req *r) {
  spool__buf_printf(out, "REQ %s %s peer=%s\n", spool__srv_req_method(r),
                    spool__srv_req_target(r), spool__srv_req_peer(r));
  const char *name, *value;
  int i = 0;
  for (; (name = spool__srv_req_header(r, i, &value)) != NULL; i++) {
    for (const char *c = name; *c; c++)
      check(*c < 'A' || *c > 'Z'); /* names are lower-cased */
    spool__buf_printf(out, "H %s: %s\n", name, value);
  }
  check(i == r->nheaders);
  size_t len;
  const char *body = spool__srv_req_body(r, &len);
  check(len <= MAX_BODY);
  spool__buf_printf(out, "BODY %zu keep_alive=%d\n", len, r->keep_alive);
  spool__buf_add(out, body, len);
}

static uint32_t next(uint32_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 17;
  *x ^= *x << 5;
  return *x;
}

/* Reads data as one connection, in reads of sizes drawn from seed (0: all
 * at once), and writes what a handler would see to out. */
static void feed(const uint8_t *data, size_t size, uint32_t seed,
                 spool__buf *out) {
  spool__srv_parser sp;
  spool__srv_parser_init(&sp, MAX_BODY, "127.0.0.1");
  spool__buf backlog = {0};
  size_t off = 0;
  while (off < size) {
    size_t n = seed == 0 ? size - off : 1 + next(&seed) % 64;
    if (n > size - off)
      n = size - off;
    check(spool__buf_add(&backlog, data + off, n) == 0);
    off += n;
    while (backlog.len > 0) {
      long used = spool__srv_parse(&sp, backlog.data, backlog.len);
      if (used < 0) {
        check(sp.status == 400 || sp.status == 413);
        check(sp.why != NULL && sp.req == NULL);
        /* The status, not the message: which of two faults is seen
         * first may depend on where a read ended. */
        spool__buf_printf(out, "FAIL %d\n", sp.status);
        goto done;
      }
      check((size_t)used <= backlog.len);
      memmove(backlog.data, backlog.data + used, backlog.len - (size_t)used);
      backlog.len -= (size_t)used;
      if (sp.complete) {
        spool__srv_req *r = spool__srv_parser_take(&sp);
        check(r != NULL && !sp.complete);
        describe(out, r);
        spool__srv_req_free(r);
      } else if (used == 0) {
        break;
      } else {
        check(backlog.len == 0); /* all read, or a request ended */
      }
    }
  }
  spool__buf_printf(out, "END busy=%d\n", spool__srv_parser_busy(&sp));
done:
  spool__srv_parser_free(&sp);
  spool__buf_free(&backlog);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  uint32_t seed = 0x9e3779b9u ^ data[0];
  spool__buf whole = {0}, cut = {0};
  feed(data + 1, size - 1, 0, &whole);
  feed(data + 1, size - 1, seed, &cut);
  if (getenv("FUZZ_SERVER_SHOW")) /* to see why a crash input differs */
    fprintf(stderr, "---- in one piece:\n%s\n---- cut:\n%s\n", whole.data,
            cut.data);
  check(whole.len == cut.len && memcmp(whole.data, cut.data, whole.len) == 0);
  spool__buf_free(&whole);
  spool__buf_free(&cut);
  return 0;
}
