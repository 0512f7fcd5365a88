/* cmd_ckpt.c - `yoke ckpt ls|verify|inspect|convert`: the command lines of
 * the checkpoint tools (ckpt/), and the GPT-2 export, which reads the arena
 * with the checkpoint reader and writes it with the model's weights codec
 * (the one place that knows both). */
#include <jansson.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "yk_ckpt.h"
#include "yk_engine.h"
#include "yk_model.h"

static const char path_about[] =
    "PATH is a checkpoint directory (DIR/step-N) or a checkpoint root DIR (its newest committed checkpoint).\n";

/* ---- ls ---- */

typedef struct ls_opts {
  yk_args_pos pos;
} ls_opts;

static const yk_cmd_spec ls_spec = {
    .name = "ckpt ls",
    .synopsis = "DIR",
    .about = "List the checkpoints in DIR: step, world size, size, and whether each is the latest, committed,\n"
             "incomplete (a save without its manifest) or damaged.",
    .min_pos = 1,
    .max_pos = 1,
    .pos_off = offsetof(ls_opts, pos),
};

static int cmd_ls(int argc, char **argv) {
  ls_opts o = {0};
  int code = cli_parse(&ls_spec, argc, argv, &o);
  if (code >= 0) return code;
  yk_diag d = {0};
  int rc = yk_ckpt_list_print(o.pos.v[0], stdout, &d);
  if (rc) fprintf(stderr, "yoke ckpt ls: %s\n", yk_diag_msg(&d, rc));
  return rc ? 1 : 0;
}

/* ---- verify ---- */

typedef struct verify_opts {
  int all;
  int64_t threads;
  yk_args_pos pos;
} verify_opts;

static const yk_opt verify_table[] = {
    {"--all", 0, YK_OPT_FLAG, offsetof(verify_opts, all), NULL,
     "every committed checkpoint in the root DIR PATH, not just the newest"},
    {"--threads", 0, YK_OPT_INT, offsetof(verify_opts, threads), "N", "decompression threads (default 0: all cores)",
     0, 64},
};

static const yk_cmd_spec verify_spec = {
    .name = "ckpt verify",
    .synopsis = "PATH [--all] [--threads N]",
    .about = "Check every checksum (manifest, shard files, every chunk and blob); exit 1 naming the damaged\n"
             "file and tensor.",
    .opts = verify_table,
    .nopts = YK_ARRAY_LEN(verify_table),
    .min_pos = 1,
    .max_pos = 1,
    .pos_off = offsetof(verify_opts, pos),
    .epilog = path_about,
};

static int verify_one(const char *path, int threads) {
  yk_diag d = {0};
  int rc = yk_ckpt_verify_report(path, threads, stdout, &d);
  if (rc) fprintf(stderr, "yoke ckpt verify: %s\n", yk_diag_msg(&d, rc));
  return rc ? 1 : 0;
}

static int cmd_verify(int argc, char **argv) {
  verify_opts o = {0};
  int code = cli_parse(&verify_spec, argc, argv, &o);
  if (code >= 0) return code;
  const char *path = o.pos.v[0];
  if (!o.all) return verify_one(path, (int)o.threads);
  yk_ckpt_entry *e;
  int n, bad = 0, seen = 0;
  yk_diag d = {0};
  int rc = yk_ckpt_list(path, &e, &n, &d);
  if (rc) {
    fprintf(stderr, "yoke ckpt verify: %s\n", yk_diag_msg(&d, rc));
    return 1;
  }
  for (int i = 0; i < n; i++) {
    if (strstr(e[i].path, ".partial")) continue;
    seen++;
    bad |= verify_one(e[i].path, (int)o.threads);
  }
  free(e);
  if (!seen) {
    fprintf(stderr, "yoke ckpt verify: no checkpoints in '%s'\n", path);
    return 1;
  }
  return bad;
}

/* ---- inspect ---- */

typedef struct inspect_opts {
  int json;
  yk_args_pos pos;
} inspect_opts;

static const yk_opt inspect_table[] = {
    {"--json", 0, YK_OPT_FLAG, offsetof(inspect_opts, json), NULL, "print the raw manifest (JSON)"},
};

