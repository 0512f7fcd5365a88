/* bench_pipe.c - `yoke bench pipeline`: pipeline parallelism on this
 * machine, P = 2 stages as two threads of one process (one compute thread
 * each, the in-process transport), against one rank with two compute threads
 * on the same global batch (B x m sequences per step).
 *
 * Per model, schedule and micro-batch count m: ms/step (the slower stage's
 * median), the measured bubble beside the theory, and the activation memory
 * of the busiest stage beside 1F1B's bound. The measured bubble of a stage is
 * the time it sits blocked inside the step (pipeline receives, send-buffer
 * waits, the tied embedding's sum with the other end: the engine's
 * comm_wait_ms) over that plus its forward and backward time, i.e. its idle
 * share of the span from its first to its last operation; the row shows the
 * mean of the two stages. Theory: (P-1)/(m+P-1) for GPipe and 1F1B,
 * (P-1)/(V*m+P-1) interleaved (V = 2). */
#include "yk_bench.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "yk_collectives.h"
#include "yk_engine.h"
#include "yk_model.h"

#define PIPE_P 2
#define PIPE_V 2 /* chunks per stage of the interleaved rows */

void yk_bench_pipe_opts_default(yk_bench_pipe_opts *o) {
  memset(o, 0, sizeof *o);
  o->models = "d12,deep";
  o->schedules = "gpipe,1f1b,interleaved";
  o->batch = 1;
  o->seq_len = 64;
  o->steps = 3;
  o->warmup = 1;
  int m[] = {2, 4, 8, 16};
  memcpy(o->micro, m, sizeof m);
  o->nmicro = 4;
}

/* One stage's run: its median step figures. */
typedef struct stage_run {
  const yk_config *cfg;
  yk_inproc_world *w;
  int rank;
  int steps, warmup;
  double ms, bubble, busy, wait; /* medians: step, idle share, forward + backward, blocked (ms) */
  uint64_t act_bytes;
  int rc;
  yk_diag d;
} stage_run;

static void *run_stage(void *arg) {
  stage_run *r = arg;
  yk_logger log;
  yk_logger_init(&log, r->rank, YK_LOG_WARN, stderr);
  yk_bootstrap *b = NULL;
  yk_comm *world = NULL, *pp = NULL;
  yk_device *dev = NULL;
  yk_engine *e = NULL;
  yk_layout lay;
  double *ms = calloc((size_t)r->steps, sizeof *ms), *bub = calloc((size_t)r->steps, sizeof *bub);
  double *bz = calloc((size_t)r->steps, sizeof *bz), *wt = calloc((size_t)r->steps, sizeof *wt);
  int rc = ms && bub && bz && wt ? yk_partition_layout(PIPE_P, 1, PIPE_P, r->rank, &lay, &r->d)
                     : yk_errorf(&r->d, YK_ENOMEM, "out of memory for the step times");
  yk_comm_opts co;
  yk_comm_opts_from_config(&co, r->cfg);
  co.transport = "inproc";
  co.log = &log;
  int colour, key;
  yk_partition_layout_group(&lay, YK_GROUP_PP, &colour, &key);
  if (!rc) rc = yk_bootstrap_inproc_create(r->w, r->rank, &b, &r->d);
  if (!rc) rc = yk_comm_create(&co, b, &world, &r->d);
  if (!rc) rc = yk_comm_split(world, colour, key, &pp, &r->d);
  if (!rc) rc = yk_device_cpu_create(1, YK_ISA_AUTO, &dev, &r->d);
  yk_engine_opts eo = {.cfg = r->cfg, .layout = lay, .comms = {.pp = pp}, .dev = dev, .log = &log};
  if (!rc) rc = yk_engine_open(&eo, &e, &r->d);
  for (int s = 0; !rc && s < r->warmup + r->steps; s++) {
    yk_step_stats st;
    if ((rc = yk_engine_step(e, s, &st, &r->d)) != 0 || s < r->warmup) continue;
    double busy = st.fwd_ms + st.bwd_ms;
    ms[s - r->warmup] = st.step_ms;
    bub[s - r->warmup] = st.comm_wait_ms / (busy + st.comm_wait_ms);
    bz[s - r->warmup] = busy;
    wt[s - r->warmup] = st.comm_wait_ms;
  }
  if (!rc) {
    yk_engine_memory mem;
    yk_engine_memory_of(e, &mem);
    r->act_bytes = mem.model;
    r->ms = yk_bench_median(ms, r->steps);
    r->bubble = yk_bench_median(bub, r->steps);
    r->busy = yk_bench_median(bz, r->steps);
    r->wait = yk_bench_median(wt, r->steps);
  }
  yk_engine_close(e);
  yk_comm_destroy(pp);
  yk_comm_destroy(world);
  if (b) yk_bootstrap_destroy(b);
  yk_device_destroy(dev);
  free(ms);
  free(bub);
  free(bz);
  free(wt);
  r->rc = rc;
  return NULL;
}

