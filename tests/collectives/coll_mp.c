/* coll_mp.c - the multi-process test program of the collectives tests. One
 * process per rank, started by mpirun (--bootstrap mpi) or by a shell script
 * (--bootstrap file --dir D --job J --rank R --size N).
 *   check     exact correctness: ring, tree and shm all-reduce, reduce-scatter,
 *             all-gather, broadcast, barrier over dtypes x ops x sizes
 *   loop      large all-reduces until --seconds pass (for the kill test)
 *   mismatch  rank 1 all-reduces a different count than the others
 *   shared    two communicators split from the world, so sharing its
 *             transport endpoint, driven at once from two threads (as a
 *             rank's tensor- and data-parallel groups are), --iters each
 * Exit status 0 on success; on a collective error prints
 * "coll_mp: rank R: ERROR <message>" and exits 3. */
#include <mpi.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coll_testlib.h"
#include "yk_collectives.h"

static int fail_out(int rank, int rc, yk_diag *d, double t0) {
  fprintf(stderr, "coll_mp: rank %d: ERROR after %.2f s: %s\n", rank, yk_now_s() - t0, yk_diag_msg(d, rc));
  return 3;
}

static int run_check(yk_comm *c, int big, int reg) {
  int p = yk_comm_size(c), me = yk_comm_rank(c), salt = 0, rc;
  const size_t sizes[] = {0, 1, 2, 7, 13, 97, 1000, 4099, 65537, 262147};
  size_t ns = big ? YK_ARRAY_LEN(sizes) : YK_ARRAY_LEN(sizes) - 2;
  size_t maxn = sizes[ns - 1];
  yk_diag d = {0};
  /* --register: the buffers are shared memory registered with the
   * communicator, so the board reads the peers' buffers in place */
  yk_shmem sm = {.fd = -1}, rm = {.fd = -1};
  char *sb, *rb;
  if (reg) {
    if ((rc = yk_shmem_alloc(maxn * 8, "coll-send", &sm, &d)) || (rc = yk_shmem_alloc(maxn * 8, "coll-recv", &rm, &d)) ||
        (rc = yk_comm_register(c, &sm, &d)) || (rc = yk_comm_register(c, &rm, &d)))
      return fail_out(me, rc, &d, yk_now_s());
    sb = sm.ptr;
    rb = rm.ptr;
  } else {
    sb = yk_alloc(maxn * 8);
    rb = yk_alloc(maxn * 8);
  }
  double t0 = yk_now_s();
  long checks = 0;
  int shm = yk_comm_shm_state(c), hier = yk_comm_pick_algo(c, 1 << 20) == YK_ALGO_HIER;
  for (int a = YK_ALGO_RING; a <= YK_ALGO_HIER; a++) {
    if (a == YK_ALGO_SHM && !shm) continue;  /* ranks on several nodes */
    if (a == YK_ALGO_HIER && !hier) continue; /* one node, or uneven nodes */
    yk_comm_set_algo(c, (yk_algo)a);
    for (size_t di = 0; di < YK_ARRAY_LEN(tl_dtypes); di++)
      for (int op = 0; op < YK_OP_COUNT_; op++)
        for (size_t si = 0; si < ns; si++) {
          yk_dtype dt = tl_dtypes[di];
          size_t n = sizes[si];
          if (a == YK_ALGO_TREE && n > 5000) continue;
          int inplace = (int)(si & 1);
          tl_fill(sb, n, dt, me, ++salt);
          void *out = inplace ? sb : rb;
          if ((rc = yk_comm_allreduce_sync(c, sb, out, n, dt, (yk_redop)op, &d))) return fail_out(me, rc, &d, t0);
          size_t w = tl_check_reduce(out, 0, n, dt, (yk_redop)op, p, salt);
          if (w) {
            fprintf(stderr, "coll_mp: rank %d: allreduce %s %s %s n=%zu: %zu wrong\n", me, yk_algo_name((yk_algo)a),
                    yk_dtype_name(dt), yk_redop_name((yk_redop)op), n, w);
            return 1;
          }
          checks++;
        }
  }
  yk_comm_set_algo(c, YK_ALGO_AUTO);
  for (size_t di = 0; di < YK_ARRAY_LEN(tl_dtypes); di++)
    for (size_t si = 0; si < ns; si++) {
      yk_dtype dt = tl_dtypes[di];
      size_t n = sizes[si], es = yk_dtype_size(dt), off, len;
      yk_comm_range(c, me, n, &off, &len);
      tl_fill(sb, n, dt, me, ++salt);
      yk_redop op = (yk_redop)(si % YK_OP_COUNT_);
      if ((rc = yk_comm_reduce_scatter_sync(c, sb, rb, n, dt, op, &d))) return fail_out(me, rc, &d, t0);
      if (tl_check_reduce(rb, off, len, dt, op, p, salt)) {
        fprintf(stderr, "coll_mp: rank %d: reduce_scatter %s n=%zu wrong\n", me, yk_dtype_name(dt), n);
        return 1;
      }
      ++salt;
      for (size_t i = 0; i < len; i++) tl_store(sb, i, dt, tl_val(me, off + i, salt));
      if ((rc = yk_comm_allgather_sync(c, sb, rb, n, dt, &d))) return fail_out(me, rc, &d, t0);
      if (tl_check_copy(rb, 0, n, dt, -1, n, p, salt)) {
        fprintf(stderr, "coll_mp: rank %d: allgather %s n=%zu wrong\n", me, yk_dtype_name(dt), n);
        return 1;
      }
      int root = (int)(si % (size_t)p);
      tl_fill(rb, n, dt, me, ++salt);
      if ((rc = yk_comm_broadcast_sync(c, rb, n, dt, root, &d))) return fail_out(me, rc, &d, t0);
      if (tl_check_copy(rb, 0, n, dt, root, n, p, salt)) {
        fprintf(stderr, "coll_mp: rank %d: broadcast root %d %s n=%zu wrong\n", me, root, yk_dtype_name(dt), n);
        return 1;
      }
      /* reduce to owners, in two uneven buckets */
      tl_fill(sb, n, dt, me, ++salt);
      size_t cut = n / 3;
      yk_request *rq[2] = {0};
      if ((rc = yk_comm_reduce_owned(c, sb, 0, cut, n, dt, op, &rq[0], &d)) ||
          (rc = yk_comm_reduce_owned(c, sb + cut * es, cut, n - cut, n, dt, op, &rq[1], &d)) ||
          (rc = yk_request_wait(&rq[0], 0, &d)) || (rc = yk_request_wait(&rq[1], 0, &d)))
        return fail_out(me, rc, &d, t0);
      if (tl_check_reduce(sb + off * es, off, len, dt, op, p, salt)) {
        fprintf(stderr, "coll_mp: rank %d: reduce_owned %s n=%zu wrong\n", me, yk_dtype_name(dt), n);
        return 1;
      }
      checks += 4;
    }
  if ((rc = yk_comm_barrier_sync(c, &d))) return fail_out(me, rc, &d, t0);
  if (reg) {
    yk_comm_unregister(c, &sm);
    yk_comm_unregister(c, &rm);
    yk_shmem_free(&sm);
    yk_shmem_free(&rm);
  } else {
    yk_free(sb);
    yk_free(rb);
  }
  printf("coll_mp: rank %d of %d: %ld checks passed over %s (shared memory %s%s) in %.2f s\n", me, p, checks,
         yk_comm_transport_name(c), shm == 3 ? (reg ? "board, direct" : "board, cma") : shm ? "board" : "none",
         hier ? "; hier across nodes" : "", yk_now_s() - t0);
  return 0;
}

