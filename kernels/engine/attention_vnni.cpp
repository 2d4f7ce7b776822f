// Attention for one (sequence, head) on the engine's transposed q, k, v with the scores Q K^T in int8 on
// vpdpbusd (AVX-512 VNNI); softmax and P V stay fp32 (attention_avx512.h). Compiled with VNNI flags; the engine
// calls it only for attention='int8' on that path.
//
// Per head and sequence, q and k get one symmetric scale each (max |value| / 127 over the head's real tokens):
// k as s8, q as u8 with zero point 128 (vpdpbusd multiplies u8 by s8), so s_ij = sq sk (sum_e qu_ie k_je -
// 128 sum_e k_je) / sqrt(d), the second sum a per-key correction computed once. One vpdpbusd does 16 keys x 4
// features, where the fp32 path does 16 keys x 1 feature per FMA: the scores step has a quarter of the
// instructions. The rounding of q and k moves scores by about (|q| |k| / 127) sqrt(d) / sqrt(12) at most
// per term; see the engine tests for what it does to whole-model outputs.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "../src/transpose_sse.h"
#include "attention_avx512.h"
#include "edgekit/kernels.h"

namespace {

// qb[i * d + e]: query i's feature e as u8 (zero point 128); kq[(g * np + j) * 4 + c]: key j's feature 4g + c as
// s8, 4 features of 16 keys per 64 bytes (what vpdpbusd reads); corr[j] = 128 * sum_e k_je; mul = sq sk / sqrt(d).
struct QK8 {
  const uint8_t* qb;
  const int8_t* kq;
  const int32_t* corr;
  int64_t d;
  float mul;
};

// The int8 counterpart of scores<R>(const QK&, ...): the same blocking (R rows x 32 keys), output and masking.
template <int R>
inline void scores(const QK8& a, int64_t i0, int64_t np, int64_t n, int64_t d, float /*scale: in a.mul*/, float* sc,
                   float* rmax) {
  const __m512 vmul = _mm512_set1_ps(a.mul), neg = _mm512_set1_ps(-1e30f);
  __m512 mx[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) mx[r] = neg;
  for (int64_t j = 0; j < np; j += 32) {
    const bool two = j + 16 < np;
    __m512i a0[R], a1[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) a0[r] = a1[r] = _mm512_setzero_si512();
    for (int64_t g = 0; g < d / 4; ++g) {
      const __m512i k0 = _mm512_loadu_si512(a.kq + (g * np + j) * 4);
      const __m512i k1 = two ? _mm512_loadu_si512(a.kq + (g * np + j + 16) * 4) : _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        int32_t q4;
        std::memcpy(&q4, a.qb + (i0 + r) * d + 4 * g, 4);
        const __m512i qv = _mm512_set1_epi32(q4);
        a0[r] = _mm512_dpbusd_epi32(a0[r], qv, k0);
        if (two) a1[r] = _mm512_dpbusd_epi32(a1[r], qv, k1);
      }
    }
    const __m512i c0 = _mm512_loadu_si512(a.corr + j);
    const __m512i c1 = two ? _mm512_loadu_si512(a.corr + j + 16) : _mm512_setzero_si512();
    __m512 f0[R], f1[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      f0[r] = _mm512_cvtepi32_ps(_mm512_sub_epi32(a0[r], c0));
      f1[r] = _mm512_cvtepi32_ps(_mm512_sub_epi32(a1[r], c1));
    }
    block_out<R>(f0, f1, two, j, n, np, vmul, sc, mx);
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) rmax[r] = _mm512_reduce_max_ps(mx[r]);
}

// max |x| over columns [0, cols) of rows [0, rows) of a transposed block (row stride ld).
inline float absmax_t(const float* x, int64_t ld, int64_t rows, int64_t cols) {
  __m512 m = _mm512_setzero_ps();
  for (int64_t e = 0; e < rows; ++e)
    for (int64_t j = 0; j < cols; j += 16) {
      const __mmask16 k = cols - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (cols - j)) - 1);
      m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_maskz_loadu_ps(k, x + e * ld + j)));
    }
  return _mm512_reduce_max_ps(m);
}

