/* comm.c - communicators: creation, the comm thread and its queue, requests,
 * the per-operation header check, deadlines, failure diagnosis and abort.
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
#include <unistd.h>

#include "coll_internal.h"

static const char *const redop_names[] = {"sum", "avg", "max", "min"};
static const char *const algo_names[] = {"auto", "ring", "tree", "shm", "hier"};

const char *yk_redop_name(yk_redop op) { return (unsigned)op < YK_OP_COUNT_ ? redop_names[op] : "?"; }
int yk_redop_parse(const char *s, yk_redop *out) {
  for (int i = 0; i < YK_OP_COUNT_; i++)
    if (s && !strcmp(s, redop_names[i])) return *out = (yk_redop)i, 0;
  return YK_EINVAL;
}
const char *yk_algo_name(yk_algo a) { return (unsigned)a < YK_ALGO_COUNT_ ? algo_names[a] : "?"; }
int yk_algo_parse(const char *s, yk_algo *out) {
  for (int i = 0; i < YK_ALGO_COUNT_; i++)
    if (s && !strcmp(s, algo_names[i])) return *out = (yk_algo)i, 0;
  return YK_EINVAL;
}
static const char *opk_name(int k) {
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

void yk_comm_opts_default(yk_comm_opts *o) {
  memset(o, 0, sizeof *o);
  o->transport = "auto";
  o->algo = "auto";
  o->timeout_ms = 60000;
}

void yk_comm_opts_from_config(yk_comm_opts *o, const yk_config *c) {
  yk_comm_opts_default(o);
  o->transport = c->comm.transport;
  o->provider = c->comm.provider[0] ? c->comm.provider : NULL;
  o->algo = c->comm.algo;
  o->timeout_ms = (uint64_t)c->comm.timeout_ms;
  o->fusion_bytes = (size_t)c->comm.fusion_kb * 1024;
}

void yk_comm_range(const yk_comm *c, int rank, size_t count, size_t *off, size_t *len) {
  coll_range(count, c->size, rank, off, len);
}

int yk_comm_rank(const yk_comm *c) { return c->rank; }
int yk_comm_size(const yk_comm *c) { return c->size; }
uint32_t yk_comm_epoch(const yk_comm *c) { return c->epoch; }
const char *yk_comm_transport_name(const yk_comm *c) { return c->tname; }
const char *yk_comm_host(const yk_comm *c, int rank) {
  return rank >= 0 && rank < c->size ? c->hosts[rank] : "?";
}
int yk_comm_is_broken(const yk_comm *c) { return atomic_load(&((yk_comm *)c)->broken); }
void yk_comm_set_algo(yk_comm *c, yk_algo a) { c->algo = a; }

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

uint64_t coll_data_tag(yk_comm *c, uint32_t seq, int sub) {
  return coll_tag(TAG_DATA, c->epoch, c->comm_id, (seq << 8) | (uint32_t)(sub & 0xff));
}

/* ---- point-to-point wrappers -------------------------------------------- */

static int set_broken(yk_comm *c, int rc, const yk_diag *d) {
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

static const char *host_of(yk_comm *c, int r) { return yk_comm_host(c, r); }

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
    if ((rc = poll_ctrl(c, peer, d))) return set_broken(c, rc, d);
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
                   x, host_of(c, x), (unsigned long long)c->timeout_ms, "operation", c->seq, c->rank,
                   host_of(c, c->rank));
    broadcast_abort(c, x, rc, d ? d->msg : "peer dead");
  } else if (x >= 0 && c->stuck_for[x] == -1) {
    rc = yk_errorf(d, YK_EMISMATCH,
                   "rank %d (host %s) is alive but not inside collective #%u (its last sequence %u) while rank %d "
                   "waits for it: the ranks called different numbers of collectives",
                   x, host_of(c, x), c->seq, c->stuck_hdr[x].seq, c->rank);
    broadcast_abort(c, x, rc, d ? d->msg : "mismatch");
  } else {
    rc = yk_errorf(d, YK_ETIMEDOUT,
                   "collective #%u timed out after comm.timeout_ms=%llu ms on rank %d (host %s) waiting for rank %d "
                   "(host %s); all ranks are alive and waiting on each other",
                   c->seq, (unsigned long long)c->timeout_ms, c->rank, host_of(c, c->rank), peer, host_of(c, peer));
    broadcast_abort(c, peer, rc, d ? d->msg : "timeout");
  }
  return set_broken(c, rc, d);
}

/* A peer failed or vanished; it may have done so because of somebody else
 * and told us (it sends ABORT before it exits): give that notice a moment
 * to arrive. Returns the adopted error, or 0. */
static int await_explanation(yk_comm *c, int peer, yk_diag *d) {
  uint64_t until = yk_now_ns() + 150000000ull;
  while (yk_now_ns() < until) {
    c->x->ops->progress(c->x, NULL);
    int arc = poll_ctrl(c, peer, d);
    if (arc) return set_broken(c, arc, d);
    sched_yield();
  }
  return 0;
}

static int gone_error(yk_comm *c, int peer, yk_diag *d) {
  int arc = await_explanation(c, peer, d);
  if (arc) return arc;
  int rc = yk_errorf(d, YK_EPEERDEAD, "rank %d (host %s) died: its process %lld is gone (seen by rank %d during collective #%u)",
                     peer, host_of(c, peer), (long long)c->pids[peer], c->rank, c->seq);
  broadcast_abort(c, peer, rc, d ? d->msg : "peer died");
  return set_broken(c, rc, d);
}

int coll_isend(yk_comm *c, int peer, uint64_t tag, const void *buf, size_t n, xreq *r, yk_diag *d) {
  memset(r, 0, sizeof *r);
  c->cur_peer = peer;
  if (peer_gone(c, peer)) return gone_error(c, peer, d);
  int rc = c->x->ops->isend(c->x, c->xrank[peer], tag, buf, n, r);
  if (rc) {
    rc = yk_errorf(d, rc, "send to rank %d (host %s) failed: %s", peer, host_of(c, peer), r->errmsg);
    broadcast_abort(c, peer, rc, d ? d->msg : "send failed");
    return set_broken(c, rc, d);
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
    rc = yk_errorf(d, rc, "receive from rank %d (host %s) failed: %s", peer, host_of(c, peer), r->errmsg);
    broadcast_abort(c, peer, rc, d ? d->msg : "recv failed");
    return set_broken(c, rc, d);
  }
  return 0;
}

/* Control messages (an ABORT from a peer; answers to STUCK queries) and a
 * local yk_comm_abort: 0, or the error that breaks the communicator. */
