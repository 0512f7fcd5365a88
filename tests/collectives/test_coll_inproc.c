/* test_coll_inproc.c - collectives with threads as ranks: exhaustive exact
 * correctness (algorithms x ops x dtypes x ranks 1..8 x sizes incl. 0, 1,
 * primes, counts not divisible by the ranks, in-place and out-of-place,
 * blocking and non-blocking), the SIMD kernels against the scalar ones,
 * failure handling (mismatch, silent rank, dead rank, abort + rebuild with
 * epoch+1), split, fusion and request deadlines. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coll_testlib.h"
#include "yk_collectives.h"

typedef struct shared {
  pthread_mutex_t mu;
  atomic_int fails;
  char first[1024];
  int rcs[16];
  char msgs[16][1024];
  double secs[16];
  void *arg;
} shared;

typedef struct tctx {
  yk_inproc_world *w;
  int rank, size;
  yk_comm_opts opts;
  shared *sh;
  void (*fn)(struct tctx *, yk_comm *);
} tctx;

#define FAILF(t, ...)                                                                                                \
  do {                                                                                                                 \
    pthread_mutex_lock(&(t)->sh->mu);                                                                                  \
    if (atomic_fetch_add(&(t)->sh->fails, 1) == 0) snprintf((t)->sh->first, sizeof (t)->sh->first, __VA_ARGS__);       \
    pthread_mutex_unlock(&(t)->sh->mu);                                                                                \
  } while (0)

static void *thread_main(void *arg) {
  tctx *t = arg;
  yk_bootstrap *b = NULL;
  yk_comm *c = NULL;
  yk_diag d = {0};
  int rc = yk_bootstrap_inproc_create(t->w, t->rank, &b, &d);
  if (!rc) rc = yk_comm_create(&t->opts, b, &c, &d);
  if (rc) {
    FAILF(t, "rank %d: create: %s", t->rank, yk_diag_msg(&d, rc));
  } else {
    t->fn(t, c);
  }
  yk_comm_destroy(c);
  yk_bootstrap_destroy(b);
  return NULL;
}

static void run_world(int p, const yk_comm_opts *opts, void (*fn)(tctx *, yk_comm *), shared *sh) {
  yk_inproc_world *w = NULL;
  yk_diag d = {0};
  ck_assert_int_eq(yk_inproc_world_create(p, &w, &d), 0);
  pthread_t th[16];
  tctx t[16];
  for (int i = 0; i < p; i++) {
    t[i] = (tctx){.w = w, .rank = i, .size = p, .opts = *opts, .sh = sh, .fn = fn};
    pthread_create(&th[i], NULL, thread_main, &t[i]);
  }
  for (int i = 0; i < p; i++) pthread_join(th[i], NULL);
  yk_inproc_world_destroy(w);
}

static shared *shared_new(void) {
  shared *s = calloc(1, sizeof *s);
  pthread_mutex_init(&s->mu, NULL);
  return s;
}

static void opts_test(yk_comm_opts *o) {
  yk_comm_opts_default(o);
  o->transport = "inproc";
  o->timeout_ms = 20000;
  o->segment_bytes = 512; /* many pipeline segments even for small counts */
}

/* ---- exhaustive correctness ------------------------------------------------ */

static const size_t sizes[] = {0, 1, 2, 3, 5, 7, 8, 13, 31, 97, 1000, 4099};

static void do_allreduce_on(tctx *t, yk_comm *c, yk_algo algo, int async, char *sb, char *rb);

static void do_allreduce(tctx *t, yk_comm *c, yk_algo algo, int async) {
  size_t maxn = 4099;
  char *sb = yk_alloc(maxn * 8), *rb = yk_alloc(maxn * 8);
  do_allreduce_on(t, c, algo, async, sb, rb);
  yk_free(sb);
  yk_free(rb);
}

/* sb, rb: room for 4099 elements of 8 bytes */
static void do_allreduce_on(tctx *t, yk_comm *c, yk_algo algo, int async, char *sb, char *rb) {
  int p = t->size;
  yk_comm_set_algo(c, algo);
  int salt = 0;
  for (size_t di = 0; di < YK_ARRAY_LEN(tl_dtypes); di++)
    for (int op = 0; op < YK_OP_COUNT_; op++)
      for (size_t si = 0; si < YK_ARRAY_LEN(sizes); si++)
        for (int inplace = 0; inplace < 2; inplace++) {
          yk_dtype dt = tl_dtypes[di];
          size_t n = sizes[si];
          salt++;
          tl_fill(sb, n, dt, t->rank, salt);
          void *out = inplace ? sb : rb;
          yk_diag d = {0};
          int rc;
          if (async && (si & 1)) {
            yk_request *rq = NULL;
            rc = yk_comm_allreduce(c, sb, out, n, dt, (yk_redop)op, &rq, &d);
            if (!rc) rc = yk_request_wait(&rq, 0, &d);
          } else {
            rc = yk_comm_allreduce_sync(c, sb, out, n, dt, (yk_redop)op, &d);
          }
          if (rc) {
            FAILF(t, "p=%d rank %d allreduce %s %s %s n=%zu: %s", p, t->rank, yk_algo_name(algo), yk_dtype_name(dt),
                  yk_redop_name((yk_redop)op), n, yk_diag_msg(&d, rc));
            goto out;
          }
          size_t wrong = tl_check_reduce(out, 0, n, dt, (yk_redop)op, p, salt);
          if (wrong) {
            FAILF(t, "p=%d rank %d allreduce %s %s %s n=%zu inplace=%d: %zu wrong", p, t->rank, yk_algo_name(algo),
                  yk_dtype_name(dt), yk_redop_name((yk_redop)op), n, inplace, wrong);
            goto out;
          }
        }
out:
  return;
}

