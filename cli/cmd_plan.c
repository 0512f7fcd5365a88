/* cmd_plan.c - `yoke plan`: the memory each rank of a job will hold, item by
 * item, against this host's memory (the engine's yk_engine_plan_of, the
 * same plan `yoke train` checks before it allocates). */
#include <stddef.h>
#include <stdio.h>

#include "cli.h"
#include "yk_engine.h"

typedef struct plan_opts {
  yk_config cfg;
  int64_t ranks;
  int json;
} plan_opts;

static const yk_opt plan_table[] = {
    CLI_SET_OPT,
    {"--ranks", 'n', YK_OPT_INT, offsetof(plan_opts, ranks), "N",
     "ranks of the job, all on this host as `yoke launch -n N` runs them (default 1)", 1, 65536},
    {"--json", 0, YK_OPT_FLAG, offsetof(plan_opts, json), NULL,
     "one JSON object per rank: peak_bytes, steady_bytes and every item in bytes"},
};

static const yk_cmd_spec plan_spec = {
    .name = "plan",
    .synopsis = "JOB.yaml [--set KEY=VALUE ...] [--ranks N] [--json]",
    .about = "Predict each rank's memory for a job (weights, master, gradients, 16-bit copies, moments,\n"
             "activations, logits, buffers, the process itself) and its peak, against this host's memory.\n"
             "`yoke train` refuses a job whose peak exceeds MemAvailable (shared by the ranks on the host)\n"
             "or train.memory_limit. docs/memory.md gives every formula.",
    .opts = plan_table,
    .nopts = YK_ARRAY_LEN(plan_table),
    .job_positional = 1,
    .has_config = 1,
    .cfg_off = offsetof(plan_opts, cfg),
};

static double mib(uint64_t b) { return (double)b / 1048576.0; }

static void print_text(const yk_engine_plan *p, int rank, int ranks, const yk_layout *l) {
  static const char *const prec[3] = {"fp32", "fp16", "bf16"};
  printf("rank %d of %d (dp %d of %d, tp %d of %d): %s, ZeRO-%d, %llu parameters (updates %llu)\n", rank, ranks,
         l->dp_rank, l->dp, l->tp_rank, l->tp, prec[p->precision], p->zero_stage, (unsigned long long)p->nparams,
         (unsigned long long)p->slen);
  for (int i = 0; i < YK_PLAN_NITEMS; i++)
    if (p->item[i]) printf("  %-14s %10.1f MiB\n", yk_engine_plan_item_name((yk_plan_item)i), mib(p->item[i]));
  printf("  %-14s %10.1f MiB\n  %-14s %10.1f MiB\n", "steady", mib(p->steady), "peak", mib(p->peak));
}

static void print_json(const yk_engine_plan *p, int rank, int ranks, uint64_t total, uint64_t avail) {
  printf("{\"rank\": %d, \"ranks\": %d, \"nparams\": %llu, \"zero_stage\": %d, \"peak_bytes\": %llu, "
         "\"steady_bytes\": %llu, \"mem_total_bytes\": %llu, \"mem_available_bytes\": %llu",
         rank, ranks, (unsigned long long)p->nparams, p->zero_stage, (unsigned long long)p->peak,
         (unsigned long long)p->steady, (unsigned long long)total, (unsigned long long)avail);
  for (int i = 0; i < YK_PLAN_NITEMS; i++)
    printf(", \"%s_bytes\": %llu", yk_engine_plan_item_name((yk_plan_item)i), (unsigned long long)p->item[i]);
  printf("}\n");
}

int cli_cmd_plan(int argc, char **argv) {
  plan_opts o = {.ranks = 1};
  int code = cli_parse(&plan_spec, argc, argv, &o);
  if (code >= 0) return code;
  const yk_config *c = &o.cfg;
  int ranks = (int)o.ranks;
  /* the threads `yoke train` would give each rank (daemon/train.c) */
  int threads = c->train.threads ? (int)c->train.threads : yk_cpu_count() / ranks;
  yk_diag d = {0};
  yk_device *dev = NULL;
  int rc = yk_device_cpu_create(threads < 1 ? 1 : threads, YK_ISA_AUTO, &dev, &d);
  uint64_t total = 0, avail = 0, worst = 0;
  yk_host_memory(&total, &avail);
  if (!o.json && !rc)
    printf("host: MemTotal %.1f MiB, MemAvailable %.1f MiB; %d rank%s on it\n", mib(total), mib(avail), ranks,
           ranks == 1 ? "" : "s");
  int fits = 1;
  for (int r = 0; r < ranks && !rc; r++) {
    yk_layout l;
    yk_engine_plan p;
    if ((rc = yk_partition_layout(ranks, (int)c->parallel.tensor, (int)c->parallel.pipeline, r, &l, &d)) != 0 ||
        (rc = yk_engine_plan_of(c, &l, ranks, dev, &p, &d)) != 0)
      break;
    if (o.json) print_json(&p, r, ranks, total, avail);
    else print_text(&p, r, ranks, &l);
    if (p.peak > worst) worst = p.peak;
    yk_diag why = {0};
    if (r == 0 && yk_engine_plan_check(&p, c, (uint64_t)c->train.memory_limit, ranks, &why) != 0) {
      fits = 0;
      if (!o.json) printf("  does not fit: %s\n", yk_diag_msg(&why, YK_ENOMEM));
    }
  }
  yk_device_destroy(dev);
  if (rc) {
    fprintf(stderr, "yoke plan: %s\n", yk_diag_msg(&d, rc));
    return cli_exit_code(rc);
  }
  if (!o.json)
    printf("job: %d x %.1f MiB = %.1f MiB at the peak against MemAvailable %.1f MiB: %s\n", ranks, mib(worst),
           mib(worst * (uint64_t)ranks), mib(avail), fits ? "fits" : "does NOT fit");
  return 0;
}
