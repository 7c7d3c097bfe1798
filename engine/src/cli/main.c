/*
 * main.c: the spool command line. It is a client of spool.h and nothing
 * else: no internal header, no back door. Exit codes: 0 done, 1 failed,
 * 2 usage error, 3 waiting (paused for a human or an event).
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <lua.h>
#include <uv.h>

#include "spool.h"

enum { EXIT_DONE = 0, EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_WAITING = 3 };

static const char usage_text[] =
    "usage: spool [global options] <command> [arguments]\n"
    "\n"
    "commands:\n"
    "  run AGENT [--input TEXT | -] [--json] [--watch] [--stream]\n"
    "      run an agent on an input until it finishes, fails or pauses;\n"
    "      --watch (or a SIGHUP) reloads edited agents/, prompts/, lib/,\n"
    "      and the run's next step uses the new version; --stream shows\n"
    "      the model's text as it arrives\n"
    "  resume ID [--answer TEXT | --approve [--args JSON] |\n"
    "            --reject [--reason TEXT] | --event NAME [--data JSON]]\n"
    "            [--json]\n"
    "      answer a waiting thread (or continue an interrupted one)\n"
    "  threads [--status S] [--agent A] [--limit N] [--json]\n"
    "  show ID [--json]          a thread's events, sub-agents indented\n"
    "  export ID                 a thread's events as JSON lines\n"
    "  cancel ID | delete ID\n"
    "  fork ID --at SEQ          a new thread from the first SEQ events\n"
    "  recover                   resume interrupted threads, expire "
    "deadlines\n"
    "  state export NS           a business-state namespace as JSON lines\n"
    "  gc [--older-than DAYS]    delete expired state and old threads\n"
    "  migrate --from SOURCE --to TARGET\n"
    "      copy a store (a SQLite file or a postgres:// URL) into an empty\n"
    "      one: threads, events, business state, agent versions\n"
    "  reload [--json]           load and check every agent as a running\n"
    "                            engine does before using an edit; exit 1\n"
    "                            if any is broken\n"
    "  prompt AGENT [--input TEXT | -]\n"
    "      print the exact request body the first step would send\n"
    "  prompt AGENT --thread ID [--step N] [--json]\n"
    "      what the model saw at step N of a thread (or would see next),\n"
    "      with each event's tokens and what the window's policies cut\n"
    "  extract [--schema FILE] [--json]\n"
    "      the JSON value in a model reply on stdin, repaired (repairs to\n"
    "      stderr; --json: one object {value, repairs} on stdout)\n"
    "  serve [--host ADDR] [--port N] [--port-file FILE] [--token-env NAME]\n"
    "        [--max-runs N] [--rate N] [--drain-ms N] [--no-watch]\n"
    "      the control API (HTTP/JSON, docs/openapi.json) on 127.0.0.1:8080;\n"
    "      every request needs its token: $SPOOL_TOKEN (or --token-env),\n"
    "      else the project's own (see spool token)\n"
    "  mcp [--max-runs N]\n"
    "      the agents as MCP tools over stdio, for an MCP client to launch\n"
    "      (spool serve answers MCP at /mcp too)\n"
    "  token [--token-env NAME]  print the control API's token (made in\n"
    "                            .spool/api-token, owner-only, if missing)\n"
    "  llm [--provider P] [--model M] [--base-url URL] [--system TEXT]\n"
    "      [--tools FILE] [--stream] [--json] [--max-retries N] [PROMPT | -]\n"
    "      one model call through spool's adapters; P is openai,\n"
    "      openai-responses or anthropic; --json: the last line is\n"
    "      {text, tool_calls, finish_reason, usage}\n"
    "  eval AGENT --cases FILE [--repeat N] [--concurrency C] [--json |\n"
    "       --junit FILE] [--min-pass RATE] [--record DIR | --replay DIR]\n"
    "       [--compare A B]\n"
    "      run the agent over a case set and report its pass rate (A, B:\n"
    "      current, an agent file, or git:REV); exit 1 below --min-pass\n"
    "  replay THREAD [--agent-file FILE] [--json] [--live] [--keep]\n"
    "      re-run a thread through the agent's code, the model's replies,\n"
    "      people's answers and tools' results from the recording (no\n"
    "      handler runs unless --live), and show where its calls, the\n"
    "      people it asks or its end diverge (exit 1 if they do)\n"
    "  mock-llm [--port N] [--host ADDR] [--script FILE] [--port-file FILE]\n"
    "      serve the built-in mock model (OpenAI Chat Completions and\n"
    "      Responses, Anthropic Messages); --port 0 picks a free port\n"
    "  test [BUSTED OPTIONS] [SPEC FILES]\n"
    "      run busted specs inside the engine, under Lua 5.4, on the mock\n"
    "      model unless --mock off (spool.test scripts it)\n"
    "  lua FILE [ARGS]           run a Lua script inside the engine (as a\n"
    "                            run: it may wait on I/O; arg holds ARGS)\n"
    "\n"
    "global options:\n"
    "  --project DIR     the project folder (agents/, prompts/, spool.lua);\n"
    "                    default: the current folder, or $SPOOL_PROJECT\n"
    "  --model NAME      the model to call\n"
    "  --base-url URL    an OpenAI-compatible endpoint, e.g. "
    "http://127.0.0.1:11434/v1\n"
    "  --mock on|off     force (or forbid) the built-in mock model\n"
    "  --db FILE         the thread store (default .spool/spool.db)\n"
    "  --log LEVEL       error, warn, info or debug (to stderr)\n"
    "  --log-format F    text, or json (one object per line)\n"
    "  -h, --help        this text;   --version  the versions in use\n"
    "\n"
    "With no OPENAI_API_KEY and no --base-url, agents talk to the built-in\n"
    "mock model. Exit codes: 0 done, 1 failed, 2 usage error (or an unknown\n"
    "thread, agent or file), 3 waiting. Every command answers --help.\n";

typedef struct cli {
  const char *project, *model, *base_url, *mock, *log, *log_format, *db;
  const char *watch;  /* "on" for run --watch */
  const char *stream; /* "on" for run --stream */
  const char *command;
  int argc; /* the command's own arguments */
  char **argv;
} cli;

/* Every line the command writes on stderr goes through say(), in the log's
 * format, so --log-format json makes each one a JSON object. voice is an
 * engine never opened, there from the start to format those lines. */
static spool_engine *voice;

