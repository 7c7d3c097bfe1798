/*
 * extract_parse.h: the lenient parser under the extractor (extract.h). It
 * reads one value from a position with JSON's grammar widened to what
 * models write, noting every repair; extract.c decides where to start it.
 */
#ifndef SPOOL_EXTRACT_PARSE_H
#define SPOOL_EXTRACT_PARSE_H

#include "codec/extract.h"

/* The brackets the rest of a region holds, remembered across the
 * candidates of one text so that counting them stays linear. */
typedef struct spool__lp_rest {
  const char *at, *end;
  int depth;
} spool__lp_rest;

/* The last position computed: the next one counts from there, forwards or
 * back, not from the start of the reply. */
typedef struct spool__lp_pos {
  const char *at;
  int line, col;
} spool__lp_pos;

typedef struct spool__lp {
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
  int strict_words;     /* a bare word is not text (a lone scalar, a tuple) */
  int partial;          /* SPOOL_EXTRACT_PARTIAL */
  int fatal;            /* a failure that ends the search for candidates */
  int excess;           /* closers past openers after the cursor; -1: not
                           counted yet */
  spool__lp_rest *rest; /* shared by the candidates, or NULL */
  spool__lp_pos *pos;   /* shared by the candidates */
  /* An escaped document is parsed from its decoded copy: p and end point
   * there, and positions map back to the reply from src. */
  const char *decoded, *src, *src_end;
  spool__json_error *err;
  char in[SPOOL_JSON_MAX_DEPTH + 2]; /* the container open at each depth */
} spool__lp;

static inline int spool__lp_blank(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* A byte a number (as models write them) may hold. */
static inline int spool__lp_num_char(char c) {
  return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' ||
         c == 'e' || c == 'E';
}

/* The line and column of at in text (1-based, in characters), counted from
 * where *from was last (forwards, or back along the line, or back across
 * lines from the line's start), which then moves to at. */
void spool__lp_locate(spool__lp_pos *from, const char *text, const char *at,
                      int *line, int *col);

/* Reads one value at ps->p into the sink: 0, or -1 with ps->err set. */
int spool__lp_value(spool__lp *ps);

/* Skips blanks, comments and the spaces models write that are not ASCII. */
void spool__lp_skip(spool__lp *ps);

void spool__lp_repair(spool__lp *ps, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int spool__lp_fail(spool__lp *ps, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Decodes one level of escapes in [p, end) into out (an escaped document:
 * {\"a\": 1} is {"a": 1}): each two-byte escape becomes its byte; \u
 * escapes stay, as the parser reads them the same. 0, or -1 (no memory). */
int spool__lp_decode(const char *p, const char *end, spool__buf *out);

/* Where a pointer into an escaped document's decoded copy was in the
 * reply (other pointers are returned as they are). */
const char *spool__lp_original(const spool__lp *ps, const char *at);

/*
 * Walks text[p, end) counting brackets, skipping "strings" and backslash
 * escapes (in an escaped document, decoding as it goes). Returns the depth
 * reached (openers minus closers); with stop_at_zero it stops after the
 * closer that brings the depth back to 0 (and *closes points past it;
 * else *closes is NULL).
 */
int spool__lp_brackets(const char *p, const char *end, int escaped,
                       int stop_at_zero, const char **closes);

#endif
