/*
 * lua_heap.c: size-class free lists and accounts for the Lua state (see
 * lua_heap.h). No Lua here: only the lua_Alloc contract (ptr NULL means a
 * new block and osize is then a type tag; nsize 0 means free; otherwise
 * realloc, which returns NULL, the old block intact, when memory runs out
 * — and which Lua assumes never fails when shrinking).
 *
 * Under AddressSanitizer, or with SPOOL_LUA_MALLOC set in the environment
 * (the valgrind tests set it), every block goes to malloc, so the checker
 * still sees each Lua object on its own. Not by default under valgrind:
 * callgrind's counts should be those of the real allocator.
 */
#include "base/lua_heap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#define PASS_THROUGH 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PASS_THROUGH 1
#endif
#endif
#ifndef PASS_THROUGH
#define PASS_THROUGH 0
#endif

/* Classes of 16 bytes (malloc's alignment, so any Lua object fits any
 * class's block) up to 512: Lua's tables, closures, upvalues, short
 * strings and small arrays. */
#define GRAIN 16
#define CLASSES 32
#define SMALL_MAX (GRAIN * CLASSES)
#define SLAB_BYTES (64 * 1024)
#define GRAINS (SLAB_BYTES / GRAIN)
#define ARENA_SLABS 32 /* 2 MiB of address space at a time */

/* A slab is aligned to its size, so a block finds its slab, and there its
 * account tag, by masking its address. Its blocks start after the tags, on
 * a GRAIN boundary. */
typedef struct slab {
  struct slab *next;
  uint16_t tag[GRAINS]; /* the account of the block starting at each grain */
} slab;
#define SLAB_FIRST (((sizeof(slab) + GRAIN - 1) / GRAIN) * GRAIN)

/* A large block's header: its account, and the account's epoch then (the
 * account's number may serve another run later). */
typedef struct big_head {
  uint32_t account;
  uint32_t epoch;
  uint64_t pad; /* keeps the block after it on a 16-byte boundary */
} big_head;

#define MAX_ACCOUNTS 65536 /* tags are 16 bits; number 0 is the engine's */

enum { FREE, OPEN, CLOSED };

typedef struct account {
  size_t used, limit; /* limit 0: none */
  size_t grace;       /* allowed past the limit once a refusal was raised */
  size_t large;       /* bytes of live large blocks made under this number */
  uint32_t epoch;
  uint32_t heir_epoch;
  int heir; /* closed: who its blocks count for now (0: engine) */
  unsigned char state;
  unsigned char refusals; /* in a row, without the account going back */
  int refused;            /* see spool__lua_heap_refused */
} account;

struct spool__lua_heap {
  int pass_through; /* every block to malloc */
  void *free_list[CLASSES];
  char *bump, *end; /* the newest slab's unused part */
  slab *slabs;
  char *arena;    /* the newest arena, handed out from its end */
  int arena_left; /* its slabs not handed out yet */
  account *acct;
  int naccounts; /* entries of acct in use (open, closed or free) */
  int *free_accounts, nfree;
  int nclosed; /* closed, their small blocks' tags not yet swept */
  int current;
  size_t total, cap, cap_grace;
  unsigned char cap_refusals;
  void *owner;
};

static int grow_accounts(spool__lua_heap *h, int n) {
  account *a = realloc(h->acct, (size_t)n * sizeof *a);
  if (a == NULL)
    return -1;
  int *f = realloc(h->free_accounts, (size_t)n * sizeof *f);
  if (f == NULL) {
    h->acct = a;
    return -1;
  }
  h->acct = a;
  h->free_accounts = f;
  return 0;
}

spool__lua_heap *spool__lua_heap_new(void) {
  spool__lua_heap *h = calloc(1, sizeof *h);
  if (h == NULL)
    return NULL;
  h->pass_through = PASS_THROUGH || getenv("SPOOL_LUA_MALLOC") != NULL;
  if (grow_accounts(h, 64) != 0) {
    spool__lua_heap_free(h);
    return NULL;
  }
  memset(&h->acct[0], 0, sizeof h->acct[0]);
  h->acct[0].state = OPEN;
  h->naccounts = 1;
  return h;
}

void spool__lua_heap_free(spool__lua_heap *h) {
  if (h == NULL)
    return;
  /* munmap takes any part of a mapping: each slab goes by itself, and
   * then what the newest arena had not handed out. */
  while (h->slabs) {
    slab *next = h->slabs->next;
    munmap(h->slabs, SLAB_BYTES);
    h->slabs = next;
  }
  if (h->arena_left > 0)
    munmap(h->arena, (size_t)h->arena_left * SLAB_BYTES);
  free(h->acct);
  free(h->free_accounts);
  free(h);
}

