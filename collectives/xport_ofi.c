/* xport_ofi.c - libfabric transport: one FI_EP_RDM endpoint with tagged
 * messages (FI_TAGGED | FI_MSG | FI_DIRECTED_RECV), an AV_TABLE holding
 * every rank's address (exchanged through the bootstrap), one completion
 * queue in FI_CQ_FORMAT_TAGGED, send-after-send ordering (FI_ORDER_SAS).
 *
 * Providers: "shm" (one host), "tcp;ofi_rxm" (anywhere), "verbs;ofi_rxm",
 * "efa" or any name fi_info -l shows.
 *
 * Progress: manual; the thread that executes an operation (the comm thread,
 * or the caller of a *_sync call when the communicator is idle) reads the CQ
 * while it waits, and the comm thread polls it every 2 ms while idle, so
 * rxm's connection set-up and rendezvous acknowledgements always move.
 *
 * Threads: one endpoint serves a communicator and every communicator split
 * from it (yk_comm_split shares the transport), and each of those has its
 * own executing thread: a rank's tensor-parallel calls run on the main
 * thread while its data-parallel comm thread runs ZeRO-3's broadcasts and
 * the world's comm thread polls. FI_THREAD_DOMAIN, which we ask for, makes
 * the application serialise every call into the domain: the providers then
 * take no locks (libfabric's util CQ is OFI_LOCK_NOOP), and two threads in
 * fi_cq_read or fi_tsend at once lose or duplicate entries. A lost completion
 * is a collective that times out with every rank alive and waiting on the
 * other. So every entry point below holds `mu` around its provider calls
 * (and the backlog and registration cache, which are ours). Progress only
 * tries it: whoever holds it reads the CQ for every communicator, and the
 * waiter calls again. A post waits for it at most lock_ms, a fraction of
 * comm.timeout_ms (the holder is then stuck inside the provider, which the
 * queue's watchdog reports), so no wait here is unbounded.
 *
 * -FI_EAGAIN from a post puts the operation on a backlog (kept in order, so
 * send-after-send still holds) that every progress call retries after
 * draining the CQ. Error completions are read with fi_cq_readerr and carry
 * the provider's own text (fi_cq_strerror) into the request.
 *
 * Memory registration: when the provider asks for FI_MR_LOCAL we register
 * the buffers we pass (a small cache of registrations, reused across
 * operations); otherwise descriptors are NULL. */
#define _GNU_SOURCE /* pthread_mutex_clocklock */
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "coll_internal.h"

#define ADDR_MAX 248
#define MR_CACHE 64

typedef struct pend {
  struct pend *next;
  int is_send;
  int peer;
  uint64_t tag;
  void *buf;
  size_t n;
  xreq *r;
} pend;

typedef struct mrc {
  char *base;
  size_t len;
  struct fid_mr *mr;
  uint64_t used;
} mrc;

typedef struct oxport {
  xport base;
  struct fi_info *info;
  struct fid_fabric *fabric;
  struct fid_domain *domain;
  struct fid_av *av;
  struct fid_cq *cq;
  struct fid_ep *ep;
  fi_addr_t *addrs;
  int mr_local;
  mrc mrs[MR_CACHE];
  uint64_t mr_clock;
  pend *bl_head, *bl_tail; /* backlog of posts that got -FI_EAGAIN */
  int bl_size;
  /* held around every provider call, the backlog and the MR cache: the
   * endpoint is shared by the threads of every communicator split from the
   * one that created it (see the top of the file) */
  pthread_mutex_t mu;
  int mu_ok;
  uint64_t lock_ms; /* longest wait for mu in a post or a cancel */
} oxport;

/* Take o->mu within o->lock_ms; 0 or YK_ETIMEDOUT (the holder is stuck in a
 * provider call). */
static int lock_bounded(oxport *o) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t ns = (uint64_t)ts.tv_nsec + o->lock_ms * 1000000ull;
  ts.tv_sec += (time_t)(ns / 1000000000ull);
  ts.tv_nsec = (long)(ns % 1000000000ull);
  return pthread_mutex_clocklock(&o->mu, CLOCK_MONOTONIC, &ts) == 0 ? 0 : YK_ETIMEDOUT;
}

