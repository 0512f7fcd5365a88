/* p2p.c - the bottom of the collectives: point-to-point calls under the
 * operation's deadline, control messages (ABORT, STUCK queries), failure
 * diagnosis, the per-operation header check, and the scratch every
 * algorithm borrows. Everything above (algorithms, the queue, creation)
 * reaches the transport through these functions.
 *
 * Failure handling (docs/collectives.md, "Error semantics"):
 *  - every point-to-point wait runs under the operation's deadline;
 *  - at deadline - grace a waiting rank sends STUCK_Q to every peer; each
 *    live peer answers with whom it waits for (or that it is idle). The
 *    chain "I wait for A, A waits for B, B does not answer" names B, the
 *    dead or silent rank, even for ranks not connected to it;
 *  - a rank that finds an error (transport error, mismatch, culprit) sends
 *    ABORT with its message to every peer, which adopt it at once; so every
 *    rank reports the same culprit, within the deadline. */
#include <errno.h>
#include <signal.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coll_internal.h"

/* ---- names ------------------------------------------------------------- */

static const char *const redop_names[] = {"sum", "avg", "max", "min"};

const char *yk_redop_name(yk_redop op) { return (unsigned)op < YK_OP_COUNT_ ? redop_names[op] : "?"; }
int yk_redop_parse(const char *s, yk_redop *out) {
  for (int i = 0; i < YK_OP_COUNT_; i++)
    if (s && !strcmp(s, redop_names[i])) return *out = (yk_redop)i, 0;
  return YK_EINVAL;
}
const char *coll_opk_name(int k) {
  switch (k) {
  case OPK_ALLREDUCE: return "allreduce";
  case OPK_REDUCE_SCATTER: return "reduce_scatter";
  case OPK_ALLGATHER: return "allgather";
  case OPK_BROADCAST: return "broadcast";
  case OPK_BARRIER: return "barrier";
  case OPK_REDUCE_OWNED: return "reduce_owned";
  }
  return "?";
}

/* ---- scratch ----------------------------------------------------------- */

static void *grow(void **p, size_t *have, size_t want) {
  if (want <= *have) return *p;
  yk_free(*p);
  *p = yk_alloc(want);
  *have = *p ? want : 0;
  return *p;
}
void *coll_stage(yk_comm *c, size_t bytes) { return grow(&c->stage, &c->stage_bytes, bytes ? bytes : 64); }
void *coll_work(yk_comm *c, size_t bytes) { return grow(&c->work, &c->work_bytes, bytes ? bytes : 64); }

/* n cleared requests from a pool that only grows. */
static xreq *pool(xreq **p, size_t *have, size_t n) {
  if (n > *have) {
    free(*p);
    *p = calloc(n, sizeof(xreq));
    *have = *p ? n : 0;
    if (!*p) return NULL;
  }
  memset(*p, 0, n * sizeof(xreq));
  return *p;
}
xreq *coll_xreqs(yk_comm *c, size_t n) { return pool(&c->xreqs, &c->nxreqs, n); }
xreq *coll_xreqs2(yk_comm *c, size_t n) { return pool(&c->xreqs2, &c->nxreqs2, n); }

uint64_t coll_data_tag(yk_comm *c, uint32_t seq, int sub) {
  return coll_tag(TAG_DATA, c->epoch, c->comm_id, (seq << 8) | (uint32_t)(sub & 0xff));
}

/* ---- point-to-point wrappers -------------------------------------------- */

int coll_set_broken(yk_comm *c, int rc, const yk_diag *d) {
  pthread_mutex_lock(&c->mu);
  if (!atomic_load(&c->broken)) {
    c->broken_rc = rc;
    if (d) c->broken_diag = *d;
    c->broken_diag.code = rc;
    atomic_store(&c->broken, 1);
  }
  pthread_mutex_unlock(&c->mu);
  return rc;
}

