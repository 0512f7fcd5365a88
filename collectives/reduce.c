/* reduce.c - element-wise reduction kernels for the collectives.
 *
 * dst[i] = a[i] (op) b[i], dst (n) may alias a or b, all of one dtype.
 * 16-bit floats widen to fp32, combine in fp32 and round to nearest even
 * once. Two variants, AVX2 and portable, picked by common's yk_isa_resolve
 * (so YK_ISA=portable holds here too); both give bitwise equal results for
 * every input (tests check that). No conversion code lives here: the AVX2
 * loops use common's 8-lane conversions (yk_cast_internal.h) inside the
 * reduction loop, the scalar code common's references. (Widening whole
 * blocks into fp32 buffers with the array casts instead measured about twice
 * as slow.) No AVX-512: the build hosts lack it and we ship nothing we
 * cannot test. */
#include <string.h>

#include "coll_internal.h"
#include "yk_cast_internal.h" /* common's 8-lane fp16/bf16 conversions: the documented exception */

#define AVX2 YK_AVX2_TARGET

#define COMBINE(op, x, y) ((op) == YK_OP_MAX ? ((x) > (y) ? (x) : (y)) : (op) == YK_OP_MIN ? ((x) < (y) ? (x) : (y)) : (x) + (y))

/* yk_coll_reduce's isa argument (0 = best available, 1 = portable) as the
 * variant to run. */
static yk_isa variant(int isa) {
  yk_isa v;
  (void)yk_isa_resolve(isa == 1 ? YK_ISA_PORTABLE : YK_ISA_AUTO, &v, NULL); /* its fallback: never fails */
  return v;
}

/* ---- fp32 ---------------------------------------------------------------- */

/* o, x, y: (n) f32 */
static void f32_scalar(float *o, const float *x, const float *y, size_t n, yk_redop op) {
  for (size_t i = 0; i < n; i++) o[i] = COMBINE(op, x[i], y[i]);
}

/* max_ps(u,v) = u > v ? u : v (v when either is NaN), matching COMBINE. */
AVX2 static inline __m256 combine8(__m256 u, __m256 v, yk_redop op) {
  return op == YK_OP_MAX ? _mm256_max_ps(u, v) : op == YK_OP_MIN ? _mm256_min_ps(u, v) : _mm256_add_ps(u, v);
}

AVX2 static void f32_avx2(float *o, const float *x, const float *y, size_t n, yk_redop op) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(o + i, combine8(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), op));
  f32_scalar(o + i, x + i, y + i, n - i, op);
}

/* ---- fp16 / bf16: widen, combine in fp32, round once -------------------- */

/* o, x, y: (n) f16 or bf16 (t) */
static void scalar16(uint16_t *o, const uint16_t *x, const uint16_t *y, size_t n, yk_dtype t, yk_redop op) {
  if (t == YK_DT_F16)
    for (size_t i = 0; i < n; i++) o[i] = yk_f32_to_f16(COMBINE(op, yk_f16_to_f32(x[i]), yk_f16_to_f32(y[i])));
  else
    for (size_t i = 0; i < n; i++) o[i] = yk_f32_to_bf16(COMBINE(op, yk_bf16_to_f32(x[i]), yk_bf16_to_f32(y[i])));
}

AVX2 static void f16_avx2(uint16_t *o, const uint16_t *x, const uint16_t *y, size_t n, yk_redop op) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i *)(o + i), yk_f16x8_round(combine8(yk_f16x8_load(x + i), yk_f16x8_load(y + i), op)));
  scalar16(o + i, x + i, y + i, n - i, YK_DT_F16, op);
}

AVX2 static void bf16_avx2(uint16_t *o, const uint16_t *x, const uint16_t *y, size_t n, yk_redop op) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i *)(o + i), yk_bf16x8_round(combine8(yk_bf16x8_load(x + i), yk_bf16x8_load(y + i), op)));
  scalar16(o + i, x + i, y + i, n - i, YK_DT_BF16, op);
}

/* ---- integers ------------------------------------------------------------- */

/* wrap-around sum, like two's complement hardware (no UB) */
static void i32_scalar(int32_t *o, const int32_t *x, const int32_t *y, size_t n, yk_redop op) {
  for (size_t i = 0; i < n; i++)
    o[i] = op == YK_OP_SUM || op == YK_OP_AVG ? (int32_t)((uint32_t)x[i] + (uint32_t)y[i]) : COMBINE(op, x[i], y[i]);
}

static void i64_scalar(int64_t *o, const int64_t *x, const int64_t *y, size_t n, yk_redop op) {
  for (size_t i = 0; i < n; i++)
    o[i] = op == YK_OP_SUM || op == YK_OP_AVG ? (int64_t)((uint64_t)x[i] + (uint64_t)y[i]) : COMBINE(op, x[i], y[i]);
}

AVX2 static void i32_avx2(int32_t *o, const int32_t *x, const int32_t *y, size_t n, yk_redop op) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i u = _mm256_loadu_si256((const __m256i *)(x + i)), v = _mm256_loadu_si256((const __m256i *)(y + i)), r;
    if (op == YK_OP_MAX) r = _mm256_max_epi32(u, v);
    else if (op == YK_OP_MIN) r = _mm256_min_epi32(u, v);
    else r = _mm256_add_epi32(u, v);
    _mm256_storeu_si256((__m256i *)(o + i), r);
  }
  i32_scalar(o + i, x + i, y + i, n - i, op);
}

