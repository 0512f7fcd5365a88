/* ctl.c - the control plane of one rank: a libuv loop in its own thread that
 * holds the coordinator link (REGISTER/WELCOME, heartbeats, peer-death and
 * shutdown notices, all-gather rounds), the embedded coordinator on rank 0,
 * the /metrics server and the signal handlers. The step loop talks to it
 * only through the functions in yk_daemon.h; all state shared between the
 * two threads sits under `mu`, and the loop is woken with `wake`. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define QCAP 32
#define CONNECT_RETRY_MS 200
#define BYE_FLUSH_MS 2000
#define EMBED_LINGER_MS (30 * 60 * 1000) /* rank 0 waits at most this for the others to finish */

enum { LINK_NONE, LINK_CONNECTING, LINK_CHALLENGE, LINK_REGISTERED, LINK_WELCOMED };

struct yk_daemon_ctl {
  /* fixed after start */
  yk_launch_env env;
  const yk_logger *log;
  int64_t hb_ms, hb_timeout_ms, rdv_ms, abort_grace_ms;
  int metrics_port;
  uint8_t key[YK_SECRET_MAX];
  size_t key_len;
  uint8_t *addr;
  size_t addr_len;
  void (*on_abort)(void *, const yk_daemon_event *);
  void *abort_arg;
  struct sockaddr_storage coord_addr;

  /* loop thread only */
  uv_loop_t loop;
  uv_thread_t thread;
  int thread_started;
  uv_async_t wake;
  uv_timer_t hb_timer, retry_timer, watchdog, stop_timer;
  uv_signal_t sig_int, sig_term, sig_usr1;
  int signals_seen;
  int ckpt_seen;     /* a checkpoint request was already given to the step loop */
  yk_coord *coord;
  ykd_metrics *metrics;
  ykd_conn *link;
  int link_state;
  uv_connect_t connect_req;
  uint64_t rdv_deadline;
  char last_error[YK_PROTO_MAX_TEXT + 1];
  int lost;          /* coordinator loss already reported */
  int aborting;      /* an abort event was raised */
  int elastic;       /* elastic.enabled: a lost coordinator checkpoints and requeues instead of aborting */
  int stop_phase;    /* 0 running, 1 flushing BYE, 2 waiting for the embedded coordinator, 3 closing */
  uint64_t stop_deadline;
  uint64_t linger_log_ns;
  int x_sent;
  yk_daemon_event wd_ev; /* what the watchdog reports */

  /* shared with the step loop, under mu */
  uv_mutex_t mu;
  uv_cond_t cv;
  int started;
  int start_rc;
  yk_diag start_diag;
  yk_daemon_job job;
  uint8_t **peer_addr;
  uint32_t *peer_len;
  yk_step_stats rep;
  yk_step_stats rep_first; /* the first report: sent on its own, however late the loop gets to it */
  int64_t rep_last_step;
  uint64_t ar_bytes_total;
  uint64_t steps_reported;
  int hb_now;        /* send a heartbeat at once (the first report: a launcher's progress starts there) */
  yk_daemon_event q[QCAP];
  int qhead, qlen;
  uint64_t last_rx_ns;
  int alive;
  int x_pending, x_done, x_rc;
  const uint8_t *x_mine;
  size_t x_len;
  uint8_t *x_all;
  uint32_t x_round;
  uint32_t x_epoch;   /* the epoch the pending all-gather belongs to */
  int reforms;        /* elastic: re-forms the step loop went through (/metrics) */
  double recovery_s;  /* and the time they took */
  char x_err[512];
  int link_dead;
  int stop_req, stop_code;
  char stop_reason[256];
};

/* ------------------------------------------------------------ helpers */

static void push_event(yk_daemon_ctl *ctl, const yk_daemon_event *ev) {
  uv_mutex_lock(&ctl->mu);
  if (ctl->qlen < QCAP) {
    ctl->q[(ctl->qhead + ctl->qlen) % QCAP] = *ev;
    ctl->qlen++;
  }
  uv_cond_broadcast(&ctl->cv);
  uv_mutex_unlock(&ctl->mu);
}

static void fail_start(yk_daemon_ctl *ctl, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail_start(yk_daemon_ctl *ctl, int code, const char *fmt, ...) {
  uv_mutex_lock(&ctl->mu);
  if (!ctl->started && !ctl->start_rc) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctl->start_diag.msg, sizeof ctl->start_diag.msg, fmt, ap);
    va_end(ap);
    ctl->start_diag.code = code;
    ctl->start_rc = code;
  }
  ctl->link_dead = 1;
  uv_cond_broadcast(&ctl->cv);
  uv_mutex_unlock(&ctl->mu);
}

static void on_watchdog(uv_timer_t *t) {
  yk_daemon_ctl *ctl = t->data;
  yk_daemon_event ev = ctl->wd_ev;
  YK_ERROR(ctl->log, "the step loop did not stop within %lld ms after the job was aborted; exiting with code %d",
           (long long)ctl->abort_grace_ms, ev.code ? ev.code : YK_EXIT_FAILURE);
  fflush(NULL);
  _exit(ev.code ? ev.code : YK_EXIT_FAILURE);
}

/* The job must stop: tell the step loop (queue), the collectives (on_abort),
 * and arm the last-resort watchdog. */
static void raise_abort(yk_daemon_ctl *ctl, const yk_daemon_event *ev) {
  push_event(ctl, ev);
  uv_mutex_lock(&ctl->mu);
  ctl->link_dead = 1;
  uv_cond_broadcast(&ctl->cv);
  uv_mutex_unlock(&ctl->mu);
  if (ctl->aborting) return;
  ctl->aborting = 1;
  if (ctl->on_abort) ctl->on_abort(ctl->abort_arg, ev);
  if (ctl->abort_grace_ms > 0 && ctl->stop_phase == 0) {
    ctl->wd_ev = *ev;
    uv_timer_start(&ctl->watchdog, on_watchdog, (uint64_t)ctl->abort_grace_ms, 0);
  }
}

/* Copy one line of text into a fixed event field. The reasons built here can
 * be longer than the field (an error from the coordinator plus our context);
 * the user then sees the start of it ending in "..." rather than a line cut
 * mid-word with no sign of it. */
static void copy_line(char *dst, size_t n, const char *src) {
  size_t len = strlen(src);
  if (len < n) {
    memcpy(dst, src, len + 1);
    return;
  }
  memcpy(dst, src, n - 4);
  memcpy(dst + n - 4, "...", 4);
}

