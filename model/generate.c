/* generate.c - incremental inference for text generation: a KV cache that
 * runs the GPT-2 forward of yk_model_forward one position at a time, token
 * sampling (greedy, temperature, top-k) and the generation loop with its
 * sliding context window. See yk_model.h ("Generation").
 *
 * Why a separate forward: the training forward recomputes every position of
 * a (B,T) window; generating N tokens that way costs O(N * T) positions. Here
 * each layer keeps the keys and values of the positions already seen, so a
 * new token runs the layer's matrix products on one row and attends over the
 * cached rows: one position per token. The arithmetic is the training
 * forward's (same device kernels for LayerNorm, bias, sgemm and GELU; the
 * single-query attention below computes softmax(q k^T / sqrt(hd)) v over the
 * cached rows), so the logits agree with yk_model_forward within rounding
 * (tests/model/test_generate.c checks 1e-5 at every position).
 *
 * The parameters are read through the model's public tensor table at every
 * step, so this file depends on the arena's names, not on its layout. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

/* Per-layer tensors, in the order of the names below. */
enum { K_LN1W, K_LN1B, K_QKVW, K_QKVB, K_PROJW, K_PROJB, K_LN2W, K_LN2B, K_FCW, K_FCB, K_FCPROJW, K_FCPROJB, K_N };
static const char *const layer_names[K_N] = {"ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
                                             "ln2w", "ln2b", "fcw",  "fcb",  "fcprojw",  "fcprojb"};

struct yk_model_kv {
  yk_model *m;
  const yk_device *dev;
  int L, C, NH, maxT, V, Vp;
  int len;              /* positions held in the cache */
  size_t wte, wpe, lnfw, lnfb;
  size_t *off;          /* (L, K_N) arena offsets of the per-layer tensors */
  float *k, *v;         /* (L, maxT, C) keys and values of the positions seen */
  /* one position's activations */
  float *x, *ln, *qkv, *atty, *res, *fch, *gelu, *att, *logits;
  float mean, rstd;     /* LayerNorm's statistics (unused, the kernel writes them) */
};

static int find(const yk_model *m, const char *name, size_t *off, yk_diag *d) {
  const yk_tensor_desc *t;
  yk_model_tensors(m, &t);
  int i = yk_model_tensor_find(m, name);
  if (i < 0) return yk_errorf(d, YK_EINVAL, "the model has no tensor '%s' for generation", name);
  *off = t[i].offset;
  return 0;
}

int yk_model_kv_create(yk_model *m, yk_model_kv **out, yk_diag *d) {
  *out = NULL;
  const yk_model_config *c = yk_model_get_config(m);
  const yk_model_tp *tp = yk_model_get_tp(m);
  if (tp && tp->size > 1)
    return yk_errorf(d, YK_EUNSUPPORTED, "generation needs a whole model, not one rank's pieces (tensor-parallel size "
                     "%d); sample from its weights file or checkpoint", tp->size);
  yk_model_kv *kv = calloc(1, sizeof *kv);
  if (!kv) return yk_errorf(d, YK_ENOMEM, "out of memory for the KV cache");
  kv->m = m;
  kv->dev = m->dev;
  kv->L = c->layers;
  kv->C = c->channels;
  kv->NH = c->heads;
  kv->maxT = c->max_seq_len;
  kv->V = c->vocab_size;
  kv->Vp = c->padded_vocab_size;
  size_t C = (size_t)kv->C, cache = (size_t)kv->L * kv->maxT * C;
  int rc = find(m, "wte", &kv->wte, d);
  if (!rc) rc = find(m, "wpe", &kv->wpe, d);
  if (!rc) rc = find(m, "lnfw", &kv->lnfw, d);
  if (!rc) rc = find(m, "lnfb", &kv->lnfb, d);
  kv->off = calloc((size_t)kv->L * K_N, sizeof *kv->off);
  size_t act = 2 * C + 3 * C + 3 * C + 4 * C + 4 * C + (size_t)kv->maxT + (size_t)kv->Vp;
  kv->k = kv->dev->ops->alloc(kv->dev, cache * sizeof(float));
  kv->v = kv->dev->ops->alloc(kv->dev, cache * sizeof(float));
  float *p = kv->dev->ops->alloc(kv->dev, act * sizeof(float));
  if (!rc && (!kv->off || !kv->k || !kv->v || !p))
    rc = yk_errorf(d, YK_ENOMEM, "out of memory for a KV cache of %.1f MiB (L=%d, max_seq_len=%d, C=%d)",
                   2.0 * (double)cache * 4 / 1048576.0, kv->L, kv->maxT, kv->C);
  for (int l = 0; l < kv->L && !rc; l++)
    for (int k = 0; k < K_N && !rc; k++) {
      char name[48];
      snprintf(name, sizeof name, "h%d.%s", l, layer_names[k]);
      rc = find(m, name, &kv->off[(size_t)l * K_N + k], d);
    }
  if (p) {
    kv->x = p, p += C;
    kv->ln = p, p += C;
    kv->qkv = p, p += 3 * C;
    kv->atty = p, p += C;
    kv->res = p, p += C;
    kv->fch = p, p += 4 * C;
    kv->gelu = p, p += 4 * C;
    kv->att = p, p += kv->maxT;
    kv->logits = p;
  }
  if (rc) {
    yk_model_kv_destroy(kv);
    return rc;
  }
  *out = kv;
  return 0;
}

