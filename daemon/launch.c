/* launch.c - `yoke launch -n N ...`: the local launcher (its command line is
 * parsed in cli/). It runs the
 * coordinator in its own libuv loop, starts N ranks of a yoke subcommand with
 * the YOKE_* launch variables, prefixes their output lines with [rN],
 * forwards SIGINT/SIGTERM, and exits with the first failure's code after
 * stopping the rest (grace, then SIGTERM, then SIGKILL). At a terminal it
 * draws the job's progress bar from rank 0's step reports to the
 * coordinator; it ends with one summary line of the job. */
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

extern char **environ;

typedef struct lrank lrank;
typedef struct launcher launcher;

typedef struct {
  uv_pipe_t pipe;
  lrank *r;
  int fd_out; /* 1 or 2 */
  char *line;
  size_t len, cap;
  int open;
} lpipe;

struct lrank {
  launcher *L;
  int rank;
  uv_process_t proc;
  lpipe out, err;
  int running;
  int proc_open;
  int code;
  int seq;           /* order of exit among the failed ranks, from 1 */
  int by_launcher;   /* exited after the launcher's own SIGTERM/SIGKILL */
};

struct launcher {
  uv_loop_t loop;
  yk_coord *co;
  uv_signal_t sint, sterm;
  uv_timer_t kill_timer;
  lrank *ranks;
  int n;
  int live;          /* processes not yet exited */
  int open_pipes;
  int first_code;    /* first failure's exit code */
  int first_rank;
  int kill_stage;    /* 0 none, 1 waiting grace, 2 SIGTERM sent, 3 SIGKILL sent */
  int64_t grace_ms;
  int signals;
  int first_signal;  /* the user's first signal to the launcher */
  int closed;
  int failed;        /* ranks that exited non-zero so far */
  int cause_rank;    /* the coordinator's dead rank (copied before it closes), -1: none */
  int elastic;       /* elastic.enabled: a rank's exit does not end the job */
  int members_wait;  /* elastic: our ranks are gone, others that joined still train */
  int job_done, job_code; /* the coordinator's view at the end: every member left, with this job code */
  uv_timer_t members_timer;
  char cause[512];
  const yk_logger *lg;
  /* progress, from rank 0's reports (yk_coord_progress) */
  uv_timer_t bar_timer;
  int bar;           /* stdout is a terminal and the run's steps are known: draw the bar */
  int err_tty;       /* stderr is that terminal too: erase the bar before its lines */
  int drawn;         /* bar_text is on the screen */
  int64_t steps;     /* the run's train.steps (0: not a `yoke train`) */
  uint64_t first_ns; /* when rank 0's first report was seen */
  char bar_text[192];
  int have_rep;      /* first, last: rank 0's first and last step reports */
  yk_step_stats first, last;
};

#define BAR_MS 250
static const char ERASE[] = "\r\033[K"; /* back to the line's start, clear it */

static void write_all(int fd, const char *p, size_t left) {
  while (left) {
    ssize_t k = write(fd, p, left);
    if (k <= 0) break;
    p += k;
    left -= (size_t)k;
  }
}

/* The bar is the terminal's last line: every other line erases it first
 * and draws it again after itself (the logger's lines erase it through
 * lg->lead; the next tick redraws it). */
