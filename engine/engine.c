/* engine.c - building and closing an engine, evaluation, and the small
 * queries around a run (see yk_engine.h). The step itself is in step.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

/* The model's tensor-parallel collectives over the engine's tp group, in
 * fp32 under the communicator's deadline (yk_model_tp_coll). Each call's
 * whole buffer is counted into e->tp_bytes, the step's tp_bytes. */
static int tp_coll(void *ctx, yk_model_tp_op op, const float *in, float *out, size_t n, yk_diag *d) {
  yk_engine *e = ctx;
  yk_comm *c = e->comms.tp;
  int64_t t0 = yk_trace_begin(e->tkl);
  size_t whole = op == YK_TP_GATHER || op == YK_TP_SCATTER_SUM ? n * (size_t)yk_comm_size(c) : n;
  int rc;
  e->tp_bytes += whole * sizeof(float);
  switch (op) {
  case YK_TP_SUM: rc = yk_comm_allreduce_sync(c, in, out, n, YK_DT_F32, YK_OP_SUM, d); break;
  case YK_TP_MAX: rc = yk_comm_allreduce_sync(c, in, out, n, YK_DT_F32, YK_OP_MAX, d); break;
  case YK_TP_GATHER: rc = yk_comm_allgather_sync(c, in, out, whole, YK_DT_F32, d); break;
  case YK_TP_SCATTER_SUM: rc = yk_comm_reduce_scatter_sync(c, in, out, whole, YK_DT_F32, YK_OP_SUM, d); break;
  default: return yk_errorf(d, YK_EINVAL, "unknown tensor-parallel collective %d", (int)op);
  }
  if (rc) return yk_errorf(d, rc, "tensor-parallel group: %s", yk_diag_msg(d, rc));
  if (e->tkl) eng_trace_tp(e, op, whole * sizeof(float), t0);
  return 0;
}

/* Everything the model and the optimizer need, in the order a run builds
 * it. On failure the engine is left for yk_engine_close. */
static int build_model(yk_engine *e, yk_diag *d) {
  const yk_config *c = &e->cfg;
  int rc;
  if (c->train.init_weights[0]) {
    /* The weights file fixes the shape; the config must not contradict it. */
    if ((rc = yk_model_weights_read_config(c->train.init_weights, &e->mcfg, d)) != 0) return rc;
  } else if ((rc = yk_model_config_from(c, &e->mcfg, d)) != 0) {
    return rc;
  }
  if (e->T > e->mcfg.max_seq_len)
    return yk_errorf(d, YK_ECONFIG, "train.seq_len=%d exceeds the model's max_seq_len=%d", e->T, e->mcfg.max_seq_len);
  /* fp16/bf16: the model also keeps its activations in 16 bits */
  yk_precision p = yk_config_precision(c);
  yk_dtype act = p == YK_PREC_FP16 ? YK_DT_F16 : p == YK_PREC_BF16 ? YK_DT_BF16 : YK_DT_F32;
  /* An impossible split is one line before anything is allocated. */
  if ((rc = yk_model_tp_check(&e->mcfg, e->B, e->T, e->tp, (int)c->parallel.sequence, d)) != 0) return rc;
  /* Below ZeRO-2 the model's fp32 arena is the master and the products read
   * its 16-bit rounding (yk_model_tp.weights16); ZeRO-2/3 lend weights
   * already rounded. */
  yk_model_tp tp = {.size = e->tp, .rank = e->tp_rank, .sequence = (int)c->parallel.sequence, .coll = tp_coll,
                    .ctx = e, .recompute = eng_recompute_of(c),
                    .weights16 = e->zstage || eng_offloaded(c) ? YK_DT_F32 : act};
  /* this rank's arena: its tensor-parallel pieces */
  e->nparams = yk_model_tp_num_params(&e->mcfg, e->tp, e->tp_rank);
  if (e->zstage) {
    /* ZeRO-2/3: the model computes with what zero.c lends it. The initial
     * weights go through a whole arena: stage 2 keeps it (its buffers hold
     * the full weights), stage 3 keeps only its slice (build_optimizer). */
    yk_comm *comm = e->comms.dp;
    int share = (yk_comm_shm_state(comm) & 1) != 0;
    if ((rc = eng_zero_init(&e->zero, e->zstage, comm, &e->mcfg, e->tp, e->tp_rank, e->nparams,
                            (size_t)c->comm.bucket_kb * 1024, c->comm.timeout_ms, act, share, d)) != 0)
      return rc;
    yk_model_provider prov;
    eng_zero_provider(&e->zero, &prov);
    if ((rc = yk_model_create_parallel(&e->mcfg, e->B, e->T, e->dev, act, &tp, &prov, &e->model, d)) != 0) return rc;
    float *arena = e->zero.params;
    if (e->zstage == 3 && !(arena = e->init_arena = yk_alloc(e->nparams * sizeof(float))))
      return yk_errorf(d, YK_ENOMEM, "out of memory for the initial weights (%zu parameters)", e->nparams);
    yk_model_attach_params(e->model, arena);
  } else {
    /* a pipeline stage holds its own blocks' state only (eng_pipe_stage) */
    if ((rc = yk_model_create_stage(&e->mcfg, e->B, e->T, e->dev, act, &tp, &e->pipe.mstage, NULL, &e->model, d)) != 0)
      return rc;
    e->nparams = yk_model_num_params(e->model);
  }
  if (c->train.init_weights[0]) {
    if ((rc = yk_model_weights_load(e->model, c->train.init_weights, d)) != 0) return rc;
  } else if ((rc = yk_model_init_random_tp(e->model, (uint64_t)c->train.seed, d)) != 0) {
    return rc;
  }
  e->ntensors = yk_model_tensors(e->model, &e->tensors);
  return 0;
}

