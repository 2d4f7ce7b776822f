// Every microkernel of the library, named <types>_<op>_<tile>__<isa> (XNNPACK's scheme): the types are
// activation then weight (u8s8: u8 x s8; u8s7: u8 x 7-bit weights in [-64, 64]; f32; bf16), the tile is rows x
// outputs for GEMMs and block shape x tokens for the 4x1 sparse ones (spmm). Each lives in the source file of the
// same name, compiled with that ISA's flags. Only the tables in config.cpp refer to them: nothing else chooses.
#pragma once
#include <cstddef>
#include <cstdint>

#include "internal.h"

namespace ek {
// int8 GEMMs: y = epilogue(x W^T), or int32 accumulators (Gemm in internal.h).
void u8s8_gemm__ref(const Gemm& g);
void u8s8_gemm_1x1__avx512(const Gemm& g);          // generic loops compiled for AVX-512BW
void u8s8_spmm_4x1__avx512(const Gemm& g);
void u8s8_gemm_6x16__avx2(const Gemm& g);           // both operands widened to int16, vpmaddwd
void u8s7_gemm_6x16__avx2(const Gemm& g);           // vpmaddubsw on 7-bit weights
void u8s8_spmm_4x1_16__avx2(const Gemm& g);
void u8s7_spmm_4x1_16__avx2(const Gemm& g);
void u8s8_gemm_6x64__avx512vnni(const Gemm& g);
void u8s8_spmm_4x1_64__avx512vnni(const Gemm& g);
// Block-rows [r0, r1) of the 4x1 GEMM for token tiles [tile0, tile1), on the calling thread (g.x transposed).
void u8s8_spmm_4x1_64_part__avx512vnni(const Gemm& g, int64_t tile0, int64_t tile1, int64_t r0, int64_t r1);

// fp32 GEMMs (dense and 4x1 on the generic block layout): y = x W^T + bias, then GELU if asked.
using F32GemmFn = void (*)(const ek_packed* w, const float* x, int64_t m, int64_t ldx, const float* bias, int gelu,
                           float* y, int64_t ldy);
void f32_gemm__ref(const ek_packed* w, const float* x, int64_t m, int64_t ldx, const float* bias, int gelu, float* y,
                   int64_t ldy);
void f32_gemm__avx2(const ek_packed* w, const float* x, int64_t m, int64_t ldx, const float* bias, int gelu, float* y,
                    int64_t ldy);
void f32_gemm__avx512(const ek_packed* w, const float* x, int64_t m, int64_t ldx, const float* bias, int gelu,
                      float* y, int64_t ldy);

// Activation quantisation: q = clamp(round_half_even(x / scale) + zp, 0, 255), identical bytes on every path.
using QuantizeFn = void (*)(const float* x, int64_t n, float scale, int32_t zp, uint8_t* q);
void u8_quantize__ref(const float* x, int64_t n, float scale, int32_t zp, uint8_t* q);
void u8_quantize__avx2(const float* x, int64_t n, float scale, int32_t zp, uint8_t* q);
void u8_quantize__avx512(const float* x, int64_t n, float scale, int32_t zp, uint8_t* q);
// The same, transposed into the 4x1 kernels' x layout (see ek_quantize_u8_t); _tile: one 64-token tile.
using QuantizeTFn = void (*)(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* xt,
                             int64_t ldxt);
using QuantizeTTileFn = void (*)(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp,
                                 uint8_t* xt, int64_t ldxt, int64_t tile);
void u8_quantize_t__generic(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* xt,
                        int64_t ldxt);
void u8_quantize_t__avx2(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* xt,
                         int64_t ldxt);
void u8_quantize_t__avx512vnni(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* xt,
                               int64_t ldxt);
void u8_quantize_t_tile__avx512vnni(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp,
                                    uint8_t* xt, int64_t ldxt, int64_t tile);

// The int8 instruction-rate peak of a path's kernels (see ek_peak_macs).
double int8_peak__avx2(double seconds);
double int8_peak__avx512vnni(double seconds);

// Attention for one (sequence, head): ctx rows 0..nq-1 = softmax(q k^T / sqrt(d)) v. Row-major q, k, v: row i at
// q + i * ld; _t variants: transposed, element e of token j at q[e * ld + j] (columns n .. n + 15 readable and
// finite). ctx row i at ctx + i * ldc. The constraints on d are in the table (config.cpp); call them through
// run_attention (attention_kernels.h).
enum class AttentionKernel { kNone, kRef, kAvx2, kAvx512, kAvx512T, kAvx512VnniT, kAvx512Bf16 };
void f32_attention__ref(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t d, float* ctx,
                        int64_t ldc, int64_t nq);
void f32_attention__avx2(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t d, float* ctx,
                         int64_t ldc, int64_t nq);
void f32_attention__avx512(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t d,
                           float* ctx, int64_t ldc, int64_t nq);
void f32_attention_t__avx512(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t d,
                             float* ctx, int64_t ldc, int64_t nq);
void u8s8_attention_t__avx512vnni(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t d,
                                  float* ctx, int64_t ldc, int64_t nq);
void bf16_attention__avx512bf16(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t d,
                                float* ctx, int64_t ldc, int64_t nq);

// x[r] = LayerNorm(x[r] + res[r]) * w + b for rows r0..r1 (res may be null); through run_add_layer_norm.
enum class LayerNormKernel { kNone, kRef, kAvx2, kAvx512 };
void f32_add_layer_norm__ref(float* x, const float* res, int64_t r0, int64_t r1, int64_t h, const float* w,
                             const float* b, float eps);
void f32_add_layer_norm__avx2(float* x, const float* res, int64_t r0, int64_t r1, int64_t h, const float* w,
                              const float* b, float eps);
void f32_add_layer_norm__avx512(float* x, const float* res, int64_t r0, int64_t r1, int64_t h, const float* w,
                                const float* b, float eps);
}  // namespace ek
