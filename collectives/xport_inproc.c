/* xport_inproc.c - threads as ranks: a transport and a bootstrap over one
 * shared "world" object in this process. Used by unit tests.
 *
 * Each rank has a mailbox (mutex + list of posted receives + list of
 * unmatched sends). Matching is by (source, tag) in posting order, as MPI
 * does. Payloads are copied once, from the sender's buffer straight into the
 * receiver's, by whichever side completes the match; sends of at most
 * EAGER_MAX bytes are copied into the entry and complete at once. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coll_internal.h"

#define EAGER_MAX 256
#define BLOB_MAX 4096

typedef struct entry {
  struct entry *next;
  int src;          /* sender (for sends) or wanted source, -1 any (recvs) */
  uint64_t tag;
  const void *sbuf; /* send: sender's buffer (NULL if eager) */
  void *rbuf;       /* recv: receiver's buffer */
  size_t n;
  xreq *req;
  char eager[EAGER_MAX];
} entry;

typedef struct mailbox {
  pthread_mutex_t mu;
  entry *recvs, *sends; /* FIFO lists */
} mailbox;

struct yk_inproc_world {
  int size;
  mailbox *mb;
  /* bootstrap barrier */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int arrived;
  uint64_t gen;
  char *blob;
};

int yk_inproc_world_create(int size, yk_inproc_world **out, yk_diag *d) {
  *out = NULL;
  if (size < 1 || size > 4096) return yk_errorf(d, YK_EINVAL, "in-process world size %d must be 1..4096", size);
  yk_inproc_world *w = calloc(1, sizeof *w);
  if (!w) return yk_errorf(d, YK_ENOMEM, "out of memory");
  w->size = size;
  w->mb = calloc((size_t)size, sizeof(mailbox));
  w->blob = calloc((size_t)size, BLOB_MAX);
  if (!w->mb || !w->blob) {
    free(w->mb), free(w->blob), free(w);
    return yk_errorf(d, YK_ENOMEM, "out of memory");
  }
  for (int i = 0; i < size; i++) pthread_mutex_init(&w->mb[i].mu, NULL);
  pthread_mutex_init(&w->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&w->cv, &ca);
  pthread_condattr_destroy(&ca);
  *out = w;
  return 0;
}

static void free_list(entry *e) {
  while (e) {
    entry *n = e->next;
    free(e);
    e = n;
  }
}

void yk_inproc_world_destroy(yk_inproc_world *w) {
  if (!w) return;
  for (int i = 0; i < w->size; i++) {
    free_list(w->mb[i].recvs);
    free_list(w->mb[i].sends);
    pthread_mutex_destroy(&w->mb[i].mu);
  }
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  free(w->mb);
  free(w->blob);
  free(w);
}

/* ---- bootstrap ----------------------------------------------------------- */

static int world_barrier(yk_inproc_world *w, uint64_t deadline, yk_diag *d) {
  pthread_mutex_lock(&w->mu);
  uint64_t g = w->gen;
  if (++w->arrived == w->size) {
    w->arrived = 0;
    w->gen++;
    pthread_cond_broadcast(&w->cv);
  } else {
    while (w->gen == g) {
      if (deadline) {
        if (yk_now_ns() >= deadline) {
          w->arrived--;
          pthread_mutex_unlock(&w->mu);
          return yk_errorf(d, YK_ETIMEDOUT, "in-process bootstrap: only %d of %d ranks arrived before the deadline",
                           w->arrived + 1, w->size);
        }
        struct timespec ts = {(time_t)(deadline / 1000000000ull), (long)(deadline % 1000000000ull)};
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
      } else {
        pthread_cond_wait(&w->cv, &w->mu);
      }
    }
  }
  pthread_mutex_unlock(&w->mu);
  return 0;
}

