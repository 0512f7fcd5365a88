/* bench_ckpt.c - `yoke bench ckpt`: how fast checkpoints are and what they
 * cost the training loop, on the state of a GPT-2 124M (the model's tensor
 * table; --layers, --channels, --vocab change the shape) with synthetic values:
 *   params   f32  master weights ~ N(0, 0.02) (LayerNorm weights ~1, biases ~0)
 *   params16 bf16 the 16-bit copy of params
 *   m, v     f32  AdamW moments after --adam-steps (default 3) fake steps with
 *                 N(0, 1e-3) gradients
 * (124.5M params x (4+2+4+4) bytes = 1.74 GB raw for world 1).
 *
 * Why 3 fake steps: m and v compress like those of real runs then. Real
 * checkpoints of byte-level GPT-2s trained on text (L4 C256 and L4 C768,
 * 150-300 steps, betas 0.9/0.95 and 0.9/0.999) gave v ratios 1.218-1.253
 * and m 1.180-1.201 (params 1.197); the synthetic v is 1.203 after 1 fake
 * step, 1.240 after 3, 1.25 after 5-10, 1.29 after 30 and 1.36 after 100: iid
 * gradients of one scale make v concentrate with every step, where real
 * per-parameter gradient scales differ and keep v spread. m is 1.196-1.200
 * at any count. docs/checkpoint-format.md has the runs.
 *
 * Figures: save GB/s (raw bytes / time of a synchronous save: shard write,
 * fsync of the file and directory, and at world 1 the commit: manifest,
 * rename, fsync; median of --repeat saves), load GB/s (read back every
 * arena, checksums verified; warm page cache, and cold: the shard files
 * evicted from the page cache first), the compression ratio per arena, and
 * the stall per asynchronous save as a fraction of a step: the snapshot copy
 * (default mode) and the wait at yk_ckpt_writer_release when the copy is
 * deferred into forward/backward (simulated by spinning the main thread for
 * 2/3 of a step). The step is measured (yoke's own step of this model on one
 * rank, measure_step) unless --step-ms gives one, e.g. the ms/step of a real
 * run; the output says which. */
#define _GNU_SOURCE
#include "yk_bench.h"
#include "yk_ckpt.h"
#include "yk_common.h"
#include "yk_model.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  float *p, *m, *v;
  uint16_t *h;
  size_t n;
  const yk_tensor_desc *t;
  int nt;
  int adam_steps; /* fake AdamW steps that make m and v */
  int worker, workers;
} fill_ctx;

/* Per-tensor realistic values: LayerNorm weights ~1, biases ~0, matrices
 * N(0, 0.02); then adam_steps AdamW steps (lr 6e-4, betas 0.9/0.95) with
 * N(0, 1e-3) gradients. Each worker fills a contiguous share with its own
 * RNG. */
static void *fill_main(void *arg) {
  fill_ctx *c = arg;
  size_t lo = c->n * (size_t)c->worker / (size_t)c->workers, hi = c->n * (size_t)(c->worker + 1) / (size_t)c->workers;
  yk_rng r;
  yk_rng_seed(&r, 1234 + (uint64_t)c->worker);
  int ti = 0;
  for (size_t i = lo; i < hi; i++) {
    while (ti + 1 < c->nt && c->t[ti].offset + c->t[ti].numel <= i) ti++;
    const char *name = c->t[ti].name, *dot = strrchr(name, '.');
    if (dot) name = dot + 1; /* "h3.ln1w" -> "ln1w" */
    int is_lnw = !strcmp(name, "ln1w") || !strcmp(name, "ln2w") || !strcmp(name, "lnfw");
    int is_bias = name[strlen(name) - 1] == 'b';
    float w = is_lnw ? 1.0f + 0.01f * yk_rng_normal(&r) : is_bias ? 0.002f * yk_rng_normal(&r) : 0.02f * yk_rng_normal(&r);
    float m = 0, v = 0, c1 = 1, c2 = 1; /* c1, c2: beta1^s, beta2^s */
    for (int s = 1; s <= c->adam_steps; s++) {
      float g = 1e-3f * yk_rng_normal(&r);
      m = 0.9f * m + 0.1f * g;
      v = 0.95f * v + 0.05f * g * g;
      c1 *= 0.9f;
      c2 *= 0.95f;
      w -= 6e-4f * (m / (1.0f - c1)) / (sqrtf(v / (1.0f - c2)) + 1e-8f);
    }
    c->p[i] = w;
    c->m[i] = m;
    c->v[i] = v;
    c->h[i] = yk_f32_to_bf16(w);
  }
  return NULL;
}

