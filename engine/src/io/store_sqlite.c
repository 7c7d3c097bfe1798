/*
 * store_sqlite.c: the SQLite back end of the store (see store.h). One file
 * in WAL mode with full sync: a committed step survives a crash of the
 * process or the machine. Runs on the store thread only.
 *
 * Schema 1:
 *   threads(id, agent, parent, created_at, updated_at, status, deadline,
 *           last_seq)   status, deadline and last_seq are derived from the
 *                       events and kept as an index, updated in the same
 *                       transaction as the events they derive from
 *   events(thread_id, seq, step, type, at, v, data)   append-only
 *   leases(thread_id, owner, expires_at)
 *   state(ns, key, value, version, updated_at, expires_at)
 *   spool_meta(key, value)
 * Schema 2 adds
 *   versions(hash, agent, sources, created_at)   the files of each agent
 *                       version, so a thread pinned to one can resume it
 * Schema 3 numbers threads (threads.n) and keys events by that number:
 *   events(thread, seq, step, type, at, v, data)
 * Schema 4 fences leases with an epoch:
 *   leases(thread_id, owner, expires_at, epoch)   every claim bumps epoch;
 *                       a release keeps the row (owner '', expired) so the
 *                       epoch only ever grows; an append must name the
 *                       epoch and owner the row holds
 *
 * A database from a newer schema, or one that is not spool's, is refused
 * before anything is written. Stored JSON is checked when read, so a
 * corrupt row is an error that names it, never a wrong answer.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "codec/json.h"
#include "io/store_sql.h"

/* The store's statements (store_sql.h) in SQLite's words, then this back
 * end's own. */
enum { S_BEGIN = SQL_COUNT, S_COMMIT, S_ROLLBACK, S_ALL };

