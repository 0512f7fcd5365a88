/* schedule.c - the operations of one step, as data: building the
 * data-parallel schedule, the static checks every schedule passes before it
 * runs, and a one-line description for the log. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "yk_engine.h"

static yk_sched_op op_make(yk_sched_kind k, int micro, int l0, int l1, int reduce) {
  return (yk_sched_op){.kind = k, .micro = micro, .layer_first = l0, .layer_last = l1, .reduce = reduce, .peer = -1};
}

int yk_engine_schedule_dp(int accum, int layers, yk_schedule *s, yk_diag *d) {
  if (accum < 1 || accum > (YK_SCHED_MAX_OPS - 2) / 2)
    return yk_errorf(d, YK_ECONFIG, "train.grad_accum=%d: a step holds 1 to %d micro-batches", accum,
                     (YK_SCHED_MAX_OPS - 2) / 2);
  s->n = 0;
  s->micro_batches = accum;
  /* Each micro-batch's backward runs right after its forward, so only one
   * micro-batch of activations is alive at a time; the last backward is the
   * one whose gradients are final, so it reduces. */
  for (int m = 0; m < accum; m++) {
    s->ops[s->n++] = op_make(YK_SCHED_FORWARD, m, 0, layers, 0);
    s->ops[s->n++] = op_make(YK_SCHED_BACKWARD, m, 0, layers, m == accum - 1);
  }
  s->ops[s->n++] = op_make(YK_SCHED_REDUCE, -1, 0, 0, 0);
  s->ops[s->n++] = op_make(YK_SCHED_UPDATE, -1, 0, 0, 0);
  return 0;
}

int yk_engine_schedule_check(const yk_schedule *s, int layers, yk_diag *d) {
  enum { NONE = 0, FWD = 1, BWD = 2 };
  int m = s->micro_batches;
  if (m < 1 || m > YK_SCHED_MAX_OPS || s->n < 2 || s->n > YK_SCHED_MAX_OPS)
    return yk_errorf(d, YK_EINVAL, "schedule: %d operations for %d micro-batches", s->n, m);
  unsigned char state[YK_SCHED_MAX_OPS];
  memset(state, NONE, (size_t)m);
  int reducing = -1, backwards = 0;
  for (int i = 0; i < s->n; i++) {
    const yk_sched_op *op = &s->ops[i];
    int tail = i >= s->n - 2;
    switch (op->kind) {
    case YK_SCHED_FORWARD:
    case YK_SCHED_BACKWARD:
      if (tail) return yk_errorf(d, YK_EINVAL, "schedule op %d: compute after the reduction", i);
      if (op->micro < 0 || op->micro >= m)
        return yk_errorf(d, YK_EINVAL, "schedule op %d: micro-batch %d outside [0, %d)", i, op->micro, m);
      if (op->layer_first < 0 || op->layer_first >= op->layer_last || op->layer_last > layers)
        return yk_errorf(d, YK_EINVAL, "schedule op %d: layers [%d, %d) outside [0, %d)", i, op->layer_first,
                         op->layer_last, layers);
      if (op->layer_first != 0 || op->layer_last != layers)
        return yk_errorf(d, YK_EUNSUPPORTED, "schedule op %d: layers [%d, %d) of %d: one rank runs every layer until "
                         "pipeline parallelism is built", i, op->layer_first, op->layer_last, layers);
      if (op->kind == YK_SCHED_FORWARD) {
        if (state[op->micro] != NONE)
          return yk_errorf(d, YK_EINVAL, "schedule op %d: second forward of micro-batch %d", i, op->micro);
        state[op->micro] = FWD;
        break;
      }
      if (state[op->micro] != FWD)
        return yk_errorf(d, YK_EINVAL, "schedule op %d: backward of micro-batch %d %s", i, op->micro,
                         state[op->micro] == NONE ? "before its forward" : "twice");
      state[op->micro] = BWD;
      backwards++;
      if (op->reduce) {
        if (reducing >= 0) return yk_errorf(d, YK_EINVAL, "schedule op %d: a second reducing backward", i);
        reducing = i;
      }
      break;
    case YK_SCHED_REDUCE:
      if (i != s->n - 2) return yk_errorf(d, YK_EINVAL, "schedule op %d: REDUCE must be next to last", i);
      break;
    case YK_SCHED_UPDATE:
      if (i != s->n - 1) return yk_errorf(d, YK_EINVAL, "schedule op %d: UPDATE must be last", i);
      break;
    default: return yk_errorf(d, YK_EINVAL, "schedule op %d: unknown kind %d", i, (int)op->kind);
    }
  }
  if (s->ops[s->n - 2].kind != YK_SCHED_REDUCE || s->ops[s->n - 1].kind != YK_SCHED_UPDATE)
    return yk_errorf(d, YK_EINVAL, "schedule: must end with REDUCE, UPDATE");
  if (backwards != m) return yk_errorf(d, YK_EINVAL, "schedule: %d of %d micro-batches have a backward", backwards, m);
  /* The reducing backward must be the last one: gradients are final only
   * after every micro-batch has been accumulated. */
  for (int i = reducing + 1; reducing >= 0 && i < s->n; i++)
    if (s->ops[i].kind == YK_SCHED_BACKWARD)
      return yk_errorf(d, YK_EINVAL, "schedule op %d: backward after the reducing one (op %d)", i, reducing);
  if (reducing < 0) return yk_errorf(d, YK_EINVAL, "schedule: no backward reduces the gradients");
  return 0;
}

