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
  const char *out, *gpt2, *safetensors, *arena;
  yk_args_pos pos;
} convert_opts;

static const yk_opt convert_table[] = {
    {"--world", 0, YK_OPT_INT, offsetof(convert_opts, world), "M", "reshard to M shard files (with --out)", 1, 99999},
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
    .synopsis = "PATH (--world M --out DIR | --export-gpt2 FILE | --export-safetensors FILE) [options]",
    .about = "Reshard a checkpoint to M shard files under DIR (same step), or export one arena's weights\n"
             "(default arena 'params', f32) to the llm.c GPT-2 weights format or to safetensors.",
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

/* The manifest's model section: vocab_size and heads (and padded_vocab_size,
 * which a tensor-parallel table cannot show: wte is cut by rows). */
static int model_section(yk_ckpt_reader *r, int *V, int *NH, int *Vp, yk_diag *d) {
  const char *mj = yk_ckpt_reader_model_json(r);
  json_t *m = mj ? json_loads(mj, 0, NULL) : NULL;
  json_int_t v = json_integer_value(json_object_get(m, "vocab_size"));
  json_int_t nh = json_integer_value(json_object_get(m, "heads"));
  json_int_t vp = json_integer_value(json_object_get(m, "padded_vocab_size"));
  json_decref(m);
  if (v <= 0 || nh <= 0 || v > (1 << 24) || nh > (1 << 16) || vp < 0 || vp > (1 << 24))
    return yk_errorf(d, YK_EFORMAT, "the manifest's model section needs vocab_size and heads; got %lld "
                     "and %lld", (long long)v, (long long)nh);
  *V = (int)v;
  *NH = (int)nh;
  *Vp = (int)vp;
  return 0;
}

/* Under tensor parallelism the checkpoint holds arena.tpKofN for every rank
 * K: the config comes from rank 0's table (wpe and the layer count are
 * whole) and the manifest, and every rank's table must be the one the model
 * gives that config and rank. */
static int gpt2_config_tp(yk_ckpt_reader *r, const char *arena, int tp, yk_model_config *out, yk_diag *d) {
  int V, NH, Vp, rc;
  if ((rc = model_section(r, &V, &NH, &Vp, d))) return rc;
  yk_model_config cfg = {0};
  for (int k = 0; k < tp; k++) {
    char name[48];
    yk_ckpt_arena_name(name, sizeof name, arena, tp, k);
    yk_ckpt_arena_info a;
    if ((rc = yk_ckpt_reader_find_arena(r, name, &a, d))) return rc;
    if (a.dtype != YK_DT_F32)
      return yk_errorf(d, YK_EINVAL, "arena '%s' is %s; GPT-2 weights come from the f32 master weights (--arena)",
                       name, yk_dtype_name(a.dtype));
    if (k == 0) {
      if (a.ntensors < 4 || (a.ntensors - 4) % 12 || strcmp(a.tensors[1].name, "wpe") || a.tensors[1].ndim != 2)
        return yk_errorf(d, YK_EFORMAT, "arena '%s' is not a GPT-2 parameter arena: %d tensors, the second '%s'", name,
                         a.ntensors, a.ntensors > 1 ? a.tensors[1].name : "");
      cfg = (yk_model_config){.layers = (a.ntensors - 4) / 12, .channels = (int)a.tensors[1].shape[1], .heads = NH,
                              .max_seq_len = (int)a.tensors[1].shape[0], .vocab_size = V, .padded_vocab_size = Vp};
    }
    yk_tensor_desc *want = NULL;
    int nw = 0;
    if ((rc = yk_model_tp_tensor_table(&cfg, tp, k, &want, &nw, d))) return rc;
    for (int i = 0; i < nw && !rc; i++)
      if (nw != a.ntensors || strcmp(a.tensors[i].name, want[i].name) || a.tensors[i].offset != want[i].offset ||
          a.tensors[i].numel != want[i].numel)
        rc = yk_errorf(d, YK_EFORMAT, "arena '%s' is not tensor-parallel rank %d of %d of GPT-2 L=%d C=%d NH=%d: tensor %d "
                       "is '%s' (%zu elements), expected '%s' (%zu)", name, k, tp, cfg.layers, cfg.channels, NH, i,
                       i < a.ntensors ? a.tensors[i].name : "(none)", i < a.ntensors ? a.tensors[i].numel : 0,
                       want[i].name, want[i].numel);
    free(want);
    if (rc) return rc;
  }
  *out = cfg;
  return 0;
}

/* The arena must be the model's parameter arena of some GPT-2 config: the
 * config comes from its tensor table and the manifest's model section
 * (vocab_size, heads); a tensor-parallel checkpoint's from its pieces. */
int cli_ckpt_gpt2_config(struct yk_ckpt_reader *r, const char *arena, struct yk_model_config *out, yk_diag *d) {
  yk_layout lay;
  yk_ckpt_reader_layout(r, &lay, NULL);
  if (lay.tp > 1) return gpt2_config_tp(r, arena, lay.tp, out, d);
  yk_ckpt_arena_info a;
  int rc = yk_ckpt_reader_find_arena(r, arena, &a, d);
  if (rc) return rc;
  if (a.dtype != YK_DT_F32)
    return yk_errorf(d, YK_EINVAL, "arena '%s' is %s; GPT-2 weights come from the f32 master weights (--arena)", arena,
                     yk_dtype_name(a.dtype));
  int V, NH, Vp;
  if ((rc = model_section(r, &V, &NH, &Vp, d))) return rc;
  yk_model_config cfg;
  yk_diag sub = {0};
  if ((rc = yk_model_config_from_table(a.tensors, a.ntensors, V, NH, &cfg, &sub)))
    return yk_errorf(d, rc, "arena '%s' is not a GPT-2 parameter arena: %s", arena, sub.msg);
  if (a.numel != yk_model_config_num_params(&cfg))
    return yk_errorf(d, YK_EFORMAT, "arena '%s' has %llu elements, its GPT-2 config %zu", arena,
                     (unsigned long long)a.numel, yk_model_config_num_params(&cfg));
  *out = cfg;
  return 0;
}

int cli_ckpt_gpt2_read(struct yk_ckpt_reader *r, const char *arena, const struct yk_model_config *cfg, float *dst,
                       yk_diag *d) {
  yk_layout lay;
  yk_ckpt_reader_layout(r, &lay, NULL);
  if (lay.tp == 1) return yk_ckpt_reader_read(r, arena, 0, yk_model_config_num_params(cfg), dst, d);
  return yk_engine_ckpt_read_whole(r, arena, cfg, dst, d); /* every rank's pieces into their places */
}

/* model/ writes the file, reading the arena piece by piece (a
 * tensor-parallel checkpoint's pieces are put together in memory first). */
static int export_gpt2(yk_ckpt_reader *r, const char *arena, const char *path, yk_diag *d) {
  yk_model_config cfg;
  int rc = cli_ckpt_gpt2_config(r, arena, &cfg, d);
  if (rc) return rc;
  yk_layout lay;
  yk_ckpt_reader_layout(r, &lay, NULL);
  if (lay.tp > 1) {
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

static int cmd_convert(int argc, char **argv) {
  convert_opts o = {.level = 1, .arena = "params"};
  int code = cli_parse(&convert_spec, argc, argv, &o);
  if (code >= 0) return code;
  int reshard = o.world || o.out;
  if (reshard + !!o.gpt2 + !!o.safetensors != 1) {
    fprintf(stderr, "yoke ckpt convert: give exactly one of --world M --out DIR, --export-gpt2 FILE, "
                    "--export-safetensors FILE (see yoke ckpt convert --help)\n");
    return 2;
  }
  if (reshard && !(o.world && o.out)) {
    fprintf(stderr, "yoke ckpt convert: resharding needs both --world M and --out DIR (see yoke ckpt convert --help)\n");
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
      rc = yk_ckpt_export_safetensors(r, o.arena, o.safetensors, &d);
      if (!rc) printf("wrote %s (safetensors, arena '%s', step %lld)\n", o.safetensors, o.arena, step);
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
    return 1;
  }
  return 0;
}

static const cli_cmd ckpt_cmds[] = {
    {"ls", cmd_ls, "list the checkpoints in DIR: step, world size, size, committed or incomplete"},
    {"verify", cmd_verify, "check every checksum; exit 1 naming the damaged file and tensor"},
    {"inspect", cmd_inspect, "print the manifest human-readable (--json: the raw manifest)"},
    {"convert", cmd_convert, "reshard to M shard files, or export weights to GPT-2 (llm.c) or safetensors"},
};

int cli_cmd_ckpt(int argc, char **argv) {
  return cli_dispatch("yoke ckpt", "action", ckpt_cmds, YK_ARRAY_LEN(ckpt_cmds), argc, argv);
}
