/* yk_trace.h - the one public header of yoke's `trace` module: a timeline
 * recorder that writes Chrome trace JSON (Perfetto and chrome://tracing
 * open it), and the tools that read such files (`yoke trace merge`,
 * `yoke trace top`). The file format is docs/tracing.md (version 1).
 *
 * Recording. Whoever owns a run opens one yk_trace per rank (the engine does,
 * from train.trace) and hands TRACKS to what records: a track is one thread's
 * ring buffer of fixed-size events (a span with a static name, a counter, an
 * interval that does not nest, a flow arrow's end). Only the thread that
 * opened a track records into it; the owner drains every ring to the file at
 * step boundaries (yk_trace_step_end) and at close, so formatting JSON and
 * writing never happen inside a step. A full ring drops events (counted in
 * the file's metadata) instead of blocking.
 *
 * A disabled trace is a NULL yk_trace and NULL tracks: every record call is
 * then one predictable branch on the track pointer (the inline helpers
 * below), and costs no clock read.
 *
 * Names outlive the trace: events keep a pointer to their yk_trace_name
 * (a `static const` at the recording site, or a table the trace's owner
 * frees after yk_trace_close).
 *
 * Ownership: yk_trace_open allocates the trace, yk_trace_close flushes and
 * frees it and every track it handed out. Tracks are borrowed views and must
 * not be used after yk_trace_close.
 */
#ifndef YK_TRACE_H
#define YK_TRACE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "yk_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define YK_TRACE_FORMAT_VERSION 1

/* What an event is called: its name and category as they appear in the
 * file, and the names of its (up to two) numeric arguments (NULL: unused). */
typedef struct yk_trace_name {
  const char *name;
  const char *cat;  /* "step", "compute", "comm", "wait", "opt", "ckpt", "counter" */
  const char *arg0, *arg1;
  const char *shape; /* spans only: the name of a shape argument, written "AxBxC" from the id (yk_trace_shape) */
} yk_trace_name;

typedef struct yk_trace yk_trace;
typedef struct yk_trace_track yk_trace_track;

typedef struct yk_trace_opts {
  const char *path;        /* train.trace: "{rank}" is replaced by the rank; without it, ".rank<N>.json" is
                            * appended (after removing a trailing ".json") when world > 1 */
  int rank, world;
  int64_t first_step;      /* record steps [first_step, last_step] (0-based, inclusive) */
  int64_t last_step;       /* -1: no end */
  size_t ring_events;      /* per track; 0 = 16384 (1 MiB) */
} yk_trace_opts;

/* The file name of `rank` for a train.trace path (see yk_trace_opts.path). */
void yk_trace_path_of(const char *path, int rank, int world, char *out, size_t cap);

/* Create the file and the trace. *out owned by the caller: yk_trace_close. */
int yk_trace_open(const yk_trace_opts *o, yk_trace **out, yk_diag *d);
/* This rank's clock against rank 0's: local = rank0 + offset_ns, within
 * +-error_ns. Written to the file's metadata; `yoke trace merge` applies it. */
void yk_trace_set_clock(yk_trace *t, int64_t offset_ns, int64_t error_ns);
/* A ring for the calling thread, named `name` (static) in the file. NULL
 * when t is NULL or out of memory (recording then does nothing). */
yk_trace_track *yk_trace_track_open(yk_trace *t, const char *name);

/* Step boundaries, from the thread that drives the run. step_begin turns
 * recording on inside the window; step_end drains the rings to the file when
 * one is half full or the window just ended. Return YK_EIO (once, with the
 * path) when the file cannot be written; recording stops then. */
void yk_trace_step_begin(yk_trace *t, int64_t step);
int yk_trace_step_end(yk_trace *t, int64_t step, yk_diag *d);
/* Drain, write the metadata and close the file. NULL is fine. */
int yk_trace_close(yk_trace *t, yk_diag *d);

/* ---- recording (the slow paths; call the inline helpers) ----------------- */

enum { YK_TRACE_SPAN = 1, YK_TRACE_COUNTER = 2, YK_TRACE_ASYNC = 3, YK_TRACE_FLOW_OUT = 4, YK_TRACE_FLOW_IN = 5 };

