/* trace.c - the engine's timeline (train.trace, docs/tracing.md): it opens
 * this rank's trace, measures its clock against rank 0's, and records the
 * step's spans and counters. The spans of the gradient buckets are in
 * grads.c, the checkpoint's in ckpt.c; both record on the engine's track. */
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

/* Clock offsets: rank 0 and rank r exchange ROUNDS ping-pongs (a broadcast
 * from 0 then one from r); the round with the shortest round trip gives
 * offset = r's stamp - the midpoint of 0's send and receive, within half
 * that round trip. */
#define CLOCK_ROUNDS 8

static int sync_clocks(yk_engine *e, yk_diag *d) {
  yk_comm *c = e->comms.dp;
  int64_t mine[2] = {0, 0}; /* offset, error */
  for (int r = 1; c && r < e->world; r++) {
    int64_t best_rtt = INT64_MAX, best_off = 0;
    for (int k = 0; k < CLOCK_ROUNDS; k++) {
      int64_t v = 0, t0 = (int64_t)yk_now_ns();
      if (e->rank == 0) v = t0;
      int rc = yk_comm_broadcast_sync(c, &v, 1, YK_DT_I64, 0, d);
      if (e->rank == r) v = (int64_t)yk_now_ns();
      if (!rc) rc = yk_comm_broadcast_sync(c, &v, 1, YK_DT_I64, r, d);
      if (rc) return yk_errorf(d, rc, "train.trace: measuring the clock of rank %d failed: %s", r, yk_diag_msg(d, rc));
      int64_t t1 = (int64_t)yk_now_ns();
      if (e->rank == 0 && t1 - t0 < best_rtt) {
        best_rtt = t1 - t0;
        best_off = v - t0 / 2 - t1 / 2;
      }
    }
    int64_t res[2] = {best_off, best_rtt / 2};
    int rc = yk_comm_broadcast_sync(c, res, 2, YK_DT_I64, 0, d);
    if (rc) return yk_errorf(d, rc, "train.trace: sharing the clock offsets failed: %s", yk_diag_msg(d, rc));
    if (e->rank == r) memcpy(mine, res, sizeof mine);
  }
  yk_trace_set_clock(e->trace, mine[0], mine[1]);
  if (c) YK_DEBUG(e->log, "trace: clock offset to rank 0 %+.1f us, error +-%.1f us", mine[0] / 1e3, mine[1] / 1e3);
  return 0;
}

int eng_trace_open(yk_engine *e, yk_diag *d) {
  const yk_config *c = &e->cfg;
  if (!c->train.trace[0]) return 0;
  yk_trace_opts o = {.path = c->train.trace, .rank = e->layout.rank, .world = e->layout.world};
  int rc = yk_config_trace_steps(c, &o.first_step, &o.last_step, d);
  if (rc || (rc = yk_trace_open(&o, &e->trace, d)) != 0) return rc;
  e->tk = yk_trace_track_open(e->trace, "main");
  e->grads.tk = e->ck.tk = e->tk;
  return sync_clocks(e, d);
}

void eng_trace_close(yk_engine *e) {
  yk_diag d = {0};
  int rc = yk_trace_close(e->trace, &d);
  if (rc) YK_WARN(e->log, "%s", yk_diag_msg(&d, rc));
  e->trace = NULL;
  e->tk = e->grads.tk = e->ck.tk = NULL;
}

static const yk_trace_name T_FWD = {"forward", "compute", "micro", "layers"};
static const yk_trace_name T_BWD = {"backward", "compute", "micro", "reduce"};
static const yk_trace_name T_RED = {"reduce", "comm", NULL, NULL};
static const yk_trace_name T_UPD = {"update", "opt", NULL, NULL};
static const yk_trace_name T_OP = {"op", "compute", "kind", NULL};
static const yk_trace_name T_ZERO = {"zero_grad", "compute", NULL, NULL};
static const yk_trace_name T_DELAY = {"test_delay", "compute", "ms", NULL};
static const yk_trace_name T_STEP = {"step", "step", "step", NULL};
static const yk_trace_name T_RSS = {"rss", "counter", "MB", NULL};
static const yk_trace_name T_BYTES = {"reduced", "counter", "MB", NULL};
static const yk_trace_name T_SCALE = {"loss_scale", "counter", "scale", NULL};

void eng_trace_op(yk_engine *e, const yk_sched_op *op, int64_t t0) {
  if (!e->tk) return;
  switch (op->kind) {
  case YK_SCHED_FORWARD: yk_trace_end(e->tk, &T_FWD, t0, op->micro, op->layer_last - op->layer_first); break;
  case YK_SCHED_BACKWARD: yk_trace_end(e->tk, &T_BWD, t0, op->micro, op->reduce); break;
  case YK_SCHED_REDUCE: yk_trace_end(e->tk, &T_RED, t0, 0, 0); break;
  case YK_SCHED_UPDATE: yk_trace_end(e->tk, &T_UPD, t0, 0, 0); break;
  default: yk_trace_end(e->tk, &T_OP, t0, op->kind, 0);
  }
}

int64_t eng_trace_step_begin(yk_engine *e, int64_t step) {
  yk_trace_step_begin(e->trace, step);
  return yk_trace_begin(e->tk);
}

void eng_trace_prologue(yk_engine *e, int64_t t0) {
  yk_trace_end(e->tk, &T_ZERO, t0, 0, 0);
  if (e->test_delay_ms > 0) {
    /* YK_TEST_DELAY_RANK (tests only): this rank computes that much slower. */
    int64_t t1 = yk_trace_begin(e->tk);
    yk_sleep_ms((unsigned)e->test_delay_ms);
    yk_trace_end(e->tk, &T_DELAY, t1, e->test_delay_ms, 0);
  }
}

void eng_trace_step_end(yk_engine *e, int64_t step, int64_t t0, const yk_step_stats *s) {
  if (!e->tk) return;
  yk_trace_end(e->tk, &T_STEP, t0, (double)(step + 1), 0);
  e->trace_bytes += s->allreduce_bytes;
  yk_trace_counter(e->tk, &T_RSS, (double)(yk_trace_rss_bytes() >> 20));
  yk_trace_counter(e->tk, &T_BYTES, (double)(e->trace_bytes >> 20));
  yk_trace_counter(e->tk, &T_SCALE, s->loss_scale);
  yk_diag d = {0};
  int rc = yk_trace_step_end(e->trace, step, &d);
  if (rc) YK_WARN(e->log, "%s", yk_diag_msg(&d, rc));
}