static const yk_cmd_spec inspect_spec = {
    .name = "ckpt inspect",
    .synopsis = "PATH [--json]",
    .about = "Print the manifest human-readable: step, world, codec, model, shards, arenas with their\n"
             "tensors and compression ratio, blobs and the config.",
    .opts = inspect_table,
    .nopts = YK_ARRAY_LEN(inspect_table),
    .min_pos = 1,
    .max_pos = 1,
    .pos_off = offsetof(inspect_opts, pos),
    .epilog = path_about,
};

static int cmd_inspect(int argc, char **argv) {
  inspect_opts o = {0};
  int code = cli_parse(&inspect_spec, argc, argv, &o);
  if (code >= 0) return code;
  yk_diag d = {0};
  int rc = yk_ckpt_manifest_print(o.pos.v[0], o.json, stdout, &d);
  if (rc) fprintf(stderr, "yoke ckpt inspect: %s\n", yk_diag_msg(&d, rc));
  return rc ? 1 : 0;
}

/* ---- convert ---- */

typedef struct convert_opts {
  int64_t world, level, threads;
  const char *out, *gpt2, *safetensors, *arena, *layout, *stage_layers;
  yk_args_pos pos;
} convert_opts;

static const yk_opt convert_table[] = {
    {"--world", 0, YK_OPT_INT, offsetof(convert_opts, world), "M", "reshard to M shard files (with --out)", 1, 99999},
    {"--layout", 0, YK_OPT_STR, offsetof(convert_opts, layout), "tp=T,pp=P[,dp=D][,v=V]",
     "rewrite it for another layout (with --out): tensor, pipeline,\n"
     "                            data-parallel degree (default: the saved one), virtual stages (1)"},
    {"--stage-layers", 0, YK_OPT_STR, offsetof(convert_opts, stage_layers), "LIST",
     "with --layout: blocks per pipeline chunk, as parallel.stage_layers"},
    {"--out", 0, YK_OPT_STR, offsetof(convert_opts, out), "DIR", "checkpoint root the resharded checkpoint goes to"},
    {"--level", 0, YK_OPT_INT, offsetof(convert_opts, level), "L", "zstd level of the resharded checkpoint (default 1)",
     -7, 22},
    {"--threads", 0, YK_OPT_INT, offsetof(convert_opts, threads), "N", "compression threads (default 0: all cores)", 0,
     64},
    {"--export-gpt2", 0, YK_OPT_STR, offsetof(convert_opts, gpt2), "FILE",
     "write the arena as an llm.c GPT-2 fp32 weights file (for yoke eval --weights)"},
    {"--export-safetensors", 0, YK_OPT_STR, offsetof(convert_opts, safetensors), "FILE",
     "write every tensor of the arena to a safetensors file"},
    {"--arena", 0, YK_OPT_STR, offsetof(convert_opts, arena), "NAME", "arena to export (default params: f32 weights)"},
};

static const yk_cmd_spec convert_spec = {
    .name = "ckpt convert",
    .synopsis = "PATH (--world M --out DIR | --layout tp=T,pp=P[,dp=D] --out DIR | --export-gpt2 FILE |\n"
                "       --export-safetensors FILE) [options]",
    .about = "Reshard a checkpoint to M shard files under DIR (same step and layout), rewrite it as the ranks of\n"
             "another DP x TP x PP layout would have saved it (what --resume at that layout loads, bitwise),\n"
             "or export one arena's weights (default arena 'params', f32) to the llm.c GPT-2 weights format or\n"
             "to safetensors, from a checkpoint of any layout (its TP pieces and PP stages put together).",
    .opts = convert_table,
    .nopts = YK_ARRAY_LEN(convert_table),
    .min_pos = 1,
    .max_pos = 1,
    .pos_off = offsetof(convert_opts, pos),
    .epilog = path_about,
};

typedef struct arena_source {
  yk_ckpt_reader *r;
  const char *arena;
} arena_source;

static int read_arena(void *ctx, size_t offset, size_t count, float *dst, yk_diag *d) {
  arena_source *s = ctx;
  return yk_ckpt_reader_read(s->r, s->arena, offset, count, dst, d);
}

/* A checkpoint saved under tensor or pipeline parallelism holds no arena
 * `arena` itself, only its pieces "arena.tpKofN.ppSofP". */
static int sharded(yk_ckpt_reader *r) {
  yk_layout lay;
  yk_ckpt_reader_layout(r, &lay, NULL);
  return lay.tp > 1 || lay.pp > 1;
}

