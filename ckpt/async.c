/* async.c - the asynchronous checkpoint writer: snapshot copy at the step
 * boundary (or deferred into the thread), compression + write + commit in a
 * background thread while training continues. */
#include "ckpt_internal.h"
#include "yk_partition.h"
#include "yk_trace.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { OP_NONE = 0, OP_SAVE, OP_COMMIT, OP_QUIT };

struct yk_ckpt_writer {
  yk_ckpt_opts o;
  char dir[4096];
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int op, busy, copy_done, err;
  yk_diag errd;
  int64_t step;
  int have_saved;
  /* snapshot (owned; buffers reused across saves) */
  int nparts;
  ck_arena *meta;     /* copies of the arena descriptors (tensors owned) */
  ck_part *parts;
  uint8_t **buf;
  size_t *cap;
  int nbuf;
  ck_blob_ref *blobs;
  int nblobs;
  char *model_json, *layout_json, *config_yaml;
  yk_ckpt_write_stats st, cur;
  yk_trace_track *trk; /* the thread's timeline track (yk_ckpt_writer_trace), under mu; NULL: none */
};

static const yk_trace_name T_COPY = {"writer copy", "ckpt", "step", "bytes"};
static const yk_trace_name T_WRITE = {"writer write", "ckpt", "step", "bytes"};
static const yk_trace_name T_COMMIT = {"writer commit", "ckpt", "step", NULL};

/* One span of the thread's work [t0, now). Under mu, so that once
 * yk_ckpt_writer_trace(w, NULL) returns no span reaches the old track. */
static void span(yk_ckpt_writer *w, const yk_trace_name *n, int64_t t0, double bytes) {
  pthread_mutex_lock(&w->mu);
  if (w->trk) yk_trace_record(w->trk, YK_TRACE_SPAN, n, t0, (int64_t)yk_now_ns(), 0, (double)w->step, bytes);
  pthread_mutex_unlock(&w->mu);
}

void yk_ckpt_writer_trace(yk_ckpt_writer *w, yk_trace_track *k) {
  if (!w) return;
  pthread_mutex_lock(&w->mu);
  w->trk = k;
  pthread_mutex_unlock(&w->mu);
}

typedef struct {
  yk_ckpt_writer *w;
  uint64_t total;
  int threads;
} copy_ctx;

/* Copy the slices in `threads` equal byte ranges (memory bandwidth bound). */
static void copy_worker(void *arg, int worker) {
  copy_ctx *c = arg;
  uint64_t lo = c->total * (uint64_t)worker / (uint64_t)c->threads;
  uint64_t hi = c->total * (uint64_t)(worker + 1) / (uint64_t)c->threads;
  uint64_t base = 0;
  for (int i = 0; i < c->w->nparts && base < hi; i++) {
    const ck_part *p = &c->w->parts[i];
    size_t es = yk_dtype_size(p->arena->dtype);
    uint64_t bytes = p->slice ? p->len * es : 0; /* a fill arena: no snapshot */
    uint64_t a = lo > base ? lo : base, b = hi < base + bytes ? hi : base + bytes;
    if (a < b) {
      const uint8_t *src = p->src;
      memcpy(c->w->buf[i] + (a - base), src + (a - base), b - a);
    }
    base += bytes;
  }
}

static uint64_t do_copy(yk_ckpt_writer *w) {
  double t0 = yk_now_s();
  copy_ctx c = {.w = w, .threads = ck_threads(w->o.threads)};
  for (int i = 0; i < w->nparts; i++)
    if (w->parts[i].slice) c.total += w->parts[i].len * yk_dtype_size(w->parts[i].arena->dtype);
  if (c.total < (64u << 20)) c.threads = 1;
  ck_run_threads(c.threads, copy_worker, &c);
  double dt = yk_now_s() - t0;
  pthread_mutex_lock(&w->mu);
  w->cur.copy_s = dt;
  pthread_mutex_unlock(&w->mu);
  return c.total;
}

static void set_err(yk_ckpt_writer *w, int rc, const yk_diag *d) {
  if (w->err) return;
  w->err = rc;
  w->errd = *d;
}

