/* select.c - which algorithm runs an operation: the α-β-γ cost model
 * (docs/collectives.md, "Cost model and calibration"), its constants file,
 * and the choice of a row of the algorithm table (algos.c) from the
 * operation, its size, the number of ranks, the board's state and a forced
 * comm.algo. Pure functions of the communicator's settings: every rank
 * makes the same choice.
 *
 * Constants file, written by `yoke bench coll --calibrate` and read by
 * yk_comm_create (opts.model_file): text lines "key value", keys alpha_us,
 * beta_ns, gamma_ns, shm_gbs; '#' starts a comment. */
#include <stdlib.h>
#include <string.h>

#include "coll_internal.h"

static const char *const algo_names[] = {"auto", "ring", "tree", "shm", "hier"};

const char *yk_algo_name(yk_algo a) { return (unsigned)a < YK_ALGO_COUNT_ ? algo_names[a] : "?"; }
int yk_algo_parse(const char *s, yk_algo *out) {
  for (int i = 0; i < YK_ALGO_COUNT_; i++)
    if (s && !strcmp(s, algo_names[i])) return *out = (yk_algo)i, 0;
  return YK_EINVAL;
}

void yk_coll_model_default(yk_coll_model *m) { *m = (yk_coll_model){.alpha_us = 8, .beta_ns = 0.25, .gamma_ns = 0.15}; }

int yk_coll_model_load(const char *path, coll_model *m, yk_diag *d) {
  char *buf = NULL;
  size_t len = 0;
  int rc = yk_file_read(path, &buf, &len, d);
  if (rc) return rc;
  int line = 0;
  for (char *s = strtok(buf, "\n"); s; s = strtok(NULL, "\n")) {
    line++;
    while (*s == ' ' || *s == '\t') s++;
    if (!*s || *s == '#') continue;
    char key[32];
    double v;
    if (sscanf(s, "%31s %lf", key, &v) != 2 || v < 0) {
      rc = yk_errorf(d, YK_EFORMAT, "%s:%d: expected 'key value' with a non-negative number, got '%s'", path, line, s);
      free(buf);
      return rc;
    }
    if (!strcmp(key, "alpha_us")) m->alpha_us = v;
    else if (!strcmp(key, "beta_ns")) m->beta_ns = v;
    else if (!strcmp(key, "gamma_ns")) m->gamma_ns = v;
    else if (!strcmp(key, "shm_gbs")) m->shm_gbs = v;
    else {
      free(buf);
      return yk_errorf(d, YK_EFORMAT, "%s:%d: unknown key '%s' (alpha_us, beta_ns, gamma_ns, shm_gbs)", path, line,
                       key);
    }
  }
  free(buf);
  return 0;
}

/* The two members of the logarithmic family on p' (the largest power of two
 * <= p), in seconds: recursive doubling (log2 p' whole-vector exchanges) and
 * Rabenseifner (halving + doubling). Returns p'. */
static int tree_times(const coll_model *m, int p, double bytes, double *rd, double *rhd) {
  double n = (double)bytes, a_s = m->alpha_us * 1e-6, b_s = m->beta_ns * 1e-9, g_s = m->gamma_ns * 1e-9;
  int pof2 = 1, lg = 0;
  while (pof2 * 2 <= p) pof2 *= 2, lg++;
  *rd = lg * (a_s + n * b_s + n * g_s);
  *rhd = 2.0 * lg * a_s + 2.0 * (pof2 - 1) / pof2 * n * b_s + (double)(pof2 - 1) / pof2 * n * g_s;
  return pof2;
}

/* Predicted time (s) of an all-reduce of `bytes` on p ranks. */
static double model_time(const coll_model *m, yk_algo a, int p, size_t bytes) {
  if (a != YK_ALGO_RING && a != YK_ALGO_TREE) return 1e30;
  return yk_coll_model_time(m, YK_COLL_ALLREDUCE, a, p, (double)bytes);
}