static void do_others(tctx *t, yk_comm *c) {
  int p = t->size, salt = 1000;
  size_t maxn = 4099;
  char *sb = yk_alloc(maxn * 8), *rb = yk_alloc(maxn * 8);
  for (size_t di = 0; di < YK_ARRAY_LEN(tl_dtypes); di++)
    for (size_t si = 0; si < YK_ARRAY_LEN(sizes); si++) {
      yk_dtype dt = tl_dtypes[di];
      size_t n = sizes[si], es = yk_dtype_size(dt), off, len;
      yk_comm_range(c, t->rank, n, &off, &len);
      yk_diag d = {0};
      int rc;
      /* reduce-scatter, every op, out-of-place and in-place */
      for (int op = 0; op < YK_OP_COUNT_; op++)
        for (int inplace = 0; inplace < 2; inplace++) {
          salt++;
          tl_fill(sb, n, dt, t->rank, salt);
          void *out = inplace ? sb + off * es : rb;
          rc = yk_comm_reduce_scatter_sync(c, sb, out, n, dt, (yk_redop)op, &d);
          if (rc || tl_check_reduce(out, off, len, dt, (yk_redop)op, p, salt)) {
            FAILF(t, "p=%d rank %d reduce_scatter %s %s n=%zu inplace=%d: %s", p, t->rank, yk_dtype_name(dt),
                  yk_redop_name((yk_redop)op), n, inplace, rc ? yk_diag_msg(&d, rc) : "wrong values");
            goto out;
          }
        }
      /* all-gather */
      for (int inplace = 0; inplace < 2; inplace++) {
        salt++;
        memset(rb, 0x55, maxn * 8);
        char *src = inplace ? rb + off * es : sb;
        for (size_t i = 0; i < len; i++) tl_store(src, i, dt, tl_val(t->rank, off + i, salt));
        rc = yk_comm_allgather_sync(c, src, rb, n, dt, &d);
        if (rc || tl_check_copy(rb, 0, n, dt, -1, n, p, salt)) {
          FAILF(t, "p=%d rank %d allgather %s n=%zu inplace=%d: %s", p, t->rank, yk_dtype_name(dt), n, inplace,
                rc ? yk_diag_msg(&d, rc) : "wrong values");
          goto out;
        }
      }
      /* broadcast from the first and the last rank */
      for (int root = 0; root < p; root += (p > 1 ? p - 1 : 1)) {
        salt++;
        tl_fill(rb, n, dt, t->rank, salt);
        rc = yk_comm_broadcast_sync(c, rb, n, dt, root, &d);
        if (rc || tl_check_copy(rb, 0, n, dt, root, n, p, salt)) {
          FAILF(t, "p=%d rank %d broadcast root %d %s n=%zu: %s", p, t->rank, root, yk_dtype_name(dt), n,
                rc ? yk_diag_msg(&d, rc) : "wrong values");
          goto out;
        }
      }
    }
  {
    yk_diag d = {0};
    int rc = yk_comm_barrier_sync(c, &d);
    if (rc) FAILF(t, "p=%d barrier: %s", p, yk_diag_msg(&d, rc));
  }
out:
  yk_free(sb);
  yk_free(rb);
}

static void fn_exhaustive(tctx *t, yk_comm *c) {
  do_allreduce(t, c, YK_ALGO_RING, 1);
  do_allreduce(t, c, YK_ALGO_TREE, 0);
  do_allreduce(t, c, YK_ALGO_SHM, 1); /* one-shot: every size here fits the board */
  do_others(t, c);
}

/* The shared-memory board with a one-shot limit of 64 bytes and 512-byte
 * blocks: most sizes take the direct two-shot over many blocks, with plain
 * buffers (copied) and with registered ones (read in place). */
