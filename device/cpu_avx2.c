/* cpu_avx2.c - AVX2+FMA+F16C variants of the CPU row kernels.
 *
 * Every function carries __attribute__((target("avx2,fma,f16c"))) so this
 * file builds with the project's default flags; cpu.c only selects this table
 * after yk_isa_resolve says the CPU has all three. exp() is a
 * Cephes-style polynomial (about 1 ulp on the range used), so results differ
 * from the portable libm versions by a few ulps; the tests bound that. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "cpu_kern.h"
#include "yk_common.h"

#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

AVX2 static inline float hmax(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_max_ps(lo, hi);
  lo = _mm_max_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_max_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

/* e^x for x in about [-87, 88]; inputs are clamped to that range. NaN
 * passes through: min/max return their SECOND operand when either is NaN,
 * so x goes second (a NaN loss must stay NaN to be caught). */
AVX2 static inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(88.3762626647949f), x);
  x = _mm256_max_ps(_mm256_set1_ps(-87.3365478515625f), x);
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500E-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  /* n is in [-126, 128): build 2^n in two halves so n = 128 does not overflow
   * the exponent field. */
  __m256i ni = _mm256_cvtps_epi32(n);
  __m256i h = _mm256_srai_epi32(ni, 1);
  __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, _mm256_set1_epi32(127)), 23));
  __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), _mm256_set1_epi32(127)), 23));
  return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

AVX2 static inline float exp1(float x) {
  return _mm256_cvtss_f32(exp8(_mm256_set1_ps(x)));
}

AVX2 static void ln_fwd_row(float *out, float *mean, float *rstd, const float *x, const float *w, const float *b,
                            int C) {
  int i = 0;
  __m256 acc = _mm256_setzero_ps();
  for (; i + 8 <= C; i += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(x + i));
  float m = hsum(acc);
  for (; i < C; i++) m += x[i];
  m /= (float)C;
  __m256 vm = _mm256_set1_ps(m);
  acc = _mm256_setzero_ps();
  for (i = 0; i + 8 <= C; i += 8) {
    __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), vm);
    acc = _mm256_fmadd_ps(d, d, acc);
  }
  float v = hsum(acc);
  for (; i < C; i++) v += (x[i] - m) * (x[i] - m);
  v /= (float)C;
  float s = 1.0f / sqrtf(v + YK_LN_EPS);
  __m256 vs = _mm256_set1_ps(s);
  for (i = 0; i + 8 <= C; i += 8) {
    __m256 n = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vs);
    _mm256_storeu_ps(out + i, _mm256_fmadd_ps(n, _mm256_loadu_ps(w + i), _mm256_loadu_ps(b + i)));
  }
  for (; i < C; i++) out[i] = (x[i] - m) * s * w[i] + b[i];
  *mean = m;
  *rstd = s;
}

AVX2 static void ln_bwd_row(float *dx, float *dw, float *db, const float *dout, const float *x, const float *w,
                            float mean, float rstd, int C) {
  __m256 vm = _mm256_set1_ps(mean), vr = _mm256_set1_ps(rstd);
  __m256 a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= C; i += 8) {
    __m256 n = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vr);
    __m256 dn = _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(dout + i));
    a1 = _mm256_add_ps(a1, dn);
    a2 = _mm256_fmadd_ps(dn, n, a2);
  }
  float sd = hsum(a1), sdn = hsum(a2);
  for (int j = i; j < C; j++) {
    float n = (x[j] - mean) * rstd;
    float dn = w[j] * dout[j];
    sd += dn;
    sdn += dn * n;
  }
  sd /= (float)C;
  sdn /= (float)C;
  __m256 vsd = _mm256_set1_ps(sd), vsdn = _mm256_set1_ps(sdn);
  for (i = 0; i + 8 <= C; i += 8) {
    __m256 n = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vr);
    __m256 g = _mm256_loadu_ps(dout + i);
    __m256 dn = _mm256_mul_ps(_mm256_loadu_ps(w + i), g);
    __m256 t = _mm256_fnmadd_ps(n, vsdn, _mm256_sub_ps(dn, vsd));
    _mm256_storeu_ps(dx + i, _mm256_fmadd_ps(t, vr, _mm256_loadu_ps(dx + i)));
    _mm256_storeu_ps(dw + i, _mm256_fmadd_ps(g, n, _mm256_loadu_ps(dw + i)));
    _mm256_storeu_ps(db + i, _mm256_add_ps(g, _mm256_loadu_ps(db + i)));
  }
  for (; i < C; i++) {
    float n = (x[i] - mean) * rstd;
    float dn = w[i] * dout[i];
    dx[i] += (dn - sd - n * sdn) * rstd;
    dw[i] += dout[i] * n;
    db[i] += dout[i];
  }
}

