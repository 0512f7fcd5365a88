/* test_sim.c - the simulator (sim/) against numbers worked out by hand from
 * docs/scaling.md's model, its collective model against the calibration
 * points it was fitted to, and the cluster file's errors. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "yk_sim.h"

static char *tmpfile_with(const char *text) {
  static char path[64];
  snprintf(path, sizeof path, "/tmp/yk_test_sim_XXXXXX");
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  return path;
}

/* A made-up cluster: 1 GFLOP/s devices, 1 GB/s memory, one rank per node,
 * a 1 GB/s network with 10 us latency and 0.5 ns per reduced byte. */
static void made_up(yk_sim_cluster *c, int nodes) {
  yk_sim_cluster_default(c);
  c->nodes = nodes;
  c->ranks_per_node = 1;
  c->gflops = 1;
  c->mem_gbs = 1;
  c->inter = (yk_coll_model){.alpha_us = 10, .beta_ns = 1, .gamma_ns = 0.5};
}

/* tiny (L2 C64 NH4 maxT 256 V 256), B 4, T 64, fp32, ZeRO 0, one bucket. */
static void tiny_job(yk_config *cfg) {
  yk_config_defaults(cfg);
  snprintf(cfg->model.name, sizeof cfg->model.name, "tiny");
  cfg->train.micro_batch = 4;
  cfg->train.seq_len = 64;
  cfg->train.grad_accum = 1;
  cfg->optim.zero = 0;
  snprintf(cfg->optim.shard, sizeof cfg->optim.shard, "auto");
  cfg->comm.bucket_kb = 1 << 20; /* one bucket: the whole gradient after backward */
}

/* By hand: parameters 2 x (12 C^2 + 13 C) + Vp C + maxT C + 2 C = 132,864
 * (531,456 bytes); FLOPs per token 6 (12 L C^2 + C V) + 12 L C T = 786,432,
 * x 256 tokens / 1e9 = 0.201326592 s of compute; AdamW 132,864 x 28 B / 1
 * GB/s = 0.003720192 s; the one bucket is issued when backward ends, so all
 * of it is exposed. */
static const double PARAMS = 132864, COMPUTE = 0.201326592, OPT = 0.003720192;

START_TEST(two_nodes_ring) {
  yk_sim_cluster c;
  yk_config cfg;
  made_up(&c, 2);
  tiny_job(&cfg);
  yk_sim_result r;
  yk_diag d = {0};
  ck_assert_int_eq(yk_sim_predict(&c, &cfg, 2, &r, &d), 0);
  double n = PARAMS * 4;
  /* ring on 2 ranks: 2(p-1) alpha + 2(p-1)/p n beta + (p-1)/p n gamma */
  double ar = 2 * 10e-6 + n * 1e-9 + 0.5 * n * 0.5e-9;
  ck_assert_double_eq_tol(r.compute_ms, COMPUTE * 1e3, 1e-9);
  ck_assert_double_eq_tol(r.opt_ms, OPT * 1e3, 1e-9);
  ck_assert_double_eq_tol(r.dp_ms, ar * 1e3, 1e-9);
  ck_assert_double_eq_tol(r.step_ms, (COMPUTE + ar + OPT) * 1e3, 1e-9);
  ck_assert_str_eq(r.dp_algo, "ring");
  ck_assert_int_eq(r.dp, 2);
  ck_assert_double_eq_tol(r.inter_gb, n / 1e9, 1e-12); /* 2(p-1)/p n leaves each node */
  ck_assert_double_eq_tol(r.tokens_per_s, 2 * 256 / (r.step_ms / 1e3), 1e-6);
  /* against one node, whose step has no reduction */
  ck_assert_double_eq_tol(r.efficiency, (COMPUTE + OPT) / (COMPUTE + ar + OPT), 1e-12);
}
END_TEST

