/* coll_internal.h - private structures of the collectives module: the
 * transport ops table, communicator state, operation descriptors, the
 * algorithm table, and what the files offer each other, from the bottom
 * (p2p.c) up (docs/collectives.md, "Pieces"). */
#ifndef YK_COLL_INTERNAL_H
#define YK_COLL_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "yk_collectives.h"
#include "yk_partition.h"

#define YK_COLL_MAX_SHM_RANKS 64 /* ranks on one node that share a board */

/* ---- transport ---------------------------------------------------------- */

/* Tags are 64-bit: kind(4) | epoch(12) | comm id(16) | sequence(32). Within
 * one (peer, tag) messages match in send order (MPI non-overtaking, libfabric
 * FI_ORDER_SAS), so pipelined segments of one step share a tag. */
enum { TAG_DATA = 1, TAG_HDR = 2, TAG_CTRL = 3 };
static inline uint64_t coll_tag(int kind, uint32_t epoch, uint32_t comm_id, uint32_t seq) {
  return ((uint64_t)kind << 60) | ((uint64_t)(epoch & 0xfff) << 48) | ((uint64_t)(comm_id & 0xffff) << 32) | seq;
}

/* One point-to-point request. The transport fills done/err/nbytes; priv is
 * its own space (an MPI_Request, a libfabric context, a queue link). */
typedef struct xreq {
  volatile int done;
  int err;            /* 0 or YK_E* */
  size_t nbytes;      /* bytes received */
  int src;            /* source rank of a completed receive */
  int used;           /* p2p.c: this slot has been posted */
  char errmsg[160];   /* transport's own words when err != 0 */
  void *priv[8];      /* room for an MPI_Request or a struct fi_context2 */
} xreq;

typedef struct xport xport;
typedef struct xport_ops {
  /* peer is a transport rank; peer -1 on irecv = any source. */
  int (*isend)(xport *x, int peer, uint64_t tag, const void *buf, size_t n, xreq *r);
  int (*irecv)(xport *x, int peer, uint64_t tag, void *buf, size_t n, xreq *r);
  /* Drive progress; return 0 or a fatal YK_E* (message in d). */
  int (*progress)(xport *x, yk_diag *d);
  /* Test one request: updates r->done (and err/nbytes/src). */
  void (*test)(xport *x, xreq *r);
  /* Ask to cancel a posted receive; r->done becomes 1 once the transport
   * no longer touches r or its buffer (the caller drives progress). */
  void (*cancel)(xport *x, xreq *r);
  void (*destroy)(xport *x);
} xport_ops;

struct xport {
  const xport_ops *ops;
  char name[64];
  int rank, size;
  int same_host;      /* all ranks on one host */
  atomic_int refs;
};

int xport_inproc_create(yk_bootstrap *b, xport **out, yk_diag *d);
int xport_mpi_create(yk_bootstrap *b, xport **out, yk_diag *d);
int xport_ofi_create(yk_bootstrap *b, const char *provider, uint64_t timeout_ms, xport **out, yk_diag *d);

/* ---- operations --------------------------------------------------------- */

typedef enum {
  OPK_ALLREDUCE = 1,
  OPK_REDUCE_SCATTER,
  OPK_ALLGATHER,
  OPK_BROADCAST,
  OPK_BARRIER,
  OPK_REDUCE_OWNED,
  OPK_COUNT_
} opkind;

struct yk_request {
  struct yk_comm *comm;
  opkind kind;
  const void *sendbuf;
  void *recvbuf;
  size_t count;
  yk_dtype dtype;
  yk_redop op;
  int root;
  size_t first, total;  /* OPK_REDUCE_OWNED: buf is elements [first, first+count) of `total` */
  uint32_t seq;
  int state;           /* 0 queued, 1 running, 2 done */
  int rc;
  yk_diag diag;
  struct yk_request *next;    /* queue link */
  struct yk_request *all_next;/* every live request, freed at destroy */
  struct yk_request *all_prev;
};

/* The header every rank sends to its ring neighbours at the start of an
 * operation (docs/wire-protocol.md). 40 bytes, little-endian. */
#define COLL_WIRE_MAGIC 0x594b434cu /* "YKCL" */
#define COLL_WIRE_VERSION 1
typedef struct coll_hdr {
  uint32_t magic;
  uint16_t version;
  uint8_t kind, dtype;
  uint8_t op, algo;
  uint16_t root;
  uint32_t seq;
  uint32_t rank;
  uint64_t count;
  uint32_t epoch;
  uint32_t pad;
} coll_hdr;

