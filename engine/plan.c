/* plan.c - the memory plan of one rank (yoke plan, and the check
 * yk_engine_open makes before it allocates anything): what engine.c, the
 * model, zero.c, the mixed-precision state and the checkpoint writer will
 * allocate for this config and layout, item by item, counted with their own
 * size functions (yk_model_plan, eng_zero_plan, yk_alloc_bytes) so the plan
 * cannot drift from the allocations. docs/memory.md has every formula. */
#include <stdio.h>
#include <string.h>

#include "engine_internal.h"

static const char *const item_names[YK_PLAN_NITEMS] = {
    "weights", "master", "grads", "weights16", "grads16", "moments", "activations",
    "logits", "model_buffers", "zero_buffers", "comm_buffers", "peer_buffers", "ckpt_snapshot", "offload_staging", "startup", "runtime"};

const char *yk_engine_plan_item_name(yk_plan_item i) {
  return (unsigned)i < YK_PLAN_NITEMS ? item_names[i] : "?";
}

yk_model_recompute eng_recompute_of(const yk_config *c) {
  if (!strcmp(c->train.recompute, "selective")) return YK_MODEL_RECOMPUTE_SELECTIVE;
  if (!strcmp(c->train.recompute, "full")) return YK_MODEL_RECOMPUTE_FULL;
  return YK_MODEL_RECOMPUTE_NONE;
}

int eng_offloaded(const yk_config *c) { return !strcmp(c->optim.offload, "disk"); }

/* The model shape build_model uses: the weights file's, or the config's. */
static int plan_model_config(const yk_config *c, yk_model_config *mc, yk_diag *d) {
  if (c->train.init_weights[0]) return yk_model_weights_read_config(c->train.init_weights, mc, d);
  return yk_model_config_from(c, mc, d);
}

/* The model's block split into what it is for: kept activations and fp32
 * statistics, logits, and the rest (backward buffers, work buffers, token
 * buffers and the allocator's rounding). */
static void plan_model_items(const yk_model_sizes *ms, yk_dtype act, yk_engine_plan *p) {
  uint64_t logits = (uint64_t)ms->logits_numel * sizeof(float);
  uint64_t acts = (uint64_t)ms->kept_numel * yk_dtype_size(act) +
                  (uint64_t)(ms->f32_numel - ms->logits_numel) * sizeof(float);
  p->item[YK_PLAN_LOGITS] = logits;
  p->item[YK_PLAN_ACTIVATIONS] = acts;
  /* with mixed precision's weight slots (yk_model_tp.weights16) */
  p->item[YK_PLAN_MODEL_BUFFERS] = ms->block_bytes + ms->kept16_bytes - logits - acts + ms->wslot_bytes;
}

