/* algo_shm.c - all-reduce for ranks on one host through a shared board.
 *
 * At creation the ranks of a communicator that share a host and a pid
 * namespace map one POSIX shared-memory object, the board
 * (docs/collectives.md, "Shared-memory board"): a header, one slot per rank
 * (three progress counters on their own cache lines, the header of the
 * current operation and the addresses of its buffers), and per rank two data
 * areas of shm_oneshot bytes. Board operations are numbered k = 1, 2, ... in
 * the same order on every rank; slot fields that belong to operation k live
 * at index k & 1, so a rank may start operation k+1 while a slower one still
 * reads operation k's (a rank can only finish k+1 after every rank arrived at
 * k+1, that is, left k).
 *
 * One-shot (bytes <= shm_oneshot): copy the input into my data area, publish
 * arrive = k, wait for every rank's arrival, then every rank reduces all n
 * areas in rank order 0..n-1 (bitwise-identical results everywhere). No
 * closing barrier.
 *
 * Direct two-shot (larger): publish the buffer addresses with arrive = k.
 * Rank r owns chunk r (coll_range). Reduce-scatter: r reads chunk r of every
 * peer's input straight from the peer's memory (process_vm_readv, in blocks
 * that stay in L2) and reduces it into its own output, then publishes
 * rs_done = k. All-gather: r copies chunk q of peer q's output once q's
 * rs_done reaches k, publishes ag_done = k and waits for everybody's ag_done
 * (the peers may still read its buffers until then). Per rank that is
 * (3n-1)/n of the message in memory traffic: the one-host optimum that the
 * benchmark's ceiling assumes. Ranks that are threads of one process use
 * memcpy instead of process_vm_readv.
 *
 * Reduce to owners (cross-memory attach works): the owners' ranges need not
 * be even within one bucket (a data-parallel bucket often lies in one rank's
 * range), so the work is not split by owner: rank r reduces the r-th even
 * share of the bucket and writes each element into its owner's output
 * (mapped writable, or process_vm_writev), summing in owner-first order, so
 * the bits are the ones the owner would have made. rs_done = k | 1 when my
 * share is written; every rank waits for all of them. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "coll_internal.h"

#define BOARD_MAGIC 0x594b4244u /* "YKBD" */
#define BOARD_VERSION 1
#define ONESHOT_DEFAULT (64u << 10)
#define ONESHOT_MAX (1u << 20)

typedef struct board_reg { /* a registered buffer holding sendbuf/recvbuf */
  uint64_t base, bytes;     /* bytes 0: not registered */
  uint64_t ino;             /* inode of the memfd, names it across reuse of fd numbers */
  int32_t fd, pad;
} board_reg;

typedef struct board_op {
  coll_hdr h;        /* the operation, compared by every peer */
  uint64_t k;        /* board operation number */
  uint64_t sendbuf;  /* buffer addresses in the owner's address space */
  uint64_t recvbuf;
  board_reg reg[2];  /* 0: the input's registration, 1: the output's */
  uint64_t first, total; /* reduce_owned: the bucket's place in the whole vector */
} board_op;

typedef struct board_slot {
  _Alignas(64) _Atomic uint64_t arrive; /* k: header, addresses and one-shot data are valid */
  _Alignas(64) _Atomic uint64_t rs_done; /* k: my chunk of the output is final */
  _Alignas(64) _Atomic uint64_t ag_done; /* k: I no longer read the peers' buffers */
  _Alignas(64) int64_t pid;
  uint64_t cookie_addr; /* address of a private word, for the cross-memory-attach probe */
  uint64_t cookie_val;
  board_op op[2];
} board_slot;

struct coll_board {
  uint32_t magic, version;
  int32_t size;
  uint32_t pad;
  uint64_t oneshot;
  uint64_t block; /* two-shot block bytes: progress counts blocks, so all ranks must agree */
};

#define SLOTS_OFF 4096u
/* rs_done = k << BLK_BITS | blocks done: 2^36 operations, 2^28 blocks per chunk */
#define BLK_BITS 28
#define SHM_STREAM_MIN ((size_t)32 << 20)

static size_t slot_stride(void) { return (sizeof(board_slot) + 63) & ~(size_t)63; }
static size_t data_off(int n) { return (SLOTS_OFF + (size_t)n * slot_stride() + 4095) & ~(size_t)4095; }
static board_slot *slot(yk_comm *c, int r) {
  return (board_slot *)((char *)c->board + SLOTS_OFF + (size_t)r * slot_stride());
}
static char *data(yk_comm *c, int r, uint64_t k) {
  return (char *)c->board + data_off(c->size) + ((size_t)r * 2 + (k & 1)) * c->shm_oneshot;
}

