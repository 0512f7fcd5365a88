/* xport_mpi.c - OpenMPI point-to-point transport and the MPI bootstrap, for
 * jobs started by mpirun that prefer OpenMPI's own transports (vader/CMA,
 * tcp, UCX). Each transport works on its own duplicate of MPI_COMM_WORLD
 * with MPI_ERRORS_RETURN, so errors come back as codes with MPI's message.
 *
 * Tags: MPI tags are 31 bits at most; the 64-bit collective tag is folded
 * to kind(2) | hash of epoch+communicator(5) | low 24 bits of the sequence
 * and step. Collisions between far-apart operations do not matter: matching
 * is ordered, and only one operation per communicator runs at a time. */
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "coll_internal.h"

typedef struct mxport {
  xport base;
  MPI_Comm comm;
} mxport;

static int mpi_tag(uint64_t t) {
  uint32_t kind = (uint32_t)(t >> 60) & 3u;
  uint32_t ec = (uint32_t)(t >> 32) & 0x0fffffffu;
  ec = (ec ^ (ec >> 5) ^ (ec >> 10) ^ (ec >> 15) ^ (ec >> 20)) & 31u;
  return (int)((kind << 29) | (ec << 24) | ((uint32_t)t & 0xffffffu));
}

static void mpi_msg(int err, char *buf, size_t n) {
  char s[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(err, s, &len) != MPI_SUCCESS) snprintf(s, sizeof s, "MPI error %d", err);
  size_t l = strlen(s);
  if (l >= n) l = n - 1;
  memcpy(buf, s, l);
  buf[l] = 0;
}

#define MREQ(r) ((MPI_Request *)&(r)->priv[0])

static int m_isend(xport *x, int peer, uint64_t tag, const void *buf, size_t n, xreq *r) {
  mxport *m = (mxport *)x;
  if (n > (size_t)INT32_MAX) {
    snprintf(r->errmsg, sizeof r->errmsg, "message of %zu bytes is too large for MPI (max 2 GiB)", n);
    return YK_EINVAL;
  }
  int e = MPI_Isend(buf, (int)n, MPI_BYTE, peer, mpi_tag(tag), m->comm, MREQ(r));
  if (e != MPI_SUCCESS) {
    mpi_msg(e, r->errmsg, sizeof r->errmsg);
    return YK_ETRANSPORT;
  }
  return 0;
}

static int m_irecv(xport *x, int peer, uint64_t tag, void *buf, size_t n, xreq *r) {
  mxport *m = (mxport *)x;
  if (n > (size_t)INT32_MAX) {
    snprintf(r->errmsg, sizeof r->errmsg, "message of %zu bytes is too large for MPI (max 2 GiB)", n);
    return YK_EINVAL;
  }
  int e = MPI_Irecv(buf, (int)n, MPI_BYTE, peer < 0 ? MPI_ANY_SOURCE : peer, mpi_tag(tag), m->comm, MREQ(r));
  if (e != MPI_SUCCESS) {
    mpi_msg(e, r->errmsg, sizeof r->errmsg);
    return YK_ETRANSPORT;
  }
  return 0;
}

static int m_progress(xport *x, yk_diag *d) { return 0; }

static void m_test(xport *x, xreq *r) {
  if (r->done) return;
  int flag = 0;
  MPI_Status st;
  int e = MPI_Test(MREQ(r), &flag, &st);
  if (e != MPI_SUCCESS) {
    int cls = 0;
    MPI_Error_class(e, &cls);
    mpi_msg(e, r->errmsg, sizeof r->errmsg);
    r->err = cls == MPI_ERR_TRUNCATE ? YK_EPROTO : YK_ETRANSPORT; /* EPROTO: the header is still there */
    r->done = 1;
    if (cls == MPI_ERR_TRUNCATE) {
      int cnt = 0;
      MPI_Get_count(&st, MPI_BYTE, &cnt);
      r->nbytes = (size_t)cnt;
    }
    return;
  }
  if (!flag) return;
  int cnt = 0;
  MPI_Get_count(&st, MPI_BYTE, &cnt);
  r->nbytes = (size_t)cnt;
  r->src = st.MPI_SOURCE;
  if (st.MPI_ERROR != MPI_SUCCESS && st.MPI_ERROR != 0 && cnt == 0) {
    /* MPI_Test fills MPI_ERROR only for multi-completion calls; ignore */
  }
  r->done = 1;
}

