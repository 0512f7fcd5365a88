/* tools.c - offline conversion: reshard to another world size, export to
 * safetensors. (The GPT-2 weights format is model/'s: `yoke ckpt convert
 * --export-gpt2` in cli/ reads the arena here and writes it there.) */
#include "ckpt_internal.h"
#include "yk_partition.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int yk_ckpt_convert_reshard(yk_ckpt_reader *r, const yk_ckpt_opts *o, yk_diag *d) {
  if (!o || !o->dir || !*o->dir) return yk_errorf(d, YK_EINVAL, "no output directory given");
  if (o->world < 1 || o->world > 99999) return yk_errorf(d, YK_EINVAL, "world size %d is not valid", o->world);
  int na = yk_ckpt_reader_arena_count(r), nb = yk_ckpt_reader_blob_count(r);
  int64_t step = yk_ckpt_reader_step(r);
  ck_arena *meta = calloc((size_t)na + 1, sizeof *meta);
  ck_part *parts = calloc((size_t)na + 1, sizeof *parts);
  ck_blob_ref *blobs = calloc((size_t)nb + 1, sizeof *blobs);
  void **blob_data = calloc((size_t)nb + 1, sizeof *blob_data);
  int rc = (meta && parts && blobs && blob_data) ? 0 : yk_errorf(d, YK_ENOMEM, "out of memory");
  for (int i = 0; !rc && i < na; i++) {
    yk_ckpt_arena_info ai;
    yk_ckpt_reader_arena(r, i, &ai);
    snprintf(meta[i].name, sizeof meta[i].name, "%s", ai.name);
    meta[i].dtype = ai.dtype;
    meta[i].numel = ai.numel;
    meta[i].tensors = (yk_tensor_desc *)ai.tensors; /* borrowed, not freed here */
    meta[i].ntensors = ai.ntensors;
  }
  for (int i = 0; !rc && i < nb; i++) {
    const char *name;
    int rank;
    size_t len;
    yk_ckpt_reader_blob_info(r, i, &name, &rank, NULL);
    rc = yk_ckpt_reader_blob(r, name, rank, &blob_data[i], &len, d);
    blobs[i] = (ck_blob_ref){name, rank, blob_data[i], len};
    if (!rc && rank >= o->world)
      yk_log(o->log, YK_LOG_WARN, "ckpt convert: dropping per-rank blob '%s' of rank %d (new world %d)", name, rank,
             o->world);
  }
  /* The layout it was trained at stays (the arenas are still cut that way),
   * except that a data-parallel-only checkpoint resharded to M shards is
   * exactly what M data-parallel ranks would have saved, so it says so. */
  yk_layout lay;
  int seq;
  yk_ckpt_reader_layout(r, &lay, &seq);
  if (lay.tp == 1 && lay.pp == 1) lay.world = lay.dp = o->world;
  json_t *lj = ck_layout_json(&lay, seq);
  char *layout_json = lj ? json_dumps(lj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  json_decref(lj);
  if (!rc && !layout_json) rc = yk_errorf(d, YK_ENOMEM, "out of memory");
  for (int q = 0; !rc && q < o->world; q++) {
    for (int i = 0; !rc && i < na; i++) {
      parts[i].arena = &meta[i];
      yk_partition_even_range(meta[i].numel, o->world, q, &parts[i].lo, &parts[i].len);
      size_t bytes = parts[i].len * yk_dtype_size(meta[i].dtype);
      uint8_t *buf = yk_alloc(bytes ? bytes : 1);
      if (!buf) {
        rc = yk_errorf(d, YK_ENOMEM, "out of memory for %zu bytes of arena '%s'", bytes, meta[i].name);
        break;
      }
      parts[i].slice = buf;
      rc = yk_ckpt_reader_read(r, meta[i].name, parts[i].lo, parts[i].len, buf, d);
    }
    ck_blob_ref mine[256];
    int nm = 0;
    for (int i = 0; i < nb && nm < 256; i++)
      if ((blobs[i].rank < 0 && q == 0) || blobs[i].rank == q) mine[nm++] = blobs[i];
    ck_plan p = {.step = step, .rank = q, .world = o->world, .parts = parts, .nparts = na, .blobs = mine,
                 .nblobs = nm, .model_json = q == 0 ? yk_ckpt_reader_model_json(r) : NULL,
                 .layout_json = q == 0 ? layout_json : NULL,
                 .config_yaml = q == 0 ? yk_ckpt_reader_config_yaml(r) : NULL};
    if (!rc) rc = ck_write_plan(o->dir, &p, o->level, o->threads, o->buffered_io, NULL, d);
    for (int i = 0; i < na; i++) {
      yk_free((void *)parts[i].slice);
      parts[i].slice = NULL;
    }
  }
  if (!rc) rc = ck_commit(o->dir, step, o->world, o->keep, o->log, d);
  free(layout_json);
  for (int i = 0; blob_data && i < nb; i++) free(blob_data[i]);
  free(blob_data);
  free(blobs);
  free(parts);
  free(meta);
  return rc;
}

/* Write tensor t to f, read piece by piece through rd. */
static int write_tensor(yk_ckpt_tensor_reader rd, void *ctx, yk_dtype dt, const yk_tensor_desc *t, FILE *f,
                        const char *path, yk_diag *d) {
  size_t es = yk_dtype_size(dt);
  size_t step = YK_CKPT_CHUNK_ELEMS * 4ull;
  uint8_t *buf = malloc(YK_MIN((uint64_t)step, (uint64_t)t->numel + 1) * es);
  if (!buf) return yk_errorf(d, YK_ENOMEM, "out of memory");
  int rc = 0;
  for (uint64_t off = 0; !rc && off < t->numel; off += step) {
    uint64_t n = YK_MIN((uint64_t)step, t->numel - off);
    rc = rd(ctx, t->offset + off, n, buf, d);
    if (!rc && fwrite(buf, es, n, f) != n) rc = yk_errorf_sys(d, YK_EIO, "cannot write '%s'", path);
  }
  free(buf);
  return rc;
}

