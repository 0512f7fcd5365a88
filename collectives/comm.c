/* comm.c - communicators: create (identities, transport, hello to every
 * peer, the comm thread, the board, hier's child communicators), split,
 * destroy, options and accessors. The top of the module: the operations
 * are in queue.c, the algorithms in algo_*.c listed by algos.c, the choice
 * in select.c, point-to-point and failure handling in p2p.c. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "coll_internal.h"

void yk_comm_opts_default(yk_comm_opts *o) {
  memset(o, 0, sizeof *o);
  o->transport = "auto";
  o->algo = "auto";
  o->timeout_ms = 60000;
}

void yk_comm_opts_from_config(yk_comm_opts *o, const yk_config *c) {
  yk_comm_opts_default(o);
  o->transport = c->comm.transport;
  o->provider = c->comm.provider[0] ? c->comm.provider : NULL;
  o->algo = c->comm.algo;
  o->timeout_ms = (uint64_t)c->comm.timeout_ms;
  o->fusion_bytes = (size_t)c->comm.fusion_kb * 1024;
}

/* partition's even split over this communicator's ranks (coll_range) */
void yk_comm_range(const yk_comm *c, int rank, size_t count, size_t *off, size_t *len) {
  coll_range(count, c->size, rank, off, len);
}

int yk_comm_rank(const yk_comm *c) { return c->rank; }
int yk_comm_size(const yk_comm *c) { return c->size; }
uint32_t yk_comm_epoch(const yk_comm *c) { return c->epoch; }
const char *yk_comm_transport_name(const yk_comm *c) { return c->tname; }
const char *yk_comm_host(const yk_comm *c, int rank) { return coll_host(c, rank); }
int yk_comm_is_broken(const yk_comm *c) { return atomic_load(&((yk_comm *)c)->broken); }
void yk_comm_set_algo(yk_comm *c, yk_algo a) { c->algo = a; }

/* ---- creation / destruction -------------------------------------------- */

/* Say hello to every peer (ring neighbours only beyond 64 ranks) before the
 * first operation. Providers that connect lazily (shm maps the peer's
 * region when its first message is processed, rxm sets up a connection)
 * then have every path ready, so a rank that fails and exits right after
 * its ABORT notice still gets it delivered. */
static int handshake(yk_comm *c, yk_diag *d) {
  int p = c->size;
  if (p < 2) return 0;
  int *peers = calloc((size_t)p, sizeof(int)), np = 0;
  xreq *x = calloc((size_t)p * 2, sizeof(xreq));
  static const char hello[8] = "yk-hi";
  char *in = calloc((size_t)p, 8);
  if (!peers || !x || !in) {
    free(peers), free(x), free(in);
    return yk_errorf(d, YK_ENOMEM, "out of memory");
  }
  for (int i = 1; i < p; i++) {
    if (p > 64 && i != 1 && i != p - 1) continue;
    peers[np++] = (c->rank + i) % p;
  }
  uint64_t now = yk_now_ns(), t = c->timeout_ms * 1000000ull;
  c->op_deadline = now + t;
  c->stall_deadline = now + t - YK_MIN(t / 4, 2000000000ull);
  uint64_t tag = coll_tag(0, c->epoch, c->comm_id, 0x68690000u);
  int rc = 0;
  for (int i = 0; i < np && !rc; i++) rc = coll_irecv(c, (c->rank - (peers[i] - c->rank) + 2 * p) % p, tag, in + 8 * i, 8, &x[i], d);
  for (int i = 0; i < np && !rc; i++) rc = coll_isend(c, peers[i], tag, hello, sizeof hello, &x[np + i], d);
  for (int i = 0; i < np && !rc; i++) rc = coll_wait(c, &x[i], (c->rank - (peers[i] - c->rank) + 2 * p) % p, d);
  for (int i = 0; i < np && !rc; i++) rc = coll_wait(c, &x[np + i], peers[i], d);
  if (rc) {
    /* requests may still be posted: keep x alive with the communicator */
    c->hello_reqs = x;
    c->hello_buf = in;
    x = NULL;
    in = NULL;
  }
  free(peers), free(x), free(in);
  return rc;
}

