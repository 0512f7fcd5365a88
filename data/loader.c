/* loader.c - contiguous B*T+1-token windows over sorted shards; which window
 * a rank reads is yk_partition_data_window (rule in yk_partition.h). */
#include "yk_data.h"
#include "yk_partition.h"

#include <errno.h>
#include <glob.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct yk_data_loader {
  int64_t B, T;
  uint64_t w;          /* B*T tokens per window */
  int nshards;
  yk_data_shard *shards;
  uint64_t *first;     /* first[i] = windows in shards 0..i-1; first[nshards] = W */
  uint64_t total_tokens;
  uint64_t windows_done;
};

static int has_glob_chars(const char *s) { return strpbrk(s, "*?[") != NULL; }

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Shards that are not there: name the path as written and, when relative, the
 * directory it was resolved in (a job file's paths are relative to the
 * working directory, not to the file), say which directory is missing, and
 * how to make shards (the usual cause: `yoke train` before `data prepare`). */
static int not_found(const char *what, const char *pattern, yk_diag *d) {
  char dir[2048];
  const char *slash = strrchr(pattern, '/');
  if (slash == pattern) snprintf(dir, sizeof dir, "/");
  else if (slash) snprintf(dir, sizeof dir, "%.*s", (int)(slash - pattern), pattern);
  else snprintf(dir, sizeof dir, ".");
  char where[4200] = "";
  if (pattern[0] != '/') {
    char cwd[4096];
    if (getcwd(cwd, sizeof cwd)) snprintf(where, sizeof where, " (relative to the working directory %s)", cwd);
  }
  struct stat sb;
  char missing[2200] = "";
  if (!has_glob_chars(dir) && stat(dir, &sb) != 0)
    snprintf(missing, sizeof missing, "; the directory %s does not exist", dir);
  return yk_errorf(d, YK_ENOTFOUND, "%s: no file matches '%s'%s%s; make token shards with 'yoke data prepare --out %s "
                   "FILES...'", what, pattern, where, missing, has_glob_chars(dir) ? "DIR" : dir);
}

void yk_data_loader_close(yk_data_loader *ld) {
  if (!ld) return;
  for (int i = 0; i < ld->nshards; i++) yk_data_shard_close(&ld->shards[i]);
  free(ld->shards);
  free(ld->first);
  free(ld);
}

int yk_data_loader_open(yk_data_loader **out, const char *what, const char *pattern, int64_t B, int64_t T,
                        int64_t vocab, yk_diag *d) {
  *out = NULL;
  if (!what) what = "data";
  if (B < 1 || T < 1 || (uint64_t)B * (uint64_t)T > YK_SHARD_MAX_TOKENS)
    return yk_errorf(d, YK_ECONFIG, "%s: batch %lld x %lld is not a valid window size", what, (long long)B,
                     (long long)T);
  if (!pattern || !*pattern)
    return yk_errorf(d, YK_ECONFIG, "%s is empty; set it to a token shard file or glob (make shards with 'yoke data "
                                    "prepare')", what);
  glob_t g;
  memset(&g, 0, sizeof g);
  char **paths;
  size_t npaths;
  const char *single[1] = {pattern};
  if (has_glob_chars(pattern)) {
    int grc = glob(pattern, GLOB_ERR, NULL, &g);
    if (grc == GLOB_NOMATCH || (grc == 0 && g.gl_pathc == 0)) {
      globfree(&g);
      return not_found(what, pattern, d);
    }
    if (grc == GLOB_ABORTED) { /* GLOB_ERR: a directory on the way is missing or unreadable */
      globfree(&g);
      char dir[2048];
      const char *slash = strrchr(pattern, '/');
      snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - pattern) : 1, slash ? pattern : ".");
      struct stat sb;
      if (has_glob_chars(dir) || stat(dir, &sb) != 0) return not_found(what, pattern, d);
    }
    if (grc != 0) {
      globfree(&g);
      return yk_errorf(d, YK_EIO, "%s: cannot expand '%s' (unreadable directory?)", what, pattern);
    }
    paths = g.gl_pathv;
    npaths = g.gl_pathc;
    qsort(paths, npaths, sizeof *paths, cmp_str); /* byte order, whatever the locale */
  } else {
    struct stat sb;
    if (stat(pattern, &sb) != 0 && errno == ENOENT) return not_found(what, pattern, d);
    paths = (char **)single;
    npaths = 1;
  }
  yk_data_loader *ld = calloc(1, sizeof *ld);
  if (ld) {
    ld->shards = calloc(npaths, sizeof *ld->shards);
    ld->first = calloc(npaths + 1, sizeof *ld->first);
  }
  if (!ld || !ld->shards || !ld->first) {
    if (g.gl_pathv) globfree(&g);
    yk_data_loader_close(ld);
    return yk_errorf(d, YK_ENOMEM, "%s: out of memory for %zu shards", what, npaths);
  }
  ld->B = B;
  ld->T = T;
  ld->w = (uint64_t)B * (uint64_t)T;
  int rc = 0;
  uint64_t biggest = 0;
  for (size_t i = 0; i < npaths; i++) {
    rc = yk_data_shard_open(&ld->shards[i], paths[i], vocab, d);
    if (rc) break;
    ld->nshards++;
    ld->first[i + 1] = ld->first[i] + yk_partition_data_windows(ld->shards[i].ntok, ld->w);
    ld->total_tokens += ld->shards[i].ntok;
    biggest = YK_MAX(biggest, ld->shards[i].ntok);
  }
  if (!rc && ld->first[ld->nshards] == 0)
    rc = yk_errorf(d, YK_ECONFIG,
                   "%s: '%s' has no complete window: a batch of %lld x %lld needs %llu tokens in one shard, the "
                   "largest of %d shard(s) has %llu; lower train.micro_batch or train.seq_len, or add data",
                   what, pattern, (long long)B, (long long)T, (unsigned long long)(ld->w + 1), ld->nshards,
                   (unsigned long long)biggest);
  if (g.gl_pathv) globfree(&g);
  if (rc) {
    yk_data_loader_close(ld);
    return rc;
  }
  *out = ld;
  return 0;
}

