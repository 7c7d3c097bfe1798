/*
 * lua_heap.h: the engine's Lua state allocates from here. Lua's objects
 * are small (a table is 56 bytes, most strings under 64) and a step makes
 * hundreds of them; Lua also says how big a block is when it frees it, so
 * small blocks need no header and no search: each size class keeps a free
 * list, refilled from 64 KiB slabs. Larger blocks go to malloc.
 *
 * One heap per Lua state, used from that state's thread only (no locks).
 * Freed small blocks stay on their lists for reuse until the heap is
 * freed; they are not given back to the system before.
 */
#ifndef SPOOL_LUA_HEAP_H
#define SPOOL_LUA_HEAP_H

#include <stddef.h>

typedef struct spool__lua_heap spool__lua_heap;

/* NULL when out of memory. */
spool__lua_heap *spool__lua_heap_new(void);
/* After lua_close of the state that used it; accepts NULL. */
void spool__lua_heap_free(spool__lua_heap *h);
/* A lua_Alloc: the heap is `ud`. */
void *spool__lua_heap_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

#endif
