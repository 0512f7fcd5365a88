/* yk_ckpt.h - checkpoints: sharded, zstd-compressed, checksummed, atomic,
 * asynchronous and reshardable. Format: docs/checkpoint-format.md (version 2;
 * version 1 is read too).
 *
 * Model of the state. What a rank saves is a yk_ckpt_state: a list of
 *   - ARENAS: flat arrays of `numel` elements of one dtype (fp32 master
 *     weights "params", 16-bit weights "params16", AdamW "m" and "v") with a
 *     tensor table (yk_tensor_desc: name, offset, numel, shape). In data
 *     parallel training every rank holds every arena fully; at save time rank
 *     r of W writes only its slice yk_partition_even_range(numel, W, r), so the
 *     W ranks write disjoint bytes in parallel. Under model parallelism an
 *     arena exists only on some ranks (a tensor-parallel rank's pieces: its
 *     data-parallel group holds them): those ranks form its saving GROUP and
 *     cut it among themselves (yk_ckpt_state_add_arena_group);
 *   - BLOBS: small named byte strings (loss scaler, loader position, step,
 *     RNG...). A GLOBAL blob is written once (by rank 0); a PER-RANK blob is
 *     written by every rank into its own shard (e.g. a rank's RNG);
 *   - a "model" JSON object (vocab_size, heads... anything the exporters or
 *     the caller need that cannot be derived from shapes) and the config YAML
 *     text; both go into the manifest.
 *
 * On disk:  DIR/step-00000100/{shard-00000-of-00002.yks, shard-00001-..., manifest.json}
 * A save is two-phase: every rank writes its shard into DIR/step-N.partial/
 * (yk_ckpt_write_shard or the asynchronous yk_ckpt_writer), the caller does a
 * barrier with its collectives, then rank 0 commits (yk_ckpt_commit): it
 * reads the shard indexes, writes manifest.json last, and atomically renames
 * the directory to DIR/step-N. Only directories named step-N that contain a
 * valid manifest are checkpoints; kill -9 at any moment leaves the previous
 * checkpoint intact. Commit then deletes all but the newest `keep`.
 *
 * Reading: yk_ckpt_reader_open on a checkpoint directory or on DIR (meaning the
 * newest committed checkpoint); any element range of any arena can be read
 * whatever world size wrote it, so resuming at a different world size works.
 * Every chunk read is checked against its XXH3-64 checksums.
 *
 * Threads: a yk_ckpt_state, a reader and a writer are each used by one thread
 * at a time (the writer runs its own background thread internally). */
#ifndef YK_CKPT_H
#define YK_CKPT_H

#include "yk_common.h"
#include "yk_partition.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define YK_CKPT_FORMAT_VERSION 2
/* Elements per compressed chunk (4 MiB of f32): the unit of parallel
 * compression, checksumming and random access. */
#define YK_CKPT_CHUNK_ELEMS (1u << 20)

/* ------------------------------------------------------------------------ */
/* State registry                                                           */
/* ------------------------------------------------------------------------ */

typedef struct yk_ckpt_state yk_ckpt_state;

/* Create an empty state. Free with yk_ckpt_state_free. */
int yk_ckpt_state_create(yk_ckpt_state **out);
void yk_ckpt_state_free(yk_ckpt_state *s);

/* Register an arena by pointer (no copy): `data` holds `numel` elements of
 * `dtype` (the full arena, as every data-parallel rank has it) and must stay
 * valid while the state is used. `tensors` (ntensors entries, copied) must be
 * sorted by offset, non-overlapping and inside [0, numel); elements outside
 * every tensor are saved too. Names are unique, at most 47 characters.
 * yk_ckpt_restore writes into `data`. */
int yk_ckpt_state_add_arena(yk_ckpt_state *s, const char *name, yk_dtype dtype, void *data, uint64_t numel,
                            const yk_tensor_desc *tensors, int ntensors, yk_diag *d);
/* The same for a process that holds only elements [lo, lo + len) of the
 * arena (a ZeRO shard): `data` points at element lo. A save needs the rank's
 * even range (yk_partition_even_range) inside [lo, lo + len), else it fails
 * naming both; yk_ckpt_restore fills only [lo, lo + len). */
int yk_ckpt_state_add_arena_part(yk_ckpt_state *s, const char *name, yk_dtype dtype, void *data, uint64_t numel,
                                 uint64_t lo, uint64_t len, const yk_tensor_desc *tensors, int ntensors, yk_diag *d);