double yk_coll_model_time(const yk_coll_model *m, yk_coll_kind k, yk_algo a, int p, double bytes) {
  double n = bytes, a_s = m->alpha_us * 1e-6, b_s = m->beta_ns * 1e-9, g_s = m->gamma_ns * 1e-9;
  if (p <= 1) return 0;
  /* the two ring halves: p-1 steps, each sends and receives 1/p of the vector
   * (the reduce-scatter also reduces what it receives) */
  if (k == YK_COLL_REDUCE_SCATTER) return (p - 1) * a_s + (double)(p - 1) / p * n * (b_s + g_s);
  if (k == YK_COLL_ALLGATHER) return (p - 1) * a_s + (double)(p - 1) / p * n * b_s;
  if (a == YK_ALGO_TREE) {
    /* the cheaper of recursive doubling and Rabenseifner */
    double rd, rhd;
    int pof2 = tree_times(m, p, bytes, &rd, &rhd);
    double t = rd < rhd ? rd : rhd;
    if (pof2 != p) t += 2 * (a_s + n * b_s) + n * g_s;
    return t;
  }
  return 2.0 * (p - 1) * a_s + 2.0 * (p - 1) / p * n * b_s + (double)(p - 1) / p * n * g_s;
}

yk_algo yk_comm_pick_algo(const yk_comm *c, size_t bytes) {
  if (c->algo == YK_ALGO_RING || c->algo == YK_ALGO_TREE) return c->algo;
  /* Several nodes with several ranks each: the node's board around an
   * all-reduce across nodes on 1/ppn of the data (small messages: the
   * model's choice, one latency-bound exchange is cheaper). */
  if (c->hier_local && (c->algo == YK_ALGO_AUTO || c->algo == YK_ALGO_HIER) && bytes > c->hier_local->shm_oneshot)
    return YK_ALGO_HIER;
  /* One host: the shared board (one-shot for small messages, a direct
   * two-shot for large ones when the ranks can read each other's memory).
   * Hier is not built yet: it falls back to the model's choice. */
  if (c->shm_ok && (bytes <= c->shm_oneshot || c->cma_ok)) return YK_ALGO_SHM;
  double tr = model_time(&c->model, YK_ALGO_RING, c->size, bytes);
  double tt = model_time(&c->model, YK_ALGO_TREE, c->size, bytes);
  return tt < tr ? YK_ALGO_TREE : YK_ALGO_RING;
}

/* The algorithm family of one operation on two or more ranks: all-reduces
 * as yk_comm_pick_algo; reduce-scatter, all-gather and reduce-to-owners on
 * the board when the ranks can read each other's memory and nothing forces
 * the network; everything else on the ring. */
static yk_algo op_algo(const yk_comm *c, const struct yk_request *r) {
  size_t bytes = r->count * yk_dtype_size(r->dtype);
  if (r->kind == OPK_ALLREDUCE) return yk_comm_pick_algo(c, bytes);
  if ((r->kind == OPK_REDUCE_SCATTER || r->kind == OPK_ALLGATHER || r->kind == OPK_REDUCE_OWNED) && c->shm_ok &&
      c->cma_ok &&
      (c->algo == YK_ALGO_AUTO || c->algo == YK_ALGO_SHM || c->algo == YK_ALGO_HIER))
    return YK_ALGO_SHM;
  return YK_ALGO_RING;
}

coll_algo_id coll_select(const yk_comm *c, const struct yk_request *r) {
  if (c->size < 2) return COLL_ALGO_ONE;
  switch (op_algo(c, r)) {
  case YK_ALGO_SHM: return COLL_ALGO_SHM;
  case YK_ALGO_HIER: return COLL_ALGO_HIER;
  case YK_ALGO_TREE: {
    /* within the logarithmic family, the cheaper member */
    double rd, rhd;
    tree_times(&c->model, c->size, (double)(r->count * yk_dtype_size(r->dtype)), &rd, &rhd);
    return rhd < rd ? COLL_ALGO_RHD : COLL_ALGO_RD;
  }
  default: return COLL_ALGO_RING;
  }
}
