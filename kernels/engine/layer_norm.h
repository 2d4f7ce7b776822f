// Add + LayerNorm over all rows of the activations, split across the kernels' thread pool; the kernel comes from
// the active ISA's table (kernels/src/config.h).
#pragma once
#include <cstdint>

#include "../src/ukernels.h"

namespace ek {
namespace engine {

// The add + LayerNorm kernel for hidden size h on the active ISA.
LayerNormKernel layer_norm_kernel(int64_t h);

// x[r] = LayerNorm(x[r] + res[r]) * w + b for rows 0..rows-1 (res may be null), 16 rows per task.
void add_layer_norm(float* x, const float* res, int64_t rows, int64_t h, const float* w, const float* b, float eps);

// The same, then the rows quantised (q_scale, q_zp) into the transposed u8 operand xt [h][ldxt] of the next sparse
// GEMM, 64 tokens per task: each task quantises the rows it has just normalised (in its own cache), writing whole
// 64-byte pieces of xt rows, and the two steps share one pool hand-off instead of two. Needs the token-tile
// kernels (ek_quantize_u8_t_tile); returns its error code.
int add_layer_norm_quantize_t(float* x, const float* res, int64_t rows, int64_t h, const float* w, const float* b,
                              float eps, float q_scale, int32_t q_zp, uint8_t* xt, int64_t ldxt);
}  // namespace engine
}  // namespace ek