/* 1 if `peer` is a process on this host that no longer exists. */
static int peer_gone(yk_comm *c, int peer) {
  if (!c->pids || peer < 0 || peer >= c->size || !c->pids[peer]) return 0;
  return kill((pid_t)c->pids[peer], 0) != 0 && errno == ESRCH;
}

static void send_ctrl(yk_comm *c, int to, const coll_ctrl *m) {
  if (to == c->rank || peer_gone(c, to)) return; /* never touch a dead peer's queues (shm locks) */
  xreq *r = &c->ctrl_sends[to];
  if (r->used && !r->done) {
    c->x->ops->test(c->x, r);
    if (!r->done) return; /* previous one still in flight (peer dead?): skip */
  }
  c->ctrl_sbuf[to] = *m;
  memset(r, 0, sizeof *r);
  r->used = 1;
  uint64_t tag = coll_tag(TAG_CTRL, c->epoch, c->comm_id, 0);
  if (c->x->ops->isend(c->x, c->xrank[to], tag, &c->ctrl_sbuf[to], sizeof(coll_ctrl), r)) r->done = 1;
}

static void ctrl_fill(yk_comm *c, coll_ctrl *m, int type, int culprit, int waiting_for, int code, const char *msg) {
  memset(m, 0, sizeof *m);
  m->magic = COLL_WIRE_MAGIC;
  m->version = COLL_WIRE_VERSION;
  m->type = (uint16_t)type;
  m->from = c->rank;
  m->culprit = culprit;
  m->waiting_for = waiting_for;
  m->code = code;
  m->seq = c->seq;
  if (msg) snprintf(m->msg, sizeof m->msg, "%s", msg);
}

static void broadcast_abort(yk_comm *c, int culprit, int code, const char *msg) {
  coll_ctrl m;
  if (c->culprit < 0 && culprit != c->rank) c->culprit = culprit;
  ctrl_fill(c, &m, CTRL_ABORT, culprit, -1, code, msg);
  for (int i = 0; i < c->size; i++) send_ctrl(c, i, &m);
  c->x->ops->progress(c->x, NULL);
}

/* Tell every peer (an ABORT carrying d's message, or `fallback` when the
 * caller keeps no diag) and break the communicator: every failure found
 * here ends so, and every rank then reports the same message. */
static int fail(yk_comm *c, int culprit, int rc, yk_diag *d, const char *fallback) {
  broadcast_abort(c, culprit, rc, d ? d->msg : fallback);
  return coll_set_broken(c, rc, d);
}

static void post_ctrl(yk_comm *c, int slot) {
  uint64_t tag = coll_tag(TAG_CTRL, c->epoch, c->comm_id, 0);
  memset(&c->ctrl_req[slot], 0, sizeof(xreq));
  if (c->x->ops->irecv(c->x, -1, tag, &c->ctrl_buf[slot], sizeof(coll_ctrl), &c->ctrl_req[slot]))
    c->ctrl_req[slot].done = 0;
}

/* Look at arrived control messages. Returns a YK_E* if an ABORT arrived
 * (message in d), else 0. `waiting_for` is what we would answer a STUCK_Q
 * with (-1 = idle). */
static int poll_ctrl(yk_comm *c, int waiting_for, yk_diag *d) {
  int rc = 0;
  for (int s = 0; s < COLL_CTRL_SLOTS && c->ctrl_posted; s++) {
    xreq *r = &c->ctrl_req[s];
    if (!r->done) c->x->ops->test(c->x, r);
    if (!r->done) continue;
    coll_ctrl m = c->ctrl_buf[s];
    int ok = !r->err && r->nbytes == sizeof m && m.magic == COLL_WIRE_MAGIC && m.from >= 0 && m.from < c->size;
    post_ctrl(c, s);
    if (!ok) continue;
    if (m.type == CTRL_ABORT) {
      if (c->culprit < 0 && m.culprit >= 0 && m.culprit < c->size) c->culprit = m.culprit;
      if (!rc) {
        m.msg[sizeof m.msg - 1] = 0;
        rc = yk_errorf(d, m.code ? m.code : YK_EABORTED, "%s", m.msg);
      }
    } else if (m.type == CTRL_STUCK) {
      /* a query (waiting_for encodes the asker's own wait, we record it) */
      c->stuck_for[m.from] = m.waiting_for;
      c->stuck_hdr[m.from].seq = m.seq;
      if (m.culprit == -3) { /* -3: this is a query, answer it */
        coll_ctrl a;
        ctrl_fill(c, &a, CTRL_STUCK, -4, waiting_for, 0, NULL);
        send_ctrl(c, m.from, &a);
      }
    }
  }
  return rc;
}

