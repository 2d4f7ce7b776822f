/* edgekit kernels: int8 and fp32 GEMMs, dense and 4x1 block-sparse, with run-time ISA dispatch.
 *
 * Y[M,N] = X[M,K] * W[N,K]^T.  int8: X is u8 per-tensor (scale, zero point), W is s8 per output
 * channel (symmetric), accumulation in int32, then a fused epilogue:
 *     y[m,n] = (acc[m,n] - x_zp * sum_k W[n,k]) * x_scale * w_scale[n] + bias[n]   (then GELU if asked)
 * written as fp32, or requantised to u8: clamp(round_half_even(y / out_scale) + out_zp, 0, 255).
 * "4x1" blocks: 4 consecutive output channels (rows of W) x 1 input channel; a block is kept or
 * pruned as a whole. Weights are packed once (ek_pack_*) for the ISA active at that moment; a packed
 * buffer carries a header and is refused by a GEMM running on another ISA.
 * All functions return 0 on success or a negative EK_E* code; ek_last_error() says why.
 */
#ifndef EDGEKIT_KERNELS_H
#define EDGEKIT_KERNELS_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

#define EK_PACK_VERSION 1

typedef enum { EK_ISA_REF = 0, EK_ISA_AVX2 = 1, EK_ISA_AVX512 = 2, EK_ISA_AVX512_VNNI = 3 } ek_isa;
typedef enum { EK_DENSE = 0, EK_BLOCK_4X1 = 1 } ek_pattern;
typedef enum { EK_W_S8 = 0, EK_W_F32 = 1 } ek_wtype;
enum { EK_OK = 0, EK_EINVAL = -1, EK_EMISMATCH = -2, EK_ENOMEM = -3, EK_EUNSUPPORTED = -4 };

/* CPU and path selection. The best supported ISA is chosen once; EDGEKIT_ISA=ref|avx2|avx512|avx512_vnni
 * in the environment forces a lower one (asking for one the CPU lacks falls back to the best it has). */
ek_isa ek_best_isa(void);        /* what the CPU supports */
ek_isa ek_active_isa(void);      /* what GEMMs use now */
int ek_set_isa(ek_isa isa);      /* tests/benchmarks: switch path; EK_EUNSUPPORTED if the CPU lacks it */
const char* ek_isa_name(ek_isa isa);
const char* ek_last_error(void); /* message of the last failure in this thread */

/* Threads: one persistent pool shared by all kernels (not OpenMP). Default: all online CPUs. */
void ek_set_num_threads(int n);
int ek_get_num_threads(void);
/* Jobs the pool's caller ran alone so far because the workers' cores were busy with other processes (the pool
   measures how long it waits for descheduled workers and stops waking them for a while when that wait grows). */
int64_t ek_pool_solo_jobs(void);
/* Run fn(i, ctx) for i in [0, n) on the pool (used by the native engine for its own loops). */
void ek_parallel_for(int64_t n, void (*fn)(int64_t i, void* ctx), void* ctx);

typedef struct ek_packed ek_packed;
typedef struct {
  uint32_t version;
  int64_t n, k;
  int32_t pattern;   /* ek_pattern */
  int32_t wtype;     /* ek_wtype */
  int32_t isa;       /* ek_isa it was packed for */
  int64_t nnz_blocks; /* kept 4x1 blocks (dense: ceil(n/4)*k) */
  const char* kernel; /* the kernel its layout is for, e.g. "avx2-u8s7" (static string) */
} ek_packed_info;

ek_packed* ek_pack_s8(const int8_t* w, int64_t n, int64_t k, ek_pattern pattern);
ek_packed* ek_pack_f32(const float* w, int64_t n, int64_t k, ek_pattern pattern);
void ek_packed_free(ek_packed* p);
int ek_packed_get_info(const ek_packed* p, ek_packed_info* info);
int ek_unpack_s8(const ek_packed* p, int8_t* w);   /* W back, [n,k] */
int ek_unpack_f32(const ek_packed* p, float* w);

typedef struct {
  float x_scale;
  int32_t x_zp;
  const float* w_scale; /* [n] */
  const float* bias;    /* [n] or NULL */
  int32_t gelu;         /* 1: y = y * 0.5 * (1 + erf(y / sqrt(2))) */
  int32_t out_u8;       /* 0: y is float [m, ldy]; 1: y is uint8 [m, ldy] */
  float out_scale;
  int32_t out_zp;
} ek_epilogue;

/* x: [m, k] u8 with row stride ldx (elements). */
int ek_gemm_u8s8(const ek_packed* w, const uint8_t* x, int64_t m, int64_t ldx, const ek_epilogue* ep, void* y,
                 int64_t ldy);
