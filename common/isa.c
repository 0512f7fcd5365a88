/* isa.c - the one run-time choice of vector-kernel variant (yk_isa_resolve).
 *
 * Every module with vector kernels (common's casts, device, optimizer,
 * collectives, ckpt) asks here, so $YK_ISA and the CPU check mean the same
 * thing everywhere: YK_ISA=portable makes the whole process run portable C. */
#include "yk_common.h"

#include <stdlib.h>
#include <strings.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
/* AVX2 + FMA + F16C, and the OS saves YMM state. Read with cpuid directly
 * because clang's __builtin_cpu_supports does not know "f16c". */
static int cpu_has_avx2_fma_f16c(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
  int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
  if (!(fma && osxsave && avx && f16c)) return 0;
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & 6) != 6) return 0; /* XMM and YMM state enabled */
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
  return (b >> 5) & 1; /* AVX2 */
}
#else
static int cpu_has_avx2_fma_f16c(void) { return 0; }
#endif

const char *yk_isa_name(yk_isa isa) {
  switch (isa) {
    case YK_ISA_PORTABLE: return "portable";
    case YK_ISA_AVX2: return "avx2";
    case YK_ISA_AUTO: return "auto";
    default: return "unknown";
  }
}

int yk_isa_parse(const char *s, yk_isa *out) {
  if (!s) return YK_EINVAL;
  if (!strcasecmp(s, "portable")) *out = YK_ISA_PORTABLE;
  else if (!strcasecmp(s, "avx2")) *out = YK_ISA_AVX2;
  else if (!strcasecmp(s, "auto") || !*s) *out = YK_ISA_AUTO;
  else return YK_EINVAL;
  return 0;
}

int yk_isa_supported(yk_isa isa) {
  /* The answer is a fact about the CPU, remembered after the first call
   * because cpuid traps to the hypervisor on a VM (microseconds) and kernels
   * ask on every call. Racing threads store the same value. 0 = not asked. */
  static int avx2; /* 1 no, 2 yes */
  switch (isa) {
    case YK_ISA_PORTABLE: return 1;
    case YK_ISA_AVX2: {
      int v = __atomic_load_n(&avx2, __ATOMIC_RELAXED);
      if (!v) __atomic_store_n(&avx2, v = cpu_has_avx2_fma_f16c() ? 2 : 1, __ATOMIC_RELAXED);
      return v == 2;
    }
    default: return 0;
  }
}

/* $YK_ISA as a request: YK_ISA_AUTO (unset, empty or "auto"), a variant, or
 * BAD_NAME. Read on the first call and remembered for the life of the
 * process, like the CPU check: it is a launch setting, and kernels resolve
 * AUTO on every call, where getenv (a scan of the whole environment, about
 * 60 ns under mpirun) costs more than a small reduction. */
#define BAD_NAME (-2)
static int env_request(void) {
  static int memo; /* 0 = not read, else the request + 3 */
  int v = __atomic_load_n(&memo, __ATOMIC_RELAXED);
  if (!v) {
    const char *env = getenv("YK_ISA");
    yk_isa r = YK_ISA_AUTO;
    int req = env && *env && yk_isa_parse(env, &r) != 0 ? BAD_NAME : (int)r;
    __atomic_store_n(&memo, v = req + 3, __ATOMIC_RELAXED);
  }
  return v - 3;
}

int yk_isa_resolve(yk_isa want, yk_isa *out, yk_diag *d) {
  const yk_isa best = yk_isa_supported(YK_ISA_AVX2) ? YK_ISA_AVX2 : YK_ISA_PORTABLE;
  const int from_env = want == YK_ISA_AUTO;
  if (from_env) {
    int req = env_request();
    if (req == BAD_NAME) {
      const char *env = getenv("YK_ISA");
      *out = best;
      return yk_errorf(d, YK_ECONFIG, "YK_ISA=%s is not a known instruction set; use portable, avx2 or auto",
                       env ? env : "");
    }
    if (req == YK_ISA_AUTO) {
      *out = best;
      return 0;
    }
    want = (yk_isa)req;
  }
  *out = YK_ISA_PORTABLE;
  if (want < 0 || want >= YK_ISA_COUNT_) return yk_errorf(d, YK_EINVAL, "instruction set %d is not known", (int)want);
  if (!yk_isa_supported(want)) {
    const char *name = yk_isa_name(want);
    if (from_env)
      return yk_errorf(d, YK_EUNSUPPORTED, "YK_ISA=%s: this CPU cannot run the %s kernels; use YK_ISA=portable", name,
                       name);
    return yk_errorf(d, YK_EUNSUPPORTED, "this CPU cannot run the %s kernels; use YK_ISA=portable", name);
  }
  *out = want;
  return 0;
}