static int finish_file(FILE *f, const char *tmp, const char *path, int rc, yk_diag *d) {
  if (!rc && (fflush(f) != 0 || fsync(fileno(f)) != 0)) rc = yk_errorf_sys(d, YK_EIO, "cannot write '%s'", tmp);
  if (fclose(f) != 0 && !rc) rc = yk_errorf_sys(d, YK_EIO, "cannot write '%s'", tmp);
  if (!rc && rename(tmp, path) != 0) rc = yk_errorf_sys(d, YK_EIO, "cannot rename '%s' to '%s'", tmp, path);
  if (rc) unlink(tmp);
  return rc;
}

static const char *st_dtype(yk_dtype t) {
  switch (t) {
  case YK_DT_F32: return "F32";
  case YK_DT_F16: return "F16";
  case YK_DT_BF16: return "BF16";
  case YK_DT_I32: return "I32";
  case YK_DT_I64: return "I64";
  case YK_DT_U16: return "U16";
  case YK_DT_U8: return "U8";
  default: return NULL;
  }
}

typedef struct arena_ctx {
  yk_ckpt_reader *r;
  const char *arena;
} arena_ctx;

static int read_arena(void *ctx, uint64_t off, uint64_t n, void *dst, yk_diag *d) {
  arena_ctx *a = ctx;
  return yk_ckpt_reader_read(a->r, a->arena, off, n, dst, d);
}

int yk_ckpt_export_safetensors(yk_ckpt_reader *r, const char *arena, const char *out_path, yk_diag *d) {
  yk_ckpt_arena_info a;
  int rc = yk_ckpt_reader_find_arena(r, arena, &a, d);
  if (rc) return rc;
  if (!a.ntensors) return yk_errorf(d, YK_EINVAL, "arena '%s' has no tensor table to export", arena);
  arena_ctx ctx = {r, arena};
  return yk_ckpt_safetensors_write(out_path, arena, a.dtype, a.tensors, a.ntensors, yk_ckpt_reader_step(r),
                                   read_arena, &ctx, d);
}

int yk_ckpt_safetensors_write(const char *out_path, const char *what, yk_dtype dtype, const yk_tensor_desc *tensors,
                              int ntensors, int64_t step_no, yk_ckpt_tensor_reader rd, void *ctx, yk_diag *d) {
  int rc = 0;
  yk_ckpt_arena_info a = {.name = what, .dtype = dtype, .tensors = tensors, .ntensors = ntensors};
  const char *dt = st_dtype(a.dtype);
  if (!dt) return yk_errorf(d, YK_EUNSUPPORTED, "arena '%s': dtype %s has no safetensors name", what,
                            yk_dtype_name(a.dtype));
  json_t *h = json_object();
  char stepbuf[32];
  snprintf(stepbuf, sizeof stepbuf, "%lld", (long long)step_no);
  json_object_set_new(h, "__metadata__", json_pack("{s:s, s:s, s:s}", "format", "pt", "producer", "yoke", "step",
                                                   stepbuf));
  size_t es = yk_dtype_size(a.dtype);
  uint64_t pos = 0;
  for (int i = 0; i < a.ntensors; i++) {
    const yk_tensor_desc *t = &a.tensors[i];
    json_t *shape = json_array();
    int64_t prod = 1;
    for (int k = 0; k < t->ndim; k++) prod *= t->shape[k];
    if (t->ndim == 0 || prod != (int64_t)t->numel) {
      json_array_append_new(shape, json_integer((json_int_t)t->numel));
    } else {
      for (int k = 0; k < t->ndim; k++) json_array_append_new(shape, json_integer(t->shape[k]));
    }
    uint64_t bytes = t->numel * es;
    json_object_set_new(h, t->name, json_pack("{s:s, s:o, s:[I,I]}", "dtype", dt, "shape", shape, "data_offsets",
                                              (json_int_t)pos, (json_int_t)(pos + bytes)));
    pos += bytes;
  }
  char *txt = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(h);
  if (!txt) return yk_errorf(d, YK_ENOMEM, "out of memory");
  size_t hl = strlen(txt), padded = (hl + 7) / 8 * 8;
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", out_path);
  FILE *f = fopen(tmp, "wbe");
  if (!f) {
    free(txt);
    return yk_errorf_sys(d, YK_EIO, "cannot create '%s'", tmp);
  }
  uint8_t len8[8];
  for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
  if (fwrite(len8, 8, 1, f) != 1 || fwrite(txt, 1, hl, f) != hl) rc = yk_errorf_sys(d, YK_EIO, "cannot write '%s'", tmp);
  for (size_t i = hl; !rc && i < padded; i++)
    if (fputc(' ', f) == EOF) rc = yk_errorf_sys(d, YK_EIO, "cannot write '%s'", tmp);
  free(txt);
  /* data in table order; the host is little endian (x86-64, aarch64) */
  for (int i = 0; !rc && i < a.ntensors; i++) rc = write_tensor(rd, ctx, a.dtype, &a.tensors[i], f, tmp, d);
  return finish_file(f, tmp, out_path, rc, d);
}
