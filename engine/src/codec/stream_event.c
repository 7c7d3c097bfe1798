/*
 * stream_event.c: a streamed event's type, index and delta, read in one
 * pass of the JSON parser (see stream_event.h). Only the root object and
 * its delta object are read; every other value is parsed and dropped.
 */
#include "codec/stream_event.h"

#include <string.h>

#include "codec/json.h"

/* What a container, or a value about to be read, is to the reader. */
enum role {
  OTHER, /* not read */
  ROOT,
  DELTA, /* the root's "delta": a string or an object */
  TYPE,
  INDEX,
  DELTA_TYPE,
  DELTA_TEXT,
  DELTA_JSON,
};

/* Stops the parse: the Lua reader decodes this event. */
#define LEAVE 1

typedef struct reader {
  spool__chat_scalars scalars; /* first: the sink's scalars reach it */
  spool__stream_event *e;
  int depth;        /* containers open */
  int role[3];      /* of the root (1) and of a container in it (2) */
  unsigned seen[3]; /* a bit for each key read there: twice is Lua's */
  int next;         /* the role of the value after the last key read */
  int nomem;
} reader;

static int member_role(int parent, const char *k, size_t n) {
#define IS(lit) (n == sizeof lit - 1 && memcmp(k, lit, n) == 0)
  if (parent == ROOT)
    return IS("type")    ? TYPE
           : IS("index") ? INDEX
           : IS("delta") ? DELTA
                         : OTHER;
  if (parent == DELTA)
    return IS("type")           ? DELTA_TYPE
           : IS("text")         ? DELTA_TEXT
           : IS("partial_json") ? DELTA_JSON
                                : OTHER;
  return OTHER;
#undef IS
}

/* The role of the value about to be read (and the key's is spent). */
static int value_role(reader *rd) {
  if (rd->depth == 0)
    return ROOT;
  int role = rd->depth <= 2 ? rd->next : OTHER;
  rd->next = OTHER;
  return role;
}

static int keep(reader *rd, spool__chat_span *span, const char *s, size_t n) {
  if (spool__chat_keep(&rd->e->text, span, s, n) != 0) {
    rd->nomem = 1;
    return 1;
  }
  return 0;
}

/* A value that is not a string, nor a container: `whole` says whether it
 * is a whole number (math.tointeger's rule), and which. */
static int scalar(reader *rd, int role, int is_null, int whole,
                  long long count) {
  spool__stream_event *e = rd->e;
  switch (role) {
  case ROOT:
  case TYPE: /* the reader then goes by the event's name */
    return LEAVE;
  case INDEX: /* as none, when no whole number: Lua's index is 0 then */
    e->has_index = whole;
    e->index = count;
    return 0;
  case DELTA:
    return is_null ? 0 : LEAVE;
  default: /* the delta's members are read only as strings */
    return 0;
  }
}

static int on_scalar(void *ud, int is_null, int whole, long long count) {
  reader *rd = ud;
  return scalar(rd, value_role(rd), is_null, whole, count);
}

static int on_string(void *ud, const char *s, size_t n) {
  reader *rd = ud;
  spool__stream_event *e = rd->e;
  switch (value_role(rd)) {
  case ROOT:
  case INDEX: /* a string converts to a number in Lua, by rules of its own */
    return LEAVE;
  case TYPE:
    return keep(rd, &e->type, s, n);
  case DELTA:
    e->delta_kind = SPOOL__DELTA_STRING;
    return keep(rd, &e->delta, s, n);
  case DELTA_TYPE:
    return keep(rd, &e->delta_type, s, n);
  case DELTA_TEXT:
    return keep(rd, &e->delta_text, s, n);
  case DELTA_JSON:
    return keep(rd, &e->delta_json, s, n);
  default:
    return 0;
  }
}

static int on_key(void *ud, const char *s, size_t n) {
  reader *rd = ud;
  int d = rd->depth;
  if (d > 2)
    return 0;
  rd->next = member_role(rd->role[d], s, n);
  unsigned bit = rd->next == OTHER ? 0 : 1u << rd->next;
  if (rd->seen[d] & bit)
    return LEAVE;
  rd->seen[d] |= bit;
  return 0;
}

static int open_container(reader *rd, int is_array) {
  int role = value_role(rd);
  switch (role) {
  case ROOT:
    if (is_array)
      return LEAVE;
    break;
  case DELTA:
    if (is_array)
      return LEAVE;
    rd->e->delta_kind = SPOOL__DELTA_OBJECT;
    break;
  case TYPE:
    return LEAVE;
  case INDEX:
    rd->e->has_index = 0; /* no number: as none */
    role = OTHER;
    break;
  default:
    role = OTHER;
  }
  int d = ++rd->depth;
  if (d <= 2) {
    rd->role[d] = role;
    rd->seen[d] = 0;
  }
  return 0;
}

static int on_begin_array(void *ud) {
  return open_container(ud, 1);
}

static int on_begin_object(void *ud) {
  return open_container(ud, 0);
}

static int on_end(void *ud) {
  reader *rd = ud;
  rd->depth--;
  return 0;
}

static const spool__json_sink sink = {
    spool__chat_on_null,
    spool__chat_on_boolean,
    spool__chat_on_integer,
    spool__chat_on_number,
    spool__chat_on_big_integer,
    on_string,
    on_key,
    on_begin_array,
    on_end,
    on_begin_object,
    on_end,
};

int spool__stream_event_read(spool__stream_event *e, const char *data, size_t n,
                             spool__buf *scratch) {
  spool__buf text = e->text;
  memset(e, 0, sizeof *e);
  e->text = text;
  spool__buf_clear(&e->text);
  reader rd;
  memset(&rd, 0, sizeof rd);
  rd.scalars.scalar = on_scalar;
  rd.e = e;
  spool__json_error err;
  int rc = spool__json_parse(data, n, &sink, &rd, scratch, &err);
  if (rd.nomem)
    return -1;
  return rc != 0 ? 1 : 0;
}

void spool__stream_event_free(spool__stream_event *e) {
  spool__buf_free(&e->text);
}
