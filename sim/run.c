/* run.c - `yoke sim`: the assumptions, a curve over node counts (table or
 * JSON rows), the efficiency figure (common's gnuplot helper) and the
 * simulated step as a Chrome trace (the trace module's writer). */
#include <stdlib.h>
#include <string.h>

#include "sim_internal.h"
#include "yk_trace.h"

/* Every number the prediction rests on, as "# " lines. */
static void assumptions(const yk_sim_cluster *cl, const yk_config *cfg, FILE *out) {
  yk_model_config mc;
  if (yk_model_config_from(cfg, &mc, NULL)) return;
  fprintf(out, "# cluster %s (%s):\n", cl->name, cl->origin[0] ? cl->origin : "--set");
  yk_sim_cluster_write(cl, out);
  fprintf(out, "# job: model L%d C%d NH%d V%d (%.3g B parameters), micro-batch %lld x seq %lld, grad_accum %lld, %s, "
               "tp %lld x pp %lld, ZeRO %d, bucket %lld KiB%s\n",
          mc.layers, mc.channels, mc.heads, mc.vocab_size, (double)yk_model_config_num_params(&mc) / 1e9,
          (long long)cfg->train.micro_batch, (long long)cfg->train.seq_len, (long long)cfg->train.grad_accum,
          cfg->train.precision, (long long)cfg->parallel.tensor, (long long)cfg->parallel.pipeline,
          yk_config_zero_stage(cfg), (long long)cfg->comm.bucket_kb, cfg->parallel.sequence ? ", sequence parallel" : "");
  fputs("# model: compute = model FLOPs (yk_model_flops_per_token, forward 1/3, backward 2/3) / achieved FLOP/s;\n"
        "#   collectives = the collectives' alpha-beta-gamma model (yk_coll_model_time) over the links a group\n"
        "#   crosses (rank order of partition/: TP fastest, then DP, then PP); the node's network bandwidth is\n"
        "#   shared by every stream leaving it; all-reduce across nodes with several ranks per node = hierarchical;\n"
        "#   the step = the engine's schedule (yk_engine_schedule_dp) walked on the first pipeline stage: buckets\n"
        "#   queued as backward makes them final (ZeRO 0/1 last micro-batch, 2/3 every one), ZeRO-3 gathers one\n"
        "#   layer ahead, TP collectives on the critical path, 1F1B bubble (P-1)/V micro-batch times + 2(P-1)V\n"
        "#   sends; optimizer = 28 bytes of memory traffic per owned parameter; weak scaling = per-replica\n"
        "#   throughput against one replica on the fewest nodes that hold it.\n",
        out);
}

static void row_json(const yk_sim_result *r, int fits, FILE *out) {
  fprintf(out,
          "{\"nodes\":%d,\"ranks\":%d,\"dp\":%d,\"tp\":%d,\"pp\":%d,\"step_ms\":%.4f,\"compute_ms\":%.4f,"
          "\"opt_ms\":%.4f,\"tp_ms\":%.4f,\"dp_ms\":%.4f,\"pp_ms\":%.4f,\"bubble_ms\":%.4f,\"tp_total_ms\":%.4f,"
          "\"dp_total_ms\":%.4f,\"tokens_per_s\":%.1f,\"efficiency\":%.5f,\"mfu\":%.4f,\"intra_gb\":%.4f,"
          "\"inter_gb\":%.4f,\"mem_gb\":%.3f,\"fits\":%s,\"dp_algo\":\"%s\",\"dp_nodes\":%d}\n",
          r->nodes, r->ranks, r->dp, r->tp, r->pp, r->step_ms, r->compute_ms, r->opt_ms, r->tp_ms, r->dp_ms, r->pp_ms,
          r->bubble_ms, r->tp_total_ms, r->dp_total_ms, r->tokens_per_s, r->efficiency, r->mfu, r->intra_gb,
          r->inter_gb, r->mem_gb, fits ? "true" : "false", r->dp_algo, r->dp_nodes);
}