/* The manifest's model section: vocab_size and heads, and (written by
 * yoke train) padded_vocab_size, layers, channels, max_seq_len, which a
 * sharded checkpoint's tables cannot show whole (wte is cut by rows, a stage
 * holds some blocks); 0 where absent. */
static int model_section(yk_ckpt_reader *r, yk_model_config *m, yk_diag *d) {
  const char *mj = yk_ckpt_reader_model_json(r);
  json_t *j = mj ? json_loads(mj, 0, NULL) : NULL;
  json_int_t v[6];
  static const char *const keys[6] = {"vocab_size", "heads", "padded_vocab_size", "layers", "channels", "max_seq_len"};
  for (int i = 0; i < 6; i++) v[i] = json_integer_value(json_object_get(j, keys[i]));
  json_decref(j);
  if (v[0] <= 0 || v[1] <= 0 || v[0] > (1 << 24) || v[1] > (1 << 16))
    return yk_errorf(d, YK_EFORMAT, "the manifest's model section needs vocab_size and heads; got %lld and %lld",
                     (long long)v[0], (long long)v[1]);
  for (int i = 2; i < 6; i++)
    if (v[i] < 0 || v[i] > (1 << 24))
      return yk_errorf(d, YK_EFORMAT, "the manifest's model section has %s=%lld", keys[i], (long long)v[i]);
  *m = (yk_model_config){.vocab_size = (int)v[0], .heads = (int)v[1], .padded_vocab_size = (int)v[2],
                         .layers = (int)v[3], .channels = (int)v[4], .max_seq_len = (int)v[5]};
  return 0;
}

/* A sharded checkpoint: the config is the model section's (yoke train
 * writes every field), and every piece of every stage must be f32 (GPT-2
 * weights come from the master weights) and hold the tensors that config
 * gives it, which yk_engine_ckpt_read_whole checks as it reads. */
static int gpt2_config_sharded(yk_ckpt_reader *r, const char *arena, int need_f32, yk_model_config *out, yk_diag *d) {
  yk_model_config cfg;
  int rc = model_section(r, &cfg, d);
  if (rc) return rc;
  if (cfg.layers <= 0 || cfg.channels <= 0 || cfg.max_seq_len <= 0)
    return yk_errorf(d, YK_EFORMAT, "%s was saved under tensor or pipeline parallelism, but its manifest's model "
                     "section has no layers, channels and max_seq_len to put the pieces together with (written by an "
                     "older yoke?)", yk_ckpt_reader_path(r));
  yk_diag sub = {0};
  if ((rc = yk_model_config_finish(&cfg, &sub)))
    return yk_errorf(d, YK_EFORMAT, "the manifest's model section is no valid GPT-2 config: %s", sub.msg);
  yk_layout lay;
  yk_ckpt_reader_layout(r, &lay, NULL);
  for (int k = 0; k < lay.tp; k++)
    for (int s = 0; s < lay.pp; s++) {
      char name[48];
      yk_ckpt_arena_name_stage(name, sizeof name, arena, lay.tp, k, lay.pp, s);
      yk_ckpt_arena_info a;
      if ((rc = yk_ckpt_reader_find_arena(r, name, &a, d))) return rc;
      if (need_f32 && a.dtype != YK_DT_F32)
        return yk_errorf(d, YK_EINVAL, "arena '%s' is %s; GPT-2 weights come from the f32 master weights (--arena)",
                         name, yk_dtype_name(a.dtype));
    }
  *out = cfg;
  return 0;
}

/* The arena must be the model's parameter arena of some GPT-2 config: the
 * config comes from its tensor table and the manifest's model section
 * (vocab_size, heads); a sharded checkpoint's from the model section. */
