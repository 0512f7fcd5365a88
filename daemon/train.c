/* train.c - `yoke train`: the run of one rank.
 *
 * The daemon's part of training: join the job (job.c: launch environment,
 * control plane, communicators), create the device, open the engine, then
 * for every step
 *
 *   act on the control plane's events (a dead peer, a stop, a preemption)
 *   and on SIGTERM/SIGUSR1 (one rank; many ranks get them through the
 *   control plane), at the step boundary          (here)
 *   checkpoint / agreed stop                      yk_engine_boundary
 *   one optimizer step                            yk_engine_step (engine/step.c)
 *   report its stats: log line, JSON line,
 *   heartbeat and /metrics                        report_step (here)
 *   validation every train.val_every steps        yk_engine_eval
 *
 * and finish with the final checkpoint, a summary and the weights file.
 * The command line is parsed in cli/cmd_train.c; `yoke eval` is the
 * engine's yk_engine_eval_file.
 * docs/training.md describes the step in full. */
#include "yk_daemon.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "job_internal.h"
#include "yk_engine.h"

/* ------------------------------------------------------------------------ */
/* Signals of a single rank                                                 */
/* ------------------------------------------------------------------------ */

/* A signal handler can reach only static storage: there is no argument to
 * pass the run through. This one flag is the whole shared state, it is only
 * ever set to 1 by the handler and read by the step loop, and it is used
 * only by single-rank runs with checkpoints (more ranks get their signals
 * through the control plane's libuv loop instead). */
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int signum) {
  (void)signum;
  stop_signal = 1;
}

/* ------------------------------------------------------------------------ */
/* The run                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct run {
  yk_config cfg;
  yk_logger log;
  int json;
  uint64_t base_rss; /* VmRSS before the engine opened */
  int tty;
  FILE *log_file;    /* train.log_file on rank 0, else NULL */
  ykd_job job;       /* launch environment, control plane, communicators */
  yk_device *dev;
  yk_engine *eng;
  int exit_code;     /* set when an event ends the run early */
  int event_code;    /* exit code of the last control-plane event (0: none) */
  char event_text[512]; /* and its text */
  int signals;       /* SIGTERM/SIGUSR1 handlers installed (one rank with ckpt.dir) */
  /* elastic (docs/elasticity.md) */
  const char *join;  /* --join HOST:PORT */
  int log_level;     /* log.level as configured: re-applied with log.ranks for a rank's new number */
  int failure;       /* a REFORM for a failure arrived: the step in flight is redone */
  int left;          /* drained: this rank left the job at a boundary */
  int reforms;       /* membership changes survived */
  double recovery_s; /* time spent re-forming */
  FILE *ledger;      /* elastic.ledger, opened by whoever is rank 0 (append) */
  int ckpt_mode;     /* elastic.redundancy=checkpoint: re-form by re-opening the engine from the last checkpoint */
  int64_t accum0;    /* train.grad_accum as configured (elastic.batch=scale keeps it) */
  int64_t global;    /* the job's global batch in micro-batches (checkpoint mode; 0: not known yet) */
  int restarted;     /* elastic: the job re-formed during the start-up; the engine was opened again */
  struct sigaction old_term, old_usr1;
} run;

static void install_signals(run *r) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  /* SA_RESETHAND: a second SIGTERM (or SIGUSR1) while the checkpoint is
   * being written gets the default action and ends the process at once. */
  sa.sa_flags = SA_RESTART | SA_RESETHAND;
  stop_signal = 0;
  sigaction(SIGTERM, &sa, &r->old_term);
  sigaction(SIGUSR1, &sa, &r->old_usr1);
  r->signals = 1;
}

static void restore_signals(run *r) {
  if (!r->signals) return;
  sigaction(SIGTERM, &r->old_term, NULL);
  sigaction(SIGUSR1, &r->old_usr1, NULL);
  r->signals = 0;
}

static void log_line(void *arg, const char *text) { YK_INFO(&((run *)arg)->log, "%s", text); }

static void json_num(char *buf, size_t n, double x) {
  if (isfinite(x)) snprintf(buf, n, "%.6f", x);
  else snprintf(buf, n, "null");
}

/* At a step boundary: act on what the control plane says. Returns 1 when
 * the run must stop (r->exit_code set). */
static int poll_events(run *r) {
  if (!r->job.ctl) return 0;
  yk_daemon_event ev;
  while (yk_daemon_ctl_poll(r->job.ctl, &ev)) {
    switch (ev.type) {
    case YK_EV_PEER_DEAD:
    case YK_EV_COORD_LOST:
      YK_ERROR(&r->log, "%s", ev.text);
      r->exit_code = r->event_code = ev.code ? ev.code : YK_EXIT_FAILURE;
      return 1;
    case YK_EV_REFORM:
      /* the new epoch takes effect at the boundary where every rank has
       * heard of it (yk_engine_boundary agrees); a failure cannot wait: the
       * step in flight fails on the aborted communicators and is redone */
      if (r->eng) yk_engine_request_reform(r->eng, ev.epoch);
      if (ev.code == YK_REFORM_FAILURE) r->failure = 1;
      break;
    case YK_EV_SHUTDOWN:
    case YK_EV_CHECKPOINT_REQUESTED:
      /* A stop (SIGINT: 130) or a preemption (SIGTERM/SIGUSR1: 75), maybe
       * seen by this rank only: every rank stops at the same boundary
       * (agreed in yk_engine_boundary), checkpoints, and exits with the code.
       * If the coordinator aborted the job instead, the next collective
       * fails and the code recorded here is the one we exit with. (The
       * control thread has logged the event.) */
      r->event_code = ev.code ? ev.code : YK_EXIT_FAILURE;
      snprintf(r->event_text, sizeof r->event_text, "%s", ev.text);
      if (r->eng) yk_engine_request_stop(r->eng, r->event_code);
      break;
    default: break;
    }
  }
  return 0;
}

