/* bench_train.c - `yoke bench train`: single-rank training throughput.
 *
 * For each (T, threads) it times full optimizer steps of a GPT-2 - the
 * engine's own step, yk_engine_step (forward, backward, norm, AdamW) - on
 * a shard of synthetic tokens, reports ms/step, tokens/s, achieved
 * GFLOP/s and MFU against the sgemm rate measured in the same run with the
 * same thread count, then runs the PyTorch baseline (bench/torch_gpt2.py
 * under Debian's /usr/bin/python3) on the same model and shapes, and prints
 * the ratio. Medians of the timed steps; warm-up steps excluded.
 *
 * The peer gets its best configuration: torch.set_num_threads(n) plus
 * OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n,
 * OMP_WAIT_POLICY=PASSIVE, and glibc malloc thresholds that keep large
 * activations from being returned to the OS every step. */
#include "yk_bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "yk_device.h"
#include "yk_engine.h"
#include "yk_partition.h"
#include "yk_model.h"

/* Best sgemm rate (GFLOP/s) of the device, same threads as training, over
 * the model's products: (B*T, C) x (C, 4C) (the MLP), (B*T, C) x (C, 3C)
 * (QKV) and (B*T, C) x (C, Vp) (the LM head, the largest), best of several
 * runs each. The best of them is the rate MFU is measured against, so MFU
 * stays below 100% even when small products split poorly over threads. */
static double sgemm_peak(const yk_device *dev, int C, int N, int Vp) {
  double r[3] = {yk_device_gemm_gflops(dev, N, 4 * C, C, 10), yk_device_gemm_gflops(dev, N, 3 * C, C, 10),
                 yk_device_gemm_gflops(dev, N, Vp, C, 3)};
  double best = r[0];
  for (int i = 1; i < 3; i++)
    if (r[i] > best) best = r[i];
  return best;
}

/* ---- --profile: per-kernel wall time ----------------------------------
 * A device whose ops forward to the real CPU device and add each call's wall
 * time to a slot: one per kernel, and one per distinct gemm shape (so the
 * model's products can be told apart). Printed per step after the run. The
 * forwarding costs a clock read per call (a few hundred calls per step). */
#define PROF_SLOTS 64

typedef struct prof_slot {
  char name[48];
  double s;
  long calls;
} prof_slot;

typedef struct prof_dev {
  yk_device pub; /* first: ops receive a prof_dev* as a yk_device* */
  const yk_device *in;
  prof_slot slot[PROF_SLOTS];
  int nslot;
  double step_s; /* whole steps (zero_grad, forward, backward, AdamW) */
} prof_dev;

static prof_slot *prof_get(const yk_device *dev, const char *name) {
  prof_dev *p = (prof_dev *)(uintptr_t)dev; /* the wrapper owns its slots; ops get it as const */
  for (int i = 0; i < p->nslot; i++)
    if (!strcmp(p->slot[i].name, name)) return &p->slot[i];
  if (p->nslot == PROF_SLOTS) return &p->slot[PROF_SLOTS - 1];
  prof_slot *s = &p->slot[p->nslot++];
  snprintf(s->name, sizeof s->name, "%s", name);
  return s;
}

#define IN(dev) (((const prof_dev *)(dev))->in)
#define TIMED(name, call)                                                                                              \
  do {                                                                                                                 \
    double t0_ = yk_now_s();                                                                                           \
    call;                                                                                                              \
    prof_slot *s_ = prof_get(dev, name);                                                                               \
    s_->s += yk_now_s() - t0_;                                                                                         \
    s_->calls++;                                                                                                       \
  } while (0)

