/* algo_ring.c - ring reduce-scatter / all-gather / all-reduce (pipelined in
 * segments), chain broadcast, dissemination barrier, and recursive doubling
 * all-reduce for small messages.
 *
 * Ring layout: rank r sends to r+1 and receives from r-1. The buffer of
 * `count` elements is cut into `size` chunks (coll_range: the first
 * count % size chunks one element longer); rank r owns chunk r. Each chunk
 * is cut into K segments (K from the largest chunk and opts.segment_bytes,
 * equal on all ranks), so a segment can travel on while the next one is
 * being received or reduced.
 *   reduce-scatter, step s = 0..p-2: send chunk (r-s-1), receive chunk
 *     (r-s-2) into a staging slot and reduce it with the local input; at the
 *     last step the received chunk is r: the owner computes its final value
 *     (and divides for AVG) exactly once;
 *   all-gather, step s = 0..p-2: send chunk (r-s), receive chunk (r-s-1)
 *     straight into the output. Final values are only copied, so every rank
 *     ends with bitwise-identical results. */
#include <string.h>

#include "coll_internal.h"

#define STAGE_SLOTS 4

static inline int mod(int a, int p) { return ((a % p) + p) % p; }

typedef struct ring {
  yk_comm *c;
  int p, r, next, prev, K;
  size_t count, es, seg_max;
  yk_dtype t;
  yk_redop op;
  uint32_t seq;
} ring;

static void ring_init(ring *g, yk_comm *c, struct yk_request *q) {
  g->c = c;
  g->p = c->size;
  g->r = c->rank;
  g->next = mod(g->r + 1, g->p);
  g->prev = mod(g->r - 1, g->p);
  g->count = q->count;
  g->t = q->dtype;
  g->op = q->op;
  g->es = yk_dtype_size(q->dtype);
  g->seq = q->seq;
  size_t off, maxc;
  coll_range(g->count, g->p, 0, &off, &maxc);
  size_t seg_el = c->seg_bytes / g->es;
  if (seg_el < 1) seg_el = 1;
  g->K = (int)((maxc + seg_el - 1) / seg_el);
  if (g->K < 1) g->K = 1;
  g->seg_max = (maxc + (size_t)g->K - 1) / (size_t)g->K;
}

/* element range of segment k of chunk ch */
static void seg_range(const ring *g, int ch, int k, size_t *off, size_t *len) {
  size_t co, cl, so, sl;
  coll_range(g->count, g->p, ch, &co, &cl);
  coll_range(cl, g->K, k, &so, &sl);
  *off = co + so;
  *len = sl;
}

/* Reduce-scatter phase. in: full input; work: where non-final partial sums
 * go (indexed like the full buffer); fin: where this rank's final chunk goes
 * (fin[0] is element 0 of chunk r). If ag_sends is non-NULL the final
 * segments are sent on to `next` right away (start of the all-gather). */
