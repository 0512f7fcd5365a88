/* train_ckpt.h - checkpoints in the step loop of `yoke train` (train.c):
 * what a rank saves, the asynchronous save at step boundaries with the
 * commit protocol across ranks, resume (also at another world size) and
 * preemption (SIGUSR1/SIGTERM -> checkpoint -> exit YK_EXIT_REQUEUE).
 * Internal to the daemon module. Format: docs/checkpoint-format.md.
 *
 * Use from the step loop (every rank makes the same calls in the same order,
 * because boundary() and finish() run small collectives when world > 1):
 *
 *   ykd_ckpt_open(&ck, &view, ...)          after the model/optimizer exist
 *   ykd_ckpt_resume(&ck, &start, ...)       restores everything, start = step
 *   for step = start .. steps-1:
 *       if step > start: ykd_ckpt_boundary(&ck, step, &stop) ; stop -> exit code
 *       ... one optimizer step ...
 *   ykd_ckpt_finish(&ck, steps)              final save (synchronous) + commit
 *   ykd_ckpt_close(&ck)
 */
#ifndef YK_TRAIN_CKPT_H
#define YK_TRAIN_CKPT_H

#include <signal.h>

#include "dp_internal.h"
#include "yk_ckpt.h"
#include "yk_data.h"
#include "yk_model.h"
#include "yk_optimizer.h"

/* Everything of the trainer that a checkpoint holds, by pointer (borrowed:
 * must outlive the ykd_ckpt). Layouts are the model's layer-major arena. */
typedef struct ykd_ckpt_view {
  float *params;                 /* fp32 master weights, nparams */
  float *m, *v;                  /* AdamW moments, same layout */
  size_t nparams;
  void *params16;                /* 16-bit weights (fp16/bf16 runs) or NULL */
  float *model_params;           /* the model's own arena when it is not `params` (fp16/bf16: the
                                    widened params16, refreshed after a restore) or NULL */
  yk_dtype dtype16;              /* YK_DT_F16 or YK_DT_BF16 when params16 is set */
  const yk_tensor_desc *tensors; /* the model's tensor table */
  int ntensors;
  const yk_model_config *mcfg;
  yk_data_loader *loader;        /* training loader: its position is saved */
  yk_loss_scaler *scaler;        /* fp16 loss scaler or NULL; its `st` is saved */
  int threads;                   /* compression threads (the rank's compute threads) */
} ykd_ckpt_view;

typedef struct ykd_ckpt_ctx {
  const yk_config *cfg;
  const yk_logger *log;
  yk_dp *dp;                     /* rank, world, comm (world > 1) and ctl */
  ykd_ckpt_view view;
  int enabled;                   /* ckpt.dir is set */
  yk_ckpt_opts opts;
  yk_ckpt_state *st;
  yk_ckpt_writer *w;
  int pending;                   /* shards of pending_step queued, not committed yet */
  int64_t pending_step;
  double pending_t0;             /* when the pending save was queued */
  int64_t last_saved;            /* step of the newest save of this run (-1 none) */
  int deferred;                  /* the pending save's copy runs in the writer thread */
  double deferred_stall_s;       /* stall of that save so far (the save call itself) */
  /* Stop request: the exit code the run should end with after a checkpoint
   * at the next agreed step boundary (0 = none; 75 = preempted, 130 =
   * interrupted). Set by the control plane's events (world > 1) via
   * ykd_ckpt_request_stop, or by the signal handler (world 1). Ranks agree
   * on the largest code. */
  int stop_requested;
  int handlers_installed;
  struct sigaction old_term, old_usr1;
  /* figures */
  int saves;
  double stall_s_total, stall_s_max, write_s_total;
} ykd_ckpt_ctx;

/* Register the state and start the writer when ckpt.dir is set (otherwise
 * only preemption agreement works: stop without a checkpoint). With world 1
 * and ckpt.dir set, installs SIGTERM/SIGUSR1 handlers (world > 1: the
 * control plane owns the signals). */
int ykd_ckpt_open(ykd_ckpt_ctx *ck, const yk_config *cfg, const yk_logger *log, yk_dp *dp, const ykd_ckpt_view *view,
                  yk_diag *d);
/* ckpt.resume = "" -> *start_step = 0, nothing read. "latest" -> the newest
 * committed checkpoint of ckpt.dir (none yet: start at 0 and say so);
 * otherwise a checkpoint path (step-N directory or a root DIR). Restores the
 * arenas (whatever world size wrote them), the step, the loader position and
 * the loss scaler. A damaged newest checkpoint is an error naming the file
 * and tensor unless ckpt.fallback is true: then the next older one is used. */
int ykd_ckpt_resume(ykd_ckpt_ctx *ck, int64_t *start_step, yk_diag *d);
/* Called when the control plane asks the job to stop: code 75 (preemption:
 * checkpoint, exit 75 so the job is requeued) or 130 (interrupted: checkpoint
 * when ckpt.dir is set, exit 130). */
void ykd_ckpt_request_stop(ykd_ckpt_ctx *ck, int code);
/* Right before the optimizer update modifies the registered arenas: an
 * asynchronous save copies its snapshot in the writer thread while
 * forward/backward run (YK_CKPT_DEFER_COPY); this waits for that copy to end
 * (usually it already has: the training stall is only what is left). */
int ykd_ckpt_before_update(ykd_ckpt_ctx *ck, yk_diag *d);
/* At the boundary after `step_done` completed optimizer steps (not after the
 * last step: ykd_ckpt_finish does that). Agrees on stopping across ranks
 * (MAX all-reduce of a flag), commits a finished asynchronous save, starts a
 * new one every ckpt.every steps. *stop = 1: a preemption checkpoint was
 * written and committed (or no ckpt.dir): the caller ends with *exit_code. */
int ykd_ckpt_boundary(ykd_ckpt_ctx *ck, int64_t step_done, int *stop, int *exit_code, yk_diag *d);
/* End of training after `step_done` steps: save (when ckpt.dir is set and
 * this step is not saved yet), wait, commit. */
int ykd_ckpt_finish(ykd_ckpt_ctx *ck, int64_t step_done, yk_diag *d);
/* Stop the writer (waits for it, bounded), restore signal handlers. */
void ykd_ckpt_close(ykd_ckpt_ctx *ck);

#endif
