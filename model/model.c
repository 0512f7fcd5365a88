/* model.c - GPT-2 forward/backward on a yk_device: presets, arenas, init.
 * See yk_model.h for the architecture and the arena layout. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

static const char *const kind_names[P_NLAYER] = {"ln1w", "ln1b", "qkvw",    "qkvb", "attprojw", "attprojb",
                                                 "ln2w", "ln2b", "fcw",     "fcb",  "fcprojw",  "fcprojb"};
static const int kind_decay[P_NLAYER] = {0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0};

/* ---- presets ---------------------------------------------------------- */

typedef struct preset {
  const char *name;
  int L, C, NH, maxT, V;
} preset;

static const preset presets[] = {
    {"tiny", 2, 64, 4, 256, 256},       {"small", 4, 128, 4, 256, 256},     {"d6", 6, 384, 6, 1024, 50257},
    {"d12", 12, 768, 12, 1024, 50257},  {"d24", 24, 1024, 16, 1024, 50257}, {"d36", 36, 1280, 20, 1024, 50257},
    {"d48", 48, 1600, 25, 1024, 50257},
};

int yk_model_preset(const char *name, yk_model_config *out, yk_diag *d) {
  for (size_t i = 0; i < YK_ARRAY_LEN(presets); i++)
    if (name && !strcmp(name, presets[i].name)) {
      memset(out, 0, sizeof *out);
      out->layers = presets[i].L;
      out->channels = presets[i].C;
      out->heads = presets[i].NH;
      out->max_seq_len = presets[i].maxT;
      out->vocab_size = presets[i].V;
      return yk_model_config_finish(out, d);
    }
  return yk_errorf(d, YK_ECONFIG, "model.name=%s is not a known preset; use one of tiny, small, d6, d12, d24, d36, d48",
                   name ? name : "(null)");
}

int yk_model_config_finish(yk_model_config *c, yk_diag *d) {
  struct {
    const char *name;
    int v, max;
  } f[] = {{"model.layers", c->layers, 4096},
           {"model.channels", c->channels, 1 << 16},
           {"model.heads", c->heads, 1 << 16},
           {"model.max_seq_len", c->max_seq_len, 1 << 20},
           {"model.vocab_size", c->vocab_size, 1 << 24}};
  for (size_t i = 0; i < YK_ARRAY_LEN(f); i++)
    if (f[i].v <= 0 || f[i].v > f[i].max)
      return yk_errorf(d, YK_ECONFIG, "%s=%d is out of range; it must be in [1, %d]", f[i].name, f[i].v, f[i].max);
  if (c->channels % c->heads != 0)
    return yk_errorf(d, YK_ECONFIG, "model.channels=%d is not divisible by model.heads=%d; pick heads that divide channels",
                     c->channels, c->heads);
  if (c->padded_vocab_size == 0) c->padded_vocab_size = (c->vocab_size + 127) / 128 * 128;
  if (c->padded_vocab_size < c->vocab_size || c->padded_vocab_size % 128 != 0)
    return yk_errorf(d, YK_ECONFIG, "padded vocab size %d must be a multiple of 128 and >= vocab_size=%d (or 0 = derive)",
                     c->padded_vocab_size, c->vocab_size);
  return 0;
}

int yk_model_config_from(const yk_config *c, yk_model_config *out, yk_diag *d) {
  int rc = yk_model_preset(c->model.name, out, d);
  if (rc) return rc;
  if (c->model.layers) out->layers = (int)c->model.layers;
  if (c->model.channels) out->channels = (int)c->model.channels;
  if (c->model.heads) out->heads = (int)c->model.heads;
  if (c->model.max_seq_len) out->max_seq_len = (int)c->model.max_seq_len;
  if (c->model.vocab_size) out->vocab_size = (int)c->model.vocab_size;
  out->padded_vocab_size = 0; /* derive from the final vocab_size */
  return yk_model_config_finish(out, d);
}

void yk_model_layout_(const yk_model_config *cfg, arena_layout *lay) {
  size_t C = (size_t)cfg->channels, L = (size_t)cfg->layers;
  size_t n[P_NLAYER] = {C, C, 3 * C * C, 3 * C, C * C, C, C, C, 4 * C * C, 4 * C, 4 * C * C, C};
  size_t off = 0;
  for (int k = 0; k < P_NLAYER; k++) {
    lay->kind_numel[k] = n[k];
    lay->in_layer[k] = off;
    off += n[k];
  }
  lay->layer_size = off;
  lay->wte = 0;
  lay->wpe = (size_t)cfg->padded_vocab_size * C;
  lay->layers = lay->wpe + (size_t)cfg->max_seq_len * C;
  lay->lnfw = lay->layers + L * lay->layer_size;
  lay->lnfb = lay->lnfw + C;
  lay->total = lay->lnfb + C;
}

size_t yk_model_config_num_params(const yk_model_config *cfg) {
  arena_layout lay;
  yk_model_layout_(cfg, &lay);
  return lay.total;
}

double yk_model_flops_per_token(const yk_model_config *cfg, int T) {
  double L = cfg->layers, C = cfg->channels, V = cfg->vocab_size;
  double n = 12.0 * L * C * C + C * V;
  return 6.0 * n + 12.0 * L * C * (double)T;
}

