/* ckpt.c - checkpoints of the engine's state: what a rank saves,
 * asynchronous saves with a cross-rank commit, resume at any world size, and
 * the agreed stop (preemption) at a step boundary.
 *
 * What a checkpoint holds (everything the next step depends on, so a resume
 * is bitwise):
 *   arenas  params (f32 master), m, v (AdamW, f32), params16 (fp16/bf16 runs),
 *           all in the model's layer-major layout with its tensor table;
 *   blobs   "step" (int64: optimizer steps done), "data_pos" (yk_data_pos:
 *           windows consumed, independent of world size), "loss_scaler"
 *           (yk_loss_scaler_state, fp16 runs);
 *   model   {"name", "layers", "channels", "heads", "vocab_size",
 *            "padded_vocab_size", "max_seq_len", "precision"} for the exporters;
 *   config  the job's YAML.
 * Every rank of the job writes one shard (writer rank = its rank in the
 * job). Under tensor parallelism each TP rank's arenas are its pieces of the
 * model, saved under their own names ("params.tp1of2", yk_ckpt_arena_name)
 * by that rank's data-parallel group, which cuts them evenly among itself
 * (the same even range a ZeRO shard holds); without TP that group is every
 * rank and the names are the plain ones. The manifest records the layout and
 * each tensor's split. A pipeline stage saves only the regions it holds
 * ("params.pp1of2"). Resume at the same TP and PP degrees reads each arena's
 * range from whatever shards hold it, which is all "resharding" needs for
 * data parallelism; another TP or PP degree puts each arena together whole
 * and cuts this rank's piece from it (restore_resharded).
 *
 * Commit protocol (more than one rank). At every step boundary the ranks do
 * a MAX all-reduce of three int32 flags {stop requested, my shard still being
 * written, my writer failed} over each group of the layout in turn (data-,
 * then tensor-parallel: a MAX of MAXes is the MAX over every rank):
 *   - stop: some rank got SIGTERM/SIGUSR1 (the control plane gives it to one
 *     or all ranks, at whatever boundary each happened to be); the MAX makes
 *     every rank stop at the same boundary, save synchronously and exit 75;
 *   - busy = 0 on every rank: every shard of the pending save is durable, so
 *     rank 0 queues the commit to its writer thread (manifest + rename);
 *   - failed: every rank stops with an error instead of training on with
 *     checkpoints that silently never commit.
 * Rank 0's commit result comes back through its writer's poll at the next
 * boundary (the "failed" flag again). A synchronous save (preemption, final,
 * ckpt.async=false) waits for the local writer, then an all-reduce of the
 * failed flag is the barrier before rank 0 commits, and a second one tells
 * every rank whether the commit worked. */
#include "engine_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bound on waiting for a background save or commit (a d48 checkpoint on a
 * slow disk takes minutes; a hang must still end). */
#define CKPT_WAIT_MS 600000

/* ------------------------------------------------------------ helpers */

static int is_root(const eng_ckpt *ck) { return ck->rank == 0; }

/* MAX all-reduce of n flags of type dt over every rank of the job: over
 * each group in turn (no-op on one rank). */
static int agree_max_dt(eng_ckpt *ck, void *f, int n, yk_dtype dt, yk_diag *d) {
  for (int g = 0; g < 3; g++) {
    if (!ck->agree[g]) continue;
    int rc = yk_comm_allreduce_sync(ck->agree[g], f, f, (size_t)n, dt, YK_OP_MAX, d);
    if (rc) return rc;
  }
  return 0;
}

static int agree_max(eng_ckpt *ck, int32_t *f, int n, yk_diag *d) {
  int rc = agree_max_dt(ck, f, n, YK_DT_I32, d);
  if (rc) return yk_errorf(d, rc, "checkpoint agreement with the other ranks failed: %s", yk_diag_msg(d, rc));
  return 0;
}

/* The name arena `base` of this rank is saved under. */
static const char *arena_name(const eng_ckpt *ck, const char *base, char buf[48]) {
  yk_ckpt_arena_name_stage(buf, 48, base, ck->layout.tp, ck->layout.tp_rank, ck->layout.pp, ck->layout.pp_rank);
  return buf;
}

char *eng_ckpt_config_yaml(const yk_config *c) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f) return NULL;
  yk_config_write_yaml(c, f);
  fclose(f);
  return buf;
}

static int set_blobs(eng_ckpt *ck, int64_t step, yk_diag *d) {
  int rc;
  yk_data_pos pos;
  yk_data_loader_get_pos(ck->view.loader, &pos);
  if ((rc = yk_ckpt_state_set_blob(ck->st, "step", &step, sizeof step, 0, d))) return rc;
  if ((rc = yk_ckpt_state_set_blob(ck->st, "data_pos", &pos, sizeof pos, 0, d))) return rc;
  if (ck->view.scaler &&
      (rc = yk_ckpt_state_set_blob(ck->st, "loss_scaler", &ck->view.scaler->st, sizeof ck->view.scaler->st, 0, d)))
    return rc;
  return 0;
}

/* ------------------------------------------------------------ open */

/* The checkpoint writer's fill of an arena that lives in the offload file:
 * arena elements [lo, lo + len) are slice elements [lo - soff, ...). */
static int fill_from_offload(void *ctx, uint64_t lo, uint64_t len, void *dst, yk_diag *d) {
  const struct eng_ckpt_fill *f = ctx;
  return eng_offload_read(f->off, f->arr, (size_t)(lo - f->soff), (size_t)len, dst, d);
}

/* Check at start that checkpoints can be written to `dir`, by creating it and
 * writing a file there: a ckpt.dir that is a regular file or read-only would
 * otherwise be found at the first save, maybe thousands of steps in. The
 * probe's name carries the rank so ranks sharing a file system do not race. */
static int probe_dir(const char *dir, int rank, yk_diag *d) {
  yk_diag t = {0};
  int rc = yk_mkdirs(dir, &t);
  if (rc) return yk_errorf(d, YK_ECONFIG, "ckpt.dir=%s cannot be created (%s); set ckpt.dir to a writable directory",
                           dir, yk_diag_msg(&t, rc));
  struct stat sb;
  if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
    return yk_errorf(d, YK_ECONFIG, "ckpt.dir=%s is not a directory (a regular file?); set ckpt.dir to a directory",
                     dir);
  char probe[4200];
  snprintf(probe, sizeof probe, "%s/.yk-write-probe-r%d", dir, rank);
  int fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  int ok = fd >= 0 && write(fd, "y", 1) == 1;
  int e = errno;
  if (fd >= 0) ok = (close(fd) == 0) && ok;
  unlink(probe);
  if (!ok)
    return yk_errorf(d, YK_ECONFIG, "ckpt.dir=%s is not writable (creating a file there: %s); set ckpt.dir to a "
                     "writable directory", dir, strerror(e ? e : EIO));
  return 0;
}

