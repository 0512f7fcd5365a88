/* weights.c - the GPT-2 fp32 weights file (docs/formats.md, version 3).
 *
 * File: 256 int32 header (magic 20240326, version 3, maxT, V, L, NH, C, Vp,
 * rest 0), then fp32 tensors TENSOR-major: wte, wpe, all layers' ln1w, all
 * layers' ln1b, ..., all layers' fcprojb, lnfw, lnfb. The arena is
 * layer-major (yk_model.h), so load/save walk the file order and copy each
 * (tensor kind, layer) chunk to or from its arena place. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model_internal.h"

#define HDR_INTS 256

/* Calls fn(ctx, arena_offset, count) for each chunk in file order. */
static int walk_file_order(const yk_model_config *cfg, int (*fn)(void *ctx, size_t off, size_t n), void *ctx) {
  arena_layout lay;
  yk_model_layout_(cfg, &lay);
  int rc;
  if ((rc = fn(ctx, lay.wte, lay.wpe - lay.wte))) return rc;
  if ((rc = fn(ctx, lay.wpe, lay.layers - lay.wpe))) return rc;
  for (int k = 0; k < P_NLAYER; k++)
    for (int l = 0; l < cfg->layers; l++)
      if ((rc = fn(ctx, lay.layers + (size_t)l * lay.layer_size + lay.in_layer[k], lay.kind_numel[k]))) return rc;
  if ((rc = fn(ctx, lay.lnfw, (size_t)cfg->channels))) return rc;
  return fn(ctx, lay.lnfb, (size_t)cfg->channels);
}

typedef struct io_ctx {
  FILE *f;
  float *arena;
} io_ctx;

static int read_chunk(void *vctx, size_t off, size_t n) {
  io_ctx *c = vctx;
  return fread(c->arena + off, sizeof(float), n, c->f) == n ? 0 : YK_EIO;
}

/* Opens path, reads and checks the header and the file size. On success *f
 * is positioned after the header. */
static int open_checked(const char *path, FILE **fp, yk_model_config *cfg, yk_diag *d) {
  *fp = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return yk_errorf_sys(d, YK_EIO, "cannot open weights file %s", path);
  int32_t h[HDR_INTS];
  struct stat st;
  if (fstat(fileno(f), &st) != 0) {
    fclose(f);
    return yk_errorf_sys(d, YK_EIO, "cannot stat weights file %s", path);
  }
  if (fread(h, sizeof(int32_t), HDR_INTS, f) != HDR_INTS) {
    fclose(f);
    return yk_errorf(d, YK_EFORMAT, "weights file %s: %lld bytes is shorter than the %d-byte header; the file is truncated",
                     path, (long long)st.st_size, HDR_INTS * 4);
  }
  int rc = 0;
  if (h[0] != YK_WEIGHTS_MAGIC)
    rc = yk_errorf(d, YK_EFORMAT, "weights file %s: magic %d, expected %d (not a GPT-2 fp32 weights file)", path, h[0],
                   YK_WEIGHTS_MAGIC);
  else if (h[1] != YK_WEIGHTS_VERSION)
    rc = yk_errorf(d, YK_EFORMAT, "weights file %s: version %d, expected %d (only fp32 version 3 files are supported)",
                   path, h[1], YK_WEIGHTS_VERSION);
  if (rc) {
    fclose(f);
    return rc;
  }
  static const char *const names[] = {"maxT", "V", "L", "NH", "C", "Vp"};
  for (int i = 0; i < 6; i++)
    if (h[2 + i] <= 0) {
      fclose(f);
      return yk_errorf(d, YK_EFORMAT, "weights file %s: header field %s=%d must be positive", path, names[i], h[2 + i]);
    }
  if (h[7] < h[3] || h[7] % 128 != 0) {
    fclose(f);
    return yk_errorf(d, YK_EFORMAT, "weights file %s: header field Vp=%d must be a multiple of 128 and >= V=%d", path,
                     h[7], h[3]);
  }
  memset(cfg, 0, sizeof *cfg);
  cfg->max_seq_len = h[2];
  cfg->vocab_size = h[3];
  cfg->layers = h[4];
  cfg->heads = h[5];
  cfg->channels = h[6];
  cfg->padded_vocab_size = h[7];
  yk_diag sub = {0};
  if (yk_model_config_finish(cfg, &sub) != 0) {
    fclose(f);
    return yk_errorf(d, YK_EFORMAT, "weights file %s: bad header: %s", path, sub.msg);
  }
  size_t want = HDR_INTS * 4 + yk_model_config_num_params(cfg) * sizeof(float);
  if ((size_t)st.st_size != want) {
    fclose(f);
    return yk_errorf(d, YK_EFORMAT,
                     "weights file %s: size %lld bytes, expected %zu for its header (maxT=%d V=%d L=%d NH=%d C=%d "
                     "Vp=%d); the file is %s",
                     path, (long long)st.st_size, want, h[2], h[3], h[4], h[5], h[6], h[7],
                     (size_t)st.st_size < want ? "truncated" : "too long");
  }
  *fp = f;
  return 0;
}