static int comm_init_common(yk_comm *c, yk_diag *d) {
  c->algos = coll_algos;
  pthread_mutex_init(&c->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&c->cv, &ca);
  pthread_condattr_destroy(&ca);
  c->ctrl_sends = calloc((size_t)c->size, sizeof(xreq));
  c->ctrl_sbuf = calloc((size_t)c->size, sizeof(coll_ctrl));
  c->stuck_for = calloc((size_t)c->size, sizeof(int));
  c->stuck_hdr = calloc((size_t)c->size, sizeof(coll_hdr));
  if (!c->ctrl_sends || !c->ctrl_sbuf || !c->stuck_for || !c->stuck_hdr)
    return yk_errorf(d, YK_ENOMEM, "out of memory creating a communicator of %d ranks", c->size);
  coll_ctrl_start(c);
  int rc = handshake(c, d);
  if (rc) return rc;
  return coll_queue_start(c, d);
}

/* The shared-memory board of ranks on one node (algo_shm.c does the local
 * steps): rank 0 creates it and broadcasts its name, the others map it,
 * after a barrier rank 0 unlinks it (nothing is left in /dev/shm even after
 * a crash), and a min all-reduce of every rank's probe turns it on for all
 * ranks or for none. Fails only when a collective fails. */
static int board_setup(yk_comm *c, size_t oneshot, yk_diag *d) {
  int32_t name32[COLL_SHM_NAME / 4];
  char *name = (char *)name32;
  if (!coll_shm_open(c, oneshot, name)) return 0;
  int rc = yk_comm_broadcast_sync(c, name32, COLL_SHM_NAME / 4, YK_DT_I32, 0, d);
  if (!rc) {
    coll_shm_attach(c, name);
    rc = yk_comm_barrier_sync(c, d);
  }
  coll_shm_unlink(c, name);
  if (rc) return rc;
  int32_t ok[2];
  coll_shm_probe(c, ok);
  rc = yk_comm_allreduce_sync(c, ok, ok, 2, YK_DT_I32, YK_OP_MIN, d);
  if (!rc) coll_shm_agree(c, ok);
  return rc;
}

static int env_algo(const char *cfg, yk_algo *out, yk_diag *d) {
  const char *e = getenv("YK_ALGO");
  const char *s = e && *e ? e : cfg && *cfg ? cfg : "auto";
  if (yk_algo_parse(s, out))
    return yk_errorf(d, YK_ECONFIG, "%s='%s' is not an algorithm: use auto, ring, tree, shm or hier",
                     e && *e ? "YK_ALGO" : "comm.algo", s);
  return 0;
}

/* Hierarchical groups when the ranks span nodes and every node holds the
 * same number (2..64) of ranks: a communicator per node (with its board)
 * and one per local rank across the nodes. All ranks agree, or nobody uses
 * hier. */
static int hier_setup(yk_comm *c, yk_diag *d) {
  int n = c->size, nodes = 0, ppn = -1, even = 1, lrank = 0;
  for (int i = 0; i < n; i++) {
    if (c->node[i] != i) continue;
    nodes++;
    int cnt = 0;
    for (int j = 0; j < n; j++) cnt += c->node[j] == i;
    if (ppn < 0) ppn = cnt;
    even &= cnt == ppn;
  }
  for (int j = 0; j < c->rank; j++) lrank += c->node[j] == c->node[c->rank];
  if (nodes < 2 || !even || ppn < 2 || ppn > YK_COLL_MAX_SHM_RANKS) return 0;
  yk_comm *lc = NULL, *xc = NULL;
  int rc = yk_comm_split(c, c->node[c->rank], c->rank, &lc, d);
  if (!rc) rc = yk_comm_split(c, lrank, c->rank, &xc, d);
  int32_t ok = !rc && lc && xc && lc->shm_ok && lc->cma_ok;
  if (!rc) rc = yk_comm_allreduce_sync(c, &ok, &ok, 1, YK_DT_I32, YK_OP_MIN, d);
  if (rc || !ok) {
    yk_comm_destroy(xc);
    yk_comm_destroy(lc);
    if (!rc && c->rank == 0)
      yk_log(&c->log, YK_LOG_INFO, "collectives: %d nodes x %d ranks, but a node has no shared-memory board: no "
                                   "hierarchical all-reduce", nodes, ppn);
    return rc;
  }
  lc->algo = xc->algo = c->algo == YK_ALGO_HIER ? YK_ALGO_AUTO : c->algo;
  c->hier_local = lc;
  c->hier_cross = xc;
  return 0;
}