/* Deadline reached while waiting for `peer`: ask everybody what they wait for
 * and follow the chain to the rank that does not answer. */
static int diagnose(yk_comm *c, int peer, yk_diag *d) {
  for (int i = 0; i < c->size; i++) c->stuck_for[i] = -2;
  c->stuck_for[c->rank] = peer;
  coll_ctrl q;
  ctrl_fill(c, &q, CTRL_STUCK, -3, peer, 0, NULL);
  for (int i = 0; i < c->size; i++) send_ctrl(c, i, &q);
  int rc;
  while (yk_now_ns() < c->op_deadline) {
    c->x->ops->progress(c->x, NULL);
    if ((rc = poll_ctrl(c, peer, d))) return coll_set_broken(c, rc, d);
    /* everybody answered: no dead rank, no need to wait longer */
    int all = 1;
    for (int i = 0; i < c->size; i++) all &= c->stuck_for[i] != -2;
    if (all) break;
    sched_yield();
  }
  /* Follow the chain from peer; a local process that is gone never answers. */
  for (int i = 0; i < c->size; i++)
    if (peer_gone(c, i)) c->stuck_for[i] = -2;
  int x = peer, steps = 0;
  while (steps++ < c->size && x >= 0 && c->stuck_for[x] >= 0 && c->stuck_for[x] != x) x = c->stuck_for[x];
  if (x >= 0 && c->stuck_for[x] == -2) {
    rc = yk_errorf(d, YK_EPEERDEAD,
                   "rank %d (host %s) did not respond within comm.timeout_ms=%llu ms during %s #%u on rank %d "
                   "(host %s): it died or hangs; check its log",
                   x, coll_host(c, x), (unsigned long long)c->timeout_ms, "operation", c->seq, c->rank,
                   coll_host(c, c->rank));
    return fail(c, x, rc, d, "peer dead");
  } else if (x >= 0 && c->stuck_for[x] == -1) {
    rc = yk_errorf(d, YK_EMISMATCH,
                   "rank %d (host %s) is alive but not inside collective #%u (its last sequence %u) while rank %d "
                   "waits for it: the ranks called different numbers of collectives",
                   x, coll_host(c, x), c->seq, c->stuck_hdr[x].seq, c->rank);
    return fail(c, x, rc, d, "mismatch");
  } else {
    rc = yk_errorf(d, YK_ETIMEDOUT,
                   "collective #%u timed out after comm.timeout_ms=%llu ms on rank %d (host %s) waiting for rank %d "
                   "(host %s); all ranks are alive and waiting on each other",
                   c->seq, (unsigned long long)c->timeout_ms, c->rank, coll_host(c, c->rank), peer, coll_host(c, peer));
    return fail(c, peer, rc, d, "timeout");
  }
}

/* A peer failed or vanished; it may have done so because of somebody else
 * and told us (it sends ABORT before it exits): give that notice a moment
 * to arrive. Returns the adopted error, or 0. */
static int await_explanation(yk_comm *c, int peer, yk_diag *d) {
  uint64_t until = yk_now_ns() + 150000000ull;
  while (yk_now_ns() < until) {
    c->x->ops->progress(c->x, NULL);
    int arc = poll_ctrl(c, peer, d);
    if (arc) return coll_set_broken(c, arc, d);
    sched_yield();
  }
  return 0;
}

