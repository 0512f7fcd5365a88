/* Unit tests of ckpt/: round trips at world sizes 1..4 with reshard reads,
 * blobs, keep-K rotation, corruption detection, fallback, async writer.
 * Ranks are simulated in-process: every "rank" holds the same full arenas and
 * writes its shard; rank 0 commits. */
#define _GNU_SOURCE
#include "ckpt_internal.h" /* ck_chunk_encode/decode for the codec tests */
#include "yk_ckpt.h"
#include "yk_partition.h"

#include <check.h>
#include <xxhash.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

typedef struct {
  uint64_t n32, n16;
  float *p, *m, *v;
  uint16_t *h;
  yk_tensor_desc t32[3], t16[2];
} fake_state;

static void fake_init(fake_state *f, uint64_t n32, uint64_t seed) {
  f->n32 = n32;
  f->n16 = n32 / 2 + 3;
  f->p = malloc(n32 * 4);
  f->m = malloc(n32 * 4);
  f->v = malloc(n32 * 4);
  f->h = malloc(f->n16 * 2);
  yk_rng r;
  yk_rng_seed(&r, seed);
  for (uint64_t i = 0; i < n32; i++) {
    f->p[i] = 0.02f * yk_rng_normal(&r);
    float g = 0.01f * yk_rng_normal(&r);
    f->m[i] = 0.1f * g;
    f->v[i] = 0.001f * g * g;
  }
  for (uint64_t i = 0; i < f->n16; i++) f->h[i] = yk_f32_to_bf16(f->p[i % n32]);
  /* three synthetic tensors (no model has such a table): a gap between the
   * 2nd and 3rd and a tail after it, elements outside every tensor */
  memset(f->t32, 0, sizeof f->t32);
  uint64_t a = n32 / 3, b = n32 / 2;
  snprintf(f->t32[0].name, 48, "tensA");
  f->t32[0].offset = 0;
  f->t32[0].numel = a;
  f->t32[0].ndim = 2;
  f->t32[0].shape[0] = 1;
  f->t32[0].shape[1] = (int64_t)a;
  snprintf(f->t32[1].name, 48, "tensB");
  f->t32[1].offset = a;
  f->t32[1].numel = b - a;
  f->t32[1].ndim = 1;
  f->t32[1].shape[0] = (int64_t)(b - a);
  snprintf(f->t32[2].name, 48, "tensC");
  f->t32[2].offset = b + 5;
  f->t32[2].numel = n32 - b - 10;
  f->t32[2].ndim = 1;
  f->t32[2].shape[0] = (int64_t)(n32 - b - 10);
  memset(f->t16, 0, sizeof f->t16);
  snprintf(f->t16[0].name, 48, "a");
  f->t16[0].numel = f->n16 / 2;
  f->t16[0].ndim = 1;
  f->t16[0].shape[0] = (int64_t)(f->n16 / 2);
  snprintf(f->t16[1].name, 48, "b");
  f->t16[1].offset = f->n16 / 2;
  f->t16[1].numel = f->n16 - f->n16 / 2;
  f->t16[1].ndim = 1;
  f->t16[1].shape[0] = (int64_t)(f->n16 - f->n16 / 2);
}

static void fake_free(fake_state *f) {
  free(f->p);
  free(f->m);
  free(f->v);
  free(f->h);
}

static yk_ckpt_state *fake_register(fake_state *f, int rank) {
  yk_ckpt_state *s;
  yk_diag d = {0};
  ck_assert_int_eq(yk_ckpt_state_create(&s), 0);
  ck_assert_int_eq(yk_ckpt_state_add_arena(s, "params", YK_DT_F32, f->p, f->n32, f->t32, 3, &d), 0);
  ck_assert_int_eq(yk_ckpt_state_add_arena(s, "params16", YK_DT_BF16, f->h, f->n16, f->t16, 2, &d), 0);
  ck_assert_int_eq(yk_ckpt_state_add_arena(s, "m", YK_DT_F32, f->m, f->n32, f->t32, 3, &d), 0);
  ck_assert_int_eq(yk_ckpt_state_add_arena(s, "v", YK_DT_F32, f->v, f->n32, f->t32, 3, &d), 0);
  ck_assert_int_eq(yk_ckpt_state_set_blob(s, "loss_scale", "{\"scale\":65536}", 15, 0, &d), 0);
  char rng[32];
  snprintf(rng, sizeof rng, "rng-of-rank-%d", rank);
  ck_assert_int_eq(yk_ckpt_state_set_blob(s, "rng", rng, strlen(rng), 1, &d), 0);
  ck_assert_int_eq(yk_ckpt_state_set_model_json(s, "{\"vocab_size\": 50257, \"heads\": 12}", &d), 0);
  ck_assert_int_eq(yk_ckpt_state_set_config_yaml(s, "model:\n  name: tiny\n", &d), 0);
  return s;
}