static xreq *ctx_req(void *ctx) { return (xreq *)((char *)ctx - offsetof(xreq, priv)); }

static int fi_err(int ret, const char *what, yk_diag *d) {
  return yk_errorf(d, YK_ETRANSPORT, "libfabric %s failed: %s (%d)", what, fi_strerror(-ret), ret);
}

static void *mr_desc(oxport *o, void *buf, size_t n) {
  if (!o->mr_local || !buf || !n) return NULL;
  char *b = buf;
  int lru = 0;
  for (int i = 0; i < MR_CACHE; i++) {
    mrc *m = &o->mrs[i];
    if (m->mr && b >= m->base && b + n <= m->base + m->len) {
      m->used = ++o->mr_clock;
      return fi_mr_desc(m->mr);
    }
    if (!o->mrs[i].mr || o->mrs[i].used < o->mrs[lru].used) lru = i;
  }
  /* Register the enclosing pages, so neighbouring segments of one buffer
   * share a registration. The evicted one is the least recently used: with
   * MR_CACHE entries and at most a few buffers per operation it is idle. */
  mrc *m = &o->mrs[lru];
  if (m->mr) fi_close(&m->mr->fid), m->mr = NULL;
  uintptr_t lo = (uintptr_t)b & ~(uintptr_t)4095, hi = ((uintptr_t)b + n + 4095) & ~(uintptr_t)4095;
  if (fi_mr_reg(o->domain, (void *)lo, hi - lo, FI_SEND | FI_RECV, 0, 0, 0, &m->mr, NULL)) {
    m->mr = NULL;
    return NULL; /* the post then reports the provider's error */
  }
  m->base = (char *)lo;
  m->len = hi - lo;
  m->used = ++o->mr_clock;
  return fi_mr_desc(m->mr);
}

static ssize_t post(oxport *o, int is_send, int peer, uint64_t tag, void *buf, size_t n, xreq *r) {
  void *desc = mr_desc(o, buf, n);
  void *ctx = &r->priv[0];
  if (is_send) return fi_tsend(o->ep, buf, n, desc, o->addrs[peer], tag, ctx);
  return fi_trecv(o->ep, buf, n, desc, peer < 0 ? FI_ADDR_UNSPEC : o->addrs[peer], tag, 0, ctx);
}

static int enqueue(oxport *o, int is_send, int peer, uint64_t tag, void *buf, size_t n, xreq *r) {
  if (n > o->info->ep_attr->max_msg_size) {
    snprintf(r->errmsg, sizeof r->errmsg, "message of %zu bytes exceeds the provider's max_msg_size %zu", n,
             o->info->ep_attr->max_msg_size);
    return YK_EINVAL;
  }
  if (!o->bl_head) {
    ssize_t ret = post(o, is_send, peer, tag, buf, n, r);
    if (ret == 0) return 0;
    if (ret != -FI_EAGAIN) {
      snprintf(r->errmsg, sizeof r->errmsg, "%s: %s", is_send ? "fi_tsend" : "fi_trecv", fi_strerror((int)-ret));
      return YK_ETRANSPORT;
    }
  }
  pend *p = malloc(sizeof *p);
  if (!p) return YK_ENOMEM;
  *p = (pend){NULL, is_send, peer, tag, buf, n, r};
  if (o->bl_tail) o->bl_tail->next = p;
  else o->bl_head = p;
  o->bl_tail = p;
  o->bl_size++;
  return 0;
}

