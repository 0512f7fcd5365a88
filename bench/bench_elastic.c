/* bench_elastic.c - `yoke bench elastic`: how fast an elastic job gets back
 * to training after a rank is killed, and after one is added, beside
 * torchrun's elastic agent (issue 16, docs/elasticity.md "Benchmark").
 *
 * Per model it runs a real job of R ranks (`yoke launch -n R -- train`, 1
 * thread each, elastic.enabled, on a synthetic shard) as a child process in
 * its own process group, reads its output lines as they arrive (each stamped
 * with this process's clock on arrival), waits for step --kill-after, then
 * sleeps a random fraction of the measured step time and kill -9's a random
 * rank. From the lines that follow:
 *
 *   detect_s   kill -> the coordinator's "rank N (...) died" line
 *   reform_s   -> communicators and engine rebuilt (the rank's reform line
 *              arrives when the state is synced; its restore_s is taken off)
 *   restore_s  -> the state synced from the most advanced rank (the line's
 *              restore_s)
 *   resume_s   kill -> the first completed step after the re-form (the whole
 *              outage, the interrupted step's redo included)
 *   steps_lost the last step reported before the kill minus the step the
 *              survivors continue from (0 when nothing completed is lost)
 *
 * Then the grow: `yoke launch --add 1 --job ID` at a step boundary, timed the
 * same way from the --add (detect: the coordinator's "joined" line).
 *
 * PyTorch beside: bench/torch_elastic.py under `python3 -m
 * torch.distributed.run` (torchrun, the c10d rendezvous, --max_restarts 3),
 * the same model, micro-batch and micro-batches per rank, DDP over gloo, a
 * checkpoint every K steps and a resume from it on start. torchrun restarts
 * every worker when one dies: detect is its agent's first line about the
 * failure, reform the new workers' process group, restore the checkpoint
 * loaded, resume the first step after it; steps_lost are those completed
 * since that checkpoint. */
#define _GNU_SOURCE
#include "yk_bench.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "yk_model.h"

#ifndef YK_SOURCE_DIR
#define YK_SOURCE_DIR "."
#endif

/* Ctrl-C: a handler reaches only static storage. This flag is set by the
 * handler and read by every wait below, which then ends the children and
 * removes the temporary directory before returning 130. */
static volatile sig_atomic_t interrupted;

static void on_interrupt(int signum) {
  (void)signum;
  interrupted = 1;
}

/* ------------------------------------------------------------------------ */
/* A child job: its process group and its output lines                      */
/* ------------------------------------------------------------------------ */

typedef struct child {
  pid_t pid;         /* leader of its own process group; 0: none */
  int fd[2];         /* stdout, stderr pipes (-1: closed) */
  char buf[2][16384];
  size_t len[2];
  FILE *log;         /* every line as read, for a failure's report */
  int status, exited;
} child;

/* fork + exec of `sh -c cmd` in a new process group with stdout and stderr
 * on pipes (or on out_path when given, then nothing is read). */
static int child_start(child *c, const char *cmd, const char *out_path, const char *log_path) {
  int p[2][2] = {{-1, -1}, {-1, -1}};
  memset(c, 0, sizeof *c);
  c->fd[0] = c->fd[1] = -1;
  if (!out_path && (pipe(p[0]) || pipe(p[1]))) return YK_ESYS;
  pid_t pid = fork();
  if (pid < 0) return YK_ESYS;
  if (pid == 0) {
    setpgid(0, 0);
    signal(SIGINT, SIG_DFL);
    int fo = out_path ? open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644) : p[0][1];
    int fe = out_path ? fo : p[1][1];
    if (fo < 0) _exit(127);
    dup2(fo, STDOUT_FILENO);
    dup2(fe, STDERR_FILENO);
    for (int i = 3; i < 1024; i++) close(i);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  setpgid(pid, pid); /* both sides, so a kill right after fork finds the group */
  c->pid = pid;
  if (!out_path) {
    close(p[0][1]);
    close(p[1][1]);
    c->fd[0] = p[0][0];
    c->fd[1] = p[1][0];
  }
  if (log_path && (c->log = fopen(log_path, "w"))) setvbuf(c->log, NULL, _IOLBF, 0);
  return 0;
}

