/* validate.c - `yoke sim --validate`: calibrate on this machine with 1 and
 * 2 ranks, run real 2-rank jobs with the local launcher, and compare each
 * measured step time with the prediction for the same job (docs/scaling.md,
 * "Validation").
 *
 * Calibration: the achieved GFLOP/s of a training step and the optimizer's
 * memory rate from `yoke train` on 1 rank of 1 thread; alpha, beta, gamma
 * from `yoke bench coll --calibrate` on 2 ranks (mpirun). Every run keeps
 * ranks x threads <= 2 (this machine has 2 cores), so the cluster is one
 * node of 2 ranks and the configurations vary the layout, the ZeRO stage,
 * the sizes and the accumulation instead of the rank count. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sim_internal.h"

/* The median step_ms, fwd+bwd ms and opt ms of a run's JSON step lines
 * (rank 0's; the first two steps are warm-up). */
typedef struct meas {
  double step_ms, compute_ms, opt_ms;
} meas;

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int run(const char *cmd, const char *log, meas *m) {
  char full[8192];
  snprintf(full, sizeof full, "%s > %s 2>&1", cmd, log);
  int st = system(full);
  if (st != 0) return -1;
  FILE *f = fopen(log, "r");
  if (!f) return -1;
  double s[256], c[256], o[256];
  int n = 0, seen = 0;
  char line[8192];
  while (fgets(line, sizeof line, f) && n < 256) {
    char *j = strchr(line, '{');
    if (!j || !strstr(j, "\"fwd_ms\"") || strstr(j, "\"done\"")) continue;
    json_t *root = json_loads(j, 0, NULL);
    if (!root) continue;
    json_t *sm = json_object_get(root, "ms");
    if (json_is_number(sm) && seen++ >= 2) {
      s[n] = json_number_value(sm);
      c[n] = json_number_value(json_object_get(root, "fwd_ms")) + json_number_value(json_object_get(root, "bwd_ms"));
      o[n] = json_number_value(json_object_get(root, "opt_ms"));
      n++;
    }
    json_decref(root);
  }
  fclose(f);
  if (n < 1) return -1;
  m->step_ms = median(s, n);
  m->compute_ms = median(c, n);
  m->opt_ms = median(o, n);
  return 0;
}

typedef struct vcfg {
  const char *name;
  const char *sets; /* job overrides */
} vcfg;

/* Real 2-rank configurations (2 ranks x 1 thread). */
static const vcfg configs[] = {
    {"dp2 zero0 small B8", "--set optim.zero=0"},
    {"dp2 zero1 small B8", "--set optim.zero=1"},
    {"dp2 zero2 small B8", "--set optim.zero=2"},
    {"dp2 zero3 small B8", "--set optim.zero=3"},
    {"dp2 zero1 small B8 accum2", "--set optim.zero=1 --set train.grad_accum=2"},
    {"dp2 zero0 small B16 T128", "--set optim.zero=0 --set train.micro_batch=16 --set train.seq_len=128"},
    {"tp2 small B8", "--set parallel.tensor=2 --set optim.zero=0"},
    {"dp2 zero1 d6 B2 T64", "--set optim.zero=1 --set model.name=d6 --set train.micro_batch=2"},
};

static int base_config(yk_config *cfg, const char *sets, yk_diag *d) {
  yk_config_defaults(cfg);
  int rc = yk_config_set(cfg, "model.name=small", d);
  if (!rc) rc = yk_config_set(cfg, "train.micro_batch=8", d);
  if (!rc) rc = yk_config_set(cfg, "train.seq_len=64", d);
  if (!rc) rc = yk_config_set(cfg, "train.threads=1", d);
  /* the configuration's own "--set K=V" words */
  char buf[512];
  snprintf(buf, sizeof buf, "%s", sets);
  for (char *save = NULL, *w = strtok_r(buf, " ", &save); !rc && w; w = strtok_r(NULL, " ", &save))
    if (strcmp(w, "--set")) rc = yk_config_set(cfg, w, d);
  return rc;
}

