// AVX2 + FMA attention for one (sequence, head), for CPUs without AVX-512 and head sizes that are a multiple of 8
// (built with -mavx2 -mfma only). Same contract as f32_attention__avx512, in 8-lane vectors:
//   scores: K transposed once into kt[d][np] (np = n rounded up to 8, zero padded), 6 query rows x 16 keys of
//           accumulators (12 independent FMA chains; 4 rows left 8, too few to cover FMA latency), the query
//           element broadcast; padded keys get -1e30;
//   softmax: exp by range reduction + degree-6 polynomial, 2^n built in the exponent bits;
//   P V: 6 query rows x 16 features of accumulators, the probability broadcast, then / row sum.
// One head at n=128, d=32 (`python bench/attention_head.py`, min of 2000 calls, one thread, Zen 3): 48 us
// with 4-row tiles, 39 us with 6-row tiles; the FMA floor is 22 us.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "avx2_math.h"
#include "edgekit/kernels.h"
#include "ukernels.h"

namespace {

// Scores of query rows i0..i0+R-1 against all keys into sc[R][np], scaled; keys >= n get -1e30.
template <int R>
inline void scores(const float* q, int64_t ld, int64_t i0, const float* kt, int64_t np, int64_t n, int64_t d,
                   float scale, float* sc) {
  const __m256 vscale = _mm256_set1_ps(scale), neg = _mm256_set1_ps(-1e30f);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t j = 0; j < np; j += 16) {
    const bool two = j + 8 < np;
    __m256 a0[R], a1[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) a0[r] = a1[r] = _mm256_setzero_ps();
    for (int64_t e = 0; e < d; ++e) {
      const __m256 k0 = _mm256_loadu_ps(kt + e * np + j);
      const __m256 k1 = two ? _mm256_loadu_ps(kt + e * np + j + 8) : _mm256_setzero_ps();
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m256 qv = _mm256_broadcast_ss(q + (i0 + r) * ld + e);
        a0[r] = _mm256_fmadd_ps(qv, k0, a0[r]);
        if (two) a1[r] = _mm256_fmadd_ps(qv, k1, a1[r]);
      }
    }
    // Lanes at key index >= n are padding.
    const __m256 ok0 = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - j)), lane));
    const __m256 ok1 = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - j - 8)), lane));
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      _mm256_storeu_ps(sc + r * np + j, _mm256_blendv_ps(neg, _mm256_mul_ps(a0[r], vscale), ok0));
      if (two) _mm256_storeu_ps(sc + r * np + j + 8, _mm256_blendv_ps(neg, _mm256_mul_ps(a1[r], vscale), ok1));
    }
  }
}

// In place: row <- exp(row - max); returns 1 / sum.
inline float softmax_row(float* row, int64_t np) {
  __m256 mx = _mm256_set1_ps(-1e30f);
  for (int64_t j = 0; j < np; j += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(row + j));
  const __m256 m = _mm256_set1_ps(hmax(mx));
  __m256 sum = _mm256_setzero_ps();
  for (int64_t j = 0; j < np; j += 8) {
    const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(row + j), m));
    _mm256_storeu_ps(row + j, e);
    sum = _mm256_add_ps(sum, e);
  }
  return 1.0f / hsum(sum);
}

// ctx rows i0..i0+R-1, features c0..c0+8*CW-1 = (P V)[., c0..] / row sum.
template <int R, int CW>
inline void pv(const float* sc, int64_t np, const float* inv, const float* v, int64_t ld, int64_t n, float* ctx,
               int64_t ldc, int64_t i0, int64_t c0) {
  __m256 acc[R][CW];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < CW; ++c) acc[r][c] = _mm256_setzero_ps();
  for (int64_t j = 0; j < n; ++j) {
    __m256 vv[CW];
#pragma GCC unroll 8
    for (int c = 0; c < CW; ++c) vv[c] = _mm256_loadu_ps(v + j * ld + c0 + 8 * c);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 p = _mm256_broadcast_ss(sc + r * np + j);
#pragma GCC unroll 8
      for (int c = 0; c < CW; ++c) acc[r][c] = _mm256_fmadd_ps(p, vv[c], acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < CW; ++c)
      _mm256_storeu_ps(ctx + (i0 + r) * ldc + c0 + 8 * c, _mm256_mul_ps(acc[r][c], _mm256_set1_ps(inv[r])));
}

