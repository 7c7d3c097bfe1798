/*
 * anthropic_reply.c: an Anthropic Messages response read in one pass of
 * the JSON parser (see anthropic_reply.h). As in chat_reply.c, the sink
 * follows where it is by the role of each open container — the root, the
 * content array, a block, a tool's input, usage — keeps only the values
 * spool reads, and stops the parse (the reader answers 1, "read it the
 * general way") whenever the document leaves the common shape.
 *
 * A block's members come in any order, so a block is decided as it
 * closes: a text block adds its text, a tool_use block its call. A tool's
 * input is written back as JSON text as it is read (the Lua side encodes
 * it again, keys sorted, as json.encode does any input).
 */
#include "codec/anthropic_reply.h"

#include <stdlib.h>
#include <string.h>

#include "codec/json.h"

enum role {
  OTHER, /* not read: parsed and dropped */
  ROOT,
  CONTENT,
  BLOCK,
  USAGE,
  DETAILS,
  INPUT, /* inside a tool's input: written back */
  /* scalars */
  ID,
  STOP,
  B_TYPE,
  B_TEXT,
  B_ID,
  B_NAME,
  B_INPUT,
  B_ARGUMENTS,
  COUNT0, /* + SPOOL__ANTHROPIC_* */
};

enum { OTHER_BLOCK, TEXT_BLOCK, TOOL_USE_BLOCK };

typedef struct level {
  unsigned char role, is_array;
  unsigned char next; /* the role of the value after the key just read */
  unsigned seen;      /* a bit for each key read: one given twice leaves */
  size_t index;       /* elements (or, in an input, members) so far */
} level;

/* The block being read. */
typedef struct block {
  int type;
  spool__chat_span text, id, name, input;
  int id_other;    /* an id that is not a string */
  int input_array; /* an input that is an array */
  int arguments;   /* an `arguments` member (the Lua reader takes it) */
} block;

typedef struct reader {
  spool__anthropic_reply *r;
  level stack[SPOOL_JSON_MAX_DEPTH + 1];
  int depth;
  int content; /* the content array was read */
  int nomem;
  block b;
} reader;

#define LEAVE 1
#define BIT(role) (1u << (role))