AVX2 static void bias_row(float *out, const float *bias, const float *res, int n) {
  if (!res) {
    memcpy(out, bias, (size_t)n * sizeof(float));
    return;
  }
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(bias + i), _mm256_loadu_ps(res + i)));
  for (; i < n; i++) out[i] = bias[i] + res[i];
}

/* Column sums: 32 columns at a time keep four accumulators in registers
 * while walking down the rows (each row strip is read once). */
AVX2 static void colsum(float *acc, const float *x, int rows, size_t ld, int n) {
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256 a0 = _mm256_loadu_ps(acc + i), a1 = _mm256_loadu_ps(acc + i + 8);
    __m256 a2 = _mm256_loadu_ps(acc + i + 16), a3 = _mm256_loadu_ps(acc + i + 24);
    for (int r = 0; r < rows; r++) {
      const float *p = x + (size_t)r * ld + i;
      a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p));
      a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + 8));
      a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + 16));
      a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + 24));
    }
    _mm256_storeu_ps(acc + i, a0);
    _mm256_storeu_ps(acc + i + 8, a1);
    _mm256_storeu_ps(acc + i + 16, a2);
    _mm256_storeu_ps(acc + i + 24, a3);
  }
  for (; i + 8 <= n; i += 8) {
    __m256 a = _mm256_loadu_ps(acc + i);
    for (int r = 0; r < rows; r++) a = _mm256_add_ps(a, _mm256_loadu_ps(x + (size_t)r * ld + i));
    _mm256_storeu_ps(acc + i, a);
  }
  for (; i < n; i++) {
    float a = acc[i];
    for (int r = 0; r < rows; r++) a += x[(size_t)r * ld + i];
    acc[i] = a;
  }
}

AVX2 static void acc_row(float *out, const float *x, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(out + i), _mm256_loadu_ps(x + i)));
  for (; i < n; i++) out[i] += x[i];
}

/* gelu(x) = 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = k0 (x + k1 x^3).
 * The sigmoid form avoids the cancellation of 1 - 2/(1+e^2u). */
AVX2 static inline __m256 gelu_sig(__m256 x, __m256 *du) {
  __m256 x2 = _mm256_mul_ps(x, x);
  __m256 u = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(YK_GELU_K0), x),
                           _mm256_fmadd_ps(_mm256_set1_ps(YK_GELU_K1), x2, _mm256_set1_ps(1.0f)));
  if (du)
    *du = _mm256_mul_ps(_mm256_set1_ps(YK_GELU_K0),
                        _mm256_fmadd_ps(_mm256_set1_ps(3.0f * YK_GELU_K1), x2, _mm256_set1_ps(1.0f)));
  __m256 e = exp8(_mm256_mul_ps(_mm256_set1_ps(-2.0f), u));
  return _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

AVX2 static void gelu_fwd(float *out, const float *in, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 x = _mm256_loadu_ps(in + i);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(x, gelu_sig(x, NULL)));
  }
  if (i < n) {
    float tx[8] = {0}, to[8];
    memcpy(tx, in + i, (n - i) * sizeof(float));
    __m256 x = _mm256_loadu_ps(tx);
    _mm256_storeu_ps(to, _mm256_mul_ps(x, gelu_sig(x, NULL)));
    memcpy(out + i, to, (n - i) * sizeof(float));
  }
}

/* gelu'(x) = s + x s (1-s) 2 u', s = sigmoid(2u). */
AVX2 static inline __m256 gelu_grad(__m256 x) {
  __m256 du;
  __m256 s = gelu_sig(x, &du);
  __m256 one = _mm256_set1_ps(1.0f);
  __m256 t = _mm256_mul_ps(_mm256_mul_ps(x, s), _mm256_sub_ps(one, s));
  return _mm256_fmadd_ps(_mm256_mul_ps(t, _mm256_set1_ps(2.0f)), du, s);
}

AVX2 static void gelu_bwd(float *dinp, const float *inp, const float *dout, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dinp + i, _mm256_mul_ps(gelu_grad(_mm256_loadu_ps(inp + i)), _mm256_loadu_ps(dout + i)));
  if (i < n) {
    float tx[8] = {0}, td[8] = {0}, to[8];
    memcpy(tx, inp + i, (n - i) * sizeof(float));
    memcpy(td, dout + i, (n - i) * sizeof(float));
    _mm256_storeu_ps(to, _mm256_mul_ps(gelu_grad(_mm256_loadu_ps(tx)), _mm256_loadu_ps(td)));
    memcpy(dinp + i, to, (n - i) * sizeof(float));
  }
}