/* The same for an arena that only a GROUP of the writers holds (under
 * tensor parallelism, tensor-parallel rank t's arena is held by the
 * data-parallel ranks of t): this process is rank grank of the gsize ranks
 * that save it and writes yk_partition_even_range(numel, gsize, grank)
 * instead of its writer rank's range. Every rank of the group registers the
 * arena with the same name, dtype, numel and tensor table, in the order of
 * their writer ranks (group rank g before g + 1); other writers do not
 * register it. gsize = 0 is yk_ckpt_state_add_arena_part (every writer). */
int yk_ckpt_state_add_arena_group(yk_ckpt_state *s, const char *name, yk_dtype dtype, void *data, uint64_t numel,
                                  uint64_t lo, uint64_t len, int grank, int gsize, const yk_tensor_desc *tensors,
                                  int ntensors, yk_diag *d);
/* The same for an arena whose elements are not in memory (optimizer state
 * in a file, optim.offload=disk): a write asks `fill` for them chunk by
 * chunk (at most YK_CKPT_CHUNK_ELEMS elements at a time), so no snapshot of
 * the arena is ever held: fill(ctx, lo, len, dst, d) copies arena elements
 * [lo, lo + len) (inside this rank's save range) into dst and returns 0 or a
 * negative YK_E* with d set. It is called from the writer's threads, one
 * call at a time. The snapshot writer takes no copy of such an arena, so the
 * caller must not change what fill reads until the shard is written
 * (yk_ckpt_writer_wait). yk_ckpt_restore cannot fill such an arena: read it
 * with yk_ckpt_reader_read. */
typedef int (*yk_ckpt_fill_fn)(void *ctx, uint64_t lo, uint64_t len, void *dst, yk_diag *d);
int yk_ckpt_state_add_arena_fill(yk_ckpt_state *s, const char *name, yk_dtype dtype, yk_ckpt_fill_fn fill, void *ctx,
                                 uint64_t numel, uint64_t lo, uint64_t len, int grank, int gsize,
                                 const yk_tensor_desc *tensors, int ntensors, yk_diag *d);
/* The name under which an arena `base` of tensor-parallel rank tp_rank of a
 * group of tp is saved: `base` itself when tp = 1, else "base.tpRofN"
 * ("params.tp1of2"). The one spelling writers and readers use. */
void yk_ckpt_arena_name(char *buf, size_t cap, const char *base, int tp, int tp_rank);
/* The same for pipeline stage pp_rank of pp (each stage saves only the
 * tensors it holds, with their stage-local offsets in its tensor table):
 * ".ppSofP" appended when pp > 1 ("params.tp1of2.pp0of2", "m.pp1of3"). */
void yk_ckpt_arena_name_stage(char *buf, size_t cap, const char *base, int tp, int tp_rank, int pp, int pp_rank);
/* The training layout (degrees only; the rank fields are ignored) and
 * whether sequence parallelism was on: the manifest's "layout" object, so a
 * resume can refuse another tensor-parallel degree and a resharder knows how
 * each arena was cut (with the tensors' split kinds). */
int yk_ckpt_state_set_layout(yk_ckpt_state *s, const yk_layout *l, int sequence, yk_diag *d);

/* Set (or replace) a blob by value: the bytes are copied now, so call it
 * before each save with the current value. per_rank = 0: global, only rank 0's
 * copy is written; per_rank = 1: every rank writes its own. Names are unique
 * per scope, at most 63 characters. */
int yk_ckpt_state_set_blob(yk_ckpt_state *s, const char *name, const void *data, size_t len, int per_rank,
                           yk_diag *d);
/* The "model" section of the manifest: a JSON object as text (validated,
 * copied). The GPT-2 exporter needs {"vocab_size": V, "heads": NH}. */
int yk_ckpt_state_set_model_json(yk_ckpt_state *s, const char *json, yk_diag *d);
/* The config YAML that produced this run (copied; stored in the manifest). */
int yk_ckpt_state_set_config_yaml(yk_ckpt_state *s, const char *yaml, yk_diag *d);

/* ------------------------------------------------------------------------ */
/* Writing                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct yk_ckpt_opts {
  const char *dir;      /* checkpoint root DIR (created if missing) */
  int rank, world;      /* this rank, world size (>= 1) */
  int level;            /* zstd level -7..22 (ckpt.level, default 1) */
  int threads;          /* compression/decompression threads; 0 = all cores */
  int keep;             /* commit keeps the newest `keep` checkpoints; 0 = all */
  const yk_logger *log; /* may be NULL */
  int buffered_io;      /* 0 (default): shard files are written with O_DIRECT where the filesystem has it
                           (less CPU: no page-cache copy); 1: ordinary page-cache writes */
} yk_ckpt_opts;