void yk_engine_schedule_describe(const yk_schedule *s, char *buf, size_t cap) {
  size_t used = 0;
  int multi = 0; /* the stage holds more than one chunk: name it */
  for (int i = 1; i < s->n; i++)
    multi |= s->ops[i].chunk != s->ops[0].chunk && s->ops[i].kind != YK_SCHED_REDUCE && s->ops[i].kind != YK_SCHED_UPDATE;
  buf[0] = '\0';
  for (int i = 0; i < s->n && used + 32 < cap; i++) {
    const yk_sched_op *op = &s->ops[i];
    /* Long schedules: the first and last three micro-batches. */
    if (s->micro_batches > 8 && op->micro >= 3 && op->micro < s->micro_batches - 3) {
      if (op->micro == 3 && op->kind == YK_SCHED_FORWARD) used += (size_t)snprintf(buf + used, cap - used, "... ");
      continue;
    }
    int n = 0;
    switch (op->kind) {
    case YK_SCHED_FORWARD: n = snprintf(buf + used, cap - used, "F%d ", op->micro); break;
    case YK_SCHED_BACKWARD: n = snprintf(buf + used, cap - used, "B%d%s ", op->micro, op->reduce ? "+" : ""); break;
    case YK_SCHED_REDUCE: n = snprintf(buf + used, cap - used, "R "); break;
    case YK_SCHED_UPDATE: n = snprintf(buf + used, cap - used, "U "); break;
    case YK_SCHED_SEND_ACT:
    case YK_SCHED_RECV_ACT:
    case YK_SCHED_SEND_GRAD:
    case YK_SCHED_RECV_GRAD: {
      static const char *const k[] = {"sa", "ra", "sg", "rg"};
      n = snprintf(buf + used, cap - used, "%s%d ", k[op->kind - YK_SCHED_SEND_ACT], op->micro);
      break;
    }
    default: n = snprintf(buf + used, cap - used, "? "); break;
    }
    /* interleaved: ".c" names the chunk after the micro-batch */
    if (multi && op->kind != YK_SCHED_REDUCE && op->kind != YK_SCHED_UPDATE && n > 1 &&
        used + (size_t)n + 8 < cap) {
      int plus = buf[used + (size_t)n - 2] == '+';
      n = n - 1 - plus + snprintf(buf + used + n - 1 - plus, cap - used - (size_t)n, ".%d%s ", op->chunk,
                                  plus ? "+" : "");
    }
    used += (size_t)n;
  }
  if (used) buf[used - 1] = '\0';
}

/* ------------------------------------------------------------------------ */
/* Pipeline schedules                                                       */
/* ------------------------------------------------------------------------ */

const char *yk_engine_pipe_kind_name(yk_pipe_kind k) {
  switch (k) {
  case YK_PIPE_GPIPE: return "gpipe";
  case YK_PIPE_1F1B: return "1f1b";
  case YK_PIPE_INTERLEAVED: return "interleaved";
  }
  return "?";
}

/* Forward + backward FLOPs per token of one block, and of the embedding and
 * the head (LM head product and cross-entropy): yk_model_flops_per_token's
 * terms, split by where they run. The embedding's lookup is a copy, but its
 * backward scatters into wte: counted as one pass over C. */
static double cost_block(const yk_model_config *mc, int T) {
  double C = mc->channels;
  return 6.0 * 12.0 * C * C + 12.0 * C * T;
}
static double cost_head(const yk_model_config *mc) { return 6.0 * (double)mc->channels * mc->vocab_size; }
static double cost_embed(const yk_model_config *mc) { return 3.0 * (double)mc->channels; }

