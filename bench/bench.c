/* bench.c - `yoke bench <what>` dispatch. */
#include "yk_bench.h"

#include <string.h>

typedef struct {
  const char *name;
  int (*fn)(int, char **);
  const char *summary;
} bench_entry;

static const bench_entry benches[] = {
    {"coll", yk_bench_cmd_coll, "all-reduce busbw per algorithm/transport beside MPI_Allreduce and gloo (mpirun)"},
    {"train", yk_bench_cmd_train, "one-rank training throughput and MFU, PyTorch beside"},
    {"scale", yk_bench_cmd_scale, "data-parallel weak scaling 1 -> 2 ranks, PyTorch DDP beside; fp16/bf16; grad_accum"},
    {"ckpt", yk_bench_cmd_ckpt, "checkpoint save/load GB/s, compression ratio, async stall"},
};

static void usage(FILE *out) {
  fprintf(out, "usage: yoke bench <what> [options]\n\nbenchmarks:\n");
  for (size_t i = 0; i < YK_ARRAY_LEN(benches); i++) fprintf(out, "  %-8s %s\n", benches[i].name, benches[i].summary);
  fprintf(out, "\nRun 'yoke bench <what> --help' for its options.\n");
}

int yk_bench_cmd_main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
    usage(stdout);
    return 0;
  }
  for (size_t i = 0; i < YK_ARRAY_LEN(benches); i++)
    if (!strcmp(argv[1], benches[i].name)) return benches[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "yoke bench: unknown benchmark '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
