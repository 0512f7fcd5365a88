/* sim.c - one step of one rank, simulated: the prediction of yk_sim_predict
 * and the spans of yk_sim_trace come from the same walk (docs/scaling.md,
 * "The model").
 *
 * The walk follows the engine's schedule (yk_engine_schedule_dp: forward
 * and backward of each micro-batch, then the reduction's wait and the
 * update) on the first pipeline stage, region by region (embedding, layers,
 * head), with one clock for compute and one FIFO queue for the data-parallel
 * communicator (the comm thread runs its operations in call order):
 *   - gradients become final region by region in backward order; they are
 *     coalesced into buckets of comm.bucket_kb and each bucket is queued
 *     when full (ZeRO 0/1: on the last micro-batch's backward; 2/3: every
 *     backward), so only what is left after backward is exposed;
 *   - ZeRO-3 gathers a layer's weights before its forward and backward on
 *     the same queue, the next layer's while this one computes;
 *   - ZeRO-1 all-gathers the updated slices after the update (exposed);
 *   - TP collectives run inside each layer on the critical path, less the
 *     cluster's sim.tp_overlap share;
 *   - the pipeline adds the bubble of 1F1B, (P-1)/V micro-batch times, and
 *     the fill and drain sends.
 * Collective times are yk_coll_model_time over the links a group crosses:
 * which ranks of a group share a node follows partition/'s rank order. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sim_internal.h"
#include "yk_engine.h"
#include "yk_model.h"
#include "yk_partition.h"

/* A group of p ranks: `local` of them per node, over `nodes` nodes. */
typedef struct sim_grp grp;

/* The group of rank 0 along g: how its ranks fall on nodes of rpn ranks. */
static grp group_of(const yk_layout *l, yk_group g, int rpn) {
  int n = g == YK_GROUP_DP ? l->dp : g == YK_GROUP_TP ? l->tp : l->pp;
  grp r = {n, 0, 0};
  int last_node = -1;
  for (int i = 0; i < n; i++) {
    int rank = yk_partition_layout_rank(l, g == YK_GROUP_DP ? i : 0, g == YK_GROUP_TP ? i : 0, g == YK_GROUP_PP ? i : 0);
    int node = rank / rpn;
    if (node == 0) r.local++;
    if (node != last_node) r.nodes++, last_node = node;
  }
  return r;
}

static yk_coll_model with_gamma(yk_coll_model m, double mem_gbs) {
  /* a reduction reads two operands and writes one: 3 bytes per byte */
  if (m.gamma_ns <= 0 && mem_gbs > 0) m.gamma_ns = 3.0 / mem_gbs;
  return m;
}

/* Seconds of one collective of `bytes` on g; adds the bytes a rank sends
 * inside its node and a node sends on the network to *intra, *inter. The
 * algorithm is the selector's: inside one node the intra link; one rank per
 * node: ring or tree, the cheaper; several ranks per node over several nodes:
 * an all-reduce is hierarchical (node reduce-scatter, all-reduce of 1/local
 * across nodes, node all-gather), the halves a ring whose slowest hop is the
 * network. Every rank of a node runs its own group's collective at the same
 * time (lockstep), so the node's network bandwidth is shared by the streams
 * that leave it. */
