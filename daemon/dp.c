/* dp.c - the data-parallel group of one rank: launch environment, control
 * plane (coordinator link), the collectives communicator bootstrapped
 * through it, and the bucketed gradient all-reduce that overlaps with
 * backward.
 *
 * Overlap: the model calls grad_ready(offset, count) as each layer's
 * gradients become final (last layer first; each range ends where the
 * previous began). On the last micro-batch of a step we coalesce those ranges
 * into buckets of about comm.bucket_kb and start a non-blocking all-reduce
 * (average) on each bucket as soon as it is full, while backward goes on with
 * the earlier layers on this thread. After backward the remaining tail is
 * flushed and every request is waited on, in issue order, under the
 * communicator's deadline. Every rank issues the same buckets in the same
 * order because the hook sequence depends only on the model shape. */
#include "dp_internal.h"
#include "yk_optimizer.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>

/* ---- bootstrap through the coordinator -------------------------------- */

static int ctl_allgather(yk_bootstrap *b, const void *mine, size_t len, void *all, uint64_t deadline_ns, yk_diag *d) {
  return yk_daemon_ctl_allgather((yk_daemon_ctl *)b->ctx, mine, len, all, deadline_ns, d);
}

static void ctl_bootstrap_destroy(yk_bootstrap *b) { free(b); }

static void on_abort(void *arg, const yk_daemon_event *ev) {
  yk_dp *dp = arg;
  /* Blocked collectives return at once instead of waiting for their
   * deadline; the step loop then sees the event at its next poll. Runs on
   * the control thread: the lock keeps yk_dp_close from destroying the
   * communicator under us. */
  pthread_mutex_lock(&dp->comm_lock);
  if (dp->comm) yk_comm_abort(dp->comm, ev->text);
  pthread_mutex_unlock(&dp->comm_lock);
}

int yk_dp_open(yk_dp *dp, const yk_config *cfg, yk_logger *log, yk_diag *d) {
  memset(dp, 0, sizeof *dp);
  pthread_mutex_init(&dp->comm_lock, NULL);
  dp->log = log;
  dp->rank = 0;
  dp->world = 1;
  dp->bucket_bytes = (size_t)cfg->comm.bucket_kb * 1024;
  int rc = yk_launch_env_detect(cfg, NULL, NULL, &dp->env, d);
  if (rc) return rc;
  log->rank = dp->env.rank; /* every line from here on names this rank */
  if (dp->env.world <= 1) return 0;

  yk_daemon_ctl_opts o = {
      .cfg = cfg,
      .env = &dp->env,
      .log = log,
      .on_abort = on_abort,
      .abort_arg = dp,
      .abort_grace_ms = cfg->comm.timeout_ms + 5000,
  };
  if ((rc = yk_daemon_ctl_start(&o, &dp->ctl, d)) != 0) return rc;
  yk_daemon_job job;
  yk_daemon_ctl_job(dp->ctl, &job);
  dp->rank = job.rank;
  dp->world = job.world;
  log->rank = job.rank;

  if (!strcmp(cfg->comm.transport, "mpi")) {
    /* OpenMPI's own transports: MPI must be up (all threads may call it:
     * the comm thread progresses the collectives). */
    if (dp->env.kind != YK_LAUNCH_OPENMPI)
      return yk_errorf(d, YK_ECONFIG, "comm.transport=mpi needs a job started by mpirun; use libfabric with %s",
                       dp->env.kind == YK_LAUNCH_SLURM ? "srun" : "yoke launch");
    int inited = 0, provided = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      if (MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS)
        return yk_errorf(d, YK_ETRANSPORT, "MPI_Init_thread failed");
      dp->mpi_inited = 1;
      if (provided < MPI_THREAD_MULTIPLE)
        return yk_errorf(d, YK_EUNSUPPORTED, "this MPI gives thread level %d, MPI_THREAD_MULTIPLE is needed for "
                                             "comm.transport=mpi; use comm.transport=libfabric", provided);
    }
    if ((rc = yk_bootstrap_mpi_create(&dp->boot, d)) != 0) return rc;
  }
  yk_bootstrap *b = dp->boot ? NULL : calloc(1, sizeof *b);
  if (!dp->boot && !b) return yk_errorf(d, YK_ENOMEM, "out of memory");
  if (b) {
  b->rank = dp->rank;
  b->size = dp->world;
  b->kind = "coord";
  b->ctx = dp->ctl;
  b->allgather = ctl_allgather;
  b->destroy = ctl_bootstrap_destroy;
  dp->boot = b;
  }

  yk_comm_opts co;
  yk_comm_opts_from_config(&co, cfg);
  co.epoch = job.epoch;
  co.log = log;
  yk_comm *comm = NULL;
  if ((rc = yk_comm_create(&co, dp->boot, &comm, d)) != 0) return rc;
  pthread_mutex_lock(&dp->comm_lock);
  dp->comm = comm;
  pthread_mutex_unlock(&dp->comm_lock);
  return 0;
}

