/* yk_device.h - the one public header of yoke's `device` module.
 *
 * The device interface is a table of function pointers (struct
 * yk_device_ops): memory, one matrix product, and every fused kernel the GPT-2
 * model needs. The model only ever calls through this table, so an NPU
 * backend is one more file that fills the same table. Today's only backend is
 * the CPU (device/cpu*.c): sgemm through OpenBLAS, the other kernels with
 * run-time ISA dispatch (AVX2+FMA+F16C or portable scalar C), threads from
 * the device's own pool (cpu_pool.c: kernels cut into fixed chunks that
 * whichever thread is running claims, so a kernel never waits for a thread
 * that another process has taken off the CPU).
 *
 * Conventions for every kernel:
 *   - all tensors are dense row-major fp32 unless a dtype is written;
 *   - shapes are written as (dim0, dim1, ...) next to each argument;
 *   - "+=" in a comment means the kernel accumulates into that output (used
 *     for gradients so micro-batch accumulation works by not zeroing);
 *   - results are bitwise reproducible run to run for a fixed device (thread
 *     count and ISA): every reduction has a fixed order and partition; no
 *     atomics on data. All kernels but gemm (and attention, which calls
 *     sgemm) give the same bits at any thread count.
 * Kernels do not fail: arguments are validated by the caller (the model).
 *
 * Ownership: a device is created by yk_device_cpu_create and freed by
 * yk_device_destroy. Memory from ops->alloc is freed with ops->free of the
 * same device. A device may be used by one thread at a time (its kernels
 * themselves run multi-threaded).
 */
#ifndef YK_DEVICE_H
#define YK_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "yk_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* yk_isa (instruction-set variants) lives in yk_common.h. */

typedef struct yk_device yk_device;