static void child_reap(child *c) {
  if (c->pid > 0 && !c->exited) {
    int st;
    if (waitpid(c->pid, &st, WNOHANG) == c->pid) {
      c->exited = 1;
      c->status = st;
    }
  }
}

/* Every process below pid (its descendants), from /proc: the ranks of a
 * launcher run in process groups of their own. */
static int descendants(pid_t root, pid_t *out, int max) {
  int n = 0;
  pid_t frontier[256];
  int nf = 0;
  frontier[nf++] = root;
  for (int round = 0; round < 4 && nf > 0; round++) {
    pid_t next[256];
    int nn = 0;
    DIR *dir = opendir("/proc");
    if (!dir) break;
    struct dirent *de;
    while ((de = readdir(dir))) {
      if (de->d_name[0] < '0' || de->d_name[0] > '9') continue;
      char path[64], line[512];
      snprintf(path, sizeof path, "/proc/%.20s/stat", de->d_name);
      FILE *f = fopen(path, "r");
      if (!f) continue;
      int ppid = 0;
      if (fgets(line, sizeof line, f)) {
        const char *rp = strrchr(line, ')');
        char state;
        if (rp) sscanf(rp + 1, " %c %d", &state, &ppid);
      }
      fclose(f);
      for (int i = 0; i < nf; i++)
        if (ppid == frontier[i] && n < max && nn < (int)YK_ARRAY_LEN(next)) {
          out[n++] = next[nn++] = (pid_t)atoi(de->d_name);
          break;
        }
    }
    closedir(dir);
    memcpy(frontier, next, (size_t)nn * sizeof *next);
    nf = nn;
  }
  return n;
}

/* SIGKILL to the child's group, to every descendant and to their groups. */
static void child_kill_all(child *c) {
  if (c->pid <= 0) return;
  pid_t d[256];
  int n = descendants(c->pid, d, 256);
  for (int i = 0; i < n; i++) {
    kill(-d[i], SIGKILL);
    kill(d[i], SIGKILL);
  }
  if (!c->exited) kill(-c->pid, SIGKILL);
}

/* A stop: sig to the child (its launcher forwards it), up to grace_ms for
 * it to end, then SIGKILL to everything it left; reaped. */
static void child_stop(child *c, int sig, int64_t grace_ms) {
  if (c->pid <= 0) return;
  child_reap(c);
  if (!c->exited) kill(c->pid, sig);
  uint64_t dl = yk_deadline_in_ms(grace_ms);
  while (!c->exited && !yk_deadline_passed(dl)) {
    usleep(20000);
    child_reap(c);
  }
  child_kill_all(c);
  if (!c->exited) {
    uint64_t dl2 = yk_deadline_in_ms(5000);
    while (!c->exited && !yk_deadline_passed(dl2)) {
      usleep(10000);
      child_reap(c);
    }
  }
  for (int i = 0; i < 2; i++)
    if (c->fd[i] >= 0) close(c->fd[i]), c->fd[i] = -1;
  if (c->log) fclose(c->log), c->log = NULL;
  c->pid = 0;
}

/* A line of a child's output as it arrived: stream 0 stdout, 1 stderr; t on
 * this process's clock (yk_now_s). */
typedef void (*line_fn)(void *arg, int stream, const char *line, double t);

/* Read what the child has written, up to until_s (yk_now_s), handing every
 * complete line to fn. Returns 0 at until_s, 1 when done(arg) says so, -1
 * when the child closed its output, -2 on Ctrl-C. */
