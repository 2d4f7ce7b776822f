// Add + LayerNorm with AVX2 + FMA: x[r] = LayerNorm(x[r] + res[r]) * w + b, 8 lanes at a time.
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "avx2_math.h"
#include "ukernels.h"

// x[r] = LayerNorm(x[r] + res[r]) * w + b for rows r0..r1 (res may be null); h % 8 == 0. Two passes over the
// row in fp32 (mean, then variance of the centred values), as the portable version does.
void ek::f32_add_layer_norm__avx2(float* x, const float* res, int64_t r0, int64_t r1, int64_t h, const float* w,
                                  const float* b, float eps) {
  for (int64_t r = r0; r < r1; ++r) {
    float* v = x + r * h;
    __m256 s = _mm256_setzero_ps();
    for (int64_t i = 0; i < h; i += 8) {
      __m256 a = _mm256_loadu_ps(v + i);
      if (res) {
        a = _mm256_add_ps(a, _mm256_loadu_ps(res + r * h + i));
        _mm256_storeu_ps(v + i, a);
      }
      s = _mm256_add_ps(s, a);
    }
    const __m256 mean = _mm256_set1_ps(hsum(s) / (float)h);
    __m256 sq = _mm256_setzero_ps();
    for (int64_t i = 0; i < h; i += 8) {
      const __m256 c = _mm256_sub_ps(_mm256_loadu_ps(v + i), mean);
      sq = _mm256_fmadd_ps(c, c, sq);
    }
    const __m256 inv = _mm256_set1_ps(1.0f / std::sqrt(hsum(sq) / (float)h + eps));
    for (int64_t i = 0; i < h; i += 8) {
      const __m256 c = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(v + i), mean), inv);
      _mm256_storeu_ps(v + i, _mm256_fmadd_ps(c, _mm256_loadu_ps(w + i), _mm256_loadu_ps(b + i)));
    }
  }
}
