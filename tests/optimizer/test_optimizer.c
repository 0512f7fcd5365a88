/* Unit tests of the optimizer module: AdamW against PyTorch (committed
 * fixture from make_reference.py), AVX2 vs scalar (bitwise), sharded slices,
 * LR schedules, clipping, 16-bit casts, the Inf/NaN scan and the loss-scaler
 * state machine.
 *
 * `test_optimizer --isa avx2` runs only the AVX2 AdamW tests (against torch,
 * and bitwise against scalar); on a CPU without AVX2+F16C the AVX2 path
 * falls back to scalar, so that run exits 77 with one line (ctest: skipped)
 * instead of comparing scalar with scalar. Without arguments: the rest. */
#include "yk_optimizer.h"

#include <check.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- fixture ------------------------------------------------------------- */

#define REF_MAX_STEPS 8
typedef struct {
  double lr, min_lr, beta1, beta2, eps, wd, clip;
  int warmup, steps, ntensors;
  size_t n;
  yk_tensor_desc t[8];
  float *init, *grad[REF_MAX_STEPS], *param[REF_MAX_STEPS], *m, *v;
  double step_lr[REF_MAX_STEPS], step_norm[REF_MAX_STEPS];
} ref_t;

static float *parse_floats(char *s, size_t n) {
  float *a = calloc(n, sizeof(float));
  char *end;
  for (size_t i = 0; i < n; i++) {
    a[i] = strtof(s, &end);
    ck_assert_msg(end != s, "fixture: expected %zu numbers, got %zu", n, i);
    s = end;
  }
  return a;
}

static void ref_load(ref_t *r) {
  const char *dir = getenv("YK_TEST_DATA");
  ck_assert_msg(dir != NULL, "YK_TEST_DATA not set (run through ctest)");
  char path[1024];
  snprintf(path, sizeof path, "%s/adamw_ref.txt", dir);
  char *buf;
  size_t len;
  yk_diag d = {0};
  ck_assert_msg(yk_file_read(path, &buf, &len, &d) == 0, "%s", d.msg);
  memset(r, 0, sizeof *r);
  int cur = -1;
  for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
    char *sp = strchr(line, ' ');
    if (line[0] == '#' || !sp) continue;
    *sp = 0;
    char *rest = sp + 1;
    if (!strcmp(line, "hparams")) {
      ck_assert_int_eq(sscanf(rest, "%lf %lf %d %d %lf %lf %lf %lf %lf", &r->lr, &r->min_lr, &r->warmup, &r->steps,
                              &r->beta1, &r->beta2, &r->eps, &r->wd, &r->clip), 9);
      ck_assert_int_le(r->steps, REF_MAX_STEPS);
    } else if (!strcmp(line, "tensor")) {
      yk_tensor_desc *t = &r->t[r->ntensors++];
      ck_assert_int_eq(sscanf(rest, "%47s %zu %zu %d", t->name, &t->offset, &t->numel, &t->decay), 4);
    } else if (!strcmp(line, "arena")) {
      r->n = strtoull(rest, NULL, 10);
    } else if (!strcmp(line, "init")) {
      r->init = parse_floats(rest, r->n);
    } else if (!strcmp(line, "step")) {
      ck_assert_int_eq(sscanf(rest, "%d", &cur), 1);
      ck_assert_int_eq(sscanf(rest, "%*d %lf %lf", &r->step_lr[cur], &r->step_norm[cur]), 2);
    } else if (!strcmp(line, "grad")) {
      r->grad[cur] = parse_floats(rest, r->n);
    } else if (!strcmp(line, "param")) {
      r->param[cur] = parse_floats(rest, r->n);
    } else if (!strcmp(line, "exp_avg")) {
      r->m = parse_floats(rest, r->n);
    } else if (!strcmp(line, "exp_avg_sq")) {
      r->v = parse_floats(rest, r->n);
    }
  }
  free(buf);
  ck_assert(r->init && r->m && r->v && r->steps > 0);
}

static void ref_free(ref_t *r) {
  free(r->init);
  free(r->m);
  free(r->v);
  for (int i = 0; i < REF_MAX_STEPS; i++) {
    free(r->grad[i]);
    free(r->param[i]);
  }
}