static void *p_alloc(const yk_device *dev, size_t b) { return IN(dev)->ops->alloc(IN(dev), b); }
static void p_free(const yk_device *dev, void *q) { IN(dev)->ops->free(IN(dev), q); }
static void p_zero(const yk_device *dev, float *q, size_t n) { TIMED("zero", IN(dev)->ops->zero(IN(dev), q, n)); }
static void p_gemm(const yk_device *dev, int ta, int tb, int M, int N, int K_, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc) {
  char name[48];
  snprintf(name, sizeof name, "gemm %c%c %dx%dx%d", ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K_);
  TIMED(name, IN(dev)->ops->gemm(IN(dev), ta, tb, M, N, K_, alpha, A, lda, B, ldb, beta, C, ldc));
}
static void p_encoder_fwd(const yk_device *dev, float *out, const int32_t *tok, const float *wte, const float *wpe,
                          int N, int T, int C) {
  TIMED("encoder_fwd", IN(dev)->ops->encoder_fwd(IN(dev), out, tok, wte, wpe, N, T, C));
}
static void p_encoder_bwd(const yk_device *dev, float *dwte, float *dwpe, const float *dout, const int32_t *tok,
                          int N, int T, int C) {
  TIMED("encoder_bwd", IN(dev)->ops->encoder_bwd(IN(dev), dwte, dwpe, dout, tok, N, T, C));
}
static void p_layernorm_fwd(const yk_device *dev, float *out, float *mean, float *rstd, const float *inp,
                            const float *w, const float *b, int N, int C) {
  TIMED("layernorm_fwd", IN(dev)->ops->layernorm_fwd(IN(dev), out, mean, rstd, inp, w, b, N, C));
}
static void p_layernorm_bwd(const yk_device *dev, float *dinp, float *dw, float *db, const float *dout,
                            const float *inp, const float *w, const float *mean, const float *rstd, int N, int C,
                            float *scratch) {
  TIMED("layernorm_bwd",
        IN(dev)->ops->layernorm_bwd(IN(dev), dinp, dw, db, dout, inp, w, mean, rstd, N, C, scratch));
}
static void p_bias_rows(const yk_device *dev, float *out, const float *bias, const float *res, int N, int OC) {
  TIMED("bias_rows", IN(dev)->ops->bias_rows(IN(dev), out, bias, res, N, OC));
}
static void p_bias_bwd(const yk_device *dev, float *db, const float *dout, int N, int OC) {
  TIMED("bias_bwd", IN(dev)->ops->bias_bwd(IN(dev), db, dout, N, OC));
}
static void p_gelu_fwd(const yk_device *dev, float *out, const float *inp, size_t n) {
  TIMED("gelu_fwd", IN(dev)->ops->gelu_fwd(IN(dev), out, inp, n));
}
static void p_gelu_bwd(const yk_device *dev, float *dinp, const float *inp, const float *dout, size_t n) {
  TIMED("gelu_bwd", IN(dev)->ops->gelu_bwd(IN(dev), dinp, inp, dout, n));
}
static void p_add(const yk_device *dev, float *out, const float *a, const float *b, size_t n) {
  TIMED("add", IN(dev)->ops->add(IN(dev), out, a, b, n));
}
static void p_attention_fwd(const yk_device *dev, float *out, float *att, const float *qkv, int B, int T, int C,
                            int NH) {
  TIMED("attention_fwd", IN(dev)->ops->attention_fwd(IN(dev), out, att, qkv, B, T, C, NH));
}
static void p_attention_bwd(const yk_device *dev, float *dqkv, const float *dout, const float *qkv, const float *att,
                            int B, int T, int C, int NH, float *scratch) {
  TIMED("attention_bwd", IN(dev)->ops->attention_bwd(IN(dev), dqkv, dout, qkv, att, B, T, C, NH, scratch));
}
static void p_softmax_causal(const yk_device *dev, float *x, int R, int T, float scale) {
  TIMED("softmax_causal", IN(dev)->ops->softmax_causal(IN(dev), x, R, T, scale));
}
static void p_softmax_causal_bwd(const yk_device *dev, float *datt, const float *att, int R, int T, float scale) {
  TIMED("softmax_causal_bwd", IN(dev)->ops->softmax_causal_bwd(IN(dev), datt, att, R, T, scale));
}
static void p_crossent_fwd(const yk_device *dev, float *losses, float *lse, const float *logits, const int32_t *targets,
                           int N, int V, int Vp) {
  TIMED("crossent_fwd", IN(dev)->ops->crossent_fwd(IN(dev), losses, lse, logits, targets, N, V, Vp));
}
static void p_crossent_bwd(const yk_device *dev, float *logits, const float *lse, const int32_t *targets, float dloss,
                           int N, int V, int Vp) {
  TIMED("crossent_bwd", IN(dev)->ops->crossent_bwd(IN(dev), logits, lse, targets, dloss, N, V, Vp));
}
#define P_CAST(op, TO, TI)                                                                                             \
  static void p_##op(const yk_device *dev, TO *out, const TI *x, size_t n) { TIMED(#op, IN(dev)->ops->op(IN(dev), out, x, n)); }
