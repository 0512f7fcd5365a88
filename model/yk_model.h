/* yk_model.h - the one public header of yoke's `model` module: GPT-2.
 *
 * Architecture (issue 2): token + position embeddings; L pre-LayerNorm blocks
 * (LayerNorm eps 1e-5; causal multi-head self-attention with a fused QKV
 * projection and 1/sqrt(head_dim) scaling; output projection; GELU with the
 * tanh approximation; MLP of width 4C); final LayerNorm; LM head tied to the
 * token embedding; softmax cross-entropy averaged over all B*T positions.
 * The vocabulary is padded to Vp (a multiple of 128) in the embedding table;
 * padded logits are masked out of the softmax, so they never affect the loss
 * and padded rows of wte never receive gradient.
 *
 * Parameter arena (fp32, one allocation) - LAYER-MAJOR:
 *     wte (Vp,C) | wpe (maxT,C) |
 *     layer 0: ln1w (C) ln1b (C) qkvw (3C,C) qkvb (3C) attprojw (C,C)
 *              attprojb (C) ln2w (C) ln2b (C) fcw (4C,C) fcb (4C)
 *              fcprojw (C,4C) fcprojb (C) |
 *     layer 1 ... layer L-1 |
 *     lnfw (C) | lnfb (C)
 * Linear weights are (out, in) row-major, as in the weights file. The
 * gradient arena has the identical layout. The weights file keeps tensors
 * "tensor-major" (all layers' ln1w, then all layers' ln1b, ...); the
 * conversion happens only in yk_model_weights_load/save. Why layer-major:
 * during backward the gradients become final in the order lnf, layer L-1,
 * ..., layer 0, then wte+wpe, which in this layout is one contiguous range
 * per step moving from the END of the arena toward its start, so a
 * data-parallel all-reduce can start on the tail while backward continues.
 * The tensor table (yk_model_tensors) names every tensor ("wte", "wpe",
 * "h0.ln1w", ..., "h{L-1}.fcprojb", "lnfw", "lnfb") with its offset, so
 * optimizer, checkpoint and collectives treat state as flat arrays + offsets.
 *
 * Threads: a model uses its device's threads; one model is driven by one
 * thread at a time.
 */
#ifndef YK_MODEL_H
#define YK_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "yk_common.h"
#include "yk_device.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Shape of a GPT-2. padded_vocab_size is derived (V rounded up to 128). */
typedef struct yk_model_config {
  int layers;            /* L */
  int channels;          /* C */
  int heads;             /* NH, divides C */
  int max_seq_len;       /* maxT: rows of wpe */
  int vocab_size;        /* V: real tokens */
  int padded_vocab_size; /* Vp: rows of wte, multiple of 128, >= V (0 = V rounded up) */
} yk_model_config;

/* Named presets (the names of model.name in the config):
 *   tiny  L2  C64   NH4  maxT 256  V 256    (byte-level)
 *   small L4  C128  NH4  maxT 256  V 256    (byte-level)
 *   d6    L6  C384  NH6  maxT 1024 V 50257
 *   d12   L12 C768  NH12 maxT 1024 V 50257  (GPT-2 124M)
 *   d24   L24 C1024 NH16 maxT 1024 V 50257  (350M)
 *   d36   L36 C1280 NH20 maxT 1024 V 50257  (774M)
 *   d48   L48 C1600 NH25 maxT 1024 V 50257  (1.5B)
 * Unknown name: YK_ECONFIG naming it and listing the known ones. */
int yk_model_preset(const char *name, yk_model_config *out, yk_diag *d);
/* Preset c->model.name with the non-zero overrides of c->model applied, then
 * validated. */
int yk_model_config_from(const yk_config *c, yk_model_config *out, yk_diag *d);
/* Derives padded_vocab_size from vocab_size when it is 0 (else checks it is
 * a multiple of 128 >= V) and checks every field (positive, heads divides
 * channels). Errors name the field and value. */
int yk_model_config_finish(yk_model_config *cfg, yk_diag *d);
/* Number of fp32 elements in the parameter arena (padding rows included). */
size_t yk_model_config_num_params(const yk_model_config *cfg);
/* Model FLOPs per trained token (forward + backward) at sequence length T:
 *   6 * (12*L*C^2 + C*V)  +  12 * L * C * T
 * i.e. 6N over the matrix-product weights (LM head over the real V) plus
 * the attention score and value products counted over the full T (the
 * PaLM / llm.c convention; causal masking is not subtracted). For MFU. */
