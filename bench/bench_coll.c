/* bench_coll.c - `yoke bench coll`: all-reduce bandwidth and latency of
 * yoke's collectives per transport, algorithm and dtype, in the nccl-tests
 * table format, with OpenMPI's MPI_Allreduce measured in the same run on the
 * same buffers, gloo (torch.distributed, when Debian's python3 has torch)
 * beside, and a memory-bandwidth probe that gives the one-host ceiling.
 * Run it under mpirun: `mpirun -np 2 yoke bench coll`.
 *
 * Metrics (nccl-tests): algbw = bytes / time; busbw = algbw * 2(n-1)/n.
 * Time: every iteration is timed on every rank; the slowest rank's time is
 * that iteration's time; the median over iterations is reported (the host is
 * shared and noisy). #wrong: elements that differ from the exact result of
 * a check iteration with reorder-invariant integer inputs (summed over ranks).
 *
 * Self-contained on purpose: other benchmarks live in their own files. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "yk_bench.h"
#include "yk_collectives.h"

#ifndef YK_SOURCE_DIR
#define YK_SOURCE_DIR "."
#endif

typedef struct series_pt {
  char label[96];
  double bytes, busbw;
} series_pt;

typedef struct bctx {
  yk_bench_coll_opts o; /* a copy: iters changes during --calibrate */
  size_t dtype_size;    /* of the rows being timed */
  int rank, size;
  FILE *tab;          /* table output: stdout, or stderr with --json */
  series_pt *pts;
  int npts, cappts;
  double ceiling_gbs, membw_gbs;
  yk_shmem *sm, *rm; /* the benchmark's buffers */
  double best_tcp_busbw_64m; /* yoke over tcp at >= 64 MiB f32 (min over sizes) */
  double tcp_link_gbs;       /* TCP loopback probe: per-link GB/s of a ring of sockets, 0 if not run */
} bctx;

static double median(double *v, int n) {
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
      double t = v[j];
      v[j] = v[j - 1];
      v[j - 1] = t;
    }
  return n ? (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2])) : NAN;
}

static void add_pt(bctx *b, const char *label, double bytes, double busbw) {
  if (b->rank) return;
  if (b->npts == b->cappts) {
    b->cappts = b->cappts ? b->cappts * 2 : 64;
    b->pts = realloc(b->pts, (size_t)b->cappts * sizeof *b->pts);
  }
  series_pt *p = &b->pts[b->npts++];
  snprintf(p->label, sizeof p->label, "%s", label);
  p->bytes = bytes;
  p->busbw = busbw;
}

static int in_list(const char *list, const char *name) {
  size_t n = strlen(name);
  for (const char *s = list; s && *s;) {
    const char *e = strchr(s, ',');
    size_t l = e ? (size_t)(e - s) : strlen(s);
    if (l == n && !strncmp(s, name, n)) return 1;
    s = e ? e + 1 : NULL;
  }
  return 0;
}

/* reorder-invariant input: small integers, exact in every dtype */
static void fill(void *buf, size_t n, yk_dtype t, int r) {
  for (size_t i = 0; i < n; i++) {
    float v = (float)((int)((i * 7 + (size_t)r * 3) % 11) - 5);
    if (t == YK_DT_F32) ((float *)buf)[i] = v;
    else if (t == YK_DT_F16) ((uint16_t *)buf)[i] = yk_f32_to_f16(v);
    else ((uint16_t *)buf)[i] = yk_f32_to_bf16(v);
  }
}

static long count_wrong(const void *buf, size_t n, yk_dtype t, int p) {
  long wrong = 0;
  for (size_t i = 0; i < n; i++) {
    int s = 0;
    for (int r = 0; r < p; r++) s += (int)((i * 7 + (size_t)r * 3) % 11) - 5;
    float got = t == YK_DT_F32 ? ((const float *)buf)[i]
                : t == YK_DT_F16 ? yk_f16_to_f32(((const uint16_t *)buf)[i])
                                 : yk_bf16_to_f32(((const uint16_t *)buf)[i]);
    wrong += got != (float)s;
  }
  return wrong;
}

/* f16/bf16 sums for MPI_Allreduce: what a user of MPI has to write */
static void mpi_f16_sum(void *in, void *inout, int *len, MPI_Datatype *dt) {
  yk_coll_reduce(inout, inout, in, (size_t)*len, YK_DT_F16, YK_OP_SUM, 0);
}
static void mpi_bf16_sum(void *in, void *inout, int *len, MPI_Datatype *dt) {
  yk_coll_reduce(inout, inout, in, (size_t)*len, YK_DT_BF16, YK_OP_SUM, 0);
}

