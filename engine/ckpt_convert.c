/* ckpt_convert.c - `yoke ckpt convert --layout`: a checkpoint rewritten
 * offline at another DP x TP x PP layout, as the ranks of that layout would
 * have saved it. It is the resume's resharding (engine/ckpt.c) run for every
 * target rank in turn: each arena whole (yk_engine_ckpt_read_whole), each
 * rank's piece cut from it (eng_ckpt_piece), registered as that rank
 * registers it (the name of its TP rank and stage, its stage's tensor table,
 * saved by its data-parallel group) and written with the checkpoint writer.
 * So a run that resumes from the result at the target layout loads what a
 * run resharding the original while loading would: the same bits. */
#include "engine_internal.h"

#include <stdlib.h>
#include <string.h>

/* The model arenas a checkpoint of the engine holds (ckpt.c registers them
 * in this order). params16 is there in fp16/bf16 runs only. */
static const char *const BASES[] = {"params", "m", "v", "params16"};
#define NBASES 4

typedef struct src_arena {
  float *whole;  /* yk_model_config_num_params floats, or NULL: absent */
  yk_dtype dt;   /* as saved */
} src_arena;

/* The saved dtype of arena base (from its first piece), or YK_ENOTFOUND. */
static int saved_dtype(yk_ckpt_reader *r, const char *base, yk_dtype *dt) {
  yk_layout l;
  yk_ckpt_reader_layout(r, &l, NULL);
  char name[48];
  yk_ckpt_arena_name_stage(name, sizeof name, base, l.tp, 0, l.pp, 0);
  yk_ckpt_arena_info a;
  if (yk_ckpt_reader_find_arena(r, name, &a, NULL)) return YK_ENOTFOUND;
  *dt = a.dtype;
  return 0;
}

/* One target rank's shard: its pieces of every arena, named and registered
 * as eng_ckpt_open registers them, then written. */
static int write_rank(yk_ckpt_reader *r, const yk_model_config *mc, const yk_engine_ckpt_convert_opts *o,
                      const yk_layout *lay, const yk_pipe_plan *plan, src_arena *src, const char *yaml,
                      yk_ckpt_opts *wo, yk_diag *d) {
  yk_model_stage st, *stage = NULL;
  if (lay->pp > 1) {
    eng_pipe_stage(plan, lay->pp_rank, &st);
    stage = &st;
  }
  yk_tensor_desc *t = NULL;
  int nt = 0, rc;
  size_t n = 0;
  if ((rc = yk_model_stage_table(mc, lay->tp, lay->tp_rank, stage, &t, &nt, &n, d))) return rc;
  size_t ntp = yk_model_tp_num_params(mc, lay->tp, lay->tp_rank);
  float *tpw = malloc((ntp ? ntp : 1) * sizeof(float)), *mine = malloc((n ? n : 1) * sizeof(float));
  void *piece[NBASES] = {0};
  yk_ckpt_state *s = NULL;
  if (!tpw || !mine || yk_ckpt_state_create(&s)) rc = yk_errorf(d, YK_ENOMEM, "out of memory for rank %d's pieces "
                                                                "(%zu floats)", lay->rank, n);
  for (int b = 0; b < NBASES && !rc; b++) {
    if (!src[b].whole) continue;
    if (!(piece[b] = malloc((n ? n : 1) * yk_dtype_size(src[b].dt)))) {
      rc = yk_errorf(d, YK_ENOMEM, "out of memory for rank %d's piece of '%s' (%zu elements)", lay->rank, BASES[b], n);
      break;
    }
    char nm[48];
    yk_ckpt_arena_name_stage(nm, sizeof nm, BASES[b], lay->tp, lay->tp_rank, lay->pp, lay->pp_rank);
    if (!(rc = eng_ckpt_piece(mc, lay->tp, lay->tp_rank, stage, src[b].whole, tpw, mine, piece[b], src[b].dt, 0, n,
                              d)))
      rc = yk_ckpt_state_add_arena_group(s, nm, src[b].dt, piece[b], n, 0, n, lay->dp_rank, lay->dp, t, nt, d);
  }
  if (!rc) rc = yk_ckpt_state_set_layout(s, lay, (int)o->cfg->parallel.sequence, d);
  const char *mj = yk_ckpt_reader_model_json(r);
  if (!rc && mj) rc = yk_ckpt_state_set_model_json(s, mj, d);
  if (!rc && yaml) rc = yk_ckpt_state_set_config_yaml(s, yaml, d);
  /* The global blobs (step, data position, loss scaler) go with rank 0's
   * shard; the engine writes no per-rank blobs. */
  for (int i = 0; !rc && lay->rank == 0 && i < yk_ckpt_reader_blob_count(r); i++) {
    const char *name;
    int brank;
    yk_ckpt_reader_blob_info(r, i, &name, &brank, NULL);
    if (brank >= 0) continue;
    void *data = NULL;
    size_t len = 0;
    if (!(rc = yk_ckpt_reader_blob(r, name, -1, &data, &len, d))) rc = yk_ckpt_state_set_blob(s, name, data, len, 0, d);
    free(data);
  }
  wo->rank = lay->rank;
  if (!rc) rc = yk_ckpt_write_shard(wo, s, yk_ckpt_reader_step(r), NULL, d);
  yk_ckpt_state_free(s);
  for (int b = 0; b < NBASES; b++) free(piece[b]);
  free(tpw);
  free(mine);
  free(t);
  return rc;
}

