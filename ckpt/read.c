/* read.c - the reader: the manifest's tables, any element range of any
 * arena at any world size (checksummed), verification and restore. The file
 * layout it reads is in layout.c. */
#define _GNU_SOURCE
#include "ckpt_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

/* ---- reader ---- */

typedef struct {
  int shard;
  int tensor; /* index in the arena table or -1 */
  uint64_t off, n, file_off, bytes, raw_sum, sum;
} rchunk;

typedef struct {
  char name[48];
  yk_dtype dtype;
  uint64_t numel;
  yk_tensor_desc *tensors;
  int ntensors;
  rchunk *chunks;
  int nchunks;
} rarena;

typedef struct {
  char file[64];
  char path[4200];
  uint64_t bytes, sum;
  int fd;
  int dfd;  /* the same file opened O_DIRECT, -1 if the filesystem has no O_DIRECT */
  void *map; /* read-only mapping of the file (only to ask mincore what is cached), NULL if none */
} rshard;

typedef struct {
  char name[64];
  int rank, shard;
  uint64_t file_off, bytes, sum;
} rblob;

struct yk_ckpt_reader {
  char dir[4096];
  char *text;
  json_t *m;
  char *model_json;
  const char *config_yaml;
  int64_t step;
  int world;
  yk_layout layout; /* the training layout it was saved at (dp = world without one) */
  int sequence;
  rshard *shards;
  rarena *arenas;
  int narenas;
  rblob *blobs;
  int nblobs;
  int threads;
  const yk_logger *log;
};

static const char *tensor_name(const rarena *a, int t) { return t >= 0 ? a->tensors[t].name : "(between tensors)"; }

/* "tensors wte..lnfb of arena 'params'; lnfb of arena 'm'" for a shard. */
static void shard_holds(const yk_ckpt_reader *r, int shard, char *buf, size_t cap) {
  size_t len = 0;
  buf[0] = 0;
  for (int i = 0; i < r->narenas && len + 1 < cap; i++) {
    const rarena *a = &r->arenas[i];
    int first = -1, last = -1;
    for (int k = 0; k < a->nchunks; k++)
      if (a->chunks[k].shard == shard && a->chunks[k].tensor >= 0) {
        if (first < 0) first = a->chunks[k].tensor;
        last = a->chunks[k].tensor;
      }
    if (first < 0) continue;
    if (first == last)
      len += (size_t)snprintf(buf + len, cap - len, "%stensor %s of arena '%s'", len ? "; " : "",
                              a->tensors[first].name, a->name);
    else
      len += (size_t)snprintf(buf + len, cap - len, "%stensors %s..%s of arena '%s'", len ? "; " : "",
                              a->tensors[first].name, a->tensors[last].name, a->name);
  }
  if (!buf[0]) snprintf(buf, cap, "no named tensors");
}

void yk_ckpt_reader_close(yk_ckpt_reader *r) {
  if (!r) return;
  for (int i = 0; r->shards && i < r->world; i++)
  {
    if (r->shards[i].fd >= 0) close(r->shards[i].fd);
    if (r->shards[i].dfd >= 0) close(r->shards[i].dfd);
    if (r->shards[i].map) munmap(r->shards[i].map, r->shards[i].bytes);
  }
  for (int i = 0; i < r->narenas; i++) {
    free(r->arenas[i].tensors);
    free(r->arenas[i].chunks);
  }
  free(r->arenas);
  free(r->shards);
  free(r->blobs);
  free(r->model_json);
  json_decref(r->m);
  free(r->text);
  free(r);
}

static int jint(json_t *o, const char *k, uint64_t *v) {
  json_t *x = json_object_get(o, k);
  if (!json_is_integer(x) || json_integer_value(x) < 0) return -1;
  *v = (uint64_t)json_integer_value(x);
  return 0;
}