int yk_comm_create(const yk_comm_opts *opts_in, yk_bootstrap *b, yk_comm **out, yk_diag *d) {
  *out = NULL;
  yk_comm_opts opts;
  if (opts_in) opts = *opts_in;
  else yk_comm_opts_default(&opts);
  if (!b || b->size < 1 || b->rank < 0 || b->rank >= b->size)
    return yk_errorf(d, YK_EINVAL, "yk_comm_create: bad bootstrap (rank %d of %d)", b ? b->rank : -1,
                     b ? b->size : 0);
  yk_algo algo = YK_ALGO_AUTO;
  int rc = env_algo(opts.algo, &algo, d);
  if (rc) return rc;
  const char *tr = opts.transport && *opts.transport ? opts.transport : "auto";
  if (strcmp(tr, "auto") && strcmp(tr, "inproc") && strcmp(tr, "mpi") && strcmp(tr, "libfabric"))
    return yk_errorf(d, YK_ECONFIG, "comm.transport='%s' is unknown: use auto, inproc, mpi or libfabric", tr);
  yk_comm *c = calloc(1, sizeof *c);
  if (!c) return yk_errorf(d, YK_ENOMEM, "out of memory for a communicator");
  c->rank = b->rank;
  c->size = b->size;
  c->culprit = -1;
  c->epoch = opts.epoch;
  c->comm_id = 1;
  c->timeout_ms = opts.timeout_ms ? opts.timeout_ms : 60000;
  c->seg_bytes = opts.segment_bytes ? opts.segment_bytes : 256 * 1024;
  c->seg_explicit = opts.segment_bytes != 0;
  c->algo = algo;
  yk_coll_model_default(&c->model);
  if (opts.log) c->log = *opts.log;
  else yk_logger_init(&c->log, b->rank, YK_LOG_INFO, NULL);
  if (opts.model_file && *opts.model_file) {
    rc = yk_coll_model_load(opts.model_file, &c->model, d);
    if (rc) goto fail;
  }
  c->xrank = calloc((size_t)c->size, sizeof(int));
  c->hosts = calloc((size_t)c->size, sizeof *c->hosts);
  if (!c->xrank || !c->hosts) {
    rc = yk_errorf(d, YK_ENOMEM, "out of memory for a communicator of %d ranks", c->size);
    goto fail;
  }
  for (int i = 0; i < c->size; i++) c->xrank[i] = i;
  /* identity: host name, network namespace, pid and pid namespace (so that
   * a peer on this host can be checked for liveness with kill(pid, 0)). Two
   * ranks share a host only if they also share the network namespace: a
   * container or a test host in its own namespace is treated as another
   * machine (the shm provider is not assumed to reach it). */
  typedef struct ident {
    char host[64];
    char netns[48];
    char pidns[48];
    int64_t pid;
  } ident;
  ident me, *ids = calloc((size_t)c->size, sizeof(ident));
  c->pids = calloc((size_t)c->size, sizeof(int64_t));
  if (!ids || !c->pids) {
    free(ids);
    rc = yk_errorf(d, YK_ENOMEM, "out of memory");
    goto fail;
  }
  memset(&me, 0, sizeof me);
  gethostname(me.host, sizeof me.host - 1);
  ssize_t nl = readlink("/proc/self/ns/pid", me.pidns, sizeof me.pidns - 1);
  if (nl < 0) me.pidns[0] = 0;
  nl = readlink("/proc/self/ns/net", me.netns, sizeof me.netns - 1);
  if (nl < 0) me.netns[0] = 0;
  me.pid = (int64_t)getpid();
  uint64_t dl = yk_deadline_in_ms(c->timeout_ms);
  rc = b->allgather(b, &me, sizeof me, ids, dl, d);
  if (rc) {
    free(ids);
    goto fail;
  }
  int same_host = 1;
  c->node = calloc((size_t)c->size, sizeof(int));
  if (!c->node) {
    free(ids);
    rc = yk_errorf(d, YK_ENOMEM, "out of memory");
    goto fail;
  }
  for (int i = 0; i < c->size; i++) {
    memcpy(c->hosts[i], ids[i].host, sizeof c->hosts[i]);
    same_host &= !strcmp(ids[i].host, ids[0].host) && !strcmp(ids[i].netns, ids[0].netns);
    /* a node: one host, network and pid namespace (an unknown pid namespace
     * makes a rank its own node) */
    c->node[i] = i;
    for (int j = 0; j < i && ids[i].pidns[0]; j++)
      if (!strcmp(ids[i].host, ids[j].host) && !strcmp(ids[i].netns, ids[j].netns) &&
          !strcmp(ids[i].pidns, ids[j].pidns)) {
        c->node[i] = j;
        break;
      }
    /* liveness by pid only for other processes in our host and pid namespace */
    int local = !strcmp(ids[i].host, me.host) && me.pidns[0] && !strcmp(ids[i].pidns, me.pidns);
    c->pids[i] = local && ids[i].pid != me.pid ? ids[i].pid : 0;
  }
  free(ids);
  if (!strcmp(tr, "auto")) tr = !strcmp(b->kind, "inproc") ? "inproc" : "libfabric";
  if (!strcmp(tr, "inproc")) rc = xport_inproc_create(b, &c->x, d);
  else if (!strcmp(tr, "mpi")) rc = xport_mpi_create(b, &c->x, d);
  else {
    const char *prov = opts.provider && *opts.provider ? opts.provider : same_host ? "shm" : "tcp;ofi_rxm";
    rc = xport_ofi_create(b, prov, c->timeout_ms, &c->x, d);
    /* Network providers: 1 MiB ring segments (per-message costs of rxm's
     * rendezvous over TCP dominate at 256 KiB); the board keeps 256 KiB
     * blocks, which stay in L2. */
    if (!opts.segment_bytes && strcmp(prov, "shm")) c->seg_bytes = 1024 * 1024;
  }
  if (rc) goto fail;
  c->x->same_host = same_host;
  c->inline_ok = strcmp(tr, "libfabric") != 0;
  snprintf(c->tname, sizeof c->tname, "%s", c->x->name);
  rc = comm_init_common(c, d);
  if (!rc) rc = board_setup(c, opts.shm_oneshot_bytes, d);
  if (!rc) rc = hier_setup(c, d);
  if (rc) goto fail;
  *out = c;
  return 0;
fail:
  yk_comm_destroy(c);
  return rc;
}

