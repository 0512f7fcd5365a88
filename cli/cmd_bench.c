/* cmd_bench.c - `yoke bench coll|train|scale|parallel|ckpt|elastic`: the command lines of
 * the benchmarks (bench/). Each table fills the benchmark's own options
 * struct, starting from its defaults. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "yk_bench.h"

/* ---- coll ---- */

typedef struct coll_opts {
  yk_bench_coll_opts b;
} coll_opts;

#define COLL(f) offsetof(coll_opts, b.f)
static const yk_opt coll_table[] = {
    {"--minbytes", 'b', YK_OPT_BYTES, COLL(minbytes), "SIZE", "smallest message (default 4K)", 1, 1e15},
    {"--maxbytes", 'e', YK_OPT_BYTES, COLL(maxbytes), "SIZE", "largest message (default 256M)", 1, 1e15},
    {"--stepfactor", 'f', YK_OPT_INT, COLL(stepfactor), "N", "size multiplier between rows (default 2)", 2, 1000000},
    {"--iters", 'n', YK_OPT_INT, COLL(iters), "N", "timed iterations per row, at most (default 20; fewer for large rows)",
     1, 1000000},
    {"--warmup", 'w', YK_OPT_INT, COLL(warmup), "N", "warm-up iterations (default 2)", 0, 1000000},
    {"--transport", 0, YK_OPT_STR, COLL(transports), "LIST", "libfabric,mpi (default both)"},
    {"--provider", 0, YK_OPT_STR, COLL(provider), "NAME", "libfabric provider (default shm on one host, else tcp;ofi_rxm)"},
    {"--algo", 0, YK_OPT_STR, COLL(algos), "LIST",
     "ring,tree,shm,auto (default ring,tree,shm; tree rows stop at --tree-max;\n"
     "                            shm rows only where the ranks share a host)"},
    {"--tree-max", 0, YK_OPT_BYTES, COLL(tree_max), "SIZE", "largest message for the tree algorithm (default 4M)", 1,
     1e15},
    {"--dtype", 0, YK_OPT_STR, COLL(dtypes), "LIST", "f32,f16,bf16 (default f32,f16)"},
    {"--segment", 0, YK_OPT_BYTES, COLL(segment), "SIZE",
     "ring pipeline segment and board block (default 256K; 1M for ring over\n"
     "                            network providers)", 1, 1e15},
    {"--no-mpi", 0, YK_OPT_FLAG, COLL(no_mpi), NULL, "do not measure MPI_Allreduce"},
    {"--no-register", 0, YK_OPT_FLAG, COLL(no_register), NULL,
     "do not register the buffers with yoke (shm then copies peers' buffers\n"
     "                            through the kernel, process_vm_readv, instead of reading them directly)"},
    {"--no-gloo", 0, YK_OPT_FLAG, COLL(no_gloo), NULL, "do not run torch.distributed gloo"},
    {"--timeout-ms", 0, YK_OPT_INT, COLL(timeout_ms), "MS", "per-operation deadline (default 60000)", 100, 1000000},
    {"--json", 0, YK_OPT_FLAG, COLL(json), NULL, "one JSON object per row on stdout (table goes to stderr)"},
    {"--png", 0, YK_OPT_STR, COLL(png), "FILE", "plot busbw against size with gnuplot"},
    {"--calibrate", 0, YK_OPT_STR, COLL(calibrate), "FILE",
     "measure the cost model's alpha/beta/gamma and write them to FILE"},
};
#undef COLL

static const yk_cmd_spec coll_spec = {
    .name = "bench coll",
    .synopsis = "[options]",
    .about = "Run it under mpirun: mpirun -np N yoke bench coll [options].\n"
             "All-reduce busbw and latency per transport, algorithm and dtype (nccl-tests table),\n"
             "with MPI_Allreduce on the same buffers, gloo beside (if torch is installed) and the\n"
             "memory-bandwidth ceiling of this host.",
    .opts = coll_table,
    .nopts = YK_ARRAY_LEN(coll_table),
};