static int parse_manifest(yk_ckpt_reader *r, yk_diag *d) {
  json_t *m = r->m;
  char mp[4200];
  snprintf(mp, sizeof mp, "%s/%s", r->dir, CK_MANIFEST);
  r->step = json_integer_value(json_object_get(m, "step"));
  r->world = (int)json_integer_value(json_object_get(m, "world"));
  json_t *sh = json_object_get(m, "shards"), *ar = json_object_get(m, "arenas"), *bl = json_object_get(m, "blobs");
  if (r->world < 1 || !json_is_array(sh) || json_array_size(sh) != (size_t)r->world || !json_is_array(ar) ||
      !json_is_array(bl))
    return yk_errorf(d, YK_EFORMAT, "%s: world/shards/arenas/blobs missing or inconsistent", mp);
  r->shards = calloc((size_t)r->world, sizeof *r->shards);
  if (!r->shards) return yk_errorf(d, YK_ENOMEM, "out of memory");
  for (int i = 0; i < r->world; i++) r->shards[i].fd = r->shards[i].dfd = -1;
  size_t i;
  json_t *v;
  json_array_foreach(sh, i, v) {
    rshard *s = &r->shards[i];
    const char *f = json_string_value(json_object_get(v, "file"));
    int ok;
    s->sum = ck_hex_parse(json_string_value(json_object_get(v, "xxh3")), &ok);
    if (!f || strlen(f) >= sizeof s->file || strchr(f, '/') || jint(v, "bytes", &s->bytes) || !ok)
      return yk_errorf(d, YK_EFORMAT, "%s: shard entry %zu is malformed", mp, i);
    snprintf(s->file, sizeof s->file, "%s", f);
    snprintf(s->path, sizeof s->path, "%s/%s", r->dir, f);
  }
  r->narenas = (int)json_array_size(ar);
  r->arenas = calloc((size_t)r->narenas + 1, sizeof *r->arenas);
  if (!r->arenas) return yk_errorf(d, YK_ENOMEM, "out of memory");
  json_array_foreach(ar, i, v) {
    rarena *a = &r->arenas[i];
    const char *n = json_string_value(json_object_get(v, "name"));
    json_t *tens = json_object_get(v, "tensors"), *ch = json_object_get(v, "chunks");
    if (!n || strlen(n) >= sizeof a->name || yk_dtype_parse(json_string_value(json_object_get(v, "dtype")), &a->dtype) ||
        jint(v, "numel", &a->numel) || !json_is_array(tens) || !json_is_array(ch))
      return yk_errorf(d, YK_EFORMAT, "%s: arena entry %zu is malformed", mp, i);
    snprintf(a->name, sizeof a->name, "%s", n);
    a->ntensors = (int)json_array_size(tens);
    a->tensors = calloc((size_t)a->ntensors + 1, sizeof *a->tensors);
    a->nchunks = (int)json_array_size(ch);
    a->chunks = calloc((size_t)a->nchunks + 1, sizeof *a->chunks);
    if (!a->tensors || !a->chunks) return yk_errorf(d, YK_ENOMEM, "out of memory");
    size_t k;
    json_t *t;
    json_array_foreach(tens, k, t) {
      yk_tensor_desc *td = &a->tensors[k];
      const char *tn = json_string_value(json_object_get(t, "name"));
      uint64_t off, ne;
      json_t *shape = json_object_get(t, "shape");
      if (!tn || strlen(tn) >= sizeof td->name || jint(t, "offset", &off) || jint(t, "numel", &ne) ||
          !json_is_array(shape) || json_array_size(shape) > YK_TENSOR_MAX_DIMS)
        return yk_errorf(d, YK_EFORMAT, "%s: arena '%s' tensor %zu is malformed", mp, a->name, k);
      snprintf(td->name, sizeof td->name, "%s", tn);
      td->offset = off;
      td->numel = ne;
      td->ndim = (int)json_array_size(shape);
      for (int q = 0; q < td->ndim; q++) td->shape[q] = json_integer_value(json_array_get(shape, (size_t)q));
      td->decay = json_is_true(json_object_get(t, "decay"));
      if (ck_split_get(t, td))
        return yk_errorf(d, YK_EFORMAT, "%s: arena '%s' tensor '%s' has an unknown split kind", mp, a->name, td->name);
    }
    uint64_t next = 0;
    json_array_foreach(ch, k, t) {
      rchunk *c = &a->chunks[k];
      uint64_t shard;
      int ok1, ok2;
      c->raw_sum = ck_hex_parse(json_string_value(json_object_get(t, "raw_xxh3")), &ok1);
      c->sum = ck_hex_parse(json_string_value(json_object_get(t, "xxh3")), &ok2);
      if (jint(t, "shard", &shard) || shard >= (uint64_t)r->world || jint(t, "offset", &c->off) ||
          jint(t, "numel", &c->n) || jint(t, "file_offset", &c->file_off) || jint(t, "bytes", &c->bytes) || !ok1 ||
          !ok2 || c->n == 0 || c->n > YK_CKPT_CHUNK_ELEMS)
        return yk_errorf(d, YK_EFORMAT, "%s: arena '%s' chunk %zu is malformed", mp, a->name, k);
      c->shard = (int)shard;
      if (c->off != next)
        return yk_errorf(d, YK_EFORMAT, "%s: arena '%s' chunks leave a gap or overlap at element %llu", mp, a->name,
                         (unsigned long long)next);
      next = c->off + c->n;
      const char *tn = json_string_value(json_object_get(t, "tensor"));
      c->tensor = -1;
      for (int q = 0; tn && *tn && q < a->ntensors; q++)
        if (!strcmp(a->tensors[q].name, tn)) c->tensor = q;
      if (c->file_off + c->bytes > r->shards[c->shard].bytes)
        return yk_errorf(d, YK_EFORMAT, "%s: arena '%s' tensor '%s' chunk lies beyond the end of %s", mp, a->name,
                         tensor_name(a, c->tensor), r->shards[c->shard].file);
    }
    if (next != a->numel)
      return yk_errorf(d, YK_EFORMAT, "%s: arena '%s' chunks cover %llu of %llu elements", mp, a->name,
                       (unsigned long long)next, (unsigned long long)a->numel);
  }
  r->nblobs = (int)json_array_size(bl);
  r->blobs = calloc((size_t)r->nblobs + 1, sizeof *r->blobs);
  if (!r->blobs) return yk_errorf(d, YK_ENOMEM, "out of memory");
  json_array_foreach(bl, i, v) {
    rblob *b = &r->blobs[i];
    const char *n = json_string_value(json_object_get(v, "name"));
    uint64_t shard;
    int ok;
    b->sum = ck_hex_parse(json_string_value(json_object_get(v, "xxh3")), &ok);
    if (!n || strlen(n) >= sizeof b->name || !json_is_integer(json_object_get(v, "rank")) || jint(v, "shard", &shard) ||
        shard >= (uint64_t)r->world || jint(v, "file_offset", &b->file_off) || jint(v, "bytes", &b->bytes) || !ok)
      return yk_errorf(d, YK_EFORMAT, "%s: blob entry %zu is malformed", mp, i);
    snprintf(b->name, sizeof b->name, "%s", n);
    b->rank = (int)json_integer_value(json_object_get(v, "rank"));
    b->shard = (int)shard;
  }
  if (ck_layout_parse(json_object_get(m, "layout"), r->world, &r->layout, &r->sequence))
    return yk_errorf(d, YK_EFORMAT, "%s: the layout object is malformed", mp);
  json_t *model = json_object_get(m, "model");
  if (json_is_object(model) && json_object_size(model))
    r->model_json = json_dumps(model, JSON_COMPACT | JSON_PRESERVE_ORDER);
  r->config_yaml = json_string_value(json_object_get(m, "config_yaml"));
  if (r->config_yaml && !*r->config_yaml) r->config_yaml = NULL;
  return 0;
}

