/*
 * l_wire_responses.c: the OpenAI Responses API's replies read and
 * requests written in C, as l_wire.c does for Chat Completions, with the
 * same scratch (lua/wire.h).
 *
 *   core.responses_reply(body) -> doc | nil
 *     doc = { id, text, refused, status, reason, tool_calls = { { id,
 *     name, arguments } }, usage = { input_tokens, output_tokens,
 *     total_tokens, input_tokens_details = { cached_tokens },
 *     output_tokens_details = { reasoning_tokens } } }: what
 *     spool.model.providers.openai_responses reads of a response (text:
 *     its message items' output_text and refusal parts joined; refused:
 *     there was a refusal part; reason: incomplete_details.reason; a
 *     call's id: its call_id, else its id; usage: the counts that are
 *     whole numbers >= 0), for that module to finish the reply as its Lua
 *     reader does; nil when the body is not of the common shape (that
 *     reader reads it then)
 *   core.responses_body(model, system, messages, tools, json, temperature,
 *     max_tokens, stream, kept) -> the JSON body of a Responses request,
 *     byte for byte what that module's Lua writer makes of the same
 *     (tools: their wire form, a json.raw, or nil); raises on a value it
 *     does not take, which that writer then names. kept: as
 *     core.anthropic_body's, each message's input items kept once.
 */
#include <string.h>

#include "lua/wire.h"

/* How deep in the body its parts' values are, as json.encode counts: the
 * body's members, an input item's. */
enum { IN_BODY = 1, IN_ITEM = 3 };

/* kept[&FORMS_KEY]: message -> its input items, as JSON text. */
static const char FORMS_KEY = 0;

/* ---- the reply ---- */

static void set_count(lua_State *L, const spool__responses_reply *r, int i,
                      const char *field) {
  if (r->has_count[i]) {
    lua_pushinteger(L, (lua_Integer)r->count[i]);
    lua_setfield(L, -2, field);
  }
}

/* The counts in the usage object's shape, for wire.openai_usage. */
static void push_usage(lua_State *L, const spool__responses_reply *r) {
  lua_createtable(L, 0, 5);
  set_count(L, r, SPOOL__CHAT_INPUT, "input_tokens");
  set_count(L, r, SPOOL__CHAT_OUTPUT, "output_tokens");
  set_count(L, r, SPOOL__CHAT_TOTAL, "total_tokens");
  lua_createtable(L, 0, 1);
  set_count(L, r, SPOOL__CHAT_CACHED, "cached_tokens");
  lua_setfield(L, -2, "input_tokens_details");
  lua_createtable(L, 0, 1);
  set_count(L, r, SPOOL__CHAT_REASONING, "reasoning_tokens");
  lua_setfield(L, -2, "output_tokens_details");
}

static int read_responses(spool__wire_scratch *s, const char *body, size_t n) {
  return spool__responses_reply_read(&s->responses, body, n, &s->parse);
}

static int l_responses_reply(lua_State *L) {
  spool__wire_scratch *s = spool__wire_read(L, read_responses);
  if (s == NULL)
    return 1;
  spool__responses_reply *r = &s->responses;
  lua_createtable(L, 0, 7);
  spool__wire_set(L, &r->text, &r->id, "id");
  spool__wire_set(L, &r->text, &r->status, "status");
  spool__wire_set(L, &r->text, &r->reason, "reason");
  if (r->has_text) {
    lua_pushlstring(L, r->said.data ? r->said.data : "", r->said.len);
    lua_setfield(L, -2, "text");
  }
  lua_pushboolean(L, r->refused);
  lua_setfield(L, -2, "refused");
  spool__wire_calls(L, &r->text, r->calls, r->ncalls, NULL, NULL);
  push_usage(L, r);
  lua_setfield(L, -2, "usage");
  return 1;
}

/* ---- the request ---- */

#define PUT SPOOL__WIRE_PUT
#define PUT_KEY SPOOL__WIRE_KEY
#define PUT_FIELD SPOOL__WIRE_FIELD

static int role_is(lua_State *L, int m, const char *want, size_t len) {
  lua_getfield(L, m, "role");
  size_t n = 0;
  const char *role =
      lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
  int yes = role && n == len && memcmp(role, want, len) == 0;
  lua_pop(L, 1);
  return yes;
}
#define ROLE_IS(L, m, lit) role_is(L, m, lit, sizeof lit - 1)

/* An assistant's tool calls (the table at tc) as function_call items;
 * how many items there were before, and now. */
static int put_calls(lua_State *L, spool__buf *b, int tc, int items) {
  lua_Integer n = spool__wire_len(L, tc, "tool_calls");
  for (lua_Integer i = 1; i <= n && lua_geti(L, tc, i) != LUA_TNIL; i++) {
    if (lua_type(L, -1) != LUA_TTABLE)
      luaL_error(L, "tool call %d is not a table", (int)i);
    int c = lua_gettop(L), first = 1;
    if (items++)
      PUT(L, b, ",");
    PUT(L, b, "{");
    PUT_FIELD(L, b, c, "arguments", &first, IN_ITEM);
    spool__wire_field(L, b, c, "id",
                      ",\"call_id\":", sizeof ",\"call_id\":" - 1, &first,
                      IN_ITEM);
    PUT_FIELD(L, b, c, "name", &first, IN_ITEM);
    PUT_KEY(L, b, ",\"type\":\"function_call\"}", &first);
    lua_pop(L, 1);
  }
  lua_settop(L, tc);
  return items;
}