static int post_locked(oxport *o, int is_send, int peer, uint64_t tag, void *buf, size_t n, xreq *r) {
  if (lock_bounded(o)) {
    snprintf(r->errmsg, sizeof r->errmsg, "the libfabric endpoint was held by another thread of this rank for more "
             "than %llu ms (stuck inside the provider?)", (unsigned long long)o->lock_ms);
    return YK_ETIMEDOUT;
  }
  int rc = enqueue(o, is_send, peer, tag, buf, n, r);
  pthread_mutex_unlock(&o->mu);
  return rc;
}
static int o_isend(xport *x, int peer, uint64_t tag, const void *buf, size_t n, xreq *r) {
  return post_locked((oxport *)x, 1, peer, tag, (void *)buf, n, r);
}
static int o_irecv(xport *x, int peer, uint64_t tag, void *buf, size_t n, xreq *r) {
  return post_locked((oxport *)x, 0, peer, tag, buf, n, r);
}

static int err_code(int e) {
  switch (e) {
  case FI_ETRUNC: return YK_EPROTO;
  case FI_ECANCELED: return YK_EABORTED;
  case FI_ECONNRESET:
  case FI_ECONNABORTED:
  case FI_ECONNREFUSED:
  case FI_ENOTCONN:
  case FI_EHOSTUNREACH:
  case FI_EIO:
    return YK_EPEERDEAD;
  default: return YK_ETRANSPORT;
  }
}

static int progress_locked(oxport *o, yk_diag *d) {
  struct fi_cq_tagged_entry ev[16];
  for (int rounds = 0; rounds < 4; rounds++) {
    ssize_t n = fi_cq_read(o->cq, ev, 16);
    if (n > 0) {
      for (ssize_t i = 0; i < n; i++) {
        xreq *r = ctx_req(ev[i].op_context);
        r->nbytes = ev[i].len;
        __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
      }
      if (n == 16) continue;
    } else if (n == -FI_EAVAIL) {
      struct fi_cq_err_entry e;
      memset(&e, 0, sizeof e);
      ssize_t m = fi_cq_readerr(o->cq, &e, 0);
      if (m < 0) return fi_err((int)m, "fi_cq_readerr", d);
      const char *prov = fi_cq_strerror(o->cq, e.prov_errno, e.err_data, NULL, 0);
      if (!e.op_context)
        return yk_errorf(d, YK_ETRANSPORT, "libfabric completion error without a request: %s (%s)",
                         fi_strerror(e.err), prov ? prov : "");
      xreq *r = ctx_req(e.op_context);
      snprintf(r->errmsg, sizeof r->errmsg, "%s (provider: %s)", fi_strerror(e.err), prov ? prov : "-");
      r->err = err_code(e.err);
      r->nbytes = e.len;
      __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
      continue;
    } else if (n != -FI_EAGAIN && n < 0) {
      return fi_err((int)n, "fi_cq_read", d);
    }
    break;
  }
  /* retry the backlog in order */
  while (o->bl_head) {
    pend *p = o->bl_head;
    ssize_t ret = post(o, p->is_send, p->peer, p->tag, p->buf, p->n, p->r);
    if (ret == -FI_EAGAIN) break;
    if (ret) {
      snprintf(p->r->errmsg, sizeof p->r->errmsg, "%s: %s", p->is_send ? "fi_tsend" : "fi_trecv",
               fi_strerror((int)-ret));
      p->r->err = YK_ETRANSPORT;
      p->r->done = 1;
    }
    o->bl_head = p->next;
    if (!o->bl_head) o->bl_tail = NULL;
    o->bl_size--;
    free(p);
  }
  return 0;
}

/* Only tries the lock: its holder is reading the CQ (or posting, and calls
 * again), and whoever reads a completion marks its request done, whichever
 * communicator it belongs to. */
static int o_progress(xport *x, yk_diag *d) {
  oxport *o = (oxport *)x;
  if (pthread_mutex_trylock(&o->mu) != 0) return 0;
  int rc = progress_locked(o, d);
  pthread_mutex_unlock(&o->mu);
  return rc;
}

static void o_test(xport *x, xreq *r) {
  if (!__atomic_load_n(&r->done, __ATOMIC_ACQUIRE)) o_progress(x, NULL);
}

