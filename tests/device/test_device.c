/* test_device.c - every CPU device kernel: each ISA variant the CPU supports,
 * at 1 and 2 threads, against the portable single-thread variant on random
 * inputs; gemm and attention also against naive double-precision loops;
 * casts bit-exact against the scalar reference conversions.
 *
 * `test_device --isa NAME` tests one variant only (ctest: test_device runs
 * portable with the ISA-independent tests, test_device_avx2 the AVX2
 * kernels). A variant this CPU cannot run exits 77 with one line saying so,
 * which ctest shows as skipped: on a CPU without AVX2 the AVX2 kernels are
 * not tested, and that must not read as a pass.
 *
 * Tolerances: max|a-b| / max(max|b|, 1e-30) per output (relative to the
 * output's largest magnitude), 2e-6 unless stated; data movement and adds
 * that do the same float operations must match exactly (0). */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_pool.h" /* internal: the pool is tested directly too */
#include "yk_device.h"

typedef struct variant {
  yk_isa isa;
  int threads;
} variant;

static variant variants[8];
static int nvariants;
static yk_device *ref_dev; /* portable, 1 thread */

/* only: one ISA, or YK_ISA_AUTO for every one this CPU supports */
static void setup_variants(yk_isa only) {
  nvariants = 0;
  for (int isa = 0; isa < YK_ISA_COUNT_; isa++) {
    if (!yk_isa_supported((yk_isa)isa) || (only != YK_ISA_AUTO && isa != (int)only)) continue;
    for (int t = 1; t <= 2; t++) variants[nvariants++] = (variant){(yk_isa)isa, t};
  }
}

static yk_device *mk(variant v) {
  yk_device *d = NULL;
  yk_diag dg = {0};
  ck_assert_msg(yk_device_cpu_create(v.threads, v.isa, &d, &dg) == 0, "%s", dg.msg);
  return d;
}

static float *rnd(size_t n, uint64_t seed, float scale) {
  float *p = malloc(n * sizeof(float) + 64);
  yk_rng r;
  yk_rng_seed(&r, seed);
  for (size_t i = 0; i < n; i++) p[i] = scale * yk_rng_normal(&r);
  return p;
}

static float *dup(const float *a, size_t n) {
  float *p = malloc(n * sizeof(float) + 64);
  memcpy(p, a, n * sizeof(float));
  return p;
}

static double rel_err(const float *a, const float *b, size_t n) {
  double md = 0, mb = 1e-30;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - (double)b[i]);
    if (!(d <= md)) md = isnan(d) ? INFINITY : d;
    if (fabs(b[i]) > mb) mb = fabs(b[i]);
  }
  return md / mb;
}

/* elementwise: |a-b| <= tol * (1 + |b|) for every entry */
#define CHECK_ELEM(a, b, n, tol, what, v)                                                                              \
  do {                                                                                                                 \
    for (size_t i_ = 0; i_ < (n); i_++)                                                                                \
      if (!(fabs((double)(a)[i_] - (b)[i_]) <= (tol) * (1 + fabs((b)[i_]))))                                           \
        ck_abort_msg("%s (%s, %d threads) [%zu]: %.9g vs %.9g", (what), yk_isa_name((v).isa), (v).threads, i_,         \
                     (a)[i_], (b)[i_]);                                                                                \
  } while (0)

#define CHECK_CLOSE(a, b, n, tol, what, v)                                                                             \
  do {                                                                                                                 \
    double e_ = rel_err((a), (b), (n));                                                                                \
    ck_assert_msg(e_ <= (tol), "%s (%s, %d threads): rel err %.3e > %.1e", (what), yk_isa_name((v).isa), (v).threads, \
                  e_, (double)(tol));                                                                                  \
  } while (0)

/* ---- gemm ------------------------------------------------------------------ */

START_TEST(test_gemm_vs_naive) {
  /* both above the threading threshold; the first splits M/N, the second
   * (K >> M,N) splits K into partial products */
  static const int shapes[2][3] = {{67, 131, 301}, {37, 45, 2000}};
  int M = shapes[_i][0], N = shapes[_i][1], K = shapes[_i][2];
  for (int v = 0; v < nvariants; v++) {
    yk_device *dev = mk(variants[v]);
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
        float *A = rnd((size_t)(ta ? K : M) * lda, 1, 1), *B = rnd((size_t)(tb ? N : K) * ldb, 2, 1);
        float *C = rnd((size_t)M * ldc, 3, 1), *ref = dup(C, (size_t)M * ldc);
        for (int i = 0; i < M; i++)
          for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++)
              s += (double)(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                   (tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
            ref[(size_t)i * ldc + j] = (float)(0.5 * s + 0.25 * ref[(size_t)i * ldc + j]);
          }
        dev->ops->gemm(dev, ta, tb, M, N, K, 0.5f, A, lda, B, ldb, 0.25f, C, ldc);
        CHECK_CLOSE(C, ref, (size_t)M * ldc, 1e-5, ta ? (tb ? "gemm TT" : "gemm TN") : (tb ? "gemm NT" : "gemm NN"),
                    variants[v]);
        free(A), free(B), free(C), free(ref);
      }
    yk_device_destroy(dev);
  }
}
END_TEST

