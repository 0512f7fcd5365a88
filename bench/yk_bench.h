/* yk_bench.h - `yoke bench ...`: benchmarks that print yoke beside the
 * baseline a user would otherwise run (PyTorch, MPI_Allreduce, gloo) in the
 * same run, with the ratio. Each returns the process exit code. */
#ifndef YK_BENCH_H
#define YK_BENCH_H

#include "yk_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* yoke bench <what> ...: dispatches to the benchmarks below. */
int yk_bench_cmd_main(int argc, char **argv);
/* yoke bench coll: collectives (all-reduce) per algorithm and transport in
 * the nccl-tests format, MPI_Allreduce and gloo beside, memory-bandwidth
 * ceiling; run under mpirun. */
int yk_bench_cmd_coll(int argc, char **argv);
/* yoke bench train: single-rank training throughput, MFU, PyTorch beside. */
int yk_bench_cmd_train(int argc, char **argv);
/* yoke bench scale: 1 vs 2 ranks of yoke train beside PyTorch DDP, precision
 * and grad_accum comparisons. */
int yk_bench_cmd_scale(int argc, char **argv);
/* yoke bench ckpt: checkpoint save/load throughput, compression ratio per
 * tensor kind and the training stall per asynchronous save. */
int yk_bench_cmd_ckpt(int argc, char **argv);

/* Helpers shared by the benchmarks. */
/* Median of v[0..n) (sorts v in place). */
double yk_bench_median(double *v, int n);
/* Parse "64,256" into out[0..max); returns the count or -1. */
int yk_bench_parse_int_list(const char *s, int *out, int max);
/* 1 if Debian's /usr/bin/python3 can import torch. */
int yk_bench_torch_available(void);
/* Median ms/step of bench/torch_gpt2.py for these shapes (ranks > 1: DDP
 * with gloo), or NAN if it could not run. */
double yk_bench_torch_ms(const char *model, int B, int T, int threads, int steps, int warmup, int ranks);

#ifdef __cplusplus
}
#endif
#endif
