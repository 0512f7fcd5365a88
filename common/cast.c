/* cast.c - fp16 / bf16 <-> fp32: the scalar references and the one set of
 * array kernels built on them (portable and AVX2+F16C).
 *
 * Every variant gives the bits of the scalar reference for every input,
 * NaNs included: the references define NaNs the way F16C converts them
 * (quiet bit set, top payload bits kept), so the vector code needs no fix-up
 * and tests/common compares all of it bit for bit. The 8-lane vector
 * conversions live in yk_cast_internal.h, shared with kernels that fuse a
 * conversion into their own loop. The AVX2 loops do whole
 * groups of 8 and return how many they did; the reference loop finishes the
 * rest, so there is one scalar tail per cast. */
#include "yk_common.h"

#include "yk_cast_internal.h"

#include <string.h>

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* ---- scalar references ---- */

uint16_t yk_f32_to_f16(float f) {
  uint32_t x = f2u(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu)); /* NaN: quiet, top payload */
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* Inf, or rounds to >= 65520: Inf */
  if (ax < 0x38800000u) { /* result is subnormal or zero */
    if (ax < 0x33000000u) return (uint16_t)sign; /* < 2^-25: rounds to 0 */
    uint32_t e = ax >> 23;
    uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e; /* 14 + (112 - e) ... shift in [14, 24] */
    uint32_t half = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) half++;
    return (uint16_t)(sign | half);
  }
  uint32_t h = ((ax - 0x38000000u) >> 13);
  uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
  return (uint16_t)(sign | h);
}

float yk_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu;
  uint32_t m = h & 0x3ffu;
  if (e == 0) {
    if (m == 0) return u2f(sign);
    float v = (float)m * 5.9604644775390625e-8f; /* 2^-24 */
    return sign ? -v : v;
  }
  if (e == 31) return u2f(sign | 0x7f800000u | (m ? 0x400000u : 0) | (m << 13)); /* NaN comes out quiet */
  return u2f(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t yk_f32_to_bf16(float f) {
  uint32_t x = f2u(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
  uint32_t lsb = (x >> 16) & 1u;
  x += 0x7fffu + lsb;
  return (uint16_t)(x >> 16);
}

float yk_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

/* ---- AVX2 + F16C (yk_cast_internal.h): whole groups of 8, returning how
 * many were done ---- */

#define AVX2 YK_AVX2_TARGET

/* out (n) f16|bf16 <- in (n) f32 */
AVX2 static size_t from_f32_avx2(uint16_t *out, int bf, const float *in, size_t n) {
  size_t i = 0;
  if (bf)
    for (; i + 8 <= n; i += 8) _mm_storeu_si128((__m128i *)(out + i), yk_bf16x8_round(_mm256_loadu_ps(in + i)));
  else
    for (; i + 8 <= n; i += 8) _mm_storeu_si128((__m128i *)(out + i), yk_f16x8_round(_mm256_loadu_ps(in + i)));
  return i;
}

/* out (n) f32 <- in (n) f16|bf16, times mul when scale is set. Inlined with
 * constant bf and scale, so each of the four loops has no branch inside. */
AVX2 static inline __attribute__((always_inline)) size_t to_f32_loop(float *out, const uint16_t *in, size_t n,
                                                                     const int bf, const int scale, float mul) {
  const __m256 m = _mm256_set1_ps(mul);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 x = bf ? yk_bf16x8_load(in + i) : yk_f16x8_load(in + i);
    _mm256_storeu_ps(out + i, scale ? _mm256_mul_ps(x, m) : x);
  }
  return i;
}

AVX2 static size_t to_f32_avx2(float *out, const uint16_t *in, int bf, size_t n, int scale, float mul) {
  if (bf) return scale ? to_f32_loop(out, in, n, 1, 1, mul) : to_f32_loop(out, in, n, 1, 0, mul);
  return scale ? to_f32_loop(out, in, n, 0, 1, mul) : to_f32_loop(out, in, n, 0, 0, mul);
}

/* out (n) f16|bf16 <- x (n) f32 rounded; x <- the widened result */
AVX2 static size_t round_avx2(uint16_t *out, int bf, float *x, size_t n) {
  size_t i = 0;
  if (bf) {
    for (; i + 8 <= n; i += 8) {
      __m256i b = yk_bf16x8_bits(_mm256_loadu_ps(x + i));
      _mm_storeu_si128((__m128i *)(out + i), yk_bf16x8_pack(b));
      _mm256_storeu_si256((__m256i *)(x + i), _mm256_slli_epi32(b, 16));
    }
  } else {
    for (; i + 8 <= n; i += 8) {
      __m128i h = yk_f16x8_round(_mm256_loadu_ps(x + i));
      _mm_storeu_si128((__m128i *)(out + i), h);
      _mm256_storeu_ps(x + i, yk_f16x8_widen(h));
    }
  }
  return i;
}

/* ---- the array casts: AVX2 groups, then the references ---- */

static int avx2(yk_isa isa) {
  (void)yk_isa_resolve(isa, &isa, NULL); /* fallback documented in yk_common.h */
  return isa == YK_ISA_AVX2;
}

int yk_cast_from_f32(void *out, yk_dtype dt16, const float *in, size_t n, yk_isa isa) {
  if (dt16 != YK_DT_F16 && dt16 != YK_DT_BF16) return YK_EINVAL;
  uint16_t *o = out;
  size_t i = avx2(isa) ? from_f32_avx2(o, dt16 == YK_DT_BF16, in, n) : 0;
  if (dt16 == YK_DT_F16)
    for (; i < n; i++) o[i] = yk_f32_to_f16(in[i]);
  else
    for (; i < n; i++) o[i] = yk_f32_to_bf16(in[i]);
  return 0;
}

int yk_cast_to_f32(float *out, const void *in, yk_dtype dt16, size_t n, float mul, yk_isa isa) {
  if (dt16 != YK_DT_F16 && dt16 != YK_DT_BF16) return YK_EINVAL;
  const uint16_t *h = in;
  const int scale = mul != 1.0f; /* x * 1 would quieten a signalling NaN */
  size_t i = avx2(isa) ? to_f32_avx2(out, h, dt16 == YK_DT_BF16, n, scale, mul) : 0;
  if (dt16 == YK_DT_F16)
    for (; i < n; i++) out[i] = scale ? yk_f16_to_f32(h[i]) * mul : yk_f16_to_f32(h[i]);
  else
    for (; i < n; i++) out[i] = scale ? yk_bf16_to_f32(h[i]) * mul : yk_bf16_to_f32(h[i]);
  return 0;
}

int yk_cast_round(void *out, yk_dtype dt16, float *x, size_t n, yk_isa isa) {
  if (dt16 != YK_DT_F16 && dt16 != YK_DT_BF16) return YK_EINVAL;
  uint16_t *o = out;
  size_t i = avx2(isa) ? round_avx2(o, dt16 == YK_DT_BF16, x, n) : 0;
  if (dt16 == YK_DT_F16)
    for (; i < n; i++) x[i] = yk_f16_to_f32(o[i] = yk_f32_to_f16(x[i]));
  else
    for (; i < n; i++) x[i] = yk_bf16_to_f32(o[i] = yk_f32_to_bf16(x[i]));
  return 0;
}