typedef int (*run_fn)(void *ctx, void *sb, void *rb, size_t count);

typedef struct yrun {
  yk_comm *c;
  yk_dtype t;
  yk_diag d;
} yrun;
static int run_yoke(void *ctx, void *sb, void *rb, size_t count) {
  yrun *y = ctx;
  return yk_comm_allreduce_sync(y->c, sb, rb, count, y->t, YK_OP_SUM, &y->d);
}
typedef struct mrun {
  MPI_Datatype dt;
  MPI_Op op;
} mrun;
static int run_mpi(void *ctx, void *sb, void *rb, size_t count) {
  mrun *m = ctx;
  return MPI_Allreduce(sb, rb, (int)count, m->dt, m->op, MPI_COMM_WORLD) == MPI_SUCCESS ? 0 : YK_ETRANSPORT;
}

/* Small messages: one sample is a batch of back-to-back calls (as
 * osu_allreduce and nccl-tests time them), so the skew with which the ranks
 * leave the barrier does not dominate a few-microsecond operation. One rule
 * for every implementation: time_row applies it to yoke and MPI, and
 * run_gloo hands it to bench/gloo_allreduce.py (--batch), which applies it
 * to gloo. Sizes from min_bytes up take `calls` calls per sample; first
 * match wins. */
static const struct batch_step {
  uint64_t min_bytes;
  int calls;
} batch_rule[] = {{256u << 10, 1}, {16u << 10, 10}, {0, 50}};

static int calls_per_sample(uint64_t bytes) {
  for (size_t i = 0; i < YK_ARRAY_LEN(batch_rule); i++)
    if (bytes >= batch_rule[i].min_bytes) return batch_rule[i].calls;
  return 1;
}

/* Time one row: warm-up, then iterations until the count or ~0.5 s. Returns
 * the median over iterations of the slowest rank's time (seconds). */
