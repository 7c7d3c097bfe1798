/*
 * extract.c: finding the JSON values in a model's reply (see extract.h);
 * extract_parse.c reads each one.
 *
 * Where values start: strict JSON of the whole text first (exact, no
 * repair), then ``` fences, then each { or [ in the prose, then a lone
 * scalar. A value that fails to parse is skipped whole (by its brackets),
 * so nothing inside it is offered in its place; one that never closes
 * ends the search. A ``` inside a JSON string is text, not a fence. Work
 * is bounded: one pass per candidate start, at most a fixed number of
 * starts tried.
 *
 * No Lua here; values go to a json.h sink, so this code is fuzzed alone.
 */
#include "codec/extract.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "codec/extract_parse.h"

/* Starts tried before giving up on the prose (bounds the work). */
#define MAX_STARTS 256

void spool__extract_work_free(spool__extract_work *w) {
  spool__buf_free(&w->scratch);
  spool__buf_free(&w->repairs);
  spool__buf_free(&w->decoded);
}

typedef struct finder {
  const char *text;
  size_t n;
  int flags;
  const spool__json_sink *sink;
  const spool__extract_hooks *hooks;
  void *ud;
  spool__extract_work *work;
  spool__json_error *err;
  int have_err;
  const char *fail_at; /* where the last candidate tried failed */
  const char *skip_to; /* the end of the last value that failed: nothing
                          before it is a value of its own */
  size_t decoded;      /* bytes of escaped documents decoded so far */
  int accepted;
  int max;
  int done;
  int starts; /* candidate starts tried, at most MAX_STARTS */
  spool__lp_rest rest;
  spool__lp_pos pos;
} finder;

#define is_blank spool__lp_blank
#define is_num_char spool__lp_num_char

/* Is the value opening at p an escaped document ({\"a\": 1}: a JSON
 * string printed instead of its value)? Its first string's quote is \". */
static int escaped_document(const char *p, const char *end) {
  for (p++; p < end; p++) {
    if (is_blank(*p) || *p == '{' || *p == '[')
      continue;
    if (*p != '\\' || p + 1 >= end)
      return 0;
    if (p[1] == '"')
      return 1;
    if (p[1] != 'n' && p[1] != 't' && p[1] != 'r')
      return 0;
    p++; /* a printed \n between tokens */
  }
  return 0;
}

/* Tries one candidate in text[from..limit); returns its end or NULL (and
 * f->fail_at says where it failed). A scalar may start it only with
 * scalar_ok; with whole, only blanks may follow it. One that ends before
 * `cover` is not taken (and is no failure). */
