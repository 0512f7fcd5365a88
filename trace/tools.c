/* tools.c - reading traces: `yoke trace merge` (every rank on rank 0's
 * clock, one file) and `yoke trace top` (the profiler table). Both read the
 * files yk_trace writes (docs/tracing.md); top also reads merged files. */
#include "yk_trace.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One input file, parsed. */
typedef struct tfile {
  json_t *root;
  json_t *events; /* borrowed from root */
  int rank;
  int64_t offset_ns, error_ns;
} tfile;

static int load(const char *path, tfile *f, int need_meta, yk_diag *d) {
  json_error_t je;
  memset(f, 0, sizeof *f);
  f->root = json_load_file(path, 0, &je);
  if (!f->root)
    return yk_errorf(d, YK_EFORMAT, "%s:%d: not a JSON trace (%s); a trace cut short by a crash lacks its end", path,
                     je.line, je.text);
  f->events = json_object_get(f->root, "traceEvents");
  json_t *meta = json_object_get(f->root, "metadata");
  if (!json_is_array(f->events))
    return yk_errorf(d, YK_EFORMAT, "%s: no \"traceEvents\" array; is it a Chrome trace?", path);
  json_t *v = json_object_get(meta, "yoke_trace_format");
  if (need_meta && (!json_is_integer(v) || !json_is_integer(json_object_get(meta, "rank"))))
    return yk_errorf(d, YK_EFORMAT, "%s: no yoke metadata (rank, clock offset); write it with train.trace", path);
  if (json_is_integer(v) && json_integer_value(v) > YK_TRACE_FORMAT_VERSION)
    return yk_errorf(d, YK_EFORMAT, "%s: trace format %lld is newer than this yoke reads (%d)", path,
                     (long long)json_integer_value(v), YK_TRACE_FORMAT_VERSION);
  f->rank = (int)json_integer_value(json_object_get(meta, "rank"));
  f->offset_ns = json_integer_value(json_object_get(meta, "clock_offset_ns"));
  f->error_ns = json_integer_value(json_object_get(meta, "clock_error_ns"));
  return 0;
}

static void unload(tfile *f, int n) {
  for (int i = 0; i < n; i++) json_decref(f[i].root);
  free(f);
}

/* ---- merge --------------------------------------------------------------- */

typedef struct sorted {
  json_t *e;
  double ts;
  size_t idx;
} sorted;

static int by_time(const void *a, const void *b) {
  const sorted *x = a, *y = b;
  /* metadata events (no ts) first, then time, then input order */
  if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
  return x->idx < y->idx ? -1 : x->idx > y->idx;
}

