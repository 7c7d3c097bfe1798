/*
 * json.h: the engine's JSON reader and writer, with no Lua in them.
 *
 * The reader is a recursive-descent parser that reports what it reads to a
 * sink (a table of callbacks), so the same parser builds Lua values
 * (l_json.c), feeds C tests and the fuzzer, and later serves the lenient
 * extractor. It is exact: integers that fit in 64 bits stay integers, longer
 * ones keep their digits (never a rounded double), other
 * numbers are parsed with correct rounding (one past a double's range is an
 * error), strings must be valid UTF-8, and \u escapes must pair surrogates.
 */
#ifndef SPOOL_JSON_H
#define SPOOL_JSON_H

#include <stddef.h>

#include "base/buf.h"

/* Deeper documents are rejected; this also bounds the parser's C stack. */
#define SPOOL_JSON_MAX_DEPTH 512

/*
 * Each callback returns 0 to go on or non-zero to stop the parse (which then
 * fails with "stopped by the reader"). Strings are passed unescaped; the
 * pointer is valid only during the call and is not NUL-terminated.
 */
typedef struct spool__json_sink {
  int (*null_value)(void *ud);
  int (*boolean)(void *ud, int value);
  int (*integer)(void *ud, long long value);
  int (*number)(void *ud, double value);
  /* An integer past 64 bits, as its digits (with a leading '-'). */
  int (*big_integer)(void *ud, const char *digits, size_t n);
  int (*string)(void *ud, const char *s, size_t n);
  int (*key)(void *ud, const char *s, size_t n);
  int (*begin_array)(void *ud);
  int (*end_array)(void *ud);
  int (*begin_object)(void *ud);
  int (*end_object)(void *ud);
} spool__json_sink;

typedef struct spool__json_error {
  size_t pos;   /* byte offset of the problem */
  int line;     /* 1-based */
  int column;   /* 1-based, in bytes */
  char msg[96]; /* e.g. "expected ',' or '}' after an object member" */
} spool__json_error;

/*
 * Parses exactly one JSON value from s[0..n), with only whitespace around it.
 * `scratch` is a buffer the parser may use to unescape strings; the caller
 * owns it (so a sink that longjmps, as Lua errors do, leaks nothing).
 * Returns 0, or -1 with *err filled in.
 */
int spool__json_parse(const char *s, size_t n, const spool__json_sink *sink,
                      void *ud, spool__buf *scratch, spool__json_error *err);

/* Is s[0..n) one JSON value? 0, or -1 with *err filled in. `scratch` is a
 * work buffer to reuse, or NULL. */
int spool__json_check(const char *s, size_t n, spool__buf *scratch,
                      spool__json_error *err);

/* Formats err as "line L, column C (byte P): MSG" into out. */
void spool__json_error_format(const spool__json_error *err, char *out,
                              size_t size);

/*
 * Writers. Each appends to b and returns 0, -1 on out of memory, or -2 on a
 * value JSON cannot hold (invalid UTF-8, NaN or an infinity).
 */
int spool__json_write_string(spool__buf *b, const char *s, size_t n);
/* Writes the shortest text that reads back as the same double; an integral
 * value keeps a ".0" so it reads back as a float, not an integer. */
int spool__json_write_double(spool__buf *b, double d);
int spool__json_write_integer(spool__buf *b, long long i);

/* The length of the UTF-8 sequence at p (1 to 4) if it is well formed (no
 * overlongs, no surrogates, nothing past U+10FFFF), else 0. */
size_t spool__utf8_seq(const unsigned char *p, const unsigned char *end);
/* Appends code point cp as UTF-8; 0 or -1. */
int spool__utf8_put(spool__buf *b, unsigned long cp);

/* The character a one-letter escape stands for ('n': '\n'), or -1 for
 * 'u' and for what JSON does not allow. */
int spool__json_escape_char(int e);
/* The value of the four hex digits at p (before end): 0, or -1. */
int spool__json_hex4(const char *p, const char *end, unsigned long *out);

/* Returns the length of the valid UTF-8 prefix of s[0..n) (n if all). */
size_t spool__utf8_valid_prefix(const char *s, size_t n);

/* strtod in the "C" locale, whatever the host application set. */
double spool__strtod(const char *s, char **end);

#endif
