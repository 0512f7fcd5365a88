/* yk_collectives.h - the one public header of yoke's `collectives` module.
 *
 * Communicators over a transport (in-process threads, OpenMPI point-to-point,
 * or libfabric RDM endpoints), and the collectives the training loop needs:
 * all-reduce, reduce-scatter, all-gather, broadcast, barrier. See
 * docs/collectives.md for the algorithms, the cost model, the environment
 * variables and the error semantics, and docs/wire-protocol.md for the bytes
 * on the wire.
 *
 * Threading: every communicator owns one comm thread that executes the queued
 * operations in call order, so a non-blocking call progresses while the
 * caller computes. The *_sync wrappers run the operation on the calling
 * thread when nothing is queued on the inproc and MPI transports (lower
 * latency), otherwise (and always on libfabric, whose provider calls can get
 * stuck on a dead peer) they queue it and wait under a watchdog that reports
 * a comm thread stuck past the operation's deadline. All calls on one communicator must be issued from one thread at a
 * time, in the same order on every rank (as in MPI/NCCL).
 *
 * Never hang: every operation runs under the communicator's deadline
 * (opts.timeout_ms, config comm.timeout_ms). A dead or silent peer, a
 * transport error or a mismatched call (different op, dtype, count, root or
 * sequence) ends the operation on every rank with an error whose message
 * names the culprit rank and host; the communicator is then broken and must
 * be destroyed (yk_comm_abort + yk_comm_destroy) and rebuilt with epoch + 1.
 */
#ifndef YK_COLLECTIVES_H
#define YK_COLLECTIVES_H

#include <stddef.h>
#include <stdint.h>

#include "yk_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Bootstrap: "exchange a small blob among N ranks"                          */
/* ------------------------------------------------------------------------ */

/* A bootstrap knows this process's rank and the world size, and can
 * all-gather a small byte string (endpoint addresses, host names) among all
 * ranks before any transport exists. The coordinator will plug in its own by
 * filling this struct. Owned by its creator; destroy with yk_bootstrap_destroy
 * after every communicator built from it is destroyed.
 *   allgather: `mine` is `len` bytes; `all` receives size*len bytes, rank i's
 *   blob at offset i*len. Must return within deadline_ns (absolute monotonic,
 *   0 = none) or fail with YK_ETIMEDOUT naming the missing ranks.
 * `kind` tells transports what else is available: "mpi" bootstraps carry an
 * MPI communicator in `mpi_comm` (an MPI_Comm stored as intptr-sized value),
 * "inproc" ones an in-process world. */
typedef struct yk_bootstrap {
  int rank;
  int size;
  const char *kind;                 /* "file", "mpi", "inproc" */
  void *ctx;                        /* implementation state */
  int (*allgather)(struct yk_bootstrap *b, const void *mine, size_t len, void *all, uint64_t deadline_ns,
                   yk_diag *d);
  void (*destroy)(struct yk_bootstrap *b);
} yk_bootstrap;

/* File rendezvous on one host (or a shared file system): rank i writes
 * DIR/<job>.<round>.<i> atomically and polls for the others. `dir` must exist
 * or be creatable; `job` names the run so that stale files of another run are
 * ignored. *out is allocated; free with yk_bootstrap_destroy. */
int yk_bootstrap_file_create(const char *dir, const char *job, int rank, int size, yk_bootstrap **out,
                             yk_diag *d);
/* From MPI_COMM_WORLD. MPI must be initialised by the caller (with
 * MPI_THREAD_MULTIPLE if the MPI transport will be used) and finalised after
 * the bootstrap and its communicators are destroyed. */
int yk_bootstrap_mpi_create(yk_bootstrap **out, yk_diag *d);
/* Threads as ranks: yk_inproc_world_create makes a world of `size` ranks
 * shared by the threads of one process; each thread then calls
 * yk_bootstrap_inproc_create with its rank. The world must outlive every
 * bootstrap and communicator made from it. */
typedef struct yk_inproc_world yk_inproc_world;
int yk_inproc_world_create(int size, yk_inproc_world **out, yk_diag *d);
void yk_inproc_world_destroy(yk_inproc_world *w);
int yk_bootstrap_inproc_create(yk_inproc_world *w, int rank, yk_bootstrap **out, yk_diag *d);
void yk_bootstrap_destroy(yk_bootstrap *b);

/* ------------------------------------------------------------------------ */
/* Communicators                                                            */
/* ------------------------------------------------------------------------ */

typedef enum { YK_OP_SUM = 0, YK_OP_AVG = 1, YK_OP_MAX = 2, YK_OP_MIN = 3, YK_OP_COUNT_ } yk_redop;
const char *yk_redop_name(yk_redop op);               /* "sum", "avg", "max", "min" */
int yk_redop_parse(const char *s, yk_redop *out);

