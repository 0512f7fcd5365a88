/* ckpt_internal.h - shared between the ckpt/ sources; not public. */
#ifndef YK_CKPT_INTERNAL_H
#define YK_CKPT_INTERNAL_H

#include "yk_ckpt.h"
#include "yk_partition.h"

#include <jansson.h>
#include <stdint.h>

#define CK_SHARD_MAGIC "YKSHARD1"
#define CK_TRAILER_MAGIC "YKSHEND1"
#define CK_HEADER_BYTES 64
#define CK_TRAILER_BYTES 40
#define CK_MANIFEST "manifest.json"
#define CK_MANIFEST_SUM_KEY "\"manifest_xxh3\""

typedef struct ck_arena {
  char name[48];
  yk_dtype dtype;
  void *data; /* elements [held_lo, held_lo + held_len) of the arena (NULL: fill gives them) */
  yk_ckpt_fill_fn fill; /* yk_ckpt_state_add_arena_fill: copies a range out at write time */
  void *fill_ctx;
  uint64_t numel;
  uint64_t held_lo, held_len; /* what this process holds: all of it, or its ZeRO slice */
  int grank, gsize;           /* the ranks that save it and this one's place among them (gsize 0: every writer) */
  yk_tensor_desc *tensors;
  int ntensors;
} ck_arena;

typedef struct ck_blob {
  char name[64];
  int per_rank;
  uint8_t *data;
  size_t len;
} ck_blob;

struct yk_ckpt_state {
  ck_arena *arenas;
  int narenas;
  ck_blob *blobs;
  int nblobs;
  char *model_json;
  char *layout_json;
  char *config_yaml;
};

/* What one shard file holds: per arena the slice [lo, lo+len) whose bytes are
 * at `slice` (a snapshot or the live arena + lo), the blobs to write. */
typedef struct ck_part {
  const ck_arena *arena; /* name, dtype, numel, tensor table */
  const uint8_t *src;    /* the live elements [lo, lo+len) a snapshot copies from (NULL: slice is live) */
  const uint8_t *slice;   /* NULL: arena->fill copies each chunk out while it is written */
  uint64_t lo, len;
} ck_part;

typedef struct ck_blob_ref {
  const char *name;
  int rank; /* -1 global */
  const uint8_t *data;
  size_t len;
} ck_blob_ref;

typedef struct ck_plan {
  int64_t step;
  int rank, world;
  const ck_part *parts;
  int nparts;
  const ck_blob_ref *blobs;
  int nblobs;
  const char *model_json;  /* rank 0 only, may be NULL */
  const char *layout_json; /* rank 0 only, may be NULL */
  const char *config_yaml; /* rank 0 only, may be NULL */
} ck_plan;

/* codec.c: a chunk's payload is a plane table (es entries of {u32 codec,
 * u32 stored bytes}) followed by the planes. Elements are byte-shuffled into
 * es planes (plane b = byte b of every element, little endian); each plane is
 * stored raw or as one zstd frame, whichever the sample test picks. */
enum { CK_PLANE_RAW = 0, CK_PLANE_ZSTD = 1 };
size_t ck_chunk_bound(size_t raw_bytes, size_t es);
/* Encode n elements of size es at src into dst (cap from ck_chunk_bound);
 * scratch holds n*es bytes. raw_sum (may be NULL) receives the XXH3-64 of
 * the n*es raw bytes. Returns the payload size or 0 on error. */
size_t ck_chunk_encode(const uint8_t *src, size_t n, size_t es, int level, void *zctx, uint8_t *scratch,
                       uint8_t *dst, size_t cap, uint64_t *raw_sum);
/* Decode into dst (n*es bytes); scratch n*es bytes. 0 or YK_ECORRUPT. */
int ck_chunk_decode(const uint8_t *src, size_t src_len, size_t n, size_t es, void *dctx, uint8_t *scratch,
                    uint8_t *dst);
void *ck_zctx_new(void);
void ck_zctx_free(void *z);
void *ck_dctx_new(void);
void ck_dctx_free(void *z);