static void *thread_main(void *arg) {
  yk_ckpt_writer *w = arg;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    while (w->op == OP_NONE) pthread_cond_wait(&w->cv, &w->mu);
    int op = w->op;
    if (op == OP_QUIT) break;
    pthread_mutex_unlock(&w->mu);
    yk_diag d = {0};
    int rc = 0;
    int64_t t0 = (int64_t)yk_now_ns();
    if (op == OP_SAVE) {
      if (!w->copy_done) {
        uint64_t bytes = do_copy(w);
        span(w, &T_COPY, t0, (double)bytes);
        t0 = (int64_t)yk_now_ns();
        pthread_mutex_lock(&w->mu);
        w->copy_done = 1;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
      }
      ck_plan p = {.step = w->step, .rank = w->o.rank, .world = w->o.world, .parts = w->parts, .nparts = w->nparts,
                   .blobs = w->blobs, .nblobs = w->nblobs, .model_json = w->model_json,
                   .layout_json = w->layout_json, .config_yaml = w->config_yaml};
      yk_ckpt_write_stats st = {0};
      rc = ck_write_plan(w->dir, &p, w->o.level, w->o.threads, w->o.buffered_io, &st, &d);
      pthread_mutex_lock(&w->mu);
      st.copy_s = w->cur.copy_s;
      pthread_mutex_unlock(&w->mu);
      span(w, &T_WRITE, t0, (double)st.file_bytes);
      if (!rc) {
        pthread_mutex_lock(&w->mu);
        w->st = st;
        pthread_mutex_unlock(&w->mu);
      } else yk_log(w->o.log, YK_LOG_ERROR, "ckpt: save of step %lld failed: %s", (long long)w->step,
                  yk_diag_msg(&d, rc));
    } else if (op == OP_COMMIT) {
      rc = ck_commit(w->dir, w->step, w->o.world, w->o.keep, w->o.log, &d);
      span(w, &T_COMMIT, t0, 0);
      if (rc) yk_log(w->o.log, YK_LOG_ERROR, "ckpt: commit of step %lld failed: %s", (long long)w->step,
                     yk_diag_msg(&d, rc));
    }
    pthread_mutex_lock(&w->mu);
    if (rc) set_err(w, rc, &d);
    w->op = OP_NONE;
    w->busy = 0;
    pthread_cond_broadcast(&w->cv);
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

int yk_ckpt_writer_create(const yk_ckpt_opts *o, yk_ckpt_writer **out, yk_diag *d) {
  *out = NULL;
  if (!o || !o->dir || !*o->dir) return yk_errorf(d, YK_EINVAL, "no checkpoint directory given (ckpt.dir)");
  if (o->world < 1 || o->rank < 0 || o->rank >= o->world)
    return yk_errorf(d, YK_EINVAL, "rank %d of world %d is not valid", o->rank, o->world);
  if (o->level < -7 || o->level > 22) return yk_errorf(d, YK_EINVAL, "ckpt.level %d out of range -7..22", o->level);
  yk_ckpt_writer *w = calloc(1, sizeof *w);
  if (!w) return yk_errorf(d, YK_ENOMEM, "out of memory");
  w->o = *o;
  snprintf(w->dir, sizeof w->dir, "%s", o->dir);
  w->o.dir = w->dir;
  pthread_mutex_init(&w->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&w->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (pthread_create(&w->th, NULL, thread_main, w) != 0) {
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
    return yk_errorf(d, YK_ESYS, "cannot start the checkpoint writer thread");
  }
  *out = w;
  return 0;
}

static void free_snapshot_meta(yk_ckpt_writer *w) {
  for (int i = 0; i < w->nparts; i++) free(w->meta[i].tensors);
  free(w->meta);
  free(w->parts);
  w->meta = NULL;
  w->parts = NULL;
  w->nparts = 0;
  for (int i = 0; i < w->nblobs; i++) {
    free((void *)w->blobs[i].data);
    free((void *)w->blobs[i].name);
  }
  free(w->blobs);
  w->blobs = NULL;
  w->nblobs = 0;
  free(w->model_json);
  free(w->layout_json);
  free(w->config_yaml);
  w->model_json = w->layout_json = w->config_yaml = NULL;
}

/* Wait on the condition with an optional absolute monotonic deadline. */
static int cv_wait(yk_ckpt_writer *w, uint64_t deadline_ns) {
  if (!deadline_ns) return pthread_cond_wait(&w->cv, &w->mu);
  struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000ull), .tv_nsec = (long)(deadline_ns % 1000000000ull)};
  return pthread_cond_timedwait(&w->cv, &w->mu, &ts);
}

