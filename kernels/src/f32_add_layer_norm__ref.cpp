// Reference add + LayerNorm: x[r] = LayerNorm(x[r] + res[r]) * w + b for rows r0..r1 (res may be null), two passes
// in float over one row (mean, then variance of the centred values), as the vector kernels do.
#include <cmath>

#include "ukernels.h"

void ek::f32_add_layer_norm__ref(float* x, const float* res, int64_t r0, int64_t r1, int64_t h, const float* w,
                                 const float* b, float eps) {
  for (int64_t r = r0; r < r1; ++r) {
    float* v = x + r * h;
    if (res) {
      const float* a = res + r * h;
#pragma omp simd
      for (int64_t i = 0; i < h; ++i) v[i] += a[i];
    }
    float mean = 0, var = 0;
#pragma omp simd reduction(+ : mean)
    for (int64_t i = 0; i < h; ++i) mean += v[i];
    mean /= (float)h;
#pragma omp simd reduction(+ : var)
    for (int64_t i = 0; i < h; ++i) var += (v[i] - mean) * (v[i] - mean);
    const float inv = 1.0f / std::sqrt(var / (float)h + eps);
#pragma omp simd
    for (int64_t i = 0; i < h; ++i) v[i] = (v[i] - mean) * inv * w[i] + b[i];
  }
}
