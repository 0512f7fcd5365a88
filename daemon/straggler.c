/* straggler.c - which rank is slow: the coordinator's view (a WARN line when
 * one rank stays slower than the others) and `yoke status`'s.
 *
 * A rank's "compute" is its step time minus the time it waited on
 * communication. A slow rank makes every other rank wait in the gradient
 * reduction, so all step times look alike; the slow one is the rank that
 * waited least, i.e. whose compute is largest. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define STREAK 3                  /* reports in a row before a warning */
#define WARN_EVERY_NS 60000000000ull /* at most one warning a minute for the same rank */

static int by_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int ykd_straggler_of(const yk_step_stats *reps, const int *live, int n, ykd_straggler_view *v) {
  double *c = malloc((size_t)(n > 0 ? n : 1) * sizeof *c);
  if (!c) return 0;
  int m = 0;
  memset(v, 0, sizeof *v);
  v->rank = -1;
  v->step = -1;
  for (int i = 0; i < n; i++) {
    if (!live[i] || reps[i].step <= 0) continue;
    double ms = reps[i].step_ms - reps[i].comm_wait_ms;
    c[m++] = ms;
    if (v->rank < 0 || ms > v->compute_ms) v->rank = i, v->compute_ms = ms;
    if (v->step < 0 || reps[i].step < v->step) v->step = reps[i].step;
  }
  if (m < 2) {
    free(c);
    v->rank = -1;
    return 0;
  }
  qsort(c, (size_t)m, sizeof *c, by_double);
  v->median_ms = m % 2 ? c[m / 2] : (c[m / 2 - 1] + c[m / 2]) / 2;
  v->excess = v->median_ms > 0 ? v->compute_ms / v->median_ms - 1 : 0;
  free(c);
  return 1;
}

void ykd_straggler_note(ykd_straggler *s, const yk_step_stats *reps, const int *live, int n, const yk_logger *log) {
  ykd_straggler_view v;
  if (!ykd_straggler_of(reps, live, n, &v) || v.step <= s->last_step) return;
  /* once per new step seen by every rank: a streak counts distinct steps */
  s->last_step = v.step;
  double warn = s->warn_share > 0 ? s->warn_share : 0.2;
  if (v.excess <= warn) {
    s->streak = 0;
    return;
  }
  s->streak = v.rank == s->rank ? s->streak + 1 : 1;
  s->rank = v.rank;
  uint64_t now = yk_now_ns();
  if (s->streak < STREAK || (s->warned_rank == v.rank && s->last_warn_ns && now - s->last_warn_ns < WARN_EVERY_NS))
    return;
  s->last_warn_ns = now;
  s->warned_rank = v.rank;
  YK_WARN(log, "coordinator: straggler: rank %d computes %.1f ms per step, %.0f%% more than the median rank (%.1f ms), "
          "for %d reports in a row up to step %lld (train.straggler_warn=%g)", v.rank, v.compute_ms, v.excess * 100,
          v.median_ms, s->streak, (long long)v.step, warn);
}
