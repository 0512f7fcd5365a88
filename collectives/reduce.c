/* reduce.c - element-wise reduction kernels for the collectives.
 *
 * dst[i] = a[i] (op) b[i], dst (n) may alias a or b, all of one dtype.
 * 16-bit floats widen to fp32, combine in fp32 and round to nearest even once.
 * Two implementations: AVX2 (+F16C for fp16) selected at run time with
 * __builtin_cpu_supports, and a portable scalar one. Both give bitwise equal
 * results for finite inputs (tests check that). No AVX-512: the build hosts
 * lack it and we ship nothing we cannot test. */
#include <immintrin.h>
#include <string.h>

#include "coll_internal.h"

static inline float ld_f16(uint16_t h) { return yk_f16_to_f32(h); }
static inline float ld_bf16(uint16_t h) { return yk_bf16_to_f32(h); }

#define COMBINE(op, x, y) ((op) == YK_OP_MAX ? ((x) > (y) ? (x) : (y)) : (op) == YK_OP_MIN ? ((x) < (y) ? (x) : (y)) : (x) + (y))

static void reduce_scalar(void *dst, const void *a, const void *b, size_t n, yk_dtype t, yk_redop op) {
  switch (t) {
  case YK_DT_F32: {
    float *o = dst;
    const float *x = a, *y = b;
    for (size_t i = 0; i < n; i++) o[i] = COMBINE(op, x[i], y[i]);
    break;
  }
  case YK_DT_F16: {
    uint16_t *o = dst;
    const uint16_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++) {
      float u = ld_f16(x[i]), v = ld_f16(y[i]);
      o[i] = yk_f32_to_f16(COMBINE(op, u, v));
    }
    break;
  }
  case YK_DT_BF16: {
    uint16_t *o = dst;
    const uint16_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++) {
      float u = ld_bf16(x[i]), v = ld_bf16(y[i]);
      o[i] = yk_f32_to_bf16(COMBINE(op, u, v));
    }
    break;
  }
  case YK_DT_I32: {
    int32_t *o = dst;
    const int32_t *x = a, *y = b;
    /* wrap-around sum, like two's complement hardware (no UB) */
    for (size_t i = 0; i < n; i++)
      o[i] = op == YK_OP_SUM || op == YK_OP_AVG ? (int32_t)((uint32_t)x[i] + (uint32_t)y[i]) : COMBINE(op, x[i], y[i]);
    break;
  }
  case YK_DT_I64: {
    int64_t *o = dst;
    const int64_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
      o[i] = op == YK_OP_SUM || op == YK_OP_AVG ? (int64_t)((uint64_t)x[i] + (uint64_t)y[i]) : COMBINE(op, x[i], y[i]);
    break;
  }
  default:
    break;
  }
}

/* ---- AVX2 ---------------------------------------------------------------- */

__attribute__((target("avx2"))) static void f32_avx2(float *o, const float *x, const float *y, size_t n, yk_redop op) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 u = _mm256_loadu_ps(x + i), v = _mm256_loadu_ps(y + i), r;
    /* max_ps(u,v) = u > v ? u : v, matching the scalar COMBINE */
    if (op == YK_OP_MAX) r = _mm256_max_ps(u, v);
    else if (op == YK_OP_MIN) r = _mm256_min_ps(u, v);
    else r = _mm256_add_ps(u, v);
    _mm256_storeu_ps(o + i, r);
  }
  for (; i < n; i++) o[i] = COMBINE(op, x[i], y[i]);
}

__attribute__((target("avx2,f16c"))) static void f16_avx2(uint16_t *o, const uint16_t *x, const uint16_t *y,
                                                           size_t n, yk_redop op) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 u = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i)));
    __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(y + i))), r;
    if (op == YK_OP_MAX) r = _mm256_max_ps(u, v);
    else if (op == YK_OP_MIN) r = _mm256_min_ps(u, v);
    else r = _mm256_add_ps(u, v);
    _mm_storeu_si128((__m128i *)(o + i), _mm256_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  for (; i < n; i++) o[i] = yk_f32_to_f16(COMBINE(op, ld_f16(x[i]), ld_f16(y[i])));
}

/* bf16 -> f32 is a 16-bit shift; f32 -> bf16 rounds to nearest even as
 * yk_f32_to_bf16 does, including quieting NaNs. */