/* Streaming XXH3 of a whole file except the last 16 bytes (see format). */
static int file_checksum(int fd, uint64_t size, uint64_t *out) {
  XXH3_state_t *st = XXH3_createState();
  size_t bs = 8u << 20;
  uint8_t *buf = malloc(bs);
  if (!st || !buf) {
    free(buf);
    XXH3_freeState(st);
    return YK_ENOMEM;
  }
  XXH3_64bits_reset(st);
  uint64_t end = size >= 16 ? size - 16 : 0, pos = 0;
  int rc = 0;
  while (pos < end) {
    size_t n = (size_t)YK_MIN((uint64_t)bs, end - pos);
    if (ck_pread_all(fd, buf, n, pos)) {
      rc = YK_EIO;
      break;
    }
    XXH3_64bits_update(st, buf, n);
    pos += n;
  }
  *out = XXH3_64bits_digest(st);
  free(buf);
  XXH3_freeState(st);
  return rc;
}

static int chunk_verify_all(yk_ckpt_reader *r, int shard_only, yk_diag *d);

static int check_shards(yk_ckpt_reader *r, int full, yk_diag *d) {
  char holds[512];
  /* The O_DIRECT descriptors double the reader's open files: only when the
   * file limit leaves room for them (else every read is a plain pread). */
  struct rlimit rl;
  int want_direct = getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
                    (rlim_t)(2 * (int64_t)r->world + 256) <= rl.rlim_cur;
  for (int i = 0; i < r->world; i++) {
    rshard *s = &r->shards[i];
    shard_holds(r, i, holds, sizeof holds);
    s->fd = open(s->path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0)
      return yk_errorf_sys(d, errno == ENOENT ? YK_ENOTFOUND : YK_EIO, "shard %s is missing or unreadable (it holds %s)",
                           s->path, holds);
    struct stat sb;
    if (fstat(s->fd, &sb) != 0) return yk_errorf_sys(d, YK_EIO, "cannot stat %s", s->path);
    if ((uint64_t)sb.st_size != s->bytes)
      return yk_errorf(d, YK_ECORRUPT, "shard %s is %llu bytes, the manifest says %llu (truncated?); it holds %s",
                       s->path, (unsigned long long)sb.st_size, (unsigned long long)s->bytes, holds);
    /* For read_stored: an O_DIRECT descriptor (-1 without O_DIRECT: fine)
     * and a mapping of exactly s->bytes (unmapped with that length). */
    s->dfd = want_direct ? open(s->path, O_RDONLY | O_CLOEXEC | O_DIRECT) : -1;
    if (s->dfd >= 0 && s->bytes > 0) {
      s->map = mmap(NULL, (size_t)s->bytes, PROT_READ, MAP_SHARED, s->fd, 0);
      if (s->map == MAP_FAILED) s->map = NULL;
    }
    if (s->dfd >= 0 && !s->map) {
      close(s->dfd);
      s->dfd = -1;
    }
    uint8_t tr[CK_TRAILER_BYTES];
    uint64_t ioff, ilen, isum, fsum;
    if (ck_pread_all(s->fd, tr, sizeof tr, s->bytes - CK_TRAILER_BYTES) ||
        ck_shard_trailer_get(tr, &ioff, &ilen, &isum, &fsum) || fsum != s->sum)
      return yk_errorf(d, YK_ECORRUPT, "shard %s: trailer does not match the manifest (damaged or from another save); "
                       "it holds %s", s->path, holds);
    if (full) {
      uint64_t sum;
      if (file_checksum(s->fd, s->bytes, &sum)) return yk_errorf_sys(d, YK_EIO, "cannot read %s", s->path);
      if (sum != s->sum) {
        /* Find which chunk is damaged so the message names the tensor. */
        int rc = chunk_verify_all(r, i, d);
        if (rc) return rc;
        return yk_errorf(d, YK_ECORRUPT, "shard %s: file checksum mismatch outside the tensor data (header, blobs or "
                         "index); it holds %s", s->path, holds);
      }
    }
  }
  return 0;
}

