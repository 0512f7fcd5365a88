/* config.c - the job configuration: a key table, YAML loading, overrides.
 *
 * The table below is the single source of truth for every key: its dotted
 * name, type, default, range or allowed values, and documentation. The YAML
 * loader, the --set overrides, `yoke config reference` (which writes
 * cluster-configs/reference.yaml) and the manifest writer all walk it. */
#include "yk_common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

typedef enum { T_INT, T_FLOAT, T_STR, T_ENUM, T_BOOL, T_BYTES } key_type;

typedef struct key_def {
  const char *name;    /* dotted: section.key */
  key_type type;
  size_t off;          /* offset into yk_config */
  size_t size;         /* for strings: buffer size */
  const char *def;     /* default, as text */
  double min, max;     /* for numbers */
  const char *choices; /* for enums: "a|b|c" */
  const char *doc;
} key_def;

#define OFF(f) offsetof(yk_config, f), sizeof(((yk_config *)0)->f)
#define INF HUGE_VAL

static const key_def keys[] = {
    /* model */
    {"model.name", T_ENUM, OFF(model.name), "tiny", 0, 0, "tiny|small|d6|d12|d24|d36|d48",
     "named GPT-2 shape preset (tiny: L2 C64; small: L4 C128; d12 = GPT-2 124M ... d48 = 1.5B)"},
    {"model.layers", T_INT, OFF(model.layers), "0", 0, 256, NULL, "override the preset's layer count (0 = preset)"},
    {"model.channels", T_INT, OFF(model.channels), "0", 0, 65536, NULL, "override the preset's width C (0 = preset)"},
    {"model.heads", T_INT, OFF(model.heads), "0", 0, 1024, NULL, "override the preset's head count (0 = preset)"},
    {"model.max_seq_len", T_INT, OFF(model.max_seq_len), "0", 0, 1048576, NULL,
     "override the preset's maximum sequence length (0 = preset)"},
    {"model.vocab_size", T_INT, OFF(model.vocab_size), "0", 0, 1048576, NULL,
     "override the vocabulary size (0 = preset: 256 for byte-level presets, 50257 for d*)"},
    /* data */
    {"data.train", T_STR, OFF(data.train), "", 0, 0, NULL, "training token shard(s): a file or a glob"},
    {"data.val", T_STR, OFF(data.val), "", 0, 0, NULL, "validation token shard(s): a file or a glob (empty = none)"},
    /* train */
    {"train.micro_batch", T_INT, OFF(train.micro_batch), "4", 1, 65536, NULL, "micro-batch size B per rank"},
    {"train.seq_len", T_INT, OFF(train.seq_len), "64", 1, 1048576, NULL, "sequence length T (<= model max_seq_len)"},
    {"train.grad_accum", T_INT, OFF(train.grad_accum), "1", 1, 65536, NULL,
     "micro-batches accumulated per optimizer step"},
    {"train.steps", T_INT, OFF(train.steps), "100", 0, 1e12, NULL, "optimizer steps to run"},
    {"train.stop_after", T_INT, OFF(train.stop_after), "0", 0, 1e12, NULL,
     "stop after this step as if preempted: checkpoint, exit 75 (0 = off; the LR schedule still spans train.steps)"},
    {"train.seed", T_INT, OFF(train.seed), "1337", 0, 9.2e18, NULL, "seed for weight init and anything random"},
    {"train.val_every", T_INT, OFF(train.val_every), "0", 0, 1e12, NULL, "validation loss every N steps (0 = only at the end)"},
    {"train.val_batches", T_INT, OFF(train.val_batches), "8", 1, 1e9, NULL, "batches averaged for validation loss"},
    {"train.log_every", T_INT, OFF(train.log_every), "1", 1, 1e12, NULL, "print a step line every N steps"},
    {"train.threads", T_INT, OFF(train.threads), "0", 0, 4096, NULL, "compute threads per rank (0 = all cores / local ranks)"},
    {"train.precision", T_ENUM, OFF(train.precision), "fp32", 0, 0, "fp32|fp16|bf16",
     "weights/activations/gradients in 16 bits with fp32 master weights, or fp32 throughout"},
    {"train.recompute", T_ENUM, OFF(train.recompute), "none", 0, 0, "none|selective|full",
     "activation recomputation: selective recomputes the attention probabilities (B,NH,T,T) in backward, full keeps "
     "only each layer's input and re-runs the layer's forward before its backward (less memory, more compute; the "
     "gradients are bitwise the same)"},
    {"train.init_weights", T_STR, OFF(train.init_weights), "", 0, 0, NULL,
     "start from this GPT-2 fp32 weights file (empty = random init from seed)"},
    {"train.save_weights", T_STR, OFF(train.save_weights), "", 0, 0, NULL,
     "write a GPT-2 fp32 weights file here after training (empty = don't)"},
    {"train.log_file", T_STR, OFF(train.log_file), "", 0, 0, NULL,
     "rank 0 also writes the JSON step and validation lines (as --json prints them) here; a resume appends (empty = none)"},
    {"train.trace", T_STR, OFF(train.trace), "", 0, 0, NULL,
     "write a Chrome/Perfetto trace of every rank here: {rank} in the path is replaced by the rank, else "
     "\".rank<N>.json\" replaces a trailing \".json\" with several ranks (empty = off; docs/tracing.md)"},
    {"train.trace_steps", T_STR, OFF(train.trace_steps), "", 0, 0, NULL,
     "the steps to trace, A-B (inclusive, numbered as the step lines print them) or A- (empty = all)"},
    {"train.trace_detail", T_ENUM, OFF(train.trace_detail), "step", 0, 0, "step|layer|kernel",
     "layer also records each layer's forward and backward and the tensor-parallel collectives; kernel also every "
     "device kernel with its shape (larger files)"},
    {"train.memory_limit", T_BYTES, OFF(train.memory_limit), "0", 0, 1e18, NULL,
     "refuse to start when this rank's planned peak memory (yoke plan) exceeds this many bytes (10MB, 20GiB); 0 = "
     "the host's MemAvailable shared by the ranks on it"},
    {"train.straggler_warn", T_FLOAT, OFF(train.straggler_warn), "0.2", 0.01, 100, NULL,
     "the coordinator warns when one rank's compute is this share above the median rank's for 3 reports in a row"},
    /* optim */
    {"optim.lr", T_FLOAT, OFF(optim.lr), "3e-4", 0, 10, NULL, "peak learning rate"},
    {"optim.min_lr", T_FLOAT, OFF(optim.min_lr), "0", 0, 10, NULL, "floor of the cosine decay"},
    {"optim.warmup_steps", T_INT, OFF(optim.warmup_steps), "0", 0, 1e12, NULL, "linear warmup steps"},
    {"optim.schedule", T_ENUM, OFF(optim.schedule), "constant", 0, 0, "constant|cosine",
     "learning-rate schedule after warmup"},
    {"optim.weight_decay", T_FLOAT, OFF(optim.weight_decay), "0.0", 0, 10, NULL,
     "AdamW decoupled weight decay (2-D weights and embeddings only)"},
    {"optim.beta1", T_FLOAT, OFF(optim.beta1), "0.9", 0, 0.999999, NULL, "AdamW beta1"},
    {"optim.beta2", T_FLOAT, OFF(optim.beta2), "0.999", 0, 0.99999999, NULL, "AdamW beta2"},
    {"optim.eps", T_FLOAT, OFF(optim.eps), "1e-8", 1e-30, 1, NULL, "AdamW epsilon"},
    {"optim.grad_clip", T_FLOAT, OFF(optim.grad_clip), "1.0", 0, 1e9, NULL, "clip by global L2 norm (0 = off)"},
    {"optim.zero", T_INT, OFF(optim.zero), "-1", -1, 3, NULL,
     "ZeRO stage over the data-parallel ranks (DeepSpeed's meaning): 0 none; 1 AdamW state sharded; 2 also the "
     "reduced gradients; 3 also the weights, gathered layer by layer; -1 = from optim.shard (one rank: no-op)"},
    {"optim.shard", T_ENUM, OFF(optim.shard), "auto", 0, 0, "auto|true|false",
     "the older spelling of optim.zero: true = stage 1, false = stage 0, auto = what optim.zero says (default 1)"},
    {"optim.offload", T_ENUM, OFF(optim.offload), "none", 0, 0, "none|disk",
     "disk: the fp32 master weights (mixed precision) and AdamW m, v of this rank's slice live in files in "
     "optim.offload_dir, streamed through the update in chunks with O_DIRECT, read ahead and written behind "
     "(docs/memory.md)"},
    {"optim.offload_dir", T_STR, OFF(optim.offload_dir), "", 0, 0, NULL,
     "directory of the offload files (scratch: checked for space at start, rebuilt from the checkpoint on resume)"},
    {"optim.offload_chunk_kb", T_INT, OFF(optim.offload_chunk_kb), "4096", 4, 1048576, NULL,
     "KiB of each offloaded array per chunk (a multiple of 4); three chunks of every array are staged in memory"},
    /* parallel layout (docs/parallelism.md) */
    {"parallel.tensor", T_INT, OFF(parallel.tensor), "1", 1, 1024, NULL,
     "tensor-parallel degree: each layer's heads and MLP split over this many ranks (Megatron-style); "
     "data-parallel degree = ranks / (tensor x pipeline)"},
    {"parallel.pipeline", T_INT, OFF(parallel.pipeline), "1", 1, 1024, NULL,
     "pipeline-parallel degree: the model's layers cut into this many stages, one after the other (ranks = data x "
     "tensor x pipeline)"},
    {"parallel.virtual_stages", T_INT, OFF(parallel.virtual_stages), "1", 1, 16, NULL,
     "model chunks per pipeline stage: V > 1 runs the interleaved schedule (bubble (P-1)/(V*m+P-1); "
     "train.grad_accum must be a multiple of parallel.pipeline)"},
    {"parallel.schedule", T_ENUM, OFF(parallel.schedule), "auto", 0, 0, "auto|gpipe|1f1b|interleaved",
     "pipeline schedule: gpipe (all forwards, then all backwards), 1f1b (at most P micro-batches of activations "
     "alive), interleaved (1F1B over virtual stages); auto = interleaved when virtual_stages > 1, else 1f1b"},
    {"parallel.stage_layers", T_STR, OFF(parallel.stage_layers), "", 0, 0, NULL,
     "layers per pipeline chunk in chunk order, e.g. \"3,1\" (each >= 1, summing to the model's layers); empty = "
     "balanced by a cost estimate that counts the embedding and the LM head"},
    {"parallel.sequence", T_BOOL, OFF(parallel.sequence), "false", 0, 1, NULL,
     "sequence parallelism: LayerNorm and residual rows split over the tensor-parallel group (needs seq_len "
     "divisible by parallel.tensor)"},
    /* loss scaling (fp16 only) */
    {"loss_scale.init", T_FLOAT, OFF(loss_scale.init), "65536", 1, 1e38, NULL, "initial dynamic loss scale (fp16)"},
    {"loss_scale.min", T_FLOAT, OFF(loss_scale.min), "1", 1e-10, 1e38, NULL, "floor of the loss scale"},
    {"loss_scale.growth_factor", T_FLOAT, OFF(loss_scale.growth_factor), "2", 1, 1e6, NULL,
     "multiply the scale by this after growth_interval clean steps"},
    {"loss_scale.backoff", T_FLOAT, OFF(loss_scale.backoff), "0.5", 1e-6, 1, NULL,
     "multiply the scale by this after an overflow"},
    {"loss_scale.growth_interval", T_INT, OFF(loss_scale.growth_interval), "1000", 1, 1e12, NULL,
     "clean steps before the scale grows"},
    {"loss_scale.hysteresis", T_INT, OFF(loss_scale.hysteresis), "2", 1, 1e6, NULL,
     "overflows tolerated before backing off"},
    {"loss_scale.on_min", T_ENUM, OFF(loss_scale.on_min), "stop", 0, 0, "stop|continue",
     "at the floor: stop with a message naming the tensor and rank, or keep going"},
    /* comm */
    {"comm.transport", T_ENUM, OFF(comm.transport), "auto", 0, 0, "auto|libfabric|mpi|inproc",
     "data plane for collectives (auto = libfabric)"},
    {"comm.provider", T_STR, OFF(comm.provider), "", 0, 0, NULL,
     "libfabric provider: shm, tcp;ofi_rxm, verbs, efa (empty = shm on one host, tcp;ofi_rxm across hosts)"},
    {"comm.algo", T_ENUM, OFF(comm.algo), "auto", 0, 0, "auto|ring|tree|shm|hier",
     "force an all-reduce algorithm (auto = cost model); YK_ALGO overrides"},
    {"comm.timeout_ms", T_INT, OFF(comm.timeout_ms), "60000", 100, 86400000, NULL,
     "deadline of every collective; a silent peer is reported by rank"},
    {"comm.bucket_kb", T_INT, OFF(comm.bucket_kb), "25600", 1, 16777216, NULL,
     "gradient bucket size for overlapped all-reduce"},
    {"comm.fusion_kb", T_INT, OFF(comm.fusion_kb), "1024", 0, 16777216, NULL,
     "tensors smaller than this are packed into one fused operation"},
    /* ckpt */
    {"ckpt.dir", T_STR, OFF(ckpt.dir), "", 0, 0, NULL, "checkpoint directory (empty = no checkpoints)"},
    {"ckpt.every", T_INT, OFF(ckpt.every), "0", 0, 1e12, NULL, "checkpoint every N steps (0 = only on signal/end)"},
    {"ckpt.keep", T_INT, OFF(ckpt.keep), "3", 1, 1e6, NULL, "keep the newest K checkpoints"},
    {"ckpt.level", T_INT, OFF(ckpt.level), "1", -7, 22, NULL, "zstd compression level"},
    {"ckpt.async", T_BOOL, OFF(ckpt.async), "true", 0, 1, NULL, "write checkpoints in a background thread"},
    {"ckpt.resume", T_STR, OFF(ckpt.resume), "", 0, 0, NULL, "resume from: empty (no), latest, or a checkpoint path"},
    {"ckpt.fallback", T_BOOL, OFF(ckpt.fallback), "false", 0, 1, NULL,
     "on resume, use the previous checkpoint when the newest fails its checksums (logged)"},
    /* coord */
    {"coord.host", T_STR, OFF(coord.host), "", 0, 0, NULL,
     "coordinator host (empty = from SLURM/OpenMPI environment, else rank 0 embeds it on 127.0.0.1)"},
    {"coord.port", T_INT, OFF(coord.port), "29400", 0, 65535, NULL, "coordinator TCP port (0 = pick a free one)"},
    {"coord.heartbeat_ms", T_INT, OFF(coord.heartbeat_ms), "1000", 10, 3600000, NULL, "heartbeat interval"},
    {"coord.heartbeat_timeout_ms", T_INT, OFF(coord.heartbeat_timeout_ms), "5000", 50, 86400000, NULL,
     "a rank silent this long is declared dead"},
    {"coord.secret_file", T_STR, OFF(coord.secret_file), "", 0, 0, NULL,
     "file holding the per-job secret for message authentication (empty = YOKE_SECRET or generated)"},
    {"coord.metrics_port", T_INT, OFF(coord.metrics_port), "0", 0, 65535, NULL,
     "serve Prometheus /metrics on this port + local rank (0 = off)"},
    /* log */
    {"log.level", T_ENUM, OFF(log.level), "info", 0, 0, "error|warn|info|debug", "log verbosity"},
    {"log.ranks", T_STR, OFF(log.ranks), "0", 0, 0, NULL,
     "ranks that print info lines: 0, all, or a list such as 0,3 (warnings and errors come from every rank)"},
};

