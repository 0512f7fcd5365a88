/* Unit tests for common/: errors, config, fp16/bf16 references and cast kernels, ISA dispatch, parsing, RNG. */
#include "yk_common.h"

#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_strerror_all_codes) {
  ck_assert_str_eq(yk_strerror(0), "success");
  for (int c = -1; c > YK_ERR_LAST_; c--) {
    ck_assert_str_ne(yk_strerror(c), "unknown error");
    ck_assert_str_ne(yk_err_name(c), "YK_UNKNOWN");
  }
  ck_assert_str_eq(yk_strerror(-9999), "unknown error");
  ck_assert_str_eq(yk_err_name(YK_ETIMEDOUT), "YK_ETIMEDOUT");
}
END_TEST

START_TEST(test_diag) {
  yk_diag d = {0};
  ck_assert_int_eq(yk_errorf(&d, YK_EFORMAT, "bad %s %d", "magic", 7), YK_EFORMAT);
  ck_assert_str_eq(d.msg, "bad magic 7");
  ck_assert_int_eq(d.code, YK_EFORMAT);
  ck_assert_int_eq(yk_errorf(NULL, YK_EIO, "x"), YK_EIO);
  yk_diag_clear(&d);
  ck_assert_str_eq(yk_diag_msg(&d, YK_EIO), yk_strerror(YK_EIO));
}
END_TEST

/* log.ranks: which ranks print INFO lines; a bad spec names itself. */
START_TEST(test_log_ranks) {
  int shown = -1;
  ck_assert_int_eq(yk_log_ranks_match("0", 0, &shown, NULL), 0);
  ck_assert_int_eq(shown, 1);
  ck_assert_int_eq(yk_log_ranks_match("0", 1, &shown, NULL), 0);
  ck_assert_int_eq(shown, 0);
  ck_assert_int_eq(yk_log_ranks_match("all", 7, &shown, NULL), 0);
  ck_assert_int_eq(shown, 1);
  ck_assert_int_eq(yk_log_ranks_match("0, 3", 3, &shown, NULL), 0);
  ck_assert_int_eq(shown, 1);
  ck_assert_int_eq(yk_log_ranks_match("0,3", 2, &shown, NULL), 0);
  ck_assert_int_eq(shown, 0);
  yk_diag d = {0};
  const char *bad[] = {"", "x", "0,", "-1", "0;3", "1,,2"};
  for (size_t i = 0; i < YK_ARRAY_LEN(bad); i++) {
    ck_assert_int_eq(yk_log_ranks_match(bad[i], 0, &shown, &d), YK_ECONFIG);
    ck_assert_int_eq(shown, 0);
    ck_assert_ptr_nonnull(strstr(d.msg, "log.ranks"));
  }
}
END_TEST

START_TEST(test_config_defaults_valid) {
  yk_config c;
  yk_config_defaults(&c);
  ck_assert_str_eq(c.model.name, "tiny");
  ck_assert_int_eq(c.train.micro_batch, 4);
  ck_assert(fabs(c.optim.lr - 3e-4) < 1e-12);
  ck_assert_int_eq(c.ckpt.async, 1);
  yk_diag d = {0};
  ck_assert_int_eq(yk_config_validate(&c, &d), 0);
  /* Every default must be accepted by its own key's checks. */
  for (int i = 0; i < yk_config_key_count(); i++) ck_assert_ptr_nonnull(yk_config_key_name(i));
}
END_TEST

START_TEST(test_config_yaml_ok) {
  yk_config c;
  yk_config_defaults(&c);
  yk_diag d = {0};
  const char *y = "model:\n  name: d12\ntrain:\n  micro_batch: 8\n  precision: bf16\noptim:\n  lr: 1e-3\n"
                  "ckpt:\n  async: false\n";
  int rc = yk_config_load_string(&c, y, "job.yaml", &d);
  ck_assert_msg(rc == 0, "%s", d.msg);
  ck_assert_str_eq(c.model.name, "d12");
  ck_assert_int_eq(c.train.micro_batch, 8);
  ck_assert_int_eq(yk_config_precision(&c), YK_PREC_BF16);
  ck_assert(fabs(c.optim.lr - 1e-3) < 1e-15);
  ck_assert_int_eq(c.ckpt.async, 0);
}
END_TEST

START_TEST(test_config_errors_name_line_and_key) {
  yk_config c;
  yk_config_defaults(&c);
  yk_diag d = {0};
  ck_assert_int_eq(yk_config_load_string(&c, "train:\n  steps: 10\n  lrr: 3\n", "job.yaml", &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "job.yaml:3") && strstr(d.msg, "train.lrr"), "%s", d.msg);
  ck_assert_int_eq(yk_config_load_string(&c, "optim:\n  lrr: 3\n", "j.yaml", &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "did you mean 'optim.lr'"), "%s", d.msg);
  ck_assert_int_eq(yk_config_load_string(&c, "train:\n  micro_batch: -4\n", "j.yaml", &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "j.yaml:2") && strstr(d.msg, "'-4'") && strstr(d.msg, "[1, 65536]"), "%s", d.msg);
  ck_assert_int_eq(yk_config_load_string(&c, "train:\n  micro_batch: four\n", "j.yaml", &d), YK_ECONFIG);
  ck_assert_int_eq(yk_config_load_string(&c, "train:\n  precision: fp8\n", "j.yaml", &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "fp32|fp16|bf16"), "%s", d.msg);
  ck_assert_int_eq(yk_config_load_string(&c, "train: [1, 2]\n", "j.yaml", &d), YK_ECONFIG);
  ck_assert_int_eq(yk_config_load_string(&c, "train:\n  steps: 1\n bad", "j.yaml", &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "YAML syntax error"), "%s", d.msg);
}
END_TEST