static double time_row(bctx *b, run_fn fn, void *ctx, void *sb, void *rb, size_t count, int *err) {
  *err = 0;
  for (int i = 0; i < b->o.warmup; i++)
    if ((*err = fn(ctx, sb, rb, count))) return NAN;
  double times[256];
  int iters = b->o.iters > 256 ? 256 : (int)b->o.iters;
  double t_first = 0;
  int n = 0;
  /* a batch of back-to-back calls per sample for small messages (batch_rule) */
  int inner = calls_per_sample(count * (b->dtype_size ? b->dtype_size : 4));
  for (; n < iters; n++) {
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = yk_now_s();
    for (int j = 0; j < inner; j++)
      if ((*err = fn(ctx, sb, rb, count))) return NAN;
    times[n] = (yk_now_s() - t0) / inner;
    if (n == 0) t_first = times[0];
    /* all ranks must agree when to stop: decide from rank 0's first time */
    double tf = t_first;
    MPI_Bcast(&tf, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (n >= 2 && tf * (n + 1) > 0.5) {
      n++;
      break;
    }
  }
  MPI_Allreduce(MPI_IN_PLACE, times, n, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return median(times, n);
}

static void json_row(bctx *b, const char *impl, const char *algo, const char *transport, const char *dtype,
                     size_t bytes, double t, long wrong) {
  if (!b->o.json || b->rank) return;
  double algbw = bytes / t / 1e9, busbw = algbw * 2.0 * (b->size - 1) / b->size;
  printf("{\"op\":\"allreduce\",\"impl\":\"%s\",\"algo\":\"%s\",\"transport\":\"%s\",\"dtype\":\"%s\",\"ranks\":%d,"
         "\"bytes\":%zu,\"time_us\":%.2f,\"algbw_gbs\":%.4f,\"busbw_gbs\":%.4f,\"calls_per_sample\":%d,"
         "\"wrong\":%ld}\n",
         impl, algo, transport, dtype, b->size, bytes, t * 1e6, algbw, busbw, calls_per_sample(bytes), wrong);
  fflush(stdout);
}

/* Membw probe: every rank copies 256 MiB at the same time; M is the sum of
 * the ranks' traffic (read + write). Ceilings from the research notes
 * (collectives.md §7.4). */
static void probe(bctx *b) {
  size_t n = 256u << 20;
  char *s = yk_alloc(n), *d = yk_alloc(n);
  memset(s, 1, n);
  memset(d, 2, n);
  double best = 1e30;
  for (int k = 0; k < 3; k++) {
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = yk_now_s();
    memcpy(d, s, n);
    double t = yk_now_s() - t0;
    if (t < best) best = t;
  }
  yk_free(s);
  yk_free(d);
  double mine = 2.0 * n / best / 1e9, M = 0;
  MPI_Allreduce(&mine, &M, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  int p = b->size;
  b->membw_gbs = M;
  b->ceiling_gbs = p > 1 ? M * 2.0 * (p - 1) / (p * (3.0 * p - 1)) : M;
  if (b->rank == 0) {
    fprintf(b->tab, "# memory bandwidth probe: %d ranks copying at once, aggregate %.2f GB/s (read+write)\n", p, M);
    fprintf(b->tab, "# one-host busbw ceilings: direct two-shot %.2f GB/s, ring over shm %.2f GB/s, ring over TCP %.2f GB/s\n",
            b->ceiling_gbs, 2 * M / (5.0 * p), 2 * M / (11.0 * p));
    if (b->o.json)
      printf("{\"op\":\"membw_probe\",\"ranks\":%d,\"membw_gbs\":%.3f,\"ceiling_busbw_gbs\":%.3f,\"ring_shm_ceiling_gbs\":%.3f,"
             "\"ring_tcp_ceiling_gbs\":%.3f}\n",
             p, M, b->ceiling_gbs, 2 * M / (5.0 * p), 2 * M / (11.0 * p));
  }
}

/* Move `bytes` through a socket in 1 MiB calls (send when `out`). 0 or -1. */
static int sock_xfer(int fd, char *buf, size_t bytes, int out) {
  for (size_t o = 0; o < bytes;) {
    size_t n = bytes - o < (1u << 20) ? bytes - o : (1u << 20);
    ssize_t k = out ? send(fd, buf + o, n, MSG_NOSIGNAL) : recv(fd, buf + o, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    o += (size_t)k;
  }
  return 0;
}

/* TCP loopback probe: what the kernel's TCP can carry on this host while
 * every rank sends to the next and receives from the previous at once (the
 * traffic of a ring). For a ring all-reduce busbw equals the per-link rate,
 * so this is the ceiling of any all-reduce over TCP here, yoke's over
 * tcp;ofi_rxm and gloo's alike: both pay the kernel's two copies per byte.
 * Plain blocking sockets on 127.0.0.1, 1 MiB send/recv calls, `bytes` per
 * trial, best of 3 trials, slowest rank; every socket call has a 30 s
 * deadline (SO_RCVTIMEO/SO_SNDTIMEO), so a lost peer fails the probe, not
 * the run. Run only when all ranks share this host. */
typedef struct tcp_tx {
  int fd;
  char *buf;
  size_t bytes;
  int err;
} tcp_tx;

static void *tcp_tx_main(void *arg) {
  tcp_tx *t = arg;
  t->err = sock_xfer(t->fd, t->buf, t->bytes, 1);
  return NULL;
}

static double tcp_trial(int out, int in, char *sb, char *rb, size_t bytes) {
  tcp_tx t = {out, sb, bytes, 0};
  pthread_t th;
  MPI_Barrier(MPI_COMM_WORLD);
  double t0 = yk_now_s();
  if (pthread_create(&th, NULL, tcp_tx_main, &t) != 0) return -1;
  int err = sock_xfer(in, rb, bytes, 0);
  pthread_join(th, NULL);
  return err || t.err ? -1 : yk_now_s() - t0;
}

static void tcp_probe(bctx *b, char *sb, char *rb, size_t bytes) {
  MPI_Comm node;
  int nsize = 0;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  MPI_Comm_size(node, &nsize);
  MPI_Comm_free(&node);
  int one_host = nsize == b->size, ok = 1;
  MPI_Allreduce(MPI_IN_PLACE, &one_host, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!one_host || b->size < 2 || !bytes) return;
  struct timeval tv = {30, 0};
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), out = -1, in = -1, port = 0;
  if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4) || getsockname(ls, (struct sockaddr *)&a, &al))
    ok = 0;
  else
    port = ntohs(a.sin_port);
  int *ports = malloc((size_t)b->size * sizeof *ports);
  MPI_Allgather(&port, 1, MPI_INT, ports, 1, MPI_INT, MPI_COMM_WORLD);
  int next = (b->rank + 1) % b->size;
  if (ok && ports[next] > 0) {
    out = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    a.sin_port = htons((uint16_t)ports[next]);
    if (out < 0 || connect(out, (struct sockaddr *)&a, sizeof a)) ok = 0;
  } else {
    ok = 0;
  }
  if (ok) {
    struct pollfd pf = {ls, POLLIN, 0};
    if (poll(&pf, 1, 30000) == 1) in = accept(ls, NULL, NULL);
    if (in < 0) ok = 0;
  }
  if (out >= 0) setsockopt(out, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (in >= 0) setsockopt(in, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  double best = 1e30;
  for (int k = 0; ok && k < 3; k++) {
    double t = tcp_trial(out, in, sb, rb, bytes);
    int good = t > 0;
    MPI_Allreduce(MPI_IN_PLACE, &good, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (!good) ok = 0;
    else if (t < best) best = t;
  }
  if (out >= 0) close(out);
  if (in >= 0) close(in);
  if (ls >= 0) close(ls);
  free(ports);
  if (!ok) {
    if (b->rank == 0) fprintf(b->tab, "# TCP loopback probe: failed (sockets on 127.0.0.1 refused or timed out)\n");
    return;
  }
  b->tcp_link_gbs = bytes / best / 1e9;
  if (b->rank == 0) {
    fprintf(b->tab, "# TCP loopback probe: a ring of %d sockets, each rank sending %zu MiB to the next while receiving "
                    "from the previous: %.2f GB/s per link = the busbw ceiling of an all-reduce over TCP on this host\n",
            b->size, bytes >> 20, b->tcp_link_gbs);
    if (b->o.json) printf("{\"op\":\"tcp_probe\",\"ranks\":%d,\"bytes\":%zu,\"link_gbs\":%.3f}\n", b->size, bytes, b->tcp_link_gbs);
  }
}

static void header(bctx *b, const char *what) {
  if (b->rank) return;
  fprintf(b->tab, "#\n# %s\n", what);
  fprintf(b->tab, "# %12s %12s %6s %6s %10s %9s %9s %6s | %10s %9s %7s\n", "size", "count", "type", "redop", "time",
          "algbw", "busbw", "#wrong", "mpi time", "mpi busbw", "ratio");
  fprintf(b->tab, "# %12s %12s %6s %6s %10s %9s %9s %6s | %10s %9s %7s\n", "(B)", "(elements)", "", "", "(us)",
          "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "yk/mpi");
}

/* A communicator over MPI_COMM_WORLD with the benchmark's options; the
 * buffers are registered when given (and --register is on). */
static int open_comm(bctx *b, const char *transport, const char *algo, yk_shmem *sm, yk_shmem *rm,
                     yk_bootstrap **bs, yk_comm **c, yk_diag *d) {
  int rc = yk_bootstrap_mpi_create(bs, d);
  if (!rc) {
    yk_comm_opts o;
    yk_comm_opts_default(&o);
    o.transport = transport;
    o.provider = b->o.provider;
    o.timeout_ms = b->o.timeout_ms;
    o.segment_bytes = (size_t)b->o.segment;
    if (algo) o.algo = algo;
    rc = yk_comm_create(&o, *bs, c, d);
  }
  if (!rc && !b->o.no_register && sm && rm) {
    rc = yk_comm_register(*c, sm, d);
    if (!rc) rc = yk_comm_register(*c, rm, d);
  }
  return rc;
}

static int bench_transport(bctx *b, const char *transport, char *sb, char *rb, double *mpi_times, int mpi_done) {
  yk_bootstrap *bs = NULL;
  yk_comm *c = NULL;
  yk_diag d = {0};
  int rc = open_comm(b, transport, NULL, b->sm, b->rm, &bs, &c, &d);
  if (rc) {
    if (b->rank == 0) fprintf(stderr, "yoke bench coll: %s: %s\n", transport, yk_diag_msg(&d, rc));
    yk_bootstrap_destroy(bs);
    return 1;
  }
  const char *tname = yk_comm_transport_name(c);
  static const char *const dts[] = {"f32", "f16", "bf16"};
  int row = 0, failed = 0;
  for (int di = 0; di < 3 && !failed; di++) {
    if (!in_list(b->o.dtypes, dts[di])) continue;
    yk_dtype t;
    yk_dtype_parse(dts[di], &t);
    size_t es = yk_dtype_size(t);
    static const char *const algs[] = {"ring", "tree", "shm", "auto"};
    for (int ai = 0; ai < 4 && !failed; ai++) {
      if (!in_list(b->o.algos, algs[ai])) continue;
      yk_algo a;
      yk_algo_parse(algs[ai], &a);
      /* the board does not depend on the transport: one set of rows, and
       * none when the ranks span hosts */
      if (a == YK_ALGO_SHM && (!yk_comm_shm_state(c) || mpi_done)) continue;
      yk_comm_set_algo(c, a);
      const char *tn = a == YK_ALGO_SHM ? (!b->o.no_register ? "board+direct" : yk_comm_shm_state(c) & 2 ? "board+cma" : "board")
                                        : tname;
      char title[200];
      snprintf(title, sizeof title, "allreduce %s, algo %s, transport %s, %d ranks (out-of-place)", dts[di], algs[ai],
               tn, b->size);
      header(b, title);
      int si = 0;
      for (uint64_t bytes = b->o.minbytes; bytes <= b->o.maxbytes; bytes *= (uint64_t)b->o.stepfactor, si++) {
        if (a == YK_ALGO_TREE && bytes > b->o.tree_max) break;
        size_t count = bytes / es;
        b->dtype_size = es;
        fill(sb, count, t, b->rank);
        yrun y = {c, t, {0}};
        int err = run_yoke(&y, sb, rb, count);
        long wrong = err ? -1 : count_wrong(rb, count, t, b->size), total_wrong = 0;
        MPI_Allreduce(&wrong, &total_wrong, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
        double ty = err ? NAN : time_row(b, run_yoke, &y, sb, rb, count, &err);
        if (err) {
          if (b->rank == 0) fprintf(stderr, "yoke bench coll: %s\n", yk_diag_msg(&y.d, err));
          failed = 1;
          break;
        }
        /* MPI on the same buffers, once per dtype and size */
        double tm = NAN;
        int midx = di * 64 + si;
        if (!b->o.no_mpi && !mpi_done && mpi_times[midx] == 0) {
          mrun m;
          if (t == YK_DT_F32) {
            m.dt = MPI_FLOAT;
            m.op = MPI_SUM;
          } else {
            m.dt = MPI_UINT16_T;
            MPI_Op_create(t == YK_DT_F16 ? mpi_f16_sum : mpi_bf16_sum, 1, &m.op);
          }
          int merr;
          tm = time_row(b, run_mpi, &m, sb, rb, count, &merr);
          if (t != YK_DT_F32) MPI_Op_free(&m.op);
          mpi_times[midx] = tm;
          json_row(b, "mpi", "ompi-default", "mpi", dts[di], bytes, tm, 0);
          char lab[96];
          snprintf(lab, sizeof lab, "MPI_Allreduce %s", dts[di]);
          add_pt(b, lab, (double)bytes, bytes / tm / 1e9 * 2.0 * (b->size - 1) / b->size);
        } else if (!b->o.no_mpi) {
          tm = mpi_times[midx];
        }
        double algbw = bytes / ty / 1e9, busbw = algbw * 2.0 * (b->size - 1) / b->size;
        double mbus = bytes / tm / 1e9 * 2.0 * (b->size - 1) / b->size;
        if (b->rank == 0) {
          fprintf(b->tab, "  %12llu %12zu %6s %6s %10.1f %9.3f %9.3f %6ld | %10.1f %9.3f %7.2f\n",
                  (unsigned long long)bytes, count, dts[di], "sum", ty * 1e6, algbw, busbw, total_wrong, tm * 1e6, mbus,
                  tm / ty);
          fflush(b->tab);
        }
        json_row(b, "yoke", algs[ai], tn, dts[di], bytes, ty, total_wrong);
        char lab[96];
        snprintf(lab, sizeof lab, "yoke %s %s %s", algs[ai], tn, dts[di]);
        add_pt(b, lab, (double)bytes, busbw);
        if (strstr(tname, "tcp") && t == YK_DT_F32 && bytes >= (64u << 20)) {
          if (b->best_tcp_busbw_64m == 0 || busbw < b->best_tcp_busbw_64m) b->best_tcp_busbw_64m = busbw;
        }
        row++;
      }
    }
  }
  yk_comm_destroy(c);
  yk_bootstrap_destroy(bs);
  return failed;
}

/* gloo: rank 0 runs bench/gloo_allreduce.py with `size` local processes
 * while the other MPI ranks sleep (not spin) in a non-blocking barrier. */
static void run_gloo(bctx *b) {
  MPI_Request req;
  if (b->rank != 0) {
    MPI_Ibarrier(MPI_COMM_WORLD, &req);
    int done = 0;
    while (!done) {
      MPI_Test(&req, &done, MPI_STATUS_IGNORE);
      if (!done) usleep(20000);
    }
    return;
  }
  int have = system("/usr/bin/python3 -c 'import torch.distributed' >/dev/null 2>&1") == 0;
  if (!have) {
    fprintf(b->tab, "# gloo: skipped (Debian's /usr/bin/python3 has no torch)\n");
  } else {
    /* f32, the dtype of the target; timed as yoke and MPI are: the same
     * iterations, warm-up and batches of back-to-back calls (batch_rule as
     * "min_bytes:calls,..."). Bounded: timeout kills the whole process
     * group (the script and its spawned workers) if gloo hangs. */
    char rule[256] = "";
    for (size_t i = 0, o = 0; i < YK_ARRAY_LEN(batch_rule) && o < sizeof rule; i++)
      o += (size_t)snprintf(rule + o, sizeof rule - o, "%s%llu:%d", i ? "," : "",
                            (unsigned long long)batch_rule[i].min_bytes, batch_rule[i].calls);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "timeout -k 10 900 /usr/bin/python3 %s/bench/gloo_allreduce.py --world %d --minbytes %llu --maxbytes %llu --factor %d "
             "--iters %lld --warmup %lld --batch %s --dtypes f32 2>&1",
             YK_SOURCE_DIR, b->size, (unsigned long long)b->o.minbytes, (unsigned long long)b->o.maxbytes,
             (int)b->o.stepfactor, (long long)b->o.iters, (long long)b->o.warmup, rule);
    FILE *f = popen(cmd, "r");
    fprintf(b->tab, "#\n# torch.distributed gloo all-reduce (tcp loopback), %d processes; small messages timed in "
                    "batches of back-to-back calls as yoke and MPI are\n", b->size);
    fprintf(b->tab, "# %12s %6s %10s %9s %6s\n", "size (B)", "type", "time (us)", "busbw", "calls");
    char line[1024];
    double gloo_64m = 0;
    while (f && fgets(line, sizeof line, f)) {
      unsigned long long bytes = 0;
      double tus = 0, busbw = 0;
      char dt[16] = "";
      const char *pb = strstr(line, "\"bytes\":"), *pt = strstr(line, "\"time_us\":"), *pw = strstr(line, "\"busbw_gbs\":"),
                 *pd = strstr(line, "\"dtype\":\"");
      if (!pb || !pt || !pw || !pd) {
        fprintf(b->tab, "# gloo: %s", line);
        continue;
      }
      bytes = strtoull(pb + 8, NULL, 10);
      tus = strtod(pt + 10, NULL);
      busbw = strtod(pw + 12, NULL);
      sscanf(pd + 9, "%15[^\"]", dt);
      const char *pc = strstr(line, "\"calls_per_sample\":");
      fprintf(b->tab, "  %12llu %6s %10.1f %9.3f %6d\n", bytes, dt, tus, busbw, pc ? atoi(pc + 19) : 0);
      if (b->o.json) fputs(line, stdout);
      char lab[96];
      snprintf(lab, sizeof lab, "gloo %s", dt);
      add_pt(b, lab, (double)bytes, busbw);
      if (!strcmp(dt, "f32") && bytes >= (64ull << 20) && (gloo_64m == 0 || busbw > gloo_64m)) gloo_64m = busbw;
    }
    if (f) pclose(f);
    if (gloo_64m > 0 && b->best_tcp_busbw_64m > 0)
      fprintf(b->tab, "# yoke over tcp;ofi_rxm (worst f32 row >= 64 MiB) / gloo (best f32 row >= 64 MiB): %.2fx\n",
              b->best_tcp_busbw_64m / gloo_64m);
    if (gloo_64m > 0 && b->tcp_link_gbs > 0) {
      fprintf(b->tab, "# of the TCP loopback ceiling (%.2f GB/s): gloo %.0f%%", b->tcp_link_gbs,
              100 * gloo_64m / b->tcp_link_gbs);
      if (b->best_tcp_busbw_64m > 0) fprintf(b->tab, ", yoke %.0f%%", 100 * b->best_tcp_busbw_64m / b->tcp_link_gbs);
      fputc('\n', b->tab);
    }
  }
  MPI_Ibarrier(MPI_COMM_WORLD, &req);
  MPI_Wait(&req, MPI_STATUS_IGNORE);
}

/* The busbw figure: one curve per algorithm, drawn by common's gnuplot
 * helper (data inline in the script it keeps as PNG.gp). */
static int write_png(bctx *b) {
  if (b->rank || !b->o.png) return 0;
  char *sc = NULL;
  size_t sl = 0;
  FILE *g = open_memstream(&sc, &sl);
  if (!g) return 1;
  int nseries = 0;
  for (int i = 0; i < b->npts; i++) {
    int first = 1;
    for (int j = 0; j < i; j++)
      if (!strcmp(b->pts[j].label, b->pts[i].label)) first = 0;
    if (!first) continue;
    fprintf(g, "$d%d << EOD\n", nseries++);
    for (int j = i; j < b->npts; j++)
      if (!strcmp(b->pts[j].label, b->pts[i].label)) fprintf(g, "%.0f %.4f\n", b->pts[j].bytes, b->pts[j].busbw);
    fprintf(g, "EOD\n");
  }
  fprintf(g, "set terminal png size 1100,700\nset output '%s'\nset logscale x 2\nset xlabel 'message size (bytes)'\n"
             "set ylabel 'busbw (GB/s)'\nset termoption noenhanced\nset format x '%%.0s%%cB'\nset key outside right\nset grid\nset title 'all-reduce busbw, %d ranks'\n",
          b->o.png, b->size);
  fprintf(g, "plot ");
  nseries = 0;
  for (int i = 0; i < b->npts; i++) {
    int first = 1;
    for (int j = 0; j < i; j++)
      if (!strcmp(b->pts[j].label, b->pts[i].label)) first = 0;
    if (!first) continue;
    fprintf(g, "%s$d%d with linespoints title '%s'", nseries ? ", " : "", nseries, b->pts[i].label);
    nseries++;
  }
  fprintf(g, ", %.4f title 'one-host ceiling (probe)' dt 2\n", b->ceiling_gbs);
  fclose(g);
  yk_diag d = {0};
  int rc = yk_plot_gnuplot(b->o.png, sc, &d);
  free(sc);
  if (rc) fprintf(stderr, "yoke bench coll: %s\n", yk_diag_msg(&d, rc));
  else fprintf(b->tab, "# plot written to %s\n", b->o.png);
  return rc ? 1 : 0; /* a figure asked for and not drawn fails the run */
}

/* Cost-model calibration: alpha from 8-byte ring all-reduces, gamma from the
 * local reduction kernel, beta from 64 MiB ring all-reduces minus the alpha
 * and gamma terms (T = 2(p-1)a + 2(p-1)/p n b + (p-1)/p n g). */
static int calibrate(bctx *b) {
  yk_bootstrap *bs = NULL;
  yk_comm *c = NULL;
  yk_diag d = {0};
  const char *tr = in_list(b->o.transports, "libfabric") ? "libfabric" : "mpi";
  int rc = open_comm(b, tr, "ring", NULL, NULL, &bs, &c, &d);
  if (rc) {
    if (b->rank == 0) fprintf(stderr, "yoke bench coll --calibrate: %s\n", yk_diag_msg(&d, rc));
    yk_bootstrap_destroy(bs);
    return 1;
  }
  yk_comm_set_algo(c, YK_ALGO_RING);
  int p = b->size, err;
  size_t n = 64u << 20;
  float *x = yk_alloc(n), *y = yk_alloc(n);
  memset(x, 0, n);
  memset(y, 0, n);
  yrun yr = {c, YK_DT_F32, {0}};
  int64_t save_iters = b->o.iters;
  b->o.iters = 50;
  double ts = time_row(b, run_yoke, &yr, x, y, 2, &err);
  b->o.iters = 8;
  double tl = time_row(b, run_yoke, &yr, x, y, n / 4, &err);
  b->o.iters = save_iters;
  double t0 = yk_now_s();
  for (int k = 0; k < 4; k++) yk_coll_reduce(y, x, y, n / 4, YK_DT_F32, YK_OP_SUM, 0);
  double gamma = (yk_now_s() - t0) / 4 / n * 1e9;
  double alpha = p > 1 ? ts / (2.0 * (p - 1)) * 1e6 : 0;
  double beta = p > 1 ? (tl - 2.0 * (p - 1) * alpha * 1e-6 - (double)(p - 1) / p * n * gamma * 1e-9) /
                            (2.0 * (p - 1) / p * n) * 1e9
                      : 0;
  if (beta < 0.001) beta = 0.001;
  double gmax = 0;
  MPI_Allreduce(&gamma, &gmax, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  yk_free(x);
  yk_free(y);
  yk_comm_destroy(c);
  yk_bootstrap_destroy(bs);
  if (b->rank == 0) {
    char txt[512];
    snprintf(txt, sizeof txt,
             "# yoke collectives cost model, measured by `yoke bench coll --calibrate` over %s with %d ranks\n"
             "alpha_us %.3f\nbeta_ns %.5f\ngamma_ns %.5f\nshm_gbs %.3f\n",
             tr, p, alpha, beta, gmax, b->membw_gbs);
    if ((rc = yk_file_write_atomic(b->o.calibrate, txt, strlen(txt), &d))) {
      fprintf(stderr, "yoke bench coll: %s\n", yk_diag_msg(&d, rc));
      return 1;
    }
    fprintf(b->tab, "# calibrated (%s, %d ranks): alpha %.2f us, beta %.4f ns/B, gamma %.4f ns/B -> %s\n", tr, p, alpha,
            beta, gmax, b->o.calibrate);
  }
  return 0;
}

static int check_list(const char *flag, const char *list, const char *allowed) {
  for (const char *s = list; s && *s;) {
    const char *e = strchr(s, ',');
    char item[32];
    size_t l = e ? (size_t)(e - s) : strlen(s);
    snprintf(item, sizeof item, "%.*s", (int)(l < 31 ? l : 31), s);
    if (!in_list(allowed, item)) {
      fprintf(stderr, "yoke bench coll: %s: '%s' is not one of %s\n", flag, item, allowed);
      return 2;
    }
    s = e ? e + 1 : NULL;
  }
  return 0;
}

void yk_bench_coll_opts_default(yk_bench_coll_opts *o) {
  *o = (yk_bench_coll_opts){.minbytes = 4096, .maxbytes = 256u << 20, .tree_max = 4u << 20, .stepfactor = 2,
                            .iters = 20, .warmup = 2, .timeout_ms = 60000, .transports = "libfabric,mpi",
                            .algos = "ring,tree,shm", .dtypes = "f32,f16"};
}

int yk_bench_coll(const yk_bench_coll_opts *o) {
  bctx b;
  memset(&b, 0, sizeof b);
  b.o = *o;
  if (check_list("--transport", b.o.transports, "libfabric,mpi") || check_list("--algo", b.o.algos, "ring,tree,shm,auto") ||
      check_list("--dtype", b.o.dtypes, "f32,f16,bf16"))
    return 2;
  if (b.o.minbytes > b.o.maxbytes) {
    fprintf(stderr, "yoke bench coll: --minbytes %llu is larger than --maxbytes %llu\n",
            (unsigned long long)b.o.minbytes, (unsigned long long)b.o.maxbytes);
    return 2;
  }
  int level = 0;
  MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &level);
  MPI_Comm_rank(MPI_COMM_WORLD, &b.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &b.size);
  b.tab = b.o.json ? stderr : stdout;
  if (b.rank == 0) {
    fprintf(b.tab, "# yoke bench coll: %d ranks, kernels %s, yoke %s\n", b.size, yk_coll_isa_name(),
            yk_version_string());
    fprintf(b.tab, "# time per call: a sample is a batch of back-to-back calls,");
    for (size_t i = 0; i < YK_ARRAY_LEN(batch_rule); i++)
      fprintf(b.tab, "%s %d from %llu B", i ? "," : "", batch_rule[i].calls, (unsigned long long)batch_rule[i].min_bytes);
    fprintf(b.tab, " up (yoke, MPI and gloo alike); time = sample / calls, median over samples of the slowest rank\n");
  }
  probe(&b);
  int failed = 0;
  if (b.o.calibrate) {
    failed = calibrate(&b);
  } else {
    /* The buffers are shared-memory (memfd) allocations: MPI_Allreduce and
     * yoke run on the very same memory; with --register (default) yoke
     * registers them so the board reads peers' buffers directly. */
    yk_shmem sm = {0}, rm = {0};
    yk_diag ad = {0};
    if (yk_shmem_alloc(b.o.maxbytes, "bench-send", &sm, &ad) || yk_shmem_alloc(b.o.maxbytes, "bench-recv", &rm, &ad))
      fprintf(stderr, "yoke bench coll: %s\n", yk_diag_msg(&ad, ad.code));
    b.sm = &sm;
    b.rm = &rm;
    char *sb = sm.ptr, *rb = rm.ptr;
    double *mpi_times = calloc(3 * 64, sizeof(double));
    if (!sb || !rb || !mpi_times) {
      fprintf(stderr, "yoke bench coll: cannot allocate 2 x %llu bytes\n", (unsigned long long)b.o.maxbytes);
      failed = 1;
    }
    /* the TCP ceiling, when a TCP row or gloo is coming */
    if (!failed && ((b.o.provider && strstr(b.o.provider, "tcp")) || !b.o.no_gloo))
      tcp_probe(&b, sb, rb, (size_t)(b.o.maxbytes < (256u << 20) ? b.o.maxbytes : (256u << 20)));
    int mpi_done = 0;
    static const char *const trs[] = {"libfabric", "mpi"};
    for (int i = 0; i < 2 && !failed; i++) {
      if (!in_list(b.o.transports, trs[i])) continue;
      failed |= bench_transport(&b, trs[i], sb, rb, mpi_times, mpi_done);
      mpi_done = 1;
    }
    yk_shmem_free(&sm);
    yk_shmem_free(&rm);
    free(mpi_times);
    if (!failed && !b.o.no_gloo) run_gloo(&b);
    failed |= write_png(&b);
  }
  free(b.pts);
  MPI_Finalize();
  return failed ? 1 : 0;
}
