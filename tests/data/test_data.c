/* Unit tests of the data module: shard round trip and rejection of bad
 * shards (messages name the file, field, expected and found values), the
 * byte tokenizer, and the loader: window contents, disjointness and coverage
 * across world sizes and accumulation splits, epoch wrap, save/restore. */
#include "yk_data.h"
#include "yk_partition.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[256];

static void setup(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/yk_test_data.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  ck_assert_int_eq(system(cmd), 0);
}

static void path_in(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", tmpdir, name); }

/* Shard s holds tokens (s * 1000 + i) % 60000, so every token says where it came from. */
static void write_test_shard(const char *name, int s, uint64_t ntok) {
  uint16_t *t = malloc(ntok * 2 + 2);
  for (uint64_t i = 0; i < ntok; i++) t[i] = (uint16_t)(((uint64_t)s * 1000 + i) % 60000);
  char p[512];
  path_in(p, sizeof p, name);
  yk_diag d = {0};
  ck_assert_msg(yk_data_shard_write(p, t, ntok, &d) == 0, "%s", d.msg);
  free(t);
}

static void patch_file(const char *name, long off, const void *bytes, size_t n) {
  char p[512];
  path_in(p, sizeof p, name);
  FILE *f = fopen(p, "r+b");
  ck_assert_ptr_nonnull(f);
  fseek(f, off, SEEK_SET);
  ck_assert_uint_eq(fwrite(bytes, 1, n, f), n);
  fclose(f);
}

static void expect_open_error(const char *name, int64_t vocab, int code, const char *const *needles) {
  char p[512];
  path_in(p, sizeof p, name);
  yk_data_shard s;
  yk_diag d = {0};
  int rc = yk_data_shard_open(&s, p, vocab, &d);
  ck_assert_msg(rc == code, "%s: rc %d, wanted %d (%s)", name, rc, code, d.msg);
  ck_assert_msg(strstr(d.msg, p) != NULL, "message lacks the path: %s", d.msg);
  for (int i = 0; needles[i]; i++) ck_assert_msg(strstr(d.msg, needles[i]) != NULL, "message lacks '%s': %s", needles[i], d.msg);
  yk_data_shard_close(&s); /* safe after a failed open */
}

START_TEST(test_shard_round_trip) {
  write_test_shard("a.bin", 3, 12345);
  char p[512];
  path_in(p, sizeof p, "a.bin");
  yk_data_shard s;
  yk_diag d = {0};
  ck_assert_int_eq(yk_data_shard_open(&s, p, 60000, &d), 0);
  ck_assert_uint_eq(s.ntok, 12345);
  for (uint64_t i = 0; i < s.ntok; i++) ck_assert_uint_eq(s.tokens[i], (3000 + i) % 60000);
  yk_data_shard_close(&s);
  /* header bytes are exactly the documented layout */
  FILE *f = fopen(p, "rb");
  int32_t h[256];
  ck_assert_uint_eq(fread(h, 4, 256, f), 256);
  fclose(f);
  ck_assert_int_eq(h[0], 20240520);
  ck_assert_int_eq(h[1], 1);
  ck_assert_int_eq(h[2], 12345);
  for (int i = 3; i < 256; i++) ck_assert_int_eq(h[i], 0);
  /* empty shard is valid */
  write_test_shard("empty.bin", 0, 0);
  path_in(p, sizeof p, "empty.bin");
  ck_assert_int_eq(yk_data_shard_open(&s, p, 256, &d), 0);
  ck_assert_uint_eq(s.ntok, 0);
  yk_data_shard_close(&s);
  ck_assert_int_eq(access(p, F_OK), 0);
  char tmp[600];
  snprintf(tmp, sizeof tmp, "%s.tmp", p);
  ck_assert_int_ne(access(tmp, F_OK), 0); /* no leftover temp file */
}
END_TEST

START_TEST(test_shard_rejects_bad_files) {
  char p[512];
  /* truncated: header says 100 tokens, file has 99 */
  write_test_shard("trunc.bin", 0, 100);
  path_in(p, sizeof p, "trunc.bin");
  ck_assert_int_eq(truncate(p, 1024 + 198), 0);
  expect_open_error("trunc.bin", 0, YK_EFORMAT,
                    (const char *[]){"file size 1222 bytes", "expected 1224", "token count 100", "truncated", NULL});
  /* oversized: extra bytes after the tokens */
  write_test_shard("big.bin", 0, 100);
  patch_file("big.bin", 1024 + 200, "xxxx", 4);
  expect_open_error("big.bin", 0, YK_EFORMAT,
                    (const char *[]){"file size 1228 bytes", "expected 1224", "longer than its header says", NULL});
  /* wrong magic */
  write_test_shard("magic.bin", 0, 10);
  int32_t bad = 20240326; /* the weights file's magic */
  patch_file("magic.bin", 0, &bad, 4);
  expect_open_error("magic.bin", 0, YK_EFORMAT, (const char *[]){"magic 20240326", "expected 20240520", NULL});
  /* wrong version */
  write_test_shard("ver.bin", 0, 10);
  bad = 2;
  patch_file("ver.bin", 4, &bad, 4);
  expect_open_error("ver.bin", 0, YK_EFORMAT, (const char *[]){"version 2", "expected 1", NULL});
  /* negative count */
  write_test_shard("neg.bin", 0, 10);
  bad = -5;
  patch_file("neg.bin", 8, &bad, 4);
  expect_open_error("neg.bin", 0, YK_EFORMAT, (const char *[]){"token count -5", NULL});
  /* shorter than the header */
  path_in(p, sizeof p, "tiny.bin");
  FILE *f = fopen(p, "wb");
  fputs("hello", f);
  fclose(f);
  expect_open_error("tiny.bin", 0, YK_EFORMAT, (const char *[]){"file size 5 bytes", "1024-byte header", NULL});
  /* token id >= vocab: shard 0 holds 0..299, so with V=256 token 256 is the first bad one */
  write_test_shard("vocab.bin", 0, 300);
  expect_open_error("vocab.bin", 256, YK_EFORMAT,
                    (const char *[]){"token 256 has id 256", "expected < the model vocabulary size 256", NULL});
  yk_data_shard s;
  yk_diag d = {0};
  path_in(p, sizeof p, "vocab.bin");
  ck_assert_int_eq(yk_data_shard_open(&s, p, 300, &d), 0); /* fine for V = 300 */
  yk_data_shard_close(&s);
  /* missing */
  expect_open_error("nope.bin", 0, YK_ENOTFOUND, (const char *[]){"cannot open", NULL});
}
END_TEST

/* Random damage to header and length never crashes the reader: every
 * outcome is either a valid shard whose size matches its header, or
 * YK_EFORMAT with a message naming the file. */
START_TEST(test_shard_random_damage) {
  yk_rng g;
  yk_rng_seed(&g, 42);
  char p[512];
  path_in(p, sizeof p, "fuzz.bin");
  for (int it = 0; it < 300; it++) {
    write_test_shard("fuzz.bin", 0, 64);
    int32_t v = (int32_t)yk_rng_u64(&g);
    long field = (long)(yk_rng_u64(&g) % 4) * 4; /* magic, version, count, reserved */
    if (yk_rng_u64(&g) % 2) v = (int32_t)(yk_rng_u64(&g) % 200) - 20; /* small values hit the count path */
    patch_file("fuzz.bin", field, &v, 4);
    if (yk_rng_u64(&g) % 3 == 0) ck_assert_int_eq(truncate(p, (off_t)(yk_rng_u64(&g) % 1200)), 0);
    yk_data_shard s;
    yk_diag d = {0};
    int rc = yk_data_shard_open(&s, p, 60000, &d);
    if (rc == 0) {
      ck_assert_uint_le(s.ntok, 64);
      for (uint64_t i = 0; i < s.ntok; i++) ck_assert_uint_lt(s.tokens[i], 60000);
    } else {
      ck_assert_int_eq(rc, YK_EFORMAT);
      ck_assert_ptr_nonnull(strstr(d.msg, "fuzz.bin"));
    }
    yk_data_shard_close(&s);
  }
}
END_TEST

START_TEST(test_bytes_tokenizer) {
  const char text[] = "Hi \xff\x01";
  uint16_t t[5];
  yk_data_bytes_encode(text, 5, t);
  ck_assert_uint_eq(t[0], 'H');
  ck_assert_uint_eq(t[3], 255);
  ck_assert_uint_eq(t[4], 1);
  char back[5];
  yk_diag d = {0};
  ck_assert_int_eq(yk_data_bytes_decode(t, 5, back, &d), 0);
  ck_assert_mem_eq(back, text, 5);
  t[2] = 256;
  ck_assert_int_eq(yk_data_bytes_decode(t, 5, back, &d), YK_EINVAL);
  ck_assert_ptr_nonnull(strstr(d.msg, "token 2 has id 256"));
}
END_TEST

/* Shards of uneven sizes, one with no complete window, one empty. */
static yk_data_loader *open_multi(int64_t B, int64_t T) {
  write_test_shard("tr_000.bin", 1, 400);
  write_test_shard("tr_001.bin", 2, 5);  /* too short for a window */
  write_test_shard("tr_002.bin", 3, 0);  /* empty */
  write_test_shard("tr_003.bin", 4, 97);
  write_test_shard("tr_010.bin", 5, 250);
  char pat[512];
  path_in(pat, sizeof pat, "tr_*.bin");
  yk_data_loader *ld;
  yk_diag d = {0};
  ck_assert_msg(yk_data_loader_open(&ld, "data.train", pat, B, T, 0, &d) == 0, "%s", d.msg);
  return ld;
}

START_TEST(test_loader_windows) {
  const int64_t B = 3, T = 4; /* w = 12 */
  yk_data_loader *ld = open_multi(B, T);
  ck_assert_int_eq(yk_data_loader_shard_count(ld), 5);
  ck_assert_ptr_nonnull(strstr(yk_data_loader_shard_path(ld, 4), "tr_010.bin")); /* sorted */
  ck_assert_uint_eq(yk_data_loader_total_tokens(ld), 400 + 5 + 0 + 97 + 250);
  uint64_t W = yk_data_loader_epoch_windows(ld);
  ck_assert_uint_eq(W, 399 / 12 + 0 + 0 + 96 / 12 + 249 / 12); /* 33 + 8 + 20 */
  int32_t in[12], tg[12];
  for (uint64_t q = 0; q < 2 * W; q++) {
    int sh;
    uint64_t off;
    yk_data_loader_window(ld, q, in, tg, &sh, &off);
    uint64_t k = q % W;
    int want_sh = k < 33 ? 0 : k < 41 ? 3 : 4;
    uint64_t want_off = (k < 33 ? k : k < 41 ? k - 33 : k - 41) * 12;
    ck_assert_int_eq(sh, want_sh);
    ck_assert_uint_eq(off, want_off);
    int sid = want_sh == 0 ? 1 : want_sh == 3 ? 4 : 5;
    for (int b = 0; b < B; b++)
      for (int t = 0; t < T; t++) {
        /* row b is tokens [b*T, b*T+T) of the window; targets shifted by one */
        ck_assert_int_eq(in[b * T + t], sid * 1000 + (int)want_off + b * T + t);
        ck_assert_int_eq(tg[b * T + t], sid * 1000 + (int)want_off + b * T + t + 1);
      }
    const uint16_t *raw = yk_data_loader_window_tokens(ld, q);
    ck_assert_uint_eq(raw[0], (uint16_t)in[0]);
    ck_assert_uint_eq(raw[12], (uint16_t)tg[11]);
  }
  yk_data_loader_close(ld);
}
END_TEST

/* For world 1..4 and accum 1..4: within each epoch every window is read
 * exactly once, a step never reads a window twice, and the set of windows a
 * step reads depends only on world*accum. */
START_TEST(test_loader_disjoint_coverage_splits) {
  yk_data_loader *ld = open_multi(2, 5); /* w = 10 */
  uint64_t W = yk_data_loader_epoch_windows(ld);
  ck_assert_uint_eq(W, 39 + 9 + 24);
  int32_t in[10];
  /* reference: step sets by G for the canonical split (G ranks, accum 1) */
  for (int world = 1; world <= 4; world++)
    for (int accum = 1; accum <= 4; accum++) {
      int G = world * accum;
      yk_data_loader *l = open_multi(2, 5);
      int steps = (int)(3 * W / (uint64_t)G) + 2; /* a bit over 3 epochs */
      unsigned *count = calloc(W, sizeof *count);
      uint64_t reads = 0;
      for (int s = 0; s < steps; s++) {
        int *ids = calloc((size_t)G, sizeof *ids);
        for (int r = 0; r < world; r++)
          for (int m = 0; m < accum; m++) {
            ck_assert_int_eq(yk_data_loader_next(l, world, accum, r, m, in, NULL), 0);
            /* identify the window by its first token */
            int id = -1;
            for (uint64_t k = 0; k < W; k++)
              if (yk_data_loader_window_tokens(ld, k)[0] == (uint16_t)in[0]) id = (int)k;
            ck_assert_int_ge(id, 0);
            ids[m * world + r] = id;
            /* the epoch this read belongs to is fixed by its sequence number */
            uint64_t q = (uint64_t)s * (uint64_t)G + (uint64_t)(m * world + r);
            ck_assert_uint_eq((uint64_t)id, q % W);
            if (q < 3 * W) count[id]++;
            reads++;
          }
        /* the step's set is the G consecutive sequence numbers s*G .. s*G+G-1 */
        for (int j = 0; j < G; j++) ck_assert_int_eq(ids[j], (int)(((uint64_t)s * G + (uint64_t)j) % W));
        for (int a = 0; a < G; a++)
          for (int b = a + 1; b < G; b++) ck_assert_int_ne(ids[a], ids[b]);
        free(ids);
        yk_data_loader_advance(l, world, accum);
      }
      for (uint64_t k = 0; k < W; k++)
        ck_assert_msg(count[k] == 3, "world %d accum %d: window %llu read %u times in 3 epochs", world, accum,
                      (unsigned long long)k, count[k]);
      ck_assert_uint_eq(yk_data_loader_epoch(l), ((uint64_t)steps * G) / W);
      ck_assert_int_eq(yk_data_loader_next(l, world, accum, world, 0, in, NULL), YK_EINVAL);
      ck_assert_int_eq(yk_data_loader_next(l, world, accum, 0, accum, in, NULL), YK_EINVAL);
      free(count);
      yk_data_loader_close(l);
    }
  yk_data_loader_close(ld);
}
END_TEST

START_TEST(test_loader_save_restore) {
  yk_data_loader *a = open_multi(2, 5), *b = open_multi(2, 5);
  for (int s = 0; s < 13; s++) yk_data_loader_advance(a, 2, 3);
  yk_data_pos pos;
  yk_data_loader_get_pos(a, &pos);
  ck_assert_uint_eq(pos.windows_done, 13 * 6);
  /* through bytes, as a checkpoint stores it */
  unsigned char buf[sizeof pos];
  memcpy(buf, &pos, sizeof buf);
  yk_data_pos back;
  memcpy(&back, buf, sizeof back);
  yk_diag d = {0};
  ck_assert_int_eq(yk_data_loader_set_pos(b, &back, &d), 0);
  int32_t x[10], y[10], tx[10], ty[10];
  for (int s = 0; s < 20; s++) {
    for (int r = 0; r < 2; r++)
      for (int m = 0; m < 3; m++) {
        yk_data_loader_next(a, 2, 3, r, m, x, tx);
        yk_data_loader_next(b, 2, 3, r, m, y, ty);
        ck_assert_mem_eq(x, y, sizeof x);
        ck_assert_mem_eq(tx, ty, sizeof tx);
      }
    yk_data_loader_advance(a, 2, 3);
    yk_data_loader_advance(b, 2, 3);
  }
  ck_assert_uint_eq(yk_data_loader_epoch(a), yk_data_loader_epoch(b));
  /* resume with another split of the same global batch (2 x 3 -> 6 x 1 and
   * 3 x 2): the next step reads the same set of windows */
  yk_data_loader_get_pos(a, &pos);
  ck_assert_int_eq(yk_data_loader_set_pos(b, &pos, &d), 0);
  int first_a[6], first_b[6], first_c[6];
  for (int r = 0; r < 2; r++)
    for (int m = 0; m < 3; m++) {
      yk_data_loader_next(a, 2, 3, r, m, x, NULL);
      first_a[m * 2 + r] = x[0];
    }
  for (int r = 0; r < 6; r++) {
    yk_data_loader_next(b, 6, 1, r, 0, y, NULL);
    first_b[r] = y[0];
  }
  for (int r = 0; r < 3; r++)
    for (int m = 0; m < 2; m++) {
      yk_data_loader_next(b, 3, 2, r, m, y, NULL);
      first_c[m * 3 + r] = y[0];
    }
  /* same sequence numbers in the same order of q, hence the same sets */
  ck_assert_mem_eq(first_a, first_b, sizeof first_a);
  ck_assert_mem_eq(first_a, first_c, sizeof first_a);
  /* a loader with another window size refuses the position... */
  yk_data_loader *c = open_multi(4, 3);
  ck_assert_int_eq(yk_data_loader_set_pos(c, &pos, &d), YK_EMISMATCH);
  ck_assert_ptr_nonnull(strstr(d.msg, "windows of 10 tokens"));
  ck_assert_ptr_nonnull(strstr(d.msg, "this run uses 12"));
  yk_data_loader_close(c);
  /* ...but B x T = 5 x 2 reads the same windows as 2 x 5, so it may resume */
  c = open_multi(5, 2);
  ck_assert_int_eq(yk_data_loader_set_pos(c, &pos, &d), 0);
  yk_data_loader_close(c);
  /* same window size, different data */
  yk_data_pos other = pos;
  other.total_tokens += 1;
  ck_assert_int_eq(yk_data_loader_set_pos(b, &other, &d), YK_EMISMATCH);
  ck_assert_ptr_nonnull(strstr(d.msg, "resume with the same shards"));
  yk_data_loader_close(a);
  yk_data_loader_close(b);
}
END_TEST

START_TEST(test_loader_errors) {
  char pat[512];
  yk_data_loader *ld;
  yk_diag d = {0};
  path_in(pat, sizeof pat, "none_*.bin");
  ck_assert_int_eq(yk_data_loader_open(&ld, "data.train", pat, 2, 4, 256, &d), YK_ENOTFOUND);
  ck_assert_ptr_nonnull(strstr(d.msg, "data.train: no file matches"));
  ck_assert_ptr_null(ld);
  write_test_shard("small_0.bin", 0, 8);
  path_in(pat, sizeof pat, "small_*.bin");
  ck_assert_int_eq(yk_data_loader_open(&ld, "data.val", pat, 2, 4, 256, &d), YK_ECONFIG);
  ck_assert_ptr_nonnull(strstr(d.msg, "needs 9 tokens"));
  ck_assert_ptr_nonnull(strstr(d.msg, "has 8"));
  ck_assert_int_eq(yk_data_loader_open(&ld, "data.val", pat, 2, 3, 256, &d), 0); /* 7 <= 8: one window */
  ck_assert_uint_eq(yk_data_loader_epoch_windows(ld), 1);
  yk_data_loader_close(ld);
  /* a bad shard among good ones: the message names it */
  write_test_shard("small_1.bin", 0, 100);
  path_in(pat, sizeof pat, "small_1.bin");
  ck_assert_int_eq(truncate(pat, 1100), 0);
  path_in(pat, sizeof pat, "small_*.bin");
  ck_assert_int_eq(yk_data_loader_open(&ld, "data.train", pat, 1, 2, 256, &d), YK_EFORMAT);
  ck_assert_ptr_nonnull(strstr(d.msg, "small_1.bin"));
  ck_assert_int_eq(yk_data_loader_open(&ld, "data.train", "", 1, 2, 256, &d), YK_ECONFIG);
  ck_assert_ptr_nonnull(strstr(d.msg, "data.train is empty"));
  /* a split wider than the data */
  write_test_shard("w_0.bin", 0, 41); /* 4 windows of 10 */
  path_in(pat, sizeof pat, "w_0.bin");
  ck_assert_int_eq(yk_data_loader_open(&ld, "data.train", pat, 2, 5, 0, &d), 0);
  ck_assert_int_eq(yk_data_loader_check_split(ld, 2, 2, &d), 0);
  ck_assert_int_eq(yk_data_loader_check_split(ld, 4, 1, &d), 0);
  ck_assert_int_eq(yk_data_loader_check_split(ld, 5, 1, &d), YK_ECONFIG);
  ck_assert_ptr_nonnull(strstr(d.msg, "one step reads 5 windows"));
  ck_assert_ptr_nonnull(strstr(d.msg, "only 4 windows"));
  ck_assert_int_eq(yk_data_loader_check_split(ld, 0, 1, &d), YK_ECONFIG);
  yk_data_loader_close(ld);
  /* vocab enforced by the loader */
  write_test_shard("v_0.bin", 0, 1000);
  path_in(pat, sizeof pat, "v_0.bin");
  ck_assert_int_eq(yk_data_loader_open(&ld, "data.train", pat, 1, 2, 256, &d), YK_EFORMAT);
  ck_assert_ptr_nonnull(strstr(d.msg, "vocabulary size 256"));
}
END_TEST

int main(void) {
  Suite *s = suite_create("data");
  TCase *tc = tcase_create("core");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_shard_round_trip);
  tcase_add_test(tc, test_shard_rejects_bad_files);
  tcase_add_test(tc, test_shard_random_damage);
  tcase_add_test(tc, test_bytes_tokenizer);
  tcase_add_test(tc, test_loader_windows);
  tcase_add_test(tc, test_loader_disjoint_coverage_splits);
  tcase_add_test(tc, test_loader_save_restore);
  tcase_add_test(tc, test_loader_errors);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