static int member_role(int parent, const char *k, size_t n, unsigned *bit) {
#define IS(lit) (n == sizeof lit - 1 && memcmp(k, lit, n) == 0)
  int role = OTHER;
  switch (parent) {
  case ROOT:
    role = IS("id")            ? ID
           : IS("content")     ? CONTENT
           : IS("stop_reason") ? STOP
           : IS("usage")       ? USAGE
                               : OTHER;
    break;
  case BLOCK:
    role = IS("type")        ? B_TYPE
           : IS("text")      ? B_TEXT
           : IS("id")        ? B_ID
           : IS("name")      ? B_NAME
           : IS("input")     ? B_INPUT
           : IS("arguments") ? B_ARGUMENTS
                             : OTHER;
    break;
  case USAGE:
    role = IS("input_tokens")    ? COUNT0 + SPOOL__ANTHROPIC_INPUT
           : IS("output_tokens") ? COUNT0 + SPOOL__ANTHROPIC_OUTPUT
           : IS("cache_creation_input_tokens")
               ? COUNT0 + SPOOL__ANTHROPIC_CACHE_CREATION
           : IS("cache_read_input_tokens")
               ? COUNT0 + SPOOL__ANTHROPIC_CACHE_READ
           : IS("output_tokens_details") ? DETAILS
                                         : OTHER;
    break;
  case DETAILS:
    role = IS("thinking_tokens") ? COUNT0 + SPOOL__ANTHROPIC_THINKING : OTHER;
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
  l->index++;
  return l->role == CONTENT ? BLOCK : l->role == INPUT ? INPUT : OTHER;
}

static int put(reader *rd, const char *s, size_t n) {
  if (spool__buf_add(&rd->r->text, s, n) != 0) {
    rd->nomem = 1;
    return 1;
  }
  return 0;
}

static int keep(reader *rd, spool__chat_span *span, const char *s, size_t n) {
  if (spool__chat_keep(&rd->r->text, span, s, n) != 0) {
    rd->nomem = 1;
    return 1;
  }
  return 0;
}

/* Before a value inside an input: the comma after the element before. */
static int input_comma(reader *rd) {
  level *l = &rd->stack[rd->depth];
  return l->is_array && l->index > 1 ? put(rd, ",", 1) : 0;
}

/* A value inside an input, written as JSON text (rc: the writer's). */
static int input_wrote(reader *rd, int rc) {
  if (rc == -1)
    rd->nomem = 1;
  return rc != 0;
}

/* A scalar that is not a string, in role `role`; `count` is its value as
 * a whole number >= 0, if it is one (math.tointeger's rule). */
static int scalar(reader *rd, int role, int has_count, long long count) {
  spool__anthropic_reply *r = rd->r;
  switch (role) {
  case ROOT:
  case CONTENT:
  case BLOCK:
  case ID:
  case STOP:
    return LEAVE;
  case B_ID:
    rd->b.id_other = 1;
    return 0;
  case B_ARGUMENTS:
    rd->b.arguments = 1;
    return 0;
  default: /* a type, text, name or input that is not read as one */
    if (role >= COUNT0) {
      int c = role - COUNT0;
      r->has_count[c] = has_count && count >= 0;
      r->count[c] = count;
    }
    return 0;
  }
}

static int on_null(void *ud) {
  reader *rd = ud;
  int role = value_role(rd);
  if (role == INPUT)
    return input_comma(rd) || put(rd, "null", 4);
  return scalar(rd, role, 0, 0);
}

static int on_boolean(void *ud, int v) {
  reader *rd = ud;
  int role = value_role(rd);
  if (role == INPUT)
    return input_comma(rd) || (v ? put(rd, "true", 4) : put(rd, "false", 5));
  return scalar(rd, role, 0, 0);
}

static int on_integer(void *ud, long long v) {
  reader *rd = ud;
  int role = value_role(rd);
  if (role == INPUT)
    return input_comma(rd) ||
           input_wrote(rd, spool__json_write_integer(&rd->r->text, v));
  return scalar(rd, role, 1, v);
}

static int on_number(void *ud, double v) {
  reader *rd = ud;
  int role = value_role(rd);
  if (role == INPUT)
    return input_comma(rd) ||
           input_wrote(rd, spool__json_write_double(&rd->r->text, v));
  long long count;
  int whole = spool__chat_count(v, &count);
  return scalar(rd, role, whole, count);
}

static int on_big_integer(void *ud, const char *s, size_t n) {
  reader *rd = ud;
  int role = value_role(rd);
  if (role == INPUT)
    return input_comma(rd) || put(rd, s, n);
  return scalar(rd, role, 0, 0);
}

static int on_string(void *ud, const char *s, size_t n) {
  reader *rd = ud;
  spool__anthropic_reply *r = rd->r;
  block *b = &rd->b;
  int role = value_role(rd);
  switch (role) {
  case INPUT:
    return input_comma(rd) ||
           input_wrote(rd, spool__json_write_string(&r->text, s, n));
  case ID:
    return keep(rd, &r->id, s, n);
  case STOP:
    return keep(rd, &r->stop, s, n);
  case B_TYPE:
    b->type = n == 4 && memcmp(s, "text", 4) == 0       ? TEXT_BLOCK
              : n == 8 && memcmp(s, "tool_use", 8) == 0 ? TOOL_USE_BLOCK
                                                        : OTHER_BLOCK;
    return 0;
  case B_TEXT:
    return keep(rd, &b->text, s, n);
  case B_ID:
    return keep(rd, &b->id, s, n);
  case B_NAME:
    return keep(rd, &b->name, s, n);
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
  if (l->role == INPUT) {
    l->next = INPUT;
    return (l->index++ > 0 && put(rd, ",", 1)) ||
           input_wrote(rd, spool__json_write_string(&rd->r->text, s, n)) ||
           put(rd, ":", 1);
  }
  unsigned bit;
  l->next = (unsigned char)member_role(l->role, s, n, &bit);
  if (l->seen & bit)
    return LEAVE;
  l->seen |= bit;
  return 0;
}

static int open_container(reader *rd, int is_array) {
  int role = value_role(rd);
  block *b = &rd->b;
  switch (role) {
  case ROOT:
  case BLOCK:
    if (is_array)
      return LEAVE;
    if (role == BLOCK)
      memset(b, 0, sizeof *b);
    break;
  case CONTENT:
    if (!is_array)
      return LEAVE;
    rd->content = 1;
    break;
  case USAGE:
  case DETAILS:
    if (is_array)
      role = OTHER; /* no counts in it */
    break;
  case INPUT:
    if (input_comma(rd) || put(rd, is_array ? "[" : "{", 1))
      return 1;
    break;
  case B_INPUT:
    if (is_array) {
      b->input_array = 1;
      role = OTHER;
      break;
    }
    b->input.at = rd->r->text.len;
    if (put(rd, "{", 1))
      return 1;
    role = INPUT;
    break;
  default: /* a scalar's place: an id, stop reason, count, or a block's */
    if (role != OTHER && scalar(rd, role, 0, 0) != 0)
      return 1;
    role = OTHER;
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

/* A block, as it closes: a text block's text is said, a tool_use block
 * is a call (if the Lua reader would make the same one). */
static int end_block(reader *rd) {
  spool__anthropic_reply *r = rd->r;
  block *b = &rd->b;
  if (b->type == TEXT_BLOCK && b->text.set) {
    r->has_text = 1;
    if (spool__buf_add(&r->said, r->text.data + b->text.at, b->text.len)) {
      rd->nomem = 1;
      return 1;
    }
  } else if (b->type == TOOL_USE_BLOCK) {
    if (!b->name.set || b->id_other || b->input_array || b->arguments)
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
    c->id = b->id;
    c->name = b->name;
    c->arguments = b->input;
  }
  return 0;
}

static int on_end(void *ud) {
  reader *rd = ud;
  level *l = &rd->stack[rd->depth--];
  if (l->role == BLOCK)
    return end_block(rd);
  if (l->role != INPUT)
    return 0;
  if (put(rd, l->is_array ? "]" : "}", 1))
    return 1;
  if (rd->stack[rd->depth].role == BLOCK) { /* the input itself */
    spool__chat_span *input = &rd->b.input;
    input->len = rd->r->text.len - input->at;
    input->set = 1;
  }
  return 0;
}

static const spool__json_sink sink = {
    on_null,        on_boolean,      on_integer, on_number,
    on_big_integer, on_string,       on_key,     on_begin_array,
    on_end,         on_begin_object, on_end,
};

int spool__anthropic_reply_read(spool__anthropic_reply *r, const char *body,
                                size_t n, spool__buf *scratch) {
  spool__buf text = r->text, said = r->said;
  spool__chat_call *calls = r->calls;
  size_t cap = r->cap;
  memset(r, 0, sizeof *r);
  r->text = text;
  r->said = said;
  spool__buf_clear(&r->text);
  spool__buf_clear(&r->said);
  r->calls = calls;
  r->cap = cap;
  reader rd;
  rd.r = r;
  rd.depth = 0;
  rd.content = rd.nomem = 0;
  spool__json_error err;
  int rc = spool__json_parse(body, n, &sink, &rd, scratch, &err);
  if (rd.nomem)
    return -1;
  /* Out of shape, or not JSON, or no content array: the general reader
   * says why. */
  return rc != 0 || !rd.content ? 1 : 0;
}

void spool__anthropic_reply_free(spool__anthropic_reply *r) {
  spool__buf_free(&r->text);
  spool__buf_free(&r->said);
  free(r->calls);
  r->calls = NULL;
  r->ncalls = r->cap = 0;
}
