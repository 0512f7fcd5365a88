/* comm.c - communicators: creation, split, abort and destroy; the comm
 * thread and its queue, requests, algorithm choice. Point-to-point calls,
 * control messages and failure diagnosis are in p2p.c. */
#include <errno.h>
#include <signal.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "coll_internal.h"

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
const char *yk_comm_host(const yk_comm *c, int rank) { return coll_host(c, rank); }
int yk_comm_is_broken(const yk_comm *c) { return atomic_load(&((yk_comm *)c)->broken); }
void yk_comm_set_algo(yk_comm *c, yk_algo a) { c->algo = a; }

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
  c->nposted = 0;
  const coll_algo *a = &c->algos[coll_select(c, r)];
  if (r->kind == OPK_REDUCE_OWNED && !a->run[OPK_REDUCE_OWNED]) {
    /* no board: an all-reduce gives every owner its part (and the rest) */
    r->kind = OPK_ALLREDUCE;
    a = &c->algos[coll_select(c, r)];
  }
  coll_algo_fn run = a->run[r->kind];
  if (!run) { /* coll_select and the table disagree: a bug, but never a crash */
    r->rc = yk_errorf(d, YK_EINVAL, "collectives: algorithm %s has no %s (collective #%u)", a->name,
                      coll_opk_name(r->kind), r->seq);
    coll_set_broken(c, r->rc, d);
    return;
  }
  if (a->own_header) {
    r->rc = run(c, r, d);
    if (r->rc) coll_set_broken(c, r->rc, d);
    return;
  }
  /* Header first, data after it matched: a mismatched count never reaches
   * a provider as a truncated message (libfabric shm does not fail those
   * cleanly). The tree all-reduce also carries the header in its data. */
  int rc = coll_hdr_exchange(c, r, d);
  if (!rc) rc = run(c, r, d);
  if (!rc) rc = coll_hdr_finish(c, d);
  r->rc = rc;
  if (rc) {
    coll_set_broken(c, rc, d);
    coll_drain_posted(c);
  }
  c->nposted = 0;
}

/* ---- comm thread and queue ---------------------------------------------- */

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
        coll_idle_poll(c);
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
  int board = c->algos[coll_select(c, r)].off_provider &&
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
      return yk_errorf(d, YK_ETIMEDOUT, "%s #%u still running at the caller's deadline", coll_opk_name(r->kind), r->seq);
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
                       coll_opk_name(r->kind), r->seq, c->rank, coll_host(c, c->rank), c->tname, peer, coll_host(c, peer),
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
  c->algos = coll_algos;
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
  coll_ctrl_start(c);
  int rc = handshake(c, d);
  if (rc) return rc;
  if (pthread_create(&c->thread, NULL, comm_thread, c))
    return yk_errorf_sys(d, YK_ESYS, "cannot start the comm thread");
  c->thread_started = 1;
  return 0;
}

/* The shared-memory board of ranks on one node (algo_shm.c does the local
 * steps): rank 0 creates it and broadcasts its name, the others map it,
 * after a barrier rank 0 unlinks it (nothing is left in /dev/shm even after
 * a crash), and a min all-reduce of every rank's probe turns it on for all
 * ranks or for none. Fails only when a collective fails. */
static int board_setup(yk_comm *c, size_t oneshot, yk_diag *d) {
  int32_t name32[COLL_SHM_NAME / 4];
  char *name = (char *)name32;
  if (!coll_shm_open(c, oneshot, name)) return 0;
  int rc = yk_comm_broadcast_sync(c, name32, COLL_SHM_NAME / 4, YK_DT_I32, 0, d);
  if (!rc) {
    coll_shm_attach(c, name);
    rc = yk_comm_barrier_sync(c, d);
  }
  coll_shm_unlink(c, name);
  if (rc) return rc;
  int32_t ok[2];
  coll_shm_probe(c, ok);
  rc = yk_comm_allreduce_sync(c, ok, ok, 2, YK_DT_I32, YK_OP_MIN, d);
  if (!rc) coll_shm_agree(c, ok);
  return rc;
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
  if (!rc) rc = board_setup(c, opts.shm_oneshot_bytes, d);
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
  if (!rc) rc = board_setup(c, p->shm_oneshot, d);
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
    if (atomic_load(&c->abort_req) == 1) coll_idle_poll(c);
  }
  if (c->x) {
    coll_ctrl_stop(c);
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
