// Attention for one (sequence, head) with AVX-512: scores for 16 keys per FMA using K transposed,
// softmax with a polynomial exp, then P V with broadcast FMAs. Compiled with AVX-512 flags; the engine
// calls it only when the active kernel ISA is avx512 or higher.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../src/avx512_math.h"

using ek::exp512;

// q, k, v: row i of the sequence at q + i*ld (d floats); ctx row i at ctx + i*ldc.
void ek_attention_head_avx512(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t d,
                              float* ctx, int64_t ldc) {
  const int64_t np = (n + 15) / 16 * 16;
  std::vector<float> kt(d * np, 0.f), sc(np);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t e = 0; e < d; ++e) kt[e * np + j] = k[j * ld + e];
  const float scale = 1.0f / std::sqrt((float)d);
  const int64_t dv = d / 16;  // d is a multiple of 16 (checked by the caller)
  for (int64_t i = 0; i < n; ++i) {
    const float* qi = q + i * ld;
    __m512 mx = _mm512_set1_ps(-1e30f);
    for (int64_t j = 0; j < np; j += 16) {
      __m512 s = _mm512_setzero_ps();
      for (int64_t e = 0; e < d; ++e) s = _mm512_fmadd_ps(_mm512_set1_ps(qi[e]), _mm512_loadu_ps(&kt[e * np + j]), s);
      s = _mm512_mul_ps(s, _mm512_set1_ps(scale));
      const __mmask16 valid = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1);
      s = _mm512_mask_blend_ps(valid, _mm512_set1_ps(-1e30f), s);
      _mm512_storeu_ps(&sc[j], s);
      mx = _mm512_max_ps(mx, s);
    }
    const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < np; j += 16) {
      const __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(&sc[j]), m));
      _mm512_storeu_ps(&sc[j], e);
      sum = _mm512_add_ps(sum, e);
    }
    const float inv = 1.0f / _mm512_reduce_add_ps(sum);
    __m512 acc[8];
    for (int64_t c = 0; c < dv; ++c) acc[c] = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; ++j) {
      const __m512 p = _mm512_set1_ps(sc[j] * inv);
      const float* vj = v + j * ld;
      for (int64_t c = 0; c < dv; ++c) acc[c] = _mm512_fmadd_ps(p, _mm512_loadu_ps(vj + 16 * c), acc[c]);
    }
    for (int64_t c = 0; c < dv; ++c) _mm512_storeu_ps(ctx + i * ldc + 16 * c, acc[c]);
  }
}
