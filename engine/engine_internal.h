/* engine_internal.h - private to engine/: the engine's state, the gradient
 * reduction (grads.c) and the checkpoints of the engine's state (ckpt.c).
 * Not a public header. */
#ifndef YK_ENGINE_INTERNAL_H
#define YK_ENGINE_INTERNAL_H

#include "yk_ckpt.h"
#include "yk_data.h"
#include "yk_engine.h"
#include "yk_model.h"
#include "yk_optimizer.h"
#include "yk_trace.h"

#include <pthread.h>

/* ------------------------------------------------------------------------ */
/* Gradient reduction over the data-parallel group (grads.c)                 */
/* ------------------------------------------------------------------------ */

/* The model reports each range of the gradient arena as it becomes final
 * during backward (last layer first, each range ending where the previous
 * began). While a reducing backward runs, those ranges are coalesced into
 * buckets of comm.bucket_kb and each full bucket's reduction starts at once
 * (all-reduce, or reduce-to-owners under ZeRO-1) while backward goes on
 * with the earlier layers; eng_grads_finish issues the tail and waits for
 * every bucket in issue order. In fp16/bf16 each bucket is first rounded to
 * 16 bits packed into the first half of its own fp32 memory and reduced in
 * 16 bits there (the gradients have one home, the fp32 arena); the update
 * widens it back (eng_grads_widen). Every rank issues the same buckets in the
 * same order: the ranges depend only on the model's shape. */
#define ENG_GRADS_MAX_REQ 64

typedef struct eng_grads {
  yk_comm *comm;        /* the data-parallel group; NULL on one rank */
  size_t bucket_bytes;
  size_t owned_total;   /* ZeRO-1: reduce each bucket to its owners of `owned_total` elements (0 = all-reduce) */
  int64_t timeout_ms;
  /* the reduction of the current step (between begin and finish) */
  int active;
  float *grads;
  yk_dtype dtype;       /* F32: reduce grads in place; F16/BF16: round each bucket into 16 bits packed at its start */
  size_t (*bk)[2];      /* F16/BF16: this step's buckets (offset, count), for eng_grads_widen */
  size_t nbk, capbk;
  yk_redop op;          /* AVG, or SUM of gradients the backward already divided by the ranks */
  int64_t local_bad;    /* first non-finite local 16-bit gradient (-1: none), to name the tensor */
  size_t pend_off, pend_count;
  yk_request *reqs[ENG_GRADS_MAX_REQ];
  int nreq;
  uint64_t bytes;       /* bytes reduced this step */
  yk_trace_track *tk;   /* train.trace: the engine's track (NULL: off) */
  struct { int64_t t; uint64_t id; int idx; size_t bytes; } tr[ENG_GRADS_MAX_REQ]; /* traced: each request's issue */
  int issued;           /* buckets issued this step */
  uint64_t nbuckets;    /* buckets issued so far: the trace's ids */
  int err;
  yk_diag errd;
} eng_grads;

void eng_grads_init(eng_grads *g, yk_comm *comm, size_t bucket_bytes, int64_t timeout_ms);
/* ZeRO-1: each rank needs only its even range of the `total` gradients. */
void eng_grads_set_owned(eng_grads *g, size_t total);
/* Start collecting final ranges for this step's reduction with op (YK_OP_AVG
 * or YK_OP_SUM). */
void eng_grads_begin(eng_grads *g, float *grads, uint16_t *grads16, yk_dtype dtype, yk_redop op);
/* The model's gradient-ready hook (ctx = g): no-op unless begun. */
void eng_grads_ready(void *ctx, size_t offset, size_t count);
/* Issue the tail, wait for every bucket; *wait_s = time spent waiting. */
int eng_grads_finish(eng_grads *g, double *wait_s, yk_diag *d);
/* Wait (bounded) for anything still in flight: before the communicator goes. */
void eng_grads_drain(eng_grads *g);
/* Drain, and free the bucket list. */
void eng_grads_free(eng_grads *g);
/* F16/BF16, after finish: arena elements [lo, lo + len) (this rank's slice)
 * widened from their bucket's packed 16-bit form back to fp32, times mul
 * (1/loss scale). Elements outside stay packed (unspecified as fp32). */