int yk_engine_pipe_balance(const yk_model_config *mc, int T, int chunks, int *bounds, yk_diag *d) {
  int L = mc->layers;
  if (chunks < 1 || chunks > YK_PIPE_MAX_CHUNKS || L < chunks)
    return yk_errorf(d, YK_ECONFIG, "%d layers cannot be cut into %d pipeline chunks of at least one layer each; "
                     "lower parallel.pipeline x parallel.virtual_stages (at most %d)", L, chunks,
                     YK_MIN(L, YK_PIPE_MAX_CHUNKS));
  /* best[k][l]: the smallest possible most expensive chunk when the first k
   * chunks hold blocks [0, l); cut[k][l] the start of the k-th chunk. A
   * chunk's cost: its blocks, plus the embedding (first) and head (last). */
  enum { MAXL = 1025 };
  if (L >= MAXL) return yk_errorf(d, YK_ECONFIG, "model.layers=%d: pipeline balancing handles up to %d", L, MAXL - 1);
  static const double inf = 1e300;
  double blk = cost_block(mc, T), *best = malloc(sizeof(double) * (size_t)(chunks + 1) * (size_t)(L + 1));
  int *cut = malloc(sizeof(int) * (size_t)(chunks + 1) * (size_t)(L + 1));
  if (!best || !cut) {
    free(best);
    free(cut);
    return yk_errorf(d, YK_ENOMEM, "out of memory balancing the pipeline");
  }
#define AT(a, k, l) a[(size_t)(k) * (size_t)(L + 1) + (size_t)(l)]
  for (int k = 0; k <= chunks; k++)
    for (int l = 0; l <= L; l++) AT(best, k, l) = inf;
  AT(best, 0, 0) = 0;
  for (int k = 1; k <= chunks; k++)
    for (int l = k; l <= L - (chunks - k); l++)
      for (int a = k - 1; a < l; a++) {
        if (AT(best, k - 1, a) >= inf) continue;
        double c = (l - a) * blk + (a == 0 ? cost_embed(mc) : 0) + (l == L ? cost_head(mc) : 0);
        double v = YK_MAX(AT(best, k - 1, a), c);
        /* ties: the later cut, which leaves the last chunk (the head) lighter */
        if (v <= AT(best, k, l)) {
          AT(best, k, l) = v;
          AT(cut, k, l) = a;
        }
      }
  bounds[chunks] = L;
  for (int k = chunks; k > 0; k--) bounds[k - 1] = AT(cut, k, bounds[k]);
#undef AT
  free(best);
  free(cut);
  return 0;
}

int yk_engine_pipe_plan(const yk_config *c, const yk_model_config *mc, yk_pipe_plan *p, yk_diag *d) {
  memset(p, 0, sizeof *p);
  p->stages = (int)c->parallel.pipeline;
  p->vstages = (int)c->parallel.virtual_stages;
  p->micro_batches = (int)c->train.grad_accum;
  p->layers = mc->layers;
  int K = p->stages * p->vstages;
  const char *k = c->parallel.schedule;
  if (!strcmp(k, "gpipe")) p->kind = YK_PIPE_GPIPE;
  else if (!strcmp(k, "1f1b")) p->kind = YK_PIPE_1F1B;
  else if (!strcmp(k, "interleaved")) p->kind = YK_PIPE_INTERLEAVED;
  else p->kind = p->vstages > 1 ? YK_PIPE_INTERLEAVED : YK_PIPE_1F1B; /* auto: the smallest bubble */
  if (p->kind == YK_PIPE_1F1B && p->vstages > 1)
    return yk_errorf(d, YK_ECONFIG, "parallel.schedule=1f1b runs one chunk per stage, but parallel.virtual_stages=%d; "
                     "use parallel.schedule=interleaved (or gpipe)", p->vstages);
  if (p->kind == YK_PIPE_INTERLEAVED && p->vstages < 2)
    return yk_errorf(d, YK_ECONFIG, "parallel.schedule=interleaved needs parallel.virtual_stages >= 2 (now %d); use "
                     "1f1b for one chunk per stage", p->vstages);
  if (p->vstages > 1 && p->micro_batches % p->stages)
    return yk_errorf(d, YK_ECONFIG, "train.grad_accum=%d: with parallel.virtual_stages=%d the micro-batches go in "
                     "groups of parallel.pipeline=%d; use a multiple of %d", p->micro_batches, p->vstages, p->stages,
                     p->stages);
  if (K > YK_PIPE_MAX_CHUNKS)
    return yk_errorf(d, YK_ECONFIG, "parallel.pipeline x parallel.virtual_stages = %d chunks; at most %d", K,
                     YK_PIPE_MAX_CHUNKS);
  if (!c->parallel.stage_layers[0]) return yk_engine_pipe_balance(mc, (int)c->train.seq_len, K, p->bounds, d);
  /* "3,1": blocks per chunk, in chunk order */
  const char *s = c->parallel.stage_layers;
  int n = 0, sum = 0;
  while (*s) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || v < 1 || v > 100000)
      return yk_errorf(d, YK_ECONFIG, "parallel.stage_layers=\"%s\": entry %d is not a layer count >= 1; write "
                       "one count per chunk, e.g. \"3,1\"", c->parallel.stage_layers, n + 1);
    if (n >= K) break;
    p->bounds[n + 1] = p->bounds[n] + (int)v;
    sum += (int)v;
    n++;
    s = end;
    while (*s == ',' || *s == ' ') s++;
  }
  if (n != K || *s)
    return yk_errorf(d, YK_ECONFIG, "parallel.stage_layers=\"%s\" has %s%d entries; give one per chunk: "
                     "parallel.pipeline x parallel.virtual_stages = %d", c->parallel.stage_layers, *s ? "more than " : "",
                     n, K);
  if (sum != mc->layers)
    return yk_errorf(d, YK_ECONFIG, "parallel.stage_layers=\"%s\" sums to %d layers, the model has %d",
                     c->parallel.stage_layers, sum, mc->layers);
  return 0;
}