START_TEST(test_config_set) {
  yk_config c;
  yk_config_defaults(&c);
  yk_diag d = {0};
  ck_assert_int_eq(yk_config_set(&c, "train.steps=42", &d), 0);
  ck_assert_int_eq(c.train.steps, 42);
  ck_assert_int_eq(yk_config_set(&c, "comm.provider=tcp;ofi_rxm", &d), 0);
  ck_assert_str_eq(c.comm.provider, "tcp;ofi_rxm");
  ck_assert_int_eq(yk_config_set(&c, "nope", &d), YK_ECONFIG);
  ck_assert_int_eq(yk_config_set(&c, "train.stepz=1", &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "train.steps"), "%s", d.msg);
  c.optim.min_lr = 1.0;
  ck_assert_int_eq(yk_config_validate(&c, &d), YK_ECONFIG);
}
END_TEST

START_TEST(test_fp16_roundtrip) {
  /* Every finite half converts to float and back exactly. */
  for (uint32_t h = 0; h < 65536; h++) {
    uint16_t x = (uint16_t)h;
    if ((x & 0x7c00) == 0x7c00 && (x & 0x3ff)) continue; /* NaN */
    ck_assert_uint_eq(yk_f32_to_f16(yk_f16_to_f32(x)), x);
  }
  ck_assert_uint_eq(yk_f32_to_f16(65520.0f), 0x7c00);    /* rounds to inf */
  ck_assert_uint_eq(yk_f32_to_f16(65519.0f), 0x7bff);    /* max half */
  ck_assert_uint_eq(yk_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00); /* tie to even */
  ck_assert(isnan(yk_f16_to_f32(yk_f32_to_f16(NAN))));
  for (uint32_t h = 0; h < 65536; h++) {
    uint16_t x = (uint16_t)h;
    if ((x & 0x7f80) == 0x7f80 && (x & 0x7f)) continue;
    ck_assert_uint_eq(yk_f32_to_bf16(yk_bf16_to_f32(x)), x);
  }
  ck_assert_uint_eq(yk_f32_to_bf16(1.00390625f), 0x3f80); /* tie to even: 1 + 2^-8 */
}
END_TEST

START_TEST(test_parse) {
  int64_t i;
  double f;
  uint64_t b;
  ck_assert_int_eq(yk_parse_i64("42", &i), 0);
  ck_assert_int_eq(i, 42);
  ck_assert_int_eq(yk_parse_i64("1e6", &i), 0);
  ck_assert_int_eq(i, 1000000);
  ck_assert_int_ne(yk_parse_i64("4x", &i), 0);
  ck_assert_int_ne(yk_parse_i64("1.5", &i), 0);
  ck_assert_int_eq(yk_parse_f64("3e-4", &f), 0);
  ck_assert_int_ne(yk_parse_f64("nan", &f), 0);
  ck_assert_int_eq(yk_parse_bytes("4MiB", &b), 0);
  ck_assert_uint_eq(b, 4u << 20);
  ck_assert_int_eq(yk_parse_bytes("64k", &b), 0);
  ck_assert_uint_eq(b, 65536);
  ck_assert_int_ne(yk_parse_bytes("4Q", &b), 0);
  ck_assert_int_eq(yk_edit_distance("kitten", "sitting"), 3);
}
END_TEST

START_TEST(test_rng_deterministic) {
  yk_rng a, b;
  yk_rng_seed(&a, 7);
  yk_rng_seed(&b, 7);
  double sum = 0, sq = 0;
  for (int k = 0; k < 20000; k++) {
    ck_assert_uint_eq(yk_rng_u64(&a), yk_rng_u64(&b));
    float z = yk_rng_normal(&a);
    yk_rng_normal(&b);
    sum += z;
    sq += (double)z * z;
  }
  ck_assert(fabs(sum / 20000) < 0.05);
  ck_assert(fabs(sq / 20000 - 1.0) < 0.05);
}
END_TEST

