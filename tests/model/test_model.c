/* test_model.c - GPT-2 model tests: PyTorch reference (loss, every gradient,
 * 3 AdamW steps), finite-difference gradient check of every tensor, weights
 * file I/O and its errors, determinism, gradient hook, accumulation.
 *
 * Error measure for tensors: max|a-b| / max|b| over the tensor (relative to
 * the tensor's largest reference entry, so near-zero entries do not blow up
 * the ratio). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "yk_model.h"
#include "yk_optimizer.h"

static char fixture_dir[1024];

static void fixture(char *out, size_t n, const char *name) { snprintf(out, n, "%s/fixtures/%s", fixture_dir, name); }

static double tensor_rel_err(const float *a, const float *b, size_t n) {
  double md = 0, mb = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (d > md || isnan(d)) md = isnan(d) ? INFINITY : d;
    if (fabs(b[i]) > mb) mb = fabs(b[i]);
  }
  return mb > 0 ? md / mb : md;
}

typedef struct ref_batch {
  int B, T, steps;
  int32_t *in, *tgt;
  float loss, step_loss[8];
} ref_batch;

static void read_batch(ref_batch *rb) {
  char p[1200];
  fixture(p, sizeof p, "ref_batch.bin");
  FILE *f = fopen(p, "rb");
  ck_assert_msg(f != NULL, "cannot open %s", p);
  int32_t h[4];
  ck_assert_int_eq(fread(h, 4, 4, f), 4);
  ck_assert_int_eq(h[0], 20241124);
  rb->B = h[1];
  rb->T = h[2];
  rb->steps = h[3];
  ck_assert_int_le(rb->steps, 8);
  size_t n = (size_t)rb->B * rb->T;
  rb->in = malloc(n * 4);
  rb->tgt = malloc(n * 4);
  ck_assert_uint_eq(fread(rb->in, 4, n, f), n);
  ck_assert_uint_eq(fread(rb->tgt, 4, n, f), n);
  ck_assert_int_eq(fread(&rb->loss, 4, 1, f), 1);
  ck_assert_int_eq(fread(rb->step_loss, 4, (size_t)rb->steps, f), rb->steps);
  fclose(f);
}

static yk_device *make_dev(int threads, yk_isa isa) {
  yk_device *dev = NULL;
  yk_diag d = {0};
  int rc = yk_device_cpu_create(threads, isa, &dev, &d);
  ck_assert_msg(rc == 0, "device: %s", d.msg);
  return dev;
}

static yk_model *load_model(const char *file, int B, int T, const yk_device *dev) {
  char p[1200];
  fixture(p, sizeof p, file);
  yk_model_config cfg;
  yk_diag d = {0};
  ck_assert_msg(yk_model_weights_read_config(p, &cfg, &d) == 0, "%s", d.msg);
  yk_model *m = NULL;
  ck_assert_msg(yk_model_create(&cfg, B, T, dev, &m, &d) == 0, "%s", d.msg);
  ck_assert_msg(yk_model_weights_load(m, p, &d) == 0, "%s", d.msg);
  return m;
}

/* The 3-step fixture is checked with the real optimizer (optimizer/): model
 * gradients + yk_optimizer_adamw_step must reproduce torch.optim.AdamW
 * (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0.1 on the decay
 * tensors only). */
static void real_adamw(yk_model *m, float *mo, float *vo, int t, float lr, float wd) {
  const yk_tensor_desc *td;
  int nt = yk_model_tensors(m, &td);
  yk_adamw h = {.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = wd, .isa = YK_ISA_AUTO};
  ck_assert_int_eq(yk_optimizer_adamw_step(&h, t, lr, 1.0f, td, nt, 0, yk_model_num_params(m), yk_model_params(m),
                                           yk_model_grads(m), mo, vo, NULL, YK_DT_F32), 0);
}

static void check_reference(int threads, yk_isa isa) {
  ref_batch rb;
  read_batch(&rb);
  yk_device *dev = make_dev(threads, isa);
  yk_model *m = load_model("ref_weights.bin", rb.B, rb.T, dev);
  yk_model *gref = load_model("ref_grads.bin", rb.B, rb.T, dev);
  yk_model *aref = load_model("ref_adamw3.bin", rb.B, rb.T, dev);
  yk_diag d = {0};
  float loss;
  ck_assert_msg(yk_model_forward(m, rb.in, rb.tgt, &loss, &d) == 0, "%s", d.msg);
  double lerr = fabs(loss - rb.loss) / fabs(rb.loss);
  ck_assert_msg(lerr <= 1e-5, "loss %.7f vs reference %.7f: rel err %.2e > 1e-5 (%s, %d threads)", loss, rb.loss, lerr,
                yk_isa_name(dev->isa), threads);
  yk_model_zero_grad(m);
  ck_assert_int_eq(yk_model_backward(m, &d), 0);
  const yk_tensor_desc *td;
  int nt = yk_model_tensors(m, &td);
  double worst = 0;
  for (int k = 0; k < nt; k++) {
    double e = tensor_rel_err(yk_model_grads(m) + td[k].offset, yk_model_params(gref) + td[k].offset, td[k].numel);
    ck_assert_msg(e <= 1e-4, "grad %s: max rel err %.2e > 1e-4 (%s, %d threads)", td[k].name, e,
                  yk_isa_name(dev->isa), threads);
    if (e > worst) worst = e;
  }
  /* padded wte rows never get gradient */
  const yk_model_config *c = yk_model_get_config(m);
  size_t nz = 0;
  for (size_t i = (size_t)c->vocab_size * c->channels; i < (size_t)c->padded_vocab_size * c->channels; i++)
    nz += yk_model_grads(m)[i] != 0.0f;
  ck_assert_uint_eq(nz, 0);
  fprintf(stderr, "reference (%s, %d threads): loss %.7f vs %.7f (rel %.1e), worst grad rel err %.1e\n",
          yk_isa_name(dev->isa), threads, loss, rb.loss, lerr, worst);

  /* 3 AdamW steps with the real optimizer */
  size_t np = yk_model_num_params(m);
  float *mo = calloc(np, 4), *vo = calloc(np, 4);
  for (int s = 1; s <= rb.steps; s++) {
    ck_assert_int_eq(yk_model_forward(m, rb.in, rb.tgt, &loss, &d), 0);
    ck_assert_msg(fabs(loss - rb.step_loss[s - 1]) <= 1e-5 * fabs(rb.step_loss[s - 1]), "step %d loss %.7f vs %.7f", s,
                  loss, rb.step_loss[s - 1]);
    yk_model_zero_grad(m);
    ck_assert_int_eq(yk_model_backward(m, &d), 0);
    real_adamw(m, mo, vo, s, 1e-3f, 0.1f);
  }
  for (int k = 0; k < nt; k++) {
    double e = tensor_rel_err(yk_model_params(m) + td[k].offset, yk_model_params(aref) + td[k].offset, td[k].numel);
    ck_assert_msg(e <= 1e-4, "params after AdamW %s: max rel err %.2e > 1e-4", td[k].name, e);
  }
  free(mo);
  free(vo);
  yk_model_destroy(m);
  yk_model_destroy(gref);
  yk_model_destroy(aref);
  yk_device_destroy(dev);
  free(rb.in);
  free(rb.tgt);
}