int cli_ckpt_gpt2_config(struct yk_ckpt_reader *r, const char *arena, struct yk_model_config *out, yk_diag *d) {
  if (sharded(r)) return gpt2_config_sharded(r, arena, 1, out, d);
  yk_ckpt_arena_info a;
  int rc = yk_ckpt_reader_find_arena(r, arena, &a, d);
  if (rc) return rc;
  if (a.dtype != YK_DT_F32)
    return yk_errorf(d, YK_EINVAL, "arena '%s' is %s; GPT-2 weights come from the f32 master weights (--arena)", arena,
                     yk_dtype_name(a.dtype));
  yk_model_config sec;
  if ((rc = model_section(r, &sec, d))) return rc;
  yk_model_config cfg;
  yk_diag sub = {0};
  if ((rc = yk_model_config_from_table(a.tensors, a.ntensors, sec.vocab_size, sec.heads, &cfg, &sub)))
    return yk_errorf(d, rc, "arena '%s' is not a GPT-2 parameter arena: %s", arena, sub.msg);
  if (a.numel != yk_model_config_num_params(&cfg))
    return yk_errorf(d, YK_EFORMAT, "arena '%s' has %llu elements, its GPT-2 config %zu", arena,
                     (unsigned long long)a.numel, yk_model_config_num_params(&cfg));
  *out = cfg;
  return 0;
}

int cli_ckpt_gpt2_read(struct yk_ckpt_reader *r, const char *arena, const struct yk_model_config *cfg, float *dst,
                       yk_diag *d) {
  if (!sharded(r)) return yk_ckpt_reader_read(r, arena, 0, yk_model_config_num_params(cfg), dst, d);
  return yk_engine_ckpt_read_whole(r, arena, cfg, dst, d); /* every piece of every stage into its place */
}

/* model/ writes the file, reading the arena piece by piece (a sharded
 * checkpoint's pieces are put together in memory first). */
static int export_gpt2(yk_ckpt_reader *r, const char *arena, const char *path, yk_diag *d) {
  yk_model_config cfg;
  int rc = cli_ckpt_gpt2_config(r, arena, &cfg, d);
  if (rc) return rc;
  if (sharded(r)) {
    size_t n = yk_model_config_num_params(&cfg);
    float *whole = malloc(n * sizeof(float));
    if (!whole) return yk_errorf(d, YK_ENOMEM, "out of memory for the whole model (%zu floats)", n);
    if (!(rc = cli_ckpt_gpt2_read(r, arena, &cfg, whole, d))) rc = yk_model_weights_write(path, &cfg, whole, d);
    free(whole);
    return rc;
  }
  arena_source src = {r, arena};
  return yk_model_weights_write_from(path, &cfg, read_arena, &src, d);
}

typedef struct mem_source {
  const uint8_t *p;
  size_t es;
} mem_source;

static int read_mem(void *ctx, uint64_t off, uint64_t n, void *dst, yk_diag *d) {
  mem_source *m = ctx;
  (void)d;
  memcpy(dst, m->p + off * m->es, n * m->es);
  return 0;
}

/* safetensors of a sharded checkpoint: the arena put together whole with
 * the whole model's tensor table, in its saved dtype (16-bit arenas were
 * widened exactly, so narrowing them back is exact): the file a one-rank run
 * of the same weights would export. */
static int export_safetensors(yk_ckpt_reader *r, const char *arena, const char *path, yk_diag *d) {
  if (!sharded(r)) return yk_ckpt_export_safetensors(r, arena, path, d);
  yk_model_config cfg;
  int rc = gpt2_config_sharded(r, arena, 0, &cfg, d);
  if (rc) return rc;
  yk_layout lay;
  yk_ckpt_reader_layout(r, &lay, NULL);
  char first[48];
  yk_ckpt_arena_name_stage(first, sizeof first, arena, lay.tp, 0, lay.pp, 0);
  yk_ckpt_arena_info a;
  if ((rc = yk_ckpt_reader_find_arena(r, first, &a, d))) return rc;
  size_t n = yk_model_config_num_params(&cfg);
  float *whole = malloc(n * sizeof(float));
  void *narrow = a.dtype == YK_DT_F32 ? whole : malloc(n * yk_dtype_size(a.dtype));
  yk_tensor_desc *t = NULL;
  int nt = 0;
  if (!whole || !narrow) rc = yk_errorf(d, YK_ENOMEM, "out of memory for the whole model (%zu elements)", n);
  if (!rc && a.dtype != YK_DT_F32 && a.dtype != YK_DT_F16 && a.dtype != YK_DT_BF16)
    rc = yk_errorf(d, YK_EUNSUPPORTED, "arena '%s' is %s; a sharded checkpoint's model arenas are f32, f16 or bf16",
                   first, yk_dtype_name(a.dtype));
  if (!rc) rc = yk_engine_ckpt_read_whole(r, arena, &cfg, whole, d);
  if (!rc && narrow != whole) yk_cast_from_f32(narrow, a.dtype, whole, n, YK_ISA_AUTO);
  if (!rc) rc = yk_model_tensor_table(&cfg, &t, &nt, d);
  mem_source m = {narrow, yk_dtype_size(a.dtype)};
  if (!rc) rc = yk_ckpt_safetensors_write(path, arena, a.dtype, t, nt, yk_ckpt_reader_step(r), read_mem, &m, d);
  free(t);
  if (narrow != whole) free(narrow);
  free(whole);
  return rc;
}