/* One JSON line of the job (rank 0): to stdout under --json, and to
 * train.log_file for plots. Flushed so a plot of a running job is current. */
static void json_line(run *r, const char *line) {
  if (r->job.layout.rank != 0) return;
  if (r->json) {
    /* one line at a time: readers follow it live, and a rank ended by a
     * signal or a peer's failure loses none of the steps it reported */
    printf("%s\n", line);
    fflush(stdout);
  }
  if (r->log_file) {
    fprintf(r->log_file, "%s\n", line);
    fflush(r->log_file);
  }
}

/* Every place a step's figures go, from the one stats struct: heartbeats
 * and /metrics (the control plane), the log line, the JSON line. The log
 * line is INFO, so by default only rank 0 prints it (log.ranks). */
static void report_step(run *r, const yk_step_stats *s, int64_t steps) {
  if (r->job.ctl) yk_daemon_ctl_report(r->job.ctl, s);
  if (s->step % r->cfg.train.log_every != 0 && s->step != steps) return;
  char buf[1024];
  if (r->tty) fputs("\r\033[K", stdout);
  yk_step_stats_text(s, steps, buf, sizeof buf);
  YK_INFO(&r->log, "%s", buf);
  yk_step_stats_json(s, buf, sizeof buf);
  json_line(r, buf);
}

static void report_val(run *r, int64_t step, double val) {
  if (r->tty) fputs("\r\033[K", stdout);
  YK_INFO(&r->log, "step %lld | val loss %.4f", (long long)step, val);
  char buf[128];
  snprintf(buf, sizeof buf, "{\"step\": %lld, \"val_loss\": %.6f}", (long long)step, val);
  json_line(r, buf);
}

/* train.log_file on rank 0: rewritten by a fresh run, appended to by a
 * resumed one so one file holds the whole curve. */
static int open_log_file(run *r, yk_diag *d) {
  const char *path = r->cfg.train.log_file;
  if (!path[0] || r->job.layout.rank != 0) return 0;
  r->log_file = fopen(path, yk_engine_start_step(r->eng) > 0 ? "a" : "w");
  if (!r->log_file)
    return yk_errorf(d, YK_EIO, "train.log_file %s: cannot open for writing: %s", path, strerror(errno));
  return 0;
}

static void progress_bar(const run *r, int64_t step, int64_t steps, int64_t start, uint64_t t0) {
  if (!r->tty || steps <= 0) return;
  char bar[128];
  yk_progress_text(step, steps, start, (double)(yk_now_ns() - t0) / 1e9, bar, sizeof bar);
  fprintf(stdout, "\r%s", bar);
  fflush(stdout);
}

/* YK_TEST_DELAY_RANK=R:MS, for tests only: rank R (-1: every rank) sleeps MS
 * ms inside every step, a straggler on demand (tests/trace/trace.sh), or a
 * job slow enough to be killed at random moments (tests/daemon/elastic.sh). */
static int64_t test_delay_ms(const run *r) {
  const char *s = getenv("YK_TEST_DELAY_RANK");
  int rank = -1, ms = 0;
  if (!s || sscanf(s, "%d:%d", &rank, &ms) != 2 || (rank != r->job.layout.rank && rank != -1) || ms <= 0) return 0;
  YK_WARN(&r->log, "YK_TEST_DELAY_RANK: this rank sleeps %d ms in every step (a test-only %s)", ms,
          rank == -1 ? "slow-down of every rank" : "straggler");
  return ms;
}

/* ------------------------------------------------------------------------ */
/* Elasticity (docs/elasticity.md)                                          */
/* ------------------------------------------------------------------------ */

static int open_engine(run *r, yk_diag *d);

/* What elastic.enabled needs, checked before the job is joined (nothing
 * made yet: no communicator, no shared memory). */
static int elastic_check(run *r, yk_diag *d) {
  const yk_config *c = &r->cfg;
  yk_launch_env env;
  int rc = yk_launch_env_detect(c, NULL, NULL, &env, d);
  if (rc) return rc;
  if (env.kind == YK_LAUNCH_OPENMPI || !strcmp(c->comm.transport, "mpi"))
    return yk_errorf(d, YK_ECONFIG, "elastic.enabled=true cannot work %s: its world is fixed (OpenMPI 4.1 ends "
                     "every rank when one dies); launch with `yoke launch` or srun --no-kill and comm.transport="
                     "libfabric, or set elastic.enabled=false", env.kind == YK_LAUNCH_OPENMPI ? "under mpirun"
                     : "with comm.transport=mpi");
  if (env.embed_coord && env.world > 1 && !r->join)
    return yk_errorf(d, YK_ECONFIG, "elastic.enabled=true with the coordinator inside rank 0: its death would end "
                     "the job; run `yoke coord` as its own process (the sbatch script's first node) and point the "
                     "ranks at it with coord.host / YOKE_COORD (docs/elasticity.md)");
  if (c->elastic.max_ranks && c->elastic.max_ranks < c->elastic.min_ranks)
    return yk_errorf(d, YK_ECONFIG, "elastic.max_ranks=%lld is below elastic.min_ranks=%lld",
                     (long long)c->elastic.max_ranks, (long long)c->elastic.min_ranks);
  if (!strcmp(c->elastic.redundancy, "buddy")) {
    /* the layout as it will be at any world size: the same tensor and pipeline degrees */
    yk_layout l = {.dp = 2, .tp = (int)c->parallel.tensor, .pp = (int)c->parallel.pipeline};
    return yk_engine_reform_check(c, &l, d);
  }
  if (!c->ckpt.dir[0] || c->ckpt.every <= 0)
    return yk_errorf(d, YK_ECONFIG, "elastic.redundancy=checkpoint re-forms from the last checkpoint: set ckpt.dir and "
                     "ckpt.every (now '%s' and %lld), or use elastic.redundancy=buddy", c->ckpt.dir,
                     (long long)c->ckpt.every);
  return 0;
}

