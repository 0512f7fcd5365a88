/* proto.c - the control protocol's frames (docs/protocol.md): encoding, the
 * pure decoder the fuzzer drives, HMAC-SHA256 authentication (OpenSSL) and
 * replay refusal. All integers are little-endian. */
#include "yk_daemon.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

const char *yk_msg_type_name(int type) {
  static const char *names[] = {"?",         "CHALLENGE", "REGISTER", "WELCOME",   "HEARTBEAT",
                                "HEARTBEAT_ACK", "PEER_DEAD", "SHUTDOWN", "BYE",   "STATUS_REQ",
                                "STATUS",    "EXCHANGE",  "EXCHANGE_ALL", "ERROR",
                                "REQUEST",   "CHECKPOINT",    "REFORM"};
  if (type <= 0 || type >= YK_MSG_TYPE_MAX_) return "UNKNOWN";
  return names[type];
}

void yk_msg_free(yk_msg *m) {
  if (!m) return;
  free(m->members);
  m->members = NULL;
  m->n_members = 0;
}

/* ---------------------------------------------------------------- writer */

typedef struct {
  uint8_t *p;
  size_t len, cap;
  int oom;
} wbuf;

static void w_bytes(wbuf *w, const void *src, size_t n) {
  if (w->oom) return;
  if (w->len + n > w->cap) {
    size_t cap = w->cap ? w->cap : 256;
    while (cap < w->len + n) cap *= 2;
    uint8_t *np = realloc(w->p, cap);
    if (!np) {
      w->oom = 1;
      return;
    }
    w->p = np;
    w->cap = cap;
  }
  if (n) memcpy(w->p + w->len, src, n);
  w->len += n;
}
static void w_u8(wbuf *w, uint8_t v) { w_bytes(w, &v, 1); }
static void w_u16(wbuf *w, uint16_t v) {
  uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
  w_bytes(w, b, 2);
}
static void w_u32(wbuf *w, uint32_t v) {
  uint8_t b[4];
  for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
  w_bytes(w, b, 4);
}
static void w_u64(wbuf *w, uint64_t v) {
  uint8_t b[8];
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
  w_bytes(w, b, 8);
}
static void w_i32(wbuf *w, int32_t v) { w_u32(w, (uint32_t)v); }
static void w_f64(wbuf *w, double v) {
  uint64_t u;
  memcpy(&u, &v, 8);
  w_u64(w, u);
}
static void w_str(wbuf *w, const char *s, size_t max) {
  size_t n = strnlen(s, max);
  w_u16(w, (uint16_t)n);
  w_bytes(w, s, n);
}
static void w_blob(wbuf *w, const uint8_t *b, uint32_t n) {
  w_u32(w, n);
  w_bytes(w, b, n);
}
static void w_report(wbuf *w, const yk_step_stats *r) {
  w_u64(w, (uint64_t)r->step);
  w_f64(w, r->loss);
  w_f64(w, r->tokens_per_s);
  w_f64(w, r->step_ms);
  w_f64(w, r->comm_wait_ms);
  w_u64(w, r->allreduce_bytes);
  w_f64(w, r->loss_scale);
}
#define REPORT_BYTES (7 * 8)

/* ---------------------------------------------------------------- reader */

typedef struct {
  const uint8_t *p;
  size_t len, off;
  int bad;
  const char *what; /* first field that did not fit */
} rbuf;