static int ring_rs(ring *g, const char *in, char *work, char *fin, xreq *ag_sends, yk_diag *d) {
  yk_comm *c = g->c;
  int p = g->p, K = g->K, U = (p - 1) * K;
  size_t es = g->es;
  char *stage = coll_stage(c, STAGE_SLOTS * g->seg_max * es);
  xreq *rq = coll_xreqs(c, (size_t)U * 2 + (size_t)K);
  if (!stage || !rq) return yk_errorf(d, YK_ENOMEM, "out of memory for ring staging (%zu bytes)", g->seg_max * es);
  xreq *sq = rq + U;
  uint64_t tag = coll_data_tag(c, g->seq, 0), agtag = coll_data_tag(c, g->seq, 1);
  size_t fin_off, fin_len;
  coll_range(g->count, p, g->r, &fin_off, &fin_len);
  int rc;
  for (int u = 0; u < U && u < STAGE_SLOTS; u++) {
    size_t o, l;
    seg_range(g, mod(g->r - u / K - 2, p), u % K, &o, &l);
    if ((rc = coll_irecv(c, g->prev, tag, stage + (size_t)(u % STAGE_SLOTS) * g->seg_max * es, l * es, &rq[u], d)))
      return rc;
  }
  for (int k = 0; k < K; k++) {
    size_t o, l;
    seg_range(g, mod(g->r - 1, p), k, &o, &l);
    if ((rc = coll_isend(c, g->next, tag, in + o * es, l * es, &sq[k], d))) return rc;
  }
  for (int u = 0; u < U; u++) {
    int s = u / K, k = u % K, ch = mod(g->r - s - 2, p);
    if ((rc = coll_wait(c, &rq[u], g->prev, d))) return rc;
    size_t o, l;
    seg_range(g, ch, k, &o, &l);
    const char *tmp = stage + (size_t)(u % STAGE_SLOTS) * g->seg_max * es;
    char *dst = s == p - 2 ? fin + (o - fin_off) * es : work + o * es;
    /* dst (l) = in (l) (op) received partial (l), dtype g->t */
    yk_coll_reduce(dst, in + o * es, tmp, l, g->t, g->op, 0);
    int nu = u + STAGE_SLOTS;
    if (nu < U) {
      size_t o2, l2;
      seg_range(g, mod(g->r - nu / K - 2, p), nu % K, &o2, &l2);
      if ((rc = coll_irecv(c, g->prev, tag, stage + (size_t)(nu % STAGE_SLOTS) * g->seg_max * es, l2 * es, &rq[nu], d)))
        return rc;
    }
    if (s < p - 2) {
      if ((rc = coll_isend(c, g->next, tag, dst, l * es, &sq[u + K], d))) return rc;
    } else {
      if (g->op == YK_OP_AVG) yk_coll_avg_finish(dst, l, g->t, p);
      if (ag_sends && (rc = coll_isend(c, g->next, agtag, dst, l * es, &ag_sends[k], d))) return rc;
    }
  }
  for (int j = 0; j < U; j++)
    if ((rc = coll_wait(c, &sq[j], g->next, d))) return rc;
  return 0;
}

/* All-gather phase on the full buffer `out`, whose chunk r is final. If
 * first_sent, the K segments of chunk r are already in flight in sq[0..K). */
static int ring_ag(ring *g, char *out, xreq *rq, xreq *sq, int first_sent, yk_diag *d) {
  yk_comm *c = g->c;
  int p = g->p, K = g->K, U = (p - 1) * K, rc;
  size_t es = g->es;
  uint64_t tag = coll_data_tag(c, g->seq, 1);
  for (int u = 0; u < U; u++) {
    size_t o, l;
    seg_range(g, mod(g->r - u / K - 1, p), u % K, &o, &l);
    if ((rc = coll_irecv(c, g->prev, tag, out + o * es, l * es, &rq[u], d))) return rc;
  }
  if (!first_sent)
    for (int k = 0; k < K; k++) {
      size_t o, l;
      seg_range(g, g->r, k, &o, &l);
      if ((rc = coll_isend(c, g->next, tag, out + o * es, l * es, &sq[k], d))) return rc;
    }
  for (int u = 0; u < U; u++) {
    int s = u / K, k = u % K;
    if ((rc = coll_wait(c, &rq[u], g->prev, d))) return rc;
    if (s < p - 2) {
      size_t o, l;
      seg_range(g, mod(g->r - s - 1, p), k, &o, &l);
      if ((rc = coll_isend(c, g->next, tag, out + o * es, l * es, &sq[u + K], d))) return rc;
    }
  }
  for (int j = 0; j < U; j++)
    if ((rc = coll_wait(c, &sq[j], g->next, d))) return rc;
  return 0;
}

int coll_ring_allreduce(yk_comm *c, struct yk_request *q, yk_diag *d) {
  if (q->count == 0) return 0;
  ring g;
  ring_init(&g, c, q);
  int U = (g.p - 1) * g.K;
  /* the AG requests live apart from the RS ones (coll_xreqs is reused) */
  xreq *agr = coll_xreqs2(c, (size_t)U * 2);
  if (!agr) return yk_errorf(d, YK_ENOMEM, "out of memory for %d ring requests", U * 2);
  char *out = q->recvbuf;
  size_t fo, fl;
  coll_range(g.count, g.p, g.r, &fo, &fl);
  int rc = ring_rs(&g, q->sendbuf, out, out + fo * g.es, agr + U, d);
  if (!rc) rc = ring_ag(&g, out, agr, agr + U, 1, d);
  return rc;
}