int yk_sim_validate(const yk_sim_validate_opts *o) {
  FILE *out = o->out ? o->out : stdout;
  const char *w = o->workdir;
  char cmd[8192], log[4096], path[4096];
  mkdir(w, 0755);
  fprintf(out, "# yoke sim --validate in %s: this machine is shared (2 cores, other jobs running), so measured "
               "times are noisy\n", w);
  /* data: byte-level shards of the license texts every Debian has */
  snprintf(path, sizeof path, "%s/data/train_000000.bin", w);
  struct stat sb;
  if (stat(path, &sb)) {
    snprintf(cmd, sizeof cmd, "%s data prepare --out %s/data /usr/share/common-licenses/*", o->yoke, w);
    snprintf(log, sizeof log, "%s/prepare.log", w);
    snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), " > %s 2>&1", log);
    if (system(cmd)) {
      fprintf(stderr, "yoke sim --validate: data prepare failed (see %s)\n", log);
      return 1;
    }
  }
  char common[4096];
  snprintf(common, sizeof common,
           "--set model.name=small --set train.micro_batch=8 --set train.seq_len=64 --set train.threads=1 "
           "--set train.steps=%d --set train.val_every=1000000 --set train.log_every=1 "
           "--set data.train='%s/data/train_*.bin' --set data.val='%s/data/val_*.bin'",
           o->steps + 2, w, w);
  /* 1 rank: the achieved FLOP/s of a step and the optimizer's memory rate */
  yk_config cfg;
  yk_diag d = {0};
  meas m1;
  snprintf(cmd, sizeof cmd, "%s train %s --json", o->yoke, common);
  snprintf(log, sizeof log, "%s/calib-1rank.log", w);
  if (run(cmd, log, &m1)) {
    fprintf(stderr, "yoke sim --validate: the 1-rank calibration run failed (see %s)\n", log);
    return 1;
  }
  if (base_config(&cfg, "", &d)) return fprintf(stderr, "yoke sim --validate: %s\n", yk_diag_msg(&d, 1)), 1;
  yk_model_config mc;
  yk_model_config_from(&cfg, &mc, &d);
  double tokens = (double)cfg.train.micro_batch * cfg.train.seq_len;
  yk_sim_cluster cl;
  yk_sim_cluster_default(&cl);
  snprintf(cl.name, sizeof cl.name, "this machine (calibrated)");
  cl.nodes = 1;
  cl.ranks_per_node = 2;
  cl.gflops = yk_model_flops_per_token(&mc, (int)cfg.train.seq_len) * tokens / (m1.compute_ms * 1e-3) / 1e9;
  cl.mem_gbs = (double)yk_model_config_num_params(&mc) * 28 / (m1.opt_ms * 1e-3) / 1e9;
  /* 2 ranks at once share the 2 cores with their comm threads (and, here,
   * with whatever else runs): the rate that holds for the 2-rank runs is
   * measured on a 2-rank calibration job (micro-batch 4, which no validated
   * configuration uses) */
  meas m2;
  snprintf(cmd, sizeof cmd, "%s launch -n 2 -- train %s --set train.micro_batch=4 --set optim.zero=0 --json", o->yoke,
           common);
  snprintf(log, sizeof log, "%s/calib-2rank-train.log", w);
  if (run(cmd, log, &m2)) {
    fprintf(stderr, "yoke sim --validate: the 2-rank calibration run failed (see %s)\n", log);
    return 1;
  }
  double gflops1 = cl.gflops;
  cl.gflops = yk_model_flops_per_token(&mc, (int)cfg.train.seq_len) * 4 * cfg.train.seq_len / (m2.compute_ms * 1e-3) / 1e9;
  /* 2 ranks: the collectives' constants */
  snprintf(path, sizeof path, "%s/coll.model", w);
  snprintf(cmd, sizeof cmd,
           "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np 2 --oversubscribe --bind-to none "
           "%s bench coll --transport libfabric --calibrate %s --no-gloo --no-mpi -e 1M > %s/calib-2rank.log 2>&1",
           o->yoke, path, w);
  int rc = system(cmd);
  yk_coll_model_default(&cl.intra);
  if (rc || yk_coll_model_load(path, &cl.intra, &d)) {
    fprintf(stderr, "yoke sim --validate: the 2-rank calibration (bench coll --calibrate) failed (see "
                    "%s/calib-2rank.log)\n", w);
    return 1;
  }
  cl.inter = cl.intra;
  fprintf(out, "# calibrated: %.2f GFLOP/s per rank alone (1 rank, 1 thread), %.2f GFLOP/s per rank with 2 ranks "
               "(used), optimizer at %.2f GB/s, alpha %.2f us, beta %.4f ns/B, gamma %.4f ns/B (bench coll, 2 ranks)\n",
          gflops1, cl.gflops, cl.mem_gbs, cl.intra.alpha_us, cl.intra.beta_ns, cl.intra.gamma_ns);
  if (!o->json) fprintf(out, "%-28s %12s %12s %8s\n", "config", "predicted_ms", "measured_ms", "error");
  double errs[YK_ARRAY_LEN(configs)];
  int n = 0;
  for (size_t i = 0; i < YK_ARRAY_LEN(configs); i++) {
    meas m;
    snprintf(cmd, sizeof cmd, "%s launch -n 2 -- train %s %s --json", o->yoke, common, configs[i].sets);
    snprintf(log, sizeof log, "%s/run-%zu.log", w, i);
    yk_sim_result r;
    if (base_config(&cfg, configs[i].sets, &d) || yk_sim_predict(&cl, &cfg, 1, &r, &d)) {
      fprintf(out, "%-28s prediction failed: %s\n", configs[i].name, yk_diag_msg(&d, 1));
      continue;
    }
    if (run(cmd, log, &m)) {
      fprintf(out, "%-28s %12.2f %12s %8s (the run failed: %s)\n", configs[i].name, r.step_ms, "-", "-", log);
      continue;
    }
    double err = (r.step_ms - m.step_ms) / m.step_ms;
    errs[n++] = fabs(err);
    if (o->json)
      fprintf(out, "{\"config\":\"%s\",\"predicted_ms\":%.3f,\"measured_ms\":%.3f,\"error\":%.4f}\n", configs[i].name,
              r.step_ms, m.step_ms, err);
    else fprintf(out, "%-28s %12.2f %12.2f %+7.1f%%\n", configs[i].name, r.step_ms, m.step_ms, 100 * err);
    fflush(out);
  }
  if (!n) return 1;
  double worst = 0;
  for (int i = 0; i < n; i++) worst = errs[i] > worst ? errs[i] : worst;
  double med = median(errs, n);
  fprintf(out, "# %d configurations: median |error| %.1f%% (target <= 10%%), worst %.1f%% (target <= 20%%)\n", n,
          100 * med, 100 * worst);
  return 0;
}
