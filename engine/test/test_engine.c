/*
 * test_engine.c: the embedding API, through spool.h alone. The project is
 * the repository's demo project; the model is the built-in mock (ctest
 * clears OPENAI_* from the environment).
 */
#include <stddef.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "spool.h"
#include "codec/json.h"
#include "spool_int.h" /* a few checks look inside */
#include "test.h"

static spool_engine *open_demo(void *loop) {
  spool_engine *e = NULL;
  ASSERT_EQ(spool_engine_new(&e), SPOOL_OK);
  ASSERT_EQ(spool_engine_set(e, "project", SPOOL_SOURCE_DIR), SPOOL_OK);
  if (loop)
    ASSERT_EQ(spool_engine_use_loop(e, loop), SPOOL_OK);
  int rc = spool_engine_open(e);
  if (rc != 0)
    fprintf(stderr, "open: %s\n", spool_engine_errmsg(e));
  ASSERT_EQ(rc, SPOOL_OK);
  return e;
}

typedef struct seen {
  char types[16][16];
  int n;
  spool_engine *e;
  int reentered;
} seen;

static void on_event(const spool_event *ev, void *ud) {
  seen *s = ud;
  if (s->n < 16)
    snprintf(s->types[s->n++], 16, "%s", spool_event_type(ev));
  ASSERT_EQ(spool_event_seq(ev), s->n);
  ASSERT_CONTAINS(spool_event_json(ev), "\"type\":\"");
  ASSERT(spool_event_text(ev)[0] != '\0');
  ASSERT_STR_EQ(spool_event_agent(ev), "classify");
  ASSERT_EQ(spool_event_depth(ev), 0);
  /* Events are delivered outside Lua: calling back in is allowed. */
  spool_status st;
  if (spool_thread_status(s->e, spool_event_thread(ev), &st) == SPOOL_OK)
    s->reentered++;
}

TEST_IMPL(engine_runs_a_thread) {
  spool_engine *e = open_demo(NULL);
  seen s = {.e = e};
  spool_engine_on_event(e, on_event, &s);
  char id[SPOOL_ID_SIZE];
  ASSERT_EQ(spool_thread_start(e, "classify",
                               "My order 5531 arrived broken, refund please",
                               id),
            SPOOL_OK);
  ASSERT(strncmp(id, "t_", 2) == 0);
  spool_status st;
  ASSERT_EQ(spool_thread_status(e, id, &st), SPOOL_OK);
  ASSERT_EQ(st, SPOOL_RUNNING);
  const char *json;
  ASSERT_EQ(spool_thread_result(e, id, &json), SPOOL_ESTATE);
  ASSERT_EQ(spool_engine_run(e, SPOOL_RUN_IDLE), SPOOL_OK);
  ASSERT_EQ(spool_thread_status(e, id, &st), SPOOL_OK);
  ASSERT_EQ(st, SPOOL_DONE);
  ASSERT_EQ(spool_thread_result(e, id, &json), SPOOL_OK);
  ASSERT_CONTAINS(json, "\"category\":\"refund\"");
  ASSERT_CONTAINS(json, "\"order_id\":\"5531\"");
  ASSERT_EQ(s.n, 4);
  ASSERT_STR_EQ(s.types[0], "input");
  ASSERT_STR_EQ(s.types[1], "model_call");
  ASSERT_STR_EQ(s.types[2], "intent");
  ASSERT_STR_EQ(s.types[3], "done");
  ASSERT_EQ(s.reentered, 4);
  spool_engine_free(e);
}

typedef struct spans {
  int n, runs, chats;
  char trace[40];
  spool_engine *e;
} spans;

static void on_span(const char *json, size_t len, void *ud) {
  spans *s = ud;
  s->n++;
  ASSERT_EQ(strlen(json), len);
  ASSERT_EQ(spool__json_check(json, len, NULL, NULL), 0);
  s->runs += strstr(json, "\"name\":\"invoke_agent classify\"") != NULL;
  s->chats += strstr(json, "\"name\":\"chat mock-1\"") != NULL;
  ASSERT_CONTAINS(json, "\"traceId\":\"");
  ASSERT_CONTAINS(json, "\"key\":\"gen_ai.operation.name\"");
  const char *t = strstr(json, "\"traceId\":\"") + 11;
  if (s->trace[0] == '\0')
    memcpy(s->trace, t, 32);
  ASSERT(strncmp(s->trace, t, 32) == 0); /* one trace */
  /* Delivered outside Lua, as events are: calling back in is allowed. */
  spool_status st;
  ASSERT_EQ(spool_thread_status(s->e, "t_nosuch", &st), SPOOL_ENOTFOUND);
}

