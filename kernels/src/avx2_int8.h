// Shared by the AVX2 int8 microkernels (all compiled with -mavx2 -mfma -ffp-contract=off): the epilogue
// (dequantisation, GELU, requantisation), the edges of the 6-row tiles and the int16 ones. Internal linkage on
// purpose, as in transpose_sse.h: each unit keeps its own copy.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "internal.h"

namespace ek {
namespace {

constexpr int TM = (int)kTokenTile;  // tokens per task tile (the padding of transposed operands)

// GELU with the erf approximation of the VNNI path (Abramowitz & Stegun 7.1.28, |erf error| < 1e-6); the
// reciprocal is rcp_ps (12 bits) plus one Newton step.
inline __m256 gelu256(__m256 y) {
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  // clamped at 5.5 (1 - erf below float resolution): keeps p^16 finite and its reciprocal normal (subnormal
  // operands cost Intel cores a microcode assist each)
  const __m256 z = _mm256_min_ps(_mm256_andnot_ps(sign_mask, _mm256_mul_ps(y, _mm256_set1_ps(0.70710678118654752f))),
                                 _mm256_set1_ps(5.5f));
  __m256 p = _mm256_set1_ps(0.0000430638f);
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(0.0002765672f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(0.0001520143f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(0.0092705272f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(0.0422820123f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(0.0705230784f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(1.0f));
  p = _mm256_mul_ps(p, p);
  p = _mm256_mul_ps(p, p);
  p = _mm256_mul_ps(p, p);
  p = _mm256_mul_ps(p, p);  // ^16, at most ~3e13 after the clamp
  __m256 r = _mm256_rcp_ps(p);
  r = _mm256_mul_ps(r, _mm256_fnmadd_ps(p, r, _mm256_set1_ps(2.0f)));
  const __m256 neg = _mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_LT_OQ);
  const __m256 one_plus_erf = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), r), r, neg);
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), y), one_plus_erf);
}

// gelu256 on N vectors in lockstep (each step applied to all N before the next): the same arithmetic in the
// same order per lane, so the results equal gelu256's bit for bit, but N independent ~60-cycle dependency
// chains are laid out side by side for the core (one at a time left most of it waiting on latency).
template <int N>
inline void gelu256_n(__m256 (&y)[N]) {
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  __m256 p[N];
#pragma GCC unroll 8
  for (int i = 0; i < N; ++i) {
    const __m256 z = _mm256_min_ps(_mm256_andnot_ps(sign_mask, _mm256_mul_ps(y[i], _mm256_set1_ps(0.70710678118654752f))),
                                   _mm256_set1_ps(5.5f));
    p[i] = _mm256_fmadd_ps(_mm256_set1_ps(0.0000430638f), z, _mm256_set1_ps(0.0002765672f));
    p[i] = _mm256_fmadd_ps(p[i], z, _mm256_set1_ps(0.0001520143f));
    p[i] = _mm256_fmadd_ps(p[i], z, _mm256_set1_ps(0.0092705272f));
    p[i] = _mm256_fmadd_ps(p[i], z, _mm256_set1_ps(0.0422820123f));
    p[i] = _mm256_fmadd_ps(p[i], z, _mm256_set1_ps(0.0705230784f));
    p[i] = _mm256_fmadd_ps(p[i], z, _mm256_set1_ps(1.0f));
  }
#pragma GCC unroll 8
  for (int i = 0; i < N; ++i) {
    p[i] = _mm256_mul_ps(p[i], p[i]);
    p[i] = _mm256_mul_ps(p[i], p[i]);
    p[i] = _mm256_mul_ps(p[i], p[i]);
    p[i] = _mm256_mul_ps(p[i], p[i]);
  }
#pragma GCC unroll 8
  for (int i = 0; i < N; ++i) {
    __m256 r = _mm256_rcp_ps(p[i]);
    r = _mm256_mul_ps(r, _mm256_fnmadd_ps(p[i], r, _mm256_set1_ps(2.0f)));
    const __m256 neg = _mm256_cmp_ps(y[i], _mm256_setzero_ps(), _CMP_LT_OQ);
    const __m256 one_plus_erf = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), r), r, neg);
    y[i] = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), y[i]), one_plus_erf);
  }
}

