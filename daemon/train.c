/* train.c - `yoke train` and `yoke eval`: the step loop of one rank.
 *
 * One optimizer step (llm.c's loop, with the pieces of a real job):
 *
 *   for micro in 0..grad_accum-1:
 *       batch   <- loader window of (step, rank, micro)       data/
 *       forward  -> loss                                        model/
 *       backward, dloss = loss_scale/grad_accum, accumulate    model/
 *         (last micro-batch: bucketed all-reduce overlaps)     dp.c, collectives/
 *   [fp16/bf16: overflow check, unscale]                       optimizer/
 *   norm   <- global L2 norm of the gradient arena             optimizer/
 *   AdamW with grad_scale = clip coefficient                    optimizer/
 *   log line, validation every val_every steps, checkpoints    train_ckpt.c
 *
 * docs/training.md describes it in full. Everything a rank owns lives in
 * `trainer`; nothing is global. */
#include "yk_daemon.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dp_internal.h"
#include "train_ckpt.h" /* ckpt: checkpoints, resume, preemption */
#include "yk_data.h"
#include "yk_device.h"
#include "yk_model.h"
#include "yk_optimizer.h"

/* ------------------------------------------------------------------------ */
/* Argument parsing shared by train and eval                                */
/* ------------------------------------------------------------------------ */

/* yoke train's options: everything but --json is a config key. */
typedef struct train_opts {
  yk_config cfg;
  int json;
} train_opts;

static const yk_opt train_opts_table[] = {
    {"--set", 0, YK_OPT_CONFIG, 0, "SECTION.KEY=VALUE", "override any config key (repeatable)"},
    {"--steps", 0, YK_OPT_CONFIG, 0, "N", "same as --set train.steps=N", .key = "train.steps"},
    {"--init-weights", 0, YK_OPT_CONFIG, 0, "FILE", "start from a GPT-2 fp32 weights file (train.init_weights)",
     .key = "train.init_weights"},
    {"--save-weights", 0, YK_OPT_CONFIG, 0, "FILE", "write a GPT-2 fp32 weights file at the end (train.save_weights)",
     .key = "train.save_weights"},
    {"--resume", 0, YK_OPT_CONFIG, 0, "latest|PATH",
     "resume from the newest checkpoint in ckpt.dir, or from a checkpoint\n"
     "                            directory (same as --set ckpt.resume=...; needs ckpt.dir). With\n"
     "                            'latest' and no checkpoint yet the run starts at step 0. Checkpoints:\n"
     "                            ckpt.dir, ckpt.every (steps), ckpt.keep; SIGTERM/SIGUSR1 checkpoint at\n"
     "                            the next step boundary and exit 75 (requeue)",
     .key = "ckpt.resume"},
    {"--json", 0, YK_OPT_FLAG, offsetof(train_opts, json), NULL, "also print one JSON object per step and a summary line"},
};

static const yk_cmd_spec train_spec = {
    .name = "train",
    .synopsis = "[JOB.yaml] [options]",
    .about = "Train a GPT on this rank. Settings come from the job file (every key is in\n"
             "cluster-configs/reference.yaml), then from the options below.",
    .opts = train_opts_table,
    .nopts = YK_ARRAY_LEN(train_opts_table),
    .job_positional = 1,
    .has_config = 1,
    .cfg_off = offsetof(train_opts, cfg),
};

static const char eval_usage[] =
    "usage: yoke eval --weights FILE --data SHARDS [options]\n"
    "\n"
    "Mean cross-entropy loss of a GPT-2 weights file on token shards.\n"
    "\n"
    "options:\n"
    "  --weights FILE     GPT-2 fp32 weights file (required)\n"
    "  --data PATTERN     token shard file or glob (required)\n"
    "  --batch B          sequences per batch (default 4)\n"
    "  --seq-len T        tokens per sequence (default 64, at most the model's maxT)\n"
    "  --batches N        batches to average (default 8; fewer if the data is shorter)\n"
    "  --threads N        compute threads (default: all cores)\n"
    "  --json             last line is a JSON object with loss, batches, tokens\n"
    "  -h, --help         this help\n";

/* 1 if option argv[i] has a value after it; otherwise says so and returns 0. */
static int need_value(int argc, char **argv, int i, const char *cmd) {
  if (i + 1 >= argc) {
    fprintf(stderr, "yoke %s: option '%s' needs a value\n", cmd, argv[i]);
    return 0;
  }
  return 1;
}