static const char *const sql_text[S_ALL] = {
    [SQL_SAVEPOINT] = "SAVEPOINT step",
    [SQL_RELEASE] = "RELEASE step",
    [SQL_ROLLBACK_TO] = "ROLLBACK TO step",
    /* One writer at a time: no claim can come between check and commit. */
    [SQL_LEASE_CHECK] =
        "SELECT owner, expires_at, epoch FROM leases WHERE thread_id = ?1",
    [SQL_THREAD_INSERT] =
        "INSERT INTO threads(id, agent, parent, created_at, updated_at, "
        "status, deadline, last_seq) VALUES (?1, ?2, ?3, ?4, ?4, 'running', "
        "NULL, 0) RETURNING n",
    [SQL_THREAD_SEQ] =
        "SELECT last_seq, n, status, deadline FROM threads WHERE id = ?1",
    [SQL_EVENT_INSERT] = "INSERT INTO events(thread, seq, step, type, at, v, "
                         "data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [SQL_THREAD_UPDATE] = "UPDATE threads SET last_seq = ?2, status = ?3, "
                          "deadline = ?4, updated_at = ?5 WHERE n = ?1",
    [SQL_THREAD_ADVANCE] =
        "UPDATE threads SET last_seq = ?2, updated_at = ?3 WHERE n = ?1",
    [SQL_STATE_VERSION] =
        "SELECT version FROM state WHERE ns = ?1 AND key = ?2 "
        "AND (expires_at IS NULL OR expires_at > ?3)",
    [SQL_STATE_DELETE] = "DELETE FROM state WHERE ns = ?1 AND key = ?2",
    [SQL_STATE_UPSERT] =
        "INSERT INTO state(ns, key, value, version, updated_at, expires_at) "
        "VALUES (?1, ?2, ?3, 1, ?4, ?5) ON CONFLICT(ns, key) DO UPDATE SET "
        "value = excluded.value, updated_at = excluded.updated_at, "
        "expires_at = excluded.expires_at, version = CASE WHEN "
        "state.expires_at IS NOT NULL AND state.expires_at <= ?4 THEN 1 "
        "ELSE state.version + 1 END RETURNING version",
    [SQL_THREAD_GET] =
        "SELECT id, agent, parent, status, created_at, "
        "updated_at, last_seq, deadline FROM threads WHERE id = ?1",
    [SQL_EVENTS_GET] = "SELECT seq, step, type, at, v, data FROM events "
                       "WHERE thread = (SELECT n FROM threads WHERE id = ?1) "
                       "AND seq <= ?2 ORDER BY seq",
    [SQL_LIST] = "SELECT id, agent, parent, status, created_at, updated_at, "
                 "last_seq, deadline FROM threads WHERE (?1 IS NULL OR "
                 "status = ?1) AND (?2 IS NULL OR agent = ?2) AND (?3 = 0 OR "
                 "created_at < ?3 OR (created_at = ?3 AND id < ?5)) "
                 "ORDER BY created_at DESC, id DESC LIMIT ?4",
    [SQL_COUNTS] = "SELECT status, count(*) FROM threads WHERE ?1 IS NULL "
                   "OR agent = ?1 GROUP BY status",
    [SQL_CHILDREN] = "SELECT id, agent, parent, status, created_at, "
                     "updated_at, last_seq, deadline FROM threads WHERE "
                     "parent = ?1 ORDER BY created_at, id",
    [SQL_STATE_GET] = "SELECT value, version, updated_at FROM state WHERE "
                      "ns = ?1 AND key = ?2 AND (expires_at IS NULL OR "
                      "expires_at > ?3)",
    [SQL_STATE_LIST] = "SELECT key, value, version, updated_at FROM state "
                       "WHERE ns = ?1 AND (expires_at IS NULL OR expires_at "
                       "> ?2) AND key > ?3 ORDER BY key LIMIT ?4",
    [SQL_LEASE_GET] =
        "SELECT owner, expires_at, epoch FROM leases WHERE thread_id = ?1",
    [SQL_LEASE_TAKE] =
        "INSERT INTO leases(thread_id, owner, expires_at, epoch) VALUES "
        "(?1, ?2, ?3, 1) ON CONFLICT(thread_id) DO UPDATE SET owner = "
        "excluded.owner, expires_at = excluded.expires_at, epoch = "
        "leases.epoch + 1 WHERE leases.owner IN (excluded.owner, '') OR "
        "leases.expires_at <= ?4 OR (?5 AND leases.epoch = ?6) "
        "RETURNING epoch",
    [SQL_LEASE_RELEASE] = "UPDATE leases SET owner = '', expires_at = ?4 "
                          "WHERE thread_id = ?1 AND owner = ?2 AND epoch = "
                          "?3",
    [SQL_LEASE_RELEASE_ALL] = "UPDATE leases SET owner = '', expires_at = 0 "
                              "WHERE owner = ?1",
    [SQL_LEASE_RENEW] = "UPDATE leases SET expires_at = ?2 WHERE owner = ?1",
    /* Top-level threads left running whose lease has lapsed (or was given
     * back at a shutdown), the oldest first, claimed. */
    [SQL_READY] =
        "INSERT INTO leases(thread_id, owner, expires_at, epoch) SELECT "
        "t.id, ?2, ?3, 1 FROM threads t LEFT JOIN leases l ON l.thread_id = "
        "t.id WHERE t.status = 'running' AND t.parent IS NULL AND "
        "(l.expires_at IS NULL OR l.expires_at <= ?1) ORDER BY t.updated_at, "
        "t.id LIMIT ?4 ON CONFLICT(thread_id) DO UPDATE SET owner = "
        "excluded.owner, expires_at = excluded.expires_at, epoch = "
        "leases.epoch + 1 WHERE leases.expires_at <= ?1 "
        "RETURNING thread_id, epoch",
    [SQL_BACKLOG] = "SELECT count(*) FROM threads t LEFT JOIN leases l ON "
                    "l.thread_id = t.id WHERE t.status = 'running' AND "
                    "t.parent IS NULL AND (l.expires_at IS NULL OR "
                    "l.expires_at <= ?1)",
    [SQL_NOTIFY] = "SELECT ?1",
    [SQL_DELETE_EVENTS] =
        "WITH RECURSIVE doomed(id) AS (SELECT ?1 UNION ALL SELECT t.id FROM "
        "threads t JOIN doomed d ON t.parent = d.id) DELETE FROM events "
        "WHERE thread IN (SELECT n FROM threads WHERE id IN doomed)",
    [SQL_DELETE_LEASES] =
        "WITH RECURSIVE doomed(id) AS (SELECT ?1 UNION ALL SELECT t.id FROM "
        "threads t JOIN doomed d ON t.parent = d.id) DELETE FROM leases "
        "WHERE thread_id IN doomed",
    [SQL_DELETE_THREADS] =
        "WITH RECURSIVE doomed(id) AS (SELECT ?1 UNION ALL SELECT t.id FROM "
        "threads t JOIN doomed d ON t.parent = d.id) DELETE FROM threads "
        "WHERE id IN doomed",
    [SQL_DUE] = "SELECT id FROM threads WHERE status = 'waiting' AND deadline "
                "IS NOT NULL AND deadline <= ?1 ORDER BY deadline",
    [SQL_PURGE_STATE] = "DELETE FROM state WHERE expires_at IS NOT NULL AND "
                        "expires_at <= ?1",
    [SQL_PURGE_EVENTS] =
        "WITH RECURSIVE doomed(id) AS (SELECT id FROM threads WHERE parent "
        "IS NULL AND status IN ('done', 'failed', 'cancelled') AND "
        "updated_at < ?1 UNION ALL SELECT t.id FROM threads t JOIN doomed d "
        "ON t.parent = d.id) DELETE FROM events WHERE thread IN (SELECT n "
        "FROM threads WHERE id IN doomed)",
    [SQL_PURGE_THREADS] =
        "WITH RECURSIVE doomed(id) AS (SELECT id FROM threads WHERE parent "
        "IS NULL AND status IN ('done', 'failed', 'cancelled') AND "
        "updated_at < ?1 UNION ALL SELECT t.id FROM threads t JOIN doomed d "
        "ON t.parent = d.id) DELETE FROM threads WHERE id IN doomed",
    /* Agent versions no event names any more; the subquery runs once. */
    [SQL_PURGE_VERSIONS] =
        "DELETE FROM versions WHERE created_at < ?1 AND hash NOT IN "
        "(SELECT DISTINCT v FROM events WHERE v IS NOT NULL)",
    [SQL_PURGE_LEASES] = "DELETE FROM leases WHERE expires_at <= ?1 AND "
                         "thread_id NOT IN (SELECT id FROM threads)",
    /* A put refreshes created_at: engines re-put the versions they use
     * hourly, so purge (which spares the last day) never takes one. */
    [SQL_VERSION_PUT] = "INSERT INTO versions(hash, agent, sources, "
                        "created_at) VALUES (?1, ?2, ?3, ?4) ON "
                        "CONFLICT(hash) DO UPDATE SET created_at = "
                        "excluded.created_at",
    [SQL_VERSION_GET] = "SELECT sources FROM versions WHERE hash = ?1",
    /* Prepared like the rest: parsing them was a quarter of a step's cost
     * in memory. */
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
                   "expires_at > ?1",
    [SQL_LOAD_THREAD] =
        "INSERT INTO threads(n, id, agent, parent, status, created_at, "
        "updated_at, deadline, last_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, "
        "?7, ?8, ?9)",
    [SQL_LOAD_EVENT] =
        "INSERT INTO events(thread, seq, step, type, at, v, data) VALUES "
        "(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [SQL_LOAD_STATE] =
        "INSERT INTO state(ns, key, value, version, updated_at, expires_at) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [SQL_LOAD_VERSION] =
        "INSERT INTO versions(hash, agent, sources, created_at) VALUES (?1, "
        "?2, ?3, ?4)",
    /* SQLite numbers new threads after the largest n itself. */
    [SQL_LOADED] = "SELECT 0",
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
};