static int check_notices(yk_comm *c, int peer, yk_diag *d) {
  int rc;
  if ((rc = poll_ctrl(c, peer, d))) return set_broken(c, rc, d);
  if (atomic_load(&c->abort_req)) {
    rc = yk_errorf(d, YK_EABORTED, "communicator aborted on rank %d (host %s): %s", c->rank, host_of(c, c->rank),
                   c->abort_reason);
    broadcast_abort(c, c->rank, rc, d ? d->msg : "aborted");
    return set_broken(c, rc, d);
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
                         peer, host_of(c, peer), c->seq, c->rank, r->errmsg[0] ? r->errmsg : yk_strerror(r->err));
      broadcast_abort(c, peer, rc, d ? d->msg : "transport error");
      return set_broken(c, rc, d);
    }
    yk_diag pd = {0};
    int rc = c->x->ops->progress(c->x, &pd);
    if (rc) {
      rc = yk_errorf(d, rc, "transport failure on rank %d while waiting for rank %d (host %s): %s", c->rank, peer,
                     host_of(c, peer), yk_diag_msg(&pd, rc));
      broadcast_abort(c, peer, rc, d ? d->msg : "transport failure");
      return set_broken(c, rc, d);
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
  broadcast_abort(c, culprit, rc, d ? d->msg : "failure");
  return set_broken(c, rc, d);
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
  snprintf(buf, n, "%s #%u count %llu %s %s root %u", opk_name(h->kind), h->seq, (unsigned long long)h->count,
           yk_dtype_name((yk_dtype)h->dtype), yk_redop_name((yk_redop)h->op), h->root);
}

static int hdr_compare(yk_comm *c, const coll_hdr *mine, const coll_hdr *theirs, int peer, size_t got, yk_diag *d) {
  if (got != sizeof *theirs || theirs->magic != COLL_WIRE_MAGIC || theirs->version != COLL_WIRE_VERSION)
    return yk_errorf(d, YK_EPROTO,
                     "rank %d (host %s) sent a malformed operation header (%zu bytes, version %u): different yoke "
                     "versions?",
                     peer, host_of(c, peer), got, theirs->version);
  if (theirs->kind != mine->kind || theirs->dtype != mine->dtype || theirs->count != mine->count ||
      theirs->seq != mine->seq || (mine->kind != OPK_ALLGATHER && mine->kind != OPK_BROADCAST && theirs->op != mine->op) ||
      (mine->kind == OPK_BROADCAST && theirs->root != mine->root)) {
    char a[160], b[160];
    hdr_describe(mine, a, sizeof a);
    hdr_describe(theirs, b, sizeof b);
    return yk_errorf(d, YK_EMISMATCH, "mismatched collectives: rank %d (host %s) called %s but rank %d (host %s) called %s",
                     c->rank, host_of(c, c->rank), a, peer, host_of(c, peer), b);
  }
  return 0;
}

int coll_hdr_check(yk_comm *c, const coll_hdr *mine, const coll_hdr *theirs, int peer, yk_diag *d) {
  int rc = hdr_compare(c, mine, theirs, peer, sizeof *theirs, d);
  if (rc) {
    broadcast_abort(c, peer, rc, d ? d->msg : "mismatch");
    return set_broken(c, rc, d);
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
                   host_of(c, peer), r->nbytes, c->seq, want);
  if (rc) {
    broadcast_abort(c, peer, rc, d ? d->msg : "mismatch");
    return set_broken(c, rc, d);
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

static int hdr_exchange(yk_comm *c, struct yk_request *r, hdrx *h, yk_diag *d) {
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
      broadcast_abort(c, h->peers[i], rc, d ? d->msg : "mismatch");
      return set_broken(c, rc, d);
    }
  }
  return 0;
}

static int hdr_finish(yk_comm *c, hdrx *h, yk_diag *d) {
  for (int i = 0; i < h->n; i++) {
    int rc = coll_wait(c, &h->s[i], h->peers[i], d);
    if (rc) return rc;
  }
  return 0;
}

/* ---- algorithm choice -------------------------------------------------- */

double coll_model_time(const coll_model *m, yk_algo a, int p, size_t bytes) {
  double n = (double)bytes, a_s = m->alpha_us * 1e-6, b_s = m->beta_ns * 1e-9, g_s = m->gamma_ns * 1e-9;
  if (p <= 1) return 0;
  int L = 0;
  while ((1 << L) < p) L++;
  int pof2 = 1 << (L - ((1 << L) != p ? 1 : 0));
  switch (a) {
  case YK_ALGO_RING:
    return 2.0 * (p - 1) * a_s + 2.0 * (p - 1) / p * n * b_s + (double)(p - 1) / p * n * g_s;
  case YK_ALGO_TREE: {
    /* the cheaper of recursive doubling and Rabenseifner */
    int lg = 0;
    while ((1 << lg) < pof2) lg++;
    double rd = lg * (a_s + n * b_s + n * g_s);
    double rhd = 2.0 * lg * a_s + 2.0 * (pof2 - 1) / pof2 * n * b_s + (double)(pof2 - 1) / pof2 * n * g_s;
    double t = rd < rhd ? rd : rhd;
    if (pof2 != p) t += 2 * (a_s + n * b_s) + n * g_s;
    return t;
  }
  default:
    return 1e30;
  }
}

int coll_tree_rhd(const coll_model *m, int p, size_t bytes) {
  double n = (double)bytes, a_s = m->alpha_us * 1e-6, b_s = m->beta_ns * 1e-9, g_s = m->gamma_ns * 1e-9;
  int pof2 = 1, lg = 0;
  while (pof2 * 2 <= p) pof2 *= 2, lg++;
  if (pof2 < 2) return 0;
  double rd = lg * (a_s + n * b_s + n * g_s);
  double rhd = 2.0 * lg * a_s + 2.0 * (pof2 - 1) / pof2 * n * b_s + (double)(pof2 - 1) / pof2 * n * g_s;
  return rhd < rd;
}

yk_algo yk_comm_pick_algo(const yk_comm *c, size_t bytes) {
  if (c->algo == YK_ALGO_RING || c->algo == YK_ALGO_TREE) return c->algo;
  /* Several nodes with several ranks each: the node's board around an
   * all-reduce across nodes on 1/ppn of the data (small messages: the
   * model's choice, one latency-bound exchange is cheaper). */
  if (c->hier_local && (c->algo == YK_ALGO_AUTO || c->algo == YK_ALGO_HIER) && bytes > c->hier_local->shm_oneshot)
    return YK_ALGO_HIER;
  /* One host: the shared board (one-shot for small messages, a direct
   * two-shot for large ones when the ranks can read each other's memory).
   * Hier is not built yet: it falls back to the model's choice. */
  if (c->shm_ok && (bytes <= c->shm_oneshot || c->cma_ok)) return YK_ALGO_SHM;
  double tr = coll_model_time(&c->model, YK_ALGO_RING, c->size, bytes);
  double tt = coll_model_time(&c->model, YK_ALGO_TREE, c->size, bytes);
  return tt < tr ? YK_ALGO_TREE : YK_ALGO_RING;
}