void yk_trace_record(yk_trace_track *k, int kind, const yk_trace_name *n, int64_t t0_ns, int64_t t1_ns,
                     uint64_t id, double a0, double a1);

/* Start of a span: the clock, or 0 when not recording. */
static inline int64_t yk_trace_begin(yk_trace_track *k) { return k ? (int64_t)yk_now_ns() : 0; }
/* A span [t0, now) on k, with arguments a0, a1. */
static inline void yk_trace_end(yk_trace_track *k, const yk_trace_name *n, int64_t t0, double a0, double a1) {
  if (k) yk_trace_record(k, YK_TRACE_SPAN, n, t0, (int64_t)yk_now_ns(), 0, a0, a1);
}
/* A counter's value now ("C" event; a0 is the value). */
static inline void yk_trace_counter(yk_trace_track *k, const yk_trace_name *n, double value) {
  if (k) yk_trace_record(k, YK_TRACE_COUNTER, n, (int64_t)yk_now_ns(), 0, 0, value, 0);
}
/* An interval [t0, t1] that may overlap others on the track without nesting
 * (an in-flight bucket reduction): an async slice with this id. */
static inline void yk_trace_interval(yk_trace_track *k, const yk_trace_name *n, uint64_t id, int64_t t0, int64_t t1,
                                     double a0, double a1) {
  if (k) yk_trace_record(k, YK_TRACE_ASYNC, n, t0, t1, id, a0, a1);
}
/* One end of a flow arrow (id shared by both ends, on any rank) at time
 * t_ns, bound to the span that encloses it on the track: out = where it
 * starts, in = where it lands. The two ends must have the same name. */
static inline void yk_trace_flow(yk_trace_track *k, const yk_trace_name *n, uint64_t id, int in, int64_t t_ns) {
  if (k) yk_trace_record(k, in ? YK_TRACE_FLOW_IN : YK_TRACE_FLOW_OUT, n, t_ns, 0, id, 0, 0);
}

/* A shape of 1 to 3 dimensions packed into a span's id (for a name with a
 * `shape` argument): 2 bits of count, then the dimensions in 62, 31 or 20
 * bits each; a larger dimension saturates (written as its maximum). */
static inline uint64_t yk_trace_shape(int ndims, const int64_t *dim) {
  int w = ndims <= 1 ? 62 : ndims == 2 ? 31 : 20;
  uint64_t v = (uint64_t)(ndims < 1 ? 1 : ndims > 3 ? 3 : ndims) << 62, max = (1ull << w) - 1;
  for (int i = 0; i < ndims && i < 3; i++) {
    uint64_t x = dim[i] < 0 ? 0 : (uint64_t)dim[i] > max ? max : (uint64_t)dim[i];
    v |= x << (w * (ndims - 1 - i));
  }
  return v;
}
/* The dimensions of a packed shape into dim[3]; returns their count. */
int yk_trace_shape_dims(uint64_t packed, int64_t dim[3]);

/* This process's resident set in bytes (0 if unknown), for the RSS counter. */
uint64_t yk_trace_rss_bytes(void);

/* ---- reading traces: yoke trace merge / top ------------------------------ */

typedef struct yk_trace_merge_opts {
  const char *const *inputs; /* rank files */
  int n_inputs;
  const char *out;           /* merged file */
} yk_trace_merge_opts;

/* One file, every event's timestamp moved to rank 0's clock and all events
 * sorted by time; prints one line to `report` (may be NULL) with the ranks and
 * the alignment error. Returns 0 or YK_E* (d names the file). */
int yk_trace_merge(const yk_trace_merge_opts *o, FILE *report, yk_diag *d);

typedef struct yk_trace_top_opts {
  const char *const *inputs; /* rank files or a merged file */
  int n_inputs;
  int json;                  /* one JSON object instead of the table */
  int limit;                 /* rows (0 = 20) */
} yk_trace_top_opts;

/* The profiler table: the hottest spans by total and per-step time, the
 * share of the step that was communication not hidden by compute, the
 * slowest rank. Written to out. */
int yk_trace_top(const yk_trace_top_opts *o, FILE *out, yk_diag *d);

#ifdef __cplusplus
}
#endif
#endif /* YK_TRACE_H */
