// AVX-512 attention building blocks for one (sequence, head), shared by f32_attention__avx512.cpp (fp32 scores)
// and u8s8_attention_t__avx512vnni.cpp (int8 scores): include only from files compiled with AVX-512 flags. Internal linkage on
// purpose: each unit keeps its own copy, compiled for its own flags.
//
// Queries go in blocks of R rows: scores for R rows x 32 keys are 2R independent chains over d (one K load per
// 16 keys, one broadcast per row), softmax runs on the R rows side by side with a polynomial exp, then P V for R rows x d
// uses R*DV accumulators with one V load per 16 features and one broadcast of p per row. Independent chains keep
// both FMA pipes busy, where one row at a time would wait on FMA latency.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "avx512_math.h"

using ek::exp512;
using ek::transpose16;

namespace {

// The scores operand A of rows / head / run_head is a QK (fp32 q and K^T) or, in the VNNI unit, a QK8 (int8 q and
// K; u8s8_attention_t__avx512vnni.cpp), each with its own scores<R>(a, ...).
//
// Query element e of row i is q[i * qi + e * qe] (row-major q: qi = row stride, qe = 1; transposed: the other
// way round). Key j's element e is kt[e * ldk + j] (ldk >= np; keys n..np-1 are masked, so any finite values).
struct QK {
  const float* q;
  int64_t qi, qe;
  const float* kt;
  int64_t ldk;
};

// Lanes of the 16 keys j..j+15 that are real (< n): all, the first n - j, or none.
inline __mmask16 key_mask(int64_t n, int64_t j) {
  return n - j >= 16 ? (__mmask16)0xffff : n - j > 0 ? (__mmask16)((1u << (n - j)) - 1) : (__mmask16)0;
}

// The end of a block of scores: rows' dot products a0 (keys j..j+15) and a1 (j+16..j+31, if two) scaled, keys >= n
// masked to -1e30, stored to sc[R][np] and folded into the running row maxima mx.
template <int R>
inline void block_out(const __m512 (&a0)[R], const __m512 (&a1)[R], bool two, int64_t j, int64_t n, int64_t np,
                      __m512 vscale, float* sc, __m512 (&mx)[R]) {
  const __m512 neg = _mm512_set1_ps(-1e30f);
  const __mmask16 m0 = key_mask(n, j), m1 = key_mask(n, j + 16);
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

// Scores of rows i0..i0+R-1 against all keys into sc[R][np], scaled and masked, and each row's maximum into
// rmax[R] (kept in registers on the way, so softmax needs no separate pass for it). ADJ: q transposed (qi = 1, the
// head tasks' layout), so a block's R query values are adjacent floats read from one pointer at fixed offsets; with
// the run-time row stride GCC kept a register per row and spilled loop state to the stack (ADJ: 0.95x the time per
// head).
template <int R, bool ADJ>
inline void scores_qk(const QK& a, int64_t i0, int64_t np, int64_t n, int64_t d, float scale, float* sc,
                      float* rmax) {
  const int64_t ldk = a.ldk, qe = a.qe, qi = ADJ ? 1 : a.qi;
  const __m512 vscale = _mm512_set1_ps(scale), neg = _mm512_set1_ps(-1e30f);
  __m512 mx[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) mx[r] = neg;
  for (int64_t j = 0; j < np; j += 32) {
    const bool two = j + 16 < np;
    __m512 a0[R], a1[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) a0[r] = a1[r] = _mm512_setzero_ps();
    const float* kp = a.kt + j;
    const float* qp = a.q + i0 * qi;
    if (two) {
#pragma GCC unroll 2
      for (int64_t e = 0; e < d; ++e, kp += ldk, qp += qe) {
        const __m512 k0 = _mm512_loadu_ps(kp), k1 = _mm512_loadu_ps(kp + 16);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const __m512 qv = _mm512_set1_ps(qp[r * qi]);
          a0[r] = _mm512_fmadd_ps(qv, k0, a0[r]);
          a1[r] = _mm512_fmadd_ps(qv, k1, a1[r]);
        }
      }
    } else {
      for (int64_t e = 0; e < d; ++e, kp += ldk, qp += qe) {
        const __m512 k0 = _mm512_loadu_ps(kp);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) a0[r] = _mm512_fmadd_ps(_mm512_set1_ps(qp[r * qi]), k0, a0[r]);
      }
    }
    block_out<R>(a0, a1, two, j, n, np, vscale, sc, mx);
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) rmax[r] = _mm512_reduce_max_ps(mx[r]);
}

