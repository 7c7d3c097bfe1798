/*
 * spool.h: the public C API of the spool agent engine, and its only installed
 * header. Anything not declared here is private and may change.
 *
 * Threads: an engine is one libuv loop plus one Lua state, and every call
 * on an engine (and every callback it makes) happens on the thread that
 * turns its loop. Distinct engines share nothing and may live in different
 * threads of one process. The functions that wait for the store (marked
 * below) turn the loop themselves. The engine calls the host back outside
 * its loop's callbacks where it can (events, when spool_engine_run or such
 * a function turns the loop), and there every function may be called.
 * Inside a callback the loop makes — a host tool's function, and the event
 * callback when the host turns its own loop — the waiting functions return
 * SPOOL_ESTATE; nor may the host call them from its own callbacks on a
 * loop it shares with the engine (libuv forbids turning a loop inside
 * itself).
 *
 * Conventions:
 *  - Functions return 0 or a negative SPOOL_E* code. When a function fails,
 *    spool_engine_errmsg() says why in detail; spool_strerror() gives the
 *    generic text of a code.
 *  - Input strings are copied; the caller keeps ownership of them.
 *  - Returned strings are borrowed from the engine and stay valid until the
 *    next call on the same engine, unless a comment says otherwise.
 *  - Destructors accept NULL.
 *  - A struct the caller fills in starts with its size, so the engine
 *    knows which fields the caller's version has and later versions may
 *    add fields: initialise it with its macro (spool_response r =
 *    SPOOL_RESPONSE_INIT;), which sets the size and zeroes the rest, then
 *    set fields by name. A struct whose size is not set is refused
 *    (SPOOL_EINVAL).
 *
 * Signals: serving HTTP (spool_serve_start, spool_mock_start, or a script's
 * spool.core.listen) makes the process ignore SIGPIPE if it left SIGPIPE at
 * its default: a write to a connection its client reset would otherwise
 * end the whole process (libuv writes with write(2), which cannot ask for
 * MSG_NOSIGNAL). A handler the application set, or SIG_IGN, is left as it
 * is. Ignored signals stay ignored across exec, so a program the
 * application starts afterwards that relies on SIGPIPE (a shell pipeline)
 * should have it reset to SIG_DFL in the child.
 */
#ifndef SPOOL_H
#define SPOOL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SPOOL_BUILDING) && defined(__GNUC__)
#define SPOOL_API __attribute__((visibility("default")))
#else
#define SPOOL_API
#endif

#define SPOOL_VERSION "0.2.0"
#define SPOOL_VERSION_NUM 200 /* major * 10000 + minor * 100 + patch */

/*
 * Error codes, XX(name, value, message): SPOOL_<name> is the value,
 * spool_strerror() gives the message and spool_errname() the name. The
 * one list: the codes Lua sees and the control API's statuses derive from
 * it (with the finer names the library uses, each mapped to one of these).
 */
#define SPOOL_ERRNO_MAP(XX)                                                    \
  XX(EINVAL, -1, "invalid argument") /* a bad argument or option */            \
  XX(ENOMEM, -2, "out of memory")                                              \
  XX(ENOTFOUND, -3, "not found")         /* no such agent, thread or file */   \
  XX(EAGENT, -4, "agent failed to load") /* an agent, prompt or script */      \
  XX(ESTATE, -5, "wrong state for this call") /* not for the object's state */ \
  XX(EIO, -6, "input/output error")   /* a system call, store, network */      \
  XX(EINTERNAL, -7, "internal error") /* a bug in spool: please report */      \
  XX(ECONFLICT, -8, "conflict")       /* another run holds or changed */       \
  XX(ECORRUPT, -9, "stored data is corrupt") /* it cannot be read */

#define SPOOL_OK 0
#define SPOOL__ERRNO_ENUM(name, value, message) SPOOL_##name = (value),
enum spool_errno { SPOOL_ERRNO_MAP(SPOOL__ERRNO_ENUM) };
#undef SPOOL__ERRNO_ENUM

/* The status of a thread, one agent's work on one input. */
typedef enum spool_status {
  SPOOL_RUNNING = 0,
  SPOOL_WAITING = 1, /* paused for a human or an outside event */
  SPOOL_DONE = 2,
  SPOOL_FAILED = 3,
  SPOOL_CANCELLED = 4
} spool_status;