static int child_pump(child *c, double until_s, line_fn fn, int (*done)(void *), void *arg) {
  for (;;) {
    if (interrupted) return -2;
    if (done && done(arg)) return 1;
    double left = until_s - yk_now_s();
    if (left <= 0) return 0;
    struct pollfd pf[2];
    int np = 0, which[2];
    for (int i = 0; i < 2; i++)
      if (c->fd[i] >= 0) pf[np] = (struct pollfd){.fd = c->fd[i], .events = POLLIN}, which[np++] = i;
    if (!np) return -1;
    int ms = left > 0.1 ? 100 : (int)(left * 1000) + 1;
    int k = poll(pf, (nfds_t)np, ms);
    if (k < 0 && errno != EINTR) return -1;
    for (int j = 0; k > 0 && j < np; j++) {
      if (!(pf[j].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      int s = which[j];
      ssize_t got = read(c->fd[s], c->buf[s] + c->len[s], sizeof c->buf[s] - 1 - c->len[s]);
      if (got <= 0) {
        close(c->fd[s]);
        c->fd[s] = -1;
        continue;
      }
      double t = yk_now_s();
      c->len[s] += (size_t)got;
      char *start = c->buf[s], *nl;
      while ((nl = memchr(start, '\n', c->len[s] - (size_t)(start - c->buf[s])))) {
        *nl = '\0';
        if (c->log) fprintf(c->log, "%c %.3f %s\n", s ? 'E' : 'O', t, start);
        fn(arg, s, start, t);
        start = nl + 1;
      }
      size_t rest = c->len[s] - (size_t)(start - c->buf[s]);
      if (rest == sizeof c->buf[s] - 1) rest = 0; /* a line longer than the buffer: dropped */
      memmove(c->buf[s], start, rest);
      c->len[s] = rest;
    }
  }
}

/* ------------------------------------------------------------------------ */
/* What the lines say                                                       */
/* ------------------------------------------------------------------------ */

typedef struct obs {
  int torch;            /* lines of torch_elastic.py / torchrun, else of yoke launch */
  int64_t last_step;    /* newest step reported */
  double last_step_t;
  double gaps[64];      /* arrival gaps between consecutive steps: the step time */
  int ngaps;
  char job[32];         /* yoke: the job id (for --add) */
  /* the event being timed: everything below is reset at its start */
  double t0;            /* the kill or the --add */
  int want_world;       /* grow: the re-form to this world */
  double detect_t, reform_line_t, restore_s, pg_t, resume_t;
  int64_t cont_step;    /* the step training continues from */
  int have_reform, resumed;
} obs;

static double num_after(const char *line, const char *key) {
  const char *k = strstr(line, key);
  return k ? atof(k + strlen(key)) : NAN;
}

static void obs_event(obs *o, double t0, int want_world) {
  o->t0 = t0;
  o->want_world = want_world;
  o->detect_t = o->reform_line_t = o->pg_t = o->resume_t = NAN;
  o->restore_s = NAN;
  o->cont_step = -1;
  o->have_reform = o->resumed = 0;
}

static void on_line(void *arg, int stream, const char *line, double t) {
  obs *o = arg;
  const char *p = line;
  if (!strncmp(p, "[r", 2) && (p = strstr(p, "] "))) p += 2; /* the launcher's rank tag */
  else p = line;
  int after = o->t0 > 0 && t >= o->t0;
  if (!o->torch && !o->job[0]) {
    const char *j = strstr(p, "job ");
    if (j && strstr(p, "coordinator on") && sscanf(j + 4, "%16[0-9a-f]", o->job) != 1) o->job[0] = '\0';
  }
  if (after && isnan(o->detect_t)) {
    if (o->torch ? stream == 1 && strncmp(p, "[default", 8) &&
                       (strstr(p, "closing signal") || strstr(p, "failed (exitcode"))
                 : (o->want_world ? strstr(p, "coordinator: ") && strstr(p, " joined (") != NULL
                                  : strstr(p, "coordinator: rank ") && strstr(p, ") died: ") != NULL))
      o->detect_t = t;
  }
  if (p[0] != '{') return;
  int restart = o->torch ? (int)num_after(p, "\"restart\": ") : 0;
  if (!strncmp(p, "{\"step\": ", 9) && strstr(p, "\"loss\": ")) {
    int64_t s = atoll(p + 9);
    if (o->last_step_t > 0 && s == o->last_step + 1 && o->ngaps < (int)YK_ARRAY_LEN(o->gaps))
      o->gaps[o->ngaps++] = t - o->last_step_t;
    o->last_step = s;
    o->last_step_t = t;
    if (after && o->have_reform && !o->resumed) {
      o->resumed = 1;
      o->resume_t = t;
    }
    return;
  }
  if (!after) return;
  if (o->torch) {
    if (restart < 1) return;
    if (strstr(p, "\"event\": \"pg\"") && isnan(o->pg_t)) o->pg_t = t;
    if (strstr(p, "\"event\": \"restored\"") && !o->have_reform) {
      o->cont_step = (int64_t)num_after(p, "\"step\": ");
      o->reform_line_t = t;
      o->have_reform = 1;
    }
  } else if (strstr(p, "\"reform\": true")) {
    int world = (int)num_after(p, "\"world\": ");
    if (o->want_world && world != o->want_world) return;
    o->cont_step = (int64_t)num_after(p, "\"step\": ");
    o->restore_s = num_after(p, "\"restore_s\": ");
    o->reform_line_t = t;
    o->have_reform = 1;
  }
}

static int obs_resumed(void *arg) { return ((obs *)arg)->resumed; }

typedef struct step_wait {
  obs *o;
  int64_t step;
} step_wait;

static int reached_step(void *arg) {
  step_wait *w = arg;
  return w->o->last_step >= w->step;
}

/* child_pump's line callback with a done() over a step_wait */
static void on_line_w(void *arg, int stream, const char *line, double t) { on_line(((step_wait *)arg)->o, stream, line, t); }

/* One row of the table. */
typedef struct row {
  const char *impl, *event;
  double detect_s, reform_s, restore_s, resume_s;
  int64_t steps_lost, last_step, cont_step;
  int victim_rank;
  int ok;
} row;

static double nn(double x) { return isfinite(x) && x >= 0 ? x : (isfinite(x) ? 0 : NAN); }

/* The figures of the event in o. */
static void row_of(const obs *o, int64_t last_before, row *r) {
  double comms_t = o->torch ? o->pg_t : o->reform_line_t - (isnan(o->restore_s) ? 0 : o->restore_s);
  r->detect_s = nn(o->detect_t - o->t0);
  r->reform_s = nn(comms_t - (isnan(o->detect_t) ? o->t0 : o->detect_t));
  r->restore_s = nn(o->torch ? o->reform_line_t - o->pg_t : o->restore_s);
  r->resume_s = nn(o->resume_t - o->t0);
  r->last_step = last_before;
  r->cont_step = o->cont_step;
  r->steps_lost = last_before > o->cont_step ? last_before - o->cont_step : 0;
  r->ok = o->resumed;
}

static void json_fig(FILE *f, const char *key, double x) {
  if (isfinite(x)) fprintf(f, ", \"%s\": %.3f", key, x);
  else fprintf(f, ", \"%s\": null", key);
}

static void print_row(const yk_bench_elastic_opts *o, const char *model, const row *r, double ratio) {
  char f[4][16];
  double v[4] = {r->detect_s, r->reform_s, r->restore_s, r->resume_s};
  for (int i = 0; i < 4; i++) {
    if (isfinite(v[i])) snprintf(f[i], sizeof f[i], "%.2f", v[i]);
    else snprintf(f[i], sizeof f[i], "-");
  }
  char rt[16] = "";
  if (isfinite(ratio)) snprintf(rt, sizeof rt, "%.1fx", ratio);
  printf("  %-5s %-8s %-5s %8s %8s %9s %8s %6lld %6lld -> %-6lld %s\n", model, r->impl, r->event, f[0], f[1], f[2],
         f[3], (long long)r->steps_lost, (long long)r->last_step, (long long)r->cont_step, rt);
  if (o->json) {
    printf("{\"bench\": \"elastic\", \"impl\": \"%s\", \"model\": \"%s\", \"event\": \"%s\", \"ranks\": %lld",
           r->impl, model, r->event, (long long)o->ranks);
    json_fig(stdout, "detect_s", r->detect_s);
    json_fig(stdout, "reform_s", r->reform_s);
    json_fig(stdout, "restore_s", r->restore_s);
    json_fig(stdout, "resume_s", r->resume_s);
    printf(", \"steps_lost\": %lld, \"last_step\": %lld, \"continued_from\": %lld", (long long)r->steps_lost,
           (long long)r->last_step, (long long)r->cont_step);
    json_fig(stdout, "ratio", ratio);
    printf("}\n");
  }
  fflush(stdout);
}

/* ------------------------------------------------------------------------ */
/* The runs                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct ctx {
  const yk_bench_elastic_opts *o;
  char self[4096], dir[64];
  yk_rng rng;
  child job, add;
} ctx;

static double uniform(ctx *x, double lo, double hi) {
  return lo + (hi - lo) * (double)(yk_rng_u64(&x->rng) >> 11) / 9007199254740992.0;
}

/* The step time: the median arrival gap of the last steps. */
static double step_period(obs *ob) {
  double g[64];
  int n = ob->ngaps < 8 ? ob->ngaps : 8;
  memcpy(g, ob->gaps + ob->ngaps - n, (size_t)n * sizeof *g);
  return n ? yk_bench_median(g, n) : 1.0;
}

/* Pump until done(arg), the deadline or an error; 0, or 1 after printing
 * what was being waited for (130: Ctrl-C). */
static int pump_until(ctx *x, obs *ob, double deadline, int (*done)(void *), void *arg, line_fn fn,
                      const char *what) {
  int k = child_pump(&x->job, deadline, fn, done, arg);
  if (k == 1) return 0;
  if (k == -2) return YK_EXIT_SIGINT;
  fprintf(stderr, "yoke bench elastic: %s: %s (last step %lld); its last lines follow\n", what,
          k == 0 ? "timed out" : "the job ended", (long long)ob->last_step);
  return 1;
}

/* Wait for step `step`, sleep a random fraction of a step (reading lines
 * meanwhile), then kill -9 a random rank of the job (a descendant of the
 * launcher / agent that is a rank). Sets *last to the last step reported
 * before the kill. */
static int kill_mid_step(ctx *x, obs *ob, int64_t step, double deadline, int64_t *last, int *victim_idx) {
  step_wait w = {ob, step};
  int rc = pump_until(x, ob, deadline, reached_step, &w, on_line_w, "waiting for the steady state");
  if (rc) return rc;
  double period = step_period(ob);
  int k = child_pump(&x->job, yk_now_s() + uniform(x, 0.1, 0.9) * period, on_line, NULL, ob);
  if (k == -2) return YK_EXIT_SIGINT;
  pid_t d[256], ranks[64];
  int n = descendants(x->job.pid, d, 256), nr = 0;
  for (int i = 0; i < n && nr < 64; i++) {
    char path[64], cmd[512] = "";
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)d[i]);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    size_t got = fread(cmd, 1, sizeof cmd - 1, f);
    fclose(f);
    for (size_t j = 0; j < got; j++)
      if (!cmd[j]) cmd[j] = ' ';
    cmd[got] = '\0';
    if (ob->torch ? strstr(cmd, "torch_elastic.py") != NULL : strstr(cmd, " train ") != NULL) ranks[nr++] = d[i];
  }
  if (nr < 2) {
    fprintf(stderr, "yoke bench elastic: found %d rank process(es) under pid %d, expected %lld\n", nr, (int)x->job.pid,
            (long long)x->o->ranks);
    return 1;
  }
  int v = (int)(yk_rng_u64(&x->rng) % (uint64_t)nr);
  *last = ob->last_step;
  *victim_idx = v;
  obs_event(ob, yk_now_s(), 0);
  kill(ranks[v], SIGKILL);
  return 0;
}