static void coord_lost(yk_daemon_ctl *ctl, const char *why) {
  if (ctl->lost || ctl->stop_phase) return;
  ctl->lost = 1;
  uv_mutex_lock(&ctl->mu);
  int started = ctl->started;
  uv_mutex_unlock(&ctl->mu);
  if (!started) {
    fail_start(ctl, YK_ECLOSED, "%s", why);
    return;
  }
  yk_daemon_event ev = {0};
  ev.type = YK_EV_COORD_LOST;
  ev.code = YK_EXIT_COORD_LOST;
  ev.rank = -1;
  copy_line(ev.text, sizeof ev.text, why);
  if (ctl->elastic) {
    /* The data plane still works: every rank checkpoints at the next step
     * boundary (agreed over it) and exits 75 to be requeued with a new
     * coordinator. Nothing is aborted; only membership changes are lost. */
    ev.type = YK_EV_CHECKPOINT_REQUESTED;
    ev.code = YK_EXIT_REQUEUE;
    char text[sizeof ev.text];
    snprintf(text, sizeof text, "%.400s; elastic job: checkpoint at the next step boundary, then exit 75", why);
    copy_line(ev.text, sizeof ev.text, text);
    YK_WARN(ctl->log, "control: %s", ev.text);
    push_event(ctl, &ev);
    uv_mutex_lock(&ctl->mu);
    ctl->link_dead = 1;
    uv_cond_broadcast(&ctl->cv);
    uv_mutex_unlock(&ctl->mu);
    return;
  }
  raise_abort(ctl, &ev);
}

/* ------------------------------------------------------------ the link */

static void begin_connect(yk_daemon_ctl *ctl);

static void on_retry(uv_timer_t *t) { begin_connect(t->data); }

static void send_frame(yk_daemon_ctl *ctl, yk_msg *m) {
  if (!ctl->link || ctl->link->closing) return;
  m->sender = ctl->env.rank;
  int rc = ykd_conn_send(ctl->link, m);
  if (rc && rc != YK_ECLOSED) YK_WARN(ctl->log, "control: sending %s failed: %s", yk_msg_type_name(m->type),
                                      yk_strerror(rc));
}

static void send_heartbeat_of(yk_daemon_ctl *ctl, int first) {
  yk_msg m = {0};
  m.type = YK_MSG_HEARTBEAT;
  uv_mutex_lock(&ctl->mu);
  m.rep = first ? ctl->rep_first : ctl->rep;
  uv_mutex_unlock(&ctl->mu);
  send_frame(ctl, &m);
}

static void send_heartbeat(yk_daemon_ctl *ctl) { send_heartbeat_of(ctl, 0); }

static void on_hb_timer(uv_timer_t *t) {
  yk_daemon_ctl *ctl = t->data;
  if (ctl->link_state < LINK_REGISTERED || ctl->stop_phase) return;
  uv_mutex_lock(&ctl->mu);
  uint64_t age_ms = (yk_now_ns() - ctl->last_rx_ns) / 1000000;
  uv_mutex_unlock(&ctl->mu);
  if ((int64_t)age_ms > ctl->hb_timeout_ms) {
    char why[600];
    snprintf(why, sizeof why,
             "the coordinator at %s:%d sent nothing for %llu ms (coord.heartbeat_timeout_ms=%lld)%s",
             ctl->env.coord_host, ctl->env.coord_port, (unsigned long long)age_ms, (long long)ctl->hb_timeout_ms,
             ctl->env.embed_coord ? "" : "; it runs in rank 0 or `yoke coord`");
    YK_WARN(ctl->log, "control: %s", why);
    coord_lost(ctl, why);
    if (ctl->link) ykd_conn_close(ctl->link, 0);
    return;
  }
  send_heartbeat(ctl);
}

/* Store the members' addresses of a WELCOME or REFORM; 0 or YK_ENOMEM. */
static int take_members(yk_daemon_ctl *ctl, const yk_msg *m) {
  uint8_t **pa = calloc((size_t)(m->world > 0 ? m->world : 1), sizeof *pa);
  uint32_t *pl = calloc((size_t)(m->world > 0 ? m->world : 1), sizeof *pl);
  int oom = !pa || !pl;
  for (int i = 0; !oom && i < (int)m->n_members; i++) {
    const yk_msg_member *mm = &m->members[i];
    if (mm->rank < 0 || mm->rank >= m->world) continue;
    pl[mm->rank] = mm->addr_len;
    pa[mm->rank] = malloc(mm->addr_len ? mm->addr_len : 1);
    if (!pa[mm->rank]) oom = 1;
    else if (mm->addr_len) memcpy(pa[mm->rank], mm->addr, mm->addr_len);
  }
  if (oom) {
    for (int i = 0; pa && i < m->world; i++) free(pa[i]);
    free(pa);
    free(pl);
    return YK_ENOMEM;
  }
  uv_mutex_lock(&ctl->mu);
  for (int i = 0; ctl->peer_addr && i < ctl->job.world; i++) free(ctl->peer_addr[i]);
  free(ctl->peer_addr);
  free(ctl->peer_len);
  ctl->peer_addr = pa;
  ctl->peer_len = pl;
  uv_mutex_unlock(&ctl->mu);
  return 0;
}

static void on_welcome(yk_daemon_ctl *ctl, const yk_msg *m) {
  /* an elastic job may start smaller than launched (ranks that died before registering) */
  int world_ok = ctl->elastic ? m->world >= 1 && m->world <= ctl->env.world : m->world == ctl->env.world;
  if (!world_ok || (int)m->n_members != m->world || m->rank < 0 || m->rank >= m->world) {
    fail_start(ctl, YK_EPROTO, "WELCOME says rank %d of %d with %u members; this rank expected a world of %d",
               m->rank, m->world, m->n_members, ctl->env.world);
    ykd_conn_close(ctl->link, 0);
    return;
  }
  if (take_members(ctl, m)) {
    fail_start(ctl, YK_ENOMEM, "out of memory storing %d peer addresses", m->world);
    return;
  }
  uv_mutex_lock(&ctl->mu);
  ctl->job.rank = m->rank;
  ctl->job.world = m->world;
  ctl->job.local_rank = ctl->env.local_rank;
  ctl->job.epoch = m->epoch;
  ctl->job.job_id = m->job_id;
  ctl->started = 1;
  uv_cond_broadcast(&ctl->cv);
  uv_mutex_unlock(&ctl->mu);
  ctl->link_state = LINK_WELCOMED;
  YK_INFO(ctl->log, "control: joined job %016llx as rank %d of %d (epoch %u)", (unsigned long long)m->job_id, m->rank,
          m->world, m->epoch);
}

/* elastic: the membership of a new epoch (docs/elasticity.md). A joiner
 * takes its first REFORM as its WELCOME. Otherwise the job facts change at
 * once, an all-gather of the old epoch is abandoned (its rank re-forms), and
 * the step loop gets the event; a failure also aborts the communicators so
 * that collectives blocked on the dead rank return now. */
