/*
 * json.c: the strict JSON reader and the writers declared in json.h. No Lua
 * here: values go to a sink, so the parser can be tested and fuzzed alone.
 *
 * The reader accepts RFC 8259 and nothing else; every rejection says where
 * and why, in words a person (or a model being re-asked) can act on.
 */
#define _GNU_SOURCE /* strtod_l, newlocale */
#include "codec/json.h"

#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct parser {
  const char *start;
  const char *p;
  const char *end;
  const spool__json_sink *sink;
  void *ud;
  spool__buf *scratch;
  spool__json_error *err;
  int depth;
} parser;

static int parse_value(parser *ps);

static int fail(parser *ps, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(parser *ps, const char *at, const char *fmt, ...) {
  spool__json_error *err = ps->err;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  va_end(ap);
  err->pos = (size_t)(at - ps->start);
  err->line = 1;
  err->column = 1;
  for (const char *q = ps->start; q < at; q++) {
    if (*q == '\n') {
      err->line++;
      err->column = 1;
    } else {
      err->column++;
    }
  }
  return -1;
}

/* A readable name for the byte at p, for error messages. */
static const char *describe(parser *ps, const char *p, char out[16]) {
  if (p >= ps->end)
    return "end of input";
  unsigned char c = (unsigned char)*p;
  if (c >= 0x20 && c < 0x7f)
    snprintf(out, 16, "'%c'", c);
  else
    snprintf(out, 16, "byte 0x%02x", c);
  return out;
}

static int stopped(parser *ps) {
  return fail(ps, ps->p, "stopped by the reader");
}

static void skip_ws(parser *ps) {
  while (ps->p < ps->end) {
    char c = *ps->p;
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
      break;
    ps->p++;
  }
}

/* See json.h. */
size_t spool__utf8_seq(const unsigned char *p, const unsigned char *end) {
  unsigned char c = p[0];
  size_t avail = (size_t)(end - p);
  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf)
    return (avail >= 2 && (p[1] & 0xc0) == 0x80) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    if (avail < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
      return 0;
    if (c == 0xe0 && p[1] < 0xa0)
      return 0; /* overlong */
    if (c == 0xed && p[1] > 0x9f)
      return 0; /* a surrogate encoded directly */
    return 3;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if (avail < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 ||
        (p[3] & 0xc0) != 0x80)
      return 0;
    if (c == 0xf0 && p[1] < 0x90)
      return 0; /* overlong */
    if (c == 0xf4 && p[1] > 0x8f)
      return 0; /* past U+10FFFF */
    return 4;
  }
  return 0;
}

size_t spool__utf8_valid_prefix(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s, *end = p + n;
  while (p < end) {
    size_t k = spool__utf8_seq(p, end);
    if (k == 0)
      break;
    p += k;
  }
  return (size_t)(p - (const unsigned char *)s);
}

int spool__utf8_put(spool__buf *b, unsigned long cp) {
  char out[4];
  size_t n;
  if (cp < 0x80) {
    out[0] = (char)cp;
    n = 1;
  } else if (cp < 0x800) {
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    n = 2;
  } else if (cp < 0x10000) {
    out[0] = (char)(0xe0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (char)(0x80 | (cp & 0x3f));
    n = 3;
  } else {
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    n = 4;
  }
  return spool__buf_add(b, out, n);
}

int spool__json_hex4(const char *p, const char *end, unsigned long *out) {
  unsigned long v = 0;
  if (end - p < 4)
    return -1;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= (unsigned long)(c - '0');
    else if (c >= 'a' && c <= 'f')
      v |= (unsigned long)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      v |= (unsigned long)(c - 'A' + 10);
    else
      return -1;
  }
  *out = v;
  return 0;
}

int spool__json_escape_char(int e) {
  switch (e) {
  case '"':
  case '\\':
  case '/':
    return e;
  case 'b':
    return '\b';
  case 'f':
    return '\f';
  case 'n':
    return '\n';
  case 'r':
    return '\r';
  case 't':
    return '\t';
  }
  return -1;
}

/* Reads the \uXXXX escape at ps->p (pointing at the 'u'), surrogate pairs
 * included, and appends its UTF-8 to the scratch buffer. */
