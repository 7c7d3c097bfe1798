/*
 * server_peers.h: how many connections each client address holds, for
 * server.c's cap per address. No uv and no sockets beyond reading an
 * address.
 */
#ifndef SPOOL_SERVER_PEERS_H
#define SPOOL_SERVER_PEERS_H

#include <stdint.h>
#include <sys/socket.h>

/* An IPv4 address (4 bytes), or an IPv6 address's /64 prefix (8 bytes):
 * a host is usually given a whole /64, so counting single IPv6 addresses
 * would cap nothing. An IPv4-mapped IPv6 address counts as its IPv4. A
 * connection whose address cannot be read has the empty key. */
typedef struct spool__peer_key {
  unsigned char b[8];
  unsigned char len;
} spool__peer_key;

void spool__peer_key_of(const struct sockaddr *sa, spool__peer_key *k);

typedef struct spool__peers spool__peers;

/* A table sized for about `expected` addresses; the seed keeps clients
 * from choosing addresses that share a bucket. NULL on out of memory. */
spool__peers *spool__peers_new(int expected, uint64_t seed);
/* NULL is a no-op. */
void spool__peers_free(spool__peers *t);
/* Counts one more connection from k: the address's new count, or -1 on
 * out of memory (nothing counted). */
int spool__peers_add(spool__peers *t, const spool__peer_key *k);
/* Counts one connection from k less (one that spool__peers_add counted). */
void spool__peers_remove(spool__peers *t, const spool__peer_key *k);

#endif