#define NKEYS ((int)YK_ARRAY_LEN(keys))

int yk_config_key_count(void) { return NKEYS; }
const char *yk_config_key_name(int i) { return (i >= 0 && i < NKEYS) ? keys[i].name : NULL; }

static const key_def *find_key(const char *name) {
  for (int i = 0; i < NKEYS; i++)
    if (strcmp(keys[i].name, name) == 0) return &keys[i];
  return NULL;
}

static const char *suggest(const char *name) {
  int best = 4;
  const char *hit = NULL;
  for (int i = 0; i < NKEYS; i++) {
    int dist = yk_edit_distance(name, keys[i].name);
    /* also compare the part after the dot, so "lrr" finds "optim.lr" */
    const char *dot = strchr(keys[i].name, '.');
    if (dot) dist = YK_MIN(dist, yk_edit_distance(name, dot + 1) + 1);
    if (dist < best) {
      best = dist;
      hit = keys[i].name;
    }
  }
  return hit;
}

static int choice_ok(const char *choices, const char *v) {
  const char *p = choices;
  size_t n = strlen(v);
  while (*p) {
    const char *bar = strchr(p, '|');
    size_t len = bar ? (size_t)(bar - p) : strlen(p);
    if (len == n && strncmp(p, v, n) == 0) return 1;
    if (!bar) break;
    p = bar + 1;
  }
  return 0;
}