/* Layout variant for chaining GEMMs without transposing activations in between. x_t != 0: x is given
 * transposed, [k, ldx] (token i of input channel c at x[c * ldx + i]); y_t != 0: y is written transposed,
 * [n, ldy]. A transposed operand needs a stride of at least ek_padded_m(m); entries i >= m of a transposed
 * y get unspecified values. Results are identical to ek_gemm_u8s8 on the same data. The 4x1 sparse
 * AVX-512 VNNI and AVX2 paths work in these layouts natively; other paths transpose around the plain GEMM. */
int64_t ek_padded_m(int64_t m);
int ek_gemm_u8s8_t(const ek_packed* w, const uint8_t* x, int64_t m, int64_t ldx, int32_t x_t, const ek_epilogue* ep,
                   void* y, int64_t ldy, int32_t y_t);
/* ek_gemm_u8s8_t with x transposed, for the 64 tokens of one tile only (tokens 64*tile .. 64*tile + 63; rows
 * of a plain y past m are not written), on the calling thread: for callers that split work by token tiles
 * themselves (the engine runs a layer's steps after attention tile by tile, one tile per thread, so a tile's
 * activations stay in that core's cache). Same values as the whole GEMM. 4x1 sparse on the AVX-512 VNNI path
 * only; EK_EUNSUPPORTED elsewhere. */
int ek_gemm_u8s8_t_tile(const ek_packed* w, const uint8_t* xt, int64_t m, int64_t ldxt, const ek_epilogue* ep,
                        void* y, int64_t ldy, int32_t y_t, int64_t tile);
/* The same for token tiles [tile0, tile1) and outputs [n0, n1) only (n0 a multiple of 4; n1 too, or n): the
 * engine computes one attention head's q, k and v rows in the task that then runs that head. */
int ek_gemm_u8s8_t_part(const ek_packed* w, const uint8_t* xt, int64_t m, int64_t ldxt, const ek_epilogue* ep,
                        void* y, int64_t ldy, int32_t y_t, int64_t tile0, int64_t tile1, int64_t n0, int64_t n1);
/* Integer accumulators only (zero point applied): acc[m,n] = sum_k (x[m,k] - x_zp) * W[n,k]; for bit-exact tests. */
int ek_gemm_u8s8_acc(const ek_packed* w, const uint8_t* x, int64_t m, int32_t x_zp, int32_t* acc);
/* fp32: y[m,n] = sum_k x[m,k] W[n,k] + bias[n] (then GELU). */
int ek_gemm_f32(const ek_packed* w, const float* x, int64_t m, int64_t ldx, const float* bias, int32_t gelu,
                float* y, int64_t ldy);
/* q = clamp(round_half_even(x / scale) + zp, 0, 255) */
void ek_quantize_u8(const float* x, int64_t n, float scale, int32_t zp, uint8_t* q);
/* Quantise and transpose in one pass, for ek_gemm_u8s8_t's x_t layout: xt[c * ldxt + i] = q(x[i * ldx + c])
 * for i < m (q as in ek_quantize_u8, bit-identical) and 0 for m <= i < ek_padded_m(m); ldxt >= ek_padded_m(m). */
int ek_quantize_u8_t(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* xt,
                     int64_t ldxt);
/* The same for one 64-token tile (tokens 64*tile .. 64*tile + 63, padding ones zero), on the calling thread: for
 * callers that already split work by tiles (the engine fuses it with the LayerNorm that produced those rows).
 * AVX-512 VNNI path only; EK_EUNSUPPORTED elsewhere. */
int ek_quantize_u8_t_tile(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* xt,
                          int64_t ldxt, int64_t tile);
/* The int8 instruction-rate peak of the active ISA's kernels: its multiply loop on every pool thread for
 * `seconds`, in multiply-accumulates per second. vpdpbusd for avx512_vnni; for avx2 the 7-bit-weight chain
 * vpmaddubsw + vpmaddwd(ones) + vpaddd (32 exact MACs per 3 uops), its fastest exact int8 sequence; 0 for paths
 * without a measured peak. */
double ek_peak_macs(double seconds);
/* Per-thread scratch memory (64-byte slack, contents unspecified once grown) for code compiled with ISA flags,
 * which must not instantiate std containers (see kernels/src/internal.h). Slots 2..7 are free for callers. */
void* ek_scratch(int slot, size_t bytes);
/* Memory for activation buffers, 64-byte aligned; from 64 KB up it is also 2 MB aligned, rounded up to 2 MB and
 * (Linux) advised for transparent huge pages: the 4x1 kernels gather one 64-byte line per kept column from a
 * transposed operand whose rows lie a stride apart, i.e. a different 4 KB page per column, and with 4 KB pages
 * those gathers miss the TLB once K is large. Contents are zero. NULL when out of memory; free with ek_free_buffer. */
void* ek_alloc_buffer(size_t bytes);
void ek_free_buffer(void* p);

#ifdef __cplusplus
}
#endif
#endif