int eng_ckpt_open(eng_ckpt *ck, const yk_config *cfg, const yk_logger *log, const yk_engine_comms *comms,
                  const yk_layout *layout, const eng_ckpt_view *view, yk_diag *d) {
  memset(ck, 0, sizeof *ck);
  ck->cfg = cfg;
  ck->log = log;
  ck->agree[0] = comms->dp;
  ck->agree[1] = comms->tp;
  ck->agree[2] = comms->pp;
  ck->layout = *layout;
  int rank = layout->rank, world = layout->world;
  ck->rank = rank;
  ck->world = world;
  ck->view = *view;
  ck->last_saved = -1;
  ck->enabled = cfg->ckpt.dir[0] != '\0';
  if (!ck->enabled) {
    if (cfg->ckpt.resume[0])
      return yk_errorf(d, YK_ECONFIG, "ckpt.resume=%s needs ckpt.dir (where checkpoints go after the resume); "
                       "set --set ckpt.dir=DIR", cfg->ckpt.resume);
    return 0;
  }
  int rc;
  const yk_model_config *mc = view->mcfg;
  if (yk_ckpt_state_create(&ck->st)) return yk_errorf(d, YK_ENOMEM, "out of memory");
  /* A rank holds the optimizer state of its slice only; its shard of the
   * checkpoint is that same even range of its data-parallel group, so it
   * saves what it holds. */
  uint64_t n = view->nparams, lo = view->soff, len = view->slen;
  const yk_tensor_desc *t = view->tensors;
  int nt = view->ntensors, gr = layout->dp_rank, gn = layout->dp;
  char nm[48];
  if (view->off) {
    /* optim.offload=disk: the master weights (mixed precision) and the
     * moments are in the offload file; the writer streams them out of it
     * chunk by chunk (fill_from_offload), into the same arenas. */
    eng_offload *o = view->off;
    static const char *const base3[3] = {"params", "m", "v"};
    int first = o->narr == 3 ? 0 : 1;
    if (o->narr == 2 && (rc = yk_ckpt_state_add_arena_group(ck->st, arena_name(ck, "params", nm), YK_DT_F32,
                                                            view->master, n, lo, len, gr, gn, t, nt, d)))
      return rc;
    for (int a = first; a < 3; a++) {
      ck->fill[a] = (struct eng_ckpt_fill){.off = o, .arr = a - first, .soff = lo};
      if ((rc = yk_ckpt_state_add_arena_fill(ck->st, arena_name(ck, base3[a], nm), YK_DT_F32, fill_from_offload,
                                             &ck->fill[a], n, lo, len, gr, gn, t, nt, d)))
        return rc;
    }
  } else if ((rc = yk_ckpt_state_add_arena_group(ck->st, arena_name(ck, "params", nm), YK_DT_F32, view->master, n,
                                                 lo, len, gr, gn, t, nt, d)) ||
      (rc = yk_ckpt_state_add_arena_group(ck->st, arena_name(ck, "m", nm), YK_DT_F32, view->m, n, lo, len, gr, gn, t,
                                          nt, d)) ||
      (rc = yk_ckpt_state_add_arena_group(ck->st, arena_name(ck, "v", nm), YK_DT_F32, view->v, n, lo, len, gr, gn, t,
                                          nt, d)))
    return rc;
  /* ZeRO-3 (no whole arena): the rank's 16-bit weights are its slice too;
   * the checkpoint's content is the same whole arena either way. */
  if (view->params16 &&
      (rc = yk_ckpt_state_add_arena_group(ck->st, arena_name(ck, "params16", nm), view->dtype16, view->params16, n,
                                          view->model_params ? 0 : lo, view->model_params ? n : len, gr, gn, t, nt, d)))
    return rc;
  if ((rc = yk_ckpt_state_set_layout(ck->st, layout, (int)cfg->parallel.sequence, d))) return rc;
  char json[512];
  snprintf(json, sizeof json,
           "{\"name\": \"%s\", \"layers\": %d, \"channels\": %d, \"heads\": %d, \"vocab_size\": %d, "
           "\"padded_vocab_size\": %d, \"max_seq_len\": %d, \"precision\": \"%s\"}",
           cfg->model.name, mc->layers, mc->channels, mc->heads, mc->vocab_size, mc->padded_vocab_size,
           mc->max_seq_len, cfg->train.precision);
  if ((rc = yk_ckpt_state_set_model_json(ck->st, json, d))) return rc;
  char *yaml = eng_ckpt_config_yaml(cfg);
  if (!yaml) return yk_errorf(d, YK_ENOMEM, "out of memory");
  rc = yk_ckpt_state_set_config_yaml(ck->st, yaml, d);
  free(yaml);
  if (rc) return rc;

  yk_ckpt_opts_from_config(&ck->opts, cfg, rank, world);
  ck->opts.threads = view->threads > 0 ? view->threads : 1;
  ck->opts.log = log;
  if ((rc = probe_dir(cfg->ckpt.dir, rank, d))) return rc;
  if ((rc = yk_ckpt_writer_create(&ck->opts, &ck->w, d))) return rc;
  /* Allocate and fault in the snapshot buffers now, so the first save's
   * stall is the copy alone. */
  return yk_ckpt_writer_prepare(ck->w, ck->st, d);
}

void eng_ckpt_request_stop(eng_ckpt *ck, int code) {
  if (code > ck->stop_requested) ck->stop_requested = code;
}

/* ------------------------------------------------------------ resume */

static int read_blob_exact(yk_ckpt_reader *r, const char *name, void *dst, size_t len, int optional, yk_diag *d) {
  void *b = NULL;
  size_t n = 0;
  int rc = yk_ckpt_reader_blob(r, name, -1, &b, &n, d);
  if (rc == YK_ENOTFOUND && optional) return YK_ENOTFOUND;
  if (rc) return rc;
  if (n != len) {
    free(b);
    return yk_errorf(d, YK_EFORMAT, "%s: blob '%s' has %zu bytes, expected %zu (written by another yoke version?)",
                     yk_ckpt_reader_path(r), name, n, len);
  }
  memcpy(dst, b, len);
  free(b);
  return 0;
}

/* The checkpoint's arena must have this model's dtype, size and tensor
 * table; then read elements [lo, lo + len) of it into dst. */
