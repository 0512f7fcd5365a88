/* algos.c - the algorithm table: one row per algorithm, with the operations
 * it implements (indexed by opkind) and how exec treats it. select.c picks
 * the row for an operation, exec (queue.c) runs it; neither names an
 * algorithm's functions, so adding one is a row here and a case in
 * coll_select.
 *
 * exec reaches the table through c->algos, installed at creation, and not by
 * name: hier's all-reduce runs operations of its child communicators
 * through the queue, so the table that lists it sits above the queue. */
#include <string.h>

#include "coll_internal.h"

/* One rank: the result is the input, copied when out of place. */
static int one_copy(yk_comm *c, struct yk_request *r, yk_diag *d) {
  (void)c, (void)d;
  if (r->count && r->sendbuf != r->recvbuf) memmove(r->recvbuf, r->sendbuf, r->count * yk_dtype_size(r->dtype));
  return 0;
}
static int one_nothing(yk_comm *c, struct yk_request *r, yk_diag *d) {
  (void)c, (void)r, (void)d;
  return 0;
}

const coll_algo coll_algos[COLL_ALGO_COUNT_] = {
    [COLL_ALGO_ONE] = {"one rank",
                       {[OPK_ALLREDUCE] = one_copy,
                        [OPK_REDUCE_SCATTER] = one_copy,
                        [OPK_ALLGATHER] = one_copy,
                        [OPK_BROADCAST] = one_nothing,
                        [OPK_BARRIER] = one_nothing}},
    [COLL_ALGO_RING] = {"ring",
                        {[OPK_ALLREDUCE] = coll_ring_allreduce,
                         [OPK_REDUCE_SCATTER] = coll_ring_reduce_scatter,
                         [OPK_ALLGATHER] = coll_ring_allgather,
                         [OPK_BROADCAST] = coll_chain_broadcast,
                         [OPK_BARRIER] = coll_dissemination_barrier}},
    [COLL_ALGO_RD] = {"tree (recursive doubling)", {[OPK_ALLREDUCE] = coll_rd_allreduce}},
    [COLL_ALGO_RHD] = {"tree (Rabenseifner)", {[OPK_ALLREDUCE] = coll_rhd_allreduce}},
    /* one entry point: coll_shm_run tells the kinds apart on the board */
    [COLL_ALGO_SHM] = {"shm",
                       {[OPK_ALLREDUCE] = coll_shm_run,
                        [OPK_REDUCE_SCATTER] = coll_shm_run,
                        [OPK_ALLGATHER] = coll_shm_run,
                        [OPK_REDUCE_OWNED] = coll_shm_run},
                       .own_header = 1,
                       .off_provider = 1},
    [COLL_ALGO_HIER] = {"hier", {[OPK_ALLREDUCE] = coll_hier_allreduce}, .own_header = 1},
};