static int cmd_coll(int argc, char **argv) {
  coll_opts o;
  yk_bench_coll_opts_default(&o.b);
  int code = cli_parse(&coll_spec, argc, argv, &o);
  return code >= 0 ? code : yk_bench_coll(&o.b);
}

/* ---- train ---- */

typedef struct train_opts {
  yk_bench_train_opts b;
  const char *seq_lens, *threads;
} train_opts;

#define TRAIN(f) offsetof(train_opts, b.f)
static const yk_opt train_table[] = {
    {"--model", 0, YK_OPT_STR, TRAIN(model), "NAME", "GPT-2 preset (default d12 = GPT-2 124M)"},
    {"--batch", 0, YK_OPT_INT, TRAIN(batch), "B", "micro-batch (default 4)", 1, 100000},
    {"--seq-len", 0, YK_OPT_STR, offsetof(train_opts, seq_lens), "LIST",
     "comma-separated sequence lengths (default 64,256)"},
    {"--threads", 0, YK_OPT_STR, offsetof(train_opts, threads), "LIST", "comma-separated thread counts (default 1,2)"},
    {"--steps", 0, YK_OPT_INT, TRAIN(steps), "N", "timed steps per configuration (default 3)", 1, 100000},
    {"--warmup", 0, YK_OPT_INT, TRAIN(warmup), "N", "untimed steps first (default 1)", 0, 100000},
    {"--no-torch", 0, YK_OPT_FLAG, TRAIN(no_torch), NULL, "skip the PyTorch baseline"},
    {"--json", 0, YK_OPT_FLAG, TRAIN(json), NULL, "also print one JSON object per line per measurement"},
    {"--profile", 0, YK_OPT_FLAG, TRAIN(profile), NULL,
     "also print the wall time per step of every device kernel\n"
     "                            (one line per gemm shape) and of the optimizer"},
    {"--trace", 0, YK_OPT_FLAG, TRAIN(trace), NULL,
     "instead: the overhead of train.trace, an engine tracing and one not\n"
     "                            stepping in turn (--steps each, at least 50), medians and ratio"},
    {"--trace-detail", 0, YK_OPT_STR, TRAIN(trace_detail), "step|layer|kernel", "with --trace: train.trace_detail (default step)"},
};
#undef TRAIN

static const yk_cmd_spec train_spec = {
    .name = "bench train",
    .synopsis = "[options]",
    .about = "Training throughput of one rank: ms/step, tokens/s, GFLOP/s and MFU against\n"
             "the sgemm rate measured in the same run, beside a PyTorch baseline.",
    .opts = train_table,
    .nopts = YK_ARRAY_LEN(train_table),
};

/* "64,256" into out[0..8); the count, or 0 after printing why not. */
static int int_list(const char *flag, const char *s, int *out) {
  int n = yk_bench_parse_int_list(s, out, 8);
  if (n <= 0)
    fprintf(stderr, "yoke bench train: %s needs a comma-separated list of at most 8 positive integers, got '%s'\n",
            flag, s);
  return n > 0 ? n : 0;
}

static int cmd_train(int argc, char **argv) {
  train_opts o = {0};
  yk_bench_train_opts_default(&o.b);
  int code = cli_parse(&train_spec, argc, argv, &o);
  if (code >= 0) return code;
  if (o.seq_lens && !(o.b.nseq_lens = int_list("--seq-len", o.seq_lens, o.b.seq_lens))) return 2;
  if (o.threads && !(o.b.nthreads = int_list("--threads", o.threads, o.b.threads))) return 2;
  return yk_bench_train(&o.b);
}

/* ---- pipeline ---- */

typedef struct pipe_opts {
  yk_bench_pipe_opts b;
  const char *micro;
} pipe_opts;

