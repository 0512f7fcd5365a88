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

#include "yk_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The contiguous range [*off, *off + *len) of `total` elements that `rank` of
 * `world` owns. Requires 0 <= rank < world. */
void yk_partition_even_range(uint64_t total, int world, int rank, uint64_t *off, uint64_t *len);

/* The rank that owns element `index` under yk_partition_even_range. */
int yk_partition_owner(uint64_t total, int world, uint64_t index);

/* ------------------------------------------------------------------------ */
/* Layouts: the DP x TP x PP grid and this rank's place in it               */
/* ------------------------------------------------------------------------ */

/* world = dp x tp x pp ranks. Rank order is Megatron-LM's: tensor-parallel
 * fastest, then data-parallel, then pipeline stages:
 *
 *     rank = pp_rank * (dp * tp) + dp_rank * tp + tp_rank
 *
 * so the ranks of one TP group are neighbours (on one node when tp divides
 * the ranks per node: TP traffic is the heaviest) and a pipeline stage is a
 * contiguous block of dp * tp ranks. Only dp > 1 is trained today; tp and pp
 * are the axes the model-parallel work fills in. */
typedef struct yk_layout {
  int world;
  int dp, tp, pp;                /* degrees: dp * tp * pp == world */
  int rank;
  int dp_rank, tp_rank, pp_rank; /* this rank's coordinates */
} yk_layout;

/* The groups a rank belongs to: the ranks that share every coordinate but
 * the named one. */
typedef enum { YK_GROUP_DP = 0, YK_GROUP_TP = 1, YK_GROUP_PP = 2 } yk_group;

/* Lay `world` ranks out with tensor degree tp and pipeline degree pp (dp =
 * world / (tp * pp)) and place `rank`. An impossible layout (a degree < 1,
 * world not divisible by tp * pp, rank outside [0, world)) is YK_ECONFIG
 * naming the values and the valid choices. */
int yk_partition_layout(int world, int tp, int pp, int rank, yk_layout *out, yk_diag *d);
/* The rank at coordinates (dp_rank, tp_rank, pp_rank) of l. */
int yk_partition_layout_rank(const yk_layout *l, int dp_rank, int tp_rank, int pp_rank);
/* What to pass to yk_comm_split to form this rank's group g: every rank of
 * the group gets the same colour and its coordinate along g as the key. */
void yk_partition_layout_group(const yk_layout *l, yk_group g, int *colour, int *key);
/* "4 ranks = dp 2 x tp 2 x pp 1; rank 3 = (dp 1, tp 1)" into buf (pp_rank is
 * named only when pp > 1). */
void yk_partition_layout_describe(const yk_layout *l, char *buf, size_t cap);

/* ------------------------------------------------------------------------ */
/* Tensor-parallel splits                                                   */
/* ------------------------------------------------------------------------ */

/* The piece of tensor g (its GLOBAL shape; g->split says how it is cut, see
 * yk_split_kind in yk_common.h) that rank `rank` of a tensor-parallel group
 * of `tp` holds. A 1-D tensor is cut like a (n, 1) one. *out gets g's name,
 * decay and split with the local shape and numel (offset 0: the caller lays
 * pieces out). YK_ECONFIG naming the tensor when a COLUMN or ROW dimension is
 * not divisible by tp (VOCAB takes uneven pieces), or ROW on a 1-D tensor. */
int yk_partition_split_local(const yk_tensor_desc *g, int tp, int rank, yk_tensor_desc *out, yk_diag *d);
/* Move rank's piece between a tensor's global values (g->numel floats at
 * `global`) and its local values (yk_partition_split_local's numel at
 * `local`): to_local = 1 copies global -> local; 0 copies local -> global,
 * writing only this rank's elements of global. g must be splittable. */
void yk_partition_split_copy(const yk_tensor_desc *g, int tp, int rank, float *global, float *local, int to_local);

/* ------------------------------------------------------------------------ */
/* Data slices                                                              */
/* ------------------------------------------------------------------------ */

/* The data loader cuts each token shard into WINDOWS of w = B*T tokens:
 * window k of a shard reads tokens [k*w, k*w + w + 1) (w inputs plus one more
 * for the shifted targets), so consecutive windows share one token and a
 * shard of n tokens holds floor((n - 1) / w) windows (0 if n < w + 1).
 * Windows of all shards (sorted by path) are numbered 0..W-1 to form an epoch,
 * and an infinite sequence q = 0, 1, 2, ... maps to window q % W of epoch
 * q / W.
 *
 * One optimizer step consumes world*accum consecutive sequence numbers,
 * starting at `step_first` (the number of windows consumed by all earlier
 * steps): micro-batch `micro` (0 <= micro < accum) of rank `rank`
 * (0 <= rank < world) reads
 *
 *     q = step_first + micro * world + rank.
 *
 * Hence, for any split with the same world*accum (1 x 4, 2 x 2, 4 x 1), the
 * UNION of windows read in a step is the same set, so the summed gradient and
 * the loss curve do not depend on the split (up to fp32 summation order);
 * within one epoch no window is read twice or skipped, whatever the world
 * size; and ranks never read the same window in one step. Micro-batch k of
 * all ranks reads a contiguous run of windows, as llm.c's loader does. */

/* Windows of w tokens in a shard of ntok tokens: floor((ntok - 1) / w), 0
 * when ntok < w + 1 or w == 0. */
uint64_t yk_partition_data_windows(uint64_t ntok, uint64_t w);

/* Sequence numbers one optimizer step consumes: world * accum. */
uint64_t yk_partition_data_step_windows(int world, int accum);

/* The sequence number read by micro-batch `micro` of `rank` in the step that
 * starts at `step_first` (see above). Requires 0 <= rank < world and
 * 0 <= micro < accum. */
uint64_t yk_partition_data_window(uint64_t step_first, int world, int accum, int rank, int micro);

#ifdef __cplusplus
}
#endif
#endif