/* The job's YAML: elastic, the global batch of R x accum micro-batches kept
 * (it divides over R - 1 as well for the defaults), heartbeats that detect
 * a silent rank within a second. */
static int write_job(ctx *x, const char *model, const char *shard, char *path, size_t cap) {
  const yk_bench_elastic_opts *o = x->o;
  snprintf(path, cap, "%s/job.yaml", x->dir);
  FILE *f = fopen(path, "w");
  if (!f) return 1;
  fprintf(f,
          "model: {name: %s}\n"
          "data: {train: \"%s\", val: \"\"}\n"
          "train: {micro_batch: %lld, seq_len: %lld, steps: 1000000, threads: 1, grad_accum: %lld, log_every: 1}\n"
          "optim: {lr: 1e-4}\n"
          "coord: {heartbeat_ms: 200, heartbeat_timeout_ms: 2000}\n"
          "elastic: {enabled: true, max_ranks: %lld, batch: keep}\n",
          model, shard, (long long)o->batch, (long long)o->seq_len, (long long)o->accum, (long long)o->ranks);
  return fclose(f) ? 1 : 0;
}

static int run_yoke(ctx *x, const char *model, row *kill_row, row *grow_row) {
  const yk_bench_elastic_opts *o = x->o;
  char job[256], cmd[8192], log[128];
  /* the shard: enough windows for the run (the loader wraps around at its end) */
  yk_model_config mc;
  yk_diag d = {0};
  int rc = yk_model_preset(model, &mc, &d);
  char shard[128];
  snprintf(shard, sizeof shard, "%s/train_%s.bin", x->dir, model);
  uint64_t ntok = (uint64_t)(o->kill_after + 40) * (uint64_t)(o->ranks * o->accum * o->batch * o->seq_len) + 1;
  if (!rc) rc = yk_bench_synthetic_shard(shard, mc.vocab_size, ntok, &d);
  if (rc) {
    fprintf(stderr, "yoke bench elastic: %s\n", yk_diag_msg(&d, rc));
    return rc == YK_ECONFIG || rc == YK_ENOTFOUND ? 2 : 1;
  }
  if (write_job(x, model, shard, job, sizeof job)) return 1;
  int port = 20000 + (int)(yk_rng_u64(&x->rng) % 20000);
  snprintf(cmd, sizeof cmd, "exec env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 %s launch -n %lld --port %d -- train %s --json",
           x->self, (long long)o->ranks, port, job);
  snprintf(log, sizeof log, "%s/yoke-%s.log", x->dir, model);
  if (child_start(&x->job, cmd, NULL, log)) return 1;
  obs ob = {.torch = 0, .last_step = 0};
  obs_event(&ob, 0, 0);
  double deadline = yk_now_s() + (double)o->timeout_s;
  int64_t last = 0;
  int victim = 0;
  if ((rc = kill_mid_step(x, &ob, o->kill_after, deadline, &last, &victim)) != 0) goto out;
  deadline = yk_now_s() + (double)o->timeout_s;
  if ((rc = pump_until(x, &ob, deadline, obs_resumed, &ob, on_line, "waiting for the first step after the kill")))
    goto out;
  *kill_row = (row){.impl = "yoke", .event = "kill"};
  row_of(&ob, last, kill_row);
  if (!o->no_grow) {
    /* two steps at the smaller size, then --add at a boundary (the step line) */
    step_wait w = {&ob, ob.last_step + 2};
    if ((rc = pump_until(x, &ob, deadline, reached_step, &w, on_line_w, "waiting for steps after the re-form")))
      goto out;
    char add[8192], alog[128];
    snprintf(add, sizeof add, "exec env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 %s launch --add 1 --job %s -- train %s --json",
             x->self, ob.job, job);
    snprintf(alog, sizeof alog, "%s/yoke-%s-add.log", x->dir, model);
    int64_t before = ob.last_step;
    obs_event(&ob, yk_now_s(), (int)o->ranks);
    if (!ob.job[0] || child_start(&x->add, add, alog, NULL)) {
      fprintf(stderr, "yoke bench elastic: cannot start `yoke launch --add 1` (job id '%s')\n", ob.job);
      rc = 1;
      goto out;
    }
    deadline = yk_now_s() + (double)o->timeout_s;
    if ((rc = pump_until(x, &ob, deadline, obs_resumed, &ob, on_line, "waiting for the first step after --add 1")))
      goto out;
    *grow_row = (row){.impl = "yoke", .event = "grow"};
    row_of(&ob, before, grow_row);
  }
out:
  /* the launcher forwards the stop to its ranks and to the joined one
   * (through the coordinator); whatever is left after the grace is killed */
  child_stop(&x->job, SIGINT, 15000);
  child_stop(&x->add, SIGINT, 5000);
  (void)victim;
  return rc;
}

