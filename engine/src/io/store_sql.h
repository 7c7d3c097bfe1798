/*
 * store_sql.h: what the store's ops need from a SQL database, so that they
 * are written once (store_ops.c) for every back end that speaks SQL:
 * SQLite (store_sqlite.c) and PostgreSQL (store_postgres.c).
 *
 * A back end gives the text of each statement below in its own dialect,
 * and a driver: run a statement with parameters, step through its rows,
 * read their columns. One statement's result is current at a time; running
 * the next one ends it. Everything runs on the store thread.
 */
#ifndef SPOOL_STORE_SQL_H
#define SPOOL_STORE_SQL_H

#include <stddef.h>

#include "io/store.h"

/* The statements, and the parameters each takes in order (?N or $N). */
enum {
  SQL_SAVEPOINT,         /* a step's own savepoint */
  SQL_RELEASE,           /* ... kept */
  SQL_ROLLBACK_TO,       /* ... undone */
  SQL_LEASE_CHECK,       /* id -> owner, expires_at, epoch (PostgreSQL: locked
                            against a claim until the step commits) */
  SQL_THREAD_INSERT,     /* id, agent, parent, now -> n */
  SQL_THREAD_SEQ,        /* id -> last_seq, n, status, deadline */
  SQL_EVENT_INSERT,      /* n, seq, step, type, at, v, data */
  SQL_THREAD_UPDATE,     /* n, last_seq, status, deadline, now */
  SQL_THREAD_ADVANCE,    /* n, last_seq, now: status and deadline as they
                            were (SQLite then leaves their indexes be) */
  SQL_STATE_VERSION,     /* ns, key, now -> version */
  SQL_STATE_DELETE,      /* ns, key */
  SQL_STATE_UPSERT,      /* ns, key, value, now, expires_at -> version */
  SQL_THREAD_GET,        /* id -> thread row */
  SQL_EVENTS_GET,        /* id, last_seq -> seq, step, type, at, v, data
                            (up to the row's count: on PostgreSQL each
                            statement sees the commits before it, and a
                            step may land between the row and its events) */
  SQL_LIST,              /* status, agent, before, limit, before_id -> rows */
  SQL_COUNTS,            /* agent -> status, how many (every status) */
  SQL_CHILDREN,          /* id -> thread rows */
  SQL_STATE_GET,         /* ns, key, now -> value, version, updated_at */
  SQL_STATE_LIST,        /* ns, now, after, limit -> key, value, version, at */
  SQL_LEASE_GET,         /* id -> owner, expires_at, epoch */
  SQL_LEASE_TAKE,        /* id, owner, expires_at, now, force, epoch -> epoch
                            (no row: someone else holds it) */
  SQL_LEASE_RELEASE,     /* id, owner */
  SQL_LEASE_RELEASE_ALL, /* owner */
  SQL_LEASE_RENEW,       /* owner, expires_at */
  SQL_READY,             /* now, owner, expires_at, limit -> id, epoch */
  SQL_BACKLOG,           /* now -> how many SQL_READY would find */
  SQL_NOTIFY,            /* id: tell other workers the thread changed
                            (PostgreSQL; a no-op on SQLite) */
  SQL_DELETE_EVENTS,     /* id (and its sub-agents, for these three) */
  SQL_DELETE_LEASES,
  SQL_DELETE_THREADS,
  SQL_DUE,            /* now -> id */
  SQL_PURGE_STATE,    /* now */
  SQL_PURGE_EVENTS,   /* finished_before */
  SQL_PURGE_THREADS,  /* finished_before */
  SQL_PURGE_VERSIONS, /* created before */
  SQL_PURGE_LEASES,   /* now */
  SQL_VERSION_PUT,    /* hash, agent, sources, now */
  SQL_VERSION_GET,    /* hash -> sources */
  /* A migration (spool migrate): every row of a table, in the order its
   * columns are inserted; the target's rows so far; the inserts; and what
   * is left to do after them (PostgreSQL: the next thread number). */
  SQL_DUMP_THREADS,  /* -> n, id, agent, parent, status, created_at,
                        updated_at, deadline, last_seq */
  SQL_DUMP_EVENTS,   /* -> thread, seq, step, type, at, v, data */
  SQL_DUMP_STATE,    /* -> ns, key, value, version, updated_at, expires_at */
  SQL_DUMP_VERSIONS, /* -> hash, agent, sources, created_at */
  SQL_ROWS,          /* -> threads + state + versions rows */
  SQL_LEASED,        /* now -> leases held (a source must have none) */
  SQL_LOAD_THREAD,   /* the columns of SQL_DUMP_THREADS, in order */
  SQL_LOAD_EVENT,
  SQL_LOAD_STATE,
  SQL_LOAD_VERSION,
  SQL_LOADED,
  SQL_COUNT
};

/* A statement's parameter: NULL, an integer, or text. */
typedef struct spool__sql_param {
  int kind; /* 0 NULL, 1 integer, 2 text */
  long long i;
  const char *s;
} spool__sql_param;

#define SQL_NULL ((spool__sql_param){0, 0, NULL})
#define SQL_INT(v) ((spool__sql_param){1, (long long)(v), NULL})
#define SQL_TEXT(v) ((spool__sql_param){(v) ? 2 : 0, 0, (v)})

/* How a statement or a step through its rows ended. */
enum {
  SQL_DONE = 0,      /* no (more) rows */
  SQL_ROW = 1,       /* a row is current */
  SQL_FAILED = -1,   /* see error() */
  SQL_CONFLICT = -2, /* a unique key was taken */
};

struct spool__sql_driver {
  int (*run)(void *db, int id, const spool__sql_param *p, int n);
  int (*next)(void *db);
  int (*null)(void *db, int col);
  /* A text column (NULL for SQL NULL), valid until the next statement. */
  const char *(*text)(void *db, int col, size_t *len);
  long long (*integer)(void *db, int col);
  /* Rows the last statement changed. */
  long long (*changes)(void *db);
  /* Why the last statement failed, in the database's words (plus what it
   * means, when it says the database is corrupt or read-only). */
  void (*error)(void *db, char *buf, size_t len);
};

/* Runs one op with a driver, setting its outputs (store.h's exec). */
void spool__store_sql_exec(const spool__sql_driver *drv, void *db,
                           spool__store_op *op);

#endif
