/*
 * l_wire.c: Chat Completions' replies read (codec/chat_reply.c) and
 * requests written in C, so a step builds the reply spool keeps and no
 * table for the rest of the document, and writes each message once. (The
 * Anthropic Messages API's: l_wire_anthropic.c; the Responses API's:
 * l_wire_responses.c; with the same scratch.)
 *
 *   core.chat_reply(body) -> reply | nil
 *     reply = { id, text, finish_reason, tool_calls = { { id, name,
 *     arguments } }, usage = { input_tokens, output_tokens, total_tokens,
 *     cached_tokens, reasoning_tokens } }, as
 *     spool.model.providers.openai's parse makes it; nil when the body is
 *     not of the common shape (that parse reads it then)
 *   core.chat_body(model, system, messages, tools, json, temperature,
 *     max_tokens, stream[, kept]) -> the JSON body of a chat request, byte
 *     for byte what spool.model.providers.openai's Lua writer makes of the
 *     same (tools: their wire form, a json.raw, or nil); raises on a value
 *     it does not take, which that writer then names. kept: a table of
 *     messages whose OpenAI form a caller keeps from one request to the
 *     next (message -> false, until the first request writes it): a
 *     thread's messages are each written once, not at every step
 *
 * Both work in buffers kept between calls, outside the Lua heap: they are
 * bounded (a body by 64 MiB, as json.encode's text; a reply's calls by
 * codec/chat_reply.c), given back after a call that grew them past a MiB
 * however it ended (the scratch is closed as the call returns or
 * raises), and never used by two calls at once (a call made meanwhile,
 * by a finalizer or an __index, gets nil or an error, and the Lua reader
 * or writer).
 */
#include <string.h>

#include "codec/json.h"
#include "lua/wire.h"

#define SCRATCH_MT "spool.wire.scratch"

/* The JSON text a request may be (as json.encode's). */
#define MAX_BODY (64u << 20)
/* Buffers bigger than this are not kept for the next call. */
#define KEEP_BYTES (1u << 20)

typedef spool__wire_scratch scratch;

static int scratch_gc(lua_State *L) {
  scratch *s = luaL_checkudata(L, 1, SCRATCH_MT);
  spool__chat_reply_free(&s->reply);
  spool__anthropic_reply_free(&s->anthropic);
  spool__responses_reply_free(&s->responses);
  spool__stream_event_free(&s->event);
  spool__buf_free(&s->parse);
  spool__buf_free(&s->body);
  return 0;
}

/* The scratch is free again, and keeps no big buffer. */
static void scratch_release(scratch *s) {
  s->busy = 0;
  if (s->reply.text.cap > KEEP_BYTES ||
      s->reply.cap * sizeof *s->reply.calls > KEEP_BYTES)
    spool__chat_reply_free(&s->reply);
  if (s->anthropic.text.cap > KEEP_BYTES ||
      s->anthropic.said.cap > KEEP_BYTES ||
      s->anthropic.cap * sizeof *s->anthropic.calls > KEEP_BYTES)
    spool__anthropic_reply_free(&s->anthropic);
  if (s->responses.text.cap > KEEP_BYTES ||
      s->responses.said.cap > KEEP_BYTES ||
      s->responses.item.cap > KEEP_BYTES ||
      s->responses.cap * sizeof *s->responses.calls > KEEP_BYTES)
    spool__responses_reply_free(&s->responses);
  if (s->event.text.cap > KEEP_BYTES)
    spool__stream_event_free(&s->event);
  if (s->parse.cap > KEEP_BYTES)
    spool__buf_free(&s->parse);
  if (s->body.cap > KEEP_BYTES)
    spool__buf_free(&s->body);
}

/* __close, as a call returns or raises. */
static int scratch_close(lua_State *L) {
  scratch_release(luaL_checkudata(L, 1, SCRATCH_MT));
  lua_pushnil(L);
  lua_setiuservalue(L, 1, 1); /* its owner */
  return 0;
}

/* Was the scratch left by a call on a coroutine that died of an error?
 * Lua closes a dead coroutine's to-be-closed slots only when it is closed
 * (coroutine.close, lua_closethread), which nothing promises: an error in
 * a run's coroutine, or in one an agent resumed, would hold the scratch
 * for good. stack: -> (nothing) */
