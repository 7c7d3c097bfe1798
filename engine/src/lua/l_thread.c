/*
 * l_thread.c: what a thread's events say (spool.run.thread), folded in as
 * they are appended: its status, the request it waits on, whether the
 * latest model call's calls are all answered, and its usage. The loop
 * asks several times a step; each answer folds the events appended since
 * the last, so a step costs the same however long the thread is.
 *
 *   core.thread_status(thread)  -> running | waiting | done | failed |
 *                                  cancelled
 *   core.thread_request(thread) -> the human_request event it waits on, or
 *                                  nil
 *   core.thread_settled(thread) -> whether the latest model call's calls
 *                                  are all answered (its reply without
 *                                  calls: whether something came after it)
 *   core.thread_usage(thread)   -> input_tokens, output_tokens, cost_usd,
 *                                  child_steps
 *
 * The state is a userdata at thread.derived, made afresh when the thread's
 * events table is another one or shorter than what was folded (and when
 * spool.run.thread sets thread.derived to nil: an event was replaced).
 * Fields are read as Lua reads them (metamethods included) and sums are
 * made with Lua's own arithmetic, so the answers are those the fold in Lua
 * gave (spec/thread_spec.lua compares them).
 */
#include <string.h>

#include "spool_int.h"

#define DERIVED_MT "spool.thread.derived"

/* Statuses, in the order of their names (upvalue STATUS_NAMES). */
enum { RUNNING, WAITING, DONE, FAILED, CANCELLED };

/* Uservalues of the state. */
enum {
  UV_EVENTS = 1, /* the events table folded */
  UV_REQUEST,    /* the human_request waited on, or nil */
  UV_OPEN,       /* the latest model call's unanswered ids { [id] = true } */
  UV_INPUT,      /* usage sums, Lua numbers */
  UV_OUTPUT,
  UV_COST,
  UV_CHILD_STEPS,
  UV_COUNT = UV_CHILD_STEPS
};

typedef struct derived {
  lua_Integer n; /* events folded */
  int status;
  int has_call;        /* a model call was seen: the fields below are its */
  int never;           /* one of its calls had no id: never settled here */
  lua_Integer pending; /* its calls not answered yet */
  lua_Integer ncalls;
  int after; /* something but a person's answer came after it */
} derived;

/* Keys and names, kept as upvalues: no string is made at each read. */
enum {
  K_DERIVED = 1,
  K_EVENTS,
  K_TYPE,
  K_DATA,
  K_TOOL_CALLS,
  K_ID,
  K_CALL_ID,
  K_USAGE,
  K_INPUT_TOKENS,
  K_OUTPUT_TOKENS,
  K_COST_USD,
  K_STEPS,
  STATUS_NAMES, /* { "running", "waiting", ... } */
  NUPVALUES = STATUS_NAMES
};

static const char *const KEYS[] = {
    "derived",  "events",  "type",  "data",         "tool_calls",
    "id",       "call_id", "usage", "input_tokens", "output_tokens",
    "cost_usd", "steps"};

static const char *const STATUS[] = {"running", "waiting", "done", "failed",
                                     "cancelled"};

/* t[key] as Lua reads it. stack: -> value */
static int get(lua_State *L, int t, int key) {
  t = lua_absindex(L, t);
  lua_pushvalue(L, lua_upvalueindex(key));
  return lua_gettable(L, t);
}

/* The event types the fold tells apart. */
enum {
  T_OTHER,
  T_DONE,
  T_FAILED,
  T_CANCELLED,
  T_HUMAN_REQUEST,
  T_HUMAN_RESPONSE,
  T_MODEL_CALL,
  T_TOOL_RESULT,
  T_ERROR,
  T_USAGE, /* llm_call, compaction, event_summary: usage with cost_usd */
  T_AGENT_RESULT
};

static int type_of(lua_State *L, int idx) {
  size_t n;
  if (lua_type(L, idx) != LUA_TSTRING)
    return T_OTHER;
  const char *s = lua_tolstring(L, idx, &n);
#define IS(lit) (n == sizeof lit - 1 && memcmp(s, lit, n) == 0)
  return IS("model_call")       ? T_MODEL_CALL
         : IS("tool_result")    ? T_TOOL_RESULT
         : IS("error")          ? T_ERROR
         : IS("done")           ? T_DONE
         : IS("failed")         ? T_FAILED
         : IS("cancelled")      ? T_CANCELLED
         : IS("human_request")  ? T_HUMAN_REQUEST
         : IS("human_response") ? T_HUMAN_RESPONSE
         : IS("llm_call") || IS("compaction") || IS("event_summary") ? T_USAGE
         : IS("agent_result") ? T_AGENT_RESULT
                              : T_OTHER;
#undef IS
}

