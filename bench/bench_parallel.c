/* bench_parallel.c - `yoke bench parallel`: one row per parallel layout of
 * the real `yoke train` on this machine, on the same global batch.
 *
 * Each row is one job (a synthetic token shard of the model's vocabulary,
 * `yoke train --json`, 2 ranks through `yoke launch`): 1 rank with 2
 * threads, then 2 ranks of 1 thread as DP2, TP2, TP2 + sequence
 * parallelism and ZeRO-1/2/3 over DP2. The data-parallel rows give each rank
 * half of the batch, so every row trains B x T tokens per step. From the
 * job's JSON lines it reads the median step time after the first (warm-up)
 * step, the bytes each rank handed to each group's collectives in a step
 * (dp_bytes, tp_bytes), and from every rank's closing line its peak
 * resident set (VmHWM) and what its engine says it holds
 * (yk_engine_memory_of: model state, working buffers, the model's
 * activations and scratch). Beside each figure: the count the layout's
 * formula gives (theory_of), and the targets. */
#include "yk_bench.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "yk_model.h"

/* The layouts, in print order. ranks = tp x dp; threads per rank. */
static const struct par_row {
  const char *name;  /* --rows and the JSON `layout` */
  const char *label; /* the table's */
  int tp, dp, zero, sp, threads;
} rows[] = {
    {"1rank", "1 rank x 2 threads", 1, 1, 0, 0, 2},
    {"dp2", "DP2", 1, 2, 0, 0, 1},
    {"tp2", "TP2", 2, 1, 0, 0, 1},
    {"tp2-sp", "TP2 + SP", 2, 1, 0, 1, 1},
    {"zero1", "ZeRO-1 (DP2)", 1, 2, 1, 0, 1},
    {"zero2", "ZeRO-2 (DP2)", 1, 2, 2, 0, 1},
    {"zero3", "ZeRO-3 (DP2)", 1, 2, 3, 0, 1},
};
enum { NROWS = (int)YK_ARRAY_LEN(rows), MAXRANKS = 2 };

void yk_bench_parallel_opts_default(yk_bench_parallel_opts *o) {
  *o = (yk_bench_parallel_opts){.model = "d12", .batch = 4, .seq_len = 256, .steps = 6, .rows = NULL};
}

/* What one job reported. */
typedef struct {
  double ms;                           /* median step after the first */
  double dp_bytes, tp_bytes;           /* per step, rank 0 (the last step's) */
  int nranks;                          /* closing lines read */
  double rss[MAXRANKS];                /* VmHWM per rank */
  double state[MAXRANKS], buffers[MAXRANKS], model[MAXRANKS]; /* yk_engine_memory_of per rank */
  double planned[MAXRANKS];            /* the planned peak (predicted_peak_bytes) */
  double base[MAXRANKS];               /* VmRSS before the engine opened: code, libraries, communicators */
} job_result;

/* A layout's communication by formula, per rank and step, fp32 (b = 4
 * bytes), P = this rank's parameters (after the TP split), N = B x T tokens
 * of a TP rank, C channels, L layers, n = the group's size. `ar`: the
 * buffers of all-reduces (a ring moves 2(n-1)/n of each per rank); `ag`: the
 * whole buffers of all-gathers, reduce-scatters, reductions to owners and
 * broadcasts from owners ((n-1)/n of each). */
typedef struct {
  double ar, ag;
} comm_theory;

static double wire(comm_theory t, int n) { return n > 1 ? (2.0 * (n - 1) / n) * t.ar + ((double)(n - 1) / n) * t.ag : 0; }

static void theory_of(const struct par_row *r, const yk_model_config *mc, int B, int T, comm_theory *dp,
                      comm_theory *tp) {
  double P = (double)yk_model_tp_num_params(mc, r->tp, 0), b = 4;
  double C = mc->channels, L = mc->layers, N = (double)B * T;
  memset(dp, 0, sizeof *dp);
  memset(tp, 0, sizeof *tp);
  if (r->dp > 1) {
    if (r->zero == 0) {
      dp->ar = P * b; /* the gradients, all-reduced */
    } else if (r->zero < 3) {
      dp->ag = 2 * P * b; /* gradients reduced to their owners, updated weights all-gathered */
    } else {
      /* gradients reduced to their owners; weights gathered region by
       * region: each layer before its forward and again before its
       * backward, the embedding (wte + wpe) and the head (lnf) once. (A
       * model of 2 layers gathers each once: both are still in the two
       * layer slots when its backward starts; d12 re-gathers all 12.) */
      double embed = ((double)mc->padded_vocab_size + mc->max_seq_len) * C, head = 2 * C;
      double layer = (P - embed - head) / L;
      dp->ag = P * b + ((L > 2 ? 2 * L : L) * layer + embed + head) * b;
    }
  }
  if (r->tp > 1) {
    if (!r->sp) {
      /* forward: the embedding's sum and 2 row-parallel outputs per layer;
       * backward: 2 column-parallel input gradients per layer and the LM
       * head's; all N x C. The cross-entropy: max (N) and sum-exp with the
       * target logit (2N). */
      tp->ar = ((4 * L + 2) * N * C + 3 * N) * b;
    } else {
      /* each all-reduce of N x C becomes a reduce-scatter, and each
       * LayerNorm output (ln1, ln2, lnf) and residual gradient read whole
       * is all-gathered first: 8 per layer + 4; the replicated tensors'
       * gradients are summed (6C per layer, lnf 2C, wpe T x C) */
      tp->ag = (8 * L + 4) * N * C * b;
      tp->ar = (6 * C * L + 2 * C + T * C + 3 * N) * b;
    }
  }
}

