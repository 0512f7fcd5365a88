/* test_engine.c - the engine driven in-process, threads as ranks over the
 * in-process transport (as llm.c's test drives its trainer): one step is a
 * function call, so layouts can be compared with a single rank directly.
 *
 * The model has every tensor random (biases and LayerNorm weights too, from
 * a weights file) and sizes that do not divide evenly: V = 251 (padded to
 * 256), C = 48 with 3 heads, and 3 ranks, so ZeRO-1 slices and buckets have
 * remainders. Equivalence tolerance: the data-parallel sum reduces the same
 * global batch in another fp32 order, so per-step losses agree within 2e-5
 * absolute and the final weights within 1e-4 relative to the largest; ranks
 * of one run hold bitwise-identical weights; a run repeated is bitwise
 * identical. */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "yk_data.h"
#include "yk_engine.h"
#include "yk_model.h"

#define STEPS 4
#define MAX_STEPS 50
#define MAX_RANKS 8

static char tmpdir[64];
static float *init_params; /* the random initial weights (init.bin) */

/* A random token corpus (train and val shards) and a GPT-2 weights file with
 * every tensor random. */
static void fixtures(void) {
  if (tmpdir[0]) return;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/yk_engine_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(tmpdir));
  yk_rng r;
  yk_rng_seed(&r, 7);
  size_t n = 40000;
  uint16_t *tok = malloc(n * sizeof *tok);
  /* learnable: mostly the successor rule t -> 7t+3 mod 251, some noise */
  tok[0] = 1;
  for (size_t i = 1; i < n; i++)
    tok[i] = (uint16_t)(yk_rng_u64(&r) % 8 ? (7u * tok[i - 1] + 3u) % 251u : yk_rng_u64(&r) % 251);
  char path[128];
  yk_diag d = {0};
  snprintf(path, sizeof path, "%s/train_000.bin", tmpdir);
  ck_assert_int_eq(yk_data_shard_write(path, tok, n, &d), 0);
  snprintf(path, sizeof path, "%s/val_000.bin", tmpdir);
  ck_assert_int_eq(yk_data_shard_write(path, tok, 5000, &d), 0);
  free(tok);

  yk_model_config mc = {.layers = 3, .channels = 48, .heads = 3, .max_seq_len = 64, .vocab_size = 251};
  ck_assert_int_eq(yk_model_config_finish(&mc, &d), 0);
  yk_device *dev;
  yk_model *m;
  ck_assert_int_eq(yk_device_cpu_create(1, YK_ISA_AUTO, &dev, &d), 0);
  ck_assert_int_eq(yk_model_create(&mc, 2, 16, dev, &m, &d), 0);
  /* every tensor random: LayerNorm gains around 1, everything else around 0 */
  float *p = yk_model_params(m);
  const yk_tensor_desc *td;
  int nt = yk_model_tensors(m, &td);
  for (int t = 0; t < nt; t++) {
    size_t len = strlen(td[t].name);
    int gain = len >= 1 && td[t].name[len - 1] == 'w' && strstr(td[t].name, "ln");
    for (size_t i = 0; i < td[t].numel; i++)
      p[td[t].offset + i] = (gain ? 1.0f : 0.0f) + 0.05f * yk_rng_normal(&r);
  }
  snprintf(path, sizeof path, "%s/init.bin", tmpdir);
  ck_assert_int_eq(yk_model_weights_save(m, path, &d), 0);
  /* the same weights as 6 heads of 8 channels, for even tensor-parallel
   * degrees (the arena does not depend on the head count) */
  yk_model_config mc6 = mc;
  mc6.heads = 6;
  snprintf(path, sizeof path, "%s/init6.bin", tmpdir);
  ck_assert_int_eq(yk_model_weights_write(path, &mc6, p, &d), 0);
  init_params = malloc(yk_model_num_params(m) * sizeof(float));
  memcpy(init_params, p, yk_model_num_params(m) * sizeof(float));
  yk_model_destroy(m);
  yk_device_destroy(dev);
}

/* Set one config key from a printf format. */
static void set_key(yk_config *c, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  yk_diag d = {0};
  ck_assert_msg(yk_config_set(c, buf, &d) == 0, "%s: %s", buf, d.msg);
}

/* zero: the ZeRO stage (optim.zero) */
static void job_config(yk_config *c, int accum, const char *precision, int zero, double clip) {
  yk_config_defaults(c);
  const char *sets[] = {"model.name=tiny", "train.micro_batch=2", "train.seq_len=16", "train.threads=1",
                        "train.val_batches=3", "optim.lr=1e-2", "optim.warmup_steps=1", "optim.weight_decay=0.1",
                        "comm.timeout_ms=20000", "comm.bucket_kb=8", "log.level=warn", "loss_scale.init=1024"};
  for (size_t i = 0; i < YK_ARRAY_LEN(sets); i++) set_key(c, "%s", sets[i]);
  set_key(c, "data.train=%s/train_*.bin", tmpdir);
  set_key(c, "data.val=%s/val_*.bin", tmpdir);
  set_key(c, "train.init_weights=%s/init.bin", tmpdir);
  set_key(c, "train.steps=%d", STEPS);
  set_key(c, "train.grad_accum=%d", accum);
  set_key(c, "train.precision=%s", precision);
  set_key(c, "optim.grad_clip=%g", clip);
  set_key(c, "optim.zero=%d", zero);
  yk_diag d = {0};
  ck_assert_int_eq(yk_config_validate(c, &d), 0);
}

/* One rank's run: what it reports and the weights it ends with. */
typedef struct rank_run {
  int rank, world;
  const yk_config *cfg;
  yk_inproc_world *iw;
  yk_layout lay;      /* from the config's parallel.tensor */
  double loss[MAX_STEPS];
  double norm[MAX_STEPS]; /* gradient norms: a constant gradient scale that clipping and AdamW would hide shows here */
  int skipped[MAX_STEPS];
  int applied;   /* steps whose update was applied (fp16 skips overflowed ones) */
  double val;
  yk_engine_memory mem;
  float *params; /* final weights (copy) */
  size_t nparams;
  uint64_t checksum;
  int rc;
  yk_diag d;
} rank_run;

