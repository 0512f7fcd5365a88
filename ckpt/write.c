/* write.c - shard files (parallel compression, ordered write, checksums),
 * the commit (manifest last, atomic rename, keep-K rotation) and the
 * asynchronous writer thread. Format: docs/checkpoint-format.md. */
#define _GNU_SOURCE
#include "ckpt_internal.h"
#include "yk_partition.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

int ck_fsync_dir(const char *dir, yk_diag *d) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return yk_errorf_sys(d, YK_EIO, "cannot open directory '%s' to fsync it", dir);
  int rc = fsync(fd);
  close(fd);
  if (rc != 0) return yk_errorf_sys(d, YK_EIO, "cannot fsync directory '%s'", dir);
  return 0;
}

/* ---- shard output: O_DIRECT through an aligned staging buffer ----
 *
 * Why: on this class of machine (virtio disk, VM memory) a buffered write()
 * costs more CPU than the whole codec: copying 1.4 GB into fresh page-cache
 * pages (copy_folio_from_iter + clear_page) was ~24% of a save's samples, and
 * the final fsync then waits for write-back that started late. With O_DIRECT
 * the disk DMAs from one small, already-faulted buffer: the payloads are
 * copied into it (hot in cache, ~10 GB/s) and written in CK_STAGE_BYTES
 * blocks at aligned offsets. The file layout is unchanged: the last partial
 * block is padded with zeros and the file is then truncated to its exact
 * size. Filesystems without O_DIRECT (tmpfs) or that reject an aligned
 * direct write (EINVAL) fall back to ordinary buffered writes. Durability is
 * the same in both modes: the caller still fsyncs the file (device cache
 * flush + size metadata) and the directory. */
#define CK_DIO_ALIGN 4096u
#define CK_STAGE_BYTES (8u << 20)

/* Big per-save buffers (staging, chunk slots, scratch: ~50 MB per save) in
 * transparent huge pages where the kernel allows them (THP "madvise"
 * mode): fewer page faults on first touch, and O_DIRECT pins 4 pages of 2
 * MiB per staging write instead of 2048 of 4 KiB (gup was ~2.4% of a
 * save's samples). */
#define CK_HUGE (2u << 20)
static void *big_alloc(size_t n) {
  size_t r = (n + CK_HUGE - 1) / CK_HUGE * CK_HUGE;
  void *p = aligned_alloc(CK_HUGE, r);
  if (p) madvise(p, r, MADV_HUGEPAGE);
  return p;
}

typedef struct {
  int fd;
  int direct;      /* O_DIRECT in effect: stage and write aligned blocks */
  uint8_t *buf;    /* CK_STAGE_BYTES, CK_DIO_ALIGN-aligned (direct mode) */
  size_t fill;     /* staged bytes not yet written */
  uint64_t done;   /* file offset of buf[0] = bytes already written */
  XXH3_state_t *sum; /* if not NULL, every byte passed to out_write is added (the file checksum) */
} ck_out;

static int pwrite_all(int fd, const uint8_t *p, size_t len, uint64_t off) {
  while (len) {
    ssize_t w = pwrite(fd, p, len > (1u << 30) ? (1u << 30) : len, (off_t)off);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (w == 0) {
      errno = EIO;
      return -1;
    }
    p += w;
    off += (uint64_t)w;
    len -= (size_t)w;
  }
  return 0;
}

/* Write the first n staged bytes at out->done (n is a multiple of the
 * alignment unless this is a buffered write). A direct write the filesystem
 * refuses with EINVAL is retried buffered, and the file stays buffered. */
static int out_flush(ck_out *o, size_t n) {
  if (!n) return 0;
  int rc = pwrite_all(o->fd, o->buf, n, o->done);
  if (rc && errno == EINVAL && o->direct) {
    int fl = fcntl(o->fd, F_GETFL);
    if (fl >= 0 && fcntl(o->fd, F_SETFL, fl & ~O_DIRECT) == 0) {
      o->direct = 0;
      rc = pwrite_all(o->fd, o->buf, n, o->done);
    }
  }
  if (!rc) o->done += n;
  return rc;
}

static int out_open(ck_out *o, const char *path, int buffered) {
  memset(o, 0, sizeof *o);
  o->buf = big_alloc(CK_STAGE_BYTES); /* CK_DIO_ALIGN-aligned too */
  if (!o->buf) {
    errno = ENOMEM;
    return -1;
  }
  o->fd = buffered ? -1 : open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT, 0644);
  if (o->fd >= 0) {
    o->direct = 1;
  } else if (buffered || errno == EINVAL) { /* asked for, or no O_DIRECT on this filesystem */
    o->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  }
  if (o->fd < 0) {
    free(o->buf);
    o->buf = NULL;
    return -1;
  }
  return 0;
}

/* Pieces of out_write's copy into the staging buffer: each is hashed right
 * after the copy, while it is in L2, instead of reading the payload from
 * memory a second time for the file checksum. */
#define CK_HASH_PIECE (256u << 10)

