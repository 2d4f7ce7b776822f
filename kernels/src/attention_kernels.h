// Calls to the attention and add + LayerNorm kernels by the enum a table entry names them with (config.h). Inline
// switches, so that each call in the engine is a direct call to the kernel.
#pragma once
#include "ukernels.h"

namespace ek {
inline void run_attention(AttentionKernel kernel, const float* q, const float* k, const float* v, int64_t ld,
                          int64_t n, int64_t d, float* ctx, int64_t ldc, int64_t nq) {
  switch (kernel) {
    case AttentionKernel::kAvx512VnniT: u8s8_attention_t__avx512vnni(q, k, v, ld, n, d, ctx, ldc, nq); return;
    case AttentionKernel::kAvx512T: f32_attention_t__avx512(q, k, v, ld, n, d, ctx, ldc, nq); return;
    case AttentionKernel::kAvx512Bf16: bf16_attention__avx512bf16(q, k, v, ld, n, d, ctx, ldc, nq); return;
    case AttentionKernel::kAvx2: f32_attention__avx2(q, k, v, ld, n, d, ctx, ldc, nq); return;
    case AttentionKernel::kAvx512: f32_attention__avx512(q, k, v, ld, n, d, ctx, ldc, nq); return;
    default: f32_attention__ref(q, k, v, ld, n, d, ctx, ldc, nq); return;
  }
}

inline void run_add_layer_norm(LayerNormKernel kernel, float* x, const float* res, int64_t r0, int64_t r1, int64_t h,
                               const float* w, const float* b, float eps) {
  switch (kernel) {
    case LayerNormKernel::kAvx512: f32_add_layer_norm__avx512(x, res, r0, r1, h, w, b, eps); return;
    case LayerNormKernel::kAvx2: f32_add_layer_norm__avx2(x, res, r0, r1, h, w, b, eps); return;
    default: f32_add_layer_norm__ref(x, res, r0, r1, h, w, b, eps); return;
  }
}
}  // namespace ek