void yk_model_kv_destroy(yk_model_kv *kv) {
  if (!kv) return;
  const yk_device *dev = kv->dev;
  dev->ops->free(dev, kv->k);
  dev->ops->free(dev, kv->v);
  dev->ops->free(dev, kv->x); /* the start of the activation block */
  free(kv->off);
  free(kv);
}

void yk_model_kv_reset(yk_model_kv *kv) { kv->len = 0; }
int yk_model_kv_len(const yk_model_kv *kv) { return kv->len; }
const float *yk_model_kv_logits(const yk_model_kv *kv) { return kv->logits; }

/* Causal attention of one query over the cached positions, every head:
 * out (C) = concat_h softmax(q_h . K_h[0..n)^T / sqrt(hd)) V_h[0..n);
 * q (C), K and V (n, C) row-major (head h in channels h*hd..(h+1)*hd),
 * att (n) scratch. The softmax subtracts the row maximum, as the training
 * kernel does. */
static void attend_one(float *out, float *att, const float *q, const float *K, const float *Vv, int n, int C, int NH) {
  int hd = C / NH;
  float scale = 1.0f / sqrtf((float)hd);
  for (int h = 0; h < NH; h++) {
    const float *qh = q + (size_t)h * hd;
    float mx = -INFINITY;
    for (int t = 0; t < n; t++) {
      const float *kt = K + (size_t)t * C + (size_t)h * hd;
      float s = 0.0f;
      for (int i = 0; i < hd; i++) s += qh[i] * kt[i];
      att[t] = s * scale;
      mx = att[t] > mx ? att[t] : mx;
    }
    float sum = 0.0f;
    for (int t = 0; t < n; t++) {
      att[t] = expf(att[t] - mx);
      sum += att[t];
    }
    float inv = 1.0f / sum;
    float *oh = out + (size_t)h * hd;
    for (int i = 0; i < hd; i++) oh[i] = 0.0f;
    for (int t = 0; t < n; t++) {
      const float *vt = Vv + (size_t)t * C + (size_t)h * hd;
      float a = att[t] * inv;
      for (int i = 0; i < hd; i++) oh[i] += a * vt[i];
    }
  }
}

