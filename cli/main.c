/* yoke - command-line entry point. Only this file may call exit(); every
 * subcommand is a function returning the process exit code:
 *   0 success, 1 runtime failure, 2 usage or configuration error,
 *   and the codes documented in docs/exit-codes.md for preemption.
 * Every subcommand parses its arguments with one yk_cmd_spec table
 * (yk_args_parse) in cli/ and calls its module with the options struct. */
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "yk_daemon.h"

/* ---- yoke version ---- */

static const yk_cmd_spec version_spec = {
    .name = "version",
    .synopsis = "",
    .about = "Print yoke's version and git revision.",
};

static int cmd_version(int argc, char **argv) {
  char dummy;
  int code = cli_parse(&version_spec, argc, argv, &dummy);
  if (code >= 0) return code;
  printf("yoke %s\n", yk_version_string());
  return 0;
}

/* ---- yoke config ---- */

static const yk_cmd_spec reference_spec = {
    .name = "config reference",
    .synopsis = "",
    .about = "Print every config key with its type, default and allowed values (cluster-configs/reference.yaml).",
};

static int cmd_config_reference(int argc, char **argv) {
  char dummy;
  int code = cli_parse(&reference_spec, argc, argv, &dummy);
  if (code >= 0) return code;
  yk_config_write_reference(stdout);
  return 0;
}

typedef struct show_opts {
  yk_config cfg;
} show_opts;

static const yk_opt show_table[] = {
    CLI_SET_OPT,
};

static const yk_cmd_spec show_spec = {
    .name = "config show",
    .synopsis = "[JOB.yaml] [--set section.key=value ...]",
    .about = "Print the config that a job would run with, after the job file and the overrides.",
    .opts = show_table,
    .nopts = YK_ARRAY_LEN(show_table),
    .job_positional = 1,
    .has_config = 1,
    .cfg_off = offsetof(show_opts, cfg),
};

static int cmd_config_show(int argc, char **argv) {
  show_opts o;
  int code = cli_parse(&show_spec, argc, argv, &o);
  if (code >= 0) return code;
  yk_config_write_yaml(&o.cfg, stdout);
  return 0;
}

static const cli_cmd config_cmds[] = {
    {"reference", cmd_config_reference, "print every config key with its type, default and allowed values"},
    {"show", cmd_config_show, "print the config that a job would run with, after the file and overrides"},
};

static int cmd_config(int argc, char **argv) {
  return cli_dispatch("yoke config", "action", config_cmds, YK_ARRAY_LEN(config_cmds), argc, argv);
}

static const cli_cmd subcmds[] = {
    {"version", cmd_version, "print the version"},
    {"config", cmd_config, "print the config reference or a resolved job config"},
    {"train", cli_cmd_train, "train a GPT (one rank, or one of many under mpirun/SLURM/yoke launch)"},
    {"plan", cli_cmd_plan, "predict each rank's memory for a job, item by item, against this host's (docs/memory.md)"},
    {"eval", cli_cmd_eval, "mean loss of a GPT-2 weights file on token shards"},
    {"sample", cli_cmd_sample, "generate text from a GPT-2 weights file or a checkpoint"},
    {"ckpt", cli_cmd_ckpt, "list, verify, inspect and convert checkpoints"},
    {"weights", cli_cmd_weights, "convert GPT-2 weights between the llm.c file and Hugging Face safetensors"},
    {"plot", cli_cmd_plot, "plot loss, val loss, learning rate and tokens/s of JSON training logs (gnuplot)"},
    {"bench", cli_cmd_bench, "benchmarks: coll, train, scale, ckpt"},
    {"sim", cli_cmd_sim, "predict step time and scaling efficiency of a job on a described cluster (to 4,096 nodes)"},
    {"data", cli_cmd_data, "prepare token shards from text files, check shards (data prepare, data info)"},
    {"launch", cli_cmd_launch, "run N ranks of a job on this machine (local launcher)"},
    {"coord", cli_cmd_coord, "run the coordinator on its own"},
    {"status", cli_cmd_status, "ask the coordinator for the job's state"},
    {"trace", cli_cmd_trace, "merge per-rank timelines (train.trace), profile them (trace merge, trace top)"},
    {"daemon-selftest", cli_cmd_selftest, "exercise the control plane with a synthetic workload"},
};

int main(int argc, char **argv) {
  /* The coordinator, the ranks' control links and /metrics write sockets
   * through libuv, which sees a peer that has gone (a job ending while it is
   * told so) as EPIPE only when SIGPIPE is ignored; otherwise that write
   * kills the process (exit 141, seen from yoke launch under load). */
  signal(SIGPIPE, SIG_IGN);
  if (argc > 1 && !strcmp(argv[1], "help")) argv[1] = "--help";
  if (argc > 1 && !strcmp(argv[1], "--version")) return cmd_version(1, argv);
  return cli_dispatch("yoke", "command", subcmds, YK_ARRAY_LEN(subcmds), argc, argv);
}
