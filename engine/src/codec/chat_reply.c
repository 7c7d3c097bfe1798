/*
 * chat_reply.c: an OpenAI Chat Completions response, or one chunk of a
 * streamed one, read in one pass of the JSON parser (see chat_reply.h).
 * The sink follows where it is in the document by the role of each open
 * container — the root, choices, the first choice, its message (a
 * chunk's delta), a tool call — and keeps only the values spool reads;
 * everything else is parsed and dropped.
 *
 * Whenever the document leaves the common shape, the sink stops the parse
 * and the reader answers 1 ("read it the general way"): the rules for the
 * rare shapes then live in one place, the Lua reader.
 */
#include "codec/chat_reply.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "codec/json.h"

/* What a container, or a value about to be read, is to the reader. */
enum role {
  OTHER, /* not read: parsed and dropped */
  ROOT,
  CHOICES,
  CHOICE,
  MESSAGE,
  TOOL_CALLS,
  CALL,
  FUNCTION,
  USAGE,
  INPUT_DETAILS,
  OUTPUT_DETAILS,
  /* scalars */
  ID,
  FINISH,
  CONTENT,
  REFUSAL,
  CALL_ID,
  NAME,
  ARGUMENTS,
  INDEX,       /* a call delta's */
  LEAVES,      /* a chunk's "error", or its second choice: whatever it is */
  COUNT_INPUT, /* + SPOOL__CHAT_* */
};

/* An open container. `seen` has a bit for each key of it that is read: a
 * key given twice, whose last value wins, is the general reader's. */
typedef struct level {
  unsigned char role, is_array;
  unsigned char next; /* the role of the value after the key just read */
  unsigned seen;
  size_t index; /* arrays: elements so far */
} level;

typedef struct reader {
  spool__chat_scalars scalars; /* first: the sink's scalars reach it */
  spool__chat_reply *r;
  level stack[SPOOL_JSON_MAX_DEPTH + 1];
  int depth;
  int message; /* the first choice's message was an object */
  int chunk;   /* a streamed chunk (its choice has a delta) */
  int nomem;
} reader;

/* What a callback returns to stop the parse: the general reader takes
 * this document. */
#define LEAVE 1

/* A role's bit in `seen`: each role appears under one parent only. */
#define BIT(role) (1u << (role))

/* The role of a member of a container of role `parent`, by its key; and
 * the bit it has in `seen` (0: not read). */
static int member_role(const reader *rd, int parent, const char *k, size_t n,
                       unsigned *bit) {
#define IS(lit) (n == sizeof lit - 1 && memcmp(k, lit, n) == 0)
  int role = OTHER;
  switch (parent) {
  case ROOT:
    role = IS("id")                   ? ID
           : IS("choices")            ? CHOICES
           : IS("usage")              ? USAGE
           : rd->chunk && IS("error") ? LEAVES
                                      : OTHER;
    break;
  case CHOICE:
    role = IS("finish_reason")                         ? FINISH
           : (rd->chunk ? IS("delta") : IS("message")) ? MESSAGE
                                                       : OTHER;
    break;
  case MESSAGE:
    role = IS("content")      ? CONTENT
           : IS("refusal")    ? REFUSAL
           : IS("tool_calls") ? TOOL_CALLS
                              : OTHER;
    break;
  case CALL:
    role = IS("id")                   ? CALL_ID
           : IS("function")           ? FUNCTION
           : rd->chunk && IS("index") ? INDEX
                                      : OTHER;
    break;
  case FUNCTION:
    role = IS("name") ? NAME : IS("arguments") ? ARGUMENTS : OTHER;
    break;
  case USAGE:
    role = IS("prompt_tokens")               ? COUNT_INPUT + SPOOL__CHAT_INPUT
           : IS("completion_tokens")         ? COUNT_INPUT + SPOOL__CHAT_OUTPUT
           : IS("total_tokens")              ? COUNT_INPUT + SPOOL__CHAT_TOTAL
           : IS("prompt_tokens_details")     ? INPUT_DETAILS
           : IS("completion_tokens_details") ? OUTPUT_DETAILS
                                             : OTHER;
    break;
  case INPUT_DETAILS:
    role = IS("cached_tokens") ? COUNT_INPUT + SPOOL__CHAT_CACHED : OTHER;
    break;
  case OUTPUT_DETAILS:
    role = IS("reasoning_tokens") ? COUNT_INPUT + SPOOL__CHAT_REASONING : OTHER;
    break;
  }
#undef IS
  *bit = role == OTHER ? 0 : BIT(role);
  return role;
}

/* The role of the value about to be read. */
static int value_role(reader *rd) {
  if (rd->depth == 0)
    return ROOT;
  level *l = &rd->stack[rd->depth];
  if (!l->is_array)
    return l->next;
  size_t i = l->index++;
  if (l->role == CHOICES)
    return i == 0 ? CHOICE : rd->chunk ? LEAVES : OTHER;
  return l->role == TOOL_CALLS ? CALL : OTHER;
}

