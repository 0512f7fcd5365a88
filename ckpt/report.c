/* report.c - what `yoke ckpt ls|verify|inspect` print (the command line is
 * parsed in cli/): the listing of a root, one verified checkpoint, and the
 * manifest in readable form. */
#include "ckpt_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void human_bytes(char *buf, size_t cap, double b) {
  const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (b >= 1024 && i < 4) {
    b /= 1024;
    i++;
  }
  snprintf(buf, cap, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

int yk_ckpt_list_print(const char *dir, FILE *out, yk_diag *d) {
  yk_ckpt_entry *e;
  int n;
  int rc = yk_ckpt_list(dir, &e, &n, d);
  if (rc) return rc;
  fprintf(out, "%-10s %-6s %-11s %-11s %s\n", "STEP", "WORLD", "SIZE", "STATUS", "PATH");
  int newest = -1;
  for (int i = 0; i < n; i++)
    if (e[i].committed) newest = i;
  for (int i = 0; i < n; i++) {
    char sz[32], w[16];
    human_bytes(sz, sizeof sz, (double)e[i].bytes);
    snprintf(w, sizeof w, "%d", e[i].world);
    const char *st = e[i].committed ? (i == newest ? "latest" : "committed")
                     : strstr(e[i].path, ".partial") ? "incomplete" : "damaged";
    fprintf(out, "%-10lld %-6s %-11s %-11s %s\n", (long long)e[i].step, e[i].world ? w : "-", sz, st, e[i].path);
  }
  if (!n) fprintf(out, "(no checkpoints in %s)\n", dir);
  free(e);
  return 0;
}

int yk_ckpt_verify_report(const char *path, int threads, FILE *out, yk_diag *d) {
  yk_ckpt_open_opts oo = {.verify = YK_CKPT_VERIFY_META, .threads = threads};
  yk_ckpt_reader *r;
  double t0 = yk_now_s();
  int rc = yk_ckpt_reader_open(path, &oo, &r, d);
  if (rc) return rc;
  rc = yk_ckpt_reader_verify(r, d);
  if (!rc) {
    uint64_t raw = 0;
    for (int i = 0; i < yk_ckpt_reader_arena_count(r); i++) {
      yk_ckpt_arena_info ai;
      yk_ckpt_reader_arena(r, i, &ai);
      raw += ai.numel * yk_dtype_size(ai.dtype);
    }
    char sz[32];
    human_bytes(sz, sizeof sz, (double)raw);
    fprintf(out, "ok: %s (step %lld, world %d, %d arenas, %d blobs, %s of state) verified in %.2f s\n",
            yk_ckpt_reader_path(r), (long long)yk_ckpt_reader_step(r), yk_ckpt_reader_world(r),
            yk_ckpt_reader_arena_count(r), yk_ckpt_reader_blob_count(r), sz, yk_now_s() - t0);
  }
  yk_ckpt_reader_close(r);
  return rc;
}

int yk_ckpt_manifest_print(const char *path, int raw_json, FILE *out, yk_diag *d) {
  yk_ckpt_reader *r;
  int rc = yk_ckpt_reader_open(path, NULL, &r, d);
  if (rc) return rc;
  if (raw_json) {
    fputs(yk_ckpt_reader_manifest_text(r), out);
    yk_ckpt_reader_close(r);
    return 0;
  }
  json_t *m = json_loads(yk_ckpt_reader_manifest_text(r), 0, NULL);
  fprintf(out, "checkpoint  %s\n", yk_ckpt_reader_path(r));
  fprintf(out, "step        %lld\n", (long long)yk_ckpt_reader_step(r));
  fprintf(out, "world       %d (partition %s)\n", yk_ckpt_reader_world(r),
         json_string_value(json_object_get(m, "partition")));
  fprintf(out, "format      %s version %lld, written by yoke %s\n", json_string_value(json_object_get(m, "format")),
         (long long)json_integer_value(json_object_get(m, "version")),
         json_string_value(json_object_get(m, "yoke_version")));
  yk_layout lay;
  int seq;
  yk_ckpt_reader_layout(r, &lay, &seq);
  fprintf(out, "layout      dp %d x tp %d x pp %d%s\n", lay.dp, lay.tp, lay.pp,
          seq ? ", sequence parallel" : "");
  json_t *codec = json_object_get(m, "codec");
  fprintf(out, "codec       %s level %lld, %s, %lld elements per chunk\n", json_string_value(json_object_get(codec, "name")),
         (long long)json_integer_value(json_object_get(codec, "level")),
         json_string_value(json_object_get(codec, "layout")),
         (long long)json_integer_value(json_object_get(codec, "chunk_elems")));
  const char *model = yk_ckpt_reader_model_json(r);
  fprintf(out, "model       %s\n", model ? model : "{}");
  fprintf(out, "\nshards:\n");
  size_t i;
  json_t *v;
  json_array_foreach(json_object_get(m, "shards"), i, v) {
    char sz[32];
    human_bytes(sz, sizeof sz, (double)json_integer_value(json_object_get(v, "bytes")));
    fprintf(out, "  %-28s %10s  xxh3 %s\n", json_string_value(json_object_get(v, "file")), sz,
           json_string_value(json_object_get(v, "xxh3")));
  }
  fprintf(out, "\narenas:\n");
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
    fprintf(out, "  %-12s %-5s %12llu elements  %10s -> %10s (ratio %.3f), %zu chunks\n", ai.name, yk_dtype_name(ai.dtype),
           (unsigned long long)ai.numel, rs, cs, comp ? raw / (double)comp : 0.0,
           json_array_size(json_object_get(v, "chunks")));
    for (int t = 0; t < ai.ntensors; t++) {
      const yk_tensor_desc *td = &ai.tensors[t];
      char shape[96] = "";
      size_t sl = 0;
      for (int q = 0; q < td->ndim; q++)
        sl += (size_t)snprintf(shape + sl, sizeof shape - sl, "%s%lld", q ? ", " : "", (long long)td->shape[q]);
      fprintf(out, "      %-16s (%s)  offset %zu  numel %zu%s%s\n", td->name, shape, td->offset, td->numel,
              td->split ? "  split " : "", td->split ? ck_split_name(td->split) : "");
    }
  }
  fprintf(out, "\nblobs:%s\n", yk_ckpt_reader_blob_count(r) ? "" : " (none)");
  for (int b = 0; b < yk_ckpt_reader_blob_count(r); b++) {
    const char *name;
    int rank;
    uint64_t bytes;
    yk_ckpt_reader_blob_info(r, b, &name, &rank, &bytes);
    char who[32];
    if (rank < 0) snprintf(who, sizeof who, "global");
    else snprintf(who, sizeof who, "rank %d", rank);
    fprintf(out, "  %-20s %-8s %llu bytes\n", name, who, (unsigned long long)bytes);
  }
  const char *cfg = yk_ckpt_reader_config_yaml(r);
  if (cfg) fprintf(out, "\nconfig:\n%s%s", cfg, cfg[0] && cfg[strlen(cfg) - 1] == '\n' ? "" : "\n");
  json_decref(m);
  yk_ckpt_reader_close(r);
  return 0;
}