int yk_comm_shm_state(const yk_comm *c) { return c ? (c->shm_ok ? 1 : 0) | (c->cma_ok ? 2 : 0) : 0; }

int yk_comm_register(yk_comm *c, const yk_shmem *m, yk_diag *d) {
  if (!c || !m || !m->ptr || m->fd < 0) return yk_errorf(d, YK_EINVAL, "yk_comm_register: not a yk_shmem buffer");
  if (c->nregs == (int)YK_ARRAY_LEN(c->regs))
    return yk_errorf(d, YK_EINVAL, "yk_comm_register: %d buffers are registered already; unregister one first",
                     c->nregs);
  struct stat st;
  if (fstat(m->fd, &st) != 0) return yk_errorf_sys(d, YK_ESYS, "yk_comm_register: fstat of fd %d", m->fd);
  c->regs[c->nregs++] = (struct coll_reg){(uintptr_t)m->ptr, m->bytes, m->fd, (uint64_t)st.st_ino};
  /* hier runs its node stages on the node's communicator */
  return c->hier_local ? yk_comm_register(c->hier_local, m, d) : 0;
}

void yk_comm_unregister(yk_comm *c, const yk_shmem *m) {
  if (!c || !m) return;
  yk_comm_unregister(c->hier_local, m);
  for (int i = 0; i < c->nregs; i++)
    if (c->regs[i].base == (uintptr_t)m->ptr) {
      c->regs[i] = c->regs[--c->nregs];
      return;
    }
}

static void find_reg(yk_comm *c, const void *p, size_t n, board_reg *out) {
  memset(out, 0, sizeof *out);
  uintptr_t a = (uintptr_t)p;
  for (int i = 0; i < c->nregs; i++) {
    struct coll_reg *g = &c->regs[i];
    if (a >= g->base && a + n <= g->base + g->bytes) {
      *out = (board_reg){g->base, g->bytes, g->ino, g->fd, 0};
      return;
    }
  }
}

/* Where [addr, addr+n) of rank q's buffer `which` (0 input, 1 output) of
 * operation k is mapped in this process, or NULL (not registered, or the
 * mapping failed: the caller copies through the kernel instead). */
static char *peer_map(yk_comm *c, int q, uint64_t k, int which, uint64_t addr, size_t n, int write) {
  const board_slot *s = slot(c, q);
  const board_reg *g = &s->op[k & 1].reg[which];
  if ((pid_t)s->pid == getpid()) return (char *)(uintptr_t)addr; /* threads of one process */
  if (!g->bytes || addr < g->base || addr + n > g->base + g->bytes) return NULL;
  struct coll_map *m = NULL;
  for (int i = 0; i < c->nmaps; i++)
    if (c->maps[i].pid == s->pid && c->maps[i].ino == g->ino && c->maps[i].bytes == g->bytes) m = &c->maps[i];
  if (!m) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)s->pid, (int)g->fd);
    /* writable when the peer's memfd allows it; reading needs no more */
    int rw = 1, fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      rw = 0;
      fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) return NULL;
    struct stat st;
    void *p = MAP_FAILED;
    if (fstat(fd, &st) == 0 && (uint64_t)st.st_ino == g->ino && (uint64_t)st.st_size >= g->bytes)
      p = mmap(NULL, g->bytes, rw ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return NULL;
    if (c->nmaps == (int)YK_ARRAY_LEN(c->maps)) {
      /* evict the least recently used, never one this operation still
       * reads (all in use: copy through the kernel instead) */
      int lru = -1;
      for (int i = 0; i < c->nmaps; i++)
        if (c->maps[i].used != k && (lru < 0 || c->maps[i].used < c->maps[lru].used)) lru = i;
      if (lru < 0) {
        munmap(p, g->bytes);
        return NULL;
      }
      munmap(c->maps[lru].local, c->maps[lru].bytes);
      c->maps[lru] = c->maps[--c->nmaps];
    }
    m = &c->maps[c->nmaps++];
    *m = (struct coll_map){s->pid, g->ino, g->bytes, p, k, rw};
  }
  m->used = k;
  if (write && !m->rw) return NULL;
  return (char *)m->local + (addr - g->base);
}