typedef struct yk_device_ops {
  const char *name; /* "cpu" */

  /* ---- memory: 64-byte aligned, zeroed; NULL on failure ---------------- */
  void *(*alloc)(const yk_device *dev, size_t bytes);
  void (*free)(const yk_device *dev, void *p);
  /* Memory that the collectives of other processes on this host can read
   * in place (registered with yk_comm_register), e.g. the gradient arena of
   * a data-parallel rank. NULL where the device has no such memory (an
   * accelerator would register its own memory with its fabric instead).
   * Zeroed; freed with yk_shmem_free. */
  int (*alloc_shared)(const yk_device *dev, size_t bytes, yk_shmem *out, yk_diag *d);

  /* Set n floats at p to 0 (multi-threaded: gradient arenas are large). */
  void (*zero)(const yk_device *dev, float *p, size_t n);

  /* ---- matrix product --------------------------------------------------- */
  /* C (M,N) = alpha * op(A) * op(B) + beta * C, row-major. op(A) is (M,K):
   * A is (M,K) with row stride lda, or (K,M) if transa. op(B) is (K,N): B is
   * (K,N) with stride ldb, or (N,K) if transb. Multi-threaded over M or N
   * (or K, with partial sums added in a fixed order, when K dominates). */
  void (*gemm)(const yk_device *dev, int transa, int transb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);

  /* ---- GPT-2 kernels ---------------------------------------------------- */
  /* out (N,C) = wte[tok[n]] + wpe[n % T]; tok (N) i32 in [0,V), wte (V,C),
   * wpe (T..,C), N = B*T. */
  void (*encoder_fwd)(const yk_device *dev, float *out, const int32_t *tok, const float *wte, const float *wpe, int N,
                      int T, int C);
  /* dwte (V,C) += scatter of dout by token; dwpe (T,C) += sum over batch.
   * dout (N,C). Partitioned over channels, so deterministic. */
  void (*encoder_bwd)(const yk_device *dev, float *dwte, float *dwpe, const float *dout, const int32_t *tok, int N, int T,
                      int C);
  /* LayerNorm over the last dim, eps 1e-5 (biased variance, like PyTorch):
   * out (N,C), mean (N), rstd (N) written; inp (N,C); w, b (C). */
  void (*layernorm_fwd)(const yk_device *dev, float *out, float *mean, float *rstd, const float *inp, const float *w,
                        const float *b, int N, int C);
  /* dinp (N,C) +=, dw (C) +=, db (C) += from dout (N,C), inp (N,C), w (C),
   * mean, rstd (N). scratch: layernorm_bwd_scratch(N, C) floats. */
  void (*layernorm_bwd)(const yk_device *dev, float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, const float *mean, const float *rstd, int N, int C, float *scratch);
  /* out (N,OC) = bias (OC) broadcast over rows, plus res (N,OC) if res is
   * non-NULL. Used before a gemm with beta=1, which fuses bias and residual
   * adds into the matrix product. */
  void (*bias_rows)(const yk_device *dev, float *out, const float *bias, const float *res, int N, int OC);
  /* db (OC) += column sums of dout (N,OC). */
  void (*bias_bwd)(const yk_device *dev, float *db, const float *dout, int N, int OC);
  /* out (n) = gelu_tanh(inp (n)): 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3))). */
  void (*gelu_fwd)(const yk_device *dev, float *out, const float *inp, size_t n);
  /* dinp (n) = dout (n) * gelu_tanh'(inp (n)). dinp may alias dout. */
  void (*gelu_bwd)(const yk_device *dev, float *dinp, const float *inp, const float *dout, size_t n);
  /* out (n) = a (n) + b (n); out may alias a or b. */
  void (*add)(const yk_device *dev, float *out, const float *a, const float *b, size_t n);
  /* Causal multi-head attention on a fused QKV tensor.
   * qkv (B,T,3C): [q | k | v], head h uses channels h*hd..(h+1)*hd of each.
   * att (B,NH,T,T) written: softmax(q k^T / sqrt(hd)) with the causal mask
   * (entries above the diagonal are 0). out (B,T,C) written. */
  void (*attention_fwd)(const yk_device *dev, float *out, float *att, const float *qkv, int B, int T, int C, int NH);
  /* dqkv (B,T,3C) written (not accumulated) from dout (B,T,C), qkv, att.
   * scratch: attention_bwd_scratch(T) floats. */
  void (*attention_bwd)(const yk_device *dev, float *dqkv, const float *dout, const float *qkv, const float *att, int B,
                        int T, int C, int NH, float *scratch);
  /* Causal softmax of rows in place: for each of the R row blocks of (T,T)
   * (R = B*NH), row t: x[0..t] = softmax(scale * x[0..t]), x[t+1..T) = 0.
   * The attention forward uses this; exposed for tests. */
  void (*softmax_causal)(const yk_device *dev, float *x, int R, int T, float scale);
  /* Backward of softmax_causal: datt (R,T,T) in, overwritten with
   * scale * att * (datt - sum_j att*datt) (the gradient of the pre-softmax
   * scores); att (R,T,T). */
  void (*softmax_causal_bwd)(const yk_device *dev, float *datt, const float *att, int R, int T, float scale);
  /* Softmax cross-entropy with vocab padding: logits (N,Vp), only columns
   * [0,V) take part (padded columns never affect the loss). losses (N) =
   * logsumexp - logit[target]; lse (N) = logsumexp kept for the backward.
   * targets (N) i32 in [0,V). */
  void (*crossent_fwd)(const yk_device *dev, float *losses, float *lse, const float *logits, const int32_t *targets,
                       int N, int V, int Vp);
  /* In place: logits (N,Vp) become dlogits = dloss * (softmax - onehot) for
   * columns < V and 0 for padded columns. lse (N) is the logsumexp over the
   * whole vocabulary. A target outside [0,V) gets no one-hot term: under
   * vocabulary parallelism a rank passes targets shifted by its shard's
   * first row, and those it does not hold fall outside. */
  void (*crossent_bwd)(const yk_device *dev, float *logits, const float *lse, const int32_t *targets, float dloss,
                       int N, int V, int Vp);
  /* The local half of a vocabulary-parallel cross-entropy: logits (N,ld)
   * hold one shard of the vocabulary, its first nv columns real (nv <= ld).
   * lse (N) = logsumexp over those nv columns (-inf if nv = 0); tgt (N) =
   * logits[n][targets[n]] when targets[n] (shifted to the shard) is in
   * [0,nv), else 0. The model combines the shards' lse and tgt across the
   * group (max, then sum of exp). */
  void (*crossent_shard_fwd)(const yk_device *dev, float *lse, float *tgt, const float *logits,
                             const int32_t *targets, int N, int nv, int ld);
  /* Casts, round-to-nearest-even, n elements; 16-bit values are raw bits.
   * The CPU device runs common's yk_cast_* over its threads: the same bits
   * as yk_f32_to_f16 & co. for every input. */
  void (*f32_to_f16)(const yk_device *dev, uint16_t *out, const float *in, size_t n);
  void (*f16_to_f32)(const yk_device *dev, float *out, const uint16_t *in, size_t n);
  void (*f32_to_bf16)(const yk_device *dev, uint16_t *out, const float *in, size_t n);
  void (*bf16_to_f32)(const yk_device *dev, float *out, const uint16_t *in, size_t n);
  /* Round to 16 bits, keeping both forms, in one pass: out (n) = the f16
   * (bf16) bits of x (n), round-to-nearest-even, and x (n) = their fp32
   * value (what f32_to_f16 then f16_to_f32 give). The model uses this for
   * every activation it keeps in 16 bits and computes on at once. */
  void (*round_f16)(const yk_device *dev, uint16_t *out, float *x, size_t n);
  void (*round_bf16)(const yk_device *dev, uint16_t *out, float *x, size_t n);
} yk_device_ops;

/* A device: the ops table plus the backend's settings. Treat as read-only. */
struct yk_device {
  const yk_device_ops *ops;
  int nthreads;  /* compute threads used by every kernel */
  yk_isa isa;    /* the vector kernel variant in use */
};