/* An embedder takes the spans itself: the same OTLP JSON an exporter
 * sends, with no collector configured. */
TEST_IMPL(engine_hands_spans_to_the_host) {
  spool_engine *e = open_demo(NULL);
  spans s = {.e = e};
  spool_engine_on_span(e, on_span, &s);
  char id[SPOOL_ID_SIZE];
  ASSERT_EQ(
      spool_thread_start(e, "classify", "My order 5531 arrived broken", id),
      SPOOL_OK);
  ASSERT_EQ(spool_engine_run(e, SPOOL_RUN_IDLE), SPOOL_OK);
  ASSERT_EQ(s.n, 2);
  ASSERT_EQ(s.runs, 1);
  ASSERT_EQ(s.chats, 1);
  /* Without the callback, none. */
  spool_engine_on_span(e, NULL, NULL);
  ASSERT_EQ(spool_thread_start(e, "classify", "Where is order 5531?", id),
            SPOOL_OK);
  ASSERT_EQ(spool_engine_run(e, SPOOL_RUN_IDLE), SPOOL_OK);
  ASSERT_EQ(s.n, 2);
  spool_engine_free(e);
}

/* A thread that waits for a person says what for, in data an embedder
 * acts on (what to answer with), and in words without any command. */
TEST_IMPL(engine_says_what_a_thread_waits_for) {
  spool_engine *e = open_demo(NULL);
  char id[SPOOL_ID_SIZE];
  ASSERT_EQ(spool_thread_start(e, "support",
                               "Order 5533 arrived broken, refund please", id),
            SPOOL_OK);
  spool_response_kind kind;
  const char *name, *text, *json;
  ASSERT_EQ(spool_thread_request(e, id, &kind, &name, &text), SPOOL_ESTATE);
  ASSERT_CONTAINS(spool_engine_errmsg(e), "is not waiting");
  ASSERT_EQ(spool_engine_run(e, SPOOL_RUN_IDLE), SPOOL_OK);
  spool_status st;
  ASSERT_EQ(spool_thread_status(e, id, &st), SPOOL_OK);
  ASSERT_EQ(st, SPOOL_WAITING);
  ASSERT_EQ(spool_thread_request(e, id, &kind, &name, &text), SPOOL_OK);
  ASSERT_EQ(kind, SPOOL_APPROVE);
  ASSERT_STR_EQ(name, "issue_refund");
  ASSERT(strncmp(text, "approval of issue_refund {", 26) == 0);
  ASSERT_EQ(spool_thread_result(e, id, &json), SPOOL_ESTATE);
  ASSERT_CONTAINS(spool_engine_errmsg(e), "waits for approval of issue_refund");
  ASSERT(strstr(spool_engine_errmsg(e), "spool resume") == NULL);
  ASSERT_EQ(spool_thread_request(e, "t_nosuchthread", &kind, &name, &text),
            SPOOL_ENOTFOUND);
  ASSERT_EQ(spool_thread_request(e, id, &kind, NULL, &text), SPOOL_EINVAL);
  spool_response no = SPOOL_RESPONSE_INIT;
  no.kind = SPOOL_REJECT;
  no.text = "not this time";
  ASSERT_EQ(spool_thread_resume(e, id, &no), SPOOL_OK);
  ASSERT_EQ(spool_engine_run(e, SPOOL_RUN_IDLE), SPOOL_OK);
  ASSERT_EQ(spool_thread_status(e, id, &st), SPOOL_OK);
  ASSERT(st != SPOOL_WAITING);
  ASSERT_EQ(spool_thread_request(e, id, &kind, &name, &text), SPOOL_ESTATE);
  spool_engine_free(e);
}

