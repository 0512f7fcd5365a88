/* yk_daemon.h - the one public header of yoke's `daemon` module.
 *
 * What lives here:
 *   - the control protocol (docs/protocol.md): framing, HMAC-SHA256
 *     authentication, a pure decoder (fuzzed), replay refusal;
 *   - SLURM hostlist expansion and launch-environment detection (OpenMPI,
 *     SLURM, the local launcher's YOKE_* variables);
 *   - the coordinator (rendezvous, heartbeats, dead-rank detection, status);
 *   - the per-rank control plane: a libuv loop in its own thread that the
 *     step loop drives through yk_daemon_ctl_{start,report,poll,stop};
 *   - the step loop itself: `yoke train` / `yoke eval` (train.c);
 *   - the subcommands `yoke coord`, `yoke launch`, `yoke status`,
 *     `yoke daemon-selftest` (their command lines are in cli/).
 *
 * Exit codes are in docs/exit-codes.md and yk_exit_code (yk_common.h).
 */
#ifndef YK_DAEMON_H
#define YK_DAEMON_H

#include <stddef.h>
#include <stdint.h>

#include "yk_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The exit code for a YK_E* error from the control plane (yk_daemon_ctl_start
 * and friends): YK_ECONFIG/YK_EUSAGE/YK_EAUTH (job secret mismatch) -> 2, YK_EPEERDEAD -> 3, YK_ECLOSED -> 4,
 * YK_ETIMEDOUT -> 5, YK_EINTR -> 130, 0 -> 0, anything else -> 1. */
int yk_daemon_exit_code(int yk_err);

/* ------------------------------------------------------------------------ */
/* Control protocol (docs/protocol.md)                                      */
/* ------------------------------------------------------------------------ */

#define YK_PROTO_VERSION 2
#define YK_PROTO_MAGIC 0x50434b59u    /* "YKCP" little-endian */
#define YK_PROTO_HDR 40               /* fixed header bytes */
#define YK_PROTO_MAC 32               /* HMAC-SHA256 trailer */
#define YK_PROTO_MAX_PAYLOAD (4u << 20)
#define YK_PROTO_MAX_HOST 255
#define YK_PROTO_MAX_ADDR 4096        /* data-plane address blob per rank */
#define YK_PROTO_MAX_TEXT 1024
#define YK_PROTO_MAX_WORLD 65536
#define YK_SECRET_MAX 256

typedef enum {
  YK_MSG_CHALLENGE = 1,     /* S->C  first frame on a connection: server nonce */
  YK_MSG_REGISTER = 2,      /* C->S  rank hint, world, host, pid, address blob */
  YK_MSG_WELCOME = 3,       /* S->C  rank, world, epoch, job id, every member's address */
  YK_MSG_HEARTBEAT = 4,     /* C->S  latest step metrics */
  YK_MSG_HEARTBEAT_ACK = 5, /* S->C  epoch, members alive */
  YK_MSG_PEER_DEAD = 6,     /* S->C  rank, host, reason */
  YK_MSG_SHUTDOWN = 7,      /* S->C  job ends: exit code, reason */
  YK_MSG_BYE = 8,           /* C->S  this rank is leaving: exit code, reason */
  YK_MSG_STATUS_REQ = 9,    /* C->S  ask for the job's state */
  YK_MSG_STATUS = 10,       /* S->C  job state and members */
  YK_MSG_EXCHANGE = 11,     /* C->S  one blob for an all-gather round of an epoch */
  YK_MSG_EXCHANGE_ALL = 12, /* S->C  every rank's blob for that round */
  YK_MSG_ERROR = 13,        /* S->C  refusal with a reason, then the server closes */
  YK_MSG_REQUEST = 14,      /* C->S  ask the job to checkpoint-and-exit or stop (rank or operator) */
  YK_MSG_CHECKPOINT = 15,   /* S->C  checkpoint at the next step boundary, then exit with code */
  YK_MSG_REFORM = 16,       /* S->C  elastic: the membership of a new epoch (WELCOME's fields, cause, reason) */
  YK_MSG_TYPE_MAX_ = 17
} yk_msg_type;

