/* test_trace.c - the recorder and the trace tools on synthetic events. */
#include <check.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "yk_trace.h"

static char dir[64];

static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/yk_test_trace_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
}

static const yk_trace_name N_A = {"a", "compute", "i", NULL};
static const yk_trace_name N_S = {"step", "step", "step", NULL};
static const yk_trace_name N_C = {"rss", "counter", "MB", NULL};

static json_t *load(const char *path) {
  json_error_t e;
  json_t *j = json_load_file(path, 0, &e);
  ck_assert_msg(j != NULL, "%s: %s", path, e.text);
  return j;
}

/* Count events named `name` with phase ph. */
static int count(json_t *root, const char *name, const char *ph) {
  size_t i;
  json_t *e;
  int n = 0;
  json_array_foreach(json_object_get(root, "traceEvents"), i, e) {
    n += !strcmp(json_string_value(json_object_get(e, "name")), name) &&
         !strcmp(json_string_value(json_object_get(e, "ph")), ph);
  }
  return n;
}

START_TEST(paths) {
  char out[256];
  yk_trace_path_of("t.json", 3, 4, out, sizeof out);
  ck_assert_str_eq(out, "t.rank3.json");
  yk_trace_path_of("run-{rank}/t.json", 3, 4, out, sizeof out);
  ck_assert_str_eq(out, "run-3/t.json");
  yk_trace_path_of("t.json", 0, 1, out, sizeof out);
  ck_assert_str_eq(out, "t.json");
  yk_trace_path_of("trace", 1, 2, out, sizeof out);
  ck_assert_str_eq(out, "trace.rank1.json");
}
END_TEST

/* Only the steps of the window are recorded; the file parses and carries
 * the clock metadata; a NULL trace and NULL tracks are no-ops. */
START_TEST(window) {
  char path[128];
  snprintf(path, sizeof path, "%s/t.json", dir);
  yk_trace_opts o = {.path = path, .rank = 0, .world = 1, .first_step = 2, .last_step = 3};
  yk_trace *t;
  yk_diag d = {0};
  ck_assert_int_eq(yk_trace_open(&o, &t, &d), 0);
  yk_trace_set_clock(t, 1234, 56);
  yk_trace_track *k = yk_trace_track_open(t, "main");
  ck_assert_ptr_nonnull(k);
  for (int s = 0; s < 6; s++) {
    yk_trace_step_begin(t, s);
    int64_t t0 = yk_trace_begin(k);
    int64_t t1 = yk_trace_begin(k);
    yk_trace_end(k, &N_A, t1, s, 0);
    yk_trace_counter(k, &N_C, 42);
    yk_trace_end(k, &N_S, t0, s + 1, 0);
    ck_assert_int_eq(yk_trace_step_end(t, s, &d), 0);
  }
  ck_assert_int_eq(yk_trace_close(t, &d), 0);
  json_t *j = load(path);
  ck_assert_int_eq(count(j, "step", "X"), 2);
  ck_assert_int_eq(count(j, "a", "X"), 2);
  ck_assert_int_eq(count(j, "rss", "C"), 2);
  json_t *m = json_object_get(j, "metadata");
  ck_assert_int_eq(json_integer_value(json_object_get(m, "clock_offset_ns")), 1234);
  ck_assert_int_eq(json_integer_value(json_object_get(m, "clock_error_ns")), 56);
  ck_assert_int_eq(json_integer_value(json_object_get(m, "yoke_trace_format")), YK_TRACE_FORMAT_VERSION);
  json_decref(j);
  /* disabled: nothing happens, nothing crashes */
  yk_trace_track *none = yk_trace_track_open(NULL, "x");
  ck_assert_ptr_null(none);
  yk_trace_end(none, &N_A, yk_trace_begin(none), 0, 0);
  yk_trace_step_begin(NULL, 0);
  ck_assert_int_eq(yk_trace_step_end(NULL, 0, &d), 0);
  ck_assert_int_eq(yk_trace_close(NULL, &d), 0);
}
END_TEST

/* A full ring drops (and counts) instead of blocking; step_end drains it at
 * half full so a long window loses nothing. */
