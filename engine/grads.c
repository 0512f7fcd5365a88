/* grads.c - the gradient reduction of one step over the data-parallel group:
 * buckets that start reducing while backward still runs (see eng_grads in
 * engine_internal.h). */
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

void eng_grads_init(eng_grads *g, yk_comm *comm, size_t bucket_bytes, int64_t timeout_ms) {
  memset(g, 0, sizeof *g);
  g->comm = comm;
  g->bucket_bytes = bucket_bytes;
  g->timeout_ms = timeout_ms;
  g->local_bad = -1;
}

void eng_grads_set_owned(eng_grads *g, size_t total) { g->owned_total = g->comm ? total : 0; }

static const yk_trace_name T_ISSUE = {"bucket issue", "comm", "bucket", "bytes"};
static const yk_trace_name T_WAIT = {"bucket wait", "wait", "bucket", "bytes"};
static const yk_trace_name T_AR = {"allreduce", "comm", "bucket", "bytes"};
static const yk_trace_name T_RO = {"reduce_owned", "comm", "bucket", "bytes"};
static const yk_trace_name T_SUM = {"scalar allreduce", "wait", "values", NULL};

/* train.trace: request i was waited for since tw; its whole flight, from
 * issue to the end of the wait, is an interval (they overlap backward and
 * each other, so they do not nest). */
static void trace_waited(eng_grads *g, int i, int64_t tw) {
  if (!g->tk) return;
  yk_trace_end(g->tk, &T_WAIT, tw, g->tr[i].idx, (double)g->tr[i].bytes);
  yk_trace_interval(g->tk, g->owned_total ? &T_RO : &T_AR, g->tr[i].id, g->tr[i].t, (int64_t)yk_now_ns(),
                    g->tr[i].idx, (double)g->tr[i].bytes);
}

/* The 16-bit form of a bucket lives in its own fp32 memory: x (count fp32)
 * is rounded (nearest even) into (uint16_t *)x[0, count), front to back
 * through a chunk on the stack: the 16-bit element i lands at byte 2i, at
 * or before the fp32 element i it came from (byte 4i), so nothing is
 * overwritten before it is read. unpack_16 is the reverse, back to front
 * (fp32 element i at byte 4i is written only once the 16-bit elements at
 * bytes >= 2i are read), for elements [a, b) of the bucket, times mul: the
 * bits of yk_cast_from_f32 and yk_cast_to_f32 on separate arrays. */
#define PACK_CHUNK 2048
static void pack_16(float *x, yk_dtype dt, size_t count) {
  uint16_t tmp[PACK_CHUNK], *p = (uint16_t *)x;
  for (size_t i = 0; i < count; i += PACK_CHUNK) {
    size_t k = YK_MIN((size_t)PACK_CHUNK, count - i);
    yk_cast_from_f32(tmp, dt, x + i, k, YK_ISA_AUTO);
    memcpy(p + i, tmp, k * sizeof(uint16_t));
  }
}
static void unpack_16(float *x, yk_dtype dt, size_t a, size_t b, float mul) {
  uint16_t tmp[PACK_CHUNK];
  const uint16_t *p = (const uint16_t *)x;
  while (b > a) {
    size_t k = YK_MIN((size_t)PACK_CHUNK, b - a);
    memcpy(tmp, p + b - k, k * sizeof(uint16_t));
    yk_cast_to_f32(x + b - k, tmp, dt, k, mul, YK_ISA_AUTO);
    b -= k;
  }
}

void eng_grads_widen(eng_grads *g, size_t lo, size_t len, float mul) {
  for (size_t i = 0; i < g->nbk; i++) {
    size_t off = g->bk[i][0], cnt = g->bk[i][1];
    size_t a = YK_MAX(lo, off), b = YK_MIN(lo + len, off + cnt);
    if (a < b) unpack_16(g->grads + off, g->dtype, a - off, b - off, mul);
  }
}