/* ---- accounting ---- */

static size_t grace_of(size_t limit) {
  size_t g = limit / 4;
  return g < (1u << 20) ? (1u << 20) : g;
}

/* Lua asks again after a full collection when a block is refused, and
 * raises a memory error when refused twice: from the second refusal on,
 * the account may go a little further, so the code handling that error
 * (recording what failed) can run. */
static int refuse(spool__lua_heap *h, account *a, int why) {
  if (why < 0) {
    if (h->cap_refusals++ >= 1)
      h->cap_grace = h->cap / 16;
  } else if (a->refusals++ >= 1) {
    a->grace = grace_of(a->limit);
  }
  a->refused = why;
  return 0;
}

/* Charges n new bytes to account `id`; 0 if that passes a limit. */
static int charge(spool__lua_heap *h, int id, size_t n) {
  account *a = &h->acct[id];
  if (h->cap && h->total + n > h->cap + h->cap_grace)
    return refuse(h, a, -1);
  if (a->limit && a->used + n > a->limit + a->grace)
    return refuse(h, a, id);
  a->used += n;
  h->total += n;
  return 1;
}

/* The account a closed one's blocks count for now: its heir's (and so on),
 * the engine's when an heir is gone. */
static int resolve(spool__lua_heap *h, int id) {
  for (int hops = 0; id > 0 && h->acct[id].state == CLOSED; hops++) {
    account *a = &h->acct[id];
    if (hops == 8 || a->heir <= 0 || h->acct[a->heir].epoch != a->heir_epoch)
      return 0;
    id = a->heir;
  }
  return id > 0 && h->acct[id].state == OPEN ? id : 0;
}

/* The account freed bytes are credited to. A large block names its
 * account's epoch: once that number serves another account, the block's
 * bytes count as the engine's (sweep moved them there). */
static account *owner_account(spool__lua_heap *h, int id, uint32_t epoch,
                              int check_epoch) {
  if (check_epoch && h->acct[id].epoch != epoch)
    return &h->acct[0];
  return &h->acct[resolve(h, id)];
}

/* Back under its limits, an account has no grace. Why it was refused is
 * kept until the code that caught the memory error asks (which may be
 * after a collection has brought the account back under). */
static void credit(spool__lua_heap *h, account *a, size_t n) {
  a->used -= n;
  h->total -= n;
  if (h->cap == 0 || h->total <= h->cap) {
    h->cap_grace = 0;
    h->cap_refusals = 0;
  }
  if (a->limit == 0 || a->used <= a->limit) {
    a->grace = 0;
    a->refusals = 0;
  }
}

/* ---- small blocks ---- */

static int is_small(const spool__lua_heap *h, size_t n) {
  return !h->pass_through && n <= SMALL_MAX;
}

static int class_of(size_t n) {
  return (int)((n + GRAIN - 1) / GRAIN) - 1;
}

static uint16_t *tag_of(void *p) {
  slab *s = (slab *)((uintptr_t)p & ~(uintptr_t)(SLAB_BYTES - 1));
  return &s->tag[((char *)p - (char *)s) / GRAIN];
}

/* Slabs come from arenas of ARENA_SLABS, mapped from the kernel aligned
 * to a slab's size (twice as much is mapped, the rest unmapped at once):
 * no gap between slabs, as posix_memalign would leave, and few mappings.
 * Pages count as memory only once touched. */