/* Optimizer state, ZeRO-1 slice and mixed precision. Ranks on one node keep
 * the buffers that collectives move (the reduced gradients, and under ZeRO-1
 * the gathered weights) in shared memory registered with the communicator,
 * so peers read them in place instead of copying them through the kernel. */
/* ZeRO-2/3: the rest of the state. Stage 2 is ZeRO-1's mixed-precision state
 * without the full 16-bit gradients (zero.c reduces from its windows into
 * its fp32 slice). Stage 3 keeps only this rank's slice of the weights: the
 * fp32 master itself in fp32 runs, the 16-bit weights and the fp32 master in
 * mixed precision; the whole initial arena is dropped here. */
static int build_zero_state(yk_engine *e, yk_precision prec, int share, yk_diag *d) {
  const yk_config *c = &e->cfg;
  eng_zero *z = &e->zero;
  int rc = 0;
  if (e->zstage == 2) {
    if ((rc = yk_optimizer_mixed_init(&e->mp, c, z->params, e->nparams, e->soff, e->slen, share, 0, d)) != 0)
      return rc;
    yk_free(e->mp.grads16); /* never touched: the windows hold 16-bit gradients */
    e->mp.grads16 = NULL;
    if (e->mp.params16_shm.ptr) rc = yk_comm_register(e->comms.dp, &e->mp.params16_shm, d);
  } else {
    yk_mixed *mp = &e->mp;
    memset(mp, 0, sizeof *mp);
    mp->prec = prec;
    mp->dt16 = z->dt16;
    mp->n = e->nparams;
    mp->off = e->soff;
    mp->len = e->slen;
    const float *init = e->init_arena + e->soff;
    if (prec == YK_PREC_FP32) {
      mp->master = z->pshard;
      memcpy(z->pshard, init, e->slen * sizeof(float));
    } else {
      if (!(mp->master = yk_alloc((e->slen ? e->slen : 1) * sizeof(float))))
        return yk_errorf(d, YK_ENOMEM, "out of memory for master weights (%zu parameters)", e->slen);
      memcpy(mp->master, init, e->slen * sizeof(float));
      yk_cast_from_f32(z->p16shard, z->dt16, init, e->slen, YK_ISA_AUTO);
      if (prec == YK_PREC_FP16) rc = yk_optimizer_loss_scaler_init(&mp->ls, c, d);
    }
    yk_model_attach_params(e->model, NULL);
    yk_free(e->init_arena);
    e->init_arena = NULL;
  }
  if (rc) return rc;
  yk_optimizer_adamw_from_config(&e->adamw, c);
  return yk_optimizer_lr_from_config(&e->sched, c, d);
}

/* optim.offload=disk: the first pass writes the initial state into the file
 * (the master: this rank's slice of the initial weights; m = v = 0), then in
 * mixed precision the arena takes the weights' 16-bit rounding, which is all
 * the products ever read (the master lives in the file from now on). */
static int fill_chunk(void *ctx, size_t off, size_t count, float **arr, yk_diag *d) {
  yk_engine *e = ctx;
  (void)d;
  int k = 0;
  if (e->off.narr == 3) memcpy(arr[k++], yk_model_params(e->model) + e->soff + off, count * sizeof(float));
  memset(arr[k], 0, e->off.chunk * sizeof(float));
  memset(arr[k + 1], 0, e->off.chunk * sizeof(float));
  if (count < e->off.chunk && e->off.narr == 3) memset(arr[0] + count, 0, (e->off.chunk - count) * sizeof(float));
  return 0;
}