/* ---- elementwise and row kernels vs portable ---------------------------------- */

START_TEST(test_rows_vs_portable) {
  const int N = 301, C = 203; /* not multiples of 8; N*C above the threading threshold */
  size_t NC = (size_t)N * C;
  float *x = rnd(NC, 11, 1.5f), *w = rnd(C, 12, 1), *b = rnd(C, 13, 1), *dout = rnd(NC, 14, 1);
  for (int i = 0; i < 5; i++) x[i] += 30.0f * (float)i; /* a few large values */
  /* reference results (portable, 1 thread) */
  const yk_device_ops *r = ref_dev->ops;
  float *ln = rnd(NC, 0, 0), *mean = rnd(N, 0, 0), *rstd = rnd(N, 0, 0);
  r->layernorm_fwd(ref_dev, ln, mean, rstd, x, w, b, N, C);
  float *dx = rnd(NC, 15, 1), *dw = rnd(C, 16, 1), *db = rnd(C, 17, 1);
  float *dx0 = dup(dx, NC), *dw0 = dup(dw, C), *db0 = dup(db, C);
  float *scr = malloc(yk_device_layernorm_bwd_scratch(ref_dev, N, C) * 4 * 2 + 64);
  r->layernorm_bwd(ref_dev, dx, dw, db, dout, x, w, mean, rstd, N, C, scr);
  float *gl = rnd(NC, 0, 0), *gb = rnd(NC, 0, 0), *br = rnd(NC, 0, 0), *bs = dup(b, C), *ad = rnd(NC, 0, 0);
  r->gelu_fwd(ref_dev, gl, x, NC);
  r->gelu_bwd(ref_dev, gb, x, dout, NC);
  r->bias_rows(ref_dev, br, w, dout, N, C);
  r->bias_bwd(ref_dev, bs, dout, N, C);
  r->add(ref_dev, ad, x, dout, NC);
  for (int v = 0; v < nvariants; v++) {
    yk_device *dev = mk(variants[v]);
    const yk_device_ops *o = dev->ops;
    variant vv = variants[v];
    float *ln2 = rnd(NC, 0, 0), *m2 = rnd(N, 0, 0), *r2 = rnd(N, 0, 0);
    o->layernorm_fwd(dev, ln2, m2, r2, x, w, b, N, C);
    CHECK_CLOSE(ln2, ln, NC, 2e-6, "layernorm_fwd out", vv);
    CHECK_CLOSE(m2, mean, N, 2e-6, "layernorm_fwd mean", vv);
    CHECK_CLOSE(r2, rstd, N, 2e-6, "layernorm_fwd rstd", vv);
    float *dx2 = dup(dx0, NC), *dw2 = dup(dw0, C), *db2 = dup(db0, C);
    float *scr2 = malloc(yk_device_layernorm_bwd_scratch(dev, N, C) * 4 + 64);
    o->layernorm_bwd(dev, dx2, dw2, db2, dout, x, w, mean, rstd, N, C, scr2);
    CHECK_CLOSE(dx2, dx, NC, 2e-6, "layernorm_bwd dinp", vv);
    CHECK_CLOSE(dw2, dw, C, 2e-6, "layernorm_bwd dw", vv);
    CHECK_CLOSE(db2, db, C, 2e-6, "layernorm_bwd db", vv);
    float *t = rnd(NC, 0, 0);
    o->gelu_fwd(dev, t, x, NC);
    CHECK_ELEM(t, gl, NC, 1e-6, "gelu_fwd", vv);
    o->gelu_bwd(dev, t, x, dout, NC);
    CHECK_ELEM(t, gb, NC, 4e-6, "gelu_bwd", vv); /* cancellation in gelu' near x = -1.5 */
    /* in place (dinp aliases dout) */
    float *tin = dup(dout, NC);
    o->gelu_bwd(dev, tin, x, tin, NC);
    CHECK_CLOSE(tin, gb, NC, 2e-6, "gelu_bwd in place", vv);
    o->bias_rows(dev, t, w, dout, N, C);
    CHECK_CLOSE(t, br, NC, 0, "bias_rows", vv);
    float *bs2 = dup(b, C);
    o->bias_bwd(dev, bs2, dout, N, C);
    CHECK_CLOSE(bs2, bs, C, 2e-6, "bias_bwd", vv);
    o->add(dev, t, x, dout, NC);
    CHECK_CLOSE(t, ad, NC, 0, "add", vv);
    free(ln2), free(m2), free(r2), free(dx2), free(dw2), free(db2), free(scr2), free(t), free(tin), free(bs2);
    yk_device_destroy(dev);
  }
  /* gelu against the formula in double */
  for (size_t i = 0; i < NC; i++) {
    double xv = x[i], u = 0.7978845608028654 * (xv + 0.044715 * xv * xv * xv);
    if (!(fabs(gl[i] - 0.5 * xv * (1 + tanh(u))) <= 1e-6 * (1 + fabs(xv)))) ck_abort_msg("gelu(%g) = %g", xv, gl[i]);
  }
  /* layernorm rows have mean b and the weights' scale */
  free(x), free(w), free(b), free(dout), free(ln), free(mean), free(rstd), free(dx), free(dw), free(db);
  free(dx0), free(dw0), free(db0), free(scr), free(gl), free(gb), free(br), free(bs), free(ad);
}
END_TEST