static const char schema_sql[] =
    "CREATE TABLE spool_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "INSERT INTO spool_meta VALUES ('created_by', 'spool');"
    "CREATE TABLE threads("
    " id TEXT PRIMARY KEY, agent TEXT NOT NULL, parent TEXT,"
    " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
    " status TEXT NOT NULL, deadline INTEGER, last_seq INTEGER NOT NULL);"
    "CREATE INDEX threads_by_status ON threads(status, created_at);"
    "CREATE INDEX threads_by_parent ON threads(parent);"
    "CREATE INDEX threads_by_deadline ON threads(deadline)"
    " WHERE deadline IS NOT NULL;"
    "CREATE TABLE events("
    " thread_id TEXT NOT NULL, seq INTEGER NOT NULL, step INTEGER NOT NULL,"
    " type TEXT NOT NULL, at INTEGER NOT NULL, v TEXT, data TEXT NOT NULL,"
    " PRIMARY KEY (thread_id, seq)) WITHOUT ROWID;"
    "CREATE TABLE leases(thread_id TEXT PRIMARY KEY, owner TEXT NOT NULL,"
    " expires_at INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE state(ns TEXT NOT NULL, key TEXT NOT NULL,"
    " value TEXT NOT NULL, version INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL, expires_at INTEGER,"
    " PRIMARY KEY (ns, key)) WITHOUT ROWID;"
    "PRAGMA user_version = 1;";

