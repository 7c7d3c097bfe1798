/*
 * buf.c: the growable byte buffer. Growth doubles the capacity so appends
 * cost amortised O(1).
 */
#include "base/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int spool__buf_grow(spool__buf *b, size_t extra) {
  size_t need = b->len + extra + 1;
  if (need <= b->len) /* overflow */
    return -1;
  if (need <= b->cap)
    return 0;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < need) {
    if (cap > ((size_t)-1) / 2)
      return -1;
    cap *= 2;
  }
  char *p = realloc(b->data, cap);
  if (p == NULL)
    return -1;
  b->data = p;
  b->cap = cap;
  return 0;
}

int spool__buf_vprintf(spool__buf *b, const char *fmt, va_list ap) {
  va_list again;
  va_copy(again, ap);
  char small[256];
  int n = vsnprintf(small, sizeof small, fmt, ap);
  int rc = -1;
  if (n >= 0 && (size_t)n < sizeof small) {
    rc = spool__buf_add(b, small, (size_t)n);
  } else if (n >= 0 && spool__buf_reserve(b, (size_t)n) == 0) {
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, again);
    b->len += (size_t)n;
    rc = 0;
  }
  va_end(again);
  return rc;
}

int spool__buf_printf(spool__buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = spool__buf_vprintf(b, fmt, ap);
  va_end(ap);
  return rc;
}

void spool__buf_clear(spool__buf *b) {
  b->len = 0;
  if (b->data)
    b->data[0] = '\0';
}

void spool__buf_free(spool__buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}
