/* safetensors.c - GPT-2 weights in the Hugging Face safetensors layout
 * (docs/formats.md, "GPT-2 safetensors"), beside the llm.c weights file of
 * weights.c, which routes here: a file whose content is safetensors (u64
 * little-endian header length, then a JSON header) is read by
 * yk_model_weights_read_config/load, and a path ending in ".safetensors" is
 * written by yk_model_weights_write. HF stores every Linear as Conv1D, i.e.
 * (in, out): the transpose of our (out, in). Its wte has the real V rows; our
 * padding rows (zero, never trained) are not stored. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model_internal.h"

#define MAX_HEADER (100u << 20) /* the safetensors reference parser's limit */

/* HF names of the 12 per-layer kinds, in P_* order. */
static const char *const hf_kind[P_NLAYER] = {
    "ln_1.weight",      "ln_1.bias",      "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
    "attn.c_proj.bias", "ln_2.weight",    "ln_2.bias",          "mlp.c_fc.weight",  "mlp.c_fc.bias",
    "mlp.c_proj.weight", "mlp.c_proj.bias"};

/* Our tensor i of a config's table -> its HF name and HF shape (rows, cols;
 * cols 0 for a vector), and whether it is stored transposed. */
static void hf_of(const yk_model_config *c, const yk_tensor_desc *t, char *name, size_t cap, int64_t *rows,
                  int64_t *cols, int *transposed) {
  int l, used = 0;
  *transposed = 0;
  *cols = t->ndim == 2 ? t->shape[1] : 0;
  *rows = t->ndim == 2 ? t->shape[0] : (int64_t)t->numel;
  if (!strcmp(t->name, "wte")) {
    snprintf(name, cap, "wte.weight");
    *rows = c->vocab_size;
  } else if (!strcmp(t->name, "wpe")) {
    snprintf(name, cap, "wpe.weight");
  } else if (!strcmp(t->name, "lnfw") || !strcmp(t->name, "lnfb")) {
    snprintf(name, cap, "ln_f.%s", t->name[3] == 'w' ? "weight" : "bias");
  } else if (sscanf(t->name, "h%d.%n", &l, &used) == 1 && used) {
    static const char *const ours[P_NLAYER] = {"ln1w", "ln1b",     "qkvw", "qkvb", "attprojw", "attprojb",
                                               "ln2w", "ln2b",     "fcw",  "fcb",  "fcprojw",  "fcprojb"};
    for (int k = 0; k < P_NLAYER; k++)
      if (!strcmp(t->name + used, ours[k])) snprintf(name, cap, "h.%d.%s", l, hf_kind[k]);
    if (t->ndim == 2) {
      *transposed = 1;
      *rows = t->shape[1];
      *cols = t->shape[0];
    }
  }
}

int ykm_st_detect(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  uint8_t b[9];
  int ok = fread(b, 1, 9, f) == 9;
  fclose(f);
  uint64_t n = 0;
  for (int i = 0; ok && i < 8; i++) n |= (uint64_t)b[i] << (8 * i);
  return ok && n >= 2 && n <= MAX_HEADER && b[8] == '{';
}

/* The parsed header: JSON, where the data starts, the name prefix in use. */
typedef struct st_file {
  json_t *h;
  uint64_t data_off, size;
  const char *prefix; /* "" or "transformer." */
} st_file;

