/* model.c - GPT-2 forward/backward on a yk_device: presets, arenas, init.
 * See yk_model.h for the architecture and the arena layout. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "yk_partition.h"

static const char *const kind_names[P_NLAYER] = {"ln1w", "ln1b", "qkvw",    "qkvb", "attprojw", "attprojb",
                                                 "ln2w", "ln2b", "fcw",     "fcb",  "fcprojw",  "fcprojb"};
static const int kind_decay[P_NLAYER] = {0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0};
/* How each per-layer tensor is split over a tensor-parallel group: THE table
 * (with wte VOCAB, wpe and lnf REPLICATED in fill_table) that the layout,
 * yk_model_tp_copy, the optimizer and checkpoints read through the tensor
 * table. QKV is column-parallel in 3 blocks (q, k, v), so a rank holds the
 * q, k and v rows of its own heads. */
#define REP YK_SPLIT_REPLICATED
#define COL YK_SPLIT_COLUMN
#define ROW YK_SPLIT_ROW
static const int kind_split[P_NLAYER] = {REP, REP, COL, COL, ROW, REP, REP, REP, COL, COL, ROW, REP};
static const int kind_parts[P_NLAYER] = {0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0};
#undef REP
#undef COL
#undef ROW

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


static void set_desc(yk_tensor_desc *t, const char *name, size_t off, size_t numel, int ndim, int64_t d0, int64_t d1,
                     int decay, int split, int parts) {
  memset(t, 0, sizeof *t);
  snprintf(t->name, sizeof t->name, "%s", name);
  t->offset = off;
  t->numel = numel;
  t->ndim = ndim;
  t->shape[0] = d0;
  t->shape[1] = d1;
  t->decay = decay;
  t->split = split;
  t->split_parts = parts;
}

/* The tensor table of cfg in arena order: 4 + 12*L entries at t. */
static void fill_table(const yk_model_config *cfg, const arena_layout *lay, yk_tensor_desc *t) {
  size_t C = (size_t)cfg->channels, L = (size_t)cfg->layers, Vp = (size_t)cfg->padded_vocab_size;
  set_desc(t++, "wte", lay->wte, Vp * C, 2, (int64_t)Vp, (int64_t)C, 1, YK_SPLIT_VOCAB, 0);
  set_desc(t++, "wpe", lay->wpe, (size_t)cfg->max_seq_len * C, 2, cfg->max_seq_len, (int64_t)C, 1,
           YK_SPLIT_REPLICATED, 0);
  for (size_t l = 0; l < L; l++)
    for (int k = 0; k < P_NLAYER; k++) {
      char name[48];
      snprintf(name, sizeof name, "h%zu.%s", l, kind_names[k]);
      size_t off = lay->layers + l * lay->layer_size + lay->in_layer[k];
      size_t n = lay->kind_numel[k];
      if (kind_decay[k]) {
        int64_t rows = k == P_QKVW ? 3 * (int64_t)C : k == P_FCW ? 4 * (int64_t)C : (int64_t)C;
        set_desc(t++, name, off, n, 2, rows, (int64_t)(n / (size_t)rows), 1, kind_split[k], kind_parts[k]);
      } else {
        set_desc(t++, name, off, n, 1, (int64_t)n, 0, 0, kind_split[k], kind_parts[k]);
      }
    }
  set_desc(t++, "lnfw", lay->lnfw, C, 1, (int64_t)C, 0, 0, YK_SPLIT_REPLICATED, 0);
  set_desc(t++, "lnfb", lay->lnfb, C, 1, (int64_t)C, 0, 0, YK_SPLIT_REPLICATED, 0);
}

int yk_model_layout_tp_(const yk_model_config *cfg, int tp, int rank, arena_layout *lay, yk_tensor_desc *t,
                        yk_diag *d) {
  arena_layout g;
  yk_model_layout_(cfg, &g);
  int n = 4 + 12 * cfg->layers;
  fill_table(cfg, &g, t);
  /* Each tensor becomes this rank's piece; pieces are laid out in the same
   * (layer-major) order, so the local arena has the global one's shape. */
  size_t off = 0;
  for (int i = 0; i < n; i++) {
    yk_tensor_desc piece;
    int rc = yk_partition_split_local(&t[i], tp, rank, &piece, d);
    if (rc) return rc;
    piece.offset = off;
    off += piece.numel;
    t[i] = piece;
  }
  memset(lay, 0, sizeof *lay);
  lay->wte = t[0].offset;
  lay->wpe = t[1].offset;
  lay->layers = t[2].offset;
  for (int k = 0; k < P_NLAYER; k++) {
    lay->in_layer[k] = t[2 + k].offset - lay->layers;
    lay->kind_numel[k] = t[2 + k].numel;
  }
  lay->layer_size = cfg->layers > 0 ? t[2 + P_NLAYER].offset - lay->layers : 0;
  lay->lnfw = t[n - 2].offset;
  lay->lnfb = t[n - 1].offset;
  lay->total = off;
  return 0;
}

int yk_model_tp_check(const yk_model_config *cfg, int B, int T, int tp, int sequence, yk_diag *d) {
  if (tp < 1) return yk_errorf(d, YK_ECONFIG, "parallel.tensor=%d must be at least 1", tp);
  /* The degrees that work: divisors of the head count (C = heads x head
   * size and 4C follow). */
  char ok[160] = "";
  size_t used = 0;
  for (int k = 1; k <= cfg->heads && used + 12 < sizeof ok; k++)
    if (cfg->heads % k == 0) used += (size_t)snprintf(ok + used, sizeof ok - used, "%s%d", used ? ", " : "", k);
  struct {
    const char *what;
    long long v;
  } div[] = {{"model.heads", cfg->heads}, {"model.channels", cfg->channels}, {"4 x model.channels (the MLP width)",
                                                                             4LL * cfg->channels}};
  for (size_t i = 0; i < YK_ARRAY_LEN(div); i++)
    if (div[i].v % tp)
      return yk_errorf(d, YK_ECONFIG, "parallel.tensor=%d does not divide %s=%lld (each rank holds whole heads); "
                       "use one of %s", tp, div[i].what, div[i].v, ok);
  if (sequence && tp > 1 && T % tp)
    return yk_errorf(d, YK_ECONFIG, "train.seq_len=%d is not divisible by parallel.tensor=%d: sequence parallelism "
                     "holds seq_len/tensor tokens per rank; use a multiple of %d or parallel.sequence=false", T, tp,
                     tp);
  (void)B;
  return 0;
}

int yk_model_tp_tensor_table(const yk_model_config *cfg_in, int tp, int rank, yk_tensor_desc **out, int *n,
                             yk_diag *d) {
  *out = NULL;
  *n = 0;
  yk_model_config cfg = *cfg_in;
  int rc = yk_model_config_finish(&cfg, d);
  if (rc) return rc;
  int count = 4 + 12 * cfg.layers;
  yk_tensor_desc *t = calloc((size_t)count, sizeof *t);
  if (!t) return yk_errorf(d, YK_ENOMEM, "out of memory for a tensor table of %d tensors", count);
  arena_layout lay;
  if ((rc = yk_model_layout_tp_(&cfg, tp, rank, &lay, t, d)) != 0) {
    free(t);
    return rc;
  }
  *out = t;
  *n = count;
  return 0;
}

size_t yk_model_tp_num_params(const yk_model_config *cfg, int tp, int rank) {
  arena_layout lay;
  yk_tensor_desc *t = calloc((size_t)(4 + 12 * cfg->layers), sizeof *t);
  yk_diag d = {0};
  size_t n = t && yk_model_layout_tp_(cfg, tp, rank, &lay, t, &d) == 0 ? lay.total : 0;
  free(t);
  return n;
}

int yk_model_tp_copy(const yk_model_config *cfg_in, int tp, int rank, float *global, float *local, int to_local,
                     yk_diag *d) {
  yk_model_config cfg = *cfg_in;
  int rc = yk_model_config_finish(&cfg, d);
  if (rc) return rc;
  int n = 4 + 12 * cfg.layers;
  yk_tensor_desc *g = calloc((size_t)n, sizeof *g), *l = calloc((size_t)n, sizeof *l);
  arena_layout glay, llay;
  if (!g || !l) rc = yk_errorf(d, YK_ENOMEM, "out of memory for two tensor tables");
  if (!rc) rc = yk_model_layout_tp_(&cfg, tp, rank, &llay, l, d);
  if (!rc) {
    yk_model_layout_(&cfg, &glay);
    fill_table(&cfg, &glay, g);
    for (int i = 0; i < n; i++)
      yk_partition_split_copy(&g[i], tp, rank, global + g[i].offset, local + l[i].offset, to_local);
  }
  free(g);
  free(l);
  return rc;
}

