/*
 * l_wire_anthropic.c: the Anthropic Messages API's replies read and
 * requests written in C, as l_wire.c does for Chat Completions, with the
 * same scratch (lua/wire.h).
 *
 *   core.anthropic_reply(body) -> doc | nil
 *     doc = { id, text, stop_reason, tool_calls = { { id, name,
 *     arguments } }, usage = { input_tokens, output_tokens,
 *     cache_creation_input_tokens, cache_read_input_tokens,
 *     output_tokens_details = { thinking_tokens } } }: what
 *     spool.model.providers.anthropic reads of a response (text: its text
 *     blocks' texts joined; a call's arguments: its input as JSON text,
 *     nil when it had none; usage: the counts that are whole numbers
 *     >= 0), for that module to finish the reply as its Lua reader does;
 *     nil when the body is not of the common shape (that reader reads it
 *     then)
 *   core.anthropic_body(model, system, messages, tools, max_tokens,
 *     temperature, stream, kept, input_of) -> the JSON body of a Messages
 *     request, byte for byte what that module's Lua writer makes of the
 *     same (tools: their wire form, a json.raw, or nil; input_of(arguments)
 *     -> the table a tool call's input is); raises on a value it does not
 *     take, which that writer then names. kept: the messages whose forms
 *     a caller keeps from one request to the next (core.chat_body's:
 *     message -> false | its OpenAI form); their Anthropic forms, their
 *     content blocks, are kept beside those, so each is written once.
 */
#include <string.h>

#include "lua/wire.h"

/* How deep in the body its parts' values are, as json.encode counts: the
 * body's members, a message's, a content block's. */
enum { IN_BODY = 1, IN_MESSAGE = 3, IN_BLOCK = 5 };

/* kept[&FORMS_KEY]: message -> its content blocks, as JSON text. */
static const char FORMS_KEY = 0;

enum { NO_GROUP, USER, ASSISTANT };

/* ---- the reply ---- */

static const char *const COUNT_NAMES[SPOOL__ANTHROPIC_THINKING] = {
    "input_tokens", "output_tokens", "cache_creation_input_tokens",
    "cache_read_input_tokens"};

static void push_usage(lua_State *L, const spool__anthropic_reply *r) {
  lua_createtable(L, 0, SPOOL__ANTHROPIC_COUNTS);
  for (int i = 0; i < SPOOL__ANTHROPIC_THINKING; i++) {
    if (r->has_count[i]) {
      lua_pushinteger(L, (lua_Integer)r->count[i]);
      lua_setfield(L, -2, COUNT_NAMES[i]);
    }
  }
  if (r->has_count[SPOOL__ANTHROPIC_THINKING]) {
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, (lua_Integer)r->count[SPOOL__ANTHROPIC_THINKING]);
    lua_setfield(L, -2, "thinking_tokens");
    lua_setfield(L, -2, "output_tokens_details");
  }
}

static int read_anthropic(spool__wire_scratch *s, const char *body, size_t n) {
  return spool__anthropic_reply_read(&s->anthropic, body, n, &s->parse);
}

static int l_anthropic_reply(lua_State *L) {
  spool__wire_scratch *s = spool__wire_read(L, read_anthropic);
  if (s == NULL)
    return 1;
  spool__anthropic_reply *r = &s->anthropic;
  lua_createtable(L, 0, 5);
  spool__wire_set(L, &r->text, &r->id, "id");
  spool__wire_set(L, &r->text, &r->stop, "stop_reason");
  if (r->has_text) {
    lua_pushlstring(L, r->said.data ? r->said.data : "", r->said.len);
    lua_setfield(L, -2, "text");
  }
  spool__wire_calls(L, &r->text, r->calls, r->ncalls, "toolu_%d", NULL);
  push_usage(L, r);
  lua_setfield(L, -2, "usage");
  return 1;
}

/* ---- the request ---- */

#define PUT SPOOL__WIRE_PUT
#define PUT_KEY SPOOL__WIRE_KEY
#define PUT_FIELD SPOOL__WIRE_FIELD