/* Parallel-for helper: run fn(ctx, worker) on `threads` threads (the caller
 * is worker 0). */
int ck_run_threads(int threads, void (*fn)(void *ctx, int worker), void *ctx);
int ck_threads(int requested);

/* layout.c: the on-disk layout both the writer and the reader follow. */
void ck_step_dir(char *buf, size_t cap, const char *root, int64_t step, int partial);
void ck_shard_name(char *buf, size_t cap, int rank, int world);
/* The manifest's "layout" object of a training layout, and back (a missing
 * object is one data-parallel group of `world` ranks). *out of ck_layout_json
 * is a new reference. */
json_t *ck_layout_json(const yk_layout *l, int sequence);
int ck_layout_parse(json_t *j, int world, yk_layout *l, int *sequence);
/* A tensor's split in the tensor table: "split" ("replicated", "column",
 * "row", "vocab") and "split_parts" are written for split tensors only. */
void ck_split_put(json_t *t, const yk_tensor_desc *td);
const char *ck_split_name(int split);
int ck_split_get(json_t *t, yk_tensor_desc *td);
/* Checksums are written as 16 lowercase hex digits. */
uint64_t ck_hex_parse(const char *s, int *ok);
void ck_hex(char out[17], uint64_t v);
/* Little-endian u64 at p. */
void ck_put64(uint8_t *p, uint64_t v);
uint64_t ck_get64(const uint8_t *p);
/* Read exactly len bytes at off (retrying short reads): 0 or -1. */
int ck_pread_all(int fd, void *buf, size_t len, uint64_t off);
/* A shard file is header | chunk payloads | blobs | index JSON | trailer.
 * Header: magic, format version, rank, world, step (u64 each), zero pad.
 * Trailer: index offset, index length, XXH3 of the index, XXH3 of the file
 * up to the trailer's last 16 bytes, magic. trailer_get returns -1 on a bad
 * magic. */
void ck_shard_header_put(uint8_t hdr[CK_HEADER_BYTES], int rank, int world, int64_t step);
void ck_shard_trailer_put(uint8_t tr[CK_TRAILER_BYTES], uint64_t index_off, uint64_t index_len, uint64_t index_sum,
                          uint64_t file_sum);
int ck_shard_trailer_get(const uint8_t tr[CK_TRAILER_BYTES], uint64_t *index_off, uint64_t *index_len,
                         uint64_t *index_sum, uint64_t *file_sum);
/* Parse + check a shard file's trailer and index (file of `size` bytes).
 * *index is a new reference. */
int ck_read_shard_index(const char *path, json_t **index, uint64_t *size, uint64_t *file_sum, yk_diag *d);
/* Load DIR/manifest.json and check its checksum, format and version; *text
 * (free()) and *out (json_decref) are the caller's on success. */
int ck_load_manifest(const char *dir, char **text, json_t **out, yk_diag *d);

/* write.c */
/* buffered: 1 = page-cache writes, 0 = O_DIRECT where the filesystem has it */
int ck_write_plan(const char *root, const ck_plan *p, int level, int threads, int buffered, yk_ckpt_write_stats *st,
                  yk_diag *d);
int ck_commit(const char *root, int64_t step, int world, int keep, const yk_logger *lg, yk_diag *d);
int ck_fsync_dir(const char *dir, yk_diag *d);

/* state.c */
/* *out = where elements [lo, lo + len) of the arena are in its data; 0, or
 * YK_EINVAL when this process does not hold all of them (d says which it
 * holds). */
int ck_arena_range(const ck_arena *a, uint64_t lo, uint64_t len, const uint8_t **out, yk_diag *d);
/* The elements [*lo, *lo + *len) writer `rank` of `world` saves of arena a:
 * its even range among the arena's saving group, or among all writers. */
void ck_arena_save_range(const ck_arena *a, int rank, int world, uint64_t *lo, uint64_t *len);
int ck_state_blob_refs(const yk_ckpt_state *s, int rank, ck_blob_ref **out, int *n);

#endif
