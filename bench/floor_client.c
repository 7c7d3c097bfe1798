/*
 * floor_client.c: the floor for the agent benchmarks — the least a client
 * can do to drive the benchmark agent: the same HTTP requests as spool,
 * byte for byte (same body, same headers), with no agent logic. Each run
 * sends K + 1 chat requests in turn, each holding the conversation so far:
 * the tool call the mock made, copied from its reply, and the sum as the
 * tool's result. With --db, each step's reply is appended to SQLite (WAL,
 * full sync) in one transaction per step.
 *
 *   bench_floor_client --base URL --runs R --concurrency C --steps K
 *                      --warmup W --timeout-s S [--db FILE]
 *
 * prints one JSON line in the harness's format (CPU and wall over the
 * timed runs only). One thread: a curl multi handle and curl_multi_poll;
 * each run keeps its own connection cache, closed when it ends.
 */
#include <curl/curl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "base/buf.h"
#include "spool.h"

static const char head[] =
    "{\"messages\":[{\"content\":\"You are a calculator. Use the add "
    "tool.\",\"role\":\"system\"},{\"content\":\"Start at 0 and add 1, one "
    "tool call at a time.\",\"role\":\"user\"}";
static const char tail[] =
    "],\"model\":\"mock-1\",\"tools\":[{\"function\":{\"description\":\"Add "
    "two numbers.\",\"name\":\"add\",\"parameters\":{\"additionalProperties\":"
    "false,\"properties\":{\"a\":{\"type\":\"number\"},\"b\":{\"type\":"
    "\"number\"}},\"required\":[\"a\",\"b\"],\"type\":\"object\"}},\"type\":"
    "\"function\"}]}";

typedef struct run {
  CURL *easy;
  CURLSH *conns;    /* the run's own connection cache, as spool's runs keep */
  spool__buf turns; /* the assistant and tool messages so far */
  spool__buf body;  /* the request being sent */
  spool__buf reply;
  int step;
  int done, ok;
} run;

static struct {
  const char *base, *db;
  int runs, concurrency, steps, warmup, timeout_s;
} opt = {.concurrency = 1, .timeout_s = 60};

static CURLM *multi;
static struct curl_slist *headers;
static char url[1024];
static sqlite3 *db;
static sqlite3_stmt *insert;
static int bad_answers, failed;

/* Copies the JSON string value of `key` (still escaped) from s. */
static int string_field(const char *s, const char *key, spool__buf *out) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":\"", key);
  const char *p = strstr(s, pat);
  if (p == NULL)
    return -1;
  p += strlen(pat);
  const char *e = p;
  while (*e && *e != '"')
    e += (*e == '\\' && e[1]) ? 2 : 1;
  spool__buf_add(out, p, (size_t)(e - p));
  return 0;
}

static void send_step(run *r) {
  r->body.len = 0;
  spool__buf_add(&r->body, head, sizeof head - 1);
  spool__buf_add(&r->body, r->turns.data ? r->turns.data : "", r->turns.len);
  spool__buf_add(&r->body, tail, sizeof tail - 1);
  r->reply.len = 0;
  curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE, (long)r->body.len);
  curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body.data);
  curl_multi_add_handle(multi, r->easy);
}

static size_t on_body(char *d, size_t size, size_t n, void *ud) {
  spool__buf_add(ud, d, size * n);
  return size * n;
}

static void store_step(run *r) {
  if (!insert)
    return;
  sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
  sqlite3_bind_int(insert, 1, r->step);
  sqlite3_bind_text(insert, 2, r->reply.data, (int)r->reply.len, SQLITE_STATIC);
  sqlite3_step(insert);
  sqlite3_reset(insert);
  sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
}