START_TEST(test_atomic_write) {
  char dir[] = "/tmp/yk_test_XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char sub[256], path[300];
  snprintf(sub, sizeof sub, "%s/a/b", dir);
  yk_diag d = {0};
  ck_assert_int_eq(yk_mkdirs(sub, &d), 0);
  snprintf(path, sizeof path, "%s/f.txt", sub);
  ck_assert_int_eq(yk_file_write_atomic(path, "hello", 5, &d), 0);
  char *buf;
  size_t len;
  ck_assert_int_eq(yk_file_read(path, &buf, &len, &d), 0);
  ck_assert_uint_eq(len, 5);
  ck_assert_str_eq(buf, "hello");
  free(buf);
  ck_assert_int_eq(yk_file_read("/nonexistent/x", &buf, &len, &d), YK_ENOTFOUND);
  ck_assert_msg(strstr(d.msg, "/nonexistent/x"), "%s", d.msg);
}
END_TEST

/* The table-driven option parser: values, ranges, positionals, the job file
 * under every --set whatever the order, and errors that name the argument. */
typedef struct args_t {
  yk_config cfg;
  int json;
  const char *out;
  int64_t n;
  double x;
  uint64_t bytes;
  yk_args_pos pos;
} args_t;

static const yk_opt args_table[] = {
    {"--set", 0, YK_OPT_CONFIG, 0, "K=V", "config"},
    {"--steps", 0, YK_OPT_CONFIG, 0, "N", "steps", .key = "train.steps"},
    {"--json", 0, YK_OPT_FLAG, offsetof(args_t, json), NULL, "json"},
    {"--out", 'o', YK_OPT_STR, offsetof(args_t, out), "FILE", "output"},
    {"--n", 'n', YK_OPT_INT, offsetof(args_t, n), "N", "count", 1, 8},
    {"--x", 0, YK_OPT_NUM, offsetof(args_t, x), "X", "real", 0, 1},
    {"--size", 0, YK_OPT_BYTES, offsetof(args_t, bytes), "B", "bytes"},
};
static const yk_cmd_spec args_spec = {.name = "t", .synopsis = "[JOB] [ARGS]", .opts = args_table,
                                      .nopts = YK_ARRAY_LEN(args_table), .max_pos = 2,
                                      .pos_off = offsetof(args_t, pos), .job_positional = 1, .has_config = 1,
                                      .cfg_off = offsetof(args_t, cfg)};

static int parse_line(args_t *a, yk_diag *d, int argc, ...) {
  static char *argv[32] = {"t"}; /* a.pos points into it */
  va_list ap;
  va_start(ap, argc);
  for (int i = 1; i < argc; i++) argv[i] = va_arg(ap, char *);
  va_end(ap);
  memset(a, 0, sizeof *a);
  yk_diag_clear(d);
  return yk_args_parse(&args_spec, argc, argv, a, d);
}

START_TEST(test_args_table) {
  char dir[] = "/tmp/yk_args_XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char job[300];
  snprintf(job, sizeof job, "%s/job.yaml", dir);
  FILE *f = fopen(job, "w");
  fputs("train:\n  steps: 7\n  seed: 3\n", f);
  fclose(f);
  args_t a;
  yk_diag d;
  /* --set before the job file still wins over it */
  ck_assert_int_eq(parse_line(&a, &d, 10, "--steps", "11", job, "--json", "-n", "4", "--x=0.5", "p1", "p2"), 0);
  ck_assert_int_eq(a.cfg.train.steps, 11);
  ck_assert_int_eq(a.cfg.train.seed, 3);
  ck_assert_int_eq(a.json, 1);
  ck_assert_int_eq(a.n, 4);
  ck_assert(a.x == 0.5);
  ck_assert_int_eq(a.pos.n, 2);
  ck_assert_str_eq(a.pos.v[1], "p2");
  ck_assert_int_eq(parse_line(&a, &d, 5, "--size", "4k", "-o", "f"), 0);
  ck_assert_uint_eq(a.bytes, 4096);
  ck_assert_str_eq(a.out, "f");
  ck_assert_int_eq(parse_line(&a, &d, 2, "--help"), YK_ARGS_HELP);
  /* errors name the argument and what is allowed */
  ck_assert_int_eq(parse_line(&a, &d, 3, "-n", "9"), YK_EUSAGE);
  ck_assert_msg(strstr(d.msg, "--n") && strstr(d.msg, "[1, 8]") && strstr(d.msg, "'9'"), "%s", d.msg);
  ck_assert_int_eq(parse_line(&a, &d, 2, "--jsno"), YK_EUSAGE);
  ck_assert_msg(strstr(d.msg, "--jsno") && strstr(d.msg, "did you mean --json"), "%s", d.msg);
  ck_assert_int_eq(parse_line(&a, &d, 2, "--out"), YK_EUSAGE);
  ck_assert_msg(strstr(d.msg, "--out needs a value"), "%s", d.msg);
  ck_assert_int_eq(parse_line(&a, &d, 2, "--json=1"), YK_EUSAGE);
  ck_assert_int_eq(parse_line(&a, &d, 5, job, "a", "b", "c"), YK_EUSAGE);
  ck_assert_msg(strstr(d.msg, "'c'"), "%s", d.msg);
  ck_assert_int_eq(parse_line(&a, &d, 3, "--set", "train.nope=1"), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "train.nope"), "%s", d.msg);
  ck_assert_int_eq(parse_line(&a, &d, 2, "/nonexistent.yaml"), YK_ENOTFOUND);
  /* nothing is loaded when a later argument is bad */
  ck_assert_int_eq(parse_line(&a, &d, 3, "/nonexistent.yaml", "--bad"), YK_EUSAGE);
  /* the usage text comes from the table */
  char *text = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&text, &len);
  yk_args_usage(&args_spec, m);
  fclose(m);
  ck_assert_msg(strstr(text, "-n, --n N") && strstr(text, "--size B") && strstr(text, "-h, --help"), "%s", text);
  free(text);
  unlink(job);
  rmdir(dir);
}
END_TEST