static int open_one(const char *dir, const yk_ckpt_open_opts *o, yk_ckpt_reader **out, yk_diag *d) {
  yk_ckpt_reader *r = calloc(1, sizeof *r);
  if (!r) return yk_errorf(d, YK_ENOMEM, "out of memory");
  snprintf(r->dir, sizeof r->dir, "%s", dir);
  r->threads = ck_threads(o ? o->threads : 0);
  r->log = o ? o->log : NULL;
  int rc = ck_load_manifest(dir, &r->text, &r->m, d);
  if (!rc) rc = parse_manifest(r, d);
  if (!rc) rc = check_shards(r, o && o->verify == YK_CKPT_VERIFY_FULL, d);
  if (rc) {
    yk_ckpt_reader_close(r);
    return rc;
  }
  *out = r;
  return 0;
}

int yk_ckpt_reader_open(const char *path, const yk_ckpt_open_opts *o, yk_ckpt_reader **out, yk_diag *d) {
  *out = NULL;
  char mp[4200];
  struct stat sb;
  if (!path || !*path) return yk_errorf(d, YK_EINVAL, "no checkpoint path given");
  if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
    return yk_errorf(d, YK_ENOTFOUND, "checkpoint '%s' does not exist or is not a directory", path);
  snprintf(mp, sizeof mp, "%s/%s", path, CK_MANIFEST);
  if (stat(mp, &sb) == 0) return open_one(path, o, out, d);
  size_t pl = strlen(path);
  if (pl >= 8 && !strcmp(path + pl - 8, ".partial"))
    return yk_errorf(d, YK_ENOTFOUND, "'%s' is an incomplete save (no manifest): not a checkpoint", path);
  yk_ckpt_entry *e;
  int n;
  int rc = yk_ckpt_list(path, &e, &n, d);
  if (rc) return rc;
  int tried = 0;
  rc = YK_ENOTFOUND;
  yk_diag first = {0};
  for (int i = n - 1; i >= 0; i--) {
    if (strstr(e[i].path, ".partial")) continue;
    if (tried && !(o && o->fallback)) break;
    yk_diag di = {0};
    /* A step-N directory without a valid manifest counts as a failed
     * candidate too (the newest "checkpoint" is damaged). */
    rc = open_one(e[i].path, o, out, &di);
    if (!tried) first = di;
    tried++;
    if (!rc) {
      if (tried > 1) yk_log(o ? o->log : NULL, YK_LOG_WARN, "ckpt: fell back to %s", e[i].path);
      break;
    }
    if (o && o->fallback) yk_log(o->log, YK_LOG_WARN, "ckpt: skipping unusable checkpoint: %s", yk_diag_msg(&di, rc));
  }
  free(e);
  if (!tried) return yk_errorf(d, YK_ENOTFOUND, "no committed checkpoint in '%s'", path);
  if (rc) {
    if (d) *d = first;
    if (d && !(o && o->fallback) && strlen(d->msg) + 80 < sizeof d->msg)
      strcat(d->msg, " (use the fallback option to load the previous checkpoint)");
    return first.code ? first.code : rc;
  }
  return 0;
}