const char *yk_msg_type_name(int type);

/* What a rank reports each step is yk_step_stats (yk_common.h: the same
 * struct its log and JSON lines come from). HEARTBEAT carries step, loss,
 * tokens_per_s, step_ms, comm_wait_ms, allreduce_bytes and loss_scale
 * (docs/protocol.md); the other fields stay on the rank. */

/* One member in WELCOME / STATUS. */
typedef struct yk_msg_member {
  int32_t rank;
  uint32_t pid;
  uint8_t state;              /* yk_member_state */
  char host[YK_PROTO_MAX_HOST + 1];
  uint32_t addr_len;
  const uint8_t *addr;        /* points into the decoded buffer (WELCOME) */
  uint32_t hb_age_ms;         /* STATUS: time since its last heartbeat */
  yk_step_stats rep;         /* STATUS: its last report */
} yk_msg_member;

/* One membership change in STATUS (elastic jobs, docs/elasticity.md). */
#define YK_PROTO_MAX_CHANGES 8
typedef struct yk_msg_change {
  uint32_t epoch;             /* the epoch it started */
  double seconds;             /* from the change to the first step completed after it; < 0: not yet */
  char cause[256];
} yk_msg_change;

/* REQUEST actions */
typedef enum {
  YK_REQ_CHECKPOINT = 1, /* every rank: checkpoint at the next step boundary, exit 75 */
  YK_REQ_STOP = 2,       /* every rank: stop at the next step boundary, exit 130 */
  YK_REQ_DRAIN = 3,      /* elastic: rank `code` leaves at the next step boundary (exit 0) */
} yk_request_action;

/* Why a REFORM happened (its `code`): docs/elasticity.md. */
typedef enum {
  YK_REFORM_FAILURE = 1, /* a rank died or went silent: abort what is in flight, redo the step */
  YK_REFORM_JOIN = 2,    /* ranks joined: re-form at the next step boundary */
  YK_REFORM_DRAIN = 3,   /* a rank is draining: re-form at the next step boundary, it leaves */
} yk_reform_cause;

typedef enum {
  YK_MEMBER_EMPTY = 0,
  YK_MEMBER_REGISTERED = 1,
  YK_MEMBER_DEAD = 2,
  YK_MEMBER_DONE = 3,
} yk_member_state;

/* A decoded message. Variable parts (strings copied, blobs and the member
 * array pointing into the input buffer or into `members`) stay valid while
 * the input buffer lives; `members` is owned by the caller of decode and
 * freed with yk_msg_free. */
typedef struct yk_msg {
  uint8_t version;
  uint8_t type;
  int32_t sender;               /* sender's rank, -1 for coordinator/none */
  uint64_t seq;
  uint8_t session[16];          /* server nonce (8) | client nonce (8) */
  /* payload fields (which are set depends on type) */
  int32_t rank;                 /* REGISTER hint, WELCOME rank, PEER_DEAD rank */
  int32_t world;
  int32_t local_rank;
  uint32_t pid;
  uint32_t epoch;
  uint64_t job_id;
  int32_t code;                 /* SHUTDOWN / BYE exit code */
  uint32_t round;               /* EXCHANGE */
  int32_t action;               /* REQUEST: yk_request_action */
  int32_t alive;                /* HEARTBEAT_ACK / STATUS: members alive */
  char host[YK_PROTO_MAX_HOST + 1];
  char text[YK_PROTO_MAX_TEXT + 1]; /* reasons, error messages */
  uint32_t blob_len;
  const uint8_t *blob;          /* REGISTER/EXCHANGE blob (points into input) */
  yk_step_stats rep;           /* HEARTBEAT */
  uint32_t n_members;
  yk_msg_member *members;       /* WELCOME / STATUS / EXCHANGE_ALL (addr = blob) */
  /* STATUS (elastic jobs): the latest membership changes, oldest first */
  uint32_t n_changes;
  yk_msg_change changes[YK_PROTO_MAX_CHANGES];
  double recovery_s;            /* STATUS: time lost to every change so far */
} yk_msg;