static int left_by_dead(lua_State *L, int idx) {
  lua_getiuservalue(L, idx, 1);
  lua_State *owner = lua_tothread(L, -1);
  lua_pop(L, 1);
  return owner && lua_status(owner) > LUA_YIELD;
}

scratch *spool__wire_body_begin(lua_State *L) {
  luaL_checktype(L, 3, LUA_TTABLE);
  size_t len = 0;
  const char *tools = NULL;
  if (!lua_isnil(L, 4) && (tools = spool__json_raw_text(L, 4, &len)) == NULL)
    luaL_argerror(L, 4, "tools must be a json.raw");
  scratch *s = spool__wire_take(L);
  if (s == NULL)
    luaL_error(L, "a request body is being written already");
  spool__buf_clear(&s->body);
  s->tools = tools;
  s->tools_len = len;
  return s;
}

int spool__wire_body_end(lua_State *L, scratch *s) {
  spool__buf *b = &s->body;
  if (s->tools) {
    SPOOL__WIRE_PUT(L, b, ",\"tools\":");
    spool__wire_put(L, b, s->tools, s->tools_len);
  }
  SPOOL__WIRE_PUT(L, b, "}");
  lua_pushlstring(L, b->data, b->len);
  return 1;
}

scratch *spool__wire_take(lua_State *L) {
  int at = lua_upvalueindex(1);
  scratch *s = lua_touserdata(L, at);
  if (s->busy) {
    /* In use: by a call that is still on some stack (this one's, through
     * a metamethod, or a coroutine's that resumed this one). */
    if (!left_by_dead(L, at))
      return NULL;
    scratch_release(s);
  }
  s->busy = 1;
  lua_pushthread(L);
  lua_setiuservalue(L, at, 1);
  lua_pushvalue(L, at);
  lua_toclose(L, -1);
  return s;
}

spool__wire_scratch *spool__wire_read(lua_State *L, spool__wire_reader read) {
  size_t n;
  const char *body = luaL_checklstring(L, 1, &n);
  scratch *s = spool__wire_take(L);
  int rc = s ? read(s, body, n) : 1;
  if (rc < 0)
    luaL_error(L, "not enough memory");
  if (rc > 0) {
    lua_pushnil(L);
    return NULL;
  }
  return s;
}

void spool__wire_span(lua_State *L, const spool__buf *text,
                      const spool__chat_span *s) {
  lua_pushlstring(L, text->data + s->at, s->len);
}

void spool__wire_set(lua_State *L, const spool__buf *text,
                     const spool__chat_span *s, const char *field) {
  if (s->set) {
    spool__wire_span(L, text, s);
    lua_setfield(L, -2, field);
  }
}

void spool__wire_calls(lua_State *L, const spool__buf *text,
                       const spool__chat_call *calls, size_t n,
                       const char *id_fmt, const char *no_arguments) {
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    const spool__chat_call *c = &calls[i];
    lua_createtable(L, 0, 3);
    if (c->id.set || id_fmt) {
      if (c->id.set)
        spool__wire_span(L, text, &c->id);
      else
        lua_pushfstring(L, id_fmt, (int)(i + 1));
      lua_setfield(L, -2, "id");
    }
    spool__wire_set(L, text, &c->name, "name");
    if (c->arguments.set || no_arguments) {
      if (c->arguments.set)
        spool__wire_span(L, text, &c->arguments);
      else
        lua_pushstring(L, no_arguments);
      lua_setfield(L, -2, "arguments");
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "tool_calls");
}

static void push_span(lua_State *L, const spool__chat_reply *r,
                      const spool__chat_span *s) {
  spool__wire_span(L, &r->text, s);
}

static void set_kind(lua_State *L, const spool__chat_reply *r, int kind,
                     const spool__chat_span *s, const char *field) {
  if (kind == SPOOL__CHAT_ABSENT)
    return;
  if (kind == SPOOL__CHAT_NULL)
    lua_pushlightuserdata(L, NULL); /* json.null */
  else
    push_span(L, r, s);
  lua_setfield(L, -2, field);
}

