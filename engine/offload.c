/* offload.c - optimizer state on disk (optim.offload=disk, docs/memory.md).
 *
 * One file per rank, <optim.offload_dir>/yoke-offload-r<rank>.bin, holds the
 * arrays of this rank's slice that AdamW updates (fp32 runs: m, v; mixed
 * precision: master, m, v), cut in chunks of `chunk` elements: a 4096-byte
 * header, then chunk k's arrays back to back at 4096 + k * set_bytes (each
 * array's part chunk * 4 bytes, the last chunk padded), so a chunk is one
 * aligned read and one aligned write. The update streams the chunks through
 * three staging sets: a reader thread reads ahead into a free set, the main
 * thread updates the ready one, a writer thread writes the updated one
 * behind it; a set goes FREE -> READING -> READY -> (update) DIRTY ->
 * WRITING -> FREE. With O_DIRECT (when the filesystem has it) the page cache
 * is not involved; without it (tmpfs) each pass ends with fdatasync and
 * POSIX_FADV_DONTNEED so the cache does not grow.
 *
 * The file is scratch: the checkpoint stays the source of truth (a save
 * streams the state out of it with eng_offload_read, a resume rebuilds it
 * with a write-only pass: ckpt.c, docs/memory.md). Its space
 * is checked (statvfs) and reserved (posix_fallocate) when it is opened, so
 * a full disk is one error at start, before any state is written. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "engine_internal.h"

enum { S_FREE, S_READING, S_READY, S_DIRTY, S_WRITING };
#define OFF_HDR 4096
#define OFF_ALIGN 4096

static uint64_t file_bytes(const eng_offload *o) { return OFF_HDR + (uint64_t)o->nchunks * o->set_bytes; }

/* cond waits on CLOCK_MONOTONIC until deadline_ns (yk_deadline_in_ms). */
static int wait_until(eng_offload *o, uint64_t deadline_ns) {
  struct timespec ts = {(time_t)(deadline_ns / 1000000000ull), (long)(deadline_ns % 1000000000ull)};
  return pthread_cond_timedwait(&o->cv, &o->mu, &ts);
}

static void fail_locked(eng_offload *o, int err, const char *what, size_t k) {
  if (o->err) return;
  o->err = YK_EIO;
  snprintf(o->errmsg, sizeof o->errmsg, "offload file %s: %s of chunk %zu failed: %s", o->path, what, k,
           err ? strerror(err) : "short transfer");
}

