/* yk_optimizer.h - the one public header of yoke's `optimizer` module.
 *
 * What lives here (all on flat fp32 arrays, so it works on a whole parameter
 * arena or on one rank's slice of it for ZeRO-style sharded state):
 *   - AdamW with decoupled weight decay and bias correction, exactly the
 *     update of torch.optim.AdamW, with a per-tensor decay mask taken from the
 *     model's yk_tensor_desc table, and an optional 16-bit copy of the updated
 *     master weights (fp16 / bf16 mixed precision);
 *   - learning-rate schedules (constant, linear warmup + cosine decay);
 *   - gradient clipping by global L2 norm (sum of squares exposed so ranks
 *     holding slices can combine it);
 *   - the dynamic loss scaler for fp16 and the Inf/NaN scan that feeds it.
 *
 * Nothing here allocates or keeps global state: the caller owns every array
 * and every struct. No function blocks.
 *
 * Vector kernels: AVX2 selected at run time by common's yk_isa_resolve,
 * portable scalar fallback (YK_ISA_PORTABLE); the 16-bit copy is made with
 * common's yk_cast_from_f32. The AVX2 kernels do the same IEEE operations in
 * the same order as the scalar code (no FMA contraction: the file is built
 * with -ffp-contract=off and the AdamW update is memory-bound, so FMA buys
 * nothing), hence the two variants give BITWISE-identical results, and each
 * is deterministic. tests/optimizer checks this (tolerance: 0 ulp).
 *
 * Threads: every function is reentrant. To spread one AdamW step over k
 * threads, give each a disjoint slice (off, count) of the arena; the result
 * is bitwise identical to one call over the whole arena (each element's
 * update depends only on that element).
 *
 * A training step with all of it (fp16; arenas of n elements; t/nt the tensor table):
 *
 *   int64_t bad;                       // on the all-reduced grads, so every rank agrees
 *   int ovf = yk_optimizer_find_nonfinite(g16, YK_DT_F16, n, YK_ISA_AUTO, &bad);
 *   float inv = (float)(1.0 / ls.st.scale);     // read the scale BEFORE update()
 *   int rc = yk_optimizer_loss_scaler_update(&ls, ovf);
 *   if (rc == YK_EOVERFLOW) { name yk_optimizer_tensor_at(t, nt, bad)->name;
 *                             stop if ls.cfg.stop_on_min, else skip the step }
 *   else if (rc == YK_LS_SKIP) skip the step;
 *   else {
 *     yk_cast_to_f32(g32, g16, YK_DT_F16, n, inv, YK_ISA_AUTO);   // unscale (yk_common.h)
 *     double ss = yk_optimizer_sumsq(g32, n, YK_ISA_AUTO);  // sharded: all-reduce ss
 *     float coef = yk_optimizer_clip_coef(sqrt(ss), cfg.optim.grad_clip);
 *     yk_optimizer_adamw_step(&h, step + 1, yk_optimizer_lr_at(&sched, step), coef,
 *                             t, nt, 0, n, p32, g32, m, v, p16, YK_DT_F16);
 *   }
 * fp32 runs skip the scaler and the casts: scan g32 only if they want to
 * refuse non-finite gradients (the norm is non-finite then too).
 */
#ifndef YK_OPTIMIZER_H
#define YK_OPTIMIZER_H

#include "yk_common.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Kernel variant: every `isa` here (and yk_adamw.isa) goes through
 * yk_isa_resolve (yk_common.h) and runs its choice or its fallback: AUTO
 * follows $YK_ISA (an unknown value means AUTO here; the device reports it),
 * AVX2 on a CPU without it runs PORTABLE (never faults). */

/* ------------------------------------------------------------------------ */
/* AdamW                                                                    */
/* ------------------------------------------------------------------------ */

/* Hyper-parameters that stay fixed for a run (lr varies per step and is an
 * argument of the step function). */
typedef struct yk_adamw {
  double beta1, beta2, eps, weight_decay;
  yk_isa isa;
} yk_adamw;

/* From config keys optim.beta1, optim.beta2, optim.eps, optim.weight_decay;
 * isa = AUTO. */
void yk_optimizer_adamw_from_config(yk_adamw *h, const yk_config *c);