static const uint8_t *r_take(rbuf *r, size_t n, const char *what) {
  if (r->bad) return NULL;
  if (n > r->len - r->off) {
    r->bad = 1;
    r->what = what;
    return NULL;
  }
  const uint8_t *p = r->p + r->off;
  r->off += n;
  return p;
}
static uint64_t r_le(rbuf *r, int n, const char *what) {
  const uint8_t *p = r_take(r, (size_t)n, what);
  uint64_t v = 0;
  if (!p) return 0;
  for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
static uint8_t r_u8(rbuf *r, const char *what) { return (uint8_t)r_le(r, 1, what); }
static uint32_t r_u32(rbuf *r, const char *what) { return (uint32_t)r_le(r, 4, what); }
static int32_t r_i32(rbuf *r, const char *what) { return (int32_t)(uint32_t)r_le(r, 4, what); }
static uint64_t r_u64(rbuf *r, const char *what) { return r_le(r, 8, what); }
static double r_f64(rbuf *r, const char *what) {
  uint64_t u = r_le(r, 8, what);
  double v;
  memcpy(&v, &u, 8);
  return v;
}
/* A length-prefixed string of at most max bytes without NUL, copied into
 * out[max + 1]. */
static void r_str(rbuf *r, char *out, size_t max, const char *what) {
  out[0] = 0;
  size_t n = (size_t)r_le(r, 2, what);
  if (r->bad) return;
  if (n > max) {
    r->bad = 1;
    r->what = what;
    return;
  }
  const uint8_t *p = r_take(r, n, what);
  if (!p) return;
  if (memchr(p, 0, n)) {
    r->bad = 1;
    r->what = what;
    return;
  }
  memcpy(out, p, n);
  out[n] = 0;
}
static const uint8_t *r_blob(rbuf *r, uint32_t *n, uint32_t max, const char *what) {
  *n = r_u32(r, what);
  if (r->bad) return NULL;
  if (*n > max) {
    r->bad = 1;
    r->what = what;
    *n = 0;
    return NULL;
  }
  const uint8_t *p = r_take(r, *n, what);
  if (!p) *n = 0;
  return p;
}
static void r_report(rbuf *r, yk_step_stats *rep) {
  rep->step = (int64_t)r_u64(r, "report.step");
  rep->loss = r_f64(r, "report.loss");
  rep->tokens_per_s = r_f64(r, "report.tokens_per_s");
  rep->step_ms = r_f64(r, "report.step_ms");
  rep->comm_wait_ms = r_f64(r, "report.comm_wait_ms");
  rep->allreduce_bytes = r_u64(r, "report.allreduce_bytes");
  rep->loss_scale = r_f64(r, "report.loss_scale");
}

/* ---------------------------------------------------------------- frames */

static void le32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32); }

static int mac(const uint8_t *key, size_t key_len, const uint8_t *data, size_t n, uint8_t out[32]) {
  unsigned int olen = 0;
  if (!HMAC(EVP_sha256(), key, (int)key_len, data, n, out, &olen) || olen != 32) return YK_EAUTH;
  return 0;
}