/* Positional arguments: any number, in their order, after options that
 * came between them; and a spec whose first positional argument starts a
 * command line passed on verbatim (yoke launch). */
typedef struct many_t {
  int json;
  const char *out;
  yk_args_pos pos;
} many_t;

static const yk_opt many_table[] = {
    {"--json", 0, YK_OPT_FLAG, offsetof(many_t, json), NULL, "json"},
    {"--out", 0, YK_OPT_STR, offsetof(many_t, out), "FILE", "output"},
};

START_TEST(test_args_positionals) {
  yk_cmd_spec spec = {.name = "m", .synopsis = "FILE...", .opts = many_table, .nopts = YK_ARRAY_LEN(many_table),
                      .min_pos = 1, .max_pos = 1000, .pos_off = offsetof(many_t, pos)};
  char *argv[64] = {"m"};
  char names[40][8];
  int argc = 1;
  for (int i = 0; i < 40; i++) {
    snprintf(names[i], sizeof names[i], "f%d", i);
    argv[argc++] = names[i];
    if (i == 3) argv[argc++] = "--json";
    if (i == 20) argv[argc++] = "--out", argv[argc++] = "o.bin";
  }
  many_t m = {0};
  yk_diag d = {0};
  ck_assert_int_eq(yk_args_parse(&spec, argc, argv, &m, &d), 0);
  ck_assert_int_eq(m.json, 1);
  ck_assert_str_eq(m.out, "o.bin");
  ck_assert_int_eq(m.pos.n, 40);
  for (int i = 0; i < 40; i++) ck_assert_str_eq(m.pos.v[i], names[i]);
  /* rest_positional: options after the first positional argument are its */
  spec.rest_positional = 1;
  char *line[] = {"m", "--json", "train", "job.yaml", "--out", "x", "--", "--json"};
  memset(&m, 0, sizeof m);
  ck_assert_int_eq(yk_args_parse(&spec, 8, line, &m, &d), 0);
  ck_assert_int_eq(m.json, 1);
  ck_assert_ptr_null(m.out);
  ck_assert_int_eq(m.pos.n, 6);
  ck_assert_str_eq(m.pos.v[0], "train");
  ck_assert_str_eq(m.pos.v[5], "--json");
  char *dashed[] = {"m", "--out", "y", "--", "--json", "z"};
  memset(&m, 0, sizeof m);
  ck_assert_int_eq(yk_args_parse(&spec, 6, dashed, &m, &d), 0);
  ck_assert_str_eq(m.out, "y");
  ck_assert_int_eq(m.json, 0);
  ck_assert_int_eq(m.pos.n, 2);
  ck_assert_str_eq(m.pos.v[0], "--json");
}
END_TEST

/* ---- ISA dispatch (yk_isa_resolve) and fp16/bf16 cast kernels (yk_cast_*):
 * every variant this CPU runs, plus portable, must give the bits of the
 * scalar references for every input (no NaN exception), at every length and
 * alignment. ---- */

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* The variants to check: portable, AVX2 when the CPU has it, and AUTO. */
static int variants(yk_isa *v) {
  int n = 0;
  v[n++] = YK_ISA_PORTABLE;
  if (yk_isa_supported(YK_ISA_AVX2)) v[n++] = YK_ISA_AVX2;
  v[n++] = YK_ISA_AUTO;
  return n;
}

/* ---- inputs: edge cases, every tie of both formats, random bits ---------- */

static const uint32_t edge_bits[] = {
    0x00000000, 0x80000000,             /* +0, -0 */
    0x7f800000, 0xff800000,             /* +-Inf */
    0x7fc00000, 0xffc00000, 0x7fc12345, /* quiet NaNs, one with a payload */
    0x7f800001, 0xff812345, 0x7fbfffff, /* signalling NaNs */
    0x7fffffff, 0xffffffff,             /* NaN, all payload bits */
    0x00000001, 0x807fffff, 0x00400000, /* f32 denormals */
    0x7f7fffff, 0xff7fffff,             /* FLT_MAX: bf16 rounds it to Inf */
    0x477fe000, 0x477fefff, 0x477ff000, /* 65504 (f16 max), just below 65520, 65520 (-> Inf) */
    0xc77ff000, 0x47800000,             /* -65520, 65536 */
    0x38800000, 0x387fffff, 0x387fe000, /* f16 min normal, just below, largest f16 subnormal */
    0x33800000, 0x33000000, 0x33000001, /* 2^-24 (f16 min subnormal), 2^-25 (tie -> 0), just above */
    0x32ffffff, 0x33c00000, 0x34200000, /* below half the min subnormal; 1.5 * 2^-24 (tie -> 2); 2.5 * 2^-24 (tie -> 2) */
    0x3f801000, 0x3f803000, 0x3f800fff, /* 1 + 2^-11 (tie -> 1), 1 + 3*2^-11 (tie -> up), just below a tie */
    0x3f808000, 0x3f818000, 0x3f807fff, /* bf16 ties: 1 + 2^-8 (-> 1), 1 + 3*2^-8 (-> up), just below */
    0x7f7f8000, 0x7f7f7fff,             /* bf16: the tie at the top rounds to Inf; below it does not */
};