static void describe_range(const key_def *k, char *buf, size_t n) {
  switch (k->type) {
  case T_INT: snprintf(buf, n, "an integer in [%.0f, %.0f]", k->min, k->max); break;
  case T_BYTES: snprintf(buf, n, "bytes (64, 4k, 10MB, 2GiB) in [%.0f, %.0f]", k->min, k->max); break;
  case T_FLOAT: snprintf(buf, n, "a number in [%g, %g]", k->min, k->max); break;
  case T_ENUM: snprintf(buf, n, "one of %s", k->choices); break;
  case T_BOOL: snprintf(buf, n, "true or false"); break;
  case T_STR: snprintf(buf, n, "a string of at most %zu bytes", k->size - 1); break;
  }
}

/* Set one key from text. where = "file:line" for messages. */
static int set_value(yk_config *c, const key_def *k, const char *v, const char *where, yk_diag *d) {
  char allowed[128];
  describe_range(k, allowed, sizeof allowed);
  char *field = (char *)c + k->off;
  switch (k->type) {
  case T_INT: {
    int64_t x;
    if (yk_parse_i64(v, &x) != 0 || (double)x < k->min || (double)x > k->max)
      return yk_errorf(d, YK_ECONFIG, "%s: key '%s' has value '%s'; allowed: %s", where, k->name, v, allowed);
    memcpy(field, &x, sizeof x);
    return 0;
  }
  case T_BYTES: {
    uint64_t x;
    if (yk_parse_bytes(v, &x) != 0 || (double)x < k->min || (double)x > k->max)
      return yk_errorf(d, YK_ECONFIG, "%s: key '%s' has value '%s'; allowed: %s", where, k->name, v, allowed);
    int64_t y = (int64_t)x;
    memcpy(field, &y, sizeof y);
    return 0;
  }
  case T_FLOAT: {
    double x;
    if (yk_parse_f64(v, &x) != 0 || !isfinite(x) || x < k->min || x > k->max)
      return yk_errorf(d, YK_ECONFIG, "%s: key '%s' has value '%s'; allowed: %s", where, k->name, v, allowed);
    memcpy(field, &x, sizeof x);
    return 0;
  }
  case T_BOOL: {
    int64_t x;
    if (!strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on") || !strcmp(v, "1")) x = 1;
    else if (!strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "off") || !strcmp(v, "0")) x = 0;
    else return yk_errorf(d, YK_ECONFIG, "%s: key '%s' has value '%s'; allowed: %s", where, k->name, v, allowed);
    memcpy(field, &x, sizeof x);
    return 0;
  }
  case T_ENUM:
    if (!choice_ok(k->choices, v))
      return yk_errorf(d, YK_ECONFIG, "%s: key '%s' has value '%s'; allowed: %s", where, k->name, v, allowed);
    /* fallthrough */
  case T_STR:
    if (strlen(v) >= k->size)
      return yk_errorf(d, YK_ECONFIG, "%s: key '%s' value is %zu bytes long; allowed: %s", where, k->name, strlen(v),
                       allowed);
    memset(field, 0, k->size);
    memcpy(field, v, strlen(v));
    return 0;
  }
  return YK_EINVAL;
}