/* The algorithm of one queued operation. */
static yk_algo op_algo(const yk_comm *c, const struct yk_request *r) {
  if (c->size < 2) return YK_ALGO_RING;
  size_t bytes = r->count * yk_dtype_size(r->dtype);
  if (r->kind == OPK_ALLREDUCE) return yk_comm_pick_algo(c, bytes);
  if ((r->kind == OPK_REDUCE_SCATTER || r->kind == OPK_ALLGATHER || r->kind == OPK_REDUCE_OWNED) && c->shm_ok &&
      c->cma_ok &&
      (c->algo == YK_ALGO_AUTO || c->algo == YK_ALGO_SHM || c->algo == YK_ALGO_HIER))
    return YK_ALGO_SHM;
  return YK_ALGO_RING;
}

int coll_hier_allreduce(yk_comm *c, struct yk_request *r, yk_diag *d) {
  yk_comm *lc = c->hier_local, *xc = c->hier_cross;
  /* Each stage runs under the full comm.timeout_ms and its own watchdog (a
   * rank late by up to the deadline is tolerated in every stage); the
   * parent's watchdog would count the three together, so it stands down. */
  c->op_deadline = 0;
  size_t es = yk_dtype_size(r->dtype), off, len;
  /* avg: sums on both levels, one division by the world size at the end */
  yk_redop op = r->op == YK_OP_AVG ? YK_OP_SUM : r->op;
  coll_range(r->count, lc->size, lc->rank, &off, &len);
  char *mine = (char *)r->recvbuf + off * es;
  yk_comm *stage = lc;
  int rc = yk_comm_reduce_scatter_sync(lc, r->sendbuf, mine, r->count, r->dtype, op, d);
  if (!rc && len) rc = yk_comm_allreduce_sync(stage = xc, mine, mine, len, r->dtype, op, d);
  if (!rc && len && r->op == YK_OP_AVG) yk_coll_avg_finish(mine, len, r->dtype, c->size);
  if (!rc) rc = yk_comm_allgather_sync(stage = lc, mine, r->recvbuf, r->count, r->dtype, d);
  if (rc && d) {
    /* the stage numbers its ranks 0..n-1: say which ranks of ours they are */
    char map[160] = "", msg[sizeof d->msg];
    size_t o = 0;
    for (int i = 0; i < stage->size && o + 12 < sizeof map; i++)
      o += (size_t)snprintf(map + o, sizeof map - o, "%s%d", i ? "," : "", stage->xrank[i]);
    int h = snprintf(msg, sizeof msg, "hierarchical all-reduce #%u, %s stage (its ranks 0..%d are ranks %s here): ",
                     r->seq, stage == lc ? "node" : "cross-node", stage->size - 1, map);
    if (h > 0 && (size_t)h < sizeof msg) {
      memcpy(msg + h, d->msg, YK_MIN(strlen(d->msg) + 1, sizeof msg - (size_t)h));
      msg[sizeof msg - 1] = 0;
      memcpy(d->msg, msg, sizeof msg);
    }
  }
  if (rc) {
    /* the stage that failed has told its own peers; tell everybody */
    yk_comm_abort(lc, d && d->msg[0] ? d->msg : "hierarchical all-reduce failed");
    yk_comm_abort(xc, d && d->msg[0] ? d->msg : "hierarchical all-reduce failed");
    return coll_fail(c, c->culprit, rc, d);
  }
  return 0;
}

/* ---- executing one operation -------------------------------------------- */

static void exec_op(yk_comm *c, struct yk_request *r) {
  yk_diag *d = &r->diag;
  yk_diag_clear(d);
  if (atomic_load(&c->broken)) {
    pthread_mutex_lock(&c->mu);
    r->rc = c->broken_rc ? c->broken_rc : YK_EABORTED;
    *d = c->broken_diag;
    pthread_mutex_unlock(&c->mu);
    if (!d->msg[0]) snprintf(d->msg, sizeof d->msg, "communicator is broken by an earlier error; rebuild it");
    return;
  }
  c->seq = r->seq;
  /* Internal timeline inside the caller's deadline t: diagnosis starts at
   * stall_deadline, the verdict is due at op_deadline = t - reserve, and the
   * reserve covers the clean-up after it and the watchdog of
   * yk_request_wait (op_deadline + 500 ms), so every rank answers within t. */
  uint64_t now = yk_now_ns(), t = c->timeout_ms * 1000000ull;
  uint64_t reserve = YK_MIN(t / 5, 1000000000ull), ti = t - reserve;
  uint64_t grace = YK_MIN(ti / 4, 2000000000ull);
  c->op_deadline = now + ti;
  c->stall_deadline = now + ti - grace;
  hdrx *hp = c->hdrx;
  if (!hp) hp = c->hdrx = calloc(1, sizeof(hdrx));
  if (!hp) {
    r->rc = yk_errorf(d, YK_ENOMEM, "out of memory");
    return;
  }
  c->nposted = 0;
  yk_algo oa = op_algo(c, r);
  if (r->kind == OPK_REDUCE_OWNED && oa != YK_ALGO_SHM) {
    /* no board: an all-reduce gives every owner its part (and the rest) */
    r->kind = OPK_ALLREDUCE;
    oa = op_algo(c, r);
  }
  if (oa == YK_ALGO_SHM || oa == YK_ALGO_HIER) {
    /* the board (and the stages' own exchanges) carry the header check */
    r->rc = oa == YK_ALGO_SHM ? coll_shm_run(c, r, d) : coll_hier_allreduce(c, r, d);
    if (r->rc) set_broken(c, r->rc, d);
    return;
  }
  /* Header first, data after it matched: a mismatched count never reaches
   * a provider as a truncated message (libfabric shm does not fail those
   * cleanly). The tree all-reduce also carries the header in its data. */
  int tree = r->kind == OPK_ALLREDUCE && c->size > 1 &&
             yk_comm_pick_algo(c, r->count * yk_dtype_size(r->dtype)) == YK_ALGO_TREE;
  hp->n = 0;
  int rc = hdr_exchange(c, r, hp, d);
  if (!rc && c->size > 1) {
    switch (r->kind) {
    case OPK_ALLREDUCE:
      if (tree && coll_tree_rhd(&c->model, c->size, r->count * yk_dtype_size(r->dtype)))
        rc = coll_rhd_allreduce(c, r, d);
      else if (tree) rc = coll_rd_allreduce(c, r, d);
      else rc = coll_ring_allreduce(c, r, d);
      break;
    case OPK_REDUCE_SCATTER: rc = coll_ring_reduce_scatter(c, r, d); break;
    case OPK_ALLGATHER: rc = coll_ring_allgather(c, r, d); break;
    case OPK_BROADCAST: rc = coll_chain_broadcast(c, r, d); break;
    case OPK_BARRIER: rc = coll_dissemination_barrier(c, r, d); break;
    case OPK_REDUCE_OWNED: break; /* became an all-reduce above, or ran on the board */
    }
  } else if (!rc) {
    /* one rank: copy if out of place */
    size_t es = yk_dtype_size(r->dtype);
    if (r->kind == OPK_ALLREDUCE || r->kind == OPK_REDUCE_SCATTER || r->kind == OPK_ALLGATHER)
      if (r->count && r->sendbuf != r->recvbuf) memmove(r->recvbuf, r->sendbuf, r->count * es);
  }
  if (!rc) rc = hdr_finish(c, hp, d);
  r->rc = rc;
  if (rc) {
    set_broken(c, rc, d);
    cancel_and_drain(c, c->posted, c->nposted);
  }
  c->nposted = 0;
}