static int run_torch(ctx *x, const char *model, row *kill_row) {
  const yk_bench_elastic_opts *o = x->o;
  char cmd[8192], log[128], ck[128], tl[128];
  snprintf(ck, sizeof ck, "%s/torch-ckpt-%s", x->dir, model);
  snprintf(tl, sizeof tl, "%s/torch-logs-%s", x->dir, model);
  if (mkdir(ck, 0700) || mkdir(tl, 0700)) return 1;
  int port = 20000 + (int)(yk_rng_u64(&x->rng) % 20000);
  /* its best settings: one thread per worker, passive OpenMP waits,
   * malloc thresholds (as bench_common.c), the agent polling its workers
   * every 0.1 s (the default is 5 s). --redirects 2 --tee 2: workers'
   * stderr through the agent's log files, their stdout straight to us
   * (Debian's 1.13 on Python 3.11 cannot parse the default "0": its Std
   * enum no longer lists NONE). */
  snprintf(cmd, sizeof cmd,
           "exec env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE "
           "MALLOC_MMAP_THRESHOLD_=8589934592 MALLOC_TRIM_THRESHOLD_=8589934592 MALLOC_TOP_PAD_=1073741824 "
           "PYTHONUNBUFFERED=1 /usr/bin/python3 -m torch.distributed.run --nnodes 1:1 --nproc_per_node %lld "
           "--max_restarts 3 --monitor_interval 0.1 --redirects 2 --tee 2 --log_dir %s --rdzv_backend c10d "
           "--rdzv_endpoint localhost:%d %s/bench/torch_elastic.py --model %s --B %lld --T %lld --accum %lld "
           "--ckpt-every %lld --ckpt-dir %s",
           (long long)o->ranks, tl, port, YK_SOURCE_DIR, model, (long long)o->batch, (long long)o->seq_len,
           (long long)o->accum, (long long)o->ckpt_every, ck);
  snprintf(log, sizeof log, "%s/torch-%s.log", x->dir, model);
  if (child_start(&x->job, cmd, NULL, log)) return 1;
  obs ob = {.torch = 1};
  obs_event(&ob, 0, 0);
  double deadline = yk_now_s() + (double)o->timeout_s;
  int64_t last = 0;
  int victim = 0, rc;
  if ((rc = kill_mid_step(x, &ob, o->kill_after, deadline, &last, &victim)) != 0) goto out;
  deadline = yk_now_s() + (double)o->timeout_s;
  if ((rc = pump_until(x, &ob, deadline, obs_resumed, &ob, on_line, "waiting for the first step after the restart")))
    goto out;
  *kill_row = (row){.impl = "torchrun", .event = "kill"};
  row_of(&ob, last, kill_row);
out:
  child_stop(&x->job, SIGTERM, 10000);
  return rc;
}

