/* cmd.c - the control-plane subcommands (their command lines are in cli/):
 * `yoke coord` (standalone coordinator), `yoke status` (ask the
 * coordinator), `yoke daemon-selftest` (a synthetic workload that exercises
 * the whole control plane: rendezvous, all-gather, heartbeats with step
 * metrics, events, clean exit). */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* ------------------------------------------------------------ shared */

int yk_daemon_exit_code(int rc) {
  switch (rc) {
  case 0: return YK_EXIT_OK;
  case YK_ECONFIG:
  case YK_EAUTH:
  case YK_EUSAGE: return YK_EXIT_USAGE;
  case YK_EPEERDEAD: return YK_EXIT_PEER_DEAD;
  case YK_ECLOSED: return YK_EXIT_COORD_LOST;
  case YK_ETIMEDOUT: return YK_EXIT_RENDEZVOUS;
  case YK_EINTR: return YK_EXIT_SIGINT;
  case YK_ETERM: return YK_EXIT_SIGTERM;
  default: return YK_EXIT_FAILURE;
  }
}

/* ------------------------------------------------------------ selftest */

void yk_daemon_selftest_opts_default(yk_daemon_selftest_opts *o) {
  *o = (yk_daemon_selftest_opts){.steps = 20, .step_ms = 50, .fail_at = -1, .fail_rank = -1, .fail_code = 1};
}

