/* pipe.c - one pipeline stage at run time: the channels to the neighbouring
 * stages, the model instances of the micro-batches alive at once, the
 * sends that overlap compute, the tied embedding's gradient, and the whole
 * model assembled from the stages (see eng_pipe in engine_internal.h; the
 * schedules themselves are in schedule.c). */
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

/* ---- the slots' shared arenas --------------------------------------------
 * A slot beyond the first is a model created with this provider (ctx: the
 * eng_pipe): it lends the first slot's arenas region by region, looked up at
 * every call because sharing the arenas with the collectives may have moved
 * them. */
static int lend_params(void *ctx, int region, yk_model_pass pass, float **p, yk_diag *d) {
  (void)pass;
  (void)d;
  yk_model *m = ((eng_pipe *)ctx)->slot[0];
  size_t off, n;
  yk_model_region_range(m, region, &off, &n);
  *p = yk_model_params(m) + off;
  return 0;
}
static int lend_grads(void *ctx, int region, float **g, yk_diag *d) {
  (void)d;
  yk_model *m = ((eng_pipe *)ctx)->slot[0];
  size_t off, n;
  yk_model_region_range(m, region, &off, &n);
  *g = yk_model_grads(m) + off;
  return 0;
}
static int give_back(void *ctx, int region, yk_model_pass pass, yk_diag *d) {
  (void)ctx, (void)region, (void)pass, (void)d;
  return 0;
}
/* a slot's region is final: what slot 0's gradient hook says for its own */
static int grads_back(void *ctx, int region, yk_diag *d) {
  (void)d;
  eng_pipe *p = ctx;
  size_t off, n;
  yk_model_region_range(p->slot[0], region, &off, &n);
  eng_pipe_grads_ready(p, off, n);
  return 0;
}

void eng_pipe_grads_ready(void *ctx, size_t offset, size_t count) {
  eng_pipe *p = ctx;
  /* the embedding region (offset 0 when held) waits for wte's sum */
  if (p->wte_n && offset == 0) return;
  eng_grads_ready(p->grads, offset, count);
}

/* Channel c's members: the sender first (rank 0, the broadcast's root). */
static void chan_members(int P, int c, int *from, int *to) {
  *from = c < P ? c : c - P;
  *to = c < P ? (*from + 1) % P : (*from + P - 1) % P;
}

void eng_pipe_stage(const yk_pipe_plan *p, int stage, yk_model_stage *out) {
  memset(out, 0, sizeof *out);
  for (int c = stage; c < p->stages * p->vstages; c += p->stages) {
    out->first[out->n] = p->bounds[c];
    out->last[out->n++] = p->bounds[c + 1];
  }
}