void yk_msg_free(yk_msg *m);

/* Encode m as one authenticated frame into a new buffer (*out, malloc'd,
 * caller frees with free()). Fields not used by m->type are ignored. */
int yk_proto_encode(const yk_msg *m, const uint8_t *key, size_t key_len, uint8_t **out, size_t *out_len,
                    yk_diag *d);

/* Pure decoder: bytes -> message. Returns the number of bytes the frame
 * used (> 0), 0 if buf holds only part of a frame (read more), or a
 * negative code: YK_EPROTO (bad magic/version/type/length/payload),
 * YK_EAUTH (HMAC mismatch, checked in constant time before the payload is
 * parsed). Never reads past len, never allocates more than the frame claims
 * (capped at YK_PROTO_MAX_PAYLOAD). On success the caller owns out and
 * frees it with yk_msg_free. */
long yk_proto_decode(const uint8_t *buf, size_t len, const uint8_t *key, size_t key_len, yk_msg *out,
                     yk_diag *d);

/* Replay protection for one direction of one connection: the session field
 * must equal the connection's (server nonce | client nonce) and seq must
 * strictly increase. Returns 0 or YK_EAUTH ("stale"). */
typedef struct yk_proto_peer {
  uint8_t session[16];
  uint64_t last_seq;
} yk_proto_peer;
int yk_proto_check_fresh(yk_proto_peer *p, const yk_msg *m, yk_diag *d);

/* The per-job secret: coord.secret_file if set, else env YOKE_SECRET (hex or
 * raw text, at least 16 bytes). Returns YK_ENOTFOUND when neither exists. */
int yk_daemon_secret_load(const yk_config *cfg, uint8_t *key, size_t *key_len, yk_diag *d);
/* 32 random bytes as 64 hex characters plus NUL into hex[65]. */
int yk_daemon_secret_generate(char hex[65], yk_diag *d);

/* ------------------------------------------------------------------------ */
/* SLURM hostlists                                                          */
/* ------------------------------------------------------------------------ */

/* Expand a SLURM hostlist ("node[01-04,07]", "a[1-2],b3", "r[1-2]n[3-4]")
 * into *hosts (array of *n malloc'd strings; free with
 * yk_hostlist_free). Zero padding of the lower bound is kept
 * ("n[08-10]" -> n08 n09 n10). Errors name the bad part. */
int yk_hostlist_expand(const char *list, char ***hosts, int *n, yk_diag *d);
void yk_hostlist_free(char **hosts, int n);
/* Only the first host (what the coordinator needs), into out[cap]. */
int yk_hostlist_first(const char *list, char *out, size_t cap, yk_diag *d);

/* ------------------------------------------------------------------------ */
/* Launch environment                                                       */
/* ------------------------------------------------------------------------ */

typedef enum {
  YK_LAUNCH_SINGLE = 0,   /* no launcher: rank 0 of 1 */
  YK_LAUNCH_YOKE = 1,     /* `yoke launch` or hand-set YOKE_* variables */
  YK_LAUNCH_OPENMPI = 2,  /* mpirun */
  YK_LAUNCH_SLURM = 3,    /* srun */
} yk_launch_kind;

typedef struct yk_launch_env {
  yk_launch_kind kind;
  int rank, world, local_rank, local_world;
  char host[256];         /* this process's host name */
  char coord_host[256];   /* where the coordinator listens */
  int coord_port;
  int embed_coord;        /* 1: this rank (0) runs the coordinator in its control thread */
  char job_tag[64];       /* SLURM_JOB_ID or YOKE_JOB_ID if set (for the job id) */
} yk_launch_env;

/* Lookup function for environment variables (NULL -> getenv), so tests can
 * feed a fake environment. */
typedef const char *(*yk_getenv_fn)(const char *name, void *arg);

