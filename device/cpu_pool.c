/* cpu_pool.c - the CPU device's thread pool (see cpu_pool.h for why).
 *
 * A job is published in one 64-bit atomic word: generation (24 bits) |
 * nchunks (20 bits) | next chunk index (20 bits). A thread claims chunk i by
 * a compare-and-swap that moves the index from i to i+1 while the
 * generation is unchanged and i < nchunks; so a claim is valid only for the
 * job it read, and a late worker can never run a chunk of a finished job.
 * fn/ctx are written before the word is published (release) and stay valid
 * until every chunk is done, which cannot happen before a claimed chunk
 * finishes. `done` counts finished chunks (release), the caller waits for
 * done == nchunks (acquire), so every chunk's writes are visible on return.
 *
 * Idle workers spin briefly (kernels come back to back) and then sleep on a
 * futex with a timeout; the caller wakes sleepers when it publishes. */
#define _GNU_SOURCE
#include "cpu_pool.h"

#include <immintrin.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "yk_common.h"

#define GEN_SHIFT 40
#define NCH_SHIFT 20
#define FIELD_MASK ((UINT64_C(1) << 20) - 1)

/* How long an idle worker polls for the next job before sleeping, and how
 * long the caller polls for in-flight chunks before yielding its CPU. The
 * caller's wait is for chunks already running, usually short; yielding
 * early would hand its core to another process for a whole time slice. */
#define WORKER_SPIN_S 200e-6
#define CALLER_SPIN_S 2e-3
/* Sleeps are bounded so a lost wake-up or a stop is noticed anyway. */
#define WORKER_SLEEP_NS 20000000L

typedef struct worker_arg {
  cpu_pool *p;
  int tid;
} worker_arg;

struct cpu_pool {
  int nthreads;
  _Alignas(64) _Atomic uint64_t state; /* gen | nchunks | next */
  _Alignas(64) _Atomic int done;       /* chunks finished in the current job */
  _Alignas(64) _Atomic uint32_t seq;   /* futex word: bumped on every publish and on stop */
  _Atomic int sleepers;
  _Atomic int stop;
  cpu_pool_fn fn;
  void *ctx;
  pthread_t *th;
  worker_arg *args;
  int nstarted;
};

static inline uint32_t gen_of(uint64_t s) { return (uint32_t)(s >> GEN_SHIFT); }
static inline int nch_of(uint64_t s) { return (int)((s >> NCH_SHIFT) & FIELD_MASK); }
static inline int idx_of(uint64_t s) { return (int)(s & FIELD_MASK); }

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

static void futex_wait(_Atomic uint32_t *w, uint32_t v, long ns) {
  struct timespec ts = {0, ns};
  syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, v, &ts, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *w) { syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0); }

/* Claim and run chunks of generation g until none is left. */
static void run_chunks(cpu_pool *p, uint32_t g, int tid) {
  uint64_t s = atomic_load_explicit(&p->state, memory_order_acquire);
  for (;;) {
    if (gen_of(s) != (g & 0xffffff) || idx_of(s) >= nch_of(s)) return;
    if (!atomic_compare_exchange_weak_explicit(&p->state, &s, s + 1, memory_order_acq_rel, memory_order_acquire))
      continue; /* s reloaded */
    p->fn(p->ctx, idx_of(s), tid);
    atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
    s = atomic_load_explicit(&p->state, memory_order_acquire);
  }
}

static void *worker_main(void *arg) {
  cpu_pool *p = ((worker_arg *)arg)->p;
  int tid = ((worker_arg *)arg)->tid;
  uint32_t seen = gen_of(atomic_load_explicit(&p->state, memory_order_acquire));
  for (;;) {
    /* poll for a new generation, then sleep on the futex */
    double t0 = yk_now_s();
    uint64_t s;
    int spins = 0;
    for (;;) {
      s = atomic_load_explicit(&p->state, memory_order_acquire);
      if (gen_of(s) != seen || atomic_load_explicit(&p->stop, memory_order_relaxed)) break;
      cpu_relax();
      if (++spins % 64 == 0 && yk_now_s() - t0 > WORKER_SPIN_S) {
        uint32_t v = atomic_load(&p->seq);
        atomic_fetch_add(&p->sleepers, 1);
        s = atomic_load(&p->state);
        if (gen_of(s) == seen && !atomic_load(&p->stop)) futex_wait(&p->seq, v, WORKER_SLEEP_NS);
        atomic_fetch_sub(&p->sleepers, 1);
      }
    }
    if (atomic_load_explicit(&p->stop, memory_order_acquire)) return NULL;
    seen = gen_of(s);
    run_chunks(p, seen, tid);
  }
}