/* Micro-batches per rank for `world` ranks: the job's global batch stays
 * (elastic.batch=keep), or grad_accum stays (scale). 0: the global batch
 * does not divide over this world. */
static int elastic_accum(const run *r, int world) {
  if (!strcmp(r->cfg.elastic.batch, "scale")) return (int)r->cfg.train.grad_accum;
  int64_t global = yk_engine_global_micro(r->eng);
  return global % world == 0 ? (int)(global / world) : 0;
}

/* After a failed re-form step: whether the membership moved on (a new
 * epoch will say why; it may arrive a moment after a peer's abort did). */
static int epoch_moved(run *r, uint32_t epoch, int rc) {
  if (rc != YK_EABORTED && rc != YK_EPEERDEAD && rc != YK_ETIMEDOUT && rc != YK_ETRANSPORT && rc != YK_ECLOSED)
    return 0;
  return yk_daemon_ctl_wait_epoch(r->job.ctl, epoch, yk_deadline_in_ms(2 * r->cfg.coord.heartbeat_timeout_ms + 1000));
}

/* log.ranks for this rank's (new) number */
static void apply_log_ranks(run *r) {
  int shown = 1;
  r->log.rank = r->job.layout.rank;
  if (yk_log_ranks_match(r->cfg.log.ranks, r->job.layout.rank, &shown, NULL) == 0)
    r->log.level = shown || r->log_level <= YK_LOG_WARN ? r->log_level : YK_LOG_WARN;
}

/* Re-form at the control plane's newest epoch: new communicators, the
 * engine in place, then the state of the most advanced rank on every rank.
 * Another change during it (a second death) starts it over. */