void yk_config_defaults(yk_config *c) {
  memset(c, 0, sizeof *c);
  for (int i = 0; i < NKEYS; i++) {
    int rc = set_value(c, &keys[i], keys[i].def, "defaults", NULL);
    (void)rc; /* the defaults are checked by a unit test */
  }
}

static int unknown_key(const char *where, const char *name, yk_diag *d) {
  const char *s = suggest(name);
  if (s)
    return yk_errorf(d, YK_ECONFIG, "%s: unknown key '%s' (did you mean '%s'?); see cluster-configs/reference.yaml",
                     where, name, s);
  return yk_errorf(d, YK_ECONFIG, "%s: unknown key '%s'; see cluster-configs/reference.yaml for every key", where,
                   name);
}

int yk_config_set(yk_config *c, const char *assignment, yk_diag *d) {
  const char *eq = strchr(assignment, '=');
  if (!eq || eq == assignment)
    return yk_errorf(d, YK_ECONFIG, "--set '%s': expected section.key=value, e.g. --set optim.lr=1e-4", assignment);
  char name[128];
  size_t n = (size_t)(eq - assignment);
  if (n >= sizeof name) return yk_errorf(d, YK_ECONFIG, "--set: key too long in '%s'", assignment);
  memcpy(name, assignment, n);
  name[n] = '\0';
  const key_def *k = find_key(name);
  if (!k) return unknown_key("--set", name, d);
  return set_value(c, k, eq + 1, "--set", d);
}