/* How far spool_engine_run() turns the loop. */
typedef enum spool_run_mode {
  SPOOL_RUN_IDLE = 0,   /* until no run or handler is in flight */
  SPOOL_RUN_ONCE = 1,   /* one loop iteration, waiting for I/O if needed */
  SPOOL_RUN_NOWAIT = 2, /* one loop iteration, never waiting */
  SPOOL_RUN_FOREVER = 3 /* until spool_engine_stop() */
} spool_run_mode;

typedef struct spool_engine spool_engine;
typedef struct spool_event spool_event;

/* Ids of threads are short ASCII strings; this size holds any of them. */
#define SPOOL_ID_SIZE 40

SPOOL_API const char *spool_version(void);
SPOOL_API int spool_version_num(void);
SPOOL_API const char *spool_strerror(int code);
/* The name of an error code ("EINVAL"), or "UNKNOWN". */
SPOOL_API const char *spool_errname(int code);

/*
 * Creating an engine takes three steps: spool_engine_new() allocates it,
 * spool_engine_set() / spool_engine_use_loop() configure it, and
 * spool_engine_open() loads the configuration and the Lua library.
 *
 * spool_engine_new: *out receives an engine the caller owns and frees with
 * spool_engine_free(). On failure *out is NULL.
 */
SPOOL_API int spool_engine_new(spool_engine **out);

/*
 * Sets one option before spool_engine_open(); both strings are copied.
 * Options set here override the environment, which overrides spool.lua.
 *   "project"   the project folder (agents/, prompts/, spool.lua); default "."
 *   "lua_dir"   where the spool Lua library lives; default: found near the
 *               executable, then in the source tree it was built from
 *   "model"     the model name sent to the provider
 *   "base_url"  the provider's base URL, e.g. http://127.0.0.1:8080/v1
 *   "api_key_env"  the name of the environment variable holding the key
 *   "mock"      "on" forces the built-in mock model, "off" forbids it
 *   "store"     the database file: default .spool/spool.db in the project;
 *               ":memory:" keeps threads for the engine's life only
 *   "agents_dir", "prompts_dir"   where agents and prompts are, if not
 *               the project's agents/ and prompts/
 *   "watch"     "on": reload agents when their files change (see
 *               spool_engine_reload); the watch lives on the engine's loop
 *   "stream"    "on": model replies are streamed, and their text reaches
 *               the event callback piece by piece as "delta" events (not
 *               stored; seq 0; the JSON is {thread, agent, type, text})
 *   "log"       "error", "warn", "info" or "debug" (stderr)
 *   "log_format"  "text" (default) or "json": one object per line, {time,
 *               level, msg} ($SPOOL_LOG_FORMAT if not set here)
 */
SPOOL_API int spool_engine_set(spool_engine *e, const char *key,
                               const char *value);

/* A resolved setting after spool_engine_open: "project" (absolute) or
 * "lua_dir". NULL for other keys or before opening. Borrowed. */
SPOOL_API const char *spool_engine_get(spool_engine *e, const char *key);

/*
 * Runs the engine on the host's libuv loop (a uv_loop_t *) instead of a loop
 * of its own. The host keeps ownership of the loop and must keep it alive
 * until spool_engine_free() returns; it may turn the loop itself instead of
 * calling spool_engine_run().
 */
SPOOL_API int spool_engine_use_loop(spool_engine *e, void *uv_loop);

/* Loads spool.lua and the Lua library. Call once, after the options. On
 * failure the engine can only be freed. */
SPOOL_API int spool_engine_open(spool_engine *e);

/*
 * Sends the spans not yet exported to $OTEL_EXPORTER_OTLP_ENDPOINT (see
 * spool_engine_on_span), turning the loop until they are, for at most ms
 * (0: $OTEL_BSP_EXPORT_TIMEOUT, 30 s by default; a collector that refuses
 * connections is not waited for); what is left then is dropped, and said
 * in the log. For a host that turns its own loop, before
 * spool_engine_free (which does it itself on the engine's own loop). Not
 * from inside a callback of the loop (SPOOL_ESTATE).
 */
SPOOL_API int spool_engine_flush(spool_engine *e, unsigned ms);