void eng_grads_widen(eng_grads *g, size_t lo, size_t len, float mul);
/* Sum n (<= 32) doubles over the group, as f32 (losses and counts). */
int eng_grads_sum_f64(eng_grads *g, double *v, int n, yk_diag *d);

/* ------------------------------------------------------------------------ */
/* ZeRO stages 2 and 3 (zero.c)                                             */
/* ------------------------------------------------------------------------ */

/* Gather slots (stage 3): two for layers, the embedding's, the head's. */
enum { ZS_EMBED = 2, ZS_HEAD = 3 };
typedef struct eng_zero_slot {
  float *buf;          /* the region's fp32 weights as the model reads them */
  uint16_t *buf16;     /* mixed precision: what the broadcasts fill, widened into buf */
  int region;          /* held region (-1 none; fixed for the embedding and head slots) */
  int state;           /* empty, gather in flight, ready */
  int lent;            /* the model holds it between get_params and put_params */
  yk_request **reqs;   /* one broadcast per rank whose slice meets the region */
  int nreq;
} eng_zero_slot;

/* Gradient windows: two for buckets, the embedding's (ZW_EMBED). */
enum { ZW_EMBED = 2 };
typedef struct eng_zero_win {
  float *base;          /* the window's fp32 buffer */
  uint16_t *base16;     /* its 16-bit twin (mixed precision) */
  yk_request *req;      /* reduction in flight */
  float *buf;           /* the bucket in flight: buf[0, count) = arena [first, first + count) */
  uint16_t *buf16;
  size_t first, count;
  int accumulate;       /* add the owned part into gshard (else copy) */
} eng_zero_win;

/* See zero.c. Owns `block` (every buffer below), freed by eng_zero_free. */
typedef struct eng_zero {
  int stage;                   /* 2 or 3; 0 = not used */
  yk_comm *comm;               /* the data-parallel group (borrowed) */
  int rank, world;
  size_t n, soff, slen;        /* arena size; this rank's slice */
  size_t *off, *len;           /* every rank's slice */
  int nreg;                    /* regions of the model: L + 2 */
  size_t *reg_off, *reg_cnt;
  yk_dtype dt16;               /* F32, or the 16-bit dtype of mixed precision */
  size_t bucket_bytes;
  int64_t timeout_ms;
  /* memory */
  void *block;
  yk_shmem shm;
  size_t bytes;                /* of block */
  float *params;               /* stage 2: the full fp32 arena the model computes with */
  float *pshard;               /* stage 3, fp32: this rank's weights (the master) */
  uint16_t *p16shard;          /* stage 3, mixed: this rank's 16-bit weights */
  float *gshard;               /* this rank's reduced gradients (fp32, summed over micro-batches) */
  eng_zero_slot slot[4];
  size_t slot_cap;
  int next_victim;
  eng_zero_win win[3];
  size_t wcap;
  /* the current backward */
  int cur;                     /* window of the open bucket */
  size_t hi, pend_off, pend_count;
  int accumulate;              /* add into gshard (later micro-batches) or copy (the first) */
  yk_redop op;
  int rc;
  /* this step */
  int64_t local_bad;           /* first non-finite local 16-bit gradient (arena index), -1 */
  uint64_t bytes_reduce, bytes_gather;
  double wait_s;
} eng_zero;

/* Allocate the stage's buffers (in shared memory registered with comm when
 * `share`). dt16 = YK_DT_F32 in fp32 runs. */
int eng_zero_init(eng_zero *z, int stage, yk_comm *comm, const yk_model_config *mc, int tp, int tp_rank, size_t n,
                  size_t bucket_bytes,
                  int64_t timeout_ms, yk_dtype dt16, int share, yk_diag *d);