static int inproc_allgather(yk_bootstrap *b, const void *mine, size_t len, void *all, uint64_t deadline, yk_diag *d) {
  yk_inproc_world *w = b->ctx;
  if (len > BLOB_MAX) return yk_errorf(d, YK_EINVAL, "in-process bootstrap blob of %zu bytes > %d", len, BLOB_MAX);
  int rc = world_barrier(w, deadline, d); /* previous round fully read */
  if (rc) return rc;
  memcpy(w->blob + (size_t)b->rank * BLOB_MAX, mine, len);
  if ((rc = world_barrier(w, deadline, d))) return rc;
  for (int i = 0; i < b->size; i++) memcpy((char *)all + (size_t)i * len, w->blob + (size_t)i * BLOB_MAX, len);
  return 0;
}

static void inproc_bdestroy(yk_bootstrap *b) { free(b); }

int yk_bootstrap_inproc_create(yk_inproc_world *w, int rank, yk_bootstrap **out, yk_diag *d) {
  *out = NULL;
  if (!w || rank < 0 || rank >= w->size)
    return yk_errorf(d, YK_EINVAL, "in-process rank %d outside 0..%d", rank, w ? w->size - 1 : -1);
  yk_bootstrap *b = calloc(1, sizeof *b);
  if (!b) return yk_errorf(d, YK_ENOMEM, "out of memory");
  b->rank = rank;
  b->size = w->size;
  b->kind = "inproc";
  b->ctx = w;
  b->allgather = inproc_allgather;
  b->destroy = inproc_bdestroy;
  *out = b;
  return 0;
}

void yk_bootstrap_destroy(yk_bootstrap *b) {
  if (b && b->destroy) b->destroy(b);
}

/* ---- transport ----------------------------------------------------------- */

typedef struct ixport {
  xport base;
  yk_inproc_world *w;
} ixport;

static void complete(xreq *r, size_t n, int src, int err) {
  r->nbytes = n;
  r->src = src;
  r->err = err;
  __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
}

static void deliver(entry *s, entry *rv, int src) {
  size_t n = s->n;
  int err = 0;
  if (n > rv->n) {
    n = rv->n;
    err = YK_EPROTO;
    snprintf(rv->req->errmsg, sizeof rv->req->errmsg, "message of %zu bytes truncated to %zu", s->n, rv->n);
  }
  if (n) memcpy(rv->rbuf, s->sbuf ? s->sbuf : s->eager, n);
  if (s->req) complete(s->req, s->n, src, 0);
  complete(rv->req, n, src, err);
}

static int ip_isend(xport *x, int peer, uint64_t tag, const void *buf, size_t n, xreq *r) {
  ixport *ix = (ixport *)x;
  mailbox *mb = &ix->w->mb[peer];
  entry *e = calloc(1, sizeof *e);
  if (!e) return YK_ENOMEM;
  e->src = x->rank;
  e->tag = tag;
  e->n = n;
  e->req = r;
  if (n <= EAGER_MAX) {
    memcpy(e->eager, buf, n);
    e->req = NULL;
  } else {
    e->sbuf = buf;
  }
  r->priv[0] = (void *)(intptr_t)(peer + 1); /* for cancel */
  pthread_mutex_lock(&mb->mu);
  entry **pp = &mb->recvs;
  for (; *pp; pp = &(*pp)->next)
    if ((*pp)->tag == tag && ((*pp)->src == -1 || (*pp)->src == x->rank)) break;
  if (*pp) {
    entry *rv = *pp;
    *pp = rv->next;
    deliver(e, rv, x->rank);
    pthread_mutex_unlock(&mb->mu);
    free(rv);
    free(e);
    if (n <= EAGER_MAX) complete(r, n, x->rank, 0);
    return 0;
  }
  entry **tail = &mb->sends;
  while (*tail) tail = &(*tail)->next;
  *tail = e;
  pthread_mutex_unlock(&mb->mu);
  if (n <= EAGER_MAX) complete(r, n, x->rank, 0);
  return 0;
}

