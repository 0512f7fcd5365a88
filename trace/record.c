/* record.c - the recorder: per-thread rings of fixed-size events, drained to
 * Chrome trace JSON at step boundaries (see yk_trace.h, docs/tracing.md).
 *
 * Each ring has one producer (the thread that opened the track) and one
 * consumer (whoever drains, under the trace's mutex): the producer publishes
 * an event by a release store of `head`, the consumer frees slots by a
 * release store of `tail`, so neither ever waits for the other. */
#include "yk_trace.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct ev {
  const yk_trace_name *n;
  int64_t t0, t1; /* ns, this host's monotonic clock */
  uint64_t id;
  double a0, a1;
  int kind;
} ev;

struct yk_trace_track {
  yk_trace *t;
  const char *name;
  int tid;
  ev *ring;
  size_t cap; /* a power of two */
  _Atomic size_t head, tail;
  _Atomic uint64_t dropped;
  yk_trace_track *next;
};

struct yk_trace {
  char path[4096];
  FILE *f;
  int rank, world;
  int64_t first, last;
  size_t ring_events;
  _Atomic int on;       /* inside the step window: recording */
  int failed;           /* the file could not be written: recording stopped for good */
  int64_t clock_offset_ns, clock_error_ns;
  pthread_mutex_t mu;   /* tracks list, file */
  yk_trace_track *tracks;
  int ntracks;
  uint64_t written;     /* events written */
};

void yk_trace_path_of(const char *path, int rank, int world, char *out, size_t cap) {
  size_t o = 0;
  int replaced = 0;
  for (const char *p = path; *p && o + 1 < cap;) {
    if (!strncmp(p, "{rank}", 6)) {
      int n = snprintf(out + o, cap - o, "%d", rank);
      o += n > 0 ? (size_t)n : 0;
      if (o >= cap) o = cap - 1;
      p += 6;
      replaced = 1;
    } else {
      out[o++] = *p++;
    }
  }
  out[o] = '\0';
  if (replaced || world <= 1) return;
  /* One file per rank even when the path does not say where the rank goes. */
  size_t len = strlen(out);
  if (len >= 5 && !strcmp(out + len - 5, ".json")) out[len -= 5] = '\0';
  snprintf(out + len, cap - len, ".rank%d.json", rank);
}

int yk_trace_open(const yk_trace_opts *o, yk_trace **out, yk_diag *d) {
  *out = NULL;
  yk_trace *t = calloc(1, sizeof *t);
  if (!t) return yk_errorf(d, YK_ENOMEM, "out of memory for the trace");
  yk_trace_path_of(o->path, o->rank, o->world, t->path, sizeof t->path);
  t->rank = o->rank;
  t->world = o->world;
  t->first = o->first_step;
  t->last = o->last_step;
  size_t cap = 1;
  while (cap < (o->ring_events ? o->ring_events : 16384)) cap <<= 1;
  t->ring_events = cap;
  pthread_mutex_init(&t->mu, NULL);
  t->f = fopen(t->path, "w");
  if (!t->f) {
    int rc = yk_errorf(d, YK_EIO, "train.trace: cannot create %s: %s", t->path, strerror(errno));
    pthread_mutex_destroy(&t->mu);
    free(t);
    return rc;
  }
  /* The events come first so a file cut short by a crash still holds them;
   * the metadata (clock offset, drops) is written at close. */
  fprintf(t->f, "{\"traceEvents\":[\n{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,"
          "\"args\":{\"name\":\"rank %d\"}},\n{\"name\":\"process_sort_index\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,"
          "\"args\":{\"sort_index\":%d}}", o->rank, o->rank, o->rank, o->rank);
  *out = t;
  return 0;
}

void yk_trace_set_clock(yk_trace *t, int64_t offset_ns, int64_t error_ns) {
  if (!t) return;
  t->clock_offset_ns = offset_ns;
  t->clock_error_ns = error_ns;
}

yk_trace_track *yk_trace_track_open(yk_trace *t, const char *name) {
  if (!t) return NULL;
  yk_trace_track *k = calloc(1, sizeof *k);
  if (!k) return NULL;
  k->ring = malloc(t->ring_events * sizeof *k->ring);
  if (!k->ring) {
    free(k);
    return NULL;
  }
  k->t = t;
  k->name = name;
  k->cap = t->ring_events;
  pthread_mutex_lock(&t->mu);
  k->tid = ++t->ntracks;
  /* appended, so tracks drain in the order they were opened */
  yk_trace_track **p = &t->tracks;
  while (*p) p = &(*p)->next;
  *p = k;
  pthread_mutex_unlock(&t->mu);
  return k;
}