double yk_model_flops_per_token(const yk_model_config *cfg, int T);
/* The tensor table of a config without a model (for checkpoints, exporters
 * and benchmarks): the same table yk_model_tensors gives, in arena order,
 * 4 + 12*L entries. The config is checked (yk_model_config_finish on a
 * copy). *out is malloc'd, the caller frees it with free(); *n its length. */
int yk_model_tensor_table(const yk_model_config *cfg, yk_tensor_desc **out, int *n, yk_diag *d);
/* The inverse: the config whose tensor table is t[0..n) (L from n, Vp and C
 * from wte, maxT from wpe), with vocab_size and heads, which a table does not
 * hold. YK_EFORMAT naming the first tensor that differs when t is not exactly
 * that config's table (name, offset, numel), or when the shapes give no
 * valid config. */
int yk_model_config_from_table(const yk_tensor_desc *t, int n, int vocab_size, int heads, yk_model_config *out,
                               yk_diag *d);

typedef struct yk_model yk_model;

/* Called during backward as soon as a range of the gradient arena is final
 * for this backward pass: (offset, count) in elements. Calls come, in order:
 * lnfw+lnfb, layer L-1, ..., layer 0, then wte+wpe; each range ends where
 * the previous one started, so the final region grows from the arena end to
 * offset 0. Called on the thread that runs backward. With gradient
 * accumulation the hook fires on every backward; the caller decides on which
 * micro-batch to act. */
typedef void (*yk_model_grad_hook)(void *ctx, size_t offset, size_t count);

/* ---- parameters and gradients lent by a provider (ZeRO-2/3) ------------
 * By default the model owns whole fp32 parameter and gradient arenas. A
 * model created with yk_model_create_parallel and a provider owns neither: before it uses a
 * REGION's parameters it asks the provider for them, before it writes a
 * region's gradients it asks for the buffer to ACCUMULATE them into, and it
 * hands both back when done (so the engine can gather sharded weights just in
 * time and reduce-scatter gradients from a reused working buffer).
 * Regions, in arena order: 0 = embedding (wte, wpe), 1 + l = layer l, L + 1 =
 * head (lnfw, lnfb); yk_model_region_range gives each one's arena range. A
 * pointer lent for region r holds the region's elements in arena order (the
 * element at arena offset off + i is p[i]).
 * Order of calls (every get is followed by its put before the same region is
 * asked for again):
 *   forward   params 0 | for l: params 1+l | params L+1, params 0 (LM head)
 *   backward  params L+1, grads L+1, params 0, grads 0 (LM head; grads 0 stay
 *             out until the end), put params 0, put L+1 |
 *             for l = L-1..0: params 1+l, grads 1+l, puts | put grads 0
 * put_grads means the region's gradients of this backward are final. An
 * error from a callback (YK_E* with its message in d) ends the pass with it. */
typedef enum { YK_MODEL_FORWARD = 0, YK_MODEL_BACKWARD = 1 } yk_model_pass;
typedef struct yk_model_provider {
  void *ctx;
  int (*get_params)(void *ctx, int region, yk_model_pass pass, float **params, yk_diag *d);
  int (*put_params)(void *ctx, int region, yk_model_pass pass, yk_diag *d);
  int (*get_grads)(void *ctx, int region, float **grads, yk_diag *d);
  int (*put_grads)(void *ctx, int region, yk_diag *d);
} yk_model_provider;
/* L + 2 (held or not, see yk_model_stage) */
int yk_model_regions(const yk_model *m);
/* [offset, offset + count) of region r in the arena layout (count 0: a
 * pipeline stage's model does not hold r). */
void yk_model_region_range(const yk_model *m, int r, size_t *offset, size_t *count);

/* Create a model for micro-batch B and sequence length T (T <= maxT) on dev
 * (borrowed: it must outlive the model). Allocates parameters, gradients
 * (zeroed) and activations. Parameters are zero until init or load.
 * *out is owned by the caller: free with yk_model_destroy. */
