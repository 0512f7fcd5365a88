/* metrics.c - a tiny HTTP/1.1 server on libuv for Prometheus scrapes:
 * GET /metrics -> text exposition format 0.0.4; anything else gets 404 or
 * 405. Requests are parsed with the http_parser library; one response per
 * connection, then close. */
#include <http_parser.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAX_REQ 8192
#define IDLE_MS 5000 /* a scrape that has not sent its request by then is dropped */
#define BODY_CAP 16384

struct ykd_metrics {
  uv_tcp_t server;
  uv_loop_t *loop;
  ykd_metrics_render render;
  void *arg;
  const yk_logger *log;
  int nconn;
  int closing;
  struct hconn *conns;
  uv_timer_t reaper;
};

typedef struct hconn {
  uv_tcp_t tcp;
  struct hconn *prev, *next;
  char rbuf[4096];
  ykd_metrics *srv;
  http_parser parser;
  uint64_t opened_ns;
  char url[256];
  size_t url_len;
  size_t seen;
  int done;
  int closing;
  uv_write_t wreq;
  char *resp;
} hconn;

static void maybe_free(ykd_metrics *m) {
  if (m->closing && m->nconn == 0) free(m);
}

static void hconn_closed(uv_handle_t *h) {
  hconn *c = h->data;
  ykd_metrics *m = c->srv;
  if (c->prev) c->prev->next = c->next;
  else m->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  free(c->resp);
  free(c);
  m->nconn--;
  maybe_free(m);
}

static void hconn_close(hconn *c) {
  if (c->closing) return;
  c->closing = 1;
  uv_close((uv_handle_t *)&c->tcp, hconn_closed);
}

static void after_write(uv_write_t *req, int status) { hconn_close(req->data); }

static void respond(hconn *c, int code, const char *reason, const char *ctype, const char *body, size_t blen) {
  c->done = 1;
  uv_read_stop((uv_stream_t *)&c->tcp);
  size_t cap = blen + 256;
  c->resp = malloc(cap);
  if (!c->resp) {
    hconn_close(c);
    return;
  }
  int n = snprintf(c->resp, cap,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", code,
                   reason, ctype, blen);
  memcpy(c->resp + n, body, blen);
  uv_buf_t b = uv_buf_init(c->resp, (unsigned)(n + (int)blen));
  c->wreq.data = c;
  if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, after_write)) hconn_close(c);
}

static int on_url(http_parser *p, const char *at, size_t len) {
  hconn *c = p->data;
  if (c->url_len + len >= sizeof c->url) return 1; /* too long: parser error -> 414 below */
  memcpy(c->url + c->url_len, at, len);
  c->url_len += len;
  c->url[c->url_len] = 0;
  return 0;
}

static int on_complete(http_parser *p) {
  hconn *c = p->data;
  if (c->done) return 0;
  if (p->method != HTTP_GET && p->method != HTTP_HEAD) {
    static const char b[] = "only GET /metrics is served\n";
    respond(c, 405, "Method Not Allowed", "text/plain", b, sizeof b - 1);
    return 1;
  }
  char *q = strchr(c->url, '?');
  if (q) *q = 0;
  if (strcmp(c->url, "/metrics") != 0) {
    static const char b[] = "not found: try /metrics\n";
    respond(c, 404, "Not Found", "text/plain", b, sizeof b - 1);
    return 1;
  }
  char *body = malloc(BODY_CAP);
  if (!body) {
    hconn_close(c);
    return 1;
  }
  size_t n = c->srv->render(c->srv->arg, body, BODY_CAP);
  respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body, p->method == HTTP_HEAD ? 0 : n);
  free(body);
  return 1;
}

static const http_parser_settings settings = {.on_url = on_url, .on_message_complete = on_complete};

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  hconn *c = h->data;
  buf->base = c->rbuf;
  buf->len = sizeof c->rbuf;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  hconn *c = s->data;
  if (c->done || c->closing) return;
  if (nread < 0) {
    hconn_close(c);
    return;
  }
  if (nread == 0) return;
  c->seen += (size_t)nread;
  size_t used = http_parser_execute(&c->parser, &settings, buf->base, (size_t)nread);
  if (c->done) return;
  if (c->parser.http_errno != HPE_OK || used != (size_t)nread || c->seen > MAX_REQ) {
    static const char b[] = "bad request\n";
    int too_long = c->parser.http_errno == HPE_CB_url || c->seen > MAX_REQ;
    respond(c, too_long ? 414 : 400, too_long ? "URI Too Long" : "Bad Request", "text/plain", b, sizeof b - 1);
  }
}

static void on_conn(uv_stream_t *server, int status) {
  ykd_metrics *m = server->data;
  if (status < 0 || m->closing) return;
  hconn *c = calloc(1, sizeof *c);
  if (!c) return;
  c->srv = m;
  uv_tcp_init(m->loop, &c->tcp);
  c->tcp.data = c;
  c->opened_ns = yk_now_ns();
  m->nconn++;
  c->next = m->conns;
  if (m->conns) m->conns->prev = c;
  m->conns = c;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) || uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb))
    hconn_close(c);
}

static void reap(uv_timer_t *t) {
  ykd_metrics *m = t->data;
  uint64_t now = yk_now_ns();
  for (hconn *c = m->conns; c; c = c->next)
    if (!c->done && (now - c->opened_ns) / 1000000 > IDLE_MS) hconn_close(c);
}

int ykd_metrics_start(uv_loop_t *loop, const char *bind, int port, ykd_metrics_render render, void *arg,
                      const yk_logger *log, ykd_metrics **out, yk_diag *d) {
  *out = NULL;
  ykd_metrics *m = calloc(1, sizeof *m);
  if (!m) return yk_errorf(d, YK_ENOMEM, "out of memory for the metrics server");
  m->loop = loop;
  m->render = render;
  m->arg = arg;
  m->log = log;
  struct sockaddr_in sa;
  uv_ip4_addr(bind, port, &sa);
  uv_tcp_init(loop, &m->server);
  m->server.data = m;
  m->nconn = 2; /* the server handle and the reaper timer */
  uv_timer_init(loop, &m->reaper);
  m->reaper.data = m;
  uv_timer_start(&m->reaper, reap, 1000, 1000);
  int rc = uv_tcp_bind(&m->server, (struct sockaddr *)&sa, 0);
  if (!rc) rc = uv_listen((uv_stream_t *)&m->server, 64, on_conn);
  if (rc) {
    ykd_metrics_close(m);
    return yk_errorf(d, YK_EBUSY, "cannot serve /metrics on %s:%d: %s (set coord.metrics_port to a free port)",
                     bind, port, uv_strerror(rc));
  }
  YK_INFO(log, "metrics: serving http://%s:%d/metrics", bind, port);
  *out = m;
  return 0;
}

static void server_closed(uv_handle_t *h) {
  ykd_metrics *m = h->data;
  m->nconn--;
  maybe_free(m);
}

void ykd_metrics_close(ykd_metrics *m) {
  if (!m || m->closing) return;
  m->closing = 1;
  uv_close((uv_handle_t *)&m->server, server_closed);
  uv_close((uv_handle_t *)&m->reaper, server_closed);
  for (hconn *c = m->conns; c; c = c->next) hconn_close(c);
}