int yk_engine_ckpt_convert(yk_ckpt_reader *r, const yk_model_config *mcfg, const yk_engine_ckpt_convert_opts *o,
                           yk_diag *d) {
  const yk_config *c = o->cfg;
  int tp = (int)c->parallel.tensor, pp = (int)c->parallel.pipeline, dp = o->dp, rc;
  if (!o->dir || !o->dir[0]) return yk_errorf(d, YK_EINVAL, "no output directory given (--out DIR)");
  if (dp < 1 || tp < 1 || pp < 1 || (int64_t)dp * tp * pp > 99999)
    return yk_errorf(d, YK_ECONFIG, "layout dp=%d x tp=%d x pp=%d is not a valid layout; give degrees >= 1", dp, tp, pp);
  yk_model_config mc = *mcfg;
  if ((rc = yk_model_config_finish(&mc, d))) return rc;
  /* Every check a run at the target layout would make before training. */
  if ((rc = yk_model_tp_check(&mc, (int)c->train.micro_batch, (int)c->train.seq_len, tp, (int)c->parallel.sequence,
                              d)))
    return rc;
  yk_pipe_plan plan = {0};
  if (pp > 1 && (rc = yk_engine_pipe_plan(c, &mc, &plan, d))) return rc;
  size_t nw = yk_model_config_num_params(&mc);
  src_arena src[NBASES] = {{0}};
  int world = dp * tp * pp;
  for (int b = 0; b < NBASES && !rc; b++) {
    yk_dtype dt;
    if (saved_dtype(r, BASES[b], &dt)) {
      if (b < 3) rc = yk_errorf(d, YK_ENOTFOUND, "%s has no arena '%s' (of any layout): not a training checkpoint of "
                                "yoke train (see 'yoke ckpt inspect %s')", yk_ckpt_reader_path(r), BASES[b],
                                yk_ckpt_reader_path(r));
      continue;
    }
    src[b].dt = dt;
    if (!(src[b].whole = malloc(nw * sizeof(float))))
      rc = yk_errorf(d, YK_ENOMEM, "out of memory for arena '%s' whole (%zu floats)", BASES[b], nw);
    else rc = yk_engine_ckpt_read_whole(r, BASES[b], &mc, src[b].whole, d);
  }
  char *yaml = rc ? NULL : eng_ckpt_config_yaml(c);
  if (!rc && !yaml) rc = yk_errorf(d, YK_ENOMEM, "out of memory");
  yk_ckpt_opts wo;
  yk_ckpt_opts_default(&wo);
  wo.dir = o->dir;
  wo.world = world;
  wo.level = o->level;
  wo.threads = o->threads;
  wo.keep = 0;
  wo.log = o->log;
  wo.buffered_io = 1;
  for (int q = 0; q < world && !rc; q++) {
    yk_layout lay;
    if (!(rc = yk_partition_layout(world, tp, pp, q, &lay, d))) rc = write_rank(r, &mc, o, &lay, &plan, src, yaml, &wo, d);
  }
  if (!rc) rc = yk_ckpt_commit(&wo, yk_ckpt_reader_step(r), d);
  free(yaml);
  for (int b = 0; b < NBASES; b++) free(src[b].whole);
  return rc;
}