void yk_dp_close(yk_dp *dp, int exit_code, const char *reason) {
  for (int i = 0; i < dp->nreq; i++)
    if (dp->reqs[i]) yk_request_wait(&dp->reqs[i], yk_deadline_in_ms(1000), NULL);
  dp->nreq = 0;
  pthread_mutex_lock(&dp->comm_lock);
  yk_comm *comm = dp->comm;
  dp->comm = NULL;
  pthread_mutex_unlock(&dp->comm_lock);
  yk_comm_destroy(comm);
  if (dp->boot) yk_bootstrap_destroy(dp->boot);
  dp->boot = NULL;
  yk_daemon_ctl_stop(dp->ctl, exit_code, reason);
  dp->ctl = NULL;
  if (dp->mpi_inited) {
    /* Every rank ends together on success and on an agreed stop (requeue,
     * interrupt, terminate): finalize so mpirun sees a clean exit. A failed
     * job must not wait in MPI_Finalize for a dead peer. */
    if (exit_code == 0 || exit_code == YK_EXIT_REQUEUE || exit_code == YK_EXIT_SIGINT || exit_code == YK_EXIT_SIGTERM)
      MPI_Finalize();
    dp->mpi_inited = 0;
  }
  pthread_mutex_destroy(&dp->comm_lock);
}

/* ---- bucketed gradient all-reduce ------------------------------------- */

static int issue(yk_dp *dp, size_t off, size_t count) {
  if (count == 0 || dp->err) return 0;
  if (dp->comm && dp->nreq >= YK_DP_MAX_REQ) {
    /* Too many outstanding buckets: retire the oldest first. */
    int rc = yk_request_wait(&dp->reqs[0], yk_deadline_in_ms((uint64_t)dp->timeout_ms), &dp->errd);
    memmove(dp->reqs, dp->reqs + 1, (size_t)(dp->nreq - 1) * sizeof dp->reqs[0]);
    dp->nreq--;
    if (rc) return dp->err = rc;
  }
  void *g = dp->grads + off;
  if (dp->dtype != YK_DT_F32) {
    /* 16-bit gradients: round this range once, note the first local
     * overflow (so an fp16 overflow can be pinned on a rank and tensor). */
    g = dp->grads16 + off;
    yk_cast_from_f32(g, dp->dtype, dp->grads + off, count, YK_ISA_AUTO);
    int64_t bad = -1;
    if (dp->local_bad < 0 && yk_optimizer_find_nonfinite(g, dp->dtype, count, YK_ISA_AUTO, &bad) == 1)
      dp->local_bad = (int64_t)off + bad;
  }
  if (!dp->comm) return 0; /* one rank: the cast is all there is to do */
  int rc = dp->owned_total
               ? yk_comm_reduce_owned(dp->comm, g, off, count, dp->owned_total, dp->dtype, YK_OP_AVG,
                                      &dp->reqs[dp->nreq], &dp->errd)
               : yk_comm_allreduce(dp->comm, g, g, count, dp->dtype, YK_OP_AVG, &dp->reqs[dp->nreq], &dp->errd);
  if (rc) return dp->err = rc;
  dp->nreq++;
  dp->bytes += count * yk_dtype_size(dp->dtype);
  return 0;
}

void yk_dp_grad_ready(void *arg, size_t offset, size_t count) {
  yk_dp *dp = arg;
  if (!dp->armed) return;
  /* Ranges arrive from the end of the arena toward its start. */
  dp->pend_off = offset;
  dp->pend_count += count;
  if (dp->pend_count * sizeof(float) >= dp->bucket_bytes) {
    issue(dp, dp->pend_off, dp->pend_count);
    dp->pend_count = 0;
  }
}

void yk_dp_set_owned(yk_dp *dp, size_t total) { dp->owned_total = dp->comm ? total : 0; }

void yk_dp_arm(yk_dp *dp, float *grads, uint16_t *grads16, yk_dtype dtype, int64_t timeout_ms) {
  dp->armed = dp->world > 1 || dtype != YK_DT_F32;
  dp->grads = grads;
  dp->grads16 = grads16;
  dp->dtype = dtype;
  dp->local_bad = -1;
  dp->pend_count = 0;
  dp->bytes = 0;
  dp->err = 0;
  dp->timeout_ms = timeout_ms;
  yk_diag_clear(&dp->errd);
}

int yk_dp_finish(yk_dp *dp, size_t nparams, double *wait_s, yk_diag *d) {
  *wait_s = 0;
  if (!dp->armed) return 0;
  dp->armed = 0;
  if (dp->pend_count) issue(dp, dp->pend_off, dp->pend_count);
  dp->pend_count = 0;
  (void)nparams;
  double t0 = yk_now_s();
  int rc = dp->err;
  for (int i = 0; i < dp->nreq; i++) {
    int r = yk_request_wait(&dp->reqs[i], yk_deadline_in_ms((uint64_t)dp->timeout_ms), rc ? NULL : &dp->errd);
    if (r && !rc) rc = r;
  }
  dp->nreq = 0;
  *wait_s = yk_now_s() - t0;
  if (rc) {
    if (d) *d = dp->errd;
    return rc;
  }
  return 0;
}

int yk_dp_allreduce_sum_f64(yk_dp *dp, double *v, int n, yk_diag *d) {
  if (dp->world <= 1) return 0;
  /* Scalars for logs and validation (losses, counts): summed as f32, which
   * is accurate to ~1e-7 relative - enough for a loss printed with 4-6
   * digits. The gradients themselves never take this path. */
  float buf[32] = {0};
  if (n > 32) return yk_errorf(d, YK_EINVAL, "too many values to reduce (%d)", n);
  for (int i = 0; i < n; i++) buf[i] = (float)v[i];
  int rc = yk_comm_allreduce_sync(dp->comm, buf, buf, (size_t)n, YK_DT_F32, YK_OP_SUM, d);
  if (rc) return rc;
  for (int i = 0; i < n; i++) v[i] = (double)buf[i];
  return 0;
}
