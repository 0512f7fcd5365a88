/* yk_partition.h - layouts across ranks: which slice of the data and which
 * slice of each parameter arena a rank owns. Pure arithmetic; no I/O.
 *
 * Data-parallel ranks each hold the whole model; for checkpoints and sharded
 * optimizer state a flat arena of `total` elements is cut into `world`
 * contiguous ranges, the first (total % world) ranges one element longer, so
 * every element has exactly one owner whatever the world size. */
#ifndef YK_PARTITION_H
#define YK_PARTITION_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The contiguous range [*off, *off + *len) of `total` elements that `rank` of
 * `world` owns. Requires 0 <= rank < world. */
void yk_partition_even_range(uint64_t total, int world, int rank, uint64_t *off, uint64_t *len);

/* The rank that owns element `index` under yk_partition_even_range. */
int yk_partition_owner(uint64_t total, int world, uint64_t index);

#ifdef __cplusplus
}
#endif
#endif