/* Per-tensor relative error: max |a - b| / max |b| over the tensor. */
static double tensor_relerr(const float *a, const float *b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    num = fmax(num, fabs((double)a[i] - b[i]));
    den = fmax(den, fabs((double)b[i]));
  }
  return den > 0 ? num / den : num;
}

/* Tolerance against PyTorch 1.13, per tensor, after each of the 5 steps.
 * Differences come only from fp32 rounding (torch uses FMA in some vector
 * kernels and computes the clip norm in fp32); measured 2.7e-8. */
#define TORCH_TOL 1e-6

static void run_reference(yk_isa isa) {
  ref_t r;
  ref_load(&r);
  yk_adamw h = {.beta1 = r.beta1, .beta2 = r.beta2, .eps = r.eps, .weight_decay = r.wd, .isa = isa};
  yk_lr_schedule s = {.kind = YK_LR_COSINE, .lr = r.lr, .min_lr = r.min_lr, .warmup_steps = r.warmup,
                      .total_steps = r.steps};
  float *p = malloc(r.n * 4), *m = calloc(r.n, 4), *v = calloc(r.n, 4);
  memcpy(p, r.init, r.n * 4);
  double worst = 0;
  for (int step = 0; step < r.steps; step++) {
    double lr = yk_optimizer_lr_at(&s, step);
    ck_assert_msg(fabs(lr - r.step_lr[step]) <= 1e-12 * r.step_lr[step], "lr step %d: %.17g vs torch %.17g", step,
                  lr, r.step_lr[step]);
    double norm = yk_optimizer_global_norm(r.grad[step], r.n, isa);
    ck_assert_msg(fabs(norm - r.step_norm[step]) <= 1e-6 * r.step_norm[step], "norm step %d: %.9g vs %.9g", step,
                  norm, r.step_norm[step]);
    float coef = yk_optimizer_clip_coef(norm, r.clip);
    ck_assert_int_eq(yk_optimizer_adamw_step(&h, step + 1, lr, coef, r.t, r.ntensors, 0, r.n, p, r.grad[step], m, v,
                                             NULL, YK_DT_F32),
                     0);
    for (int t = 0; t < r.ntensors; t++) {
      double e = tensor_relerr(p + r.t[t].offset, r.param[step] + r.t[t].offset, r.t[t].numel);
      worst = fmax(worst, e);
      ck_assert_msg(e <= TORCH_TOL, "%s: step %d tensor %s rel err %.3g > %.1g", yk_isa_name(isa), step,
                    r.t[t].name, e, TORCH_TOL);
    }
  }
  for (int t = 0; t < r.ntensors; t++) {
    ck_assert(tensor_relerr(m + r.t[t].offset, r.m + r.t[t].offset, r.t[t].numel) <= TORCH_TOL);
    ck_assert(tensor_relerr(v + r.t[t].offset, r.v + r.t[t].offset, r.t[t].numel) <= TORCH_TOL);
  }
  fprintf(stderr, "adamw vs torch (%s): worst per-tensor rel err %.3g (tolerance %.0e)\n", yk_isa_name(isa),
          worst, TORCH_TOL);
  /* The decay mask matters: without it (every element decays) the result
   * must differ from torch, or the test above could not catch a wrong mask. */
  memcpy(p, r.init, r.n * 4);
  memset(m, 0, r.n * 4);
  memset(v, 0, r.n * 4);
  for (int step = 0; step < r.steps; step++)
    yk_optimizer_adamw_step(&h, step + 1, yk_optimizer_lr_at(&s, step),
                            yk_optimizer_clip_coef(yk_optimizer_global_norm(r.grad[step], r.n, isa), r.clip), NULL, 0,
                            0, r.n, p, r.grad[step], m, v, NULL, YK_DT_F32);
  ck_assert(tensor_relerr(p + r.t[1].offset, r.param[r.steps - 1] + r.t[1].offset, r.t[1].numel) > 1e-5);
  free(p);
  free(m);
  free(v);
  ref_free(&r);
}

START_TEST(test_adamw_matches_torch_scalar) { run_reference(YK_ISA_PORTABLE); }
END_TEST
START_TEST(test_adamw_matches_torch_avx2) { run_reference(YK_ISA_AVX2); }
END_TEST

/* ---- AVX2 vs scalar, slices ---------------------------------------------- */