/* Control message (abort / stuck report), any source, 256 bytes. */
enum { CTRL_ABORT = 1, CTRL_STUCK = 2 };
typedef struct coll_ctrl {
  uint32_t magic;
  uint16_t version;
  uint16_t type;
  int32_t from;        /* comm rank sending */
  int32_t culprit;     /* comm rank blamed, -1 none */
  int32_t waiting_for; /* STUCK: whom `from` waits for */
  int32_t code;        /* YK_E* */
  uint32_t seq;
  uint32_t pad;
  char msg[224];
} coll_ctrl;

#define COLL_CTRL_SLOTS 4

/* the public cost model (yk_collectives.h) under its internal name */
typedef yk_coll_model coll_model;

struct yk_comm {
  xport *x;
  int rank, size;
  int *xrank;          /* comm rank -> transport rank */
  char (*hosts)[64];
  int64_t *pids;       /* pid of ranks in our host + pid namespace, else 0 */
  uint32_t epoch, comm_id;
  uint32_t seq;        /* sequence of the running operation */
  uint32_t next_seq;   /* last sequence handed out (caller side) */
  int culprit;         /* rank blamed for the failure that broke us, -1 */
  int inline_ok;       /* *_sync may run on the caller's thread */
  int stuck;           /* watchdog: comm thread stuck in the transport */
  int cur_peer;        /* peer of the latest point-to-point call */
  int busy;            /* an operation or idle poll is executing (under mu) */
  xreq *xreqs;         /* per-operation point-to-point requests */
  size_t nxreqs;
  char *hello_buf;
  xreq **posted;       /* receives posted by the running operation */
  size_t nposted, capposted;
  void *hdrx;          /* header exchange state (p2p.c; must outlive a failed op) */
  xreq *hello_reqs;    /* kept only when the creation handshake failed */
  xreq *xreqs2;        /* a second pool (all-gather half of all-reduce) */
  size_t nxreqs2;
  uint64_t timeout_ms;
  size_t seg_bytes;
  int seg_explicit;    /* opts.segment_bytes was given */
  yk_algo algo;
  coll_model model;
  const struct coll_algo *algos; /* the algorithm table (algos.c), installed at creation */
  yk_logger log;
  char tname[96];
  struct yk_comm *parent;
  uint32_t next_child_id;
  /* the communicators split from this one that still exist, linked by
   * next_kid (under mu): yk_comm_abort reaches them too */
  struct yk_comm *kids, *next_kid;

  /* scratch buffers, owned by the executing thread */
  void *stage;
  size_t stage_bytes;
  void *work;
  size_t work_bytes;

  /* control receive slots */
  coll_ctrl ctrl_buf[COLL_CTRL_SLOTS];
  xreq ctrl_req[COLL_CTRL_SLOTS];
  int ctrl_posted;
  coll_ctrl ctrl_out;  /* last control message sent (kept alive for inproc rendezvous) */
  xreq *ctrl_sends;    /* size slots for outgoing control messages */
  coll_ctrl *ctrl_sbuf;
  /* stuck reports gathered during failure diagnosis: waiting_for per rank, -2 = none */
  int *stuck_for;
  coll_hdr *stuck_hdr;

  /* queue and comm thread */
  pthread_mutex_t mu;
  struct yk_trace_track *trk; /* the comm thread's timeline track, under mu (yk_comm_set_trace); NULL: none */
  pthread_cond_t cv;       /* queue changed / request done */
  int cv_waiters;          /* threads in a wait on cv for a request or for `busy` (under mu) */
  uint64_t last_op_ns;     /* when the last operation ended (under mu): the idle poll backs off after it */
  pthread_mutex_t exec_mu; /* held while an operation executes */
  pthread_t thread;
  int thread_started;
  int stop;
  struct yk_request *qhead, *qtail;
  struct yk_request *all;
  atomic_int broken;
  atomic_int abort_req;    /* yk_comm_abort called */
  char abort_reason[256];
  int broken_rc;
  yk_diag broken_diag;
  /* single-host shared memory (algo_shm.c) */
  int *node;                 /* per rank: lowest rank with the same host, net and pid namespace */
  struct yk_comm *hier_local, *hier_cross; /* hier: my node's ranks; my peers (same local rank) on other nodes */
  struct coll_board *board;  /* shared mapping, NULL = none */
  size_t board_bytes;
  int shm_ok, cma_ok;        /* agreed by all ranks at creation */
  uint64_t shm_k;            /* number of board operations so far (equal on all ranks) */
  size_t shm_oneshot;        /* largest one-shot all-reduce in bytes */
  size_t shm_block;          /* two-shot block (bytes) */
  uint64_t shm_cookie;       /* read by the peers' cross-memory-attach probe */
  void *shm_tmp;
  size_t shm_tmp_bytes;
  struct coll_reg {          /* yk_comm_register */
    uintptr_t base;
    size_t bytes;
    int fd;
    uint64_t ino;
  } regs[16];
  int nregs;
  struct coll_map {          /* peers' registered buffers mapped here */
    int64_t pid;
    uint64_t ino, bytes;
    void *local;
    uint64_t used;           /* board operation of the last use (eviction) */
    int rw;                  /* mapped writable: reduce_owned writes owners' outputs */
  } maps[2 * YK_COLL_MAX_SHM_RANKS + 8]; /* room for every peer's input and output at once */
  int nmaps;
  uint64_t op_deadline;    /* of the running op */
  uint64_t stall_deadline; /* when to start failure diagnosis */
};