static void bar_show(launcher *L, int on) {
  if (!L->drawn) return;
  char buf[sizeof L->bar_text + 16];
  int n = on ? snprintf(buf, sizeof buf, "\r%s\033[K", L->bar_text) : snprintf(buf, sizeof buf, "%s", ERASE);
  write_all(STDOUT_FILENO, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

static void on_bar_timer(uv_timer_t *t) {
  launcher *L = t->data;
  yk_step_stats f, s;
  if (!L->co || !yk_coord_progress(L->co, &f, &s)) return;
  uint64_t now = yk_now_ns();
  if (!L->first_ns) L->first_ns = now;
  char b[128];
  /* the rate since rank 0's first report, which came right after its first step */
  yk_progress_text(s.step, L->steps, f.step, (double)(now - L->first_ns) / 1e9, b, sizeof b);
  snprintf(L->bar_text, sizeof L->bar_text, "%s | loss %.4f | %.0f tok/s", b, s.loss, s.tokens_per_s);
  L->drawn = 1;
  bar_show(L, 1);
}

static void emit(launcher *L, int fd, int rank, const char *s, size_t n) {
  char pre[24];
  int pl = snprintf(pre, sizeof pre, "[r%d] ", rank);
  /* one write per line so lines from different ranks do not interleave */
  char *buf = malloc((size_t)pl + n + 1);
  if (!buf) return;
  memcpy(buf, pre, (size_t)pl);
  memcpy(buf + pl, s, n);
  buf[(size_t)pl + n] = '\n';
  int bar = fd == STDOUT_FILENO || L->err_tty;
  if (bar) bar_show(L, 0);
  write_all(fd, buf, (size_t)pl + n + 1);
  if (bar) bar_show(L, 1);
  free(buf);
}

static void maybe_finish(launcher *L);

static void pipe_closed(uv_handle_t *h) {
  lpipe *p = h->data;
  free(p->line);
  p->line = NULL;
  p->r->L->open_pipes--;
  maybe_finish(p->r->L);
}

static void pipe_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  lpipe *p = h->data;
  if (p->cap - p->len < 4096) {
    size_t cap = p->cap ? p->cap * 2 : 8192;
    char *nl = realloc(p->line, cap);
    if (!nl) {
      buf->base = NULL;
      buf->len = 0;
      return;
    }
    p->line = nl;
    p->cap = cap;
  }
  buf->base = p->line + p->len;
  buf->len = p->cap - p->len;
}

static void pipe_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  lpipe *p = s->data;
  if (nread > 0) {
    p->len += (size_t)nread;
    size_t start = 0;
    for (size_t i = 0; i < p->len; i++)
      if (p->line[i] == '\n') {
        emit(p->r->L, p->fd_out, p->r->rank, p->line + start, i - start);
        start = i + 1;
      }
    /* a very long line without newline is emitted in pieces */
    if (start == 0 && p->len > 65536) {
      emit(p->r->L, p->fd_out, p->r->rank, p->line, p->len);
      start = p->len;
    }
    memmove(p->line, p->line + start, p->len - start);
    p->len -= start;
  } else if (nread < 0) {
    if (p->len) emit(p->r->L, p->fd_out, p->r->rank, p->line, p->len);
    p->len = 0;
    if (p->open) {
      p->open = 0;
      uv_close((uv_handle_t *)&p->pipe, pipe_closed);
    }
  }
}

static void kill_all(launcher *L, int sig) {
  for (int i = 0; i < L->n; i++)
    if (L->ranks[i].running) uv_process_kill(&L->ranks[i].proc, sig);
}

static void on_kill_timer(uv_timer_t *t) {
  launcher *L = t->data;
  if (L->live == 0) return;
  if (L->kill_stage == 1) {
    YK_WARN(L->lg, "launch: %d rank(s) still running %lld ms after the failure; sending SIGTERM", L->live,
            (long long)L->grace_ms);
    kill_all(L, SIGTERM);
    L->kill_stage = 2;
    uv_timer_start(&L->kill_timer, on_kill_timer, 3000, 0);
  } else if (L->kill_stage == 2) {
    YK_WARN(L->lg, "launch: %d rank(s) ignored SIGTERM for 3000 ms; sending SIGKILL", L->live);
    kill_all(L, SIGKILL);
    L->kill_stage = 3;
  }
}

static void proc_closed(uv_handle_t *h) {
  lrank *r = h->data;
  r->proc_open = 0;
  maybe_finish(r->L);
}

/* A rank killed by a signal cannot remove the shared-memory regions its
 * libfabric shm endpoint made (/dev/shm/yk<pid>_..., collectives/
 * xport_ofi.c names them): its launcher does. */
static void sweep_shm(int pid) {
  DIR *dir = opendir("/dev/shm");
  if (!dir) return;
  char prefix[32], path[512];
  snprintf(prefix, sizeof prefix, "yk%d_", pid);
  struct dirent *de;
  while ((de = readdir(dir)) != NULL)
    if (!strncmp(de->d_name, prefix, strlen(prefix))) {
      snprintf(path, sizeof path, "/dev/shm/%s", de->d_name);
      unlink(path);
    }
  closedir(dir);
}