static void fn_two_shot(tctx *t, yk_comm *c) {
  if (t->size > 1 && yk_comm_shm_state(c) != 3) {
    FAILF(t, "p=%d rank %d: shared-memory state %d, expected 3 (board + direct reads)", t->size, t->rank,
          yk_comm_shm_state(c));
    return;
  }
  if (t->size > 1 && yk_comm_pick_algo(c, 1 << 20) != YK_ALGO_SHM) {
    FAILF(t, "p=%d: the cost model does not pick shm on one host", t->size);
    return;
  }
  do_allreduce(t, c, YK_ALGO_SHM, 1);
  do_others(t, c); /* board reduce-scatter and all-gather in 512-byte blocks */
  yk_shmem sm, rm;
  yk_diag d = {0};
  if (yk_shmem_alloc(4099 * 8, "test-send", &sm, &d) || yk_shmem_alloc(4099 * 8, "test-recv", &rm, &d)) {
    FAILF(t, "shmem: %s", yk_diag_msg(&d, d.code));
    return;
  }
  int rc = yk_comm_register(c, &sm, &d);
  if (!rc) rc = yk_comm_register(c, &rm, &d);
  if (rc) FAILF(t, "register: %s", yk_diag_msg(&d, rc));
  else do_allreduce_on(t, c, YK_ALGO_SHM, 0, sm.ptr, rm.ptr);
  /* everybody is done reading my buffers before they go away */
  rc = yk_comm_barrier_sync(c, &d);
  if (rc) FAILF(t, "barrier: %s", yk_diag_msg(&d, rc));
  yk_comm_unregister(c, &sm);
  yk_comm_unregister(c, &rm);
  yk_shmem_free(&sm);
  yk_shmem_free(&rm);
}

/* Run fn on p in-process ranks; fail the test with the first rank's message. */
static void run_checked(int p, const yk_comm_opts *o, void (*fn)(tctx *, yk_comm *)) {
  shared *sh = shared_new();
  run_world(p, o, fn, sh);
  int fails = atomic_load(&sh->fails);
  char first[sizeof sh->first];
  memcpy(first, sh->first, sizeof first);
  free(sh);
  ck_assert_msg(fails == 0, "%s", first);
}

/* Reduce to owners: a vector of `total` elements goes out as three
 * uneven buckets (as the data-parallel loop issues them); each rank checks
 * its own even range. Board (auto) and ring (falls back to all-reduce). */
static void fn_owned(tctx *t, yk_comm *c) {
  static const size_t totals[] = {1, 7, 97, 1000, 4099};
  char *buf = yk_alloc(4099 * 8);
  int salt = 500;
  for (int a = 0; a < 2; a++) {
    yk_comm_set_algo(c, a ? YK_ALGO_RING : YK_ALGO_AUTO);
    for (size_t di = 0; di < YK_ARRAY_LEN(tl_dtypes); di++)
      for (size_t ti = 0; ti < YK_ARRAY_LEN(totals); ti++) {
        yk_dtype dt = tl_dtypes[di];
        size_t total = totals[ti], es = yk_dtype_size(dt), cut[4] = {0, total / 3, total / 3 + total / 5 + 1, total};
        if (cut[2] > total) cut[2] = total;
        yk_redop op = (yk_redop)(ti % YK_OP_COUNT_);
        tl_fill(buf, total, dt, t->rank, ++salt);
        yk_diag d = {0};
        yk_request *rq[3] = {0};
        int rc = 0;
        for (int b = 0; b < 3 && !rc; b++)
          rc = yk_comm_reduce_owned(c, buf + cut[b] * es, cut[b], cut[b + 1] - cut[b], total, dt, op, &rq[b], &d);
        for (int b = 0; b < 3; b++)
          if (rq[b]) {
            int r2 = yk_request_wait(&rq[b], 0, rc ? NULL : &d);
            if (!rc) rc = r2;
          }
        if (rc) {
          FAILF(t, "p=%d rank %d reduce_owned %s total %zu: %s", t->size, t->rank, yk_dtype_name(dt), total,
                yk_diag_msg(&d, rc));
          goto out;
        }
        size_t off, len;
        yk_comm_range(c, t->rank, total, &off, &len);
        size_t w = tl_check_reduce(buf + off * es, off, len, dt, op, t->size, salt);
        if (w) {
          FAILF(t, "p=%d rank %d reduce_owned %s %s total %zu (%s): %zu wrong", t->size, t->rank, yk_dtype_name(dt),
                yk_redop_name(op), total, a ? "ring" : "auto", w);
          goto out;
        }
      }
  }
out:
  yk_free(buf);
}

START_TEST(reduce_owned) {
  yk_comm_opts o;
  opts_test(&o);
  run_checked(_i, &o, fn_owned);
}
END_TEST

/* A cost model with (almost) no latency makes the logarithmic choice
 * Rabenseifner's halving-doubling for every size: exact results for all
 * rank counts, including the non-powers of two that fold in. */
static void fn_halving(tctx *t, yk_comm *c) { do_allreduce(t, c, YK_ALGO_TREE, 1); }