static int unicode_escape(parser *ps) {
  const char *at = ps->p - 1; /* the backslash */
  unsigned long cp, lo;
  if (spool__json_hex4(ps->p + 1, ps->end, &cp) != 0)
    return fail(ps, at, "invalid \\u escape: expected 4 hex digits");
  ps->p += 5;
  if (cp >= 0xdc00 && cp <= 0xdfff)
    return fail(ps, at, "unpaired surrogate \\u%04lX in string", cp);
  if (cp >= 0xd800 && cp <= 0xdbff) {
    if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u' ||
        spool__json_hex4(ps->p + 2, ps->end, &lo) != 0 || lo < 0xdc00 ||
        lo > 0xdfff)
      return fail(ps, at, "unpaired surrogate \\u%04lX in string", cp);
    ps->p += 6;
    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
  }
  if (spool__utf8_put(ps->scratch, cp) != 0)
    return fail(ps, at, "out of memory");
  return 0;
}

/*
 * Reads the string at ps->p (pointing at the opening quote). Strings without
 * escapes are passed to the sink in place; the others are unescaped into the
 * scratch buffer first.
 */
static int parse_string(parser *ps, int is_key) {
  const char *open = ps->p;
  const char *s = ++ps->p;
  int escaped = 0;
  spool__buf *sb = ps->scratch;
  for (;;) {
    if (ps->p >= ps->end)
      return fail(ps, open, "unterminated string");
    unsigned char c = (unsigned char)*ps->p;
    if (c == '"')
      break;
    if (c == '\\') {
      if (!escaped) {
        escaped = 1;
        spool__buf_clear(sb);
      }
      if (spool__buf_add(sb, s, (size_t)(ps->p - s)) != 0)
        return fail(ps, ps->p, "out of memory");
      ps->p++;
      if (ps->p >= ps->end)
        return fail(ps, open, "unterminated string");
      char e = *ps->p;
      int out = spool__json_escape_char(e);
      if (e == 'u') {
        if (unicode_escape(ps) != 0)
          return -1;
        s = ps->p;
        continue;
      }
      if (out < 0) {
        char d[16];
        return fail(ps, ps->p - 1, "invalid escape '\\' followed by %s",
                    describe(ps, ps->p, d));
      }
      if (spool__buf_addc(sb, (char)out) != 0)
        return fail(ps, ps->p, "out of memory");
      s = ++ps->p;
      continue;
    }
    if (c < 0x20)
      return fail(ps, ps->p,
                  "control character 0x%02x in string (it must be escaped)", c);
    if (c < 0x80) {
      ps->p++;
      continue;
    }
    size_t k = spool__utf8_seq((const unsigned char *)ps->p,
                               (const unsigned char *)ps->end);
    if (k == 0)
      return fail(ps, ps->p, "invalid UTF-8 in string");
    ps->p += k;
  }
  const char *str = s;
  size_t len = (size_t)(ps->p - s);
  if (escaped) {
    if (spool__buf_add(sb, s, len) != 0)
      return fail(ps, ps->p, "out of memory");
    str = sb->data;
    len = sb->len;
  }
  ps->p++; /* the closing quote */
  int rc = is_key ? ps->sink->key(ps->ud, str, len)
                  : ps->sink->string(ps->ud, str, len);
  return rc ? stopped(ps) : 0;
}

static int is_digit(const char *p, const char *end) {
  return p < end && *p >= '0' && *p <= '9';
}

/* Reads a number with JSON's grammar. Integers within 64 bits stay
 * integers; longer ones go to the sink as their digits (a 20-digit id
 * must not come back rounded); everything else becomes a correctly
 * rounded double. A number
 * past a double's range is an error: read as an infinity, it would pass
 * here and fail later, where no encoder can write it (RFC 8259 section 6
 * leaves the range to the implementation). One too small rounds to zero,
 * as in every reader. */