static void on_reform(yk_daemon_ctl *ctl, const yk_msg *m) {
  if (m->world < 0 || (int)m->n_members != m->world || m->rank < -1 || m->rank >= m->world) {
    YK_ERROR(ctl->log, "control: malformed REFORM (rank %d of %d, %u members); ignored", m->rank, m->world,
             m->n_members);
    return;
  }
  if (take_members(ctl, m)) {
    coord_lost(ctl, "out of memory storing the members of a new epoch");
    return;
  }
  uv_mutex_lock(&ctl->mu);
  int joining = !ctl->started;
  ctl->job.rank = m->rank;
  ctl->job.world = m->world;
  ctl->job.local_rank = ctl->env.local_rank;
  ctl->job.epoch = m->epoch;
  ctl->job.job_id = m->job_id;
  ctl->x_round = 0;
  ctl->x_sent = 0;
  if (ctl->x_pending) {
    ctl->x_rc = YK_EABORTED;
    ctl->x_done = 1;
    ctl->x_pending = 0;
    snprintf(ctl->x_err, sizeof ctl->x_err, "all-gather abandoned: the job re-formed (epoch %u)", m->epoch);
  }
  ctl->started = 1;
  uv_cond_broadcast(&ctl->cv);
  uv_mutex_unlock(&ctl->mu);
  if (joining) {
    ctl->link_state = LINK_WELCOMED;
    YK_INFO(ctl->log, "control: joined job %016llx as rank %d of %d (epoch %u)", (unsigned long long)m->job_id,
            m->rank, m->world, m->epoch);
    return;
  }
  yk_daemon_event ev = {0};
  ev.type = YK_EV_REFORM;
  ev.rank = m->rank;
  ev.world = m->world;
  ev.epoch = m->epoch;
  ev.code = m->code;
  copy_line(ev.text, sizeof ev.text, m->text);
  if (m->rank < 0)
    YK_WARN(ctl->log, "control: epoch %u: %s; this rank leaves at the next step boundary", m->epoch, m->text);
  else
    YK_WARN(ctl->log, "control: epoch %u: %s; this rank is now rank %d of %d", m->epoch, m->text, m->rank, m->world);
  /* abort first: once the step loop has the event it may build the new
   * epoch's communicators, which this abort must not reach */
  if (m->code == YK_REFORM_FAILURE && ctl->on_abort) ctl->on_abort(ctl->abort_arg, &ev);
  push_event(ctl, &ev);
}

static void on_exchange_all(yk_daemon_ctl *ctl, const yk_msg *m) {
  uv_mutex_lock(&ctl->mu);
  if (ctl->x_pending && m->round == ctl->x_round && (int)m->n_members == ctl->job.world) {
    int ok = 1;
    for (uint32_t i = 0; i < m->n_members; i++)
      if (m->members[i].addr_len != ctl->x_len) ok = 0;
    if (ok) {
      for (uint32_t i = 0; i < m->n_members; i++)
        memcpy(ctl->x_all + (size_t)i * ctl->x_len, m->members[i].addr, ctl->x_len);
      ctl->x_rc = 0;
    } else {
      ctl->x_rc = YK_EPROTO;
      snprintf(ctl->x_err, sizeof ctl->x_err, "exchange round %u: blob sizes differ between ranks", m->round);
    }
    ctl->x_done = 1;
    ctl->x_pending = 0;
    ctl->x_round++;
    ctl->x_sent = 0;
    uv_cond_broadcast(&ctl->cv);
  }
  uv_mutex_unlock(&ctl->mu);
}

static void link_on_msg(ykd_conn *c, const yk_msg *m) {
  yk_daemon_ctl *ctl = c->owner;
  uv_mutex_lock(&ctl->mu);
  ctl->last_rx_ns = yk_now_ns();
  uv_mutex_unlock(&ctl->mu);
  if (ctl->link_state == LINK_CHALLENGE) {
    if (m->type != YK_MSG_CHALLENGE) {
      fail_start(ctl, YK_EPROTO, "coordinator at %s:%d sent %s instead of CHALLENGE", ctl->env.coord_host,
                 ctl->env.coord_port, yk_msg_type_name(m->type));
      ykd_conn_close(c, 0);
      return;
    }
    memcpy(c->session, m->session, 8);
    ykd_random(c->session + 8, 8);
    memcpy(c->in.session, c->session, 16);
    c->in.last_seq = m->seq;
    c->in_ready = 1;
    yk_msg r = {0};
    r.type = YK_MSG_REGISTER;
    r.rank = ctl->env.rank;
    r.world = ctl->env.world;
    r.local_rank = ctl->env.local_rank;
    r.pid = (uint32_t)getpid();
    snprintf(r.host, sizeof r.host, "%s", ctl->env.host);
    r.blob = ctl->addr;
    r.blob_len = (uint32_t)ctl->addr_len;
    ctl->link_state = LINK_REGISTERED;
    send_frame(ctl, &r);
    send_heartbeat(ctl);
    return;
  }
  switch (m->type) {
  case YK_MSG_WELCOME:
    if (ctl->link_state == LINK_REGISTERED) on_welcome(ctl, m);
    return;
  case YK_MSG_HEARTBEAT_ACK:
    uv_mutex_lock(&ctl->mu);
    ctl->alive = m->alive;
    uv_mutex_unlock(&ctl->mu);
    return;
  case YK_MSG_PEER_DEAD:
  case YK_MSG_SHUTDOWN: {
    yk_daemon_event ev = {0};
    ev.type = m->type == YK_MSG_PEER_DEAD ? YK_EV_PEER_DEAD : YK_EV_SHUTDOWN;
    ev.rank = m->type == YK_MSG_PEER_DEAD ? m->rank : -1;
    ev.code = m->type == YK_MSG_PEER_DEAD ? YK_EXIT_PEER_DEAD : (m->code ? m->code : YK_EXIT_FAILURE);
    snprintf(ev.host, sizeof ev.host, "%s", m->host);
    snprintf(ev.text, sizeof ev.text, "%.500s", m->text);
    YK_WARN(ctl->log, "control: coordinator says: %s", m->text);
    uv_mutex_lock(&ctl->mu);
    int started = ctl->started;
    uv_mutex_unlock(&ctl->mu);
    if (!started) {
      /* a stop before WELCOME (`yoke status --stop`) ends as a stop: 130 */
      fail_start(ctl,
                 m->type == YK_MSG_PEER_DEAD          ? YK_EPEERDEAD
                 : m->code == YK_EXIT_RENDEZVOUS ? YK_ETIMEDOUT
                 : m->code == YK_EXIT_SIGINT     ? YK_EINTR
                                                 : YK_EABORTED,
                 "during rendezvous: %s", m->text);
      return;
    }
    raise_abort(ctl, &ev);
    return;
  }
  case YK_MSG_EXCHANGE_ALL:
    on_exchange_all(ctl, m);
    return;
  case YK_MSG_REFORM:
    if (ctl->link_state == LINK_REGISTERED || ctl->link_state == LINK_WELCOMED) on_reform(ctl, m);
    return;
  case YK_MSG_CHECKPOINT: {
    if (ctl->ckpt_seen) return;
    ctl->ckpt_seen = 1;
    yk_daemon_event ev = {0};
    ev.type = YK_EV_CHECKPOINT_REQUESTED;
    ev.rank = -1;
    ev.code = m->code ? m->code : YK_EXIT_REQUEUE;
    snprintf(ev.text, sizeof ev.text, "%.400s: checkpoint at the next step boundary, then exit %d", m->text, ev.code);
    YK_WARN(ctl->log, "control: %s", ev.text);
    push_event(ctl, &ev);
    return;
  }
  case YK_MSG_ERROR:
    snprintf(ctl->last_error, sizeof ctl->last_error, "%s", m->text);
    YK_ERROR(ctl->log, "control: coordinator refused us: %s", m->text);
    uv_mutex_lock(&ctl->mu);
    if (ctl->x_pending) {
      ctl->x_rc = YK_EPROTO;
      ctl->x_done = 1;
      ctl->x_pending = 0;
      snprintf(ctl->x_err, sizeof ctl->x_err, "coordinator refused the exchange: %.400s", m->text);
      uv_cond_broadcast(&ctl->cv);
    }
    uv_mutex_unlock(&ctl->mu);
    fail_start(ctl, YK_EPROTO, "coordinator at %s:%d refused rank %d: %s", ctl->env.coord_host, ctl->env.coord_port,
               ctl->env.rank, m->text);
    return;
  default:
    YK_WARN(ctl->log, "control: ignoring unexpected %s from the coordinator", yk_msg_type_name(m->type));
  }
}