/* ---- creation ---------------------------------------------------------- */

static layer_view layer_of(const yk_model *m, float *arena, int l) {
  layer_view v;
  float *base = arena + m->lay.layers + (size_t)l * m->lay.layer_size;
  for (int k = 0; k < P_NLAYER; k++) v.p[k] = base + m->lay.in_layer[k];
  return v;
}

static void set_desc(yk_tensor_desc *t, const char *name, size_t off, size_t numel, int ndim, int64_t d0, int64_t d1,
                     int decay) {
  memset(t, 0, sizeof *t);
  snprintf(t->name, sizeof t->name, "%s", name);
  t->offset = off;
  t->numel = numel;
  t->ndim = ndim;
  t->shape[0] = d0;
  t->shape[1] = d1;
  t->decay = decay;
}

/* The tensor table of cfg in arena order: 4 + 12*L entries at t. */
static void fill_table(const yk_model_config *cfg, const arena_layout *lay, yk_tensor_desc *t) {
  size_t C = (size_t)cfg->channels, L = (size_t)cfg->layers, Vp = (size_t)cfg->padded_vocab_size;
  set_desc(t++, "wte", lay->wte, Vp * C, 2, (int64_t)Vp, (int64_t)C, 1);
  set_desc(t++, "wpe", lay->wpe, (size_t)cfg->max_seq_len * C, 2, cfg->max_seq_len, (int64_t)C, 1);
  for (size_t l = 0; l < L; l++)
    for (int k = 0; k < P_NLAYER; k++) {
      char name[48];
      snprintf(name, sizeof name, "h%zu.%s", l, kind_names[k]);
      size_t off = lay->layers + l * lay->layer_size + lay->in_layer[k];
      size_t n = lay->kind_numel[k];
      if (kind_decay[k]) {
        int64_t rows = k == P_QKVW ? 3 * (int64_t)C : k == P_FCW ? 4 * (int64_t)C : (int64_t)C;
        set_desc(t++, name, off, n, 2, rows, (int64_t)(n / (size_t)rows), 1);
      } else {
        set_desc(t++, name, off, n, 1, (int64_t)n, 0, 0);
      }
    }
  set_desc(t++, "lnfw", lay->lnfw, C, 1, (int64_t)C, 0, 0);
  set_desc(t++, "lnfb", lay->lnfb, C, 1, (int64_t)C, 0, 0);
}

int yk_model_tensor_table(const yk_model_config *cfg_in, yk_tensor_desc **out, int *n, yk_diag *d) {
  *out = NULL;
  *n = 0;
  yk_model_config cfg = *cfg_in;
  int rc = yk_model_config_finish(&cfg, d);
  if (rc) return rc;
  int count = 4 + 12 * cfg.layers;
  yk_tensor_desc *t = calloc((size_t)count, sizeof *t);
  if (!t) return yk_errorf(d, YK_ENOMEM, "out of memory for a tensor table of %d tensors", count);
  arena_layout lay;
  yk_model_layout_(&cfg, &lay);
  fill_table(&cfg, &lay, t);
  *out = t;
  *n = count;
  return 0;
}

int yk_model_config_from_table(const yk_tensor_desc *t, int n, int vocab_size, int heads, yk_model_config *out,
                               yk_diag *d) {
  if (n < 4 || (n - 4) % P_NLAYER != 0 || strcmp(t[0].name, "wte") || t[0].ndim != 2 || strcmp(t[1].name, "wpe") ||
      t[1].ndim != 2)
    return yk_errorf(d, YK_EFORMAT, "a table of %d tensors starting with '%s' is not a GPT-2 table: it has 4 + 12*L "
                     "tensors, wte (Vp, C) and wpe (maxT, C) first", n, n > 0 ? t[0].name : "");
  yk_model_config cfg = {.layers = (n - 4) / P_NLAYER, .channels = (int)t[0].shape[1], .heads = heads,
                         .max_seq_len = (int)t[1].shape[0], .vocab_size = vocab_size,
                         .padded_vocab_size = (int)t[0].shape[0]};
  yk_diag sub = {0};
  if (yk_model_config_finish(&cfg, &sub) != 0)
    return yk_errorf(d, YK_EFORMAT, "the tensor table gives no valid GPT-2 config: %s", sub.msg);
  yk_tensor_desc *want;
  int nw;
  int rc = yk_model_tensor_table(&cfg, &want, &nw, d);
  if (rc) return rc;
  for (int i = 0; i < nw && !rc; i++)
    if (strcmp(t[i].name, want[i].name) || t[i].offset != want[i].offset || t[i].numel != want[i].numel)
      rc = yk_errorf(d, YK_EFORMAT, "tensor %d is '%s' (offset %zu, %zu elements) where GPT-2 L=%d C=%d Vp=%d maxT=%d "
                     "has '%s' (offset %zu, %zu elements)", i, t[i].name, t[i].offset, t[i].numel, cfg.layers,
                     cfg.channels, cfg.padded_vocab_size, cfg.max_seq_len, want[i].name, want[i].offset, want[i].numel);
  free(want);
  if (!rc) *out = cfg;
  return rc;
}

