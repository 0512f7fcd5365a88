/* tools.c - offline conversion: reshard to another world size, export to
 * the llm.c GPT-2 weights format and to safetensors. */
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
                 .config_yaml = q == 0 ? yk_ckpt_reader_config_yaml(r) : NULL};
    if (!rc) rc = ck_write_plan(o->dir, &p, o->level, o->threads, o->buffered_io, NULL, d);
    for (int i = 0; i < na; i++) {
      yk_free((void *)parts[i].slice);
      parts[i].slice = NULL;
    }
  }
  if (!rc) rc = ck_commit(o->dir, step, o->world, o->keep, o->log, d);
  for (int i = 0; blob_data && i < nb; i++) free(blob_data[i]);
  free(blob_data);
  free(blobs);
  free(parts);
  free(meta);
  return rc;
}

static const yk_tensor_desc *find_tensor(const yk_ckpt_arena_info *a, const char *name) {
  for (int i = 0; i < a->ntensors; i++)
    if (!strcmp(a->tensors[i].name, name)) return &a->tensors[i];
  return NULL;
}

/* Write tensors [t0..tn) of arena a (in the given order) to f. */
static int write_tensor(yk_ckpt_reader *r, const yk_ckpt_arena_info *a, const yk_tensor_desc *t, FILE *f,
                        const char *path, yk_diag *d) {
  size_t es = yk_dtype_size(a->dtype);
  size_t step = YK_CKPT_CHUNK_ELEMS * 4ull;
  uint8_t *buf = malloc(YK_MIN((uint64_t)step, (uint64_t)t->numel + 1) * es);
  if (!buf) return yk_errorf(d, YK_ENOMEM, "out of memory");
  int rc = 0;
  for (uint64_t off = 0; !rc && off < t->numel; off += step) {
    uint64_t n = YK_MIN((uint64_t)step, t->numel - off);
    rc = yk_ckpt_reader_read(r, a->name, t->offset + off, n, buf, d);
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

/* The 16 GPT-2 tensors of arena a. Two layouts are accepted:
 *   tensor-major: one tensor per kind ("ln1w" of shape (L, C), ...), as in
 *     the weights file;
 *   layer-major: yoke's model arena, "h0.ln1w" ... "h{L-1}.ln1w" (each (C)),
 *     in which case a kind is the L per-layer tensors written one after the
 *     other (that is exactly the file's (L, ...) array).
 * For kind i, parts[i][0..nparts[i]) are the tensors in file order. */
#define GPT2_MAX_LAYERS 1024
static int gpt2_tensors(const yk_ckpt_arena_info *a, const char *const order[16], const yk_tensor_desc **parts[16],
                        int nparts[16], int64_t *L, yk_diag *d) {
  *L = 0;
  if (!find_tensor(a, "qkvw")) {
    char nm[64];
    for (;;) {
      snprintf(nm, sizeof nm, "h%lld.qkvw", (long long)*L);
      if (!find_tensor(a, nm)) break;
      if (++*L > GPT2_MAX_LAYERS) return yk_errorf(d, YK_EFORMAT, "GPT-2 export: more than %d layers", GPT2_MAX_LAYERS);
    }
    if (*L == 0)
      return yk_errorf(d, YK_ENOTFOUND, "arena '%s' has neither 'qkvw' nor 'h0.qkvw': not GPT-2 weights", a->name);
  }
  for (int i = 0; i < 16; i++) {
    int per_layer = *L > 0 && i >= 2 && i < 14;
    nparts[i] = per_layer ? (int)*L : 1;
    parts[i] = calloc((size_t)nparts[i], sizeof *parts[i]);
    if (!parts[i]) return yk_errorf(d, YK_ENOMEM, "out of memory");
    for (int l = 0; l < nparts[i]; l++) {
      char nm[64];
      if (per_layer) snprintf(nm, sizeof nm, "h%d.%s", l, order[i]);
      else snprintf(nm, sizeof nm, "%s", order[i]);
      if (!(parts[i][l] = find_tensor(a, nm)))
        return yk_errorf(d, YK_ENOTFOUND, "arena '%s' has no tensor '%s' needed by the GPT-2 format", a->name, nm);
    }
  }
  if (*L == 0) {
    if (parts[4][0]->ndim != 3)
      return yk_errorf(d, YK_EFORMAT, "GPT-2 export: qkvw must be 3-D (L, 3C, C), it has %d dimensions",
                       parts[4][0]->ndim);
    *L = parts[4][0]->shape[0];
  }
  return 0;
}

int yk_ckpt_export_gpt2(yk_ckpt_reader *r, const char *arena, const char *out_path, yk_diag *d) {
  static const char *const order[16] = {"wte",  "wpe",  "ln1w", "ln1b", "qkvw", "qkvb",    "attprojw", "attprojb",
                                        "ln2w", "ln2b", "fcw",  "fcb",  "fcprojw", "fcprojb", "lnfw", "lnfb"};
  yk_ckpt_arena_info a;
  int rc = yk_ckpt_reader_find_arena(r, arena, &a, d);
  if (rc) return rc;
  if (a.dtype != YK_DT_F32)
    return yk_errorf(d, YK_EINVAL, "arena '%s' is %s; the GPT-2 export needs the f32 master weights (--arena)", arena,
                     yk_dtype_name(a.dtype));
  const yk_tensor_desc **parts[16] = {0};
  int nparts[16] = {0};
  int64_t L = 0;
  FILE *f = NULL;
  char tmp[4200];
  if ((rc = gpt2_tensors(&a, order, parts, nparts, &L, d))) goto out;
  if (parts[0][0]->ndim != 2 || parts[1][0]->ndim != 2) {
    rc = yk_errorf(d, YK_EFORMAT, "GPT-2 export: wte and wpe must be 2-D");
    goto out;
  }
  int64_t Vp = parts[0][0]->shape[0], C = parts[0][0]->shape[1], maxT = parts[1][0]->shape[0];
  json_t *m = yk_ckpt_reader_model_json(r) ? json_loads(yk_ckpt_reader_model_json(r), 0, NULL) : NULL;
  int64_t V = json_integer_value(json_object_get(m, "vocab_size"));
  int64_t NH = json_integer_value(json_object_get(m, "heads"));
  json_decref(m);
  if (V <= 0 || NH <= 0 || V > Vp) {
    rc = yk_errorf(d, YK_EFORMAT, "GPT-2 export: the manifest's model section needs vocab_size (<= %lld) and heads; "
                   "got %lld and %lld", (long long)Vp, (long long)V, (long long)NH);
    goto out;
  }
  const int64_t want[16] = {Vp * C, maxT * C, L * C, L * C, L * 3 * C * C, L * 3 * C, L * C * C, L * C,
                            L * C,  L * C,    L * 4 * C * C, L * 4 * C, L * C * 4 * C, L * C, C, C};
  for (int i = 0; i < 16; i++) {
    int64_t have = 0;
    for (int l = 0; l < nparts[i]; l++) have += (int64_t)parts[i][l]->numel;
    if (have != want[i]) {
      rc = yk_errorf(d, YK_EFORMAT, "GPT-2 export: tensor '%s' has %lld elements, expected %lld for L=%lld C=%lld "
                     "Vp=%lld maxT=%lld", order[i], (long long)have, (long long)want[i], (long long)L, (long long)C,
                     (long long)Vp, (long long)maxT);
      goto out;
    }
  }
  snprintf(tmp, sizeof tmp, "%s.tmp", out_path);
  f = fopen(tmp, "wbe");
  if (!f) {
    rc = yk_errorf_sys(d, YK_EIO, "cannot create '%s'", tmp);
    goto out;
  }
  int32_t hdr[256] = {0};
  hdr[0] = 20240326;
  hdr[1] = 3;
  hdr[2] = (int32_t)maxT;
  hdr[3] = (int32_t)V;
  hdr[4] = (int32_t)L;
  hdr[5] = (int32_t)NH;
  hdr[6] = (int32_t)C;
  hdr[7] = (int32_t)Vp;
  if (fwrite(hdr, sizeof hdr, 1, f) != 1) rc = yk_errorf_sys(d, YK_EIO, "cannot write '%s'", tmp);
  for (int i = 0; !rc && i < 16; i++)
    for (int l = 0; !rc && l < nparts[i]; l++) rc = write_tensor(r, &a, parts[i][l], f, tmp, d);
  rc = finish_file(f, tmp, out_path, rc, d);
out:
  for (int i = 0; i < 16; i++) free(parts[i]);
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

int yk_ckpt_export_safetensors(yk_ckpt_reader *r, const char *arena, const char *out_path, yk_diag *d) {
  yk_ckpt_arena_info a;
  int rc = yk_ckpt_reader_find_arena(r, arena, &a, d);
  if (rc) return rc;
  const char *dt = st_dtype(a.dtype);
  if (!dt) return yk_errorf(d, YK_EUNSUPPORTED, "arena '%s': dtype %s has no safetensors name", arena,
                            yk_dtype_name(a.dtype));
  if (!a.ntensors) return yk_errorf(d, YK_EINVAL, "arena '%s' has no tensor table to export", arena);
  json_t *h = json_object();
  char stepbuf[32];
  snprintf(stepbuf, sizeof stepbuf, "%lld", (long long)yk_ckpt_reader_step(r));
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
  for (int i = 0; !rc && i < a.ntensors; i++) rc = write_tensor(r, &a, &a.tensors[i], f, tmp, d);
  return finish_file(f, tmp, out_path, rc, d);
}