static void link_on_refuse(ykd_conn *c, int code, const char *why) {
  yk_daemon_ctl *ctl = c->owner;
  snprintf(ctl->last_error, sizeof ctl->last_error, "we refused its frame: %s", why);
  if (ctl->link_state == LINK_CHALLENGE && code == YK_EAUTH) {
    /* the very first frame does not verify: the two sides hold different secrets */
    fail_start(ctl, YK_EAUTH,
               "the coordinator at %s:%d does not share our job secret (its CHALLENGE failed authentication): "
               "check coord.secret_file / YOKE_SECRET",
               ctl->env.coord_host, ctl->env.coord_port);
    ctl->lost = 1;
    return;
  }
  YK_ERROR(ctl->log, "control: refused a frame from the coordinator at %s: %s", c->peer, why);
}

static void link_on_close(ykd_conn *c, int err) {
  yk_daemon_ctl *ctl = c->owner;
  int state = ctl->link_state;
  ctl->link = NULL;
  ctl->link_state = LINK_NONE;
  free(c);
  if (ctl->stop_phase) return;
  if (state == LINK_CONNECTING) {
    /* connect failed: retry until the rendezvous deadline */
    if (yk_deadline_passed(ctl->rdv_deadline)) {
      fail_start(ctl, YK_ETIMEDOUT, "cannot reach the coordinator at %s:%d within %lld ms (%s)", ctl->env.coord_host,
                 ctl->env.coord_port, (long long)ctl->rdv_ms, err ? uv_strerror(err) : "refused");
      return;
    }
    uv_timer_start(&ctl->retry_timer, on_retry, CONNECT_RETRY_MS, 0);
    return;
  }
  char why[YK_PROTO_MAX_TEXT + 600];
  if (ctl->last_error[0])
    snprintf(why, sizeof why, "lost the coordinator at %s:%d: %s", ctl->env.coord_host, ctl->env.coord_port,
             ctl->last_error);
  else
    snprintf(why, sizeof why, "lost the connection to the coordinator at %s:%d (%s)%s", ctl->env.coord_host,
             ctl->env.coord_port, err ? uv_strerror(err) : "closed",
             ctl->env.kind == YK_LAUNCH_YOKE ? " - did `yoke launch` or `yoke coord` exit?"
                                             : " - did rank 0 (which runs it) exit?");
  if (!ctl->lost) YK_WARN(ctl->log, "control: %s", why);
  coord_lost(ctl, why);
}

static const ykd_conn_cbs link_cbs = {link_on_msg, link_on_refuse, link_on_close};

static void on_connect(uv_connect_t *req, int status) {
  yk_daemon_ctl *ctl = req->data;
  ykd_conn *c = ctl->link;
  if (!c) return;
  if (status < 0) {
    ykd_conn_close(c, status);
    return;
  }
  ctl->link_state = LINK_CHALLENGE;
  if (ykd_conn_start(c)) ykd_conn_close(c, UV_EIO);
}

static void begin_connect(yk_daemon_ctl *ctl) {
  if (ctl->stop_phase || ctl->link) return;
  ykd_conn *c = calloc(1, sizeof *c);
  if (!c || ykd_conn_init(&ctl->loop, c, ctl, &link_cbs, ctl->key, ctl->key_len)) {
    free(c);
    fail_start(ctl, YK_ENOMEM, "cannot create the coordinator connection");
    return;
  }
  ctl->link = c;
  ctl->link_state = LINK_CONNECTING;
  ctl->connect_req.data = ctl;
  int rc = uv_tcp_connect(&ctl->connect_req, &c->tcp, (struct sockaddr *)&ctl->coord_addr, on_connect);
  if (rc) ykd_conn_close(c, rc);
}

/* ------------------------------------------------------------ signals */