static void say(const char *level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void say(const char *level, const char *fmt, ...) {
  char small[1024], *msg = small;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n >= (int)sizeof small && (msg = malloc((size_t)n + 1)) != NULL) {
    va_start(ap, fmt);
    vsnprintf(msg, (size_t)n + 1, fmt, ap);
    va_end(ap);
  }
  if (msg == NULL)
    msg = small; /* cut short rather than lost */
  if (voice == NULL || spool_engine_say(voice, level, msg) != 0)
    fprintf(stderr, "spool: %s\n", msg);
  if (msg != small)
    free(msg);
}

static int usage_error(const char *fmt, const char *arg) {
  char what[512];
  snprintf(what, sizeof what, fmt, arg);
  say("error", "%s\nRun 'spool --help' for usage.", what);
  return EXIT_USAGE;
}

static void print_version(void) {
  printf("spool %s (%s, libuv %s, libcurl %s)\n", spool_version(), LUA_RELEASE,
         uv_version_string(), curl_version_info(CURLVERSION_NOW)->version);
}

/* Frees an engine, its spans sent first (the CLI turns its own loop, so
 * the engine does not: spool_engine_flush). */
static void close_engine(spool_engine *e) {
  spool_engine_flush(e, 0);
  spool_engine_free(e);
}

/* Where the Lua library is found, which tells an install from a build. */
static void print_library(void) {
  spool_engine *e = NULL;
  if (spool_engine_new(&e) == 0 && spool_engine_set(e, "project", "/") == 0 &&
      spool_engine_open(e) == 0)
    printf("Lua library: %s\n", spool_engine_get(e, "lua_dir"));
  else
    printf("Lua library: not found (%s)\n", spool_engine_errmsg(e));
  close_engine(e);
}

/* Reads all of a stream; NULL on error. *len_out (if given) gets its
 * length (the text may hold NUL bytes). */
static char *read_all(FILE *f, size_t *len_out) {
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  while (buf) {
    size_t n = fread(buf + len, 1, cap - len - 1, f);
    len += n;
    if (n == 0)
      break;
    if (len + 1 == cap) {
      char *p = realloc(buf, cap *= 2);
      if (p == NULL)
        free(buf);
      buf = p;
    }
  }
  if (buf == NULL || ferror(f)) {
    free(buf);
    return NULL;
  }
  buf[len] = '\0';
  if (len_out)
    *len_out = len;
  return buf;
}

static char *read_stdin(void) {
  return read_all(stdin, NULL);
}

/* Opens an engine on `loop` with the global options; prints the error and
 * sets *code (2 for a bad option value, 1 for a failure to open). */
static spool_engine *open_engine(const cli *c, uv_loop_t *loop, int *code) {
  spool_engine *e = NULL;
  if (spool_engine_new(&e) != 0) {
    say("error", "out of memory");
    return NULL;
  }
  const char *project = c->project ? c->project : getenv("SPOOL_PROJECT");
  int rc = 0;
  if (project && *project)
    rc = spool_engine_set(e, "project", project);
  if (rc == 0 && c->model)
    rc = spool_engine_set(e, "model", c->model);
  if (rc == 0 && c->base_url)
    rc = spool_engine_set(e, "base_url", c->base_url);
  if (rc == 0 && c->mock)
    rc = spool_engine_set(e, "mock", c->mock);
  if (rc == 0 && c->log)
    rc = spool_engine_set(e, "log", c->log);
  if (rc == 0 && c->log_format)
    rc = spool_engine_set(e, "log_format", c->log_format);
  if (rc == 0 && c->db)
    rc = spool_engine_set(e, "store", c->db);
  if (rc == 0 && c->watch)
    rc = spool_engine_set(e, "watch", c->watch);
  if (rc == 0 && c->stream)
    rc = spool_engine_set(e, "stream", c->stream);
  if (rc == 0)
    rc = spool_engine_use_loop(e, loop);
  *code = rc != 0 ? EXIT_USAGE : EXIT_FAILED;
  if (rc == 0)
    rc = spool_engine_open(e);
  if (rc != 0) {
    say("error", "%s", spool_engine_errmsg(e));
    close_engine(e);
    return NULL;
  }
  *code = EXIT_DONE;
  return e;
}