static int build_offload(yk_engine *e, yk_diag *d) {
  const yk_config *c = &e->cfg;
  int mixed = e->mp.prec != YK_PREC_FP32, rc;
  size_t chunk = eng_offload_chunk_of(c);
  if ((rc = eng_offload_open(&e->off, c->optim.offload_dir, e->layout.rank, e->slen, mixed ? 3 : 2, chunk,
                             c->comm.timeout_ms, e->log, d)) != 0)
    return rc;
  if (mixed && !(e->off16 = yk_alloc(chunk * sizeof(uint16_t))))
    return yk_errorf(d, YK_ENOMEM, "out of memory for the offload's 16-bit chunk");
  if ((rc = eng_offload_pass(&e->off, 0, fill_chunk, e, d)) != 0) return rc;
  if (mixed) {
    eng_offload_round(yk_model_params(e->model), e->nparams, e->off16, chunk, e->mp.dt16);
    e->mp.master = NULL; /* in the file */
  }
  return 0;
}

static int build_optimizer(yk_engine *e, yk_diag *d) {
  const yk_config *c = &e->cfg;
  yk_comm *comm = e->comms.dp;
  int rc;
  eng_grads_init(&e->grads, comm, (size_t)c->comm.bucket_kb * 1024, c->comm.timeout_ms);
  int share = comm && (yk_comm_shm_state(comm) & 1);
  e->shard = comm && e->world > 1 && yk_config_zero_stage(c) >= 1;
  static const char *const what[4] = {"", "ZeRO-1: AdamW state", "ZeRO-2: AdamW state and reduced gradients",
                                      "ZeRO-3: AdamW state, gradients and weights"};
  e->soff = 0;
  e->slen = e->nparams;
  if (e->shard) {
    uint64_t off, len;
    yk_partition_even_range(e->nparams, e->world, e->rank, &off, &len);
    e->soff = (size_t)off;
    e->slen = (size_t)len;
    YK_INFO(e->log, "optimizer: sharded (%s): this rank holds and updates parameters [%zu, %zu) of %zu",
            what[e->zstage ? e->zstage : 1], e->soff, e->soff + e->slen, e->nparams);
    eng_grads_set_owned(&e->grads, e->nparams); /* and needs only that slice of the reduced gradients */
  }
  /* The moments (and, below, the master weights) of this rank's slice only;
   * on disk under optim.offload=disk (build_offload) */
  int off = eng_offloaded(c);
  if (!off) {
    e->m = yk_alloc((e->slen ? e->slen : 1) * sizeof(float));
    e->v = yk_alloc((e->slen ? e->slen : 1) * sizeof(float));
  }
  e->inputs = malloc((size_t)e->B * e->T * sizeof(int32_t));
  e->targets = malloc((size_t)e->B * e->T * sizeof(int32_t));
  if ((!off && (!e->m || !e->v)) || !e->inputs || !e->targets)
    return yk_errorf(d, YK_ENOMEM, "out of memory for optimizer state (%zu parameters)", e->slen);
  yk_precision prec = yk_config_precision(c);
  if (e->zstage) return build_zero_state(e, prec, share, d);
  /* Every precision reduces in the model's gradient arena (mixed precision
   * in 16 bits packed inside it, grads.c) and ZeRO-1 all-gathers the fp32
   * arena, which is the master. */
  if (share) {
    rc = yk_model_share_grads(e->model, d);
    if (!rc) rc = yk_comm_register(comm, yk_model_grads_shmem(e->model), d);
    if (!rc && e->shard) rc = yk_model_share_params(e->model, d); /* what ZeRO-1 all-gathers */
    if (!rc && e->shard) rc = yk_comm_register(comm, yk_model_params_shmem(e->model), d);
    if (rc == YK_EUNSUPPORTED) yk_diag_clear(d);
    else if (rc) return rc;
  }
  if ((rc = yk_optimizer_mixed_init_in_arena(&e->mp, c, yk_model_params(e->model), e->nparams, e->soff, e->slen,
                                              d)) != 0)
    return rc;
  if (off && (rc = build_offload(e, d)) != 0) return rc;
  yk_optimizer_adamw_from_config(&e->adamw, c);
  return yk_optimizer_lr_from_config(&e->sched, c, d);
}

static int build_data(yk_engine *e, yk_diag *d) {
  const yk_config *c = &e->cfg;
  int rc = yk_data_loader_open(&e->train_ld, "data.train", c->data.train, e->B, e->T, e->mcfg.vocab_size, d);
  if (rc) return rc;
  if ((rc = yk_data_loader_check_split(e->train_ld, e->world, e->accum, d)) != 0) return rc;
  if (c->data.val[0]) return yk_data_loader_open(&e->val_ld, "data.val", c->data.val, e->B, e->T, e->mcfg.vocab_size, d);
  return 0;
}

/* Pipeline stages: the plan (before the model, which holds this stage's
 * blocks only). */
