// Attention for one (sequence, head) with AVX-512, register-blocked.
//
// K is transposed once per head into kt[d][np] (np = keys rounded up to 16, zero padded). Queries go in
// blocks of R rows: scores for R rows x 32 keys are 2R independent FMA chains over d (one kt load per
// 16 keys, one broadcast per row), softmax runs on each row with a polynomial exp, then P V for R rows x d
// uses R*DV accumulators with one V load per 16 features and one broadcast of p per row. Independent
// chains keep both FMA pipes busy, where one row at a time would wait on FMA latency. Compiled with
// AVX-512 flags; the engine calls it only when the active kernel ISA is avx512 or higher and d % 16 == 0.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "../src/avx512_math.h"
#include "edgekit/kernels.h"

using ek::exp512;

namespace {

// Query element e of row i is q[i * qi + e * qe] (row-major q: qi = row stride, qe = 1; transposed: the other
// way round). Key j's element e is kt[e * ldk + j] (ldk >= np; keys n..np-1 are masked, so any finite values).
struct QK {
  const float* q;
  int64_t qi, qe;
  const float* kt;
  int64_t ldk;
};

// Scores of rows i0..i0+R-1 against all keys into sc[R][np], scaled and masked, and each row's maximum into
// rmax[R] (kept in registers on the way, so softmax needs no separate pass for it).
template <int R>
inline void scores(const QK& a, int64_t i0, int64_t np, int64_t n, int64_t d, float scale, float* sc, float* rmax) {
  const float* kt = a.kt;
  const int64_t ldk = a.ldk;
  const __m512 vscale = _mm512_set1_ps(scale), neg = _mm512_set1_ps(-1e30f);
  __m512 mx[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) mx[r] = neg;
  for (int64_t j = 0; j < np; j += 32) {
    const bool two = j + 16 < np;
    __m512 a0[R], a1[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) a0[r] = a1[r] = _mm512_setzero_ps();
    for (int64_t e = 0; e < d; ++e) {
      const __m512 k0 = _mm512_loadu_ps(kt + e * ldk + j);
      const __m512 k1 = two ? _mm512_loadu_ps(kt + e * ldk + j + 16) : _mm512_setzero_ps();
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512 qv = _mm512_set1_ps(a.q[(i0 + r) * a.qi + e * a.qe]);
        a0[r] = _mm512_fmadd_ps(qv, k0, a0[r]);
        if (two) a1[r] = _mm512_fmadd_ps(qv, k1, a1[r]);
      }
    }
    const __mmask16 m0 = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1);
    const __mmask16 m1 = n - j - 16 >= 16 ? (__mmask16)0xffff
                         : n - j - 16 > 0 ? (__mmask16)((1u << (n - j - 16)) - 1)
                                          : (__mmask16)0;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 v0 = _mm512_mask_blend_ps(m0, neg, _mm512_mul_ps(a0[r], vscale));
      _mm512_storeu_ps(sc + r * np + j, v0);
      mx[r] = _mm512_max_ps(mx[r], v0);
      if (two) {
        const __m512 v1 = _mm512_mask_blend_ps(m1, neg, _mm512_mul_ps(a1[r], vscale));
        _mm512_storeu_ps(sc + r * np + j + 16, v1);
        mx[r] = _mm512_max_ps(mx[r], v1);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) rmax[r] = _mm512_reduce_max_ps(mx[r]);
}

// In place: row <- exp(row - max) for the row's maximum rmax; returns 1 / sum.
inline float softmax_row(float* row, int64_t np, float rmax) {
  const __m512 m = _mm512_set1_ps(rmax);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < np; j += 16) {
    const __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(row + j), m));
    _mm512_storeu_ps(row + j, e);
    sum = _mm512_add_ps(sum, e);
  }
  return 1.0f / _mm512_reduce_add_ps(sum);
}

// ctx rows i0..i0+R-1 = P V / rowsum for d = 16*DV features.
template <int R, int DV>
inline void pv(const float* sc, int64_t np, const float* inv, const float* v, int64_t ld, int64_t n, float* ctx,
               int64_t ldc, int64_t i0) {
  __m512 acc[R][DV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < DV; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; ++j) {
    __m512 vv[DV];
#pragma GCC unroll 8
    for (int c = 0; c < DV; ++c) vv[c] = _mm512_loadu_ps(v + j * ld + 16 * c);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 p = _mm512_set1_ps(sc[r * np + j]);
#pragma GCC unroll 8
      for (int c = 0; c < DV; ++c) acc[r][c] = _mm512_fmadd_ps(p, vv[c], acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < DV; ++c)
      _mm512_storeu_ps(ctx + (i0 + r) * ldc + 16 * c, _mm512_mul_ps(acc[r][c], _mm512_set1_ps(inv[r])));
}

template <int R, int DV>
void rows(const QK& a, const float* v, int64_t ldv, int64_t i0, int64_t np, int64_t n, int64_t d, float scale,
          float* sc, float* ctx, int64_t ldc) {
  float inv[R], rmax[R];
  scores<R>(a, i0, np, n, d, scale, sc, rmax);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) inv[r] = softmax_row(sc + r * np, np, rmax[r]);
  pv<R, DV>(sc, np, inv, v, ldv, n, ctx, ldc, i0);
}