/* A reply came: the next step of the run, or its end. */
static void advance(run *r, long status) {
  store_step(r);
  if (status != 200 || r->reply.data == NULL) {
    failed++;
    r->done = 1;
    return;
  }
  if (r->step == opt.steps) {
    char want[64];
    snprintf(want, sizeof want, "\"The answer is %d.\"", opt.steps);
    if (strstr(r->reply.data, want) == NULL)
      bad_answers++;
    r->done = 1;
    return;
  }
  spool__buf args = {0}, id = {0};
  const char *call = strstr(r->reply.data, "\"id\":\"call_");
  if (string_field(r->reply.data, "arguments", &args) != 0 || call == NULL) {
    failed++;
    r->done = 1;
    spool__buf_free(&args);
    return;
  }
  call += strlen("\"id\":\"");
  spool__buf_add(&id, call, strcspn(call, "\""));
  int a = 0, b = 0;
  sscanf(args.data, "{\\\"a\\\":%d,\\\"b\\\":%d}", &a, &b);
  char result[32];
  snprintf(result, sizeof result, "%d", a + b);
  spool__buf_adds(&r->turns,
                  ",{\"content\":null,\"role\":\"assistant\",\"tool_calls\":"
                  "[{\"function\":{\"arguments\":\"");
  spool__buf_add(&r->turns, args.data, args.len);
  spool__buf_adds(&r->turns, "\",\"name\":\"add\"},\"id\":\"");
  spool__buf_add(&r->turns, id.data, id.len);
  spool__buf_adds(&r->turns, "\",\"type\":\"function\"}]},{\"content\":\"");
  spool__buf_adds(&r->turns, result);
  spool__buf_adds(&r->turns, "\",\"role\":\"tool\",\"tool_call_id\":\"");
  spool__buf_add(&r->turns, id.data, id.len);
  spool__buf_adds(&r->turns, "\"}");
  spool__buf_free(&args);
  spool__buf_free(&id);
  r->step++;
  send_step(r);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void start_run(run *r) {
  memset(r, 0, sizeof *r);
  r->easy = curl_easy_init();
  /* A shared pool would be scanned whole for each request (libcurl 7.88),
   * which at 10,000 runs costs more than the request. */
  r->conns = curl_share_init();
  curl_share_setopt(r->conns, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
  curl_easy_setopt(r->easy, CURLOPT_SHARE, r->conns);
  curl_easy_setopt(r->easy, CURLOPT_URL, url);
  curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(r->easy, CURLOPT_USERAGENT, "spool/" SPOOL_VERSION);
  curl_easy_setopt(r->easy, CURLOPT_ACCEPT_ENCODING, "");
  curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, &r->reply);
  curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
  curl_easy_setopt(r->easy, CURLOPT_TIMEOUT, (long)opt.timeout_s);
  send_step(r);
}

/* Closes the run's connection as soon as it ends, as spool does. */
static void end_curl(run *r) {
  if (r->easy == NULL)
    return;
  curl_easy_cleanup(r->easy);
  curl_share_cleanup(r->conns);
  r->easy = NULL;
}

static void free_run(run *r) {
  end_curl(r);
  spool__buf_free(&r->turns);
  spool__buf_free(&r->body);
  spool__buf_free(&r->reply);
}

/* Runs n runs, c at a time; returns how many did not finish in time. */
static int batch(int n, int c, double deadline) {
  run *runs = calloc((size_t)n, sizeof *runs);
  int started = 0, finished = 0, in_flight = 0;
  while (finished < n && now_s() < deadline) {
    while (started < n && in_flight < c) {
      start_run(&runs[started++]);
      in_flight++;
    }
    int still, progressed = 0;
    curl_multi_perform(multi, &still);
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(multi, &left)) != NULL) {
      progressed = 1;
      if (m->msg != CURLMSG_DONE)
        continue;
      run *r;
      long status = 0;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
      curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
      curl_multi_remove_handle(multi, m->easy_handle);
      if (m->data.result != CURLE_OK)
        status = 0;
      advance(r, status);
      if (r->done) {
        end_curl(r);
        finished++;
        in_flight--;
      }
    }
    /* A finished transfer may have freed a slot or queued a next step:
     * start those before waiting. */
    if (!progressed && finished < n)
      curl_multi_poll(multi, NULL, 0, 100, NULL);
  }
  for (int i = 0; i < started; i++) {
    if (runs[i].easy)
      curl_multi_remove_handle(multi, runs[i].easy);
    free_run(&runs[i]);
  }
  free(runs);
  return n - finished;
}