static int restore_arena(yk_ckpt_reader *r, const char *name, yk_dtype dt, void *dst, size_t lo, size_t len,
                         const eng_ckpt_view *v, int *missing, yk_diag *d) {
  yk_ckpt_arena_info a;
  yk_diag tmp = {0};
  if (missing) *missing = 0;
  int rc = yk_ckpt_reader_find_arena(r, name, &a, &tmp);
  if (rc == YK_ENOTFOUND && missing) {
    *missing = 1;
    return 0;
  }
  if (rc) return yk_errorf(d, rc, "%s", yk_diag_msg(&tmp, rc));
  const char *path = yk_ckpt_reader_path(r);
  if (a.dtype != dt || a.numel != v->nparams || a.ntensors != v->ntensors)
    return yk_errorf(d, YK_EMISMATCH,
                     "%s: arena '%s' is %llu x %s in %d tensors, this model has %zu x %s in %d tensors: resume with "
                     "the model settings of the checkpoint (see 'yoke ckpt inspect %s')",
                     path, name, (unsigned long long)a.numel, yk_dtype_name(a.dtype), a.ntensors, v->nparams,
                     yk_dtype_name(dt), v->ntensors, path);
  for (int i = 0; i < a.ntensors; i++)
    if (strcmp(a.tensors[i].name, v->tensors[i].name) || a.tensors[i].offset != v->tensors[i].offset ||
        a.tensors[i].numel != v->tensors[i].numel)
      return yk_errorf(d, YK_EMISMATCH,
                       "%s: arena '%s' tensor %d is '%s' (%zu elements at %zu), this model has '%s' (%zu at %zu): "
                       "resume with the model settings of the checkpoint",
                       path, name, i, a.tensors[i].name, a.tensors[i].numel, a.tensors[i].offset, v->tensors[i].name,
                       v->tensors[i].numel, v->tensors[i].offset);
  return yk_ckpt_reader_read(r, name, lo, len, dst, d);
}

/* ------------------------------------------------------------ resharding */

/* Why whole arenas: every saved piece maps to the whole tensor and every new
 * piece is cut from it (yk_model_tp_copy both ways, the model's one home of
 * the split arithmetic), so any degree reads any other through one
 * transient whole arena instead of a table of overlaps per split kind. */
int yk_engine_ckpt_read_whole(yk_ckpt_reader *r, const char *base, const yk_model_config *cfg, float *whole,
                              yk_diag *d) {
  yk_layout saved;
  yk_ckpt_reader_layout(r, &saved, NULL);
  const char *path = yk_ckpt_reader_path(r);
  int S = saved.tp > 0 ? saved.tp : 1, P = saved.pp > 0 ? saved.pp : 1, rc = 0;
  float *local = NULL, *tpl = NULL;
  void *raw = NULL;
  char *have = NULL;
  yk_tensor_desc *want = NULL;
  for (int k = 0; k < S && !rc; k++) {
    int nw = 0;
    free(want);
    free(tpl);
    free(have);
    want = NULL;
    if ((rc = yk_model_tp_tensor_table(cfg, S, k, &want, &nw, d))) break;
    size_t n = yk_model_tp_num_params(cfg, S, k);
    tpl = malloc((n ? n : 1) * sizeof(float));
    have = calloc((size_t)nw + 1, 1);
    if (!tpl || !have) {
      rc = yk_errorf(d, YK_ENOMEM, "out of memory for arena '%s' (%zu elements)", base, n);
      break;
    }
    /* Tensor-parallel rank k's arena from its stages' arenas: a stage saved
     * the tensors it holds at its own offsets (its table says where), so
     * each is copied by name to where rank k's unstaged table puts it. The
     * first stage that holds a tensor wins: the embedding region is held by
     * the first and the last stage, and only the first trains wpe (the
     * last one's copy is the value it started with). */
    for (int s = 0; s < P && !rc; s++) {
      char name[48];
      yk_ckpt_arena_name_stage(name, sizeof name, base, S, k, P, s);
      yk_ckpt_arena_info a;
      if ((rc = yk_ckpt_reader_find_arena(r, name, &a, d))) break;
      if (a.dtype != YK_DT_F32 && a.dtype != YK_DT_F16 && a.dtype != YK_DT_BF16) {
        rc = yk_errorf(d, YK_EFORMAT, "%s: arena '%s' is %s; model arenas are f32, f16 or bf16 (written by another "
                       "yoke version?)", path, name, yk_dtype_name(a.dtype));
        break;
      }
      size_t an = (size_t)a.numel;
      free(local);
      free(raw);
      raw = NULL;
      local = malloc((an ? an : 1) * sizeof(float));
      if (a.dtype != YK_DT_F32) raw = malloc((an ? an : 1) * yk_dtype_size(a.dtype));
      if (!local || (a.dtype != YK_DT_F32 && !raw)) {
        rc = yk_errorf(d, YK_ENOMEM, "out of memory for arena '%s' (%zu elements)", name, an);
        break;
      }
      if ((rc = yk_ckpt_reader_read(r, name, 0, an, raw ? raw : (void *)local, d))) break;
      if (raw) yk_cast_to_f32(local, raw, a.dtype, an, 1.0f, YK_ISA_AUTO); /* exact: 16-bit widens losslessly */
      for (int i = 0; i < a.ntensors && !rc; i++) {
        const yk_tensor_desc *t = &a.tensors[i];
        int j = 0;
        while (j < nw && strcmp(want[j].name, t->name)) j++;
        if (j < nw && have[j]) continue;
        if (j == nw || want[j].numel != t->numel || t->offset + t->numel > an)
          rc = yk_errorf(d, YK_EMISMATCH, "%s: arena '%s' tensor '%s' (%zu elements) is not in this model's piece "
                         "%d of %d: resume with the model settings of the checkpoint (see 'yoke ckpt inspect %s')",
                         path, name, t->name, t->numel, k, S, path);
        else {
          memcpy(tpl + want[j].offset, local + t->offset, t->numel * sizeof(float));
          have[j] = 1;
        }
      }
    }
    for (int j = 0; j < nw && !rc; j++)
      if (!have[j])
        rc = yk_errorf(d, YK_EMISMATCH, "%s: no saved arena of '%s' holds tensor '%s' of piece %d of %d: resume with "
                       "the model settings of the checkpoint (see 'yoke ckpt inspect %s')", path, base, want[j].name,
                       k, S, path);
    if (!rc) rc = yk_model_tp_copy(cfg, S, k, whole, tpl, 0, d);
  }
  free(want);
  free(local);
  free(tpl);
  free(have);
  free(raw);
  return rc;
}

/* Its tensor-parallel piece (yk_model_tp_copy) into tpw, then, on a
 * pipeline stage, the stage's regions of it (yk_model_stage_copy_cfg) into
 * mine, then the slice. */
