/*
 * test_extract.c: the lenient extractor through extract.h, with a sink
 * that re-serializes what it is told (as test_json.c does) and hooks that
 * record each candidate, so each case reads "reply -> values, repairs".
 */
#include "codec/extract.h"
#include "test.h"

typedef struct canon {
  spool__buf out;
  int first[SPOOL_JSON_MAX_DEPTH + 2];
  int depth, after_key;
  size_t mark;    /* out.len when the candidate began */
  char all[2048]; /* the repairs, one per line */
  int ncands, nrepairs, truncated;
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
static int k_null(void *ud) {
  sep(ud);
  return spool__buf_adds(&((canon *)ud)->out, "null");
}
static int k_bool(void *ud, int v) {
  sep(ud);
  return spool__buf_adds(&((canon *)ud)->out, v ? "true" : "false");
}
static int k_int(void *ud, long long v) {
  sep(ud);
  return spool__buf_printf(&((canon *)ud)->out, "%lld", v);
}
static int k_num(void *ud, double v) {
  sep(ud);
  return spool__json_write_double(&((canon *)ud)->out, v);
}
static int k_big(void *ud, const char *s, size_t n) {
  sep(ud);
  return spool__buf_add(&((canon *)ud)->out, s, n);
}
static int k_str(void *ud, const char *s, size_t n) {
  sep(ud);
  return spool__json_write_string(&((canon *)ud)->out, s, n) ? -1 : 0;
}
static int k_key(void *ud, const char *s, size_t n) {
  canon *c = ud;
  sep(c);
  spool__json_write_string(&c->out, s, n);
  c->after_key = 1;
  return spool__buf_addc(&c->out, ':');
}
static int k_open(canon *c, char ch) {
  sep(c);
  c->first[++c->depth] = 1;
  return spool__buf_addc(&c->out, ch);
}
static int k_barr(void *ud) {
  return k_open(ud, '[');
}
static int k_bobj(void *ud) {
  return k_open(ud, '{');
}
static int k_earr(void *ud) {
  ((canon *)ud)->depth--;
  return spool__buf_addc(&((canon *)ud)->out, ']');
}
static int k_eobj(void *ud) {
  ((canon *)ud)->depth--;
  return spool__buf_addc(&((canon *)ud)->out, '}');
}
static const spool__json_sink sink = {k_null, k_bool, k_int, k_num,
                                      k_big,  k_str,  k_key, k_barr,
                                      k_earr, k_bobj, k_eobj};

static void h_begin(void *ud) {
  canon *c = ud;
  c->mark = c->out.len;
  c->depth = c->after_key = 0;
}
static void h_reject(void *ud) {
  canon *c = ud;
  c->out.len = c->mark;
  if (c->out.data)
    c->out.data[c->out.len] = '\0';
}
static int h_accept(void *ud, const spool__extract_result *r) {
  canon *c = ud;
  c->ncands++;
  c->nrepairs += r->nrepairs;
  c->truncated |= r->truncated;
  const char *m = r->repairs;
  for (int i = 0; i < r->nrepairs; i++, m += strlen(m) + 1) {
    size_t used = strlen(c->all);
    snprintf(c->all + used, sizeof c->all - used, "%s\n", m);
  }
  spool__buf_addc(&c->out, ';');
  return 0;
}
static const spool__extract_hooks hooks = {h_begin, h_reject, h_accept};

/* The accepted candidates as "v1;v2;", or "ERR line:col msg". */
static const char *run_flags(const char *text, int flags, canon *c);
static const char *run(const char *text, canon *c) {
  return run_flags(text, 0, c);
}
static const char *run_flags(const char *text, int flags, canon *c) {
  static char result[2048];
  memset(c, 0, sizeof *c);
  spool__extract_work work = {0};
  spool__json_error err;
  int n = spool__extract(text, strlen(text), 8, flags, &sink, &hooks, c, &work,
                         &err);
  if (n < 0)
    snprintf(result, sizeof result, "ERR %d:%d %s", err.line, err.column,
             err.msg);
  else
    snprintf(result, sizeof result, "%s", c->out.data ? c->out.data : "");
  spool__buf_free(&c->out);
  spool__extract_work_free(&work);
  return result;
}

TEST_IMPL(extract_strict_exactly) {
  canon c;
  ASSERT_STR_EQ(run("{\"a\":1,\"b\":[1.5,\"x\",null]}", &c),
                "{\"a\":1,\"b\":[1.5,\"x\",null]};");
  ASSERT_EQ(c.nrepairs, 0);
  ASSERT_STR_EQ(run("  42  ", &c), "42;");
  ASSERT_EQ(c.nrepairs, 0);
}

TEST_IMPL(extract_finds_candidates) {
  canon c;
  ASSERT_STR_EQ(run("Sure:\n```json\n{\"a\":1}\n```\nand {\"b\":2}", &c),
                "{\"a\":1};{\"b\":2};");
  ASSERT_EQ(c.ncands, 2);
  ASSERT_STR_EQ(run("The answer is 42.", &c),
                "ERR 1:1 no JSON value in the text");
  ASSERT_STR_EQ(run("", &c), "ERR 1:1 no JSON value in the text");
}

TEST_IMPL(extract_repairs) {
  canon c;
  ASSERT_STR_EQ(run("{a: 'b', c: [1,2,], d: True}", &c),
                "{\"a\":\"b\",\"c\":[1,2],\"d\":true};");
  ASSERT_EQ(c.nrepairs, 6); /* keys a c d, quotes, comma, True */
  ASSERT_STR_EQ(run("{\"items\": [1, 2", &c), "{\"items\":[1,2]};");
  ASSERT(c.truncated);
  ASSERT_STR_EQ(run("{\"a\":\"b,c,\"d\":\"e\"}", &c),
                "{\"a\":\"b,c\",\"d\":\"e\"};");
  ASSERT_STR_EQ(run("[0789, .5, 2e]", &c), "[\"0789\",0.5,2.0];");
  /* Out of a double's range: null, as Infinity is, and said so. */
  ASSERT_STR_EQ(run("{\"a\": 1e999, \"b\": -1e400, \"c\": 1}", &c),
                "{\"a\":null,\"b\":null,\"c\":1};");
  ASSERT_EQ(c.nrepairs, 2);
}

TEST_IMPL(extract_refuses) {
  canon c;
  ASSERT_STR_EQ(run("{\"a\": @}", &c),
                "ERR 1:7 unexpected '@', expected a value");
  ASSERT_STR_EQ(run("{:2}", &c), "ERR 1:2 expected a key, found ':'");
}

TEST_IMPL(extract_no_inner_fragment) {
  canon c;
  /* The whole fails: an error where it fails, not the [1] inside it. */
  ASSERT_STR_EQ(run("{\"t\": \"see [1] here\" \"n\": 2 @@}", &c),
                "ERR 1:29 expected ',' or '}' after an object member, "
                "found '@'");
  /* One that never closes hides everything after it. */
  ASSERT_STR_EQ(run("[{\"a\": 1} @ {\"b\": 2}", &c),
                "ERR 1:11 expected ',' or ']' after an array element, "
                "found '@'");
  /* Braces in prose are skipped whole. */
  ASSERT_STR_EQ(run("Use {name}, then {\"a\": 1}", &c), "{\"a\":1};");
  /* A fence inside a string is text. */
  ASSERT_STR_EQ(run("{\"c\": \"```x\\n[2]\\n```\", }", &c),
                "{\"c\":\"```x\\n[2]\\n```\"};");
  /* A closer too early merges what follows. */
  ASSERT_STR_EQ(run("{\"a\": 1}, \"b\": 2}", &c), "{\"a\":1,\"b\":2};");
}

TEST_IMPL(extract_partial) {
  canon c;
  /* Streaming: the number the text ends in may grow; a key with no value
   * yet is left out. */
  ASSERT_STR_EQ(
      run_flags("{\"a\": \"x\", \"n\": 12", SPOOL_EXTRACT_PARTIAL, &c),
      "{\"a\":\"x\"};");
  ASSERT(c.truncated);
  ASSERT_STR_EQ(run_flags("[1, 2, 3", SPOOL_EXTRACT_PARTIAL, &c), "[1,2];");
  ASSERT_STR_EQ(run_flags("{\"a\": 1, \"b\": ", SPOOL_EXTRACT_PARTIAL, &c),
                "{\"a\":1};");
  ASSERT_STR_EQ(run("{\"a\": 1, \"n\": 12", &c), "{\"a\":1,\"n\":12};");
}

TEST_IMPL(extract_big_integers_and_escaped_documents) {
  canon c;
  ASSERT_STR_EQ(run("[123456789012345678901, -99999999999999999999]", &c),
                "[123456789012345678901,-99999999999999999999];");
  ASSERT_EQ(c.nrepairs, 0);
  ASSERT_STR_EQ(run("{id: 123456789012345678901234567890123456789012345678901"
                    "234567890}",
                    &c),
                "{\"id\":1234567890123456789012345678901234567890123456789012"
                "34567890};");
  ASSERT_STR_EQ(run("{\\\"a\\\": [\\\"x\\\"]}", &c), "{\"a\":[\"x\"]};");
  /* A repair inside one is placed in the reply, not in its decoded copy:
   * the extra comma at column 13 of {\"a\": 1,, \"b\": 2}. */
  ASSERT_STR_EQ(run("x {\\\"a\\\": 1,, \\\"b\\\": 2}", &c),
                "{\"a\":1,\"b\":2};");
  ASSERT_CONTAINS(c.all, "line 1, column 13: removed an extra comma");
}
