/* cpu.c - the CPU backend of the device interface.
 *
 * Threading: one pool only (cpu_pool.c): every kernel is cut into chunks
 * with fixed bounds and the pool's threads (the caller included) claim them,
 * so a kernel's result never depends on which thread ran which chunk and
 * every reduction has a fixed order (bitwise reproducible runs, no atomics
 * on data). Row and element kernels use chunk bounds that do not depend on
 * the thread count either, so they give the same bits at any thread count.
 * OpenBLAS is pinned to one thread and each sgemm is split into chunks
 * (along M or N, or along K with ordered partial sums when K dominates);
 * this keeps a single set of threads busy instead of two pools spinning
 * against each other on a small machine. The pool, unlike an OpenMP team,
 * does not wait for a thread that is off-CPU (another process's work) before
 * a kernel can finish; see cpu_pool.h.
 *
 * ISA: yk_isa_resolve (common) picks the variant at creation: AVX2+FMA+F16C
 * when the CPU has it, else portable C, or what $YK_ISA / the isa argument
 * asks for. The vector row kernels come from that variant's table
 * (cpu_kern.h); the fp16/bf16 casts are common's (yk_cast_*), run in chunks
 * on the pool. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cpu_kern.h"
#include "cpu_pool.h"
#include "yk_device.h"

typedef struct cpu_device {
  yk_device pub; /* first: a yk_device* is a cpu_device* */
  const cpu_kern *k;
  cpu_pool *pool;
} cpu_device;

static inline const cpu_kern *K(const yk_device *dev) { return ((const cpu_device *)dev)->k; }
static inline cpu_pool *POOL(const yk_device *dev) { return ((const cpu_device *)dev)->pool; }

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

/* Chunk sizes of the row and element kernels: fixed (independent of the
 * thread count), about 64 KiB of floats per chunk, so claiming a chunk (one
 * atomic on a shared line) is noise and a preempted thread holds little. */
#define ELEM_CHUNK 16384
static inline int rows_per_chunk(size_t row_len) { return (int)YK_MAX((size_t)1, (size_t)ELEM_CHUNK / YK_MAX(row_len, (size_t)1)); }
static inline int nchunks_of(size_t n, size_t per) { return (int)((n + per - 1) / per); }

/* ---- memory ---------------------------------------------------------- */

static void *cpu_alloc(const yk_device *dev, size_t bytes) { return yk_alloc(bytes); }
static int cpu_alloc_shared(const yk_device *dev, size_t bytes, yk_shmem *out, yk_diag *d) {
  (void)dev;
  return yk_shmem_alloc(bytes, "yoke-arena", out, d);
}
static void cpu_free(const yk_device *dev, void *p) { yk_free(p); }

#define ZERO_CHUNK (1u << 18)
typedef struct {
  float *p;
  size_t n;
} zero_ctx;
static void zero_chunk(void *c_, int ch, int tid) {
  zero_ctx *c = c_;
  size_t lo = (size_t)ch * ZERO_CHUNK, hi = YK_MIN(c->n, lo + ZERO_CHUNK);
  memset(c->p + lo, 0, (hi - lo) * sizeof(float));
}
static void cpu_zero(const yk_device *dev, float *p, size_t n) {
  zero_ctx c = {p, n};
  cpu_pool_run(POOL(dev), nchunks_of(n, ZERO_CHUNK), n > (1u << 20) ? dev->nthreads : 1, zero_chunk, &c);
}

/* ---- gemm ---------------------------------------------------------- */

#ifndef GEMM_CHUNKS_PER_THREAD
#define GEMM_CHUNKS_PER_THREAD 2
#endif
#ifndef GEMM_MAX_CHUNKS_PER_THREAD
#define GEMM_MAX_CHUNKS_PER_THREAD 8
#endif
#define GEMM_CHUNK_FLOPS 1e9

static void sgemm1(int ta, int tb, int M, int N, int K_, float alpha, const float *A, int lda, const float *B, int ldb,
                   float beta, float *C, int ldc) {
  if (M <= 0 || N <= 0) return;
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K_, alpha, A, lda,
              B, ldb, beta, C, ldc);
}

