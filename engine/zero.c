/* zero.c - ZeRO stages 2 and 3 over the data-parallel group: the provider
 * that lends the model its parameters and gradient buffers region by region
 * (yk_model_provider), the reduce-scatter of gradients into this rank's
 * shard, and (stage 3) the just-in-time gathers of sharded weights.
 *
 * Every rank owns the same even slice [soff, soff + slen) of the arena as
 * under ZeRO-1 (yk_partition_even_range), so the optimizer, the checkpoints
 * and the norm see one contiguous slice whatever the stage.
 *
 * Gradients (stages 2 and 3). The model accumulates a region's gradients
 * into a working buffer the provider lends; when backward hands a region
 * back, its range joins the current bucket exactly as eng_grads coalesces
 * ranges (same first/count, same comm.bucket_kb rule), so each bucket is
 * reduced to its owners with the same yk_comm_reduce_owned call as ZeRO-1
 * makes, and with one micro-batch per step the reduced bits are ZeRO-1's.
 * Buckets alternate between two windows (capacity: a bucket plus the
 * largest layer, filled from the top down since ranges arrive from the arena
 * end toward its start); a window is reused only after its reduction
 * finished and its owned part was added into `gshard`, the fp32 gradients of
 * this rank's slice, summed over the micro-batches of the step (the first
 * micro-batch copies). The embedding's buffer (wte is tied to the LM head,
 * whose gradient comes first in backward) is lent for the whole backward;
 * it has room for the tail of layer 0's bucket so the last bucket, too, is
 * ZeRO-1's.
 *
 * Parameters. Stage 2: the full fp32 arena `params`, as ZeRO-1 (updated
 * slices all-gathered after the update). Stage 3: only the slice (fp32
 * `pshard`, or 16-bit `p16shard` in mixed precision); region r is gathered
 * into a slot by one broadcast per rank whose slice meets r (its piece;
 * every rank issues the same pieces in the same order), asynchronously. Two
 * slots take the layers (double buffering: while layer l computes, layer l+1
 * - or l-1 in backward - is being gathered); the embedding (wte + wpe, used
 * by the embedding and by the LM head) and the head (lnf) have their own
 * slots, gathered once per step and kept until the update changes them. */
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

enum { SLOT_EMPTY = 0, SLOT_INFLIGHT, SLOT_READY };

static void region_range(const eng_zero *z, int r, size_t *off, size_t *n) {
  *off = z->reg_off[r];
  *n = z->reg_cnt[r];
}

/* ---- gathers (stage 3) --------------------------------------------------- */

static int slot_of_region(const eng_zero *z, int r) {
  if (r == 0) return ZS_EMBED;
  if (r == z->nreg - 1) return ZS_HEAD;
  for (int s = 0; s < 2; s++)
    if (z->slot[s].region == r && z->slot[s].state != SLOT_EMPTY) return s;
  return -1;
}

/* Start gathering region r into slot s: one broadcast of each rank's piece. */
static int gather_start(eng_zero *z, int s, int r, yk_diag *d) {
  eng_zero_slot *sl = &z->slot[s];
  size_t o, n;
  region_range(z, r, &o, &n);
  sl->region = r;
  sl->state = SLOT_INFLIGHT;
  sl->nreq = 0;
  int is16 = z->dt16 != YK_DT_F32;
  size_t es = is16 ? sizeof(uint16_t) : sizeof(float);
  char *buf = is16 ? (char *)sl->buf16 : (char *)sl->buf;
  for (int k = 0; k < z->world; k++) {
    size_t a = o > z->off[k] ? o : z->off[k];
    size_t b = o + n < z->off[k] + z->len[k] ? o + n : z->off[k] + z->len[k];
    if (a >= b) continue;
    if (k == z->rank) {
      const char *src = is16 ? (const char *)(z->p16shard + (a - z->soff)) : (const char *)(z->pshard + (a - z->soff));
      memcpy(buf + (a - o) * es, src, (b - a) * es);
    }
    yk_diag sub = {0};
    int rc = yk_comm_broadcast(z->comm, buf + (a - o) * es, b - a, is16 ? z->dt16 : YK_DT_F32, k,
                               &sl->reqs[sl->nreq], &sub);
    if (rc) return yk_errorf(d, rc, "ZeRO-3: gathering the weights of region %d from rank %d failed: %s", r, k,
                             yk_diag_msg(&sub, rc));
    sl->nreq++;
    z->bytes_gather += (b - a) * es;
  }
  return 0;
}