int yk_model_create(const yk_model_config *cfg, int B, int T, const yk_device *dev, yk_model **out, yk_diag *d) {
  return yk_model_create_ex(cfg, B, T, dev, YK_DT_F32, out, d);
}

int yk_model_create_ex(const yk_model_config *cfg, int B, int T, const yk_device *dev, yk_dtype act_dtype,
                       yk_model **out, yk_diag *d) {
  return yk_model_create_provided(cfg, B, T, dev, act_dtype, NULL, out, d);
}

int yk_model_create_provided(const yk_model_config *cfg_in, int B, int T, const yk_device *dev, yk_dtype act_dtype,
                             const yk_model_provider *prov, yk_model **out, yk_diag *d) {
  *out = NULL;
  yk_model_config cfg = *cfg_in;
  int rc = yk_model_config_finish(&cfg, d);
  if (rc) return rc;
  if (B <= 0 || B > (1 << 20)) return yk_errorf(d, YK_ECONFIG, "micro-batch B=%d must be in [1, 1048576]", B);
  if (T <= 0 || T > cfg.max_seq_len)
    return yk_errorf(d, YK_ECONFIG, "sequence length T=%d must be in [1, max_seq_len=%d]", T, cfg.max_seq_len);
  if (act_dtype != YK_DT_F32 && act_dtype != YK_DT_F16 && act_dtype != YK_DT_BF16)
    return yk_errorf(d, YK_ECONFIG, "activation dtype %d is not supported; use fp32, fp16 or bf16", (int)act_dtype);
  size_t N = (size_t)B * T, C = (size_t)cfg.channels, L = (size_t)cfg.layers, Vp = (size_t)cfg.padded_vocab_size;
  if (N * Vp > (size_t)INT32_MAX || N * 4 * C > (size_t)INT32_MAX)
    return yk_errorf(d, YK_ECONFIG, "B*T=%zu is too large for this model (B*T*Vp must stay below 2^31)", N);

  yk_model *m = calloc(1, sizeof *m);
  if (!m) return yk_errorf(d, YK_ENOMEM, "out of memory creating the model");
  m->cfg = cfg;
  m->B = B;
  m->T = T;
  m->dev = dev;
  m->act_dt = act_dtype;
  if (prov) m->prov = *prov;
  int is16 = act_dtype != YK_DT_F32;
  yk_model_layout_(&cfg, &m->lay);
  const yk_device_ops *ops = dev->ops;
  size_t NH = (size_t)cfg.heads, att_n = (size_t)B * NH * T * T;

  /* kept activations (in act_dt): per layer ln1, qkv, atty, att, res2, ln2,
   * fch, fch_gelu, res3; plus encoded and lnf */
  size_t per_layer = N * C + N * 3 * C + N * C + att_n + N * C + N * C + 2 * N * 4 * C + N * C;
  m->kept_numel = N * C + L * per_layer + N * C;
  /* always fp32: LayerNorm mean/rstd, logits (the LM head and cross-entropy
   * stay fp32), losses, lse */
  size_t f32_numel = L * 4 * N + 2 * N + N * Vp + 2 * N;
  m->act_numel = f32_numel + (is16 ? 0 : m->kept_numel);
  m->act16_numel = is16 ? m->kept_numel : 0;
  m->work_numel = is16 ? 4 * N * C + N * 3 * C + 2 * N * 4 * C + att_n : 0;
  m->scratch_numel = N * C /*dres*/ + N * C /*dC*/ + N * 4 * C + N * 3 * C + yk_device_layernorm_bwd_scratch(dev, (int)N, (int)C) +
                     yk_device_attention_bwd_scratch(dev, T);
  if (!prov) {
    m->params = ops->alloc(dev, m->lay.total * sizeof(float));
    m->grads = ops->alloc(dev, m->lay.total * sizeof(float));
  }
  m->act_mem = ops->alloc(dev, (m->act_numel + m->scratch_numel + m->work_numel) * sizeof(float));
  if (is16) m->act16_mem = ops->alloc(dev, m->act16_numel * sizeof(uint16_t));
  m->al = calloc(L, sizeof *m->al);
  m->ntensors = 4 + 12 * (int)L;
  m->tensors = calloc((size_t)m->ntensors, sizeof *m->tensors);
  m->inputs = calloc(N, sizeof(int32_t));
  m->targets = calloc(N, sizeof(int32_t));
  if ((!prov && (!m->params || !m->grads)) || !m->act_mem || (is16 && !m->act16_mem) || !m->al || !m->tensors || !m->inputs ||
      !m->targets) {
    size_t bytes = yk_model_memory_bytes(m);
    yk_model_destroy(m);
    return yk_errorf(d, YK_ENOMEM, "out of memory: the model needs %.1f MiB for B=%d T=%d; lower B or T",
                     (double)bytes / 1048576.0, B, T);
  }
  float *p = m->act_mem;
  uint16_t *q = m->act16_mem;
#define TAKE(ptr, n) (ptr = p, p += (n))
  /* a kept activation: from the 16-bit store in 16-bit mode, else fp32 */
#define KEEP(ptr, n) (is16 ? (void)(ptr = q, q += (n)) : (void)(ptr = p, p += (n)))
  KEEP(m->encoded, N * C);
  for (size_t l = 0; l < L; l++) {
    acts_layer *a = &m->al[l];
    KEEP(a->ln1, N * C);
    TAKE(a->ln1_mean, N);
    TAKE(a->ln1_rstd, N);
    KEEP(a->qkv, N * 3 * C);
    KEEP(a->atty, N * C);
    KEEP(a->att, att_n);
    KEEP(a->res2, N * C);
    KEEP(a->ln2, N * C);
    TAKE(a->ln2_mean, N);
    TAKE(a->ln2_rstd, N);
    KEEP(a->fch, N * 4 * C);
    KEEP(a->fch_gelu, N * 4 * C);
    KEEP(a->res3, N * C);
  }
  KEEP(m->lnf, N * C);
  TAKE(m->lnf_mean, N);
  TAKE(m->lnf_rstd, N);
  TAKE(m->logits, N * Vp);
  TAKE(m->losses, N);
  TAKE(m->lse, N);
  TAKE(m->dres, N * C);
  TAKE(m->dC, N * C);
  TAKE(m->d4C, N * 4 * C);
  TAKE(m->dqkv, N * 3 * C);
  TAKE(m->ln_scratch, yk_device_layernorm_bwd_scratch(dev, (int)N, (int)C));
  TAKE(m->att_scratch, yk_device_attention_bwd_scratch(dev, T));
  if (is16) {
    size_t wn[W_COUNT] = {N * C, N * C, N * C, N * 3 * C, N * C, att_n, N * 4 * C, N * 4 * C};
    for (int w = 0; w < W_COUNT; w++) TAKE(m->work[w], wn[w]);
  }
#undef KEEP
#undef TAKE

  fill_table(&cfg, &m->lay, m->tensors);
  *out = m;
  return 0;
}

