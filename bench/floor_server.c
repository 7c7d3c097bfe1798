/*
 * floor_server.c: the floor for bench/serve — the least an HTTP server on
 * libuv and http-parser can do per request: parse it, answer a fixed
 * 200 with keep-alive. No Lua, no routing, no JSON. spool serve's routes
 * are measured against this in the same run.
 *
 *   floor_server PORT_FILE    listens on 127.0.0.1, any port
 */
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Type: "
                             "application/json\r\nContent-Length: "
                             "15\r\n\r\n{\"status\":\"ok\"}";

typedef struct client {
  uv_tcp_t tcp;
  http_parser parser;
} client;

static http_parser_settings settings;

static void on_closed(uv_handle_t *h) {
  free(h->data);
}

static void on_written(uv_write_t *w, int status) {
  (void)status;
  free(w);
}

static int on_message_complete(http_parser *p) {
  client *c = p->data;
  uv_write_t *w = malloc(sizeof *w);
  uv_buf_t b = uv_buf_init((char *)answer, sizeof answer - 1);
  if (w == NULL || uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written))
    free(w);
  return 0;
}

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  static char slab[65536];
  (void)h;
  (void)size;
  *buf = uv_buf_init(slab, sizeof slab);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  client *c = s->data;
  if (n < 0 || http_parser_execute(&c->parser, &settings, buf->base,
                                   (size_t)n) != (size_t)n) {
    if (!uv_is_closing((uv_handle_t *)s))
      uv_close((uv_handle_t *)s, on_closed);
  }
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0)
    return;
  client *c = calloc(1, sizeof *c);
  uv_tcp_init(server->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    uv_close((uv_handle_t *)&c->tcp, on_closed);
    return;
  }
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: floor_server PORT_FILE\n");
    return 2;
  }
  settings.on_message_complete = on_message_complete;
  uv_loop_t *loop = uv_default_loop();
  uv_tcp_t server;
  struct sockaddr_in addr;
  uv_tcp_init(loop, &server);
  uv_ip4_addr("127.0.0.1", 0, &addr);
  if (uv_tcp_bind(&server, (struct sockaddr *)&addr, 0) != 0 ||
      uv_listen((uv_stream_t *)&server, 1024, on_connection) != 0) {
    fprintf(stderr, "floor_server: cannot listen\n");
    return 1;
  }
  int len = sizeof addr;
  uv_tcp_getsockname(&server, (struct sockaddr *)&addr, &len);
  FILE *f = fopen(argv[1], "w");
  if (f == NULL)
    return 1;
  fprintf(f, "%d\n", ntohs(addr.sin_port));
  fclose(f);
  return uv_run(loop, UV_RUN_DEFAULT);
}
