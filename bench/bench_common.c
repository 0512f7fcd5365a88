/* bench_common.c - what the benchmarks share: medians, option lists, the
 * synthetic token shard, yoke's own training step timed on one rank (bench
 * train times it, bench ckpt compares its stall with it) and the PyTorch
 * baseline. */
#include "yk_bench.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "yk_data.h"
#include "yk_engine.h"
#include "yk_model.h"

#ifndef YK_SOURCE_DIR
#define YK_SOURCE_DIR "."
#endif

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double yk_bench_median(double *v, int n) {
  if (n <= 0) return NAN;
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int yk_bench_parse_int_list(const char *s, int *out, int max) {
  int n = 0;
  char buf[256];
  snprintf(buf, sizeof buf, "%s", s);
  for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    int64_t v;
    if (n >= max || yk_parse_i64(tok, &v) != 0 || v < 1 || v > 1 << 20) return -1;
    out[n++] = (int)v;
  }
  return n;
}

int yk_bench_synthetic_shard(const char *path, int V, uint64_t ntok, yk_diag *d) {
  uint16_t *tok = malloc(ntok * sizeof *tok);
  if (!tok) return yk_errorf(d, YK_ENOMEM, "out of memory for the synthetic shard");
  yk_rng rng;
  yk_rng_seed(&rng, 7);
  for (uint64_t i = 0; i < ntok; i++) tok[i] = (uint16_t)(yk_rng_u64(&rng) % (uint64_t)V);
  int rc = yk_data_shard_write(path, tok, ntok, d);
  free(tok);
  return rc;
}

int yk_bench_config_set(yk_config *c, yk_diag *d, const char *fmt, ...) {
  char kv[4400];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(kv, sizeof kv, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof kv) return yk_errorf(d, YK_ECONFIG, "config setting '%.40s...' is too long", kv);
  return yk_config_set(c, kv, d);
}

int yk_bench_engine_step_ms(const yk_bench_step_opts *o, double *ms, yk_diag *d) {
  yk_engine *e = NULL;
  double *times = NULL;
  char dir[64] = "", shard[128] = "";
  int rc, total = o->warmup + o->steps;
  yk_config c = *o->cfg;
  yk_model_config mc;
  if (o->steps < 1 || o->warmup < 0) return yk_errorf(d, YK_EINVAL, "%d timed steps after %d warm-up ones do not fit: "
                                                       "at least 1 timed, warm-up >= 0", o->steps, o->warmup);
  if ((rc = yk_model_config_from(&c, &mc, d)) != 0) return rc;
  /* one window of B*T tokens per micro-batch, none read twice */
  uint64_t ntok = (uint64_t)total * (uint64_t)c.train.grad_accum * (uint64_t)c.train.micro_batch *
                      (uint64_t)c.train.seq_len + 1;
  snprintf(dir, sizeof dir, "/tmp/yk_bench_step_XXXXXX");
  if (!mkdtemp(dir)) {
    dir[0] = '\0';
    return yk_errorf_sys(d, YK_EIO, "cannot create a temporary directory for the synthetic shard");
  }
  snprintf(shard, sizeof shard, "%s/train_000.bin", dir);
  if ((rc = yk_bench_synthetic_shard(shard, mc.vocab_size, ntok, d)) != 0) goto out;
  if ((rc = yk_bench_config_set(&c, d, "data.train=%s", shard)) != 0 ||
      (rc = yk_bench_config_set(&c, d, "data.val=")) != 0 ||
      (rc = yk_bench_config_set(&c, d, "ckpt.dir=")) != 0 ||
      (rc = yk_bench_config_set(&c, d, "train.steps=%d", total)) != 0)
    goto out;
  yk_layout one;
  yk_logger log;
  yk_logger_init(&log, -1, YK_LOG_WARN, stderr);
  if ((rc = yk_partition_layout(1, 1, 1, 0, &one, d)) != 0) goto out;
  yk_engine_opts eo = {.cfg = &c, .layout = one, .dev = o->dev, .log = &log};
  if ((rc = yk_engine_open(&eo, &e, d)) != 0) goto out;
  if (!(times = calloc((size_t)o->steps, sizeof *times))) {
    rc = yk_errorf(d, YK_ENOMEM, "out of memory for the step times");
    goto out;
  }
  for (int s = 0; s < total; s++) {
    yk_step_stats st;
    if ((rc = yk_engine_step(e, s, &st, d)) != 0) goto out;
    if (o->on_step) o->on_step(o->arg, s, &st);
    if (s >= o->warmup) times[s - o->warmup] = st.step_ms;
  }
  *ms = yk_bench_median(times, o->steps);
out:
  free(times);
  yk_engine_close(e);
  if (shard[0]) unlink(shard);
  if (dir[0]) rmdir(dir);
  return rc;
}

/* Run the PyTorch baseline; returns its ms/step or NAN if torch is absent. */
double yk_bench_torch_ms(const char *model, int B, int T, int threads, int steps, int warmup, int ranks) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "OMP_NUM_THREADS=%d OPENBLAS_NUM_THREADS=%d MKL_NUM_THREADS=%d OMP_WAIT_POLICY=PASSIVE "
           "MALLOC_MMAP_THRESHOLD_=8589934592 MALLOC_TRIM_THRESHOLD_=8589934592 MALLOC_TOP_PAD_=1073741824 "
           "/usr/bin/python3 %s/bench/torch_gpt2.py --model %s --B %d --T %d --threads %d --steps %d --warmup %d "
           "--ranks %d 2>/dev/null",
           threads, threads, threads, YK_SOURCE_DIR, model, B, T, threads, steps, warmup, ranks);
  FILE *p = popen(cmd, "r");
  if (!p) return NAN;
  char line[1024];
  double ms = NAN;
  while (fgets(line, sizeof line, p)) {
    const char *k = strstr(line, "\"ms_per_step\": ");
    if (k) ms = atof(k + 15);
  }
  pclose(p);
  return ms;
}

int yk_bench_torch_available(void) {
  return system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0;
}