const char *yk_ckpt_reader_path(const yk_ckpt_reader *r) { return r->dir; }
int64_t yk_ckpt_reader_step(const yk_ckpt_reader *r) { return r->step; }
int yk_ckpt_reader_world(const yk_ckpt_reader *r) { return r->world; }
void yk_ckpt_reader_layout(const yk_ckpt_reader *r, yk_layout *l, int *sequence) {
  *l = r->layout;
  if (sequence) *sequence = r->sequence;
}
int yk_ckpt_reader_arena_count(const yk_ckpt_reader *r) { return r->narenas; }
const char *yk_ckpt_reader_model_json(const yk_ckpt_reader *r) { return r->model_json; }
const char *yk_ckpt_reader_config_yaml(const yk_ckpt_reader *r) { return r->config_yaml; }
const char *yk_ckpt_reader_manifest_text(const yk_ckpt_reader *r) { return r->text; }

int yk_ckpt_reader_arena(const yk_ckpt_reader *r, int i, yk_ckpt_arena_info *info) {
  if (i < 0 || i >= r->narenas) return YK_EINVAL;
  const rarena *a = &r->arenas[i];
  *info = (yk_ckpt_arena_info){a->name, a->dtype, a->numel, a->tensors, a->ntensors};
  return 0;
}

static rarena *find_arena(const yk_ckpt_reader *r, const char *name, yk_diag *d) {
  for (int i = 0; i < r->narenas; i++)
    if (!strcmp(r->arenas[i].name, name)) return &r->arenas[i];
  char list[512] = "";
  for (int i = 0; i < r->narenas; i++) {
    size_t l = strlen(list);
    snprintf(list + l, sizeof list - l, "%s%s", i ? ", " : "", r->arenas[i].name);
  }
  yk_errorf(d, YK_ENOTFOUND, "checkpoint %s has no arena '%s' (it has: %s)", r->dir, name, list);
  return NULL;
}

int yk_ckpt_reader_find_arena(const yk_ckpt_reader *r, const char *name, yk_ckpt_arena_info *info, yk_diag *d) {
  rarena *a = find_arena(r, name, d);
  if (!a) return YK_ENOTFOUND;
  if (info) *info = (yk_ckpt_arena_info){a->name, a->dtype, a->numel, a->tensors, a->ntensors};
  return 0;
}

/* Parallel chunk reads: each job decodes one chunk and copies its overlap
 * with [off, off+n) into dst (dst NULL: verify only). */
typedef struct {
  yk_ckpt_reader *r;
  rarena *a;
  int first, last; /* chunk index range [first, last) */
  int shard_only;  /* -1 all shards, else only that shard's chunks */
  uint64_t off, n;
  uint8_t *dst;
  pthread_mutex_t mu;
  int next, err;
  yk_diag *d;
} rctx;

/* Read a chunk's `len` stored bytes at file offset `off`; returns where they
 * are (inside abuf, CK_RD_ALIGN-aligned, len + 2*CK_RD_ALIGN bytes) or NULL.
 * Why: a checkpoint written with O_DIRECT is not in the page cache, and
 * reading it through the cache costs a copy into freshly allocated pages
 * (on this VM a cold load ran at ~0.4 GB/s, a third of the disk's speed).
 * So: if mincore says every page of the range is cached (a warm read, e.g.
 * a file just copied or read before), a plain read as before; otherwise the
 * aligned enclosing blocks straight from the disk with O_DIRECT (vec: one
 * byte per page of the range). A plain read also when O_DIRECT is refused.
 * (A non-blocking RWF_NOWAIT probe is no good here: on a miss it starts
 * readahead into the cache, so the data would be read from disk twice.) */