START_TEST(tree_halving_doubling) {
  int p = _i;
  char path[] = "/tmp/yk_rhd_XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  const char *txt = "alpha_us 0.0001\nbeta_ns 0.25\ngamma_ns 0.15\n";
  ck_assert_int_eq(write(fd, txt, strlen(txt)), (int)strlen(txt));
  close(fd);
  yk_comm_opts o;
  opts_test(&o);
  o.model_file = path;
  run_checked(p, &o, fn_halving);
  unlink(path);
}
END_TEST

START_TEST(shm_two_shot) {
  yk_comm_opts o;
  opts_test(&o);
  o.shm_oneshot_bytes = 64;
  run_checked(_i, &o, fn_two_shot);
}
END_TEST

START_TEST(exhaustive) {
  yk_comm_opts o;
  opts_test(&o);
  run_checked(_i, &o, fn_exhaustive);
}
END_TEST

/* Large buffer, default segment size: pipelining over many segments, and
 * bitwise identical results of f16 sums with rounding (random values). */
static void fn_large_identical(tctx *t, yk_comm *c) {
  size_t n = (1 << 20) + 3;
  uint16_t *b = yk_alloc(n * 2);
  yk_rng rng;
  yk_rng_seed(&rng, 42 + (uint64_t)t->rank);
  for (size_t i = 0; i < n; i++) b[i] = yk_f32_to_f16(yk_rng_normal(&rng));
  yk_diag d = {0};
  int rc = yk_comm_allreduce_sync(c, b, b, n, YK_DT_F16, YK_OP_SUM, &d);
  if (rc) FAILF(t, "rank %d: %s", t->rank, yk_diag_msg(&d, rc));
  /* publish a hash; rank 0 compares after the join */
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  t->sh->secs[t->rank] = (double)h;
  yk_free(b);
}

START_TEST(large_bitwise_identical) {
  shared *sh = shared_new();
  yk_comm_opts o;
  yk_comm_opts_default(&o);
  o.transport = "inproc";
  run_world(3, &o, fn_large_identical, sh);
  ck_assert_msg(atomic_load(&sh->fails) == 0, "%s", sh->first);
  ck_assert(sh->secs[0] == sh->secs[1] && sh->secs[1] == sh->secs[2]);
  free(sh);
}
END_TEST

/* ---- kernels ------------------------------------------------------------------ */

START_TEST(simd_matches_scalar) {
  yk_rng rng;
  yk_rng_seed(&rng, 7);
  size_t n = 1037;
  char *a = yk_alloc(n * 8), *b = yk_alloc(n * 8), *o1 = yk_alloc(n * 8), *o2 = yk_alloc(n * 8);
  for (size_t di = 0; di < YK_ARRAY_LEN(tl_dtypes); di++) {
    yk_dtype dt = tl_dtypes[di];
    for (size_t i = 0; i < n; i++) {
      float x = yk_rng_normal(&rng) * 1000, y = yk_rng_normal(&rng) * 1000;
      if (i % 17 == 0) y = x; /* ties for max/min */
      if (i % 29 == 0) x = 0.f, y = -0.f;
      tl_store(a, i, dt, x);
      tl_store(b, i, dt, y);
      if (dt == YK_DT_I64) ((int64_t *)a)[i] = (int64_t)yk_rng_u64(&rng), ((int64_t *)b)[i] = (int64_t)yk_rng_u64(&rng);
    }
    for (int op = 0; op < YK_OP_COUNT_; op++) {
      yk_coll_reduce(o1, a, b, n, dt, (yk_redop)op, 0);
      yk_coll_reduce(o2, a, b, n, dt, (yk_redop)op, 1);
      ck_assert_msg(!memcmp(o1, o2, n * yk_dtype_size(dt)), "%s %s: SIMD differs from scalar", yk_dtype_name(dt),
                    yk_redop_name((yk_redop)op));
    }
  }
  /* f16 rounding: 2048 + 1 rounds to even (2048), 2048 + 3 to 2052 */
  uint16_t x[2] = {yk_f32_to_f16(2048), yk_f32_to_f16(2048)}, y[2] = {yk_f32_to_f16(1), yk_f32_to_f16(3)}, z[2];
  yk_coll_reduce(z, x, y, 2, YK_DT_F16, YK_OP_SUM, 0);
  ck_assert_float_eq(yk_f16_to_f32(z[0]), 2048);
  ck_assert_float_eq(yk_f16_to_f32(z[1]), 2052);
  yk_free(a), yk_free(b), yk_free(o1), yk_free(o2);
}
END_TEST

/* ---- failures ------------------------------------------------------------------ */

