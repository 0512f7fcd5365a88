/* yk_common.h - the one public header of yoke's `common` module.
 *
 * What lives here: the project-wide error codes (one enum, yk_strerror), a
 * diagnostic buffer that carries a human-readable reason next to a code,
 * leveled logging with rank and timestamp, monotonic time and deadlines, the
 * job configuration (YAML file + command-line overrides, table-driven), and a
 * few small utilities (aligned allocation, whole-file reads), the run-time
 * choice of vector-kernel variant and the fp16/bf16 conversion kernels.
 *
 * Rules every module follows (docs/architecture.md):
 *   - functions return int: 0 on success, a negative YK_E* code on failure;
 *   - a function that can fail for a reason the user must see takes a
 *     `yk_diag *` (may be NULL) and writes one sentence naming the bad value
 *     and what to do about it;
 *   - nobody calls exit() except main();
 *   - no global mutable state: loggers, configs and contexts are passed in.
 */
#ifndef YK_COMMON_H
#define YK_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/* X-macro: name, value, message. Values are negative (libuv style) so that an
 * int return of >= 0 can also carry a count. */
#define YK_ERRNO_MAP(XX)                                                       \
  XX(EINVAL, -1, "invalid argument")                                           \
  XX(ENOMEM, -2, "out of memory")                                              \
  XX(EIO, -3, "input/output error")                                            \
  XX(ECONFIG, -4, "bad configuration")                                         \
  XX(EFORMAT, -5, "bad file format")                                           \
  XX(ECORRUPT, -6, "data corrupt (checksum mismatch)")                         \
  XX(ETIMEDOUT, -7, "deadline exceeded")                                       \
  XX(EPEERDEAD, -8, "peer rank died or became unreachable")                    \
  XX(EMISMATCH, -9, "ranks called mismatched collectives")                     \
  XX(EABORTED, -10, "communicator aborted")                                    \
  XX(ETRANSPORT, -11, "transport error")                                       \
  XX(EPROTO, -12, "malformed or unexpected protocol message")                  \
  XX(EAUTH, -13, "authentication failed")                                      \
  XX(ENOTFOUND, -14, "not found")                                              \
  XX(EUNSUPPORTED, -15, "not supported")                                       \
  XX(ENONFINITE, -16, "non-finite value (NaN or Inf)")                         \
  XX(EOVERFLOW, -17, "fp16 gradient overflow at the minimum loss scale")       \
  XX(EINTR, -18, "interrupted by a signal")                                    \
  XX(EBUSY, -19, "resource busy")                                              \
  XX(EEXIST, -20, "already exists")                                            \
  XX(EUSAGE, -21, "bad command-line usage")                                    \
  XX(ESYS, -22, "system call failed")                                          \
  XX(ECLOSED, -23, "connection closed")                                        \
  XX(ETERM, -24, "terminated by SIGTERM")

typedef enum {
  YK_OK = 0,
#define YK_ERR_ENUM_(name, val, msg) YK_##name = (val),
  YK_ERRNO_MAP(YK_ERR_ENUM_)
#undef YK_ERR_ENUM_
  YK_ERR_LAST_ = -25
} yk_err;

/* Static string for a code; never NULL ("unknown error" for unknown codes). */
const char *yk_strerror(int code);
/* Symbolic name, e.g. "YK_ETIMEDOUT". */
const char *yk_err_name(int code);

/* A diagnostic: one sentence for the user, filled by the function that found
 * the problem. Callers own it (usually on the stack). */
#define YK_DIAG_MAX 1024
typedef struct yk_diag {
  int code;
  char msg[YK_DIAG_MAX];
} yk_diag;

/* Format a message into d (if d is non-NULL) and return code. Typical use:
 *   return yk_errorf(d, YK_EFORMAT, "%s: magic %d, expected %d", path, m, M);
 * If d already holds a message it is replaced. */
