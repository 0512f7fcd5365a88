/* cpu_kern.h - internal: the per-ISA row kernels of the CPU device.
 *
 * cpu.c does the threading (cpu_pool.c, fixed chunks) and calls these
 * single-threaded kernels on row ranges. Each ISA variant (cpu_portable.c,
 * cpu_avx2.c) fills one table; the tests compare every variant the CPU
 * supports against the portable one. All pointers are fp32 row-major.
 * (The fp16/bf16 casts are common's yk_cast_*, not in this table.) */
#ifndef YK_CPU_KERN_H
#define YK_CPU_KERN_H

#include <stddef.h>

typedef struct cpu_kern {
  /* One LayerNorm row: out (C), *mean, *rstd from x (C), w, b (C). */
  void (*ln_fwd_row)(float *out, float *mean, float *rstd, const float *x, const float *w, const float *b, int C);
  /* One LayerNorm backward row: dx (C) +=, dw (C) +=, db (C) +=. */
  void (*ln_bwd_row)(float *dx, float *dw, float *db, const float *dout, const float *x, const float *w, float mean,
                     float rstd, int C);
  /* out (n) = bias (n) [+ res (n)]. */
  void (*bias_row)(float *out, const float *bias, const float *res, int n);
  /* acc (n) += sum over `rows` rows of x (rows, n) with row stride ld. */
  void (*colsum)(float *acc, const float *x, int rows, size_t ld, int n);
  /* out (n) += x (n). */
  void (*acc)(float *out, const float *x, int n);
  void (*gelu_fwd)(float *out, const float *in, size_t n);
  void (*gelu_bwd)(float *dinp, const float *inp, const float *dout, size_t n);
  void (*add)(float *out, const float *a, const float *b, size_t n);
  /* One causal softmax row: x[0..len) = softmax(scale*x), x[len..T) = 0. */
  void (*softmax_row)(float *x, int len, int T, float scale);
  /* d[0..len) = scale*a*(d - sum(a*d)), d[len..T) = 0. */
  void (*softmax_bwd_row)(float *d, const float *a, int len, int T, float scale);
  /* logsumexp of x[0..V). */
  float (*lse_row)(const float *x, int V);
  /* x[j] = dloss*(exp(x[j]-lse) - (j==target)) for j < V, 0 for V <= j < Vp. */
  void (*ce_bwd_row)(float *x, float lse, int target, float dloss, int V, int Vp);
} cpu_kern;

extern const cpu_kern yk_cpu_kern_portable;
extern const cpu_kern yk_cpu_kern_avx2;

#define YK_GELU_K0 0.7978845608028654f /* sqrt(2/pi) */
#define YK_GELU_K1 0.044715f
#define YK_LN_EPS 1e-5f

#endif
