/*
 * pg_listen.h: PostgreSQL notifications on the loop. A connection of its
 * own LISTENs on a channel; its socket is watched by a uv_poll, so a
 * NOTIFY another worker's transaction sends reaches this process when it
 * commits, with no polling and no thread waiting.
 *
 * Connecting blocks, so it runs on libuv's thread pool; a connection the
 * server drops is made again after a second (then up to 8 s). While none
 * is up, notifications are lost: callers poll as well, and a lost one
 * costs latency only.
 */
#ifndef SPOOL_PG_LISTEN_H
#define SPOOL_PG_LISTEN_H

#include <uv.h>

typedef struct spool__pg_listener spool__pg_listener;

/* Called on the loop thread for each notification's payload. */
typedef void (*spool__pg_notified)(const char *payload, void *ud);

/* Starts listening on `channel` (a plain identifier) of the database at
 * url; NULL when out of memory. Never blocks. */
spool__pg_listener *spool__pg_listen(uv_loop_t *loop, const char *url,
                                     const char *channel, spool__pg_notified cb,
                                     void *ud);
/* Is its connection up now? */
int spool__pg_listening(const spool__pg_listener *l);
/* Stops: no callback after this returns; the memory goes once its handles
 * and any connect in flight are done. NULL is a no-op. */
void spool__pg_listen_close(spool__pg_listener *l);

#endif
