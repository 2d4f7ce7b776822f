// Attention for one (sequence, head) on the engine's transposed q, k, v with both products, Q K^T and P V, in int8
// on vpdpbusd (AVX-512 VNNI); softmax stays fp32 (f32_attention__avx512.h). Compiled with VNNI flags; the engine calls
// it only for attention='int8' on that path.
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

#include "edgekit/kernels.h"
#include "f32_attention__avx512.h"
#include "transpose_sse.h"
#include "ukernels.h"

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
        ek::dpbusd(a0[r], qv, k0);
        if (two) ek::dpbusd(a1[r], qv, k1);
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

// P V in int8: a row's exp(s - max) (in (0, 1], the row maximum 1) as u8, round(255 e), and V as s8 per feature
// (symmetric: max |v| over the head's real tokens / 127). vpdpbusd sums 4 keys per 32-bit lane, so V is kept as
// words of 4 consecutive keys' bytes, vw[g * d + c] = feature c of keys 4g..4g+3; row r's output is
// (sum_j pq_rj vq_jc) sv_c / sum_j pq_rj, so the weights it applies sum to exactly 1. Keys >= n have e = 0 -> 0.
struct V8 {
  const int32_t* vw;  // [np / 4][d] words
  const float* sv;    // [d] per-feature scales
  uint8_t* pq;        // scratch: R rows of np bytes
};

// Softmax straight to u8 for the int8 P V: pq[r][j] = round(255 exp(s_rj - max_r)), inv[r] = 1 / sum_j pq[r][j].
// 8-bit probabilities need far less than exp512's 2e-7: one-constant range reduction and a degree-4 Taylor
// polynomial (relative error < 5e-5 on |r| <= ln2/2) with 255 folded into its coefficients; no upper clamp (the
// argument is <= 0). One pass: the fp32 exponentials are never stored.
template <int R>
inline void softmax_for(const V8& v, float* sc, int64_t np, const float* rmax, float* inv) {
  const __m512 lo = _mm512_set1_ps(-87.f), l2e = _mm512_set1_ps(1.44269504088896341f),
               ln2 = _mm512_set1_ps(0.693147180559945f);
  const __m512 c4 = _mm512_set1_ps(255.f / 24), c3 = _mm512_set1_ps(255.f / 6), c2 = _mm512_set1_ps(255.f / 2),
               c1 = _mm512_set1_ps(255.f);
  __m512 m[R];
  __m512i tot[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    m[r] = _mm512_set1_ps(rmax[r]);
    tot[r] = _mm512_setzero_si512();
  }
  for (int64_t j = 0; j < np; j += 16) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 x = _mm512_max_ps(_mm512_sub_ps(_mm512_loadu_ps(sc + r * np + j), m[r]), lo);
      const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, l2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      const __m512 f = _mm512_fnmadd_ps(k, ln2, x);
      __m512 p = _mm512_fmadd_ps(c4, f, c3);
      p = _mm512_fmadd_ps(p, f, c2);
      p = _mm512_fmadd_ps(p, f, c1);
      p = _mm512_fmadd_ps(p, f, c1);
      const __m512i q = _mm512_cvtps_epi32(_mm512_scalef_ps(p, k));
      tot[r] = _mm512_add_epi32(tot[r], q);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(v.pq + r * np + j), _mm512_cvtusepi32_epi8(q));
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) inv[r] = 1.0f / (float)_mm512_reduce_add_epi32(tot[r]);
}

