/* ckpt_crash_driver - test harness for the ckpt library (not a product
 * feature). Saves a few-MB synthetic state whose content is a function of
 * the step, so that a checker can tell a correct checkpoint from a wrong one:
 *
 *   ckpt_crash_driver save DIR [--steps N] [--async] [--world W]
 *       saves steps latest+1, latest+2, ... (forever unless --steps), W ranks
 *       simulated in-process, keep 2; meant to be killed with -9 at random.
 *   ckpt_crash_driver check DIR
 *       opens the newest committed checkpoint, verifies every checksum and
 *       compares every arena and blob with the regenerated state of its step.
 *       Exit 0 ok, 3 no committed checkpoint yet, 1 anything wrong.
 *   ckpt_crash_driver shard DIR --rank R --world W --step S
 *   ckpt_crash_driver commit DIR --world W --step S
 *       one rank's phase 1 / rank 0's phase 2, for runs with real processes.
 *   ckpt_crash_driver gpt2 DIR
 *       writes a tiny GPT-2 checkpoint (L=2 C=8 V=13 Vp=128 maxT=8 NH=2, the
 *       model's tensor table, params[i] = i / 1000) at world 2, step 5, for
 *       the export tests. */
#include "yk_ckpt.h"
#include "yk_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N32 (600 * 1000 + 17)

typedef struct {
  float *p, *m, *v;
  uint16_t *h;
  yk_tensor_desc t[2];
  char loader[64];
} synth;

static void synth_fill(synth *s, int64_t step) {
  yk_rng r;
  yk_rng_seed(&r, (uint64_t)step * 7919u + 1);
  for (size_t i = 0; i < N32; i++) {
    s->p[i] = 0.02f * yk_rng_normal(&r);
    s->m[i] = 0.001f * yk_rng_normal(&r);
    s->v[i] = 1e-6f * yk_rng_uniform(&r);
    s->h[i] = yk_f32_to_bf16(s->p[i]);
  }
  snprintf(s->loader, sizeof s->loader, "{\"shard\":0,\"pos\":%lld}", (long long)step * 1024);
  memset(s->t, 0, sizeof s->t);
  snprintf(s->t[0].name, 48, "wte");
  s->t[0].numel = N32 / 2;
  s->t[0].ndim = 1;
  s->t[0].shape[0] = N32 / 2;
  snprintf(s->t[1].name, 48, "rest");
  s->t[1].offset = N32 / 2;
  s->t[1].numel = N32 - N32 / 2;
  s->t[1].ndim = 1;
  s->t[1].shape[0] = N32 - N32 / 2;
}

static yk_ckpt_state *synth_state(synth *s, int64_t step, int rank) {
  yk_ckpt_state *st;
  yk_diag d = {0};
  yk_ckpt_state_create(&st);
  yk_ckpt_state_add_arena(st, "params", YK_DT_F32, s->p, N32, s->t, 2, &d);
  yk_ckpt_state_add_arena(st, "params16", YK_DT_BF16, s->h, N32, s->t, 2, &d);
  yk_ckpt_state_add_arena(st, "m", YK_DT_F32, s->m, N32, s->t, 2, &d);
  yk_ckpt_state_add_arena(st, "v", YK_DT_F32, s->v, N32, s->t, 2, &d);
  yk_ckpt_state_set_blob(st, "loader", s->loader, strlen(s->loader), 0, &d);
  char rng[64];
  snprintf(rng, sizeof rng, "rank %d step %lld", rank, (long long)step);
  yk_ckpt_state_set_blob(st, "rng", rng, strlen(rng), 1, &d);
  yk_ckpt_state_set_blob(st, "step", &step, sizeof step, 0, &d);
  return st;
}

static int64_t latest_step(const char *dir) {
  yk_ckpt_entry *e;
  int n;
  int64_t best = 0;
  if (yk_ckpt_list(dir, &e, &n, NULL)) return 0;
  for (int i = 0; i < n; i++)
    if (e[i].committed && e[i].step > best) best = e[i].step;
  free(e);
  return best;
}

static void synth_alloc(synth *s) {
  s->p = malloc(N32 * 4);
  s->m = malloc(N32 * 4);
  s->v = malloc(N32 * 4);
  s->h = malloc(N32 * 2);
}

static void synth_free(synth *s) {
  free(s->p);
  free(s->m);
  free(s->v);
  free(s->h);
}