static int gone_error(yk_comm *c, int peer, yk_diag *d) {
  int arc = await_explanation(c, peer, d);
  if (arc) return arc;
  int rc = yk_errorf(d, YK_EPEERDEAD, "rank %d (host %s) died: its process %lld is gone (seen by rank %d during collective #%u)",
                     peer, coll_host(c, peer), (long long)c->pids[peer], c->rank, c->seq);
  return fail(c, peer, rc, d, "peer died");
}

int coll_isend(yk_comm *c, int peer, uint64_t tag, const void *buf, size_t n, xreq *r, yk_diag *d) {
  memset(r, 0, sizeof *r);
  c->cur_peer = peer;
  if (peer_gone(c, peer)) return gone_error(c, peer, d);
  int rc = c->x->ops->isend(c->x, c->xrank[peer], tag, buf, n, r);
  if (rc) {
    rc = yk_errorf(d, rc, "send to rank %d (host %s) failed: %s", peer, coll_host(c, peer), r->errmsg);
    return fail(c, peer, rc, d, "send failed");
  }
  return 0;
}

/* Cancel whatever the transport may still write into: receives of a failed
 * operation (their buffers belong to the caller, who may free them once we
 * return). Bounded by 300 ms. */
static void cancel_and_drain(yk_comm *c, xreq **rs, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (rs[i] && !rs[i]->done) c->x->ops->cancel(c->x, rs[i]);
  uint64_t until = yk_now_ns() + 300000000ull;
  for (;;) {
    int pending = 0;
    c->x->ops->progress(c->x, NULL);
    for (size_t i = 0; i < n; i++) {
      if (!rs[i] || rs[i]->done) continue;
      c->x->ops->test(c->x, rs[i]);
      pending += !rs[i]->done;
    }
    if (!pending || yk_now_ns() >= until) break;
    sched_yield();
  }
}

void coll_drain_posted(yk_comm *c) { cancel_and_drain(c, c->posted, c->nposted); }

int coll_irecv(yk_comm *c, int peer, uint64_t tag, void *buf, size_t n, xreq *r, yk_diag *d) {
  memset(r, 0, sizeof *r);
  c->cur_peer = peer;
  if (c->nposted == c->capposted) {
    size_t nc = c->capposted ? c->capposted * 2 : 256;
    xreq **np = realloc(c->posted, nc * sizeof *np);
    if (!np) return yk_errorf(d, YK_ENOMEM, "out of memory");
    c->posted = np;
    c->capposted = nc;
  }
  c->posted[c->nposted++] = r;
  int rc = c->x->ops->irecv(c->x, c->xrank[peer], tag, buf, n, r);
  if (rc) {
    rc = yk_errorf(d, rc, "receive from rank %d (host %s) failed: %s", peer, coll_host(c, peer), r->errmsg);
    return fail(c, peer, rc, d, "recv failed");
  }
  return 0;
}

/* Control messages (an ABORT from a peer; answers to STUCK queries) and a
 * local yk_comm_abort: 0, or the error that breaks the communicator. */
static int check_notices(yk_comm *c, int peer, yk_diag *d) {
  int rc;
  if ((rc = poll_ctrl(c, peer, d))) return coll_set_broken(c, rc, d);
  if (atomic_load(&c->abort_req)) {
    rc = yk_errorf(d, YK_EABORTED, "communicator aborted on rank %d (host %s): %s", c->rank, coll_host(c, c->rank),
                   c->abort_reason);
    return fail(c, c->rank, rc, d, "aborted");
  }
  return 0;
}

static int wait_impl(yk_comm *c, xreq *r, int peer, int trunc_ok, yk_diag *d);
int coll_wait(yk_comm *c, xreq *r, int peer, yk_diag *d) { return wait_impl(c, r, peer, 0, d); }
static int coll_wait_trunc(yk_comm *c, xreq *r, int peer, yk_diag *d) { return wait_impl(c, r, peer, 1, d); }