static const char *const COUNT_NAMES[SPOOL__CHAT_COUNTS] = {
    "input_tokens", "output_tokens", "total_tokens", "cached_tokens",
    "reasoning_tokens"};

void spool__wire_chat_usage(lua_State *L, const spool__chat_reply *r) {
  lua_createtable(L, 0, SPOOL__CHAT_COUNTS);
  for (int i = 0; i < SPOOL__CHAT_COUNTS; i++) {
    if (r->has_count[i])
      lua_pushinteger(L, (lua_Integer)r->count[i]);
    else if (i <= SPOOL__CHAT_TOTAL)
      lua_pushinteger(L, 0);
    else
      continue;
    lua_setfield(L, -2, COUNT_NAMES[i]);
  }
}

static int read_chat(scratch *s, const char *body, size_t n) {
  return spool__chat_reply_read(&s->reply, body, n, &s->parse);
}

static int l_chat_reply(lua_State *L) {
  scratch *s = spool__wire_read(L, read_chat);
  if (s == NULL)
    return 1;
  spool__chat_reply *r = &s->reply;
  lua_createtable(L, 0, 5);
  set_kind(L, r, r->id_kind, &r->id, "id");
  /* A refusal comes with no content: its text is the reply, and the
   * model declined. */
  int refused = (!r->content.set || r->content.len == 0) && r->refusal.set &&
                r->refusal.len > 0;
  if (refused) {
    push_span(L, r, &r->refusal);
    lua_setfield(L, -2, "text");
    lua_pushliteral(L, "content_filter");
    lua_setfield(L, -2, "finish_reason");
  } else {
    if (r->content.set) {
      push_span(L, r, &r->content);
      lua_setfield(L, -2, "text");
    }
    set_kind(L, r, r->finish_kind, &r->finish, "finish_reason");
  }
  spool__wire_calls(L, &r->text, r->calls, r->ncalls, "call_%d", "{}");
  spool__wire_chat_usage(L, r);
  lua_setfield(L, -2, "usage");
  return 1;
}

/* ---- the chat request ---- */

static void nomem(lua_State *L) {
  luaL_error(L, "not enough memory");
}

/* (Every piece of the body passes here first.) */
static void check_room(lua_State *L, const spool__buf *b, size_t more) {
  if (more > MAX_BODY || b->len > MAX_BODY - more)
    luaL_error(L, "the request would be larger than 64 MiB");
}

void spool__wire_put(lua_State *L, spool__buf *b, const char *s, size_t n) {
  check_room(L, b, n);
  if (spool__buf_add(b, s, n) != 0)
    nomem(L);
}

#define PUT SPOOL__WIRE_PUT

void spool__wire_key(lua_State *L, spool__buf *b, const char *member,
                     size_t len, int *first) {
  spool__wire_put(L, b, member + *first, len - (size_t)*first);
  *first = 0;
}
#define PUT_KEY SPOOL__WIRE_KEY

/* How deep in the body its parts' values are, as json.encode counts
 * (its limit on nesting holds for the whole body): the body's members, a
 * message's, a tool call's, its function's. */
enum { IN_BODY = 1, IN_MESSAGE = 3, IN_CALL = 5, IN_FUNCTION = 6 };

void spool__wire_value(lua_State *L, spool__buf *b, int idx, int depth) {
  if (lua_type(L, idx) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    check_room(L, b, n);
    int rc = spool__json_write_string(b, s, n);
    if (rc == -2)
      luaL_error(L, "invalid UTF-8 in a string");
    if (rc != 0)
      nomem(L);
  } else {
    spool__json_append(L, idx, b, depth);
  }
  check_room(L, b, 0);
}

void spool__wire_field(lua_State *L, spool__buf *b, int t, const char *field,
                       const char *member, size_t len, int *first, int depth) {
  if (lua_getfield(L, t, field) != LUA_TNIL) {
    spool__wire_key(L, b, member, len, first);
    spool__wire_value(L, b, -1, depth);
  }
  lua_pop(L, 1);
}
#define PUT_FIELD SPOOL__WIRE_FIELD

