/* step.c - one optimizer step of one rank, top to bottom.
 *
 * The step runs the engine's schedule (yk_engine_schedule_dp for data
 * parallelism):
 *
 *   for each micro-batch m:
 *     FORWARD m     batch <- loader window of (step, dp rank, m)      data/
 *                   loss  <- forward of the model                     model/
 *     BACKWARD m    dloss = loss_scale / accum; gradients ACCUMULATE  model/
 *                   in the arena. The last micro-batch's backward is
 *                   the reducing one: as backward finalises each layer
 *                   (last layer first) the model's hook hands the range
 *                   to the bucketed reduction, which starts reducing
 *                   while backward continues with earlier layers       grads.c, collectives/
 *   REDUCE          wait for every bucket; mean loss over all ranks
 *   UPDATE          [fp16/bf16] overflow check, unscale to fp32       optimizer/
 *                   global L2 norm -> clip coefficient
 *                   AdamW on this rank's slice (ZeRO-1) or everything
 *                   [ZeRO-1] all-gather the updated weights
 *                   [fp16/bf16] widen the 16-bit weights into the model
 *
 * Shapes: inputs/targets (B,T) int32 per micro-batch; every arena (params,
 * grads, m, v, master) is (nparams,) fp32 in the model's layer-major layout;
 * grads16/params16 (nparams,) f16 or bf16. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

/* What the operations of one step share. */
typedef struct step_ctx {
  int64_t step;
  float loss_scale;  /* fp16: read before the scaler's update, which may grow it */
  double loss_sum;   /* this rank's micro-batch losses */
  double loss;       /* mean over every rank's micro-batches */
  double fwd_s, bwd_s, wait_s, opt_s, gather_s;
  double norm, lr;
  int skipped;
  uint64_t gather_bytes; /* ZeRO-1/2: the all-gather of the updated weights */
} step_ctx;

/* ---- FORWARD / BACKWARD -------------------------------------------------- */

static int op_forward(yk_engine *e, step_ctx *s, const yk_sched_op *op, yk_diag *d) {
  /* pipeline: the first chunk reads the tokens, the last the targets */
  int rc = 0, tokens = !e->pipe.on || op->chunk == 0 || op->chunk == e->pipe.K - 1;
  if (tokens) rc = yk_data_loader_next(e->train_ld, e->world, e->accum, e->rank, op->micro, e->inputs, e->targets);
  if (rc) return yk_errorf(d, rc, "data loader refused micro-batch %d of step %lld", op->micro, (long long)s->step);
  float loss;
  double t0 = yk_now_s();
  /* A non-finite loss is not an error here: every rank must take part in
   * this step's reductions, and the check on the reduced loss ends the run
   * on all of them together. */
  rc = e->pipe.on ? eng_pipe_forward(&e->pipe, op, e->inputs, e->targets, &loss, d)
                  : yk_model_forward(e->model, e->inputs, e->targets, &loss, d);
  if (rc && rc != YK_ENONFINITE) return rc;
  s->fwd_s += yk_now_s() - t0;
  s->loss_sum += loss;
  return 0;
}