static void on_signal(uv_signal_t *h, int signum) {
  yk_daemon_ctl *ctl = h->data;
  ctl->signals_seen++;
  yk_daemon_event ev = {0};
  ev.rank = -1;
  if (ctl->signals_seen > 1 && signum != SIGUSR1) {
    YK_ERROR(ctl->log, "control: second signal (%s): aborting now; a third one kills the process",
             strsignal(signum));
    ev.type = YK_EV_SHUTDOWN;
    ev.code = 128 + signum;
    snprintf(ev.text, sizeof ev.text, "second %s: abort", strsignal(signum));
    uv_signal_stop(&ctl->sig_int);
    uv_signal_stop(&ctl->sig_term);
    ctl->aborting = 0; /* a second signal re-arms the watchdog even after an earlier abort */
    raise_abort(ctl, &ev);
    return;
  }
  if (signum == SIGINT) {
    ev.type = YK_EV_SHUTDOWN;
    ev.code = YK_EXIT_SIGINT;
    snprintf(ev.text, sizeof ev.text, "interrupted by SIGINT: stopping at the next step boundary");
  } else {
    ev.type = YK_EV_CHECKPOINT_REQUESTED;
    ev.code = YK_EXIT_REQUEUE;
    snprintf(ev.text, sizeof ev.text, "%s: checkpoint at the next step boundary, then exit %d (requeue)",
             signum == SIGTERM ? "SIGTERM" : "SIGUSR1", YK_EXIT_REQUEUE);
  }
  uv_mutex_lock(&ctl->mu);
  int started = ctl->started;
  uv_mutex_unlock(&ctl->mu);
  if (started && ctl->elastic && signum == SIGTERM) {
    /* elastic: this rank alone leaves at the next step boundary (a
     * SIGTERM to every rank at once is a preemption: the coordinator
     * makes them all checkpoint instead) */
    yk_msg r = {0};
    r.type = YK_MSG_REQUEST;
    r.action = YK_REQ_DRAIN;
    uv_mutex_lock(&ctl->mu);
    r.code = ctl->job.rank;
    uv_mutex_unlock(&ctl->mu);
    snprintf(r.text, sizeof r.text, "SIGTERM on rank %d", r.code);
    YK_WARN(ctl->log, "control: SIGTERM: asking the coordinator to let this rank leave at the next step boundary");
    send_frame(ctl, &r);
    return;
  }
  if (started) YK_WARN(ctl->log, "control: %s", ev.text); /* before: no boundary to promise */
  if (!started) {
    /* No step boundary yet, so no checkpoint: SIGTERM ends as 143, SIGINT
     * as 130 (docs/exit-codes.md). */
    fail_start(ctl, signum == SIGINT ? YK_EINTR : YK_ETERM, "interrupted by %s during rendezvous", strsignal(signum));
    return;
  }
  if (ev.type == YK_EV_CHECKPOINT_REQUESTED) {
    if (ctl->ckpt_seen) return;
    ctl->ckpt_seen = 1;
    /* the signal may have reached only this rank: have the coordinator tell
     * every rank, so they all checkpoint */
    yk_msg r = {0};
    r.type = YK_MSG_REQUEST;
    r.action = YK_REQ_CHECKPOINT;
    r.code = YK_EXIT_REQUEUE;
    snprintf(r.text, sizeof r.text, "%s on rank %d", signum == SIGTERM ? "SIGTERM" : "SIGUSR1", ctl->env.rank);
    send_frame(ctl, &r);
  }
  push_event(ctl, &ev);
}

/* ------------------------------------------------------------ metrics */

static size_t render_metrics(void *arg, char *buf, size_t cap) {
  yk_daemon_ctl *ctl = arg;
  uv_mutex_lock(&ctl->mu);
  yk_step_stats r = ctl->rep;
  uint64_t total = ctl->ar_bytes_total, nrep = ctl->steps_reported;
  double age = (double)(yk_now_ns() - ctl->last_rx_ns) / 1e9;
  yk_daemon_job job = ctl->job;
  int alive = ctl->alive, reforms = ctl->reforms;
  double recovery = ctl->recovery_s;
  uv_mutex_unlock(&ctl->mu);
  char lab[64];
  snprintf(lab, sizeof lab, "rank=\"%d\"", ctl->env.rank);
  size_t n = 0;
#define EMIT(name, type, help, fmt, val)                                                                  \
  do {                                                                                                    \
    int k = snprintf(buf + n, cap - n, "# HELP " name " " help "\n# TYPE " name " " type "\n" name "{%s} " fmt \
                     "\n",                                                                                \
                     lab, val);                                                                           \
    if (k > 0 && (size_t)k < cap - n) n += (size_t)k;                                                     \
  } while (0)
  EMIT("yoke_step", "gauge", "Last completed optimizer step.", "%lld", (long long)r.step);
  EMIT("yoke_loss", "gauge", "Training loss at the last step.", "%.17g", r.loss);
  EMIT("yoke_tokens_per_second", "gauge", "Tokens per second of this rank over the last step.", "%.17g",
       r.tokens_per_s);
  EMIT("yoke_step_seconds", "gauge", "Wall time of the last step.", "%.9g", r.step_ms / 1e3);
  EMIT("yoke_step_compute_seconds", "gauge", "Wall time of the last step minus its communication wait (the largest "
       "over ranks is the straggler).", "%.9g", (r.step_ms - r.comm_wait_ms) / 1e3);
  EMIT("yoke_allreduce_seconds", "gauge", "Time the last step waited on communication (not hidden by backward).", "%.9g", r.comm_wait_ms / 1e3);
  EMIT("yoke_allreduce_bytes", "gauge", "Bytes all-reduced during the last step.", "%llu",
       (unsigned long long)r.allreduce_bytes);
  EMIT("yoke_allreduce_bytes_total", "counter", "Bytes all-reduced since start.", "%llu", (unsigned long long)total);
  EMIT("yoke_steps_reported_total", "counter", "Step reports received from the step loop.", "%llu",
       (unsigned long long)nrep);
  EMIT("yoke_loss_scale", "gauge", "Current fp16 loss scale.", "%.17g", r.loss_scale);
  EMIT("yoke_heartbeat_age_seconds", "gauge", "Seconds since the last frame from the coordinator.", "%.6f", age);
  EMIT("yoke_world_size", "gauge", "Ranks in the job.", "%d", job.world);
  EMIT("yoke_ranks_alive", "gauge", "Ranks the coordinator counts alive.", "%d", alive);
  EMIT("yoke_epoch", "gauge", "Membership epoch.", "%u", job.epoch);
  EMIT("yoke_reforms_total", "counter", "Membership changes this rank re-formed through (elastic jobs).", "%d", reforms);
  EMIT("yoke_recovery_seconds_total", "counter", "Seconds this rank spent re-forming (elastic jobs).", "%.6f", recovery);
#undef EMIT
  return n;
}

/* ------------------------------------------------------------ stopping */

static void close_cb_noop(uv_handle_t *h) {}

static void close_all(yk_daemon_ctl *ctl) {
  ctl->stop_phase = 3;
  if (ctl->link) ykd_conn_close(ctl->link, 0);
  if (ctl->coord) yk_coord_close(ctl->coord), ctl->coord = NULL;
  if (ctl->metrics) ykd_metrics_close(ctl->metrics), ctl->metrics = NULL;
  uv_handle_t *hs[] = {(uv_handle_t *)&ctl->wake,      (uv_handle_t *)&ctl->hb_timer, (uv_handle_t *)&ctl->retry_timer,
                       (uv_handle_t *)&ctl->watchdog,  (uv_handle_t *)&ctl->stop_timer,
                       (uv_handle_t *)&ctl->sig_int,   (uv_handle_t *)&ctl->sig_term, (uv_handle_t *)&ctl->sig_usr1};
  for (size_t i = 0; i < YK_ARRAY_LEN(hs); i++)
    if (!uv_is_closing(hs[i])) uv_close(hs[i], close_cb_noop);
}