lua_Integer spool__wire_len(lua_State *L, int idx, const char *what) {
  lua_Integer n = luaL_len(L, idx);
  if (n > SPOOL__WIRE_MAX_LIST)
    luaL_error(L, "%s: more than %d of them", what, SPOOL__WIRE_MAX_LIST);
  int past = lua_geti(L, idx, n + 1) != LUA_TNIL;
  lua_pop(L, 1);
  if (past)
    luaL_error(L, "%s: an element past the list's length", what);
  return n;
}

int spool__wire_forms(lua_State *L, int kept, const void *key) {
  if (!kept)
    return 0;
  if (lua_rawgetp(L, kept, key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, kept, key);
  }
  return lua_gettop(L);
}

int spool__wire_message(lua_State *L, spool__buf *b, int m, int fn, int kept,
                        int forms, spool__wire_parts put) {
  if (forms) {
    lua_pushvalue(L, m);
    if (lua_rawget(L, forms) == LUA_TSTRING) {
      size_t len;
      const char *form = lua_tolstring(L, -1, &len);
      spool__wire_put(L, b, form, len);
      lua_pop(L, 1);
      return len > 0;
    }
    lua_pop(L, 1);
  }
  size_t at = b->len;
  int parts = put(L, b, m, fn);
  if (forms) {
    lua_pushvalue(L, m);
    int keep = lua_rawget(L, kept) != LUA_TNIL;
    lua_pop(L, 1);
    if (keep) {
      lua_pushvalue(L, m);
      lua_pushlstring(L, b->data + at, b->len - at);
      lua_rawset(L, forms);
    }
  }
  return parts > 0;
}

/* An assistant message's tool calls, at stack index tc, as
 * [{"function": {"arguments", "name"}, "id", "type": "function"}]. */
static void put_calls(lua_State *L, spool__buf *b, int tc, lua_Integer n) {
  PUT(L, b, "[");
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_geti(L, tc, i) != LUA_TTABLE)
      luaL_error(L, "tool call %d is not a table", (int)i);
    int c = lua_gettop(L), first = 0, inner = 1;
    if (i > 1)
      PUT(L, b, ",");
    PUT(L, b, "{\"function\":{");
    PUT_FIELD(L, b, c, "arguments", &inner, IN_FUNCTION);
    PUT_FIELD(L, b, c, "name", &inner, IN_FUNCTION);
    PUT(L, b, "}");
    PUT_FIELD(L, b, c, "id", &first, IN_CALL);
    PUT(L, b, ",\"type\":\"function\"}");
    lua_pop(L, 1);
  }
  PUT(L, b, "]");
}

/* One message of spool's chat form, at stack index m, in OpenAI's. */
static void put_message(lua_State *L, spool__buf *b, int m) {
  if (lua_type(L, m) != LUA_TTABLE)
    luaL_error(L, "a message is not a table");
  int first = 1;
  size_t len = 0;
  lua_getfield(L, m, "role");
  const char *role =
      lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : "";
#define ROLE_IS(lit) (len == sizeof lit - 1 && memcmp(role, lit, len) == 0)
  PUT(L, b, "{");
  if (ROLE_IS("assistant")) {
    PUT(L, b, "\"content\":");
    lua_getfield(L, m, "content");
    if (lua_toboolean(L, -1))
      spool__wire_value(L, b, -1, IN_MESSAGE);
    else
      PUT(L, b, "null");
    lua_pop(L, 1);
    PUT(L, b, ",\"role\":\"assistant\"");
    int t = lua_getfield(L, m, "tool_calls");
    if (t != LUA_TNIL && t != LUA_TTABLE && lua_toboolean(L, -1))
      luaL_error(L, "tool_calls is not a table");
    lua_Integer n = t == LUA_TTABLE ? luaL_len(L, -1) : 0;
    if (n > 0) {
      PUT(L, b, ",\"tool_calls\":");
      put_calls(L, b, lua_gettop(L), n);
    }
    lua_pop(L, 1);
  } else if (ROLE_IS("tool")) {
    PUT_FIELD(L, b, m, "content", &first, IN_MESSAGE);
    PUT_KEY(L, b, ",\"role\":", &first);
    PUT(L, b, "\"tool\"");
    PUT_FIELD(L, b, m, "tool_call_id", &first, IN_MESSAGE);
  } else {
    PUT_FIELD(L, b, m, "content", &first, IN_MESSAGE);
    PUT_FIELD(L, b, m, "role", &first, IN_MESSAGE);
  }
#undef ROLE_IS
  PUT(L, b, "}");
  lua_pop(L, 1); /* the role */
}

