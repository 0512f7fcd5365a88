/* yk_engine.h - the one public header of yoke's `engine` module: one
 * training step of one rank, in any layout.
 *
 * The engine owns what a rank trains with: the model (device borrowed), the
 * optimizer state (AdamW moments, the mixed-precision state of
 * yk_optimizer.h's yk_mixed), the data loaders, the gradient reduction and
 * the checkpoints of that state. It is driven by whoever runs the job (the
 * daemon's `yoke train`, a test with threads as ranks, a benchmark) and never
 * calls back into it: launch environment, control plane, coordinator and
 * signals live in daemon/; they hand the engine its communicators and tell it
 * to stop through yk_engine_request_stop.
 *
 *   yk_engine_open      config, layout, communicators, device -> engine (loads
 *                       or initialises weights, resumes a checkpoint)
 *   yk_engine_step      one optimizer step -> yk_step_stats
 *   yk_engine_eval      validation loss
 *   yk_engine_boundary  between steps: checkpoints, the agreed stop
 *   yk_engine_finish    after the last step: final checkpoint
 *   yk_engine_close
 *
 * A step is a SCHEDULE: a list of operations (forward or backward of a range
 * of layers for one micro-batch, the gradient reduction, the optimizer
 * update) that yk_engine_step runs in order (engine/step.c reads top to
 * bottom). Data parallelism is one such list; pipeline schedules (GPipe,
 * 1F1B) become other lists, checked statically, not new control flow.
 *
 * Every rank of a group must make the same calls in the same order: steps,
 * evaluations and boundaries run collectives. Errors are YK_E* codes with
 * one sentence in the yk_diag; nothing here exits or installs signal
 * handlers.
 */
#ifndef YK_ENGINE_H
#define YK_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "yk_collectives.h"
#include "yk_common.h"
#include "yk_device.h"
#include "yk_model.h"
#include "yk_partition.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What one step reports: yk_step_stats (yk_common.h), which yk_engine_step
 * fills and the daemon's log line, JSON line, heartbeats and /metrics read. */

/* ------------------------------------------------------------------------ */
/* Schedules                                                                */
/* ------------------------------------------------------------------------ */

/* One operation of a step. Layer ranges are [layer_first, layer_last) of
 * the model's blocks; the embedding belongs to the first range that starts
 * at 0 and the head to the one that ends at L. */
typedef enum {
  YK_SCHED_FORWARD = 1,  /* forward of a layer range for micro-batch `micro` */
  YK_SCHED_BACKWARD = 2, /* its backward; `reduce` = 1: these gradients are final for the step, so the
                          * gradient reduction (buckets of comm.bucket_kb) starts while it runs */
  YK_SCHED_REDUCE = 3,   /* wait for the gradient reduction of the data-parallel group */
  YK_SCHED_UPDATE = 4,   /* overflow check, norm, clipping, AdamW, ZeRO gather, 16-bit weights */
  /* Pipeline parallelism: activations (B,T,C) f32 (this rank's rows under
   * sequence parallelism) and their gradients travel between the stages of
   * neighbouring chunks. Sends are non-blocking (at most YK_PIPE_MAX_SENDS
   * in flight per rank), receives block under the communicator's deadline.
   * Tensor parallelism runs its collectives inside FORWARD/BACKWARD. */
  YK_SCHED_SEND_ACT = 5,  /* the output of `chunk` for `micro` to stage `peer` */
  YK_SCHED_RECV_ACT = 6,  /* the input of `chunk` for `micro` from stage `peer` */
  YK_SCHED_SEND_GRAD = 7, /* the gradient of `chunk`'s input to stage `peer` */
  YK_SCHED_RECV_GRAD = 8, /* the gradient of `chunk`'s output from stage `peer` */
} yk_sched_kind;

