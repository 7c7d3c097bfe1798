/*
 * l_wire.c: the providers' replies read in C (codec/chat_reply.c), so a
 * step builds the reply spool keeps and no table for the rest of the
 * document.
 *
 *   core.chat_reply(body) -> reply | nil
 *     reply = { id, text, finish_reason, tool_calls = { { id, name,
 *     arguments } }, usage = { input_tokens, output_tokens, total_tokens,
 *     cached_tokens, reasoning_tokens } }, as
 *     spool.model.providers.openai's parse makes it; nil when the body is
 *     not of the common shape (that parse reads it then)
 */
#include <string.h>

#include "codec/chat_reply.h"
#include "spool_int.h"

#define SCRATCH_MT "spool.wire.scratch"

typedef struct scratch {
  spool__chat_reply reply;
  spool__buf parse;
} scratch;

static int scratch_gc(lua_State *L) {
  scratch *s = luaL_checkudata(L, 1, SCRATCH_MT);
  spool__chat_reply_free(&s->reply);
  spool__buf_free(&s->parse);
  return 0;
}

static void push_span(lua_State *L, const spool__chat_reply *r,
                      const spool__chat_span *s) {
  lua_pushlstring(L, r->text.data + s->at, s->len);
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

static int l_chat_reply(lua_State *L) {
  size_t n;
  const char *body = luaL_checklstring(L, 1, &n);
  scratch *s = lua_touserdata(L, lua_upvalueindex(1));
  spool__chat_reply *r = &s->reply;
  int rc = spool__chat_reply_read(r, body, n, &s->parse);
  if (rc < 0)
    return luaL_error(L, "not enough memory");
  /* A big reply's buffers do not linger between calls. */
  int big = r->text.cap > (1u << 20) || s->parse.cap > (1u << 20);
  if (rc > 0) {
    if (big) {
      spool__chat_reply_free(r);
      spool__buf_free(&s->parse);
    }
    lua_pushnil(L);
    return 1;
  }
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
  lua_createtable(L, (int)r->ncalls, 0);
  for (size_t i = 0; i < r->ncalls; i++) {
    const spool__chat_call *c = &r->calls[i];
    lua_createtable(L, 0, 3);
    if (c->id.set)
      push_span(L, r, &c->id);
    else
      lua_pushfstring(L, "call_%d", (int)(i + 1));
    lua_setfield(L, -2, "id");
    push_span(L, r, &c->name);
    lua_setfield(L, -2, "name");
    if (c->arguments.set)
      push_span(L, r, &c->arguments);
    else
      lua_pushliteral(L, "{}");
    lua_setfield(L, -2, "arguments");
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "tool_calls");
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
  lua_setfield(L, -2, "usage");
  if (big) {
    spool__chat_reply_free(r);
    spool__buf_free(&s->parse);
  }
  return 1;
}

void spool__open_wire(lua_State *L) {
  static const luaL_Reg methods[] = {{NULL, NULL}};
  spool__class(L, SCRATCH_MT, methods, scratch_gc, NULL);
  lua_pop(L, 1);
  scratch *s = lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, SCRATCH_MT);
  lua_pushcclosure(L, l_chat_reply, 1);
  lua_setfield(L, -2, "chat_reply");
}