static long rss_kb(void) {
  long pages = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f && fscanf(f, "%ld %ld", &pages, &resident) != 2)
    resident = 0;
  if (f)
    fclose(f);
  return resident * 4;
}

int main(int argc, char **argv) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (strcmp(k, "--base") == 0)
      opt.base = v;
    else if (strcmp(k, "--runs") == 0)
      opt.runs = atoi(v);
    else if (strcmp(k, "--concurrency") == 0)
      opt.concurrency = atoi(v);
    else if (strcmp(k, "--steps") == 0)
      opt.steps = atoi(v);
    else if (strcmp(k, "--warmup") == 0)
      opt.warmup = atoi(v);
    else if (strcmp(k, "--timeout-s") == 0)
      opt.timeout_s = atoi(v);
    else if (strcmp(k, "--db") == 0)
      opt.db = v;
    else {
      fprintf(stderr, "bench_floor_client: unknown option %s\n", k);
      return 2;
    }
  }
  if (opt.base == NULL || opt.runs < 1) {
    fprintf(stderr, "usage: bench_floor_client --base URL --runs R "
                    "[--concurrency C] [--steps K] [--warmup W] "
                    "[--timeout-s S] [--db FILE]\n");
    return 2;
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  snprintf(url, sizeof url, "%s/chat/completions", opt.base);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  multi = curl_multi_init();
  headers = curl_slist_append(NULL, "content-type: application/json");
  headers = curl_slist_append(headers, "Expect:");
  if (opt.db) {
    sqlite3_open(opt.db, &db);
    sqlite3_exec(db,
                 "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE "
                 "TABLE IF NOT EXISTS steps(id INTEGER PRIMARY KEY, step "
                 "INTEGER, reply TEXT)",
                 NULL, NULL, NULL);
    sqlite3_prepare_v2(db, "INSERT INTO steps(step, reply) VALUES (?, ?)", -1,
                       &insert, NULL);
  }
  double deadline = now_s() + opt.timeout_s;
  if (opt.warmup > 0)
    batch(opt.warmup, opt.concurrency, deadline);
  failed = bad_answers = 0;
  long before_kb = rss_kb();
  struct rusage r0, r1;
  getrusage(RUSAGE_SELF, &r0);
  double t0 = now_s();
  int timed_out = batch(opt.runs, opt.concurrency, deadline);
  double wall = now_s() - t0;
  getrusage(RUSAGE_SELF, &r1);
#define SECS(tv) ((double)(tv).tv_sec + (double)(tv).tv_usec / 1e6)
  printf("{\"bad_answers\":%d,\"contender\":\"floor\",\"cpu_sys_s\":%.6f,"
         "\"cpu_user_s\":%.6f,\"failed\":%d,\"max_rss_kb\":%ld,"
         "\"rss_before_kb\":%ld,\"runs\":%d,\"steps\":%d,\"timed_out\":%d,"
         "\"wall_s\":%.6f,\"warmup\":%d}\n",
         bad_answers, SECS(r1.ru_stime) - SECS(r0.ru_stime),
         SECS(r1.ru_utime) - SECS(r0.ru_utime), failed, r1.ru_maxrss, before_kb,
         opt.runs, opt.steps, timed_out, wall, opt.warmup);
  if (insert)
    sqlite3_finalize(insert);
  if (db)
    sqlite3_close(db);
  curl_slist_free_all(headers);
  curl_multi_cleanup(multi);
  curl_global_cleanup();
  return 0;
}