static void fn_mismatch(tctx *t, yk_comm *c) {
  float buf[300] = {0};
  size_t n = t->rank == 1 ? 100 : 200;
  yk_diag d = {0};
  double t0 = yk_now_s();
  int rc = yk_comm_allreduce_sync(c, buf, buf, n, YK_DT_F32, YK_OP_SUM, &d);
  t->sh->secs[t->rank] = yk_now_s() - t0;
  t->sh->rcs[t->rank] = rc;
  snprintf(t->sh->msgs[t->rank], sizeof t->sh->msgs[0], "%s", yk_diag_msg(&d, rc));
  /* the communicator stays broken */
  rc = yk_comm_allreduce_sync(c, buf, buf, 10, YK_DT_F32, YK_OP_SUM, &d);
  if (!rc || !yk_comm_is_broken(c)) FAILF(t, "rank %d: communicator usable after a mismatch", t->rank);
}

START_TEST(mismatch_reported_on_all_ranks) {
  shared *sh = shared_new();
  yk_comm_opts o;
  opts_test(&o);
  o.timeout_ms = 5000;
  run_world(4, &o, fn_mismatch, sh);
  ck_assert_msg(atomic_load(&sh->fails) == 0, "%s", sh->first);
  for (int r = 0; r < 4; r++) {
    ck_assert_msg(sh->rcs[r] == YK_EMISMATCH, "rank %d rc %d: %s", r, sh->rcs[r], sh->msgs[r]);
    ck_assert_msg(strstr(sh->msgs[r], "count 100") && strstr(sh->msgs[r], "count 200"), "rank %d: %s", r, sh->msgs[r]);
    ck_assert_msg(sh->secs[r] < 2.0, "rank %d took %.2f s to see the mismatch", r, sh->secs[r]);
  }
  free(sh);
}
END_TEST

/* rank 2 stays alive but skips the all-reduce (its comm thread is idle) */
static void fn_silent(tctx *t, yk_comm *c) {
  float buf[64] = {0};
  yk_diag d = {0};
  if (t->rank == 2) {
    usleep(1500 * 1000);
    return;
  }
  double t0 = yk_now_s();
  int rc = yk_comm_allreduce_sync(c, buf, buf, 64, YK_DT_F32, YK_OP_SUM, &d);
  t->sh->secs[t->rank] = yk_now_s() - t0;
  t->sh->rcs[t->rank] = rc;
  snprintf(t->sh->msgs[t->rank], sizeof t->sh->msgs[0], "%s", yk_diag_msg(&d, rc));
}

START_TEST(silent_rank_named) {
  shared *sh = shared_new();
  yk_comm_opts o;
  opts_test(&o);
  o.timeout_ms = 800;
  run_world(4, &o, fn_silent, sh);
  for (int r = 0; r < 4; r++) {
    if (r == 2) continue;
    ck_assert_msg(sh->rcs[r] != 0, "rank %d succeeded", r);
    ck_assert_msg(strstr(sh->msgs[r], "rank 2 "), "rank %d does not name rank 2: %s", r, sh->msgs[r]);
    ck_assert_msg(sh->secs[r] < 0.8 + 0.3, "rank %d took %.2f s (deadline 0.8 s)", r, sh->secs[r]);
  }
  free(sh);
}
END_TEST

/* rank 1 is gone (its communicator destroyed, nobody answers for it) */
static void fn_dead(tctx *t, yk_comm *c) {
  if (t->rank == 1) return; /* thread_main destroys the comm right away */
  float *buf = calloc(1 << 16, sizeof(float));
  yk_diag d = {0};
  usleep(50 * 1000);
  double t0 = yk_now_s();
  int rc = yk_comm_allreduce_sync(c, buf, buf, 1 << 16, YK_DT_F32, YK_OP_SUM, &d);
  t->sh->secs[t->rank] = yk_now_s() - t0;
  t->sh->rcs[t->rank] = rc;
  snprintf(t->sh->msgs[t->rank], sizeof t->sh->msgs[0], "%s", yk_diag_msg(&d, rc));
  free(buf);
}

START_TEST(dead_rank_named) {
  shared *sh = shared_new();
  yk_comm_opts o;
  opts_test(&o);
  o.timeout_ms = 700;
  o.segment_bytes = 0;
  run_world(4, &o, fn_dead, sh);
  for (int r = 0; r < 4; r++) {
    if (r == 1) continue;
    ck_assert_msg(sh->rcs[r] == YK_EPEERDEAD, "rank %d rc %d: %s", r, sh->rcs[r], sh->msgs[r]);
    ck_assert_msg(strstr(sh->msgs[r], "rank 1 ("), "rank %d does not name rank 1: %s", r, sh->msgs[r]);
    ck_assert_msg(sh->secs[r] < 0.7 + 0.3, "rank %d took %.2f s", r, sh->secs[r]);
  }
  free(sh);
}
END_TEST

