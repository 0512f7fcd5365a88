/* bench_hosts.c - `yoke bench scale --hosts K --ppn N --link-gbit X`:
 * weak scaling of the real `yoke train` over K hosts made of network
 * namespaces on this machine, joined by shaped links.
 *
 * scripts/nshosts.sh builds the hosts (a star: every host's eth0 is a veth
 * to one bridge, shaped with tc tbf both ways) and tears them down; this
 * file only decides what runs where. Each job is `yoke launch` on host 0
 * with --wrap 'nshosts.sh exec PREFIX N {rank}', which puts rank r on host
 * r/N, so the communicator sees N ranks per node: shared memory inside a
 * host, tcp;ofi_rxm between hosts (collectives/comm.c tells nodes apart by
 * network namespace). Per layout and link rate, one replica on one host is
 * the baseline (1 rank; 2 ranks of host 0 for TP2) and 1..K hosts of N
 * ranks each the rows, with the per-rank batch fixed: efficiency =
 * baseline ms/step / ms/step. Bytes on the wire are the hosts' eth0
 * counters over the whole job (start-up included) divided by its steps,
 * beside rank 0's dp_bytes and tp_bytes of one step.
 *
 * Signals: SIGINT, SIGTERM and SIGHUP are blocked here and polled while a
 * job runs (the job runs in its own process group with them unblocked), so
 * Ctrl-C stops the job and still tears the hosts down. A run killed outright
 * leaves its namespaces; the next run removes them (nshosts.sh sweep: only
 * names of our prefix whose pid is gone). */
#include "yk_bench.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "yk_model.h"

#ifndef YK_SOURCE_DIR
#define YK_SOURCE_DIR "."
#endif

extern char **environ;

#define PREFIX_BASE "ykbs" /* namespaces of this benchmark: ykbs<pid>h<i>, ykbs<pid>hub */
#define MAX_HOSTS 16
#define MAX_RATES 8

static const struct hosts_layout {
  const char *name; /* --layouts and the JSON `layout` */
  int tp, zero;
} layouts[] = {
    {"dp", 1, 0}, {"zero1", 1, 1}, {"zero2", 1, 2}, {"zero3", 1, 3}, {"tp2", 2, 0},
};
enum { NLAYOUTS = (int)YK_ARRAY_LEN(layouts) };

void yk_bench_hosts_opts_default(yk_bench_hosts_opts *o) {
  *o = (yk_bench_hosts_opts){.hosts = 0, .ppn = 1, .link_gbit = "1", .layouts = "dp,zero1,zero3,tp2"};
}

typedef struct {
  double ms, wait_frac, dp_bytes, tp_bytes, wire_bytes;
  int ok;
} host_run;

typedef struct {
  const yk_bench_scale_opts *s;
  const yk_bench_hosts_opts *h;
  char self[4096], script[4096], prefix[32], dir[64];
  sigset_t sigs;
  int stopped; /* a signal arrived: stop everything */
} hctx;

/* A thread that does not block our signals (OpenBLAS starts its workers
 * before main) would take a process-directed SIGINT and run whatever
 * handler a library installed. Ours sends it on to the main thread (its
 * thread id is the pid), which blocks it, so it waits there for
 * sigtimedwait; no state is needed for that. */
static void to_main_thread(int sig) { syscall(SYS_tgkill, getpid(), getpid(), sig); }

/* Run argv (NULL-terminated) with the blocked signals unblocked, in its own
 * process group; stdout into a pipe (*fd). */
static pid_t spawn_piped(hctx *c, char *const argv[], int *fd) {
  int p[2];
  if (pipe(p)) return -1;
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, p[1], 1);
  posix_spawn_file_actions_addclose(&fa, p[0]);
  posix_spawn_file_actions_addclose(&fa, p[1]);
  posix_spawnattr_init(&at);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setpgroup(&at, 0);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);
  (void)c;
  pid_t pid;
  int rc = posix_spawn(&pid, argv[0], &fa, &at, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  close(p[1]);
  if (rc) {
    close(p[0]);
    return -1;
  }
  *fd = p[0];
  return pid;
}

/* A signal of ours pending? (consumed: we act on it once) */
static int signalled(hctx *c) {
  struct timespec zero = {0, 0};
  int s = sigtimedwait(&c->sigs, NULL, &zero);
  if (s > 0) {
    fprintf(stderr, "yoke bench scale: %s: stopping the job and removing the hosts\n", strsignal(s));
    c->stopped = 1;
  }
  return c->stopped;
}