int yk_model_tensor_table(const yk_model_config *cfg, yk_tensor_desc **out, int *n, yk_diag *d) {
  return yk_model_tp_tensor_table(cfg, 1, 0, out, n, d); /* one rank holds every piece */
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

/* Rows of one LM-head block: the logits training holds are (HEAD_ROWS, Vl),
 * 26 MB at GPT-2's vocabulary instead of 206 MB for d12 at B=4, T=256, while
 * a block's products stay large enough for the GEMM to run at full speed. */
#define HEAD_ROWS 128

/* The element counts of what yk_model_create_parallel allocates: the one
 * home of the model's memory formulas (create and yk_model_plan both use
 * it). tp is the checked group (size 1 without); arena = local parameters. */
/* nl: the blocks held (a pipeline stage's; L for the whole model), head:
 * whether the final LayerNorm, logits and loss are. */
/* The 16-bit chunk the weight slots' rounding goes through (elements). */
#define WCHUNK ((size_t)1 << 16)

/* lay: this rank's arena layout; embed: whether the embedding region is held. */
static void sizes_of(const yk_model_config *cfg, int B, int T, const yk_model_tp *tp, yk_dtype act_dtype,
                     const yk_device *dev, int provided, size_t arena, size_t nl, int head, const arena_layout *lay,
                     int embed, yk_model_sizes *s) {
  size_t N = (size_t)B * T, C = (size_t)cfg->channels;
  size_t Cl = C / (size_t)tp->size, NHl = (size_t)cfg->heads / (size_t)tp->size;
  size_t Ns = tp->sequence ? N / (size_t)tp->size : N;
  uint64_t v0, Vl;
  yk_partition_even_range((uint64_t)cfg->padded_vocab_size, tp->size, tp->size > 1 ? tp->rank : 0, &v0, &Vl);
  size_t att_n = (size_t)B * NHl * T * T;
  int is16 = act_dtype != YK_DT_F32, tpar = tp->size > 1;
  memset(s, 0, sizeof *s);
  /* kept activations (in act_dt): per layer ln1, qkv, atty, att, res2, ln2,
   * fch, fch_gelu, res3; plus encoded and lnf. Under tensor parallelism the
   * per-head and MLP tensors are this rank's (Cl = C/tp channels), and with
   * sequence parallelism the residual stream holds Ns = N/tp rows; the
   * LayerNorm outputs are kept gathered (N rows), as the column-parallel
   * products and their weight gradients read them whole. */
  size_t inner = N * C + N * 3 * Cl + N * Cl + Ns * C + N * C + 2 * N * 4 * Cl; /* ln1 .. fch_gelu but att */
  size_t layers = nl * (inner + att_n + Ns * C);                                 /* + att, res3 */
  /* recomputation: selective keeps one layer's att for all; full keeps each
   * layer's output res3 (the next one's input) and one layer's set of the rest */
  if (tp->recompute == YK_MODEL_RECOMPUTE_SELECTIVE) layers = nl * (inner + Ns * C) + (nl ? att_n : 0);
  else if (tp->recompute == YK_MODEL_RECOMPUTE_FULL) layers = nl * Ns * C + (nl ? inner + att_n : 0);
  s->kept_numel = Ns * C + layers + (head ? N * C : 0);
  /* always fp32: LayerNorm mean/rstd, one block of logits (the LM head and
   * cross-entropy stay fp32, and run HEAD_ROWS rows at a time), losses, lse */
  s->logits_numel = head ? YK_MIN(N, (size_t)HEAD_ROWS) * (size_t)Vl : 0;
  s->f32_numel = nl * 4 * Ns + (head ? 2 * Ns + s->logits_numel + 2 * N : 0);
  s->work_numel = is16 ? 2 * Ns * C + N * C + N * 3 * Cl + N * Cl + 2 * N * 4 * Cl + att_n : 0;
  s->rep_numel = tp->sequence ? YK_MAX(6 * C, (size_t)T * C) : 0;
  size_t tp_numel = tpar ? N * C + Ns * C + s->rep_numel + 3 * N : 0;
  s->scratch_numel = Ns * C /*dres*/ + N * C /*dC*/ + N * 4 * Cl + N * 3 * Cl +
                     yk_device_layernorm_bwd_scratch(dev, (int)Ns, (int)C) + yk_device_attention_bwd_scratch(dev, T) +
                     tp_numel;
  /* bytes as the device allocates them: the two arenas, one fp32 block
   * (fp32 activations, scratch, work) and the 16-bit store */
  size_t f32_block = s->f32_numel + (is16 ? 0 : s->kept_numel) + s->scratch_numel + s->work_numel;
  s->arena_bytes = provided ? 0 : 2 * yk_alloc_bytes(arena * sizeof(float));
  s->block_bytes = yk_alloc_bytes(f32_block * sizeof(float)) + 3 * N * sizeof(int32_t);
  s->kept16_bytes = is16 ? yk_alloc_bytes(s->kept_numel * sizeof(uint16_t)) : 0;
  /* 16-bit weights: one slot per region in use at once (embedding, head, two
   * layers: a layer's get always follows the previous layer's put) */
  if (tp->weights16 != YK_DT_F32) {
    s->wslot_numel = (embed ? lay->layers : 0) + (head ? lay->total - lay->lnfw : 0) + YK_MIN(nl, 2) * lay->layer_size;
    s->wslot_bytes = yk_alloc_bytes(s->wslot_numel * sizeof(float)) + yk_alloc_bytes(WCHUNK * sizeof(uint16_t));
  }
  s->total_bytes = s->arena_bytes + s->block_bytes + s->kept16_bytes + s->wslot_bytes;
}

int yk_model_plan(const yk_model_config *cfg_in, int B, int T, const yk_device *dev, yk_dtype act_dtype,
                  const yk_model_tp *tp_in, int provided, yk_model_sizes *out, yk_diag *d) {
  yk_model_config cfg = *cfg_in;
  int rc = yk_model_config_finish(&cfg, d);
  if (rc) return rc;
  if (B <= 0 || B > (1 << 20)) return yk_errorf(d, YK_ECONFIG, "micro-batch B=%d must be in [1, 1048576]", B);
  if (T <= 0 || T > cfg.max_seq_len)
    return yk_errorf(d, YK_ECONFIG, "sequence length T=%d must be in [1, max_seq_len=%d]", T, cfg.max_seq_len);
  yk_model_tp tp = {.size = 1, .recompute = tp_in ? tp_in->recompute : YK_MODEL_RECOMPUTE_NONE};
  if (tp_in && tp_in->size > 1) {
    tp = *tp_in;
    if ((rc = yk_model_tp_check(&cfg, B, T, tp.size, tp.sequence, d)) != 0) return rc;
  }
  tp.sequence = tp.size > 1 && tp.sequence;
  tp.weights16 = tp_in ? tp_in->weights16 : YK_DT_F32;
  arena_layout lay;
  yk_tensor_desc *t = calloc(4 + 12 * (size_t)cfg.layers, sizeof *t);
  if (!t) return yk_errorf(d, YK_ENOMEM, "out of memory for the tensor table");
  rc = yk_model_layout_tp_(&cfg, tp.size, tp.size > 1 ? tp.rank : 0, &lay, t, d);
  free(t);
  if (rc) return rc;
  sizes_of(&cfg, B, T, &tp, act_dtype, dev, provided, yk_model_tp_num_params(&cfg, tp.size, tp.size > 1 ? tp.rank : 0),
           (size_t)cfg.layers, 1, &lay, 1, out);
  return 0;
}

int yk_model_create(const yk_model_config *cfg, int B, int T, const yk_device *dev, yk_model **out, yk_diag *d) {
  return yk_model_create_ex(cfg, B, T, dev, YK_DT_F32, out, d);
}

int yk_model_create_ex(const yk_model_config *cfg, int B, int T, const yk_device *dev, yk_dtype act_dtype,
                       yk_model **out, yk_diag *d) {
  return yk_model_create_parallel(cfg, B, T, dev, act_dtype, NULL, NULL, out, d);
}

int yk_model_create_parallel(const yk_model_config *cfg, int B, int T, const yk_device *dev, yk_dtype act_dtype,
                             const yk_model_tp *tp, const yk_model_provider *prov, yk_model **out, yk_diag *d) {
  return yk_model_create_stage(cfg, B, T, dev, act_dtype, tp, NULL, prov, out, d);
}

/* [offset, offset + count) of region r in the unstaged arena lay. */
static void whole_region(const arena_layout *lay, int L, int r, size_t *offset, size_t *count) {
  if (r <= 0) {
    *offset = 0;
    *count = lay->layers;
  } else if (r <= L) {
    *offset = lay->layers + (size_t)(r - 1) * lay->layer_size;
    *count = lay->layer_size;
  } else {
    *offset = lay->lnfw;
    *count = lay->total - lay->lnfw;
  }
}

/* The regions a pipeline stage `st` holds (held[L + 2]: the embedding,
 * each block, the head) and their places in its compact arenas (reg_off,
 * *nlocal floats), for the unstaged layout lay of L blocks. st NULL or n = 0:
 * every region at its lay offset. The one home of a stage's arena layout
 * (the model's own, and yk_model_stage_table / _copy_cfg for offline tools). */
static int map_stage(const arena_layout *lay, int L, const yk_model_stage *st, unsigned char *held, size_t *reg_off,
                     size_t *nlocal, yk_diag *d) {
  int R = L + 2, staged = st && st->n > 0;
  if (st && st->n > YK_MODEL_MAX_RANGES)
    return yk_errorf(d, YK_EINVAL, "a pipeline stage of %d block ranges; at most %d", st->n, YK_MODEL_MAX_RANGES);
  memset(held, 0, (size_t)R);
  for (int i = 0; staged && i < st->n; i++) {
    int a = st->first[i], b = st->last[i];
    if (a < 0 || a >= b || b > L || (i > 0 && a < st->last[i - 1]))
      return yk_errorf(d, YK_EINVAL, "pipeline stage range %d, blocks [%d, %d), is not an increasing, non-overlapping "
                       "range of the model's %d blocks", i, a, b, L);
    for (int l = a; l < b; l++) held[1 + l] = 1;
    held[0] |= a == 0 || b == L; /* wte: the embedding, or the LM head */
    held[R - 1] |= b == L;
  }
  size_t off = 0, n;
  for (int r = 0; r < R; r++) {
    held[r] |= !staged;
    whole_region(lay, L, r, &reg_off[r], &n);
    if (!staged || !held[r]) continue;
    reg_off[r] = off;
    off += n;
  }
  *nlocal = staged ? off : lay->total;
  return 0;
}

/* Keep the tensors of held regions in t[0..n), at their compact offsets;
 * returns how many are kept. */
static int map_table(const arena_layout *lay, int L, const unsigned char *held, const size_t *reg_off,
                     yk_tensor_desc *t, int n) {
  int R = L + 2, k = 0;
  for (int i = 0; i < n; i++) {
    yk_tensor_desc x = t[i];
    int r = x.offset < lay->layers ? 0 : x.offset >= lay->lnfw ? R - 1 : 1 + (int)((x.offset - lay->layers) / lay->layer_size);
    size_t r0, cnt;
    whole_region(lay, L, r, &r0, &cnt);
    if (!held[r]) continue;
    x.offset = reg_off[r] + (x.offset - r0);
    t[k++] = x;
  }
  return k;
}

static void map_copy(const arena_layout *lay, int L, const unsigned char *held, const size_t *reg_off, float *whole,
                     float *local, int to_local) {
  for (int r = 0; r < L + 2; r++) {
    size_t off, n;
    whole_region(lay, L, r, &off, &n);
    if (!held[r]) continue;
    if (to_local) memcpy(local + reg_off[r], whole + off, n * sizeof(float));
    else memcpy(whole + off, local + reg_off[r], n * sizeof(float));
  }
}

/* The regions a pipeline stage holds, their places in its compact arenas,
 * and the tensor table of those regions (see yk_model_stage). */
static int setup_stage(yk_model *m, const yk_model_stage *st, yk_diag *d) {
  int L = m->cfg.layers, R = L + 2;
  m->held = calloc((size_t)R, 1);
  m->reg_off = calloc((size_t)R, sizeof *m->reg_off);
  if (!m->held || !m->reg_off) return yk_errorf(d, YK_ENOMEM, "out of memory creating the model");
  m->staged = st && st->n > 0;
  int rc = map_stage(&m->lay, L, st, m->held, m->reg_off, &m->nlocal, d);
  if (rc) return rc;
  m->ntensors = map_table(&m->lay, L, m->held, m->reg_off, m->tensors, m->ntensors);
  return 0;
}

/* A stage's map of tensor-parallel rank `rank` of tp without a model: its
 * unstaged layout and table (t, 4 + 12L entries) and held / reg_off (L + 2). */
typedef struct stage_of {
  yk_model_config cfg;
  arena_layout lay;
  yk_tensor_desc *t;
  unsigned char *held;
  size_t *reg_off, nlocal;
} stage_of;

static void stage_of_free(stage_of *s) {
  free(s->t);
  free(s->held);
  free(s->reg_off);
}

static int stage_of_make(const yk_model_config *cfg, int tp, int rank, const yk_model_stage *st, stage_of *s,
                         yk_diag *d) {
  memset(s, 0, sizeof *s);
  s->cfg = *cfg;
  int rc = yk_model_config_finish(&s->cfg, d);
  if (rc) return rc;
  int L = s->cfg.layers;
  s->t = calloc((size_t)(4 + 12 * L), sizeof *s->t);
  s->held = calloc((size_t)L + 2, 1);
  s->reg_off = calloc((size_t)L + 2, sizeof *s->reg_off);
  if (!s->t || !s->held || !s->reg_off) rc = yk_errorf(d, YK_ENOMEM, "out of memory for a stage's tensor table");
  if (!rc) rc = yk_model_layout_tp_(&s->cfg, tp, rank, &s->lay, s->t, d);
  if (!rc) rc = map_stage(&s->lay, L, st, s->held, s->reg_off, &s->nlocal, d);
  if (rc) stage_of_free(s);
  return rc;
}

int yk_model_stage_table(const yk_model_config *cfg, int tp, int rank, const yk_model_stage *st, yk_tensor_desc **out,
                         int *n, size_t *numel, yk_diag *d) {
  *out = NULL;
  *n = 0;
  stage_of s;
  int rc = stage_of_make(cfg, tp, rank, st, &s, d);
  if (rc) return rc;
  *n = map_table(&s.lay, s.cfg.layers, s.held, s.reg_off, s.t, 4 + 12 * s.cfg.layers);
  if (numel) *numel = s.nlocal;
  *out = s.t;
  s.t = NULL;
  stage_of_free(&s);
  return 0;
}

int yk_model_stage_copy_cfg(const yk_model_config *cfg, int tp, int rank, const yk_model_stage *st, float *whole,
                            float *local, int to_local, yk_diag *d) {
  stage_of s;
  int rc = stage_of_make(cfg, tp, rank, st, &s, d);
  if (rc) return rc;
  map_copy(&s.lay, s.cfg.layers, s.held, s.reg_off, whole, local, to_local);
  stage_of_free(&s);
  return 0;
}

int yk_model_create_stage(const yk_model_config *cfg_in, int B, int T, const yk_device *dev, yk_dtype act_dtype,
                          const yk_model_tp *tp_in, const yk_model_stage *stage, const yk_model_provider *prov,
                          yk_model **out, yk_diag *d) {
  *out = NULL;
  yk_model_config cfg = *cfg_in;
  int rc = yk_model_config_finish(&cfg, d);
  if (rc) return rc;
  if (B <= 0 || B > (1 << 20)) return yk_errorf(d, YK_ECONFIG, "micro-batch B=%d must be in [1, 1048576]", B);
  if (T <= 0 || T > cfg.max_seq_len)
    return yk_errorf(d, YK_ECONFIG, "sequence length T=%d must be in [1, max_seq_len=%d]", T, cfg.max_seq_len);
  if (act_dtype != YK_DT_F32 && act_dtype != YK_DT_F16 && act_dtype != YK_DT_BF16)
    return yk_errorf(d, YK_ECONFIG, "activation dtype %d is not supported; use fp32, fp16 or bf16", (int)act_dtype);
  yk_model_tp tp = {.size = 1, .recompute = tp_in ? tp_in->recompute : YK_MODEL_RECOMPUTE_NONE,
                    .weights16 = tp_in ? tp_in->weights16 : YK_DT_F32};
  if (tp.weights16 != YK_DT_F32 && tp.weights16 != YK_DT_F16 && tp.weights16 != YK_DT_BF16)
    return yk_errorf(d, YK_ECONFIG, "16-bit weights dtype %d is not supported; use fp16 or bf16", (int)tp.weights16);
  if ((unsigned)tp.recompute > YK_MODEL_RECOMPUTE_FULL)
    return yk_errorf(d, YK_ECONFIG, "recompute mode %d is not one of none (0), selective (1), full (2)",
                     (int)tp.recompute);
  if (tp_in && tp_in->size > 1) {
    tp = *tp_in;
    if (tp.rank < 0 || tp.rank >= tp.size || !tp.coll)
      return yk_errorf(d, YK_EINVAL, "tensor-parallel rank %d of %d (with%s collectives) is not a valid group member",
                       tp.rank, tp.size, tp.coll ? "" : "out");
    if ((rc = yk_model_tp_check(&cfg, B, T, tp.size, tp.sequence, d)) != 0) return rc;
  }
  tp.sequence = tp.size > 1 && tp.sequence;
  size_t N = (size_t)B * T, C = (size_t)cfg.channels, L = (size_t)cfg.layers;
  size_t Cl = C / (size_t)tp.size, NHl = (size_t)cfg.heads / (size_t)tp.size;
  size_t Ns = tp.sequence ? N / (size_t)tp.size : N;
  uint64_t v0, Vl;
  yk_partition_even_range((uint64_t)cfg.padded_vocab_size, tp.size, tp.size > 1 ? tp.rank : 0, &v0, &Vl);
  if (N * Vl > (size_t)INT32_MAX || N * 4 * C > (size_t)INT32_MAX)
    return yk_errorf(d, YK_ECONFIG, "B*T=%zu is too large for this model (B*T*Vp must stay below 2^31)", N);

  yk_model *m = calloc(1, sizeof *m);
  if (!m) return yk_errorf(d, YK_ENOMEM, "out of memory creating the model");
  m->cfg = cfg;
  m->B = B;
  m->T = T;
  m->dev = dev;
  m->act_dt = act_dtype;
  m->tp = tp;
  if (prov) m->prov = *prov;
  m->Cl = (int)Cl;
  m->NHl = (int)NHl;
  m->Ns = (int)Ns;
  m->Vl = (int)Vl;
  m->v0 = (int)v0;
  m->head_rows = (int)YK_MIN(N, (size_t)HEAD_ROWS);
  m->nv = (int)YK_MIN((int64_t)Vl, YK_MAX((int64_t)0, (int64_t)cfg.vocab_size - (int64_t)v0));
  int is16 = act_dtype != YK_DT_F32;
  int tpar = tp.size > 1;
  yk_model_layout_(&cfg, &m->glay);
  m->ntensors = 4 + 12 * (int)L;
  m->tensors = calloc((size_t)m->ntensors, sizeof *m->tensors);
  if (!m->tensors) {
    yk_model_destroy(m);
    return yk_errorf(d, YK_ENOMEM, "out of memory creating the model");
  }
  if ((rc = yk_model_layout_tp_(&cfg, tp.size, tp.size > 1 ? tp.rank : 0, &m->lay, m->tensors, d)) != 0 ||
      (rc = setup_stage(m, stage, d)) != 0) {
    yk_model_destroy(m);
    return rc;
  }
  /* a stage keeps activations of its own blocks, and the head's only if it
   * runs the head */
  size_t nl = 0, head = m->held[L + 1];
  for (size_t l = 0; l < L; l++) nl += m->held[1 + l];
  const yk_device_ops *ops = dev->ops;
  size_t att_n = (size_t)B * NHl * T * T;
  yk_model_sizes sz;
  sizes_of(&cfg, B, T, &tp, act_dtype, dev, prov != NULL, m->nlocal, nl, (int)head, &m->lay, m->held[0], &sz);
  m->kept_numel = sz.kept_numel;
  m->act_numel = sz.f32_numel + (is16 ? 0 : m->kept_numel);
  m->act16_numel = is16 ? m->kept_numel : 0;
  m->work_numel = sz.work_numel;
  size_t rep_numel = sz.rep_numel;
  m->scratch_numel = sz.scratch_numel;
  if (!prov) {
    m->params = ops->alloc(dev, m->nlocal * sizeof(float));
    m->grads = ops->alloc(dev, m->nlocal * sizeof(float));
  }
  m->act_mem = ops->alloc(dev, (m->act_numel + m->scratch_numel + m->work_numel) * sizeof(float));
  if (is16) m->act16_mem = ops->alloc(dev, m->act16_numel * sizeof(uint16_t));
  int w16 = tp.weights16 != YK_DT_F32;
  if (w16) {
    m->wslot_mem = ops->alloc(dev, (sz.wslot_numel ? sz.wslot_numel : 1) * sizeof(float));
    m->wtmp = ops->alloc(dev, WCHUNK * sizeof(uint16_t));
  }
  m->al = calloc(L, sizeof *m->al);
  m->inputs = calloc(N, sizeof(int32_t));
  m->targets = calloc(N, sizeof(int32_t));
  m->tshift = calloc(N, sizeof(int32_t));
  if ((!prov && (!m->params || !m->grads)) || !m->act_mem || (is16 && !m->act16_mem) || !m->al || !m->inputs || !m->targets ||
      !m->tshift || (w16 && (!m->wslot_mem || !m->wtmp))) {
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
  KEEP(m->encoded, Ns * C);
  /* Under recomputation the layers share `once`'s (the first allocated
   * layer's) stores of what backward recomputes (sizes_of counts the same). */
  acts_layer *once = NULL;
  for (size_t l = 0; l < L; l++) {
    acts_layer *a = &m->al[l];
    if (!m->held[1 + l]) continue;
    if (once && tp.recompute == YK_MODEL_RECOMPUTE_FULL) {
      *a = *once; /* mean/rstd and res3 are the layer's own, below */
    } else {
      KEEP(a->ln1, N * C);
      KEEP(a->qkv, N * 3 * Cl);
      KEEP(a->atty, N * Cl);
      if (once && tp.recompute == YK_MODEL_RECOMPUTE_SELECTIVE) a->att = once->att;
      else KEEP(a->att, att_n);
      KEEP(a->res2, Ns * C);
      KEEP(a->ln2, N * C);
      KEEP(a->fch, N * 4 * Cl);
      KEEP(a->fch_gelu, N * 4 * Cl);
    }
    TAKE(a->ln1_mean, Ns);
    TAKE(a->ln1_rstd, Ns);
    TAKE(a->ln2_mean, Ns);
    TAKE(a->ln2_rstd, Ns);
    KEEP(a->res3, Ns * C);
    if (!once) once = a;
  }
  if (head) {
    KEEP(m->lnf, N * C);
    TAKE(m->lnf_mean, Ns);
    TAKE(m->lnf_rstd, Ns);
    TAKE(m->logits, (size_t)m->head_rows * Vl);
    TAKE(m->losses, N);
    TAKE(m->lse, N);
  }
  TAKE(m->dres, Ns * C);
  TAKE(m->dC, N * C);
  TAKE(m->d4C, N * 4 * Cl);
  TAKE(m->dqkv, N * 3 * Cl);
  TAKE(m->ln_scratch, yk_device_layernorm_bwd_scratch(dev, (int)Ns, (int)C));
  TAKE(m->att_scratch, yk_device_attention_bwd_scratch(dev, T));
  if (tpar) {
    TAKE(m->tpbuf, N * C);
    TAKE(m->tpbuf2, Ns * C);
    TAKE(m->rep, rep_numel);
    TAKE(m->ce, 3 * N);
  }
  if (is16) {
    size_t wn[W_COUNT] = {Ns * C, Ns * C, N * C, N * 3 * Cl, N * Cl, att_n, N * 4 * Cl, N * 4 * Cl};
    for (int w = 0; w < W_COUNT; w++) TAKE(m->work[w], wn[w]);
  }
#undef KEEP
#undef TAKE
  /* the weight slots: embedding, head, two layers (sizes_of's order) */
  float *ws = m->wslot_mem;
  size_t wn[4] = {m->held[0] ? m->lay.layers : 0, head ? m->lay.total - m->lay.lnfw : 0, nl ? m->lay.layer_size : 0,
                  nl > 1 ? m->lay.layer_size : 0};
  for (int i = 0; i < 4; i++) {
    m->wslot[i].buf = w16 && wn[i] ? ws : NULL;
    m->wslot[i].region = -1;
    if (w16) ws += wn[i];
  }
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
  dev->ops->free(dev, m->wslot_mem);
  dev->ops->free(dev, m->wtmp);
  dev->ops->free(dev, m->logits_all);
  free(m->al);
  free(m->tensors);
  free(m->held);
  free(m->reg_off);
  free(m->inputs);
  free(m->targets);
  free(m->tshift);
  free(m);
}

const yk_model_config *yk_model_get_config(const yk_model *m) { return &m->cfg; }
int yk_model_batch(const yk_model *m) { return m->B; }
int yk_model_seq_len(const yk_model *m) { return m->T; }
size_t yk_model_memory_bytes(const yk_model *m) {
  size_t ws = 0;
  for (int i = 0; i < 4; i++)
    if (m->wslot[i].buf) ws += i < 2 ? (i ? m->lay.total - m->lay.lnfw : m->lay.layers) : m->lay.layer_size;
  return ((m->prov.get_params ? 0 : 2 * m->nlocal) + m->act_numel + m->scratch_numel + m->work_numel + ws) * sizeof(float) +
         (m->act16_numel + (m->wtmp ? WCHUNK : 0)) * sizeof(uint16_t);
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
  int rc = dev->ops->alloc_shared(dev, m->nlocal * sizeof(float), &s, d);
  if (rc) return rc;
  memcpy(s.ptr, *p, m->nlocal * sizeof(float));
  dev->ops->free(dev, *p);
  *p = s.ptr;
  *shm = s;
  return 0;
}

int yk_model_share_grads(yk_model *m, yk_diag *d) { return share_arena(m, &m->grads, &m->grads_shm, "gradients", d); }
int yk_model_share_params(yk_model *m, yk_diag *d) { return share_arena(m, &m->params, &m->params_shm, "parameters", d); }
const yk_shmem *yk_model_grads_shmem(const yk_model *m) { return m->grads_shm.ptr ? &m->grads_shm : NULL; }
const yk_shmem *yk_model_params_shmem(const yk_model *m) { return m->params_shm.ptr ? &m->params_shm : NULL; }
size_t yk_model_num_params(const yk_model *m) { return m->nlocal; }
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
  yk_model_region_range(m, 1 + l, offset, count);
}
void yk_model_set_grad_hook(yk_model *m, yk_model_grad_hook fn, void *ctx) {
  m->hook = fn;
  m->hook_ctx = ctx;
}
void yk_model_set_span_hook(yk_model *m, yk_model_span_hook fn, void *ctx) {
  m->span = fn;
  m->span_ctx = ctx;
}
const float *yk_model_logits(const yk_model *m) { return m->logits_all; }
const float *yk_model_losses(const yk_model *m) { return m->losses; }
void yk_model_zero_grad(yk_model *m) {
  if (m->grads) m->dev->ops->zero(m->dev, m->grads, m->nlocal);
}
void yk_model_attach_params(yk_model *m, float *arena) {
  if (m->prov.get_params) m->params = arena;
}
int yk_model_regions(const yk_model *m) { return m->cfg.layers + 2; }
void yk_model_region_range(const yk_model *m, int r, size_t *offset, size_t *count) {
  int L = m->cfg.layers;
  r = r < 0 ? 0 : r > L + 1 ? L + 1 : r;
  whole_region(&m->lay, L, r, offset, count);
  *offset = m->reg_off[r];
  if (!m->held[r]) *offset = *count = 0;
}

void yk_model_stage_copy(const yk_model *m, float *whole, float *local, int to_local) {
  map_copy(&m->lay, m->cfg.layers, m->held, m->reg_off, whole, local, to_local);
}

int ykm_params_from_whole(yk_model *m, float *whole, yk_diag *d) {
  if (!m->staged) return yk_model_tp_copy(&m->cfg, m->tp.size, m->tp.rank, whole, m->params, 1, d);
  /* this rank's tensor-parallel pieces of everything, then the stage's regions */
  float *mine = whole;
  if (m->tp.size > 1 && !(mine = malloc(m->lay.total * sizeof(float))))
    return yk_errorf(d, YK_ENOMEM, "out of memory for the %zu weights of this rank's pieces", m->lay.total);
  int rc = mine == whole ? 0 : yk_model_tp_copy(&m->cfg, m->tp.size, m->tp.rank, whole, mine, 1, d);
  if (!rc) yk_model_stage_copy(m, mine, m->params, 1);
  if (mine != whole) free(mine);
  return rc;
}


/* GPT-2's init of a whole arena of config c (layout lay) from seed. */
static void init_arena(const yk_model_config *c, const arena_layout *lay, float *p, uint64_t seed) {
  yk_rng r;
  yk_rng_seed(&r, seed);
  size_t C = (size_t)c->channels;
  float std = 0.02f, pstd = 0.02f / sqrtf(2.0f * (float)c->layers);
  memset(p, 0, lay->total * sizeof(float));
  for (size_t i = 0; i < (size_t)c->vocab_size * C; i++) p[lay->wte + i] = std * yk_rng_normal(&r);
  for (size_t i = 0; i < (size_t)c->max_seq_len * C; i++) p[lay->wpe + i] = std * yk_rng_normal(&r);
  for (int l = 0; l < c->layers; l++) {
    float *base = p + lay->layers + (size_t)l * lay->layer_size;
    for (int k = 0; k < P_NLAYER; k++) {
      float *v = base + lay->in_layer[k];
      size_t n = lay->kind_numel[k];
      if (k == P_LN1W || k == P_LN2W)
        for (size_t i = 0; i < n; i++) v[i] = 1.0f;
      else if (kind_decay[k]) {
        float sd = (k == P_ATTPROJW || k == P_FCPROJW) ? pstd : std;
        for (size_t i = 0; i < n; i++) v[i] = sd * yk_rng_normal(&r);
      }
    }
  }
  for (size_t i = 0; i < C; i++) p[lay->lnfw + i] = 1.0f;
}

int yk_model_init_random_tp(yk_model *m, uint64_t seed, yk_diag *d) {
  if (m->tp.size == 1 && !m->staged) {
    init_arena(&m->cfg, &m->lay, m->params, seed);
    return 0;
  }
  /* Every rank draws the whole model's values and keeps its pieces, so a
   * tensor-parallel run starts from exactly the weights one rank would. */
  float *g = malloc(m->glay.total * sizeof(float));
  if (!g) return yk_errorf(d, YK_ENOMEM, "out of memory for the %zu initial weights", m->glay.total);
  init_arena(&m->cfg, &m->glay, g, seed);
  int rc = ykm_params_from_whole(m, g, d);
  free(g);
  return rc;
}

void yk_model_init_random(yk_model *m, uint64_t seed) {
  yk_diag d = {0};
  if (yk_model_init_random_tp(m, seed, &d) != 0) memset(m->params, 0, m->nlocal * sizeof(float));
}

const yk_model_tp *yk_model_get_tp(const yk_model *m) { return &m->tp; }

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

/* tp.weights16: region r's weights src (n fp32, the master) rounded to 16
 * bits and widened into its slot, unless the slot holds them from earlier in
 * this forward/backward. Slots 0 and 1 are the embedding's and the head's;
 * a layer takes whichever of 2 and 3 is not lent and was used least
 * recently. The rounding runs through a WCHUNK 16-bit buffer on the device's
 * threads: the bits of yk_cast_from_f32 then yk_cast_to_f32. */
static float *rounded_weights(yk_model *m, int r, const float *src, size_t n) {
  int s = r == R_EMBED ? 0 : r == R_HEAD(m) ? 1 : -1;
  for (int i = 2; i < 4 && s < 0; i++)
    if (m->wslot[i].buf && m->wslot[i].region == r) s = i;
  if (s < 0)
    for (int i = 2; i < 4; i++)
      if (m->wslot[i].buf && !m->wslot[i].lent && (s < 0 || m->wslot[i].used < m->wslot[s].used)) s = i;
  if (s < 0 || !m->wslot[s].buf) return NULL;
  float *dst = m->wslot[s].buf;
  if (m->wslot[s].region != r) {
    const yk_device_ops *o = m->dev->ops;
    int bf = m->tp.weights16 == YK_DT_BF16;
    for (size_t i = 0; i < n; i += WCHUNK) {
      size_t k = YK_MIN(WCHUNK, n - i);
      if (bf) {
        o->f32_to_bf16(m->dev, m->wtmp, src + i, k);
        o->bf16_to_f32(m->dev, dst + i, m->wtmp, k);
      } else {
        o->f32_to_f16(m->dev, m->wtmp, src + i, k);
        o->f16_to_f32(m->dev, dst + i, m->wtmp, k);
      }
    }
    m->wslot[s].region = r;
  }
  m->wslot[s].lent = 1;
  m->wslot[s].used = ++m->wtick;
  return dst;
}

static int params_of(yk_model *m, int r, yk_model_pass pass, float **p, yk_diag *d) {
  size_t off, n;
  yk_model_region_range(m, r, &off, &n);
  float *src = m->params + off;
  if (m->prov.get_params) {
    int rc = m->prov.get_params(m->prov.ctx, r, pass, &src, d);
    if (rc) return rc;
  }
  if (m->tp.weights16 == YK_DT_F32) {
    *p = src;
    return 0;
  }
  if (!(*p = rounded_weights(m, r, src, n)))
    return yk_errorf(d, YK_EINVAL, "region %d's 16-bit weights have no free slot (two layers are lent at once)", r);
  return 0;
}
static int grads_of(yk_model *m, int r, float **g, yk_diag *d) {
  size_t off, n;
  if (m->prov.get_grads) return m->prov.get_grads(m->prov.ctx, r, g, d);
  yk_model_region_range(m, r, &off, &n);
  *g = m->grads + off;
  return 0;
}
static void span(yk_model *m, yk_model_pass pass, int r, int end) {
  if (m->span) m->span(m->span_ctx, pass, r, end);
}
static int done_params(yk_model *m, int r, yk_model_pass pass, yk_diag *d) {
  for (int i = 0; i < 4; i++)
    if (m->wslot[i].region == r) m->wslot[i].lent = 0;
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

/* ---- tensor-parallel communication ---------------------------------------
 * Under tensor parallelism (tp.size > 1) the token rows of the residual
 * stream are either all N on every rank, or (sequence parallelism) this
 * rank's Ns = N/tp of them. These two helpers are the only places that move
 * rows between the two forms. */

/* Reduce a row-parallel partial product full (N,C): the sum over the group,
 * all N rows in place (returns full), or with sequence parallelism this
 * rank's Ns rows (returns tpbuf2). */
static float *tp_reduce(yk_model *m, float *full, int *rc, yk_diag *d) {
  size_t n = (size_t)m->Ns * m->cfg.channels;
  if (*rc) return full;
  if (m->tp.sequence) {
    *rc = m->tp.coll(m->tp.ctx, YK_TP_SCATTER_SUM, full, m->tpbuf2, n, d);
    return m->tpbuf2;
  }
  *rc = m->tp.coll(m->tp.ctx, YK_TP_SUM, full, full, n, d);
  return full;
}

/* All N rows of a residual-stream tensor rows (Ns,C) into `full`: a gather
 * with sequence parallelism, else rows itself. */
static float *tp_rows(yk_model *m, float *rows, float *full, int *rc, yk_diag *d) {
  if (!m->tp.sequence || *rc) return rows;
  *rc = m->tp.coll(m->tp.ctx, YK_TP_GATHER, rows, full, (size_t)m->Ns * m->cfg.channels, d);
  return full;
}

/* Where a replicated tensor's gradient goes: the arena, or with sequence
 * parallelism slot `slot` of rep (a partial sum over this rank's rows that
 * rep_sum adds in once the group has summed it). */
static float *rg(yk_model *m, float *g, int slot, size_t len) { return m->tp.sequence ? m->rep + slot * len : g; }

static int rep_begin(yk_model *m, int slots, size_t len) {
  if (m->tp.sequence) m->dev->ops->zero(m->dev, m->rep, (size_t)slots * len);
  return 0;
}

static int rep_sum(yk_model *m, float *const *g, int slots, size_t len, yk_diag *d) {
  if (!m->tp.sequence) return 0;
  int rc = m->tp.coll(m->tp.ctx, YK_TP_SUM, m->rep, m->rep, (size_t)slots * len, d);
  for (int i = 0; i < slots && !rc; i++) m->dev->ops->add(m->dev, g[i], g[i], m->rep + i * len, len);
  return rc;
}

/* LayerNorm of this rank's rows x (Ns,C) into out (N,C): with sequence
 * parallelism the Ns normalised rows are gathered into all N. */
static int norm_fwd(yk_model *m, float *out, float *mean, float *rstd, const float *x, const float *w, const float *b,
                    yk_diag *d) {
  const yk_device *dev = m->dev;
  int C = m->cfg.channels, rc = 0;
  if (!m->tp.sequence) {
    dev->ops->layernorm_fwd(dev, out, mean, rstd, x, w, b, m->Ns, C);
    return 0;
  }
  dev->ops->layernorm_fwd(dev, m->tpbuf2, mean, rstd, x, w, b, m->Ns, C);
  tp_rows(m, m->tpbuf2, out, &rc, d);
  return rc;
}

/* res (Ns,C) = x + bias + inp (N,K) . w (C,K)^T: an output projection. On
 * one rank bias and residual are fused into the product; under tensor
 * parallelism w holds K = this rank's input columns (row-parallel), so the
 * product is a partial sum reduced over the group before x and bias join. */
static int proj_fwd(yk_model *m, float *res, const float *x, const float *bias, const float *inp, const float *w,
                    int K, yk_diag *d) {
  const yk_device *dev = m->dev;
  const yk_device_ops *o = dev->ops;
  int N = m->B * m->T, C = m->cfg.channels, rc = 0;
  if (m->tp.size == 1) {
    o->bias_rows(dev, res, bias, x, N, C);
    o->gemm(dev, 0, 1, N, C, K, 1.0f, inp, K, w, K, 1.0f, res, C);
    return 0;
  }
  o->gemm(dev, 0, 1, N, C, K, 1.0f, inp, K, w, K, 0.0f, m->tpbuf, C);
  float *r = tp_reduce(m, m->tpbuf, &rc, d);
  if (rc) return rc;
  o->bias_rows(dev, res, bias, x, m->Ns, C);
  o->add(dev, res, res, r, (size_t)m->Ns * C);
  return 0;
}

/* x (Ns,C) = wte[token] + wpe[position] for this rank's rows (P: the
 * embedding region's weights). Under tensor
 * parallelism each rank looks up the tokens of its vocabulary rows (zeros
 * for the others) and the group sums: exactly one term is non-zero. */
static int embed_fwd(yk_model *m, float *x, const int32_t *tok, const float *P, yk_diag *d) {
  const yk_device *dev = m->dev;
  int N = m->B * m->T, T = m->T, C = m->cfg.channels, rc = 0;
  if (m->tp.size == 1) {
    dev->ops->encoder_fwd(dev, x, tok, P + m->lay.wte, P + m->lay.wpe, N, T, C);
    return 0;
  }
  const float *wte = P + m->lay.wte, *wpe = P + m->lay.wpe;
  for (int n = 0; n < N; n++) {
    int64_t t = (int64_t)tok[n] - m->v0;
    float *row = m->tpbuf + (size_t)n * C;
    if (t >= 0 && t < m->Vl) memcpy(row, wte + (size_t)t * C, (size_t)C * sizeof(float));
    else memset(row, 0, (size_t)C * sizeof(float));
  }
  float *r = tp_reduce(m, m->tpbuf, &rc, d);
  if (rc) return rc;
  int first = m->tp.sequence ? m->tp.rank * m->Ns : 0; /* global row of this rank's first row */
  for (int i = 0; i < m->Ns; i++)
    dev->ops->add(dev, x + (size_t)i * C, r + (size_t)i * C, wpe + (size_t)((first + i) % T) * C, (size_t)C);
  return 0;
}

/* Cross-entropy of rows [r0, r0+R) from their logits block m->logits (R,Vl)
 * into losses and lse. Vocabulary-parallel: each rank holds logits for its
 * vocabulary rows; the per-row logsumexp combines as
 *     lse = M + log(sum_r exp(lse_r - M)),  M = max_r lse_r
 * (a MAX, then one SUM that also carries the target's logit from the rank
 * that holds it). Padded rows (>= V) are outside every rank's nv. */
static int ce_fwd(yk_model *m, const int32_t *targets, int r0, int R, yk_diag *d) {
  const yk_device *dev = m->dev;
  int rc;
  float *lse = m->lse + r0, *losses = m->losses + r0;
  if (m->tp.size == 1) {
    dev->ops->crossent_fwd(dev, losses, lse, m->logits, targets + r0, R, m->cfg.vocab_size,
                           m->cfg.padded_vocab_size);
    return 0;
  }
  int32_t *ts = m->tshift + r0;
  for (int n = 0; n < R; n++) ts[n] = targets[r0 + n] - m->v0;
  float *mx = m->ce, *st = m->ce + R; /* st: sum of exp (R) | target logit (R) */
  dev->ops->crossent_shard_fwd(dev, lse, st + R, m->logits, ts, R, m->nv, m->Vl);
  memcpy(mx, lse, (size_t)R * sizeof(float));
  if ((rc = m->tp.coll(m->tp.ctx, YK_TP_MAX, mx, mx, (size_t)R, d)) != 0) return rc;
  for (int n = 0; n < R; n++) st[n] = lse[n] == -INFINITY ? 0.0f : expf(lse[n] - mx[n]);
  if ((rc = m->tp.coll(m->tp.ctx, YK_TP_SUM, st, st, 2 * (size_t)R, d)) != 0) return rc;
  for (int n = 0; n < R; n++) {
    lse[n] = mx[n] + logf(st[n]);
    losses[n] = lse[n] - st[R + n];
  }
  return 0;
}

/* logits block m->logits (R,Vl) = lnf rows [r0, r0+R) (R,C) . wte (Vl,C)^T
 * (the tied embedding): forward's and, recomputed, backward's. */
static void head_block(yk_model *m, const float *lnf, const float *wte, int r0, int R) {
  int C = m->cfg.channels;
  m->dev->ops->gemm(m->dev, 0, 1, R, m->Vl, C, 1.0f, lnf + (size_t)r0 * C, C, wte, C, 0.0f, m->logits, m->Vl);
}

/* The LM head and cross-entropy with targets, block by block: losses and
 * lse (N) of every position; no more than one block of logits exists. */
static int head_fwd(yk_model *m, const float *lnf, const float *wte, const int32_t *targets, yk_diag *d) {
  int N = m->B * m->T, rc = 0;
  for (int r0 = 0; r0 < N && !rc; r0 += m->head_rows) {
    int R = YK_MIN(m->head_rows, N - r0);
    head_block(m, lnf, wte, r0, R);
    rc = ce_fwd(m, targets, r0, R, d);
  }
  return rc;
}

/* Backward of the LM head and cross-entropy, block by block: each block's
 * logits recomputed (the same product on the same lnf, so the same bits as
 * forward's), turned into dlogits in place, then dwte (Vl,C) += dlogits^T
 * (Vl,R) . lnf (R,C) and the block's rows of dlnf (N,C) = dlogits . wte.
 * Returns dlnf of this rank's rows (reduced over the group under tensor
 * parallelism: each rank's product is partial over its vocabulary rows). */
static const float *head_bwd(yk_model *m, float scale, const float *lnf, const float *wte, float *dwte, int *rc,
                             yk_diag *d) {
  const yk_device *dev = m->dev;
  int N = m->B * m->T, C = m->cfg.channels, Vl = m->Vl, tpar = m->tp.size > 1;
  float *dlnf = tpar ? m->tpbuf : m->dC;
  for (int r0 = 0; r0 < N; r0 += m->head_rows) {
    int R = YK_MIN(m->head_rows, N - r0);
    head_block(m, lnf, wte, r0, R);
    if (tpar) dev->ops->crossent_bwd(dev, m->logits, m->lse + r0, m->tshift + r0, scale / (float)N, R, m->nv, Vl);
    else dev->ops->crossent_bwd(dev, m->logits, m->lse + r0, m->targets + r0, scale / (float)N, R, m->cfg.vocab_size, Vl);
    dev->ops->gemm(dev, 1, 0, Vl, C, R, 1.0f, m->logits, Vl, lnf + (size_t)r0 * C, C, 1.0f, dwte, C);
    dev->ops->gemm(dev, 0, 0, R, C, Vl, 1.0f, m->logits, Vl, wte, C, 0.0f, dlnf + (size_t)r0 * C, C);
  }
  return tpar ? tp_reduce(m, m->tpbuf, rc, d) : m->dC;
}

/* Layer l's forward from its input x (Ns,C; in 16-bit mode the rounded
 * values in work buffer R0) with its weights w: fills the layer's kept
 * tensors and, with out, its output res3 (*out: the fp32 values the next
 * layer reads). Backward's full recomputation re-runs it with out NULL. */
static int layer_fwd(yk_model *m, int l, const layer_view *w, const float *x, float **out, yk_diag *d) {
  const yk_device *dev = m->dev;
  const yk_device_ops *o = dev->ops;
  int B = m->B, T = m->T, C = m->cfg.channels, Cl = m->Cl, NHl = m->NHl, N = B * T, rc;
  size_t NC = (size_t)N * C, NCl = (size_t)N * Cl, NsC = (size_t)m->Ns * C;
  acts_layer *a = &m->al[l];
  float *ln1 = dest(m, a->ln1, W_LN);
  if ((rc = norm_fwd(m, ln1, a->ln1_mean, a->ln1_rstd, x, w->p[P_LN1W], w->p[P_LN1B], d)) != 0) return rc;
  keep(m, a->ln1, ln1, NC);
  /* qkv (N,3Cl) = qkvb + ln1 (N,C) . qkvw (3Cl,C)^T: column-parallel, this rank's heads */
  float *qkv = dest(m, a->qkv, W_QKV);
  o->bias_rows(dev, qkv, w->p[P_QKVB], NULL, N, 3 * Cl);
  o->gemm(dev, 0, 1, N, 3 * Cl, C, 1.0f, ln1, C, w->p[P_QKVW], C, 1.0f, qkv, 3 * Cl);
  keep(m, a->qkv, qkv, 3 * NCl);
  float *atty = dest(m, a->atty, W_ATTY), *att = dest(m, a->att, W_ATT);
  o->attention_fwd(dev, atty, att, qkv, B, T, Cl, NHl);
  store(m, a->att, att, (size_t)B * NHl * T * T); /* only backward reads att */
  keep(m, a->atty, atty, NCl);
  /* res2 (Ns,C) = x + attprojb + atty (N,Cl) . attprojw (C,Cl)^T: row-parallel */
  float *res2 = dest(m, a->res2, W_R1);
  if ((rc = proj_fwd(m, res2, x, w->p[P_ATTPROJB], atty, w->p[P_ATTPROJW], Cl, d)) != 0) return rc;
  keep(m, a->res2, res2, NsC);
  float *ln2 = dest(m, a->ln2, W_LN);
  if ((rc = norm_fwd(m, ln2, a->ln2_mean, a->ln2_rstd, res2, w->p[P_LN2W], w->p[P_LN2B], d)) != 0) return rc;
  keep(m, a->ln2, ln2, NC);
  /* fch (N,4Cl) = fcb + ln2 . fcw (4Cl,C)^T: column-parallel; gelu */
  float *fch = dest(m, a->fch, W_FCH), *gelu = dest(m, a->fch_gelu, W_GELU);
  o->bias_rows(dev, fch, w->p[P_FCB], NULL, N, 4 * Cl);
  o->gemm(dev, 0, 1, N, 4 * Cl, C, 1.0f, ln2, C, w->p[P_FCW], C, 1.0f, fch, 4 * Cl);
  keep(m, a->fch, fch, 4 * NCl);
  o->gelu_fwd(dev, gelu, fch, 4 * NCl);
  keep(m, a->fch_gelu, gelu, 4 * NCl);
  if (!out) return 0; /* a recomputation: backward does not read res3 */
  /* res3 (Ns,C) = res2 + fcprojb + gelu (N,4Cl) . fcprojw (C,4Cl)^T: row-parallel */
  float *res3 = dest(m, a->res3, W_R0);
  if ((rc = proj_fwd(m, res3, res2, w->p[P_FCPROJB], gelu, w->p[P_FCPROJW], 4 * Cl, d)) != 0) return rc;
  keep(m, a->res3, res3, NsC);
  *out = res3;
  return 0;
}

/* Refill what recomputation did not keep of layer l (weights w; first: the
 * first layer of the range this model runs) before its backward. Bitwise the forward's values: the same kernels on the same
 * kept inputs, rounded into the same 16-bit stores. */
static int recompute_layer(yk_model *m, int l, int first, const layer_view *w, yk_diag *d) {
  const yk_device *dev = m->dev;
  acts_layer *a = &m->al[l];
  size_t NsC = (size_t)m->Ns * m->cfg.channels, NCl = (size_t)m->B * m->T * m->Cl;
  if (m->tp.recompute == YK_MODEL_RECOMPUTE_FULL)
    /* the layer's input: the stage's input (encoded) for its first layer */
    return layer_fwd(m, l, w, view(m, l == first ? m->encoded : m->al[l - 1].res3, W_R0, NsC), NULL, d);
  if (m->tp.recompute == YK_MODEL_RECOMPUTE_SELECTIVE) {
    /* att (B,NHl,T,T) from the kept qkv (N,3Cl); the kernel's atty output
     * (N,Cl) is not needed again and goes to d4C, free until the MLP's
     * backward below */
    float *att = dest(m, a->att, W_ATT);
    dev->ops->attention_fwd(dev, m->d4C, att, view(m, a->qkv, W_QKV, 3 * NCl), m->B, m->T, m->Cl, m->NHl);
    store(m, a->att, att, (size_t)m->B * m->NHl * m->T * m->T);
  }
  return 0;
}

int yk_model_forward(yk_model *m, const int32_t *inputs, const int32_t *targets, float *loss, yk_diag *d) {
  return yk_model_forward_range(m, 0, m->cfg.layers, inputs, NULL, targets, NULL, loss, d);
}

size_t yk_model_stream_numel(const yk_model *m) { return (size_t)m->Ns * m->cfg.channels; }

int yk_model_forward_range(yk_model *m, int first, int last, const int32_t *inputs, const float *in,
                           const int32_t *targets, float *out, float *loss, yk_diag *d) {
  const yk_device *dev = m->dev;
  const yk_device_ops *o = dev->ops;
  const yk_model_config *c = &m->cfg;
  /* Ns: this rank's residual-stream rows (N unless sequence parallel); Vl
   * its vocabulary rows (layer_fwd has the per-layer shapes). */
  int B = m->B, T = m->T, C = c->channels, V = c->vocab_size, Vl = m->Vl;
  int N = B * T;
  size_t NC = (size_t)N * C, NsC = (size_t)m->Ns * C;
  if (first < 0 || first >= last || last > c->layers || (first > 0 && !in) || (last < c->layers && !out))
    return yk_errorf(d, YK_EINVAL, "forward of layers [%d, %d) of %d%s", first, last, c->layers,
                     first > 0 && !in ? " needs the input activations" : last < c->layers && !out ?
                     " needs an output buffer" : ": not a range of the model's layers");
  if (first == 0 && !inputs) return yk_errorf(d, YK_EINVAL, "forward needs input tokens (inputs is NULL)");
  for (int r = first == 0 ? 0 : 1 + first; r <= (last == c->layers ? last + 1 : last); r++)
    if (!m->held[r])
      return yk_errorf(d, YK_EINVAL, "forward of layers [%d, %d): this pipeline stage's model does not hold %s", first,
                       last, r == 0 ? "the embedding" : r > c->layers ? "the LM head" : "all of those blocks");
  int rc = first == 0 ? check_tokens(inputs, (size_t)N, V, "input", d) : 0;
  if (!rc && targets && last == c->layers) rc = check_tokens(targets, (size_t)N, V, "target", d);
  if (rc) return rc;
  m->have_targets = 0;
  m->range_first = first;
  m->range_last = last;
  /* the master weights may have changed since the last pass: every slot is
   * refilled at its region's first use */
  for (int i = 0; i < 4; i++) m->wslot[i].region = -1;
  if (first == 0) memcpy(m->inputs, inputs, (size_t)N * sizeof(int32_t));
  float *Pe, *Pl, *Ph; /* each region's weights: embedding, layer l, head (lnf) */

  /* In 16-bit mode the residual stream ping-pongs between work buffers: x
   * (layer input) in R0, res2 in R1, res3 back in R0 (x is dead by then).
   * A pipeline stage's input is kept where the embedding's output would be
   * (the stage does not hold the previous block), so backward finds it
   * there. */
  void *x_store = m->encoded;
  float *x = dest(m, x_store, W_R0);
  if (first > 0) {
    memcpy(x, in, NsC * sizeof(float));
  } else {
    span(m, YK_MODEL_FORWARD, R_EMBED, 0);
    if ((rc = params_of(m, R_EMBED, YK_MODEL_FORWARD, &Pe, d)) != 0 || (rc = embed_fwd(m, x, inputs, Pe, d)) != 0 ||
        (rc = done_params(m, R_EMBED, YK_MODEL_FORWARD, d)) != 0)
      return rc;
  }
  keep(m, x_store, x, NsC);
  if (first == 0) span(m, YK_MODEL_FORWARD, R_EMBED, 1);
  for (int l = first; l < last; l++) {
    span(m, YK_MODEL_FORWARD, R_LAYER(l), 0);
    if ((rc = params_of(m, R_LAYER(l), YK_MODEL_FORWARD, &Pl, d)) != 0) return rc;
    layer_view w = layer_at(m, Pl);
    if ((rc = layer_fwd(m, l, &w, x, &x, d)) != 0) return rc;
    if ((rc = done_params(m, R_LAYER(l), YK_MODEL_FORWARD, d)) != 0) return rc;
    span(m, YK_MODEL_FORWARD, R_LAYER(l), 1);
  }
  if (last < c->layers) {
    /* a pipeline stage before the last: its output goes to the next one */
    memcpy(out, x, NsC * sizeof(float));
    if (loss) *loss = 0.0f;
    m->have_targets = 1;
    return 0;
  }
  span(m, YK_MODEL_FORWARD, R_HEAD(m), 0);
  float *lnf = dest(m, m->lnf, W_LN);
  if ((rc = params_of(m, R_HEAD(m), YK_MODEL_FORWARD, &Ph, d)) != 0 ||
      (rc = norm_fwd(m, lnf, m->lnf_mean, m->lnf_rstd, x, Ph, Ph + C, d)) != 0 ||
      (rc = done_params(m, R_HEAD(m), YK_MODEL_FORWARD, d)) != 0)
    return rc;
  keep(m, m->lnf, lnf, NC);
  /* the LM head (logits and the loss stay fp32): with targets in blocks
   * (head_fwd), without them (inference) all logits (N,Vl) = lnf (N,C) .
   * wte (Vl,C)^T into logits_all, allocated on first use */
  if (!targets && !m->logits_all && !(m->logits_all = o->alloc(dev, (size_t)N * Vl * sizeof(float))))
    return yk_errorf(d, YK_ENOMEM, "out of memory for the %zu logits of an inference forward", (size_t)N * Vl);
  if ((rc = params_of(m, R_EMBED, YK_MODEL_FORWARD, &Pe, d)) != 0) return rc;
  if (targets) {
    memcpy(m->targets, targets, (size_t)N * sizeof(int32_t));
    rc = head_fwd(m, lnf, Pe + m->lay.wte, targets, d);
  } else {
    o->gemm(dev, 0, 1, N, Vl, C, 1.0f, lnf, C, Pe + m->lay.wte, C, 0.0f, m->logits_all, Vl);
  }
  if (rc || (rc = done_params(m, R_EMBED, YK_MODEL_FORWARD, d)) != 0) return rc;
  span(m, YK_MODEL_FORWARD, R_HEAD(m), 1);
  if (!targets) {
    if (loss) *loss = 0.0f;
    return 0;
  }
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

/* dinp (N,C) of a product out = inp . w^T with w (K,C) (dout (N,K)): on one
 * rank straight into dC; under tensor parallelism w holds this rank's K
 * rows (column-parallel), so the product is partial and reduced to this
 * rank's rows. Returns the rows' gradient. */
static float *dx_of(yk_model *m, const float *dout, const float *w, int K, int *rc, yk_diag *d) {
  const yk_device *dev = m->dev;
  int N = m->B * m->T, C = m->cfg.channels;
  if (m->tp.size == 1) {
    dev->ops->gemm(dev, 0, 0, N, C, K, 1.0f, dout, K, w, C, 0.0f, m->dC, C);
    return m->dC;
  }
  dev->ops->gemm(dev, 0, 0, N, C, K, 1.0f, dout, K, w, C, 0.0f, m->tpbuf, C);
  return tp_reduce(m, m->tpbuf, rc, d);
}

/* Backward of the embedding: dwte rows of this rank's tokens, dwpe by
 * position, from dres (Ns,C). G: the embedding region's gradients. */
static int embed_bwd(yk_model *m, float *G, yk_diag *d) {
  const yk_device *dev = m->dev;
  int N = m->B * m->T, T = m->T, C = m->cfg.channels, rc = 0;
  if (m->tp.size == 1) {
    dev->ops->encoder_bwd(dev, G + m->lay.wte, G + m->lay.wpe, m->dres, m->inputs, N, T, C);
    return 0;
  }
  /* In row order, one add per element, as encoder_bwd does. */
  const float *full = tp_rows(m, m->dres, m->tpbuf, &rc, d);
  if (rc) return rc;
  float *dwte = G + m->lay.wte;
  for (int n = 0; n < N; n++) {
    int64_t t = (int64_t)m->inputs[n] - m->v0;
    if (t >= 0 && t < m->Vl) dev->ops->add(dev, dwte + (size_t)t * C, dwte + (size_t)t * C, full + (size_t)n * C, (size_t)C);
  }
  size_t TC = (size_t)T * C;
  float *dwpe = G + m->lay.wpe, *acc = rg(m, dwpe, 0, TC);
  rep_begin(m, 1, TC);
  int first = m->tp.sequence ? m->tp.rank * m->Ns : 0;
  for (int i = 0; i < m->Ns; i++) {
    float *row = acc + (size_t)((first + i) % T) * C;
    dev->ops->add(dev, row, row, m->dres + (size_t)i * C, (size_t)C);
  }
  return rep_sum(m, &dwpe, 1, TC, d);
}

int yk_model_backward_scaled(yk_model *m, float scale, yk_diag *d) {
  if (m->have_targets && m->range_last < m->cfg.layers)
    return yk_errorf(d, YK_EINVAL, "backward of layers [%d, %d) needs the gradient of their output: use "
                     "yk_model_backward_range", m->range_first, m->range_last);
  return yk_model_backward_range(m, scale, NULL, NULL, d);
}

int yk_model_backward_range(yk_model *m, float scale, const float *dout, float *din, yk_diag *d) {
  if (!m->have_targets)
    return yk_errorf(d, YK_EINVAL, "backward needs a forward with targets first (each forward is differentiated once)");
  if ((m->range_last < m->cfg.layers && !dout) || (m->range_first > 0 && !din))
    return yk_errorf(d, YK_EINVAL, "backward of layers [%d, %d) of %d needs %s", m->range_first, m->range_last,
                     m->cfg.layers, !dout && m->range_last < m->cfg.layers ? "the gradient of their output"
                                                                            : "a buffer for their input's gradient");
  m->have_targets = 0;
  int first = m->range_first, last = m->range_last;
  const yk_device *dev = m->dev;
  const yk_device_ops *o = dev->ops;
  const yk_model_config *c = &m->cfg;
  int B = m->B, T = m->T, C = c->channels, Cl = m->Cl, NHl = m->NHl, Ns = m->Ns;
  int N = B * T, L = c->layers, rc = 0;
  float *Pe, *Ge, *Ph, *Gh, *Pl, *Gl; /* each region's weights and gradient buffer */
  size_t NC = (size_t)N * C, NCl = (size_t)N * Cl, NsC = (size_t)Ns * C, uC = (size_t)C;

  Ge = NULL;
  if (last < L) {
    /* a pipeline stage before the last: backward starts from the next
     * stage's gradient of this stage's output */
    memcpy(m->dres, dout, NsC * sizeof(float));
    goto layers;
  }
  span(m, YK_MODEL_BACKWARD, R_HEAD(m), 0);
  const float *lnf = view(m, m->lnf, W_LN, NC);
  /* The embedding's gradient buffer (wte is tied to the LM head) stays out
   * from here to the end of backward. */
  if ((rc = params_of(m, R_HEAD(m), YK_MODEL_BACKWARD, &Ph, d)) || (rc = grads_of(m, R_HEAD(m), &Gh, d)) ||
      (rc = params_of(m, R_EMBED, YK_MODEL_BACKWARD, &Pe, d)) || (rc = grads_of(m, R_EMBED, &Ge, d)))
    return rc;
  const float *dC = head_bwd(m, scale, lnf, Pe + m->lay.wte, Ge + m->lay.wte, &rc, d);
  if (rc || (rc = done_params(m, R_EMBED, YK_MODEL_BACKWARD, d))) return rc;
  o->zero(dev, m->dres, NsC);
  const float *xL = view(m, L > 0 ? m->al[L - 1].res3 : m->encoded, W_R0, NsC);
  rep_begin(m, 2, uC);
  o->layernorm_bwd(dev, m->dres, rg(m, Gh, 0, uC), rg(m, Gh + C, 1, uC), dC, xL, Ph, m->lnf_mean, m->lnf_rstd, Ns, C,
                   m->ln_scratch);
  float *const gf[2] = {Gh, Gh + C};
  if ((rc = rep_sum(m, gf, 2, uC, d)) != 0) return rc;
  if ((rc = done_params(m, R_HEAD(m), YK_MODEL_BACKWARD, d)) || (rc = done_grads(m, R_HEAD(m), d))) return rc;
  span(m, YK_MODEL_BACKWARD, R_HEAD(m), 1);

layers:
  for (int l = last - 1; l >= first; l--) {
    span(m, YK_MODEL_BACKWARD, R_LAYER(l), 0);
    if ((rc = params_of(m, R_LAYER(l), YK_MODEL_BACKWARD, &Pl, d)) || (rc = grads_of(m, R_LAYER(l), &Gl, d)))
      return rc;
    layer_view w = layer_at(m, Pl), g = layer_at(m, Gl);
    acts_layer *a = &m->al[l];
    if ((rc = recompute_layer(m, l, first, &w, d)) != 0) return rc;
    /* the replicated tensors' gradients of this layer (summed over the
     * group after the layer under sequence parallelism) */
    float *const grep[6] = {g.p[P_LN1W], g.p[P_LN1B], g.p[P_ATTPROJB], g.p[P_LN2W], g.p[P_LN2B], g.p[P_FCPROJB]};
    rep_begin(m, 6, uC);
    /* MLP branch; dres is d(res3) of this rank's rows, dfull all N rows of
     * it. Each kept activation is widened (16-bit mode) just before its
     * first use. */
    const float *dfull = tp_rows(m, m->dres, m->tpbuf, &rc, d);
    if (rc) return rc;
    const float *gelu = view(m, a->fch_gelu, W_GELU, 4 * NCl);
    o->gemm(dev, 1, 0, C, 4 * Cl, N, 1.0f, dfull, C, gelu, 4 * Cl, 1.0f, g.p[P_FCPROJW], 4 * Cl);
    o->bias_bwd(dev, rg(m, g.p[P_FCPROJB], 5, uC), m->dres, Ns, C);
    o->gemm(dev, 0, 0, N, 4 * Cl, C, 1.0f, dfull, C, w.p[P_FCPROJW], 4 * Cl, 0.0f, m->d4C, 4 * Cl);
    o->gelu_bwd(dev, m->d4C, view(m, a->fch, W_FCH, 4 * NCl), m->d4C, 4 * NCl);
    const float *ln2 = view(m, a->ln2, W_LN, NC);
    o->gemm(dev, 1, 0, 4 * Cl, C, N, 1.0f, m->d4C, 4 * Cl, ln2, C, 1.0f, g.p[P_FCW], C);
    o->bias_bwd(dev, g.p[P_FCB], m->d4C, N, 4 * Cl);
    dC = dx_of(m, m->d4C, w.p[P_FCW], 4 * Cl, &rc, d);
    if (rc) return rc;
    o->layernorm_bwd(dev, m->dres, rg(m, g.p[P_LN2W], 3, uC), rg(m, g.p[P_LN2B], 4, uC), dC,
                     view(m, a->res2, W_R1, NsC), w.p[P_LN2W], a->ln2_mean, a->ln2_rstd, Ns, C, m->ln_scratch);
    /* attention branch; dres is now d(res2) */
    dfull = tp_rows(m, m->dres, m->tpbuf, &rc, d);
    if (rc) return rc;
    o->gemm(dev, 1, 0, C, Cl, N, 1.0f, dfull, C, view(m, a->atty, W_ATTY, NCl), Cl, 1.0f, g.p[P_ATTPROJW], Cl);
    o->bias_bwd(dev, rg(m, g.p[P_ATTPROJB], 2, uC), m->dres, Ns, C);
    /* datty (N,Cl) = dfull . attprojw (C,Cl), in dC's buffer */
    o->gemm(dev, 0, 0, N, Cl, C, 1.0f, dfull, C, w.p[P_ATTPROJW], Cl, 0.0f, m->dC, Cl);
    const float *qkv = view(m, a->qkv, W_QKV, 3 * NCl), *att = view(m, a->att, W_ATT, (size_t)B * NHl * T * T);
    o->attention_bwd(dev, m->dqkv, m->dC, qkv, att, B, T, Cl, NHl, m->att_scratch);
    const float *ln1 = view(m, a->ln1, W_LN, NC);
    o->gemm(dev, 1, 0, 3 * Cl, C, N, 1.0f, m->dqkv, 3 * Cl, ln1, C, 1.0f, g.p[P_QKVW], C);
    o->bias_bwd(dev, g.p[P_QKVB], m->dqkv, N, 3 * Cl);
    /* The key bias has an exactly zero gradient: it adds q.b_k to every score
     * of a row, and softmax is invariant to that. What bias_bwd sums there is
     * rounding noise (~1e-9), which Adam's normalisation would turn into
     * lr-sized random steps, so write the exact value (this rank's k block). */
    memset(g.p[P_QKVB] + Cl, 0, (size_t)Cl * sizeof(float));
    dC = dx_of(m, m->dqkv, w.p[P_QKVW], 3 * Cl, &rc, d);
    if (rc) return rc;
    const float *x = view(m, l == first ? m->encoded : m->al[l - 1].res3, W_R0, NsC);
    o->layernorm_bwd(dev, m->dres, rg(m, g.p[P_LN1W], 0, uC), rg(m, g.p[P_LN1B], 1, uC), dC, x, w.p[P_LN1W],
                     a->ln1_mean, a->ln1_rstd, Ns, C, m->ln_scratch);
    if ((rc = rep_sum(m, grep, 6, uC, d)) != 0) return rc;
    if ((rc = done_params(m, R_LAYER(l), YK_MODEL_BACKWARD, d)) || (rc = done_grads(m, R_LAYER(l), d))) return rc;
    span(m, YK_MODEL_BACKWARD, R_LAYER(l), 1);
  }
  if (first > 0) {
    /* a pipeline stage after the first: the gradient of its input goes back */
    memcpy(din, m->dres, NsC * sizeof(float));
    return Ge ? done_grads(m, R_EMBED, d) : 0; /* the LM head's wte gradient */
  }
  span(m, YK_MODEL_BACKWARD, R_EMBED, 0);
  if (!Ge && (rc = grads_of(m, R_EMBED, &Ge, d)) != 0) return rc;
  if ((rc = embed_bwd(m, Ge, d)) != 0 || (rc = done_grads(m, R_EMBED, d)) != 0) return rc;
  span(m, YK_MODEL_BACKWARD, R_EMBED, 1);
  return 0;
}