static void close_handle(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

/* Closes what is left on the loop (signal watchers) and the loop itself. */
static void close_loop(uv_loop_t *loop) {
  uv_walk(loop, close_handle, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
}

/* ---- signals: stop the engine's loop on SIGINT / SIGTERM; during a run,
 * SIGHUP stops it to reload agents (outside the loop) and go on ---- */

typedef struct stopper {
  uv_signal_t sigint, sigterm, sighup;
  spool_engine *e;
  int signalled;
  int reload_requested;
} stopper;

/* Static, so the handles outlive the command until close_loop. */
static stopper the_stopper;

static void on_signal(uv_signal_t *h, int signum) {
  stopper *s = h->data;
  if (signum == SIGHUP)
    s->reload_requested = 1;
  else
    s->signalled = signum;
  spool_engine_stop(s->e);
}

static void watch_signal(uv_loop_t *loop, stopper *s, uv_signal_t *h,
                         int signum) {
  uv_signal_init(loop, h);
  h->data = s;
  uv_signal_start(h, on_signal, signum);
  uv_unref((uv_handle_t *)h);
}

static stopper *watch_signals(uv_loop_t *loop, spool_engine *e) {
  stopper *s = &the_stopper;
  s->e = e;
  s->signalled = s->reload_requested = 0;
  watch_signal(loop, s, &s->sigint, SIGINT);
  watch_signal(loop, s, &s->sigterm, SIGTERM);
  return s;
}

/* Turns the loop until no run is in flight, reloading on SIGHUP. */
static void run_until_idle(spool_engine *e, stopper *st) {
  for (;;) {
    spool_engine_run(e, SPOOL_RUN_IDLE);
    if (!st->reload_requested || st->signalled)
      return;
    st->reload_requested = 0;
    if (spool_engine_reload(e, NULL) != 0)
      say("error", "reload: %s", spool_engine_errmsg(e));
    if (st->signalled)
      return; /* SIGINT while reloading: the next run would clear it */
  }
}

/* ---- run ---- */

typedef struct run_opts {
  const char *agent;
  char *input;
  int json;
  int watch;
  int stream;
  int mid_line;    /* deltas printed since the last newline */
  int broken;      /* reload_failed events seen */
  int only_loaded; /* print no reload_failed events (they are logged) */
} run_opts;

static void count_broken(const spool_event *ev, void *ud) {
  run_opts *o = ud;
  if (strcmp(spool_event_type(ev), "reload_failed") == 0)
    o->broken++;
}

static void on_event(const spool_event *ev, void *ud) {
  run_opts *o = ud;
  int broken = o->broken;
  count_broken(ev, o);
  if (o->only_loaded && o->broken > broken)
    return;
  if (!o->json && strcmp(spool_event_type(ev), "delta") == 0) {
    fputs(spool_event_text(ev), stdout); /* the reply as it arrives */
    o->mid_line = 1;
    fflush(stdout);
    return;
  }
  if (o->mid_line) {
    putchar('\n');
    o->mid_line = 0;
  }
  if (o->json) {
    printf("%s\n", spool_event_json(ev));
  } else {
    int depth = spool_event_depth(ev);
    printf("%*s%s\n", 2 * depth, "", spool_event_text(ev));
  }
  fflush(stdout);
}

/* Parses AGENT [--input TEXT | -] [--json]; `allow_json` for run. */
static int parse_agent_args(const cli *c, run_opts *o, int allow_json) {
  memset(o, 0, sizeof *o);
  int from_stdin = 0;
  const char *text = NULL;
  for (int i = 0; i < c->argc; i++) {
    const char *a = c->argv[i];
    if (strcmp(a, "--input") == 0 || strcmp(a, "-i") == 0) {
      if (i + 1 >= c->argc)
        return usage_error("%s needs a value (text, or - for stdin)", a);
      text = c->argv[++i];
      if (strcmp(text, "-") == 0)
        from_stdin = 1;
    } else if (strcmp(a, "-") == 0) {
      from_stdin = 1;
    } else if (allow_json && strcmp(a, "--json") == 0) {
      o->json = 1;
    } else if (allow_json && strcmp(a, "--watch") == 0) {
      o->watch = 1;
    } else if (allow_json && strcmp(a, "--stream") == 0) {
      o->stream = 1;
    } else if (a[0] == '-') {
      return usage_error("unknown option '%s'", a);
    } else if (o->agent == NULL) {
      o->agent = a;
    } else {
      return usage_error("unexpected argument '%s' (quote the input and "
                         "pass it with --input)",
                         a);
    }
  }
  if (o->agent == NULL)
    return usage_error("%s needs an agent name", c->command);
  if (from_stdin) {
    if ((o->input = read_stdin()) == NULL)
      return usage_error("cannot read the input from stdin%s", "");
  } else if (text) {
    o->input = strdup(text);
  } else {
    return usage_error("%s needs an input: --input TEXT, or - for stdin",
                       c->command);
  }
  return o->input ? 0 : EXIT_FAILED;
}

/* What a failed call means for the exit code: a thread or agent that does
 * not exist, or an argument that does not fit, is the caller's mistake
 * (2), as with every command; the rest failed (1). */
static int exit_for(int rc) {
  return (rc == SPOOL_ENOTFOUND || rc == SPOOL_EINVAL) ? EXIT_USAGE
                                                       : EXIT_FAILED;
}

/* Says what a waiting thread waits for, and the resume that answers it. */
static void say_waiting(spool_engine *e, const char *id) {
  spool_response_kind kind;
  const char *name, *text;
  if (spool_thread_request(e, id, &kind, &name, &text) != 0) {
    say("error", "%s", spool_engine_errmsg(e));
    return;
  }
  if (kind == SPOOL_ANSWER)
    say("info", "thread %s waits for %s (spool resume %s --answer TEXT)", id,
        text, id);
  else if (kind == SPOOL_EVENT)
    say("info",
        "thread %s waits for %s (spool resume %s --event %s [--data JSON])", id,
        text, id, name);
  else
    say("info",
        "thread %s waits for %s (spool resume %s --approve [--args JSON] | "
        "--reject [--reason TEXT])",
        id, text, id);
}

/* Turns the loop until the thread's run ends or pauses; prints what it
 * waits for; returns the exit code for its status. */
static int finish_run(spool_engine *e, const char *id, stopper *st) {
  run_until_idle(e, st);
  spool_status status;
  const char *result;
  if (spool_thread_status(e, id, &status) != 0) {
    say("error", "%s", spool_engine_errmsg(e));
    return EXIT_FAILED;
  }
  switch (status) {
  case SPOOL_DONE:
    return EXIT_DONE;
  case SPOOL_WAITING:
    say_waiting(e, id);
    return EXIT_WAITING;
  case SPOOL_RUNNING:
    say("error",
        "interrupted (signal %d); thread %s stopped at its last stored "
        "step: spool resume %s continues it",
        st->signalled, id, id);
    return EXIT_FAILED;
  default:
    if (spool_thread_result(e, id, &result) == 0 &&
        strncmp(result, "{\"error\":\"the run stopped", 26) == 0)
      say("error", "%s", result);
    return EXIT_FAILED;
  }
}

static int cmd_run(const cli *c, uv_loop_t *loop) {
  run_opts o;
  int code = parse_agent_args(c, &o, 1);
  if (code != 0)
    return code;
  cli with_watch = *c;
  with_watch.watch = o.watch ? "on" : NULL;
  with_watch.stream = o.stream ? "on" : NULL;
  spool_engine *e = open_engine(&with_watch, loop, &code);
  if (e == NULL) {
    free(o.input);
    return code;
  }
  stopper *st = watch_signals(loop, e);
  watch_signal(loop, st, &st->sighup, SIGHUP);
  spool_engine_on_event(e, on_event, &o);
  char id[SPOOL_ID_SIZE];
  int rc = spool_thread_start(e, o.agent, o.input, id);
  if (rc != 0) {
    say("error", "%s", spool_engine_errmsg(e));
    code = exit_for(rc);
    goto done;
  }
  code = finish_run(e, id, st);
done:
  close_engine(e);
  free(o.input);
  return code;
}

static int run_library_script(const cli *c, uv_loop_t *loop, const char *name);

static int cmd_prompt(const cli *c, uv_loop_t *loop) {
  for (int i = 0; i < c->argc; i++)
    if (strcmp(c->argv[i], "--thread") == 0)
      return run_library_script(c, loop, "cli/prompt.lua");
  run_opts o;
  int code = parse_agent_args(c, &o, 0);
  if (code != 0)
    return code;
  spool_engine *e = open_engine(c, loop, &code);
  if (e == NULL) {
    free(o.input);
    return code;
  }
  const char *body;
  int rc = spool_prompt_render(e, o.agent, o.input, &body);
  if (rc == 0) {
    printf("%s\n", body);
  } else {
    say("error", "%s", spool_engine_errmsg(e));
    code = exit_for(rc);
  }
  close_engine(e);
  free(o.input);
  return code;
}

/* ---- extract ---- */

static int cmd_extract(const cli *c, uv_loop_t *loop) {
  const char *schema_file = NULL;
  int json = 0, code = 0;
  for (int i = 0; i < c->argc; i++) {
    if (strcmp(c->argv[i], "--schema") == 0) {
      if (i + 1 >= c->argc)
        return usage_error("--schema needs a file%s", "");
      schema_file = c->argv[++i];
    } else if (strcmp(c->argv[i], "--json") == 0) {
      json = 1;
    } else {
      return usage_error("extract: unknown argument '%s' (the reply is read "
                         "from stdin)",
                         c->argv[i]);
    }
  }
  char *schema = NULL;
  if (schema_file) {
    FILE *f = fopen(schema_file, "rb");
    if (f == NULL || (schema = read_all(f, NULL)) == NULL) {
      say("error", "cannot read %s: %s", schema_file, strerror(errno));
      if (f)
        fclose(f);
      return EXIT_USAGE;
    }
    fclose(f);
  }
  size_t len;
  char *text = read_all(stdin, &len);
  if (text == NULL) {
    free(schema);
    return usage_error("cannot read the reply from stdin%s", "");
  }
  /* Text in, text out: no thread is stored, so no store is opened (nor
   * created, nor locked) unless --db names one. */
  cli own = *c;
  if (own.db == NULL)
    own.db = ":memory:";
  spool_engine *e = open_engine(&own, loop, &code);
  if (e != NULL) {
    const char *out;
    if (spool_extract(e, text, len, schema, json ? 0 : SPOOL_EXTRACT_LINES,
                      &out) != 0) {
      say("error", "%s", spool_engine_errmsg(e));
      code = EXIT_FAILED;
    } else if (json) {
      printf("%s\n", out);
    } else {
      /* The value on stdout; each repair on stderr. */
      const char *nl = strchr(out, '\n');
      printf("%.*s\n", (int)(nl - out), out);
      for (const char *p = nl + 1; *p; p = strchr(p, '\n') + 1)
        fprintf(stderr, "repaired: %.*s\n", (int)(strchr(p, '\n') - p), p);
    }
    close_engine(e);
  }
  free(text);
  free(schema);
  return code;
}

/* ---- stored threads ---- */

/* Parses the next value of a flag; sets *code on a missing one. */
static const char *flag_value(const cli *c, int *i, int *code) {
  if (*i + 1 >= c->argc) {
    *code = usage_error("%s needs a value", c->argv[*i]);
    return NULL;
  }
  return c->argv[++*i];
}

static int cmd_resume(const cli *c, uv_loop_t *loop) {
  spool_response r = SPOOL_RESPONSE_INIT;
  const char *id = NULL;
  int has = 0, json = 0, code = 0;
  const char *data = NULL;
  run_opts o = {0};
  for (int i = 0; i < c->argc && code == 0; i++) {
    const char *a = c->argv[i];
    if (strcmp(a, "--answer") == 0) {
      r.kind = SPOOL_ANSWER;
      r.text = flag_value(c, &i, &code);
      has++;
    } else if (strcmp(a, "--approve") == 0) {
      r.kind = SPOOL_APPROVE;
      has++;
    } else if (strcmp(a, "--reject") == 0) {
      r.kind = SPOOL_REJECT;
      has++;
    } else if (strcmp(a, "--event") == 0) {
      r.kind = SPOOL_EVENT;
      r.text = flag_value(c, &i, &code);
      has++;
    } else if (strcmp(a, "--data") == 0) {
      data = flag_value(c, &i, &code);
    } else if (strcmp(a, "--args") == 0) {
      r.args_json = flag_value(c, &i, &code);
    } else if (strcmp(a, "--reason") == 0) {
      r.text = flag_value(c, &i, &code);
    } else if (strcmp(a, "--json") == 0) {
      json = 1;
    } else if (a[0] == '-') {
      return usage_error("unknown option '%s'", a);
    } else if (id == NULL) {
      id = a;
    } else {
      return usage_error("unexpected argument '%s'", a);
    }
  }
  if (code != 0)
    return code;
  if (id == NULL)
    return usage_error("resume needs a thread id%s", "");
  if (has > 1)
    return usage_error("give one of --answer, --approve, --reject and "
                       "--event%s",
                       "");
  if (r.args_json && r.kind != SPOOL_APPROVE)
    return usage_error("--args goes with --approve%s", "");
  if (data && r.kind != SPOOL_EVENT)
    return usage_error("--data goes with --event%s", "");
  if (data)
    r.args_json = data;
  if (r.kind == SPOOL_ANSWER && r.text == NULL)
    return usage_error("--answer needs a value%s", "");
  r.by = "cli";
  spool_engine *e = open_engine(c, loop, &code);
  if (e == NULL)
    return code;
  stopper *st = watch_signals(loop, e);
  o.json = json;
  spool_engine_on_event(e, on_event, &o);
  int rc = spool_thread_resume(e, id, has ? &r : NULL);
  if (rc != 0) {
    say("error", "%s", spool_engine_errmsg(e));
    code = exit_for(rc);
  } else {
    code = finish_run(e, id, st);
  }
  close_engine(e);
  return code;
}

static int cmd_threads(const cli *c, uv_loop_t *loop) {
  spool_thread_filter f = SPOOL_THREAD_FILTER_INIT;
  int code = 0;
  f.text = 1;
  for (int i = 0; i < c->argc && code == 0; i++) {
    const char *a = c->argv[i];
    if (strcmp(a, "--status") == 0) {
      f.status = flag_value(c, &i, &code);
    } else if (strcmp(a, "--agent") == 0) {
      f.agent = flag_value(c, &i, &code);
    } else if (strcmp(a, "--limit") == 0) {
      const char *v = flag_value(c, &i, &code);
      if (v && (f.limit = atoi(v)) <= 0)
        return usage_error("--limit needs a positive number, not '%s'", v);
    } else if (strcmp(a, "--json") == 0) {
      f.text = 0;
    } else {
      return usage_error("threads: unknown argument '%s'", a);
    }
  }
  if (code != 0)
    return code;
  static const char *const statuses[] = {"running", "waiting", "done", "failed",
                                         "cancelled"};
  int known = f.status == NULL;
  for (int i = 0; i < 5 && !known; i++)
    known = strcmp(f.status, statuses[i]) == 0;
  if (!known)
    return usage_error("--status is running, waiting, done, failed or "
                       "cancelled, not '%s'",
                       f.status);
  spool_engine *e = open_engine(c, loop, &code);
  if (e == NULL)
    return code;
  /* One row more than shown says whether there are more. */
  int shown = f.limit ? f.limit : 100;
  f.limit = f.text ? shown + 1 : shown;
  const char *out;
  if (spool_thread_list(e, &f, &out) == 0) {
    const char *cut = out;
    for (int n = 0; f.text && cut && n < shown; n++)
      cut = (cut = strchr(cut, '\n')) ? cut + 1 : NULL;
    if (f.text && cut && *cut) {
      fwrite(out, 1, (size_t)(cut - out), stdout);
      printf("(only the newest %d are shown: --limit N shows more)\n", shown);
    } else {
      fputs(out, stdout);
    }
    if (!f.text)
      fputc('\n', stdout);
  } else {
    say("error", "%s", spool_engine_errmsg(e));
    code = EXIT_FAILED;
  }
  close_engine(e);
  return code;
}

/* Commands that take one thread id (show, export, cancel, delete). */
static int cmd_on_thread(const cli *c, uv_loop_t *loop) {
  const char *id = NULL;
  int json = 0, code = 0;
  for (int i = 0; i < c->argc; i++) {
    const char *a = c->argv[i];
    if (strcmp(a, "--json") == 0 && strcmp(c->command, "show") == 0)
      json = 1;
    else if (a[0] == '-')
      return usage_error("unknown option '%s'", a);
    else if (id == NULL)
      id = a;
    else
      return usage_error("unexpected argument '%s'", a);
  }
  if (id == NULL)
    return usage_error("%s needs a thread id", c->command);
  spool_engine *e = open_engine(c, loop, &code);
  if (e == NULL)
    return code;
  const char *out = NULL;
  int rc;
  if (strcmp(c->command, "show") == 0)
    rc = json ? spool_thread_json(e, id, &out) : spool_thread_text(e, id, &out);
  else if (strcmp(c->command, "export") == 0)
    rc = spool_thread_export(e, id, &out);
  else if (strcmp(c->command, "cancel") == 0)
    rc = spool_thread_cancel(e, id);
  else
    rc = spool_thread_delete(e, id);
  if (rc == 0 && out) {
    fputs(out, stdout);
    if (json)
      fputc('\n', stdout);
  } else if (rc == 0) {
    printf("%s %s\n",
           strcmp(c->command, "cancel") == 0 ? "cancelled" : "deleted", id);
  } else {
    say("error", "%s", spool_engine_errmsg(e));
    code = exit_for(rc);
  }
  close_engine(e);
  return code;
}

static int cmd_fork(const cli *c, uv_loop_t *loop) {
  const char *id = NULL, *at = NULL;
  int code = 0;
  for (int i = 0; i < c->argc && code == 0; i++) {
    if (strcmp(c->argv[i], "--at") == 0)
      at = flag_value(c, &i, &code);
    else if (c->argv[i][0] == '-')
      return usage_error("unknown option '%s'", c->argv[i]);
    else if (id == NULL)
      id = c->argv[i];
    else
      return usage_error("unexpected argument '%s'", c->argv[i]);
  }
  if (code != 0)
    return code;
  char *end = NULL;
  long long seq = at ? strtoll(at, &end, 10) : 0;
  if (id == NULL || at == NULL || *end != '\0' || seq < 1)
    return usage_error("usage: spool fork ID --at SEQ (SEQ >= 1)%s", "");
  spool_engine *e = open_engine(c, loop, &code);
  if (e == NULL)
    return code;
  char new_id[SPOOL_ID_SIZE];
  int rc = spool_thread_fork(e, id, seq, new_id);
  if (rc == 0) {
    printf("%s\n", new_id);
  } else {
    say("error", "%s", spool_engine_errmsg(e));
    code = exit_for(rc);
  }
  close_engine(e);
  return code;
}

static int cmd_recover(const cli *c, uv_loop_t *loop) {
  if (c->argc > 0)
    return usage_error("recover takes no arguments, not '%s'", c->argv[0]);
  int code;
  spool_engine *e = open_engine(c, loop, &code);
  if (e == NULL)
    return code;
  run_opts o = {0};
  spool_engine_on_event(e, on_event, &o);
  watch_signals(loop, e);
  const char *report;
  if (spool_engine_recover(e, &report) == 0) {
    spool_engine_run(e, SPOOL_RUN_IDLE);
    printf("recovered: %s\n", report);
    /* Threads it could not resume (each logged, with why) fail the
     * command, so a cron job or an operator notices. */
    if (strstr(report, "\"skipped\":[]") == NULL) {
      say("error", "some threads could not be resumed: see \"skipped\"");
      code = EXIT_FAILED;
    }
  } else {
    say("error", "%s", spool_engine_errmsg(e));
    code = EXIT_FAILED;
  }
  close_engine(e);
  return code;
}

static int cmd_reload(const cli *c, uv_loop_t *loop) {
  run_opts o = {0};
  for (int i = 0; i < c->argc; i++) {
    if (strcmp(c->argv[i], "--json") == 0)
      o.json = 1;
    else
      return usage_error("reload takes only --json, not '%s'", c->argv[i]);
  }
  /* A check: the versions it stores need not outlive it. */
  cli in_memory = *c;
  if (in_memory.db == NULL)
    in_memory.db = ":memory:";
  int code;
  spool_engine *e = open_engine(&in_memory, loop, &code);
  if (e == NULL)
    return code;
  const char *report;
  /* Broken agents are logged to stderr; stdout lists the good ones. */
  o.only_loaded = 1;
  spool_engine_on_event(e, o.json ? count_broken : on_event, &o);
  if (spool_engine_reload(e, &report) != 0) {
    say("error", "%s", spool_engine_errmsg(e));
    code = EXIT_FAILED;
  } else {
    if (o.json)
      printf("%s\n", report);
    if (o.broken)
      code = EXIT_FAILED;
  }
  close_engine(e);
  return code;
}

static int cmd_state(const cli *c, uv_loop_t *loop) {
  if (c->argc != 2 || strcmp(c->argv[0], "export") != 0)
    return usage_error("usage: spool state export NAMESPACE%s", "");
  int code;
  spool_engine *e = open_engine(c, loop, &code);
  if (e == NULL)
    return code;
  const char *out;
  if (spool_state_export(e, c->argv[1], &out) == 0) {
    fputs(out, stdout);
  } else {
    say("error", "%s", spool_engine_errmsg(e));
    code = EXIT_FAILED;
  }
  close_engine(e);
  return code;
}

static int cmd_gc(const cli *c, uv_loop_t *loop) {
  const char *days = NULL;
  int code = 0;
  for (int i = 0; i < c->argc && code == 0; i++) {
    if (strcmp(c->argv[i], "--older-than") == 0)
      days = flag_value(c, &i, &code);
    else
      return usage_error("gc: unknown argument '%s'", c->argv[i]);
  }
  if (code != 0)
    return code;
  if (days && (atof(days) <= 0))
    return usage_error("--older-than needs a number of days, not '%s'", days);
  spool_engine *e = open_engine(c, loop, &code);
  if (e == NULL)
    return code;
  const char *report;
  if (spool_engine_gc(e, days, &report) == 0) {
    printf("deleted: %s\n", report);
  } else {
    say("error", "%s", spool_engine_errmsg(e));
    code = EXIT_FAILED;
  }
  close_engine(e);
  return code;
}

/* The engine opens the target as its store; cli/migrate.lua copies the
 * source into it. */
static int cmd_migrate(const cli *c, uv_loop_t *loop) {
  cli to_target = *c;
  to_target.db = NULL;
  for (int i = 0; i + 1 < c->argc; i++)
    if (strcmp(c->argv[i], "--to") == 0)
      to_target.db = c->argv[i + 1];
  if (to_target.db == NULL)
    return usage_error("usage: spool migrate --from SOURCE --to TARGET%s", "");
  return run_library_script(&to_target, loop, "cli/migrate.lua");
}

/* ---- servers: mock-llm, serve ---- */

/* Parses a port number (0 to 65535); a usage error otherwise. */
static int parse_port(const char *v, int *port) {
  char *end;
  long p = strtol(v, &end, 10);
  if (*v == '\0' || *end != '\0' || p < 0 || p > 65535)
    return usage_error("--port needs a number from 0 to 65535, not '%s'", v);
  *port = (int)p;
  return 0;
}

/* Writes the port a server bound, for scripts that started it on port 0:
 * to a temporary name, then renamed, so a reader never sees half of it. */
static int write_port_file(const char *path, int port) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (f == NULL || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 ||
      rename(tmp, path) != 0) {
    say("error", "cannot write %s: %s", path, strerror(errno));
    return -1;
  }
  return 0;
}

static int cmd_mock(const cli *c, uv_loop_t *loop) {
  const char *host = "127.0.0.1", *script = NULL, *port_file = NULL;
  int port = 8089;
  for (int i = 0; i < c->argc; i++) {
    const char *a = c->argv[i];
    const char *v = i + 1 < c->argc ? c->argv[i + 1] : NULL;
    if (strcmp(a, "--port") == 0 || strcmp(a, "--host") == 0 ||
        strcmp(a, "--script") == 0 || strcmp(a, "--port-file") == 0) {
      if (v == NULL)
        return usage_error("%s needs a value", a);
      i++;
      if (strcmp(a, "--port") == 0) {
        if (parse_port(v, &port) != 0)
          return EXIT_USAGE;
      } else if (strcmp(a, "--host") == 0) {
        host = v;
      } else if (strcmp(a, "--script") == 0) {
        script = v;
      } else {
        port_file = v;
      }
    } else {
      return usage_error("mock-llm: unknown argument '%s'", a);
    }
  }
  int bound = 0, code = EXIT_DONE;
  spool_engine *e = open_engine(c, loop, &code);
  if (e == NULL)
    return code;
  if (spool_mock_start(e, script, host, port, &bound) != 0) {
    say("error", "%s", spool_engine_errmsg(e));
    close_engine(e);
    return EXIT_FAILED;
  }
  printf("mock model listening on http://%s:%d/v1\n", host, bound);
  fflush(stdout);
  if (port_file && write_port_file(port_file, bound) != 0) {
    close_engine(e);
    return EXIT_FAILED;
  }
  watch_signals(loop, e);
  spool_engine_run(e, SPOOL_RUN_FOREVER);
  close_engine(e);
  return code;
}

static int parse_count(const char *flag, const char *v, int *out) {
  char *end;
  long n = strtol(v, &end, 10);
  if (*v == '\0' || *end != '\0' || n < 0 || n > 1000000000)
    return usage_error("%s needs a whole number", flag);
  *out = (int)n;
  return 0;
}

static int cmd_serve(const cli *c, uv_loop_t *loop) {
  spool_serve_opts o = SPOOL_SERVE_OPTS_INIT;
  o.port = 8080;
  const char *port_file = NULL;
  int watch = 1, drain_ms = 10000, code = 0;
  for (int i = 0; i < c->argc && code == 0; i++) {
    const char *a = c->argv[i];
    if (strcmp(a, "--host") == 0)
      o.host = flag_value(c, &i, &code);
    else if (strcmp(a, "--port") == 0) {
      const char *v = flag_value(c, &i, &code);
      if (v)
        code = parse_port(v, &o.port);
    } else if (strcmp(a, "--port-file") == 0)
      port_file = flag_value(c, &i, &code);
    else if (strcmp(a, "--token-env") == 0)
      o.token_env = flag_value(c, &i, &code);
    else if (strcmp(a, "--max-runs") == 0 || strcmp(a, "--rate") == 0 ||
             strcmp(a, "--drain-ms") == 0) {
      const char *v = flag_value(c, &i, &code);
      int *slot = a[2] == 'm' ? &o.max_runs : a[2] == 'r' ? &o.rate : &drain_ms;
      if (v)
        code = parse_count(a, v, slot);
    } else if (strcmp(a, "--no-watch") == 0)
      watch = 0;
    else
      return usage_error("serve: unknown argument '%s'", a);
  }
  if (code != 0)
    return code;
  cli with_watch = *c;
  with_watch.watch = watch ? "on" : NULL;
  spool_engine *e = open_engine(&with_watch, loop, &code);
  if (e == NULL)
    return code;
  int port = 0;
  if (spool_serve_start(e, &o, &port) != 0) {
    say("error", "%s", spool_engine_errmsg(e));
    close_engine(e);
    return EXIT_FAILED;
  }
  say("info",
      "serving the control API on http://%s:%d (each request needs its "
      "token: spool token prints it)",
      o.host ? o.host : "127.0.0.1", port);
  if (port_file && write_port_file(port_file, port) != 0) {
    close_engine(e);
    return EXIT_FAILED;
  }
  stopper *st = watch_signals(loop, e);
  watch_signal(loop, st, &st->sighup, SIGHUP);
  for (;;) {
    spool_engine_run(e, SPOOL_RUN_FOREVER);
    if (st->signalled)
      break;
    if (st->reload_requested) {
      st->reload_requested = 0;
      if (spool_engine_reload(e, NULL) != 0)
        say("error", "reload: %s", spool_engine_errmsg(e));
    }
  }
  say("info", "signal %d: draining (up to %d ms)", st->signalled, drain_ms);
  int left = 0;
  if (spool_serve_stop(e, (unsigned)drain_ms, &left) != 0) {
    say("error", "%s", spool_engine_errmsg(e));
    code = EXIT_FAILED;
  } else if (left > 0) {
    say("warn", "%d runs were mid-step; the next start resumes them", left);
  }
  close_engine(e);
  return code;
}

/* ---- test: busted, hosted by the engine ---- */

static int cmd_test(const cli *c, uv_loop_t *loop) {
  cli with_store = *c;
  /* Specs get a store of their own that vanishes with them. */
  const char *db = getenv("SPOOL_DB");
  if (with_store.db == NULL && (db == NULL || *db == '\0'))
    with_store.db = ":memory:";
  /* And the mock model (spool.test scripts it) unless --mock off: a spec
   * must not spend on a provider because a key is in the environment. */
  if (with_store.mock == NULL)
    with_store.mock = "on";
  return run_library_script(&with_store, loop, "cli/busted.lua");
}

/* Runs one of the library's command scripts (spool/cli/NAME.lua). */
static int run_library_script(const cli *c, uv_loop_t *loop, const char *name) {
  int code;
  spool_engine *e = open_engine(c, loop, &code);
  if (e == NULL)
    return code;
  char path[4096];
  snprintf(path, sizeof path, "%s/spool/%s", spool_engine_get(e, "lua_dir"),
           name);
  if (spool_script_run(e, path, c->argc, c->argv, &code) != 0) {
    say("error", "%s", spool_engine_errmsg(e));
    code = EXIT_FAILED;
  }
  close_engine(e);
  return code;
}

static int cmd_llm(const cli *c, uv_loop_t *loop) {
  return run_library_script(c, loop, "cli/llm.lua");
}

/* Evaluations keep their stores in .spool/evals/ so the threads a report
 * names can be inspected; the newest EVALS_KEPT stay, older ones go once
 * nothing has written them for EVAL_IDLE_S (another evaluation may still
 * be running). */
enum { EVALS_KEPT = 10, EVAL_IDLE_S = 600 };

static int is_store_file(const struct dirent *d) {
  size_t n = strlen(d->d_name);
  return n > 3 && strcmp(d->d_name + n - 3, ".db") == 0;
}

/* A store's files, and its report (.db.json: spool serve's /v1/agents). */
static const char *const store_parts[] = {"", "-wal", "-shm", "-journal",
                                          ".json"};

/* When a store was last written: a writer in WAL mode writes its -wal. */
static time_t last_written(const char *path) {
  time_t last = 0;
  for (size_t k = 0; k < sizeof store_parts / sizeof *store_parts; k++) {
    char part[4200];
    struct stat st;
    snprintf(part, sizeof part, "%s%s", path, store_parts[k]);
    if (stat(part, &st) == 0 && st.st_mtime > last)
      last = st.st_mtime;
  }
  return last;
}

static void remove_store(const char *path) {
  for (size_t k = 0; k < sizeof store_parts / sizeof *store_parts; k++) {
    char part[4200];
    snprintf(part, sizeof part, "%s%s", path, store_parts[k]);
    unlink(part);
  }
}

static void prune_evals(const char *dir) {
  struct dirent **names;
  int n = scandir(dir, &names, is_store_file, alphasort);
  if (n < 0)
    return;
  time_t now = time(NULL);
  for (int i = 0; i < n; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
    if (i < n - EVALS_KEPT && now - last_written(path) > EVAL_IDLE_S)
      remove_store(path);
    free(names[i]);
  }
  free(names);
}

static int cmd_eval(const cli *c, uv_loop_t *loop) {
  cli with_store = *c;
  char db[64];
  if (with_store.db == NULL) {
    const char *project = c->project ? c->project : getenv("SPOOL_PROJECT");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/.spool", project && *project ? project : ".");
    mkdir(dir, 0700);
    strncat(dir, "/evals", sizeof dir - strlen(dir) - 1);
    mkdir(dir, 0700);
    prune_evals(dir);
    time_t now = time(NULL);
    struct tm utc;
    gmtime_r(&now, &utc);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &utc);
    /* The store's path is the project's, relative. */
    snprintf(db, sizeof db, ".spool/evals/%s-%ld.db", stamp, (long)getpid());
    with_store.db = db;
    int code = run_library_script(&with_store, loop, "cli/eval.lua");
    if (code == EXIT_USAGE) { /* nothing ran: no store to keep */
      char path[4200];
      snprintf(path, sizeof path, "%s%s", dir, strrchr(db, '/'));
      remove_store(path);
    }
    return code;
  }
  return run_library_script(&with_store, loop, "cli/eval.lua");
}

