/* cmd.c - `yoke ckpt ls|verify|inspect|convert`. */
#include "ckpt_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: yoke ckpt ls DIR\n"
    "       yoke ckpt verify PATH [--all] [--threads N]\n"
    "       yoke ckpt inspect PATH [--json]\n"
    "       yoke ckpt convert PATH --world M --out DIR [--level L] [--threads N]\n"
    "       yoke ckpt convert PATH --export-gpt2 FILE [--arena NAME]\n"
    "       yoke ckpt convert PATH --export-safetensors FILE [--arena NAME]\n\n"
    "PATH is a checkpoint directory (DIR/step-N) or a checkpoint root DIR (its newest committed checkpoint).\n"
    "ls       list the checkpoints in DIR: step, world size, size, committed or incomplete\n"
    "verify   check every checksum (manifest, shard files, every chunk and blob); exit 1 naming the damaged\n"
    "         file and tensor. --all: every checkpoint in the root DIR, not just the newest\n"
    "inspect  print the manifest human-readable (--json: the raw manifest)\n"
    "convert  reshard to M shard files under DIR (same step), or export one arena's weights (default arena\n"
    "         'params', f32) to the llm.c GPT-2 weights format or to safetensors\n";

static int usage_err(const char *cmd, const char *fmt, const char *arg) {
  fprintf(stderr, "yoke ckpt %s: ", cmd);
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n%s", usage_text);
  return 2;
}

static int is_help(const char *a) { return !strcmp(a, "--help") || !strcmp(a, "-h"); }