/* Both stages of one configuration; 0 or the first failure (in d). */
static int run_pipeline(const yk_config *c, int steps, int warmup, stage_run *st, yk_diag *d) {
  yk_inproc_world *w = NULL;
  int rc = yk_inproc_world_create(PIPE_P, &w, d);
  if (rc) return rc;
  pthread_t th[PIPE_P];
  for (int r = 0; r < PIPE_P; r++) {
    st[r] = (stage_run){.cfg = c, .w = w, .rank = r, .steps = steps, .warmup = warmup};
    pthread_create(&th[r], NULL, run_stage, &st[r]);
  }
  for (int r = 0; r < PIPE_P; r++) pthread_join(th[r], NULL);
  yk_inproc_world_destroy(w);
  for (int r = 0; r < PIPE_P && !rc; r++)
    if (st[r].rc) rc = yk_errorf(d, st[r].rc, "stage %d: %s", r, st[r].d.msg);
  return rc;
}

/* The activation memory 1F1B bounds: P micro-batches of the first stage's
 * blocks, from the busiest stage's `peak` over its alive instances. */
static double act_bound(const yk_config *c, uint64_t peak, yk_diag *d) {
  yk_model_config mc;
  yk_pipe_plan p;
  yk_schedule s;
  if (yk_model_config_from(c, &mc, d) || yk_engine_pipe_plan(c, &mc, &p, d) ||
      yk_engine_schedule_pipeline(&p, 0, &s, d))
    return NAN;
  return (double)peak / yk_engine_schedule_max_alive(&s) * PIPE_P;
}

/* "deep": d12's width with twice its blocks; else a preset. */
static int set_model(yk_config *c, const char *name, yk_diag *d) {
  int deep = !strcmp(name, "deep");
  int rc = yk_bench_config_set(c, d, "model.name=%s", deep ? "d12" : name);
  return rc ? rc : yk_bench_config_set(c, d, "model.layers=%d", deep ? 24 : 0);
}