int yk_proto_encode(const yk_msg *m, const uint8_t *key, size_t key_len, uint8_t **out, size_t *out_len,
                    yk_diag *d) {
  *out = NULL;
  *out_len = 0;
  if (m->type <= 0 || m->type >= YK_MSG_TYPE_MAX_)
    return yk_errorf(d, YK_EINVAL, "cannot encode message type %d", m->type);
  wbuf w = {0};
  /* header, length patched below */
  w_u32(&w, YK_PROTO_MAGIC);
  w_u8(&w, YK_PROTO_VERSION);
  w_u8(&w, m->type);
  w_u16(&w, 0);
  w_u32(&w, 0);
  w_i32(&w, m->sender);
  w_u64(&w, m->seq);
  w_bytes(&w, m->session, 16);
  switch (m->type) {
  case YK_MSG_CHALLENGE:
    w_u32(&w, YK_PROTO_VERSION);
    break;
  case YK_MSG_REGISTER:
    w_i32(&w, m->rank);
    w_i32(&w, m->world);
    w_i32(&w, m->local_rank);
    w_u32(&w, m->pid);
    w_str(&w, m->host, YK_PROTO_MAX_HOST);
    w_blob(&w, m->blob, m->blob_len);
    break;
  case YK_MSG_WELCOME:
  case YK_MSG_REFORM:
    w_i32(&w, m->rank);
    w_i32(&w, m->world);
    w_u32(&w, m->epoch);
    w_u64(&w, m->job_id);
    if (m->type == YK_MSG_REFORM) {
      w_i32(&w, m->code);
      w_str(&w, m->text, YK_PROTO_MAX_TEXT);
    }
    w_u32(&w, m->n_members);
    for (uint32_t i = 0; i < m->n_members; i++) {
      const yk_msg_member *mm = &m->members[i];
      w_i32(&w, mm->rank);
      w_u32(&w, mm->pid);
      w_str(&w, mm->host, YK_PROTO_MAX_HOST);
      w_blob(&w, mm->addr, mm->addr_len);
    }
    break;
  case YK_MSG_HEARTBEAT:
    w_report(&w, &m->rep);
    break;
  case YK_MSG_HEARTBEAT_ACK:
    w_u32(&w, m->epoch);
    w_i32(&w, m->alive);
    break;
  case YK_MSG_PEER_DEAD:
    w_i32(&w, m->rank);
    w_str(&w, m->host, YK_PROTO_MAX_HOST);
    w_str(&w, m->text, YK_PROTO_MAX_TEXT);
    break;
  case YK_MSG_SHUTDOWN:
  case YK_MSG_BYE:
    w_i32(&w, m->code);
    w_str(&w, m->text, YK_PROTO_MAX_TEXT);
    break;
  case YK_MSG_STATUS_REQ:
    break;
  case YK_MSG_STATUS:
    w_u64(&w, m->job_id);
    w_u32(&w, m->epoch);
    w_i32(&w, m->world);
    w_i32(&w, m->alive);
    w_u32(&w, m->n_members);
    for (uint32_t i = 0; i < m->n_members; i++) {
      const yk_msg_member *mm = &m->members[i];
      w_i32(&w, mm->rank);
      w_u32(&w, mm->pid);
      w_u8(&w, mm->state);
      w_str(&w, mm->host, YK_PROTO_MAX_HOST);
      w_u32(&w, mm->hb_age_ms);
      w_report(&w, &mm->rep);
    }
    w_u32(&w, m->n_changes);
    for (uint32_t i = 0; i < m->n_changes && i < YK_PROTO_MAX_CHANGES; i++) {
      w_u32(&w, m->changes[i].epoch);
      w_f64(&w, m->changes[i].seconds);
      w_str(&w, m->changes[i].cause, 255);
    }
    w_f64(&w, m->recovery_s);
    break;
  case YK_MSG_EXCHANGE:
    w_u32(&w, m->epoch);
    w_u32(&w, m->round);
    w_blob(&w, m->blob, m->blob_len);
    break;
  case YK_MSG_EXCHANGE_ALL:
    w_u32(&w, m->round);
    w_u32(&w, m->n_members);
    for (uint32_t i = 0; i < m->n_members; i++) w_blob(&w, m->members[i].addr, m->members[i].addr_len);
    break;
  case YK_MSG_ERROR:
    w_str(&w, m->text, YK_PROTO_MAX_TEXT);
    break;
  case YK_MSG_REQUEST:
    w_i32(&w, m->action);
    w_i32(&w, m->code);
    w_str(&w, m->text, YK_PROTO_MAX_TEXT);
    break;
  case YK_MSG_CHECKPOINT:
    w_i32(&w, m->code);
    w_str(&w, m->text, YK_PROTO_MAX_TEXT);
    break;
  }
  if (w.oom) {
    free(w.p);
    return yk_errorf(d, YK_ENOMEM, "out of memory encoding a %s frame", yk_msg_type_name(m->type));
  }
  size_t payload = w.len - YK_PROTO_HDR;
  if (payload > YK_PROTO_MAX_PAYLOAD) {
    free(w.p);
    return yk_errorf(d, YK_EINVAL, "%s payload of %zu bytes exceeds the %u-byte limit", yk_msg_type_name(m->type),
                     payload, YK_PROTO_MAX_PAYLOAD);
  }
  le32(w.p + 8, (uint32_t)payload);
  uint8_t tag[32];
  if (mac(key, key_len, w.p, w.len, tag)) {
    free(w.p);
    return yk_errorf(d, YK_EAUTH, "HMAC-SHA256 failed");
  }
  w_bytes(&w, tag, 32);
  if (w.oom) {
    free(w.p);
    return yk_errorf(d, YK_ENOMEM, "out of memory encoding a frame");
  }
  *out = w.p;
  *out_len = w.len;
  return 0;
}

/* Reject a member count the remaining bytes cannot possibly hold before
 * allocating for it (a frame claiming 2^31 members costs nothing to send). */
static int members_alloc(rbuf *r, yk_msg *m, uint32_t n, size_t min_each) {
  if (n > YK_PROTO_MAX_WORLD || (size_t)n * min_each > r->len - r->off) {
    r->bad = 1;
    r->what = "member count";
    return -1;
  }
  m->n_members = n;
  if (n == 0) return 0;
  m->members = calloc(n, sizeof *m->members);
  if (!m->members) {
    r->bad = 1;
    r->what = "member array (out of memory)";
    return -1;
  }
  return 0;
}