static int out_write(ck_out *o, const void *data, size_t len) {
  const uint8_t *p = data;
  if (!o->direct) {
    if (o->sum) XXH3_64bits_update(o->sum, p, len);
    if (o->fill) { /* staged bytes from before a fallback go first */
      if (out_flush(o, o->fill)) return -1;
      o->fill = 0;
    }
    if (pwrite_all(o->fd, p, len, o->done)) return -1;
    o->done += len;
    return 0;
  }
  while (len) {
    size_t k = CK_STAGE_BYTES - o->fill < len ? CK_STAGE_BYTES - o->fill : len;
    if (k > CK_HASH_PIECE) k = CK_HASH_PIECE;
    memcpy(o->buf + o->fill, p, k);
    if (o->sum) XXH3_64bits_update(o->sum, o->buf + o->fill, k);
    o->fill += k;
    p += k;
    len -= k;
    if (o->fill == CK_STAGE_BYTES) {
      if (out_flush(o, CK_STAGE_BYTES)) return -1;
      o->fill = 0;
      if (!o->direct) return out_write(o, p, len);
    }
  }
  return 0;
}

/* Write what is staged; in direct mode the last block is zero-padded to the
 * alignment and the file truncated back to its exact size. */
static int out_finish(ck_out *o) {
  if (!o->fill) return 0;
  uint64_t size = o->done + o->fill;
  if (!o->direct) {
    if (out_flush(o, o->fill)) return -1;
    o->fill = 0;
    return 0;
  }
  size_t n = (o->fill + CK_DIO_ALIGN - 1) / CK_DIO_ALIGN * CK_DIO_ALIGN;
  memset(o->buf + o->fill, 0, n - o->fill);
  if (out_flush(o, n)) return -1;
  o->fill = 0;
  if (o->done != size && ftruncate(o->fd, (off_t)size) != 0) return -1;
  o->done = size;
  return 0;
}