/* Each step from one schema to the next, in order: schema_steps[i] takes a
 * database from version i + 1 to i + 2. */
static const char *const schema_steps[] = {
    "CREATE TABLE versions(hash TEXT PRIMARY KEY, agent TEXT NOT NULL,"
    " sources TEXT NOT NULL, created_at INTEGER NOT NULL) WITHOUT ROWID;"
    "PRAGMA user_version = 2;",
    /* 3: events name their thread by a number, not its 28-character id
     * (a tenth of a stored step); `n` is declared so VACUUM keeps it. */
    "CREATE TABLE threads3(n INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
    " agent TEXT NOT NULL, parent TEXT, created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL, status TEXT NOT NULL, deadline INTEGER,"
    " last_seq INTEGER NOT NULL);"
    "INSERT INTO threads3 SELECT rowid, id, agent, parent, created_at,"
    " updated_at, status, deadline, last_seq FROM threads ORDER BY rowid;"
    "CREATE TABLE events3(thread INTEGER NOT NULL, seq INTEGER NOT NULL,"
    " step INTEGER NOT NULL, type TEXT NOT NULL, at INTEGER NOT NULL, v TEXT,"
    " data TEXT NOT NULL, PRIMARY KEY (thread, seq)) WITHOUT ROWID;"
    "INSERT INTO events3 SELECT t.n, e.seq, e.step, e.type, e.at, e.v, e.data"
    " FROM events e JOIN threads3 t ON t.id = e.thread_id;"
    "DROP TABLE events;"
    "DROP TABLE threads;"
    "ALTER TABLE threads3 RENAME TO threads;"
    "ALTER TABLE events3 RENAME TO events;"
    "CREATE INDEX threads_by_status ON threads(status, created_at);"
    "CREATE INDEX threads_by_parent ON threads(parent);"
    "CREATE INDEX threads_by_deadline ON threads(deadline)"
    " WHERE deadline IS NOT NULL;"
    "PRAGMA user_version = 3;",
    "ALTER TABLE leases ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX leases_by_owner ON leases(owner);"
    "PRAGMA user_version = 4;",
};

/* How long a statement waits for another process's write to end: several
 * workers share one file, and a loaded machine may hold a batch for some
 * seconds. The store thread waits, never the loop. */
#define BUSY_TIMEOUT_MS 20000

typedef struct db {
  sqlite3 *conn;
  sqlite3_stmt *st[S_ALL];
  sqlite3_stmt *cur; /* the statement whose rows are being read */
  char err[256];     /* why the last statement failed */
  int read_only;     /* opened read-only: its file or folder is not writable */
} db;

/* A prepared statement, reset and cleared for reuse; NULL on error. */
static sqlite3_stmt *stmt(db *d, int id) {
  sqlite3_stmt *s = d->st[id];
  if (s == NULL) {
    if (sqlite3_prepare_v3(d->conn, sql_text[id], -1, SQLITE_PREPARE_PERSISTENT,
                           &s, NULL) != SQLITE_OK)
      return NULL;
    d->st[id] = s;
  }
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return s;
}

