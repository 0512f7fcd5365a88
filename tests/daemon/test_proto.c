/* Control protocol: encode/decode round trips, HMAC refusal, malformed and
 * truncated frames, replay refusal; and a live coordinator that refuses bad
 * clients (wrong secret, random bytes, truncated frames, replays) and keeps
 * serving good ones. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "yk_daemon.h"

static const uint8_t KEY[] = "0123456789abcdef0123456789abcdef";
#define KLEN 32
static const uint8_t BADKEY[] = "fedcba9876543210fedcba9876543210";

static uint8_t *enc(const yk_msg *m, const uint8_t *key, size_t *len) {
  uint8_t *out = NULL;
  yk_diag d = {0};
  ck_assert_msg(yk_proto_encode(m, key, KLEN, &out, len, &d) == 0, "%s", d.msg);
  return out;
}

START_TEST(roundtrip) {
  yk_msg_member mem[2] = {0};
  mem[0].rank = 0;
  mem[0].pid = 11;
  strcpy(mem[0].host, "alpha");
  mem[0].addr = (const uint8_t *)"AAAA";
  mem[0].addr_len = 4;
  mem[0].state = YK_MEMBER_REGISTERED;
  mem[0].hb_age_ms = 250;
  mem[0].rep.step = 9;
  mem[0].rep.loss = 2.5;
  mem[1].rank = 1;
  mem[1].pid = 12;
  strcpy(mem[1].host, "beta");
  mem[1].addr = (const uint8_t *)"BB";
  mem[1].addr_len = 2;
  mem[1].state = YK_MEMBER_DEAD;
  for (int t = 1; t < YK_MSG_TYPE_MAX_; t++) {
    yk_msg m = {0};
    m.type = (uint8_t)t;
    m.sender = 3;
    m.seq = 77;
    memset(m.session, 0xab, 16);
    m.rank = 1;
    m.world = 2;
    m.local_rank = 1;
    m.pid = 4242;
    m.epoch = 5;
    m.job_id = 0x1122334455667788ull;
    m.code = 3;
    m.round = 6;
    m.action = YK_REQ_CHECKPOINT;
    m.alive = 2;
    strcpy(m.host, "node07");
    strcpy(m.text, "rank 1 died");
    m.blob = (const uint8_t *)"addr-blob";
    m.blob_len = 9;
    m.rep.step = 100;
    m.rep.loss = 3.25;
    m.rep.tokens_per_s = 1e6;
    m.rep.step_ms = 12.5;
    m.rep.comm_wait_ms = 1.5;
    m.rep.allreduce_bytes = 1u << 30;
    m.rep.loss_scale = 32768;
    m.n_members = 2;
    m.members = mem;
    size_t len;
    uint8_t *f = enc(&m, KEY, &len);
    yk_msg o;
    yk_diag d = {0};
    long used = yk_proto_decode(f, len, KEY, KLEN, &o, &d);
    ck_assert_msg(used == (long)len, "type %s: %ld (%s)", yk_msg_type_name(t), used, d.msg);
    ck_assert_int_eq(o.type, t);
    ck_assert_int_eq(o.sender, 3);
    ck_assert_uint_eq(o.seq, 77);
    ck_assert_int_eq(memcmp(o.session, m.session, 16), 0);
    switch (t) {
    case YK_MSG_REGISTER:
      ck_assert_int_eq(o.rank, 1);
      ck_assert_int_eq(o.world, 2);
      ck_assert_uint_eq(o.pid, 4242);
      ck_assert_str_eq(o.host, "node07");
      ck_assert_uint_eq(o.blob_len, 9);
      ck_assert_int_eq(memcmp(o.blob, "addr-blob", 9), 0);
      break;
    case YK_MSG_WELCOME:
      ck_assert_uint_eq(o.job_id, m.job_id);
      ck_assert_uint_eq(o.epoch, 5);
      ck_assert_uint_eq(o.n_members, 2);
      ck_assert_str_eq(o.members[1].host, "beta");
      ck_assert_uint_eq(o.members[1].addr_len, 2);
      ck_assert_int_eq(memcmp(o.members[0].addr, "AAAA", 4), 0);
      break;
    case YK_MSG_HEARTBEAT:
      ck_assert_int_eq(o.rep.step, 100);
      ck_assert(o.rep.loss == 3.25);
      ck_assert(o.rep.loss_scale == 32768);
      ck_assert_uint_eq(o.rep.allreduce_bytes, 1u << 30);
      break;
    case YK_MSG_PEER_DEAD:
      ck_assert_int_eq(o.rank, 1);
      ck_assert_str_eq(o.host, "node07");
      ck_assert_str_eq(o.text, "rank 1 died");
      break;
    case YK_MSG_STATUS:
      ck_assert_int_eq(o.alive, 2);
      ck_assert_uint_eq(o.members[0].hb_age_ms, 250);
      ck_assert_int_eq(o.members[0].rep.step, 9);
      ck_assert_int_eq(o.members[1].state, YK_MEMBER_DEAD);
      break;
    case YK_MSG_EXCHANGE_ALL:
      ck_assert_uint_eq(o.round, 6);
      ck_assert_uint_eq(o.members[0].addr_len, 4);
      break;
    case YK_MSG_REQUEST:
      ck_assert_int_eq(o.action, YK_REQ_CHECKPOINT);
      ck_assert_int_eq(o.code, 3);
      ck_assert_str_eq(o.text, "rank 1 died");
      break;
    case YK_MSG_CHECKPOINT:
    case YK_MSG_BYE:
    case YK_MSG_SHUTDOWN:
      ck_assert_int_eq(o.code, 3);
      ck_assert_str_eq(o.text, "rank 1 died");
      break;
    default:
      break;
    }
    yk_msg_free(&o);
    free(f);
  }
}
END_TEST

static yk_msg sample_register(void) {
  yk_msg m = {0};
  m.type = YK_MSG_REGISTER;
  m.seq = 1;
  m.rank = 0;
  m.world = 1;
  strcpy(m.host, "h");
  m.blob = (const uint8_t *)"xy";
  m.blob_len = 2;
  return m;
}

START_TEST(auth_and_tamper) {
  yk_msg m = sample_register();
  size_t len;
  uint8_t *f = enc(&m, KEY, &len);
  yk_msg o;
  yk_diag d = {0};
  ck_assert_int_eq(yk_proto_decode(f, len, BADKEY, KLEN, &o, &d), YK_EAUTH);
  ck_assert_msg(strstr(d.msg, "authentication"), "%s", d.msg);
  /* flipping any bit anywhere is refused, never accepted */
  for (size_t i = 0; i < len; i++) {
    f[i] ^= 0x10;
    long r = yk_proto_decode(f, len, KEY, KLEN, &o, &d);
    ck_assert_msg(r < 0 || (r == 0 && i >= 8 && i < 12), "byte %zu flipped: decode returned %ld", i, r);
    if (r > 0) yk_msg_free(&o);
    f[i] ^= 0x10;
  }
  /* every strict prefix asks for more bytes */
  for (size_t n = 0; n < len; n++) ck_assert_int_eq(yk_proto_decode(f, n, KEY, KLEN, &o, &d), 0);
  free(f);
}
END_TEST