static void on_exit_cb(uv_process_t *proc, int64_t status, int term_signal) {
  lrank *r = proc->data;
  launcher *L = r->L;
  r->running = 0;
  L->live--;
  r->code = term_signal ? 128 + term_signal : (int)status;
  if (term_signal) sweep_shm(proc->pid);
  if (L->co && r->code) yk_coord_rank_gone(L->co, r->rank); /* elastic: start without it if it never registered */
  r->by_launcher = L->kill_stage >= 2;
  if (r->code != 0) {
    r->seq = ++L->failed;
    /* A planned stop (requeue, Ctrl-C) is news, not a diagnostic. Which
     * rank caused the end is decided once all have exited (report_outcome). */
    int planned = r->code == YK_EXIT_REQUEUE || r->code == YK_EXIT_SIGINT;
    if (term_signal)
      YK_WARN(L->lg, "launch: rank %d (pid %d) was killed by signal %d (%s)%s", r->rank, proc->pid, term_signal,
              strsignal(term_signal), r->by_launcher ? ", sent by the launcher" : "");
    else
      yk_log(L->lg, planned ? YK_LOG_INFO : YK_LOG_WARN, "launch: rank %d (pid %d) exited with code %d", r->rank,
             proc->pid, r->code);
    if (L->elastic && !planned && L->live > 0 && L->kill_stage == 0 && !L->signals) {
      /* an elastic job goes on without it (the coordinator re-forms it) */
      YK_WARN(L->lg, "launch: the elastic job goes on with %d rank(s)", L->live);
    } else if (!L->first_code) {
      L->first_code = r->code;
      L->first_rank = r->rank;
      if (L->live > 0 && L->kill_stage == 0) {
        L->kill_stage = 1;
        uv_timer_start(&L->kill_timer, on_kill_timer, (uint64_t)L->grace_ms, 0);
      }
    }
  }
  uv_close((uv_handle_t *)proc, proc_closed);
}

static void on_signal(uv_signal_t *h, int signum) {
  launcher *L = h->data;
  L->signals++;
  if (!L->first_signal) L->first_signal = signum;
  if (L->signals > 1) {
    YK_WARN(L->lg, "launch: second signal; killing all ranks");
    kill_all(L, SIGKILL);
    L->kill_stage = 3;
    return;
  }
  YK_WARN(L->lg, "launch: %s; forwarding it to %d rank(s)", strsignal(signum), L->live);
  kill_all(L, signum);
  /* bound the wait: ranks that do not stop get SIGTERM, then SIGKILL */
  if (L->kill_stage == 0) {
    L->kill_stage = 1;
    uv_timer_start(&L->kill_timer, on_kill_timer, (uint64_t)L->grace_ms + 30000, 0);
  }
}

/* The job's end, as the launcher's last line, and its exit code
 * (docs/exit-codes.md). The root cause wins over its victims: the first
 * rank that failed on its own (not 3 or 4, which say "because of another",
 * and not a code from the launcher's own SIGTERM/SIGKILL); else the rank
 * the coordinator declared dead (a stall), exit 3; else the first failure.
 * A user's stop (130) and a planned requeue (75) are not failures. */