START_TEST(test_encoder) {
  const int B = 3, T = 37, C = 400, V = 50;
  int N = B * T;
  int32_t tok[3 * 37];
  yk_rng r;
  yk_rng_seed(&r, 5);
  for (int i = 0; i < N; i++) tok[i] = (int32_t)(yk_rng_u64(&r) % 7); /* repeats: scatter-add collisions */
  float *wte = rnd((size_t)V * C, 21, 1), *wpe = rnd((size_t)T * C, 22, 1), *dout = rnd((size_t)N * C, 23, 1);
  float *out = rnd((size_t)N * C, 0, 0), *dwte = rnd((size_t)V * C, 24, 1), *dwpe = rnd((size_t)T * C, 25, 1);
  float *dwte0 = dup(dwte, (size_t)V * C), *dwpe0 = dup(dwpe, (size_t)T * C);
  ref_dev->ops->encoder_fwd(ref_dev, out, tok, wte, wpe, N, T, C);
  int bad = 0;
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++)
      bad += out[(size_t)n * C + c] != wte[(size_t)tok[n] * C + c] + wpe[(size_t)(n % T) * C + c];
  ck_assert_int_eq(bad, 0);
  ref_dev->ops->encoder_bwd(ref_dev, dwte, dwpe, dout, tok, N, T, C);
  for (int v = 0; v < nvariants; v++) {
    yk_device *dev = mk(variants[v]);
    float *o2 = rnd((size_t)N * C, 0, 0), *a = dup(dwte0, (size_t)V * C), *bb = dup(dwpe0, (size_t)T * C);
    dev->ops->encoder_fwd(dev, o2, tok, wte, wpe, N, T, C);
    CHECK_CLOSE(o2, out, (size_t)N * C, 0, "encoder_fwd", variants[v]);
    dev->ops->encoder_bwd(dev, a, bb, dout, tok, N, T, C);
    CHECK_CLOSE(a, dwte, (size_t)V * C, 0, "encoder_bwd dwte", variants[v]);
    CHECK_CLOSE(bb, dwpe, (size_t)T * C, 0, "encoder_bwd dwpe", variants[v]);
    free(o2), free(a), free(bb);
    yk_device_destroy(dev);
  }
  free(wte), free(wpe), free(dout), free(out), free(dwte), free(dwpe), free(dwte0), free(dwpe0);
}
END_TEST

/* ---- attention --------------------------------------------------------------- */