long yk_proto_decode(const uint8_t *buf, size_t len, const uint8_t *key, size_t key_len, yk_msg *m,
                     yk_diag *d) {
  memset(m, 0, sizeof *m);
  m->sender = -1;
  /* Check what we can as early as possible so garbage is refused after the
   * first bytes, not after waiting for a length it invented. */
  if (len >= 4 && get32(buf) != YK_PROTO_MAGIC)
    return yk_errorf(d, YK_EPROTO, "bad magic 0x%08x (not a yoke control frame)", get32(buf));
  if (len >= 5 && buf[4] != YK_PROTO_VERSION)
    return yk_errorf(d, YK_EPROTO, "protocol version %u, this yoke speaks version %d", buf[4], YK_PROTO_VERSION);
  if (len >= 6 && (buf[5] == 0 || buf[5] >= YK_MSG_TYPE_MAX_))
    return yk_errorf(d, YK_EPROTO, "unknown message type %u", buf[5]);
  if (len < YK_PROTO_HDR) return 0;
  uint32_t plen = get32(buf + 8);
  if (plen > YK_PROTO_MAX_PAYLOAD)
    return yk_errorf(d, YK_EPROTO, "payload length %u exceeds the %u-byte limit", plen, YK_PROTO_MAX_PAYLOAD);
  if (buf[6] || buf[7]) return yk_errorf(d, YK_EPROTO, "reserved flags 0x%02x%02x are not zero", buf[7], buf[6]);
  size_t total = (size_t)YK_PROTO_HDR + plen + YK_PROTO_MAC;
  if (len < total) return 0;
  uint8_t tag[32];
  if (mac(key, key_len, buf, YK_PROTO_HDR + plen, tag)) return yk_errorf(d, YK_EAUTH, "HMAC-SHA256 failed");
  if (CRYPTO_memcmp(tag, buf + YK_PROTO_HDR + plen, 32) != 0)
    return yk_errorf(d, YK_EAUTH, "%s frame failed authentication (wrong job secret?)", yk_msg_type_name(buf[5]));

  m->version = buf[4];
  m->type = buf[5];
  m->sender = (int32_t)get32(buf + 12);
  m->seq = get64(buf + 16);
  memcpy(m->session, buf + 24, 16);
  rbuf r = {buf + YK_PROTO_HDR, plen, 0, 0, NULL};
  switch (m->type) {
  case YK_MSG_CHALLENGE:
    (void)r_u32(&r, "challenge.version");
    break;
  case YK_MSG_REGISTER:
    m->rank = r_i32(&r, "register.rank");
    m->world = r_i32(&r, "register.world");
    m->local_rank = r_i32(&r, "register.local_rank");
    m->pid = r_u32(&r, "register.pid");
    r_str(&r, m->host, YK_PROTO_MAX_HOST, "register.host");
    m->blob = r_blob(&r, &m->blob_len, YK_PROTO_MAX_ADDR, "register.addr");
    break;
  case YK_MSG_WELCOME:
  case YK_MSG_REFORM: {
    m->rank = r_i32(&r, "welcome.rank");
    m->world = r_i32(&r, "welcome.world");
    m->epoch = r_u32(&r, "welcome.epoch");
    m->job_id = r_u64(&r, "welcome.job_id");
    if (m->type == YK_MSG_REFORM) {
      m->code = r_i32(&r, "reform.cause");
      r_str(&r, m->text, YK_PROTO_MAX_TEXT, "reform.reason");
    }
    uint32_t n = r_u32(&r, "welcome.n");
    if (r.bad || members_alloc(&r, m, n, 4 + 4 + 2 + 4)) break;
    for (uint32_t i = 0; i < n && !r.bad; i++) {
      yk_msg_member *mm = &m->members[i];
      mm->rank = r_i32(&r, "welcome.member.rank");
      mm->pid = r_u32(&r, "welcome.member.pid");
      r_str(&r, mm->host, YK_PROTO_MAX_HOST, "welcome.member.host");
      mm->addr = r_blob(&r, &mm->addr_len, YK_PROTO_MAX_ADDR, "welcome.member.addr");
    }
    break;
  }
  case YK_MSG_HEARTBEAT:
    r_report(&r, &m->rep);
    break;
  case YK_MSG_HEARTBEAT_ACK:
    m->epoch = r_u32(&r, "ack.epoch");
    m->alive = r_i32(&r, "ack.alive");
    break;
  case YK_MSG_PEER_DEAD:
    m->rank = r_i32(&r, "peer_dead.rank");
    r_str(&r, m->host, YK_PROTO_MAX_HOST, "peer_dead.host");
    r_str(&r, m->text, YK_PROTO_MAX_TEXT, "peer_dead.reason");
    break;
  case YK_MSG_SHUTDOWN:
  case YK_MSG_BYE:
    m->code = r_i32(&r, "code");
    r_str(&r, m->text, YK_PROTO_MAX_TEXT, "reason");
    break;
  case YK_MSG_STATUS_REQ:
    break;
  case YK_MSG_STATUS: {
    m->job_id = r_u64(&r, "status.job_id");
    m->epoch = r_u32(&r, "status.epoch");
    m->world = r_i32(&r, "status.world");
    m->alive = r_i32(&r, "status.alive");
    uint32_t n = r_u32(&r, "status.n");
    if (r.bad || members_alloc(&r, m, n, 4 + 4 + 1 + 2 + 4 + REPORT_BYTES)) break;
    for (uint32_t i = 0; i < n && !r.bad; i++) {
      yk_msg_member *mm = &m->members[i];
      mm->rank = r_i32(&r, "status.member.rank");
      mm->pid = r_u32(&r, "status.member.pid");
      mm->state = r_u8(&r, "status.member.state");
      r_str(&r, mm->host, YK_PROTO_MAX_HOST, "status.member.host");
      mm->hb_age_ms = r_u32(&r, "status.member.hb_age");
      r_report(&r, &mm->rep);
    }
    if (r.bad) break;
    m->n_changes = r_u32(&r, "status.n_changes");
    if (m->n_changes > YK_PROTO_MAX_CHANGES) {
      r.bad = 1;
      r.what = "status.n_changes";
      break;
    }
    for (uint32_t i = 0; i < m->n_changes && !r.bad; i++) {
      m->changes[i].epoch = r_u32(&r, "status.change.epoch");
      m->changes[i].seconds = r_f64(&r, "status.change.seconds");
      r_str(&r, m->changes[i].cause, 255, "status.change.cause");
    }
    m->recovery_s = r_f64(&r, "status.recovery_s");
    break;
  }
  case YK_MSG_EXCHANGE:
    m->epoch = r_u32(&r, "exchange.epoch");
    m->round = r_u32(&r, "exchange.round");
    m->blob = r_blob(&r, &m->blob_len, YK_PROTO_MAX_ADDR, "exchange.blob");
    break;
  case YK_MSG_EXCHANGE_ALL: {
    m->round = r_u32(&r, "exchange_all.round");
    uint32_t n = r_u32(&r, "exchange_all.n");
    if (r.bad || members_alloc(&r, m, n, 4)) break;
    for (uint32_t i = 0; i < n && !r.bad; i++) {
      m->members[i].rank = (int32_t)i;
      m->members[i].addr = r_blob(&r, &m->members[i].addr_len, YK_PROTO_MAX_ADDR, "exchange_all.blob");
    }
    break;
  }
  case YK_MSG_ERROR:
    r_str(&r, m->text, YK_PROTO_MAX_TEXT, "error.text");
    break;
  case YK_MSG_REQUEST:
    m->action = r_i32(&r, "request.action");
    m->code = r_i32(&r, "request.code");
    r_str(&r, m->text, YK_PROTO_MAX_TEXT, "request.reason");
    break;
  case YK_MSG_CHECKPOINT:
    m->code = r_i32(&r, "checkpoint.code");
    r_str(&r, m->text, YK_PROTO_MAX_TEXT, "checkpoint.reason");
    break;
  }
  if (!r.bad && r.off != r.len) {
    r.bad = 1;
    r.what = "trailing bytes";
  }
  if (r.bad) {
    yk_msg_free(m);
    return yk_errorf(d, YK_EPROTO, "malformed %s payload (%u bytes): bad %s", yk_msg_type_name(buf[5]), plen,
                     r.what ? r.what : "field");
  }
  return (long)total;
}

int yk_proto_check_fresh(yk_proto_peer *p, const yk_msg *m, yk_diag *d) {
  if (CRYPTO_memcmp(p->session, m->session, 16) != 0)
    return yk_errorf(d, YK_EAUTH, "stale %s frame: it belongs to another session (replayed?)",
                     yk_msg_type_name(m->type));
  if (m->seq <= p->last_seq)
    return yk_errorf(d, YK_EAUTH, "stale %s frame: sequence %llu after %llu (replayed?)", yk_msg_type_name(m->type),
                     (unsigned long long)m->seq, (unsigned long long)p->last_seq);
  p->last_seq = m->seq;
  return 0;
}