static int exec(db *d, const char *sql, char *err, size_t errlen) {
  char *msg = NULL;
  if (sqlite3_exec(d->conn, sql, NULL, NULL, &msg) != SQLITE_OK) {
    snprintf(err, errlen, "%s", msg ? msg : sqlite3_errmsg(d->conn));
    sqlite3_free(msg);
    return -1;
  }
  return 0;
}

/* Runs a prepared statement that returns no rows (a transaction's
 * control); 0, or -1 with SQLite's message. */
static int run(db *d, int id, char *err, size_t errlen) {
  sqlite3_stmt *s = stmt(d, id);
  int rc = s ? sqlite3_step(s) : SQLITE_ERROR;
  if (rc != SQLITE_DONE) {
    snprintf(err, errlen, "%s", sqlite3_errmsg(d->conn));
    if (s)
      sqlite3_reset(s);
    return -1;
  }
  sqlite3_reset(s);
  return 0;
}

/* Creates the folders above path (the default store is .spool/spool.db)
 * and the file itself, missing ones readable by their owner only: the
 * store holds every thread and all business state. (SQLite gives its
 * -wal and -shm files the database's permissions.) */
static void make_private(const char *path) {
  char *copy = strdup(path);
  if (copy == NULL)
    return;
  for (char *p = copy + 1; (p = strchr(p, '/')) != NULL; p++) {
    *p = '\0';
    mkdir(copy, 0700);
    *p = '/';
  }
  free(copy);
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0)
    close(fd);
}

/* The schema version the database says it has, or -1. */
static int user_version(db *d) {
  sqlite3_stmt *s = NULL;
  int version = -1;
  if (sqlite3_prepare_v2(d->conn, "PRAGMA user_version", -1, &s, NULL) ==
          SQLITE_OK &&
      sqlite3_step(s) == SQLITE_ROW)
    version = sqlite3_column_int(s, 0);
  sqlite3_finalize(s);
  return version;
}

/* Threads some process holds an unexpired lease on (-1 if unreadable). */
static int leased_threads(db *d) {
  sqlite3_stmt *s = NULL;
  int n = -1;
  if (sqlite3_prepare_v2(d->conn,
                         "SELECT count(*) FROM leases WHERE expires_at > ?1",
                         -1, &s, NULL) == SQLITE_OK) {
    sqlite3_bind_int64(s, 1, (sqlite3_int64)time(NULL) * 1000);
    if (sqlite3_step(s) == SQLITE_ROW)
      n = sqlite3_column_int(s, 0);
  }
  sqlite3_finalize(s);
  return n;
}

static int check_schema(db *d, char *err, size_t errlen) {
  sqlite3_stmt *s = NULL;
  int version = user_version(d), tables = 0, ours = 0;
  if (version < 0) {
    snprintf(err, errlen, "cannot read the database: %s",
             sqlite3_errmsg(d->conn));
    return -1;
  }
  if (sqlite3_prepare_v2(d->conn,
                         "SELECT count(*), sum(name = 'spool_meta') FROM "
                         "sqlite_master WHERE type = 'table'",
                         -1, &s, NULL) == SQLITE_OK &&
      sqlite3_step(s) == SQLITE_ROW) {
    tables = sqlite3_column_int(s, 0);
    ours = sqlite3_column_int(s, 1);
  }
  sqlite3_finalize(s);
  if (version == 0 && tables > 0)
    version = user_version(d); /* made by another process meanwhile? */
  if (version > SPOOL_STORE_SCHEMA) {
    snprintf(err, errlen,
             "the database has schema version %d, newer than this spool "
             "reads (%d): upgrade spool",
             version, SPOOL_STORE_SCHEMA);
    return -1;
  }
  if (version == 0 && tables > 0) {
    snprintf(err, errlen, "the database holds tables that are not spool's");
    return -1;
  }
  if (version > 0 && !ours) {
    snprintf(err, errlen, "the database is not a spool database");
    return -1;
  }
  if (version < SPOOL_STORE_SCHEMA) {
    char e2[200], e3[64];
    /* An upgrade holds the write lock while it copies every event: wait
     * for another process's (a minute at most) rather than fail. */
    int ok = 0;
    for (int tries = 0; tries < 12 && !ok; tries++) {
      ok = exec(d, "BEGIN IMMEDIATE", e2, sizeof e2) == 0;
      if (!ok && (sqlite3_errcode(d->conn) & 0xff) != SQLITE_BUSY)
        break;
    }
    if (!ok) {
      snprintf(err, errlen, "cannot %s the schema: %s",
               version ? "upgrade" : "create", e2);
      return -1;
    }
    /* Another process may have made or upgraded the schema while this one
     * waited for the write lock: read the version again, under it. */
    version = user_version(d);
    int running =
        version > 0 && version < SPOOL_STORE_SCHEMA ? leased_threads(d) : 0;
    if (running > 0) {
      exec(d, "ROLLBACK", e3, sizeof e3);
      snprintf(err, errlen,
               "the database has schema version %d and this spool would "
               "upgrade it to %d, but another spool process is running %d "
               "of its threads (an older spool would fail once upgraded): "
               "stop it, then run this again",
               version, SPOOL_STORE_SCHEMA, running);
      return -1;
    }
    if (version == 0)
      ok = exec(d, schema_sql, e2, sizeof e2) == 0;
    for (int v = version ? version : 1; ok && v < SPOOL_STORE_SCHEMA; v++)
      ok = exec(d, schema_steps[v - 1], e2, sizeof e2) == 0;
    if (!ok || exec(d, "COMMIT", e2, sizeof e2) != 0) {
      exec(d, "ROLLBACK", e3, sizeof e3);
      snprintf(err, errlen, "cannot %s the schema: %s",
               version ? "upgrade" : "create", e2);
      return -1;
    }
  }
  return 0;
}