/* Naive double-precision causal attention forward + backward for one layer. */
static void attn_naive(const float *qkv, const float *dout, int B, int T, int C, int NH, double *out, double *att,
                       double *dqkv) {
  int hd = C / NH;
  double sc = 1.0 / sqrt((double)hd);
  memset(dqkv, 0, sizeof(double) * (size_t)B * T * 3 * C);
  double *datt = malloc(sizeof(double) * T), *dpre = malloc(sizeof(double) * T);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < NH; h++) {
      const float *base = qkv + (size_t)b * T * 3 * C + h * hd;
      double *A = att + ((size_t)(b * NH + h)) * T * T;
      for (int t = 0; t < T; t++) {
        double mx = -1e300;
        for (int s = 0; s <= t; s++) {
          double dot = 0;
          for (int i = 0; i < hd; i++) dot += (double)base[(size_t)t * 3 * C + i] * base[(size_t)s * 3 * C + C + i];
          A[(size_t)t * T + s] = dot * sc;
          if (dot * sc > mx) mx = dot * sc;
        }
        double z = 0;
        for (int s = 0; s <= t; s++) z += (A[(size_t)t * T + s] = exp(A[(size_t)t * T + s] - mx));
        for (int s = 0; s < T; s++) A[(size_t)t * T + s] = s <= t ? A[(size_t)t * T + s] / z : 0;
        for (int i = 0; i < hd; i++) {
          double y = 0;
          for (int s = 0; s <= t; s++) y += A[(size_t)t * T + s] * base[(size_t)s * 3 * C + 2 * C + i];
          out[((size_t)b * T + t) * C + h * hd + i] = y;
        }
        /* backward of this row */
        const float *g = dout + ((size_t)b * T + t) * C + h * hd;
        double dot = 0;
        for (int s = 0; s <= t; s++) {
          datt[s] = 0;
          for (int i = 0; i < hd; i++) datt[s] += (double)g[i] * base[(size_t)s * 3 * C + 2 * C + i];
          dot += datt[s] * A[(size_t)t * T + s];
        }
        for (int s = 0; s <= t; s++) dpre[s] = A[(size_t)t * T + s] * (datt[s] - dot) * sc;
        double *dq = dqkv + ((size_t)b * T + t) * 3 * C + h * hd;
        for (int s = 0; s <= t; s++) {
          double *dk = dqkv + ((size_t)b * T + s) * 3 * C + C + h * hd, *dv = dk + C;
          for (int i = 0; i < hd; i++) {
            dq[i] += dpre[s] * base[(size_t)s * 3 * C + C + i];
            dk[i] += dpre[s] * base[(size_t)t * 3 * C + i];
            dv[i] += A[(size_t)t * T + s] * g[i];
          }
        }
      }
    }
  free(datt), free(dpre);
}

static float *to_f(const double *a, size_t n) {
  float *p = malloc(n * 4 + 64);
  for (size_t i = 0; i < n; i++) p[i] = (float)a[i];
  return p;
}

START_TEST(test_attention_vs_naive) {
  /* T = 130: two full 64-row causal blocks and a partial one */
  const int B = 2, T = 130, C = 24, NH = 3;
  size_t n3 = (size_t)B * T * 3 * C, n1 = (size_t)B * T * C, na = (size_t)B * NH * T * T;
  float *qkv = rnd(n3, 31, 1), *dout = rnd(n1, 32, 1);
  double *out = malloc(n1 * 8), *att = malloc(na * 8), *dqkv = malloc(n3 * 8);
  attn_naive(qkv, dout, B, T, C, NH, out, att, dqkv);
  float *fo = to_f(out, n1), *fa = to_f(att, na), *fd = to_f(dqkv, n3);
  for (int v = 0; v < nvariants; v++) {
    yk_device *dev = mk(variants[v]);
    float *o = rnd(n1, 0, 0), *a = rnd(na, 99, 1), *d = rnd(n3, 0, 0);
    float *scr = malloc(yk_device_attention_bwd_scratch(dev, T) * 4 + 64);
    dev->ops->attention_fwd(dev, o, a, qkv, B, T, C, NH);
    CHECK_CLOSE(o, fo, n1, 1e-5, "attention_fwd out", variants[v]);
    CHECK_CLOSE(a, fa, na, 1e-5, "attention_fwd att", variants[v]);
    dev->ops->attention_bwd(dev, d, dout, qkv, a, B, T, C, NH, scr);
    CHECK_CLOSE(d, fd, n3, 1e-5, "attention_bwd dqkv", variants[v]);
    /* bitwise reproducible on a second run */
    float *d2 = rnd(n3, 0, 0);
    dev->ops->attention_bwd(dev, d2, dout, qkv, a, B, T, C, NH, scr);
    ck_assert(memcmp(d, d2, n3 * 4) == 0);
    free(o), free(a), free(d), free(d2), free(scr);
    yk_device_destroy(dev);
  }
  free(qkv), free(dout), free(out), free(att), free(dqkv), free(fo), free(fa), free(fd);
}
END_TEST

