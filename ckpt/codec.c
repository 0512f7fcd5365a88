/* codec.c - chunk encoding: byte-plane shuffle + per-plane zstd or raw.
 *
 * Why: float state compresses badly as a whole (zstd level 1 on N(0,0.02)
 * fp32: ratio 1.08 at ~0.6 GB/s per core) because the low mantissa bytes are
 * noise. Split into byte planes, the sign/exponent plane compresses ~2.7x
 * and the mantissa planes not at all; so we compress only the planes a 16 KiB
 * sample says are worth it and copy the rest. Measured on this machine: same
 * or better ratio (1.19 for fp32 weights) at ~4x the speed. */
#include "ckpt_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
/* For ZSTD_c_literalCompressionMode (an "experimental" parameter: its
 * setParameter is checked at run time and the fast path is skipped if the
 * library refuses it). */
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

#define SAMPLE_BYTES (16u << 10)
/* zstd's minimum hash table for the fast levels: byte planes of float state
 * have no long repeats, so a big match finder only burns cache misses.
 * Measured on the sign/exponent plane of N(0,0.02) fp32 at level 1: default
 * hashLog ratio 2.71 at 0.21 GB/s; hashLog 6 ratio 2.94 at 0.72 GB/s, and
 * decompression 1.6x faster. */
#define FAST_HASHLOG 6
#define FAST_MAX_LEVEL 2 /* levels 1..2 (fast, dfast); negative levels keep zstd defaults */
#define MIN_GAIN 0.97 /* compress a plane only if the sample shrinks below 97% */
/* At levels 1..2 the match finder also samples only every FAST_TARGET_LEN-th
 * position (zstd's "acceleration" for the fast strategy, ZSTD_c_targetLength)
 * while literals stay Huffman-coded (zstd turns literal compression off with
 * acceleration unless told otherwise). Why: byte planes of float state are
 * almost all literals; their gain is the Huffman code, and the match search
 * over every position was half the codec's time. Measured on the fp32
 * sign/exponent plane (N(0,0.02) weights and Adam-v-like values, 2 cores
 * shared): ~0.55 -> ~0.75 GB/s of plane bytes, ratio 2.947 -> 2.952. */
#define FAST_TARGET_LEN 64

void *ck_zctx_new(void) { return ZSTD_createCCtx(); }
void ck_zctx_free(void *z) { ZSTD_freeCCtx(z); }
void *ck_dctx_new(void) { return ZSTD_createDCtx(); }
void ck_dctx_free(void *z) { ZSTD_freeDCtx(z); }

size_t ck_chunk_bound(size_t raw_bytes, size_t es) {
  size_t n = raw_bytes / es;
  return 8 * es + es * ZSTD_compressBound(n);
}

/* Byte-plane transposes. src: n elements of es bytes -> es planes of n
 * bytes (and back). On x86-64 the 2- and 4-byte cases use SSE2 (baseline)
 * for the inverse and SSSE3 pshufb (run-time checked) for the forward
 * direction: 16 elements per iteration instead of one byte store at a time,
 * which had cost as much CPU as zstd itself. */
/* Forward: elements [i0, i1) of src -> planes of `stride` bytes at dst
 * (plane b = dst + b*stride), so a chunk can be shuffled block by block. */
static void shuffle_scalar(const uint8_t *src, size_t i0, size_t i1, size_t stride, size_t es, uint8_t *dst) {
  for (size_t i = i0; i < i1; i++)
    for (size_t b = 0; b < es; b++) dst[b * stride + i] = src[i * es + b];
}

static void unshuffle_scalar(const uint8_t *const *planes, size_t i0, size_t n, size_t es, uint8_t *dst) {
  for (size_t i = i0; i < n; i++)
    for (size_t b = 0; b < es; b++) dst[i * es + b] = planes[b][i];
}

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("ssse3"))) static size_t shuffle_ssse3(const uint8_t *src, size_t i0, size_t i1, size_t n,
                                                             size_t es, uint8_t *dst) {
  size_t i = i0;
  if (es == 4) {
    const __m128i m = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    for (; i + 16 <= i1; i += 16) {
      __m128i a = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(src + 4 * i)), m);
      __m128i b = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(src + 4 * i + 16)), m);
      __m128i c = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(src + 4 * i + 32)), m);
      __m128i d = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(src + 4 * i + 48)), m);
      __m128i t0 = _mm_unpacklo_epi32(a, b), t1 = _mm_unpacklo_epi32(c, d);
      __m128i t2 = _mm_unpackhi_epi32(a, b), t3 = _mm_unpackhi_epi32(c, d);
      _mm_storeu_si128((__m128i *)(dst + i), _mm_unpacklo_epi64(t0, t1));
      _mm_storeu_si128((__m128i *)(dst + n + i), _mm_unpackhi_epi64(t0, t1));
      _mm_storeu_si128((__m128i *)(dst + 2 * n + i), _mm_unpacklo_epi64(t2, t3));
      _mm_storeu_si128((__m128i *)(dst + 3 * n + i), _mm_unpackhi_epi64(t2, t3));
    }
  } else if (es == 2) {
    const __m128i m = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    for (; i + 16 <= i1; i += 16) {
      __m128i a = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(src + 2 * i)), m);
      __m128i b = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(src + 2 * i + 16)), m);
      _mm_storeu_si128((__m128i *)(dst + i), _mm_unpacklo_epi64(a, b));
      _mm_storeu_si128((__m128i *)(dst + n + i), _mm_unpackhi_epi64(a, b));
    }
  }
  return i;
}