/* A frame with a valid MAC around an arbitrary payload (what a holder of the
 * secret with a bug, or a fuzzer, could send). */
static size_t raw_frame(uint8_t *buf, int type, const uint8_t *payload, uint32_t plen) {
  memset(buf, 0, YK_PROTO_HDR);
  uint32_t magic = YK_PROTO_MAGIC;
  memcpy(buf, &magic, 4);
  buf[4] = YK_PROTO_VERSION;
  buf[5] = (uint8_t)type;
  memcpy(buf + 8, &plen, 4);
  memcpy(buf + YK_PROTO_HDR, payload, plen);
  unsigned int ol;
  HMAC(EVP_sha256(), KEY, KLEN, buf, YK_PROTO_HDR + plen, buf + YK_PROTO_HDR + plen, &ol);
  return YK_PROTO_HDR + plen + 32;
}

START_TEST(malformed) {
  uint8_t buf[4096];
  yk_msg o;
  yk_diag d = {0};
  /* WELCOME claiming a million members in a 24-byte payload */
  uint8_t p1[24] = {0};
  uint32_t big = 1000000;
  memcpy(p1 + 20, &big, 4);
  size_t n = raw_frame(buf, YK_MSG_WELCOME, p1, sizeof p1);
  ck_assert_int_eq(yk_proto_decode(buf, n, KEY, KLEN, &o, &d), YK_EPROTO);
  ck_assert_msg(strstr(d.msg, "member count"), "%s", d.msg);
  /* host string with a NUL inside */
  uint8_t p2[] = {0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3, 0, 'a', 0, 'b', 0, 0, 0, 0};
  n = raw_frame(buf, YK_MSG_REGISTER, p2, sizeof p2);
  ck_assert_int_eq(yk_proto_decode(buf, n, KEY, KLEN, &o, &d), YK_EPROTO);
  ck_assert_msg(strstr(d.msg, "register.host"), "%s", d.msg);
  /* trailing bytes after a complete payload */
  uint8_t p3[9] = {0};
  n = raw_frame(buf, YK_MSG_HEARTBEAT_ACK, p3, sizeof p3);
  ck_assert_int_eq(yk_proto_decode(buf, n, KEY, KLEN, &o, &d), YK_EPROTO);
  ck_assert_msg(strstr(d.msg, "trailing"), "%s", d.msg);
  /* blob longer than the payload */
  uint8_t p4[8] = {0, 0, 0, 0, 0xff, 0xff, 0, 0};
  n = raw_frame(buf, YK_MSG_EXCHANGE, p4, sizeof p4);
  ck_assert_int_eq(yk_proto_decode(buf, n, KEY, KLEN, &o, &d), YK_EPROTO);
  /* header checks happen before the body arrives */
  ck_assert_int_eq(yk_proto_decode((const uint8_t *)"GET / HTTP/1.1", 14, KEY, KLEN, &o, &d), YK_EPROTO);
  ck_assert_msg(strstr(d.msg, "magic"), "%s", d.msg);
  uint8_t h[YK_PROTO_HDR] = {0};
  uint32_t magic = YK_PROTO_MAGIC;
  memcpy(h, &magic, 4);
  h[4] = 9;
  ck_assert_int_eq(yk_proto_decode(h, 5, KEY, KLEN, &o, &d), YK_EPROTO);
  ck_assert_msg(strstr(d.msg, "version 9"), "%s", d.msg);
  h[4] = YK_PROTO_VERSION;
  h[5] = 200;
  ck_assert_int_eq(yk_proto_decode(h, 6, KEY, KLEN, &o, &d), YK_EPROTO);
  h[5] = YK_MSG_HEARTBEAT;
  uint32_t huge = YK_PROTO_MAX_PAYLOAD + 1;
  memcpy(h + 8, &huge, 4);
  ck_assert_int_eq(yk_proto_decode(h, sizeof h, KEY, KLEN, &o, &d), YK_EPROTO);
  ck_assert_msg(strstr(d.msg, "exceeds"), "%s", d.msg);
}
END_TEST