static float *randv(yk_rng *g, size_t n, float sc) {
  float *a = yk_alloc(n * 4);
  for (size_t i = 0; i < n; i++) a[i] = yk_rng_normal(g) * sc;
  return a;
}

/* A table with odd sizes and padding gaps, like an aligned model arena. */
static int odd_table(yk_tensor_desc *t, size_t *arena) {
  const size_t sizes[] = {1003, 17, 17, 4099, 9, 2050, 3};
  size_t off = 5; /* a gap before the first tensor too */
  int n = 0;
  for (size_t i = 0; i < YK_ARRAY_LEN(sizes); i++) {
    snprintf(t[n].name, sizeof t[n].name, "t%zu", i);
    t[n].offset = off;
    t[n].numel = sizes[i];
    t[n].decay = sizes[i] > 100;
    off += sizes[i] + (i % 2 ? 7 : 0);
    n++;
  }
  *arena = off + 11;
  return n;
}

START_TEST(test_adamw_avx2_equals_scalar_bitwise) {
  /* (main skips this run on a CPU without AVX2+F16C) */
  ck_assert(yk_isa_supported(YK_ISA_AVX2));
  yk_tensor_desc t[8];
  size_t n;
  int nt = odd_table(t, &n);
  yk_rng g;
  yk_rng_seed(&g, 7);
  float *p0 = randv(&g, n, 1.0f);
  float *p[2], *m[2], *v[2];
  uint16_t *h16[2], *hb[2];
  for (int k = 0; k < 2; k++) {
    p[k] = yk_alloc(n * 4);
    memcpy(p[k], p0, n * 4);
    m[k] = yk_alloc(n * 4);
    v[k] = yk_alloc(n * 4);
    h16[k] = yk_alloc(n * 2);
    hb[k] = yk_alloc(n * 2);
  }
  for (int step = 1; step <= 4; step++) {
    float *gr = randv(&g, n, 0.1f * (float)step);
    for (int k = 0; k < 2; k++) {
      yk_adamw h = {.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1,
                    .isa = k ? YK_ISA_AVX2 : YK_ISA_PORTABLE};
      ck_assert_int_eq(yk_optimizer_adamw_step(&h, step, 3e-3, 0.37f, t, nt, 0, n, p[k], gr, m[k], v[k], h16[k],
                                               YK_DT_F16), 0);
      ck_assert_int_eq(yk_cast_from_f32(hb[k], YK_DT_BF16, p[k], n, h.isa), 0);
    }
    yk_free(gr);
  }
  ck_assert_mem_eq(p[0], p[1], n * 4);
  ck_assert_mem_eq(m[0], m[1], n * 4);
  ck_assert_mem_eq(v[0], v[1], n * 4);
  ck_assert_mem_eq(h16[0], h16[1], n * 2);
  ck_assert_mem_eq(hb[0], hb[1], n * 2);
  /* the 16-bit copy is the rounded master copy */
  for (size_t i = 0; i < n; i++) ck_assert_uint_eq(h16[0][i], yk_f32_to_f16(p[0][i]));
  /* params moved, decay applied only where the table says */
  ck_assert(memcmp(p[0], p0, n * 4) != 0);
  for (int k = 0; k < 2; k++) {
    yk_free(p[k]);
    yk_free(m[k]);
    yk_free(v[k]);
    yk_free(h16[k]);
    yk_free(hb[k]);
  }
  yk_free(p0);
}
END_TEST

/* ZeRO-style: three ranks each own a slice and keep m, v only for it; the
 * result must equal the whole-arena step bitwise, and padding behaves as a
 * no-decay tensor. */