#define CK_RD_ALIGN 4096u
#define CK_READ_IO_DEPTH 8 /* disk reads in flight on a cold load (see run_read) */
static const uint8_t *read_stored(const rshard *s, uint64_t off, size_t len, uint8_t *abuf, unsigned char *vec) {
  if (s->dfd >= 0 && s->map && len) {
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    uint64_t p0 = off / pg * pg, p1 = (off + len + pg - 1) / pg * pg;
    int cached = mincore((uint8_t *)s->map + p0, (size_t)(p1 - p0), vec) == 0;
    for (uint64_t i = 0; cached && i < (p1 - p0) / pg; i++) cached = vec[i] & 1;
    if (!cached) {
      uint64_t a0 = off / CK_RD_ALIGN * CK_RD_ALIGN;
      size_t need = (size_t)(off + len - a0), want = (need + CK_RD_ALIGN - 1) / CK_RD_ALIGN * CK_RD_ALIGN, have = 0;
      while (have < need) {
        ssize_t r = pread(s->dfd, abuf + have, want - have, (off_t)(a0 + have));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        have += (size_t)r;
        if ((size_t)r % CK_RD_ALIGN) break; /* short read at the end of the file */
      }
      if (have >= need) return abuf + (off - a0);
      /* EINVAL (alignment refused) or a short file: the plain read decides */
    }
  }
  return ck_pread_all(s->fd, abuf, len, off) ? NULL : abuf;
}

/* 1 when every page of chunks [lo, last) of `a` is in the page cache (or
 * no shard can be read with O_DIRECT, so every read is a cached one). */
static int range_cached(const yk_ckpt_reader *r, const rarena *a, int lo, int last) {
  size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  unsigned char vec; /* mincore's answer for one page */
  for (int i = lo; i < last; i++) {
    const rchunk *k = &a->chunks[i];
    const rshard *s = &r->shards[k->shard];
    if (s->dfd < 0 || !s->map || !k->bytes) continue;
    /* the first and last page of each chunk: a cold file misses both */
    uint64_t pages[2] = {k->file_off / pg * pg, (k->file_off + k->bytes - 1) / pg * pg};
    for (int j = 0; j < 2; j++)
      if (mincore((uint8_t *)s->map + pages[j], pg, &vec) != 0 || !(vec & 1)) return 0;
  }
  return 1;
}

static void read_worker(void *arg, int worker) {
  (void)worker;
  rctx *c = arg;
  size_t es = yk_dtype_size(c->a->dtype);
  size_t raw_cap = (size_t)YK_CKPT_CHUNK_ELEMS * es;
  size_t comp_cap = ck_chunk_bound(raw_cap, es);
  uint8_t *abuf = aligned_alloc(CK_RD_ALIGN, (comp_cap + 2 * CK_RD_ALIGN) / CK_RD_ALIGN * CK_RD_ALIGN);
  uint8_t *raw = malloc(raw_cap), *scratch = malloc(raw_cap);
  const uint8_t *comp = abuf;
  unsigned char *vec = malloc(comp_cap / 4096 + 8); /* mincore: one byte per page (pages >= 4 KiB) */
  void *z = ck_dctx_new();
  for (;;) {
    pthread_mutex_lock(&c->mu);
    if (!abuf || !raw || !scratch || !z || !vec) {
      if (!c->err) c->err = yk_errorf(c->d, YK_ENOMEM, "out of memory for read buffers");
    }
    int i = c->next++;
    int stop = c->err || i >= c->last;
    pthread_mutex_unlock(&c->mu);
    if (stop) break;
    const rchunk *k = &c->a->chunks[i];
    if (c->shard_only >= 0 && k->shard != c->shard_only) continue;
    const rshard *s = &c->r->shards[k->shard];
    yk_diag e = {0};
    int rc = 0;
    if (k->bytes > comp_cap) {
      rc = yk_errorf(&e, YK_ECORRUPT, "%s: chunk of tensor '%s' (arena '%s') claims %llu bytes", s->path,
                     tensor_name(c->a, k->tensor), c->a->name, (unsigned long long)k->bytes);
    } else if (!(comp = read_stored(s, k->file_off, k->bytes, abuf, vec))) {
      rc = yk_errorf(&e, YK_ECORRUPT, "%s: cannot read tensor '%s' of arena '%s' at offset %llu (truncated?)", s->path,
                     tensor_name(c->a, k->tensor), c->a->name, (unsigned long long)k->file_off);
    } else if (XXH3_64bits(comp, k->bytes) != k->sum) {
      rc = yk_errorf(&e, YK_ECORRUPT,
                     "%s: checksum mismatch in tensor '%s' of arena '%s' (elements %llu..%llu, file offset %llu)",
                     s->path, tensor_name(c->a, k->tensor), c->a->name, (unsigned long long)k->off,
                     (unsigned long long)(k->off + k->n), (unsigned long long)k->file_off);
    } else {
      /* A chunk wholly inside the range decodes straight into dst. */
      int direct = c->dst && k->off >= c->off && k->off + k->n <= c->off + c->n;
      uint8_t *out = direct ? c->dst + (k->off - c->off) * es : raw;
      if (ck_chunk_decode(comp, k->bytes, k->n, es, z, scratch, out) || XXH3_64bits(out, k->n * es) != k->raw_sum) {
        rc = yk_errorf(&e, YK_ECORRUPT, "%s: tensor '%s' of arena '%s' (elements %llu..%llu) decodes to wrong data",
                       s->path, tensor_name(c->a, k->tensor), c->a->name, (unsigned long long)k->off,
                       (unsigned long long)(k->off + k->n));
      } else if (c->dst && !direct) {
        uint64_t lo = YK_MAX(k->off, c->off), hi = YK_MIN(k->off + k->n, c->off + c->n);
        memcpy(c->dst + (lo - c->off) * es, raw + (lo - k->off) * es, (hi - lo) * es);
      }
    }
    if (rc) {
      pthread_mutex_lock(&c->mu);
      if (!c->err) {
        c->err = rc;
        if (c->d) *c->d = e;
      }
      pthread_mutex_unlock(&c->mu);
    }
  }
  free(abuf);
  free(vec);
  free(raw);
  free(scratch);
  ck_dctx_free(z);
}

