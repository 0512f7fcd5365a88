/* yoke - command-line entry point. Only this file may call exit(); every
 * subcommand is a function returning the process exit code:
 *   0 success, 1 runtime failure, 2 usage or configuration error,
 *   and the codes documented in docs/exit-codes.md for preemption. */
#include "yk_common.h"
#include "yk_bench.h"
#include "yk_ckpt.h"
#include "yk_daemon.h"
#include "yk_data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*subcmd_fn)(int argc, char **argv);

static int cmd_version(int argc, char **argv);
static int cmd_config(int argc, char **argv);

typedef struct {
  const char *name;
  subcmd_fn fn;
  const char *summary;
} subcmd;

static const subcmd subcmds[] = {
    {"version", cmd_version, "print the version"},
    {"config", cmd_config, "print the config reference or a resolved job config"},
    {"train", yk_daemon_cmd_train, "train a GPT (one rank, or one of many under mpirun/SLURM/yoke launch)"},
    {"eval", yk_daemon_cmd_eval, "mean loss of a GPT-2 weights file on token shards"},
    {"ckpt", yk_ckpt_cmd_main, "list, verify, inspect and convert checkpoints"},
    {"bench", yk_bench_cmd_main, "benchmarks: coll, train, scale, ckpt"},
    {"data", yk_data_cmd_data, "prepare token shards from text files, check shards (data prepare, data info)"},
    {"launch", yk_daemon_cmd_launch, "run N ranks of a job on this machine (local launcher)"},
    {"coord", yk_daemon_cmd_coord, "run the coordinator on its own"},
    {"status", yk_daemon_cmd_status, "ask the coordinator for the job's state"},
    {"daemon-selftest", yk_daemon_cmd_selftest, "exercise the control plane with a synthetic workload"},
};

static void usage(FILE *out) {
  fprintf(out, "usage: yoke <command> [options]\n\ncommands:\n");
  for (size_t i = 0; i < YK_ARRAY_LEN(subcmds); i++) fprintf(out, "  %-14s %s\n", subcmds[i].name, subcmds[i].summary);
  fprintf(out, "\nRun 'yoke <command> --help' for a command's options.\n");
}

static int cmd_version(int argc, char **argv) {
  if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    printf("usage: yoke version\n\nPrint yoke's version and git revision.\n");
    return 0;
  }
  if (argc > 1) {
    fprintf(stderr, "yoke version: unexpected argument '%s'\nusage: yoke version\n", argv[1]);
    return 2;
  }
  printf("yoke %s\n", yk_version_string());
  return 0;
}

static const char config_usage[] =
    "usage: yoke config reference\n"
    "       yoke config show [JOB.yaml] [--set section.key=value ...]\n\n"
    "reference  print every config key with its type, default and allowed values\n"
    "show       print the config that a job would run with, after the file and overrides\n";

static int cmd_config(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    fputs(config_usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "reference")) {
    if (argc > 2) {
      fprintf(stderr, "yoke config reference: unexpected argument '%s'\n%s", argv[2], config_usage);
      return 2;
    }
    yk_config_write_reference(stdout);
    return 0;
  }
  if (!strcmp(argv[1], "show")) {
    yk_config c;
    yk_config_defaults(&c);
    yk_diag d = {0};
    for (int i = 2; i < argc; i++) {
      int rc;
      if (!strcmp(argv[i], "--set")) {
        if (i + 1 >= argc) {
          fprintf(stderr, "yoke config show: --set needs section.key=value\n");
          return 2;
        }
        rc = yk_config_set(&c, argv[++i], &d);
      } else if (!strncmp(argv[i], "--set=", 6)) {
        rc = yk_config_set(&c, argv[i] + 6, &d);
      } else if (argv[i][0] == '-') {
        fprintf(stderr, "yoke config show: unknown option '%s'\n%s", argv[i], config_usage);
        return 2;
      } else {
        rc = yk_config_load_file(&c, argv[i], &d);
      }
      if (rc) {
        fprintf(stderr, "yoke: %s\n", yk_diag_msg(&d, rc));
        return 2;
      }
    }
    int rc = yk_config_validate(&c, &d);
    if (rc) {
      fprintf(stderr, "yoke: %s\n", yk_diag_msg(&d, rc));
      return 2;
    }
    yk_config_write_yaml(&c, stdout);
    return 0;
  }
  fprintf(stderr, "yoke config: unknown action '%s'\n%s", argv[1], config_usage);
  return 2;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *name = argv[1];
  if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(name, "--version")) return cmd_version(1, argv);
  for (size_t i = 0; i < YK_ARRAY_LEN(subcmds); i++)
    if (!strcmp(name, subcmds[i].name)) return subcmds[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "yoke: unknown command '%s'\n", name);
  usage(stderr);
  return 2;
}