static const char *peer_ptr(yk_comm *c, int q, uint64_t k, int which, uint64_t addr, size_t n) {
  return peer_map(c, q, k, which, addr, n, 0);
}

void coll_shm_destroy(yk_comm *c) {
  for (int i = 0; i < c->nmaps; i++) munmap(c->maps[i].local, c->maps[i].bytes);
  c->nmaps = 0;
  if (c->board) munmap(c->board, c->board_bytes);
  c->board = NULL;
  c->shm_ok = c->cma_ok = 0;
  yk_free(c->shm_tmp);
  c->shm_tmp = NULL;
  c->shm_tmp_bytes = 0;
}

static int map_board(yk_comm *c, const char *name, int create) {
  int fd = shm_open(name, O_RDWR | (create ? O_CREAT | O_EXCL : 0), 0600);
  if (fd < 0) return -1;
  if (create && ftruncate(fd, (off_t)c->board_bytes) != 0) {
    close(fd);
    shm_unlink(name);
    return -1;
  }
  struct stat st;
  if (!create && (fstat(fd, &st) != 0 || (size_t)st.st_size < c->board_bytes)) {
    close(fd);
    return -1;
  }
  void *p = mmap(NULL, c->board_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) {
    if (create) shm_unlink(name);
    return -1;
  }
  c->board = p;
  return 0;
}

/* Copy n bytes between my memory `mine` and address `theirs` of rank q:
 * from q when !write, to q when write (process_vm_readv/writev; memcpy for a
 * rank that is a thread of this process). */
static int peer_copy(yk_comm *c, int q, void *mine, uint64_t theirs, size_t n, int write, yk_diag *d) {
  pid_t pid = (pid_t)slot(c, q)->pid;
  if (pid == getpid()) {
    if (write) memcpy((void *)(uintptr_t)theirs, mine, n);
    else memcpy(mine, (const void *)(uintptr_t)theirs, n);
    return 0;
  }
  char *o = mine;
  while (n) {
    struct iovec l = {o, n}, r = {(void *)(uintptr_t)theirs, n};
    ssize_t got = write ? process_vm_writev(pid, &l, 1, &r, 1, 0) : process_vm_readv(pid, &l, 1, &r, 1, 0);
    if (got <= 0) {
      if (got < 0 && errno == EINTR) continue;
      if (got < 0 && errno == ESRCH) return coll_peer_gone(c, q, d);
      int e = got < 0 ? errno : EIO;
      int rc = yk_errorf(d, YK_ESYS,
                         "rank %d cannot %s the buffer of rank %d (host %s, pid %d) for collective #%u: %s; set "
                         "comm.algo=ring (or YK_ALGO=ring) if cross-memory attach is not allowed here",
                         c->rank, write ? "write" : "read", q, coll_host(c, q), (int)pid, c->seq, strerror(e));
      return coll_fail(c, q, rc, d);
    }
    o += got;
    theirs += (uint64_t)got;
    n -= (size_t)got;
  }
  return 0;
}

static int peer_read(yk_comm *c, int q, void *dst, uint64_t src, size_t n, yk_diag *d) {
  return peer_copy(c, q, dst, src, n, 0, d);
}

/* Setup, in the steps between which creation (comm.c) runs its collectives
 * (docs/collectives.md, "Shared-memory board"). First: the sizes, and rank 0
 * creates and maps the object and writes its name (empty when that failed).
 * 0 when these ranks cannot share a board (not one node, or too many). */
int coll_shm_open(yk_comm *c, size_t oneshot, char name[COLL_SHM_NAME]) {
  if (!oneshot) oneshot = ONESHOT_DEFAULT;
  if (oneshot > ONESHOT_MAX) oneshot = ONESHOT_MAX;
  c->shm_oneshot = (oneshot + 63) & ~(size_t)63;
  c->shm_block = c->seg_explicit ? (c->seg_bytes < 64 ? 64 : c->seg_bytes) : 256 * 1024;
  int local = c->node != NULL;
  for (int i = 0; local && i < c->size; i++) local = c->node[i] == c->node[0];
  if (c->size < 2 || c->size > YK_COLL_MAX_SHM_RANKS || !local) return 0;
  int n = c->size;
  c->board_bytes = data_off(n) + (size_t)n * 2 * c->shm_oneshot;
  memset(name, 0, COLL_SHM_NAME);
  if (c->rank == 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t nonce = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40) ^
                     ((uint64_t)c->comm_id << 8) ^ c->epoch;
    snprintf(name, COLL_SHM_NAME, "/yk-%d-%016llx", (int)getpid(), (unsigned long long)nonce);
    if (map_board(c, name, 1) != 0) name[0] = 0;
  }
  return 1;
}