static int gather_wait(eng_zero *z, int s, yk_diag *d) {
  eng_zero_slot *sl = &z->slot[s];
  if (sl->state != SLOT_INFLIGHT) return 0;
  double t0 = yk_now_s();
  int rc = 0;
  yk_diag sub = {0};
  for (int i = 0; i < sl->nreq; i++) {
    int r = yk_request_wait(&sl->reqs[i], yk_deadline_in_ms((uint64_t)z->timeout_ms), rc ? NULL : &sub);
    if (r && !rc) rc = r;
  }
  sl->nreq = 0;
  z->wait_s += yk_now_s() - t0;
  if (rc) {
    sl->state = SLOT_EMPTY;
    return yk_errorf(d, rc, "ZeRO-3: gathering the weights of region %d (of %d): %s", sl->region, z->nreg,
                     yk_diag_msg(&sub, rc));
  }
  if (z->dt16 != YK_DT_F32) {
    size_t o, n;
    region_range(z, sl->region, &o, &n);
    yk_cast_to_f32(sl->buf, sl->buf16, z->dt16, n, 1.0f, YK_ISA_AUTO);
  }
  sl->state = SLOT_READY;
  return 0;
}

/* The region whose weights the model asks for after r in this pass (-1:
 * none): forward embed, 0, ..., L-1, head; backward head, L-1, ..., 0. */
static int next_region(const eng_zero *z, int r, yk_model_pass pass) {
  int L = z->nreg - 2;
  if (pass == YK_MODEL_FORWARD) return r == z->nreg - 1 ? -1 : r + 1;
  if (r == z->nreg - 1) return L;          /* head -> layer L-1 */
  return r >= 2 ? r - 1 : -1;              /* layer l -> l-1; layer 0 and the embed: none */
}

/* Prefetch region r (if it is not held): a layer into the layer slot that is
 * not lent. */
static int prefetch(eng_zero *z, int r, yk_diag *d) {
  if (r < 0 || slot_of_region(z, r) >= 0) {
    if (r == 0 || r == z->nreg - 1) {
      int s = slot_of_region(z, r);
      if (z->slot[s].state == SLOT_EMPTY) return gather_start(z, s, r, d);
    }
    return 0;
  }
  int s;
  if (z->slot[0].lent) s = 1;
  else if (z->slot[1].lent) s = 0;
  else if (z->slot[0].state == SLOT_EMPTY) s = 0;
  else if (z->slot[1].state == SLOT_EMPTY) s = 1;
  else s = z->next_victim;
  if (z->slot[s].lent) return 0; /* both lent: not in the model's order */
  int rc = gather_wait(z, s, d); /* an unused prefetch still in flight */
  if (rc) return rc;
  z->next_victim = 1 - s;
  return gather_start(z, s, r, d);
}

static int get_params(void *ctx, int r, yk_model_pass pass, float **p, yk_diag *d) {
  eng_zero *z = ctx;
  size_t o, n;
  region_range(z, r, &o, &n);
  if (z->stage < 3) {
    *p = z->params + o;
    return 0;
  }
  int s = slot_of_region(z, r), rc;
  if (s < 0 || z->slot[s].state == SLOT_EMPTY) {
    if ((rc = prefetch(z, r, d))) return rc;
    s = slot_of_region(z, r);
  }
  if ((rc = gather_wait(z, s, d))) return rc;
  z->slot[s].lent = 1;
  *p = z->slot[s].buf;
  return prefetch(z, next_region(z, r, pass), d);
}

static int put_params(void *ctx, int r, yk_model_pass pass, yk_diag *d) {
  eng_zero *z = ctx;
  (void)pass;
  (void)d;
  if (z->stage < 3) return 0;
  int s = slot_of_region(z, r);
  if (s >= 0) z->slot[s].lent = 0;
  return 0;
}

/* ---- gradients ----------------------------------------------------------- */