static int report_outcome(launcher *L, uint64_t wall_ns) {
  double wall_s = (double)wall_ns / 1e9;
  /* What the job did, from rank 0's first and last reports: this run's
   * steps at the last step's tokens per step (the same every step). */
  char fig[256] = "no step reported";
  if (L->have_rep) {
    const yk_step_stats *s = &L->last;
    double tokens = (double)(s->step - L->first.step + 1) * floor(s->tokens_per_s * s->step_ms / 1e3 + 0.5);
    char resumed[48] = "";
    if (L->first.step > 1) snprintf(resumed, sizeof resumed, " (resumed at step %lld)", (long long)L->first.step - 1);
    snprintf(fig, sizeof fig, "%lld steps%s, %.0f tokens, %.0f tokens/s, final loss %.4f", (long long)s->step,
             resumed, tokens, wall_s > 0 ? tokens / wall_s : 0, s->loss);
  }
  const lrank *cause = NULL, *first = NULL;
  int finished = 0, left = 0;
  for (int i = 0; i < L->n; i++) finished += L->ranks[i].code == 0, left += L->ranks[i].code != 0;
  int requeued = 0;
  for (int i = 0; i < L->n; i++) requeued += L->ranks[i].code == YK_EXIT_REQUEUE;
  if (L->elastic && !finished && requeued && !L->signals) {
    /* below elastic.min_ranks (or the coordinator lost): the ranks left
     * checkpointed and asked to be requeued; those that died caused it */
    YK_INFO(L->lg, "launch: after %.1f s: %s", wall_s, fig);
    YK_WARN(L->lg, "launch: elastic job checkpointed for requeue after %.1f s (exit %d; %d rank(s) left during the "
            "run); resume it with --resume latest", wall_s, YK_EXIT_REQUEUE, left - requeued);
    return YK_EXIT_REQUEUE;
  }
  if (L->elastic && !L->signals && (finished > 0 || (L->job_done && L->job_code == 0 && L->have_rep))) {
    /* the job finished on the ranks that were left: those that died were
     * replaced by the re-formed job, not failures of it */
    YK_INFO(L->lg, "launch: elastic job done in %.1f s: %s; %d of this launcher's %d rank(s) finished, %d left during "
            "the run", wall_s, fig, finished, L->n, left);
    return 0;
  }
  for (int i = 0; i < L->n; i++) {
    const lrank *r = &L->ranks[i];
    if (!r->seq) continue;
    if (!first || r->seq < first->seq) first = r;
    int victim = r->code == YK_EXIT_PEER_DEAD || r->code == YK_EXIT_COORD_LOST || r->by_launcher;
    if (!victim && (!cause || r->seq < cause->seq)) cause = r;
  }
  if (!first) {
    if (L->first_code) { /* a rank that could not be started */
      YK_ERROR(L->lg, "launch: job failed: rank %d could not be started", L->first_rank);
      return L->first_code;
    }
    YK_INFO(L->lg, "launch: job done in %.1f s: %s; all %d ranks finished", wall_s, fig, L->n);
    return 0;
  }
  /* the root cause stays the last line (docs/exit-codes.md) */
  YK_INFO(L->lg, "launch: after %.1f s: %s", wall_s, fig);
  if (!cause && L->signals > 1) {
    YK_WARN(L->lg, "launch: job stopped after %.1f s: a second signal killed the ranks", wall_s);
    return first->code;
  }
  if (!cause && L->cause_rank >= 0) {
    YK_ERROR(L->lg, "launch: job failed in %.1f s: %s (the other ranks stopped because of it)", wall_s, L->cause);
    return YK_EXIT_PEER_DEAD;
  }
  if (!cause) cause = first;
  int code = cause->code;
  if (code == YK_EXIT_REQUEUE) {
    YK_WARN(L->lg, "launch: job checkpointed for requeue after %.1f s (exit %d); resume it with --resume latest",
            wall_s, code);
    return code;
  }
  if (code == YK_EXIT_SIGINT || (L->signals && code == YK_EXIT_SIGTERM)) {
    YK_WARN(L->lg, "launch: job stopped after %.1f s by %s (exit %d), no checkpoint", wall_s,
            L->signals ? strsignal(L->first_signal) : "a stop request", code);
    return code;
  }
  char how[64];
  if (code > 128) snprintf(how, sizeof how, "was killed by signal %d (%s)", code - 128, strsignal(code - 128));
  else snprintf(how, sizeof how, "exited with code %d", code);
  if (L->cause_rank == cause->rank)
    YK_ERROR(L->lg, "launch: job failed in %.1f s: rank %d %s; %s", wall_s, cause->rank, how, L->cause);
  else
    YK_ERROR(L->lg, "launch: job failed in %.1f s: rank %d %s (the first to fail)", wall_s, cause->rank, how);
  return code;
}

