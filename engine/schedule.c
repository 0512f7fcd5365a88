/* schedule.c - the operations of one step, as data: building the
 * data-parallel schedule, the static checks every schedule passes before it
 * runs, and a one-line description for the log. */
#include <stdio.h>
#include <string.h>

#include "yk_engine.h"

static yk_sched_op op_make(yk_sched_kind k, int micro, int l0, int l1, int reduce) {
  return (yk_sched_op){.kind = k, .micro = micro, .layer_first = l0, .layer_last = l1, .reduce = reduce, .peer = -1};
}

int yk_engine_schedule_dp(int accum, int layers, yk_schedule *s, yk_diag *d) {
  if (accum < 1 || accum > (YK_SCHED_MAX_OPS - 2) / 2)
    return yk_errorf(d, YK_ECONFIG, "train.grad_accum=%d: a step holds 1 to %d micro-batches", accum,
                     (YK_SCHED_MAX_OPS - 2) / 2);
  s->n = 0;
  s->micro_batches = accum;
  /* Each micro-batch's backward runs right after its forward, so only one
   * micro-batch of activations is alive at a time; the last backward is the
   * one whose gradients are final, so it reduces. */
  for (int m = 0; m < accum; m++) {
    s->ops[s->n++] = op_make(YK_SCHED_FORWARD, m, 0, layers, 0);
    s->ops[s->n++] = op_make(YK_SCHED_BACKWARD, m, 0, layers, m == accum - 1);
  }
  s->ops[s->n++] = op_make(YK_SCHED_REDUCE, -1, 0, 0, 0);
  s->ops[s->n++] = op_make(YK_SCHED_UPDATE, -1, 0, 0, 0);
  return 0;
}

int yk_engine_schedule_check(const yk_schedule *s, int layers, yk_diag *d) {
  enum { NONE = 0, FWD = 1, BWD = 2 };
  int m = s->micro_batches;
  if (m < 1 || m > YK_SCHED_MAX_OPS || s->n < 2 || s->n > YK_SCHED_MAX_OPS)
    return yk_errorf(d, YK_EINVAL, "schedule: %d operations for %d micro-batches", s->n, m);
  unsigned char state[YK_SCHED_MAX_OPS];
  memset(state, NONE, (size_t)m);
  int reducing = -1, backwards = 0;
  for (int i = 0; i < s->n; i++) {
    const yk_sched_op *op = &s->ops[i];
    int tail = i >= s->n - 2;
    switch (op->kind) {
    case YK_SCHED_FORWARD:
    case YK_SCHED_BACKWARD:
      if (tail) return yk_errorf(d, YK_EINVAL, "schedule op %d: compute after the reduction", i);
      if (op->micro < 0 || op->micro >= m)
        return yk_errorf(d, YK_EINVAL, "schedule op %d: micro-batch %d outside [0, %d)", i, op->micro, m);
      if (op->layer_first < 0 || op->layer_first >= op->layer_last || op->layer_last > layers)
        return yk_errorf(d, YK_EINVAL, "schedule op %d: layers [%d, %d) outside [0, %d)", i, op->layer_first,
                         op->layer_last, layers);
      if (op->layer_first != 0 || op->layer_last != layers)
        return yk_errorf(d, YK_EUNSUPPORTED, "schedule op %d: layers [%d, %d) of %d: one rank runs every layer until "
                         "pipeline parallelism is built", i, op->layer_first, op->layer_last, layers);
      if (op->kind == YK_SCHED_FORWARD) {
        if (state[op->micro] != NONE)
          return yk_errorf(d, YK_EINVAL, "schedule op %d: second forward of micro-batch %d", i, op->micro);
        state[op->micro] = FWD;
        break;
      }
      if (state[op->micro] != FWD)
        return yk_errorf(d, YK_EINVAL, "schedule op %d: backward of micro-batch %d %s", i, op->micro,
                         state[op->micro] == NONE ? "before its forward" : "twice");
      state[op->micro] = BWD;
      backwards++;
      if (op->reduce) {
        if (reducing >= 0) return yk_errorf(d, YK_EINVAL, "schedule op %d: a second reducing backward", i);
        reducing = i;
      }
      break;
    case YK_SCHED_REDUCE:
      if (i != s->n - 2) return yk_errorf(d, YK_EINVAL, "schedule op %d: REDUCE must be next to last", i);
      break;
    case YK_SCHED_UPDATE:
      if (i != s->n - 1) return yk_errorf(d, YK_EINVAL, "schedule op %d: UPDATE must be last", i);
      break;
    default: return yk_errorf(d, YK_EINVAL, "schedule op %d: unknown kind %d", i, (int)op->kind);
    }
  }
  if (s->ops[s->n - 2].kind != YK_SCHED_REDUCE || s->ops[s->n - 1].kind != YK_SCHED_UPDATE)
    return yk_errorf(d, YK_EINVAL, "schedule: must end with REDUCE, UPDATE");
  if (backwards != m) return yk_errorf(d, YK_EINVAL, "schedule: %d of %d micro-batches have a backward", backwards, m);
  /* The reducing backward must be the last one: gradients are final only
   * after every micro-batch has been accumulated. */
  for (int i = reducing + 1; reducing >= 0 && i < s->n; i++)
    if (s->ops[i].kind == YK_SCHED_BACKWARD)
      return yk_errorf(d, YK_EINVAL, "schedule op %d: backward after the reducing one (op %d)", i, reducing);
  if (reducing < 0) return yk_errorf(d, YK_EINVAL, "schedule: no backward reduces the gradients");
  return 0;
}

void yk_engine_schedule_describe(const yk_schedule *s, char *buf, size_t cap) {
  size_t used = 0;
  buf[0] = '\0';
  for (int i = 0; i < s->n && used + 32 < cap; i++) {
    const yk_sched_op *op = &s->ops[i];
    /* Long schedules: the first and last three micro-batches. */
    if (s->micro_batches > 8 && op->micro >= 3 && op->micro < s->micro_batches - 3) {
      if (op->micro == 3 && op->kind == YK_SCHED_FORWARD) used += (size_t)snprintf(buf + used, cap - used, "... ");
      continue;
    }
    int n = 0;
    switch (op->kind) {
    case YK_SCHED_FORWARD: n = snprintf(buf + used, cap - used, "F%d ", op->micro); break;
    case YK_SCHED_BACKWARD: n = snprintf(buf + used, cap - used, "B%d%s ", op->micro, op->reduce ? "+" : ""); break;
    case YK_SCHED_REDUCE: n = snprintf(buf + used, cap - used, "R "); break;
    case YK_SCHED_UPDATE: n = snprintf(buf + used, cap - used, "U "); break;
    default: n = snprintf(buf + used, cap - used, "? "); break;
    }
    used += (size_t)n;
  }
  if (used) buf[used - 1] = '\0';
}