static int op_backward(yk_engine *e, step_ctx *s, const yk_sched_op *op, yk_diag *d) {
  /* Gradient accumulation: only the reducing backward starts the reduction,
   * so a step reduces once, not once per micro-batch. The ranks' mean: fp32
   * gradients are averaged by the reduction; 16-bit ones are divided by the
   * ranks here already (folded into dloss) and summed, because a sum of
   * 16-bit values is rounded to 16 bits before any division and can
   * overflow fp16 where the mean would not. */
  int predivide = e->mp.prec != YK_PREC_FP32 && e->world > 1;
  /* ZeRO-2/3 keep no whole gradient arena to accumulate in: every backward
   * reduce-scatters its gradients into the rank's slice (zero.c), and the
   * schedule's reducing backward is just the last of them. */
  if (e->zstage) eng_zero_begin(&e->zero, op->micro > 0, predivide ? YK_OP_SUM : YK_OP_AVG);
  else if (op->reduce) eng_grads_begin(&e->grads, yk_model_grads(e->model), e->mp.grads16, e->mp.dt16,
                                       predivide ? YK_OP_SUM : YK_OP_AVG);
  /* A pipeline stage's reducing backward is its last, of its first chunk
   * (interleaving: the later chunks' blocks and the head were final after
   * their own last backward): their regions go first, from the arena's end
   * as the buckets expect, and this backward's follow through the hook
   * (eng_pipe_grads_ready) while it runs, overlapping the cool-down. */
  int done = op->reduce && e->pipe.on && op->layer_last < e->mcfg.layers; /* (the head is in the last chunk) */
  for (int r = yk_model_regions(e->model) - 1; done && r > op->layer_last; r--) {
    size_t off, n;
    yk_model_region_range(e->model, r, &off, &n);
    if (n) eng_pipe_grads_ready(&e->pipe, off, n); /* n = 0: a region this stage does not hold */
  }
  float scale = s->loss_scale / (float)e->accum;
  if (predivide) scale /= (float)e->world;
  double t0 = yk_now_s();
  int rc = e->pipe.on ? eng_pipe_backward(&e->pipe, op, scale, d) : yk_model_backward_scaled(e->model, scale, d);
  s->bwd_s += yk_now_s() - t0;
  return rc;
}

/* ---- SEND / RECV (pipeline) ------------------------------------------------ */

static int op_message(yk_engine *e, const yk_sched_op *op, yk_diag *d) {
  if (op->kind == YK_SCHED_SEND_ACT || op->kind == YK_SCHED_SEND_GRAD) return eng_pipe_send(&e->pipe, op, d);
  return eng_pipe_recv(&e->pipe, op, d);
}

/* ---- REDUCE -------------------------------------------------------------- */

static int op_reduce(yk_engine *e, step_ctx *s, yk_diag *d) {
  /* a pipeline's stage: its sends out, the tied wte summed, then its
   * embedding region joins the reduction the last backward started */
  int rc = e->pipe.on ? eng_pipe_finish(&e->pipe, yk_model_grads(e->model), d) : 0;
  if (!rc) rc = e->zstage ? eng_zero_finish(&e->zero, &s->wait_s, d) : eng_grads_finish(&e->grads, &s->wait_s, d);
  if (rc) return rc;
  /* The loss reported is the mean over every rank's micro-batches (a
   * pipeline's last stage has them; it tells the others). */
  double l[1] = {s->loss_sum / e->accum};
  if ((rc = eng_grads_sum_f64(&e->grads, l, 1, d)) != 0) return rc;
  s->loss = l[0] / e->world;
  if (e->pipe.on && (rc = eng_pipe_share_loss(&e->pipe, e->comms.pp, &s->loss, d)) != 0) return rc;
  if (!isfinite(s->loss))
    return yk_errorf(d, YK_ENONFINITE,
                     "step %lld: the training loss is %f; lower optim.lr (now %g) or set optim.grad_clip",
                     (long long)s->step, s->loss, e->cfg.optim.lr);
  return 0;
}

/* ---- UPDATE -------------------------------------------------------------- */

/* First non-finite reduced 16-bit gradient (arena index), or -1. ZeRO-1:
 * each rank scans its slice (the only reduced part it has) and the ranks
 * agree on the lowest index, so every rank takes the same decision. */
static int first_nonfinite16(yk_engine *e, int64_t *bad, yk_diag *d) {
  int64_t b = -1;
  /* the reduced 16-bit values were widened into the fp32 slice (ZeRO-2/3's,
   * or the model's arena, op_update): widening keeps Inf and NaN */
  const float *gs = e->zstage ? e->zero.gshard : yk_model_grads(e->model) + e->soff;
  int found = yk_optimizer_find_nonfinite(gs, YK_DT_F32, e->slen, YK_ISA_AUTO, &b);
  if (found == 1)
    b += (int64_t)e->soff;
  else
    b = -1;
  /* Every rank must take the same decision: the data-parallel ranks under
   * ZeRO-1 scanned different slices, tensor-parallel ranks hold different
   * pieces. */
  yk_comm *groups[3] = {e->shard ? e->comms.dp : NULL, e->tp > 1 ? e->comms.tp : NULL,
                        e->pipe.on ? e->comms.pp : NULL};
  for (int g = 0; g < 3; g++) {
    if (!groups[g]) continue;
    int64_t v = b < 0 ? INT64_MAX : b;
    int rc = yk_comm_allreduce_sync(groups[g], &v, &v, 1, YK_DT_I64, YK_OP_MIN, d);
    if (rc) return yk_errorf(d, rc, "agreeing on gradient overflow with the other ranks failed: %s", yk_diag_msg(d, rc));
    b = v == INT64_MAX ? -1 : v;
  }
  *bad = b;
  return 0;
}