START_TEST(test_reference_portable_1t) { check_reference(1, YK_ISA_PORTABLE); }
END_TEST
START_TEST(test_reference_best_1t) { check_reference(1, YK_ISA_AUTO); }
END_TEST
START_TEST(test_reference_best_2t) { check_reference(2, YK_ISA_AUTO); }
END_TEST

/* ---- finite differences ------------------------------------------------ */

static void randomize(yk_model *m, uint64_t seed) {
  /* like the fixture script: LN weights and biases random too */
  yk_rng r;
  yk_rng_seed(&r, seed);
  const yk_tensor_desc *td;
  int nt = yk_model_tensors(m, &td);
  const yk_model_config *c = yk_model_get_config(m);
  float *p = yk_model_params(m);
  for (int k = 0; k < nt; k++) {
    int is_lnw = strstr(td[k].name, "ln") && td[k].name[strlen(td[k].name) - 1] == 'w';
    for (size_t i = 0; i < td[k].numel; i++)
      p[td[k].offset + i] = (is_lnw ? 1.0f : 0.0f) + (td[k].decay ? 0.1f : 0.05f) * yk_rng_normal(&r);
  }
  for (size_t i = (size_t)c->vocab_size * c->channels; i < (size_t)c->padded_vocab_size * c->channels; i++) p[i] = 0;
}

static double loss_at(yk_model *m, const int32_t *in, const int32_t *tgt) {
  float l;
  ck_assert_int_eq(yk_model_forward(m, in, tgt, &l, NULL), 0);
  /* the per-position losses summed in double: less rounding than the mean */
  const float *ls = yk_model_losses(m);
  double s = 0;
  int n = yk_model_batch(m) * yk_model_seq_len(m);
  for (int i = 0; i < n; i++) s += ls[i];
  return s / n;
}

START_TEST(test_gradcheck_every_tensor) {
  /* L2 C16 NH2, V=40 padded to 128, B=2 T=5 */
  yk_model_config cfg = {.layers = 2, .channels = 16, .heads = 2, .max_seq_len = 8, .vocab_size = 40};
  yk_device *dev = make_dev(1, YK_ISA_AUTO);
  yk_model *m;
  ck_assert_int_eq(yk_model_create(&cfg, 2, 5, dev, &m, NULL), 0);
  randomize(m, 7);
  int32_t in[10], tgt[10];
  yk_rng r;
  yk_rng_seed(&r, 3);
  for (int i = 0; i < 10; i++) {
    in[i] = (int32_t)(yk_rng_u64(&r) % 40);
    tgt[i] = (int32_t)(yk_rng_u64(&r) % 40);
  }
  float loss;
  ck_assert_int_eq(yk_model_forward(m, in, tgt, &loss, NULL), 0);
  yk_model_zero_grad(m);
  ck_assert_int_eq(yk_model_backward(m, NULL), 0);
  size_t np = yk_model_num_params(m);
  float *g = malloc(np * 4);
  memcpy(g, yk_model_grads(m), np * 4);
  float *p = yk_model_params(m);
  const yk_tensor_desc *td;
  int nt = yk_model_tensors(m, &td);
  /* steps: 3e-3 along the whole-tensor direction, 1e-2 for single entries
   * (chosen between fp32 rounding noise and truncation error; Richardson
   * extrapolation below removes the O(h^2) term) */
  const float hdir = 3e-3f, h = 1e-2f;
  double worst_dir = 0, worst_el = 0;
  for (int k = 0; k < nt; k++) {
    /* (1) directional derivative along a direction u over the whole tensor
     * (a sum over all its entries: big signal, small rounding noise);
     * (2) single entries: the largest-gradient one and 3 random ones. */
    size_t off = td[k].offset, n = td[k].numel;
    if (!strcmp(td[k].name, "wte")) n = (size_t)cfg.vocab_size * cfg.channels; /* padding rows checked below */
    float *u = malloc(n * 4), *save = malloc(n * 4);
    memcpy(save, p + off, n * 4);
    double gu = 0, gmax = 0;
    for (size_t i = 0; i < n; i++) {
      /* signs of the gradient (no cancellation in the sum, so the signal
       * stands well above fp32 rounding of the loss), random magnitudes */
      u[i] = (g[off + i] >= 0 ? 1.0f : -1.0f) * (0.5f + yk_rng_uniform(&r));
      gu += (double)g[off + i] * u[i];
      if (fabs(g[off + i]) > gmax) gmax = fabs(g[off + i]);
    }
    /* Richardson-extrapolated central difference: error O(h^4) */
    double fd[2];
    for (int s = 0; s < 2; s++) {
      float hs = s ? hdir / 2 : hdir;
      for (size_t i = 0; i < n; i++) p[off + i] = save[i] + hs * u[i];
      double lp = loss_at(m, in, tgt);
      for (size_t i = 0; i < n; i++) p[off + i] = save[i] - hs * u[i];
      double lm = loss_at(m, in, tgt);
      fd[s] = (lp - lm) / (2.0 * hs);
    }
    memcpy(p + off, save, n * 4);
    double est = (4 * fd[1] - fd[0]) / 3;
    double scale = fabs(gu) + 1e-6;
    double e = fabs(est - gu) / scale;
    if (e > worst_dir) worst_dir = e;
    ck_assert_msg(e < 1e-3, "%s: directional derivative %.7g, finite difference %.7g (err %.2e)", td[k].name, gu, est,
                  e);
    size_t picks[4];
    picks[0] = 0;
    for (size_t i = 1; i < n; i++)
      if (fabs(g[off + i]) > fabs(g[off + picks[0]])) picks[0] = i;
    for (int j = 1; j < 4; j++) picks[j] = yk_rng_u64(&r) % n;
    for (int j = 0; j < 4; j++) {
      size_t i = off + picks[j];
      float keep = p[i];
      double f2[2];
      for (int s = 0; s < 2; s++) {
        float hs = s ? h / 2 : h;
        p[i] = keep + hs;
        double lp = loss_at(m, in, tgt);
        p[i] = keep - hs;
        double lm = loss_at(m, in, tgt);
        f2[s] = (lp - lm) / (2.0 * hs);
      }
      p[i] = keep;
      double est1 = (4 * f2[1] - f2[0]) / 3;
      double e1 = fabs(est1 - g[i]) / (gmax + 1e-6);
      if (e1 > worst_el) worst_el = e1;
      ck_assert_msg(e1 < 5e-3, "%s[%zu]: grad %.7g, finite difference %.7g (err %.2e of the tensor max %.3g)",
                    td[k].name, picks[j], g[i], est1, e1, gmax);
    }
    free(u);
    free(save);
  }
  size_t nz = 0;
  for (size_t i = (size_t)cfg.vocab_size * cfg.channels; i < (size_t)cfg.padded_vocab_size * cfg.channels; i++)
    nz += g[i] != 0.0f;
  ck_assert_uint_eq(nz, 0);
  fprintf(stderr, "gradcheck: %d tensors, worst directional err %.2e, worst entry err %.2e\n", nt, worst_dir, worst_el);
  free(g);
  yk_model_destroy(m);
  yk_device_destroy(dev);
}
END_TEST

