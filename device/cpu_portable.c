/* cpu_portable.c - scalar reference variants of the CPU row kernels.
 * Plain C with libm; the AVX2 variants are tested against these. */
#include <math.h>
#include <string.h>

#include "cpu_kern.h"
#include "yk_common.h"

static void ln_fwd_row(float *out, float *mean, float *rstd, const float *x, const float *w, const float *b, int C) {
  float m = 0.0f;
  for (int i = 0; i < C; i++) m += x[i];
  m /= (float)C;
  float v = 0.0f;
  for (int i = 0; i < C; i++) {
    float d = x[i] - m;
    v += d * d;
  }
  v /= (float)C;
  float s = 1.0f / sqrtf(v + YK_LN_EPS);
  for (int i = 0; i < C; i++) out[i] = (x[i] - m) * s * w[i] + b[i];
  *mean = m;
  *rstd = s;
}

static void ln_bwd_row(float *dx, float *dw, float *db, const float *dout, const float *x, const float *w, float mean,
                       float rstd, int C) {
  float sd = 0.0f, sdn = 0.0f;
  for (int i = 0; i < C; i++) {
    float n = (x[i] - mean) * rstd;
    float dn = w[i] * dout[i];
    sd += dn;
    sdn += dn * n;
  }
  sd /= (float)C;
  sdn /= (float)C;
  for (int i = 0; i < C; i++) {
    float n = (x[i] - mean) * rstd;
    float dn = w[i] * dout[i];
    dx[i] += (dn - sd - n * sdn) * rstd;
    dw[i] += dout[i] * n;
    db[i] += dout[i];
  }
}

static void bias_row(float *out, const float *bias, const float *res, int n) {
  if (res)
    for (int i = 0; i < n; i++) out[i] = bias[i] + res[i];
  else
    memcpy(out, bias, (size_t)n * sizeof(float));
}

static void colsum(float *acc, const float *x, int rows, size_t ld, int n) {
  for (int r = 0; r < rows; r++)
    for (int i = 0; i < n; i++) acc[i] += x[(size_t)r * ld + i];
}

static void acc_row(float *out, const float *x, int n) {
  for (int i = 0; i < n; i++) out[i] += x[i];
}

static void gelu_fwd(float *out, const float *in, size_t n) {
  for (size_t i = 0; i < n; i++) {
    float x = in[i];
    float u = YK_GELU_K0 * (x + YK_GELU_K1 * x * x * x);
    out[i] = 0.5f * x * (1.0f + tanhf(u));
  }
}

static void gelu_bwd(float *dinp, const float *inp, const float *dout, size_t n) {
  for (size_t i = 0; i < n; i++) {
    float x = inp[i];
    float u = YK_GELU_K0 * (x + YK_GELU_K1 * x * x * x);
    float t = tanhf(u);
    float du = YK_GELU_K0 * (1.0f + 3.0f * YK_GELU_K1 * x * x);
    float g = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
    dinp[i] = g * dout[i];
  }
}

static void add(float *out, const float *a, const float *b, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

static void softmax_row(float *x, int len, int T, float scale) {
  float mx = -INFINITY;
  for (int j = 0; j < len; j++) mx = fmaxf(mx, scale * x[j]);
  float s = 0.0f;
  for (int j = 0; j < len; j++) {
    float e = expf(scale * x[j] - mx);
    x[j] = e;
    s += e;
  }
  float inv = 1.0f / s;
  for (int j = 0; j < len; j++) x[j] *= inv;
  for (int j = len; j < T; j++) x[j] = 0.0f;
}

static void softmax_bwd_row(float *d, const float *a, int len, int T, float scale) {
  float s = 0.0f;
  for (int j = 0; j < len; j++) s += a[j] * d[j];
  for (int j = 0; j < len; j++) d[j] = scale * a[j] * (d[j] - s);
  for (int j = len; j < T; j++) d[j] = 0.0f;
}

static float lse_row(const float *x, int V) {
  float mx = -INFINITY;
  for (int j = 0; j < V; j++) mx = fmaxf(mx, x[j]);
  float s = 0.0f;
  for (int j = 0; j < V; j++) s += expf(x[j] - mx);
  return mx + logf(s);
}

static void ce_bwd_row(float *x, float lse, int target, float dloss, int V, int Vp) {
  for (int j = 0; j < V; j++) x[j] = dloss * expf(x[j] - lse);
  if (target >= 0 && target < V) x[target] -= dloss; /* a vocabulary shard may not hold it */
  for (int j = V; j < Vp; j++) x[j] = 0.0f;
}

const cpu_kern yk_cpu_kern_portable = {
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