static int st_open(const char *path, st_file *s, yk_diag *d) {
  memset(s, 0, sizeof *s);
  FILE *f = fopen(path, "rb");
  if (!f) return yk_errorf_sys(d, YK_EIO, "cannot open weights file %s", path);
  struct stat sb;
  uint8_t b[8];
  uint64_t n = 0;
  int rc = 0;
  if (fstat(fileno(f), &sb) != 0 || fread(b, 1, 8, f) != 8) rc = yk_errorf_sys(d, YK_EIO, "cannot read %s", path);
  for (int i = 0; i < 8; i++) n |= (uint64_t)b[i] << (8 * i);
  char *txt = NULL;
  if (!rc && (n > MAX_HEADER || 8 + n > (uint64_t)sb.st_size))
    rc = yk_errorf(d, YK_EFORMAT, "safetensors %s: header length %llu does not fit the %lld-byte file", path,
                   (unsigned long long)n, (long long)sb.st_size);
  if (!rc && (!(txt = malloc(n)) || fread(txt, 1, n, f) != n))
    rc = yk_errorf(d, txt ? YK_EIO : YK_ENOMEM, "safetensors %s: cannot read its %llu-byte header", path,
                   (unsigned long long)n);
  fclose(f);
  json_error_t je;
  if (!rc && !(s->h = json_loadb(txt, n, 0, &je)))
    rc = yk_errorf(d, YK_EFORMAT, "safetensors %s: the header is not JSON (%s at byte %d)", path, je.text, je.position);
  free(txt);
  if (rc) return rc;
  s->data_off = 8 + n;
  s->size = (uint64_t)sb.st_size;
  s->prefix = json_object_get(s->h, "transformer.wte.weight") ? "transformer." : "";
  return 0;
}

/* Entry `name` (prefix added): its dtype element size, shape and data
 * range, all checked against the file; YK_EFORMAT naming it otherwise. */
static int st_entry(const st_file *s, const char *path, const char *name, int64_t rows, int64_t cols, size_t *es,
                    const char **dtype, uint64_t *off, yk_diag *d) {
  char full[160];
  snprintf(full, sizeof full, "%s%s", s->prefix, name);
  char want[64];
  if (cols) snprintf(want, sizeof want, "(%lld, %lld)", (long long)rows, (long long)cols);
  else snprintf(want, sizeof want, "(%lld)", (long long)rows);
  json_t *e = json_object_get(s->h, full);
  if (!e) return yk_errorf(d, YK_EFORMAT, "safetensors %s: tensor %s is missing (a GPT-2 of this shape needs it, %s)",
                           path, full, want);
  const char *dt = json_string_value(json_object_get(e, "dtype"));
  json_t *sh = json_object_get(e, "shape"), *offs = json_object_get(e, "data_offsets");
  *es = dt && !strcmp(dt, "F32") ? 4 : dt && (!strcmp(dt, "F16") || !strcmp(dt, "BF16")) ? 2 : 0;
  if (!*es)
    return yk_errorf(d, YK_EFORMAT, "safetensors %s: tensor %s has dtype %s; F32, F16 or BF16 is needed", path, full,
                     dt ? dt : "(none)");
  *dtype = dt;
  char got[64] = "(";
  size_t nd = json_array_size(sh);
  for (size_t i = 0; i < nd && strlen(got) < 40; i++)
    snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "",
             (long long)json_integer_value(json_array_get(sh, i)));
  strcat(got, ")");
  if (strcmp(got, want))
    return yk_errorf(d, YK_EFORMAT, "safetensors %s: tensor %s has shape %s, this GPT-2 needs %s", path, full, got,
                     want);
  uint64_t a = (uint64_t)json_integer_value(json_array_get(offs, 0)), b = (uint64_t)json_integer_value(json_array_get(offs, 1));
  uint64_t bytes = (uint64_t)rows * (uint64_t)(cols ? cols : 1) * *es;
  if (json_array_size(offs) != 2 || b < a || b - a != bytes || s->data_off + b > s->size)
    return yk_errorf(d, YK_EFORMAT, "safetensors %s: tensor %s: data_offsets [%llu, %llu] do not hold its %llu bytes "
                     "inside the file (truncated?)", path, full, (unsigned long long)a, (unsigned long long)b,
                     (unsigned long long)bytes);
  *off = s->data_off + a;
  return 0;
}

/* n_head is not in a HF file: our exports keep it in __metadata__; else the
 * GPT-2 preset with the same width (d12 for C=768, ...). */
static int heads_of(const st_file *s, const char *path, int C, yk_diag *d) {
  const char *nh = json_string_value(json_object_get(json_object_get(s->h, "__metadata__"), "n_head"));
  if (nh && atoi(nh) > 0) return atoi(nh);
  static const char *const presets[] = {"tiny", "small", "d6", "d12", "d24", "d36", "d48"};
  for (size_t i = 0; i < YK_ARRAY_LEN(presets); i++) {
    yk_model_config p;
    if (!yk_model_preset(presets[i], &p, NULL) && p.channels == C) return p.heads;
  }
  return yk_errorf(d, YK_EFORMAT, "safetensors %s: width C=%d matches no GPT-2 preset and the file has no n_head in "
                   "__metadata__; add \"n_head\" to its __metadata__", path, C);
}