static size_t unshuffle_sse2(const uint8_t *const *pl, size_t n, size_t es, uint8_t *dst) {
  size_t i = 0;
  if (es == 4) {
    for (; i + 16 <= n; i += 16) {
      __m128i p0 = _mm_loadu_si128((const __m128i *)(pl[0] + i)), p1 = _mm_loadu_si128((const __m128i *)(pl[1] + i));
      __m128i p2 = _mm_loadu_si128((const __m128i *)(pl[2] + i)), p3 = _mm_loadu_si128((const __m128i *)(pl[3] + i));
      __m128i x01l = _mm_unpacklo_epi8(p0, p1), x01h = _mm_unpackhi_epi8(p0, p1);
      __m128i x23l = _mm_unpacklo_epi8(p2, p3), x23h = _mm_unpackhi_epi8(p2, p3);
      _mm_storeu_si128((__m128i *)(dst + 4 * i), _mm_unpacklo_epi16(x01l, x23l));
      _mm_storeu_si128((__m128i *)(dst + 4 * i + 16), _mm_unpackhi_epi16(x01l, x23l));
      _mm_storeu_si128((__m128i *)(dst + 4 * i + 32), _mm_unpacklo_epi16(x01h, x23h));
      _mm_storeu_si128((__m128i *)(dst + 4 * i + 48), _mm_unpackhi_epi16(x01h, x23h));
    }
  } else if (es == 2) {
    for (; i + 16 <= n; i += 16) {
      __m128i p0 = _mm_loadu_si128((const __m128i *)(pl[0] + i)), p1 = _mm_loadu_si128((const __m128i *)(pl[1] + i));
      _mm_storeu_si128((__m128i *)(dst + 2 * i), _mm_unpacklo_epi8(p0, p1));
      _mm_storeu_si128((__m128i *)(dst + 2 * i + 16), _mm_unpackhi_epi8(p0, p1));
    }
  }
  return i;
}
#endif

static void shuffle(const uint8_t *src, size_t i0, size_t i1, size_t stride, size_t es, uint8_t *dst) {
  size_t i = i0;
#if defined(__x86_64__)
  /* SSSE3 comes with the AVX2 level; common's one choice (YK_ISA=portable
   * holds here too; both give the same bytes). Its fallback on an error is
   * the variant to run. */
  yk_isa isa;
  (void)yk_isa_resolve(YK_ISA_AUTO, &isa, NULL);
  if (isa == YK_ISA_AVX2) i = shuffle_ssse3(src, i0, i1, stride, es, dst);
#endif
  shuffle_scalar(src, i, i1, stride, es, dst);
}

static void unshuffle(const uint8_t *const *planes, size_t n, size_t es, uint8_t *dst) {
  size_t i = 0;
#if defined(__x86_64__)
  i = unshuffle_sse2(planes, n, es, dst);
#endif
  unshuffle_scalar(planes, i, n, es, dst);
}

static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The planes are shuffled straight into their all-raw places in dst
 * (table, then plane b at 8*es + b*n), so a raw plane whose predecessors
 * were all raw is already where it belongs and costs no copy (for fp32
 * state that is 3 of 4 planes). A compressed plane's frame goes to scratch
 * (zstd cannot compress in place) and is copied down to the write position,
 * which is never above the plane's own start: every stored plane is at most
 * n bytes, so writing there never clobbers a later plane not yet encoded. A
 * raw plane behind a compressed one moves down with memmove. */
/* Elements per block of the fused hash + shuffle: 32 KiB of f32, so the
 * shuffle reads what XXH3 just pulled into L1/L2 and the chunk's raw bytes
 * come from memory once (hashing the whole chunk first and shuffling it
 * after read them twice). */
#define HASH_BLOCK_ELEMS 8192u