/* Window w's reduction is done: add (or copy) its owned part into gshard. */
static int win_retire(eng_zero *z, int w, yk_diag *d) {
  eng_zero_win *wi = &z->win[w];
  if (!wi->req) return 0;
  double t0 = yk_now_s();
  yk_diag sub = {0};
  int rc = yk_request_wait(&wi->req, yk_deadline_in_ms((uint64_t)z->timeout_ms), &sub);
  z->wait_s += yk_now_s() - t0;
  wi->req = NULL;
  if (rc) return yk_errorf(d, rc, "ZeRO-%d: reduce-scatter of gradients [%zu, %zu): %s", z->stage, wi->first,
                           wi->first + wi->count, yk_diag_msg(&sub, rc));
  size_t a = wi->first > z->soff ? wi->first : z->soff;
  size_t b = wi->first + wi->count < z->soff + z->slen ? wi->first + wi->count : z->soff + z->slen;
  if (a >= b) return 0;
  float *src = wi->buf + (a - wi->first);
  /* 16-bit: widen the reduced values into the fp32 window they came from */
  if (wi->buf16) yk_cast_to_f32(src, wi->buf16 + (a - wi->first), z->dt16, b - a, 1.0f, YK_ISA_AUTO);
  float *dst = z->gshard + (a - z->soff);
  if (!wi->accumulate) memcpy(dst, src, (b - a) * sizeof(float));
  else
    for (size_t i = 0; i < b - a; i++) dst[i] += src[i];
  return 0;
}

/* Reduce buf[0, count) = arena [first, first + count) to its owners. */
static int issue(eng_zero *z, int w, float *buf, uint16_t *buf16, size_t first, size_t count, yk_diag *d) {
  eng_zero_win *wi = &z->win[w];
  void *send = buf;
  if (z->dt16 != YK_DT_F32) {
    send = buf16;
    yk_cast_from_f32(buf16, z->dt16, buf, count, YK_ISA_AUTO);
    int64_t bad = -1;
    if (z->local_bad < 0 && yk_optimizer_find_nonfinite(buf16, z->dt16, count, YK_ISA_AUTO, &bad) == 1)
      z->local_bad = (int64_t)first + bad;
  }
  wi->buf = buf;
  wi->buf16 = buf16;
  wi->accumulate = z->accumulate; /* of the micro-batch it belongs to: it may retire during the next one */
  wi->first = first;
  wi->count = count;
  yk_diag sub = {0};
  int rc = yk_comm_reduce_owned(z->comm, send, first, count, z->n, z->dt16, z->op, &wi->req, &sub);
  if (rc) return yk_errorf(d, rc, "ZeRO-%d: starting the reduce-scatter of gradients [%zu, %zu): %s", z->stage, first,
                           first + count, yk_diag_msg(&sub, rc));
  z->bytes_reduce += count * (z->dt16 != YK_DT_F32 ? sizeof(uint16_t) : sizeof(float));
  return 0;
}

static int get_grads(void *ctx, int r, float **g, yk_diag *d) {
  eng_zero *z = ctx;
  size_t o, n;
  region_range(z, r, &o, &n);
  if (r == 0) {
    if ((z->rc = win_retire(z, ZW_EMBED, d))) return z->rc;
    memset(z->win[ZW_EMBED].base, 0, n * sizeof(float));
    *g = z->win[ZW_EMBED].base;
    return 0;
  }
  if (z->pend_count == 0) {
    /* a new bucket in the next window, once that window's last reduction is in gshard */
    z->cur = 1 - z->cur;
    if ((z->rc = win_retire(z, z->cur, d))) return z->rc;
    z->hi = o + n;
  } else if (o + n != z->pend_off) {
    return yk_errorf(d, YK_EINVAL, "ZeRO: gradients of region %d arrive out of order (ends at %zu, expected %zu)", r,
                     o + n, z->pend_off);
  }
  float *p = z->win[z->cur].base + z->wcap - (z->hi - o);
  memset(p, 0, n * sizeof(float));
  *g = p;
  return 0;
}