/* Second, with rank 0's name: the other ranks map the board, and every rank
 * that has it fills its slot (rank 0 also the header). */
void coll_shm_attach(yk_comm *c, char name[COLL_SHM_NAME]) {
  name[COLL_SHM_NAME - 1] = 0;
  if (c->rank != 0 && name[0]) map_board(c, name, 0);
  if (!c->board) return;
  if (c->rank == 0) {
    struct coll_board *h = c->board;
    h->magic = BOARD_MAGIC;
    h->version = BOARD_VERSION;
    h->size = c->size;
    h->oneshot = c->shm_oneshot;
    h->block = c->shm_block;
  }
  board_slot *s = slot(c, c->rank);
  c->shm_cookie = ((uint64_t)getpid() * 0x9e3779b97f4a7c15ull) ^ (uint64_t)c->rank ^ 0x5a5a;
  s->pid = getpid();
  s->cookie_addr = (uint64_t)(uintptr_t)&c->shm_cookie;
  s->cookie_val = c->shm_cookie;
}

/* Once every rank had its chance to open it (or the setup failed): rank 0
 * removes the name, so nothing is left in /dev/shm. */
void coll_shm_unlink(yk_comm *c, const char name[COLL_SHM_NAME]) {
  if (c->rank == 0 && c->board && name[0]) shm_unlink(name);
}

/* Third, after a barrier (every slot is filled): ok[0] = this rank has the
 * board and agrees with its header, ok[1] = it can also read the next
 * rank's memory (cross-memory attach). */
void coll_shm_probe(yk_comm *c, int32_t ok[2]) {
  ok[0] = c->board != NULL;
  ok[1] = 0;
  if (!c->board) return;
  struct coll_board *h = c->board;
  ok[0] = h->magic == BOARD_MAGIC && h->version == BOARD_VERSION && h->size == c->size &&
          h->oneshot == c->shm_oneshot && h->block == c->shm_block;
  /* read the next rank's cookie out of its private memory */
  board_slot *s = slot(c, (c->rank + 1) % c->size);
  uint64_t v = 0;
  if ((pid_t)s->pid == getpid()) {
    v = *(const uint64_t *)(uintptr_t)s->cookie_addr;
  } else {
    struct iovec l = {&v, sizeof v}, r = {(void *)(uintptr_t)s->cookie_addr, sizeof v};
    if (process_vm_readv((pid_t)s->pid, &l, 1, &r, 1, 0) != (ssize_t)sizeof v) v = ~s->cookie_val;
  }
  ok[1] = ok[0] && v == s->cookie_val;
}

/* Last, with the minimum of every rank's probe: the board is on for all or
 * for none. */
void coll_shm_agree(yk_comm *c, const int32_t ok[2]) {
  if (!ok[0]) {
    if (c->board) munmap(c->board, c->board_bytes);
    c->board = NULL;
    if (c->rank == 0)
      yk_log(&c->log, YK_LOG_INFO, "collectives: no shared-memory board (shm_open or mmap failed on a rank, or the "
                                   "ranks set different shm_oneshot_bytes/segment_bytes): the ranks on this host use "
                                   "the ring over %s", c->tname);
    return;
  }
  c->shm_ok = 1;
  c->cma_ok = ok[1];
  if (!ok[1] && c->rank == 0)
    yk_log(&c->log, YK_LOG_INFO, "collectives: ranks cannot read each other's memory (process_vm_readv): all-reduces "
                                 "above %zu bytes use the ring", c->shm_oneshot);
}

/* dst = src[0] (op) src[1] (op) ... (op) src[n-1], in that order; dst may
 * alias src[0] (only). */
static void reduce_all(void *dst, const void *const *src, int n, size_t count, yk_dtype t, yk_redop op) {
  if (n == 1) {
    if (dst != src[0]) memmove(dst, src[0], count * yk_dtype_size(t));
    return;
  }
  yk_coll_reduce(dst, src[0], src[1], count, t, op, 0);
  for (int i = 2; i < n; i++) yk_coll_reduce(dst, dst, src[i], count, t, op, 0);
}