/* One AdamW step (torch.optim.AdamW, amsgrad=False, maximize=False) on the
 * slice [off, off + count) of a parameter arena:
 *
 *   g  = grads[i] * grad_scale                       (fp32 multiply; skipped when grad_scale == 1)
 *   p  = p * (1 - lr*wd_i)                           (wd_i = weight_decay if the element's tensor has decay=1, else 0)
 *   m  = beta1*m + (1-beta1)*g
 *   v  = beta2*v + (1-beta2)*g*g
 *   p  = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 *
 * t = `step` counts optimizer steps from 1 (the first call uses t = 1), as
 * torch's state['step'] does after its increment. The per-step scalars
 * (1 - lr*wd, 1-beta, the bias corrections) are computed in double and
 * rounded to fp32 once, as torch does with Python floats; everything per
 * element is fp32.
 *
 * grad_scale folds unscaling and clipping into the step so no extra pass over
 * the gradients is needed: grad_scale = clip_coef / loss_scale (pass 1.0f for
 * neither).
 *
 * Arrays are SLICE-relative: params, grads, m, v (and params16) point at the
 * first element of the slice, i.e. at arena + off; they hold `count` elements
 * (fp32; params16 is fp16 or bf16 per dt16). `off` is only used to look each
 * element up in the tensor table, so a rank holding optimizer state for its
 * shard passes its shard's m and v and the arena offset of the shard.
 *
 * tensors (n_tensors entries) must be sorted by offset and non-overlapping
 * (YK_EINVAL otherwise); arena elements covered by no tensor (alignment
 * padding) get no weight decay. tensors == NULL means "every element decays".
 *
 * params16 == NULL: no 16-bit copy. Otherwise, after the update,
 * params16[i] = round_to_nearest_even(p[i]) in dt16 (YK_DT_F16 or YK_DT_BF16;
 * other types -> YK_EINVAL), made by yk_cast_from_f32: the bits of
 * yk_f32_to_f16 / yk_f32_to_bf16. (Casting whole arenas, e.g. the initial
 * 16-bit weights or the reduced 16-bit gradients, is yk_cast_from_f32 /
 * yk_cast_to_f32 in yk_common.h.)
 *
 * Returns 0, or YK_EINVAL for a bad table, dtype or step < 1. */
int yk_optimizer_adamw_step(const yk_adamw *h, int64_t step, double lr, float grad_scale,
                            const yk_tensor_desc *tensors, int n_tensors, size_t off, size_t count,
                            float *params, const float *grads, float *m, float *v,
                            void *params16, yk_dtype dt16);

/* ------------------------------------------------------------------------ */
/* Learning-rate schedule                                                   */
/* ------------------------------------------------------------------------ */

typedef enum { YK_LR_CONSTANT = 0, YK_LR_COSINE = 1 } yk_lr_kind;

typedef struct yk_lr_schedule {
  yk_lr_kind kind;
  double lr;            /* peak lr (optim.lr) */
  double min_lr;        /* cosine floor (optim.min_lr) */
  int64_t warmup_steps; /* optim.warmup_steps */
  int64_t total_steps;  /* train.steps */
} yk_lr_schedule;

/* From optim.schedule, optim.lr, optim.min_lr, optim.warmup_steps and
 * train.steps. YK_ECONFIG (naming the key) for an unknown schedule name or
 * min_lr > lr. */
int yk_optimizer_lr_from_config(yk_lr_schedule *s, const yk_config *c, yk_diag *d);

/* The learning rate for optimizer step `step`, counted from 0 (the first
 * step uses step = 0), in double:
 *
 *   step < W (warmup, both kinds):  lr * (step + 1) / W
 *   constant, step >= W:            lr
 *   cosine, W <= step < N:          min_lr + 0.5 * (1 + cos(pi * (step - W) / (N - W))) * (lr - min_lr)
 *   cosine, step >= N:              min_lr
 *
 * W = warmup_steps, N = total_steps. This is llm.c's schedule (and nanoGPT's
 * with lr_decay_iters = N, except for the +1 in warmup): the first step runs
 * at lr/W, step W at the full lr, and the decay reaches min_lr at step N. */
double yk_optimizer_lr_at(const yk_lr_schedule *s, int64_t step);

/* ------------------------------------------------------------------------ */
/* Gradient clipping by global L2 norm                                      */
/* ------------------------------------------------------------------------ */

/* Sum of squares of n fp32 values, accumulated in double in a fixed order
 * (element i goes to accumulator i % 8; the 8 accumulators are added as
 * ((a0+a1)+(a2+a3))+((a4+a5)+(a6+a7))). Same result for every isa. Ranks that
 * hold slices all-reduce these sums (in a fixed order) and take sqrt. */
double yk_optimizer_sumsq(const float *x, size_t n, yk_isa isa);

/* sqrt(yk_optimizer_sumsq(x, n, isa)). */
double yk_optimizer_global_norm(const float *x, size_t n, yk_isa isa);

