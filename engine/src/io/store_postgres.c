/*
 * store_postgres.c: the PostgreSQL back end of the store (see store.h),
 * for many workers over one database. Chosen by a URL:
 * --db postgres://user@host/db, $SPOOL_DB, or store = "postgres://..." in
 * spool.lua.
 *
 * Like SQLite's, it runs on the store thread with one connection of its
 * own, so the loop never waits on the network: libpq's blocking calls are
 * the store thread's to make. A tick's ops are one transaction (group
 * commit), each append in a savepoint. The ops themselves are store_ops.c;
 * this file gives PostgreSQL's words for their statements, prepared once
 * per connection, and the schema.
 *
 * Several workers share the database, so what SQLite's single writer gave
 * for free is asked for here: an append locks its thread's lease row
 * (FOR SHARE) so no claim can come between its fencing check and its
 * commit; taking over lapsed leases skips the threads another worker is
 * writing (FOR UPDATE SKIP LOCKED). Text columns compared in order (ids,
 * keys) use the "C" collation, as SQLite compares bytes.
 *
 * The URL's password never reaches a message: errors name the database by
 * its name, host, port and user alone.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/store_sql.h"

enum { S_BEGIN = SQL_COUNT, S_COMMIT, S_ROLLBACK, S_ALL };

static const char *const sql_text[S_ALL] = {
    [SQL_SAVEPOINT] = "SAVEPOINT step",
    [SQL_RELEASE] = "RELEASE SAVEPOINT step",
    [SQL_ROLLBACK_TO] = "ROLLBACK TO SAVEPOINT step",
    /* Locked until the step commits: a claim waits for it, and the step
     * after the claim finds the new epoch. */
    [SQL_LEASE_CHECK] = "SELECT owner, expires_at, epoch FROM leases WHERE "
                        "thread_id = $1 FOR SHARE",
    [SQL_THREAD_INSERT] =
        "INSERT INTO threads(id, agent, parent, created_at, updated_at, "
        "status, deadline, last_seq) VALUES ($1, $2, $3, $4, $4, 'running', "
        "NULL, 0) RETURNING n",
    [SQL_THREAD_SEQ] =
        "SELECT last_seq, n, status, deadline FROM threads WHERE id = $1",
    [SQL_EVENT_INSERT] = "INSERT INTO events(thread, seq, step, type, at, v, "
                         "data) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    /* Workers following the thread (an event stream, a cancel) hear of
     * the step when it commits. */
    [SQL_THREAD_UPDATE] =
        "WITH u AS (UPDATE threads SET last_seq = $2, status = $3, "
        "deadline = $4, updated_at = $5 WHERE n = $1 RETURNING id) "
        "SELECT pg_notify('spool', id) FROM u",
    [SQL_THREAD_ADVANCE] =
        "WITH u AS (UPDATE threads SET last_seq = $2, updated_at = $3 "
        "WHERE n = $1 RETURNING id) SELECT pg_notify('spool', id) FROM u",
    [SQL_STATE_VERSION] =
        "SELECT version FROM state WHERE ns = $1 AND key = $2 "
        "AND (expires_at IS NULL OR expires_at > $3)",
    [SQL_STATE_DELETE] = "DELETE FROM state WHERE ns = $1 AND key = $2",
    [SQL_STATE_UPSERT] =
        "INSERT INTO state(ns, key, value, version, updated_at, expires_at) "
        "VALUES ($1, $2, $3, 1, $4, $5) ON CONFLICT(ns, key) DO UPDATE SET "
        "value = excluded.value, updated_at = excluded.updated_at, "
        "expires_at = excluded.expires_at, version = CASE WHEN "
        "state.expires_at IS NOT NULL AND state.expires_at <= $4 THEN 1 "
        "ELSE state.version + 1 END RETURNING version",
    [SQL_THREAD_GET] =
        "SELECT id, agent, parent, status, created_at, "
        "updated_at, last_seq, deadline FROM threads WHERE id = $1",
    [SQL_EVENTS_GET] = "SELECT seq, step, type, at, v, data FROM events "
                       "WHERE thread = (SELECT n FROM threads WHERE id = $1) "
                       "AND seq <= $2 ORDER BY seq",
    [SQL_LIST] = "SELECT id, agent, parent, status, created_at, updated_at, "
                 "last_seq, deadline FROM threads WHERE ($1::text IS NULL OR "
                 "status = $1) AND ($2::text IS NULL OR agent = $2) AND "
                 "($3::bigint = 0 OR created_at < $3 OR (created_at = $3 AND "
                 "id < $5)) ORDER BY created_at DESC, id DESC LIMIT $4",
    [SQL_COUNTS] = "SELECT status, count(*) FROM threads WHERE $1::text IS "
                   "NULL OR agent = $1 GROUP BY status",
    [SQL_CHILDREN] = "SELECT id, agent, parent, status, created_at, "
                     "updated_at, last_seq, deadline FROM threads WHERE "
                     "parent = $1 ORDER BY created_at, id",
    [SQL_STATE_GET] = "SELECT value, version, updated_at FROM state WHERE "
                      "ns = $1 AND key = $2 AND (expires_at IS NULL OR "
                      "expires_at > $3)",
    [SQL_STATE_LIST] = "SELECT key, value, version, updated_at FROM state "
                       "WHERE ns = $1 AND (expires_at IS NULL OR expires_at "
                       "> $2) AND key > $3 ORDER BY key LIMIT $4",
    [SQL_LEASE_GET] =
        "SELECT owner, expires_at, epoch FROM leases WHERE thread_id = $1",
    [SQL_LEASE_TAKE] =
        "INSERT INTO leases(thread_id, owner, expires_at, epoch) VALUES "
        "($1, $2, $3, 1) ON CONFLICT(thread_id) DO UPDATE SET owner = "
        "excluded.owner, expires_at = excluded.expires_at, epoch = "
        "leases.epoch + 1 WHERE leases.owner IN (excluded.owner, '') OR "
        "leases.expires_at <= $4 OR ($5::int = 1 AND leases.epoch = $6) "
        "RETURNING epoch",
    [SQL_LEASE_RELEASE] = "UPDATE leases SET owner = '', expires_at = $4 "
                          "WHERE thread_id = $1 AND owner = $2 AND epoch = "
                          "$3",
    [SQL_LEASE_RELEASE_ALL] = "UPDATE leases SET owner = '', expires_at = 0 "
                              "WHERE owner = $1",
    [SQL_LEASE_RENEW] = "UPDATE leases SET expires_at = $2 WHERE owner = $1",
    [SQL_READY] =
        "WITH ready AS (SELECT t.id, t.updated_at FROM threads t LEFT JOIN "
        "leases l ON l.thread_id = t.id WHERE t.status = 'running' AND "
        "t.parent IS NULL AND (l.expires_at IS NULL OR l.expires_at <= $1) "
        "ORDER BY t.updated_at, t.id LIMIT $4 FOR UPDATE OF t SKIP LOCKED) "
        "INSERT INTO leases(thread_id, owner, expires_at, epoch) SELECT id, "
        "$2, $3, 1 FROM ready ON CONFLICT(thread_id) DO UPDATE SET owner = "
        "excluded.owner, expires_at = excluded.expires_at, epoch = "
        "leases.epoch + 1 WHERE leases.expires_at <= $1 "
        "RETURNING thread_id, epoch",
    [SQL_BACKLOG] = "SELECT count(*) FROM threads t LEFT JOIN leases l ON "
                    "l.thread_id = t.id WHERE t.status = 'running' AND "
                    "t.parent IS NULL AND (l.expires_at IS NULL OR "
                    "l.expires_at <= $1)",
    [SQL_NOTIFY] = "SELECT pg_notify('spool', $1)",
    [SQL_DELETE_EVENTS] =
        "WITH RECURSIVE doomed(id) AS (SELECT $1::text UNION ALL SELECT t.id "
        "FROM threads t JOIN doomed d ON t.parent = d.id) DELETE FROM events "
        "WHERE thread IN (SELECT n FROM threads WHERE id IN (SELECT id FROM "
        "doomed))",
    [SQL_DELETE_LEASES] =
        "WITH RECURSIVE doomed(id) AS (SELECT $1::text UNION ALL SELECT t.id "
        "FROM threads t JOIN doomed d ON t.parent = d.id) DELETE FROM leases "
        "WHERE thread_id IN (SELECT id FROM doomed)",
    [SQL_DELETE_THREADS] =
        "WITH RECURSIVE doomed(id) AS (SELECT $1::text UNION ALL SELECT t.id "
        "FROM threads t JOIN doomed d ON t.parent = d.id) DELETE FROM "
        "threads WHERE id IN (SELECT id FROM doomed)",
    [SQL_DUE] = "SELECT id FROM threads WHERE status = 'waiting' AND deadline "
                "IS NOT NULL AND deadline <= $1 ORDER BY deadline",
    [SQL_PURGE_STATE] = "DELETE FROM state WHERE expires_at IS NOT NULL AND "
                        "expires_at <= $1",
    [SQL_PURGE_EVENTS] =
        "WITH RECURSIVE doomed(id) AS (SELECT id FROM threads WHERE parent "
        "IS NULL AND status IN ('done', 'failed', 'cancelled') AND "
        "updated_at < $1 UNION ALL SELECT t.id FROM threads t JOIN doomed d "
        "ON t.parent = d.id) DELETE FROM events WHERE thread IN (SELECT n "
        "FROM threads WHERE id IN (SELECT id FROM doomed))",
    [SQL_PURGE_THREADS] =
        "WITH RECURSIVE doomed(id) AS (SELECT id FROM threads WHERE parent "
        "IS NULL AND status IN ('done', 'failed', 'cancelled') AND "
        "updated_at < $1 UNION ALL SELECT t.id FROM threads t JOIN doomed d "
        "ON t.parent = d.id) DELETE FROM threads WHERE id IN (SELECT id "
        "FROM doomed)",
    [SQL_PURGE_VERSIONS] =
        "DELETE FROM versions WHERE created_at < $1 AND hash NOT IN "
        "(SELECT DISTINCT v FROM events WHERE v IS NOT NULL)",
    [SQL_PURGE_LEASES] = "DELETE FROM leases WHERE expires_at <= $1 AND "
                         "thread_id NOT IN (SELECT id FROM threads)",
    [SQL_VERSION_PUT] = "INSERT INTO versions(hash, agent, sources, "
                        "created_at) VALUES ($1, $2, $3, $4) ON "
                        "CONFLICT(hash) DO UPDATE SET created_at = "
                        "excluded.created_at",
    [SQL_VERSION_GET] = "SELECT sources FROM versions WHERE hash = $1",
    [SQL_DUMP_THREADS] =
        "SELECT n, id, agent, parent, status, created_at, updated_at, "
        "deadline, last_seq FROM threads ORDER BY n",
    [SQL_DUMP_EVENTS] =
        "SELECT thread, seq, step, type, at, v, data FROM events ORDER BY "
        "thread, seq",
    [SQL_DUMP_STATE] =
        "SELECT ns, key, value, version, updated_at, expires_at FROM state "
        "ORDER BY ns, key",
    [SQL_DUMP_VERSIONS] =
        "SELECT hash, agent, sources, created_at FROM versions ORDER BY "
        "hash",
    [SQL_ROWS] =
        "SELECT (SELECT count(*) FROM threads) + (SELECT count(*) FROM "
        "state) + (SELECT count(*) FROM versions)",
    [SQL_LEASED] = "SELECT count(*) FROM leases WHERE owner <> '' AND "
                   "expires_at > $1",
    [SQL_LOAD_THREAD] =
        "INSERT INTO threads(n, id, agent, parent, status, created_at, "
        "updated_at, deadline, last_seq) VALUES ($1, $2, $3, $4, $5, $6, "
        "$7, $8, $9)",
    [SQL_LOAD_EVENT] =
        "INSERT INTO events(thread, seq, step, type, at, v, data) VALUES "
        "($1, $2, $3, $4, $5, $6, $7)",
    [SQL_LOAD_STATE] =
        "INSERT INTO state(ns, key, value, version, updated_at, expires_at) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
    [SQL_LOAD_VERSION] =
        "INSERT INTO versions(hash, agent, sources, created_at) VALUES ($1, "
        "$2, $3, $4)",
    /* Threads made after a migration are numbered after its. */
    [SQL_LOADED] = "SELECT setval(pg_get_serial_sequence('threads', 'n'), "
                   "COALESCE(max(n), 0) + 1, false) FROM threads",
    [S_BEGIN] = "BEGIN",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
};

