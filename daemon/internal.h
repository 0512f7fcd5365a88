/* internal.h - private to daemon/: one authenticated protocol connection on a
 * libuv TCP handle, shared by the coordinator, the rank's control link and
 * the /metrics server's plumbing. Not a public header. */
#ifndef YK_DAEMON_INTERNAL_H
#define YK_DAEMON_INTERNAL_H

#include <uv.h>

#include "yk_daemon.h"

typedef struct ykd_conn ykd_conn;

/* Callbacks run on the loop thread. on_msg owns nothing: the message and its
 * buffer are valid only during the call. on_refuse reports a frame that was
 * malformed, unauthenticated or stale: the connection is already closing.
 * on_close runs once after the handle is closed: free the owner there. */
typedef struct ykd_conn_cbs {
  void (*on_msg)(ykd_conn *c, const yk_msg *m);
  void (*on_refuse)(ykd_conn *c, int code, const char *why);
  void (*on_close)(ykd_conn *c, int uv_err);
} ykd_conn_cbs;

struct ykd_conn {
  uv_tcp_t tcp;           /* first member: handle->data points to the conn */
  ykd_conn_cbs cbs;
  void *owner;
  const uint8_t *key;     /* borrowed from the owner */
  size_t key_len;
  uint8_t *rbuf;
  size_t rlen, rcap;
  yk_proto_peer in;       /* freshness of what we receive */
  int in_ready;           /* 0 until the session is known */
  int server_side;        /* 1: latch the client nonce from its first frame */
  uint8_t session[16];    /* stamped on what we send */
  uint64_t out_seq;
  int closing;
  int draining;           /* stop processing input (an ERROR is on its way out) */
  int close_err;          /* libuv error that caused the close (0 = local) */
  uint64_t opened_ns;
  char peer[80];          /* "ip:port" for logs */
  int pending_writes;
};

/* Initialise c (the caller owns the memory, which must stay valid until
 * on_close). */
int ykd_conn_init(uv_loop_t *loop, ykd_conn *c, void *owner, const ykd_conn_cbs *cbs, const uint8_t *key,
                  size_t key_len);
/* Start reading once connected/accepted; also fills c->peer. */
int ykd_conn_start(ykd_conn *c);
/* Stamp seq and session, encode, queue the write. */
int ykd_conn_send(ykd_conn *c, yk_msg *m);
/* Close (idempotent); on_close follows. */
void ykd_conn_close(ykd_conn *c, int err);

/* 8 random bytes. */
void ykd_random(void *out, size_t n);

/* Prometheus /metrics over HTTP (metrics.c). render writes the body into
 * buf (cap bytes) and returns its length; called on the loop thread. */
typedef size_t (*ykd_metrics_render)(void *arg, char *buf, size_t cap);
typedef struct ykd_metrics ykd_metrics;
int ykd_metrics_start(uv_loop_t *loop, const char *bind, int port, ykd_metrics_render render, void *arg,
                      const yk_logger *log, ykd_metrics **out, yk_diag *d);
void ykd_metrics_close(ykd_metrics *m);

/* host:port -> address (numeric or resolved), for connecting. */
int ykd_resolve(const char *host, int port, struct sockaddr_storage *ss, yk_diag *d);

/* Stragglers (straggler.c): from every live rank's latest step report, the
 * rank whose compute (step minus communication wait) is largest, and how
 * much above the median rank's. 0 when fewer than two ranks reported. */
typedef struct ykd_straggler_view {
  int rank;
  int64_t step;          /* the oldest step among the reports */
  double compute_ms, median_ms;
  double excess;         /* compute / median - 1 */
} ykd_straggler_view;
int ykd_straggler_of(const yk_step_stats *reps, const int *live, int n, ykd_straggler_view *v);

/* The coordinator's warning: one WARN line when the same rank is more than
 * warn_share above the median for 3 new steps in a row, then at most once a
 * minute for that rank. Zeroed = ready (warn_share 0: 0.2). */
typedef struct ykd_straggler {
  double warn_share;
  int64_t last_step;
  int rank, streak;
  int warned_rank;
  uint64_t last_warn_ns;
} ykd_straggler;
void ykd_straggler_note(ykd_straggler *s, const yk_step_stats *reps, const int *live, int n, const yk_logger *log);

/* Job files of `yoke launch` (jobfile.c, docs/launch.md): how `yoke status`
 * finds a local job. write: `what` is the launched command, for listings;
 * path (cap bytes) receives the file's path; the caller unlinks it at exit.
 * list: the well-formed files of live launchers (files of dead ones are
 * removed); *out is malloc'd (free()), *n its length; 0 jobs is not an error. */
typedef struct ykd_jobinfo {
  char id[24];
  int pid;
  char coord[300];                   /* host:port */
  char secret[2 * YK_SECRET_MAX + 1]; /* hex */
  long long started;                 /* Unix time */
  char command[256];
} ykd_jobinfo;
int ykd_jobfile_write(uint64_t job_id, const char *host, int port, const uint8_t *key, size_t key_len,
                      const char *what, char *path, size_t cap, yk_diag *d);
int ykd_jobfile_list(ykd_jobinfo **out, int *n, yk_diag *d);
/* The job `yoke launch` runs here: `want` (an id or its prefix), else the
 * only live one. 1: found (*j filled); 0: none running here and none asked
 * for; <0: an error in d (several jobs, listed on stderr, or no job `want`). */
int ykd_jobfile_find(const char *want, ykd_jobinfo *j, yk_diag *d);

#endif