void yk_model_destroy(yk_model *m) {
  if (!m) return;
  const yk_device *dev = m->dev;
  if (m->params_shm.ptr) yk_shmem_free(&m->params_shm);
  else if (!m->prov.get_params) dev->ops->free(dev, m->params); /* a provided model's arena is borrowed */
  if (m->grads_shm.ptr) yk_shmem_free(&m->grads_shm);
  else dev->ops->free(dev, m->grads);
  dev->ops->free(dev, m->act_mem);
  dev->ops->free(dev, m->act16_mem);
  free(m->al);
  free(m->tensors);
  free(m->inputs);
  free(m->targets);
  free(m);
}

const yk_model_config *yk_model_get_config(const yk_model *m) { return &m->cfg; }
int yk_model_batch(const yk_model *m) { return m->B; }
int yk_model_seq_len(const yk_model *m) { return m->T; }
size_t yk_model_memory_bytes(const yk_model *m) {
  return ((m->prov.get_params ? 0 : 2 * m->lay.total) + m->act_numel + m->scratch_numel + m->work_numel) * sizeof(float) +
         m->act16_numel * sizeof(uint16_t);
}
size_t yk_model_activation_bytes(const yk_model *m) { return m->kept_numel * yk_dtype_size(m->act_dt); }
yk_dtype yk_model_act_dtype(const yk_model *m) { return m->act_dt; }
float *yk_model_params(yk_model *m) { return m->params; }
float *yk_model_grads(yk_model *m) { return m->grads; }

/* Move an arena (*p, n floats) into device shared memory kept in *shm. */
static int share_arena(yk_model *m, float **p, yk_shmem *shm, const char *what, yk_diag *d) {
  if (shm->ptr) return 0;
  const yk_device *dev = m->dev;
  if (!dev->ops->alloc_shared)
    return yk_errorf(d, YK_EUNSUPPORTED, "device %s has no shared memory for the %s", dev->ops->name, what);
  yk_shmem s;
  int rc = dev->ops->alloc_shared(dev, m->lay.total * sizeof(float), &s, d);
  if (rc) return rc;
  memcpy(s.ptr, *p, m->lay.total * sizeof(float));
  dev->ops->free(dev, *p);
  *p = s.ptr;
  *shm = s;
  return 0;
}

int yk_model_share_grads(yk_model *m, yk_diag *d) { return share_arena(m, &m->grads, &m->grads_shm, "gradients", d); }
int yk_model_share_params(yk_model *m, yk_diag *d) { return share_arena(m, &m->params, &m->params_shm, "parameters", d); }
const yk_shmem *yk_model_grads_shmem(const yk_model *m) { return m->grads_shm.ptr ? &m->grads_shm : NULL; }
const yk_shmem *yk_model_params_shmem(const yk_model *m) { return m->params_shm.ptr ? &m->params_shm : NULL; }
size_t yk_model_num_params(const yk_model *m) { return m->lay.total; }
int yk_model_tensors(const yk_model *m, const yk_tensor_desc **out) {
  *out = m->tensors;
  return m->ntensors;
}
int yk_model_tensor_find(const yk_model *m, const char *name) {
  for (int i = 0; i < m->ntensors; i++)
    if (!strcmp(m->tensors[i].name, name)) return i;
  return YK_ENOTFOUND;
}
void yk_model_layer_range(const yk_model *m, int l, size_t *offset, size_t *count) {
  *offset = m->lay.layers + (size_t)l * m->lay.layer_size;
  *count = m->lay.layer_size;
}
void yk_model_set_grad_hook(yk_model *m, yk_model_grad_hook fn, void *ctx) {
  m->hook = fn;
  m->hook_ctx = ctx;
}
const float *yk_model_logits(const yk_model *m) { return m->logits; }
const float *yk_model_losses(const yk_model *m) { return m->losses; }
void yk_model_zero_grad(yk_model *m) {
  if (m->grads) m->dev->ops->zero(m->dev, m->grads, m->lay.total);
}
void yk_model_attach_params(yk_model *m, float *arena) {
  if (m->prov.get_params) m->params = arena;
}
int yk_model_regions(const yk_model *m) { return m->cfg.layers + 2; }
void yk_model_region_range(const yk_model *m, int r, size_t *offset, size_t *count) {
  if (r <= 0) {
    *offset = 0;
    *count = m->lay.layers;
  } else if (r <= m->cfg.layers) {
    yk_model_layer_range(m, r - 1, offset, count);
  } else {
    *offset = m->lay.lnfw;
    *count = m->lay.total - m->lay.lnfw;
  }
}