int coll_ring_reduce_scatter(yk_comm *c, struct yk_request *q, yk_diag *d) {
  if (q->count == 0) return 0;
  ring g;
  ring_init(&g, c, q);
  char *work = coll_work(c, g.count * g.es);
  if (!work) return yk_errorf(d, YK_ENOMEM, "out of memory for reduce-scatter scratch (%zu bytes)", g.count * g.es);
  return ring_rs(&g, q->sendbuf, work, q->recvbuf, NULL, d);
}

int coll_ring_allgather(yk_comm *c, struct yk_request *q, yk_diag *d) {
  if (q->count == 0) return 0;
  ring g;
  ring_init(&g, c, q);
  size_t fo, fl;
  coll_range(g.count, g.p, g.r, &fo, &fl);
  char *out = q->recvbuf;
  if (fl && (const char *)q->sendbuf != out + fo * g.es) memmove(out + fo * g.es, q->sendbuf, fl * g.es);
  int U = (g.p - 1) * g.K;
  xreq *rq = coll_xreqs(c, (size_t)U * 2);
  if (!rq) return yk_errorf(d, YK_ENOMEM, "out of memory for %d ring requests", U * 2);
  return ring_ag(&g, out, rq, rq + U, 0, d);
}

/* Pipelined chain from the root along the ring: (p-1)α + nβ for large n. */
int coll_chain_broadcast(yk_comm *c, struct yk_request *q, yk_diag *d) {
  size_t es = yk_dtype_size(q->dtype), n = q->count * es;
  if (n == 0) return 0;
  int p = c->size, pos = mod(c->rank - q->root, p);
  int next = mod(c->rank + 1, p), prev = mod(c->rank - 1, p);
  size_t seg = c->seg_bytes / es * es;
  if (seg == 0) seg = es;
  int K = (int)((n + seg - 1) / seg);
  xreq *rq = coll_xreqs(c, (size_t)K * 2), *sq;
  if (!rq) return yk_errorf(d, YK_ENOMEM, "out of memory for %d broadcast requests", K * 2);
  sq = rq + K;
  uint64_t tag = coll_data_tag(c, q->seq, 2);
  char *buf = q->recvbuf;
  int rc, sends = pos < p - 1;
  if (pos > 0)
    for (int k = 0; k < K; k++) {
      size_t o = (size_t)k * seg, l = YK_MIN(seg, n - o);
      if ((rc = coll_irecv(c, prev, tag, buf + o, l, &rq[k], d))) return rc;
    }
  for (int k = 0; k < K; k++) {
    size_t o = (size_t)k * seg, l = YK_MIN(seg, n - o);
    if (pos > 0 && (rc = coll_wait(c, &rq[k], prev, d))) return rc;
    if (sends && (rc = coll_isend(c, next, tag, buf + o, l, &sq[k], d))) return rc;
  }
  if (sends)
    for (int k = 0; k < K; k++)
      if ((rc = coll_wait(c, &sq[k], next, d))) return rc;
  return 0;
}

/* Dissemination barrier: ceil(log2 p) rounds of zero-byte messages. */
int coll_dissemination_barrier(yk_comm *c, struct yk_request *q, yk_diag *d) {
  int p = c->size, round = 0, rc;
  xreq *x = coll_xreqs(c, 2);
  if (!x) return yk_errorf(d, YK_ENOMEM, "out of memory for barrier requests");
  for (int k = 1; k < p; k <<= 1, round++) {
    int to = mod(c->rank + k, p), from = mod(c->rank - k, p);
    uint64_t tag = coll_data_tag(c, q->seq, 16 + round);
    static const char z = 0;
    if ((rc = coll_irecv(c, from, tag, NULL, 0, &x[0], d))) return rc;
    if ((rc = coll_isend(c, to, tag, &z, 0, &x[1], d))) return rc;
    if ((rc = coll_wait(c, &x[0], from, d))) return rc;
    if ((rc = coll_wait(c, &x[1], to, d))) return rc;
  }
  return 0;
}