int yk_engine_plan_of(const yk_config *c, const yk_layout *l, int local_ranks, const yk_device *dev,
                      yk_engine_plan *p, yk_diag *d) {
  memset(p, 0, sizeof *p);
  yk_model_config mc;
  int rc = plan_model_config(c, &mc, d);
  if (rc) return rc;
  if ((rc = yk_model_config_finish(&mc, d)) != 0) return rc;
  int B = (int)c->train.micro_batch, T = (int)c->train.seq_len;
  if (T > mc.max_seq_len)
    return yk_errorf(d, YK_ECONFIG, "train.seq_len=%d exceeds the model's max_seq_len=%d", T, mc.max_seq_len);
  yk_precision prec = yk_config_precision(c);
  yk_dtype act = prec == YK_PREC_FP16 ? YK_DT_F16 : prec == YK_PREC_BF16 ? YK_DT_BF16 : YK_DT_F32;
  int mixed = prec != YK_PREC_FP32;
  int dp = l->dp > 0 ? l->dp : 1, tp = l->tp > 0 ? l->tp : 1, stage = yk_config_zero_stage(c);
  /* as yk_engine_open decides them */
  int z = dp > 1 && stage >= 2 ? stage : 0, shard = dp > 1 && stage >= 1;
  int shared = dp > 1 && local_ranks > 1; /* the collectives' buffers in shared memory */
  size_t n = yk_model_tp_num_params(&mc, tp, l->tp_rank);
  uint64_t off = 0, s = n;
  if (shard) yk_partition_even_range(n, dp, l->dp_rank, &off, &s);
  p->nparams = n;
  p->slen = s;
  p->zero_stage = z;
  p->precision = prec;
  p->dp = dp;
  p->tp = tp;

  yk_model_tp mtp = {.size = tp, .rank = l->tp_rank, .sequence = (int)c->parallel.sequence,
                     .recompute = eng_recompute_of(c),
                     .weights16 = mixed && !z && !eng_offloaded(c) ? act : YK_DT_F32};
  yk_model_sizes ms;
  if ((rc = yk_model_plan(&mc, B, T, dev, act, &mtp, z != 0, &ms, d)) != 0) return rc;
  plan_model_items(&ms, act, p);

  uint64_t *it = p->item;
  uint64_t f32n = yk_alloc_bytes(n * sizeof(float)), f32s = yk_alloc_bytes(s * sizeof(float));
  uint64_t h16n = yk_alloc_bytes(n * sizeof(uint16_t));
  size_t bucket = (size_t)c->comm.bucket_kb * 1024;
  it[YK_PLAN_MOMENTS] = 2 * f32s;
  if (eng_offloaded(c)) {
    /* the master (mixed precision) and m, v are in the file: what stays is
     * three staging sets of a chunk of each, and mixed precision's 16-bit chunk */
    size_t chunk = eng_offload_chunk_of(c);
    it[YK_PLAN_MOMENTS] = 0;
    it[YK_PLAN_OFFLOAD] = eng_offload_staging_bytes(mixed ? 3 : 2, chunk) +
                          (mixed ? yk_alloc_bytes(chunk * sizeof(uint16_t)) : 0);
  }
  if (z == 0) {
    /* the model's two arenas, in every precision: mixed precision's master
     * IS the weight arena and its gradients are reduced in 16 bits packed
     * inside the fp32 gradient arena (engine/grads.c) */
    it[YK_PLAN_WEIGHTS] = it[YK_PLAN_GRADS] = ms.arena_bytes / 2;
  } else {
    /* zero.c's block: gshard (the gradient slice), stage 2 the full fp32
     * weights, stage 3 the weight slice (fp32: the master itself); the rest
     * are its windows and gather slots */
    size_t zb;
    if ((rc = eng_zero_plan(z, dp, l->dp_rank, &mc, tp, l->tp_rank, n, bucket, mixed ? act : YK_DT_F32, shared, &zb, d)))
      return rc;
    uint64_t block = shared ? zb : yk_alloc_bytes(zb);
    it[YK_PLAN_GRADS] = s * sizeof(float);
    if (z == 2) it[YK_PLAN_WEIGHTS] = n * sizeof(float);
    else if (!mixed) it[YK_PLAN_WEIGHTS] = s * sizeof(float);
    else it[YK_PLAN_WEIGHTS16] = s * sizeof(uint16_t);
    it[YK_PLAN_ZERO_BUFFERS] = block - it[YK_PLAN_GRADS] - it[YK_PLAN_WEIGHTS] - it[YK_PLAN_WEIGHTS16];
    if (mixed) it[YK_PLAN_MASTER] = f32s;
    if (mixed && z == 2) it[YK_PLAN_WEIGHTS16] = h16n;
  }
  /* Across hosts the collectives stage at most a bucket of the gradients
   * they reduce (16 bits in mixed precision); on one host they read the
   * registered buffers in place (PEER below). The transport's own segments
   * are mapped when the job joins, before the plan, so RUNTIME holds them. */
  size_t es = mixed ? sizeof(uint16_t) : sizeof(float);
  if (dp > 1 && !shared) it[YK_PLAN_COMM] = yk_alloc_bytes(YK_MIN(bucket, n * es));
  /* Peers' buffers read in place become resident here too: all-reduce
   * (ZeRO-0) reads every peer's part of the gradients twice over (reduce,
   * then gather), ZeRO-1 reads its owned part of the peers' gradients and
   * their parts of the weights: 2(W-1)/W of the arena either way. ZeRO-2/3
   * read their owned part of the peers' windows (below). */
  if (shared) {
    uint64_t W = (uint64_t)dp;
    /* ZeRO-1 all-gathers the fp32 arena (the master) in every precision */
    if (z < 2) it[YK_PLAN_PEER] = (W - 1) * n * (es + (shard ? sizeof(float) : es)) / W;
    /* ZeRO-2's all-gather of the updated weights reads the peers' slices;
     * ZeRO-3's gathers are broadcasts into this rank's own slots (measured:
     * nothing of the peers becomes resident). Both read the buckets of the
     * peers' gradient windows that meet this rank's slice, 3-4% of d12's
     * peak at N = 2 (yoke bench parallel): not counted. */
    else it[YK_PLAN_PEER] = z == 3 ? 0 : (W - 1) * s * es;
  }
  if (tp > 1) it[YK_PLAN_COMM] += 2 * yk_alloc_bytes((size_t)B * T * mc.channels * sizeof(float));
  /* The checkpoint writer's snapshot: this rank's even 1/dp of every saved
   * arena (fp32 weights or master, m, v; the 16-bit weights). Under
   * optim.offload=disk the arenas in the file have none: the save streams
   * them (fp32 keeps the weights' snapshot, mixed precision none). */
  if (c->ckpt.dir[0]) {
    uint64_t o2, part;
    yk_partition_even_range(n, dp, l->dp_rank, &o2, &part);
    int snap = eng_offloaded(c) ? (mixed ? 0 : 1) : 3;
    it[YK_PLAN_CKPT] = (uint64_t)snap * yk_alloc_bytes(part * sizeof(float)) +
                       (mixed && z ? yk_alloc_bytes(part * sizeof(uint16_t)) : 0);
  }
  /* One-time buffers while the engine opens: ZeRO-3's whole initial arena
   * (until the slice is taken), ZeRO-2's 16-bit gradients (allocated by the
   * mixed state, dropped at once), a tensor-parallel rank's whole-model
   * arena while it draws or loads its pieces. */
  uint64_t once = 0, once_tp = 0;
  if (z == 3) once = f32n;
  if (z == 2 && mixed) once = h16n;
  /* the tensor-parallel whole-model arena lives only while the model draws
   * or loads its pieces, before any optimizer state exists */
  if (tp > 1) once_tp = (uint64_t)yk_model_config_num_params(&mc) * sizeof(float);
  it[YK_PLAN_STARTUP] = YK_MAX(once, once_tp);
  uint64_t rss = 0;
  yk_proc_memory(&rss, NULL);
  /* the process as it is now (code, libraries, threads, the job's
   * connections) and the GEMM library's buffers once products run: the
   * largest are (B*T, C) x (C, 4C), its transpose with depth 4C, and the LM
   * head's (B*T, C) x (C, Vp) */
  int C = mc.channels;
  it[YK_PLAN_RUNTIME] = rss + yk_device_gemm_workspace(dev, B * T, YK_MAX(4 * C, mc.padded_vocab_size), 4 * C);
  for (int i = 0; i < YK_PLAN_NITEMS; i++)
    if (i != YK_PLAN_STARTUP) p->steady += it[i];
  /* The start-up buffers are gone before the checkpoint writer allocates and
   * before the first step writes the shared buffers (the ZeRO block, peers'
   * buffers); private memory is resident from its allocation (yk_alloc
   * zeroes it). */
  uint64_t later = it[YK_PLAN_CKPT] + it[YK_PLAN_PEER] + it[YK_PLAN_COMM] + it[YK_PLAN_OFFLOAD];
  if (shared && z) later += it[YK_PLAN_ZERO_BUFFERS] + it[YK_PLAN_GRADS] + (z >= 2 && !(z == 3 && mixed) ? it[YK_PLAN_WEIGHTS] : 0);
  uint64_t at_start = p->steady - later + once;
  /* at the tensor-parallel moment the optimizer state and mixed-precision
   * copies are not allocated yet (build_optimizer comes after the model) */
  uint64_t after_model = it[YK_PLAN_MOMENTS] + it[YK_PLAN_MASTER] + it[YK_PLAN_WEIGHTS16] + it[YK_PLAN_GRADS16];
  uint64_t at_tp = p->steady - later - YK_MIN(after_model, p->steady - later) + once_tp;
  p->peak = YK_MAX(p->steady, YK_MAX(at_start, at_tp));
  return 0;
}