/* Schema 4, the first PostgreSQL had (SQLite's numbering: one version for
 * both). Made in one transaction, under a lock, so that workers starting
 * together make it once. */
static const char schema_sql[] =
    "CREATE TABLE spool_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE threads(n BIGSERIAL PRIMARY KEY,"
    " id TEXT COLLATE \"C\" NOT NULL UNIQUE, agent TEXT NOT NULL,"
    " parent TEXT COLLATE \"C\", created_at BIGINT NOT NULL,"
    " updated_at BIGINT NOT NULL, status TEXT NOT NULL, deadline BIGINT,"
    " last_seq BIGINT NOT NULL);"
    "CREATE INDEX threads_by_status ON threads(status, created_at);"
    "CREATE INDEX threads_by_parent ON threads(parent);"
    "CREATE INDEX threads_by_deadline ON threads(deadline)"
    " WHERE deadline IS NOT NULL;"
    "CREATE TABLE events(thread BIGINT NOT NULL, seq BIGINT NOT NULL,"
    " step BIGINT NOT NULL, type TEXT NOT NULL, at BIGINT NOT NULL, v TEXT,"
    " data TEXT NOT NULL, PRIMARY KEY (thread, seq));"
    "CREATE TABLE leases(thread_id TEXT COLLATE \"C\" PRIMARY KEY,"
    " owner TEXT NOT NULL, expires_at BIGINT NOT NULL,"
    " epoch BIGINT NOT NULL DEFAULT 0);"
    "CREATE INDEX leases_by_owner ON leases(owner);"
    "CREATE TABLE state(ns TEXT COLLATE \"C\" NOT NULL,"
    " key TEXT COLLATE \"C\" NOT NULL, value TEXT NOT NULL,"
    " version BIGINT NOT NULL, updated_at BIGINT NOT NULL, expires_at BIGINT,"
    " PRIMARY KEY (ns, key));"
    "CREATE TABLE versions(hash TEXT PRIMARY KEY, agent TEXT NOT NULL,"
    " sources TEXT NOT NULL, created_at BIGINT NOT NULL);"
    "INSERT INTO spool_meta VALUES ('created_by', 'spool'), ('schema', '4');";