/*
 * Cancels what is in flight, closes every handle and frees the engine. On
 * the engine's own loop, spans not yet exported are sent first (as
 * spool_engine_flush). With a
 * host loop, the host must turn its loop once more so close callbacks run;
 * spool_engine_free() does that itself with a loop of its own. NULL is a
 * no-op; freeing an engine twice is undefined, as free() is. Host tool calls
 * still unanswered stay valid until the host answers them; each tool's
 * free_ud has run when this returns. Not from inside a callback the engine
 * makes (an event, a host tool): free it once the callback has returned.
 */
SPOOL_API void spool_engine_free(spool_engine *e);

/* The detailed message of the last failure on e; never NULL. */
SPOOL_API const char *spool_engine_errmsg(const spool_engine *e);

/*
 * Writes msg as one line on stderr in the engine's log format: "spool:
 * msg" as text, or {"time", "level", "msg"} with "log_format" (or
 * $SPOOL_LOG_FORMAT) "json", so that a log collector reads every line a
 * host writes too. Unlike the engine's own log it is not filtered by "log":
 * it is for what the host must say (its errors, where it listens). level
 * is "error", "warn", "info" or "debug". Works before spool_engine_open.
 */
SPOOL_API int spool_engine_say(spool_engine *e, const char *level,
                               const char *msg);

/*
 * Turns the engine's loop (see spool_run_mode). Returns 0, or a negative code
 * if the engine was never opened. With SPOOL_RUN_ONCE and SPOOL_RUN_NOWAIT
 * the return value is 1 while runs are still in flight.
 */
SPOOL_API int spool_engine_run(spool_engine *e, spool_run_mode mode);

/* Turns the loop until no run or handler is in flight, or ms milliseconds
 * have passed, whichever is first; 1 if runs are still in flight. */
SPOOL_API int spool_engine_run_for(spool_engine *e, unsigned ms);

/* Makes a SPOOL_RUN_FOREVER spool_engine_run() return; callable from a
 * callback or a signal watcher on the loop, not from another thread. */
SPOOL_API void spool_engine_stop(spool_engine *e);

/*
 * Events: every event appended to any thread of the engine is passed to the
 * callback, in order: after each turn of the loop that spool_engine_run (or
 * a waiting function) makes, outside the loop's callbacks; when the host
 * turns its own loop, at the end of the engine's part of each turn, inside
 * it (see the top of this file). The event and every string read from it
 * are valid only during the callback. One callback per engine; NULL
 * removes it.
 */
typedef void (*spool_event_cb)(const spool_event *ev, void *ud);
SPOOL_API void spool_engine_on_event(spool_engine *e, spool_event_cb cb,
                                     void *ud);

/*
 * Spans: with a callback set, each finished span of the engine's traces
 * (a run of a thread, a model call, a tool call, a wait for a person; see
 * the README's "Traces") is passed to it as one OpenTelemetry OTLP JSON
 * Span object, delivered as events are. They are the spans the engine
 * exports to $OTEL_EXPORTER_OTLP_ENDPOINT, if that is set; the callback
 * gets them either way, as the sampler ($OTEL_TRACES_SAMPLER) keeps them.
 * The text is valid only during the callback. One callback per engine;
 * NULL removes it.
 */
typedef void (*spool_span_cb)(const char *span_json, size_t len, void *ud);
SPOOL_API void spool_engine_on_span(spool_engine *e, spool_span_cb cb,
                                    void *ud);

SPOOL_API const char *spool_event_thread(const spool_event *ev);
SPOOL_API const char *spool_event_agent(const spool_event *ev);
SPOOL_API const char *spool_event_type(const spool_event *ev);
SPOOL_API long long spool_event_seq(const spool_event *ev);
/* How many parent threads the event's thread has (0 for a top thread). */
SPOOL_API int spool_event_depth(const spool_event *ev);
/* The whole event as one line of JSON. */
SPOOL_API const char *spool_event_json(const spool_event *ev);
/* The event as one readable line, for logs and terminals. */
SPOOL_API const char *spool_event_text(const spool_event *ev);

/*
 * Starts a thread of `agent` (agents/<agent>.lua) on the text `input`. The
 * agent is loaded and checked before this returns, so a missing or broken
 * agent fails here. The thread's id is written to id_out; the run itself
 * proceeds as the loop turns.
 */
SPOOL_API int spool_thread_start(spool_engine *e, const char *agent,
                                 const char *input, char id_out[SPOOL_ID_SIZE]);