static double coll(const sim_job *j, const grp *g, yk_coll_kind k, double bytes, double *intra, double *inter,
                   const char **algo) {
  if (g->p <= 1 || bytes <= 0) return 0;
  const yk_sim_cluster *cl = j->cl;
  yk_coll_model mi = with_gamma(cl->intra, cl->mem_gbs), mn = with_gamma(cl->inter, cl->mem_gbs);
  double frac = k == YK_COLL_ALLREDUCE ? 2.0 : 1.0; /* vector passes of a ring */
  int rpn = cl->ranks_per_node;
  if (g->nodes <= 1) {
    double tr = yk_coll_model_time(&mi, k, YK_ALGO_RING, g->p, bytes);
    double tt = k == YK_COLL_ALLREDUCE ? yk_coll_model_time(&mi, k, YK_ALGO_TREE, g->p, bytes) : 1e300;
    *intra += frac * (g->p - 1) / g->p * bytes;
    if (algo) *algo = "intra";
    return tt < tr ? tt : tr;
  }
  if (g->local <= 1 || k != YK_COLL_ALLREDUCE) {
    /* a ring (or tree) through the network: rpn / local streams leave a node */
    yk_coll_model m = mn;
    double streams = (double)rpn / g->local;
    m.beta_ns *= streams;
    double tr = yk_coll_model_time(&m, k, YK_ALGO_RING, g->p, bytes);
    double tt = k == YK_COLL_ALLREDUCE ? yk_coll_model_time(&m, k, YK_ALGO_TREE, g->p, bytes) : 1e300;
    double sent = frac * (g->p - 1) / g->p * bytes;
    *inter += streams * sent;
    *intra += (double)(g->local - 1) / g->local * sent;
    if (algo) *algo = tt < tr ? "tree" : "ring";
    return tt < tr ? tt : tr;
  }
  /* hierarchical: each local rank all-reduces its 1/local chunk across the
   * nodes, all rpn ranks of a node at once */
  yk_coll_model m = mn;
  m.beta_ns *= rpn;
  double chunk = bytes / g->local;
  double tr = yk_coll_model_time(&m, YK_COLL_ALLREDUCE, YK_ALGO_RING, g->nodes, chunk);
  double tt = yk_coll_model_time(&m, YK_COLL_ALLREDUCE, YK_ALGO_TREE, g->nodes, chunk);
  double t = yk_coll_model_time(&mi, YK_COLL_REDUCE_SCATTER, YK_ALGO_RING, g->local, bytes) + (tt < tr ? tt : tr) +
             yk_coll_model_time(&mi, YK_COLL_ALLGATHER, YK_ALGO_RING, g->local, bytes);
  *intra += 2.0 * (g->local - 1) / g->local * bytes;
  *inter += rpn * 2.0 * (g->nodes - 1) / g->nodes * chunk;
  if (algo) *algo = "hier";
  return t;
}

/* One point-to-point send of `bytes` between neighbouring pipeline stages. */
static double p2p(const sim_job *j, double bytes, double *intra, double *inter) {
  const yk_sim_cluster *cl = j->cl;
  int stride = j->dp * j->tp; /* ranks of one stage: the next stage is this far */
  if (stride < cl->ranks_per_node && cl->ranks_per_node % (2 * stride) == 0) {
    *intra += bytes;
    return cl->intra.alpha_us * 1e-6 + bytes * cl->intra.beta_ns * 1e-9;
  }
  int streams = stride < cl->ranks_per_node ? stride : cl->ranks_per_node;
  *inter += streams * bytes;
  return cl->inter.alpha_us * 1e-6 + bytes * cl->inter.beta_ns * streams * 1e-9;
}

static void rec(sim_job *j, sim_track tr, const char *name, double t0, double t1, int micro, double bytes) {
  if (!j->spans || t1 <= t0) return;
  if (j->nspans == j->cap) {
    int cap = j->cap ? 2 * j->cap : 256;
    sim_span *s = realloc(j->spans_buf, (size_t)cap * sizeof *s);
    if (!s) return; /* the trace loses spans; the prediction does not change */
    j->spans_buf = s;
    j->cap = cap;
  }
  j->spans_buf[j->nspans++] = (sim_span){tr, name, t0, t1, micro, bytes};
}

/* The DP queue: an operation issued at `at` starts when the comm thread is
 * free, runs `dur`; returns its end. */
static double queue(sim_job *j, double at, double dur, const char *name, double bytes) {
  double s = at > j->q ? at : j->q;
  j->q = s + dur;
  rec(j, SIM_DP, name, s, j->q, -1, bytes);
  return j->q;
}

/* Queue the gradient bucket of *bucket bytes (coalesced regions) at `at`. */
static void flush(sim_job *j, double *bucket, double at, yk_coll_kind k, const char *name) {
  if (*bucket > 0 && j->dp > 1) {
    double dur = coll(j, &j->g_dp, k, *bucket, &j->intra, &j->inter, &j->algo);
    queue(j, at, dur, name, *bucket);
    j->dp_total += dur;
  }
  *bucket = 0;
}

