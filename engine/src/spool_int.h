/*
 * spool_int.h: declarations shared by the engine's C files and never
 * installed. Internal non-static symbols carry the spool__ prefix.
 *
 * The three pieces every binding meets:
 *  - spool_engine: one uv loop, one Lua state, the HTTP client, the tasks.
 *  - spool__task: a Lua coroutine the scheduler resumes (an agent run, a
 *    server request handler, a script). A task waits on at most one
 *    spool__op at a time.
 *  - spool__op: one pending operation (an HTTP transfer, a timer, a file
 *    read). Its completion pushes results onto the task's coroutine and
 *    wakes the task; its cancel function releases it without waking.
 */
#ifndef SPOOL_INT_H
#define SPOOL_INT_H

#include <stdint.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "base/buf.h"
#include "spool.h"

typedef struct spool__task spool__task;
typedef struct spool__op spool__op;
typedef struct spool__limits spool__limits; /* sandbox.c */

struct spool__op {
  /* Releases the operation without waking its task; the op's memory may be
   * freed later (in a close or after-work callback), never touched again by
   * the task. */
  void (*cancel)(spool__op *op);
  /* May spool__task_interrupt abandon it? Only waits whose abandonment
   * changes nothing elsewhere (a timer, an HTTP transfer, a signal) — never
   * a store write, which commits whether or not its task still waits. */
  int interruptible;
};

/* How a task ended, passed to its done callback. */
enum { SPOOL__TASK_OK, SPOOL__TASK_ERROR, SPOOL__TASK_CANCELLED };

/*
 * Called once when a task ends. With SPOOL__TASK_OK the task's return values
 * are the top `nres` values of t->co; with SPOOL__TASK_ERROR the top of e->L
 * holds the error message with a traceback. The callback must leave both
 * stacks as it found them.
 */
typedef void (*spool__task_done_cb)(spool__task *t, int how, int nres,
                                    void *ud);

struct spool__task {
  spool_engine *e;
  lua_State *co;
  int co_ref;         /* registry ref that anchors the coroutine */
  int nargs;          /* values waiting on co for the next resume */
  spool__op *pending; /* what the task waits on, or NULL */
  spool__task_done_cb done;
  void *done_ud;
  spool__task *next_ready;
  spool__task *prev, *next; /* all live tasks, for shutdown */
  unsigned long long id;
  int queued;
  int sliced;            /* yielded by the count hook: its slice is over */
  spool__limits *limits; /* what it may spend (sandbox.c), or NULL */
};

typedef struct spool__sched {
  spool__task *ready_head, *ready_tail;
  spool__task *later_head, *later_tail; /* sliced: resumed after a poll */
  spool__task *current;                 /* the task being resumed */
  uint64_t slice_start;                 /* when current was resumed */
  spool__task *all;
  uv_check_t check; /* drains the ready queue after each poll */
  uv_idle_t idle;   /* active while tasks are ready, so poll never blocks */
  /* Runs after each drain of the ready queue (the engine's: events.c), so
   * the scheduler knows nothing of what sits above it. */
  void (*tick_end)(spool_engine *e);
  int in_check; /* inside on_check: running tasks, their host tools and,
                   on a host's loop, the host's event callback */
  unsigned long long next_id;
  int ntasks;
} spool__sched;

typedef enum {
  SPOOL__LOG_ERROR,
  SPOOL__LOG_WARN,
  SPOOL__LOG_INFO,
  SPOOL__LOG_DEBUG
} spool__log_level;

struct spool_engine {
  uv_loop_t own_loop;
  uv_loop_t *loop;
  lua_State *L;
  struct spool__lua_heap *heap; /* lua_heap.h: L's memory */
  int lua_warnings;             /* Lua's warn("@on") */
  spool__buf lua_warning;       /* a warning arriving in pieces */
  struct spool__http *http;     /* http.h */
  struct spool__otlp *otlp;     /* otlp.h: where spans go */
  spool_span_cb on_span;        /* the host's, for each finished span */
  void *on_span_ud;
  uint64_t trace_rng;         /* l_trace.c's ids */
  spool__buf trace_buf;       /* l_trace.c encodes each span here */
  struct spool__store *store; /* store.h; NULL until the library opens it */
  spool__sched sched;
  spool__limits *main_limits; /* limits outside any task (sandbox.c) */
  spool__limits *limits_now;  /* the limits in force now, or NULL */
  lua_State *sliced_co;       /* an agent's coroutine the hook yielded */
  long long clock_offset_ms;  /* $SPOOL_TEST_TIME_OFFSET_MS: tests move time */
  int api_ref; /* registry ref: the table returned by spool.engine */
  int opened;
  int sched_ready;
  int handles_closing; /* close callbacks still due before e can be freed */
  int turning;         /* uv_run calls of the engine's own, not returned */
  int delivering;      /* the host's event callback is being called */
  int stop;
  int own_loop_used;
  spool__log_level log_level;
  int log_json; /* log lines as JSON objects */
  char *opt_project, *opt_lua_dir, *opt_model, *opt_base_url, *opt_api_key_env,
      *opt_mock, *opt_store, *opt_agents_dir, *opt_prompts_dir, *opt_watch,
      *opt_stream;
  spool__buf errmsg;
  spool__buf result; /* storage for strings returned to API callers */
  spool_event_cb on_event;
  void *on_event_ud;
  struct spool__queued_event *events_head, *events_tail;
  struct spool__host_tool *host_tools;      /* l_host.c */
  void (*free_host_tools)(spool_engine *e); /* l_host.c sets it */
  char *project_abs;                        /* the project folder, absolute */
  char *lua_dir;                            /* the Lua library in use */
};