/* uv[slot] = uv[slot] + the value on top (popped), by Lua's `+`. */
static void add_to(lua_State *L, int state, int slot) {
  lua_getiuservalue(L, state, slot);
  lua_insert(L, -2);
  lua_arith(L, LUA_OPADD);
  lua_setiuservalue(L, state, slot);
}

/* Pushes t[key] `or 0`. */
static void or_zero(lua_State *L, int t, int key) {
  get(L, t, key);
  if (!lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    lua_pushinteger(L, 0);
  }
}

/* Pushes `tonumber(t[key]) or 0`: a string converts only whole, as
 * tonumber converts it. */
static void number_or_zero(lua_State *L, int t, int key) {
  get(L, t, key);
  if (lua_type(L, -1) == LUA_TNUMBER)
    return;
  int top = lua_gettop(L);
  if (lua_type(L, -1) == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (lua_stringtonumber(L, s) == len + 1) {
      lua_remove(L, top);
      return;
    }
  }
  lua_settop(L, top - 1);
  lua_pushinteger(L, 0);
}

/* A model call's calls (the table at idx, or none) become the open ones. */
static void open_calls(lua_State *L, derived *d, int state, int calls) {
  d->has_call = 1;
  d->never = 0;
  d->pending = d->ncalls = 0;
  d->after = 0;
  lua_newtable(L);
  int open = lua_gettop(L);
  if (lua_type(L, calls) == LUA_TTABLE) {
    for (lua_Integer i = 1;; i++) {
      int t = lua_geti(L, calls, i);
      if (t == LUA_TNIL) {
        lua_pop(L, 1);
        break;
      }
      if (t == LUA_TTABLE) {
        get(L, -1, K_ID);
        lua_remove(L, -2);
      } else {
        lua_pop(L, 1);
        lua_pushboolean(L, 0); /* (`type(c) == "table" and c.id`) */
      }
      if (lua_isnil(L, -1)) {
        d->never = 1;
        lua_pop(L, 1);
      } else {
        lua_pushvalue(L, -1);
        if (lua_rawget(L, open) == LUA_TNIL) { /* id, nil */
          lua_pop(L, 1);
          lua_pushboolean(L, 1);
          lua_rawset(L, open);
          d->pending++;
        } else {
          lua_pop(L, 2);
        }
      }
      d->ncalls++;
    }
  }
  lua_setiuservalue(L, state, UV_OPEN);
}

