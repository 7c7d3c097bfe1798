/*
 * l_wire_stream.c: the events of streamed responses read in C, so most
 * build no table for their document; with the scratch of l_wire.c
 * (lua/wire.h).
 *
 *   core.chat_chunk(data, st) -> true, text | nil
 *     adds one chunk (an event's data) to st, the state of
 *     spool.model.providers.openai's stream reader, as that reader would:
 *     st.id (the first one), st.usage, st.text and st.refusal (lists of
 *     pieces), st.calls (a list of { id, name, arguments = { piece, ... }
 *     }) and st.finish_reason. text: the piece of text the chunk added,
 *     if any, for the caller to show (once the whole chunk is in st, where
 *     the Lua reader shows it before the chunk's calls and finish reason:
 *     only an on_text that raises could tell). nil, st as it was, when the
 *     chunk is not of the common shape (that reader reads it then, and
 *     every chunk after it: this one takes st.calls as it made them,
 *     without holes); raises, st as it was, when st has not its lists
 *   core.stream_event(data) -> type, index, delta, delta_type, text,
 *     partial_json | nil
 *     what the Anthropic and Responses stream readers look at first in an
 *     event (codec/stream_event.c): its type; its index, if a whole
 *     number; its delta if a string; or its delta object's type, text
 *     and partial_json, each if a string. nil when the event is not of a
 *     shape that reader takes (the stream reader decodes it whole then)
 */
#include "lua/wire.h"

static int read_chunk(spool__wire_scratch *s, const char *data, size_t n) {
  return spool__chat_chunk_read(&s->reply, data, n, &s->parse);
}

/* Appends the span to the list at `list`. */
static void append(lua_State *L, int list, const spool__buf *text,
                   const spool__chat_span *span) {
  spool__wire_span(L, text, span);
  lua_rawseti(L, list, (lua_Integer)lua_rawlen(L, list) + 1);
}

/* st[field], a list, pushed; its index. */
static int list_of(lua_State *L, const char *field) {
  if (lua_getfield(L, 2, field) != LUA_TTABLE)
    luaL_error(L, "core.chat_chunk: st.%s is not a table", field);
  return lua_gettop(L);
}

/* Sets t[field] to the span, unless t has one. */
static void set_first(lua_State *L, int t, const char *field,
                      const spool__buf *text, const spool__chat_span *span) {
  if (lua_getfield(L, t, field) == LUA_TNIL) {
    spool__wire_span(L, text, span);
    lua_setfield(L, t, field);
  }
  lua_pop(L, 1);
}

/* Each call delta's call, numbered from 1: one st.calls has, or the next
 * one. False when one names a call past that (the Lua reader leaves a
 * hole there). */
static int number_calls(spool__chat_reply *r, lua_Integer have) {
  for (size_t i = 0; i < r->ncalls; i++) {
    spool__chat_call *c = &r->calls[i];
    lua_Integer at = c->has_index ? (lua_Integer)c->index + 1 : have + 1;
    if (at > have + 1)
      return 0;
    if (at == have + 1)
      have++;
    c->index = at;
  }
  return 1;
}

static void add_calls(lua_State *L, int calls, const spool__chat_reply *r) {
  for (size_t i = 0; i < r->ncalls; i++) {
    const spool__chat_call *c = &r->calls[i];
    if (lua_rawgeti(L, calls, (lua_Integer)c->index) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_createtable(L, 0, 3);
      lua_newtable(L);
      lua_setfield(L, -2, "arguments");
      lua_pushvalue(L, -1);
      lua_rawseti(L, calls, (lua_Integer)c->index);
    }
    int call = lua_gettop(L);
    if (c->id.set)
      set_first(L, call, "id", &r->text, &c->id);
    if (c->name.set)
      set_first(L, call, "name", &r->text, &c->name);
    if (c->arguments.set) {
      if (lua_getfield(L, call, "arguments") != LUA_TTABLE)
        luaL_error(L, "core.chat_chunk: a call's arguments is not a table");
      append(L, lua_gettop(L), &r->text, &c->arguments);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
}

static int l_chat_chunk(lua_State *L) {
  luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  spool__wire_scratch *s = spool__wire_read(L, read_chunk);
  if (s == NULL)
    return 1;
  spool__chat_reply *r = &s->reply;
  /* st's lists, checked before it changes */
  int text = list_of(L, "text"), refusal = list_of(L, "refusal");
  int calls = list_of(L, "calls");
  if (!number_calls(r, (lua_Integer)lua_rawlen(L, calls))) {
    lua_pushnil(L);
    return 1;
  }
  if (r->id_kind != SPOOL__CHAT_ABSENT) {
    if (lua_getfield(L, 2, "id") == LUA_TNIL) {
      if (r->id_kind == SPOOL__CHAT_NULL)
        lua_pushlightuserdata(L, NULL); /* json.null */
      else
        spool__wire_span(L, &r->text, &r->id);
      lua_setfield(L, 2, "id");
    }
    lua_pop(L, 1);
  }
  if (r->usage_seen) {
    spool__wire_chat_usage(L, r);
    lua_setfield(L, 2, "usage");
  }
  int said = r->content.set && r->content.len > 0;
  if (said)
    append(L, text, &r->text, &r->content);
  if (r->refusal.set && r->refusal.len > 0)
    append(L, refusal, &r->text, &r->refusal);
  add_calls(L, calls, r);
  if (r->finish_kind == SPOOL__CHAT_STRING) {
    spool__wire_span(L, &r->text, &r->finish);
    lua_setfield(L, 2, "finish_reason");
  }
  lua_pushboolean(L, 1);
  if (said)
    spool__wire_span(L, &r->text, &r->content);
  else
    lua_pushnil(L);
  return 2;
}

static int read_event(spool__wire_scratch *s, const char *data, size_t n) {
  return spool__stream_event_read(&s->event, data, n, &s->parse);
}

/* The span, or nil when it was not set. */
static void push_set(lua_State *L, const spool__buf *text,
                     const spool__chat_span *span) {
  if (span->set)
    spool__wire_span(L, text, span);
  else
    lua_pushnil(L);
}

static int l_stream_event(lua_State *L) {
  spool__wire_scratch *s = spool__wire_read(L, read_event);
  if (s == NULL)
    return 1;
  const spool__stream_event *e = &s->event;
  if (!e->type.set) {
    lua_pushnil(L); /* its reader goes by the event's name */
    return 1;
  }
  spool__wire_span(L, &e->text, &e->type);
  if (e->has_index)
    lua_pushinteger(L, (lua_Integer)e->index);
  else
    lua_pushnil(L);
  push_set(L, &e->text, &e->delta);
  push_set(L, &e->text, &e->delta_type);
  push_set(L, &e->text, &e->delta_text);
  push_set(L, &e->text, &e->delta_json);
  return 6;
}

void spool__open_wire_stream(lua_State *L, int scratch) {
  lua_pushvalue(L, scratch);
  lua_pushcclosure(L, l_chat_chunk, 1);
  lua_setfield(L, scratch - 1, "chat_chunk");
  lua_pushvalue(L, scratch);
  lua_pushcclosure(L, l_stream_event, 1);
  lua_setfield(L, scratch - 1, "stream_event");
}