/* "tp=2,pp=2,dp=1,v=2" into the target config's degrees and *dp; a key
 * given twice, an unknown key or a bad number is one line naming it. */
static int parse_layout(const char *s, yk_config *c, int *dp, yk_diag *d) {
  int seen[4] = {0};
  static const char *const keys[4] = {"tp", "pp", "dp", "v"};
  const char *p = s;
  while (*p) {
    int k = -1;
    for (int i = 0; i < 4; i++) {
      size_t kl = strlen(keys[i]);
      if (!strncmp(p, keys[i], kl) && p[kl] == '=') k = i;
    }
    if (k < 0 || seen[k])
      return yk_errorf(d, YK_EUSAGE, "--layout %s: '%.*s' is %s; write tp=T,pp=P[,dp=D][,v=V]", s,
                       (int)strcspn(p, ","), p, k < 0 ? "not one of tp=, pp=, dp=, v=" : "given twice");
    p += strlen(keys[k]) + 1;
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || v < 1 || v > 1024 || (*end && *end != ','))
      return yk_errorf(d, YK_EUSAGE, "--layout %s: %s=%.*s is not a degree in [1, 1024]", s, keys[k],
                       (int)strcspn(p, ","), p);
    seen[k] = 1;
    if (k == 0) c->parallel.tensor = v;
    else if (k == 1) c->parallel.pipeline = v;
    else if (k == 2) *dp = (int)v;
    else c->parallel.virtual_stages = v;
    p = *end ? end + 1 : end;
  }
  if (!seen[0] || !seen[1]) return yk_errorf(d, YK_EUSAGE, "--layout %s: give at least tp= and pp=", s);
  return 0;
}

/* --layout: the target config is the checkpoint's (defaults if it has
 * none) at the new degrees, train.grad_accum scaled so that the global batch
 * (micro_batch x grad_accum x dp) stays the saved one when it divides, so a
 * resume that keeps it sees no batch change. */
static int convert_layout(yk_ckpt_reader *r, const convert_opts *o, yk_diag *d) {
  yk_config *c = malloc(sizeof *c);
  if (!c) return yk_errorf(d, YK_ENOMEM, "out of memory");
  yk_config_defaults(c);
  const char *yaml = yk_ckpt_reader_config_yaml(r);
  yk_diag sub = {0};
  int rc = yaml ? yk_config_load_string(c, yaml, "the checkpoint's config", &sub) : 0;
  if (rc) rc = yk_errorf(d, YK_EFORMAT, "%s: its config does not load: %s", yk_ckpt_reader_path(r), sub.msg);
  yk_layout saved;
  yk_ckpt_reader_layout(r, &saved, NULL);
  int dp = saved.dp;
  c->parallel.virtual_stages = 1;
  c->parallel.stage_layers[0] = '\0';
  if (!rc) rc = parse_layout(o->layout, c, &dp, d);
  if (!rc && o->stage_layers) {
    char kv[300];
    snprintf(kv, sizeof kv, "parallel.stage_layers=%s", o->stage_layers);
    rc = yk_config_set(c, kv, d);
  }
  if (!rc && dp != saved.dp && (c->train.grad_accum * saved.dp) % dp == 0)
    c->train.grad_accum = c->train.grad_accum * saved.dp / dp;
  yk_model_config mc;
  if (!rc) rc = cli_ckpt_gpt2_config(r, "params", &mc, d); /* whatever its layout */
  yk_logger lg;
  yk_logger_init(&lg, -1, YK_LOG_WARN, stderr);
  yk_engine_ckpt_convert_opts co = {.cfg = c, .dp = dp, .dir = o->out, .level = (int)o->level,
                                    .threads = (int)o->threads, .log = &lg};
  if (!rc) rc = yk_engine_ckpt_convert(r, &mc, &co, d);
  if (!rc)
    printf("wrote %s/step-%08lld (layout dp=%d x tp=%d x pp=%d -> dp=%d x tp=%lld x pp=%lld, train.grad_accum=%lld)\n",
           o->out, (long long)yk_ckpt_reader_step(r), saved.dp, saved.tp, saved.pp, dp,
           (long long)c->parallel.tensor, (long long)c->parallel.pipeline, (long long)c->train.grad_accum);
  free(c);
  return rc;
}