static const char *try_at(finder *f, const char *from, const char *limit,
                          int fenced, int scalar_ok, int whole,
                          const char *cover) {
  spool__lp ps;
  memset(&ps, 0, offsetof(spool__lp, in));
  ps.in[0] = 0;
  ps.text = f->text;
  ps.p = from;
  ps.end = limit;
  ps.sink = f->sink;
  ps.ud = f->ud;
  ps.scratch = &f->work->scratch;
  ps.repairs = &f->work->repairs;
  ps.strict_words = scalar_ok && whole;
  ps.partial = (f->flags & SPOOL_EXTRACT_PARTIAL) != 0;
  ps.excess = -1;
  ps.rest = &f->rest;
  ps.pos = &f->pos;
  spool__buf_clear(ps.repairs);
  spool__json_error e;
  memset(&e, 0, sizeof e);
  ps.err = &e;
  f->hooks->begin(f->ud);
  spool__lp_skip(&ps);
  const char *start = ps.p;
  int ok = !(ps.p >= ps.end) && (scalar_ok || *ps.p == '{' || *ps.p == '[');
  if (ok && (*ps.p == '{' || *ps.p == '[') && escaped_document(ps.p, ps.end) &&
      f->decoded <= 4 * f->n + (64u << 10)) { /* bounded work in all */
    /* Decoded as far as its brackets reach: the work stays per byte. */
    const char *closes;
    spool__lp_brackets(ps.p, ps.end, 1, 1, &closes);
    ps.src_end = closes ? closes : ps.end;
    f->decoded += (size_t)(ps.src_end - ps.p);
    if (spool__lp_decode(ps.p, ps.src_end, &f->work->decoded) != 0) {
      ok = 0;
      spool__lp_fail(&ps, start, "out of memory");
    } else {
      spool__lp_repair(&ps, start,
                       "read an escaped document (\\\" for \") as JSON");
      ps.decoded = f->work->decoded.data;
      ps.src = start;
      ps.p = ps.decoded;
      ps.end = ps.decoded + f->work->decoded.len;
    }
  }
  ok = ok && spool__lp_value(&ps) == 0;
  if (ok && whole) {
    const char *q = ps.p;
    while (q < ps.end && is_blank(*q))
      q++;
    /* 42, or "text", as a list's first; cb(42); as a statement */
    if (q < ps.end && (*q == ',' || *q == ';')) {
      const char *mark = q++;
      while (q < ps.end && is_blank(*q))
        q++;
      if (q >= ps.end)
        spool__lp_repair(&ps, mark, "removed a trailing %s",
                         *mark == ',' ? "comma" : "';'");
      else
        q = mark;
    }
    if (q < ps.end) {
      ok = 0;
      spool__lp_fail(&ps, q, "no JSON value in the text");
    }
  }
  if (ok && ps.partial && ps.p >= ps.end && is_num_char(*start)) {
    const char *q = start;
    while (q < ps.end && is_num_char(*q))
      q++;
    if (q >= ps.end) { /* 12 may be 125 */
      ok = 0;
      spool__lp_fail(&ps, start,
                     "the number the text ends in may not be "
                     "complete yet");
    }
  }
  const char *stop = spool__lp_original(&ps, ps.p);
  if (ok && cover && stop <= cover) {
    f->hooks->reject(f->ud);
    return NULL;
  }
  if (!ok) {
    if (ps.p >= ps.end && !scalar_ok && e.msg[0] == '\0')
      snprintf(e.msg, sizeof e.msg, "no JSON value");
    f->fail_at = f->text + e.pos;
    if (start < limit && !(start < f->skip_to) &&
        (*start == '{' || *start == '[')) {
      const char *closes;
      spool__lp_brackets(start, limit, escaped_document(start, limit), 1,
                         &closes);
      f->skip_to = closes == NULL         ? limit
                   : f->fail_at >= closes ? f->fail_at + 1
                                          : closes;
    }
    if ((!f->have_err || ps.fatal) && e.msg[0]) {
      *f->err = e;
      f->have_err = 1;
    }
    if (ps.fatal)
      f->done = 1;
    f->hooks->reject(f->ud);
    return NULL;
  }
  if (ps.nrepairs > SPOOL_EXTRACT_MAX_REPAIRS) {
    spool__buf_printf(ps.repairs, "and %d more repairs",
                      ps.nrepairs - SPOOL_EXTRACT_MAX_REPAIRS);
    spool__buf_add(ps.repairs, "", 1);
  }
  spool__extract_result r;
  r.from = (size_t)(start - f->text);
  r.to = (size_t)(stop - f->text);
  r.fenced = fenced;
  r.truncated = ps.truncated;
  r.nrepairs = ps.nrepairs > SPOOL_EXTRACT_MAX_REPAIRS
                   ? SPOOL_EXTRACT_MAX_REPAIRS + 1
                   : ps.nrepairs;
  r.repairs = ps.repairs->data ? ps.repairs->data : "";
  f->accepted++;
  if (f->hooks->accept(f->ud, &r) || f->accepted >= f->max)
    f->done = 1;
  return stop;
}

/* A fence found in the text: where it opens, its body, and what its info
 * string says. */
typedef struct fence {
  const char *open, *body, *body_end;
  int json; /* no info string, or one that starts with "json" */
} fence;

/* The next ``` at or after p that is not inside a "string" on its line
 * (an odd count of unescaped quotes before it): text inside a JSON value
 * is not a fence. Returns the first byte of the ```, or NULL. */
static const char *next_ticks(const char *p, const char *end) {
  const char *counted = p;
  int odd = 0;
  for (;;) {
    const char *t = memchr(p, '`', (size_t)(end - p));
    if (!t || end - t < 3)
      return NULL;
    if (t[1] != '`' || t[2] != '`') {
      p = t + 1;
      continue;
    }
    for (; counted < t; counted++) /* the quotes up to it, once each */
      if (*counted == '\\')
        counted++;
      else if (*counted == '\n')
        odd = 0;
      else if (*counted == '"')
        odd ^= 1;
    if (!odd && counted == t)
      return t;
    p = t + 3;
  }
}

/* The next fence at or after p: fills *fc (its body runs to the end of
 * the text when it is never closed) and returns what follows it. */
static const char *next_fence(const char *p, const char *end, fence *fc) {
  const char *open = next_ticks(p, end);
  if (!open)
    return NULL;
  const char *q = open + 3, *info = q;
  while (q < end && !is_blank(*q) && *q != '{' && *q != '[' && *q != '`')
    q++;
  fc->open = open;
  fc->json = q == info || (q - info >= 4 && memcmp(info, "json", 4) == 0);
  fc->body = q;
  const char *close = next_ticks(q, end);
  fc->body_end = close ? close : end;
  return close ? close + 3 : end;
}

/* The outermost { or [ in [p, at) still open at at ("strings" skipped),
 * or NULL: a fence after it may be text inside its value. */
static const char *open_before(const char *p, const char *at) {
  const char *outer = NULL;
  int depth = 0;
  for (; p < at; p++) {
    char c = *p;
    if (c == '\\') {
      p++;
    } else if (c == '"') {
      for (p++; p < at && *p != '"'; p++)
        if (*p == '\\')
          p++;
    } else if (c == '{' || c == '[') {
      if (depth++ == 0)
        outer = p;
    } else if ((c == '}' || c == ']') && depth > 0 && --depth == 0) {
      outer = NULL;
    }
  }
  return depth > 0 ? outer : NULL;
}

