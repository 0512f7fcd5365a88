/* kernels.c - AdamW, sum of squares, scaling and the Inf/NaN scan on flat
 * arrays, each in a portable scalar version and an AVX2 version chosen at run
 * time by common's yk_isa_resolve (the 16-bit casts are common's yk_cast_*).
 *
 * Bitwise agreement between the variants is a design goal (tests check it):
 * the AVX2 code performs the same IEEE operations in the same order as the
 * scalar code. The file is compiled with -ffp-contract=off so the compiler
 * never fuses a*b+c in one variant only; sqrt and div are correctly rounded
 * in both. */
#include "yk_optimizer.h"

#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The variant to run: yk_isa_resolve's choice, or the fallback it documents
 * (these kernels have no error path; the device reports a bad $YK_ISA). */
static int use_avx2(yk_isa want) {
  (void)yk_isa_resolve(want, &want, NULL);
  return want == YK_ISA_AVX2;
}

/* ---- AdamW ------------------------------------------------------------- */

/* Per-step constants, each rounded to fp32 once (torch passes Python floats
 * to fp32 tensor ops, which round them the same way). */
typedef struct {
  float gs;      /* gradient multiplier (unscale * clip) */
  int use_gs;    /* gs != 1 */
  float b1, omb1, b2, omb2;
  float bc2s;    /* sqrt(1 - beta2^t) */
  float eps;
  float nss;     /* -lr / (1 - beta1^t) */
} adamw_k;

/* One contiguous run of elements sharing one decay factor.
 * p, g, m, v: (n,) f32. Operation order mirrors torch's CPU kernels:
 *   p *= decay; m = m*b1 + omb1*g; v = v*b2 + (omb2*g)*g;
 *   p = p + (nss*m) / (sqrt(v)/bc2s + eps). */
static void adamw_scalar(const adamw_k *k, float decay, size_t n, float *p, const float *g, float *m, float *v) {
  for (size_t i = 0; i < n; i++) {
    float gi = g[i];
    if (k->use_gs) gi = gi * k->gs;
    float pi = p[i] * decay;
    float mi = m[i] * k->b1 + k->omb1 * gi;
    float vi = v[i] * k->b2 + (k->omb2 * gi) * gi;
    float den = sqrtf(vi) / k->bc2s + k->eps;
    p[i] = pi + (k->nss * mi) / den;
    m[i] = mi;
    v[i] = vi;
  }
}

__attribute__((target("avx2"))) static void adamw_avx2(const adamw_k *k, float decay, size_t n, float *p,
                                                       const float *g, float *m, float *v) {
  const __m256 gs = _mm256_set1_ps(k->gs), dc = _mm256_set1_ps(decay);
  const __m256 b1 = _mm256_set1_ps(k->b1), omb1 = _mm256_set1_ps(k->omb1);
  const __m256 b2 = _mm256_set1_ps(k->b2), omb2 = _mm256_set1_ps(k->omb2);
  const __m256 bc2s = _mm256_set1_ps(k->bc2s), eps = _mm256_set1_ps(k->eps), nss = _mm256_set1_ps(k->nss);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 gi = _mm256_loadu_ps(g + i);
    if (k->use_gs) gi = _mm256_mul_ps(gi, gs);
    __m256 pi = _mm256_mul_ps(_mm256_loadu_ps(p + i), dc);
    __m256 mi = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(m + i), b1), _mm256_mul_ps(omb1, gi));
    __m256 vi = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(v + i), b2), _mm256_mul_ps(_mm256_mul_ps(omb2, gi), gi));
    __m256 den = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2s), eps);
    pi = _mm256_add_ps(pi, _mm256_div_ps(_mm256_mul_ps(nss, mi), den));
    _mm256_storeu_ps(p + i, pi);
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
  }
  adamw_scalar(k, decay, n - i, p + i, g + i, m + i, v + i);
}

/* ---- the AdamW driver --------------------------------------------------- */

/* Chunk so the 16-bit copy of freshly updated params is made while they are
 * still in cache (common's yk_cast_from_f32, same variant). */
#define ADAMW_CHUNK 4096

static void adamw_run(const adamw_k *k, yk_isa isa, float decay, size_t n, float *p, const float *g, float *m,
                      float *v, void *p16, yk_dtype dt16) {
  for (size_t c = 0; c < n; c += ADAMW_CHUNK) {
    size_t len = YK_MIN((size_t)ADAMW_CHUNK, n - c);
    if (isa == YK_ISA_AVX2) adamw_avx2(k, decay, len, p + c, g + c, m + c, v + c);
    else adamw_scalar(k, decay, len, p + c, g + c, m + c, v + c);
    if (p16) yk_cast_from_f32((uint16_t *)p16 + c, dt16, p + c, len, isa);
  }
}