AVX2 static void add(float *out, const float *a, const float *b, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  for (; i < n; i++) out[i] = a[i] + b[i];
}

AVX2 static void softmax_row(float *x, int len, int T, float scale) {
  __m256 vs = _mm256_set1_ps(scale);
  __m256 vmx = _mm256_set1_ps(-INFINITY);
  int j = 0;
  for (; j + 8 <= len; j += 8) vmx = _mm256_max_ps(vmx, _mm256_mul_ps(vs, _mm256_loadu_ps(x + j)));
  float mx = hmax(vmx);
  for (int k = j; k < len; k++) mx = fmaxf(mx, scale * x[k]);
  vmx = _mm256_set1_ps(mx);
  __m256 acc = _mm256_setzero_ps();
  for (j = 0; j + 8 <= len; j += 8) {
    __m256 e = exp8(_mm256_fmsub_ps(vs, _mm256_loadu_ps(x + j), vmx));
    _mm256_storeu_ps(x + j, e);
    acc = _mm256_add_ps(acc, e);
  }
  float s = hsum(acc);
  for (; j < len; j++) {
    float e = exp1(scale * x[j] - mx);
    x[j] = e;
    s += e;
  }
  __m256 inv = _mm256_set1_ps(1.0f / s);
  for (j = 0; j + 8 <= len; j += 8) _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), inv));
  for (; j < len; j++) x[j] *= 1.0f / s;
  if (len < T) memset(x + len, 0, (size_t)(T - len) * sizeof(float));
}

AVX2 static void softmax_bwd_row(float *d, const float *a, int len, int T, float scale) {
  __m256 acc = _mm256_setzero_ps();
  int j = 0;
  for (; j + 8 <= len; j += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(d + j), acc);
  float s = hsum(acc);
  for (int k = j; k < len; k++) s += a[k] * d[k];
  __m256 vs = _mm256_set1_ps(s), vsc = _mm256_set1_ps(scale);
  for (j = 0; j + 8 <= len; j += 8) {
    __m256 t = _mm256_mul_ps(_mm256_mul_ps(vsc, _mm256_loadu_ps(a + j)), _mm256_sub_ps(_mm256_loadu_ps(d + j), vs));
    _mm256_storeu_ps(d + j, t);
  }
  for (; j < len; j++) d[j] = scale * a[j] * (d[j] - s);
  if (len < T) memset(d + len, 0, (size_t)(T - len) * sizeof(float));
}

AVX2 static float lse_row(const float *x, int V) {
  __m256 vmx = _mm256_set1_ps(-INFINITY);
  int j = 0;
  for (; j + 8 <= V; j += 8) vmx = _mm256_max_ps(vmx, _mm256_loadu_ps(x + j));
  float mx = hmax(vmx);
  for (int k = j; k < V; k++) mx = fmaxf(mx, x[k]);
  vmx = _mm256_set1_ps(mx);
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (j = 0; j + 16 <= V; j += 16) {
    a0 = _mm256_add_ps(a0, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), vmx)));
    a1 = _mm256_add_ps(a1, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j + 8), vmx)));
  }
  for (; j + 8 <= V; j += 8) a0 = _mm256_add_ps(a0, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), vmx)));
  float s = hsum(_mm256_add_ps(a0, a1));
  for (; j < V; j++) s += exp1(x[j] - mx);
  return mx + logf(s);
}

AVX2 static void ce_bwd_row(float *x, float lse, int target, float dloss, int V, int Vp) {
  __m256 vl = _mm256_set1_ps(lse), vd = _mm256_set1_ps(dloss);
  int j = 0;
  for (; j + 8 <= V; j += 8)
    _mm256_storeu_ps(x + j, _mm256_mul_ps(vd, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), vl))));
  for (; j < V; j++) x[j] = dloss * exp1(x[j] - lse);
  if (target >= 0 && target < V) x[target] -= dloss; /* a vocabulary shard may not hold it */
  if (V < Vp) memset(x + V, 0, (size_t)(Vp - V) * sizeof(float));
}

const cpu_kern yk_cpu_kern_avx2 = {
    .ln_fwd_row = ln_fwd_row,
    .ln_bwd_row = ln_bwd_row,
    .bias_row = bias_row,
    .colsum = colsum,
    .acc = acc_row,
    .gelu_fwd = gelu_fwd,
    .gelu_bwd = gelu_bwd,
    .add = add,
    .softmax_row = softmax_row,
    .softmax_bwd_row = softmax_bwd_row,
    .lse_row = lse_row,
    .ce_bwd_row = ce_bwd_row,
};