/* YAML: nested mappings of scalars, flattened to dotted names. */
int yk_config_load_string(yk_config *c, const char *text, const char *origin, yk_diag *d) {
  yaml_parser_t p;
  if (!yaml_parser_initialize(&p)) return yk_errorf(d, YK_ENOMEM, "%s: cannot initialise the YAML parser", origin);
  yaml_parser_set_input_string(&p, (const unsigned char *)text, strlen(text));

  char path[8][64];   /* key stack */
  int depth = 0;      /* number of open mappings */
  int expect_key[8] = {0};
  int rc = 0;
  char where[512];
  for (;;) {
    yaml_event_t ev;
    if (!yaml_parser_parse(&p, &ev)) {
      rc = yk_errorf(d, YK_ECONFIG, "%s:%zu: YAML syntax error: %s", origin, p.problem_mark.line + 1,
                     p.problem ? p.problem : "unknown");
      break;
    }
    snprintf(where, sizeof where, "%s:%zu", origin, ev.start_mark.line + 1);
    yaml_event_type_t t = ev.type;
    if (t == YAML_STREAM_END_EVENT) {
      yaml_event_delete(&ev);
      break;
    }
    if (t == YAML_MAPPING_START_EVENT) {
      if (depth >= 7) rc = yk_errorf(d, YK_ECONFIG, "%s: mappings nested too deeply", where);
      else {
        if (depth > 0) expect_key[depth] = 1; /* the value slot is consumed by this mapping */
        depth++;
        expect_key[depth] = 1;
      }
    } else if (t == YAML_MAPPING_END_EVENT) {
      depth--;
    } else if (t == YAML_SEQUENCE_START_EVENT || t == YAML_ALIAS_EVENT) {
      char full[256] = "";
      for (int i = 1; i < depth; i++) {
        strcat(full, path[i]);
        strcat(full, ".");
      }
      if (depth >= 1) strncat(full, path[depth], sizeof full - strlen(full) - 1);
      rc = yk_errorf(d, YK_ECONFIG, "%s: key '%s' must be a scalar value, not a list or alias", where, full);
    } else if (t == YAML_SCALAR_EVENT) {
      const char *val = (const char *)ev.data.scalar.value;
      if (depth == 0) {
        rc = yk_errorf(d, YK_ECONFIG, "%s: expected a mapping of sections (model:, train:, ...), got '%s'", where, val);
      } else if (expect_key[depth]) {
        if (strlen(val) >= sizeof path[0]) rc = yk_errorf(d, YK_ECONFIG, "%s: key '%.40s...' too long", where, val);
        else {
          strcpy(path[depth], val);
          expect_key[depth] = 0;
        }
      } else {
        char full[256] = "";
        for (int i = 1; i <= depth; i++) {
          if (i > 1) strcat(full, ".");
          strcat(full, path[i]);
        }
        const key_def *k = find_key(full);
        if (!k) rc = unknown_key(where, full, d);
        else rc = set_value(c, k, val, where, d);
        expect_key[depth] = 1;
      }
    }
    /* After a nested mapping closes, the parent expects a key again. */
    if (t == YAML_MAPPING_END_EVENT && depth > 0) expect_key[depth] = 1;
    yaml_event_delete(&ev);
    if (rc) break;
  }
  yaml_parser_delete(&p);
  return rc;
}