int yk_model_create(const yk_model_config *cfg, int B, int T, const yk_device *dev, yk_model **out, yk_diag *d);
/* Same, choosing the dtype of the activations the model keeps for backward:
 * YK_DT_F32 (what yk_model_create does), YK_DT_F16 or YK_DT_BF16 (mixed
 * precision, issue 4). In 16-bit mode every kept activation - encoded, and
 * per layer ln1, qkv, atty, att (the attention probabilities), res2, ln2,
 * fch (MLP pre-activation), fch_gelu, res3; then lnf - is stored in 16 bits
 * (half the bytes, see yk_model_activation_bytes). Every kernel still
 * computes in fp32: its result goes to an fp32 work buffer and is rounded
 * (nearest-even) into the 16-bit store, and consumers read the fp32 widening
 * of the stored bits, so values are rounded to 16 bits between ops while
 * sgemm and every kernel accumulate in fp32. Kept in fp32: LayerNorm
 * mean/rstd (N floats each), the logits and the cross-entropy (losses, lse),
 * the backward's gradient buffers and the parameter and gradient arenas.
 * Another dtype is YK_ECONFIG. */
int yk_model_create_ex(const yk_model_config *cfg, int B, int T, const yk_device *dev, yk_dtype act_dtype,
                       yk_model **out, yk_diag *d);
/* A provided model (yk_model_create_parallel with a provider): use `arena` (borrowed, yk_model_num_params floats; NULL
 * to detach) as the parameter arena of yk_model_params, init, load and save. */
void yk_model_attach_params(yk_model *m, float *arena);
void yk_model_destroy(yk_model *m);

/* ---- Tensor parallelism (Megatron-LM style, docs/parallelism.md) --------
 * A model created with yk_model_create_tp holds one rank's pieces of the
 * weights, split as the tensor table's `split` says (yk_split_kind): QKV and
 * the MLP up-projection column-parallel (whole heads per rank), attention
 * output and MLP down-projection row-parallel, the embedding / LM head
 * vocabulary-parallel (uneven row counts allowed), the rest replicated. Its
 * forward and backward call `coll` for the group's communication:
 *   - after each row-parallel product and after the embedding lookup: SUM
 *     (or, with sequence parallelism, SCATTER_SUM to this rank's N/tp rows);
 *   - with sequence parallelism, GATHER of the rows before each
 *     column-parallel product and the LM head;
 *   - the cross-entropy: MAX then SUM of per-row statistics of each
 *     128-row block of the LM head, so the (N,V) logits never exist on one
 *     rank (each holds one (128, Vl) block);
 *   - backward mirrors it; with sequence parallelism the gradients of the
 *     replicated tensors (LayerNorm, wpe, row-parallel biases) are partial
 *     sums over this rank's rows and are SUMmed over the group per backward.
 * Without sequence parallelism they are computed whole and identically on
 * every rank. Every rank of the group must call forward/backward together.
 * Results equal the whole model's within fp32 rounding (sums split across
 * ranks); the replicated weights and the loss are bitwise equal across the
 * group because every collective returns the same bits to every rank. */
typedef enum {
  YK_TP_SUM = 0,         /* in (n) -> out (n): element-wise sum over the group (in may equal out) */
  YK_TP_MAX = 1,         /* the same with max */
  YK_TP_GATHER = 2,      /* in (n) -> out (tp*n): the ranks' blocks in rank order */
  YK_TP_SCATTER_SUM = 3, /* in (tp*n) -> out (n): this rank's block of the sum */
} yk_model_tp_op;
typedef int (*yk_model_tp_coll)(void *ctx, yk_model_tp_op op, const float *in, float *out, size_t n, yk_diag *d);
/* Activation recomputation (train.recompute), which rides in yk_model_tp
 * because it is, like the split, a choice of how this rank lays out its
 * activations that the plan and every model of the rank (pipeline slots)
 * share. SELECTIVE keeps no attention probabilities att (B,NH,T,T): one
 * layer's buffer, refilled in backward by the same attention kernel on the
 * kept qkv. FULL keeps only each layer's input (the residual stream) and
 * one layer's set of the rest, which backward refills by re-running the
 * layer's forward. Either way the gradients are bitwise those of NONE: the
 * same kernels run on the same (same-rounded) inputs. */