static int do_save(const char *dir, int64_t steps, int async, int world) {
  synth s;
  synth_alloc(&s);
  yk_diag d = {0};
  int64_t start = latest_step(dir) + 1;
  for (int64_t step = start; steps < 0 || step < start + steps; step++) {
    synth_fill(&s, step);
    yk_ckpt_opts o;
    yk_ckpt_opts_default(&o);
    o.dir = dir;
    o.world = world;
    o.keep = 2;
    o.threads = 2;
    int rc = 0;
    int use_async = async == 2 ? (int)(step & 1) : async;
    if (use_async) {
      yk_ckpt_writer *w[8];
      yk_ckpt_state *st[8];
      for (int r = 0; r < world && !rc; r++) {
        o.rank = r;
        st[r] = synth_state(&s, step, r);
        rc = yk_ckpt_writer_create(&o, &w[r], &d);
        if (!rc) rc = yk_ckpt_writer_save(w[r], st[r], step, 0, &d);
      }
      for (int r = 0; r < world && !rc; r++) rc = yk_ckpt_writer_wait(w[r], yk_deadline_in_ms(60000), &d);
      if (!rc) rc = yk_ckpt_writer_commit(w[0], &d);
      if (!rc) rc = yk_ckpt_writer_wait(w[0], yk_deadline_in_ms(60000), &d);
      for (int r = 0; r < world; r++) {
        yk_ckpt_writer_free(w[r]);
        yk_ckpt_state_free(st[r]);
      }
    } else {
      for (int r = 0; r < world && !rc; r++) {
        o.rank = r;
        yk_ckpt_state *st = synth_state(&s, step, r);
        rc = yk_ckpt_write_shard(&o, st, step, NULL, &d);
        yk_ckpt_state_free(st);
      }
      o.rank = 0;
      if (!rc) rc = yk_ckpt_commit(&o, step, &d);
    }
    if (rc) {
      fprintf(stderr, "ckpt_crash_driver: step %lld: %s\n", (long long)step, yk_diag_msg(&d, rc));
      synth_free(&s);
      return 1;
    }
  }
  synth_free(&s);
  return 0;
}

static int do_check(const char *dir) {
  yk_ckpt_reader *r = NULL;
  yk_diag d = {0};
  int rc = yk_ckpt_reader_open(dir, NULL, &r, &d);
  if (rc == YK_ENOTFOUND && latest_step(dir) == 0) {
    printf("no committed checkpoint yet\n");
    return 3;
  }
  if (!rc) rc = yk_ckpt_reader_verify(r, &d);
  if (rc) {
    fprintf(stderr, "check: %s\n", yk_diag_msg(&d, rc));
    yk_ckpt_reader_close(r);
    return 1;
  }
  int64_t step = yk_ckpt_reader_step(r);
  synth want, got;
  synth_alloc(&want);
  synth_alloc(&got);
  synth_fill(&want, step);
  synth_fill(&got, step + 1); /* tensor tables; the data gets overwritten */
  yk_ckpt_state *st = synth_state(&got, step, 0);
  int bad = 0;
  rc = yk_ckpt_restore(r, st, &d);
  if (rc || memcmp(want.p, got.p, N32 * 4) || memcmp(want.m, got.m, N32 * 4) || memcmp(want.v, got.v, N32 * 4) ||
      memcmp(want.h, got.h, N32 * 2)) {
    fprintf(stderr, "check: step %lld: state differs from the one saved: %s\n", (long long)step,
            rc ? yk_diag_msg(&d, rc) : "content");
    bad = 1;
  }
  void *b = NULL;
  size_t len;
  if (!bad && (yk_ckpt_reader_blob(r, "loader", -1, &b, &len, &d) || strcmp(b, want.loader))) {
    fprintf(stderr, "check: loader blob wrong\n");
    bad = 1;
  }
  free(b);
  for (int q = 0; !bad && q < yk_ckpt_reader_world(r); q++) {
    char exp[64];
    b = NULL;
    snprintf(exp, sizeof exp, "rank %d step %lld", q, (long long)step);
    if (yk_ckpt_reader_blob(r, "rng", q, &b, &len, &d) || strcmp(b, exp)) {
      fprintf(stderr, "check: rng blob of rank %d wrong\n", q);
      bad = 1;
    }
    free(b);
  }
  if (!bad) printf("ok step %lld world %d\n", (long long)step, yk_ckpt_reader_world(r));
  yk_ckpt_state_free(st);
  yk_ckpt_reader_close(r);
  synth_free(&want);
  synth_free(&got);
  return bad;
}

