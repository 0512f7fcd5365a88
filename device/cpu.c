/* cpu.c - the CPU backend of the device interface.
 *
 * Threading: one pool only, OpenMP with num_threads(dev->nthreads) and static
 * partitions computed from the thread index, so every reduction has a fixed
 * order for a fixed thread count (bitwise reproducible runs, no atomics).
 * OpenBLAS is pinned to one thread and each sgemm is split over our threads
 * (along M or N, or along K with ordered partial sums when K dominates);
 * this keeps a single set of threads busy instead of two pools (OpenBLAS's
 * and OpenMP's) spinning against each other on a small machine.
 *
 * ISA: the vector row kernels come from a table (cpu_kern.h) picked at
 * creation: AVX2+FMA+F16C when the CPU has it, else portable C, or what
 * $YK_ISA / the isa argument asks for. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cpu_kern.h"
#include "yk_device.h"

typedef struct cpu_device {
  yk_device pub; /* first: a yk_device* is a cpu_device* */
  const cpu_kern *k;
} cpu_device;

static inline const cpu_kern *K(const yk_device *dev) { return ((const cpu_device *)dev)->k; }

/* Split [0,n) in nt parts, part t is [*lo,*hi); boundaries are multiples of
 * align (except the end) so vector loops stay aligned to whole registers. */
static inline void split(size_t n, int nt, int t, size_t align, size_t *lo, size_t *hi) {
  size_t units = (n + align - 1) / align;
  size_t base = units / (size_t)nt, rem = units % (size_t)nt;
  size_t u0 = (size_t)t * base + YK_MIN((size_t)t, rem);
  size_t u1 = u0 + base + ((size_t)t < rem ? 1 : 0);
  *lo = YK_MIN(u0 * align, n);
  *hi = YK_MIN(u1 * align, n);
}

/* Threads worth using for `work` elementary operations (avoid waking the
 * pool for tiny kernels). */
static inline int threads_for(const yk_device *dev, size_t work) {
  if (dev->nthreads <= 1 || work < 32768) return 1;
  return dev->nthreads;
}

/* ---- memory ---------------------------------------------------------- */

static void *cpu_alloc(const yk_device *dev, size_t bytes) { return yk_alloc(bytes); }
static int cpu_alloc_shared(const yk_device *dev, size_t bytes, yk_shmem *out, yk_diag *d) {
  (void)dev;
  return yk_shmem_alloc(bytes, "yoke-arena", out, d);
}
static void cpu_free(const yk_device *dev, void *p) { yk_free(p); }

static void cpu_zero(const yk_device *dev, float *p, size_t n) {
#pragma omp parallel num_threads(n > (1u << 20) ? dev->nthreads : 1)
  {
    size_t lo, hi;
    split(n, omp_get_num_threads(), omp_get_thread_num(), 1024, &lo, &hi);
    if (hi > lo) memset(p + lo, 0, (hi - lo) * sizeof(float));
  }
}

/* ---- gemm ---------------------------------------------------------- */

#ifndef GEMM_CHUNKS_PER_THREAD
#define GEMM_CHUNKS_PER_THREAD 2
#endif

static void sgemm1(int ta, int tb, int M, int N, int K_, float alpha, const float *A, int lda, const float *B, int ldb,
                   float beta, float *C, int ldc) {
  if (M <= 0 || N <= 0) return;
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K_, alpha, A, lda,
              B, ldb, beta, C, ldc);
}

/* For products with a long K and a small output (the LM head's
 * dlnf (BT,C) = dlogits (BT,Vp) . wte (Vp,C)), splitting M or N would make
 * every chunk re-pack a whole operand of K-length rows; instead each chunk
 * takes a K range into its own partial output, and the partials are added in
 * chunk order (a fixed order: reproducible). Returns 0 if it could not get
 * the partial buffers (the caller then splits M/N). */