/* The first schema this back end has: older SPOOL_STORE_SCHEMA steps were
 * SQLite's alone. */
#define FIRST_SCHEMA 4

typedef struct db {
  PGconn *conn;
  char *where;          /* the database, for messages: never a password */
  char prepared[S_ALL]; /* statement i is prepared on this connection */
  PGresult *res;        /* the current statement's rows */
  int row, rows;
  char err[256];
} db;

/* The database as messages name it: its connection parameters, parsed
 * as libpq parses them (percent-encoding, repeated keys), with every
 * secret left out: "postgres database spool on db.internal:5432 as ana".
 */
static char *describe(const char *url) {
  const char *dbname = NULL, *host = NULL, *port = NULL, *user = NULL;
  PQconninfoOption *opts = PQconninfoParse(url, NULL);
  for (PQconninfoOption *o = opts; o && o->keyword; o++) {
    if (o->val == NULL)
      continue;
    if (strcmp(o->keyword, "dbname") == 0)
      dbname = o->val;
    else if (strcmp(o->keyword, "host") == 0 ||
             (strcmp(o->keyword, "hostaddr") == 0 && host == NULL))
      host = o->val;
    else if (strcmp(o->keyword, "port") == 0)
      port = o->val;
    else if (strcmp(o->keyword, "user") == 0)
      user = o->val;
  }
  char text[512];
  snprintf(text, sizeof text, "postgres database %s on %s%s%s%s%s",
           dbname ? dbname : "(default)", host ? host : "(default host)",
           port ? ":" : "", port ? port : "", user ? " as " : "",
           user ? user : "");
  PQconninfoFree(opts);
  return strdup(text);
}