/* path as a "file:" URI with the query: %, ? and # escaped. path is
 * absolute and canonical (no "//" to read as an authority). */
static char *file_uri(const char *path, const char *query) {
  size_t n = strlen(path);
  char *uri = malloc(3 * n + strlen(query) + 8);
  if (uri == NULL)
    return NULL;
  char *o = uri + sprintf(uri, "file:");
  for (const char *p = path; *p; p++)
    o += (*p == '%' || *p == '?' || *p == '#')
             ? sprintf(o, "%%%02X", (unsigned char)*p)
             : (*o = *p, 1);
  sprintf(o, "?%s", query);
  return uri;
}

static off_t file_size(const char *path, const char *suffix) {
  char name[PATH_MAX + 8];
  struct stat st;
  snprintf(name, sizeof name, "%s%s", path, suffix);
  return stat(name, &st) == 0 ? st.st_size : -1;
}

static int writable(const char *path, const char *suffix) {
  char name[PATH_MAX + 8];
  snprintf(name, sizeof name, "%s%s", path, suffix);
  return access(name, F_OK) != 0 || access(name, W_OK) == 0;
}

/*
 * A store that exists but this process may not write (its file, its -wal
 * or -shm, or the folder they go in: the real file's, as SQLite follows
 * links) is opened read-only: 1, or 0 when it may be written, or -1 and
 * err. With no -shm and no -wal, no one has it open: it is read as it is
 * ("immutable", which leaves no -shm behind to block a later writer; a
 * writer that comes later is not seen, fine for threads, show and export).
 * Otherwise it is read through its -shm, which must exist or be made; a
 * -wal left behind that this process cannot read holds changes the file
 * does not, so reading without it is refused rather than lose them.
 */