static int gemm_split_k(int nt, int ta, int tb, int M, int N, int K_, float alpha, const float *A, int lda,
                        const float *B, int ldb, float beta, float *C, int ldc) {
  int nchunks = (int)YK_MIN((size_t)nt * GEMM_CHUNKS_PER_THREAD, ((size_t)K_ + 63) / 64);
  size_t MN = (size_t)M * N;
  float *part = malloc((size_t)nchunks * MN * sizeof(float));
  if (!part) return 0;
#pragma omp parallel num_threads(nt)
  {
#pragma omp for schedule(dynamic, 1)
    for (int ch = 0; ch < nchunks; ch++) {
      size_t lo, hi;
      split((size_t)K_, nchunks, ch, 64, &lo, &hi);
      float *P = part + (size_t)ch * MN;
      if (hi <= lo) {
        memset(P, 0, MN * sizeof(float));
        continue;
      }
      /* op(A)[:, lo:hi] and op(B)[lo:hi, :] */
      const float *Ap = ta ? A + lo * (size_t)lda : A + lo;
      const float *Bp = tb ? B + lo : B + lo * (size_t)ldb;
      sgemm1(ta, tb, M, N, (int)(hi - lo), alpha, Ap, lda, Bp, ldb, 0.0f, P, N);
    }
    /* C = beta*C + P0 + P1 + ... per element in chunk order (beta == 0
     * never reads C, which may hold garbage) */
#pragma omp for schedule(static)
    for (int i = 0; i < M; i++) {
      float *c = C + (size_t)i * ldc;
      if (beta == 0.0f)
        memset(c, 0, (size_t)N * sizeof(float));
      else if (beta != 1.0f)
        for (int j = 0; j < N; j++) c[j] *= beta;
      for (int ch = 0; ch < nchunks; ch++) {
        const float *p = part + (size_t)ch * MN + (size_t)i * N;
        for (int j = 0; j < N; j++) c[j] += p[j];
      }
    }
  }
  free(part);
  return 1;
}

static void cpu_gemm(const yk_device *dev, int ta, int tb, int M, int N, int K_, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) {
  int nt = dev->nthreads;
  if (nt <= 1 || (double)M * N * K_ < 2e6) {
    sgemm1(ta, tb, M, N, K_, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  if ((size_t)K_ >= 4 * (size_t)YK_MAX(M, N) && gemm_split_k(nt, ta, tb, M, N, K_, alpha, A, lda, B, ldb, beta, C, ldc))
    return;
  /* Split the larger output dimension into a few chunks per thread, handed
   * out dynamically: a thread slowed by another process on its core then
   * does fewer chunks instead of making the others wait. The chunk bounds
   * depend only on the thread count, and a chunk's result only on its inputs
   * and bounds (not on which thread runs it), so for a fixed thread count the
   * result is bitwise reproducible. (Different thread counts give different
   * chunks, and OpenBLAS may round a chunked product differently.) */
  int by_n = N >= M;
  size_t dim = (size_t)(by_n ? N : M), align = by_n ? 64 : 16;
  int nchunks = (int)YK_MIN((size_t)nt * GEMM_CHUNKS_PER_THREAD, (dim + align - 1) / align);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
  for (int ch = 0; ch < nchunks; ch++) {
    size_t lo, hi;
    split(dim, nchunks, ch, align, &lo, &hi);
    if (hi <= lo) continue;
    if (by_n) {
      const float *Bp = tb ? B + lo * (size_t)ldb : B + lo;
      sgemm1(ta, tb, M, (int)(hi - lo), K_, alpha, A, lda, Bp, ldb, beta, C + lo, ldc);
    } else {
      const float *Ap = ta ? A + lo : A + lo * (size_t)lda;
      sgemm1(ta, tb, (int)(hi - lo), N, K_, alpha, Ap, lda, B, ldb, beta, C + lo * (size_t)ldc, ldc);
    }
  }
}

/* ---- encoder ---------------------------------------------------------- */

static void cpu_encoder_fwd(const yk_device *dev, float *out, const int32_t *tok, const float *wte, const float *wpe,
                            int N, int T, int C) {
  const cpu_kern *k = K(dev);
  int nt = threads_for(dev, (size_t)N * C);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int n = 0; n < N; n++)
    k->add(out + (size_t)n * C, wte + (size_t)tok[n] * C, wpe + (size_t)(n % T) * C, (size_t)C);
}

/* Partitioned over channels: each output element is summed by one thread in
 * row order, independent of the thread count. */
static void cpu_encoder_bwd(const yk_device *dev, float *dwte, float *dwpe, const float *dout, const int32_t *tok,
                            int N, int T, int C) {
  const cpu_kern *k = K(dev);
  int nt = threads_for(dev, (size_t)N * C);
#pragma omp parallel num_threads(nt)
  {
    size_t lo, hi;
    split((size_t)C, omp_get_num_threads(), omp_get_thread_num(), 16, &lo, &hi);
    if (hi > lo)
      for (int n = 0; n < N; n++) {
        const float *g = dout + (size_t)n * C + lo;
        k->acc(dwte + (size_t)tok[n] * C + lo, g, (int)(hi - lo));
        k->acc(dwpe + (size_t)(n % T) * C + lo, g, (int)(hi - lo));
      }
  }
}

/* ---- layernorm ---------------------------------------------------------- */

static void cpu_layernorm_fwd(const yk_device *dev, float *out, float *mean, float *rstd, const float *inp,
                              const float *w, const float *b, int N, int C) {
  const cpu_kern *k = K(dev);
  int nt = threads_for(dev, (size_t)N * C);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int n = 0; n < N; n++)
    k->ln_fwd_row(out + (size_t)n * C, mean + n, rstd + n, inp + (size_t)n * C, w, b, C);
}