TEST_IMPL(engine_reports_errors) {
  spool_engine *e = NULL;
  ASSERT_EQ(spool_engine_new(NULL), SPOOL_EINVAL);
  ASSERT_EQ(spool_engine_new(&e), SPOOL_OK);
  ASSERT_EQ(spool_engine_set(e, "colour", "blue"), SPOOL_EINVAL);
  ASSERT_STR_EQ(spool_engine_errmsg(e), "unknown option 'colour'");
  ASSERT_EQ(spool_engine_set(e, "mock", "maybe"), SPOOL_EINVAL);
  ASSERT_EQ(spool_engine_set(e, "log", "loud"), SPOOL_EINVAL);
  char id[SPOOL_ID_SIZE];
  ASSERT_EQ(spool_thread_start(e, "classify", "x", id), SPOOL_ESTATE);
  ASSERT_EQ(spool_engine_run(e, SPOOL_RUN_IDLE), SPOOL_ESTATE);
  ASSERT_EQ(spool_engine_set(e, "project", "/nonexistent/spool"), SPOOL_OK);
  ASSERT_EQ(spool_engine_open(e), SPOOL_EINVAL);
  ASSERT_CONTAINS(spool_engine_errmsg(e), "/nonexistent/spool");
  spool_engine_free(e);

  e = open_demo(NULL);
  ASSERT_EQ(spool_engine_open(e), SPOOL_ESTATE);
  ASSERT_EQ(spool_engine_set(e, "model", "x"), SPOOL_ESTATE);
  ASSERT_EQ(spool_thread_start(e, "nosuch", "x", id), SPOOL_ENOTFOUND);
  ASSERT_CONTAINS(spool_engine_errmsg(e), "unknown agent 'nosuch'");
  ASSERT_EQ(spool_thread_start(e, "../etc", "x", id), SPOOL_EINVAL);
  ASSERT_EQ(spool_thread_start(e, NULL, "x", id), SPOOL_EINVAL);
  spool_status st;
  ASSERT_EQ(spool_thread_status(e, "t_nope", &st), SPOOL_ENOTFOUND);
  ASSERT_CONTAINS(spool_engine_errmsg(e), "unknown thread 't_nope'");
  spool_engine_free(e);
  spool_engine_free(NULL);
  ASSERT_STR_EQ(spool_engine_errmsg(NULL), "no engine (NULL)");
  ASSERT_STR_EQ(spool_strerror(SPOOL_ENOTFOUND), "not found");
  ASSERT_EQ(spool_version_num(), SPOOL_VERSION_NUM);
  ASSERT_STR_EQ(spool_version(), SPOOL_VERSION);
}

/* What f wrote on stderr (at most size - 1 bytes). */
static void stderr_of(void (*f)(spool_engine *), spool_engine *e, char *out,
                      size_t size) {
  fflush(stderr);
  int saved = dup(2);
  FILE *tmp = tmpfile();
  dup2(fileno(tmp), 2);
  f(e);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  rewind(tmp);
  size_t n = fread(out, 1, size - 1, tmp);
  out[n] = '\0';
  fclose(tmp);
}

static void say_three(spool_engine *e) {
  spool_engine_say(e, "info", "serving \"here\"");
  spool_engine_say(e, "debug", "two\nlines");
  spool_engine_say(e, "loud", "refused");
}

TEST_IMPL(engine_says_lines_in_the_log_format) {
  spool_engine *e = NULL;
  char out[1024];
  ASSERT_EQ(spool_engine_new(&e), SPOOL_OK);
  stderr_of(say_three, e, out, sizeof out);
  /* unfiltered by the log level (warn), and before spool_engine_open */
  ASSERT_STR_EQ(out, "spool: serving \"here\"\nspool: two\nlines\n");
  ASSERT_EQ(spool_engine_say(e, "loud", "x"), SPOOL_EINVAL);
  ASSERT_CONTAINS(spool_engine_errmsg(e), "\"error\", \"warn\"");
  ASSERT_EQ(spool_engine_set(e, "log_format", "json"), SPOOL_OK);
  stderr_of(say_three, e, out, sizeof out);
  char *second = strchr(out, '\n');
  ASSERT(second != NULL && strchr(second + 1, '\n') != NULL);
  ASSERT(strncmp(out, "{\"time\":\"", 9) == 0);
  ASSERT_CONTAINS(out,
                  "\"level\":\"info\",\"msg\":\"serving \\\"here\\\"\"}\n");
  ASSERT_CONTAINS(second, "\"level\":\"debug\",\"msg\":\"two\\nlines\"}\n");
  ASSERT_EQ(spool_engine_say(NULL, "info", "x"), SPOOL_EINVAL);
  spool_engine_free(e);
}

TEST_IMPL(engine_two_in_one_process) {
  spool_engine *a = open_demo(NULL), *b = open_demo(NULL);
  char ida[SPOOL_ID_SIZE], idb[SPOOL_ID_SIZE];
  ASSERT_EQ(spool_thread_start(a, "classify", "Where is order 5532?", ida), 0);
  ASSERT_EQ(spool_thread_start(b, "classify", "Do you sell tea?", idb), 0);
  /* Each engine knows only its own threads. */
  spool_status st;
  ASSERT_EQ(spool_thread_status(a, idb, &st), SPOOL_ENOTFOUND);
  ASSERT_EQ(spool_engine_run(a, SPOOL_RUN_IDLE), 0);
  ASSERT_EQ(spool_engine_run(b, SPOOL_RUN_IDLE), 0);
  const char *ra, *rb;
  ASSERT_EQ(spool_thread_result(a, ida, &ra), 0);
  ASSERT_CONTAINS(ra, "order_status");
  ASSERT_EQ(spool_thread_result(b, idb, &rb), 0);
  ASSERT_CONTAINS(rb, "question");
  spool_engine_free(a);
  spool_engine_free(b);
}