int yk_trace_merge(const yk_trace_merge_opts *o, FILE *report, yk_diag *d) {
  if (o->n_inputs < 1) return yk_errorf(d, YK_EINVAL, "trace merge: no input traces");
  tfile *f = calloc((size_t)o->n_inputs, sizeof *f);
  if (!f) return yk_errorf(d, YK_ENOMEM, "out of memory");
  int rc = 0;
  size_t total = 0;
  for (int i = 0; i < o->n_inputs && !rc; i++) {
    if ((rc = load(o->inputs[i], &f[i], 1, d)) != 0) break;
    for (int j = 0; j < i; j++)
      if (f[j].rank == f[i].rank)
        rc = yk_errorf(d, YK_EINVAL, "trace merge: %s and %s are both rank %d", o->inputs[j], o->inputs[i], f[i].rank);
    total += json_array_size(f[i].events);
  }
  sorted *all = rc ? NULL : malloc((total ? total : 1) * sizeof *all);
  if (!rc && !all) rc = yk_errorf(d, YK_ENOMEM, "out of memory for %zu events", total);
  if (rc) {
    free(all);
    unload(f, o->n_inputs);
    return rc;
  }
  size_t n = 0;
  int64_t max_err = 0;
  int worst = 0;
  for (int i = 0; i < o->n_inputs; i++) {
    /* local = rank0 + offset: rank 0's time of a local stamp is local - offset */
    double shift_us = (double)f[i].offset_ns / 1000.0;
    if (f[i].error_ns > max_err) max_err = f[i].error_ns, worst = f[i].rank;
    size_t k;
    json_t *e;
    json_array_foreach(f[i].events, k, e) {
      json_t *t = json_object_get(e, "ts");
      double ts = -INFINITY;
      if (json_is_number(t)) {
        ts = json_number_value(t) - shift_us;
        json_object_set_new(e, "ts", json_real(ts));
      }
      all[n] = (sorted){.e = e, .ts = ts, .idx = n};
      n++;
    }
  }
  qsort(all, n, sizeof *all, by_time);
  json_t *root = json_object(), *events = json_array(), *meta = json_object(), *ranks = json_array();
  for (size_t i = 0; i < n; i++) json_array_append(events, all[i].e);
  for (int i = 0; i < o->n_inputs; i++) {
    json_t *r = json_object();
    json_object_set_new(r, "rank", json_integer(f[i].rank));
    json_object_set_new(r, "file", json_string(o->inputs[i]));
    json_object_set_new(r, "clock_offset_ns", json_integer(f[i].offset_ns));
    json_object_set_new(r, "clock_error_ns", json_integer(f[i].error_ns));
    json_array_append_new(ranks, r);
  }
  json_object_set_new(meta, "yoke_trace_format", json_integer(YK_TRACE_FORMAT_VERSION));
  json_object_set_new(meta, "merged", json_true());
  json_object_set_new(meta, "clock", json_string("rank 0's CLOCK_MONOTONIC"));
  json_object_set_new(meta, "max_clock_error_ns", json_integer(max_err));
  json_object_set_new(meta, "ranks", ranks);
  json_object_set_new(root, "traceEvents", events);
  json_object_set_new(root, "displayTimeUnit", json_string("ms"));
  json_object_set_new(root, "metadata", meta);
  /* 16 digits: microseconds since boot with nanosecond decimals */
  if (json_dump_file(root, o->out, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(16)) != 0)
    rc = yk_errorf(d, YK_EIO, "trace merge: cannot write %s", o->out);
  else if (report)
    fprintf(report, "merged %d rank trace(s), %zu events, into %s; clocks aligned to rank 0 within +-%.1f us "
            "(worst: rank %d)\n", o->n_inputs, n, o->out, (double)max_err / 1000.0, worst);
  json_decref(root);
  free(all);
  unload(f, o->n_inputs);
  return rc;
}

/* ---- top ----------------------------------------------------------------- */

typedef struct row {
  char key[256]; /* name \t cat \t args */
  const char *name, *cat;
  char args[160];
  double total_us;
  uint64_t count;
} row;

typedef struct rank_sum {
  int rank;
  uint64_t steps;
  double step_us, wait_us;
} rank_sum;

/* Kernel spans (train.trace_detail=kernel) nest inside the op and layer
 * spans: they get their own table, the operators' (kernel, shape, layer). */
static int is_kernel(const row *r) { return !strcmp(r->cat, "kernel"); }

static int by_total(const void *a, const void *b) {
  const row *x = a, *y = b;
  return x->total_us < y->total_us ? 1 : x->total_us > y->total_us ? -1 : strcmp(x->key, y->key);
}

static int by_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static rank_sum *rank_of(rank_sum **rs, int *nr, int rank) {
  for (int i = 0; i < *nr; i++)
    if ((*rs)[i].rank == rank) return &(*rs)[i];
  rank_sum *p = realloc(*rs, (size_t)(*nr + 1) * sizeof *p);
  if (!p) return NULL;
  *rs = p;
  p[*nr] = (rank_sum){.rank = rank};
  return &p[(*nr)++];
}