static void clear_result(db *d) {
  PQclear(d->res);
  d->res = NULL;
  d->row = d->rows = 0;
}

/* libpq's message, one line. */
static void pg_message(db *d, const char *what) {
  const char *m = d->res ? PQresultErrorMessage(d->res) : "";
  if (*m == '\0')
    m = PQerrorMessage(d->conn);
  snprintf(d->err, sizeof d->err, "%s%s", what, m);
  for (char *p = d->err; *p; p++)
    if (*p == '\n')
      *p = *(p + 1) ? ' ' : '\0';
}

/* Runs SQL with no parameters and no rows; 0, or -1 with d->err. */
static int simple(db *d, const char *sql) {
  clear_result(d);
  d->res = PQexec(d->conn, sql);
  int ok = PQresultStatus(d->res) == PGRES_COMMAND_OK ||
           PQresultStatus(d->res) == PGRES_TUPLES_OK;
  if (!ok)
    pg_message(d, "");
  clear_result(d);
  return ok ? 0 : -1;
}

/* ---- the driver (store_sql.h) ---- */

#define MAX_PARAMS 12

static int prepare(db *d, int id) {
  if (d->prepared[id])
    return 0;
  char name[16];
  snprintf(name, sizeof name, "s%d", id);
  PGresult *r = PQprepare(d->conn, name, sql_text[id], 0, NULL);
  int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  if (!ok) {
    d->res = r;
    pg_message(d, "");
    clear_result(d);
    return -1;
  }
  PQclear(r);
  d->prepared[id] = 1;
  return 0;
}