static spool__chat_call *current_call(reader *rd) {
  return &rd->r->calls[rd->r->ncalls - 1];
}

int spool__chat_keep(spool__buf *text, spool__chat_span *span, const char *s,
                     size_t n) {
  span->at = text->len;
  span->len = n;
  span->set = 1;
  return spool__buf_add(text, s, n) != 0 ? -1 : 0;
}

spool__chat_call *spool__chat_add_call(spool__chat_call **calls, size_t *ncalls,
                                       size_t *cap, int *full) {
  if (*ncalls == SPOOL__CHAT_MAX_CALLS) {
    *full = 1;
    return NULL;
  }
  if (*ncalls == *cap) {
    size_t more = *cap ? 2 * *cap : 4;
    spool__chat_call *grown = realloc(*calls, more * sizeof *grown);
    if (grown == NULL)
      return NULL;
    *calls = grown;
    *cap = more;
  }
  spool__chat_call *c = &(*calls)[(*ncalls)++];
  memset(c, 0, sizeof *c);
  return c;
}

int spool__chat_count(double v, long long *count) {
  int whole = v == floor(v) && v >= -0x1p63 && v < 0x1p63;
  *count = whole ? (long long)v : 0;
  return whole;
}

int spool__chat_on_null(void *ud) {
  return ((spool__chat_scalars *)ud)->scalar(ud, 1, 0, 0);
}

int spool__chat_on_boolean(void *ud, int v) {
  (void)v;
  return ((spool__chat_scalars *)ud)->scalar(ud, 0, 0, 0);
}

int spool__chat_on_integer(void *ud, long long v) {
  return ((spool__chat_scalars *)ud)->scalar(ud, 0, 1, v);
}

int spool__chat_on_number(void *ud, double v) {
  long long count;
  int whole = spool__chat_count(v, &count);
  return ((spool__chat_scalars *)ud)->scalar(ud, 0, whole, count);
}

int spool__chat_on_big_integer(void *ud, const char *digits, size_t n) {
  (void)digits;
  (void)n;
  return ((spool__chat_scalars *)ud)->scalar(ud, 0, 0, 0);
}

static int keep(reader *rd, spool__chat_span *span, const char *s, size_t n) {
  if (spool__chat_keep(&rd->r->text, span, s, n) != 0) {
    rd->nomem = 1;
    return 1;
  }
  return 0;
}

/* A scalar that is not a string, in role `role`. `count` is its value as
 * a whole number >= 0, if it is one (math.tointeger's rule). */
static int scalar(reader *rd, int role, int is_null, int has_count,
                  long long count) {
  spool__chat_reply *r = rd->r;
  switch (role) {
  case CHOICES:
  case MESSAGE:
  case FUNCTION:
  case NAME:
    /* In a chunk, as absent: the stream reader reads none but tables
     * (a delta's choices, its delta, a call's function) and strings. */
    return rd->chunk ? 0 : LEAVE;
  case ROOT:
  case CHOICE:
  case CALL:
  case LEAVES:
    return LEAVE;
  case INDEX:
    if (is_null)
      return 0; /* a new call, as without an index */
    if (!has_count || count < 0 || count > SPOOL__CHAT_MAX_CALLS)
      return LEAVE;
    current_call(rd)->has_index = 1;
    current_call(rd)->index = count;
    return 0;
  case ID:
    if (!is_null)
      return LEAVE;
    r->id_kind = SPOOL__CHAT_NULL;
    return 0;
  case FINISH:
    if (!is_null)
      return LEAVE;
    r->finish_kind = SPOOL__CHAT_NULL;
    return 0;
  case CALL_ID:
    current_call(rd)->id.set = 0;
    return 0;
  case ARGUMENTS:
    current_call(rd)->arguments.set = 0;
    return 0;
  case CONTENT:
    r->content.set = 0;
    return 0;
  case REFUSAL:
    r->refusal.set = 0;
    return 0;
  default:
    if (role >= COUNT_INPUT) {
      int c = role - COUNT_INPUT;
      r->has_count[c] = has_count && count >= 0;
      r->count[c] = count;
    }
    return 0;
  }
}

static int on_scalar(void *ud, int is_null, int whole, long long count) {
  reader *rd = ud;
  return scalar(rd, value_role(rd), is_null, whole, count);
}