int yk_config_load_file(yk_config *c, const char *path, yk_diag *d) {
  char *buf;
  size_t len;
  int rc = yk_file_read(path, &buf, &len, d);
  if (rc) return rc;
  if (strlen(buf) != len) {
    free(buf);
    return yk_errorf(d, YK_ECONFIG, "%s: contains a NUL byte; is it really a YAML file?", path);
  }
  rc = yk_config_load_string(c, buf, path, d);
  free(buf);
  return rc;
}

int yk_config_validate(const yk_config *c, yk_diag *d) {
  if (c->model.channels && c->model.heads && c->model.channels % c->model.heads != 0)
    return yk_errorf(d, YK_ECONFIG, "model.channels=%lld is not divisible by model.heads=%lld", (long long)c->model.channels,
                     (long long)c->model.heads);
  if (c->optim.min_lr > c->optim.lr)
    return yk_errorf(d, YK_ECONFIG, "optim.min_lr=%g is above optim.lr=%g", c->optim.min_lr, c->optim.lr);
  if (c->coord.heartbeat_timeout_ms <= c->coord.heartbeat_ms)
    return yk_errorf(d, YK_ECONFIG, "coord.heartbeat_timeout_ms=%lld must exceed coord.heartbeat_ms=%lld",
                     (long long)c->coord.heartbeat_timeout_ms, (long long)c->coord.heartbeat_ms);
  if ((!strcmp(c->optim.shard, "true") && c->optim.zero >= 0 && c->optim.zero != 1) ||
      (!strcmp(c->optim.shard, "false") && c->optim.zero > 0))
    return yk_errorf(d, YK_ECONFIG, "optim.zero=%lld disagrees with optim.shard=%s (the older spelling of stage %d); "
                     "set only optim.zero", (long long)c->optim.zero, c->optim.shard,
                     !strcmp(c->optim.shard, "true") ? 1 : 0);
  int64_t tf, tl;
  if (yk_config_trace_steps(c, &tf, &tl, d)) return YK_ECONFIG;
  if (c->loss_scale.min > c->loss_scale.init)
    return yk_errorf(d, YK_ECONFIG, "loss_scale.min=%g is above loss_scale.init=%g", c->loss_scale.min,
                     c->loss_scale.init);
  return 0;
}

