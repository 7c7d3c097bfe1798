/*
 * l_walk.c: the walk a run's steps keep of their thread (spool.run.window):
 * its events rendered by the built-in chat renderers and grouped into
 * units, kept from step to step in C arrays, so that a step walks only its
 * new events and plans with no Lua table but the request's list of
 * messages. The same walk in Lua (window.lua's) makes every other plan, and
 * is what this one must equal: a plan's request is byte for byte a fresh
 * plan's (spec/window_spec.lua compares them on random threads).
 *
 *   core.window_walk(events, settings, defaults, helpers) -> walk
 *     defaults: the chat renderers; helpers = { pure = { [renderer] =
 *     true }, summary = function(compaction) -> message, note =
 *     function(call) -> the answer of a call without one, cut_record =
 *     function(ev, message, policy) -> cut, cut = function(plan, cut,
 *     summaries) -> message, message_overhead, max_factor (spool.tokens'
 *     framing of a message, and its largest calibration factor) }
 *   walk:continues(events, settings, defaults) -> whether the walk may go
 *     on over `events` (nothing it saw changed, nothing new changes pins or
 *     what is hidden)
 *   walk:advance(thread, agent) -> keep: walks the events not yet walked;
 *     keep is false once a renderer that is not a built-in one was used
 *   walk:plan(plan) -> messages, tokens, tokens at factor 1, summary
 *     event, pinned call id: the units at plan.factor, each cut as its
 *     policy wants (helpers.cut, once a cut)
 *   walk:units() -> the last plan's units as window.lua makes them
 *     ({ messages, bytes, overhead, first, last, kind, tokens, pinned })
 *   walk:forms() -> { [message] = false | its wire form } (core.chat_body)
 *   walk:walked() -> how many events it has walked
 *
 * What a unit is, what is pinned, hidden or cut: window.lua says; this
 * walk keeps its rules, over arrays: a message (in the `msgs` list) has
 * its size, framing and cut; a unit, its places (slots) in order.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spool_int.h"

#define WALK_MT "spool.window.walk"
/* Stack slots an entry point may use, its nested calls included. */
#define STACK_NEEDED 48

/* Uservalues. */
enum {
  UV_EVENTS = 1, /* the events walked */
  UV_SETTINGS,   /* the window's settings */
  UV_HELPERS,
  UV_MSGS,      /* the messages, by number */
  UV_CUTS,      /* the cut records, by number */
  UV_ANSWERS,   /* the open unit's calls: id -> false | message number */
  UV_OWED,      /* the open unit's calls, in order */
  UV_USED,      /* event type -> the renderer it used | false */
  UV_SUMMARIES, /* event seq -> its summary (event_summary) */
  UV_SUMMARY,   /* the latest compaction event, or nil */
  UV_FORMS,     /* message -> false | its wire form */
  UV_PINNED_CALL,
  UV_PLAN, /* the last plan's: { [cut] = message, notes } */
  UV_COUNT = UV_PLAN
};

typedef struct message {
  lua_Integer bytes;
  lua_Integer overhead;
  int cut; /* its cut record, 0: none */
} message;

typedef struct unit {
  size_t first_slot, nslots;
  lua_Integer overhead, first, last;
  int summary, pinned, settled;
} unit;

typedef struct walk {
  lua_Integer n;
  message *msgs; /* [1..nmsgs] */
  size_t nmsgs, capmsgs;
  int *slots; /* message numbers, unit after unit */
  size_t nslots, capslots;
  unit *units; /* the closed ones, then the open one (has_open) */
  size_t nunits, capunits;
  int has_open;
  lua_Integer unanswered;
  lua_Integer pinned[2];
  int npinned;
  lua_Integer *ranges; /* pairs */
  size_t nranges, capranges;
  int summary_placed, keep, busy;
  lua_Integer message_overhead; /* helpers' */
  double max_factor;
  /* the last plan's open unit, settled in a view: its extra places */
  int *view;
  size_t nview, capview;
} walk;

/* The arrays come from Lua's allocator: they count for the run whose
 * walk it is, as its Lua objects do (base/lua_heap.h). */
static void grow(lua_State *L, void **p, size_t *cap, size_t need,
                 size_t size) {
  if (need <= *cap)
    return;
  size_t cap2 = *cap ? *cap * 2 : 16;
  while (cap2 < need)
    cap2 *= 2;
  void *ud;
  lua_Alloc f = lua_getallocf(L, &ud);
  void *q = f(ud, *p, *cap * size, cap2 * size);
  if (q == NULL)
    luaL_error(L, "not enough memory");
  *p = q;
  *cap = cap2;
}
#define GROW(L, arr, cap, need)                                                \
  grow(L, (void **)&(arr), &(cap), (need), sizeof *(arr))