static int sql_run(void *p, int id, const spool__sql_param *params, int n) {
  db *d = p;
  clear_result(d);
  if (prepare(d, id) != 0)
    return SQL_FAILED;
  char ints[MAX_PARAMS][24];
  const char *values[MAX_PARAMS];
  if (n > MAX_PARAMS) {
    snprintf(d->err, sizeof d->err, "statement %d: too many parameters", id);
    return SQL_FAILED;
  }
  for (int i = 0; i < n; i++) {
    values[i] = params[i].kind == 2 ? params[i].s : NULL;
    if (params[i].kind == 1) {
      snprintf(ints[i], sizeof ints[i], "%lld", params[i].i);
      values[i] = ints[i];
    }
  }
  char name[16];
  snprintf(name, sizeof name, "s%d", id);
  d->res = PQexecPrepared(d->conn, name, n, values, NULL, NULL, 0);
  switch (PQresultStatus(d->res)) {
  case PGRES_TUPLES_OK:
    d->rows = PQntuples(d->res);
    return d->rows > 0 ? SQL_ROW : SQL_DONE;
  case PGRES_COMMAND_OK:
    return SQL_DONE;
  default: {
    const char *state = PQresultErrorField(d->res, PG_DIAG_SQLSTATE);
    pg_message(d, "");
    int conflict = state && strcmp(state, "23505") == 0; /* unique_violation */
    clear_result(d);
    return conflict ? SQL_CONFLICT : SQL_FAILED;
  }
  }
}

static int sql_next(void *p) {
  db *d = p;
  return ++d->row < d->rows ? SQL_ROW : SQL_DONE;
}

static int sql_null(void *p, int col) {
  db *d = p;
  return PQgetisnull(d->res, d->row, col);
}