/* Scratch sizes (floats) for the kernels that need them. */
size_t yk_device_layernorm_bwd_scratch(const yk_device *dev, int N, int C);
size_t yk_device_attention_bwd_scratch(const yk_device *dev, int T);
/* Resident bytes the GEMM library's own packing buffers reach over dev's
 * threads for products of at most M rows, N columns and depth K (memory
 * plans count them; an estimate from the library's blocking, checked
 * against VmHWM in docs/memory.md). */
size_t yk_device_gemm_workspace(const yk_device *dev, int M, int N, int K);

/* Create the CPU device. nthreads <= 0 means all online cores. isa
 * picks the variant with yk_isa_resolve (YK_ISA_AUTO: $YK_ISA if set, else
 * the best the CPU supports) and returns its error, with the message: an
 * unknown $YK_ISA is YK_ECONFIG, a variant the CPU cannot run
 * YK_EUNSUPPORTED. Starts nthreads-1 worker threads (idle ones sleep on a
 * futex after a short spin); yk_device_destroy joins them. Side effect:
 * OpenBLAS is set to one thread per call (openblas_set_num_threads(1),
 * process-wide) because the device splits every sgemm over its own
 * threads, so only one thread pool is active. YK_ESYS if the threads cannot
 * be started.
 * *out is owned by the caller: free with yk_device_destroy. */
int yk_device_cpu_create(int nthreads, yk_isa isa, yk_device **out, yk_diag *d);
void yk_device_destroy(yk_device *dev);

/* ---- a traced device: every kernel call timed and reported --------------
 * A device whose ops table wraps another's: each call goes to the inner
 * device and is reported to a hook with its kernel, shape, an estimate of
 * the bytes it moves and its start and end, so a profiler can say which
 * kernel of which layer takes the time (the engine's
 * train.trace_detail=kernel, docs/tracing.md). Memory calls (alloc, free,
 * alloc_shared) pass through untimed, so memory from either device is the
 * same memory. Kernels nest no further: the inner device's kernels call its
 * own ops, not the wrapper's. */
enum {
  YK_KERN_ZERO, YK_KERN_GEMM, YK_KERN_ENCODER_FWD, YK_KERN_ENCODER_BWD, YK_KERN_LAYERNORM_FWD, YK_KERN_LAYERNORM_BWD,
  YK_KERN_BIAS_ROWS, YK_KERN_BIAS_BWD, YK_KERN_GELU_FWD, YK_KERN_GELU_BWD, YK_KERN_ADD, YK_KERN_ATTENTION_FWD,
  YK_KERN_ATTENTION_BWD, YK_KERN_SOFTMAX_CAUSAL, YK_KERN_SOFTMAX_CAUSAL_BWD, YK_KERN_CROSSENT_FWD,
  YK_KERN_CROSSENT_BWD, YK_KERN_CROSSENT_SHARD_FWD, YK_KERN_F32_TO_F16, YK_KERN_F16_TO_F32, YK_KERN_F32_TO_BF16,
  YK_KERN_BF16_TO_F32, YK_KERN_ROUND_F16, YK_KERN_ROUND_BF16,
  YK_DEVICE_KERNELS /* how many */
};

/* One kernel call. Shapes: gemm (M, N, K); encoder, layernorm, bias (rows,
 * columns); attention (B, T, C); softmax (rows, T); cross-entropy (rows,
 * vocabulary columns); element-wise kernels and casts (n). */
typedef struct yk_device_call {
  int kernel;          /* YK_KERN_* */
  int ndims;           /* 1..3 */
  int64_t dim[3];
  uint64_t bytes;      /* the kernel's tensors read and written once each (an estimate of its memory traffic) */
  int64_t t0_ns, t1_ns;/* yk_now_ns before and after */
} yk_device_call;
typedef void (*yk_device_call_hook)(void *ctx, const yk_device_call *call);

/* The kernel's ops-table name ("gemm", "layernorm_fwd", ...), static. */
const char *yk_device_kernel_name(int kernel);
/* A device calling `inner` and reporting each kernel to hook(ctx, ...) on
 * the calling thread. inner must outlive it. *out owned by the caller: free
 * with yk_device_traced_destroy (not yk_device_destroy). YK_ENOMEM. */
int yk_device_traced_create(const yk_device *inner, yk_device_call_hook hook, void *ctx, yk_device **out,
                            yk_diag *d);
void yk_device_traced_destroy(yk_device *dev);

/* Measure this device's sgemm rate in GFLOP/s on an M x N x K product
 * (e.g. 1024 x 2304 x 768), best of `reps` after one warm-up. For MFU. */
double yk_device_gemm_gflops(const yk_device *dev, int M, int N, int K, int reps);

#ifdef __cplusplus
}
#endif
#endif /* YK_DEVICE_H */