/* The model's own tensor table (layer-major arena), as yoke train saves it. */
static int do_gpt2(const char *dir) {
  yk_model_config mc = {.layers = 2, .channels = 8, .heads = 2, .max_seq_len = 8, .vocab_size = 13};
  yk_tensor_desc *t;
  int nt;
  yk_diag d = {0};
  if (yk_model_config_finish(&mc, &d) || yk_model_tensor_table(&mc, &t, &nt, &d)) {
    fprintf(stderr, "gpt2: %s\n", d.msg);
    return 1;
  }
  size_t off = yk_model_config_num_params(&mc); /* padding rows of wte included */
  float *p = malloc(off * 4);
  for (size_t i = 0; i < off; i++) p[i] = (float)i / 1000.0f;
  int rc = 0;
  for (int r = 0; r < 2 && !rc; r++) {
    yk_ckpt_state *st;
    yk_ckpt_state_create(&st);
    rc = yk_ckpt_state_add_arena(st, "params", YK_DT_F32, p, off, t, nt, &d);
    if (!rc) rc = yk_ckpt_state_set_model_json(st, "{\"vocab_size\": 13, \"heads\": 2, \"name\": \"tiny-test\"}", &d);
    if (!rc) rc = yk_ckpt_state_set_config_yaml(st, "model:\n  name: tiny-test\n", &d);
    yk_ckpt_opts o;
    yk_ckpt_opts_default(&o);
    o.dir = dir;
    o.rank = r;
    o.world = 2;
    if (!rc) rc = yk_ckpt_write_shard(&o, st, 5, NULL, &d);
    yk_ckpt_state_free(st);
  }
  yk_ckpt_opts o;
  yk_ckpt_opts_default(&o);
  o.dir = dir;
  o.world = 2;
  if (!rc) rc = yk_ckpt_commit(&o, 5, &d);
  free(p);
  free(t);
  if (rc) fprintf(stderr, "gpt2: %s\n", yk_diag_msg(&d, rc));
  return rc ? 1 : 0;
}

static int do_shard(const char *dir, int rank, int world, int64_t step, int commit) {
  yk_diag d = {0};
  yk_ckpt_opts o;
  yk_ckpt_opts_default(&o);
  o.dir = dir;
  o.rank = rank;
  o.world = world;
  o.keep = 2;
  o.threads = 1;
  int rc;
  if (commit) {
    rc = yk_ckpt_commit(&o, step, &d);
  } else {
    synth s;
    synth_alloc(&s);
    synth_fill(&s, step);
    yk_ckpt_state *st = synth_state(&s, step, rank);
    rc = yk_ckpt_write_shard(&o, st, step, NULL, &d);
    yk_ckpt_state_free(st);
    synth_free(&s);
  }
  if (rc) fprintf(stderr, "ckpt_crash_driver: %s\n", yk_diag_msg(&d, rc));
  return rc ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: ckpt_crash_driver save|check|gpt2 DIR [--steps N] [--async|--mixed] [--world W]\n");
    return 2;
  }
  int64_t steps = -1, step = 1;
  int async = 0, world = 2, rank = 0;
  for (int i = 3; i < argc; i++) {
    if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoll(argv[++i]);
    else if (!strcmp(argv[i], "--async")) async = 1;
    else if (!strcmp(argv[i], "--mixed")) async = 2;
    else if (!strcmp(argv[i], "--world") && i + 1 < argc) world = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--rank") && i + 1 < argc) rank = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--step") && i + 1 < argc) step = atoll(argv[++i]);
    else {
      fprintf(stderr, "ckpt_crash_driver: unknown option '%s'\n", argv[i]);
      return 2;
    }
  }
  if (world < 1 || world > 8 || rank < 0 || rank >= world) return 2;
  if (!strcmp(argv[1], "shard")) return do_shard(argv[2], rank, world, step, 0);
  if (!strcmp(argv[1], "commit")) return do_shard(argv[2], 0, world, step, 1);
  if (!strcmp(argv[1], "save")) return do_save(argv[2], steps, async, world);
  if (!strcmp(argv[1], "check")) return do_check(argv[2]);
  if (!strcmp(argv[1], "gpt2")) return do_gpt2(argv[2]);
  fprintf(stderr, "ckpt_crash_driver: unknown mode '%s'\n", argv[1]);
  return 2;
}
