/*
 * fuzz_extract.c: libFuzzer target for the lenient extractor (extract.c)
 * and the strict reader it starts with (json.c). Built only with
 * -DSPOOL_FUZZ=ON (clang, ASan, UBSan); scripts/test runs it for a bounded
 * time over the seed corpus in corpus/extract.
 *
 * The sink checks the shape of what it is told (every container closed,
 * keys only in objects) so a parser bug shows as a crash, not just memory
 * errors.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/extract.h"

typedef struct shape {
  char open[SPOOL_JSON_MAX_DEPTH + 2]; /* 'o' or 'a' per open container */
  int depth;
  int want_value; /* a key was given, its value is due */
  long values;
} shape;

static void check(int ok) {
  if (!ok)
    abort();
}

static int value(shape *s) {
  check(s->depth == 0 || s->open[s->depth] == 'a' || s->want_value);
  s->want_value = 0;
  s->values++;
  return 0;
}

static int s_null(void *ud) {
  return value(ud);
}
static int s_bool(void *ud, int v) {
  (void)v;
  return value(ud);
}
static int s_int(void *ud, long long v) {
  (void)v;
  return value(ud);
}
static int s_num(void *ud, double v) {
  check(v == v && !isinf(v)); /* no NaN or infinity ever reaches a sink */
  return value(ud);
}
static int s_str(void *ud, const char *p, size_t n) {
  check(spool__utf8_valid_prefix(p, n) == n);
  return value(ud);
}
/* A big integer is digits, never a rounded or repaired guess. */
static int s_big(void *ud, const char *p, size_t n) {
  size_t sign = n > 0 && p[0] == '-';
  check(n - sign >= 19); /* INT64_MAX has 19 digits */
  for (size_t i = sign; i < n; i++)
    check(p[i] >= '0' && p[i] <= '9');
  return value(ud);
}
static int s_key(void *ud, const char *p, size_t n) {
  shape *s = ud;
  check(s->depth > 0 && s->open[s->depth] == 'o' && !s->want_value);
  check(spool__utf8_valid_prefix(p, n) == n);
  s->want_value = 1;
  return 0;
}
static int s_begin(shape *s, char kind) {
  value(s);
  check(s->depth <= SPOOL_JSON_MAX_DEPTH);
  s->open[++s->depth] = kind;
  return 0;
}
static int s_barr(void *ud) {
  return s_begin(ud, 'a');
}
static int s_bobj(void *ud) {
  return s_begin(ud, 'o');
}
static int s_end(shape *s, char kind) {
  check(s->depth > 0 && s->open[s->depth] == kind && !s->want_value);
  s->depth--;
  return 0;
}
static int s_earr(void *ud) {
  return s_end(ud, 'a');
}
static int s_eobj(void *ud) {
  return s_end(ud, 'o');
}

static const spool__json_sink sink = {s_null, s_bool, s_int, s_num,
                                      s_big,  s_str,  s_key, s_barr,
                                      s_earr, s_bobj, s_eobj};

static void h_begin(void *ud) {
  shape *s = ud;
  memset(s, 0, sizeof *s);
}
static void h_reject(void *ud) {
  (void)ud;
}
static int h_accept(void *ud, const spool__extract_result *r) {
  shape *s = ud;
  check(s->depth == 0 && !s->want_value && s->values > 0);
  check(r->from <= r->to);
  const char *m = r->repairs;
  for (int i = 0; i < r->nrepairs; i++) {
    size_t n = strlen(m); /* every message is terminated ... */
    check(spool__utf8_valid_prefix(m, n) == n); /* ... and UTF-8 */
    m += n + 1;
  }
  return 0;
}

static const spool__extract_hooks hooks = {h_begin, h_reject, h_accept};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  shape s;
  spool__extract_work work = {0};
  spool__json_error err;
  /* The first byte picks the flags, so partial mode is fuzzed too. */
  int flags = size > 0 && (data[0] & 1) ? SPOOL_EXTRACT_PARTIAL : 0;
  spool__extract((const char *)data, size, 8, flags, &sink, &hooks, &s, &work,
                 &err);
  spool__extract_work_free(&work);
  return 0;
}