START_TEST(nodes_4096_rabenseifner) {
  yk_sim_cluster c;
  yk_config cfg;
  made_up(&c, 4096);
  tiny_job(&cfg);
  yk_sim_result r;
  yk_diag d = {0};
  ck_assert_int_eq(yk_sim_predict(&c, &cfg, 4096, &r, &d), 0);
  double n = PARAMS * 4, p = 4096, a = 10e-6, b = 1e-9, g = 0.5e-9;
  /* ring: 2(p-1) alpha = 81.9 ms of latency; Rabenseifner: 2 log2(p) alpha +
   * 2(p-1)/p n beta + (p-1)/p n gamma; recursive doubling 12 (alpha + n beta + n gamma) */
  double ring = 2 * (p - 1) * a + 2 * (p - 1) / p * n * b + (p - 1) / p * n * g;
  double rhd = 2 * 12 * a + 2 * (p - 1) / p * n * b + (p - 1) / p * n * g;
  double rd = 12 * (a + n * b + n * g);
  ck_assert(rhd < ring && rhd < rd);
  ck_assert_str_eq(r.dp_algo, "tree");
  ck_assert_double_eq_tol(r.dp_ms, rhd * 1e3, 1e-9);
  ck_assert_double_eq_tol(r.step_ms, (COMPUTE + rhd + OPT) * 1e3, 1e-9);
  ck_assert_int_eq(r.ranks, 4096);
  ck_assert_double_eq_tol(r.efficiency, (COMPUTE + OPT) / (COMPUTE + rhd + OPT), 1e-12);
}
END_TEST

/* bench coll --calibrate fits alpha to 8-byte ring all-reduces and beta to
 * 64 MiB ones after the alpha and gamma terms (bench/bench_coll.c); the
 * model it writes must give those times back. */
START_TEST(calibration_points) {
  int p = 2;
  double ts = 23.4e-6, tl = 0.0417, n = 64.0 * 1024 * 1024, gamma = 0.121;
  double alpha = ts / (2.0 * (p - 1)) * 1e6;
  double beta = (tl - 2.0 * (p - 1) * alpha * 1e-6 - (double)(p - 1) / p * n * gamma * 1e-9) / (2.0 * (p - 1) / p * n) * 1e9;
  char text[256];
  snprintf(text, sizeof text, "# test\nalpha_us %.9f\nbeta_ns %.12f\ngamma_ns %.9f\nshm_gbs 10\n", alpha, beta, gamma);
  yk_coll_model m;
  yk_coll_model_default(&m);
  yk_diag d = {0};
  ck_assert_int_eq(yk_coll_model_load(tmpfile_with(text), &m, &d), 0);
  ck_assert_double_eq_tol(yk_coll_model_time(&m, YK_COLL_ALLREDUCE, YK_ALGO_RING, p, n), tl, 1e-9);
  /* the 8-byte point, which the fit took as latency only */
  ck_assert_double_eq_tol(yk_coll_model_time(&m, YK_COLL_ALLREDUCE, YK_ALGO_RING, p, 8), ts, 8 * (beta + gamma) * 1e-9);
  /* and through a cluster whose network is that file: 2 nodes x 1 rank */
  yk_sim_cluster c;
  made_up(&c, 2);
  char set[300];
  snprintf(set, sizeof set, "inter.model_file=%s", tmpfile_with(text));
  ck_assert_int_eq(yk_sim_cluster_set(&c, set, &d), 0);
  ck_assert_double_eq_tol(c.inter.alpha_us, alpha, 1e-6);
  ck_assert_double_eq_tol(c.inter.beta_ns, beta, 1e-9);
}
END_TEST