/* Rules (first match wins), documented in docs/launch.md:
 *   YOKE_RANK/YOKE_WORLD (+YOKE_LOCAL_RANK, YOKE_COORD=host:port) -> YOKE;
 *   OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK/LOCAL_SIZE -> OPENMPI;
 *   SLURM_PROCID with SLURM_STEP_NUM_TASKS or SLURM_NTASKS -> SLURM;
 *   otherwise SINGLE.
 * Coordinator: YOKE_COORD if set (rank 0 then embeds only if
 * YOKE_COORD_EMBED=1), else coord.host:coord.port if coord.host is set,
 * else SLURM: first host of SLURM_STEP_NODELIST/SLURM_JOB_NODELIST; OpenMPI
 * on one host (LOCAL_SIZE == SIZE) or SINGLE: 127.0.0.1. OpenMPI across
 * hosts without coord.host is a config error. Without YOKE_COORD rank 0
 * embeds the coordinator. */
int yk_launch_env_detect(const yk_config *cfg, yk_getenv_fn getenv_fn, void *arg, yk_launch_env *out,
                         yk_diag *d);

/* ------------------------------------------------------------------------ */
/* Coordinator                                                              */
/* ------------------------------------------------------------------------ */

typedef struct yk_coord yk_coord;
struct uv_loop_s;

typedef struct yk_coord_opts {
  const char *bind_host;        /* "0.0.0.0" if NULL */
  int port;                     /* 0 = pick a free port (see yk_coord_port) */
  int world;                    /* ranks expected */
  uint64_t job_id;              /* 0 = random */
  int64_t heartbeat_timeout_ms;
  int64_t heartbeat_ms;         /* the ranks' heartbeat interval (0: 1000): a rank silent for two of them
                                 * while another fails is named as the cause (a hung stage) */
  double straggler_warn;        /* train.straggler_warn (0: 0.2) */
  const uint8_t *key;           /* per-job secret (copied) */
  size_t key_len;
  const yk_logger *log;         /* must outlive the coordinator */
  /* elastic.* (docs/elasticity.md): a death, a drain or a join re-forms the
   * job under a new epoch (REFORM) instead of ending it */
  int elastic;
  int max_ranks;                /* members at most (0: world) */
} yk_coord_opts;

/* Create a coordinator listening on loop (the caller runs the loop). The
 * coordinator owns its handles; yk_coord_close closes them and frees it once
 * the loop has run the close callbacks. */
int yk_coord_start(struct uv_loop_s *loop, const yk_coord_opts *o, yk_coord **out, yk_diag *d);
int yk_coord_port(const yk_coord *c);
/* elastic: launched rank `rank` died before it registered (its launcher saw
 * it exit): the job starts without it. No-op otherwise. */
void yk_coord_rank_gone(yk_coord *c, int rank);
/* Members registered now (joiners waiting for their epoch included). */
int yk_coord_live(const yk_coord *c);
/* 1 once every member said BYE or is dead (after the job started), or the
 * job was aborted and everybody was told. *code is the job's exit code. */
int yk_coord_finished(const yk_coord *c, int *code);
/* End the job now: every registered rank gets SHUTDOWN(code, reason). */
void yk_coord_abort(yk_coord *c, int code, const char *reason);
/* The rank whose death (no heartbeat, lost connection) ended the job, with
 * the coordinator's sentence saying why in why[cap]; -1 if no rank was
 * declared dead before the job ended. Launchers name it as the root cause. */
int yk_coord_dead_cause(const yk_coord *c, char *why, size_t cap);
/* The job's progress as rank 0 reports it (its loss is the job's, its
 * tokens/s the whole job's): its first and its latest step report. 0 until
 * it reported a step. Ranks send their first report at once and their last
 * one before BYE, so a launcher sees where the run started and ended. */
int yk_coord_progress(const yk_coord *c, yk_step_stats *first, yk_step_stats *last);
/* One line naming the ranks not registered yet, e.g. "1 of 4 ranks missing: 3". */
void yk_coord_missing(const yk_coord *c, char *out, size_t cap);
void yk_coord_close(yk_coord *c);

/* ------------------------------------------------------------------------ */
/* The control plane of one rank (what the step loop calls)                 */
/* ------------------------------------------------------------------------ */