static int cmd_token(const cli *c, uv_loop_t *loop) {
  return run_library_script(c, loop, "cli/token.lua");
}

static int cmd_mcp(const cli *c, uv_loop_t *loop) {
  return run_library_script(c, loop, "cli/mcp.lua");
}

static int cmd_replay(const cli *c, uv_loop_t *loop) {
  return run_library_script(c, loop, "cli/replay.lua");
}

static int cmd_lua(const cli *c, uv_loop_t *loop) {
  if (c->argc < 1)
    return usage_error("lua needs a script file%s", "");
  int code;
  spool_engine *e = open_engine(c, loop, &code);
  if (e == NULL)
    return code;
  if (spool_script_run(e, c->argv[0], c->argc - 1, c->argv + 1, &code) != 0) {
    say("error", "%s", spool_engine_errmsg(e));
    code = EXIT_FAILED;
  }
  close_engine(e);
  return code;
}

/* A thousand runs in flight need a thousand sockets, and then some. */
static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static int parse_cli(int argc, char **argv, cli *c) {
  memset(c, 0, sizeof *c);
  int i = 1;
  for (; i < argc && c->command == NULL; i++) {
    const char *a = argv[i];
    const char **slot = NULL;
    if (strcmp(a, "--project") == 0 || strcmp(a, "-C") == 0)
      slot = &c->project;
    else if (strcmp(a, "--model") == 0)
      slot = &c->model;
    else if (strcmp(a, "--base-url") == 0)
      slot = &c->base_url;
    else if (strcmp(a, "--mock") == 0)
      slot = &c->mock;
    else if (strcmp(a, "--log") == 0)
      slot = &c->log;
    else if (strcmp(a, "--log-format") == 0)
      slot = &c->log_format;
    else if (strcmp(a, "--db") == 0)
      slot = &c->db;
    if (slot) {
      if (i + 1 >= argc)
        return usage_error("%s needs a value", a);
      *slot = argv[++i];
    } else if (a[0] == '-' && strcmp(a, "-h") && strcmp(a, "--help") &&
               strcmp(a, "--version")) {
      return usage_error("unknown option '%s'", a);
    } else {
      c->command = a;
    }
  }
  c->argc = argc - i;
  c->argv = argv + i;
  return 0;
}