AVX2 static void i64_avx2(int64_t *o, const int64_t *x, const int64_t *y, size_t n, yk_redop op) {
  size_t i = 0;
  if (op == YK_OP_SUM || op == YK_OP_AVG) {
    for (; i + 4 <= n; i += 4) {
      __m256i u = _mm256_loadu_si256((const __m256i *)(x + i)), v = _mm256_loadu_si256((const __m256i *)(y + i));
      _mm256_storeu_si256((__m256i *)(o + i), _mm256_add_epi64(u, v));
    }
  } else {
    for (; i + 4 <= n; i += 4) {
      __m256i u = _mm256_loadu_si256((const __m256i *)(x + i)), v = _mm256_loadu_si256((const __m256i *)(y + i));
      __m256i gt = _mm256_cmpgt_epi64(u, v); /* u > v */
      __m256i r = op == YK_OP_MAX ? _mm256_blendv_epi8(v, u, gt) : _mm256_blendv_epi8(u, v, gt);
      _mm256_storeu_si256((__m256i *)(o + i), r);
    }
  }
  i64_scalar(o + i, x + i, y + i, n - i, op);
}

const char *yk_coll_isa_name(void) { return yk_isa_name(variant(0)); }

void yk_coll_reduce(void *dst, const void *a, const void *b, size_t n, yk_dtype t, yk_redop op, int isa) {
  if (n == 0) return;
  const int vec = variant(isa) == YK_ISA_AVX2;
  switch (t) {
  case YK_DT_F32: (vec ? f32_avx2 : f32_scalar)(dst, a, b, n, op); break;
  case YK_DT_F16: vec ? f16_avx2(dst, a, b, n, op) : scalar16(dst, a, b, n, t, op); break;
  case YK_DT_BF16: vec ? bf16_avx2(dst, a, b, n, op) : scalar16(dst, a, b, n, t, op); break;
  case YK_DT_I32: (vec ? i32_avx2 : i32_scalar)(dst, a, b, n, op); break;
  case YK_DT_I64: (vec ? i64_avx2 : i64_scalar)(dst, a, b, n, op); break;
  default: break;
  }
}

/* Streaming (non-temporal) stores for the board's two-shot on messages
 * larger than the last-level cache: this core does not read the output
 * again soon, and a streaming store skips the read-for-ownership of each
 * destination line (otherwise a third of a copy's memory traffic). Same
 * bits as yk_coll_reduce. The caller issues coll_stream_fence() before it
 * publishes the data (streaming stores are weakly ordered). */
AVX2 static void f32_sum_stream(float *o, const float *x, const float *y, size_t n) {
  size_t i = 0;
  for (; i < n && ((uintptr_t)(o + i) & 31); i++) o[i] = x[i] + y[i];
  for (; i + 8 <= n; i += 8) _mm256_stream_ps(o + i, _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; i++) o[i] = x[i] + y[i];
}

void coll_reduce_stream(void *dst, const void *a, const void *b, size_t n, yk_dtype t, yk_redop op) {
  if (t == YK_DT_F32 && op == YK_OP_SUM && ((uintptr_t)dst & 3) == 0 && variant(0) == YK_ISA_AVX2)
    f32_sum_stream(dst, a, b, n);
  else yk_coll_reduce(dst, a, b, n, t, op, 0);
}

AVX2 static void copy_stream(char *d, const char *s, size_t n) {
  for (; n && ((uintptr_t)d & 31); n--) *d++ = *s++;
  for (; n >= 32; n -= 32, d += 32, s += 32) _mm256_stream_si256((__m256i *)d, _mm256_loadu_si256((const __m256i *)s));
  memcpy(d, s, n);
}

void coll_copy_stream(void *dst, const void *src, size_t n) {
  if (variant(0) == YK_ISA_AVX2) copy_stream(dst, src, n);
  else memcpy(dst, src, n);
}

void coll_stream_fence(void) { _mm_sfence(); }

void yk_coll_avg_finish(void *x, size_t n, yk_dtype t, int size) {
  if (size <= 1) return;
  switch (t) {
  case YK_DT_F32: {
    float *p = x;
    for (size_t i = 0; i < n; i++) p[i] = p[i] / (float)size;
    break;
  }
  case YK_DT_F16:
  case YK_DT_BF16: { /* x (n) 16-bit: widen a block (common's casts), divide in fp32, round once */
    uint16_t *p = x;
    const yk_isa v = variant(0);
    float u[512];
    for (size_t i = 0; i < n; i += 512) {
      size_t k = YK_MIN((size_t)512, n - i);
      yk_cast_to_f32(u, p + i, t, k, 1.0f, v);
      for (size_t j = 0; j < k; j++) u[j] = u[j] / (float)size;
      yk_cast_from_f32(p + i, t, u, k, v);
    }
    break;
  }
  case YK_DT_I32: {
    int32_t *p = x;
    for (size_t i = 0; i < n; i++) p[i] /= size;
    break;
  }
  case YK_DT_I64: {
    int64_t *p = x;
    for (size_t i = 0; i < n; i++) p[i] /= size;
    break;
  }
  default:
    break;
  }
}