typedef enum {
  YK_EV_NONE = 0,
  YK_EV_PEER_DEAD = 1,            /* rank, host, text: stop with YK_EXIT_PEER_DEAD */
  YK_EV_SHUTDOWN = 2,             /* code, text: the job ends (signal or coordinator) */
  YK_EV_CHECKPOINT_REQUESTED = 3, /* checkpoint at the next step boundary, then exit with code */
  YK_EV_COORD_LOST = 4,           /* text: stop with YK_EXIT_COORD_LOST */
  YK_EV_REFORM = 5,               /* elastic: epoch, rank (-1: leave), world, code = yk_reform_cause, text */
} yk_daemon_event_type;

typedef struct yk_daemon_event {
  yk_daemon_event_type type;
  int rank;          /* PEER_DEAD: the dead rank; REFORM: this rank's new rank (-1: it leaves) */
  int code;          /* the exit code the step loop should end with (REFORM: the cause) */
  int world;         /* REFORM: ranks in the new epoch */
  uint32_t epoch;    /* REFORM: the new epoch */
  char host[256];    /* PEER_DEAD: its host */
  char text[512];    /* one line for the user */
} yk_daemon_event;

typedef struct yk_daemon_ctl yk_daemon_ctl;

typedef struct yk_daemon_ctl_opts {
  const yk_config *cfg;            /* coord.* keys are used (copied) */
  const yk_launch_env *env;        /* from yk_launch_env_detect (copied) */
  const yk_logger *log;            /* must outlive the ctl */
  const void *addr;                /* data-plane address blob sent in REGISTER (may be NULL) */
  size_t addr_len;                 /* <= YK_PROTO_MAX_ADDR */
  int64_t rendezvous_timeout_ms;   /* 0 = 60000 */
  /* Called on the control thread when the job must stop (PEER_DEAD,
   * COORD_LOST, second SIGINT/SIGTERM), e.g. to abort blocked collectives.
   * Must be thread-safe and quick. May be NULL. */
  void (*on_abort)(void *arg, const yk_daemon_event *ev);
  void *abort_arg;
  /* > 0: if the step loop has not called yk_daemon_ctl_stop this many ms
   * after an abort event, the control thread logs the event and ends the
   * process with _exit(event code) - the last guard against a hang in a
   * step that never returns. 0 = off. */
  int64_t abort_grace_ms;
} yk_daemon_ctl_opts;

/* Job facts after rendezvous. */
typedef struct yk_daemon_job {
  int rank, world, local_rank;
  uint32_t epoch;
  uint64_t job_id;
} yk_daemon_job;

/* Start the control thread: load the secret, start the embedded coordinator
 * (rank 0 when env->embed_coord), connect to the coordinator (retrying until
 * the rendezvous deadline), REGISTER, and block until WELCOME. Installs the
 * SIGINT/SIGTERM/SIGUSR1 handlers and the /metrics server
 * (coord.metrics_port + local rank, when metrics_port > 0).
 * On success *out is owned by the caller: end it with yk_daemon_ctl_stop.
 * Errors: YK_ECONFIG (no secret), YK_ETIMEDOUT (rendezvous), YK_EAUTH /
 * YK_EPROTO (refused by the coordinator), YK_ECLOSED. */
int yk_daemon_ctl_start(const yk_daemon_ctl_opts *o, yk_daemon_ctl **out, yk_diag *d);

void yk_daemon_ctl_job(const yk_daemon_ctl *ctl, yk_daemon_job *job);

/* Every rank's data-plane address from REGISTER, valid until stop.
 * Returns YK_EINVAL for a rank out of range. */
int yk_daemon_ctl_peer_addr(const yk_daemon_ctl *ctl, int rank, const void **addr, size_t *len);

/* All-gather of one fixed-size blob per rank through the coordinator (the
 * "exchange addresses among N ranks" bootstrap of the collectives). Blocks
 * until every rank contributed or the deadline (absolute ns, 0 = 60 s).
 * all receives world * len bytes, rank-major. Thread-safe; calls must be
 * made in the same order on every rank. */
int yk_daemon_ctl_allgather(yk_daemon_ctl *ctl, const void *mine, size_t len, void *all, uint64_t deadline_ns,
                            yk_diag *d);