/* Mixed precision: the overflow check on the reduced 16-bit gradients, which
 * every rank sees identically, so all ranks skip or apply together. fp16
 * feeds the loss scaler; bf16 has fp32's range, so a non-finite gradient
 * there is a real divergence and ends the run like fp32 does. */
static int mixed_check(yk_engine *e, step_ctx *s, yk_diag *d) {
  int64_t bad = -1;
  int rc = first_nonfinite16(e, &bad, d);
  if (rc) return rc;
  yk_loss_scaler *ls = &e->mp.ls;
  if (bad < 0) {
    if (e->mp.prec == YK_PREC_FP16) yk_optimizer_loss_scaler_update(ls, 0);
    return 0;
  }
  const yk_tensor_desc *td = yk_optimizer_tensor_at(e->tensors, e->ntensors, (size_t)bad);
  /* Which tensor overflowed on THIS rank before the reduction (if any). */
  int64_t local_bad = e->zstage ? e->zero.local_bad : e->grads.local_bad;
  const yk_tensor_desc *mine =
      local_bad >= 0 ? yk_optimizer_tensor_at(e->tensors, e->ntensors, (size_t)local_bad) : NULL;
  if (e->mp.prec != YK_PREC_FP16)
    return yk_errorf(d, YK_ENONFINITE, "step %lld: %s gradient of tensor '%s' is not finite; lower optim.lr (now %g)",
                     (long long)s->step, e->cfg.train.precision, td ? td->name : "?", e->cfg.optim.lr);
  int r = yk_optimizer_loss_scaler_update(ls, 1);
  s->skipped = 1;
  if (r == YK_EOVERFLOW) {
    char who[160];
    if (mine) snprintf(who, sizeof who, "tensor '%s' on rank %d", mine->name, e->rank);
    else snprintf(who, sizeof who, "tensor '%s' (after the all-reduce; finite on rank %d)", td ? td->name : "?", e->rank);
    if (ls->cfg.stop_on_min)
      return yk_errorf(d, YK_EOVERFLOW,
                       "step %lld: fp16 gradients overflow at the minimum loss scale %g: %s; use "
                       "train.precision=bf16, lower optim.lr, or set loss_scale.on_min=continue",
                       (long long)s->step, ls->st.scale, who);
    YK_WARN(e->log, "step %lld: overflow at the minimum loss scale %g (%s); skipping the step and going on "
            "(loss_scale.on_min=continue)", (long long)s->step, ls->st.scale, who);
    return 0;
  }
  YK_WARN(e->log, "step %lld: fp16 gradient overflow in tensor '%s' (on this rank: '%s'); step skipped, loss scale "
          "%g -> %g", (long long)s->step, td ? td->name : "?", mine ? mine->name : "none", (double)s->loss_scale,
          ls->st.scale);
  return 0;
}

/* The sum of one double per rank of c, added in rank order so every rank
 * gets the same bits (the values travel as 64-bit integers: bit patterns). */
static int sum_in_rank_order(yk_comm *c, double *v, const char *what, yk_diag *d) {
  int w = yk_comm_size(c);
  double *parts = malloc((size_t)w * sizeof(double));
  if (!parts) return yk_errorf(d, YK_ENOMEM, "out of memory for %d partial sums", w);
  int rc = yk_comm_allgather_sync(c, v, parts, (size_t)w, YK_DT_I64, d);
  if (rc) {
    free(parts);
    return yk_errorf(d, rc, "%s: all-gather of the partial sums failed: %s", what, yk_diag_msg(d, rc));
  }
  double sum = 0;
  for (int i = 0; i < w; i++) sum += parts[i];
  free(parts);
  *v = sum;
  return 0;
}