/* Arguments of one product, shared by its chunks. */
typedef struct gemm_ctx {
  int ta, tb, M, N, K;
  float alpha, beta;
  const float *A, *B;
  int lda, ldb, ldc;
  float *C;
  /* chunking */
  int nchunks, by_n;
  size_t dim, align;
  float *part; /* split-K partials (nchunks, M, N) */
} gemm_ctx;

/* Split-K chunk ch: partial ch (M,N) = op(A)[:, lo:hi] op(B)[lo:hi, :]. */
static void gemm_k_chunk(void *c_, int ch, int tid) {
  gemm_ctx *g = c_;
  size_t lo, hi, MN = (size_t)g->M * g->N;
  split((size_t)g->K, g->nchunks, ch, 64, &lo, &hi);
  float *P = g->part + (size_t)ch * MN;
  if (hi <= lo) {
    memset(P, 0, MN * sizeof(float));
    return;
  }
  const float *Ap = g->ta ? g->A + lo * (size_t)g->lda : g->A + lo;
  const float *Bp = g->tb ? g->B + lo : g->B + lo * (size_t)g->ldb;
  sgemm1(g->ta, g->tb, g->M, g->N, (int)(hi - lo), g->alpha, Ap, g->lda, Bp, g->ldb, 0.0f, P, g->N);
}

/* Rows [16ch, 16ch+16) of C = beta*C + P0 + P1 + ... in chunk order (beta
 * == 0 never reads C, which may hold garbage). */
#define GEMM_SUM_ROWS 16
static void gemm_k_sum(void *c_, int ch, int tid) {
  gemm_ctx *g = c_;
  size_t MN = (size_t)g->M * g->N;
  int i1 = YK_MIN(g->M, (ch + 1) * GEMM_SUM_ROWS);
  for (int i = ch * GEMM_SUM_ROWS; i < i1; i++) {
    float *c = g->C + (size_t)i * g->ldc;
    if (g->beta == 0.0f)
      memset(c, 0, (size_t)g->N * sizeof(float));
    else if (g->beta != 1.0f)
      for (int j = 0; j < g->N; j++) c[j] *= g->beta;
    for (int p = 0; p < g->nchunks; p++) {
      const float *q = g->part + (size_t)p * MN + (size_t)i * g->N;
      for (int j = 0; j < g->N; j++) c[j] += q[j];
    }
  }
}

/* For products with a long K and a small output (the LM head's
 * dlnf (BT,C) = dlogits (BT,Vp) . wte (Vp,C)), splitting M or N would make
 * every chunk re-pack a whole operand of K-length rows; instead each chunk
 * takes a K range into its own partial output, and the partials are added in
 * chunk order (a fixed order: reproducible). Returns 0 if it could not get
 * the partial buffers (the caller then splits M/N). */
static int gemm_split_k(const yk_device *dev, gemm_ctx *g) {
  int nt = dev->nthreads;
  g->nchunks = (int)YK_MIN((size_t)nt * GEMM_CHUNKS_PER_THREAD, ((size_t)g->K + 63) / 64);
  g->part = malloc((size_t)g->nchunks * g->M * g->N * sizeof(float));
  if (!g->part) return 0;
  cpu_pool_run(POOL(dev), g->nchunks, nt, gemm_k_chunk, g);
  cpu_pool_run(POOL(dev), nchunks_of((size_t)g->M, GEMM_SUM_ROWS), nt, gemm_k_sum, g);
  free(g->part);
  return 1;
}

/* One chunk of the larger output dimension. */
static void gemm_mn_chunk(void *c_, int ch, int tid) {
  gemm_ctx *g = c_;
  size_t lo, hi;
  split(g->dim, g->nchunks, ch, g->align, &lo, &hi);
  if (hi <= lo) return;
  if (g->by_n) {
    const float *Bp = g->tb ? g->B + lo * (size_t)g->ldb : g->B + lo;
    sgemm1(g->ta, g->tb, g->M, (int)(hi - lo), g->K, g->alpha, g->A, g->lda, Bp, g->ldb, g->beta, g->C + lo, g->ldc);
  } else {
    const float *Ap = g->ta ? g->A + lo : g->A + lo * (size_t)g->lda;
    sgemm1(g->ta, g->tb, (int)(hi - lo), g->N, g->K, g->alpha, Ap, g->lda, g->B, g->ldb, g->beta,
           g->C + lo * (size_t)g->ldc, g->ldc);
  }
}