static void *new_slab(spool__lua_heap *h) {
  if (h->arena_left == 0) {
    size_t size = (size_t)ARENA_SLABS * SLAB_BYTES;
    char *p = mmap(NULL, size + SLAB_BYTES, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
      return NULL;
    char *start = (char *)(((uintptr_t)p + SLAB_BYTES - 1) &
                           ~(uintptr_t)(SLAB_BYTES - 1));
    if (start > p)
      munmap(p, (size_t)(start - p));
    if (start + size < p + size + SLAB_BYTES)
      munmap(start + size, (size_t)(p + size + SLAB_BYTES - (start + size)));
    h->arena = start;
    h->arena_left = ARENA_SLABS;
  }
  h->arena_left--;
  return h->arena + (size_t)h->arena_left * SLAB_BYTES;
}

static void *take(spool__lua_heap *h, int c) {
  void *p = h->free_list[c];
  if (p) {
    memcpy(&h->free_list[c], p, sizeof p);
    return p;
  }
  size_t size = (size_t)(c + 1) * GRAIN;
  if ((size_t)(h->end - h->bump) < size) {
    void *mem = new_slab(h);
    if (mem == NULL)
      return NULL;
    slab *s = mem;
    s->next = h->slabs;
    h->slabs = s;
    h->bump = (char *)s + SLAB_FIRST;
    h->end = (char *)s + SLAB_BYTES;
  }
  p = h->bump;
  h->bump += size;
  return p;
}

static void give_back(spool__lua_heap *h, void *p, int c) {
  memcpy(p, &h->free_list[c], sizeof p);
  h->free_list[c] = p;
}

/* ---- blocks of either kind ---- */

/* A new block of n bytes (n > 0) tagged for account id; not charged. */
static void *new_block(spool__lua_heap *h, int id, size_t n) {
  if (is_small(h, n)) {
    void *p = take(h, class_of(n));
    if (p)
      *tag_of(p) = (uint16_t)id;
    return p;
  }
  big_head *b = malloc(sizeof *b + n);
  if (b == NULL)
    return NULL;
  b->account = (uint32_t)id;
  b->epoch = h->acct[id].epoch;
  h->acct[id].large += n;
  return b + 1;
}

/* A large block of n bytes leaves the count of the number it names. */
static void forget_large(spool__lua_heap *h, big_head *b, size_t n) {
  account *a = &h->acct[b->account];
  if (a->epoch == b->epoch)
    a->large -= n;
}

/* Gives a block back; not credited. */
static void drop_block(spool__lua_heap *h, void *p, size_t n) {
  if (is_small(h, n)) {
    give_back(h, p, class_of(n));
  } else {
    forget_large(h, (big_head *)p - 1, n);
    free((big_head *)p - 1);
  }
}

static account *account_of(spool__lua_heap *h, void *p, size_t n) {
  if (is_small(h, n))
    return owner_account(h, *tag_of(p), 0, 0);
  big_head *b = (big_head *)p - 1;
  return owner_account(h, (int)b->account, b->epoch, 1);
}

static void *alloc_new(spool__lua_heap *h, size_t n) {
  int id = h->current;
  if (!charge(h, id, n))
    return NULL;
  void *p = new_block(h, id, n);
  if (p == NULL)
    credit(h, &h->acct[id], n);
  return p;
}

static void release(spool__lua_heap *h, void *p, size_t n) {
  credit(h, account_of(h, p, n), n);
  drop_block(h, p, n);
}

/* Moves a block's contents to a new block of nsize tagged for id (the
 * charges are the caller's); NULL, the old block intact, if none. */
static void *move(spool__lua_heap *h, int id, void *ptr, size_t osize,
                  size_t nsize) {
  if (!is_small(h, osize) && !is_small(h, nsize)) {
    big_head *b = realloc((big_head *)ptr - 1, sizeof *b + nsize);
    if (b == NULL)
      return NULL;
    forget_large(h, b, osize);
    b->account = (uint32_t)id;
    b->epoch = h->acct[id].epoch;
    h->acct[id].large += nsize;
    return b + 1;
  }
  if (is_small(h, osize) && class_of(osize) == class_of(nsize)) {
    *tag_of(ptr) = (uint16_t)id;
    return ptr;
  }
  void *p = new_block(h, id, nsize);
  if (p == NULL)
    return NULL;
  memcpy(p, ptr, osize < nsize ? osize : nsize);
  drop_block(h, ptr, osize);
  return p;
}

/* A block that shrinks stays its account's, and nothing is charged: Lua
 * counts on shrinking never failing. If no smaller block can be had, the
 * old one serves — unless it is a large block that Lua will later free as
 * a small one: only then does the shrink fail. */
static void *shrink(spool__lua_heap *h, void *ptr, size_t osize, size_t nsize) {
  account *a = account_of(h, ptr, osize);
  void *p = move(h, (int)(a - h->acct), ptr, osize, nsize);
  if (p == NULL && !is_small(h, osize) && is_small(h, nsize))
    return NULL;
  credit(h, a, osize - nsize);
  return p ? p : ptr;
}

/* Growth is the current account's doing: the block is charged to it
 * whole, and leaves its former account. */
static void *grow(spool__lua_heap *h, void *ptr, size_t osize, size_t nsize) {
  int id = h->current;
  account *old = account_of(h, ptr, osize), *a = &h->acct[id];
  size_t need = old == a ? nsize - osize : nsize;
  if (!charge(h, id, need))
    return NULL;
  void *p = move(h, id, ptr, osize, nsize);
  if (p == NULL) {
    credit(h, a, need);
    return NULL;
  }
  if (old != a)
    credit(h, old, osize);
  return p;
}

void *spool__lua_heap_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  spool__lua_heap *h = ud;
  if (nsize == 0) {
    if (ptr)
      release(h, ptr, osize);
    return NULL;
  }
  if (ptr == NULL)
    return alloc_new(h, nsize);
  if (nsize <= osize)
    return shrink(h, ptr, osize, nsize);
  return grow(h, ptr, osize, nsize);
}