/* A path ending in .safetensors is written in the Hugging Face layout. */
static int is_st_path(const char *path) {
  size_t n = strlen(path);
  return n >= 12 && !strcmp(path + n - 12, ".safetensors");
}

int yk_model_weights_read_config(const char *path, yk_model_config *cfg, yk_diag *d) {
  if (ykm_st_detect(path)) return ykm_st_read_config(path, cfg, d);
  FILE *f;
  int rc = open_checked(path, &f, cfg, d);
  if (f) fclose(f);
  return rc;
}

/* The first tensor holding a NaN or an infinity, checked on load: such a file
 * (a diverged run's, a damaged copy) would otherwise train or evaluate to a
 * non-finite loss whose message blames the learning rate. */
static int check_finite(const yk_model *m, const char *path, yk_diag *d) {
  const yk_tensor_desc *t;
  int nt = yk_model_tensors(m, &t);
  for (int i = 0; i < nt; i++) {
    const float *p = m->params + t[i].offset;
    size_t bad = 0, first = 0;
    for (size_t k = 0; k < t[i].numel; k++)
      if (!isfinite(p[k]) && bad++ == 0) first = k;
    if (bad)
      return yk_errorf(d, YK_EFORMAT,
                       "weights file %s: tensor %s holds %zu non-finite value%s (the first, element %zu, is %g); "
                       "the file is damaged or from a diverged run: use another weights file",
                       path, t[i].name, bad, bad == 1 ? "" : "s", first, (double)p[first]);
  }
  return 0;
}

int yk_model_weights_load(yk_model *m, const char *path, yk_diag *d) {
  FILE *f = NULL;
  yk_model_config fc;
  int st = ykm_st_detect(path);
  int rc = st ? ykm_st_read_config(path, &fc, d) : open_checked(path, &f, &fc, d);
  if (rc) return rc;
  const yk_model_config *mc = &m->cfg;
  struct {
    const char *file_name, *cfg_name;
    int file, model;
  } cmp[] = {{"maxT", "model.max_seq_len", fc.max_seq_len, mc->max_seq_len},
             {"V", "model.vocab_size", fc.vocab_size, mc->vocab_size},
             {"L", "model.layers", fc.layers, mc->layers},
             {"NH", "model.heads", fc.heads, mc->heads},
             {"C", "model.channels", fc.channels, mc->channels},
             {"Vp", "padded vocab", fc.padded_vocab_size, mc->padded_vocab_size}};
  for (size_t i = 0; i < YK_ARRAY_LEN(cmp); i++)
    if (cmp[i].file != cmp[i].model) {
      if (f) fclose(f);
      return yk_errorf(d, YK_ECONFIG,
                       "weights file %s: header field %s=%d but the model config has %s=%d; use a matching model "
                       "config or weights file",
                       path, cmp[i].file_name, cmp[i].file, cmp[i].cfg_name, cmp[i].model);
    }
  /* Header and size are validated above, before any parameter is touched;
   * read straight into the arena (no second copy: a 1.5B model is 6 GB). */
  /* Under tensor parallelism the file (the whole model) goes through one
   * whole arena, and this rank keeps its pieces (a pipeline stage: its
   * regions). */
  float *whole = m->params;
  if ((m->tp.size > 1 || m->staged) && !(whole = malloc(m->glay.total * sizeof(float)))) {
    if (f) fclose(f);
    return yk_errorf(d, YK_ENOMEM, "weights file %s: out of memory for the %zu weights of the whole model", path,
                     m->glay.total);
  }
  if (st) {
    rc = ykm_st_load(whole, mc, path, d);
    if (!rc && whole != m->params) rc = ykm_params_from_whole(m, whole, d);
    if (whole != m->params) free(whole);
    return rc ? rc : check_finite(m, path, d);
  }
  io_ctx c = {f, whole};
  rc = walk_file_order(mc, read_chunk, &c);
  fclose(f);
  if (!rc && whole != m->params) rc = ykm_params_from_whole(m, whole, d);
  if (whole != m->params) free(whole);
  if (rc == YK_ENOMEM) return rc;
  if (rc)
    return yk_errorf(d, YK_EIO, "weights file %s: read failed after a valid header (file changed while reading?); "
                     "the parameters are now partly loaded, load again", path);
  return check_finite(m, path, d);
}

/* Where write_chunk takes the arena from: the arena itself, or a source
 * read into buf piece by piece. */