/* The same for the members of one epoch: fails (YK_EABORTED) when the job
 * is at another epoch already, or re-forms before every member contributed
 * (elastic: the caller re-forms again at the newer one). */
int yk_daemon_ctl_allgather_epoch(yk_daemon_ctl *ctl, uint32_t epoch, const void *mine, size_t len, void *all,
                                  uint64_t deadline_ns, yk_diag *d);

/* Publish the latest step metrics (copied; cheap, thread-safe). They go out
 * with the next heartbeat and are served at /metrics. */
void yk_daemon_ctl_report(yk_daemon_ctl *ctl, const yk_step_stats *r);

/* Take the next pending event, if any: returns 1 and fills ev, or 0.
 * Never blocks. Call at every step boundary. */
int yk_daemon_ctl_poll(yk_daemon_ctl *ctl, yk_daemon_event *ev);

/* Like poll but waits until an event arrives or the deadline passes
 * (absolute monotonic ns; 0 = do not wait). Returns 1 (ev filled) or 0. */
int yk_daemon_ctl_wait(yk_daemon_ctl *ctl, yk_daemon_event *ev, uint64_t deadline_ns);

/* elastic: the step loop re-formed, in `seconds` (/metrics counts them). */
void yk_daemon_ctl_note_reform(yk_daemon_ctl *ctl, double seconds);

/* elastic: wait until the job is past epoch `epoch` (a REFORM arrived):
 * 1, or 0 at the deadline (absolute ns) or when the coordinator is lost. A
 * collective can fail (a peer's abort) a moment before the coordinator's
 * REFORM says why. */
int yk_daemon_ctl_wait_epoch(yk_daemon_ctl *ctl, uint32_t epoch, uint64_t deadline_ns);

/* Milliseconds since the last frame from the coordinator. */
int64_t yk_daemon_ctl_heartbeat_age_ms(yk_daemon_ctl *ctl);

/* Leave the job: send BYE(exit_code, reason), wait (bounded, 2 s) for it to
 * be flushed, stop the thread, close everything and free ctl. If this rank
 * embeds the coordinator, it keeps serving until the other ranks said BYE
 * or died (heartbeats keep detecting deaths meanwhile; at most 30 min). ctl
 * may be NULL. */
void yk_daemon_ctl_stop(yk_daemon_ctl *ctl, int exit_code, const char *reason);

/* ------------------------------------------------------------------------ */
/* Subcommands                                                              */
/* ------------------------------------------------------------------------ */

/* yoke train: train on this rank as one rank of its job (launch
 * environment, control plane, communicators), driving the engine step by
 * step; the log line, JSON line (json), heartbeats and /metrics report each
 * step. Returns the process exit code (docs/exit-codes.md). */
typedef struct yk_daemon_train_opts {
  const yk_config *cfg; /* the job, validated; data.train must be set */
  int json;             /* also print one JSON object per step and a summary line (rank 0) */
  const char *join;     /* "HOST:PORT": join that running elastic job (NULL: start with the launch environment) */
} yk_daemon_train_opts;
int yk_daemon_train(const yk_daemon_train_opts *o);

/* The control-plane subcommands. Each takes an options struct (set it with
 * its _default function where it has one, then change fields; cfg is the
 * job config the caller loaded and validated: job file and --set) and
 * returns the process exit code (docs/exit-codes.md), having printed why on
 * stderr. Their command lines are parsed in cli/. */

/* yoke coord: run the coordinator on its own until every rank left (0 if
 * all finished, else the job's failure code); SIGINT/SIGTERM end it. */
typedef struct yk_daemon_coord_opts {
  const yk_config *cfg;          /* coord.port (0: a free one), coord.heartbeat_timeout_ms, coord.secret_file, log.level */
  int64_t world;                 /* ranks to expect, in [1, YK_PROTO_MAX_WORLD] (required) */
  const char *bind;              /* listen address (NULL: 0.0.0.0) */
  const char *port_file;         /* write the port here once listening (NULL: none) */
  int64_t rendezvous_timeout_ms; /* abort with 5 if not every rank registered by then (default 300000; 0: never) */
} yk_daemon_coord_opts;
void yk_daemon_coord_opts_default(yk_daemon_coord_opts *o);
int yk_daemon_coord(const yk_daemon_coord_opts *o);