static int is_json_null(lua_State *L, int idx) {
  return lua_islightuserdata(L, idx) && lua_touserdata(L, idx) == NULL;
}

static int is_empty_string(lua_State *L, int idx) {
  return lua_type(L, idx) == LUA_TSTRING && lua_rawlen(L, idx) == 0;
}

/* The group a message's blocks go in: an assistant's, or the user's. */
static int group_of(lua_State *L, int m) {
  if (lua_type(L, m) != LUA_TTABLE)
    luaL_error(L, "a message is not a table");
  lua_getfield(L, m, "role");
  size_t len = 0;
  const char *role =
      lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : "";
  int assistant = len == 9 && memcmp(role, "assistant", 9) == 0;
  lua_pop(L, 1);
  return assistant ? ASSISTANT : USER;
}

static int is_role(lua_State *L, int m, const char *want) {
  lua_getfield(L, m, "role");
  const char *role = lua_tostring(L, -1);
  int yes = lua_type(L, -1) == LUA_TSTRING && strcmp(role, want) == 0 &&
            lua_rawlen(L, -1) == strlen(want);
  lua_pop(L, 1);
  return yes;
}

/* An assistant's tool calls (the table at tc) as tool_use blocks, each
 * input the table input_of (at stack index fn) makes of its arguments.
 * Returns how many blocks there were before, and now. */
static int put_tool_uses(lua_State *L, spool__buf *b, int tc, int fn,
                         int blocks) {
  lua_Integer n = spool__wire_len(L, tc, "tool_calls");
  for (lua_Integer i = 1; i <= n && lua_geti(L, tc, i) != LUA_TNIL; i++) {
    if (lua_type(L, -1) != LUA_TTABLE)
      luaL_error(L, "tool call %d is not a table", (int)i);
    int c = lua_gettop(L), first = 1;
    if (blocks++)
      PUT(L, b, ",");
    PUT(L, b, "{");
    PUT_FIELD(L, b, c, "id", &first, IN_BLOCK);
    PUT_KEY(L, b, ",\"input\":", &first);
    lua_pushvalue(L, fn);
    lua_getfield(L, c, "arguments");
    lua_call(L, 1, 1);
    spool__wire_value(L, b, -1, IN_BLOCK);
    lua_pop(L, 1);
    PUT_FIELD(L, b, c, "name", &first, IN_BLOCK);
    PUT(L, b, ",\"type\":\"tool_use\"}");
    lua_pop(L, 1);
  }
  lua_settop(L, tc);
  return blocks;
}

/* The content blocks of the message at m, one after another; how many.
 * (spool's chat form, as the Lua writer's convert makes it Anthropic's;
 * fn: input_of's index.) */
static int put_blocks(lua_State *L, spool__buf *b, int m, int fn) {
  int first = 1, blocks = 0;
  if (is_role(L, m, "assistant")) {
    lua_getfield(L, m, "content");
    if (lua_toboolean(L, -1) && !is_empty_string(L, -1) &&
        !is_json_null(L, -1)) {
      PUT(L, b, "{\"text\":");
      spool__wire_value(L, b, -1, IN_BLOCK);
      PUT(L, b, ",\"type\":\"text\"}");
      blocks = 1;
    }
    lua_pop(L, 1);
    int t = lua_getfield(L, m, "tool_calls");
    if (t == LUA_TTABLE)
      blocks = put_tool_uses(L, b, lua_gettop(L), fn, blocks);
    else if (lua_toboolean(L, -1))
      luaL_error(L, "tool_calls is not a table");
    lua_pop(L, 1);
  } else if (is_role(L, m, "tool")) {
    PUT(L, b, "{");
    PUT_FIELD(L, b, m, "content", &first, IN_BLOCK);
    spool__wire_field(L, b, m, "tool_call_id",
                      ",\"tool_use_id\":", sizeof ",\"tool_use_id\":" - 1,
                      &first, IN_BLOCK);
    PUT_KEY(L, b, ",\"type\":\"tool_result\"}", &first);
    blocks = 1;
  } else {
    PUT(L, b, "{");
    spool__wire_field(L, b, m, "content", ",\"text\":", sizeof ",\"text\":" - 1,
                      &first, IN_BLOCK);
    PUT_KEY(L, b, ",\"type\":\"text\"}", &first);
    blocks = 1;
  }
  return blocks;
}