/* Defaults: level 1, threads 0, keep 3, rank 0 of 1, dir NULL. */
void yk_ckpt_opts_default(yk_ckpt_opts *o);
/* From ckpt.dir / ckpt.level / ckpt.keep; dir points into c (keep c alive). */
void yk_ckpt_opts_from_config(yk_ckpt_opts *o, const yk_config *c, int rank, int world);

/* Figures of one shard write (any pointer argument taking it may be NULL). */
typedef struct yk_ckpt_write_stats {
  uint64_t raw_bytes;    /* arena slice + blob bytes of this rank */
  uint64_t file_bytes;   /* shard file size */
  double copy_s;         /* snapshot copy (the training stall) */
  double write_s;        /* compress + write + fsync (total) */
  double sync_s;         /* of which fsync of the shard file and directory */
  int direct_io;         /* 1: written with O_DIRECT (0: buffered; the filesystem has no O_DIRECT) */
} yk_ckpt_write_stats;

/* Phase 1, every rank, synchronous: write this rank's shard of `s` at `step`
 * into DIR/step-N.partial/ (tmp name, fsync, rename, fsync dir). Reads the
 * arenas directly (no snapshot copy), so the caller must not modify them
 * during the call. */
int yk_ckpt_write_shard(const yk_ckpt_opts *o, const yk_ckpt_state *s, int64_t step, yk_ckpt_write_stats *st,
                        yk_diag *d);

/* Phase 2, rank 0 only, after every rank's phase 1 returned 0 (the caller's
 * barrier): verify the W shard indexes, write manifest.json (tmp, fsync,
 * rename), rename DIR/step-N.partial to DIR/step-N atomically (replacing an
 * older DIR/step-N), fsync DIR, then delete checkpoints beyond o->keep and
 * stale partial directories of older steps. Never deletes the one it just
 * committed. */
int yk_ckpt_commit(const yk_ckpt_opts *o, int64_t step, yk_diag *d);

/* Asynchronous writer: one background thread per rank.
 *
 *   yk_ckpt_writer_save(w, s, step, 0, d)   copies this rank's slices and the
 *       blobs into host snapshot buffers (the stall), hands them to the thread
 *       and returns; training continues.
 *   With flags = YK_CKPT_DEFER_COPY save returns at once and the thread also
 *       does the copy; the caller must not modify any registered arena until
 *       yk_ckpt_writer_release returned 0 (call it right before the optimizer
 *       update: forward/backward only read the weights, so the copy overlaps
 *       them and the stall is usually zero).
 *   yk_ckpt_writer_poll(w)  1 when the last shard is durable (or nothing
 *       pending), 0 while writing, < 0 the error of the failed operation.
 *       Callers AND-reduce it across ranks (their collectives); when all are
 *       1, rank 0 calls yk_ckpt_writer_commit (queued to the thread) or
 *       yk_ckpt_commit.
 *   yk_ckpt_writer_wait(w, deadline, d)  blocks until idle; before the next
 *       save and at exit. Returns the first error of the pending work
 *       (errors are reported once, by the next poll/wait/save/commit).
 * save returns YK_EBUSY while the previous save/commit is still running. */
typedef struct yk_ckpt_writer yk_ckpt_writer;
#define YK_CKPT_DEFER_COPY 1u

/* o is copied (o->dir string too). Free with yk_ckpt_writer_free. */
int yk_ckpt_writer_create(const yk_ckpt_opts *o, yk_ckpt_writer **out, yk_diag *d);
/* Optional, at startup: allocate (and fault in) the snapshot buffers for s
 * now, so the first save's stall is the copy alone. Buffers are reused. */
int yk_ckpt_writer_prepare(yk_ckpt_writer *w, const yk_ckpt_state *s, yk_diag *d);
int yk_ckpt_writer_save(yk_ckpt_writer *w, const yk_ckpt_state *s, int64_t step, unsigned flags, yk_diag *d);
int yk_ckpt_writer_release(yk_ckpt_writer *w, uint64_t deadline_ns, yk_diag *d);
int yk_ckpt_writer_poll(yk_ckpt_writer *w);
/* Rank 0: queue the commit of the step saved last (shards of all ranks must
 * be durable: see poll). */