/*
 * Stored threads. The functions below read or change threads in the store,
 * whichever process ran them. Each turns the engine's loop until the store
 * has answered, so none may be called from a callback the loop is running
 * (SPOOL_ESTATE from the engine's own, see the top of this file).
 * Strings returned through *_out are borrowed (see Conventions).
 */

/* The status of a thread (SPOOL_ENOTFOUND if there is none). */
SPOOL_API int spool_thread_status(spool_engine *e, const char *id,
                                  spool_status *out);

/*
 * The outcome of a finished thread as JSON: for a done thread its result
 * (the final answer, or the value of its terminal intent), for a failed one
 * {"error": message}. SPOOL_ESTATE while it runs or waits.
 */
SPOOL_API int spool_thread_result(spool_engine *e, const char *id,
                                  const char **json_out);

/* The thread and its events: {"thread": {...}, "events": [...]}. */
SPOOL_API int spool_thread_json(spool_engine *e, const char *id,
                                const char **json_out);

/* The thread's events as readable lines, the form `spool run` prints, with
 * its sub-agents' threads indented under the calls that started them. */
SPOOL_API int spool_thread_text(spool_engine *e, const char *id,
                                const char **text_out);

/* The thread's events as JSON lines, one event per line. */
SPOOL_API int spool_thread_export(spool_engine *e, const char *id,
                                  const char **jsonl_out);

/* A response to a waiting thread: a person's, or an outside event. */
typedef enum spool_response_kind {
  SPOOL_ANSWER = 1,  /* text: the answer to a question */
  SPOOL_APPROVE = 2, /* args_json: edited arguments, or NULL to keep them */
  SPOOL_REJECT = 3,  /* text: the reason the model is told, or NULL */
  SPOOL_EVENT = 4    /* text: the event's name (spool.wait_for); args_json:
                        its data, any JSON value, or NULL */
} spool_response_kind;

typedef struct spool_response {
  size_t size; /* sizeof(spool_response): SPOOL_RESPONSE_INIT sets it */
  spool_response_kind kind;
  const char *text;
  const char *args_json; /* a JSON object */
  const char *by;        /* who answered (may be NULL) */
  const char *channel;   /* where they answered (may be NULL) */
} spool_response;
#define SPOOL_RESPONSE_INIT                                                    \
  { .size = sizeof(spool_response) }

/*
 * What a waiting thread waits for: *kind is the response it takes
 * (SPOOL_ANSWER for a question; SPOOL_APPROVE for an approval, which
 * SPOOL_APPROVE or SPOOL_REJECT answers; SPOOL_EVENT for an outside
 * event), *name the tool to approve or the event awaited (NULL for a
 * question), *text what it waits for in words ("approval of refund {...}").
 * SPOOL_ESTATE if the thread does not wait.
 */
SPOOL_API int spool_thread_request(spool_engine *e, const char *id,
                                   spool_response_kind *kind, const char **name,
                                   const char **text);

/*
 * Continues a waiting or interrupted thread; the run proceeds as the loop
 * turns. `r` answers what the thread waits for; NULL continues a thread a
 * crash interrupted. SPOOL_ECONFLICT if another process runs the thread;
 * SPOOL_EINVAL if the response does not fit what it waits for (an answer
 * to an approval, edited arguments its tool would reject).
 */
SPOOL_API int spool_thread_resume(spool_engine *e, const char *id,
                                  const spool_response *r);

/* Cancels a thread that has not ended, and its sub-agents. */
SPOOL_API int spool_thread_cancel(spool_engine *e, const char *id);

/* Deletes a thread, its events and its sub-agents' threads. */
SPOOL_API int spool_thread_delete(spool_engine *e, const char *id);

/* A new thread holding the first at_seq events of another. */
SPOOL_API int spool_thread_fork(spool_engine *e, const char *id,
                                long long at_seq, char id_out[SPOOL_ID_SIZE]);

/* Which threads spool_thread_list returns; zero fields do not filter. */
typedef struct spool_thread_filter {
  size_t size;        /* SPOOL_THREAD_FILTER_INIT sets it */
  const char *status; /* "running", "waiting", "done", ... */
  const char *agent;
  int limit;        /* at most this many (0: 100) */
  long long before; /* created before this time (ms since the epoch) */
  int text;         /* 1: a readable table instead of JSON */
} spool_thread_filter;
#define SPOOL_THREAD_FILTER_INIT                                               \
  { .size = sizeof(spool_thread_filter) }

