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
#include "io/store.h"

enum {
  S_THREAD_INSERT,
  S_THREAD_SEQ,
  S_LEASE_GET,
  S_EVENT_INSERT,
  S_THREAD_UPDATE,
  S_STATE_VERSION,
  S_STATE_DELETE,
  S_STATE_UPSERT,
  S_THREAD_GET,
  S_EVENTS_GET,
  S_LIST,
  S_CHILDREN,
  S_STATE_GET,
  S_STATE_LIST,
  S_LEASE_TAKE,
  S_LEASE_RELEASE,
  S_LEASE_RELEASE_ALL,
  S_LEASE_RENEW,
  S_READY,
  S_DELETE_EVENTS,
  S_DELETE_LEASES,
  S_DELETE_THREADS,
  S_DUE,
  S_PURGE_STATE,
  S_PURGE_EVENTS,
  S_PURGE_THREADS,
  S_PURGE_VERSIONS,
  S_PURGE_LEASES,
  S_VERSION_PUT,
  S_VERSION_GET,
  S_BEGIN,
  S_COMMIT,
  S_ROLLBACK,
  S_SAVEPOINT,
  S_RELEASE,
  S_ROLLBACK_TO,
  S_COUNT
};

static const char *const sql_text[S_COUNT] = {
    [S_THREAD_INSERT] =
        "INSERT INTO threads(id, agent, parent, created_at, updated_at, "
        "status, deadline, last_seq) VALUES (?1, ?2, ?3, ?4, ?4, 'running', "
        "NULL, 0)",
    [S_THREAD_SEQ] = "SELECT last_seq, n FROM threads WHERE id = ?1",
    [S_LEASE_GET] =
        "SELECT owner, expires_at, epoch FROM leases WHERE thread_id = ?1",
    [S_EVENT_INSERT] = "INSERT INTO events(thread, seq, step, type, at, v, "
                       "data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [S_THREAD_UPDATE] = "UPDATE threads SET last_seq = ?2, status = ?3, "
                        "deadline = ?4, updated_at = ?5 WHERE id = ?1",
    [S_STATE_VERSION] = "SELECT version FROM state WHERE ns = ?1 AND key = ?2 "
                        "AND (expires_at IS NULL OR expires_at > ?3)",
    [S_STATE_DELETE] = "DELETE FROM state WHERE ns = ?1 AND key = ?2",
    [S_STATE_UPSERT] =
        "INSERT INTO state(ns, key, value, version, updated_at, expires_at) "
        "VALUES (?1, ?2, ?3, 1, ?4, ?5) ON CONFLICT(ns, key) DO UPDATE SET "
        "value = excluded.value, updated_at = excluded.updated_at, "
        "expires_at = excluded.expires_at, version = CASE WHEN "
        "state.expires_at IS NOT NULL AND state.expires_at <= ?4 THEN 1 "
        "ELSE state.version + 1 END RETURNING version",
    [S_THREAD_GET] =
        "SELECT id, agent, parent, status, created_at, "
        "updated_at, last_seq, deadline FROM threads WHERE id = ?1",
    [S_EVENTS_GET] = "SELECT seq, step, type, at, v, data FROM events "
                     "WHERE thread = (SELECT n FROM threads WHERE id = ?1) "
                     "ORDER BY seq",
    [S_LIST] = "SELECT id, agent, parent, status, created_at, updated_at, "
               "last_seq, deadline FROM threads WHERE (?1 IS NULL OR status "
               "= ?1) AND (?2 IS NULL OR agent = ?2) AND (?3 = 0 OR "
               "created_at < ?3 OR (created_at = ?3 AND id < ?5)) "
               "ORDER BY created_at DESC, id DESC LIMIT ?4",
    [S_CHILDREN] = "SELECT id, agent, parent, status, created_at, "
                   "updated_at, last_seq, deadline FROM threads WHERE "
                   "parent = ?1 ORDER BY created_at, id",
    [S_STATE_GET] = "SELECT value, version, updated_at FROM state WHERE "
                    "ns = ?1 AND key = ?2 AND (expires_at IS NULL OR "
                    "expires_at > ?3)",
    [S_STATE_LIST] = "SELECT key, value, version, updated_at FROM state "
                     "WHERE ns = ?1 AND (expires_at IS NULL OR expires_at > "
                     "?2) AND key > ?3 ORDER BY key LIMIT ?4",
    [S_LEASE_TAKE] =
        "INSERT INTO leases(thread_id, owner, expires_at, epoch) VALUES "
        "(?1, ?2, ?3, 1) ON CONFLICT(thread_id) DO UPDATE SET owner = "
        "excluded.owner, expires_at = excluded.expires_at, epoch = "
        "leases.epoch + 1 RETURNING epoch",
    [S_LEASE_RELEASE] = "UPDATE leases SET owner = '', expires_at = 0 WHERE "
                        "thread_id = ?1 AND owner = ?2",
    [S_LEASE_RELEASE_ALL] = "UPDATE leases SET owner = '', expires_at = 0 "
                            "WHERE owner = ?2",
    [S_LEASE_RENEW] = "UPDATE leases SET expires_at = ?2 WHERE owner = ?1",
    /* Top-level threads left running whose lease has lapsed (or was given
     * back at a shutdown): the oldest first. */
    [S_READY] = "SELECT t.id FROM threads t LEFT JOIN leases l ON "
                "l.thread_id = t.id WHERE t.status = 'running' AND t.parent "
                "IS NULL AND (l.expires_at IS NULL OR l.expires_at <= ?1) "
                "ORDER BY t.updated_at, t.id LIMIT ?2",
    [S_DELETE_EVENTS] =
        "WITH RECURSIVE doomed(id) AS (SELECT ?1 UNION ALL SELECT t.id FROM "
        "threads t JOIN doomed d ON t.parent = d.id) DELETE FROM events "
        "WHERE thread IN (SELECT n FROM threads WHERE id IN doomed)",
    [S_DELETE_LEASES] =
        "WITH RECURSIVE doomed(id) AS (SELECT ?1 UNION ALL SELECT t.id FROM "
        "threads t JOIN doomed d ON t.parent = d.id) DELETE FROM leases "
        "WHERE thread_id IN doomed",
    [S_DELETE_THREADS] =
        "WITH RECURSIVE doomed(id) AS (SELECT ?1 UNION ALL SELECT t.id FROM "
        "threads t JOIN doomed d ON t.parent = d.id) DELETE FROM threads "
        "WHERE id IN doomed",
    [S_DUE] = "SELECT id FROM threads WHERE status = 'waiting' AND deadline "
              "IS NOT NULL AND deadline <= ?1 ORDER BY deadline",
    [S_PURGE_STATE] = "DELETE FROM state WHERE expires_at IS NOT NULL AND "
                      "expires_at <= ?1",
    [S_PURGE_EVENTS] =
        "WITH RECURSIVE doomed(id) AS (SELECT id FROM threads WHERE parent "
        "IS NULL AND status IN ('done', 'failed', 'cancelled') AND "
        "updated_at < ?1 UNION ALL SELECT t.id FROM threads t JOIN doomed d "
        "ON t.parent = d.id) DELETE FROM events WHERE thread IN (SELECT n "
        "FROM threads WHERE id IN doomed)",
    [S_PURGE_THREADS] =
        "WITH RECURSIVE doomed(id) AS (SELECT id FROM threads WHERE parent "
        "IS NULL AND status IN ('done', 'failed', 'cancelled') AND "
        "updated_at < ?1 UNION ALL SELECT t.id FROM threads t JOIN doomed d "
        "ON t.parent = d.id) DELETE FROM threads WHERE id IN doomed",
    /* Agent versions no event names any more; the subquery runs once. */
    [S_PURGE_VERSIONS] =
        "DELETE FROM versions WHERE created_at < ?1 AND hash NOT IN "
        "(SELECT DISTINCT v FROM events WHERE v IS NOT NULL)",
    /* A put refreshes created_at: engines re-put the versions they use
     * hourly, so purge (which spares the last day) never takes one. */
    [S_PURGE_LEASES] = "DELETE FROM leases WHERE expires_at <= ?1 AND "
                       "thread_id NOT IN (SELECT id FROM threads)",
    [S_VERSION_PUT] = "INSERT INTO versions(hash, agent, sources, "
                      "created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(hash) "
                      "DO UPDATE SET created_at = excluded.created_at",
    [S_VERSION_GET] = "SELECT sources FROM versions WHERE hash = ?1",
    /* Prepared like the rest: parsing them was a quarter of a step's cost
     * in memory. */
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_SAVEPOINT] = "SAVEPOINT step",
    [S_RELEASE] = "RELEASE step",
    [S_ROLLBACK_TO] = "ROLLBACK TO step",
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

