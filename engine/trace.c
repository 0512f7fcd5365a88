/* trace.c - the engine's timeline (train.trace, docs/tracing.md): it opens
 * this rank's trace, measures its clock against rank 0's, and records the
 * step's spans and counters. The spans of the gradient buckets are in
 * grads.c, the checkpoint's in ckpt.c; both record on the engine's track.
 * Other threads get their own tracks: the checkpoint writer's and each
 * communicator's comm thread. At train.trace_detail=layer the model's
 * regions (its span hook) and the tensor-parallel collectives inside them
 * are recorded too; at kernel, also every device kernel (a traced device).
 * A pipeline's sends and receives are spans joined by flow arrows. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

/* Clock offsets: the rank of a group and its rank 0 exchange CLOCK_ROUNDS
 * ping-pongs (a broadcast from 0, then one from the rank); the round with
 * the shortest round trip gives offset = the rank's stamp - the midpoint of
 * rank 0's send and receive, within half that round trip. */
#define CLOCK_ROUNDS 8

/* out = {offset, error} of this rank against rank 0 of c (every rank calls). */
static int sync_group(yk_comm *c, int64_t out[2], yk_diag *d) {
  int me = yk_comm_rank(c), n = yk_comm_size(c);
  out[0] = out[1] = 0;
  for (int r = 1; r < n; r++) {
    int64_t best_rtt = INT64_MAX, best_off = 0;
    for (int k = 0; k < CLOCK_ROUNDS; k++) {
      int64_t v = 0, t0 = (int64_t)yk_now_ns();
      if (me == 0) v = t0;
      int rc = yk_comm_broadcast_sync(c, &v, 1, YK_DT_I64, 0, d);
      if (me == r) v = (int64_t)yk_now_ns();
      if (!rc) rc = yk_comm_broadcast_sync(c, &v, 1, YK_DT_I64, r, d);
      if (rc) return yk_errorf(d, rc, "train.trace: measuring the clock of rank %d failed: %s", r, yk_diag_msg(d, rc));
      int64_t t1 = (int64_t)yk_now_ns();
      if (me == 0 && t1 - t0 < best_rtt) {
        best_rtt = t1 - t0;
        best_off = v - t0 / 2 - t1 / 2;
      }
    }
    int64_t res[2] = {best_off, best_rtt / 2};
    int rc = yk_comm_broadcast_sync(c, res, 2, YK_DT_I64, 0, d);
    if (rc) return yk_errorf(d, rc, "train.trace: sharing the clock offsets failed: %s", yk_diag_msg(d, rc));
    if (me == r) memcpy(out, res, 2 * sizeof *out);
  }
  return 0;
}

/* Against global rank 0 (stage 0, dp rank 0, tp rank 0), in three hops
 * that add offsets and errors: each stage's (dp 0, tp 0) rank measures
 * stage 0's over the pipeline group; each (dp 0) rank measures its tp rank
 * 0 and gets that one's pipeline offset from it; each rank measures its dp
 * rank 0 and gets that one's sum from it. Every rank runs every phase in
 * this order, so the groups' collectives cannot wait on each other. */
static int sync_clocks(yk_engine *e, yk_diag *d) {
  int64_t dp[2] = {0, 0}, tp[2] = {0, 0}, pp[2] = {0, 0};
  int rc = 0;
  if (e->comms.pp) rc = sync_group(e->comms.pp, pp, d);
  if (!rc && e->comms.tp) rc = sync_group(e->comms.tp, tp, d);
  if (!rc && e->comms.tp && e->comms.pp) rc = yk_comm_broadcast_sync(e->comms.tp, pp, 2, YK_DT_I64, 0, d);
  tp[0] += pp[0];
  tp[1] += pp[1];
  if (!rc && e->comms.dp) rc = sync_group(e->comms.dp, dp, d);
  if (!rc && e->comms.dp && (e->comms.tp || e->comms.pp))
    rc = yk_comm_broadcast_sync(e->comms.dp, tp, 2, YK_DT_I64, 0, d);
  if (rc) return rc;
  yk_trace_set_clock(e->trace, dp[0] + tp[0], dp[1] + tp[1]);
  if (e->comms.dp || e->comms.tp || e->comms.pp)
    YK_DEBUG(e->log, "trace: clock offset to rank 0 %+.1f us, error +-%.1f us", (dp[0] + tp[0]) / 1e3,
             (dp[1] + tp[1]) / 1e3);
  return 0;
}