/* train.recompute as the model's mode (plan.c; yk_engine_open and the plan
 * give the model the same one). */
yk_model_recompute eng_recompute_of(const yk_config *c);
/* optim.offload is disk (plan.c). */
int eng_offloaded(const yk_config *c);
/* The bytes eng_zero_init allocates for this rank (before yk_alloc's
 * rounding), without allocating: the engine's memory plan. touched = 1:
 * only what backward fills of the windows (shared memory is resident only
 * where written; private memory is zeroed whole by yk_alloc). */
int eng_zero_plan(int stage, int world, int rank, const yk_model_config *mc, int tp, int tp_rank, size_t n,
                  size_t bucket_bytes, yk_dtype dt16, int touched, size_t *bytes, yk_diag *d);
/* The callbacks to create the model with (ctx = z). */
void eng_zero_provider(eng_zero *z, yk_model_provider *p);
void eng_zero_step_start(eng_zero *z);
/* Before each backward: the first micro-batch of a step copies into gshard,
 * later ones add (accumulate = 1). */
void eng_zero_begin(eng_zero *z, int accumulate, yk_redop op);
/* Wait for every reduction and fold it into gshard; *wait_s = time waited on
 * the step's collectives so far. */
int eng_zero_finish(eng_zero *z, double *wait_s, yk_diag *d);
/* After the update (stage 3): gathered weights are stale. */
void eng_zero_params_changed(eng_zero *z);
/* Stage 3, collective: every region gathered in turn; copied to dst (the full
 * arena, may be NULL) and hashed into *fnv (FNV-1a, may be NULL). */
int eng_zero_gather_all(eng_zero *z, float *dst, uint64_t *fnv, yk_diag *d);
void eng_zero_drain(eng_zero *z);
void eng_zero_free(eng_zero *z);

/* ------------------------------------------------------------------------ */
/* Optimizer state on disk (offload.c)                                      */
/* ------------------------------------------------------------------------ */

/* optim.offload=disk: this rank's master (mixed precision), m and v in one
 * file, streamed through three staging sets by a reader and a writer thread
 * (see offload.c). */
typedef struct eng_offload {
  int on;
  char path[4096];
  int fd, direct;              /* direct: opened with O_DIRECT */
  int narr;                    /* arrays per element: 2 (m, v) or 3 (master, m, v) */
  size_t n, chunk, nchunks;    /* elements of the slice, per chunk, chunks */
  size_t set_bytes;            /* narr * chunk * 4: one chunk of every array */
  uint8_t *buf[3];             /* the staging sets (page-aligned) */
  int state[3];
  pthread_t reader, writer;
  pthread_mutex_t mu;
  pthread_cond_t cv;           /* on CLOCK_MONOTONIC */
  int threads, sync_made, quit, active, reading;
  size_t next_read, next_write;
  int err;
  char errmsg[4400];
  int64_t timeout_ms;
  uint64_t bytes_read, bytes_written;
} eng_offload;
/* The update of one chunk: elements [off, off + count) of the slice, whose
 * arrays (master, m, v or m, v: count floats each) are arr[]. */
typedef int (*eng_offload_fn)(void *ctx, size_t off, size_t count, float **arr, yk_diag *d);
/* Bytes of the file and of the staging for a slice of n elements. */
uint64_t eng_offload_file_bytes(size_t n, int narr, size_t chunk);
uint64_t eng_offload_staging_bytes(int narr, size_t chunk);
/* Elements per chunk from optim.offload_chunk_kb (whole 4 KiB pages). */
size_t eng_offload_chunk_of(const yk_config *c);
/* Check optim.offload_dir (a writable directory with room: statvfs), create
 * and reserve the file (posix_fallocate), start the threads. Every failure
 * is one sentence naming the directory, the bytes needed and what to do. */
int eng_offload_open(eng_offload *o, const char *dir, int rank, size_t n, int narr, size_t chunk, int64_t timeout_ms,
                     const yk_logger *log, yk_diag *d);