static void release(lua_State *L, void *p, size_t cap, size_t size) {
  void *ud;
  lua_Alloc f = lua_getallocf(L, &ud);
  if (p)
    f(ud, p, cap * size, 0);
}

static walk *check_walk(lua_State *L) {
  return luaL_checkudata(L, 1, WALK_MT);
}

/* A walk calls Lua (renderers, metamethods of event data, helpers) while
 * it holds places in its arrays: a call into the same walk meanwhile is
 * refused. The flag is cleared as the call ends, however it ends: the
 * walk's copy at `slot` is a to-be-closed value (walk_close). */
static walk *enter(lua_State *L, int slot) {
  walk *w = check_walk(L);
  luaL_checkstack(L, STACK_NEEDED, "the window's walk");
  if (w->busy)
    luaL_error(L, "the window's walk is in use by a call that called this");
  lua_settop(L, slot - 1);
  w->busy = 1;
  lua_pushvalue(L, 1);
  lua_toclose(L, slot);
  return w;
}

static int walk_close(lua_State *L) {
  check_walk(L)->busy = 0;
  return 0;
}

/* Is the value at idx the string `lit` (NUL bytes and all)? */
static int is(lua_State *L, int idx, const char *lit) {
  size_t n;
  if (lua_type(L, idx) != LUA_TSTRING)
    return 0;
  const char *v = lua_tolstring(L, idx, &n);
  return n == strlen(lit) && memcmp(v, lit, n) == 0;
}

static int walk_gc(lua_State *L) {
  walk *w = check_walk(L);
  release(L, w->msgs, w->capmsgs, sizeof *w->msgs);
  release(L, w->slots, w->capslots, sizeof *w->slots);
  release(L, w->units, w->capunits, sizeof *w->units);
  release(L, w->ranges, w->capranges, sizeof *w->ranges);
  release(L, w->view, w->capview, sizeof *w->view);
  memset(w, 0, sizeof *w);
  return 0;
}

/* ---- what spool.tokens counts of a message ---- */

static lua_Integer text_len(lua_State *L, int idx) {
  if (!lua_toboolean(L, idx))
    return 0; /* (`x or ""`) */
  size_t n;
  luaL_tolstring(L, idx, &n);
  lua_pop(L, 1);
  return (lua_Integer)n;
}

/* tokens.bytes and tokens.overhead of the message at idx. */
static void measure(lua_State *L, const walk *w, int m, lua_Integer *bytes,
                    lua_Integer *overhead) {
  lua_Integer n = 0;
  if (lua_getfield(L, m, "content") == LUA_TSTRING)
    n = (lua_Integer)lua_rawlen(L, -1);
  lua_pop(L, 1);
  *overhead = w->message_overhead;
  if (lua_getfield(L, m, "tool_calls") != LUA_TNIL && lua_toboolean(L, -1)) {
    int calls = lua_gettop(L);
    lua_Integer len = luaL_len(L, calls);
    for (lua_Integer i = 1; i <= len; i++) {
      lua_geti(L, calls, i);
      lua_getfield(L, -1, "name");
      n = (lua_Integer)((lua_Unsigned)n + (lua_Unsigned)text_len(L, -1));
      lua_getfield(L, -2, "arguments");
      n = (lua_Integer)((lua_Unsigned)n + (lua_Unsigned)text_len(L, -1));
      lua_pop(L, 3);
    }
    /* (wrapping as Lua's integers do, whatever __len said) */
    *overhead = (lua_Integer)((lua_Unsigned)w->message_overhead *
                              (1 + (lua_Unsigned)len));
  }
  lua_pop(L, 1);
  *bytes = n;
}

/* spool.tokens.of_bytes (l_window.c's), raising where it makes no count. */
static lua_Integer tokens_of(lua_State *L, lua_Integer bytes, double factor) {
  lua_Integer t;
  if (spool__tokens_of((lua_Number)bytes, factor, &t) != 0)
    luaL_error(L, "a message of %I bytes makes no token count", bytes);
  return t;
}

/* ---- the walk ---- */

static int pinned(const walk *w, lua_Integer seq) {
  for (int i = 0; i < w->npinned; i++)
    if (w->pinned[i] == seq)
      return 1;
  return 0;
}

static int holds_pin(const walk *w, const unit *u) {
  for (int i = 0; i < w->npinned; i++)
    if (w->pinned[i] >= u->first && w->pinned[i] <= u->last)
      return 1;
  return 0;
}

/* Is seq within one of the compaction's ranges (sorted and merged as the
 * walk starts: a binary search, however many an event brings)? */
static int covered(const walk *w, lua_Integer seq) {
  size_t lo = 0, hi = w->nranges;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (seq < w->ranges[2 * mid])
      hi = mid;
    else if (seq > w->ranges[2 * mid + 1])
      lo = mid + 1;
    else
      return 1;
  }
  return 0;
}