static void out_close_buf(ck_out *o) {
  free(o->buf);
  o->buf = NULL;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)ftw;
  return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static int rm_rf(const char *path) { return nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

/* ---- shard writing ---- */

typedef struct {
  int part;          /* index into plan->parts */
  int tensor;        /* index into the arena's table, -1 = between tensors */
  uint64_t off, n;   /* arena element range */
  uint64_t file_off, bytes, raw_sum, sum;
} ck_chunk;

/* Cut each part's range at tensor boundaries and every YK_CKPT_CHUNK_ELEMS. */
static int plan_chunks(const ck_plan *p, ck_chunk **out, int *nout) {
  size_t cap = 64, n = 0;
  ck_chunk *c = malloc(cap * sizeof *c);
  if (!c) return YK_ENOMEM;
  for (int pi = 0; pi < p->nparts; pi++) {
    const ck_part *pt = &p->parts[pi];
    const ck_arena *a = pt->arena;
    uint64_t pos = pt->lo, end = pt->lo + pt->len;
    int ti = 0;
    while (pos < end) {
      while (ti < a->ntensors && a->tensors[ti].offset + a->tensors[ti].numel <= pos) ti++;
      uint64_t seg_end;
      int tensor;
      if (ti < a->ntensors && a->tensors[ti].offset <= pos) {
        tensor = ti;
        seg_end = a->tensors[ti].offset + a->tensors[ti].numel;
      } else {
        tensor = -1;
        seg_end = ti < a->ntensors ? a->tensors[ti].offset : a->numel;
      }
      if (seg_end > end) seg_end = end;
      if (seg_end - pos > YK_CKPT_CHUNK_ELEMS) seg_end = pos + YK_CKPT_CHUNK_ELEMS;
      if (n == cap) {
        cap *= 2;
        ck_chunk *nc = realloc(c, cap * sizeof *c);
        if (!nc) {
          free(c);
          return YK_ENOMEM;
        }
        c = nc;
      }
      c[n++] = (ck_chunk){.part = pi, .tensor = tensor, .off = pos, .n = seg_end - pos};
      pos = seg_end;
    }
  }
  *out = c;
  *nout = (int)n;
  return 0;
}

typedef struct {
  const ck_plan *p;
  ck_chunk *chunks;
  int nchunks;
  int level;
  ck_out *out;
  const char *path;
  uint64_t pos;
  pthread_mutex_t mu;
  pthread_mutex_t fill_mu; /* one fill call at a time (yk_ckpt_state_add_arena_fill) */
  pthread_cond_t cv;
  int next_claim, next_write, window;
  uint8_t **slot;
  size_t *slot_len;
  int *slot_ready;
  size_t slot_cap;
  int err;
  yk_diag *d;
} wctx;

/* Compress chunk i into its slot (claimed by the caller). Returns 0 or sets
 * w->err. Called without the lock. */
static void compress_one(wctx *w, int i, void *z, uint8_t *scratch, uint8_t **fbuf) {
  ck_chunk *c = &w->chunks[i];
  const ck_part *pt = &w->p->parts[c->part];
  size_t es = yk_dtype_size(pt->arena->dtype);
  const uint8_t *src = pt->slice ? pt->slice + (c->off - pt->lo) * es : NULL;
  int s = i % w->window;
  if (!src) {
    /* an arena that is not in memory: its fill copies this chunk out */
    yk_diag fd = {0};
    int frc = 0;
    if (!*fbuf) *fbuf = big_alloc((size_t)YK_CKPT_CHUNK_ELEMS * 8);
    if (!*fbuf) frc = yk_errorf(&fd, YK_ENOMEM, "out of memory for a chunk of arena '%s'", pt->arena->name);
    else {
      pthread_mutex_lock(&w->fill_mu);
      frc = pt->arena->fill(pt->arena->fill_ctx, c->off, c->n, *fbuf, &fd);
      pthread_mutex_unlock(&w->fill_mu);
    }
    if (frc) {
      pthread_mutex_lock(&w->mu);
      if (!w->err) w->err = yk_errorf(w->d, frc, "arena '%s' at element %llu: %s", pt->arena->name,
                                      (unsigned long long)c->off, yk_diag_msg(&fd, frc));
      c->bytes = 0;
      w->slot_len[s] = 0;
      w->slot_ready[s] = i;
      pthread_cond_broadcast(&w->cv);
      pthread_mutex_unlock(&w->mu);
      return;
    }
    src = *fbuf;
  }
  size_t len = ck_chunk_encode(src, c->n, es, w->level, z, scratch, w->slot[s], w->slot_cap, &c->raw_sum);
  if (len) c->sum = XXH3_64bits(w->slot[s], len);
  pthread_mutex_lock(&w->mu);
  if (!len && !w->err)
    w->err = yk_errorf(w->d, YK_EIO, "compression of arena '%s' chunk at element %llu failed", pt->arena->name,
                       (unsigned long long)c->off);
  c->bytes = len;
  w->slot_len[s] = len;
  w->slot_ready[s] = i;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

/* Worker 0 writes chunks in order; the others compress ahead of it, at most
 * `window` chunks. Worker 0 also compresses a chunk nobody has claimed yet,
 * so the pipeline finishes even if no helper thread could be started. */
static void writer_worker(void *arg, int worker) {
  wctx *w = arg;
  void *z = NULL;
  uint8_t *scratch = NULL, *fbuf = NULL;
  if (worker == 0) {
    for (int i = 0; i < w->nchunks; i++) {
      int s = i % w->window;
      pthread_mutex_lock(&w->mu);
      int mine = 0;
      while (!w->err && w->slot_ready[s] != i) {
        if (w->next_claim == i) {
          w->next_claim++;
          mine = 1;
          break;
        }
        pthread_cond_wait(&w->cv, &w->mu);
      }
      pthread_mutex_unlock(&w->mu);
      if (mine) {
        if (!z) z = ck_zctx_new();
        if (!scratch) scratch = big_alloc((size_t)YK_CKPT_CHUNK_ELEMS * 8);
        if (!z || !scratch) {
          pthread_mutex_lock(&w->mu);
          if (!w->err) w->err = yk_errorf(w->d, YK_ENOMEM, "out of memory for compression buffers");
          pthread_cond_broadcast(&w->cv);
          pthread_mutex_unlock(&w->mu);
          break;
        }
        compress_one(w, i, z, scratch, &fbuf);
      }
      pthread_mutex_lock(&w->mu);
      int err = w->err;
      pthread_mutex_unlock(&w->mu);
      if (err) break;
      ck_chunk *c = &w->chunks[i];
      c->file_off = w->pos;
      int rc = out_write(w->out, w->slot[s], w->slot_len[s]);
      w->pos += w->slot_len[s];
      pthread_mutex_lock(&w->mu);
      if (rc && !w->err) w->err = yk_errorf_sys(w->d, YK_EIO, "cannot write '%s'", w->path);
      w->next_write++;
      pthread_cond_broadcast(&w->cv);
      pthread_mutex_unlock(&w->mu);
      if (rc) break;
    }
    free(scratch);
    free(fbuf);
    ck_zctx_free(z);
    return;
  }
  z = ck_zctx_new();
  scratch = big_alloc((size_t)YK_CKPT_CHUNK_ELEMS * 8);
  pthread_mutex_lock(&w->mu);
  if ((!z || !scratch) && !w->err) w->err = yk_errorf(w->d, YK_ENOMEM, "out of memory for compression buffers");
  for (;;) {
    while (!w->err && w->next_claim < w->nchunks && w->next_claim >= w->next_write + w->window)
      pthread_cond_wait(&w->cv, &w->mu);
    if (w->err || w->next_claim >= w->nchunks) break;
    int i = w->next_claim++;
    pthread_mutex_unlock(&w->mu);
    compress_one(w, i, z, scratch, &fbuf);
    pthread_mutex_lock(&w->mu);
  }
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  free(scratch);
  free(fbuf);
  ck_zctx_free(z);
}

static json_t *tensor_json(const yk_tensor_desc *t) {
  json_t *shape = json_array();
  for (int k = 0; k < t->ndim; k++) json_array_append_new(shape, json_integer(t->shape[k]));
  json_t *j = json_pack("{s:s, s:I, s:I, s:o, s:b}", "name", t->name, "offset", (json_int_t)t->offset, "numel",
                        (json_int_t)t->numel, "shape", shape, "decay", t->decay);
  if (j) ck_split_put(j, t);
  return j;
}

static json_t *build_index(const ck_plan *p, const ck_chunk *chunks, int nchunks, const uint64_t *blob_off,
                           const uint64_t *blob_sum, int level) {
  json_t *ix = json_pack("{s:s, s:i, s:I, s:i, s:i, s:i, s:I}", "format", "yoke-ckpt-shard", "version",
                         YK_CKPT_FORMAT_VERSION, "step", (json_int_t)p->step, "rank", p->rank, "world", p->world,
                         "level", level, "created_ms", (json_int_t)yk_wall_ms());
  json_t *arenas = json_array();
  int ci = 0;
  for (int pi = 0; pi < p->nparts; pi++) {
    const ck_part *pt = &p->parts[pi];
    const ck_arena *a = pt->arena;
    json_t *tens = json_array();
    for (int t = 0; t < a->ntensors; t++) json_array_append_new(tens, tensor_json(&a->tensors[t]));
    json_t *cj = json_array();
    for (; ci < nchunks && chunks[ci].part == pi; ci++) {
      const ck_chunk *c = &chunks[ci];
      char h1[17], h2[17];
      ck_hex(h1, c->raw_sum);
      ck_hex(h2, c->sum);
      json_array_append_new(
          cj, json_pack("{s:s, s:I, s:I, s:I, s:I, s:s, s:s}", "tensor", c->tensor >= 0 ? a->tensors[c->tensor].name : "",
                        "offset", (json_int_t)c->off, "numel", (json_int_t)c->n, "file_offset",
                        (json_int_t)c->file_off, "bytes", (json_int_t)c->bytes, "raw_xxh3", h1, "xxh3", h2));
    }
    json_array_append_new(arenas, json_pack("{s:s, s:s, s:I, s:I, s:I, s:o, s:o}", "name", a->name, "dtype",
                                            yk_dtype_name(a->dtype), "numel", (json_int_t)a->numel, "offset",
                                            (json_int_t)pt->lo, "count", (json_int_t)pt->len, "tensors", tens,
                                            "chunks", cj));
  }
  json_object_set_new(ix, "arenas", arenas);
  json_t *blobs = json_array();
  for (int b = 0; b < p->nblobs; b++) {
    char h[17];
    ck_hex(h, blob_sum[b]);
    json_array_append_new(blobs, json_pack("{s:s, s:i, s:I, s:I, s:s}", "name", p->blobs[b].name, "rank",
                                           p->blobs[b].rank, "file_offset", (json_int_t)blob_off[b], "bytes",
                                           (json_int_t)p->blobs[b].len, "xxh3", h));
  }
  json_object_set_new(ix, "blobs", blobs);
  if (p->model_json) {
    json_t *m = json_loads(p->model_json, 0, NULL);
    if (m) json_object_set_new(ix, "model", m);
  }
  if (p->layout_json) {
    json_t *l = json_loads(p->layout_json, 0, NULL);
    if (l) json_object_set_new(ix, "layout", l);
  }
  if (p->config_yaml) json_object_set_new(ix, "config_yaml", json_string(p->config_yaml));
  return ix;
}

int ck_write_plan(const char *root, const ck_plan *p, int level, int threads, int buffered, yk_ckpt_write_stats *st,
                  yk_diag *d) {
  double t0 = yk_now_s();
  if (level < -7 || level > 22) return yk_errorf(d, YK_EINVAL, "ckpt level %d out of range -7..22", level);
  if (p->world < 1 || p->rank < 0 || p->rank >= p->world)
    return yk_errorf(d, YK_EINVAL, "rank %d of world %d is not valid", p->rank, p->world);
  if (p->step < 0) return yk_errorf(d, YK_EINVAL, "checkpoint step %lld is negative", (long long)p->step);
  char dir[4096], name[64], path[4200], tmp[4300];
  int rc = yk_mkdirs(root, d);
  if (rc) return rc;
  ck_step_dir(dir, sizeof dir, root, p->step, 1);
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) return yk_errorf_sys(d, YK_EIO, "cannot create '%s'", dir);
  ck_shard_name(name, sizeof name, p->rank, p->world);
  snprintf(path, sizeof path, "%s/%s", dir, name);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);

  ck_chunk *chunks = NULL;
  int nchunks = 0;
  if ((rc = plan_chunks(p, &chunks, &nchunks))) return yk_errorf(d, rc, "out of memory planning chunks");
  ck_out out;
  if (out_open(&out, tmp, buffered) != 0) {
    free(chunks);
    return yk_errorf_sys(d, YK_EIO, "cannot create '%s'", tmp);
  }
  int fd = out.fd;
  XXH3_state_t *fsum = XXH3_createState();
  if (!fsum) {
    close(out.fd);
    unlink(tmp);
    out_close_buf(&out);
    free(chunks);
    return yk_errorf(d, YK_ENOMEM, "out of memory");
  }
  XXH3_64bits_reset(fsum);
  out.sum = fsum;
  uint8_t hdr[CK_HEADER_BYTES];
  ck_shard_header_put(hdr, p->rank, p->world, p->step);
  rc = out_write(&out, hdr, sizeof hdr) ? yk_errorf_sys(d, YK_EIO, "cannot write '%s'", tmp) : 0;

  int nthr = ck_threads(threads);
  wctx w = {.p = p, .chunks = chunks, .nchunks = nchunks, .level = level, .out = &out, .path = tmp,
            .pos = CK_HEADER_BYTES, .window = 2 * nthr, .d = d};
  w.slot_cap = ck_chunk_bound((size_t)YK_CKPT_CHUNK_ELEMS * 8, 8);
  w.slot = calloc((size_t)w.window, sizeof *w.slot);
  w.slot_len = calloc((size_t)w.window, sizeof *w.slot_len);
  w.slot_ready = malloc((size_t)w.window * sizeof *w.slot_ready);
  if (!w.slot || !w.slot_len || !w.slot_ready) rc = rc ? rc : yk_errorf(d, YK_ENOMEM, "out of memory");
  for (int s = 0; !rc && s < w.window; s++) {
    w.slot_ready[s] = -1;
    if (!(w.slot[s] = big_alloc(w.slot_cap))) rc = yk_errorf(d, YK_ENOMEM, "out of memory for write buffers");
  }
  if (!rc && nchunks) {
    pthread_mutex_init(&w.mu, NULL);
    pthread_mutex_init(&w.fill_mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    ck_run_threads(nthr + 1, writer_worker, &w);
    pthread_mutex_destroy(&w.mu);
    pthread_mutex_destroy(&w.fill_mu);
    pthread_cond_destroy(&w.cv);
    rc = w.err;
  }
  for (int s = 0; w.slot && s < w.window; s++) free(w.slot[s]);
  free(w.slot);
  free(w.slot_len);
  free(w.slot_ready);

  uint64_t pos = w.pos;
  uint64_t *blob_off = calloc((size_t)p->nblobs + 1, sizeof *blob_off);
  uint64_t *blob_sum = calloc((size_t)p->nblobs + 1, sizeof *blob_sum);
  for (int b = 0; !rc && b < p->nblobs; b++) {
    blob_off[b] = pos;
    blob_sum[b] = XXH3_64bits(p->blobs[b].data, p->blobs[b].len);
    if (out_write(&out, p->blobs[b].data, p->blobs[b].len)) rc = yk_errorf_sys(d, YK_EIO, "cannot write '%s'", tmp);
    pos += p->blobs[b].len;
  }
  uint64_t raw = 0;
  for (int i = 0; i < p->nparts; i++) raw += p->parts[i].len * yk_dtype_size(p->parts[i].arena->dtype);
  for (int b = 0; b < p->nblobs; b++) raw += p->blobs[b].len;
  if (!rc) {
    json_t *ix = build_index(p, chunks, nchunks, blob_off, blob_sum, level);
    char *txt = json_dumps(ix, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(ix);
    if (!txt) {
      rc = yk_errorf(d, YK_ENOMEM, "out of memory writing the shard index");
    } else {
      size_t tl = strlen(txt);
      uint8_t tr[CK_TRAILER_BYTES];
      uint64_t isum = XXH3_64bits(txt, tl);
      ck_shard_trailer_put(tr, pos, tl, isum, 0);
      /* the file checksum covers bytes [0, size-16): up to tr + 24 */
      int wr = out_write(&out, txt, tl) || out_write(&out, tr, 24);
      ck_shard_trailer_put(tr, pos, tl, isum, XXH3_64bits_digest(fsum));
      out.sum = NULL;
      if (wr || out_write(&out, tr + 24, 16) || out_finish(&out))
        rc = yk_errorf_sys(d, YK_EIO, "cannot write '%s'", tmp);
      pos += tl + sizeof tr;
      free(txt);
    }
  }
  free(blob_off);
  free(blob_sum);
  free(chunks);
  XXH3_freeState(fsum);
  out_close_buf(&out);
  double ts = yk_now_s();
  if (!rc && fsync(fd) != 0) rc = yk_errorf_sys(d, YK_EIO, "cannot fsync '%s'", tmp);
  if (close(fd) != 0 && !rc) rc = yk_errorf_sys(d, YK_EIO, "cannot close '%s'", tmp);
  if (!rc && rename(tmp, path) != 0) rc = yk_errorf_sys(d, YK_EIO, "cannot rename '%s' to '%s'", tmp, path);
  if (!rc) rc = ck_fsync_dir(dir, d);
  if (rc) unlink(tmp);
  if (st) {
    st->raw_bytes = raw;
    st->file_bytes = pos;
    st->write_s = yk_now_s() - t0;
    st->sync_s = yk_now_s() - ts;
    st->direct_io = out.direct;
  }
  return rc;
}

static int build_parts(const yk_ckpt_state *s, int rank, int world, ck_part **out, yk_diag *d) {
  *out = calloc((size_t)s->narenas + 1, sizeof **out);
  if (!*out) return yk_errorf(d, YK_ENOMEM, "out of memory");
  for (int i = 0; i < s->narenas; i++) {
    const ck_arena *a = &s->arenas[i];
    ck_part *pt = &(*out)[i];
    pt->arena = a;
    ck_arena_save_range(a, rank, world, &pt->lo, &pt->len);
    int rc = ck_arena_range(a, pt->lo, pt->len, &pt->slice, d);
    if (rc) return rc;
  }
  return 0;
}

int yk_ckpt_write_shard(const yk_ckpt_opts *o, const yk_ckpt_state *s, int64_t step, yk_ckpt_write_stats *st,
                        yk_diag *d) {
  if (!o || !o->dir || !*o->dir) return yk_errorf(d, YK_EINVAL, "no checkpoint directory given (ckpt.dir)");
  if (o->world < 1 || o->rank < 0 || o->rank >= o->world)
    return yk_errorf(d, YK_EINVAL, "rank %d of world %d is not valid", o->rank, o->world);
  ck_part *parts;
  ck_blob_ref *blobs;
  int nb;
  int rc = build_parts(s, o->rank, o->world, &parts, d);
  if (rc) {
    free(parts);
    return rc;
  }
  if (ck_state_blob_refs(s, o->rank, &blobs, &nb)) {
    free(parts);
    return yk_errorf(d, YK_ENOMEM, "out of memory");
  }
  ck_plan p = {.step = step, .rank = o->rank, .world = o->world, .parts = parts, .nparts = s->narenas,
               .blobs = blobs, .nblobs = nb, .model_json = o->rank == 0 ? s->model_json : NULL,
               .layout_json = o->rank == 0 ? s->layout_json : NULL,
               .config_yaml = o->rank == 0 ? s->config_yaml : NULL};
  if (st) memset(st, 0, sizeof *st);
  rc = ck_write_plan(o->dir, &p, o->level, o->threads, o->buffered_io, st, d);
  free(parts);
  free(blobs);
  return rc;
}

void yk_ckpt_opts_default(yk_ckpt_opts *o) {
  memset(o, 0, sizeof *o);
  o->world = 1;
  o->level = 1;
  o->keep = 3;
}

void yk_ckpt_opts_from_config(yk_ckpt_opts *o, const yk_config *c, int rank, int world) {
  yk_ckpt_opts_default(o);
  o->dir = c->ckpt.dir;
  o->rank = rank;
  o->world = world;
  o->level = (int)c->ckpt.level;
  o->keep = (int)c->ckpt.keep;
}

/* ---- commit ---- */

static json_t *find_by_name(json_t *arr, const char *name) {
  size_t i;
  json_t *v;
  json_array_foreach(arr, i, v) {
    const char *n = json_string_value(json_object_get(v, "name"));
    if (n && !strcmp(n, name)) return v;
  }
  return NULL;
}

/* Render the manifest: the object's JSON text, then a last key holding the
 * XXH3-64 of every byte before that key (docs/checkpoint-format.md). */
static char *render_manifest(json_t *m, size_t *len) {
  char *body = json_dumps(m, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
  if (!body) return NULL;
  size_t bl = strlen(body);
  while (bl && body[bl - 1] != '}') bl--;
  if (!bl) {
    free(body);
    return NULL;
  }
  bl--; /* drop the closing brace; keep "\n" before it? rewrite below */
  while (bl && (body[bl - 1] == '\n' || body[bl - 1] == ' ')) bl--;
  size_t cap = bl + 128;
  char *out = malloc(cap);
  if (!out) {
    free(body);
    return NULL;
  }
  memcpy(out, body, bl);
  free(body);
  size_t n = bl;
  n += (size_t)snprintf(out + n, cap - n, ",\n ");
  char h[17];
  ck_hex(h, XXH3_64bits(out, n));
  n += (size_t)snprintf(out + n, cap - n, "%s: \"%s\"\n}\n", CK_MANIFEST_SUM_KEY, h);
  *len = n;
  return out;
}

static int cmp_entry_desc(const void *a, const void *b) {
  const yk_ckpt_entry *x = a, *y = b;
  return x->step < y->step ? 1 : x->step > y->step ? -1 : 0;
}

/* After committing `step`: delete committed checkpoints beyond `keep`
 * (never `step` itself) and partial saves of older steps (a partial save of
 * a newer step may be in progress on another rank right now). Committed checkpoints NEWER
 * than `step` belong to a run that was abandoned (training resumed from an
 * older checkpoint); they would otherwise shadow `step` as "latest", so they
 * are renamed to step-N.abandoned (no longer a checkpoint, not deleted). */
static void rotate(const char *root, int64_t step, int keep, const yk_logger *lg) {
  yk_ckpt_entry *e = NULL;
  int n = 0;
  if (yk_ckpt_list(root, &e, &n, NULL)) return;
  qsort(e, (size_t)n, sizeof *e, cmp_entry_desc);
  int kept = 1; /* the one just committed */
  for (int i = 0; i < n; i++) {
    int partial = strstr(e[i].path, ".partial") != NULL;
    int drop = 0;
    if (partial) {
      drop = e[i].step < step;
    } else if (e[i].step > step) { /* committed or damaged: either would shadow `step` */
      char aside[4200];
      snprintf(aside, sizeof aside, "%s.abandoned", e[i].path);
      if (access(aside, F_OK) == 0) snprintf(aside, sizeof aside, "%s.abandoned-%llu", e[i].path,
                                             (unsigned long long)yk_wall_ms());
      if (rename(e[i].path, aside) == 0) {
        ck_fsync_dir(root, NULL);
        yk_log(lg, YK_LOG_WARN, "ckpt: %s is newer than the checkpoint just committed (step %lld): the run that "
               "wrote it was abandoned; moved it to %s", e[i].path, (long long)step, aside);
      }
      continue;
    } else if (e[i].step != step && e[i].committed) {
      if (keep > 0 && kept >= keep) drop = 1;
      else kept++;
    }
    if (!drop) continue;
    char gone[4200];
    snprintf(gone, sizeof gone, "%s.deleting", e[i].path);
    /* Rename first so a half-deleted directory never looks like a checkpoint. */
    if (rename(e[i].path, gone) == 0) {
      ck_fsync_dir(root, NULL);
      if (rm_rf(gone) != 0) yk_log(lg, YK_LOG_WARN, "ckpt: could not fully delete '%s'", gone);
      else yk_log(lg, YK_LOG_DEBUG, "ckpt: deleted '%s'", e[i].path);
    }
  }
  free(e);
  /* Leftovers of deletions interrupted by a crash. */
  DIR *dh = opendir(root);
  if (dh) {
    struct dirent *de;
    while ((de = readdir(dh))) {
      size_t l = strlen(de->d_name);
      if (!strncmp(de->d_name, "step-", 5) && l > 9 && !strcmp(de->d_name + l - 9, ".deleting")) {
        char p[4200];
        snprintf(p, sizeof p, "%s/%s", root, de->d_name);
        rm_rf(p);
      }
    }
    closedir(dh);
  }
}

int ck_commit(const char *root, int64_t step, int world, int keep, const yk_logger *lg, yk_diag *d) {
  char dir[4096], final[4096], path[4200], name[64];
  ck_step_dir(dir, sizeof dir, root, step, 1);
  ck_step_dir(final, sizeof final, root, step, 0);
  json_t *m = json_pack("{s:s, s:i, s:I, s:i, s:s, s:I, s:s}", "format", "yoke-checkpoint", "version",
                        YK_CKPT_FORMAT_VERSION, "step", (json_int_t)step, "world", world, "partition", "even",
                        "created_ms", (json_int_t)yk_wall_ms(), "yoke_version", yk_version_string());
  json_t *shards = json_array(), *arenas = json_array(), *blobs = json_array();
  json_t *model = NULL, *config = NULL, *layout = NULL;
  int rc = 0, level = 0;
  for (int r = 0; r < world && !rc; r++) {
    ck_shard_name(name, sizeof name, r, world);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    json_t *ix = NULL;
    uint64_t size = 0, fsum = 0;
    rc = ck_read_shard_index(path, &ix, &size, &fsum, d);
    if (rc) break;
    json_int_t ist = json_integer_value(json_object_get(ix, "step"));
    int irank = (int)json_integer_value(json_object_get(ix, "rank"));
    int iworld = (int)json_integer_value(json_object_get(ix, "world"));
    if (ist != step || irank != r || iworld != world) {
      rc = yk_errorf(d, YK_EFORMAT, "%s: index says step %lld rank %d world %d, expected step %lld rank %d world %d",
                     path, (long long)ist, irank, iworld, (long long)step, r, world);
      json_decref(ix);
      break;
    }
    char h[17];
    ck_hex(h, fsum);
    json_array_append_new(shards, json_pack("{s:i, s:s, s:I, s:s}", "rank", r, "file", name, "bytes",
                                            (json_int_t)size, "xxh3", h));
    json_t *ia = json_object_get(ix, "arenas");
    if (r == 0) {
      level = (int)json_integer_value(json_object_get(ix, "level"));
      model = json_incref(json_object_get(ix, "model"));
      layout = json_incref(json_object_get(ix, "layout"));
      config = json_incref(json_object_get(ix, "config_yaml"));
    }
    /* An arena is saved by all shards or by a group of them (one tensor-
     * parallel rank's): in shard order its ranges must continue each other
     * from 0 (checked here) to numel (checked after the last shard). */
    size_t i;
    json_t *a;
    json_array_foreach(ia, i, a) {
      if (rc) break;
      const char *an = json_string_value(json_object_get(a, "name"));
      json_t *ma = find_by_name(arenas, an ? an : "");
      uint64_t numel = (uint64_t)json_integer_value(json_object_get(a, "numel"));
      uint64_t lo = (uint64_t)json_integer_value(json_object_get(a, "offset"));
      uint64_t len = (uint64_t)json_integer_value(json_object_get(a, "count"));
      if (!ma) {
        ma = json_pack("{s:O, s:O, s:O, s:O, s:[], s:[]}", "name", json_object_get(a, "name"), "dtype",
                       json_object_get(a, "dtype"), "numel", json_object_get(a, "numel"), "tensors",
                       json_object_get(a, "tensors"), "ranges", "chunks");
        json_array_append_new(arenas, ma);
      } else if (!json_equal(json_object_get(ma, "dtype"), json_object_get(a, "dtype")) ||
                 (uint64_t)json_integer_value(json_object_get(ma, "numel")) != numel ||
                 !json_equal(json_object_get(ma, "tensors"), json_object_get(a, "tensors"))) {
        rc = yk_errorf(d, YK_EFORMAT, "%s: arena '%s' differs in dtype, size or tensor table from the earlier shards' "
                       "(shards of different saves mixed)", path, an ? an : "?");
        break;
      }
      json_t *rg = json_object_get(ma, "ranges");
      json_t *last = json_array_get(rg, json_array_size(rg) ? json_array_size(rg) - 1 : 0);
      uint64_t covered = last ? (uint64_t)(json_integer_value(json_object_get(last, "offset")) +
                                           json_integer_value(json_object_get(last, "numel")))
                              : 0;
      if (lo != covered || len > numel - lo) {
        rc = yk_errorf(d, YK_EFORMAT, "%s: arena '%s' range [%llu, +%llu) does not continue the earlier shards' [0, "
                       "%llu) (shards of different saves or layouts mixed)", path, an ? an : "?",
                       (unsigned long long)lo, (unsigned long long)len, (unsigned long long)covered);
        break;
      }
      json_array_append_new(rg, json_pack("{s:i, s:I, s:I}", "shard", r, "offset", (json_int_t)lo, "numel",
                                          (json_int_t)len));
      size_t k;
      json_t *c;
      json_t *mc = json_object_get(ma, "chunks");
      json_array_foreach(json_object_get(a, "chunks"), k, c) {
        json_t *cc = json_deep_copy(c);
        json_object_set_new(cc, "shard", json_integer(r));
        json_array_append_new(mc, cc);
      }
    }
    json_array_foreach(json_object_get(ix, "blobs"), i, a) {
      json_t *bc = json_deep_copy(a);
      json_object_set_new(bc, "shard", json_integer(r));
      json_array_append_new(blobs, bc);
    }
    json_decref(ix);
  }
  size_t ai;
  json_t *ma;
  json_array_foreach(arenas, ai, ma) {
    if (rc) break;
    json_t *rg = json_object_get(ma, "ranges");
    json_t *last = json_array_get(rg, json_array_size(rg) - 1);
    json_int_t covered = json_integer_value(json_object_get(last, "offset")) + json_integer_value(json_object_get(last, "numel"));
    if (covered != json_integer_value(json_object_get(ma, "numel")))
      rc = yk_errorf(d, YK_EFORMAT, "%s: arena '%s' is saved up to element %lld of %lld: a shard of its saving group "
                     "is missing", dir, json_string_value(json_object_get(ma, "name")), (long long)covered,
                     (long long)json_integer_value(json_object_get(ma, "numel")));
  }
  if (!rc) {
    if (layout) json_object_set_new(m, "layout", layout);
    layout = NULL;
    json_object_set_new(m, "codec", json_pack("{s:s, s:i, s:s, s:i}", "name", "zstd", "level", level, "layout",
                                              "byte-planes", "chunk_elems", YK_CKPT_CHUNK_ELEMS));
    json_object_set_new(m, "model", model ? model : json_object());
    model = NULL;
    json_object_set_new(m, "config_yaml", config ? config : json_string(""));
    config = NULL;
    json_object_set_new(m, "shards", shards);
    shards = NULL;
    json_object_set_new(m, "arenas", arenas);
    arenas = NULL;
    json_object_set_new(m, "blobs", blobs);
    blobs = NULL;
    size_t len = 0;
    char *txt = render_manifest(m, &len);
    snprintf(path, sizeof path, "%s/%s", dir, CK_MANIFEST);
    if (!txt) rc = yk_errorf(d, YK_ENOMEM, "out of memory rendering the manifest");
    else rc = yk_file_write_atomic(path, txt, len, d);
    free(txt);
  }
  json_decref(m);
  json_decref(shards);
  json_decref(arenas);
  json_decref(blobs);
  json_decref(model);
  json_decref(layout);
  json_decref(config);
  if (rc) return rc;
  /* The commit point: the complete directory appears under its final name in
   * one rename (an older save of the same step is swapped out atomically). */
  struct stat sb;
  if (stat(final, &sb) == 0) {
    char gone[4200];
    snprintf(gone, sizeof gone, "%s.deleting", dir);
    if (renameat2(AT_FDCWD, dir, AT_FDCWD, final, RENAME_EXCHANGE) == 0) {
      ck_fsync_dir(root, NULL);
      if (rename(dir, gone) == 0) rm_rf(gone); /* dir now holds the old save */
    } else if (errno == EINVAL || errno == ENOSYS) {
      /* No atomic exchange on this filesystem: move the old save aside
       * first (older checkpoints stay valid meanwhile), then commit. */
      snprintf(gone, sizeof gone, "%s.deleting", final);
      if (rename(final, gone) != 0) return yk_errorf_sys(d, YK_EIO, "cannot move '%s' aside", final);
      if (rename(dir, final) != 0) return yk_errorf_sys(d, YK_EIO, "cannot rename '%s' to '%s'", dir, final);
      ck_fsync_dir(root, NULL);
      rm_rf(gone);
    } else {
      return yk_errorf_sys(d, YK_EIO, "cannot swap '%s' into '%s'", dir, final);
    }
  } else if (rename(dir, final) != 0) {
    return yk_errorf_sys(d, YK_EIO, "cannot rename '%s' to '%s'", dir, final);
  }
  if ((rc = ck_fsync_dir(root, d))) return rc;
  /* DEBUG: the caller (engine/ckpt.c) logs the one INFO line, with the commit's time. */
  yk_log(lg, YK_LOG_INFO, "ckpt: committed %s (world %d)", final, world); /* the one line per save, whichever thread commits */
  rotate(root, step, keep, lg);
  return 0;
}

int yk_ckpt_commit(const yk_ckpt_opts *o, int64_t step, yk_diag *d) {
  if (!o || !o->dir || !*o->dir) return yk_errorf(d, YK_EINVAL, "no checkpoint directory given (ckpt.dir)");
  if (o->world < 1) return yk_errorf(d, YK_EINVAL, "world size %d is not valid", o->world);
  return ck_commit(o->dir, step, o->world, o->keep, o->log, d);
}
