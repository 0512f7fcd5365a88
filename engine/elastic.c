/* elastic.c - the engine's side of elastic training (docs/elasticity.md):
 * re-form a running engine in place over the communicators of a new epoch,
 * and make every rank's state the same again afterwards.
 *
 * In place, because under data parallelism without sharding (optim.zero 0)
 * every arena keeps its size whatever the world: the weights, gradients,
 * moments and master weights are all whole on every rank. What depends on
 * the world is small: the communicators (and the shared memory registered
 * with them), this rank's place, the micro-batches per step, the
 * checkpoint's shard assignment. Re-forming touches only those, so a
 * survivor resumes in the time of one state broadcast instead of a restart.
 *
 * A step interrupted by a failure may have been applied on some ranks (the
 * last all-reduce completed on them) and not on others. yk_engine_sync
 * settles that: the ranks agree on the most advanced one (most completed
 * steps, then the lowest rank) and it broadcasts its whole state, so no
 * completed step is lost and no rank keeps a partial update. A joining
 * rank takes part in the same broadcast and receives everything from its
 * peers over the data plane, not from disk. */
#include "engine_internal.h"

#include <stdint.h>
#include <string.h>

int yk_engine_reform_check(const yk_config *c, const yk_layout *l, yk_diag *d) {
  if (l->tp > 1 || l->pp > 1)
    return yk_errorf(d, YK_EUNSUPPORTED,
                     "elastic.redundancy=buddy re-forms data parallelism in memory; this job has tensor %d x pipeline "
                     "%d: use elastic.redundancy=checkpoint (with ckpt.dir) to re-form it from the last checkpoint",
                     l->tp, l->pp);
  if (strcmp(c->optim.offload, "none"))
    return yk_errorf(d, YK_EUNSUPPORTED, "elastic.redundancy=buddy sends the optimizer state from memory; "
                     "optim.offload=%s keeps it in files: set optim.offload=none for an elastic job", c->optim.offload);
  int z = yk_config_zero_stage(c);
  if (z >= 1 && l->dp > 1)
    return yk_errorf(d, YK_EUNSUPPORTED,
                     "elastic.redundancy=buddy keeps every rank's state whole, which optim.zero=%d shards: set "
                     "optim.zero=0, or elastic.redundancy=checkpoint (with ckpt.dir) to re-form from the last "
                     "checkpoint", z);
  return 0;
}

int64_t yk_engine_steps_done(const yk_engine *e) { return e->steps_done; }
int yk_engine_accum(const yk_engine *e) { return e->accum; }

uint64_t yk_engine_windows_done(const yk_engine *e) {
  yk_data_pos p;
  yk_data_loader_get_pos(e->train_ld, &p);
  return p.windows_done;
}

void yk_engine_request_reform(yk_engine *e, uint32_t epoch) {
  if (epoch > e->ck.reform_seen) e->ck.reform_seen = epoch;
}

uint32_t yk_engine_reform_epoch(const yk_engine *e) { return e->ck.reform_agreed; }

/* The arenas collectives read in place on this host, registered with the
 * new data-parallel communicator (the old one is gone). */
static int register_shared(yk_engine *e, yk_diag *d) {
  yk_comm *c = e->comms.dp;
  if (!c || !(yk_comm_shm_state(c) & 1)) return 0;
  const yk_shmem *regs[3] = {yk_model_grads_shmem(e->model), e->mp.params16_shm.ptr ? &e->mp.params16_shm : NULL,
                             e->mp.grads16_shm.ptr ? &e->mp.grads16_shm : NULL};
  for (int i = 0; i < 3; i++) {
    if (!regs[i] || !regs[i]->ptr) continue;
    int rc = yk_comm_register(c, regs[i], d);
    if (rc == YK_EUNSUPPORTED) yk_diag_clear(d); /* read through the transport instead */
    else if (rc) return rc;
  }
  return 0;
}

int yk_engine_set_accum(yk_engine *e, int accum, yk_diag *d) {
  if (accum < 1) return yk_errorf(d, YK_EINVAL, "re-form: %d micro-batches per step", accum);
  int rc = yk_data_loader_check_split(e->train_ld, e->world, accum, d);
  if (rc) return rc;
  if ((rc = yk_engine_schedule_dp(accum, e->mcfg.layers, &e->schedule, d)) != 0 ||
      (rc = yk_engine_schedule_check(&e->schedule, e->mcfg.layers, d)) != 0)
    return rc;
  e->accum = accum;
  e->cfg.train.grad_accum = accum;
  e->global_micro = (int64_t)accum * e->world;
  return 0;
}

int64_t yk_engine_global_micro(const yk_engine *e) { return e->global_micro; }