static int by_start(const void *a, const void *b) {
  lua_Integer x = *(const lua_Integer *)a, y = *(const lua_Integer *)b;
  return (x > y) - (x < y);
}

/* Sorts the ranges by their start and merges those that overlap or touch
 * (seqs are whole numbers); a range that ends before it starts holds no
 * seq and goes. */
static void merge_ranges(walk *w) {
  if (w->nranges > 1)
    qsort(w->ranges, w->nranges, 2 * sizeof *w->ranges, by_start);
  size_t n = 0;
  for (size_t i = 0; i < w->nranges; i++) {
    lua_Integer a = w->ranges[2 * i], b = w->ranges[2 * i + 1];
    if (b < a)
      continue;
    lua_Integer *last = n ? &w->ranges[2 * (n - 1)] : NULL;
    if (last &&
        (a <= last[1] || (last[1] < LUA_MAXINTEGER && a == last[1] + 1))) {
      if (b > last[1])
        last[1] = b;
    } else {
      w->ranges[2 * n] = a;
      w->ranges[2 * n + 1] = b;
      n++;
    }
  }
  w->nranges = n;
}

/* A field of the table at idx as an integer (seq, ranges). */
static lua_Integer int_field(lua_State *L, int idx, const char *k,
                             const char *what) {
  lua_getfield(L, idx, k);
  int isnum;
  lua_Integer v = lua_tointegerx(L, -1, &isnum);
  if (!isnum)
    luaL_error(L, "%s: '%s' is not an integer", what, k);
  lua_pop(L, 1);
  return v;
}

/* Adds the message at idx as number k, with its cut record (0: none).
 * stack: -> */
static int add_message(lua_State *L, walk *w, int m, int cut) {
  lua_Integer bytes, overhead;
  measure(L, w, m, &bytes, &overhead);
  GROW(L, w->msgs, w->capmsgs, w->nmsgs + 2);
  int k = (int)++w->nmsgs;
  message *msg = &w->msgs[k];
  msg->bytes = bytes;
  msg->overhead = overhead;
  msg->cut = cut;
  lua_getiuservalue(L, 1, UV_MSGS);
  lua_pushvalue(L, m);
  lua_rawseti(L, -2, k);
  lua_pop(L, 1);
  return k;
}

static void put(lua_State *L, walk *w, unit *u, int k) {
  GROW(L, w->slots, w->capslots, w->nslots + 1);
  w->slots[w->nslots++] = k;
  u->nslots++;
  u->overhead = (lua_Integer)((lua_Unsigned)u->overhead +
                              (lua_Unsigned)w->msgs[k].overhead);
}

/* The note for a call with no answer (helpers.note). stack: call -> call,
 * note */
static void push_note(lua_State *L, int call) {
  lua_getiuservalue(L, 1, UV_HELPERS);
  lua_getfield(L, -1, "note");
  lua_remove(L, -2);
  lua_pushvalue(L, call);
  lua_call(L, 1, 1);
  if (!lua_istable(L, -1))
    luaL_error(L, "helpers.note made a %s, not a message",
               luaL_typename(L, -1));
}

/* Each call of the open unit in order, with the number of its answer's
 * message (0: none yet), to `place` (which finds the call on top, and
 * leaves the stack as it found it). */
typedef void (*place_fn)(lua_State *L, walk *w, int k, int ctx);

static void each_answer(lua_State *L, walk *w, place_fn place, int ctx) {
  lua_getiuservalue(L, 1, UV_OWED);
  lua_getiuservalue(L, 1, UV_ANSWERS);
  int owed = lua_gettop(L) - 1, answers = owed + 1;
  lua_Integer n = (lua_Integer)lua_rawlen(L, owed);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, owed, i);
    lua_getfield(L, -1, "id");
    lua_rawget(L, answers);
    int k = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    place(L, w, k, ctx);
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
}

/* In the open unit, for good: a call without an answer gets a note. */
static void place_in_unit(lua_State *L, walk *w, int k, int ctx) {
  (void)ctx;
  if (k == 0) {
    push_note(L, lua_gettop(L));
    k = add_message(L, w, lua_gettop(L), 0);
    lua_pop(L, 1);
  }
  put(L, w, &w->units[w->nunits - 1], k);
}

/* Places the answers of the open unit's calls, in call order; a call
 * without one gets a note. */
static void settle(lua_State *L, walk *w) {
  each_answer(L, w, place_in_unit, 0);
  w->units[w->nunits - 1].settled = 1;
}