static void *run_rank(void *arg) {
  rank_run *r = arg;
  yk_logger log;
  yk_logger_init(&log, r->rank, YK_LOG_WARN, stderr);
  yk_bootstrap *b = NULL;
  yk_comm *comm = NULL, *dpc = NULL, *tpc = NULL;
  yk_device *dev = NULL;
  yk_engine *e = NULL;
  const int steps = (int)r->cfg->train.steps;
  int rc = yk_partition_layout(r->world, (int)r->cfg->parallel.tensor, (int)r->cfg->parallel.pipeline, r->rank,
                               &r->lay, &r->d);
  yk_comm *ppc = NULL;
  const yk_layout lay = r->lay;
  if (!rc && r->world > 1) {
    yk_comm_opts co;
    yk_comm_opts_from_config(&co, r->cfg);
    co.transport = "inproc";
    co.log = &log;
    rc = yk_bootstrap_inproc_create(r->iw, r->rank, &b, &r->d);
    if (!rc) rc = yk_comm_create(&co, b, &comm, &r->d);
    /* the layout's groups, as the daemon forms them */
    int colour, key;
    yk_partition_layout_group(&lay, YK_GROUP_TP, &colour, &key);
    if (!rc && lay.tp > 1) rc = yk_comm_split(comm, colour, key, &tpc, &r->d);
    yk_partition_layout_group(&lay, YK_GROUP_DP, &colour, &key);
    if (!rc && (lay.tp > 1 || lay.pp > 1) && lay.dp > 1) rc = yk_comm_split(comm, colour, key, &dpc, &r->d);
    yk_partition_layout_group(&lay, YK_GROUP_PP, &colour, &key);
    if (!rc && lay.pp > 1) rc = yk_comm_split(comm, colour, key, &ppc, &r->d);
    if (lay.tp == 1 && lay.pp == 1) dpc = comm;
  }
  if (!rc) rc = yk_device_cpu_create(1, YK_ISA_AUTO, &dev, &r->d);
  yk_engine_opts o = {.cfg = r->cfg, .layout = lay, .comms = {.dp = dpc, .tp = tpc, .pp = ppc}, .dev = dev, .log = &log};
  if (!rc) rc = yk_engine_open(&o, &e, &r->d);
  if (!rc) yk_engine_memory_of(e, &r->mem);
  for (int64_t s = 0; !rc && s < steps; s++) {
    yk_step_stats st;
    if (s > 0) {
      int stop = 0, code = 0;
      rc = yk_engine_boundary(e, s, &stop, &code, &r->d);
      if (!rc && stop) rc = yk_errorf(&r->d, YK_EINVAL, "unexpected stop");
    }
    if (!rc) rc = yk_engine_step(e, s, &st, &r->d);
    if (!rc) {
      r->loss[s] = st.loss;
      r->norm[s] = st.grad_norm;
      r->skipped[s] = st.skipped;
      r->applied += !st.skipped;
      if (st.step != s + 1 || !(st.step_ms > 0) || (!st.skipped && !isfinite(st.grad_norm)))
        rc = yk_errorf(&r->d, YK_EINVAL, "stats of step %lld: step %lld, %.3f ms, norm %f", (long long)s,
                       (long long)st.step, st.step_ms, st.grad_norm);
    }
  }
  if (!rc) rc = yk_engine_eval(e, &r->val, &r->d);
  if (!rc) rc = yk_engine_finish(e, steps, &r->d);
  if (!rc) {
    /* Under tensor parallelism data-parallel rank 0's group gathers the
     * whole model and its first rank writes it: only that rank reads it
     * back. */
    char path[128];
    snprintf(path, sizeof path, "%s/out-%d-%d.bin", tmpdir, r->world, r->rank);
    int writer = lay.tp_rank == 0 && (lay.tp == 1 || lay.dp_rank == 0);
    rc = yk_engine_save_weights(e, writer ? path : NULL, &r->d);
    r->checksum = yk_engine_params_checksum(e); /* collective under ZeRO-3, as the save */
    /* read the weights back through the model's own codec */
    yk_model_config mc;
    yk_model *m = NULL;
    if (!rc && writer) rc = yk_model_weights_read_config(path, &mc, &r->d);
    if (!rc && writer) rc = yk_model_create(&mc, 1, 1, dev, &m, &r->d);
    if (!rc && writer) rc = yk_model_weights_load(m, path, &r->d);
    if (!rc && writer) {
      r->nparams = yk_model_num_params(m);
      r->params = malloc(r->nparams * sizeof(float));
      memcpy(r->params, yk_model_params(m), r->nparams * sizeof(float));
    }
    yk_model_destroy(m);
    unlink(path);
  }
  yk_engine_close(e);
  yk_comm_destroy(ppc);
  yk_comm_destroy(tpc);
  if (dpc != comm) yk_comm_destroy(dpc);
  yk_comm_destroy(comm);
  if (b) yk_bootstrap_destroy(b);
  yk_device_destroy(dev);
  r->rc = rc;
  return NULL;
}

/* world threads as ranks of one job with this config. */
static void run_job(int world, const yk_config *cfg, rank_run *out) {
  yk_inproc_world *iw = NULL;
  yk_diag d = {0};
  if (world > 1) ck_assert_int_eq(yk_inproc_world_create(world, &iw, &d), 0);
  pthread_t th[MAX_RANKS];
  for (int r = 0; r < world; r++) {
    out[r] = (rank_run){.rank = r, .world = world, .cfg = cfg, .iw = iw};
    ck_assert_int_eq(pthread_create(&th[r], NULL, run_rank, &out[r]), 0);
  }
  for (int r = 0; r < world; r++) pthread_join(th[r], NULL);
  for (int r = 0; r < world; r++)
    if (out[r].rc) fprintf(stderr, "rank %d of %d: %s\n", r, world, out[r].d.msg);
  for (int r = 0; r < world; r++) ck_assert_msg(out[r].rc == 0, "rank %d of %d: %s", r, world, out[r].d.msg);
  if (iw) yk_inproc_world_destroy(iw);
}

static void free_job(rank_run *rr, int world) {
  for (int r = 0; r < world; r++) free(rr[r].params);
}

/* `world` ranks x accum `accum` against 1 rank x accum world*accum: losses
 * within loss_tol, every weight within w_tol (absolute). AdamW's first
 * steps move each weight by about lr whatever the gradient's size, so a
 * weight whose gradient is near zero can move either way when the summation
 * order changes: w_tol is a fraction of lr, not of the weights. */
/* A layout of `world` ranks with tensor-parallel degree tp (sequence
 * parallel if sp) against 1 rank with the same global batch: the loss of
 * step s within loss_tol (absolute; relative when rel) ... */
/* Settings beyond check_layout's arguments: `both` for both runs, `many` for
 * the run of `world` ranks only (NULL-terminated lists, may be NULL); *out
 * (may be NULL) gets the many-rank run's per-step losses and checksum. */
typedef struct layout_extra {
  const char *const *both, *const *many;
  int pp;
  double *losses;
  uint64_t *checksum;
} layout_extra;

static void check_layout_ex(int world, int tp, int sp, int steps, double lr, int accum, const char *precision,
                            int zero, double clip, double loss_tol, int rel, double w_tol, const layout_extra *x);

static void check_layout(int world, int tp, int sp, int steps, double lr, int accum, const char *precision, int zero,
                         double clip, double loss_tol, int rel, double w_tol) {
  check_layout_ex(world, tp, sp, steps, lr, accum, precision, zero, clip, loss_tol, rel, w_tol, NULL);
}

static void check_layout_ex(int world, int tp, int sp, int steps, double lr, int accum, const char *precision,
                            int zero, double clip, double loss_tol, int rel, double w_tol, const layout_extra *x) {
  fixtures();
  yk_config c1, cn;
  int dp = world / tp / (x && x->pp ? x->pp : 1);
  job_config(&c1, dp * accum, precision, zero, clip);
  job_config(&cn, accum, precision, zero, clip);
  set_key(&c1, "train.steps=%d", steps);
  set_key(&cn, "train.steps=%d", steps);
  set_key(&c1, "optim.lr=%g", lr);
  set_key(&cn, "optim.lr=%g", lr);
  set_key(&cn, "parallel.tensor=%d", tp);
  if (tp % 3) { /* 3 heads split only 3 ways */
    set_key(&c1, "train.init_weights=%s/init6.bin", tmpdir);
    set_key(&cn, "train.init_weights=%s/init6.bin", tmpdir);
  }
  set_key(&cn, "parallel.sequence=%s", sp ? "true" : "false");
  for (int i = 0; x && x->both && x->both[i]; i++) {
    set_key(&c1, "%s", x->both[i]);
    set_key(&cn, "%s", x->both[i]);
  }
  for (int i = 0; x && x->many && x->many[i]; i++) set_key(&cn, "%s", x->many[i]);
  if (x && x->pp) set_key(&cn, "parallel.pipeline=%d", x->pp);
  rank_run *one = calloc(1, sizeof *one), *many = calloc(MAX_RANKS, sizeof *many);
  run_job(1, &c1, one);
  run_job(world, &cn, many);
  for (int r = 0; r < world; r++) {
    /* data-parallel replicas hold the same bits; every rank the same loss */
    const rank_run *twin = &many[many[r].lay.tp_rank];
    ck_assert_msg(many[r].checksum == twin->checksum, "%s %d ranks (tp %d): rank %d holds other weights than rank %d",
                  precision, world, tp, r, twin->rank);
    ck_assert(many[r].val == many[0].val);
    for (int s = 0; s < steps; s++) ck_assert(many[r].loss[s] == many[0].loss[s]);
  }
  for (int s = 0; s < steps; s++) {
    double tol = rel ? loss_tol * fabs(one[0].loss[s]) * (s < 10 ? 1 : 10) : loss_tol;
    ck_assert_msg(fabs(one[0].loss[s] - many[0].loss[s]) <= tol,
                  "%s %d ranks (tp %d%s) x %d, zero %d: step %d loss %.7f, one rank %.7f", precision, world, tp,
                  sp ? " sp" : "", accum, zero, s, many[0].loss[s], one[0].loss[s]);
  }
  /* The gradient norm before clipping: relative, as the loss tolerance. */
  for (int s = 0; s < (steps < STEPS ? steps : STEPS); s++)
    ck_assert_msg(fabs(one[0].norm[s] - many[0].norm[s]) <= loss_tol * fabs(one[0].norm[s]) || isnan(one[0].norm[s]),
                  "%s %d ranks x %d: step %d gradient norm %.7g, one rank %.7g", precision, world, accum, s,
                  many[0].norm[s], one[0].norm[s]);
  for (int st = 0; x && x->losses && st < steps; st++) x->losses[st] = many[0].loss[st];
  if (x && x->checksum) *x->checksum = many[0].checksum;
  double maxdiff = 0;
  size_t worst = 0;
  for (size_t i = 0; i < one[0].nparams; i++) {
    double diff = fabs((double)one[0].params[i] - many[0].params[i]);
    if (diff > maxdiff) maxdiff = diff, worst = i;
  }
  ck_assert_msg(maxdiff <= w_tol, "%s %d ranks (tp %d): weight %zu differs by %g (%g vs %g)", precision, world, tp,
                worst, maxdiff, many[0].params[worst], one[0].params[worst]);
  ck_assert_msg(fabs(one[0].val - many[0].val) <= (rel ? 10 * loss_tol * fabs(one[0].val) : loss_tol),
                "val loss %.7f vs %.7f", many[0].val, one[0].val);
  /* training moved the weights: the comparison is not of two no-ops */
  ck_assert_msg(one[0].applied >= steps - 1 && many[0].applied == one[0].applied, "%s: %d and %d of %d steps applied",
                precision, one[0].applied, many[0].applied, steps);
  /* (init.bin's weights; the extra settings of pipeline runs start from the seed) */
  double moved = 0;
  for (size_t i = 0; !x && i < one[0].nparams; i++) moved += fabs((double)one[0].params[i] - init_params[i]);
  moved /= (double)one[0].nparams;
  ck_assert_msg(x || moved > 1e-3, "%s: the weights moved by %g on average", precision, moved);
  free_job(one, 1);
  free_job(many, world);
  free(one);
  free(many);
}