int eng_ckpt_piece(const yk_model_config *cfg, int tp, int tp_rank, const yk_model_stage *stage, float *whole,
                   float *tpw, float *mine, void *dst, yk_dtype dt, size_t lo, size_t len, yk_diag *d) {
  int rc = yk_model_tp_copy(cfg, tp, tp_rank, whole, tpw, 1, d);
  if (rc) return rc;
  if (stage && (rc = yk_model_stage_copy_cfg(cfg, tp, tp_rank, stage, tpw, mine, 1, d))) return rc;
  const float *src = stage ? mine : tpw;
  if (dt == YK_DT_F32) memcpy(dst, src + lo, len * sizeof(float));
  else yk_cast_from_f32(dst, dt, src + lo, len, YK_ISA_AUTO);
  return 0;
}

/* This rank's elements [lo, lo + len) of its piece of `whole`. */
static int take_piece(const eng_ckpt *ck, float *whole, float *tpw, float *mine, void *dst, yk_dtype dt, size_t lo,
                      size_t len, yk_diag *d) {
  int rc = eng_ckpt_piece(ck->view.mcfg, ck->layout.tp, ck->layout.tp_rank, ck->view.stage, whole, tpw, mine, dst, dt,
                          lo, len, d);
  /* restore_resharded reads the fp32 weights the model computes with from mine */
  if (!rc && !ck->view.stage) memcpy(mine, tpw, ck->view.nparams * sizeof(float));
  return rc;
}

/* Resume at another tensor- or pipeline-parallel degree: each arena whole, then this
 * rank's piece of it, with what restore_from does at the same degree
 * (16-bit weights when saved, else rounded from the master weights). Memory:
 * one whole fp32 arena, one saved piece and one local arena, transiently. */
static int restore_resharded(eng_ckpt *ck, yk_ckpt_reader *r, const yk_layout *saved, yk_diag *d) {
  const eng_ckpt_view *v = &ck->view;
  size_t n = v->nparams, lo = v->soff, len = v->slen, nw = yk_model_config_num_params(v->mcfg);
  size_t ntp = yk_model_tp_num_params(v->mcfg, ck->layout.tp, ck->layout.tp_rank);
  float *whole = malloc(nw * sizeof(float)), *mine = malloc((n ? n : 1) * sizeof(float));
  float *tpw = malloc((ntp ? ntp : 1) * sizeof(float));
  int rc = 0, missing16 = 0;
  if (!whole || !mine || !tpw) {
    rc = yk_errorf(d, YK_ENOMEM, "out of memory for resharding %s (one whole arena of %zu floats)",
                   yk_ckpt_reader_path(r), nw);
    goto out;
  }
  if (v->params16) {
    yk_diag t = {0};
    rc = yk_engine_ckpt_read_whole(r, "params16", v->mcfg, whole, &t);
    if (rc == YK_ENOTFOUND) missing16 = 1, rc = 0;
    else if (rc) {
      *d = t;
      goto out;
    } else if ((rc = take_piece(ck, whole, tpw, mine, v->params16, v->dtype16, v->model_params ? 0 : lo,
                                v->model_params ? n : len, d))) goto out;
  }
  if ((rc = yk_engine_ckpt_read_whole(r, "params", v->mcfg, whole, d)) ||
      (rc = take_piece(ck, whole, tpw, mine, v->master, YK_DT_F32, lo, len, d)))
    goto out;
  if (v->params16 && missing16) {
    yk_cast_from_f32(v->params16, v->dtype16, v->model_params ? mine : mine + lo, v->model_params ? n : len,
                     YK_ISA_AUTO);
    YK_WARN(ck->log, "ckpt: %s has no 16-bit weights (an fp32 run?); rounded them from the fp32 master weights",
            yk_ckpt_reader_path(r));
  }
  /* The weights the model computes with: the 16-bit ones widened, or the
   * fp32 master weights (mine holds this rank's whole piece of them). */
  if (v->model_params) {
    if (v->params16) yk_cast_to_f32(v->model_params, v->params16, v->dtype16, n, 1.0f, YK_ISA_AUTO);
    else memcpy(v->model_params, mine, n * sizeof(float));
  }
  if ((rc = yk_engine_ckpt_read_whole(r, "m", v->mcfg, whole, d)) ||
      (rc = take_piece(ck, whole, tpw, mine, v->m, YK_DT_F32, lo, len, d)) ||
      (rc = yk_engine_ckpt_read_whole(r, "v", v->mcfg, whole, d)) ||
      (rc = take_piece(ck, whole, tpw, mine, v->v, YK_DT_F32, lo, len, d)))
    goto out;
  YK_INFO(ck->log, "ckpt: resharded %s from parallel.tensor=%d, pipeline=%d to %d, %d", yk_ckpt_reader_path(r),
          saved->tp, saved->pp, ck->layout.tp, ck->layout.pp);
out:
  free(whole);
  free(mine);
  free(tpw);
  return rc;
}

/* Resuming at another global batch (another world size with the same
 * micro_batch and grad_accum, the usual slip) is allowed - the data position
 * counts sequences - but the run no longer continues the checkpoint's loss
 * curve, so say so once, with the grad_accum that would keep it. */
static void warn_batch_change(const eng_ckpt *ck, yk_ckpt_reader *r) {
  const char *yaml = yk_ckpt_reader_config_yaml(r);
  if (!is_root(ck) || !yaml) return;
  yk_config old;
  yk_config_defaults(&old);
  if (yk_config_load_string(&old, yaml, "checkpoint config", NULL)) return; /* an older format: nothing to compare */
  const yk_config *c = ck->cfg;
  /* the data-parallel degrees: tensor-parallel ranks share their batch */
  yk_layout saved;
  yk_ckpt_reader_layout(r, &saved, NULL);
  int ow = saved.dp, nw = ck->layout.dp;
  long long ob = (long long)old.train.micro_batch * old.train.grad_accum * ow;
  long long per = (long long)c->train.micro_batch * nw;
  long long nb = per * c->train.grad_accum;
  if (ob == nb) return;
  char keep[160];
  if (ob % per == 0)
    snprintf(keep, sizeof keep, "set train.grad_accum=%lld to keep it", ob / per);
  else
    snprintf(keep, sizeof keep, "keep train.micro_batch x train.grad_accum x ranks = %lld to keep it", ob);
  YK_WARN(ck->log,
          "ckpt: the global batch changes from %lld (micro_batch %lld x grad_accum %lld x %d rank%s, in the checkpoint) "
          "to %lld (%lld x %lld x %d rank%s), so the loss curve will not continue the checkpoint's; %s",
          ob, (long long)old.train.micro_batch, (long long)old.train.grad_accum, ow, ow == 1 ? "" : "s", nb,
          (long long)c->train.micro_batch, (long long)c->train.grad_accum, nw, nw == 1 ? "" : "s", keep);
}