int yk_config_zero_stage(const yk_config *c) {
  if (c->optim.zero >= 0) return (int)c->optim.zero;
  return strcmp(c->optim.shard, "false") ? 1 : 0;
}

int yk_config_trace_steps(const yk_config *c, int64_t *first, int64_t *last, yk_diag *d) {
  const char *s = c->train.trace_steps;
  *first = 0;
  *last = -1;
  if (!s[0]) return 0;
  char *end;
  long long a = strtoll(s, &end, 10), b = -1;
  int ok = end != s && *end == '-' && a >= 1;
  if (ok && end[1]) {
    const char *p = end + 1;
    b = strtoll(p, &end, 10);
    ok = end != p && *end == '\0' && b >= a;
  }
  if (!ok)
    return yk_errorf(d, YK_ECONFIG, "train.trace_steps=%s: write A-B with 1 <= A <= B (the steps as the step lines "
                     "number them) or A- for every step from A", s);
  *first = a - 1;
  *last = b < 0 ? -1 : b - 1;
  return 0;
}

yk_precision yk_config_precision(const yk_config *c) {
  if (!strcmp(c->train.precision, "fp16")) return YK_PREC_FP16;
  if (!strcmp(c->train.precision, "bf16")) return YK_PREC_BF16;
  return YK_PREC_FP32;
}