int yk_ckpt_writer_commit(yk_ckpt_writer *w, yk_diag *d);
int yk_ckpt_writer_wait(yk_ckpt_writer *w, uint64_t deadline_ns, yk_diag *d);
/* Stats of the last completed shard write. */
void yk_ckpt_writer_stats(const yk_ckpt_writer *w, yk_ckpt_write_stats *st);
/* Record the thread's deferred copy, its writes and commits as spans on k
 * (a track of the trace module that only this thread records into; NULL:
 * stop). Once it returns, nothing is recorded on the previous track. */
struct yk_trace_track;
void yk_ckpt_writer_trace(yk_ckpt_writer *w, struct yk_trace_track *k);
/* Waits for the running operation (no deadline: callers wait first), joins
 * the thread, frees the buffers. NULL is fine. */
void yk_ckpt_writer_free(yk_ckpt_writer *w);

/* ------------------------------------------------------------------------ */
/* Listing                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct yk_ckpt_entry {
  char path[4096];   /* DIR/step-N or DIR/step-N.partial */
  int64_t step;
  int world;         /* 0 if unknown (no manifest) */
  uint64_t bytes;    /* total size of the files in the directory */
  int committed;     /* 1: step-N with a manifest that parses and matches its checksum, and all its shard files */
} yk_ckpt_entry;

/* All step-* directories of dir, sorted by step ascending, committed and
 * not. *out is malloc'd (free()); *n its length. */
int yk_ckpt_list(const char *dir, yk_ckpt_entry **out, int *n, yk_diag *d);

/* ------------------------------------------------------------------------ */
/* Reading                                                                  */
/* ------------------------------------------------------------------------ */

typedef enum {
  YK_CKPT_VERIFY_META = 0, /* manifest checksum, every shard present with the right size and index */
  YK_CKPT_VERIFY_FULL = 1, /* plus every shard file's checksum (reads everything) */
} yk_ckpt_verify_level;

typedef struct yk_ckpt_open_opts {
  int verify;           /* yk_ckpt_verify_level checked at open */
  int fallback;         /* when path is a root DIR and the newest checkpoint fails
                           verification, use the next older one (logged) instead of
                           failing */
  int threads;          /* decompression threads; 0 = all cores */
  const yk_logger *log; /* may be NULL */
} yk_ckpt_open_opts;

typedef struct yk_ckpt_reader yk_ckpt_reader;

typedef struct yk_ckpt_arena_info {
  const char *name;
  yk_dtype dtype;
  uint64_t numel;
  const yk_tensor_desc *tensors; /* owned by the reader, valid until close; with each tensor's split (version 2) */
  int ntensors;
} yk_ckpt_arena_info;

/* path: a checkpoint directory (has manifest.json) or a root DIR (newest
 * committed checkpoint). o may be NULL (META, no fallback). Close with
 * yk_ckpt_reader_close. */
int yk_ckpt_reader_open(const char *path, const yk_ckpt_open_opts *o, yk_ckpt_reader **out, yk_diag *d);
void yk_ckpt_reader_close(yk_ckpt_reader *r);

const char *yk_ckpt_reader_path(const yk_ckpt_reader *r);  /* the checkpoint directory */
int64_t yk_ckpt_reader_step(const yk_ckpt_reader *r);
int yk_ckpt_reader_world(const yk_ckpt_reader *r);          /* world size that wrote it */
/* The training layout it was saved at (degrees; rank fields 0) and whether
 * sequence parallelism was on. A checkpoint without a layout (version 1, or
 * written by yk_ckpt_write_shard without one) reads as dp = world, tp = pp
 * = 1. */
void yk_ckpt_reader_layout(const yk_ckpt_reader *r, yk_layout *l, int *sequence);
int yk_ckpt_reader_arena_count(const yk_ckpt_reader *r);
int yk_ckpt_reader_arena(const yk_ckpt_reader *r, int i, yk_ckpt_arena_info *info);
/* YK_ENOTFOUND (message lists the arenas) if absent. */
int yk_ckpt_reader_find_arena(const yk_ckpt_reader *r, const char *name, yk_ckpt_arena_info *info, yk_diag *d);

/* Read elements [off, off + n) of arena `arena` into dst (n * dtype size
 * bytes), from whichever shards hold them, in parallel, checking checksums.
 * A reader at world size M, rank q typically reads its even range or the
 * whole arena. On error the contents of dst are unspecified. */
int yk_ckpt_reader_read(yk_ckpt_reader *r, const char *arena, uint64_t off, uint64_t n, void *dst, yk_diag *d);
/* Read one tensor of an arena; dst holds its numel elements. */
int yk_ckpt_reader_read_tensor(yk_ckpt_reader *r, const char *arena, const char *tensor, void *dst, yk_diag *d);

