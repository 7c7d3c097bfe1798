/*
 * errors.c: the error table (errors.h) and spool.h's names and messages
 * of codes, all made from the two lists.
 */
#include "base/errors.h"

#include <string.h>

#include <uv.h>

#include "spool.h"

static const struct {
  int code;
  const char *name, *message;
} codes[] = {{SPOOL_OK, "OK", "success"},
#define XX(name, value, message) {value, #name, message},
             SPOOL_ERRNO_MAP(XX)
#undef XX
};

static int code_index(int code) {
  for (size_t i = 0; i < sizeof codes / sizeof *codes; i++)
    if (codes[i].code == code)
      return (int)i;
  return -1;
}

const char *spool_strerror(int code) {
  int i = code_index(code);
  return i < 0 ? "unknown error" : codes[i].message;
}

const char *spool_errname(int code) {
  int i = code_index(code);
  return i < 0 ? "UNKNOWN" : codes[i].name;
}

static const spool__error rows[] = {
#define XX(name, code, status, api, message)                                   \
  {#name, SPOOL_##code, status, api, message},
    SPOOL__ERROR_MAP(XX)
#undef XX
};

/* System errors, by uv's names (without its UV_ prefix). */
static const spool__error system_rows[] = {
#define XX(name, message) {#name, SPOOL_EIO, 500, "internal", message},
    UV_ERRNO_MAP(XX)
#undef XX
};

/* uv's list has two that are not errors' names: EOF and UNKNOWN. */
static int is_error_name(const char *name) {
  return name[0] == 'E' && strcmp(name, "EOF") != 0;
}

static const spool__error *find_in(const spool__error *t, size_t n,
                                   const char *name, size_t len) {
  for (size_t i = 0; i < n; i++)
    if (strlen(t[i].name) == len && memcmp(t[i].name, name, len) == 0 &&
        is_error_name(t[i].name))
      return &t[i];
  return NULL;
}

const spool__error *spool__error_find(const char *name, size_t len) {
  const spool__error *e = find_in(rows, sizeof rows / sizeof *rows, name, len);
  return e ? e
           : find_in(system_rows, sizeof system_rows / sizeof *system_rows,
                     name, len);
}

void spool__error_each(void (*f)(const spool__error *, void *), void *ud) {
  for (size_t i = 0; i < sizeof rows / sizeof *rows; i++)
    f(&rows[i], ud);
  for (size_t i = 0; i < sizeof system_rows / sizeof *system_rows; i++)
    if (is_error_name(system_rows[i].name) &&
        find_in(rows, sizeof rows / sizeof *rows, system_rows[i].name,
                strlen(system_rows[i].name)) == NULL)
      f(&system_rows[i], ud);
}

int spool__error_code_of(const char *msg) {
  const char *colon = msg ? strchr(msg, ':') : NULL;
  const spool__error *e =
      colon ? spool__error_find(msg, (size_t)(colon - msg)) : NULL;
  return e ? e->code : SPOOL_EINTERNAL;
}

const char *spool__error_text_of(const char *msg) {
  const char *colon = msg ? strchr(msg, ':') : NULL;
  if (colon == NULL || colon == msg || msg[0] != 'E' || colon[1] != ' ')
    return msg ? msg : "";
  for (const char *p = msg; p < colon; p++)
    if (*p < 'A' || *p > 'Z')
      return msg;
  return colon + 2;
}

size_t spool__error_name_len(const char *msg) {
  size_t n = 0;
  while (msg && msg[n] >= 'A' && msg[n] <= 'Z')
    n++;
  return n > 1 && msg[0] == 'E' && msg[n] == ':' ? n : 0;
}