int ykm_st_read_config(const char *path, yk_model_config *cfg, yk_diag *d) {
  st_file s;
  int rc = st_open(path, &s, d);
  if (rc) return rc;
  char k[96];
  snprintf(k, sizeof k, "%swte.weight", s.prefix);
  json_t *wte = json_object_get(json_object_get(s.h, k), "shape");
  snprintf(k, sizeof k, "%swpe.weight", s.prefix);
  json_t *wpe = json_object_get(json_object_get(s.h, k), "shape");
  memset(cfg, 0, sizeof *cfg);
  if (json_array_size(wte) != 2 || json_array_size(wpe) != 2) {
    rc = yk_errorf(d, YK_EFORMAT, "safetensors %s: no 2-D %swte.weight and %swpe.weight: not a GPT-2 in the Hugging "
                   "Face layout", path, s.prefix, s.prefix);
  } else {
    cfg->vocab_size = (int)json_integer_value(json_array_get(wte, 0));
    cfg->channels = (int)json_integer_value(json_array_get(wte, 1));
    cfg->max_seq_len = (int)json_integer_value(json_array_get(wpe, 0));
    do snprintf(k, sizeof k, "%sh.%d.ln_1.weight", s.prefix, cfg->layers);
    while (json_object_get(s.h, k) && ++cfg->layers < 100000);
    int nh = heads_of(&s, path, cfg->channels, d);
    if (nh < 0) rc = nh;
    cfg->heads = nh;
    yk_diag sub = {0};
    if (!rc && yk_model_config_finish(cfg, &sub))
      rc = yk_errorf(d, YK_EFORMAT, "safetensors %s: its shapes give no valid GPT-2: %s", path, sub.msg);
  }
  json_decref(s.h);
  return rc;
}

int ykm_st_load(float *params, const yk_model_config *c, const char *path, yk_diag *d) {
  st_file s;
  int rc = st_open(path, &s, d);
  if (rc) return rc;
  yk_tensor_desc *t = NULL;
  int nt = 0;
  if ((rc = yk_model_tensor_table(c, &t, &nt, d))) goto out;
  size_t *es = calloc((size_t)nt, sizeof *es);
  uint64_t *off = calloc((size_t)nt, sizeof *off);
  const char **dt = calloc((size_t)nt, sizeof *dt);
  if (!es || !off || !dt) rc = yk_errorf(d, YK_ENOMEM, "out of memory");
  /* every tensor checked before any parameter is written */
  for (int i = 0; !rc && i < nt; i++) {
    char name[96] = "";
    int64_t rows, cols;
    int tr;
    hf_of(c, &t[i], name, sizeof name, &rows, &cols, &tr);
    rc = st_entry(&s, path, name, rows, cols, &es[i], &dt[i], &off[i], d);
  }
  FILE *f = rc ? NULL : fopen(path, "rb");
  if (!rc && !f) rc = yk_errorf_sys(d, YK_EIO, "cannot open weights file %s", path);
  void *raw = NULL;
  float *wide = NULL;
  for (int i = 0; !rc && i < nt; i++) {
    char name[96] = "";
    int64_t rows, cols;
    int tr;
    hf_of(c, &t[i], name, sizeof name, &rows, &cols, &tr);
    size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
    free(raw);
    free(wide);
    raw = malloc(n * es[i]);
    wide = malloc(n * sizeof *wide);
    if (!raw || !wide) {
      rc = yk_errorf(d, YK_ENOMEM, "out of memory reading tensor %s", name);
      break;
    }
    if (fseeko(f, (off_t)off[i], SEEK_SET) != 0 || fread(raw, es[i], n, f) != n) {
      rc = yk_errorf(d, YK_EIO, "safetensors %s: read of tensor %s failed after a valid header; the parameters are now "
                     "partly loaded, load again", path, name);
      break;
    }
    if (es[i] == 4) memcpy(wide, raw, n * 4); /* little-endian host, as the format */
    else yk_cast_to_f32(wide, raw, !strcmp(dt[i], "F16") ? YK_DT_F16 : YK_DT_BF16, n, 1.0f, YK_ISA_AUTO);
    float *dst = params + t[i].offset;
    if (!tr) {
      memcpy(dst, wide, n * sizeof *wide);
      memset(dst + n, 0, (t[i].numel - n) * sizeof *dst); /* wte's padding rows */
    } else { /* HF (in, out) -> ours (out, in) */
      for (int64_t r = 0; r < rows; r++)
        for (int64_t q = 0; q < cols; q++) dst[q * rows + r] = wide[r * cols + q];
    }
  }
  free(raw);
  free(wide);
  if (f) fclose(f);
  free(es);
  free(off);
  free(dt);
out:
  free(t);
  json_decref(s.h);
  return rc;
}

