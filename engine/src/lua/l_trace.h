/*
 * l_trace.h: a span as the Lua bindings hold it (private to l_trace.c,
 * which makes and ends spans, and l_trace_encode.c, which writes them as
 * OTLP JSON). A span is a full userdata: its ids in binary, its times; its
 * name, events and links in its user values 1, 2 and 3.
 */
#ifndef SPOOL_L_TRACE_H
#define SPOOL_L_TRACE_H

#include <lua.h>

#include "base/buf.h"

#define SPOOL__SPAN_META "spool.span"

typedef struct spool__span {
  unsigned char trace[16], id[8], parent[8];
  long long start, finish; /* ns since the epoch; finish 0: when it ends */
  unsigned char has_parent, remote, sampled, kind;
} spool__span;

/* core.span_schema(names) -> schema: attribute names, encoded once. */
int spool__l_span_schema(lua_State *L);
void spool__open_span_schema(lua_State *L);

/*
 * Writes span `sp` (whose userdata is at index 1 of L) as one OTLP JSON
 * Span object into b: the status ERROR with the string at err_idx (if it
 * is one) as its message, the attributes the schema at schema_idx names
 * with the values from schema_idx + 1 to top, its events and links.
 * `limit`: the most bytes of one string value (0: none). 0, or -1 when out
 * of memory; raises a Lua error for a bad argument.
 */
int spool__span_encode(lua_State *L, const spool__span *sp, long long finish,
                       int err_idx, int schema_idx, int top, size_t limit,
                       spool__buf *b);

#endif