int yk_optimizer_adamw_step(const yk_adamw *h, int64_t step, double lr, float grad_scale,
                            const yk_tensor_desc *tensors, int n_tensors, size_t off, size_t count,
                            float *params, const float *grads, float *m, float *v,
                            void *params16, yk_dtype dt16) {
  if (!h || step < 1 || n_tensors < 0) return YK_EINVAL;
  if (params16 && dt16 != YK_DT_F16 && dt16 != YK_DT_BF16) return YK_EINVAL;
  if (count && (!params || !grads || !m || !v)) return YK_EINVAL;
  for (int i = 1; tensors && i < n_tensors; i++)
    if (tensors[i].offset < tensors[i - 1].offset + tensors[i - 1].numel) return YK_EINVAL;

  adamw_k k;
  k.gs = grad_scale;
  k.use_gs = grad_scale != 1.0f;
  k.b1 = (float)h->beta1;
  k.omb1 = (float)(1.0 - h->beta1);
  k.b2 = (float)h->beta2;
  k.omb2 = (float)(1.0 - h->beta2);
  double bc1 = 1.0 - pow(h->beta1, (double)step);
  double bc2 = 1.0 - pow(h->beta2, (double)step);
  k.bc2s = (float)sqrt(bc2);
  k.eps = (float)h->eps;
  k.nss = (float)(-(lr / bc1));
  const float dec_on = (float)(1.0 - lr * h->weight_decay), dec_off = 1.0f;
  const yk_isa isa = use_avx2(h->isa) ? YK_ISA_AVX2 : YK_ISA_PORTABLE;

  const size_t end = off + count;
  if (!tensors) {
    adamw_run(&k, isa, dec_on, count, params, grads, m, v, params16, dt16);
    return 0;
  }
  /* Walk the slice as runs: gaps between tensors (no decay) and the parts of
   * tensors that intersect [off, end). Pointers are slice-relative. */
  size_t es16 = params16 ? yk_dtype_size(dt16) : 0;
  size_t cur = off;
#define RUN(lo, hi, dec)                                                                                      \
  do {                                                                                                        \
    size_t r0_ = (lo) - off, n_ = (hi) - (lo);                                                                \
    adamw_run(&k, isa, (dec), n_, params + r0_, grads + r0_, m + r0_, v + r0_,                                 \
              params16 ? (char *)params16 + r0_ * es16 : NULL, dt16);                                         \
  } while (0)
  for (int t = 0; t < n_tensors && cur < end; t++) {
    size_t ts = tensors[t].offset, te = ts + tensors[t].numel;
    if (te <= cur) continue;
    if (ts > cur) { /* padding gap before this tensor */
      size_t ge = YK_MIN(ts, end);
      RUN(cur, ge, dec_off);
      cur = ge;
      if (cur >= end) break;
    }
    size_t re = YK_MIN(te, end);
    RUN(cur, re, tensors[t].decay ? dec_on : dec_off);
    cur = re;
  }
  if (cur < end) RUN(cur, end, dec_off);
#undef RUN
  return 0;
}

/* ---- sum of squares ----------------------------------------------------- */

static double combine8(const double a[8]) { return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])); }

/* x: (n,) f32. Each square is exact in double (24-bit mantissas), so the
 * result depends only on the fixed accumulation order. */
static void sumsq_scalar_acc(const float *x, size_t n, double acc[8]) {
  for (size_t i = 0; i < n; i++) {
    double d = (double)x[i];
    acc[i & 7] += d * d;
  }
}

__attribute__((target("avx2"))) static double sumsq_avx2(const float *x, size_t n) {
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 f = _mm256_loadu_ps(x + i);
    __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(f));
    __m256d b = _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1));
    lo = _mm256_add_pd(lo, _mm256_mul_pd(a, a));
    hi = _mm256_add_pd(hi, _mm256_mul_pd(b, b));
  }
  double acc[8];
  _mm256_storeu_pd(acc, lo);
  _mm256_storeu_pd(acc + 4, hi);
  sumsq_scalar_acc(x + i, n - i, acc); /* i is a multiple of 8: lanes line up */
  return combine8(acc);
}