/* On a host's loop, events arrive inside the loop's turn: the accessors
 * work, the functions that would turn the loop again refuse. */
typedef struct inside_loop {
  spool_engine *e;
  int host_turning; /* the host is inside uv_run */
  int events, refused, wrong;
} inside_loop;

static void on_event_inside(const spool_event *ev, void *ud) {
  inside_loop *s = ud;
  spool_status st;
  s->events++;
  ASSERT(spool_event_seq(ev) >= 1);
  int rc = spool_thread_status(s->e, spool_event_thread(ev), &st);
  s->refused += rc == SPOOL_ESTATE;
  /* Refused inside the host's turn; allowed when a function of spool.h
   * turned the loop and delivers the events after its turn. */
  s->wrong += s->host_turning ? rc != SPOOL_ESTATE : rc != SPOOL_OK;
}

TEST_IMPL(engine_on_host_loop) {
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  spool_engine *e = open_demo(&loop);
  inside_loop s = {.e = e};
  spool_engine_on_event(e, on_event_inside, &s);
  char id[SPOOL_ID_SIZE];
  ASSERT_EQ(spool_thread_start(e, "classify", "refund order 5533", id), 0);
  /* The host turns its own loop; the engine needs nothing else. */
  spool_status st = SPOOL_RUNNING;
  for (int i = 0; i < 10000 && st == SPOOL_RUNNING; i++) {
    s.host_turning = 1;
    uv_run(&loop, UV_RUN_ONCE);
    s.host_turning = 0;
    ASSERT_EQ(spool_thread_status(e, id, &st), 0);
  }
  ASSERT_EQ(st, SPOOL_DONE);
  ASSERT(s.events >= 4);
  ASSERT_EQ(s.wrong, 0);
  spool_engine_free(e);
  /* Freeing closed the engine's handles; their close callbacks run here. */
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

TEST_IMPL(engine_renders_prompts) {
  spool_engine *e = open_demo(NULL);
  const char *body;
  ASSERT_EQ(spool_prompt_render(e, "classify", "hello", &body), 0);
  ASSERT_CONTAINS(body, "\"model\":\"mock-1\"");
  ASSERT_CONTAINS(body, "You sort incoming customer messages");
  ASSERT_CONTAINS(body, "{\"content\":\"hello\",\"role\":\"user\"}");
  ASSERT_EQ(spool_prompt_render(e, "nosuch", "hello", &body), SPOOL_ENOTFOUND);
  spool_engine_free(e);
}

TEST_IMPL(engine_mock_and_script) {
  spool_engine *e = open_demo(NULL);
  int port = 0;
  ASSERT_EQ(spool_mock_start(e, NULL, NULL, 0, &port), 0);
  ASSERT(port > 0);
  ASSERT_EQ(spool_mock_start(e, NULL, NULL, 70000, &port), SPOOL_EINVAL);
  ASSERT_EQ(spool_mock_start(e, "no/such/script.lua", NULL, 0, &port),
            SPOOL_ENOTFOUND);
  /* A script runs as a task and may wait on I/O. */
  char path[] = "/tmp/spool-test-script-XXXXXX";
  int fd = mkstemp(path);
  ASSERT(fd >= 0);
  const char *src = "local core = require 'spool.core'\n"
                    "core.sleep(5)\n"
                    "if arg[1] == 'fail' then error('boom') end\n"
                    "os.exit(tonumber(arg[1]))\n";
  ASSERT_EQ(write(fd, src, strlen(src)), (long)strlen(src));
  close(fd);
  int code = -1;
  char *argv_seven[] = {"7"};
  ASSERT_EQ(spool_script_run(e, path, 1, argv_seven, &code), 0);
  ASSERT_EQ(code, 7);
  char *argv_fail[] = {"fail"};
  ASSERT_EQ(spool_script_run(e, path, 1, argv_fail, &code), 0);
  ASSERT_EQ(code, 1);
  unlink(path);
  ASSERT_EQ(spool_script_run(e, "/no/such/script.lua", 0, NULL, &code),
            SPOOL_EINVAL);
  spool_engine_free(e);
}

/* ---- reload ---- */

static void write_file(const char *dir, const char *rel, const char *text) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, rel);
  FILE *f = fopen(path, "w");
  ASSERT(f != NULL);
  fputs(text, f);
  fclose(f);
}

static const char agent_src[] =
    "local spool = require 'spool'\n"
    "return spool.agent { prompt = 'a.md', tools = { finish = spool.done } }\n";

typedef struct reloads {
  int loaded, failed;
  char last_agent[32];
} reloads;