void yk_model_init_random(yk_model *m, uint64_t seed) {
  yk_rng r;
  yk_rng_seed(&r, seed);
  const yk_model_config *c = &m->cfg;
  size_t C = (size_t)c->channels;
  float std = 0.02f, pstd = 0.02f / sqrtf(2.0f * (float)c->layers);
  memset(m->params, 0, m->lay.total * sizeof(float));
  float *p = m->params;
  for (size_t i = 0; i < (size_t)c->vocab_size * C; i++) p[m->lay.wte + i] = std * yk_rng_normal(&r);
  for (size_t i = 0; i < (size_t)c->max_seq_len * C; i++) p[m->lay.wpe + i] = std * yk_rng_normal(&r);
  for (int l = 0; l < c->layers; l++) {
    layer_view v = layer_of(m, m->params, l);
    for (int k = 0; k < P_NLAYER; k++) {
      size_t n = m->lay.kind_numel[k];
      if (k == P_LN1W || k == P_LN2W)
        for (size_t i = 0; i < n; i++) v.p[k][i] = 1.0f;
      else if (kind_decay[k]) {
        float s = (k == P_ATTPROJW || k == P_FCPROJW) ? pstd : std;
        for (size_t i = 0; i < n; i++) v.p[k][i] = s * yk_rng_normal(&r);
      }
    }
  }
  for (size_t i = 0; i < C; i++) p[m->lay.lnfw + i] = 1.0f;
}

/* ---- forward ---------------------------------------------------------- */

static int check_tokens(const int32_t *tok, size_t n, int V, const char *what, yk_diag *d) {
  for (size_t i = 0; i < n; i++)
    if (tok[i] < 0 || tok[i] >= V)
      return yk_errorf(d, YK_EINVAL, "%s token %d at position %zu is outside the vocabulary [0, %d)", what, tok[i], i, V);
  return 0;
}

/* ---- 16-bit activation storage ----------------------------------------
 * In fp32 mode a kept activation is its own fp32 store, so these helpers are
 * no-ops and the kernels read and write the store directly. In 16-bit mode
 * every kernel still computes in fp32 into a work buffer (dest), the result
 * is rounded into the 16-bit store (keep/store), and a consumer reads the
 * fp32 widening of the stored bits (the rounded work buffer in the forward,
 * view in the backward): the numerics are those of 16-bit activations with
 * fp32 accumulation inside every kernel. */

/* Where a kernel writes the fp32 value of the kept tensor `store`. */
static float *dest(const yk_model *m, void *store, int w) { return m->act_dt == YK_DT_F32 ? store : m->work[w]; }

/* Round x (n floats) into the 16-bit store dst. */
static void store(const yk_model *m, void *dst, const float *x, size_t n) {
  const yk_device *dev = m->dev;
  if (m->act_dt == YK_DT_F16) dev->ops->f32_to_f16(dev, dst, x, n);
  else if (m->act_dt == YK_DT_BF16) dev->ops->f32_to_bf16(dev, dst, x, n);
}

/* fp32 view of the kept tensor src (n elements): the store itself in fp32
 * mode, else its widening into work buffer w. */
static float *view(const yk_model *m, void *src, int w, size_t n) {
  const yk_device *dev = m->dev;
  if (m->act_dt == YK_DT_F32) return src;
  float *x = m->work[w];
  if (m->act_dt == YK_DT_F16) dev->ops->f16_to_f32(dev, x, src, n);
  else dev->ops->bf16_to_f32(dev, x, src, n);
  return x;
}

/* store, then replace x by the stored values so the next kernel in the
 * forward reads exactly what backward will read. */
static void keep(const yk_model *m, void *dst, float *x, size_t n) {
  const yk_device *dev = m->dev;
  if (m->act_dt == YK_DT_F16) dev->ops->round_f16(dev, dst, x, n);
  else if (m->act_dt == YK_DT_BF16) dev->ops->round_bf16(dev, dst, x, n);
}

/* ---- regions: the model's own arenas, or a provider's loans -------------
 * Every parameter and gradient access of forward and backward goes through
 * these, with a region-relative pointer: region 0 starts at wte (arena
 * offset 0), a layer's base is what layer_at takes, the head starts at lnfw.
 * Without a provider they return slices of the model's arenas (so the
 * arithmetic, and the bits, are the same as indexing the arena directly). */