int eng_pipe_open(yk_engine *e, yk_diag *d) {
  eng_pipe *p = &e->pipe;
  const yk_layout *l = &e->layout;
  int rc;
  p->on = 1;
  p->stage = l->pp_rank;
  p->rank0 = l->dp_rank * l->tp + l->tp_rank;
  p->rank_stride = l->dp * l->tp;
  p->P = l->pp;
  p->K = p->P * p->plan.vstages;
  if (!e->comms.pp || yk_comm_size(e->comms.pp) != p->P || yk_comm_rank(e->comms.pp) != p->stage)
    return yk_errorf(d, YK_EINVAL, "the pipeline communicator (%d of %d) does not match the layout (stage %d of %d)",
                     e->comms.pp ? yk_comm_rank(e->comms.pp) : 0, e->comms.pp ? yk_comm_size(e->comms.pp) : 1,
                     p->stage, p->P);
  /* Channels: every stage takes part in every split (they are collective
   * over the pp group); only a channel's two members get a communicator.
   * Without interleaving nothing goes from the last stage to the first. */
  for (int c = 0; c < 2 * p->P; c++) {
    int from, to;
    chan_members(p->P, c, &from, &to);
    if (p->plan.vstages == 1 && (c < p->P ? from == p->P - 1 : from == 0)) continue;
    int member = p->stage == from || p->stage == to;
    if ((rc = yk_comm_split(e->comms.pp, member ? 0 : -1, p->stage == from ? 0 : 1, &p->chan[c], d)) != 0)
      return yk_errorf(d, rc, "pipeline: creating the channel from stage %d to stage %d failed: %s", from, to,
                       yk_diag_msg(d, rc));
  }
  int ends = p->stage == 0 || p->stage == p->P - 1;
  if ((rc = yk_comm_split(e->comms.pp, ends ? 0 : -1, p->stage, &p->embed, d)) != 0)
    return yk_errorf(d, rc, "pipeline: creating the embedding group of the first and last stage failed: %s",
                     yk_diag_msg(d, rc));
  /* wte: on the first and the last stage only */
  int wte = yk_model_tensor_find(e->model, "wte");
  if (ends && wte < 0) return yk_errorf(d, YK_EINVAL, "pipeline: stage %d's model has no tensor 'wte'", p->stage);
  p->wte_off = wte < 0 ? 0 : e->tensors[wte].offset;
  p->wte_n = wte < 0 ? 0 : e->tensors[wte].numel;
  p->whole_n = yk_model_tp_num_params(&e->mcfg, e->tp, e->tp_rank);
  size_t off0;
  yk_model_region_range(e->model, 0, &off0, &p->embed_n);
  /* slots */
  int m = p->plan.micro_batches;
  p->nslots = yk_engine_schedule_max_alive(&e->schedule);
  p->slot = calloc((size_t)p->nslots, sizeof *p->slot);
  p->slot_of = malloc((size_t)p->K * (size_t)m * sizeof(int));
  if (!p->slot || !p->slot_of) return yk_errorf(d, YK_ENOMEM, "out of memory for the pipeline's slots");
  for (int i = 0; i < p->K * m; i++) p->slot_of[i] = -1;
  p->slot[0] = e->model;
  p->grads = &e->grads;
  yk_model_provider prov = {.ctx = p, .get_params = lend_params, .put_params = give_back,
                            .get_grads = lend_grads, .put_grads = grads_back};
  for (int i = 1; i < p->nslots; i++)
    if ((rc = yk_model_create_stage(&e->mcfg, e->B, e->T, e->dev, yk_model_act_dtype(e->model),
                                    yk_model_get_tp(e->model), &p->mstage, &prov, &p->slot[i], d)) != 0)
      return rc;
  p->n = yk_model_stream_numel(e->model);
  p->in = yk_alloc(p->n * sizeof(float));
  p->gin = yk_alloc(p->n * sizeof(float));
  p->out = yk_alloc(p->n * sizeof(float));
  int ok = p->in && p->gin && p->out;
  for (int i = 0; i < YK_PIPE_MAX_SENDS; i++) ok = ok && (p->sendbuf[i] = yk_alloc(p->n * sizeof(float)));
  if (!ok) return yk_errorf(d, YK_ENOMEM, "out of memory for the pipeline's message buffers");
  return 0;
}

void eng_pipe_close(eng_pipe *p) {
  for (int i = 0; i < YK_PIPE_MAX_SENDS; i++) {
    /* a failed step may leave sends in flight: bounded, the channel's deadline */
    if (p->sendreq[i]) yk_request_wait(&p->sendreq[i], yk_deadline_in_ms(2000), NULL);
    yk_free(p->sendbuf[i]);
  }
  for (int c = 0; c < 2 * YK_PIPE_MAX_CHUNKS; c++) yk_comm_destroy(p->chan[c]);
  yk_comm_destroy(p->embed);
  for (int i = 1; i < p->nslots && p->slot; i++) yk_model_destroy(p->slot[i]);
  free(p->slot);
  free(p->slot_of);
  yk_free(p->in);
  yk_free(p->gin);
  yk_free(p->out);
  memset(p, 0, sizeof *p);
}

/* ---- compute -------------------------------------------------------------- */

int eng_pipe_forward(eng_pipe *p, const yk_sched_op *op, const int32_t *inputs, const int32_t *targets, float *loss,
                     yk_diag *d) {
  int *at = &p->slot_of[op->chunk * p->plan.micro_batches + op->micro], s = 0;
  /* a free slot: one whose micro-batch has gone through its backward */
  for (int busy = 1; s < p->nslots && busy; s += busy) {
    busy = 0;
    for (int i = 0; i < p->K * p->plan.micro_batches && !busy; i++) busy = p->slot_of[i] == s;
  }
  if (s == p->nslots)
    return yk_errorf(d, YK_EINVAL, "pipeline stage %d: micro-batch %d of chunk %d finds all %d activation slots in "
                     "use", p->stage, op->micro, op->chunk, p->nslots);
  *at = s;
  int last = op->chunk == p->K - 1;
  return yk_model_forward_range(p->slot[s], op->layer_first, op->layer_last, op->chunk == 0 ? inputs : NULL,
                                op->chunk > 0 ? p->in : NULL, last ? targets : NULL, last ? NULL : p->out, loss, d);
}