typedef struct yk_sched_op {
  yk_sched_kind kind;
  int micro;                   /* micro-batch (FORWARD/BACKWARD) */
  int layer_first, layer_last; /* FORWARD/BACKWARD */
  int reduce;                  /* BACKWARD */
  int peer;                    /* pipeline stage of a SEND/RECV; -1 */
  int chunk;                   /* pipeline: the model chunk the op belongs to (0 without a pipeline) */
} yk_sched_op;

#define YK_SCHED_MAX_OPS 4096

typedef struct yk_schedule {
  yk_sched_op ops[YK_SCHED_MAX_OPS];
  int n;
  int micro_batches;
} yk_schedule;

/* The data-parallel step: for each of `accum` micro-batches FORWARD then
 * BACKWARD of all `layers` (the last BACKWARD reduces), then REDUCE, UPDATE.
 * YK_ECONFIG if accum is outside [1, (YK_SCHED_MAX_OPS - 2) / 2]. */
int yk_engine_schedule_dp(int accum, int layers, yk_schedule *s, yk_diag *d);
/* Static checks every schedule must pass before it runs: each micro-batch
 * forward once before its backward, exactly one reducing backward, after
 * every other backward, then one REDUCE and one UPDATE, in that order, at the
 * end; layer ranges inside [0, layers). Names the first offending op. */
int yk_engine_schedule_check(const yk_schedule *s, int layers, yk_diag *d);
/* "F0 B0 F1 B1+ R U"; pipelines add "ra1" "sa1" "rg1" "sg1" (receive / send
 * activations / gradients of micro-batch 1) and ".c" after the micro-batch
 * for chunk c > 0 of interleaved schedules. */
void yk_engine_schedule_describe(const yk_schedule *s, char *buf, size_t cap);

/* ---- pipeline parallelism (docs/parallelism.md, "Pipeline parallelism") --
 * The model's L blocks are cut into K = P * V contiguous CHUNKS; chunk c runs
 * on stage c % P, so each stage holds V chunks (V = parallel.virtual_stages;
 * the first chunk also holds the embedding, the last the final LayerNorm,
 * LM head and loss). Every stage runs its own list of operations; the lists
 * are generated by phases (warm-up forwards, steady one-forward-one-backward,
 * cool-down backwards) and checked together by
 * yk_engine_schedule_check_pipeline before a step runs. */
#define YK_PIPE_MAX_CHUNKS 64
#define YK_PIPE_MAX_SENDS 4 /* non-blocking sends one rank keeps in flight (its send buffers) */

typedef enum {
  YK_PIPE_GPIPE = 1,       /* all forwards, then all backwards: m micro-batches of activations alive */
  YK_PIPE_1F1B = 2,        /* PipeDream-flush: at most P - stage micro-batches alive on a stage */
  YK_PIPE_INTERLEAVED = 3, /* 1F1B over V chunks per stage: bubble (P-1)/(V*m+P-1); m % P == 0 */
} yk_pipe_kind;

typedef struct yk_pipe_plan {
  yk_pipe_kind kind;
  int stages;        /* P */
  int vstages;       /* V */
  int micro_batches; /* m = train.grad_accum */
  int layers;        /* L */
  int bounds[YK_PIPE_MAX_CHUNKS + 1]; /* chunk c holds blocks [bounds[c], bounds[c + 1]) */
} yk_pipe_plan;

/* "gpipe", "1f1b", "interleaved". */
const char *yk_engine_pipe_kind_name(yk_pipe_kind k);
/* Cut `layers` blocks into `chunks` contiguous non-empty chunks minimising
 * the most expensive one, where a block costs its forward + backward FLOPs
 * at sequence length T and the first chunk also pays the embedding, the last
 * the LM head and the cross-entropy (yk_model_flops_per_token's terms).
 * bounds gets chunks + 1 entries. YK_ECONFIG when layers < chunks. */