void yk_trace_record(yk_trace_track *k, int kind, const yk_trace_name *n, int64_t t0_ns, int64_t t1_ns, uint64_t id,
                     double a0, double a1) {
  if (!atomic_load_explicit(&k->t->on, memory_order_relaxed)) return;
  size_t h = atomic_load_explicit(&k->head, memory_order_relaxed);
  if (h - atomic_load_explicit(&k->tail, memory_order_acquire) >= k->cap) {
    atomic_fetch_add_explicit(&k->dropped, 1, memory_order_relaxed);
    return;
  }
  k->ring[h & (k->cap - 1)] = (ev){.n = n, .t0 = t0_ns, .t1 = t1_ns, .id = id, .a0 = a0, .a1 = a1, .kind = kind};
  atomic_store_explicit(&k->head, h + 1, memory_order_release);
}

/* ---- JSON ---------------------------------------------------------------- */

static void num(FILE *f, double v) {
  /* Byte counts and indices stay exact; other values keep 6 digits. */
  if (v == (double)(int64_t)v && v < 9e15 && v > -9e15) fprintf(f, "%lld", (long long)v);
  else fprintf(f, "%.6g", v);
}

int yk_trace_shape_dims(uint64_t packed, int64_t dim[3]) {
  int n = (int)(packed >> 62), w = n <= 1 ? 62 : n == 2 ? 31 : 20;
  if (n < 1) n = 1;
  for (int i = 0; i < n; i++) dim[i] = (int64_t)((packed >> (w * (n - 1 - i))) & ((1ull << w) - 1));
  return n;
}

static void args(FILE *f, const ev *e) {
  const yk_trace_name *n = e->n;
  int shape = n->shape && e->kind == YK_TRACE_SPAN;
  if (!n->arg0 && !n->arg1 && !shape) return;
  fputs(",\"args\":{", f);
  if (shape) {
    int64_t dim[3];
    int nd = yk_trace_shape_dims(e->id, dim);
    fprintf(f, "\"%s\":\"", n->shape);
    for (int i = 0; i < nd; i++) fprintf(f, "%s%lld", i ? "x" : "", (long long)dim[i]);
    fprintf(f, "\"%s", n->arg0 || n->arg1 ? "," : "");
  }
  if (n->arg0) {
    fprintf(f, "\"%s\":", n->arg0);
    num(f, e->a0);
  }
  if (n->arg1) {
    fprintf(f, "%s\"%s\":", n->arg0 ? "," : "", n->arg1);
    num(f, e->a1);
  }
  fputc('}', f);
}

/* Timestamps are microseconds of this host's monotonic clock with ns digits. */
static void ts(FILE *f, const char *key, int64_t ns) { fprintf(f, ",\"%s\":%lld.%03lld", key, (long long)(ns / 1000), (long long)(ns % 1000)); }

static void write_event(yk_trace *t, const yk_trace_track *k, const ev *e) {
  FILE *f = t->f;
  const char *name = e->n->name, *cat = e->n->cat;
  switch (e->kind) {
  case YK_TRACE_SPAN:
    fprintf(f, ",\n{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"X\",\"pid\":%d,\"tid\":%d", name, cat, t->rank, k->tid);
    ts(f, "ts", e->t0);
    ts(f, "dur", e->t1 - e->t0);
    args(f, e);
    fputc('}', f);
    break;
  case YK_TRACE_COUNTER:
    fprintf(f, ",\n{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"C\",\"pid\":%d,\"tid\":%d", name, cat, t->rank, k->tid);
    ts(f, "ts", e->t0);
    fprintf(f, ",\"args\":{\"%s\":", e->n->arg0 ? e->n->arg0 : "value");
    num(f, e->a0);
    fputs("}}", f);
    break;
  case YK_TRACE_ASYNC:
    for (int end = 0; end < 2; end++) {
      fprintf(f, ",\n{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"%c\",\"pid\":%d,\"tid\":%d,\"id2\":{\"local\":\"0x%llx\"}",
              name, cat, end ? 'e' : 'b', t->rank, k->tid, (unsigned long long)e->id);
      ts(f, "ts", end ? e->t1 : e->t0);
      if (!end) args(f, e);
      fputc('}', f);
    }
    break;
  case YK_TRACE_FLOW_OUT:
  case YK_TRACE_FLOW_IN:
    fprintf(f, ",\n{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"%s\",\"pid\":%d,\"tid\":%d,\"id\":\"0x%llx\"", name, cat,
            e->kind == YK_TRACE_FLOW_OUT ? "s" : "f\",\"bp\":\"e", t->rank, k->tid, (unsigned long long)e->id);
    ts(f, "ts", e->t0);
    fputc('}', f);
    break;
  default: return;
  }
  t->written++;
}