/* ------------------------------------------------------------------------ */

void yk_bench_elastic_opts_default(yk_bench_elastic_opts *o) {
  *o = (yk_bench_elastic_opts){.models = "d6,d12", .ranks = 4, .batch = 1, .seq_len = 64, .accum = 3,
                               .kill_after = 15, .ckpt_every = 10, .timeout_s = 600, .seed = 0};
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(p);
}

int yk_bench_elastic(const yk_bench_elastic_opts *o) {
  if (o->ranks < 2 || o->kill_after < 2 || (o->ranks * o->accum) % (o->ranks - 1) != 0) {
    fprintf(stderr, "yoke bench elastic: %lld ranks x %lld micro-batches (a global batch of %lld) killed after step "
            "%lld do not fit: at least 2 ranks, --kill-after >= 2, and the global batch must divide over %lld ranks "
            "(elastic.batch=keep), e.g. --ranks 4 --accum 3\n", (long long)o->ranks, (long long)o->accum,
            (long long)(o->ranks * o->accum), (long long)o->kill_after, (long long)(o->ranks - 1));
    return 2;
  }
  ctx x = {.o = o};
  ssize_t n = readlink("/proc/self/exe", x.self, sizeof x.self - 1);
  if (n <= 0) {
    fprintf(stderr, "yoke bench elastic: cannot find the yoke binary (/proc/self/exe)\n");
    return 1;
  }
  x.self[n] = '\0';
  yk_rng_seed(&x.rng, o->seed ? (uint64_t)o->seed : (uint64_t)time(NULL) ^ (uint64_t)getpid());
  struct sigaction sa = {0}, old_int, old_term;
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  interrupted = 0;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  int torch = !o->no_torch;
  if (torch && !yk_bench_torch_available()) {
    fprintf(stderr, "yoke bench elastic: /usr/bin/python3 has no torch (apt-get install python3-torch): the torchrun "
            "rows are skipped\n");
    torch = 0;
  }
  snprintf(x.dir, sizeof x.dir, "/tmp/yk_bench_elastic_XXXXXX");
  if (interrupted || !mkdtemp(x.dir)) {
    if (!interrupted) fprintf(stderr, "yoke bench elastic: cannot create a temporary directory\n");
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return interrupted ? YK_EXIT_SIGINT : 1;
  }
  yk_isa isa = YK_ISA_PORTABLE;
  yk_diag d = {0};
  if (yk_isa_resolve(YK_ISA_AUTO, &isa, &d) != 0) yk_diag_clear(&d);
  printf("# yoke bench elastic: %lld ranks (1 thread each, yoke launch), B=%lld T=%lld, %lld micro-batches per rank "
         "(global batch %lld sequences, kept), kill -9 of a random rank at a random moment of step %lld; %s kernels\n",
         (long long)o->ranks, (long long)o->batch, (long long)o->seq_len, (long long)o->accum,
         (long long)(o->ranks * o->accum * o->batch), (long long)o->kill_after + 1, yk_isa_name(isa));
  if (torch)
    printf("# torchrun: PyTorch 1.13 elastic agent (c10d rendezvous, --max_restarts 3, --monitor_interval 0.1), DDP "
           "gloo, fp32, checkpoint every %lld steps, resume from it on restart\n", (long long)o->ckpt_every);
  printf("# detect: kill -> failure seen (coordinator / agent); reform: -> communicators rebuilt (torchrun: new "
         "workers' process group); restore: -> state in place (torchrun: checkpoint loaded); resume: kill -> first "
         "completed step after it (total); grow: the same from `yoke launch --add 1`\n");
  printf("  %-5s %-8s %-5s %8s %8s %9s %8s %6s %16s %s\n", "model", "impl", "event", "detect_s", "reform_s",
         "restore_s", "resume_s", "lost", "last -> from", "torchrun/yoke");
  fflush(stdout);
  char models[256];
  snprintf(models, sizeof models, "%s", o->models);
  int exit_code = 0, misses = 0;
  char *save = NULL;
  for (char *m = strtok_r(models, ",", &save); m && !exit_code; m = strtok_r(NULL, ",", &save)) {
    row yk = {0}, gr = {0}, tr = {0};
    int rc = run_yoke(&x, m, &yk, &gr);
    if (!rc && torch) rc = run_torch(&x, m, &tr);
    if (rc) {
      exit_code = rc;
      break;
    }
    double ratio = torch && yk.resume_s > 0 ? tr.resume_s / yk.resume_s : NAN;
    print_row(o, m, &yk, NAN);
    if (!o->no_grow) print_row(o, m, &gr, NAN);
    if (torch) print_row(o, m, &tr, ratio);
    int hit = yk.resume_s <= 10 && yk.steps_lost == 0 && (!torch || ratio >= 5);
    misses += !hit;
    printf("# %s: yoke resumed %.2f s after the kill (target <= 10 s), %lld steps lost (target 0)", m, yk.resume_s,
           (long long)yk.steps_lost);
    if (torch) printf(", %.1fx sooner than torchrun (target >= 5x; torchrun lost %lld steps)", ratio,
                      (long long)tr.steps_lost);
    printf(": %s\n", hit ? "met" : "MISSED");
  }
  child_stop(&x.job, SIGKILL, 0);
  child_stop(&x.add, SIGKILL, 0);
  if (exit_code && exit_code != YK_EXIT_SIGINT) {
    /* keep nothing: print the last lines of the failed job for the user */
    char p[128];
    snprintf(p, sizeof p, "tail -n 15 %s/*.log 1>&2", x.dir);
    if (system(p) != 0) fprintf(stderr, "yoke bench elastic: no log to show\n");
  }
  nftw(x.dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  if (interrupted) {
    fprintf(stderr, "yoke bench elastic: interrupted; the jobs are stopped and %s is removed\n", x.dir);
    return YK_EXIT_SIGINT;
  }
  (void)misses;
  return exit_code;
}