static void start_unit(lua_State *L, walk *w, int k, lua_Integer seq,
                       int summary) {
  if (w->has_open) {
    unit *open = &w->units[w->nunits - 1];
    if (!open->settled)
      settle(L, w);
    open = &w->units[w->nunits - 1];
    open->pinned = holds_pin(w, open);
    lua_getiuservalue(L, 1, UV_OWED);
    int any = lua_rawlen(L, -1) > 0;
    lua_pop(L, 1);
    if (any) {
      lua_newtable(L);
      lua_setiuservalue(L, 1, UV_OWED);
      lua_newtable(L);
      lua_setiuservalue(L, 1, UV_ANSWERS);
    }
    w->unanswered = 0;
  }
  GROW(L, w->units, w->capunits, w->nunits + 1);
  unit *u = &w->units[w->nunits++];
  memset(u, 0, sizeof *u);
  u->first_slot = w->nslots;
  u->first = u->last = seq;
  u->summary = summary;
  w->has_open = 1;
  put(L, w, u, k);
  /* its calls are owed an answer each */
  lua_getiuservalue(L, 1, UV_MSGS);
  lua_rawgeti(L, -1, k);
  if (lua_getfield(L, -1, "tool_calls") != LUA_TNIL && lua_toboolean(L, -1)) {
    int calls = lua_gettop(L);
    lua_getiuservalue(L, 1, UV_OWED);
    lua_getiuservalue(L, 1, UV_ANSWERS);
    int owed = calls + 1, answers = calls + 2;
    lua_Integer len = luaL_len(L, calls);
    for (lua_Integer i = 1; i <= len; i++) {
      lua_geti(L, calls, i);
      lua_rawseti(L, owed, (lua_Integer)lua_rawlen(L, owed) + 1);
      lua_geti(L, calls, i);
      if (lua_getfield(L, -1, "id") == LUA_TNIL)
        luaL_error(L, "a tool call of event %d has no id", (int)seq);
      lua_pushvalue(L, -1);
      if (lua_rawget(L, answers) == LUA_TNIL) { /* (a model may repeat one) */
        lua_pop(L, 1);
        lua_pushboolean(L, 0);
        lua_rawset(L, answers);
        w->unanswered++;
      } else {
        lua_pop(L, 2);
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 2);
  }
  lua_pop(L, 3);
  w->units[w->nunits - 1].settled = w->unanswered == 0;
}

/* An answer to a call of the open unit, message k: once all are in, the
 * unit is settled where it is. */
static void answer(lua_State *L, walk *w, int id, int k) {
  lua_getiuservalue(L, 1, UV_ANSWERS);
  lua_pushvalue(L, id);
  lua_pushinteger(L, k);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  if (--w->unanswered == 0)
    settle(L, w);
}

/* The policy that may change the message at m, of event ev, at some
 * factor: 0 none, 1 drop, 2 truncate or summarize. stack: -> policy (when
 * not 0) */
static int acting_policy(lua_State *L, walk *w, int ev, int m,
                         lua_Integer seq) {
  lua_getiuservalue(L, 1, UV_SETTINGS);
  lua_getfield(L, -1, "policies");
  lua_getfield(L, ev, "type");
  lua_gettable(L, -2);
  lua_replace(L, -3);
  lua_pop(L, 1); /* policy */
  int string_content = lua_getfield(L, m, "content") == LUA_TSTRING;
  size_t clen = string_content ? lua_rawlen(L, -1) : 0;
  lua_pop(L, 1);
  if (lua_isnil(L, -1) || is(L, -1, "keep") || !string_content) {
    lua_pop(L, 1);
    return 0;
  }
  if (is(L, -1, "drop")) {
    if (pinned(w, seq)) {
      lua_pop(L, 1);
      return 0;
    }
    return 1;
  }
  if (!lua_istable(L, -1))
    luaL_error(L, "window.policies: a policy is \"keep\", \"drop\", "
                  "{ truncate = n } or { summarize = n }");
  lua_getfield(L, -1, "truncate");
  if (!lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    lua_getfield(L, -1, "summarize");
  }
  int isnum;
  lua_Number limit = lua_tonumberx(L, -1, &isnum);
  lua_pop(L, 1);
  if (!isnum)
    luaL_error(L, "window.policies: a policy's tokens are a number");
  if ((lua_Number)tokens_of(L, (lua_Integer)clen, w->max_factor) <= limit) {
    lua_pop(L, 1);
    return 0;
  }
  return 2;
}

/* Renders the event at ev with `render` (at r), and places its message.
 * thread, agent at 2, 3. */
static void walk_event(lua_State *L, walk *w, int ev, int r, lua_Integer seq) {
  lua_getiuservalue(L, 1, UV_HELPERS);
  lua_getfield(L, -1, "pure");
  lua_pushvalue(L, r);
  if (lua_rawget(L, -2) == LUA_TNIL || !lua_toboolean(L, -1))
    w->keep = 0;
  lua_pop(L, 3);
  lua_pushvalue(L, r);
  lua_pushvalue(L, ev);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_call(L, 3, 1);
  int m = lua_gettop(L);
  if (!lua_toboolean(L, m)) {
    lua_pop(L, 1);
    return;
  }
  if (!lua_istable(L, m))
    luaL_error(L, "a renderer of event %I made a %s, not a message", seq,
               luaL_typename(L, m));
  int cut = 0;
  int pol = acting_policy(L, w, ev, m, seq); /* (pushes it if any) */
  lua_getfield(L, m, "role");
  int tool = is(L, -1, "tool");
  lua_pop(L, 1);
  if (pol == 1 && !tool) {
    lua_getfield(L, m, "tag");
    int tagged = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!tagged) { /* only an answer's place must be kept */
      lua_pop(L, 2);
      return;
    }
  }
  if (pol) {
    lua_getiuservalue(L, 1, UV_HELPERS);
    lua_getfield(L, -1, "cut_record");
    lua_pushvalue(L, ev);
    lua_pushvalue(L, m);
    lua_pushvalue(L, -5); /* the policy */
    lua_call(L, 3, 1);
    lua_getiuservalue(L, 1, UV_CUTS);
    lua_insert(L, -2);
    cut = (int)lua_rawlen(L, -2) + 1;
    lua_rawseti(L, -2, cut);
    lua_pop(L, 3); /* cuts, helpers, policy */
  }
  lua_getiuservalue(L, 1, UV_FORMS);
  lua_pushvalue(L, m);
  lua_pushboolean(L, 0);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  if (tool) {
    lua_getfield(L, m, "tool_call_id");
    int id = lua_gettop(L);
    lua_getiuservalue(L, 1, UV_ANSWERS);
    lua_pushvalue(L, id);
    int t = lua_rawget(L, -2);
    int owed = t == LUA_TBOOLEAN && !lua_toboolean(L, -1);
    lua_pop(L, 2);
    if (owed)
      answer(L, w, id, add_message(L, w, m, cut));
    lua_pop(L, 1);
  } else {
    start_unit(L, w, add_message(L, w, m, cut), seq, 0);
  }
  lua_pop(L, 1); /* the message */
}