typedef struct db {
  sqlite3 *conn;
  sqlite3_stmt *st[S_COUNT];
  int read_only; /* opened read-only: its file or folder is not writable */
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

static void bind_text(sqlite3_stmt *s, int i, const char *v) {
  if (v)
    sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(s, i);
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
    sqlite3_busy_timeout(d->conn, 5000);
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
  sqlite3_busy_timeout(d->conn, 5000);
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
  for (int i = 0; i < S_COUNT; i++)
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
  for (int i = 0; i < S_COUNT; i++)
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

/* ---- helpers for op results ---- */

static void set_error(spool__store_op *op, spool__store_status st,
                      const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(spool__store_op *op, spool__store_status st,
                      const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  op->result = st;
  vsnprintf(op->errmsg, sizeof op->errmsg, fmt, ap);
  va_end(ap);
}

static void db_error(db *d, spool__store_op *op, const char *what) {
  int code = sqlite3_errcode(d->conn);
  op->result = SPOOL__STORE_EIO;
  snprintf(op->errmsg, sizeof op->errmsg, "%s: %s%s", what,
           sqlite3_errmsg(d->conn),
           (code & 0xff) == SQLITE_CORRUPT ? " (the database is corrupt)"
           : (code & 0xff) == SQLITE_READONLY && d->read_only
               ? " (the store was opened read-only: its file or folder is "
                 "not writable here)"
               : "");
}

static int add_text(spool__buf *b, sqlite3_stmt *s, int col) {
  if (sqlite3_column_type(s, col) == SQLITE_NULL)
    return spool__buf_adds(b, "null");
  const char *t = (const char *)sqlite3_column_text(s, col);
  return spool__json_write_string(b, t, (size_t)sqlite3_column_bytes(s, col)) ==
                 0
             ? 0
             : -1;
}

static int add_int(spool__buf *b, sqlite3_stmt *s, int col) {
  if (sqlite3_column_type(s, col) == SQLITE_NULL)
    return spool__buf_adds(b, "null");
  return spool__json_write_integer(b, sqlite3_column_int64(s, col));
}

/* A thread row (id, agent, parent, status, created_at, updated_at,
 * last_seq, deadline) as a JSON object. */
static int add_thread(spool__buf *b, sqlite3_stmt *s) {
  static const char *const names[] = {"id",     "agent",      "parent",
                                      "status", "created_at", "updated_at",
                                      "events", "deadline"};
  int rc = spool__buf_addc(b, '{');
  for (int i = 0; i < 8 && rc == 0; i++) {
    rc = spool__buf_printf(b, "%s\"%s\":", i ? "," : "", names[i]);
    if (rc == 0)
      rc = i < 4 ? add_text(b, s, i) : add_int(b, s, i);
  }
  return rc == 0 ? spool__buf_addc(b, '}') : -1;
}

/* Appends stored JSON after checking it is JSON. */
static int add_json(spool__buf *b, sqlite3_stmt *s, int col, spool__buf *sc,
                    char *why, size_t whylen) {
  const char *t = (const char *)sqlite3_column_text(s, col);
  size_t n = (size_t)sqlite3_column_bytes(s, col);
  spool__json_error e;
  if (t == NULL || spool__json_check(t, n, sc, &e) != 0) {
    if (t == NULL)
      snprintf(why, whylen, "no data");
    else
      spool__json_error_format(&e, why, whylen);
    return 1;
  }
  return spool__buf_add(b, t, n);
}

/* ---- ops ---- */

static void op_append(db *d, spool__store_op *op) {
  sqlite3_stmt *s;
  char msg[160];
  long long thread_n; /* threads.n, which events are keyed by */
  if (run(d, S_SAVEPOINT, msg, sizeof msg) != 0) {
    db_error(d, op, "cannot start the step");
    return;
  }
  if (op->thread_id == NULL)
    goto writes;
  /* Fencing, first: only the holder of the thread's latest claim
   * appends. A run whose lease lapsed and was claimed again, by anyone,
   * is stopped here, before anything it did is stored. */
  s = stmt(d, S_LEASE_GET);
  bind_text(s, 1, op->thread_id);
  if (sqlite3_step(s) != SQLITE_ROW) {
    set_error(op, SPOOL__STORE_ECONFLICT,
              "thread %s: an append without a lease (claim it first)",
              op->thread_id);
    goto rollback;
  }
  const char *holder = (const char *)sqlite3_column_text(s, 0);
  long long epoch = sqlite3_column_int64(s, 2);
  if (op->owner == NULL || epoch != op->epoch ||
      strcmp(holder ? holder : "", op->owner) != 0) {
    set_error(op, SPOOL__STORE_ECONFLICT,
              "thread %s: this run lost its lease (claim %lld; the thread "
              "is at claim %lld, held by %s)",
              op->thread_id, op->epoch, epoch,
              holder && *holder ? holder : "nobody");
    sqlite3_reset(s);
    goto rollback;
  }
  sqlite3_reset(s); /* a statement left on a row blocks the savepoints */
  if (op->expected_seq == 0) {
    s = stmt(d, S_THREAD_INSERT);
    bind_text(s, 1, op->thread_id);
    bind_text(s, 2, op->agent);
    bind_text(s, 3, op->parent);
    sqlite3_bind_int64(s, 4, op->now);
    int rc = sqlite3_step(s);
    if ((rc & 0xff) == SQLITE_CONSTRAINT) {
      set_error(op, SPOOL__STORE_ECONFLICT, "thread %s already exists",
                op->thread_id);
      goto rollback;
    }
    if (rc != SQLITE_DONE) {
      db_error(d, op, "cannot create the thread");
      goto rollback;
    }
    thread_n = sqlite3_last_insert_rowid(d->conn);
  } else {
    s = stmt(d, S_THREAD_SEQ);
    bind_text(s, 1, op->thread_id);
    if (sqlite3_step(s) != SQLITE_ROW) {
      set_error(op, SPOOL__STORE_ENOTFOUND, "unknown thread '%s'",
                op->thread_id);
      goto rollback;
    }
    long long have = sqlite3_column_int64(s, 0);
    thread_n = sqlite3_column_int64(s, 1);
    if (have != op->expected_seq) {
      op->result = SPOOL__STORE_ECONFLICT;
      snprintf(op->errmsg, sizeof op->errmsg,
               "thread %s has %lld events, not the %lld this run expected "
               "(another process appended to it)",
               op->thread_id, have, op->expected_seq);
      goto rollback;
    }
  }
  for (int i = 0; i < op->nevents; i++) {
    spool__store_event *ev = &op->events[i];
    s = stmt(d, S_EVENT_INSERT);
    sqlite3_bind_int64(s, 1, thread_n);
    sqlite3_bind_int64(s, 2, ev->seq);
    sqlite3_bind_int64(s, 3, ev->step);
    bind_text(s, 4, ev->type);
    sqlite3_bind_int64(s, 5, ev->at);
    bind_text(s, 6, ev->v);
    bind_text(s, 7, ev->data);
    if (sqlite3_step(s) != SQLITE_DONE) {
      db_error(d, op, "cannot store an event");
      goto rollback;
    }
  }
  s = stmt(d, S_THREAD_UPDATE);
  bind_text(s, 1, op->thread_id);
  sqlite3_bind_int64(s, 2, op->expected_seq + op->nevents);
  bind_text(s, 3, op->status ? op->status : "running");
  if (op->deadline > 0)
    sqlite3_bind_int64(s, 4, op->deadline);
  sqlite3_bind_int64(s, 5, op->now);
  if (sqlite3_step(s) != SQLITE_DONE) {
    db_error(d, op, "cannot update the thread");
    goto rollback;
  }
writes:
  spool__buf_adds(&op->json, "[");
  for (int i = 0; i < op->nwrites; i++) {
    spool__store_write *w = &op->writes[i];
    if (w->if_version >= 0) {
      s = stmt(d, S_STATE_VERSION);
      bind_text(s, 1, w->ns);
      bind_text(s, 2, w->key);
      sqlite3_bind_int64(s, 3, op->now);
      long long have =
          sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
      if (have != w->if_version) {
        op->result = SPOOL__STORE_ECONFLICT;
        snprintf(op->errmsg, sizeof op->errmsg,
                 "state %s/%s is at version %lld, not %lld", w->ns, w->key,
                 have, w->if_version);
        goto rollback;
      }
    }
    long long version = 0;
    if (w->value == NULL) {
      s = stmt(d, S_STATE_DELETE);
      bind_text(s, 1, w->ns);
      bind_text(s, 2, w->key);
      if (sqlite3_step(s) != SQLITE_DONE) {
        db_error(d, op, "cannot delete state");
        goto rollback;
      }
    } else {
      s = stmt(d, S_STATE_UPSERT);
      bind_text(s, 1, w->ns);
      bind_text(s, 2, w->key);
      bind_text(s, 3, w->value);
      sqlite3_bind_int64(s, 4, op->now);
      if (w->expires_at > 0)
        sqlite3_bind_int64(s, 5, w->expires_at);
      if (sqlite3_step(s) != SQLITE_ROW) {
        db_error(d, op, "cannot write state");
        goto rollback;
      }
      version = sqlite3_column_int64(s, 0);
      sqlite3_reset(s);
    }
    spool__buf_printf(&op->json, "%s%lld", i ? "," : "", version);
  }
  spool__buf_adds(&op->json, "]");
  run(d, S_RELEASE, msg, sizeof msg);
  return;
rollback:
  run(d, S_ROLLBACK_TO, msg, sizeof msg);
  run(d, S_RELEASE, msg, sizeof msg);
  spool__buf_clear(&op->json);
}

static void op_load(db *d, spool__store_op *op) {
  sqlite3_stmt *s = stmt(d, S_THREAD_GET);
  bind_text(s, 1, op->thread_id);
  int rc = sqlite3_step(s);
  if (rc != SQLITE_ROW) {
    if (rc == SQLITE_DONE)
      set_error(op, SPOOL__STORE_ENOTFOUND, "unknown thread '%s'",
                op->thread_id);
    else
      db_error(d, op, "cannot read the thread");
    return;
  }
  long long last_seq = sqlite3_column_int64(s, 6);
  spool__buf *b = &op->json;
  spool__buf scratch = {0};
  spool__buf_adds(b, "{\"thread\":");
  add_thread(b, s);
  spool__buf_adds(b, ",\"events\":[");
  s = stmt(d, S_EVENTS_GET);
  bind_text(s, 1, op->thread_id);
  long long expect = 1;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    long long seq = sqlite3_column_int64(s, 0);
    char why[128];
    if (seq != expect) {
      op->result = SPOOL__STORE_ECORRUPT;
      snprintf(op->errmsg, sizeof op->errmsg,
               "thread %s: event %lld is missing from the store", op->thread_id,
               expect);
      goto done;
    }
    spool__buf_printf(
        b, "%s{\"seq\":%lld,\"step\":%lld,\"type\":", seq > 1 ? "," : "", seq,
        (long long)sqlite3_column_int64(s, 1));
    add_text(b, s, 2);
    spool__buf_adds(b, ",\"at\":");
    add_int(b, s, 3);
    spool__buf_adds(b, ",\"v\":");
    add_text(b, s, 4);
    spool__buf_adds(b, ",\"data\":");
    if (add_json(b, s, 5, &scratch, why, sizeof why) != 0) {
      op->result = SPOOL__STORE_ECORRUPT;
      snprintf(op->errmsg, sizeof op->errmsg,
               "thread %s, event %lld: the stored data is not JSON (%s)",
               op->thread_id, seq, why);
      goto done;
    }
    spool__buf_addc(b, '}');
    expect++;
  }
  if (rc != SQLITE_DONE) {
    db_error(d, op, "cannot read the events");
    goto done;
  }
  if (expect - 1 != last_seq) {
    op->result = SPOOL__STORE_ECORRUPT;
    snprintf(op->errmsg, sizeof op->errmsg,
             "thread %s: the store lists %lld events but holds %lld",
             op->thread_id, last_seq, expect - 1);
    goto done;
  }
  spool__buf_adds(b, "]}");
done:
  spool__buf_free(&scratch);
  if (op->result != SPOOL__STORE_OK)
    spool__buf_clear(b);
}

/* Runs a statement returning thread rows and writes them as an array. */
static void rows_of_threads(db *d, spool__store_op *op, sqlite3_stmt *s) {
  int rc, n = 0;
  spool__buf_addc(&op->json, '[');
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    if (n++)
      spool__buf_addc(&op->json, ',');
    add_thread(&op->json, s);
  }
  if (rc != SQLITE_DONE) {
    db_error(d, op, "cannot list threads");
    spool__buf_clear(&op->json);
    return;
  }
  spool__buf_addc(&op->json, ']');
}

static void op_list(db *d, spool__store_op *op) {
  sqlite3_stmt *s = stmt(d, S_LIST);
  bind_text(s, 1, op->filter_status);
  bind_text(s, 2, op->filter_agent);
  sqlite3_bind_int64(s, 3, op->before);
  sqlite3_bind_int64(s, 4, op->limit > 0 ? op->limit : 100);
  bind_text(s, 5, op->key ? op->key : "");
  rows_of_threads(d, op, s);
}

static void op_children(db *d, spool__store_op *op) {
  sqlite3_stmt *s = stmt(d, S_CHILDREN);
  bind_text(s, 1, op->thread_id);
  rows_of_threads(d, op, s);
}

static void op_state_get(db *d, spool__store_op *op) {
  sqlite3_stmt *s = stmt(d, S_STATE_GET);
  bind_text(s, 1, op->ns);
  bind_text(s, 2, op->key);
  sqlite3_bind_int64(s, 3, op->now);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_DONE) {
    spool__buf_adds(&op->json, "null");
    return;
  }
  if (rc != SQLITE_ROW) {
    db_error(d, op, "cannot read state");
    return;
  }
  char why[128];
  spool__buf scratch = {0};
  spool__buf_adds(&op->json, "{\"value\":");
  if (add_json(&op->json, s, 0, &scratch, why, sizeof why) != 0) {
    op->result = SPOOL__STORE_ECORRUPT;
    snprintf(op->errmsg, sizeof op->errmsg,
             "state %s/%s: the stored value is not JSON (%s)", op->ns, op->key,
             why);
    spool__buf_clear(&op->json);
  } else {
    spool__buf_printf(&op->json, ",\"version\":%lld,\"updated_at\":%lld}",
                      (long long)sqlite3_column_int64(s, 1),
                      (long long)sqlite3_column_int64(s, 2));
  }
  spool__buf_free(&scratch);
}