START_TEST(replay) {
  yk_proto_peer p = {{0}, 0};
  memset(p.session, 7, 16);
  yk_msg m = {0};
  memset(m.session, 7, 16);
  yk_diag d = {0};
  m.seq = 1;
  ck_assert_int_eq(yk_proto_check_fresh(&p, &m, &d), 0);
  ck_assert_int_eq(yk_proto_check_fresh(&p, &m, &d), YK_EAUTH);
  ck_assert_msg(strstr(d.msg, "stale"), "%s", d.msg);
  m.seq = 5;
  ck_assert_int_eq(yk_proto_check_fresh(&p, &m, &d), 0);
  m.seq = 4;
  ck_assert_int_eq(yk_proto_check_fresh(&p, &m, &d), YK_EAUTH);
  m.seq = 6;
  m.session[15] = 8;
  ck_assert_int_eq(yk_proto_check_fresh(&p, &m, &d), YK_EAUTH);
  ck_assert_msg(strstr(d.msg, "session"), "%s", d.msg);
}
END_TEST

START_TEST(secret) {
  yk_config c;
  yk_config_defaults(&c);
  uint8_t key[YK_SECRET_MAX];
  size_t kl;
  yk_diag d = {0};
  unsetenv("YOKE_SECRET");
  ck_assert_int_eq(yk_daemon_secret_load(&c, key, &kl, &d), YK_ENOTFOUND);
  setenv("YOKE_SECRET", "short", 1);
  ck_assert_int_eq(yk_daemon_secret_load(&c, key, &kl, &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "at least 16"), "%s", d.msg);
  char hex[65];
  ck_assert_int_eq(yk_daemon_secret_generate(hex, &d), 0);
  ck_assert_uint_eq(strlen(hex), 64);
  setenv("YOKE_SECRET", hex, 1);
  ck_assert_int_eq(yk_daemon_secret_load(&c, key, &kl, &d), 0);
  ck_assert_uint_eq(kl, 32);
  setenv("YOKE_SECRET", "a passphrase that is long enough", 1);
  ck_assert_int_eq(yk_daemon_secret_load(&c, key, &kl, &d), 0);
  ck_assert_uint_eq(kl, 32);
  strcpy(c.coord.secret_file, "/nonexistent/secret");
  ck_assert_int_eq(yk_daemon_secret_load(&c, key, &kl, &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "coord.secret_file"), "%s", d.msg);
  unsetenv("YOKE_SECRET");
}
END_TEST

