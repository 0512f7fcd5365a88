/* yk_bench.h - `yoke bench ...` subcommands. */
#ifndef YK_BENCH_H
#define YK_BENCH_H

#ifdef __cplusplus
extern "C" {
#endif

/* `yoke bench ckpt`: checkpoint save/load throughput, compression ratio per
 * tensor kind and the training stall per asynchronous save (bench_ckpt.c). */
int yk_bench_cmd_ckpt(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