static char *mkroot(void) {
  char *t = strdup("/tmp/yk_ckpt_test_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(t));
  return t;
}

static int rm_cb(const char *p, const struct stat *sb, int fl, struct FTW *ftw) {
  (void)sb;
  (void)ftw;
  return fl == FTW_DP ? rmdir(p) : unlink(p);
}
static void rmroot(char *t) {
  nftw(t, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  free(t);
}

/* Save fake state f at `step` as world W (ranks simulated in turn), commit. */
static void save_world(const char *root, fake_state *f, int W, int64_t step, int keep) {
  yk_diag d = {0};
  for (int r = 0; r < W; r++) {
    yk_ckpt_state *s = fake_register(f, r);
    yk_ckpt_opts o;
    yk_ckpt_opts_default(&o);
    o.dir = root;
    o.rank = r;
    o.world = W;
    o.threads = 2;
    o.keep = keep;
    int rc = yk_ckpt_write_shard(&o, s, step, NULL, &d);
    ck_assert_msg(rc == 0, "write_shard: %s", yk_diag_msg(&d, rc));
    yk_ckpt_state_free(s);
  }
  yk_ckpt_opts o;
  yk_ckpt_opts_default(&o);
  o.dir = root;
  o.world = W;
  o.keep = keep;
  int rc = yk_ckpt_commit(&o, step, &d);
  ck_assert_msg(rc == 0, "commit: %s", yk_diag_msg(&d, rc));
}

static void check_arena(yk_ckpt_reader *r, const char *name, const void *want, uint64_t numel, size_t es) {
  yk_diag d = {0};
  /* the whole arena, then the even ranges of world sizes 1..4 */
  uint8_t *buf = malloc(numel * es);
  int rc = yk_ckpt_reader_read(r, name, 0, numel, buf, &d);
  ck_assert_msg(rc == 0, "read %s: %s", name, yk_diag_msg(&d, rc));
  ck_assert_msg(!memcmp(buf, want, numel * es), "arena %s differs", name);
  for (int M = 1; M <= 4; M++)
    for (int q = 0; q < M; q++) {
      uint64_t off, len;
      yk_partition_even_range(numel, M, q, &off, &len);
      memset(buf, 0, len * es);
      rc = yk_ckpt_reader_read(r, name, off, len, buf, &d);
      ck_assert_msg(rc == 0, "read %s: %s", name, yk_diag_msg(&d, rc));
      ck_assert_msg(!memcmp(buf, (const uint8_t *)want + off * es, len * es), "arena %s rank %d/%d differs", name, q, M);
    }
  free(buf);
}

static void check_all(yk_ckpt_reader *r, fake_state *f, int W) {
  /* saved without a layout: one data-parallel group of the writers */
  yk_layout lay;
  int seq = 1;
  yk_ckpt_reader_layout(r, &lay, &seq);
  ck_assert(lay.dp == W && lay.tp == 1 && lay.pp == 1 && seq == 0);
  check_arena(r, "params", f->p, f->n32, 4);
  check_arena(r, "params16", f->h, f->n16, 2);
  check_arena(r, "m", f->m, f->n32, 4);
  check_arena(r, "v", f->v, f->n32, 4);
  yk_diag d = {0};
  void *b;
  size_t len;
  ck_assert_int_eq(yk_ckpt_reader_blob(r, "loss_scale", -1, &b, &len, &d), 0);
  ck_assert_uint_eq(len, 15);
  ck_assert_str_eq(b, "{\"scale\":65536}");
  free(b);
  for (int q = 0; q < W; q++) {
    char want[32];
    snprintf(want, sizeof want, "rng-of-rank-%d", q);
    ck_assert_int_eq(yk_ckpt_reader_blob(r, "rng", q, &b, &len, &d), 0);
    ck_assert_str_eq(b, want);
    free(b);
  }
  ck_assert_int_eq(yk_ckpt_reader_blob(r, "rng", W, &b, &len, &d), YK_ENOTFOUND);
  ck_assert_ptr_nonnull(strstr(yk_ckpt_reader_model_json(r), "50257"));
  ck_assert_str_eq(yk_ckpt_reader_config_yaml(r), "model:\n  name: tiny\n");
  yk_ckpt_arena_info ai;
  ck_assert_int_eq(yk_ckpt_reader_find_arena(r, "params", &ai, &d), 0);
  ck_assert_int_eq(ai.ntensors, 3);
  ck_assert_str_eq(ai.tensors[2].name, "tensC");
  /* one tensor by name */
  float *t = malloc(ai.tensors[1].numel * 4);
  ck_assert_int_eq(yk_ckpt_reader_read_tensor(r, "params", "tensB", t, &d), 0);
  ck_assert(!memcmp(t, f->p + ai.tensors[1].offset, ai.tensors[1].numel * 4));
  free(t);
  ck_assert_int_eq(yk_ckpt_reader_find_arena(r, "nope", NULL, &d), YK_ENOTFOUND);
  ck_assert_ptr_nonnull(strstr(d.msg, "params16"));
}

START_TEST(test_roundtrip_worlds) {
  fake_state f;
  fake_init(&f, 2500001, 7); /* > 2 chunks, odd sizes */
  for (int W = 1; W <= 4; W++) {
    char *root = mkroot();
    save_world(root, &f, W, 100 + W, 3);
    yk_ckpt_reader *r;
    yk_diag d = {0};
    yk_ckpt_open_opts oo = {.verify = YK_CKPT_VERIFY_FULL, .threads = 2};
    int rc = yk_ckpt_reader_open(root, &oo, &r, &d);
    ck_assert_msg(rc == 0, "open: %s", yk_diag_msg(&d, rc));
    ck_assert_int_eq(yk_ckpt_reader_step(r), 100 + W);
    ck_assert_int_eq(yk_ckpt_reader_world(r), W);
    check_all(r, &f, W);
    ck_assert_int_eq(yk_ckpt_reader_verify(r, &d), 0);
    /* restore into a zeroed copy of the state */
    fake_state g;
    fake_init(&g, f.n32, 99);
    yk_ckpt_state *s = fake_register(&g, 0);
    rc = yk_ckpt_restore(r, s, &d);
    ck_assert_msg(rc == 0, "restore: %s", yk_diag_msg(&d, rc));
    ck_assert(!memcmp(g.p, f.p, f.n32 * 4) && !memcmp(g.v, f.v, f.n32 * 4) && !memcmp(g.h, f.h, f.n16 * 2));
    yk_ckpt_state_free(s);
    fake_free(&g);
    yk_ckpt_reader_close(r);
    rmroot(root);
  }
  fake_free(&f);
}
END_TEST

START_TEST(test_reshard_convert) {
  fake_state f;
  fake_init(&f, 1500000, 3);
  char *root = mkroot(), *out = mkroot();
  save_world(root, &f, 2, 42, 3);
  yk_ckpt_reader *r;
  yk_diag d = {0};
  ck_assert_int_eq(yk_ckpt_reader_open(root, NULL, &r, &d), 0);
  yk_ckpt_opts o;
  yk_ckpt_opts_default(&o);
  o.dir = out;
  o.world = 3;
  int rc = yk_ckpt_convert_reshard(r, &o, &d);
  ck_assert_msg(rc == 0, "convert: %s", yk_diag_msg(&d, rc));
  yk_ckpt_reader_close(r);
  ck_assert_int_eq(yk_ckpt_reader_open(out, NULL, &r, &d), 0);
  ck_assert_int_eq(yk_ckpt_reader_world(r), 3);
  ck_assert_int_eq(yk_ckpt_reader_step(r), 42);
  check_arena(r, "params", f.p, f.n32, 4);
  check_arena(r, "v", f.v, f.n32, 4);
  void *b;
  size_t len;
  ck_assert_int_eq(yk_ckpt_reader_blob(r, "rng", 1, &b, &len, &d), 0);
  ck_assert_str_eq(b, "rng-of-rank-1");
  free(b);
  ck_assert_int_eq(yk_ckpt_reader_blob(r, "rng", 2, &b, &len, &d), YK_ENOTFOUND);
  ck_assert_int_eq(yk_ckpt_reader_verify(r, &d), 0);
  yk_ckpt_reader_close(r);
  rmroot(root);
  rmroot(out);
  fake_free(&f);
}
END_TEST

START_TEST(test_keep_rotation_and_partial) {
  fake_state f;
  fake_init(&f, 300000, 5);
  char *root = mkroot();
  for (int step = 1; step <= 5; step++) save_world(root, &f, 2, step * 10, 2);
  yk_ckpt_entry *e;
  int n;
  yk_diag d = {0};
  ck_assert_int_eq(yk_ckpt_list(root, &e, &n, &d), 0);
  ck_assert_int_eq(n, 2);
  ck_assert_int_eq(e[0].step, 40);
  ck_assert_int_eq(e[1].step, 50);
  ck_assert(e[0].committed && e[1].committed && e[1].world == 2 && e[1].bytes > 0);
  free(e);
  /* an uncommitted save (shards, no commit) is listed but is not a checkpoint */
  yk_ckpt_state *s = fake_register(&f, 0);
  yk_ckpt_opts o;
  yk_ckpt_opts_default(&o);
  o.dir = root;
  ck_assert_int_eq(yk_ckpt_write_shard(&o, s, 60, NULL, &d), 0);
  yk_ckpt_state_free(s);
  ck_assert_int_eq(yk_ckpt_list(root, &e, &n, &d), 0);
  ck_assert_int_eq(n, 3);
  ck_assert_int_eq(e[2].step, 60);
  ck_assert_int_eq(e[2].committed, 0);
  free(e);
  yk_ckpt_reader *r;
  ck_assert_int_eq(yk_ckpt_reader_open(root, NULL, &r, &d), 0);
  ck_assert_int_eq(yk_ckpt_reader_step(r), 50);
  yk_ckpt_reader_close(r);
  char p[4200];
  snprintf(p, sizeof p, "%s/step-00000060.partial", root);
  ck_assert_int_eq(yk_ckpt_reader_open(p, NULL, &r, &d), YK_ENOTFOUND);
  /* re-saving an existing step replaces it atomically */
  save_world(root, &f, 1, 50, 2);
  ck_assert_int_eq(yk_ckpt_reader_open(root, NULL, &r, &d), 0);
  ck_assert_int_eq(yk_ckpt_reader_world(r), 1);
  yk_ckpt_reader_close(r);
  ck_assert_int_eq(yk_ckpt_list(root, &e, &n, &d), 0);
  ck_assert_int_eq(n, 3); /* 40, 50 and the partial of 60 (newer: may be in progress) */
  free(e);
  /* resuming from 40 and committing 45 sets the newer 50 aside: it must not
   * shadow 45 as "latest", and it is not deleted */
  save_world(root, &f, 2, 45, 2);
  ck_assert_int_eq(yk_ckpt_reader_open(root, NULL, &r, &d), 0);
  ck_assert_int_eq(yk_ckpt_reader_step(r), 45);
  yk_ckpt_reader_close(r);
  snprintf(p, sizeof p, "%s/step-00000050.abandoned/manifest.json", root);
  ck_assert_int_eq(access(p, F_OK), 0);
  ck_assert_int_eq(yk_ckpt_list(root, &e, &n, &d), 0);
  ck_assert_int_eq(n, 3); /* 40, 45, partial 60 */
  ck_assert_int_eq(e[0].step, 40);
  ck_assert_int_eq(e[1].step, 45);
  free(e);
  rmroot(root);
  fake_free(&f);
}
END_TEST

static void flip_byte(const char *path, long off) {
  int fd = open(path, O_RDWR);
  ck_assert_int_ge(fd, 0);
  unsigned char c;
  if (off < 0) off += lseek(fd, 0, SEEK_END);
  ck_assert_int_eq(pread(fd, &c, 1, off), 1);
  c ^= 0x5a;
  ck_assert_int_eq(pwrite(fd, &c, 1, off), 1);
  close(fd);
}

static long file_size(const char *p) {
  struct stat sb;
  ck_assert_int_eq(stat(p, &sb), 0);
  return (long)sb.st_size;
}

/* Open (META) then verify; the first failure's message must name `file`
 * and contain `what` (a tensor name or another token). */
static void expect_detected(const char *root, const char *file, const char *what) {
  yk_ckpt_reader *r = NULL;
  yk_diag d = {0};
  int rc = yk_ckpt_reader_open(root, NULL, &r, &d);
  if (rc == 0) {
    rc = yk_ckpt_reader_verify(r, &d);
    yk_ckpt_reader_close(r);
  }
  ck_assert_msg(rc != 0, "corruption of %s not detected", file);
  ck_assert_msg(strstr(d.msg, file), "message does not name %s: %s", file, d.msg);
  ck_assert_msg(strstr(d.msg, what), "message does not name '%s': %s", what, d.msg);
}

START_TEST(test_corruption_detected) {
  fake_state f;
  fake_init(&f, 1200000, 11);
  const char *s0 = "shard-00000-of-00002.yks", *s1 = "shard-00001-of-00002.yks";
  char p[4200];
  /* flipped byte inside tensor data of each shard */
  for (int k = 0; k < 2; k++) {
    char *root = mkroot();
    save_world(root, &f, 2, 7, 3);
    snprintf(p, sizeof p, "%s/step-00000007/%s", root, k ? s1 : s0);
    flip_byte(p, 64 + 1000); /* first chunk: tensor tensA in shard 0, tensB in shard 1 */
    expect_detected(root, k ? s1 : s0, k ? "tensC" : "tensA");
    /* reading the damaged range fails too, naming file and tensor */
    yk_ckpt_reader *r;
    yk_diag d = {0};
    ck_assert_int_eq(yk_ckpt_reader_open(root, NULL, &r, &d), 0);
    float *buf = malloc(f.n32 * 4);
    ck_assert_int_eq(yk_ckpt_reader_read(r, "params", 0, f.n32, buf, &d), YK_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(d.msg, k ? s1 : s0));
    free(buf);
    yk_ckpt_reader_close(r);
    rmroot(root);
  }
  /* flipped byte in the middle of each shard, the index, the manifest */
  const long offs[] = {-1, -30, -300};
  for (int k = 0; k < 3; k++) {
    char *root = mkroot();
    save_world(root, &f, 2, 7, 3);
    snprintf(p, sizeof p, "%s/step-00000007/%s", root, s1);
    flip_byte(p, offs[k]);
    expect_detected(root, s1, "");
    rmroot(root);
  }
  {
    char *root = mkroot();
    save_world(root, &f, 2, 7, 3);
    snprintf(p, sizeof p, "%s/step-00000007/%s", root, s0);
    flip_byte(p, file_size(p) / 2);
    expect_detected(root, s0, "arena");
    rmroot(root);
  }
  {
    char *root = mkroot();
    save_world(root, &f, 2, 7, 3);
    snprintf(p, sizeof p, "%s/step-00000007/manifest.json", root);
    flip_byte(p, file_size(p) / 2);
    yk_ckpt_reader *r;
    yk_diag d = {0};
    snprintf(p, sizeof p, "%s/step-00000007", root);
    ck_assert_int_ne(yk_ckpt_reader_open(p, NULL, &r, &d), 0);
    ck_assert_ptr_nonnull(strstr(d.msg, "manifest.json"));
    rmroot(root);
  }
  /* truncated shard; missing shard */
  {
    char *root = mkroot();
    save_world(root, &f, 2, 7, 3);
    snprintf(p, sizeof p, "%s/step-00000007/%s", root, s1);
    ck_assert_int_eq(truncate(p, file_size(p) - 100), 0);
    expect_detected(root, s1, "tensC");
    rmroot(root);
  }
  {
    char *root = mkroot();
    save_world(root, &f, 2, 7, 3);
    snprintf(p, sizeof p, "%s/step-00000007/%s", root, s0);
    ck_assert_int_eq(unlink(p), 0);
    expect_detected(root, s0, "tensA");
    rmroot(root);
  }
  fake_free(&f);
}
END_TEST

static uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Chunk codec: planes whose sample compresses are zstd frames, the others
 * raw, in any mix (a raw plane after a compressed one is moved down in
 * place); every element size, sizes below the sample threshold, n = 0.
 * Elements: byte 0 and byte es-1 constant-ish (compressible), the middle
 * bytes random (incompressible). */
START_TEST(test_codec_planes) {
  const size_t sizes[] = {0, 1, 37, 40000, 100003};
  const size_t ess[] = {1, 2, 4, 8};
  yk_rng rng;
  yk_rng_seed(&rng, 99);
  void *z = ck_zctx_new(), *dz = ck_dctx_new();
  for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
    for (size_t ei = 0; ei < 4; ei++) {
      size_t n = sizes[si], es = ess[ei];
      uint8_t *src = malloc(n * es + 1), *back = malloc(n * es + 1), *scr = malloc(n * es + 1);
      size_t cap = ck_chunk_bound(n * es, es);
      uint8_t *enc = malloc(cap);
      for (size_t i = 0; i < n; i++)
        for (size_t b = 0; b < es; b++)
          src[i * es + b] = (b == 0 || b == es - 1) ? (uint8_t)(i % 3 == 0) : (uint8_t)yk_rng_u64(&rng);
      for (int level = -1; level <= 3; level += 2) {
        uint64_t raw_sum = 0;
        size_t len = ck_chunk_encode(src, n, es, level, z, scr, enc, cap, &raw_sum);
        ck_assert_msg(len >= 8 * es, "encode n=%zu es=%zu level %d failed", n, es, level);
        ck_assert_msg(raw_sum == XXH3_64bits(src, n * es), "raw checksum n=%zu es=%zu", n, es);
        /* plane table: sizes add up; with a sample (n > 32 KiB) the random
         * middle planes are raw and the outer ones compressed */
        size_t sum = 8 * es;
        for (size_t b = 0; b < es; b++) {
          uint32_t codec = le32(enc + 8 * b), stored = le32(enc + 8 * b + 4);
          ck_assert(codec == CK_PLANE_RAW || codec == CK_PLANE_ZSTD);
          if (codec == CK_PLANE_RAW) ck_assert_uint_eq(stored, n);
          else ck_assert_uint_lt(stored, n);
          if (n > 65536) {
            int outer = b == 0 || b == es - 1;
            ck_assert_msg(codec == (outer ? CK_PLANE_ZSTD : CK_PLANE_RAW), "n=%zu es=%zu plane %zu codec %u", n, es,
                          b, codec);
          }
          sum += stored;
        }
        ck_assert_uint_eq(sum, len);
        memset(back, 0xee, n * es + 1);
        ck_assert_int_eq(ck_chunk_decode(enc, len, n, es, dz, scr, back), 0);
        ck_assert_msg(!memcmp(back, src, n * es), "round trip n=%zu es=%zu level %d", n, es, level);
        ck_assert_uint_eq(back[n * es], 0xee);
        /* a plane table that does not add up is refused */
        if (len > 8 * es) {
          ck_assert_int_eq(ck_chunk_decode(enc, len - 1, n, es, dz, scr, back), YK_ECORRUPT);
          enc[4] ^= 1;
          ck_assert_int_eq(ck_chunk_decode(enc, len, n, es, dz, scr, back), YK_ECORRUPT);
        }
      }
      free(src);
      free(back);
      free(scr);
      free(enc);
    }
  ck_zctx_free(z);
  ck_dctx_free(dz);
}
END_TEST

/* A save's first chunk (params, tensor tensA, f32) mixes raw and compressed
 * planes: its mantissa planes are raw, its sign/exponent plane zstd. A
 * flipped byte in the raw plane and one in the compressed plane are each
 * detected (by the chunk checksum), naming the file and the tensor. */
START_TEST(test_raw_and_zstd_plane_damage) {
  fake_state f;
  fake_init(&f, 400000, 17);
  const char *s0 = "shard-00000-of-00001.yks";
  for (int k = 0; k < 2; k++) {
    char *root = mkroot();
    save_world(root, &f, 1, 4, 3);
    char p[4200];
    snprintf(p, sizeof p, "%s/step-00000004/%s", root, s0);
    int fd = open(p, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    uint8_t tab[32];
    ck_assert_int_eq(pread(fd, tab, sizeof tab, 64), (ssize_t)sizeof tab);
    close(fd);
    uint64_t n = f.t32[0].numel < YK_CKPT_CHUNK_ELEMS ? f.t32[0].numel : YK_CKPT_CHUNK_ELEMS;
    ck_assert_uint_eq(le32(tab), CK_PLANE_RAW);
    ck_assert_uint_eq(le32(tab + 4), n);
    ck_assert_uint_eq(le32(tab + 24), CK_PLANE_ZSTD);
    long raw0 = 64 + 32, exp3 = raw0 + (long)le32(tab + 4) + (long)le32(tab + 12) + (long)le32(tab + 20);
    flip_byte(p, k == 0 ? raw0 + 777 : exp3 + (long)le32(tab + 28) / 2);
    expect_detected(root, s0, "tensA");
    rmroot(root);
  }
  fake_free(&f);
}
END_TEST

/* Shard output: O_DIRECT through the staging buffer (on a filesystem that
 * has it) and buffered writes (buffered_io). A blob bigger than the staging
 * buffer and a file size that is no multiple of the block size: the file
 * ends exactly at its trailer, verifies and reads back. */
START_TEST(test_direct_and_buffered_output) {
  fake_state f;
  fake_init(&f, 300000, 23);
  size_t big = (9u << 20) + 123;
  uint8_t *blob = malloc(big);
  for (size_t i = 0; i < big; i++) blob[i] = (uint8_t)(i * 2654435761u >> 13);
  for (int k = 0; k < 2; k++) {
    char *root = mkroot();
    yk_diag d = {0};
    yk_ckpt_state *s = fake_register(&f, 0);
    ck_assert_int_eq(yk_ckpt_state_set_blob(s, "big", blob, big, 0, &d), 0);
    yk_ckpt_opts o;
    yk_ckpt_opts_default(&o);
    o.dir = root;
    o.threads = 2;
    o.buffered_io = k;
    yk_ckpt_write_stats st;
    int rc = yk_ckpt_write_shard(&o, s, 9, &st, &d);
    ck_assert_msg(rc == 0, "%s", yk_diag_msg(&d, rc));
    ck_assert_int_eq(yk_ckpt_commit(&o, 9, &d), 0);
    yk_ckpt_state_free(s);
    struct statfs rf;
    ck_assert_int_eq(statfs(root, &rf), 0);
    if (k == 1) ck_assert_int_eq(st.direct_io, 0);
    else if (rf.f_type == 0xEF53) ck_assert_int_eq(st.direct_io, 1); /* ext2/3/4 has O_DIRECT */
    char p[4200];
    snprintf(p, sizeof p, "%s/step-00000009/shard-00000-of-00001.yks", root);
    long size = file_size(p);
    ck_assert_int_eq(size, (long)st.file_bytes);
    ck_assert_int_ne(size % 4096, 0);
    char tail[8];
    int fd = open(p, O_RDONLY);
    ck_assert_int_eq(pread(fd, tail, 8, size - 8), 8);
    close(fd);
    ck_assert(!memcmp(tail, "YKSHEND1", 8));
    yk_ckpt_reader *r;
    ck_assert_int_eq(yk_ckpt_reader_open(root, NULL, &r, &d), 0);
    ck_assert_int_eq(yk_ckpt_reader_verify(r, &d), 0);
    check_all(r, &f, 1);
    void *b;
    size_t len;
    ck_assert_int_eq(yk_ckpt_reader_blob(r, "big", -1, &b, &len, &d), 0);
    ck_assert_uint_eq(len, big);
    ck_assert(!memcmp(b, blob, big));
    free(b);
    yk_ckpt_reader_close(r);
    rmroot(root);
  }
  free(blob);
  fake_free(&f);
}
END_TEST

/* Random single-byte flips anywhere in a shard or the manifest, and random
 * truncations: always detected, never a crash. */
START_TEST(test_random_damage_detected) {
  fake_state f;
  fake_init(&f, 150000, 21);
  char *root = mkroot();
  save_world(root, &f, 2, 3, 3);
  char dir[4200], p[4300];
  snprintf(dir, sizeof dir, "%s/step-00000003", root);
  const char *files[3] = {"shard-00000-of-00002.yks", "shard-00001-of-00002.yks", "manifest.json"};
  yk_rng rng;
  yk_rng_seed(&rng, 5);
  for (int it = 0; it < 60; it++) {
    const char *fn = files[it % 3];
    snprintf(p, sizeof p, "%s/%s", dir, fn);
    char *orig;
    size_t len;
    ck_assert_int_eq(yk_file_read(p, &orig, &len, NULL), 0);
    if (it % 7 == 6) {
      ck_assert_int_eq(truncate(p, (off_t)(yk_rng_u64(&rng) % len)), 0);
    } else {
      long off = (long)(yk_rng_u64(&rng) % len);
      flip_byte(p, off);
    }
    yk_ckpt_reader *r = NULL;
    yk_diag d = {0};
    yk_ckpt_open_opts oo = {.threads = 2};
    int rc = yk_ckpt_reader_open(dir, &oo, &r, &d);
    if (!rc) {
      rc = yk_ckpt_reader_verify(r, &d);
      yk_ckpt_reader_close(r);
    }
    ck_assert_msg(rc != 0, "damage %d in %s not detected", it, fn);
    ck_assert_msg(strstr(d.msg, fn) || strstr(d.msg, "manifest.json"), "message does not name %s: %s", fn, d.msg);
    ck_assert_int_eq(yk_file_write_atomic(p, orig, len, NULL), 0);
    free(orig);
  }
  yk_ckpt_reader *r;
  yk_diag d = {0};
  ck_assert_int_eq(yk_ckpt_reader_open(dir, NULL, &r, &d), 0);
  ck_assert_int_eq(yk_ckpt_reader_verify(r, &d), 0);
  yk_ckpt_reader_close(r);
  rmroot(root);
  fake_free(&f);
}
END_TEST

START_TEST(test_fallback_only_when_told) {
  fake_state f;
  fake_init(&f, 400000, 13);
  char *root = mkroot();
  save_world(root, &f, 2, 1, 3);
  save_world(root, &f, 2, 2, 3);
  char p[4200];
  snprintf(p, sizeof p, "%s/step-00000002/shard-00001-of-00002.yks", root);
  flip_byte(p, 100);
  yk_ckpt_reader *r = NULL;
  yk_diag d = {0};
  yk_ckpt_open_opts oo = {.verify = YK_CKPT_VERIFY_FULL};
  ck_assert_int_eq(yk_ckpt_reader_open(root, &oo, &r, &d), YK_ECORRUPT);
  ck_assert_ptr_nonnull(strstr(d.msg, "step-00000002/shard-00001-of-00002.yks"));
  ck_assert_ptr_null(r);
  oo.fallback = 1;
  ck_assert_int_eq(yk_ckpt_reader_open(root, &oo, &r, &d), 0);
  ck_assert_int_eq(yk_ckpt_reader_step(r), 1);
  check_arena(r, "params", f.p, f.n32, 4);
  yk_ckpt_reader_close(r);
  /* a damaged manifest of the newest also falls back only when told */
  snprintf(p, sizeof p, "%s/step-00000002/manifest.json", root);
  flip_byte(p, 10);
  oo.fallback = 0;
  oo.verify = YK_CKPT_VERIFY_META;
  ck_assert_int_eq(yk_ckpt_reader_open(root, &oo, &r, &d), YK_ECORRUPT);
  oo.fallback = 1;
  ck_assert_int_eq(yk_ckpt_reader_open(root, &oo, &r, &d), 0);
  ck_assert_int_eq(yk_ckpt_reader_step(r), 1);
  yk_ckpt_reader_close(r);
  /* training resumed from step 1 commits step 2 again: the damaged old one
   * is swapped out and "latest" works without fallback again */
  save_world(root, &f, 2, 2, 3);
  oo.fallback = 0;
  ck_assert_int_eq(yk_ckpt_reader_open(root, &oo, &r, &d), 0);
  ck_assert_int_eq(yk_ckpt_reader_step(r), 2);
  yk_ckpt_reader_close(r);
  /* a damaged newer checkpoint (3) is set aside when an older step (2) is committed */
  save_world(root, &f, 2, 3, 3);
  snprintf(p, sizeof p, "%s/step-00000003/manifest.json", root);
  flip_byte(p, 10);
  save_world(root, &f, 2, 2, 3);
  ck_assert_int_eq(yk_ckpt_reader_open(root, &oo, &r, &d), 0);
  ck_assert_int_eq(yk_ckpt_reader_step(r), 2);
  yk_ckpt_reader_close(r);
  snprintf(p, sizeof p, "%s/step-00000003.abandoned/manifest.json", root);
  ck_assert_int_eq(access(p, F_OK), 0);
  rmroot(root);
  fake_free(&f);
}
END_TEST

START_TEST(test_async_writer) {
  fake_state f;
  fake_init(&f, 1100000, 17);
  float *orig = malloc(f.n32 * 4);
  memcpy(orig, f.p, f.n32 * 4);
  char *root = mkroot();
  yk_diag d = {0};
  for (int defer = 0; defer <= 1; defer++) {
    yk_ckpt_writer *w[2];
    yk_ckpt_state *s[2];
    int64_t step = 10 + defer;
    for (int r = 0; r < 2; r++) {
      yk_ckpt_opts o;
      yk_ckpt_opts_default(&o);
      o.dir = root;
      o.rank = r;
      o.world = 2;
      o.threads = 1;
      ck_assert_int_eq(yk_ckpt_writer_create(&o, &w[r], &d), 0);
      s[r] = fake_register(&f, r);
      int rc = yk_ckpt_writer_save(w[r], s[r], step, defer ? YK_CKPT_DEFER_COPY : 0, &d);
      ck_assert_msg(rc == 0, "save: %s", yk_diag_msg(&d, rc));
      ck_assert_int_eq(yk_ckpt_writer_save(w[r], s[r], step, 0, &d), YK_EBUSY);
    }
    for (int r = 0; r < 2; r++) ck_assert_int_eq(yk_ckpt_writer_release(w[r], yk_deadline_in_ms(30000), &d), 0);
    /* training goes on: the snapshot must not see this */
    for (uint64_t i = 0; i < f.n32; i++) f.p[i] += 1.0f;
    for (int r = 0; r < 2; r++) {
      int rc = yk_ckpt_writer_wait(w[r], yk_deadline_in_ms(30000), &d);
      ck_assert_msg(rc == 0, "wait: %s", yk_diag_msg(&d, rc));
      ck_assert_int_eq(yk_ckpt_writer_poll(w[r]), 1);
      yk_ckpt_write_stats st;
      yk_ckpt_writer_stats(w[r], &st);
      ck_assert(st.raw_bytes > 0 && st.file_bytes > 0);
    }
    ck_assert_int_eq(yk_ckpt_writer_commit(w[0], &d), 0);
    ck_assert_int_eq(yk_ckpt_writer_wait(w[0], yk_deadline_in_ms(30000), &d), 0);
    for (int r = 0; r < 2; r++) {
      yk_ckpt_writer_free(w[r]);
      yk_ckpt_state_free(s[r]);
    }
    yk_ckpt_reader *rd;
    ck_assert_int_eq(yk_ckpt_reader_open(root, NULL, &rd, &d), 0);
    ck_assert_int_eq(yk_ckpt_reader_step(rd), step);
    check_arena(rd, "params", orig, f.n32, 4);
    yk_ckpt_reader_close(rd);
    memcpy(f.p, orig, f.n32 * 4);
  }
  /* errors are reported on the next call: root is a regular file */
  char bad[4200];
  snprintf(bad, sizeof bad, "%s/not-a-dir", root);
  int fd = open(bad, O_CREAT | O_WRONLY, 0644);
  close(fd);
  yk_ckpt_opts o;
  yk_ckpt_opts_default(&o);
  o.dir = bad;
  yk_ckpt_writer *w;
  ck_assert_int_eq(yk_ckpt_writer_create(&o, &w, &d), 0);
  yk_ckpt_state *s = fake_register(&f, 0);
  ck_assert_int_eq(yk_ckpt_writer_save(w, s, 1, 0, &d), 0);
  memset(&d, 0, sizeof d);
  ck_assert_int_ne(yk_ckpt_writer_wait(w, yk_deadline_in_ms(30000), &d), 0);
  ck_assert_ptr_nonnull(strstr(d.msg, "not-a-dir"));
  ck_assert_int_eq(yk_ckpt_writer_wait(w, yk_deadline_in_ms(30000), &d), 0); /* reported once */
  yk_ckpt_writer_free(w);
  yk_ckpt_state_free(s);
  rmroot(root);
  free(orig);
  fake_free(&f);
}
END_TEST

/* Arenas not in memory (optim.offload=disk): the writer asks fill for each
 * chunk of the save range, one call at a time, takes no snapshot of them,
 * and the checkpoint reads back the same elements; a failing fill fails the
 * save naming the arena. */
typedef struct {
  const float *src;
  uint64_t lo, hi; /* the save range fill may be asked for */
  int calls, fail;
} fill_src;

static int fill_copy(void *ctx, uint64_t lo, uint64_t len, void *dst, yk_diag *d) {
  fill_src *f = ctx;
  f->calls++;
  if (f->fail) return yk_errorf(d, YK_EIO, "offload file gone at %llu", (unsigned long long)lo);
  if (lo < f->lo || lo + len > f->hi || len > YK_CKPT_CHUNK_ELEMS)
    return yk_errorf(d, YK_EINVAL, "asked for [%llu, +%llu) outside [%llu, %llu)", (unsigned long long)lo,
                     (unsigned long long)len, (unsigned long long)f->lo, (unsigned long long)f->hi);
  memcpy(dst, f->src + lo, len * sizeof(float));
  return 0;
}

START_TEST(test_fill_arenas) {
  fake_state f;
  fake_init(&f, 2300000, 23);
  char *root = mkroot();
  yk_diag d = {0};
  for (int fail = 0; fail <= 1; fail++) {
    yk_ckpt_writer *w[2];
    yk_ckpt_state *s[2];
    fill_src fm[2], fv[2];
    for (int r = 0; r < 2; r++) {
      yk_ckpt_opts o;
      yk_ckpt_opts_default(&o);
      o.dir = root;
      o.rank = r;
      o.world = 2;
      o.threads = 2;
      ck_assert_int_eq(yk_ckpt_writer_create(&o, &w[r], &d), 0);
      ck_assert_int_eq(yk_ckpt_state_create(&s[r]), 0);
      uint64_t lo, len;
      yk_partition_even_range(f.n32, 2, r, &lo, &len);
      fm[r] = (fill_src){.src = f.m, .lo = lo, .hi = lo + len, .fail = fail && r == 1};
      fv[r] = (fill_src){.src = f.v, .lo = lo, .hi = lo + len};
      ck_assert_int_eq(yk_ckpt_state_add_arena(s[r], "params", YK_DT_F32, f.p, f.n32, f.t32, 3, &d), 0);
      ck_assert_int_eq(yk_ckpt_state_add_arena_fill(s[r], "m", YK_DT_F32, fill_copy, &fm[r], f.n32, lo, len, 0, 0,
                                                    f.t32, 3, &d), 0);
      ck_assert_int_eq(yk_ckpt_state_add_arena_fill(s[r], "v", YK_DT_F32, fill_copy, &fv[r], f.n32, lo, len, 0, 0,
                                                    f.t32, 3, &d), 0);
      ck_assert_int_eq(yk_ckpt_writer_prepare(w[r], s[r], &d), 0);
      int rc = yk_ckpt_writer_save(w[r], s[r], 5 + fail, 0, &d);
      ck_assert_msg(rc == 0, "save: %s", yk_diag_msg(&d, rc));
    }
    for (int r = 0; r < 2; r++) {
      memset(&d, 0, sizeof d);
      int rc = yk_ckpt_writer_wait(w[r], yk_deadline_in_ms(30000), &d);
      if (fail && r == 1) {
        ck_assert_int_eq(rc, YK_EIO);
        ck_assert_msg(strstr(d.msg, "arena 'm'") && strstr(d.msg, "offload file gone"), "%s", d.msg);
        continue;
      }
      ck_assert_msg(rc == 0, "wait: %s", yk_diag_msg(&d, rc));
      ck_assert(fm[r].calls >= 2 && fv[r].calls >= 2); /* chunk by chunk (tensor cuts, 1M elements) */
    }
    if (!fail) {
      ck_assert_int_eq(yk_ckpt_writer_commit(w[0], &d), 0);
      ck_assert_int_eq(yk_ckpt_writer_wait(w[0], yk_deadline_in_ms(30000), &d), 0);
      yk_ckpt_reader *rd;
      ck_assert_int_eq(yk_ckpt_reader_open(root, NULL, &rd, &d), 0);
      check_arena(rd, "params", f.p, f.n32, 4);
      check_arena(rd, "m", f.m, f.n32, 4);
      check_arena(rd, "v", f.v, f.n32, 4);
      /* yk_ckpt_restore has no memory to put a fill arena in */
      ck_assert_int_eq(yk_ckpt_restore(rd, s[0], &d), YK_EINVAL);
      yk_ckpt_reader_close(rd);
    }
    for (int r = 0; r < 2; r++) {
      yk_ckpt_writer_free(w[r]);
      yk_ckpt_state_free(s[r]);
    }
  }
  ck_assert_int_eq(yk_ckpt_state_add_arena_fill(NULL, "x", YK_DT_F32, NULL, NULL, 1, 0, 1, 0, 0, NULL, 0, &d),
                   YK_EINVAL);
  rmroot(root);
  fake_free(&f);
}
END_TEST

START_TEST(test_tiny_and_empty_arenas) {
  /* fewer elements than ranks, an empty arena, no tensor table, no blobs */
  int64_t tiny[3] = {-1, 1ll << 40, 7};
  char *root = mkroot();
  yk_diag d = {0};
  for (int r = 0; r < 4; r++) {
    yk_ckpt_state *s;
    ck_assert_int_eq(yk_ckpt_state_create(&s), 0);
    ck_assert_int_eq(yk_ckpt_state_add_arena(s, "tiny", YK_DT_I64, tiny, 3, NULL, 0, &d), 0);
    ck_assert_int_eq(yk_ckpt_state_add_arena(s, "empty", YK_DT_U8, NULL, 0, NULL, 0, &d), 0);
    yk_ckpt_opts o;
    yk_ckpt_opts_default(&o);
    o.dir = root;
    o.rank = r;
    o.world = 4;
    o.threads = 1;
    int rc = yk_ckpt_write_shard(&o, s, 0, NULL, &d);
    ck_assert_msg(rc == 0, "%s", yk_diag_msg(&d, rc));
    yk_ckpt_state_free(s);
  }
  yk_ckpt_opts o;
  yk_ckpt_opts_default(&o);
  o.dir = root;
  o.world = 4;
  ck_assert_int_eq(yk_ckpt_commit(&o, 0, &d), 0);
  yk_ckpt_reader *r;
  ck_assert_int_eq(yk_ckpt_reader_open(root, NULL, &r, &d), 0);
  int64_t back[3] = {0};
  ck_assert_int_eq(yk_ckpt_reader_read(r, "tiny", 0, 3, back, &d), 0);
  ck_assert(!memcmp(back, tiny, sizeof tiny));
  ck_assert_int_eq(yk_ckpt_reader_read(r, "tiny", 1, 1, back, &d), 0);
  ck_assert(back[0] == tiny[1]);
  ck_assert_int_eq(yk_ckpt_reader_read(r, "tiny", 2, 2, back, &d), YK_EINVAL);
  ck_assert_int_eq(yk_ckpt_reader_read(r, "empty", 0, 0, back, &d), 0);
  ck_assert_int_eq(yk_ckpt_reader_verify(r, &d), 0);
  ck_assert_ptr_null(yk_ckpt_reader_model_json(r));
  yk_ckpt_reader_close(r);
  /* commit at the wrong world size names the missing shard */
  o.world = 5;
  ck_assert_int_ne(yk_ckpt_commit(&o, 0, &d), 0);
  rmroot(root);
}
END_TEST

/* ZeRO shards: each rank registers only the part of an arena it holds (its
 * even range) and saves it; another world size reads the whole arena back;
 * a rank restores only its part; a part that misses the rank's range is an
 * error naming both ranges. 11 elements over 3 ranks: 4 + 4 + 3. */
/* Rewrite the manifest of checkpoint dir with "version": v (and its
 * checksum again), as another yoke version would have written it. */
static void set_manifest_version(const char *dir, int v) {
  char path[4200], *txt;
  size_t len;
  yk_diag d = {0};
  snprintf(path, sizeof path, "%s/manifest.json", dir);
  ck_assert_int_eq(yk_file_read(path, &txt, &len, &d), 0);
  char *ver = strstr(txt, "\"version\": ");
  ck_assert_ptr_nonnull(ver);
  ver[11] = (char)('0' + v);
  char *key = strstr(txt, "\"manifest_xxh3\"");
  ck_assert_ptr_nonnull(key);
  char h[17];
  ck_hex(h, XXH3_64bits(txt, (size_t)(key - txt)));
  memcpy(key + strlen("\"manifest_xxh3\": \""), h, 16);
  ck_assert_int_eq(yk_file_write_atomic(path, txt, len, &d), 0);
  free(txt);
}

START_TEST(test_arena_parts) {
  char *root = mkroot();
  yk_diag d = {0};
  float full[11], back[11];
  for (int i = 0; i < 11; i++) full[i] = (float)i * 1.5f - 3.0f;
  yk_tensor_desc t[2] = {{.name = "a", .offset = 0, .numel = 5}, {.name = "b", .offset = 5, .numel = 6}};
  for (int r = 0; r < 3; r++) {
    uint64_t lo, len;
    yk_partition_even_range(11, 3, r, &lo, &len);
    float part[4];
    memcpy(part, full + lo, len * sizeof(float));
    yk_ckpt_state *s;
    ck_assert_int_eq(yk_ckpt_state_create(&s), 0);
    ck_assert_int_eq(yk_ckpt_state_add_arena_part(s, "m", YK_DT_F32, part, 11, lo, len, t, 2, &d), 0);
    yk_ckpt_opts o;
    yk_ckpt_opts_default(&o);
    o.dir = root;
    o.rank = r;
    o.world = 3;
    o.threads = 1;
    int rc = yk_ckpt_write_shard(&o, s, 5, NULL, &d);
    ck_assert_msg(rc == 0, "%s", yk_diag_msg(&d, rc));
    /* the same part saved as rank (r + 1) % 3 holds the wrong range */
    o.rank = (r + 1) % 3;
    ck_assert_int_eq(yk_ckpt_write_shard(&o, s, 6, NULL, &d), YK_EINVAL);
    ck_assert_msg(strstr(d.msg, "holds only"), "%s", d.msg);
    yk_ckpt_state_free(s);
  }
  yk_ckpt_opts o;
  yk_ckpt_opts_default(&o);
  o.dir = root;
  o.world = 3;
  ck_assert_int_eq(yk_ckpt_commit(&o, 5, &d), 0);
  yk_ckpt_reader *r;
  ck_assert_int_eq(yk_ckpt_reader_open(root, NULL, &r, &d), 0);
  ck_assert_int_eq(yk_ckpt_reader_read(r, "m", 0, 11, back, &d), 0);
  ck_assert(!memcmp(back, full, sizeof full));
  /* a rank of 2 restores only its own part: [6, 11) */
  float mine[5] = {0};
  yk_ckpt_state *s;
  ck_assert_int_eq(yk_ckpt_state_create(&s), 0);
  ck_assert_int_eq(yk_ckpt_state_add_arena_part(s, "m", YK_DT_F32, mine, 11, 6, 5, t, 2, &d), 0);
  ck_assert_int_eq(yk_ckpt_restore(r, s, &d), 0);
  ck_assert(!memcmp(mine, full + 6, sizeof mine));
  ck_assert_int_eq(yk_ckpt_state_add_arena_part(s, "v", YK_DT_F32, mine, 11, 8, 5, t, 2, &d), YK_EINVAL);
  yk_ckpt_state_free(s);
  yk_ckpt_reader_close(r);
  /* version 1 (no layout, no splits, every shard saves every arena) reads
   * as before; a newer version is refused naming both */
  char dir[4200];
  snprintf(dir, sizeof dir, "%s/step-00000005", root);
  set_manifest_version(dir, 1);
  ck_assert_int_eq(yk_ckpt_reader_open(root, NULL, &r, &d), 0);
  ck_assert_int_eq(yk_ckpt_reader_read(r, "m", 0, 11, back, &d), 0);
  ck_assert(!memcmp(back, full, sizeof full));
  yk_ckpt_reader_close(r);
  set_manifest_version(dir, 3);
  ck_assert_int_eq(yk_ckpt_reader_open(dir, NULL, &r, &d), YK_EFORMAT);
  ck_assert_msg(strstr(d.msg, "version 3") && strstr(d.msg, "versions 1 to 2"), "%s", d.msg);
  rmroot(root);
}
END_TEST

/* Tensor-parallel layout: 4 writers = dp 2 x tp 2 (Megatron order: writer w
 * is tp rank w % 2, dp rank w / 2); tp rank k's arena "m.tpKof2" (11 and 10
 * elements) is held by its two dp ranks and saved by them alone. */
static int write_groups(const char *root, int64_t step, const float *whole[2], int bad_writer, yk_diag *d) {
  yk_layout lay;
  int rc = 0;
  for (int w = 0; w < 4 && !rc; w++) {
    ck_assert_int_eq(yk_partition_layout(4, 2, 1, w, &lay, d), 0);
    int k = lay.tp_rank;
    uint64_t n = k ? 10 : 11, lo, len;
    int grank = w == bad_writer ? 0 : lay.dp_rank; /* bad: saves the range dp rank 0 saves */
    yk_partition_even_range(n, 2, grank, &lo, &len);
    yk_tensor_desc t[2] = {{.name = "emb", .offset = 0, .numel = 4, .ndim = 1, .shape = {4}, .split = YK_SPLIT_VOCAB},
                           {.name = "qkv", .offset = 4, .numel = n - 4, .ndim = 1, .shape = {(int64_t)n - 4},
                            .split = YK_SPLIT_COLUMN, .split_parts = 3}};
    char name[48];
    yk_ckpt_arena_name(name, sizeof name, "m", 2, k);
    yk_ckpt_state *s;
    ck_assert_int_eq(yk_ckpt_state_create(&s), 0);
    ck_assert_int_eq(yk_ckpt_state_add_arena_group(s, name, YK_DT_F32, (void *)(whole[k] + lo), n, lo, len, grank, 2,
                                                   t, 2, d), 0);
    ck_assert_int_eq(yk_ckpt_state_set_layout(s, &lay, 1, d), 0);
    yk_ckpt_opts o;
    yk_ckpt_opts_default(&o);
    o.dir = root;
    o.rank = w;
    o.world = 4;
    o.threads = 1;
    rc = yk_ckpt_write_shard(&o, s, step, NULL, d);
    yk_ckpt_state_free(s);
  }
  yk_ckpt_opts o;
  yk_ckpt_opts_default(&o);
  o.dir = root;
  o.world = 4;
  o.keep = 0;
  return rc ? rc : yk_ckpt_commit(&o, step, d);
}

START_TEST(test_arena_groups) {
  char *root = mkroot();
  yk_diag d = {0};
  float a0[11], a1[10], back[11];
  for (int i = 0; i < 11; i++) a0[i] = (float)i * 1.5f - 3.0f;
  for (int i = 0; i < 10; i++) a1[i] = (float)i * -0.25f + 7.0f;
  const float *whole[2] = {a0, a1};
  char name[48];
  yk_ckpt_arena_name(name, sizeof name, "params", 1, 0);
  ck_assert_str_eq(name, "params");
  yk_ckpt_arena_name(name, sizeof name, "params", 2, 1);
  ck_assert_str_eq(name, "params.tp1of2");
  int rc = write_groups(root, 5, whole, -1, &d);
  ck_assert_msg(rc == 0, "%s", yk_diag_msg(&d, rc));
  yk_ckpt_reader *r;
  ck_assert_int_eq(yk_ckpt_reader_open(root, NULL, &r, &d), 0);
  ck_assert_int_eq(yk_ckpt_reader_world(r), 4);
  yk_layout lay;
  int seq = 0;
  yk_ckpt_reader_layout(r, &lay, &seq);
  ck_assert(lay.dp == 2 && lay.tp == 2 && lay.pp == 1 && lay.world == 4 && seq == 1);
  ck_assert_int_eq(yk_ckpt_reader_read(r, "m.tp0of2", 0, 11, back, &d), 0);
  ck_assert(!memcmp(back, a0, sizeof a0));
  ck_assert_int_eq(yk_ckpt_reader_read(r, "m.tp1of2", 0, 10, back, &d), 0);
  ck_assert(!memcmp(back, a1, sizeof a1));
  yk_ckpt_arena_info ai;
  ck_assert_int_eq(yk_ckpt_reader_find_arena(r, "m.tp1of2", &ai, &d), 0);
  ck_assert(ai.tensors[0].split == YK_SPLIT_VOCAB && ai.tensors[1].split == YK_SPLIT_COLUMN &&
            ai.tensors[1].split_parts == 3);
  /* resharded to one shard: the layout and the splits stay */
  char out[4200];
  snprintf(out, sizeof out, "%s/one", root);
  yk_ckpt_opts o;
  yk_ckpt_opts_default(&o);
  o.dir = out;
  o.world = 1;
  o.threads = 1;
  ck_assert_int_eq(yk_ckpt_convert_reshard(r, &o, &d), 0);
  yk_ckpt_reader_close(r);
  ck_assert_int_eq(yk_ckpt_reader_open(out, NULL, &r, &d), 0);
  yk_ckpt_reader_layout(r, &lay, &seq);
  ck_assert(lay.dp == 2 && lay.tp == 2 && seq == 1 && yk_ckpt_reader_world(r) == 1);
  ck_assert_int_eq(yk_ckpt_reader_read(r, "m.tp1of2", 0, 10, back, &d), 0);
  ck_assert(!memcmp(back, a1, sizeof a1));
  ck_assert_int_eq(yk_ckpt_reader_find_arena(r, "m.tp0of2", &ai, &d), 0);
  ck_assert(ai.tensors[1].split == YK_SPLIT_COLUMN && ai.tensors[1].split_parts == 3);
  yk_ckpt_reader_close(r);
  /* a writer of tp rank 1's group saving the wrong range: the commit says so */
  ck_assert_int_eq(write_groups(root, 6, whole, 3, &d), YK_EFORMAT);
  ck_assert_msg(strstr(d.msg, "m.tp1of2") && strstr(d.msg, "does not continue"), "%s", d.msg);
  /* the failed commit left the good one the newest */
  ck_assert_int_eq(yk_ckpt_reader_open(root, NULL, &r, &d), 0);
  ck_assert_int_eq(yk_ckpt_reader_step(r), 5);
  yk_ckpt_reader_close(r);
  rmroot(root);
}
END_TEST

START_TEST(test_bad_input) {
  yk_ckpt_state *s;
  yk_diag d = {0};
  float x[10];
  ck_assert_int_eq(yk_ckpt_state_create(&s), 0);
  yk_tensor_desc t[2] = {{.name = "a", .offset = 0, .numel = 6}, {.name = "b", .offset = 5, .numel = 5}};
  ck_assert_int_eq(yk_ckpt_state_add_arena(s, "p", YK_DT_F32, x, 10, t, 2, &d), YK_EINVAL);
  ck_assert_ptr_nonnull(strstr(d.msg, "'b'"));
  ck_assert_int_eq(yk_ckpt_state_add_arena(s, "p", YK_DT_F32, x, 10, t, 1, &d), 0);
  ck_assert_int_eq(yk_ckpt_state_add_arena(s, "p", YK_DT_F32, x, 10, t, 1, &d), YK_EEXIST);
  ck_assert_int_eq(yk_ckpt_state_set_model_json(s, "[1,2]", &d), YK_EINVAL);
  ck_assert_int_eq(yk_ckpt_state_set_blob(s, "a/b", "x", 1, 0, &d), YK_EINVAL);
  yk_ckpt_opts o;
  yk_ckpt_opts_default(&o);
  ck_assert_int_eq(yk_ckpt_write_shard(&o, s, 1, NULL, &d), YK_EINVAL);
  o.dir = "/tmp/yk_never";
  o.level = 40;
  ck_assert_int_eq(yk_ckpt_write_shard(&o, s, 1, NULL, &d), YK_EINVAL);
  ck_assert_ptr_nonnull(strstr(d.msg, "40"));
  yk_ckpt_state_free(s);
  yk_ckpt_reader *r;
  ck_assert_int_eq(yk_ckpt_reader_open("/nonexistent/x", NULL, &r, &d), YK_ENOTFOUND);
  char *root = mkroot();
  ck_assert_int_eq(yk_ckpt_reader_open(root, NULL, &r, &d), YK_ENOTFOUND);
  ck_assert_ptr_nonnull(strstr(d.msg, "no committed checkpoint"));
  rmroot(root);
}
END_TEST

int main(void) {
  Suite *s = suite_create("ckpt");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_roundtrip_worlds);
  tcase_add_test(tc, test_reshard_convert);
  tcase_add_test(tc, test_keep_rotation_and_partial);
  tcase_add_test(tc, test_corruption_detected);
  tcase_add_test(tc, test_random_damage_detected);
  tcase_add_test(tc, test_fallback_only_when_told);
  tcase_add_test(tc, test_async_writer);
  tcase_add_test(tc, test_fill_arenas);
  tcase_add_test(tc, test_tiny_and_empty_arenas);
  tcase_add_test(tc, test_arena_parts);
  tcase_add_test(tc, test_arena_groups);
  tcase_add_test(tc, test_bad_input);
  tcase_add_test(tc, test_codec_planes);
  tcase_add_test(tc, test_raw_and_zstd_plane_damage);
  tcase_add_test(tc, test_direct_and_buffered_output);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
