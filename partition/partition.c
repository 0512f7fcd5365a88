/* partition.c - even contiguous ranges, the layout grid, data windows. */
#include "yk_partition.h"

#include <stdio.h>

void yk_partition_even_range(uint64_t total, int world, int rank, uint64_t *off, uint64_t *len) {
  uint64_t w = (uint64_t)world, r = (uint64_t)rank;
  uint64_t base = total / w, extra = total % w;
  *len = base + (r < extra ? 1 : 0);
  *off = r * base + (r < extra ? r : extra);
}

int yk_partition_owner(uint64_t total, int world, uint64_t index) {
  uint64_t w = (uint64_t)world;
  uint64_t base = total / w, extra = total % w;
  uint64_t cut = extra * (base + 1); /* elements covered by the longer ranges */
  if (index < cut) return (int)(index / (base + 1));
  return (int)(extra + (index - cut) / (base ? base : 1));
}

uint64_t yk_partition_data_windows(uint64_t ntok, uint64_t w) {
  if (w == 0 || ntok < w + 1) return 0;
  return (ntok - 1) / w;
}

uint64_t yk_partition_data_step_windows(int world, int accum) { return (uint64_t)world * (uint64_t)accum; }

uint64_t yk_partition_data_window(uint64_t step_first, int world, int accum, int rank, int micro) {
  (void)accum; /* the step spans world*accum numbers; micro < accum keeps q inside it */
  return step_first + (uint64_t)micro * (uint64_t)world + (uint64_t)rank;
}

/* "1, 2, 4" : the divisors of n */
static void divisors(int n, char *buf, size_t cap) {
  size_t l = 0;
  buf[0] = '\0';
  for (int k = 1; k <= n && l < cap; k++)
    if (n % k == 0) l += (size_t)snprintf(buf + l, cap - l, "%s%d", l ? ", " : "", k);
}

int yk_partition_layout(int world, int tp, int pp, int rank, yk_layout *out, yk_diag *d) {
  if (world < 1) return yk_errorf(d, YK_ECONFIG, "a job of %d ranks is not possible", world);
  if (tp < 1) return yk_errorf(d, YK_ECONFIG, "parallel.tensor=%d: the tensor-parallel degree is at least 1", tp);
  if (pp < 1) return yk_errorf(d, YK_ECONFIG, "parallel.pipeline=%d: the pipeline degree is at least 1", pp);
  if (world % tp || world % pp || (world / tp) % pp) {
    /* name the degrees that would work with the other one kept */
    char ok[256];
    int keep_pp = world % pp == 0 || world % tp != 0, kept = world % pp == 0 ? pp : world % tp == 0 ? tp : 1;
    divisors(world / kept, ok, sizeof ok);
    return yk_errorf(d, YK_ECONFIG,
                     "%d rank%s cannot be laid out as parallel.tensor=%d x parallel.pipeline=%d (the ranks must be a "
                     "multiple of %d); with parallel.%s=%d, parallel.%s can be %s, or change the rank count",
                     world, world == 1 ? "" : "s", tp, pp, tp * pp, keep_pp ? "pipeline" : "tensor", kept,
                     keep_pp ? "tensor" : "pipeline", ok);
  }
  if (rank < 0 || rank >= world) return yk_errorf(d, YK_ECONFIG, "rank %d is outside [0, %d)", rank, world);
  out->world = world;
  out->tp = tp;
  out->pp = pp;
  out->dp = world / (tp * pp);
  out->rank = rank;
  out->tp_rank = rank % tp;
  out->dp_rank = (rank / tp) % out->dp;
  out->pp_rank = rank / (tp * out->dp);
  return 0;
}

int yk_partition_layout_rank(const yk_layout *l, int dp_rank, int tp_rank, int pp_rank) {
  return pp_rank * (l->dp * l->tp) + dp_rank * l->tp + tp_rank;
}

void yk_partition_layout_group(const yk_layout *l, yk_group g, int *colour, int *key) {
  /* The colour is the rank with this group's coordinate set to 0: equal for
   * exactly the members of the group. */
  switch (g) {
  case YK_GROUP_DP:
    *colour = yk_partition_layout_rank(l, 0, l->tp_rank, l->pp_rank);
    *key = l->dp_rank;
    break;
  case YK_GROUP_TP:
    *colour = yk_partition_layout_rank(l, l->dp_rank, 0, l->pp_rank);
    *key = l->tp_rank;
    break;
  default:
    *colour = yk_partition_layout_rank(l, l->dp_rank, l->tp_rank, 0);
    *key = l->pp_rank;
    break;
  }
}

void yk_partition_layout_describe(const yk_layout *l, char *buf, size_t cap) {
  int n = snprintf(buf, cap, "%d rank%s = dp %d x tp %d x pp %d; rank %d = (dp %d, tp %d", l->world,
                   l->world == 1 ? "" : "s", l->dp, l->tp, l->pp, l->rank, l->dp_rank, l->tp_rank);
  if (n < 0 || (size_t)n >= cap) return;
  snprintf(buf + n, cap - (size_t)n, l->pp > 1 ? ", pp %d)" : ")", l->pp_rank);
}