#define PIPE(f) offsetof(pipe_opts, b.f)
static const yk_opt pipe_table[] = {
    {"--models", 0, YK_OPT_STR, PIPE(models), "LIST", "presets, or deep = d12 with 24 blocks (default d12,deep)"},
    {"--schedules", 0, YK_OPT_STR, PIPE(schedules), "LIST", "of gpipe,1f1b,interleaved (default all three)"},
    {"--batch", 0, YK_OPT_INT, PIPE(batch), "B", "micro-batch (default 1)", 1, 65536},
    {"--seq-len", 0, YK_OPT_INT, PIPE(seq_len), "T", "sequence length (default 64)", 1, 65536},
    {"--microbatches", 0, YK_OPT_STR, offsetof(pipe_opts, micro), "LIST",
     "micro-batches per step, even (default 2,4,8,16)"},
    {"--steps", 0, YK_OPT_INT, PIPE(steps), "N", "timed steps per row (default 3)", 1, 100000},
    {"--warmup", 0, YK_OPT_INT, PIPE(warmup), "N", "untimed steps first (default 1)", 0, 100000},
    {"--json", 0, YK_OPT_FLAG, PIPE(json), NULL, "also print one JSON object per row"},
};
#undef PIPE

static const yk_cmd_spec pipe_spec = {
    .name = "bench pipeline",
    .synopsis = "[options]",
    .about = "Pipeline parallelism, 2 stages as threads of this process (1 compute thread each):\n"
             "ms/step, measured bubble beside theory and activation memory beside 1F1B's bound per\n"
             "schedule and micro-batch count, beside one rank with 2 threads on the same global batch.",
    .opts = pipe_table,
    .nopts = YK_ARRAY_LEN(pipe_table),
};

static int cmd_pipe(int argc, char **argv) {
  pipe_opts o = {0};
  yk_bench_pipe_opts_default(&o.b);
  int code = cli_parse(&pipe_spec, argc, argv, &o);
  if (code >= 0) return code;
  if (o.micro && !(o.b.nmicro = int_list("--microbatches", o.micro, o.b.micro))) return 2;
  return yk_bench_pipe(&o.b);
}

/* ---- scale ---- */

typedef struct scale_opts {
  yk_bench_scale_opts b;
  yk_bench_hosts_opts h; /* --hosts: the multi-host benchmark (bench_hosts.c) */
} scale_opts;

#define SCALE(f) offsetof(scale_opts, b.f)
static const yk_opt scale_table[] = {
    {"--models", 0, YK_OPT_STR, SCALE(models), "LIST", "presets to scale (default d12,d6)"},
    {"--batch", 0, YK_OPT_INT, SCALE(batch), "B", "micro-batch per rank (default 4)", 1, 65536},
    {"--seq-len", 0, YK_OPT_INT, SCALE(seq_len), "T", "sequence length (default 256)", 1, 65536},
    {"--steps", 0, YK_OPT_INT, SCALE(steps), "N",
     "steps per run; the first is warm-up, ms/step is the median of the rest (default 5)", 2, 65536},
    {"--repeat", 0, YK_OPT_INT, SCALE(repeat), "N",
     "rounds of the scaling runs, back to back; medians reported (default 1).\n"
     "                            Each round runs yoke 1 rank, 2 ranks with ZeRO-1 and without, two\n"
     "                            independent jobs, 1 rank; each 2-rank run is set against the 1-rank runs\n"
     "                            just before and after it",
     1, 64},
    {"--launcher", 0, YK_OPT_STR, SCALE(launcher), "L",
     "launch (yoke launch, libfabric; default) or mpirun (MPI transport)"},
    {"--precision-model", 0, YK_OPT_STR, SCALE(precision_model), "NAME",
     "preset for the precision and grad_accum tables (default d6)"},
    {"--no-torch", 0, YK_OPT_FLAG, SCALE(no_torch), NULL, "skip PyTorch DDP"},
    {"--json", 0, YK_OPT_FLAG, SCALE(json), NULL, "also print one JSON object per line per measurement"},
    {"--png", 0, YK_OPT_STR, SCALE(png), "FILE",
     "plot efficiency against ranks, one line per model and row, beside the\n"
     "                            ideal (gnuplot; the script is kept in FILE.gp)"},
    {"--hosts", 0, YK_OPT_INT, offsetof(scale_opts, h.hosts), "K",
     "instead: weak scaling over K network-namespace hosts on shaped links (root;\n"
     "                            docs/scaling.md, \"Multi-host benchmarks on one machine\")", 1, 16},
    {"--ppn", 0, YK_OPT_INT, offsetof(scale_opts, h.ppn), "N", "with --hosts: ranks per host (default 1)", 1, 8},
    {"--link-gbit", 0, YK_OPT_STR, offsetof(scale_opts, h.link_gbit), "LIST",
     "with --hosts: link rates in Gbit/s, e.g. 1,10; 0 = unshaped (default 1)"},
    {"--layouts", 0, YK_OPT_STR, offsetof(scale_opts, h.layouts), "LIST",
     "with --hosts: dp,zero1,zero2,zero3,tp2 (default dp,zero1,zero3,tp2; TP2 needs --ppn 2)"},
};
#undef SCALE

