/* fusion.c - pack many small tensors into one all-reduce (Horovod's tensor
 * fusion). Tensors are appended to a buffer of `threshold` bytes; when the
 * next one would not fit, the packed batch is all-reduced in place and the
 * results are copied back to each tensor. Tensors larger than the buffer go
 * out directly. Everything is synchronous from the caller's view at
 * yk_fusion_flush; adds only block when a batch is full. */
#include <stdlib.h>
#include <string.h>

#include "coll_internal.h"

typedef struct fitem {
  void *buf;
  size_t count;
} fitem;

struct yk_fusion {
  yk_comm *c;
  yk_dtype t;
  yk_redop op;
  size_t cap, used; /* bytes */
  char *buf;
  fitem *items;
  size_t n, ncap;
  uint64_t ops;
};

int yk_fusion_create(yk_comm *c, yk_dtype t, yk_redop op, size_t threshold, yk_fusion **out, yk_diag *d) {
  *out = NULL;
  if (!c) return yk_errorf(d, YK_EINVAL, "yk_fusion_create: NULL communicator");
  if (threshold == 0) threshold = 1 << 20;
  yk_fusion *f = calloc(1, sizeof *f);
  if (!f) return yk_errorf(d, YK_ENOMEM, "out of memory");
  f->buf = yk_alloc(threshold);
  if (!f->buf) {
    free(f);
    return yk_errorf(d, YK_ENOMEM, "out of memory for a %zu-byte fusion buffer", threshold);
  }
  f->c = c;
  f->t = t;
  f->op = op;
  f->cap = threshold;
  *out = f;
  return 0;
}

int yk_fusion_flush(yk_fusion *f, yk_diag *d) {
  if (!f->n) return 0;
  size_t es = yk_dtype_size(f->t);
  int rc = yk_comm_allreduce_sync(f->c, f->buf, f->buf, f->used / es, f->t, f->op, d);
  f->ops++;
  if (!rc) {
    size_t o = 0;
    for (size_t i = 0; i < f->n; i++) {
      memcpy(f->items[i].buf, f->buf + o, f->items[i].count * es);
      o += f->items[i].count * es;
    }
  }
  f->n = 0;
  f->used = 0;
  return rc;
}

int yk_fusion_add(yk_fusion *f, void *buf, size_t count, yk_diag *d) {
  size_t es = yk_dtype_size(f->t), bytes = count * es;
  if (bytes > f->cap) {
    int rc = yk_fusion_flush(f, d);
    if (rc) return rc;
    f->ops++;
    return yk_comm_allreduce_sync(f->c, buf, buf, count, f->t, f->op, d);
  }
  if (f->used + bytes > f->cap) {
    int rc = yk_fusion_flush(f, d);
    if (rc) return rc;
  }
  if (f->n == f->ncap) {
    size_t nc = f->ncap ? f->ncap * 2 : 64;
    fitem *ni = realloc(f->items, nc * sizeof *ni);
    if (!ni) return yk_errorf(d, YK_ENOMEM, "out of memory");
    f->items = ni;
    f->ncap = nc;
  }
  memcpy(f->buf + f->used, buf, bytes);
  f->items[f->n++] = (fitem){buf, count};
  f->used += bytes;
  return 0;
}

uint64_t yk_fusion_ops(const yk_fusion *f) { return f->ops; }

void yk_fusion_destroy(yk_fusion *f) {
  if (!f) return;
  yk_free(f->buf);
  free(f->items);
  free(f);
}
