/*
 * l_host.c: host tools, the embedding application's C functions that
 * agents call as tools (spool.h: spool_tool_register, spool_call_*), and
 * their Lua binding:
 *
 *   host_tools()                       -> { name = { description, schema } }
 *   host_call(name, args_json, thread) -> result_json | nil, "EHOST: why"
 *
 * A call is answered exactly once by the host, before its function returns
 * (no yield at all) or later on the loop thread (the task waits). The call
 * object outlives a cancelled wait: the host's later answer frees it.
 */
#include <stdlib.h>
#include <string.h>

#include "codec/json.h"
#include "spool_int.h"

struct spool__host_tool {
  struct spool__host_tool *next;
  char *name, *description, *schema;
  spool_tool_fn fn;
  void *ud;
  void (*free_ud)(void *ud);
};

struct spool_call {
  spool__op op;   /* what the task waits on (first: ops are cast back) */
  spool__task *t; /* NULL until the task waits; NULL again if cancelled */
  char *tool, *thread;
  int in_fn;    /* the host's function is still running */
  int answered; /* answered while in_fn: the result waits here */
  int failed;
  char *result; /* JSON, or the failure message */
};

static void free_call(spool_call *c) {
  free(c->tool);
  free(c->thread);
  free(c->result);
  free(c);
}

static char *dup_or_null(const char *s) {
  return s ? strdup(s) : NULL;
}

/* Frees a tool and, by its host's destructor, what the host gave it. */
static void free_tool(struct spool__host_tool *t) {
  if (t->free_ud)
    t->free_ud(t->ud);
  free(t->name);
  free(t->description);
  free(t->schema);
  free(t);
}

static void free_host_tools(spool_engine *e) {
  while (e->host_tools) {
    struct spool__host_tool *t = e->host_tools;
    e->host_tools = t->next;
    free_tool(t);
  }
}

int spool_tool_add(spool_engine *e, const spool_tool_def *def) {
  if (e == NULL || def == NULL)
    return e ? spool__fail(e, SPOOL_EINVAL, "def is NULL") : SPOOL_EINVAL;
  spool_tool_def d;
  if (spool__copy_struct(&d, sizeof d, def) != 0)
    return spool__fail(e, SPOOL_EINVAL,
                       "spool_tool_def: its size is not set (initialise it "
                       "with SPOOL_TOOL_DEF_INIT)");
  if (d.name == NULL || d.fn == NULL || d.params_schema_json == NULL)
    return spool__fail(e, SPOOL_EINVAL,
                       "a host tool needs a name, a schema and a function");
  spool__json_error err;
  if (spool__json_check(d.params_schema_json, strlen(d.params_schema_json),
                        NULL, &err) != 0) {
    char why[160];
    spool__json_error_format(&err, why, sizeof why);
    return spool__fail(e, SPOOL_EINVAL,
                       "the schema of host tool '%s' is not JSON: %s", d.name,
                       why);
  }
  struct spool__host_tool *t = calloc(1, sizeof *t);
  if (t == NULL || (t->name = strdup(d.name)) == NULL ||
      (t->description = strdup(d.description ? d.description : d.name)) ==
          NULL ||
      (t->schema = strdup(d.params_schema_json)) == NULL) {
    if (t)
      free_tool(t);
    return spool__fail(e, SPOOL_ENOMEM, "out of memory");
  }
  t->fn = d.fn;
  t->ud = d.ud;
  t->free_ud = d.free_ud;
  /* In place of a tool of that name: its user data goes with it, unless
   * the new one is the same. */
  struct spool__host_tool **pp = &e->host_tools;
  while (*pp && strcmp((*pp)->name, d.name) != 0)
    pp = &(*pp)->next;
  struct spool__host_tool *old = *pp;
  t->next = old ? old->next : NULL;
  *pp = t; /* linked before the old one's destructor, which may call us */
  e->free_host_tools = free_host_tools;
  if (old) {
    if (old->ud == t->ud)
      old->free_ud = NULL;
    free_tool(old);
  }
  return 0;
}

int spool_tool_register(spool_engine *e, const char *name,
                        const char *description, const char *params_schema_json,
                        spool_tool_fn fn, void *ud) {
  spool_tool_def d = SPOOL_TOOL_DEF_INIT;
  d.name = name;
  d.description = description;
  d.params_schema_json = params_schema_json;
  d.fn = fn;
  d.ud = ud;
  return spool_tool_add(e, &d);
}

