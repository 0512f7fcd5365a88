/* bench_scale.c - `yoke bench scale`: data-parallel scaling of the real
 * `yoke train` on this machine.
 *
 * It writes a synthetic token shard (uniform random tokens of the model's
 * vocabulary), runs `yoke train --json` with 1 and 2 ranks (1 compute thread
 * each) through a real launcher, and reads the per-step figures the job
 * prints: ms/step, the fraction of the step spent waiting on communication,
 * and the bytes all-reduced per step. Weak-scaling efficiency is
 * tokens/s(2 ranks) / (2 x tokens/s(1 rank)) with the per-rank batch fixed.
 * PyTorch DDP (gloo) runs the same model and shapes beside it when Debian's
 * /usr/bin/python3 has torch. A third row runs two independent 1-rank jobs
 * at once: the efficiency the host itself allows, with no communication.
 * Every 2-rank figure is divided into the mean of a 1-rank run just before
 * and one just after it (the host's speed drifts). It then compares
 * fp32/fp16/bf16 step time and bytes on the wire, and all-reduce bytes per
 * sample against grad_accum. */
#include "yk_bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "yk_data.h"
#include "yk_model.h"

typedef struct {
  double ms, wait_frac;
  double bytes; /* all-reduced per step */
  int ok;
} run_result;

static void job_cmd(char *cmd, size_t cap, const char *self, const char *launcher, int ranks, const char *model, int B,
                    int T, int steps, int accum, const char *prec, const char *data) {
  const char *common = "--json --set data.val= --set train.threads=1 --set train.log_every=1 --set optim.lr=1e-4";
  if (ranks == 1)
    snprintf(cmd, cap,
             "OMP_NUM_THREADS=1 %s train %s --set model.name=%s --set train.micro_batch=%d --set train.seq_len=%d "
             "--set train.steps=%d --set train.grad_accum=%d --set train.precision=%s --set data.train=%s 2>/dev/null",
             self, common, model, B, T, steps, accum, prec, data);
  else if (!strcmp(launcher, "mpirun"))
    snprintf(cmd, cap,
             "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 YOKE_SECRET=%s OMP_NUM_THREADS=1 "
             "mpirun -np %d --oversubscribe --bind-to none -x YOKE_SECRET -x OMP_NUM_THREADS %s train %s "
             "--set comm.transport=mpi --set coord.port=%d --set model.name=%s --set train.micro_batch=%d --set train.seq_len=%d "
             "--set train.steps=%d --set train.grad_accum=%d --set train.precision=%s --set data.train=%s 2>/dev/null",
             "0123456789abcdef0123456789abcdef", ranks, self, common, 20000 + (int)(getpid() % 20000), model, B, T, steps,
             accum, prec, data);
  else
    snprintf(cmd, cap,
             "OMP_NUM_THREADS=1 %s launch -n %d -- train %s --set model.name=%s --set train.micro_batch=%d "
             "--set train.seq_len=%d --set train.steps=%d --set train.grad_accum=%d --set train.precision=%s "
             "--set data.train=%s 2>/dev/null",
             self, ranks, common, model, B, T, steps, accum, prec, data);
}

/* Read a job's JSON lines to the end and close it. ms is the median of the
 * steps after the first (as PyTorch's side reports it): one step the host
 * slowed down does not move it, as it would a mean. */
static int job_wait(FILE *p, run_result *r) {
  char line[2048];
  double steps_ms[256];
  int nsteps = 0;
  memset(r, 0, sizeof *r);
  while (fgets(line, sizeof line, p)) {
    const char *k, *s;
    if (strstr(line, "\"done\": true") && strstr(line, "\"rank\": 0")) {
      if ((k = strstr(line, "\"ms_per_step\": "))) r->ms = atof(k + 15);
      if ((k = strstr(line, "\"comm_wait_frac\": "))) r->wait_frac = atof(k + 18);
      r->ok = 1;
    } else if ((k = strstr(line, "\"allreduce_bytes\": "))) {
      r->bytes = atof(k + 19);
      if ((s = strstr(line, "{\"step\": ")) && atol(s + 9) > 1 && (k = strstr(line, "\"ms\": ")) &&
          nsteps < (int)YK_ARRAY_LEN(steps_ms))
        steps_ms[nsteps++] = atof(k + 6);
    }
  }
  int st = pclose(p);
  if (st != 0) r->ok = 0;
  if (nsteps) r->ms = yk_bench_median(steps_ms, nsteps);
  return r->ok ? 0 : YK_EIO;
}