static void op_state_list(db *d, spool__store_op *op) {
  sqlite3_stmt *s = stmt(d, S_STATE_LIST);
  bind_text(s, 1, op->ns);
  sqlite3_bind_int64(s, 2, op->now);
  bind_text(s, 3, op->key ? op->key : "");
  sqlite3_bind_int64(s, 4, op->limit > 0 ? op->limit : 1000);
  spool__buf scratch = {0};
  int rc, n = 0;
  spool__buf_addc(&op->json, '[');
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    char why[128];
    spool__buf_adds(&op->json, n++ ? ",{\"key\":" : "{\"key\":");
    add_text(&op->json, s, 0);
    spool__buf_adds(&op->json, ",\"value\":");
    if (add_json(&op->json, s, 1, &scratch, why, sizeof why) != 0) {
      op->result = SPOOL__STORE_ECORRUPT;
      snprintf(op->errmsg, sizeof op->errmsg,
               "state %s/%s: the stored value is not JSON (%s)", op->ns,
               (const char *)sqlite3_column_text(s, 0), why);
      break;
    }
    spool__buf_printf(&op->json, ",\"version\":%lld,\"updated_at\":%lld}",
                      (long long)sqlite3_column_int64(s, 2),
                      (long long)sqlite3_column_int64(s, 3));
  }
  spool__buf_free(&scratch);
  if (op->result == SPOOL__STORE_OK && rc != SQLITE_DONE)
    db_error(d, op, "cannot list state");
  if (op->result != SPOOL__STORE_OK)
    spool__buf_clear(&op->json);
  else
    spool__buf_addc(&op->json, ']');
}