/* Start the reduction of grads[off, off + count). */
static int issue(eng_grads *g, size_t off, size_t count) {
  if (count == 0 || g->err) return 0;
  if (g->comm && g->nreq >= ENG_GRADS_MAX_REQ) {
    /* Too many outstanding buckets: retire the oldest first. */
    int64_t tw = yk_trace_begin(g->tk);
    int rc = yk_request_wait(&g->reqs[0], yk_deadline_in_ms((uint64_t)g->timeout_ms), &g->errd);
    trace_waited(g, 0, tw);
    memmove(g->tr, g->tr + 1, (size_t)(g->nreq - 1) * sizeof g->tr[0]);
    memmove(g->reqs, g->reqs + 1, (size_t)(g->nreq - 1) * sizeof g->reqs[0]);
    g->nreq--;
    if (rc) return g->err = rc;
  }
  void *buf = g->grads + off;
  if (g->dtype != YK_DT_F32) {
    /* 16-bit gradients: round this range once, packed into the first half of
     * its own fp32 memory (no second arena: see pack_16), and note the first
     * local overflow, so an fp16 overflow can be pinned on a rank and tensor. */
    if (g->nbk == g->capbk) {
      size_t cap = g->capbk ? 2 * g->capbk : 64;
      size_t(*nb)[2] = realloc(g->bk, cap * sizeof *nb);
      if (!nb) {
        yk_errorf(&g->errd, YK_ENOMEM, "out of memory for the list of gradient buckets (%zu)", cap);
        return g->err = YK_ENOMEM;
      }
      g->bk = nb;
      g->capbk = cap;
    }
    g->bk[g->nbk][0] = off;
    g->bk[g->nbk][1] = count;
    g->nbk++;
    pack_16(g->grads + off, g->dtype, count);
    int64_t bad = -1;
    if (g->local_bad < 0 && yk_optimizer_find_nonfinite(buf, g->dtype, count, YK_ISA_AUTO, &bad) == 1)
      g->local_bad = (int64_t)off + bad;
  }
  if (!g->comm) return 0; /* one rank: the rounding is all there is to do */
  int64_t ti = yk_trace_begin(g->tk);
  int rc = g->owned_total ? yk_comm_reduce_owned(g->comm, buf, off, count, g->owned_total, g->dtype, g->op,
                                                 &g->reqs[g->nreq], &g->errd)
                          : yk_comm_allreduce(g->comm, buf, buf, count, g->dtype, g->op, &g->reqs[g->nreq],
                                              &g->errd);
  if (rc) return g->err = rc;
  if (g->tk) {
    g->tr[g->nreq].t = ti;
    g->tr[g->nreq].id = g->nbuckets;
    g->tr[g->nreq].idx = g->issued;
    g->tr[g->nreq].bytes = count * yk_dtype_size(g->dtype);
    yk_trace_end(g->tk, &T_ISSUE, ti, g->issued, (double)g->tr[g->nreq].bytes);
  }
  g->nbuckets++;
  g->issued++;
  g->nreq++;
  g->bytes += count * yk_dtype_size(g->dtype);
  return 0;
}

void eng_grads_begin(eng_grads *g, float *grads, uint16_t *grads16, yk_dtype dtype, yk_redop op) {
  /* One fp32 rank has nothing to reduce or round. */
  g->active = g->comm != NULL || dtype != YK_DT_F32;
  g->grads = grads;
  (void)grads16;
  g->dtype = dtype;
  g->nbk = 0;
  g->op = op;
  g->local_bad = -1;
  g->pend_count = 0;
  g->bytes = 0;
  g->issued = 0;
  g->err = 0;
  yk_diag_clear(&g->errd);
}

void eng_grads_ready(void *ctx, size_t offset, size_t count) {
  eng_grads *g = ctx;
  if (!g->active) return;
  /* Ranges arrive from the end of the arena toward its start. */
  g->pend_off = offset;
  g->pend_count += count;
  if (g->pend_count * sizeof(float) >= g->bucket_bytes) {
    issue(g, g->pend_off, g->pend_count);
    g->pend_count = 0;
  }
}

int eng_grads_finish(eng_grads *g, double *wait_s, yk_diag *d) {
  *wait_s = 0;
  if (!g->active) return 0;
  g->active = 0;
  if (g->pend_count) issue(g, g->pend_off, g->pend_count);
  g->pend_count = 0;
  double t0 = yk_now_s();
  int rc = g->err;
  for (int i = 0; i < g->nreq; i++) {
    int64_t tw = yk_trace_begin(g->tk);
    int r = yk_request_wait(&g->reqs[i], yk_deadline_in_ms((uint64_t)g->timeout_ms), rc ? NULL : &g->errd);
    trace_waited(g, i, tw);
    if (r && !rc) rc = r;
  }
  g->nreq = 0;
  *wait_s = yk_now_s() - t0;
  if (rc) {
    if (d) *d = g->errd;
    return rc;
  }
  return 0;
}

void eng_grads_drain(eng_grads *g) {
  for (int i = 0; i < g->nreq; i++)
    if (g->reqs[i]) yk_request_wait(&g->reqs[i], yk_deadline_in_ms(1000), NULL);
  g->nreq = 0;
  g->active = 0;
}

void eng_grads_free(eng_grads *g) {
  eng_grads_drain(g);
  free(g->bk);
  g->bk = NULL;
  g->nbk = g->capbk = 0;
}

int eng_grads_sum_f64(eng_grads *g, double *v, int n, yk_diag *d) {
  if (!g->comm) return 0;
  /* Scalars for logs and validation (losses, counts): summed as f32, which
   * is accurate to ~1e-7 relative - enough for a loss printed with 4-6
   * digits. The gradients themselves never take this path. */
  float buf[32] = {0};
  if (n > 32) return yk_errorf(d, YK_EINVAL, "too many values to reduce (%d)", n);
  for (int i = 0; i < n; i++) buf[i] = (float)v[i];
  int64_t t0 = yk_trace_begin(g->tk);
  int rc = yk_comm_allreduce_sync(g->comm, buf, buf, (size_t)n, YK_DT_F32, YK_OP_SUM, d);
  yk_trace_end(g->tk, &T_SUM, t0, n, 0);
  if (rc) return rc;
  for (int i = 0; i < n; i++) v[i] = (double)buf[i];
  return 0;
}
