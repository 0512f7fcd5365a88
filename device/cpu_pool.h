/* cpu_pool.h - internal: the CPU device's thread pool.
 *
 * Why not OpenMP: on a machine shared with other work, an OpenMP parallel
 * region cannot end before every thread of the team has arrived at its join
 * barrier, so a kernel split over 2 threads waits a whole scheduler time
 * slice (several ms) whenever the other thread is not on a CPU - even for a
 * 0.5 ms kernel, and even when that thread had not started any of the work.
 * This pool hands out chunks of a job through one atomic word; whoever is
 * running (the caller included) claims the next chunk, and the job is over
 * when every chunk is done, not when every thread has checked in. A worker
 * that is off-CPU for the whole job costs nothing; one preempted inside a
 * chunk costs only the rest of that chunk.
 *
 * Determinism: which thread runs a chunk varies, so callers give chunks fixed
 * bounds and make a chunk's result depend only on its inputs and bounds (and
 * use per-thread scratch only as scratch); then results are bitwise
 * reproducible.
 *
 * Ownership: cpu_pool_create starts nthreads-1 worker threads;
 * cpu_pool_destroy stops and joins them. A pool is driven by one thread at a
 * time (the device's user). */
#ifndef YK_CPU_POOL_H
#define YK_CPU_POOL_H

typedef struct cpu_pool cpu_pool;

/* One chunk of a job: chunk in [0, nchunks), tid in [0, nthreads) names the
 * thread running it (0 = the caller) for per-thread scratch. */
typedef void (*cpu_pool_fn)(void *ctx, int chunk, int tid);

/* 0 or a negative YK_E* code (out of memory, thread creation failed). */
int cpu_pool_create(int nthreads, cpu_pool **out);
void cpu_pool_destroy(cpu_pool *p);

/* Run fn on chunks 0..nchunks-1 and return when all are done. use_threads
 * <= 1 (or a 1-thread pool, or a single chunk) runs them in order on the
 * caller. */
void cpu_pool_run(cpu_pool *p, int nchunks, int use_threads, cpu_pool_fn fn, void *ctx);

#endif
