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

void yk_model_layout_(const yk_model_config *cfg, arena_layout *lay);

/* Views of one layer's tensors in an arena. */
typedef struct layer_view {
  float *p[P_NLAYER];
} layer_view;

typedef struct acts_layer {
  float *ln1, *ln1_mean, *ln1_rstd, *qkv, *atty, *att, *res2, *ln2, *ln2_mean, *ln2_rstd, *fch, *fch_gelu, *res3;
} acts_layer;

struct yk_model {
  yk_model_config cfg;
  int B, T;
  const yk_device *dev;
  arena_layout lay;
  float *params, *grads;
  yk_tensor_desc *tensors;
  int ntensors;
  /* activations */
  float *act_mem;
  size_t act_numel;
  float *encoded;
  acts_layer *al;
  float *lnf, *lnf_mean, *lnf_rstd, *logits, *losses, *lse;
  /* backward scratch */
  float *dres, *dC, *d4C, *dqkv, *ln_scratch, *att_scratch;
  size_t scratch_numel;
  int32_t *inputs, *targets;
  int have_targets; /* a forward with targets is waiting for backward */
  yk_model_grad_hook hook;
  void *hook_ctx;
};

#endif
