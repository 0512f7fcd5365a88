/* coord.c - the coordinator: rendezvous (REGISTER -> WELCOME with every
 * rank's address), heartbeats and dead-rank detection, all-gather rounds,
 * status. Runs on a libuv loop it does not own (rank 0's control thread, the
 * local launcher, or `yoke coord`). A refusal drops only that connection; it
 * is one log line, except that refusals of strangers (connections that never
 * sent a valid frame) beyond STRANGER_LINES per STRANGER_WINDOW_MS are only
 * counted and summed up in one line: a port scan or a misconfigured peer
 * retrying must not bury the job's log. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define UNAUTH_TIMEOUT_MS 10000 /* a connection must send a valid frame within this */
#define STRANGER_LINES 5         /* refusals of strangers logged per window ... */
#define STRANGER_WINDOW_MS 10000 /* ... the rest counted, one line per window */
#define DRAIN_BATCH_MS 300       /* SIGTERMs to ranks of one job within this are decided together */

typedef struct cconn cconn;

typedef struct member {
  int state; /* yk_member_state */
  char host[YK_PROTO_MAX_HOST + 1];
  uint32_t pid;
  uint8_t *addr;
  uint32_t addr_len;
  uint64_t last_hb_ns;
  yk_step_stats rep;
  yk_step_stats first; /* its first report of a step */
  cconn *conn;
  int exit_code;
  int drain;      /* elastic: leaves at the next epoch (asked to drain) */
  int drain_self; /* elastic: asked for its own drain (SIGTERM), decided with the others' after DRAIN_BATCH_MS */
  uint8_t *xblob; /* this round's EXCHANGE blob */
  uint32_t xlen;
  int xgot;
} member;

struct cconn {
  ykd_conn c;
  yk_coord *co;
  int rank;       /* -1 until REGISTER (and once it left the membership) */
  int leaving;    /* elastic: drained out of the membership, its BYE still to come */
  int authed;     /* sent one valid frame */
  cconn *prev, *next;
};

struct yk_coord {
  uv_loop_t *loop;
  uv_tcp_t server;
  uv_timer_t timer;
  int open_handles;
  int closing;
  const yk_logger *log;
  uint8_t key[YK_SECRET_MAX];
  size_t key_len;
  int world;      /* members of the current epoch: m[0, world) */
  int cap;        /* m's capacity: the launched world, or elastic.max_ranks */
  int elastic;
  int njoin;      /* elastic: joiners waiting for the next epoch, m[world, world + njoin) */
  uint64_t drain_due_ns; /* elastic: when the pending self-drains are decided (0: none) */
  int gone;              /* elastic: launched ranks that died before they registered */
  /* elastic: the latest membership changes (a ring, oldest first from
   * nhist - YK_PROTO_MAX_CHANGES), for STATUS: each one's time until the
   * first step completed after it, and their sum */
  yk_msg_change hist[YK_PROTO_MAX_CHANGES];
  uint64_t hist_t0[YK_PROTO_MAX_CHANGES];
  int64_t hist_step[YK_PROTO_MAX_CHANGES];
  int nhist;
  double recovery_s;
  int port;
  uint64_t job_id;
  uint32_t epoch;
  int64_t hb_timeout_ms;
  int64_t hb_ms;
  member *m;
  int n_registered;
  int started;
  int aborted;
  /* a rank's failure held back (at most two heartbeat intervals) in case
   * another rank turns out to be hung: see on_failure */
  int pend_rank, pend_code;
  uint64_t pend_t0;
  char pend_text[YK_PROTO_MAX_TEXT + YK_PROTO_MAX_HOST + 64], pend_msg[YK_PROTO_MAX_TEXT + 1];
  int exit_code;
  uint32_t xround;
  int ckpt_sent;
  cconn *conns;
  ykd_straggler strag;  /* the slow-rank warning (straggler.c) */
  int cause_rank;     /* the rank whose death ended the job, -1: none */
  char cause[512];    /* and why, as logged */
  uint64_t stranger_window_ns; /* start of the current rate-limit window */
  int stranger_logged;         /* refusals logged in it */
  long long stranger_quiet;    /* refusals counted but not logged in it */
};

/* Log one refusal of a stranger, or count it once this window's lines are
 * spent (the count is logged when the window closes, by stranger_flush). */