// P V from softmax_for's u8 rows and inverse sums.
template <int R, int DV>
inline void pv_rows(const V8& v, const float* /*sc*/, int64_t np, const float* inv, int64_t /*n*/, float* ctx,
                    int64_t ldc, int64_t i0) {
  constexpr int64_t d = 16 * DV;
  __m512i acc[R][DV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < DV; ++c) acc[r][c] = _mm512_setzero_si512();
  for (int64_t g = 0; g < np / 4; ++g) {
    __m512i vv[DV];
#pragma GCC unroll 8
    for (int c = 0; c < DV; ++c) vv[c] = _mm512_loadu_si512(v.vw + g * d + 16 * c);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      int32_t p4;
      std::memcpy(&p4, v.pq + r * np + 4 * g, 4);
      const __m512i pv = _mm512_set1_epi32(p4);
#pragma GCC unroll 8
      for (int c = 0; c < DV; ++c) ek::dpbusd(acc[r][c], pv, vv[c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < DV; ++c)
      _mm512_storeu_ps(ctx + (i0 + r) * ldc + 16 * c,
                       _mm512_mul_ps(_mm512_cvtepi32_ps(acc[r][c]),
                                     _mm512_mul_ps(_mm512_loadu_ps(v.sv + 16 * c), _mm512_set1_ps(inv[r]))));
}

// max |x| over columns [0, cols) of rows [0, rows) of a transposed block (row stride ld). Four running maxima:
// with one, the loop waited on its latency chain (a quarter of the head's int8 set-up time).
inline float absmax_t(const float* x, int64_t ld, int64_t rows, int64_t cols) {
  __m512 m[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  const int64_t full = cols / 64 * 64;
  for (int64_t e = 0; e < rows; ++e) {
    const float* xe = x + e * ld;
    for (int64_t j = 0; j < full; j += 64)
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) m[u] = _mm512_max_ps(m[u], _mm512_abs_ps(_mm512_loadu_ps(xe + j + 16 * u)));
    for (int64_t j = full; j < cols; j += 16)
      m[0] = _mm512_max_ps(m[0], _mm512_abs_ps(_mm512_maskz_loadu_ps(key_mask(cols, j), xe + j)));
  }
  return _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m[0], m[1]), _mm512_max_ps(m[2], m[3])));
}

// round(x * inv) as 16 int32 lanes (lanes outside m read nothing and are 0). No clamp: inv = 127 / max |x| over
// the very values quantised, so |x * inv| <= 127 up to rounding, which cannot reach 127.5.
inline __m512i quant_s_masked(const float* x, __mmask16 m, __m512 inv) {
  return _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x), inv));
}
}  // namespace