/* torch.nn.utils.clip_grad_norm_'s factor: max_norm / (norm + 1e-6), capped
 * at 1. Returns 1 when max_norm <= 0 (clipping off). A non-finite norm (Inf
 * or NaN) gives NaN when clipping is on: the caller must skip such a step
 * (see the loss scaler and yk_optimizer_find_nonfinite). */
float yk_optimizer_clip_coef(double norm, double max_norm);

/* x[i] *= s for n fp32 values (fp32 multiply). */
void yk_optimizer_scale(float *x, size_t n, float s, yk_isa isa);

/* ------------------------------------------------------------------------ */
/* Overflow detection                                                       */
/* ------------------------------------------------------------------------ */

/* Scan n values of type dt (YK_DT_F32, YK_DT_F16 or YK_DT_BF16) for Inf or
 * NaN. Returns 1 and sets *first to the index of the first one, 0 if all are
 * finite (*first = -1), YK_EINVAL for another dt. Map the index to a tensor
 * name with yk_optimizer_tensor_at. */
int yk_optimizer_find_nonfinite(const void *x, yk_dtype dt, size_t n, yk_isa isa, int64_t *first);

/* The table entry whose [offset, offset + numel) holds arena element
 * `index`, or NULL. Any order of table works (linear scan). */
const yk_tensor_desc *yk_optimizer_tensor_at(const yk_tensor_desc *tensors, int n_tensors, size_t index);

/* ------------------------------------------------------------------------ */
/* Dynamic loss scaler (fp16)                                               */
/* ------------------------------------------------------------------------ */

/* Settings (config keys loss_scale.*). */
typedef struct yk_loss_scaler_cfg {
  double init;            /* starting scale */
  double min;             /* floor */
  double growth_factor;   /* scale *= growth_factor after growth_interval clean steps */
  double backoff;         /* scale *= backoff (then clamped to min) on a counted overflow */
  int64_t growth_interval;
  int64_t hysteresis;     /* consecutive overflows before the first backoff (>= 1) */
  int stop_on_min;        /* loss_scale.on_min: 1 = stop, 0 = continue */
} yk_loss_scaler_cfg;

/* Everything that changes while training: a plain struct of fixed-size
 * fields, saved and restored verbatim by checkpoints. */
typedef struct yk_loss_scaler_state {
  double scale;
  int64_t clean_steps;     /* clean steps since the last scale change or overflow */
  int64_t hysteresis_left; /* overflows still tolerated before backing off */
  int64_t overflows;       /* total overflowed (skipped) steps */
  int64_t backoffs;        /* total times the scale went down */
  int64_t growths;         /* total times the scale went up */
} yk_loss_scaler_state;

typedef struct yk_loss_scaler {
  yk_loss_scaler_cfg cfg;
  yk_loss_scaler_state st;
} yk_loss_scaler;

/* Results of yk_optimizer_loss_scaler_update besides YK_EOVERFLOW. */
#define YK_LS_APPLY 0 /* gradients are finite: unscale and apply the step */
#define YK_LS_SKIP 1  /* overflow: skip this step (scale may have dropped) */

/* From the config keys; YK_ECONFIG naming the key for min > init, hysteresis
 * < 1, growth_interval < 1, backoff outside (0, 1], growth_factor < 1, or an
 * unknown on_min. State starts at scale = init, hysteresis_left = hysteresis. */
int yk_optimizer_loss_scaler_init(yk_loss_scaler *ls, const yk_config *c, yk_diag *d);
/* Same from explicit settings (validated the same way). */
int yk_optimizer_loss_scaler_init_cfg(yk_loss_scaler *ls, const yk_loss_scaler_cfg *cfg, yk_diag *d);

/* Feed the result of one step's overflow check (every rank must pass the same
 * value, e.g. computed on all-reduced gradients). The state machine:
 *
 * clean step (found_overflow == 0): hysteresis_left = hysteresis;
 *   clean_steps += 1; if clean_steps == growth_interval: scale *= growth_factor
 *   (unless that would exceed FLT_MAX), clean_steps = 0.   -> YK_LS_APPLY
 *
 * overflow (found_overflow != 0): overflows += 1; clean_steps = 0;
 *   if hysteresis_left > 1: hysteresis_left -= 1 (scale kept)     -> YK_LS_SKIP
 *   else (hysteresis exhausted; stays at 1 so every further consecutive
 *        overflow backs off again):
 *     if scale > min: scale = max(scale * backoff, min)           -> YK_LS_SKIP
 *     else (already at the floor):                                -> YK_EOVERFLOW
 *
 * So hysteresis H means: the H-th CONSECUTIVE overflow is the first to back
 * off (DeepSpeed's consecutive_hysteresis=True; H = 1 backs off on every
 * overflow, as torch's GradScaler). YK_EOVERFLOW also means "skip this step";
 * the caller then stops or continues at the floor per cfg.stop_on_min. */