START_TEST(ring_full) {
  char path[128];
  snprintf(path, sizeof path, "%s/r.json", dir);
  yk_trace_opts o = {.path = path, .world = 1, .last_step = -1, .ring_events = 16};
  yk_trace *t;
  yk_diag d = {0};
  ck_assert_int_eq(yk_trace_open(&o, &t, &d), 0);
  yk_trace_track *k = yk_trace_track_open(t, "main");
  yk_trace_step_begin(t, 0);
  for (int i = 0; i < 20; i++) yk_trace_end(k, &N_A, yk_trace_begin(k), i, 0);
  ck_assert_int_eq(yk_trace_step_end(t, 0, &d), 0);
  for (int s = 1; s < 10; s++) { /* 5 per step: drained every other step, nothing lost */
    yk_trace_step_begin(t, s);
    for (int i = 0; i < 5; i++) yk_trace_end(k, &N_A, yk_trace_begin(k), i, 0);
    ck_assert_int_eq(yk_trace_step_end(t, s, &d), 0);
  }
  ck_assert_int_eq(yk_trace_close(t, &d), 0);
  json_t *j = load(path);
  ck_assert_int_eq(count(j, "a", "X"), 16 + 45);
  ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "metadata"), "dropped_events")), 4);
  json_decref(j);
}
END_TEST

/* Two ranks, rank 1's clock 1 ms ahead: merge moves its events back, sorts,
 * and refuses two files of the same rank; top finds the rank that waited
 * least as the slowest. */
static void write_rank(const char *path, int rank, int64_t offset_ns, double busy_us) {
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  double base = 1000.0 + (double)offset_ns / 1000.0;
  fprintf(f, "{\"traceEvents\":[\n"
             "{\"name\":\"step\",\"cat\":\"step\",\"ph\":\"X\",\"pid\":%d,\"tid\":1,\"ts\":%.3f,\"dur\":100},\n"
             "{\"name\":\"forward\",\"cat\":\"compute\",\"ph\":\"X\",\"pid\":%d,\"tid\":1,\"ts\":%.3f,\"dur\":%.3f},\n"
             "{\"name\":\"bucket wait\",\"cat\":\"wait\",\"ph\":\"X\",\"pid\":%d,\"tid\":1,\"ts\":%.3f,\"dur\":%.3f}\n"
             "],\"metadata\":{\"yoke_trace_format\":1,\"rank\":%d,\"clock_offset_ns\":%lld,\"clock_error_ns\":10}}\n",
          rank, base, rank, base, busy_us, rank, base + busy_us, 100 - busy_us, rank, (long long)offset_ns);
  fclose(f);
}

START_TEST(merge_top) {
  char a[128], b[128], out[128], res[128];
  snprintf(a, sizeof a, "%s/a.json", dir);
  snprintf(b, sizeof b, "%s/b.json", dir);
  snprintf(out, sizeof out, "%s/m.json", dir);
  snprintf(res, sizeof res, "%s/top.json", dir);
  write_rank(a, 0, 0, 40);
  write_rank(b, 1, 1000000, 90);
  const char *in[2] = {b, a};
  yk_trace_merge_opts mo = {.inputs = in, .n_inputs = 2, .out = out};
  yk_diag d = {0};
  ck_assert_int_eq(yk_trace_merge(&mo, NULL, &d), 0);
  json_t *j = load(out);
  json_t *ev = json_object_get(j, "traceEvents");
  ck_assert_int_eq(json_array_size(ev), 6);
  double last = -1;
  size_t i;
  json_t *e;
  json_array_foreach(ev, i, e) {
    double ts = json_number_value(json_object_get(e, "ts"));
    ck_assert(ts >= last);
    last = ts;
    if (!strcmp(json_string_value(json_object_get(e, "name")), "step")) ck_assert(ts > 999.99 && ts < 1000.01);
  }
  json_decref(j);
  const char *same[2] = {a, a};
  mo.inputs = same;
  ck_assert_int_eq(yk_trace_merge(&mo, NULL, &d), YK_EINVAL);
  ck_assert_ptr_nonnull(strstr(yk_diag_msg(&d, YK_EINVAL), "both rank 0"));

  FILE *f = fopen(res, "w");
  const char *one[1] = {out};
  yk_trace_top_opts to = {.inputs = one, .n_inputs = 1, .json = 1};
  ck_assert_int_eq(yk_trace_top(&to, f, &d), 0);
  fclose(f);
  j = load(res);
  ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "slowest_rank"), "rank")), 1);
  /* waits: 60 + 10 of 200 us of step */
  double share = json_real_value(json_object_get(j, "exposed_comm_share"));
  ck_assert_msg(share > 0.349 && share < 0.351, "exposed share %g", share);
  ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(j, "spans"), 0), "name")),
                   "forward");
  json_decref(j);
}
END_TEST

/* A span's packed shape is written as "AxBxC" (saturating per dimension);
 * both ends of a flow arrow carry the same id, the landing end bound to
 * its enclosing span; top puts kernel spans in their own table. */
static const yk_trace_name N_K = {"gemm", "kernel", "layer", "bytes", "shape"};
static const yk_trace_name N_E = {"add", "kernel", "bytes", NULL, "shape"};
static const yk_trace_name N_F = {"pipe act", "pipe", NULL, NULL};