/* A blob's bytes. rank = -1: the global blob; rank >= 0: the per-rank blob
 * written by that rank (YK_ENOTFOUND if that rank did not exist or wrote
 * none). *data is malloc'd (free()), NUL-terminated for convenience (not
 * counted in *len). */
int yk_ckpt_reader_blob(yk_ckpt_reader *r, const char *name, int rank, void **data, size_t *len, yk_diag *d);
/* Names of blobs: i-th blob's name and rank (-1 global); count via return of
 * yk_ckpt_reader_blob_count. */
int yk_ckpt_reader_blob_count(const yk_ckpt_reader *r);
int yk_ckpt_reader_blob_info(const yk_ckpt_reader *r, int i, const char **name, int *rank, uint64_t *bytes);

/* The manifest's "model" object as compact JSON text, or NULL; the config
 * YAML text or NULL; the raw manifest text. Owned by the reader. */
const char *yk_ckpt_reader_model_json(const yk_ckpt_reader *r);
const char *yk_ckpt_reader_config_yaml(const yk_ckpt_reader *r);
const char *yk_ckpt_reader_manifest_text(const yk_ckpt_reader *r);

/* Check every checksum: each shard file's whole-file XXH3 and each chunk's
 * compressed and raw XXH3 (decompresses everything). The first problem is
 * returned (YK_ECORRUPT / YK_EIO) with a message naming the file and tensor. */
int yk_ckpt_reader_verify(yk_ckpt_reader *r, yk_diag *d);

/* Resume helper: for every arena registered in s, check the checkpoint has
 * the same name, dtype, numel and tensor table, and read the WHOLE arena into
 * the registered pointer (every data-parallel rank holds everything). Blobs
 * are not touched: read them with yk_ckpt_reader_blob. */
int yk_ckpt_restore(yk_ckpt_reader *r, yk_ckpt_state *s, yk_diag *d);

/* ------------------------------------------------------------------------ */
/* Offline tools (`yoke ckpt`)                                             */
/* ------------------------------------------------------------------------ */

/* Reshard: write the checkpoint open in r as a new checkpoint of world size
 * o->world under o->dir (same step, same blobs: per-rank blobs of old ranks
 * < o->world kept, others dropped with a warning), committed. */
int yk_ckpt_convert_reshard(yk_ckpt_reader *r, const yk_ckpt_opts *o, yk_diag *d);
/* Export every tensor of arena `arena` to a safetensors file. */
int yk_ckpt_export_safetensors(yk_ckpt_reader *r, const char *arena, const char *out_path, yk_diag *d);
/* The writer behind it, for tensors that are not one saved arena (a model
 * put together from its TP pieces and PP stages, cli/): the table `tensors`
 * (offsets into a flat array of dtype) written in table order, each read
 * through rd(ctx, offset, count, dst) in pieces; `what` names it in errors,
 * step goes to the metadata. Written to a temporary name, fsynced, renamed. */
typedef int (*yk_ckpt_tensor_reader)(void *ctx, uint64_t offset, uint64_t count, void *dst, yk_diag *d);
int yk_ckpt_safetensors_write(const char *out_path, const char *what, yk_dtype dtype, const yk_tensor_desc *tensors,
                              int ntensors, int64_t step, yk_ckpt_tensor_reader rd, void *ctx, yk_diag *d);

/* What `yoke ckpt` prints (its command line is parsed in cli/). */
/* The checkpoints of root dir as a table: step, world, size, status
 * (latest, committed, incomplete, damaged), path. */
int yk_ckpt_list_print(const char *dir, FILE *out, yk_diag *d);
/* Open path (a checkpoint or a root: its newest), check every checksum
 * (yk_ckpt_reader_verify) and print one "ok: PATH (step, world, arenas,
 * blobs, bytes of state) verified in S s" line. threads: 0 = all cores. The
 * first problem is returned, naming the file and tensor. */
int yk_ckpt_verify_report(const char *path, int threads, FILE *out, yk_diag *d);
/* The manifest of path in readable form (checkpoint, step, world, format,
 * codec, model, shards, arenas with their tensors and compression ratio,
 * blobs, config), or with raw_json the manifest text itself. */
int yk_ckpt_manifest_print(const char *path, int raw_json, FILE *out, yk_diag *d);

#ifdef __cplusplus
}
#endif
#endif /* YK_CKPT_H */