/* ------------------------------------------------------- live coordinator */

typedef struct {
  uv_loop_t loop;
  uv_async_t stop;
  yk_coord *co;
  int port;
  yk_logger lg;
} coord_thread;

static void on_stop(uv_async_t *a) {
  coord_thread *ct = a->data;
  yk_coord_close(ct->co);
  uv_close((uv_handle_t *)a, NULL);
}

static void run_loop(void *arg) {
  coord_thread *ct = arg;
  uv_run(&ct->loop, UV_RUN_DEFAULT);
}

static int connect_to(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  return fd;
}

/* Read one frame (decoded with key) within 3 s; returns bytes used, or <0. */
static long read_frame(int fd, const uint8_t *key, yk_msg *m, uint8_t *buf, size_t *have) {
  yk_diag d = {0};
  for (int tries = 0; tries < 300; tries++) {
    long r = yk_proto_decode(buf, *have, key, KLEN, m, &d);
    if (r != 0) return r;
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 10) <= 0) continue;
    ssize_t n = recv(fd, buf + *have, 65536 - *have, 0);
    if (n <= 0) return YK_ECLOSED;
    *have += (size_t)n;
  }
  return YK_ETIMEDOUT;
}

/* 1 if the peer closes the connection within 3 s. */
static int closed_by_peer(int fd) {
  char b[256];
  for (int i = 0; i < 300; i++) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 10) <= 0) continue;
    ssize_t n = recv(fd, b, sizeof b, 0);
    if (n == 0 || n < 0) return 1;
  }
  return 0;
}

/* Connect, take the CHALLENGE, return the session to use. */
static int open_session(int port, uint8_t session[16], uint64_t *seq) {
  int fd = connect_to(port);
  uint8_t buf[65536];
  size_t have = 0;
  yk_msg m;
  long r = read_frame(fd, KEY, &m, buf, &have);
  ck_assert_msg(r > 0, "no CHALLENGE: %ld", r);
  ck_assert_int_eq(m.type, YK_MSG_CHALLENGE);
  memcpy(session, m.session, 8);
  memset(session + 8, 0x5a, 8);
  *seq = 0;
  return fd;
}

static void send_msg(int fd, yk_msg *m, const uint8_t *key, const uint8_t session[16], uint64_t seq,
                     uint8_t **keep, size_t *keep_len) {
  m->seq = seq;
  memcpy(m->session, session, 16);
  size_t len;
  uint8_t *f = enc(m, key, &len);
  ck_assert_int_eq(send(fd, f, len, MSG_NOSIGNAL), (ssize_t)len);
  if (keep) *keep = f, *keep_len = len;
  else free(f);
}

static int status_ok(int port) {
  uint8_t s[16];
  uint64_t seq;
  int fd = open_session(port, s, &seq);
  yk_msg q = {0};
  q.type = YK_MSG_STATUS_REQ;
  send_msg(fd, &q, KEY, s, 1, NULL, NULL);
  uint8_t buf[65536];
  size_t have = 0;
  yk_msg m;
  long r = read_frame(fd, KEY, &m, buf, &have);
  close(fd);
  int ok = r > 0 && m.type == YK_MSG_STATUS && m.world == 2;
  if (r > 0) yk_msg_free(&m);
  return ok;
}

