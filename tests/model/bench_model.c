/* bench_model.c - forward+backward timing of a GPT-2 preset (not a ctest;
 * for tuning). Usage: bench_model [preset] [B] [T] [threads] [steps] [act]
 * act: fp32 (default), fp16 or bf16 = the dtype of the kept activations.
 * Prints ms/step, tokens/s, GFLOP/s and MFU against the device's measured
 * sgemm rate. Also the process CPU time per step (on a machine shared with
 * other work, the 1-thread CPU time is the better estimate of dedicated-core
 * speed). */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "yk_model.h"

static double cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  const char *preset = argc > 1 ? argv[1] : "d12";
  int B = argc > 2 ? atoi(argv[2]) : 4, T = argc > 3 ? atoi(argv[3]) : 64;
  int threads = argc > 4 ? atoi(argv[4]) : 1, steps = argc > 5 ? atoi(argv[5]) : 3;
  yk_diag d = {0};
  yk_device *dev;
  if (yk_device_cpu_create(threads, YK_ISA_AUTO, &dev, &d)) return fprintf(stderr, "%s\n", d.msg), 1;
  yk_model_config cfg;
  if (yk_model_preset(preset, &cfg, &d)) return fprintf(stderr, "%s\n", d.msg), 1;
  yk_model *m;
  const char *act = argc > 6 ? argv[6] : "fp32";
  yk_dtype adt = !strcmp(act, "fp16") ? YK_DT_F16 : !strcmp(act, "bf16") ? YK_DT_BF16 : YK_DT_F32;
  if (yk_model_create_ex(&cfg, B, T, dev, adt, &m, &d)) return fprintf(stderr, "%s\n", d.msg), 1;
  printf("%s B=%d T=%d act=%s: memory %.1f MiB (kept activations %.1f MiB)\n", preset, B, T, act,
         yk_model_memory_bytes(m) / 1048576.0, yk_model_activation_bytes(m) / 1048576.0);
  yk_model_init_random(m, 1);
  int32_t *in = malloc(sizeof(int32_t) * B * T), *tg = malloc(sizeof(int32_t) * B * T);
  for (int i = 0; i < B * T; i++) in[i] = (i * 7919) % cfg.vocab_size, tg[i] = (i * 104729 + 1) % cfg.vocab_size;
  double best = 1e30, tf = 0, tb = 0, bestcpu = 1e30;
  for (int s = 0; s <= steps; s++) {
    float loss;
    double t0 = yk_now_s(), c0 = cpu_s();
    yk_model_forward(m, in, tg, &loss, NULL);
    double t1 = yk_now_s();
    yk_model_zero_grad(m);
    yk_model_backward(m, NULL);
    double t2 = yk_now_s(), c2 = cpu_s();
    if (s > 0 && c2 - c0 < bestcpu) bestcpu = c2 - c0;
    if (s > 0 && t2 - t0 < best) best = t2 - t0, tf = t1 - t0, tb = t2 - t1;
    fprintf(stderr, "step %d loss %.4f %.1f ms\n", s, loss, (t2 - t0) * 1e3);
  }
  double gf = yk_device_gemm_gflops(dev, B * T, 4 * cfg.channels, cfg.channels, 10);
  double flops = yk_model_flops_per_token(&cfg, T) * B * T;
  printf("yoke %s B=%d T=%d threads=%d isa=%s: %.1f ms/step (fwd %.1f bwd %.1f), %.0f tok/s, %.1f GFLOP/s, sgemm %.1f "
         "GFLOP/s, MFU %.0f%%, mem %.0f MiB, cpu %.1f ms/step\n",
         preset, B, T, dev->nthreads, yk_isa_name(dev->isa), best * 1e3, tf * 1e3, tb * 1e3, B * T / best,
         flops / best / 1e9, gf, 100 * flops / best / 1e9 / gf, yk_model_memory_bytes(m) / 1048576.0, bestcpu * 1e3);
  yk_model_destroy(m);
  yk_device_destroy(dev);
  free(in);
  free(tg);
  return 0;
}