static int parse_number(parser *ps) {
  const char *start = ps->p, *q = ps->p, *end = ps->end;
  int is_int = 1, neg = 0;
  if (*q == '-') {
    neg = 1;
    q++;
  }
  if (!is_digit(q, end))
    return fail(ps, q, "expected a digit in number");
  if (*q == '0') {
    q++;
    if (is_digit(q, end))
      return fail(ps, start, "numbers cannot have leading zeros");
  } else {
    while (is_digit(q, end))
      q++;
  }
  if (q < end && *q == '.') {
    q++;
    if (!is_digit(q, end))
      return fail(ps, q, "expected a digit after the decimal point");
    while (is_digit(q, end))
      q++;
    is_int = 0;
  }
  if (q < end && (*q == 'e' || *q == 'E')) {
    q++;
    if (q < end && (*q == '+' || *q == '-'))
      q++;
    if (!is_digit(q, end))
      return fail(ps, q, "expected a digit in the exponent");
    while (is_digit(q, end))
      q++;
    is_int = 0;
  }
  ps->p = q;
  if (is_int) {
    uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : INT64_MAX;
    int overflow = 0;
    for (const char *d = start + neg; d < q; d++) {
      uint64_t digit = (uint64_t)(*d - '0');
      if (v > (limit - digit) / 10) {
        overflow = 1;
        break;
      }
      v = v * 10 + digit;
    }
    if (!overflow) {
      long long i = neg ? (long long)(0 - v) : (long long)v;
      return ps->sink->integer(ps->ud, i) ? stopped(ps) : 0;
    }
    return ps->sink->big_integer(ps->ud, start, (size_t)(q - start))
               ? stopped(ps)
               : 0;
  }
  /* strtod needs a terminated copy: the input need not be NUL-terminated. */
  char small[64];
  size_t len = (size_t)(q - start);
  char *copy = small;
  if (len >= sizeof small) {
    spool__buf_clear(ps->scratch);
    if (spool__buf_add(ps->scratch, start, len) != 0)
      return fail(ps, start, "out of memory");
    copy = ps->scratch->data;
  } else {
    memcpy(small, start, len);
    small[len] = '\0';
  }
  double d = spool__strtod(copy, NULL);
  if (isinf(d))
    return fail(ps, start,
                "number out of range: larger than a double can hold "
                "(1.8e308)");
  return ps->sink->number(ps->ud, d) ? stopped(ps) : 0;
}

static int parse_literal(parser *ps, const char *word, size_t n) {
  if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) {
    char d[16];
    return fail(ps, ps->p, "unexpected %s, expected a value",
                describe(ps, ps->p, d));
  }
  ps->p += n;
  return 0;
}

static int enter(parser *ps) {
  if (++ps->depth > SPOOL_JSON_MAX_DEPTH)
    return fail(ps, ps->p, "nesting deeper than %d levels",
                SPOOL_JSON_MAX_DEPTH);
  return 0;
}

static int parse_array(parser *ps) {
  if (enter(ps) != 0)
    return -1;
  ps->p++;
  if (ps->sink->begin_array(ps->ud))
    return stopped(ps);
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == ']') {
    ps->p++;
    ps->depth--;
    return ps->sink->end_array(ps->ud) ? stopped(ps) : 0;
  }
  for (;;) {
    if (parse_value(ps) != 0)
      return -1;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ',') {
      const char *comma = ps->p++;
      skip_ws(ps);
      if (ps->p < ps->end && *ps->p == ']')
        return fail(ps, comma, "trailing comma before ']'");
      continue;
    }
    if (ps->p < ps->end && *ps->p == ']')
      break;
    char d[16];
    return fail(ps, ps->p,
                "expected ',' or ']' after an array element, "
                "found %s",
                describe(ps, ps->p, d));
  }
  ps->p++;
  ps->depth--;
  return ps->sink->end_array(ps->ud) ? stopped(ps) : 0;
}

static int parse_object(parser *ps) {
  if (enter(ps) != 0)
    return -1;
  ps->p++;
  if (ps->sink->begin_object(ps->ud))
    return stopped(ps);
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == '}') {
    ps->p++;
    ps->depth--;
    return ps->sink->end_object(ps->ud) ? stopped(ps) : 0;
  }
  for (;;) {
    char d[16];
    if (ps->p >= ps->end || *ps->p != '"')
      return fail(ps, ps->p, "expected a string key, found %s",
                  describe(ps, ps->p, d));
    if (parse_string(ps, 1) != 0)
      return -1;
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != ':')
      return fail(ps, ps->p, "expected ':' after an object key, found %s",
                  describe(ps, ps->p, d));
    ps->p++;
    if (parse_value(ps) != 0)
      return -1;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ',') {
      const char *comma = ps->p++;
      skip_ws(ps);
      if (ps->p < ps->end && *ps->p == '}')
        return fail(ps, comma, "trailing comma before '}'");
      continue;
    }
    if (ps->p < ps->end && *ps->p == '}')
      break;
    return fail(ps, ps->p,
                "expected ',' or '}' after an object member, "
                "found %s",
                describe(ps, ps->p, d));
  }
  ps->p++;
  ps->depth--;
  return ps->sink->end_object(ps->ud) ? stopped(ps) : 0;
}