/* abort, destroy, rebuild with epoch + 1 in the same threads */
static void fn_rebuild(tctx *t, yk_comm *c) {
  float buf[100];
  yk_diag d = {0};
  tl_fill(buf, 100, YK_DT_F32, t->rank, 1);
  int rc = yk_comm_allreduce_sync(c, buf, buf, 100, YK_DT_F32, YK_OP_SUM, &d);
  if (rc) FAILF(t, "rank %d first allreduce: %s", t->rank, yk_diag_msg(&d, rc));
  if (t->rank == 0) yk_comm_abort(c, "test abort");
  rc = yk_comm_allreduce_sync(c, buf, buf, 100, YK_DT_F32, YK_OP_SUM, &d);
  if (rc == 0) FAILF(t, "rank %d: allreduce after abort succeeded", t->rank);
  if (!strstr(yk_diag_msg(&d, rc), "abort")) FAILF(t, "rank %d: %s", t->rank, yk_diag_msg(&d, rc));
  uint32_t e = yk_comm_epoch(c);
  yk_comm_destroy(c);
  for (int round = 0; round < 3; round++) {
    yk_bootstrap *b = NULL;
    yk_comm *c2 = NULL;
    yk_comm_opts o = t->opts;
    o.epoch = e + 1 + (uint32_t)round;
    rc = yk_bootstrap_inproc_create(t->w, t->rank, &b, &d);
    if (!rc) rc = yk_comm_create(&o, b, &c2, &d);
    if (!rc) {
      tl_fill(buf, 100, YK_DT_F32, t->rank, 2);
      rc = yk_comm_allreduce_sync(c2, buf, buf, 100, YK_DT_F32, YK_OP_SUM, &d);
      if (!rc && tl_check_reduce(buf, 0, 100, YK_DT_F32, YK_OP_SUM, t->size, 2)) FAILF(t, "rebuilt: wrong values");
      if (yk_comm_epoch(c2) != o.epoch) FAILF(t, "epoch %u, wanted %u", yk_comm_epoch(c2), o.epoch);
    }
    if (rc) FAILF(t, "rank %d rebuild %d: %s", t->rank, round, yk_diag_msg(&d, rc));
    yk_comm_destroy(c2);
    yk_bootstrap_destroy(b);
  }
}

static void *thread_rebuild(void *arg) {
  tctx *t = arg;
  yk_bootstrap *b = NULL;
  yk_comm *c = NULL;
  yk_diag d = {0};
  int rc = yk_bootstrap_inproc_create(t->w, t->rank, &b, &d);
  if (!rc) rc = yk_comm_create(&t->opts, b, &c, &d);
  yk_bootstrap_destroy(b);
  if (rc) FAILF(t, "create: %s", yk_diag_msg(&d, rc));
  else fn_rebuild(t, c);
  return NULL;
}

START_TEST(abort_and_rebuild) {
  shared *sh = shared_new();
  yk_comm_opts o;
  opts_test(&o);
  o.timeout_ms = 3000;
  yk_inproc_world *w = NULL;
  yk_diag d = {0};
  ck_assert_int_eq(yk_inproc_world_create(3, &w, &d), 0);
  pthread_t th[3];
  tctx t[3];
  for (int i = 0; i < 3; i++) {
    t[i] = (tctx){.w = w, .rank = i, .size = 3, .opts = o, .sh = sh};
    pthread_create(&th[i], NULL, thread_rebuild, &t[i]);
  }
  for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
  yk_inproc_world_destroy(w);
  ck_assert_msg(atomic_load(&sh->fails) == 0, "%s", sh->first);
  free(sh);
}
END_TEST

/* ---- split, fusion, request deadlines ----------------------------------------- */

static void fn_split(tctx *t, yk_comm *c) {
  yk_comm *sub = NULL;
  yk_diag d = {0};
  int colour = t->rank % 2;
  int rc = yk_comm_split(c, colour, -t->rank, &sub, &d);
  if (rc) {
    FAILF(t, "split: %s", yk_diag_msg(&d, rc));
    return;
  }
  int n = (t->size - colour + 1) / 2;
  if (yk_comm_size(sub) != n) FAILF(t, "rank %d: sub size %d, wanted %d", t->rank, yk_comm_size(sub), n);
  /* keys are -rank: highest parent rank first */
  int want = (t->size - 1 - colour) / 2 - t->rank / 2;
  if (yk_comm_rank(sub) != want) FAILF(t, "rank %d: sub rank %d, wanted %d", t->rank, yk_comm_rank(sub), want);
  int64_t v[3] = {t->rank, 1, 0}, r[3];
  rc = yk_comm_allreduce_sync(sub, v, r, 3, YK_DT_I64, YK_OP_SUM, &d);
  int64_t s = 0;
  for (int i = colour; i < t->size; i += 2) s += i;
  if (rc || r[0] != s || r[1] != n) FAILF(t, "rank %d sub allreduce: rc %d sum %lld wanted %lld", t->rank, rc, (long long)r[0], (long long)s);
  /* parent still works while the child exists */
  rc = yk_comm_allreduce_sync(c, v, r, 3, YK_DT_I64, YK_OP_SUM, &d);
  if (rc || r[1] != t->size) FAILF(t, "parent after split: rc %d", rc);
  /* a grandchild, then an abort of the parent reaches both (a daemon aborts
   * the groups it made; the engine's channels split from them must end too) */
  yk_comm *sub2 = NULL;
  rc = yk_comm_split(sub, 0, 0, &sub2, &d);
  if (rc) FAILF(t, "rank %d: split of the split: %s", t->rank, yk_diag_msg(&d, rc));
  /* every rank's split is done before any rank aborts the parent (an abort
   * reaches a split still in progress on another rank and fails it) */
  rc = yk_comm_allreduce_sync(c, v, r, 3, YK_DT_I64, YK_OP_SUM, &d);
  if (rc) FAILF(t, "rank %d: parent before the abort: rc %d", t->rank, rc);
  yk_comm_abort(c, "parent aborted in the test");
  if (!yk_comm_is_broken(sub) || (sub2 && !yk_comm_is_broken(sub2)))
    FAILF(t, "rank %d: a communicator split from an aborted one is not broken", t->rank);
  rc = sub2 ? yk_comm_allreduce_sync(sub2, v, r, 3, YK_DT_I64, YK_OP_SUM, &d) : YK_EABORTED;
  if (rc != YK_EABORTED || !strstr(yk_diag_msg(&d, rc), "parent aborted in the test"))
    FAILF(t, "rank %d: grandchild after the parent's abort: rc %d %s", t->rank, rc, yk_diag_msg(&d, rc));
  yk_comm_destroy(sub2);
  yk_comm_destroy(sub);
}