int yk_errorf(yk_diag *d, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Like yk_errorf but appends ": <strerror(errno)>" for the current errno. */
int yk_errorf_sys(yk_diag *d, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The message in d, or yk_strerror(code) if d is empty. */
const char *yk_diag_msg(const yk_diag *d, int code);
void yk_diag_clear(yk_diag *d);

/* ------------------------------------------------------------------------ */
/* Logging                                                                  */
/* ------------------------------------------------------------------------ */

typedef enum {
  YK_LOG_ERROR = 0,
  YK_LOG_WARN = 1,
  YK_LOG_INFO = 2,
  YK_LOG_DEBUG = 3,
} yk_log_level;

/* A logger is a small value owned by whoever creates it (the daemon, a test).
 * Lines look like:  2026-11-24T03:51:02.123Z r0 INFO  message
 * rank < 0 omits the rank field. out == NULL means stderr. A logger is safe to
 * use from several threads (each line is written with one fwrite). */
typedef struct yk_logger {
  int rank;
  int level;
  FILE *out;
  FILE *info_out; /* INFO and DEBUG lines go here instead when set (a launcher's stdout); init sets NULL */
  const char *lead; /* written before a line that goes to a terminal (a launcher's "\r\033[K" erases its progress
                     * bar first); init sets NULL */
} yk_logger;

void yk_logger_init(yk_logger *lg, int rank, int level, FILE *out);
/* lg == NULL logs to stderr at INFO without a rank. */
void yk_log(const yk_logger *lg, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void yk_vlog(const yk_logger *lg, int level, const char *fmt, va_list ap);
/* "error", "warn", "info", "debug" -> level; -1 if unknown. */
int yk_log_level_parse(const char *s);
/* log.ranks: "all", one rank or a comma-separated list ("0,3"). Sets *shown
 * to whether `rank` prints its INFO and DEBUG lines (warnings and errors
 * come from every rank). YK_ECONFIG with a sentence in d for a bad spec. */
int yk_log_ranks_match(const char *spec, int rank, int *shown, yk_diag *d);

#define YK_ERROR(lg, ...) yk_log((lg), YK_LOG_ERROR, __VA_ARGS__)
#define YK_WARN(lg, ...) yk_log((lg), YK_LOG_WARN, __VA_ARGS__)
#define YK_INFO(lg, ...) yk_log((lg), YK_LOG_INFO, __VA_ARGS__)
#define YK_DEBUG(lg, ...) yk_log((lg), YK_LOG_DEBUG, __VA_ARGS__)

/* ------------------------------------------------------------------------ */
/* Time                                                                     */
/* ------------------------------------------------------------------------ */

/* Monotonic clock in nanoseconds / seconds. */
uint64_t yk_now_ns(void);
double yk_now_s(void);
/* Wall clock in milliseconds since the epoch (for logs and manifests). */
uint64_t yk_wall_ms(void);
/* A deadline is an absolute monotonic time in ns; 0 means "none". */
static inline uint64_t yk_deadline_in_ms(uint64_t ms) { return ms ? yk_now_ns() + ms * 1000000ull : 0; }
static inline int yk_deadline_passed(uint64_t deadline_ns) { return deadline_ns && yk_now_ns() >= deadline_ns; }
void yk_sleep_ms(unsigned ms);

/* ------------------------------------------------------------------------ */
/* Memory and files                                                         */
/* ------------------------------------------------------------------------ */

/* 64-byte aligned, zeroed allocation (cache lines and AVX-512 loads).
 * Returns NULL on failure or when n == 0 overflows. Free with yk_free. */
void *yk_alloc(size_t n);
void yk_free(void *p);
/* The resident bytes yk_alloc(n) occupies once touched (it touches all of
 * it): 64-byte rounding, and whole 2 MiB pages for the large ones it puts
 * on transparent huge pages. Memory plans count with it. */
size_t yk_alloc_bytes(size_t n);
/* This host's memory (/proc/meminfo MemTotal, MemAvailable) and this
 * process's resident set now and at its peak (/proc/self/status VmRSS,
 * VmHWM), in bytes; 0 where the system does not say. */
void yk_host_memory(uint64_t *total, uint64_t *available);
void yk_proc_memory(uint64_t *rss, uint64_t *peak);

/* Memory that other processes of this host can map (an anonymous memfd,
 * mapped shared): collectives read a registered buffer of a peer on the
 * same host directly instead of copying it through the kernel. Zeroed.
 * The caller owns it and frees it with yk_shmem_free (which closes fd). */
typedef struct yk_shmem {
  void *ptr;
  size_t bytes; /* as mapped: the request rounded up to a page */
  int fd;       /* -1 when not allocated */
} yk_shmem;
int yk_shmem_alloc(size_t bytes, const char *what, yk_shmem *out, yk_diag *d);
void yk_shmem_free(yk_shmem *m);

/* Read a whole file into a new buffer (NUL-terminated for convenience; the
 * terminator is not counted in *len). Caller frees with free(). */
int yk_file_read(const char *path, char **buf, size_t *len, yk_diag *d);
/* Write a file atomically: path.tmp, fsync, rename, fsync the directory. */
int yk_file_write_atomic(const char *path, const void *buf, size_t len, yk_diag *d);
/* mkdir -p. */
int yk_mkdirs(const char *path, yk_diag *d);

/* ------------------------------------------------------------------------ */
/* Numbers                                                                  */
/* ------------------------------------------------------------------------ */

/* IEEE half and bfloat16, round-to-nearest-even: the scalar references
 * (common/cast.c). The array casts below give the same bits for every input.
 * fp32 -> fp16 overflows to Inf from 65520 up and rounds subnormals to even;
 * a NaN stays a NaN with the quiet bit set and the top bits of its payload
 * (what F16C does), in both directions for fp16 and towards bf16. */
uint16_t yk_f32_to_f16(float f);
float yk_f16_to_f32(uint16_t h);
uint16_t yk_f32_to_bf16(float f);
float yk_bf16_to_f32(uint16_t h);

/* Deterministic RNG (xoshiro256**), state is the caller's. Serialisable as 4
 * uint64 words for checkpoints. */
typedef struct yk_rng {
  uint64_t s[4];
} yk_rng;
void yk_rng_seed(yk_rng *r, uint64_t seed);
uint64_t yk_rng_u64(yk_rng *r);
/* Uniform in [0, 1). */
float yk_rng_uniform(yk_rng *r);
/* Standard normal (Box-Muller). */
float yk_rng_normal(yk_rng *r);

/* Strict number parsing: whole string must be consumed. */
int yk_parse_i64(const char *s, int64_t *out);
int yk_parse_f64(const char *s, double *out);
/* Parse "64", "64k", "4MiB", "1G" into bytes. */
int yk_parse_bytes(const char *s, uint64_t *out);

/* Levenshtein distance, for "did you mean" suggestions. */
int yk_edit_distance(const char *a, const char *b);

/* ------------------------------------------------------------------------ */
/* Instruction sets                                                         */
/* ------------------------------------------------------------------------ */

/* Vector-kernel variants, chosen at run time by yk_isa_resolve for every
 * module (common's casts, device/, optimizer/, collectives/, ckpt/). No
 * AVX-512 variant is shipped: no machine we test on has it. */
typedef enum {
  YK_ISA_AUTO = -1,
  YK_ISA_PORTABLE = 0, /* scalar C, any CPU */
  YK_ISA_AVX2 = 1,     /* AVX2 + FMA + F16C */
  YK_ISA_COUNT_
} yk_isa;
/* "portable" / "avx2" / "auto". */
const char *yk_isa_name(yk_isa isa);
/* Parse "portable" | "avx2" | "auto" (case-insensitive). */
int yk_isa_parse(const char *s, yk_isa *out);
/* 1 if this CPU can run the variant (portable always). */
int yk_isa_supported(yk_isa isa);
/* The variant to run when `want` is asked for. AUTO: $YK_ISA if set
 * (portable | avx2 | auto, any case), else the best this CPU runs; a named
 * variant is taken as asked ($YK_ISA does not override it). $YK_ISA is read
 * on the first AUTO request and kept for the life of the process (a launch
 * setting: kernels resolve on every call, so after that it costs a load, as
 * the CPU check does after the first cpuid). *out is always a
 * variant this CPU runs: on an error it is the fallback (below), so a kernel
 * with no error path ignores the code and runs *out, while a caller that can
 * report (the device) returns it. Returns 0, or with one sentence in d:
 *   YK_ECONFIG       $YK_ISA is not a known name  (*out = what AUTO picks),
 *   YK_EUNSUPPORTED  this CPU cannot run it       (*out = PORTABLE),
 *   YK_EINVAL        want is not a yk_isa         (*out = PORTABLE). */
int yk_isa_resolve(yk_isa want, yk_isa *out, yk_diag *d);

/* ------------------------------------------------------------------------ */
/* Tensor descriptors                                                       */
/* ------------------------------------------------------------------------ */

/* Element types shared by model, collectives, optimizer and ckpt. */
typedef enum {
  YK_DT_F32 = 0,
  YK_DT_F16 = 1,
  YK_DT_BF16 = 2,
  YK_DT_I32 = 3,
  YK_DT_I64 = 4,
  YK_DT_U16 = 5,
  YK_DT_U8 = 6,
  YK_DT_COUNT_
} yk_dtype;
size_t yk_dtype_size(yk_dtype t);
const char *yk_dtype_name(yk_dtype t);   /* "f32", "f16", "bf16", ... */
int yk_dtype_parse(const char *s, yk_dtype *out);

/* One named tensor inside a flat arena: the arena is the unit that is
 * all-reduced, sharded and checkpointed; a tensor is offset arithmetic on it.
 * Offsets and counts are in elements. decay marks tensors that get AdamW
 * weight decay (2-D weights and embeddings; never biases or LayerNorm). */
#define YK_TENSOR_MAX_DIMS 4
/* How a tensor is split across a tensor-parallel group (Megatron's names;
 * weights are (out, in) row-major). The model's tensor table says it for
 * every tensor; partition/ (yk_partition_split_*) does the arithmetic, so
 * the model, the optimizer and checkpoints read one table.
 *   REPLICATED  every rank holds all of it (LayerNorm, wpe, row-parallel biases)
 *   COLUMN      column-parallel: dim 0 (output features) cut into tp equal
 *               pieces, separately inside each of `split_parts` equal blocks
 *               (3 for the fused QKV: each rank gets its heads' q, k and v)
 *   ROW         row-parallel: dim 1 (input features) cut into tp equal pieces
 *   VOCAB       the embedding's rows cut by yk_partition_even_range (uneven
 *               pieces allowed, so any vocabulary size works) */
typedef enum { YK_SPLIT_REPLICATED = 0, YK_SPLIT_COLUMN = 1, YK_SPLIT_ROW = 2, YK_SPLIT_VOCAB = 3 } yk_split_kind;
typedef struct yk_tensor_desc {
  char name[48];
  size_t offset;
  size_t numel;
  int ndim;
  int64_t shape[YK_TENSOR_MAX_DIMS];
  int decay;
  int split;       /* yk_split_kind */
  int split_parts; /* COLUMN: blocks split separately (0 or 1 = one) */
} yk_tensor_desc;

/* ------------------------------------------------------------------------ */
/* fp16 / bf16 array casts                                                  */
/* ------------------------------------------------------------------------ */

/* The one set of 16-bit float conversion kernels (device ops, optimizer,
 * collectives and the daemon use these). Each runs the variant `isa`
 * resolves to (yk_isa_resolve: AUTO follows $YK_ISA; a variant the CPU
 * cannot run falls back to portable), and every variant gives the bits of
 * the scalar references above for every input, NaNs included. dt16 is
 * YK_DT_F16 or YK_DT_BF16; another type returns YK_EINVAL and writes
 * nothing. Arrays hold n elements and do not overlap. Single-threaded. */

/* out (n) dt16 = in (n) f32 rounded to nearest even. */
int yk_cast_from_f32(void *out, yk_dtype dt16, const float *in, size_t n, yk_isa isa);
/* out (n) f32 = in (n) dt16 widened (exact), times mul when mul != 1 (one
 * fp32 multiply: unscaling gradients by 1/loss_scale on the way). */
int yk_cast_to_f32(float *out, const void *in, yk_dtype dt16, size_t n, float mul, yk_isa isa);
/* out (n) dt16 = x (n) f32 rounded, and x = the fp32 value of out: the 16-bit
 * round trip in one pass, for activations stored in 16 bits that the
 * backward pass must see exactly as stored. */
int yk_cast_round(void *out, yk_dtype dt16, float *x, size_t n, yk_isa isa);

/* ------------------------------------------------------------------------ */
/* Job configuration                                                        */
/* ------------------------------------------------------------------------ */

typedef enum { YK_PREC_FP32 = 0, YK_PREC_FP16 = 1, YK_PREC_BF16 = 2 } yk_precision;

/* The whole job config. Every field has an entry in the key table
 * (common/config.c) with type, default, range and a one-line doc; that table
 * is the single source of truth and generates cluster-configs/reference.yaml.
 * Strings are fixed-size so a config is a plain value (copyable, no frees). */
#define YK_CFG_STR 256
typedef struct yk_config {
  struct {
    char name[64];         /* named preset: tiny, small, d12, d24, d36, d48 */
    int64_t layers;        /* 0 = from preset */
    int64_t channels;
    int64_t heads;
    int64_t max_seq_len;
    int64_t vocab_size;
  } model;
  struct {
    char train[YK_CFG_STR];    /* token shard file or glob */
    char val[YK_CFG_STR];
  } data;
  struct {
    int64_t micro_batch;     /* B per rank */
    int64_t seq_len;         /* T */
    int64_t grad_accum;
    int64_t steps;
    int64_t stop_after;      /* stop (checkpoint, exit 75) after this step; 0 = off */
    int64_t memory_limit;    /* bytes a rank's planned peak may reach; 0 = MemAvailable / ranks on the host */
    int64_t seed;
    int64_t val_every;
    int64_t val_batches;
    int64_t log_every;
    int64_t threads;         /* 0 = all cores */
    char precision[8];       /* fp32 | fp16 | bf16 */
    char recompute[12];      /* none | selective | full: activations recomputed in backward (docs/memory.md) */
    char init_weights[YK_CFG_STR];
    char save_weights[YK_CFG_STR];
    char log_file[YK_CFG_STR]; /* rank 0 also writes the JSON step and validation lines here */
    char trace[YK_CFG_STR];  /* Chrome trace per rank (docs/tracing.md); empty = off */
    char trace_steps[32];    /* "A-B": the steps traced, as the log numbers them; empty = all */
    char trace_detail[8];    /* step | layer: also each layer's forward/backward and tensor-parallel collectives | kernel: also each kernel */
    double straggler_warn;   /* WARN when a rank is this share slower than the median, for several steps */
  } train;
  struct {
    double lr;
    double min_lr;
    int64_t warmup_steps;
    char schedule[16];       /* constant | cosine */
    double weight_decay;
    double beta1;
    double beta2;
    double eps;
    double grad_clip;
    int64_t zero;            /* ZeRO stage 0..3, -1 = from shard; read it with yk_config_zero_stage */
    char shard[8];           /* auto | true (stage 1) | false (stage 0): the older spelling of zero */
    char offload[8];         /* none | disk: master weights and AdamW moments in files (docs/memory.md) */
    char offload_dir[YK_CFG_STR]; /* where the offload files go */
    int64_t offload_chunk_kb;     /* KiB of each array per streamed chunk */
  } optim;
  struct {
    int64_t tensor;   /* TP degree */
    int64_t pipeline; /* PP degree: stages */
    int64_t sequence; /* bool: sequence parallelism inside the TP group */
    int64_t virtual_stages; /* model chunks per pipeline stage (interleaved schedule) */
    char schedule[16];      /* auto | gpipe | 1f1b | interleaved */
    char stage_layers[256]; /* "3,1": blocks per chunk; empty = balanced by cost */
  } parallel;
  struct {
    double init;
    double min;
    double growth_factor;
    double backoff;
    int64_t growth_interval;
    int64_t hysteresis;
    char on_min[16];         /* stop | continue */
  } loss_scale;
  struct {
    char transport[16];      /* auto | libfabric | mpi | inproc */
    char provider[64];       /* libfabric provider: shm, tcp;ofi_rxm, verbs, efa */
    char algo[16];           /* auto | ring | tree | shm | hier */
    int64_t timeout_ms;
    int64_t bucket_kb;
    int64_t fusion_kb;
  } comm;
  struct {
    char dir[YK_CFG_STR];
    int64_t every;
    int64_t keep;
    int64_t level;
    int64_t async;
    char resume[YK_CFG_STR]; /* "" | latest | PATH */
    int64_t fallback;        /* resume: use the previous checkpoint when the newest is damaged */
  } ckpt;
  struct {
    char host[128];
    int64_t port;
    int64_t heartbeat_ms;
    int64_t heartbeat_timeout_ms;
    char secret_file[YK_CFG_STR];
    int64_t metrics_port;
  } coord;
  struct {
    char level[16];
    char ranks[YK_CFG_STR];  /* ranks whose INFO lines are printed: 0 | all | a list "0,3" */
  } log;
} yk_config;

/* Fill with defaults from the key table. */
void yk_config_defaults(yk_config *c);
/* Load a YAML file on top of what c holds. Errors name the file, line, key
 * and the allowed values. */
int yk_config_load_file(yk_config *c, const char *path, yk_diag *d);
/* Same, from a string (origin is used in messages). */
int yk_config_load_string(yk_config *c, const char *yaml, const char *origin, yk_diag *d);
/* Apply one "section.key=value" override (from --set). */
int yk_config_set(yk_config *c, const char *assignment, yk_diag *d);
/* Cross-field checks (e.g. heads divides channels). */
int yk_config_validate(const yk_config *c, yk_diag *d);
/* Write the commented reference of every key (cluster-configs/reference.yaml). */
void yk_config_write_reference(FILE *out);
/* Write c as YAML (for manifests and `yoke config show`). */
void yk_config_write_yaml(const yk_config *c, FILE *out);
/* Precision enum from c->train.precision. */
yk_precision yk_config_precision(const yk_config *c);
/* The ZeRO stage of optim.zero / optim.shard (0..3; 1 when neither is set).
 * yk_config_validate rejects the two disagreeing. */
int yk_config_zero_stage(const yk_config *c);
/* Number of keys in the table and the i-th key's dotted name (for tests). */
/* train.trace_steps as 0-based step indices [*first, *last] (*last = -1: no
 * end). YK_ECONFIG naming the value when it is not "", "A-B" or "A-" with
 * 1 <= A <= B. */
int yk_config_trace_steps(const yk_config *c, int64_t *first, int64_t *last, yk_diag *d);
int yk_config_key_count(void);
const char *yk_config_key_name(int i);

/* ------------------------------------------------------------------------ */
/* What one training step reports                                           */
/* ------------------------------------------------------------------------ */

/* The one stats struct of a step: the engine's yk_engine_step fills it; the
 * log line, the JSON line, heartbeats, /metrics and `yoke status` all come
 * from it (yk_step_stats_text/json). */
typedef struct yk_step_stats {
  int64_t step;             /* optimizer steps done after this one (1-based) */
  double loss;              /* mean training loss over every rank's micro-batches */
  double lr;
  double grad_norm;         /* global L2 norm before clipping; NaN when skipped */
  int skipped;              /* fp16 overflow: the update was skipped */
  double step_ms;           /* wall time of the step */
  double fwd_ms, bwd_ms;    /* forward and backward compute of all micro-batches */
  double comm_wait_ms;      /* communication not hidden by backward (+ the gather) */
  double opt_ms;            /* norm, AdamW and casts */
  double gather_ms;         /* ZeRO-1 all-gather of the updated parameters */
  double tokens_per_s;      /* of the whole job */
  uint64_t allreduce_bytes; /* gradient bytes this rank reduced */
  uint64_t dp_bytes;        /* bytes this rank handed to the data-parallel group's collectives (gradient
                             * reductions, ZeRO gathers and all-gathers): each call's whole buffer */
  uint64_t tp_bytes;        /* the same for the tensor-parallel group (the model's collectives) */
  double loss_scale;        /* fp16 loss scale, 1 otherwise */
} yk_step_stats;

/* "step 3/10 | loss 5.1234 | lr 1.000e-03 | norm 0.812 | 52.1 ms (comm wait 1.2) | 9830 tok/s"
 * (plus " | skipped (fp16 overflow)"), into buf. `steps` is the run's total. */
void yk_step_stats_text(const yk_step_stats *s, int64_t steps, char *buf, size_t cap);
/* The progress bar of a run at a terminal, "[#####.....] 120/300 ETA 1m05s",
 * into buf: `step` of `steps` done, the run having started at step `start`
 * `elapsed_s` seconds ago (the ETA extrapolates this run's own rate; none
 * before its first step or after its last). */
void yk_progress_text(int64_t step, int64_t steps, int64_t start, double elapsed_s, char *buf, size_t cap);
/* One JSON object (no newline) with every field: the `yoke train --json`
 * step line (README lists the keys). */
void yk_step_stats_json(const yk_step_stats *s, char *buf, size_t cap);

/* ------------------------------------------------------------------------ */
/* Process exit codes (docs/exit-codes.md): main returns these             */
/* ------------------------------------------------------------------------ */
typedef enum {
  YK_EXIT_OK = 0,
  YK_EXIT_FAILURE = 1,     /* runtime failure of this rank */
  YK_EXIT_USAGE = 2,       /* bad command line or config */
  YK_EXIT_PEER_DEAD = 3,   /* another rank died; this one stopped because of it */
  YK_EXIT_COORD_LOST = 4,  /* the coordinator went away or stopped answering */
  YK_EXIT_RENDEZVOUS = 5,  /* not every rank registered before the deadline */
  YK_EXIT_REQUEUE = 75,    /* checkpointed on SIGTERM/SIGUSR1: requeue me (EX_TEMPFAIL) */
  YK_EXIT_SIGINT = 130,    /* stopped by SIGINT (128 + 2) */
  YK_EXIT_SIGTERM = 143,   /* stopped by SIGTERM without a checkpoint (128 + 15) */
} yk_exit_code;

/* ------------------------------------------------------------------------ */
/* Command-line options: one table per subcommand (like the config key table) */
/* ------------------------------------------------------------------------ */

/* Every `yoke` subcommand describes its options as a table of yk_opt rows and
 * its command as a yk_cmd_spec; yk_args_parse fills the subcommand's own
 * options struct (fields named by offsetof) and prints nothing. Usage text
 * comes from the same table (yk_args_usage), so help and parsing never
 * disagree.
 *
 *   --name VALUE and --name=VALUE are both accepted; -x VALUE for an alias.
 *   A CONFIG row sets a config key: "--steps 5" is "--set train.steps=5".
 *   With cfg_off set, the first positional argument (when the spec says
 *   job_positional) is a job file loaded before every --set, which then apply
 *   in command-line order, and the config is validated at the end.
 *   "--" ends options; "-h"/"--help" returns YK_ARGS_HELP. */
typedef enum {
  YK_OPT_FLAG = 0, /* no value: the int field is set to 1 */
  YK_OPT_STR,      /* const char * field, pointing into argv */
  YK_OPT_INT,      /* int64_t field, in [min, max] */
  YK_OPT_NUM,      /* double field, in [min, max] */
  YK_OPT_BYTES,    /* uint64_t field: "64", "4k", "1MiB" (yk_parse_bytes), in [min, max] */
  YK_OPT_CONFIG,   /* the value sets config key `key`; key NULL: the value is "section.key=value" (--set) */
} yk_opt_kind;

typedef struct yk_opt {
  const char *name;  /* "--steps" */
  char alias;        /* 'n' for -n; 0 = none */
  yk_opt_kind kind;
  size_t off;        /* offsetof(options struct, field); unused for CONFIG */
  const char *meta;  /* value placeholder in the usage text ("N", "FILE") */
  const char *help;  /* one line (may contain '\n' + indentation for more) */
  double min, max;   /* INT, NUM, BYTES: allowed range (both 0: any) */
  const char *key;   /* CONFIG: the config key, e.g. "train.steps" */
} yk_opt;

/* Where the positional arguments go: v[0..n) are argv entries in their
 * order on the command line (yk_args_parse moves them to the end of argv;
 * argv must outlive the options struct). Any number of them. */
typedef struct yk_args_pos {
  char *const *v;
  int n;
} yk_args_pos;

typedef struct yk_cmd_spec {
  const char *name;      /* "train", "ckpt verify": printed as "yoke NAME" */
  const char *synopsis;  /* after "usage: yoke NAME ": "[JOB.yaml] [options]" */
  const char *about;     /* paragraph under the usage line (may be NULL) */
  const yk_opt *opts;
  int nopts;
  int min_pos, max_pos;  /* positional arguments allowed (after the job file, if any) */
  size_t pos_off;        /* offsetof a yk_args_pos field; only read when max_pos > 0 */
  int job_positional;    /* 1: the first positional argument is a job file (needs a config) */
  int has_config;        /* 1: the options struct holds a yk_config at cfg_off (job file, --set) */
  size_t cfg_off;
  const char *epilog;    /* text after the option list (may be NULL) */
  int rest_positional;   /* 1: the first positional argument ends the options: it and every argument after
                            it are positional, options included (a command line passed on, as `yoke launch`) */
} yk_cmd_spec;

#define YK_ARGS_HELP 1 /* yk_args_parse: -h/--help was given (print yk_args_usage to stdout, exit 0) */

/* Parse argv[1..argc-1] into `opts` (which the caller zeroed or filled with
 * its defaults; a config field, when the spec has one, is reset to the
 * config defaults first). Returns 0, YK_ARGS_HELP, or YK_EUSAGE / YK_ECONFIG
 * with one sentence in d naming the bad argument and what is allowed.
 * Like GNU getopt, a successful parse reorders argv[1..argc-1] in place: the
 * options (with their values) first, then the positional arguments in their
 * order, which the yk_args_pos field and STR fields point at. */
int yk_args_parse(const yk_cmd_spec *s, int argc, char **argv, void *opts, yk_diag *d);
/* The usage text of the spec, from its table. */
void yk_args_usage(const yk_cmd_spec *s, FILE *out);
/* The usual ending of a subcommand's parse: returns -1 to go on (rc == 0),
 * else the exit code after printing help (stdout, 0) or "yoke NAME: why"
 * plus a pointer to --help (stderr, 2). */
int yk_args_exit_code(const yk_cmd_spec *s, int rc, const yk_diag *d);

/* ------------------------------------------------------------------------ */
/* Misc                                                                     */
/* ------------------------------------------------------------------------ */

/* Number of online CPUs (>= 1). */
int yk_cpu_count(void);
/* Version string, e.g. "0.1.0 (git abc1234)". */
const char *yk_version_string(void);

#define YK_MIN(a, b) ((a) < (b) ? (a) : (b))
#define YK_MAX(a, b) ((a) > (b) ? (a) : (b))
#define YK_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------------------ */
/* Plots (plot.c): the one gnuplot helper                                   */
/* ------------------------------------------------------------------------ */

/* Write `script` (gnuplot commands that set their own terminal and output)
 * to OUT_PNG.gp, kept for rerunning by hand, and run gnuplot on it.
 * YK_ENOTFOUND naming the package when gnuplot is not installed; YK_EIO when
 * it fails (its own message is on stderr). */
int yk_plot_gnuplot(const char *out_png, const char *script, yk_diag *d);
/* `yoke plot`: training loss, validation loss, learning rate and tokens/s
 * against step, one curve per log (a train.log_file or `yoke train --json`
 * output; lines may carry a prefix before their JSON) in a 2x2 figure.
 * A log without step lines is YK_EFORMAT naming it. */
int yk_plot_train_logs(const char *const *logs, int n, const char *out_png, const char *title, yk_diag *d);

#ifdef __cplusplus
}
#endif
#endif /* YK_COMMON_H */
