/*
 * test_json.c: the strict JSON reader and the writers, through json.h. A
 * sink re-serializes what the parser reports, so each case reads as
 * "input parses to this canonical text" (integers as integers, doubles
 * tagged, strings unescaped and re-escaped).
 */
#include <math.h>

#include "codec/json.h"
#include "test.h"

typedef struct canon {
  spool__buf out;
  int first[SPOOL_JSON_MAX_DEPTH + 2];
  int depth;
  int after_key;
} canon;

static void sep(canon *c) {
  if (c->after_key) {
    c->after_key = 0;
    return;
  }
  if (c->depth > 0 && !c->first[c->depth])
    spool__buf_addc(&c->out, ',');
  c->first[c->depth] = 0;
}

static int c_null(void *ud) {
  canon *c = ud;
  sep(c);
  return spool__buf_adds(&c->out, "null");
}
static int c_bool(void *ud, int v) {
  canon *c = ud;
  sep(c);
  return spool__buf_adds(&c->out, v ? "true" : "false");
}
static int c_int(void *ud, long long v) {
  canon *c = ud;
  sep(c);
  return spool__buf_printf(&c->out, "i%lld", v);
}
static int c_num(void *ud, double v) {
  canon *c = ud;
  sep(c);
  return spool__buf_printf(&c->out, "d%.17g", v);
}
static int c_big(void *ud, const char *s, size_t n) {
  canon *c = ud;
  sep(c);
  return spool__buf_printf(&c->out, "b%.*s", (int)n, s);
}
static int c_str(void *ud, const char *s, size_t n) {
  canon *c = ud;
  sep(c);
  return spool__json_write_string(&c->out, s, n) ? -1 : 0;
}
static int c_key(void *ud, const char *s, size_t n) {
  canon *c = ud;
  sep(c);
  spool__json_write_string(&c->out, s, n);
  c->after_key = 1;
  return spool__buf_addc(&c->out, ':');
}
static int c_open(canon *c, char ch) {
  sep(c);
  c->first[++c->depth] = 1;
  return spool__buf_addc(&c->out, ch);
}
static int c_barr(void *ud) {
  return c_open(ud, '[');
}
static int c_bobj(void *ud) {
  return c_open(ud, '{');
}
static int c_earr(void *ud) {
  canon *c = ud;
  c->depth--;
  return spool__buf_addc(&c->out, ']');
}
static int c_eobj(void *ud) {
  canon *c = ud;
  c->depth--;
  return spool__buf_addc(&c->out, '}');
}

static const spool__json_sink canon_sink = {c_null, c_bool, c_int, c_num,
                                            c_big,  c_str,  c_key, c_barr,
                                            c_earr, c_bobj, c_eobj};

/* Parses text (of length n) and returns the canonical form, or the error
 * as "ERR line:col msg". The result is static, overwritten each call. */
static const char *parse_n(const char *text, size_t n) {
  static char result[4096];
  canon c;
  memset(&c, 0, sizeof c);
  spool__buf scratch = {0};
  spool__json_error err;
  if (spool__json_parse(text, n, &canon_sink, &c, &scratch, &err) == 0)
    snprintf(result, sizeof result, "%s", c.out.data ? c.out.data : "");
  else
    snprintf(result, sizeof result, "ERR %d:%d %s", err.line, err.column,
             err.msg);
  spool__buf_free(&c.out);
  spool__buf_free(&scratch);
  return result;
}

static const char *parse(const char *text) {
  return parse_n(text, strlen(text));
}

TEST_IMPL(json_values) {
  ASSERT_STR_EQ(parse("null"), "null");
  ASSERT_STR_EQ(parse(" true "), "true");
  ASSERT_STR_EQ(parse("\t\r\nfalse\n"), "false");
  ASSERT_STR_EQ(parse("[]"), "[]");
  ASSERT_STR_EQ(parse("{}"), "{}");
  ASSERT_STR_EQ(parse("[1, [2, []], {\"a\": {}}]"), "[i1,[i2,[]],{\"a\":{}}]");
  ASSERT_STR_EQ(parse("{\"a\":1,\"b\":[true,null],\"a\":2}"),
                "{\"a\":i1,\"b\":[true,null],\"a\":i2}");
  /* Deep but within the limit. */
  char deep[2 * SPOOL_JSON_MAX_DEPTH + 1];
  for (int i = 0; i < SPOOL_JSON_MAX_DEPTH; i++) {
    deep[i] = '[';
    deep[2 * SPOOL_JSON_MAX_DEPTH - 1 - i] = ']';
  }
  deep[2 * SPOOL_JSON_MAX_DEPTH] = '\0';
  ASSERT(strncmp(parse(deep), "ERR", 3) != 0);
}

