/* test_generate.c - incremental inference (model/generate.c): the KV
 * cache's logits equal the full forward's at every position on a random
 * tiny model (random LayerNorm weights and biases too, so a swapped or
 * missing tensor shows), greedy and seeded sampling are deterministic, top-k
 * keeps only the k largest, the window slides past max_seq_len, and bad
 * arguments are one clear error. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "yk_model.h"

enum { L = 2, C = 32, NH = 4, MAXT = 16, V = 50 };

static yk_device *dev_;

static yk_model *random_model(int T, uint64_t seed) {
  yk_model_config cfg = {.layers = L, .channels = C, .heads = NH, .max_seq_len = MAXT, .vocab_size = V};
  yk_model *m = NULL;
  yk_diag d = {0};
  ck_assert_msg(yk_model_create(&cfg, 1, T, dev_, &m, &d) == 0, "%s", d.msg);
  yk_rng r;
  yk_rng_seed(&r, seed);
  const yk_tensor_desc *t;
  int n = yk_model_tensors(m, &t);
  float *p = yk_model_params(m);
  for (int i = 0; i < n; i++) {
    /* LayerNorm weights around 1, everything else (biases included) around 0 */
    int lnw = strstr(t[i].name, "ln") && t[i].name[strlen(t[i].name) - 1] == 'w';
    for (size_t k = 0; k < t[i].numel; k++) p[t[i].offset + k] = (lnw ? 1.0f : 0.0f) + 0.3f * yk_rng_normal(&r);
  }
  return m;
}

static void random_tokens(int32_t *tok, int n, uint64_t seed) {
  yk_rng r;
  yk_rng_seed(&r, seed);
  for (int i = 0; i < n; i++) tok[i] = (int32_t)(yk_rng_u64(&r) % V);
}

START_TEST(test_kv_logits_equal_full_forward) {
  yk_model *m = random_model(MAXT, 11);
  int32_t tok[MAXT];
  random_tokens(tok, MAXT, 5);
  yk_diag d = {0};
  ck_assert_msg(yk_model_forward(m, tok, NULL, NULL, &d) == 0, "%s", d.msg);
  const yk_model_config *cfg = yk_model_get_config(m);
  int Vp = cfg->padded_vocab_size;
  float *full = malloc((size_t)MAXT * Vp * sizeof *full);
  memcpy(full, yk_model_logits(m), (size_t)MAXT * Vp * sizeof *full);
  yk_model_kv *kv;
  ck_assert_msg(yk_model_kv_create(m, &kv, &d) == 0, "%s", d.msg);
  double worst = 0, mag = 0;
  for (int t = 0; t < MAXT; t++) {
    ck_assert_msg(yk_model_kv_step(kv, tok[t], &d) == 0, "%s", d.msg);
    ck_assert_int_eq(yk_model_kv_len(kv), t + 1);
    const float *lg = yk_model_kv_logits(kv);
    for (int v = 0; v < V; v++) {
      double e = fabs((double)lg[v] - full[(size_t)t * Vp + v]);
      ck_assert_msg(e <= 1e-5, "position %d token %d: KV %.8f vs full %.8f", t, v, lg[v], full[(size_t)t * Vp + v]);
      worst = e > worst ? e : worst;
      mag = fabs(lg[v]) > mag ? fabs(lg[v]) : mag;
    }
  }
  /* the logits are not trivially small (a model that ignores its input
   * would pass with zeros) */
  ck_assert_msg(mag > 0.5, "largest logit %g", mag);
  printf("KV vs full forward: max |diff| %.2e over %d positions (largest logit %.2f)\n", worst, MAXT, mag);
  /* full cache: one more step is refused; reset starts again at 0 */
  ck_assert_int_eq(yk_model_kv_step(kv, 1, &d), YK_EINVAL);
  ck_assert_msg(strstr(d.msg, "full") != NULL, "%s", d.msg);
  yk_model_kv_reset(kv);
  ck_assert_int_eq(yk_model_kv_step(kv, tok[0], &d), 0);
  ck_assert_float_eq_tol(yk_model_kv_logits(kv)[3], full[3], 1e-5);
  yk_model_kv_destroy(kv);
  free(full);
  yk_model_destroy(m);
}
END_TEST