static int run_loop(yk_comm *c, double seconds) {
  size_t n = 16u << 20; /* 64 MiB of f32 */
  float *b = yk_alloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) b[i] = 1.0f;
  yk_diag d = {0};
  double t0 = yk_now_s();
  int iters = 0, rc;
  printf("coll_mp: rank %d looping\n", yk_comm_rank(c));
  fflush(stdout);
  while (yk_now_s() - t0 < seconds) {
    double ts = yk_now_s();
    if ((rc = yk_comm_allreduce_sync(c, b, b, n, YK_DT_F32, YK_OP_MAX, &d))) {
      yk_free(b);
      return fail_out(yk_comm_rank(c), rc, &d, ts);
    }
    iters++;
  }
  yk_free(b);
  printf("coll_mp: rank %d: %d iterations\n", yk_comm_rank(c), iters);
  return 0;
}

static int run_mismatch(yk_comm *c) {
  float buf[2048] = {0};
  size_t n = yk_comm_rank(c) == 1 ? 1000 : 2000;
  yk_diag d = {0};
  double t0 = yk_now_s();
  int rc = yk_comm_allreduce_sync(c, buf, buf, n, YK_DT_F32, YK_OP_SUM, &d);
  if (rc) return fail_out(yk_comm_rank(c), rc, &d, t0);
  printf("coll_mp: rank %d: mismatch went unnoticed\n", yk_comm_rank(c));
  return 0;
}