static int wait_arrivals(yk_comm *c, const board_op *mine, uint64_t k, yk_diag *d) {
  for (int i = 1; i < c->size; i++) {
    int q = (c->rank + i) % c->size;
    board_slot *s = slot(c, q);
    int rc = coll_wait_flag(c, &s->arrive, k, q, d);
    if (rc) return rc;
    const board_op *po = &s->op[k & 1];
    if (po->k != k) {
      rc = yk_errorf(d, YK_EPROTO, "rank %d (host %s) is out of step on the shared board (operation %llu, expected "
                                   "%llu): the ranks chose different algorithms; set the same comm.algo everywhere",
                     q, coll_host(c, q), (unsigned long long)po->k, (unsigned long long)k);
      return coll_fail(c, q, rc, d);
    }
    rc = coll_hdr_check(c, &mine->h, &po->h, q, d);
    if (rc) return rc;
    if (po->first != mine->first || po->total != mine->total) {
      rc = yk_errorf(d, YK_EMISMATCH, "mismatched collectives: rank %d reduces elements [%llu, +%llu) of %llu to their "
                                      "owners but rank %d (host %s) elements [%llu, ...) of %llu",
                     c->rank, (unsigned long long)mine->first, (unsigned long long)mine->h.count,
                     (unsigned long long)mine->total, q, coll_host(c, q), (unsigned long long)po->first,
                     (unsigned long long)po->total);
      return coll_fail(c, q, rc, d);
    }
  }
  return 0;
}

/* Copy blocks [b0, b1) of rank q's final chunk (at element qoff, qlen
 * elements, blocks of blk) from q's output into ours. */
static int gather_blocks(yk_comm *c, int q, uint64_t k, char *out, size_t qoff, size_t qlen, size_t blk, size_t es,
                         size_t b0, size_t b1, int stream, yk_diag *d) {
  size_t e0 = b0 * blk, e1 = YK_MIN(b1 * blk, qlen);
  if (e1 <= e0) return 0;
  size_t at = (qoff + e0) * es, n = (e1 - e0) * es;
  uint64_t pa = slot(c, q)->op[k & 1].recvbuf + at;
  const char *p = peer_ptr(c, q, k, 1, pa, n);
  if (p) {
    if (stream) coll_copy_stream(out + at, p, n);
    else memcpy(out + at, p, n);
    return 0;
  }
  return peer_read(c, q, out + at, pa, n, d);
}

static int shm_tmp_reserve(yk_comm *c, size_t need, yk_diag *d) {
  if (need <= c->shm_tmp_bytes) return 0;
  yk_free(c->shm_tmp);
  c->shm_tmp = yk_alloc(need);
  c->shm_tmp_bytes = c->shm_tmp ? need : 0;
  if (c->shm_tmp) return 0;
  int rc = yk_errorf(d, YK_ENOMEM, "rank %d: out of memory for %zu bytes of shared-memory staging", c->rank, need);
  return coll_fail(c, c->rank, rc, d);
}

/* Reduce to owners with the work split evenly (see the top of the file):
 * I reduce elements [w0, w0+wl) of the bucket, in blocks of at most blk
 * that never cross an owner's boundary. qoff/qlen: each rank's owned part
 * of this bucket. */