/* `world` data-parallel ranks x accum `accum` against 1 rank x accum
 * world*accum. */
static void check_equal_to_one_rank(int world, int accum, const char *precision, int shard, double clip,
                                    double loss_tol, double w_tol) {
  check_layout(world, 1, 0, STEPS, 1e-2, accum, precision, shard, clip, loss_tol, 0, w_tol);
}

/* lr is 1e-2: fp32 weights within a tenth of one step's move. */
START_TEST(test_dp2_equals_one_rank) { check_equal_to_one_rank(2, 1, "fp32", 1, 1.0, 2e-5, 1e-3); }
END_TEST

START_TEST(test_dp3_accum2_equals_one_rank) { check_equal_to_one_rank(3, 2, "fp32", 1, 1.0, 2e-5, 1e-3); }
END_TEST

/* Clipping off: nothing rescales the gradients before AdamW. */
START_TEST(test_dp3_unsharded_noclip_equals_one_rank) { check_equal_to_one_rank(3, 1, "fp32", 0, 0.0, 2e-5, 1e-3); }
END_TEST

/* 16-bit runs round the reduced gradients in 16 bits (once per hop) where
 * one rank accumulates them in fp32, and the weights themselves are 16-bit:
 * bf16's spacing at 1 is 2^-7, so a few of its steps. */
START_TEST(test_dp2_bf16_equals_one_rank) { check_equal_to_one_rank(2, 1, "bf16", 1, 1.0, 1e-2, 4.0 / 128); }
END_TEST

START_TEST(test_dp2_fp16_equals_one_rank) { check_equal_to_one_rank(2, 2, "fp16", 1, 1.0, 1e-2, 2e-2); }
END_TEST

/* Tensor parallelism (Megatron-style, vocabulary-parallel head) against one
 * rank: the group's sums run in another order than one rank's products, so
 * losses agree within 1e-5 relative over the first 10 steps and 1e-4 over
 * the rest; weights within a fraction of one AdamW step (lr 1e-2). V = 251
 * is not divisible by 2 or 3 (the vocabulary pieces are 128/128 of Vp 256,
 * the second with 5 padded rows, and 86/85/85 for 3). */
START_TEST(test_tp2_equals_one_rank) { check_layout(2, 2, 0, 12, 1e-2, 1, "fp32", 1, 1.0, 1e-5, 1, 2e-3); }
END_TEST

START_TEST(test_tp3_uneven_vocab_equals_one_rank) { check_layout(3, 3, 0, 4, 1e-2, 2, "fp32", 1, 1.0, 1e-5, 1, 2e-3); }
END_TEST

START_TEST(test_tp2_sequence_equals_one_rank) { check_layout(2, 2, 1, 12, 1e-2, 1, "fp32", 1, 1.0, 1e-5, 1, 2e-3); }
END_TEST

/* DP 2 x TP 2 with ZeRO-1 over the data-parallel pairs, and sequence
 * parallelism, for 50 steps at lr 3e-3 (at 1e-2 this tiny model's training
 * is chaotic enough that fp32 rounding differences grow past 1e-4 by step
 * 45 for any change of summation order). */
START_TEST(test_dp2_tp2_equals_one_rank) { check_layout(4, 2, 1, 50, 3e-3, 1, "fp32", 1, 1.0, 1e-5, 1, 1e-2); }
END_TEST

/* ZeRO inside the layout: stages 2 and 3 shard each tensor-parallel
 * rank's pieces over its data-parallel pair. */
START_TEST(test_dp2_tp2_zero3_equals_one_rank) { check_layout(4, 2, 1, 8, 1e-2, 2, "fp32", 3, 1.0, 1e-5, 1, 2e-3); }
END_TEST

START_TEST(test_dp2_tp2_zero2_bf16_equals_one_rank) {
  check_layout(4, 2, 0, 4, 1e-2, 1, "bf16", 2, 1.0, 1e-2, 0, 4.0 / 128);
}
END_TEST

/* 16-bit under TP2: activations and gradients rounded to 16 bits in both
 * runs, at different places of the sums. */
START_TEST(test_tp2_bf16_equals_one_rank) { check_layout(2, 2, 0, 4, 1e-2, 1, "bf16", 1, 1.0, 1e-2, 0, 4.0 / 128); }
END_TEST

START_TEST(test_tp2_fp16_equals_one_rank) { check_layout(2, 2, 1, 4, 1e-2, 2, "fp16", 1, 1.0, 1e-2, 0, 2e-2); }
END_TEST

/* ZeRO-1 holds the optimizer state of a rank's slice only: over 3 ranks the
 * slices add up to one copy, and the rest (the weights and gradients every
 * rank computes with) is whole on every rank. */
START_TEST(test_sharded_memory) {
  fixtures();
  const char *prec[] = {"fp32", "bf16"};
  for (int p = 0; p < 2; p++) {
    yk_config c1, c3;
    job_config(&c1, 3, prec[p], 1, 1.0);
    job_config(&c3, 1, prec[p], 1, 1.0);
    rank_run one[1], three[3];
    run_job(1, &c1, one);
    run_job(3, &c3, three);
    uint64_t n = one[0].nparams, moments = 0, master = 0;
    int mixed = p == 1;
    ck_assert_uint_eq(one[0].mem.moments, 8 * n);
    /* mixed precision below ZeRO-2: the fp32 arena is the master, the
     * gradients have one fp32 home: no master copy, no 16-bit arenas */
    ck_assert_uint_eq(one[0].mem.master, 0);
    ck_assert_uint_eq(one[0].mem.model_state, 16 * n);
    for (int r = 0; r < 3; r++) {
      moments += three[r].mem.moments;
      master += three[r].mem.master;
      ck_assert_uint_eq(three[r].mem.weights, 4 * n);
      ck_assert_uint_eq(three[r].mem.grads16 + three[r].mem.weights16, 0);
      ck_assert_uint_le(three[r].mem.moments, 8 * (n / 3 + 1));
    }
    ck_assert_uint_eq(moments, 8 * n);
    ck_assert_uint_eq(master, 0);
    (void)mixed;
    /* per parameter: 8 + 8/N in every precision (+ rounding of the slices) */
    double per = (double)three[0].mem.model_state / (double)n;
    ck_assert_msg(fabs(per - (8.0 + 8.0 / 3)) < 0.01, "%s: %.3f bytes per parameter", prec[p], per);
    free_job(one, 1);
    free_job(three, 3);
  }
}
END_TEST