/* ---- point-to-point, control messages, failure diagnosis (p2p.c) -------- */

/* Host name of comm rank r, "?" outside the communicator (error messages). */
static inline const char *coll_host(const yk_comm *c, int r) { return r >= 0 && r < c->size ? c->hosts[r] : "?"; }
/* "allreduce", "reduce_scatter", ... of an opkind. */
const char *coll_opk_name(int kind);

/* Wait for one point-to-point request; `peer` is the comm rank it involves.
 * Checks control messages, deadlines and abort. */
int coll_wait(yk_comm *c, xreq *r, int peer, yk_diag *d);
/* Wait for a receive whose payload starts with a coll_hdr and compare it
 * with ours (a truncated receive still has the header: a count mismatch). */
int coll_wait_hdr(yk_comm *c, xreq *r, int peer, const coll_hdr *mine, const coll_hdr *theirs, size_t want,
                  yk_diag *d);
void coll_hdr_fill(yk_comm *c, struct yk_request *q, coll_hdr *h);
int coll_isend(yk_comm *c, int peer, uint64_t tag, const void *buf, size_t n, xreq *r, yk_diag *d);
int coll_irecv(yk_comm *c, int peer, uint64_t tag, void *buf, size_t n, xreq *r, yk_diag *d);
/* Cancel the receives the running operation posted (their buffers are the
 * caller's, who may free them once the operation returns); bounded. */
void coll_drain_posted(yk_comm *c);
/* Scratch owned by the executing thread: request pools, staging, work. */
xreq *coll_xreqs(yk_comm *c, size_t n);
xreq *coll_xreqs2(yk_comm *c, size_t n);
uint64_t coll_data_tag(yk_comm *c, uint32_t seq, int sub);
void *coll_stage(yk_comm *c, size_t bytes);
void *coll_work(yk_comm *c, size_t bytes);
/* The header exchange with the ring neighbours that starts a network
 * operation (docs/collectives.md, "Mismatched calls"); finish waits for the
 * header sends once the operation succeeded. */
int coll_hdr_exchange(yk_comm *c, struct yk_request *r, yk_diag *d);
int coll_hdr_finish(yk_comm *c, yk_diag *d);
/* Wait until *flag >= want, written by `peer` in shared memory: same
 * deadline, abort and dead-peer handling as coll_wait. */
int coll_wait_flag(yk_comm *c, const _Atomic uint64_t *flag, uint64_t want, int peer, yk_diag *d);
/* Compare a peer's operation header with ours (board operations). */
int coll_hdr_check(yk_comm *c, const coll_hdr *mine, const coll_hdr *theirs, int peer, yk_diag *d);
/* Break the communicator with rc (message in d), without telling the peers
 * (whoever found the error told them). */
int coll_set_broken(yk_comm *c, int rc, const yk_diag *d);
/* Report a failure (already in d) to the peers and break the communicator. */
int coll_fail(yk_comm *c, int culprit, int rc, yk_diag *d);
/* `peer`, a process on this host, is gone: adopt a peer's explanation if one
 * arrives within 150 ms, else report it dead. */
int coll_peer_gone(yk_comm *c, int peer, yk_diag *d);
/* Control receives: posted at creation, cancelled at destroy (which first
 * lets our ABORT notices reach the live peers, bounded). */
void coll_ctrl_start(yk_comm *c);
void coll_ctrl_stop(yk_comm *c);
/* Between operations (the idle comm thread): answer STUCK queries, adopt an
 * ABORT, send the notice of a local yk_comm_abort. */
void coll_idle_poll(yk_comm *c);

/* ---- algorithms ----------------------------------------------------------- */

/* Each runs one operation on c and returns 0 or YK_E* with d filled (the
 * peers told). Network ones (algo_ring.c) run after exec's header exchange. */