/* Recursive doubling all-reduce (the logarithmic "tree" choice for small
 * messages): ceil(log2 p) exchanges of the whole vector. Non-powers of two:
 * ranks >= p' (largest power of two <= p) first fold their vector into rank
 * r - p' and get the result back at the end. Each combine is done as
 * (lower rank's value) op (higher rank's value), so both partners compute
 * the same bits (matters for max/min of +0/-0).
 * Every message is [coll_hdr | data]: the operation header rides with the
 * data instead of a separate exchange (one message latency per round, which
 * is what small all-reduces pay for). The exchange graph (hypercube plus
 * fold edges) is connected, so any difference among ranks is seen by some
 * pair of partners, both of which report it. */
int coll_rd_allreduce(yk_comm *c, struct yk_request *q, yk_diag *d) {
  size_t es = yk_dtype_size(q->dtype), n = q->count, bytes = n * es, H = sizeof(coll_hdr);
  int p = c->size, r = c->rank, pof2 = 1, rc;
  while (pof2 * 2 <= p) pof2 *= 2;
  char *buf = q->recvbuf;
  if (n && q->sendbuf != q->recvbuf) memmove(buf, q->sendbuf, bytes);
  char *st = coll_stage(c, 2 * (H + bytes) + 128);
  xreq *x = coll_xreqs(c, 2);
  if (!st || !x) return yk_errorf(d, YK_ENOMEM, "out of memory for %zu bytes of tree staging", bytes);
  char *out = st, *in = st + ((H + bytes + 63) & ~(size_t)63); /* headers stay aligned */
  coll_hdr_fill(c, q, (coll_hdr *)out);
  /* one exchange step: send [hdr|buf] to `to` (if >= 0), receive [hdr|data]
   * from `from` (if >= 0) into `in`, check the header */
#define XCHG(to, from, sub)                                                                                    \
  do {                                                                                                         \
    uint64_t tag_ = coll_data_tag(c, q->seq, (sub));                                                           \
    if ((from) >= 0 && (rc = coll_irecv(c, (from), tag_, in, H + bytes, &x[0], d))) return rc;                \
    if ((to) >= 0) {                                                                                           \
      if (n) memcpy(out + H, buf, bytes);                                                                      \
      if ((rc = coll_isend(c, (to), tag_, out, H + bytes, &x[1], d))) return rc;                              \
    }                                                                                                          \
    if ((from) >= 0 && (rc = coll_wait_hdr(c, &x[0], (from), (coll_hdr *)out, (coll_hdr *)in, H + bytes, d))) \
      return rc;                                                                                               \
    if ((to) >= 0 && (rc = coll_wait(c, &x[1], (to), d))) return rc;                                          \
  } while (0)
  if (r >= pof2) { /* extra rank: fold in, wait for the result */
    XCHG(r - pof2, -1, 100);
    XCHG(-1, r - pof2, 101);
    if (n) memcpy(buf, in + H, bytes);
    return 0;
  }
  if (r + pof2 < p) {
    XCHG(-1, r + pof2, 100);
    yk_coll_reduce(buf, buf, in + H, n, q->dtype, q->op, 0);
  }
  int round = 0;
  for (int mask = 1; mask < pof2; mask <<= 1, round++) {
    int partner = r ^ mask;
    XCHG(partner, partner, 1 + round);
    if (r < partner) yk_coll_reduce(buf, buf, in + H, n, q->dtype, q->op, 0);
    else yk_coll_reduce(buf, in + H, buf, n, q->dtype, q->op, 0);
  }
  if (q->op == YK_OP_AVG) yk_coll_avg_finish(buf, n, q->dtype, p);
  if (r + pof2 < p) XCHG(r + pof2, -1, 101);
#undef XCHG
  return 0;
}

/* Rabenseifner's all-reduce (the logarithmic choice for medium and large
 * messages on many ranks): a reduce-scatter by recursive halving, then an
 * all-gather by recursive doubling, 2·log2(p') messages and 2(p'-1)/p' of the
 * vector on the wire per rank. Non-powers of two fold in as in
 * coll_rd_allreduce. Halving step with partner r ^ mask (mask = p'/2 .. 1):
 * both partners hold the same range [lo, hi); the lower rank keeps the lower
 * half [lo, lo + len/2), sends the upper one, and reduces the partner's copy
 * of its half as (lower rank's value) op (higher rank's value). Every
 * element ends on exactly one rank, fully reduced, and is then only copied:
 * identical bits everywhere. The operation header went ahead separately
 * (exec_op), so messages carry data only. */