static int wait_impl(yk_comm *c, xreq *r, int peer, int trunc_ok, yk_diag *d) {
  unsigned spins = 0;
  for (;;) {
    if (r->done) {
      if (!r->err || (trunc_ok && r->err == YK_EPROTO)) return 0;
      /* The peer may have failed because of somebody else and told us so:
       * give its ABORT a moment to arrive before blaming the peer. */
      int arc = await_explanation(c, peer, d);
      if (arc) return arc;
      int code = r->err == YK_ECLOSED || r->err == YK_EPEERDEAD ? YK_EPEERDEAD : r->err;
      int rc = yk_errorf(d, code, "transport error with rank %d (host %s) during collective #%u on rank %d: %s",
                         peer, coll_host(c, peer), c->seq, c->rank, r->errmsg[0] ? r->errmsg : yk_strerror(r->err));
      return fail(c, peer, rc, d, "transport error");
    }
    yk_diag pd = {0};
    int rc = c->x->ops->progress(c->x, &pd);
    if (rc) {
      rc = yk_errorf(d, rc, "transport failure on rank %d while waiting for rank %d (host %s): %s", c->rank, peer,
                     coll_host(c, peer), yk_diag_msg(&pd, rc));
      return fail(c, peer, rc, d, "transport failure");
    }
    c->x->ops->test(c->x, r);
    if (r->done) continue;
    if ((rc = check_notices(c, peer, d))) return rc;
    if (++spins > 64) {
      if ((spins & 63) == 0) {
        if (peer_gone(c, peer)) return gone_error(c, peer, d);
        if (yk_now_ns() >= c->stall_deadline) return diagnose(c, peer, d);
      }
      sched_yield();
    }
  }
}

/* A spin-wait hint to the core (lets the sibling hyper-thread run). */
static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

int coll_fail(yk_comm *c, int culprit, int rc, yk_diag *d) {
  return fail(c, culprit, rc, d, "failure");
}

int coll_peer_gone(yk_comm *c, int peer, yk_diag *d) { return gone_error(c, peer, d); }

/* Shared-memory wait: spin briefly (a peer a few microseconds behind), then
 * yield, then sleep in short naps so that a rank waiting long for a slower
 * peer does not take the core that peer's compute threads need. */
int coll_wait_flag(yk_comm *c, const _Atomic uint64_t *flag, uint64_t want, int peer, yk_diag *d) {
  c->cur_peer = peer;
  unsigned spins = 0;
  uint64_t t0 = 0;
  for (;;) {
    if (atomic_load_explicit(flag, memory_order_acquire) >= want) return 0;
    cpu_relax();
    if ((++spins & 63) != 0) continue;
    uint64_t now = yk_now_ns();
    if (!t0) t0 = now;
    uint64_t waited = now - t0;
    /* pure spinning for the first 30 us: a peer a few microseconds behind
     * (the usual case of a small all-reduce) costs no system call */
    if (waited < 30000 && (spins & 1023) != 0) continue;
    int rc;
    c->x->ops->progress(c->x, NULL);
    if ((rc = check_notices(c, peer, d))) return rc;
    if (peer_gone(c, peer)) return gone_error(c, peer, d);
    if (now >= c->stall_deadline) return diagnose(c, peer, d);
    if (waited < 30000) continue;
    if (waited < 200000ull) {
      sched_yield();
      continue;
    }
    /* a long wait (a slower peer still computing): nap, so that this
     * thread does not take the core that peer's compute threads need. The
     * naps lengthen with the wait: each wake-up preempts a compute thread
     * on a host where ranks share cores (a data-parallel step's bucket
     * reductions wait tens of ms for the slower rank), while the added
     * latency stays a small fraction of what was already waited. */
    struct timespec ts = {0, waited < 2000000ull ? 50000 : waited < 20000000ull ? 500000 : 1000000};
    nanosleep(&ts, NULL);
  }
}

/* ---- header check ------------------------------------------------------- */