static int cmd_convert(int argc, char **argv) {
  convert_opts o = {.level = 1, .arena = "params"};
  int code = cli_parse(&convert_spec, argc, argv, &o);
  if (code >= 0) return code;
  int reshard = o.world || (o.out && !o.layout);
  if (reshard + !!o.layout + !!o.gpt2 + !!o.safetensors != 1) {
    fprintf(stderr, "yoke ckpt convert: give exactly one of --world M --out DIR, --layout tp=T,pp=P --out DIR, "
                    "--export-gpt2 FILE, --export-safetensors FILE (see yoke ckpt convert --help)\n");
    return 2;
  }
  if (reshard && !(o.world && o.out)) {
    fprintf(stderr, "yoke ckpt convert: resharding needs both --world M and --out DIR (see yoke ckpt convert --help)\n");
    return 2;
  }
  if (o.layout && !o.out) {
    fprintf(stderr, "yoke ckpt convert: --layout needs --out DIR, the checkpoint root to write to\n");
    return 2;
  }
  if (o.stage_layers && !o.layout) {
    fprintf(stderr, "yoke ckpt convert: --stage-layers goes with --layout\n");
    return 2;
  }
  yk_ckpt_open_opts oo = {.verify = YK_CKPT_VERIFY_META, .threads = (int)o.threads};
  yk_ckpt_reader *r;
  yk_diag d = {0};
  int rc = yk_ckpt_reader_open(o.pos.v[0], &oo, &r, &d);
  if (!rc) {
    long long step = (long long)yk_ckpt_reader_step(r);
    if (o.gpt2) {
      rc = export_gpt2(r, o.arena, o.gpt2, &d);
      if (!rc) printf("wrote %s (GPT-2 fp32 weights, arena '%s', step %lld)\n", o.gpt2, o.arena, step);
    } else if (o.safetensors) {
      rc = export_safetensors(r, o.arena, o.safetensors, &d);
      if (!rc) printf("wrote %s (safetensors, arena '%s', step %lld)\n", o.safetensors, o.arena, step);
    } else if (o.layout) {
      rc = convert_layout(r, &o, &d);
    } else {
      yk_ckpt_opts co;
      yk_ckpt_opts_default(&co);
      co.dir = o.out;
      co.world = (int)o.world;
      co.level = (int)o.level;
      co.threads = (int)o.threads;
      co.keep = 0;
      yk_logger lg;
      yk_logger_init(&lg, -1, YK_LOG_WARN, stderr);
      co.log = &lg;
      rc = yk_ckpt_convert_reshard(r, &co, &d);
      if (!rc) printf("wrote %s/step-%08lld (world %d -> %d)\n", o.out, step, yk_ckpt_reader_world(r), co.world);
    }
    yk_ckpt_reader_close(r);
  }
  if (rc) {
    fprintf(stderr, "yoke ckpt convert: %s\n", yk_diag_msg(&d, rc));
    return cli_exit_code(rc) == 2 ? 2 : 1;
  }
  return 0;
}

static const cli_cmd ckpt_cmds[] = {
    {"ls", cmd_ls, "list the checkpoints in DIR: step, world size, size, committed or incomplete"},
    {"verify", cmd_verify, "check every checksum; exit 1 naming the damaged file and tensor"},
    {"inspect", cmd_inspect, "print the manifest human-readable (--json: the raw manifest)"},
    {"convert", cmd_convert, "reshard to M shard files or another DP x TP x PP layout, or export weights to GPT-2 (llm.c) or safetensors"},
};

int cli_cmd_ckpt(int argc, char **argv) {
  return cli_dispatch("yoke ckpt", "action", ckpt_cmds, YK_ARRAY_LEN(ckpt_cmds), argc, argv);
}