/* A message whose form `kept` (a table: message -> false | its form)
 * keeps: the form written before, or the message written now and its
 * form kept. A message it does not hold (nil) is written and not kept.
 * stack: -> (its entry) */
static void put_kept_message(lua_State *L, spool__buf *b, int m, int kept) {
  lua_pushvalue(L, m);
  int t = lua_rawget(L, kept);
  if (t == LUA_TSTRING) {
    size_t len;
    const char *form = lua_tolstring(L, -1, &len);
    spool__wire_put(L, b, form, len);
    return;
  }
  size_t at = b->len;
  put_message(L, b, m);
  if (t == LUA_TBOOLEAN) {
    lua_pushvalue(L, m);
    lua_pushlstring(L, b->data + at, b->len - at);
    lua_rawset(L, kept);
  }
}

/* Arguments: 1 model, 2 system, 3 messages, 4 tools (json.raw), 5 json,
 * 6 temperature, 7 max_tokens, 8 stream, 9 kept (messages' forms kept
 * from step to step, put_kept_message). Keys go in sorted order, as
 * json.encode writes them. */
static int l_chat_body(lua_State *L) {
  lua_settop(L, 9);
  scratch *s = spool__wire_body_begin(L);
  spool__buf *b = &s->body;
  int first = 1;
  PUT(L, b, "{");
  if (!lua_isnil(L, 7)) {
    PUT_KEY(L, b, ",\"max_tokens\":", &first);
    spool__wire_value(L, b, 7, IN_BODY);
  }
  PUT_KEY(L, b, ",\"messages\":[", &first);
  int any = 0;
  if (lua_toboolean(L, 2) &&
      !(lua_type(L, 2) == LUA_TSTRING && lua_rawlen(L, 2) == 0)) {
    PUT(L, b, "{\"content\":");
    spool__wire_value(L, b, 2, IN_MESSAGE);
    PUT(L, b, ",\"role\":\"system\"}");
    any = 1;
  }
  int kept = lua_type(L, 9) == LUA_TTABLE ? 9 : 0;
  lua_Integer n = luaL_len(L, 3);
  for (lua_Integer i = 1; i <= n; i++) {
    if (any)
      PUT(L, b, ",");
    any = 1;
    lua_geti(L, 3, i);
    int m = lua_gettop(L);
    if (kept)
      put_kept_message(L, b, m, kept);
    else
      put_message(L, b, m);
    lua_settop(L, m - 1);
  }
  PUT(L, b, "]");
  if (!lua_isnil(L, 1)) {
    PUT_KEY(L, b, ",\"model\":", &first);
    spool__wire_value(L, b, 1, IN_BODY);
  }
  if (lua_toboolean(L, 5))
    PUT(L, b, ",\"response_format\":{\"type\":\"json_object\"}");
  if (lua_toboolean(L, 8))
    PUT(L, b, ",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
  if (!lua_isnil(L, 6)) {
    PUT(L, b, ",\"temperature\":");
    spool__wire_value(L, b, 6, IN_BODY);
  }
  return spool__wire_body_end(L, s);
}

void spool__open_wire(lua_State *L) {
  static const luaL_Reg methods[] = {{NULL, NULL}};
  spool__class(L, SCRATCH_MT, methods, scratch_gc, scratch_close);
  lua_pop(L, 1);
  scratch *s = lua_newuserdatauv(L, sizeof *s, 1); /* 1: its owner */
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, SCRATCH_MT);
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, l_chat_reply, 1);
  lua_setfield(L, -3, "chat_reply");
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, l_chat_body, 1);
  lua_setfield(L, -3, "chat_body");
  spool__open_wire_stream(L, lua_gettop(L));
  spool__open_wire_anthropic(L, lua_gettop(L));
  spool__open_wire_responses(L, lua_gettop(L));
  lua_pop(L, 1);
}