double yk_optimizer_sumsq(const float *x, size_t n, yk_isa isa) {
  if (use_avx2(isa)) return sumsq_avx2(x, n);
  double acc[8] = {0};
  sumsq_scalar_acc(x, n, acc);
  return combine8(acc);
}

double yk_optimizer_global_norm(const float *x, size_t n, yk_isa isa) { return sqrt(yk_optimizer_sumsq(x, n, isa)); }

float yk_optimizer_clip_coef(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0f;
  if (!isfinite(norm)) return NAN; /* Inf or NaN gradients: let the caller see it, never scale them by 0 */
  double c = max_norm / (norm + 1e-6);
  return c < 1.0 ? (float)c : 1.0f;
}

/* ---- scale -------------------------------------------------------------- */

static void scale_scalar(float *x, size_t n, float s) {
  for (size_t i = 0; i < n; i++) x[i] = x[i] * s;
}

__attribute__((target("avx2"))) static void scale_avx2(float *x, size_t n, float s) {
  const __m256 sv = _mm256_set1_ps(s);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), sv));
  scale_scalar(x + i, n - i, s);
}

void yk_optimizer_scale(float *x, size_t n, float s, yk_isa isa) {
  if (use_avx2(isa)) scale_avx2(x, n, s);
  else scale_scalar(x, n, s);
}

/* ---- Inf/NaN scan ------------------------------------------------------- */

/* A value is non-finite when its exponent bits are all ones. */
static int64_t nonfinite_scalar(const void *x, yk_dtype dt, size_t from, size_t n) {
  if (dt == YK_DT_F32) {
    const uint32_t *u = x;
    for (size_t i = from; i < n; i++)
      if ((u[i] & 0x7f800000u) == 0x7f800000u) return (int64_t)i;
  } else {
    const uint16_t *h = x;
    const uint16_t em = dt == YK_DT_F16 ? 0x7c00u : 0x7f80u;
    for (size_t i = from; i < n; i++)
      if ((h[i] & em) == em) return (int64_t)i;
  }
  return -1;
}

/* Test 32 fp32 (or 32 half) values per iteration with compare + movemask;
 * on a hit the scalar code finds the exact index from the block start. */
__attribute__((target("avx2"))) static int64_t nonfinite_avx2(const void *x, yk_dtype dt, size_t n) {
  size_t i = 0;
  if (dt == YK_DT_F32) {
    const __m256i em = _mm256_set1_epi32(0x7f800000);
    const float *f = x;
    for (; i + 32 <= n; i += 32) {
      __m256i hit = _mm256_setzero_si256();
      for (int j = 0; j < 4; j++) {
        __m256i u = _mm256_castps_si256(_mm256_loadu_ps(f + i + 8 * j));
        hit = _mm256_or_si256(hit, _mm256_cmpeq_epi32(_mm256_and_si256(u, em), em));
      }
      if (_mm256_movemask_epi8(hit)) return nonfinite_scalar(x, dt, i, i + 32);
    }
  } else {
    const __m256i em = _mm256_set1_epi16((short)(dt == YK_DT_F16 ? 0x7c00 : 0x7f80));
    const uint16_t *h = x;
    for (; i + 32 <= n; i += 32) {
      __m256i a = _mm256_loadu_si256((const __m256i *)(h + i));
      __m256i b = _mm256_loadu_si256((const __m256i *)(h + i + 16));
      __m256i hit = _mm256_or_si256(_mm256_cmpeq_epi16(_mm256_and_si256(a, em), em),
                                    _mm256_cmpeq_epi16(_mm256_and_si256(b, em), em));
      if (_mm256_movemask_epi8(hit)) return nonfinite_scalar(x, dt, i, i + 32);
    }
  }
  return nonfinite_scalar(x, dt, i, n);
}

int yk_optimizer_find_nonfinite(const void *x, yk_dtype dt, size_t n, yk_isa isa, int64_t *first) {
  if (dt != YK_DT_F32 && dt != YK_DT_F16 && dt != YK_DT_BF16) return YK_EINVAL;
  int64_t i = use_avx2(isa) ? nonfinite_avx2(x, dt, n) : nonfinite_scalar(x, dt, 0, n);
  if (first) *first = i;
  return i >= 0;
}

const yk_tensor_desc *yk_optimizer_tensor_at(const yk_tensor_desc *tensors, int n_tensors, size_t index) {
  for (int i = 0; tensors && i < n_tensors; i++)
    if (index >= tensors[i].offset && index - tensors[i].offset < tensors[i].numel) return &tensors[i];
  return NULL;
}