/* Run `sh -c cmd` to its end or the deadline, each stdout line to on_line.
 * The job's process group gets SIGTERM, then SIGKILL 3 s later, on a
 * signal of ours or the deadline. Returns the exit status or -1. */
static int run_sh(hctx *c, const char *cmd, int timeout_s, void (*on_line)(void *, const char *), void *arg) {
  char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
  int fd;
  pid_t pid = spawn_piped(c, argv, &fd);
  if (pid < 0) return -1;
  FILE *f = fdopen(fd, "r");
  if (!f) {
    close(fd);
    kill(-pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
  }
  const uint64_t deadline = yk_deadline_in_ms((uint64_t)timeout_s * 1000);
  uint64_t kill_at = 0; /* when SIGKILL follows the SIGTERM */
  char line[8192];
  size_t len = 0;
  int eof = 0;
  while (!eof) {
    if (!kill_at && (signalled(c) || yk_now_ns() > deadline)) {
      if (!c->stopped) fprintf(stderr, "yoke bench scale: a job ran past its %d s deadline; stopping it\n", timeout_s);
      kill(-pid, SIGTERM);
      kill_at = yk_deadline_in_ms(3000);
    }
    if (kill_at && yk_now_ns() > kill_at) {
      kill(-pid, SIGKILL);
      break;
    }
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    int n = poll(&pf, 1, 200);
    if (n < 0 && errno != EINTR) break;
    if (n <= 0) continue;
    ssize_t got = read(fd, line + len, sizeof line - 1 - len);
    if (got <= 0) {
      eof = 1;
      got = 0;
    }
    len += (size_t)got;
    line[len] = 0;
    char *s = line, *nl;
    while ((nl = strchr(s, '\n'))) {
      *nl = 0;
      on_line(arg, s);
      s = nl + 1;
    }
    len = strlen(s);
    memmove(line, s, len + 1);
    if (len == sizeof line - 1) len = 0; /* a line longer than any of ours: drop it */
  }
  fclose(f);
  int st = 0;
  /* the group was told to stop above if it had to be: bounded wait */
  for (int i = 0; i < 100 && waitpid(pid, &st, WNOHANG) == 0; i++) {
    if (i == 50) kill(-pid, SIGKILL);
    struct timespec t = {0, 100 * 1000 * 1000};
    nanosleep(&t, NULL);
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void keep_last(void *arg, const char *line) { snprintf((char *)arg, 64, "%s", line); }

/* The script with its arguments; its stdout's last line into out (64 bytes). */
static int script(hctx *c, char *out, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int script(hctx *c, char *out, const char *fmt, ...) {
  char args[512], cmd[5000], last[64] = "";
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  snprintf(cmd, sizeof cmd, "%s %s", c->script, args);
  int rc = run_sh(c, cmd, 60, keep_last, last);
  if (out) snprintf(out, 64, "%s", last);
  return rc;
}

static double num(json_t *o, const char *key) {
  json_t *v = json_object_get(o, key);
  return json_is_number(v) ? json_number_value(v) : NAN;
}

typedef struct {
  double ms[1024];
  int nms, done;
  host_run *r;
} job_lines;

static void on_job_line(void *arg, const char *line) {
  job_lines *j = arg;
  const char *js = strchr(line, '{'); /* yoke launch prefixes each rank's lines with "[rN] " */
  if (!js) return;
  json_t *o = json_loads(js, 0, NULL);
  if (!o) return;
  if (json_is_true(json_object_get(o, "done"))) {
    if (num(o, "rank") == 0) {
      j->r->wait_frac = num(o, "comm_wait_frac");
      j->done = 1;
    }
  } else if (json_object_get(o, "ms")) {
    /* rank 0's step lines; the first step warms caches and pools */
    if (num(o, "step") > 1 && j->nms < (int)YK_ARRAY_LEN(j->ms)) j->ms[j->nms++] = num(o, "ms");
    j->r->dp_bytes = num(o, "dp_bytes");
    j->r->tp_bytes = num(o, "tp_bytes");
  }
  json_decref(o);
}

/* One job: `ranks` ranks on hosts 0..ranks/ppn-1 (ppn per host). */
static int run_job(hctx *c, const struct hosts_layout *L, const char *model, int ranks, int ppn, const char *data,
                   host_run *r) {
  const yk_bench_scale_opts *s = c->s;
  int hosts = (ranks + ppn - 1) / ppn, steps = (int)s->steps;
  memset(r, 0, sizeof *r);
  char before[64], after[64], cmd[16384], err[128];
  if (script(c, before, "bytes %s %d", c->prefix, hosts) != 0) return YK_EIO;
  snprintf(err, sizeof err, "%s/job.err", c->dir);
  snprintf(cmd, sizeof cmd,
           "exec ip netns exec %sh0 env OMP_NUM_THREADS=1 %s launch -n %d --bind 198.18.0.1 "
           "--wrap '%s exec %s %d {rank}' -- train --json --set data.val= --set train.threads=1 "
           "--set train.log_every=1 --set optim.lr=1e-4 --set optim.zero=%d --set parallel.tensor=%d "
           "--set model.name=%s --set train.micro_batch=%d --set train.seq_len=%d --set train.steps=%d "
           "--set train.grad_accum=1 --set data.train=%s --set comm.transport=libfabric 2>%s",
           c->prefix, c->self, ranks, c->script, c->prefix, ppn, L->zero, L->tp, model, (int)s->batch,
           (int)s->seq_len, steps, data, err);
  job_lines j = {.r = r};
  int st = run_sh(c, cmd, 120 + 60 * steps, on_job_line, &j);
  if (c->stopped) return YK_EIO;
  if (st != 0 || !j.done || j.nms == 0) {
    fprintf(stderr, "yoke bench scale: %s on %d host(s) x %d failed (exit %d); its stderr is in %s; the command:\n  %s\n",
            L->name, hosts, ppn, st, err, cmd);
    return YK_EIO;
  }
  if (script(c, after, "bytes %s %d", c->prefix, hosts) != 0) return YK_EIO;
  r->ms = yk_bench_median(j.ms, j.nms);
  r->wire_bytes = (atof(after) - atof(before)) / steps;
  r->ok = 1;
  return 0;
}

/* --link-gbit "1,10" -> Mbit/s; 0 = unshaped. */
static int parse_rates(const char *list, int *mbit, int max) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", list);
  int n = 0;
  for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    char *e;
    double g = strtod(t, &e);
    if (*e || g < 0 || g > 400 || n == max) return -1;
    mbit[n++] = (int)lround(g * 1000);
  }
  return n;
}

static void print_row(hctx *c, const char *model, const struct hosts_layout *L, int hosts, int ppn, int ranks,
                      int mbit, const host_run *r, double base_ms) {
  const yk_bench_scale_opts *s = c->s;
  int dp = ranks / L->tp;
  double tok = (double)s->batch * s->seq_len * dp / (r->ms * 1e-3), eff = base_ms / r->ms;
  char rate[16];
  if (mbit) snprintf(rate, sizeof rate, "%g", mbit / 1000.0);
  else snprintf(rate, sizeof rate, "-");
  printf("  %-5s %-6s %6s %5d %4d %5d %10.1f %10.1f %9.1f%% %9.1f%% %12.0f %12.0f %12.0f\n", model, L->name, rate,
         hosts, ppn, ranks, r->ms, tok, 100 * r->wait_frac, 100 * eff, r->dp_bytes, r->tp_bytes, r->wire_bytes);
  if (s->json)
    printf("{\"bench\": \"scale-hosts\", \"model\": \"%s\", \"layout\": \"%s\", \"zero\": %d, \"tp\": %d, \"dp\": %d, "
           "\"hosts\": %d, \"ppn\": %d, \"ranks\": %d, \"link_gbit\": %g, \"B\": %d, \"T\": %d, \"ms_per_step\": %.3f, "
           "\"tokens_per_s\": %.2f, \"comm_wait_frac\": %.4f, \"efficiency\": %.4f, \"dp_bytes\": %.0f, "
           "\"tp_bytes\": %.0f, \"wire_bytes_per_step\": %.0f}\n",
           model, L->name, L->zero, L->tp, dp, hosts, ppn, ranks, mbit / 1000.0, (int)s->batch, (int)s->seq_len, r->ms,
           tok, r->wait_frac, eff, r->dp_bytes, r->tp_bytes, r->wire_bytes);
  fflush(stdout);
}

/* Every row of one model at one rate. */
static int run_model(hctx *c, const char *model, const int *want, int mbit) {
  const yk_bench_hosts_opts *h = c->h;
  int K = (int)h->hosts, N = (int)h->ppn, rc;
  yk_diag d = {0};
  yk_model_config mc;
  if ((rc = yk_model_preset(model, &mc, &d)) != 0) {
    fprintf(stderr, "yoke bench scale: %s\n", yk_diag_msg(&d, rc));
    return 2;
  }
  char data[128];
  snprintf(data, sizeof data, "%s/%s.bin", c->dir, model);
  uint64_t ntok = (uint64_t)c->s->batch * c->s->seq_len * (uint64_t)K * N * (uint64_t)(c->s->steps + 1) * 2 + 1;
  if (access(data, R_OK) != 0 && (rc = yk_bench_synthetic_shard(data, mc.vocab_size, ntok, &d)) != 0) {
    fprintf(stderr, "yoke bench scale: %s\n", yk_diag_msg(&d, rc));
    return 1;
  }
  host_run base1 = {0}; /* the 1-rank baseline, shared by the DP layouts */
  for (int k = 0; k < NLAYOUTS; k++) {
    if (!want[k]) continue;
    const struct hosts_layout *L = &layouts[k];
    if (L->tp > N || N % L->tp) {
      fprintf(stderr, "# %s: skipped: TP%d stays inside a host and needs --ppn a multiple of %d (--ppn %d)\n", L->name,
              L->tp, L->tp, N);
      continue;
    }
    host_run base = {0};
    if (L->tp == 1 && base1.ok) base = base1;
    else if ((rc = run_job(c, L, model, L->tp, N, data, &base)) != 0) return 1;
    if (L->tp == 1) base1 = base;
    if (!(L->tp == N)) print_row(c, model, L, 1, L->tp, L->tp, mbit, &base, base.ms);
    for (int hosts = 1; hosts <= K; hosts++) {
      host_run r;
      if (hosts == 1 && N == L->tp) r = base;
      else if ((rc = run_job(c, L, model, hosts * N, N, data, &r)) != 0) return 1;
      print_row(c, model, L, hosts, N, hosts * N, mbit, &r, base.ms);
    }
  }
  return 0;
}

int yk_bench_scale_hosts(const yk_bench_scale_opts *s, const yk_bench_hosts_opts *h) {
  int K = (int)h->hosts, N = (int)h->ppn, mbit[MAX_RATES], want[NLAYOUTS] = {0};
  int nrates = parse_rates(h->link_gbit, mbit, MAX_RATES);
  if (K < 1 || K > MAX_HOSTS || N < 1 || N > 8 || nrates < 1 || s->steps < 2) {
    fprintf(stderr, "yoke bench scale: --hosts %lld, --ppn %lld, --link-gbit '%s' and %lld steps do not fit: 1..%d hosts, "
            "1..8 ranks per host, up to %d rates in [0, 400] Gbit/s (0: unshaped), >= 2 steps\n",
            (long long)h->hosts, (long long)h->ppn, h->link_gbit, (long long)s->steps, MAX_HOSTS, MAX_RATES);
    return 2;
  }
  char lbuf[256];
  snprintf(lbuf, sizeof lbuf, "%s", h->layouts);
  for (char *save = NULL, *t = strtok_r(lbuf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    int k = 0;
    while (k < NLAYOUTS && strcmp(layouts[k].name, t)) k++;
    if (k == NLAYOUTS) {
      fprintf(stderr, "yoke bench scale: --layouts: no layout '%s'; choose from dp,zero1,zero2,zero3,tp2\n", t);
      return 2;
    }
    want[k] = 1;
  }
  if (geteuid() != 0) {
    fprintf(stderr, "yoke bench scale: --hosts builds network namespaces and veth links, which needs root "
            "(running as uid %d)\n", (int)geteuid());
    return 2;
  }
  hctx c = {.s = s, .h = h};
  ssize_t n = readlink("/proc/self/exe", c.self, sizeof c.self - 1);
  if (n <= 0) {
    fprintf(stderr, "yoke bench scale: cannot find the yoke binary (/proc/self/exe)\n");
    return 1;
  }
  c.self[n] = '\0';
  snprintf(c.script, sizeof c.script, "%s/scripts/nshosts.sh", YK_SOURCE_DIR);
  if (access(c.script, X_OK) != 0 || strpbrk(c.script, " \t'") || strpbrk(c.self, " \t'")) {
    fprintf(stderr, "yoke bench scale: --hosts needs %s (executable, a path without blanks or quotes) and the yoke "
            "binary at a path without them (%s)\n", c.script, c.self);
    return 1;
  }
  snprintf(c.prefix, sizeof c.prefix, PREFIX_BASE "%d", (int)getpid());
  snprintf(c.dir, sizeof c.dir, "/tmp/yk_bench_hosts_XXXXXX");
  if (!mkdtemp(c.dir)) {
    fprintf(stderr, "yoke bench scale: cannot create a temporary directory\n");
    return 1;
  }
  sigset_t old;
  sigemptyset(&c.sigs);
  sigaddset(&c.sigs, SIGINT);
  sigaddset(&c.sigs, SIGTERM);
  sigaddset(&c.sigs, SIGHUP);
  sigprocmask(SIG_BLOCK, &c.sigs, &old);
  static const int handled[] = {SIGINT, SIGTERM, SIGHUP};
  struct sigaction fwd = {.sa_handler = to_main_thread}, prev[3];
  sigemptyset(&fwd.sa_mask);
  for (int i = 0; i < 3; i++) {
    sigaction(handled[i], NULL, &prev[i]);
    /* an ignored signal stays ignored (a background job's SIGINT) */
    if (prev[i].sa_handler != SIG_IGN) sigaction(handled[i], &fwd, NULL);
  }
  int code = 0;
  script(&c, NULL, "sweep %s", PREFIX_BASE);
  if (script(&c, NULL, "up %s %d %d", c.prefix, K, mbit[0]) != 0) {
    fprintf(stderr, "yoke bench scale: could not build %d namespace hosts (%s up %s %d)\n", K, c.script, c.prefix, K);
    code = 1;
  }
  printf("# yoke bench scale --hosts %d --ppn %d: hosts are network namespaces %sh0..h%d on one bridge (a star), each "
         "link tbf-shaped both ways; %d thread per rank, B=%d T=%d per rank, %d steps (first is warm-up); all hosts "
         "share this machine's cores\n",
         K, N, c.prefix, K - 1, 1, (int)s->batch, (int)s->seq_len, (int)s->steps);
  printf("# efficiency = ms/step of one replica on one host / ms/step here (per-replica batch fixed); dp_bytes and "
         "tp_bytes: rank 0, one step; wire: bytes sent on all hosts' links per step (job total / steps)\n");
  printf("# %-5s %-6s %6s %5s %4s %5s %10s %10s %10s %10s %12s %12s %12s\n", "model", "layout", "gbit", "hosts", "ppn",
         "ranks", "ms/step", "tokens/s", "comm wait", "efficiency", "dp_bytes", "tp_bytes", "wire/step");
  fflush(stdout);
  char models[256];
  snprintf(models, sizeof models, "%s", s->models);
  for (int ri = 0; ri < nrates && !code && !c.stopped; ri++) {
    if (ri > 0 && script(&c, NULL, "shape %s %d %d", c.prefix, K, mbit[ri]) != 0) {
      fprintf(stderr, "yoke bench scale: could not shape the links to %d Mbit/s\n", mbit[ri]);
      code = 1;
      break;
    }
    char mb[256];
    snprintf(mb, sizeof mb, "%s", models);
    for (char *save = NULL, *m = strtok_r(mb, ",", &save); m && !code && !c.stopped; m = strtok_r(NULL, ",", &save))
      code = run_model(&c, m, want, mbit[ri]);
  }
  /* teardown: also after a failure or a signal (the script kills what is
   * left inside the namespaces) */
  int interrupted = c.stopped;
  c.stopped = 0;
  if (script(&c, NULL, "down %s", c.prefix) != 0) {
    fprintf(stderr, "yoke bench scale: removing the hosts failed; run: %s down %s\n", c.script, c.prefix);
    if (!code) code = 1;
  }
  interrupted |= sigtimedwait(&c.sigs, NULL, &(struct timespec){0, 0}) > 0;
  for (int i = 0; i < 3; i++) sigaction(handled[i], &prev[i], NULL);
  sigprocmask(SIG_SETMASK, &old, NULL);
  char rm[128];
  snprintf(rm, sizeof rm, "rm -rf %s", c.dir);
  /* a failed job's stderr stays for reading; an interrupted run keeps nothing */
  int keep = code == 1 && !interrupted;
  if (!keep && system(rm) != 0) fprintf(stderr, "yoke bench scale: could not remove %s\n", c.dir);
  if (keep) fprintf(stderr, "yoke bench scale: kept %s (job stderr, data)\n", c.dir);
  return interrupted ? 130 : code;
}
