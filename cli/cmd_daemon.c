/* cmd_daemon.c - the command lines of daemon/'s control-plane subcommands:
 * `yoke coord`, `yoke launch`, `yoke status`, `yoke daemon-selftest`. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "yk_daemon.h"

#define SECRET_OPT                                                                                               \
  {"--secret-file", 0, YK_OPT_CONFIG, 0, "FILE", "per-job secret (default coord.secret_file, then YOKE_SECRET)", \
   .key = "coord.secret_file"}

/* ---- coord ---- */

typedef struct coord_opts {
  yk_config cfg;
  yk_daemon_coord_opts c;
} coord_opts;

static const yk_opt coord_table[] = {
    CLI_SET_OPT,
    {"--world", 0, YK_OPT_INT, offsetof(coord_opts, c.world), "N", "ranks to expect (required)", 1,
     YK_PROTO_MAX_WORLD},
    {"--port", 0, YK_OPT_CONFIG, 0, "P", "TCP port (default coord.port; 0 picks a free one)", .key = "coord.port"},
    {"--bind", 0, YK_OPT_STR, offsetof(coord_opts, c.bind), "ADDR", "listen address (default 0.0.0.0)"},
    SECRET_OPT,
    {"--port-file", 0, YK_OPT_STR, offsetof(coord_opts, c.port_file), "FILE", "write the port to FILE once listening"},
    {"--rendezvous-timeout-ms", 0, YK_OPT_INT, offsetof(coord_opts, c.rendezvous_timeout_ms), "MS",
     "give up if not every rank registered by then (default 300000)", 0, 86400000},
};

static const yk_cmd_spec coord_spec = {
    .name = "coord",
    .synopsis = "[JOB.yaml] --world N [options]",
    .about = "Run the coordinator on its own (otherwise rank 0 embeds it). Ranks register with it, get\n"
             "their rank, the world and every rank's address, heartbeat, and are told when a rank dies.\n"
             "It exits when every rank left: 0 if all finished, else the job's failure code.",
    .opts = coord_table,
    .nopts = YK_ARRAY_LEN(coord_table),
    .job_positional = 1,
    .has_config = 1,
    .cfg_off = offsetof(coord_opts, cfg),
};

int cli_cmd_coord(int argc, char **argv) {
  coord_opts o;
  yk_daemon_coord_opts_default(&o.c);
  int code = cli_parse(&coord_spec, argc, argv, &o);
  if (code >= 0) return code;
  if (o.c.world <= 0) {
    fprintf(stderr, "yoke coord: --world N is required (see yoke coord --help)\n");
    return 2;
  }
  o.c.cfg = &o.cfg;
  return yk_daemon_coord(&o.c);
}

/* ---- launch ---- */

typedef struct launch_opts {
  yk_daemon_launch_opts l;
  yk_args_pos pos;
} launch_opts;

static const yk_opt launch_table[] = {
    {"--np", 'n', YK_OPT_INT, offsetof(launch_opts, l.np), "N", "ranks to start (required)", 1, 4096},
    {"--port", 0, YK_OPT_INT, offsetof(launch_opts, l.port), "P", "coordinator port (default 0: a free port)", 0, 65535},
    {"--bind", 0, YK_OPT_STR, offsetof(launch_opts, l.bind), "ADDR", "coordinator address (default 127.0.0.1)"},
    {"--grace-ms", 0, YK_OPT_INT, offsetof(launch_opts, l.grace_ms), "MS",
     "after a failure, let the others stop on their own this long (default 3000)", 0, 3600000},
    {"--add", 0, YK_OPT_INT, offsetof(launch_opts, l.add), "N",
     "start N ranks that join the running elastic job launched here (its\n"
     "                            coordinator and secret from its job file; --job ID when several run)", 1, 4096},
    {"--job", 0, YK_OPT_STR, offsetof(launch_opts, l.job), "ID", "with --add: which job launched here"},
    {"--wrap", 0, YK_OPT_STR, offsetof(launch_opts, l.wrap), "'CMD'",
     "start each rank as CMD... yoke ..., with {rank} in CMD replaced by the rank,\n"
     "                            e.g. --wrap 'ip netns exec host{rank}' (tests put ranks on namespace hosts)"},
};

