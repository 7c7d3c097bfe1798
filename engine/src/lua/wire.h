/*
 * wire.h: what the providers' request writers and reply readers in C
 * share (l_wire.c, Chat Completions; l_wire_anthropic.c, Anthropic
 * Messages; l_wire_responses.c, the Responses API): one scratch of buffers kept
 * between calls, outside the Lua heap, and the pieces a body is written with,
 * each as json.encode writes it.
 */
#ifndef SPOOL_LUA_WIRE_H
#define SPOOL_LUA_WIRE_H

#include "base/buf.h"
#include "codec/anthropic_reply.h"
#include "codec/chat_reply.h"
#include "codec/responses_reply.h"
#include "codec/stream_event.h"
#include "spool_int.h"

typedef struct spool__wire_scratch {
  spool__chat_reply reply;
  spool__anthropic_reply anthropic;
  spool__responses_reply responses;
  spool__stream_event event;
  spool__buf parse;
  spool__buf body;
  const char *tools; /* the body's tools, a json.raw's text, or NULL */
  size_t tools_len;
  int busy;
} spool__wire_scratch;

/* The scratch for this call (the C closure's first upvalue), marked busy
 * and closed as the call ends; NULL if a call is using it already (one
 * made meanwhile, by a finalizer or an __index). */
spool__wire_scratch *spool__wire_take(lua_State *L);

/* A request body's start and end, for every writer: argument 3 (the
 * messages) must be a table and argument 4 (the tools' wire form) a
 * json.raw or nil; begin takes the scratch and clears its body, and
 * raises when the scratch is in use. end writes the tools, the last of
 * the sorted keys, and the closing brace, and pushes the body (returns
 * 1). */
spool__wire_scratch *spool__wire_body_begin(lua_State *L);
int spool__wire_body_end(lua_State *L, spool__wire_scratch *s);

/* Reads the reply body, argument 1, with `read` (one format's reader,
 * into its part of the scratch): the scratch, or NULL with nil pushed
 * when the body is not of the shape the reader takes (or the scratch is
 * in use); raises when out of memory. */
typedef int (*spool__wire_reader)(spool__wire_scratch *s, const char *body,
                                  size_t n);
spool__wire_scratch *spool__wire_read(lua_State *L, spool__wire_reader read);

/* A string a reply reader kept: pushed; set as t[field] (t at the top)
 * if it was there. */
void spool__wire_span(lua_State *L, const spool__buf *text,
                      const spool__chat_span *s);
void spool__wire_set(lua_State *L, const spool__buf *text,
                     const spool__chat_span *s, const char *field);

/* A Chat Completions usage object as spool counts it (its input, output
 * and total tokens, 0 when not given; its cached and reasoning tokens when
 * given), pushed. */
void spool__wire_chat_usage(lua_State *L, const spool__chat_reply *r);

/* A reply's calls, as an array of { id, name, arguments } set as
 * t.tool_calls (t at the top). A call without an id gets the one id_fmt
 * makes of its number ("call_%d"), or none (NULL); one without arguments
 * gets `no_arguments`, or none (NULL). */
void spool__wire_calls(lua_State *L, const spool__buf *text,
                       const spool__chat_call *calls, size_t n,
                       const char *id_fmt, const char *no_arguments);

/* Appends s[0..n) to the body, raising past its bound (64 MiB, as
 * json.encode's text) or when out of memory. */
void spool__wire_put(lua_State *L, spool__buf *b, const char *s, size_t n);
#define SPOOL__WIRE_PUT(L, b, lit) spool__wire_put(L, b, lit, sizeof lit - 1)

/* An object member's `,"key":` (the literal `member`), the comma left out
 * for its first (*first, which this clears). */
void spool__wire_key(lua_State *L, spool__buf *b, const char *member,
                     size_t len, int *first);
#define SPOOL__WIRE_KEY(L, b, member, first)                                   \
  spool__wire_key(L, b, member, sizeof member - 1, first)

/* The value at idx, `depth` containers deep in the body, as json.encode
 * writes it. */
void spool__wire_value(lua_State *L, spool__buf *b, int idx, int depth);

/* Member `member` (the literal `,"key":`) with t[field] as its value, if
 * that is not nil; the comma left out for the object's first (*first,
 * which this clears). */
void spool__wire_field(lua_State *L, spool__buf *b, int t, const char *field,
                       const char *member, size_t len, int *first, int depth);
#define SPOOL__WIRE_FIELD(L, b, t, field, first, depth)                        \
  spool__wire_field(L, b, t, field,                                            \
                    ",\"" field "\":", sizeof ",\"" field "\":" - 1, first,    \
                    depth)

/* How far ipairs walks the list at idx (a message's list, a tool call's):
 * at most its length, luaL_len's. Raises (and the Lua writer, whose
 * ipairs the count hook meters, writes it) when an element lies past
 * that, as an __index can make them without end, or when the length is
 * past any body's (SPOOL__WIRE_MAX_LIST). The caller stops at the first
 * nil too. */
#define SPOOL__WIRE_MAX_LIST (1 << 20)
lua_Integer spool__wire_len(lua_State *L, int idx, const char *what);

/* Kept forms: a format's forms of a thread's messages, kept from one
 * request to the next, so each message is written once. `kept` (a stack
 * index, 0: none) is core.chat_body's table, message -> false | its
 * OpenAI form, which says what may be kept; another format keeps its
 * forms beside those, in kept[key]. spool__wire_forms pushes that table
 * (made if need be) and answers its index, or answers 0 without kept. */
int spool__wire_forms(lua_State *L, int kept, const void *key);

/* Writes a message (at m) in one format: put(L, b, m, fn) writes its
 * parts and answers how many. */
typedef int (*spool__wire_parts)(lua_State *L, spool__buf *b, int m, int fn);

/* The message at m: its form kept in `forms`, or written now by put, and
 * kept there if `kept` holds the message. Whether it had any part. */
int spool__wire_message(lua_State *L, spool__buf *b, int m, int fn, int kept,
                        int forms, spool__wire_parts put);

/* The scratch at index `scratch` serves these too; their functions go in
 * the table just below it. */
void spool__open_wire_stream(lua_State *L, int scratch);
void spool__open_wire_anthropic(lua_State *L, int scratch);
void spool__open_wire_responses(lua_State *L, int scratch);

#endif
