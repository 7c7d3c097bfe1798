/*
 * sse.c: the event stream parser of sse.h, after the WHATWG HTML
 * standard's "Interpreting an event stream". It works a byte run at a
 * time: memchr finds the next line end, so a chunk of many events costs
 * one copy per line.
 */
#include "codec/sse.h"

#include <string.h>

void spool__sse_init(spool__sse *p, size_t max_event) {
  memset(p, 0, sizeof *p);
  p->max_event = max_event ? max_event : SPOOL_SSE_MAX_EVENT;
  p->retry_ms = -1;
}

void spool__sse_free(spool__sse *p) {
  spool__buf_free(&p->line);
  spool__buf_free(&p->data);
  spool__buf_free(&p->type);
  spool__buf_free(&p->id);
}

static int set(spool__buf *b, const char *s, size_t n) {
  spool__buf_clear(b);
  return spool__buf_add(b, s, n);
}

static int dispatch(spool__sse *p, spool__sse_cb cb, void *ud) {
  int rc = 0;
  if (p->data.len > 0) {
    /* Every data line added a "\n"; the last one is not part of the data. */
    p->data.data[--p->data.len] = '\0';
    rc = p->type.len ? cb(ud, p->type.data, p->type.len, p->data.data,
                          p->data.len, p->id.len ? p->id.data : "")
                     : cb(ud, "message", 7, p->data.data, p->data.len,
                          p->id.len ? p->id.data : "");
  }
  spool__buf_clear(&p->data);
  spool__buf_clear(&p->type);
  return rc;
}

/* One complete line, without its line end. */
static int process_line(spool__sse *p, const char *s, size_t n,
                        spool__sse_cb cb, void *ud) {
  if (n == 0)
    return dispatch(p, cb, ud);
  if (s[0] == ':')
    return 0;
  const char *colon = memchr(s, ':', n);
  size_t name_len = colon ? (size_t)(colon - s) : n;
  const char *value = colon ? colon + 1 : s + n;
  size_t value_len = (size_t)(s + n - value);
  if (value_len > 0 && value[0] == ' ') {
    value++;
    value_len--;
  }
  if (name_len == 4 && memcmp(s, "data", 4) == 0) {
    if (p->data.len + value_len + 1 > p->max_event)
      return -1;
    if (spool__buf_add(&p->data, value, value_len) != 0 ||
        spool__buf_addc(&p->data, '\n') != 0)
      return -1;
  } else if (name_len == 5 && memcmp(s, "event", 5) == 0) {
    return set(&p->type, value, value_len);
  } else if (name_len == 2 && memcmp(s, "id", 2) == 0) {
    if (memchr(value, '\0', value_len) == NULL)
      return set(&p->id, value, value_len);
  } else if (name_len == 5 && memcmp(s, "retry", 5) == 0) {
    long ms = 0;
    size_t i = 0;
    for (; i < value_len && value[i] >= '0' && value[i] <= '9'; i++)
      ms = ms < 100000000 ? ms * 10 + (value[i] - '0') : ms; /* bounded */
    if (i == value_len && value_len > 0)
      p->retry_ms = ms;
  }
  return 0;
}

/* The first CR or LF in [s, end), or end: memchr finds the LF, and then
 * a CR before it. *lf keeps the LF found (or end) for the lines before it,
 * so lines ended by CR alone cost no scan to the end each. */
static const char *line_end(const char *s, const char *end, const char **lf) {
  if (*lf == NULL || *lf < s) {
    *lf = memchr(s, '\n', (size_t)(end - s));
    if (*lf == NULL)
      *lf = end;
  }
  const char *cr = memchr(s, '\r', (size_t)(*lf - s));
  return cr ? cr : *lf;
}

int spool__sse_feed(spool__sse *p, const char *bytes, size_t len,
                    spool__sse_cb cb, void *ud) {
  if (p->failed)
    return -1;
  if (len == 0)
    return 0;
  const char *s = bytes, *end = bytes + len;
  if (!p->started) {
    /* The BOM may arrive split; hold back until three bytes decide. */
    static const char bom[] = "\xEF\xBB\xBF";
    size_t have = p->line.len, take = 3 - have < len ? 3 - have : len;
    if (spool__buf_add(&p->line, s, take) != 0)
      goto fail;
    s += take;
    if (memcmp(p->line.data, bom, p->line.len) == 0 && p->line.len < 3)
      return 0; /* still a BOM prefix */
    p->started = 1;
    if (p->line.len == 3 && memcmp(p->line.data, bom, 3) == 0) {
      spool__buf_clear(&p->line);
    } else {
      /* Not a BOM: those bytes are the start of the stream. */
      spool__buf held = p->line;
      p->line = (spool__buf){0};
      int rc = spool__sse_feed(p, held.data, held.len, cb, ud);
      spool__buf_free(&held);
      if (rc != 0)
        return rc;
    }
  }
  const char *lf = NULL;
  while (s < end) {
    if (p->after_cr) {
      p->after_cr = 0;
      if (*s == '\n') {
        s++;
        continue;
      }
    }
    const char *eol = line_end(s, end, &lf);
    if (p->line.len + (size_t)(eol - s) > p->max_event)
      goto fail;
    if (eol == end) {
      if (spool__buf_add(&p->line, s, (size_t)(eol - s)) != 0)
        goto fail;
      return 0;
    }
    int rc;
    if (p->line.len > 0) {
      if (spool__buf_add(&p->line, s, (size_t)(eol - s)) != 0)
        goto fail;
      rc = process_line(p, p->line.data, p->line.len, cb, ud);
      spool__buf_clear(&p->line);
    } else {
      rc = process_line(p, s, (size_t)(eol - s), cb, ud);
    }
    if (rc == -1)
      goto fail;
    if (rc != 0)
      return rc;
    p->after_cr = *eol == '\r';
    s = eol + 1;
  }
  return 0;
fail:
  p->failed = 1;
  return -1;
}
