/* partition.c - even contiguous ranges. */
#include "yk_partition.h"

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