int coll_rhd_allreduce(yk_comm *c, struct yk_request *q, yk_diag *d) {
  size_t es = yk_dtype_size(q->dtype), n = q->count, bytes = n * es;
  int p = c->size, r = c->rank, pof2 = 1, rc;
  while (pof2 * 2 <= p) pof2 *= 2;
  char *buf = q->recvbuf;
  if (n && q->sendbuf != q->recvbuf) memmove(buf, q->sendbuf, bytes);
  char *tmp = coll_stage(c, bytes / 2 + es + 64);
  xreq *x = coll_xreqs(c, 2);
  if (!tmp || !x) return yk_errorf(d, YK_ENOMEM, "out of memory for %zu bytes of halving staging", bytes);
#define SR(to, sbuf, sn, from, rbuf, rn, sub)                                                                   \
  do {                                                                                                          \
    uint64_t tag_ = coll_data_tag(c, q->seq, (sub));                                                            \
    if ((from) >= 0 && (rc = coll_irecv(c, (from), tag_, (rbuf), (rn), &x[0], d))) return rc;                  \
    if ((to) >= 0 && (rc = coll_isend(c, (to), tag_, (sbuf), (sn), &x[1], d))) return rc;                      \
    if ((from) >= 0 && (rc = coll_wait(c, &x[0], (from), d))) return rc;                                         \
    if ((from) >= 0 && x[0].nbytes != (size_t)(rn))                                                             \
      return yk_errorf(d, YK_EPROTO, "rank %d sent %zu bytes in a halving step of collective #%u, expected %zu", \
                       (from), x[0].nbytes, q->seq, (size_t)(rn));                                              \
    if ((to) >= 0 && (rc = coll_wait(c, &x[1], (to), d))) return rc;                                             \
  } while (0)
  if (r >= pof2) { /* extra rank: fold in, get the result back */
    SR(r - pof2, buf, bytes, -1, NULL, 0, 100);
    SR(-1, NULL, 0, r - pof2, buf, bytes, 101);
    return 0;
  }
  if (r + pof2 < p) {
    char *big = coll_work(c, bytes + 64);
    if (!big) return yk_errorf(d, YK_ENOMEM, "out of memory for %zu bytes of fold staging", bytes);
    SR(-1, NULL, 0, r + pof2, big, bytes, 100);
    yk_coll_reduce(buf, buf, big, n, q->dtype, q->op, 0);
  }
  size_t lo[32], hi[32]; /* the range held before halving step s */
  size_t cl = 0, ch = n;
  int s = 0;
  for (int mask = pof2 >> 1; mask >= 1; mask >>= 1, s++) {
    int partner = r ^ mask;
    size_t mid = cl + (ch - cl) / 2;
    lo[s] = cl;
    hi[s] = ch;
    size_t kl = r < partner ? cl : mid, kh = r < partner ? mid : ch; /* kept */
    size_t sl = r < partner ? mid : cl, sh = r < partner ? ch : mid; /* sent */
    SR(partner, buf + sl * es, (sh - sl) * es, partner, tmp, (kh - kl) * es, 200 + s);
    if (r < partner) yk_coll_reduce(buf + kl * es, buf + kl * es, tmp, kh - kl, q->dtype, q->op, 0);
    else yk_coll_reduce(buf + kl * es, tmp, buf + kl * es, kh - kl, q->dtype, q->op, 0);
    cl = kl;
    ch = kh;
  }
  if (q->op == YK_OP_AVG) yk_coll_avg_finish(buf + cl * es, ch - cl, q->dtype, p);
  /* doubling: undo the halving steps in reverse; the partner holds the
   * other half of the range both held before that step */
  for (int mask = 1; mask < pof2; mask <<= 1) {
    s--;
    int partner = r ^ mask;
    size_t mid = lo[s] + (hi[s] - lo[s]) / 2;
    size_t ol = r < partner ? mid : lo[s], oh = r < partner ? hi[s] : mid;
    SR(partner, buf + cl * es, (ch - cl) * es, partner, buf + ol * es, (oh - ol) * es, 300 + s);
    cl = lo[s];
    ch = hi[s];
  }
  if (r + pof2 < p) SR(r + pof2, buf, bytes, -1, NULL, 0, 101);
#undef SR
  return 0;
}
