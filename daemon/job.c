/* job.c - the job one rank belongs to: launch environment, control plane
 * (coordinator link), the layout and the communicators the engine trains
 * over. The daemon owns the communicators: it creates them, aborts them
 * when the control plane says the job is over (a dead peer, a lost
 * coordinator) and destroys them after the engine is closed. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job_internal.h"

/* ---- bootstrap through the coordinator -------------------------------- */

static int ctl_allgather(yk_bootstrap *b, const void *mine, size_t len, void *all, uint64_t deadline_ns, yk_diag *d) {
  ykd_job *job = b->ctx;
  return yk_daemon_ctl_allgather_epoch(job->ctl, job->epoch, mine, len, all, deadline_ns, d);
}

static void ctl_bootstrap_destroy(yk_bootstrap *b) { free(b); }

static void on_abort(void *arg, const yk_daemon_event *ev) {
  ykd_job *job = arg;
  /* Blocked collectives return at once instead of waiting for their
   * deadline; the step loop then sees the event at its next poll. Runs on
   * the control thread: the lock keeps ykd_job_close from destroying the
   * communicator under us. */
  pthread_mutex_lock(&job->comm_lock);
  if (ev->type == YK_EV_REFORM && ev->epoch <= job->epoch) {
    /* elastic: a failure of an epoch these communicators already outlived */
    pthread_mutex_unlock(&job->comm_lock);
    return;
  }
  job->aborted = 1;
  snprintf(job->abort_text, sizeof job->abort_text, "%s", ev->text);
  if (job->tp) yk_comm_abort(job->tp, ev->text);
  if (job->pp) yk_comm_abort(job->pp, ev->text);
  if (job->dp && job->dp != job->comm) yk_comm_abort(job->dp, ev->text);
  if (job->comm) yk_comm_abort(job->comm, ev->text);
  pthread_mutex_unlock(&job->comm_lock);
}

/* The layout's groups as sub-communicators of the world (a group of one
 * rank has none). With only data parallelism the world is the dp group. */
static int split_groups(ykd_job *job, yk_diag *d) {
  const yk_layout *l = &job->layout;
  yk_comm *dp = NULL, *tp = NULL, *pp = NULL;
  int colour, key, rc = 0;
  if (l->tp == 1 && l->pp == 1) {
    dp = job->comm;
  } else {
    yk_partition_layout_group(l, YK_GROUP_TP, &colour, &key);
    rc = yk_comm_split(job->comm, colour, key, &tp, d);
    yk_partition_layout_group(l, YK_GROUP_DP, &colour, &key);
    if (!rc) rc = yk_comm_split(job->comm, colour, key, &dp, d);
    yk_partition_layout_group(l, YK_GROUP_PP, &colour, &key);
    if (!rc && l->pp > 1) rc = yk_comm_split(job->comm, colour, key, &pp, d);
    if (!rc && l->tp == 1) {
      yk_comm_destroy(tp);
      tp = NULL;
    }
    if (!rc && l->dp == 1) {
      yk_comm_destroy(dp);
      dp = NULL;
    }
  }
  pthread_mutex_lock(&job->comm_lock);
  job->dp = dp;
  job->tp = tp;
  job->pp = pp;
  pthread_mutex_unlock(&job->comm_lock);
  return rc;
}

/* MPI must be up for comm.transport=mpi (every thread may call it: the comm
 * thread progresses the collectives). */
static int mpi_bootstrap(ykd_job *job, yk_diag *d) {
  if (job->env.kind != YK_LAUNCH_OPENMPI)
    return yk_errorf(d, YK_ECONFIG, "comm.transport=mpi needs a job started by mpirun; use libfabric with %s",
                     job->env.kind == YK_LAUNCH_SLURM ? "srun" : "yoke launch");
  int inited = 0, provided = 0;
  MPI_Initialized(&inited);
  if (!inited) {
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS)
      return yk_errorf(d, YK_ETRANSPORT, "MPI_Init_thread failed");
    job->mpi_inited = 1;
    if (provided < MPI_THREAD_MULTIPLE)
      return yk_errorf(d, YK_EUNSUPPORTED, "this MPI gives thread level %d, MPI_THREAD_MULTIPLE is needed for "
                                           "comm.transport=mpi; use comm.transport=libfabric", provided);
  }
  return yk_bootstrap_mpi_create(&job->boot, d);
}

/* `yoke train --join HOST:PORT`: a rank of no launch, registering with a
 * running elastic job's coordinator as "any rank" (world 0). */