P_CAST(f32_to_f16, uint16_t, float)
P_CAST(f16_to_f32, float, uint16_t)
P_CAST(f32_to_bf16, uint16_t, float)
P_CAST(bf16_to_f32, float, uint16_t)
static void p_round_f16(const yk_device *dev, uint16_t *out, float *x, size_t n) {
  TIMED("round_f16", IN(dev)->ops->round_f16(IN(dev), out, x, n));
}
static void p_round_bf16(const yk_device *dev, uint16_t *out, float *x, size_t n) {
  TIMED("round_bf16", IN(dev)->ops->round_bf16(IN(dev), out, x, n));
}
#undef TIMED

static const yk_device_ops prof_ops = {
    .name = "cpu+profile",
    .alloc = p_alloc,
    .free = p_free,
    .zero = p_zero,
    .gemm = p_gemm,
    .encoder_fwd = p_encoder_fwd,
    .encoder_bwd = p_encoder_bwd,
    .layernorm_fwd = p_layernorm_fwd,
    .layernorm_bwd = p_layernorm_bwd,
    .bias_rows = p_bias_rows,
    .bias_bwd = p_bias_bwd,
    .gelu_fwd = p_gelu_fwd,
    .gelu_bwd = p_gelu_bwd,
    .add = p_add,
    .attention_fwd = p_attention_fwd,
    .attention_bwd = p_attention_bwd,
    .softmax_causal = p_softmax_causal,
    .softmax_causal_bwd = p_softmax_causal_bwd,
    .crossent_fwd = p_crossent_fwd,
    .crossent_bwd = p_crossent_bwd,
    .f32_to_f16 = p_f32_to_f16,
    .f16_to_f32 = p_f16_to_f32,
    .f32_to_bf16 = p_f32_to_bf16,
    .bf16_to_f32 = p_bf16_to_f32,
    .round_f16 = p_round_f16,
    .round_bf16 = p_round_bf16,
};

static int cmp_slot(const void *a, const void *b) {
  double x = ((const prof_slot *)a)->s, y = ((const prof_slot *)b)->s;
  return (x < y) - (x > y);
}

/* Print the slots (largest first) as ms per step. */
static void prof_print(prof_dev *p, int T, int threads, int nsteps) {
  qsort(p->slot, (size_t)p->nslot, sizeof p->slot[0], cmp_slot);
  double sum = 0, step_ms = p->step_s * 1e3 / nsteps;
  printf("# profile T=%d threads=%d: ms per step, mean of the %d timed steps of %.1f ms\n", T, threads,
         nsteps, step_ms);
  for (int i = 0; i < p->nslot; i++) {
    double ms = p->slot[i].s * 1e3 / nsteps;
    sum += ms;
    printf("#   %-34s %9.2f ms %6.1f%% %6.1f calls\n", p->slot[i].name, ms, step_ms > 0 ? 100 * ms / step_ms : 0,
           (double)p->slot[i].calls / nsteps);
  }
  printf("#   %-34s %9.2f ms %6.1f%%\n", "(rest: model code between calls)", step_ms - sum,
         step_ms > 0 ? 100 * (step_ms - sum) / step_ms : 0);
}

typedef struct {
  double ms, tok_s, gflops, mfu, peak;
} yoke_result;

/* --profile: each step's optimizer time into its slot; the slots count the
 * timed steps only. */