/* Warm-up forwards of a stage: how many micro-batch chunks it runs before
 * its first backward. GPipe: all of them. 1F1B: enough to fill the stages
 * after it. Interleaved: twice that (a micro-batch's later chunk comes back
 * round the ring) plus a whole first pass over the other V - 1 chunks. */
static int warmup(const yk_pipe_plan *p, int stage) {
  int P = p->stages, V = p->vstages, total = V * p->micro_batches, w;
  switch (p->kind) {
  case YK_PIPE_1F1B: w = P - stage - 1; break;
  case YK_PIPE_INTERLEAVED: w = p->micro_batches == P ? total : (P - stage - 1) * 2 + (V - 1) * P; break;
  default: w = total;
  }
  return YK_MIN(w, total);
}

/* The k-th forward (or backward) of any stage: micro-batches in groups of
 * P, each group through chunk 0, 1, ... V-1 of the stage (backward: V-1
 * first). With V = 1 it is simply micro-batch k. */
static void unit(const yk_pipe_plan *p, int k, int backward, int *v, int *micro) {
  int P = p->stages, V = p->vstages, g = k / (P * V), r = k % (P * V);
  *v = backward ? V - 1 - r / P : r / P;
  *micro = g * P + r % P;
}

typedef struct builder {
  yk_schedule *s;
  const yk_pipe_plan *p;
  int stage, ok;
} builder;

static void put(builder *b, yk_sched_kind k, int micro, int chunk, int peer) {
  if (b->s->n >= YK_SCHED_MAX_OPS - 2) {
    b->ok = 0;
    return;
  }
  yk_sched_op op = op_make(k, micro, 0, 0, 0);
  op.chunk = chunk;
  op.peer = peer;
  if (k == YK_SCHED_FORWARD || k == YK_SCHED_BACKWARD) {
    op.layer_first = b->p->bounds[chunk];
    op.layer_last = b->p->bounds[chunk + 1];
    op.peer = -1;
  }
  b->s->ops[b->s->n++] = op;
}

/* One forward of a chunk with its traffic: the input from the previous
 * chunk's stage, the output to the next one's. */
static void fwd(builder *b, int k) {
  int v, micro, P = b->p->stages, K = P * b->p->vstages;
  unit(b->p, k, 0, &v, &micro);
  int c = v * P + b->stage;
  if (c > 0) put(b, YK_SCHED_RECV_ACT, micro, c, (b->stage + P - 1) % P);
  put(b, YK_SCHED_FORWARD, micro, c, -1);
  if (c < K - 1) put(b, YK_SCHED_SEND_ACT, micro, c, (b->stage + 1) % P);
}

static void bwd(builder *b, int k) {
  int v, micro, P = b->p->stages, K = P * b->p->vstages;
  unit(b->p, k, 1, &v, &micro);
  int c = v * P + b->stage;
  if (c < K - 1) put(b, YK_SCHED_RECV_GRAD, micro, c, (b->stage + 1) % P);
  put(b, YK_SCHED_BACKWARD, micro, c, -1);
  if (c > 0) put(b, YK_SCHED_SEND_GRAD, micro, c, (b->stage + P - 1) % P);
}