static int join_env(ykd_job *job, const char *join, yk_diag *d) {
  const char *colon = strrchr(join, ':');
  char *end = NULL;
  long port = colon ? strtol(colon + 1, &end, 10) : 0;
  if (!colon || colon == join || !end || *end || port < 1 || port > 65535 || (size_t)(colon - join) >= sizeof job->env.coord_host)
    return yk_errorf(d, YK_EUSAGE, "--join %s: expected HOST:PORT of the job's coordinator (yoke status shows it)", join);
  yk_launch_env *e = &job->env;
  e->kind = YK_LAUNCH_YOKE;
  e->rank = -1;
  e->world = 0;
  e->local_rank = 0;
  e->embed_coord = 0;
  memcpy(e->coord_host, join, (size_t)(colon - join));
  e->coord_host[colon - join] = 0;
  e->coord_port = (int)port;
  job->joining = 1;
  return 0;
}

/* The communicators of the ranks as the control plane now says (rank,
 * world, epoch): the world's, then the layout's groups. */
static int make_comms(ykd_job *job, const yk_config *cfg, int rank, int world, uint32_t epoch, yk_diag *d) {
  if (!job->boot) {
    yk_bootstrap *b = calloc(1, sizeof *b);
    if (!b) return yk_errorf(d, YK_ENOMEM, "out of memory");
    b->kind = "coord";
    b->ctx = job;
    b->allgather = ctl_allgather;
    b->destroy = ctl_bootstrap_destroy;
    job->boot = b;
  }
  job->boot->rank = rank;
  job->boot->size = world;
  yk_comm_opts co;
  yk_comm_opts_from_config(&co, cfg);
  co.epoch = epoch;
  co.log = job->log;
  yk_comm *comm = NULL;
  int rc = yk_comm_create(&co, job->boot, &comm, d);
  if (rc) return rc;
  pthread_mutex_lock(&job->comm_lock);
  job->comm = comm;
  int aborted = job->aborted;
  if (aborted) yk_comm_abort(comm, job->abort_text);
  pthread_mutex_unlock(&job->comm_lock);
  if (aborted) return yk_errorf(d, YK_EABORTED, "the job was stopped while it started: %s", job->abort_text);
  return split_groups(job, d);
}

static void destroy_comms(ykd_job *job) {
  pthread_mutex_lock(&job->comm_lock);
  yk_comm *comm = job->comm, *dp = job->dp != job->comm ? job->dp : NULL, *tp = job->tp, *pp = job->pp;
  job->comm = job->dp = job->tp = job->pp = NULL;
  pthread_mutex_unlock(&job->comm_lock);
  yk_comm_destroy(pp); /* children before the parent */
  yk_comm_destroy(tp);
  yk_comm_destroy(dp);
  yk_comm_destroy(comm);
}

/* elastic: the largest valid layout of `world` ranks: the job's tensor and
 * pipeline degrees when they divide it, else without one of them, else
 * data parallelism alone (a checkpoint reshards between them). */
static int elastic_layout(const yk_config *cfg, int world, int rank, yk_layout *out, yk_diag *d) {
  int tp = (int)cfg->parallel.tensor, pp = (int)cfg->parallel.pipeline;
  const int cand[4][2] = {{tp, pp}, {1, pp}, {tp, 1}, {1, 1}};
  for (int i = 0; i < 4; i++)
    if (world % (cand[i][0] * cand[i][1]) == 0)
      return yk_partition_layout(world, cand[i][0], cand[i][1], rank, out, d);
  return yk_partition_layout(world, 1, 1, rank, out, d);
}

int ykd_job_reform(ykd_job *job, const yk_config *cfg, yk_daemon_job *used, yk_diag *d) {
  destroy_comms(job);
  yk_daemon_job info;
  yk_daemon_ctl_job(job->ctl, &info);
  *used = info;
  pthread_mutex_lock(&job->comm_lock);
  job->aborted = 0; /* the failure that aborted the old epoch's communicators is behind us */
  job->abort_text[0] = 0;
  job->epoch = info.epoch;
  pthread_mutex_unlock(&job->comm_lock);
  if (info.rank < 0) return 0; /* drained: this rank leaves */
  int rc = elastic_layout(cfg, info.world, info.rank, &job->layout, d);
  if (rc) return rc;
  if (info.world <= 1) return 0;
  return make_comms(job, cfg, info.rank, info.world, info.epoch, d);
}