/* Rows are cut into fixed chunks of LN_CHUNK rows whatever the thread count;
 * each chunk sums its dw/db partial (from zero, rows in order) into its own
 * scratch slice, then the partials are added in chunk order. So the result
 * is bitwise the same for any number of threads. */
#define LN_CHUNK 64

size_t yk_device_layernorm_bwd_scratch(const yk_device *dev, int N, int C) {
  return (size_t)((N + LN_CHUNK - 1) / LN_CHUNK) * 2 * (size_t)C;
}

static void cpu_layernorm_bwd(const yk_device *dev, float *dinp, float *dw, float *db, const float *dout,
                              const float *inp, const float *w, const float *mean, const float *rstd, int N, int C,
                              float *scratch) {
  const cpu_kern *k = K(dev);
  int nchunks = (N + LN_CHUNK - 1) / LN_CHUNK;
  int nt = YK_MIN(threads_for(dev, (size_t)N * C), nchunks);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int ch = 0; ch < nchunks; ch++) {
    float *pw = scratch + (size_t)ch * 2 * C, *pb = pw + C;
    memset(pw, 0, 2 * (size_t)C * sizeof(float));
    size_t hi = YK_MIN((size_t)N, (size_t)(ch + 1) * LN_CHUNK);
    for (size_t n = (size_t)ch * LN_CHUNK; n < hi; n++)
      k->ln_bwd_row(dinp + n * C, pw, pb, dout + n * C, inp + n * C, w, mean[n], rstd[n], C);
  }
  for (int ch = 0; ch < nchunks; ch++) {
    k->acc(dw, scratch + (size_t)ch * 2 * C, C);
    k->acc(db, scratch + (size_t)ch * 2 * C + C, C);
  }
}

/* ---- bias, gelu, add ---------------------------------------------------- */

static void cpu_bias_rows(const yk_device *dev, float *out, const float *bias, const float *res, int N, int OC) {
  const cpu_kern *k = K(dev);
  int nt = threads_for(dev, (size_t)N * OC);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int n = 0; n < N; n++) k->bias_row(out + (size_t)n * OC, bias, res ? res + (size_t)n * OC : NULL, OC);
}

/* Partitioned over columns, rows summed in order: independent of threads. */
static void cpu_bias_bwd(const yk_device *dev, float *db, const float *dout, int N, int OC) {
  const cpu_kern *k = K(dev);
  int nt = threads_for(dev, (size_t)N * OC);
#pragma omp parallel num_threads(nt)
  {
    size_t lo, hi;
    split((size_t)OC, omp_get_num_threads(), omp_get_thread_num(), 32, &lo, &hi);
    /* 32-column strips keep the accumulators in registers and the strip's
     * rows in L1/L2 while walking down the rows. */
    for (size_t c = lo; c < hi; c += 32) k->colsum(db + c, dout + c, N, (size_t)OC, (int)YK_MIN(32, hi - c));
  }
}

#define ELEMWISE_SPLIT(n)                                                                                             \
  size_t lo, hi;                                                                                                       \
  split((n), omp_get_num_threads(), omp_get_thread_num(), 64, &lo, &hi)

static void cpu_gelu_fwd(const yk_device *dev, float *out, const float *inp, size_t n) {
  const cpu_kern *k = K(dev);
#pragma omp parallel num_threads(threads_for(dev, n * 8))
  {
    ELEMWISE_SPLIT(n);
    if (hi > lo) k->gelu_fwd(out + lo, inp + lo, hi - lo);
  }
}

static void cpu_gelu_bwd(const yk_device *dev, float *dinp, const float *inp, const float *dout, size_t n) {
  const cpu_kern *k = K(dev);
#pragma omp parallel num_threads(threads_for(dev, n * 8))
  {
    ELEMWISE_SPLIT(n);
    if (hi > lo) k->gelu_bwd(dinp + lo, inp + lo, dout + lo, hi - lo);
  }
}