int spool__extract(const char *text, size_t n, int max_candidates, int flags,
                   const spool__json_sink *sink,
                   const spool__extract_hooks *hooks, void *ud,
                   spool__extract_work *work, spool__json_error *err) {
  finder f;
  memset(&f, 0, sizeof f);
  f.text = text;
  f.n = n;
  f.flags = flags;
  f.sink = sink;
  f.hooks = hooks;
  f.ud = ud;
  f.work = work;
  f.err = err;
  f.max = max_candidates > 0 ? max_candidates : 1;
  memset(err, 0, sizeof *err);
  if (n > SPOOL_EXTRACT_MAX_TEXT) {
    snprintf(err->msg, sizeof err->msg, "the text is larger than %u MiB",
             SPOOL_EXTRACT_MAX_TEXT >> 20);
    return -1;
  }
  const char *end = text + n;
  /* 1. Strict JSON, the whole text: exact, no repair. (Not tried when the
   * text cannot be JSON: it starts with prose or a fence; nor, streaming,
   * when it ends in a number that may grow.) */
  const char *a = text, *b = end;
  while (a < b && is_blank(*a))
    a++;
  int may_be_json =
      a < end && (strchr("{[\"-tfn", *a) != NULL || (*a >= '0' && *a <= '9'));
  if ((flags & SPOOL_EXTRACT_PARTIAL) && n > 0 && is_num_char(end[-1]))
    may_be_json = 0;
  hooks->begin(ud);
  spool__json_error strict;
  if (may_be_json &&
      spool__json_parse(text, n, sink, ud, &work->scratch, &strict) == 0) {
    while (b > a && is_blank(b[-1]))
      b--;
    spool__extract_result r = {
        (size_t)(a - text), (size_t)(b - text), 0, 0, 0, ""};
    hooks->accept(ud, &r);
    return 1;
  }
  hooks->reject(ud);
  /* 2. Fenced blocks, in order: an object or array, or (in a fence that
   * says JSON) one lone scalar. A fence inside a value that opens before
   * it is text: that value is the candidate. The prose scan skips what
   * held a value, and what failed. */
  enum { MAX_TAKEN = 64 };
  const char *taken[MAX_TAKEN][2];
  int ntaken = 0;
  const char *p = text, *next;
  fence fc;
  while (!f.done && ntaken < MAX_TAKEN && f.starts < MAX_STARTS &&
         (next = next_fence(p, end, &fc)) != NULL) {
    f.starts++;
    const char *outer = open_before(p, fc.open), *got;
    if (outer && !(outer < f.skip_to)) {
      got = try_at(&f, outer, end, 0, 0, 0, fc.open);
      if (got || f.skip_to > fc.open) { /* the fence is inside it */
        taken[ntaken][0] = outer;
        taken[ntaken][1] = got ? got : f.skip_to;
        ntaken++;
        p = got ? got : next > f.skip_to ? next : f.skip_to;
        continue;
      }
    }
    got = try_at(&f, fc.body, fc.body_end, 1, 0, 0, NULL);
    if (!got && !f.done && fc.json)
      got = try_at(&f, fc.body, fc.body_end, 1, 1, 1, NULL);
    /* The rest of a body that held a value may hold more: the prose scan
     * reads them. One that held none is code, or a value that failed. */
    taken[ntaken][0] = fc.open;
    taken[ntaken][1] = got ? got : next;
    ntaken++;
    p = next;
  }
  f.skip_to = NULL;
  /* 3. Objects and arrays in the prose. One that fails is skipped whole,
   * past its brackets and past where it failed: what is inside it is part
   * of it, not a value of its own. */
  for (p = text; !f.done && p < end; p++) {
    for (int i = 0; i < ntaken; i++)
      if (p >= taken[i][0] && p < taken[i][1])
        p = taken[i][1];
    if (p >= end || (*p != '{' && *p != '['))
      continue;
    if (p < f.skip_to) {
      p = f.skip_to - 1;
      continue;
    }
    if (f.starts++ >= MAX_STARTS) {
      if (!f.have_err) {
        snprintf(err->msg, sizeof err->msg,
                 "stopped looking for values after %d starts", MAX_STARTS);
        err->pos = (size_t)(p - text);
        spool__lp_locate(&f.pos, text, p, &err->line, &err->column);
        f.have_err = 1;
      }
      break;
    }
    const char *stop = try_at(&f, p, end, 0, 0, 0, NULL);
    if (!stop && f.skip_to >= end)
      break;
    p = (stop ? stop : f.skip_to) - 1;
  }
  /* 4. A lone scalar, when the text holds nothing else. */
  if (f.accepted == 0)
    try_at(&f, text, end, 0, 1, 1, NULL);
  if (f.accepted == 0) {
    if (!f.have_err) {
      snprintf(err->msg, sizeof err->msg, "no JSON value in the text");
      err->line = err->column = 1;
    }
    return -1;
  }
  return f.accepted;
}
