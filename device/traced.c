/* traced.c - a device that forwards every kernel to another and reports
 * each call (kernel, shape, bytes, start, end) to a hook: the per-kernel
 * view of a traced run (yk_device_traced_create in yk_device.h). */
#include <stdlib.h>

#include "yk_device.h"

typedef struct traced {
  yk_device dev; /* first: the ops receive &dev */
  const yk_device *in;
  yk_device_call_hook hook;
  void *ctx;
} traced;

static const char *const kernel_names[YK_DEVICE_KERNELS] = {
    "zero", "gemm", "encoder_fwd", "encoder_bwd", "layernorm_fwd", "layernorm_bwd", "bias_rows", "bias_bwd",
    "gelu_fwd", "gelu_bwd", "add", "attention_fwd", "attention_bwd", "softmax_causal", "softmax_causal_bwd",
    "crossent_fwd", "crossent_bwd", "crossent_shard_fwd", "f32_to_f16", "f16_to_f32", "f32_to_bf16",
    "bf16_to_f32", "round_f16", "round_bf16"};

const char *yk_device_kernel_name(int kernel) {
  return kernel >= 0 && kernel < YK_DEVICE_KERNELS ? kernel_names[kernel] : "?";
}

/* CALL(kernel, ndims, d0, d1, d2, bytes, inner call): time the inner
 * device's kernel and report it. `t` is the wrapper, `in` the inner. */
#define CALL(k, nd, d0, d1, d2, b, ...)                                                                              \
  do {                                                                                                             \
    const traced *t = (const traced *)dev;                                                                         \
    const yk_device *in = t->in;                                                                                   \
    yk_device_call c = {.kernel = (k), .ndims = (nd), .dim = {(d0), (d1), (d2)}, .bytes = (uint64_t)(b)};          \
    c.t0_ns = (int64_t)yk_now_ns();                                                                                \
    in->ops->__VA_ARGS__;                                                                                          \
    c.t1_ns = (int64_t)yk_now_ns();                                                                                \
    t->hook(t->ctx, &c);                                                                                           \
  } while (0)

#define F 4ull /* bytes of an fp32 value */