static int run_read(yk_ckpt_reader *r, rarena *a, uint64_t off, uint64_t n, void *dst, int shard_only, yk_diag *d) {
  /* chunks are sorted and contiguous: binary search the first overlap */
  int lo = 0, hi = a->nchunks;
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (a->chunks[mid].off + a->chunks[mid].n <= off) lo = mid + 1;
    else hi = mid;
  }
  int last = lo;
  while (last < a->nchunks && a->chunks[last].off < off + n) last++;
  if (last == lo) return 0;
  rctx c = {.r = r, .a = a, .first = lo, .last = last, .shard_only = shard_only, .off = off, .n = n, .dst = dst,
            .next = lo, .d = d};
  pthread_mutex_init(&c.mu, NULL);
  int threads = r->threads;
  /* A read from the disk waits on it: with only `threads` workers (one
   * request each, then decoding) the queue is too shallow to reach the
   * disk's speed (on this VM's virtio disk, O_DIRECT 4 MiB reads give
   * 0.78 GB/s at depth 1 and 1.39 GB/s at depth 4; a cold `bench ckpt`
   * load went from 1.1-1.3 to 1.4-1.7 GB/s). So when part of the
   * range is not in the page cache, extra workers keep CK_READ_IO_DEPTH
   * reads in flight; decoding still only has the cores. */
  if (threads < CK_READ_IO_DEPTH && !range_cached(r, a, lo, last)) threads = CK_READ_IO_DEPTH;
  threads = YK_MIN(threads, last - lo);
  ck_run_threads(threads, read_worker, &c);
  pthread_mutex_destroy(&c.mu);
  return c.err;
}

int yk_ckpt_reader_read(yk_ckpt_reader *r, const char *arena, uint64_t off, uint64_t n, void *dst, yk_diag *d) {
  rarena *a = find_arena(r, arena, d);
  if (!a) return YK_ENOTFOUND;
  if (off > a->numel || n > a->numel - off)
    return yk_errorf(d, YK_EINVAL, "range [%llu, +%llu) is outside arena '%s' of %llu elements",
                     (unsigned long long)off, (unsigned long long)n, arena, (unsigned long long)a->numel);
  if (!n) return 0;
  return run_read(r, a, off, n, dst, -1, d);
}

int yk_ckpt_reader_read_tensor(yk_ckpt_reader *r, const char *arena, const char *tensor, void *dst, yk_diag *d) {
  rarena *a = find_arena(r, arena, d);
  if (!a) return YK_ENOTFOUND;
  for (int i = 0; i < a->ntensors; i++)
    if (!strcmp(a->tensors[i].name, tensor))
      return yk_ckpt_reader_read(r, arena, a->tensors[i].offset, a->tensors[i].numel, dst, d);
  return yk_errorf(d, YK_ENOTFOUND, "arena '%s' of %s has no tensor '%s'", arena, r->dir, tensor);
}

static int read_blob(yk_ckpt_reader *r, const rblob *b, void **data, size_t *len, yk_diag *d) {
  const rshard *s = &r->shards[b->shard];
  uint8_t *buf = malloc(b->bytes + 1);
  if (!buf) return yk_errorf(d, YK_ENOMEM, "out of memory for blob '%s'", b->name);
  if (b->file_off + b->bytes > s->bytes || ck_pread_all(s->fd, buf, b->bytes, b->file_off)) {
    free(buf);
    return yk_errorf(d, YK_ECORRUPT, "%s: cannot read blob '%s' (truncated?)", s->path, b->name);
  }
  if (XXH3_64bits(buf, b->bytes) != b->sum) {
    free(buf);
    return yk_errorf(d, YK_ECORRUPT, "%s: checksum mismatch in blob '%s'", s->path, b->name);
  }
  buf[b->bytes] = 0;
  if (data) *data = buf;
  else free(buf);
  if (len) *len = b->bytes;
  return 0;
}