// round(v * (1 / s)) + zp, clamped to 0..255 (as floats). A multiply, not a divide: vdivps costs several times
// a multiply and sat on every output; the two differ only where v / s is within an ulp of a .5 tie (one u8 step).
inline __m256 requant_f(__m256 v, const ek_epilogue* ep) {
  __m256 q = _mm256_round_ps(_mm256_mul_ps(v, _mm256_set1_ps(1.0f / ep->out_scale)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  q = _mm256_add_ps(q, _mm256_set1_ps((float)ep->out_zp));
  return _mm256_min_ps(_mm256_max_ps(q, _mm256_setzero_ps()), _mm256_set1_ps(255.f));
}

// 16 int32 (two ymm, values 0..255) -> 16 bytes in order.
inline __m128i pack16_u8(__m256i a, __m256i b) {
  const __m256i w = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), _MM_SHUFFLE(3, 1, 2, 0));
  return _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
}

inline __m256i lanes_below(int cnt) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(cnt), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }

// Epilogue on outputs n0..n0+cnt-1 (cnt <= 8) of one row.
inline void epilogue8(const Gemm& g, __m256i acc, int64_t row, int64_t n0, int cnt) {
  const ek_packed* w = g.w;
  const __m256i mask = lanes_below(cnt);
  const __m256i rs = _mm256_maskload_epi32(w->rowsum.data() + n0, mask);
  acc = _mm256_sub_epi32(acc, _mm256_mullo_epi32(rs, _mm256_set1_epi32(g.ep ? g.ep->x_zp : g.x_zp)));
  if (!g.ep) {
    _mm256_maskstore_epi32(g.acc + row * w->info.n + n0, mask, acc);
    return;
  }
  const ek_epilogue* ep = g.ep;
  __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_mul_ps(_mm256_set1_ps(ep->x_scale),
                                                                  _mm256_maskload_ps(ep->w_scale + n0, mask)));
  if (ep->bias) v = _mm256_add_ps(v, _mm256_maskload_ps(ep->bias + n0, mask));
  if (ep->gelu) v = gelu256(v);
  if (ep->out_u8) {
    const __m256i qi = _mm256_cvtps_epi32(requant_f(v, ep));
    const __m128i p16 = _mm_packus_epi32(_mm256_castsi256_si128(qi), _mm256_extracti128_si256(qi, 1));
    uint8_t* y = static_cast<uint8_t*>(g.y) + row * g.ldy + n0;
    if (cnt == 8) {
      _mm_storel_epi64(reinterpret_cast<__m128i*>(y), _mm_packus_epi16(p16, p16));
    } else {
      alignas(16) uint8_t b[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(b), _mm_packus_epi16(p16, p16));
      std::memcpy(y, b, cnt);
    }
  } else {
    _mm256_maskstore_ps(static_cast<float*>(g.y) + row * g.ldy + n0, mask, v);
  }
}

// The 0-5 rows a 6-row tile loop leaves: tile(row, std::integral_constant<int, R>) on at most 4 rows at a time
// (the intrinsic tiles hold up to 4 rows without spilling).
template <class Tile>
inline void edge_rows(int64_t m, int64_t m1, Tile tile) {
  switch (m1 - m) {
    case 5:
      tile(m, std::integral_constant<int, 4>{});
      tile(m + 4, std::integral_constant<int, 1>{});
      break;
    case 4: tile(m, std::integral_constant<int, 4>{}); break;
    case 3: tile(m, std::integral_constant<int, 3>{}); break;
    case 2: tile(m, std::integral_constant<int, 2>{}); break;
    case 1: tile(m, std::integral_constant<int, 1>{}); break;
    default: break;
  }
}

alignas(32) const int16_t kOnes16[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

inline __m256i ones16() { return _mm256_load_si256(reinterpret_cast<const __m256i*>(kOnes16)); }
}  // namespace
}  // namespace ek