// round(x * inv) clamped to +-127, as 16 int32 lanes.
inline __m512i quant_s(const float* x, __m512 inv) {
  const __m512 lim = _mm512_set1_ps(127.f);
  const __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(x), inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, _mm512_sub_ps(_mm512_setzero_ps(), lim)), lim));
}
}  // namespace

// q, k, v transposed (element e of token j at q[e * ldt + j]; columns n .. n + 15 readable and finite, as for
// ek_attention_head_avx512_t). d % 16 == 0, d <= 128. Query rows 0..nq-1 into ctx (row stride ldc).
void ek_attention_head_vnni_t(const float* q, const float* k, const float* v, int64_t ldt, int64_t n, int64_t d,
                              float* ctx, int64_t ldc, int64_t nq) {
  const int64_t np = (n + 15) / 16 * 16, nqp = (nq + 15) / 16 * 16;
  const float aq = absmax_t(q, ldt, d, nq), ak = absmax_t(k, ldt, d, n);
  const float sq = aq > 0 ? aq / 127.f : 1.f, sk = ak > 0 ? ak / 127.f : 1.f;
  uint8_t* qb = static_cast<uint8_t*>(ek_scratch(5, nqp * d));
  int8_t* kq = static_cast<int8_t*>(ek_scratch(6, np * d));
  int32_t* corr = static_cast<int32_t*>(ek_scratch(7, np * sizeof(int32_t)));
  float* sc = static_cast<float*>(ek_scratch(3, 8 * np * sizeof(float)));
  float* vc = static_cast<float*>(ek_scratch(4, np * d * sizeof(float)));
  // q: 16 features x 16 queries quantised, then a 16 x 16 byte transpose into query rows
  const __m512 iq = _mm512_set1_ps(1.f / sq), ik = _mm512_set1_ps(1.f / sk);
  const __m512i zp = _mm512_set1_epi32(128);
  for (int64_t i0 = 0; i0 < nqp; i0 += 16)
    for (int64_t e0 = 0; e0 < d; e0 += 16) {
      __m128i rows[16];
      for (int c = 0; c < 16; ++c)
        rows[c] = _mm512_cvtepi32_epi8(_mm512_add_epi32(quant_s(q + (e0 + c) * ldt + i0, iq), zp));
      ek::transpose16x16_regs(rows, qb + i0 * d + e0, d);
    }
  // K: 4 features x 16 keys interleaved to 16 keys x 4 bytes; per-key sums by vpdpbusd with ones
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t j0 = 0; j0 < np; j0 += 16) {
    __m512i sum = _mm512_setzero_si512();
    for (int64_t g = 0; g < d / 4; ++g) {
      const float* kr = k + 4 * g * ldt + j0;
      const __m128i r0 = _mm512_cvtepi32_epi8(quant_s(kr, ik)), r1 = _mm512_cvtepi32_epi8(quant_s(kr + ldt, ik)),
                    r2 = _mm512_cvtepi32_epi8(quant_s(kr + 2 * ldt, ik)),
                    r3 = _mm512_cvtepi32_epi8(quant_s(kr + 3 * ldt, ik));
      const __m128i t0 = _mm_unpacklo_epi8(r0, r1), t1 = _mm_unpackhi_epi8(r0, r1), t2 = _mm_unpacklo_epi8(r2, r3),
                    t3 = _mm_unpackhi_epi8(r2, r3);
      int8_t* dst = kq + (g * np + j0) * 4;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm_unpacklo_epi16(t0, t2));       // keys 0..3
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 16), _mm_unpackhi_epi16(t0, t2));  // keys 4..7
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 32), _mm_unpacklo_epi16(t1, t3));  // keys 8..11
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 48), _mm_unpackhi_epi16(t1, t3));  // keys 12..15
      sum = _mm512_dpbusd_epi32(sum, ones, _mm512_loadu_si512(dst));
    }
    _mm512_storeu_si512(corr + j0, _mm512_slli_epi32(sum, 7));
  }
  for (int64_t j0 = 0; j0 < np; j0 += 16)
    for (int64_t e0 = 0; e0 < d; e0 += 16) transpose16(v + e0 * ldt + j0, ldt, 16, vc + j0 * d + e0, d);
  run_head(QK8{qb, kq, corr, d, sq * sk / std::sqrt((float)d)}, vc, d, np, n, d, sc, ctx, ldc, nq);
}