static int elastic_reform(run *r, yk_diag *d) {
  const yk_config *c = &r->cfg;
  double t0 = yk_now_s(), t_sync = t0;
  int64_t before = r->eng ? yk_engine_steps_done(r->eng) : 0;
  for (int attempt = 0;; attempt++) {
    yk_daemon_event ev;
    while (yk_daemon_ctl_poll(r->job.ctl, &ev)) /* older notices are folded into the newest epoch */
      if (ev.type == YK_EV_PEER_DEAD || ev.type == YK_EV_COORD_LOST || ev.type == YK_EV_SHUTDOWN) {
        r->event_code = ev.code;
        snprintf(r->event_text, sizeof r->event_text, "%s", ev.text);
        return yk_errorf(d, YK_EABORTED, "%s", ev.text);
      } else if (ev.type == YK_EV_CHECKPOINT_REQUESTED && r->eng) {
        yk_engine_request_stop(r->eng, ev.code ? ev.code : YK_EXIT_REQUEUE);
      }
    if (r->ckpt_mode && r->eng) { /* nothing survives but the last checkpoint */
      yk_engine_close(r->eng);
      r->eng = NULL;
    }
    yk_daemon_job info; /* the epoch this attempt forms (the control plane may move past it) */
    int rc = ykd_job_reform(&r->job, c, &info, d);
    if (r->ckpt_mode) {
      if (!rc && info.rank < 0) {
        r->left = 1;
        return 0;
      }
      if (!rc) {
        apply_log_ranks(r);
        rc = open_engine(r, d);
      }
      if (rc && attempt < 64 && epoch_moved(r, info.epoch, rc)) {
        YK_WARN(&r->log, "elastic: the job re-formed again while re-opening (%s); again", yk_diag_msg(d, rc));
        yk_diag_clear(d);
        if (r->eng) {
          yk_engine_close(r->eng);
          r->eng = NULL;
        }
        continue;
      }
      if (rc) return rc;
      r->failure = 0;
      r->reforms++;
      double dt = yk_now_s() - t0;
      r->recovery_s += dt;
      yk_daemon_ctl_note_reform(r->job.ctl, dt);
      int64_t steps = yk_engine_start_step(r->eng);
      YK_WARN(&r->log, "elastic: epoch %u: %d ranks as dp %d x tp %d x pp %d; re-opened from the checkpoint of step "
              "%lld in %.2f s (%lld completed steps are redone)", info.epoch, info.world, r->job.layout.dp,
              r->job.layout.tp, r->job.layout.pp, (long long)steps, dt, (long long)(before - steps));
      if (r->json && r->job.layout.rank == 0) {
        char buf[320];
        snprintf(buf, sizeof buf, "{\"reform\": true, \"epoch\": %u, \"world\": %d, \"accum\": %d, \"step\": %lld, "
                 "\"source_rank\": -1, \"reform_s\": %.3f, \"steps_redone\": %lld}", info.epoch, info.world,
                 yk_engine_accum(r->eng), (long long)steps, dt, (long long)(before - steps));
        json_line(r, buf);
      }
      if (info.world < c->elastic.min_ranks) {
        YK_WARN(&r->log, "elastic: %d ranks is below elastic.min_ranks=%lld: exit %d (requeue) from this checkpoint",
                info.world, (long long)c->elastic.min_ranks, YK_EXIT_REQUEUE);
        yk_engine_request_stop(r->eng, YK_EXIT_REQUEUE);
      }
      return 0;
    }
    if (!rc && info.rank < 0) {
      r->left = 1;
      return 0;
    }
    int accum = 0;
    int64_t global = 0;
    if (!rc) {
      apply_log_ranks(r);
      yk_engine_comms comms = {.dp = r->job.dp, .tp = r->job.tp, .pp = r->job.pp};
      rc = yk_engine_reform(r->eng, &r->job.layout, &comms, d);
    }
    int src = 0;
    t_sync = yk_now_s(); /* communicators and engine re-formed: the state's sync starts */
    if (!rc) rc = yk_engine_sync(r->eng, &src, d);
    if (!rc) {
      global = yk_engine_global_micro(r->eng);
      accum = elastic_accum(r, r->job.layout.dp);
      /* a global batch that does not divide runs this one boundary at the
       * old micro-batch count on the way to its checkpoint (below) */
      rc = yk_engine_set_accum(r->eng, accum ? accum : (int)(global / r->job.layout.dp > 0 ? global / r->job.layout.dp : 1), d);
    }
    if (rc && attempt < 64 && epoch_moved(r, info.epoch, rc)) { /* the membership changed again meanwhile */
      yk_daemon_job now;
      yk_daemon_ctl_job(r->job.ctl, &now);
      YK_WARN(&r->log, "elastic: epoch %u changed to %u while re-forming (%s); again", info.epoch, now.epoch,
              yk_diag_msg(d, rc));
      yk_diag_clear(d);
      continue;
    }
    if (rc) return rc;
    r->failure = 0;
    r->reforms++;
    double t1 = yk_now_s(), dt = t1 - t0;
    r->recovery_s += dt;
    yk_daemon_ctl_note_reform(r->job.ctl, dt);
    int64_t steps = yk_engine_steps_done(r->eng);
    YK_WARN(&r->log, "elastic: epoch %u: %d ranks, %d micro-batches each; re-formed in %.2f s (state restored in "
            "%.2f s), state from rank %d at step %lld (this rank had %lld); no completed step lost", info.epoch,
            info.world, yk_engine_accum(r->eng), dt, t1 - t_sync, src, (long long)steps, (long long)before);
    if (r->json && r->job.layout.rank == 0) {
      /* reform_s: communicators and engine rebuilt (from the start of the
       * re-form, retries included); restore_s: the state's sync after it */
      char buf[256];
      snprintf(buf, sizeof buf, "{\"reform\": true, \"epoch\": %u, \"world\": %d, \"accum\": %d, \"step\": %lld, "
               "\"source_rank\": %d, \"reform_s\": %.3f, \"restore_s\": %.3f}", info.epoch, info.world,
               yk_engine_accum(r->eng), (long long)steps, src, t_sync - t0, t1 - t_sync);
      json_line(r, buf);
    }
    if (info.world < c->elastic.min_ranks) {
      YK_WARN(&r->log, "elastic: %d ranks is below elastic.min_ranks=%lld: checkpoint at this boundary, then exit %d "
              "(requeue)", info.world, (long long)c->elastic.min_ranks, YK_EXIT_REQUEUE);
      yk_engine_request_stop(r->eng, YK_EXIT_REQUEUE);
    } else if (!accum) {
      YK_WARN(&r->log, "elastic: the global batch of %lld micro-batches does not divide over %d ranks "
              "(elastic.batch=keep): checkpoint at this boundary, then exit %d (requeue); choose train.grad_accum so "
              "that it divides, or set elastic.batch=scale", (long long)global, info.world, YK_EXIT_REQUEUE);
      yk_engine_request_stop(r->eng, YK_EXIT_REQUEUE);
    }
    return 0;
  }
}

/* Re-form, and continue at the step the re-formed job agreed on (unless
 * this rank left: r->left). */
static int elastic_go_on(run *r, int64_t *step, yk_diag *d) {
  yk_diag_clear(d);
  int rc = elastic_reform(r, d);
  if (!rc && !r->left) *step = yk_engine_steps_done(r->eng);
  return rc;
}

/* Whether an error of the step can be survived by re-forming: the
 * communicators failed (aborted by a REFORM, a peer gone) in an elastic job
 * whose control plane announces a new epoch within the heartbeat timeout. */