/* Sum of squares of this rank's gradient slice gslice = elements [soff,
 * soff + slen) of the arena, where, under tensor parallelism, a replicated
 * tensor (the same values on every rank of the group) counts on
 * tensor-parallel rank 0 only, so the group's sum counts it once. */
static double sumsq_once(const yk_engine *e, const float *gslice) {
  size_t lo = e->soff, len = e->slen;
  /* a pipeline's last stage holds a copy of the first stage's wte gradient */
  int wte_twin = e->pipe.on && e->pipe.stage == e->pipe.P - 1;
  if (e->tp == 1 && !wte_twin) return yk_optimizer_sumsq(gslice, len, YK_ISA_AUTO);
  double s = 0;
  for (int i = 0; i < e->ntensors; i++) {
    const yk_tensor_desc *t = &e->tensors[i];
    size_t a = YK_MAX(lo, t->offset), b = YK_MIN(lo + len, t->offset + t->numel);
    if (a >= b || (t->split == YK_SPLIT_REPLICATED && e->tp_rank != 0)) continue;
    if (wte_twin && t->offset == e->pipe.wte_off) continue;
    s += yk_optimizer_sumsq(gslice + (a - lo), b - a, YK_ISA_AUTO);
  }
  return s;
}

/* Global L2 norm of the reduced gradients (gslice: this rank's slice).
 * ZeRO: each rank sums the squares of its slice and the data-parallel
 * ranks add the partial sums; tensor parallelism adds the group's pieces
 * the same way. */
static int global_norm(yk_engine *e, const float *gslice, double *norm, yk_diag *d) {
  if (!e->shard && e->tp == 1 && !e->pipe.on) {
    *norm = yk_optimizer_global_norm(gslice, e->nparams, YK_ISA_AUTO);
    return 0;
  }
  double v = sumsq_once(e, gslice);
  int rc = 0;
  if (e->shard) rc = sum_in_rank_order(e->comms.dp, &v, "gradient norm over the data-parallel ranks", d);
  if (!rc && e->tp > 1) rc = sum_in_rank_order(e->comms.tp, &v, "gradient norm over the tensor-parallel group", d);
  /* each stage's gradients are zero outside its blocks */
  if (!rc && e->pipe.on) rc = sum_in_rank_order(e->comms.pp, &v, "gradient norm over the pipeline stages", d);
  *norm = sqrt(v);
  return rc;
}

/* optim.offload=disk: AdamW on one chunk of the slice, its master (mixed
 * precision), m and v in the offload's staging set. The same kernel on the
 * same elements as the in-memory update (AdamW is element-wise, so a chunk's
 * call gives each element the bits one call over the slice gives); mixed
 * precision widens the chunk's rounded weights into the arena, which is what
 * the products read. */
typedef struct off_step {
  yk_engine *e;
  int64_t applied;
  double lr;
  float clip;
  const float *gs;
} off_step;
static int update_chunk(void *ctx, size_t off, size_t count, float **arr, yk_diag *d) {
  off_step *u = ctx;
  yk_engine *e = u->e;
  float *arena = yk_model_params(e->model) + e->soff + off;
  int mixed = e->off.narr == 3, rc;
  float *p = mixed ? arr[0] : arena, *m = arr[mixed], *v = arr[mixed + 1];
  if ((rc = yk_optimizer_adamw_step(&e->adamw, u->applied, u->lr, u->clip, e->tensors, e->ntensors, e->soff + off,
                                    count, p, u->gs + off, m, v, mixed ? e->off16 : NULL,
                                    mixed ? e->mp.dt16 : YK_DT_F16)) != 0)
    return yk_errorf(d, rc, "AdamW on offloaded chunk at %zu failed", e->soff + off);
  if (mixed) yk_cast_to_f32(arena, e->off16, e->mp.dt16, count, 1.0f, YK_ISA_AUTO);
  return 0;
}

static const yk_trace_name T_GATHER = {"allgather params", "wait", "bytes", NULL};