int yk_daemon_selftest(const yk_daemon_selftest_opts *so) {
  const char *cmd = "daemon-selftest";
  yk_config cfg = *so->cfg;
  int64_t steps = so->steps, step_ms = so->step_ms, fail_at = so->fail_at, fail_code = so->fail_code,
          fail_rank = so->fail_rank;
  yk_diag d = {0};
  int rc = yk_config_validate(&cfg, &d);
  yk_launch_env env;
  if (!rc) rc = yk_launch_env_detect(&cfg, NULL, NULL, &env, &d);
  if (rc) {
    fprintf(stderr, "yoke %s: %s\n", cmd, yk_diag_msg(&d, rc));
    return 2;
  }
  yk_logger lg;
  int level = yk_log_level_parse(cfg.log.level);
  yk_logger_init(&lg, env.rank, level < 0 ? YK_LOG_INFO : level, stderr);

  char addr[128];
  int alen = snprintf(addr, sizeof addr, "selftest:%s:%d", env.host, (int)getpid());
  yk_daemon_ctl_opts o = {0};
  o.cfg = &cfg;
  o.env = &env;
  o.log = &lg;
  o.addr = addr;
  o.addr_len = (size_t)alen;
  o.abort_grace_ms = cfg.coord.heartbeat_timeout_ms + 5000;
  yk_daemon_ctl *ctl = NULL;
  rc = yk_daemon_ctl_start(&o, &ctl, &d);
  if (rc) {
    YK_ERROR(&lg, "%s: %s", cmd, yk_diag_msg(&d, rc));
    return yk_daemon_exit_code(rc);
  }
  yk_daemon_job job;
  yk_daemon_ctl_job(ctl, &job);
  /* Every rank's REGISTER address must have come back in WELCOME. */
  for (int r = 0; r < job.world; r++) {
    const void *pa;
    size_t pl;
    if (yk_daemon_ctl_peer_addr(ctl, r, &pa, &pl) || pl < 9 || memcmp(pa, "selftest:", 9) != 0) {
      YK_ERROR(&lg, "%s: rank %d's address is missing from WELCOME", cmd, r);
      yk_daemon_ctl_stop(ctl, YK_EXIT_FAILURE, "bad WELCOME");
      return YK_EXIT_FAILURE;
    }
  }
  /* One all-gather round, the way the collectives bootstrap will use it. */
  uint64_t mine[2] = {(uint64_t)job.rank * 7919u + 1, job.job_id};
  uint64_t *all = calloc((size_t)job.world, sizeof mine);
  rc = all ? yk_daemon_ctl_allgather(ctl, mine, sizeof mine, all, yk_deadline_in_ms(30000), &d) : YK_ENOMEM;
  for (int r = 0; !rc && r < job.world; r++)
    if (all[2 * r] != (uint64_t)r * 7919u + 1 || all[2 * r + 1] != job.job_id)
      rc = yk_errorf(&d, YK_ECORRUPT, "all-gather returned a wrong blob for rank %d", r);
  free(all);
  if (rc) {
    YK_ERROR(&lg, "%s: all-gather: %s", cmd, yk_diag_msg(&d, rc));
    /* an abort during the exchange is reported by its event below */
    yk_daemon_event ev;
    int code = YK_EXIT_FAILURE;
    if (yk_daemon_ctl_poll(ctl, &ev)) {
      YK_ERROR(&lg, "job aborted: %s", ev.text);
      code = ev.code;
    }
    yk_daemon_ctl_stop(ctl, code, yk_diag_msg(&d, rc));
    return code;
  }
  YK_INFO(&lg, "%s: rank %d of %d up (pid %d, host %s), running %lld steps of %lld ms", cmd, job.rank, job.world,
          (int)getpid(), env.host, (long long)steps, (long long)step_ms);

  int code = YK_EXIT_OK;
  char reason[600] = "done";
  int64_t step = 0;
  for (step = 1; step <= steps && code == YK_EXIT_OK; step++) {
    uint64_t t0 = yk_now_ns();
    uint64_t end = t0 + (uint64_t)step_ms * 1000000ull;
    yk_daemon_event ev;
    /* a "step": wait in slices so events are seen promptly, as a real step
     * loop sees them at its next boundary */
    while (code == YK_EXIT_OK) {
      if (yk_daemon_ctl_wait(ctl, &ev, YK_MIN(end, yk_now_ns() + 10000000ull))) {
        switch (ev.type) {
        case YK_EV_PEER_DEAD:
          snprintf(reason, sizeof reason, "rank %d on host %s died", ev.rank, ev.host);
          YK_ERROR(&lg, "job aborted: %s; exiting with code %d", ev.text, ev.code);
          break;
        case YK_EV_COORD_LOST:
          snprintf(reason, sizeof reason, "coordinator lost");
          YK_ERROR(&lg, "job aborted: %s; exiting with code %d", ev.text, ev.code);
          break;
        case YK_EV_CHECKPOINT_REQUESTED:
          snprintf(reason, sizeof reason, "checkpoint requested");
          YK_WARN(&lg, "%s (the selftest has no state to save); exiting with code %d", ev.text, ev.code);
          break;
        default:
          snprintf(reason, sizeof reason, "%s", ev.text);
          /* A user's stop (130) is not an error; an abort by the coordinator is. */
          yk_log(&lg, ev.code == YK_EXIT_SIGINT ? YK_LOG_WARN : YK_LOG_ERROR, "job stopping: %s; exiting with code %d",
                 ev.text, ev.code);
          break;
        }
        code = ev.code ? ev.code : YK_EXIT_FAILURE;
      }
      if (yk_now_ns() >= end) break;
    }
    if (code != YK_EXIT_OK) break;
    if (fail_at >= 0 && step == fail_at && (fail_rank < 0 || fail_rank == job.rank)) {
      YK_ERROR(&lg, "%s: failing at step %lld as asked (--fail-at), exit code %lld", cmd, (long long)step,
               (long long)fail_code);
      snprintf(reason, sizeof reason, "selftest --fail-at %lld", (long long)step);
      code = (int)fail_code;
      break;
    }
    double ms = (double)(yk_now_ns() - t0) / 1e6;
    yk_step_stats rep = {0};
    rep.step = step;
    rep.loss = 4.0 * exp(-0.05 * (double)step) + 1.0;
    rep.step_ms = ms;
    rep.tokens_per_s = ms > 0 ? 1024.0 / (ms / 1e3) : 0;
    rep.comm_wait_ms = ms * 0.1;
    rep.allreduce_bytes = 4u << 20;
    rep.loss_scale = 65536.0;
    yk_daemon_ctl_report(ctl, &rep);
    YK_DEBUG(&lg, "step %lld loss %.4f", (long long)step, rep.loss);
  }
  if (code == YK_EXIT_OK)
    YK_INFO(&lg, "%s: rank %d finished %lld steps", cmd, job.rank, (long long)steps);
  yk_daemon_ctl_stop(ctl, code, reason);
  return code;
}

/* ------------------------------------------------------------ coord */

typedef struct {
  yk_coord *co;
  uv_timer_t timer;
  uv_signal_t sint, sterm;
  uint64_t rdv_deadline;
  uint64_t linger;
  int code;
  int done;
  const yk_logger *lg;
} coord_run;