/* ---- determinism, hook, accumulation ------------------------------------ */

static yk_model *small_model(yk_device *dev, int B, int T, int32_t *in, int32_t *tgt) {
  yk_model_config cfg = {.layers = 2, .channels = 64, .heads = 4, .max_seq_len = 128, .vocab_size = 300};
  yk_model *m;
  ck_assert_int_eq(yk_model_create(&cfg, B, T, dev, &m, NULL), 0);
  yk_model_init_random(m, 42);
  yk_rng r;
  yk_rng_seed(&r, 9);
  for (int i = 0; i < B * T; i++) {
    in[i] = (int32_t)(yk_rng_u64(&r) % 300);
    tgt[i] = (int32_t)(yk_rng_u64(&r) % 300);
  }
  return m;
}

START_TEST(test_deterministic) {
  yk_device *dev = make_dev(2, YK_ISA_AUTO);
  int32_t in[4 * 96], tgt[4 * 96];
  yk_model *m = small_model(dev, 4, 96, in, tgt);
  size_t np = yk_model_num_params(m);
  float l1, l2;
  ck_assert_int_eq(yk_model_forward(m, in, tgt, &l1, NULL), 0);
  yk_model_zero_grad(m);
  ck_assert_int_eq(yk_model_backward(m, NULL), 0);
  float *g1 = malloc(np * 4);
  memcpy(g1, yk_model_grads(m), np * 4);
  ck_assert_int_eq(yk_model_forward(m, in, tgt, &l2, NULL), 0);
  yk_model_zero_grad(m);
  ck_assert_int_eq(yk_model_backward(m, NULL), 0);
  ck_assert(memcmp(&l1, &l2, 4) == 0);
  ck_assert_msg(memcmp(g1, yk_model_grads(m), np * 4) == 0, "gradients differ between two identical passes");
  free(g1);
  yk_model_destroy(m);
  yk_device_destroy(dev);
}
END_TEST

/* ---- 16-bit activations (issue 4 mixed precision) ------------------------
 * The same model and batch with activations kept in f16 / bf16 against fp32:
 * the loss and every gradient tensor must agree within a tolerance set by
 * the 16-bit rounding, in units of the unit roundoff u (2^-11 for f16, 2^-8
 * for bf16):
 *   loss: |l16 - l32| / l32 <= u   (the loss averages many rounded terms;
 *         measured ~0.002u f16, ~0.002u bf16)
 *   each gradient tensor: max|g16-g32| / max|g32| <= 10u   (about ten
 *         rounded tensors feed each gradient; measured 1.4u f16, 1.2u bf16)
 * and the two must not be bitwise equal (the rounding really happens);
 * 16-bit runs are bitwise reproducible; kept activation bytes halve. */