int spool_tool_unregister(spool_engine *e, const char *name) {
  if (e == NULL || name == NULL)
    return e ? spool__fail(e, SPOOL_EINVAL, "name is NULL") : SPOOL_EINVAL;
  struct spool__host_tool **pp = &e->host_tools;
  while (*pp && strcmp((*pp)->name, name) != 0)
    pp = &(*pp)->next;
  if (*pp == NULL)
    return spool__fail(e, SPOOL_ENOTFOUND, "no host tool '%s' is registered",
                       name);
  struct spool__host_tool *t = *pp;
  *pp = t->next;
  free_tool(t);
  return 0;
}

const char *spool_call_tool(const spool_call *c) {
  return c ? c->tool : NULL;
}

const char *spool_call_thread(const spool_call *c) {
  return c ? c->thread : NULL;
}

/* stack: call -> result_json | nil, "EHOST: message" */
static int push_answer(lua_State *L) {
  spool_call *c = lua_touserdata(L, 1);
  if (c->failed) {
    return spool__push_fail(L, "EHOST: %s", c->result ? c->result : "failed");
  }
  lua_pushstring(L, c->result);
  return 1;
}

static int answer(spool_call *c, int failed, const char *text) {
  int rc = 0;
  if (c == NULL)
    return SPOOL_EINVAL;
  if (!failed) {
    spool__json_error err;
    if (text == NULL || spool__json_check(text, strlen(text), NULL, &err)) {
      failed = 1;
      text = "the host tool's result is not JSON";
      rc = SPOOL_EINVAL;
    }
  }
  c->failed = failed;
  c->result = dup_or_null(text ? text : "failed");
  if (c->in_fn) {
    c->answered = 1; /* host_call picks it up when fn returns */
    return rc;
  }
  if (c->t)
    spool__task_wake_with(c->t, push_answer, c);
  free_call(c);
  return rc;
}

int spool_call_complete(spool_call *c, const char *result_json) {
  return answer(c, 0, result_json);
}

int spool_call_fail(spool_call *c, const char *message) {
  return answer(c, 1, message);
}

static void call_cancel(spool__op *op) {
  spool_call *c = (spool_call *)op;
  c->t = NULL; /* the host still answers; that frees it */
}

static int l_core_host_call(lua_State *L) {
  spool_engine *e = lua_touserdata(L, lua_upvalueindex(1));
  const char *name = luaL_checkstring(L, 1);
  const char *args = luaL_checkstring(L, 2);
  const char *thread = luaL_optstring(L, 3, "");
  spool__task *t = spool__task_check(L, "a host tool");
  struct spool__host_tool *tool = e->host_tools;
  while (tool && strcmp(tool->name, name) != 0)
    tool = tool->next;
  if (tool == NULL) {
    return spool__push_fail(L, "EHOST: no host tool '%s' is registered", name);
  }
  spool_call *c = calloc(1, sizeof *c);
  if (c == NULL || (c->tool = strdup(name)) == NULL ||
      (c->thread = strdup(thread)) == NULL) {
    if (c)
      free_call(c);
    return luaL_error(L, "out of memory");
  }
  c->op.cancel = call_cancel;
  c->in_fn = 1;
  tool->fn(c, args, tool->ud);
  c->in_fn = 0;
  if (c->answered) { /* answered at once: no need to wait */
    int n = 1;
    if (c->failed)
      n = spool__push_fail(L, "EHOST: %s", c->result ? c->result : "failed");
    else
      lua_pushstring(L, c->result);
    free_call(c);
    return n;
  }
  c->t = t;
  return spool__task_wait(L, t, &c->op);
}

static int l_core_host_tools(lua_State *L) {
  spool_engine *e = lua_touserdata(L, lua_upvalueindex(1));
  lua_newtable(L);
  for (struct spool__host_tool *t = e->host_tools; t; t = t->next) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, t->description);
    lua_setfield(L, -2, "description");
    lua_pushstring(L, t->schema);
    lua_setfield(L, -2, "schema");
    lua_setfield(L, -2, t->name);
  }
  return 1;
}

void spool__open_host(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"host_call", l_core_host_call},
      {"host_tools", l_core_host_tools},
      {NULL, NULL},
  };
  lua_pushlightuserdata(L, spool__engine_of(L));
  luaL_setfuncs(L, fns, 1);
}