START_TEST(test_softmax_causal) {
  const int R = 5, T = 83;
  size_t n = (size_t)R * T * T;
  float *x = rnd(n, 41, 3), *d = rnd(n, 42, 1);
  float *ra = dup(x, n), *rd = dup(d, n);
  ref_dev->ops->softmax_causal(ref_dev, ra, R, T, 0.3f);
  ref_dev->ops->softmax_causal_bwd(ref_dev, rd, ra, R, T, 0.3f);
  for (int r = 0; r < R * T; r++) {
    double s = 0;
    int nz = 0;
    for (int j = 0; j < T; j++) {
      s += ra[(size_t)r * T + j];
      if (j > r % T) nz += ra[(size_t)r * T + j] != 0 || rd[(size_t)r * T + j] != 0;
    }
    if (nz || !(fabs(s - 1) < 1e-5)) ck_abort_msg("softmax row %d: sum %g, %d nonzeros above the diagonal", r, s, nz);
  }
  for (int v = 0; v < nvariants; v++) {
    yk_device *dev = mk(variants[v]);
    float *a = dup(x, n), *g = dup(d, n);
    dev->ops->softmax_causal(dev, a, R, T, 0.3f);
    CHECK_CLOSE(a, ra, n, 2e-6, "softmax_causal", variants[v]);
    dev->ops->softmax_causal_bwd(dev, g, ra, R, T, 0.3f);
    CHECK_CLOSE(g, rd, n, 2e-6, "softmax_causal_bwd", variants[v]);
    free(a), free(g);
    yk_device_destroy(dev);
  }
  free(x), free(d), free(ra), free(rd);
}
END_TEST

/* ---- cross-entropy -------------------------------------------------------------- */

START_TEST(test_crossent_padding_masked) {
  const int N = 19, V = 1001, Vp = 1024;
  float *lg = rnd((size_t)N * Vp, 51, 4);
  for (int n = 0; n < N; n++)
    for (int j = V; j < Vp; j++) lg[(size_t)n * Vp + j] = 1e30f; /* padding must not matter */
  int32_t tg[19];
  for (int n = 0; n < N; n++) tg[n] = (n * 97) % V;
  tg[0] = V - 1;
  /* double reference */
  double lref[19];
  float *gref = malloc((size_t)N * Vp * 4);
  for (int n = 0; n < N; n++) {
    const float *x = lg + (size_t)n * Vp;
    double mx = -1e300, z = 0;
    for (int j = 0; j < V; j++) mx = fmax(mx, x[j]);
    for (int j = 0; j < V; j++) z += exp(x[j] - mx);
    lref[n] = mx + log(z) - x[tg[n]];
    for (int j = 0; j < Vp; j++)
      gref[(size_t)n * Vp + j] = j < V ? (float)(0.25 * (exp(x[j] - mx) / z - (j == tg[n]))) : 0.0f;
  }
  for (int v = 0; v < nvariants; v++) {
    yk_device *dev = mk(variants[v]);
    float loss[19], lse[19], lr[19];
    for (int n = 0; n < N; n++) lr[n] = (float)lref[n];
    float *x = dup(lg, (size_t)N * Vp);
    dev->ops->crossent_fwd(dev, loss, lse, x, tg, N, V, Vp);
    CHECK_CLOSE(loss, lr, N, 2e-6, "crossent_fwd", variants[v]);
    dev->ops->crossent_bwd(dev, x, lse, tg, 0.25f, N, V, Vp);
    CHECK_CLOSE(x, gref, (size_t)N * Vp, 2e-6, "crossent_bwd", variants[v]);
    int nz = 0;
    for (int n = 0; n < N; n++)
      for (int j = V; j < Vp; j++) nz += x[(size_t)n * Vp + j] != 0.0f;
    ck_assert_int_eq(nz, 0);
    free(x);
    yk_device_destroy(dev);
  }
  free(lg), free(gref);
}
END_TEST

/* NaN anywhere in the inputs must reach the outputs in every variant (the
 * trainer stops on a NaN loss; a kernel that swallowed NaN would hide it). */
START_TEST(test_nan_propagates) {
  const int N = 3, V = 300, Vp = 384;
  for (int v = 0; v < nvariants; v++) {
    yk_device *dev = mk(variants[v]);
    float *lg = rnd((size_t)N * Vp, 71, 1);
    lg[17] = NAN;            /* row 0, inside the vector part */
    lg[Vp + V - 1] = NAN;    /* row 1, the scalar tail */
    int32_t tg[3] = {1, 2, 3};
    float loss[3], lse[3];
    dev->ops->crossent_fwd(dev, loss, lse, lg, tg, N, V, Vp);
    ck_assert_msg(isnan(loss[0]) && isnan(loss[1]) && !isnan(loss[2]), "crossent NaN (%s): %g %g %g",
                  yk_isa_name(variants[v].isa), loss[0], loss[1], loss[2]);
    float x[19], y[19];
    for (int i = 0; i < 19; i++) x[i] = 0.1f * (float)i;
    x[3] = NAN;
    x[18] = NAN;
    dev->ops->gelu_fwd(dev, y, x, 19);
    ck_assert(isnan(y[3]) && isnan(y[18]) && !isnan(y[4]));
    float a[4 * 4];
    for (int i = 0; i < 16; i++) a[i] = 0.5f;
    a[4] = NAN; /* row 1 (length 2) */
    dev->ops->softmax_causal(dev, a, 1, 4, 1.0f);
    ck_assert(isnan(a[5]) && !isnan(a[0]));
    free(lg);
    yk_device_destroy(dev);
  }
}
END_TEST

