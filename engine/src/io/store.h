/*
 * store.h: durable threads and business state, behind an interface with
 * two back ends: SQLite (store_sqlite.c), embedded, one file; PostgreSQL
 * (store_postgres.c), for many workers over one database. Both run the
 * same ops (store_ops.c) through a SQL driver (store_sql.h).
 *
 * Every database call runs on the store's own thread with its own
 * connection, so the loop never waits on the disk (SQLite sleeps when the
 * database is busy and fsyncs on the calling thread). The loop thread
 * gathers the operations of one loop tick and hands them over together;
 * the store thread runs everything it has been handed in one transaction,
 * each append in a savepoint of its own (so one run's conflict never rolls
 * back another's), and commits once: group commit. Results come back
 * through a uv_async and the operation's callback, on the loop thread.
 * A database in memory (":memory:") has no disk to wait on and no thread:
 * its batches run on the loop, at the end of the tick (store.c).
 *
 * No Lua here. Results of reads are JSON text, built on the store thread.
 */
#ifndef SPOOL_STORE_H
#define SPOOL_STORE_H

#include <stddef.h>
#include <uv.h>

#include "base/buf.h"

typedef struct spool__store spool__store;
typedef struct spool__store_op spool__store_op;

/* The schema this build reads and writes. */
#define SPOOL_STORE_SCHEMA 4

typedef enum spool__store_kind {
  SPOOL__STORE_APPEND,      /* one step of one thread: events + state
                               writes; with no thread_id, state writes only */
  SPOOL__STORE_LOAD,        /* a thread and its events */
  SPOOL__STORE_HEAD,        /* a thread without its events */
  SPOOL__STORE_LIST,        /* threads, filtered, newest first */
  SPOOL__STORE_COUNTS,      /* how many threads of each status */
  SPOOL__STORE_CHILDREN,    /* the child threads of a thread */
  SPOOL__STORE_STATE_GET,   /* one business-state document */
  SPOOL__STORE_STATE_LIST,  /* the documents of a namespace */
  SPOOL__STORE_CLAIM,       /* take the lease on a thread: a new epoch */
  SPOOL__STORE_RELEASE,     /* give a lease back (no thread: all of the
                               owner's) */
  SPOOL__STORE_RENEW,       /* extend every lease an owner holds */
  SPOOL__STORE_READY,       /* claim threads left running, lease lapsed */
  SPOOL__STORE_BACKLOG,     /* count them, claiming none */
  SPOOL__STORE_NOTIFY,      /* tell other workers a thread changed */
  SPOOL__STORE_DELETE,      /* a thread, its events and its children */
  SPOOL__STORE_DUE,         /* waiting threads whose deadline has passed */
  SPOOL__STORE_PURGE,       /* expired threads and state, then reclaim space */
  SPOOL__STORE_VERSION_PUT, /* an agent version's sources, by its hash */
  SPOOL__STORE_VERSION_GET, /* ... read back (for a thread pinned to it) */
  SPOOL__STORE_MIGRATE,     /* copy another store (`value`: its path) into
                               this one, which must be empty */
} spool__store_kind;

/* How an operation ended. */
typedef enum spool__store_status {
  SPOOL__STORE_OK = 0,
  SPOOL__STORE_ECONFLICT, /* a sequence, lease or version check failed */
  SPOOL__STORE_ENOTFOUND,
  SPOOL__STORE_ECORRUPT, /* a row the store cannot read */
  SPOOL__STORE_EIO,      /* the database failed: full disk, I/O error ... */
} spool__store_status;

typedef struct spool__store_event {
  long long seq;
  long long step;
  long long at;
  const char *type;
  const char *v;    /* agent version, may be NULL */
  const char *data; /* JSON */
} spool__store_event;

typedef struct spool__store_write {
  const char *ns, *key;
  const char *value;    /* JSON, or NULL to delete */
  long long if_version; /* -1: unconditional; 0: only if absent */
  long long expires_at; /* 0: never */
} spool__store_write;

/*
 * One operation. The loop thread fills the inputs of its kind (strings are
 * copied into the op by spool__store_op_new / _strdup), submits it, and
 * reads the outputs in `done`. Fields an op kind does not use stay zero.
 */