/* Places the compaction's summary, where the first event it hides was. */
static void place_summary(lua_State *L, walk *w) {
  lua_getiuservalue(L, 1, UV_HELPERS);
  lua_getfield(L, -1, "summary");
  lua_getiuservalue(L, 1, UV_SUMMARY);
  lua_Integer seq = int_field(L, lua_gettop(L), "seq", "the compaction");
  lua_call(L, 1, 1);
  int m = lua_gettop(L);
  lua_getiuservalue(L, 1, UV_FORMS);
  lua_pushvalue(L, m);
  lua_pushboolean(L, 0);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  start_unit(L, w, add_message(L, w, m, 0), seq, 1);
  w->summary_placed = 1;
  lua_pop(L, 2);
}

/* walk:advance(thread, agent) -> keep */
enum { A_EVENTS = 5, A_USED, A_HELPERS, A_DEFAULTS };

static int l_advance(lua_State *L) {
  walk *w = enter(L, 4); /* 2 thread, 3 agent */
  lua_getiuservalue(L, 1, UV_EVENTS);
  lua_getiuservalue(L, 1, UV_USED);
  lua_getiuservalue(L, 1, UV_HELPERS);
  lua_getfield(L, A_HELPERS, "defaults");
  lua_Integer len = (lua_Integer)lua_rawlen(L, A_EVENTS);
  for (lua_Integer i = w->n + 1; i <= len; i++) {
    lua_rawgeti(L, A_EVENTS, i);
    int ev = lua_gettop(L);
    luaL_checktype(L, ev, LUA_TTABLE);
    lua_Integer seq = int_field(L, ev, "seq", "an event");
    lua_getfield(L, ev, "type");
    int type = lua_gettop(L);
    if (is(L, type, "event_summary")) {
      lua_getiuservalue(L, 1, UV_SUMMARIES);
      lua_getfield(L, ev, "data");
      lua_getfield(L, -1, "of");
      lua_getfield(L, -2, "summary");
      lua_settable(L, -4);
      lua_pop(L, 2);
    }
    lua_pushvalue(L, type);
    lua_gettable(L, A_DEFAULTS);
    int r = lua_gettop(L);
    /* (a type no table can be keyed by has no renderer to change) */
    if (!lua_isnil(L, type) &&
        !(lua_type(L, type) == LUA_TNUMBER &&
          lua_tonumber(L, type) != lua_tonumber(L, type))) {
      lua_pushvalue(L, type);
      if (lua_toboolean(L, r))
        lua_pushvalue(L, r);
      else
        lua_pushboolean(L, 0);
      lua_rawset(L, A_USED);
    }
    int hidden = w->nranges > 0 && covered(w, seq);
    if (hidden && !pinned(w, seq)) {
      if (!w->summary_placed)
        place_summary(L, w);
    } else if (lua_toboolean(L, r)) {
      walk_event(L, w, ev, r, seq);
    }
    if (w->has_open && !hidden) {
      unit *u = &w->units[w->nunits - 1];
      if (seq > u->last)
        u->last = seq;
    }
    lua_settop(L, A_DEFAULTS);
    w->n = i;
  }
  lua_pushboolean(L, w->keep);
  return 1;
}