/* ---- casts ---------------------------------------------------------------------- */

START_TEST(test_casts_exact) {
  size_t n = 70000 + 5;
  float *f = malloc(n * 4);
  yk_rng r;
  yk_rng_seed(&r, 61);
  for (size_t i = 0; i < n; i++) {
    uint32_t u = (uint32_t)yk_rng_u64(&r);
    if (i % 3 == 0) u = (u & 0x8fffffffu) | 0x38000000u; /* near the fp16 range */
    memcpy(&f[i], &u, 4);
  }
  float sp[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 65504.0f, 65520.0f, 65519.99f, 6.1e-5f, 5.96e-8f, 2.98e-8f,
                1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048, 3.4e38f, 1e-40f};
  memcpy(f, sp, sizeof sp);
  uint16_t *h = malloc(n * 2), *hb = malloc(n * 2);
  uint16_t all[65536];
  for (int i = 0; i < 65536; i++) all[i] = (uint16_t)i;
  float *back = malloc(65536 * 4);
  for (int v = 0; v < nvariants; v++) {
    yk_device *dev = mk(variants[v]);
    dev->ops->f32_to_f16(dev, h, f, n);
    dev->ops->f32_to_bf16(dev, hb, f, n);
    /* (ck_assert only on a mismatch: Check's per-assertion bookkeeping is
     * slow in tight loops) */
    for (size_t i = 0; i < n; i++) {
      if (h[i] != yk_f32_to_f16(f[i]))
        ck_abort_msg("f16 of %a: %04x vs %04x (%s)", f[i], h[i], yk_f32_to_f16(f[i]), yk_isa_name(variants[v].isa));
      if (hb[i] != yk_f32_to_bf16(f[i]))
        ck_abort_msg("bf16 of %a: %04x vs %04x", f[i], hb[i], yk_f32_to_bf16(f[i]));
    }
    /* fused round: same bits, and x becomes their widening */
    for (int bf = 0; bf < 2; bf++) {
      float *x = malloc(n * 4);
      uint16_t *hr = malloc(n * 2);
      memcpy(x, f, n * 4);
      (bf ? dev->ops->round_bf16 : dev->ops->round_f16)(dev, hr, x, n);
      for (size_t i = 0; i < n; i++) {
        uint16_t e = bf ? yk_f32_to_bf16(f[i]) : yk_f32_to_f16(f[i]);
        float ew = bf ? yk_bf16_to_f32(e) : yk_f16_to_f32(e);
        if (hr[i] != e || memcmp(&ew, &x[i], 4) != 0)
          ck_abort_msg("round_%s of %a: %04x %a vs %04x %a (%s)", bf ? "bf16" : "f16", f[i], hr[i], x[i], e, ew,
                       yk_isa_name(variants[v].isa));
      }
      free(x), free(hr);
    }
    dev->ops->f16_to_f32(dev, back, all, 65536);
    for (int i = 0; i < 65536; i++) {
      float e = yk_f16_to_f32((uint16_t)i);
      if (memcmp(&e, &back[i], 4) != 0) ck_abort_msg("f16 %04x -> %a", i, back[i]);
    }
    dev->ops->bf16_to_f32(dev, back, all, 65536);
    for (int i = 0; i < 65536; i++) {
      float e = yk_bf16_to_f32((uint16_t)i);
      if (memcmp(&e, &back[i], 4) != 0) ck_abort_msg("bf16 %04x -> %a", i, back[i]);
    }
    yk_device_destroy(dev);
  }
  free(f), free(h), free(hb), free(back);
}
END_TEST

/* ---- creation, ISA selection ---------------------------------------------------- */

/* $YK_ISA is read once per process (yk_isa_resolve), so each value gets its
 * own test (Check forks one process per test). */
START_TEST(test_isa_env_portable) {
  yk_device *d = NULL;
  yk_diag dg = {0};
  setenv("YK_ISA", "portable", 1);
  ck_assert_int_eq(yk_device_cpu_create(1, YK_ISA_AUTO, &d, &dg), 0);
  ck_assert_int_eq(d->isa, YK_ISA_PORTABLE);
  yk_device_destroy(d);
}
END_TEST

START_TEST(test_isa_env_unknown) {
  yk_device *d = NULL;
  yk_diag dg = {0};
  setenv("YK_ISA", "avx9000", 1);
  ck_assert_int_eq(yk_device_cpu_create(1, YK_ISA_AUTO, &d, &dg), YK_ECONFIG);
  ck_assert(strstr(dg.msg, "avx9000") != NULL);
  ck_assert(d == NULL);
}
END_TEST