static const char *type_name(key_type t) {
  switch (t) {
  case T_INT: return "int";
  case T_BYTES: return "bytes";
  case T_FLOAT: return "float";
  case T_STR: return "string";
  case T_ENUM: return "enum";
  case T_BOOL: return "bool";
  }
  return "?";
}

/* A double as a person writes it: the fewest significant digits that read
 * back as the same double (0.0003, not %.17g's 0.00029999999999999997), so a
 * config printed and loaded again is the same config. */
static void write_float(double x, FILE *out) {
  char buf[32];
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, x);
    if (strtod(buf, NULL) == x) break;
  }
  fputs(buf, out);
}

static void write_value(const yk_config *c, const key_def *k, FILE *out) {
  const char *field = (const char *)c + k->off;
  switch (k->type) {
  case T_INT:
  case T_BYTES: fprintf(out, "%lld", (long long)*(const int64_t *)field); break;
  case T_BOOL: fprintf(out, "%s", *(const int64_t *)field ? "true" : "false"); break;
  case T_FLOAT: write_float(*(const double *)field, out); break;
  case T_STR:
  case T_ENUM: {
    fputc('"', out);
    for (const char *s = field; *s; s++) {
      if (*s == '"' || *s == '\\') fputc('\\', out);
      fputc(*s, out);
    }
    fputc('"', out);
    break;
  }
  }
}

static void walk(const yk_config *c, FILE *out, int reference) {
  char section[64] = "";
  for (int i = 0; i < NKEYS; i++) {
    const key_def *k = &keys[i];
    const char *dot = strchr(k->name, '.');
    size_t slen = (size_t)(dot - k->name);
    if (strlen(section) != slen || strncmp(section, k->name, slen) != 0) {
      memcpy(section, k->name, slen);
      section[slen] = '\0';
      if (reference && i > 0) fputc('\n', out);
      fprintf(out, "%s:\n", section);
    }
    if (reference) {
      char allowed[128];
      describe_range(k, allowed, sizeof allowed);
      fprintf(out, "  # %s\n  # type: %s; default: %s; allowed: %s\n", k->doc, type_name(k->type),
              k->def[0] ? k->def : "\"\"", allowed);
    }
    fprintf(out, "  %s: ", dot + 1);
    write_value(c, k, out);
    fputc('\n', out);
  }
}

void yk_config_write_reference(FILE *out) {
  yk_config c;
  yk_config_defaults(&c);
  fprintf(out, "# yoke job configuration: every key, with its type, default and allowed values.\n"
               "# Generated by `yoke config reference`; a test keeps it in step with common/config.c.\n"
               "# Any key can be overridden on the command line: yoke train job.yaml --set optim.lr=1e-4\n\n");
  walk(&c, out, 1);
}

void yk_config_write_yaml(const yk_config *c, FILE *out) { walk(c, out, 0); }
