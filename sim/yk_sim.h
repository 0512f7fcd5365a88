/* yk_sim.h - the one public header of yoke's `sim` module: the scaling
 * simulator (`yoke sim`, docs/scaling.md).
 *
 * It predicts the time of one training step of a job (a yk_config: model,
 * micro-batch, sequence length, gradient accumulation, precision, DP x TP x
 * PP layout, ZeRO stage, bucket size) on a cluster described by a small YAML
 * file (yk_sim_cluster), without running anything. Every input comes from a
 * home that already exists: FLOPs from the model (yk_model_flops_per_token),
 * collective times from the collectives' alpha-beta-gamma cost model
 * (yk_coll_model_time, constants from `yoke bench coll --calibrate`), the
 * rank order from partition/ (which ranks of a group share a node), and the
 * order of a step's operations from the engine's own schedule
 * (yk_engine_schedule_dp). The engine's overlap rules are applied by a small
 * event simulation of one rank (sim.c): buckets reduced in backward order on
 * one comm queue, ZeRO-3 gathers prefetched one layer ahead, TP collectives
 * on the critical path, the pipeline bubble from its schedule's formula.
 *
 * Nothing here keeps global state; a prediction is a pure function of its
 * inputs, so `--nodes 1,...,4096` is one call per point.
 */
#ifndef YK_SIM_H
#define YK_SIM_H

#include <stdio.h>

#include "yk_collectives.h"
#include "yk_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A cluster (a YAML file in cluster-configs/sim/; every key in docs/scaling.md). */
typedef struct yk_sim_cluster {
  char name[64];
  char origin[256];       /* the file it was read from, for messages */
  int nodes;              /* default node count (--nodes overrides) */
  int ranks_per_node;
  double gflops;          /* achieved GFLOP/s per rank on the model's products (0: peak_tflops x mfu) */
  double peak_tflops;     /* peak dense FLOP/s per rank in the job's precision, TFLOP/s */
  double mfu;             /* share of peak the model's products reach */
  double mem_gbs;         /* device memory bandwidth GB/s (optimizer update, reductions) */
  double mem_gb;          /* device memory per rank, GB (0: not checked) */
  yk_coll_model intra;    /* links inside a node, per rank: alpha, beta, gamma */
  yk_coll_model inter;    /* the network: alpha; beta per byte of the NODE's bandwidth; gamma */
  /* modelling knobs (section sim:) */
  int interleave;         /* virtual pipeline stages per rank V (1: plain 1F1B) */
  double tp_overlap;      /* share of the TP collectives hidden under compute (0: none, the engine today) */
  int recompute;          /* activation recomputation: backward re-runs the forward */
} yk_sim_cluster;

/* Defaults: 1 node of 1 rank, nothing else set. */
void yk_sim_cluster_default(yk_sim_cluster *c);
/* Read a cluster file on top of *c. Unknown keys, wrong types and values out
 * of range are YK_ECONFIG naming the file, line and key. A link given as
 * gbs + latency_us becomes alpha = latency, beta = 1/gbs; alpha_us and
 * beta_ns set them directly; model_file reads a `bench coll --calibrate`
 * file. gamma defaults to 3 bytes of memory traffic per reduced byte. */
int yk_sim_cluster_load(yk_sim_cluster *c, const char *path, yk_diag *d);
/* One "section.key=value" (from --set) for a cluster key; YK_ENOTFOUND
 * (nothing in d) when the key is not a cluster key. */
int yk_sim_cluster_set(yk_sim_cluster *c, const char *assignment, yk_diag *d);
/* Cross-field checks (a rate given, ranks per node > 0, ...). */
int yk_sim_cluster_check(const yk_sim_cluster *c, yk_diag *d);
/* The cluster's keys, one "key: value  # meaning" line each. */
void yk_sim_cluster_write(const yk_sim_cluster *c, FILE *out);

/* One prediction. Times are of one optimizer step, ms. */
typedef struct yk_sim_result {
  int nodes, ranks, dp, tp, pp;
  double step_ms;
  double compute_ms;      /* forward + backward (+ recomputation) of every micro-batch on one rank */
  double opt_ms;          /* the optimizer update (memory bound) */
  double tp_ms;           /* exposed TP collectives */
  double dp_ms;           /* exposed data-parallel reduction and gathers (ZeRO) */
  double pp_ms;           /* exposed pipeline sends (fill and drain) */
  double bubble_ms;       /* pipeline bubble */
  double tp_total_ms, dp_total_ms; /* all of it, hidden or not */
  double tokens_per_s;    /* whole job */
  double efficiency;      /* weak scaling: step time of one replica (dp 1) / this step time */
  double mfu;             /* model FLOPs per second per rank / peak (0 when no peak is given) */
  double intra_gb;        /* bytes a rank sends on intra-node links per step, GB */
  double inter_gb;        /* bytes a NODE sends on the network per step, GB */
  double mem_gb;          /* estimated memory per rank: model state + activations, GB */
  int dp_nodes, tp_nodes; /* nodes one DP / TP group spans */
  const char *dp_algo;    /* "ring", "tree", "hier", "shm"/"intra" */
} yk_sim_result;

/* Predict one step of job `cfg` on `nodes` nodes of `cl` (cfg's parallel.*
 * give tp and pp; dp = nodes x ranks_per_node / (tp x pp)). YK_ECONFIG
 * naming the value when the layout does not fit the ranks. */
int yk_sim_predict(const yk_sim_cluster *cl, const yk_config *cfg, int nodes, yk_sim_result *out, yk_diag *d);

/* The simulated step as a Chrome trace (docs/tracing.md, the trace module's
 * writer): one process, tracks compute, dp comm, tp comm, pipeline. */
int yk_sim_trace(const yk_sim_cluster *cl, const yk_config *cfg, int nodes, const char *path, yk_diag *d);

/* `yoke sim`: a curve over node counts. */
typedef struct yk_sim_opts {
  const yk_sim_cluster *cluster;
  const yk_config *cfg;
  const int *nodes;       /* node counts; n_nodes == 0: the cluster's */
  int n_nodes;
  int json;               /* one JSON object per row */
  int quiet_assumptions;  /* tests: no assumption block */
  const char *png;        /* efficiency against nodes (common's gnuplot helper) */
  const char *trace;      /* the last node count's step as a Chrome trace */
  FILE *out;
} yk_sim_opts;
/* Returns an exit code (0, 1 runtime, 2 config). */
int yk_sim_run(const yk_sim_opts *o);

/* `yoke sim --validate`: measure on this machine, predict, compare. */
typedef struct yk_sim_validate_opts {
  const char *yoke;       /* the yoke binary to run (the caller's own) */
  const char *workdir;    /* scratch directory for data, jobs and logs */
  int steps;              /* timed steps per configuration */
  int json;
  FILE *out;
} yk_sim_validate_opts;
int yk_sim_validate(const yk_sim_validate_opts *o);

#ifdef __cplusplus
}
#endif
#endif /* YK_SIM_H */
