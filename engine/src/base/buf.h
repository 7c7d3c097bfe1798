/*
 * buf.h: a growable byte buffer, the one string builder of the engine's C
 * code. It never touches Lua; errors are reported as return codes.
 */
#ifndef SPOOL_BUF_H
#define SPOOL_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct spool__buf {
  char *data; /* NUL-terminated whenever len > 0 or data != NULL */
  size_t len;
  size_t cap;
} spool__buf;

/* Makes room for `extra` more bytes plus a terminating NUL; 0 or -1. */
int spool__buf_reserve(spool__buf *b, size_t extra);
/* Appends n bytes; 0 or -1 on out of memory. */
int spool__buf_add(spool__buf *b, const void *p, size_t n);
int spool__buf_addc(spool__buf *b, char c);
int spool__buf_adds(spool__buf *b, const char *s);
/* Appends printf-style text; 0 or -1. */
int spool__buf_vprintf(spool__buf *b, const char *fmt, va_list ap);
int spool__buf_printf(spool__buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Empties the buffer but keeps its memory for reuse. */
void spool__buf_clear(spool__buf *b);
void spool__buf_free(spool__buf *b);

#endif