static void cpu_gemm(const yk_device *dev, int ta, int tb, int M, int N, int K_, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) {
  int nt = dev->nthreads;
  if (nt <= 1 || (double)M * N * K_ < 2e6) {
    sgemm1(ta, tb, M, N, K_, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  gemm_ctx g = {.ta = ta, .tb = tb, .M = M, .N = N, .K = K_, .alpha = alpha, .beta = beta, .A = A, .B = B,
                .lda = lda, .ldb = ldb, .ldc = ldc, .C = C};
  if ((size_t)K_ >= 4 * (size_t)YK_MAX(M, N) && gemm_split_k(dev, &g)) return;
  /* Split the larger output dimension into a few chunks per thread, claimed
   * as threads come free: a thread slowed by another process on its core
   * then does fewer chunks instead of making the others wait. The chunk
   * bounds depend only on the thread count, and a chunk's result only on its
   * inputs and bounds (not on which thread runs it), so for a fixed thread
   * count the result is bitwise reproducible. (Different thread counts give
   * different chunks, and OpenBLAS may round a chunked product differently.) */
  g.by_n = N >= M;
  g.dim = (size_t)(g.by_n ? N : M);
  g.align = g.by_n ? 64 : 16;
  /* Large products (the LM head's 80 GFLOP) get more chunks, about 1 GFLOP
   * each, up to GEMM_MAX_CHUNKS_PER_THREAD per thread: a thread sharing its
   * core with another process then still leaves little for the other to
   * wait on at the end, while each chunk stays large enough that re-packing
   * the shared operand per chunk costs under 1%. */
  size_t want = (size_t)((double)M * N * K_ * 2.0 / GEMM_CHUNK_FLOPS);
  want = YK_MAX(want, (size_t)nt * GEMM_CHUNKS_PER_THREAD);
  want = YK_MIN(want, (size_t)nt * GEMM_MAX_CHUNKS_PER_THREAD);
  g.nchunks = (int)YK_MIN(want, (g.dim + g.align - 1) / g.align);
  cpu_pool_run(POOL(dev), g.nchunks, nt, gemm_mn_chunk, &g);
}

/* ---- row kernels: one context type for all of them ---------------------- */

/* Pointers and sizes of one row/element kernel call; each kernel uses the
 * fields it needs. Rows are cut in chunks of `per` rows (or elements). */
typedef struct row_ctx {
  const cpu_kern *k;
  float *out, *out2, *out3;
  const float *in, *in2, *in3, *in4;
  const int32_t *tok;
  float *mean, *rstd;
  size_t n, per;
  int N, T, C, V, Vp;
  float f;
  uint16_t *o16;
  const uint16_t *i16;
} row_ctx;

static inline void chunk_range(const row_ctx *c, int ch, size_t total, size_t *lo, size_t *hi) {
  *lo = (size_t)ch * c->per;
  *hi = YK_MIN(total, *lo + c->per);
}

/* ---- encoder ---------------------------------------------------------- */

static void enc_fwd_chunk(void *c_, int ch, int tid) {
  row_ctx *c = c_;
  size_t lo, hi, C = (size_t)c->C;
  chunk_range(c, ch, (size_t)c->N, &lo, &hi);
  for (size_t n = lo; n < hi; n++) c->k->add(c->out + n * C, c->in + (size_t)c->tok[n] * C, c->in2 + (n % c->T) * C, C);
}

static void cpu_encoder_fwd(const yk_device *dev, float *out, const int32_t *tok, const float *wte, const float *wpe,
                            int N, int T, int C) {
  row_ctx c = {.k = K(dev), .out = out, .tok = tok, .in = wte, .in2 = wpe, .N = N, .T = T, .C = C,
               .per = (size_t)rows_per_chunk((size_t)C)};
  cpu_pool_run(POOL(dev), nchunks_of((size_t)N, c.per), threads_for(dev, (size_t)N * C), enc_fwd_chunk, &c);
}

/* Chunks are channel ranges: each output element is summed by one chunk in
 * row order, independent of the thread count. */
#define ENC_COLS 64
static void enc_bwd_chunk(void *c_, int ch, int tid) {
  row_ctx *c = c_;
  size_t lo = (size_t)ch * ENC_COLS, hi = YK_MIN((size_t)c->C, lo + ENC_COLS), C = (size_t)c->C;
  for (int n = 0; n < c->N; n++) {
    const float *g = c->in + (size_t)n * C + lo;
    c->k->acc(c->out + (size_t)c->tok[n] * C + lo, g, (int)(hi - lo));
    c->k->acc(c->out2 + (size_t)(n % c->T) * C + lo, g, (int)(hi - lo));
  }
}

static void cpu_encoder_bwd(const yk_device *dev, float *dwte, float *dwpe, const float *dout, const int32_t *tok,
                            int N, int T, int C) {
  row_ctx c = {.k = K(dev), .out = dwte, .out2 = dwpe, .in = dout, .tok = tok, .N = N, .T = T, .C = C};
  cpu_pool_run(POOL(dev), nchunks_of((size_t)C, ENC_COLS), threads_for(dev, (size_t)N * C), enc_bwd_chunk, &c);
}

/* ---- layernorm ---------------------------------------------------------- */

static void ln_fwd_chunk(void *c_, int ch, int tid) {
  row_ctx *c = c_;
  size_t lo, hi, C = (size_t)c->C;
  chunk_range(c, ch, (size_t)c->N, &lo, &hi);
  for (size_t n = lo; n < hi; n++)
    c->k->ln_fwd_row(c->out + n * C, c->mean + n, c->rstd + n, c->in + n * C, c->in2, c->in3, c->C);
}

static void cpu_layernorm_fwd(const yk_device *dev, float *out, float *mean, float *rstd, const float *inp,
                              const float *w, const float *b, int N, int C) {
  row_ctx c = {.k = K(dev), .out = out, .mean = mean, .rstd = rstd, .in = inp, .in2 = w, .in3 = b, .N = N, .C = C,
               .per = (size_t)rows_per_chunk((size_t)C)};
  cpu_pool_run(POOL(dev), nchunks_of((size_t)N, c.per), threads_for(dev, (size_t)N * C), ln_fwd_chunk, &c);
}

/* Rows are cut into fixed chunks of LN_CHUNK rows whatever the thread count;
 * each chunk sums its dw/db partial (from zero, rows in order) into its own
 * scratch slice, then the partials are added in chunk order. So the result
 * is bitwise the same for any number of threads. */
#define LN_CHUNK 64

size_t yk_device_layernorm_bwd_scratch(const yk_device *dev, int N, int C) {
  return (size_t)((N + LN_CHUNK - 1) / LN_CHUNK) * 2 * (size_t)C;
}

static void ln_bwd_chunk(void *c_, int ch, int tid) {
  row_ctx *c = c_;
  size_t C = (size_t)c->C;
  float *pw = c->out3 + (size_t)ch * 2 * C, *pb = pw + C;
  memset(pw, 0, 2 * C * sizeof(float));
  size_t hi = YK_MIN((size_t)c->N, (size_t)(ch + 1) * LN_CHUNK);
  for (size_t n = (size_t)ch * LN_CHUNK; n < hi; n++)
    c->k->ln_bwd_row(c->out + n * C, pw, pb, c->in + n * C, c->in2 + n * C, c->in3, c->mean[n], c->rstd[n], c->C);
}

static void cpu_layernorm_bwd(const yk_device *dev, float *dinp, float *dw, float *db, const float *dout,
                              const float *inp, const float *w, const float *mean, const float *rstd, int N, int C,
                              float *scratch) {
  const cpu_kern *k = K(dev);
  int nchunks = (N + LN_CHUNK - 1) / LN_CHUNK;
  row_ctx c = {.k = k, .out = dinp, .out3 = scratch, .in = dout, .in2 = inp, .in3 = w, .mean = (float *)mean,
               .rstd = (float *)rstd, .N = N, .C = C};
  cpu_pool_run(POOL(dev), nchunks, threads_for(dev, (size_t)N * C), ln_bwd_chunk, &c);
  for (int ch = 0; ch < nchunks; ch++) {
    k->acc(dw, scratch + (size_t)ch * 2 * C, C);
    k->acc(db, scratch + (size_t)ch * 2 * C + C, C);
  }
}

/* ---- bias, gelu, add ---------------------------------------------------- */

static void bias_rows_chunk(void *c_, int ch, int tid) {
  row_ctx *c = c_;
  size_t lo, hi, OC = (size_t)c->C;
  chunk_range(c, ch, (size_t)c->N, &lo, &hi);
  for (size_t n = lo; n < hi; n++) c->k->bias_row(c->out + n * OC, c->in, c->in2 ? c->in2 + n * OC : NULL, c->C);
}

static void cpu_bias_rows(const yk_device *dev, float *out, const float *bias, const float *res, int N, int OC) {
  row_ctx c = {.k = K(dev), .out = out, .in = bias, .in2 = res, .N = N, .C = OC,
               .per = (size_t)rows_per_chunk((size_t)OC)};
  cpu_pool_run(POOL(dev), nchunks_of((size_t)N, c.per), threads_for(dev, (size_t)N * OC), bias_rows_chunk, &c);
}

/* Chunks are 32-column strips, rows summed in order: independent of
 * threads. A strip keeps its accumulators in registers while walking down
 * the rows. */
#define BIAS_COLS 32
static void bias_bwd_chunk(void *c_, int ch, int tid) {
  row_ctx *c = c_;
  size_t lo = (size_t)ch * BIAS_COLS, hi = YK_MIN((size_t)c->C, lo + BIAS_COLS);
  c->k->colsum(c->out + lo, c->in + lo, c->N, (size_t)c->C, (int)(hi - lo));
}

static void cpu_bias_bwd(const yk_device *dev, float *db, const float *dout, int N, int OC) {
  row_ctx c = {.k = K(dev), .out = db, .in = dout, .N = N, .C = OC};
  cpu_pool_run(POOL(dev), nchunks_of((size_t)OC, BIAS_COLS), threads_for(dev, (size_t)N * OC), bias_bwd_chunk, &c);
}

static void gelu_fwd_chunk(void *c_, int ch, int tid) {
  row_ctx *c = c_;
  size_t lo, hi;
  chunk_range(c, ch, c->n, &lo, &hi);
  c->k->gelu_fwd(c->out + lo, c->in + lo, hi - lo);
}

static void cpu_gelu_fwd(const yk_device *dev, float *out, const float *inp, size_t n) {
  row_ctx c = {.k = K(dev), .out = out, .in = inp, .n = n, .per = ELEM_CHUNK};
  cpu_pool_run(POOL(dev), nchunks_of(n, c.per), threads_for(dev, n * 8), gelu_fwd_chunk, &c);
}

static void gelu_bwd_chunk(void *c_, int ch, int tid) {
  row_ctx *c = c_;
  size_t lo, hi;
  chunk_range(c, ch, c->n, &lo, &hi);
  c->k->gelu_bwd(c->out + lo, c->in + lo, c->in2 + lo, hi - lo);
}

static void cpu_gelu_bwd(const yk_device *dev, float *dinp, const float *inp, const float *dout, size_t n) {
  row_ctx c = {.k = K(dev), .out = dinp, .in = inp, .in2 = dout, .n = n, .per = ELEM_CHUNK};
  cpu_pool_run(POOL(dev), nchunks_of(n, c.per), threads_for(dev, n * 8), gelu_bwd_chunk, &c);
}

static void add_chunk(void *c_, int ch, int tid) {
  row_ctx *c = c_;
  size_t lo, hi;
  chunk_range(c, ch, c->n, &lo, &hi);
  c->k->add(c->out + lo, c->in + lo, c->in2 + lo, hi - lo);
}

static void cpu_add(const yk_device *dev, float *out, const float *a, const float *b, size_t n) {
  row_ctx c = {.k = K(dev), .out = out, .in = a, .in2 = b, .n = n, .per = ELEM_CHUNK};
  cpu_pool_run(POOL(dev), nchunks_of(n, c.per), threads_for(dev, n), add_chunk, &c);
}

/* ---- attention ---------------------------------------------------------- */

/* Causal products are done in row blocks of ABLK so the zero upper triangle
 * is mostly skipped: row block [r0,r1) only needs key columns [0,r1). */
#ifndef ABLK
#define ABLK 64
#endif

static void softmax_chunk(void *c_, int ch, int tid) {
  row_ctx *c = c_;
  size_t lo, hi, T = (size_t)c->T;
  chunk_range(c, ch, c->n, &lo, &hi);
  for (size_t r = lo; r < hi; r++) c->k->softmax_row(c->out + r * T, (int)(r % T) + 1, c->T, c->f);
}

static void cpu_softmax_causal(const yk_device *dev, float *x, int R, int T, float scale) {
  size_t rows = (size_t)R * T;
  row_ctx c = {.k = K(dev), .out = x, .n = rows, .T = T, .f = scale, .per = (size_t)rows_per_chunk((size_t)T)};
  cpu_pool_run(POOL(dev), nchunks_of(rows, c.per), threads_for(dev, rows * T), softmax_chunk, &c);
}

static void softmax_bwd_chunk(void *c_, int ch, int tid) {
  row_ctx *c = c_;
  size_t lo, hi, T = (size_t)c->T;
  chunk_range(c, ch, c->n, &lo, &hi);
  for (size_t r = lo; r < hi; r++) c->k->softmax_bwd_row(c->out + r * T, c->in + r * T, (int)(r % T) + 1, c->T, c->f);
}

static void cpu_softmax_causal_bwd(const yk_device *dev, float *datt, const float *att, int R, int T, float scale) {
  size_t rows = (size_t)R * T;
  row_ctx c = {.k = K(dev), .out = datt, .in = att, .n = rows, .T = T, .f = scale,
               .per = (size_t)rows_per_chunk((size_t)T)};
  cpu_pool_run(POOL(dev), nchunks_of(rows, c.per), threads_for(dev, rows * T), softmax_bwd_chunk, &c);
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

typedef struct attn_ctx {
  const cpu_kern *k;
  float *out, *att, *dqkv, *scratch;
  const float *qkv, *dout, *catt;
  int T, C, NH, hd;
  float scale;
} attn_ctx;

/* Chunk = one (batch, head): heads are independent (no cross-head sums). */
static void attn_fwd_chunk(void *c_, int bh, int tid) {
  attn_ctx *a = c_;
  int T = a->T, C = a->C, b = bh / a->NH, h = bh % a->NH;
  const float *q = a->qkv + (size_t)b * T * 3 * C + (size_t)h * a->hd;
  attn_fwd_head(a->k, a->out + (size_t)b * T * C + (size_t)h * a->hd, a->att + (size_t)bh * T * T, q, q + C, q + 2 * C,
                T, C, a->hd, a->scale);
}

static void cpu_attention_fwd(const yk_device *dev, float *out, float *att, const float *qkv, int B, int T, int C,
                              int NH) {
  int hd = C / NH;
  attn_ctx a = {.k = K(dev), .out = out, .att = att, .qkv = qkv, .T = T, .C = C, .NH = NH, .hd = hd,
                .scale = 1.0f / sqrtf((float)hd)};
  cpu_pool_run(POOL(dev), B * NH, threads_for(dev, (size_t)B * NH * T * T * hd), attn_fwd_chunk, &a);
}

/* OpenBLAS packs at most a P x Q block of A and a Q x R panel of B per
 * calling thread (its x86-64 sgemm blocking: P 768, Q 384, R about 4096),
 * in a buffer of its own that each of our threads touches once it runs a
 * product; the rest of that buffer stays untouched. */
size_t yk_device_gemm_workspace(const yk_device *dev, int M, int N, int K) {
  size_t m = (size_t)YK_MIN(M, 768), k = (size_t)YK_MIN(K, 384), n = (size_t)YK_MIN(N, 4096);
  size_t per = ((m * k + k * n) * sizeof(float) + 4095) / 4096 * 4096;
  return (size_t)YK_MAX(dev->nthreads, 1) * per;
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

/* Chunk = one (batch, head); datt is the running thread's scratch. */
static void attn_bwd_chunk(void *c_, int bh, int tid) {
  attn_ctx *a = c_;
  int T = a->T, C = a->C, b = bh / a->NH, h = bh % a->NH;
  size_t o3 = (size_t)b * T * 3 * C + (size_t)h * a->hd;
  float *dq = a->dqkv + o3;
  const float *q = a->qkv + o3;
  attn_bwd_head(a->k, dq, dq + C, dq + 2 * C, a->dout + (size_t)b * T * C + (size_t)h * a->hd, q, q + C, q + 2 * C,
                a->catt + (size_t)bh * T * T, a->scratch + (size_t)tid * T * T, T, C, a->hd, a->scale);
}

static void cpu_attention_bwd(const yk_device *dev, float *dqkv, const float *dout, const float *qkv, const float *att,
                              int B, int T, int C, int NH, float *scratch) {
  int hd = C / NH;
  attn_ctx a = {.k = K(dev), .dqkv = dqkv, .dout = dout, .qkv = qkv, .catt = att, .scratch = scratch, .T = T, .C = C,
                .NH = NH, .hd = hd, .scale = 1.0f / sqrtf((float)hd)};
  cpu_pool_run(POOL(dev), B * NH, threads_for(dev, (size_t)B * NH * T * T * hd), attn_bwd_chunk, &a);
}

/* ---- cross-entropy ------------------------------------------------------ */

#define CE_ROWS 4
static void ce_fwd_chunk(void *c_, int ch, int tid) {
  row_ctx *c = c_;
  size_t lo, hi;
  chunk_range(c, ch, (size_t)c->N, &lo, &hi);
  for (size_t n = lo; n < hi; n++) {
    const float *x = c->in + n * (size_t)c->Vp;
    float l = c->k->lse_row(x, c->V);
    c->rstd[n] = l;
    c->mean[n] = l - x[c->tok[n]];
  }
}

static void cpu_crossent_fwd(const yk_device *dev, float *losses, float *lse, const float *logits,
                             const int32_t *targets, int N, int V, int Vp) {
  row_ctx c = {.k = K(dev), .mean = losses, .rstd = lse, .in = logits, .tok = targets, .N = N, .V = V, .Vp = Vp,
               .per = CE_ROWS};
  cpu_pool_run(POOL(dev), nchunks_of((size_t)N, CE_ROWS), threads_for(dev, (size_t)N * V * 4), ce_fwd_chunk, &c);
}

static void ce_bwd_chunk(void *c_, int ch, int tid) {
  row_ctx *c = c_;
  size_t lo, hi;
  chunk_range(c, ch, (size_t)c->N, &lo, &hi);
  for (size_t n = lo; n < hi; n++)
    c->k->ce_bwd_row(c->out + n * (size_t)c->Vp, c->in[n], c->tok[n], c->f, c->V, c->Vp);
}

static void cpu_crossent_bwd(const yk_device *dev, float *logits, const float *lse, const int32_t *targets, float dloss,
                             int N, int V, int Vp) {
  row_ctx c = {.k = K(dev), .out = logits, .in = lse, .tok = targets, .f = dloss, .N = N, .V = V, .Vp = Vp,
               .per = CE_ROWS};
  cpu_pool_run(POOL(dev), nchunks_of((size_t)N, CE_ROWS), threads_for(dev, (size_t)N * V * 4), ce_bwd_chunk, &c);
}

/* Vocabulary-parallel forward: per row, the logsumexp of this rank's nv
 * valid columns (-inf when nv is 0) and the target's logit when this rank
 * holds it (tok in [0, nv), already shifted by the shard start), else 0. */
static void ce_shard_chunk(void *c_, int ch, int tid) {
  row_ctx *c = c_;
  size_t lo, hi;
  chunk_range(c, ch, (size_t)c->N, &lo, &hi);
  for (size_t n = lo; n < hi; n++) {
    const float *x = c->in + n * (size_t)c->Vp;
    c->rstd[n] = c->V > 0 ? c->k->lse_row(x, c->V) : -INFINITY;
    c->mean[n] = c->tok[n] >= 0 && c->tok[n] < c->V ? x[c->tok[n]] : 0.0f;
  }
}

static void cpu_crossent_shard_fwd(const yk_device *dev, float *lse, float *tgt, const float *logits,
                                   const int32_t *targets, int N, int nv, int ld) {
  row_ctx c = {.k = K(dev), .mean = tgt, .rstd = lse, .in = logits, .tok = targets, .N = N, .V = nv, .Vp = ld,
               .per = CE_ROWS};
  cpu_pool_run(POOL(dev), nchunks_of((size_t)N, CE_ROWS), threads_for(dev, (size_t)N * (nv + 1) * 4), ce_shard_chunk,
               &c);
}

/* ---- casts: common's kernels (yk_cast_*) in fixed chunks on the pool ---- */

/* out (n) dt16 <- in (n) f32, or out (n) f32 <- in (n) dt16 (to16 = 0), or
 * the round trip (round = 1: out (n) dt16 and x = in (n) f32 in place). */
typedef struct {
  yk_isa isa;
  yk_dtype dt16;
  int to16, round;
  void *out;
  const void *in;
  size_t n;
} cast_ctx;

static void cast_chunk(void *c_, int ch, int tid) {
  cast_ctx *c = c_;
  size_t lo = (size_t)ch * ELEM_CHUNK, hi = YK_MIN(c->n, lo + ELEM_CHUNK);
  if (c->round)
    yk_cast_round((uint16_t *)c->out + lo, c->dt16, (float *)c->in + lo, hi - lo, c->isa);
  else if (c->to16)
    yk_cast_from_f32((uint16_t *)c->out + lo, c->dt16, (const float *)c->in + lo, hi - lo, c->isa);
  else
    yk_cast_to_f32((float *)c->out + lo, (const uint16_t *)c->in + lo, c->dt16, hi - lo, 1.0f, c->isa);
}

static void cast_run(const yk_device *dev, yk_dtype dt16, int to16, int round, void *out, const void *in, size_t n) {
  cast_ctx c = {dev->isa, dt16, to16, round, out, in, n};
  cpu_pool_run(POOL(dev), nchunks_of(n, ELEM_CHUNK), threads_for(dev, n), cast_chunk, &c);
}

static void cpu_f32_to_f16(const yk_device *dev, uint16_t *out, const float *in, size_t n) {
  cast_run(dev, YK_DT_F16, 1, 0, out, in, n);
}
static void cpu_f16_to_f32(const yk_device *dev, float *out, const uint16_t *in, size_t n) {
  cast_run(dev, YK_DT_F16, 0, 0, out, in, n);
}
static void cpu_f32_to_bf16(const yk_device *dev, uint16_t *out, const float *in, size_t n) {
  cast_run(dev, YK_DT_BF16, 1, 0, out, in, n);
}
static void cpu_bf16_to_f32(const yk_device *dev, float *out, const uint16_t *in, size_t n) {
  cast_run(dev, YK_DT_BF16, 0, 0, out, in, n);
}
static void cpu_round_f16(const yk_device *dev, uint16_t *out, float *x, size_t n) {
  cast_run(dev, YK_DT_F16, 1, 1, out, x, n);
}
static void cpu_round_bf16(const yk_device *dev, uint16_t *out, float *x, size_t n) {
  cast_run(dev, YK_DT_BF16, 1, 1, out, x, n);
}

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
    .crossent_shard_fwd = cpu_crossent_shard_fwd,
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
  int rc = yk_isa_resolve(isa, &isa, d);
  if (rc) return rc;
  cpu_device *c = calloc(1, sizeof *c);
  if (!c) return yk_errorf(d, YK_ENOMEM, "out of memory creating the CPU device");
  c->pub.ops = &cpu_ops;
  c->pub.nthreads = nthreads > 0 ? nthreads : yk_cpu_count();
  c->pub.isa = isa;
  c->k = isa == YK_ISA_AVX2 ? &yk_cpu_kern_avx2 : &yk_cpu_kern_portable;
  if (cpu_pool_create(c->pub.nthreads, &c->pool) != 0) {
    free(c);
    return yk_errorf(d, YK_ESYS, "could not start %d compute threads for the CPU device; lower the thread count",
                     nthreads > 0 ? nthreads : yk_cpu_count());
  }
  openblas_set_num_threads(1);
  *out = &c->pub;
  return 0;
}

void yk_device_destroy(yk_device *dev) {
  if (!dev) return;
  cpu_pool_destroy(((cpu_device *)dev)->pool);
  free(dev);
}

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
