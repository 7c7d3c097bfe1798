/*
 * responses_reply.c: a Responses API response read in one pass of the
 * JSON parser (see responses_reply.h), as chat_reply.c reads Chat
 * Completions: the sink follows where it is by the role of each open
 * container — the root, the output array, an item, its content parts,
 * usage — keeps only the values spool reads, and stops the parse (the
 * reader answers 1, "read it the general way") whenever the document
 * leaves the common shape.
 *
 * An item's and a part's members come in any order, so each is decided as
 * it closes: a part's text is kept with its item, whose type says at its
 * close whether the texts count (a message) or it is a call.
 */
#include "codec/responses_reply.h"

#include <stdlib.h>
#include <string.h>

#include "codec/json.h"

enum role {
  OTHER, /* not read: parsed and dropped */
  ROOT,
  OUTPUT,
  ITEM,
  PARTS,
  PART,
  USAGE,
  IN_DETAILS,
  OUT_DETAILS,
  INCOMPLETE,
  /* scalars */
  ID,
  STATUS,
  REASON,
  I_TYPE,
  I_NAME,
  I_CALL_ID,
  I_ID,
  I_ARGS,
  P_TYPE,
  P_TEXT,
  P_REFUSAL,
  COUNT0, /* + SPOOL__CHAT_* */
};

enum { OTHER_KIND, MESSAGE, FUNCTION_CALL, OUTPUT_TEXT, REFUSAL };

typedef struct level {
  unsigned char role, is_array;
  unsigned char next; /* the role of the value after the key just read */
  unsigned seen;      /* a bit for each key read: one given twice leaves */
} level;

/* The item being read, and its part. */
typedef struct item {
  int type;
  spool__chat_span name, call_id, id, args;
  int call_id_other, id_other; /* given, and not strings */
  int texts, refused;
} item;

typedef struct part {
  int type;
  spool__chat_span text, refusal;
  int refusal_other; /* a refusal that is not a string */
} part;

typedef struct reader {
  spool__chat_scalars scalars; /* first: the sink's scalars reach it */
  spool__responses_reply *r;
  level stack[SPOOL_JSON_MAX_DEPTH + 1];
  int depth;
  int output; /* the output array was read */
  int nomem;
  item it;
  part pt;
} reader;

#define LEAVE 1
#define BIT(role) (1u << (role))

