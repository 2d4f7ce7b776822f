// Add + LayerNorm with AVX-512: x[r] = LayerNorm(x[r] + res[r]) * w + b, 16 lanes at a time.
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "ukernels.h"

// x[r] = LayerNorm(x[r] + res[r]) * w + b for rows r0..r1 (res may be null); h % 16 == 0. Two passes over
// the row in fp32 (mean, then variance of the centred values), as the portable version does.
void ek::f32_add_layer_norm__avx512(float* x, const float* res, int64_t r0, int64_t r1, int64_t h, const float* w,
                                    const float* b, float eps) {
  for (int64_t r = r0; r < r1; ++r) {
    float* v = x + r * h;
    __m512 s = _mm512_setzero_ps();
    for (int64_t i = 0; i < h; i += 16) {
      __m512 a = _mm512_loadu_ps(v + i);
      if (res) {
        a = _mm512_add_ps(a, _mm512_loadu_ps(res + r * h + i));
        _mm512_storeu_ps(v + i, a);
      }
      s = _mm512_add_ps(s, a);
    }
    const __m512 mean = _mm512_set1_ps(_mm512_reduce_add_ps(s) / (float)h);
    __m512 q = _mm512_setzero_ps();
    for (int64_t i = 0; i < h; i += 16) {
      const __m512 c = _mm512_sub_ps(_mm512_loadu_ps(v + i), mean);
      q = _mm512_fmadd_ps(c, c, q);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / std::sqrt(_mm512_reduce_add_ps(q) / (float)h + eps));
    for (int64_t i = 0; i < h; i += 16) {
      const __m512 c = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(v + i), mean), inv);
      _mm512_storeu_ps(v + i, _mm512_fmadd_ps(c, _mm512_loadu_ps(w + i), _mm512_loadu_ps(b + i)));
    }
  }
}
