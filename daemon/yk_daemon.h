/* yk_daemon.h - the per-rank process: the step loop (train/eval) and, as the
 * control-plane work lands, the coordinator link, launchers and metrics.
 * Subcommands return the process exit code (docs/architecture.md). */
#ifndef YK_DAEMON_H
#define YK_DAEMON_H

#include "yk_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* yoke train [JOB.yaml] [--set k=v]... : train on this rank. */
int yk_daemon_cmd_train(int argc, char **argv);
/* yoke eval --weights W --data D ... : mean loss of a weights file. */
int yk_daemon_cmd_eval(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