/* Algorithms. AUTO asks the cost model; the others force a choice (falling
 * back to RING, with a one-time warning, when the forced one cannot run, e.g.
 * SHM across hosts). Env YK_ALGO overrides opts.algo. */
typedef enum { YK_ALGO_AUTO = 0, YK_ALGO_RING, YK_ALGO_TREE, YK_ALGO_SHM, YK_ALGO_HIER, YK_ALGO_COUNT_ } yk_algo;
const char *yk_algo_name(yk_algo a);
int yk_algo_parse(const char *s, yk_algo *out);

typedef struct yk_comm_opts {
  const char *transport;     /* "auto" | "inproc" | "mpi" | "libfabric"; auto follows the bootstrap kind
                              * (inproc -> inproc, otherwise libfabric) */
  const char *provider;      /* libfabric provider, e.g. "shm", "tcp;ofi_rxm", "verbs;ofi_rxm", "efa";
                              * NULL/"" = "shm" when every rank is on one host, else "tcp;ofi_rxm" */
  const char *algo;          /* auto | ring | tree | shm | hier (NULL = auto) */
  uint64_t timeout_ms;       /* per-operation deadline; 0 = 60000 */
  uint32_t epoch;            /* generation of this communicator; bump after an abort */
  size_t segment_bytes;      /* pipeline segment of ring algorithms; 0 = 256 KiB */
  size_t fusion_bytes;       /* yk_fusion threshold; 0 = 1 MiB */
  size_t shm_oneshot_bytes;  /* algo shm: all-reduces up to this size go through the shared board in one shot
                              * (each rank reduces every input), larger ones are a direct two-shot; 0 = 64 KiB,
                              * at most 1 MiB */
  const char *model_file;    /* cost-model constants written by `yoke bench coll --calibrate`; NULL = built-in */
  const yk_logger *log;      /* NULL = stderr at INFO */
} yk_comm_opts;

/* Defaults, then the comm.* keys of a job config. */
void yk_comm_opts_default(yk_comm_opts *o);
void yk_comm_opts_from_config(yk_comm_opts *o, const yk_config *c);

typedef struct yk_comm yk_comm;
typedef struct yk_request yk_request;

/* Collective over all ranks of the bootstrap: builds the transport, exchanges
 * addresses and host names, starts the comm thread. *out is allocated; free
 * with yk_comm_destroy. The bootstrap is only borrowed during the call. */
int yk_comm_create(const yk_comm_opts *opts, yk_bootstrap *b, yk_comm **out, yk_diag *d);
/* Collective over `parent`: ranks with the same colour form a new
 * communicator, ordered by (key, parent rank). colour < 0 gets *out = NULL.
 * The child shares the parent's transport; destroy children before parent. */
int yk_comm_split(yk_comm *parent, int colour, int key, yk_comm **out, yk_diag *d);
int yk_comm_rank(const yk_comm *c);
int yk_comm_size(const yk_comm *c);
uint32_t yk_comm_epoch(const yk_comm *c);
const char *yk_comm_transport_name(const yk_comm *c);  /* "inproc", "mpi", "libfabric:tcp;ofi_rxm" ... */
/* Host name of a rank (as exchanged at creation). */
const char *yk_comm_host(const yk_comm *c, int rank);
/* 1 once an error or abort broke the communicator. */
int yk_comm_is_broken(const yk_comm *c);
/* Revoke: fails every queued and running operation with YK_EABORTED (the
 * running one within a few ms), tells the peers (best effort) so that their
 * operations fail too, and leaves the communicator broken. Safe from any
 * thread; idempotent. Every communicator split from c (recursively) that
 * still exists is aborted with it. */
void yk_comm_abort(yk_comm *c, const char *reason);
/* Record each operation the comm thread runs (an asynchronous one, or one
 * queued behind another) as a span on k: a track of the trace module that
 * only this thread records into; NULL stops. Once it returns nothing is
 * recorded on the previous track. Operations run inline on the caller's
 * thread are the caller's to record. */
struct yk_trace_track;
void yk_comm_set_trace(yk_comm *c, struct yk_trace_track *k);
/* Stops the comm thread, cancels everything, frees all memory including
 * requests not yet waited for. NULL is fine. Exception: after the watchdog
 * reported the comm thread stuck inside the transport, the communicator is
 * abandoned (thread detached, memory not freed) rather than hang. */
void yk_comm_destroy(yk_comm *c);

/* ------------------------------------------------------------------------ */
/* Operations                                                               */
/* ------------------------------------------------------------------------ */

