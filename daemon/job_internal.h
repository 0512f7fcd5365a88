/* job_internal.h - the job one rank belongs to (job.c), used by `yoke
 * train` (train.c). Internal to the daemon module. */
#ifndef YK_JOB_INTERNAL_H
#define YK_JOB_INTERNAL_H

#include <pthread.h>

#include "yk_collectives.h"
#include "yk_daemon.h"
#include "yk_partition.h"

typedef struct ykd_job {
  const yk_logger *log;
  yk_launch_env env;
  yk_layout layout;          /* parallel.tensor / parallel.pipeline over the ranks */
  yk_daemon_ctl *ctl;        /* NULL on a single rank */
  yk_bootstrap *boot;
  yk_comm *comm;             /* every rank; NULL on a single rank */
  yk_comm *dp, *tp, *pp;     /* the layout's data-, tensor- and pipeline-parallel groups (split from comm; NULL for a group
                              * of one; dp is comm itself when every rank is a dp rank) */
  pthread_mutex_t comm_lock; /* the control thread's abort vs. destroy at close */
  int aborted;               /* the control plane aborted the job (under comm_lock): a communicator made after that
                              * missed on_abort and is aborted when it is published */
  char abort_text[512];      /* the abort event's text */
  int mpi_inited;            /* we called MPI_Init_thread */
  int joining;               /* `yoke train --join`: entered a running elastic job */
  uint32_t epoch;            /* the membership epoch the communicators belong to */
} ykd_job;

/* Detect the launch environment; with more than one rank, start the control
 * plane (rendezvous through the coordinator) and create the communicator. A
 * single rank gets layout 1 x 1 x 1 and no ctl/comm. Close with
 * ykd_job_close even on failure. Sets log->rank to this rank. */
int ykd_job_open(ykd_job *job, const yk_config *cfg, yk_logger *log, const char *join, yk_diag *d);
/* elastic: destroy the communicators of the old epoch and make those of the
 * control plane's current one (this rank's new rank and world, the layout
 * over them; *used says which). A drained rank (new rank -1) gets none: it
 * leaves. */
int ykd_job_reform(ykd_job *job, const yk_config *cfg, yk_daemon_job *used, yk_diag *d);
/* Destroy the communicator, leave the job (BYE with exit_code and reason),
 * finalize MPI when we initialised it and the job ends together. */
void ykd_job_close(ykd_job *job, int exit_code, const char *reason);

#endif