START_TEST(test_adamw_sliced_equals_whole) {
  yk_tensor_desc t[8];
  size_t n;
  int nt = odd_table(t, &n);
  yk_rng g;
  yk_rng_seed(&g, 11);
  float *pw = randv(&g, n, 1.0f), *ps = yk_alloc(n * 4);
  memcpy(ps, pw, n * 4);
  float *mw = yk_alloc(n * 4), *vw = yk_alloc(n * 4);
  uint16_t *bw = yk_alloc(n * 2), *bs = yk_alloc(n * 2);
  const int world = 3;
  float *ms[3], *vs[3];
  size_t so[3], sl[3];
  for (int r = 0; r < world; r++) {
    so[r] = (n * (size_t)r) / world;
    sl[r] = (n * (size_t)(r + 1)) / world - so[r];
    ms[r] = yk_alloc(sl[r] * 4);
    vs[r] = yk_alloc(sl[r] * 4);
  }
  yk_adamw h = {.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.5, .isa = YK_ISA_AUTO};
  for (int step = 1; step <= 3; step++) {
    float *gr = randv(&g, n, 0.05f);
    ck_assert_int_eq(yk_optimizer_adamw_step(&h, step, 1e-2, 1.0f, t, nt, 0, n, pw, gr, mw, vw, bw, YK_DT_BF16), 0);
    for (int r = 0; r < world; r++)
      ck_assert_int_eq(yk_optimizer_adamw_step(&h, step, 1e-2, 1.0f, t, nt, so[r], sl[r], ps + so[r], gr + so[r], ms[r],
                                               vs[r], bs + so[r], YK_DT_BF16), 0);
    yk_free(gr);
  }
  ck_assert_mem_eq(pw, ps, n * 4);
  ck_assert_mem_eq(bw, bs, n * 2);
  for (int r = 0; r < world; r++) {
    ck_assert_mem_eq(mw + so[r], ms[r], sl[r] * 4);
    yk_free(ms[r]);
    yk_free(vs[r]);
  }
  /* padding = a no-decay tensor: describe the gaps explicitly, same result */
  yk_tensor_desc full[32];
  int nf = 0;
  size_t cur = 0;
  for (int i = 0; i < nt; i++) {
    if (t[i].offset > cur) full[nf++] = (yk_tensor_desc){.offset = cur, .numel = t[i].offset - cur, .decay = 0};
    full[nf++] = t[i];
    cur = t[i].offset + t[i].numel;
  }
  full[nf++] = (yk_tensor_desc){.offset = cur, .numel = n - cur, .decay = 0};
  float *p2 = yk_alloc(n * 4), *p3 = yk_alloc(n * 4), *gr = randv(&g, n, 0.05f);
  memcpy(p2, pw, n * 4);
  memcpy(p3, pw, n * 4);
  memset(mw, 0, n * 4);
  memset(vw, 0, n * 4);
  yk_optimizer_adamw_step(&h, 1, 1e-2, 1.0f, t, nt, 0, n, p2, gr, mw, vw, NULL, YK_DT_F32);
  memset(mw, 0, n * 4);
  memset(vw, 0, n * 4);
  yk_optimizer_adamw_step(&h, 1, 1e-2, 1.0f, full, nf, 0, n, p3, gr, mw, vw, NULL, YK_DT_F32);
  ck_assert_mem_eq(p2, p3, n * 4);
  /* bad inputs */
  yk_tensor_desc bad[2] = {{.offset = 10, .numel = 5}, {.offset = 12, .numel = 5}};
  ck_assert_int_eq(yk_optimizer_adamw_step(&h, 1, 1e-2, 1.0f, bad, 2, 0, n, p2, gr, mw, vw, NULL, YK_DT_F32),
                   YK_EINVAL);
  ck_assert_int_eq(yk_optimizer_adamw_step(&h, 0, 1e-2, 1.0f, t, nt, 0, n, p2, gr, mw, vw, NULL, YK_DT_F32),
                   YK_EINVAL);
  ck_assert_int_eq(yk_optimizer_adamw_step(&h, 1, 1e-2, 1.0f, t, nt, 0, n, p2, gr, mw, vw, bw, YK_DT_I32),
                   YK_EINVAL);
  yk_free(p2);
  yk_free(p3);
  yk_free(gr);
  yk_free(pw);
  yk_free(ps);
  yk_free(mw);
  yk_free(vw);
  yk_free(bw);
  yk_free(bs);
}
END_TEST

/* ---- schedule ------------------------------------------------------------ */

