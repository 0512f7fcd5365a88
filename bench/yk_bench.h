/* yk_bench.h - `yoke bench ...`: benchmarks that print yoke beside the
 * baseline a user would otherwise run (PyTorch, MPI_Allreduce, gloo) in the
 * same run, with the ratio. */
#ifndef YK_BENCH_H
#define YK_BENCH_H

#include "yk_common.h"
#include "yk_device.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Each benchmark takes an options struct (set it with its _default
 * function, then change fields), prints its figures to stdout (with json,
 * also one JSON object per line) and returns the process exit code: 0, 1 (a
 * run failed; stderr says which), 2 (the options do not fit, e.g. a sequence
 * length above the model's). Their command lines are parsed in cli/. */

/* yoke bench coll: all-reduce busbw/latency per transport, algorithm and
 * dtype in the nccl-tests format, MPI_Allreduce on the same buffers, gloo
 * beside, the memory-bandwidth and TCP loopback ceilings; run it under
 * mpirun (it calls MPI_Init and MPI_Finalize). */
typedef struct yk_bench_coll_opts {
  uint64_t minbytes, maxbytes; /* message sizes (default 4K .. 256M) */
  int64_t stepfactor;          /* size multiplier between rows (default 2) */
  int64_t iters, warmup;       /* timed iterations per row, at most (default 20); warm-up ones (default 2) */
  const char *transports;      /* list of libfabric,mpi (default both) */
  const char *provider;        /* libfabric provider (default NULL: shm on one host, else tcp;ofi_rxm) */
  const char *algos;           /* list of ring,tree,shm,auto (default ring,tree,shm) */
  uint64_t tree_max;           /* largest message for the tree algorithm (default 4M) */
  const char *dtypes;          /* list of f32,f16,bf16 (default f32,f16) */
  uint64_t segment;            /* ring pipeline segment and board block (default 0: the communicator's) */
  int no_mpi, no_register, no_gloo; /* skip MPI_Allreduce / do not register the buffers / skip gloo */
  int64_t timeout_ms;          /* per-operation deadline (default 60000) */
  int json;                    /* JSON rows on stdout, the table on stderr */
  const char *png;             /* plot busbw against size with gnuplot into this file (default NULL) */
  const char *calibrate;       /* measure the cost model instead and write it to this file (default NULL) */
} yk_bench_coll_opts;
void yk_bench_coll_opts_default(yk_bench_coll_opts *o);
int yk_bench_coll(const yk_bench_coll_opts *o);

/* yoke bench train: single-rank training throughput, MFU, PyTorch beside. */
typedef struct yk_bench_train_opts {
  const char *model;           /* GPT-2 preset (default d12) */
  int64_t batch;               /* micro-batch (default 4) */
  int seq_lens[8], nseq_lens;  /* sequence lengths (default 64, 256) */
  int threads[8], nthreads;    /* thread counts (default 1, 2) */
  int64_t steps, warmup;       /* timed steps per configuration (default 3), untimed first (default 1) */
  int no_torch, json, profile; /* skip PyTorch / JSON rows / per-kernel wall time */
  int trace;                   /* instead: train.trace's overhead, A/B of two engines stepping in turn (>= 50 steps) */
  const char *trace_detail;    /* train.trace_detail of the traced engine (NULL: the default, step) */
} yk_bench_train_opts;
void yk_bench_train_opts_default(yk_bench_train_opts *o);
int yk_bench_train(const yk_bench_train_opts *o);

/* yoke bench pipeline: P = 2 stages as threads (1 compute thread each) per
 * model, schedule and micro-batch count: ms/step, the measured bubble beside
 * (P-1)/(m+P-1) (GPipe, 1F1B) or (P-1)/(V*m+P-1) (interleaved, V = 2), the
 * busiest stage's activation memory beside 1F1B's bound, and one rank with 2
 * threads on the same global batch. */
typedef struct yk_bench_pipe_opts {
  const char *models;          /* presets, or "deep" (d12 with 24 blocks) (default "d12,deep") */
  const char *schedules;       /* of gpipe,1f1b,interleaved (default all three) */
  int64_t batch, seq_len;      /* micro-batch B (default 1) and T (default 64) */
  int micro[8], nmicro;        /* micro-batches per step (default 2, 4, 8, 16) */
  int64_t steps, warmup;       /* timed steps (default 3), untimed first (default 1) */
  int json;                    /* also one JSON object per row */
} yk_bench_pipe_opts;
void yk_bench_pipe_opts_default(yk_bench_pipe_opts *o);
int yk_bench_pipe(const yk_bench_pipe_opts *o);

/* yoke bench scale: 1 vs 2 ranks of yoke train, the 2 ranks with ZeRO-1
 * (optim.shard=true: the efficiency headline) and without, beside PyTorch
 * DDP and two independent jobs; precision and grad_accum comparisons. */
typedef struct yk_bench_scale_opts {
  const char *models;          /* comma-separated presets to scale (default "d12,d6") */
  int64_t batch, seq_len;      /* per rank (default 4, 256) */
  int64_t steps;               /* per run, >= 2; the first is warm-up (default 5) */
  int64_t repeat;              /* rounds of the scaling runs; medians reported (default 1) */
  const char *launcher;        /* "launch" (yoke launch, libfabric; default) or "mpirun" (MPI transport) */
  const char *precision_model; /* preset of the precision and grad_accum tables (default "d6") */
  int no_torch, json;
  const char *png;             /* plot efficiency against ranks with gnuplot into this file (default NULL) */
} yk_bench_scale_opts;
void yk_bench_scale_opts_default(yk_bench_scale_opts *o);
int yk_bench_scale(const yk_bench_scale_opts *o);

/* yoke bench scale --hosts K: weak scaling over K network-namespace hosts
 * on this machine (scripts/nshosts.sh), links shaped with tc tbf; needs
 * root. Takes the model list, batch, sequence length, steps and json of
 * the scale options. */
typedef struct yk_bench_hosts_opts {
  int64_t hosts, ppn;          /* hosts (0: not this benchmark) and ranks per host (default 1) */
  const char *link_gbit;       /* link rates in Gbit/s, comma-separated, 0 = unshaped (default "1") */
  const char *layouts;         /* dp,zero1,zero2,zero3,tp2 (default dp,zero1,zero3,tp2; TP stays in a host) */
} yk_bench_hosts_opts;
void yk_bench_hosts_opts_default(yk_bench_hosts_opts *o);
int yk_bench_scale_hosts(const yk_bench_scale_opts *s, const yk_bench_hosts_opts *h);

/* yoke bench parallel: one row per parallel layout (1 rank x 2 threads,
 * DP2, TP2, TP2 + sequence parallelism, ZeRO-1/2/3 over DP2) of `yoke
 * train` on the same global batch: ms/step, tokens/s, bytes per group
 * against the formula, per-rank peak RSS against the prediction, and the
 * targets of issue 13. */
typedef struct yk_bench_parallel_opts {
  const char *model;           /* GPT-2 preset (default d12) */
  int64_t batch, seq_len;      /* global B (data-parallel rows: B/2 per rank; default 4) and T (default 256) */
  int64_t steps;               /* per row, >= 2; the first is warm-up (default 6) */
  const char *rows;            /* comma-separated layouts: 1rank,dp2,tp2,tp2-sp,zero1,zero2,zero3 (default NULL: all) */
  int json;                    /* also one JSON object per row */
  const char *png;             /* plot peak RSS beside the planned peak, and tokens/s, per layout (default NULL) */
} yk_bench_parallel_opts;
void yk_bench_parallel_opts_default(yk_bench_parallel_opts *o);
int yk_bench_parallel(const yk_bench_parallel_opts *o);

/* yoke bench ckpt: checkpoint save/load throughput, compression ratio per
 * tensor kind and the training stall per asynchronous save as a fraction of
 * the model's training step (measured unless step_ms is given), on the state
 * of a GPT-2 (the model's tensor table) with synthetic values. */
typedef struct yk_bench_ckpt_opts {
  int64_t layers, channels;    /* model shape (default 12, 768: GPT-2 124M, 1.74 GB of state) */
  int64_t vocab;               /* vocabulary (default 50257; the table is padded to a multiple of 128) */
  int64_t world;               /* simulated world size; this process writes rank 0's 1/W (default 1) */
  int64_t level, threads;      /* zstd level (default 1), compression threads (default 0: all cores) */
  int64_t step_ms;             /* training step the stall is compared with (default 0: measure it) */
  int64_t batch, seq_len;      /* B and T of the measured step (default 0: train.micro_batch, train.seq_len) */
  int64_t adam_steps;          /* fake AdamW steps that make the synthetic m and v (default 3) */
  int64_t repeat;              /* saves and loads timed; medians reported (default 3) */
  int buffered;                /* page-cache writes instead of O_DIRECT */
  const char *dir;             /* where to write (default NULL: a new directory under /tmp, removed after) */
  int json;                    /* also one JSON object with the figures */
} yk_bench_ckpt_opts;
void yk_bench_ckpt_opts_default(yk_bench_ckpt_opts *o);
int yk_bench_ckpt(const yk_bench_ckpt_opts *o);

/* yoke bench elastic: an elastic job of `ranks` ranks (yoke launch, 1
 * thread each) per model loses a random rank to kill -9 at a random moment
 * of step kill_after + 1: time to detect, re-form, restore the state and
 * the first step after it, and the completed steps lost; then the time from
 * `yoke launch --add 1` to the first step at the full size; torchrun's
 * elastic agent (restart of every worker from a checkpoint every
 * ckpt_every steps) beside. docs/elasticity.md, "Benchmark". */
typedef struct yk_bench_elastic_opts {
  const char *models;          /* comma-separated presets (default "d6,d12") */
  int64_t ranks;               /* ranks at the start (default 4) */
  int64_t batch, seq_len;      /* micro-batch B (default 1) and T (default 64) */
  int64_t accum;               /* micro-batches per rank at `ranks` (default 3: 12 in all, 4 each on 3 ranks) */
  int64_t kill_after;          /* steps completed before the kill (default 15) */
  int64_t ckpt_every;          /* torchrun's checkpoint interval K in steps (default 10) */
  int64_t timeout_s;           /* deadline of each wait (default 600) */
  int64_t seed;                /* victim and moment of the kill (default 0: from the clock) */
  int no_torch, no_grow, json; /* skip torchrun / the grow / also one JSON object per row */
} yk_bench_elastic_opts;
void yk_bench_elastic_opts_default(yk_bench_elastic_opts *o);
int yk_bench_elastic(const yk_bench_elastic_opts *o);

/* Helpers shared by the benchmarks (bench_common.c). */
/* Median of v[0..n) (sorts v in place). */
double yk_bench_median(double *v, int n);
/* Write a token shard of ntok random tokens in [0, V) (a fixed seed) to path:
 * the data of the training benchmarks. */
int yk_bench_synthetic_shard(const char *path, int V, uint64_t ntok, yk_diag *d);
/* yk_config_set of a printf-formatted "key=value". */
int yk_bench_config_set(yk_config *c, yk_diag *d, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* yoke's own training step (yk_engine_step: forward, backward, norm, AdamW)
 * on one rank, on a synthetic shard of the model's vocabulary written to a
 * temporary directory (removed after): `warmup` untimed steps, then `steps`
 * timed ones. The config gives the model, batch and optimizer; data.train,
 * data.val, ckpt.dir and train.steps are the helper's. */
typedef struct yk_bench_step_opts {
  const yk_config *cfg; /* copied */
  yk_device *dev;       /* borrowed: its threads are the step's */
  int warmup, steps;
  void (*on_step)(void *arg, int step, const yk_step_stats *st); /* after every step; may be NULL */
  void *arg;
} yk_bench_step_opts;
/* The median ms of the timed steps into *ms. */
int yk_bench_engine_step_ms(const yk_bench_step_opts *o, double *ms, yk_diag *d);
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
