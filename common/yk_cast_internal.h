/* yk_cast_internal.h - internal to yoke: the AVX2+F16C 8-lane fp16/bf16
 * conversions, the one home of the vector conversion code.
 *
 * common/cast.c builds the array casts (yk_cast_*) on these. A kernel that
 * must fuse a conversion into its own loop includes this header instead of
 * writing its own conversion: collectives/reduce.c widens two inputs,
 * combines them and rounds once per register, which is about twice as fast
 * as going through fp32 blocks in memory with the array casts. This is the
 * one header of common that other modules may include besides yk_common.h
 * (docs/architecture.md); it is not API and may change with its users.
 *
 * Every function is static inline and carries the AVX2 target attribute, so
 * callers build with the project's default flags; call them only from code
 * that runs when yk_isa_resolve chose YK_ISA_AVX2. Each gives, lane by lane,
 * the bits of the scalar references yk_f32_to_f16 & co., NaNs included. */
#ifndef YK_CAST_INTERNAL_H
#define YK_CAST_INTERNAL_H

#include <immintrin.h>
#include <stdint.h>

#define YK_AVX2_TARGET __attribute__((target("avx2,fma,f16c")))

/* 8 f16 -> 8 f32 (exact; a NaN comes out quiet), from a register or from p. */
YK_AVX2_TARGET static inline __m256 yk_f16x8_widen(__m128i h) { return _mm256_cvtph_ps(h); }
YK_AVX2_TARGET static inline __m256 yk_f16x8_load(const uint16_t *p) {
  return yk_f16x8_widen(_mm_loadu_si128((const __m128i *)p));
}

/* 8 bf16 at p -> 8 f32 (exact: the bits shifted up). */
YK_AVX2_TARGET static inline __m256 yk_bf16x8_load(const uint16_t *p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

/* 8 f32 -> 8 f16, round to nearest even. */
YK_AVX2_TARGET static inline __m128i yk_f16x8_round(__m256 x) {
  return _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* 8 f32 -> their bf16 bits in the low half of each 32-bit lane (high half
 * zero): add 0x7fff + lsb (ties to even), keep the top half; a NaN keeps its
 * top bits with the quiet bit set. Shift left 16 for the widened value. */
YK_AVX2_TARGET static inline __m256i yk_bf16x8_bits(__m256 f) {
  __m256i x = _mm256_castps_si256(f);
  __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(x, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  __m256i nan = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
  __m256i isnan = _mm256_cmpgt_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
  return _mm256_blendv_epi8(r, nan, isnan);
}

/* 8 lanes of yk_bf16x8_bits -> 8 u16 (packus works per 128-bit half, so
 * pack the two halves with each other). */
YK_AVX2_TARGET static inline __m128i yk_bf16x8_pack(__m256i bits) {
  return _mm_packus_epi32(_mm256_castsi256_si128(bits), _mm256_extracti128_si256(bits, 1));
}

/* 8 f32 -> 8 bf16, round to nearest even. */
YK_AVX2_TARGET static inline __m128i yk_bf16x8_round(__m256 x) { return yk_bf16x8_pack(yk_bf16x8_bits(x)); }

#endif /* YK_CAST_INTERNAL_H */
