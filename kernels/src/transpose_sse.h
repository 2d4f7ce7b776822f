// SSE2 16x16 byte transpose shared by the int8 paths that build a transposed activation XT[k][m].
#pragma once
#include <emmintrin.h>

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

}  // namespace
}  // namespace ek