int eng_pipe_backward(eng_pipe *p, const yk_sched_op *op, float scale, yk_diag *d) {
  int *at = &p->slot_of[op->chunk * p->plan.micro_batches + op->micro];
  if (*at < 0)
    return yk_errorf(d, YK_EINVAL, "pipeline stage %d: backward of micro-batch %d of chunk %d without its forward",
                     p->stage, op->micro, op->chunk);
  int rc = yk_model_backward_range(p->slot[*at], scale, op->chunk < p->K - 1 ? p->gin : NULL,
                                   op->chunk > 0 ? p->out : NULL, d);
  *at = -1;
  return rc;
}

/* ---- messages -------------------------------------------------------------- */

static const char *what_of(const yk_sched_op *op) {
  return op->kind == YK_SCHED_SEND_ACT || op->kind == YK_SCHED_RECV_ACT ? "activations" : "gradients";
}

static yk_comm *chan_of(const eng_pipe *p, const yk_sched_op *op) {
  switch (op->kind) {
  case YK_SCHED_SEND_ACT: return p->chan[p->stage];
  case YK_SCHED_RECV_ACT: return p->chan[op->peer];
  case YK_SCHED_SEND_GRAD: return p->chan[p->P + p->stage];
  default: return p->chan[p->P + op->peer];
  }
}

int eng_pipe_send(eng_pipe *p, const yk_sched_op *op, yk_diag *d) {
  yk_comm *c = chan_of(p, op);
  int i = p->next_send, rc;
  /* the oldest send buffer comes back once its message is out */
  if (p->sendreq[i]) {
    double t0 = yk_now_s();
    rc = yk_request_wait(&p->sendreq[i], 0, d);
    p->wait_s += yk_now_s() - t0;
    if (rc)
      return yk_errorf(d, rc, "pipeline stage %d: an earlier send to stage %d failed: %s", p->stage, op->peer,
                       yk_diag_msg(d, rc));
  }
  memcpy(p->sendbuf[i], p->out, p->n * sizeof(float));
  if (!c || (rc = yk_comm_broadcast(c, p->sendbuf[i], p->n, YK_DT_F32, 0, &p->sendreq[i], d)) != 0)
    return yk_errorf(d, c ? rc : YK_EINVAL, "pipeline stage %d: sending the %s of micro-batch %d to stage %d "
                     "(rank %d) failed: %s", p->stage, what_of(op), op->micro, op->peer,
                     p->rank0 + op->peer * p->rank_stride, c ? yk_diag_msg(d, rc) : "no channel");
  p->next_send = (i + 1) % YK_PIPE_MAX_SENDS;
  return 0;
}

int eng_pipe_recv(eng_pipe *p, const yk_sched_op *op, yk_diag *d) {
  yk_comm *c = chan_of(p, op);
  float *buf = op->kind == YK_SCHED_RECV_ACT ? p->in : p->gin;
  double t0 = yk_now_s();
  int rc = c ? yk_comm_broadcast_sync(c, buf, p->n, YK_DT_F32, 0, d) : YK_EINVAL;
  p->wait_s += yk_now_s() - t0;
  if (rc)
    return yk_errorf(d, rc, "pipeline stage %d: receiving the %s of micro-batch %d from stage %d (rank %d) failed "
                     "(on the channel, rank 0 is stage %d and rank 1 stage %d): %s", p->stage, what_of(op), op->micro,
                     op->peer, p->rank0 + op->peer * p->rank_stride, op->peer, p->stage,
                     c ? yk_diag_msg(d, rc) : "no channel");
  return 0;
}