typedef struct collect {
  int32_t tok[256];
  int n;
} collect;

static int collect_tok(void *ctx, int32_t t, yk_diag *d) {
  (void)d;
  collect *c = ctx;
  if (c->n < 256) c->tok[c->n++] = t;
  return 0;
}

static collect gen(yk_model_kv *kv, const int32_t *prompt, int np, int n, float temp, int k, uint64_t seed,
                   yk_model_generate_stats *st) {
  collect c = {.n = 0};
  yk_model_sample_opts o = {.temperature = temp, .top_k = k, .seed = seed};
  yk_diag d = {0};
  ck_assert_msg(yk_model_generate(kv, prompt, np, n, &o, collect_tok, &c, st, &d) == 0, "%s", d.msg);
  ck_assert_int_eq(c.n, n);
  return c;
}

START_TEST(test_greedy_is_full_forward_argmax) {
  /* greedy continuation of a 3-token prompt to 12 tokens: each generated
   * token is the argmax of the full forward over the tokens before it */
  yk_model *m = random_model(MAXT, 21);
  yk_model_kv *kv;
  yk_diag d = {0};
  ck_assert_msg(yk_model_kv_create(m, &kv, &d) == 0, "%s", d.msg);
  int32_t seq[MAXT] = {7, 3, 41};
  collect g = gen(kv, seq, 3, MAXT - 3, 0.0f, 0, 1, NULL);
  memcpy(seq + 3, g.tok, (size_t)(MAXT - 3) * sizeof *seq);
  ck_assert_msg(yk_model_forward(m, seq, NULL, NULL, &d) == 0, "%s", d.msg);
  const float *lg = yk_model_logits(m);
  int Vp = yk_model_get_config(m)->padded_vocab_size;
  for (int t = 2; t < MAXT - 1; t++) {
    int best = 0;
    for (int v = 1; v < V; v++)
      if (lg[(size_t)t * Vp + v] > lg[(size_t)t * Vp + best]) best = v;
    ck_assert_msg(seq[t + 1] == best, "position %d: generated %d, full-forward argmax %d", t + 1, seq[t + 1], best);
  }
  /* top-k 1 is greedy at any temperature */
  collect k1 = gen(kv, seq, 3, MAXT - 3, 1.5f, 1, 99, NULL);
  ck_assert_mem_eq(k1.tok, g.tok, sizeof(int32_t) * (MAXT - 3));
  yk_model_kv_destroy(kv);
  yk_model_destroy(m);
}
END_TEST

START_TEST(test_seed_deterministic_and_window_slides) {
  yk_model *m = random_model(1, 31);
  yk_model_kv *kv;
  yk_diag d = {0};
  ck_assert_msg(yk_model_kv_create(m, &kv, &d) == 0, "%s", d.msg);
  int32_t prompt[2] = {1, 2};
  yk_model_generate_stats st;
  /* 60 tokens through a 16-position window: 2 + 59 fed positions; slides at
   * the 17th, 25th, 33rd, ... token fed (every maxT/2 = 8 after the first 16) */
  collect a = gen(kv, prompt, 2, 60, 1.0f, 10, 1234, &st);
  ck_assert_int_eq(st.generated, 60);
  ck_assert_int_eq(st.slides, (2 + 59 - MAXT + 7) / 8);
  collect b = gen(kv, prompt, 2, 60, 1.0f, 10, 1234, NULL);
  ck_assert_mem_eq(a.tok, b.tok, sizeof(int32_t) * 60);
  collect c = gen(kv, prompt, 2, 60, 1.0f, 10, 1235, NULL);
  ck_assert_msg(memcmp(a.tok, c.tok, sizeof(int32_t) * 60) != 0, "seeds 1234 and 1235 gave the same 60 tokens");
  /* a prompt longer than the window keeps its last maxT tokens */
  int32_t longp[40];
  random_tokens(longp, 40, 3);
  collect e = gen(kv, longp, 40, 5, 0.0f, 0, 0, &st);
  ck_assert_int_eq(st.prompt_dropped, 40 - MAXT);
  collect f = gen(kv, longp + 40 - MAXT, MAXT, 5, 0.0f, 0, 0, NULL);
  ck_assert_mem_eq(e.tok, f.tok, sizeof(int32_t) * 5);
  yk_model_kv_destroy(kv);
  yk_model_destroy(m);
}
END_TEST