int sim_job_init(sim_job *j, const yk_sim_cluster *cl, const yk_config *cfg, int nodes, yk_diag *d) {
  memset(j, 0, sizeof *j);
  j->cl = cl;
  int rc = yk_model_config_from(cfg, &j->mc, d);
  if (rc) return rc;
  j->B = (int)cfg->train.micro_batch;
  j->T = (int)cfg->train.seq_len;
  j->m = (int)cfg->train.grad_accum;
  j->tp = (int)cfg->parallel.tensor;
  j->pp = (int)cfg->parallel.pipeline;
  j->zero = yk_config_zero_stage(cfg);
  j->b = yk_config_precision(cfg) == YK_PREC_FP32 ? 4 : 2;
  j->bucket = (double)cfg->comm.bucket_kb * 1024;
  j->nodes = nodes;
  long long world = (long long)nodes * cl->ranks_per_node;
  if (world > (1 << 30))
    return yk_errorf(d, YK_ECONFIG, "%d nodes x %d ranks: too many ranks to simulate (at most 2^30)", nodes,
                     cl->ranks_per_node);
  if ((rc = yk_partition_layout((int)world, j->tp, j->pp, 0, &j->layout, d))) return rc;
  j->dp = j->layout.dp;
  if (j->mc.layers % j->pp)
    return yk_errorf(d, YK_ECONFIG, "parallel.pipeline=%d does not divide model.layers=%d: pick a pipeline degree that "
                     "divides the layers", j->pp, j->mc.layers);
  if (j->mc.heads % j->tp)
    return yk_errorf(d, YK_ECONFIG, "parallel.tensor=%d does not divide model.heads=%d: pick a divisor of the heads",
                     j->tp, j->mc.heads);
  j->g_dp = group_of(&j->layout, YK_GROUP_DP, cl->ranks_per_node);
  j->g_tp = group_of(&j->layout, YK_GROUP_TP, cl->ranks_per_node);
  j->rate = cl->gflops > 0 ? cl->gflops * 1e9 : cl->peak_tflops * 1e12 * cl->mfu;
  return 0;
}