static const yk_cmd_spec launch_spec = {
    .name = "launch",
    .synopsis = "-n N [options] JOB.yaml [--set section.key=value ...]\n"
                "       yoke launch -n N [options] -- SUBCOMMAND [ARGS...]\n"
                "       yoke launch --add N [--job ID] JOB.yaml [--set ...]   (grow a running elastic job)",
    .about = "Run a job of N ranks on this machine: start the coordinator, then N processes of\n"
             "`yoke train JOB.yaml ...` (first form) or `yoke SUBCOMMAND ARGS...` (second form) with\n"
             "YOKE_RANK, YOKE_WORLD, YOKE_LOCAL_RANK, YOKE_COORD and YOKE_SECRET set. Their output lines\n"
             "are prefixed with [rN]. SIGINT/SIGTERM are forwarded. The launcher exits with the first\n"
             "failing rank's code (128+signal if it was killed) after stopping the others; 0 if all succeed.\n"
             "The job config (coord.heartbeat_timeout_ms, coord.secret_file, ...) is read from the command's\n"
             "JOB.yaml and --set arguments. Options end at JOB.yaml or --: the rest is the ranks' command.",
    .opts = launch_table,
    .nopts = YK_ARRAY_LEN(launch_table),
    .max_pos = 1 << 30,
    .pos_off = offsetof(launch_opts, pos),
    .rest_positional = 1,
};

static int is_yaml(const char *s) {
  size_t n = strlen(s);
  return (n > 5 && !strcmp(s + n - 5, ".yaml")) || (n > 4 && !strcmp(s + n - 4, ".yml"));
}

/* The ranks' config, from the command they run: its job file, then its
 * --set arguments (as that command reads them). */
static int ranks_config(char *const *args, int n, yk_config *cfg, yk_diag *d) {
  yk_config_defaults(cfg);
  int rc = 0;
  for (int pass = 0; pass < 2; pass++)
    for (int k = 0; k < n && !rc; k++) {
      if (!strcmp(args[k], "--set") && k + 1 < n) {
        k++;
        if (pass) rc = yk_config_set(cfg, args[k], d);
      } else if (!strncmp(args[k], "--set=", 6)) {
        if (pass) rc = yk_config_set(cfg, args[k] + 6, d);
      } else if (!strcmp(args[k], "--steps") && k + 1 < n && (is_yaml(args[0]) || !strcmp(args[0], "train"))) {
        /* train's shorthand for train.steps: the launcher's progress bar needs it */
        char kv[64];
        snprintf(kv, sizeof kv, "train.steps=%s", args[++k]);
        if (pass) rc = yk_config_set(cfg, kv, d);
      } else if (!pass && is_yaml(args[k]) && args[k][0] != '-') {
        rc = yk_config_load_file(cfg, args[k], d);
      }
    }
  return rc ? rc : yk_config_validate(cfg, d);
}

int cli_cmd_launch(int argc, char **argv) {
  launch_opts o;
  yk_daemon_launch_opts_default(&o.l);
  int code = cli_parse(&launch_spec, argc, argv, &o);
  if (code >= 0) return code;
  if (o.l.np <= 0 && o.l.add <= 0) {
    fprintf(stderr, "yoke launch: -n N is required (see yoke launch --help)\n");
    return 2;
  }
  if (o.pos.n == 0) {
    fprintf(stderr, "yoke launch: nothing to launch: give JOB.yaml or -- SUBCOMMAND ... (see yoke launch --help)\n");
    return 2;
  }
  yk_config cfg;
  yk_diag d = {0};
  int rc = ranks_config(o.pos.v, o.pos.n, &cfg, &d);
  if (rc) {
    fprintf(stderr, "yoke launch: %s\n", yk_diag_msg(&d, rc));
    return 2;
  }
  /* JOB.yaml ... is `yoke train JOB.yaml ...` */
  int train = is_yaml(o.pos.v[0]);
  char **cmd = calloc((size_t)o.pos.n + 1, sizeof *cmd);
  if (!cmd) return 1;
  if (train) cmd[0] = "train";
  for (int k = 0; k < o.pos.n; k++) cmd[train + k] = o.pos.v[k];
  o.l.cfg = &cfg;
  o.l.cmd = cmd;
  o.l.ncmd = o.pos.n + train;
  code = yk_daemon_launch(&o.l);
  free(cmd);
  return code;
}

/* ---- status ---- */

typedef struct status_opts {
  yk_config cfg;
  yk_daemon_status_opts s;
  int checkpoint, stop;
  int64_t drain;
} status_opts;

