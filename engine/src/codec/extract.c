/*
 * extract.c: the lenient extractor (see extract.h).
 *
 * Two layers. The lenient parser reads one value from a position with
 * JSON's grammar widened to what models write, noting every repair. The
 * candidate finder decides where values start: strict JSON of the whole
 * text first (exact, no repair), then ``` fences, then each { or [ in the
 * prose, then a lone scalar. Work is bounded: one pass per candidate start,
 * at most a fixed number of starts tried.
 *
 * No Lua here; values go to a json.h sink, so this file is fuzzed alone.
 */
#include "codec/extract.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Starts tried before giving up on the prose (bounds the work). */
#define MAX_STARTS 256

typedef struct lp {
  const char *text; /* the whole reply, for positions */
  const char *p;    /* the cursor */
  const char *end;  /* the end of this candidate's region */
  const spool__json_sink *sink;
  void *ud;
  spool__buf *scratch;
  spool__buf *repairs;
  int nrepairs;
  int truncated;
  int depth;
  int strict_scalar; /* a top-level scalar: no bare words as strings */
  int fatal;         /* a failure that ends the search for candidates */
  spool__json_error *err;
} lp;

static void position(const char *text, const char *at, int *line, int *col) {
  *line = 1;
  *col = 1;
  for (const char *q = text; q < at; q++) {
    if (*q == '\n') {
      (*line)++;
      *col = 1;
    } else if (((unsigned char)*q & 0xc0) != 0x80) {
      (*col)++;
    }
  }
}

/* Messages quote the reply, which may not be UTF-8 (or was cut in the
 * middle of a character); they must be, as they go into events. */
static void make_utf8(char *msg) {
  size_t n = strlen(msg);
  for (size_t i = 0; i < n;) {
    size_t k = spool__utf8_seq((const unsigned char *)msg + i,
                               (const unsigned char *)msg + n);
    if (k == 0)
      msg[i++] = '?';
    else
      i += k;
  }
}