/* One pass over every chunk in order: read = 1 reads each chunk ahead (the
 * update), 0 fills fresh sets (writing the state the first time); fn runs
 * on the main thread; every chunk is written behind. Each wait is bounded by
 * timeout_ms. */
int eng_offload_pass(eng_offload *o, int read, eng_offload_fn fn, void *ctx, yk_diag *d);
/* Stop the threads, close and delete the file (the zeroed struct is closed too). */
/* Copy elements [off, off + count) of array a (0..narr-1: master, m, v; or
 * m, v) of the slice out of the file into dst, one chunk's part at a time
 * through staging set 0: between passes only (YK_EBUSY during one). The
 * checkpoint writer's fill (ckpt.c). */
int eng_offload_read(eng_offload *o, int a, size_t off, size_t count, float *dst, yk_diag *d);
/* p[0..n) := its dt16 rounding, widened again, through tmp (chunk 16-bit
 * values): what the model's arena holds under mixed-precision offload. */
void eng_offload_round(float *p, size_t n, uint16_t *tmp, size_t chunk, yk_dtype dt16);
void eng_offload_close(eng_offload *o);

/* ------------------------------------------------------------------------ */
/* Pipeline parallelism (pipe.c)                                            */
/* ------------------------------------------------------------------------ */

/* A stage's side of the pipeline. Every neighbouring pair of stages talks
 * over channels of their own: one two-rank communicator for the activations
 * from stage s to s + 1 (chan[s]) and one for the gradients from s to s - 1
 * (chan[P + s]), split from the pp group; a message is a broadcast from the
 * sender (rank 0 of the channel), so each channel carries its messages in
 * order under the communicator's deadline, and the checker's channel model
 * is what runs. A stage keeps one model instance per micro-batch alive at
 * once (the schedule's yk_engine_schedule_max_alive): slot 0 is the engine's
 * model, which owns the arenas; the others borrow them through a provider,
 * so every slot reads and accumulates into the same weights and gradients.
 * Each stage's model holds only what the stage trains (mstage): its blocks,
 * the embedding region on the first stage and the head region and the
 * embedding region (wte) on the last; its arenas are those regions back to
 * back, and the optimizer state follows them. */
typedef struct eng_pipe {
  int on;                     /* parallel.pipeline > 1 */
  yk_pipe_plan plan;
  yk_model_stage mstage;      /* this stage's blocks, as the model holds them */
  size_t whole_n;             /* floats of the unstaged arena (this tp rank's pieces), that assemble fills */
  int stage, P, K;            /* this stage, stages, chunks */
  int rank0, rank_stride;     /* the job rank of stage s: rank0 + s * rank_stride (Megatron order) */
  yk_comm *chan[2 * YK_PIPE_MAX_CHUNKS]; /* this stage's channels (NULL for the others') */
  yk_comm *embed;             /* first + last stage: the tied wte's gradient sum (NULL elsewhere) */
  yk_model **slot;            /* nslots instances; slot[0] borrowed from the engine */
  int nslots;
  int *slot_of;               /* (chunk * m + micro) -> slot holding its activations, -1 */
  size_t n;                   /* floats per message: yk_model_stream_numel */
  float *in, *gin, *out;      /* received activations, received gradient, what the last op produced */
  float *sendbuf[YK_PIPE_MAX_SENDS];
  yk_request *sendreq[YK_PIPE_MAX_SENDS];
  int next_send;
  size_t wte_off, wte_n;      /* the tied embedding in the arena (0, 0 on a stage without it) */
  size_t embed_n;             /* the embedding region (wte, wpe) at offset 0 of the arena, 0 if not held */
  eng_grads *grads;           /* the engine's data-parallel reduction (borrowed) */
  double wait_s;              /* time blocked in receives and send buffers this step */
} eng_pipe;