int yk_trace_top(const yk_trace_top_opts *o, FILE *out, yk_diag *d) {
  if (o->n_inputs < 1) return yk_errorf(d, YK_EINVAL, "trace top: no input traces");
  tfile *f = calloc((size_t)o->n_inputs, sizeof *f);
  row *rows = NULL;
  rank_sum *rs = NULL;
  int nrows = 0, caprows = 0, nr = 0, rc = 0;
  if (!f) return yk_errorf(d, YK_ENOMEM, "out of memory");
  for (int i = 0; i < o->n_inputs && !rc; i++) {
    if ((rc = load(o->inputs[i], &f[i], 0, d)) != 0) break;
    size_t k;
    json_t *e;
    json_array_foreach(f[i].events, k, e) {
      const char *ph = json_string_value(json_object_get(e, "ph"));
      const char *name = json_string_value(json_object_get(e, "name"));
      const char *cat = json_string_value(json_object_get(e, "cat"));
      if (!ph || strcmp(ph, "X") || !name || !cat) continue;
      double dur = json_number_value(json_object_get(e, "dur"));
      rank_sum *r = rank_of(&rs, &nr, (int)json_integer_value(json_object_get(e, "pid")));
      if (!r) {
        rc = yk_errorf(d, YK_ENOMEM, "out of memory");
        break;
      }
      if (!strcmp(cat, "step")) {
        r->steps++;
        r->step_us += dur;
        continue;
      }
      if (!strcmp(cat, "wait")) r->wait_us += dur;
      char a[160] = "";
      json_t *args = json_object_get(e, "args");
      if (json_object_size(args)) {
        char *s = json_dumps(args, JSON_COMPACT | JSON_SORT_KEYS);
        snprintf(a, sizeof a, "%s", s ? s : "");
        free(s);
      }
      char key[256];
      snprintf(key, sizeof key, "%s\t%s\t%s", name, cat, a);
      int j = 0;
      while (j < nrows && strcmp(rows[j].key, key)) j++;
      if (j == nrows) {
        if (nrows == caprows) {
          row *p = realloc(rows, (size_t)(caprows = caprows ? 2 * caprows : 64) * sizeof *p);
          if (!p) {
            rc = yk_errorf(d, YK_ENOMEM, "out of memory");
            break;
          }
          rows = p;
        }
        memset(&rows[j], 0, sizeof rows[j]);
        snprintf(rows[j].key, sizeof rows[j].key, "%s", key);
        rows[j].name = name; /* borrowed from f[i].root, freed at the end */
        rows[j].cat = cat;
        snprintf(rows[j].args, sizeof rows[j].args, "%s", a);
        nrows++;
      }
      rows[j].total_us += dur;
      rows[j].count++;
    }
  }
  if (!rc && nr == 0) rc = yk_errorf(d, YK_EFORMAT, "trace top: %s has no spans", o->inputs[0]);
  if (rc) goto out;
  qsort(rows, (size_t)nrows, sizeof *rows, by_total);
  /* Totals over ranks: a span's per-step time is its total over every rank's
   * steps; communication not hidden by compute is the time ranks sat in a
   * wait span; a rank's busy time is its step minus its waits (a slow rank
   * makes the others wait, so the slowest is the one that waited least). */
  uint64_t steps = 0;
  double step_us = 0, wait_us = 0;
  double *busy = malloc((size_t)nr * sizeof *busy);
  if (!busy) {
    rc = yk_errorf(d, YK_ENOMEM, "out of memory");
    goto out;
  }
  int slow = -1;
  for (int i = 0; i < nr; i++) {
    steps += rs[i].steps;
    step_us += rs[i].step_us;
    wait_us += rs[i].wait_us;
    busy[i] = rs[i].steps ? (rs[i].step_us - rs[i].wait_us) / (double)rs[i].steps : 0;
    if (slow < 0 || busy[i] > busy[slow]) slow = i;
  }
  double slow_busy = busy[slow];
  qsort(busy, (size_t)nr, sizeof *busy, by_double);
  double median = nr % 2 ? busy[nr / 2] : (busy[nr / 2 - 1] + busy[nr / 2]) / 2;
  free(busy);
  double excess = median > 0 ? slow_busy / median - 1 : 0;
  double exposed = step_us > 0 ? wait_us / step_us : 0;
  int limit = o->limit > 0 ? o->limit : 20; /* per table */
  double per = steps ? 1.0 / (double)steps : 0;
  if (o->json) {
    json_t *root = json_object(), *ranks = json_array(), *spans = json_array(), *s = json_object();
    json_object_set_new(root, "ranks", json_integer(nr));
    json_object_set_new(root, "steps", json_integer((json_int_t)steps));
    json_object_set_new(root, "step_ms", json_real(step_us * per / 1e3));
    json_object_set_new(root, "exposed_comm_share", json_real(exposed));
    for (int i = 0; i < nr; i++) {
      json_t *r = json_object();
      double p = rs[i].steps ? 1.0 / (double)rs[i].steps : 0;
      json_object_set_new(r, "rank", json_integer(rs[i].rank));
      json_object_set_new(r, "steps", json_integer((json_int_t)rs[i].steps));
      json_object_set_new(r, "step_ms", json_real(rs[i].step_us * p / 1e3));
      json_object_set_new(r, "busy_ms", json_real((rs[i].step_us - rs[i].wait_us) * p / 1e3));
      json_object_set_new(r, "exposed_comm_share", json_real(rs[i].step_us > 0 ? rs[i].wait_us / rs[i].step_us : 0));
      json_array_append_new(ranks, r);
    }
    json_object_set_new(root, "per_rank", ranks);
    json_object_set_new(s, "rank", json_integer(rs[slow].rank));
    json_object_set_new(s, "busy_ms", json_real(slow_busy / 1e3));
    json_object_set_new(s, "median_busy_ms", json_real(median / 1e3));
    json_object_set_new(s, "excess", json_real(excess));
    json_object_set_new(root, "slowest_rank", s);
    json_t *kernels = json_array();
    for (int pass = 0; pass < 2; pass++)
      for (int i = 0, shown = 0; i < nrows && shown < limit; i++) {
        if (is_kernel(&rows[i]) != pass) continue;
        shown++;
        json_t *r = json_object();
        json_object_set_new(r, "name", json_string(rows[i].name));
        json_object_set_new(r, "cat", json_string(rows[i].cat));
        json_object_set_new(r, "args", rows[i].args[0] ? json_loads(rows[i].args, 0, NULL) : json_object());
        json_object_set_new(r, "count", json_integer((json_int_t)rows[i].count));
        json_object_set_new(r, "total_ms", json_real(rows[i].total_us / 1e3));
        json_object_set_new(r, "ms_per_step", json_real(rows[i].total_us * per / 1e3));
        json_object_set_new(r, "step_share", json_real(step_us > 0 ? rows[i].total_us / step_us : 0));
        json_array_append_new(pass ? kernels : spans, r);
      }
    json_object_set_new(root, "spans", spans);
    json_object_set_new(root, "kernels", kernels);
    char *txt = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (txt) fprintf(out, "%s\n", txt);
    free(txt);
    json_decref(root);
  } else {
    fprintf(out, "%d rank(s), %llu steps, %.2f ms per step\n", nr, (unsigned long long)steps, step_us * per / 1e3);
    fprintf(out, "communication not hidden by compute: %.1f%% of the step\n", exposed * 100);
    fprintf(out, "slowest rank: %d, busy %.2f ms per step, %+.1f%% against the median rank (%.2f ms)\n\n",
            rs[slow].rank, slow_busy / 1e3, excess * 100, median / 1e3);
    for (int pass = 0; pass < 2; pass++) {
      int shown = 0;
      for (int i = 0; i < nrows && shown < limit; i++) {
        if (is_kernel(&rows[i]) != pass) continue;
        if (!shown++) {
          if (pass) fprintf(out, "\nhottest operators (kernel, shape, layer):\n");
          fprintf(out, "%10s %9s %6s %8s  %-8s %-20s %s\n", "total_ms", "ms/step", "%step", "count", "cat", "name",
                  "args");
        }
        fprintf(out, "%10.2f %9.3f %5.1f%% %8llu  %-8s %-20s %s\n", rows[i].total_us / 1e3,
                rows[i].total_us * per / 1e3, step_us > 0 ? rows[i].total_us / step_us * 100 : 0,
                (unsigned long long)rows[i].count, rows[i].cat, rows[i].name, rows[i].args);
      }
    }
  }
out:
  free(rows);
  free(rs);
  unload(f, o->n_inputs);
  return rc;
}