static int member_role(int parent, const char *k, size_t n, unsigned *bit) {
#define IS(lit) (n == sizeof lit - 1 && memcmp(k, lit, n) == 0)
  int role = OTHER;
  switch (parent) {
  case ROOT:
    role = IS("id")                   ? ID
           : IS("status")             ? STATUS
           : IS("output")             ? OUTPUT
           : IS("usage")              ? USAGE
           : IS("incomplete_details") ? INCOMPLETE
                                      : OTHER;
    break;
  case ITEM:
    role = IS("type")        ? I_TYPE
           : IS("name")      ? I_NAME
           : IS("call_id")   ? I_CALL_ID
           : IS("id")        ? I_ID
           : IS("arguments") ? I_ARGS
           : IS("content")   ? PARTS
                             : OTHER;
    break;
  case PART:
    role = IS("type")      ? P_TYPE
           : IS("text")    ? P_TEXT
           : IS("refusal") ? P_REFUSAL
                           : OTHER;
    break;
  case USAGE:
    role = IS("input_tokens")            ? COUNT0 + SPOOL__CHAT_INPUT
           : IS("output_tokens")         ? COUNT0 + SPOOL__CHAT_OUTPUT
           : IS("total_tokens")          ? COUNT0 + SPOOL__CHAT_TOTAL
           : IS("input_tokens_details")  ? IN_DETAILS
           : IS("output_tokens_details") ? OUT_DETAILS
                                         : OTHER;
    break;
  case IN_DETAILS:
    role = IS("cached_tokens") ? COUNT0 + SPOOL__CHAT_CACHED : OTHER;
    break;
  case OUT_DETAILS:
    role = IS("reasoning_tokens") ? COUNT0 + SPOOL__CHAT_REASONING : OTHER;
    break;
  case INCOMPLETE:
    role = IS("reason") ? REASON : OTHER;
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
  return l->role == OUTPUT ? ITEM : l->role == PARTS ? PART : OTHER;
}

static int keep(reader *rd, spool__chat_span *span, const char *s, size_t n) {
  if (spool__chat_keep(&rd->r->text, span, s, n) != 0) {
    rd->nomem = 1;
    return 1;
  }
  return 0;
}

static int add(reader *rd, spool__buf *b, const spool__chat_span *s) {
  if (spool__buf_add(b, rd->r->text.data + s->at, s->len) != 0) {
    rd->nomem = 1;
    return 1;
  }
  return 0;
}

/* A scalar that is not a string, in role `role`; `count` is its value as
 * a whole number >= 0, if it is one (math.tointeger's rule). */
static int scalar(reader *rd, int role, int has_count, long long count) {
  spool__responses_reply *r = rd->r;
  switch (role) {
  case ROOT:
  case OUTPUT:
  case ID:
    return LEAVE;
  case I_CALL_ID:
    rd->it.call_id_other = 1;
    return 0;
  case I_ID:
    rd->it.id_other = 1;
    return 0;
  case P_REFUSAL:
    rd->pt.refusal_other = 1;
    return 0;
  default: /* a status, type, name, text or arguments not read as one */
    if (role >= COUNT0) {
      int c = role - COUNT0;
      r->has_count[c] = has_count && count >= 0;
      r->count[c] = count;
    }
    return 0;
  }
}

static int on_scalar(void *ud, int is_null, int whole, long long count) {
  (void)is_null;
  reader *rd = ud;
  return scalar(rd, value_role(rd), whole, count);
}

#define EQ(s, n, lit) (n == sizeof lit - 1 && memcmp(s, lit, n) == 0)

static int on_string(void *ud, const char *s, size_t n) {
  reader *rd = ud;
  spool__responses_reply *r = rd->r;
  item *it = &rd->it;
  part *pt = &rd->pt;
  int role = value_role(rd);
  switch (role) {
  case ID:
    return keep(rd, &r->id, s, n);
  case STATUS:
    return keep(rd, &r->status, s, n);
  case REASON:
    return keep(rd, &r->reason, s, n);
  case I_TYPE:
    it->type = EQ(s, n, "message")         ? MESSAGE
               : EQ(s, n, "function_call") ? FUNCTION_CALL
                                           : OTHER_KIND;
    return 0;
  case I_NAME:
    return keep(rd, &it->name, s, n);
  case I_CALL_ID:
    return keep(rd, &it->call_id, s, n);
  case I_ID:
    return keep(rd, &it->id, s, n);
  case I_ARGS:
    return keep(rd, &it->args, s, n);
  case P_TYPE:
    pt->type = EQ(s, n, "output_text") ? OUTPUT_TEXT
               : EQ(s, n, "refusal")   ? REFUSAL
                                       : OTHER_KIND;
    return 0;
  case P_TEXT:
    return keep(rd, &pt->text, s, n);
  case P_REFUSAL:
    return keep(rd, &pt->refusal, s, n);
  default:
    /* a count in a string converts in Lua by rules of its own */
    if (role >= COUNT0)
      return LEAVE;
    return scalar(rd, role, 0, 0);
  }
}

static int on_key(void *ud, const char *s, size_t n) {
  reader *rd = ud;
  level *l = &rd->stack[rd->depth];
  unsigned bit;
  l->next = (unsigned char)member_role(l->role, s, n, &bit);
  if (l->seen & bit)
    return LEAVE;
  l->seen |= bit;
  return 0;
}

static int open_container(reader *rd, int is_array) {
  int role = value_role(rd);
  switch (role) {
  case ROOT:
    if (is_array)
      return LEAVE;
    break;
  case OUTPUT:
    if (!is_array)
      return LEAVE;
    rd->output = 1;
    break;
  case ITEM:
  case PART:
  case USAGE:
  case IN_DETAILS:
  case OUT_DETAILS:
  case INCOMPLETE:
    if (is_array) {
      role = OTHER; /* (a table whose type is nil: skipped) */
    } else if (role == ITEM) {
      memset(&rd->it, 0, sizeof rd->it);
      spool__buf_clear(&rd->r->item);
    } else if (role == PART) {
      memset(&rd->pt, 0, sizeof rd->pt);
    }
    break;
  case PARTS:
    if (!is_array)
      role = OTHER; /* an object of parts has none */
    break;
  default: /* a scalar's place: an id, count, type, name, ... */
    if (role != OTHER && scalar(rd, role, 0, 0) != 0)
      return 1;
    role = OTHER;
  }
  level *l = &rd->stack[++rd->depth];
  l->role = (unsigned char)role;
  l->is_array = (unsigned char)is_array;
  l->next = OTHER;
  l->seen = 0;
  return 0;
}

static int on_begin_array(void *ud) {
  return open_container(ud, 1);
}

static int on_begin_object(void *ud) {
  return open_container(ud, 0);
}

/* A part, as it closes: its text (or refusal) is its item's. */
static int end_part(reader *rd) {
  item *it = &rd->it;
  part *pt = &rd->pt;
  if (pt->type == OUTPUT_TEXT && pt->text.set) {
    it->texts++;
    return add(rd, &rd->r->item, &pt->text);
  }
  if (pt->type == REFUSAL) {
    if (pt->refusal_other)
      return LEAVE; /* a text that is no string: the Lua reader's */
    it->refused = 1;
    if (pt->refusal.set) {
      it->texts++;
      return add(rd, &rd->r->item, &pt->refusal);
    }
  }
  return 0;
}

static int add_call(reader *rd) {
  spool__responses_reply *r = rd->r;
  item *it = &rd->it;
  if (!it->name.set || it->call_id_other || (!it->call_id.set && it->id_other))
    return LEAVE;
  int full = 0;
  spool__chat_call *c =
      spool__chat_add_call(&r->calls, &r->ncalls, &r->cap, &full);
  if (c == NULL) {
    if (full)
      return LEAVE; /* so many: the Lua reader's, in the Lua heap */
    rd->nomem = 1;
    return 1;
  }
  c->id = it->call_id.set ? it->call_id : it->id;
  c->name = it->name;
  c->arguments = it->args;
  return 0;
}

/* An item, as it closes: a message's texts are said, a call is made. */
static int end_item(reader *rd) {
  spool__responses_reply *r = rd->r;
  item *it = &rd->it;
  if (it->type == FUNCTION_CALL)
    return add_call(rd);
  if (it->type != MESSAGE)
    return 0;
  r->refused |= it->refused;
  if (it->texts == 0)
    return 0;
  r->has_text = 1;
  if (spool__buf_add(&r->said, r->item.data, r->item.len) != 0) {
    rd->nomem = 1;
    return 1;
  }
  return 0;
}

static int on_end(void *ud) {
  reader *rd = ud;
  level *l = &rd->stack[rd->depth--];
  if (l->role == PART)
    return end_part(rd);
  if (l->role == ITEM)
    return end_item(rd);
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

int spool__responses_reply_read(spool__responses_reply *r, const char *body,
                                size_t n, spool__buf *scratch) {
  spool__buf text = r->text, said = r->said, item_text = r->item;
  spool__chat_call *calls = r->calls;
  size_t cap = r->cap;
  memset(r, 0, sizeof *r);
  r->text = text;
  r->said = said;
  r->item = item_text;
  spool__buf_clear(&r->text);
  spool__buf_clear(&r->said);
  r->calls = calls;
  r->cap = cap;
  reader rd;
  rd.scalars.scalar = on_scalar;
  rd.r = r;
  rd.depth = 0;
  rd.output = rd.nomem = 0;
  spool__json_error err;
  int rc = spool__json_parse(body, n, &sink, &rd, scratch, &err);
  if (rd.nomem)
    return -1;
  /* Out of shape, not JSON, no output array, or a failed response (the
   * Lua reader says why). */
  if (rc != 0 || !rd.output)
    return 1;
  return r->status.set &&
                 EQ(r->text.data + r->status.at, r->status.len, "failed")
             ? 1
             : 0;
}

void spool__responses_reply_free(spool__responses_reply *r) {
  spool__buf_free(&r->text);
  spool__buf_free(&r->said);
  spool__buf_free(&r->item);
  free(r->calls);
  r->calls = NULL;
  r->ncalls = r->cap = 0;
}
