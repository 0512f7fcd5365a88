/* SLURM hostlist expansion and launch-environment detection. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "yk_daemon.h"

/* Expand list and compare with the space-separated expectation. */
static void expect(const char *list, const char *want) {
  char **h = NULL;
  int n = 0;
  yk_diag d = {0};
  int rc = yk_hostlist_expand(list, &h, &n, &d);
  ck_assert_msg(rc == 0, "%s: %s", list, d.msg);
  char got[4096] = "";
  for (int i = 0; i < n; i++) {
    if (i) strcat(got, " ");
    strcat(got, h[i]);
  }
  ck_assert_msg(strcmp(got, want) == 0, "%s -> '%s', want '%s'", list, got, want);
  yk_hostlist_free(h, n);
}

static void expect_bad(const char *list, const char *needle) {
  char **h = NULL;
  int n = 0;
  yk_diag d = {0};
  int rc = yk_hostlist_expand(list, &h, &n, &d);
  ck_assert_msg(rc == YK_EINVAL, "%s should fail", list);
  ck_assert_msg(strstr(d.msg, needle), "%s: message '%s' lacks '%s'", list, d.msg, needle);
  ck_assert_ptr_null(h);
}

START_TEST(plain) {
  expect("node1", "node1");
  expect("a,b,c", "a b c");
  expect("n1.cluster.local,n2.cluster.local", "n1.cluster.local n2.cluster.local");
}
END_TEST

START_TEST(ranges) {
  expect("node[01-04,07]", "node01 node02 node03 node04 node07");
  expect("a[1-2],b3", "a1 a2 b3");
  expect("n[8-11]", "n8 n9 n10 n11");
  expect("n[08-11]", "n08 n09 n10 n11");
  expect("n[098-101]", "n098 n099 n100 n101");
  expect("n[5]", "n5");
  expect("gpu[1-2]-ib", "gpu1-ib gpu2-ib");
  expect("x[1-2],y[3,5-6],z", "x1 x2 y3 y5 y6 z");
  expect("[1-3]", "1 2 3");
}
END_TEST

START_TEST(product) {
  expect("r[1-2]n[1-2]", "r1n1 r1n2 r2n1 r2n2");
  expect("r[1-2]n[01-02],login", "r1n01 r1n02 r2n01 r2n02 login");
}
END_TEST

START_TEST(first) {
  char out[64];
  yk_diag d = {0};
  ck_assert_int_eq(yk_hostlist_first("node[07-09],x", out, sizeof out, &d), 0);
  ck_assert_str_eq(out, "node07");
  ck_assert_int_eq(yk_hostlist_first("b3,a[1-2]", out, sizeof out, &d), 0);
  ck_assert_str_eq(out, "b3");
  ck_assert_int_eq(yk_hostlist_first("averyveryverylonghostname", out, 8, &d), YK_EINVAL);
}
END_TEST

START_TEST(bad) {
  expect_bad("", "empty");
  expect_bad("a,,b", "empty entry");
  expect_bad("a,", "trailing comma");
  expect_bad("n[1-", "without ']'");
  expect_bad("n1-2]", "without '['");
  expect_bad("n[4-2]", "backwards");
  expect_bad("n[a-b]", "bad range");
  expect_bad("n[]", "empty brackets");
  expect_bad("n[1,]", "trailing ','");
  expect_bad("n[1-2[3]]", "nested");
  expect_bad("n[0-99999999]", "more than");
  expect_bad("a b", "whitespace");
  expect_bad("n[1--2]", "bad range");
}
END_TEST

/* ---------------------------------------------------------- environment */

typedef struct {
  const char **kv; /* NULL-terminated name, value pairs */
} fake_env;

static const char *fake_get(const char *name, void *arg) {
  fake_env *e = arg;
  for (int i = 0; e->kv[i]; i += 2)
    if (!strcmp(e->kv[i], name)) return e->kv[i + 1];
  return NULL;
}

static int detect(const char **kv, yk_config *cfg, yk_launch_env *out, yk_diag *d) {
  fake_env e = {kv};
  return yk_launch_env_detect(cfg, fake_get, &e, out, d);
}

START_TEST(env_single) {
  yk_config c;
  yk_config_defaults(&c);
  const char *kv[] = {NULL};
  yk_launch_env e;
  yk_diag d = {0};
  ck_assert_int_eq(detect(kv, &c, &e, &d), 0);
  ck_assert_int_eq(e.kind, YK_LAUNCH_SINGLE);
  ck_assert_int_eq(e.rank, 0);
  ck_assert_int_eq(e.world, 1);
  ck_assert_int_eq(e.embed_coord, 1);
  ck_assert_str_eq(e.coord_host, "127.0.0.1");
  ck_assert_int_eq(e.coord_port, 29400);
}
END_TEST

