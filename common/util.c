/* util.c - time, memory, files, number parsing, RNG, dtypes. */
#define _GNU_SOURCE
#include "yk_git_rev.h" /* generated at build time by git_rev.cmake: YK_GIT_REV */
#include "yk_common.h"

#include <sys/mman.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#ifndef YK_GIT_REV
#define YK_GIT_REV "unknown"
#endif
#ifndef YK_VERSION
#define YK_VERSION "0.0.0"
#endif

/* ---- time ---- */

uint64_t yk_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double yk_now_s(void) { return (double)yk_now_ns() * 1e-9; }

uint64_t yk_wall_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (uint64_t)tv.tv_sec * 1000ull + (uint64_t)tv.tv_usec / 1000ull;
}

void yk_sleep_ms(unsigned ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* ---- memory ---- */

#define YK_HUGE_MIN ((size_t)4 << 20)

void *yk_alloc(size_t n) {
  if (n == 0) n = 64;
  size_t rounded = (n + 63) & ~(size_t)63;
  if (rounded < n) return NULL;
  if (rounded >= YK_HUGE_MIN) {
    /* Large arenas (parameters, gradients, optimizer state, collective
     * buffers) on transparent huge pages where the kernel offers them
     * (THP "madvise" mode): fewer TLB misses in the kernels, and the
     * kernel's cross-memory copies pin 512 times fewer pages. */
    size_t hr = (rounded + ((size_t)2 << 20) - 1) & ~(((size_t)2 << 20) - 1);
    void *p = aligned_alloc((size_t)2 << 20, hr);
    if (p) {
      madvise(p, hr, MADV_HUGEPAGE);
      memset(p, 0, rounded);
    }
    return p;
  }
  void *p = aligned_alloc(64, rounded);
  if (p) memset(p, 0, rounded);
  return p;
}

void yk_free(void *p) { free(p); }

/* The kB value of the line starting with `key` in a /proc file, in bytes. */
static uint64_t proc_kb(const char *path, const char *key) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char line[256];
  size_t k = strlen(key);
  unsigned long long v = 0;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, key, k) == 0 && sscanf(line + k, " %llu", &v) == 1) break;
  fclose(f);
  return (uint64_t)v * 1024;
}

void yk_host_memory(uint64_t *total, uint64_t *available) {
  if (total) *total = proc_kb("/proc/meminfo", "MemTotal:");
  if (available) *available = proc_kb("/proc/meminfo", "MemAvailable:");
}

void yk_proc_memory(uint64_t *rss, uint64_t *peak) {
  if (rss) *rss = proc_kb("/proc/self/status", "VmRSS:");
  if (peak) *peak = proc_kb("/proc/self/status", "VmHWM:");
}

size_t yk_alloc_bytes(size_t n) {
  if (n == 0) n = 64;
  size_t rounded = (n + 63) & ~(size_t)63;
  if (rounded < YK_HUGE_MIN) return rounded;
  return (rounded + ((size_t)2 << 20) - 1) & ~(((size_t)2 << 20) - 1);
}

int yk_shmem_alloc(size_t bytes, const char *what, yk_shmem *out, yk_diag *d) {
  out->ptr = NULL;
  out->bytes = 0;
  out->fd = -1;
  size_t pg = 4096, n = ((bytes ? bytes : 1) + pg - 1) & ~(pg - 1);
  int fd = memfd_create(what && *what ? what : "yoke", MFD_CLOEXEC);
  if (fd < 0) return yk_errorf_sys(d, YK_ESYS, "memfd_create for %zu bytes of %s", n, what ? what : "shared memory");
  if (ftruncate(fd, (off_t)n) != 0) {
    int rc = yk_errorf_sys(d, YK_ENOMEM, "cannot size %zu bytes of shared memory for %s", n, what ? what : "a buffer");
    close(fd);
    return rc;
  }
  void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int rc = yk_errorf_sys(d, YK_ENOMEM, "cannot map %zu bytes of shared memory for %s", n, what ? what : "a buffer");
    close(fd);
    return rc;
  }
  out->ptr = p;
  out->bytes = n;
  out->fd = fd;
  return 0;
}

void yk_shmem_free(yk_shmem *m) {
  if (!m) return;
  if (m->ptr) munmap(m->ptr, m->bytes);
  if (m->fd >= 0) close(m->fd);
  m->ptr = NULL;
  m->bytes = 0;
  m->fd = -1;
}

/* ---- files ---- */

int yk_file_read(const char *path, char **buf, size_t *len, yk_diag *d) {
  *buf = NULL;
  *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return yk_errorf_sys(d, errno == ENOENT ? YK_ENOTFOUND : YK_EIO, "cannot open '%s'", path);
  if (fseek(f, 0, SEEK_END) != 0) {
    fclose(f);
    return yk_errorf_sys(d, YK_EIO, "cannot seek '%s'", path);
  }
  long sz = ftell(f);
  if (sz < 0) {
    fclose(f);
    return yk_errorf_sys(d, YK_EIO, "cannot size '%s'", path);
  }
  rewind(f);
  char *b = malloc((size_t)sz + 1);
  if (!b) {
    fclose(f);
    return yk_errorf(d, YK_ENOMEM, "out of memory reading '%s' (%ld bytes)", path, sz);
  }
  if (sz > 0 && fread(b, 1, (size_t)sz, f) != (size_t)sz) {
    free(b);
    fclose(f);
    return yk_errorf_sys(d, YK_EIO, "short read on '%s'", path);
  }
  fclose(f);
  b[sz] = '\0';
  *buf = b;
  *len = (size_t)sz;
  return 0;
}