static void check_act16(yk_dtype dt, double tol_loss, double tol_grad) {
  yk_device *dev = make_dev(2, YK_ISA_AUTO);
  enum { B = 4, T = 64 };
  static int32_t in[B * T], tgt[B * T];
  yk_model *m32 = small_model(dev, B, T, in, tgt);
  yk_model *m16;
  ck_assert_int_eq(yk_model_create_ex(yk_model_get_config(m32), B, T, dev, dt, &m16, NULL), 0);
  ck_assert_int_eq(yk_model_act_dtype(m16), dt);
  yk_model_init_random(m16, 42);
  size_t np = yk_model_num_params(m32);
  ck_assert_uint_eq(yk_model_activation_bytes(m16) * 2, yk_model_activation_bytes(m32));
  ck_assert_uint_lt(yk_model_memory_bytes(m16), yk_model_memory_bytes(m32));
  float l32, l16, l16b;
  ck_assert_int_eq(yk_model_forward(m32, in, tgt, &l32, NULL), 0);
  yk_model_zero_grad(m32);
  ck_assert_int_eq(yk_model_backward(m32, NULL), 0);
  ck_assert_int_eq(yk_model_forward(m16, in, tgt, &l16, NULL), 0);
  yk_model_zero_grad(m16);
  ck_assert_int_eq(yk_model_backward(m16, NULL), 0);
  const float *g32 = yk_model_grads(m32), *g16 = yk_model_grads(m16);
  double el = fabs((double)l16 - l32) / fabs((double)l32);
  ck_assert_msg(el <= tol_loss, "loss %s %.7f vs fp32 %.7f: rel err %.2e > %.1e", yk_dtype_name(dt), l16, l32, el,
                tol_loss);
  const yk_tensor_desc *td;
  int nt = yk_model_tensors(m32, &td);
  double worst = 0;
  for (int k = 0; k < nt; k++) {
    double e = tensor_rel_err(g16 + td[k].offset, g32 + td[k].offset, td[k].numel);
    ck_assert_msg(e <= tol_grad, "gradient %s: %s vs fp32 rel err %.2e > %.1e", td[k].name, yk_dtype_name(dt), e,
                  tol_grad);
    if (e > worst) worst = e;
  }
  ck_assert_msg(memcmp(&l16, &l32, 4) != 0 || memcmp(g16, g32, np * 4) != 0,
                "16-bit activations gave bitwise the fp32 results: the activations were not rounded");
  fprintf(stderr, "act16 %s: loss rel err %.2e, worst gradient tensor rel err %.2e\n", yk_dtype_name(dt), el, worst);
  /* determinism */
  float *g1 = malloc(np * 4);
  memcpy(g1, g16, np * 4);
  ck_assert_int_eq(yk_model_forward(m16, in, tgt, &l16b, NULL), 0);
  yk_model_zero_grad(m16);
  ck_assert_int_eq(yk_model_backward(m16, NULL), 0);
  ck_assert(memcmp(&l16, &l16b, 4) == 0);
  ck_assert_msg(memcmp(g1, yk_model_grads(m16), np * 4) == 0, "16-bit gradients differ between identical passes");
  free(g1);
  yk_model_destroy(m16);
  yk_model_destroy(m32);
  yk_device_destroy(dev);
}

START_TEST(test_act16_f16_matches_fp32) { check_act16(YK_DT_F16, 1.0 / 2048, 10.0 / 2048); }
END_TEST

START_TEST(test_act16_bf16_matches_fp32) { check_act16(YK_DT_BF16, 1.0 / 256, 10.0 / 256); }
END_TEST

START_TEST(test_act16_bad_dtype) {
  yk_device *dev = make_dev(1, YK_ISA_AUTO);
  yk_model_config cfg = {.layers = 1, .channels = 64, .heads = 4, .max_seq_len = 16, .vocab_size = 300};
  yk_model *m = NULL;
  yk_diag d = {0};
  ck_assert_int_eq(yk_model_create_ex(&cfg, 1, 16, dev, YK_DT_I32, &m, &d), YK_ECONFIG);
  ck_assert_ptr_null(m);
  ck_assert_ptr_nonnull(strstr(d.msg, "fp16"));
  yk_device_destroy(dev);
}
END_TEST

typedef struct hook_rec {
  size_t expect_end; /* next range must end here */
  int calls;
  int bad;
  float *snap; /* copy of each range when it was declared final */
  const float *grads;
} hook_rec;

static void hook_fn(void *ctx, size_t off, size_t n) {
  hook_rec *h = ctx;
  if (off + n != h->expect_end) h->bad++;
  h->expect_end = off;
  memcpy(h->snap + off, h->grads + off, n * 4);
  h->calls++;
}

START_TEST(test_grad_hook_ranges_final_and_contiguous) {
  yk_device *dev = make_dev(2, YK_ISA_AUTO);
  int32_t in[2 * 32], tgt[2 * 32];
  yk_model *m = small_model(dev, 2, 32, in, tgt);
  size_t np = yk_model_num_params(m);
  hook_rec h = {.expect_end = np, .snap = calloc(np, 4), .grads = yk_model_grads(m)};
  yk_model_set_grad_hook(m, hook_fn, &h);
  ck_assert_int_eq(yk_model_forward(m, in, tgt, NULL, NULL), 0);
  yk_model_zero_grad(m);
  ck_assert_int_eq(yk_model_backward(m, NULL), 0);
  ck_assert_int_eq(h.bad, 0);
  ck_assert_int_eq(h.calls, 2 + yk_model_get_config(m)->layers);
  ck_assert_uint_eq(h.expect_end, 0);
  ck_assert_msg(memcmp(h.snap, yk_model_grads(m), np * 4) == 0, "a range changed after the hook declared it final");
  free(h.snap);
  yk_model_destroy(m);
  yk_device_destroy(dev);
}
END_TEST

/* The span hook: begin/end pairs, one region at a time, in the order the
 * passes visit them (forward: embedding, layers, head; backward reversed). */
typedef struct {
  int seq[64][3];
  int n, open;
} span_rec;

static void span_fn(void *ctx, yk_model_pass pass, int region, int end) {
  span_rec *r = ctx;
  if (r->n < 64) r->seq[r->n][0] = pass, r->seq[r->n][1] = region, r->seq[r->n][2] = end;
  r->n++;
  r->open += end ? -1 : 1;
  ck_assert_int_eq(r->open, end ? 0 : 1); /* regions never nest */
}