/* One job's command line (stderr to errpath). */
static void job_cmd(char *cmd, size_t cap, const char *self, const struct par_row *r, const char *model, int B, int T,
                    int steps, const char *data, const char *errpath) {
  int ranks = r->tp * r->dp, mb = B / r->dp;
  char train[8192];
  snprintf(train, sizeof train,
           "train --json --set data.val= --set train.log_every=1 --set optim.lr=1e-4 --set train.threads=%d "
           "--set optim.zero=%d --set parallel.tensor=%d --set parallel.sequence=%s --set model.name=%s "
           "--set train.micro_batch=%d --set train.seq_len=%d --set train.steps=%d --set train.grad_accum=1 "
           "--set data.train=%s",
           r->threads, r->zero, r->tp, r->sp ? "true" : "false", model, mb, T, steps, data);
  if (ranks == 1)
    snprintf(cmd, cap, "OMP_NUM_THREADS=%d %s %s 2>%s", r->threads, self, train, errpath);
  else
    snprintf(cmd, cap, "OMP_NUM_THREADS=%d %s launch -n %d -- %s 2>%s", r->threads, self, ranks, train, errpath);
}

static double num(json_t *o, const char *key) {
  json_t *v = json_object_get(o, key);
  return json_is_number(v) ? json_number_value(v) : NAN;
}

/* Run a job to its end and read its JSON lines. */
static int run_job(const char *cmd, job_result *res) {
  memset(res, 0, sizeof *res);
  FILE *p = popen(cmd, "r");
  if (!p) return YK_ESYS;
  char line[4096];
  double ms[1024];
  int nms = 0;
  while (fgets(line, sizeof line, p)) {
    const char *js = strchr(line, '{'); /* yoke launch prefixes each rank's lines with "[rN] " */
    if (!js) continue;
    json_t *o = json_loads(js, 0, NULL);
    if (!o) continue;
    if (json_is_true(json_object_get(o, "done"))) {
      int rk = (int)num(o, "rank");
      if (rk >= 0 && rk < MAXRANKS) {
        res->rss[rk] = num(o, "peak_rss_bytes");
        res->state[rk] = num(o, "mem_state_bytes");
        res->buffers[rk] = num(o, "mem_buffers_bytes");
        res->model[rk] = num(o, "mem_model_bytes");
        res->base[rk] = num(o, "base_rss_bytes");
        res->planned[rk] = num(o, "predicted_peak_bytes");
        res->nranks++;
      }
    } else if (json_object_get(o, "ms")) {
      /* rank 0's step lines; the first step warms caches and pools */
      if (num(o, "step") > 1 && nms < (int)YK_ARRAY_LEN(ms)) ms[nms++] = num(o, "ms");
      res->dp_bytes = num(o, "dp_bytes");
      res->tp_bytes = num(o, "tp_bytes");
    }
    json_decref(o);
  }
  int st = pclose(p);
  res->ms = yk_bench_median(ms, nms);
  return st == 0 && nms > 0 && res->nranks > 0 ? 0 : YK_EIO;
}

/* Which rows --rows names; 0 after printing why not. */
static int pick_rows(const char *list, int *want) {
  char buf[512];
  snprintf(buf, sizeof buf, "%s", list);
  for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    int k = 0;
    while (k < NROWS && strcmp(rows[k].name, t)) k++;
    if (k == NROWS) {
      fprintf(stderr, "yoke bench parallel: --rows: no layout '%s'; choose from 1rank,dp2,tp2,tp2-sp,zero1,zero2,zero3\n",
              t);
      return 0;
    }
    want[k] = 1;
  }
  return 1;
}