static int rm_cb(const char *p, const struct stat *sb, int fl, struct FTW *ftw) {
  (void)sb;
  (void)ftw;
  return fl == FTW_DP ? rmdir(p) : unlink(p);
}

/* CPU time of the whole process (all threads): a load-independent cost
 * figure on a shared machine, where wall-clock GB/s depends on neighbours. */
static double cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double loadavg1(void) {
  double l = -1;
  FILE *f = fopen("/proc/loadavg", "r");
  if (f) {
    if (fscanf(f, "%lf", &l) != 1) l = -1;
    fclose(f);
  }
  return l;
}

static void spin_s(double s) {
  double end = yk_now_s() + s;
  volatile double x = 1;
  while (yk_now_s() < end)
    for (int i = 0; i < 1000; i++) x = x * 1.0000001 + 1e-9;
}

/* Put the shard files of step-N into the page cache (read them once) or
 * evict them from it (POSIX_FADV_DONTNEED drops clean pages: the files are
 * fsynced), so that the load figures say which case they measure. */
static void cache_step_files(const char *dir, int64_t step, int warm) {
  char sd[4200], path[4500];
  snprintf(sd, sizeof sd, "%s/step-%08lld", dir, (long long)step);
  DIR *dh = opendir(sd);
  if (!dh) return;
  static char buf[1 << 20];
  struct dirent *de;
  while ((de = readdir(dh))) {
    if (de->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "%s/%s", sd, de->d_name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    if (warm) {
      while (read(fd, buf, sizeof buf) > 0) {
      }
    } else {
      fdatasync(fd);
      posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    }
    close(fd);
  }
  closedir(dh);
}

/* Disk probe: what the disk itself gives, reading the step's files with
 * O_DIRECT in 4 MiB blocks, 8 reads in flight (the checkpoint reader's
 * depth), nothing decoded. A cold load cannot beat this times the
 * compression ratio; the disk under a VM wanders, so each cold load is
 * paired with a probe taken just before it. Returns GB/s of file bytes, or
 * 0 if O_DIRECT is refused (tmpfs) or nothing could be read. */
typedef struct dprobe {
  int fd;
  uint64_t size;
  _Atomic uint64_t next; /* next block index */
  _Atomic uint64_t bytes;
} dprobe;

static void *dprobe_main(void *arg) {
  dprobe *p = arg;
  const size_t bs = 4u << 20;
  void *buf = NULL;
  if (posix_memalign(&buf, 4096, bs)) return NULL;
  for (;;) {
    uint64_t k = atomic_fetch_add(&p->next, 1);
    if (k * bs >= p->size) break;
    ssize_t r = pread(p->fd, buf, bs, (off_t)(k * bs));
    if (r <= 0) break;
    atomic_fetch_add(&p->bytes, (uint64_t)r);
  }
  free(buf);
  return NULL;
}

static double disk_probe(const char *dir, int64_t step) {
  char sd[4200], path[4500];
  snprintf(sd, sizeof sd, "%s/step-%08lld", dir, (long long)step);
  DIR *dh = opendir(sd);
  if (!dh) return 0;
  uint64_t total = 0;
  double t = 0;
  struct dirent *de;
  while ((de = readdir(dh))) {
    if (de->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "%s/%s", sd, de->d_name);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
      if (fd >= 0) close(fd);
      continue;
    }
    dprobe p = {.fd = fd, .size = (uint64_t)sb.st_size};
    pthread_t th[8];
    int started = 0;
    double t0 = yk_now_s();
    for (int i = 0; i < 8; i++)
      if (pthread_create(&th[i], NULL, dprobe_main, &p) == 0) started++;
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    t += yk_now_s() - t0;
    total += atomic_load(&p.bytes);
    close(fd);
  }
  closedir(dh);
  return total && t > 0 ? (double)total / t / 1e9 : 0;
}