typedef struct prof_steps {
  prof_dev *pd;
  int warmup;
} prof_steps;

static void prof_on_step(void *arg, int step, const yk_step_stats *st) {
  prof_steps *ps = arg;
  prof_dev *pd = ps->pd;
  prof_slot *opt = prof_get(&pd->pub, "norm + adamw (optimizer)");
  opt->s += st->opt_ms / 1e3;
  opt->calls++;
  pd->step_s += st->step_ms / 1e3;
  if (step + 1 == ps->warmup) { /* profile the timed steps only */
    for (int i = 0; i < pd->nslot; i++) pd->slot[i].s = 0, pd->slot[i].calls = 0;
    pd->step_s = 0;
  }
}

/* Time yoke's own training step (yk_engine_step: forward, backward, norm,
 * AdamW; lr 1e-4, no weight decay and no clipping, as the PyTorch side) on
 * one rank. */
static int bench_yoke(const char *model, const yk_model_config *mc, int B, int T, int threads, int steps, int warmup,
                      int profile, yoke_result *r, yk_diag *d) {
  yk_device *dev = NULL, *real = NULL;
  prof_dev *pd = NULL;
  int rc;
  if ((rc = yk_device_cpu_create(threads, YK_ISA_AUTO, &real, d)) != 0) return rc;
  dev = real;
  if (profile) {
    if (!(pd = calloc(1, sizeof *pd))) {
      yk_device_destroy(real);
      return yk_errorf(d, YK_ENOMEM, "out of memory for the profile");
    }
    pd->pub = *real;
    pd->pub.ops = &prof_ops;
    pd->in = real;
    dev = &pd->pub;
  }
  yk_config c;
  yk_config_defaults(&c);
  if ((rc = yk_bench_config_set(&c, d, "model.name=%s", model)) != 0 ||
      (rc = yk_bench_config_set(&c, d, "train.micro_batch=%d", B)) != 0 ||
      (rc = yk_bench_config_set(&c, d, "train.seq_len=%d", T)) != 0 ||
      (rc = yk_bench_config_set(&c, d, "optim.lr=1e-4")) != 0 ||
      (rc = yk_bench_config_set(&c, d, "optim.weight_decay=0")) != 0 ||
      (rc = yk_bench_config_set(&c, d, "optim.grad_clip=0")) != 0 ||
      (rc = yk_bench_config_set(&c, d, "optim.warmup_steps=0")) != 0)
    goto out;
  prof_steps ps = {pd, warmup};
  yk_bench_step_opts so = {.cfg = &c, .dev = dev, .warmup = warmup, .steps = steps,
                           .on_step = pd ? prof_on_step : NULL, .arg = &ps};
  if ((rc = yk_bench_engine_step_ms(&so, &r->ms, d)) != 0) goto out;
  double sec = r->ms / 1e3;
  r->tok_s = B * T / sec;
  r->gflops = yk_model_flops_per_token(mc, T) * B * T / sec * 1e-9;
  if (pd) prof_print(pd, T, threads, steps);
  r->peak = sgemm_peak(real, mc->channels, B * T, mc->padded_vocab_size);
  r->mfu = r->peak > 0 ? r->gflops / r->peak : 0;
out:
  free(pd);
  yk_device_destroy(real);
  return rc;
}

/* ---- --trace: the recorder's overhead ----------------------------------
 * Two engines on the same data, identical but for train.trace, step in turn
 * (off, on, off, on, ...) so drifts of the machine hit both alike; the
 * medians of their step times and the ratio are the overhead. The trace file
 * goes to a temporary directory; its size per step is printed too. */