/* Prints what usage_text says of one command: its line (the command at
 * the left, or after a "|") and the lines under it, indented deeper.
 * 0 if the text has no such command. */
static int print_command_help(const char *command) {
  size_t n = strlen(command);
  int printed = 0, in_block = 0;
  for (const char *line = usage_text; *line;) {
    const char *end = strchr(line, '\n');
    size_t len = end ? (size_t)(end - line) : strlen(line);
    int top = len > 2 && line[0] == ' ' && line[1] == ' ' && line[2] != ' ';
    if (top) {
      const char *alt = NULL;
      for (const char *p = line; p + 3 + n <= line + len; p++)
        if (strncmp(p, "| ", 2) == 0 && strncmp(p + 2, command, n) == 0 &&
            (p[2 + n] == ' ' || p + 2 + n == line + len))
          alt = p;
      in_block = (strncmp(line + 2, command, n) == 0 &&
                  (line[2 + n] == ' ' || len == 2 + n)) ||
                 alt != NULL;
    } else if (len == 0 || line[0] != ' ') {
      in_block = 0;
    }
    if (in_block) {
      if (!printed)
        printf("usage: spool [global options] ...\n");
      printf("%.*s\n", (int)len, line);
      printed = 1;
    }
    line += len + (end ? 1 : 0);
  }
  return printed;
}