static void repair(lp *ps, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void repair(lp *ps, const char *at, const char *fmt, ...) {
  if (ps->nrepairs++ >= SPOOL_EXTRACT_MAX_REPAIRS)
    return;
  int line, col;
  position(ps->text, at, &line, &col);
  char msg[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  make_utf8(msg);
  spool__buf_printf(ps->repairs, "line %d, column %d: %s", line, col, msg);
  spool__buf_add(ps->repairs, "", 1); /* the NUL between messages */
}

static int fail(lp *ps, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(lp *ps, const char *at, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ps->err->msg, sizeof ps->err->msg, fmt, ap);
  va_end(ap);
  make_utf8(ps->err->msg);
  ps->err->pos = (size_t)(at - ps->text);
  position(ps->text, at, &ps->err->line, &ps->err->column);
  return -1;
}

static int stopped(lp *ps) {
  return fail(ps, ps->p, "stopped by the reader");
}

static int at_end(lp *ps) {
  return ps->p >= ps->end;
}

static int is_ident_start(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
         c == '$';
}

static int is_ident(unsigned char c) {
  return is_ident_start(c) || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

/* Is p at one of the three-byte characters models put between tokens as
 * if they were spaces: the en to hair spaces (U+2000-U+200A), the zero
 * width space and joiners (U+200B-U+200D), the line and paragraph
 * separators (U+2028, U+2029), the narrow no-break space (U+202F), the
 * math space and word joiner (U+205F, U+2060), the ideographic space
 * (U+3000), the Mongolian vowel separator (U+180E) and a byte order mark
 * (U+FEFF)? */
static int unicode_space(const char *p, const char *end) {
  if (end - p < 3)
    return 0;
  unsigned char a = (unsigned char)p[0], b = (unsigned char)p[1],
                c = (unsigned char)p[2];
  if (a == 0xe2 && b == 0x80)
    return c <= 0x8d || c == 0xa8 || c == 0xa9 || c == 0xaf;
  if (a == 0xe2 && b == 0x81)
    return c == 0x9f || c == 0xa0;
  return (a == 0xe3 && b == 0x80 && c == 0x80) ||
         (a == 0xe1 && b == 0xa0 && c == 0x8e) ||
         (a == 0xef && b == 0xbb && c == 0xbf);
}

/* The typographic quotes models sometimes use: “ ” ‘ ’ (3 bytes each). */
static int fancy_quote(const char *p, const char *end) {
  if (end - p < 3 || (unsigned char)p[0] != 0xe2 || (unsigned char)p[1] != 0x80)
    return 0;
  unsigned char c = (unsigned char)p[2];
  return c == 0x9c || c == 0x9d || c == 0x98 || c == 0x99;
}

/* Skips whitespace and comments (// ..., # ..., / * ... * /). */
static void skip(lp *ps) {
  while (ps->p < ps->end) {
    char c = *ps->p;
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      ps->p++;
    } else if ((c == '/' && ps->p + 1 < ps->end && ps->p[1] == '/') ||
               c == '#') {
      repair(ps, ps->p, "removed a comment");
      while (ps->p < ps->end && *ps->p != '\n')
        ps->p++;
    } else if (c == '/' && ps->p + 1 < ps->end && ps->p[1] == '*') {
      repair(ps, ps->p, "removed a comment");
      const char *close = NULL;
      for (const char *q = ps->p + 2; q + 1 < ps->end; q++)
        if (q[0] == '*' && q[1] == '/') {
          close = q;
          break;
        }
      ps->p = close ? close + 2 : ps->end;
    } else if ((unsigned char)c == 0xc2 && ps->p + 1 < ps->end &&
               (unsigned char)ps->p[1] == 0xa0) {
      repair(ps, ps->p, "read a no-break space as a space");
      ps->p += 2;
    } else if (unicode_space(ps->p, ps->end)) {
      repair(ps, ps->p, "read a special space as a space");
      ps->p += 3;
    } else {
      break;
    }
  }
}

static int parse_value(lp *ps);

/* The kind of a typographic quote at p: 1 double (“ ”), 2 single (‘ ’),
 * else 0. */
static int fancy_kind(const char *p, const char *end) {
  if (!fancy_quote(p, end))
    return 0;
  unsigned char c = (unsigned char)p[2];
  return (c == 0x9c || c == 0x9d) ? 1 : 2;
}

/* Does the quote whose last byte is at q end its string? Yes when what
 * follows (after blanks) may follow a string: a delimiter, the end, a
 * comment, a digit, or the quote of a next key or value. */
static int closes_string(lp *ps, const char *q) {
  const char *r = q + 1;
  while (r < ps->end && (*r == ' ' || *r == '\t' || unicode_space(r, ps->end)))
    r += *r == ' ' || *r == '\t' ? 1 : 3;
  if (r >= ps->end)
    return 1;
  char c = *r;
  if (c == ',' || c == '}' || c == ']' || c == '\n' || c == '\r' || c == ':' ||
      c == '"' || c == '+' || c == '#' || c == ')' || (c >= '0' && c <= '9'))
    return 1;
  if (c == '/' && r + 1 < ps->end && (r[1] == '/' || r[1] == '*'))
    return 1;
  /* A literal as the value of a key whose colon is missing ("a" true). */
  static const char *const literals[] = {"true", "false", "null"};
  for (int i = 0; i < 3; i++) {
    size_t n = strlen(literals[i]);
    if ((size_t)(ps->end - r) >= n && memcmp(r, literals[i], n) == 0 &&
        (r + n == ps->end || !is_ident((unsigned char)r[n])))
      return 1;
  }
  return 0;
}

static int is_delimiter(char c) {
  return c == ',' || c == ']' || c == '}' || c == '\n';
}

/*
 * Reads the string whose opening quote is at ps->p, appending its text to
 * ps->scratch. A quote that does not end the string (by closes_string) is
 * kept as text, unless a comma precedes it: then the comma ended the string
 * and the quote opens the next one ({"a":"b,c,"d":1}). A string that runs
 * to the end of the text ends at its first delimiter if the text ends with
 * one (["abc]), else is closed where the text stops.
 */
static int read_string(lp *ps) {
  const char *open = ps->p;
  spool__buf *sb = ps->scratch;
  int kind = fancy_kind(ps->p, ps->end);
  char quote = kind ? 0 : *ps->p;
  int quoted_inside = 0;
  const char *comma_src = NULL, *delim_src = NULL;
  size_t comma_len = 0, delim_len = 0;
  if (kind) {
    repair(ps, open, "replaced typographic quotes with \"");
    ps->p += 3;
  } else {
    if (quote == '\'')
      repair(ps, open, "replaced single quotes with double quotes");
    else if (quote == '`')
      repair(ps, open, "replaced backticks with double quotes");
    ps->p++;
  }
  for (;;) {
    /* Copy a run of plain bytes at once; stop at anything that needs a
     * decision. */
    const char *run = ps->p;
    while (ps->p < ps->end) {
      unsigned char b = (unsigned char)*ps->p;
      if (b == (unsigned char)quote || b == '\\' || b < 0x20 || b >= 0x80 ||
          b == ',' || b == ']' || b == '}')
        break;
      ps->p++;
    }
    if (ps->p > run)
      spool__buf_add(sb, run, (size_t)(ps->p - run));
    if (ps->p >= ps->end) {
      const char *last = ps->end;
      while (last > open + 1 && (last[-1] == ' ' || last[-1] == '\t' ||
                                 last[-1] == '\n' || last[-1] == '\r'))
        last--;
      if (delim_src && last > open + 1 && is_delimiter(last[-1]) &&
          last[-1] != '\n') {
        repair(ps, open,
               "ended a string with no closing quote at a "
               "delimiter");
        sb->len = delim_len;
        sb->data[sb->len] = '\0';
        ps->p = delim_src;
        return 0;
      }
      ps->truncated = 1;
      repair(ps, open, "closed a string the text cut off");
      return 0;
    }
    unsigned char c = (unsigned char)*ps->p;
    int fk = fancy_kind(ps->p, ps->end);
    int is_close = kind ? fk == kind : c == (unsigned char)quote;
    if (is_close) {
      const char *q = ps->p + (kind ? 2 : 0);
      if (closes_string(ps, q)) {
        ps->p = q + 1;
        return 0;
      }
      const char *before = ps->p;
      while (before > open + 1 && (before[-1] == ' ' || before[-1] == '\t' ||
                                   before[-1] == '\n' || before[-1] == '\r'))
        before--;
      if (comma_src && before - 1 == comma_src) {
        repair(ps, open, "ended a string with no closing quote at a comma");
        sb->len = comma_len;
        sb->data[sb->len] = '\0';
        ps->p = comma_src;
        return 0;
      }
      if (!quoted_inside++)
        repair(ps, ps->p, "escaped a quote inside a string");
      spool__buf_add(sb, ps->p, kind ? 3 : 1);
      ps->p += kind ? 3 : 1;
      continue;
    }
    if (is_delimiter((char)c) && !delim_src) {
      delim_src = ps->p;
      delim_len = sb->len;
    }
    if (c == ',') {
      comma_src = ps->p;
      comma_len = sb->len;
    }
    if (c == '\\') {
      ps->p++;
      if (ps->p >= ps->end)
        continue; /* cut off after a backslash */
      char e = *ps->p;
      /* JSON's escapes, and \' as models write it in any quotes. */
      int out = e == '\'' ? '\'' : spool__json_escape_char(e);
      if (out >= 0) {
        spool__buf_addc(sb, (char)out);
        ps->p++;
        continue;
      }
      switch (e) {
      case 'u': {
        unsigned long cp, lo;
        const char *at = ps->p - 1;
        if (spool__json_hex4(ps->p + 1, ps->end, &cp) != 0) {
          /* Cut off inside the escape: drop it. Bad digits: refuse. */
          for (const char *h = ps->p + 1; h < ps->p + 5; h++) {
            if (h >= ps->end) {
              ps->p = ps->end;
              ps->truncated = 1;
              repair(ps, at, "dropped a \\u escape the text cut off");
              goto next;
            }
            if (!((*h >= '0' && *h <= '9') || (*h >= 'a' && *h <= 'f') ||
                  (*h >= 'A' && *h <= 'F')))
              break;
          }
          int avail = (int)(ps->end - ps->p - 1);
          return fail(ps, at, "invalid unicode escape '\\u%.*s'",
                      avail < 4 ? avail : 4, ps->p + 1);
        }
        ps->p += 5;
        if (cp >= 0xd800 && cp <= 0xdbff && ps->end - ps->p >= 6 &&
            ps->p[0] == '\\' && ps->p[1] == 'u' &&
            spool__json_hex4(ps->p + 2, ps->end, &lo) == 0 && lo >= 0xdc00 &&
            lo <= 0xdfff) {
          ps->p += 6;
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        } else if (cp >= 0xd800 && cp <= 0xdfff) {
          repair(ps, at, "replaced an unpaired surrogate with U+FFFD");
          cp = 0xfffd;
        }
        spool__utf8_put(sb, cp);
        continue;
      }
      default:
        repair(ps, ps->p - 1,
               "dropped the backslash of an invalid escape "
               "'\\%c'",
               e);
        continue; /* the character itself is read next, as text */
      }
    }
    if (c < 0x20) {
      repair(ps, ps->p, "escaped a control character (0x%02x) in a string", c);
      spool__buf_addc(sb, (char)c);
      ps->p++;
      continue;
    }
    if (c >= 0x80) {
      size_t k = spool__utf8_seq((const unsigned char *)ps->p,
                                 (const unsigned char *)ps->end);
      if (k == 0) {
        repair(ps, ps->p, "replaced invalid UTF-8 with U+FFFD");
        spool__utf8_put(sb, 0xfffd);
        ps->p++;
      } else {
        spool__buf_add(sb, ps->p, k);
        ps->p += k;
      }
      continue;
    }
    spool__buf_addc(sb, (char)c);
    ps->p++;
  next:;
  }
}

/* Appends raw text from the reply to the scratch buffer as valid UTF-8:
 * bytes that are not become U+FFFD (noted once). */
static void add_text(lp *ps, const char *p, size_t n) {
  const unsigned char *q = (const unsigned char *)p, *end = q + n;
  int noted = 0;
  while (q < end) {
    size_t k = spool__utf8_seq(q, end);
    if (k == 0) {
      if (!noted++)
        repair(ps, (const char *)q, "replaced invalid UTF-8 with U+FFFD");
      spool__utf8_put(ps->scratch, 0xfffd);
      q++;
    } else {
      spool__buf_add(ps->scratch, q, k);
      q += k;
    }
  }
}

static int emit_string(lp *ps, int is_key) {
  const char *s = ps->scratch->data ? ps->scratch->data : "";
  int rc = is_key ? ps->sink->key(ps->ud, s, ps->scratch->len)
                  : ps->sink->string(ps->ud, s, ps->scratch->len);
  return rc ? stopped(ps) : 0;
}

static int starts_string(lp *ps) {
  return !at_end(ps) && (*ps->p == '"' || *ps->p == '\'' || *ps->p == '`' ||
                         fancy_quote(ps->p, ps->end));
}

/* A string value, joining "a" + "b" as JavaScript would. */
static int parse_string_value(lp *ps) {
  spool__buf_clear(ps->scratch);
  if (read_string(ps) != 0)
    return -1;
  for (;;) {
    const char *after = ps->p;
    skip(ps);
    if (at_end(ps) || *ps->p != '+') {
      ps->p = after;
      break;
    }
    const char *plus = ps->p++;
    skip(ps);
    if (at_end(ps)) {
      repair(ps, plus, "dropped a '+' the text ends with");
      break;
    }
    if (!starts_string(ps)) {
      ps->p = after;
      break;
    }
    repair(ps, plus, "joined strings with '+'");
    if (read_string(ps) != 0)
      return -1;
  }
  return emit_string(ps, 0);
}

static int parse_key_string(lp *ps) {
  spool__buf_clear(ps->scratch);
  if (read_string(ps) != 0)
    return -1;
  return emit_string(ps, 1);
}

/* Text with no quotes: to the next delimiter, or to a quote the text
 * forgot to open ({"a":foo"}), trailing blanks left out. */
static int parse_unquoted(lp *ps) {
  const char *start = ps->p, *q = ps->p;
  while (q < ps->end && *q != ',' && *q != '}' && *q != ']' && *q != '\n' &&
         *q != '\r' && *q != '"')
    q++;
  const char *stop = q;
  while (stop > start && (stop[-1] == ' ' || stop[-1] == '\t'))
    stop--;
  repair(ps, start, "quoted the bare text '%.*s'",
         (int)(stop - start > 40 ? 40 : stop - start), start);
  if (q < ps->end && *q == '"') {
    repair(ps, q,
           "dropped the closing quote of a string that had no "
           "opening one");
    q++;
  }
  ps->p = q;
  spool__buf_clear(ps->scratch);
  add_text(ps, start, (size_t)(stop - start));
  return emit_string(ps, 0);
}

/* A sink that only catches one number, so a trial parse emits nothing. */
typedef struct number {
  int is_int;
  long long i;
  double d;
} number;

static int n_int(void *ud, long long v) {
  number *n = ud;
  n->is_int = 1;
  n->i = v;
  return 0;
}
static int n_num(void *ud, double v) {
  number *n = ud;
  n->is_int = 0;
  n->d = v;
  return 0;
}
static int n_other(void *ud) {
  (void)ud;
  return 1;
}
static int n_bool(void *ud, int v) {
  (void)ud, (void)v;
  return 1;
}
static int n_str(void *ud, const char *s, size_t len) {
  (void)ud, (void)s, (void)len;
  return 1;
}
static const spool__json_sink number_sink = {n_other, n_bool, n_int,   n_num,
                                             n_str,   n_str,  n_other, n_other,
                                             n_other, n_other};

/* Reads text[0..len) as exactly one JSON number; 0 or -1. */
static int read_number(const char *text, size_t len, number *out) {
  spool__json_error e;
  spool__buf tmp = {0};
  int rc = spool__json_parse(text, len, &number_sink, out, &tmp, &e);
  spool__buf_free(&tmp);
  return rc;
}

static int emit_number(lp *ps, const number *n) {
  int rc = n->is_int ? ps->sink->integer(ps->ud, n->i)
                     : ps->sink->number(ps->ud, n->d);
  return rc ? stopped(ps) : 0;
}

/* Is text a number whose value is past a double's range? */
static int overflows(const char *text) {
  char *end;
  double d = spool__strtod(text, &end);
  return end != text && *end == '\0' && isinf(d);
}

static int is_num_char(char c) {
  return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' ||
         c == 'e' || c == 'E';
}

/* A number: JSON's grammar exactly when it fits. Otherwise a leading '+'
 * is dropped, ".5" and "5." are completed, an exponent the text cut off is
 * completed; a token that is no number at all (0.0.1, 0789 with its
 * leading zero that a number would lose, 2notanumber) is kept as a
 * string. One past a double's range (1e999), which the strict reader
 * refuses, is null, as Infinity is. */
static int parse_number(lp *ps) {
  const char *start = ps->p, *q = ps->p;
  while (q < ps->end && is_num_char(*q))
    q++;
  if (q < ps->end && (is_ident(*q) || *q == ':' || *q == '/'))
    return parse_unquoted(ps); /* 746de9ad-..., 2024-10-18T18:35:22Z */
  size_t len = (size_t)(q - start);
  char buf[64];
  if (len >= sizeof buf)
    return parse_unquoted(ps);
  memcpy(buf, start, len);
  buf[len] = '\0';
  number num;
  if (read_number(buf, len, &num) == 0) {
    ps->p = q;
    return emit_number(ps, &num);
  }
  const char *r = buf;
  if (*r == '-' || *r == '+')
    r++;
  if (r[0] == '0' && r[1] >= '0' && r[1] <= '9')
    return parse_unquoted(ps); /* leading zeros: keep every digit */
  char fixed[80];
  size_t n = 0;
  r = buf;
  if (*r == '+')
    r++;
  if (*r == '-')
    fixed[n++] = *r++;
  if (*r == '.')
    fixed[n++] = '0';
  while (*r && n < sizeof fixed - 3)
    fixed[n++] = *r++;
  if (n > 0 && (fixed[n - 1] == '-' || fixed[n - 1] == '+') && n > 1 &&
      (fixed[n - 2] == 'e' || fixed[n - 2] == 'E'))
    fixed[n++] = '0';
  else if (n > 0 && (fixed[n - 1] == 'e' || fixed[n - 1] == 'E'))
    fixed[n++] = '0';
  else if (n > 0 && fixed[n - 1] == '.')
    fixed[n++] = '0';
  else if (n == 1 && fixed[0] == '-')
    fixed[n++] = '0';
  fixed[n] = '\0';
  if (read_number(fixed, n, &num) != 0) {
    if (!overflows(fixed))
      return parse_unquoted(ps);
    repair(ps, start, "read the number '%s', too large for a double, as null",
           buf);
    ps->p = q;
    return ps->sink->null_value(ps->ud) ? stopped(ps) : 0;
  }
  repair(ps, start, "read the number '%s' as %s", buf, fixed);
  ps->p = q;
  return emit_number(ps, &num);
}

/* A bare word: a literal (true, True, None, undefined, NaN ...), a wrapper
 * such as NumberLong(2) or ObjectId("..."), or else unquoted text. */
static int parse_word(lp *ps) {
  const char *start = ps->p, *q = ps->p;
  while (q < ps->end && is_ident((unsigned char)*q))
    q++;
  size_t n = (size_t)(q - start);
  static const struct {
    const char *word;
    int kind; /* 0 null, 1 true, 2 false */
    int repaired;
  } words[] = {
      {"true", 1, 0},  {"false", 2, 0},     {"null", 0, 0}, {"True", 1, 1},
      {"False", 2, 1}, {"None", 0, 1},      {"TRUE", 1, 1}, {"FALSE", 2, 1},
      {"NULL", 0, 1},  {"undefined", 0, 1}, {"NaN", 0, 1},  {"Infinity", 0, 1},
      {"nil", 0, 1},
  };
  const char *after = q;
  while (after < ps->end && (*after == ' ' || *after == '\t'))
    after++;
  int ends_value = after >= ps->end || *after == ',' || *after == '}' ||
                   *after == ']' || *after == '\n' || *after == '\r' ||
                   *after == '/' || *after == '#';
  for (size_t i = 0; ends_value && i < sizeof words / sizeof words[0]; i++) {
    if (strlen(words[i].word) == n && memcmp(start, words[i].word, n) == 0) {
      if (words[i].repaired)
        repair(ps, start, "read %s as %s", words[i].word,
               words[i].kind == 0   ? "null"
               : words[i].kind == 1 ? "true"
                                    : "false");
      ps->p = q;
      int rc = words[i].kind == 0
                   ? ps->sink->null_value(ps->ud)
                   : ps->sink->boolean(ps->ud, words[i].kind == 1);
      return rc ? stopped(ps) : 0;
    }
  }
  if (q < ps->end && *q == '(' && n > 0) {
    /* NumberLong(2), ObjectId("5f1d"), ISODate("..."): keep the value. */
    repair(ps, start, "unwrapped %.*s(...)", (int)(n > 40 ? 40 : n), start);
    ps->p = q + 1;
    if (parse_value(ps) != 0)
      return -1;
    skip(ps);
    if (!at_end(ps) && *ps->p == ')')
      ps->p++;
    return 0;
  }
  /* The text cut off in the middle of a literal: the literal it begins
   * (each begins with a letter of its own), marked as cut off. */
  if (q >= ps->end && n > 0) {
    static const char *const literals[] = {"null", "true", "false"};
    for (int i = 0; i < 3; i++)
      if (n < strlen(literals[i]) && memcmp(literals[i], start, n) == 0) {
        ps->truncated = 1;
        ps->p = q;
        repair(ps, start, "completed %.*s, which the text cut off, as %s",
               (int)n, start, literals[i]);
        int rc = i == 0 ? ps->sink->null_value(ps->ud)
                        : ps->sink->boolean(ps->ud, i == 1);
        return rc ? stopped(ps) : 0;
      }
  }
  if (ps->strict_scalar)
    return fail(ps, start, "no JSON value in the text");
  return parse_unquoted(ps);
}

/* A regular expression literal /.../ becomes the string of its text. */
static int parse_regex(lp *ps) {
  const char *start = ps->p, *q = ps->p + 1;
  while (q < ps->end && *q != '/' && *q != '\n') {
    if (*q == '\\' && q + 1 < ps->end)
      q++;
    q++;
  }
  if (q >= ps->end || *q != '/')
    return fail(ps, start, "unexpected '/', expected a value");
  q++;
  repair(ps, start, "quoted a regular expression");
  ps->p = q;
  spool__buf_clear(ps->scratch);
  add_text(ps, start, (size_t)(q - start));
  return emit_string(ps, 0);
}

/* Skips "..." (a model eliding items), with the comma after it. */
static int skip_ellipsis(lp *ps) {
  if (ps->end - ps->p < 3 || memcmp(ps->p, "...", 3) != 0)
    return 0;
  repair(ps, ps->p, "removed an ellipsis");
  ps->p += 3;
  skip(ps);
  if (!at_end(ps) && *ps->p == ',')
    ps->p++;
  return 1;
}

static int enter(lp *ps) {
  if (++ps->depth > SPOOL_JSON_MAX_DEPTH) {
    ps->fatal = 1; /* no start inside it would do better */
    return fail(ps, ps->p, "nesting deeper than %d levels",
                SPOOL_JSON_MAX_DEPTH);
  }
  return 0;
}

/* Closes a container the text cut off. */
static int cut_off(lp *ps, const char *open, int object) {
  ps->truncated = 1;
  repair(ps, open, "closed %s the text cut off",
         object ? "an object" : "an array");
  ps->depth--;
  int rc = object ? ps->sink->end_object(ps->ud) : ps->sink->end_array(ps->ud);
  return rc ? stopped(ps) : 0;
}

static int starts_value(lp *ps) {
  if (at_end(ps))
    return 0;
  unsigned char c = (unsigned char)*ps->p;
  return c == '{' || c == '[' || c == '"' || c == '\'' || c == '`' ||
         (c >= '0' && c <= '9') || c == '-' || is_ident_start(c) ||
         fancy_quote(ps->p, ps->end);
}

static int parse_key(lp *ps) {
  unsigned char c = (unsigned char)*ps->p;
  if (c == '"' || c == '\'' || c == '`' || fancy_quote(ps->p, ps->end))
    return parse_key_string(ps);
  if (is_ident_start(c) || (c >= '0' && c <= '9') || c == '-') {
    const char *start = ps->p;
    while (ps->p < ps->end && is_ident((unsigned char)*ps->p))
      ps->p++;
    repair(ps, start, "quoted the key '%.*s'", (int)(ps->p - start), start);
    spool__buf_clear(ps->scratch);
    add_text(ps, start, (size_t)(ps->p - start));
    if (!at_end(ps) && *ps->p == '"') {
      repair(ps, ps->p,
             "dropped the closing quote of a key that had no "
             "opening one");
      ps->p++;
    }
    return emit_string(ps, 1);
  }
  return fail(ps, ps->p, "expected a key, found '%c'", c);
}

static int parse_object(lp *ps) {
  const char *open = ps->p++;
  if (enter(ps) != 0)
    return -1;
  if (ps->sink->begin_object(ps->ud))
    return stopped(ps);
  for (;;) {
    skip(ps);
    if (at_end(ps))
      return cut_off(ps, open, 1);
    char c = *ps->p;
    if (c == '}') {
      ps->p++;
      ps->depth--;
      return ps->sink->end_object(ps->ud) ? stopped(ps) : 0;
    }
    if (c == ',') {
      repair(ps, ps->p, "removed an extra comma");
      ps->p++;
      continue;
    }
    if (skip_ellipsis(ps))
      continue;
    if (c == ']') {
      repair(ps, ps->p, "read ']' as the '}' that closes this object");
      ps->p++;
      ps->depth--;
      return ps->sink->end_object(ps->ud) ? stopped(ps) : 0;
    }
    if (parse_key(ps) != 0)
      return -1;
    skip(ps);
    if (!at_end(ps) && *ps->p == ':') {
      ps->p++;
    } else if (!at_end(ps) && starts_value(ps)) {
      repair(ps, ps->p, "added a missing ':'");
    } else if (!at_end(ps)) {
      return fail(ps, ps->p, "expected ':' after an object key");
    }
    skip(ps);
    if (at_end(ps) || *ps->p == ',' || *ps->p == '}') {
      if (at_end(ps))
        ps->truncated = 1;
      repair(ps, ps->p, "gave a key with no value null");
      if (ps->sink->null_value(ps->ud))
        return stopped(ps);
    } else if (parse_value(ps) != 0) {
      return -1;
    }
    skip(ps);
    if (at_end(ps) || *ps->p == '}')
      continue;
    if (*ps->p == ',') {
      const char *comma = ps->p++;
      skip(ps);
      if (!at_end(ps) && *ps->p == '}')
        repair(ps, comma, "removed a trailing comma");
      continue;
    }
    if (*ps->p == '{' || *ps->p == '[') {
      /* A new object where a key should be: this one was never closed
       * ([{"i":1{"i":2}]). */
      repair(ps, ps->p, "added a missing '}'");
      ps->depth--;
      return ps->sink->end_object(ps->ud) ? stopped(ps) : 0;
    }
    if (starts_value(ps)) {
      repair(ps, ps->p, "added a missing ','");
      continue;
    }
    if (*ps->p == ']')
      continue;
    return fail(ps, ps->p,
                "expected ',' or '}' after an object member, "
                "found '%c'",
                *ps->p);
  }
}

static int parse_array(lp *ps) {
  const char *open = ps->p++;
  if (enter(ps) != 0)
    return -1;
  if (ps->sink->begin_array(ps->ud))
    return stopped(ps);
  for (;;) {
    skip(ps);
    if (at_end(ps))
      return cut_off(ps, open, 0);
    char c = *ps->p;
    if (c == ']') {
      ps->p++;
      ps->depth--;
      return ps->sink->end_array(ps->ud) ? stopped(ps) : 0;
    }
    if (c == ',') {
      repair(ps, ps->p, "removed an extra comma");
      ps->p++;
      continue;
    }
    if (skip_ellipsis(ps))
      continue;
    if (c == '}') {
      repair(ps, ps->p, "read '}' as the ']' that closes this array");
      ps->p++;
      ps->depth--;
      return ps->sink->end_array(ps->ud) ? stopped(ps) : 0;
    }
    if (parse_value(ps) != 0)
      return -1;
    skip(ps);
    if (at_end(ps) || *ps->p == ']' || *ps->p == '}')
      continue;
    if (*ps->p == ',') {
      const char *comma = ps->p++;
      skip(ps);
      if (!at_end(ps) && *ps->p == ']')
        repair(ps, comma, "removed a trailing comma");
      continue;
    }
    if (starts_value(ps)) {
      repair(ps, ps->p, "added a missing ','");
      continue;
    }
    return fail(ps, ps->p,
                "expected ',' or ']' after an array element, "
                "found '%c'",
                *ps->p);
  }
}

static int parse_value(lp *ps) {
  skip(ps);
  if (at_end(ps)) {
    ps->truncated = 1;
    repair(ps, ps->p, "put null where the text cut off a value");
    return ps->sink->null_value(ps->ud) ? stopped(ps) : 0;
  }
  unsigned char c = (unsigned char)*ps->p;
  if (c == '{')
    return parse_object(ps);
  if (c == '[')
    return parse_array(ps);
  if (starts_string(ps))
    return parse_string_value(ps);
  if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.')
    return parse_number(ps);
  if (is_ident_start(c))
    return parse_word(ps);
  if (c == '/')
    return parse_regex(ps);
  return fail(ps, ps->p, "unexpected '%c', expected a value", c);
}

/* ---- finding candidates ---- */

typedef struct finder {
  const char *text;
  size_t n;
  const spool__json_sink *sink;
  const spool__extract_hooks *hooks;
  void *ud;
  spool__buf *scratch;
  spool__buf *repairs;
  spool__json_error *err;
  int have_err;
  int accepted;
  int max;
  int done;
} finder;

/* Tries one candidate in text[from..limit); returns its end or NULL. A
 * scalar may start it only with scalar_ok; with whole, only blanks may
 * follow it. */
static const char *try_at(finder *f, const char *from, const char *limit,
                          int fenced, int scalar_ok, int whole) {
  lp ps = {0};
  ps.text = f->text;
  ps.p = from;
  ps.end = limit;
  ps.sink = f->sink;
  ps.ud = f->ud;
  ps.scratch = f->scratch;
  ps.repairs = f->repairs;
  ps.strict_scalar = scalar_ok && whole;
  spool__buf_clear(f->repairs);
  spool__json_error e;
  ps.err = &e;
  f->hooks->begin(f->ud);
  skip(&ps);
  const char *start = ps.p;
  memset(&e, 0, sizeof e);
  int ok = !at_end(&ps) && (scalar_ok || *ps.p == '{' || *ps.p == '[') &&
           parse_value(&ps) == 0;
  if (ok && whole) {
    const char *q = ps.p;
    while (q < limit && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
      q++;
    if (q < limit && *q == ',') { /* 42, or "text", as a list's first */
      const char *comma = q++;
      while (q < limit && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
        q++;
      if (q >= limit)
        repair(&ps, comma, "removed a trailing comma");
      else
        q = comma;
    }
    if (q < limit) {
      ok = 0;
      fail(&ps, q, "no JSON value in the text");
    }
  }
  if (!ok) {
    if (at_end(&ps) && !scalar_ok && e.msg[0] == '\0')
      snprintf(e.msg, sizeof e.msg, "no JSON value");
    if ((!f->have_err || ps.fatal) && ps.err->msg[0]) {
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
  r.to = (size_t)(ps.p - f->text);
  r.fenced = fenced;
  r.truncated = ps.truncated;
  r.nrepairs = ps.nrepairs > SPOOL_EXTRACT_MAX_REPAIRS
                   ? SPOOL_EXTRACT_MAX_REPAIRS + 1
                   : ps.nrepairs;
  r.repairs = ps.repairs->data ? ps.repairs->data : "";
  f->accepted++;
  if (f->hooks->accept(f->ud, &r) || f->accepted >= f->max)
    f->done = 1;
  return ps.p;
}

/* The next ``` fence at or after p: sets *body and *body_end (the end of
 * the text if the fence is never closed) and returns what follows it. */
static const char *next_fence(const char *p, const char *end, const char **body,
                              const char **body_end) {
  for (; p + 3 <= end; p++) {
    if (p[0] != '`' || p[1] != '`' || p[2] != '`')
      continue;
    const char *q = p + 3;
    while (q < end && *q != '\n') /* the info string, e.g. json */
      q++;
    *body = q;
    for (const char *c = q; c + 3 <= end; c++)
      if (c[0] == '`' && c[1] == '`' && c[2] == '`') {
        *body_end = c;
        return c + 3;
      }
    *body_end = end;
    return end;
  }
  return NULL;
}

int spool__extract(const char *text, size_t n, int max_candidates,
                   const spool__json_sink *sink,
                   const spool__extract_hooks *hooks, void *ud,
                   spool__buf *scratch, spool__buf *repairs,
                   spool__json_error *err) {
  finder f = {text,
              n,
              sink,
              hooks,
              ud,
              scratch,
              repairs,
              err,
              0,
              0,
              max_candidates > 0 ? max_candidates : 1,
              0};
  memset(err, 0, sizeof *err);
  if (n > SPOOL_EXTRACT_MAX_TEXT) {
    snprintf(err->msg, sizeof err->msg, "the text is larger than %u MiB",
             SPOOL_EXTRACT_MAX_TEXT >> 20);
    return -1;
  }
  const char *end = text + n;
  /* 1. Strict JSON, the whole text: exact, no repair. (Not tried when the
   * text cannot be JSON: it starts with prose or a fence.) */
  const char *first = text;
  while (first < end &&
         (*first == ' ' || *first == '\t' || *first == '\n' || *first == '\r'))
    first++;
  int may_be_json = first < end && (strchr("{[\"-tfn", *first) != NULL ||
                                    (*first >= '0' && *first <= '9'));
  hooks->begin(ud);
  spool__json_error strict;
  if (may_be_json &&
      spool__json_parse(text, n, sink, ud, scratch, &strict) == 0) {
    spool__extract_result r = {0, n, 0, 0, 0, ""};
    const char *a = text, *b = end;
    while (a < b && (*a == ' ' || *a == '\t' || *a == '\n' || *a == '\r'))
      a++;
    while (b > a &&
           (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\n' || b[-1] == '\r'))
      b--;
    r.from = (size_t)(a - text);
    r.to = (size_t)(b - text);
    hooks->accept(ud, &r);
    return 1;
  }
  hooks->reject(ud);
  /* 2. Fenced blocks, in order; the prose scan skips those that held a
   * value. */
  const char *taken[16][2];
  int ntaken = 0;
  const char *body, *body_end, *p = text, *next;
  while (!f.done && (next = next_fence(p, end, &body, &body_end)) != NULL) {
    if (try_at(&f, body, body_end, 1, 1, 0) && ntaken < 16) {
      taken[ntaken][0] = p;
      taken[ntaken][1] = next;
      ntaken++;
    }
    p = next;
  }
  /* 3. Objects and arrays in the prose. */
  int starts = 0;
  for (p = text; !f.done && p < end && starts < MAX_STARTS; p++) {
    for (int i = 0; i < ntaken; i++)
      if (p >= taken[i][0] && p < taken[i][1])
        p = taken[i][1];
    if (p >= end || (*p != '{' && *p != '['))
      continue;
    starts++;
    const char *stop = try_at(&f, p, end, 0, 0, 0);
    if (stop)
      p = stop - 1;
  }
  /* 4. A lone scalar, when the text holds nothing else. */
  if (f.accepted == 0)
    try_at(&f, text, end, 0, 1, 1);
  if (f.accepted == 0) {
    if (!f.have_err) {
      snprintf(err->msg, sizeof err->msg, "no JSON value in the text");
      err->line = err->column = 1;
    }
    return -1;
  }
  return f.accepted;
}