static int shm_owned_shared(yk_comm *c, struct yk_request *r, uint64_t k, const size_t *qoff, const size_t *qlen,
                            size_t blk, yk_diag *d) {
  const uint64_t done = (k << BLK_BITS) | 1; /* rs_done: my share is written */
  int n = c->size, me = c->rank, rc;
  size_t es = yk_dtype_size(r->dtype), w0, wl;
  coll_range(r->count, n, me, &w0, &wl);
  if ((rc = shm_tmp_reserve(c, (size_t)n * blk * es, d))) return rc;
  const char *in = r->sendbuf;
  char *out = r->recvbuf;
  const void *src[YK_COLL_MAX_SHM_RANKS];
  for (size_t e = w0; e < w0 + wl;) {
    int q = yk_partition_owner(r->total, n, r->first + e); /* element e's owner */
    size_t end = YK_MIN(YK_MIN(w0 + wl, qoff[q] + qlen[q]), e + blk), m = end - e, at = e * es;
    char *t = c->shm_tmp;
    for (int i = 0; i < n; i++) { /* the owner's input first: its bits, and dst may alias only src[0] */
      int s = (q + i) % n;
      if (s == me) {
        src[i] = in + at;
        continue;
      }
      uint64_t pa = slot(c, s)->op[k & 1].sendbuf + at;
      if ((src[i] = peer_ptr(c, s, k, 0, pa, m * es))) continue;
      if ((rc = peer_read(c, s, t, pa, m * es, d))) return rc;
      src[i] = t;
      t += blk * es;
    }
    uint64_t pa = slot(c, q)->op[k & 1].recvbuf + at;
    char *dst = q == me ? out + at : peer_map(c, q, k, 1, pa, m * es, 1);
    int staged = !dst;
    if (staged) dst = t; /* no writable mapping: reduce here, then process_vm_writev */
    reduce_all(dst, src, n, m, r->dtype, r->op);
    if (r->op == YK_OP_AVG) yk_coll_avg_finish(dst, m, r->dtype, n);
    if (staged && (rc = peer_copy(c, q, dst, pa, m * es, 1, d))) return rc;
    e = end;
  }
  atomic_store_explicit(&slot(c, me)->rs_done, done, memory_order_release);
  /* my output is final, and nobody reads my input any more, once every
   * share is done */
  for (int i = 1; i < n; i++) {
    int q = (me + i) % n;
    if ((rc = coll_wait_flag(c, &slot(c, q)->rs_done, done, q, d))) return rc;
  }
  return 0;
}

/* All-reduce, reduce-scatter (input: count elements; output: my range,
 * recvbuf[0..len)) or all-gather (input: my range; output: count elements)
 * on the board. */