int64_t yk_data_loader_B(const yk_data_loader *ld) { return ld->B; }
int64_t yk_data_loader_T(const yk_data_loader *ld) { return ld->T; }
uint64_t yk_data_loader_epoch_windows(const yk_data_loader *ld) { return ld->first[ld->nshards]; }
uint64_t yk_data_loader_total_tokens(const yk_data_loader *ld) { return ld->total_tokens; }
int yk_data_loader_shard_count(const yk_data_loader *ld) { return ld->nshards; }
const char *yk_data_loader_shard_path(const yk_data_loader *ld, int i) {
  return i >= 0 && i < ld->nshards ? ld->shards[i].path : NULL;
}

/* Sequence number -> (shard, first token). Binary search over first[] for
 * the last shard with first[i] <= k; as k < W that shard has
 * first[i+1] > k, so a shard with no window is never chosen. */
static const uint16_t *locate(const yk_data_loader *ld, uint64_t q, int *shard, uint64_t *tok) {
  uint64_t k = q % ld->first[ld->nshards];
  int lo = 0, hi = ld->nshards - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (ld->first[mid] <= k) lo = mid;
    else hi = mid - 1;
  }
  uint64_t off = (k - ld->first[lo]) * ld->w;
  if (shard) *shard = lo;
  if (tok) *tok = off;
  return ld->shards[lo].tokens + off;
}

const uint16_t *yk_data_loader_window_tokens(const yk_data_loader *ld, uint64_t q) { return locate(ld, q, NULL, NULL); }

void yk_data_loader_window(const yk_data_loader *ld, uint64_t q, int32_t *inputs, int32_t *targets, int *shard,
                           uint64_t *token_off) {
  const uint16_t *p = locate(ld, q, shard, token_off);
  for (uint64_t i = 0; i < ld->w; i++) {
    if (inputs) inputs[i] = p[i];
    if (targets) targets[i] = p[i + 1];
  }
}

int yk_data_loader_check_split(const yk_data_loader *ld, int world, int accum, yk_diag *d) {
  if (world < 1 || accum < 1)
    return yk_errorf(d, YK_ECONFIG, "data split of %d ranks x %d micro-batches: both must be >= 1", world, accum);
  uint64_t G = yk_partition_data_step_windows(world, accum), W = ld->first[ld->nshards];
  if (G > W)
    return yk_errorf(d, YK_ECONFIG,
                     "one step reads %llu windows (%d ranks x grad_accum %d) of %lld x %lld tokens, but the data has "
                     "only %llu windows (%llu tokens in %d shard(s)); use fewer ranks, a smaller train.grad_accum, "
                     "train.micro_batch or train.seq_len, or more data",
                     (unsigned long long)G, world, accum, (long long)ld->B, (long long)ld->T, (unsigned long long)W,
                     (unsigned long long)ld->total_tokens, ld->nshards);
  return 0;
}

int yk_data_loader_next(const yk_data_loader *ld, int world, int accum, int rank, int micro, int32_t *inputs,
                        int32_t *targets) {
  if (world < 1 || accum < 1 || rank < 0 || rank >= world || micro < 0 || micro >= accum) return YK_EINVAL;
  uint64_t q = yk_partition_data_window(ld->windows_done, world, accum, rank, micro);
  yk_data_loader_window(ld, q, inputs, targets, NULL, NULL);
  return 0;
}

void yk_data_loader_advance(yk_data_loader *ld, int world, int accum) {
  ld->windows_done += yk_partition_data_step_windows(world, accum);
}

uint64_t yk_data_loader_epoch(const yk_data_loader *ld) { return ld->windows_done / ld->first[ld->nshards]; }

void yk_data_loader_get_pos(const yk_data_loader *ld, yk_data_pos *pos) {
  memset(pos, 0, sizeof *pos);
  pos->windows_done = ld->windows_done;
  pos->window_tokens = ld->w;
  pos->epoch_windows = ld->first[ld->nshards];
  pos->total_tokens = ld->total_tokens;
}

int yk_data_loader_set_pos(yk_data_loader *ld, const yk_data_pos *pos, yk_diag *d) {
  if (pos->window_tokens != ld->w)
    return yk_errorf(d, YK_EMISMATCH,
                     "data position was saved for windows of %llu tokens (micro_batch x seq_len), this run uses %llu; "
                     "resume with the same train.micro_batch and train.seq_len",
                     (unsigned long long)pos->window_tokens, (unsigned long long)ld->w);
  if (pos->epoch_windows != ld->first[ld->nshards] || pos->total_tokens != ld->total_tokens)
    return yk_errorf(d, YK_EMISMATCH,
                     "data position was saved for %llu tokens in %llu windows, the data now has %llu tokens in %llu "
                     "windows; resume with the same shards",
                     (unsigned long long)pos->total_tokens, (unsigned long long)pos->epoch_windows,
                     (unsigned long long)ld->total_tokens, (unsigned long long)ld->first[ld->nshards]);
  ld->windows_done = pos->windows_done;
  return 0;
}
