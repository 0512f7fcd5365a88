/* coll_testlib.h - shared helpers of the collectives tests: reorder-invariant
 * inputs (small integers: every partial sum is exact in f16/bf16/f32, so the
 * exact result does not depend on reduction order, as nccl-tests does), and
 * expected results computed independently of the library. */
#ifndef COLL_TESTLIB_H
#define COLL_TESTLIB_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "yk_collectives.h"

static const yk_dtype tl_dtypes[] = {YK_DT_F32, YK_DT_F16, YK_DT_BF16, YK_DT_I32, YK_DT_I64};

/* value of element i on rank r: integers in [-5, 5] (sums over 8 ranks stay
 * within 40, exact in every type) */
static inline int tl_val(int r, size_t i, int salt) { return (int)((i * 7 + (size_t)r * 3 + (size_t)salt) % 11) - 5; }

static inline void tl_store(void *buf, size_t i, yk_dtype t, double v) {
  switch (t) {
  case YK_DT_F32: ((float *)buf)[i] = (float)v; break;
  case YK_DT_F16: ((uint16_t *)buf)[i] = yk_f32_to_f16((float)v); break;
  case YK_DT_BF16: ((uint16_t *)buf)[i] = yk_f32_to_bf16((float)v); break;
  case YK_DT_I32: ((int32_t *)buf)[i] = (int32_t)v; break;
  case YK_DT_I64: ((int64_t *)buf)[i] = (int64_t)v; break;
  default: break;
  }
}

static inline void tl_fill(void *buf, size_t n, yk_dtype t, int r, int salt) {
  for (size_t i = 0; i < n; i++) tl_store(buf, i, t, tl_val(r, i, salt));
}

/* Expected element (global index gi) of a reduction over ranks 0..p-1, as
 * the dtype's bits in want[]. AVG: integer types truncate sum/p; floats
 * compute fp32(sum)/p and round once to the dtype (documented semantics). */
static inline void tl_expect(unsigned char want[8], size_t gi, yk_dtype t, yk_redop op, int p, int salt) {
  long s = 0, mx = -1000, mn = 1000;
  for (int r = 0; r < p; r++) {
    long v = tl_val(r, gi, salt);
    s += v;
    if (v > mx) mx = v;
    if (v < mn) mn = v;
  }
  memset(want, 0, 8);
  if (op != YK_OP_AVG) {
    tl_store(want, 0, t, op == YK_OP_MAX ? (double)mx : op == YK_OP_MIN ? (double)mn : (double)s);
    return;
  }
  union { float f; uint16_t h; int32_t i32; int64_t i64; } u;
  switch (t) {
  case YK_DT_I32: u.i32 = (int32_t)(s / p); break;
  case YK_DT_I64: u.i64 = (int64_t)(s / p); break;
  case YK_DT_F32: u.f = (float)s / (float)p; break;
  case YK_DT_F16: u.h = yk_f32_to_f16((float)s / (float)p); break;
  case YK_DT_BF16: u.h = yk_f32_to_bf16((float)s / (float)p); break;
  default: u.i64 = 0; break;
  }
  memcpy(want, &u, yk_dtype_size(t));
}

/* Number of elements of got (n elements, global indices off..off+n) that
 * differ bitwise from the expected reduction. */
static inline size_t tl_check_reduce(const void *got, size_t off, size_t n, yk_dtype t, yk_redop op, int p, int salt) {
  size_t es = yk_dtype_size(t), wrong = 0;
  unsigned char want[8];
  for (size_t i = 0; i < n; i++) {
    tl_expect(want, off + i, t, op, p, salt);
    if (memcmp((const char *)got + i * es, want, es)) wrong++;
  }
  return wrong;
}

/* Number of elements of got (global off..off+n) differing from rank src's
 * (or, src < 0, the owner's under the even split of `total` over p) input. */
static inline size_t tl_check_copy(const void *got, size_t off, size_t n, yk_dtype t, int src, size_t total, int p,
                                   int salt) {
  size_t es = yk_dtype_size(t), wrong = 0;
  unsigned char want[8];
  for (size_t i = 0; i < n; i++) {
    size_t gi = off + i;
    int r = src;
    if (r < 0) {
      size_t base = total / (size_t)p, extra = total % (size_t)p, big = extra * (base + 1);
      r = gi < big ? (int)(gi / (base + 1)) : (int)(extra + (gi - big) / base);
    }
    memset(want, 0, 8);
    tl_store(want, 0, t, tl_val(r, gi, salt));
    if (memcmp((const char *)got + i * es, want, es)) wrong++;
  }
  return wrong;
}

#endif