/* ---- a plan ---- */

/* The message in slot k at this plan: its cut's, if it has one (made once
 * a plan, kept in `done`), and its size. done at `done`. stack: -> msg */
static lua_Integer push_placed(lua_State *L, walk *w, int k, int done,
                               int plan) {
  int cut = w->msgs[k].cut;
  if (cut == 0) {
    lua_getiuservalue(L, 1, UV_MSGS);
    lua_rawgeti(L, -1, k);
    lua_remove(L, -2);
    return w->msgs[k].bytes;
  }
  if (lua_rawgeti(L, done, cut) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_getiuservalue(L, 1, UV_HELPERS);
    lua_getfield(L, -1, "cut");
    lua_remove(L, -2);
    lua_pushvalue(L, plan);
    lua_getiuservalue(L, 1, UV_CUTS);
    lua_rawgeti(L, -1, cut);
    lua_remove(L, -2);
    lua_getiuservalue(L, 1, UV_SUMMARIES);
    lua_call(L, 3, 1);
    luaL_checktype(L, -1, LUA_TTABLE);
    lua_pushvalue(L, -1);
    lua_rawseti(L, done, cut);
  }
  lua_Integer bytes, overhead;
  measure(L, w, lua_gettop(L), &bytes, &overhead);
  return bytes;
}

/* In this plan's view of the open unit: a note lives for this plan
 * only, as -n, the n-th of done's `notes`. */
static void place_in_view(lua_State *L, walk *w, int k, int done) {
  if (k == 0) {
    push_note(L, lua_gettop(L));
    lua_getfield(L, done, "notes");
    lua_insert(L, -2);
    k = -(int)(lua_rawlen(L, -2) + 1);
    lua_rawseti(L, -2, -k);
    lua_pop(L, 1);
  }
  GROW(L, w->view, w->capview, w->nview + 1);
  w->view[w->nview++] = k;
}

/* Settles the open unit in a view for this plan: its calls' answers so
 * far, a note for each other. */
static void settle_view(lua_State *L, walk *w, int done) {
  w->nview = 0;
  each_answer(L, w, place_in_view, done);
}

/* A place of the plan: message k of the walk, or note -k of the view.
 * stack: -> msg; returns its size, *overhead its framing. */
static lua_Integer push_place(lua_State *L, walk *w, int k, int done, int plan,
                              lua_Integer *overhead) {
  if (k > 0) {
    *overhead = w->msgs[k].overhead;
    return push_placed(L, w, k, done, plan);
  }
  lua_getfield(L, done, "notes");
  lua_rawgeti(L, -1, -k);
  lua_remove(L, -2);
  lua_Integer bytes;
  measure(L, w, lua_gettop(L), &bytes, overhead);
  return bytes;
}

/* walk:plan(plan) -> messages, tokens, at_one, summary, pinned_call */
enum { P_PLAN = 2, P_DONE = 4, P_MESSAGES };

static int l_plan(lua_State *L) {
  luaL_checktype(L, P_PLAN, LUA_TTABLE);
  walk *w = enter(L, 3);
  lua_getfield(L, P_PLAN, "factor");
  double factor = (double)luaL_checknumber(L, -1);
  lua_pop(L, 1);
  if (!(factor >= 0 && factor <= 1e6))
    return luaL_error(L,
                      "a plan's factor is a number of tokens per token "
                      "estimated (0 to a million), not %f",
                      factor);
  /* done: what this plan cut and noted, kept for units() (not the plan:
   * it is not kept alive while its model call is out) */
  lua_createtable(L, 0, 1);
  lua_newtable(L);
  lua_setfield(L, P_DONE, "notes");
  lua_pushvalue(L, P_DONE);
  lua_setiuservalue(L, 1, UV_PLAN);
  int has_view = w->has_open && !w->units[w->nunits - 1].settled;
  if (has_view)
    settle_view(L, w, P_DONE);
  else
    w->nview = 0;
  lua_createtable(L, (int)(w->nslots + w->nview), 0); /* P_MESSAGES */
  lua_Unsigned total = 0, at_one = 0, count = 0;
  for (size_t i = 0; i < w->nunits; i++) {
    unit *u = &w->units[i];
    int is_open = w->has_open && i == w->nunits - 1;
    if (is_open)
      u->pinned = holds_pin(w, u);
    lua_Unsigned t = (lua_Unsigned)u->overhead;
    at_one += (lua_Unsigned)u->overhead;
    size_t n = u->nslots + (is_open ? w->nview : 0);
    for (size_t j = 0; j < n; j++) {
      int k =
          j < u->nslots ? w->slots[u->first_slot + j] : w->view[j - u->nslots];
      lua_Integer overhead;
      lua_Integer bytes = push_place(L, w, k, P_DONE, P_PLAN, &overhead);
      if (j >= u->nslots) {
        t += (lua_Unsigned)overhead;
        at_one += (lua_Unsigned)overhead;
      }
      t += (lua_Unsigned)tokens_of(L, bytes, factor);
      at_one += (lua_Unsigned)tokens_of(L, bytes, 1);
      lua_rawseti(L, P_MESSAGES, (lua_Integer)++count);
    }
    total += t;
  }
  lua_pushinteger(L, (lua_Integer)total);
  lua_pushinteger(L, (lua_Integer)at_one);
  lua_getiuservalue(L, 1, UV_SUMMARY);
  lua_getiuservalue(L, 1, UV_PINNED_CALL);
  return 5;
}

