/* queue.c - the comm thread and its queue: requests, the execution of one
 * operation (the row of the algorithm table that coll_select picks), the
 * public operations and their *_sync wrappers, the watchdog of
 * yk_request_wait, and yk_comm_abort, which fails what is queued and
 * running.
 *
 * Each communicator's comm thread executes the queued operations in call
 * order and polls control messages while idle; a *_sync call on an idle
 * communicator runs on the caller's thread instead where the transport
 * cannot get stuck (docs/collectives.md, "Threads and requests"). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coll_internal.h"
#include "yk_trace.h"

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
  if (a->own_header) { /* the board compares headers on its slots; hier's stages exchange their own */
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

/* The comm thread's spans, one name per kind of operation (opkind). */
static const yk_trace_name T_OPS[OPK_COUNT_] = {
    [OPK_ALLREDUCE] = {"comm allreduce", "comm", "bytes", "seq"},
    [OPK_REDUCE_SCATTER] = {"comm reduce_scatter", "comm", "bytes", "seq"},
    [OPK_ALLGATHER] = {"comm allgather", "comm", "bytes", "seq"},
    [OPK_BROADCAST] = {"comm broadcast", "comm", "bytes", "seq"},
    [OPK_BARRIER] = {"comm barrier", "comm", "bytes", "seq"},
    [OPK_REDUCE_OWNED] = {"comm reduce_owned", "comm", "bytes", "seq"},
};

/* With c->mu held (so yk_comm_set_trace cannot pull the track away). */
static void trace_op(yk_comm *c, const struct yk_request *r, int64_t t0) {
  if (r->kind <= 0 || r->kind >= OPK_COUNT_) return;
  yk_trace_end(c->trk, &T_OPS[r->kind], t0, (double)(r->count * yk_dtype_size(r->dtype)), r->seq);
}

void yk_comm_set_trace(yk_comm *c, struct yk_trace_track *k) {
  pthread_mutex_lock(&c->mu);
  c->trk = k;
  pthread_mutex_unlock(&c->mu);
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
    int64_t t0 = yk_trace_begin(c->trk);
    run_op_locked(c, r);
    if (c->trk) trace_op(c, r, t0);
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

/* ---- abort ----------------------------------------------------------------- */

/* Here, with the queue it fails, rather than with creation in comm.c: hier's
 * all-reduce (above the queue, below creation) aborts its child
 * communicators when a stage fails. */
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
  /* the communicators split from c (a pipeline's channels from its stage
   * group, say) are as broken: whoever aborts c may not know them */
  for (yk_comm *k = c->kids; k; k = k->next_kid) yk_comm_abort(k, c->abort_reason);
  pthread_mutex_unlock(&c->mu);
}

/* ---- start and stop ------------------------------------------------------ */

int coll_queue_start(yk_comm *c, yk_diag *d) {
  if (pthread_create(&c->thread, NULL, comm_thread, c))
    return yk_errorf_sys(d, YK_ESYS, "cannot start the comm thread");
  c->thread_started = 1;
  return 0;
}

int coll_queue_stop(yk_comm *c) {
  pthread_mutex_lock(&c->mu);
  int stuck = c->thread_started && c->stuck && c->busy;
  if (stuck) c->stop = 1;
  pthread_mutex_unlock(&c->mu);
  if (stuck) {
    /* The comm thread is stuck inside the transport and still uses c: it
     * cannot be joined or freed. Abandon it (a bounded leak; the process is
     * expected to exit or to rebuild with a new endpoint). */
    pthread_detach(c->thread);
    return 1;
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
  while (c->all) {
    struct yk_request *r = c->all;
    c->all = r->all_next;
    free(r);
  }
  return 0;
}