/* Threads, newest first, as a JSON array of {id, agent, parent, status,
 * created_at, updated_at, events, deadline} (f may be NULL). */
SPOOL_API int spool_thread_list(spool_engine *e, const spool_thread_filter *f,
                                const char **out);

/*
 * Resumes the threads a stopped process left running (their lease expired
 * or its process is gone) and denies the approvals whose deadline passed.
 * *report_json (may be NULL) says which: {"resumed": [id...], "expired":
 * [id...], "skipped": [{"id", "error"}...]}; a skipped thread (a corrupt
 * row, say) is left as it was, and logged.
 */
SPOOL_API int spool_engine_recover(spool_engine *e, const char **report_json);

/*
 * Re-reads the project's agents, prompts and helper modules (lib/), checks
 * each agent off to the side (it compiles, returns spool.agent{...}, its
 * prompt exists and renders), and makes each one that changed and passed
 * the version the next step of every run uses. A broken agent keeps its
 * running version. *report_json (may be NULL): {"agents": {NAME: {version,
 * from, changed, error, deleted}}, "errors": N}; also logged, and passed
 * to the event callback as events of type "reload". Call it outside the
 * loop's callbacks (e.g. after a SIGHUP stopped spool_engine_run).
 */
SPOOL_API int spool_engine_reload(spool_engine *e, const char **report_json);

/*
 * The control API: the engine as a service, JSON over HTTP on the engine's
 * loop (docs/openapi.json): start threads, read and list them, answer or
 * send events to waiting ones, cancel, follow a thread's events as
 * Server-Sent Events, list agents, reload, health and metrics. Starting
 * also resumes the threads a stopped process left running. It binds
 * 127.0.0.1 unless told otherwise. Every request must carry the token
 * ("Authorization: Bearer ..."), on loopback too: the environment variable
 * token_env's value, else the project's own, made on first use in
 * .spool/api-token, readable by its owner only.
 *
 * Connections are capped at 1,024 from one client address (an IPv6 /64) and
 * 10,000 in all; at the total, a new connection takes the place of the one
 * that has waited idle the longest, so silent connections cannot lock
 * clients out. A request with two Host, Authorization, Content-Length or
 * Transfer-Encoding headers, or a NUL byte in a header value, is refused
 * (400); a chunked body's trailer fields are dropped. Serving ignores
 * SIGPIPE (see Signals above).
 */
typedef struct spool_serve_opts {
  size_t size;           /* SPOOL_SERVE_OPTS_INIT sets it */
  const char *host;      /* NULL: 127.0.0.1 */
  int port;              /* 0: any free port (see port_out) */
  const char *token_env; /* NULL: "SPOOL_TOKEN" */
  int max_runs;          /* runs in flight before new work gets 503; 0: 1000 */
  int rate;              /* requests per second per client; 0: no limit */
} spool_serve_opts;
#define SPOOL_SERVE_OPTS_INIT                                                  \
  { .size = sizeof(spool_serve_opts) }

SPOOL_API int spool_serve_start(spool_engine *e, const spool_serve_opts *o,
                                int *port_out);

/*
 * Stops serving: no new connections, and each run stops after the step it
 * is in (that step is stored). Waits up to drain_ms; *left_out (may be
 * NULL) gets the number of runs still in a step when it gave up, which the
 * next start's recovery continues.
 */
SPOOL_API int spool_serve_stop(spool_engine *e, unsigned drain_ms,
                               int *left_out);

/*
 * Deletes expired business state, and finished threads older than
 * older_than_days (NULL: spool.lua's retention.finished_days, or none),
 * then reclaims the space.
 */
SPOOL_API int spool_engine_gc(spool_engine *e, const char *older_than_days,
                              const char **report_json);

/* A business-state namespace as JSON lines {key, value, version, ...}. */
SPOOL_API int spool_state_export(spool_engine *e, const char *ns,
                                 const char **jsonl_out);

/*
 * Host tools: functions of the embedding application that agents call as
 * tools, so they act on the host's data without Lua glue. An agent names
 * one in its switch: tools = { stock = spool.host_tool "stock_level" }.
 *
 * fn is called on the loop thread with the call and its arguments (a JSON
 * object, valid during the call). The host answers exactly once, with
 * spool_call_complete or spool_call_fail, either before fn returns or
 * later, from the loop thread (a timer, an I/O callback on the same
 * loop). Either frees the call. A call whose run was cancelled (or whose
 * engine was freed) must still be answered; the answer is then ignored.
 */