static const yk_cmd_spec scale_spec = {
    .name = "bench scale",
    .synopsis = "[options]",
    .about = "Weak scaling of yoke train from 1 to 2 ranks (1 thread each), with ZeRO-1 (optim.shard=true,\n"
             "the default and the efficiency headline) and without (optim.shard=false, the full AdamW update\n"
             "on every rank as in PyTorch DDP), beside PyTorch DDP; then fp32/fp16/bf16 and grad_accum comparisons.",
    .opts = scale_table,
    .nopts = YK_ARRAY_LEN(scale_table),
};

static int cmd_scale(int argc, char **argv) {
  scale_opts o;
  yk_bench_scale_opts_default(&o.b);
  yk_bench_hosts_opts_default(&o.h);
  int code = cli_parse(&scale_spec, argc, argv, &o);
  if (code >= 0) return code;
  return o.h.hosts > 0 ? yk_bench_scale_hosts(&o.b, &o.h) : yk_bench_scale(&o.b);
}

/* ---- parallel ---- */

typedef struct parallel_opts {
  yk_bench_parallel_opts b;
} parallel_opts;

#define PAR(f) offsetof(parallel_opts, b.f)
static const yk_opt parallel_table[] = {
    {"--model", 0, YK_OPT_STR, PAR(model), "NAME", "GPT-2 preset (default d12 = GPT-2 124M)"},
    {"--batch", 0, YK_OPT_INT, PAR(batch), "B",
     "global micro-batch of every row (default 4; the data-parallel rows take\n"
     "                            B/2 per rank, so it must be even for them)", 1, 65536},
    {"--seq-len", 0, YK_OPT_INT, PAR(seq_len), "T", "sequence length (default 256)", 1, 65536},
    {"--steps", 0, YK_OPT_INT, PAR(steps), "N",
     "steps per row; the first is warm-up, ms/step is the median of the rest (default 6)", 2, 65536},
    {"--rows", 0, YK_OPT_STR, PAR(rows), "LIST",
     "layouts to run, of 1rank,dp2,tp2,tp2-sp,zero1,zero2,zero3 (default all)"},
    {"--json", 0, YK_OPT_FLAG, PAR(json), NULL, "also print one JSON object per row"},
    {"--png", 0, YK_OPT_STR, PAR(png), "FILE",
     "plot per layout the peak RSS beside the planned peak, and tokens/s\n"
     "                            (gnuplot; the script is kept in FILE.gp)"},
};
#undef PAR

static const yk_cmd_spec parallel_spec = {
    .name = "bench parallel",
    .synopsis = "[options]",
    .about = "One row per parallel layout of yoke train on the same global batch: 1 rank x 2 threads, DP2,\n"
             "TP2, TP2 + sequence parallelism, ZeRO-1/2/3 over DP2 (2 ranks of 1 thread): ms/step, tokens/s,\n"
             "bytes per step of each group against the formula, per-rank peak RSS against the prediction,\n"
             "and the targets (RSS within 10%, ZeRO-3 >= 90% of ZeRO-1's tokens/s, TP2 <= 1.15x one rank).",
    .opts = parallel_table,
    .nopts = YK_ARRAY_LEN(parallel_table),
};