/* A set of fp32 inputs: the edge cases, then for every f16 and bf16 value the
 * midpoint to the next value and its two neighbours (every tie, both ways),
 * then random bit patterns and random values around the fp16 range. */
static float *inputs(size_t *n_out) {
  size_t ne = YK_ARRAY_LEN(edge_bits), n = ne + 2 * 65536 * 3 + 200000;
  float *f = malloc(n * sizeof *f);
  size_t k = 0;
  for (size_t i = 0; i < ne; i++) f[k++] = u2f(edge_bits[i]);
  for (uint32_t h = 0; h < 65536; h++) {
    /* f16: the midpoint of h and h+1 is exact in fp32 (11 vs 24 bits) */
    uint16_t a = (uint16_t)h, b = (uint16_t)(h + 1);
    float fa = yk_f16_to_f32(a), fb = yk_f16_to_f32(b);
    float mid = (isfinite(fa) && isfinite(fb) && (a & 0x7fff) != 0x7fff) ? (float)(((double)fa + fb) / 2) : fa;
    f[k++] = mid;
    f[k++] = nextafterf(mid, INFINITY);
    f[k++] = nextafterf(mid, -INFINITY);
    /* bf16: the midpoint is the bit pattern with 0x8000 below the bf16 bits */
    uint32_t m = ((uint32_t)h << 16) | 0x8000u;
    f[k++] = u2f(m);
    f[k++] = u2f(m + 1);
    f[k++] = u2f(m - 1);
  }
  yk_rng r;
  yk_rng_seed(&r, 2024);
  for (int i = 0; i < 100000; i++) f[k++] = u2f((uint32_t)yk_rng_u64(&r));
  for (int i = 0; i < 100000; i++) { /* magnitudes 2^-30 .. 2^20: subnormal fp16 to overflow */
    float e = -30.0f + 50.0f * yk_rng_uniform(&r);
    f[k++] = (yk_rng_uniform(&r) < 0.5f ? -1.0f : 1.0f) * exp2f(e) * (1.0f + yk_rng_uniform(&r));
  }
  *n_out = k;
  return f;
}

/* ---- the scalar references themselves ------------------------------------ */

START_TEST(test_reference_values) {
  struct { uint32_t f; uint16_t h, b; } cases[] = {
      {0x00000000, 0x0000, 0x0000}, {0x80000000, 0x8000, 0x8000}, /* signed zeros */
      {0x7f800000, 0x7c00, 0x7f80}, {0xff800000, 0xfc00, 0xff80}, /* Inf */
      {0x7fc12345, 0x7e09, 0x7fc1}, {0x7f800001, 0x7e00, 0x7fc0}, /* NaN: quiet, top payload bits */
      {0xff812345, 0xfe09, 0xffc1}, {0x7fffffff, 0x7fff, 0x7fff},
      {0x477fe000, 0x7bff, 0x4780}, {0x477ff000, 0x7c00, 0x4780}, /* 65504; 65520 -> Inf in f16 */
      {0x477fefff, 0x7bff, 0x4780},
      {0x33800000, 0x0001, 0x3380}, {0x33000000, 0x0000, 0x3300}, /* 2^-24; 2^-25 ties to 0 */
      {0x33c00000, 0x0002, 0x33c0}, {0x34200000, 0x0002, 0x3420}, /* 1.5, 2.5 * 2^-24 tie to even */
      {0x00000001, 0x0000, 0x0000}, {0x00400000, 0x0000, 0x0040}, /* f32 denormals */
      {0x3f801000, 0x3c00, 0x3f80}, {0x3f803000, 0x3c02, 0x3f80}, /* f16 ties to even */
      {0x3f808000, 0x3c04, 0x3f80}, {0x3f818000, 0x3c0c, 0x3f82}, /* bf16 ties to even */
      {0x7f7fffff, 0x7c00, 0x7f80}, {0x7f7f7fff, 0x7c00, 0x7f7f}, /* FLT_MAX -> Inf in both */
  };
  for (size_t i = 0; i < YK_ARRAY_LEN(cases); i++) {
    float f = u2f(cases[i].f);
    ck_assert_msg(yk_f32_to_f16(f) == cases[i].h, "f16 of %08x: %04x, expected %04x", cases[i].f, yk_f32_to_f16(f),
                  cases[i].h);
    ck_assert_msg(yk_f32_to_bf16(f) == cases[i].b, "bf16 of %08x: %04x, expected %04x", cases[i].f,
                  yk_f32_to_bf16(f), cases[i].b);
  }
  /* widening: exact; a NaN keeps its payload and comes out quiet (f16, as F16C does) */
  ck_assert_uint_eq(f2u(yk_f16_to_f32(0x7c01)), 0x7fc02000);
  ck_assert_uint_eq(f2u(yk_f16_to_f32(0xfe00)), 0xffc00000);
  ck_assert_uint_eq(f2u(yk_f16_to_f32(0x7c00)), 0x7f800000);
  ck_assert_uint_eq(f2u(yk_f16_to_f32(0x8001)), 0xb3800000);
  ck_assert_uint_eq(f2u(yk_bf16_to_f32(0x7f81)), 0x7f810000);
  ck_assert_uint_eq(f2u(yk_bf16_to_f32(0x8001)), 0x80010000);
}
END_TEST