/* optim.offload=disk: rebuild the offload file from the checkpoint, one
 * chunk at a time (a write-only pass). The master weights come from the
 * model's arena, where restore_same has just put them whole in fp32; m and v
 * from the checkpoint's ranges of this rank's slice. Mixed precision then
 * rounds the arena to the 16-bit weights the products read, as at start. */
typedef struct {
  eng_ckpt *ck;
  yk_ckpt_reader *r;
  const char *mn, *vn;
} offload_restore;

static int restore_chunk(void *ctx, size_t off, size_t count, float **arr, yk_diag *d) {
  offload_restore *x = ctx;
  const eng_ckpt_view *v = &x->ck->view;
  size_t chunk = v->off->chunk, at = v->soff + off;
  int k = 0, rc;
  if (v->off->narr == 3) {
    memcpy(arr[k], v->model_params + at, count * sizeof(float));
    memset(arr[k] + count, 0, (chunk - count) * sizeof(float));
    k++;
  }
  if ((rc = restore_arena(x->r, x->mn, YK_DT_F32, arr[k], at, count, v, NULL, d)) ||
      (rc = restore_arena(x->r, x->vn, YK_DT_F32, arr[k + 1], at, count, v, NULL, d)))
    return rc;
  memset(arr[k] + count, 0, (chunk - count) * sizeof(float));
  memset(arr[k + 1] + count, 0, (chunk - count) * sizeof(float));
  return 0;
}

static int restore_offload(eng_ckpt *ck, yk_ckpt_reader *r, const char *pn, const char *mn, const char *vn,
                           yk_diag *d) {
  const eng_ckpt_view *v = &ck->view;
  (void)pn;
  offload_restore x = {.ck = ck, .r = r, .mn = mn, .vn = vn};
  int rc = eng_offload_pass(v->off, 0, restore_chunk, &x, d);
  if (rc) return rc;
  if (v->off->narr == 3) eng_offload_round(v->model_params, v->nparams, v->off16, v->off->chunk, v->dtype16);
  YK_INFO(ck->log, "ckpt: rebuilt the offload file %s from %s (%zu chunks)", v->off->path, yk_ckpt_reader_path(r),
          v->off->nchunks);
  return 0;
}

/* Resume at the saved tensor-parallel degree: each rank reads the ranges it
 * holds of its own pieces, bitwise. */
static int restore_same(eng_ckpt *ck, yk_ckpt_reader *r, yk_diag *d) {
  const eng_ckpt_view *v = &ck->view;
  const char *path = yk_ckpt_reader_path(r);
  size_t n = v->nparams, lo = v->soff, len = v->slen;
  int missing16 = 0, rc;
  char pn[48], p16[48], mn[48], vn[48];
  arena_name(ck, "params", pn);
  arena_name(ck, "params16", p16);
  arena_name(ck, "m", mn);
  arena_name(ck, "v", vn);
  /* The weights the model computes with, whole: in fp32 the master weights
   * themselves; in fp16/bf16 the 16-bit weights, widened. The optimizer
   * state only for this rank's slice. */
  if (!v->model_params) {
    /* ZeRO-3: only this rank's slice of everything */
    if (v->params16) {
      if ((rc = restore_arena(r, p16, v->dtype16, v->params16, lo, len, v, &missing16, d))) return rc;
    }
    if ((rc = restore_arena(r, pn, YK_DT_F32, v->master, lo, len, v, NULL, d))) return rc;
    if (v->params16 && missing16) {
      yk_cast_from_f32(v->params16, v->dtype16, v->master, len, YK_ISA_AUTO);
      YK_WARN(ck->log, "ckpt: %s has no 16-bit weights (an fp32 run?); rounded them from the fp32 master weights",
              path);
    }
  } else if (v->params16) {
    if ((rc = restore_arena(r, p16, v->dtype16, v->params16, 0, n, v, &missing16, d))) return rc;
    if (missing16) {
      /* An fp32 checkpoint resumed in fp16/bf16: the 16-bit weights are the
       * master weights rounded, as at the start of a run. */
      if ((rc = restore_arena(r, pn, YK_DT_F32, v->model_params, 0, n, v, NULL, d))) return rc;
      yk_cast_from_f32(v->params16, v->dtype16, v->model_params, n, YK_ISA_AUTO);
      YK_WARN(ck->log, "ckpt: %s has no 16-bit weights (an fp32 run?); rounded them from the fp32 master weights",
              path);
    }
    yk_cast_to_f32(v->model_params, v->params16, v->dtype16, n, 1.0f, YK_ISA_AUTO);
    if ((rc = restore_arena(r, pn, YK_DT_F32, v->master, lo, len, v, NULL, d))) return rc;
  } else if ((rc = restore_arena(r, pn, YK_DT_F32, v->model_params, 0, n, v, NULL, d))) {
    return rc;
  }
  if (v->off) return restore_offload(ck, r, pn, mn, vn, d);
  if ((rc = restore_arena(r, mn, YK_DT_F32, v->m, lo, len, v, NULL, d)) ||
      (rc = restore_arena(r, vn, YK_DT_F32, v->v, lo, len, v, NULL, d)))
    return rc;
  return 0;
}

/* Under the same pipeline degree the stages may still be cut elsewhere
 * (another parallel.stage_layers, virtual_stages or seq_len, which the cost
 * estimate weighs): then this stage's saved table differs from its own and
 * the arenas are resharded like another degree's. */
static int same_stage(const eng_ckpt *ck, yk_ckpt_reader *r) {
  if (ck->layout.pp == 1) return 1;
  char nm[48];
  yk_ckpt_arena_info a;
  if (yk_ckpt_reader_find_arena(r, arena_name(ck, "params", nm), &a, NULL)) return 1; /* restore_same names it */
  if (a.ntensors != ck->view.ntensors) return 0;
  for (int i = 0; i < a.ntensors; i++)
    if (strcmp(a.tensors[i].name, ck->view.tensors[i].name) || a.tensors[i].offset != ck->view.tensors[i].offset ||
        a.tensors[i].numel != ck->view.tensors[i].numel)
      return 0;
  return 1;
}