static int take_err(yk_ckpt_writer *w, yk_diag *d) {
  int rc = w->err;
  if (rc) {
    if (d) *d = w->errd;
    w->err = 0;
  }
  return rc;
}

/* Snapshot buffers for this rank's slice of every arena of s; allocated
 * (and so touched: yk_alloc zeroes) once and reused by later saves. */
static int ensure_buffers(yk_ckpt_writer *w, const yk_ckpt_state *s, yk_diag *d) {
  if (s->narenas > w->nbuf) {
    uint8_t **nb = realloc(w->buf, (size_t)s->narenas * sizeof *nb);
    if (nb) w->buf = nb;
    size_t *nc = realloc(w->cap, (size_t)s->narenas * sizeof *nc);
    if (nc) w->cap = nc;
    if (!nb || !nc) return yk_errorf(d, YK_ENOMEM, "out of memory");
    for (int i = w->nbuf; i < s->narenas; i++) {
      w->buf[i] = NULL;
      w->cap[i] = 0;
    }
    w->nbuf = s->narenas;
  }
  for (int i = 0; i < s->narenas; i++) {
    const ck_arena *a = &s->arenas[i];
    uint64_t lo, len;
    ck_arena_save_range(a, w->o.rank, w->o.world, &lo, &len);
    if (a->fill) continue; /* written without a snapshot */
    size_t need = len * yk_dtype_size(a->dtype);
    if (need > w->cap[i] || !w->buf[i]) {
      yk_free(w->buf[i]);
      w->buf[i] = yk_alloc(need ? need : 1);
      w->cap[i] = w->buf[i] ? need : 0;
      if (!w->buf[i])
        return yk_errorf(d, YK_ENOMEM, "out of memory for a %zu-byte snapshot of arena '%s'", need, a->name);
    }
  }
  return 0;
}

int yk_ckpt_writer_prepare(yk_ckpt_writer *w, const yk_ckpt_state *s, yk_diag *d) {
  pthread_mutex_lock(&w->mu);
  int busy = w->busy;
  pthread_mutex_unlock(&w->mu);
  if (busy) return yk_errorf(d, YK_EBUSY, "checkpoint writer is busy; prepare before the first save");
  return ensure_buffers(w, s, d);
}

int yk_ckpt_writer_save(yk_ckpt_writer *w, const yk_ckpt_state *s, int64_t step, unsigned flags, yk_diag *d) {
  pthread_mutex_lock(&w->mu);
  int rc = take_err(w, d);
  if (!rc && w->busy)
    rc = yk_errorf(d, YK_EBUSY, "checkpoint step %lld is still being written; call yk_ckpt_writer_wait first",
                   (long long)w->step);
  pthread_mutex_unlock(&w->mu);
  if (rc) return rc;
  if (step < 0) return yk_errorf(d, YK_EINVAL, "checkpoint step %lld is negative", (long long)step);
  /* The thread is idle: the snapshot fields are ours until we queue the op. */
  free_snapshot_meta(w);
  pthread_mutex_lock(&w->mu);
  memset(&w->cur, 0, sizeof w->cur);
  pthread_mutex_unlock(&w->mu);
  w->meta = calloc((size_t)s->narenas + 1, sizeof *w->meta);
  w->parts = calloc((size_t)s->narenas + 1, sizeof *w->parts);
  if (!w->meta || !w->parts) return yk_errorf(d, YK_ENOMEM, "out of memory");
  rc = 0;
  if ((rc = ensure_buffers(w, s, d))) return rc;
  for (int i = 0; i < s->narenas; i++) {
    ck_arena *m = &w->meta[i];
    *m = s->arenas[i];
    m->tensors = NULL;
    if (m->ntensors) {
      m->tensors = malloc((size_t)m->ntensors * sizeof *m->tensors);
      if (!m->tensors) return yk_errorf(d, YK_ENOMEM, "out of memory");
      memcpy(m->tensors, s->arenas[i].tensors, (size_t)m->ntensors * sizeof *m->tensors);
    }
    w->nparts = i + 1;
    ck_part *p = &w->parts[i];
    p->arena = m;
    ck_arena_save_range(m, w->o.rank, w->o.world, &p->lo, &p->len);
    p->slice = m->fill ? NULL : w->buf[i];
    if ((rc = ck_arena_range(m, p->lo, p->len, &p->src, d))) return rc;
  }
  ck_blob_ref *refs;
  int nb;
  if (ck_state_blob_refs(s, w->o.rank, &refs, &nb)) return yk_errorf(d, YK_ENOMEM, "out of memory");
  w->blobs = refs;
  for (int i = 0; i < nb; i++) {
    uint8_t *c = malloc(refs[i].len ? refs[i].len : 1);
    char *n = strdup(refs[i].name);
    if (c && refs[i].len) memcpy(c, refs[i].data, refs[i].len);
    refs[i].data = c;
    refs[i].name = n;
    w->nblobs = i + 1;
    if (!c || !n) return yk_errorf(d, YK_ENOMEM, "out of memory copying blobs");
  }
  w->nblobs = nb;
  if (w->o.rank == 0) {
    w->model_json = s->model_json ? strdup(s->model_json) : NULL;
    w->layout_json = s->layout_json ? strdup(s->layout_json) : NULL;
    w->config_yaml = s->config_yaml ? strdup(s->config_yaml) : NULL;
  }
  int defer = (flags & YK_CKPT_DEFER_COPY) != 0;
  if (!defer) do_copy(w);
  pthread_mutex_lock(&w->mu);
  w->step = step;
  w->have_saved = 1;
  w->copy_done = !defer;
  w->busy = 1;
  w->op = OP_SAVE;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  return 0;
}