typedef enum { YK_MODEL_RECOMPUTE_NONE = 0, YK_MODEL_RECOMPUTE_SELECTIVE = 1, YK_MODEL_RECOMPUTE_FULL = 2 } yk_model_recompute;
typedef struct yk_model_tp {
  int size, rank;       /* the group's degree and this rank's place in it */
  int sequence;         /* sequence parallelism: LayerNorm and residual rows split over the group */
  yk_model_tp_coll coll; /* fp32 collectives of the group, with deadlines; errors are returned */
  void *ctx;
  yk_model_recompute recompute; /* read with any size, also 1 (then coll may be NULL) */
  /* Mixed precision's weights, also read with any size: YK_DT_F32 (0) = the
   * products read the arena as it is; YK_DT_F16 / YK_DT_BF16 = the arena (or
   * a provider's loan) holds the fp32 MASTER weights and every product reads
   * their 16-bit rounding (nearest even), widened into one of the model's
   * weight slots just before the region is used: the embedding's, the
   * head's and two for layers (yk_model_sizes.wslot_numel), refilled at the
   * first use of a region in each forward (the arena may have changed since)
   * and kept for its backward. So the rank holds no second copy of the
   * weights: what mixed precision computes with is derived, region by
   * region, from the one fp32 arena (docs/memory.md). */
  yk_dtype weights16;
} yk_model_tp;
/* Whether cfg at micro-batch B, sequence length T can be split over tp
 * ranks: heads, C and 4C divisible by tp, and T with sequence parallelism.
 * YK_ECONFIG naming the value and the valid degrees. Allocates nothing. */
int yk_model_tp_check(const yk_model_config *cfg, int B, int T, int tp, int sequence, yk_diag *d);
/* yk_model_create_ex for a model-parallel rank; both extras may be NULL
 * (then it is yk_model_create_ex).
 *   tp (copied): one rank of a tensor-parallel group (size 1 = none). The
 *     arenas, the tensor table (local offsets and shapes, each tensor's
 *     split) and the activations are this rank's. yk_model_init_random and
 *     yk_model_weights_load give each rank its pieces of the whole model's
 *     values; yk_model_weights_save is YK_EUNSUPPORTED (gather with
 *     yk_model_tp_copy first).
 *   prov (copied; its ctx borrowed): no parameter or gradient arenas, the
 *     provider lends them region by region (see yk_model_provider).
 *     yk_model_params/grads return NULL, yk_model_zero_grad does nothing, the
 *     gradient hook is not called and yk_model_memory_bytes counts no arena;
 *     init, weights load and save work on an arena lent with
 *     yk_model_attach_params. */
int yk_model_create_parallel(const yk_model_config *cfg, int B, int T, const yk_device *dev, yk_dtype act_dtype,
                             const yk_model_tp *tp, const yk_model_provider *prov, yk_model **out, yk_diag *d);
/* ---- A pipeline stage's share of the model ----------------------------
 * A stage runs some blocks: ranges [first[i], last[i]) of them (one per
 * chunk it runs, in increasing order, not overlapping). A model created with
 * one (yk_model_create_stage) holds parameters, gradients and kept
 * activations only for what the stage uses: its blocks; the embedding region
 * (wte, wpe) when it runs block 0 or block L-1 (wte is the tied LM head);
 * the head region (lnfw, lnfb) and the logits when it runs block L-1. Its
 * arenas are those regions one after the other in arena order:
 * yk_model_region_range gives a held region's offset in them (count 0 for a
 * region not held), yk_model_tensors lists only the held tensors with those
 * offsets, yk_model_num_params counts them, and forward_range refuses blocks
 * it does not hold. Init and weights load keep the held regions of the whole
 * model's values; weights save is YK_EUNSUPPORTED (assemble the stages with
 * yk_model_stage_copy first). n = 0 is the whole model. */
#define YK_MODEL_MAX_RANGES 64
typedef struct yk_model_stage {
  int n;
  int first[YK_MODEL_MAX_RANGES], last[YK_MODEL_MAX_RANGES];
} yk_model_stage;
/* yk_model_create_parallel for one pipeline stage (stage NULL or n = 0: the
 * whole model). A bad range is YK_EINVAL naming it. */
int yk_model_create_stage(const yk_model_config *cfg, int B, int T, const yk_device *dev, yk_dtype act_dtype,
                          const yk_model_tp *tp, const yk_model_stage *stage, const yk_model_provider *prov,
                          yk_model **out, yk_diag *d);
/* Move m's held regions between `whole` (this tensor-parallel rank's
 * unstaged arena, yk_model_tp_num_params floats) and `local` (m's arena,
 * yk_model_num_params floats): to_local = 1 whole -> local, 0 local -> its
 * regions of whole (the rest of whole untouched). */