static int open_read_only(db *d, const char *path, char *err, size_t errlen) {
  char real[PATH_MAX];
  if (strcmp(path, ":memory:") == 0 || realpath(path, real) == NULL)
    return 0;
  char folder[PATH_MAX];
  snprintf(folder, sizeof folder, "%s", real);
  char *slash = strrchr(folder, '/');
  slash[slash == folder ? 1 : 0] = '\0';
  int folder_writable = access(folder, W_OK) == 0;
  if (folder_writable && access(real, W_OK) == 0 && writable(real, "-wal") &&
      writable(real, "-shm"))
    return 0;
  const char *mode = "mode=ro";
  if (file_size(real, "-shm") < 0) {
    if (file_size(real, "-wal") <= 0)
      mode = "immutable=1";
    else if (!folder_writable) {
      snprintf(err, errlen,
               "%s cannot be read here: its -wal file holds changes not yet "
               "in the database, and its folder is not writable (open it "
               "once where it is)",
               path);
      return -1;
    }
  }
  char *uri = file_uri(real, mode);
  int rc = uri ? sqlite3_open_v2(uri, &d->conn,
                                 SQLITE_OPEN_READONLY | SQLITE_OPEN_URI |
                                     SQLITE_OPEN_NOMUTEX,
                                 NULL)
               : SQLITE_NOMEM;
  free(uri);
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "cannot open %s (read-only): %s", path,
             d->conn ? sqlite3_errmsg(d->conn) : sqlite3_errstr(rc));
    return -1;
  }
  sqlite3_extended_result_codes(d->conn, 1);
  /* Readable as it is: nothing here may create or upgrade its schema. */
  sqlite3_stmt *q = NULL;
  int ours = 0, version = user_version(d);
  if (sqlite3_prepare_v2(d->conn,
                         "SELECT count(*) FROM sqlite_master WHERE type = "
                         "'table' AND name = 'spool_meta'",
                         -1, &q, NULL) == SQLITE_OK &&
      sqlite3_step(q) == SQLITE_ROW)
    ours = sqlite3_column_int(q, 0);
  sqlite3_finalize(q);
  if (version < 0)
    snprintf(err, errlen, "%s: cannot read the database: %s", path,
             sqlite3_errmsg(d->conn));
  else if (!ours)
    snprintf(err, errlen, "%s: the database is not a spool database", path);
  else if (version != SPOOL_STORE_SCHEMA)
    snprintf(err, errlen,
             "%s: read-only here, and its schema (version %d) is not this "
             "spool's (%d): open it once where it can be written",
             path, version, SPOOL_STORE_SCHEMA);
  else {
    d->read_only = 1;
    return 1;
  }
  return -1;
}

static int sqlite_open(void **out, const char *path, char *err, size_t errlen) {
  db *d = calloc(1, sizeof *d);
  *out = NULL;
  if (d == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  int read_only = open_read_only(d, path, err, errlen);
  if (read_only != 0) {
    if (read_only < 0)
      goto error;
    sqlite3_busy_timeout(d->conn, BUSY_TIMEOUT_MS);
    *out = d;
    return 0;
  }
  if (strcmp(path, ":memory:") != 0)
    make_private(path);
  int rc = sqlite3_open_v2(
      path, &d->conn,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  char e2[200];
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "cannot open %s: %s", path,
             d->conn ? sqlite3_errmsg(d->conn) : sqlite3_errstr(rc));
    goto error;
  }
  sqlite3_busy_timeout(d->conn, BUSY_TIMEOUT_MS);
  sqlite3_extended_result_codes(d->conn, 1);
  /* Switching a new file to WAL needs it to itself, and SQLite answers
   * "locked" at once, without its busy handler, while another process
   * opens it too: try again for a while (at open, off any loop). */
  int wal = -1;
  for (int i = 0; i < 200 && wal != 0; i++) {
    wal = exec(d, "PRAGMA journal_mode = WAL", e2, sizeof e2);
    if (wal != 0 && (sqlite3_errcode(d->conn) & 0xff) != SQLITE_BUSY)
      break;
    if (wal != 0)
      sqlite3_sleep(10);
  }
  if (wal != 0 || exec(d, "PRAGMA synchronous = FULL", e2, sizeof e2) != 0) {
    snprintf(err, errlen, "%s: %s", path, e2);
    goto error;
  }
  char why[256];
  if (check_schema(d, why, sizeof why) != 0) {
    snprintf(err, errlen, "%s: %s", path, why);
    goto error;
  }
  *out = d;
  return 0;
error:
  sqlite3_close_v2(d->conn);
  free(d);
  return -1;
}

static void sqlite_close(void *p) {
  db *d = p;
  if (d == NULL)
    return;
  for (int i = 0; i < S_ALL; i++)
    sqlite3_finalize(d->st[i]);
  sqlite3_close_v2(d->conn);
  free(d);
}

static int sqlite_begin(void *p, char *err, size_t errlen) {
  return run(p, S_BEGIN, err, errlen);
}