static int run_command(int argc, char **argv) {
  cli c;
  int code = parse_cli(argc, argv, &c);
  if (code != 0)
    return code;
  if (c.command == NULL || strcmp(c.command, "-h") == 0 ||
      strcmp(c.command, "--help") == 0 || strcmp(c.command, "help") == 0) {
    if (c.command)
      fputs(usage_text, stdout);
    else
      say("error", "%.*s", (int)strlen(usage_text) - 1, usage_text);
    return c.command ? EXIT_DONE : EXIT_USAGE;
  }
  if (strcmp(c.command, "--version") == 0 ||
      strcmp(c.command, "version") == 0) {
    print_version();
    print_library();
    return EXIT_DONE;
  }
  /* Every command answers --help (but test and lua, whose arguments are
   * busted's and the script's). */
  if (strcmp(c.command, "test") != 0 && strcmp(c.command, "lua") != 0)
    for (int i = 0; i < c.argc; i++)
      if (strcmp(c.argv[i], "--help") == 0 || strcmp(c.argv[i], "-h") == 0) {
        if (print_command_help(c.command))
          return EXIT_DONE;
        break;
      }
  int (*fn)(const cli *, uv_loop_t *) = NULL;
  if (strcmp(c.command, "run") == 0)
    fn = cmd_run;
  else if (strcmp(c.command, "prompt") == 0)
    fn = cmd_prompt;
  else if (strcmp(c.command, "mock-llm") == 0)
    fn = cmd_mock;
  else if (strcmp(c.command, "llm") == 0)
    fn = cmd_llm;
  else if (strcmp(c.command, "eval") == 0)
    fn = cmd_eval;
  else if (strcmp(c.command, "replay") == 0)
    fn = cmd_replay;
  else if (strcmp(c.command, "token") == 0)
    fn = cmd_token;
  else if (strcmp(c.command, "mcp") == 0)
    fn = cmd_mcp;
  else if (strcmp(c.command, "test") == 0)
    fn = cmd_test;
  else if (strcmp(c.command, "lua") == 0)
    fn = cmd_lua;
  else if (strcmp(c.command, "extract") == 0)
    fn = cmd_extract;
  else if (strcmp(c.command, "resume") == 0)
    fn = cmd_resume;
  else if (strcmp(c.command, "threads") == 0)
    fn = cmd_threads;
  else if (strcmp(c.command, "show") == 0 || strcmp(c.command, "export") == 0 ||
           strcmp(c.command, "cancel") == 0 || strcmp(c.command, "delete") == 0)
    fn = cmd_on_thread;
  else if (strcmp(c.command, "fork") == 0)
    fn = cmd_fork;
  else if (strcmp(c.command, "recover") == 0)
    fn = cmd_recover;
  else if (strcmp(c.command, "state") == 0)
    fn = cmd_state;
  else if (strcmp(c.command, "gc") == 0)
    fn = cmd_gc;
  else if (strcmp(c.command, "migrate") == 0)
    fn = cmd_migrate;
  else if (strcmp(c.command, "reload") == 0)
    fn = cmd_reload;
  else if (strcmp(c.command, "serve") == 0)
    fn = cmd_serve;
  else
    return usage_error("unknown command '%s'", c.command);
  raise_fd_limit();
  /* Writing to a closed pipe must fail the write, not kill the process. */
  signal(SIGPIPE, SIG_IGN);
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) {
    say("error", "cannot create an event loop");
    return EXIT_FAILED;
  }
  code = fn(&c, &loop);
  close_loop(&loop);
  return code;
}

int main(int argc, char **argv) {
  if (spool_engine_new(&voice) != 0)
    voice = NULL;
  /* The log's format first, so that even a mistake before it is told in
   * it (an invalid value is refused when an engine opens). */
  for (int i = 1; i + 1 < argc && voice; i++)
    if (strcmp(argv[i], "--log-format") == 0)
      spool_engine_set(voice, "log_format", argv[i + 1]);
  int code = run_command(argc, argv);
  spool_engine_free(voice);
  return code;
}
