/* cmd_trace.c - `yoke trace merge|top`: the command lines of trace/'s
 * tools (docs/tracing.md). */
#include <stddef.h>

#include "cli.h"
#include "yk_trace.h"

typedef struct merge_opts {
  const char *out;
  yk_args_pos pos;
} merge_opts;

static const yk_opt merge_table[] = {
    {"--out", 'o', YK_OPT_STR, offsetof(merge_opts, out), "FILE", "the merged trace (required)"},
};

static const yk_cmd_spec merge_spec = {
    .name = "trace merge",
    .synopsis = "--out FILE TRACE...",
    .about = "Combine the per-rank traces of train.trace into one Chrome/Perfetto trace: every\n"
             "timestamp moved to rank 0's clock by the offset each rank measured at start, events\n"
             "sorted by time. Prints the largest alignment error.",
    .opts = merge_table,
    .nopts = YK_ARRAY_LEN(merge_table),
    .min_pos = 1,
    .max_pos = 1 << 20,
    .pos_off = offsetof(merge_opts, pos),
    .epilog = "Example:\n  yoke trace merge --out run.json run.rank*.json   # then open run.json in ui.perfetto.dev\n",
};

static int cmd_merge(int argc, char **argv) {
  merge_opts o = {0};
  int code = cli_parse(&merge_spec, argc, argv, &o);
  if (code >= 0) return code;
  if (!o.out) {
    fprintf(stderr, "yoke trace merge: --out FILE is required (where the merged trace goes)\n");
    return 2;
  }
  yk_trace_merge_opts lo = {.inputs = (const char *const *)o.pos.v, .n_inputs = o.pos.n, .out = o.out};
  yk_diag d = {0};
  int rc = yk_trace_merge(&lo, stdout, &d);
  if (rc) fprintf(stderr, "yoke trace merge: %s\n", yk_diag_msg(&d, rc));
  return rc == YK_EINVAL ? 2 : cli_exit_code(rc);
}

typedef struct top_opts {
  int json;
  int64_t limit;
  yk_args_pos pos;
} top_opts;

static const yk_opt top_table[] = {
    {"--json", 0, YK_OPT_FLAG, offsetof(top_opts, json), NULL, "one JSON object instead of the table"},
    {"--limit", 'n', YK_OPT_INT, offsetof(top_opts, limit), "N", "rows per table: spans, kernels (default 20)", 1, 1e6},
};

static const yk_cmd_spec top_spec = {
    .name = "trace top",
    .synopsis = "[--json] [--limit N] TRACE...",
    .about = "The profiler view of traces (per-rank files or a merged one): the hottest spans by\n"
             "total and per-step time (name, category and arguments such as bucket and bytes), the\n"
             "share of the step that was communication not hidden by compute, and the slowest rank;\n"
             "with kernel spans (train.trace_detail=kernel) also the hottest operators (kernel, shape, layer).",
    .opts = top_table,
    .nopts = YK_ARRAY_LEN(top_table),
    .min_pos = 1,
    .max_pos = 1 << 20,
    .pos_off = offsetof(top_opts, pos),
};

static int cmd_top(int argc, char **argv) {
  top_opts o = {0};
  int code = cli_parse(&top_spec, argc, argv, &o);
  if (code >= 0) return code;
  yk_trace_top_opts lo = {
      .inputs = (const char *const *)o.pos.v, .n_inputs = o.pos.n, .json = o.json, .limit = (int)o.limit};
  yk_diag d = {0};
  int rc = yk_trace_top(&lo, stdout, &d);
  if (rc) fprintf(stderr, "yoke trace top: %s\n", yk_diag_msg(&d, rc));
  return rc == YK_EINVAL ? 2 : cli_exit_code(rc);
}

static const cli_cmd trace_cmds[] = {
    {"merge", cmd_merge, "combine per-rank traces into one, clocks aligned to rank 0"},
    {"top", cmd_top, "the hottest spans, exposed communication and the slowest rank"},
};

int cli_cmd_trace(int argc, char **argv) {
  return cli_dispatch("yoke trace", "action", trace_cmds, YK_ARRAY_LEN(trace_cmds), argc, argv);
}