static int ip_irecv(xport *x, int peer, uint64_t tag, void *buf, size_t n, xreq *r) {
  ixport *ix = (ixport *)x;
  mailbox *mb = &ix->w->mb[x->rank];
  entry *e = calloc(1, sizeof *e);
  if (!e) return YK_ENOMEM;
  e->src = peer;
  e->tag = tag;
  e->rbuf = buf;
  e->n = n;
  e->req = r;
  r->priv[0] = (void *)(intptr_t)(x->rank + 1);
  pthread_mutex_lock(&mb->mu);
  entry **pp = &mb->sends;
  for (; *pp; pp = &(*pp)->next)
    if ((*pp)->tag == tag && (peer == -1 || (*pp)->src == peer)) break;
  if (*pp) {
    entry *s = *pp;
    *pp = s->next;
    deliver(s, e, s->src);
    pthread_mutex_unlock(&mb->mu);
    free(s);
    free(e);
    return 0;
  }
  entry **tail = &mb->recvs;
  while (*tail) tail = &(*tail)->next;
  *tail = e;
  pthread_mutex_unlock(&mb->mu);
  return 0;
}

static int ip_progress(xport *x, yk_diag *d) { return 0; }
static void ip_test(xport *x, xreq *r) { (void)__atomic_load_n(&r->done, __ATOMIC_ACQUIRE); }

/* Remove a pending entry that points at r from mailbox mb. */
static void drop(mailbox *mb, xreq *r) {
  pthread_mutex_lock(&mb->mu);
  for (entry **l = &mb->recvs; l; l = l == &mb->recvs ? &mb->sends : NULL) {
    for (entry **pp = l; *pp;) {
      if ((*pp)->req == r) {
        entry *e = *pp;
        *pp = e->next;
        free(e);
      } else {
        pp = &(*pp)->next;
      }
    }
  }
  pthread_mutex_unlock(&mb->mu);
}

static void ip_cancel(xport *x, xreq *r) {
  ixport *ix = (ixport *)x;
  intptr_t mbi = (intptr_t)r->priv[0] - 1;
  if (mbi >= 0 && mbi < ix->w->size) drop(&ix->w->mb[mbi], r);
  r->done = 1;
  r->err = YK_EABORTED;
}

/* Forget every entry of this rank: its posted receives, and its sends still
 * queued at any peer (their buffers are about to go away). Eager sends stay:
 * they own their bytes. */
static void ip_destroy(xport *x) {
  ixport *ix = (ixport *)x;
  for (int i = 0; i < ix->w->size; i++) {
    mailbox *mb = &ix->w->mb[i];
    pthread_mutex_lock(&mb->mu);
    for (entry **pp = &mb->sends; *pp;) {
      if ((*pp)->src == x->rank && (*pp)->req) {
        entry *e = *pp;
        *pp = e->next;
        free(e);
      } else {
        pp = &(*pp)->next;
      }
    }
    if (i == x->rank) {
      free_list(mb->recvs);
      mb->recvs = NULL;
    }
    pthread_mutex_unlock(&mb->mu);
  }
  free(ix);
}

static const xport_ops ip_ops = {ip_isend, ip_irecv, ip_progress, ip_test, ip_cancel, ip_destroy};

int xport_inproc_create(yk_bootstrap *b, xport **out, yk_diag *d) {
  *out = NULL;
  if (strcmp(b->kind, "inproc"))
    return yk_errorf(d, YK_ECONFIG, "transport inproc needs an in-process bootstrap, got a %s bootstrap", b->kind);
  ixport *ix = calloc(1, sizeof *ix);
  if (!ix) return yk_errorf(d, YK_ENOMEM, "out of memory");
  ix->base.ops = &ip_ops;
  ix->base.rank = b->rank;
  ix->base.size = b->size;
  atomic_init(&ix->base.refs, 1);
  snprintf(ix->base.name, sizeof ix->base.name, "inproc");
  ix->w = b->ctx;
  *out = &ix->base;
  return 0;
}