static void cancel_locked(oxport *o, xreq *r) {
  if (r->done) return;
  /* still on the backlog? */
  for (pend **pp = &o->bl_head; *pp; pp = &(*pp)->next)
    if ((*pp)->r == r) {
      pend *p = *pp;
      *pp = p->next;
      o->bl_tail = NULL;
      for (pend *q = o->bl_head; q; q = q->next) o->bl_tail = q;
      o->bl_size--;
      free(p);
      r->done = 1;
      r->err = YK_EABORTED;
      return;
    }
  /* completes as an FI_ECANCELED error entry naming r; the caller drains */
  fi_cancel(&o->ep->fid, &r->priv[0]);
}

static void o_cancel(xport *x, xreq *r) {
  oxport *o = (oxport *)x;
  /* lock not had in time: r stays pending, and the caller's drain is bounded */
  if (__atomic_load_n(&r->done, __ATOMIC_ACQUIRE) || lock_bounded(o)) return;
  cancel_locked(o, r);
  pthread_mutex_unlock(&o->mu);
}

static void o_destroy(xport *x) {
  oxport *o = (oxport *)x;
  while (o->bl_head) {
    pend *p = o->bl_head;
    o->bl_head = p->next;
    free(p);
  }
  if (o->ep) fi_close(&o->ep->fid);
  for (int i = 0; i < MR_CACHE; i++)
    if (o->mrs[i].mr) fi_close(&o->mrs[i].mr->fid);
  if (o->av) fi_close(&o->av->fid);
  if (o->cq) fi_close(&o->cq->fid);
  if (o->domain) fi_close(&o->domain->fid);
  if (o->fabric) fi_close(&o->fabric->fid);
  if (o->info) fi_freeinfo(o->info);
  free(o->addrs);
  if (o->mu_ok) pthread_mutex_destroy(&o->mu);
  free(o);
}

static const xport_ops o_ops = {o_isend, o_irecv, o_progress, o_test, o_cancel, o_destroy};