/* ZeRO-2 and ZeRO-3 against one rank, at DP2 and DP4, with gradient
 * accumulation (every micro-batch reduce-scattered into the slices) and in
 * bf16. Same tolerances as ZeRO-1's. */
START_TEST(test_zero23_equal_one_rank) {
  for (int stage = 2; stage <= 3; stage++) {
    check_equal_to_one_rank(2, 1, "fp32", stage, 1.0, 2e-5, 1e-3);
    check_equal_to_one_rank(4, 1, "fp32", stage, 1.0, 2e-5, 1e-3);
    check_equal_to_one_rank(2, 2, "fp32", stage, 0.0, 2e-5, 1e-3);
    check_equal_to_one_rank(2, 1, "bf16", stage, 1.0, 1e-2, 4.0 / 128);
  }
  check_equal_to_one_rank(4, 2, "fp16", 3, 1.0, 1e-2, 2e-2);
}
END_TEST

/* With one micro-batch per step ZeRO-1, 2 and 3 reduce the same buckets in
 * the same order and gather the same bits: identical losses, norms and
 * weights, bit for bit, at DP2 and DP4, in fp32 and bf16. */
START_TEST(test_zero_stages_bitwise) {
  fixtures();
  const char *prec[] = {"fp32", "bf16"};
  int worlds[] = {2, 4};
  for (int p = 0; p < 2; p++)
    for (int w = 0; w < 2; w++) {
      int world = worlds[w];
      rank_run rr[3][MAX_RANKS];
      for (int stage = 1; stage <= 3; stage++) {
        yk_config c;
        job_config(&c, 1, prec[p], stage, 1.0);
        run_job(world, &c, rr[stage - 1]);
      }
      for (int stage = 2; stage <= 3; stage++) {
        rank_run *a = rr[0], *b = rr[stage - 1];
        for (int s = 0; s < STEPS; s++)
          ck_assert_msg(a[0].loss[s] == b[0].loss[s] && a[0].norm[s] == b[0].norm[s],
                        "%s dp%d ZeRO-%d step %d: loss %.9g norm %.9g, ZeRO-1 %.9g %.9g", prec[p], world, stage, s,
                        b[0].loss[s], b[0].norm[s], a[0].loss[s], a[0].norm[s]);
        for (int r = 0; r < world; r++)
          ck_assert_msg(b[r].checksum == a[0].checksum && b[r].val == a[0].val,
                        "%s dp%d ZeRO-%d rank %d: weights or validation differ from ZeRO-1", prec[p], world, stage, r);
        /* ZeRO-1 saves its fp32 arena, which in bf16 is the master; ZeRO-2/3
         * save the weights they compute with: its bf16 rounding */
        for (size_t i = 0; i < a[0].nparams; i++) {
          float want = p ? yk_bf16_to_f32(yk_f32_to_bf16(a[0].params[i])) : a[0].params[i];
          ck_assert_msg(memcmp(&want, &b[0].params[i], sizeof want) == 0, "%s dp%d ZeRO-%d: weight %zu %.9g, ZeRO-1 %.9g",
                        prec[p], world, stage, i, b[0].params[i], want);
        }
      }
      for (int stage = 0; stage < 3; stage++) free_job(rr[stage], world);
    }
}
END_TEST

/* Per-rank model state by stage against the formulas of docs/parallelism.md
 * (Psi = n parameters, s = this rank's slice, about Psi/N): fp32 16Psi,
 * 8Psi + 8s, 4Psi + 12s, 16s; mixed 16Psi, 8Psi + 8s, 2Psi + 16s, 18s.
 * ZeRO-2/3 state their working buffers; one rank is stage 0 whatever the
 * setting. */
START_TEST(test_zero_memory_formulas) {
  fixtures();
  const char *prec[] = {"fp32", "bf16"};
  for (int p = 0; p < 2; p++) {
    int mixed = p == 1;
    for (int stage = 0; stage <= 3; stage++) {
      yk_config c;
      job_config(&c, 1, prec[p], stage, 1.0);
      rank_run one[1], two[2];
      run_job(1, &c, one);
      run_job(2, &c, two);
      uint64_t n = one[0].nparams;
      ck_assert_uint_eq(one[0].mem.model_state, 16 * n);
      for (int r = 0; r < 2; r++) {
        const yk_engine_memory *m = &two[r].mem;
        uint64_t s = stage ? m->moments / 8 : n;
        if (stage) ck_assert_uint_le(s, n / 2 + 1);
        uint64_t want32[4] = {16 * n, 8 * n + 8 * s, 4 * n + 12 * s, 16 * s};
        uint64_t want16[4] = {16 * n, 8 * n + 8 * s, 2 * n + 16 * s, 18 * s};
        ck_assert_msg(m->model_state == (mixed ? want16 : want32)[stage], "%s ZeRO-%d rank %d: state %llu, formula %llu",
                      prec[p], stage, r, (unsigned long long)m->model_state,
                      (unsigned long long)(mixed ? want16 : want32)[stage]);
        /* stage 2/3 buffers: at least the embedding's gradients (wte + wpe) */
        if (stage >= 2) ck_assert_uint_ge(m->buffers, (256 + 64) * 48 * 4);
        if (stage < 2) ck_assert_uint_eq(m->buffers, 0);
      }
      free_job(one, 1);
      free_job(two, 2);
    }
  }
}
END_TEST

/* TP2 with sequence parallelism over 10 x 16 = 160 rows: the LM head's blocks of 128
 * and 32 rows, each combining its vocabulary-parallel cross-entropy over
 * the group, against one rank. */
START_TEST(test_tp2_head_blocks_equal_one_rank) {
  const char *both[] = {"train.micro_batch=10", NULL};
  layout_extra x = {.both = both};
  check_layout_ex(2, 2, 1, 4, 1e-2, 1, "fp32", 1, 1.0, 1e-5, 1, 2e-3, &x);
}
END_TEST

/* train.recompute selective and full against none: every layout's losses,
 * gradient norms, validation loss and final weights bit for bit (the
 * recomputed forward runs the same kernels on the same kept inputs), with
 * less model memory each time (the tiny model still keeps att of 2x4x16x16
 * per layer). One rank, TP2 with sequence parallelism, DP2 ZeRO-3 (the
 * provider lends the weights the recomputation reads) and PP2 (pipeline
 * slots), in fp32 and bf16 (one rank and TP2). */
START_TEST(test_recompute_bitwise) {
  fixtures();
  static const struct {
    const char *prec;
    int world;
    const char *sets[4];
  } cases[] = {
      {"fp32", 1, {NULL}},
      {"fp32", 2, {"parallel.tensor=2", "parallel.sequence=true", "train.init_weights=", NULL}},
      {"fp32", 2, {"optim.zero=3", NULL}},
      {"fp32", 2, {"parallel.pipeline=2", "model.layers=3", "train.init_weights=", "train.grad_accum=2"}},
      {"bf16", 1, {NULL}},
      {"bf16", 2, {"parallel.tensor=2", "train.init_weights=", NULL}},
  };
  const char *modes[] = {"none", "selective", "full"};
  for (size_t k = 0; k < YK_ARRAY_LEN(cases); k++) {
    rank_run *rr[3];
    for (int mo = 0; mo < 3; mo++) {
      yk_config c;
      job_config(&c, 1, cases[k].prec, 1, 1.0);
      for (int i = 0; i < 4 && cases[k].sets[i]; i++) set_key(&c, "%s", cases[k].sets[i]);
      set_key(&c, "train.recompute=%s", modes[mo]);
      rr[mo] = calloc(MAX_RANKS, sizeof *rr[mo]);
      run_job(cases[k].world, &c, rr[mo]);
    }
    const rank_run *a = rr[0];
    for (int mo = 1; mo < 3; mo++) {
      const rank_run *b = rr[mo];
      for (int s = 0; s < STEPS; s++)
        ck_assert_msg(a[0].loss[s] == b[0].loss[s] && a[0].norm[s] == b[0].norm[s],
                      "case %zu (%s) recompute=%s step %d: loss %.9g norm %.9g, none %.9g %.9g", k, cases[k].prec,
                      modes[mo], s, b[0].loss[s], b[0].norm[s], a[0].loss[s], a[0].norm[s]);
      ck_assert_msg(a[0].val == b[0].val && a[0].checksum == b[0].checksum,
                    "case %zu (%s) recompute=%s: validation or weights differ from none", k, cases[k].prec, modes[mo]);
      ck_assert(a[0].params && b[0].params && a[0].nparams == b[0].nparams);
      ck_assert(memcmp(a[0].params, b[0].params, a[0].nparams * sizeof(float)) == 0);
      ck_assert_msg(b[0].mem.model < rr[mo - 1][0].mem.model, "case %zu recompute=%s: model memory %llu, not below %s's %llu",
                    k, modes[mo], (unsigned long long)b[0].mem.model, modes[mo - 1],
                    (unsigned long long)rr[mo - 1][0].mem.model);
    }
    for (int mo = 0; mo < 3; mo++) {
      free_job(rr[mo], cases[k].world);
      free(rr[mo]);
    }
  }
}
END_TEST