int yk_engine_pipe_balance(const yk_model_config *mc, int T, int chunks, int *bounds, yk_diag *d);
/* The plan of a config for model mc: parallel.pipeline, virtual_stages,
 * schedule (auto: interleaved when V > 1, else 1F1B), stage_layers (a list
 * "3,1" of blocks per chunk; empty: yk_engine_pipe_balance) and
 * train.grad_accum. YK_ECONFIG naming the key for an impossible one. */
int yk_engine_pipe_plan(const yk_config *c, const yk_model_config *mc, yk_pipe_plan *out, yk_diag *d);
/* Stage `stage`'s operations under plan p. YK_ECONFIG if they do not fit in
 * YK_SCHED_MAX_OPS. */
int yk_engine_schedule_pipeline(const yk_pipe_plan *p, int stage, yk_schedule *s, yk_diag *d);
/* Check the P lists all[0..P) of a pipeline together. Each list alone: every
 * chunk of the stage runs each micro-batch's forward once, after its input
 * arrived, then its backward once, after its output's gradient arrived; every
 * send after the op that produced it and to the right neighbour; one reducing
 * backward, the last; REDUCE and UPDATE at the end; the micro-batches alive
 * on a stage (forwarded, not yet backwarded) within the schedule's bound
 * (1F1B: P - stage). Then all stages are simulated together, each
 * neighbouring pair's activations and gradients as a channel of its own
 * whose messages match in order: a send posts and returns (a rank with
 * max_sends sends not yet received waits for the oldest), a receive waits for
 * its send, REDUCE waits for the rank's sends. Every stage must reach its end,
 * with every message received by the op that matches it. The first
 * offending op is named ("stage 1 op 7 (RECV_ACT micro 2 chunk 1 from stage
 * 0): ..."). */
int yk_engine_schedule_check_pipeline(const yk_pipe_plan *p, const yk_schedule *all, int max_sends, yk_diag *d);
/* Micro-batches alive at once on the stage of s (model activation sets it needs). */
int yk_engine_schedule_max_alive(const yk_schedule *s);

/* ------------------------------------------------------------------------ */
/* The engine                                                               */
/* ------------------------------------------------------------------------ */

/* The communicators of a layout (borrowed; the caller creates, aborts and
 * destroys them). NULL for a group of one rank. `dp`: the data-parallel group
 * (every rank while tp = pp = 1); `tp`: the tensor-parallel group; `pp`: the
 * pipeline stages of this rank's (dp, tp) coordinates, from which the engine
 * splits its own channels between neighbouring stages. */
typedef struct yk_engine_comms {
  yk_comm *dp;
  yk_comm *tp;
  yk_comm *pp;
} yk_engine_comms;

typedef struct yk_engine_opts {
  const yk_config *cfg;   /* copied */
  yk_layout layout;       /* from yk_partition_layout: any dp x tp x pp */
  yk_engine_comms comms;
  yk_device *dev;         /* borrowed; must outlive the engine */
  const yk_logger *log;   /* borrowed; must outlive the engine */
  int64_t test_delay_ms;  /* tests only (YK_TEST_DELAY_RANK): sleep this long inside every step */
  int local_ranks;        /* ranks of this job on this host, sharing its memory (0 = 1) */
} yk_engine_opts;

typedef struct yk_engine yk_engine;

/* Build everything a rank trains with: the model (c->train.init_weights or
 * random from c->train.seed), AdamW and mixed-precision state, ZeRO-1
 * slices (optim.shard), the loaders of data.train and data.val, the
 * checkpoint writer (ckpt.dir), then resume (ckpt.resume). With pp > 1: the
 * pipeline plan and every stage's schedule, checked together
 * (yk_engine_schedule_check_pipeline); ZeRO-2/3 over more than one
 * data-parallel rank and ckpt.dir are YK_EUNSUPPORTED with pp > 1.
 * *out is owned by the caller: free with yk_engine_close, even when this
 * fails (*out may then be partly built). */
int yk_engine_open(const yk_engine_opts *o, yk_engine **out, yk_diag *d);
void yk_engine_close(yk_engine *e);