static uint32_t mix32(uint32_t a, uint32_t b) {
  uint32_t h = a * 0x9e3779b1u ^ (b + 0x7f4a7c15u + (a << 6) + (a >> 2));
  h ^= h >> 15;
  h *= 0x2c1b3c6du;
  h ^= h >> 12;
  return h;
}

int yk_comm_split(yk_comm *p, int colour, int key, yk_comm **out, yk_diag *d) {
  *out = NULL;
  int32_t mine[2] = {colour, key};
  int32_t *all = calloc((size_t)p->size * 2, sizeof(int32_t));
  if (!all) return yk_errorf(d, YK_ENOMEM, "out of memory splitting a communicator");
  size_t off, len;
  coll_range((size_t)p->size * 2, p->size, p->rank, &off, &len); /* each rank owns exactly its 2 ints */
  memcpy(all + off, mine, sizeof mine);
  int rc = yk_comm_allgather_sync(p, all + off, all, (size_t)p->size * 2, YK_DT_I32, d);
  uint32_t split_no = ++p->next_child_id;
  if (rc || colour < 0) {
    free(all);
    return rc;
  }
  int n = 0;
  for (int i = 0; i < p->size; i++) n += all[2 * i] == colour;
  yk_comm *c = calloc(1, sizeof *c);
  int *members = calloc((size_t)n, sizeof(int));
  if (!c || !members) {
    free(all), free(c), free(members);
    return yk_errorf(d, YK_ENOMEM, "out of memory splitting a communicator");
  }
  int k = 0;
  for (int i = 0; i < p->size; i++)
    if (all[2 * i] == colour) members[k++] = i;
  /* insertion sort by (key, parent rank) */
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0; j--) {
      int a = members[j - 1], bb = members[j];
      if (all[2 * a + 1] > all[2 * bb + 1] || (all[2 * a + 1] == all[2 * bb + 1] && a > bb)) {
        members[j - 1] = bb;
        members[j] = a;
      }
    }
  c->size = n;
  c->culprit = -1;
  c->xrank = calloc((size_t)n, sizeof(int));
  c->hosts = calloc((size_t)n, sizeof *c->hosts);
  c->pids = calloc((size_t)n, sizeof(int64_t));
  c->node = calloc((size_t)n, sizeof(int));
  if (!c->xrank || !c->hosts || !c->pids || !c->node) {
    free(all), free(members);
    yk_comm_destroy(c);
    return yk_errorf(d, YK_ENOMEM, "out of memory splitting a communicator");
  }
  for (int i = 0; i < n; i++) {
    if (members[i] == p->rank) c->rank = i;
    c->xrank[i] = p->xrank[members[i]];
    memcpy(c->hosts[i], p->hosts[members[i]], sizeof c->hosts[i]);
    if (c->pids) c->pids[i] = p->pids ? p->pids[members[i]] : 0;
    c->node[i] = p->node ? p->node[members[i]] : -1 - i;
  }
  free(all);
  free(members);
  c->x = p->x;
  c->inline_ok = p->inline_ok;
  atomic_fetch_add(&c->x->refs, 1);
  c->parent = p;
  c->epoch = p->epoch;
  c->comm_id = (mix32(mix32(p->comm_id, split_no), (uint32_t)colour) & 0xfffe) | 2; /* never 1 (the world) */
  c->timeout_ms = p->timeout_ms;
  c->seg_bytes = p->seg_bytes;
  c->seg_explicit = p->seg_explicit;
  c->algo = p->algo;
  c->model = p->model;
  c->log = p->log;
  snprintf(c->tname, sizeof c->tname, "%s", p->tname);
  rc = comm_init_common(c, d);
  if (!rc) rc = board_setup(c, p->shm_oneshot, d);
  if (rc) {
    yk_comm_destroy(c);
    return rc;
  }
  pthread_mutex_lock(&p->mu);
  c->next_kid = p->kids;
  p->kids = c;
  pthread_mutex_unlock(&p->mu);
  *out = c;
  return 0;
}