static void row_text(const yk_sim_result *r, int fits, FILE *out) {
  char lay[48];
  snprintf(lay, sizeof lay, "%dx%dx%d", r->dp, r->tp, r->pp);
  fprintf(out, "%6d %7d %-12s %10.2f %10.2f %8.2f %8.2f %8.2f %8.2f %8.2f %12.4g %6.1f%% %5.1f%% %9.3f %9.3f %7.1f%s %s\n",
          r->nodes, r->ranks, lay, r->step_ms, r->compute_ms, r->opt_ms, r->tp_ms, r->dp_ms, r->pp_ms, r->bubble_ms,
          r->tokens_per_s, 100 * r->efficiency, 100 * r->mfu, r->intra_gb, r->inter_gb, r->mem_gb, fits ? " " : "!",
          r->dp_algo);
}

static int plot(const yk_sim_opts *o, const yk_sim_result *rs, int n, yk_diag *d) {
  char *sc = NULL;
  size_t len = 0;
  FILE *g = open_memstream(&sc, &len);
  if (!g) return yk_errorf(d, YK_ENOMEM, "out of memory for the plot script");
  fprintf(g, "set terminal pngcairo size 900,560\nset output '%s'\nset title 'yoke sim: %s'\n"
             "set xlabel 'nodes'\nset ylabel 'weak-scaling efficiency (%%)'\nset logscale x 2\nset yrange [0:105]\n"
             "set key bottom left\nset grid\n$d << EOD\n",
          o->png, o->cluster->name);
  for (int i = 0; i < n; i++) fprintf(g, "%d %.3f\n", rs[i].nodes, 100 * rs[i].efficiency);
  fprintf(g, "EOD\nplot $d with linespoints title 'predicted', 100 title 'ideal' dt 2\n");
  fclose(g);
  int rc = yk_plot_gnuplot(o->png, sc, d);
  free(sc);
  return rc;
}

int yk_sim_run(const yk_sim_opts *o) {
  FILE *out = o->out ? o->out : stdout;
  yk_diag d = {0};
  int rc = yk_sim_cluster_check(o->cluster, &d);
  if (rc) {
    fprintf(stderr, "yoke sim: %s\n", yk_diag_msg(&d, rc));
    return 2;
  }
  int one = o->cluster->nodes, n = o->n_nodes ? o->n_nodes : 1;
  const int *nodes = o->n_nodes ? o->nodes : &one;
  yk_sim_result *rs = calloc((size_t)n, sizeof *rs);
  if (!rs) {
    fprintf(stderr, "yoke sim: out of memory\n");
    return 1;
  }
  if (!o->quiet_assumptions) assumptions(o->cluster, o->cfg, o->json ? stderr : out);
  if (!o->json)
    fprintf(out, "# times in ms per step; tp/dp/pp = exposed communication; intra = GB a rank sends inside its node, "
                 "inter = GB a node sends on the network, per step; mem = GB per rank (! = more than device.mem_gb)\n"
                 "%6s %7s %-12s %10s %10s %8s %8s %8s %8s %8s %12s %7s %6s %9s %9s %8s %s\n",
            "nodes", "ranks", "dpxtpxpp", "step", "compute", "opt", "tp", "dp", "pp", "bubble", "tokens/s", "eff",
            "mfu", "intra_gb", "inter_gb", "mem_gb", "algo");
  for (int i = 0; i < n; i++) {
    if ((rc = yk_sim_predict(o->cluster, o->cfg, nodes[i], &rs[i], &d))) {
      fprintf(stderr, "yoke sim: %d nodes: %s\n", nodes[i], yk_diag_msg(&d, rc));
      free(rs);
      return rc == YK_ECONFIG || rc == YK_EUSAGE ? 2 : 1;
    }
    int fits = o->cluster->mem_gb <= 0 || rs[i].mem_gb <= o->cluster->mem_gb;
    if (o->json) row_json(&rs[i], fits, out);
    else row_text(&rs[i], fits, out);
  }
  int code = 0;
  if (o->png) {
    if ((rc = plot(o, rs, n, &d))) fprintf(stderr, "yoke sim: %s\n", yk_diag_msg(&d, rc)), code = 1;
    else if (!o->json) fprintf(out, "# plot written to %s\n", o->png);
  }
  if (o->trace) {
    if ((rc = yk_sim_trace(o->cluster, o->cfg, nodes[n - 1], o->trace, &d)))
      fprintf(stderr, "yoke sim: %s\n", yk_diag_msg(&d, rc)), code = 1;
    else if (!o->json) fprintf(out, "# simulated step of %d nodes written to %s (rank 0, docs/tracing.md)\n", nodes[n - 1],
                               o->trace);
  }
  free(rs);
  return code;
}