/* Drain every ring into the file. Caller holds t->mu. */
static int drain(yk_trace *t, yk_diag *d) {
  for (yk_trace_track *k = t->tracks; k; k = k->next) {
    size_t tl = atomic_load_explicit(&k->tail, memory_order_relaxed);
    size_t h = atomic_load_explicit(&k->head, memory_order_acquire);
    for (; tl != h; tl++) write_event(t, k, &k->ring[tl & (k->cap - 1)]);
    atomic_store_explicit(&k->tail, h, memory_order_release);
  }
  if (!t->failed && (fflush(t->f) != 0 || ferror(t->f))) {
    t->failed = 1;
    atomic_store(&t->on, 0);
    return yk_errorf(d, YK_EIO, "train.trace: writing %s failed: %s; tracing stops", t->path, strerror(errno));
  }
  return 0;
}

void yk_trace_step_begin(yk_trace *t, int64_t step) {
  if (!t) return;
  int on = !t->failed && step >= t->first && (t->last < 0 || step <= t->last);
  atomic_store_explicit(&t->on, on, memory_order_relaxed);
}

int yk_trace_step_end(yk_trace *t, int64_t step, yk_diag *d) {
  if (!t || t->failed) return 0;
  int flush = t->last >= 0 && step == t->last;
  pthread_mutex_lock(&t->mu);
  for (yk_trace_track *k = t->tracks; k && !flush; k = k->next)
    flush = atomic_load_explicit(&k->head, memory_order_acquire) - atomic_load_explicit(&k->tail, memory_order_relaxed) >=
            k->cap / 2;
  int rc = flush ? drain(t, d) : 0;
  pthread_mutex_unlock(&t->mu);
  if (t->last >= 0 && step >= t->last) atomic_store(&t->on, 0);
  return rc;
}

int yk_trace_close(yk_trace *t, yk_diag *d) {
  if (!t) return 0;
  atomic_store(&t->on, 0);
  pthread_mutex_lock(&t->mu);
  int rc = drain(t, d);
  uint64_t dropped = 0;
  for (yk_trace_track *k = t->tracks; k; k = k->next) {
    fprintf(t->f, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":\"%s\"}}",
            t->rank, k->tid, k->name);
    dropped += atomic_load(&k->dropped);
  }
  char window[64];
  if (t->last >= 0) snprintf(window, sizeof window, "%lld-%lld", (long long)t->first, (long long)t->last);
  else snprintf(window, sizeof window, "%lld-", (long long)t->first);
  fprintf(t->f, "\n],\n\"displayTimeUnit\":\"ms\",\n\"metadata\":{\"yoke_trace_format\":%d,\"rank\":%d,\"world\":%d,"
          "\"clock\":\"CLOCK_MONOTONIC\",\"clock_offset_ns\":%lld,\"clock_error_ns\":%lld,\"steps\":\"%s\","
          "\"events\":%llu,\"dropped_events\":%llu}}\n",
          YK_TRACE_FORMAT_VERSION, t->rank, t->world, (long long)t->clock_offset_ns, (long long)t->clock_error_ns,
          window, (unsigned long long)t->written, (unsigned long long)dropped);
  if (fclose(t->f) != 0 && !rc) rc = yk_errorf(d, YK_EIO, "train.trace: closing %s failed: %s", t->path, strerror(errno));
  pthread_mutex_unlock(&t->mu);
  for (yk_trace_track *k = t->tracks, *nx; k; k = nx) {
    nx = k->next;
    free(k->ring);
    free(k);
  }
  pthread_mutex_destroy(&t->mu);
  free(t);
  return rc;
}

uint64_t yk_trace_rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f) return 0;
  unsigned long long size = 0, rss = 0;
  int n = fscanf(f, "%llu %llu", &size, &rss);
  fclose(f);
  long page = sysconf(_SC_PAGESIZE);
  return n == 2 && page > 0 ? rss * (uint64_t)page : 0;
}