int yk_engine_plan_check(const yk_engine_plan *p, const yk_config *c, uint64_t limit, int local_ranks, yk_diag *d) {
  char what[96];
  if (!limit) {
    uint64_t avail = 0;
    yk_host_memory(NULL, &avail);
    if (!avail) return 0; /* the system does not say: nothing to check against */
    if (local_ranks < 1) local_ranks = 1;
    limit = avail / (uint64_t)local_ranks;
    if (local_ranks > 1)
      snprintf(what, sizeof what, "MemAvailable / %d ranks on this host (%.2f GiB)", local_ranks, limit / 1073741824.0);
    else
      snprintf(what, sizeof what, "MemAvailable (%.2f GiB)", limit / 1073741824.0);
  } else {
    snprintf(what, sizeof what, "train.memory_limit (%.2f GiB)", limit / 1073741824.0);
  }
  if (p->peak <= limit) return 0;
  /* the three largest items */
  int top[3] = {-1, -1, -1};
  for (int k = 0; k < 3; k++)
    for (int i = 0; i < YK_PLAN_NITEMS; i++) {
      if (i == top[0] || i == top[1]) continue;
      if (top[k] < 0 || p->item[i] > p->item[top[k]]) top[k] = i;
    }
  char items[256] = "";
  for (int k = 0; k < 3; k++)
    snprintf(items + strlen(items), sizeof items - strlen(items), "%s%s %.2f GiB", k ? ", " : "",
             item_names[top[k]], p->item[top[k]] / 1073741824.0);
  /* what would shrink the largest items */
  char fix[320] = "";
  uint64_t per_batch = p->item[YK_PLAN_ACTIVATIONS] + p->item[YK_PLAN_LOGITS] + p->item[YK_PLAN_MODEL_BUFFERS];
  uint64_t state = p->steady - per_batch - p->item[YK_PLAN_RUNTIME];
  if (per_batch > state / 4 && c->train.micro_batch > 1)
    snprintf(fix + strlen(fix), sizeof fix - strlen(fix), "a smaller train.micro_batch (now %lld; raise "
             "train.grad_accum to keep the batch), ", (long long)c->train.micro_batch);
  /* bf16 halves the kept activations but (today) adds 8 bytes of model
   * state per parameter: worth naming only when activations dominate */
  if (p->precision == YK_PREC_FP32 && p->item[YK_PLAN_ACTIVATIONS] > state / 2)
    snprintf(fix + strlen(fix), sizeof fix - strlen(fix), "train.precision=bf16 (16-bit activations), ");
  if (p->zero_stage < 3)
    snprintf(fix + strlen(fix), sizeof fix - strlen(fix), "optim.zero=%d over more ranks (%s), ",
             p->zero_stage < 2 ? 2 : 3, p->zero_stage < 2 ? "shards gradients and optimizer state" : "also shards weights");
  else
    snprintf(fix + strlen(fix), sizeof fix - strlen(fix), "more ranks (optim.zero=3 divides the state by them), ");
  snprintf(fix + strlen(fix), sizeof fix - strlen(fix), "or a smaller model");
  return yk_errorf(d, YK_ENOMEM, "this job does not fit: its planned peak is %.2f GiB per rank against %s; largest: %s "
                   "(yoke plan shows every item); it would fit with %s", p->peak / 1073741824.0, what, items, fix);
}
