/* util.c - what the benchmarks share: medians, option lists, the synthetic
 * token shard they train on, and the PyTorch baseline runner. */
#include "yk_bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "yk_data.h"

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