static void on_stop_timer(uv_timer_t *t) {
  yk_daemon_ctl *ctl = t->data;
  if (ctl->stop_phase == 1) {
    if (ctl->link && ctl->link->pending_writes > 0 && !yk_deadline_passed(ctl->stop_deadline)) return;
    if (ctl->link) ykd_conn_close(ctl->link, 0);
    ctl->stop_phase = 2;
    /* The embedded coordinator keeps serving until the other ranks said BYE
     * or were found dead (heartbeats still guard them), so a rank 0 that
     * finishes first does not cut off ranks that are still finishing. */
    ctl->stop_deadline = yk_deadline_in_ms(EMBED_LINGER_MS);
    ctl->linger_log_ns = yk_now_ns();
  }
  if (ctl->stop_phase == 2) {
    int code;
    if (ctl->coord && !yk_coord_finished(ctl->coord, &code) && !yk_deadline_passed(ctl->stop_deadline)) {
      if (yk_now_ns() - ctl->linger_log_ns > 10000000000ull) {
        ctl->linger_log_ns = yk_now_ns();
        YK_INFO(ctl->log, "control: this rank is done; the coordinator it runs waits for the others to finish");
      }
      return;
    }
    if (ctl->coord && !yk_coord_finished(ctl->coord, &code))
      YK_WARN(ctl->log, "control: stopping the embedded coordinator while ranks are still registered");
    close_all(ctl);
  }
}

static void begin_stop(yk_daemon_ctl *ctl, int code, const char *reason) {
  uv_timer_stop(&ctl->watchdog);
  uv_timer_stop(&ctl->hb_timer);
  uv_timer_stop(&ctl->retry_timer);
  ctl->stop_phase = 1;
  ctl->stop_deadline = yk_deadline_in_ms(BYE_FLUSH_MS);
  if (ctl->link && ctl->link_state >= LINK_REGISTERED) {
    send_heartbeat(ctl); /* the last step's report, for the launcher's summary */
    yk_msg m = {0};
    m.type = YK_MSG_BYE;
    m.code = code;
    snprintf(m.text, sizeof m.text, "%s", reason);
    send_frame(ctl, &m);
  }
  uv_timer_start(&ctl->stop_timer, on_stop_timer, 0, 10);
}

static void on_wake(uv_async_t *a) {
  yk_daemon_ctl *ctl = a->data;
  uv_mutex_lock(&ctl->mu);
  int stop = ctl->stop_req, code = ctl->stop_code;
  char reason[256];
  memcpy(reason, ctl->stop_reason, sizeof reason);
  int xsend = ctl->x_pending && !ctl->x_sent, hb = ctl->hb_now;
  ctl->hb_now = 0;
  yk_msg x = {0};
  uint8_t *blob = NULL;
  if (xsend) {
    /* copy: the caller may give up (deadline) and reuse its buffer */
    blob = malloc(ctl->x_len ? ctl->x_len : 1);
    if (blob) memcpy(blob, ctl->x_mine, ctl->x_len);
    x.type = YK_MSG_EXCHANGE;
    x.round = ctl->x_round;
    x.epoch = ctl->x_epoch;
    x.blob = blob;
    x.blob_len = (uint32_t)ctl->x_len;
    ctl->x_sent = 1;
    if (!blob) {
      ctl->x_rc = YK_ENOMEM;
      ctl->x_done = 1;
      snprintf(ctl->x_err, sizeof ctl->x_err, "out of memory for an all-gather blob");
      uv_cond_broadcast(&ctl->cv);
      xsend = 0;
    }
  }
  uv_mutex_unlock(&ctl->mu);
  if (xsend && ctl->stop_phase == 0) send_frame(ctl, &x);
  if (hb && ctl->stop_phase == 0 && ctl->link_state >= LINK_REGISTERED) send_heartbeat_of(ctl, 1);
  free(blob);
  if (stop && ctl->stop_phase == 0) begin_stop(ctl, code, reason);
}

static void thread_main(void *arg) {
  yk_daemon_ctl *ctl = arg;
  begin_connect(ctl);
  uv_run(&ctl->loop, UV_RUN_DEFAULT);
}

/* ------------------------------------------------------------ public API */

static void ctl_free(yk_daemon_ctl *ctl) {
  if (ctl->peer_addr)
    for (int i = 0; i < ctl->job.world; i++) free(ctl->peer_addr[i]);
  free(ctl->peer_addr);
  free(ctl->peer_len);
  free(ctl->addr);
  memset(ctl->key, 0, sizeof ctl->key);
  uv_mutex_destroy(&ctl->mu);
  uv_cond_destroy(&ctl->cv);
  free(ctl);
}