enum { R_EMBED = 0 };
#define R_LAYER(l) (1 + (l))
#define R_HEAD(m) ((m)->cfg.layers + 1)

static int params_of(yk_model *m, int r, yk_model_pass pass, float **p, yk_diag *d) {
  size_t off, n;
  if (m->prov.get_params) return m->prov.get_params(m->prov.ctx, r, pass, p, d);
  yk_model_region_range(m, r, &off, &n);
  *p = m->params + off;
  return 0;
}
static int grads_of(yk_model *m, int r, float **g, yk_diag *d) {
  size_t off, n;
  if (m->prov.get_grads) return m->prov.get_grads(m->prov.ctx, r, g, d);
  yk_model_region_range(m, r, &off, &n);
  *g = m->grads + off;
  return 0;
}
static int done_params(yk_model *m, int r, yk_model_pass pass, yk_diag *d) {
  return m->prov.put_params ? m->prov.put_params(m->prov.ctx, r, pass, d) : 0;
}
static void notify(yk_model *m, size_t off, size_t n);
/* Region r's gradients of this backward are final: the provider's put, or
 * the gradient-ready hook. */
static int done_grads(yk_model *m, int r, yk_diag *d) {
  if (m->prov.put_grads) return m->prov.put_grads(m->prov.ctx, r, d);
  size_t off, n;
  yk_model_region_range(m, r, &off, &n);
  notify(m, off, n);
  return 0;
}
/* Views of one layer's tensors from its block's base. */
static layer_view layer_at(const yk_model *m, float *base) {
  layer_view v;
  for (int k = 0; k < P_NLAYER; k++) v.p[k] = base + m->lay.in_layer[k];
  return v;
}

int yk_model_forward(yk_model *m, const int32_t *inputs, const int32_t *targets, float *loss, yk_diag *d) {
  const yk_device *dev = m->dev;
  const yk_device_ops *o = dev->ops;
  const yk_model_config *c = &m->cfg;
  int B = m->B, T = m->T, C = c->channels, NH = c->heads, V = c->vocab_size, Vp = c->padded_vocab_size;
  int N = B * T;
  size_t NC = (size_t)N * C;
  if (!inputs) return yk_errorf(d, YK_EINVAL, "forward needs input tokens (inputs is NULL)");
  int rc = check_tokens(inputs, (size_t)N, V, "input", d);
  if (!rc && targets) rc = check_tokens(targets, (size_t)N, V, "target", d);
  if (rc) return rc;
  m->have_targets = 0;
  memcpy(m->inputs, inputs, (size_t)N * sizeof(int32_t));
  float *Pe, *Pl, *Ph;

  /* In 16-bit mode the residual stream ping-pongs between work buffers: x
   * (layer input) in R0, res2 in R1, res3 back in R0 (x is dead by then). */
  float *x = dest(m, m->encoded, W_R0);
  if ((rc = params_of(m, R_EMBED, YK_MODEL_FORWARD, &Pe, d))) return rc;
  o->encoder_fwd(dev, x, inputs, Pe + m->lay.wte, Pe + m->lay.wpe, N, T, C);
  if ((rc = done_params(m, R_EMBED, YK_MODEL_FORWARD, d))) return rc;
  keep(m, m->encoded, x, NC);
  for (int l = 0; l < c->layers; l++) {
    if ((rc = params_of(m, R_LAYER(l), YK_MODEL_FORWARD, &Pl, d))) return rc;
    layer_view w = layer_at(m, Pl);
    acts_layer *a = &m->al[l];
    float *ln1 = dest(m, a->ln1, W_LN);
    o->layernorm_fwd(dev, ln1, a->ln1_mean, a->ln1_rstd, x, w.p[P_LN1W], w.p[P_LN1B], N, C);
    keep(m, a->ln1, ln1, NC);
    /* qkv (N,3C) = qkvb + ln1 (N,C) . qkvw (3C,C)^T */
    float *qkv = dest(m, a->qkv, W_QKV);
    o->bias_rows(dev, qkv, w.p[P_QKVB], NULL, N, 3 * C);
    o->gemm(dev, 0, 1, N, 3 * C, C, 1.0f, ln1, C, w.p[P_QKVW], C, 1.0f, qkv, 3 * C);
    keep(m, a->qkv, qkv, 3 * NC);
    float *atty = dest(m, a->atty, W_ATTY), *att = dest(m, a->att, W_ATT);
    o->attention_fwd(dev, atty, att, qkv, B, T, C, NH);
    store(m, a->att, att, (size_t)B * NH * T * T); /* only backward reads att */
    keep(m, a->atty, atty, NC);
    /* res2 (N,C) = x + attprojb + atty . attprojw^T (bias and residual fused) */
    float *res2 = dest(m, a->res2, W_R1);
    o->bias_rows(dev, res2, w.p[P_ATTPROJB], x, N, C);
    o->gemm(dev, 0, 1, N, C, C, 1.0f, atty, C, w.p[P_ATTPROJW], C, 1.0f, res2, C);
    keep(m, a->res2, res2, NC);
    float *ln2 = dest(m, a->ln2, W_LN);
    o->layernorm_fwd(dev, ln2, a->ln2_mean, a->ln2_rstd, res2, w.p[P_LN2W], w.p[P_LN2B], N, C);
    keep(m, a->ln2, ln2, NC);
    /* fch (N,4C) = fcb + ln2 . fcw (4C,C)^T; gelu */
    float *fch = dest(m, a->fch, W_FCH), *gelu = dest(m, a->fch_gelu, W_GELU);
    o->bias_rows(dev, fch, w.p[P_FCB], NULL, N, 4 * C);
    o->gemm(dev, 0, 1, N, 4 * C, C, 1.0f, ln2, C, w.p[P_FCW], C, 1.0f, fch, 4 * C);
    keep(m, a->fch, fch, 4 * NC);
    o->gelu_fwd(dev, gelu, fch, 4 * NC);
    keep(m, a->fch_gelu, gelu, 4 * NC);
    /* res3 (N,C) = res2 + fcprojb + gelu (N,4C) . fcprojw (C,4C)^T */
    float *res3 = dest(m, a->res3, W_R0);
    o->bias_rows(dev, res3, w.p[P_FCPROJB], res2, N, C);
    o->gemm(dev, 0, 1, N, C, 4 * C, 1.0f, gelu, 4 * C, w.p[P_FCPROJW], 4 * C, 1.0f, res3, C);
    keep(m, a->res3, res3, NC);
    x = res3;
    if ((rc = done_params(m, R_LAYER(l), YK_MODEL_FORWARD, d))) return rc;
  }
  if ((rc = params_of(m, R_HEAD(m), YK_MODEL_FORWARD, &Ph, d))) return rc;
  float *lnf = dest(m, m->lnf, W_LN);
  o->layernorm_fwd(dev, lnf, m->lnf_mean, m->lnf_rstd, x, Ph, Ph + C, N, C);
  keep(m, m->lnf, lnf, NC);
  /* logits (N,Vp) = lnf (N,C) . wte (Vp,C)^T; logits and the loss stay fp32 */
  if ((rc = done_params(m, R_HEAD(m), YK_MODEL_FORWARD, d)) || (rc = params_of(m, R_EMBED, YK_MODEL_FORWARD, &Pe, d)))
    return rc;
  o->gemm(dev, 0, 1, N, Vp, C, 1.0f, lnf, C, Pe + m->lay.wte, C, 0.0f, m->logits, Vp);
  if ((rc = done_params(m, R_EMBED, YK_MODEL_FORWARD, d))) return rc;
  if (!targets) {
    if (loss) *loss = 0.0f;
    return 0;
  }
  memcpy(m->targets, targets, (size_t)N * sizeof(int32_t));
  o->crossent_fwd(dev, m->losses, m->lse, m->logits, targets, N, V, Vp);
  double s = 0.0;
  for (int i = 0; i < N; i++) s += m->losses[i];
  float mean = (float)(s / N);
  if (loss) *loss = mean;
  m->have_targets = 1;
  if (!isfinite(mean)) return yk_errorf(d, YK_ENONFINITE, "the loss is %f (non-finite); lower the learning rate", mean);
  return 0;
}