static int on_string(void *ud, const char *s, size_t n) {
  reader *rd = ud;
  spool__chat_reply *r = rd->r;
  int role = value_role(rd);
  switch (role) {
  case ID:
    r->id_kind = SPOOL__CHAT_STRING;
    return keep(rd, &r->id, s, n);
  case FINISH:
    r->finish_kind = SPOOL__CHAT_STRING;
    return keep(rd, &r->finish, s, n);
  case CONTENT:
    return keep(rd, &r->content, s, n);
  case REFUSAL:
    return keep(rd, &r->refusal, s, n);
  case CALL_ID:
    return keep(rd, &current_call(rd)->id, s, n);
  case NAME:
    return keep(rd, &current_call(rd)->name, s, n);
  case ARGUMENTS:
    return keep(rd, &current_call(rd)->arguments, s, n);
  default:
    /* a count in a string converts in Lua by rules of its own */
    if (role >= COUNT_INPUT)
      return LEAVE;
    return scalar(rd, role, 0, 0, 0);
  }
}

static int on_key(void *ud, const char *s, size_t n) {
  reader *rd = ud;
  level *l = &rd->stack[rd->depth];
  unsigned bit;
  l->next = (unsigned char)member_role(rd, l->role, s, n, &bit);
  if (l->seen & bit)
    return LEAVE;
  l->seen |= bit;
  return 0;
}

static int open_container(reader *rd, int is_array) {
  int role = value_role(rd);
  switch (role) {
  case ROOT:
  case CHOICE:
  case MESSAGE:
  case CALL:
  case FUNCTION:
    if (is_array)
      return LEAVE;
    break;
  case CHOICES:
    if (!is_array)
      return LEAVE;
    break;
  case TOOL_CALLS:
    if (!is_array)
      role = OTHER; /* an object of calls holds none */
    break;
  case USAGE:
    rd->r->usage_seen = 1;
    if (is_array)
      role = OTHER;
    break;
  case INPUT_DETAILS:
  case OUTPUT_DETAILS:
    if (is_array)
      role = OTHER; /* no counts in it */
    break;
  case ARGUMENTS:
    if (rd->chunk) {
      role = OTHER; /* a chunk's reader reads only strings */
      break;
    }
    return LEAVE; /* an object of arguments is encoded again, in Lua */
  case ID:
  case FINISH:
  case NAME:
    return LEAVE;
  default: /* a count, content, a refusal or a call id that is no string */
    if (role != OTHER && scalar(rd, role, 0, 0, 0) != 0)
      return 1;
    role = OTHER;
  }
  if (role == MESSAGE)
    rd->message = 1;
  if (role == CALL) {
    spool__chat_reply *r = rd->r;
    int full = 0;
    if (spool__chat_add_call(&r->calls, &r->ncalls, &r->cap, &full) == NULL) {
      if (full)
        return LEAVE; /* so many: the Lua reader's, in the Lua heap */
      rd->nomem = 1;
      return 1;
    }
  }
  level *l = &rd->stack[++rd->depth];
  l->role = (unsigned char)role;
  l->is_array = (unsigned char)is_array;
  l->next = OTHER;
  l->seen = 0;
  l->index = 0;
  return 0;
}

static int on_begin_array(void *ud) {
  return open_container(ud, 1);
}

static int on_begin_object(void *ud) {
  return open_container(ud, 0);
}

/* A call needs its function, and the function its name (a choice
 * without a message is seen at the end: rd->message). */
static int on_end(void *ud) {
  reader *rd = ud;
  level *l = &rd->stack[rd->depth--];
  if (rd->chunk)
    return 0; /* a call's delta may carry only arguments */
  if (l->role == CALL && !(l->seen & BIT(FUNCTION)))
    return LEAVE;
  if (l->role == FUNCTION && !(l->seen & BIT(NAME)))
    return LEAVE;
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

static int read_document(spool__chat_reply *r, const char *body, size_t n,
                         spool__buf *scratch, int chunk) {
  spool__buf text = r->text;
  spool__chat_call *calls = r->calls;
  size_t cap = r->cap;
  memset(r, 0, sizeof *r);
  r->text = text;
  spool__buf_clear(&r->text);
  r->calls = calls;
  r->cap = cap;
  reader rd;
  rd.scalars.scalar = on_scalar;
  rd.r = r;
  rd.depth = 0;
  rd.message = rd.nomem = 0;
  rd.chunk = chunk;
  spool__json_error err;
  int rc = spool__json_parse(body, n, &sink, &rd, scratch, &err);
  if (rd.nomem)
    return -1;
  /* Out of shape, or not JSON, or (a whole reply) no choices[1].message:
   * the general reader says why. */
  return rc != 0 || !(rd.message || chunk) ? 1 : 0;
}

int spool__chat_reply_read(spool__chat_reply *r, const char *body, size_t n,
                           spool__buf *scratch) {
  return read_document(r, body, n, scratch, 0);
}

int spool__chat_chunk_read(spool__chat_reply *r, const char *data, size_t n,
                           spool__buf *scratch) {
  return read_document(r, data, n, scratch, 1);
}

void spool__chat_reply_free(spool__chat_reply *r) {
  spool__buf_free(&r->text);
  free(r->calls);
  r->calls = NULL;
  r->ncalls = r->cap = 0;
}