/* The first step to run: 0, or the step of the checkpoint resumed from. */
int64_t yk_engine_start_step(const yk_engine *e);

/* One optimizer step, `step` counted from 0 (it picks the learning rate and
 * the data). A non-finite loss or gradient ends it with YK_ENONFINITE naming
 * the tensor and what to change; an fp16 overflow skips the update (stats
 * say so) unless it happens at the minimum loss scale with
 * loss_scale.on_min=stop (YK_EOVERFLOW). */
int yk_engine_step(yk_engine *e, int64_t step, yk_step_stats *out, yk_diag *d);

/* Mean loss over the first train.val_batches windows of data.val, the same
 * windows at every world size (rank r takes r, r + dp, ...). YK_ENOTFOUND
 * without data.val. */
int yk_engine_eval(yk_engine *e, double *loss, yk_diag *d);
int yk_engine_has_val(const yk_engine *e);

/* Ask the job to stop at the next boundary: code 75 (preemption: checkpoint,
 * exit 75 for a requeue) or 130 (interrupted). Ranks agree on the largest
 * code at the boundary. Call from the thread that drives the engine. */
void yk_engine_request_stop(yk_engine *e, int code);
/* At the boundary after `step_done` steps (not after the last one): agree on
 * a stop across the ranks, commit a finished background save, start one
 * every ckpt.every steps, honour train.stop_after. *stop = 1: stop now with
 * *exit_code (a checkpoint was committed when ckpt.dir is set). */
int yk_engine_boundary(yk_engine *e, int64_t step_done, int *stop, int *exit_code, yk_diag *d);
/* After the last step: the final checkpoint (ckpt.dir), committed. */
int yk_engine_finish(yk_engine *e, int64_t step_done, yk_diag *d);

/* What this rank holds, in bytes. Model state: the fp32 weights and
 * gradients the model computes with, the 16-bit weights and gradients of
 * mixed precision, and the optimizer state of this rank's slice (fp32
 * master weights when they are not the model's own, AdamW's m and v): with
 * ZeRO-1 over N ranks, 8 bytes + 8/N per parameter in fp32, 12 + 12/N in
 * fp16/bf16. `model` is everything else the model allocates for its batch
 * (activations kept for backward, logits, scratch). */
typedef struct yk_engine_memory {
  uint64_t weights, grads;     /* fp32: whole arena, or the slice (weights under ZeRO-3, grads under ZeRO-2/3) */
  uint64_t weights16, grads16; /* fp16/bf16 runs (weights16 sliced under ZeRO-3; no grads16 under ZeRO-2/3) */
  uint64_t master, moments;    /* this rank's slice */
  uint64_t model_state;        /* by ZeRO stage over N ranks, Psi parameters (docs/parallelism.md):
                                * fp32 16Psi, 8Psi + 8Psi/N, 4Psi + 12Psi/N, 16Psi/N; mixed 16Psi,
                                * 4Psi + 12Psi/N, 2Psi + 16Psi/N, 18Psi/N (stage 2/3 sum the gradient
                                * slice in fp32: 2Psi/N over DeepSpeed's 2-byte count) */
  uint64_t buffers;            /* stated working buffers: mixed precision's fp32 compute copies; ZeRO-2/3's
                                * gradient windows (2 x (bucket + largest layer)), the embedding's gradients
                                * (wte is tied to the LM head), the ZeRO-3 gather slots (2 layers, embedding,
                                * head) and their 16-bit twins */
  uint64_t model;              /* activations and buffers of the model for B x T */
  uint64_t planned_peak;       /* the peak yk_engine_plan_of predicted for this rank (resident bytes) */
} yk_engine_memory;
void yk_engine_memory_of(const yk_engine *e, yk_engine_memory *out);

/* ------------------------------------------------------------------------ */
/* The memory plan (yoke plan; checked by yk_engine_open)                   */
/* ------------------------------------------------------------------------ */