static int cmd_parallel(int argc, char **argv) {
  parallel_opts o;
  yk_bench_parallel_opts_default(&o.b);
  int code = cli_parse(&parallel_spec, argc, argv, &o);
  return code >= 0 ? code : yk_bench_parallel(&o.b);
}

/* ---- ckpt ---- */

typedef struct ckpt_opts {
  yk_bench_ckpt_opts b;
} ckpt_opts;

#define CKPT(f) offsetof(ckpt_opts, b.f)
static const yk_opt ckpt_table[] = {
    {"--layers", 0, YK_OPT_INT, CKPT(layers), "L", "transformer layers (default 12: GPT-2 124M, 1.74 GB of state)", 1, 96},
    {"--channels", 0, YK_OPT_INT, CKPT(channels), "C", "model width (default 768)", 8, 16384},
    {"--vocab", 0, YK_OPT_INT, CKPT(vocab), "V",
     "vocabulary (default 50257; wte is padded to a multiple of 128: 50304)", 8, 1 << 20},
    {"--world", 0, YK_OPT_INT, CKPT(world), "W",
     "size of the simulated world; this process writes rank 0's 1/W (default 1)", 1, 4096},
    {"--level", 0, YK_OPT_INT, CKPT(level), "N", "zstd level -7..22 (default 1, as ckpt.level)", -7, 22},
    {"--threads", 0, YK_OPT_INT, CKPT(threads), "N", "compression threads (default 0 = all cores)", 0, 64},
    {"--step-ms", 0, YK_OPT_INT, CKPT(step_ms), "MS",
     "training step time the stall is compared with, e.g. the ms/step of a real\n"
     "                            run (default 0: measure it, yoke's own step of this model on one rank\n"
     "                            with every core, median of 3 after 1 warm-up)", 0, 10000000},
    {"--batch", 0, YK_OPT_INT, CKPT(batch), "B", "micro-batch of the measured step (default train.micro_batch: 4)", 1,
     65536},
    {"--seq-len", 0, YK_OPT_INT, CKPT(seq_len), "T",
     "sequence length of the measured step, at most 1024 (default train.seq_len: 64)", 1, 1024},
    {"--adam-steps", 0, YK_OPT_INT, CKPT(adam_steps), "N",
     "fake AdamW steps that make the synthetic m and v (default 3: they then\n"
     "                            compress like real runs' state, docs/checkpoint-format.md)", 1, 1000},
    {"--repeat", 0, YK_OPT_INT, CKPT(repeat), "N",
     "synchronous saves, cold loads and warm loads to time; medians are\n"
     "                            reported (default 3)", 1, 64},
    {"--buffered", 0, YK_OPT_FLAG, CKPT(buffered), NULL,
     "write shards through the page cache instead of O_DIRECT (ckpt buffered_io)"},
    {"--dir", 0, YK_OPT_STR, CKPT(dir), "DIR", "where to write (default a new directory under /tmp, removed afterwards)"},
    {"--json", 0, YK_OPT_FLAG, CKPT(json), NULL, "also print the figures as one JSON object"},
};
#undef CKPT

static const yk_cmd_spec ckpt_spec = {
    .name = "bench ckpt",
    .synopsis = "[options]",
    .about = "Benchmark checkpoint save/load throughput, compression ratio per tensor kind and the training stall\n"
             "per asynchronous save, on the state of a GPT-2 (the model's tensor table: C=768, maxT=1024) with\n"
             "L layers and synthetic values.",
    .opts = ckpt_table,
    .nopts = YK_ARRAY_LEN(ckpt_table),
};

static int cmd_ckpt(int argc, char **argv) {
  ckpt_opts o;
  yk_bench_ckpt_opts_default(&o.b);
  int code = cli_parse(&ckpt_spec, argc, argv, &o);
  return code >= 0 ? code : yk_bench_ckpt(&o.b);
}

/* ---- elastic ---- */

