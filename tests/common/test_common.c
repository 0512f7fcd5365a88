/* Unit tests for common/: errors, config, fp16/bf16, parsing, RNG. */
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

int main(void) {
  Suite *s = suite_create("common");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_strerror_all_codes);
  tcase_add_test(tc, test_diag);
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
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
