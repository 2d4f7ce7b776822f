// Attention for one (sequence, head) with AVX-512, register-blocked (the blocks are in attention_avx512.h).
//
// K is transposed once per head into kt[d][np] (np = keys rounded up to 16, zero padded). Compiled with
// AVX-512 flags; the engine calls it only when the active kernel ISA is avx512 or higher and d % 16 == 0.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "attention_avx512.h"
#include "edgekit/kernels.h"

// q, k, v: row i of the sequence at q + i*ld (d floats); ctx row i at ctx + i*ldc. d % 16 == 0, d <= 128.
// Only query rows 0..nq-1 are computed (all n keys and values take part).
void ek_attention_head_avx512(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t d,
                              float* ctx, int64_t ldc, int64_t nq) {
  const int64_t np = (n + 15) / 16 * 16;
  // Buffers from the kernels' per-thread scratch (no std containers in a unit built with ISA flags).
  float* kt = static_cast<float*>(ek_scratch(2, d * np * sizeof(float)));
  float* sc = static_cast<float*>(ek_scratch(3, 8 * np * sizeof(float)));
  float* vc = static_cast<float*>(ek_scratch(4, n * d * sizeof(float)));
  for (int64_t j0 = 0; j0 < np; j0 += 16)
    for (int64_t e0 = 0; e0 < d; e0 += 16) transpose16(k + j0 * ld + e0, ld, n - j0, kt + e0 * np + j0, np);
  // V rows packed contiguously: in the engine they sit 3 x hidden floats apart (4.6 KB for MiniLM), a stride that
  // maps a head's 128 rows onto a few L1 sets, so P V (which reads all of V once per block of query rows) missed
  // L1 on most loads (n = 128, d = 32, 12 heads at the engine's strides, one thread: 28.4 -> 21.9 us per head, min of a
  // standalone C++ loop; the K transpose went from scalar to 16 x 16 register blocks in the same change).
  for (int64_t j = 0; j < n; ++j)
    for (int64_t e = 0; e < d; e += 16) _mm512_storeu_ps(vc + j * d + e, _mm512_loadu_ps(v + j * ld + e));
  run_head(QK{q, ld, 1, kt, np}, VF{vc, d}, np, n, d, sc, ctx, ldc, nq);
}

// The same on transposed q, k, v: element e of token j at q[e * ldt + j] (the 4x1 kernels' transposed fp32 output;
// columns n .. n + 15 must be readable and finite: they are read for whole 16-key blocks, then masked). K^T is
// used in place; V is transposed to rows in 16 x 16 blocks.
void ek_attention_head_avx512_t(const float* q, const float* k, const float* v, int64_t ldt, int64_t n, int64_t d,
                                float* ctx, int64_t ldc, int64_t nq) {
  const int64_t np = (n + 15) / 16 * 16;
  float* sc = static_cast<float*>(ek_scratch(3, 8 * np * sizeof(float)));
  float* vc = static_cast<float*>(ek_scratch(4, np * d * sizeof(float)));
  for (int64_t j0 = 0; j0 < np; j0 += 16)
    for (int64_t e0 = 0; e0 < d; e0 += 16) transpose16(v + e0 * ldt + j0, ldt, 16, vc + j0 * d + e0, d);
  run_head(QK{q, 1, ldt, k, ldt}, VF{vc, d}, np, n, d, sc, ctx, ldc, nq);
}

// x[r] = LayerNorm(x[r] + res[r]) * w + b for rows r0..r1 (res may be null); h % 16 == 0. Two passes over
// the row in fp32 (mean, then variance of the centred values), as the portable version does.
void ek_add_layer_norm_avx512(float* x, const float* res, int64_t r0, int64_t r1, int64_t h, const float* w,
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