/* Takes the lease: a new epoch, which fences off every earlier claim. A
 * lease some other owner holds and has not let lapse is refused unless it
 * is forced (its holder is known dead) at the epoch the caller saw: of
 * several takers of one dead holder's lease, one wins. Answers
 * {"epoch":N}, or {"held_by":OWNER,"epoch":N,"ms_left":MS} when refused. */
static void op_claim(db *d, spool__store_op *op) {
  sqlite3_stmt *s = stmt(d, S_LEASE_GET);
  bind_text(s, 1, op->thread_id);
  if (sqlite3_step(s) == SQLITE_ROW) {
    const char *holder = (const char *)sqlite3_column_text(s, 0);
    long long expires_at = sqlite3_column_int64(s, 1);
    long long epoch = sqlite3_column_int64(s, 2);
    int free = holder == NULL || strcmp(holder, op->owner) == 0 ||
               expires_at <= op->now || (op->force && epoch == op->epoch);
    if (!free) {
      spool__buf_adds(&op->json, "{\"held_by\":");
      spool__json_write_string(&op->json, holder, strlen(holder));
      spool__buf_printf(&op->json, ",\"epoch\":%lld,\"ms_left\":%lld}", epoch,
                        expires_at - op->now);
      sqlite3_reset(s);
      return;
    }
  }
  sqlite3_reset(s);
  s = stmt(d, S_LEASE_TAKE);
  bind_text(s, 1, op->thread_id);
  bind_text(s, 2, op->owner);
  sqlite3_bind_int64(s, 3, op->now + op->lease_ms);
  if (sqlite3_step(s) != SQLITE_ROW) {
    db_error(d, op, "cannot take the lease");
    return;
  }
  spool__buf_printf(&op->json, "{\"epoch\":%lld}",
                    (long long)sqlite3_column_int64(s, 0));
  sqlite3_reset(s);
}