struct yk_engine;
/* The blocks stage `stage` of plan p runs, as a model stage. */
void eng_pipe_stage(const yk_pipe_plan *p, int stage, yk_model_stage *out);
/* After the model and schedule exist: channels, slots, buffers. */
int eng_pipe_open(struct yk_engine *e, yk_diag *d);
void eng_pipe_close(eng_pipe *p);
int eng_pipe_forward(eng_pipe *p, const yk_sched_op *op, const int32_t *inputs, const int32_t *targets, float *loss,
                     yk_diag *d);
int eng_pipe_backward(eng_pipe *p, const yk_sched_op *op, float scale, yk_diag *d);
/* SEND_ACT / SEND_GRAD (non-blocking) and RECV_ACT / RECV_GRAD (blocking). */
int eng_pipe_send(eng_pipe *p, const yk_sched_op *op, yk_diag *d);
int eng_pipe_recv(eng_pipe *p, const yk_sched_op *op, yk_diag *d);
/* The gradient-ready hook of every slot (ctx = the eng_pipe): hands final
 * ranges to the data-parallel reduction while the stage's last backward
 * runs, except the embedding region, whose wte waits for eng_pipe_finish. */
void eng_pipe_grads_ready(void *ctx, size_t offset, size_t count);
/* Wait for this stage's sends; then sum wte's gradient between the first and
 * the last stage (grads: the model's gradient arena) and hand the embedding
 * region to the reduction. */
int eng_pipe_finish(eng_pipe *p, float *grads, yk_diag *d);
/* Every stage's blocks in one whole arena dst of whole_n floats (collective
 * over the pp group). */
int eng_pipe_assemble(struct yk_engine *e, float *dst, yk_diag *d);
/* Forward of one window through every stage (collective over the pp group);
 * *loss is the window's loss on the last stage, 0 elsewhere. */
int eng_pipe_eval(eng_pipe *p, const int32_t *inputs, const int32_t *targets, float *loss, yk_diag *d);
/* The loss of the last stage, broadcast to every stage. */
int eng_pipe_share_loss(eng_pipe *p, yk_comm *pp, double *loss, yk_diag *d);

/* ------------------------------------------------------------------------ */
/* Checkpoints of the engine's state (ckpt.c)                                */
/* ------------------------------------------------------------------------ */

/* Everything a checkpoint holds, by pointer (borrowed from the engine).
 * Layouts are the model's layer-major arena. */
typedef struct eng_ckpt_view {
  float *model_params;           /* the model's fp32 arena, nparams (every rank computes with all of it); NULL
                                  * under ZeRO-3, where params16 too is the slice [soff, soff + slen) */
  float *master;                 /* fp32 master weights [soff, soff + slen) (in fp32 runs: model_params + soff) */
  float *m, *v;                  /* AdamW moments [soff, soff + slen) */
  size_t nparams, soff, slen;    /* this rank's slice: its ZeRO shard (the even range of its data-parallel
                                  * group), or everything; under tensor parallelism of its TP rank's arena */
  void *params16;                /* 16-bit weights (fp16/bf16 runs), nparams, or NULL */
  yk_dtype dtype16;
  const yk_tensor_desc *tensors;
  int ntensors;
  const yk_model_config *mcfg;
  const yk_model_stage *stage;   /* a pipeline stage's blocks (its arenas hold its regions only), else NULL */
  yk_data_loader *loader;        /* its position is saved */
  yk_loss_scaler *scaler;        /* fp16 or NULL */
  int threads;                   /* compression threads */
  eng_offload *off;              /* optim.offload=disk: master (mixed precision), m, v are in its file (master,
                                  * m, v above NULL; saves stream them out, resume streams them in), else NULL */
  uint16_t *off16;               /* its 16-bit chunk (mixed precision), for rounding the arena at resume */
} eng_ckpt_view;