int yk_model_kv_step(yk_model_kv *kv, int32_t token, yk_diag *d) {
  if (token < 0 || token >= kv->V)
    return yk_errorf(d, YK_EINVAL, "token %d is outside the model's vocabulary [0, %d); use the tokenizer the model "
                     "was trained with", token, kv->V);
  if (kv->len >= kv->maxT)
    return yk_errorf(d, YK_EINVAL, "the KV cache is full (max_seq_len=%d positions); reset it or slide the window",
                     kv->maxT);
  const yk_device *dev = kv->dev;
  const yk_device_ops *o = dev->ops;
  const float *P = yk_model_params(kv->m);
  int C = kv->C, t = kv->len;
  /* x (1,C) = wte[token] + wpe[t]: the encoder over one row whose position
   * table starts at row t */
  o->encoder_fwd(dev, kv->x, &token, P + kv->wte, P + kv->wpe + (size_t)t * C, 1, 1, C);
  for (int l = 0; l < kv->L; l++) {
    const size_t *w = kv->off + (size_t)l * K_N;
    float *K = kv->k + ((size_t)l * kv->maxT) * C, *Vc = kv->v + ((size_t)l * kv->maxT) * C;
    o->layernorm_fwd(dev, kv->ln, &kv->mean, &kv->rstd, kv->x, P + w[K_LN1W], P + w[K_LN1B], 1, C);
    /* qkv (1,3C) = qkvb + ln (1,C) . qkvw (3C,C)^T */
    o->bias_rows(dev, kv->qkv, P + w[K_QKVB], NULL, 1, 3 * C);
    o->gemm(dev, 0, 1, 1, 3 * C, C, 1.0f, kv->ln, C, P + w[K_QKVW], C, 1.0f, kv->qkv, 3 * C);
    memcpy(K + (size_t)t * C, kv->qkv + C, (size_t)C * sizeof(float));
    memcpy(Vc + (size_t)t * C, kv->qkv + 2 * C, (size_t)C * sizeof(float));
    attend_one(kv->atty, kv->att, kv->qkv, K, Vc, t + 1, C, kv->NH);
    /* res (1,C) = x + attprojb + atty . attprojw^T */
    o->bias_rows(dev, kv->res, P + w[K_PROJB], kv->x, 1, C);
    o->gemm(dev, 0, 1, 1, C, C, 1.0f, kv->atty, C, P + w[K_PROJW], C, 1.0f, kv->res, C);
    o->layernorm_fwd(dev, kv->ln, &kv->mean, &kv->rstd, kv->res, P + w[K_LN2W], P + w[K_LN2B], 1, C);
    /* fch (1,4C) = fcb + ln . fcw (4C,C)^T; gelu */
    o->bias_rows(dev, kv->fch, P + w[K_FCB], NULL, 1, 4 * C);
    o->gemm(dev, 0, 1, 1, 4 * C, C, 1.0f, kv->ln, C, P + w[K_FCW], C, 1.0f, kv->fch, 4 * C);
    o->gelu_fwd(dev, kv->gelu, kv->fch, 4 * (size_t)C);
    /* x (1,C) = res + fcprojb + gelu (1,4C) . fcprojw (C,4C)^T */
    o->bias_rows(dev, kv->x, P + w[K_FCPROJB], kv->res, 1, C);
    o->gemm(dev, 0, 1, 1, C, 4 * C, 1.0f, kv->gelu, 4 * C, P + w[K_FCPROJW], 4 * C, 1.0f, kv->x, C);
  }
  o->layernorm_fwd(dev, kv->ln, &kv->mean, &kv->rstd, kv->x, P + kv->lnfw, P + kv->lnfb, 1, C);
  /* logits (1,Vp) = lnf (1,C) . wte (Vp,C)^T */
  o->gemm(dev, 0, 1, 1, kv->Vp, C, 1.0f, kv->ln, C, P + kv->wte, C, 0.0f, kv->logits, kv->Vp);
  kv->len++;
  return 0;
}

/* ---- sampling ------------------------------------------------------------ */

static int cmp_desc(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return x < y ? 1 : x > y ? -1 : 0;
}

int yk_model_sample_pick(const float *logits, int V, const yk_model_sample_opts *o, yk_rng *rng, int32_t *out,
                         yk_diag *d) {
  if (V <= 0) return yk_errorf(d, YK_EINVAL, "sampling needs a vocabulary of at least one token, got %d", V);
  if (!(o->temperature >= 0.0f) || !isfinite(o->temperature))
    return yk_errorf(d, YK_EINVAL, "temperature %g must be a finite number >= 0 (0: greedy)", (double)o->temperature);
  if (o->top_k < 0) return yk_errorf(d, YK_EINVAL, "top-k %d must be >= 0 (0: every token)", o->top_k);
  int best = 0;
  for (int i = 1; i < V; i++)
    if (logits[i] > logits[best]) best = i;
  if (!isfinite(logits[best]))
    return yk_errorf(d, YK_ENONFINITE, "the model's largest logit is %g (non-finite); the weights are damaged",
                     (double)logits[best]);
  if (o->temperature == 0.0f || o->top_k == 1) {
    *out = best;
    return 0;
  }
  /* top-k: keep the logits >= the k-th largest (ties at the threshold are
   * all kept, so the result does not depend on a sort's tie order) */
  float thresh = -INFINITY;
  if (o->top_k > 0 && o->top_k < V) {
    float *s = malloc((size_t)V * sizeof *s);
    if (!s) return yk_errorf(d, YK_ENOMEM, "out of memory for top-k over %d tokens", V);
    memcpy(s, logits, (size_t)V * sizeof *s);
    qsort(s, (size_t)V, sizeof *s, cmp_desc);
    thresh = s[o->top_k - 1];
    free(s);
  }
  /* softmax(logits / T) over the kept tokens, then one uniform draw */
  double inv_t = 1.0 / o->temperature, sum = 0.0;
  for (int i = 0; i < V; i++)
    if (logits[i] >= thresh) sum += exp(((double)logits[i] - logits[best]) * inv_t);
  double r = (double)yk_rng_uniform(rng) * sum, acc = 0.0;
  int last = best;
  for (int i = 0; i < V; i++) {
    if (logits[i] < thresh) continue;
    acc += exp(((double)logits[i] - logits[best]) * inv_t);
    last = i;
    if (r < acc) break;
  }
  *out = last;
  return 0;
}