/* ---- array casts against the references ---------------------------------- */

/* Compare out16 (n) with the references for in (n), ck_abort on the first
 * difference (Check's per-assertion bookkeeping is slow in tight loops). */
static void check16(const uint16_t *got, const float *in, size_t n, yk_dtype dt, yk_isa isa, const char *what) {
  for (size_t i = 0; i < n; i++) {
    uint16_t e = dt == YK_DT_F16 ? yk_f32_to_f16(in[i]) : yk_f32_to_bf16(in[i]);
    if (got[i] != e)
      ck_abort_msg("%s %s (%s) [%zu of %zu]: %08x -> %04x, reference %04x", what, yk_dtype_name(dt), yk_isa_name(isa),
                   i, n, f2u(in[i]), got[i], e);
  }
}

START_TEST(test_from_f32_and_round_match_reference) {
  size_t n;
  float *f = inputs(&n);
  uint16_t *h = malloc((n + 1) * 2);
  float *x = malloc((n + 1) * 4);
  yk_isa v[3];
  int nv = variants(v);
  for (int k = 0; k < nv; k++)
    for (int dt = YK_DT_F16; dt <= YK_DT_BF16; dt++) {
      ck_assert_int_eq(yk_cast_from_f32(h, (yk_dtype)dt, f, n, v[k]), 0);
      check16(h, f, n, (yk_dtype)dt, v[k], "from_f32");
      memcpy(x, f, n * 4);
      ck_assert_int_eq(yk_cast_round(h, (yk_dtype)dt, x, n, v[k]), 0);
      check16(h, f, n, (yk_dtype)dt, v[k], "round");
      for (size_t i = 0; i < n; i++) {
        float e = dt == YK_DT_F16 ? yk_f16_to_f32(h[i]) : yk_bf16_to_f32(h[i]);
        if (f2u(e) != f2u(x[i]))
          ck_abort_msg("round %s (%s) [%zu]: x %08x -> %08x, reference %08x", yk_dtype_name((yk_dtype)dt),
                       yk_isa_name(v[k]), i, f2u(f[i]), f2u(x[i]), f2u(e));
      }
    }
  free(f), free(h), free(x);
}
END_TEST

START_TEST(test_to_f32_matches_reference) {
  /* every 16-bit pattern, both formats, with and without the multiply */
  uint16_t *all = malloc(65536 * 2);
  float *w = malloc(65536 * 4);
  for (int i = 0; i < 65536; i++) all[i] = (uint16_t)i;
  const float muls[] = {1.0f, 0.5f, 1.0f / 65536, 3.0f};
  yk_isa v[3];
  int nv = variants(v);
  for (int k = 0; k < nv; k++)
    for (int dt = YK_DT_F16; dt <= YK_DT_BF16; dt++)
      for (size_t m = 0; m < YK_ARRAY_LEN(muls); m++) {
        ck_assert_int_eq(yk_cast_to_f32(w, all, (yk_dtype)dt, 65536, muls[m], v[k]), 0);
        for (int i = 0; i < 65536; i++) {
          float e = dt == YK_DT_F16 ? yk_f16_to_f32((uint16_t)i) : yk_bf16_to_f32((uint16_t)i);
          if (muls[m] != 1.0f) e = e * muls[m];
          if (f2u(e) != f2u(w[i]))
            ck_abort_msg("to_f32 %s (%s) * %g of %04x: %08x, reference %08x", yk_dtype_name((yk_dtype)dt),
                         yk_isa_name(v[k]), muls[m], i, f2u(w[i]), f2u(e));
        }
      }
  free(all), free(w);
}
END_TEST

/* Lengths around the vector width, at every start alignment of a 16-byte
 * line: the tails and the unaligned loads must give the same bits, and
 * nothing outside [0, n) may be written. */