/* Folds one event (at idx) into the state. */
static void fold(lua_State *L, derived *d, int state, int ev) {
  get(L, ev, K_TYPE);
  int t = type_of(L, -1);
  lua_pop(L, 1);
  get(L, ev, K_DATA);
  int data = lua_gettop(L);
  if (t == T_DONE || t == T_FAILED || t == T_CANCELLED) {
    d->status = t == T_DONE ? DONE : t == T_FAILED ? FAILED : CANCELLED;
    lua_pushnil(L);
    lua_setiuservalue(L, state, UV_REQUEST);
  } else if (t == T_HUMAN_REQUEST) {
    d->status = WAITING;
    lua_pushvalue(L, ev);
    lua_setiuservalue(L, state, UV_REQUEST);
  } else if (t == T_HUMAN_RESPONSE) {
    d->status = RUNNING;
    lua_pushnil(L);
    lua_setiuservalue(L, state, UV_REQUEST);
  }
  if (t == T_MODEL_CALL) {
    get(L, data, K_TOOL_CALLS);
    open_calls(L, d, state, lua_gettop(L));
    lua_pop(L, 1);
  } else if (d->has_call) {
    d->after = d->after || t != T_HUMAN_RESPONSE;
    get(L, data, K_CALL_ID);
    if (!lua_isnil(L, -1) && (t == T_TOOL_RESULT || t == T_ERROR)) {
      lua_getiuservalue(L, state, UV_OPEN);
      lua_pushvalue(L, -2);
      if (lua_rawget(L, -2) != LUA_TNIL) {
        lua_pushvalue(L, -3);
        lua_pushnil(L);
        lua_rawset(L, -4);
        d->pending--;
      }
      lua_pop(L, 2);
    }
    lua_pop(L, 1);
  }
  if (t == T_MODEL_CALL || t == T_USAGE || t == T_AGENT_RESULT) {
    if (get(L, data, K_USAGE) == LUA_TTABLE) {
      int u = lua_gettop(L);
      or_zero(L, u, K_INPUT_TOKENS);
      add_to(L, state, UV_INPUT);
      or_zero(L, u, K_OUTPUT_TOKENS);
      add_to(L, state, UV_OUTPUT);
      if (t == T_AGENT_RESULT) {
        or_zero(L, u, K_STEPS);
        add_to(L, state, UV_CHILD_STEPS);
        number_or_zero(L, u, K_COST_USD);
      } else {
        number_or_zero(L, data, K_COST_USD);
      }
      add_to(L, state, UV_COST);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1); /* data */
}

/* The thread at 1's state, brought up to date with its events; stack:
 * thread -> thread, state */
static derived *up_to_date(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  if (get(L, 1, K_EVENTS) != LUA_TTABLE)
    luaL_error(L, "the thread has no events");
  int events = lua_gettop(L); /* 2 */
  lua_Integer len = (lua_Integer)lua_rawlen(L, events);
  get(L, 1, K_DERIVED); /* 3 */
  derived *d = luaL_testudata(L, 3, DERIVED_MT);
  int fresh = d == NULL || d->n > len;
  if (!fresh) {
    lua_getiuservalue(L, 3, UV_EVENTS);
    fresh = !lua_rawequal(L, -1, events);
    lua_pop(L, 1);
  }
  if (fresh) {
    lua_pop(L, 1);
    d = lua_newuserdatauv(L, sizeof *d, UV_COUNT);
    memset(d, 0, sizeof *d);
    luaL_setmetatable(L, DERIVED_MT);
    lua_pushvalue(L, events);
    lua_setiuservalue(L, 3, UV_EVENTS);
    for (int slot = UV_INPUT; slot <= UV_CHILD_STEPS; slot++) {
      lua_pushinteger(L, 0);
      lua_setiuservalue(L, 3, slot);
    }
    lua_pushvalue(L, lua_upvalueindex(K_DERIVED));
    lua_pushvalue(L, 3);
    lua_rawset(L, 1);
  }
  for (lua_Integer i = d->n + 1; i <= len; i++) {
    if (lua_rawgeti(L, events, i) != LUA_TTABLE)
      luaL_error(L, "event %d is not a table", (int)i);
    fold(L, d, 3, lua_gettop(L));
    lua_pop(L, 1);
    d->n = i;
  }
  lua_remove(L, events);
  return d;
}

static int l_thread_status(lua_State *L) {
  derived *d = up_to_date(L);
  lua_rawgeti(L, lua_upvalueindex(STATUS_NAMES), d->status + 1);
  return 1;
}

static int l_thread_request(lua_State *L) {
  up_to_date(L);
  lua_getiuservalue(L, 2, UV_REQUEST);
  return 1;
}

static int l_thread_settled(lua_State *L) {
  derived *d = up_to_date(L);
  lua_pushboolean(L, !d->has_call || (!d->never && d->pending == 0 &&
                                      (d->ncalls > 0 || d->after)));
  return 1;
}

static int l_thread_usage(lua_State *L) {
  up_to_date(L);
  lua_getiuservalue(L, 2, UV_INPUT);
  lua_getiuservalue(L, 2, UV_OUTPUT);
  lua_getiuservalue(L, 2, UV_COST);
  lua_getiuservalue(L, 2, UV_CHILD_STEPS);
  return 4;
}

void spool__open_thread(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"thread_status", l_thread_status},
      {"thread_request", l_thread_request},
      {"thread_settled", l_thread_settled},
      {"thread_usage", l_thread_usage},
  };
  static const luaL_Reg no_methods[] = {{NULL, NULL}};
  spool__class(L, DERIVED_MT, no_methods, NULL, NULL);
  lua_pop(L, 1);
  for (size_t f = 0; f < sizeof fns / sizeof fns[0]; f++) {
    for (size_t k = 0; k < sizeof KEYS / sizeof KEYS[0]; k++)
      lua_pushstring(L, KEYS[k]);
    lua_createtable(L, 5, 0);
    for (int s = 0; s < 5; s++) {
      lua_pushstring(L, STATUS[s]);
      lua_rawseti(L, -2, s + 1);
    }
    lua_pushcclosure(L, fns[f].func, NUPVALUES);
    lua_setfield(L, -2, fns[f].name);
  }
}
