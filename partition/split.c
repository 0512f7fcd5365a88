/* split.c - the arithmetic of tensor-parallel splits (yk_split_kind): which
 * rows and columns of a global tensor a rank of the tensor-parallel group
 * holds. One home for it: the model lays out its local arena with it, and
 * everything that converts between a rank's pieces and whole tensors
 * (weights files, checkpoints, tests) calls yk_partition_split_copy. */
#include <string.h>

#include "yk_partition.h"

/* A tensor as (rows, cols): 1-D tensors are (n, 1). */
static void dims(const yk_tensor_desc *g, int64_t *rows, int64_t *cols) {
  *rows = g->ndim >= 1 ? g->shape[0] : (int64_t)g->numel;
  *cols = g->ndim >= 2 ? (int64_t)g->numel / (*rows ? *rows : 1) : 1;
}

static int parts_of(const yk_tensor_desc *g) { return g->split_parts > 1 ? g->split_parts : 1; }

int yk_partition_split_local(const yk_tensor_desc *g, int tp, int rank, yk_tensor_desc *out, yk_diag *d) {
  int64_t R, Cc;
  dims(g, &R, &Cc);
  *out = *g;
  out->offset = 0;
  if (tp < 1 || rank < 0 || rank >= tp)
    return yk_errorf(d, YK_EINVAL, "tensor %s: rank %d of a tensor-parallel group of %d", g->name, rank, tp);
  int64_t lr = R, lc = Cc;
  switch (g->split) {
  case YK_SPLIT_REPLICATED: break;
  case YK_SPLIT_COLUMN: {
    int P = parts_of(g);
    if (R % ((int64_t)P * tp))
      return yk_errorf(d, YK_ECONFIG, "tensor %s: its %lld output rows%s cannot be split over parallel.tensor=%d; "
                       "choose a tensor-parallel degree that divides them", g->name, (long long)(R / P),
                       P > 1 ? " per block" : "", tp);
    lr = R / tp;
    break;
  }
  case YK_SPLIT_ROW:
    if (g->ndim < 2 || Cc % tp)
      return yk_errorf(d, YK_ECONFIG, "tensor %s: its %lld input columns cannot be split over parallel.tensor=%d; "
                       "choose a tensor-parallel degree that divides them", g->name, (long long)Cc, tp);
    lc = Cc / tp;
    break;
  case YK_SPLIT_VOCAB: {
    uint64_t off, len;
    yk_partition_even_range((uint64_t)R, tp, rank, &off, &len);
    lr = (int64_t)len;
    break;
  }
  default: return yk_errorf(d, YK_EINVAL, "tensor %s: unknown split kind %d", g->name, g->split);
  }
  out->numel = (size_t)(lr * lc);
  if (g->ndim >= 2) {
    out->shape[0] = lr;
    out->shape[1] = lc;
  } else {
    out->shape[0] = lr;
  }
  return 0;
}

/* Copy `n` floats between global row/column positions and local ones. */
static void move(float *global, float *local, size_t n, int to_local) {
  if (to_local) memcpy(local, global, n * sizeof(float));
  else memcpy(global, local, n * sizeof(float));
}

void yk_partition_split_copy(const yk_tensor_desc *g, int tp, int rank, float *global, float *local, int to_local) {
  int64_t R, Cc;
  dims(g, &R, &Cc);
  switch (g->split) {
  case YK_SPLIT_COLUMN: {
    /* local rows: for each block b, rows [rank*piece, (rank+1)*piece) of it */
    int P = parts_of(g);
    int64_t block = R / P, piece = block / tp;
    for (int b = 0; b < P; b++)
      move(global + (size_t)((b * block + rank * piece) * Cc), local + (size_t)(b * piece * Cc), (size_t)(piece * Cc),
           to_local);
    break;
  }
  case YK_SPLIT_ROW: {
    int64_t piece = Cc / tp;
    for (int64_t i = 0; i < R; i++)
      move(global + (size_t)(i * Cc + rank * piece), local + (size_t)(i * piece), (size_t)piece, to_local);
    break;
  }
  case YK_SPLIT_VOCAB: {
    uint64_t off, len;
    yk_partition_even_range((uint64_t)R, tp, rank, &off, &len);
    move(global + (size_t)off * (size_t)Cc, local, (size_t)len * (size_t)Cc, to_local);
    break;
  }
  default: move(global, local, g->numel, to_local);
  }
}