/* Restore everything from one checkpoint directory. */
static int restore_from(eng_ckpt *ck, const char *path, int64_t *step, yk_diag *d) {
  yk_ckpt_open_opts oo = {.verify = YK_CKPT_VERIFY_FULL, .fallback = 0, .threads = 0, .log = ck->log};
  yk_ckpt_reader *r = NULL;
  int rc = yk_ckpt_reader_open(path, &oo, &r, d);
  if (rc) return rc;
  const eng_ckpt_view *v = &ck->view;
  /* Each arena is cut by the tensor-parallel degree it was saved at: the
   * same degree reads its own pieces (any data-parallel degree), another
   * one reshards. */
  yk_layout saved;
  yk_ckpt_reader_layout(r, &saved, NULL);
  int same = saved.tp == ck->layout.tp && saved.pp == ck->layout.pp && same_stage(ck, r);
  if (!same && v->off) {
    rc = yk_errorf(d, YK_EUNSUPPORTED, "%s was saved at parallel.tensor=%d, pipeline=%d; resharding it to %d, %d "
                   "with optim.offload=disk is not built: resume at the saved degrees, or with optim.offload=none "
                   "and save once", path, saved.tp, saved.pp, ck->layout.tp, ck->layout.pp);
    goto out;
  }
  rc = same ? restore_same(ck, r, d) : restore_resharded(ck, r, &saved, d);
  if (rc) goto out;
  if ((rc = read_blob_exact(r, "step", step, sizeof *step, 0, d))) goto out;
  yk_data_pos pos;
  if ((rc = read_blob_exact(r, "data_pos", &pos, sizeof pos, 0, d))) goto out;
  if ((rc = yk_data_loader_set_pos(v->loader, &pos, d))) {
    yk_diag inner = *d;
    rc = yk_errorf(d, rc, "%s: %s", path, yk_diag_msg(&inner, rc));
    goto out;
  }
  if (v->scaler) {
    yk_loss_scaler_state ls;
    rc = read_blob_exact(r, "loss_scaler", &ls, sizeof ls, 1, d);
    if (rc == YK_ENOTFOUND) {
      rc = 0;
      YK_WARN(ck->log, "ckpt: %s has no loss scaler state (an fp32/bf16 run?); starting the scale at %g", path,
              v->scaler->st.scale);
    } else if (rc) goto out;
    else v->scaler->st = ls;
  }
  if (*step != yk_ckpt_reader_step(r)) {
    rc = yk_errorf(d, YK_EFORMAT, "%s: step blob says %lld, the manifest %lld", path, (long long)*step,
                   (long long)yk_ckpt_reader_step(r));
    goto out;
  }
  YK_INFO(ck->log, "ckpt: resumed from %s (step %lld, written by %d rank%s, now %d)", yk_ckpt_reader_path(r),
          (long long)*step, yk_ckpt_reader_world(r), yk_ckpt_reader_world(r) == 1 ? "" : "s", ck->world);
  warn_batch_change(ck, r);
out:
  yk_ckpt_reader_close(r);
  return rc;
}

static int is_checkpoint_dir(const char *path) {
  char m[4200];
  struct stat sb;
  snprintf(m, sizeof m, "%s/manifest.json", path);
  if (stat(m, &sb) == 0) return 1;
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  long long s;
  int used = 0;
  return sscanf(base, "step-%lld%n", &s, &used) == 1 && base[used] == '\0';
}

static int resume_local(eng_ckpt *ck, int64_t *start, yk_diag *d) {
  const char *what = ck->cfg->ckpt.resume;
  const char *root = !strcmp(what, "latest") ? ck->cfg->ckpt.dir : what;
  *start = 0;
  if (strcmp(what, "latest") && is_checkpoint_dir(root)) return restore_from(ck, root, start, d);

  /* A root directory: newest first; every step-N (not .partial) directory is
   * a candidate, so a damaged newest one is an error, never silently
   * skipped, unless ckpt.fallback. */
  yk_ckpt_entry *e = NULL;
  int n = 0;
  int rc = yk_ckpt_list(root, &e, &n, d);
  if (rc == YK_ENOTFOUND && !strcmp(what, "latest")) n = 0, rc = 0;
  if (rc) return rc;
  int cand = 0;
  for (int i = 0; i < n; i++) cand += !strstr(e[i].path + strlen(root), ".partial");
  if (!cand) {
    free(e);
    if (strcmp(what, "latest"))
      return yk_errorf(d, YK_ENOTFOUND, "ckpt.resume=%s: no checkpoint there (yoke ckpt ls %s)", what, what);
    YK_INFO(ck->log, "ckpt: no checkpoint in %s yet: starting from step 0", root);
    return 0;
  }
  rc = YK_ENOTFOUND;
  const char *failed = NULL;
  yk_diag first = {0};
  int first_rc = 0;
  for (int i = n - 1; i >= 0; i--) {
    if (strstr(e[i].path + strlen(root), ".partial")) continue;
    yk_diag t = {0};
    rc = restore_from(ck, e[i].path, start, &t);
    if (!rc) {
      if (failed)
        YK_WARN(ck->log, "ckpt: ckpt.fallback: resumed from the older %s because %s is damaged", e[i].path, failed);
      break;
    }
    if (!failed) {
      failed = e[i].path;
      first = t;
      first_rc = rc;
    }
    if (!ck->cfg->ckpt.fallback || rc == YK_EMISMATCH || rc == YK_ENOMEM) break;
    YK_ERROR(ck->log, "ckpt: cannot resume from %s: %s", e[i].path, yk_diag_msg(&t, rc));
    *start = 0;
  }
  if (rc) {
    int older = 0;
    for (int i = 0; i < n; i++) older += !strstr(e[i].path + strlen(root), ".partial");
    rc = yk_errorf(d, first_rc, "%s%s", yk_diag_msg(&first, first_rc),
                   ck->cfg->ckpt.fallback ? " (and no older checkpoint could be loaded)"
                   : older > 1 && first_rc != YK_EMISMATCH
                       ? "; set ckpt.fallback=true to resume from the previous checkpoint instead" : "");
  }
  free(e);
  return rc;
}

int eng_ckpt_resume(eng_ckpt *ck, int64_t *start_step, yk_diag *d) {
  *start_step = 0;
  if (!ck->enabled || !ck->cfg->ckpt.resume[0]) return 0;
  int rc = resume_local(ck, start_step, d);
  if (ck->world > 1) {
    /* Every rank reads the same files, so they agree unless one failed or
     * saw a different newest checkpoint (a racing writer): check. */
    int64_t v[3] = {rc ? 1 : 0, *start_step, -*start_step};
    yk_diag t = {0};
    int r2 = agree_max_dt(ck, v, 3, YK_DT_I64, &t);
    if (rc) return rc;
    if (r2) return yk_errorf(d, r2, "resume: agreement with the other ranks failed: %s", yk_diag_msg(&t, r2));
    if (v[0]) return yk_errorf(d, YK_EPEERDEAD, "resume failed on another rank (see its error)");
    if (v[1] != -v[2])
      return yk_errorf(d, YK_EMISMATCH, "ranks resumed from different steps (%lld .. %lld): is another job writing %s?",
                       (long long)-v[2], (long long)v[1], ck->cfg->ckpt.dir);
  }
  if (!rc && *start_step > ck->cfg->train.steps)
    return yk_errorf(d, YK_ECONFIG, "the checkpoint is at step %lld, beyond train.steps=%lld: raise train.steps to "
                     "train on", (long long)*start_step, (long long)ck->cfg->train.steps);
  if (!rc && *start_step > 0) ck->last_saved = *start_step; /* that step is on disk already */
  return rc;
}