/* Gives back one lease, or with no thread all the owner's (a shutdown). */
static void op_release(db *d, spool__store_op *op) {
  sqlite3_stmt *s =
      stmt(d, op->thread_id ? S_LEASE_RELEASE : S_LEASE_RELEASE_ALL);
  bind_text(s, 1, op->thread_id);
  bind_text(s, 2, op->owner);
  if (sqlite3_step(s) != SQLITE_DONE)
    db_error(d, op, "cannot release the lease");
}

/* The heartbeat of a process that runs threads: one statement extends all
 * its leases, however many. */
static void op_renew(db *d, spool__store_op *op) {
  sqlite3_stmt *s = stmt(d, S_LEASE_RENEW);
  bind_text(s, 1, op->owner);
  sqlite3_bind_int64(s, 2, op->now + op->lease_ms);
  if (sqlite3_step(s) != SQLITE_DONE)
    db_error(d, op, "cannot renew the leases");
  else
    spool__buf_printf(&op->json, "%d", sqlite3_changes(d->conn));
}

/* Claims up to `limit` threads left running whose lease lapsed, in the
 * transaction the batch runs in (SQLite has one writer, so no other
 * process claims between the read and the writes). Answers
 * [{"id":ID,"epoch":N}...]. */
static void op_ready(db *d, spool__store_op *op) {
  sqlite3_stmt *s = stmt(d, S_READY);
  sqlite3_bind_int64(s, 1, op->now);
  sqlite3_bind_int64(s, 2, op->limit > 0 ? op->limit : 100);
  char **ids = NULL;
  int n = 0, cap = 0, rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    if (n == cap) {
      cap = cap ? 2 * cap : 16;
      char **grown = realloc(ids, (size_t)cap * sizeof *ids);
      if (grown == NULL)
        break;
      ids = grown;
    }
    if ((ids[n] = strdup((const char *)sqlite3_column_text(s, 0))) == NULL)
      break;
    n++;
  }
  if (rc != SQLITE_DONE)
    db_error(d, op, "cannot find the threads to take over");
  spool__buf_addc(&op->json, '[');
  for (int i = 0; i < n && op->result == SPOOL__STORE_OK; i++) {
    s = stmt(d, S_LEASE_TAKE);
    bind_text(s, 1, ids[i]);
    bind_text(s, 2, op->owner);
    sqlite3_bind_int64(s, 3, op->now + op->lease_ms);
    if (sqlite3_step(s) != SQLITE_ROW) {
      db_error(d, op, "cannot take over a lease");
      break;
    }
    spool__buf_adds(&op->json, i ? ",{\"id\":" : "{\"id\":");
    spool__json_write_string(&op->json, ids[i], strlen(ids[i]));
    spool__buf_printf(&op->json, ",\"epoch\":%lld}",
                      (long long)sqlite3_column_int64(s, 0));
    sqlite3_reset(s);
  }
  spool__buf_addc(&op->json, ']');
  for (int i = 0; i < n; i++)
    free(ids[i]);
  free(ids);
  if (op->result != SPOOL__STORE_OK)
    spool__buf_clear(&op->json);
}