static int elastic_recoverable(run *r, int rc) {
  if (!r->cfg.elastic.enabled || !r->job.ctl) return 0;
  if (rc != YK_EABORTED && rc != YK_EPEERDEAD && rc != YK_ETIMEDOUT && rc != YK_ETRANSPORT && rc != YK_ECLOSED)
    return 0;
  uint64_t deadline = yk_deadline_in_ms(r->cfg.coord.heartbeat_timeout_ms * 2 + 1000);
  while (!r->failure && !yk_deadline_passed(deadline)) {
    yk_daemon_event ev;
    if (!yk_daemon_ctl_wait(r->job.ctl, &ev, yk_deadline_in_ms(100))) continue;
    if (ev.type == YK_EV_REFORM) {
      yk_engine_request_reform(r->eng, ev.epoch);
      if (ev.code == YK_REFORM_FAILURE) r->failure = 1;
    } else if (ev.type == YK_EV_CHECKPOINT_REQUESTED) {
      yk_engine_request_stop(r->eng, ev.code ? ev.code : YK_EXIT_REQUEUE);
    } else {
      r->event_code = ev.code ? ev.code : YK_EXIT_FAILURE;
      snprintf(r->event_text, sizeof r->event_text, "%s", ev.text);
      return 0;
    }
  }
  return r->failure;
}

/* elastic.ledger: one line per completed step, by the rank 0 of its epoch:
 * the step, the epoch's world and micro-batches, and the data windows
 * [first, first + count) it consumed (rank r read first + m*world + r for
 * micro-batch m). A step redone after a failure can appear twice; its last
 * line is the one that counts (docs/elasticity.md). */
static void ledger_line(run *r, int64_t step) {
  const yk_config *c = &r->cfg;
  if (!c->elastic.ledger[0] || r->job.layout.rank != 0) return;
  if (!r->ledger && !(r->ledger = fopen(c->elastic.ledger, "a"))) {
    YK_WARN(&r->log, "elastic.ledger %s: cannot open for appending: %s", c->elastic.ledger, strerror(errno));
    return;
  }
  int accum = yk_engine_accum(r->eng), world = r->job.layout.dp;
  uint64_t count = (uint64_t)accum * (uint64_t)world, end = yk_engine_windows_done(r->eng);
  fprintf(r->ledger, "{\"step\": %lld, \"epoch\": %u, \"world\": %d, \"accum\": %d, \"first\": %llu, \"count\": %llu}\n",
          (long long)step, r->job.epoch, world, accum, (unsigned long long)(end - count), (unsigned long long)count);
  fflush(r->ledger);
}

static int open_engine(run *r, yk_diag *d) {
  const yk_config *c = &r->cfg;
  int threads = (int)c->train.threads;
  if (threads == 0) {
    /* Ranks on one host share its cores. */
    int local = r->job.env.local_world > 0 ? r->job.env.local_world : 1;
    threads = yk_cpu_count() / local;
    if (threads < 1) threads = 1;
  }
  /* what the process holds before the engine: code, libraries, the job's
   * communicators (the base of the memory figures in the done line) */
  if (!r->dev) yk_proc_memory(&r->base_rss, NULL);
  int rc = r->dev ? 0 : yk_device_cpu_create(threads, YK_ISA_AUTO, &r->dev, d);
  if (rc) return rc;
  yk_config ec = *c;
  /* a rank whose job re-formed before this open (at the start-up, or later)
   * meets the others in the new epoch's state exchange */
  r->restarted = r->job.epoch > 1;
  if (r->ckpt_mode && !r->global && !r->job.joining) r->global = r->accum0 * (int64_t)r->job.env.world;
  if (r->ckpt_mode && (r->job.joining || r->restarted)) {
    /* elastic.redundancy=checkpoint: every rank of the new epoch opens the
     * engine at its layout from the last checkpoint (resharded as needed),
     * with the job's global batch re-divided (members know it, a joiner
     * learns it here) */
    int64_t g = r->global;
    if (r->job.comm && (rc = yk_comm_allreduce_sync(r->job.comm, &g, &g, 1, YK_DT_I64, YK_OP_MAX, d)) != 0)
      return rc;
    r->global = g;
    int dp = r->job.layout.dp;
    int64_t accum = !strcmp(c->elastic.batch, "scale") ? r->accum0 : g % dp == 0 ? g / dp : 0;
    if (!accum) {
      return yk_errorf(d, YK_EUNSUPPORTED, "elastic: the global batch of %lld micro-batches does not divide over %d "
                       "data-parallel ranks (elastic.batch=keep): the last checkpoint stands; requeue with a world it "
                       "divides, or set elastic.batch=scale", (long long)g, dp);
    }
    /* the engine's copy: the job's own config (its tensor and pipeline
     * degrees) still decides the next re-form's layout */
    ec.train.grad_accum = accum;
    ec.parallel.tensor = r->job.layout.tp;
    ec.parallel.pipeline = r->job.layout.pp;
    snprintf(ec.ckpt.resume, sizeof ec.ckpt.resume, "latest");
    YK_WARN(&r->log, "elastic: opening the engine at dp %d x tp %d x pp %d, %lld micro-batches each, from the last "
            "checkpoint in %s", dp, r->job.layout.tp, r->job.layout.pp, (long long)accum, c->ckpt.dir);
  }
  /* an elastic job that starts smaller than launched (a rank died before
   * registering) keeps the global batch it was launched with */
  int dp0 = r->job.layout.dp;
  if (c->elastic.enabled && !r->job.joining && !strcmp(c->elastic.batch, "keep") && !(r->ckpt_mode && r->restarted) &&
      r->job.env.world > 0 && r->job.layout.world != r->job.env.world) {
    int64_t g0 = r->accum0 * (int64_t)(r->job.env.world / (c->parallel.tensor * c->parallel.pipeline));
    if (g0 % dp0)
      return yk_errorf(d, YK_EUNSUPPORTED, "elastic: the job starts with %d of %d ranks and its global batch of %lld "
                       "micro-batches does not divide over %d data-parallel ranks (elastic.batch=keep); relaunch, or "
                       "set elastic.batch=scale", r->job.layout.world, r->job.env.world, (long long)g0, dp0);
    ec.train.grad_accum = g0 / dp0;
  }
  yk_engine_opts o = {.cfg = &ec, .layout = r->job.layout, .comms = {.dp = r->job.dp, .tp = r->job.tp, .pp = r->job.pp}, .dev = r->dev, .log = &r->log};
  o.test_delay_ms = test_delay_ms(r);
  o.local_ranks = r->job.env.local_world > 0 ? r->job.env.local_world : 1;
  o.joining = r->job.joining && !r->ckpt_mode;
  if ((rc = yk_engine_open(&o, &r->eng, d)) != 0) return rc;
  r->global = (int64_t)ec.train.grad_accum * r->job.layout.dp;
  /* a joiner, and every member that started again after a re-form during the
   * start-up (a joiner may be among them), take the state of the most
   * advanced rank */
  if ((r->job.joining || r->restarted) && !r->ckpt_mode) {
    /* the members re-form at their next boundary and the most advanced one
     * sends everything to this rank (yk_engine_sync) */
    int src = 0;
    double t0 = yk_now_s();
    if ((rc = yk_engine_sync(r->eng, &src, d)) != 0) {
      /* the job re-formed again meanwhile: take part in that re-form */
      if (!epoch_moved(r, r->job.epoch, rc)) return rc;
      yk_diag_clear(d);
      return elastic_reform(r, d);
    }
    if (yk_engine_steps_done(r->eng) < 0) /* every member had left: there is no state to take */
      return yk_errorf(d, YK_ECLOSED, "elastic: joined a job with no other rank left (it finished or ended); "
                       "nothing to train with");
    int accum = elastic_accum(r, r->job.layout.dp);
    if ((rc = yk_engine_set_accum(r->eng, accum ? accum : 1, d)) != 0) return rc;
    if (!accum) {
      YK_WARN(&r->log, "elastic: the global batch of %lld micro-batches does not divide over %d ranks: checkpoint at "
              "the next boundary, then exit %d", (long long)yk_engine_global_micro(r->eng), r->job.layout.dp,
              YK_EXIT_REQUEUE);
      yk_engine_request_stop(r->eng, YK_EXIT_REQUEUE);
    }
    YK_WARN(&r->log, "elastic: joined at step %lld as rank %d of %d; state from rank %d in %.2f s",
            (long long)yk_engine_steps_done(r->eng), r->job.layout.rank, r->job.layout.world, src, yk_now_s() - t0);
  }
  if (r->job.layout.world <= 1 && c->ckpt.dir[0]) install_signals(r);
  return 0;
}