static int put_grads(void *ctx, int r, yk_diag *d) {
  eng_zero *z = ctx;
  size_t o, n;
  region_range(z, r, &o, &n);
  eng_zero_win *cw = &z->win[z->cur];
  if (r == 0) {
    /* the embedding and whatever layer 0's bucket still holds: ZeRO-1's last bucket */
    eng_zero_win *e = &z->win[ZW_EMBED];
    size_t tail = z->pend_count;
    if (tail) memcpy(e->base + n, cw->base + z->wcap - tail, tail * sizeof(float));
    z->pend_count = 0;
    return z->rc = issue(z, ZW_EMBED, e->base, e->base16, 0, n + tail, d);
  }
  z->pend_off = o;
  z->pend_count += n;
  if (z->pend_count * sizeof(float) < z->bucket_bytes) return 0;
  size_t cnt = z->pend_count;
  z->pend_count = 0;
  return z->rc = issue(z, z->cur, cw->base + z->wcap - cnt, cw->base16 ? cw->base16 + z->wcap - cnt : NULL,
                       z->pend_off, cnt, d);
}

/* ---- set-up and the step's calls ------------------------------------------ */

/* The region geometry of this rank's arena, from the tensor table: the
 * embedding [0, lay0), L layers of lsz, the head [lnf, n); maxreg is the
 * largest region. */
typedef struct zero_geom {
  size_t lay0, lsz, lnf, maxreg;
} zero_geom;

static int geom_of(const yk_model_config *mc, int tp, int tp_rank, size_t n, zero_geom *g, yk_diag *d) {
  yk_tensor_desc *t;
  int nt, rc;
  if ((rc = yk_model_tp_tensor_table(mc, tp, tp_rank, &t, &nt, d))) return rc; /* this rank's pieces */
  g->lay0 = t[2].offset;
  g->lsz = t[2 + 12].offset - g->lay0;
  g->lnf = t[nt - 2].offset;
  if (mc->layers == 1) g->lsz = g->lnf - g->lay0;
  free(t);
  g->maxreg = YK_MAX(n - g->lnf, g->lsz);
  return 0;
}

/* Bytes of the one block eng_zero_init carves every buffer from: gshard,
 * the two gradient windows (a bucket plus the largest region) and the
 * embedding's window, their 16-bit twins; stage 2 the full fp32 weights;
 * stage 3 the four gather slots and this rank's weight slice. */
static size_t block_bytes(int stage, const zero_geom *g, size_t n, size_t slen, size_t bucket_bytes, int is16,
                          int touched) {
  size_t wcap = bucket_bytes / sizeof(float) + g->maxreg, ecap = g->lay0 + bucket_bytes / sizeof(float);
  /* touched: what backward fills of the windows, never more than the arena
   * (a bucket larger than the model is never full) */
  size_t nwin = 2, layers = n - g->lay0, bucket = bucket_bytes / sizeof(float);
  if (touched) {
    /* one window while the layers fit in one bucket; the embedding's window
     * gets the embedding and at most a bucket's tail */
    nwin = layers > bucket ? 2 : 1;
    wcap = YK_MIN(wcap, layers);
    ecap = g->lay0 + YK_MIN(bucket, layers);
  }
  size_t floats = slen /*gshard*/ + nwin * wcap + ecap;
  size_t halfs = is16 ? nwin * wcap + ecap : 0;
  if (stage == 2) floats += n; /* params */
  if (stage == 3) {
    floats += 2 * g->maxreg + g->lay0 + (n - g->lnf) + (is16 ? 0 : slen);
    halfs += is16 ? 2 * g->maxreg + g->lay0 + (n - g->lnf) + slen : 0;
  }
  return (floats * sizeof(float) + halfs * sizeof(uint16_t) + 64 * 16 + 4095) / 4096 * 4096;
}

int eng_zero_plan(int stage, int world, int rank, const yk_model_config *mc, int tp, int tp_rank, size_t n,
                  size_t bucket_bytes, yk_dtype dt16, int touched, size_t *bytes, yk_diag *d) {
  zero_geom g;
  int rc = geom_of(mc, tp, tp_rank, n, &g, d);
  if (rc) return rc;
  uint64_t off, len;
  yk_partition_even_range(n, world, rank, &off, &len);
  *bytes = block_bytes(stage, &g, n, (size_t)len, bucket_bytes, dt16 != YK_DT_F32, touched);
  return 0;
}

