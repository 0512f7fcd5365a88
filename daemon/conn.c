/* conn.c - an authenticated control-protocol connection on libuv TCP:
 * buffers partial frames, decodes, refuses bad or stale frames (and closes),
 * stamps and writes outgoing frames. */
#include <netdb.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void ykd_random(void *out, size_t n) {
  if (RAND_bytes(out, (int)n) != 1) {
    /* RAND_bytes only fails without an entropy source; fall back to the
     * clock mixed with the address so nonces still differ per connection. */
    uint64_t x = yk_now_ns() ^ (uint64_t)(uintptr_t)out;
    for (size_t i = 0; i < n; i++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      ((uint8_t *)out)[i] = (uint8_t)x;
    }
  }
}

int ykd_conn_init(uv_loop_t *loop, ykd_conn *c, void *owner, const ykd_conn_cbs *cbs, const uint8_t *key,
                  size_t key_len) {
  memset(c, 0, sizeof *c);
  int rc = uv_tcp_init(loop, &c->tcp);
  if (rc) return YK_ESYS;
  c->tcp.data = c;
  c->owner = owner;
  c->cbs = *cbs;
  c->key = key;
  c->key_len = key_len;
  c->opened_ns = yk_now_ns();
  strcpy(c->peer, "?");
  return 0;
}

static void on_closed(uv_handle_t *h) {
  ykd_conn *c = h->data;
  free(c->rbuf);
  c->rbuf = NULL;
  if (c->cbs.on_close) c->cbs.on_close(c, c->close_err);
}

void ykd_conn_close(ykd_conn *c, int err) {
  if (c->closing) return;
  c->closing = 1;
  c->close_err = err;
  uv_read_stop((uv_stream_t *)&c->tcp);
  uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  ykd_conn *c = h->data;
  size_t want = 64 * 1024;
  if (c->rcap - c->rlen < want) {
    size_t cap = c->rcap ? c->rcap : want;
    while (cap - c->rlen < want) cap *= 2;
    uint8_t *np = realloc(c->rbuf, cap);
    if (!np) {
      buf->base = NULL;
      buf->len = 0;
      return;
    }
    c->rbuf = np;
    c->rcap = cap;
  }
  buf->base = (char *)c->rbuf + c->rlen;
  buf->len = c->rcap - c->rlen;
}

static void refuse(ykd_conn *c, int code, const char *why) {
  if (c->cbs.on_refuse) c->cbs.on_refuse(c, code, why);
  ykd_conn_close(c, 0);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  ykd_conn *c = s->data;
  if (c->closing) return;
  if (nread < 0) {
    ykd_conn_close(c, (int)nread);
    return;
  }
  if (nread == 0) {
    if (!buf->base) refuse(c, YK_ENOMEM, "out of memory for the receive buffer");
    return;
  }
  c->rlen += (size_t)nread;
  size_t off = 0;
  while (!c->closing && !c->draining && off < c->rlen) {
    yk_msg m;
    yk_diag d = {0};
    long used = yk_proto_decode(c->rbuf + off, c->rlen - off, c->key, c->key_len, &m, &d);
    if (used == 0) break;
    if (used < 0) {
      refuse(c, (int)used, yk_diag_msg(&d, (int)used));
      return;
    }
    off += (size_t)used;
    if (!c->in_ready && c->server_side) {
      /* The client's first frame fixes its half of the session; the server
       * half must be the nonce we sent in CHALLENGE. */
      memcpy(c->in.session, c->session, 8);
      memcpy(c->in.session + 8, m.session + 8, 8);
      memcpy(c->session + 8, m.session + 8, 8);
      c->in_ready = 1;
    }
    int rc = c->in_ready ? yk_proto_check_fresh(&c->in, &m, &d) : 0;
    if (rc) {
      yk_msg_free(&m);
      refuse(c, rc, yk_diag_msg(&d, rc));
      return;
    }
    if (c->cbs.on_msg) c->cbs.on_msg(c, &m);
    yk_msg_free(&m);
  }
  if (c->closing || c->draining) return;
  if (off) {
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
  }
}

int ykd_conn_start(ykd_conn *c) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
    char ip[64] = "?";
    int port = 0;
    if (ss.ss_family == AF_INET) {
      uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
  }
  uv_tcp_nodelay(&c->tcp, 1);
  return uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) ? YK_ESYS : 0;
}

typedef struct {
  uv_write_t req;
  ykd_conn *c;
  uint8_t *buf;
} wreq;

static void write_cb(uv_write_t *req, int status) {
  wreq *w = (wreq *)req;
  w->c->pending_writes--;
  free(w->buf);
  free(w);
}

int ykd_conn_send(ykd_conn *c, yk_msg *m) {
  if (c->closing) return YK_ECLOSED;
  m->seq = ++c->out_seq;
  memcpy(m->session, c->session, 16);
  uint8_t *buf;
  size_t len;
  int rc = yk_proto_encode(m, c->key, c->key_len, &buf, &len, NULL);
  if (rc) return rc;
  wreq *w = malloc(sizeof *w);
  if (!w) {
    free(buf);
    return YK_ENOMEM;
  }
  w->c = c;
  w->buf = buf;
  uv_buf_t b = uv_buf_init((char *)buf, (unsigned)len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb)) {
    free(buf);
    free(w);
    return YK_ECLOSED;
  }
  c->pending_writes++;
  return 0;
}

int ykd_resolve(const char *host, int port, struct sockaddr_storage *ss, yk_diag *d) {
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
  int rc = getaddrinfo(host, ps, &hints, &res);
  if (rc || !res)
    return yk_errorf(d, YK_ENOTFOUND, "cannot resolve coordinator host '%s': %s", host, gai_strerror(rc));
  /* Prefer IPv4: SLURM node names often also map to a link-local v6. */
  struct addrinfo *pick = res;
  for (struct addrinfo *a = res; a; a = a->ai_next)
    if (a->ai_family == AF_INET) {
      pick = a;
      break;
    }
  memset(ss, 0, sizeof *ss);
  memcpy(ss, pick->ai_addr, pick->ai_addrlen);
  freeaddrinfo(res);
  return 0;
}