/* The walk. Fills r's times (everything but efficiency). */
int sim_job_run(sim_job *j, yk_sim_result *r, yk_diag *d) {
  const yk_model_config *mc = &j->mc;
  const yk_sim_cluster *cl = j->cl;
  int L = mc->layers, Ls = L / j->pp, C = mc->channels, tp = j->tp, pp = j->pp;
  double N = (double)j->B * j->T; /* tokens of a micro-batch */
  /* FLOPs per token by region, from the model's one formula: a layer is
   * what one more layer adds, the head what is left with none */
  yk_model_config c0 = *mc, c1 = *mc;
  c0.layers = 0;
  c1.layers = L - 1;
  double f_all = yk_model_flops_per_token(mc, j->T), f_head = yk_model_flops_per_token(&c0, j->T);
  double f_layer = f_all - yk_model_flops_per_token(&c1, j->T);
  /* Stage 0 of pp: Ls layers plus its share of the head's products (the
   * head sits on the last stage; stages are taken as balanced). */
  double t_layer = N * f_layer / tp / j->rate;          /* forward + backward of one layer, s */
  double t_head = N * f_head / tp / pp / j->rate;
  double fw = 1.0 / 3, bw = 2.0 / 3 + (cl->recompute ? 1.0 / 3 : 0);
  /* per-rank parameters of a region: its TP piece (replicated vectors and
   * wpe counted whole) */
  double p_layer = (12.0 * C * C) / tp + 13.0 * C;
  double p_embed = (double)mc->padded_vocab_size * C / tp + (double)mc->max_seq_len * C;
  double p_head = 2.0 * C;
  double p_rank = Ls * p_layer + p_embed + (pp == 1 ? p_head : 0);
  int dp = j->dp;
  j->intra = j->inter = 0;
  /* TP: 2 all-reduces of (N, C) fp32 per layer forward and 2 backward
   * (sequence parallelism: a reduce-scatter + all-gather, the same bytes and
   * time); the embedding's forward and the head's backward one more each. */
  double tp_intra = 0, tp_inter = 0; /* of one TP all-reduce, counted per use below */
  double ar_act = coll(j, &j->g_tp, YK_COLL_ALLREDUCE, N * C * 4, &tp_intra, &tp_inter, NULL);
  int tp_ops = 0;
  double tp_scale = 1 - cl->tp_overlap;
  double g_bytes = j->b; /* gradient / weight bytes on the wire */
  double tp_total = 0;
  j->algo = "-";
  j->dp_total = 0;

  yk_schedule *s = malloc(sizeof *s);
  if (!s) return yk_errorf(d, YK_ENOMEM, "out of memory for the schedule");
  int rc = yk_engine_schedule_dp(j->m, L, s, d);
  if (rc) {
    free(s);
    return rc;
  }
  double t = 0, wait = 0, tp_exposed = 0;
  j->q = 0;
  /* ZeRO-3: each region's weights are gathered before use; the embedding
   * and the head once per step, each layer before its forward and again
   * before its backward, the next one prefetched while this one computes. */
  double ag_layer = 0, ag_embed = 0;
  if (j->zero == 3 && dp > 1) {
    ag_layer = coll(j, &j->g_dp, YK_COLL_ALLGATHER, p_layer * g_bytes, &j->intra, &j->inter, NULL);
    ag_embed = coll(j, &j->g_dp, YK_COLL_ALLGATHER, (p_embed + p_head) * g_bytes, &j->intra, &j->inter, NULL);
    double e = queue(j, 0, ag_embed, "allgather params", (p_embed + p_head) * g_bytes);
    j->dp_total += ag_embed;
    if (e > t) wait += e - t, t = e;
  }
  yk_coll_kind red = j->zero == 0 ? YK_COLL_ALLREDUCE : YK_COLL_REDUCE_SCATTER;
  const char *red_name = j->zero == 0 ? "allreduce" : "reduce_owned";
  double bucket = 0;
  /* issue a bucket of `bytes` at time `at` */
  for (int i = 0; i < s->n; i++) {
    const yk_sched_op *op = &s->ops[i];
    if (op->kind == YK_SCHED_FORWARD || op->kind == YK_SCHED_BACKWARD) {
      int back = op->kind == YK_SCHED_BACKWARD;
      double share = back ? bw : fw;
      double t0 = t;
      /* embedding (forward first) / head (backward first) */
      double e_tp = (pp == 1 || !back) ? ar_act * tp_scale : 0;
      t += t_head * share + e_tp;
      tp_exposed += e_tp;
      tp_total += ar_act;
      tp_ops++;
      double g = 0; /* ZeRO-3 gather in flight: its end */
      if (ag_layer > 0) g = queue(j, t, ag_layer, "allgather params", p_layer * g_bytes), j->dp_total += ag_layer;
      int reducing = dp > 1 && (op->reduce || (back && j->zero >= 2));
      if (back && reducing && pp == 1) bucket += p_head * g_bytes;
      for (int k = 0; k < Ls; k++) {
        if (g > t) wait += g - t, t = g;
        if (ag_layer > 0 && k + 1 < Ls) g = queue(j, t, ag_layer, "allgather params", p_layer * g_bytes), j->dp_total += ag_layer;
        double lt = t_layer * share, tpl = 2 * ar_act;
        t += lt + tpl * tp_scale;
        tp_exposed += tpl * tp_scale;
        tp_total += tpl;
        tp_ops += 2;
        if (back && reducing) {
          bucket += p_layer * g_bytes;
          if (bucket >= j->bucket) flush(j, &bucket, t, red, red_name);
        }
      }
      if (back && reducing) {
        bucket += p_embed * g_bytes; /* the embedding's gradient is final last */
        flush(j, &bucket, t, red, red_name);
      }
      rec(j, SIM_COMPUTE, back ? "backward" : "forward", t0, t, op->micro, 0);
    } else if (op->kind == YK_SCHED_REDUCE) {
      if (j->q > t) {
        rec(j, SIM_COMPUTE, "reduce", t, j->q, -1, 0);
        wait += j->q - t, t = j->q;
      }
    } else if (op->kind == YK_SCHED_UPDATE) {
      /* AdamW reads weights, gradients, m, v and writes weights, m, v: 28
       * bytes of memory traffic per fp32 parameter it owns */
      double owned = j->zero >= 1 ? p_rank / dp : p_rank;
      double u = owned * 28 / (cl->mem_gbs * 1e9);
      rec(j, SIM_COMPUTE, "update", t, t + u, -1, 0);
      t += u;
      r->opt_ms = u * 1e3;
      if (j->zero == 1 && dp > 1) {
        double ag = coll(j, &j->g_dp, YK_COLL_ALLGATHER, p_rank * g_bytes, &j->intra, &j->inter, NULL);
        rec(j, SIM_DP, "allgather params", t, t + ag, -1, p_rank * g_bytes);
        t += ag, wait += ag, j->dp_total += ag;
      }
    }
  }
  free(s);
  /* the pipeline: 1F1B's bubble is P-1 micro-batch times on every stage
   * (interleaved: (P-1)/V), and the fill and drain chains of sends */
  double micro = t_layer * Ls * (fw + bw) + t_head * (fw + bw);
  double bubble = pp > 1 ? (double)(pp - 1) / cl->interleave * micro : 0;
  double pp_exp = 0;
  if (pp > 1) {
    double act = N * C * j->b / tp;
    double one = p2p(j, act, &j->intra, &j->inter);
    pp_exp = 2.0 * (pp - 1) * cl->interleave * one;
    /* steady state: every micro-batch sends its activation and receives its gradient (hidden) */
    for (int k = 0; k < 2 * j->m * cl->interleave - 1; k++) p2p(j, act, &j->intra, &j->inter);
    rec(j, SIM_PIPE, "bubble", t, t + bubble, -1, 0);
    rec(j, SIM_PIPE, "fill and drain sends", t + bubble, t + bubble + pp_exp, -1, 0);
  }
  j->intra += tp_ops * tp_intra;
  j->inter += tp_ops * tp_inter;
  double step = t + bubble + pp_exp;
  r->nodes = j->nodes;
  r->ranks = j->layout.world;
  r->dp = dp, r->tp = tp, r->pp = pp;
  r->step_ms = step * 1e3;
  r->compute_ms = j->m * micro * 1e3;
  r->tp_ms = tp_exposed * 1e3;
  r->dp_ms = wait * 1e3;
  r->pp_ms = pp_exp * 1e3;
  r->bubble_ms = bubble * 1e3;
  r->tp_total_ms = tp_total * 1e3;
  r->dp_total_ms = j->dp_total * 1e3;
  double tokens = (double)dp * j->m * N;
  r->tokens_per_s = tokens / step;
  double peak = cl->peak_tflops * 1e12;
  r->mfu = peak > 0 ? tokens * f_all / step / r->ranks / peak : 0;
  r->intra_gb = j->intra / 1e9;
  r->inter_gb = j->inter / 1e9;
  r->dp_nodes = j->g_dp.nodes;
  r->tp_nodes = j->g_tp.nodes;
  r->dp_algo = j->algo;
  /* memory: the model state of the ZeRO stage (docs/parallelism.md) plus
   * the activations of the micro-batches in flight (1F1B keeps up to P on
   * the first stage): 34 + 5 NH T / C bytes per token and channel per layer
   * in 16 bits (Korthikanti et al. 2022), divided by tp; recomputation
   * keeps only each layer's input */
  double N_ = dp, psi = p_rank, st;
  int mixed = j->b == 2;
  switch (j->zero) {
  case 0: st = 16 * psi; break;
  case 1: st = mixed ? 4 * psi + 12 * psi / N_ : 8 * psi + 8 * psi / N_; break;
  case 2: st = mixed ? 2 * psi + 16 * psi / N_ : 4 * psi + 12 * psi / N_; break;
  default: st = mixed ? 18 * psi / N_ : 16 * psi / N_; break;
  }
  double per_layer = cl->recompute ? N * C * j->b : N * C * (34.0 + 5.0 * mc->heads * j->T / C) * j->b / 2 / tp;
  int inflight = pp > 1 ? (j->m < pp ? j->m : pp) : 1;
  r->mem_gb = (st + per_layer * Ls * inflight) / 1e9;
  return 0;
}

int yk_sim_predict(const yk_sim_cluster *cl, const yk_config *cfg, int nodes, yk_sim_result *out, yk_diag *d) {
  memset(out, 0, sizeof *out);
  int rc = yk_sim_cluster_check(cl, d);
  if (rc) return rc;
  sim_job j;
  if ((rc = sim_job_init(&j, cl, cfg, nodes, d)) || (rc = sim_job_run(&j, out, d))) return rc;
  /* weak scaling: against one replica (dp 1) on the fewest nodes that hold
   * it, with the same per-replica work */
  int per = j.tp * j.pp, rpn = cl->ranks_per_node;
  int base_nodes = per <= rpn ? 1 : (per + rpn - 1) / rpn;
  sim_job jb;
  yk_sim_result rb;
  if (base_nodes == nodes) rb = *out;
  else if ((rc = sim_job_init(&jb, cl, cfg, base_nodes, d)) || (rc = sim_job_run(&jb, &rb, d))) return rc;
  /* per replica: tokens/s divided by the replicas */
  out->efficiency = (out->tokens_per_s / out->dp) / (rb.tokens_per_s / rb.dp);
  return 0;
}