int yk_engine_schedule_pipeline(const yk_pipe_plan *p, int stage, yk_schedule *s, yk_diag *d) {
  int P = p->stages, V = p->vstages, m = p->micro_batches;
  if (P < 1 || V < 1 || P * V > YK_PIPE_MAX_CHUNKS || stage < 0 || stage >= P || m < 1 ||
      (V > 1 && m % P))
    return yk_errorf(d, YK_EINVAL, "pipeline plan: stage %d of %d, %d chunks per stage, %d micro-batches", stage, P,
                     V, m);
  builder b = {.s = s, .p = p, .stage = stage, .ok = 1};
  s->n = 0;
  s->micro_batches = m;
  int total = V * m, w = warmup(p, stage);
  /* warm-up: forwards only, filling the stages after this one */
  for (int k = 0; k < w; k++) fwd(&b, k);
  /* steady state: one forward, one backward */
  for (int i = 0; i < total - w; i++) {
    fwd(&b, w + i);
    bwd(&b, i);
  }
  /* cool-down: the backwards still owed */
  for (int i = total - w; i < total; i++) bwd(&b, i);
  if (!b.ok)
    return yk_errorf(d, YK_ECONFIG, "train.grad_accum=%d: a pipeline step of stage %d needs more than %d "
                     "operations; use fewer micro-batches", m, stage, YK_SCHED_MAX_OPS);
  for (int i = s->n - 1; i >= 0; i--)
    if (s->ops[i].kind == YK_SCHED_BACKWARD) {
      s->ops[i].reduce = 1;
      break;
    }
  s->ops[s->n++] = op_make(YK_SCHED_REDUCE, -1, 0, 0, 0);
  s->ops[s->n++] = op_make(YK_SCHED_UPDATE, -1, 0, 0, 0);
  return 0;
}

int yk_engine_schedule_max_alive(const yk_schedule *s) {
  int alive = 0, most = 0;
  for (int i = 0; i < s->n; i++) {
    if (s->ops[i].kind == YK_SCHED_FORWARD && ++alive > most) most = alive;
    if (s->ops[i].kind == YK_SCHED_BACKWARD) alive--;
  }
  return most;
}

/* ---- the pipeline checker ------------------------------------------------ */

static const char *kind_name(yk_sched_kind k) {
  static const char *const n[] = {"?", "FORWARD", "BACKWARD", "REDUCE", "UPDATE", "SEND_ACT", "RECV_ACT",
                                  "SEND_GRAD", "RECV_GRAD"};
  return (unsigned)k < sizeof n / sizeof n[0] ? n[k] : "?";
}

/* "stage 1 op 7 (RECV_ACT micro 2 chunk 1 from stage 0)" */
static const char *op_text(const yk_schedule *all, int st, int i, char *buf, size_t cap) {
  const yk_sched_op *o = &all[st].ops[i];
  int n = snprintf(buf, cap, "stage %d op %d (%s", st, i, kind_name(o->kind));
  if (o->kind != YK_SCHED_REDUCE && o->kind != YK_SCHED_UPDATE)
    n += snprintf(buf + n, cap - (size_t)n, " micro %d chunk %d", o->micro, o->chunk);
  if (o->kind >= YK_SCHED_SEND_ACT)
    n += snprintf(buf + n, cap - (size_t)n, " %s stage %d",
                  o->kind == YK_SCHED_SEND_ACT || o->kind == YK_SCHED_SEND_GRAD ? "to" : "from", o->peer);
  snprintf(buf + n, cap - (size_t)n, ")");
  return buf;
}

/* The in-flight bound of a stage's schedule (activation memory). */
static int alive_bound(const yk_pipe_plan *p, int stage) {
  int P = p->stages, total = p->vstages * p->micro_batches;
  switch (p->kind) {
  case YK_PIPE_1F1B: return YK_MIN(total, P - stage);
  case YK_PIPE_INTERLEAVED: return YK_MIN(total, warmup(p, stage) + 1);
  default: return total;
  }
}

enum { F_IN = 1, F_FWD = 2, F_OUT = 4, F_GIN = 8, F_BWD = 16, F_GOUT = 32 };