START_TEST(test_isa_env) {
  yk_device *d = NULL;
  yk_diag dg = {0};
  unsetenv("YK_ISA");
  ck_assert_int_eq(yk_device_cpu_create(0, YK_ISA_AUTO, &d, &dg), 0);
  ck_assert_int_eq(d->nthreads, yk_cpu_count());
  ck_assert_int_eq(d->isa, yk_isa_supported(YK_ISA_AVX2) ? YK_ISA_AVX2 : YK_ISA_PORTABLE);
  /* memory is aligned and zeroed; zero() clears exactly n floats */
  float *p = d->ops->alloc(d, 1000);
  ck_assert(((uintptr_t)p & 63) == 0 && p[0] == 0 && p[249] == 0);
  d->ops->free(d, p);
  size_t big = (3u << 20) + 7;
  p = d->ops->alloc(d, (big + 1) * 4);
  for (size_t i = 0; i <= big; i++) p[i] = 1.0f;
  d->ops->zero(d, p, big);
  size_t nz = 0;
  for (size_t i = 0; i < big; i++) nz += p[i] != 0.0f;
  ck_assert_uint_eq(nz, 0);
  ck_assert(p[big] == 1.0f);
  d->ops->free(d, p);
  ck_assert(yk_device_gemm_gflops(d, 64, 64, 64, 1) > 0);
  yk_device_destroy(d);
  yk_isa i;
  ck_assert_int_eq(yk_isa_parse("AVX2", &i), 0);
  ck_assert_int_eq(i, YK_ISA_AVX2);
  ck_assert_int_eq(yk_isa_parse("sse", &i), YK_EINVAL);
}
END_TEST


/* ---- thread pool ---------------------------------------------------------- */

/* The row and element kernels cut their work into chunks whose bounds do not
 * depend on the thread count, so 1 and 2 threads must give the same bits;
 * many back-to-back small jobs (the pool's claim/finish protocol under
 * churn, including jobs below and above the threading threshold) must all
 * complete with every chunk done once; devices (and their worker threads)
 * are created and destroyed repeatedly. */
START_TEST(test_pool_bitwise_and_churn) {
  const int N = 257, C = 300; /* N*C above the threading threshold, uneven chunks */
  size_t NC = (size_t)N * C;
  float *x = rnd(NC, 71, 1), *w = rnd(C, 72, 1), *b = rnd(C, 73, 1), *dout = rnd(NC, 74, 1);
  float *o[2], *dx[2], *dw[2], *db[2], *mean[2], *rstd[2], *g[2], *acc[2];
  for (int round = 0; round < 3; round++) {
    for (int t = 0; t < 2; t++) {
      yk_device *d = NULL;
      ck_assert_int_eq(yk_device_cpu_create(t + 1, YK_ISA_AUTO, &d, NULL), 0);
      float *scr = malloc(yk_device_layernorm_bwd_scratch(d, N, C) * 4);
      o[t] = rnd(NC, 0, 0), dx[t] = rnd(NC, 0, 0), g[t] = rnd(NC * 4, 0, 0);
      dw[t] = rnd(C, 0, 0), db[t] = rnd(C, 0, 0), mean[t] = rnd(N, 0, 0), rstd[t] = rnd(N, 0, 0);
      acc[t] = rnd(C, 0, 0);
      d->ops->layernorm_fwd(d, o[t], mean[t], rstd[t], x, w, b, N, C);
      d->ops->layernorm_bwd(d, dx[t], dw[t], db[t], dout, x, w, mean[t], rstd[t], N, C, scr);
      /* 2000 jobs back to back, sizes around the threading threshold:
       * accumulate so a lost or repeated chunk shows in the result */
      float *tmp = rnd(NC, 0, 0);
      for (int j = 0; j < 2000; j++) {
        size_t n = (size_t)(j % 7 + 1) * 8191;
        d->ops->gelu_fwd(d, tmp, x, YK_MIN(n, NC));
        d->ops->bias_bwd(d, acc[t], tmp, (int)(YK_MIN(n, NC) / C), C);
      }
      d->ops->gelu_fwd(d, g[t], dout, NC);
      free(tmp);
      free(scr);
      yk_device_destroy(d);
    }
    ck_assert_msg(memcmp(o[0], o[1], NC * 4) == 0, "layernorm_fwd differs between 1 and 2 threads");
    ck_assert_msg(memcmp(dx[0], dx[1], NC * 4) == 0, "layernorm_bwd dx differs between 1 and 2 threads");
    ck_assert_msg(memcmp(dw[0], dw[1], C * 4) == 0 && memcmp(db[0], db[1], C * 4) == 0,
                  "layernorm_bwd dw/db differ between 1 and 2 threads");
    ck_assert_msg(memcmp(acc[0], acc[1], C * 4) == 0, "2000 gelu+bias_bwd jobs differ between 1 and 2 threads");
    ck_assert_msg(memcmp(g[0], g[1], NC * 4) == 0, "gelu_fwd differs between 1 and 2 threads");
    /* and the accumulated sums are the real ones (not both empty) */
    double s = 0;
    for (int i = 0; i < C; i++) s += fabs(acc[0][i]);
    ck_assert(s > 0);
    for (int t = 0; t < 2; t++) free(o[t]), free(dx[t]), free(dw[t]), free(db[t]), free(mean[t]), free(rstd[t]),
                                free(g[t]), free(acc[t]);
  }
  free(x), free(w), free(b), free(dout);
}
END_TEST

