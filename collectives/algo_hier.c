/* algo_hier.c - hierarchical all-reduce for ranks on several nodes, the
 * same number on each (docs/collectives.md, "hier"): a board reduce-scatter
 * on the node, an all-reduce of the node's 1/ppn chunk across the nodes
 * (ring or tree by the cost model, over the network transport), and a board
 * all-gather on the node. The stages are ordinary blocking operations of
 * the two child communicators that creation built (c->hier_local,
 * c->hier_cross), so each runs through its communicator's queue under its
 * own deadline and watchdog. That puts this file above the queue: exec
 * reaches it through the algorithm table the communicator carries. */
#include <string.h>

#include "coll_internal.h"

int coll_hier_allreduce(yk_comm *c, struct yk_request *r, yk_diag *d) {
  yk_comm *lc = c->hier_local, *xc = c->hier_cross;
  /* Each stage runs under the full comm.timeout_ms and its own watchdog (a
   * rank late by up to the deadline is tolerated in every stage); the
   * parent's watchdog would count the three together, so it stands down. */
  c->op_deadline = 0;
  size_t es = yk_dtype_size(r->dtype), off, len;
  /* avg: sums on both levels, one division by the world size at the end */
  yk_redop op = r->op == YK_OP_AVG ? YK_OP_SUM : r->op;
  coll_range(r->count, lc->size, lc->rank, &off, &len);
  char *mine = (char *)r->recvbuf + off * es;
  yk_comm *stage = lc;
  int rc = yk_comm_reduce_scatter_sync(lc, r->sendbuf, mine, r->count, r->dtype, op, d);
  if (!rc && len) rc = yk_comm_allreduce_sync(stage = xc, mine, mine, len, r->dtype, op, d);
  if (!rc && len && r->op == YK_OP_AVG) yk_coll_avg_finish(mine, len, r->dtype, c->size);
  if (!rc) rc = yk_comm_allgather_sync(stage = lc, mine, r->recvbuf, r->count, r->dtype, d);
  if (rc && d) {
    /* the stage numbers its ranks 0..n-1: say which ranks of ours they are */
    char map[160] = "", msg[sizeof d->msg];
    size_t o = 0;
    for (int i = 0; i < stage->size && o + 12 < sizeof map; i++)
      o += (size_t)snprintf(map + o, sizeof map - o, "%s%d", i ? "," : "", stage->xrank[i]);
    int h = snprintf(msg, sizeof msg, "hierarchical all-reduce #%u, %s stage (its ranks 0..%d are ranks %s here): ",
                     r->seq, stage == lc ? "node" : "cross-node", stage->size - 1, map);
    if (h > 0 && (size_t)h < sizeof msg) {
      memcpy(msg + h, d->msg, YK_MIN(strlen(d->msg) + 1, sizeof msg - (size_t)h));
      msg[sizeof msg - 1] = 0;
      memcpy(d->msg, msg, sizeof msg);
    }
  }
  if (rc) {
    /* the stage that failed has told its own peers; tell everybody */
    yk_comm_abort(lc, d && d->msg[0] ? d->msg : "hierarchical all-reduce failed");
    yk_comm_abort(xc, d && d->msg[0] ? d->msg : "hierarchical all-reduce failed");
    return coll_fail(c, c->culprit, rc, d);
  }
  return 0;
}