typedef struct elastic_opts {
  yk_bench_elastic_opts b;
} elastic_opts;

#define EL(f) offsetof(elastic_opts, b.f)
static const yk_opt elastic_table[] = {
    {"--models", 0, YK_OPT_STR, EL(models), "LIST", "GPT-2 presets (default d6,d12; tiny for a quick look)"},
    {"--ranks", 0, YK_OPT_INT, EL(ranks), "N", "ranks at the start, one is killed (default 4)", 2, 64},
    {"--batch", 0, YK_OPT_INT, EL(batch), "B", "micro-batch (default 1)", 1, 65536},
    {"--seq-len", 0, YK_OPT_INT, EL(seq_len), "T", "sequence length (default 64)", 1, 65536},
    {"--accum", 0, YK_OPT_INT, EL(accum), "N",
     "micro-batches per rank at --ranks (default 3); the global batch stays, so\n"
     "                            ranks x N must divide over ranks - 1", 1, 65536},
    {"--kill-after", 0, YK_OPT_INT, EL(kill_after), "N",
     "steps completed before the kill, at a random moment of the next (default 15)", 2, 1000000},
    {"--ckpt-every", 0, YK_OPT_INT, EL(ckpt_every), "K", "torchrun's checkpoint interval in steps (default 10)", 1,
     1000000},
    {"--timeout", 0, YK_OPT_INT, EL(timeout_s), "S", "deadline of each wait in seconds (default 600)", 1, 86400},
    {"--seed", 0, YK_OPT_INT, EL(seed), "N", "seed of the victim and the moment (default 0: from the clock)", 0,
     1e15},
    {"--no-torch", 0, YK_OPT_FLAG, EL(no_torch), NULL, "skip torchrun"},
    {"--no-grow", 0, YK_OPT_FLAG, EL(no_grow), NULL, "skip the grow (yoke launch --add 1)"},
    {"--json", 0, YK_OPT_FLAG, EL(json), NULL, "also print one JSON object per row"},
};
#undef EL

static const yk_cmd_spec elastic_spec = {
    .name = "bench elastic",
    .synopsis = "[options]",
    .about = "An elastic job of N ranks (yoke launch, 1 thread each) loses a random rank to kill -9 in the\n"
             "middle of a step: time to detect, re-form, restore the state and to the first step after it,\n"
             "completed steps lost; then the time from `yoke launch --add 1` to the first step at full size.\n"
             "torchrun's elastic agent beside (restart of every worker from a checkpoint every K steps).",
    .opts = elastic_table,
    .nopts = YK_ARRAY_LEN(elastic_table),
};

static int cmd_elastic(int argc, char **argv) {
  elastic_opts o;
  yk_bench_elastic_opts_default(&o.b);
  int code = cli_parse(&elastic_spec, argc, argv, &o);
  return code >= 0 ? code : yk_bench_elastic(&o.b);
}

static const cli_cmd bench_cmds[] = {
    {"coll", cmd_coll, "all-reduce busbw per algorithm/transport beside MPI_Allreduce and gloo (mpirun)"},
    {"train", cmd_train, "one-rank training throughput and MFU, PyTorch beside"},
    {"pipeline", cmd_pipe, "pipeline parallelism P=2: ms/step, bubble and activation memory per schedule"},
    {"scale", cmd_scale, "data-parallel weak scaling 1 -> 2 ranks, PyTorch DDP beside; fp16/bf16; grad_accum"},
    {"parallel", cmd_parallel, "one row per parallel layout: DP2, TP2 (+SP), ZeRO-1/2/3; bytes and RSS vs formula"},
    {"ckpt", cmd_ckpt, "checkpoint save/load GB/s, compression ratio, async stall"},
    {"elastic", cmd_elastic, "kill -9 of a rank: time to detect, re-form, resume, steps lost; grow; torchrun beside"},
};

int cli_cmd_bench(int argc, char **argv) {
  return cli_dispatch("yoke bench", "benchmark", bench_cmds, YK_ARRAY_LEN(bench_cmds), argc, argv);
}