/* What one rank of a job will hold, item by item, in resident bytes, computed
 * from the config and layout alone (nothing is allocated) with the same size
 * functions yk_engine_open allocates with: the model's yk_model_plan, the
 * ZeRO block's, yk_alloc_bytes. docs/memory.md gives every formula. */
typedef enum {
  YK_PLAN_WEIGHTS,     /* fp32 weights the model computes with (ZeRO-3 fp32: this rank's slice, the master) */
  YK_PLAN_MASTER,      /* fp16/bf16: fp32 master weights of this rank's slice */
  YK_PLAN_GRADS,       /* fp32 gradients (ZeRO-2/3: this rank's reduced slice) */
  YK_PLAN_WEIGHTS16,   /* fp16/bf16 weights (ZeRO-3: the slice) */
  YK_PLAN_GRADS16,     /* fp16/bf16 gradients reduced in 16 bits (ZeRO-0/1) */
  YK_PLAN_MOMENTS,     /* AdamW m and v of this rank's slice */
  YK_PLAN_ACTIVATIONS, /* kept for backward (in the activation dtype), LayerNorm statistics, losses */
  YK_PLAN_LOGITS,      /* fp32 (B*T, Vp) logits, reused for their gradients */
  YK_PLAN_MODEL_BUFFERS, /* backward buffers, 16-bit mode's fp32 work buffers, tensor-parallel buffers */
  YK_PLAN_ZERO_BUFFERS,  /* ZeRO-2/3 gradient windows and stage-3 gather slots */
  YK_PLAN_COMM,        /* collectives' staging, the transport's shared segments */
  YK_PLAN_PEER,        /* ranks on one host: the peers' shared buffers collectives read in place */
  YK_PLAN_CKPT,        /* checkpoint snapshot buffers (ckpt.dir) */
  YK_PLAN_OFFLOAD,     /* optim.offload=disk: the staging sets the update streams the state through */
  YK_PLAN_STARTUP,     /* one-time buffers while the engine opens (the extra they add to the peak) */
  YK_PLAN_RUNTIME,     /* the process itself: code, libraries, threads, BLAS workspace */
  YK_PLAN_NITEMS
} yk_plan_item;

typedef struct yk_engine_plan {
  uint64_t item[YK_PLAN_NITEMS];
  uint64_t steady;           /* every item but STARTUP */
  uint64_t peak;             /* the most resident at once: steady, or start-up's moment */
  uint64_t nparams, slen;    /* this rank's arena and the slice it updates */
  int zero_stage;            /* the stage in effect (0 on one rank) */
  yk_precision precision;
  int dp, tp;
} yk_engine_plan;

/* The plan of the rank `layout` describes for config c, with dev (its
 * threads size some buffers; the runtime item is this process's resident set
 * now plus the BLAS workspace of dev's threads). local_ranks > 1: the
 * data-parallel ranks share this host, so the engine puts the buffers
 * collectives move in shared memory, resident where written, and each rank
 * also maps what it reads of its peers'. YK_ECONFIG for a config the engine
 * would refuse (names the value). */
int yk_engine_plan_of(const yk_config *c, const yk_layout *layout, int local_ranks, const yk_device *dev,
                      yk_engine_plan *p, yk_diag *d);
/* "weights", "master", ... */
const char *yk_engine_plan_item_name(yk_plan_item i);
/* Whether the plan fits in limit bytes (0: MemAvailable / local_ranks, the
 * ranks on this host): 0, or YK_ENOMEM with one sentence naming the peak,
 * the limit, the three largest items and the settings that would shrink them. */
int yk_engine_plan_check(const yk_engine_plan *p, const yk_config *c, uint64_t limit, int local_ranks, yk_diag *d);

/* FNV-1a over the fp32 weights the model computes with: ranks compare it to
 * prove they hold identical weights. Under ZeRO-3 it is collective (every
 * rank of the data-parallel group calls it; the weights are gathered region
 * by region; 0 if a gather failed). */