static int train_loop(run *r, yk_diag *d) {
  const yk_config *c = &r->cfg;
  const int64_t steps = c->train.steps;
  const int64_t start = yk_engine_start_step(r->eng);
  const uint64_t t0 = yk_now_ns();
  const uint64_t windows0 = yk_engine_windows_done(r->eng);
  int rc;
  yk_engine_describe(r->eng, log_line, r);
  if ((rc = open_log_file(r, d)) != 0) return rc;

  double first_val = NAN, last_val = NAN;
  if (yk_engine_has_val(r->eng)) {
    if ((rc = yk_engine_eval(r->eng, &first_val, d)) != 0) return rc;
    report_val(r, start, first_val);
  }
  double total_ms = 0, total_wait_ms = 0, last_loss = NAN;
  for (int64_t step = start; step < steps;) {
    if (poll_events(r)) return 0;
    /* the boundary after `step` steps (checkpoint, agreed stop, re-form):
     * before every step but a run's first; in an elastic job before every
     * step, so that ranks that entered the epoch in different ways (a join,
     * a re-form during the start-up or after it) run the same sequence:
     * state exchange, boundary, step */
    if (step > start || c->elastic.enabled) {
      if (stop_signal && r->signals) {
        YK_WARN(&r->log, "signal received: checkpoint at this step boundary, then exit %d (requeue)", YK_EXIT_REQUEUE);
        stop_signal = 0;
        yk_engine_request_stop(r->eng, YK_EXIT_REQUEUE);
      }
      int stop = 0;
      rc = r->failure ? YK_EABORTED : yk_engine_boundary(r->eng, step, &stop, &r->exit_code, d);
      if (!rc && stop) return 0; /* an agreed stop comes before a membership change */
      /* a failure that a new epoch explains, or a join or a drain agreed at this boundary */
      int reform = rc ? elastic_recoverable(r, rc) : r->job.ctl && yk_engine_reform_epoch(r->eng) > r->job.epoch;
      if (reform) {
        if ((rc = elastic_go_on(r, &step, d)) != 0) return rc;
        if (r->left) return 0;
        continue;
      }
      if (rc) return rc;
    }
    yk_step_stats s;
    rc = r->failure ? YK_EABORTED : yk_engine_step(r->eng, step, &s, d);
    if (rc && elastic_recoverable(r, rc)) {
      /* the step fails on the aborted communicators: re-form, then redo it
       * (or go on after it, if some rank had applied it: yk_engine_sync) */
      YK_WARN(&r->log, "elastic: step %lld interrupted (%s); re-forming", (long long)step + 1, yk_diag_msg(d, rc));
      if ((rc = elastic_go_on(r, &step, d)) != 0) return rc;
      if (r->left) return 0;
      continue;
    }
    if (rc) return rc;
    ledger_line(r, step + 1);
    if (step > start) { /* the first step warms caches and thread pools */
      total_ms += s.step_ms;
      total_wait_ms += s.comm_wait_ms;
    }
    last_loss = s.loss;
    report_step(r, &s, steps);
    int last = step + 1 == steps;
    if (yk_engine_has_val(r->eng) && ((c->train.val_every && (step + 1) % c->train.val_every == 0) || last)) {
      if ((rc = yk_engine_eval(r->eng, &last_val, d)) != 0) return rc;
      report_val(r, step + 1, last_val);
    }
    progress_bar(r, step + 1, steps, start, t0);
    step++;
  }
  if (r->tty) fputs("\r\033[K", stdout);
  if ((rc = yk_engine_finish(r->eng, steps, d)) != 0) return rc;
  double mean_ms = steps - start > 1 ? total_ms / (double)(steps - start - 1) : 0;
  double wait_frac = total_ms > 0 ? total_wait_ms / total_ms : 0;
  uint64_t sum = yk_engine_params_checksum(r->eng);
  /* every rank calls it (ZeRO-3 gathers the weights for it); rank 0 writes */
  if (c->train.save_weights[0] &&
      (rc = yk_engine_save_weights(r->eng, r->job.layout.rank == 0 ? c->train.save_weights : NULL, d)) != 0)
    return rc;
  /* The job's one summary (rank 0 by log.ranks): what was trained, how
   * fast, how well, and where the results are. */
  double wall_s = (double)(yk_now_ns() - t0) / 1e9;
  /* the windows consumed: an elastic job's world (and micro-batches) may change */
  double tokens = (double)(yk_engine_windows_done(r->eng) - windows0) * (double)c->train.micro_batch *
                  (double)c->train.seq_len;
  double tok_s = wall_s > 0 ? tokens / wall_s : 0;
  char val[64] = "", out[2 * YK_CFG_STR + 64] = "";
  if (yk_engine_has_val(r->eng)) snprintf(val, sizeof val, ", val loss %.4f -> %.4f", first_val, last_val);
  if (c->train.save_weights[0]) snprintf(out, sizeof out, "; weights in %s", c->train.save_weights);
  if (c->ckpt.dir[0])
    snprintf(out + strlen(out), sizeof out - strlen(out), "; checkpoints in %s", c->ckpt.dir);
  char resumed[64] = "";
  if (start > 0) snprintf(resumed, sizeof resumed, " (%lld resumed from step %lld)", (long long)(steps - start),
                          (long long)start);
  YK_INFO(&r->log, "done: %lld steps%s, %.0f tokens in %.1f s, %.0f tokens/s; final loss %.4f%s; "
          "%.1f ms/step, %.1f%% waiting on communication; params checksum %016llx%s", (long long)steps, resumed,
          tokens, wall_s, tok_s, last_loss, val, mean_ms, wait_frac * 100, (unsigned long long)sum, out);
  if (r->json) {
    /* JSON has no NaN: absent figures (no validation set, no step run) are null. */
    char fl[32], fv[32], lv[32];
    json_num(fl, sizeof fl, last_loss);
    json_num(fv, sizeof fv, first_val);
    json_num(lv, sizeof lv, last_val);
    /* every rank's line carries its own memory: what the engine says it
     * holds and its plan (docs/memory.md) beside the peak the kernel saw */
    uint64_t hwm = 0;
    yk_proc_memory(NULL, &hwm);
    yk_engine_memory mem;
    yk_engine_memory_of(r->eng, &mem);
    printf("{\"done\": true, \"rank\": %d, \"world\": %d, \"steps\": %lld, \"loss\": %s, \"val_loss_first\": %s, "
           "\"val_loss\": %s, \"ms_per_step\": %.3f, \"comm_wait_frac\": %.4f, \"tokens\": %.0f, \"wall_s\": %.3f, "
           "\"tokens_per_s\": %.1f, \"params_checksum\": \"%016llx\", \"peak_rss_bytes\": %llu, \"predicted_peak_bytes\": %llu, "
           "\"base_rss_bytes\": %llu, \"mem_state_bytes\": %llu, \"mem_buffers_bytes\": %llu, \"mem_model_bytes\": %llu}\n",
           r->job.layout.rank, r->job.layout.world, (long long)steps, fl, fv, lv, mean_ms, wait_frac, tokens, wall_s,
           tok_s, (unsigned long long)sum, (unsigned long long)hwm, (unsigned long long)mem.planned_peak,
           (unsigned long long)r->base_rss, (unsigned long long)mem.model_state, (unsigned long long)mem.buffers,
           (unsigned long long)mem.model);
  }
  return 0;
}