static int op_update(yk_engine *e, step_ctx *s, yk_diag *d) {
  float *params = yk_model_params(e->model);
  /* this rank's slice of the reduced gradients: in the model's arena, or
   * ZeRO-2/3's own slice */
  float *gs = e->zstage ? e->zero.gshard : yk_model_grads(e->model) + e->soff;
  yk_mixed *mp = &e->mp;
  double t0 = yk_now_s();
  int rc;
  s->lr = yk_optimizer_lr_at(&e->sched, s->step);
  s->norm = NAN;
  /* fp16/bf16: skip on overflow (fp16) or stop; else the reduced 16-bit
   * gradients -> fp32, unscaled (this rank's slice: all its optimizer reads). */
  if (mp->prec != YK_PREC_FP32) {
    /* the slice widened from its buckets' packed 16-bit form (grads.c),
     * unscaled on the way; ZeRO-2/3 widened already, so the same fp32
     * multiply here */
    float mul = 1.0f / s->loss_scale;
    if (!e->zstage) eng_grads_widen(&e->grads, e->soff, e->slen, mul);
    else
      for (size_t i = 0; i < e->slen; i++) gs[i] *= mul;
    if ((rc = mixed_check(e, s, d)) != 0) return rc;
    if (s->skipped) {
      /* fp16 overflow: every rank skips the update (the batch is spent, as
       * with torch's GradScaler); logging and validation go on. */
      s->opt_s = yk_now_s() - t0;
      return 0;
    }
  }
  if ((rc = global_norm(e, gs, &s->norm, d)) != 0) return rc;
  if (!isfinite(s->norm)) {
    int64_t bad = -1;
    yk_optimizer_find_nonfinite(gs, YK_DT_F32, e->slen, YK_ISA_AUTO, &bad);
    const yk_tensor_desc *td =
        bad >= 0 ? yk_optimizer_tensor_at(e->tensors, e->ntensors, e->soff + (size_t)bad) : NULL;
    return yk_errorf(d, YK_ENONFINITE, "step %lld: gradient of tensor '%s' is not finite; lower optim.lr (now %g)",
                     (long long)s->step, td ? td->name : "(in another rank's slice)", e->cfg.optim.lr);
  }
  float clip = yk_optimizer_clip_coef(s->norm, e->cfg.optim.grad_clip);
  /* AdamW counts applied steps: skipped fp16 steps don't advance its bias
   * correction, as in torch. */
  int64_t applied = s->step + 1 - (mp->prec == YK_PREC_FP16 ? mp->ls.st.overflows : 0);
  /* A checkpoint's snapshot copy may still be reading the arenas. */
  if ((rc = eng_ckpt_before_update(&e->ck, d)) != 0) return rc;
  size_t o = e->soff;
  /* master, m and v hold this rank's slice only: slice-relative pointers */
  uint16_t *p16 = e->zstage == 3 ? e->zero.p16shard : mp->params16 ? mp->params16 + o : NULL;
  if (e->off.on) {
    off_step u = {.e = e, .applied = applied, .lr = s->lr, .clip = clip, .gs = gs};
    if ((rc = eng_offload_pass(&e->off, 1, update_chunk, &u, d)) != 0) return rc;
  } else if ((rc = yk_optimizer_adamw_step(&e->adamw, applied, s->lr, clip, e->tensors, e->ntensors, o, e->slen,
                                    mp->master, gs, e->m, e->v, p16,
                                    mp->dt16 == YK_DT_F32 ? YK_DT_F16 : mp->dt16)) != 0)
    return yk_errorf(d, rc, "AdamW step %lld failed", (long long)s->step);
  /* ZeRO-3: the updated slice is all a rank holds; the next forward gathers
   * it layer by layer. */
  if (e->zstage == 3) {
    eng_zero_params_changed(&e->zero);
    s->opt_s = yk_now_s() - t0;
    return 0;
  }
  /* ZeRO-1: every rank gets the others' updated slices (the 16-bit weights
   * in mixed precision, the fp32 weights otherwise: the master stays sliced). */
  if (e->shard) {
    double ta = yk_now_s();
    int64_t tg = yk_trace_begin(e->tk);
    rc = mp->params16 ? yk_comm_allgather_sync(e->comms.dp, mp->params16 + o, mp->params16, e->nparams, mp->dt16, d)
                      : yk_comm_allgather_sync(e->comms.dp, params + o, params, e->nparams, YK_DT_F32, d);
    if (rc)
      return yk_errorf(d, rc, "step %lld: all-gather of the updated parameters failed: %s", (long long)s->step,
                       yk_diag_msg(d, rc));
    s->gather_s = yk_now_s() - ta;
    s->gather_bytes = e->nparams * (mp->params16 ? yk_dtype_size(mp->dt16) : sizeof(float));
    yk_trace_end(e->tk, &T_GATHER, tg, (double)(e->nparams * (mp->params16 ? 2 : 4)), 0);
  }
  yk_optimizer_mixed_publish(mp, params);
  s->opt_s = yk_now_s() - t0 - s->gather_s;
  return 0;
}