int eng_zero_init(eng_zero *z, int stage, yk_comm *comm, const yk_model_config *mc, int tp, int tp_rank, size_t n,
                  size_t bucket_bytes,
                  int64_t timeout_ms, yk_dtype dt16, int share, yk_diag *d) {
  memset(z, 0, sizeof *z);
  z->stage = stage;
  z->comm = comm;
  z->rank = yk_comm_rank(comm);
  z->world = yk_comm_size(comm);
  z->n = n;
  z->bucket_bytes = bucket_bytes;
  z->timeout_ms = timeout_ms;
  z->dt16 = dt16;
  z->local_bad = -1;
  z->shm.fd = -1;
  z->cur = 1;
  z->off = calloc((size_t)z->world, sizeof *z->off);
  z->len = calloc((size_t)z->world, sizeof *z->len);
  z->nreg = mc->layers + 2;
  z->reg_off = calloc((size_t)z->nreg, sizeof *z->reg_off);
  z->reg_cnt = calloc((size_t)z->nreg, sizeof *z->reg_cnt);
  if (!z->off || !z->len || !z->reg_off || !z->reg_cnt) return yk_errorf(d, YK_ENOMEM, "out of memory for ZeRO state");
  for (int k = 0; k < z->world; k++) {
    uint64_t o, l;
    yk_partition_even_range(n, z->world, k, &o, &l);
    z->off[k] = (size_t)o;
    z->len[k] = (size_t)l;
  }
  z->soff = z->off[z->rank];
  z->slen = z->len[z->rank];
  /* regions from the tensor table's layout: embed [0, layer 0), layers, head */
  zero_geom g;
  int rc;
  if ((rc = geom_of(mc, tp, tp_rank, n, &g, d))) return rc;
  size_t lay0 = g.lay0, lsz = g.lsz, lnf = g.lnf, maxreg = g.maxreg;
  z->reg_off[0] = 0;
  z->reg_cnt[0] = lay0;
  for (int l = 0; l < mc->layers; l++) {
    z->reg_off[1 + l] = lay0 + (size_t)l * lsz;
    z->reg_cnt[1 + l] = lsz;
  }
  z->reg_off[z->nreg - 1] = lnf;
  z->reg_cnt[z->nreg - 1] = n - lnf;
  z->wcap = bucket_bytes / sizeof(float) + maxreg;
  z->slot_cap = maxreg;
  int is16 = dt16 != YK_DT_F32;
  size_t ecap = lay0 + bucket_bytes / sizeof(float); /* the embedding and layer 0's bucket tail */
  /* One block holds every working buffer (shared memory when the ranks are
   * on one host, so the collectives read them in place). */
  z->bytes = block_bytes(stage, &g, n, z->slen, bucket_bytes, is16, 0);
  if (share) {
    if ((rc = yk_shmem_alloc(z->bytes, "yoke-zero", &z->shm, d)) == 0) {
      z->block = z->shm.ptr;
      if ((rc = yk_comm_register(comm, &z->shm, d)) != 0) return rc;
    } else if (rc != YK_EUNSUPPORTED) {
      return rc;
    }
    yk_diag_clear(d);
  }
  if (!z->block && !(z->block = yk_alloc(z->bytes)))
    return yk_errorf(d, YK_ENOMEM, "out of memory for ZeRO-%d buffers (%.1f MiB)", stage, z->bytes / 1048576.0);
  char *p = z->block;
#define CARVE(ptr, count, type) (ptr = (type *)(void *)p, p += ((count) * sizeof(type) + 63) / 64 * 64)
  CARVE(z->gshard, z->slen, float);
  CARVE(z->win[0].base, z->wcap, float);
  CARVE(z->win[1].base, z->wcap, float);
  CARVE(z->win[ZW_EMBED].base, ecap, float);
  if (is16) {
    CARVE(z->win[0].base16, z->wcap, uint16_t);
    CARVE(z->win[1].base16, z->wcap, uint16_t);
    CARVE(z->win[ZW_EMBED].base16, ecap, uint16_t);
  }
  if (stage == 2) CARVE(z->params, n, float);
  if (stage == 3) {
    size_t cap[4] = {maxreg, maxreg, lay0, n - lnf};
    for (int s = 0; s < 4; s++) {
      CARVE(z->slot[s].buf, cap[s], float);
      if (is16) CARVE(z->slot[s].buf16, cap[s], uint16_t);
      z->slot[s].region = s == ZS_EMBED ? 0 : s == ZS_HEAD ? z->nreg - 1 : -1;
      if (!(z->slot[s].reqs = calloc((size_t)z->world, sizeof(yk_request *))))
        return yk_errorf(d, YK_ENOMEM, "out of memory for ZeRO-3 requests");
    }
    if (is16) CARVE(z->p16shard, z->slen, uint16_t);
    else CARVE(z->pshard, z->slen, float);
  }
#undef CARVE
  return 0;
}