START_TEST(env_openmpi) {
  yk_config c;
  yk_config_defaults(&c);
  const char *kv[] = {"OMPI_COMM_WORLD_RANK", "2", "OMPI_COMM_WORLD_SIZE", "4", "OMPI_COMM_WORLD_LOCAL_RANK", "2",
                      "OMPI_COMM_WORLD_LOCAL_SIZE", "4", NULL};
  yk_launch_env e;
  yk_diag d = {0};
  ck_assert_int_eq(detect(kv, &c, &e, &d), 0);
  ck_assert_int_eq(e.kind, YK_LAUNCH_OPENMPI);
  ck_assert_int_eq(e.rank, 2);
  ck_assert_int_eq(e.world, 4);
  ck_assert_int_eq(e.local_rank, 2);
  ck_assert_int_eq(e.embed_coord, 0);
  ck_assert_str_eq(e.coord_host, "127.0.0.1");
  /* across hosts without coord.host: a clear config error */
  const char *kv2[] = {"OMPI_COMM_WORLD_RANK", "1", "OMPI_COMM_WORLD_SIZE", "4", "OMPI_COMM_WORLD_LOCAL_RANK", "1",
                       "OMPI_COMM_WORLD_LOCAL_SIZE", "2", NULL};
  ck_assert_int_eq(detect(kv2, &c, &e, &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "coord.host"), "%s", d.msg);
  ck_assert_int_eq(yk_config_set(&c, "coord.host=head01:4000", &d), 0);
  ck_assert_int_eq(detect(kv2, &c, &e, &d), 0);
  ck_assert_str_eq(e.coord_host, "head01");
  ck_assert_int_eq(e.coord_port, 4000);
  /* rank 0 embeds */
  const char *kv3[] = {"OMPI_COMM_WORLD_RANK", "0", "OMPI_COMM_WORLD_SIZE", "2", NULL};
  yk_config_defaults(&c);
  ck_assert_int_eq(detect(kv3, &c, &e, &d), 0);
  ck_assert_int_eq(e.embed_coord, 1);
  /* out of range */
  const char *kv4[] = {"OMPI_COMM_WORLD_RANK", "5", "OMPI_COMM_WORLD_SIZE", "2", NULL};
  ck_assert_int_eq(detect(kv4, &c, &e, &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "OMPI_COMM_WORLD_RANK='5'"), "%s", d.msg);
}
END_TEST

START_TEST(env_slurm) {
  yk_config c;
  yk_config_defaults(&c);
  const char *kv[] = {"SLURM_PROCID", "3", "SLURM_NTASKS", "8", "SLURM_STEP_NUM_TASKS", "4", "SLURM_LOCALID", "1",
                      "SLURM_JOB_NODELIST", "node[01-04,07]", "SLURM_STEP_NODELIST", "node[03-04]", "SLURM_JOB_ID",
                      "42", NULL};
  yk_launch_env e;
  yk_diag d = {0};
  ck_assert_int_eq(detect(kv, &c, &e, &d), 0);
  ck_assert_int_eq(e.kind, YK_LAUNCH_SLURM);
  ck_assert_int_eq(e.rank, 3);
  ck_assert_int_eq(e.world, 4); /* the step, not the allocation */
  ck_assert_int_eq(e.local_rank, 1);
  ck_assert_str_eq(e.coord_host, "node03");
  ck_assert_str_eq(e.job_tag, "slurm-42");
  const char *kv2[] = {"SLURM_PROCID", "0", "SLURM_NTASKS", "2", "SLURM_JOB_NODELIST", "a[1-2],b3", NULL};
  ck_assert_int_eq(detect(kv2, &c, &e, &d), 0);
  ck_assert_str_eq(e.coord_host, "a1");
  ck_assert_int_eq(e.embed_coord, 1);
  const char *kv3[] = {"SLURM_PROCID", "0", "SLURM_NTASKS", "2", "SLURM_JOB_NODELIST", "n[2-1]", NULL};
  ck_assert_int_eq(detect(kv3, &c, &e, &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "backwards"), "%s", d.msg);
}
END_TEST

START_TEST(env_yoke) {
  yk_config c;
  yk_config_defaults(&c);
  const char *kv[] = {"YOKE_RANK", "1", "YOKE_WORLD", "3", "YOKE_COORD", "198.18.0.1:5555", "OMPI_COMM_WORLD_RANK",
                      "0", "OMPI_COMM_WORLD_SIZE", "9", "YOKE_HOSTNAME", "hostB", NULL};
  yk_launch_env e;
  yk_diag d = {0};
  ck_assert_int_eq(detect(kv, &c, &e, &d), 0);
  ck_assert_int_eq(e.kind, YK_LAUNCH_YOKE); /* YOKE_* wins over OpenMPI */
  ck_assert_int_eq(e.rank, 1);
  ck_assert_int_eq(e.world, 3);
  ck_assert_str_eq(e.coord_host, "198.18.0.1");
  ck_assert_int_eq(e.coord_port, 5555);
  ck_assert_str_eq(e.host, "hostB");
  ck_assert_int_eq(e.embed_coord, 0);
  const char *kv2[] = {"YOKE_RANK", "0", "YOKE_WORLD", "2", "YOKE_COORD", "10.1.1.1", NULL};
  ck_assert_int_eq(detect(kv2, &c, &e, &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "host:port"), "%s", d.msg);
  const char *kv3[] = {"YOKE_RANK", "0", NULL};
  ck_assert_int_eq(detect(kv3, &c, &e, &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "YOKE_WORLD"), "%s", d.msg);
  const char *kv4[] = {"YOKE_RANK", "0", "YOKE_WORLD", "2", "YOKE_COORD", "h:1", "YOKE_COORD_EMBED", "1", NULL};
  ck_assert_int_eq(detect(kv4, &c, &e, &d), 0);
  ck_assert_int_eq(e.embed_coord, 1);
}
END_TEST

int main(void) {
  Suite *s = suite_create("hostlist");
  TCase *t = tcase_create("all");
  tcase_add_test(t, plain);
  tcase_add_test(t, ranges);
  tcase_add_test(t, product);
  tcase_add_test(t, first);
  tcase_add_test(t, bad);
  tcase_add_test(t, env_single);
  tcase_add_test(t, env_openmpi);
  tcase_add_test(t, env_slurm);
  tcase_add_test(t, env_yoke);
  suite_add_tcase(s, t);
  SRunner *r = srunner_create(s);
  srunner_run_all(r, CK_NORMAL);
  int failed = srunner_ntests_failed(r);
  srunner_free(r);
  return failed ? 1 : 0;
}