// q, k, v transposed (element e of token j at q[e * ldt + j]; columns n .. n + 15 readable and finite, as for
// f32_attention_t__avx512). d % 16 == 0, d <= 128. Query rows 0..nq-1 into ctx (row stride ldc).
void ek::u8s8_attention_t__avx512vnni(const float* q, const float* k, const float* v, int64_t ldt, int64_t n,
                                      int64_t d, float* ctx, int64_t ldc, int64_t nq) {
  const int64_t np = (n + 15) / 16 * 16, nqp = (nq + 15) / 16 * 16;
  const float aq = absmax_t(q, ldt, d, nq), ak = absmax_t(k, ldt, d, n);
  const float sq = aq > 0 ? aq / 127.f : 1.f, sk = ak > 0 ? ak / 127.f : 1.f;
  uint8_t* qb = static_cast<uint8_t*>(ek_scratch(5, nqp * d));
  int8_t* kq = static_cast<int8_t*>(ek_scratch(6, np * d));
  int32_t* corr = static_cast<int32_t*>(ek_scratch(7, np * sizeof(int32_t)));
  float* sc = static_cast<float*>(ek_scratch(3, 8 * np * sizeof(float)));
  // slot 4: V as words [np64 / 4][d], its s8 feature rows [d][np64], the d scales, 8 rows of u8 probabilities
  const int64_t np64 = (n + 63) / 64 * 64, gw = np64 / 4;
  int32_t* vw_buf = static_cast<int32_t*>(ek_scratch(4, 2 * d * np64 + d * sizeof(float) + 8 * np));
  // q: 16 features x 16 queries quantised, then a 16 x 16 byte transpose into query rows
  const __m512 iq = _mm512_set1_ps(1.f / sq), ik = _mm512_set1_ps(1.f / sk);
  const __m512i zp = _mm512_set1_epi32(128);
  for (int64_t i0 = 0; i0 < nqp; i0 += 16)
    for (int64_t e0 = 0; e0 < d; e0 += 16) {
      __m128i rows[16];
      const __mmask16 mq = key_mask(nq, i0);  // rows >= nq (not in the scale, not computed): zero point only
      for (int c = 0; c < 16; ++c)
        rows[c] = _mm512_cvtepi32_epi8(_mm512_add_epi32(quant_s_masked(q + (e0 + c) * ldt + i0, mq, iq), zp));
      ek::transpose16x16_regs(rows, qb + i0 * d + e0, d);
    }
  // K: 4 features x 16 keys interleaved to 16 keys x 4 bytes; per-key sums by vpdpbusd with ones
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t j0 = 0; j0 < np; j0 += 16) {
    __m512i sum = _mm512_setzero_si512();
    const __mmask16 mk = key_mask(n, j0);  // keys >= n (masked in the scores) as 0
    for (int64_t g = 0; g < d / 4; ++g) {
      const float* kr = k + 4 * g * ldt + j0;
      const __m128i r0 = _mm512_cvtepi32_epi8(quant_s_masked(kr, mk, ik)),
                    r1 = _mm512_cvtepi32_epi8(quant_s_masked(kr + ldt, mk, ik)),
                    r2 = _mm512_cvtepi32_epi8(quant_s_masked(kr + 2 * ldt, mk, ik)),
                    r3 = _mm512_cvtepi32_epi8(quant_s_masked(kr + 3 * ldt, mk, ik));
      const __m128i t0 = _mm_unpacklo_epi8(r0, r1), t1 = _mm_unpackhi_epi8(r0, r1), t2 = _mm_unpacklo_epi8(r2, r3),
                    t3 = _mm_unpackhi_epi8(r2, r3);
      int8_t* dst = kq + (g * np + j0) * 4;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm_unpacklo_epi16(t0, t2));       // keys 0..3
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 16), _mm_unpackhi_epi16(t0, t2));  // keys 4..7
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 32), _mm_unpacklo_epi16(t1, t3));  // keys 8..11
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 48), _mm_unpackhi_epi16(t1, t3));  // keys 12..15
      ek::dpbusd(sum, ones, _mm512_loadu_si512(dst));
    }
    _mm512_storeu_si512(corr + j0, _mm512_slli_epi32(sum, 7));
  }
  // V: feature rows quantised to s8 (keys >= n zero, up to a multiple of 64 keys), then 16 x 16 transposes of
  // their 32-bit words (4 keys each) into vw
  int8_t* vrow = reinterpret_cast<int8_t*>(vw_buf + gw * d);
  float* sv = reinterpret_cast<float*>(vrow + d * np64);
  uint8_t* pq = reinterpret_cast<uint8_t*>(sv + d);
  for (int64_t e = 0; e < d; ++e) {
    const float a = absmax_t(v + e * ldt, ldt, 1, n);
    sv[e] = a > 0 ? a / 127.f : 1.f;
    const __m512 inv = _mm512_set1_ps(1.f / sv[e]);
    for (int64_t j0 = 0; j0 < np64; j0 += 16) {
      const __mmask16 m = key_mask(n, j0);
      const __m512i q = m ? quant_s_masked(v + e * ldt + j0, m, inv) : _mm512_setzero_si512();
      _mm_storeu_si128(reinterpret_cast<__m128i*>(vrow + e * np64 + j0), _mm512_cvtepi32_epi8(q));
    }
  }
  for (int64_t e0 = 0; e0 < d; e0 += 16)
    for (int64_t g0 = 0; g0 < gw; g0 += 16)
      transpose16(reinterpret_cast<const float*>(vrow) + e0 * gw + g0, gw, 16, reinterpret_cast<float*>(vw_buf + g0 * d + e0), d);
  run_head(QK8{qb, kq, corr, d, sq * sk / std::sqrt((float)d)}, V8{vw_buf, sv, pq}, np, n, d, sc, ctx, ldc, nq);
}