int yk_bench_pipe(const yk_bench_pipe_opts *o) {
  yk_diag d = {0};
  char dir[64] = "/tmp/yk_bench_pipe_XXXXXX", shard[128] = "";
  if (!mkdtemp(dir)) {
    fprintf(stderr, "yoke bench pipeline: cannot create a temporary directory\n");
    return 1;
  }
  snprintf(shard, sizeof shard, "%s/train_000.bin", dir);
  int maxm = 1;
  for (int i = 0; i < o->nmicro; i++) maxm = YK_MAX(maxm, o->micro[i]);
  /* enough windows that no step reads one twice */
  uint64_t ntok = (uint64_t)(o->steps + o->warmup) * (uint64_t)maxm * (uint64_t)o->batch * (uint64_t)o->seq_len + 1;
  int rc = 0, code = 0;
  char models[256], scheds[256];
  snprintf(models, sizeof models, "%s", o->models);
  printf("pipeline parallelism, P=%d stages as threads (1 compute thread each) vs 1 rank with 2 threads on the same "
         "global batch; B=%lld T=%lld; the machine may be loaded: figures are noisy\n",
         PIPE_P, (long long)o->batch, (long long)o->seq_len);
  printf("%-6s %-11s %2s %2s %3s %9s %9s %7s %7s %11s %11s %8s  %s\n", "model", "schedule", "pp", "V", "m", "ms/step",
         "1rank ms", "ratio", "bubble", "theory", "act peak", "1F1B bnd", "busy/blocked ms per stage");
  char *sm = NULL;
  for (char *model = strtok_r(models, ",", &sm); !rc && model; model = strtok_r(NULL, ",", &sm)) {
    /* the model's own vocabulary in the shard */
    yk_config c0;
    yk_model_config mc;
    yk_config_defaults(&c0);
    if ((rc = set_model(&c0, model, &d)) || (rc = yk_model_config_from(&c0, &mc, &d)) ||
        (rc = yk_bench_synthetic_shard(shard, mc.vocab_size, ntok, &d)))
      break;
    for (int i = 0; !rc && i < o->nmicro; i++) {
      int m = o->micro[i];
      yk_config c;
      yk_config_defaults(&c);
      if ((rc = set_model(&c, model, &d)) || (rc = yk_bench_config_set(&c, &d, "data.train=%s", shard)) ||
          (rc = yk_bench_config_set(&c, &d, "train.micro_batch=%lld", (long long)o->batch)) ||
          (rc = yk_bench_config_set(&c, &d, "train.seq_len=%lld", (long long)o->seq_len)) ||
          (rc = yk_bench_config_set(&c, &d, "train.grad_accum=%d", m)) ||
          (rc = yk_bench_config_set(&c, &d, "train.steps=%lld", (long long)(o->steps + o->warmup))) ||
          (rc = yk_bench_config_set(&c, &d, "log.level=warn")))
        break;
      /* the baseline: one rank, two compute threads, the same B x m */
      yk_device *dev2 = NULL;
      double one_ms = NAN;
      yk_bench_step_opts so = {.cfg = &c, .steps = (int)o->steps, .warmup = (int)o->warmup};
      if (!(rc = yk_device_cpu_create(2, YK_ISA_AUTO, &dev2, &d))) {
        so.dev = dev2;
        rc = yk_bench_engine_step_ms(&so, &one_ms, &d);
      }
      yk_device_destroy(dev2);
      snprintf(scheds, sizeof scheds, "%s", o->schedules);
      char *ss = NULL;
      for (char *sch = strtok_r(scheds, ",", &ss); !rc && sch; sch = strtok_r(NULL, ",", &ss)) {
        int V = !strcmp(sch, "interleaved") ? PIPE_V : 1;
        yk_config cp = c;
        if ((rc = yk_bench_config_set(&cp, &d, "parallel.pipeline=%d", PIPE_P)) ||
            (rc = yk_bench_config_set(&cp, &d, "parallel.virtual_stages=%d", V)) ||
            (rc = yk_bench_config_set(&cp, &d, "parallel.schedule=%s", sch)))
          break;
        stage_run st[PIPE_P];
        if ((rc = run_pipeline(&cp, (int)o->steps, (int)o->warmup, st, &d)) != 0) break;
        double ms = YK_MAX(st[0].ms, st[1].ms), bubble = (st[0].bubble + st[1].bubble) / PIPE_P;
        double theory = (double)(PIPE_P - 1) / (V * m + PIPE_P - 1);
        uint64_t peak = YK_MAX(st[0].act_bytes, st[1].act_bytes);
        double bound = act_bound(&cp, st[0].act_bytes, &d);
        printf("%-6s %-11s %2d %2d %3d %9.1f %9.1f %6.2fx %6.1f%% %10.1f%% %8.1f MiB %6.1f MiB  %.0f/%.0f %.0f/%.0f\n",
               model, sch, PIPE_P, V, m, ms, one_ms, ms / one_ms, 100 * bubble, 100 * theory, peak / 1048576.0,
               bound / 1048576.0, st[0].busy, st[0].wait, st[1].busy, st[1].wait);
        if (o->json)
          printf("{\"model\": \"%s\", \"schedule\": \"%s\", \"pp\": %d, \"vstages\": %d, \"microbatches\": %d, "
                 "\"ms_per_step\": %.3f, \"one_rank_2threads_ms\": %.3f, \"bubble_measured\": %.4f, "
                 "\"bubble_theory\": %.4f, \"peak_act_bytes\": %llu, \"act_bound_1f1b_bytes\": %.0f, "
                 "\"stage_busy_ms\": [%.3f, %.3f], \"stage_blocked_ms\": [%.3f, %.3f]}\n",
                 model, sch, PIPE_P, V, m, ms, one_ms, bubble, theory, (unsigned long long)peak, bound, st[0].busy,
                 st[1].busy, st[0].wait, st[1].wait);
        fflush(stdout);
      }
    }
  }
  if (rc) {
    fprintf(stderr, "yoke bench pipeline: %s\n", yk_diag_msg(&d, rc));
    code = rc == YK_ECONFIG ? 2 : 1;
  }
  printf("targets: bubble within 3 points of theory (stages balanced by the cost estimate); PP2 at m=16 within "
         "1.10x of the 1-rank 2-thread step\n");
  unlink(shard);
  rmdir(dir);
  return code;
}