static void op_delete(db *d, spool__store_op *op) {
  sqlite3_stmt *s = stmt(d, S_THREAD_SEQ);
  bind_text(s, 1, op->thread_id);
  if (sqlite3_step(s) != SQLITE_ROW) {
    set_error(op, SPOOL__STORE_ENOTFOUND, "unknown thread '%s'", op->thread_id);
    return;
  }
  static const int order[] = {S_DELETE_EVENTS, S_DELETE_LEASES,
                              S_DELETE_THREADS};
  for (int i = 0; i < 3; i++) {
    s = stmt(d, order[i]);
    bind_text(s, 1, op->thread_id);
    if (sqlite3_step(s) != SQLITE_DONE) {
      db_error(d, op, "cannot delete the thread");
      return;
    }
  }
}

static void op_due(db *d, spool__store_op *op) {
  sqlite3_stmt *s = stmt(d, S_DUE);
  sqlite3_bind_int64(s, 1, op->now);
  int rc, n = 0;
  spool__buf_addc(&op->json, '[');
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    if (n++)
      spool__buf_addc(&op->json, ',');
    add_text(&op->json, s, 0);
  }
  spool__buf_addc(&op->json, ']');
  if (rc != SQLITE_DONE)
    db_error(d, op, "cannot list due threads");
}