START_TEST(test_span_hook_regions_in_order) {
  yk_device *dev = make_dev(1, YK_ISA_AUTO);
  int32_t in[2 * 32], tgt[2 * 32];
  yk_model *m = small_model(dev, 2, 32, in, tgt);
  int L = yk_model_get_config(m)->layers;
  span_rec r = {0};
  yk_model_set_span_hook(m, span_fn, &r);
  ck_assert_int_eq(yk_model_forward(m, in, tgt, NULL, NULL), 0);
  ck_assert_int_eq(yk_model_backward(m, NULL), 0);
  ck_assert_int_eq(r.n, 4 * (L + 2));
  for (int k = 0; k < r.n; k++) {
    int pass = k < 2 * (L + 2) ? YK_MODEL_FORWARD : YK_MODEL_BACKWARD, i = (k % (2 * (L + 2))) / 2;
    int region = pass == YK_MODEL_FORWARD ? i : L + 1 - i;
    ck_assert_int_eq(r.seq[k][0], pass);
    ck_assert_int_eq(r.seq[k][1], region);
    ck_assert_int_eq(r.seq[k][2], k % 2);
  }
  yk_model_set_span_hook(m, NULL, NULL);
  r.n = 0;
  ck_assert_int_eq(yk_model_forward(m, in, tgt, NULL, NULL), 0);
  ck_assert_int_eq(r.n, 0);
  yk_model_destroy(m);
  yk_device_destroy(dev);
}
END_TEST

START_TEST(test_grad_accumulation) {
  yk_device *dev = make_dev(1, YK_ISA_AUTO);
  int32_t in[2 * 32], tgt[2 * 32];
  yk_model *m = small_model(dev, 2, 32, in, tgt);
  size_t np = yk_model_num_params(m);
  ck_assert_int_eq(yk_model_forward(m, in, tgt, NULL, NULL), 0);
  yk_model_zero_grad(m);
  ck_assert_int_eq(yk_model_backward(m, NULL), 0);
  float *g1 = malloc(np * 4);
  memcpy(g1, yk_model_grads(m), np * 4);
  yk_model_zero_grad(m);
  for (int i = 0; i < 2; i++) {
    ck_assert_int_eq(yk_model_forward(m, in, tgt, NULL, NULL), 0);
    ck_assert_int_eq(yk_model_backward_scaled(m, 0.5f, NULL), 0);
  }
  ck_assert(tensor_rel_err(yk_model_grads(m), g1, np) < 1e-6);
  /* a second backward without a new forward is refused */
  yk_diag d = {0};
  ck_assert_int_eq(yk_model_backward(m, &d), YK_EINVAL);
  ck_assert(strstr(d.msg, "forward") != NULL);
  free(g1);
  yk_model_destroy(m);
  yk_device_destroy(dev);
}
END_TEST

/* The LM head and cross-entropy in 128-row blocks against the whole: a
 * batch of N = 192 rows (blocks of 128 and 64) against its two halves of 96
 * rows, each one whole block, accumulated with scale 0.5. Per-position
 * losses within 1e-6 (the logits' products differ only in their row count)
 * and every gradient within 1e-5 of the largest (fp32: dwte and the weight
 * gradients sum over rows in another order); no more than one block of
 * logits is planned, and inference still gives every logit. */
START_TEST(test_head_blocks_match_whole) {
  yk_device *dev = make_dev(1, YK_ISA_AUTO);
  enum { B = 4, T = 48, N = B * T };
  int32_t in[N], tgt[N];
  yk_model *m = small_model(dev, B, T, in, tgt), *h = small_model(dev, B / 2, T, in, tgt);
  size_t np = yk_model_num_params(m);
  const yk_model_config *cfg = yk_model_get_config(m);
  int Vp = cfg->padded_vocab_size;
  yk_model_sizes sz, szh;
  ck_assert_int_eq(yk_model_plan(cfg, B, T, dev, YK_DT_F32, NULL, 0, &sz, NULL), 0);
  ck_assert_int_eq(yk_model_plan(cfg, B / 2, T, dev, YK_DT_F32, NULL, 0, &szh, NULL), 0);
  ck_assert_uint_eq(sz.logits_numel, 128 * (size_t)Vp);
  ck_assert_uint_eq(szh.logits_numel, (size_t)N / 2 * Vp);
  float loss;
  ck_assert_int_eq(yk_model_forward(m, in, tgt, &loss, NULL), 0);
  float *losses = malloc(N * sizeof *losses);
  memcpy(losses, yk_model_losses(m), N * sizeof *losses);
  yk_model_zero_grad(m);
  ck_assert_int_eq(yk_model_backward(m, NULL), 0);
  yk_model_zero_grad(h);
  double worst = 0;
  for (int half = 0; half < 2; half++) {
    ck_assert_int_eq(yk_model_forward(h, in + half * N / 2, tgt + half * N / 2, NULL, NULL), 0);
    for (int i = 0; i < N / 2; i++) worst = fmax(worst, fabs(losses[half * N / 2 + i] - yk_model_losses(h)[i]));
    ck_assert_int_eq(yk_model_backward_scaled(h, 0.5f, NULL), 0);
  }
  ck_assert_msg(worst <= 1e-6, "per-position losses differ by %g", worst);
  double ge = tensor_rel_err(yk_model_grads(m), yk_model_grads(h), np);
  ck_assert_msg(ge <= 1e-5, "gradients differ by %g of the largest", ge);
  /* inference: all N x Vp logits, whose cross-entropy is the blocked loss */
  ck_assert_int_eq(yk_model_forward(m, in, NULL, NULL, NULL), 0);
  const float *lg = yk_model_logits(m);
  ck_assert_ptr_nonnull(lg);
  double sum = 0;
  for (int n = 0; n < N; n++) {
    const float *row = lg + (size_t)n * Vp;
    double mx = -INFINITY, se = 0;
    for (int v = 0; v < cfg->vocab_size; v++) mx = fmax(mx, row[v]);
    for (int v = 0; v < cfg->vocab_size; v++) se += exp(row[v] - mx);
    sum += mx + log(se) - row[tgt[n]];
  }
  ck_assert_msg(fabs(sum / N - loss) <= 1e-5, "loss %.7f from all logits, %.7f blocked", sum / N, loss);
  free(losses);
  yk_model_destroy(m);
  yk_model_destroy(h);
  yk_device_destroy(dev);
}
END_TEST