static void stranger_flush(yk_coord *co, uint64_t now);
static void stranger_warn(yk_coord *co, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void stranger_warn(yk_coord *co, const char *fmt, ...) {
  uint64_t now = yk_now_ns();
  stranger_flush(co, now);
  if (co->stranger_logged >= STRANGER_LINES) {
    co->stranger_quiet++;
    return;
  }
  if (!co->stranger_logged) co->stranger_window_ns = now;
  co->stranger_logged++;
  char line[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (co->stranger_logged < STRANGER_LINES) YK_WARN(co->log, "coordinator: %s", line);
  else YK_WARN(co->log, "coordinator: %s (refusals like it in the next %d s are only counted)", line,
               STRANGER_WINDOW_MS / 1000);
}

/* now = UINT64_MAX: the coordinator closes; say the count whatever the window. */
static void stranger_flush(yk_coord *co, uint64_t now) {
  if (!co->stranger_logged) return;
  if (now != UINT64_MAX && (now - co->stranger_window_ns) / 1000000 < STRANGER_WINDOW_MS) return;
  if (co->stranger_quiet)
    YK_WARN(co->log, "coordinator: refused %lld more connections that sent no valid frame in %.1f s (not shown one "
            "by one; a port scanner, or a peer with another job secret?)", co->stranger_quiet,
            (double)((now == UINT64_MAX ? yk_now_ns() : now) - co->stranger_window_ns) / 1e9);
  co->stranger_logged = 0;
  co->stranger_quiet = 0;
}

static int count_state(const yk_coord *co, int state) {
  int n = 0;
  for (int i = 0; i < co->world; i++) n += co->m[i].state == state;
  return n;
}

int yk_coord_port(const yk_coord *c) { return c->port; }

int yk_coord_live(const yk_coord *co) {
  int n = 0;
  for (int i = 0; i < co->world + co->njoin; i++) n += co->m[i].state == YK_MEMBER_REGISTERED;
  return n;
}

int yk_coord_finished(const yk_coord *co, int *code) {
  if (code) *code = co->exit_code;
  return (co->started || co->aborted) && count_state(co, YK_MEMBER_REGISTERED) == 0;
}

static void conn_unlink(cconn *cc) {
  yk_coord *co = cc->co;
  if (cc->prev) cc->prev->next = cc->next;
  else co->conns = cc->next;
  if (cc->next) cc->next->prev = cc->prev;
  cc->prev = cc->next = NULL;
}

static void maybe_free(yk_coord *co);

static void after_shutdown(uv_shutdown_t *req, int status) {
  ykd_conn *c = req->handle->data;
  free(req);
  ykd_conn_close(c, 0);
}

static void send_err(cconn *cc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void send_err(cconn *cc, const char *fmt, ...) {
  yk_msg e = {0};
  e.type = YK_MSG_ERROR;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e.text, sizeof e.text, fmt, ap);
  va_end(ap);
  if (cc->authed) YK_WARN(cc->co->log, "coordinator: refused %s: %s", cc->c.peer, e.text);
  else stranger_warn(cc->co, "refused %s: %s", cc->c.peer, e.text);
  ykd_conn_send(&cc->c, &e);
  /* Let the ERROR frame go out before closing: uv_close would cancel it. */
  cc->c.draining = 1;
  uv_read_stop((uv_stream_t *)&cc->c.tcp);
  uv_shutdown_t *sr = malloc(sizeof *sr);
  if (!sr || uv_shutdown(sr, (uv_stream_t *)&cc->c.tcp, after_shutdown) != 0) {
    free(sr);
    ykd_conn_close(&cc->c, 0);
  }
}

static void broadcast(yk_coord *co, yk_msg *m, int except) {
  for (int i = 0; i < co->world; i++) {
    member *mb = &co->m[i];
    if (i == except || mb->state != YK_MEMBER_REGISTERED || !mb->conn) continue;
    yk_msg copy = *m;
    ykd_conn_send(&mb->conn->c, &copy);
  }
}

/* Abort the job: tell every live rank why. Only the first cause counts. */
static void abort_job(yk_coord *co, int code, int dead_rank, const char *reason) {
  if (co->aborted) return;
  co->aborted = 1;
  co->exit_code = code;
  yk_msg m = {0};
  if (dead_rank >= 0) {
    m.type = YK_MSG_PEER_DEAD;
    m.rank = dead_rank;
    snprintf(m.host, sizeof m.host, "%s", co->m[dead_rank].host);
  } else {
    m.type = YK_MSG_SHUTDOWN;
    m.code = code;
  }
  snprintf(m.text, sizeof m.text, "%.1000s", reason);
  broadcast(co, &m, dead_rank);
}

void yk_coord_abort(yk_coord *co, int code, const char *reason) {
  /* a user's stop (130) is not a failure; the launcher's last line reads it as one neither */
  if (code == YK_EXIT_SIGINT) YK_WARN(co->log, "coordinator: ending the job: %s", reason);
  else YK_ERROR(co->log, "coordinator: ending the job: %s", reason);
  abort_job(co, code, -1, reason);
}

int yk_coord_dead_cause(const yk_coord *co, char *why, size_t cap) {
  if (co->cause_rank >= 0 && why && cap) snprintf(why, cap, "%s", co->cause);
  return co->cause_rank;
}

int yk_coord_progress(const yk_coord *co, yk_step_stats *first, yk_step_stats *last) {
  *first = co->m[0].first;
  *last = co->m[0].rep;
  return first->step > 0;
}

void yk_coord_missing(const yk_coord *co, char *out, size_t cap) {
  int missing = co->world - co->n_registered;
  size_t n = (size_t)snprintf(out, cap, "%d of %d ranks never registered:", missing, co->world);
  int shown = 0;
  for (int i = 0; i < co->world && n < cap; i++)
    if (co->m[i].state == YK_MEMBER_EMPTY) {
      if (shown++ == 16) {
        snprintf(out + n, cap - n, " ...");
        break;
      }
      n += (size_t)snprintf(out + n, cap - n, " %d", i);
    }
}

/* The members of the new epoch, in order: every live member (but `drain`)
 * keeps its relative order, then the joiners. A REFORM tells each its new
 * rank (and a drained member rank -1: leave at the next step boundary).
 * docs/elasticity.md. */
static void reform(yk_coord *co, int cause, const char *why) {
  member *nm = calloc((size_t)co->cap, sizeof *nm);
  yk_msg_member *mm = calloc((size_t)co->cap, sizeof *mm);
  if (!nm || !mm) {
    free(nm);
    free(mm);
    abort_job(co, YK_EXIT_FAILURE, -1, "coordinator out of memory re-forming the job");
    return;
  }
  int n = 0, nleave = 0;
  cconn **leaver = calloc((size_t)co->cap, sizeof *leaver);
  if (!leaver) {
    free(nm);
    free(mm);
    abort_job(co, YK_EXIT_FAILURE, -1, "coordinator out of memory re-forming the job");
    return;
  }
  for (int i = 0; i < co->world + co->njoin; i++) {
    member *mb = &co->m[i];
    int drain = mb->drain && mb->state == YK_MEMBER_REGISTERED;
    if (drain && mb->conn) {
      leaver[nleave++] = mb->conn;
      mb->conn->rank = -1;
      mb->conn->leaving = 1;
    }
    if (mb->state != YK_MEMBER_REGISTERED || drain) {
      free(mb->addr);
      free(mb->xblob);
      continue;
    }
    free(mb->xblob);
    mb->xblob = NULL;
    mb->xgot = 0;
    nm[n] = *mb;
    if (nm[n].conn) nm[n].conn->rank = n;
    n++;
  }
  free(co->m);
  co->m = nm;
  co->world = n;
  co->n_registered = n;
  co->njoin = 0;
  co->xround = 0;
  co->epoch++;
  for (int i = 0; i < n; i++) {
    mm[i].rank = i;
    mm[i].pid = nm[i].pid;
    snprintf(mm[i].host, sizeof mm[i].host, "%s", nm[i].host);
    mm[i].addr = nm[i].addr;
    mm[i].addr_len = nm[i].addr_len;
  }
  yk_msg w = {0};
  w.type = YK_MSG_REFORM;
  w.world = n;
  w.epoch = co->epoch;
  w.job_id = co->job_id;
  w.code = cause;
  snprintf(w.text, sizeof w.text, "%.1000s", why);
  w.n_members = (uint32_t)n;
  w.members = mm;
  for (int i = 0; i < n; i++) {
    if (!nm[i].conn) continue;
    yk_msg c = w;
    c.rank = i;
    ykd_conn_send(&nm[i].conn->c, &c);
  }
  for (int i = 0; i < nleave; i++) {
    yk_msg c = w;
    c.rank = -1;
    ykd_conn_send(&leaver[i]->c, &c);
  }
  free(leaver);
  free(mm);
  co->drain_due_ns = 0;
  int64_t top = 0;
  for (int i = 0; i < n; i++)
    if (nm[i].rep.step > top) top = nm[i].rep.step;
  int h = co->nhist++ % YK_PROTO_MAX_CHANGES;
  co->hist[h].epoch = co->epoch;
  co->hist[h].seconds = -1;
  snprintf(co->hist[h].cause, sizeof co->hist[h].cause, "%.250s", why);
  co->hist_t0[h] = yk_now_ns();
  co->hist_step[h] = top;
  YK_WARN(co->log, "coordinator: epoch %u: %d ranks (%s)", co->epoch, n, why);
}

/* A member reported `step`: the changes it is the first step after are
 * over. A step redone after a failure is reported again with the same
 * number: only a step beyond every one reported before the change counts. */
static void note_progress(yk_coord *co, int64_t step) {
  int first = co->nhist > YK_PROTO_MAX_CHANGES ? co->nhist - YK_PROTO_MAX_CHANGES : 0;
  for (int k = first; k < co->nhist; k++) {
    int h = k % YK_PROTO_MAX_CHANGES;
    if (co->hist[h].seconds >= 0 || step <= co->hist_step[h]) continue;
    co->hist[h].seconds = (double)(yk_now_ns() - co->hist_t0[h]) / 1e9;
    co->recovery_s += co->hist[h].seconds;
  }
}

static void declare_dead(yk_coord *co, int rank, const char *why) {
  member *mb = &co->m[rank];
  if (mb->state != YK_MEMBER_REGISTERED) return;
  mb->state = YK_MEMBER_DEAD;
  if (mb->conn) {
    mb->conn->rank = -1;
    ykd_conn_close(&mb->conn->c, 0);
    mb->conn = NULL;
  }
  char reason[512];
  snprintf(reason, sizeof reason, "rank %d (host %s, pid %u) died: %s", rank, mb->host, mb->pid, why);
  if (co->aborted) {
    YK_INFO(co->log, "coordinator: %s (job already ending)", reason);
    return;
  }
  if (co->elastic && co->started && count_state(co, YK_MEMBER_REGISTERED) > 0) {
    YK_WARN(co->log, "coordinator: %s; re-forming the job without it", reason);
    reform(co, YK_REFORM_FAILURE, reason);
    return;
  }
  YK_ERROR(co->log, "coordinator: %s; ending the job", reason);
  co->cause_rank = rank;
  snprintf(co->cause, sizeof co->cause, "%s", reason);
  abort_job(co, YK_EXIT_PEER_DEAD, rank, reason);
}

/* The registered rank other than `except` that has been silent longest,
 * if that is over two heartbeat intervals (its control thread, which
 * heartbeats whatever the step does, is not running), else -1. */
static int silent_member(const yk_coord *co, int except) {
  uint64_t now = yk_now_ns(), oldest = 0;
  int who = -1;
  for (int i = 0; i < co->world; i++) {
    const member *mb = &co->m[i];
    if (i == except || mb->state != YK_MEMBER_REGISTERED) continue;
    uint64_t age_ms = (now - mb->last_hb_ns) / 1000000;
    if (age_ms > (uint64_t)(2 * co->hb_ms) && age_ms > oldest) oldest = age_ms, who = i;
  }
  return who;
}

/* A rank failed (pend_*). A rank that hangs (SIGSTOP, a stuck kernel
 * call) keeps its sockets open, so its peers only see their waits on it time
 * out (comm.timeout_ms), and a peer of those peers blames the rank that timed
 * out, alive but blocked; which of them fails first is a race. The hung one
 * is the rank whose heartbeats stopped while the others' kept coming: if one
 * has been silent for two heartbeat intervals it is named as the cause;
 * else the verdict waits until one is, or until two intervals have passed
 * since the failure (then the failure itself is the cause). Called on the
 * failure and from the timer. */
static void on_failure(yk_coord *co) {
  if (co->pend_rank < 0 || co->aborted) return;
  int silent = silent_member(co, co->pend_rank);
  if (silent >= 0) {
    char why[YK_PROTO_MAX_TEXT + 160];
    snprintf(why, sizeof why, "no heartbeat for %llu ms (hung or stopped?) while rank %d failed: %s",
             (unsigned long long)((yk_now_ns() - co->m[silent].last_hb_ns) / 1000000), co->pend_rank, co->pend_msg);
    declare_dead(co, silent, why);
  } else if ((yk_now_ns() - co->pend_t0) / 1000000 > (uint64_t)(2 * co->hb_ms)) {
    YK_ERROR(co->log, "coordinator: %s; ending the job", co->pend_text);
    abort_job(co, co->pend_code, -1, co->pend_text);
  }
}

/* elastic: the job starts without the ranks that died before registering:
 * the registered ones, in order, renumbered 0..n-1. */
static void drop_gone(yk_coord *co) {
  int n = 0;
  for (int i = 0; i < co->world; i++) {
    if (co->m[i].state != YK_MEMBER_REGISTERED) {
      free(co->m[i].addr);
      continue;
    }
    if (n != i) {
      co->m[n] = co->m[i];
      memset(&co->m[i], 0, sizeof co->m[i]);
    }
    if (co->m[n].conn) co->m[n].conn->rank = n;
    n++;
  }
  YK_WARN(co->log, "coordinator: %d of %d ranks died before registering; the elastic job starts with %d", co->gone,
          co->world, n);
  co->world = n;
  co->gone = 0;
}

static void send_welcome(yk_coord *co);

void yk_coord_rank_gone(yk_coord *co, int rank) {
  if (!co->elastic || co->started || co->aborted || rank < 0 || rank >= co->world) return;
  if (co->m[rank].state != YK_MEMBER_EMPTY) return; /* registered: its connection tells */
  co->m[rank].state = YK_MEMBER_DEAD;
  co->gone++;
  if (co->n_registered + co->gone == co->world) {
    if (co->n_registered == 0) {
      abort_job(co, YK_EXIT_PEER_DEAD, -1, "every rank died before registering");
      return;
    }
    send_welcome(co);
  }
}

static void send_welcome(yk_coord *co) {
  if (co->gone) drop_gone(co);
  yk_msg_member *mm = calloc((size_t)co->world, sizeof *mm);
  if (!mm) {
    YK_ERROR(co->log, "coordinator: out of memory building WELCOME");
    abort_job(co, YK_EXIT_FAILURE, -1, "coordinator out of memory");
    return;
  }
  for (int i = 0; i < co->world; i++) {
    mm[i].rank = i;
    mm[i].pid = co->m[i].pid;
    snprintf(mm[i].host, sizeof mm[i].host, "%s", co->m[i].host);
    mm[i].addr = co->m[i].addr;
    mm[i].addr_len = co->m[i].addr_len;
  }
  for (int i = 0; i < co->world; i++) {
    if (!co->m[i].conn) continue;
    yk_msg w = {0};
    w.type = YK_MSG_WELCOME;
    w.rank = i;
    w.world = co->world;
    w.epoch = co->epoch;
    w.job_id = co->job_id;
    w.n_members = (uint32_t)co->world;
    w.members = mm;
    int rc = ykd_conn_send(&co->m[i].conn->c, &w);
    if (rc) YK_WARN(co->log, "coordinator: WELCOME to rank %d failed: %s", i, yk_strerror(rc));
  }
  free(mm);
  co->started = 1;
  YK_INFO(co->log, "coordinator: all %d ranks registered; job %016llx epoch %u started", co->world,
          (unsigned long long)co->job_id, co->epoch);
}

/* A registering rank's facts into its member slot (address copied). */
static int member_take(member *mb, cconn *cc, const yk_msg *m) {
  uint8_t *addr = NULL;
  if (m->blob_len) {
    if (!(addr = malloc(m->blob_len))) return YK_ENOMEM;
    memcpy(addr, m->blob, m->blob_len);
  }
  free(mb->addr);
  mb->addr = addr;
  mb->addr_len = m->blob_len;
  mb->state = YK_MEMBER_REGISTERED;
  snprintf(mb->host, sizeof mb->host, "%s", m->host);
  mb->pid = m->pid;
  mb->last_hb_ns = yk_now_ns();
  mb->conn = cc;
  return 0;
}

/* elastic: a rank joining a running job (REGISTER with world 0). It waits in
 * m[world + njoin] for the next epoch, which starts at once: the members
 * re-form at their next step boundary. */
static void on_join(cconn *cc, const yk_msg *m) {
  yk_coord *co = cc->co;
  if (!co->elastic)
    return send_err(cc, "%s pid %u asks to join, but this job is not elastic (set elastic.enabled: true)", m->host,
                    m->pid);
  if (co->aborted) return send_err(cc, "the job is ending; not accepting ranks");
  if (co->started && count_state(co, YK_MEMBER_REGISTERED) == 0)
    return send_err(cc, "the job has no live rank left (it finished or ended); nothing to join");
  if (co->world + co->njoin >= co->cap)
    return send_err(cc, "the job already has %d ranks, elastic.max_ranks is %d", co->world + co->njoin, co->cap);
  member *mb = &co->m[co->world + co->njoin];
  memset(mb, 0, sizeof *mb);
  if (member_take(mb, cc, m)) return send_err(cc, "coordinator out of memory");
  cc->rank = co->world + co->njoin;
  co->njoin++;
  char why[400];
  snprintf(why, sizeof why, "%s pid %u joined", m->host, m->pid);
  YK_INFO(co->log, "coordinator: %s (%s); the job grows to %d ranks at the next step boundary", why, cc->c.peer,
          co->world + co->njoin);
  if (co->started) reform(co, YK_REFORM_JOIN, why);
}

static void on_register(cconn *cc, const yk_msg *m) {
  yk_coord *co = cc->co;
  if (cc->rank >= 0 || cc->leaving) return send_err(cc, "second REGISTER on one connection");
  if (m->world == 0 && m->rank < 0) return on_join(cc, m);
  if (m->world != co->world)
    return send_err(cc, "rank %d from %s says the world is %d ranks, the coordinator expects %d", m->rank, m->host,
                    m->world, co->world);
  if (co->aborted) return send_err(cc, "the job is ending; not accepting ranks");
  int r = m->rank;
  if (r < 0) {
    for (int i = 0; i < co->world && r < 0; i++)
      if (co->m[i].state == YK_MEMBER_EMPTY) r = i;
    if (r < 0) return send_err(cc, "all %d ranks are taken", co->world);
  }
  if (r >= co->world) return send_err(cc, "rank %d is outside the world of %d ranks", r, co->world);
  member *mb = &co->m[r];
  if (mb->state == YK_MEMBER_REGISTERED)
    return send_err(cc, "rank %d is already registered by %s pid %u", r, mb->host, mb->pid);
  if (mb->state != YK_MEMBER_EMPTY)
    return send_err(cc, "rank %d already left the job (rejoining needs elasticity)", r);
  if (member_take(mb, cc, m)) return send_err(cc, "coordinator out of memory");
  cc->rank = r;
  co->n_registered++;
  YK_INFO(co->log, "coordinator: rank %d registered from %s pid %u (%s), %d/%d", r, m->host, m->pid, cc->c.peer,
          co->n_registered, co->world);
  if (co->n_registered + co->gone == co->world) send_welcome(co);
}

static void on_exchange(cconn *cc, const yk_msg *m) {
  yk_coord *co = cc->co;
  if (!co->started) return send_err(cc, "EXCHANGE before every rank registered");
  member *mb = &co->m[cc->rank];
  if (m->epoch != co->epoch) {
    /* sent before the rank read the REFORM that started this epoch: it
     * abandons that all-gather when it reads it */
    YK_DEBUG(co->log, "coordinator: dropping rank %d's EXCHANGE of epoch %u (now %u)", cc->rank, m->epoch, co->epoch);
    return;
  }
  if (cc->rank >= co->world) return send_err(cc, "EXCHANGE from a joiner before its epoch");
  if (m->round != co->xround)
    return send_err(cc, "rank %d sent EXCHANGE round %u, the coordinator is at round %u", cc->rank, m->round,
                    co->xround);
  if (mb->xgot) return send_err(cc, "rank %d sent EXCHANGE round %u twice", cc->rank, m->round);
  for (int i = 0; i < co->world; i++)
    if (co->m[i].xgot && co->m[i].xlen != m->blob_len)
      return send_err(cc, "rank %d sent a %u-byte EXCHANGE blob, rank %d sent %u bytes", cc->rank, m->blob_len, i,
                      co->m[i].xlen);
  mb->xblob = malloc(m->blob_len ? m->blob_len : 1);
  if (!mb->xblob) return send_err(cc, "coordinator out of memory");
  memcpy(mb->xblob, m->blob, m->blob_len);
  mb->xlen = m->blob_len;
  mb->xgot = 1;
  for (int i = 0; i < co->world; i++)
    if (!co->m[i].xgot) return;
  if (co->world <= 0) return;
  yk_msg_member *mm = calloc((size_t)co->world, sizeof *mm);
  if (!mm) return send_err(cc, "coordinator out of memory");
  for (int i = 0; i < co->world; i++) {
    mm[i].addr = co->m[i].xblob;
    mm[i].addr_len = co->m[i].xlen;
  }
  yk_msg all = {0};
  all.type = YK_MSG_EXCHANGE_ALL;
  all.round = co->xround;
  all.n_members = (uint32_t)co->world;
  all.members = mm;
  broadcast(co, &all, -1);
  free(mm);
  for (int i = 0; i < co->world; i++) {
    free(co->m[i].xblob);
    co->m[i].xblob = NULL;
    co->m[i].xgot = 0;
  }
  YK_DEBUG(co->log, "coordinator: exchange round %u complete", co->xround);
  co->xround++;
}

static void on_status(cconn *cc) {
  yk_coord *co = cc->co;
  yk_msg_member *mm = calloc((size_t)co->world, sizeof *mm);
  if (!mm) return send_err(cc, "coordinator out of memory");
  uint64_t now = yk_now_ns();
  for (int i = 0; i < co->world; i++) {
    member *mb = &co->m[i];
    mm[i].rank = i;
    mm[i].pid = mb->pid;
    mm[i].state = (uint8_t)mb->state;
    snprintf(mm[i].host, sizeof mm[i].host, "%s", mb->host);
    uint64_t age = mb->state == YK_MEMBER_EMPTY ? 0 : (now - mb->last_hb_ns) / 1000000;
    mm[i].hb_age_ms = age > UINT32_MAX ? UINT32_MAX : (uint32_t)age;
    mm[i].rep = mb->rep;
  }
  yk_msg s = {0};
  s.type = YK_MSG_STATUS;
  s.job_id = co->job_id;
  s.epoch = co->epoch;
  s.world = co->world;
  s.alive = count_state(co, YK_MEMBER_REGISTERED);
  s.n_members = (uint32_t)co->world;
  s.members = mm;
  int first = co->nhist > YK_PROTO_MAX_CHANGES ? co->nhist - YK_PROTO_MAX_CHANGES : 0;
  for (int k = first; k < co->nhist; k++) s.changes[s.n_changes++] = co->hist[k % YK_PROTO_MAX_CHANGES];
  s.recovery_s = co->recovery_s;
  ykd_conn_send(&cc->c, &s);
  free(mm);
}

static void on_status(cconn *cc);

/* Every registered rank's latest report, for the straggler warning. */
static void note_straggler(yk_coord *co) {
  yk_step_stats *reps = malloc((size_t)co->world * sizeof *reps);
  int *live = malloc((size_t)co->world * sizeof *live);
  for (int i = 0; reps && live && i < co->world; i++) {
    reps[i] = co->m[i].rep;
    live[i] = co->m[i].state == YK_MEMBER_REGISTERED;
  }
  if (reps && live) ykd_straggler_note(&co->strag, reps, live, co->world, co->log);
  free(reps);
  free(live);
}

static void on_request(cconn *cc, const yk_msg *m) {
  yk_coord *co = cc->co;
  char who[400], reason[YK_PROTO_MAX_TEXT + 1];
  if (cc->rank >= 0)
    snprintf(who, sizeof who, "rank %d (host %s)", cc->rank, co->m[cc->rank].host);
  else
    snprintf(who, sizeof who, "%s", cc->c.peer);
  if (m->action == YK_REQ_CHECKPOINT) {
    if (!co->ckpt_sent && !co->aborted) {
      co->ckpt_sent = 1;
      yk_msg b = {0};
      b.type = YK_MSG_CHECKPOINT;
      b.code = YK_EXIT_REQUEUE;
      snprintf(reason, sizeof reason, "checkpoint requested by %.300s: %.600s", who, m->text);
      snprintf(b.text, sizeof b.text, "%s", reason);
      YK_WARN(co->log, "coordinator: %s; telling every rank", reason);
      broadcast(co, &b, -1);
    }
  } else if (m->action == YK_REQ_DRAIN) {
    int r = m->code;
    if (!co->elastic) return send_err(cc, "drain needs an elastic job (elastic.enabled: true)");
    if (r < 0 || r >= co->world || co->m[r].state != YK_MEMBER_REGISTERED)
      return send_err(cc, "cannot drain rank %d: the job's ranks are 0..%d", r, co->world - 1);
    if (cc->rank == r) {
      /* its own SIGTERM: a preemption of the whole job sends one to every
       * rank at once, which must checkpoint rather than drain one by one */
      co->m[r].drain_self = 1;
      if (!co->drain_due_ns) co->drain_due_ns = yk_now_ns() + DRAIN_BATCH_MS * 1000000ull;
      YK_INFO(co->log, "coordinator: rank %d asks to leave (%.300s)", r, m->text);
      return;
    }
    if (co->world == 1) return send_err(cc, "cannot drain rank %d: it is the job's last rank", r);
    snprintf(reason, sizeof reason, "rank %d (host %.255s) drained by %.300s", r, co->m[r].host, who);
    co->m[r].drain = 1;
    reform(co, YK_REFORM_DRAIN, reason);
  } else if (m->action == YK_REQ_STOP) {
    snprintf(reason, sizeof reason, "stop requested by %.300s: %.600s", who, m->text);
    yk_coord_abort(co, YK_EXIT_SIGINT, reason);
  } else {
    return send_err(cc, "unknown REQUEST action %d (1 = checkpoint, 2 = stop, 3 = drain)", m->action);
  }
  if (cc->rank < 0) on_status(cc); /* an operator's request is answered with the job's state */
}

/* elastic: the job finished while ranks that joined at its last boundary
 * (none has completed a step) wait for their first epoch: tell them, or
 * they would wait out their deadline for members that are gone. */
static void end_late_joiners(yk_coord *co) {
  int live = 0, stepped = 0;
  for (int i = 0; i < co->world + co->njoin; i++)
    if (co->m[i].state == YK_MEMBER_REGISTERED) live++, stepped += co->m[i].rep.step > 0;
  if (!live || stepped) return;
  yk_msg b = {0};
  b.type = YK_MSG_SHUTDOWN;
  b.code = YK_EXIT_FAILURE;
  snprintf(b.text, sizeof b.text, "the job finished (its last member left) before this rank could join it");
  YK_WARN(co->log, "coordinator: the job finished; telling %d rank(s) that joined too late", live);
  for (int i = 0; i < co->world + co->njoin; i++)
    if (co->m[i].state == YK_MEMBER_REGISTERED && co->m[i].conn) {
      yk_msg c = b;
      ykd_conn_send(&co->m[i].conn->c, &c);
    }
}

static void on_msg(ykd_conn *c, const yk_msg *m) {
  cconn *cc = (cconn *)c;
  yk_coord *co = cc->co;
  cc->authed = 1;
  if (cc->rank >= 0) co->m[cc->rank].last_hb_ns = yk_now_ns();
  switch (m->type) {
  case YK_MSG_REGISTER:
    on_register(cc, m);
    return;
  case YK_MSG_STATUS_REQ:
    on_status(cc);
    return;
  case YK_MSG_REQUEST:
    on_request(cc, m);
    return;
  default:
    break;
  }
  if (cc->rank < 0 && cc->leaving) {
    /* a drained rank finishing its last step: its heartbeats and its BYE */
    if (m->type == YK_MSG_BYE) {
      YK_INFO(co->log, "coordinator: drained %s left (code %d)", cc->c.peer, m->code);
      cc->leaving = 0;
    }
    return;
  }
  if (cc->rank < 0)
    return send_err(cc, "%s from a connection that has not registered", yk_msg_type_name(m->type));
  member *mb = &co->m[cc->rank];
  switch (m->type) {
  case YK_MSG_HEARTBEAT: {
    mb->rep = m->rep;
    /* the earliest step reported: a periodic heartbeat may overtake the first report */
    if (m->rep.step > 0 && (mb->first.step <= 0 || m->rep.step < mb->first.step)) mb->first = m->rep;
    if (co->nhist && cc->rank < co->world) note_progress(co, m->rep.step);
    note_straggler(co);
    yk_msg a = {0};
    a.type = YK_MSG_HEARTBEAT_ACK;
    a.epoch = co->epoch;
    a.alive = count_state(co, YK_MEMBER_REGISTERED);
    ykd_conn_send(c, &a);
    return;
  }
  case YK_MSG_BYE: {
    int r = cc->rank;
    mb->state = YK_MEMBER_DONE;
    mb->exit_code = m->code;
    mb->conn = NULL;
    cc->rank = -1;
    if (m->code == 0) {
      YK_INFO(co->log, "coordinator: rank %d (%s) finished", r, mb->host);
      if (co->elastic) end_late_joiners(co);
    } else if (co->elastic && co->started && !co->aborted && m->code != YK_EXIT_USAGE && m->code != YK_EXIT_SIGINT &&
               m->code != YK_EXIT_REQUEUE && m->code != YK_EXIT_SIGTERM && count_state(co, YK_MEMBER_REGISTERED) > 0) {
      /* (a stop the ranks agreed on - 75, 130, 143 - ends the job, it is no departure) */
      /* elastic: a rank that failed leaves; the others go on without it */
      char reason[YK_PROTO_MAX_TEXT + YK_PROTO_MAX_HOST + 64];
      snprintf(reason, sizeof reason, "rank %d (host %s) failed with code %d: %s", r, mb->host, m->code, m->text);
      mb->state = YK_MEMBER_DEAD;
      YK_WARN(co->log, "coordinator: %s; re-forming the job without it", reason);
      reform(co, YK_REFORM_FAILURE, reason);
    } else if (m->code == YK_EXIT_REQUEUE || co->aborted) {
      YK_INFO(co->log, "coordinator: rank %d (%s) left with code %d: %s", r, mb->host, m->code, m->text);
      if (!co->exit_code) co->exit_code = m->code;
    } else {
      char reason[YK_PROTO_MAX_TEXT + YK_PROTO_MAX_HOST + 64];
      /* A rank stopped by SIGINT (130) ends the job too, but a user's stop
       * is not a failure. */
      int stop = m->code == YK_EXIT_SIGINT;
      snprintf(reason, sizeof reason, "rank %d (host %s) %s with code %d: %s", r, mb->host, stop ? "stopped" : "failed",
               m->code, m->text);
      if (stop) {
        YK_WARN(co->log, "coordinator: %s; ending the job", reason);
        abort_job(co, m->code, -1, reason);
      } else if (co->pend_rank < 0) {
        co->pend_rank = r;
        co->pend_code = m->code;
        co->pend_t0 = yk_now_ns();
        snprintf(co->pend_text, sizeof co->pend_text, "%s", reason);
        snprintf(co->pend_msg, sizeof co->pend_msg, "%s", m->text);
        on_failure(co);
      }
    }
    return;
  }
  case YK_MSG_EXCHANGE:
    on_exchange(cc, m);
    return;
  default:
    send_err(cc, "unexpected %s from rank %d", yk_msg_type_name(m->type), cc->rank);
  }
}

static void on_refuse(ykd_conn *c, int code, const char *why) {
  cconn *cc = (cconn *)c;
  if (cc->rank >= 0)
    YK_WARN(cc->co->log, "coordinator: refused a frame from rank %d at %s: %s; dropping the connection", cc->rank,
            c->peer, why);
  else if (cc->authed)
    YK_WARN(cc->co->log, "coordinator: refused %s: %s; dropping the connection", c->peer, why);
  else
    stranger_warn(cc->co, "refused %s: %s; dropping the connection", c->peer, why);
}

static void on_close(ykd_conn *c, int err) {
  cconn *cc = (cconn *)c;
  yk_coord *co = cc->co;
  if (!cc->authed && !co->closing && c->rlen == 0 && err)
    stranger_warn(co, "%s hung up without sending a frame (a peer with another job secret?)", c->peer);
  if (cc->rank >= 0 && co->m[cc->rank].conn == cc) {
    char why[128];
    snprintf(why, sizeof why, "connection lost (%s)", err ? uv_strerror(err) : "closed");
    co->m[cc->rank].conn = NULL;
    declare_dead(co, cc->rank, why);
  }
  conn_unlink(cc);
  free(cc);
  maybe_free(co);
}

static const ykd_conn_cbs coord_cbs = {on_msg, on_refuse, on_close};

static void on_connection(uv_stream_t *server, int status) {
  yk_coord *co = server->data;
  if (status < 0 || co->closing) return;
  cconn *cc = calloc(1, sizeof *cc);
  if (!cc) return;
  cc->co = co;
  cc->rank = -1;
  if (ykd_conn_init(co->loop, &cc->c, co, &coord_cbs, co->key, co->key_len)) {
    free(cc);
    return;
  }
  cc->next = co->conns;
  if (co->conns) co->conns->prev = cc;
  co->conns = cc;
  cc->c.server_side = 1;
  if (uv_accept(server, (uv_stream_t *)&cc->c.tcp) || ykd_conn_start(&cc->c)) {
    ykd_conn_close(&cc->c, 0);
    return;
  }
  ykd_random(cc->c.session, 8);
  yk_msg ch = {0};
  ch.type = YK_MSG_CHALLENGE;
  ykd_conn_send(&cc->c, &ch);
}

/* Ranks that asked to leave (SIGTERM) within DRAIN_BATCH_MS: they drain,
 * unless that leaves nobody, which is a preemption of the whole job: every
 * rank checkpoints and exits 75. */
static void decide_drains(yk_coord *co) {
  co->drain_due_ns = 0;
  int asked = 0, live = 0;
  char who[256] = "";
  size_t n = 0;
  for (int i = 0; i < co->world; i++) {
    member *mb = &co->m[i];
    if (mb->state != YK_MEMBER_REGISTERED) continue;
    live++;
    if (!mb->drain_self) continue;
    asked++;
    if (n < sizeof who - 16) n += (size_t)snprintf(who + n, sizeof who - n, "%s%d", asked > 1 ? ", " : "", i);
  }
  if (!asked) return;
  if (asked >= live) {
    for (int i = 0; i < co->world; i++) co->m[i].drain_self = 0;
    if (co->ckpt_sent || co->aborted) return;
    co->ckpt_sent = 1;
    yk_msg b = {0};
    b.type = YK_MSG_CHECKPOINT;
    b.code = YK_EXIT_REQUEUE;
    snprintf(b.text, sizeof b.text, "SIGTERM on every rank (%s)", who);
    YK_WARN(co->log, "coordinator: %s: checkpoint and exit 75, as a preemption", b.text);
    broadcast(co, &b, -1);
    return;
  }
  for (int i = 0; i < co->world; i++) {
    if (co->m[i].state == YK_MEMBER_REGISTERED && co->m[i].drain_self) co->m[i].drain = 1;
    co->m[i].drain_self = 0;
  }
  char reason[320];
  snprintf(reason, sizeof reason, "rank(s) %s leave on SIGTERM", who);
  reform(co, YK_REFORM_DRAIN, reason);
}

static void on_timer(uv_timer_t *t) {
  yk_coord *co = t->data;
  uint64_t now = yk_now_ns();
  stranger_flush(co, now);
  on_failure(co);
  for (int i = 0; i < co->world + co->njoin; i++) {
    member *mb = &co->m[i];
    if (mb->state != YK_MEMBER_REGISTERED) continue;
    uint64_t age_ms = (now - mb->last_hb_ns) / 1000000;
    if ((int64_t)age_ms > co->hb_timeout_ms) {
      char why[128];
      snprintf(why, sizeof why, "no heartbeat for %llu ms (coord.heartbeat_timeout_ms=%lld)",
               (unsigned long long)age_ms, (long long)co->hb_timeout_ms);
      declare_dead(co, i, why);
    }
  }
  if (co->drain_due_ns && now >= co->drain_due_ns) decide_drains(co);
  for (cconn *cc = co->conns, *next; cc; cc = next) {
    next = cc->next;
    if (!cc->authed && !cc->c.closing && (now - cc->c.opened_ns) / 1000000 > UNAUTH_TIMEOUT_MS) {
      stranger_warn(co, "refused %s: no valid frame within %d ms; dropping the connection", cc->c.peer,
                    UNAUTH_TIMEOUT_MS);
      ykd_conn_close(&cc->c, 0);
    }
  }
}

int yk_coord_start(uv_loop_t *loop, const yk_coord_opts *o, yk_coord **out, yk_diag *d) {
  *out = NULL;
  if (o->world < 1 || o->world > YK_PROTO_MAX_WORLD)
    return yk_errorf(d, YK_EINVAL, "coordinator world %d is not in [1, %d]", o->world, YK_PROTO_MAX_WORLD);
  if (o->key_len < 16 || o->key_len > YK_SECRET_MAX)
    return yk_errorf(d, YK_EINVAL, "coordinator secret of %zu bytes (need 16..%d)", o->key_len, YK_SECRET_MAX);
  yk_coord *co = calloc(1, sizeof *co);
  if (!co) return yk_errorf(d, YK_ENOMEM, "out of memory for the coordinator");
  co->elastic = o->elastic;
  co->cap = o->elastic && o->max_ranks > o->world ? o->max_ranks : o->world;
  co->m = calloc((size_t)co->cap, sizeof *co->m);
  if (!co->m) {
    free(co);
    return yk_errorf(d, YK_ENOMEM, "out of memory for %d members", o->world);
  }
  co->loop = loop;
  co->log = o->log;
  co->cause_rank = -1;
  co->pend_rank = -1;
  memcpy(co->key, o->key, o->key_len);
  co->key_len = o->key_len;
  co->world = o->world;
  co->epoch = 1;
  co->hb_timeout_ms = o->heartbeat_timeout_ms > 0 ? o->heartbeat_timeout_ms : 5000;
  co->hb_ms = o->heartbeat_ms > 0 ? o->heartbeat_ms : 1000;
  co->strag.warn_share = o->straggler_warn;
  co->job_id = o->job_id;
  while (!co->job_id) ykd_random(&co->job_id, sizeof co->job_id);

  const char *bind = o->bind_host ? o->bind_host : "0.0.0.0";
  struct sockaddr_storage ss;
  int rc = uv_ip4_addr(bind, o->port, (struct sockaddr_in *)&ss);
  if (rc) rc = uv_ip6_addr(bind, o->port, (struct sockaddr_in6 *)&ss);
  if (rc) {
    free(co->m);
    free(co);
    return yk_errorf(d, YK_ECONFIG, "coordinator bind address '%s' is not an IP address", bind);
  }
  uv_tcp_init(loop, &co->server);
  co->server.data = co;
  co->open_handles++;
  uv_timer_init(loop, &co->timer);
  co->timer.data = co;
  co->open_handles++;
  rc = uv_tcp_bind(&co->server, (struct sockaddr *)&ss, 0);
  if (!rc) rc = uv_listen((uv_stream_t *)&co->server, 128, on_connection);
  if (rc) {
    yk_errorf(d, rc == UV_EADDRINUSE ? YK_EBUSY : YK_ESYS,
              "coordinator cannot listen on %s:%d: %s (another job on this port? set coord.port)", bind, o->port,
              uv_strerror(rc));
    yk_coord_close(co);
    return d ? d->code : YK_ESYS;
  }
  int len = sizeof ss;
  uv_tcp_getsockname(&co->server, (struct sockaddr *)&ss, &len);
  co->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                           : ((struct sockaddr_in6 *)&ss)->sin6_port);
  uint64_t tick = (uint64_t)(co->hb_timeout_ms / 10);
  if (tick < 20) tick = 20;
  if (tick > 200) tick = 200;
  uv_timer_start(&co->timer, on_timer, tick, tick);
  YK_INFO(co->log, "coordinator: listening on %s:%d for %d ranks (heartbeat timeout %lld ms)", bind, co->port,
          co->world, (long long)co->hb_timeout_ms);
  *out = co;
  return 0;
}

static void maybe_free(yk_coord *co) {
  if (!co->closing || co->open_handles > 0 || co->conns) return;
  for (int i = 0; i < co->world + co->njoin; i++) {
    free(co->m[i].addr);
    free(co->m[i].xblob);
  }
  free(co->m);
  memset(co->key, 0, sizeof co->key);
  free(co);
}

static void on_handle_closed(uv_handle_t *h) {
  yk_coord *co = h->data;
  co->open_handles--;
  maybe_free(co);
}

void yk_coord_close(yk_coord *co) {
  if (!co || co->closing) return;
  stranger_flush(co, UINT64_MAX);
  co->closing = 1;
  uv_close((uv_handle_t *)&co->server, on_handle_closed);
  uv_close((uv_handle_t *)&co->timer, on_handle_closed);
  for (cconn *cc = co->conns; cc; cc = cc->next) {
    cc->rank = -1; /* closing on purpose: nobody died */
    ykd_conn_close(&cc->c, 0);
  }
}
