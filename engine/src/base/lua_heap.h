/*
 * lua_heap.h: the engine's Lua state allocates from here. Lua's objects
 * are small (a table is 56 bytes, most strings under 64) and a step makes
 * hundreds of them; Lua also says how big a block is when it frees it, so
 * small blocks need no header and no search: each size class keeps a free
 * list, refilled from 64 KiB slabs. Larger blocks go to malloc.
 *
 * Accounts: every block belongs to the account that was current when it
 * was allocated (a run's, or the engine's, number 0), and is counted there
 * until it is freed, whoever frees it — the collector may free a run's
 * garbage while another run is current. So an account's count is what its
 * run holds now, and a limit on it bounds one run's memory without
 * blaming another. A small block's account is a 16-bit tag beside its
 * slab's blocks (an eighth of the slab); a large block carries it in a
 * header. Growth past an account's limit, or past the cap on the whole
 * heap, is refused (Lua then collects and retries, and raises a memory
 * error if it is still refused).
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

/* The cap on all blocks together, in bytes; 0 (the default) means none. */
void spool__lua_heap_set_cap(spool__lua_heap *h, size_t cap);
size_t spool__lua_heap_cap(const spool__lua_heap *h);
/* Bytes in use by all accounts together. */
size_t spool__lua_heap_total(const spool__lua_heap *h);

/* Opens an account holding at most `limit` bytes (0: no limit) and
 * returns its number (> 0), or 0 when none can be made (the caller then
 * runs on the engine's account). */
int spool__lua_heap_account_open(spool__lua_heap *h, size_t limit);
/* Closes an account: what its blocks still hold counts for `heir` (an open
 * account; 0, or one not open: the engine's) from now on. Accepts 0. */
void spool__lua_heap_account_close(spool__lua_heap *h, int account, int heir);
/* Makes `account` the one new blocks are charged to (0: the engine's). */
void spool__lua_heap_use(spool__lua_heap *h, int account);
/* Bytes an account's blocks hold now. */
size_t spool__lua_heap_used(const spool__lua_heap *h, int account);
size_t spool__lua_heap_limit(const spool__lua_heap *h, int account);

/* Why the account's last refused allocation was refused: its own limit
 * (the account's number, > 0), -1 for the heap's cap, 0 if none was since
 * spool__lua_heap_forget_refusal. */
int spool__lua_heap_refused(const spool__lua_heap *h, int account);
void spool__lua_heap_forget_refusal(spool__lua_heap *h, int account);

/* A pointer the heap keeps for its owner (the engine), for code that has
 * only the Lua state (lua_getallocf gives the heap). */
void spool__lua_heap_set_owner(spool__lua_heap *h, void *owner);
void *spool__lua_heap_owner(const spool__lua_heap *h);

#endif