START_TEST(test_bad_tokens) {
  yk_device *dev = make_dev(1, YK_ISA_AUTO);
  int32_t in[2 * 32], tgt[2 * 32];
  yk_model *m = small_model(dev, 2, 32, in, tgt);
  yk_diag d = {0};
  in[5] = 300;
  ck_assert_int_eq(yk_model_forward(m, in, tgt, NULL, &d), YK_EINVAL);
  ck_assert_msg(strstr(d.msg, "300") && strstr(d.msg, "position 5"), "%s", d.msg);
  in[5] = 0;
  tgt[7] = -1;
  ck_assert_int_eq(yk_model_forward(m, in, tgt, NULL, &d), YK_EINVAL);
  ck_assert_msg(strstr(d.msg, "target") && strstr(d.msg, "-1"), "%s", d.msg);
  tgt[7] = 0;
  /* a NaN weight gives a NaN loss, reported as YK_ENONFINITE */
  int li = yk_model_tensor_find(m, "h1.fcw");
  ck_assert_int_ge(li, 0);
  const yk_tensor_desc *td;
  yk_model_tensors(m, &td);
  yk_model_params(m)[td[li].offset + 5] = NAN;
  float loss = 0;
  ck_assert_int_eq(yk_model_forward(m, in, tgt, &loss, &d), YK_ENONFINITE);
  ck_assert(isnan(loss));
  ck_assert_msg(strstr(d.msg, "non-finite") != NULL, "%s", d.msg);
  yk_model_params(m)[td[li].offset + 5] = 0.01f;
  /* inference without targets works and gives logits */
  ck_assert_int_eq(yk_model_forward(m, in, NULL, NULL, &d), 0);
  ck_assert(isfinite(yk_model_logits(m)[0]));
  yk_model_destroy(m);
  yk_device_destroy(dev);
}
END_TEST

/* ---- weights file I/O ---------------------------------------------------- */

static char tmpdir[256];

static void write_bytes(const char *path, const void *buf, size_t n) {
  FILE *f = fopen(path, "wb");
  ck_assert(f != NULL);
  ck_assert_uint_eq(fwrite(buf, 1, n, f), n);
  fclose(f);
}

static char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "open %s", path);
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc(*n);
  ck_assert_uint_eq(fread(b, 1, *n, f), *n);
  fclose(f);
  return b;
}

START_TEST(test_weights_roundtrip_bytes) {
  yk_device *dev = make_dev(1, YK_ISA_AUTO);
  yk_model *m = load_model("ref_weights.bin", 1, 8, dev);
  char out[512], ref[1200];
  snprintf(out, sizeof out, "%s/w.bin", tmpdir);
  yk_diag d = {0};
  ck_assert_msg(yk_model_weights_save(m, out, &d) == 0, "%s", d.msg);
  fixture(ref, sizeof ref, "ref_weights.bin");
  size_t n1, n2;
  char *a = slurp(out, &n1), *b = slurp(ref, &n2);
  ck_assert_uint_eq(n1, n2);
  ck_assert_msg(memcmp(a, b, n1) == 0, "saved file differs from the file it was loaded from");
  free(a);
  free(b);
  yk_model_destroy(m);
  yk_device_destroy(dev);
}
END_TEST

/* Without a model: the table of a config is the model's table, the config
 * comes back from it, and writing the arena (at once or piece by piece
 * through a source) gives the file the model saves. */
static int copy_source(void *ctx, size_t off, size_t n, float *dst, yk_diag *d) {
  memcpy(dst, (const float *)ctx + off, n * sizeof *dst);
  return 0;
}

static int failing_source(void *ctx, size_t off, size_t n, float *dst, yk_diag *d) {
  return off > 1000 ? yk_errorf(d, YK_ECORRUPT, "source broke at %zu", off) : copy_source(ctx, off, n, dst, d);
}