/* The training step the stall is a fraction of, measured: yoke's own step
 * (yk_engine_step) of this model on one rank with every core, at B and T of
 * --batch/--seq-len (default: what `yoke train` runs with, train.micro_batch
 * and train.seq_len), the median of STEP_TIMED steps after one warm-up. A
 * rank of a W-rank job computes the same per-rank batch, plus the wait on
 * the all-reduce (longer) and with ZeRO-1 only 1/W of AdamW (shorter). */
enum { STEP_WARMUP = 1, STEP_TIMED = 3 };

static int measure_step(const yk_bench_ckpt_opts *o, const yk_model_config *mc, int *B, int *T, int *threads,
                        double *ms, yk_diag *d) {
  yk_config c;
  yk_config_defaults(&c);
  int rc;
  if ((rc = yk_bench_config_set(&c, d, "model.name=d12")) != 0 ||
      (rc = yk_bench_config_set(&c, d, "model.layers=%d", mc->layers)) != 0 ||
      (rc = yk_bench_config_set(&c, d, "model.channels=%d", mc->channels)) != 0 ||
      (rc = yk_bench_config_set(&c, d, "model.heads=%d", mc->heads)) != 0 ||
      (rc = yk_bench_config_set(&c, d, "model.vocab_size=%d", mc->vocab_size)) != 0 ||
      (rc = yk_bench_config_set(&c, d, "model.max_seq_len=%d", mc->max_seq_len)) != 0 ||
      (o->batch && (rc = yk_bench_config_set(&c, d, "train.micro_batch=%lld", (long long)o->batch)) != 0) ||
      (o->seq_len && (rc = yk_bench_config_set(&c, d, "train.seq_len=%lld", (long long)o->seq_len)) != 0))
    return rc;
  *B = (int)c.train.micro_batch;
  *T = (int)c.train.seq_len;
  *threads = yk_cpu_count();
  yk_device *dev = NULL;
  if ((rc = yk_device_cpu_create(*threads, YK_ISA_AUTO, &dev, d)) != 0) return rc;
  yk_bench_step_opts so = {.cfg = &c, .dev = dev, .warmup = STEP_WARMUP, .steps = STEP_TIMED};
  rc = yk_bench_engine_step_ms(&so, ms, d);
  yk_device_destroy(dev);
  return rc;
}

void yk_bench_ckpt_opts_default(yk_bench_ckpt_opts *o) {
  *o = (yk_bench_ckpt_opts){.layers = 12, .channels = 768, .vocab = 50257, .world = 1, .level = 1, .threads = 0,
                            .step_ms = 0, .adam_steps = 3, .repeat = 3};
}