/* ---- comm thread and queue ---------------------------------------------- */

static void idle_poll(yk_comm *c) {
  yk_diag d = {0};
  c->x->ops->progress(c->x, NULL);
  int rc = poll_ctrl(c, -1, &d);
  if (rc) set_broken(c, rc, &d);
  if (atomic_load(&c->abort_req) == 1) {
    atomic_store(&c->abort_req, 2);
    char msg[300];
    snprintf(msg, sizeof msg, "communicator aborted by rank %d (host %s): %s", c->rank, host_of(c, c->rank),
             c->abort_reason);
    broadcast_abort(c, c->rank, YK_EABORTED, msg);
  }
}

/* Run one request with c->mu held on entry and on return: mark the
 * communicator busy, drop the lock while the operation runs, then mark the
 * request done and wake its waiters. Used by the comm thread and by the
 * inline fast path of an idle communicator. */
static void run_op_locked(yk_comm *c, struct yk_request *r) {
  c->busy = 1;
  r->state = 1;
  c->op_deadline = 0; /* exec_op sets it; the watchdog ignores 0 */
  pthread_mutex_unlock(&c->mu);
  exec_op(c, r);
  pthread_mutex_lock(&c->mu);
  c->busy = 0;
  r->state = 2;
  c->last_op_ns = yk_now_ns();
  /* Wake only if somebody waits: an inline operation with an idle comm
   * thread would otherwise pay a futex wake-up (and the comm thread's
   * round trip through the mutex) on every small all-reduce. */
  if (c->cv_waiters || c->qhead) pthread_cond_broadcast(&c->cv);
}

