/* cmd_sim.c - the command line of `yoke sim` (the simulator is sim/): the
 * cluster file, the job file, --set for either (a cluster key goes to the
 * cluster, any other to the job), the node list, and --validate. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "yk_sim.h"

typedef struct sim_cli {
  const char *nodes, *png, *trace, *workdir, *set_help;
  int json, validate;
  int64_t steps;
  yk_args_pos pos;
} sim_cli;

static const yk_opt sim_table[] = {
    {"--nodes", 0, YK_OPT_STR, offsetof(sim_cli, nodes), "LIST",
     "node counts, e.g. 1,2,4 or 1,2,...,4096 (\"...\" continues the last ratio); default: the cluster's"},
    {"--set", 0, YK_OPT_STR, offsetof(sim_cli, set_help), "KEY=VALUE",
     "override a cluster key (device.gflops=..., sim.interleave=2) or a job key (parallel.tensor=8); repeatable"},
    {"--json", 0, YK_OPT_FLAG, offsetof(sim_cli, json), NULL, "one JSON object per row (assumptions go to stderr)"},
    {"--png", 0, YK_OPT_STR, offsetof(sim_cli, png), "FILE", "efficiency against nodes (gnuplot; script in FILE.gp)"},
    {"--trace", 0, YK_OPT_STR, offsetof(sim_cli, trace), "FILE",
     "the simulated step of the last node count as a Chrome trace (docs/tracing.md)"},
    {"--validate", 0, YK_OPT_FLAG, offsetof(sim_cli, validate), NULL,
     "calibrate on 1 and 2 ranks here, run real 2-rank jobs, print predicted against measured step time"},
    {"--workdir", 0, YK_OPT_STR, offsetof(sim_cli, workdir), "DIR", "--validate: scratch directory (default sim-validate)"},
    {"--steps", 0, YK_OPT_INT, offsetof(sim_cli, steps), "N", "--validate: timed steps per configuration", 2, 1000},
};

static const yk_cmd_spec sim_spec = {
    .name = "sim",
    .synopsis = "CLUSTER.yaml [JOB.yaml] [--set KEY=VALUE]... [--nodes LIST] [--json] [--png FILE] [--trace FILE]\n"
                "       yoke sim --validate [--json]",
    .about = "Predict the step time of a job (a job file, as `yoke train` reads) on a cluster described in\n"
             "CLUSTER.yaml (cluster-configs/sim/), and its weak-scaling efficiency over node counts. Every\n"
             "assumption is printed first. docs/scaling.md describes the model and the cluster keys.",
    .opts = sim_table,
    .nopts = YK_ARRAY_LEN(sim_table),
    .min_pos = 0,
    .max_pos = 2,
    .pos_off = offsetof(sim_cli, pos),
};

/* "1,2,...,4096" -> counts; "..." repeats the ratio (or step) of the two
 * before it up to the next number. */
static int parse_nodes(const char *s, int **out, int *n) {
  int cap = 64, k = 0;
  int *v = malloc((size_t)cap * sizeof *v);
  if (!v) return -1;
  int pending = 0;
  for (const char *p = s; *p;) {
    if (k + 2 >= cap) {
      int *w = realloc(v, (size_t)(cap *= 2) * sizeof *v);
      if (!w) return free(v), -1;
      v = w;
    }
    if (!strncmp(p, "...", 3)) {
      if (k < 2) return free(v), -1;
      pending = 1;
      p += 3;
    } else {
      char *e;
      long x = strtol(p, &e, 10);
      if (e == p || x < 1 || x > (1 << 20)) return free(v), -1;
      if (pending) {
        int a = v[k - 2], b = v[k - 1];
        int ratio = a > 0 && b % a == 0 && b / a > 1;
        for (long y = ratio ? (long)b * (b / a) : b + (b - a); y < x && b > a; y = ratio ? y * (b / a) : y + (b - a)) {
          if (k + 2 >= cap) {
            int *w = realloc(v, (size_t)(cap *= 2) * sizeof *v);
            if (!w) return free(v), -1;
            v = w;
          }
          v[k++] = (int)y;
        }
        pending = 0;
      }
      v[k++] = (int)x;
      p = e;
    }
    if (*p == ',') p++;
    else if (*p) return free(v), -1;
  }
  if (!k || pending) return free(v), -1;
  *out = v;
  *n = k;
  return 0;
}

int cli_cmd_sim(int argc, char **argv) {
  /* --set may repeat and applies to two different things, so its values are
   * taken out here, in order, and applied after both files are read. */
  const char **sets = calloc((size_t)argc + 1, sizeof *sets);
  char **rest = calloc((size_t)argc + 1, sizeof *rest);
  if (!sets || !rest) return free(sets), free(rest), 1;
  int nsets = 0, nrest = 0;
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--set") && i + 1 < argc) sets[nsets++] = argv[++i];
    else if (!strncmp(argv[i], "--set=", 6)) sets[nsets++] = argv[i] + 6;
    else rest[nrest++] = argv[i];
  }
  sim_cli o = {0};
  o.steps = 6;
  int code = cli_parse(&sim_spec, nrest, rest, &o);
  if (code >= 0) goto out;
  code = 2;
  yk_diag d = {0};
  if (o.validate) {
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) {
      fprintf(stderr, "yoke sim --validate: cannot find the yoke binary (/proc/self/exe)\n");
      goto out;
    }
    self[len] = '\0';
    yk_sim_validate_opts vo = {.yoke = self, .workdir = o.workdir ? o.workdir : "sim-validate", .steps = (int)o.steps,
                               .json = o.json, .out = stdout};
    code = yk_sim_validate(&vo);
    goto out;
  }
  if (o.pos.n < 1) {
    fprintf(stderr, "yoke sim: missing CLUSTER.yaml (see cluster-configs/sim/; yoke sim --help)\n");
    goto out;
  }
  yk_sim_cluster cl;
  yk_sim_cluster_default(&cl);
  yk_config cfg;
  yk_config_defaults(&cfg);
  int rc = yk_sim_cluster_load(&cl, o.pos.v[0], &d);
  if (!rc && o.pos.n > 1) rc = yk_config_load_file(&cfg, o.pos.v[1], &d);
  for (int i = 0; !rc && i < nsets; i++) {
    rc = yk_sim_cluster_set(&cl, sets[i], &d);
    if (rc == YK_ENOTFOUND) rc = yk_config_set(&cfg, sets[i], &d);
  }
  if (!rc) rc = yk_config_validate(&cfg, &d);
  if (rc) {
    fprintf(stderr, "yoke sim: %s\n", yk_diag_msg(&d, rc));
    code = cli_exit_code(rc) == 1 ? 1 : 2;
    goto out;
  }
  int *nodes = NULL, nn = 0;
  if (o.nodes && parse_nodes(o.nodes, &nodes, &nn)) {
    fprintf(stderr, "yoke sim: --nodes %s: write counts from 1 to 1048576 separated by commas, e.g. 1,2,...,4096\n",
            o.nodes);
    goto out;
  }
  yk_sim_opts so = {.cluster = &cl, .cfg = &cfg, .nodes = nodes, .n_nodes = nn, .json = o.json, .png = o.png,
                    .trace = o.trace, .out = stdout};
  code = yk_sim_run(&so);
  free(nodes);
out:
  free(sets);
  free(rest);
  return code;
}
