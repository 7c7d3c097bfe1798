/*
 * test_errors.c: the error table (errors.h, spool.h's SPOOL_ERRNO_MAP):
 * every code has a name and a message, every finer name maps to one of
 * spool.h's codes, and a message's name decides its code.
 */
#include <string.h>

#include "base/errors.h"
#include "spool.h"
#include "test.h"

TEST_IMPL(errors_every_code_named) {
  int seen = 0;
#define XX(name, value, message)                                               \
  ASSERT_EQ(SPOOL_##name, value);                                              \
  ASSERT(value < 0);                                                           \
  ASSERT_STR_EQ(spool_strerror(value), message);                               \
  ASSERT_STR_EQ(spool_errname(value), #name);                                  \
  ASSERT_EQ(seen &(1 << -(value)), 0); /* each value once */                   \
  seen |= 1 << -(value);
  SPOOL_ERRNO_MAP(XX)
#undef XX
  ASSERT_STR_EQ(spool_strerror(SPOOL_ECONFLICT), "conflict");
  ASSERT_STR_EQ(spool_strerror(SPOOL_ECORRUPT), "stored data is corrupt");
  ASSERT_STR_EQ(spool_strerror(SPOOL_OK), "success");
  ASSERT_STR_EQ(spool_strerror(-1000), "unknown error");
  ASSERT_STR_EQ(spool_errname(-1000), "UNKNOWN");
}

static void check_row(const spool__error *e, void *ud) {
  int *rows = ud;
  (*rows)++;
  ASSERT(e->name[0] == 'E' && strlen(e->name) > 2);
  ASSERT(strcmp(spool_errname(e->code), "UNKNOWN") != 0);
  ASSERT(e->status >= 400 && e->status <= 599);
  ASSERT(e->api != NULL && *e->api != '\0');
  ASSERT(e->message == NULL || *e->message != '\0');
  ASSERT(spool__error_find(e->name, strlen(e->name)) == e);
}

TEST_IMPL(errors_every_name_maps) {
  int rows = 0;
  spool__error_each(check_row, &rows);
  ASSERT(rows > 40); /* errors.h's and the system's */
  ASSERT_EQ(spool__error_code_of("ETIMEDOUT: no reply within 5 s"), SPOOL_EIO);
  ASSERT_EQ(spool__error_code_of("ENOTFOUND: unknown thread 'x'"),
            SPOOL_ENOTFOUND);
  ASSERT_EQ(spool__error_code_of("ENOSPC: disk full"), SPOOL_EIO);
  ASSERT_EQ(spool__error_code_of("ECONFLICT: held"), SPOOL_ECONFLICT);
  ASSERT_EQ(spool__error_code_of("EFOO: a name no one knows"), SPOOL_EINTERNAL);
  ASSERT_EQ(spool__error_code_of("no name at all"), SPOOL_EINTERNAL);
  ASSERT_EQ(spool__error_code_of(NULL), SPOOL_EINTERNAL);
  const spool__error *io = spool__error_find("EIO", 3);
  ASSERT_EQ(io->status, 503);
  ASSERT_STR_EQ(io->api, "store_failed");
}