static int parse_value(parser *ps) {
  skip_ws(ps);
  if (ps->p >= ps->end)
    return fail(ps, ps->p, "unexpected end of input, expected a value");
  switch (*ps->p) {
  case '{':
    return parse_object(ps);
  case '[':
    return parse_array(ps);
  case '"':
    return parse_string(ps, 0);
  case 't':
    if (parse_literal(ps, "true", 4) != 0)
      return -1;
    return ps->sink->boolean(ps->ud, 1) ? stopped(ps) : 0;
  case 'f':
    if (parse_literal(ps, "false", 5) != 0)
      return -1;
    return ps->sink->boolean(ps->ud, 0) ? stopped(ps) : 0;
  case 'n':
    if (parse_literal(ps, "null", 4) != 0)
      return -1;
    return ps->sink->null_value(ps->ud) ? stopped(ps) : 0;
  default:
    if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
      return parse_number(ps);
    char d[16];
    return fail(ps, ps->p, "unexpected %s, expected a value",
                describe(ps, ps->p, d));
  }
}

int spool__json_parse(const char *s, size_t n, const spool__json_sink *sink,
                      void *ud, spool__buf *scratch, spool__json_error *err) {
  parser ps = {s, s, s + n, sink, ud, scratch, err, 0};
  skip_ws(&ps);
  if (ps.p >= ps.end)
    return fail(&ps, ps.p, "empty input, expected a JSON value");
  if (parse_value(&ps) != 0)
    return -1;
  skip_ws(&ps);
  if (ps.p < ps.end) {
    char d[16];
    return fail(&ps, ps.p, "unexpected %s after the JSON value",
                describe(&ps, ps.p, d));
  }
  return 0;
}

static int ok_none(void *ud) {
  (void)ud;
  return 0;
}
static int ok_bool(void *ud, int v) {
  (void)ud, (void)v;
  return 0;
}
static int ok_int(void *ud, long long v) {
  (void)ud, (void)v;
  return 0;
}
static int ok_num(void *ud, double v) {
  (void)ud, (void)v;
  return 0;
}
static int ok_str(void *ud, const char *p, size_t n) {
  (void)ud, (void)p, (void)n;
  return 0;
}
static const spool__json_sink check_sink = {ok_none, ok_bool, ok_int, ok_num,
                                            ok_str,  ok_str,  ok_str, ok_none,
                                            ok_none, ok_none, ok_none};

int spool__json_check(const char *s, size_t n, spool__buf *scratch,
                      spool__json_error *err) {
  spool__buf own = {0};
  int rc =
      spool__json_parse(s, n, &check_sink, NULL, scratch ? scratch : &own, err);
  spool__buf_free(&own);
  return rc;
}

void spool__json_error_format(const spool__json_error *err, char *out,
                              size_t size) {
  snprintf(out, size, "line %d, column %d (byte %zu): %s", err->line,
           err->column, err->pos, err->msg);
}

/* ---- writers ---------------------------------------------------------- */

/* Does one of the 8 bytes at p need more than a copy in a JSON string (a
 * control byte, a non-ASCII byte, '"' or '\\')? Eight at a time: a byte's
 * high bit is set in (v - 0x01..) & ~v only where v has a zero byte, or
 * below one that has, so the answer is exact for the word as a whole. */
static int needs_escape8(const unsigned char *p) {
  const uint64_t ones = 0x0101010101010101ULL, high = ones * 0x80;
  uint64_t w;
  memcpy(&w, p, 8);
  uint64_t quote = w ^ (ones * '"'), backslash = w ^ (ones * '\\');
  uint64_t found = ((w - ones * 0x20) & ~w) | ((quote - ones) & ~quote) |
                   ((backslash - ones) & ~backslash) | w;
  return (found & high) != 0;
}