static int bench_trace_ab(const char *model, int B, int T, int threads, int steps, int warmup, int json,
                          const char *detail, yk_diag *d) {
  char dir[64], shard[128], trace[128];
  snprintf(dir, sizeof dir, "/tmp/yk_bench_trace_XXXXXX");
  if (!mkdtemp(dir)) return yk_errorf_sys(d, YK_EIO, "cannot create a temporary directory");
  snprintf(shard, sizeof shard, "%s/train_000.bin", dir);
  snprintf(trace, sizeof trace, "%s/trace.json", dir);
  yk_device *dev = NULL;
  yk_engine *e[2] = {NULL, NULL};
  double *ms[2] = {calloc((size_t)steps, sizeof(double)), calloc((size_t)steps, sizeof(double))};
  yk_config c;
  yk_model_config mc;
  yk_logger log;
  yk_layout one;
  yk_logger_init(&log, -1, YK_LOG_WARN, stderr);
  yk_config_defaults(&c);
  int total = warmup + steps, rc;
  if (!ms[0] || !ms[1]) {
    rc = yk_errorf(d, YK_ENOMEM, "out of memory");
    goto out;
  }
  if ((rc = yk_bench_config_set(&c, d, "model.name=%s", model)) != 0 ||
      (rc = yk_bench_config_set(&c, d, "train.micro_batch=%d", B)) != 0 ||
      (rc = yk_bench_config_set(&c, d, "train.seq_len=%d", T)) != 0 ||
      (rc = yk_bench_config_set(&c, d, "train.steps=%d", total)) != 0 ||
      (rc = yk_bench_config_set(&c, d, "data.train=%s", shard)) != 0 || (rc = yk_model_config_from(&c, &mc, d)) != 0 ||
      (rc = yk_bench_synthetic_shard(shard, mc.vocab_size, (uint64_t)total * B * T + 1, d)) != 0 ||
      (rc = yk_device_cpu_create(threads, YK_ISA_AUTO, &dev, d)) != 0 ||
      (rc = yk_partition_layout(1, 1, 1, 0, &one, d)) != 0)
    goto out;
  for (int k = 0; k < 2; k++) {
    yk_config ck = c;
    if (k && (rc = yk_bench_config_set(&ck, d, "train.trace=%s", trace)) != 0) goto out;
    if (k && detail && (rc = yk_bench_config_set(&ck, d, "train.trace_detail=%s", detail)) != 0) goto out;
    yk_engine_opts eo = {.cfg = &ck, .layout = one, .dev = dev, .log = &log};
    if ((rc = yk_engine_open(&eo, &e[k], d)) != 0) goto out;
  }
  for (int s = 0; s < total; s++)
    for (int k = 0; k < 2; k++) {
      yk_step_stats st;
      if ((rc = yk_engine_step(e[k], s, &st, d)) != 0) goto out;
      if (s >= warmup) ms[k][s - warmup] = st.step_ms;
    }
  yk_engine_close(e[1]);
  e[1] = NULL;
  FILE *f = fopen(trace, "r");
  long bytes = 0;
  if (f && fseek(f, 0, SEEK_END) == 0) bytes = ftell(f);
  if (f) fclose(f);
  double off = yk_bench_median(ms[0], steps), on = yk_bench_median(ms[1], steps);
  printf("# yoke bench train --trace: model %s, B=%d, T=%d, %d threads, %d steps each after %d warm-up, taken in turn, "
         "train.trace_detail=%s\n", model, B, T, threads, steps, warmup, detail ? detail : "step");
  printf("  trace off %.3f ms/step, on %.3f ms/step (medians): ratio %.4f (%+.2f%%); trace %.1f KB per 100 steps\n", off,
         on, on / off, (on / off - 1) * 100, bytes / 1024.0 * 100 / total);
  if (json)
    printf("{\"bench\": \"trace\", \"model\": \"%s\", \"B\": %d, \"T\": %d, \"threads\": %d, \"steps\": %d, "
           "\"off_ms\": %.4f, \"on_ms\": %.4f, \"ratio\": %.5f, \"trace_bytes_per_step\": %.1f}\n",
           model, B, T, threads, steps, off, on, on / off, (double)bytes / total);
out:
  yk_engine_close(e[0]);
  yk_engine_close(e[1]);
  yk_device_destroy(dev);
  free(ms[0]);
  free(ms[1]);
  unlink(trace);
  unlink(shard);
  rmdir(dir);
  return rc;
}