/* One thread's part of run_shared: `iters` operations on c through the
 * transport (ring algorithms), each result checked. kind 0: small sync
 * all-reduces (the model's tensor-parallel calls); kind 1: async broadcasts
 * from every root in turn, waited for in issue order (ZeRO-3's gathers). */
typedef struct shared_arg {
  yk_comm *c;
  int kind, iters, rc, wrong;
  yk_diag d;
} shared_arg;

static void *shared_run(void *arg) {
  shared_arg *a = arg;
  yk_comm *c = a->c;
  int p = yk_comm_size(c), me = yk_comm_rank(c);
  enum { N = 96, Q = 4 };
  _Static_assert(N % Q == 0, "pieces of equal size");
  float buf[N];
  yk_request *rq[Q] = {0};
  for (int it = 0; it < a->iters && !a->rc && !a->wrong; it++) {
    int salt = it * 7 + a->kind;
    if (a->kind == 0) {
      tl_fill(buf, N, YK_DT_F32, me, salt);
      if ((a->rc = yk_comm_allreduce_sync(c, buf, buf, N, YK_DT_F32, YK_OP_SUM, &a->d))) break;
      a->wrong = tl_check_reduce(buf, 0, N, YK_DT_F32, YK_OP_SUM, p, salt) != 0;
      continue;
    }
    /* Q pieces, piece q broadcast from rank q % p, all in flight at once */
    for (int q = 0; q < Q; q++) tl_fill(buf + q * (N / Q), N / Q, YK_DT_F32, me == q % p ? me : -1, salt + q);
    for (int q = 0; q < Q && !a->rc; q++)
      a->rc = yk_comm_broadcast(c, buf + q * (N / Q), N / Q, YK_DT_F32, q % p, &rq[q], &a->d);
    for (int q = 0; q < Q; q++) {
      int r = rq[q] ? yk_request_wait(&rq[q], yk_deadline_in_ms(60000), a->rc ? NULL : &a->d) : 0;
      if (r && !a->rc) a->rc = r;
    }
    for (int q = 0; q < Q && !a->rc; q++)
      a->wrong |= tl_check_copy(buf + q * (N / Q), 0, N / Q, YK_DT_F32, q % p, N / Q, p, salt + q) != 0;
  }
  return NULL;
}

/* Split communicators share their parent's transport endpoint; a rank
 * drives its groups from different threads (the main thread's tensor-
 * parallel calls, the data-parallel comm thread's broadcasts) while the
 * parent's comm thread polls between operations. A transport that is not
 * safe for that loses messages or completions: an operation then times
 * out with every rank alive and waiting on the other. */