typedef struct eng_ckpt {
  const yk_config *cfg;
  const yk_logger *log;
  yk_comm *agree[3];             /* the layout's groups (dp, tp, pp; NULL: none): a MAX over each in turn
                                  * is a MAX over every rank, so all of them agree on saves and stops */
  yk_layout layout;              /* arenas are named after its tp rank and saved by its dp group */
  int rank, world;               /* in the whole job: the checkpoint's writer rank and shard count */
  eng_ckpt_view view;
  int enabled;                   /* ckpt.dir is set */
  yk_ckpt_opts opts;
  yk_ckpt_state *st;
  yk_ckpt_writer *w;
  int pending;                   /* shards of pending_step queued, not committed yet */
  int64_t pending_step;
  double pending_t0;
  int64_t last_saved;            /* newest step saved by this run (-1 none) */
  int deferred;                  /* the pending save's copy runs in the writer thread */
  double deferred_stall_s;
  int stop_requested;            /* exit code to stop with at the next boundary (0 none) */
  uint32_t reform_seen;          /* elastic: the newest epoch the control plane announced to this rank */
  uint32_t reform_agreed;        /* the newest any rank had seen, agreed at the last boundary */
  int saves;
  double stall_s_total, stall_s_max, write_s_total;
  yk_trace_track *tk;            /* train.trace: the engine's track (NULL: off) */
  struct eng_ckpt_fill {         /* optim.offload=disk: what each file-backed arena's fill reads */
    eng_offload *off;
    int arr;
    size_t soff;
  } fill[3];
} eng_ckpt;

int eng_ckpt_open(eng_ckpt *ck, const yk_config *cfg, const yk_logger *log, const yk_engine_comms *comms,
                  const yk_layout *layout, const eng_ckpt_view *view, yk_diag *d);
int eng_ckpt_resume(eng_ckpt *ck, int64_t *start_step, yk_diag *d);
void eng_ckpt_request_stop(eng_ckpt *ck, int code);
/* Right before the update modifies the saved arenas: a deferred snapshot
 * copy must be done. */
int eng_ckpt_before_update(eng_ckpt *ck, yk_diag *d);
int eng_ckpt_boundary(eng_ckpt *ck, int64_t step_done, int *stop, int *exit_code, yk_diag *d);
int eng_ckpt_finish(eng_ckpt *ck, int64_t step_done, yk_diag *d);
void eng_ckpt_close(eng_ckpt *ck);
/* The piece of a whole arena that tensor-parallel rank tp_rank of tp on
 * pipeline stage `stage` (NULL: no pipeline) holds, elements [lo, lo + len)
 * of it into dst as dt (16-bit: rounded, exact for values that came from
 * 16-bit arenas). tpw: scratch of yk_model_tp_num_params floats; mine: of
 * the stage's arena (yk_model_stage_table). The one cut of resharding: the
 * resume at another layout and `yoke ckpt convert --layout` both use it. */
int eng_ckpt_piece(const yk_model_config *cfg, int tp, int tp_rank, const yk_model_stage *stage, float *whole,
                   float *tpw, float *mine, void *dst, yk_dtype dt, size_t lo, size_t len, yk_diag *d);
/* The config as YAML text (malloc'd, free()), or NULL when out of memory. */
char *eng_ckpt_config_yaml(const yk_config *c);

/* ------------------------------------------------------------------------ */
/* The engine                                                               */
/* ------------------------------------------------------------------------ */

struct yk_engine {
  yk_config cfg;
  const yk_logger *log;
  yk_layout layout;
  yk_engine_comms comms;
  int rank, world;            /* in the data-parallel group */
  int tp, tp_rank;            /* the tensor-parallel group's degree and this rank's place (1, 0 without) */
  yk_device *dev;

  yk_model *model;
  yk_model_config mcfg;
  const yk_tensor_desc *tensors;
  int ntensors;
  size_t nparams;
  int B, T, accum;