/* ------------------------------------------------------------ saving */

static void log_written(eng_ckpt *ck, int64_t step) {
  yk_ckpt_write_stats ws;
  yk_ckpt_writer_stats(ck->w, &ws);
  ck->write_s_total += ws.write_s;
  YK_INFO(ck->log, "ckpt: step %lld: shard written in the background in %.3f s (%.1f MB raw -> %.1f MB, fsync %.3f s)",
          (long long)step, ws.write_s, ws.raw_bytes / 1e6, ws.file_bytes / 1e6, ws.sync_s);
}

static void count_stall(eng_ckpt *ck, double stall) {
  ck->saves++;
  ck->stall_s_total += stall;
  if (stall > ck->stall_s_max) ck->stall_s_max = stall;
}

/* Queue the shard write of `step`. defer = 0: copy the snapshot now (the
 * stall); defer = 1: the writer thread copies it while the next
 * forward/backward run, eng_ckpt_before_update waits for the copy. */
static const yk_trace_name T_SNAP = {"ckpt snapshot", "ckpt", "step", "deferred"};
static const yk_trace_name T_COPYW = {"ckpt copy wait", "ckpt", "step", NULL};
static const yk_trace_name T_SHARDW = {"ckpt shard wait", "ckpt", "step", NULL};
static const yk_trace_name T_COMMIT = {"ckpt commit", "ckpt", "step", NULL};

static int start_save(eng_ckpt *ck, int64_t step, int defer, yk_diag *d) {
  int rc;
  /* The previous operation (rank 0: maybe a commit) must be done. */
  if ((rc = yk_ckpt_writer_wait(ck->w, yk_deadline_in_ms(CKPT_WAIT_MS), d))) return rc;
  double t0 = yk_now_s();
  int64_t tt = yk_trace_begin(ck->tk);
  if ((rc = set_blobs(ck, step, d))) return rc;
  if ((rc = yk_ckpt_writer_save(ck->w, ck->st, step, defer ? YK_CKPT_DEFER_COPY : 0, d))) return rc;
  yk_trace_end(ck->tk, &T_SNAP, tt, (double)step, defer);
  double stall = yk_now_s() - t0;
  ck->pending = 1;
  ck->pending_step = step;
  ck->pending_t0 = yk_now_s();
  ck->last_saved = step;
  ck->deferred = defer;
  if (defer) {
    ck->deferred_stall_s = stall;
    return 0;
  }
  count_stall(ck, stall);
  if (ck->view.off)
    YK_INFO(ck->log, "ckpt: step %lld: writing the shard, the offloaded state streamed from %s (training waits "
            "for it)", (long long)step, ck->view.off->path);
  else
    YK_INFO(ck->log, "ckpt: step %lld: snapshot taken, training stalled %.1f ms; writing in the background",
            (long long)step, stall * 1e3);
  return 0;
}

int eng_ckpt_before_update(eng_ckpt *ck, yk_diag *d) {
  if (!ck->deferred) return 0;
  double t0 = yk_now_s();
  yk_diag t = {0};
  int64_t tt = yk_trace_begin(ck->tk);
  int rc = yk_ckpt_writer_release(ck->w, yk_deadline_in_ms(CKPT_WAIT_MS), &t);
  yk_trace_end(ck->tk, &T_COPYW, tt, (double)ck->pending_step, 0);
  ck->deferred = 0;
  if (rc) return yk_errorf(d, rc, "checkpoint step %lld: %s", (long long)ck->pending_step, yk_diag_msg(&t, rc));
  double waited = yk_now_s() - t0, stall = ck->deferred_stall_s + waited;
  count_stall(ck, stall);
  yk_ckpt_write_stats ws;
  yk_ckpt_writer_stats(ck->w, &ws);
  YK_INFO(ck->log, "ckpt: step %lld: snapshot copied in the background (%.1f ms) during forward/backward; training "
          "stalled %.1f ms; writing on", (long long)ck->pending_step, ws.copy_s * 1e3, stall * 1e3);
  return 0;
}

/* Synchronous completion of the pending save: wait for this rank's shard,
 * agree (barrier), rank 0 commits and waits, agree on the result. */
static int complete_pending(eng_ckpt *ck, yk_diag *d) {
  if (!ck->pending) return 0;
  if (ck->deferred) {
    int r0 = eng_ckpt_before_update(ck, d);
    if (r0) return r0;
  }
  yk_diag mine = {0};
  int64_t tt = yk_trace_begin(ck->tk);
  int rc = yk_ckpt_writer_wait(ck->w, yk_deadline_in_ms(CKPT_WAIT_MS), &mine);
  yk_trace_end(ck->tk, &T_SHARDW, tt, (double)ck->pending_step, 0);
  int32_t f[1] = {rc ? 1 : 0};
  if (rc) YK_ERROR(ck->log, "ckpt: shard of step %lld: %s", (long long)ck->pending_step, yk_diag_msg(&mine, rc));
  if (!rc) log_written(ck, ck->pending_step);
  int ar = agree_max(ck, f, 1, d);
  if (ar) return ar;
  if (f[0]) {
    if (rc) {
      *d = mine;
      return rc;
    }
    return yk_errorf(d, YK_EIO, "checkpoint step %lld: another rank failed to write its shard (see its error)",
                     (long long)ck->pending_step);
  }
  rc = 0;
  if (is_root(ck)) {
    double t0 = yk_now_s();
    int64_t tc = yk_trace_begin(ck->tk);
    rc = yk_ckpt_writer_commit(ck->w, &mine);
    if (!rc) rc = yk_ckpt_writer_wait(ck->w, yk_deadline_in_ms(CKPT_WAIT_MS), &mine);
    yk_trace_end(ck->tk, &T_COMMIT, tc, (double)ck->pending_step, 0);
    /* the commit itself logs "ckpt: committed DIR (world W)" once */
    if (!rc) YK_DEBUG(ck->log, "ckpt: commit of step %lld took %.3f s", (long long)ck->pending_step, yk_now_s() - t0);
  }
  f[0] = rc ? 1 : 0;
  ck->pending = 0;
  if ((ar = agree_max(ck, f, 1, d))) return ar;
  if (rc) {
    *d = mine;
    return rc;
  }
  if (f[0]) return yk_errorf(d, YK_EIO, "checkpoint step %lld: rank 0 failed to commit it (see its error)",
                             (long long)ck->pending_step);
  return 0;
}