/* One stage's list on its own: the data each op needs is there. */
static int check_stage(const yk_pipe_plan *p, const yk_schedule *all, int st, unsigned char *flags, yk_diag *d) {
  const yk_schedule *s = &all[st];
  int P = p->stages, K = P * p->vstages, m = p->micro_batches, reducing = -1, alive = 0, bound = alive_bound(p, st);
  char t[160];
  memset(flags, 0, (size_t)K * (size_t)m);
  if (s->n < 2 || s->n > YK_SCHED_MAX_OPS || s->micro_batches != m)
    return yk_errorf(d, YK_EINVAL, "stage %d: %d operations for %d micro-batches (plan: %d)", st, s->n,
                     s->micro_batches, m);
  for (int i = 0; i < s->n; i++) {
    const yk_sched_op *o = &s->ops[i];
    if (o->kind == YK_SCHED_REDUCE || o->kind == YK_SCHED_UPDATE) {
      if (i != s->n - (o->kind == YK_SCHED_REDUCE ? 2 : 1))
        return yk_errorf(d, YK_EINVAL, "%s: REDUCE and UPDATE must be the last two operations",
                         op_text(all, st, i, t, sizeof t));
      continue;
    }
    if (o->kind < YK_SCHED_FORWARD || o->kind > YK_SCHED_RECV_GRAD || o->kind == YK_SCHED_REDUCE)
      return yk_errorf(d, YK_EINVAL, "stage %d op %d: unknown kind %d", st, i, (int)o->kind);
    if (o->micro < 0 || o->micro >= m || o->chunk < 0 || o->chunk >= K || o->chunk % P != st)
      return yk_errorf(d, YK_EINVAL, "%s: micro-batch outside [0, %d) or a chunk stage %d does not hold",
                       op_text(all, st, i, t, sizeof t), m, st);
    if (i >= s->n - 2) return yk_errorf(d, YK_EINVAL, "%s: after the reduction", op_text(all, st, i, t, sizeof t));
    unsigned char *f = &flags[(size_t)o->chunk * (size_t)m + (size_t)o->micro];
    int c = o->chunk, next = (st + 1) % P, prev = (st + P - 1) % P;
    const char *bad = NULL;
    switch (o->kind) {
    case YK_SCHED_RECV_ACT:
      bad = c == 0 ? "the first chunk has no input to receive" : o->peer != prev ? "from the wrong stage"
            : (*f & F_IN) ? "a second time" : (*f & F_FWD) ? "after its forward" : NULL;
      *f |= F_IN;
      break;
    case YK_SCHED_FORWARD:
      bad = o->layer_first != p->bounds[c] || o->layer_last != p->bounds[c + 1] ? "layers are not the chunk's"
            : (*f & F_FWD) ? "a second time" : (c > 0 && !(*f & F_IN)) ? "before its input arrived" : NULL;
      *f |= F_FWD;
      if (++alive > bound && !bad) bad = "more micro-batches alive than the schedule's memory bound";
      break;
    case YK_SCHED_SEND_ACT:
      bad = c == K - 1 ? "the last chunk's output is the loss, not sent" : o->peer != next ? "to the wrong stage"
            : !(*f & F_FWD) ? "before its forward" : (*f & F_OUT) ? "a second time" : NULL;
      *f |= F_OUT;
      break;
    case YK_SCHED_RECV_GRAD:
      bad = c == K - 1 ? "the last chunk starts backward from the loss" : o->peer != next ? "from the wrong stage"
            : !(*f & F_FWD) ? "before its forward" : (*f & F_GIN) ? "a second time" : NULL;
      *f |= F_GIN;
      break;
    case YK_SCHED_BACKWARD:
      bad = o->layer_first != p->bounds[c] || o->layer_last != p->bounds[c + 1] ? "layers are not the chunk's"
            : !(*f & F_FWD) ? "before its forward" : (*f & F_BWD) ? "a second time"
            : (c < K - 1 && !(*f & F_GIN)) ? "before its output's gradient arrived" : NULL;
      *f |= F_BWD;
      alive--;
      if (o->reduce) {
        if (reducing >= 0 && !bad) bad = "a second reducing backward";
        reducing = i;
      } else if (reducing >= 0 && !bad) {
        bad = "a backward after the reducing one";
      }
      break;
    case YK_SCHED_SEND_GRAD:
      bad = c == 0 ? "the first chunk has no input gradient to send" : o->peer != prev ? "to the wrong stage"
            : !(*f & F_BWD) ? "before its backward" : (*f & F_GOUT) ? "a second time" : NULL;
      *f |= F_GOUT;
      break;
    default: break;
    }
    if (bad) return yk_errorf(d, YK_EINVAL, "%s: %s", op_text(all, st, i, t, sizeof t), bad);
  }
  if (s->ops[s->n - 2].kind != YK_SCHED_REDUCE || s->ops[s->n - 1].kind != YK_SCHED_UPDATE)
    return yk_errorf(d, YK_EINVAL, "stage %d: the list must end with REDUCE, UPDATE", st);
  for (int c = st; c < K; c += P)
    for (int mb = 0; mb < m; mb++) {
      unsigned f = flags[(size_t)c * (size_t)m + (size_t)mb];
      unsigned want = F_FWD | F_BWD | (c > 0 ? F_IN | F_GOUT : 0) | (c < K - 1 ? F_OUT | F_GIN : 0);
      if ((f & want) != want) {
        static const char *const what[] = {"receive of its input", "forward", "send of its output",
                                           "receive of its output's gradient", "backward", "send of its input's gradient"};
        int miss = 0;
        while (!((want & ~f) & (1u << miss))) miss++;
        return yk_errorf(d, YK_EINVAL, "stage %d: micro-batch %d of chunk %d has no %s", st, mb, c, what[miss]);
      }
    }
  if (reducing < 0) return yk_errorf(d, YK_EINVAL, "stage %d: no backward reduces the gradients", st);
  return 0;
}