static void on_members_timer(uv_timer_t *t) { maybe_finish(t->data); }

static void maybe_finish(launcher *L) {
  if (L->closed || L->live > 0 || L->open_pipes > 0) return;
  for (int i = 0; i < L->n; i++)
    if (L->ranks[i].proc_open) return;
  /* elastic: ranks that joined later (yoke launch --add, srun) may still
   * train; the coordinator lives here, so stay until every member left */
  if (L->elastic && L->co && yk_coord_live(L->co) > 0 && !L->signals) {
    if (!L->members_wait) {
      L->members_wait = 1;
      YK_INFO(L->lg, "launch: this launcher's ranks are done; serving the coordinator until the ranks that joined "
              "the job leave");
      uv_timer_start(&L->members_timer, on_members_timer, 200, 200);
    }
    return;
  }
  if (L->members_wait) uv_timer_stop(&L->members_timer);
  L->closed = 1;
  uv_close((uv_handle_t *)&L->members_timer, NULL);
  if (L->co) L->cause_rank = yk_coord_dead_cause(L->co, L->cause, sizeof L->cause);
  if (L->co) L->job_done = yk_coord_finished(L->co, &L->job_code);
  if (L->co) L->have_rep = yk_coord_progress(L->co, &L->first, &L->last);
  if (L->co) yk_coord_close(L->co);
  L->co = NULL;
  bar_show(L, 0);
  L->drawn = 0;
  uv_close((uv_handle_t *)&L->bar_timer, NULL);
  uv_close((uv_handle_t *)&L->sint, NULL);
  uv_close((uv_handle_t *)&L->sterm, NULL);
  uv_close((uv_handle_t *)&L->kill_timer, NULL);
}

/* --wrap 'ip netns exec host{rank}' -> argv prefix for one rank (words split
 * on blanks, {rank} replaced), followed by the yoke command line. */
static char **wrap_argv(const char *wrap, int rank, char **cargv) {
  int nc = 0;
  while (cargv[nc]) nc++;
  char **out = calloc((size_t)nc + 65, sizeof *out);
  if (!out) return NULL;
  int n = 0;
  const char *p = wrap;
  while (*p && n < 64) {
    while (*p == ' ' || *p == '\t') p++;
    if (!*p) break;
    const char *e = p;
    while (*e && *e != ' ' && *e != '\t') e++;
    char word[512];
    size_t wl = 0;
    for (const char *q = p; q < e && wl < sizeof word - 16; q++) {
      if (!strncmp(q, "{rank}", 6) && q + 6 <= e) {
        wl += (size_t)snprintf(word + wl, sizeof word - wl, "%d", rank);
        q += 5;
      } else {
        word[wl++] = *q;
      }
    }
    word[wl] = 0;
    out[n++] = strdup(word);
    p = e;
  }
  if (n == 0 || *p) {
    for (int k = 0; k < n; k++) free(out[k]);
    free(out);
    return NULL;
  }
  for (int k = 0; k < nc; k++) out[n + k] = strdup(cargv[k]);
  return out;
}

static void wrap_free(char **v) {
  if (!v) return;
  for (int k = 0; v[k]; k++) free(v[k]);
  free(v);
}

static int drop_var(const char *e) {
  static const char *drop[] = {"YOKE_RANK=",  "YOKE_WORLD=",  "YOKE_LOCAL_RANK=", "YOKE_LOCAL_WORLD=",
                               "YOKE_COORD=", "YOKE_COORD_EMBED=", "YOKE_JOB_ID="};
  for (size_t i = 0; i < YK_ARRAY_LEN(drop); i++)
    if (!strncmp(e, drop[i], strlen(drop[i]))) return 1;
  return 0;
}

void yk_daemon_launch_opts_default(yk_daemon_launch_opts *o) {
  *o = (yk_daemon_launch_opts){.bind = "127.0.0.1", .grace_ms = 3000};
}

