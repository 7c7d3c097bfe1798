/*
 * lua_heap.c: size-class free lists for the Lua state (see lua_heap.h).
 * No Lua here: only the lua_Alloc contract (ptr NULL means a new block and
 * osize is then a type tag; nsize 0 means free; otherwise realloc, which
 * returns NULL, the old block intact, when memory runs out).
 *
 * Under AddressSanitizer, or with SPOOL_LUA_MALLOC set in the environment
 * (the valgrind tests set it), every block goes to malloc, so the checker
 * still sees each Lua object on its own. Not by default under valgrind:
 * callgrind's counts should be those of the real allocator.
 */
#include "lua_heap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

/* A slab's blocks start GRAIN bytes in, past its link: on a GRAIN
 * boundary, as malloc's blocks are. */
typedef struct slab {
  struct slab *next;
} slab;

struct spool__lua_heap {
  int pass_through; /* every block to malloc */
  void *free_list[CLASSES];
  char *bump, *end; /* the newest slab's unused part */
  slab *slabs;
};

spool__lua_heap *spool__lua_heap_new(void) {
  spool__lua_heap *h = calloc(1, sizeof *h);
  if (h)
    h->pass_through = PASS_THROUGH || getenv("SPOOL_LUA_MALLOC") != NULL;
  return h;
}

void spool__lua_heap_free(spool__lua_heap *h) {
  if (h == NULL)
    return;
  while (h->slabs) {
    slab *next = h->slabs->next;
    free(h->slabs);
    h->slabs = next;
  }
  free(h);
}

static int is_small(const spool__lua_heap *h, size_t n) {
  return !h->pass_through && n <= SMALL_MAX;
}

static int class_of(size_t n) {
  return (int)((n + GRAIN - 1) / GRAIN) - 1;
}

static void *take(spool__lua_heap *h, int c) {
  void *p = h->free_list[c];
  if (p) {
    memcpy(&h->free_list[c], p, sizeof p);
    return p;
  }
  size_t size = (size_t)(c + 1) * GRAIN;
  if ((size_t)(h->end - h->bump) < size) {
    slab *s = malloc(SLAB_BYTES);
    if (s == NULL)
      return NULL;
    s->next = h->slabs;
    h->slabs = s;
    h->bump = (char *)s + GRAIN;
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

/* A new block of n bytes (n > 0). */
static void *block(spool__lua_heap *h, size_t n) {
  return is_small(h, n) ? take(h, class_of(n)) : malloc(n);
}

static void release(spool__lua_heap *h, void *p, size_t n) {
  if (is_small(h, n))
    give_back(h, p, class_of(n));
  else
    free(p);
}

void *spool__lua_heap_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  spool__lua_heap *h = ud;
  if (nsize == 0) {
    if (ptr)
      release(h, ptr, osize);
    return NULL;
  }
  if (ptr == NULL)
    return block(h, nsize);
  int small_before = is_small(h, osize), small_after = is_small(h, nsize);
  if (small_before && small_after && class_of(osize) == class_of(nsize))
    return ptr;
  if (!small_before && !small_after)
    return realloc(ptr, nsize);
  void *moved = block(h, nsize);
  if (moved == NULL)
    return NULL;
  memcpy(moved, ptr, osize < nsize ? osize : nsize);
  release(h, ptr, osize);
  return moved;
}