START_TEST(split_by_colour) {
  shared *sh = shared_new();
  yk_comm_opts o;
  opts_test(&o);
  run_world(6, &o, fn_split, sh);
  ck_assert_msg(atomic_load(&sh->fails) == 0, "%s", sh->first);
  free(sh);
}
END_TEST

static void fn_fusion(tctx *t, yk_comm *c) {
  yk_fusion *f = NULL;
  yk_diag d = {0};
  int rc = yk_fusion_create(c, YK_DT_F32, YK_OP_SUM, 4096, &f, &d);
  if (rc) {
    FAILF(t, "fusion create: %s", yk_diag_msg(&d, rc));
    return;
  }
  enum { NT = 40 };
  float *ts[NT];
  size_t ns[NT];
  for (int i = 0; i < NT; i++) {
    ns[i] = (size_t)(i * 37 % 300) + (i == 7 ? 5000 : 1); /* one larger than the buffer */
    ts[i] = malloc(ns[i] * sizeof(float));
    tl_fill(ts[i], ns[i], YK_DT_F32, t->rank, i);
    if ((rc = yk_fusion_add(f, ts[i], ns[i], &d))) FAILF(t, "fusion add: %s", yk_diag_msg(&d, rc));
  }
  if ((rc = yk_fusion_flush(f, &d))) FAILF(t, "fusion flush: %s", yk_diag_msg(&d, rc));
  for (int i = 0; i < NT; i++) {
    if (tl_check_reduce(ts[i], 0, ns[i], YK_DT_F32, YK_OP_SUM, t->size, i)) FAILF(t, "tensor %d wrong", i);
    free(ts[i]);
  }
  if (yk_fusion_ops(f) >= NT / 2) FAILF(t, "fusion used %llu ops for %d tensors", (unsigned long long)yk_fusion_ops(f), NT);
  yk_fusion_destroy(f);
}

START_TEST(fusion_packs_small_tensors) {
  shared *sh = shared_new();
  yk_comm_opts o;
  opts_test(&o);
  run_world(3, &o, fn_fusion, sh);
  ck_assert_msg(atomic_load(&sh->fails) == 0, "%s", sh->first);
  free(sh);
}
END_TEST

static void fn_req_deadline(tctx *t, yk_comm *c) {
  float a[1000], b[1000], e[1000];
  tl_fill(a, 1000, YK_DT_F32, t->rank, 5);
  tl_fill(e, 1000, YK_DT_F32, t->rank, 6);
  yk_diag d = {0};
  if (t->rank == 1) usleep(300 * 1000);
  yk_request *r1 = NULL, *r2 = NULL;
  int rc = yk_comm_allreduce(c, a, b, 1000, YK_DT_F32, YK_OP_MAX, &r1, &d);
  if (!rc) rc = yk_comm_allreduce(c, e, e, 1000, YK_DT_F32, YK_OP_SUM, &r2, &d);
  if (rc) {
    FAILF(t, "post: %s", yk_diag_msg(&d, rc));
    return;
  }
  if (t->rank == 0) {
    int done = 0, rc2 = 0;
    if (yk_request_test(&r1, &rc2, &d)) FAILF(t, "test reported completion while rank 1 sleeps");
    rc = yk_request_wait(&r1, yk_deadline_in_ms(20), &d);
    if (rc != YK_ETIMEDOUT || !r1) FAILF(t, "wait with a short deadline returned %d", rc);
    (void)done;
  }
  rc = yk_request_wait(&r1, 0, &d);
  if (!rc) rc = yk_request_wait(&r2, 0, &d);
  if (rc) FAILF(t, "wait: %s", yk_diag_msg(&d, rc));
  if (tl_check_reduce(b, 0, 1000, YK_DT_F32, YK_OP_MAX, t->size, 5) || tl_check_reduce(e, 0, 1000, YK_DT_F32, YK_OP_SUM, t->size, 6))
    FAILF(t, "rank %d: wrong non-blocking results", t->rank);
}