/* Buffers: `count` is in elements of `dtype` (f32, f16, bf16, i32, i64).
 * All buffers are borrowed until the request completes. Out-of-place and
 * in-place (sendbuf == recvbuf) both work.
 *   allreduce:      sendbuf, recvbuf: count elements on every rank.
 *   reduce_scatter: sendbuf: count elements; recvbuf: this rank's even range
 *                   of the count (yk_comm_range), the first count % size
 *                   ranks get one element more. In-place when
 *                   recvbuf == sendbuf + range offset.
 *   allgather:      sendbuf: this rank's range; recvbuf: count elements.
 *                   In-place when sendbuf == recvbuf + range offset.
 *   broadcast:      buf: count elements, root's content is copied to all.
 * Semantics: 16-bit floats are reduced in fp32 and rounded to 16 bits once
 * per hop; every rank gets bitwise-identical results. AVG on integers is
 * the truncated quotient sum / size; on floats fp32(sum) / size rounded to
 * the dtype.
 * A request is owned by the communicator; yk_request_wait/test free it once
 * they report completion (then *req is set to NULL). */
int yk_comm_allreduce(yk_comm *c, const void *sendbuf, void *recvbuf, size_t count, yk_dtype dtype, yk_redop op,
                      yk_request **req, yk_diag *d);
int yk_comm_reduce_scatter(yk_comm *c, const void *sendbuf, void *recvbuf, size_t count, yk_dtype dtype,
                           yk_redop op, yk_request **req, yk_diag *d);
int yk_comm_allgather(yk_comm *c, const void *sendbuf, void *recvbuf, size_t count, yk_dtype dtype,
                      yk_request **req, yk_diag *d);
/* Reduce to the owners, in place: buf holds elements [first, first+count) of
 * a vector of `total` elements that the ranks own in even ranges
 * (yk_comm_range). Afterwards each rank's part of buf that lies in its own
 * range holds the reduction over all ranks; the rest of buf is unspecified.
 * (ZeRO: a rank that only updates its slice of the parameters needs only its
 * slice of the gradients: half the memory traffic of an all-reduce.) Where
 * the board cannot run it, it is an all-reduce of buf (which satisfies the
 * same contract). Non-blocking; all ranks pass the same first/count/total. */
int yk_comm_reduce_owned(yk_comm *c, void *buf, size_t first, size_t count, size_t total, yk_dtype dtype,
                         yk_redop op, yk_request **req, yk_diag *d);
int yk_comm_broadcast(yk_comm *c, void *buf, size_t count, yk_dtype dtype, int root, yk_request **req,
                      yk_diag *d);
int yk_comm_barrier(yk_comm *c, yk_request **req, yk_diag *d);

/* Wait until the request completes or deadline_ns (absolute monotonic, see
 * yk_deadline_in_ms; 0 = the operation's own deadline is the only limit)
 * passes. Returns the operation's result (0 or YK_E* with a message in d)
 * and frees *req, or YK_ETIMEDOUT leaving *req valid to wait again. */
int yk_request_wait(yk_request **req, uint64_t deadline_ns, yk_diag *d);
/* Non-blocking: 1 and frees *req (result in *rc) when complete, 0 if not. */
int yk_request_test(yk_request **req, int *rc, yk_diag *d);

/* Blocking wrappers (wait under the operation's deadline). */
int yk_comm_allreduce_sync(yk_comm *c, const void *sendbuf, void *recvbuf, size_t count, yk_dtype dtype,
                           yk_redop op, yk_diag *d);
int yk_comm_reduce_scatter_sync(yk_comm *c, const void *sendbuf, void *recvbuf, size_t count, yk_dtype dtype,
                                yk_redop op, yk_diag *d);
int yk_comm_allgather_sync(yk_comm *c, const void *sendbuf, void *recvbuf, size_t count, yk_dtype dtype,
                           yk_diag *d);
int yk_comm_broadcast_sync(yk_comm *c, void *buf, size_t count, yk_dtype dtype, int root, yk_diag *d);
int yk_comm_barrier_sync(yk_comm *c, yk_diag *d);

/* The even range [*off, *off+*len) of `count` elements that `rank` holds in
 * reduce_scatter/allgather (same rule as yk_partition_even_range). */
void yk_comm_range(const yk_comm *c, int rank, size_t count, size_t *off, size_t *len);

/* Force an algorithm for the following operations (YK_ALGO_AUTO = cost
 * model). Must be called identically on all ranks between operations. */
void yk_comm_set_algo(yk_comm *c, yk_algo a);
/* Single-host shared memory: bit 0 = the ranks share a board (all on one
 * host and pid namespace; algo shm can run), bit 1 = they can also read each
 * other's buffers (cross-memory attach, or one process): large all-reduces
 * are then a direct two-shot. 0 when the ranks span hosts. */
