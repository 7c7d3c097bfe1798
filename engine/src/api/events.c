/*
 * events.c: the events a host follows (spool_engine_on_event). Each is
 * copied into a queue as it is recorded, and delivered when the tick's
 * tasks have run (spool__engine_tick_end): outside any Lua code, so the
 * host's callback may call back into the engine.
 */
#include <stdlib.h>
#include <string.h>

#include "io/store.h"
#include "spool_int.h"

struct spool_event {
  const char *thread, *agent, *type, *json, *text;
  long long seq;
  int depth;
};

typedef struct spool__queued_event {
  struct spool__queued_event *next;
  struct spool_event ev; /* a span's: its type is NULL, its json the span */
  size_t span_len;
  char strings[]; /* thread, agent, type, json, text, each NUL-terminated */
} queued_event;

/* ---- events ---- */

void spool_engine_on_event(spool_engine *e, spool_event_cb cb, void *ud) {
  if (e == NULL)
    return;
  e->on_event = cb;
  e->on_event_ud = ud;
}

void spool_engine_on_span(spool_engine *e, spool_span_cb cb, void *ud) {
  if (e == NULL)
    return;
  e->on_span = cb;
  e->on_span_ud = ud;
}

static void enqueue(spool_engine *e, queued_event *q) {
  q->next = NULL;
  if (e->events_tail)
    e->events_tail->next = q;
  else
    e->events_head = q;
  e->events_tail = q;
}

int spool__events_queue_span(spool_engine *e, const char *json, size_t len) {
  queued_event *q = malloc(sizeof *q + len + 1);
  if (q == NULL)
    return -1;
  memset(&q->ev, 0, sizeof q->ev);
  q->ev.json = memcpy(q->strings, json, len);
  q->strings[len] = '\0';
  q->span_len = len;
  enqueue(e, q);
  return 0;
}

int spool__events_queue(spool_engine *e, const spool__event_fields *f) {
  if (e->on_event == NULL)
    return 0;
  size_t lt = strlen(f->thread) + 1, la = strlen(f->agent) + 1,
         ly = strlen(f->type) + 1;
  queued_event *q =
      malloc(sizeof *q + lt + la + ly + f->json_len + 1 + f->text_len + 1);
  if (q == NULL)
    return -1;
  char *p = q->strings;
  q->ev.thread = memcpy(p, f->thread, lt);
  q->ev.agent = memcpy(p += lt, f->agent, la);
  q->ev.type = memcpy(p += la, f->type, ly);
  q->ev.json = memcpy(p += ly, f->json, f->json_len);
  p[f->json_len] = '\0';
  q->ev.text = memcpy(p += f->json_len + 1, f->text, f->text_len);
  p[f->text_len] = '\0';
  q->ev.seq = f->seq;
  q->ev.depth = f->depth;
  q->span_len = 0;
  enqueue(e, q);
  return 0;
}

void spool__events_flush(spool_engine *e) {
  if (e->delivering)
    return;
  e->delivering = 1;
  while (e->events_head) {
    queued_event *q = e->events_head;
    e->events_head = q->next;
    if (e->events_head == NULL)
      e->events_tail = NULL;
    if (q->ev.type == NULL) {
      if (e->on_span)
        e->on_span(q->ev.json, q->span_len, e->on_span_ud);
    } else if (e->on_event) {
      e->on_event(&q->ev, e->on_event_ud);
    }
    free(q);
  }
  e->delivering = 0;
}

void spool__engine_tick_end(spool_engine *e) {
  spool__store_flush(e->store);
  if (e->turning == 0)
    spool__events_flush(e); /* the host turns its loop: now or never */
}

const char *spool_event_thread(const spool_event *ev) {
  return ev->thread;
}
const char *spool_event_agent(const spool_event *ev) {
  return ev->agent;
}
const char *spool_event_type(const spool_event *ev) {
  return ev->type;
}
long long spool_event_seq(const spool_event *ev) {
  return ev->seq;
}
int spool_event_depth(const spool_event *ev) {
  return ev->depth;
}
const char *spool_event_json(const spool_event *ev) {
  return ev->json;
}
const char *spool_event_text(const spool_event *ev) {
  return ev->text;
}

void spool__events_free(spool_engine *e) {
  while (e->events_head) {
    queued_event *q = e->events_head;
    e->events_head = q->next;
    free(q);
  }
  e->events_tail = NULL;
}