static void on_reload(const spool_event *ev, void *ud) {
  reloads *r = ud;
  if (strcmp(spool_event_type(ev), "reload") == 0)
    r->loaded++;
  else if (strcmp(spool_event_type(ev), "reload_failed") == 0)
    r->failed++;
  else
    return;
  snprintf(r->last_agent, sizeof r->last_agent, "%s", spool_event_agent(ev));
  ASSERT_STR_EQ(spool_event_thread(ev), "");
}

static void on_guard(uv_timer_t *t) {
  *(int *)t->data = 1;
}

TEST_IMPL(engine_reloads_agents) {
  char dir[] = "/tmp/spool-test-reload-XXXXXX";
  ASSERT(mkdtemp(dir) != NULL);
  char sub[600];
  snprintf(sub, sizeof sub, "mkdir -p %s/agents %s/prompts", dir, dir);
  ASSERT_EQ(system(sub), 0);
  write_file(dir, "agents/a.lua", agent_src);
  write_file(dir, "prompts/a.md", "One.");

  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  spool_engine *e = NULL;
  ASSERT_EQ(spool_engine_new(&e), 0);
  ASSERT_EQ(spool_engine_set(e, "watch", "maybe"), SPOOL_EINVAL);
  ASSERT_CONTAINS(spool_engine_errmsg(e), "option 'watch' is");
  ASSERT_EQ(spool_engine_set(e, "project", dir), 0);
  ASSERT_EQ(spool_engine_set(e, "store", ":memory:"), 0);
  ASSERT_EQ(spool_engine_set(e, "watch", "on"), 0);
  ASSERT_EQ(spool_engine_use_loop(e, &loop), 0);
  ASSERT_EQ(spool_engine_open(e), 0);
  reloads r = {0};
  spool_engine_on_event(e, on_reload, &r);

  const char *report;
  ASSERT_EQ(spool_engine_reload(e, &report), 0);
  ASSERT_CONTAINS(report, "\"a\":{\"changed\":true,\"version\":\"");
  ASSERT_CONTAINS(report, "\"errors\":0");
  ASSERT_EQ(r.loaded, 1);

  /* A broken save: reported, and the version in use stays. */
  write_file(dir, "agents/a.lua", "return spool.agent {");
  ASSERT_EQ(spool_engine_reload(e, &report), 0);
  ASSERT_CONTAINS(report, "\"errors\":1");
  ASSERT_CONTAINS(report, "agents/a.lua:1:");
  ASSERT(r.failed >= 1); /* the watcher may have reported it too */

  /* The watcher sees the fix as the host turns its loop. */
  write_file(dir, "agents/a.lua", agent_src);
  write_file(dir, "prompts/a.md", "Two.");
  int timed_out = 0;
  uv_timer_t guard;
  uv_timer_init(&loop, &guard);
  guard.data = &timed_out;
  uv_timer_start(&guard, on_guard, 10000, 0);
  while (r.loaded < 2 && !timed_out)
    uv_run(&loop, UV_RUN_ONCE);
  ASSERT_EQ(r.loaded, 2);
  ASSERT_STR_EQ(r.last_agent, "a");
  uv_close((uv_handle_t *)&guard, NULL);
  spool_engine_free(e);
  uv_run(&loop, UV_RUN_DEFAULT); /* the watchers' close callbacks */
  ASSERT_EQ(uv_loop_close(&loop), 0);
  snprintf(sub, sizeof sub, "rm -rf %s", dir);
  ASSERT_EQ(system(sub), 0);
}

/* ---- host tools ---- */

typedef struct host_state {
  uv_loop_t *loop;
  spool_call *held; /* an async call not answered yet */
  int calls;
  const char *mode; /* how `later` answers */
  spool_engine *e;
  int inside_rc; /* a waiting function called inside the tool */
  char inside_msg[256];
} host_state;

static void tool_now(spool_call *call, const char *args, void *ud) {
  host_state *h = ud;
  h->calls++;
  ASSERT_STR_EQ(spool_call_tool(call), "now");
  ASSERT(strncmp(spool_call_thread(call), "t_", 2) == 0);
  if (h->e) { /* the loop is inside its callback: no turning it again */
    spool_status st;
    h->inside_rc = spool_thread_status(h->e, spool_call_thread(call), &st);
    snprintf(h->inside_msg, sizeof h->inside_msg, "%s",
             spool_engine_errmsg(h->e));
  }
  if (strstr(args, "\"what\":\"fail\""))
    ASSERT_EQ(spool_call_fail(call, "the shelf is empty"), SPOOL_OK);
  else if (strstr(args, "\"what\":\"bad\""))
    ASSERT_EQ(spool_call_complete(call, "{not json"), SPOOL_EINVAL);
  else
    ASSERT_EQ(spool_call_complete(call, "{\"level\":7}"), SPOOL_OK);
}