struct spool__store_op {
  spool__store_kind kind;
  /* inputs */
  const char *thread_id;
  const char *agent, *parent; /* APPEND of a new thread (expected_seq 0) */
  const char *status;         /* APPEND: the thread's status after it */
  const char *owner;          /* APPEND, CLAIM, RELEASE, RENEW, READY: the
                                 lease holder */
  const char *ns, *key;       /* STATE_*; VERSION_*: the hash; LIST: the id
                                 below which threads of `before` continue */
  const char *value;          /* VERSION_PUT: the sources, as JSON;
                                 MIGRATE: the path of the store to copy */
  const char *filter_status, *filter_agent; /* LIST */
  long long expected_seq;                   /* APPEND: events already stored */
  long long deadline;         /* APPEND: due time of a pending request, 0;
                                 RELEASE: none may claim it before this */
  long long now;              /* wall clock, ms (injectable for tests) */
  long long lease_ms;         /* CLAIM, RENEW, READY, APPEND with claim:
                                 how long it lasts */
  long long epoch;            /* APPEND, RELEASE: this run's claim's
                                 (APPEND with claim: set to the new one);
                                 CLAIM with force: the dead holder's */
  int force;                  /* CLAIM: take a lease whose holder is dead,
                                 if it is still at `epoch` */
  int claim, release;         /* APPEND: take the lease first (a new
                                 thread's first step), give it back after
                                 (a step after which the run stops): in
                                 the step's own transaction */
  long long limit, before;    /* LIST, READY: page size; LIST: created_at
                                 bound (with key: a page ends at
                                 created_at, id) */
  long long finished_before;  /* PURGE */
  spool__store_event *events; /* APPEND */
  int nevents;
  spool__store_write *writes; /* APPEND */
  int nwrites;
  /* outputs */
  spool__store_status result;
  char errmsg[256];
  spool__buf json; /* reads: the result as JSON text */
  /* plumbing */
  void (*done)(spool__store_op *op, void *ud);
  void *ud;
  int cancelled; /* the waiter is gone: done only frees */
  spool__store_op *next;
  char **strings; /* copies of the input strings, freed with the op */
  int nstrings, capstrings;
};

/* The back end interface, run on the store thread only (or, for a
 * database in memory, on the loop thread only). */
typedef struct spool__sql_driver spool__sql_driver;

typedef struct spool__store_backend {
  const char *name;
  const spool__sql_driver *sql; /* how its SQL runs (store_sql.h) */
  int (*open)(void **db, const char *path, char *err, size_t errlen);
  void (*close)(void *db);
  int (*begin)(void *db, char *err, size_t errlen);
  int (*commit)(void *db, char *err, size_t errlen);
  void (*rollback)(void *db);
  /* Runs one op inside the open transaction, setting its outputs. */
  void (*exec)(void *db, spool__store_op *op);
  /* Runs work that cannot run in a transaction (VACUUM), if any. */
  void (*maintain)(void *db);
} spool__store_backend;

extern const spool__store_backend spool__store_sqlite;
extern const spool__store_backend spool__store_postgres;

/* The back end a store path names: a postgres:// or postgresql:// URL is
 * PostgreSQL's, anything else a SQLite file (or ":memory:"). */
const spool__store_backend *spool__store_backend_for(const char *path);

/* Opens the store at path (":memory:" keeps it in memory) and starts its
 * thread; waits for the database to open. 0, or -1 with a message. */
int spool__store_open(uv_loop_t *loop, const spool__store_backend *be,
                      const char *path, spool__store **out, char *err,
                      size_t errlen);
/* Finishes what was submitted, stops the thread and closes the database;
 * the ops' callbacks run first. The uv handle memory goes in its close
 * callback. NULL is a no-op. */
void spool__store_close(spool__store *s);

/* A new op of a kind; its strings are copied with spool__store_op_strdup.
 * NULL when out of memory. */
spool__store_op *spool__store_op_new(spool__store_kind kind);
const char *spool__store_op_strdup(spool__store_op *op, const char *s);
/* The first n bytes of s (n + 1 with a NUL), kept by op; NULL when out of
 * memory. */
char *spool__store_op_strndup(spool__store_op *op, const char *s, size_t n);
void spool__store_op_free(spool__store_op *op);

/* Queues an op for the end of this loop tick; `done` runs on the loop
 * thread when it has finished (or failed). */
void spool__store_submit(spool__store *s, spool__store_op *op,
                         void (*done)(spool__store_op *, void *), void *ud);
/* Hands the ops gathered this tick to the store thread, or runs them in
 * memory (called by the scheduler after each drain of the ready queue). */
void spool__store_flush(spool__store *s);
/* The leases `owner` holds (count) and how long each lasts: while it
 * holds any, the store renews them all every third of lease_ms, with one
 * RENEW op, so a lease lapses only when its holder has stopped (died,
 * hung, or lost the database). 0, or -1 when out of memory. */
int spool__store_hold(spool__store *s, const char *owner, long long lease_ms,
                      int leases);
/* Ops submitted and not yet completed. */
int spool__store_pending(const spool__store *s);
/* Transactions committed, and the appends they carried, so far. */
void spool__store_counts(spool__store *s, long long *transactions,
                         long long *appends);

/* Test builds' crash points: kills the process (SIGKILL) when
 * $SPOOL_TEST_CRASH names this point. */
void spool__crash_point(const char *name);

#endif
