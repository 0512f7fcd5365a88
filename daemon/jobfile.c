/* jobfile.c - how `yoke status` finds a job `yoke launch` started on this
 * machine with no flags: the launcher writes a job file (coordinator address
 * and the job secret) into a run directory only this user can read, and
 * removes it at exit; status reads the files there, drops those of dead
 * launchers, and takes the single live one (format: docs/launch.md). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* $XDG_RUNTIME_DIR/yoke, else /tmp/yoke-UID; made 0700 if missing. A
 * directory another user owns or others may enter is refused: a job file
 * holds the secret. */
static int run_dir(char *out, size_t cap, int create, yk_diag *d) {
  const char *x = getenv("XDG_RUNTIME_DIR");
  if (x && *x == '/') snprintf(out, cap, "%s/yoke", x);
  else snprintf(out, cap, "/tmp/yoke-%u", (unsigned)getuid());
  if (create && mkdir(out, 0700) != 0 && errno != EEXIST)
    return yk_errorf_sys(d, YK_EIO, "cannot make the run directory '%s'", out);
  struct stat sb;
  if (stat(out, &sb) != 0) return yk_errorf(d, YK_ENOTFOUND, "no run directory '%s'", out);
  if (!S_ISDIR(sb.st_mode) || sb.st_uid != getuid() || (sb.st_mode & 077))
    return yk_errorf(d, YK_EAUTH, "run directory '%s' is not a directory of ours with mode 0700; remove it", out);
  return 0;
}

int ykd_jobfile_write(uint64_t job_id, const char *host, int port, const uint8_t *key, size_t key_len,
                      const char *what, char *path, size_t cap, yk_diag *d) {
  char dir[4000], hex[2 * YK_SECRET_MAX + 1];
  int rc = run_dir(dir, sizeof dir, 1, d);
  if (rc) return rc;
  for (size_t i = 0; i < key_len; i++) snprintf(hex + 2 * i, 3, "%02x", key[i]);
  snprintf(path, cap, "%s/%016llx.job", dir, (unsigned long long)job_id);
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return yk_errorf_sys(d, YK_EIO, "cannot create the job file '%s'", path);
  char buf[1024];
  int n = snprintf(buf, sizeof buf, "yoke-job 1\nid %016llx\npid %d\ncoord %s:%d\nsecret %s\nstarted %lld\ncommand %s\n",
                   (unsigned long long)job_id, (int)getpid(), host, port, hex, (long long)time(NULL), what);
  memset(hex, 0, sizeof hex);
  int ok = n > 0 && n < (int)sizeof buf && write(fd, buf, (size_t)n) == n;
  memset(buf, 0, sizeof buf);
  close(fd);
  if (!ok) {
    unlink(path);
    return yk_errorf_sys(d, YK_EIO, "cannot write the job file '%s'", path);
  }
  return 0;
}

/* A value longer than its field is cut (the file is ours: it never is). */
static void copy(char *dst, size_t cap, const char *src) {
  size_t n = strnlen(src, cap - 1);
  memcpy(dst, src, n);
  dst[n] = 0;
}

/* One job file parsed; 0 if it is well formed. */
static int parse(const char *path, ykd_jobinfo *j) {
  memset(j, 0, sizeof *j);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char line[1024];
  int have = 0;
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    if (!strncmp(line, "id ", 3)) have |= 1, copy(j->id, sizeof j->id, line + 3);
    else if (!strncmp(line, "pid ", 4)) have |= 2, j->pid = atoi(line + 4);
    else if (!strncmp(line, "coord ", 6)) have |= 4, copy(j->coord, sizeof j->coord, line + 6);
    else if (!strncmp(line, "secret ", 7)) have |= 8, copy(j->secret, sizeof j->secret, line + 7);
    else if (!strncmp(line, "started ", 8)) j->started = atoll(line + 8);
    else if (!strncmp(line, "command ", 8)) copy(j->command, sizeof j->command, line + 8);
  }
  memset(line, 0, sizeof line);
  fclose(f);
  return have == 15 && j->pid > 0 ? 0 : -1;
}

int ykd_jobfile_list(ykd_jobinfo **out, int *n, yk_diag *d) {
  *out = NULL;
  *n = 0;
  char dir[4000];
  yk_diag quiet = {0};
  int rc = run_dir(dir, sizeof dir, 0, &quiet);
  if (rc == YK_ENOTFOUND) return 0; /* no launcher ever ran here */
  if (rc) return yk_errorf(d, rc, "%s", quiet.msg);
  DIR *dh = opendir(dir);
  if (!dh) return 0;
  struct dirent *de;
  int cap = 0;
  while ((de = readdir(dh))) {
    size_t l = strlen(de->d_name);
    if (l < 5 || strcmp(de->d_name + l - 4, ".job")) continue;
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    ykd_jobinfo j;
    if (parse(path, &j) != 0) continue;
    /* A launcher killed by SIGKILL cannot remove its file: drop it here. */
    if (kill(j.pid, 0) != 0 && errno == ESRCH) {
      unlink(path);
      continue;
    }
    if (*n == cap) {
      cap = cap ? 2 * cap : 4;
      ykd_jobinfo *nj = realloc(*out, (size_t)cap * sizeof *nj);
      if (!nj) break;
      *out = nj;
    }
    (*out)[(*n)++] = j;
  }
  closedir(dh);
  return 0;
}

/* The job to ask: `want` (an id or its prefix), else the only live one.
 * 1: found (*j filled); 0: none running here and none asked for; <0: an
 * error in d (several jobs, listed, or no job `want`). */
int ykd_jobfile_find(const char *want, ykd_jobinfo *j, yk_diag *d) {
  ykd_jobinfo *jobs;
  int n, pick = -1, hits = 0;
  int rc = ykd_jobfile_list(&jobs, &n, d);
  if (rc) return rc;
  for (int i = 0; i < n; i++)
    if (!want || !strncmp(jobs[i].id, want, strlen(want))) pick = i, hits++;
  if (hits == 1) *j = jobs[pick];
  else if (hits > 1) {
    fprintf(stderr, "%-16s  %-8s  %-21s  %-8s  %s\n", "JOB", "PID", "COORDINATOR", "AGE_S", "COMMAND");
    for (int i = 0; i < n; i++)
      if (!want || !strncmp(jobs[i].id, want, strlen(want)))
        fprintf(stderr, "%-16s  %-8d  %-21s  %-8lld  %s\n", jobs[i].id, jobs[i].pid, jobs[i].coord,
                (long long)time(NULL) - jobs[i].started, jobs[i].command);
    rc = yk_errorf(d, YK_EUSAGE, "%d jobs launched here are running (listed above): say which with --job ID", hits);
  } else if (want) {
    rc = yk_errorf(d, YK_EUSAGE, "no running job '%s' was launched here (`yoke status` with no --job lists them)", want);
  }
  for (int i = 0; i < n; i++) memset(jobs[i].secret, 0, sizeof jobs[i].secret);
  free(jobs);
  return rc ? rc : hits == 1;
}