int coll_ring_allreduce(yk_comm *c, struct yk_request *r, yk_diag *d);
int coll_ring_reduce_scatter(yk_comm *c, struct yk_request *r, yk_diag *d);
int coll_ring_allgather(yk_comm *c, struct yk_request *r, yk_diag *d);
int coll_chain_broadcast(yk_comm *c, struct yk_request *r, yk_diag *d);
int coll_dissemination_barrier(yk_comm *c, struct yk_request *r, yk_diag *d);
int coll_rd_allreduce(yk_comm *c, struct yk_request *r, yk_diag *d);
int coll_rhd_allreduce(yk_comm *c, struct yk_request *r, yk_diag *d);

/* The shared-memory board (algo_shm.c). Its setup is collective: creation
 * (comm.c) runs these local steps with a broadcast of the name, a barrier
 * and a min all-reduce between them; it never fails the communicator, the
 * board just stays off on every rank. coll_shm_destroy unmaps everything. */
#define COLL_SHM_NAME 32 /* bytes of the board's name, broadcast as 8 i32 */
int coll_shm_open(yk_comm *c, size_t oneshot_bytes, char name[COLL_SHM_NAME]);
void coll_shm_attach(yk_comm *c, char name[COLL_SHM_NAME]);
void coll_shm_unlink(yk_comm *c, const char name[COLL_SHM_NAME]);
void coll_shm_probe(yk_comm *c, int32_t ok[2]);
void coll_shm_agree(yk_comm *c, const int32_t ok[2]);
void coll_shm_destroy(yk_comm *c);
/* All-reduce, reduce-scatter, all-gather or reduce-to-owners on the board. */
int coll_shm_run(yk_comm *c, struct yk_request *r, yk_diag *d);
/* Hierarchical all-reduce (algo_hier.c): board reduce-scatter on the node,
 * ring or tree across nodes on 1/ppn of the data, board all-gather on the
 * node. */
int coll_hier_allreduce(yk_comm *c, struct yk_request *r, yk_diag *d);

/* ---- the algorithm table (algos.c) and the choice (select.c) -------------- */

typedef enum {
  COLL_ALGO_ONE,  /* one rank: copy */
  COLL_ALGO_RING, /* ring reduce-scatter/all-gather/all-reduce, chain broadcast, dissemination barrier */
  COLL_ALGO_RD,   /* tree: recursive doubling all-reduce */
  COLL_ALGO_RHD,  /* tree: Rabenseifner all-reduce */
  COLL_ALGO_SHM,  /* the shared-memory board */
  COLL_ALGO_HIER, /* board on the node around an all-reduce across nodes */
  COLL_ALGO_COUNT_
} coll_algo_id;

typedef int (*coll_algo_fn)(yk_comm *c, struct yk_request *r, yk_diag *d);

/* One algorithm: its name and the operations it implements, indexed by
 * opkind (NULL: not implemented; coll_select never picks the row for such a
 * kind, except reduce-to-owners, which exec then runs as an all-reduce). */
typedef struct coll_algo {
  const char *name;
  coll_algo_fn run[OPK_COUNT_];
  /* 1: the algorithm checks the operation headers itself (the board compares
   * them on its slots, hier's stages exchange their own); 0: exec exchanges
   * them with the ring neighbours before any data moves. */
  int own_header;
  /* 1: never enters the transport's provider except to poll control
   * messages (the board), so a small operation may run on the caller's
   * thread even over libfabric. */
  int off_provider;
} coll_algo;

extern const coll_algo coll_algos[COLL_ALGO_COUNT_];
/* The row that runs r on c: the same on every rank (docs/collectives.md,
 * "Cost model"). */
coll_algo_id coll_select(const yk_comm *c, const struct yk_request *r);

/* ---- the comm thread and its queue (queue.c) ------------------------------ */

/* Start the comm thread (creation, once the control receives are posted). */
int coll_queue_start(yk_comm *c, yk_diag *d);
/* Stop and join it, send a pending abort notice, free the requests. 1 when
 * the thread is stuck inside the transport: it is detached and c must be
 * abandoned, not freed (yk_comm_destroy). */
int coll_queue_stop(yk_comm *c);

/* The even split of `count` elements into `size` ranges, the first
 * count % size one element longer: partition's rule (yk_partition_even_range),
 * so reduce-scatter chunks, ZeRO shards and data slices agree. Range `rank`
 * is [*off, *off + *len). */
static inline void coll_range(size_t count, int size, int rank, size_t *off, size_t *len) {
  uint64_t o, l;
  yk_partition_even_range(count, size, rank, &o, &l);
  *off = (size_t)o;
  *len = (size_t)l;
}
/* reduce.c: streaming-store variants for outputs larger than the caches
 * (fall back to the cached ones where they do not apply) and the fence to
 * issue before publishing what they wrote. */
void coll_reduce_stream(void *dst, const void *a, const void *b, size_t n, yk_dtype t, yk_redop op);
void coll_copy_stream(void *dst, const void *src, size_t n);
void coll_stream_fence(void);

#endif