/* A statement left mid-result keeps its read snapshot after COMMIT, and
 * the next BEGIN IMMEDIATE would then fail with SQLITE_BUSY_SNAPSHOT
 * (which no busy timeout waits out) once another process has written. */
static void reset_all(db *d) {
  for (int i = 0; i < S_ALL; i++)
    if (d->st[i])
      sqlite3_reset(d->st[i]);
}

static int sqlite_commit(void *p, char *err, size_t errlen) {
  reset_all(p);
  return run(p, S_COMMIT, err, errlen);
}

static void sqlite_rollback(void *p) {
  char e[64];
  reset_all(p);
  run(p, S_ROLLBACK, e, sizeof e);
}

static void sqlite_maintain(void *p) {
  char e[64];
  exec(p, "PRAGMA wal_checkpoint(TRUNCATE)", e, sizeof e);
  exec(p, "VACUUM", e, sizeof e);
}

/* ---- the driver (store_sql.h) ---- */

static int sql_failed(db *d, int rc) {
  snprintf(d->err, sizeof d->err, "%s%s", sqlite3_errmsg(d->conn),
           (rc & 0xff) == SQLITE_CORRUPT ? " (the database is corrupt)"
           : (rc & 0xff) == SQLITE_READONLY && d->read_only
               ? " (the store was opened read-only: its file or folder is "
                 "not writable here)"
               : "");
  if (d->cur)
    sqlite3_reset(d->cur);
  d->cur = NULL;
  return rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE
             ? SQL_CONFLICT
             : SQL_FAILED;
}

static int sql_step(db *d) {
  int rc = sqlite3_step(d->cur);
  if (rc == SQLITE_ROW)
    return SQL_ROW;
  if (rc == SQLITE_DONE) {
    sqlite3_reset(d->cur);
    d->cur = NULL;
    return SQL_DONE;
  }
  return sql_failed(d, rc);
}

static int sql_run(void *p, int id, const spool__sql_param *params, int n) {
  db *d = p;
  /* A statement left on a row (a RETURNING read once) would block the
   * savepoints: it ends here. */
  if (d->cur)
    sqlite3_reset(d->cur);
  d->cur = stmt(d, id);
  if (d->cur == NULL) {
    snprintf(d->err, sizeof d->err, "%s", sqlite3_errmsg(d->conn));
    return SQL_FAILED;
  }
  for (int i = 0; i < n; i++) {
    if (params[i].kind == 1)
      sqlite3_bind_int64(d->cur, i + 1, params[i].i);
    else if (params[i].kind == 2)
      sqlite3_bind_text(d->cur, i + 1, params[i].s, -1, SQLITE_STATIC);
  }
  return sql_step(d);
}

static int sql_next(void *p) {
  db *d = p;
  return d->cur ? sql_step(d) : SQL_DONE;
}

static int sql_null(void *p, int col) {
  return sqlite3_column_type(((db *)p)->cur, col) == SQLITE_NULL;
}

static const char *sql_text_col(void *p, int col, size_t *len) {
  sqlite3_stmt *s = ((db *)p)->cur;
  if (sqlite3_column_type(s, col) == SQLITE_NULL) {
    *len = 0;
    return NULL;
  }
  const char *t = (const char *)sqlite3_column_text(s, col);
  *len = (size_t)sqlite3_column_bytes(s, col);
  return t;
}

static long long sql_integer(void *p, int col) {
  return sqlite3_column_int64(((db *)p)->cur, col);
}

static long long sql_changes(void *p) {
  return sqlite3_changes(((db *)p)->conn);
}

static void sql_error(void *p, char *buf, size_t len) {
  snprintf(buf, len, "%s", ((db *)p)->err);
}

static const spool__sql_driver driver = {
    sql_run,     sql_next,    sql_null,  sql_text_col,
    sql_integer, sql_changes, sql_error,
};

static void sqlite_exec(void *p, spool__store_op *op) {
  spool__store_sql_exec(&driver, p, op);
}

const spool__store_backend spool__store_sqlite = {
    "sqlite",      &driver,         sqlite_open, sqlite_close,    sqlite_begin,
    sqlite_commit, sqlite_rollback, sqlite_exec, sqlite_maintain,
};