/* Copies the caller's struct `in`, which starts with its size (spool.h's
 * *_INIT macros), into `out`, this version's of out_size bytes: the fields
 * the caller's version has, zero beyond. -1 if its size is not set. */
static inline int spool__copy_struct(void *out, size_t out_size,
                                     const void *in) {
  size_t size;
  memcpy(&size, in, sizeof size);
  if (size < sizeof size || size > 4096)
    return -1;
  memset(out, 0, out_size);
  memcpy(out, in, size < out_size ? size : out_size);
  return 0;
}

/* ---- engine.c ---- */
int spool__fail(spool_engine *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void spool__log(spool_engine *e, spool__log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A line the host or a command must say, unfiltered by the log level, in
 * the log's format (spool_engine_say); SPOOL_EINVAL for an unknown level. */
int spool__say(const spool_engine *e, const char *level, const char *msg);
/* Turns the loop once in `mode`, as the API's own turn (spool__turning),
 * then delivers the events it made to the host: outside every callback of
 * the loop, so the host's callback may call any function of spool.h.
 * Returns what uv_run does. */
int spool__turn(spool_engine *e, uv_run_mode mode);
/* SPOOL_ESTATE, saying why a function that turns the loop may not run
 * inside one of its callbacks (spool__sched.in_check). */
int spool__refuse_inside(spool_engine *e);
/* The engine that owns a Lua state (from the registry). */
spool_engine *spool__engine_of(lua_State *L);
/*
 * Calls the function below its nargs arguments on e->L with a traceback
 * message handler. stack: f, args -> results (nres) on success, or the error
 * message on failure. Returns the lua_pcall status.
 */
int spool__pcall(lua_State *L, int nargs, int nres);

/* ---- events.c ---- */
/* The fields of one event, as l_core.c reads them from Lua. */
typedef struct spool__event_fields {
  const char *thread, *agent, *type, *json, *text;
  size_t json_len, text_len;
  long long seq;
  int depth;
} spool__event_fields;
/* Copies an event into the queue for the host's callback; 0 or -1. */
int spool__events_queue(spool_engine *e, const spool__event_fields *f);
/* Copies a finished span (OTLP JSON) into the same queue, for the host's
 * span callback; 0 or -1. */
int spool__events_queue_span(spool_engine *e, const char *json, size_t len);
/* Calls the host's callback with each queued event, in order; not again
 * while it runs (a callback's own calls queue theirs for this loop). */
void spool__events_flush(spool_engine *e);
/* Frees the events not delivered. */
void spool__events_free(spool_engine *e);
/* Runs after each drain of the ready queue: hands the tick's store ops to
 * the store thread. Events wait for spool__turn to deliver them, outside
 * the loop; when the host turns its own loop, they are delivered here,
 * outside any Lua code (and the functions of spool.h that turn the loop
 * refuse to run inside: see spool__sched.in_check). */
void spool__engine_tick_end(spool_engine *e);

/* ---- sched.c ---- */
int spool__sched_init(spool_engine *e);
/* Cancels every task (their done callbacks see SPOOL__TASK_CANCELLED). */
void spool__sched_cancel_all(spool_engine *e);
/* Closes the scheduler's two handles; on_closed runs once for each, and
 * their memory (inside the engine) is in use until it has. */
void spool__sched_close(spool_engine *e, uv_close_cb on_closed);
/*
 * Starts a task. stack of L (e->L or a task): f, args (nargs) -> (popped). The
 * task first runs from the ready queue, never inside this call. Call it only
 * under protection: it raises a Lua error when out of memory.
 */
spool__task *spool__task_spawn(spool_engine *e, lua_State *L, int nargs,
                               spool__task_done_cb done, void *ud);
/* The task whose coroutine is L, or NULL (main state, user coroutines). */
spool__task *spool__task_current(lua_State *L);
/* Like spool__task_current, but raises a Lua error naming `what` when L is
 * not a task that may yield. */
spool__task *spool__task_check(lua_State *L, const char *what);
/* Records op as what the task waits on and yields. Call as the return
 * expression of a lua_CFunction. */
int spool__task_wait(lua_State *L, spool__task *t, spool__op *op);
/* The op finished: nres results were pushed onto t->co; resume later. */
void spool__task_wake(spool__task *t, int nres);
/*
 * The op finished: calls push(L) under protection on e->L with `ud` as a
 * light userdata argument, moves the values it returns onto t->co, and
 * wakes the task with them. If push raises (out of memory), the task wakes
 * with nil and the error message instead. For completions that build Lua values
 * from a uv or curl callback, where a Lua error must not escape.
 */
void spool__task_wake_with(spool__task *t, lua_CFunction push, void *ud);
/* Cancels what task `id` waits on and wakes it with nil, why ("ENAME:
 * ..."), and the name; 1 if it was waiting on an interruptible op (see
 * spool__op), else 0. */
int spool__task_interrupt(spool_engine *e, unsigned long long id,
                          const char *why);

/* ---- sandbox.c ---- */
/* Puts limits in force (NULL: none): the count hook reads them, and the
 * Lua heap charges their memory account. */
void spool__limits_enter(spool_engine *e, spool__limits *l);
/* Ends the budgets of a chain of limits: any agent code that runs under
 * them now (a __close as a task is cancelled) is stopped at once. */
void spool__limits_expire(spool__limits *l);
/* Did l's memory account refuse a block since the refusal was last told? */
int spool__limits_refused(spool_engine *e, spool__limits *l);
/* Frees a chain of limits (l and those it replaced); accepts NULL. */
void spool__limits_free(spool_engine *e, spool__limits *l);

/* ---- bindings: luaopen_* for the modules the engine preloads ---- */
int luaopen_spool_core(lua_State *L);
int luaopen_spool_json(lua_State *L);
/* Each adds its functions to the table on top of the stack; the engine is
 * the light userdata upvalue of every function. */
void spool__open_http(lua_State *L);
void spool__open_server(lua_State *L);
void spool__open_fs(lua_State *L);
void spool__open_store(lua_State *L);
void spool__open_host(lua_State *L);
void spool__open_watch(lua_State *L);
void spool__open_notify(lua_State *L);
void spool__open_process(lua_State *L);
void spool__open_cond(lua_State *L);
void spool__open_sse(lua_State *L);
void spool__open_trace(lua_State *L);
void spool__open_ed25519(lua_State *L);
void spool__open_limits(lua_State *L);
void spool__open_window(lua_State *L);
/* l_window.c: spool.tokens.of_bytes, ceil(bytes / 4 * factor) in the same
 * double arithmetic (0 for no bytes): into *tokens, or -1 when that makes
 * no token count (past what an integer holds, or not a number). */
int spool__tokens_of(lua_Number bytes, lua_Number factor, lua_Integer *tokens);
void spool__open_window_walk(lua_State *L);
void spool__open_thread(lua_State *L);
void spool__open_wire(lua_State *L);

/* ---- l_json.c: json.encode's writer, for the other bindings ---- */
/* Appends the value at idx as json.encode writes it (keys sorted, the
 * array mark and json.raw honoured), as a value `depth` containers deep in
 * the document written (for the limit on nesting); raises what
 * json.encode raises. */
void spool__json_append(lua_State *L, int idx, spool__buf *out, int depth);
/* What the errors spool__json_append raises begin with. */
#define SPOOL__JSON_REFUSED "spool.json.encode: "
/* The text of the json.raw at idx (checked to be one JSON value when it
 * was made), or NULL if it is none. */
const char *spool__json_raw_text(lua_State *L, int idx, size_t *len);

/* ---- bind.c: what the bindings share ---- */
/* Pushes n bytes as lower-case hex. */
void spool__push_hex(lua_State *L, const unsigned char *p, size_t n);
/* Makes the metatable of a userdata class: `methods` (NULL-terminated) as
 * its __index, `gc` and `close` (each if any) as __gc and __close. Leaves
 * it on the stack, for the caller to add more (__tostring) and pop. */
void spool__class(lua_State *L, const char *name, const luaL_Reg *methods,
                  lua_CFunction gc, lua_CFunction close);
/* A failure as luv returns one: nil, the message ("ENAME: why", formatted
 * as lua_pushfstring does) and its name, for callers that branch on it
 * without reading the text. Returns 3, for `return spool__push_fail(...)`. */
int spool__push_fail(lua_State *L, const char *fmt, ...);

/* Puts a searcher for the library's precompiled chunks (l_bytecode.c)
 * before Lua's own. */
void spool__add_bytecode_searcher(lua_State *L, const char *lua_dir,
                                  const char *bytecode_dir);

#endif
