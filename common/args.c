/* args.c - the table-driven command-line parser every subcommand uses (see
 * yk_args_parse in yk_common.h). Two passes, so that a job file always sits
 * under every --set whatever their order on the line: the first pass finds
 * the positional arguments and checks every option's name and value; the
 * second loads the job file and applies the options in order. */
#include <stdlib.h>
#include <string.h>

#include "yk_common.h"

static const yk_opt *find_long(const yk_cmd_spec *s, const char *a, size_t n) {
  for (int i = 0; i < s->nopts; i++)
    if (strlen(s->opts[i].name) == n && !strncmp(s->opts[i].name, a, n)) return &s->opts[i];
  return NULL;
}

static const yk_opt *find_short(const yk_cmd_spec *s, char c) {
  for (int i = 0; i < s->nopts; i++)
    if (s->opts[i].alias && s->opts[i].alias == c) return &s->opts[i];
  return NULL;
}

static int takes_value(const yk_opt *o) { return o->kind != YK_OPT_FLAG; }

/* The closest option name, for "did you mean". */
static const char *nearest(const yk_cmd_spec *s, const char *a) {
  const char *best = NULL;
  int bd = 4;
  for (int i = 0; i < s->nopts; i++) {
    int dist = yk_edit_distance(a, s->opts[i].name);
    if (dist < bd) {
      bd = dist;
      best = s->opts[i].name;
    }
  }
  return best;
}

static int range_error(const yk_cmd_spec *s, const yk_opt *o, const char *v, yk_diag *d) {
  if (o->min == 0 && o->max == 0)
    return yk_errorf(d, YK_EUSAGE, "%s needs %s, got '%s'", o->name,
                     o->kind == YK_OPT_BYTES ? "a size such as 64, 4k or 1MiB" : "a number", v);
  return yk_errorf(d, YK_EUSAGE, "%s needs %s in [%.15g, %.15g], got '%s'", o->name,
                   o->kind == YK_OPT_INT ? "an integer" : o->kind == YK_OPT_BYTES ? "a size" : "a number", o->min,
                   o->max, v);
}

static int in_range(const yk_opt *o, double x) { return (o->min == 0 && o->max == 0) || (x >= o->min && x <= o->max); }

/* Check one option's value and, when `store`, write it to opts (CONFIG rows:
 * to cfg). */
static int apply(const yk_cmd_spec *s, const yk_opt *o, const char *v, void *opts, yk_config *cfg, int store,
                 yk_diag *d) {
  char *field = (char *)opts + o->off;
  switch (o->kind) {
  case YK_OPT_FLAG:
    if (store) *(int *)field = 1;
    return 0;
  case YK_OPT_STR:
    if (store) *(const char **)field = v;
    return 0;
  case YK_OPT_INT: {
    int64_t x;
    if (yk_parse_i64(v, &x) || !in_range(o, (double)x)) return range_error(s, o, v, d);
    if (store) *(int64_t *)field = x;
    return 0;
  }
  case YK_OPT_NUM: {
    double x;
    if (yk_parse_f64(v, &x) || !in_range(o, x)) return range_error(s, o, v, d);
    if (store) *(double *)field = x;
    return 0;
  }
  case YK_OPT_BYTES: {
    uint64_t x;
    if (yk_parse_bytes(v, &x) || !in_range(o, (double)x)) return range_error(s, o, v, d);
    if (store) *(uint64_t *)field = x;
    return 0;
  }
  case YK_OPT_CONFIG: {
    if (!s->has_config) return yk_errorf(d, YK_EINVAL, "option %s of 'yoke %s' sets a config key but the command has no config", o->name, s->name);
    if (!store || !cfg) return 0;
    if (!o->key) return yk_config_set(cfg, v, d);
    size_t n = strlen(o->key) + strlen(v) + 2;
    char *buf = malloc(n);
    if (!buf) return yk_errorf(d, YK_ENOMEM, "out of memory");
    snprintf(buf, n, "%s=%s", o->key, v);
    int rc = yk_config_set(cfg, buf, d);
    free(buf);
    return rc;
  }
  }
  return yk_errorf(d, YK_EINVAL, "option %s has an unknown kind", o->name);
}

/* One walk over argv: check every name and value and note where the
 * positional arguments are (their indexes in `pos`, when not NULL; *npos
 * counts them); when `store`, also write the values to opts and cfg. */
static int walk(const yk_cmd_spec *s, int argc, char **argv, void *opts, yk_config *cfg, int store, int *pos,
                int *npos, yk_diag *d) {
  int rc, only_pos = 0;
  *npos = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (only_pos || a[0] != '-' || !a[1]) {
      if (pos) pos[*npos] = i;
      ++*npos;
      if (s->rest_positional) only_pos = 1;
      continue;
    }
    if (!strcmp(a, "--")) {
      only_pos = 1;
      continue;
    }
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) return YK_ARGS_HELP;
    const yk_opt *o;
    const char *v = NULL;
    if (a[1] == '-') {
      const char *eq = strchr(a, '=');
      o = find_long(s, a, eq ? (size_t)(eq - a) : strlen(a));
      if (eq) v = eq + 1;
    } else {
      o = a[2] ? NULL : find_short(s, a[1]);
    }
    if (!o) {
      const char *near = nearest(s, a);
      if (near) return yk_errorf(d, YK_EUSAGE, "unknown option '%s' (did you mean %s?)", a, near);
      return yk_errorf(d, YK_EUSAGE, "unknown option '%s'", a);
    }
    if (!takes_value(o) && v) return yk_errorf(d, YK_EUSAGE, "%s takes no value, got '%s'", o->name, a);
    if (takes_value(o) && !v) {
      if (i + 1 >= argc) return yk_errorf(d, YK_EUSAGE, "%s needs a value (%s)", o->name, o->meta ? o->meta : "VALUE");
      v = argv[++i];
    }
    if ((rc = apply(s, o, v, opts, cfg, store, d)) != 0) return rc;
  }
  return 0;
}