START_TEST(request_deadline_and_order) {
  shared *sh = shared_new();
  yk_comm_opts o;
  opts_test(&o);
  run_world(2, &o, fn_req_deadline, sh);
  ck_assert_msg(atomic_load(&sh->fails) == 0, "%s", sh->first);
  free(sh);
}
END_TEST

START_TEST(bad_input_messages) {
  yk_inproc_world *w = NULL;
  yk_diag d = {0};
  ck_assert_int_eq(yk_inproc_world_create(1, &w, &d), 0);
  yk_bootstrap *b = NULL;
  ck_assert_int_eq(yk_bootstrap_inproc_create(w, 0, &b, &d), 0);
  yk_comm_opts o;
  opts_test(&o);
  o.algo = "fastest";
  yk_comm *c = NULL;
  ck_assert_int_eq(yk_comm_create(&o, b, &c, &d), YK_ECONFIG);
  ck_assert_ptr_nonnull(strstr(d.msg, "fastest"));
  o.algo = "ring";
  o.transport = "carrier-pigeon";
  ck_assert_int_eq(yk_comm_create(&o, b, &c, &d), YK_ECONFIG);
  ck_assert_ptr_nonnull(strstr(d.msg, "carrier-pigeon"));
  o.transport = "inproc";
  ck_assert_int_eq(yk_comm_create(&o, b, &c, &d), 0);
  float x = 1;
  ck_assert_int_eq(yk_comm_allreduce_sync(c, &x, &x, 1, YK_DT_U8, YK_OP_SUM, &d), YK_EINVAL);
  ck_assert_ptr_nonnull(strstr(d.msg, "u8"));
  ck_assert_int_eq(yk_comm_broadcast_sync(c, &x, 1, YK_DT_F32, 3, &d), YK_EINVAL);
  ck_assert_int_eq(yk_comm_allreduce_sync(c, &x, &x, 1, YK_DT_F32, YK_OP_SUM, &d), 0);
  ck_assert_float_eq(x, 1);
  yk_comm_destroy(c);
  yk_bootstrap_destroy(b);
  yk_inproc_world_destroy(w);
}
END_TEST

START_TEST(cost_model_choice) {
  yk_inproc_world *w = NULL;
  yk_diag d = {0};
  ck_assert_int_eq(yk_inproc_world_create(1, &w, &d), 0);
  yk_bootstrap *b = NULL;
  ck_assert_int_eq(yk_bootstrap_inproc_create(w, 0, &b, &d), 0);
  char path[] = "/tmp/yk_model_XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  const char *txt = "# calibrated\nalpha_us 20\nbeta_ns 0.1\ngamma_ns 0.1\n";
  ck_assert_int_eq(write(fd, txt, strlen(txt)), (int)strlen(txt));
  close(fd);
  yk_comm_opts o;
  opts_test(&o);
  o.model_file = path;
  yk_comm *c = NULL;
  ck_assert_int_eq(yk_comm_create(&o, b, &c, &d), 0);
  yk_comm_destroy(c);
  FILE *f = fopen(path, "w");
  fputs("alpha_us twenty\n", f);
  fclose(f);
  ck_assert_int_eq(yk_comm_create(&o, b, &c, &d), YK_EFORMAT);
  ck_assert_ptr_nonnull(strstr(d.msg, ":1:"));
  unlink(path);
  yk_bootstrap_destroy(b);
  yk_inproc_world_destroy(w);
}
END_TEST

int main(void) {
  Suite *s = suite_create("collectives_inproc");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, exhaustive, 1, 9);
  tcase_add_loop_test(tc, shm_two_shot, 1, 9);
  tcase_add_loop_test(tc, tree_halving_doubling, 1, 9);
  tcase_add_loop_test(tc, reduce_owned, 1, 9);
  tcase_add_test(tc, large_bitwise_identical);
  tcase_add_test(tc, simd_matches_scalar);
  tcase_add_test(tc, mismatch_reported_on_all_ranks);
  tcase_add_test(tc, silent_rank_named);
  tcase_add_test(tc, dead_rank_named);
  tcase_add_test(tc, abort_and_rebuild);
  tcase_add_test(tc, split_by_colour);
  tcase_add_test(tc, fusion_packs_small_tensors);
  tcase_add_test(tc, request_deadline_and_order);
  tcase_add_test(tc, bad_input_messages);
  tcase_add_test(tc, cost_model_choice);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