static int build_pipe_plan(yk_engine *e, yk_diag *d) {
  const yk_config *c = &e->cfg;
  int rc = c->train.init_weights[0] ? yk_model_weights_read_config(c->train.init_weights, &e->mcfg, d)
                                    : yk_model_config_from(c, &e->mcfg, d);
  e->cfg.parallel.pipeline = e->layout.pp; /* the layout is what runs */
  if (!rc) rc = yk_engine_pipe_plan(&e->cfg, &e->mcfg, &e->pipe.plan, d);
  if (!rc) eng_pipe_stage(&e->pipe.plan, e->layout.pp_rank, &e->pipe.mstage);
  return rc;
}

/* Every stage's list (checked together, so a schedule that could deadlock
 * never runs), this stage's list, then its channels and slots. */
static int build_pipeline(yk_engine *e, yk_diag *d) {
  int P = e->layout.pp, rc = 0;
  yk_schedule *all = malloc((size_t)P * sizeof *all);
  if (!all) return yk_errorf(d, YK_ENOMEM, "out of memory for the pipeline schedules");
  for (int s = 0; s < P && !rc; s++) rc = yk_engine_schedule_pipeline(&e->pipe.plan, s, &all[s], d);
  if (!rc) rc = yk_engine_schedule_check_pipeline(&e->pipe.plan, all, YK_PIPE_MAX_SENDS, d);
  if (!rc) e->schedule = all[e->layout.pp_rank];
  free(all);
  return rc ? rc : eng_pipe_open(e, d);
}

int yk_engine_open(const yk_engine_opts *o, yk_engine **out, yk_diag *d) {
  yk_engine *e = calloc(1, sizeof *e);
  *out = e;
  if (!e) return yk_errorf(d, YK_ENOMEM, "out of memory");
  e->cfg = *o->cfg;
  e->log = o->log;
  e->layout = o->layout;
  e->comms = o->comms;
  e->dev = o->dev;
  e->test_delay_ms = o->test_delay_ms;
  if (e->layout.pp > 1 && yk_config_zero_stage(&e->cfg) >= 2 && e->layout.dp > 1)
    return yk_errorf(d, YK_EUNSUPPORTED, "optim.zero=%d with parallel.pipeline=%d: ZeRO-2/3 lend each layer's weights "
                     "and gradients per micro-batch, which pipeline stages do not do yet; use optim.zero=1",
                     yk_config_zero_stage(&e->cfg), e->layout.pp);
  e->rank = e->layout.dp_rank;
  e->world = e->layout.dp;
  e->tp = e->layout.tp;
  e->tp_rank = e->layout.tp_rank;
  if ((e->tp > 1) != (e->comms.tp != NULL) ||
      (e->comms.tp && (yk_comm_size(e->comms.tp) != e->tp || yk_comm_rank(e->comms.tp) != e->tp_rank)))
    return yk_errorf(d, YK_EINVAL, "the tensor-parallel communicator (%d of %d) does not match the layout (tp rank "
                     "%d of %d)", e->comms.tp ? yk_comm_rank(e->comms.tp) : 0,
                     e->comms.tp ? yk_comm_size(e->comms.tp) : 1, e->tp_rank, e->tp);
  if ((e->world > 1) != (e->comms.dp != NULL) ||
      (e->comms.dp && (yk_comm_size(e->comms.dp) != e->world || yk_comm_rank(e->comms.dp) != e->rank)))
    return yk_errorf(d, YK_EINVAL, "the data-parallel communicator (%d of %d) does not match the layout (dp rank %d "
                     "of %d)", e->comms.dp ? yk_comm_rank(e->comms.dp) : 0,
                     e->comms.dp ? yk_comm_size(e->comms.dp) : 1, e->rank, e->world);
  e->B = (int)e->cfg.train.micro_batch;
  e->T = (int)e->cfg.train.seq_len;
  e->accum = (int)e->cfg.train.grad_accum;
  /* Stage > 0 on one rank is a no-op: there is nothing to shard over. */
  int stage = yk_config_zero_stage(&e->cfg);
  e->zstage = e->world > 1 && stage >= 2 ? stage : 0;
  if (eng_offloaded(&e->cfg) && e->zstage)
    return yk_errorf(d, YK_EUNSUPPORTED, "optim.offload=disk with optim.zero=%d: the offload streams ZeRO-0/1's "
                     "update only; use optim.zero=1 (the state is sharded over the ranks as well)", e->zstage);
  int rc;
  /* A job that cannot fit is one message now, not the kernel's OOM kill
   * half-way through building it. */
  if ((rc = yk_engine_plan_of(&e->cfg, &e->layout, o->local_ranks, e->dev, &e->plan, d)) != 0 ||
      (rc = yk_engine_plan_check(&e->plan, &e->cfg, (uint64_t)e->cfg.train.memory_limit, o->local_ranks, d)) != 0)
    return rc;
  if ((rc = eng_trace_device(e, d)) != 0 || (e->layout.pp > 1 && (rc = build_pipe_plan(e, d)) != 0) ||
      (rc = build_model(e, d)) != 0 || (rc = build_optimizer(e, d)) != 0 || (rc = build_data(e, d)) != 0)
    return rc;
  if (e->layout.pp > 1) {
    if ((rc = build_pipeline(e, d)) != 0) return rc;
  } else if ((rc = yk_engine_schedule_dp(e->accum, e->mcfg.layers, &e->schedule, d)) != 0 ||
             (rc = yk_engine_schedule_check(&e->schedule, e->mcfg.layers, d)) != 0) {
    return rc;
  }
  /* The reduction learns of final gradient ranges through the model's hook;
   * the step arms it only around its reducing backward. */
  if (e->pipe.on) yk_model_set_grad_hook(e->model, eng_pipe_grads_ready, &e->pipe);
  else yk_model_set_grad_hook(e->model, eng_grads_ready, &e->grads);
  eng_ckpt_view v = {.model_params = yk_model_params(e->model), .master = e->mp.master, .m = e->m, .v = e->v,
                     .nparams = e->nparams, .soff = e->soff, .slen = e->slen,
                     .params16 = e->zstage == 3 ? (void *)e->zero.p16shard : (void *)e->mp.params16,
                     .dtype16 = e->mp.dt16,
                     .tensors = e->tensors, .ntensors = e->ntensors, .mcfg = &e->mcfg,
                     .stage = e->pipe.on ? &e->pipe.mstage : NULL, .loader = e->train_ld,
                     .scaler = e->mp.prec == YK_PREC_FP16 ? &e->mp.ls : NULL, .threads = e->dev->nthreads,
                     .off = e->off.on ? &e->off : NULL, .off16 = e->off16};
  if ((rc = eng_ckpt_open(&e->ck, &e->cfg, e->log, &e->comms, &e->layout, &v, d)) != 0) return rc;
  if ((rc = eng_ckpt_resume(&e->ck, &e->start_step, d)) != 0) return rc;
  e->steps_done = o->joining ? -1 : e->start_step;
  e->global_micro = (int64_t)e->accum * e->world;
  return eng_trace_open(e, d);
}