void yk_bench_train_opts_default(yk_bench_train_opts *o) {
  *o = (yk_bench_train_opts){.model = "d12", .batch = 4, .seq_lens = {64, 256}, .nseq_lens = 2, .threads = {1, 2},
                             .nthreads = 2, .steps = 3, .warmup = 1};
}

int yk_bench_train(const yk_bench_train_opts *o) {
  const char *model = o->model;
  int B = (int)o->batch, steps = (int)o->steps, warmup = (int)o->warmup, torch = !o->no_torch, json = o->json,
      profile = o->profile;
  yk_diag d = {0};
  yk_model_config mc;
  int rc = yk_model_preset(model, &mc, &d);
  if (rc) {
    fprintf(stderr, "yoke bench train: %s\n", yk_diag_msg(&d, rc));
    return 2;
  }
  if (o->trace) {
    /* the overhead is small: at least 50 steps each for a stable median */
    rc = bench_trace_ab(model, B, o->seq_lens[0], o->threads[0], steps < 50 ? 50 : steps, warmup, json, o->trace_detail,
                        &d);
    if (rc) fprintf(stderr, "yoke bench train --trace: %s\n", yk_diag_msg(&d, rc));
    return rc ? 1 : 0;
  }
  if (torch && !yk_bench_torch_available()) {
    fprintf(stderr, "yoke bench train: /usr/bin/python3 has no torch (apt-get install python3-torch); "
                    "running yoke alone\n");
    torch = 0;
  }
  printf("# yoke bench train: model %s (%zu params), B=%d, %d timed steps after %d warm-up, median\n", model,
         yk_model_config_num_params(&mc), B, steps, warmup);
  printf("# %-4s %7s %10s %10s %9s %9s %6s %12s %12s %7s\n", "T", "threads", "ms/step", "tokens/s", "GFLOP/s",
         "sgemm", "MFU", "torch ms", "torch tok/s", "ratio");
  for (int ti = 0; ti < o->nseq_lens; ti++)
    for (int hi = 0; hi < o->nthreads; hi++) {
      int T = o->seq_lens[ti], th = o->threads[hi];
      if (T > mc.max_seq_len) {
        fprintf(stderr, "yoke bench train: --seq-len %d exceeds the model's max_seq_len %d\n", T, mc.max_seq_len);
        return 2;
      }
      yoke_result r = {0};
      if ((rc = bench_yoke(o->model, &mc, B, T, th, steps, warmup, profile, &r, &d)) != 0) {
        fprintf(stderr, "yoke bench train: %s\n", yk_diag_msg(&d, rc));
        return 1;
      }
      double tms = torch ? yk_bench_torch_ms(model, B, T, th, steps, warmup, 1) : NAN;
      double ttok = B * T / (tms * 1e-3);
      printf("  %-4d %7d %10.1f %10.1f %9.1f %9.1f %5.1f%% %12.1f %12.1f %6.2fx\n", T, th, r.ms, r.tok_s, r.gflops,
             r.peak, r.mfu * 100, tms, ttok, tms / r.ms);
      if (json) {
        printf("{\"impl\": \"yoke\", \"model\": \"%s\", \"threads\": %d, \"B\": %d, \"T\": %d, \"ms_per_step\": %.3f, "
               "\"tokens_per_s\": %.2f, \"gflops\": %.2f, \"sgemm_gflops\": %.2f, \"mfu\": %.4f}\n",
               model, th, B, T, r.ms, r.tok_s, r.gflops, r.peak, r.mfu);
        if (torch)
          printf("{\"impl\": \"pytorch\", \"model\": \"%s\", \"threads\": %d, \"B\": %d, \"T\": %d, \"ms_per_step\": "
                 "%.3f, \"tokens_per_s\": %.2f, \"mfu\": %.4f, \"ratio_yoke_over_pytorch\": %.3f}\n",
                 model, th, B, T, tms, ttok, r.peak > 0 ? yk_model_flops_per_token(&mc, T) * ttok * 1e-9 / r.peak : 0,
                 tms / r.ms);
      }
      fflush(stdout);
    }
  return 0;
}
