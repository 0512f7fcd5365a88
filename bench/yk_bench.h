/* yk_bench.h - `yoke bench ...`: benchmarks that print yoke beside the
 * baseline a user would otherwise run (MPI_Allreduce, gloo, PyTorch) in the
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

#ifdef __cplusplus
}
#endif
#endif