int yk_ckpt_writer_release(yk_ckpt_writer *w, uint64_t deadline_ns, yk_diag *d) {
  pthread_mutex_lock(&w->mu);
  int rc = 0;
  while (!w->copy_done && w->busy) {
    if (cv_wait(w, deadline_ns) == ETIMEDOUT && !w->copy_done) {
      rc = yk_errorf(d, YK_ETIMEDOUT, "deadline passed waiting for the snapshot copy of checkpoint step %lld",
                     (long long)w->step);
      break;
    }
  }
  pthread_mutex_unlock(&w->mu);
  return rc;
}

int yk_ckpt_writer_poll(yk_ckpt_writer *w) {
  pthread_mutex_lock(&w->mu);
  int rc = take_err(w, NULL);
  if (!rc) rc = w->busy ? 0 : 1;
  pthread_mutex_unlock(&w->mu);
  return rc;
}

int yk_ckpt_writer_commit(yk_ckpt_writer *w, yk_diag *d) {
  pthread_mutex_lock(&w->mu);
  int rc = take_err(w, d);
  if (!rc && w->busy)
    rc = yk_errorf(d, YK_EBUSY, "checkpoint step %lld is still being written; commit after every rank's poll is 1",
                   (long long)w->step);
  if (!rc && !w->have_saved) rc = yk_errorf(d, YK_EINVAL, "nothing to commit: no checkpoint was saved");
  if (!rc) {
    w->busy = 1;
    w->op = OP_COMMIT;
    pthread_cond_broadcast(&w->cv);
  }
  pthread_mutex_unlock(&w->mu);
  return rc;
}

int yk_ckpt_writer_wait(yk_ckpt_writer *w, uint64_t deadline_ns, yk_diag *d) {
  pthread_mutex_lock(&w->mu);
  int rc = 0;
  while (w->busy) {
    if (cv_wait(w, deadline_ns) == ETIMEDOUT && w->busy) {
      rc = yk_errorf(d, YK_ETIMEDOUT, "deadline passed waiting for checkpoint step %lld to be written",
                     (long long)w->step);
      break;
    }
  }
  if (!rc) rc = take_err(w, d);
  pthread_mutex_unlock(&w->mu);
  return rc;
}

void yk_ckpt_writer_stats(const yk_ckpt_writer *w, yk_ckpt_write_stats *st) {
  pthread_mutex_lock((pthread_mutex_t *)&w->mu);
  *st = w->st;
  if (!w->busy || w->copy_done) st->copy_s = w->cur.copy_s;
  pthread_mutex_unlock((pthread_mutex_t *)&w->mu);
}

void yk_ckpt_writer_free(yk_ckpt_writer *w) {
  if (!w) return;
  pthread_mutex_lock(&w->mu);
  while (w->busy) pthread_cond_wait(&w->cv, &w->mu);
  w->op = OP_QUIT;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  pthread_join(w->th, NULL);
  free_snapshot_meta(w);
  for (int i = 0; i < w->nbuf; i++) yk_free(w->buf[i]);
  free(w->buf);
  free(w->cap);
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  free(w);
}