int eng_pipe_finish(eng_pipe *p, float *grads, yk_diag *d) {
  double t0 = yk_now_s();
  int rc = 0;
  for (int i = 0; i < YK_PIPE_MAX_SENDS && !rc; i++)
    if (p->sendreq[i] && (rc = yk_request_wait(&p->sendreq[i], 0, d)) != 0)
      rc = yk_errorf(d, rc, "pipeline stage %d: a send of this step failed: %s", p->stage, yk_diag_msg(d, rc));
  p->next_send = 0;
  /* wte is the embedding on the first stage and the LM head on the last:
   * each holds its part of the gradient, both need the sum */
  if (!rc && p->embed && (rc = yk_comm_allreduce_sync(p->embed, grads + p->wte_off, grads + p->wte_off, p->wte_n,
                                                      YK_DT_F32, YK_OP_SUM, d)) != 0)
    rc = yk_errorf(d, rc, "pipeline stage %d: summing the tied embedding's gradient with stage %d failed: %s",
                   p->stage, p->stage == 0 ? p->P - 1 : 0, yk_diag_msg(d, rc));
  p->wait_s += yk_now_s() - t0;
  /* the embedding region's reduction, held back for that sum, can go */
  if (!rc && p->wte_n) eng_grads_ready(p->grads, 0, p->embed_n);
  return rc;
}

int eng_pipe_share_loss(eng_pipe *p, yk_comm *pp, double *loss, yk_diag *d) {
  int64_t bits;
  memcpy(&bits, loss, sizeof bits);
  int rc = yk_comm_broadcast_sync(pp, &bits, 1, YK_DT_I64, p->P - 1, d);
  if (rc) return yk_errorf(d, rc, "pipeline: sharing the last stage's loss failed: %s", yk_diag_msg(d, rc));
  memcpy(loss, &bits, sizeof bits);
  return 0;
}

/* ---- whole-model views ---------------------------------------------------- */

int eng_pipe_eval(eng_pipe *p, const int32_t *inputs, const int32_t *targets, float *loss, yk_diag *d) {
  *loss = 0;
  /* chunk by chunk in order; a stage acts on its own chunks only */
  for (int c = p->stage; c < p->K; c += p->P) {
    yk_sched_op op = {.kind = YK_SCHED_FORWARD, .micro = 0, .chunk = c, .layer_first = p->plan.bounds[c],
                      .layer_last = p->plan.bounds[c + 1], .peer = (p->stage + p->P - 1) % p->P};
    int rc = 0;
    if (c > 0) {
      op.kind = YK_SCHED_RECV_ACT;
      rc = eng_pipe_recv(p, &op, d);
    }
    float l = 0;
    if (!rc)
      rc = yk_model_forward_range(p->slot[0], op.layer_first, op.layer_last, c == 0 ? inputs : NULL,
                                  c > 0 ? p->in : NULL, c == p->K - 1 ? targets : NULL, c == p->K - 1 ? NULL : p->out,
                                  &l, d);
    if (!rc && c < p->K - 1) {
      op.kind = YK_SCHED_SEND_ACT;
      op.peer = (p->stage + 1) % p->P;
      rc = eng_pipe_send(p, &op, d);
    }
    if (rc) return rc;
    if (c == p->K - 1) *loss = l;
  }
  /* the sends must be out before anything else uses the channels' buffers */
  for (int i = 0; i < YK_PIPE_MAX_SENDS; i++) {
    int rc = p->sendreq[i] ? yk_request_wait(&p->sendreq[i], 0, d) : 0;
    if (rc) return yk_errorf(d, rc, "pipeline stage %d: an evaluation send failed: %s", p->stage, yk_diag_msg(d, rc));
  }
  p->next_send = 0;
  return 0;
}

int eng_pipe_assemble(yk_engine *e, float *dst, yk_diag *d) {
  eng_pipe *p = &e->pipe;
  memset(dst, 0, p->whole_n * sizeof(float));
  /* this stage's regions: its blocks, the embedding (the first stage is the
   * owner of the wte both ends hold: the unstaged arena starts with it) and
   * the head (last stage) */
  yk_model_stage_copy(e->model, dst, yk_model_params(e->model), 0);
  size_t off, n;
  yk_model_region_range(e->model, 0, &off, &n);
  if (p->stage != 0) memset(dst, 0, n * sizeof(float));
  /* one stage holds each value, the others add zeros */
  int rc = yk_comm_allreduce_sync(e->comms.pp, dst, dst, p->whole_n, YK_DT_F32, YK_OP_SUM, d);
  if (rc) return yk_errorf(d, rc, "pipeline: gathering the stages' weights failed: %s", yk_diag_msg(d, rc));
  return 0;
}