static void m_cancel(xport *x, xreq *r) {
  if (r->done) return;
  if (*MREQ(r) != MPI_REQUEST_NULL) {
    MPI_Cancel(MREQ(r));
    MPI_Request_free(MREQ(r));
  }
  r->done = 1;
  r->err = YK_EABORTED;
}

static void m_destroy(xport *x) {
  mxport *m = (mxport *)x;
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin) MPI_Comm_free(&m->comm);
  free(m);
}

static const xport_ops m_ops = {m_isend, m_irecv, m_progress, m_test, m_cancel, m_destroy};

static int need_mpi(yk_diag *d) {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (!init || fin) return yk_errorf(d, YK_ECONFIG, "MPI is not initialised: call MPI_Init_thread before using the MPI bootstrap or transport");
  return 0;
}

int xport_mpi_create(yk_bootstrap *b, xport **out, yk_diag *d) {
  *out = NULL;
  int rc = need_mpi(d);
  if (rc) return rc;
  if (strcmp(b->kind, "mpi"))
    return yk_errorf(d, YK_ECONFIG, "transport mpi needs the MPI bootstrap (the job must run under mpirun), got a %s bootstrap",
                     b->kind);
  int level = 0;
  MPI_Query_thread(&level);
  if (level < MPI_THREAD_MULTIPLE)
    return yk_errorf(d, YK_ECONFIG, "transport mpi needs MPI_THREAD_MULTIPLE (the comm thread calls MPI); initialise MPI "
                                    "with MPI_Init_thread(..., MPI_THREAD_MULTIPLE, ...)");
  int *ub = NULL, flag = 0;
  MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub, &flag);
  if (!flag || !ub || *ub < (1 << 30) - 1)
    return yk_errorf(d, YK_EUNSUPPORTED, "this MPI's MPI_TAG_UB (%d) is below 2^30-1, which the MPI transport needs",
                     flag && ub ? *ub : -1);
  mxport *m = calloc(1, sizeof *m);
  if (!m) return yk_errorf(d, YK_ENOMEM, "out of memory");
  if (MPI_Comm_dup(MPI_COMM_WORLD, &m->comm) != MPI_SUCCESS) {
    free(m);
    return yk_errorf(d, YK_ETRANSPORT, "MPI_Comm_dup failed");
  }
  MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN);
  m->base.ops = &m_ops;
  m->base.rank = b->rank;
  m->base.size = b->size;
  atomic_init(&m->base.refs, 1);
  snprintf(m->base.name, sizeof m->base.name, "mpi");
  *out = &m->base;
  return 0;
}

/* ---- bootstrap ------------------------------------------------------------ */

static int mpi_allgather(yk_bootstrap *b, const void *mine, size_t len, void *all, uint64_t deadline, yk_diag *d) {
  /* MPI_Allgather has no deadline; mpirun kills the job if a rank dies. */
  int e = MPI_Allgather(mine, (int)len, MPI_BYTE, all, (int)len, MPI_BYTE, MPI_COMM_WORLD);
  if (e != MPI_SUCCESS) {
    char m[200];
    mpi_msg(e, m, sizeof m);
    return yk_errorf(d, YK_ETRANSPORT, "MPI bootstrap all-gather failed: %s", m);
  }
  return 0;
}

static void mpi_bdestroy(yk_bootstrap *b) { free(b); }

int yk_bootstrap_mpi_create(yk_bootstrap **out, yk_diag *d) {
  *out = NULL;
  int rc = need_mpi(d);
  if (rc) return rc;
  yk_bootstrap *b = calloc(1, sizeof *b);
  if (!b) return yk_errorf(d, YK_ENOMEM, "out of memory");
  MPI_Comm_rank(MPI_COMM_WORLD, &b->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &b->size);
  b->kind = "mpi";
  b->allgather = mpi_allgather;
  b->destroy = mpi_bdestroy;
  *out = b;
  return 0;
}