static const char *sql_text_col(void *p, int col, size_t *len) {
  db *d = p;
  if (PQgetisnull(d->res, d->row, col)) {
    *len = 0;
    return NULL;
  }
  *len = (size_t)PQgetlength(d->res, d->row, col);
  return PQgetvalue(d->res, d->row, col);
}

static long long sql_integer(void *p, int col) {
  db *d = p;
  return strtoll(PQgetvalue(d->res, d->row, col), NULL, 10);
}

static long long sql_changes(void *p) {
  db *d = p;
  return d->res ? strtoll(PQcmdTuples(d->res), NULL, 10) : 0;
}

static void sql_error(void *p, char *buf, size_t len) {
  snprintf(buf, len, "%s", ((db *)p)->err);
}

static const spool__sql_driver driver = {
    sql_run,     sql_next,    sql_null,  sql_text_col,
    sql_integer, sql_changes, sql_error,
};

/* ---- the back end ---- */

/* Makes the schema if the database has none; refuses a newer one or a
 * database of someone else's tables. 0, or -1 with err. */
static int check_schema(db *d, char *err, size_t errlen) {
  /* One worker at a time (the lock ends with the transaction). */
  if (simple(d, "BEGIN") != 0 ||
      simple(d, "SELECT pg_advisory_xact_lock(7001885720331)") != 0)
    goto failed;
  clear_result(d);
  d->res = PQexec(d->conn, "SELECT count(*), count(*) FILTER (WHERE "
                           "tablename = 'spool_meta') FROM pg_tables WHERE "
                           "schemaname = current_schema()");
  if (PQresultStatus(d->res) != PGRES_TUPLES_OK) {
    pg_message(d, "");
    goto failed;
  }
  int tables = atoi(PQgetvalue(d->res, 0, 0));
  int ours = atoi(PQgetvalue(d->res, 0, 1)) == 1, version = 0;
  clear_result(d);
  if (ours) {
    d->res =
        PQexec(d->conn, "SELECT value FROM spool_meta WHERE key = 'schema'");
    if (PQresultStatus(d->res) != PGRES_TUPLES_OK || PQntuples(d->res) != 1) {
      pg_message(d, "no schema version: ");
      goto failed;
    }
    version = atoi(PQgetvalue(d->res, 0, 0));
    clear_result(d);
  }
  if (!ours && tables > 0) {
    simple(d, "ROLLBACK");
    snprintf(err, errlen,
             "%s: the database holds tables that are not "
             "spool's (give spool a database, or a schema, "
             "of its own)",
             d->where);
    return -1;
  }
  if (version > SPOOL_STORE_SCHEMA) {
    simple(d, "ROLLBACK");
    snprintf(err, errlen,
             "%s: the database has schema version %d, newer than this "
             "spool reads (%d): upgrade spool",
             d->where, version, SPOOL_STORE_SCHEMA);
    return -1;
  }
  if (!ours && simple(d, schema_sql) != 0)
    goto failed;
  /* Upgrades from FIRST_SCHEMA on go here, one step per version. */
  if (simple(d, "COMMIT") == 0)
    return 0;
failed:
  snprintf(err, errlen, "%s: cannot %s the schema: %s", d->where, "set up",
           d->err);
  simple(d, "ROLLBACK");
  return -1;
}

static void pg_close(void *p) {
  db *d = p;
  if (d == NULL)
    return;
  clear_result(d);
  PQfinish(d->conn);
  free(d->where);
  free(d);
}