static void cpu_add(const yk_device *dev, float *out, const float *a, const float *b, size_t n) {
  const cpu_kern *k = K(dev);
#pragma omp parallel num_threads(threads_for(dev, n))
  {
    ELEMWISE_SPLIT(n);
    if (hi > lo) k->add(out + lo, a + lo, b + lo, hi - lo);
  }
}

/* ---- attention ---------------------------------------------------------- */

/* Causal products are done in row blocks of ABLK so the zero upper triangle
 * is mostly skipped: row block [r0,r1) only needs key columns [0,r1). */
#define ABLK 64

static void cpu_softmax_causal(const yk_device *dev, float *x, int R, int T, float scale) {
  const cpu_kern *k = K(dev);
  size_t rows = (size_t)R * T;
  int nt = threads_for(dev, rows * T);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (size_t r = 0; r < rows; r++) k->softmax_row(x + r * T, (int)(r % T) + 1, T, scale);
}

static void cpu_softmax_causal_bwd(const yk_device *dev, float *datt, const float *att, int R, int T, float scale) {
  const cpu_kern *k = K(dev);
  size_t rows = (size_t)R * T;
  int nt = threads_for(dev, rows * T);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (size_t r = 0; r < rows; r++) k->softmax_bwd_row(datt + r * T, att + r * T, (int)(r % T) + 1, T, scale);
}

/* One (batch, head): q,k,v (T,hd) with row stride 3C; att (T,T); out (T,hd)
 * with row stride C. */
static void attn_fwd_head(const cpu_kern *k, float *out, float *att, const float *q, const float *kk, const float *v,
                          int T, int C, int hd, float scale) {
  int ld = 3 * C;
  for (int r0 = 0; r0 < T; r0 += ABLK) {
    int r1 = YK_MIN(T, r0 + ABLK);
    /* scores (r1-r0, r1) = q[r0:r1] k[0:r1]^T */
    sgemm1(0, 1, r1 - r0, r1, hd, 1.0f, q + (size_t)r0 * ld, ld, kk, ld, 0.0f, att + (size_t)r0 * T, T);
    for (int t = r0; t < r1; t++) k->softmax_row(att + (size_t)t * T, t + 1, T, scale);
    /* out[r0:r1] = att[r0:r1, 0:r1] v[0:r1] */
    sgemm1(0, 0, r1 - r0, hd, r1, 1.0f, att + (size_t)r0 * T, T, v, ld, 0.0f, out + (size_t)r0 * C, C);
  }
}

static void cpu_attention_fwd(const yk_device *dev, float *out, float *att, const float *qkv, int B, int T, int C,
                              int NH) {
  const cpu_kern *k = K(dev);
  int hd = C / NH;
  float scale = 1.0f / sqrtf((float)hd);
  int BH = B * NH;
  int nt = threads_for(dev, (size_t)BH * T * T * hd);
  /* heads are independent (no cross-head sums), so dynamic scheduling keeps
   * results reproducible while balancing load */
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
  for (int bh = 0; bh < BH; bh++) {
    int b = bh / NH, h = bh % NH;
    const float *q = qkv + (size_t)b * T * 3 * C + (size_t)h * hd;
    attn_fwd_head(k, out + (size_t)b * T * C + (size_t)h * hd, att + (size_t)bh * T * T, q, q + C, q + 2 * C, T, C, hd,
                  scale);
  }
}

size_t yk_device_attention_bwd_scratch(const yk_device *dev, int T) {
  return (size_t)YK_MAX(dev->nthreads, 1) * (size_t)T * T;
}