START_TEST(coordinator_refuses_bad_clients) {
  coord_thread ct;
  memset(&ct, 0, sizeof ct);
  yk_logger_init(&ct.lg, -1, YK_LOG_INFO, stderr);
  uv_loop_init(&ct.loop);
  yk_coord_opts o = {0};
  o.bind_host = "127.0.0.1";
  o.world = 2;
  o.heartbeat_timeout_ms = 5000;
  o.key = KEY;
  o.key_len = KLEN;
  o.log = &ct.lg;
  yk_diag d = {0};
  ck_assert_msg(yk_coord_start(&ct.loop, &o, &ct.co, &d) == 0, "%s", d.msg);
  ct.port = yk_coord_port(ct.co);
  uv_async_init(&ct.loop, &ct.stop, on_stop);
  ct.stop.data = &ct;
  uv_thread_t th;
  uv_thread_create(&th, run_loop, &ct);

  ck_assert(status_ok(ct.port));

  /* wrong secret: the CHALLENGE does not verify for us, and our REGISTER is
   * refused and the connection dropped */
  {
    int fd = connect_to(ct.port);
    uint8_t buf[65536];
    size_t have = 0;
    yk_msg m;
    ck_assert_int_eq(read_frame(fd, BADKEY, &m, buf, &have), YK_EAUTH);
    uint8_t s[16] = {0};
    memcpy(s, buf + 24, 8);
    yk_msg r = sample_register();
    r.world = 2;
    send_msg(fd, &r, BADKEY, s, 1, NULL, NULL);
    ck_assert(closed_by_peer(fd));
    close(fd);
  }
  /* random bytes */
  {
    int fd = connect_to(ct.port);
    uint8_t junk[3000];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(i * 131 + 7);
    send(fd, junk, sizeof junk, MSG_NOSIGNAL);
    ck_assert(closed_by_peer(fd));
    close(fd);
  }
  /* a truncated frame, then hang up */
  {
    uint8_t s[16];
    uint64_t seq;
    int fd = open_session(ct.port, s, &seq);
    yk_msg r = sample_register();
    r.world = 2;
    r.seq = 1;
    memcpy(r.session, s, 16);
    size_t len;
    uint8_t *f = enc(&r, KEY, &len);
    send(fd, f, len / 2, MSG_NOSIGNAL);
    free(f);
    close(fd);
  }
  /* replay within a connection, and onto another connection */
  {
    uint8_t s[16];
    uint64_t seq;
    int fd = open_session(ct.port, s, &seq);
    yk_msg q = {0};
    q.type = YK_MSG_STATUS_REQ;
    uint8_t *frame;
    size_t flen;
    send_msg(fd, &q, KEY, s, 1, &frame, &flen);
    uint8_t buf[65536];
    size_t have = 0;
    yk_msg m;
    long used = read_frame(fd, KEY, &m, buf, &have);
    ck_assert_msg(used > 0 && m.type == YK_MSG_STATUS, "no STATUS: %ld", used);
    yk_msg_free(&m);
    ck_assert_int_eq(send(fd, frame, flen, MSG_NOSIGNAL), (ssize_t)flen);
    ck_assert(closed_by_peer(fd));
    close(fd);
    uint8_t s2[16];
    int fd2 = open_session(ct.port, s2, &seq);
    ck_assert_int_eq(send(fd2, frame, flen, MSG_NOSIGNAL), (ssize_t)flen);
    ck_assert(closed_by_peer(fd2));
    close(fd2);
    free(frame);
  }
  /* a client that skips REGISTER */
  {
    uint8_t s[16];
    uint64_t seq;
    int fd = open_session(ct.port, s, &seq);
    yk_msg hb = {0};
    hb.type = YK_MSG_HEARTBEAT;
    send_msg(fd, &hb, KEY, s, 1, NULL, NULL);
    uint8_t buf[65536];
    size_t have = 0;
    yk_msg m;
    long r = read_frame(fd, KEY, &m, buf, &have);
    ck_assert_msg(r > 0 && m.type == YK_MSG_ERROR, "expected ERROR, got %ld", r);
    ck_assert_msg(strstr(m.text, "not registered"), "%s", m.text);
    close(fd);
  }
  /* a rank claiming the wrong world size is refused with a reason */
  {
    uint8_t s[16];
    uint64_t seq;
    int fd = open_session(ct.port, s, &seq);
    yk_msg r = sample_register();
    r.world = 5;
    send_msg(fd, &r, KEY, s, 1, NULL, NULL);
    uint8_t buf[65536];
    size_t have = 0;
    yk_msg m;
    long rr = read_frame(fd, KEY, &m, buf, &have);
    ck_assert_msg(rr > 0 && m.type == YK_MSG_ERROR, "expected ERROR, got %ld", rr);
    ck_assert_msg(strstr(m.text, "expects 2"), "%s", m.text);
    close(fd);
  }
  /* and it still serves everyone else */
  ck_assert(status_ok(ct.port));
  int code;
  ck_assert_int_eq(yk_coord_finished(ct.co, &code), 0);
  uv_async_send(&ct.stop);
  uv_thread_join(&th);
  ck_assert_int_eq(uv_loop_close(&ct.loop), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("proto");
  TCase *t = tcase_create("all");
  tcase_set_timeout(t, 60);
  tcase_add_test(t, roundtrip);
  tcase_add_test(t, auth_and_tamper);
  tcase_add_test(t, malformed);
  tcase_add_test(t, replay);
  tcase_add_test(t, secret);
  tcase_add_test(t, coordinator_refuses_bad_clients);
  suite_add_tcase(s, t);
  SRunner *r = srunner_create(s);
  srunner_run_all(r, CK_NORMAL);
  int failed = srunner_ntests_failed(r);
  srunner_free(r);
  return failed ? 1 : 0;
}
