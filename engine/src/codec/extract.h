/*
 * extract.h: finding and parsing the JSON value in a model's reply, which
 * is untrusted text: inside markdown fences or prose, with the mistakes
 * models make (trailing or missing commas, single quotes, unquoted keys,
 * comments, Python and JS literals, unescaped newlines and quotes, a reply
 * cut off by max_tokens ...). No Lua here; values go to a json.h sink.
 *
 * Strict JSON parses exactly as spool__json_parse parses it, with no
 * repair. Every repair is reported (where, and what was done), so a guess
 * is never presented as certain. What cannot be recovered is an error with
 * a position and a reason.
 */
#ifndef SPOOL_EXTRACT_H
#define SPOOL_EXTRACT_H

#include <stddef.h>

#include "base/buf.h"
#include "codec/json.h"

/* Texts longer than this are refused (the work is bounded per byte). */
#define SPOOL_EXTRACT_MAX_TEXT (16u << 20)

/* At most this many repairs are reported per candidate (then a count). */
#define SPOOL_EXTRACT_MAX_REPAIRS 32

typedef struct spool__extract_result {
  size_t from, to; /* the candidate's bytes in the text */
  int fenced;      /* found inside a ``` fence */
  int truncated;   /* the text ended inside it: closers were added */
  int nrepairs;
  const char *repairs; /* nrepairs NUL-terminated messages, back to back */
} spool__extract_result;

typedef struct spool__extract_hooks {
  /* Before a candidate is tried: its values go to the sink next. */
  void (*begin)(void *ud);
  /* The candidate failed part way: drop whatever the sink built. */
  void (*reject)(void *ud);
  /* The candidate parsed: its value is complete. Return non-zero to stop
   * looking for more. */
  int (*accept)(void *ud, const spool__extract_result *r);
} spool__extract_hooks;

/* The work buffers of one extraction, owned by the caller (so a sink that
 * longjmps leaks nothing); zero them before the first use. */
typedef struct spool__extract_work {
  spool__buf scratch; /* a string being unescaped */
  spool__buf repairs; /* the current candidate's messages */
  spool__buf decoded; /* an escaped document (a JSON string printed
                         instead of its value), unescaped once */
} spool__extract_work;

void spool__extract_work_free(spool__extract_work *w);

/* Flags. PARTIAL: the text is a prefix of a reply still streaming; a
 * number it ends in may yet grow (12 of 125), so it is left out rather
 * than guessed. */
#define SPOOL_EXTRACT_PARTIAL 1

/*
 * Finds the JSON values in text[0..n): fenced blocks first, then every
 * object or array in the prose, at most max_candidates; a lone scalar only
 * when the text holds nothing else. A value that fails to parse hides what
 * is inside it: its inner objects and arrays are never offered in its
 * place. Returns the number of candidates accepted (>= 1), or -1 with
 * *err saying why nothing could be recovered. On success *err is empty,
 * or names what was not returned: the first candidate that failed, or
 * where the search stopped at its bound.
 */
int spool__extract(const char *text, size_t n, int max_candidates, int flags,
                   const spool__json_sink *sink,
                   const spool__extract_hooks *hooks, void *ud,
                   spool__extract_work *work, spool__json_error *err);

#endif