static void coord_shutdown(coord_run *cr, int code) {
  if (cr->done) return;
  cr->done = 1;
  cr->code = code;
  yk_coord_close(cr->co);
  uv_close((uv_handle_t *)&cr->timer, NULL);
  uv_close((uv_handle_t *)&cr->sint, NULL);
  uv_close((uv_handle_t *)&cr->sterm, NULL);
}

static void coord_tick(uv_timer_t *t) {
  coord_run *cr = t->data;
  int code;
  if (yk_coord_finished(cr->co, &code) && !cr->linger) {
    YK_INFO(cr->lg, "coordinator: every rank left; exiting with code %d", code);
    coord_shutdown(cr, code);
  } else if (cr->rdv_deadline && yk_deadline_passed(cr->rdv_deadline)) {
    char miss[256], why[400];
    yk_coord_missing(cr->co, miss, sizeof miss);
    snprintf(why, sizeof why, "rendezvous timeout: %s", miss);
    yk_coord_abort(cr->co, YK_EXIT_RENDEZVOUS, why);
    cr->rdv_deadline = 0;
    cr->linger = yk_deadline_in_ms(200); /* let SHUTDOWN reach the ranks */
  } else if (cr->linger && yk_deadline_passed(cr->linger)) {
    coord_shutdown(cr, YK_EXIT_RENDEZVOUS);
  }
}

static void coord_sig(uv_signal_t *h, int signum) {
  coord_run *cr = h->data;
  YK_WARN(cr->lg, "coordinator: %s; shutting down", strsignal(signum));
  coord_shutdown(cr, 128 + signum);
}

void yk_daemon_coord_opts_default(yk_daemon_coord_opts *o) {
  *o = (yk_daemon_coord_opts){.bind = "0.0.0.0", .rendezvous_timeout_ms = 300000};
}

int yk_daemon_coord(const yk_daemon_coord_opts *co) {
  const char *cmd = "coord";
  yk_config cfg = *co->cfg;
  const char *bind = co->bind ? co->bind : "0.0.0.0", *port_file = co->port_file;
  int64_t world = co->world, rdv_ms = co->rendezvous_timeout_ms;
  if (world < 1 || world > YK_PROTO_MAX_WORLD) {
    fprintf(stderr, "yoke %s: the world size %lld must be in [1, %d]\n", cmd, (long long)world, YK_PROTO_MAX_WORLD);
    return 2;
  }
  yk_diag d = {0};
  int rc = yk_config_validate(&cfg, &d);
  uint8_t key[YK_SECRET_MAX];
  size_t key_len = 0;
  if (!rc) rc = yk_daemon_secret_load(&cfg, key, &key_len, &d);
  if (rc) {
    fprintf(stderr, "yoke %s: %s\n", cmd, yk_diag_msg(&d, rc));
    return 2;
  }
  yk_logger lg;
  int level = yk_log_level_parse(cfg.log.level);
  yk_logger_init(&lg, -1, level < 0 ? YK_LOG_INFO : level, stderr);
  uv_loop_t loop;
  uv_loop_init(&loop);
  yk_coord_opts o = {0};
  o.bind_host = bind;
  o.port = (int)cfg.coord.port;
  o.world = (int)world;
  o.heartbeat_timeout_ms = cfg.coord.heartbeat_timeout_ms;
  o.heartbeat_ms = cfg.coord.heartbeat_ms;
  o.straggler_warn = cfg.train.straggler_warn;
  o.key = key;
  o.key_len = key_len;
  o.log = &lg;
  o.elastic = (int)cfg.elastic.enabled;
  o.max_ranks = (int)cfg.elastic.max_ranks;
  coord_run cr = {0};
  cr.lg = &lg;
  rc = yk_coord_start(&loop, &o, &cr.co, &d);
  memset(key, 0, sizeof key);
  if (rc) {
    YK_ERROR(&lg, "yoke %s: %s", cmd, yk_diag_msg(&d, rc));
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return 1;
  }
  if (port_file) {
    char buf[16];
    int n = snprintf(buf, sizeof buf, "%d\n", yk_coord_port(cr.co));
    if ((rc = yk_file_write_atomic(port_file, buf, (size_t)n, &d))) YK_WARN(&lg, "%s", yk_diag_msg(&d, rc));
  }
  cr.rdv_deadline = rdv_ms ? yk_deadline_in_ms((uint64_t)rdv_ms) : 0;
  uv_timer_init(&loop, &cr.timer);
  cr.timer.data = &cr;
  uv_timer_start(&cr.timer, coord_tick, 50, 50);
  uv_signal_init(&loop, &cr.sint);
  uv_signal_init(&loop, &cr.sterm);
  cr.sint.data = cr.sterm.data = &cr;
  uv_signal_start(&cr.sint, coord_sig, SIGINT);
  uv_signal_start(&cr.sterm, coord_sig, SIGTERM);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return cr.code;
}

