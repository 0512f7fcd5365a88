/* plot.c - the one gnuplot helper: `yoke plot` (training logs) and the
 * benchmarks' --png figures give it a script; it keeps the script beside the
 * figure (OUT.gp, to rerun or edit by hand) and runs gnuplot on it. */
#include <errno.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "yk_common.h"

extern char **environ;

int yk_plot_gnuplot(const char *out_png, const char *script, yk_diag *d) {
  char gp[4200];
  snprintf(gp, sizeof gp, "%s.gp", out_png);
  FILE *f = fopen(gp, "w");
  if (!f) return yk_errorf_sys(d, YK_EIO, "cannot write the gnuplot script %s (is the directory there?)", gp);
  int ok = fputs(script, f) >= 0;
  ok = (fclose(f) == 0) && ok;
  if (!ok) return yk_errorf_sys(d, YK_EIO, "cannot write the gnuplot script %s", gp);
  char *argv[] = {"gnuplot", gp, NULL};
  pid_t pid;
  int err = posix_spawnp(&pid, "gnuplot", NULL, NULL, argv, environ);
  if (err == ENOENT)
    return yk_errorf(d, YK_ENOTFOUND, "gnuplot is not installed: install it (Debian: apt-get install gnuplot-nox, "
                     "or scripts/install-deps.sh); the script is in %s", gp);
  if (err) return yk_errorf(d, YK_ESYS, "cannot start gnuplot: %s", strerror(err));
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    return yk_errorf(d, YK_EIO, "gnuplot failed on %s (its message is above); %s was not written", gp, out_png);
  return 0;
}

/* The number after "KEY": in a JSON line, or NaN. */
static double field(const char *line, const char *key) {
  const char *p = strstr(line, key);
  if (!p) return NAN;
  p += strlen(key);
  while (*p == ' ' || *p == ':') p++;
  char *end;
  double v = strtod(p, &end);
  return end == p ? NAN : v;
}

/* Appends one run's step and validation rows as gnuplot data blocks
 * $sI and $vI; counts in *steps and *vals. */
static int read_log(const char *path, int i, FILE *s, int *steps, int *vals, yk_diag *d) {
  FILE *f = fopen(path, "r");
  if (!f) return yk_errorf_sys(d, YK_ENOTFOUND, "cannot open the training log %s", path);
  char *line = NULL;
  size_t cap = 0;
  char *vbuf = NULL;
  size_t vlen = 0;
  FILE *v = open_memstream(&vbuf, &vlen);
  fprintf(s, "$s%d << EOD\n", i);
  *steps = *vals = 0;
  while (v && getline(&line, &cap, f) > 0) {
    const char *j = strchr(line, '{'); /* a line may carry a prefix ([r0] ...) */
    if (!j) continue;
    double st = field(j, "\"step\""), loss = field(j, "\"loss\""), vl = field(j, "\"val_loss\"");
    if (st != st) continue;
    if (loss == loss) {
      fprintf(s, "%.0f %.9g %.9g %.9g\n", st, loss, field(j, "\"lr\""), field(j, "\"tokens_per_s\""));
      ++*steps;
    } else if (vl == vl) {
      fprintf(v, "%.0f %.9g\n", st, vl);
      ++*vals;
    }
  }
  free(line);
  fclose(f);
  if (v) fclose(v);
  fprintf(s, "EOD\n$v%d << EOD\n%sEOD\n", i, vbuf ? vbuf : "");
  free(vbuf);
  if (!*steps)
    return yk_errorf(d, YK_EFORMAT, "%s has no JSON step lines (\"step\" and \"loss\"): plot a train.log_file, or "
                     "the output of `yoke train --json`", path);
  return 0;
}

int yk_plot_train_logs(const char *const *logs, int n, const char *out_png, const char *title, yk_diag *d) {
  char *sc = NULL;
  size_t sl = 0;
  FILE *s = open_memstream(&sc, &sl);
  if (!s) return yk_errorf(d, YK_ENOMEM, "out of memory");
  int rc = 0, any_val = 0;
  int *has_val = calloc((size_t)n, sizeof *has_val);
  for (int i = 0; !rc && i < n; i++) {
    int steps = 0;
    rc = read_log(logs[i], i, s, &steps, &has_val[i], d);
    any_val |= has_val[i] > 0;
  }
  fprintf(s, "set terminal png size 1400,900\nset output '%s'\nset termoption noenhanced\nset grid\nset key top right\n"
             "set offsets 0, 0, graph 0.05, graph 0.05\nset multiplot layout 2,2 title '%s'\nset xlabel 'step'\n", out_png, title ? title : "");
  static const char *const panel[4] = {"training loss", "validation loss", "learning rate", "tokens/s"};
  for (int p = 0; p < 4; p++) {
    fprintf(s, "set title '%s'\n", panel[p]);
    if (p == 1 && !any_val) {
      fprintf(s, "set label 1 'no validation lines in these logs' at graph 0.5,0.5 center\nplot [0:1] [0:1] -1 notitle\n"
                 "unset label 1\n");
      continue;
    }
    fprintf(s, "plot ");
    int first = 1;
    for (int i = 0; i < n; i++) {
      if (p == 1 && !has_val[i]) continue;
      /* a log's name, without its directory, names its curve */
      const char *base = strrchr(logs[i], '/') ? strrchr(logs[i], '/') + 1 : logs[i];
      fprintf(s, "%s$%c%d using 1:%d with %s lc %d title '%s'", first ? "" : ", ", p == 1 ? 'v' : 's', i,
              p == 1 ? 2 : p == 0 ? 2 : p + 1, p == 1 ? "linespoints" : "lines", i + 1, base);
      first = 0;
    }
    fputc('\n', s);
  }
  fprintf(s, "unset multiplot\n");
  fclose(s);
  if (!rc) rc = yk_plot_gnuplot(out_png, sc, d);
  free(sc);
  free(has_val);
  return rc;
}