void coll_hdr_fill(yk_comm *c, struct yk_request *r, coll_hdr *h) {
  memset(h, 0, sizeof *h);
  h->magic = COLL_WIRE_MAGIC;
  h->version = COLL_WIRE_VERSION;
  h->kind = (uint8_t)r->kind;
  h->dtype = (uint8_t)r->dtype;
  h->op = (uint8_t)r->op;
  h->root = (uint16_t)r->root;
  h->seq = r->seq;
  h->rank = (uint32_t)c->rank;
  h->count = r->count;
  h->epoch = c->epoch;
}

static void hdr_describe(const coll_hdr *h, char *buf, size_t n) {
  snprintf(buf, n, "%s #%u count %llu %s %s root %u", coll_opk_name(h->kind), h->seq, (unsigned long long)h->count,
           yk_dtype_name((yk_dtype)h->dtype), yk_redop_name((yk_redop)h->op), h->root);
}

static int hdr_compare(yk_comm *c, const coll_hdr *mine, const coll_hdr *theirs, int peer, size_t got, yk_diag *d) {
  if (got != sizeof *theirs || theirs->magic != COLL_WIRE_MAGIC || theirs->version != COLL_WIRE_VERSION)
    return yk_errorf(d, YK_EPROTO,
                     "rank %d (host %s) sent a malformed operation header (%zu bytes, version %u): different yoke "
                     "versions?",
                     peer, coll_host(c, peer), got, theirs->version);
  if (theirs->kind != mine->kind || theirs->dtype != mine->dtype || theirs->count != mine->count ||
      theirs->seq != mine->seq || (mine->kind != OPK_ALLGATHER && mine->kind != OPK_BROADCAST && theirs->op != mine->op) ||
      (mine->kind == OPK_BROADCAST && theirs->root != mine->root)) {
    char a[160], b[160];
    hdr_describe(mine, a, sizeof a);
    hdr_describe(theirs, b, sizeof b);
    return yk_errorf(d, YK_EMISMATCH, "mismatched collectives: rank %d (host %s) called %s but rank %d (host %s) called %s",
                     c->rank, coll_host(c, c->rank), a, peer, coll_host(c, peer), b);
  }
  return 0;
}

int coll_hdr_check(yk_comm *c, const coll_hdr *mine, const coll_hdr *theirs, int peer, yk_diag *d) {
  int rc = hdr_compare(c, mine, theirs, peer, sizeof *theirs, d);
  if (rc) {
    return fail(c, peer, rc, d, "mismatch");
  }
  return 0;
}

int coll_wait_hdr(yk_comm *c, xreq *r, int peer, const coll_hdr *mine, const coll_hdr *theirs, size_t want,
                  yk_diag *d) {
  int rc = coll_wait_trunc(c, r, peer, d);
  if (rc) return rc;
  size_t got = r->nbytes < sizeof(coll_hdr) ? r->nbytes : sizeof(coll_hdr);
  rc = hdr_compare(c, mine, theirs, peer, got, d);
  if (!rc && (r->err || r->nbytes != want))
    rc = yk_errorf(d, YK_EPROTO, "rank %d (host %s) sent %zu bytes for collective #%u, expected %zu", peer,
                   coll_host(c, peer), r->nbytes, c->seq, want);
  if (rc) {
    return fail(c, peer, rc, d, "mismatch");
  }
  return 0;
}

/* Exchange headers with ring neighbours; both sides of any differing pair
 * see it. The header tag carries no sequence, so a skipped call shows as a
 * sequence mismatch instead of a hang. */
typedef struct hdrx {
  coll_hdr out, in[2];
  xreq s[2], rcv[2];
  int peers[2], n;
} hdrx;