void yk_engine_close(yk_engine *e) {
  if (!e) return;
  eng_trace_close(e);
  eng_grads_free(&e->grads);
  eng_pipe_close(&e->pipe); /* its slots borrow the model's arenas */
  eng_zero_drain(&e->zero);
  eng_ckpt_close(&e->ck);
  yk_data_loader_close(e->train_ld);
  yk_data_loader_close(e->val_ld);
  free(e->inputs);
  free(e->targets);
  yk_free(e->m);
  yk_free(e->v);
  eng_offload_close(&e->off);
  yk_free(e->off16);
  yk_optimizer_mixed_free(&e->mp);
  yk_model_destroy(e->model);
  yk_free(e->init_arena);
  eng_zero_free(&e->zero);
  yk_device_traced_destroy(e->dev_traced); /* after everything that computed on it */
  free(e);
}

int64_t yk_engine_start_step(const yk_engine *e) { return e->start_step; }
int yk_engine_has_val(const yk_engine *e) { return e->val_ld != NULL; }

void yk_engine_request_stop(yk_engine *e, int code) { eng_ckpt_request_stop(&e->ck, code); }

int yk_engine_boundary(yk_engine *e, int64_t step_done, int *stop, int *exit_code, yk_diag *d) {
  return eng_ckpt_boundary(&e->ck, step_done, stop, exit_code, d);
}

int yk_engine_finish(yk_engine *e, int64_t step_done, yk_diag *d) { return eng_ckpt_finish(&e->ck, step_done, d); }

/* ---- evaluation ---------------------------------------------------------- */

/* Forward windows first, first + stride, ... (< n) of ld through m;
 * acc[0] += their losses, acc[1] += their count. in/tg are (B,T) buffers. */
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