int yk_optimizer_loss_scaler_update(yk_loss_scaler *ls, int found_overflow);

/* ------------------------------------------------------------------------ */
/* Mixed precision state                                                    */
/* ------------------------------------------------------------------------ */

/* Everything train.precision fp16/bf16 adds to a run, in one place:
 *
 *   master    fp32 master weights of this rank's slice [off, off + len) (its
 *             ZeRO shard, or everything): AdamW updates these. Borrowed from
 *             the model's fp32 parameter arena (master_borrowed = 1) in fp32
 *             runs and in mixed precision below ZeRO-2, where the arena IS
 *             the master and the model reads its 16-bit rounding region by
 *             region (yk_model_tp.weights16); a copy of its own under ZeRO-2/3;
 *   params16  ZeRO-2 only: the 16-bit weights (n, dt16), rounded from master
 *             after every update, all-gathered and widened into the stage's
 *             fp32 arena; NULL otherwise;
 *   grads16   NULL: the gradients live in one fp32 home (the model's arena,
 *             or ZeRO-2/3's slice) and are rounded to 16 bits in place
 *             bucket by bucket for the reduction (engine/grads.c);
 *   ls        the dynamic loss scaler (fp16 only; bf16 has fp32's range).
 *
 * Model state per parameter, N ranks sharing the optimizer state (ZeRO-1):
 * 8 + 8/N bytes in fp32 and in mixed precision (fp32 weights = master, fp32
 * gradients; m, v). docs/memory.md. */
typedef struct yk_mixed {
  yk_precision prec;
  yk_dtype dt16;            /* YK_DT_F16 / YK_DT_BF16; YK_DT_F32 in fp32 runs */
  size_t n;                 /* parameters */
  size_t off, len;          /* the slice whose master weights this rank holds */
  float *master;            /* len values; borrowed: the model's arena + off */
  int master_borrowed;      /* 1: master points into the model's arena (not freed) */
  uint16_t *params16;       /* ZeRO-2 mixed only, else NULL */
  uint16_t *grads16;        /* always NULL (kept for ZeRO-2's init, which frees it) */
  yk_shmem params16_shm;    /* the memory of params16 / grads16 when shared with peers on this host */
  yk_shmem grads16_shm;
  yk_loss_scaler ls;        /* fp16 only */
} yk_mixed;

/* Mixed precision whose master weights are the model's arena (fp32 runs,
 * and fp16/bf16 below ZeRO-2): master = model_params + off, borrowed; no
 * 16-bit copies; fp16 initialises the loss scaler from loss_scale.*. Free
 * with yk_optimizer_mixed_free. */
int yk_optimizer_mixed_init_in_arena(yk_mixed *mp, const yk_config *c, float *model_params, size_t n, size_t off,
                                     size_t len, yk_diag *d);
/* Set up the state of c->train.precision for n parameters whose fp32 arena
 * (model_params, borrowed) already holds the initial weights, this rank
 * updating [off, off + len): in fp16/bf16 copies that slice to a new master,
 * rounds all of params16 and widens it back into model_params, and allocates
 * grads16. share_params16 / share_grads16: put that buffer in shared memory
 * (yk_shmem, for collectives to register) instead of private memory. fp16
 * also initialises the loss scaler from loss_scale.*. Free with
 * yk_optimizer_mixed_free, even after a failure. */
int yk_optimizer_mixed_init(yk_mixed *mp, const yk_config *c, float *model_params, size_t n, size_t off, size_t len,
                            int share_params16, int share_grads16, yk_diag *d);
void yk_optimizer_mixed_free(yk_mixed *mp);
/* The factor backward multiplies the loss by: the loss scale in fp16, else 1. */
float yk_optimizer_mixed_loss_scale(const yk_mixed *mp);
/* After the reduction: grads[off, off+len) = widen(grads16[off, off+len)) /
 * loss scale (fp32 multiply). No-op without grads16. */
void yk_optimizer_mixed_unscale(const yk_mixed *mp, float *grads, size_t off, size_t len, float loss_scale);
/* After the update (and, sharded, the gather of params16): widen params16
 * into the model's fp32 arena. No-op without params16. */
void yk_optimizer_mixed_publish(const yk_mixed *mp, float *model_params);

#ifdef __cplusplus
}
#endif
#endif /* YK_OPTIMIZER_H */