typedef struct out_ctx {
  FILE *f;
  const float *arena;
  yk_model_params_source src;
  void *src_ctx;
  float *buf;
  size_t cap;
  yk_diag *d;
  int src_failed; /* the source's error is in d */
} out_ctx;

static int write_chunk(void *vctx, size_t off, size_t n) {
  out_ctx *c = vctx;
  if (c->arena) return fwrite(c->arena + off, sizeof(float), n, c->f) == n ? 0 : YK_EIO;
  for (size_t k = 0; k < n;) {
    size_t m = YK_MIN(n - k, c->cap);
    int rc = c->src(c->src_ctx, off + k, m, c->buf, c->d);
    if (rc) {
      c->src_failed = 1;
      return rc;
    }
    if (fwrite(c->buf, sizeof(float), m, c->f) != m) return YK_EIO;
    k += m;
  }
  return 0;
}

/* The header, then the arena in file order from c, to path.tmp; fsync and
 * rename to path. */
static int write_file(const char *path, const yk_model_config *cfg_in, out_ctx *c, yk_diag *d) {
  yk_model_config cfg = *cfg_in;
  int rc = yk_model_config_finish(&cfg, d);
  if (rc) return rc;
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
    return yk_errorf(d, YK_EINVAL, "weights path is too long: %s", path);
  FILE *f = fopen(tmp, "wb");
  if (!f) return yk_errorf_sys(d, YK_EIO, "cannot create %s", tmp);
  int32_t h[HDR_INTS] = {0};
  h[0] = YK_WEIGHTS_MAGIC;
  h[1] = YK_WEIGHTS_VERSION;
  h[2] = cfg.max_seq_len;
  h[3] = cfg.vocab_size;
  h[4] = cfg.layers;
  h[5] = cfg.heads;
  h[6] = cfg.channels;
  h[7] = cfg.padded_vocab_size;
  c->f = f;
  c->d = d;
  rc = fwrite(h, sizeof h, 1, f) == 1 ? 0 : YK_EIO;
  if (!rc) rc = walk_file_order(&cfg, write_chunk, c);
  if (!rc && fflush(f) != 0) rc = YK_EIO;
  if (!rc && fsync(fileno(f)) != 0) rc = YK_EIO;
  if (fclose(f) != 0 && !rc) rc = YK_EIO;
  if (!rc && rename(tmp, path) != 0) rc = YK_EIO;
  if (rc) {
    int e = errno;
    unlink(tmp);
    errno = e;
    if (c->src_failed) return rc;
    return yk_errorf_sys(d, YK_EIO, "writing weights file %s failed", path);
  }
  return 0;
}

int yk_model_weights_save(const yk_model *m, const char *path, yk_diag *d) {
  if (m->tp.size > 1)
    return yk_errorf(d, YK_EUNSUPPORTED, "%s: this rank holds 1/%d of the model (tensor parallelism); gather the "
                     "pieces with yk_model_tp_copy and write them with yk_model_weights_write", path, m->tp.size);
  if (m->staged)
    return yk_errorf(d, YK_EUNSUPPORTED, "%s: this model holds one pipeline stage's blocks only; assemble the stages "
                     "with yk_model_stage_copy and write them with yk_model_weights_write", path);
  return yk_model_weights_write(path, &m->cfg, m->params, d);
}

int yk_model_weights_write(const char *path, const yk_model_config *cfg, const float *params, yk_diag *d) {
  if (is_st_path(path)) return ykm_st_write(path, cfg, params, d);
  out_ctx c = {.arena = params};
  return write_file(path, cfg, &c, d);
}

int yk_model_weights_write_from(const char *path, const yk_model_config *cfg, yk_model_params_source src, void *ctx,
                                yk_diag *d) {
  if (is_st_path(path)) { /* the transposes need whole tensors: gather the arena first */
    yk_model_config c = *cfg;
    int crc = yk_model_config_finish(&c, d);
    if (crc) return crc;
    size_t n = yk_model_config_num_params(&c), k = 0;
    float *all = malloc(n * sizeof *all);
    int rc = all ? 0 : yk_errorf(d, YK_ENOMEM, "out of memory for the %zu-parameter arena", n);
    for (; !rc && k < n; k += 1u << 20) rc = src(ctx, k, YK_MIN(n - k, (size_t)1 << 20), all + k, d);
    if (!rc) rc = ykm_st_write(path, &c, all, d);
    free(all);
    return rc;
  }
  out_ctx c = {.src = src, .src_ctx = ctx, .cap = 1u << 20};
  if (!(c.buf = malloc(c.cap * sizeof(float)))) return yk_errorf(d, YK_ENOMEM, "out of memory for the write buffer");
  int rc = write_file(path, cfg, &c, d);
  free(c.buf);
  return rc;
}
