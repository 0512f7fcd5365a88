/* dp_internal.h - the data-parallel group used by the step loop (train.c).
 * Internal to the daemon module. */
#ifndef YK_DP_INTERNAL_H
#define YK_DP_INTERNAL_H

#include <pthread.h>

#include "yk_collectives.h"
#include "yk_daemon.h"

#define YK_DP_MAX_REQ 64

typedef struct yk_dp {
  const yk_logger *log;
  yk_launch_env env;
  int rank, world;
  yk_daemon_ctl *ctl;   /* NULL on a single rank */
  yk_bootstrap *boot;
  yk_comm *comm;        /* NULL on a single rank */
  pthread_mutex_t comm_lock; /* the control thread's abort vs. destroy at close */
  int mpi_inited;       /* we called MPI_Init_thread */

  /* bucketed gradient all-reduce of the current step */
  int armed;
  float *grads;
  uint16_t *grads16;    /* fp16/bf16: gradients cast here and reduced in 16 bits */
  yk_dtype dtype;       /* YK_DT_F32, YK_DT_F16 or YK_DT_BF16 */
  int64_t local_bad;    /* first non-finite local 16-bit gradient (-1: none) */
  size_t bucket_bytes;
  size_t owned_total;  /* ZeRO-1: reduce each bucket to its owners only (0 = all-reduce) */
  size_t pend_off, pend_count;
  yk_request *reqs[YK_DP_MAX_REQ];
  int nreq;
  uint64_t bytes;       /* bytes all-reduced this step */
  int64_t timeout_ms;
  int err;
  yk_diag errd;
} yk_dp;

/* Detect the launch environment; with world > 1, start the control plane
 * (rendezvous through the coordinator) and create the communicator. A single
 * rank gets rank 0, world 1 and no ctl/comm. Close with yk_dp_close even on
 * failure. Sets log->rank to this rank. */
int yk_dp_open(yk_dp *dp, const yk_config *cfg, yk_logger *log, yk_diag *d);
void yk_dp_close(yk_dp *dp, int exit_code, const char *reason);
/* Before the last micro-batch's backward: arm the grad hook for this step.
 * dtype F32 reduces grads in place; F16/BF16 first casts each final range of
 * grads into grads16 (checking it for Inf/NaN: local_bad) and reduces that,
 * halving the bytes on the wire. */
void yk_dp_arm(yk_dp *dp, float *grads, uint16_t *grads16, yk_dtype dtype, int64_t timeout_ms);
/* ZeRO-1: from now on each rank needs only its even range of the `total`
 * gradients: buckets are reduced to their owners (yk_comm_reduce_owned)
 * instead of all-reduced. 0 = all-reduce again. */
void yk_dp_set_owned(yk_dp *dp, size_t total);
/* The model's gradient-ready hook (ctx = dp). */
void yk_dp_grad_ready(void *ctx, size_t offset, size_t count);
/* After backward: flush the last bucket and wait for every all-reduce;
 * *wait_s is the time spent waiting (communication not hidden by backward). */
int yk_dp_finish(yk_dp *dp, size_t nparams, double *wait_s, yk_diag *d);
/* Sum n (<= 32) doubles over the group (f32 precision), in place. */
int yk_dp_allreduce_sum_f64(yk_dp *dp, double *v, int n, yk_diag *d);

#endif