START_TEST(test_lr_schedule) {
  yk_lr_schedule s = {.kind = YK_LR_COSINE, .lr = 6e-4, .min_lr = 6e-5, .warmup_steps = 10, .total_steps = 110};
  ck_assert_double_eq_tol(yk_optimizer_lr_at(&s, 0), 6e-5, 1e-18);  /* lr * 1/10 */
  ck_assert_double_eq_tol(yk_optimizer_lr_at(&s, 4), 3e-4, 1e-18);  /* lr * 5/10 */
  ck_assert_double_eq_tol(yk_optimizer_lr_at(&s, 9), 6e-4, 1e-18);  /* end of warmup */
  ck_assert_double_eq_tol(yk_optimizer_lr_at(&s, 10), 6e-4, 1e-18); /* cosine starts at the peak */
  ck_assert_double_eq_tol(yk_optimizer_lr_at(&s, 60), 3.3e-4, 1e-15); /* half way: (lr + min_lr) / 2 */
  ck_assert_double_eq_tol(yk_optimizer_lr_at(&s, 110), 6e-5, 1e-18);
  ck_assert_double_eq_tol(yk_optimizer_lr_at(&s, 1000), 6e-5, 1e-18);
  /* 3/4 of the way: min + 0.5 (1 + cos(3pi/4)) (lr - min) */
  ck_assert_double_eq_tol(yk_optimizer_lr_at(&s, 85), 6e-5 + 0.5 * (1 - sqrt(0.5)) * 5.4e-4, 1e-15);
  for (int i = 10; i < 110; i++) ck_assert(yk_optimizer_lr_at(&s, i + 1) < yk_optimizer_lr_at(&s, i));
  s.kind = YK_LR_CONSTANT;
  ck_assert_double_eq_tol(yk_optimizer_lr_at(&s, 0), 6e-5, 1e-18); /* warmup applies to constant too */
  ck_assert_double_eq(yk_optimizer_lr_at(&s, 10), 6e-4);
  ck_assert_double_eq(yk_optimizer_lr_at(&s, 5000), 6e-4);
  s.warmup_steps = 0;
  s.kind = YK_LR_COSINE;
  ck_assert_double_eq(yk_optimizer_lr_at(&s, 0), 6e-4);
  /* from the config */
  yk_config c;
  yk_config_defaults(&c);
  yk_diag d = {0};
  ck_assert_int_eq(yk_config_set(&c, "optim.schedule=cosine", &d), 0);
  ck_assert_int_eq(yk_config_set(&c, "optim.warmup_steps=5", &d), 0);
  ck_assert_int_eq(yk_config_set(&c, "train.steps=50", &d), 0);
  ck_assert_int_eq(yk_optimizer_lr_from_config(&s, &c, &d), 0);
  ck_assert_int_eq(s.kind, YK_LR_COSINE);
  ck_assert_int_eq(s.warmup_steps, 5);
  ck_assert_int_eq(s.total_steps, 50);
  ck_assert_double_eq(s.lr, c.optim.lr);
  strcpy(c.optim.schedule, "linear");
  ck_assert_int_eq(yk_optimizer_lr_from_config(&s, &c, &d), YK_ECONFIG);
  ck_assert_ptr_nonnull(strstr(d.msg, "optim.schedule is 'linear'"));
}
END_TEST

/* ---- clipping ------------------------------------------------------------ */

START_TEST(test_clip_norm) {
  float a[3] = {3, 4, 0};
  ck_assert_double_eq(yk_optimizer_global_norm(a, 3, YK_ISA_PORTABLE), 5.0);
  ck_assert_double_eq(yk_optimizer_global_norm(a, 3, YK_ISA_AVX2), 5.0);
  ck_assert_double_eq(yk_optimizer_sumsq(a, 0, YK_ISA_AUTO), 0.0);
  ck_assert_float_eq(yk_optimizer_clip_coef(5.0, 0.0), 1.0f);       /* off */
  ck_assert_float_eq(yk_optimizer_clip_coef(0.5, 1.0), 1.0f);       /* below: no clip */
  ck_assert_float_eq_tol(yk_optimizer_clip_coef(5.0, 1.0), 0.2f, 1e-7f);
  ck_assert(isnan(yk_optimizer_clip_coef(NAN, 1.0)));
  ck_assert(isnan(yk_optimizer_clip_coef(INFINITY, 1.0)));
  ck_assert_float_eq(yk_optimizer_clip_coef(INFINITY, 0.0), 1.0f); /* off means off */
  /* big random array: both variants give the same bits, and the sum of
   * sums of slices (sharded arena) is close to the whole */
  yk_rng g;
  yk_rng_seed(&g, 3);
  size_t n = 1000003;
  float *x = randv(&g, n, 2.0f);
  double s0 = yk_optimizer_sumsq(x, n, YK_ISA_PORTABLE), s1 = yk_optimizer_sumsq(x, n, YK_ISA_AVX2);
  ck_assert_mem_eq(&s0, &s1, sizeof s0);
  ck_assert_double_eq(s0, yk_optimizer_sumsq(x, n, YK_ISA_PORTABLE)); /* deterministic */
  long double ref = 0;
  for (size_t i = 0; i < n; i++) ref += (long double)x[i] * x[i];
  ck_assert(fabsl(s0 - ref) / ref < 1e-12);
  double parts = yk_optimizer_sumsq(x, 333337, YK_ISA_AUTO) + yk_optimizer_sumsq(x + 333337, n - 333337, YK_ISA_AUTO);
  ck_assert(fabs(parts - s0) / s0 < 1e-12);
  /* scaling */
  float *y = yk_alloc(n * 4);
  memcpy(y, x, n * 4);
  yk_optimizer_scale(x, n, 0.25f, YK_ISA_PORTABLE);
  yk_optimizer_scale(y, n, 0.25f, YK_ISA_AVX2);
  ck_assert_mem_eq(x, y, n * 4);
  ck_assert_double_eq_tol(yk_optimizer_sumsq(x, n, YK_ISA_AUTO), s0 / 16, s0 * 1e-12);
  yk_free(x);
  yk_free(y);
}
END_TEST