static const yk_opt status_table[] = {
    CLI_SET_OPT,
    {"--checkpoint", 0, YK_OPT_FLAG, offsetof(status_opts, checkpoint), NULL,
     "ask every rank to checkpoint at its next step boundary and exit 75"},
    {"--stop", 0, YK_OPT_FLAG, offsetof(status_opts, stop), NULL,
     "ask every rank to stop at its next step boundary (exit 130)"},
    {"--drain", 0, YK_OPT_INT, offsetof(status_opts, drain), "RANK",
     "elastic jobs: rank RANK leaves at its next step boundary and the job\n"
     "                            goes on without it (docs/elasticity.md)", 0, 65535},
    {"--coord", 0, YK_OPT_STR, offsetof(status_opts, s.coord), "HOST:PORT",
     "coordinator (default: YOKE_COORD, then coord.host:coord.port, then\n"
     "                            the job `yoke launch` runs here, then 127.0.0.1:coord.port)"},
    {"--job", 0, YK_OPT_STR, offsetof(status_opts, s.job), "ID",
     "which job `yoke launch` runs here (when there are several)"},
    SECRET_OPT,
    {"--json", 0, YK_OPT_FLAG, offsetof(status_opts, s.json), NULL, "print JSON instead of a table"},
    {"--timeout-ms", 0, YK_OPT_INT, offsetof(status_opts, s.timeout_ms), "MS", "give up after MS (default 5000)", 1,
     3600000},
};

static const yk_cmd_spec status_spec = {
    .name = "status",
    .synopsis = "[JOB.yaml] [options] [--checkpoint | --stop | --drain RANK]",
    .about = "Ask the coordinator (authenticated with the job secret) for the job's state: epoch, step,\n"
             "members with host, pid and heartbeat age, step time and tokens/s.",
    .opts = status_table,
    .nopts = YK_ARRAY_LEN(status_table),
    .job_positional = 1,
    .has_config = 1,
    .cfg_off = offsetof(status_opts, cfg),
};

int cli_cmd_status(int argc, char **argv) {
  status_opts o = {0};
  o.drain = -1;
  yk_daemon_status_opts_default(&o.s);
  int code = cli_parse(&status_spec, argc, argv, &o);
  if (code >= 0) return code;
  if (o.checkpoint + o.stop + (o.drain >= 0) > 1) {
    fprintf(stderr, "yoke status: --checkpoint, --stop and --drain exclude each other (see yoke status --help)\n");
    return 2;
  }
  o.s.action = o.checkpoint ? YK_REQ_CHECKPOINT : o.stop ? YK_REQ_STOP : o.drain >= 0 ? YK_REQ_DRAIN : 0;
  o.s.drain_rank = o.drain;
  o.s.cfg = &o.cfg;
  return yk_daemon_status(&o.s);
}

/* ---- daemon-selftest ---- */

typedef struct selftest_opts {
  yk_config cfg;
  yk_daemon_selftest_opts s;
} selftest_opts;

static const yk_opt selftest_table[] = {
    CLI_SET_OPT,
    {"--steps", 0, YK_OPT_INT, offsetof(selftest_opts, s.steps), "N", "steps to run (default 20)", 0, 100000000},
    {"--step-ms", 0, YK_OPT_INT, offsetof(selftest_opts, s.step_ms), "MS", "wall time of one step (default 50)", 0,
     3600000},
    {"--fail-at", 0, YK_OPT_INT, offsetof(selftest_opts, s.fail_at), "STEP",
     "this rank fails at STEP (with --fail-rank R only rank R)", 0, 100000000},
    {"--fail-rank", 0, YK_OPT_INT, offsetof(selftest_opts, s.fail_rank), "R",
     "which rank --fail-at applies to (default: every rank)", 0, YK_PROTO_MAX_WORLD},
    {"--fail-code", 0, YK_OPT_INT, offsetof(selftest_opts, s.fail_code), "C", "exit code of that failure (default 1)",
     1, 255},
};

static const yk_cmd_spec selftest_spec = {
    .name = "daemon-selftest",
    .synopsis = "[JOB.yaml] [--set section.key=value ...] [--steps N] [--step-ms MS]\n"
                "                            [--fail-at STEP [--fail-rank R] [--fail-code CODE]]",
    .about = "A synthetic workload for the control plane (until `yoke train` replaces it in tests):\n"
             "register with the coordinator, check every rank's address from WELCOME, run one all-gather,\n"
             "then run N steps of MS milliseconds that report a falling synthetic loss with heartbeats,\n"
             "react to events (dead peer, lost coordinator, SIGINT/SIGTERM/SIGUSR1) like the step loop\n"
             "does, and leave with BYE. Rank, world and coordinator come from the launch environment\n"
             "(docs/launch.md). Exit codes: docs/exit-codes.md.",
    .opts = selftest_table,
    .nopts = YK_ARRAY_LEN(selftest_table),
    .job_positional = 1,
    .has_config = 1,
    .cfg_off = offsetof(selftest_opts, cfg),
};

int cli_cmd_selftest(int argc, char **argv) {
  selftest_opts o;
  yk_daemon_selftest_opts_default(&o.s);
  int code = cli_parse(&selftest_spec, argc, argv, &o);
  if (code >= 0) return code;
  o.s.cfg = &o.cfg;
  return yk_daemon_selftest(&o.s);
}