int coll_hdr_exchange(yk_comm *c, struct yk_request *r, yk_diag *d) {
  /* kept with the communicator: after a failure the transport may still
   * write into it until the receives are drained */
  hdrx *h = c->hdrx;
  if (!h && !(h = c->hdrx = calloc(1, sizeof *h))) return yk_errorf(d, YK_ENOMEM, "out of memory");
  h->n = 0;
  if (c->size < 2) return 0;
  int next = (c->rank + 1) % c->size, prev = (c->rank + c->size - 1) % c->size;
  h->peers[0] = next;
  h->peers[1] = prev;
  h->n = next == prev ? 1 : 2;
  coll_hdr_fill(c, r, &h->out);
  uint64_t tag = coll_tag(TAG_HDR, c->epoch, c->comm_id, 0);
  for (int i = 0; i < h->n; i++) {
    int rc = coll_irecv(c, h->peers[i], tag, &h->in[i], sizeof(coll_hdr), &h->rcv[i], d);
    if (rc) return rc;
  }
  for (int i = 0; i < h->n; i++) {
    int rc = coll_isend(c, h->peers[i], tag, &h->out, sizeof(coll_hdr), &h->s[i], d);
    if (rc) return rc;
  }
  for (int i = 0; i < h->n; i++) {
    int rc = coll_wait(c, &h->rcv[i], h->peers[i], d);
    if (rc) return rc;
    rc = hdr_compare(c, &h->out, &h->in[i], h->peers[i], h->rcv[i].nbytes, d);
    if (rc) {
      return fail(c, h->peers[i], rc, d, "mismatch");
    }
  }
  return 0;
}

int coll_hdr_finish(yk_comm *c, yk_diag *d) {
  hdrx *h = c->hdrx;
  for (int i = 0; i < h->n; i++) {
    int rc = coll_wait(c, &h->s[i], h->peers[i], d);
    if (rc) return rc;
  }
  return 0;
}

/* ---- control messages outside an operation ------------------------------ */

void coll_ctrl_start(yk_comm *c) {
  for (int s = 0; s < COLL_CTRL_SLOTS; s++) post_ctrl(c, s);
  c->ctrl_posted = 1;
}

/* Between operations: answer peers' STUCK queries, adopt an ABORT, and send
 * the notice of a local yk_comm_abort (once). */
void coll_idle_poll(yk_comm *c) {
  yk_diag d = {0};
  c->x->ops->progress(c->x, NULL);
  int rc = poll_ctrl(c, -1, &d);
  if (rc) coll_set_broken(c, rc, &d);
  if (atomic_load(&c->abort_req) == 1) {
    atomic_store(&c->abort_req, 2);
    char msg[300];
    snprintf(msg, sizeof msg, "communicator aborted by rank %d (host %s): %s", c->rank, coll_host(c, c->rank),
             c->abort_reason);
    broadcast_abort(c, c->rank, YK_EABORTED, msg);
  }
}

void coll_ctrl_stop(yk_comm *c) {
  if (c->ctrl_sends) {
    /* Let our ABORT notices reach the live peers: a process that exits right
     * after a failure must not take its explanation with it. Bounded, and
     * the blamed (dead) rank is not waited for. */
    uint64_t until = yk_now_ns() + YK_MIN(500ull, c->timeout_ms / 4) * 1000000ull;
    for (;;) {
      int pending = 0;
      for (int i = 0; i < c->size; i++) {
        xreq *r = &c->ctrl_sends[i];
        if (!r->used || i == c->culprit) continue;
        if (!r->done) c->x->ops->test(c->x, r);
        pending += !r->done;
      }
      if (!pending || yk_now_ns() >= until) break;
      sched_yield();
    }
  }
  if (c->ctrl_posted) {
    xreq *rs[COLL_CTRL_SLOTS];
    for (int s = 0; s < COLL_CTRL_SLOTS; s++) rs[s] = &c->ctrl_req[s];
    cancel_and_drain(c, rs, COLL_CTRL_SLOTS);
  }
  if (c->ctrl_sends)
    for (int i = 0; i < c->size; i++)
      if (c->ctrl_sends[i].used && !c->ctrl_sends[i].done) c->x->ops->cancel(c->x, &c->ctrl_sends[i]);
}