int coll_shm_run(yk_comm *c, struct yk_request *r, yk_diag *d) {
  int n = c->size, me = c->rank, rc;
  int ar = r->kind == OPK_ALLREDUCE, own = r->kind == OPK_REDUCE_OWNED;
  int rs = ar || own || r->kind == OPK_REDUCE_SCATTER, ag = ar || r->kind == OPK_ALLGATHER;
  size_t es = yk_dtype_size(r->dtype), bytes = r->count * es;
  uint64_t k = ++c->shm_k;
  board_slot *my = slot(c, me);
  board_op *o = &my->op[k & 1];
  coll_hdr_fill(c, r, &o->h);
  o->h.algo = YK_ALGO_SHM;
  o->k = k;
  o->sendbuf = (uint64_t)(uintptr_t)r->sendbuf;
  o->recvbuf = (uint64_t)(uintptr_t)r->recvbuf;
  o->first = r->first;
  o->total = r->total;
  find_reg(c, r->sendbuf, bytes, &o->reg[0]);
  find_reg(c, r->recvbuf, bytes, &o->reg[1]);
  int oneshot = ar && bytes <= c->shm_oneshot;
  if (oneshot && bytes) memcpy(data(c, me, k), r->sendbuf, bytes);
  size_t qoff[YK_COLL_MAX_SHM_RANKS], qlen[YK_COLL_MAX_SHM_RANKS], qnb[YK_COLL_MAX_SHM_RANKS], qgot[YK_COLL_MAX_SHM_RANKS];
  size_t blk = c->shm_block / es ? c->shm_block / es : 1;
  /* a chunk has fewer than 2^BLK_BITS blocks (same rule on every rank) */
  size_t maxc = r->count;
  if (maxc / blk >= ((size_t)1 << BLK_BITS) - 1) blk = maxc / (((size_t)1 << BLK_BITS) - 2) + 1;
  for (int q = 0; q < n; q++) {
    if (own) { /* q's even range of the whole vector, cut to this buffer */
      size_t go, gl;
      coll_range(r->total, n, q, &go, &gl);
      size_t a = YK_MAX(go, r->first), b = YK_MIN(go + gl, r->first + r->count);
      qoff[q] = b > a ? a - r->first : 0;
      qlen[q] = b > a ? b - a : 0;
    } else {
      coll_range(r->count, n, q, &qoff[q], &qlen[q]);
    }
    qnb[q] = (qlen[q] + blk - 1) / blk;
    qgot[q] = 0;
  }
  char *out = r->recvbuf;
  const char *in = r->sendbuf;
  /* all-gather: my piece goes to its place in my output first, where the
   * peers read it */
  if (!rs && qlen[me] && in != out + qoff[me] * es) memmove(out + qoff[me] * es, in, qlen[me] * es);
  atomic_store_explicit(&my->arrive, k, memory_order_release);
  if ((rc = wait_arrivals(c, o, k, d))) return rc;
  if (!bytes) return 0;
  const void *src[YK_COLL_MAX_SHM_RANKS];
  if (oneshot) {
    for (int q = 0; q < n; q++) src[q] = data(c, q, k);
    reduce_all(r->recvbuf, src, n, r->count, r->dtype, r->op);
    if (r->op == YK_OP_AVG) yk_coll_avg_finish(r->recvbuf, r->count, r->dtype, n);
    return 0;
  }
  uint64_t kk = k << BLK_BITS;
  if (own && c->cma_ok) return shm_owned_shared(c, r, k, qoff, qlen, blk, d);
  /* Two ranks, a message larger than the last-level cache, a plain sum:
   * write the output with streaming stores (docs/collectives.md). */
  int stream = n == 2 && ar && bytes >= SHM_STREAM_MIN && r->op == YK_OP_SUM && r->dtype == YK_DT_F32;
  if (rs) {
    /* Reduce-scatter of my chunk block by block; in an all-reduce it is
     * interleaved with the all-gather: after each block, copy the blocks the
     * peers have finished meanwhile, so they are read while still in the
     * shared L3. Progress words are (k << BLK_BITS) | blocks done. */
    if ((rc = shm_tmp_reserve(c, (size_t)(n - 1) * blk * es, d))) return rc;
    for (size_t b = 0; b < qnb[me]; b++) {
      size_t m = YK_MIN(blk, qlen[me] - b * blk), at = (qoff[me] + b * blk) * es;
      /* Sum order: mine first, then me+1, me+2, ...: the output may alias
       * my input (in place), and only the first source may alias dst. Each
       * chunk has one owner, so every rank still gets the owner's bits. */
      char *t = c->shm_tmp;
      src[0] = in + at;
      for (int i = 1; i < n; i++) {
        int q = (me + i) % n;
        uint64_t pa = slot(c, q)->op[k & 1].sendbuf + at;
        if ((src[i] = peer_ptr(c, q, k, 0, pa, m * es))) continue; /* direct */
        if ((rc = peer_read(c, q, t, pa, m * es, d))) return rc;
        src[i] = t;
        t += blk * es;
      }
      /* reduce-scatter: recvbuf holds my range only */
      char *dst = ag || own ? out + at : out + b * blk * es;
      if (stream) coll_reduce_stream(dst, src[0], src[1], m, r->dtype, r->op);
      else reduce_all(dst, src, n, m, r->dtype, r->op);
      if (r->op == YK_OP_AVG) yk_coll_avg_finish(dst, m, r->dtype, n);
      if (stream) coll_stream_fence();
      atomic_store_explicit(&my->rs_done, kk | (b + 1), memory_order_release);
      for (int i = 1; i < n && ag; i++) {
        int q = (me + i) % n;
        uint64_t ready = atomic_load_explicit(&slot(c, q)->rs_done, memory_order_acquire);
        if (ready < kk) continue;
        ready -= kk;
        if (ready > qgot[q] && (rc = gather_blocks(c, q, k, out, qoff[q], qlen[q], blk, es, qgot[q], ready, stream, d)))
          return rc;
        if (ready > qgot[q]) qgot[q] = ready;
      }
    }
  }
  atomic_store_explicit(&my->rs_done, kk | qnb[me], memory_order_release);
  if (!ag) {
    /* reduce-scatter alone: a peer has read my input once its chunk is final */
    for (int i = 1; i < n; i++) {
      int q = (me + i) % n;
      if ((rc = coll_wait_flag(c, &slot(c, q)->rs_done, kk | qnb[q], q, d))) return rc;
    }
    return 0;
  }
  /* the rest of the all-gather */
  for (int i = 1; i < n; i++) {
    int q = (me + i) % n;
    if (qgot[q] >= qnb[q]) continue;
    if ((rc = coll_wait_flag(c, &slot(c, q)->rs_done, kk | qnb[q], q, d))) return rc;
    if ((rc = gather_blocks(c, q, k, out, qoff[q], qlen[q], blk, es, qgot[q], qnb[q], stream, d))) return rc;
  }
  if (stream) coll_stream_fence();
  atomic_store_explicit(&my->ag_done, k, memory_order_release);
  for (int i = 1; i < n; i++) {
    int q = (me + i) % n;
    if ((rc = coll_wait_flag(c, &slot(c, q)->ag_done, k, q, d))) return rc;
  }
  return 0;
}