static void *comm_thread(void *arg) {
  yk_comm *c = arg;
  pthread_mutex_lock(&c->mu);
  for (;;) {
    while (!c->qhead && !c->stop) {
      if (!c->busy) {
        c->busy = 1;
        pthread_mutex_unlock(&c->mu);
        idle_poll(c);
        pthread_mutex_lock(&c->mu);
        c->busy = 0;
        if (c->cv_waiters) pthread_cond_broadcast(&c->cv);
        if (c->qhead || c->stop) break;
      }
      /* Idle: poll every 2 ms for the first 50 ms after an operation (rxm's
       * acknowledgements and connection set-up, peers' questions), then
       * every 20 ms: each wake-up preempts a compute thread on a host
       * where ranks share cores, and an idle data-parallel rank is
       * computing for seconds between steps. */
      uint64_t idle_ns = yk_now_ns() - c->last_op_ns;
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      ts.tv_nsec += idle_ns < 50000000ull ? 2000000 : 20000000;
      if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
      pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    }
    if (c->stop) break;
    if (c->busy) { /* an inline op runs on the caller thread */
      c->cv_waiters++;
      pthread_cond_wait(&c->cv, &c->mu);
      c->cv_waiters--;
      continue;
    }
    struct yk_request *r = c->qhead;
    c->qhead = r->next;
    if (!c->qhead) c->qtail = NULL;
    run_op_locked(c, r);
  }
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

static struct yk_request *req_new(yk_comm *c, opkind k) {
  struct yk_request *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->kind = k;
  pthread_mutex_lock(&c->mu);
  r->seq = ++c->next_seq;
  r->all_next = c->all;
  if (c->all) c->all->all_prev = r;
  c->all = r;
  pthread_mutex_unlock(&c->mu);
  return r;
}

static void req_free_locked(yk_comm *c, struct yk_request *r) {
  if (r->all_prev) r->all_prev->all_next = r->all_next;
  else c->all = r->all_next;
  if (r->all_next) r->all_next->all_prev = r->all_prev;
  free(r);
}

static void submit(yk_comm *c, struct yk_request *r) {
  pthread_mutex_lock(&c->mu);
  r->next = NULL;
  if (c->qtail) c->qtail->next = r;
  else c->qhead = r;
  c->qtail = r;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

/* Run r on the calling thread if the comm is idle, else queue it. Returns 1
 * if it ran inline (then it is complete). */
static int run_inline_or_submit(yk_comm *c, struct yk_request *r) {
  pthread_mutex_lock(&c->mu);
  /* libfabric calls can get stuck inside a provider (shm spins on a dead
   * peer's lock): keep them on the comm thread, under the watchdog of
   * yk_request_wait, so the caller always gets an answer. */
  /* Small board operations enter the provider only to poll control
   * messages, so they may run inline even over libfabric: that saves a
   * thread hand-off, which is most of a small all-reduce's latency. Large
   * ones stay on the comm thread, under the watchdog of yk_request_wait. */
  int board = c->shm_ok && op_algo(c, r) == YK_ALGO_SHM &&
              (c->inline_ok || r->count * yk_dtype_size(r->dtype) <= c->shm_oneshot);
  if (!c->qhead && !c->busy && (c->inline_ok || board)) {
    run_op_locked(c, r);
    pthread_mutex_unlock(&c->mu);
    return 1;
  }
  pthread_mutex_unlock(&c->mu);
  submit(c, r);
  return 0;
}

int yk_request_wait(yk_request **reqp, uint64_t deadline_ns, yk_diag *d) {
  if (!reqp || !*reqp) return yk_errorf(d, YK_EINVAL, "yk_request_wait: NULL request");
  struct yk_request *r = *reqp;
  yk_comm *c = r->comm;
  pthread_mutex_lock(&c->mu);
  while (r->state != 2) {
    uint64_t now = yk_now_ns();
    if (deadline_ns && now >= deadline_ns) {
      pthread_mutex_unlock(&c->mu);
      return yk_errorf(d, YK_ETIMEDOUT, "%s #%u still running at the caller's deadline", opk_name(r->kind), r->seq);
    }
    /* Watchdog: the executing thread checks its deadline in every wait; if
     * it is a second past it, it is stuck inside the transport (e.g. a
     * provider spinning on a dead peer's lock). Report instead of hanging;
     * the communicator is then unusable and yk_comm_destroy abandons it. */
    if (r->state == 1 && c->op_deadline && now > c->op_deadline + 500000000ull) {
      c->stuck = 1;
      if (!atomic_load(&c->broken)) {
        c->broken_rc = YK_EPEERDEAD;
        atomic_store(&c->broken, 1);
      }
      int peer = c->cur_peer;
      pthread_mutex_unlock(&c->mu);
      *reqp = NULL; /* stays on the communicator's list */
      return yk_errorf(d, YK_EPEERDEAD,
                       "%s #%u on rank %d (host %s) is stuck inside transport %s while talking to rank %d (host %s) "
                       "for more than comm.timeout_ms=%llu ms: that peer probably died",
                       opk_name(r->kind), r->seq, c->rank, host_of(c, c->rank), c->tname, peer, host_of(c, peer),
                       (unsigned long long)c->timeout_ms);
    }
    uint64_t until = now + 100000000ull;
    if (deadline_ns && deadline_ns < until) until = deadline_ns;
    struct timespec ts = {(time_t)(until / 1000000000ull), (long)(until % 1000000000ull)};
    c->cv_waiters++;
    pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    c->cv_waiters--;
  }
  int rc = r->rc;
  if (rc && d) *d = r->diag;
  if (d) d->code = rc;
  req_free_locked(c, r);
  pthread_mutex_unlock(&c->mu);
  *reqp = NULL;
  return rc;
}

int yk_request_test(yk_request **reqp, int *rcp, yk_diag *d) {
  if (!reqp || !*reqp) return 1;
  struct yk_request *r = *reqp;
  yk_comm *c = r->comm;
  pthread_mutex_lock(&c->mu);
  int done = r->state == 2;
  pthread_mutex_unlock(&c->mu);
  if (!done) return 0;
  int rc = yk_request_wait(reqp, 0, d);
  if (rcp) *rcp = rc;
  return 1;
}

/* ---- public operations -------------------------------------------------- */

static int check_common(yk_comm *c, yk_dtype t, yk_redop op, int need_op, yk_diag *d) {
  if (!c) return yk_errorf(d, YK_EINVAL, "collective called with a NULL communicator");
  if (t != YK_DT_F32 && t != YK_DT_F16 && t != YK_DT_BF16 && t != YK_DT_I32 && t != YK_DT_I64)
    return yk_errorf(d, YK_EINVAL, "dtype %s is not supported by collectives (use f32, f16, bf16, i32 or i64)",
                     yk_dtype_name(t));
  if (need_op && (unsigned)op >= YK_OP_COUNT_)
    return yk_errorf(d, YK_EINVAL, "reduction op %d is not one of sum, avg, max, min", (int)op);
  return 0;
}

static int start(yk_comm *c, opkind k, const void *sb, void *rb, size_t count, yk_dtype t, yk_redop op, int root,
                 yk_request **req, int sync, yk_diag *d) {
  struct yk_request *r = req_new(c, k);
  if (!r) return yk_errorf(d, YK_ENOMEM, "out of memory for a collective request");
  r->comm = c;
  r->sendbuf = sb;
  r->recvbuf = rb;
  r->count = count;
  r->dtype = t;
  r->op = op;
  r->root = root;
  if (!sync) {
    submit(c, r);
    *req = r;
    return 0;
  }
  run_inline_or_submit(c, r);
  return yk_request_wait(&r, 0, d);
}

int yk_comm_allreduce(yk_comm *c, const void *sb, void *rb, size_t count, yk_dtype t, yk_redop op, yk_request **req,
                      yk_diag *d) {
  int rc = check_common(c, t, op, 1, d);
  return rc ? rc : start(c, OPK_ALLREDUCE, sb, rb, count, t, op, 0, req, 0, d);
}
int yk_comm_allreduce_sync(yk_comm *c, const void *sb, void *rb, size_t count, yk_dtype t, yk_redop op, yk_diag *d) {
  int rc = check_common(c, t, op, 1, d);
  return rc ? rc : start(c, OPK_ALLREDUCE, sb, rb, count, t, op, 0, NULL, 1, d);
}
int yk_comm_reduce_scatter(yk_comm *c, const void *sb, void *rb, size_t count, yk_dtype t, yk_redop op,
                           yk_request **req, yk_diag *d) {
  int rc = check_common(c, t, op, 1, d);
  return rc ? rc : start(c, OPK_REDUCE_SCATTER, sb, rb, count, t, op, 0, req, 0, d);
}
int yk_comm_reduce_owned(yk_comm *c, void *buf, size_t first, size_t count, size_t total, yk_dtype t, yk_redop op,
                         yk_request **req, yk_diag *d) {
  int rc = check_common(c, t, op, 1, d);
  if (rc) return rc;
  if (first > total || count > total - first)
    return yk_errorf(d, YK_EINVAL, "reduce_owned: elements [%zu, %zu) are outside the vector of %zu", first,
                     first + count, total);
  struct yk_request *r = req_new(c, OPK_REDUCE_OWNED);
  if (!r) return yk_errorf(d, YK_ENOMEM, "out of memory for a collective request");
  r->comm = c;
  r->sendbuf = r->recvbuf = buf;
  r->count = count;
  r->dtype = t;
  r->op = op;
  r->first = first;
  r->total = total;
  submit(c, r);
  *req = r;
  return 0;
}

int yk_comm_reduce_scatter_sync(yk_comm *c, const void *sb, void *rb, size_t count, yk_dtype t, yk_redop op,
                                yk_diag *d) {
  int rc = check_common(c, t, op, 1, d);
  return rc ? rc : start(c, OPK_REDUCE_SCATTER, sb, rb, count, t, op, 0, NULL, 1, d);
}
int yk_comm_allgather(yk_comm *c, const void *sb, void *rb, size_t count, yk_dtype t, yk_request **req, yk_diag *d) {
  int rc = check_common(c, t, YK_OP_SUM, 0, d);
  return rc ? rc : start(c, OPK_ALLGATHER, sb, rb, count, t, YK_OP_SUM, 0, req, 0, d);
}
int yk_comm_allgather_sync(yk_comm *c, const void *sb, void *rb, size_t count, yk_dtype t, yk_diag *d) {
  int rc = check_common(c, t, YK_OP_SUM, 0, d);
  return rc ? rc : start(c, OPK_ALLGATHER, sb, rb, count, t, YK_OP_SUM, 0, NULL, 1, d);
}
static int check_root(yk_comm *c, int root, yk_diag *d) {
  if (root < 0 || root >= c->size)
    return yk_errorf(d, YK_EINVAL, "broadcast root %d is outside the communicator's ranks 0..%d", root, c->size - 1);
  return 0;
}
int yk_comm_broadcast(yk_comm *c, void *buf, size_t count, yk_dtype t, int root, yk_request **req, yk_diag *d) {
  int rc = check_common(c, t, YK_OP_SUM, 0, d);
  if (!rc) rc = check_root(c, root, d);
  return rc ? rc : start(c, OPK_BROADCAST, buf, buf, count, t, YK_OP_SUM, root, req, 0, d);
}
int yk_comm_broadcast_sync(yk_comm *c, void *buf, size_t count, yk_dtype t, int root, yk_diag *d) {
  int rc = check_common(c, t, YK_OP_SUM, 0, d);
  if (!rc) rc = check_root(c, root, d);
  return rc ? rc : start(c, OPK_BROADCAST, buf, buf, count, t, YK_OP_SUM, root, NULL, 1, d);
}
int yk_comm_barrier(yk_comm *c, yk_request **req, yk_diag *d) {
  if (!c) return yk_errorf(d, YK_EINVAL, "barrier on a NULL communicator");
  return start(c, OPK_BARRIER, NULL, NULL, 0, YK_DT_I32, YK_OP_SUM, 0, req, 0, d);
}
int yk_comm_barrier_sync(yk_comm *c, yk_diag *d) {
  if (!c) return yk_errorf(d, YK_EINVAL, "barrier on a NULL communicator");
  return start(c, OPK_BARRIER, NULL, NULL, 0, YK_DT_I32, YK_OP_SUM, 0, NULL, 1, d);
}

/* ---- creation / destruction -------------------------------------------- */

/* Say hello to every peer (ring neighbours only beyond 64 ranks) before the
 * first operation. Providers that connect lazily (shm maps the peer's
 * region when its first message is processed, rxm sets up a connection)
 * then have every path ready, so a rank that fails and exits right after
 * its ABORT notice still gets it delivered. */
static int handshake(yk_comm *c, yk_diag *d) {
  int p = c->size;
  if (p < 2) return 0;
  int *peers = calloc((size_t)p, sizeof(int)), np = 0;
  xreq *x = calloc((size_t)p * 2, sizeof(xreq));
  static const char hello[8] = "yk-hi";
  char *in = calloc((size_t)p, 8);
  if (!peers || !x || !in) {
    free(peers), free(x), free(in);
    return yk_errorf(d, YK_ENOMEM, "out of memory");
  }
  for (int i = 1; i < p; i++) {
    if (p > 64 && i != 1 && i != p - 1) continue;
    peers[np++] = (c->rank + i) % p;
  }
  uint64_t now = yk_now_ns(), t = c->timeout_ms * 1000000ull;
  c->op_deadline = now + t;
  c->stall_deadline = now + t - YK_MIN(t / 4, 2000000000ull);
  uint64_t tag = coll_tag(0, c->epoch, c->comm_id, 0x68690000u);
  int rc = 0;
  for (int i = 0; i < np && !rc; i++) rc = coll_irecv(c, (c->rank - (peers[i] - c->rank) + 2 * p) % p, tag, in + 8 * i, 8, &x[i], d);
  for (int i = 0; i < np && !rc; i++) rc = coll_isend(c, peers[i], tag, hello, sizeof hello, &x[np + i], d);
  for (int i = 0; i < np && !rc; i++) rc = coll_wait(c, &x[i], (c->rank - (peers[i] - c->rank) + 2 * p) % p, d);
  for (int i = 0; i < np && !rc; i++) rc = coll_wait(c, &x[np + i], peers[i], d);
  if (rc) {
    /* requests may still be posted: keep x alive with the communicator */
    c->hello_reqs = x;
    c->hello_buf = in;
    x = NULL;
    in = NULL;
  }
  free(peers), free(x), free(in);
  return rc;
}

static int comm_init_common(yk_comm *c, yk_diag *d) {
  pthread_mutex_init(&c->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&c->cv, &ca);
  pthread_condattr_destroy(&ca);
  c->ctrl_sends = calloc((size_t)c->size, sizeof(xreq));
  c->ctrl_sbuf = calloc((size_t)c->size, sizeof(coll_ctrl));
  c->stuck_for = calloc((size_t)c->size, sizeof(int));
  c->stuck_hdr = calloc((size_t)c->size, sizeof(coll_hdr));
  if (!c->ctrl_sends || !c->ctrl_sbuf || !c->stuck_for || !c->stuck_hdr)
    return yk_errorf(d, YK_ENOMEM, "out of memory creating a communicator of %d ranks", c->size);
  for (int s = 0; s < COLL_CTRL_SLOTS; s++) post_ctrl(c, s);
  c->ctrl_posted = 1;
  int rc = handshake(c, d);
  if (rc) return rc;
  if (pthread_create(&c->thread, NULL, comm_thread, c))
    return yk_errorf_sys(d, YK_ESYS, "cannot start the comm thread");
  c->thread_started = 1;
  return 0;
}

static int env_algo(const char *cfg, yk_algo *out, yk_diag *d) {
  const char *e = getenv("YK_ALGO");
  const char *s = e && *e ? e : cfg && *cfg ? cfg : "auto";
  if (yk_algo_parse(s, out))
    return yk_errorf(d, YK_ECONFIG, "%s='%s' is not an algorithm: use auto, ring, tree, shm or hier",
                     e && *e ? "YK_ALGO" : "comm.algo", s);
  return 0;
}

/* Hierarchical groups when the ranks span nodes and every node holds the
 * same number (2..64) of ranks: a communicator per node (with its board)
 * and one per local rank across the nodes. All ranks agree, or nobody uses
 * hier. */
static int hier_setup(yk_comm *c, yk_diag *d) {
  int n = c->size, nodes = 0, ppn = -1, even = 1, lrank = 0;
  for (int i = 0; i < n; i++) {
    if (c->node[i] != i) continue;
    nodes++;
    int cnt = 0;
    for (int j = 0; j < n; j++) cnt += c->node[j] == i;
    if (ppn < 0) ppn = cnt;
    even &= cnt == ppn;
  }
  for (int j = 0; j < c->rank; j++) lrank += c->node[j] == c->node[c->rank];
  if (nodes < 2 || !even || ppn < 2 || ppn > YK_COLL_MAX_SHM_RANKS) return 0;
  yk_comm *lc = NULL, *xc = NULL;
  int rc = yk_comm_split(c, c->node[c->rank], c->rank, &lc, d);
  if (!rc) rc = yk_comm_split(c, lrank, c->rank, &xc, d);
  int32_t ok = !rc && lc && xc && lc->shm_ok && lc->cma_ok;
  if (!rc) rc = yk_comm_allreduce_sync(c, &ok, &ok, 1, YK_DT_I32, YK_OP_MIN, d);
  if (rc || !ok) {
    yk_comm_destroy(xc);
    yk_comm_destroy(lc);
    if (!rc && c->rank == 0)
      yk_log(&c->log, YK_LOG_INFO, "collectives: %d nodes x %d ranks, but a node has no shared-memory board: no "
                                   "hierarchical all-reduce", nodes, ppn);
    return rc;
  }
  lc->algo = xc->algo = c->algo == YK_ALGO_HIER ? YK_ALGO_AUTO : c->algo;
  c->hier_local = lc;
  c->hier_cross = xc;
  return 0;
}

int yk_comm_create(const yk_comm_opts *opts_in, yk_bootstrap *b, yk_comm **out, yk_diag *d) {
  *out = NULL;
  yk_comm_opts opts;
  if (opts_in) opts = *opts_in;
  else yk_comm_opts_default(&opts);
  if (!b || b->size < 1 || b->rank < 0 || b->rank >= b->size)
    return yk_errorf(d, YK_EINVAL, "yk_comm_create: bad bootstrap (rank %d of %d)", b ? b->rank : -1,
                     b ? b->size : 0);
  yk_algo algo = YK_ALGO_AUTO;
  int rc = env_algo(opts.algo, &algo, d);
  if (rc) return rc;
  const char *tr = opts.transport && *opts.transport ? opts.transport : "auto";
  if (strcmp(tr, "auto") && strcmp(tr, "inproc") && strcmp(tr, "mpi") && strcmp(tr, "libfabric"))
    return yk_errorf(d, YK_ECONFIG, "comm.transport='%s' is unknown: use auto, inproc, mpi or libfabric", tr);
  yk_comm *c = calloc(1, sizeof *c);
  if (!c) return yk_errorf(d, YK_ENOMEM, "out of memory for a communicator");
  c->rank = b->rank;
  c->size = b->size;
  c->culprit = -1;
  c->epoch = opts.epoch;
  c->comm_id = 1;
  c->timeout_ms = opts.timeout_ms ? opts.timeout_ms : 60000;
  c->seg_bytes = opts.segment_bytes ? opts.segment_bytes : 256 * 1024;
  c->seg_explicit = opts.segment_bytes != 0;
  c->algo = algo;
  c->model = (coll_model){.alpha_us = 8, .beta_ns = 0.25, .gamma_ns = 0.15};
  if (opts.log) c->log = *opts.log;
  else yk_logger_init(&c->log, b->rank, YK_LOG_INFO, NULL);
  if (opts.model_file && *opts.model_file) {
    rc = coll_model_load(opts.model_file, &c->model, d);
    if (rc) goto fail;
  }
  c->xrank = calloc((size_t)c->size, sizeof(int));
  c->hosts = calloc((size_t)c->size, sizeof *c->hosts);
  if (!c->xrank || !c->hosts) {
    rc = yk_errorf(d, YK_ENOMEM, "out of memory for a communicator of %d ranks", c->size);
    goto fail;
  }
  for (int i = 0; i < c->size; i++) c->xrank[i] = i;
  /* identity: host name, network namespace, pid and pid namespace (so that
   * a peer on this host can be checked for liveness with kill(pid, 0)). Two
   * ranks share a host only if they also share the network namespace: a
   * container or a test host in its own namespace is treated as another
   * machine (the shm provider is not assumed to reach it). */
  typedef struct ident {
    char host[64];
    char netns[48];
    char pidns[48];
    int64_t pid;
  } ident;
  ident me, *ids = calloc((size_t)c->size, sizeof(ident));
  c->pids = calloc((size_t)c->size, sizeof(int64_t));
  if (!ids || !c->pids) {
    free(ids);
    rc = yk_errorf(d, YK_ENOMEM, "out of memory");
    goto fail;
  }
  memset(&me, 0, sizeof me);
  gethostname(me.host, sizeof me.host - 1);
  ssize_t nl = readlink("/proc/self/ns/pid", me.pidns, sizeof me.pidns - 1);
  if (nl < 0) me.pidns[0] = 0;
  nl = readlink("/proc/self/ns/net", me.netns, sizeof me.netns - 1);
  if (nl < 0) me.netns[0] = 0;
  me.pid = (int64_t)getpid();
  uint64_t dl = yk_deadline_in_ms(c->timeout_ms);
  rc = b->allgather(b, &me, sizeof me, ids, dl, d);
  if (rc) {
    free(ids);
    goto fail;
  }
  int same_host = 1;
  c->node = calloc((size_t)c->size, sizeof(int));
  if (!c->node) {
    free(ids);
    rc = yk_errorf(d, YK_ENOMEM, "out of memory");
    goto fail;
  }
  for (int i = 0; i < c->size; i++) {
    memcpy(c->hosts[i], ids[i].host, sizeof c->hosts[i]);
    same_host &= !strcmp(ids[i].host, ids[0].host) && !strcmp(ids[i].netns, ids[0].netns);
    /* a node: one host, network and pid namespace (an unknown pid namespace
     * makes a rank its own node) */
    c->node[i] = i;
    for (int j = 0; j < i && ids[i].pidns[0]; j++)
      if (!strcmp(ids[i].host, ids[j].host) && !strcmp(ids[i].netns, ids[j].netns) &&
          !strcmp(ids[i].pidns, ids[j].pidns)) {
        c->node[i] = j;
        break;
      }
    /* liveness by pid only for other processes in our host and pid namespace */
    int local = !strcmp(ids[i].host, me.host) && me.pidns[0] && !strcmp(ids[i].pidns, me.pidns);
    c->pids[i] = local && ids[i].pid != me.pid ? ids[i].pid : 0;
  }
  free(ids);
  if (!strcmp(tr, "auto")) tr = !strcmp(b->kind, "inproc") ? "inproc" : "libfabric";
  if (!strcmp(tr, "inproc")) rc = xport_inproc_create(b, &c->x, d);
  else if (!strcmp(tr, "mpi")) rc = xport_mpi_create(b, &c->x, d);
  else {
    const char *prov = opts.provider && *opts.provider ? opts.provider : same_host ? "shm" : "tcp;ofi_rxm";
    rc = xport_ofi_create(b, prov, c->timeout_ms, &c->x, d);
    /* Network providers: 1 MiB ring segments (per-message costs of rxm's
     * rendezvous over TCP dominate at 256 KiB); the board keeps 256 KiB
     * blocks, which stay in L2. */
    if (!opts.segment_bytes && strcmp(prov, "shm")) c->seg_bytes = 1024 * 1024;
  }
  if (rc) goto fail;
  c->x->same_host = same_host;
  c->inline_ok = strcmp(tr, "libfabric") != 0;
  snprintf(c->tname, sizeof c->tname, "%s", c->x->name);
  rc = comm_init_common(c, d);
  if (!rc) rc = coll_shm_setup(c, opts.shm_oneshot_bytes, d);
  if (!rc) rc = hier_setup(c, d);
  if (rc) goto fail;
  *out = c;
  return 0;
fail:
  yk_comm_destroy(c);
  return rc;
}

static uint32_t mix32(uint32_t a, uint32_t b) {
  uint32_t h = a * 0x9e3779b1u ^ (b + 0x7f4a7c15u + (a << 6) + (a >> 2));
  h ^= h >> 15;
  h *= 0x2c1b3c6du;
  h ^= h >> 12;
  return h;
}

int yk_comm_split(yk_comm *p, int colour, int key, yk_comm **out, yk_diag *d) {
  *out = NULL;
  int32_t mine[2] = {colour, key};
  int32_t *all = calloc((size_t)p->size * 2, sizeof(int32_t));
  if (!all) return yk_errorf(d, YK_ENOMEM, "out of memory splitting a communicator");
  size_t off, len;
  coll_range((size_t)p->size * 2, p->size, p->rank, &off, &len); /* each rank owns exactly its 2 ints */
  memcpy(all + off, mine, sizeof mine);
  int rc = yk_comm_allgather_sync(p, all + off, all, (size_t)p->size * 2, YK_DT_I32, d);
  uint32_t split_no = ++p->next_child_id;
  if (rc || colour < 0) {
    free(all);
    return rc;
  }
  int n = 0;
  for (int i = 0; i < p->size; i++) n += all[2 * i] == colour;
  yk_comm *c = calloc(1, sizeof *c);
  int *members = calloc((size_t)n, sizeof(int));
  if (!c || !members) {
    free(all), free(c), free(members);
    return yk_errorf(d, YK_ENOMEM, "out of memory splitting a communicator");
  }
  int k = 0;
  for (int i = 0; i < p->size; i++)
    if (all[2 * i] == colour) members[k++] = i;
  /* insertion sort by (key, parent rank) */
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0; j--) {
      int a = members[j - 1], bb = members[j];
      if (all[2 * a + 1] > all[2 * bb + 1] || (all[2 * a + 1] == all[2 * bb + 1] && a > bb)) {
        members[j - 1] = bb;
        members[j] = a;
      }
    }
  c->size = n;
  c->culprit = -1;
  c->xrank = calloc((size_t)n, sizeof(int));
  c->hosts = calloc((size_t)n, sizeof *c->hosts);
  c->pids = calloc((size_t)n, sizeof(int64_t));
  c->node = calloc((size_t)n, sizeof(int));
  if (!c->xrank || !c->hosts || !c->pids || !c->node) {
    free(all), free(members);
    yk_comm_destroy(c);
    return yk_errorf(d, YK_ENOMEM, "out of memory splitting a communicator");
  }
  for (int i = 0; i < n; i++) {
    if (members[i] == p->rank) c->rank = i;
    c->xrank[i] = p->xrank[members[i]];
    memcpy(c->hosts[i], p->hosts[members[i]], sizeof c->hosts[i]);
    if (c->pids) c->pids[i] = p->pids ? p->pids[members[i]] : 0;
    c->node[i] = p->node ? p->node[members[i]] : -1 - i;
  }
  free(all);
  free(members);
  c->x = p->x;
  c->inline_ok = p->inline_ok;
  atomic_fetch_add(&c->x->refs, 1);
  c->parent = p;
  c->epoch = p->epoch;
  c->comm_id = (mix32(mix32(p->comm_id, split_no), (uint32_t)colour) & 0xfffe) | 2; /* never 1 (the world) */
  c->timeout_ms = p->timeout_ms;
  c->seg_bytes = p->seg_bytes;
  c->seg_explicit = p->seg_explicit;
  c->algo = p->algo;
  c->model = p->model;
  c->log = p->log;
  snprintf(c->tname, sizeof c->tname, "%s", p->tname);
  rc = comm_init_common(c, d);
  if (!rc) rc = coll_shm_setup(c, p->shm_oneshot, d);
  if (rc) {
    yk_comm_destroy(c);
    return rc;
  }
  *out = c;
  return 0;
}

void yk_comm_abort(yk_comm *c, const char *reason) {
  if (!c) return;
  yk_comm_abort(c->hier_local, reason);
  yk_comm_abort(c->hier_cross, reason);
  pthread_mutex_lock(&c->mu);
  if (!atomic_load(&c->abort_req)) {
    snprintf(c->abort_reason, sizeof c->abort_reason, "%s", reason ? reason : "yk_comm_abort called");
    atomic_store(&c->abort_req, 1);
  }
  if (!atomic_load(&c->broken)) {
    c->broken_rc = YK_EABORTED;
    yk_errorf(&c->broken_diag, YK_EABORTED, "communicator aborted on rank %d: %s", c->rank, c->abort_reason);
    atomic_store(&c->broken, 1);
  }
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

void yk_comm_destroy(yk_comm *c) {
  if (!c) return;
  /* children share our transport: they go first */
  yk_comm_destroy(c->hier_cross);
  yk_comm_destroy(c->hier_local);
  c->hier_cross = c->hier_local = NULL;
  pthread_mutex_lock(&c->mu);
  int stuck = c->thread_started && c->stuck && c->busy;
  if (stuck) c->stop = 1;
  pthread_mutex_unlock(&c->mu);
  if (stuck) {
    /* The comm thread is stuck inside the transport and still uses c: it
     * cannot be joined or freed. Abandon it (a bounded leak; the process is
     * expected to exit or to rebuild with a new endpoint). */
    pthread_detach(c->thread);
    return;
  }
  if (c->thread_started) {
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    /* Send pending abort notices before the endpoint goes away. */
    if (atomic_load(&c->abort_req) == 1) idle_poll(c);
  }
  if (c->x && c->ctrl_sends) {
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
  if (c->x) {
    if (c->ctrl_posted) {
      xreq *rs[COLL_CTRL_SLOTS];
      for (int s = 0; s < COLL_CTRL_SLOTS; s++) rs[s] = &c->ctrl_req[s];
      cancel_and_drain(c, rs, COLL_CTRL_SLOTS);
    }
    if (c->ctrl_sends)
      for (int i = 0; i < c->size; i++)
        if (c->ctrl_sends[i].used && !c->ctrl_sends[i].done) c->x->ops->cancel(c->x, &c->ctrl_sends[i]);
    if (atomic_fetch_sub(&c->x->refs, 1) == 1) c->x->ops->destroy(c->x);
  }
  while (c->all) {
    struct yk_request *r = c->all;
    c->all = r->all_next;
    free(r);
  }
  if (c->thread_started || c->ctrl_sends) {
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
  }
  coll_shm_destroy(c);
  free(c->ctrl_sends);
  free(c->ctrl_sbuf);
  free(c->stuck_for);
  free(c->stuck_hdr);
  free(c->xrank);
  free(c->hosts);
  free(c->pids);
  free(c->node);
  free(c->xreqs);
  free(c->xreqs2);
  free(c->hello_reqs);
  free(c->hello_buf);
  free(c->posted);
  free(c->hdrx);
  yk_free(c->stage);
  yk_free(c->work);
  free(c);
}

xreq *coll_xreqs(yk_comm *c, size_t n) {
  if (n > c->nxreqs) {
    free(c->xreqs);
    c->xreqs = calloc(n, sizeof(xreq));
    c->nxreqs = c->xreqs ? n : 0;
    if (!c->xreqs) return NULL;
  }
  memset(c->xreqs, 0, n * sizeof(xreq));
  return c->xreqs;
}

xreq *coll_xreqs2(yk_comm *c, size_t n) {
  if (n > c->nxreqs2) {
    free(c->xreqs2);
    c->xreqs2 = calloc(n, sizeof(xreq));
    c->nxreqs2 = c->xreqs2 ? n : 0;
    if (!c->xreqs2) return NULL;
  }
  memset(c->xreqs2, 0, n * sizeof(xreq));
  return c->xreqs2;
}