static void on_answer_timer(uv_timer_t *t) {
  host_state *h = t->data;
  spool_call_complete(h->held, "{\"placed\":true}");
  h->held = NULL;
  uv_close((uv_handle_t *)t, NULL);
}

static void tool_later(spool_call *call, const char *args, void *ud) {
  host_state *h = ud;
  (void)args;
  h->calls++;
  h->held = call; /* answered by a timer, or by the test itself */
}

static spool_engine *open_host(host_state *h, uv_loop_t *loop) {
  spool_engine *e = NULL;
  ASSERT_EQ(spool_engine_new(&e), 0);
  ASSERT_EQ(spool_engine_set(e, "project",
                             SPOOL_SOURCE_DIR "/engine/test/fixtures/host"),
            0);
  if (loop)
    ASSERT_EQ(spool_engine_use_loop(e, loop), 0);
  ASSERT_EQ(spool_engine_open(e), 0);
  ASSERT_EQ(spool_tool_register(e, "now", "Answers at once.",
                                "{\"type\":\"object\"}", tool_now, h),
            0);
  ASSERT_EQ(spool_tool_register(e, "later", "Answers later.",
                                "{\"type\":\"object\"}", tool_later, h),
            0);
  return e;
}

/* Turns the loop in short slices until the host holds a call (bounded by
 * count, not by time: valgrind is slow). Each slice ends with the run
 * still in flight, waiting on the host. */
static void wait_for_call(spool_engine *e, host_state *h) {
  for (int i = 0; i < 2000 && h->held == NULL; i++)
    ASSERT_EQ(spool_engine_run_for(e, 5), 1);
  ASSERT(h->held != NULL);
}

static const char *run_to_end(spool_engine *e, const char *input) {
  char id[SPOOL_ID_SIZE];
  ASSERT_EQ(spool_thread_start(e, "host", input, id), 0);
  ASSERT_EQ(spool_engine_run(e, SPOOL_RUN_IDLE), 0);
  const char *json;
  ASSERT_EQ(spool_thread_result(e, id, &json), 0);
  return json;
}

TEST_IMPL(engine_host_tools_sync) {
  host_state h = {0};
  spool_engine *e = open_host(&h, NULL);
  h.e = e;
  ASSERT_STR_EQ(run_to_end(e, "now x"), "\"got {\\\"level\\\":7}\"");
  ASSERT_EQ(h.inside_rc, SPOOL_ESTATE);
  ASSERT_CONTAINS(h.inside_msg, "cannot run inside a callback the loop makes");
  ASSERT_STR_EQ(run_to_end(e, "now fail"), "\"got error: the shelf is empty\"");
  ASSERT_STR_EQ(run_to_end(e, "now bad"),
                "\"got error: the host tool's result is not JSON\"");
  ASSERT_EQ(h.calls, 3);
  spool_engine_free(e);
}

TEST_IMPL(engine_host_tools_async) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  host_state h = {0};
  h.loop = &loop;
  spool_engine *e = open_host(&h, &loop);
  char id[SPOOL_ID_SIZE];
  ASSERT_EQ(spool_thread_start(e, "host", "later x", id), 0);
  /* The run waits on the host: run_for returns with it still in flight. */
  wait_for_call(e, &h);
  uv_timer_t t;
  uv_timer_init(&loop, &t);
  t.data = &h;
  uv_timer_start(&t, on_answer_timer, 1, 0);
  ASSERT_EQ(spool_engine_run(e, SPOOL_RUN_IDLE), 0);
  const char *json;
  ASSERT_EQ(spool_thread_result(e, id, &json), 0);
  ASSERT_STR_EQ(json, "\"got {\\\"placed\\\":true}\"");
  spool_engine_free(e);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

TEST_IMPL(engine_host_call_outlives_engine) {
  host_state h = {0};
  spool_engine *e = open_host(&h, NULL);
  char id[SPOOL_ID_SIZE];
  ASSERT_EQ(spool_thread_start(e, "host", "later x", id), 0);
  wait_for_call(e, &h);
  spool_engine_free(e); /* the run is cancelled with the call pending */
  /* The host still answers; the answer is ignored and the call freed. */
  ASSERT_EQ(spool_call_complete(h.held, "{}"), SPOOL_OK);
}

