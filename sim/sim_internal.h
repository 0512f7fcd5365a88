/* sim_internal.h - private to sim/: the simulated job and the spans its
 * walk records for --trace. */
#ifndef YK_SIM_INTERNAL_H
#define YK_SIM_INTERNAL_H

#include "yk_model.h"
#include "yk_partition.h"
#include "yk_sim.h"

typedef enum { SIM_COMPUTE = 0, SIM_DP, SIM_TP, SIM_PIPE, SIM_TRACKS_ } sim_track;

typedef struct sim_span {
  sim_track track;
  const char *name; /* static */
  double t0, t1;    /* s from the step's start */
  int micro;        /* -1: none */
  double bytes;
} sim_span;

typedef struct sim_job {
  const yk_sim_cluster *cl;
  yk_model_config mc;
  int B, T, m, tp, pp, dp, zero, b; /* b: bytes of a gradient / weight on the wire */
  double bucket;                    /* comm.bucket_kb in bytes */
  int nodes;
  yk_layout layout;
  struct sim_grp {
    int p, local, nodes; /* ranks, of them on one node, nodes spanned */
  } g_dp, g_tp;
  double rate; /* achieved FLOP/s per rank */
  /* the walk's state */
  double q;              /* the DP comm queue is free from here, s */
  double intra, inter;   /* bytes per rank inside the node, per node on the network */
  double dp_total;       /* s of DP communication, hidden or not */
  const char *algo;      /* of the gradient reduction */
  int spans;             /* record spans (yk_sim_trace) */
  sim_span *spans_buf;
  int nspans, cap;
} sim_job;

int sim_job_init(sim_job *j, const yk_sim_cluster *cl, const yk_config *cfg, int nodes, yk_diag *d);
/* The walk; fills everything in r but the efficiency. */
int sim_job_run(sim_job *j, yk_sim_result *r, yk_diag *d);

#endif