/* yoke launch: start the coordinator and np ranks of `yoke CMD...` on this
 * machine with the YOKE_* launch variables, prefix their output lines with
 * [rN], forward SIGINT/SIGTERM, and exit with the first failing rank's code
 * (128+signal if killed) after stopping the others; 0 if all succeed. */
typedef struct yk_daemon_launch_opts {
  const yk_config *cfg;          /* the ranks' config (coord.heartbeat_timeout_ms, coord.secret_file, log.level) */
  int64_t np;                    /* ranks, in [1, 4096] (required) */
  int64_t port;                  /* coordinator port (default 0: a free one) */
  const char *bind;              /* coordinator address (default 127.0.0.1) */
  int64_t grace_ms;              /* after a failure, let the others stop on their own this long (default 3000) */
  const char *wrap;              /* start each rank as WRAP... yoke ..., {rank} in WRAP replaced (default NULL) */
  char *const *cmd;              /* what each rank runs after `yoke`: SUBCOMMAND ARGS... (ncmd >= 1 words) */
  int ncmd;
  int64_t add;                   /* > 0: start this many `yoke train ... --join` ranks into the running elastic
                                    job `yoke launch` runs here (no coordinator of our own; np is ignored) */
  const char *job;               /* with add: which job (an id or its prefix; NULL: the only one) */
} yk_daemon_launch_opts;
void yk_daemon_launch_opts_default(yk_daemon_launch_opts *o);
int yk_daemon_launch(const yk_daemon_launch_opts *o);

/* yoke status: ask the coordinator (authenticated with the job secret) for
 * the job's state and print it (a table, or JSON), or send it a request.
 * 0, 1 (no answer, refused), 2 (no secret, bad address, several local jobs
 * and no --job). */
typedef struct yk_daemon_status_opts {
  const yk_config *cfg;          /* coord.host, coord.port, coord.secret_file */
  const char *coord;             /* HOST:PORT (NULL: YOKE_COORD, then coord.host:coord.port, then the one job
                                    `yoke launch` runs on this machine (docs/launch.md), then 127.0.0.1:coord.port) */
  const char *job;               /* the id (or a prefix) of a job `yoke launch` runs here (default NULL) */
  int json;                      /* JSON instead of a table */
  int64_t timeout_ms;            /* give up after this long (default 5000) */
  int action;                    /* 0: ask for the state; YK_REQ_CHECKPOINT or YK_REQ_STOP: ask every rank to;
                                    YK_REQ_DRAIN: rank drain_rank of an elastic job leaves at the next boundary */
  int64_t drain_rank;
} yk_daemon_status_opts;
void yk_daemon_status_opts_default(yk_daemon_status_opts *o);
int yk_daemon_status(const yk_daemon_status_opts *o);

/* yoke daemon-selftest: a synthetic workload for the control plane: register
 * (rank, world and coordinator from the launch environment, docs/launch.md),
 * check every address from WELCOME, one all-gather, `steps` steps of step_ms
 * reporting a falling loss, react to events like the step loop, BYE. */
typedef struct yk_daemon_selftest_opts {
  const yk_config *cfg;          /* coord.*, log.level */
  int64_t steps;                 /* default 20 */
  int64_t step_ms;               /* wall time of one step (default 50) */
  int64_t fail_at;               /* fail at this step (default -1: never) ... */
  int64_t fail_rank;             /* ... on this rank only (default -1: every rank) ... */
  int64_t fail_code;             /* ... with this exit code (default 1) */
} yk_daemon_selftest_opts;
void yk_daemon_selftest_opts_default(yk_daemon_selftest_opts *o);
int yk_daemon_selftest(const yk_daemon_selftest_opts *o);

#ifdef __cplusplus
}
#endif
#endif /* YK_DAEMON_H */