/* Mixed precision against fp32 on one rank: fp16 gradients are unscaled
 * before the norm (a missing unscale is a factor of the loss scale, 1024
 * here) and bf16 ones are not scaled at all; the first step's norm agrees
 * within the 16-bit rounding of weights, activations and gradients. */
START_TEST(test_mixed_norms_match_fp32) {
  fixtures();
  yk_config c32, c16, cb16;
  job_config(&c32, 2, "fp32", 1, 1.0);
  job_config(&c16, 2, "fp16", 1, 1.0);
  job_config(&cb16, 2, "bf16", 1, 1.0);
  rank_run a[1], b[1], c[1];
  run_job(1, &c32, a);
  run_job(1, &c16, b);
  run_job(1, &cb16, c);
  ck_assert(!b[0].skipped[0]);
  ck_assert_msg(fabs(b[0].norm[0] / a[0].norm[0] - 1) < 0.01, "fp16 norm %g, fp32 %g", b[0].norm[0], a[0].norm[0]);
  ck_assert_msg(fabs(c[0].norm[0] / a[0].norm[0] - 1) < 0.05, "bf16 norm %g, fp32 %g", c[0].norm[0], a[0].norm[0]);
  free_job(a, 1);
  free_job(b, 1);
  free_job(c, 1);
}
END_TEST

/* An fp16 loss scale far too large overflows: the step is skipped on every
 * rank (the weights stay bitwise as they were) and the scaler backs off. */
START_TEST(test_fp16_overflow_skips) {
  fixtures();
  yk_config c;
  job_config(&c, 1, "fp16", 1, 1.0);
  set_key(&c, "loss_scale.init=1e30");
  set_key(&c, "loss_scale.hysteresis=1");
  set_key(&c, "loss_scale.backoff=1e-6");
  rank_run rr[2];
  run_job(2, &c, rr);
  ck_assert(rr[0].skipped[0] && rr[1].skipped[0]);
  ck_assert_uint_eq(rr[0].checksum, rr[1].checksum);
  if (rr[0].applied == 0) {
    /* the saved arena is the master: bitwise the initial weights */
    for (size_t i = 0; i < rr[0].nparams; i++)
      ck_assert_msg(memcmp(&rr[0].params[i], &init_params[i], sizeof(float)) == 0,
                    "weight %zu changed in a run of skipped steps", i);
  } else {
    /* the scale came down far enough to apply the later steps */
    for (size_t i = 0; i < rr[0].nparams; i++) ck_assert(isfinite(rr[0].params[i]));
  }
  free_job(rr, 2);
}
END_TEST

/* fp16 over ranks: each rank's 16-bit gradients are divided by the ranks
 * before they are summed, so the reduction overflows only where the mean
 * itself would. Find the largest power-of-two loss scale whose first step
 * one rank with the whole batch applies (there the largest gradient times
 * the scale lies in [32768, 65504): a plain 16-bit sum of two ranks' similar
 * gradients overflows); 2 ranks must apply that step too. */
START_TEST(test_fp16_mean_overflows_like_one_rank) {
  fixtures();
  int k = 30;
  for (; k > 0; k--) {
    yk_config c1;
    job_config(&c1, 2, "fp16", 1, 1.0);
    set_key(&c1, "loss_scale.init=%.17g", ldexp(1.0, k));
    rank_run one[1];
    run_job(1, &c1, one);
    int applied = !one[0].skipped[0];
    free_job(one, 1);
    if (applied) break;
  }
  ck_assert_msg(k > 0 && k < 30, "no loss scale in 2^1..2^29 separates overflow (k = %d)", k);
  yk_config cn;
  job_config(&cn, 1, "fp16", 1, 1.0);
  set_key(&cn, "loss_scale.init=%.17g", ldexp(1.0, k));
  rank_run many[2];
  run_job(2, &cn, many);
  ck_assert_msg(!many[0].skipped[0], "2 ranks overflow at loss scale 2^%d, where one rank does not", k);
  free_job(many, 2);
}
END_TEST

/* The same job twice gives the same bits. */
START_TEST(test_deterministic) {
  fixtures();
  yk_config c;
  job_config(&c, 1, "fp32", 1, 1.0);
  rank_run a[3], b[3];
  run_job(3, &c, a);
  run_job(3, &c, b);
  for (int r = 0; r < 3; r++) ck_assert_uint_eq(a[r].checksum, b[r].checksum);
  for (int s = 0; s < STEPS; s++) ck_assert(a[0].loss[s] == b[0].loss[s]);
  free_job(a, 3);
  free_job(b, 3);
}
END_TEST

/* The engine refuses layouts it cannot run and communicators that do not
 * match the layout, with a sentence naming the values. */
START_TEST(test_open_refuses_bad_layouts) {
  fixtures();
  yk_config c;
  job_config(&c, 1, "fp32", 1, 1.0);
  yk_device *dev;
  yk_diag d = {0};
  ck_assert_int_eq(yk_device_cpu_create(1, YK_ISA_AUTO, &dev, &d), 0);
  yk_layout lay;
  ck_assert_int_eq(yk_partition_layout(2, 1, 2, 0, &lay, &d), 0);
  yk_engine_opts o = {.cfg = &c, .layout = lay, .dev = dev};
  yk_engine *e = NULL;
  ck_assert_int_eq(yk_engine_open(&o, &e, &d), YK_EINVAL); /* pipeline stages without their communicator */
  ck_assert_msg(strstr(d.msg, "pipeline communicator"), "%s", d.msg);
  yk_engine_close(e);
  /* ZeRO-2/3 with a pipeline: one line naming both keys */
  ck_assert_int_eq(yk_partition_layout(4, 1, 2, 0, &lay, &d), 0);
  o.layout = lay;
  set_key(&c, "optim.zero=3");
  ck_assert_int_eq(yk_engine_open(&o, &e, &d), YK_EUNSUPPORTED);
  ck_assert_msg(strstr(d.msg, "optim.zero=3 with parallel.pipeline=2") && strstr(d.msg, "optim.zero=1"), "%s", d.msg);
  yk_engine_close(e);
  set_key(&c, "optim.zero=1");
  ck_assert_int_eq(yk_partition_layout(2, 2, 1, 0, &lay, &d), 0);
  o.layout = lay; /* tensor parallel without its communicator */
  ck_assert_int_eq(yk_engine_open(&o, &e, &d), YK_EINVAL);
  ck_assert_msg(strstr(d.msg, "tensor-parallel communicator"), "%s", d.msg);
  yk_engine_close(e);
  /* splits that cannot work, before anything is allocated: heads 3 over 2
   * ranks; sequence parallelism with T = 16 over 3 */
  yk_model_config mc = {.layers = 3, .channels = 48, .heads = 3, .max_seq_len = 64, .vocab_size = 251};
  ck_assert_int_eq(yk_model_config_finish(&mc, &d), 0);
  ck_assert_int_eq(yk_model_tp_check(&mc, 2, 16, 2, 0, &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "parallel.tensor=2") && strstr(d.msg, "model.heads=3") && strstr(d.msg, "1, 3"), "%s",
                d.msg);
  ck_assert_int_eq(yk_model_tp_check(&mc, 2, 16, 3, 0, &d), 0);
  ck_assert_int_eq(yk_model_tp_check(&mc, 2, 16, 3, 1, &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "train.seq_len=16") && strstr(d.msg, "parallel.sequence=false"), "%s", d.msg);
  ck_assert_int_eq(yk_partition_layout(2, 1, 1, 1, &lay, &d), 0);
  o.layout = lay; /* two ranks but no communicator */
  ck_assert_int_eq(yk_engine_open(&o, &e, &d), YK_EINVAL);
  ck_assert_msg(strstr(d.msg, "communicator"), "%s", d.msg);
  yk_engine_close(e);
  yk_device_destroy(dev);
}
END_TEST