uint64_t yk_engine_params_checksum(yk_engine *e);
/* Write the weights as a GPT-2 fp32 file (rank 0's job; path NULL: nothing).
 * Under ZeRO-3 it is collective: every rank of the data-parallel group calls
 * it, those with a NULL path only take part in the gathers. */
int yk_engine_save_weights(yk_engine *e, const char *path, yk_diag *d);
/* Arena `base` ("params", "m", "v", "params16") of the checkpoint open in r,
 * whole (cfg's layer-major arena, yk_model_config_num_params floats, 16-bit
 * arenas widened exactly) whatever tensor-parallel degree saved it: each
 * saved piece (base.tpKofN) is checked against the tensor table that degree
 * gives and put in its place with yk_model_tp_copy. Holds one saved piece
 * besides `whole` at a time. YK_ENOTFOUND if the checkpoint has no such
 * arena. The one reader of a checkpoint's model arenas across layouts
 * (resume at another TP degree, the exporters). */
struct yk_ckpt_reader;
int yk_engine_ckpt_read_whole(struct yk_ckpt_reader *r, const char *base, const yk_model_config *cfg, float *whole,
                              yk_diag *d);
/* `yoke ckpt convert --layout`: write the checkpoint open in r (any
 * layout) as a new committed checkpoint of the same step under o->dir, as
 * the dp x tp x pp ranks of the target would have saved it: every model
 * arena (params, m, v and, when saved, params16 in its dtype) whole
 * (yk_engine_ckpt_read_whole), then each rank's piece cut as a resume at that
 * layout cuts it (the same code), with its stage's tensor table and saved by
 * its data-parallel group; the global blobs (step, data position, loss
 * scaler) and the model section copied; cfg's YAML as the new config. A run
 * at the target layout resuming from it loads bitwise what resuming from r
 * with resharding loads. Memory: every arena whole in fp32 (4 x 4 bytes per
 * parameter in fp32 runs) plus one rank's pieces. */
typedef struct yk_engine_ckpt_convert_opts {
  const yk_config *cfg;   /* the target: parallel.tensor, pipeline, virtual_stages, schedule, stage_layers,
                           * sequence and train.seq_len, micro_batch, grad_accum as the resuming run has them */
  int dp;                 /* its data-parallel degree: world = dp x tp x pp */
  const char *dir;        /* checkpoint root the result goes to (DIR/step-N) */
  int level, threads;     /* zstd level, compression threads (0: all cores) */
  const yk_logger *log;   /* may be NULL */
} yk_engine_ckpt_convert_opts;
int yk_engine_ckpt_convert(struct yk_ckpt_reader *r, const yk_model_config *mcfg, const yk_engine_ckpt_convert_opts *o,
                           yk_diag *d);
/* Lines for the start of a run: model, global batch, device, data. */
void yk_engine_describe(const yk_engine *e, void (*line)(void *arg, const char *text), void *arg);

/* ------------------------------------------------------------------------ */
/* Evaluating a weights file (yoke eval)                                    */
/* ------------------------------------------------------------------------ */

typedef struct yk_engine_eval_opts {
  const char *weights;  /* GPT-2 fp32 weights file */
  const char *data;     /* token shard file or glob */
  int64_t batch;        /* B (default 4) */
  int64_t seq_len;      /* T (default 64, at most the model's maxT) */
  int64_t batches;      /* windows to average (default 8; fewer if the data is shorter) */
  int64_t threads;      /* 0 = all cores */
} yk_engine_eval_opts;

/* Mean cross-entropy of the file's model over the first `batches` windows.
 * *used = windows averaged. */
int yk_engine_eval_file(const yk_engine_eval_opts *o, double *loss, uint64_t *used, yk_diag *d);

#ifdef __cplusplus
}
#endif
#endif /* YK_ENGINE_H */
