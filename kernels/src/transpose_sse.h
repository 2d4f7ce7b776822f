// SSE2 helpers shared by the int8 paths that build a transposed activation XT[k][m]: the 16x16 byte transpose,
// the transpose task and one-element quantisation.
#pragma once
#include <emmintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace ek {
// Internal linkage on purpose: TUs built with different target flags each keep their own copy (an inline
// function with external linkage could be merged with a copy compiled for a wider ISA).
namespace {
// 16x16 byte transpose of registers: dst[c][r] = a[r][c], in four unpack stages (8, 16, 32, 64 bits).
inline void transpose16x16_regs(__m128i* a, uint8_t* dst, int64_t lddst) {
  __m128i b[16];
  for (int i = 0; i < 8; ++i) {
    b[2 * i] = _mm_unpacklo_epi8(a[2 * i], a[2 * i + 1]);
    b[2 * i + 1] = _mm_unpackhi_epi8(a[2 * i], a[2 * i + 1]);
  }
  for (int q = 0; q < 4; ++q) {  // groups of 4 rows: (b0,b2) (b1,b3) within each
    const int o = 4 * q;
    a[o] = _mm_unpacklo_epi16(b[o], b[o + 2]);
    a[o + 1] = _mm_unpackhi_epi16(b[o], b[o + 2]);
    a[o + 2] = _mm_unpacklo_epi16(b[o + 1], b[o + 3]);
    a[o + 3] = _mm_unpackhi_epi16(b[o + 1], b[o + 3]);
  }
  for (int h = 0; h < 2; ++h) {  // groups of 8 rows: pair q with q+4
    const int o = 8 * h;
    for (int i = 0; i < 4; ++i) {
      b[o + 2 * i] = _mm_unpacklo_epi32(a[o + i], a[o + 4 + i]);
      b[o + 2 * i + 1] = _mm_unpackhi_epi32(a[o + i], a[o + 4 + i]);
    }
  }
  for (int i = 0; i < 8; ++i) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (2 * i) * lddst), _mm_unpacklo_epi64(b[i], b[8 + i]));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (2 * i + 1) * lddst), _mm_unpackhi_epi64(b[i], b[8 + i]));
  }
}

// One element of ek_quantize_u8, in the same operations: round-half-even(x / scale) + zp, clamped to 0..255.
inline uint8_t quant1(float x, float scale, int32_t zp) {
  const float v = std::nearbyint(x / scale) + (float)zp;
  return (uint8_t)(v < 0.f ? 0.f : (v > 255.f ? 255.f : v));
}

// XT[k][mp] = X[m][k] transposed, tokens m..mp-1 zero. One task = one 64-token tile (mp is a multiple of 64) x
// up to kTransposeCols columns, read row by row: it alone writes its 64-byte pieces of XT rows (whole cache
// lines). Tasks of 16 columns x all tokens walked X down its columns, a new cache line per 16-byte load.
constexpr int64_t kTransposeCols = 256;
struct TransposeCtx {
  const uint8_t* x;
  int64_t ldx, m, k, mp;
  uint8_t* xt;
  int64_t tasks() const { return mp / 64 * ((k + kTransposeCols - 1) / kTransposeCols); }
};

inline void transpose_task(int64_t task, void* p) {
  const TransposeCtx& c = *static_cast<TransposeCtx*>(p);
  const int64_t kchunks = (c.k + kTransposeCols - 1) / kTransposeCols;
  const int64_t mbeg = task / kchunks * 64, mend = std::min(c.mp, mbeg + 64);
  const int64_t kbeg = task % kchunks * kTransposeCols, kend = std::min(c.k, kbeg + kTransposeCols);
  for (int64_t m0 = mbeg; m0 < mend; m0 += 16) {
    for (int64_t k0 = kbeg; k0 < kend; k0 += 16) {
      const int64_t k1 = std::min(kend, k0 + 16);
      if (k1 - k0 == 16) {  // padding tokens (i >= m) as zero bytes
        __m128i a[16];
        for (int i = 0; i < 16; ++i)
          a[i] = m0 + i < c.m ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(c.x + (m0 + i) * c.ldx + k0))
                              : _mm_setzero_si128();
        transpose16x16_regs(a, c.xt + k0 * c.mp + m0, c.mp);
        continue;
      }
      for (int64_t t = k0; t < k1; ++t)
        for (int64_t i = 0; i < 16; ++i) c.xt[t * c.mp + m0 + i] = m0 + i < c.m ? c.x[(m0 + i) * c.ldx + t] : 0;
    }
  }
}

}  // namespace
}  // namespace ek