static int run_shared(yk_comm *c, int iters) {
  enum { G = 3 }; /* more threads in the endpoint at once: a missing lock shows sooner */
  int me = yk_comm_rank(c), rc;
  yk_diag d = {0};
  double t0 = yk_now_s();
  yk_comm *g[G] = {0};
  shared_arg a[G];
  for (int i = 0; i < G; i++) {
    if ((rc = yk_comm_split(c, 0, me, &g[i], &d))) return fail_out(me, rc, &d, t0);
    yk_comm_set_algo(g[i], YK_ALGO_RING); /* through the transport, not the board */
    a[i] = (shared_arg){.c = g[i], .kind = i & 1, .iters = iters};
  }
  pthread_t th[G];
  int started = 0, ret = 0;
  for (; started < G - 1; started++)
    if (pthread_create(&th[started], NULL, shared_run, &a[started])) break;
  if (started < G - 1) {
    fprintf(stderr, "coll_mp: rank %d: cannot start a thread\n", me);
    ret = 1;
  } else {
    shared_run(&a[G - 1]);
  }
  for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < G && !ret; i++) {
    if (a[i].rc) ret = fail_out(me, a[i].rc, &a[i].d, t0);
    else if (a[i].wrong) {
      fprintf(stderr, "coll_mp: rank %d: shared: wrong %s result\n", me, a[i].kind ? "broadcast" : "all-reduce");
      ret = 1;
    }
  }
  for (int i = G - 1; i >= 0; i--) yk_comm_destroy(g[i]);
  if (!ret)
    printf("coll_mp: rank %d: shared endpoint: %d x %d operations on %d communicators and threads in %.2f s\n", me,
           G, iters, G, yk_now_s() - t0);
  return ret;
}

static void usage(void) {
  fprintf(stderr, "usage: coll_mp check|loop|mismatch|shared [--bootstrap mpi|file] [--transport T] [--provider P]\n"
                  "       [--dir D --job J --rank R --size N] [--timeout-ms MS] [--seconds S] [--big]\n"
                  "       [--oneshot BYTES] [--register] [--iters N]\n");
}

int main(int argc, char **argv) {
  if (argc < 2) return usage(), 2;
  const char *mode = argv[1], *boot = "mpi", *dir = NULL, *job = "coll", *tr = "auto", *prov = NULL;
  int rank = -1, size = -1, big = 0, reg = 0;
  long oneshot = 0, iters = 2000;
  long timeout = 20000;
  double secs = 30;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--big")) big = 1;
    else if (!strcmp(a, "--register")) reg = 1;
    else if (!v) return usage(), 2;
    else if (!strcmp(a, "--bootstrap")) boot = v, i++;
    else if (!strcmp(a, "--transport")) tr = v, i++;
    else if (!strcmp(a, "--provider")) prov = v, i++;
    else if (!strcmp(a, "--dir")) dir = v, i++;
    else if (!strcmp(a, "--job")) job = v, i++;
    else if (!strcmp(a, "--rank")) rank = atoi(v), i++;
    else if (!strcmp(a, "--size")) size = atoi(v), i++;
    else if (!strcmp(a, "--timeout-ms")) timeout = atol(v), i++;
    else if (!strcmp(a, "--seconds")) secs = atof(v), i++;
    else if (!strcmp(a, "--oneshot")) oneshot = atol(v), i++;
    else if (!strcmp(a, "--iters")) iters = atol(v), i++;
    else return usage(), 2;
  }
  int use_mpi = !strcmp(boot, "mpi");
  if (use_mpi) {
    int prov_level = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &prov_level);
  }
  yk_bootstrap *b = NULL;
  yk_diag d = {0};
  int rc = use_mpi ? yk_bootstrap_mpi_create(&b, &d) : yk_bootstrap_file_create(dir, job, rank, size, &b, &d);
  yk_comm *c = NULL;
  if (!rc) {
    yk_comm_opts o;
    yk_comm_opts_default(&o);
    o.transport = tr;
    o.provider = prov;
    o.timeout_ms = (uint64_t)timeout;
    o.shm_oneshot_bytes = (size_t)oneshot;
    rc = yk_comm_create(&o, b, &c, &d);
  }
  int ret;
  if (rc) {
    fprintf(stderr, "coll_mp: setup failed: %s\n", yk_diag_msg(&d, rc));
    ret = 2;
  } else if (!strcmp(mode, "check")) {
    ret = run_check(c, big, reg);
  } else if (!strcmp(mode, "loop")) {
    ret = run_loop(c, secs);
  } else if (!strcmp(mode, "mismatch")) {
    ret = run_mismatch(c);
  } else if (!strcmp(mode, "shared")) {
    ret = run_shared(c, (int)iters);
  } else {
    usage();
    ret = 2;
  }
  yk_comm_destroy(c);
  yk_bootstrap_destroy(b);
  if (use_mpi) MPI_Finalize();
  return ret;
}
