/* cmd_util.h - private to daemon/: argument helpers shared by the
 * subcommands (cmd.c, launch.c). Each returns 1 if it consumed argv[*i],
 * 0 if the argument is not its, -2 after printing a usage error. */
#ifndef YK_DAEMON_CMD_UTIL_H
#define YK_DAEMON_CMD_UTIL_H

#include "yk_daemon.h"

/* JOB.yaml (first positional) and --set k=v / --set=k=v. */
int ykd_arg_common(const char *cmd, int argc, char **argv, int *i, yk_config *cfg, int *have_job, const char *usage);
/* "--name V" or "--name=V". */
int ykd_arg_value(const char *cmd, int argc, char **argv, int *i, const char *name, const char **out,
                  const char *usage);
int ykd_parse_int_arg(const char *cmd, const char *name, const char *v, int64_t lo, int64_t hi, int64_t *out);
/* Blocking connect with a deadline; returns a socket fd or a negative code. */
int ykd_connect_sync(const char *host, int port, uint64_t deadline, yk_diag *d);

#endif