static void human_bytes(char *buf, size_t cap, double b) {
  const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (b >= 1024 && i < 4) {
    b /= 1024;
    i++;
  }
  snprintf(buf, cap, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

static int cmd_ls(int argc, char **argv) {
  const char *dir = NULL;
  for (int i = 1; i < argc; i++) {
    if (is_help(argv[i])) {
      fputs(usage_text, stdout);
      return 0;
    }
    if (argv[i][0] == '-') return usage_err("ls", "unknown option '%s'", argv[i]);
    if (dir) return usage_err("ls", "unexpected argument '%s'", argv[i]);
    dir = argv[i];
  }
  if (!dir) return usage_err("ls", "%s", "needs the checkpoint directory DIR");
  yk_ckpt_entry *e;
  int n;
  yk_diag d = {0};
  int rc = yk_ckpt_list(dir, &e, &n, &d);
  if (rc) {
    fprintf(stderr, "yoke ckpt ls: %s\n", yk_diag_msg(&d, rc));
    return 1;
  }
  printf("%-10s %-6s %-11s %-11s %s\n", "STEP", "WORLD", "SIZE", "STATUS", "PATH");
  int newest = -1;
  for (int i = 0; i < n; i++)
    if (e[i].committed) newest = i;
  for (int i = 0; i < n; i++) {
    char sz[32], w[16];
    human_bytes(sz, sizeof sz, (double)e[i].bytes);
    snprintf(w, sizeof w, "%d", e[i].world);
    const char *st = e[i].committed ? (i == newest ? "latest" : "committed")
                     : strstr(e[i].path, ".partial") ? "incomplete" : "damaged";
    printf("%-10lld %-6s %-11s %-11s %s\n", (long long)e[i].step, e[i].world ? w : "-", sz, st, e[i].path);
  }
  if (!n) printf("(no checkpoints in %s)\n", dir);
  free(e);
  return 0;
}

static int parse_int_opt(const char *cmd, const char *name, const char *val, int lo, int hi, int *out) {
  int64_t v;
  if (!val || yk_parse_i64(val, &v) || v < lo || v > hi) {
    fprintf(stderr, "yoke ckpt %s: %s needs an integer in %d..%d, got '%s'\n", cmd, name, lo, hi, val ? val : "");
    return 2;
  }
  *out = (int)v;
  return 0;
}

static int verify_one(const char *path, int threads) {
  yk_ckpt_open_opts oo = {.verify = YK_CKPT_VERIFY_META, .threads = threads};
  yk_ckpt_reader *r;
  yk_diag d = {0};
  double t0 = yk_now_s();
  int rc = yk_ckpt_reader_open(path, &oo, &r, &d);
  if (!rc) {
    rc = yk_ckpt_reader_verify(r, &d);
    if (!rc) {
      uint64_t raw = 0;
      for (int i = 0; i < yk_ckpt_reader_arena_count(r); i++) {
        yk_ckpt_arena_info ai;
        yk_ckpt_reader_arena(r, i, &ai);
        raw += ai.numel * yk_dtype_size(ai.dtype);
      }
      char sz[32];
      human_bytes(sz, sizeof sz, (double)raw);
      printf("ok: %s (step %lld, world %d, %d arenas, %d blobs, %s of state) verified in %.2f s\n",
             yk_ckpt_reader_path(r), (long long)yk_ckpt_reader_step(r), yk_ckpt_reader_world(r),
             yk_ckpt_reader_arena_count(r), yk_ckpt_reader_blob_count(r), sz, yk_now_s() - t0);
    }
    yk_ckpt_reader_close(r);
  }
  if (rc) fprintf(stderr, "yoke ckpt verify: %s\n", yk_diag_msg(&d, rc));
  return rc ? 1 : 0;
}

static int cmd_verify(int argc, char **argv) {
  const char *path = NULL;
  int threads = 0, all = 0;
  for (int i = 1; i < argc; i++) {
    if (is_help(argv[i])) {
      fputs(usage_text, stdout);
      return 0;
    }
    if (!strcmp(argv[i], "--threads")) {
      if (parse_int_opt("verify", "--threads", i + 1 < argc ? argv[++i] : NULL, 0, 64, &threads)) return 2;
    } else if (!strcmp(argv[i], "--all")) {
      all = 1;
    } else if (argv[i][0] == '-') {
      return usage_err("verify", "unknown option '%s'", argv[i]);
    } else if (path) {
      return usage_err("verify", "unexpected argument '%s'", argv[i]);
    } else {
      path = argv[i];
    }
  }
  if (!path) return usage_err("verify", "%s", "needs a checkpoint PATH");
  if (!all) return verify_one(path, threads);
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
    bad |= verify_one(e[i].path, threads);
  }
  free(e);
  if (!seen) {
    fprintf(stderr, "yoke ckpt verify: no checkpoints in '%s'\n", path);
    return 1;
  }
  return bad;
}

static int cmd_inspect(int argc, char **argv) {
  const char *path = NULL;
  int raw_json = 0;
  for (int i = 1; i < argc; i++) {
    if (is_help(argv[i])) {
      fputs(usage_text, stdout);
      return 0;
    }
    if (!strcmp(argv[i], "--json")) raw_json = 1;
    else if (argv[i][0] == '-') return usage_err("inspect", "unknown option '%s'", argv[i]);
    else if (path) return usage_err("inspect", "unexpected argument '%s'", argv[i]);
    else path = argv[i];
  }
  if (!path) return usage_err("inspect", "%s", "needs a checkpoint PATH");
  yk_ckpt_reader *r;
  yk_diag d = {0};
  int rc = yk_ckpt_reader_open(path, NULL, &r, &d);
  if (rc) {
    fprintf(stderr, "yoke ckpt inspect: %s\n", yk_diag_msg(&d, rc));
    return 1;
  }
  if (raw_json) {
    fputs(yk_ckpt_reader_manifest_text(r), stdout);
    yk_ckpt_reader_close(r);
    return 0;
  }
  json_t *m = json_loads(yk_ckpt_reader_manifest_text(r), 0, NULL);
  printf("checkpoint  %s\n", yk_ckpt_reader_path(r));
  printf("step        %lld\n", (long long)yk_ckpt_reader_step(r));
  printf("world       %d (partition %s)\n", yk_ckpt_reader_world(r),
         json_string_value(json_object_get(m, "partition")));
  printf("format      %s version %lld, written by yoke %s\n", json_string_value(json_object_get(m, "format")),
         (long long)json_integer_value(json_object_get(m, "version")),
         json_string_value(json_object_get(m, "yoke_version")));
  json_t *codec = json_object_get(m, "codec");
  printf("codec       %s level %lld, %s, %lld elements per chunk\n", json_string_value(json_object_get(codec, "name")),
         (long long)json_integer_value(json_object_get(codec, "level")),
         json_string_value(json_object_get(codec, "layout")),
         (long long)json_integer_value(json_object_get(codec, "chunk_elems")));
  const char *model = yk_ckpt_reader_model_json(r);
  printf("model       %s\n", model ? model : "{}");
  printf("\nshards:\n");
  size_t i;
  json_t *v;
  json_array_foreach(json_object_get(m, "shards"), i, v) {
    char sz[32];
    human_bytes(sz, sizeof sz, (double)json_integer_value(json_object_get(v, "bytes")));
    printf("  %-28s %10s  xxh3 %s\n", json_string_value(json_object_get(v, "file")), sz,
           json_string_value(json_object_get(v, "xxh3")));
  }
  printf("\narenas:\n");
  json_array_foreach(json_object_get(m, "arenas"), i, v) {
    yk_ckpt_arena_info ai;
    yk_ckpt_reader_arena(r, (int)i, &ai);
    uint64_t comp = 0;
    size_t k;
    json_t *c;
    json_array_foreach(json_object_get(v, "chunks"), k, c) comp += (uint64_t)json_integer_value(json_object_get(c, "bytes"));
    double raw = (double)ai.numel * (double)yk_dtype_size(ai.dtype);
    char rs[32], cs[32];
    human_bytes(rs, sizeof rs, raw);
    human_bytes(cs, sizeof cs, (double)comp);
    printf("  %-12s %-5s %12llu elements  %10s -> %10s (ratio %.3f), %zu chunks\n", ai.name, yk_dtype_name(ai.dtype),
           (unsigned long long)ai.numel, rs, cs, comp ? raw / (double)comp : 0.0,
           json_array_size(json_object_get(v, "chunks")));
    for (int t = 0; t < ai.ntensors; t++) {
      const yk_tensor_desc *td = &ai.tensors[t];
      char shape[96] = "";
      size_t sl = 0;
      for (int q = 0; q < td->ndim; q++)
        sl += (size_t)snprintf(shape + sl, sizeof shape - sl, "%s%lld", q ? ", " : "", (long long)td->shape[q]);
      printf("      %-16s (%s)  offset %zu  numel %zu\n", td->name, shape, td->offset, td->numel);
    }
  }
  printf("\nblobs:%s\n", yk_ckpt_reader_blob_count(r) ? "" : " (none)");
  for (int b = 0; b < yk_ckpt_reader_blob_count(r); b++) {
    const char *name;
    int rank;
    uint64_t bytes;
    yk_ckpt_reader_blob_info(r, b, &name, &rank, &bytes);
    char who[32];
    if (rank < 0) snprintf(who, sizeof who, "global");
    else snprintf(who, sizeof who, "rank %d", rank);
    printf("  %-20s %-8s %llu bytes\n", name, who, (unsigned long long)bytes);
  }
  const char *cfg = yk_ckpt_reader_config_yaml(r);
  if (cfg) printf("\nconfig:\n%s%s", cfg, cfg[0] && cfg[strlen(cfg) - 1] == '\n' ? "" : "\n");
  json_decref(m);
  yk_ckpt_reader_close(r);
  return 0;
}

static int cmd_convert(int argc, char **argv) {
  const char *path = NULL, *out = NULL, *gpt2 = NULL, *st = NULL, *arena = "params";
  int world = 0, level = 1, threads = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (is_help(a)) {
      fputs(usage_text, stdout);
      return 0;
    }
    if (!strcmp(a, "--world")) {
      if (parse_int_opt("convert", a, val, 1, 99999, &world)) return 2;
      i++;
    } else if (!strcmp(a, "--level")) {
      if (parse_int_opt("convert", a, val, -7, 22, &level)) return 2;
      i++;
    } else if (!strcmp(a, "--threads")) {
      if (parse_int_opt("convert", a, val, 0, 64, &threads)) return 2;
      i++;
    } else if (!strcmp(a, "--out") || !strcmp(a, "--export-gpt2") || !strcmp(a, "--export-safetensors") ||
               !strcmp(a, "--arena")) {
      if (!val) return usage_err("convert", "%s needs a value", a);
      if (!strcmp(a, "--out")) out = val;
      else if (!strcmp(a, "--export-gpt2")) gpt2 = val;
      else if (!strcmp(a, "--export-safetensors")) st = val;
      else arena = val;
      i++;
    } else if (a[0] == '-') {
      return usage_err("convert", "unknown option '%s'", a);
    } else if (path) {
      return usage_err("convert", "unexpected argument '%s'", a);
    } else {
      path = a;
    }
  }
  if (!path) return usage_err("convert", "%s", "needs a checkpoint PATH");
  int modes = (world || out ? 1 : 0) + (gpt2 ? 1 : 0) + (st ? 1 : 0);
  if (modes != 1)
    return usage_err("convert", "%s", "give exactly one of --world M --out DIR, --export-gpt2 FILE, --export-safetensors FILE");
  if ((world || out) && !(world && out)) return usage_err("convert", "%s", "resharding needs both --world M and --out DIR");
  yk_ckpt_open_opts oo = {.verify = YK_CKPT_VERIFY_META, .threads = threads};
  yk_ckpt_reader *r;
  yk_diag d = {0};
  int rc = yk_ckpt_reader_open(path, &oo, &r, &d);
  if (!rc) {
    if (gpt2) {
      rc = yk_ckpt_export_gpt2(r, arena, gpt2, &d);
      if (!rc) printf("wrote %s (GPT-2 fp32 weights, arena '%s', step %lld)\n", gpt2, arena,
                      (long long)yk_ckpt_reader_step(r));
    } else if (st) {
      rc = yk_ckpt_export_safetensors(r, arena, st, &d);
      if (!rc) printf("wrote %s (safetensors, arena '%s', step %lld)\n", st, arena, (long long)yk_ckpt_reader_step(r));
    } else {
      yk_ckpt_opts o;
      yk_ckpt_opts_default(&o);
      o.dir = out;
      o.world = world;
      o.level = level;
      o.threads = threads;
      o.keep = 0;
      yk_logger lg;
      yk_logger_init(&lg, -1, YK_LOG_WARN, stderr);
      o.log = &lg;
      rc = yk_ckpt_convert_reshard(r, &o, &d);
      if (!rc) printf("wrote %s/step-%08lld (world %d -> %d)\n", out, (long long)yk_ckpt_reader_step(r),
                      yk_ckpt_reader_world(r), world);
    }
    yk_ckpt_reader_close(r);
  }
  if (rc) {
    fprintf(stderr, "yoke ckpt convert: %s\n", yk_diag_msg(&d, rc));
    return 1;
  }
  return 0;
}

int yk_ckpt_cmd_main(int argc, char **argv) {
  if (argc < 2 || is_help(argv[1])) {
    fputs(usage_text, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const char *a = argv[1];
  if (!strcmp(a, "ls")) return cmd_ls(argc - 1, argv + 1);
  if (!strcmp(a, "verify")) return cmd_verify(argc - 1, argv + 1);
  if (!strcmp(a, "inspect")) return cmd_inspect(argc - 1, argv + 1);
  if (!strcmp(a, "convert")) return cmd_convert(argc - 1, argv + 1);
  fprintf(stderr, "yoke ckpt: unknown action '%s'\n%s", a, usage_text);
  return 2;
}
