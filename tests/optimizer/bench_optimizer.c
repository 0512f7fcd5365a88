/* bench_optimizer [N]: time the optimizer kernels on an arena of N fp32
 * parameters (default 124439808, GPT-2 124M) for each ISA variant. Not a
 * test (too slow for the suite); prints one line per kernel and variant:
 *   kernel isa ms GB/s
 * where GB/s counts the bytes each kernel must read and write. */
#include "yk_optimizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double best_ms(int reps, void (*fn)(void *), void *arg) {
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    double t0 = yk_now_s();
    fn(arg);
    double ms = (yk_now_s() - t0) * 1e3;
    if (ms < best) best = ms;
  }
  return best;
}

typedef struct {
  size_t n;
  float *p, *g, *m, *v;
  uint16_t *h;
  yk_isa isa;
  int step;
  yk_dtype dt16;
} ctx;

static void run_adamw(void *a) {
  ctx *c = a;
  yk_adamw h = {.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1, .isa = c->isa};
  yk_tensor_desc t = {.offset = 0, .numel = c->n, .decay = 1};
  yk_optimizer_adamw_step(&h, ++c->step, 6e-4, 0.5f, &t, 1, 0, c->n, c->p, c->g, c->m, c->v,
                          c->dt16 == YK_DT_F32 ? NULL : c->h, c->dt16);
}
static volatile double sink;
static void run_sumsq(void *a) {
  ctx *c = a;
  sink = yk_optimizer_sumsq(c->g, c->n, c->isa);
}
static void run_scan(void *a) {
  ctx *c = a;
  int64_t at;
  sink = yk_optimizer_find_nonfinite(c->g, YK_DT_F32, c->n, c->isa, &at);
}

int main(int argc, char **argv) {
  size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 124439808;
  ctx c = {.n = n};
  c.p = yk_alloc(n * 4);
  c.g = yk_alloc(n * 4);
  c.m = yk_alloc(n * 4);
  c.v = yk_alloc(n * 4);
  c.h = yk_alloc(n * 2);
  if (!c.p || !c.g || !c.m || !c.v || !c.h) {
    fprintf(stderr, "bench_optimizer: out of memory for %zu params\n", n);
    return 1;
  }
  yk_rng r;
  yk_rng_seed(&r, 1);
  for (size_t i = 0; i < n; i++) {
    c.p[i] = yk_rng_uniform(&r) - 0.5f;
    c.g[i] = (yk_rng_uniform(&r) - 0.5f) * 1e-2f;
  }
  printf("# %zu params; best of 3\n# kernel            isa     ms      GB/s\n", n);
  for (int isa = YK_ISA_PORTABLE; isa <= YK_ISA_AVX2; isa++) {
    c.isa = (yk_isa)isa;
    const char *in = yk_isa_name(c.isa);
    c.dt16 = YK_DT_F32;
    double ms = best_ms(3, run_adamw, &c);
    printf("adamw               %-8s %7.1f %7.2f\n", in, ms, n * 28.0 / ms / 1e6);
    c.dt16 = YK_DT_F16;
    ms = best_ms(3, run_adamw, &c);
    printf("adamw+f16 copy      %-8s %7.1f %7.2f\n", in, ms, n * 30.0 / ms / 1e6);
    c.dt16 = YK_DT_BF16;
    ms = best_ms(3, run_adamw, &c);
    printf("adamw+bf16 copy     %-8s %7.1f %7.2f\n", in, ms, n * 30.0 / ms / 1e6);
    ms = best_ms(3, run_sumsq, &c);
    printf("sumsq               %-8s %7.1f %7.2f\n", in, ms, n * 4.0 / ms / 1e6);
    ms = best_ms(3, run_scan, &c);
    printf("find_nonfinite f32  %-8s %7.1f %7.2f\n", in, ms, n * 4.0 / ms / 1e6);
  }
  return 0;
}