int yk_ckpt_reader_blob(yk_ckpt_reader *r, const char *name, int rank, void **data, size_t *len, yk_diag *d) {
  for (int i = 0; i < r->nblobs; i++)
    if (!strcmp(r->blobs[i].name, name) && r->blobs[i].rank == (rank < 0 ? -1 : rank))
      return read_blob(r, &r->blobs[i], data, len, d);
  if (rank >= 0)
    return yk_errorf(d, YK_ENOTFOUND, "checkpoint %s has no per-rank blob '%s' for rank %d (written by %d ranks)",
                     r->dir, name, rank, r->world);
  return yk_errorf(d, YK_ENOTFOUND, "checkpoint %s has no blob '%s'", r->dir, name);
}

int yk_ckpt_reader_blob_count(const yk_ckpt_reader *r) { return r->nblobs; }

int yk_ckpt_reader_blob_info(const yk_ckpt_reader *r, int i, const char **name, int *rank, uint64_t *bytes) {
  if (i < 0 || i >= r->nblobs) return YK_EINVAL;
  if (name) *name = r->blobs[i].name;
  if (rank) *rank = r->blobs[i].rank;
  if (bytes) *bytes = r->blobs[i].bytes;
  return 0;
}

static int chunk_verify_all(yk_ckpt_reader *r, int shard_only, yk_diag *d) {
  for (int i = 0; i < r->narenas; i++) {
    int rc = run_read(r, &r->arenas[i], 0, r->arenas[i].numel, NULL, shard_only, d);
    if (rc) return rc;
  }
  for (int i = 0; i < r->nblobs; i++) {
    if (shard_only >= 0 && r->blobs[i].shard != shard_only) continue;
    int rc = read_blob(r, &r->blobs[i], NULL, NULL, d);
    if (rc) return rc;
  }
  return 0;
}

int yk_ckpt_reader_verify(yk_ckpt_reader *r, yk_diag *d) {
  /* Chunks first: a damaged chunk is reported with its tensor's name. */
  int rc = chunk_verify_all(r, -1, d);
  if (rc) return rc;
  char holds[512];
  for (int i = 0; i < r->world; i++) {
    uint64_t sum;
    if (file_checksum(r->shards[i].fd, r->shards[i].bytes, &sum))
      return yk_errorf_sys(d, YK_EIO, "cannot read %s", r->shards[i].path);
    if (sum != r->shards[i].sum) {
      shard_holds(r, i, holds, sizeof holds);
      return yk_errorf(d, YK_ECORRUPT, "shard %s: file checksum mismatch outside the tensor data (header, blobs or "
                       "index); it holds %s", r->shards[i].path, holds);
    }
  }
  return 0;
}

int yk_ckpt_restore(yk_ckpt_reader *r, yk_ckpt_state *s, yk_diag *d) {
  for (int i = 0; i < s->narenas; i++) {
    ck_arena *sa = &s->arenas[i];
    rarena *a = find_arena(r, sa->name, d);
    if (!a) return YK_ENOTFOUND;
    if (a->dtype != sa->dtype || a->numel != sa->numel || a->ntensors != sa->ntensors)
      return yk_errorf(d, YK_EMISMATCH,
                       "checkpoint %s: arena '%s' is %s x %llu with %d tensors, the model has %s x %llu with %d "
                       "tensors (different model config?)",
                       r->dir, sa->name, yk_dtype_name(a->dtype), (unsigned long long)a->numel, a->ntensors,
                       yk_dtype_name(sa->dtype), (unsigned long long)sa->numel, sa->ntensors);
    for (int t = 0; t < a->ntensors; t++) {
      const yk_tensor_desc *x = &a->tensors[t], *y = &sa->tensors[t];
      if (strcmp(x->name, y->name) || x->offset != y->offset || x->numel != y->numel)
        return yk_errorf(d, YK_EMISMATCH, "checkpoint %s: arena '%s' tensor %d is '%s' [%zu,+%zu), the model has "
                         "'%s' [%zu,+%zu)", r->dir, sa->name, t, x->name, x->offset, x->numel, y->name, y->offset,
                         y->numel);
    }
    if (!sa->data)
      return yk_errorf(d, YK_EINVAL, "arena '%s' is registered with a fill function and has no memory to restore "
                       "into; read it with yk_ckpt_reader_read", sa->name);
    int rc = yk_ckpt_reader_read(r, sa->name, sa->held_lo, sa->held_len, sa->data, d);
    if (rc) return rc;
  }
  return 0;
}
