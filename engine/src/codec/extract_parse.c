/*
 * extract_parse.c: the lenient parser (see extract_parse.h).
 *
 * JSON's grammar, widened to what models write; each widening is a repair
 * with its position. Where two readings are possible the parser looks
 * ahead a bounded distance (a key is a string or word then ':'), never
 * backtracks over what it has given the sink, and prefers an error with a
 * position to a value that is not what the text says.
 */
#include "codec/extract_parse.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* How far ahead a key is looked for: a longer one is not taken as a key. */
#define KEY_LOOKAHEAD 256

typedef spool__lp lp;

void spool__lp_locate(spool__lp_pos *c, const char *text, const char *at,
                      int *line, int *col) {
  const char *q = text;
  *line = 1;
  *col = 1;
  if (c->at && c->at <= at) {
    q = c->at;
    *line = c->line;
    *col = c->col;
  } else if (c->at && !memchr(at, '\n', (size_t)(c->at - at))) {
    *line = c->line;
    *col = c->col;
    for (const char *b = c->at; b > at; b--)
      *col -= ((unsigned char)b[-1] & 0xc0) != 0x80;
    q = at;
  } else if (c->at) {
    *line = c->line;
    for (const char *b = at; b < c->at; b++)
      *line -= *b == '\n';
    for (q = at; q > text && q[-1] != '\n'; q--)
      ;
  }
  for (; q < at; q++) {
    if (*q == '\n') {
      (*line)++;
      *col = 1;
    } else if (((unsigned char)*q & 0xc0) != 0x80) {
      (*col)++;
    }
  }
  c->at = at;
  c->line = *line;
  c->col = *col;
}