START_TEST(shapes_flows_kernels) {
  int64_t dim[3] = {256, 50304, 768}, back[3];
  ck_assert_int_eq(yk_trace_shape_dims(yk_trace_shape(3, dim), back), 3);
  ck_assert(back[0] == 256 && back[1] == 50304 && back[2] == 768);
  int64_t big[3] = {25165824, 0, 0}, sat[3] = {1 << 21, 5, 7};
  ck_assert_int_eq(yk_trace_shape_dims(yk_trace_shape(1, big), back), 1);
  ck_assert(back[0] == 25165824);
  yk_trace_shape_dims(yk_trace_shape(3, sat), back);
  ck_assert(back[0] == (1 << 20) - 1 && back[1] == 5 && back[2] == 7);

  char path[128], res[128];
  snprintf(path, sizeof path, "%s/k.json", dir);
  snprintf(res, sizeof res, "%s/top.json", dir);
  yk_trace_opts o = {.path = path, .rank = 0, .world = 1, .last_step = -1};
  yk_trace *t = NULL;
  yk_diag d = {0};
  ck_assert_int_eq(yk_trace_open(&o, &t, &d), 0);
  yk_trace_track *k = yk_trace_track_open(t, "main");
  yk_trace_step_begin(t, 0);
  int64_t t0 = yk_trace_begin(k);
  yk_trace_record(k, YK_TRACE_SPAN, &N_K, t0, t0 + 30000, yk_trace_shape(3, dim), 1, 4096);
  yk_trace_record(k, YK_TRACE_SPAN, &N_E, t0 + 30000, t0 + 40000, yk_trace_shape(1, big), 96, 0);
  yk_trace_flow(k, &N_F, 42, 0, t0 + 1);
  yk_trace_flow(k, &N_F, 42, 1, t0 + 39999);
  yk_trace_record(k, YK_TRACE_SPAN, &N_S, t0, t0 + 100000, 0, 1, 0);
  ck_assert_int_eq(yk_trace_step_end(t, 0, &d), 0);
  ck_assert_int_eq(yk_trace_close(t, &d), 0);
  json_t *j = load(path);
  size_t i;
  json_t *e;
  int flows = 0;
  json_array_foreach(json_object_get(j, "traceEvents"), i, e) {
    const char *n = json_string_value(json_object_get(e, "name")), *ph = json_string_value(json_object_get(e, "ph"));
    json_t *a = json_object_get(e, "args");
    if (!strcmp(n, "gemm")) {
      ck_assert_str_eq(json_string_value(json_object_get(a, "shape")), "256x50304x768");
      ck_assert_int_eq(json_integer_value(json_object_get(a, "layer")), 1);
      ck_assert_int_eq(json_integer_value(json_object_get(a, "bytes")), 4096);
    }
    if (!strcmp(n, "add")) ck_assert_str_eq(json_string_value(json_object_get(a, "shape")), "25165824");
    if (!strcmp(n, "pipe act")) {
      flows++;
      ck_assert_str_eq(json_string_value(json_object_get(e, "id")), "0x2a");
      if (!strcmp(ph, "f")) ck_assert_str_eq(json_string_value(json_object_get(e, "bp")), "e");
      else ck_assert_str_eq(ph, "s");
    }
  }
  ck_assert_int_eq(flows, 2);
  json_decref(j);

  FILE *f = fopen(res, "w");
  const char *one[1] = {path};
  yk_trace_top_opts to = {.inputs = one, .n_inputs = 1, .json = 1};
  ck_assert_int_eq(yk_trace_top(&to, f, &d), 0);
  fclose(f);
  j = load(res);
  json_t *kern = json_object_get(j, "kernels");
  ck_assert_int_eq(json_array_size(kern), 2);
  ck_assert_int_eq(json_array_size(json_object_get(j, "spans")), 0);
  json_t *top = json_array_get(kern, 0);
  ck_assert_str_eq(json_string_value(json_object_get(top, "name")), "gemm");
  double share = json_real_value(json_object_get(top, "step_share"));
  ck_assert_msg(share > 0.299 && share < 0.301, "gemm share %g", share);
  json_decref(j);
}
END_TEST

int main(void) {
  Suite *s = suite_create("trace");
  TCase *tc = tcase_create("trace");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, paths);
  tcase_add_test(tc, window);
  tcase_add_test(tc, ring_full);
  tcase_add_test(tc, merge_top);
  tcase_add_test(tc, shapes_flows_kernels);
  suite_add_tcase(s, tc);
  SRunner *r = srunner_create(s);
  srunner_run_all(r, CK_NORMAL);
  int failed = srunner_ntests_failed(r);
  srunner_free(r);
  return failed ? 1 : 0;
}