/* ------------------------------------------------------------ status */

static int recv_frame(int fd, uint8_t **buf, size_t *len, size_t *cap, const uint8_t *key, size_t key_len, yk_msg *m,
                      uint64_t deadline, yk_diag *d) {
  for (;;) {
    long used = yk_proto_decode(*buf, *len, key, key_len, m, d);
    if (used < 0) return (int)used;
    if (used > 0) {
      /* keep the bytes (m points into them); the caller consumes by used */
      return (int)used;
    }
    if (*len == *cap) {
      size_t nc = *cap ? *cap * 2 : 65536;
      uint8_t *nb = realloc(*buf, nc);
      if (!nb) return yk_errorf(d, YK_ENOMEM, "out of memory");
      *buf = nb;
      *cap = nc;
    }
    struct pollfd p = {fd, POLLIN, 0};
    uint64_t now = yk_now_ns();
    int ms = deadline > now ? (int)((deadline - now) / 1000000) + 1 : 0;
    int pr = poll(&p, 1, ms);
    if (pr == 0) return yk_errorf(d, YK_ETIMEDOUT, "no answer from the coordinator before the deadline");
    if (pr < 0 && errno != EINTR) return yk_errorf_sys(d, YK_ESYS, "poll");
    if (pr < 0) continue;
    ssize_t n = recv(fd, *buf + *len, *cap - *len, 0);
    if (n == 0) return yk_errorf(d, YK_ECLOSED, "the coordinator closed the connection");
    if (n < 0 && errno != EINTR && errno != EAGAIN) return yk_errorf_sys(d, YK_ESYS, "recv");
    if (n > 0) *len += (size_t)n;
  }
}

/* Connect to host:port with a deadline. Returns a socket or a negative code. */
static int connect_sync(const char *host, int port, uint64_t deadline, yk_diag *d) {
  struct sockaddr_storage ss;
  int rc = ykd_resolve(host, port, &ss, d);
  if (rc) return rc;
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return yk_errorf_sys(d, YK_ESYS, "socket");
  socklen_t sl = ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
  if (connect(fd, (struct sockaddr *)&ss, sl) != 0 && errno != EINPROGRESS) {
    rc = yk_errorf_sys(d, YK_ECLOSED, "cannot connect to the coordinator at %s:%d", host, port);
    close(fd);
    return rc;
  }
  struct pollfd p = {fd, POLLOUT, 0};
  uint64_t now = yk_now_ns();
  int ms = deadline > now ? (int)((deadline - now) / 1000000) + 1 : 0;
  if (poll(&p, 1, ms) <= 0) {
    close(fd);
    return yk_errorf(d, YK_ETIMEDOUT, "cannot connect to the coordinator at %s:%d before the deadline", host, port);
  }
  int err = 0;
  socklen_t el = sizeof err;
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
  if (err) {
    close(fd);
    return yk_errorf(d, YK_ECLOSED, "cannot connect to the coordinator at %s:%d: %s", host, port, strerror(err));
  }
  return fd;
}

static int send_all(int fd, const uint8_t *p, size_t n, uint64_t deadline, yk_diag *d) {
  while (n) {
    struct pollfd pf = {fd, POLLOUT, 0};
    uint64_t now = yk_now_ns();
    if (poll(&pf, 1, deadline > now ? (int)((deadline - now) / 1000000) + 1 : 0) <= 0)
      return yk_errorf(d, YK_ETIMEDOUT, "sending to the coordinator timed out");
    ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0 && errno != EINTR && errno != EAGAIN) return yk_errorf_sys(d, YK_ECLOSED, "send");
    if (k > 0) p += k, n -= (size_t)k;
  }
  return 0;
}