int yk_bench_parallel(const yk_bench_parallel_opts *o) {
  int B = (int)o->batch, T = (int)o->seq_len, steps = (int)o->steps, want[NROWS] = {0};
  if (o->rows) {
    if (!pick_rows(o->rows, want)) return 2;
  } else {
    for (int k = 0; k < NROWS; k++) want[k] = 1;
  }
  if (steps < 2) {
    fprintf(stderr, "yoke bench parallel: --steps %d leaves no timed step; give at least 2 (the first is warm-up)\n",
            steps);
    return 2;
  }
  for (int k = 0; k < NROWS; k++)
    if (want[k] && B % rows[k].dp) {
      fprintf(stderr, "yoke bench parallel: --batch %d does not split over the %d data-parallel ranks of row %s; give "
              "a batch divisible by %d\n", B, rows[k].dp, rows[k].name, rows[k].dp);
      return 2;
    }
  yk_diag d = {0};
  yk_model_config mc;
  int rc = yk_model_preset(o->model, &mc, &d);
  if (rc) {
    fprintf(stderr, "yoke bench parallel: %s\n", yk_diag_msg(&d, rc));
    return 2;
  }
  if (T > mc.max_seq_len) {
    fprintf(stderr, "yoke bench parallel: --seq-len %d exceeds model %s's max_seq_len %d\n", T, o->model,
            mc.max_seq_len);
    return 2;
  }
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    fprintf(stderr, "yoke bench parallel: cannot find the yoke binary (/proc/self/exe)\n");
    return 1;
  }
  self[n] = '\0';
  yk_isa isa = YK_ISA_PORTABLE;
  if (yk_isa_resolve(YK_ISA_AUTO, &isa, &d) != 0) yk_diag_clear(&d);
  char dir[] = "/tmp/yk_bench_parallel_XXXXXX";
  if (!mkdtemp(dir)) {
    fprintf(stderr, "yoke bench parallel: cannot create a temporary directory\n");
    return 1;
  }
  char data[64], errpath[64]; /* under dir, a fixed-length name */
  snprintf(data, sizeof data, "%s/train.bin", dir);
  snprintf(errpath, sizeof errpath, "%s/stderr.txt", dir);
  /* every step of every rank a fresh window */
  if ((rc = yk_bench_synthetic_shard(data, mc.vocab_size, (uint64_t)B * T * (uint64_t)(steps + 2) * 2 + 1, &d)) != 0) {
    fprintf(stderr, "yoke bench parallel: %s\n", yk_diag_msg(&d, rc));
    return 1;
  }
  printf("# yoke bench parallel: model %s, global batch B=%d x T=%d = %d tokens per step in every row (DP rows: "
         "B=%d per rank); %d steps per row, ms/step the median after the first; %s kernels; 2-rank rows 1 thread per "
         "rank through yoke launch, fp32\n",
         o->model, B, T, B * T, B / 2 > 0 ? B / 2 : B, steps, yk_isa_name(isa));
  printf("# comm: bytes per rank per step handed to each group's collectives (whole buffers), beside the formula "
         "(P = the rank's parameters, N = B x T, b = 4): DP all-reduce P·b; ZeRO-1/2 reduce-to-owners P·b + all-gather "
         "P·b; ZeRO-3 P·b + gathers (2L·layer + wte + wpe + lnf)·b; TP (4L + 2)·N·C·b all-reduces + 3N·b (cross-"
         "entropy); TP + SP (8L + 4)·N·C·b all-gathers/reduce-scatters + (6CL + 2C + TC + 3N)·b; wire per rank: a "
         "ring all-reduce moves 2(n-1)/n of its buffer, the others (n-1)/n; scalars (loss, norm) not counted\n");
  printf("# memory: per-rank peak RSS (VmHWM, the rank furthest from its plan) beside the planned peak of "
         "`yoke plan` (yk_engine_plan_of: model state by the ZeRO formula, activations, logits, working and "
         "communication buffers, the parts of peers' shared buffers read in place, the process itself)\n");
  printf("# %-20s %5s %9s %9s %9s %9s %9s %9s %9s %9s %6s\n", "layout", "ranks", "ms/step", "tokens/s", "dp MB",
         "(theory)", "tp MB", "(theory)", "RSS MB", "pred MB", "ratio");
  fflush(stdout);
  double ms_of[NROWS], tok_of[NROWS], ratio_of[NROWS];
  int ok_of[NROWS] = {0}, exit_code = 0, keep = 0;
  for (int k = 0; k < NROWS; k++) {
    if (!want[k]) continue;
    const struct par_row *r = &rows[k];
    char cmd[16384];
    job_result res;
    job_cmd(cmd, sizeof cmd, self, r, o->model, B, T, steps, data, errpath);
    if (run_job(cmd, &res) != 0) {
      fprintf(stderr, "yoke bench parallel: the %s row failed; its stderr ends:\n", r->name);
      char tail[128];
      snprintf(tail, sizeof tail, "tail -5 %s >&2", errpath);
      if (system(tail) != 0) fprintf(stderr, "  (no stderr kept)\n");
      fprintf(stderr, "  run it by hand: %s\n", cmd);
      exit_code = keep = 1;
      continue;
    }
    comm_theory tdp, ttp;
    theory_of(r, &mc, B, T, &tdp, &ttp);
    /* the rank whose measured peak is furthest from its prediction */
    int worst = 0;
    double pred[MAXRANKS], rss = 0, predicted = 0, state = 0;
    for (int i = 0; i < res.nranks && i < MAXRANKS; i++) {
      pred[i] = res.planned[i]; /* yk_engine_plan_of: the one prediction (yoke plan, docs/memory.md) */
      if (fabs(res.rss[i] / pred[i] - 1) > fabs(res.rss[worst] / pred[worst] - 1)) worst = i;
    }
    rss = res.rss[worst];
    predicted = pred[worst];
    state = res.state[worst];
    double tok = (double)B * T / (res.ms * 1e-3), ratio = rss / predicted;
    ms_of[k] = res.ms;
    tok_of[k] = tok;
    ratio_of[k] = ratio;
    ok_of[k] = 1;
    printf("  %-20s %5d %9.1f %9.0f %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %6.3f\n", r->label, r->tp * r->dp, res.ms,
           tok, res.dp_bytes / 1e6, (tdp.ar + tdp.ag) / 1e6, res.tp_bytes / 1e6, (ttp.ar + ttp.ag) / 1e6, rss / 1048576.0,
           predicted / 1048576.0, ratio);
    if (o->json)
      printf("{\"layout\": \"%s\", \"label\": \"%s\", \"tp\": %d, \"dp\": %d, \"zero\": %d, \"sp\": %s, "
             "\"threads_per_rank\": %d, \"model\": \"%s\", \"B\": %d, \"T\": %d, \"ms_per_step\": %.3f, "
             "\"tokens_per_s\": %.1f, \"peak_rss_bytes\": %.0f, \"predicted_state_bytes\": %.0f, "
             "\"predicted_peak_bytes\": %.0f, \"rss_ratio\": %.4f, \"comm_bytes\": {\"dp\": {\"measured\": %.0f, "
             "\"theory\": %.0f, \"wire_per_rank\": %.0f}, \"tp\": {\"measured\": %.0f, \"theory\": %.0f, "
             "\"wire_per_rank\": %.0f}}, \"isa\": \"%s\"}\n",
             r->name, r->label, r->tp, r->dp, r->zero, r->sp ? "true" : "false", r->threads, o->model, B, T, res.ms,
             tok, rss, state, predicted, ratio, res.dp_bytes, tdp.ar + tdp.ag, wire(tdp, r->dp), res.tp_bytes,
             ttp.ar + ttp.ag, wire(ttp, r->tp), yk_isa_name(isa));
    fflush(stdout);
  }
  /* the targets, beside the figures they judge */
  printf("# targets:\n");
  for (int k = 0; k < NROWS; k++)
    if (ok_of[k])
      printf("#   %-20s RSS / predicted %.3f: %s (within 10%%)\n", rows[k].label, ratio_of[k],
             fabs(ratio_of[k] - 1) <= 0.10 ? "met" : "MISSED");
  enum { ONE = 0, TP2 = 2, Z1 = 4, Z3 = 6 };
  if (ok_of[Z1] && ok_of[Z3])
    printf("#   ZeRO-3 tokens/s %.0f = %.1f%% of ZeRO-1's %.0f: %s (>= 90%%)\n", tok_of[Z3], 100 * tok_of[Z3] / tok_of[Z1],
           tok_of[Z1], tok_of[Z3] >= 0.9 * tok_of[Z1] ? "met" : "MISSED");
  if (ok_of[ONE] && ok_of[TP2])
    printf("#   TP2 step %.1f ms = %.2fx the 1-rank 2-thread step %.1f ms: %s (<= 1.15x)\n", ms_of[TP2],
           ms_of[TP2] / ms_of[ONE], ms_of[ONE], ms_of[TP2] <= 1.15 * ms_of[ONE] ? "met" : "MISSED");
  if (keep) {
    fprintf(stderr, "yoke bench parallel: kept %s (the data of the failed run); remove it when done\n", dir);
    return exit_code;
  }
  char rm[128];
  snprintf(rm, sizeof rm, "rm -rf %s", dir);
  if (system(rm) != 0) fprintf(stderr, "yoke bench parallel: could not remove %s\n", dir);
  return exit_code;
}