START_TEST(test_sample_pick) {
  float lg[8] = {0.1f, 3.0f, -1.0f, 2.0f, 2.5f, 0.0f, -2.0f, 1.0f};
  yk_rng r;
  yk_rng_seed(&r, 1);
  yk_diag d = {0};
  int32_t t;
  yk_model_sample_opts g = {.temperature = 0};
  ck_assert_int_eq(yk_model_sample_pick(lg, 8, &g, &r, &t, &d), 0);
  ck_assert_int_eq(t, 1);
  /* top-3: only tokens 1, 4, 3; at temperature 1 all three appear */
  yk_model_sample_opts k3 = {.temperature = 1.0f, .top_k = 3};
  int seen[8] = {0};
  for (int i = 0; i < 2000; i++) {
    ck_assert_int_eq(yk_model_sample_pick(lg, 8, &k3, &r, &t, &d), 0);
    seen[t]++;
  }
  for (int v = 0; v < 8; v++) ck_assert_msg((seen[v] > 0) == (v == 1 || v == 3 || v == 4), "token %d drawn %d times", v, seen[v]);
  /* frequencies follow softmax: p(1)/p(3) = e^1 */
  double ratio = (double)seen[1] / seen[3];
  ck_assert_msg(ratio > 2.2 && ratio < 3.3, "p(1)/p(3) = %g, expected about 2.72", ratio);
  yk_model_sample_opts bad = {.temperature = -1};
  ck_assert_int_eq(yk_model_sample_pick(lg, 8, &bad, &r, &t, &d), YK_EINVAL);
  ck_assert_msg(strstr(d.msg, "temperature -1") != NULL, "%s", d.msg);
}
END_TEST

START_TEST(test_generate_errors) {
  yk_model *m = random_model(1, 41);
  yk_model_kv *kv;
  yk_diag d = {0};
  ck_assert_msg(yk_model_kv_create(m, &kv, &d) == 0, "%s", d.msg);
  yk_model_sample_opts o = {0};
  collect c = {.n = 0};
  int32_t p[3] = {1, V + 4, 2};
  ck_assert_int_eq(yk_model_generate(kv, p, 3, 4, &o, collect_tok, &c, NULL, &d), YK_EINVAL);
  ck_assert_msg(strstr(d.msg, "token 54 at position 1") && strstr(d.msg, "[0, 50)"), "%s", d.msg);
  ck_assert_int_eq(yk_model_generate(kv, p, 1, 0, &o, collect_tok, &c, NULL, &d), YK_EINVAL);
  ck_assert_msg(strstr(d.msg, "0 must be >= 1") != NULL, "%s", d.msg);
  ck_assert_int_eq(yk_model_generate(kv, p, 0, 3, &o, collect_tok, &c, NULL, &d), YK_EINVAL);
  ck_assert_int_eq(yk_model_kv_step(kv, -1, &d), YK_EINVAL);
  ck_assert_msg(strstr(d.msg, "token -1") != NULL, "%s", d.msg);
  ck_assert_int_eq(c.n, 0);
  yk_model_kv_destroy(kv);
  yk_model_destroy(m);
}
END_TEST

int main(void) {
  yk_diag d = {0};
  if (yk_device_cpu_create(2, YK_ISA_AUTO, &dev_, &d) != 0) {
    fprintf(stderr, "device: %s\n", d.msg);
    return 1;
  }
  Suite *s = suite_create("generate");
  TCase *tc = tcase_create("generate");
  tcase_add_test(tc, test_kv_logits_equal_full_forward);
  tcase_add_test(tc, test_greedy_is_full_forward_argmax);
  tcase_add_test(tc, test_seed_deterministic_and_window_slides);
  tcase_add_test(tc, test_sample_pick);
  tcase_add_test(tc, test_generate_errors);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  yk_device_destroy(dev_);
  return failed ? 1 : 0;
}