/* Agent versions younger than this are never purged (see S_VERSION_PUT). */
#define VERSION_GRACE_MS (24LL * 3600 * 1000)

static void op_purge(db *d, spool__store_op *op) {
  static const int order[] = {S_PURGE_STATE, S_PURGE_EVENTS, S_PURGE_THREADS,
                              S_PURGE_VERSIONS};
  long long counts[4] = {0, 0, 0, 0};
  for (int i = 0; i < 4; i++) {
    sqlite3_stmt *s = stmt(d, order[i]);
    long long cutoff = i == 0 ? op->now : op->finished_before;
    if (order[i] == S_PURGE_VERSIONS && cutoff > op->now - VERSION_GRACE_MS)
      cutoff = op->now - VERSION_GRACE_MS;
    sqlite3_bind_int64(s, 1, cutoff);
    if (sqlite3_step(s) != SQLITE_DONE) {
      db_error(d, op, "cannot purge");
      return;
    }
    counts[i] = sqlite3_changes(d->conn);
  }
  /* The leases of threads purged now or deleted before (a released lease
   * keeps its row, for its epoch, as long as its thread). */
  sqlite3_stmt *s = stmt(d, S_PURGE_LEASES);
  sqlite3_bind_int64(s, 1, op->now);
  if (sqlite3_step(s) != SQLITE_DONE) {
    db_error(d, op, "cannot purge");
    return;
  }
  spool__buf_printf(&op->json,
                    "{\"state\":%lld,\"events\":%lld,"
                    "\"threads\":%lld,\"versions\":%lld}",
                    counts[0], counts[1], counts[2], counts[3]);
}