/* Errors caused by another rank (it died, went silent or was aborted) end
 * this rank with the peer-dead code, so launchers can tell them apart. */
static int exit_code_for(int rc) {
  switch (rc) {
  case YK_EPEERDEAD:
  case YK_EABORTED:
  case YK_ETIMEDOUT:
  case YK_ETRANSPORT:
  case YK_ECLOSED: return YK_EXIT_PEER_DEAD;
  default: return YK_EXIT_FAILURE;
  }
}

int yk_daemon_train(const yk_daemon_train_opts *o) {
  int code;
  run r;
  memset(&r, 0, sizeof r);
  r.cfg = *o->cfg;
  r.json = o->json;
  r.tty = isatty(STDOUT_FILENO) && !o->json;
  /* No rank tag until the launch environment says which rank this is
   * (ykd_job_open): a line before that must not claim to be rank 0's. */
  yk_logger_init(&r.log, -1, yk_log_level_parse(r.cfg.log.level), stderr);

  yk_diag d = {0};
  r.join = o->join;
  r.log_level = r.log.level;
  r.ckpt_mode = r.cfg.elastic.enabled && !strcmp(r.cfg.elastic.redundancy, "checkpoint");
  r.accum0 = r.cfg.train.grad_accum;
  /* elastic: a rank outlives its launcher (the coordinator's host) long
   * enough to checkpoint; its output pipe may be gone by then */
  if (r.cfg.elastic.enabled) signal(SIGPIPE, SIG_IGN);
  int rc = 0;
  /* buddy redundancy needs every rank's state whole: ZeRO stage 0 unless
   * the job file asked for a stage (then elastic_check names the clash) */
  if (r.cfg.elastic.enabled && !strcmp(r.cfg.elastic.redundancy, "buddy") && r.cfg.optim.zero < 0 &&
      !strcmp(r.cfg.optim.shard, "auto"))
    r.cfg.optim.zero = 0;
  if (r.cfg.elastic.enabled) rc = elastic_check(&r, &d);
  else if (o->join) rc = yk_errorf(&d, YK_ECONFIG, "--join %s: this rank's config is not elastic; set "
                                   "elastic.enabled=true as the job does", o->join);
  if (!rc) rc = ykd_job_open(&r.job, &r.cfg, &r.log, o->join, &d);
  /* The bar is for a person at a terminal running one rank; launchers give
   * ranks pseudo-terminals too, which must not get it. */
  if (r.job.env.kind != YK_LAUNCH_SINGLE) r.tty = 0;
  if (!rc) rc = open_engine(&r, &d);
  /* elastic: a death (or a join) during the start-up re-forms the job
   * before its first step; start again at the newest epoch */
  for (int attempt = 0; rc && r.cfg.elastic.enabled && r.job.ctl && attempt < 64 && epoch_moved(&r, r.job.epoch, rc);
       attempt++) {
    YK_WARN(&r.log, "elastic: the job re-formed while it started (%s); starting again", yk_diag_msg(&d, rc));
    yk_diag_clear(&d);
    if (r.eng) {
      yk_engine_close(r.eng);
      r.eng = NULL;
    }
    yk_daemon_job info;
    rc = ykd_job_reform(&r.job, &r.cfg, &info, &d);
    if (!rc && info.rank < 0) {
      r.left = 1;
      break;
    }
    if (!rc) {
      apply_log_ranks(&r);
      rc = open_engine(&r, &d);
    }
  }
  int stopped = 0; /* a stop (130) ended the run through its collectives' errors: the reason is the stop */
  if (rc) {
    /* A stop (`yoke status --stop`, Ctrl-C) or a dead peer announced while
     * the job was starting aborts the start-up's all-gathers and
     * collectives: their error is the event's doing, and the event's code
     * (130 for a stop) is the exit code. A checkpoint request aborts
     * nothing, so it explains no failure. */
    poll_events(&r);
    if (r.event_code && r.event_code != YK_EXIT_REQUEUE) {
      YK_WARN(&r.log, "stopping before the first step (exit %d): %s", r.event_code,
              r.event_text[0] ? r.event_text : yk_diag_msg(&d, rc));
      code = r.event_code;
      stopped = code == YK_EXIT_SIGINT;
    } else {
      YK_ERROR(&r.log, "%s", yk_diag_msg(&d, rc));
      /* A path the config names that is not there is the config's fault (2);
       * a file that is there but damaged is bad data (1), docs/exit-codes.md. */
      code = rc == YK_ENOTFOUND ? YK_EXIT_USAGE : yk_daemon_exit_code(rc);
    }
  } else if (r.left) {
    code = 0; /* drained during the start-up */
  } else {
    rc = train_loop(&r, &d);
    if (rc) {
      /* An error caused by the control plane (the job was stopped or
       * aborted, a peer died, the coordinator went away) ends with that
       * event's code, not a generic one. */
      poll_events(&r);
      if (r.event_code) YK_WARN(&r.log, "stopping: %s", yk_diag_msg(&d, rc));
      else YK_ERROR(&r.log, "%s", yk_diag_msg(&d, rc));
      code = r.event_code ? r.event_code : exit_code_for(rc);
      stopped = code == YK_EXIT_SIGINT;
    } else {
      code = r.exit_code;
    }
  }
  yk_engine_close(r.eng);
  if (r.log_file) fclose(r.log_file);
  if (r.ledger) fclose(r.ledger);
  restore_signals(&r);
  const char *reason = code == 0 ? "done" : rc && !stopped ? yk_diag_msg(&d, rc) : code == YK_EXIT_REQUEUE ? "checkpointed for requeue"
                       : code == YK_EXIT_SIGINT ? "interrupted" : "stopped";
  ykd_job_close(&r.job, code, reason);
  yk_device_destroy(r.dev);
  return code;
}