void yk_model_stage_copy(const yk_model *m, float *whole, float *local, int to_local);
/* The same without a model, for offline tools (checkpoint conversion): the
 * tensor table (*out malloc'd, free(); *n entries) and arena size (*numel
 * floats, may be NULL) of the model yk_model_create_stage would make for
 * tensor-parallel rank `rank` of tp and `stage` (NULL or n = 0: the whole
 * rank), and the copy between its arena `local` and that rank's unstaged
 * arena `whole`, exactly as yk_model_stage_copy does. A bad range or config
 * is YK_EINVAL / YK_ECONFIG naming it. */
int yk_model_stage_table(const yk_model_config *cfg, int tp, int rank, const yk_model_stage *stage,
                         yk_tensor_desc **out, int *n, size_t *numel, yk_diag *d);
int yk_model_stage_copy_cfg(const yk_model_config *cfg, int tp, int rank, const yk_model_stage *stage, float *whole,
                            float *local, int to_local, yk_diag *d);
/* The tensor table of rank `rank`'s arena under tensor-parallel degree tp
 * (local offsets and shapes), as yk_model_tensor_table gives the whole one. */
int yk_model_tp_tensor_table(const yk_model_config *cfg, int tp, int rank, yk_tensor_desc **out, int *n, yk_diag *d);
/* Elements of rank `rank`'s arena under tensor-parallel degree tp. */
size_t yk_model_tp_num_params(const yk_model_config *cfg, int tp, int rank);
/* Move rank's pieces between a whole arena (global, yk_model_config_num_params
 * floats, layer-major) and its local arena (yk_model_tp_num_params floats):
 * to_local = 1 global -> local, 0 local -> its elements of global. */
int yk_model_tp_copy(const yk_model_config *cfg, int tp, int rank, float *global, float *local, int to_local,
                     yk_diag *d);
/* The tensor-parallel settings of m (size 1 without). */
const yk_model_tp *yk_model_get_tp(const yk_model *m);

const yk_model_config *yk_model_get_config(const yk_model *m);
int yk_model_batch(const yk_model *m);   /* B */
int yk_model_seq_len(const yk_model *m); /* T */
/* Bytes of parameters + gradients + activations + scratch held by m. */
size_t yk_model_memory_bytes(const yk_model *m);
/* Bytes of the activations kept for backward in the activation dtype
 * (encoded, the nine per-layer tensors above, lnf, fewer under
 * recomputation: yk_model_recompute): halves in 16-bit mode.
 * Part of yk_model_memory_bytes, which also counts the fp32 logits block,
 * mean/rstd, backward buffers and (16-bit mode) one layer's fp32 work
 * buffers. */
size_t yk_model_activation_bytes(const yk_model *m);
/* What yk_model_create_parallel would allocate for cfg at B x T, without
 * allocating (yoke plan; the engine's memory plan). Element counts of each
 * part and the bytes the device's allocator occupies for them
 * (yk_alloc_bytes). provided = 1: a provider lends the arenas (ZeRO-2/3), so
 * none is counted. tp may be NULL (no tensor parallelism). */
typedef struct yk_model_sizes {
  size_t kept_numel;     /* activations kept for backward, in the activation dtype */
  size_t logits_numel;   /* one fp32 block of logits (min(N, 128), Vl); reused for its dlogits in backward */
  size_t f32_numel;      /* every fp32 activation: logits, LayerNorm mean/rstd, losses, lse */
  size_t scratch_numel;  /* backward buffers (dres, dC, d4C, dqkv, LayerNorm and attention scratch), TP buffers */
  size_t work_numel;     /* 16-bit mode: one layer's fp32 work buffers */
  size_t rep_numel;      /* sequence parallelism's replicated-gradient partials (part of scratch) */
  size_t wslot_numel;    /* tp.weights16: the fp32 weight slots (embedding + head + 2 layers), else 0 */
  size_t arena_bytes;    /* the fp32 parameter and gradient arenas (0 when provided) */
  size_t block_bytes;    /* the fp32 block (fp32 activations, scratch, work) and token buffers */
  size_t kept16_bytes;   /* 16-bit mode: the store of the kept activations */
  size_t wslot_bytes;    /* the weight slots and their 16-bit staging chunk (tp.weights16), else 0 */
  size_t total_bytes;    /* arena_bytes + block_bytes + kept16_bytes + wslot_bytes */
} yk_model_sizes;
int yk_model_plan(const yk_model_config *cfg, int B, int T, const yk_device *dev, yk_dtype act_dtype,
                  const yk_model_tp *tp, int provided, yk_model_sizes *out, yk_diag *d);