static const yk_trace_name T_REGION[2][3] = {
    {{"forward embed", "compute", NULL, NULL}, {"forward layer", "compute", "layer", NULL},
     {"forward head", "compute", NULL, NULL}},
    {{"backward embed", "compute", NULL, NULL}, {"backward layer", "compute", "layer", NULL},
     {"backward head", "compute", NULL, NULL}}};

/* The model's span hook: one region of a forward or backward. */
static void region_span(void *ctx, yk_model_pass pass, int region, int end) {
  yk_engine *e = ctx;
  if (!end) {
    e->region_t0 = yk_trace_begin(e->tk);
    e->region_layer = region - 1; /* -1: the embedding, layers: the head */
    return;
  }
  e->region_layer = INT_MIN;
  int kind = region == 0 ? 0 : region <= e->mcfg.layers ? 1 : 2;
  yk_trace_end(e->tk, &T_REGION[pass][kind], e->region_t0, region - 1, 0);
}

/* The traced device's hook: one kernel call, with the layer of the model
 * region around it. */
static void kernel_span(void *ctx, const yk_device_call *c) {
  yk_engine *e = ctx;
  if (!e->tkk) return;
  int in = e->region_layer != INT_MIN;
  yk_trace_record(e->tkk, YK_TRACE_SPAN, &e->knames[in][c->kernel], c->t0_ns, c->t1_ns,
                  yk_trace_shape(c->ndims, c->dim), in ? e->region_layer : (double)c->bytes, (double)c->bytes);
}

int eng_trace_device(yk_engine *e, yk_diag *d) {
  e->region_layer = INT_MIN;
  if (!e->cfg.train.trace[0] || strcmp(e->cfg.train.trace_detail, "kernel")) return 0;
  for (int k = 0; k < YK_DEVICE_KERNELS; k++) {
    const char *n = yk_device_kernel_name(k);
    e->knames[0][k] = (yk_trace_name){n, "kernel", "bytes", NULL, "shape"};
    e->knames[1][k] = (yk_trace_name){n, "kernel", "layer", "bytes", "shape"};
  }
  int rc = yk_device_traced_create(e->dev, kernel_span, e, &e->dev_traced, d);
  if (!rc) e->dev = e->dev_traced;
  return rc;
}

/* Synchronous, inside a layer: time the layer waits (cat "wait"). */
static const yk_trace_name T_TP[4] = {{"tp allreduce", "wait", "bytes", NULL},
                                      {"tp max", "wait", "bytes", NULL},
                                      {"tp allgather", "wait", "bytes", NULL},
                                      {"tp reduce_scatter", "wait", "bytes", NULL}};

void eng_trace_tp(yk_engine *e, int op, size_t bytes, int64_t t0) {
  if (op >= 0 && op < 4) yk_trace_end(e->tkl, &T_TP[op], t0, (double)bytes, 0);
}

int eng_trace_open(yk_engine *e, yk_diag *d) {
  const yk_config *c = &e->cfg;
  if (!c->train.trace[0]) return 0;
  yk_trace_opts o = {.path = c->train.trace, .rank = e->layout.rank, .world = e->layout.world};
  int rc = yk_config_trace_steps(c, &o.first_step, &o.last_step, d);
  if (rc || (rc = yk_trace_open(&o, &e->trace, d)) != 0) return rc;
  e->tk = yk_trace_track_open(e->trace, "main");
  e->grads.tk = e->ck.tk = e->tk;
  if (strcmp(c->train.trace_detail, "step")) { /* layer, kernel */
    e->tkl = e->tk;
    /* the pipeline's other slots are models of their own */
    for (int i = 0; i < (e->pipe.on ? e->pipe.nslots : 1); i++)
      yk_model_set_span_hook(e->pipe.on ? e->pipe.slot[i] : e->model, region_span, e);
  }
  if (e->dev_traced) e->tkk = e->tk;
  /* each track has one producer: the writer thread, a comm thread */
  if (e->ck.w) yk_ckpt_writer_trace(e->ck.w, yk_trace_track_open(e->trace, "ckpt writer"));
  yk_comm *comm[2] = {e->comms.dp, e->comms.tp};
  static const char *const comm_name[2] = {"comm dp", "comm tp"};
  for (int i = 0; i < 2; i++)
    if (comm[i] && (e->tkc[i] = yk_trace_track_open(e->trace, comm_name[i])) != NULL)
      yk_comm_set_trace(comm[i], e->tkc[i]);
  return sync_clocks(e, d);
}