// P V for R (<= 2) rows over all d features, 32 at a time, then the 8..24 left.
template <int R>
inline void pv_rows(const float* sc, int64_t np, const float* inv, const float* v, int64_t ld, int64_t n, int64_t d,
                    float* ctx, int64_t ldc, int64_t i0) {
  int64_t c0 = 0;
  for (; c0 + 32 <= d; c0 += 32) pv<R, 4>(sc, np, inv, v, ld, n, ctx, ldc, i0, c0);
  switch ((d - c0) / 8) {
    case 3: pv<R, 3>(sc, np, inv, v, ld, n, ctx, ldc, i0, c0); break;
    case 2: pv<R, 2>(sc, np, inv, v, ld, n, ctx, ldc, i0, c0); break;
    case 1: pv<R, 1>(sc, np, inv, v, ld, n, ctx, ldc, i0, c0); break;
    default: break;
  }
}

// P V for 6 rows, 16 features at a time (12 accumulators).
inline void pv_rows6(const float* sc, int64_t np, const float* inv, const float* v, int64_t ld, int64_t n, int64_t d,
                     float* ctx, int64_t ldc, int64_t i0) {
  int64_t c0 = 0;
  for (; c0 + 16 <= d; c0 += 16) pv<6, 2>(sc, np, inv, v, ld, n, ctx, ldc, i0, c0);
  if (c0 < d) pv<6, 1>(sc, np, inv, v, ld, n, ctx, ldc, i0, c0);
}

template <int R>
void rows(const float* q, const float* v, int64_t ldv, int64_t ld, int64_t i0, const float* kt, int64_t np, int64_t n,
          int64_t d, float scale, float* sc, float* ctx, int64_t ldc) {
  scores<R>(q, ld, i0, kt, np, n, d, scale, sc);
  float inv[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) inv[r] = softmax_row(sc + r * np, np);
  if (R == 6) {
    pv_rows6(sc, np, inv, v, ldv, n, d, ctx, ldc, i0);
    return;
  }
  int r = 0;
  for (; r + 2 <= R; r += 2) pv_rows<2>(sc + r * np, np, inv + r, v, ldv, n, d, ctx, ldc, i0 + r);
  if (r < R) pv_rows<1>(sc + r * np, np, inv + r, v, ldv, n, d, ctx, ldc, i0 + r);
}
}  // namespace

// q, k, v: row i of the sequence at q + i*ld (d floats); ctx row i at ctx + i*ldc. d % 8 == 0, d <= 128.
// Only query rows 0..nq-1 are computed (all n keys and values take part).
void ek::f32_attention__avx2(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t d,
                             float* ctx, int64_t ldc, int64_t nq) {
  const int64_t np = (n + 7) / 8 * 8;
  // Buffers from the kernels' per-thread scratch (no std containers in a unit built with ISA flags).
  float* kt = static_cast<float*>(ek_scratch(2, d * np * sizeof(float)));
  float* sc = static_cast<float*>(ek_scratch(3, 6 * np * sizeof(float)));
  for (int64_t e = 0; e < d; ++e) std::memset(kt + e * np + n, 0, (np - n) * sizeof(float));
  for (int64_t j = 0; j < n; ++j)
    for (int64_t e = 0; e < d; ++e) kt[e * np + j] = k[j * ld + e];
  // V rows packed contiguously (see f32_attention__avx512: the engine's row stride maps them onto few L1 sets)
  float* vc = static_cast<float*>(ek_scratch(4, n * d * sizeof(float)));
  for (int64_t j = 0; j < n; ++j)
    for (int64_t e = 0; e < d; e += 8) _mm256_storeu_ps(vc + j * d + e, _mm256_loadu_ps(v + j * ld + e));
  const float scale = 1.0f / std::sqrt((float)d);
  int64_t i = 0;
  for (; i + 6 <= nq; i += 6) rows<6>(q, vc, d, ld, i, kt, np, n, d, scale, sc, ctx, ldc);
  for (; i + 4 <= nq; i += 4) rows<4>(q, vc, d, ld, i, kt, np, n, d, scale, sc, ctx, ldc);
  for (; i < nq; ++i) rows<1>(q, vc, d, ld, i, kt, np, n, d, scale, sc, ctx, ldc);
}