/* walk:units() -> the last plan's units, as Lua tables */
enum { U_DONE = 3, U_NO_PLAN, U_UNITS };

static int l_units(lua_State *L) {
  walk *w = enter(L, 2);
  if (lua_getiuservalue(L, 1, UV_PLAN) != LUA_TTABLE) /* U_DONE */
    return luaL_error(L, "walk:units() before a plan");
  lua_pushnil(L); /* U_NO_PLAN: its cuts are all in done */
  lua_createtable(L, (int)w->nunits, 0); /* U_UNITS */
  for (size_t i = 0; i < w->nunits; i++) {
    unit *u = &w->units[i];
    int is_open = w->has_open && i == w->nunits - 1;
    size_t n = u->nslots + (is_open ? w->nview : 0);
    lua_createtable(L, 0, 8);
    int ut = lua_gettop(L);
    lua_createtable(L, (int)n, 0);
    lua_createtable(L, (int)n, 0);
    int msgs = ut + 1, sizes = ut + 2;
    lua_Unsigned overhead = (lua_Unsigned)u->overhead;
    for (size_t j = 0; j < n; j++) {
      int k =
          j < u->nslots ? w->slots[u->first_slot + j] : w->view[j - u->nslots];
      lua_Integer o;
      lua_Integer bytes = push_place(L, w, k, U_DONE, U_NO_PLAN, &o);
      if (j >= u->nslots)
        overhead += (lua_Unsigned)o;
      lua_rawseti(L, msgs, (lua_Integer)j + 1);
      lua_pushinteger(L, bytes);
      lua_rawseti(L, sizes, (lua_Integer)j + 1);
    }
    lua_setfield(L, ut, "bytes");
    lua_setfield(L, ut, "messages");
    lua_pushinteger(L, (lua_Integer)overhead);
    lua_setfield(L, ut, "overhead");
    lua_pushinteger(L, u->first);
    lua_setfield(L, ut, "first");
    lua_pushinteger(L, u->last);
    lua_setfield(L, ut, "last");
    if (u->summary) {
      lua_pushliteral(L, "summary");
      lua_setfield(L, ut, "kind");
    }
    lua_pushboolean(L, u->pinned);
    lua_setfield(L, ut, "pinned");
    lua_pushinteger(L, 0);
    lua_setfield(L, ut, "tokens");
    lua_rawseti(L, U_UNITS, (lua_Integer)i + 1);
  }
  return 1;
}

enum { C_EVENTS = 2, C_SETTINGS, C_DEFAULTS, C_WALKED = 6, C_SEEN, C_USED };