static int pg_open(void **out, const char *url, char *err, size_t errlen) {
  *out = NULL;
  *err = '\0';
  db *d = calloc(1, sizeof *d);
  if (d == NULL || (d->where = describe(url)) == NULL) {
    free(d);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  /* A statement that waits on a lock this long is a fault, not a queue:
   * it fails, and its runs go on from their last stored step. Well under
   * a third of a lease, so a stuck batch does not hold up the renewals
   * behind it past a lease. A batch never waits on anything between its
   * statements, so a transaction idle that long belongs to a process
   * stopped in it (SIGSTOP, a frozen VM): the server ends its session
   * and the locks it held, or its threads could not be taken over (their
   * rows locked, skipped by every claim) until it woke. Set at connect,
   * so a reconnect keeps them. The process id names the session in
   * pg_stat_activity. */
  char name[32];
  snprintf(name, sizeof name, "spool %d", (int)getpid());
  const char *keys[] = {"dbname", "application_name", "options", NULL};
  const char *values[] = {
      url, name, "-c lock_timeout=5s -c idle_in_transaction_session_timeout=5s",
      NULL};
  d->conn = PQconnectdbParams(keys, values, 1);
  if (d->conn == NULL || PQstatus(d->conn) != CONNECTION_OK) {
    pg_message(d, "");
    snprintf(err, errlen, "cannot connect to %s: %s", d->where, d->err);
    pg_close(d);
    return -1;
  }
  if (check_schema(d, err, errlen) != 0) {
    if (*err == '\0')
      snprintf(err, errlen, "%s: %s", d->where, d->err);
    pg_close(d);
    return -1;
  }
  *out = d;
  return 0;
}

/* A connection the server closed (a restart, pg_terminate_backend) is
 * opened again before the next transaction: its statements are prepared
 * anew. What was in flight failed and its runs stopped; their threads go
 * on from their last stored step. */
static int pg_begin(void *p, char *err, size_t errlen) {
  db *d = p;
  if (PQstatus(d->conn) != CONNECTION_OK) {
    PQreset(d->conn);
    memset(d->prepared, 0, sizeof d->prepared);
    if (PQstatus(d->conn) != CONNECTION_OK) {
      pg_message(d, "");
      snprintf(err, errlen, "lost the connection to %s: %s", d->where, d->err);
      return -1;
    }
  }
  if (simple(d, sql_text[S_BEGIN]) != 0) {
    snprintf(err, errlen, "%s", d->err);
    return -1;
  }
  return 0;
}

/* A transaction in which a statement failed ends in a ROLLBACK, which
 * PostgreSQL answers to COMMIT as if it had worked: the tag tells. (Each
 * op runs in a savepoint, so that should not happen; if it does, the
 * whole batch is told it failed, never that it was stored.) */
static int pg_commit(void *p, char *err, size_t errlen) {
  db *d = p;
  clear_result(d);
  d->res = PQexec(d->conn, sql_text[S_COMMIT]);
  int ok = PQresultStatus(d->res) == PGRES_COMMAND_OK &&
           strcmp(PQcmdStatus(d->res), "COMMIT") == 0;
  if (!ok) {
    pg_message(d, "");
    snprintf(err, errlen, "the transaction was rolled back%s%s",
             *d->err ? ": " : "", d->err);
  }
  clear_result(d);
  return ok ? 0 : -1;
}

static void pg_rollback(void *p) {
  simple(p, sql_text[S_ROLLBACK]);
}

/* An op whose statement fails would abort the whole batch's transaction
 * on PostgreSQL (a hostile key with bytes that are not UTF-8 would undo
 * other runs' steps): every op but those with savepoints of their own
 * runs in one. */
static void pg_exec(void *p, spool__store_op *op) {
  db *d = p;
  int own = op->kind == SPOOL__STORE_APPEND || op->kind == SPOOL__STORE_MIGRATE;
  if (!own && simple(d, "SAVEPOINT op") != 0) {
    op->result = SPOOL__STORE_EIO;
    snprintf(op->errmsg, sizeof op->errmsg, "cannot start the op: %.200s",
             d->err);
    return;
  }
  spool__store_sql_exec(&driver, p, op);
  if (!own && op->result != SPOOL__STORE_OK)
    simple(d, "ROLLBACK TO SAVEPOINT op");
  if (!own)
    simple(d, "RELEASE SAVEPOINT op");
}

/* PostgreSQL's autovacuum reclaims space: nothing to do after a purge. */
static void pg_maintain(void *p) {
  (void)p;
}

const spool__store_backend spool__store_postgres = {
    "postgres", &driver,     pg_open, pg_close,    pg_begin,
    pg_commit,  pg_rollback, pg_exec, pg_maintain,
};