int yk_daemon_launch(const yk_daemon_launch_opts *o) {
  const char *cmd = "launch";
  int64_t n = o->add > 0 ? o->add : o->np, port = o->port, grace = o->grace_ms;
  const char *bind = o->bind ? o->bind : "127.0.0.1";
  const char *wrap = o->wrap;
  const yk_config cfg = *o->cfg;
  if (n < 1 || n > 4096 || port < 0 || port > 65535 || grace < 0 || o->ncmd < 1) {
    fprintf(stderr, "yoke %s: %lld ranks, port %lld, grace %lld ms and %d command words do not fit: 1..4096 ranks, "
            "port 0..65535, a command to launch\n", cmd, (long long)n, (long long)port, (long long)grace, o->ncmd);
    return 2;
  }
  yk_diag d = {0};
  int rc = 0;
  char exe[4096];
  size_t exe_len = sizeof exe;
  if (uv_exepath(exe, &exe_len)) {
    fprintf(stderr, "yoke %s: cannot find the yoke executable's path\n", cmd);
    return 1;
  }
  char **cargv = calloc((size_t)o->ncmd + 4, sizeof *cargv); /* + --join HOST:PORT */
  if (!cargv) return 1;
  cargv[0] = exe;
  for (int k = 0; k < o->ncmd; k++) cargv[1 + k] = o->cmd[k];

  /* secret: the job's file, an exported YOKE_SECRET, or a fresh one */
  uint8_t key[YK_SECRET_MAX];
  size_t key_len = 0;
  char gen_hex[2 * YK_SECRET_MAX + 1] = "";
  rc = yk_daemon_secret_load(&cfg, key, &key_len, &d);
  if (rc == YK_ENOTFOUND) {
    rc = yk_daemon_secret_generate(gen_hex, &d);
    if (!rc) {
      setenv("YOKE_SECRET", gen_hex, 1); /* only so secret_load reads it back; children get it below too */
      rc = yk_daemon_secret_load(&cfg, key, &key_len, &d);
      unsetenv("YOKE_SECRET");
    }
  }
  if (rc) {
    fprintf(stderr, "yoke %s: %s\n", cmd, yk_diag_msg(&d, rc));
    free(cargv);
    return 2;
  }

  yk_logger lg;
  int level = yk_log_level_parse(cfg.log.level);
  yk_logger_init(&lg, -1, level < 0 ? YK_LOG_INFO : level, stderr);
  lg.info_out = stdout; /* the launcher's own news on stdout, its diagnostics on stderr */
  launcher L = {0};
  L.steps = !strcmp(o->cmd[0], "train") ? cfg.train.steps : 0;
  L.bar = L.steps > 0 && isatty(STDOUT_FILENO);
  L.err_tty = L.bar && isatty(STDERR_FILENO);
  if (L.bar) lg.lead = ERASE;
  L.lg = &lg;
  L.cause_rank = -1;
  L.elastic = (int)cfg.elastic.enabled;
  L.n = (int)n;
  L.grace_ms = grace;
  uv_loop_init(&L.loop);
  uint64_t job_id = 0; /* one id for the coordinator, the ranks and the job file */
  char chost_buf[300] = "127.0.0.1", jobfile[4400] = "", what[256], join_arg[300] = "";
  int cport = 0;
  if (o->add > 0) {
    /* ranks for a running elastic job: its coordinator and secret come from
     * the job file of the `yoke launch` that runs it (docs/elasticity.md) */
    ykd_jobinfo ji;
    int found = ykd_jobfile_find(o->job, &ji, &d);
    const char *colon = found == 1 ? strrchr(ji.coord, ':') : NULL;
    if (found != 1 || !colon || strcmp(o->cmd[0], "train")) {
      fprintf(stderr, "yoke %s: --add: %s\n", cmd,
              found < 0 ? yk_diag_msg(&d, found)
              : found == 0 ? "no job launched here is running (start one with yoke launch -n N, elastic.enabled: true)"
                           : "--add starts `yoke train` ranks: give the job's train command");
      uv_run(&L.loop, UV_RUN_DEFAULT);
      uv_loop_close(&L.loop);
      free(cargv);
      return 2;
    }
    snprintf(chost_buf, sizeof chost_buf, "%.*s", (int)(colon - ji.coord), ji.coord);
    cport = atoi(colon + 1);
    snprintf(join_arg, sizeof join_arg, "%s", ji.coord);
    snprintf(gen_hex, sizeof gen_hex, "%.64s", ji.secret);
    sscanf(ji.id, "%llx", (unsigned long long *)&job_id);
    memset(ji.secret, 0, sizeof ji.secret);
    cargv[1 + o->ncmd] = "--join";
    cargv[2 + o->ncmd] = join_arg;
  } else {
  yk_coord_opts co = {0};
  co.bind_host = bind;
  co.port = (int)port;
  co.world = (int)n;
  co.heartbeat_timeout_ms = cfg.coord.heartbeat_timeout_ms;
  co.heartbeat_ms = cfg.coord.heartbeat_ms;
  co.straggler_warn = cfg.train.straggler_warn;
  co.key = key;
  co.key_len = key_len;
  co.log = &lg;
  co.elastic = (int)cfg.elastic.enabled;
  co.max_ranks = (int)cfg.elastic.max_ranks;
  while (!job_id) ykd_random(&job_id, sizeof job_id);
  co.job_id = job_id;
  rc = yk_coord_start(&L.loop, &co, &L.co, &d);
  if (rc) {
    memset(key, 0, sizeof key);
    fprintf(stderr, "yoke %s: %s\n", cmd, yk_diag_msg(&d, rc));
    uv_run(&L.loop, UV_RUN_DEFAULT);
    uv_loop_close(&L.loop);
    free(cargv);
    return 1;
  }
  snprintf(chost_buf, sizeof chost_buf, "%s", strcmp(bind, "0.0.0.0") ? bind : "127.0.0.1");
  cport = yk_coord_port(L.co);
  /* The job file lets `yoke status` find this job with no flags; without
   * it (no usable run directory) status needs --coord and the secret. */
  snprintf(what, sizeof what, "yoke%s%s%s%s", o->ncmd > 0 ? " " : "", o->ncmd > 0 ? o->cmd[0] : "",
           o->ncmd > 1 ? " " : "", o->ncmd > 1 ? o->cmd[1] : "");
  yk_diag jd = {0};
  if (ykd_jobfile_write(job_id, chost_buf, cport, key, key_len, what, jobfile, sizeof jobfile, &jd)) {
    YK_WARN(&lg, "launch: %s; `yoke status` will need --coord and the job secret", jd.msg);
    jobfile[0] = 0;
  }
  }
  const char *chost = chost_buf;
  memset(key, 0, sizeof key);

  /* the children's environment */
  size_t nenv = 0;
  while (environ[nenv]) nenv++;
  char **cenv = calloc(nenv + 16, sizeof *cenv);
  char vars[8][320];
  int ne = 0;
  for (size_t k = 0; k < nenv; k++)
    if (!drop_var(environ[k]) && !(gen_hex[0] && !strncmp(environ[k], "YOKE_SECRET=", 12))) cenv[ne++] = environ[k];
  snprintf(vars[0], sizeof vars[0], "YOKE_WORLD=%d", L.n);
  snprintf(vars[1], sizeof vars[1], "YOKE_LOCAL_WORLD=%d", L.n);
  snprintf(vars[2], sizeof vars[2], "YOKE_COORD=%s:%d", chost, cport);
  snprintf(vars[3], sizeof vars[3], "YOKE_JOB_ID=%016llx", (unsigned long long)job_id);
  snprintf(vars[4], sizeof vars[4], "YOKE_SECRET=%s", gen_hex);
  if (!o->add) { /* joiners register as "any rank" (yoke train --join) */
    cenv[ne++] = vars[0];
    cenv[ne++] = vars[1];
    cenv[ne++] = vars[2];
    cenv[ne++] = vars[3];
  }
  if (gen_hex[0]) cenv[ne++] = vars[4];
  int rank_slot = ne;
  cenv[ne++] = vars[5];
  cenv[ne++] = vars[6];
  cenv[ne] = NULL;

  L.ranks = calloc((size_t)L.n, sizeof *L.ranks);
  uv_signal_init(&L.loop, &L.sint);
  uv_signal_init(&L.loop, &L.sterm);
  uv_timer_init(&L.loop, &L.kill_timer);
  uv_timer_init(&L.loop, &L.bar_timer);
  uv_timer_init(&L.loop, &L.members_timer);
  L.members_timer.data = &L;
  L.sint.data = L.sterm.data = L.kill_timer.data = L.bar_timer.data = &L;
  if (L.bar) uv_timer_start(&L.bar_timer, on_bar_timer, BAR_MS, BAR_MS);
  uv_signal_start(&L.sint, on_signal, SIGINT);
  uv_signal_start(&L.sterm, on_signal, SIGTERM);
  if (o->add)
    YK_INFO(&lg, "launch: %d rank(s) of `yoke %s ...` joining job %016llx (coordinator %s:%d) at its next step "
            "boundary", L.n, cargv[1], (unsigned long long)job_id, chost, cport);
  else
    YK_INFO(&lg, "launch: %d ranks of `yoke %s ...`, coordinator on %s:%d, job %016llx (`yoke status` finds it)", L.n,
            cargv[1], chost, cport, (unsigned long long)job_id);
  const uint64_t t0 = yk_now_ns();
  for (int r = 0; r < L.n; r++) {
    lrank *R = &L.ranks[r];
    rc = 0;
    R->L = &L;
    R->rank = r;
    snprintf(vars[5], sizeof vars[5], "YOKE_RANK=%d", r);
    snprintf(vars[6], sizeof vars[6], "YOKE_LOCAL_RANK=%d", r);
    cenv[rank_slot] = o->add ? NULL : vars[5];
    cenv[rank_slot + 1] = o->add ? NULL : vars[6];
    lpipe *ps[2] = {&R->out, &R->err};
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    for (int k = 0; k < 2; k++) {
      ps[k]->r = R;
      ps[k]->fd_out = k + 1;
      uv_pipe_init(&L.loop, &ps[k]->pipe, 0);
      ps[k]->pipe.data = ps[k];
      ps[k]->open = 1;
      L.open_pipes++;
      stdio[k + 1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
      stdio[k + 1].data.stream = (uv_stream_t *)&ps[k]->pipe;
    }
    uv_process_options_t po = {0};
    po.exit_cb = on_exit_cb;
    po.file = exe;
    po.args = cargv;
    char **wargv = NULL;
    if (wrap) {
      wargv = wrap_argv(wrap, r, cargv);
      if (!wargv) {
        YK_ERROR(&lg, "launch: --wrap '%s' is empty or too long", wrap);
        rc = UV_EINVAL;
      } else {
        po.file = wargv[0];
        po.args = wargv;
      }
    }
    po.env = cenv;
    po.stdio_count = 3;
    po.stdio = stdio;
    /* Own session: a terminal's Ctrl-C reaches only the launcher, which
     * forwards it once. */
    po.flags = UV_PROCESS_DETACHED;
    R->proc.data = R;
    if (!rc) rc = uv_spawn(&L.loop, &R->proc, &po);
    wrap_free(wargv);
    if (rc) {
      YK_ERROR(&lg, "launch: cannot start rank %d (%s): %s", r, po.file, uv_strerror(rc));
      for (int k = 0; k < 2; k++) {
        ps[k]->open = 0;
        uv_close((uv_handle_t *)&ps[k]->pipe, pipe_closed);
      }
      uv_close((uv_handle_t *)&R->proc, NULL);
      if (!L.first_code) L.first_code = YK_EXIT_FAILURE, L.first_rank = r;
      kill_all(&L, SIGTERM);
      break;
    }
    R->running = 1;
    R->proc_open = 1;
    L.live++;
    uv_read_start((uv_stream_t *)&R->out.pipe, pipe_alloc, pipe_read);
    uv_read_start((uv_stream_t *)&R->err.pipe, pipe_alloc, pipe_read);
  }
  maybe_finish(&L);
  uv_run(&L.loop, UV_RUN_DEFAULT);
  uv_loop_close(&L.loop);
  if (jobfile[0]) unlink(jobfile);
  int code = report_outcome(&L, yk_now_ns() - t0);
  free(L.ranks);
  free(cenv);
  free(cargv);
  return code;
}