/* One line naming file, line and key. */
static void bad(const char *text, const char *want1, const char *want2) {
  yk_sim_cluster c;
  yk_sim_cluster_default(&c);
  yk_diag d = {0};
  const char *path = tmpfile_with(text);
  int rc = yk_sim_cluster_load(&c, path, &d);
  ck_assert_int_eq(rc, YK_ECONFIG);
  const char *msg = yk_diag_msg(&d, rc);
  ck_assert_msg(strstr(msg, want1) && strstr(msg, want2), "message '%s' lacks '%s' / '%s'", msg, want1, want2);
  ck_assert_msg(!strchr(msg, '\n'), "message '%s' is more than one line", msg);
  ck_assert_msg(strstr(msg, path), "message '%s' does not name the file", msg);
  unlink(path);
}

START_TEST(cluster_errors) {
  bad("name: x\ndevice:\n  gflopz: 3\n", "device.gflopz", ":3:");
  bad("nodes: -3\n", "nodes=-3", ":1:");
  bad("nodes: 2.5\n", "nodes=2.5", "whole number");
  bad("device:\n  mem_gbs: fast\n", "device.mem_gbs=fast", "not a number");
  bad("intra:\n  gbs: 0\n", "intra.gbs", "above 0");
  bad("sim:\n  recompute: maybe\n", "sim.recompute=maybe", "true or false");
  bad("bogus: 1\n", "unknown cluster key 'bogus'", ":1:");
  /* a cluster without a compute rate is caught before predicting */
  yk_sim_cluster c;
  yk_sim_cluster_default(&c);
  c.mem_gbs = 1;
  c.inter.beta_ns = 1;
  yk_diag d = {0};
  ck_assert_int_eq(yk_sim_cluster_check(&c, &d), YK_ECONFIG);
  ck_assert(strstr(yk_diag_msg(&d, YK_ECONFIG), "device.gflops"));
}
END_TEST

/* The shipped cluster files load, and a 4,096-node curve is fast. */
START_TEST(shipped_files) {
  const char *src = getenv("YK_SOURCE_DIR");
  if (!src) return;
  static const char *const files[] = {"dgx-a100.yaml", "h100-ib.yaml", "tpu-v4.yaml", "this-machine.yaml"};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/cluster-configs/sim/%s", src, files[i]);
    yk_sim_cluster c;
    yk_sim_cluster_default(&c);
    yk_diag d = {0};
    int rc = yk_sim_cluster_load(&c, path, &d);
    ck_assert_msg(rc == 0, "%s: %s", path, yk_diag_msg(&d, rc));
    ck_assert_int_eq(yk_sim_cluster_check(&c, &d), 0);
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/cluster-configs/sim/dgx-a100.yaml", src);
  yk_sim_cluster c;
  yk_sim_cluster_default(&c);
  yk_config cfg;
  yk_config_defaults(&cfg);
  yk_diag d = {0};
  ck_assert_int_eq(yk_sim_cluster_load(&c, path, &d), 0);
  snprintf(path, sizeof path, "%s/cluster-configs/sim/gpt3-175b.yaml", src);
  ck_assert_int_eq(yk_config_load_file(&cfg, path, &d), 0);
  double t0 = yk_now_s();
  yk_sim_result r;
  ck_assert_int_eq(yk_sim_predict(&c, &cfg, 4096, &r, &d), 0);
  ck_assert(yk_now_s() - t0 < 1.0);
  ck_assert(r.efficiency > 0.5 && r.efficiency <= 1.0);
  ck_assert_int_eq(r.dp, 4096 * 8 / 128);
}
END_TEST

int main(void) {
  Suite *s = suite_create("sim");
  TCase *t = tcase_create("sim");
  tcase_add_test(t, two_nodes_ring);
  tcase_add_test(t, nodes_4096_rabenseifner);
  tcase_add_test(t, calibration_points);
  tcase_add_test(t, cluster_errors);
  tcase_add_test(t, shipped_files);
  suite_add_tcase(s, t);
  SRunner *r = srunner_create(s);
  srunner_run_all(r, CK_NORMAL);
  int failed = srunner_ntests_failed(r);
  srunner_free(r);
  return failed ? 1 : 0;
}
