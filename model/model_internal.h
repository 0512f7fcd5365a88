/* model_internal.h - private to the model module: the model struct and the
 * per-layer tensor kinds shared by model.c and weights.c. */
#ifndef YK_MODEL_INTERNAL_H
#define YK_MODEL_INTERNAL_H

#include "yk_model.h"

/* The 12 per-layer tensors in arena (and weights-file) order. */
enum { P_LN1W, P_LN1B, P_QKVW, P_QKVB, P_ATTPROJW, P_ATTPROJB, P_LN2W, P_LN2B, P_FCW, P_FCB, P_FCPROJW, P_FCPROJB,
       P_NLAYER };

/* Arena offsets for one config. */
typedef struct arena_layout {
  size_t wte, wpe, layers, lnfw, lnfb, total;
  size_t layer_size;           /* elements per layer block */
  size_t in_layer[P_NLAYER];   /* offset of each kind inside a layer block */
  size_t kind_numel[P_NLAYER]; /* elements of each kind */
} arena_layout;

/* The whole model's arena (as in weights files and on one rank). */
void yk_model_layout_(const yk_model_config *cfg, arena_layout *lay);
/* Rank `rank`'s arena under tensor parallelism of degree tp (tp = 1: the
 * whole arena) and its tensor table t (4 + 12*L entries, local offsets and
 * shapes), both derived from the global table's split kinds. */
int yk_model_layout_tp_(const yk_model_config *cfg, int tp, int rank, arena_layout *lay, yk_tensor_desc *t,
                        yk_diag *d);

/* Set m's parameters from `whole`, the whole model's arena (glay): this
 * tensor-parallel rank's pieces of the regions it holds. */
int ykm_params_from_whole(yk_model *m, float *whole, yk_diag *d);

/* GPT-2 in the Hugging Face safetensors layout (safetensors.c); weights.c
 * routes to these. detect: 1 if path's content is safetensors. load: every
 * tensor of config c checked (name, dtype, shape, range) before params (the
 * arena, c's layout) is written. write: atomically, F32, n_head in the
 * metadata. */
int ykm_st_detect(const char *path);
int ykm_st_read_config(const char *path, yk_model_config *cfg, yk_diag *d);
int ykm_st_load(float *params, const yk_model_config *c, const char *path, yk_diag *d);
int ykm_st_write(const char *path, const yk_model_config *cfg, const float *params, yk_diag *d);

/* Views of one layer's tensors in an arena. */
typedef struct layer_view {
  float *p[P_NLAYER];
} layer_view;

/* The activations one layer keeps for backward. The big tensors are stored
 * in the model's activation dtype (act_dt): float* for YK_DT_F32, uint16_t*
 * raw f16/bf16 bits otherwise, hence void*. mean/rstd are always fp32 (N
 * floats each, negligible). */
typedef struct acts_layer {
  void *ln1, *qkv, *atty, *att, *res2, *ln2, *fch, *fch_gelu, *res3;
  float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd;
} acts_layer;

/* fp32 work buffers of the 16-bit activation mode: a kernel writes its fp32
 * result into one of these, the model rounds it into the 16-bit store (and
 * back, so later kernels see the rounded values); backward widens a stored
 * tensor into one before a gemm or kernel reads it. Sizes in floats:
 * R0, R1, LN, ATTY: N*C; QKV: N*3C; FCH, GELU: N*4C; ATT: B*NH*T*T. */
enum { W_R0, W_R1, W_LN, W_QKV, W_ATTY, W_ATT, W_FCH, W_GELU, W_COUNT };

struct yk_model {
  yk_model_config cfg;
  int B, T;
  const yk_device *dev;
  arena_layout lay;
  float *params, *grads;
  yk_shmem grads_shm;   /* when yk_model_share_grads moved the gradients to shared memory */
  yk_shmem params_shm;  /* likewise the parameters (yk_model_share_params) */
  yk_tensor_desc *tensors;
  int ntensors;
  /* activations: act_dt is YK_DT_F32, YK_DT_F16 or YK_DT_BF16. act_mem
   * holds the fp32 ones (mean/rstd, logits, losses, lse; and every kept
   * activation when act_dt is fp32); act16_mem the kept activations in
   * 16-bit mode (NULL in fp32 mode). */
  yk_dtype act_dt;
  float *act_mem;
  size_t act_numel;     /* floats in act_mem, scratch excluded */
  uint16_t *act16_mem;
  size_t act16_numel;   /* uint16 elements in act16_mem */
  size_t kept_numel;    /* elements of the kept activations in act_dt (encoded, per-layer tensors, lnf) */
  float *work[W_COUNT]; /* 16-bit mode only; NULL in fp32 mode */
  size_t work_numel;
  void *encoded;
  acts_layer *al;
  void *lnf;
  /* logits: one block of head_rows rows (head_rows, Vl) of the LM head, the
   * only logits training holds (forward and backward compute them block by
   * block); logits_all (N, Vl) is allocated by the first forward without
   * targets (inference) and kept for yk_model_logits. */
  float *lnf_mean, *lnf_rstd, *logits, *losses, *lse, *logits_all;
  int head_rows;
  /* backward scratch */
  float *dres, *dC, *d4C, *dqkv, *ln_scratch, *att_scratch;
  size_t scratch_numel;
  int32_t *inputs, *targets;
  int have_targets; /* a forward with targets is waiting for backward */
  int range_first, range_last; /* blocks of that forward: [0, L), or a pipeline stage's */
  /* Tensor parallelism (yk_model_create_parallel; tp.size = 1 without). The
   * arenas hold this rank's pieces (lay, tensors); glay is the whole
   * model's arena, for weights files and init. */
  yk_model_tp tp;
  arena_layout glay;
  int Cl, NHl;   /* channels and heads of this rank: C/tp, NH/tp */
  int Vl, v0, nv; /* vocabulary rows held, the first one, and how many of them are real (< V) */
  int Ns;        /* rows of the token-parallel regions (residual stream, LayerNorm): N/tp under sequence parallelism, else N */
  float *tpbuf;  /* (N,C) partial products before their reduction; gathered rows */
  float *tpbuf2; /* (Ns,C) a reduce-scatter's or LayerNorm's rows of this rank */
  float *rep;    /* sequence parallelism: partial gradients of replicated tensors, summed over the group */
  float *ce;     /* (3N) the vocabulary-parallel cross-entropy's combine */
  int32_t *tshift; /* (N) targets shifted to this rank's vocabulary rows */
  /* tp.weights16: the rounded weights of the regions in use (slot 0 the
   * embedding, 1 the head, 2 and 3 layers), from wslot_mem; wtmp the 16-bit
   * chunk the rounding goes through. region -1: empty. */
  struct { float *buf; int region, lent; uint64_t used; } wslot[4];
  float *wslot_mem;
  uint16_t *wtmp;
  uint64_t wtick;
  yk_model_provider prov; /* lends parameters and gradients when prov.get_params is set */
  /* A pipeline stage's model (yk_model_stage): the regions it holds (L + 2
   * flags), each one's offset in its compact arenas of nlocal floats. lay
   * stays the unstaged arena's layout, whose region-relative offsets the
   * kernels use. Without a stage every region is held at its lay offset and
   * nlocal = lay.total. */
  int staged;
  unsigned char *held;
  size_t *reg_off;
  size_t nlocal;
  yk_model_grad_hook hook;
  void *hook_ctx;
  yk_model_span_hook span;
  void *span_ctx;
};

#endif
