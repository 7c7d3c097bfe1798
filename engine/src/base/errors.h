/*
 * errors.h: every error name the engine and its Lua library raise. A
 * failure travels as "ENAME: why" (Lua's nil, message); this table says
 * what each name means to the C API (one of spool.h's codes) and to the
 * control API (an HTTP status and an error code), so those are never
 * guessed from text. spool.h's codes are the first rows; the rest are the
 * finer names, each mapped to one of them. Names of system errors (uv's:
 * ENOENT, ENOSPC, ...), which spool.fs passes on, count as EIO.
 */
#ifndef SPOOL_ERRORS_H
#define SPOOL_ERRORS_H

#include <stddef.h>

/* XX(name, spool.h code, HTTP status, API code, message); a message of
 * NULL is spool_strerror's. A 500 is "ours": logged, never described. */
#define SPOOL__ERROR_MAP(XX)                                                   \
  XX(EINVAL, EINVAL, 422, "invalid", NULL)                                     \
  XX(ENOMEM, ENOMEM, 500, "internal", NULL)                                    \
  XX(ENOTFOUND, ENOTFOUND, 404, "not_found", NULL)                             \
  XX(EAGENT, EAGENT, 422, "broken_agent", NULL)                                \
  XX(ESTATE, ESTATE, 409, "wrong_state", NULL)                                 \
  XX(EIO, EIO, 503, "store_failed", NULL)                                      \
  XX(EINTERNAL, EINTERNAL, 500, "internal", NULL)                              \
  XX(ECONFLICT, ECONFLICT, 409, "conflict", NULL)                              \
  XX(ECORRUPT, ECORRUPT, 500, "internal", NULL)                                \
  XX(EACCES, EINVAL, 500, "internal", "refused: outside what is allowed")      \
  XX(ECANCELED, ESTATE, 500, "internal", "cancelled")                          \
  XX(ECONNECT, EIO, 500, "internal", "cannot connect")                         \
  XX(ECONNRESET, EIO, 500, "internal", "the connection broke")                 \
  XX(EFBIG, EINVAL, 500, "internal", "the file is too large")                  \
  XX(EHOST, EINTERNAL, 500, "internal", "a host tool failed")                  \
  XX(EHTTP, EIO, 500, "internal", "the HTTP transfer failed")                  \
  XX(EJSON, EINVAL, 500, "internal", "not valid JSON")                         \
  XX(ELIMIT, ESTATE, 500, "internal", "over a limit")                          \
  XX(ELISTEN, EIO, 500, "internal", "cannot listen")                           \
  XX(EIDLE, ESTATE, 500, "internal", "nothing waits for it")                   \
  XX(ELOOP, EINVAL, 500, "internal", "a symbolic link was not followed")       \
  XX(EMCP, EIO, 500, "internal", "the MCP server refused or failed")           \
  XX(EMODEL, EIO, 500, "internal", "the model call failed")                    \
  XX(EPIPE, EIO, 500, "internal", "the peer went away")                        \
  XX(EPROTO, EIO, 500, "internal", "the peer broke the protocol")              \
  XX(ESCHEMA, EINVAL, 500, "internal", "does not fit the schema")              \
  XX(ETIMEDOUT, EIO, 500, "internal", "timed out")                             \
  XX(ETOOBIG, EIO, 500, "internal", "the response is too large")

typedef struct spool__error {
  const char *name;    /* "ETIMEDOUT" */
  int code;            /* spool.h's: SPOOL_EIO */
  int status;          /* the control API's HTTP status */
  const char *api;     /* the control API's error code: "store_failed" */
  const char *message; /* what it means, in general */
} spool__error;

/* The row of a name (len bytes of it, as in "ENAME: why"), or NULL; a
 * system error's name gets a row of its own (EIO, 500, uv's message). */
const spool__error *spool__error_find(const char *name, size_t len);

/* Every row, for spool.core.errors: calls f for each, then for each
 * system error name. */
void spool__error_each(void (*f)(const spool__error *, void *), void *ud);

/* spool.h's code for a message "ENAME: why": its name's, else
 * SPOOL_EINTERNAL (a message without a known name is a bug). */
int spool__error_code_of(const char *msg);

/* The length of the name a message "ENAME: why" begins with, or 0. */
size_t spool__error_name_len(const char *msg);

/* The text of a message "ENAME: why" (its "why"); msg itself without such
 * a prefix, "" for NULL. */
const char *spool__error_text_of(const char *msg);

#endif