int yk_engine_reform(yk_engine *e, const yk_layout *layout, const yk_engine_comms *comms, yk_diag *d) {
  int rc = yk_engine_reform_check(&e->cfg, layout, d);
  if (rc) return rc;
  if ((layout->dp > 1) != (comms->dp != NULL) ||
      (comms->dp && (yk_comm_size(comms->dp) != layout->dp || yk_comm_rank(comms->dp) != layout->dp_rank)))
    return yk_errorf(d, YK_EINVAL, "re-form: the data-parallel communicator does not match the layout (dp rank %d of "
                     "%d)", layout->dp_rank, layout->dp);
  /* Nothing may still point at the old communicators. */
  eng_grads_drain(&e->grads);
  eng_trace_close(e);
  eng_ckpt_close(&e->ck);
  e->layout = *layout;
  e->comms = *comms;
  e->rank = layout->dp_rank;
  e->world = layout->dp;
  eng_grads_init(&e->grads, comms->dp, (size_t)e->cfg.comm.bucket_kb * 1024, e->cfg.comm.timeout_ms);
  if ((rc = register_shared(e, d)) != 0) return rc;
  uint32_t seen = e->ck.reform_seen, agreed = e->ck.reform_agreed;
  int64_t saved = e->ck.last_saved;
  eng_ckpt_view v = e->ck.view;
  if ((rc = eng_ckpt_open(&e->ck, &e->cfg, e->log, &e->comms, &e->layout, &v, d)) != 0) return rc;
  e->ck.reform_seen = seen;
  e->ck.reform_agreed = agreed;
  e->ck.last_saved = saved; /* what the old epoch saved stays saved (yk_engine_sync makes it every rank's) */
  return eng_trace_open(e, d);
}

/* Broadcast a small struct of `bytes` at p from root, as 32-bit words
 * (collectives move numbers, not bytes). */
static int bcast_bytes(yk_comm *c, void *p, size_t bytes, int root, const char *what, yk_diag *d) {
  int32_t w[64];
  size_t n = (bytes + 3) / 4;
  if (n > 64) return yk_errorf(d, YK_EINVAL, "re-form: the %s (%zu bytes) is too large to broadcast", what, bytes);
  memset(w, 0, sizeof w);
  memcpy(w, p, bytes);
  int rc = yk_comm_broadcast_sync(c, w, n, YK_DT_I32, root, d);
  if (rc) return yk_errorf(d, rc, "re-form: broadcasting the %s failed: %s", what, yk_diag_msg(d, rc));
  memcpy(p, w, bytes);
  return 0;
}

/* Broadcast n elements of dt at p from root (n may be 0), in pieces of at
 * most BCAST_CHUNK bytes: a transport posts one receive per message, and a
 * whole model's arena in one (d12: 500 MB) is more than libfabric's shm
 * provider will take (fi_trecv: ENOMEM). */
#define BCAST_CHUNK ((size_t)16 << 20)
static int bcast(yk_comm *c, void *p, size_t n, yk_dtype dt, int root, const char *what, yk_diag *d) {
  if (!n || !p) return 0;
  size_t es = yk_dtype_size(dt), per = BCAST_CHUNK / es;
  for (size_t off = 0; off < n; off += per) {
    size_t k = n - off < per ? n - off : per;
    int rc = yk_comm_broadcast_sync(c, (char *)p + off * es, k, dt, root, d);
    if (rc) return yk_errorf(d, rc, "re-form: broadcasting the %s failed: %s", what, yk_diag_msg(d, rc));
  }
  return 0;
}

int yk_engine_sync(yk_engine *e, int *source, yk_diag *d) {
  yk_comm *c = e->comms.dp;
  *source = 0;
  if (!c) return 0;
  /* the most advanced rank: the most completed steps (a joiner has done
   * none: -1), then the lowest rank among those */
  int64_t steps = e->steps_done, pick;
  int rc = yk_comm_allreduce_sync(c, &steps, &steps, 1, YK_DT_I64, YK_OP_MAX, d);
  pick = e->steps_done == steps ? -(int64_t)e->rank : INT64_MIN;
  if (!rc) rc = yk_comm_allreduce_sync(c, &pick, &pick, 1, YK_DT_I64, YK_OP_MAX, d);
  if (rc) return yk_errorf(d, rc, "re-form: agreeing on the most advanced rank failed: %s", yk_diag_msg(d, rc));
  int root = (int)-pick;
  *source = root;
  yk_mixed *mp = &e->mp;
  float *params = yk_model_params(e->model);
  if ((rc = bcast(c, params, e->nparams, YK_DT_F32, root, "weights", d)) != 0) return rc;
  if (mp->master && mp->master != params + e->soff &&
      (rc = bcast(c, mp->master, e->slen, YK_DT_F32, root, "master weights", d)) != 0)
    return rc;
  if ((rc = bcast(c, mp->params16, mp->params16 ? e->nparams : 0, mp->dt16, root, "16-bit weights", d)) != 0 ||
      (rc = bcast(c, e->m, e->slen, YK_DT_F32, root, "AdamW first moments", d)) != 0 ||
      (rc = bcast(c, e->v, e->slen, YK_DT_F32, root, "AdamW second moments", d)) != 0)
    return rc;
  if (mp->prec == YK_PREC_FP16 &&
      (rc = bcast_bytes(c, &mp->ls.st, sizeof mp->ls.st, root, "loss scaler", d)) != 0)
    return rc;
  if ((rc = bcast(c, &e->global_micro, 1, YK_DT_I64, root, "global batch", d)) != 0) return rc;
  yk_data_pos pos;
  yk_data_loader_get_pos(e->train_ld, &pos);
  if ((rc = bcast_bytes(c, &pos, sizeof pos, root, "data position", d)) != 0) return rc;
  if ((rc = yk_data_loader_set_pos(e->train_ld, &pos, d)) != 0) return rc;
  /* whether the current step is saved already: every rank must take the
   * same decision at the next boundary */
  if ((rc = bcast(c, &e->ck.last_saved, 1, YK_DT_I64, root, "last saved step", d)) != 0) return rc;
  e->steps_done = steps;
  e->start_step = steps;
  return 0;
}