START_TEST(test_lengths_and_alignment) {
  enum { MAXN = 75, PAD = 8, GUARD = 0xA5A5 };
  float src[MAXN + PAD];
  uint16_t src16[MAXN + PAD];
  yk_rng r;
  yk_rng_seed(&r, 9);
  for (int i = 0; i < MAXN + PAD; i++) {
    src[i] = i % 11 == 0 ? u2f(edge_bits[i % YK_ARRAY_LEN(edge_bits)]) : yk_rng_normal(&r) * 300.0f;
    src16[i] = (uint16_t)yk_rng_u64(&r);
  }
  yk_isa v[3];
  int nv = variants(v);
  for (int k = 0; k < nv; k++)
    for (int dt = YK_DT_F16; dt <= YK_DT_BF16; dt++)
      for (int off = 0; off < PAD; off++)
        for (int n = 0; n <= MAXN; n++) {
          uint16_t h[MAXN + 2 * PAD];
          float x[MAXN + 2 * PAD], w[MAXN + 2 * PAD];
          for (int i = 0; i < MAXN + 2 * PAD; i++) h[i] = GUARD, x[i] = u2f(0xdeadbeef), w[i] = u2f(0xdeadbeef);
          yk_cast_from_f32(h + off, (yk_dtype)dt, src + off, (size_t)n, v[k]);
          check16(h + off, src + off, (size_t)n, (yk_dtype)dt, v[k], "from_f32 (short)");
          for (int i = 0; i < MAXN + 2 * PAD; i++)
            if ((i < off || i >= off + n) && h[i] != GUARD)
              ck_abort_msg("from_f32 n=%d off=%d wrote element %d", n, off, i);
          yk_cast_to_f32(w + off, src16 + off, (yk_dtype)dt, (size_t)n, 0.25f, v[k]);
          for (int i = 0; i < MAXN + 2 * PAD; i++) {
            int in = i >= off && i < off + n;
            float e = !in ? u2f(0xdeadbeef)
                          : (dt == YK_DT_F16 ? yk_f16_to_f32(src16[i]) : yk_bf16_to_f32(src16[i])) * 0.25f;
            if (f2u(e) != f2u(w[i])) ck_abort_msg("to_f32 n=%d off=%d (%s) [%d]", n, off, yk_isa_name(v[k]), i);
          }
          memcpy(x + off, src + off, (size_t)n * 4);
          for (int i = 0; i < MAXN + 2 * PAD; i++) h[i] = GUARD;
          yk_cast_round(h + off, (yk_dtype)dt, x + off, (size_t)n, v[k]);
          check16(h + off, src + off, (size_t)n, (yk_dtype)dt, v[k], "round (short)");
          for (int i = 0; i < MAXN + 2 * PAD; i++)
            if ((i < off || i >= off + n) && (h[i] != GUARD || f2u(x[i]) != 0xdeadbeef))
              ck_abort_msg("round n=%d off=%d wrote element %d", n, off, i);
        }
}
END_TEST

/* The progress bar's ETA extrapolates this run's own steps: a run resumed
 * at step 100 that did 50 steps in 10 s has 150 left, 30 s. */
START_TEST(test_progress_eta) {
  char b[128];
  yk_progress_text(150, 300, 100, 10.0, b, sizeof b);
  ck_assert_str_eq(b, "[###############...............] 150/300 ETA 0m30s");
  yk_progress_text(0, 300, 0, 0.0, b, sizeof b);
  ck_assert_str_eq(b, "[..............................] 0/300");
  yk_progress_text(1, 10000, 0, 2.0, b, sizeof b);
  ck_assert(strstr(b, " ETA 5h33m") != NULL);
  yk_progress_text(300, 300, 0, 9.0, b, sizeof b);
  ck_assert(strstr(b, "ETA") == NULL);
}
END_TEST

START_TEST(test_bad_dtype) {
  float f[4] = {1, 2, 3, 4}, x[4] = {1, 2, 3, 4};
  uint16_t h[4] = {7, 7, 7, 7};
  ck_assert_int_eq(yk_cast_from_f32(h, YK_DT_F32, f, 4, YK_ISA_AUTO), YK_EINVAL);
  ck_assert_int_eq(yk_cast_to_f32(f, h, YK_DT_I32, 4, 1.0f, YK_ISA_AUTO), YK_EINVAL);
  ck_assert_int_eq(yk_cast_round(h, YK_DT_U16, x, 4, YK_ISA_AUTO), YK_EINVAL);
  ck_assert_uint_eq(h[0], 7);
  ck_assert(f[0] == 1 && x[3] == 4);
}
END_TEST

/* ---- dispatch ---------------------------------------------------------------- */

