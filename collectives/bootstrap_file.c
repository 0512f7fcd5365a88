/* bootstrap_file.c - rendezvous through files in one directory (one host or
 * a shared file system), for jobs not started by mpirun. Round k of rank i
 * writes DIR/<job>.<k>.<i> atomically (tmp + rename) and then polls for the
 * other ranks' files until the deadline. The coordinator will replace this
 * with its own yk_bootstrap. Files of finished rounds are removed by their
 * writer two rounds later (everyone has read them by then). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coll_internal.h"

typedef struct fctx {
  char dir[512];
  char job[128];
  unsigned round;
} fctx;

static void fpath(const fctx *f, unsigned round, int rank, char *buf, size_t n) {
  snprintf(buf, n, "%s/%s.%u.%d", f->dir, f->job, round, rank);
}

static int file_allgather(yk_bootstrap *b, const void *mine, size_t len, void *all, uint64_t deadline, yk_diag *d) {
  fctx *f = b->ctx;
  unsigned round = f->round++;
  char p[700];
  fpath(f, round, b->rank, p, sizeof p);
  int rc = yk_file_write_atomic(p, mine, len, d);
  if (rc) return rc;
  if (round >= 2) { /* everyone finished round-2 before writing round-1 files we have read */
    fpath(f, round - 2, b->rank, p, sizeof p);
    unlink(p);
  }
  char *have = calloc((size_t)b->size, 1);
  if (!have) return yk_errorf(d, YK_ENOMEM, "out of memory");
  int missing = b->size;
  unsigned sleep_us = 200;
  while (missing) {
    for (int i = 0; i < b->size; i++) {
      if (have[i]) continue;
      fpath(f, round, i, p, sizeof p);
      char *buf = NULL;
      size_t got = 0;
      if (yk_file_read(p, &buf, &got, NULL) == 0) {
        if (got != len) {
          free(buf);
          free(have);
          return yk_errorf(d, YK_EPROTO, "bootstrap file %s has %zu bytes, expected %zu: another job uses job name '%s'?",
                           p, got, len, f->job);
        }
        memcpy((char *)all + (size_t)i * len, buf, len);
        free(buf);
        have[i] = 1;
        missing--;
      }
    }
    if (!missing) break;
    if (deadline && yk_now_ns() >= deadline) {
      char list[256] = "";
      size_t o = 0;
      for (int i = 0; i < b->size && o < sizeof list - 12; i++)
        if (!have[i]) o += (size_t)snprintf(list + o, sizeof list - o, "%s%d", o ? "," : "", i);
      free(have);
      return yk_errorf(d, YK_ETIMEDOUT, "file bootstrap in %s (job %s, round %u): ranks %s did not arrive before the deadline",
                       f->dir, f->job, round, list);
    }
    usleep(sleep_us);
    if (sleep_us < 20000) sleep_us *= 2;
  }
  free(have);
  return 0;
}

static void file_destroy(yk_bootstrap *b) {
  free(b->ctx);
  free(b);
}

int yk_bootstrap_file_create(const char *dir, const char *job, int rank, int size, yk_bootstrap **out, yk_diag *d) {
  *out = NULL;
  if (!dir || !*dir) return yk_errorf(d, YK_EINVAL, "file bootstrap needs a directory");
  if (!job || !*job || strchr(job, '/'))
    return yk_errorf(d, YK_EINVAL, "file bootstrap job name '%s' must be non-empty without '/'", job ? job : "");
  if (size < 1 || rank < 0 || rank >= size)
    return yk_errorf(d, YK_EINVAL, "file bootstrap: rank %d is outside 0..%d", rank, size - 1);
  int rc = yk_mkdirs(dir, d);
  if (rc) return rc;
  yk_bootstrap *b = calloc(1, sizeof *b);
  fctx *f = calloc(1, sizeof *f);
  if (!b || !f) {
    free(b), free(f);
    return yk_errorf(d, YK_ENOMEM, "out of memory");
  }
  snprintf(f->dir, sizeof f->dir, "%s", dir);
  snprintf(f->job, sizeof f->job, "%s", job);
  b->rank = rank;
  b->size = size;
  b->kind = "file";
  b->ctx = f;
  b->allgather = file_allgather;
  b->destroy = file_destroy;
  *out = b;
  return 0;
}