static void *t_alloc(const yk_device *dev, size_t bytes) {
  const yk_device *in = ((const traced *)dev)->in;
  return in->ops->alloc(in, bytes);
}
static void t_free(const yk_device *dev, void *p) {
  const yk_device *in = ((const traced *)dev)->in;
  in->ops->free(in, p);
}
static int t_alloc_shared(const yk_device *dev, size_t bytes, yk_shmem *out, yk_diag *d) {
  const yk_device *in = ((const traced *)dev)->in;
  if (!in->ops->alloc_shared)
    return yk_errorf(d, YK_EUNSUPPORTED, "device %s has no shared memory", in->ops->name);
  return in->ops->alloc_shared(in, bytes, out, d);
}
static void t_zero(const yk_device *dev, float *p, size_t n) { CALL(YK_KERN_ZERO, 1, (int64_t)n, 0, 0, F * n, zero(in, p, n)); }
static void t_gemm(const yk_device *dev, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc) {
  uint64_t m = (uint64_t)M, n = (uint64_t)N, k = (uint64_t)K;
  CALL(YK_KERN_GEMM, 3, M, N, K, F * (m * k + k * n + m * n * (beta != 0 ? 2 : 1)),
       gemm(in, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc));
}
static void t_encoder_fwd(const yk_device *dev, float *out, const int32_t *tok, const float *wte, const float *wpe,
                          int N, int T, int C) {
  CALL(YK_KERN_ENCODER_FWD, 2, N, C, 0, F * 3 * (uint64_t)N * C, encoder_fwd(in, out, tok, wte, wpe, N, T, C));
}
static void t_encoder_bwd(const yk_device *dev, float *dwte, float *dwpe, const float *dout, const int32_t *tok,
                          int N, int T, int C) {
  CALL(YK_KERN_ENCODER_BWD, 2, N, C, 0, F * 3 * (uint64_t)N * C, encoder_bwd(in, dwte, dwpe, dout, tok, N, T, C));
}
static void t_layernorm_fwd(const yk_device *dev, float *out, float *mean, float *rstd, const float *inp,
                            const float *w, const float *b, int N, int C) {
  CALL(YK_KERN_LAYERNORM_FWD, 2, N, C, 0, F * (2 * (uint64_t)N * C + 2 * (uint64_t)N),
       layernorm_fwd(in, out, mean, rstd, inp, w, b, N, C));
}
static void t_layernorm_bwd(const yk_device *dev, float *dinp, float *dw, float *db, const float *dout,
                            const float *inp, const float *w, const float *mean, const float *rstd, int N, int C,
                            float *scratch) {
  CALL(YK_KERN_LAYERNORM_BWD, 2, N, C, 0, F * (4 * (uint64_t)N * C + 2 * (uint64_t)N),
       layernorm_bwd(in, dinp, dw, db, dout, inp, w, mean, rstd, N, C, scratch));
}
static void t_bias_rows(const yk_device *dev, float *out, const float *bias, const float *res, int N, int OC) {
  CALL(YK_KERN_BIAS_ROWS, 2, N, OC, 0, F * (uint64_t)N * OC * (res ? 2 : 1), bias_rows(in, out, bias, res, N, OC));
}
static void t_bias_bwd(const yk_device *dev, float *db, const float *dout, int N, int OC) {
  CALL(YK_KERN_BIAS_BWD, 2, N, OC, 0, F * (uint64_t)N * OC, bias_bwd(in, db, dout, N, OC));
}
static void t_gelu_fwd(const yk_device *dev, float *out, const float *inp, size_t n) {
  CALL(YK_KERN_GELU_FWD, 1, (int64_t)n, 0, 0, F * 2 * n, gelu_fwd(in, out, inp, n));
}
static void t_gelu_bwd(const yk_device *dev, float *dinp, const float *inp, const float *dout, size_t n) {
  CALL(YK_KERN_GELU_BWD, 1, (int64_t)n, 0, 0, F * 3 * n, gelu_bwd(in, dinp, inp, dout, n));
}
static void t_add(const yk_device *dev, float *out, const float *a, const float *b, size_t n) {
  CALL(YK_KERN_ADD, 1, (int64_t)n, 0, 0, F * 3 * n, add(in, out, a, b, n));
}
static void t_attention_fwd(const yk_device *dev, float *out, float *att, const float *qkv, int B, int T, int C,
                            int NH) {
  uint64_t btc = (uint64_t)B * T * C, att_n = (uint64_t)B * NH * T * T;
  CALL(YK_KERN_ATTENTION_FWD, 3, B, T, C, F * (4 * btc + att_n), attention_fwd(in, out, att, qkv, B, T, C, NH));
}
static void t_attention_bwd(const yk_device *dev, float *dqkv, const float *dout, const float *qkv, const float *att,
                            int B, int T, int C, int NH, float *scratch) {
  uint64_t btc = (uint64_t)B * T * C, att_n = (uint64_t)B * NH * T * T;
  CALL(YK_KERN_ATTENTION_BWD, 3, B, T, C, F * (7 * btc + att_n),
       attention_bwd(in, dqkv, dout, qkv, att, B, T, C, NH, scratch));
}
static void t_softmax_causal(const yk_device *dev, float *x, int R, int T, float scale) {
  CALL(YK_KERN_SOFTMAX_CAUSAL, 2, R, T, 0, F * 2 * (uint64_t)R * T * T, softmax_causal(in, x, R, T, scale));
}
static void t_softmax_causal_bwd(const yk_device *dev, float *datt, const float *att, int R, int T, float scale) {
  CALL(YK_KERN_SOFTMAX_CAUSAL_BWD, 2, R, T, 0, F * 3 * (uint64_t)R * T * T,
       softmax_causal_bwd(in, datt, att, R, T, scale));
}
static void t_crossent_fwd(const yk_device *dev, float *losses, float *lse, const float *logits,
                           const int32_t *targets, int N, int V, int Vp) {
  CALL(YK_KERN_CROSSENT_FWD, 2, N, Vp, 0, F * (uint64_t)N * Vp, crossent_fwd(in, losses, lse, logits, targets, N, V, Vp));
}
static void t_crossent_bwd(const yk_device *dev, float *logits, const float *lse, const int32_t *targets, float dloss,
                           int N, int V, int Vp) {
  CALL(YK_KERN_CROSSENT_BWD, 2, N, Vp, 0, F * 2 * (uint64_t)N * Vp,
       crossent_bwd(in, logits, lse, targets, dloss, N, V, Vp));
}
static void t_crossent_shard_fwd(const yk_device *dev, float *lse, float *tgt, const float *logits,
                                 const int32_t *targets, int N, int nv, int ld) {
  CALL(YK_KERN_CROSSENT_SHARD_FWD, 2, N, ld, 0, F * (uint64_t)N * ld,
       crossent_shard_fwd(in, lse, tgt, logits, targets, N, nv, ld));
}
/* casts: 4 bytes one way, 2 the other */
static void t_f32_to_f16(const yk_device *dev, uint16_t *out, const float *x, size_t n) {
  CALL(YK_KERN_F32_TO_F16, 1, (int64_t)n, 0, 0, 6 * n, f32_to_f16(in, out, x, n));
}
static void t_f16_to_f32(const yk_device *dev, float *out, const uint16_t *x, size_t n) {
  CALL(YK_KERN_F16_TO_F32, 1, (int64_t)n, 0, 0, 6 * n, f16_to_f32(in, out, x, n));
}
static void t_f32_to_bf16(const yk_device *dev, uint16_t *out, const float *x, size_t n) {
  CALL(YK_KERN_F32_TO_BF16, 1, (int64_t)n, 0, 0, 6 * n, f32_to_bf16(in, out, x, n));
}
static void t_bf16_to_f32(const yk_device *dev, float *out, const uint16_t *x, size_t n) {
  CALL(YK_KERN_BF16_TO_F32, 1, (int64_t)n, 0, 0, 6 * n, bf16_to_f32(in, out, x, n));
}
static void t_round_f16(const yk_device *dev, uint16_t *out, float *x, size_t n) {
  CALL(YK_KERN_ROUND_F16, 1, (int64_t)n, 0, 0, 10 * n, round_f16(in, out, x, n));
}
static void t_round_bf16(const yk_device *dev, uint16_t *out, float *x, size_t n) {
  CALL(YK_KERN_ROUND_BF16, 1, (int64_t)n, 0, 0, 10 * n, round_bf16(in, out, x, n));
}