int xport_ofi_create(yk_bootstrap *b, const char *provider, uint64_t timeout_ms, xport **out, yk_diag *d) {
  *out = NULL;
  oxport *o = calloc(1, sizeof *o);
  if (!o) return yk_errorf(d, YK_ENOMEM, "out of memory");
  o->base.ops = &o_ops;
  o->base.rank = b->rank;
  o->base.size = b->size;
  atomic_init(&o->base.refs, 1);
  pthread_mutex_init(&o->mu, NULL);
  o->mu_ok = 1;
  /* a provider call holds mu for microseconds; the exec reserve's fraction of
   * the deadline (queue.c) is far beyond that and leaves the caller time to
   * report */
  o->lock_ms = YK_MAX(timeout_ms / 5, 100);
  snprintf(o->base.name, sizeof o->base.name, "libfabric:%s", provider);
  int ret, rc;
  struct fi_info *hints = fi_allocinfo();
  if (!hints) {
    free(o);
    return yk_errorf(d, YK_ENOMEM, "out of memory");
  }
  hints->ep_attr->type = FI_EP_RDM;
  hints->caps = FI_TAGGED | FI_MSG | FI_DIRECTED_RECV;
  hints->mode = FI_CONTEXT | FI_CONTEXT2;
  hints->tx_attr->msg_order = FI_ORDER_SAS;
  hints->rx_attr->msg_order = FI_ORDER_SAS;
  hints->domain_attr->threading = FI_THREAD_DOMAIN;
  hints->domain_attr->av_type = FI_AV_TABLE;
  hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_ALLOCATED | FI_MR_VIRT_ADDR | FI_MR_PROV_KEY | FI_MR_ENDPOINT;
  hints->fabric_attr->prov_name = strdup(provider);
  /* shm names its region after the pid unless told otherwise; a region
   * left by a killed process with a recycled pid would then collide
   * (EBUSY). Give ours a unique name: yk<pid>_<time ns>. */
  char node[64];
  const char *nodep = NULL;
  uint64_t flags = 0;
  if (!strcmp(provider, "shm")) {
    snprintf(node, sizeof node, "yk%d_%llx", (int)getpid(), (unsigned long long)yk_now_ns());
    nodep = node;
    flags = FI_SOURCE;
  }
  ret = fi_getinfo(FI_VERSION(1, 17), nodep, NULL, flags, hints, &o->info);
  fi_freeinfo(hints);
  if (ret || !o->info) {
    rc = yk_errorf(d, YK_ECONFIG,
                   "libfabric provider '%s' offers no reliable tagged endpoint here (fi_getinfo: %s); "
                   "check `fi_info -l` and set comm.provider to one of them (shm, tcp;ofi_rxm, verbs;ofi_rxm, efa)",
                   provider, fi_strerror(-ret));
    o->info = NULL;
    goto fail;
  }
  o->mr_local = (o->info->domain_attr->mr_mode & FI_MR_LOCAL) != 0;
  if (o->info->domain_attr->mr_mode & FI_MR_ENDPOINT) {
    /* only needed for RMA keys; we send and receive, local descs suffice */
  }
  if ((ret = fi_fabric(o->info->fabric_attr, &o->fabric, NULL))) { rc = fi_err(ret, "fi_fabric", d); goto fail; }
  if ((ret = fi_domain(o->fabric, o->info, &o->domain, NULL))) { rc = fi_err(ret, "fi_domain", d); goto fail; }
  struct fi_cq_attr cqa = {.format = FI_CQ_FORMAT_TAGGED, .size = 0, .wait_obj = FI_WAIT_NONE};
  if ((ret = fi_cq_open(o->domain, &cqa, &o->cq, NULL))) { rc = fi_err(ret, "fi_cq_open", d); goto fail; }
  struct fi_av_attr ava = {.type = FI_AV_TABLE, .count = (size_t)b->size};
  if ((ret = fi_av_open(o->domain, &ava, &o->av, NULL))) { rc = fi_err(ret, "fi_av_open", d); goto fail; }
  if ((ret = fi_endpoint(o->domain, o->info, &o->ep, NULL))) { rc = fi_err(ret, "fi_endpoint", d); goto fail; }
  if ((ret = fi_ep_bind(o->ep, &o->cq->fid, FI_TRANSMIT | FI_RECV))) { rc = fi_err(ret, "fi_ep_bind(cq)", d); goto fail; }
  if ((ret = fi_ep_bind(o->ep, &o->av->fid, 0))) { rc = fi_err(ret, "fi_ep_bind(av)", d); goto fail; }
  if ((ret = fi_enable(o->ep))) { rc = fi_err(ret, "fi_enable", d); goto fail; }
  struct {
    uint32_t len;
    uint32_t pad;
    char addr[ADDR_MAX];
  } mine, *all = NULL;
  memset(&mine, 0, sizeof mine);
  size_t alen = ADDR_MAX;
  if ((ret = fi_getname(&o->ep->fid, mine.addr, &alen))) { rc = fi_err(ret, "fi_getname", d); goto fail; }
  mine.len = (uint32_t)alen;
  all = calloc((size_t)b->size, sizeof mine);
  o->addrs = calloc((size_t)b->size, sizeof(fi_addr_t));
  if (!all || !o->addrs) {
    free(all);
    rc = yk_errorf(d, YK_ENOMEM, "out of memory");
    goto fail;
  }
  rc = b->allgather(b, &mine, sizeof mine, all, yk_deadline_in_ms(timeout_ms), d);
  if (rc) {
    free(all);
    goto fail;
  }
  for (int i = 0; i < b->size; i++) {
    ret = fi_av_insert(o->av, all[i].addr, 1, &o->addrs[i], 0, NULL);
    if (ret != 1) {
      free(all);
      rc = yk_errorf(d, YK_ETRANSPORT, "libfabric fi_av_insert of rank %d's address failed (%d): ranks use different "
                     "providers?", i, ret);
      goto fail;
    }
  }
  free(all);
  *out = &o->base;
  return 0;
fail:
  o_destroy(&o->base);
  return rc;
}