int yk_daemon_ctl_start(const yk_daemon_ctl_opts *o, yk_daemon_ctl **out, yk_diag *d) {
  *out = NULL;
  if (o->addr_len > YK_PROTO_MAX_ADDR)
    return yk_errorf(d, YK_EINVAL, "data-plane address of %zu bytes exceeds %d", o->addr_len, YK_PROTO_MAX_ADDR);
  yk_daemon_ctl *ctl = calloc(1, sizeof *ctl);
  if (!ctl) return yk_errorf(d, YK_ENOMEM, "out of memory for the control plane");
  ctl->env = *o->env;
  ctl->log = o->log;
  ctl->hb_ms = o->cfg->coord.heartbeat_ms;
  ctl->hb_timeout_ms = o->cfg->coord.heartbeat_timeout_ms;
  ctl->elastic = (int)o->cfg->elastic.enabled;
  ctl->rdv_ms = o->rendezvous_timeout_ms > 0 ? o->rendezvous_timeout_ms : 60000;
  ctl->abort_grace_ms = o->abort_grace_ms;
  ctl->metrics_port = (int)o->cfg->coord.metrics_port;
  ctl->on_abort = o->on_abort;
  ctl->abort_arg = o->abort_arg;
  ctl->rep.loss_scale = 1.0;
  ctl->rep_last_step = -1;
  if (uv_mutex_init(&ctl->mu) || uv_cond_init(&ctl->cv)) {
    free(ctl);
    return yk_errorf(d, YK_ESYS, "cannot create the control plane's mutex");
  }
  int rc = yk_daemon_secret_load(o->cfg, ctl->key, &ctl->key_len, d);
  if (rc == YK_ENOTFOUND && ctl->env.world == 1 && ctl->env.embed_coord) {
    /* a job of one rank talks only to itself: any fresh secret will do */
    ykd_random(ctl->key, 32);
    ctl->key_len = 32;
    rc = 0;
  }
  if (rc) {
    ctl_free(ctl);
    return rc == YK_ENOTFOUND ? YK_ECONFIG : rc;
  }
  if (o->addr_len) {
    ctl->addr = malloc(o->addr_len);
    if (!ctl->addr) {
      ctl_free(ctl);
      return yk_errorf(d, YK_ENOMEM, "out of memory");
    }
    memcpy(ctl->addr, o->addr, o->addr_len);
    ctl->addr_len = o->addr_len;
  }
  if (uv_loop_init(&ctl->loop)) {
    ctl_free(ctl);
    return yk_errorf(d, YK_ESYS, "cannot create the control loop");
  }
  uv_async_init(&ctl->loop, &ctl->wake, on_wake);
  uv_timer_init(&ctl->loop, &ctl->hb_timer);
  uv_timer_init(&ctl->loop, &ctl->retry_timer);
  uv_timer_init(&ctl->loop, &ctl->watchdog);
  uv_timer_init(&ctl->loop, &ctl->stop_timer);
  uv_signal_init(&ctl->loop, &ctl->sig_int);
  uv_signal_init(&ctl->loop, &ctl->sig_term);
  uv_signal_init(&ctl->loop, &ctl->sig_usr1);
  uv_handle_t *hs[] = {(uv_handle_t *)&ctl->wake,     (uv_handle_t *)&ctl->hb_timer, (uv_handle_t *)&ctl->retry_timer,
                       (uv_handle_t *)&ctl->watchdog, (uv_handle_t *)&ctl->stop_timer, (uv_handle_t *)&ctl->sig_int,
                       (uv_handle_t *)&ctl->sig_term, (uv_handle_t *)&ctl->sig_usr1};
  for (size_t i = 0; i < YK_ARRAY_LEN(hs); i++) hs[i]->data = ctl;

  if (ctl->env.embed_coord) {
    yk_coord_opts co = {0};
    co.bind_host = "0.0.0.0";
    co.port = ctl->env.coord_port;
    co.world = ctl->env.world;
    co.heartbeat_timeout_ms = ctl->hb_timeout_ms;
    co.heartbeat_ms = o->cfg->coord.heartbeat_ms;
    co.straggler_warn = o->cfg->train.straggler_warn;
    co.key = ctl->key;
    co.key_len = ctl->key_len;
    co.log = ctl->log;
    co.elastic = (int)o->cfg->elastic.enabled;
    co.max_ranks = (int)o->cfg->elastic.max_ranks;
    rc = yk_coord_start(&ctl->loop, &co, &ctl->coord, d);
    if (rc) goto fail_loop;
    ctl->env.coord_port = yk_coord_port(ctl->coord);
  }
  rc = ykd_resolve(ctl->env.coord_host, ctl->env.coord_port, &ctl->coord_addr, d);
  if (rc) goto fail_loop;
  if (ctl->metrics_port > 0) {
    int port = ctl->metrics_port + ctl->env.local_rank;
    if (port > 65535) {
      rc = yk_errorf(d, YK_ECONFIG, "coord.metrics_port %d + local rank %d exceeds 65535", ctl->metrics_port,
                     ctl->env.local_rank);
      goto fail_loop;
    }
    rc = ykd_metrics_start(&ctl->loop, "0.0.0.0", port, render_metrics, ctl, ctl->log, &ctl->metrics, d);
    if (rc) goto fail_loop;
  }
  uv_signal_start(&ctl->sig_int, on_signal, SIGINT);
  uv_signal_start(&ctl->sig_term, on_signal, SIGTERM);
  uv_signal_start(&ctl->sig_usr1, on_signal, SIGUSR1);
  uv_timer_start(&ctl->hb_timer, on_hb_timer, (uint64_t)ctl->hb_ms, (uint64_t)ctl->hb_ms);
  ctl->last_rx_ns = yk_now_ns();
  ctl->rdv_deadline = yk_deadline_in_ms((uint64_t)ctl->rdv_ms);
  if (uv_thread_create(&ctl->thread, thread_main, ctl)) {
    rc = yk_errorf(d, YK_ESYS, "cannot start the control thread");
    goto fail_loop;
  }
  ctl->thread_started = 1;
  YK_DEBUG(ctl->log, "control: rank %d of %d connecting to the coordinator at %s:%d%s", ctl->env.rank,
           ctl->env.world, ctl->env.coord_host, ctl->env.coord_port, ctl->env.embed_coord ? " (embedded)" : "");

  /* Wait for WELCOME (the rendezvous deadline is enforced on the loop; this
   * one only guards against a loop that never answers). */
  uint64_t deadline = yk_deadline_in_ms((uint64_t)ctl->rdv_ms + 5000);
  uv_mutex_lock(&ctl->mu);
  while (!ctl->started && !ctl->start_rc && !yk_deadline_passed(deadline)) {
    uint64_t now = yk_now_ns();
    uv_cond_timedwait(&ctl->cv, &ctl->mu, deadline > now ? deadline - now : 1);
  }
  int started = ctl->started;
  if (!started && !ctl->start_rc) {
    ctl->start_rc = YK_ETIMEDOUT;
    snprintf(ctl->start_diag.msg, sizeof ctl->start_diag.msg, "no WELCOME from the coordinator within %lld ms",
             (long long)ctl->rdv_ms);
  }
  if (!started) {
    rc = ctl->start_rc;
    yk_errorf(d, rc, "%s", ctl->start_diag.msg);
  }
  uv_mutex_unlock(&ctl->mu);
  if (!started) {
    yk_daemon_ctl_stop(ctl, YK_EXIT_RENDEZVOUS, "rendezvous failed");
    return rc;
  }
  *out = ctl;
  return 0;

fail_loop:
  if (ctl->coord) yk_coord_close(ctl->coord), ctl->coord = NULL;
  if (ctl->metrics) ykd_metrics_close(ctl->metrics), ctl->metrics = NULL;
  for (size_t i = 0; i < YK_ARRAY_LEN(hs); i++) uv_close(hs[i], close_cb_noop);
  uv_run(&ctl->loop, UV_RUN_DEFAULT);
  uv_loop_close(&ctl->loop);
  ctl_free(ctl);
  return rc;
}

void yk_daemon_ctl_job(const yk_daemon_ctl *ctl, yk_daemon_job *job) {
  yk_daemon_ctl *c = (yk_daemon_ctl *)ctl;
  uv_mutex_lock(&c->mu);
  *job = c->job;
  uv_mutex_unlock(&c->mu);
}