/* c leaves its parent's list of kids; its own kids lose their parent
 * (destroyed before their parent, as they should be, they are gone). */
static void unlink_kids(yk_comm *c) {
  yk_comm *p = c->parent;
  if (p) {
    pthread_mutex_lock(&p->mu);
    for (yk_comm **k = &p->kids; *k; k = &(*k)->next_kid)
      if (*k == c) {
        *k = c->next_kid;
        break;
      }
    pthread_mutex_unlock(&p->mu);
  }
  if (!c->kids) return;
  pthread_mutex_lock(&c->mu);
  for (yk_comm *k = c->kids; k; k = k->next_kid) k->parent = NULL;
  c->kids = NULL;
  pthread_mutex_unlock(&c->mu);
}

void yk_comm_destroy(yk_comm *c) {
  if (!c) return;
  unlink_kids(c);
  /* children share our transport: they go first */
  yk_comm_destroy(c->hier_cross);
  yk_comm_destroy(c->hier_local);
  c->hier_cross = c->hier_local = NULL;
  if (coll_queue_stop(c)) return; /* abandoned: its comm thread is stuck inside the transport */
  if (c->x) {
    coll_ctrl_stop(c);
    if (atomic_fetch_sub(&c->x->refs, 1) == 1) c->x->ops->destroy(c->x);
  }
  if (c->thread_started || c->ctrl_sends) {
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
  }
  coll_shm_destroy(c);
  free(c->ctrl_sends);
  free(c->ctrl_sbuf);
  free(c->stuck_for);
  free(c->stuck_hdr);
  free(c->xrank);
  free(c->hosts);
  free(c->pids);
  free(c->node);
  free(c->xreqs);
  free(c->xreqs2);
  free(c->hello_reqs);
  free(c->hello_buf);
  free(c->posted);
  free(c->hdrx);
  yk_free(c->stage);
  yk_free(c->work);
  free(c);
}