/* ---- accounts ---- */

/* Frees the numbers of closed accounts for new ones. A small block still
 * tagged with one is tagged with the account it counts for now; a large
 * block cannot be found, and once its number serves another account it
 * counts as the engine's (see owner_account): its bytes move there now. */
static void sweep(spool__lua_heap *h) {
  for (slab *s = h->slabs; s; s = s->next)
    for (size_t g = SLAB_FIRST / GRAIN; g < GRAINS; g++)
      if (h->acct[s->tag[g]].state == CLOSED)
        s->tag[g] = (uint16_t)resolve(h, s->tag[g]);
  for (int id = h->naccounts - 1; id > 0; id--) { /* low numbers first */
    account *a = &h->acct[id];
    if (a->state != CLOSED)
      continue;
    int now = resolve(h, id);
    if (now > 0) {
      h->acct[now].used -= a->large;
      h->acct[0].used += a->large;
    }
    a->large = 0;
  }
  for (int id = h->naccounts - 1; id > 0; id--)
    if (h->acct[id].state == CLOSED) {
      h->acct[id].state = FREE;
      h->free_accounts[h->nfree++] = id;
    }
  h->nclosed = 0;
}

int spool__lua_heap_account_open(spool__lua_heap *h, size_t limit) {
  int id;
  if (h->nfree == 0 && h->naccounts == MAX_ACCOUNTS && h->nclosed > 0)
    sweep(h);
  if (h->nfree > 0) {
    id = h->free_accounts[--h->nfree];
  } else if (h->naccounts < MAX_ACCOUNTS) {
    if (h->naccounts % 64 == 0 && grow_accounts(h, h->naccounts + 64) != 0)
      return 0;
    id = h->naccounts++;
    h->acct[id].epoch = 0;
  } else {
    return 0;
  }
  account *a = &h->acct[id];
  uint32_t epoch = a->epoch + 1;
  memset(a, 0, sizeof *a);
  a->epoch = epoch;
  a->limit = limit;
  a->state = OPEN;
  return id;
}

void spool__lua_heap_account_close(spool__lua_heap *h, int id, int heir) {
  if (id <= 0 || id >= h->naccounts || h->acct[id].state != OPEN)
    return;
  account *a = &h->acct[id];
  if (heir <= 0 || heir >= h->naccounts || heir == id ||
      h->acct[heir].state != OPEN)
    heir = 0;
  h->acct[heir].used += a->used;
  a->used = 0;
  a->heir = heir;
  a->heir_epoch = h->acct[heir].epoch;
  a->state = CLOSED;
  h->nclosed++;
  if (h->current == id)
    h->current = 0;
}

void spool__lua_heap_use(spool__lua_heap *h, int id) {
  h->current =
      id > 0 && id < h->naccounts && h->acct[id].state == OPEN ? id : 0;
}

size_t spool__lua_heap_used(const spool__lua_heap *h, int id) {
  return id >= 0 && id < h->naccounts ? h->acct[id].used : 0;
}

size_t spool__lua_heap_limit(const spool__lua_heap *h, int id) {
  return id >= 0 && id < h->naccounts ? h->acct[id].limit : 0;
}

int spool__lua_heap_refused(const spool__lua_heap *h, int id) {
  return id >= 0 && id < h->naccounts ? h->acct[id].refused : 0;
}

void spool__lua_heap_forget_refusal(spool__lua_heap *h, int id) {
  if (id >= 0 && id < h->naccounts)
    h->acct[id].refused = 0;
}

void spool__lua_heap_set_cap(spool__lua_heap *h, size_t cap) {
  h->cap = cap;
}

size_t spool__lua_heap_cap(const spool__lua_heap *h) {
  return h->cap;
}

size_t spool__lua_heap_total(const spool__lua_heap *h) {
  return h->total;
}

void spool__lua_heap_set_owner(spool__lua_heap *h, void *owner) {
  h->owner = owner;
}

void *spool__lua_heap_owner(const spool__lua_heap *h) {
  return h->owner;
}