__attribute__((target("avx2"))) static inline __m256 bf16_load(const uint16_t *p) {
  __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
__attribute__((target("avx2"))) static inline __m128i bf16_round(__m256 r) {
  __m256i x = _mm256_castps_si256(r);
  __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
  __m256i rounded = _mm256_add_epi32(x, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
  __m256i ax = _mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff));
  __m256i isnan = _mm256_cmpgt_epi32(ax, _mm256_set1_epi32(0x7f800000));
  __m256i qnan = _mm256_or_si256(x, _mm256_set1_epi32(0x400000));
  __m256i sel = _mm256_blendv_epi8(rounded, qnan, isnan);
  __m256i hi = _mm256_srli_epi32(sel, 16);
  /* pack 8 x u32 (values < 65536) into 8 x u16 */
  __m128i lo128 = _mm256_castsi256_si128(hi), hi128 = _mm256_extracti128_si256(hi, 1);
  return _mm_packus_epi32(lo128, hi128);
}
__attribute__((target("avx2"))) static void bf16_avx2(uint16_t *o, const uint16_t *x, const uint16_t *y, size_t n,
                                                       yk_redop op) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 u = bf16_load(x + i), v = bf16_load(y + i), r;
    if (op == YK_OP_MAX) r = _mm256_max_ps(u, v);
    else if (op == YK_OP_MIN) r = _mm256_min_ps(u, v);
    else r = _mm256_add_ps(u, v);
    _mm_storeu_si128((__m128i *)(o + i), bf16_round(r));
  }
  for (; i < n; i++) o[i] = yk_f32_to_bf16(COMBINE(op, ld_bf16(x[i]), ld_bf16(y[i])));
}

__attribute__((target("avx2"))) static void i32_avx2(int32_t *o, const int32_t *x, const int32_t *y, size_t n,
                                                      yk_redop op) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i u = _mm256_loadu_si256((const __m256i *)(x + i)), v = _mm256_loadu_si256((const __m256i *)(y + i)), r;
    if (op == YK_OP_MAX) r = _mm256_max_epi32(u, v);
    else if (op == YK_OP_MIN) r = _mm256_min_epi32(u, v);
    else r = _mm256_add_epi32(u, v);
    _mm256_storeu_si256((__m256i *)(o + i), r);
  }
  reduce_scalar(o + i, x + i, y + i, n - i, YK_DT_I32, op);
}

__attribute__((target("avx2"))) static void i64_avx2(int64_t *o, const int64_t *x, const int64_t *y, size_t n,
                                                      yk_redop op) {
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
  reduce_scalar(o + i, x + i, y + i, n - i, YK_DT_I64, op);
}

static int have_avx2(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
}

const char *yk_coll_isa_name(void) { return have_avx2() ? "avx2+f16c" : "scalar"; }

void yk_coll_reduce(void *dst, const void *a, const void *b, size_t n, yk_dtype t, yk_redop op, int isa) {
  if (n == 0) return;
  if (isa == 0 && have_avx2()) {
    switch (t) {
    case YK_DT_F32: f32_avx2(dst, a, b, n, op); return;
    case YK_DT_F16: f16_avx2(dst, a, b, n, op); return;
    case YK_DT_BF16: bf16_avx2(dst, a, b, n, op); return;
    case YK_DT_I32: i32_avx2(dst, a, b, n, op); return;
    case YK_DT_I64: i64_avx2(dst, a, b, n, op); return;
    default: break;
    }
  }
  reduce_scalar(dst, a, b, n, t, op);
}

/* Streaming (non-temporal) stores for the board's two-shot on messages
 * larger than the last-level cache: this core does not read the output
 * again soon, and a streaming store skips the read-for-ownership of each
 * destination line (otherwise a third of a copy's memory traffic). Same
 * bits as yk_coll_reduce. The caller issues coll_stream_fence() before it
 * publishes the data (streaming stores are weakly ordered). */
__attribute__((target("avx2"))) static void f32_sum_stream(float *o, const float *x, const float *y, size_t n) {
  size_t i = 0;
  for (; i < n && ((uintptr_t)(o + i) & 31); i++) o[i] = x[i] + y[i];
  for (; i + 8 <= n; i += 8) _mm256_stream_ps(o + i, _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; i++) o[i] = x[i] + y[i];
}

void coll_reduce_stream(void *dst, const void *a, const void *b, size_t n, yk_dtype t, yk_redop op) {
  if (t == YK_DT_F32 && op == YK_OP_SUM && ((uintptr_t)dst & 3) == 0 && have_avx2()) f32_sum_stream(dst, a, b, n);
  else yk_coll_reduce(dst, a, b, n, t, op, 0);
}

__attribute__((target("avx2"))) static void copy_stream(char *d, const char *s, size_t n) {
  for (; n && ((uintptr_t)d & 31); n--) *d++ = *s++;
  for (; n >= 32; n -= 32, d += 32, s += 32) _mm256_stream_si256((__m256i *)d, _mm256_loadu_si256((const __m256i *)s));
  memcpy(d, s, n);
}

void coll_copy_stream(void *dst, const void *src, size_t n) {
  if (have_avx2()) copy_stream(dst, src, n);
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
  case YK_DT_F16: {
    uint16_t *p = x;
    for (size_t i = 0; i < n; i++) p[i] = yk_f32_to_f16(yk_f16_to_f32(p[i]) / (float)size);
    break;
  }
  case YK_DT_BF16: {
    uint16_t *p = x;
    for (size_t i = 0; i < n; i++) p[i] = yk_f32_to_bf16(yk_bf16_to_f32(p[i]) / (float)size);
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