int spool__json_write_string(spool__buf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)s, *end = p + n;
  if (spool__buf_reserve(b, n + 2) != 0)
    return -1;
  /* Most strings need no escape: they are copied whole. */
  const unsigned char *plain = p;
  while (end - plain >= 8 && !needs_escape8(plain))
    plain += 8;
  while (plain < end && *plain >= 0x20 && *plain < 0x80 && *plain != '"' &&
         *plain != '\\')
    plain++;
  if (plain == end) {
    char *o = b->data + b->len;
    o[0] = '"';
    memcpy(o + 1, s, n);
    o[n + 1] = '"';
    o[n + 2] = '\0';
    b->len += n + 2;
    return 0;
  }
  if (spool__buf_addc(b, '"') != 0)
    return -1;
  while (p < end) {
    const unsigned char *run = p;
    while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
      p++;
    if (p > run && spool__buf_add(b, run, (size_t)(p - run)) != 0)
      return -1;
    if (p >= end)
      break;
    unsigned char c = *p;
    if (c >= 0x80) {
      size_t k = spool__utf8_seq(p, end);
      if (k == 0)
        return -2;
      if (spool__buf_add(b, p, k) != 0)
        return -1;
      p += k;
      continue;
    }
    char esc[7] = {'\\', 0, 0, 0, 0, 0, 0};
    size_t len = 2;
    switch (c) {
    case '"':
      esc[1] = '"';
      break;
    case '\\':
      esc[1] = '\\';
      break;
    case '\b':
      esc[1] = 'b';
      break;
    case '\f':
      esc[1] = 'f';
      break;
    case '\n':
      esc[1] = 'n';
      break;
    case '\r':
      esc[1] = 'r';
      break;
    case '\t':
      esc[1] = 't';
      break;
    default:
      esc[1] = 'u';
      esc[2] = '0';
      esc[3] = '0';
      esc[4] = hex[c >> 4];
      esc[5] = hex[c & 15];
      len = 6;
    }
    if (spool__buf_add(b, esc, len) != 0)
      return -1;
    p++;
  }
  return spool__buf_addc(b, '"');
}

/* Writes the decimal digits of i; returns how many (at most 20). */
static size_t integer_text(char *text, long long i) {
  char digits[20];
  /* Negated as unsigned: -LLONG_MIN does not fit a long long. */
  unsigned long long u =
      i < 0 ? 0ULL - (unsigned long long)i : (unsigned long long)i;
  size_t n = 0, len = 0;
  do {
    digits[n++] = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (i < 0)
    text[len++] = '-';
  while (n)
    text[len++] = digits[--n];
  return len;
}

int spool__json_write_double(spool__buf *b, double d) {
  char text[40];
  if (isnan(d) || isinf(d))
    return -2;
  /* A whole number below 1e15 is what "%.15g" writes, digit for digit
   * (plus ".0"); most doubles an agent stores are such. -0.0 is not. */
  if (d > -1e15 && d < 1e15 && d == (double)(long long)d &&
      !(d == 0 && signbit(d))) {
    size_t n = integer_text(text, (long long)d);
    memcpy(text + n, ".0", 2);
    return spool__buf_add(b, text, n + 2);
  }
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(text, sizeof text, "%.*g", prec, d);
    /* A host may have set a locale whose decimal point is a comma. */
    for (char *c = text; *c; c++)
      if (*c == ',')
        *c = '.';
    if (spool__strtod(text, NULL) == d)
      break;
  }
  if (strpbrk(text, ".e") == NULL)
    strcat(text, ".0");
  return spool__buf_adds(b, text);
}

int spool__json_write_integer(spool__buf *b, long long i) {
  char text[24];
  return spool__buf_add(b, text, integer_text(text, i));
}

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void make_c_locale(void) {
  c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

double spool__strtod(const char *s, char **end) {
  pthread_once(&c_locale_once, make_c_locale);
  if (c_locale == (locale_t)0)
    return strtod(s, end);
  return strtod_l(s, end, c_locale);
}
