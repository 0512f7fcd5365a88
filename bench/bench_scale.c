/* bench_scale.c - `yoke bench scale`: data-parallel scaling of the real
 * `yoke train` on this machine.
 *
 * It writes a synthetic token shard (uniform random tokens of the model's
 * vocabulary), runs `yoke train --json` with 1 and 2 ranks (1 compute thread
 * each) through a real launcher, and reads the per-step figures the job
 * prints: ms/step, the fraction of the step spent waiting on communication,
 * and the bytes all-reduced per step. Weak-scaling efficiency is
 * tokens/s(2 ranks) / (2 x tokens/s(1 rank)) with the per-rank batch fixed.
 * The 2-rank job runs twice: with ZeRO-1 (optim.shard=true, the default:
 * each rank runs AdamW on half of the parameters, then they all-gather) and
 * without (optim.shard=false: every rank runs the full AdamW update, as
 * PyTorch DDP and the independent jobs do); the efficiency headline is the
 * ZeRO-1 row, what `yoke train` runs unless told otherwise, and the no-ZeRO
 * row is the like-for-like comparison with DDP. PyTorch DDP (gloo) runs the
 * same model and shapes beside it when Debian's /usr/bin/python3 has torch.
 * Another row runs two independent 1-rank jobs at once: the efficiency the
 * host itself allows, with no communication. Every 2-rank figure is divided
 * into the mean of a 1-rank run just before and one just after it (the
 * host's speed drifts). It then compares fp32/fp16/bf16 step time and bytes
 * on the wire, and all-reduce bytes per sample against grad_accum (both
 * with ZeRO-1). */
#include "yk_bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "yk_model.h"

typedef struct {
  double ms, wait_frac;
  double bytes; /* all-reduced per step */
  int ok;
} run_result;

/* The command of one `yoke train --json` job, stderr not redirected (a
 * failed run is printed for running by hand). optim.shard is always set,
 * never left to the default, so a change of the default cannot silently
 * swap what the ZeRO-1 and no-ZeRO rows measure; with one rank it changes
 * nothing (the one rank updates every parameter either way). */
static void job_cmd(char *cmd, size_t cap, const char *self, const char *launcher, int ranks, int shard,
                    const char *model, int B, int T, int steps, int accum, const char *prec, const char *data) {
  char common[512];
  snprintf(common, sizeof common,
           "--json --set data.val= --set train.threads=1 --set train.log_every=1 --set optim.lr=1e-4 "
           "--set optim.shard=%s",
           shard ? "true" : "false");
  if (ranks == 1)
    snprintf(cmd, cap,
             "OMP_NUM_THREADS=1 %s train %s --set model.name=%s --set train.micro_batch=%d --set train.seq_len=%d "
             "--set train.steps=%d --set train.grad_accum=%d --set train.precision=%s --set data.train=%s",
             self, common, model, B, T, steps, accum, prec, data);
  else if (!strcmp(launcher, "mpirun"))
    snprintf(cmd, cap,
             "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 YOKE_SECRET=%s OMP_NUM_THREADS=1 "
             "mpirun -np %d --oversubscribe --bind-to none -x YOKE_SECRET -x OMP_NUM_THREADS %s train %s "
             "--set comm.transport=mpi --set coord.port=%d --set model.name=%s --set train.micro_batch=%d --set train.seq_len=%d "
             "--set train.steps=%d --set train.grad_accum=%d --set train.precision=%s --set data.train=%s",
             "0123456789abcdef0123456789abcdef", ranks, self, common, 20000 + (int)(getpid() % 20000), model, B, T, steps,
             accum, prec, data);
  else
    snprintf(cmd, cap,
             "OMP_NUM_THREADS=1 %s launch -n %d -- train %s --set model.name=%s --set train.micro_batch=%d "
             "--set train.seq_len=%d --set train.steps=%d --set train.grad_accum=%d --set train.precision=%s "
             "--set data.train=%s",
             self, ranks, common, model, B, T, steps, accum, prec, data);
}

/* Start a job's command with its stderr discarded (the JSON lines are on
 * stdout). */
