/*
 * buf.h: a growable byte buffer, the one string builder of the engine's C
 * code. It never touches Lua; errors are reported as return codes.
 */
#ifndef SPOOL_BUF_H
#define SPOOL_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <string.h>

typedef struct spool__buf {
  char *data; /* NUL-terminated whenever len > 0 or data != NULL */
  size_t len;
  size_t cap;
} spool__buf;

/* Grows the buffer to hold `extra` more bytes plus a terminating NUL;
 * 0 or -1. */
int spool__buf_grow(spool__buf *b, size_t extra);

/* The appends are inline: the codecs make one per token, and a call into
 * another file costs more than the copy. */

/* Makes room for `extra` more bytes plus a terminating NUL; 0 or -1. */
static inline int spool__buf_reserve(spool__buf *b, size_t extra) {
  return extra < b->cap - b->len ? 0 : spool__buf_grow(b, extra);
}

/* Appends n bytes; 0 or -1 on out of memory. */
static inline int spool__buf_add(spool__buf *b, const void *p, size_t n) {
  if (spool__buf_reserve(b, n) != 0)
    return -1;
  if (n > 0)
    memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

static inline int spool__buf_addc(spool__buf *b, char c) {
  if (spool__buf_reserve(b, 1) != 0)
    return -1;
  b->data[b->len++] = c;
  b->data[b->len] = '\0';
  return 0;
}

static inline int spool__buf_adds(spool__buf *b, const char *s) {
  return spool__buf_add(b, s, strlen(s));
}

/* Appends printf-style text; 0 or -1. */
int spool__buf_vprintf(spool__buf *b, const char *fmt, va_list ap);
int spool__buf_printf(spool__buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Empties the buffer but keeps its memory for reuse. */
void spool__buf_clear(spool__buf *b);
void spool__buf_free(spool__buf *b);

#endif