/* ---- the step ------------------------------------------------------------ */

int yk_engine_step(yk_engine *e, int64_t step, yk_step_stats *out, yk_diag *d) {
  step_ctx s = {.step = step, .loss_scale = yk_optimizer_mixed_loss_scale(&e->mp)};
  double t0 = yk_now_s();
  int rc = 0;
  int64_t tt = eng_trace_step_begin(e, step); /* train.trace: the step's spans (trace.c) */
  yk_model_zero_grad(e->model);
  e->tp_bytes = 0;
  e->pipe.wait_s = 0;
  if (e->zstage) eng_zero_step_start(&e->zero);
  eng_trace_prologue(e, tt);
  for (int i = 0; i < e->schedule.n && !rc; i++) {
    const yk_sched_op *op = &e->schedule.ops[i];
    int64_t to = yk_trace_begin(e->tk);
    switch (op->kind) {
    case YK_SCHED_FORWARD: rc = op_forward(e, &s, op, d); break;
    case YK_SCHED_BACKWARD: rc = op_backward(e, &s, op, d); break;
    case YK_SCHED_REDUCE: rc = op_reduce(e, &s, d); break;
    case YK_SCHED_UPDATE: rc = op_update(e, &s, d); break;
    case YK_SCHED_SEND_ACT:
    case YK_SCHED_RECV_ACT:
    case YK_SCHED_SEND_GRAD:
    case YK_SCHED_RECV_GRAD: rc = op_message(e, op, d); break;
    default: rc = yk_errorf(d, YK_EUNSUPPORTED, "schedule operation %d cannot run in this layout", (int)op->kind);
    }
    eng_trace_op(e, op, to);
  }
  if (rc) return rc;
  yk_data_loader_advance(e->train_ld, e->world, e->accum);
  double dt = yk_now_s() - t0;
  *out = (yk_step_stats){
      .step = step + 1,
      .loss = s.loss,
      .lr = s.lr,
      .grad_norm = s.norm,
      .skipped = s.skipped,
      .step_ms = dt * 1e3,
      .fwd_ms = s.fwd_s * 1e3,
      .bwd_ms = s.bwd_s * 1e3,
      .comm_wait_ms = (s.wait_s + s.gather_s + e->pipe.wait_s) * 1e3, /* the gather and pipeline receives block */
      .opt_ms = s.opt_s * 1e3,
      .gather_ms = s.gather_s * 1e3,
      .tokens_per_s = (double)e->B * e->T * e->accum * e->world / dt,
      /* ZeRO-2/3: the reduce-scatters and (stage 3) the weight gathers */
      .allreduce_bytes = e->zstage ? e->zero.bytes_reduce + e->zero.bytes_gather : e->grads.bytes,
      .dp_bytes = (e->zstage ? e->zero.bytes_reduce + e->zero.bytes_gather : e->grads.bytes) + s.gather_bytes,
      .tp_bytes = e->tp_bytes,
      .loss_scale = e->mp.prec == YK_PREC_FP16 ? e->mp.ls.st.scale : 1.0,
  };
  eng_trace_step_end(e, step, tt, out);
  return 0;
}