static const char *state_name(int s) {
  switch (s) {
  case YK_MEMBER_EMPTY: return "waiting";
  case YK_MEMBER_REGISTERED: return "alive";
  case YK_MEMBER_DEAD: return "dead";
  case YK_MEMBER_DONE: return "done";
  default: return "?";
  }
}


void yk_daemon_status_opts_default(yk_daemon_status_opts *o) {
  *o = (yk_daemon_status_opts){.timeout_ms = 5000};
}

int yk_daemon_status(const yk_daemon_status_opts *so) {
  const char *cmd = "status";
  const yk_config cfg = *so->cfg;
  int json = so->json, action = so->action;
  int64_t timeout_ms = so->timeout_ms;
  const char *coord = so->coord;
  if (action != 0 && action != YK_REQ_CHECKPOINT && action != YK_REQ_STOP && action != YK_REQ_DRAIN) {
    fprintf(stderr, "yoke %s: request %d is neither checkpoint (%d), stop (%d) nor drain (%d)\n", cmd, action,
            YK_REQ_CHECKPOINT, YK_REQ_STOP, YK_REQ_DRAIN);
    return 2;
  }
  yk_diag d = {0};
  char host[320] = "127.0.0.1";
  int port = (int)cfg.coord.port;
  int rc = 0;
  if (!coord) coord = getenv("YOKE_COORD");
  if (!coord || !*coord) coord = cfg.coord.host[0] ? cfg.coord.host : NULL;
  /* No address given (or --job): a job `yoke launch` started here. */
  ykd_jobinfo job = {0};
  if (so->job || !coord) {
    int found = ykd_jobfile_find(so->job, &job, &d);
    if (found < 0) {
      fprintf(stderr, "yoke %s: %s\n", cmd, yk_diag_msg(&d, found));
      return 2;
    }
    if (found) coord = job.coord;
  }
  if (coord) {
    const char *colon = strrchr(coord, ':');
    if (colon) {
      int64_t p;
      snprintf(host, sizeof host, "%.*s", (int)(colon - coord), coord);
      if (yk_parse_i64(colon + 1, &p) || p < 1 || p > 65535) {
        fprintf(stderr, "yoke %s: coordinator '%s' must be HOST:PORT\n", cmd, coord);
        return 2;
      }
      port = (int)p;
    } else {
      snprintf(host, sizeof host, "%s", coord);
    }
  }
  uint8_t key[YK_SECRET_MAX];
  size_t key_len = 0;
  /* a job file brings the secret its launcher uses (hex) */
  for (size_t i = 0; job.secret[2 * i] && i < YK_SECRET_MAX; i++) sscanf(job.secret + 2 * i, "%2hhx", &key[key_len++]);
  memset(job.secret, 0, sizeof job.secret);
  if (!key_len) rc = yk_daemon_secret_load(&cfg, key, &key_len, &d);
  if (rc) {
    fprintf(stderr, "yoke %s: %s\n", cmd, yk_diag_msg(&d, rc));
    return 2;
  }
  uint64_t deadline = yk_deadline_in_ms((uint64_t)timeout_ms);
  int fd = connect_sync(host, port, deadline, &d);
  if (fd < 0) {
    fprintf(stderr, "yoke %s: %s\n", cmd, yk_diag_msg(&d, fd));
    return 1;
  }
  uint8_t *buf = NULL;
  size_t len = 0, cap = 0;
  yk_msg m;
  int used = recv_frame(fd, &buf, &len, &cap, key, key_len, &m, deadline, &d);
  if (used < 0) {
    if (used == YK_EAUTH)
      fprintf(stderr,
              "yoke %s: the coordinator at %s:%d does not share our job secret (its CHALLENGE failed "
              "authentication): check coord.secret_file / YOKE_SECRET\n",
              cmd, host, port);
    else
      fprintf(stderr, "yoke %s: %s\n", cmd, yk_diag_msg(&d, used));
    close(fd);
    free(buf);
    return 1;
  }
  if (m.type != YK_MSG_CHALLENGE) {
    fprintf(stderr, "yoke %s: expected CHALLENGE from the coordinator, got %s\n", cmd, yk_msg_type_name(m.type));
    yk_msg_free(&m);
    close(fd);
    free(buf);
    return 1;
  }
  yk_proto_peer in = {{0}, m.seq};
  memcpy(in.session, m.session, 8);
  ykd_random(in.session + 8, 8);
  yk_msg_free(&m);
  memmove(buf, buf + used, len - (size_t)used);
  len -= (size_t)used;
  yk_msg req = {0};
  req.type = action ? YK_MSG_REQUEST : YK_MSG_STATUS_REQ;
  req.action = action;
  req.code = action == YK_REQ_CHECKPOINT ? YK_EXIT_REQUEUE : action == YK_REQ_DRAIN ? (int32_t)so->drain_rank
                                                                                      : YK_EXIT_SIGINT;
  if (action) {
    char hn[128] = "?";
    gethostname(hn, sizeof hn - 1);
    snprintf(req.text, sizeof req.text, "yoke status --%s on %s",
             action == YK_REQ_CHECKPOINT ? "checkpoint" : action == YK_REQ_DRAIN ? "drain" : "stop", hn);
  }
  req.seq = 1;
  memcpy(req.session, in.session, 16);
  uint8_t *frame;
  size_t flen;
  rc = yk_proto_encode(&req, key, key_len, &frame, &flen, &d);
  if (!rc) rc = send_all(fd, frame, flen, deadline, &d);
  free(frame);
  if (!rc) {
    used = recv_frame(fd, &buf, &len, &cap, key, key_len, &m, deadline, &d);
    rc = used < 0 ? used : 0;
  }
  if (!rc) rc = yk_proto_check_fresh(&in, &m, &d);
  close(fd);
  memset(key, 0, sizeof key);
  if (rc) {
    fprintf(stderr, "yoke %s: %s\n", cmd, yk_diag_msg(&d, rc));
    free(buf);
    return 1;
  }
  if (m.type == YK_MSG_ERROR || m.type != YK_MSG_STATUS) {
    fprintf(stderr, "yoke %s: coordinator answered %s: %s\n", cmd, yk_msg_type_name(m.type), m.text);
    yk_msg_free(&m);
    free(buf);
    return 1;
  }
  int64_t min_step = -1;
  double tps = 0, step_ms = 0;
  for (uint32_t i = 0; i < m.n_members; i++) {
    const yk_msg_member *mm = &m.members[i];
    if (mm->state != YK_MEMBER_REGISTERED && mm->state != YK_MEMBER_DONE) continue;
    if (min_step < 0 || mm->rep.step < min_step) min_step = mm->rep.step;
    tps += mm->rep.tokens_per_s;
    if (mm->rep.step_ms > step_ms) step_ms = mm->rep.step_ms;
  }
  if (min_step < 0) min_step = 0;
  ykd_straggler_view sv = {.rank = -1};
  yk_step_stats *reps = calloc(m.n_members ? m.n_members : 1, sizeof *reps);
  int *live = calloc(m.n_members ? m.n_members : 1, sizeof *live);
  for (uint32_t i = 0; reps && live && i < m.n_members; i++) {
    reps[i] = m.members[i].rep;
    live[i] = m.members[i].state == YK_MEMBER_REGISTERED;
  }
  if (reps && live) ykd_straggler_of(reps, live, (int)m.n_members, &sv);
  free(reps);
  free(live);
  char jid[24];
  snprintf(jid, sizeof jid, "%016llx", (unsigned long long)m.job_id);
  if (action == YK_REQ_DRAIN)
    fprintf(stderr, "yoke %s: rank %lld leaves at the next step boundary; the job goes on with %d ranks (epoch %u)\n",
            cmd, (long long)so->drain_rank, m.world, m.epoch);
  else if (action)
    fprintf(stderr, "yoke %s: asked the job's %d live ranks to %s\n", cmd, m.alive,
            action == YK_REQ_CHECKPOINT ? "checkpoint at the next step boundary and exit 75"
                                        : "stop at the next step boundary");
  if (json) {
    json_t *o = json_object();
    json_object_set_new(o, "job_id", json_string(jid));
    json_object_set_new(o, "epoch", json_integer(m.epoch));
    json_object_set_new(o, "world", json_integer(m.world));
    json_object_set_new(o, "alive", json_integer(m.alive));
    json_object_set_new(o, "step", json_integer(min_step));
    json_object_set_new(o, "step_ms", json_real(step_ms));
    json_object_set_new(o, "tokens_per_s", json_real(tps));
    if (sv.rank >= 0) { /* the rank computing longest, against the median rank (stragglers) */
      json_t *st = json_object();
      json_object_set_new(st, "rank", json_integer(sv.rank));
      json_object_set_new(st, "compute_ms", json_real(sv.compute_ms));
      json_object_set_new(st, "median_compute_ms", json_real(sv.median_ms));
      json_object_set_new(st, "excess", json_real(sv.excess));
      json_object_set_new(o, "slowest_rank", st);
    }
    json_t *arr = json_array();
    for (uint32_t i = 0; i < m.n_members; i++) {
      const yk_msg_member *mm = &m.members[i];
      json_t *e = json_object();
      json_object_set_new(e, "rank", json_integer(mm->rank));
      json_object_set_new(e, "host", json_string(mm->host));
      json_object_set_new(e, "pid", json_integer(mm->pid));
      json_object_set_new(e, "state", json_string(state_name(mm->state)));
      json_object_set_new(e, "heartbeat_age_ms", json_integer(mm->hb_age_ms));
      json_object_set_new(e, "step", json_integer(mm->rep.step));
      json_object_set_new(e, "loss", json_real(mm->rep.loss));
      json_object_set_new(e, "step_ms", json_real(mm->rep.step_ms));
      json_object_set_new(e, "tokens_per_s", json_real(mm->rep.tokens_per_s));
      json_object_set_new(e, "comm_wait_ms", json_real(mm->rep.comm_wait_ms));
      json_object_set_new(e, "allreduce_bytes", json_integer((json_int_t)mm->rep.allreduce_bytes));
      json_object_set_new(e, "loss_scale", json_real(mm->rep.loss_scale));
      json_array_append_new(arr, e);
    }
    json_object_set_new(o, "members", arr);
    /* elastic jobs: the latest membership changes and the time they cost */
    json_t *ch = json_array();
    for (uint32_t i = 0; i < m.n_changes; i++) {
      json_t *e = json_object();
      json_object_set_new(e, "epoch", json_integer(m.changes[i].epoch));
      json_object_set_new(e, "cause", json_string(m.changes[i].cause));
      json_object_set_new(e, "duration_s", m.changes[i].seconds >= 0 ? json_real(m.changes[i].seconds) : json_null());
      json_array_append_new(ch, e);
    }
    json_object_set_new(o, "changes", ch);
    json_object_set_new(o, "recovery_s", json_real(m.recovery_s));
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s) puts(s);
    free(s);
    json_decref(o);
  } else {
    printf("job %s  epoch %u  world %d  alive %d  step %lld  step %.1f ms  %.0f tokens/s\n", jid, m.epoch, m.world,
           m.alive, (long long)min_step, step_ms, tps);
    if (sv.rank >= 0)
      printf("slowest rank %d: compute %.1f ms per step, %+.0f%% against the median rank (%.1f ms)\n", sv.rank,
             sv.compute_ms, sv.excess * 100, sv.median_ms);
    printf("%-5s %-24s %-8s %-8s %10s %8s %10s %10s %12s\n", "rank", "host", "pid", "state", "hb_age_ms", "step",
           "loss", "step_ms", "tokens/s");
    for (uint32_t i = 0; i < m.n_members; i++) {
      const yk_msg_member *mm = &m.members[i];
      printf("%-5d %-24s %-8u %-8s %10u %8lld %10.4f %10.1f %12.0f\n", mm->rank, mm->host[0] ? mm->host : "-",
             mm->pid, state_name(mm->state), mm->hb_age_ms, (long long)mm->rep.step, mm->rep.loss, mm->rep.step_ms,
             mm->rep.tokens_per_s);
    }
    if (m.n_changes) {
      printf("membership changes (latest %u; %.2f s lost to recovery in all):\n", m.n_changes, m.recovery_s);
      for (uint32_t i = 0; i < m.n_changes; i++) {
        char dur[32] = "in progress";
        if (m.changes[i].seconds >= 0) snprintf(dur, sizeof dur, "%.2f s", m.changes[i].seconds);
        printf("  epoch %-4u %-12s %s\n", m.changes[i].epoch, dur, m.changes[i].cause);
      }
    }
  }
  yk_msg_free(&m);
  free(buf);
  return 0;
}