/* Schedules are data: the data-parallel one passes the static checks, and
 * broken ones are refused naming the operation. */
START_TEST(test_schedule_checks) {
  yk_schedule *s = malloc(sizeof *s);
  yk_diag d = {0};
  char buf[512];
  for (int accum = 1; accum <= 40; accum++) {
    ck_assert_int_eq(yk_engine_schedule_dp(accum, 5, s, &d), 0);
    ck_assert_msg(yk_engine_schedule_check(s, 5, &d) == 0, "accum %d: %s", accum, d.msg);
    ck_assert_int_eq(s->n, 2 * accum + 2);
  }
  ck_assert_int_eq(yk_engine_schedule_dp(2, 5, s, &d), 0);
  yk_engine_schedule_describe(s, buf, sizeof buf);
  ck_assert_str_eq(buf, "F0 B0 F1 B1+ R U");
  ck_assert_int_eq(yk_engine_schedule_dp(0, 5, s, &d), YK_ECONFIG);
  /* backward before forward */
  ck_assert_int_eq(yk_engine_schedule_dp(2, 5, s, &d), 0);
  yk_sched_op t = s->ops[0];
  s->ops[0] = s->ops[1];
  s->ops[1] = t;
  ck_assert_int_eq(yk_engine_schedule_check(s, 5, &d), YK_EINVAL);
  ck_assert_msg(strstr(d.msg, "op 0") && strstr(d.msg, "before its forward"), "%s", d.msg);
  /* the reducing backward is not the last backward */
  ck_assert_int_eq(yk_engine_schedule_dp(2, 5, s, &d), 0);
  s->ops[1].reduce = 1;
  s->ops[3].reduce = 0;
  ck_assert_int_eq(yk_engine_schedule_check(s, 5, &d), YK_EINVAL);
  ck_assert_msg(strstr(d.msg, "after the reducing one"), "%s", d.msg);
  /* two reducing backwards */
  s->ops[3].reduce = 1;
  ck_assert_int_eq(yk_engine_schedule_check(s, 5, &d), YK_EINVAL);
  /* a layer range outside the model, a partial range (pipeline), no update */
  ck_assert_int_eq(yk_engine_schedule_dp(2, 5, s, &d), 0);
  s->ops[2].layer_last = 6;
  ck_assert_int_eq(yk_engine_schedule_check(s, 5, &d), YK_EINVAL);
  s->ops[2].layer_last = 3;
  ck_assert_int_eq(yk_engine_schedule_check(s, 5, &d), YK_EUNSUPPORTED);
  ck_assert_int_eq(yk_engine_schedule_dp(2, 5, s, &d), 0);
  s->n--;
  ck_assert_int_eq(yk_engine_schedule_check(s, 5, &d), YK_EINVAL);
  free(s);
}
END_TEST


/* Every pipeline schedule for P <= 8, micro-batches <= 32, V <= 4 passes the
 * whole-pipeline checker (no deadlock with YK_PIPE_MAX_SENDS sends in flight,
 * forward before backward, the memory bound), and 1F1B keeps at most P
 * micro-batches alive on the first stage. */
static void pipe_plan_one_layer_chunks(yk_pipe_plan *p, yk_pipe_kind k, int P, int V, int m) {
  memset(p, 0, sizeof *p);
  p->kind = k;
  p->stages = P;
  p->vstages = V;
  p->micro_batches = m;
  p->layers = P * V;
  for (int c = 0; c <= P * V; c++) p->bounds[c] = c;
}

START_TEST(test_pipeline_schedules_all_valid) {
  yk_schedule *all = malloc(8 * sizeof *all);
  yk_diag d = {0};
  yk_pipe_plan p;
  int checked = 0;
  for (int P = 1; P <= 8; P++)
    for (int V = 1; V <= 4; V++)
      for (int m = 1; m <= 32; m++)
        for (int k = YK_PIPE_GPIPE; k <= YK_PIPE_INTERLEAVED; k++) {
          if ((k == YK_PIPE_1F1B && V > 1) || (k == YK_PIPE_INTERLEAVED && V < 2) || (V > 1 && m % P)) continue;
          pipe_plan_one_layer_chunks(&p, (yk_pipe_kind)k, P, V, m);
          for (int s = 0; s < P; s++)
            ck_assert_msg(yk_engine_schedule_pipeline(&p, s, &all[s], &d) == 0, "%s P%d V%d m%d: %s",
                          yk_engine_pipe_kind_name(p.kind), P, V, m, d.msg);
          ck_assert_msg(yk_engine_schedule_check_pipeline(&p, all, YK_PIPE_MAX_SENDS, &d) == 0, "%s P%d V%d m%d: %s",
                        yk_engine_pipe_kind_name(p.kind), P, V, m, d.msg);
          if (k == YK_PIPE_1F1B) ck_assert_int_le(yk_engine_schedule_max_alive(&all[0]), P);
          if (k == YK_PIPE_GPIPE && V == 1) ck_assert_int_eq(yk_engine_schedule_max_alive(&all[0]), m);
          checked++;
        }
  ck_assert_int_gt(checked, 1000);
  free(all);
}
END_TEST