  float *m, *v;               /* AdamW moments, fp32 (NULL when offloaded) */
  eng_offload off;            /* optim.offload=disk: master (mixed), m, v in a file */
  uint16_t *off16;            /* offloaded mixed precision: one chunk of the updated 16-bit weights */
  yk_mixed mp;                /* master weights, 16-bit copies, loss scaler */
  /* ZeRO-1 (optim.shard, dp > 1): this rank runs AdamW on [soff, soff + slen)
   * only and the ranks all-gather the updated weights; otherwise the slice is
   * the whole arena. */
  int shard;
  size_t soff, slen;
  /* ZeRO-2/3 (optim.zero, dp > 1): the model is created with zero's provider */
  int zstage;                 /* the stage in effect: 0 with one rank */
  eng_zero zero;
  float *init_arena;          /* stage 3: the whole initial weights, until build_optimizer took the slice */
  yk_adamw adamw;
  yk_lr_schedule sched;

  yk_data_loader *train_ld, *val_ld;
  int32_t *inputs, *targets;  /* (B,T) */

  yk_engine_plan plan;        /* the memory plan checked before anything was allocated */
  yk_schedule schedule;       /* one step's operations */
  eng_pipe pipe;              /* pipeline stages (pipe.on = 0 without) */
  eng_grads grads;
  eng_ckpt ck;
  int64_t start_step;
  int64_t global_micro;       /* micro-batches per optimizer step over all data-parallel ranks (elastic) */
  int64_t steps_done;         /* optimizer steps applied to this rank's state (-1: a joiner before its sync) */
  yk_trace *trace;            /* train.trace (trace.c); NULL: off */
  yk_trace_track *tk;         /* the step loop's track */
  yk_trace_track *tkl;        /* the same at train.trace_detail=layer, else NULL: layers, tensor-parallel calls */
  int64_t region_t0;          /* start of the model region in progress (its spans do not nest) */
  yk_trace_track *tkc[2];     /* the comm threads' tracks (dp, tp) */
  uint64_t trace_bytes;       /* gradient bytes reduced, for the counter */
  uint64_t trace_sent;        /* bytes handed to every collective and pipeline send, for the counter */
  int64_t trace_step;         /* the step being traced: pipeline flow ids */
  /* train.trace_detail=kernel: the model computes on a traced device that
   * reports each kernel call (kernel_span in trace.c) */
  yk_device *dev_traced;      /* NULL otherwise; e->dev then points to it */
  yk_trace_track *tkk;        /* the step loop's track at kernel detail, else NULL */
  int region_layer;           /* the model region in progress as a layer (-1 embedding, L head), INT_MIN: none */
  yk_trace_name knames[2][YK_DEVICE_KERNELS]; /* a kernel's span outside / inside a model region */
  uint64_t tp_bytes;          /* this step's tensor-parallel collectives (tp_coll), whole buffers */
  int64_t test_delay_ms;      /* YK_TEST_DELAY_RANK: sleep this long in every step (tests only) */
};

/* ------------------------------------------------------------------------ */
/* The timeline (trace.c)                                                   */
/* ------------------------------------------------------------------------ */

/* Open train.trace (nothing when unset) and align this rank's clock to rank
 * 0's over the data-parallel group (every rank calls it). */
int eng_trace_open(yk_engine *e, yk_diag *d);
void eng_trace_close(yk_engine *e);
/* The step's window and its start; then the zero_grad span (and the test
 * delay); each op's span; the step span, counters and a drain if due. */
int64_t eng_trace_step_begin(yk_engine *e, int64_t step);
void eng_trace_prologue(yk_engine *e, int64_t t0);
void eng_trace_op(yk_engine *e, const yk_sched_op *op, int64_t t0);
void eng_trace_step_end(yk_engine *e, int64_t step, int64_t t0, const yk_step_stats *s);
/* One tensor-parallel collective (yk_model_tp_op) of `bytes`, begun at t0 on e->tkl. */
void eng_trace_tp(yk_engine *e, int op, size_t bytes, int64_t t0);
/* train.trace_detail=kernel: put a traced device in front of e->dev before
 * the model is created (freed by yk_engine_close, after the model). */
int eng_trace_device(yk_engine *e, yk_diag *d);

#endif