/* The activation dtype given at creation (YK_DT_F32 for yk_model_create). */
yk_dtype yk_model_act_dtype(const yk_model *m);

/* The arenas (owned by the model; valid until destroy). Same numel. */
float *yk_model_params(yk_model *m);
float *yk_model_grads(yk_model *m);
/* Move the gradient arena to memory that collectives on this host can read
 * in place (device alloc_shared); its contents are kept. YK_EUNSUPPORTED if
 * the device has none. The model still owns it; pointers from an earlier
 * yk_model_grads are stale. */
int yk_model_share_grads(yk_model *m, yk_diag *d);
/* The shared gradient arena, or NULL when yk_model_share_grads was not used. */
const yk_shmem *yk_model_grads_shmem(const yk_model *m);
/* The same for the parameter arena (gathered from the ranks' shards by a
 * sharded optimizer). */
int yk_model_share_params(yk_model *m, yk_diag *d);
const yk_shmem *yk_model_params_shmem(const yk_model *m);
size_t yk_model_num_params(const yk_model *m);
/* The tensor table (owned by the model): *out gets the array, the return
 * value is its length (4 + 12*L). decay = 1 for wte, wpe, qkvw, attprojw,
 * fcw, fcprojw. */
int yk_model_tensors(const yk_model *m, const yk_tensor_desc **out);
/* Index of a tensor by name, or YK_ENOTFOUND. */
int yk_model_tensor_find(const yk_model *m, const char *name);
/* [offset, offset+count) of layer l's block in the arena (l in [0,L)). */
void yk_model_layer_range(const yk_model *m, int l, size_t *offset, size_t *count);

/* GPT-2 init from seed: weights ~ N(0, 0.02), the residual projections
 * (attprojw, fcprojw) ~ N(0, 0.02/sqrt(2L)), biases 0, LayerNorm weights 1,
 * padded wte rows 0. Deterministic for a seed. */
void yk_model_init_random(yk_model *m, uint64_t seed);
/* The same, returning YK_ENOMEM when a tensor-parallel rank cannot hold the
 * whole model's values while it draws them (yk_model_init_random then leaves
 * zeros). */
int yk_model_init_random_tp(yk_model *m, uint64_t seed, yk_diag *d);

/* Forward pass over inputs (B,T) int32 token ids in [0,V). With targets
 * (B,T) in [0,V), computes the mean cross-entropy over the B*T positions into
 * *loss (may be NULL) and keeps what backward needs; the LM head and the
 * cross-entropy run 128 rows at a time, so the whole logits never exist
 * (backward recomputes each block's). With targets == NULL only the logits
 * are computed (inference), all of them, into a buffer this first such call
 * allocates (B*T*Vl floats, not part of yk_model_plan). Out-of-range tokens
 * are YK_EINVAL naming the position and value. */
int yk_model_forward(yk_model *m, const int32_t *inputs, const int32_t *targets, float *loss, yk_diag *d);
/* Logits (B,T,Vp) of the last forward without targets (columns >= V are
 * meaningless); under tensor parallelism this rank's (B,T,Vl) vocabulary
 * rows. NULL before any such forward: a training forward (with targets)
 * holds only one block of them at a time. */
const float *yk_model_logits(const yk_model *m);
/* Per-position losses (B,T) of the last forward with targets. */
const float *yk_model_losses(const yk_model *m);

/* Zero the gradient arena. */
void yk_model_zero_grad(yk_model *m);
/* Backward of the last forward-with-targets: ACCUMULATES into the gradient
 * arena (call zero_grad first unless accumulating micro-batches). The loss
 * gradient per position is 1/(B*T). YK_EINVAL if there is no forward with
 * targets to differentiate (each forward can be differentiated once). */
int yk_model_backward(yk_model *m, yk_diag *d);
/* Same with the loss multiplied by scale (dloss = scale/(B*T)), e.g.
 * scale = 1/grad_accum, or a loss scale for fp16. */
