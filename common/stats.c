/* stats.c - the one way a training step's figures are written down: the log
 * line and the JSON line of `yoke train` (heartbeats, /metrics and `yoke
 * status` carry the same struct). */
#include <math.h>
#include <stdio.h>

#include "yk_common.h"

void yk_step_stats_text(const yk_step_stats *s, int64_t steps, char *buf, size_t cap) {
  snprintf(buf, cap, "step %lld/%lld | loss %.4f | lr %.3e | norm %.3f | %.1f ms (comm wait %.1f) | %.0f tok/s%s",
           (long long)s->step, (long long)steps, s->loss, s->lr, s->grad_norm, s->step_ms, s->comm_wait_ms,
           s->tokens_per_s, s->skipped ? " | skipped (fp16 overflow)" : "");
}

void yk_step_stats_json(const yk_step_stats *s, char *buf, size_t cap) {
  snprintf(buf, cap,
           "{\"step\": %lld, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, \"ms\": %.3f, "
           "\"comm_wait_ms\": %.3f, \"tokens_per_s\": %.1f, \"allreduce_bytes\": %llu, \"dp_bytes\": %llu, "
           "\"tp_bytes\": %llu, \"loss_scale\": %g, "
           "\"fwd_ms\": %.3f, \"bwd_ms\": %.3f, \"opt_ms\": %.3f, \"gather_ms\": %.3f, \"skipped\": %s}",
           (long long)s->step, s->loss, s->lr, s->skipped || !isfinite(s->grad_norm) ? 0.0 : s->grad_norm, s->step_ms,
           s->comm_wait_ms, s->tokens_per_s, (unsigned long long)s->allreduce_bytes,
           (unsigned long long)s->dp_bytes, (unsigned long long)s->tp_bytes, s->loss_scale, s->fwd_ms,
           s->bwd_ms, s->opt_ms, s->gather_ms, s->skipped ? "true" : "false");
}

void yk_progress_text(int64_t step, int64_t steps, int64_t start, double elapsed_s, char *buf, size_t cap) {
  const int width = 30;
  int filled = steps > 0 ? (int)((double)step / (double)steps * width) : 0;
  char bar[32];
  for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
  bar[width] = '\0';
  int n = snprintf(buf, cap, "[%s] %lld/%lld", bar, (long long)step, (long long)steps);
  /* the rate of this run's own steps (a resumed run's earlier steps took no time here) */
  if (step > start && step < steps && elapsed_s > 0 && n > 0 && (size_t)n < cap) {
    double eta = elapsed_s / (double)(step - start) * (double)(steps - step);
    long long e = (long long)(eta + 0.5);
    if (e >= 3600) snprintf(buf + n, cap - (size_t)n, " ETA %lldh%02lldm", e / 3600, e / 60 % 60);
    else snprintf(buf + n, cap - (size_t)n, " ETA %lldm%02llds", e / 60, e % 60);
  }
}