/* Broken schedules are refused, naming the op. */
START_TEST(test_pipeline_schedules_mutated) {
  yk_schedule *all = malloc(4 * sizeof *all);
  yk_diag d = {0};
  yk_pipe_plan p;
  char buf[512];
  pipe_plan_one_layer_chunks(&p, YK_PIPE_1F1B, 2, 1, 4);
  for (int s = 0; s < 2; s++) ck_assert_int_eq(yk_engine_schedule_pipeline(&p, s, &all[s], &d), 0);
  yk_engine_schedule_describe(&all[0], buf, sizeof buf);
  ck_assert_str_eq(buf, "F0 sa0 F1 sa1 rg0 B0 F2 sa2 rg1 B1 F3 sa3 rg2 B2 rg3 B3+ R U");
  yk_engine_schedule_describe(&all[1], buf, sizeof buf);
  ck_assert_str_eq(buf, "ra0 F0 B0 sg0 ra1 F1 B1 sg1 ra2 F2 B2 sg2 ra3 F3 B3+ sg3 R U");
  /* a receive turned into a send (swapped direction) */
  all[1].ops[0].kind = YK_SCHED_SEND_ACT;
  ck_assert_int_eq(yk_engine_schedule_check_pipeline(&p, all, YK_PIPE_MAX_SENDS, &d), YK_EINVAL);
  ck_assert_msg(strstr(d.msg, "stage 1 op 0 (SEND_ACT micro 0"), "%s", d.msg);
  /* a dropped send: the receiver waits forever */
  ck_assert_int_eq(yk_engine_schedule_pipeline(&p, 1, &all[1], &d), 0);
  memmove(&all[0].ops[1], &all[0].ops[2], sizeof(yk_sched_op) * (size_t)(all[0].n - 2));
  all[0].n--;
  ck_assert_int_eq(yk_engine_schedule_check_pipeline(&p, all, YK_PIPE_MAX_SENDS, &d), YK_EINVAL);
  ck_assert_msg(strstr(d.msg, "stage 0: micro-batch 0 of chunk 0 has no send of its output"), "%s", d.msg);
  /* two sends of one channel swapped: the receiver gets micro-batch 1 first */
  ck_assert_int_eq(yk_engine_schedule_pipeline(&p, 0, &all[0], &d), 0);
  yk_sched_op t = all[0].ops[1];
  all[0].ops[1] = all[0].ops[3];
  all[0].ops[3] = t;
  ck_assert_int_eq(yk_engine_schedule_check_pipeline(&p, all, YK_PIPE_MAX_SENDS, &d), YK_EINVAL);
  ck_assert_msg(strstr(d.msg, "before its forward") && strstr(d.msg, "stage 0 op 1"), "%s", d.msg);
  /* the same, with both forwards first: a well-formed list whose messages cross */
  ck_assert_int_eq(yk_engine_schedule_pipeline(&p, 0, &all[0], &d), 0);
  t = all[0].ops[1]; /* F0 sa0 F1 sa1 -> F0 F1 sa1 sa0 */
  all[0].ops[1] = all[0].ops[2];
  all[0].ops[2] = all[0].ops[3];
  all[0].ops[3] = t;
  all[0].ops[2].micro = 1;
  ck_assert_int_eq(yk_engine_schedule_check_pipeline(&p, all, YK_PIPE_MAX_SENDS, &d), YK_EINVAL);
  ck_assert_msg(strstr(d.msg, "stage 1 op 0 (RECV_ACT micro 0") && strstr(d.msg, "same order"), "%s", d.msg);
  /* a receive moved after the backward that needs it: deadlock-free but wrong */
  ck_assert_int_eq(yk_engine_schedule_pipeline(&p, 0, &all[0], &d), 0);
  t = all[0].ops[4]; /* rg0 B0 -> B0 rg0 */
  all[0].ops[4] = all[0].ops[5];
  all[0].ops[5] = t;
  ck_assert_int_eq(yk_engine_schedule_check_pipeline(&p, all, YK_PIPE_MAX_SENDS, &d), YK_EINVAL);
  ck_assert_msg(strstr(d.msg, "stage 0 op 4 (BACKWARD micro 0") && strstr(d.msg, "gradient arrived"), "%s", d.msg);
  /* both stages receive before they send: a real deadlock */
  pipe_plan_one_layer_chunks(&p, YK_PIPE_1F1B, 2, 1, 1);
  for (int s = 0; s < 2; s++) ck_assert_int_eq(yk_engine_schedule_pipeline(&p, s, &all[s], &d), 0);
  /* stage 1: ra0 F0 B0 sg0 R U; stage 0: F0 sa0 rg0 B0 R U -> rg0 before sa0 */
  t = all[0].ops[1];
  all[0].ops[1] = all[0].ops[2];
  all[0].ops[2] = t;
  ck_assert_int_eq(yk_engine_schedule_check_pipeline(&p, all, YK_PIPE_MAX_SENDS, &d), YK_EINVAL);
  ck_assert_msg(strstr(d.msg, "deadlock") && strstr(d.msg, "stage 0 op 1 (RECV_GRAD micro 0"), "%s", d.msg);
  free(all);
}
END_TEST

/* Stage assignment: by cost (the head's cost moves layers off the last stage),
 * or stage_layers, checked. */
START_TEST(test_pipeline_plan) {
  yk_config c;
  yk_diag d = {0};
  yk_config_defaults(&c);
  yk_model_config mc;
  ck_assert_int_eq(yk_model_preset("d12", &mc, &d), 0);
  ck_assert_int_eq(yk_model_config_finish(&mc, &d), 0);
  int b[9];
  ck_assert_int_eq(yk_engine_pipe_balance(&mc, 1024, 2, b, &d), 0);
  ck_assert_int_eq(b[0], 0);
  ck_assert_int_eq(b[2], 12);
  ck_assert_int_gt(b[1], 6); /* the LM head (C x 50257) costs about 4 blocks */
  mc.layers = 7;
  ck_assert_int_eq(yk_engine_pipe_balance(&mc, 64, 3, b, &d), 0);
  for (int i = 0; i < 3; i++) ck_assert_int_ge(b[i + 1] - b[i], 1);
  ck_assert_int_eq(yk_engine_pipe_balance(&mc, 64, 8, b, &d), YK_ECONFIG);
  yk_pipe_plan p;
  c.parallel.pipeline = 2;
  c.train.grad_accum = 4;
  ck_assert_int_eq(yk_engine_pipe_plan(&c, &mc, &p, &d), 0);
  ck_assert_int_eq(p.kind, YK_PIPE_1F1B);
  snprintf(c.parallel.stage_layers, sizeof c.parallel.stage_layers, "5,2");
  ck_assert_int_eq(yk_engine_pipe_plan(&c, &mc, &p, &d), 0);
  ck_assert_int_eq(p.bounds[1], 5);
  snprintf(c.parallel.stage_layers, sizeof c.parallel.stage_layers, "5,3");
  ck_assert_int_eq(yk_engine_pipe_plan(&c, &mc, &p, &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "sums to 8 layers, the model has 7"), "%s", d.msg);
  snprintf(c.parallel.stage_layers, sizeof c.parallel.stage_layers, "7,0");
  ck_assert_int_eq(yk_engine_pipe_plan(&c, &mc, &p, &d), YK_ECONFIG);
  c.parallel.stage_layers[0] = '\0';
  c.parallel.virtual_stages = 2;
  c.train.grad_accum = 3;
  ck_assert_int_eq(yk_engine_pipe_plan(&c, &mc, &p, &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "train.grad_accum=3"), "%s", d.msg);
  c.train.grad_accum = 4;
  ck_assert_int_eq(yk_engine_pipe_plan(&c, &mc, &p, &d), 0);
  ck_assert_int_eq(p.kind, YK_PIPE_INTERLEAVED);
  snprintf(c.parallel.schedule, sizeof c.parallel.schedule, "1f1b");
  ck_assert_int_eq(yk_engine_pipe_plan(&c, &mc, &p, &d), YK_ECONFIG);
}
END_TEST


/* Pipeline layouts against one rank: a 3- or 4-block model from the seed
 * (every tensor random), per-step loss within 1e-5 relative over 10 steps. */
static void check_pipeline(int world, int tp, int pp, int layers, int accum, const char *const *many, double *losses,
                           uint64_t *checksum) {
  char lay[32];
  snprintf(lay, sizeof lay, "model.layers=%d", layers);
  const char *both[] = {lay, "train.init_weights=", NULL};
  layout_extra x = {.both = both, .many = many, .pp = pp, .losses = losses, .checksum = checksum};
  check_layout_ex(world, tp, 0, 10, 1e-2, accum, "fp32", 1, 1.0, 1e-5, 1, 2e-3, &x);
}

/* PP2 with an uneven split of 3 blocks; 1F1B and GPipe bitwise identical. */
START_TEST(test_pp2_uneven_equals_one_rank) {
  double l1[10], lg[10];
  uint64_t h1 = 0, hg = 1;
  const char *f1b[] = {"parallel.schedule=1f1b", NULL}, *gp[] = {"parallel.schedule=gpipe", NULL};
  check_pipeline(2, 1, 2, 3, 4, f1b, l1, &h1);
  check_pipeline(2, 1, 2, 3, 4, gp, lg, &hg);
  for (int s = 0; s < 10; s++) ck_assert_msg(l1[s] == lg[s], "step %d: 1F1B %.9g, GPipe %.9g", s, l1[s], lg[s]);
  ck_assert_msg(h1 == hg, "1F1B and GPipe end with different weights");
}
END_TEST

START_TEST(test_pp2_stage_layers_equals_one_rank) {
  const char *sl[] = {"parallel.stage_layers=1,2", NULL};
  check_pipeline(2, 1, 2, 3, 3, sl, NULL, NULL);
}
END_TEST

START_TEST(test_pp3_equals_one_rank) { check_pipeline(3, 1, 3, 4, 3, NULL, NULL, NULL); }
END_TEST

START_TEST(test_pp2_interleaved_equals_one_rank) {
  const char *v2[] = {"parallel.virtual_stages=2", NULL};
  check_pipeline(2, 1, 2, 4, 4, v2, NULL, NULL);
}
END_TEST

START_TEST(test_dp2_pp2_equals_one_rank) { check_pipeline(4, 1, 2, 3, 2, NULL, NULL, NULL); }
END_TEST

START_TEST(test_tp2_pp2_equals_one_rank) { check_pipeline(4, 2, 2, 3, 2, NULL, NULL, NULL); }
END_TEST