/* The pool itself: every chunk runs exactly once, also for a job of more
 * chunks than its state word counts (2^20 - 1), and with a 1-thread pool. */
static void count_chunk(void *ctx, int ch, int tid) {
  int *hits = ctx;
  hits[ch]++;
  ck_assert(tid >= 0 && tid < 2);
}

START_TEST(test_pool_every_chunk_once) {
  const int n = (1 << 20) + 37;
  int *hits = calloc((size_t)n, sizeof(int));
  for (int threads = 1; threads <= 2; threads++) {
    cpu_pool *p = NULL;
    ck_assert_int_eq(cpu_pool_create(threads, &p), 0);
    memset(hits, 0, (size_t)n * sizeof(int));
    cpu_pool_run(p, n, threads, count_chunk, hits);
    /* then many small jobs back to back: job j runs chunks 0..j%5, so chunk
     * c runs in the 3000 - 600*c jobs with j%5 >= c */
    for (int j = 0; j < 3000; j++) cpu_pool_run(p, 1 + j % 5, threads, count_chunk, hits);
    size_t bad = 0;
    for (int i = 0; i < n; i++) bad += hits[i] != 1 + (i < 5 ? 3000 - 600 * i : 0);
    ck_assert_msg(bad == 0, "%zu chunks did not run the expected number of times (%d threads)", bad, threads);
    cpu_pool_destroy(p);
  }
  free(hits);
}
END_TEST

int main(int argc, char **argv) {
  yk_isa only = YK_ISA_AUTO;
  if (argc == 3 && !strcmp(argv[1], "--isa")) {
    if (yk_isa_parse(argv[2], &only) || only == YK_ISA_AUTO) {
      fprintf(stderr, "test_device: unknown ISA '%s' (portable or avx2)\n", argv[2]);
      return 2;
    }
  } else if (argc != 1) {
    fprintf(stderr, "usage: test_device [--isa portable|avx2]\n");
    return 2;
  }
  if (only != YK_ISA_AUTO && !yk_isa_supported(only)) {
    printf("SKIP: this CPU cannot run the %s kernels (AVX2, FMA and F16C needed), so they are not compared "
           "with the portable ones\n", yk_isa_name(only));
    return 77;
  }
  /* the tests that do not loop over the variants run with the portable set */
  int all_tests = only == YK_ISA_AUTO || only == YK_ISA_PORTABLE;
  setup_variants(only);
  yk_device_cpu_create(1, YK_ISA_PORTABLE, &ref_dev, NULL);
  fprintf(stderr, "device variants under test:");
  for (int v = 0; v < nvariants; v++) fprintf(stderr, " %s/%dt", yk_isa_name(variants[v].isa), variants[v].threads);
  fprintf(stderr, "\n");
  Suite *s = suite_create("device");
  TCase *tc = tcase_create("cpu");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, test_gemm_vs_naive, 0, 2);
  tcase_add_test(tc, test_rows_vs_portable);
  tcase_add_test(tc, test_encoder);
  tcase_add_test(tc, test_attention_vs_naive);
  tcase_add_test(tc, test_softmax_causal);
  tcase_add_test(tc, test_crossent_padding_masked);
  tcase_add_test(tc, test_nan_propagates);
  tcase_add_test(tc, test_casts_exact);
  if (all_tests) {
    tcase_add_test(tc, test_isa_env);
    tcase_add_test(tc, test_isa_env_portable);
    tcase_add_test(tc, test_isa_env_unknown);
    tcase_add_test(tc, test_pool_bitwise_and_churn);
    tcase_add_test(tc, test_pool_every_chunk_once);
  }
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  yk_device_destroy(ref_dev);
  return failed ? 1 : 0;
}