int yk_bench_ckpt(const yk_bench_ckpt_opts *opt) {
  int64_t L = opt->layers, world = opt->world, level = opt->level, threads = opt->threads, C = opt->channels,
          repeat = opt->repeat;
  double step_ms = (double)opt->step_ms;
  const char *dir_opt = opt->dir;
  int json_out = opt->json, buffered = opt->buffered;
  if (repeat < 1 || repeat > 64 || world < 1 || opt->step_ms < 0 || opt->adam_steps < 1) {
    fprintf(stderr, "yoke bench ckpt: repeat %lld, world %lld, step %lld ms and %lld AdamW steps do not fit: repeat in "
            "[1, 64], world and AdamW steps >= 1, step >= 0 (0: measure it)\n", (long long)repeat, (long long)world,
            (long long)opt->step_ms, (long long)opt->adam_steps);
    return 2;
  }
  /* the model's own tensor table (layer-major arena), as yoke train saves it */
  yk_model_config mc = {.layers = (int)L, .channels = (int)C, .heads = C % 64 ? 1 : (int)(C / 64), .max_seq_len = 1024,
                        .vocab_size = (int)opt->vocab};
  yk_tensor_desc *t = NULL;
  int nt = 0;
  yk_diag d = {0};
  int rc = yk_model_config_finish(&mc, &d);
  if (!rc) rc = yk_model_tensor_table(&mc, &t, &nt, &d);
  if (rc) {
    fprintf(stderr, "yoke bench ckpt: %s\n", yk_diag_msg(&d, rc));
    return 2;
  }
  size_t n = yk_model_config_num_params(&mc);
  /* the step first, before the benchmark's own copy of the state is allocated */
  int step_B = 0, step_T = 0, step_threads = 0, measured = step_ms == 0;
  if (measured && (rc = measure_step(opt, &mc, &step_B, &step_T, &step_threads, &step_ms, &d)) != 0) {
    fprintf(stderr, "yoke bench ckpt: measuring the training step failed (give one with --step-ms): %s\n",
            yk_diag_msg(&d, rc));
    free(t);
    return 1;
  }
  char model_json[128];
  snprintf(model_json, sizeof model_json, "{\"vocab_size\": %d, \"heads\": %d}", mc.vocab_size, mc.heads);

  char dir[4096];
  int own_dir = !dir_opt;
  if (dir_opt) snprintf(dir, sizeof dir, "%s", dir_opt);
  else {
    snprintf(dir, sizeof dir, "/tmp/yk_bench_ckpt.XXXXXX");
    if (!mkdtemp(dir)) {
      perror("yoke bench ckpt: mkdtemp");
      free(t);
      return 1;
    }
  }
  fill_ctx fc = {.n = n, .t = t, .nt = nt, .adam_steps = (int)opt->adam_steps};
  fc.p = yk_alloc(n * 4);
  fc.m = yk_alloc(n * 4);
  fc.v = yk_alloc(n * 4);
  fc.h = yk_alloc(n * 2);
  yk_ckpt_state *s = NULL;
  yk_ckpt_reader *r = NULL;
  yk_ckpt_writer *w = NULL;
  json_t *man = NULL;
  void *back = NULL;
  if (!fc.p || !fc.m || !fc.v || !fc.h) {
    fprintf(stderr, "yoke bench ckpt: cannot allocate %.2f GB of state; try --layers 2\n", (double)n * 14 / 1e9);
    rc = 1;
    goto out;
  }
  int nw = yk_cpu_count();
  pthread_t th[64];
  fill_ctx ctx[64];
  nw = nw > 64 ? 64 : nw;
  for (int i = 0; i < nw; i++) {
    ctx[i] = fc;
    ctx[i].worker = i;
    ctx[i].workers = nw;
    pthread_create(&th[i], NULL, fill_main, &ctx[i]);
  }
  for (int i = 0; i < nw; i++) pthread_join(th[i], NULL);

  yk_ckpt_state_create(&s);
  if ((rc = yk_ckpt_state_add_arena(s, "params", YK_DT_F32, fc.p, n, t, nt, &d)) ||
      (rc = yk_ckpt_state_add_arena(s, "params16", YK_DT_BF16, fc.h, n, t, nt, &d)) ||
      (rc = yk_ckpt_state_add_arena(s, "m", YK_DT_F32, fc.m, n, t, nt, &d)) ||
      (rc = yk_ckpt_state_add_arena(s, "v", YK_DT_F32, fc.v, n, t, nt, &d)) ||
      (rc = yk_ckpt_state_set_model_json(s, model_json, &d)))
    goto fail;
  yk_ckpt_state_set_blob(s, "step", "1", 1, 0, &d);
  yk_ckpt_opts o;
  yk_ckpt_opts_default(&o);
  o.dir = dir;
  o.rank = 0;
  o.world = (int)world;
  o.level = (int)level;
  o.threads = (int)threads;
  o.keep = 2;
  o.buffered_io = buffered;
  yk_logger quiet;
  yk_logger_init(&quiet, 0, YK_LOG_WARN, stderr);
  o.log = &quiet;

  /* 1. synchronous saves of rank 0's shard (+ commit when world is 1: the
   * save is durable and visible only then), steps 1..repeat */
  yk_ckpt_write_stats st;
  double load_before = loadavg1();
  double save_t[64], write_t[64], sync_t[64], commit_t[64], cpu_t[64];
  for (int k = 0; k < repeat; k++) {
    double t0 = yk_now_s(), c0 = cpu_s();
    if ((rc = yk_ckpt_write_shard(&o, s, 1 + k, &st, &d))) goto fail;
    double t1 = yk_now_s();
    if (world == 1 && (rc = yk_ckpt_commit(&o, 1 + k, &d))) goto fail;
    save_t[k] = yk_now_s() - t0;
    cpu_t[k] = cpu_s() - c0;
    commit_t[k] = yk_now_s() - t1;
    write_t[k] = st.write_s - st.sync_s;
    sync_t[k] = st.sync_s;
  }
  double save_s = yk_bench_median(save_t, (int)repeat), save_cpu = yk_bench_median(cpu_t, (int)repeat);
  double save_gbs = (double)st.raw_bytes / save_s / 1e9;
  double save_write_gbs = (double)st.raw_bytes / yk_bench_median(write_t, (int)repeat) / 1e9;
  double ratio = (double)st.raw_bytes / (double)st.file_bytes;
  double save_min = 1e30, save_max = 0;
  for (int k = 0; k < repeat; k++) {
    double g = (double)st.raw_bytes / save_t[k] / 1e9;
    save_min = g < save_min ? g : save_min;
    save_max = g > save_max ? g : save_max;
  }
  double t0, c0;
  /* the async saves below use steps repeat+1 .. 2*repeat (copy), then
   * last = 2*repeat+1 (deferred), which the loads read */
  int64_t step0 = repeat, last = 2 * repeat + 1;

  /* 2. asynchronous save: stall = the snapshot copy (median of `repeat`) */
  if ((rc = yk_ckpt_writer_create(&o, &w, &d))) goto fail;
  t0 = yk_now_s();
  if ((rc = yk_ckpt_writer_prepare(w, s, &d))) goto fail;
  double prepare_s = yk_now_s() - t0;
  double stall_v[64], async_v[64];
  for (int k = 0; k < repeat; k++) {
    t0 = yk_now_s();
    if ((rc = yk_ckpt_writer_save(w, s, step0 + 1 + k, 0, &d))) goto fail;
    stall_v[k] = yk_now_s() - t0;
    if ((rc = yk_ckpt_writer_wait(w, yk_deadline_in_ms(600000), &d))) goto fail;
    async_v[k] = yk_now_s() - t0;
  }
  double stall_copy = yk_bench_median(stall_v, (int)repeat), async_total = yk_bench_median(async_v, (int)repeat);
  /* 3. deferred copy: save, "forward/backward" (2/3 of a step), release */
  t0 = yk_now_s();
  if ((rc = yk_ckpt_writer_save(w, s, last, YK_CKPT_DEFER_COPY, &d))) goto fail;
  double stall_defer = yk_now_s() - t0;
  spin_s(step_ms / 1000.0 * 2.0 / 3.0);
  t0 = yk_now_s();
  if ((rc = yk_ckpt_writer_release(w, yk_deadline_in_ms(600000), &d))) goto fail;
  stall_defer += yk_now_s() - t0;
  if ((rc = yk_ckpt_writer_wait(w, yk_deadline_in_ms(600000), &d))) goto fail;
  yk_ckpt_writer_free(w);
  w = NULL;

  /* 4. load: commit needs every rank's shard; with world > 1 the other ranks'
   * shards are written too (not timed) so the checkpoint is complete. */
  for (int q = 1; q < world; q++) {
    o.rank = q;
    if ((rc = yk_ckpt_write_shard(&o, s, last, NULL, &d))) goto fail;
  }
  o.rank = 0;
  if ((rc = yk_ckpt_commit(&o, last, &d))) goto fail;
  yk_ckpt_open_opts oo = {.verify = YK_CKPT_VERIFY_META, .threads = (int)threads};
  if ((rc = yk_ckpt_reader_open(dir, &oo, &r, &d))) goto fail;
  back = yk_alloc(n * 4);
  if (!back) {
    fprintf(stderr, "yoke bench ckpt: out of memory for the load buffer\n");
    rc = 1;
    goto out;
  }
  const char *names[4] = {"params", "params16", "m", "v"};
  const void *orig[4] = {fc.p, fc.h, fc.m, fc.v};
  size_t es[4] = {4, 2, 4, 4};
  /* pass 0: cold (shard files evicted from the page cache), pass 1: warm;
   * `repeat` times each, medians reported (the disk's speed wanders) */
  double cold_v[64], warm_v[64], cpu_v[64], disk_v[64], share_v[64];
  uint64_t load_bytes = 0;
  for (int a = 0; a < 4; a++) load_bytes += n * es[a];
  for (int rep = 0; rep < repeat; rep++) {
    cache_step_files(dir, last, 0);
    disk_v[rep] = disk_probe(dir, last); /* O_DIRECT: leaves the page cache cold */
    for (int pass = 0; pass < 2; pass++) {
      cache_step_files(dir, last, pass);
      double wall = 0, cpu = 0;
      for (int a = 0; a < 4; a++) {
        t0 = yk_now_s();
        c0 = cpu_s();
        if ((rc = yk_ckpt_reader_read(r, names[a], 0, n, back, &d))) goto fail;
        wall += yk_now_s() - t0;
        cpu += cpu_s() - c0;
        if (memcmp(back, orig[a], n * es[a])) {
          fprintf(stderr, "yoke bench ckpt: arena %s read back differs from what was saved\n", names[a]);
          rc = 1;
          goto out;
        }
        memset(back, 0, n * es[a]); /* the next read must really write it again */
      }
      /* the share of what the disk allows: file bytes at the probe's rate */
      if (pass == 0) cold_v[rep] = wall, share_v[rep] = disk_v[rep] > 0 ? st.file_bytes / (disk_v[rep] * 1e9) / wall : 0;
      else warm_v[rep] = wall, cpu_v[rep] = cpu;
    }
  }
  double cold_s = yk_bench_median(cold_v, (int)repeat), load_s = yk_bench_median(warm_v, (int)repeat);
  double load_cpu = yk_bench_median(cpu_v, (int)repeat);
  double disk_gbs = yk_bench_median(disk_v, (int)repeat), disk_share = yk_bench_median(share_v, (int)repeat);
  double load_cold_gbs = (double)load_bytes / cold_s / 1e9;
  double load_gbs = (double)load_bytes / load_s / 1e9;
  man = json_loads(yk_ckpt_reader_manifest_text(r), 0, NULL);
  double kind_ratio[4] = {0};
  for (int a = 0; a < 4; a++) {
    json_t *ar = json_array_get(json_object_get(man, "arenas"), (size_t)a);
    uint64_t comp = 0;
    size_t k;
    json_t *c;
    json_array_foreach(json_object_get(ar, "chunks"), k, c) comp += (uint64_t)json_integer_value(json_object_get(c, "bytes"));
    kind_ratio[a] = comp ? (double)(n * es[a]) / (double)comp : 0;
  }
  double step_s = step_ms / 1000.0;
  printf("yoke bench ckpt: GPT-2 L=%lld C=%lld (%.1fM params), world %lld (rank 0 writes 1/%lld), zstd level %lld, "
         "%d threads, dir %s\n",
         (long long)L, (long long)C, (double)n / 1e6, (long long)world, (long long)world, (long long)level,
         threads ? (int)threads : yk_cpu_count(), dir);
  double save_core = (double)st.raw_bytes / save_cpu / 1e9, load_core = (double)load_bytes / load_cpu / 1e9;
  printf("  machine load (1 min avg)  %8.2f on %d cores (other jobs share them: wall-clock GB/s scale with it)\n",
         load_before, yk_cpu_count());
  printf("  raw state of rank 0       %8.3f GB (shard file %.3f GB)\n", (double)st.raw_bytes / 1e9,
         (double)st.file_bytes / 1e9);
  printf("  save (durable%s)  %8.3f GB/s  (median of %lld: %.2f s; min %.3f, max %.3f GB/s)\n",
         world == 1 ? ", committed" : " shard   ", save_gbs, (long long)repeat, save_s, save_min, save_max);
  printf(
      "    of which                 compress + write %.2f s (%.3f GB/s), fsync %.2f s, commit %.2f s (medians); %s\n",
      yk_bench_median(write_t, (int)repeat), save_write_gbs, yk_bench_median(sync_t, (int)repeat),
      yk_bench_median(commit_t, (int)repeat), st.direct_io ? "O_DIRECT writes" : "buffered writes (no O_DIRECT here)");
  printf("  load (all arenas, warm)   %8.3f GB/s  (median of %d: %.2f s for %.3f GB, checksums verified)\n", load_gbs,
         (int)repeat, load_s, (double)load_bytes / 1e9);
  printf("  load (cold page cache)    %8.3f GB/s  (median of %d: %.2f s, shard files evicted first)\n", load_cold_gbs,
         (int)repeat, cold_s);
  if (disk_gbs > 0)
    printf("    disk probe               %.3f GB/s of file (O_DIRECT, 4 MiB x 8 in flight) x ratio %.3f = %.3f GB/s "
           "ceiling; the cold load reaches %.0f%% of it (medians of paired rounds)\n",
           disk_gbs, (double)st.raw_bytes / (double)st.file_bytes,
           disk_gbs * (double)st.raw_bytes / (double)st.file_bytes, 100 * disk_share);
  printf("  CPU cost                  save %.3f GB per CPU-second, load %.3f GB per CPU-second (load-independent)\n",
         save_core, load_core);
  printf("  compression ratio         %8.3f  (params f32 %.3f, params16 bf16 %.3f, m f32 %.3f, v f32 %.3f; "
         "whole checkpoint)\n",
         ratio, kind_ratio[0], kind_ratio[1], kind_ratio[2], kind_ratio[3]);
  if (measured)
    printf("  training step             %8.0f ms  measured: yoke's step of this model on one rank, B=%d T=%d, %d "
           "threads, median of %d after %d warm-up\n",
           step_ms, step_B, step_T, step_threads, STEP_TIMED, STEP_WARMUP);
  else
    printf("  training step             %8.0f ms  given by --step-ms, not measured\n", step_ms);
  printf("  async stall (copy)        %8.3f s = %.1f%% of a %.0f ms step (median of %d); background write %.2f s "
         "(buffers prepared once: %.2f s)\n",
         stall_copy, 100 * stall_copy / step_s, step_ms, (int)repeat, async_total, prepare_s);
  printf("  async stall (deferred)    %8.3f s = %.1f%% of a step (copy overlapped with 2/3 step of compute)\n",
         stall_defer, 100 * stall_defer / step_s);
  if (json_out) {
    json_t *j = json_pack("{s:s, s:I, s:f, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:I, s:{s:f, s:f, s:f, s:f}}",
                          "bench", "ckpt", "layers", (json_int_t)L, "params_m", (double)n / 1e6, "world",
                          (json_int_t)world, "level", (json_int_t)level, "step_ms", step_ms, "raw_gb",
                          (double)st.raw_bytes / 1e9, "save_gbs", save_gbs, "save_write_gbs", save_write_gbs, "load_gbs", load_gbs, "ratio", ratio,
                          "stall_s", stall_copy, "stall_frac", stall_copy / step_s, "stall_frac_deferred",
                          stall_defer / step_s, "async_write_s", async_total, "save_gb_per_cpu_s", save_core, "load_gb_per_cpu_s", load_core, "loadavg",
                          load_before, "load_cold_gbs", load_cold_gbs, "disk_read_gbs", disk_gbs, "cold_share_of_disk", disk_share, "repeat", (json_int_t)repeat, "direct_io", (json_int_t)st.direct_io, "ratio_by_kind", "params_f32",
                          kind_ratio[0], "params16_bf16", kind_ratio[1], "adam_m_f32", kind_ratio[2], "adam_v_f32",
                          kind_ratio[3]);
    /* where the step came from, and the shape it was measured at (null when given) */
    json_object_set_new(j, "step_source", json_string(measured ? "measured" : "option"));
    json_object_set_new(j, "step_batch", measured ? json_integer(step_B) : json_null());
    json_object_set_new(j, "step_seq_len", measured ? json_integer(step_T) : json_null());
    json_object_set_new(j, "step_threads", measured ? json_integer(step_threads) : json_null());
    json_object_set_new(j, "adam_steps", json_integer((json_int_t)opt->adam_steps));
    char *txt = json_dumps(j, JSON_COMPACT);
    printf("%s\n", txt);
    free(txt);
    json_decref(j);
  }
  goto out;
fail:
  fprintf(stderr, "yoke bench ckpt: %s\n", yk_diag_msg(&d, rc));
  rc = 1;
out:
  json_decref(man);
  yk_ckpt_reader_close(r);
  yk_ckpt_writer_free(w);
  yk_ckpt_state_free(s);
  yk_free(back);
  yk_free(fc.p);
  yk_free(fc.m);
  yk_free(fc.v);
  yk_free(fc.h);
  free(t);
  if (own_dir) nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  return rc ? 1 : 0;
}