TEST_IMPL(json_numbers) {
  ASSERT_STR_EQ(parse("0"), "i0");
  ASSERT_STR_EQ(parse("-0"), "i0");
  ASSERT_STR_EQ(parse("42"), "i42");
  ASSERT_STR_EQ(parse("-17"), "i-17");
  ASSERT_STR_EQ(parse("9223372036854775807"), "i9223372036854775807");
  ASSERT_STR_EQ(parse("-9223372036854775808"), "i-9223372036854775808");
  /* Past 64 bits an integer keeps its digits; it is never rounded. */
  ASSERT_STR_EQ(parse("9223372036854775808"), "b9223372036854775808");
  ASSERT_STR_EQ(parse("-123456789012345678901234"),
                "b-123456789012345678901234");
  ASSERT_STR_EQ(parse("12345678901234567890.0"), "d1.2345678901234567e+19");
  ASSERT_STR_EQ(parse("1.0"), "d1");
  ASSERT_STR_EQ(parse("1e2"), "d100");
  ASSERT_STR_EQ(parse("-1.5E-3"), "d-0.0015");
  ASSERT_STR_EQ(parse("0.1"), "d0.10000000000000001");
  /* A double's range: past it is an error, not an infinity that no
   * encoder writes back; below it rounds to zero, as any reader does. */
  ASSERT_STR_EQ(parse("1e400"), "ERR 1:1 number out of range: larger than a "
                                "double can hold (1.8e308)");
  ASSERT_STR_EQ(parse("[1, -1E999]"), "ERR 1:5 number out of range: larger "
                                      "than a double can hold (1.8e308)");
  char digits[402] = "9";
  memset(digits + 1, '0', 400);
  digits[401] = '\0';
  /* An integer that long is past a double's range too, and exact. */
  ASSERT_EQ(parse(digits)[0], 'b');
  ASSERT_EQ(strlen(parse(digits)), 402);
  ASSERT_STR_EQ(parse("1.7976931348623157e308"), "d1.7976931348623157e+308");
  ASSERT_STR_EQ(parse("1e-400"), "d0");
  /* Long mantissas go through the scratch copy. */
  ASSERT_STR_EQ(parse("3.14159265358979323846264338327950288419716939937510"
                      "58209749445923078164062862089986280348253421170679"),
                "d3.1415926535897931");
}

TEST_IMPL(json_strings) {
  ASSERT_STR_EQ(parse("\"\""), "\"\"");
  ASSERT_STR_EQ(parse("\"a\\\"b\\\\c\\/d\""), "\"a\\\"b\\\\c/d\"");
  ASSERT_STR_EQ(parse("\"\\b\\f\\n\\r\\t\""), "\"\\b\\f\\n\\r\\t\"");
  ASSERT_STR_EQ(parse("\"\\u00e9\""), "\"\xc3\xa9\"");
  ASSERT_STR_EQ(parse("\"\\ud83d\\ude00\""), "\"\xf0\x9f\x98\x80\"");
  ASSERT_STR_EQ(parse("\"caf\xc3\xa9 \xe2\x82\xac\""),
                "\"caf\xc3\xa9 \xe2\x82\xac\"");
  /* \u0000 is a legal character inside a string. */
  const char *r = parse_n("\"a\\u0000b\"", 10);
  ASSERT_EQ(r[0], '"');
  ASSERT_STR_EQ(r, "\"a\\u0000b\"");
}