/* Stable partition of argv[1..argc): everything but the positional
 * arguments at the indexes pos[0..n) (ascending) first, then those. */
static int move_positionals_last(int argc, char **argv, const int *pos, int n, yk_diag *d) {
  char **tmp = malloc((size_t)argc * sizeof *tmp);
  if (!tmp) return yk_errorf(d, YK_ENOMEM, "out of memory parsing the command line");
  int k = 0, p = 0;
  for (int i = 1; i < argc; i++) {
    if (p < n && pos[p] == i) p++;
    else tmp[k++] = argv[i];
  }
  for (int j = 0; j < n; j++) tmp[k++] = argv[pos[j]];
  memcpy(argv + 1, tmp, (size_t)(argc - 1) * sizeof *argv);
  free(tmp);
  return 0;
}

int yk_args_parse(const yk_cmd_spec *s, int argc, char **argv, void *opts, yk_diag *d) {
  yk_config *cfg = s->has_config ? (yk_config *)((char *)opts + s->cfg_off) : NULL;
  int *idx = malloc((size_t)(argc > 0 ? argc : 1) * sizeof *idx), npos = 0;
  if (!idx) return yk_errorf(d, YK_ENOMEM, "out of memory parsing the command line");
  /* The first walk checks everything before anything is stored or loaded. */
  int rc = walk(s, argc, argv, opts, cfg, 0, idx, &npos, d);
  if (!rc) rc = move_positionals_last(argc, argv, idx, npos, d);
  free(idx);
  if (rc) return rc;
  char *const *pos = argv + argc - npos;
  int job = s->job_positional && npos > 0;
  int nargs = npos - job;
  if (nargs < s->min_pos)
    return yk_errorf(d, YK_EUSAGE, "missing argument%s: usage: yoke %s %s", s->min_pos - nargs > 1 ? "s" : "", s->name,
                     s->synopsis);
  if (nargs > s->max_pos)
    return yk_errorf(d, YK_EUSAGE, "unexpected argument '%s'%s", pos[job + s->max_pos],
                     job ? " (only one job file is read)" : "");
  if (s->max_pos > 0) {
    yk_args_pos *out = (yk_args_pos *)((char *)opts + s->pos_off);
    out->v = pos + job;
    out->n = nargs;
  }
  /* The second walk sees the options first, then the positional arguments. */
  if (!cfg) return walk(s, argc, argv, opts, NULL, 1, NULL, &npos, d);
  yk_config_defaults(cfg);
  if (job && (rc = yk_config_load_file(cfg, pos[0], d)) != 0) return rc;
  if ((rc = walk(s, argc, argv, opts, cfg, 1, NULL, &npos, d)) != 0) return rc;
  return yk_config_validate(cfg, d);
}

void yk_args_usage(const yk_cmd_spec *s, FILE *out) {
  const char *syn = s->synopsis ? s->synopsis : "[options]";
  fprintf(out, "usage: yoke %s%s%s\n", s->name, *syn ? " " : "", syn);
  if (s->about) fprintf(out, "\n%s\n", s->about);
  if (s->nopts) fputs("\noptions:\n", out);
  for (int i = 0; i < s->nopts; i++) {
    const yk_opt *o = &s->opts[i];
    char left[96];
    const char *meta = o->kind == YK_OPT_FLAG ? "" : o->meta ? o->meta : "VALUE";
    if (o->alias) snprintf(left, sizeof left, "-%c, %s%s%s", o->alias, o->name, *meta ? " " : "", meta);
    else snprintf(left, sizeof left, "%s%s%s", o->name, *meta ? " " : "", meta);
    fprintf(out, "  %-26s%s%s\n", left, strlen(left) > 25 ? "\n                            " : "",
            o->help ? o->help : "");
  }
  fputs("  -h, --help                this help\n", out);
  if (s->epilog) fprintf(out, "\n%s", s->epilog);
}

int yk_args_exit_code(const yk_cmd_spec *s, int rc, const yk_diag *d) {
  if (rc == 0) return -1;
  if (rc == YK_ARGS_HELP) {
    yk_args_usage(s, stdout);
    return 0;
  }
  if (rc == YK_EUSAGE) fprintf(stderr, "yoke %s: %s (see yoke %s --help)\n", s->name, yk_diag_msg(d, rc), s->name);
  else fprintf(stderr, "yoke %s: %s\n", s->name, yk_diag_msg(d, rc));
  return 2;
}