template <int R>
inline void scores(const QK& a, int64_t i0, int64_t np, int64_t n, int64_t d, float scale, float* sc, float* rmax) {
  if (a.qi == 1)
    scores_qk<R, true>(a, i0, np, n, d, scale, sc, rmax);
  else
    scores_qk<R, false>(a, i0, np, n, d, scale, sc, rmax);
}

// In place, for R rows at once: row r <- exp(row r - rmax[r]), inv[r] = 1 / its sum. 16 keys of every row per step,
// so R exp polynomials and sums run side by side (a row at a time, their latency chains left the pipes idle: one
// head, n = 128, d = 32, one thread, with the ADJ scores: 0.95x the time).
template <int R>
inline void softmax_rows(float* sc, int64_t np, const float* rmax, float* inv) {
  __m512 m[R], sum[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    m[r] = _mm512_set1_ps(rmax[r]);
    sum[r] = _mm512_setzero_ps();
  }
  for (int64_t j = 0; j < np; j += 16) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(sc + r * np + j), m[r]));
      _mm512_storeu_ps(sc + r * np + j, e);
      sum[r] = _mm512_add_ps(sum[r], e);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) inv[r] = 1.0f / _mm512_reduce_add_ps(sum[r]);
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

// The values operand V of rows / head / run_head: a VF (fp32 rows, pv above) or, in the VNNI unit, a V8 (int8, with
// its own softmax_for and pv_rows there, found by argument-dependent lookup when a block is instantiated).
struct VF {
  const float* v;
  int64_t ld;
};

template <int R>
inline void softmax_for(const VF&, float* sc, int64_t np, const float* rmax, float* inv) {
  softmax_rows<R>(sc, np, rmax, inv);
}

template <int R, int DV>
inline void pv_rows(const VF& v, const float* sc, int64_t np, const float* inv, int64_t n, float* ctx, int64_t ldc,
                    int64_t i0) {
  pv<R, DV>(sc, np, inv, v.v, v.ld, n, ctx, ldc, i0);
}

template <int R, int DV, class A, class V>
void rows(const A& a, const V& v, int64_t i0, int64_t np, int64_t n, int64_t d, float scale, float* sc, float* ctx,
          int64_t ldc) {
  float inv[R], rmax[R];
  scores<R>(a, i0, np, n, d, scale, sc, rmax);
  softmax_for<R>(v, sc, np, rmax, inv);
  pv_rows<R, DV>(v, sc, np, inv, n, ctx, ldc, i0);
}

// Rows in blocks of RB (8 or fewer when DV is large), then the tail one block size at a time.
template <int RB, int DV, class A, class V>
void head(const A& a, const V& v, int64_t np, int64_t n, int64_t d, float scale, float* sc, float* ctx, int64_t ldc,
          int64_t nq) {
  int64_t i = 0;
  for (; i + RB <= nq; i += RB) rows<RB, DV>(a, v, i, np, n, d, scale, sc, ctx, ldc);
  for (; i + 4 <= nq && RB > 4; i += 4) rows<4, DV>(a, v, i, np, n, d, scale, sc, ctx, ldc);
  for (; i < nq; ++i) rows<1, DV>(a, v, i, np, n, d, scale, sc, ctx, ldc);
}

// Head sizes 16..128 in steps of 16 (8 query rows per block while the accumulators fit).
template <class A, class V>
void run_head(const A& a, const V& v, int64_t np, int64_t n, int64_t d, float* sc, float* ctx, int64_t ldc,
              int64_t nq) {
  const float scale = 1.0f / std::sqrt((float)d);
  switch (d / 16) {
    case 1: head<8, 1>(a, v, np, n, d, scale, sc, ctx, ldc, nq); break;
    case 2: head<8, 2>(a, v, np, n, d, scale, sc, ctx, ldc, nq); break;
    case 3: head<4, 3>(a, v, np, n, d, scale, sc, ctx, ldc, nq); break;
    case 4: head<4, 4>(a, v, np, n, d, scale, sc, ctx, ldc, nq); break;
    case 5: head<2, 5>(a, v, np, n, d, scale, sc, ctx, ldc, nq); break;
    case 6: head<2, 6>(a, v, np, n, d, scale, sc, ctx, ldc, nq); break;
    case 7: head<2, 7>(a, v, np, n, d, scale, sc, ctx, ldc, nq); break;
    default: head<2, 8>(a, v, np, n, d, scale, sc, ctx, ldc, nq); break;
  }
}

}  // namespace
