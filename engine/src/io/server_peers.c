/*
 * server_peers.c: a chained hash table from client address to its number
 * of connections (server_peers.h). An address leaves the table with its
 * last connection, so the table holds at most one entry per connection.
 */
#include "io/server_peers.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

typedef struct peer {
  spool__peer_key key;
  int count;
  struct peer *next;
} peer;

struct spool__peers {
  peer **buckets;
  size_t mask;
  uint64_t seed;
};

void spool__peer_key_of(const struct sockaddr *sa, spool__peer_key *k) {
  static const unsigned char mapped[12] = {0, 0, 0, 0, 0,    0,
                                           0, 0, 0, 0, 0xff, 0xff};
  memset(k, 0, sizeof *k);
  if (sa->sa_family == AF_INET) {
    memcpy(k->b, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    k->len = 4;
  } else if (sa->sa_family == AF_INET6) {
    const unsigned char *a =
        ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    if (memcmp(a, mapped, sizeof mapped) == 0) {
      memcpy(k->b, a + 12, 4);
      k->len = 4;
    } else {
      memcpy(k->b, a, 8);
      k->len = 8;
    }
  }
}

spool__peers *spool__peers_new(int expected, uint64_t seed) {
  spool__peers *t = calloc(1, sizeof *t);
  if (t == NULL)
    return NULL;
  /* About four addresses a bucket when every connection has its own. */
  size_t n = 64;
  while (n < (size_t)expected / 4 && n < ((size_t)1 << 20))
    n <<= 1;
  t->buckets = calloc(n, sizeof *t->buckets);
  if (t->buckets == NULL) {
    free(t);
    return NULL;
  }
  t->mask = n - 1;
  t->seed = seed;
  return t;
}

void spool__peers_free(spool__peers *t) {
  if (t == NULL)
    return;
  for (size_t i = 0; i <= t->mask; i++)
    while (t->buckets[i]) {
      peer *p = t->buckets[i];
      t->buckets[i] = p->next;
      free(p);
    }
  free(t->buckets);
  free(t);
}

/* FNV-1a, started from the seed. */
static peer **bucket(spool__peers *t, const spool__peer_key *k) {
  uint64_t h = 14695981039346656037ull ^ t->seed;
  h = (h ^ k->len) * 1099511628211ull;
  for (int i = 0; i < k->len; i++)
    h = (h ^ k->b[i]) * 1099511628211ull;
  return &t->buckets[(h ^ (h >> 29)) & t->mask];
}

static int same(const spool__peer_key *a, const spool__peer_key *b) {
  return a->len == b->len && memcmp(a->b, b->b, a->len) == 0;
}

int spool__peers_add(spool__peers *t, const spool__peer_key *k) {
  peer **head = bucket(t, k);
  for (peer *p = *head; p; p = p->next)
    if (same(&p->key, k))
      return ++p->count;
  peer *p = malloc(sizeof *p);
  if (p == NULL)
    return -1;
  p->key = *k;
  p->count = 1;
  p->next = *head;
  *head = p;
  return 1;
}

void spool__peers_remove(spool__peers *t, const spool__peer_key *k) {
  for (peer **pp = bucket(t, k); *pp; pp = &(*pp)->next)
    if (same(&(*pp)->key, k)) {
      peer *p = *pp;
      if (--p->count == 0) {
        *pp = p->next;
        free(p);
      }
      return;
    }
}