int yk_comm_shm_state(const yk_comm *c);
/* Register a buffer of this process (yk_shmem) so that peers on this host
 * read it directly, without a kernel copy, when it is the input or output of
 * an all-reduce (the buffer may be any sub-range of it). Local, not
 * collective; up to 16 registrations. The communicator keeps no reference to
 * the memory after yk_comm_unregister or destroy; peers may keep their
 * mapping of it until they destroy the communicator. */
int yk_comm_register(yk_comm *c, const yk_shmem *m, yk_diag *d);
void yk_comm_unregister(yk_comm *c, const yk_shmem *m);
/* The algorithm the communicator would use for an all-reduce of `bytes`. */
yk_algo yk_comm_pick_algo(const yk_comm *c, size_t bytes);

/* The alpha-beta-gamma cost model the choice above uses (docs/collectives.md,
 * "Cost model and calibration"), for whoever predicts collective times
 * without running them (the simulator, sim/): per-message latency alpha,
 * per-byte link time beta, per-byte reduction time gamma, and the measured
 * shared-memory copy bandwidth. */
typedef struct yk_coll_model {
  double alpha_us; /* per message latency */
  double beta_ns;  /* ns per byte on a link */
  double gamma_ns; /* ns per byte reduced */
  double shm_gbs;  /* shared-memory copy bandwidth GB/s (0 = unknown) */
} yk_coll_model;
typedef enum { YK_COLL_ALLREDUCE = 0, YK_COLL_REDUCE_SCATTER, YK_COLL_ALLGATHER } yk_coll_kind;
/* The built-in constants (alpha 8 us, beta 0.25 ns/B, gamma 0.15 ns/B). */
void yk_coll_model_default(yk_coll_model *m);
/* Read a constants file written by `yoke bench coll --calibrate` ("key
 * value" lines: alpha_us, beta_ns, gamma_ns, shm_gbs) on top of *m.
 * YK_EFORMAT naming file, line and key on a bad line. */
int yk_coll_model_load(const char *path, yk_coll_model *m, yk_diag *d);
/* Predicted seconds of one operation of `bytes` (the whole vector) on p
 * ranks with algorithm a: RING (all-reduce, or its reduce-scatter /
 * all-gather half) or TREE (all-reduce: the cheaper of recursive doubling and
 * Rabenseifner; the halves run on the ring). 0 for p <= 1. */
double yk_coll_model_time(const yk_coll_model *m, yk_coll_kind k, yk_algo a, int p, double bytes);

/* ------------------------------------------------------------------------ */
/* Reduction kernels (exposed for tests and benchmarks)                     */
/* ------------------------------------------------------------------------ */

/* dst[i] = a[i] (op) b[i] for n elements of dtype; dst may alias a or b.
 * AVG reduces like SUM (the division happens once, at the end). 16-bit
 * floats: widen to fp32, combine, round to nearest even (common's yk_cast_*).
 * `isa`: 0 = what yk_isa_resolve(YK_ISA_AUTO) picks (so $YK_ISA applies),
 * 1 = force portable; both give the same bits. */
void yk_coll_reduce(void *dst, const void *a, const void *b, size_t n, yk_dtype dtype, yk_redop op, int isa);
/* x[i] = x[i] / size, the final step of AVG. */
void yk_coll_avg_finish(void *x, size_t n, yk_dtype dtype, int size);
/* yk_isa_name of what isa 0 picks: "avx2" or "portable". */
const char *yk_coll_isa_name(void);

/* ------------------------------------------------------------------------ */
/* Fusion: many small tensors in one all-reduce                             */
/* ------------------------------------------------------------------------ */

/* Packs tensors of one dtype and op into a buffer of opts.fusion_bytes and
 * all-reduces it (in place, results copied back) when the next tensor would
 * overflow it or on yk_fusion_flush. Tensors larger than the buffer go out
 * as their own all-reduce. Tensors are borrowed until the flush that carries
 * them completes. Owned by the caller; free with yk_fusion_destroy. */
typedef struct yk_fusion yk_fusion;
int yk_fusion_create(yk_comm *c, yk_dtype dtype, yk_redop op, size_t threshold_bytes, yk_fusion **out,
                     yk_diag *d);
int yk_fusion_add(yk_fusion *f, void *buf, size_t count, yk_diag *d);
/* All-reduce whatever is packed and wait for it (and for earlier batches). */
int yk_fusion_flush(yk_fusion *f, yk_diag *d);
/* Number of all-reduce operations issued so far (for tests/metrics). */
uint64_t yk_fusion_ops(const yk_fusion *f);
void yk_fusion_destroy(yk_fusion *f);

#ifdef __cplusplus
}
#endif
#endif /* YK_COLLECTIVES_H */