static void close_group(lua_State *L, spool__buf *b, int group) {
  if (group == ASSISTANT)
    PUT(L, b, "],\"role\":\"assistant\"}");
  else
    PUT(L, b, "],\"role\":\"user\"}");
}

/* The messages, their blocks in groups: consecutive blocks of one side
 * make one message, as the API wants. */
static void put_messages(lua_State *L, spool__buf *b, int messages, int fn,
                         int kept) {
  int top = lua_gettop(L);
  int forms = spool__wire_forms(L, kept, &FORMS_KEY);
  int open = NO_GROUP;
  lua_Integer n = spool__wire_len(L, messages, "messages");
  for (lua_Integer i = 1; i <= n && lua_geti(L, messages, i) != LUA_TNIL; i++) {
    int m = lua_gettop(L);
    int group = group_of(L, m);
    /* The separator goes first, and is taken back if the message has no
     * block (an assistant's with neither text nor calls). */
    size_t mark = b->len;
    int was = open;
    if (group != open) {
      if (open != NO_GROUP) {
        close_group(L, b, open);
        PUT(L, b, ",");
      }
      PUT(L, b, "{\"content\":[");
      open = group;
    } else {
      PUT(L, b, ",");
    }
    if (!spool__wire_message(L, b, m, fn, kept, forms, put_blocks)) {
      b->len = mark;
      open = was;
    }
    lua_settop(L, m - 1);
  }
  if (open != NO_GROUP)
    close_group(L, b, open);
  lua_settop(L, top);
}

/* Arguments: 1 model, 2 system, 3 messages, 4 tools (json.raw), 5
 * max_tokens, 6 temperature, 7 stream, 8 kept, 9 input_of. Keys go in
 * sorted order, as json.encode writes them. */
static int l_anthropic_body(lua_State *L) {
  lua_settop(L, 9);
  luaL_checktype(L, 9, LUA_TFUNCTION);
  spool__wire_scratch *s = spool__wire_body_begin(L);
  spool__buf *b = &s->body;
  int first = 1;
  PUT(L, b, "{");
  if (!lua_isnil(L, 5)) {
    PUT_KEY(L, b, ",\"max_tokens\":", &first);
    spool__wire_value(L, b, 5, IN_BODY);
  }
  PUT_KEY(L, b, ",\"messages\":[", &first);
  put_messages(L, b, 3, 9, lua_type(L, 8) == LUA_TTABLE ? 8 : 0);
  PUT(L, b, "]");
  if (!lua_isnil(L, 1)) {
    PUT(L, b, ",\"model\":");
    spool__wire_value(L, b, 1, IN_BODY);
  }
  if (lua_toboolean(L, 7))
    PUT(L, b, ",\"stream\":true");
  if (lua_toboolean(L, 2) && !is_empty_string(L, 2)) {
    PUT(L, b, ",\"system\":");
    spool__wire_value(L, b, 2, IN_BODY);
  }
  if (!lua_isnil(L, 6)) {
    PUT(L, b, ",\"temperature\":");
    spool__wire_value(L, b, 6, IN_BODY);
  }
  return spool__wire_body_end(L, s);
}

void spool__open_wire_anthropic(lua_State *L, int scratch) {
  lua_pushvalue(L, scratch);
  lua_pushcclosure(L, l_anthropic_reply, 1);
  lua_setfield(L, scratch - 1, "anthropic_reply");
  lua_pushvalue(L, scratch);
  lua_pushcclosure(L, l_anthropic_body, 1);
  lua_setfield(L, scratch - 1, "anthropic_body");
}