void eng_zero_provider(eng_zero *z, yk_model_provider *p) {
  *p = (yk_model_provider){.ctx = z, .get_params = get_params, .put_params = put_params, .get_grads = get_grads,
                           .put_grads = put_grads};
}

void eng_zero_step_start(eng_zero *z) {
  z->local_bad = -1;
  z->bytes_reduce = z->bytes_gather = 0;
  z->wait_s = 0;
}

void eng_zero_begin(eng_zero *z, int accumulate, yk_redop op) {
  z->accumulate = accumulate;
  z->op = op;
  z->pend_count = 0;
  z->rc = 0;
}

int eng_zero_finish(eng_zero *z, double *wait_s, yk_diag *d) {
  int rc = z->rc;
  for (int w = 0; w < 3; w++) {
    int r = win_retire(z, w, rc ? NULL : d);
    if (r && !rc) rc = r;
  }
  *wait_s = z->wait_s;
  return rc;
}

void eng_zero_params_changed(eng_zero *z) {
  for (int s = 0; s < 4; s++)
    if (z->slot[s].state == SLOT_READY) z->slot[s].state = SLOT_EMPTY;
}

int eng_zero_gather_all(eng_zero *z, float *dst, uint64_t *fnv, yk_diag *d) {
  /* region by region through layer slot 0 (nothing else is lent between steps) */
  for (int s = 0; s < 4; s++) {
    int rc = gather_wait(z, s, d);
    if (rc) return rc;
  }
  for (int r = 0; r < z->nreg; r++) {
    size_t o, n;
    region_range(z, r, &o, &n);
    int s = r == 0 ? ZS_EMBED : r == z->nreg - 1 ? ZS_HEAD : 0;
    int rc;
    if ((rc = gather_start(z, s, r, d)) || (rc = gather_wait(z, s, d))) return rc;
    if (dst) memcpy(dst + o, z->slot[s].buf, n * sizeof(float));
    if (fnv) {
      const unsigned char *b = (const unsigned char *)z->slot[s].buf;
      uint64_t h = *fnv;
      for (size_t i = 0; i < n * sizeof(float); i++) h = (h ^ b[i]) * 1099511628211ull;
      *fnv = h;
    }
    if (s == 0) z->slot[0].state = SLOT_EMPTY;
  }
  return 0;
}

void eng_zero_drain(eng_zero *z) {
  for (int w = 0; w < 3; w++)
    if (z->win[w].req) yk_request_wait(&z->win[w].req, yk_deadline_in_ms(1000), NULL);
  for (int s = 0; s < 4; s++)
    for (int i = 0; i < z->slot[s].nreq; i++)
      if (z->slot[s].reqs[i]) yk_request_wait(&z->slot[s].reqs[i], yk_deadline_in_ms(1000), NULL);
}

void eng_zero_free(eng_zero *z) {
  if (!z->stage) return;
  eng_zero_drain(z);
  if (z->shm.ptr) {
    yk_comm_unregister(z->comm, &z->shm);
    yk_shmem_free(&z->shm);
  } else {
    yk_free(z->block);
  }
  for (int s = 0; s < 4; s++) free(z->slot[s].reqs);
  free(z->off);
  free(z->len);
  free(z->reg_off);
  free(z->reg_cnt);
  memset(z, 0, sizeof *z);
}