TEST_IMPL(engine_host_tool_misuse) {
  host_state h = {0};
  spool_engine *e = open_host(&h, NULL);
  ASSERT_EQ(spool_tool_register(e, "x", "d", "{bad", tool_now, &h),
            SPOOL_EINVAL);
  ASSERT_CONTAINS(spool_engine_errmsg(e), "the schema of host tool 'x' is "
                                          "not JSON");
  ASSERT_EQ(spool_tool_register(e, NULL, "d", "{}", tool_now, &h),
            SPOOL_EINVAL);
  ASSERT_EQ(spool_tool_register(NULL, "x", "d", "{}", tool_now, &h),
            SPOOL_EINVAL);
  ASSERT_EQ(spool_call_complete(NULL, "{}"), SPOOL_EINVAL);
  char id[SPOOL_ID_SIZE];
  ASSERT_EQ(spool_thread_start(e, "missing", "x", id), SPOOL_EAGENT);
  ASSERT_CONTAINS(spool_engine_errmsg(e),
                  "host tool 'nope' is not registered by the application");
  spool_engine_free(e);
}

/* A host tool added with a destructor: its user data is freed when the
 * tool is replaced by another, unregistered, or goes with the engine; a
 * run that calls an unregistered tool gets an error, not a crash. */
static void free_counted(void *ud) {
  (*(int *)ud)++;
}

static void tool_plain(spool_call *call, const char *args, void *ud) {
  (void)args;
  (void)ud;
  ASSERT_EQ(spool_call_complete(call, "{\"level\":7}"), SPOOL_OK);
}

TEST_IMPL(engine_host_tool_lifetimes) {
  host_state h = {0};
  spool_engine *e = open_host(&h, NULL);
  int freed_a = 0, freed_b = 0;
  spool_tool_def d = SPOOL_TOOL_DEF_INIT;
  d.name = "now";
  d.params_schema_json = "{\"type\":\"object\"}";
  d.fn = tool_plain;
  d.ud = &freed_a;
  d.free_ud = free_counted;
  ASSERT_EQ(spool_tool_add(e, &d), 0);
  ASSERT_EQ(spool_tool_add(e, &d), 0); /* the same user data: kept */
  ASSERT_EQ(freed_a, 0);
  d.ud = &freed_b;
  ASSERT_EQ(spool_tool_add(e, &d), 0); /* another: the first is freed */
  ASSERT_EQ(freed_a, 1);
  ASSERT_STR_EQ(run_to_end(e, "now x"), "\"got {\\\"level\\\":7}\"");
  ASSERT_EQ(spool_tool_unregister(e, "now"), 0);
  ASSERT_EQ(freed_b, 1);
  ASSERT_EQ(spool_tool_unregister(e, "now"), SPOOL_ENOTFOUND);
  ASSERT_CONTAINS(spool_engine_errmsg(e), "no host tool 'now'");
  /* The agent, loaded before, still names it: its runs get an error. */
  ASSERT_CONTAINS(run_to_end(e, "now x"), "no host tool 'now' is registered");
  /* Unsized: an old caller, or one that forgot the macro. */
  spool_tool_def unsized = {0};
  unsized.name = "x";
  ASSERT_EQ(spool_tool_add(e, &unsized), SPOOL_EINVAL);
  ASSERT_CONTAINS(spool_engine_errmsg(e), "SPOOL_TOOL_DEF_INIT");
  spool_response r = {0};
  r.kind = SPOOL_ANSWER;
  r.text = "x";
  ASSERT_EQ(spool_thread_resume(e, "t_x", &r), SPOOL_EINVAL);
  ASSERT_CONTAINS(spool_engine_errmsg(e), "SPOOL_RESPONSE_INIT");
  spool_thread_filter f = {0};
  const char *out;
  ASSERT_EQ(spool_thread_list(e, &f, &out), SPOOL_EINVAL);
  ASSERT_CONTAINS(spool_engine_errmsg(e), "SPOOL_THREAD_FILTER_INIT");
  /* A struct from an older, smaller version: what it lacks reads as zero. */
  spool_thread_filter older = SPOOL_THREAD_FILTER_INIT;
  older.size = offsetof(spool_thread_filter, limit);
  older.text = 1; /* beyond the older size: not read, so JSON */
  ASSERT_EQ(spool_thread_list(e, &older, &out), 0);
  ASSERT(out[0] == '[');
  /* One more, freed with the engine. */
  d.ud = &freed_a;
  ASSERT_EQ(spool_tool_add(e, &d), 0);
  spool_engine_free(e);
  ASSERT_EQ(freed_a, 2);
}

/* A host tool that tries what may not run inside a callback the loop
 * makes: each refused, nothing left behind on the engine's Lua stack. */
typedef struct inside_tool {
  spool_engine *e;
  int refused, calls;
} inside_tool;