/* ---- --trace ------------------------------------------------------------- */

/* The engine's names (engine/trace.c, engine/grads.c), so a simulated and a
 * measured step compare span by span. */
static const yk_trace_name T_FWD = {"forward", "compute", "micro", NULL};
static const yk_trace_name T_BWD = {"backward", "compute", "micro", NULL};
static const yk_trace_name T_RED = {"reduce", "comm", NULL, NULL};
static const yk_trace_name T_UPD = {"update", "opt", NULL, NULL};
static const yk_trace_name T_STEP = {"step", "step", "step", NULL};
static const yk_trace_name T_AR = {"allreduce", "comm", "bucket", "bytes"};
static const yk_trace_name T_RO = {"reduce_owned", "comm", "bucket", "bytes"};
static const yk_trace_name T_AG = {"allgather params", "comm", "bucket", "bytes"};
static const yk_trace_name T_BUB = {"bubble", "wait", NULL, NULL};
static const yk_trace_name T_SEND = {"fill and drain sends", "comm", NULL, NULL};

static const yk_trace_name *name_of(const char *n) {
  static const yk_trace_name *const all[] = {&T_FWD, &T_BWD, &T_RED, &T_UPD, &T_AR, &T_RO, &T_AG, &T_BUB, &T_SEND};
  for (size_t i = 0; i < YK_ARRAY_LEN(all); i++)
    if (!strcmp(all[i]->name, n)) return all[i];
  return &T_STEP;
}

int yk_sim_trace(const yk_sim_cluster *cl, const yk_config *cfg, int nodes, const char *path, yk_diag *d) {
  sim_job j;
  yk_sim_result r;
  int rc = sim_job_init(&j, cl, cfg, nodes, d);
  if (rc) return rc;
  j.spans = 1;
  if ((rc = sim_job_run(&j, &r, d))) {
    free(j.spans_buf);
    return rc;
  }
  yk_trace_opts to = {.path = path, .rank = 0, .world = 1, .first_step = 0, .last_step = 0,
                      .ring_events = (size_t)j.nspans + 16};
  yk_trace *t = NULL;
  if ((rc = yk_trace_open(&to, &t, d))) {
    free(j.spans_buf);
    return rc;
  }
  static const char *const track_names[SIM_TRACKS_] = {"compute (simulated)", "dp comm (simulated)",
                                                       "tp comm (simulated)", "pipeline (simulated)"};
  yk_trace_track *k[SIM_TRACKS_];
  for (int i = 0; i < SIM_TRACKS_; i++) k[i] = yk_trace_track_open(t, track_names[i]);
  yk_trace_step_begin(t, 0);
  /* times from 1 s so that no span starts at 0 (readers take 0 as unset) */
  const int64_t base = 1000000000;
  if (k[SIM_COMPUTE])
    yk_trace_record(k[SIM_COMPUTE], YK_TRACE_SPAN, &T_STEP, base, base + (int64_t)(r.step_ms * 1e6), 0, 1, 0);
  for (int i = 0; i < j.nspans; i++) {
    const sim_span *s = &j.spans_buf[i];
    if (!k[s->track]) continue;
    int async = s->track == SIM_DP || s->track == SIM_TP;
    yk_trace_record(k[s->track], async ? YK_TRACE_ASYNC : YK_TRACE_SPAN, name_of(s->name), base + (int64_t)(s->t0 * 1e9),
                    base + (int64_t)(s->t1 * 1e9), (uint64_t)i + 1, async ? i : s->micro, s->bytes);
  }
  free(j.spans_buf);
  rc = yk_trace_step_end(t, 0, d);
  int rc2 = yk_trace_close(t, d);
  return rc ? rc : rc2;
}
