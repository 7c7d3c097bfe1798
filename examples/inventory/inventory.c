/*
 * inventory.c: an application that embeds spool. It owns the event loop,
 * gives the agent two tools written in C (one answers at once, one later,
 * from a timer on the same loop), runs the restock agent, and approves the
 * order the agent wants to place from code, as a person would.
 *
 *   cc inventory.c $(pkg-config --cflags --libs spool libuv) -o inventory
 *   ./inventory path/to/examples/inventory
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <spool.h>
#include <uv.h>

static int stock = 4; /* MUG-01 on the shelf */
static int orders = 0;

/* A synchronous tool: answers before it returns. */
static void stock_level(spool_call *call, const char *args, void *ud) {
  char sku[32];
  (void)ud;
  if (sscanf(args, "{\"sku\":\"%31[^\"]\"}", sku) != 1) {
    spool_call_fail(call, "stock_level needs a sku");
    return;
  }
  char result[96];
  snprintf(result, sizeof result, "{\"sku\":\"%s\",\"level\":%d}", sku, stock);
  spool_call_complete(call, result);
}

/* An asynchronous tool: the order is placed 20 ms later, as if a supplier's
 * API answered. The call is answered from a timer on the same loop. */
typedef struct pending_order {
  uv_timer_t timer;
  spool_call *call;
  int quantity;
} pending_order;

static void on_closed(uv_handle_t *h) {
  free(h->data);
}

static void on_supplier(uv_timer_t *t) {
  pending_order *p = t->data;
  char result[96];
  snprintf(result, sizeof result,
           "{\"order_id\":\"O-%d\",\"quantity\":%d,\"status\":\"placed\"}",
           ++orders, p->quantity);
  stock += p->quantity;
  spool_call_complete(p->call, result);
  uv_close((uv_handle_t *)&p->timer, on_closed);
}

static void place_order(spool_call *call, const char *args, void *ud) {
  uv_loop_t *loop = ud;
  pending_order *p = calloc(1, sizeof *p);
  const char *q = strstr(args, "\"quantity\":");
  if (p == NULL || q == NULL ||
      sscanf(q, "\"quantity\":%d", &p->quantity) != 1) {
    free(p);
    spool_call_fail(call, "place_order needs a quantity");
    return;
  }
  p->call = call;
  uv_timer_init(loop, &p->timer);
  p->timer.data = p;
  uv_timer_start(&p->timer, on_supplier, 20, 0);
}

static void on_event(const spool_event *ev, void *ud) {
  (void)ud;
  printf("  %s\n", spool_event_text(ev));
}

static int fail(spool_engine *e, const char *what) {
  fprintf(stderr, "inventory: %s: %s\n", what, spool_engine_errmsg(e));
  spool_engine_free(e);
  return 1;
}

int main(int argc, char **argv) {
  const char *project = argc > 1 ? argv[1] : ".";
  uv_loop_t loop;
  uv_loop_init(&loop);

  spool_engine *e;
  if (spool_engine_new(&e) != SPOOL_OK)
    return 1;
  if (spool_engine_set(e, "project", project) != SPOOL_OK ||
      spool_engine_use_loop(e, &loop) != SPOOL_OK ||
      spool_engine_open(e) != SPOOL_OK)
    return fail(e, "cannot open the engine");
  spool_tool_register(e, "stock_level", "How many of a product are left.",
                      "{\"type\":\"object\",\"properties\":{\"sku\":"
                      "{\"type\":\"string\"}},\"required\":[\"sku\"]}",
                      stock_level, NULL);
  spool_tool_register(e, "place_order", "Order more of a product.",
                      "{\"type\":\"object\",\"properties\":{\"sku\":"
                      "{\"type\":\"string\"},\"quantity\":{\"type\":"
                      "\"integer\",\"minimum\":1}},\"required\":[\"sku\","
                      "\"quantity\"]}",
                      place_order, &loop);
  spool_engine_on_event(e, on_event, NULL);

  char id[SPOOL_ID_SIZE];
  if (spool_thread_start(e, "restock", "Check MUG-01 and restock it.", id))
    return fail(e, "cannot start the agent");
  spool_engine_run(e, SPOOL_RUN_IDLE);

  spool_response_kind kind;
  const char *tool, *text;
  if (spool_thread_request(e, id, &kind, &tool, &text) != SPOOL_OK ||
      kind != SPOOL_APPROVE || strcmp(tool, "place_order") != 0)
    return fail(e, "the agent should be waiting for approval of an order");
  printf("approving from code: %s\n", text);
  spool_response yes = SPOOL_RESPONSE_INIT;
  yes.kind = SPOOL_APPROVE;
  yes.by = "inventory.c";
  yes.channel = "code";
  if (spool_thread_resume(e, id, &yes) != SPOOL_OK)
    return fail(e, "cannot approve");
  spool_engine_run(e, SPOOL_RUN_IDLE);

  const char *result;
  if (spool_thread_result(e, id, &result) != SPOOL_OK)
    return fail(e, "no result");
  printf("result: %s\nstock of MUG-01 now: %d\n", result, stock);
  int ok = stock == 30 && orders == 1;
  spool_engine_free(e);
  uv_run(&loop, UV_RUN_DEFAULT); /* the engine's handles close */
  uv_loop_close(&loop);
  return ok ? 0 : 1;
}