TEST_IMPL(json_errors) {
  ASSERT_STR_EQ(parse(""), "ERR 1:1 empty input, expected a JSON value");
  ASSERT_STR_EQ(parse("   "), "ERR 1:4 empty input, expected a JSON value");
  ASSERT_STR_EQ(parse("[1,]"), "ERR 1:3 trailing comma before ']'");
  ASSERT_STR_EQ(parse("{\"a\":1,}"), "ERR 1:7 trailing comma before '}'");
  ASSERT_STR_EQ(parse("{a:1}"), "ERR 1:2 expected a string key, found 'a'");
  ASSERT_STR_EQ(parse("{\"a\" 1}"),
                "ERR 1:6 expected ':' after an object key, found '1'");
  ASSERT_STR_EQ(parse("[1 2]"),
                "ERR 1:4 expected ',' or ']' after an array element, "
                "found '2'");
  ASSERT_STR_EQ(parse("\n\n  tru"), "ERR 3:3 unexpected 't', expected a value");
  ASSERT_STR_EQ(parse("'a'"), "ERR 1:1 unexpected ''', expected a value");
  ASSERT_STR_EQ(parse("\"abc"), "ERR 1:1 unterminated string");
  ASSERT_STR_EQ(parse("\"a\nb\""),
                "ERR 1:3 control character 0x0a in string (it must be "
                "escaped)");
  ASSERT_STR_EQ(parse("\"\\x\""),
                "ERR 1:2 invalid escape '\\' followed by 'x'");
  ASSERT_STR_EQ(parse("\"\\ud800\""), "ERR 1:2 unpaired surrogate \\uD800 in "
                                      "string");
  ASSERT_STR_EQ(parse("\"\\udc00\""), "ERR 1:2 unpaired surrogate \\uDC00 in "
                                      "string");
  ASSERT_STR_EQ(parse("\"\\u12\""),
                "ERR 1:2 invalid \\u escape: expected 4 hex digits");
  ASSERT_STR_EQ(parse("\"\xc3\x28\""), "ERR 1:2 invalid UTF-8 in string");
  ASSERT_STR_EQ(parse("\"\xed\xa0\x80\""), "ERR 1:2 invalid UTF-8 in string");
  ASSERT_STR_EQ(parse("\"\xc0\xaf\""), "ERR 1:2 invalid UTF-8 in string");
  ASSERT_STR_EQ(parse("01"), "ERR 1:1 numbers cannot have leading zeros");
  ASSERT_STR_EQ(parse("1."), "ERR 1:3 expected a digit after the decimal "
                             "point");
  ASSERT_STR_EQ(parse("-"), "ERR 1:2 expected a digit in number");
  ASSERT_STR_EQ(parse("1e"), "ERR 1:3 expected a digit in the exponent");
  ASSERT_STR_EQ(parse("NaN"), "ERR 1:1 unexpected 'N', expected a value");
  ASSERT_STR_EQ(parse("{} x"), "ERR 1:4 unexpected 'x' after the JSON value");
  ASSERT_STR_EQ(parse("[1"), "ERR 1:3 expected ',' or ']' after an array "
                             "element, found end of input");
  char too_deep[2 * SPOOL_JSON_MAX_DEPTH + 3];
  memset(too_deep, '[', SPOOL_JSON_MAX_DEPTH + 1);
  memset(too_deep + SPOOL_JSON_MAX_DEPTH + 1, ']', SPOOL_JSON_MAX_DEPTH + 1);
  too_deep[2 * SPOOL_JSON_MAX_DEPTH + 2] = '\0';
  ASSERT_CONTAINS(parse(too_deep), "nesting deeper than 512 levels");
  /* A NUL byte is not whitespace. */
  ASSERT_STR_EQ(parse_n("1\0", 2), "ERR 1:2 unexpected byte 0x00 after the "
                                   "JSON value");
}

static const char *write_double(double d) {
  static char out[64];
  spool__buf b = {0};
  int rc = spool__json_write_double(&b, d);
  snprintf(out, sizeof out, "%s",
           rc == 0    ? b.data
           : rc == -2 ? "REJECT"
                      : "NOMEM");
  spool__buf_free(&b);
  return out;
}

static const char *write_string(const char *s, size_t n) {
  static char out[256];
  spool__buf b = {0};
  int rc = spool__json_write_string(&b, s, n);
  snprintf(out, sizeof out, "%s", rc == 0 ? b.data : "REJECT");
  spool__buf_free(&b);
  return out;
}

TEST_IMPL(json_writers) {
  ASSERT_STR_EQ(write_double(1.0), "1.0");
  ASSERT_STR_EQ(write_double(-0.0), "-0.0");
  ASSERT_STR_EQ(write_double(0.1), "0.1");
  ASSERT_STR_EQ(write_double(1.0 / 3), "0.3333333333333333");
  ASSERT_STR_EQ(write_double(1e300), "1e+300");
  ASSERT(spool__strtod(write_double(5e-324), NULL) == 5e-324);
  ASSERT_STR_EQ(write_double(NAN), "REJECT");
  ASSERT_STR_EQ(write_double(INFINITY), "REJECT");
  /* Every written double reads back as itself. */
  double samples[] = {0.1,  2.0 / 3,       123456789.123456789,
                      1e-7, 6.02214076e23, 9007199254740993.0};
  for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++)
    ASSERT(spool__strtod(write_double(samples[i]), NULL) == samples[i]);
  ASSERT_STR_EQ(write_string("a\"b\\c/d", 7), "\"a\\\"b\\\\c/d\"");
  ASSERT_STR_EQ(write_string("\n\t\x01\x7f", 4), "\"\\n\\t\\u0001\x7f\"");
  ASSERT_STR_EQ(write_string("\xc3\xa9", 2), "\"\xc3\xa9\"");
  ASSERT_STR_EQ(write_string("\xff", 1), "REJECT");
  ASSERT_STR_EQ(write_string("\xe2\x82", 2), "REJECT");
  ASSERT_EQ(spool__utf8_valid_prefix("ab\xc3\xa9\xff", 5), 4);
}