int yk_engine_eval(yk_engine *e, double *loss, yk_diag *d) {
  if (!e->val_ld) return yk_errorf(d, YK_ENOTFOUND, "no validation data: set data.val");
  uint64_t n = (uint64_t)e->cfg.train.val_batches;
  uint64_t w = yk_data_loader_epoch_windows(e->val_ld);
  if (n > w) n = w;
  double acc[2] = {0, 0}; /* loss sum, windows */
  int rc = 0;
  if (e->pipe.on) {
    /* every stage runs the window; the loss is the last stage's */
    for (uint64_t q = (uint64_t)e->rank; q < n && !rc; q += (uint64_t)e->world) {
      yk_data_loader_window(e->val_ld, q, e->inputs, e->targets, NULL, NULL);
      float l;
      rc = eng_pipe_eval(&e->pipe, e->inputs, e->targets, &l, d);
      acc[0] += l;
      acc[1] += 1;
    }
    if (!rc) rc = eng_grads_sum_f64(&e->grads, acc, 2, d);
    if (!rc) *loss = acc[0] / acc[1];
    return rc ? rc : eng_pipe_share_loss(&e->pipe, e->comms.pp, loss, d);
  }
  rc = sum_window_losses(e->model, e->val_ld, (uint64_t)e->rank, (uint64_t)e->world, n, e->inputs, e->targets,
                         acc, d);
  if (rc) return rc;
  /* ZeRO-3: a forward gathers weights with the other ranks, so every rank
   * runs as many as the busiest one; the extra ones are not counted. */
  uint64_t mine = n > (uint64_t)e->rank ? (n - (uint64_t)e->rank + (uint64_t)e->world - 1) / (uint64_t)e->world : 0;
  uint64_t most = (n + (uint64_t)e->world - 1) / (uint64_t)e->world;
  for (uint64_t i = mine; e->zstage == 3 && i < most && !rc; i++) {
    double unused[2] = {0, 0};
    rc = sum_window_losses(e->model, e->val_ld, 0, 1, 1, e->inputs, e->targets, unused, d);
  }
  if (rc) return rc;
  if ((rc = eng_grads_sum_f64(&e->grads, acc, 2, d)) != 0) return rc;
  *loss = acc[0] / acc[1];
  return 0;
}

int yk_engine_eval_file(const yk_engine_eval_opts *o, double *loss, uint64_t *used, yk_diag *d) {
  yk_device *dev = NULL;
  yk_model *m = NULL;
  yk_data_loader *ld = NULL;
  int32_t *in = NULL, *tg = NULL;
  yk_model_config mc;
  int64_t B = o->batch ? o->batch : 4, T = o->seq_len ? o->seq_len : 64, batches = o->batches ? o->batches : 8;
  int rc;
  if ((rc = yk_model_weights_read_config(o->weights, &mc, d)) != 0) goto out;
  if (T > mc.max_seq_len) {
    rc = yk_errorf(d, YK_ECONFIG, "--seq-len %lld exceeds the model's max_seq_len %d", (long long)T, mc.max_seq_len);
    goto out;
  }
  if ((rc = yk_device_cpu_create(o->threads ? (int)o->threads : yk_cpu_count(), YK_ISA_AUTO, &dev, d)) != 0) goto out;
  if ((rc = yk_model_create(&mc, (int)B, (int)T, dev, &m, d)) != 0) goto out;
  if ((rc = yk_model_weights_load(m, o->weights, d)) != 0) goto out;
  if ((rc = yk_data_loader_open(&ld, "--data", o->data, B, T, mc.vocab_size, d)) != 0) goto out;
  uint64_t n = (uint64_t)batches, w = yk_data_loader_epoch_windows(ld);
  if (n > w) n = w;
  in = malloc((size_t)(B * T) * sizeof *in);
  tg = malloc((size_t)(B * T) * sizeof *tg);
  if (!in || !tg) {
    rc = yk_errorf(d, YK_ENOMEM, "out of memory");
    goto out;
  }
  double acc[2] = {0, 0};
  if ((rc = sum_window_losses(m, ld, 0, 1, n, in, tg, acc, d)) != 0) goto out;
  *loss = acc[0] / acc[1];
  *used = n;
out:
  free(in);
  free(tg);
  yk_data_loader_close(ld);
  yk_model_destroy(m);
  yk_device_destroy(dev);
  return rc;
}

/* ---- queries ------------------------------------------------------------- */

void yk_engine_memory_of(const yk_engine *e, yk_engine_memory *m) {
  uint64_t n = e->nparams, s = e->slen;
  int mixed = e->mp.prec != YK_PREC_FP32, z = e->zstage;
  memset(m, 0, sizeof *m);
  m->weights = (z == 3 ? (mixed ? 0 : s) : n) * sizeof(float);
  m->grads = (z >= 2 ? s : n) * sizeof(float);
  /* Below ZeRO-2 mixed precision holds what fp32 holds: the fp32 arena is
   * the master, the gradients have one fp32 home. ZeRO-2/3 keep their
   * 16-bit weights and a master copy of the slice. */
  m->weights16 = mixed && z >= 2 ? (z == 3 ? s : n) * sizeof(uint16_t) : 0;
  m->grads16 = 0;
  m->master = mixed && z >= 2 ? s * sizeof(float) : 0;
  m->moments = e->off.on ? 0 : 2 * s * sizeof(float); /* offloaded: in the file */
  m->model_state = m->weights16 + m->master + m->moments + m->grads;
  if (!mixed || z < 2) m->model_state += m->weights;
  else m->buffers = m->weights; /* ZeRO-2's fp32 arena the model computes with */
  if (z) {
    /* zero.c's block holds its slice of the gradients, the stage-2 weights or
     * the stage-3 slice; the rest is working buffers (windows, the
     * embedding's gradients, the gather slots) */
    uint64_t in_block = s * sizeof(float) + (z == 2 ? n * sizeof(float) : mixed ? s * sizeof(uint16_t) : s * sizeof(float));
    m->buffers += e->zero.bytes - in_block;
  }
  m->model = yk_model_memory_bytes(e->model) - (z ? 0 : 2 * n * sizeof(float)); /* with the weight slots */
  /* pipeline stages: one model instance per micro-batch alive (no arenas) */
  for (int i = 1; i < e->pipe.nslots; i++) m->model += yk_model_memory_bytes(e->pipe.slot[i]);
  m->planned_peak = e->plan.peak;
}