/* Run one job and parse its JSON lines. */
static int run_job(const char *self, const char *launcher, int ranks, const char *model, int B, int T, int steps,
                   int accum, const char *prec, const char *data, run_result *r) {
  char cmd[16384];
  job_cmd(cmd, sizeof cmd, self, launcher, ranks, model, B, T, steps, accum, prec, data);
  FILE *p = popen(cmd, "r");
  if (!p) return YK_ESYS;
  return job_wait(p, r);
}

/* The host's own limit on weak scaling: two independent 1-rank jobs at
 * once, no communication at all. Each slows down only because the two
 * processes share the host's caches, memory bandwidth and kernel; the
 * 2-rank job cannot scale better than this. ms = the slower job's. */
static int run_pair(const char *self, const char *model, int B, int T, int steps, const char *data, run_result *r) {
  char cmd[16384];
  job_cmd(cmd, sizeof cmd, self, "launch", 1, model, B, T, steps, 1, "fp32", data);
  FILE *p0 = popen(cmd, "r"), *p1 = popen(cmd, "r");
  run_result r0 = {0}, r1 = {0};
  int rc0 = p0 ? job_wait(p0, &r0) : YK_ESYS, rc1 = p1 ? job_wait(p1, &r1) : YK_ESYS;
  if (rc0 || rc1) return rc0 ? rc0 : rc1;
  *r = r0.ms > r1.ms ? r0 : r1;
  return 0;
}

void yk_bench_scale_opts_default(yk_bench_scale_opts *o) {
  *o = (yk_bench_scale_opts){.models = "d12,d6", .batch = 4, .seq_len = 256, .steps = 5, .repeat = 1,
                             .launcher = "launch", .precision_model = "d6"};
}