/* A named variant is taken as asked, whatever $YK_ISA says. */
START_TEST(test_isa_resolve_named) {
  yk_diag d = {0};
  yk_isa got;
  setenv("YK_ISA", "avx2", 1);
  ck_assert_int_eq(yk_isa_resolve(YK_ISA_PORTABLE, &got, &d), 0);
  ck_assert_int_eq(got, YK_ISA_PORTABLE);
  setenv("YK_ISA", "portable", 1);
  int rc = yk_isa_resolve(YK_ISA_AVX2, &got, &d);
  if (yk_isa_supported(YK_ISA_AVX2)) {
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(got, YK_ISA_AVX2);
  } else {
    ck_assert_int_eq(rc, YK_EUNSUPPORTED);
    ck_assert_int_eq(got, YK_ISA_PORTABLE);
    ck_assert_msg(strstr(d.msg, "cannot run the avx2 kernels") != NULL, "%s", d.msg);
  }
  /* a value that is not a yk_isa */
  ck_assert_int_eq(yk_isa_resolve((yk_isa)7, &got, &d), YK_EINVAL);
  ck_assert_int_eq(got, YK_ISA_PORTABLE);
  ck_assert_msg(strstr(d.msg, "7") != NULL, "%s", d.msg);
}
END_TEST

/* AUTO follows $YK_ISA, read once per process: each row runs in its own
 * forked process (Check's default), with $YK_ISA set before the first
 * request. NULL = unset. */
static const struct {
  const char *env;
  int avx2_rc, avx2_out;       /* on a CPU with the AVX2 level */
  int portable_rc;             /* on one without it (out: PORTABLE) */
} env_rows[] = {
    {NULL, 0, YK_ISA_AVX2, 0},
    {"", 0, YK_ISA_AVX2, 0},
    {"Auto", 0, YK_ISA_AVX2, 0},
    {"portable", 0, YK_ISA_PORTABLE, 0}, /* YK_ISA=portable forces portable */
    {"PORTABLE", 0, YK_ISA_PORTABLE, 0},
    {"avx2", 0, YK_ISA_AVX2, YK_EUNSUPPORTED},
    {"avx9000", YK_ECONFIG, YK_ISA_AVX2, YK_ECONFIG}, /* reported; the fallback is what AUTO picks */
};

START_TEST(test_isa_resolve_env) {
  const int has = yk_isa_supported(YK_ISA_AVX2);
  const char *env = env_rows[_i].env;
  if (env) setenv("YK_ISA", env, 1);
  else unsetenv("YK_ISA");
  int want_rc = has ? env_rows[_i].avx2_rc : env_rows[_i].portable_rc;
  yk_isa want_out = has ? (yk_isa)env_rows[_i].avx2_out : YK_ISA_PORTABLE;
  yk_diag d = {0};
  yk_isa got;
  ck_assert_int_eq(yk_isa_resolve(YK_ISA_AUTO, &got, &d), want_rc);
  ck_assert_int_eq(got, want_out);
  if (want_rc == YK_ECONFIG)
    ck_assert_msg(strstr(d.msg, "YK_ISA=avx9000") && strstr(d.msg, "portable, avx2 or auto"), "%s", d.msg);
  if (want_rc == YK_EUNSUPPORTED)
    ck_assert_msg(strstr(d.msg, "YK_ISA=avx2") && strstr(d.msg, "YK_ISA=portable"), "%s", d.msg);
  /* the setting holds for the process: a later change is not seen, and d may be NULL */
  setenv("YK_ISA", env && !strcmp(env, "portable") ? "avx2" : "portable", 1);
  ck_assert_int_eq(yk_isa_resolve(YK_ISA_AUTO, &got, NULL), want_rc);
  ck_assert_int_eq(got, want_out);
  /* the casts resolve the same way and keep the references' bits */
  float f[19];
  uint16_t h[19];
  for (int i = 0; i < 19; i++) f[i] = u2f(edge_bits[i]);
  ck_assert_int_eq(yk_cast_from_f32(h, YK_DT_F16, f, 19, YK_ISA_AUTO), 0);
  check16(h, f, 19, YK_DT_F16, YK_ISA_AUTO, "from_f32 under $YK_ISA");
}
END_TEST

int main(void) {
  Suite *s = suite_create("common");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_strerror_all_codes);
  tcase_add_test(tc, test_diag);
  tcase_add_test(tc, test_log_ranks);
  tcase_add_test(tc, test_config_defaults_valid);
  tcase_add_test(tc, test_config_yaml_ok);
  tcase_add_test(tc, test_config_errors_name_line_and_key);
  tcase_add_test(tc, test_config_set);
  tcase_add_test(tc, test_fp16_roundtrip);
  tcase_add_test(tc, test_parse);
  tcase_add_test(tc, test_rng_deterministic);
  tcase_add_test(tc, test_atomic_write);
  tcase_add_test(tc, test_args_table);
  tcase_add_test(tc, test_args_positionals);
  tcase_add_test(tc, test_progress_eta);
  suite_add_tcase(s, tc);
  TCase *tk = tcase_create("isa_cast");
  tcase_add_test(tk, test_reference_values);
  tcase_add_test(tk, test_from_f32_and_round_match_reference);
  tcase_add_test(tk, test_to_f32_matches_reference);
  tcase_add_test(tk, test_lengths_and_alignment);
  tcase_add_test(tk, test_bad_dtype);
  tcase_add_test(tk, test_isa_resolve_named);
  tcase_add_loop_test(tk, test_isa_resolve_env, 0, (int)YK_ARRAY_LEN(env_rows));
  suite_add_tcase(s, tk);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