/* A message between neighbouring stages: activations into chunk c, or the
 * gradient of chunk c's output, of one micro-batch. */
typedef struct chan_msg {
  int micro, chunk, stage, op;
} chan_msg;
typedef struct chan {
  chan_msg *sent, *recvd;
  int nsent, nrecvd;
} chan;

/* Channels: 2P, activations from stage s (index s) and gradients from stage
 * s (index P + s); each has exactly one sender and one receiver. */
static int chan_of(const yk_pipe_plan *p, int st, const yk_sched_op *o) {
  int P = p->stages;
  switch (o->kind) {
  case YK_SCHED_SEND_ACT: return st;
  case YK_SCHED_RECV_ACT: return o->peer;
  case YK_SCHED_SEND_GRAD: return P + st;
  case YK_SCHED_RECV_GRAD: return P + o->peer;
  default: return -1;
  }
}

/* The message a SEND or RECV op moves, named by the chunk that receives it. */
static chan_msg msg_of(int st, int i, const yk_sched_op *o) {
  int c = o->chunk;
  if (o->kind == YK_SCHED_SEND_ACT) c++;
  if (o->kind == YK_SCHED_SEND_GRAD) c--;
  return (chan_msg){.micro = o->micro, .chunk = c, .stage = st, .op = i};
}

static int match(const yk_schedule *all, chan *ch, int k, yk_diag *d) {
  chan_msg *a = &ch->sent[k], *b = &ch->recvd[k];
  if (a->micro == b->micro && a->chunk == b->chunk) return 0;
  char t1[160], t2[160];
  return yk_errorf(d, YK_EINVAL, "%s receives what %s sends: messages on one channel must be sent and received in "
                   "the same order", op_text(all, b->stage, b->op, t1, sizeof t1),
                   op_text(all, a->stage, a->op, t2, sizeof t2));
}