typedef struct spool_call spool_call;
typedef void (*spool_tool_fn)(spool_call *call, const char *args_json,
                              void *ud);

/*
 * Registers (or replaces) a host tool before threads that use it start.
 * params_schema_json is the JSON Schema of its arguments ({"type":
 * "object", ...}); the description is what the model reads. Strings are
 * copied. (spool_tool_add, below, also frees ud when the tool goes.)
 */
SPOOL_API int spool_tool_register(spool_engine *e, const char *name,
                                  const char *description,
                                  const char *params_schema_json,
                                  spool_tool_fn fn, void *ud);

/* A host tool for spool_tool_add. */
typedef struct spool_tool_def {
  size_t size;                    /* SPOOL_TOOL_DEF_INIT sets it */
  const char *name;               /* what agents name it by */
  const char *description;        /* what the model reads (NULL: the name) */
  const char *params_schema_json; /* JSON Schema of its arguments */
  spool_tool_fn fn;
  void *ud;                  /* passed to fn */
  void (*free_ud)(void *ud); /* when the tool goes (may be NULL) */
} spool_tool_def;
#define SPOOL_TOOL_DEF_INIT                                                    \
  { .size = sizeof(spool_tool_def) }

/*
 * Adds (or replaces) a host tool, as spool_tool_register does; the engine
 * calls free_ud(ud) once the tool goes: replaced, unregistered, or the
 * engine freed. Calls already made must still be answered after that.
 */
SPOOL_API int spool_tool_add(spool_engine *e, const spool_tool_def *def);

/* Removes a host tool (SPOOL_ENOTFOUND if there is none): runs that call
 * it from now on get an error the model can read. */
SPOOL_API int spool_tool_unregister(spool_engine *e, const char *name);

/* The tool's name and the calling thread's id, valid until answered. */
SPOOL_API const char *spool_call_tool(const spool_call *call);
SPOOL_API const char *spool_call_thread(const spool_call *call);

/* Answers a call with its result (JSON text; copied) and frees the call.
 * SPOOL_EINVAL if result_json is not JSON: the call is then failed with
 * that reason (and freed all the same). */
SPOOL_API int spool_call_complete(spool_call *call, const char *result_json);

/* Answers a call with an error the model is told, and frees the call. */
SPOOL_API int spool_call_fail(spool_call *call, const char *message);

/*
 * Finds and repairs the JSON value in a model's reply (text[0..len), any
 * bytes). schema_json (NULL for none) is a JSON Schema the value must fit;
 * when several values are in the text, the first that fits wins. *out
 * receives {"value": ..., "repairs": ["line 1, column 9: ...", ...],
 * "truncated": bool, "fenced": bool}, or with SPOOL_EXTRACT_LINES the
 * value's JSON on one line followed by one line per repair. SPOOL_EINVAL
 * when no value can be recovered or none fits, with the position and
 * reason in the message.
 */
#define SPOOL_EXTRACT_LINES 1
SPOOL_API int spool_extract(spool_engine *e, const char *text, size_t len,
                            const char *schema_json, int flags,
                            const char **out);

/*
 * Renders the exact HTTP request body the first step of `agent` on `input`
 * would send to the model, without sending it. *body_out is borrowed.
 */
SPOOL_API int spool_prompt_render(spool_engine *e, const char *agent,
                                  const char *input, const char **body_out);

/*
 * Starts the built-in mock model (an OpenAI-compatible server) on the
 * engine's loop. `script` is a mock script file or NULL for the project's
 * default; `host` NULL means 127.0.0.1; port 0 picks a free port, written to
 * *port_out. The mock serves until the engine is freed.
 */
SPOOL_API int spool_mock_start(spool_engine *e, const char *script,
                               const char *host, int port, int *port_out);

/*
 * Runs a Lua script file inside the engine, as a run of its own, so it may
 * call everything an agent may (and yield on I/O). argv becomes the script's
 * global `arg`. Turns the loop until the script ends; *exit_out receives the
 * script's exit code (0 when it returns normally, the code passed to
 * os.exit, or 1 when it raises an error, which is printed to stderr).
 */
SPOOL_API int spool_script_run(spool_engine *e, const char *path, int argc,
                               char **argv, int *exit_out);

#ifdef __cplusplus
}
#endif
#endif /* SPOOL_H */