size_t ck_chunk_encode(const uint8_t *src, size_t n, size_t es, int level, void *zctx, uint8_t *scratch,
                       uint8_t *dst, size_t cap, uint64_t *raw_sum) {
  if (cap < ck_chunk_bound(n * es, es) || es > 8) return 0;
  XXH3_state_t *hs = NULL;
  if (raw_sum) {
    if (!(hs = XXH3_createState())) return 0;
    XXH3_64bits_reset(hs);
  }
  ZSTD_CCtx_reset(zctx, ZSTD_reset_session_and_parameters);
  if (ZSTD_isError(ZSTD_CCtx_setParameter(zctx, ZSTD_c_compressionLevel, level))) return 0;
  if (level >= 1 && level <= FAST_MAX_LEVEL) {
    ZSTD_CCtx_setParameter(zctx, ZSTD_c_hashLog, FAST_HASHLOG);
    if (!ZSTD_isError(ZSTD_CCtx_setParameter(zctx, ZSTD_c_literalCompressionMode, ZSTD_ps_enable)))
      ZSTD_CCtx_setParameter(zctx, ZSTD_c_targetLength, FAST_TARGET_LEN);
  }
  size_t hdr = 8 * es;
  uint8_t *planes = dst + hdr;
  for (size_t i0 = 0; i0 < n; i0 += HASH_BLOCK_ELEMS) {
    size_t i1 = n - i0 > HASH_BLOCK_ELEMS ? i0 + HASH_BLOCK_ELEMS : n;
    if (hs) XXH3_64bits_update(hs, src + i0 * es, (i1 - i0) * es);
    if (es == 1) memcpy(planes + i0, src + i0, i1 - i0);
    else shuffle(src, i0, i1, n, es, planes);
  }
  if (hs) {
    *raw_sum = XXH3_64bits_digest(hs);
    XXH3_freeState(hs);
  }
  size_t zcap = ZSTD_compressBound(n); /* scratch holds n*es >= zcap bytes when n >= 64 */
  if (zcap > n * es) zcap = n * es;
  size_t pos = hdr;
  for (size_t b = 0; b < es; b++) {
    const uint8_t *pl = planes + b * n;
    int use_zstd = zcap > 0;
    if (use_zstd && n > 2 * SAMPLE_BYTES) {
      size_t sc = ZSTD_compress2(zctx, scratch, zcap, pl, SAMPLE_BYTES);
      if (ZSTD_isError(sc) || (double)sc > MIN_GAIN * SAMPLE_BYTES) use_zstd = 0;
    }
    size_t stored = 0;
    if (use_zstd) {
      stored = ZSTD_compress2(zctx, scratch, zcap, pl, n);
      if (ZSTD_isError(stored) || stored >= n) use_zstd = 0;
      else memcpy(dst + pos, scratch, stored); /* pos <= hdr + b*n: below every later plane */
    }
    if (!use_zstd) {
      if (dst + pos != pl) memmove(dst + pos, pl, n);
      stored = n;
    }
    put32(dst + 8 * b, use_zstd ? CK_PLANE_ZSTD : CK_PLANE_RAW);
    put32(dst + 8 * b + 4, (uint32_t)stored);
    pos += stored;
  }
  return pos;
}

int ck_chunk_decode(const uint8_t *src, size_t src_len, size_t n, size_t es, void *dctx, uint8_t *scratch,
                    uint8_t *dst) {
  if (es > 8 || src_len < 8 * es) return YK_ECORRUPT;
  const uint8_t *planes[8];
  size_t pos = 8 * es;
  for (size_t b = 0; b < es; b++) {
    uint32_t codec = get32(src + 8 * b), stored = get32(src + 8 * b + 4);
    if (stored > src_len - pos) return YK_ECORRUPT;
    if (codec == CK_PLANE_RAW) {
      if (stored != n) return YK_ECORRUPT;
      planes[b] = src + pos;
    } else if (codec == CK_PLANE_ZSTD) {
      uint8_t *out = (es == 1 ? dst : scratch + b * n);
      size_t got = ZSTD_decompressDCtx(dctx, out, n, src + pos, stored);
      if (ZSTD_isError(got) || got != n) return YK_ECORRUPT;
      planes[b] = out;
    } else {
      return YK_ECORRUPT;
    }
    pos += stored;
  }
  if (pos != src_len) return YK_ECORRUPT;
  if (es == 1) {
    if (planes[0] != dst) memcpy(dst, planes[0], n);
  } else {
    unshuffle(planes, n, es, dst);
  }
  return 0;
}

int ck_threads(int requested) {
  int t = requested > 0 ? requested : yk_cpu_count();
  return t < 1 ? 1 : (t > 64 ? 64 : t);
}

typedef struct {
  void (*fn)(void *, int);
  void *ctx;
  int worker;
} thr_arg;

static void *thr_main(void *p) {
  thr_arg *a = p;
  a->fn(a->ctx, a->worker);
  return NULL;
}

int ck_run_threads(int threads, void (*fn)(void *ctx, int worker), void *ctx) {
  threads = threads < 1 ? 1 : threads;
  pthread_t tid[64];
  thr_arg args[64];
  int started = 0;
  for (int i = 1; i < threads && i < 64; i++) {
    args[i] = (thr_arg){fn, ctx, i};
    if (pthread_create(&tid[i], NULL, thr_main, &args[i]) != 0) break;
    started = i;
  }
  fn(ctx, 0);
  for (int i = 1; i <= started; i++) pthread_join(tid[i], NULL);
  return 0;
}