START_TEST(test_table_and_write_without_model) {
  yk_device *dev = make_dev(1, YK_ISA_AUTO);
  yk_model *m = load_model("ref_weights.bin", 1, 8, dev);
  const yk_model_config *mc = yk_model_get_config(m);
  const yk_tensor_desc *mt;
  int nm = yk_model_tensors(m, &mt);
  yk_tensor_desc *t;
  int n;
  yk_diag d = {0};
  ck_assert_msg(yk_model_tensor_table(mc, &t, &n, &d) == 0, "%s", d.msg);
  ck_assert_int_eq(n, nm);
  ck_assert(memcmp(t, mt, (size_t)n * sizeof *t) == 0);
  yk_model_config back;
  ck_assert_msg(yk_model_config_from_table(t, n, mc->vocab_size, mc->heads, &back, &d) == 0, "%s", d.msg);
  ck_assert(memcmp(&back, mc, sizeof back) == 0);
  t[5].offset++;
  ck_assert_int_eq(yk_model_config_from_table(t, n, mc->vocab_size, mc->heads, &back, &d), YK_EFORMAT);
  ck_assert_msg(strstr(d.msg, t[5].name) != NULL, "%s", d.msg);
  ck_assert_int_eq(yk_model_config_from_table(t + 1, n - 1, mc->vocab_size, mc->heads, &back, &d), YK_EFORMAT);
  free(t);
  char a_path[512], b_path[512];
  snprintf(a_path, sizeof a_path, "%s/saved.bin", tmpdir);
  snprintf(b_path, sizeof b_path, "%s/written.bin", tmpdir);
  ck_assert_int_eq(yk_model_weights_save(m, a_path, NULL), 0);
  for (int k = 0; k < 2; k++) {
    if (k == 0) ck_assert_msg(yk_model_weights_write(b_path, mc, yk_model_params(m), &d) == 0, "%s", d.msg);
    else ck_assert_msg(yk_model_weights_write_from(b_path, mc, copy_source, yk_model_params(m), &d) == 0, "%s", d.msg);
    size_t n1, n2;
    char *a = slurp(a_path, &n1), *b = slurp(b_path, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert_msg(memcmp(a, b, n1) == 0, "written file %d differs from the saved one", k);
    free(a);
    free(b);
  }
  unlink(b_path);
  ck_assert_int_eq(yk_model_weights_write_from(b_path, mc, failing_source, yk_model_params(m), &d), YK_ECORRUPT);
  ck_assert_msg(strstr(d.msg, "source broke") != NULL, "%s", d.msg);
  ck_assert_int_ne(access(b_path, F_OK), 0);
  yk_model_destroy(m);
  yk_device_destroy(dev);
}
END_TEST

START_TEST(test_weights_bad_files) {
  yk_device *dev = make_dev(1, YK_ISA_AUTO);
  yk_model *m = load_model("ref_weights.bin", 1, 8, dev);
  char ref[1200], p[512];
  fixture(ref, sizeof ref, "ref_weights.bin");
  size_t n;
  char *good = slurp(ref, &n);
  int32_t *h = (int32_t *)good;
  size_t np = yk_model_num_params(m);
  float *before = malloc(np * 4);
  memcpy(before, yk_model_params(m), np * 4);
  yk_diag d;
  snprintf(p, sizeof p, "%s/bad.bin", tmpdir);
  struct {
    const char *what;
    size_t len;
    int field, value, code;
    const char *needle;
  } cases[] = {
      {"truncated", n - 100, -1, 0, YK_EFORMAT, "truncated"},
      {"header only part", 100, -1, 0, YK_EFORMAT, "shorter than"},
      {"empty", 0, -1, 0, YK_EFORMAT, "shorter than"},
      {"wrong magic", n, 0, 1234, YK_EFORMAT, "magic 1234"},
      {"wrong version", n, 1, 2, YK_EFORMAT, "version 2"},
      {"negative C", n, 6, -32, YK_EFORMAT, "C=-32"},
      {"L mismatch", n, 4, 3, YK_EFORMAT, "size"}, /* size check catches it first */
  };
  for (size_t i = 0; i < YK_ARRAY_LEN(cases); i++) {
    char *buf = malloc(n);
    memcpy(buf, good, n);
    if (cases[i].field >= 0) ((int32_t *)buf)[cases[i].field] = cases[i].value;
    write_bytes(p, buf, cases[i].len);
    memset(&d, 0, sizeof d);
    int rc = yk_model_weights_load(m, p, &d);
    ck_assert_msg(rc == cases[i].code, "%s: rc %d (%s)", cases[i].what, rc, d.msg);
    ck_assert_msg(strstr(d.msg, cases[i].needle) != NULL, "%s: message '%s' lacks '%s'", cases[i].what, d.msg,
                  cases[i].needle);
    free(buf);
  }
  /* too long */
  char *lng = calloc(1, n + 4);
  memcpy(lng, good, n);
  write_bytes(p, lng, n + 4);
  ck_assert_int_eq(yk_model_weights_load(m, p, &d), YK_EFORMAT);
  ck_assert(strstr(d.msg, "too long") != NULL);
  free(lng);
  /* a valid file of another shape: header/config mismatch names the field */
  yk_model_config other = *yk_model_get_config(m);
  other.heads = 2;
  yk_model *m2;
  ck_assert_int_eq(yk_model_create(&other, 1, 8, dev, &m2, NULL), 0);
  ck_assert_int_eq(yk_model_weights_save(m2, p, NULL), 0);
  ck_assert_int_eq(yk_model_weights_load(m, p, &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "NH=2") && strstr(d.msg, "model.heads=4"), "%s", d.msg);
  yk_model_destroy(m2);
  other = *yk_model_get_config(m);
  other.max_seq_len = 16;
  ck_assert_int_eq(yk_model_create(&other, 1, 8, dev, &m2, NULL), 0);
  ck_assert_int_eq(yk_model_weights_save(m2, p, NULL), 0);
  ck_assert_int_eq(yk_model_weights_load(m, p, &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "maxT=16") && strstr(d.msg, "model.max_seq_len=32"), "%s", d.msg);
  yk_model_destroy(m2);
  /* missing file */
  ck_assert_int_eq(yk_model_weights_load(m, "/nonexistent/w.bin", &d), YK_EIO);
  ck_assert(strstr(d.msg, "/nonexistent/w.bin") != NULL);
  /* parameters untouched by all of the failures */
  ck_assert(memcmp(before, yk_model_params(m), np * 4) == 0);
  (void)h;
  free(before);
  free(good);
  yk_model_destroy(m);
  yk_device_destroy(dev);
}
END_TEST

/* A NaN or infinity in a weights file is refused on load, naming the tensor
 * (not found later as a non-finite loss blamed on the learning rate). */
START_TEST(test_weights_nonfinite) {
  yk_device *dev = make_dev(1, YK_ISA_AUTO);
  yk_model *m = load_model("ref_weights.bin", 1, 8, dev);
  const yk_model_config *c = yk_model_get_config(m);
  char ref[1200], p[512];
  fixture(ref, sizeof ref, "ref_weights.bin");
  snprintf(p, sizeof p, "%s/nonfinite.bin", tmpdir);
  size_t n;
  char *good = slurp(ref, &n);
  size_t wpe0 = 1024 + (size_t)c->padded_vocab_size * c->channels * 4; /* file order: wte, wpe, ... */
  struct {
    size_t at;
    float value;
    const char *needle;
  } cases[] = {
      {wpe0 + 5 * 4, INFINITY, "tensor wpe holds 1 non-finite value (the first, element 5, is inf)"},
      {n - 4 * 3, NAN, "tensor lnfb holds 1 non-finite value (the first, element"},
  };
  for (size_t i = 0; i < YK_ARRAY_LEN(cases); i++) {
    char *buf = malloc(n);
    memcpy(buf, good, n);
    memcpy(buf + cases[i].at, &cases[i].value, 4);
    write_bytes(p, buf, n);
    yk_diag d = {0};
    int rc = yk_model_weights_load(m, p, &d);
    ck_assert_msg(rc == YK_EFORMAT, "case %zu: rc %d (%s)", i, rc, d.msg);
    ck_assert_msg(strstr(d.msg, cases[i].needle) && strstr(d.msg, p), "case %zu: message '%s' lacks '%s'", i, d.msg,
                  cases[i].needle);
    free(buf);
  }
  /* the good file still loads */
  yk_diag d = {0};
  ck_assert_msg(yk_model_weights_load(m, ref, &d) == 0, "%s", d.msg);
  free(good);
  yk_model_destroy(m);
  yk_device_destroy(dev);
}
END_TEST

/* ---- presets and config ---------------------------------------------------- */

START_TEST(test_presets) {
  yk_model_config c;
  ck_assert_int_eq(yk_model_preset("d12", &c, NULL), 0);
  ck_assert_int_eq(c.layers, 12);
  ck_assert_int_eq(c.channels, 768);
  ck_assert_int_eq(c.padded_vocab_size, 50304);
  /* GPT-2 124M: 124,475,904 params with the padded vocab (llm.c's count) */
  ck_assert_uint_eq(yk_model_config_num_params(&c), 124475904u);
  const char *names[] = {"tiny", "small", "d6", "d24", "d36", "d48"};
  for (size_t i = 0; i < YK_ARRAY_LEN(names); i++) ck_assert_int_eq(yk_model_preset(names[i], &c, NULL), 0);
  ck_assert_int_eq(c.channels, 1600);
  ck_assert_int_eq(c.heads, 25);
  yk_diag d = {0};
  ck_assert_int_eq(yk_model_preset("d13", &c, &d), YK_ECONFIG);
  ck_assert(strstr(d.msg, "d13") != NULL);
  yk_config cfg;
  yk_config_defaults(&cfg);
  snprintf(cfg.model.name, sizeof cfg.model.name, "small");
  cfg.model.layers = 3;
  cfg.model.vocab_size = 300;
  ck_assert_int_eq(yk_model_config_from(&cfg, &c, NULL), 0);
  ck_assert_int_eq(c.layers, 3);
  ck_assert_int_eq(c.channels, 128);
  ck_assert_int_eq(c.padded_vocab_size, 384);
  cfg.model.heads = 3;
  ck_assert_int_eq(yk_model_config_from(&cfg, &c, &d), YK_ECONFIG);
  ck_assert(strstr(d.msg, "heads=3") != NULL);
  /* an explicit, larger padded vocab is kept; a bad one is refused */
  yk_model_config pv = {.layers = 1, .channels = 8, .heads = 2, .max_seq_len = 4, .vocab_size = 250,
                        .padded_vocab_size = 384};
  ck_assert_int_eq(yk_model_config_finish(&pv, NULL), 0);
  ck_assert_int_eq(pv.padded_vocab_size, 384);
  pv.padded_vocab_size = 200;
  ck_assert_int_eq(yk_model_config_finish(&pv, &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "200") != NULL, "%s", d.msg);
  /* T > maxT is refused at create */
  yk_device *dev = make_dev(1, YK_ISA_AUTO);
  yk_model *m;
  ck_assert_int_eq(yk_model_preset("tiny", &c, NULL), 0);
  ck_assert_int_eq(yk_model_create(&c, 1, 257, dev, &m, &d), YK_ECONFIG);
  ck_assert(strstr(d.msg, "T=257") != NULL);
  /* flops: 6N + attention for d12 at T=1024 is about 0.85 GFLOP per token */
  ck_assert_int_eq(yk_model_preset("d12", &c, NULL), 0);
  double f = yk_model_flops_per_token(&c, 1024);
  ck_assert(f > 0.8e9 && f < 0.9e9);
  yk_device_destroy(dev);
}
END_TEST

int main(void) {
  const char *td = getenv("YK_TEST_DATA");
  snprintf(fixture_dir, sizeof fixture_dir, "%s", td ? td : ".");
  snprintf(tmpdir, sizeof tmpdir, "/tmp/yk_test_model.XXXXXX");
  if (!mkdtemp(tmpdir)) return 1;
  Suite *s = suite_create("model");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_reference_portable_1t);
  tcase_add_test(tc, test_reference_best_1t);
  tcase_add_test(tc, test_reference_best_2t);
  tcase_add_test(tc, test_gradcheck_every_tensor);
  tcase_add_test(tc, test_deterministic);
  tcase_add_test(tc, test_grad_hook_ranges_final_and_contiguous);
  tcase_add_test(tc, test_span_hook_regions_in_order);
  tcase_add_test(tc, test_grad_accumulation);
  tcase_add_test(tc, test_bad_tokens);
  tcase_add_test(tc, test_weights_roundtrip_bytes);
  tcase_add_test(tc, test_weights_bad_files);
  tcase_add_test(tc, test_weights_nonfinite);
  tcase_add_test(tc, test_table_and_write_without_model);
  tcase_add_test(tc, test_presets);
  tcase_add_test(tc, test_act16_f16_matches_fp32);
  tcase_add_test(tc, test_act16_bf16_matches_fp32);
  tcase_add_test(tc, test_act16_bad_dtype);
  tcase_add_test(tc, test_head_blocks_match_whole);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
  return failed ? 1 : 0;
}