static const yk_device_ops traced_ops = {
    .name = "traced", .alloc = t_alloc, .free = t_free, .alloc_shared = t_alloc_shared, .zero = t_zero,
    .gemm = t_gemm, .encoder_fwd = t_encoder_fwd, .encoder_bwd = t_encoder_bwd, .layernorm_fwd = t_layernorm_fwd,
    .layernorm_bwd = t_layernorm_bwd, .bias_rows = t_bias_rows, .bias_bwd = t_bias_bwd, .gelu_fwd = t_gelu_fwd,
    .gelu_bwd = t_gelu_bwd, .add = t_add, .attention_fwd = t_attention_fwd, .attention_bwd = t_attention_bwd,
    .softmax_causal = t_softmax_causal, .softmax_causal_bwd = t_softmax_causal_bwd, .crossent_fwd = t_crossent_fwd,
    .crossent_bwd = t_crossent_bwd, .crossent_shard_fwd = t_crossent_shard_fwd, .f32_to_f16 = t_f32_to_f16,
    .f16_to_f32 = t_f16_to_f32, .f32_to_bf16 = t_f32_to_bf16, .bf16_to_f32 = t_bf16_to_f32,
    .round_f16 = t_round_f16, .round_bf16 = t_round_bf16};

int yk_device_traced_create(const yk_device *inner, yk_device_call_hook hook, void *ctx, yk_device **out,
                            yk_diag *d) {
  *out = NULL;
  traced *t = calloc(1, sizeof *t);
  if (!t) return yk_errorf(d, YK_ENOMEM, "out of memory for the traced device");
  /* the inner device's settings: thread counts size the scratch buffers */
  t->dev = (yk_device){.ops = &traced_ops, .nthreads = inner->nthreads, .isa = inner->isa};
  t->in = inner;
  t->hook = hook;
  t->ctx = ctx;
  *out = &t->dev;
  return 0;
}

void yk_device_traced_destroy(yk_device *dev) { free(dev); }