/* Move set_bytes between buf and chunk k of the file (whole, retrying short transfers). */
static int xfer(eng_offload *o, int write, uint8_t *buf, size_t k) {
  off_t at = (off_t)(OFF_HDR + (uint64_t)k * o->set_bytes);
  size_t done = 0;
  while (done < o->set_bytes) {
    ssize_t r = write ? pwrite(o->fd, buf + done, o->set_bytes - done, at + (off_t)done)
                      : pread(o->fd, buf + done, o->set_bytes - done, at + (off_t)done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return r < 0 ? errno : -1;
    done += (size_t)r;
  }
  return 0;
}

/* The reader: during a reading pass, chunk next_read into its set as soon as
 * that set is free (the writer has written what it held). Idle waits wake
 * every second to look for quit. */
static void *reader_main(void *arg) {
  eng_offload *o = arg;
  pthread_mutex_lock(&o->mu);
  for (;;) {
    while (!o->quit && !(o->active && o->reading && !o->err && o->next_read < o->nchunks &&
                         o->state[o->next_read % 3] == S_FREE))
      wait_until(o, yk_deadline_in_ms(1000));
    if (o->quit) break;
    size_t k = o->next_read, s = k % 3;
    o->state[s] = S_READING;
    pthread_mutex_unlock(&o->mu);
    int e = xfer(o, 0, o->buf[s], k);
    pthread_mutex_lock(&o->mu);
    if (e) fail_locked(o, e > 0 ? e : 0, "read", k);
    o->state[s] = S_READY;
    o->next_read++;
    o->bytes_read += o->set_bytes;
    pthread_cond_broadcast(&o->cv);
  }
  pthread_mutex_unlock(&o->mu);
  return NULL;
}

/* The writer: chunk next_write out as soon as the update has made it dirty. */
static void *writer_main(void *arg) {
  eng_offload *o = arg;
  pthread_mutex_lock(&o->mu);
  for (;;) {
    while (!o->quit && !(o->active && !o->err && o->next_write < o->nchunks &&
                         o->state[o->next_write % 3] == S_DIRTY))
      wait_until(o, yk_deadline_in_ms(1000));
    if (o->quit) break;
    size_t k = o->next_write, s = k % 3;
    o->state[s] = S_WRITING;
    pthread_mutex_unlock(&o->mu);
    int e = xfer(o, 1, o->buf[s], k);
    pthread_mutex_lock(&o->mu);
    if (e) fail_locked(o, e > 0 ? e : 0, "write", k);
    o->state[s] = S_FREE;
    o->next_write++;
    o->bytes_written += o->set_bytes;
    pthread_cond_broadcast(&o->cv);
  }
  pthread_mutex_unlock(&o->mu);
  return NULL;
}

uint64_t eng_offload_file_bytes(size_t n, int narr, size_t chunk) {
  size_t nchunks = n ? (n + chunk - 1) / chunk : 1;
  return OFF_HDR + (uint64_t)nchunks * (uint64_t)narr * chunk * sizeof(float);
}

uint64_t eng_offload_staging_bytes(int narr, size_t chunk) { return 3 * (uint64_t)narr * chunk * sizeof(float); }

size_t eng_offload_chunk_of(const yk_config *c) {
  /* whole 4 KiB pages of each array, so every transfer is O_DIRECT-aligned */
  size_t kb = (size_t)(c->optim.offload_chunk_kb > 4 ? c->optim.offload_chunk_kb : 4);
  return (kb / 4) * 4 * 1024 / sizeof(float);
}

int eng_offload_open(eng_offload *o, const char *dir, int rank, size_t n, int narr, size_t chunk, int64_t timeout_ms,
                     const yk_logger *log, yk_diag *d) {
  memset(o, 0, sizeof *o);
  o->fd = -1;
  o->narr = narr;
  o->n = n;
  o->chunk = chunk;
  o->nchunks = n ? (n + chunk - 1) / chunk : 1;
  o->set_bytes = (size_t)narr * chunk * sizeof(float);
  o->timeout_ms = timeout_ms;
  if (!dir[0])
    return yk_errorf(d, YK_ECONFIG, "optim.offload=disk needs optim.offload_dir: set it to a directory on a local "
                     "disk with room for the optimizer state");
  snprintf(o->path, sizeof o->path, "%s/yoke-offload-r%d.bin", dir, rank);
  uint64_t need = file_bytes(o);
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
    return yk_errorf(d, YK_ECONFIG, "optim.offload_dir=%s is not a directory (%s); create it or choose another", dir,
                     strerror(errno ? errno : ENOTDIR));
  if (access(dir, W_OK | X_OK) != 0)
    return yk_errorf(d, YK_ECONFIG, "optim.offload_dir=%s is not writable by this user (%s); the offload files "
                     "need %.1f MiB there: choose a writable directory", dir, strerror(errno),
                     need / 1048576.0);
  struct statvfs vf;
  if (statvfs(dir, &vf) == 0) {
    uint64_t avail = (uint64_t)vf.f_bavail * vf.f_frsize;
    if (avail < need)
      return yk_errorf(d, YK_ECONFIG, "optim.offload_dir=%s has %.1f MiB free but rank %d's offload file needs "
                       "%.1f MiB (%s of %zu parameters, fp32); free space there or choose a bigger disk", dir,
                       avail / 1048576.0, rank, need / 1048576.0, narr == 3 ? "master weights, m and v" : "m and v", n);
  }
  int fd = open(o->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return yk_errorf(d, YK_ECONFIG, "optim.offload_dir=%s: cannot create %s (%s); choose a writable directory", dir,
                     o->path, strerror(errno));
  /* reserve every byte now: ENOSPC here, never half-way through a step */
  int e = posix_fallocate(fd, 0, (off_t)need);
  if (e) {
    close(fd);
    unlink(o->path);
    return yk_errorf(d, YK_ECONFIG, "optim.offload_dir=%s: cannot reserve %.1f MiB for %s (%s); free space there "
                     "or choose a bigger disk", dir, need / 1048576.0, o->path, strerror(e));
  }
  char hdr[OFF_HDR] __attribute__((aligned(OFF_ALIGN)));
  memset(hdr, 0, sizeof hdr);
  memcpy(hdr, "YKOFFLD1", 8);
  uint64_t meta[4] = {1 /* version */, (uint64_t)narr, (uint64_t)n, (uint64_t)chunk};
  memcpy(hdr + 8, meta, sizeof meta);
  if (pwrite(fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr) {
    int er = errno;
    close(fd);
    unlink(o->path);
    return yk_errorf(d, YK_EIO, "offload file %s: writing its header failed (%s)", o->path, strerror(er));
  }
  close(fd);
  o->fd = open(o->path, O_RDWR | O_CLOEXEC | O_DIRECT);
  o->direct = o->fd >= 0;
  if (o->fd < 0) o->fd = open(o->path, O_RDWR | O_CLOEXEC);
  if (o->fd < 0) return yk_errorf(d, YK_EIO, "offload file %s: reopening failed (%s)", o->path, strerror(errno));
  /* page-aligned staging (O_DIRECT), touched now so it is resident from the start as the plan counts it */
  for (int i = 0; i < 3; i++) {
    if (posix_memalign((void **)&o->buf[i], OFF_ALIGN, o->set_bytes)) {
      o->buf[i] = NULL;
      return yk_errorf(d, YK_ENOMEM, "out of memory for the offload staging (%zu bytes)", o->set_bytes);
    }
    memset(o->buf[i], 0, o->set_bytes);
  }
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&o->cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&o->mu, NULL);
  o->sync_made = 1;
  if (pthread_create(&o->reader, NULL, reader_main, o) != 0)
    return yk_errorf(d, YK_ESYS, "offload: starting the reader thread failed");
  o->threads = 1;
  if (pthread_create(&o->writer, NULL, writer_main, o) != 0)
    return yk_errorf(d, YK_ESYS, "offload: starting the writer thread failed");
  o->threads = 2;
  o->on = 1;
  YK_INFO(log, "optimizer state on disk: %s, %.1f MiB (%s of %zu parameters), %zu chunks of %zu, %s", o->path,
          need / 1048576.0, narr == 3 ? "master, m, v" : "m, v", n, o->nchunks, chunk,
          o->direct ? "O_DIRECT" : "buffered (the filesystem has no O_DIRECT; the cache is dropped after each pass)");
  return 0;
}

int eng_offload_pass(eng_offload *o, int read, eng_offload_fn fn, void *ctx, yk_diag *d) {
  pthread_mutex_lock(&o->mu);
  for (int i = 0; i < 3; i++) o->state[i] = S_FREE;
  o->next_read = o->next_write = 0;
  o->reading = read;
  o->active = 1;
  pthread_cond_broadcast(&o->cv);
  int rc = 0;
  for (size_t k = 0; k < o->nchunks && !rc; k++) {
    size_t s = k % 3;
    int want = read ? S_READY : S_FREE;
    uint64_t dl = yk_deadline_in_ms((uint64_t)o->timeout_ms);
    while (!o->err && o->state[s] != want)
      if (wait_until(o, dl) == ETIMEDOUT) break;
    if (o->err) break;
    if (o->state[s] != want) {
      rc = yk_errorf(d, YK_ETIMEDOUT, "offload file %s: chunk %zu was not %s within comm.timeout_ms=%lld ms (a "
                     "stalled disk?)", o->path, k, read ? "read" : "free to fill", (long long)o->timeout_ms);
      break;
    }
    pthread_mutex_unlock(&o->mu);
    size_t off = k * o->chunk, cnt = YK_MIN(o->chunk, o->n - off);
    float *arr[3];
    for (int a = 0; a < o->narr; a++) arr[a] = (float *)(o->buf[s] + (size_t)a * o->chunk * sizeof(float));
    int r = fn(ctx, off, cnt, arr, d);
    pthread_mutex_lock(&o->mu);
    if (r) {
      rc = r;
      break;
    }
    o->state[s] = S_DIRTY;
    pthread_cond_broadcast(&o->cv);
  }
  /* the writer finishes what was made dirty (also after an error, so no
   * set is left in flight) */
  uint64_t dl = yk_deadline_in_ms((uint64_t)o->timeout_ms);
  int inflight = 1;
  while (inflight && !o->err) {
    inflight = 0;
    for (int i = 0; i < 3; i++) inflight |= o->state[i] == S_DIRTY || o->state[i] == S_WRITING || o->state[i] == S_READING;
    if (inflight && wait_until(o, dl) == ETIMEDOUT) break;
  }
  o->active = 0;
  if (!rc && o->err) rc = yk_errorf(d, o->err, "%s", o->errmsg);
  else if (!rc && inflight)
    rc = yk_errorf(d, YK_ETIMEDOUT, "offload file %s: writing back did not finish within comm.timeout_ms=%lld ms",
                   o->path, (long long)o->timeout_ms);
  pthread_mutex_unlock(&o->mu);
  if (!rc && !o->direct) {
    /* buffered: the data is on disk and its pages may go */
    if (fdatasync(o->fd) != 0)
      return yk_errorf(d, YK_EIO, "offload file %s: fdatasync failed (%s)", o->path, strerror(errno));
    posix_fadvise(o->fd, 0, 0, POSIX_FADV_DONTNEED);
  }
  return rc;
}

int eng_offload_read(eng_offload *o, int a, size_t off, size_t count, float *dst, yk_diag *d) {
  if (a < 0 || a >= o->narr || off > o->n || count > o->n - off)
    return yk_errorf(d, YK_EINVAL, "offload file %s: array %d elements [%zu, +%zu) are outside its %d arrays of %zu; "
                     "this is a bug in the caller", o->path, a, off, count, o->narr, o->n);
  pthread_mutex_lock(&o->mu);
  int busy = o->active;
  pthread_mutex_unlock(&o->mu);
  if (busy) return yk_errorf(d, YK_EBUSY, "offload file %s: read during an update pass; read between steps", o->path);
  /* staging set 0 is idle between passes: one array's whole part of a chunk
   * at a time (page-aligned offset and length, as O_DIRECT needs) */
  uint8_t *buf = o->buf[0];
  size_t part = o->chunk * sizeof(float);
  while (count) {
    size_t k = off / o->chunk, in = off % o->chunk, cnt = YK_MIN(count, o->chunk - in);
    off_t at = (off_t)(OFF_HDR + (uint64_t)k * o->set_bytes + (uint64_t)a * part);
    size_t done = 0;
    while (done < part) {
      ssize_t r = pread(o->fd, buf + done, part - done, at + (off_t)done);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0)
        return yk_errorf(d, YK_EIO, "offload file %s: reading chunk %zu for the checkpoint failed (%s); check the "
                         "disk of optim.offload_dir", o->path, k, r < 0 ? strerror(errno) : "short read");
      done += (size_t)r;
    }
    if (!o->direct) posix_fadvise(o->fd, at, (off_t)part, POSIX_FADV_DONTNEED);
    memcpy(dst, buf + in * sizeof(float), cnt * sizeof(float));
    dst += cnt;
    off += cnt;
    count -= cnt;
  }
  return 0;
}

void eng_offload_round(float *p, size_t n, uint16_t *tmp, size_t chunk, yk_dtype dt16) {
  for (size_t i = 0; i < n; i += chunk) {
    size_t k = YK_MIN(chunk, n - i);
    yk_cast_from_f32(tmp, dt16, p + i, k, YK_ISA_AUTO);
    yk_cast_to_f32(p + i, tmp, dt16, k, 1.0f, YK_ISA_AUTO);
  }
}

void eng_offload_close(eng_offload *o) {
  if (o->threads) {
    pthread_mutex_lock(&o->mu);
    o->quit = 1;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
    pthread_join(o->reader, NULL);
    if (o->threads > 1) pthread_join(o->writer, NULL);
  }
  if (o->sync_made) {
    pthread_cond_destroy(&o->cv);
    pthread_mutex_destroy(&o->mu);
  }
  for (int i = 0; i < 3; i++) free(o->buf[i]);
  /* an engine that never offloaded holds a zeroed struct: fd 0 is not ours */
  if (o->path[0] && o->fd >= 0) {
    close(o->fd);
    unlink(o->path); /* scratch: the checkpoint is the source of truth */
  }
  memset(o, 0, sizeof *o);
  o->fd = -1;
}