int yk_model_backward_scaled(yk_model *m, float scale, yk_diag *d);
/* ---- Pipeline stages ----------------------------------------------------
 * Forward of blocks [first, last) only (0 <= first < last <= L). first == 0:
 * the embedding of inputs (B,T) starts it; else `in` (Ns,C) f32 is the
 * residual stream entering block `first` (Ns = B*T, or this rank's B*T/tp
 * rows under sequence parallelism: yk_model_stream_numel floats). last == L:
 * final LayerNorm, LM head and, with targets, the loss, as yk_model_forward;
 * else `out` (Ns,C) f32 receives the stream leaving block last - 1 and *loss
 * (may be NULL) is 0. A stage's blocks see exactly the values the whole
 * model's would (bitwise, in fp32 and 16-bit modes). Parameters and
 * gradients stay the whole arena's layout. */
int yk_model_forward_range(yk_model *m, int first, int last, const int32_t *inputs, const float *in,
                           const int32_t *targets, float *out, float *loss, yk_diag *d);
/* Backward of the last forward_range, accumulating into the gradients of its
 * blocks (and of wte/wpe on the first stage, lnf and wte on the last): with
 * last < L it starts from dout (Ns,C) f32, the gradient of its output; with
 * first > 0 it writes the gradient of its input into din (Ns,C) f32. */
int yk_model_backward_range(yk_model *m, float scale, const float *dout, float *din, yk_diag *d);
/* Floats of one residual-stream tensor of this rank: Ns * C. */
size_t yk_model_stream_numel(const yk_model *m);
/* Install (or clear with fn == NULL) the gradient-ready hook. */
void yk_model_set_grad_hook(yk_model *m, yk_model_grad_hook fn, void *ctx);
/* For a timeline: called on the thread that runs forward or backward when
 * it starts (end = 0) and ends (end = 1) a region: 0 the embedding, 1 +
 * l layer l, layers + 1 the head (final LayerNorm, logits and loss). A
 * pass's regions do not nest; an error returns without the end call. */
typedef void (*yk_model_span_hook)(void *ctx, yk_model_pass pass, int region, int end);
/* Install (or clear with fn == NULL) the span hook. */
void yk_model_set_span_hook(yk_model *m, yk_model_span_hook fn, void *ctx);

/* ---- GPT-2 fp32 weights file (docs/formats.md, version 3) -------------- */
/* Every function below also speaks the Hugging Face GPT-2 safetensors layout
 * (docs/formats.md, "GPT-2 safetensors"): read_config and load take a file
 * whose CONTENT is safetensors (F32, or F16/BF16 widened; names with or
 * without `transformer.`; n_head from its __metadata__, else the GPT-2 preset
 * of the same width), and the writers write that layout to a path ending in
 * ".safetensors". A missing or misshaped tensor is YK_EFORMAT naming it with
 * both shapes. */
#define YK_WEIGHTS_MAGIC 20240326
#define YK_WEIGHTS_VERSION 3
/* Read only the header of a weights file into *cfg (for building a model to
 * match a file). Wrong magic/version, nonsense fields or a file size that
 * disagrees with the header are YK_EFORMAT naming the field and values. */
int yk_model_weights_read_config(const char *path, yk_model_config *cfg, yk_diag *d);
/* Load parameters from a weights file. The header must match m's config
 * field by field (maxT, V, L, NH, C, Vp); a mismatch is YK_ECONFIG naming the
 * field with both values. Every format/config error is found before any
 * parameter is written (m unchanged); only an I/O failure in the middle of
 * reading a valid file leaves the parameters partly loaded (YK_EIO says so).
 * A NaN or infinity in the file is YK_EFORMAT naming the first tensor that
 * holds one (found after reading, so m then holds the file's values). */
int yk_model_weights_load(yk_model *m, const char *path, yk_diag *d);
/* Write the parameters as a weights file (atomically: path.tmp, fsync,
 * rename). */
int yk_model_weights_save(const yk_model *m, const char *path, yk_diag *d);
/* The same without a model: `params` is a parameter arena of config cfg in
 * the model's layer-major layout (yk_model_config_num_params floats). The
 * config is checked first (yk_model_config_finish on a copy). */
int yk_model_weights_write(const char *path, const yk_model_config *cfg, const float *params, yk_diag *d);
/* Where yk_model_weights_write_from gets the arena from: copy the count
 * floats at arena offset `offset` into dst (count is at most 1M); 0 or a
 * YK_E* code with the reason in d. */
typedef int (*yk_model_params_source)(void *ctx, size_t offset, size_t count, float *dst, yk_diag *d);
/* The same, reading the arena piece by piece from src (e.g. a checkpoint
 * reader), so the whole arena is never in memory. An error of src is
 * returned with its message; the partial file is removed. */