static int parse_train_args(int argc, char **argv, train_opts *o, int *exit_code) {
  yk_diag d = {0};
  memset(o, 0, sizeof *o);
  int rc = yk_args_parse(&train_spec, argc, argv, o, &d);
  if ((*exit_code = yk_args_exit_code(&train_spec, rc, &d)) >= 0) return 1;
  if (!o->cfg.data.train[0]) {
    fprintf(stderr, "yoke train: no training data: set data.train in the job file or --set data.train=PATH "
                    "(make shards with 'yoke data prepare')\n");
    *exit_code = 2;
    return 1;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The trainer                                                              */
/* ------------------------------------------------------------------------ */

typedef struct trainer {
  yk_config cfg;
  yk_logger log;
  int rank, world;
  int json;
  int tty;

  yk_device *dev;
  yk_model *model;
  yk_model_config mcfg;
  const yk_tensor_desc *tensors;
  int ntensors;
  size_t nparams;

  float *m, *v; /* AdamW moments, fp32, one per parameter */
  /* Mixed precision (train.precision fp16/bf16): the model computes with
   * the 16-bit weights (params16, widened into the model's fp32 arena, so
   * every product sees exactly the rounded weights); gradients are rounded
   * to 16 bits and all-reduced in 16 bits (grads16); AdamW updates the fp32
   * master copy and rounds it back into params16. fp32: master = the model's
   * own arena and the 16-bit buffers are NULL. */
  yk_precision prec;
  yk_dtype dt16;     /* YK_DT_F16 / YK_DT_BF16, or YK_DT_F32 for fp32 */
  float *master;
  uint16_t *params16, *grads16;
  yk_shmem grads16_shm; /* grads16's memory when it is shared with the peers */
  yk_shmem params16_shm;
  /* ZeRO-1 (optim.shard, world > 1): this rank runs AdamW on the arena slice
   * [soff, soff + slen) only (its even range, the slice its checkpoint shard
   * holds) and the ranks all-gather the updated parameters; otherwise the
   * slice is the whole arena. */
  int shard;
  size_t soff, slen;
  yk_loss_scaler ls; /* fp16 only */
  yk_adamw adamw;
  yk_lr_schedule sched;

  yk_data_loader *train_ld, *val_ld;
  int32_t *inputs, *targets; /* (B,T) */

  yk_dp dp;          /* data-parallel group (world 1: no control plane, no comm) */
  int exit_code;     /* set when an event ends the run early */
  int event_code;    /* exit code of the last control-plane event (0: none) */

  ykd_ckpt_ctx ck;   /* ckpt: checkpoints, resume, preemption (train_ckpt.c) */
  int64_t start_step; /* ckpt: first step to run (> 0 after a resume) */
} trainer;

static void trainer_free(trainer *t) {
  yk_data_loader_close(t->train_ld);
  yk_data_loader_close(t->val_ld);
  free(t->inputs);
  free(t->targets);
  yk_free(t->m);
  yk_free(t->v);
  if (t->model && t->master != yk_model_params(t->model)) yk_free(t->master);
  if (t->params16_shm.ptr) yk_shmem_free(&t->params16_shm);
  else yk_free(t->params16);
  if (t->grads16_shm.ptr) yk_shmem_free(&t->grads16_shm);
  else yk_free(t->grads16);
  yk_model_destroy(t->model);
  yk_device_destroy(t->dev);
}

/* nparams 16-bit values: in shared memory registered with the
 * communicator when `shared` (peers on this node read them in place), else
 * plain memory (*p NULL when out of memory: the caller reports it). */
static int alloc16(trainer *t, int shared, const char *what, uint16_t **p, yk_shmem *shm, yk_diag *d) {
  if (!shared) {
    *p = yk_alloc(t->nparams * sizeof(uint16_t));
    return 0;
  }
  int rc = yk_shmem_alloc(t->nparams * sizeof(uint16_t), what, shm, d);
  if (rc) return rc;
  *p = shm->ptr;
  return yk_comm_register(t->dp.comm, shm, d);
}

static int trainer_init(trainer *t, yk_diag *d) {
  const yk_config *c = &t->cfg;
  int rc;
  int threads = (int)c->train.threads;
  if (threads == 0) {
    /* Ranks on one host share its cores. */
    int local = t->dp.env.local_world > 0 ? t->dp.env.local_world : 1;
    threads = yk_cpu_count() / local;
    if (threads < 1) threads = 1;
  }
  if ((rc = yk_device_cpu_create(threads, YK_ISA_AUTO, &t->dev, d)) != 0) return rc;

  if (c->train.init_weights[0]) {
    /* The weights file fixes the shape; the config must not contradict it. */
    if ((rc = yk_model_weights_read_config(c->train.init_weights, &t->mcfg, d)) != 0) return rc;
  } else if ((rc = yk_model_config_from(c, &t->mcfg, d)) != 0) {
    return rc;
  }
  int B = (int)c->train.micro_batch, T = (int)c->train.seq_len;
  if (T > t->mcfg.max_seq_len)
    return yk_errorf(d, YK_ECONFIG, "train.seq_len=%d exceeds the model's max_seq_len=%d", T, t->mcfg.max_seq_len);
  /* fp16/bf16: the model also keeps its activations in 16 bits */
  yk_precision aprec = yk_config_precision(c);
  yk_dtype act_dt = aprec == YK_PREC_FP16 ? YK_DT_F16 : aprec == YK_PREC_BF16 ? YK_DT_BF16 : YK_DT_F32;
  if ((rc = yk_model_create_ex(&t->mcfg, B, T, t->dev, act_dt, &t->model, d)) != 0) return rc;
  if (c->train.init_weights[0]) {
    if ((rc = yk_model_weights_load(t->model, c->train.init_weights, d)) != 0) return rc;
  } else {
    yk_model_init_random(t->model, (uint64_t)c->train.seed);
  }
  t->nparams = yk_model_num_params(t->model);
  t->ntensors = yk_model_tensors(t->model, &t->tensors);
  t->m = yk_alloc(t->nparams * sizeof(float));
  t->v = yk_alloc(t->nparams * sizeof(float));
  t->inputs = malloc((size_t)B * T * sizeof(int32_t));
  t->targets = malloc((size_t)B * T * sizeof(int32_t));
  if (!t->m || !t->v || !t->inputs || !t->targets)
    return yk_errorf(d, YK_ENOMEM, "out of memory for optimizer state (%zu parameters)", t->nparams);
  t->prec = yk_config_precision(c);
  t->dt16 = t->prec == YK_PREC_FP16 ? YK_DT_F16 : t->prec == YK_PREC_BF16 ? YK_DT_BF16 : YK_DT_F32;
  /* Ranks on one node: the buffer that is all-reduced (the fp32 gradient
   * arena, or grads16) lives in shared memory registered with the
   * communicator, so the peers read it in place instead of copying it
   * through the kernel. */
  int share = t->dp.comm && (yk_comm_shm_state(t->dp.comm) & 1);
  t->shard = t->dp.comm && t->world > 1 && c->optim.shard;
  t->soff = 0;
  t->slen = t->nparams;
  if (t->shard) {
    yk_comm_range(t->dp.comm, t->rank, t->nparams, &t->soff, &t->slen);
    YK_INFO(&t->log, "optimizer: sharded (ZeRO-1, optim.shard): this rank updates parameters [%zu, %zu) of %zu, then "
            "the ranks all-gather them", t->soff, t->soff + t->slen, t->nparams);
    /* and needs only that slice of the reduced gradients */
    yk_dp_set_owned(&t->dp, t->nparams);
  }
  if (share && t->prec == YK_PREC_FP32) {
    rc = yk_model_share_grads(t->model, d);
    if (!rc) rc = yk_comm_register(t->dp.comm, yk_model_grads_shmem(t->model), d);
    /* the parameters are what ZeRO-1 all-gathers */
    if (!rc && t->shard) rc = yk_model_share_params(t->model, d);
    if (!rc && t->shard) rc = yk_comm_register(t->dp.comm, yk_model_params_shmem(t->model), d);
    if (rc == YK_EUNSUPPORTED) yk_diag_clear(d);
    else if (rc) return rc;
  }
  t->master = yk_model_params(t->model);
  if (t->prec != YK_PREC_FP32) {
    t->master = yk_alloc(t->nparams * sizeof(float));
    /* the 16-bit buffers that collectives move: params16 is all-gathered
     * (ZeRO-1), grads16 reduced */
    if ((rc = alloc16(t, share && t->shard, "yoke-params16", &t->params16, &t->params16_shm, d)) != 0 ||
        (rc = alloc16(t, share, "yoke-grads16", &t->grads16, &t->grads16_shm, d)) != 0)
      return rc;
    if (!t->master || !t->params16 || !t->grads16)
      return yk_errorf(d, YK_ENOMEM, "out of memory for %s master weights (%zu parameters)", c->train.precision,
                       t->nparams);
    memcpy(t->master, yk_model_params(t->model), t->nparams * sizeof(float));
    yk_cast_from_f32(t->params16, t->dt16, t->master, t->nparams, YK_ISA_AUTO);
    yk_cast_to_f32(yk_model_params(t->model), t->params16, t->dt16, t->nparams, 1.0f, YK_ISA_AUTO);
  }
  if (t->prec == YK_PREC_FP16 && (rc = yk_optimizer_loss_scaler_init(&t->ls, c, d)) != 0) return rc;
  yk_optimizer_adamw_from_config(&t->adamw, c);
  if ((rc = yk_optimizer_lr_from_config(&t->sched, c, d)) != 0) return rc;

  if ((rc = yk_data_loader_open(&t->train_ld, "data.train", c->data.train, B, T, t->mcfg.vocab_size, d)) != 0)
    return rc;
  if ((rc = yk_data_loader_check_split(t->train_ld, t->world, (int)c->train.grad_accum, d)) != 0) return rc;
  yk_model_set_grad_hook(t->model, yk_dp_grad_ready, &t->dp);
  if (c->data.val[0] &&
      (rc = yk_data_loader_open(&t->val_ld, "data.val", c->data.val, B, T, t->mcfg.vocab_size, d)) != 0)
    return rc;
  return 0;
}

/* Forward windows first, first + stride, ... (< n) of ld through m;
 * acc[0] += their losses, acc[1] += their count. in/tg are (B,T) buffers.
 * Shared by validation in the step loop and by `yoke eval`. */
static int sum_window_losses(yk_model *m, const yk_data_loader *ld, uint64_t first, uint64_t stride, uint64_t n,
                             int32_t *in, int32_t *tg, double acc[2], yk_diag *d) {
  for (uint64_t q = first; q < n; q += stride) {
    yk_data_loader_window(ld, q, in, tg, NULL, NULL);
    float loss;
    int rc = yk_model_forward(m, in, tg, &loss, d);
    if (rc) return rc;
    acc[0] += loss;
    acc[1] += 1;
  }
  return 0;
}

/* Mean loss over the first val_batches windows of the validation set, so
 * every evaluation sees the same tokens whatever the world size: rank r
 * evaluates windows r, r + world, ... and the sums are reduced. */
static int trainer_validate(trainer *t, double *out, yk_diag *d) {
  uint64_t n = (uint64_t)t->cfg.train.val_batches;
  uint64_t w = yk_data_loader_epoch_windows(t->val_ld);
  if (n > w) n = w;
  double acc[2] = {0, 0}; /* loss sum, windows */
  int rc = sum_window_losses(t->model, t->val_ld, (uint64_t)t->rank, (uint64_t)t->world, n, t->inputs, t->targets,
                             acc, d);
  if (rc) return rc;
  rc = yk_dp_allreduce_sum_f64(&t->dp, acc, 2, d);
  if (rc) return rc;
  *out = acc[0] / acc[1];
  return 0;
}

/* Mixed precision: the overflow check on the reduced 16-bit gradients, which
 * every rank sees identically, so all ranks skip or apply together. fp16
 * feeds the loss scaler; bf16 has fp32's range, so a non-finite gradient
 * there is a real divergence and ends the run like fp32 does. */
/* First non-finite reduced 16-bit gradient (arena index), or -1. ZeRO-1:
 * each rank scans its slice (the only reduced part it has) and the ranks
 * agree on the lowest index, so every rank takes the same decision. */
static int first_nonfinite16(trainer *t, int64_t *bad, yk_diag *d) {
  int64_t b = -1;
  if (yk_optimizer_find_nonfinite(t->grads16 + t->soff, t->dt16, t->slen, YK_ISA_AUTO, &b) == 1) b += (int64_t)t->soff;
  else b = -1;
  if (t->shard) {
    int64_t v = b < 0 ? INT64_MAX : b;
    int rc = yk_comm_allreduce_sync(t->dp.comm, &v, &v, 1, YK_DT_I64, YK_OP_MIN, d);
    if (rc) return yk_errorf(d, rc, "agreeing on gradient overflow with the other ranks failed: %s", yk_diag_msg(d, rc));
    b = v == INT64_MAX ? -1 : v;
  }
  *bad = b;
  return 0;
}

static int mixed_check(trainer *t, int64_t step, float loss_scale, int *skip, yk_diag *d) {
  int64_t bad = -1;
  *skip = 0;
  int rc0 = first_nonfinite16(t, &bad, d);
  if (rc0) return rc0;
  if (bad < 0) {
    if (t->prec == YK_PREC_FP16) yk_optimizer_loss_scaler_update(&t->ls, 0);
    return 0;
  }
  const yk_tensor_desc *td = yk_optimizer_tensor_at(t->tensors, t->ntensors, (size_t)bad);
  /* Which tensor overflowed on THIS rank before the reduction (if any). */
  const yk_tensor_desc *mine =
      t->dp.local_bad >= 0 ? yk_optimizer_tensor_at(t->tensors, t->ntensors, (size_t)t->dp.local_bad) : NULL;
  if (t->prec != YK_PREC_FP16)
    return yk_errorf(d, YK_ENONFINITE, "step %lld: %s gradient of tensor '%s' is not finite; lower optim.lr (now %g)",
                     (long long)step, t->cfg.train.precision, td ? td->name : "?", t->cfg.optim.lr);
  int r = yk_optimizer_loss_scaler_update(&t->ls, 1);
  *skip = 1;
  if (r == YK_EOVERFLOW) {
    char who[160];
    if (mine) snprintf(who, sizeof who, "tensor '%s' on rank %d", mine->name, t->rank);
    else snprintf(who, sizeof who, "tensor '%s' (after the all-reduce; finite on rank %d)", td ? td->name : "?", t->rank);
    if (t->ls.cfg.stop_on_min)
      return yk_errorf(d, YK_EOVERFLOW,
                       "step %lld: fp16 gradients overflow at the minimum loss scale %g: %s; use "
                       "train.precision=bf16, lower optim.lr, or set loss_scale.on_min=continue",
                       (long long)step, t->ls.st.scale, who);
    YK_WARN(&t->log, "step %lld: overflow at the minimum loss scale %g (%s); skipping the step and going on "
            "(loss_scale.on_min=continue)", (long long)step, t->ls.st.scale, who);
    return 0;
  }
  YK_WARN(&t->log, "step %lld: fp16 gradient overflow in tensor '%s' (on this rank: '%s'); step skipped, loss scale "
          "%g -> %g", (long long)step, td ? td->name : "?", mine ? mine->name : "none", (double)loss_scale,
          t->ls.st.scale);
  return 0;
}

static void json_num(char *buf, size_t n, double x) {
  if (isfinite(x)) snprintf(buf, n, "%.6f", x);
  else snprintf(buf, n, "null");
}

/* FNV-1a over the parameter bytes: ranks compare it to prove they hold
 * identical weights. */
static uint64_t params_checksum(const float *p, size_t n) {
  const unsigned char *b = (const unsigned char *)p;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n * sizeof(float); i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

/* At a step boundary: act on what the control plane says. Returns 1 when
 * the run must stop (t->exit_code set). */
static int trainer_poll(trainer *t) {
  if (!t->dp.ctl) return 0;
  yk_daemon_event ev;
  while (yk_daemon_ctl_poll(t->dp.ctl, &ev)) {
    switch (ev.type) {
    case YK_EV_PEER_DEAD:
    case YK_EV_COORD_LOST:
      YK_ERROR(&t->log, "%s", ev.text);
      t->exit_code = t->event_code = ev.code ? ev.code : YK_EXIT_FAILURE;
      return 1;
    case YK_EV_SHUTDOWN:
    case YK_EV_CHECKPOINT_REQUESTED:
      /* A stop (SIGINT: 130) or a preemption (SIGTERM/SIGUSR1: 75), maybe
       * seen by this rank only: every rank stops at the same boundary
       * (agreed in ykd_ckpt_boundary), checkpoints, and exits with the code.
       * If the coordinator aborted the job instead, the next collective
       * fails and the code recorded here is the one we exit with. (The
       * control thread has logged the event.) */
      t->event_code = ev.code ? ev.code : YK_EXIT_FAILURE;
      ykd_ckpt_request_stop(&t->ck, t->event_code);
      break;
    default: break;
    }
  }
  return 0;
}

/* Global L2 norm of the reduced gradients. ZeRO-1: each rank sums the
 * squares of its slice; the partial sums are all-gathered as doubles and
 * added in rank order, so every rank gets the same bits. */
static int global_norm(trainer *t, const float *grads, double *norm, yk_diag *d) {
  if (!t->shard) {
    *norm = yk_optimizer_global_norm(grads, t->nparams, YK_ISA_AUTO);
    return 0;
  }
  int w = t->world;
  double *parts = malloc((size_t)w * sizeof(double));
  if (!parts) return yk_errorf(d, YK_ENOMEM, "out of memory for %d partial norms", w);
  double mine = yk_optimizer_sumsq(grads + t->soff, t->slen, YK_ISA_AUTO);
  int rc = yk_comm_allgather_sync(t->dp.comm, &mine, parts, (size_t)w, YK_DT_I64, d);
  if (rc) {
    free(parts);
    return yk_errorf(d, rc, "gradient norm: all-gather of the partial sums failed: %s", yk_diag_msg(d, rc));
  }
  double s = 0;
  for (int i = 0; i < w; i++) s += parts[i];
  free(parts);
  *norm = sqrt(s);
  return 0;
}

static void progress_bar(const trainer *t, int64_t step, int64_t steps) {
  if (!t->tty || steps <= 0) return;
  int width = 30, filled = (int)((double)(step) / (double)steps * width);
  char bar[64];
  for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
  bar[width] = '\0';
  fprintf(stdout, "\r[%s] %lld/%lld", bar, (long long)step, (long long)steps);
  fflush(stdout);
}

static int trainer_run(trainer *t, yk_diag *d) {
  const yk_config *c = &t->cfg;
  const int accum = (int)c->train.grad_accum;
  const int64_t steps = c->train.steps;
  const int B = (int)c->train.micro_batch, T = (int)c->train.seq_len;
  const double tokens_per_step = (double)B * T * accum * t->world;
  float *params = yk_model_params(t->model), *grads = yk_model_grads(t->model);
  int rc;

  YK_INFO(&t->log, "model %s: L=%d C=%d NH=%d V=%d (Vp=%d) maxT=%d, %zu parameters", c->model.name, t->mcfg.layers,
          t->mcfg.channels, t->mcfg.heads, t->mcfg.vocab_size, t->mcfg.padded_vocab_size, t->mcfg.max_seq_len,
          t->nparams);
  YK_INFO(&t->log, "global batch %d x %d x %d ranks = %d sequences of %d tokens (%.0f tokens/step); device %s, %d threads, %s kernels",
          B, accum, t->world, B * accum * t->world, T, tokens_per_step, t->dev->ops->name, t->dev->nthreads, yk_isa_name(t->dev->isa));
  if (t->dp.comm)
    YK_INFO(&t->log, "data plane %s, %d ranks, bucket %lld KiB", yk_comm_transport_name(t->dp.comm), t->world,
            (long long)c->comm.bucket_kb);
  YK_INFO(&t->log, "data: %llu training tokens in %d shard(s), %llu windows per epoch",
          (unsigned long long)yk_data_loader_total_tokens(t->train_ld), yk_data_loader_shard_count(t->train_ld),
          (unsigned long long)yk_data_loader_epoch_windows(t->train_ld));

  double first_val = NAN, last_val = NAN;
  if (t->val_ld) {
    if ((rc = trainer_validate(t, &first_val, d)) != 0) return rc;
    YK_INFO(&t->log, "step %lld | val loss %.4f", (long long)t->start_step, first_val);
    if (t->json && t->rank == 0) printf("{\"step\": %lld, \"val_loss\": %.6f}\n", (long long)t->start_step, first_val);
  }

  double total_time = 0, total_wait = 0, last_loss = NAN;
  for (int64_t step = t->start_step; step < steps; step++) {
    double t0 = yk_now_s();
    if (trainer_poll(t)) return 0;
    if (step > t->start_step) { /* ckpt: boundary after `step` steps: save, commit, preemption */
      int stop = 0;
      if ((rc = ykd_ckpt_boundary(&t->ck, step, &stop, &t->exit_code, d)) != 0) return rc;
      if (stop) return 0;
      t0 = yk_now_s();
    }
    /* fp16: scale the loss so small gradients survive the rounding to 16
     * bits; read before the scaler's update, which may grow it. */
    float loss_scale = t->prec == YK_PREC_FP16 ? (float)t->ls.st.scale : 1.0f;
    yk_model_zero_grad(t->model);
    double loss_sum = 0, fwd_s = 0, bwd_s = 0, gather_s = 0;
    for (int micro = 0; micro < accum; micro++) {
      if ((rc = yk_data_loader_next(t->train_ld, t->world, accum, t->rank, micro, t->inputs, t->targets)) != 0)
        return yk_errorf(d, rc, "data loader refused micro-batch %d of step %lld", micro, (long long)step);
      float loss;
      /* A non-finite loss is not an error here: every rank must take part in
       * this step's all-reduces, and the check on the reduced loss below ends
       * the run on all of them together. */
      double tf = yk_now_s();
      rc = yk_model_forward(t->model, t->inputs, t->targets, &loss, d);
      if (rc && rc != YK_ENONFINITE) return rc;
      fwd_s += yk_now_s() - tf;
      /* Only the last micro-batch's backward finalises the gradients, so only
       * it starts bucket all-reduces (gradient accumulation: one all-reduce
       * per step, not per micro-batch). */
      if (micro == accum - 1) yk_dp_arm(&t->dp, grads, t->grads16, t->dt16, c->comm.timeout_ms);
      double tb = yk_now_s();
      if ((rc = yk_model_backward_scaled(t->model, loss_scale / (float)accum, d)) != 0) return rc;
      bwd_s += yk_now_s() - tb;
      loss_sum += loss;
    }
    double wait_s = 0;
    if ((rc = yk_dp_finish(&t->dp, t->nparams, &wait_s, d)) != 0) return rc;
    /* The loss printed is the mean over every rank's micro-batches. */
    double loss = loss_sum / accum;
    if (t->world > 1) {
      double l[1] = {loss};
      if ((rc = yk_dp_allreduce_sum_f64(&t->dp, l, 1, d)) != 0) return rc;
      loss = l[0] / t->world;
    }
    if (!isfinite(loss))
      return yk_errorf(d, YK_ENONFINITE,
                       "step %lld: the training loss is %f; lower optim.lr (now %g) or set optim.grad_clip", (long long)step,
                       loss, c->optim.lr);

    /* fp16 overflow: the update is skipped on every rank (the batch is spent,
     * as with torch's GradScaler); logging, reporting and validation go on. */
    int skipped = 0;
    if (t->prec != YK_PREC_FP32) {
      if ((rc = mixed_check(t, step, loss_scale, &skipped, d)) != 0) return rc;
      /* Reduced 16-bit gradients -> fp32, unscaled (this rank's slice: the
       * only part its optimizer reads). */
      if (!skipped)
        yk_cast_to_f32(grads + t->soff, t->grads16 + t->soff, t->dt16, t->slen, 1.0f / loss_scale, YK_ISA_AUTO);
    }
    double lr = yk_optimizer_lr_at(&t->sched, step);
    double norm = NAN, to = yk_now_s();
    if (!skipped && (rc = global_norm(t, grads, &norm, d)) != 0) return rc;
    if (!skipped && !isfinite(norm)) {
      int64_t bad = -1;
      yk_optimizer_find_nonfinite(grads + t->soff, YK_DT_F32, t->slen, YK_ISA_AUTO, &bad);
      const yk_tensor_desc *td =
          bad >= 0 ? yk_optimizer_tensor_at(t->tensors, t->ntensors, t->soff + (size_t)bad) : NULL;
      return yk_errorf(d, YK_ENONFINITE, "step %lld: gradient of tensor '%s' is not finite; lower optim.lr (now %g)",
                       (long long)step, td ? td->name : "(in another rank's slice)", c->optim.lr);
    }
    if (!skipped) {
      float clip = yk_optimizer_clip_coef(norm, c->optim.grad_clip);
      /* AdamW counts applied steps (skipped fp16 steps don't advance its bias
       * correction, as in torch). */
      int64_t applied = step + 1 - (t->prec == YK_PREC_FP16 ? t->ls.st.overflows : 0);
      if ((rc = ykd_ckpt_before_update(&t->ck, d)) != 0) return rc; /* ckpt: snapshot copy done before the update */
      size_t o = t->soff;
      if ((rc = yk_optimizer_adamw_step(&t->adamw, applied, lr, clip, t->tensors, t->ntensors, o, t->slen,
                                        t->master + o, grads + o, t->m + o, t->v + o,
                                        t->params16 ? t->params16 + o : NULL,
                                        t->dt16 == YK_DT_F32 ? YK_DT_F16 : t->dt16)) != 0)
        return yk_errorf(d, rc, "AdamW step %lld failed", (long long)step);
      /* ZeRO-1: every rank gets the others' updated slices (the 16-bit
       * weights in mixed precision; the fp32 master stays sliced) */
      if (t->shard) {
        double ta = yk_now_s();
        rc = t->params16 ? yk_comm_allgather_sync(t->dp.comm, t->params16 + o, t->params16, t->nparams, t->dt16, d)
                         : yk_comm_allgather_sync(t->dp.comm, t->master + o, t->master, t->nparams, YK_DT_F32, d);
        if (rc) return yk_errorf(d, rc, "step %lld: all-gather of the updated parameters failed: %s", (long long)step,
                                 yk_diag_msg(d, rc));
        gather_s = yk_now_s() - ta;
        wait_s += gather_s; /* blocking communication: part of the comm wait */
      }
      if (t->params16) yk_cast_to_f32(params, t->params16, t->dt16, t->nparams, 1.0f, YK_ISA_AUTO);
    }
    double opt_s = yk_now_s() - to - gather_s; /* norm, AdamW and casts */
    yk_data_loader_advance(t->train_ld, t->world, accum);
    double dt = yk_now_s() - t0;
    if (step > t->start_step) {
      total_time += dt; /* the first step warms caches and thread pools */
      total_wait += wait_s;
    }
    last_loss = loss;
    if (t->dp.ctl) {
      yk_step_report rep = {.step = step + 1, .loss = loss, .tokens_per_s = tokens_per_step / dt, .step_ms = dt * 1e3,
                            .allreduce_ms = wait_s * 1e3, .allreduce_bytes = t->dp.bytes,
                            .loss_scale = t->prec == YK_PREC_FP16 ? t->ls.st.scale : 1.0};
      yk_daemon_ctl_report(t->dp.ctl, &rep);
    }

    int last = step + 1 == steps;
    if ((step + 1) % c->train.log_every == 0 || last) {
      if (t->tty) fputs("\r\033[K", stdout);
      YK_INFO(&t->log, "step %lld/%lld | loss %.4f | lr %.3e | norm %.3f | %.1f ms (comm wait %.1f) | %.0f tok/s%s",
              (long long)(step + 1), (long long)steps, loss, lr, norm, dt * 1e3, wait_s * 1e3, tokens_per_step / dt,
              skipped ? " | skipped (fp16 overflow)" : "");
      if (t->json && t->rank == 0)
        printf("{\"step\": %lld, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, \"ms\": %.3f, "
               "\"comm_wait_ms\": %.3f, \"tokens_per_s\": %.1f, \"allreduce_bytes\": %llu, \"loss_scale\": %g, "
               "\"fwd_ms\": %.3f, \"bwd_ms\": %.3f, \"opt_ms\": %.3f, \"gather_ms\": %.3f, \"skipped\": %s}\n",
               (long long)(step + 1), loss, lr, skipped ? 0.0 : norm, dt * 1e3, wait_s * 1e3, tokens_per_step / dt,
               (unsigned long long)t->dp.bytes, t->prec == YK_PREC_FP16 ? t->ls.st.scale : 1.0, fwd_s * 1e3,
               bwd_s * 1e3, opt_s * 1e3, gather_s * 1e3, skipped ? "true" : "false");
    }
    if (t->val_ld && ((c->train.val_every && (step + 1) % c->train.val_every == 0) || last)) {
      if ((rc = trainer_validate(t, &last_val, d)) != 0) return rc;
      if (t->tty) fputs("\r\033[K", stdout);
      YK_INFO(&t->log, "step %lld | val loss %.4f", (long long)(step + 1), last_val);
      if (t->json && t->rank == 0) printf("{\"step\": %lld, \"val_loss\": %.6f}\n", (long long)(step + 1), last_val);
    }
    progress_bar(t, step + 1, steps);
  }
  if (t->tty) fputs("\r\033[K", stdout);
  if ((rc = ykd_ckpt_finish(&t->ck, steps, d)) != 0) return rc; /* ckpt: final save */
  double mean_ms = steps - t->start_step > 1 ? total_time / (double)(steps - t->start_step - 1) * 1e3 : 0;
  double wait_frac = total_time > 0 ? total_wait / total_time : 0;
  uint64_t sum = params_checksum(params, t->nparams);
  char val[64] = "";
  if (t->val_ld) snprintf(val, sizeof val, ", val loss %.4f -> %.4f", first_val, last_val);
  YK_INFO(&t->log, "done: %lld steps, final loss %.4f%s, %.1f ms/step, %.1f%% waiting on communication, params "
          "checksum %016llx", (long long)steps, last_loss, val, mean_ms, wait_frac * 100, (unsigned long long)sum);
  if (t->json) {
    /* JSON has no NaN: absent figures (no validation set, no step run) are null. */
    char fl[32], fv[32], lv[32];
    json_num(fl, sizeof fl, last_loss);
    json_num(fv, sizeof fv, first_val);
    json_num(lv, sizeof lv, last_val);
    printf("{\"done\": true, \"rank\": %d, \"world\": %d, \"steps\": %lld, \"loss\": %s, \"val_loss_first\": %s, "
           "\"val_loss\": %s, \"ms_per_step\": %.3f, \"comm_wait_frac\": %.4f, \"params_checksum\": \"%016llx\"}\n",
           t->rank, t->world, (long long)steps, fl, fv, lv, mean_ms, wait_frac, (unsigned long long)sum);
  }
  if (c->train.save_weights[0] && t->rank == 0) {
    if ((rc = yk_model_weights_save(t->model, c->train.save_weights, d)) != 0) return rc;
    YK_INFO(&t->log, "wrote weights to %s", c->train.save_weights);
  }
  return 0;
}

/* Errors caused by another rank (it died, went silent or was aborted) end
 * this rank with the peer-dead code, so launchers can tell them apart. */
static int exit_code_for(int rc) {
  switch (rc) {
  case YK_EPEERDEAD:
  case YK_EABORTED:
  case YK_ETIMEDOUT:
  case YK_ETRANSPORT:
  case YK_ECLOSED: return YK_EXIT_PEER_DEAD;
  default: return YK_EXIT_FAILURE;
  }
}

int yk_daemon_cmd_train(int argc, char **argv) {
  train_opts o;
  int code;
  if (parse_train_args(argc, argv, &o, &code)) return code;

  trainer t;
  memset(&t, 0, sizeof t);
  t.cfg = o.cfg;
  t.json = o.json;
  t.tty = isatty(STDOUT_FILENO) && !o.json;
  int level = yk_log_level_parse(t.cfg.log.level);
  yk_logger_init(&t.log, 0, level, stderr);

  yk_diag d = {0};
  int rc = yk_dp_open(&t.dp, &t.cfg, &t.log, &d);
  t.rank = t.dp.rank;
  t.world = t.dp.world;
  t.log.rank = t.rank;
  /* The bar is for a person at a terminal running one rank; launchers give
   * ranks pseudo-terminals too, which must not get it. */
  if (t.dp.env.kind != YK_LAUNCH_SINGLE) t.tty = 0;
  if (!rc) rc = trainer_init(&t, &d);
  if (!rc) { /* ckpt: register the state, start the writer, resume */
    ykd_ckpt_view v = {.params = t.master, .m = t.m, .v = t.v, .nparams = t.nparams, .params16 = t.params16,
                       .dtype16 = t.dt16, .model_params = yk_model_params(t.model), .tensors = t.tensors,
                       .ntensors = t.ntensors, .mcfg = &t.mcfg, .loader = t.train_ld,
                       .scaler = t.prec == YK_PREC_FP16 ? &t.ls : NULL, .threads = t.dev->nthreads};
    rc = ykd_ckpt_open(&t.ck, &t.cfg, &t.log, &t.dp, &v, &d);
    if (!rc) rc = ykd_ckpt_resume(&t.ck, &t.start_step, &d);
  }
  if (rc) {
    YK_ERROR(&t.log, "%s", yk_diag_msg(&d, rc));
    code = rc == YK_EFORMAT || rc == YK_ENOTFOUND ? YK_EXIT_USAGE : yk_daemon_exit_code(rc);
  } else {
    rc = trainer_run(&t, &d);
    if (rc) {
      /* An error caused by the control plane (the job was stopped or
       * aborted, a peer died, the coordinator went away) ends with that
       * event's code, not a generic one. */
      trainer_poll(&t);
      if (t.event_code) YK_WARN(&t.log, "stopping: %s", yk_diag_msg(&d, rc));
      else YK_ERROR(&t.log, "%s", yk_diag_msg(&d, rc));
      code = t.event_code ? t.event_code : exit_code_for(rc);
    } else {
      code = t.exit_code;
    }
  }
  ykd_ckpt_close(&t.ck); /* ckpt */
  const char *reason = code == 0 ? "done" : rc ? yk_diag_msg(&d, rc) : code == YK_EXIT_REQUEUE ? "checkpointed for requeue"
                       : code == YK_EXIT_SIGINT ? "interrupted" : "stopped";
  yk_dp_close(&t.dp, code, reason);
  trainer_free(&t);
  return code;
}

/* ------------------------------------------------------------------------ */
/* yoke eval                                                                */
/* ------------------------------------------------------------------------ */

int yk_daemon_cmd_eval(int argc, char **argv) {
  const char *weights = NULL, *data = NULL;
  int64_t B = 4, T = 64, batches = 8, threads = 0;
  int json = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int64_t *num = NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(eval_usage, stdout);
      return 0;
    } else if (!strcmp(a, "--json")) {
      json = 1;
      continue;
    } else if (!strcmp(a, "--weights") || !strcmp(a, "--data")) {
      if (!need_value(argc, argv, i, "eval")) goto usage;
      if (!strcmp(a, "--weights")) weights = argv[++i];
      else data = argv[++i];
      continue;
    } else if (!strcmp(a, "--batch")) num = &B;
    else if (!strcmp(a, "--seq-len")) num = &T;
    else if (!strcmp(a, "--batches")) num = &batches;
    else if (!strcmp(a, "--threads")) num = &threads;
    else {
      fprintf(stderr, "yoke eval: unknown %s '%s'\n", a[0] == '-' ? "option" : "argument", a);
      goto usage;
    }
    if (!need_value(argc, argv, i, "eval")) goto usage;
    if (yk_parse_i64(argv[i + 1], num) != 0 || *num < (num == &threads ? 0 : 1) || *num > 1000000) {
      fprintf(stderr, "yoke eval: %s needs a positive integer, got '%s'\n", a, argv[i + 1]);
      return 2;
    }
    i++;
  }
  if (!weights || !data) {
    fprintf(stderr, "yoke eval: %s is required\n", !weights ? "--weights" : "--data");
    goto usage;
  }

  yk_logger log;
  yk_logger_init(&log, -1, YK_LOG_INFO, stderr);
  yk_diag d = {0};
  yk_device *dev = NULL;
  yk_model *m = NULL;
  yk_data_loader *ld = NULL;
  int32_t *in = NULL, *tg = NULL;
  yk_model_config mc;
  int rc, exit_code = 1;
  if ((rc = yk_model_weights_read_config(weights, &mc, &d)) != 0) goto fail;
  if (T > mc.max_seq_len) {
    rc = yk_errorf(&d, YK_ECONFIG, "--seq-len %lld exceeds the model's max_seq_len %d", (long long)T, mc.max_seq_len);
    goto fail;
  }
  if ((rc = yk_device_cpu_create(threads ? (int)threads : yk_cpu_count(), YK_ISA_AUTO, &dev, &d)) != 0) goto fail;
  if ((rc = yk_model_create(&mc, (int)B, (int)T, dev, &m, &d)) != 0) goto fail;
  if ((rc = yk_model_weights_load(m, weights, &d)) != 0) goto fail;
  if ((rc = yk_data_loader_open(&ld, "--data", data, B, T, mc.vocab_size, &d)) != 0) goto fail;
  uint64_t n = (uint64_t)batches, w = yk_data_loader_epoch_windows(ld);
  if (n > w) n = w;
  in = malloc((size_t)(B * T) * sizeof *in);
  tg = malloc((size_t)(B * T) * sizeof *tg);
  if (!in || !tg) {
    rc = yk_errorf(&d, YK_ENOMEM, "out of memory");
    goto fail;
  }
  double acc[2] = {0, 0};
  if ((rc = sum_window_losses(m, ld, 0, 1, n, in, tg, acc, &d)) != 0) goto fail;
  double mean = acc[0] / acc[1];
  printf("eval: loss %.6f over %llu batches of %lld x %lld tokens\n", mean, (unsigned long long)n, (long long)B,
         (long long)T);
  if (json)
    printf("{\"loss\": %.6f, \"batches\": %llu, \"tokens\": %llu}\n", mean, (unsigned long long)n,
           (unsigned long long)(n * (uint64_t)(B * T)));
  exit_code = 0;
  rc = 0;
fail:
  if (rc) {
    YK_ERROR(&log, "%s", yk_diag_msg(&d, rc));
    exit_code = rc == YK_ECONFIG || rc == YK_EFORMAT || rc == YK_ENOTFOUND ? 2 : 1;
  }
  free(in);
  free(tg);
  yk_data_loader_close(ld);
  yk_model_destroy(m);
  yk_device_destroy(dev);
  return exit_code;
usage:
  fputs(eval_usage, stderr);
  return 2;
}