int yk_bench_scale(const yk_bench_scale_opts *o) {
  char models_arg[256];
  snprintf(models_arg, sizeof models_arg, "%s", o->models);
  const char *launcher = o->launcher, *pmodel = o->precision_model;
  int B = (int)o->batch, T = (int)o->seq_len, steps = (int)o->steps, torch = !o->no_torch, json = o->json,
      repeat = (int)o->repeat;
  if (strcmp(launcher, "launch") && strcmp(launcher, "mpirun")) {
    fprintf(stderr, "yoke bench scale: --launcher must be launch or mpirun, got '%s'\n", launcher);
    return 2;
  }
  if (steps < 2 || repeat < 1 || repeat > 64) {
    fprintf(stderr, "yoke bench scale: %d steps and %d rounds do not fit: steps >= 2, rounds in [1, 64]\n", steps,
            repeat);
    return 2;
  }
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    fprintf(stderr, "yoke bench scale: cannot find the yoke binary (/proc/self/exe)\n");
    return 1;
  }
  self[n] = '\0';
  if (torch && !yk_bench_torch_available()) {
    fprintf(stderr, "yoke bench scale: /usr/bin/python3 has no torch (apt-get install python3-torch); yoke alone\n");
    torch = 0;
  }
  char dir[] = "/tmp/yk_bench_scale_XXXXXX";
  if (!mkdtemp(dir)) {
    fprintf(stderr, "yoke bench scale: cannot create a temporary directory\n");
    return 1;
  }
  yk_diag d = {0};
  int exit_code = 0, keep = 0; /* keep: a scaling run failed */
  printf("# yoke bench scale: B=%d T=%d per rank, 1 thread per rank, %d steps (first is warm-up), launcher %s, "
         "%d round%s (medians)\n", B, T, steps, launcher, repeat, repeat > 1 ? "s" : "");
  printf("# %-6s %5s %-11s %10s %10s %10s %10s\n", "model", "ranks", "impl", "ms/step", "tokens/s", "comm wait",
         "efficiency");
  char *save = NULL;
  for (char *model = strtok_r(models_arg, ",", &save); model; model = strtok_r(NULL, ",", &save)) {
    yk_model_config mc;
    int rc = yk_model_preset(model, &mc, &d);
    if (rc) {
      fprintf(stderr, "yoke bench scale: %s\n", yk_diag_msg(&d, rc));
      exit_code = 2;
      break;
    }
    char data[4200];
    snprintf(data, sizeof data, "%s/%s.bin", dir, model);
    /* Enough windows for every rank and step without wrapping. */
    uint64_t ntok = (uint64_t)B * T * 2 * (uint64_t)(steps + 1) * 4 + 1;
    if ((rc = yk_bench_synthetic_shard(data, mc.vocab_size, ntok, &d)) != 0) {
      fprintf(stderr, "yoke bench scale: %s\n", yk_diag_msg(&d, rc));
      exit_code = 1;
      break;
    }
    /* `repeat` rounds, each 1 rank, 2 ranks, 2 independent jobs, 1 rank
     * again, then PyTorch 1 rank, 2 ranks, 1 rank again. The host's speed
     * drifts over minutes (another tenant's load comes and goes), so each
     * 2-rank figure is set against the mean of the 1-rank runs just before
     * and just after it, which cancels a steady drift; the efficiencies are
     * the medians of each round's own ratio, the ms/step columns medians
     * over all runs. */
    double ms[5][128], waitf[64], eff[3][64], bytes = 0;
    int n1 = 0, fail = 0;
    for (int rep = 0; rep < repeat && !fail; rep++) {
      run_result r1 = {0}, r2 = {0}, pr = {0}, r1b = {0};
      const char *failed = run_job(self, launcher, 1, model, B, T, steps, 1, "fp32", data, &r1) ? "1-rank"
                           : run_job(self, launcher, 2, model, B, T, steps, 1, "fp32", data, &r2) ? "2-rank"
                           : run_pair(self, model, B, T, steps, data, &pr) ? "independent-pair"
                           : run_job(self, launcher, 1, model, B, T, steps, 1, "fp32", data, &r1b) ? "second 1-rank"
                                                                                                    : NULL;
      if (failed) {
        fprintf(stderr, "yoke bench scale: the %s run of %s failed; run it by hand to see why:\n  %s launch -n 2 -- "
                        "train --set model.name=%s --set train.micro_batch=%d --set train.seq_len=%d "
                        "--set data.train=%s\n", failed, model, self, model, B, T, data);
        fail = keep = 1;
        break;
      }
      double base = 0.5 * (r1.ms + r1b.ms);
      ms[0][n1] = r1.ms, ms[0][n1 + 1] = r1b.ms, ms[1][rep] = r2.ms, waitf[rep] = r2.wait_frac, bytes = r2.bytes;
      ms[4][rep] = pr.ms;
      eff[0][rep] = base / r2.ms;
      eff[2][rep] = base / pr.ms;
      if (torch) {
        double t1 = yk_bench_torch_ms(model, B, T, 1, steps - 1, 1, 1);
        ms[3][rep] = yk_bench_torch_ms(model, B, T, 1, steps - 1, 1, 2);
        double t1b = yk_bench_torch_ms(model, B, T, 1, steps - 1, 1, 1);
        ms[2][n1] = t1, ms[2][n1 + 1] = t1b;
        eff[1][rep] = 0.5 * (t1 + t1b) / ms[3][rep];
      }
      n1 += 2;
      if (repeat > 1)
        fprintf(stderr, "# round %d/%d of %s: yoke 1 rank %.1f and %.1f ms, 2 ranks %.1f ms (%.1f%%), independent %.1f ms "
                "(%.1f%%)\n", rep + 1, repeat, model, r1.ms, r1b.ms, r2.ms, 100 * eff[0][rep], pr.ms, 100 * eff[2][rep]);
    }
    if (fail) {
      exit_code = 1;
      continue;
    }
    int R = (int)repeat;
    static const char *const impl[5] = {"yoke", "yoke", "pytorch", "pytorch-ddp", "independent"};
    static const int ranks_of[5] = {1, 2, 1, 2, 2};
    for (int k = 0; k < 5; k++) {
      if ((k == 2 || k == 3) && !torch) continue;
      double m = yk_bench_median(ms[k], k == 0 || k == 2 ? n1 : R), tok = (double)B * T * ranks_of[k] / (m * 1e-3);
      double e = k == 1 ? yk_bench_median(eff[0], R)
                 : k == 3 ? yk_bench_median(eff[1], R)
                 : k == 4 ? yk_bench_median(eff[2], R)
                          : 1.0;
      double w = k == 1 ? yk_bench_median(waitf, R) : 0;
      char wbuf[32];
      if (k <= 1) snprintf(wbuf, sizeof wbuf, "%9.1f%%", 100 * w);
      else snprintf(wbuf, sizeof wbuf, "%10s", "-");
      printf("  %-6s %5s %-11s %10.1f %10.1f %s %9.1f%%%s\n", model, k == 4 ? "1+1" : ranks_of[k] == 1 ? "1" : "2",
             impl[k], m, tok, wbuf, 100 * e,
             k == 4 ? "  <- host ceiling: 2 independent 1-rank jobs at once, no communication" : "");
      if (json) {
        char cw[32], extra[64] = "";
        if (k <= 1) snprintf(cw, sizeof cw, "%.4f", w);
        else snprintf(cw, sizeof cw, "null");
        if (k == 1) snprintf(extra, sizeof extra, ", \"allreduce_bytes_per_step\": %.0f", bytes);
        printf("{\"impl\": \"%s\", \"model\": \"%s\", \"precision\": \"fp32\", \"ranks\": %d, \"grad_accum\": 1, "
               "\"B\": %d, \"T\": %d, \"tokens_per_s\": %.2f, \"ms_per_step\": %.3f, \"comm_wait_frac\": %s, "
               "\"efficiency\": %.4f, \"rounds\": %d%s}\n",
               impl[k], model, ranks_of[k], B, T, tok, m, cw, e, R, extra);
      }
    }
    fflush(stdout);
  }

  /* Precision: 2 ranks, step time and bytes on the wire. */
  yk_model_config pc;
  char pdata[4200];
  snprintf(pdata, sizeof pdata, "%s/%s.bin", dir, pmodel);
  if (exit_code == 0 && yk_model_preset(pmodel, &pc, &d) == 0 &&
      (access(pdata, R_OK) == 0 || yk_bench_synthetic_shard(pdata, pc.vocab_size, (uint64_t)B * T * 2 * (steps + 1) * 8 + 1, &d) == 0)) {
    printf("\n# precision: %s, 2 ranks\n# %-6s %10s %10s %16s\n", pmodel, "prec", "ms/step", "vs fp32", "bytes/step");
    double ms32 = 0;
    const char *precs[] = {"fp32", "fp16", "bf16"};
    for (int i = 0; i < 3; i++) {
      run_result r;
      if (run_job(self, launcher, 2, pmodel, B, T, steps, 1, precs[i], pdata, &r) != 0) {
        fprintf(stderr, "yoke bench scale: %s run failed\n", precs[i]);
        exit_code = 1;
        continue;
      }
      if (i == 0) ms32 = r.ms;
      printf("  %-6s %10.1f %9.2fx %16.0f\n", precs[i], r.ms, r.ms / ms32, r.bytes);
      if (json)
        printf("{\"impl\": \"yoke\", \"model\": \"%s\", \"precision\": \"%s\", \"ranks\": 2, \"grad_accum\": 1, "
               "\"B\": %d, \"T\": %d, \"tokens_per_s\": %.2f, \"ms_per_step\": %.3f, \"comm_wait_frac\": %.4f, "
               "\"efficiency\": null, \"allreduce_bytes_per_step\": %.0f, \"time_vs_fp32\": %.4f}\n",
               pmodel, precs[i], B, T, 2.0 * B * T / (r.ms * 1e-3), r.ms, r.wait_frac, r.bytes, r.ms / ms32);
      fflush(stdout);
    }
    printf("\n# grad_accum: %s, 2 ranks, fp32\n# %-6s %10s %16s %18s\n", pmodel, "accum", "ms/step", "bytes/step",
           "bytes/sample");
    for (int accum = 1; accum <= 4; accum *= 2) {
      run_result r;
      if (run_job(self, launcher, 2, pmodel, B, T, 3, accum, "fp32", pdata, &r) != 0) {
        exit_code = 1;
        continue;
      }
      double per_sample = r.bytes / (double)(B * accum * 2);
      printf("  %-6d %10.1f %16.0f %18.1f\n", accum, r.ms, r.bytes, per_sample);
      if (json)
        printf("{\"impl\": \"yoke\", \"model\": \"%s\", \"precision\": \"fp32\", \"ranks\": 2, \"grad_accum\": %d, "
               "\"B\": %d, \"T\": %d, \"tokens_per_s\": %.2f, \"ms_per_step\": %.3f, \"comm_wait_frac\": %.4f, "
               "\"efficiency\": null, \"allreduce_bytes_per_step\": %.0f, \"allreduce_bytes_per_sample\": %.1f}\n",
               pmodel, accum, B, T, 2.0 * B * T * accum / (r.ms * 1e-3), r.ms, r.wait_frac, r.bytes, per_sample);
      fflush(stdout);
    }
  }
  if (keep) { /* the data a failed run named stays for running it by hand */
    fprintf(stderr, "yoke bench scale: kept %s for that; remove it when done\n", dir);
    return exit_code;
  }
  char rm[4300];
  snprintf(rm, sizeof rm, "rm -rf %s", dir);
  if (system(rm) != 0) fprintf(stderr, "yoke bench scale: could not remove %s\n", dir);
  return exit_code;
}