int yk_model_weights_write_from(const char *path, const yk_model_config *cfg, yk_model_params_source src, void *ctx,
                                yk_diag *d);

/* ---- Generation (model/generate.c) -------------------------------------
 * A KV cache runs the forward one position at a time for text generation:
 * each layer keeps the keys and values of the positions seen, so a new
 * token costs one position (its matrix products on one row, attention over
 * the cached rows) instead of a forward over the whole window. Its logits
 * equal yk_model_forward's (targets NULL, then yk_model_logits) at the same
 * position within rounding. Context: at most max_seq_len positions; see
 * yk_model_generate for what happens past it. fp32 only (the parameter
 * arena as it is). */
typedef struct yk_model_kv yk_model_kv;

/* A cache for m (borrowed: it must outlive the cache; its parameters are
 * read at every step, so they may change between steps): 2 * L * maxT * C
 * floats plus one position's activations, allocated on m's device. Empty
 * at creation. A tensor-parallel rank's model is YK_EUNSUPPORTED (a whole
 * model only). *out is the caller's: free with yk_model_kv_destroy. */
int yk_model_kv_create(yk_model *m, yk_model_kv **out, yk_diag *d);
void yk_model_kv_destroy(yk_model_kv *kv);
/* Forget every position (the next step is position 0). */
void yk_model_kv_reset(yk_model_kv *kv);
/* Positions held. */
int yk_model_kv_len(const yk_model_kv *kv);
/* Run token at the next position (yk_model_kv_len) and keep its keys and
 * values. YK_EINVAL naming the value for a token outside [0, V) or a full
 * cache (max_seq_len positions). */
int yk_model_kv_step(yk_model_kv *kv, int32_t token, yk_diag *d);
/* Logits (Vp) f32 of the last step (columns >= V are meaningless); owned by
 * kv, overwritten by the next step. */
const float *yk_model_kv_logits(const yk_model_kv *kv);

typedef struct yk_model_sample_opts {
  float temperature; /* >= 0; 0: greedy (the first largest logit) */
  int top_k;         /* 0: every token; k: only the k largest logits (ties at the k-th are kept) */
  uint64_t seed;     /* the draws come from yk_rng seeded with it: same seed, same text */
} yk_model_sample_opts;

/* One token from logits (V) f32: argmax at temperature 0 (or top_k 1), else
 * a draw from softmax(logits / temperature) restricted to the top k, using
 * one yk_rng_uniform of rng. YK_EINVAL for a negative temperature or top_k,
 * YK_ENONFINITE when the largest logit is not finite. */
int yk_model_sample_pick(const float *logits, int V, const yk_model_sample_opts *o, yk_rng *rng, int32_t *out,
                         yk_diag *d);

/* Called with each generated token, in order. A negative return (a YK_E*
 * code with d filled) stops the generation, which returns it; a positive
 * one stops it as a success (e.g. at an end-of-text token); 0 goes on. */
typedef int (*yk_model_token_fn)(void *ctx, int32_t token, yk_diag *d);

typedef struct yk_model_generate_stats {
  int generated;      /* tokens passed to emit */
  int slides;         /* times the full window was rebuilt from its last half */
  int prompt_dropped; /* leading prompt tokens beyond max_seq_len that the model never saw */
} yk_model_generate_stats;

/* Generate ntokens (>= 1) tokens after prompt[0..nprompt) (nprompt >= 1,
 * every token in [0, V): else YK_EINVAL naming the position and value),
 * sampling each with o, and pass each to emit. Resets kv first.
 * The context window slides: a prompt longer than max_seq_len (maxT) keeps
 * its last maxT tokens; when the cache is full and one more token must be
 * added, the cache is rebuilt from the last maxT/2 tokens (one position
 * each, at positions 0..maxT/2-1) and generation goes on, so every token
 * after the first maxT is predicted from between maxT/2 and maxT tokens of
 * context and the rebuilds cost maxT/2 positions per maxT/2 tokens.
 * Deterministic for a seed (and device). st (may be NULL) gets the counts. */
int yk_model_generate(yk_model_kv *kv, const int32_t *prompt, int nprompt, int ntokens, const yk_model_sample_opts *o,
                      yk_model_token_fn emit, void *ctx, yk_model_generate_stats *st, yk_diag *d);

#ifdef __cplusplus
}
#endif
#endif /* YK_MODEL_H */