/* Every kind of parallelism at once: 8 ranks as threads (oversubscribed),
 * at lr 3e-3 as DP2 x TP2 (at 1e-2 the three reorderings of the sums grow
 * past 1e-5 by step 8). */
START_TEST(test_dp2_tp2_pp2_equals_one_rank) {
  const char *both[] = {"model.layers=3", "train.init_weights=", NULL};
  layout_extra x = {.both = both, .pp = 2};
  check_layout_ex(8, 2, 0, 10, 3e-3, 2, "fp32", 1, 1.0, 1e-5, 1, 2e-3, &x);
}
END_TEST

/* PP2 (uneven 3 blocks, 1F1B) for 50 steps at lr 3e-3, as DP2 x TP2:
 * losses within 1e-5 relative over 10 steps, 1e-4 over 50. */
START_TEST(test_pp2_50_steps_equals_one_rank) {
  const char *both[] = {"model.layers=3", "train.init_weights=", NULL};
  layout_extra x = {.both = both, .pp = 2};
  check_layout_ex(2, 1, 0, 50, 3e-3, 4, "fp32", 1, 1.0, 1e-5, 1, 1e-2, &x);
}
END_TEST

/* A stage holds only its blocks' weights, gradients and AdamW moments (the
 * embedding region on both ends, wte being the tied LM head): PP2's stages
 * each hold about half of one rank's model state, and together exactly one
 * rank's plus the last stage's copy of the embedding region. */
START_TEST(test_pp2_memory) {
  fixtures();
  yk_config c1, c2;
  for (int i = 0; i < 2; i++) {
    yk_config *c = i ? &c2 : &c1;
    job_config(c, 2, "fp32", 1, 1.0);
    set_key(c, "model.layers=8");
    set_key(c, "train.init_weights=");
    set_key(c, "train.steps=1");
  }
  set_key(&c2, "parallel.pipeline=2");
  rank_run one[1], two[2];
  run_job(1, &c1, one);
  run_job(2, &c2, two);
  yk_model_config mc;
  yk_diag d = {0};
  ck_assert_int_eq(yk_model_config_from(&c1, &mc, &d), 0);
  uint64_t embed = (uint64_t)(mc.padded_vocab_size + mc.max_seq_len) * (uint64_t)mc.channels;
  uint64_t all = one[0].mem.model_state;
  for (int s = 0; s < 2; s++)
    ck_assert_msg(two[s].mem.model_state < 0.65 * (double)all, "stage %d holds %llu bytes of model state, one rank %llu",
                  s, (unsigned long long)two[s].mem.model_state, (unsigned long long)all);
  /* fp32: 4 bytes of weights, 4 of gradients, 8 of moments per parameter */
  ck_assert_uint_eq(two[0].mem.model_state + two[1].mem.model_state, all + 16 * embed);
  free_job(one, 1);
  free_job(two, 2);
}
END_TEST

/* The one stats struct gives the log line and the JSON line. */
START_TEST(test_stats_lines) {
  yk_step_stats s = {.step = 3, .loss = 2.5, .lr = 1e-3, .grad_norm = 0.5, .step_ms = 10, .comm_wait_ms = 1,
                     .tokens_per_s = 1000, .allreduce_bytes = 64, .loss_scale = 1};
  char buf[1024];
  yk_step_stats_text(&s, 10, buf, sizeof buf);
  ck_assert_msg(strstr(buf, "step 3/10 | loss 2.5000") && strstr(buf, "comm wait 1.0"), "%s", buf);
  yk_step_stats_json(&s, buf, sizeof buf);
  ck_assert_msg(buf[0] == '{' && strstr(buf, "\"step\": 3") && strstr(buf, "\"allreduce_bytes\": 64") &&
                    strstr(buf, "\"skipped\": false"),
                "%s", buf);
  s.skipped = 1;
  s.grad_norm = NAN;
  yk_step_stats_json(&s, buf, sizeof buf);
  ck_assert_msg(strstr(buf, "\"grad_norm\": 0.000000") && strstr(buf, "\"skipped\": true"), "%s", buf);
}
END_TEST

int main(void) {
  /* ctest runs this once per kernel variant (YK_ISA): one this CPU cannot
   * run is a skip, not a second run of the portable code. */
  const char *isa = getenv("YK_ISA");
  yk_isa want;
  if (isa && yk_isa_parse(isa, &want) == 0 && want != YK_ISA_AUTO && !yk_isa_supported(want)) {
    printf("skipped: this CPU cannot run the %s kernels\n", isa);
    return 77;
  }
  Suite *s = suite_create("engine");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 240);
  /* ZeRO-2/3 (CK_RUN_CASE=zero runs only these) */
  TCase *tz = tcase_create("zero");
  tcase_set_timeout(tz, 240);
  /* pipeline parallelism (CK_RUN_CASE=pipeline runs only these) */
  TCase *trc = tcase_create("recompute");
  tcase_set_timeout(trc, 240);
  tcase_add_test(trc, test_recompute_bitwise);
  tcase_add_test(trc, test_tp2_head_blocks_equal_one_rank);
  TCase *tpp = tcase_create("pipeline");
  tcase_set_timeout(tpp, 240);
  tcase_add_test(tpp, test_pipeline_schedules_all_valid);
  tcase_add_test(tpp, test_pipeline_schedules_mutated);
  tcase_add_test(tpp, test_pipeline_plan);
  tcase_add_test(tpp, test_pp2_uneven_equals_one_rank);
  tcase_add_test(tpp, test_pp2_stage_layers_equals_one_rank);
  tcase_add_test(tpp, test_pp3_equals_one_rank);
  tcase_add_test(tpp, test_pp2_interleaved_equals_one_rank);
  tcase_add_test(tpp, test_dp2_pp2_equals_one_rank);
  tcase_add_test(tpp, test_tp2_pp2_equals_one_rank);
  tcase_add_test(tpp, test_pp2_memory);
  tcase_add_test(tpp, test_dp2_tp2_pp2_equals_one_rank);
  tcase_add_test(tpp, test_pp2_50_steps_equals_one_rank);
  tcase_add_test(tz, test_zero_stages_bitwise);
  tcase_add_test(tz, test_zero23_equal_one_rank);
  tcase_add_test(tz, test_zero_memory_formulas);
  tcase_add_test(tc, test_schedule_checks);
  tcase_add_test(tc, test_stats_lines);
  tcase_add_test(tc, test_open_refuses_bad_layouts);
  tcase_add_test(tc, test_dp2_equals_one_rank);
  tcase_add_test(tc, test_dp3_accum2_equals_one_rank);
  tcase_add_test(tc, test_dp3_unsharded_noclip_equals_one_rank);
  tcase_add_test(tc, test_dp2_bf16_equals_one_rank);
  tcase_add_test(tc, test_dp2_fp16_equals_one_rank);
  tcase_add_test(tc, test_tp2_equals_one_rank);
  tcase_add_test(tc, test_tp3_uneven_vocab_equals_one_rank);
  tcase_add_test(tc, test_tp2_sequence_equals_one_rank);
  tcase_add_test(tc, test_dp2_tp2_equals_one_rank);
  tcase_add_test(tc, test_tp2_bf16_equals_one_rank);
  tcase_add_test(tc, test_dp2_tp2_zero3_equals_one_rank);
  tcase_add_test(tc, test_dp2_tp2_zero2_bf16_equals_one_rank);
  tcase_add_test(tc, test_tp2_fp16_equals_one_rank);
  tcase_add_test(tc, test_deterministic);
  tcase_add_test(tc, test_sharded_memory);
  tcase_add_test(tc, test_mixed_norms_match_fp32);
  tcase_add_test(tc, test_fp16_overflow_skips);
  tcase_add_test(tc, test_fp16_mean_overflows_like_one_rank);
  suite_add_tcase(s, tc);
  suite_add_tcase(s, tz);
  suite_add_tcase(s, tpp);
  suite_add_tcase(s, trc);
  SRunner *sr = srunner_create(s);
  /* one process: the fixtures (temp dir) are shared by the tests */
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  free(init_params);
  if (tmpdir[0]) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
  }
  return failed ? 1 : 0;
}