int yk_daemon_ctl_peer_addr(const yk_daemon_ctl *ctl, int rank, const void **addr, size_t *len) {
  if (rank < 0 || rank >= ctl->job.world || !ctl->peer_addr) return YK_EINVAL;
  *addr = ctl->peer_addr[rank];
  *len = ctl->peer_len[rank];
  return 0;
}

int yk_daemon_ctl_allgather(yk_daemon_ctl *ctl, const void *mine, size_t len, void *all, uint64_t deadline_ns,
                            yk_diag *d) {
  return yk_daemon_ctl_allgather_epoch(ctl, UINT32_MAX, mine, len, all, deadline_ns, d);
}

int yk_daemon_ctl_allgather_epoch(yk_daemon_ctl *ctl, uint32_t epoch, const void *mine, size_t len, void *all,
                                  uint64_t deadline_ns, yk_diag *d) {
  if (len > YK_PROTO_MAX_ADDR)
    return yk_errorf(d, YK_EINVAL, "all-gather blob of %zu bytes exceeds %d", len, YK_PROTO_MAX_ADDR);
  if (!deadline_ns) deadline_ns = yk_deadline_in_ms(60000);
  uv_mutex_lock(&ctl->mu);
  if (ctl->link_dead || ctl->x_pending) {
    int busy = ctl->x_pending;
    uv_mutex_unlock(&ctl->mu);
    return busy ? yk_errorf(d, YK_EBUSY, "another all-gather is in flight")
                : yk_errorf(d, YK_EABORTED, "the control plane lost the coordinator or the job was aborted");
  }
  ctl->x_mine = mine;
  ctl->x_len = len;
  ctl->x_all = all;
  ctl->x_done = 0;
  ctl->x_rc = 0;
  if (epoch != UINT32_MAX && epoch != ctl->job.epoch) {
    uint32_t now = ctl->job.epoch;
    uv_mutex_unlock(&ctl->mu);
    return yk_errorf(d, YK_EABORTED, "all-gather of epoch %u abandoned: the job re-formed (epoch %u)", epoch, now);
  }
  ctl->x_pending = 1;
  ctl->x_epoch = ctl->job.epoch;
  uint32_t round = ctl->x_round;
  uv_mutex_unlock(&ctl->mu);
  uv_async_send(&ctl->wake);
  uv_mutex_lock(&ctl->mu);
  while (!ctl->x_done && !ctl->link_dead && !yk_deadline_passed(deadline_ns)) {
    uint64_t now = yk_now_ns();
    uv_cond_timedwait(&ctl->cv, &ctl->mu, deadline_ns > now ? deadline_ns - now : 1);
  }
  int rc;
  if (ctl->x_done) {
    rc = ctl->x_rc;
    if (rc) yk_errorf(d, rc, "%s", ctl->x_err);
  } else if (ctl->link_dead) {
    rc = yk_errorf(d, YK_EABORTED, "all-gather round %u abandoned: the job was aborted or the coordinator lost", round);
  } else {
    rc = yk_errorf(d, YK_ETIMEDOUT, "all-gather round %u: not every rank contributed before the deadline", round);
  }
  ctl->x_pending = 0;
  ctl->x_mine = NULL;
  ctl->x_all = NULL;
  uv_mutex_unlock(&ctl->mu);
  return rc;
}

void yk_daemon_ctl_report(yk_daemon_ctl *ctl, const yk_step_stats *r) {
  uv_mutex_lock(&ctl->mu);
  ctl->rep = *r;
  if (r->step != ctl->rep_last_step) {
    ctl->ar_bytes_total += r->allreduce_bytes;
    ctl->rep_last_step = r->step;
  }
  int first = ctl->steps_reported++ == 0;
  if (first) ctl->rep_first = *r;
  ctl->hb_now |= first;
  uv_mutex_unlock(&ctl->mu);
  if (first) uv_async_send(&ctl->wake);
}

int yk_daemon_ctl_poll(yk_daemon_ctl *ctl, yk_daemon_event *ev) { return yk_daemon_ctl_wait(ctl, ev, 0); }

int yk_daemon_ctl_wait(yk_daemon_ctl *ctl, yk_daemon_event *ev, uint64_t deadline_ns) {
  uv_mutex_lock(&ctl->mu);
  while (!ctl->qlen && deadline_ns && !yk_deadline_passed(deadline_ns)) {
    uint64_t now = yk_now_ns();
    uv_cond_timedwait(&ctl->cv, &ctl->mu, deadline_ns > now ? deadline_ns - now : 1);
  }
  int got = 0;
  if (ctl->qlen) {
    *ev = ctl->q[ctl->qhead];
    ctl->qhead = (ctl->qhead + 1) % QCAP;
    ctl->qlen--;
    got = 1;
  }
  uv_mutex_unlock(&ctl->mu);
  return got;
}

void yk_daemon_ctl_note_reform(yk_daemon_ctl *ctl, double seconds) {
  uv_mutex_lock(&ctl->mu);
  ctl->reforms++;
  ctl->recovery_s += seconds;
  uv_mutex_unlock(&ctl->mu);
}

int yk_daemon_ctl_wait_epoch(yk_daemon_ctl *ctl, uint32_t epoch, uint64_t deadline_ns) {
  uv_mutex_lock(&ctl->mu);
  while (ctl->job.epoch == epoch && !ctl->link_dead && !yk_deadline_passed(deadline_ns)) {
    uint64_t now = yk_now_ns();
    uv_cond_timedwait(&ctl->cv, &ctl->mu, deadline_ns > now ? deadline_ns - now : 1);
  }
  int moved = ctl->job.epoch != epoch;
  uv_mutex_unlock(&ctl->mu);
  return moved;
}

int64_t yk_daemon_ctl_heartbeat_age_ms(yk_daemon_ctl *ctl) {
  uv_mutex_lock(&ctl->mu);
  int64_t age = (int64_t)((yk_now_ns() - ctl->last_rx_ns) / 1000000);
  uv_mutex_unlock(&ctl->mu);
  return age;
}

void yk_daemon_ctl_stop(yk_daemon_ctl *ctl, int exit_code, const char *reason) {
  if (!ctl) return;
  uv_mutex_lock(&ctl->mu);
  ctl->stop_req = 1;
  ctl->stop_code = exit_code;
  snprintf(ctl->stop_reason, sizeof ctl->stop_reason, "%s", reason ? reason : "");
  uv_mutex_unlock(&ctl->mu);
  if (ctl->thread_started) {
    uv_async_send(&ctl->wake);
    uv_thread_join(&ctl->thread);
  }
  uv_loop_close(&ctl->loop);
  ctl_free(ctl);
}