/* The input items of the message at m (spool's chat form, as the Lua
 * writer's convert makes it the Responses API's); how many. */
static int put_items(lua_State *L, spool__buf *b, int m, int fn) {
  (void)fn;
  if (lua_type(L, m) != LUA_TTABLE)
    luaL_error(L, "a message is not a table");
  int first = 1, items = 0;
  if (ROLE_IS(L, m, "assistant")) {
    lua_getfield(L, m, "content");
    if (lua_toboolean(L, -1) &&
        !(lua_type(L, -1) == LUA_TSTRING && lua_rawlen(L, -1) == 0) &&
        !(lua_islightuserdata(L, -1) && lua_touserdata(L, -1) == NULL)) {
      PUT(L, b, "{\"content\":");
      spool__wire_value(L, b, -1, IN_ITEM);
      PUT(L, b, ",\"role\":\"assistant\"}");
      items = 1;
    }
    lua_pop(L, 1);
    int t = lua_getfield(L, m, "tool_calls");
    if (t == LUA_TTABLE)
      items = put_calls(L, b, lua_gettop(L), items);
    else if (lua_toboolean(L, -1))
      luaL_error(L, "tool_calls is not a table");
    lua_pop(L, 1);
  } else if (ROLE_IS(L, m, "tool")) {
    PUT(L, b, "{");
    spool__wire_field(L, b, m, "tool_call_id",
                      ",\"call_id\":", sizeof ",\"call_id\":" - 1, &first,
                      IN_ITEM);
    spool__wire_field(L, b, m, "content",
                      ",\"output\":", sizeof ",\"output\":" - 1, &first,
                      IN_ITEM);
    PUT_KEY(L, b, ",\"type\":\"function_call_output\"}", &first);
    items = 1;
  } else {
    PUT(L, b, "{");
    PUT_FIELD(L, b, m, "content", &first, IN_ITEM);
    PUT_FIELD(L, b, m, "role", &first, IN_ITEM);
    PUT(L, b, "}");
    items = 1;
  }
  return items;
}

/* Arguments: 1 model, 2 system, 3 messages, 4 tools (json.raw), 5 json,
 * 6 temperature, 7 max_tokens, 8 stream, 9 kept. Keys go in sorted order,
 * as json.encode writes them. */
static int l_responses_body(lua_State *L) {
  lua_settop(L, 9);
  spool__wire_scratch *s = spool__wire_body_begin(L);
  spool__buf *b = &s->body;
  PUT(L, b, "{\"input\":[");
  int kept = lua_type(L, 9) == LUA_TTABLE ? 9 : 0;
  int top = lua_gettop(L);
  int forms = spool__wire_forms(L, kept, &FORMS_KEY);
  int any = 0;
  lua_Integer n = spool__wire_len(L, 3, "messages");
  for (lua_Integer i = 1; i <= n && lua_geti(L, 3, i) != LUA_TNIL; i++) {
    int m = lua_gettop(L);
    size_t mark = b->len;
    if (any)
      PUT(L, b, ",");
    if (spool__wire_message(L, b, m, 0, kept, forms, put_items))
      any = 1;
    else
      b->len = mark; /* no item: no comma */
    lua_settop(L, m - 1);
  }
  lua_settop(L, top);
  PUT(L, b, "]");
  if (lua_toboolean(L, 2) &&
      !(lua_type(L, 2) == LUA_TSTRING && lua_rawlen(L, 2) == 0)) {
    PUT(L, b, ",\"instructions\":");
    spool__wire_value(L, b, 2, IN_BODY);
  }
  if (!lua_isnil(L, 7)) {
    PUT(L, b, ",\"max_output_tokens\":");
    spool__wire_value(L, b, 7, IN_BODY);
  }
  if (!lua_isnil(L, 1)) {
    PUT(L, b, ",\"model\":");
    spool__wire_value(L, b, 1, IN_BODY);
  }
  PUT(L, b, ",\"store\":false");
  if (lua_toboolean(L, 8))
    PUT(L, b, ",\"stream\":true");
  if (!lua_isnil(L, 6)) {
    PUT(L, b, ",\"temperature\":");
    spool__wire_value(L, b, 6, IN_BODY);
  }
  if (lua_toboolean(L, 5))
    PUT(L, b, ",\"text\":{\"format\":{\"type\":\"json_object\"}}");
  return spool__wire_body_end(L, s);
}

void spool__open_wire_responses(lua_State *L, int scratch) {
  lua_pushvalue(L, scratch);
  lua_pushcclosure(L, l_responses_reply, 1);
  lua_setfield(L, scratch - 1, "responses_reply");
  lua_pushvalue(L, scratch);
  lua_pushcclosure(L, l_responses_body, 1);
  lua_setfield(L, scratch - 1, "responses_body");
}