static int save_sync(eng_ckpt *ck, int64_t step, yk_diag *d) {
  int rc;
  if ((rc = complete_pending(ck, d))) return rc;
  if (ck->last_saved == step) return 0; /* already on disk (resumed at this step, or saved) */
  double t0 = yk_now_s(), before = ck->stall_s_total;
  if ((rc = start_save(ck, step, 0, d))) return rc;
  rc = complete_pending(ck, d);
  if (!rc && ck->view.off) {
    /* offload: training waited for the whole write, so that is the stall */
    double all = yk_now_s() - t0;
    ck->stall_s_total = before + all;
    if (all > ck->stall_s_max) ck->stall_s_max = all;
  }
  return rc;
}

int eng_ckpt_boundary(eng_ckpt *ck, int64_t step_done, int *stop, int *exit_code, yk_diag *d) {
  *stop = 0;
  int64_t stop_after = ck->cfg->train.stop_after;
  if (stop_after > 0 && step_done == stop_after && !ck->stop_requested) {
    YK_WARN(ck->log, "train.stop_after=%lld: checkpoint, then exit %d as if preempted", (long long)stop_after,
            YK_EXIT_REQUEUE);
    eng_ckpt_request_stop(ck, YK_EXIT_REQUEUE);
  }
  /* This rank's part: a background save or commit still running, or failed. */
  /* f[3]: elastic, the newest epoch any rank heard of: all re-form at this
   * same boundary even when the REFORM reached some of them later */
  int32_t f[4] = {ck->stop_requested, 0, 0, (int32_t)ck->reform_seen};
  if (ck->w) {
    int p = yk_ckpt_writer_poll(ck->w);
    if (p < 0) f[2] = 1; /* the writer thread logged the reason */
    else if (p == 0) f[1] = 1;
  }
  int local_err = f[2];
  int rc = agree_max(ck, f, 4, d);
  if (rc) return rc;
  ck->reform_agreed = (uint32_t)f[3];
  if (f[2])
    return yk_errorf(d, YK_EIO, "checkpoint step %lld could not be %s on %s (see the ckpt error there); check "
                     "ckpt.dir=%s (space, permissions) or unset it", (long long)ck->pending_step,
                     ck->pending ? "written" : "committed", local_err ? "this rank" : "another rank",
                     ck->cfg->ckpt.dir);
  if (ck->pending && !f[1]) {
    /* Every rank's shard is durable: rank 0 commits in its writer thread. */
    if (ck->deferred && (rc = eng_ckpt_before_update(ck, d))) return rc; /* copy long done: just account */
    log_written(ck, ck->pending_step);
    if (is_root(ck) && (rc = yk_ckpt_writer_commit(ck->w, d))) return rc;
    if (is_root(ck))
      YK_INFO(ck->log, "ckpt: committing step %lld (%.2f s after its snapshot)", (long long)ck->pending_step,
              yk_now_s() - ck->pending_t0);
    ck->pending = 0;
  }
  if (f[0]) {
    /* A stop: every rank is at this same boundary and agreed on the code
     * (the largest requested: an interrupt wins over a preemption). */
    int code = f[0];
    *stop = 1;
    if (!ck->enabled) {
      YK_WARN(ck->log, "%s requested but ckpt.dir is not set: stopping at step %lld without a checkpoint",
              code == YK_EXIT_REQUEUE ? "preemption" : "stop", (long long)step_done);
      *exit_code = code == YK_EXIT_REQUEUE ? YK_EXIT_SIGTERM : code;
      return 0;
    }
    if ((rc = save_sync(ck, step_done, d))) return rc;
    if (code == YK_EXIT_REQUEUE)
      YK_WARN(ck->log, "preempted: checkpoint of step %lld is committed; exiting %d so the job is requeued "
              "(resume with --resume latest)", (long long)step_done, YK_EXIT_REQUEUE);
    else
      YK_WARN(ck->log, "stopped: checkpoint of step %lld is committed; exiting %d (resume with --resume latest)",
              (long long)step_done, code);
    *exit_code = code;
    return 0;
  }
  int64_t every = ck->cfg->ckpt.every;
  /* (step 0 is the start, nothing to save: an elastic job's boundary runs before its first step too) */
  if (!ck->enabled || every <= 0 || step_done <= 0 || step_done % every != 0 || ck->last_saved == step_done) return 0;
  /* optim.offload=disk: the next update rewrites the file the save streams
   * from, so the save is synchronous (and holds no snapshot) */
  if (!ck->cfg->ckpt.async || ck->view.off) return save_sync(ck, step_done, d);
  if (ck->pending) {
    /* The previous save is still being written somewhere: finish it first
     * (this stalls; raise ckpt.every if it shows up in the log). */
    YK_WARN(ck->log, "ckpt: save of step %lld is still running at step %lld; waiting for it", (long long)ck->pending_step,
            (long long)step_done);
    if ((rc = complete_pending(ck, d))) return rc;
  }
  return start_save(ck, step_done, 1, d);
}

int eng_ckpt_finish(eng_ckpt *ck, int64_t step_done, yk_diag *d) {
  if (!ck->enabled) return 0;
  int rc = save_sync(ck, step_done, d);
  if (rc) return rc;
  if (ck->saves)
    YK_INFO(ck->log, "ckpt: %d save%s, training stall %.1f ms mean, %.1f ms max; background write %.2f s mean",
            ck->saves, ck->saves == 1 ? "" : "s", ck->stall_s_total / ck->saves * 1e3, ck->stall_s_max * 1e3,
            ck->write_s_total / ck->saves);
  return 0;
}

void eng_ckpt_close(eng_ckpt *ck) {
  if (ck->w) {
    yk_diag t = {0};
    int rc = yk_ckpt_writer_wait(ck->w, yk_deadline_in_ms(CKPT_WAIT_MS), &t);
    if (rc && rc != YK_ETIMEDOUT) YK_WARN(ck->log, "ckpt: %s", yk_diag_msg(&t, rc));
    if (rc != YK_ETIMEDOUT) yk_ckpt_writer_free(ck->w); /* free would block on a hung writer */
    ck->w = NULL;
  }
  yk_ckpt_state_free(ck->st);
  ck->st = NULL;
}