uint64_t yk_engine_params_checksum(yk_engine *e) {
  if (e->zstage == 3) {
    uint64_t h = 1469598103934665603ull;
    yk_diag d = {0};
    int rc = eng_zero_gather_all(&e->zero, NULL, &h, &d);
    if (rc) YK_WARN(e->log, "params checksum: gathering the weights failed (%s); reporting 0", yk_diag_msg(&d, rc));
    return rc ? 0 : h;
  }
  const unsigned char *b = (const unsigned char *)yk_model_params(e->model);
  float *whole = NULL;
  if (e->pipe.on) {
    /* collective: the stages' blocks in one arena */
    yk_diag d = {0};
    if (!(whole = yk_alloc(e->pipe.whole_n * sizeof(float))) || eng_pipe_assemble(e, whole, &d)) {
      yk_free(whole);
      return 0;
    }
    b = (const unsigned char *)whole;
  }
  uint64_t h = 1469598103934665603ull;
  size_t n = e->pipe.on ? e->pipe.whole_n : e->nparams;
  if (e->mp.prec != YK_PREC_FP32 && !e->zstage) {
    /* the weights the model computes with: the master's 16-bit rounding */
    float f[1024];
    uint16_t h16[1024];
    const float *x = (const float *)b;
    for (size_t i = 0; i < n; i += 1024) {
      size_t k = YK_MIN((size_t)1024, n - i);
      yk_cast_from_f32(h16, e->mp.dt16, x + i, k, YK_ISA_AUTO);
      yk_cast_to_f32(f, h16, e->mp.dt16, k, 1.0f, YK_ISA_AUTO);
      const unsigned char *c = (const unsigned char *)f;
      for (size_t j = 0; j < k * sizeof(float); j++) h = (h ^ c[j]) * 1099511628211ull;
    }
  } else {
    for (size_t i = 0; i < n * sizeof(float); i++) h = (h ^ b[i]) * 1099511628211ull;
  }
  yk_free(whole);
  return h;
}

/* Tensor parallelism: the group all-gathers its local arenas (padded to
 * the longest: vocabulary pieces may differ by a row) and the rank with a
 * path puts every piece in its place in the whole arena and writes it. */
static int tp_write_weights(yk_engine *e, const float *local, size_t n, const char *path, yk_diag *d) {
  size_t max = 0;
  for (int r = 0; r < e->tp; r++) max = YK_MAX(max, yk_model_tp_num_params(&e->mcfg, e->tp, r));
  size_t whole_n = yk_model_config_num_params(&e->mcfg);
  float *mine = calloc(max, sizeof(float)), *all = malloc(max * (size_t)e->tp * sizeof(float));
  float *whole = path ? malloc(whole_n * sizeof(float)) : NULL;
  int rc = 0;
  if (!mine || !all || (path && !whole))
    rc = yk_errorf(d, YK_ENOMEM, "out of memory gathering the weights of the tensor-parallel group");
  if (!rc) {
    memcpy(mine, local, n * sizeof(float));
    rc = yk_comm_allgather_sync(e->comms.tp, mine, all, max * (size_t)e->tp, YK_DT_F32, d);
    if (rc) rc = yk_errorf(d, rc, "gathering the weights of the tensor-parallel group: %s", yk_diag_msg(d, rc));
  }
  for (int r = 0; !rc && whole && r < e->tp; r++)
    rc = yk_model_tp_copy(&e->mcfg, e->tp, r, whole, all + (size_t)r * max, 0, d);
  if (!rc && whole) rc = yk_model_weights_write(path, &e->mcfg, whole, d);
  free(mine);
  free(all);
  free(whole);
  return rc;
}