/* ---- backward ---------------------------------------------------------- */

static void notify(yk_model *m, size_t off, size_t n) {
  if (m->hook) m->hook(m->hook_ctx, off, n);
}

int yk_model_backward(yk_model *m, yk_diag *d) { return yk_model_backward_scaled(m, 1.0f, d); }

int yk_model_backward_scaled(yk_model *m, float scale, yk_diag *d) {
  if (!m->have_targets)
    return yk_errorf(d, YK_EINVAL, "backward needs a forward with targets first (each forward is differentiated once)");
  m->have_targets = 0;
  const yk_device *dev = m->dev;
  const yk_device_ops *o = dev->ops;
  const yk_model_config *c = &m->cfg;
  int B = m->B, T = m->T, C = c->channels, NH = c->heads, V = c->vocab_size, Vp = c->padded_vocab_size;
  int N = B * T, L = c->layers, rc;
  float *Pe, *Ge, *Ph, *Gh, *Pl, *Gl;

  /* dlogits in place of the logits */
  o->crossent_bwd(dev, m->logits, m->lse, m->targets, scale / (float)N, N, V, Vp);
  float *dlog = m->logits;
  size_t NC = (size_t)N * C;
  const float *lnf = view(m, m->lnf, W_LN, NC);
  /* The embedding's gradient buffer (wte is tied to the LM head) stays out
   * from here to the end of backward. */
  if ((rc = params_of(m, R_HEAD(m), YK_MODEL_BACKWARD, &Ph, d)) || (rc = grads_of(m, R_HEAD(m), &Gh, d)) ||
      (rc = params_of(m, R_EMBED, YK_MODEL_BACKWARD, &Pe, d)) || (rc = grads_of(m, R_EMBED, &Ge, d)))
    return rc;
  /* LM head: dwte (Vp,C) += dlogits^T (Vp,N) . lnf (N,C); dlnf (N,C) = dlogits . wte */
  o->gemm(dev, 1, 0, Vp, C, N, 1.0f, dlog, Vp, lnf, C, 1.0f, Ge + m->lay.wte, C);
  o->gemm(dev, 0, 0, N, C, Vp, 1.0f, dlog, Vp, Pe + m->lay.wte, C, 0.0f, m->dC, C);
  if ((rc = done_params(m, R_EMBED, YK_MODEL_BACKWARD, d))) return rc;
  o->zero(dev, m->dres, (size_t)N * C);
  const float *xL = view(m, L > 0 ? m->al[L - 1].res3 : m->encoded, W_R0, NC);
  o->layernorm_bwd(dev, m->dres, Gh, Gh + C, m->dC, xL, Ph, m->lnf_mean, m->lnf_rstd, N, C, m->ln_scratch);
  if ((rc = done_params(m, R_HEAD(m), YK_MODEL_BACKWARD, d)) || (rc = done_grads(m, R_HEAD(m), d))) return rc;

  for (int l = L - 1; l >= 0; l--) {
    if ((rc = params_of(m, R_LAYER(l), YK_MODEL_BACKWARD, &Pl, d)) || (rc = grads_of(m, R_LAYER(l), &Gl, d)))
      return rc;
    layer_view w = layer_at(m, Pl), g = layer_at(m, Gl);
    acts_layer *a = &m->al[l];
    /* MLP branch; dres is d(res3). Each kept activation is widened (16-bit
     * mode) just before its first use. */
    const float *gelu = view(m, a->fch_gelu, W_GELU, 4 * NC);
    o->gemm(dev, 1, 0, C, 4 * C, N, 1.0f, m->dres, C, gelu, 4 * C, 1.0f, g.p[P_FCPROJW], 4 * C);
    o->bias_bwd(dev, g.p[P_FCPROJB], m->dres, N, C);
    o->gemm(dev, 0, 0, N, 4 * C, C, 1.0f, m->dres, C, w.p[P_FCPROJW], 4 * C, 0.0f, m->d4C, 4 * C);
    o->gelu_bwd(dev, m->d4C, view(m, a->fch, W_FCH, 4 * NC), m->d4C, 4 * NC);
    const float *ln2 = view(m, a->ln2, W_LN, NC);
    o->gemm(dev, 1, 0, 4 * C, C, N, 1.0f, m->d4C, 4 * C, ln2, C, 1.0f, g.p[P_FCW], C);
    o->bias_bwd(dev, g.p[P_FCB], m->d4C, N, 4 * C);
    o->gemm(dev, 0, 0, N, C, 4 * C, 1.0f, m->d4C, 4 * C, w.p[P_FCW], C, 0.0f, m->dC, C);
    o->layernorm_bwd(dev, m->dres, g.p[P_LN2W], g.p[P_LN2B], m->dC, view(m, a->res2, W_R1, NC), w.p[P_LN2W], a->ln2_mean, a->ln2_rstd, N,
                     C, m->ln_scratch);
    /* attention branch; dres is now d(res2) */
    o->gemm(dev, 1, 0, C, C, N, 1.0f, m->dres, C, view(m, a->atty, W_ATTY, NC), C, 1.0f, g.p[P_ATTPROJW], C);
    o->bias_bwd(dev, g.p[P_ATTPROJB], m->dres, N, C);
    o->gemm(dev, 0, 0, N, C, C, 1.0f, m->dres, C, w.p[P_ATTPROJW], C, 0.0f, m->dC, C);
    const float *qkv = view(m, a->qkv, W_QKV, 3 * NC), *att = view(m, a->att, W_ATT, (size_t)B * NH * T * T);
    o->attention_bwd(dev, m->dqkv, m->dC, qkv, att, B, T, C, NH, m->att_scratch);
    const float *ln1 = view(m, a->ln1, W_LN, NC);
    o->gemm(dev, 1, 0, 3 * C, C, N, 1.0f, m->dqkv, 3 * C, ln1, C, 1.0f, g.p[P_QKVW], C);
    o->bias_bwd(dev, g.p[P_QKVB], m->dqkv, N, 3 * C);
    /* The key bias has an exactly zero gradient: it adds q.b_k to every score
     * of a row, and softmax is invariant to that. What bias_bwd sums there is
     * rounding noise (~1e-9), which Adam's normalisation would turn into
     * lr-sized random steps, so write the exact value. */
    memset(g.p[P_QKVB] + C, 0, (size_t)C * sizeof(float));
    o->gemm(dev, 0, 0, N, C, 3 * C, 1.0f, m->dqkv, 3 * C, w.p[P_QKVW], C, 0.0f, m->dC, C);
    const float *x = view(m, l == 0 ? m->encoded : m->al[l - 1].res3, W_R0, NC);
    o->layernorm_bwd(dev, m->dres, g.p[P_LN1W], g.p[P_LN1B], m->dC, x, w.p[P_LN1W], a->ln1_mean, a->ln1_rstd, N, C,
                     m->ln_scratch);
    if ((rc = done_params(m, R_LAYER(l), YK_MODEL_BACKWARD, d)) || (rc = done_grads(m, R_LAYER(l), d))) return rc;
  }
  o->encoder_bwd(dev, Ge + m->lay.wte, Ge + m->lay.wpe, m->dres, m->inputs, N, T, C);
  return done_grads(m, R_EMBED, d);
}