/* ---- overflow scan ----------------------------------------------------------- */

START_TEST(test_find_nonfinite) {
  size_t n = 5000;
  float *f = yk_alloc(n * 4);
  uint16_t *h = yk_alloc(n * 2), *bf = yk_alloc(n * 2);
  for (size_t i = 0; i < n; i++) {
    f[i] = (float)i * 0.01f - 7.0f;
    h[i] = yk_f32_to_f16(f[i]);
    bf[i] = yk_f32_to_bf16(f[i]);
  }
  int64_t at;
  for (int isa = YK_ISA_PORTABLE; isa <= YK_ISA_AVX2; isa++) {
    ck_assert_int_eq(yk_optimizer_find_nonfinite(f, YK_DT_F32, n, (yk_isa)isa, &at), 0);
    ck_assert_int_eq(at, -1);
    ck_assert_int_eq(yk_optimizer_find_nonfinite(h, YK_DT_F16, n, (yk_isa)isa, &at), 0);
    ck_assert_int_eq(yk_optimizer_find_nonfinite(bf, YK_DT_BF16, n, (yk_isa)isa, &at), 0);
    const size_t spots[] = {0, 7, 31, 32, 33, 1234, 4999};
    for (size_t k = 0; k < YK_ARRAY_LEN(spots); k++) {
      size_t i = spots[k];
      float keep = f[i];
      uint16_t kh = h[i], kb = bf[i];
      f[i] = k % 2 ? NAN : -INFINITY;
      h[i] = yk_f32_to_f16(k % 2 ? NAN : INFINITY);
      bf[i] = yk_f32_to_bf16(k % 2 ? -NAN : INFINITY);
      if (i + 3 < n) f[i + 3] = NAN; /* a later one must not be reported first */
      ck_assert_int_eq(yk_optimizer_find_nonfinite(f, YK_DT_F32, n, (yk_isa)isa, &at), 1);
      ck_assert_int_eq(at, (int64_t)i);
      ck_assert_int_eq(yk_optimizer_find_nonfinite(h, YK_DT_F16, n, (yk_isa)isa, &at), 1);
      ck_assert_int_eq(at, (int64_t)i);
      ck_assert_int_eq(yk_optimizer_find_nonfinite(bf, YK_DT_BF16, n, (yk_isa)isa, &at), 1);
      ck_assert_int_eq(at, (int64_t)i);
      f[i] = keep;
      h[i] = kh;
      bf[i] = kb;
      if (i + 3 < n) f[i + 3] = 0;
    }
  }
  /* fp16 overflow of a large finite fp32 gradient */
  h[100] = yk_f32_to_f16(70000.0f);
  ck_assert_int_eq(yk_optimizer_find_nonfinite(h, YK_DT_F16, n, YK_ISA_AUTO, &at), 1);
  ck_assert_int_eq(at, 100);
  ck_assert_int_eq(yk_optimizer_find_nonfinite(h, YK_DT_I32, n, YK_ISA_AUTO, &at), YK_EINVAL);
  /* index -> tensor name */
  yk_tensor_desc t[8];
  size_t arena;
  int nt = odd_table(t, &arena);
  ck_assert_ptr_null(yk_optimizer_tensor_at(t, nt, 0)); /* leading gap */
  ck_assert_str_eq(yk_optimizer_tensor_at(t, nt, 5)->name, "t0");
  ck_assert_str_eq(yk_optimizer_tensor_at(t, nt, t[3].offset + t[3].numel - 1)->name, "t3");
  yk_free(f);
  yk_free(h);
  yk_free(bf);
}
END_TEST