int ykm_st_write(const char *path, const yk_model_config *cfg_in, const float *params, yk_diag *d) {
  yk_model_config c = *cfg_in;
  yk_tensor_desc *t = NULL;
  int nt = 0, rc = yk_model_tensor_table(&c, &t, &nt, d);
  if (rc) return rc;
  yk_model_config_finish(&c, NULL);
  json_t *h = json_object();
  char nh[16];
  snprintf(nh, sizeof nh, "%d", c.heads);
  json_object_set_new(h, "__metadata__", json_pack("{s:s, s:s, s:s}", "format", "pt", "producer", "yoke", "n_head", nh));
  uint64_t pos = 0;
  for (int i = 0; i < nt; i++) {
    char name[96] = "";
    int64_t rows, cols;
    int tr;
    hf_of(&c, &t[i], name, sizeof name, &rows, &cols, &tr);
    uint64_t bytes = (uint64_t)rows * (uint64_t)(cols ? cols : 1) * 4;
    json_t *shape = cols ? json_pack("[I,I]", (json_int_t)rows, (json_int_t)cols) : json_pack("[I]", (json_int_t)rows);
    json_object_set_new(h, name, json_pack("{s:s, s:o, s:[I,I]}", "dtype", "F32", "shape", shape, "data_offsets",
                                           (json_int_t)pos, (json_int_t)(pos + bytes)));
    pos += bytes;
  }
  char *txt = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(h);
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = txt ? fopen(tmp, "wb") : NULL;
  if (!txt) rc = yk_errorf(d, YK_ENOMEM, "out of memory");
  else if (!f) rc = yk_errorf_sys(d, YK_EIO, "cannot create %s", tmp);
  size_t hl = txt ? strlen(txt) : 0, padded = (hl + 7) / 8 * 8; /* data 8-byte aligned */
  uint8_t len8[8];
  for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
  int ok = !rc && fwrite(len8, 8, 1, f) == 1 && fwrite(txt, 1, hl, f) == hl;
  for (size_t i = hl; ok && i < padded; i++) ok = fputc(' ', f) != EOF;
  free(txt);
  float *buf = NULL;
  for (int i = 0; ok && i < nt; i++) {
    char name[96] = "";
    int64_t rows, cols;
    int tr;
    hf_of(&c, &t[i], name, sizeof name, &rows, &cols, &tr);
    size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
    const float *src = params + t[i].offset;
    if (tr) { /* ours (out, in) -> HF (in, out) */
      free(buf);
      if (!(buf = malloc(n * sizeof *buf))) {
        ok = 0;
        break;
      }
      for (int64_t r = 0; r < rows; r++)
        for (int64_t q = 0; q < cols; q++) buf[r * cols + q] = src[q * rows + r];
      src = buf;
    }
    ok = fwrite(src, sizeof(float), n, f) == n;
  }
  free(buf);
  free(t);
  if (f) {
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (ok && rename(tmp, path) != 0) ok = 0;
    if (!ok) {
      int e = errno;
      unlink(tmp);
      errno = e;
      rc = yk_errorf_sys(d, YK_EIO, "writing safetensors file %s failed", path);
    }
  }
  return rc;
}