static void position(lp *ps, const char *at, int *line, int *col) {
  spool__lp_locate(ps->pos, ps->text, at, line, col);
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

/* Is p (before end) at an escape that decodes to one byte? */
static int one_byte_escape(const char *p, const char *end) {
  return p[0] == '\\' && p + 1 < end && p[1] &&
         strchr("\"\\/bfnrt", p[1]) != NULL;
}

int spool__lp_decode(const char *p, const char *end, spool__buf *out) {
  spool__buf_clear(out);
  for (; p < end; p++) {
    char c = *p;
    if (one_byte_escape(p, end))
      c = (char)spool__json_escape_char(*++p);
    if (spool__buf_addc(out, c) != 0)
      return -1;
  }
  return 0;
}

const char *spool__lp_original(const spool__lp *ps, const char *at) {
  if (!ps->decoded || at < ps->decoded || at > ps->end)
    return at;
  const char *o = ps->src;
  for (const char *d = ps->decoded; d < at; d++)
    o += one_byte_escape(o, ps->src_end) ? 2 : 1;
  return o;
}

void spool__lp_repair(lp *ps, const char *at, const char *fmt, ...) {
  if (ps->nrepairs++ >= SPOOL_EXTRACT_MAX_REPAIRS)
    return;
  int line, col;
  position(ps, spool__lp_original(ps, at), &line, &col);
  char msg[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  make_utf8(msg);
  spool__buf_printf(ps->repairs, "line %d, column %d: %s", line, col, msg);
  spool__buf_add(ps->repairs, "", 1); /* the NUL between messages */
}

int spool__lp_fail(lp *ps, const char *at, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ps->err->msg, sizeof ps->err->msg, fmt, ap);
  va_end(ap);
  make_utf8(ps->err->msg);
  at = spool__lp_original(ps, at);
  ps->err->pos = (size_t)(at - ps->text);
  position(ps, at, &ps->err->line, &ps->err->column);
  return -1;
}

#define repair spool__lp_repair
#define fail spool__lp_fail
#define skip spool__lp_skip

/* The next character of [p, end) at *c, decoding escapes in an escaped
 * document; returns what follows it. */
static const char *next_char(const char *p, const char *end, int escaped,
                             char *c) {
  if (escaped && one_byte_escape(p, end)) {
    *c = (char)spool__json_escape_char(p[1]);
    return p + 2;
  }
  *c = *p;
  return p + 1;
}

int spool__lp_brackets(const char *p, const char *end, int escaped,
                       int stop_at_zero, const char **closes) {
  int depth = 0;
  char c, last = ',';
  *closes = NULL;
  while (p < end) {
    p = next_char(p, end, escaped, &c);
    /* ' and ` open strings where a token starts, not inside a word */
    int quote = c == '"' || ((c == '\'' || c == '`') && strchr("{[,:(", last));
    if (c == '\\' && p < end) {
      p = next_char(p, end, escaped, &c); /* \" outside a string too */
    } else if (quote) {
      char q = c;
      while (p < end) {
        p = next_char(p, end, escaped, &c);
        if (c == q)
          break;
        if (c == '\\' && p < end)
          p = next_char(p, end, escaped, &c);
      }
    } else if (c == '{' || c == '[') {
      depth++;
    } else if ((c == '}' || c == ']') && --depth == 0 && stop_at_zero) {
      *closes = p;
      return 0;
    }
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
      last = quote ? 'q' : c;
  }
  return depth;
}

static int stopped(lp *ps) {
  return fail(ps, ps->p, "stopped by the reader");
}

static int at_end(lp *ps) {
  return ps->p >= ps->end;
}

#define is_blank spool__lp_blank

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

/* The quote at p, if any: its length in bytes, and its kind in *kind
 * (the character itself for " ' `, 'D' for the typographic double quotes
 * “ ”, 'S' for the typographic single quotes ‘ ’ and the acute accent ´).
 * A string ends at a quote of the kind that opened it. Three backticks
 * are a fence. */
static int quote_at(const char *p, const char *end, int *kind) {
  if (p >= end)
    return 0;
  unsigned char c = (unsigned char)*p;
  if (c == '`' && end - p >= 3 && p[1] == '`' && p[2] == '`')
    return 0; /* a markdown fence, not a quote */
  if (c == '"' || c == '\'' || c == '`') {
    *kind = c;
    return 1;
  }
  if (c == 0xc2 && end - p >= 2 && (unsigned char)p[1] == 0xb4) {
    *kind = 'S';
    return 2;
  }
  if (c != 0xe2 || end - p < 3 || (unsigned char)p[1] != 0x80)
    return 0;
  unsigned char d = (unsigned char)p[2];
  if (d == 0x9c || d == 0x9d)
    *kind = 'D';
  else if (d == 0x98 || d == 0x99)
    *kind = 'S';
  else
    return 0;
  return 3;
}

void spool__lp_skip(lp *ps) {
  while (ps->p < ps->end) {
    char c = *ps->p;
    if (is_blank(c)) {
      ps->p++;
    } else if ((c == '/' && ps->p + 1 < ps->end && ps->p[1] == '/') ||
               (c == '#' &&
                (ps->p + 1 >= ps->end || strchr(" \t\r\n#!", ps->p[1])))) {
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
    } else if ((unsigned char)c >= 0x80 && unicode_space(ps->p, ps->end)) {
      repair(ps, ps->p, "read a special space as a space");
      ps->p += 3;
    } else {
      break;
    }
  }
}

/* Does a key start at p: a quoted string, or a word, then ':'? A word
 * followed by "://" is a link, not a key. */
static int looks_like_key(const lp *ps, const char *p) {
  const char *end = ps->end - p > KEY_LOOKAHEAD ? p + KEY_LOOKAHEAD : ps->end;
  const char *q = p;
  int kind, k;
  int n = quote_at(p, end, &kind);
  if (n) {
    for (q = p + n;; q++) {
      if (q >= end || *q == '\n')
        return 0;
      if (*q == '\\') {
        q++;
        continue;
      }
      int m = quote_at(q, end, &k);
      if (m && k == kind) {
        q += m;
        break;
      }
    }
  } else if (p < end && is_ident_start((unsigned char)*p)) {
    while (q < end && is_ident((unsigned char)*q))
      q++;
    if (end - q >= 2 && q[0] == ':' && q[1] == '/')
      return 0;
  } else {
    return 0;
  }
  while (q < end && (*q == ' ' || *q == '\t'))
    q++;
  return q < end && *q == ':';
}

static int parse_value(lp *ps);
static int enter(lp *ps, char kind);

/* In a key, at a delimiter after a ':': does the key still close, its
 * next quote (on this line) followed by ':'? ("a:b,c": 1) Else its
 * closing quote was forgotten ({"a: 1, "b": 2}). */
static int key_closes_later(const lp *ps, int kind) {
  const char *end = ps->end - ps->p > 16 * KEY_LOOKAHEAD
                        ? ps->p + 16 * KEY_LOOKAHEAD
                        : ps->end;
  int k;
  for (const char *q = ps->p; q < end && *q != '\n'; q++) {
    if (*q == '\\') {
      q++;
      continue;
    }
    int n = quote_at(q, end, &k);
    if (n && k == kind) {
      for (q += n; q < end && (*q == ' ' || *q == '\t'); q++)
        ;
      return q < end && *q == ':';
    }
  }
  return 0;
}

/* Does the quote whose last byte is at q end its string? Yes when what
 * follows (after blanks) may follow a string: a delimiter, the end, a
 * comment, a digit, or the quote of a next key or value. Not when the
 * next quote is itself followed by a delimiter: then this one was inside
 * the string ("ends with "this"", ...). */
static int closes_string(lp *ps, const char *q) {
  const char *r = q + 1;
  while (r < ps->end &&
         (*r == ' ' || *r == '\t' ||
          ((unsigned char)*r >= 0x80 && unicode_space(r, ps->end))))
    r += *r == ' ' || *r == '\t' ? 1 : 3;
  if (r >= ps->end)
    return 1;
  char c = *r;
  if (c == '"') {
    const char *s = r + 1;
    while (s < ps->end && (*s == ' ' || *s == '\t'))
      s++;
    return !(s >= ps->end || *s == ',' || *s == '}' || *s == ']' ||
             *s == '\n' || *s == '\r');
  }
  if (c == ',' || c == '}' || c == ']' || c == '\n' || c == '\r' || c == ':' ||
      c == '+' || c == ')' || (c >= '0' && c <= '9') ||
      (c == '#' && (r + 1 >= ps->end || strchr(" \t\r\n#!", r[1]))))
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

/* A Python triple-quoted string (""" or ''') at ps->p, read as its text;
 * 0, or -1 when there is none (no closing three quotes). */
static int read_triple(lp *ps) {
  char q = *ps->p;
  if (ps->end - ps->p < 6 || (q != '"' && q != '\'') || ps->p[1] != q ||
      ps->p[2] != q)
    return -1;
  for (const char *c = ps->p + 3; c + 3 <= ps->end; c++)
    if (c[0] == q && c[1] == q && c[2] == q) {
      repair(ps, ps->p, "read a triple-quoted string");
      add_text(ps, ps->p + 3, (size_t)(c - ps->p - 3));
      ps->p = c + 3;
      return 0;
    }
  return -1;
}

/* Where a string's text was when the reader passed a byte that may have
 * been its real end: the byte, and the length of the text before it. */
typedef struct mark {
  const char *at;
  size_t len;
} mark;

static void end_at(lp *ps, const mark *m, const char *at, const char *why) {
  repair(ps, at, "%s", why);
  ps->scratch->len = m->len;
  while (ps->scratch->len > 0 &&
         is_blank(ps->scratch->data[ps->scratch->len - 1]))
    ps->scratch->len--;
  ps->scratch->data[ps->scratch->len] = '\0';
  ps->p = m->at;
}

/*
 * Reads the string whose opening quote is at ps->p, appending its text to
 * ps->scratch. A quote that does not end the string (by closes_string) is
 * kept as text, unless a comma or a line break precedes it and a key
 * follows (in an array, any value): then the string ended there, its
 * closing quote forgotten ({"a":"b,"c":1}). A key with no closing quote
 * ends at its ':' once a delimiter shows the quote is missing. A string
 * that runs to the end of a text ending in a closer ends at its last
 * inner quote or its first delimiter; else it is closed where the text
 * stops.
 */
static int read_string(lp *ps, int is_key) {
  const char *open = ps->p;
  spool__buf *sb = ps->scratch;
  if (read_triple(ps) == 0)
    return 0;
  int kind, k;
  int qlen = quote_at(ps->p, ps->end, &kind);
  int in_object = ps->in[ps->depth] == '{';
  int ascii = kind == 'D' || kind == 'S' ? 0x100 : kind; /* others >= 0x80 */
  int quoted_inside = 0;
  int closes_later = -1; /* a key's: not looked for yet */
  mark comma = {0}, line = {0}, delim = {0}, colon = {0}, inner = {0};
  if (kind == 'D' || kind == 'S')
    repair(ps, open, "replaced typographic quotes with \"");
  else if (kind == '\'')
    repair(ps, open, "replaced single quotes with double quotes");
  else if (kind == '`')
    repair(ps, open, "replaced backticks with double quotes");
  ps->p += qlen;
  for (;;) {
    /* Copy a run of plain bytes at once; stop at anything that needs a
     * decision. */
    const char *run = ps->p;
    while (ps->p < ps->end) {
      unsigned char b = (unsigned char)*ps->p;
      if (b == ascii || b == '\\' || b < 0x20 || b >= 0x80 || b == ',' ||
          b == ']' || b == '}' || b == ':')
        break;
      ps->p++;
    }
    if (ps->p > run)
      spool__buf_add(sb, run, (size_t)(ps->p - run));
    if (ps->p >= ps->end) {
      const char *last = ps->end;
      while (last > open + 1 && is_blank(last[-1]))
        last--;
      int closed_text =
          last > open + 1 && is_delimiter(last[-1]) && last[-1] != '\n';
      if (closed_text && is_key && colon.at) {
        end_at(ps, &colon, open,
               "closed a key with no closing quote at its ':'");
        return 0;
      }
      if (closed_text && inner.at) {
        end_at(ps, &inner, open, "closed a string at its last quote");
        return 0;
      }
      if (closed_text && delim.at) {
        end_at(ps, &delim, open,
               "ended a string with no closing quote at a delimiter");
        return 0;
      }
      ps->truncated = 1;
      repair(ps, open, "closed a string the text cut off");
      return 0;
    }
    unsigned char c = (unsigned char)*ps->p;
    int n = quote_at(ps->p, ps->end, &k);
    if (n && k == kind) {
      const char *q = ps->p + n - 1;
      /* A value standing alone ends at its first quote: "Hi" is prose. */
      if ((ps->strict_words && ps->depth == 0) || closes_string(ps, q)) {
        ps->p = q + 1;
        return 0;
      }
      if (is_key && colon.at) { /* {"name: "Ann"}: the value's quote */
        end_at(ps, &colon, open,
               "closed a key with no closing quote at its ':'");
        return 0;
      }
      const char *before = ps->p;
      while (before > open + qlen && is_blank(before[-1]))
        before--;
      /* In an object the next string after a comma must be a key. */
      int next_ok = !in_object || is_key || looks_like_key(ps, ps->p);
      if (comma.at && before - 1 == comma.at && next_ok) {
        end_at(ps, &comma, open,
               "ended a string with no closing quote at a comma");
        return 0;
      }
      if (line.at && line.at >= before && in_object &&
          looks_like_key(ps, ps->p)) {
        end_at(ps, &line, open,
               "ended a string with no closing quote at a line break");
        return 0;
      }
      if (!quoted_inside++)
        repair(ps, ps->p, "escaped a quote inside a string");
      inner.at = ps->p + n;
      inner.len = sb->len;
      spool__buf_add(sb, ps->p, (size_t)n);
      ps->p += n;
      continue;
    }
    if (is_delimiter((char)c) && !delim.at) {
      delim.at = ps->p;
      delim.len = sb->len;
    }
    if (c == ':' && is_key && !colon.at) {
      colon.at = ps->p;
      colon.len = sb->len;
    }
    if (is_key && colon.at && (c == ',' || c == '}' || c == '\n') &&
        closes_later < 0)
      closes_later = key_closes_later(ps, kind);
    if (is_key && colon.at && (c == ',' || c == '}' || c == '\n') &&
        !closes_later) {
      end_at(ps, &colon, open, "closed a key with no closing quote at its ':'");
      return 0;
    }
    if (c == ',') {
      comma.at = ps->p;
      comma.len = sb->len;
    }
    if (c == '\n') {
      line.at = ps->p;
      line.len = sb->len;
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
      if (e != 'u') {
        repair(ps, ps->p - 1,
               "dropped the backslash of an invalid escape '\\%c'", e);
        continue; /* the character itself is read next, as text */
      }
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
    if (c < 0x20) {
      repair(ps, ps->p, "escaped a control character (0x%02x) in a string", c);
      spool__buf_addc(sb, (char)c);
      ps->p++;
      continue;
    }
    if (c >= 0x80) {
      size_t len = spool__utf8_seq((const unsigned char *)ps->p,
                                   (const unsigned char *)ps->end);
      if (len == 0) {
        repair(ps, ps->p, "replaced invalid UTF-8 with U+FFFD");
        spool__utf8_put(sb, 0xfffd);
        ps->p++;
      } else {
        spool__buf_add(sb, ps->p, len);
        ps->p += len;
      }
      continue;
    }
    spool__buf_addc(sb, (char)c);
    ps->p++;
  next:;
  }
}

static int emit_string(lp *ps, int is_key) {
  const char *s = ps->scratch->data ? ps->scratch->data : "";
  int rc = is_key ? ps->sink->key(ps->ud, s, ps->scratch->len)
                  : ps->sink->string(ps->ud, s, ps->scratch->len);
  return rc ? stopped(ps) : 0;
}

static int starts_string(lp *ps) {
  int kind;
  return quote_at(ps->p, ps->end, &kind) > 0;
}

/* A string value, joining "a" + "b" as JavaScript would. */
static int parse_string_value(lp *ps) {
  spool__buf_clear(ps->scratch);
  if (read_string(ps, 0) != 0)
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
    if (read_string(ps, 0) != 0)
      return -1;
  }
  return emit_string(ps, 0);
}

/* Does the unquoted value that reached the line break at nl go on over the
 * next line? In an object, yes when that line is not empty and starts no
 * key, closer or comment. */
static int continues(lp *ps, const char *nl) {
  if (ps->in[ps->depth] != '{')
    return 0;
  const char *r = nl + 1;
  while (r < ps->end && (*r == ' ' || *r == '\t'))
    r++;
  if (r >= ps->end || strchr("}],\"'`#/\r\n", *r) || looks_like_key(ps, r))
    return 0;
  return 1;
}

/* Text with no quotes: to the next delimiter, or to a quote the text
 * forgot to open ({"a":foo"}), trailing blanks left out; in an object, on
 * over the lines that continue it. */
static int parse_unquoted(lp *ps) {
  const char *start = ps->p, *q = ps->p, *line = ps->p;
  int lines = 1;
  spool__buf_clear(ps->scratch);
  for (;;) {
    while (q < ps->end && *q != ',' && *q != '}' && *q != ']' && *q != '\n' &&
           *q != '\r' && *q != '"')
      q++;
    const char *stop = q;
    while (stop > line && (stop[-1] == ' ' || stop[-1] == '\t'))
      stop--;
    add_text(ps, line, (size_t)(stop - line));
    const char *nl =
        q < ps->end && *q == '\r' && q + 1 < ps->end && q[1] == '\n' ? q + 1
                                                                     : q;
    if (nl >= ps->end || *nl != '\n' || !continues(ps, nl))
      break;
    spool__buf_addc(ps->scratch, '\n');
    for (line = nl + 1; line < ps->end && (*line == ' ' || *line == '\t');
         line++)
      ;
    q = line;
    lines++;
  }
  const char *text = ps->scratch->data ? ps->scratch->data : "";
  int shown = (int)(ps->scratch->len > 40 ? 40 : ps->scratch->len);
  if (lines > 1)
    repair(ps, start, "quoted the bare text '%.*s' over %d lines", shown, text,
           lines);
  else
    repair(ps, start, "quoted the bare text '%.*s'", shown, text);
  if (q < ps->end && *q == '"') {
    repair(ps, q,
           "dropped the closing quote of a string that had no "
           "opening one");
    q++;
  }
  ps->p = q;
  return emit_string(ps, 0);
}

/* A sink that only catches one number, so a trial parse emits nothing. */
typedef struct number {
  int kind; /* 'i' integer, 'd' double, 'b' past 64 bits */
  long long i;
  double d;
} number;

static int n_int(void *ud, long long v) {
  number *n = ud;
  n->kind = 'i';
  n->i = v;
  return 0;
}
static int n_num(void *ud, double v) {
  number *n = ud;
  n->kind = 'd';
  n->d = v;
  return 0;
}
static int n_big(void *ud, const char *s, size_t len) {
  (void)s, (void)len;
  ((number *)ud)->kind = 'b';
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
static const spool__json_sink number_sink = {n_other, n_bool,  n_int,  n_num,
                                             n_big,   n_str,   n_str,  n_other,
                                             n_other, n_other, n_other};

/* Reads text[0..len) as exactly one JSON number; 0 or -1. */
static int read_number(const char *text, size_t len, number *out) {
  spool__json_error e;
  spool__buf tmp = {0};
  int rc = spool__json_parse(text, len, &number_sink, out, &tmp, &e);
  spool__buf_free(&tmp);
  return rc;
}

/* Emits n, read from text[0..len). */
static int emit_number(lp *ps, const number *n, const char *text, size_t len) {
  int rc = n->kind == 'i'   ? ps->sink->integer(ps->ud, n->i)
           : n->kind == 'd' ? ps->sink->number(ps->ud, n->d)
                            : ps->sink->big_integer(ps->ud, text, len);
  return rc ? stopped(ps) : 0;
}

/* Is text a number whose value is past a double's range? */
static int overflows(const char *text) {
  char *end;
  double d = spool__strtod(text, &end);
  return end != text && *end == '\0' && isinf(d);
}

#define is_num_char spool__lp_num_char

/* Is text[0..len) an integer, '-' and digits with no leading zero? */
static int is_integer_text(const char *t, size_t len) {
  size_t i = len > 0 && t[0] == '-';
  if (i >= len || (t[i] == '0' && len - i > 1))
    return 0;
  for (; i < len; i++)
    if (t[i] < '0' || t[i] > '9')
      return 0;
  return 1;
}

/* Text where a value was expected: a string, unless the value stands
 * alone (the whole reply, or an element of a tuple), where a bare word
 * is prose, not a value. */
static int bare_text(lp *ps) {
  if (ps->strict_words)
    return fail(ps, ps->p, "no JSON value in the text");
  return parse_unquoted(ps);
}

/* A number: JSON's grammar exactly when it fits, an integer of any length
 * kept whole. Otherwise a leading '+' is dropped, ".5" and "5." are
 * completed, an exponent the text cut off is completed; a token that is no
 * number at all (0.0.1, 0789 with its leading zero that a number would
 * lose, 2notanumber, 24" with the quote of a string never opened) is kept
 * as a string. One past a double's range (1e999), which the strict reader
 * refuses, is null, as Infinity is. */
static int parse_number(lp *ps) {
  const char *start = ps->p, *q = ps->p;
  while (q < ps->end && is_num_char(*q))
    q++;
  if (q < ps->end &&
      (is_ident((unsigned char)*q) || *q == ':' || *q == '/' || *q == '"'))
    return bare_text(ps); /* 746de9ad-..., 2024-10-18T18:35:22Z */
  size_t len = (size_t)(q - start);
  int digits = 0;
  for (const char *d = start; d < q; d++)
    digits += *d >= '0' && *d <= '9';
  if (ps->strict_words && digits == 0) /* -, ..., e: no number at all */
    return fail(ps, start, "no JSON value in the text");
  char buf[64];
  number num;
  if (len <= 18 && is_integer_text(start, len)) { /* most numbers: at once */
    long long v = 0;
    for (const char *d = start + (*start == '-'); d < q; d++)
      v = v * 10 + (*d - '0');
    ps->p = q;
    return ps->sink->integer(ps->ud, *start == '-' ? -v : v) ? stopped(ps) : 0;
  }
  if (read_number(start, len, &num) == 0) {
    ps->p = q;
    return emit_number(ps, &num, start, len);
  }
  if (len >= sizeof buf) {
    if (!is_integer_text(start, len))
      return bare_text(ps);
    num.kind = 'b';
    ps->p = q;
    return emit_number(ps, &num, start, len);
  }
  memcpy(buf, start, len);
  buf[len] = '\0';
  const char *r = buf;
  if (*r == '-' || *r == '+')
    r++;
  if (r[0] == '0' && r[1] >= '0' && r[1] <= '9')
    return bare_text(ps); /* leading zeros: keep every digit */
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
      return bare_text(ps);
    repair(ps, start, "read the number '%s', too large for a double, as null",
           buf);
    ps->p = q;
    return ps->sink->null_value(ps->ud) ? stopped(ps) : 0;
  }
  repair(ps, start, "read the number '%s' as %s", buf, fixed);
  ps->p = q;
  return emit_number(ps, &num, fixed, n);
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
                   *after == ']' || *after == ')' || *after == '\n' ||
                   *after == '\r' || *after == '/' || *after == '#';
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
    if (enter(ps, ps->in[ps->depth]) != 0 || parse_value(ps) != 0)
      return -1;
    ps->depth--;
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
  return bare_text(ps);
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
static int skip_ellipsis(lp *ps);

/* Skips what stands where an element should and holds none: an extra
 * comma, an ellipsis. */
static int skip_nothing(lp *ps) {
  if (*ps->p != ',')
    return skip_ellipsis(ps);
  repair(ps, ps->p, "removed an extra comma");
  ps->p++;
  return 1;
}

/* Reads the comma after an element, noting one the closer follows. */
static void read_comma(lp *ps, char closer) {
  const char *comma = ps->p++;
  skip(ps);
  if (!at_end(ps) && *ps->p == closer)
    repair(ps, comma, "removed a trailing comma");
}

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

static int enter(lp *ps, char kind) {
  if (++ps->depth > SPOOL_JSON_MAX_DEPTH) {
    ps->fatal = 1; /* no start inside it would do better */
    return fail(ps, ps->p, "nesting deeper than %d levels",
                SPOOL_JSON_MAX_DEPTH);
  }
  ps->in[ps->depth] = kind;
  return 0;
}

static int close_container(lp *ps, int object) {
  ps->depth--;
  int rc = object ? ps->sink->end_object(ps->ud) : ps->sink->end_array(ps->ud);
  return rc ? stopped(ps) : 0;
}

/* Closes a container the text cut off. */
static int cut_off(lp *ps, const char *open, int object) {
  ps->truncated = 1;
  repair(ps, open, "closed %s the text cut off",
         object ? "an object" : "an array");
  return close_container(ps, object);
}

static int starts_value(lp *ps) {
  if (at_end(ps))
    return 0;
  unsigned char c = (unsigned char)*ps->p;
  return c == '{' || c == '[' || (c >= '0' && c <= '9') || c == '-' ||
         is_ident_start(c) || starts_string(ps);
}

/* In partial mode, is the value at ps->p a number the text ends in (which
 * may yet grow)? Then it is left out, and the text marked cut off. */
static int cut_number(lp *ps) {
  if (!ps->partial || at_end(ps) || !strchr("0123456789-+.", *ps->p))
    return 0;
  const char *q = ps->p;
  while (q < ps->end && is_num_char(*q))
    q++;
  if (q < ps->end)
    return 0;
  ps->truncated = 1;
  repair(ps, ps->p, "left out the number %.*s, which the text cut off",
         (int)(q - ps->p > 40 ? 40 : q - ps->p), ps->p);
  ps->p = q;
  return 1;
}

/* The depth of text[from, end): from where the last count left off when
 * that was before from. */
static int rest_depth(lp *ps, const char *from) {
  const char *ignored;
  spool__lp_rest *r = ps->decoded ? NULL : ps->rest;
  int d;
  if (r && r->at && r->end == ps->end && r->at <= from)
    d = r->depth - spool__lp_brackets(r->at, from, 0, 0, &ignored);
  else
    d = spool__lp_brackets(from, ps->end, 0, 0, &ignored);
  if (r) {
    r->at = from;
    r->end = ps->end;
    r->depth = d;
  }
  return d;
}

/* At a top-level closer with more members after it ({"a":1}, "b":2}): was
 * the closer early? Yes when a key (in an array, a value) follows and the
 * rest of the text has a closer to spare. Moves past it and says so. */
static int early_close(lp *ps, int object) {
  if (ps->depth != 1)
    return 0;
  const char *q = ps->p + 1;
  while (q < ps->end && is_blank(*q))
    q++;
  int comma = q < ps->end && *q == ',';
  if (comma)
    for (q++; q < ps->end && is_blank(*q); q++)
      ;
  const char *at = ps->p;
  ps->p = q;
  int more = object ? starts_string(ps) && looks_like_key(ps, q)
                    : comma && starts_value(ps);
  ps->p = at;
  if (!more)
    return 0;
  if (ps->excess < 0)
    ps->excess = -rest_depth(ps, at + 1);
  if (ps->excess <= 0)
    return 0;
  ps->excess--;
  repair(ps, at, "removed a '%c' that closed the %s before its last %s", *at,
         object ? "object" : "array", object ? "members" : "elements");
  ps->p = q;
  return 1;
}

/* A key: a string, or a word (quoted). A word that is no key, with a key
 * after it, is dropped ({"a":1, note "b":2}). The key is left in
 * ps->scratch. */
static int parse_key(lp *ps) {
  if (starts_string(ps)) {
    spool__buf_clear(ps->scratch);
    return read_string(ps, 1);
  }
  unsigned char c = (unsigned char)*ps->p;
  if (is_ident_start(c) || (c >= '0' && c <= '9') || c == '-') {
    const char *start = ps->p;
    while (ps->p < ps->end && is_ident((unsigned char)*ps->p))
      ps->p++;
    const char *r = ps->p;
    while (r < ps->end && (*r == ' ' || *r == '\t'))
      r++;
    if (r < ps->end && *r != ':' && looks_like_key(ps, r)) {
      repair(ps, start, "removed the stray word '%.*s'",
             (int)(ps->p - start > 40 ? 40 : ps->p - start), start);
      ps->p = r;
      return parse_key(ps);
    }
    repair(ps, start, "quoted the key '%.*s'", (int)(ps->p - start), start);
    spool__buf_clear(ps->scratch);
    add_text(ps, start, (size_t)(ps->p - start));
    if (!at_end(ps) && *ps->p == '"') {
      repair(ps, ps->p,
             "dropped the closing quote of a key that had no "
             "opening one");
      ps->p++;
    }
    return 0;
  }
  return fail(ps, ps->p, "expected a key, found '%c'", c);
}

/* After a member's value, a word that is no key and ends at a delimiter
 * or before a key is stray ({"a": 1 maybe, "b": 2}): skipped, said so. */
static int stray_word(lp *ps) {
  if (!is_ident_start((unsigned char)*ps->p) || looks_like_key(ps, ps->p))
    return 0;
  const char *start = ps->p, *q = ps->p;
  while (q < ps->end && is_ident((unsigned char)*q))
    q++;
  const char *r = q;
  while (r < ps->end && (*r == ' ' || *r == '\t'))
    r++;
  if (r < ps->end && (!*r || !strchr(",}\n\r", *r)) && !looks_like_key(ps, r))
    return 0;
  repair(ps, start, "removed the stray word '%.*s'",
         (int)(q - start > 40 ? 40 : q - start), start);
  ps->p = r;
  return 1;
}

/* The members of an object whose opener (a '{', or a '[' holding key:
 * value pairs) is at open and already read. */
static int object_members(lp *ps, const char *open) {
  if (enter(ps, '{') != 0)
    return -1;
  if (ps->sink->begin_object(ps->ud))
    return stopped(ps);
  for (;;) {
    skip(ps);
    if (at_end(ps))
      return cut_off(ps, open, 1);
    char c = *ps->p;
    if (c == '}' || c == ']') {
      if (early_close(ps, 1))
        continue;
      if (c == ']' && ps->in[ps->depth - 1] == '[') { /* [{"a": 1] */
        repair(ps, ps->p, "added a missing '}'");
        return close_container(ps, 1);
      }
      if (c == ']')
        repair(ps, ps->p, "read ']' as the '}' that closes this object");
      ps->p++;
      return close_container(ps, 1);
    }
    if (skip_nothing(ps))
      continue;
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
    if (at_end(ps) && ps->partial) {
      ps->truncated = 1; /* the value is still to come: no member yet */
      continue;
    }
    if (cut_number(ps))
      continue;
    if (emit_string(ps, 1) != 0)
      return -1;
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
    if (!at_end(ps) && stray_word(ps))
      skip(ps);
    if (at_end(ps) || *ps->p == '}' || *ps->p == ']' || *ps->p == ')')
      continue;
    if (*ps->p == ',') {
      read_comma(ps, '}');
      continue;
    }
    if (*ps->p == '{' || *ps->p == '[') {
      /* A new object where a key should be: this one was never closed
       * ([{"i":1{"i":2}]). */
      repair(ps, ps->p, "added a missing '}'");
      return close_container(ps, 1);
    }
    if (starts_value(ps)) {
      repair(ps, ps->p, "added a missing ','");
      continue;
    }
    return fail(ps, ps->p,
                "expected ',' or '}' after an object member, "
                "found '%c'",
                *ps->p);
  }
}

static int parse_object(lp *ps) {
  return object_members(ps, ps->p++);
}

/* An array, or a tuple in parentheses (Python's), whose elements must then
 * be values, not bare words. Brackets that hold key: value pairs are an
 * object; a key after elements closes an array its object never closed
 * ({"a": [1, 2, "b": 3}). */
static int parse_array(lp *ps) {
  const char *open = ps->p++;
  char closer = *open == '(' ? ')' : ']';
  skip(ps);
  if (*open == '[' && !at_end(ps) && looks_like_key(ps, ps->p)) {
    repair(ps, open, "read [ ] holding key: value pairs as an object");
    return object_members(ps, open);
  }
  if (*open == '(')
    repair(ps, open, "read ( ) as an array");
  if (enter(ps, '[') != 0)
    return -1;
  int words = ps->strict_words;
  ps->strict_words = *open == '(' || words;
  if (ps->sink->begin_array(ps->ud))
    return stopped(ps);
  int count = 0, rc;
  for (;;) {
    skip(ps);
    if (at_end(ps)) {
      rc = cut_off(ps, open, 0);
      break;
    }
    char c = *ps->p;
    if (c == ']' || c == '}' || c == ')') {
      if (c == ']' && early_close(ps, 0))
        continue;
      if (c == '}' && ps->in[ps->depth - 1] == '{') { /* {"a": [1, 2} */
        repair(ps, ps->p, "added a missing '%c'", closer);
        rc = close_container(ps, 0);
        break;
      }
      if (c != closer)
        repair(ps, ps->p, "read '%c' as the '%c' that closes this array", c,
               closer);
      ps->p++;
      rc = close_container(ps, 0);
      break;
    }
    if (skip_nothing(ps))
      continue;
    if (count > 0 && ps->in[ps->depth - 1] == '{' && starts_string(ps) &&
        looks_like_key(ps, ps->p)) {
      repair(ps, ps->p, "added a missing '%c'", closer);
      rc = close_container(ps, 0);
      break;
    }
    if (cut_number(ps))
      continue;
    if ((rc = parse_value(ps)) != 0)
      break;
    count++;
    skip(ps);
    if (at_end(ps) || *ps->p == ']' || *ps->p == '}' || *ps->p == ')')
      continue;
    if (*ps->p == ',') {
      read_comma(ps, closer);
      continue;
    }
    if (starts_value(ps)) {
      repair(ps, ps->p, "added a missing ','");
      continue;
    }
    rc = fail(ps, ps->p,
              "expected ',' or '%c' after an array element, found '%c'", closer,
              *ps->p);
    break;
  }
  ps->strict_words = words;
  return rc;
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
  if (c == '[' || c == '(')
    return parse_array(ps);
  if (starts_string(ps))
    return parse_string_value(ps);
  if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.')
    return parse_number(ps);
  if (is_ident_start(c))
    return parse_word(ps);
  if (c == '/')
    return parse_regex(ps);
  if (c == '#') /* #fff, #42: a comment would have been skipped */
    return bare_text(ps);
  return fail(ps, ps->p, "unexpected '%c', expected a value", c);
}

int spool__lp_value(lp *ps) {
  return parse_value(ps);
}