static int fsync_dir_of(const char *path) {
  char *copy = strdup(path);
  if (!copy) return -1;
  int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
  free(copy);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

int yk_file_write_atomic(const char *path, const void *buf, size_t len, yk_diag *d) {
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
    return yk_errorf(d, YK_EINVAL, "path too long: '%s'", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return yk_errorf_sys(d, YK_EIO, "cannot create '%s'", tmp);
  const char *p = buf;
  size_t left = len;
  while (left > 0) {
    ssize_t w = write(fd, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      close(fd);
      unlink(tmp);
      return yk_errorf_sys(d, YK_EIO, "cannot write '%s'", tmp);
    }
    p += w;
    left -= (size_t)w;
  }
  if (fsync(fd) != 0 || close(fd) != 0) {
    unlink(tmp);
    return yk_errorf_sys(d, YK_EIO, "cannot flush '%s'", tmp);
  }
  if (rename(tmp, path) != 0) {
    unlink(tmp);
    return yk_errorf_sys(d, YK_EIO, "cannot rename '%s' to '%s'", tmp, path);
  }
  fsync_dir_of(path);
  return 0;
}

int yk_mkdirs(const char *path, yk_diag *d) {
  char buf[4096];
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof buf) return yk_errorf(d, YK_EINVAL, "bad directory path '%s'", path);
  memcpy(buf, path, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] == '/' || buf[i] == '\0') {
      char c = buf[i];
      buf[i] = '\0';
      if (mkdir(buf, 0755) != 0 && errno != EEXIST) return yk_errorf_sys(d, YK_EIO, "cannot create directory '%s'", buf);
      buf[i] = c;
    }
  }
  return 0;
}

/* ---- numbers ---- */

int yk_parse_i64(const char *s, int64_t *out) {
  if (!s || !*s) return YK_EINVAL;
  errno = 0;
  char *end = NULL;
  long long v = strtoll(s, &end, 0);
  if (errno != 0 || *end != '\0') {
    /* Accept integral floats such as "1e6". */
    double dv;
    if (yk_parse_f64(s, &dv) == 0 && dv == floor(dv) && fabs(dv) < 9.2e18) {
      *out = (int64_t)dv;
      return 0;
    }
    return YK_EINVAL;
  }
  *out = v;
  return 0;
}

int yk_parse_f64(const char *s, double *out) {
  if (!s || !*s) return YK_EINVAL;
  errno = 0;
  char *end = NULL;
  double v = strtod(s, &end);
  if (errno != 0 || *end != '\0' || isnan(v)) return YK_EINVAL;
  *out = v;
  return 0;
}

int yk_parse_bytes(const char *s, uint64_t *out) {
  if (!s || !*s) return YK_EINVAL;
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || end == s || v < 0) return YK_EINVAL;
  uint64_t mul = 1;
  if (*end) {
    char u = (char)tolower((unsigned char)*end);
    if (u == 'k') mul = 1ull << 10;
    else if (u == 'm') mul = 1ull << 20;
    else if (u == 'g') mul = 1ull << 30;
    else if (u == 'b' && end[1] == '\0') mul = 1;
    else return YK_EINVAL;
    const char *rest = end + 1;
    if (*rest && strcasecmp(rest, "ib") != 0 && strcasecmp(rest, "b") != 0 && u != 'b') return YK_EINVAL;
  }
  *out = (uint64_t)(v * (double)mul);
  return 0;
}

int yk_edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 128 || lb > 128) return 1000;
  int row[130];
  for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
  for (size_t i = 1; i <= la; i++) {
    int prev = row[0];
    row[0] = (int)i;
    for (size_t j = 1; j <= lb; j++) {
      int cur = row[j];
      int sub = prev + (a[i - 1] != b[j - 1]);
      int del = row[j] + 1, ins = row[j - 1] + 1;
      row[j] = YK_MIN(sub, YK_MIN(del, ins));
      prev = cur;
    }
  }
  return row[lb];
}

/* ---- RNG: xoshiro256** seeded by splitmix64 ---- */

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void yk_rng_seed(yk_rng *r, uint64_t seed) {
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t yk_rng_u64(yk_rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

float yk_rng_uniform(yk_rng *r) { return (float)(yk_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float yk_rng_normal(yk_rng *r) {
  float u1 = yk_rng_uniform(r), u2 = yk_rng_uniform(r);
  if (u1 < 1e-7f) u1 = 1e-7f;
  return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864f * u2);
}

/* ---- misc ---- */

int yk_cpu_count(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

const char *yk_version_string(void) { return YK_VERSION " (git " YK_GIT_REV ")"; }

/* ---- dtypes ---- */

static const struct {
  const char *name;
  size_t size;
} dtypes[YK_DT_COUNT_] = {
    [YK_DT_F32] = {"f32", 4}, [YK_DT_F16] = {"f16", 2}, [YK_DT_BF16] = {"bf16", 2}, [YK_DT_I32] = {"i32", 4},
    [YK_DT_I64] = {"i64", 8}, [YK_DT_U16] = {"u16", 2}, [YK_DT_U8] = {"u8", 1},
};

size_t yk_dtype_size(yk_dtype t) { return (unsigned)t < YK_DT_COUNT_ ? dtypes[t].size : 0; }
const char *yk_dtype_name(yk_dtype t) { return (unsigned)t < YK_DT_COUNT_ ? dtypes[t].name : "?"; }
int yk_dtype_parse(const char *s, yk_dtype *out) {
  for (int i = 0; i < YK_DT_COUNT_; i++)
    if (!strcmp(s, dtypes[i].name)) {
      *out = (yk_dtype)i;
      return 0;
    }
  return YK_EINVAL;
}