static void tool_tries_inside(spool_call *call, const char *args, void *ud) {
  inside_tool *it = ud;
  spool_status st;
  (void)args;
  it->calls++;
  for (int i = 0; i < 100; i++)
    it->refused += spool_thread_status(it->e, spool_call_thread(call), &st) ==
                   SPOOL_ESTATE;
  it->refused += spool_engine_run(it->e, SPOOL_RUN_NOWAIT) == SPOOL_ESTATE;
  it->refused += spool_engine_run_for(it->e, 1) == SPOOL_ESTATE;
  ASSERT_EQ(spool_call_complete(call, "{\"level\":7}"), SPOOL_OK);
}

TEST_IMPL(engine_refuses_inside_callbacks) {
  host_state h = {0};
  spool_engine *e = open_host(&h, NULL);
  inside_tool it = {.e = e};
  spool_tool_def d = SPOOL_TOOL_DEF_INIT;
  d.name = "now";
  d.params_schema_json = "{\"type\":\"object\"}";
  d.fn = tool_tries_inside;
  d.ud = &it;
  ASSERT_EQ(spool_tool_add(e, &d), 0);
  int top = lua_gettop(e->L);
  ASSERT_STR_EQ(run_to_end(e, "now x"), "\"got {\\\"level\\\":7}\"");
  ASSERT_EQ(it.calls, 1);
  ASSERT_EQ(it.refused, 102);
  ASSERT_EQ(lua_gettop(e->L), top);
  spool_engine_free(e);
}

/* On a host's loop the engine's memory goes when the host turns the loop
 * again, but the tools' user data is freed before spool_engine_free
 * returns: the host may free what it points to next. */
TEST_IMPL(engine_frees_tools_at_once_on_host_loop) {
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  host_state h = {0};
  spool_engine *e = open_host(&h, &loop);
  int freed = 0;
  spool_tool_def d = SPOOL_TOOL_DEF_INIT;
  d.name = "now";
  d.params_schema_json = "{}";
  d.fn = tool_plain;
  d.ud = &freed;
  d.free_ud = free_counted;
  ASSERT_EQ(spool_tool_add(e, &d), 0);
  spool_engine_free(e);
  ASSERT_EQ(freed, 1);
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(uv_loop_close(&loop), 0);
}

/* spool_engine_stop from an event callback, which runs between turns now:
 * the run returns, and no stop is left pending for the loop's next turn. */
static void stop_at_first(const spool_event *ev, void *ud) {
  (void)ev;
  spool_engine_stop(ud);
}

TEST_IMPL(engine_stops_from_an_event) {
  spool_engine *e = open_demo(NULL);
  spool_engine_on_event(e, stop_at_first, e);
  char id[SPOOL_ID_SIZE];
  ASSERT_EQ(spool_thread_start(e, "classify", "refund order 5533", id), 0);
  ASSERT_EQ(spool_engine_run(e, SPOOL_RUN_FOREVER), 0);
  ASSERT_EQ(e->loop->stop_flag, 0);
  spool_engine_on_event(e, NULL, NULL);
  ASSERT_EQ(spool_engine_run(e, SPOOL_RUN_IDLE), 0);
  spool_status st;
  ASSERT_EQ(spool_thread_status(e, id, &st), 0);
  ASSERT_EQ(st, SPOOL_DONE);
  spool_engine_free(e);
}

/* Several processes opening one new database at the same moment (ctest
 * runs tests in parallel on a fresh clone): each must open it, none may
 * find the schema half made or the file locked. */
TEST_IMPL(engine_store_opened_by_many_at_once) {
  char dir[] = "/tmp/spool-open-XXXXXX";
  ASSERT(mkdtemp(dir) != NULL);
  char path[256];
  snprintf(path, sizeof path, "%s/new.db", dir);
  enum { N = 6 };
  pid_t kids[N];
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  for (int i = 0; i < N; i++) {
    kids[i] = fork();
    ASSERT(kids[i] >= 0);
    if (kids[i] == 0) {
      char c;
      close(go[1]);
      if (read(go[0], &c, 1) != 0) /* released all at once, by EOF */
        _exit(3);
      spool_engine *e = NULL;
      int rc = spool_engine_new(&e) ||
               spool_engine_set(e, "project", SPOOL_SOURCE_DIR) ||
               spool_engine_set(e, "store", path) || spool_engine_open(e);
      if (rc != 0)
        fprintf(stderr, "open: %s\n", spool_engine_errmsg(e));
      spool_engine_free(e);
      _exit(rc != 0);
    }
  }
  close(go[0]);
  close(go[1]);
  for (int i = 0; i < N; i++) {
    int status = 0;
    ASSERT_EQ(waitpid(kids[i], &status, 0), kids[i]);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
  }
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ASSERT_EQ(system(cmd), 0);
}