/* ---- loss scaler -------------------------------------------------------------- */

static yk_loss_scaler make_ls(double init, double min, int64_t interval, int64_t hyst) {
  yk_loss_scaler_cfg cfg = {.init = init, .min = min, .growth_factor = 2, .backoff = 0.5,
                            .growth_interval = interval, .hysteresis = hyst, .stop_on_min = 1};
  yk_loss_scaler ls;
  ck_assert_int_eq(yk_optimizer_loss_scaler_init_cfg(&ls, &cfg, NULL), 0);
  return ls;
}

START_TEST(test_loss_scaler_growth) {
  yk_loss_scaler ls = make_ls(1024, 1, 3, 1);
  for (int i = 0; i < 2; i++) ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 0), YK_LS_APPLY);
  ck_assert_double_eq(ls.st.scale, 1024);
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 0), YK_LS_APPLY); /* 3rd clean step grows */
  ck_assert_double_eq(ls.st.scale, 2048);
  ck_assert_int_eq(ls.st.clean_steps, 0);
  /* an overflow resets the clean-step count */
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 0), YK_LS_APPLY);
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 0), YK_LS_APPLY);
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 1), YK_LS_SKIP);
  ck_assert_double_eq(ls.st.scale, 1024);
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 0), YK_LS_APPLY);
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 0), YK_LS_APPLY);
  ck_assert_double_eq(ls.st.scale, 1024);
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 0), YK_LS_APPLY);
  ck_assert_double_eq(ls.st.scale, 2048);
  ck_assert_int_eq(ls.st.growths, 2);
  ck_assert_int_eq(ls.st.backoffs, 1);
  ck_assert_int_eq(ls.st.overflows, 1);
  /* growth stops short of fp32 overflow */
  yk_loss_scaler big = make_ls(3e38, 1, 1, 1);
  yk_optimizer_loss_scaler_update(&big, 0);
  ck_assert_double_eq(big.st.scale, 3e38);
}
END_TEST

START_TEST(test_loss_scaler_hysteresis) {
  yk_loss_scaler ls = make_ls(1024, 1, 1000, 3);
  /* two overflows are tolerated, the third consecutive one backs off */
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 1), YK_LS_SKIP);
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 1), YK_LS_SKIP);
  ck_assert_double_eq(ls.st.scale, 1024);
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 1), YK_LS_SKIP);
  ck_assert_double_eq(ls.st.scale, 512);
  /* hysteresis exhausted: every further consecutive overflow backs off */
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 1), YK_LS_SKIP);
  ck_assert_double_eq(ls.st.scale, 256);
  /* a clean step restores the full hysteresis */
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 0), YK_LS_APPLY);
  ck_assert_int_eq(ls.st.hysteresis_left, 3);
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 1), YK_LS_SKIP);
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 1), YK_LS_SKIP);
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 0), YK_LS_APPLY);
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 1), YK_LS_SKIP);
  ck_assert_double_eq(ls.st.scale, 256); /* not consecutive: no backoff */
  ck_assert_int_eq(ls.st.overflows, 7);
  ck_assert_int_eq(ls.st.backoffs, 2);
}
END_TEST