int ykd_job_open(ykd_job *job, const yk_config *cfg, yk_logger *log, const char *join, yk_diag *d) {
  memset(job, 0, sizeof *job);
  pthread_mutex_init(&job->comm_lock, NULL);
  job->log = log;
  int rc = yk_launch_env_detect(cfg, NULL, NULL, &job->env, d);
  if (rc) return rc;
  if (join && (rc = join_env(job, join, d)) != 0) return rc;
  log->rank = job->env.rank; /* every line from here on names this rank */
  /* One log for the job, as torchrun and DeepSpeed print it: ranks outside
   * log.ranks keep only their warnings and errors (their figures stay in
   * --json and /metrics). Set before the control thread shares the logger. */
  int shown = 1;
  if ((rc = yk_log_ranks_match(cfg->log.ranks, job->env.rank, &shown, d)) != 0) return rc;
  if (!shown && log->level > YK_LOG_WARN) log->level = YK_LOG_WARN;
  int rank = 0, world = 1;
  uint32_t epoch = 0;
  if (job->env.world > 1 || job->joining) {
    yk_daemon_ctl_opts o = {
        .cfg = cfg,
        .env = &job->env,
        .log = log,
        .on_abort = on_abort,
        .abort_arg = job,
        .abort_grace_ms = cfg->comm.timeout_ms + 5000,
    };
    if ((rc = yk_daemon_ctl_start(&o, &job->ctl, d)) != 0) return rc;
    yk_daemon_job info;
    yk_daemon_ctl_job(job->ctl, &info);
    rank = info.rank;
    world = info.world;
    epoch = info.epoch;
    job->epoch = epoch;
    log->rank = rank;
  }
  /* Megatron's rank order: tensor-parallel ranks are neighbours. A joiner
   * meets whatever world the job has now. */
  if ((rc = job->joining ? elastic_layout(cfg, world, rank, &job->layout, d)
                         : yk_partition_layout(world, (int)cfg->parallel.tensor, (int)cfg->parallel.pipeline, rank,
                                               &job->layout, d)) != 0)
    return rc;
  if (world <= 1) return 0;
  /* YK_TEST_START_DELAY_MS=MS, for tests only: every rank waits MS ms
   * between rendezvous and the communicators' all-gather, so that a stop
   * sent then (tests/daemon/launch.sh) lands in the start-up every time. */
  const char *delay = getenv("YK_TEST_START_DELAY_MS");
  if (delay && atoi(delay) > 0) {
    YK_WARN(log, "YK_TEST_START_DELAY_MS: waiting %d ms before the communicators' all-gather (test-only)", atoi(delay));
    yk_sleep_ms((unsigned)atoi(delay));
  }

  if (!strcmp(cfg->comm.transport, "mpi")) {
    if ((rc = mpi_bootstrap(job, d)) != 0) return rc;
  }
  rc = make_comms(job, cfg, rank, world, epoch, d);
  /* an elastic job may re-form while a rank connects (a death during the
   * start-up, a join): follow it to the newest epoch */
  for (int attempt = 0; rc && (job->joining || cfg->elastic.enabled) && attempt < 64; attempt++) {
    if (!yk_daemon_ctl_wait_epoch(job->ctl, epoch, yk_deadline_in_ms(2 * cfg->coord.heartbeat_timeout_ms + 1000)))
      break;
    yk_daemon_job now;
    yk_daemon_ctl_job(job->ctl, &now);
    if (now.rank < 0) break;
    YK_WARN(log, "elastic: the job re-formed (epoch %u) while this rank connected; connecting at epoch %u", epoch,
            now.epoch);
    yk_diag_clear(d);
    destroy_comms(job);
    pthread_mutex_lock(&job->comm_lock);
    job->aborted = 0;
    job->epoch = epoch = now.epoch;
    pthread_mutex_unlock(&job->comm_lock);
    rank = now.rank;
    world = now.world;
    log->rank = rank;
    if ((rc = elastic_layout(cfg, world, rank, &job->layout, d)) != 0) return rc;
    if (world <= 1) return 0;
    rc = make_comms(job, cfg, rank, world, epoch, d);
  }
  return rc;
}

void ykd_job_close(ykd_job *job, int exit_code, const char *reason) {
  destroy_comms(job);
  if (job->boot) yk_bootstrap_destroy(job->boot);
  job->boot = NULL;
  yk_daemon_ctl_stop(job->ctl, exit_code, reason);
  job->ctl = NULL;
  if (job->mpi_inited) {
    /* Every rank ends together on success and on an agreed stop (requeue,
     * interrupt, terminate): finalize so mpirun sees a clean exit. A failed
     * job must not wait in MPI_Finalize for a dead peer. */
    if (exit_code == 0 || exit_code == YK_EXIT_REQUEUE || exit_code == YK_EXIT_SIGINT || exit_code == YK_EXIT_SIGTERM)
      MPI_Finalize();
    job->mpi_inited = 0;
  }
  pthread_mutex_destroy(&job->comm_lock);
}