static int l_continues(lua_State *L) {
  walk *w = enter(L, 5);
  lua_getiuservalue(L, 1, UV_EVENTS);   /* C_WALKED */
  lua_getiuservalue(L, 1, UV_SETTINGS); /* C_SEEN */
  lua_Integer len = (lua_Integer)lua_rawlen(L, C_EVENTS);
  if (!lua_rawequal(L, C_EVENTS, C_WALKED) ||
      !lua_rawequal(L, C_SETTINGS, C_SEEN) || w->n > len) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_getiuservalue(L, 1, UV_USED); /* C_USED */
  lua_pushnil(L);
  while (lua_next(L, C_USED)) { /* a renderer hot-patched, put in or out */
    lua_pushvalue(L, -2);
    lua_gettable(L, C_DEFAULTS);
    if (!lua_toboolean(L, -1)) {
      lua_pop(L, 1);
      lua_pushboolean(L, 0);
    }
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (!same) {
      lua_pushboolean(L, 0);
      return 1;
    }
  }
  for (lua_Integer i = w->n + 1; i <= len; i++) {
    lua_rawgeti(L, C_EVENTS, i);
    lua_getfield(L, -1, "type");
    int changes = is(L, -1, "compaction") || is(L, -1, "input") ||
                  is(L, -1, "human_response");
    lua_pop(L, 2);
    if (changes) {
      lua_pushboolean(L, 0);
      return 1;
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_forms(lua_State *L) {
  check_walk(L);
  lua_getiuservalue(L, 1, UV_FORMS);
  return 1;
}

static int l_walked(lua_State *L) {
  lua_pushinteger(L, check_walk(L)->n);
  return 1;
}

/* What is pinned (the first input, the latest human answer) and hidden
 * (the latest compaction's ranges), found once, as a walk starts. */
static void find_pins(lua_State *L, walk *w, int events) {
  lua_Integer len = (lua_Integer)lua_rawlen(L, events);
  int input = 0, human = 0;
  for (lua_Integer i = 1; i <= len; i++) {
    lua_rawgeti(L, events, i);
    lua_getfield(L, -1, "type");
    if (is(L, -1, "input") && !input) {
      w->pinned[w->npinned++] = int_field(L, -2, "seq", "an event");
      input = 1;
    } else if (is(L, -1, "human_response")) {
      human = (int)i;
    } else if (is(L, -1, "compaction")) {
      lua_pushvalue(L, -2);
      lua_setiuservalue(L, 1, UV_SUMMARY);
    }
    lua_pop(L, 2);
  }
  if (human) {
    lua_rawgeti(L, events, human);
    w->pinned[w->npinned++] = int_field(L, -1, "seq", "an event");
    lua_getfield(L, -1, "data");
    lua_getfield(L, -1, "kind");
    int ask = is(L, -1, "ask");
    lua_pop(L, 1);
    if (ask) {
      lua_getfield(L, -1, "call_id");
      if (lua_toboolean(L, -1))
        lua_setiuservalue(L, 1, UV_PINNED_CALL);
      else
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
  }
  if (lua_getiuservalue(L, 1, UV_SUMMARY) == LUA_TTABLE) {
    lua_getfield(L, -1, "data");
    lua_getfield(L, -1, "ranges");
    if (lua_toboolean(L, -1)) {
      int ranges = lua_gettop(L);
      lua_Integer n = luaL_len(L, ranges);
      if (n > 0 && (lua_Unsigned)n > SIZE_MAX / 4 / sizeof *w->ranges)
        luaL_error(L, "the compaction has too many ranges");
      if (n > 0)
        GROW(L, w->ranges, w->capranges, (size_t)n * 2);
      for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, ranges, i);
        for (int j = 0; j < 2; j++) {
          lua_geti(L, -1, j + 1);
          int isnum;
          w->ranges[2 * (i - 1) + j] = lua_tointegerx(L, -1, &isnum);
          if (!isnum)
            luaL_error(L, "the compaction's ranges are not of seqs");
          lua_pop(L, 1);
        }
        lua_pop(L, 1);
        w->nranges++;
      }
      merge_ranges(w);
    }
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
}

/* core.window_walk(events, settings, defaults, helpers) */
static int l_window_walk(lua_State *L) {
  luaL_checkstack(L, STACK_NEEDED, "the window's walk");
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TTABLE);
  luaL_checktype(L, 4, LUA_TTABLE);
  lua_settop(L, 4);
  walk *w = lua_newuserdatauv(L, sizeof *w, UV_COUNT);
  memset(w, 0, sizeof *w);
  w->keep = 1;
  luaL_setmetatable(L, WALK_MT);
  lua_insert(L, 1); /* 1 walk, 2 events, 3 settings, 4 defaults, 5 helpers */
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 1, UV_EVENTS);
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, 1, UV_SETTINGS);
  /* the helpers, with the renderers they go with, in a table of its own */
  lua_createtable(L, 0, 5); /* 6 */
  lua_pushnil(L);
  while (lua_next(L, 5)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, 6);
  }
  lua_pushvalue(L, 4);
  lua_setfield(L, 6, "defaults");
  lua_getfield(L, 6, "message_overhead");
  w->message_overhead = luaL_checkinteger(L, -1);
  lua_getfield(L, 6, "max_factor");
  w->max_factor = (double)luaL_checknumber(L, -1);
  lua_pop(L, 2);
  lua_setiuservalue(L, 1, UV_HELPERS);
  for (int uv = UV_MSGS; uv <= UV_FORMS; uv++) {
    if (uv == UV_SUMMARY)
      continue;
    lua_newtable(L);
    lua_setiuservalue(L, 1, uv);
  }
  find_pins(L, w, 2);
  lua_settop(L, 1);
  return 1;
}

void spool__open_window_walk(lua_State *L) {
  static const luaL_Reg methods[] = {{"continues", l_continues},
                                     {"advance", l_advance},
                                     {"plan", l_plan},
                                     {"units", l_units},
                                     {"forms", l_forms},
                                     {"walked", l_walked},
                                     {NULL, NULL}};
  spool__class(L, WALK_MT, methods, walk_gc, walk_close);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_window_walk);
  lua_setfield(L, -2, "window_walk");
}