void eng_trace_close(yk_engine *e) {
  yk_diag d = {0};
  /* the other threads stop recording before their tracks go */
  yk_ckpt_writer_trace(e->ck.w, NULL);
  if (e->comms.dp && e->tkc[0]) yk_comm_set_trace(e->comms.dp, NULL);
  if (e->comms.tp && e->tkc[1]) yk_comm_set_trace(e->comms.tp, NULL);
  if (e->tkl)
    for (int i = 0; i < (e->pipe.on ? e->pipe.nslots : 1); i++)
      yk_model_set_span_hook(e->pipe.on ? e->pipe.slot[i] : e->model, NULL, NULL);
  int rc = yk_trace_close(e->trace, &d);
  if (rc) YK_WARN(e->log, "%s", yk_diag_msg(&d, rc));
  e->trace = NULL;
  e->tk = e->tkl = e->tkk = e->grads.tk = e->ck.tk = e->tkc[0] = e->tkc[1] = NULL;
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
static const yk_trace_name T_SENT = {"comm", "counter", "MB", NULL};
static const yk_trace_name T_SCALE = {"loss_scale", "counter", "scale", NULL};

/* Pipeline messages: the send's span is issuing it (the buffer copy, and
 * waiting for a free send buffer), the receive's is waiting for it. An
 * arrow joins them: it leaves at the send's start and lands at the
 * receive's end, and its id names the message the same way on both stages
 * (step, the sending chunk, micro-batch, direction). */
static const yk_trace_name T_MSG[4] = {{"send act", "comm", "micro", "chunk"},
                                       {"recv act", "wait", "micro", "chunk"},
                                       {"send grad", "comm", "micro", "chunk"},
                                       {"recv grad", "wait", "micro", "chunk"}};
static const yk_trace_name T_FLOW[2] = {{"pipe act", "pipe", NULL, NULL}, {"pipe grad", "pipe", NULL, NULL}};

static void trace_message(yk_engine *e, const yk_sched_op *op, int64_t t0) {
  int i = op->kind - YK_SCHED_SEND_ACT, grad = i >= 2, recv = i & 1;
  int from = op->chunk + (recv ? (grad ? 1 : -1) : 0);
  uint64_t m = (uint64_t)e->pipe.plan.micro_batches, K = (uint64_t)e->pipe.K;
  uint64_t id = (((uint64_t)e->trace_step * K + (uint64_t)from) * m + (uint64_t)op->micro) * 2 + (uint64_t)grad;
  int64_t t1 = (int64_t)yk_now_ns();
  if (!recv) e->trace_sent += e->pipe.n * sizeof(float);
  /* 1 ns inside the span, so the viewer binds each end to it */
  yk_trace_flow(e->tk, &T_FLOW[grad], id, recv, recv ? t1 - 1 : t0 + 1);
  yk_trace_record(e->tk, YK_TRACE_SPAN, &T_MSG[i], t0, t1, 0, op->micro, op->chunk);
}

void eng_trace_op(yk_engine *e, const yk_sched_op *op, int64_t t0) {
  if (!e->tk) return;
  switch (op->kind) {
  case YK_SCHED_SEND_ACT:
  case YK_SCHED_RECV_ACT:
  case YK_SCHED_SEND_GRAD:
  case YK_SCHED_RECV_GRAD: trace_message(e, op, t0); break;
  case YK_SCHED_FORWARD: yk_trace_end(e->tk, &T_FWD, t0, op->micro, op->layer_last - op->layer_first); break;
  case YK_SCHED_BACKWARD: yk_trace_end(e->tk, &T_BWD, t0, op->micro, op->reduce); break;
  case YK_SCHED_REDUCE: yk_trace_end(e->tk, &T_RED, t0, 0, 0); break;
  case YK_SCHED_UPDATE: yk_trace_end(e->tk, &T_UPD, t0, 0, 0); break;
  default: yk_trace_end(e->tk, &T_OP, t0, op->kind, 0);
  }
}

int64_t eng_trace_step_begin(yk_engine *e, int64_t step) {
  yk_trace_step_begin(e->trace, step);
  e->trace_step = step;
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
  e->trace_sent += s->dp_bytes + s->tp_bytes;
  yk_trace_counter(e->tk, &T_RSS, (double)(yk_trace_rss_bytes() >> 20));
  yk_trace_counter(e->tk, &T_BYTES, (double)(e->trace_bytes >> 20));
  yk_trace_counter(e->tk, &T_SENT, (double)(e->trace_sent >> 20));
  yk_trace_counter(e->tk, &T_SCALE, s->loss_scale);
  yk_diag d = {0};
  int rc = yk_trace_step_end(e->trace, step, &d);
  if (rc) YK_WARN(e->log, "%s", yk_diag_msg(&d, rc));
}