int cpu_pool_create(int nthreads, cpu_pool **out) {
  *out = NULL;
  cpu_pool *p = aligned_alloc(64, (sizeof *p + 63) / 64 * 64);
  if (!p) return YK_ENOMEM;
  memset(p, 0, sizeof *p);
  p->nthreads = nthreads < 1 ? 1 : nthreads;
  if (p->nthreads > 1) {
    p->th = calloc((size_t)p->nthreads, sizeof *p->th);
    p->args = calloc((size_t)p->nthreads, sizeof *p->args);
    if (!p->th || !p->args) {
      cpu_pool_destroy(p);
      return YK_ENOMEM;
    }
    for (int i = 1; i < p->nthreads; i++) {
      p->args[i].p = p;
      p->args[i].tid = i;
      if (pthread_create(&p->th[i], NULL, worker_main, &p->args[i]) != 0) {
        cpu_pool_destroy(p);
        return YK_ESYS;
      }
      p->nstarted = i;
    }
  }
  *out = p;
  return 0;
}

void cpu_pool_destroy(cpu_pool *p) {
  if (!p) return;
  atomic_store(&p->stop, 1);
  atomic_fetch_add(&p->seq, 1);
  futex_wake_all(&p->seq);
  for (int i = 1; i <= p->nstarted; i++) pthread_join(p->th[i], NULL);
  free(p->th);
  free(p->args);
  free(p);
}

/* A job of more chunks than the state word can count runs as several jobs
 * of at most FIELD_MASK chunks; this shifts the chunk index back. */
typedef struct big_job {
  cpu_pool_fn fn;
  void *ctx;
  int base;
} big_job;

static void big_job_chunk(void *c_, int ch, int tid) {
  big_job *b = c_;
  b->fn(b->ctx, b->base + ch, tid);
}

void cpu_pool_run(cpu_pool *p, int nchunks, int use_threads, cpu_pool_fn fn, void *ctx) {
  if (nchunks <= 0) return;
  if ((uint64_t)nchunks > FIELD_MASK) {
    for (int base = 0; base < nchunks; base += (int)FIELD_MASK) {
      big_job b = {fn, ctx, base};
      cpu_pool_run(p, (int)YK_MIN((uint64_t)(nchunks - base), FIELD_MASK), use_threads, big_job_chunk, &b);
    }
    return;
  }
  if (use_threads <= 1 || p->nthreads <= 1 || nchunks == 1) {
    for (int c = 0; c < nchunks; c++) fn(ctx, c, 0);
    return;
  }
  p->fn = fn;
  p->ctx = ctx;
  atomic_store_explicit(&p->done, 0, memory_order_relaxed);
  uint64_t old = atomic_load_explicit(&p->state, memory_order_relaxed);
  uint32_t g = (gen_of(old) + 1) & 0xffffff;
  /* seq_cst store, then the sleepers load: pairs with the worker's
   * sleepers increment before its last state check (no lost wake-up) */
  atomic_store(&p->state, ((uint64_t)g << GEN_SHIFT) | ((uint64_t)nchunks << NCH_SHIFT));
  atomic_fetch_add(&p->seq, 1);
  if (atomic_load(&p->sleepers) > 0) futex_wake_all(&p->seq);
  run_chunks(p, g, 0);
  /* wait for chunks still running on workers */
  double t0 = 0;
  int spins = 0;
  while (atomic_load_explicit(&p->done, memory_order_acquire) < nchunks) {
    cpu_relax();
    if (++spins % 64 == 0) {
      if (t0 == 0) t0 = yk_now_s();
      else if (yk_now_s() - t0 > CALLER_SPIN_S) sched_yield();
    }
  }
}