static void attn_bwd_head(const cpu_kern *k, float *dq, float *dk, float *dv, const float *dout, const float *q,
                          const float *kk, const float *v, const float *att, float *datt, int T, int C, int hd,
                          float scale) {
  int ld = 3 * C;
  for (int r0 = 0; r0 < T; r0 += ABLK) {
    int r1 = YK_MIN(T, r0 + ABLK);
    /* datt[r0:r1, 0:r1] = dout[r0:r1] v[0:r1]^T */
    sgemm1(0, 1, r1 - r0, r1, hd, 1.0f, dout + (size_t)r0 * C, C, v, ld, 0.0f, datt + (size_t)r0 * T, T);
    /* to pre-softmax scores (zeros above the diagonal) */
    for (int t = r0; t < r1; t++) k->softmax_bwd_row(datt + (size_t)t * T, att + (size_t)t * T, t + 1, T, scale);
    /* dq[r0:r1] = dpre[r0:r1, 0:r1] k[0:r1] */
    sgemm1(0, 0, r1 - r0, hd, r1, 1.0f, datt + (size_t)r0 * T, T, kk, ld, 0.0f, dq + (size_t)r0 * ld, ld);
  }
  for (int c0 = 0; c0 < T; c0 += ABLK) {
    int c1 = YK_MIN(T, c0 + ABLK);
    /* key block [c0,c1) gets contributions from query rows t >= c0 only:
     * dk[c0:c1] = dpre[c0:T, c0:c1]^T q[c0:T]; dv[c0:c1] = att[c0:T, c0:c1]^T dout[c0:T] */
    sgemm1(1, 0, c1 - c0, hd, T - c0, 1.0f, datt + (size_t)c0 * T + c0, T, q + (size_t)c0 * ld, ld, 0.0f,
           dk + (size_t)c0 * ld, ld);
    sgemm1(1, 0, c1 - c0, hd, T - c0, 1.0f, att + (size_t)c0 * T + c0, T, dout + (size_t)c0 * C, C, 0.0f,
           dv + (size_t)c0 * ld, ld);
  }
}

static void cpu_attention_bwd(const yk_device *dev, float *dqkv, const float *dout, const float *qkv, const float *att,
                              int B, int T, int C, int NH, float *scratch) {
  const cpu_kern *k = K(dev);
  int hd = C / NH;
  float scale = 1.0f / sqrtf((float)hd);
  int BH = B * NH;
  int nt = threads_for(dev, (size_t)BH * T * T * hd);
#pragma omp parallel num_threads(nt)
  {
    float *datt = scratch + (size_t)omp_get_thread_num() * T * T;
#pragma omp for schedule(dynamic, 1)
    for (int bh = 0; bh < BH; bh++) {
      int b = bh / NH, h = bh % NH;
      size_t o3 = (size_t)b * T * 3 * C + (size_t)h * hd;
      float *dq = dqkv + o3;
      const float *q = qkv + o3;
      attn_bwd_head(k, dq, dq + C, dq + 2 * C, dout + (size_t)b * T * C + (size_t)h * hd, q, q + C, q + 2 * C,
                    att + (size_t)bh * T * T, datt, T, C, hd, scale);
    }
  }
}

/* ---- cross-entropy ------------------------------------------------------ */

static void cpu_crossent_fwd(const yk_device *dev, float *losses, float *lse, const float *logits,
                             const int32_t *targets, int N, int V, int Vp) {
  const cpu_kern *k = K(dev);
  int nt = threads_for(dev, (size_t)N * V * 4);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int n = 0; n < N; n++) {
    const float *x = logits + (size_t)n * Vp;
    float l = k->lse_row(x, V);
    lse[n] = l;
    losses[n] = l - x[targets[n]];
  }
}

static void cpu_crossent_bwd(const yk_device *dev, float *logits, const float *lse, const int32_t *targets, float dloss,
                             int N, int V, int Vp) {
  const cpu_kern *k = K(dev);
  int nt = threads_for(dev, (size_t)N * V * 4);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int n = 0; n < N; n++) k->ce_bwd_row(logits + (size_t)n * Vp, lse[n], targets[n], dloss, V, Vp);
}

/* ---- casts ---------------------------------------------------------- */

#define CAST_OP(name, TO, TI)                                                                                          \
  static void cpu_##name(const yk_device *dev, TO *out, const TI *in, size_t n) {                                      \
    const cpu_kern *k = K(dev);                                                                                        \
    _Pragma("omp parallel num_threads(threads_for(dev, n))") {                                                         \
      ELEMWISE_SPLIT(n);                                                                                               \
      if (hi > lo) k->name(out + lo, in + lo, hi - lo);                                                                \
    }                                                                                                                  \
  }
CAST_OP(f32_to_f16, uint16_t, float)
CAST_OP(f16_to_f32, float, uint16_t)
CAST_OP(f32_to_bf16, uint16_t, float)
CAST_OP(bf16_to_f32, float, uint16_t)

/* out (n) u16 = 16-bit bits of x (n), x = their fp32 value. */
#define ROUND_OP(name)                                                                                                 \
  static void cpu_##name(const yk_device *dev, uint16_t *out, float *x, size_t n) {                                    \
    const cpu_kern *k = K(dev);                                                                                        \
    _Pragma("omp parallel num_threads(threads_for(dev, n))") {                                                         \
      ELEMWISE_SPLIT(n);                                                                                               \
      if (hi > lo) k->name(out + lo, x + lo, hi - lo);                                                                 \
    }                                                                                                                  \
  }