// Rows in blocks of RB (8 or fewer when DV is large), then the tail one block size at a time.
template <int RB, int DV>
void head(const QK& a, const float* v, int64_t ldv, int64_t np, int64_t n, int64_t d, float scale, float* sc,
          float* ctx, int64_t ldc, int64_t nq) {
  int64_t i = 0;
  for (; i + RB <= nq; i += RB) rows<RB, DV>(a, v, ldv, i, np, n, d, scale, sc, ctx, ldc);
  for (; i + 4 <= nq && RB > 4; i += 4) rows<4, DV>(a, v, ldv, i, np, n, d, scale, sc, ctx, ldc);
  for (; i < nq; ++i) rows<1, DV>(a, v, ldv, i, np, n, d, scale, sc, ctx, ldc);
}

// Head sizes 16..128 in steps of 16 (8 query rows per block while the accumulators fit).
void run_head(const QK& a, const float* v, int64_t ldv, int64_t np, int64_t n, int64_t d, float* sc, float* ctx,
              int64_t ldc, int64_t nq) {
  const float scale = 1.0f / std::sqrt((float)d);
  switch (d / 16) {
    case 1: head<8, 1>(a, v, ldv, np, n, d, scale, sc, ctx, ldc, nq); break;
    case 2: head<8, 2>(a, v, ldv, np, n, d, scale, sc, ctx, ldc, nq); break;
    case 3: head<4, 3>(a, v, ldv, np, n, d, scale, sc, ctx, ldc, nq); break;
    case 4: head<4, 4>(a, v, ldv, np, n, d, scale, sc, ctx, ldc, nq); break;
    case 5: head<2, 5>(a, v, ldv, np, n, d, scale, sc, ctx, ldc, nq); break;
    case 6: head<2, 6>(a, v, ldv, np, n, d, scale, sc, ctx, ldc, nq); break;
    case 7: head<2, 7>(a, v, ldv, np, n, d, scale, sc, ctx, ldc, nq); break;
    default: head<2, 8>(a, v, ldv, np, n, d, scale, sc, ctx, ldc, nq); break;
  }
}

// dst[c * ldd + r] = src[r * lds + c] for r, c < 16, rows r >= nrows read as zeros: one 16 x 16 transpose in
// registers (unpack ps, unpack pd, then two rounds of 128-bit block shuffles).
inline void transpose16(const float* src, int64_t lds, int64_t nrows, float* dst, int64_t ldd) {
  __m512 r[16], t[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = i < nrows ? _mm512_loadu_ps(src + i * lds) : _mm512_setzero_ps();
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // r[4g + c], 128-bit block L: column 4L + c of rows 4g..4g+3
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) {
    const __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]),
                  c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
    r[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    const __m512 s0 = _mm512_shuffle_f32x4(r[c], r[4 + c], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512 s1 = _mm512_shuffle_f32x4(r[c], r[4 + c], _MM_SHUFFLE(3, 1, 3, 1));
    const __m512 s2 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512 s3 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], _MM_SHUFFLE(3, 1, 3, 1));
    _mm512_storeu_ps(dst + (c + 0) * ldd, _mm512_shuffle_f32x4(s0, s2, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_storeu_ps(dst + (c + 4) * ldd, _mm512_shuffle_f32x4(s1, s3, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_storeu_ps(dst + (c + 8) * ldd, _mm512_shuffle_f32x4(s0, s2, _MM_SHUFFLE(3, 1, 3, 1)));
    _mm512_storeu_ps(dst + (c + 12) * ldd, _mm512_shuffle_f32x4(s1, s3, _MM_SHUFFLE(3, 1, 3, 1)));
  }
}
}  // namespace

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
  run_head(QK{q, ld, 1, kt, np}, vc, d, np, n, d, sc, ctx, ldc, nq);
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
  run_head(QK{q, 1, ldt, k, ldt}, vc, d, np, n, d, sc, ctx, ldc, nq);
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