int yk_engine_schedule_check_pipeline(const yk_pipe_plan *p, const yk_schedule *all, int max_sends, yk_diag *d) {
  int P = p->stages, K = P * p->vstages, m = p->micro_batches, rc = 0;
  if (P < 1 || K > YK_PIPE_MAX_CHUNKS || m < 1 || max_sends < 1)
    return yk_errorf(d, YK_EINVAL, "pipeline plan: %d stages, %d chunks, %d micro-batches, %d sends", P, K, m,
                     max_sends);
  for (int c = 0; c < K; c++)
    if (p->bounds[c] >= p->bounds[c + 1] || p->bounds[0] != 0 || p->bounds[K] != p->layers)
      return yk_errorf(d, YK_EINVAL, "pipeline plan: chunk %d holds layers [%d, %d) of %d", c, p->bounds[c],
                       p->bounds[c + 1], p->layers);
  unsigned char *flags = malloc((size_t)K * (size_t)m);
  chan *ch = calloc(2 * (size_t)P, sizeof *ch);
  /* the simulation: per stage its next op, whether that op's receive was
   * posted, and its sends in flight (channel, index) oldest first */
  int *pc = calloc((size_t)P, sizeof(int)), *posted = calloc((size_t)P, sizeof(int));
  int *fl = calloc((size_t)P * (size_t)(2 * max_sends), sizeof(int)), *nfl = calloc((size_t)P, sizeof(int));
  int ok = flags && ch && pc && posted && fl && nfl;
  for (int c = 0; ok && c < 2 * P; c++) {
    ch[c].sent = malloc(sizeof(chan_msg) * (size_t)(K * m + 1));
    ch[c].recvd = malloc(sizeof(chan_msg) * (size_t)(K * m + 1));
    ok = ch[c].sent && ch[c].recvd;
  }
  if (!ok) rc = yk_errorf(d, YK_ENOMEM, "out of memory checking the pipeline schedule");
  for (int st = 0; !rc && st < P; st++) rc = check_stage(p, all, st, flags, d);
  for (int progress = 1; !rc && progress;) {
    progress = 0;
    for (int st = 0; !rc && st < P; st++) {
      int *f = fl + (size_t)st * (size_t)(2 * max_sends);
      while (!rc && pc[st] < all[st].n) {
        const yk_sched_op *o = &all[st].ops[pc[st]];
        /* sends whose receive was posted are done (the oldest first) */
        while (nfl[st] > 0 && ch[f[0]].nrecvd > f[1]) {
          memmove(f, f + 2, sizeof(int) * (size_t)(2 * --nfl[st]));
        }
        int c = chan_of(p, st, o);
        if (o->kind == YK_SCHED_SEND_ACT || o->kind == YK_SCHED_SEND_GRAD) {
          if (nfl[st] == max_sends) break; /* waits for its oldest send */
          int k = ch[c].nsent++;
          if (k >= K * m) {
            rc = yk_errorf(d, YK_EINVAL, "stage %d op %d: more messages than the pipeline has", st, pc[st]);
            break;
          }
          ch[c].sent[k] = msg_of(st, pc[st], o);
          if (ch[c].nrecvd > k) rc = match(all, &ch[c], k, d);
          f[2 * nfl[st]] = c;
          f[2 * nfl[st] + 1] = k;
          nfl[st]++;
        } else if (o->kind == YK_SCHED_RECV_ACT || o->kind == YK_SCHED_RECV_GRAD) {
          if (!posted[st]) {
            int k = ch[c].nrecvd++;
            if (k >= K * m) {
              rc = yk_errorf(d, YK_EINVAL, "stage %d op %d: more messages than the pipeline has", st, pc[st]);
              break;
            }
            ch[c].recvd[k] = msg_of(st, pc[st], o);
            posted[st] = 1;
            progress = 1;
            if (ch[c].nsent > k) rc = match(all, &ch[c], k, d);
          }
          if (rc || ch[c].nsent < ch[c].nrecvd) break; /* waits for its send */
          posted[st] = 0;
        } else if (o->kind == YK_SCHED_REDUCE && nfl[st] > 0) {
          break; /* the step's messages must be out before its reduction */
        }
        pc[st]++;
        progress = 1;
      }
    }
  }
  for (int st = 0; !rc && st < P; st++) {
    if (pc[st] >= all[st].n) continue;
    /* Deadlock: name the first stuck op and what its peer is stuck at. */
    const yk_sched_op *o = &all[st].ops[pc[st]];
    char t1[160], t2[160];
    int peer = o->kind >= YK_SCHED_SEND_ACT ? o->peer : -1;
    if (o->kind == YK_SCHED_REDUCE || o->kind == YK_SCHED_SEND_ACT || o->kind == YK_SCHED_SEND_GRAD) {
      int *f = fl + (size_t)st * (size_t)(2 * max_sends);
      peer = (f[0] < P ? f[0] + 1 : f[0] - P + P - 1) % P; /* the receiver of the oldest send */
    }
    if (peer >= 0 && pc[peer] < all[peer].n)
      rc = yk_errorf(d, YK_EINVAL, "pipeline deadlock: %s waits for stage %d, which waits at %s",
                     op_text(all, st, pc[st], t1, sizeof t1), peer, op_text(all, peer, pc[peer], t2, sizeof t2));
    else
      rc = yk_errorf(d, YK_EINVAL, "pipeline deadlock: %s waits for a message stage %d never sends",
                     op_text(all, st, pc[st], t1, sizeof t1), peer);
  }
  for (int c = 0; !rc && c < 2 * P; c++)
    if (ch[c].nsent != ch[c].nrecvd) rc = yk_errorf(d, YK_EINVAL, "pipeline: a message is sent but never received");
  for (int c = 0; ch && c < 2 * P; c++) {
    free(ch[c].sent);
    free(ch[c].recvd);
  }
  free(ch);
  free(flags);
  free(pc);
  free(posted);
  free(fl);
  free(nfl);
  return rc;
}