int yk_engine_save_weights(yk_engine *e, const char *path, yk_diag *d) {
  /* The whole arena of this rank's tensor-parallel pieces: the model's,
   * or under ZeRO-3 gathered from the data-parallel ranks (every rank takes
   * part in those gathers). */
  float *local = yk_model_params(e->model), *full = NULL;
  int rc = 0;
  if (e->pipe.on) {
    /* collective over the stages: each holds its blocks only */
    if (!(local = full = yk_alloc(e->pipe.whole_n * sizeof(float))))
      return yk_errorf(d, YK_ENOMEM, "out of memory for the weights (%zu parameters)", e->pipe.whole_n);
    rc = eng_pipe_assemble(e, full, d);
  }
  if (e->zstage == 3) {
    int need = path || (e->tp > 1 && e->layout.dp_rank == 0);
    if (need && !(local = full = yk_alloc(e->nparams * sizeof(float))))
      return yk_errorf(d, YK_ENOMEM, "out of memory for the weights (%zu parameters)", e->nparams);
    rc = eng_zero_gather_all(&e->zero, full, NULL, d);
  }
  if (!rc && e->tp == 1 && path) rc = yk_model_weights_write(path, &e->mcfg, local, d);
  if (!rc && e->tp > 1 && e->layout.dp_rank == 0)
    rc = tp_write_weights(e, local, e->pipe.on ? e->pipe.whole_n : e->nparams, path, d);
  yk_free(full);
  return rc;
}

void yk_engine_describe(const yk_engine *e, void (*line)(void *arg, const char *text), void *arg) {
  const yk_config *c = &e->cfg;
  char buf[512];
  double tokens = (double)e->B * e->T * e->accum * e->world;
  snprintf(buf, sizeof buf, "model %s: L=%d C=%d NH=%d V=%d (Vp=%d) maxT=%d, %zu parameters", c->model.name,
           e->mcfg.layers, e->mcfg.channels, e->mcfg.heads, e->mcfg.vocab_size, e->mcfg.padded_vocab_size,
           e->mcfg.max_seq_len, e->nparams);
  line(arg, buf);
  snprintf(buf, sizeof buf,
           "global batch %d x %d x %d ranks = %d sequences of %d tokens (%.0f tokens/step); device %s, %d threads, "
           "%s kernels",
           e->B, e->accum, e->world, e->B * e->accum * e->world, e->T, tokens, e->dev->ops->name, e->dev->nthreads,
           yk_isa_name(e->dev->isa));
  line(arg, buf);
  char lay[160];
  yk_partition_layout_describe(&e->layout, lay, sizeof lay);
  snprintf(buf, sizeof buf, "layout: %s%s", lay,
           e->tp > 1 && c->parallel.sequence ? "; sequence parallel inside the tensor-parallel group" : "");
  line(arg, buf);
  if (e->comms.dp) {
    snprintf(buf, sizeof buf, "data plane %s, %d ranks, bucket %lld KiB", yk_comm_transport_name(e->comms.dp),
             e->world, (long long)c->comm.bucket_kb);
    line(arg, buf);
  }
  snprintf(buf, sizeof buf, "data: %llu training tokens in %d shard(s), %llu windows per epoch",
           (unsigned long long)yk_data_loader_total_tokens(e->train_ld), yk_data_loader_shard_count(e->train_ld),
           (unsigned long long)yk_data_loader_epoch_windows(e->train_ld));
  line(arg, buf);
  yk_engine_memory mem;
  yk_engine_memory_of(e, &mem);
  snprintf(buf, sizeof buf,
           "memory: model state %.1f MiB (weights %.1f, grads %.1f, 16-bit copies %.1f, master %.1f, moments %.1f "
           "for %zu of %zu parameters), activations and buffers %.1f MiB",
           mem.model_state / 1048576.0, mem.weights / 1048576.0, mem.grads / 1048576.0,
           (mem.weights16 + mem.grads16) / 1048576.0, mem.master / 1048576.0, mem.moments / 1048576.0, e->slen,
           e->nparams, mem.model / 1048576.0);
  line(arg, buf);
  if (e->pipe.on) {
    const yk_pipe_plan *p = &e->pipe.plan;
    int n = snprintf(buf, sizeof buf, "pipeline: %s, %d stages x %d chunks, %d micro-batches; this stage (%d) runs "
                     "blocks", yk_engine_pipe_kind_name(p->kind), p->stages, p->vstages, p->micro_batches,
                     e->pipe.stage);
    for (int k = e->pipe.stage; k < e->pipe.K && n < (int)sizeof buf - 32; k += p->stages)
      n += snprintf(buf + n, sizeof buf - (size_t)n, " [%d, %d)", p->bounds[k], p->bounds[k + 1]);
    snprintf(buf + n, sizeof buf - (size_t)n, ", %d micro-batches of activations at most", e->pipe.nslots);
    line(arg, buf);
  }
  yk_engine_schedule_describe(&e->schedule, buf, sizeof buf);
  char s2[600];
  snprintf(s2, sizeof s2, "step schedule: %s", buf);
  line(arg, s2);
}