ROUND_OP(round_f16)
ROUND_OP(round_bf16)

static const yk_device_ops cpu_ops = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .alloc_shared = cpu_alloc_shared,
    .zero = cpu_zero,
    .gemm = cpu_gemm,
    .encoder_fwd = cpu_encoder_fwd,
    .encoder_bwd = cpu_encoder_bwd,
    .layernorm_fwd = cpu_layernorm_fwd,
    .layernorm_bwd = cpu_layernorm_bwd,
    .bias_rows = cpu_bias_rows,
    .bias_bwd = cpu_bias_bwd,
    .gelu_fwd = cpu_gelu_fwd,
    .gelu_bwd = cpu_gelu_bwd,
    .add = cpu_add,
    .attention_fwd = cpu_attention_fwd,
    .attention_bwd = cpu_attention_bwd,
    .softmax_causal = cpu_softmax_causal,
    .softmax_causal_bwd = cpu_softmax_causal_bwd,
    .crossent_fwd = cpu_crossent_fwd,
    .crossent_bwd = cpu_crossent_bwd,
    .f32_to_f16 = cpu_f32_to_f16,
    .f16_to_f32 = cpu_f16_to_f32,
    .f32_to_bf16 = cpu_f32_to_bf16,
    .bf16_to_f32 = cpu_bf16_to_f32,
    .round_f16 = cpu_round_f16,
    .round_bf16 = cpu_round_bf16,
};

/* ---- creation ---------------------------------------------------------- */

int yk_device_cpu_create(int nthreads, yk_isa isa, yk_device **out, yk_diag *d) {
  *out = NULL;
  if (isa == YK_ISA_AUTO) {
    const char *env = getenv("YK_ISA");
    if (env && *env) {
      if (yk_isa_parse(env, &isa) != 0)
        return yk_errorf(d, YK_ECONFIG, "YK_ISA=%s is not a known instruction set; use portable, avx2 or auto", env);
    }
  }
  if (isa == YK_ISA_AUTO) isa = yk_isa_supported(YK_ISA_AVX2) ? YK_ISA_AVX2 : YK_ISA_PORTABLE;
  if (isa < 0 || isa >= YK_ISA_COUNT_) return yk_errorf(d, YK_EINVAL, "instruction set %d is not known", (int)isa);
  if (!yk_isa_supported(isa))
    return yk_errorf(d, YK_EUNSUPPORTED, "this CPU cannot run the %s kernels; use YK_ISA=portable", yk_isa_name(isa));
  cpu_device *c = calloc(1, sizeof *c);
  if (!c) return yk_errorf(d, YK_ENOMEM, "out of memory creating the CPU device");
  c->pub.ops = &cpu_ops;
  c->pub.nthreads = nthreads > 0 ? nthreads : yk_cpu_count();
  c->pub.isa = isa;
  c->k = isa == YK_ISA_AVX2 ? &yk_cpu_kern_avx2 : &yk_cpu_kern_portable;
  openblas_set_num_threads(1);
  *out = &c->pub;
  return 0;
}

void yk_device_destroy(yk_device *dev) { free(dev); }

double yk_device_gemm_gflops(const yk_device *dev, int M, int N, int K_, int reps) {
  float *A = dev->ops->alloc(dev, (size_t)M * K_ * sizeof(float));
  float *B = dev->ops->alloc(dev, (size_t)N * K_ * sizeof(float));
  float *C = dev->ops->alloc(dev, (size_t)M * N * sizeof(float));
  double best = 0.0;
  if (A && B && C) {
    for (size_t i = 0; i < (size_t)M * K_; i++) A[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)N * K_; i++) B[i] = (float)(i % 5) * 0.1f;
    for (int r = 0; r <= reps; r++) {
      double t0 = yk_now_s();
      /* the model's forward shape: (M,K) x (N,K)^T */
      dev->ops->gemm(dev, 0, 1, M, N, K_, 1.0f, A, K_, B, K_, 0.0f, C, N);
      double dt = yk_now_s() - t0;
      double g = 2.0 * M * N * K_ / dt / 1e9;
      if (r > 0 && g > best) best = g;
    }
  }
  dev->ops->free(dev, A);
  dev->ops->free(dev, B);
  dev->ops->free(dev, C);
  return best;
}