START_TEST(test_loss_scaler_floor) {
  yk_loss_scaler ls = make_ls(8, 3, 1000, 1);
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 1), YK_LS_SKIP);
  ck_assert_double_eq(ls.st.scale, 4);
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 1), YK_LS_SKIP);
  ck_assert_double_eq(ls.st.scale, 3); /* clamped to the floor */
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 1), YK_EOVERFLOW);
  ck_assert_double_eq(ls.st.scale, 3);
  ck_assert_int_eq(ls.cfg.stop_on_min, 1);
  /* "continue": the caller keeps going at the floor; clean steps apply again */
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 1), YK_EOVERFLOW);
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&ls, 0), YK_LS_APPLY);
  ck_assert_double_eq(ls.st.scale, 3);
  /* with hysteresis, the floor is reported only when a backoff is due */
  yk_loss_scaler h = make_ls(2, 2, 1000, 2);
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&h, 1), YK_LS_SKIP);
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&h, 1), YK_EOVERFLOW);
  /* state round-trips through a byte copy (what a checkpoint does) */
  unsigned char buf[sizeof(yk_loss_scaler_state)];
  memcpy(buf, &ls.st, sizeof buf);
  yk_loss_scaler back = make_ls(8, 3, 1000, 1);
  memcpy(&back.st, buf, sizeof buf);
  ck_assert_int_eq(yk_optimizer_loss_scaler_update(&back, 1), yk_optimizer_loss_scaler_update(&ls, 1));
  ck_assert_mem_eq(&back.st, &ls.st, sizeof ls.st);
}
END_TEST

START_TEST(test_loss_scaler_config) {
  yk_config c;
  yk_config_defaults(&c);
  yk_loss_scaler ls;
  yk_diag d = {0};
  ck_assert_int_eq(yk_optimizer_loss_scaler_init(&ls, &c, &d), 0);
  ck_assert_double_eq(ls.st.scale, c.loss_scale.init);
  ck_assert_int_eq(ls.st.hysteresis_left, c.loss_scale.hysteresis);
  ck_assert_int_eq(ls.cfg.stop_on_min, !strcmp(c.loss_scale.on_min, "stop"));
  ck_assert_int_eq(yk_config_set(&c, "loss_scale.on_min=continue", &d), 0);
  ck_assert_int_eq(yk_optimizer_loss_scaler_init(&ls, &c, &d), 0);
  ck_assert_int_eq(ls.cfg.stop_on_min, 0);
  c.loss_scale.min = 2 * c.loss_scale.init;
  ck_assert_int_eq(yk_optimizer_loss_scaler_init(&ls, &c, &d), YK_ECONFIG);
  ck_assert_ptr_nonnull(strstr(d.msg, "loss_scale.min"));
  yk_config_defaults(&c);
  c.loss_scale.hysteresis = 0;
  ck_assert_int_eq(yk_optimizer_loss_scaler_init(&ls, &c, &d), YK_ECONFIG);
  ck_assert_ptr_nonnull(strstr(d.msg, "loss_scale.hysteresis=0"));
  yk_config_defaults(&c);
  strcpy(c.loss_scale.on_min, "panic");
  ck_assert_int_eq(yk_optimizer_loss_scaler_init(&ls, &c, &d), YK_ECONFIG);
  ck_assert_ptr_nonnull(strstr(d.msg, "'panic'"));
}
END_TEST

int main(int argc, char **argv) {
  int avx2 = argc == 3 && !strcmp(argv[1], "--isa") && !strcmp(argv[2], "avx2");
  if (argc != 1 && !avx2) {
    fprintf(stderr, "usage: test_optimizer [--isa avx2]\n");
    return 2;
  }
  if (avx2 && !yk_isa_supported(YK_ISA_AVX2)) {
    printf("SKIP: this CPU has no AVX2+F16C, so the AVX2 AdamW kernels cannot run (they would fall back to scalar)\n");
    return 77;
  }
  Suite *s = suite_create("optimizer");
  TCase *tc = tcase_create("core");
  if (avx2) {
    tcase_add_test(tc, test_adamw_matches_torch_avx2);
    tcase_add_test(tc, test_adamw_avx2_equals_scalar_bitwise);
  } else {
    tcase_add_test(tc, test_adamw_matches_torch_scalar);
    tcase_add_test(tc, test_adamw_sliced_equals_whole);
    tcase_add_test(tc, test_lr_schedule);
    tcase_add_test(tc, test_clip_norm);
    tcase_add_test(tc, test_find_nonfinite);
    tcase_add_test(tc, test_loss_scaler_growth);
    tcase_add_test(tc, test_loss_scaler_hysteresis);
    tcase_add_test(tc, test_loss_scaler_floor);
    tcase_add_test(tc, test_loss_scaler_config);
  }
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