/* ---- the generation loop -------------------------------------------------- */

/* Feed tokens hist[0..n) into an emptied cache. */
static int refill(yk_model_kv *kv, const int32_t *hist, int n, yk_diag *d) {
  yk_model_kv_reset(kv);
  for (int i = 0; i < n; i++) {
    int rc = yk_model_kv_step(kv, hist[i], d);
    if (rc) return rc;
  }
  return 0;
}

/* Append tok to the context: when the cache is full, rebuild it from the
 * last maxT/2 tokens of hist[0..n) (which ends just before tok) first. */
static int push(yk_model_kv *kv, const int32_t *hist, int n, int32_t tok, int *slides, yk_diag *d) {
  if (kv->len == kv->maxT) {
    int keep = kv->maxT / 2;
    int rc = refill(kv, hist + n - keep, keep, d);
    if (rc) return rc;
    (*slides)++;
  }
  return yk_model_kv_step(kv, tok, d);
}

int yk_model_generate(yk_model_kv *kv, const int32_t *prompt, int nprompt, int ntokens, const yk_model_sample_opts *o,
                      yk_model_token_fn emit, void *ctx, yk_model_generate_stats *st, yk_diag *d) {
  yk_model_generate_stats dummy;
  if (!st) st = &dummy;
  memset(st, 0, sizeof *st);
  if (nprompt < 1) return yk_errorf(d, YK_EINVAL, "the prompt has no tokens; give at least one");
  if (ntokens < 1) return yk_errorf(d, YK_EINVAL, "tokens to generate %d must be >= 1", ntokens);
  for (int i = 0; i < nprompt; i++)
    if (prompt[i] < 0 || prompt[i] >= kv->V)
      return yk_errorf(d, YK_EINVAL, "prompt token %d at position %d is outside the model's vocabulary [0, %d); "
                       "use the tokenizer the model was trained with", prompt[i], i, kv->V);
  /* history: the prompt's last maxT tokens (the model sees no more) and
   * every generated token */
  int skip = nprompt > kv->maxT ? nprompt - kv->maxT : 0;
  int cap = nprompt - skip + ntokens;
  int32_t *hist = malloc((size_t)cap * sizeof *hist);
  if (!hist) return yk_errorf(d, YK_ENOMEM, "out of memory for %d tokens of history", cap);
  int n = 0, rc = 0;
  yk_rng rng;
  yk_rng_seed(&rng, o->seed);
  yk_model_kv_reset(kv);
  st->prompt_dropped = skip;
  for (int i = skip; i < nprompt && !rc; i++) {
    rc = push(kv, hist, n, prompt[i], &st->slides, d);
    hist[n++] = prompt[i];
  }
  for (int g = 0; g < ntokens && !rc; g++) {
    int32_t tok;
    rc = yk_model_sample_pick(kv->logits, kv->V, o, &rng, &tok, d);
    if (rc) break;
    rc = emit(ctx, tok, d);
    st->generated++;
    if (rc) {
      rc = rc > 0 ? 0 : rc;
      break;
    }
    if (g + 1 < ntokens) { /* the last token's logits are never needed */
      rc = push(kv, hist, n, tok, &st->slides, d);
      hist[n++] = tok;
    }
  }
  free(hist);
  return rc;
}