static void op_version_put(db *d, spool__store_op *op) {
  sqlite3_stmt *s = stmt(d, S_VERSION_PUT);
  bind_text(s, 1, op->key);
  bind_text(s, 2, op->agent);
  bind_text(s, 3, op->value);
  sqlite3_bind_int64(s, 4, op->now);
  if (sqlite3_step(s) != SQLITE_DONE)
    db_error(d, op, "cannot store the agent version");
}

static void op_version_get(db *d, spool__store_op *op) {
  sqlite3_stmt *s = stmt(d, S_VERSION_GET);
  bind_text(s, 1, op->key);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_DONE) {
    set_error(op, SPOOL__STORE_ENOTFOUND, "no stored agent version '%s'",
              op->key);
    return;
  }
  if (rc != SQLITE_ROW) {
    db_error(d, op, "cannot read the agent version");
    return;
  }
  spool__buf scratch = {0};
  char why[128];
  if (add_json(&op->json, s, 0, &scratch, why, sizeof why) != 0) {
    op->result = SPOOL__STORE_ECORRUPT;
    snprintf(op->errmsg, sizeof op->errmsg,
             "agent version %s: the stored sources are not JSON (%s)", op->key,
             why);
    spool__buf_clear(&op->json);
  }
  spool__buf_free(&scratch);
}

static void sqlite_exec(void *p, spool__store_op *op) {
  db *d = p;
  switch (op->kind) {
  case SPOOL__STORE_APPEND:
    op_append(d, op);
    break;
  case SPOOL__STORE_LOAD:
    op_load(d, op);
    break;
  case SPOOL__STORE_LIST:
    op_list(d, op);
    break;
  case SPOOL__STORE_CHILDREN:
    op_children(d, op);
    break;
  case SPOOL__STORE_STATE_GET:
    op_state_get(d, op);
    break;
  case SPOOL__STORE_STATE_LIST:
    op_state_list(d, op);
    break;
  case SPOOL__STORE_CLAIM:
    op_claim(d, op);
    break;
  case SPOOL__STORE_RELEASE:
    op_release(d, op);
    break;
  case SPOOL__STORE_RENEW:
    op_renew(d, op);
    break;
  case SPOOL__STORE_READY:
    op_ready(d, op);
    break;
  case SPOOL__STORE_DELETE:
    op_delete(d, op);
    break;
  case SPOOL__STORE_DUE:
    op_due(d, op);
    break;
  case SPOOL__STORE_PURGE:
    op_purge(d, op);
    break;
  case SPOOL__STORE_VERSION_PUT:
    op_version_put(d, op);
    break;
  case SPOOL__STORE_VERSION_GET:
    op_version_get(d, op);
    break;
  }
}

const spool__store_backend spool__store_sqlite = {
    "sqlite",      sqlite_open,     sqlite_close, sqlite_begin,
    sqlite_commit, sqlite_rollback, sqlite_exec,  sqlite_maintain,
};