static FILE *job_start(const char *cmd) {
  char full[16500];
  snprintf(full, sizeof full, "%s 2>/dev/null", cmd);
  return popen(full, "r");
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

/* Run one job and parse its JSON lines; cmd receives its command. */
static int run_job(char *cmd, size_t cap, const char *self, const char *launcher, int ranks, int shard,
                   const char *model, int B, int T, int steps, int accum, const char *prec, const char *data,
                   run_result *r) {
  job_cmd(cmd, cap, self, launcher, ranks, shard, model, B, T, steps, accum, prec, data);
  FILE *p = job_start(cmd);
  if (!p) return YK_ESYS;
  return job_wait(p, r);
}

/* The host's own limit on weak scaling: two independent 1-rank jobs at
 * once, no communication at all. Each slows down only because the two
 * processes share the host's caches, memory bandwidth and kernel; the
 * 2-rank job cannot scale better than this. ms = the slower job's. */
static int run_pair(char *cmd, size_t cap, const char *self, const char *model, int B, int T, int steps,
                    const char *data, run_result *r) {
  job_cmd(cmd, cap, self, "launch", 1, 1, model, B, T, steps, 1, "fp32", data);
  FILE *p0 = job_start(cmd), *p1 = job_start(cmd);
  run_result r0 = {0}, r1 = {0};
  int rc0 = p0 ? job_wait(p0, &r0) : YK_ESYS, rc1 = p1 ? job_wait(p1, &r1) : YK_ESYS;
  if (rc0 || rc1) return rc0 ? rc0 : rc1;
  *r = r0.ms > r1.ms ? r0 : r1;
  return 0;
}

/* The rows of the scaling table, in print order. */
enum { ROW_ONE, ROW_ZERO, ROW_NOZERO, ROW_TORCH_ONE, ROW_DDP, ROW_PAIR, NROWS };
static const struct scale_row {
  const char *impl, *label; /* impl: who runs it; label: the row's name in the table and in JSON */
  const char *ranks;        /* as printed: "1+1" is two 1-rank jobs at once */
  int nranks, zero, torch;  /* zero: the optimizer update is split over the ranks (ZeRO-1) */
  const char *note;
} rows[NROWS] = {
    {"yoke", "yoke", "1", 1, 0, 0, ""},
    {"yoke", "yoke (ZeRO-1)", "2", 2, 1, 0, "  <- headline: optim.shard=true (default), half of AdamW per rank"},
    {"yoke", "yoke (no ZeRO)", "2", 2, 0, 0, "  optim.shard=false: full AdamW on every rank, like DDP"},
    {"pytorch", "pytorch", "1", 1, 0, 1, ""},
    {"pytorch-ddp", "pytorch-ddp", "2", 2, 0, 1, "  full AdamW on every rank"},
    {"independent", "independent", "1+1", 2, 0, 0,
     "  <- host ceiling: 2 independent 1-rank jobs at once, no communication"},
};

/* One point of the efficiency figure: a row of one model at a rank count. */
typedef struct {
  char series[96]; /* "d12 yoke (ZeRO-1)": one line per model and row */
  int ranks;
  double eff;
} eff_point;

/* --png: efficiency against ranks, one line per model and row from its
 * 1-rank base (1 by definition) beside the ideal, drawn by common's gnuplot
 * helper (the script, data inline, kept as PNG.gp). 0, or 1 after printing
 * why not. */
static int write_png(const char *png, const eff_point *p, int n, int B, int T) {
  char *sc = NULL;
  size_t sl = 0;
  FILE *g = open_memstream(&sc, &sl);
  if (!g) return 1;
  int nser = 0, maxr = 1;
  double maxe = 1;
  for (int i = 0; i < n; i++) {
    int first = 1;
    for (int j = 0; j < i; j++) first &= strcmp(p[j].series, p[i].series) != 0;
    if (p[i].ranks > maxr) maxr = p[i].ranks;
    if (p[i].eff > maxe) maxe = p[i].eff;
    if (!first) continue;
    fprintf(g, "$d%d << EOD\n1 100\n", nser++);
    for (int j = i; j < n; j++)
      if (!strcmp(p[j].series, p[i].series)) fprintf(g, "%d %.3f\n", p[j].ranks, 100 * p[j].eff);
    fprintf(g, "EOD\n");
  }
  fprintf(g, "set terminal png size 1100,700\nset output '%s'\nset termoption noenhanced\nset grid\nset key outside right\n"
             "set title 'yoke bench scale: weak-scaling efficiency, B=%d T=%d per rank'\nset xlabel 'ranks'\nset xtics 1\n"
             "set ylabel 'efficiency (%% of the 1-rank rate per rank)'\nset xrange [0.8:%.1f]\nset yrange [0:%.0f]\nplot ",
          png, B, T, maxr + 0.2, 100 * maxe * 1.1 + 5);
  for (int i = 0, s = 0; i < n; i++) {
    int first = 1;
    for (int j = 0; j < i; j++) first &= strcmp(p[j].series, p[i].series) != 0;
    if (first) fprintf(g, "$d%d with linespoints lw 2 title '%s', ", s++, p[i].series);
  }
  fprintf(g, "100 title 'ideal' lc rgb 'black' dt 2\n");
  fclose(g);
  yk_diag d = {0};
  int rc = yk_plot_gnuplot(png, sc, &d);
  free(sc);
  if (rc) fprintf(stderr, "yoke bench scale: %s\n", yk_diag_msg(&d, rc));
  else printf("# plot written to %s\n", png);
  return rc ? 1 : 0;
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
  printf("# yoke 2 ranks run twice: ZeRO-1 (optim.shard=true, the default: each rank runs AdamW on half of the "
         "parameters) and no ZeRO (optim.shard=false: the full update on every rank, as pytorch-ddp and the "
         "independent jobs)\n");
  printf("# %-6s %5s %-14s %10s %10s %10s %10s\n", "model", "ranks", "impl", "ms/step", "tokens/s", "comm wait",
         "efficiency");
  eff_point pts[64]; /* the --png figure's */
  int npts = 0;
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
    /* `repeat` rounds, each yoke 1 rank, the two 2-rank runs (ZeRO-1 and
     * no ZeRO), 2 independent jobs, 1 rank again, then PyTorch 1 rank, 2
     * ranks, 1 rank again. The host's speed drifts over minutes (another
     * tenant's load comes and goes), so each 2-rank figure is set against
     * the mean of the 1-rank runs just before and just after it, which
     * cancels a steady drift; the two 2-rank runs swap places every other
     * round so that neither always runs nearer one end. The efficiencies are
     * the medians of each round's own ratio, the ms/step columns medians
     * over all runs. */
    double ms[NROWS][128], eff[NROWS][64], waitf[NROWS][64], bytes[NROWS] = {0};
    int nms[NROWS] = {0}, fail = 0;
    for (int rep = 0; rep < repeat && !fail; rep++) {
      int order[5] = {ROW_ONE, ROW_ZERO, ROW_NOZERO, ROW_PAIR, ROW_ONE};
      if (rep % 2) order[1] = ROW_NOZERO, order[2] = ROW_ZERO;
      run_result r[5];
      for (int i = 0; i < 5 && !fail; i++) {
        int k = order[i];
        char cmd[16384];
        rc = k == ROW_PAIR ? run_pair(cmd, sizeof cmd, self, model, B, T, steps, data, &r[i])
                           : run_job(cmd, sizeof cmd, self, launcher, rows[k].nranks, k != ROW_NOZERO, model, B, T,
                                     steps, 1, "fp32", data, &r[i]);
        if (rc) {
          fprintf(stderr, "yoke bench scale: the %s%s run of %s failed; run it by hand to see why:\n  %s\n",
                  i == 4 ? "second " : "", rows[k].label, model, cmd);
          fail = keep = 1;
        }
      }
      if (fail) break;
      double base = 0.5 * (r[0].ms + r[4].ms);
      ms[ROW_ONE][nms[ROW_ONE]++] = r[0].ms;
      ms[ROW_ONE][nms[ROW_ONE]++] = r[4].ms;
      for (int i = 1; i < 4; i++) {
        int k = order[i];
        ms[k][nms[k]++] = r[i].ms;
        eff[k][rep] = base / r[i].ms;
        waitf[k][rep] = r[i].wait_frac;
        bytes[k] = r[i].bytes;
      }
      if (torch) {
        double t1 = yk_bench_torch_ms(model, B, T, 1, steps - 1, 1, 1);
        double ddp = yk_bench_torch_ms(model, B, T, 1, steps - 1, 1, 2);
        double t1b = yk_bench_torch_ms(model, B, T, 1, steps - 1, 1, 1);
        ms[ROW_TORCH_ONE][nms[ROW_TORCH_ONE]++] = t1;
        ms[ROW_TORCH_ONE][nms[ROW_TORCH_ONE]++] = t1b;
        ms[ROW_DDP][nms[ROW_DDP]++] = ddp;
        eff[ROW_DDP][rep] = 0.5 * (t1 + t1b) / ddp;
      }
      if (repeat > 1)
        fprintf(stderr, "# round %d/%d of %s: yoke 1 rank %.1f and %.1f ms, 2 ranks ZeRO-1 %.1f ms (%.1f%%), "
                "no ZeRO %.1f ms (%.1f%%), independent %.1f ms (%.1f%%)\n",
                rep + 1, repeat, model, r[0].ms, r[4].ms, ms[ROW_ZERO][rep], 100 * eff[ROW_ZERO][rep],
                ms[ROW_NOZERO][rep], 100 * eff[ROW_NOZERO][rep], ms[ROW_PAIR][rep], 100 * eff[ROW_PAIR][rep]);
    }
    if (fail) {
      exit_code = 1;
      continue;
    }
    int R = (int)repeat;
    for (int k = 0; k < NROWS; k++) {
      if (rows[k].torch && !torch) continue;
      int yoke = !strcmp(rows[k].impl, "yoke");
      double m = yk_bench_median(ms[k], nms[k]), tok = (double)B * T * rows[k].nranks / (m * 1e-3);
      double e = rows[k].nranks == 2 ? yk_bench_median(eff[k], R) : 1.0;
      double w = yoke && rows[k].nranks == 2 ? yk_bench_median(waitf[k], R) : 0;
      char wbuf[32];
      if (yoke) snprintf(wbuf, sizeof wbuf, "%9.1f%%", 100 * w);
      else snprintf(wbuf, sizeof wbuf, "%10s", "-");
      printf("  %-6s %5s %-14s %10.1f %10.1f %s %9.1f%%%s\n", model, rows[k].ranks, rows[k].label, m, tok, wbuf,
             100 * e, rows[k].note);
      if (rows[k].nranks > 1 && npts < (int)YK_ARRAY_LEN(pts)) {
        snprintf(pts[npts].series, sizeof pts[npts].series, "%s %s", model, rows[k].label);
        pts[npts].ranks = rows[k].nranks;
        pts[npts++].eff = e;
      }
      if (json) {
        char cw[32], extra[64] = "";
        if (yoke) snprintf(cw, sizeof cw, "%.4f", w);
        else snprintf(cw, sizeof cw, "null");
        if (yoke && rows[k].nranks == 2)
          snprintf(extra, sizeof extra, ", \"allreduce_bytes_per_step\": %.0f", bytes[k]);
        printf("{\"impl\": \"%s\", \"label\": \"%s\", \"zero\": %d, \"headline\": %s, \"model\": \"%s\", "
               "\"precision\": \"fp32\", \"ranks\": %d, \"grad_accum\": 1, \"B\": %d, \"T\": %d, "
               "\"tokens_per_s\": %.2f, \"ms_per_step\": %.3f, \"comm_wait_frac\": %s, \"efficiency\": %.4f, "
               "\"rounds\": %d%s}\n",
               rows[k].impl, rows[k].label, rows[k].zero, k == ROW_ZERO ? "true" : "false", model, rows[k].nranks, B,
               T, tok, m, cw, e, R, extra);
      }
    }
    printf("# %s: efficiency headline %.1f%% is the yoke (ZeRO-1) row (optim.shard=true, what yoke train runs by "
           "default); yoke (no ZeRO) %.1f%% does the full AdamW update on every rank, as pytorch-ddp and the "
           "independent jobs do\n",
           model, 100 * yk_bench_median(eff[ROW_ZERO], R), 100 * yk_bench_median(eff[ROW_NOZERO], R));
    fflush(stdout);
  }

  if (o->png && npts && write_png(o->png, pts, npts, B, T)) exit_code = 1;
  fflush(stdout);

  /* Precision: 2 ranks, step time and bytes on the wire. */
  yk_model_config pc;
  char pdata[4200];
  snprintf(pdata, sizeof pdata, "%s/%s.bin", dir, pmodel);
  if (exit_code == 0 && yk_model_preset(pmodel, &pc, &d) == 0 &&
      (access(pdata, R_OK) == 0 || yk_bench_synthetic_shard(pdata, pc.vocab_size, (uint64_t)B * T * 2 * (steps + 1) * 8 + 1, &d) == 0)) {
    printf("\n# precision: %s, 2 ranks, yoke (ZeRO-1)\n# %-6s %10s %10s %16s\n", pmodel, "prec", "ms/step", "vs fp32", "bytes/step");
    double ms32 = 0;
    const char *precs[] = {"fp32", "fp16", "bf16"};
    for (int i = 0; i < 3; i++) {
      run_result r;
      char cmd[16384];
      if (run_job(cmd, sizeof cmd, self, launcher, 2, 1, pmodel, B, T, steps, 1, precs[i], pdata, &r) != 0) {
        fprintf(stderr, "yoke bench scale: the %s run failed; run it by hand to see why:\n  %s\n", precs[i], cmd);
        exit_code = keep = 1;
        continue;
      }
      if (i == 0) ms32 = r.ms;
      printf("  %-6s %10.1f %9.2fx %16.0f\n", precs[i], r.ms, r.ms / ms32, r.bytes);
      if (json)
        printf("{\"impl\": \"yoke\", \"label\": \"yoke (ZeRO-1)\", \"zero\": 1, \"model\": \"%s\", "
               "\"precision\": \"%s\", \"ranks\": 2, \"grad_accum\": 1, "
               "\"B\": %d, \"T\": %d, \"tokens_per_s\": %.2f, \"ms_per_step\": %.3f, \"comm_wait_frac\": %.4f, "
               "\"efficiency\": null, \"allreduce_bytes_per_step\": %.0f, \"time_vs_fp32\": %.4f}\n",
               pmodel, precs[i], B, T, 2.0 * B * T / (r.ms * 1e-3), r.ms, r.wait_frac, r.bytes, r.ms / ms32);
      fflush(stdout);
    }
    printf("\n# grad_accum: %s, 2 ranks, fp32, yoke (ZeRO-1)\n# %-6s %10s %16s %18s\n", pmodel, "accum", "ms/step", "bytes/step",
           "bytes/sample");
    for (int accum = 1; accum <= 4; accum *= 2) {
      run_result r;
      char cmd[16384];
      if (run_job(cmd, sizeof cmd, self, launcher, 2, 1, pmodel, B, T, 3, accum, "fp32", pdata, &r) != 0) {
        fprintf(stderr, "yoke bench scale: the grad_accum %d run failed; run it by hand to see why:\n  %s\n", accum,
                cmd);
        exit_code = keep = 1;
        continue;
      }
      double per_sample = r.bytes / (double)(B * accum * 2);
      printf("  %-6d %10.1f %16.0f %18.1f\n", accum, r.ms, r.bytes, per_sample);
      if (json)
        printf("{\"impl\": \"yoke\", \"label\": \"yoke (ZeRO-1)\", \"zero\": 1, \"model\": \"%s\", "
               "\"precision\": \"fp32\", \"ranks\": 2, \"grad_accum\": %d, "
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
