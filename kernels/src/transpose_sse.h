// SSE2 helpers shared by the int8 paths that build a transposed activation XT[k][m]: the 16x16 byte transpose,
// the transpose task and one-element quantisation.
#pragma once
#include <emmintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "internal.h"

namespace ek {
// Internal linkage on purpose: TUs built with different target flags each keep their own copy (an inline
// function with external linkage could be merged with a copy compiled for a wider ISA).
namespace {
// The first three stages of a 16 x 16 byte transpose in registers (unpacks of 8, 16 and 32 bits), for any vector
// type whose unpacks work within 128-bit lanes (every lane is transposed on its own): U supplies the unpacks of
// that type. a[r] holds row r; afterwards the unpack of 64 bits of b[i] and b[8 + i] gives, low half then high
// half, columns 2i and 2i + 1 (the last stage, done by the callers where they store). a is clobbered.
template <class U, class V>
inline void transpose16x16_stages(V* a, V* b) {
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    b[2 * i] = U::lo8(a[2 * i], a[2 * i + 1]);
    b[2 * i + 1] = U::hi8(a[2 * i], a[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {  // groups of 4 rows: (b0,b2) (b1,b3) within each
    const int o = 4 * q;
    a[o] = U::lo16(b[o], b[o + 2]);
    a[o + 1] = U::hi16(b[o], b[o + 2]);
    a[o + 2] = U::lo16(b[o + 1], b[o + 3]);
    a[o + 3] = U::hi16(b[o + 1], b[o + 3]);
  }
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {  // groups of 8 rows: pair q with q+4
    const int o = 8 * h;
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      b[o + 2 * i] = U::lo32(a[o + i], a[o + 4 + i]);
      b[o + 2 * i + 1] = U::hi32(a[o + i], a[o + 4 + i]);
    }
  }
}

struct SseUnpack {
  static __m128i lo8(__m128i a, __m128i b) { return _mm_unpacklo_epi8(a, b); }
  static __m128i hi8(__m128i a, __m128i b) { return _mm_unpackhi_epi8(a, b); }
  static __m128i lo16(__m128i a, __m128i b) { return _mm_unpacklo_epi16(a, b); }
  static __m128i hi16(__m128i a, __m128i b) { return _mm_unpackhi_epi16(a, b); }
  static __m128i lo32(__m128i a, __m128i b) { return _mm_unpacklo_epi32(a, b); }
  static __m128i hi32(__m128i a, __m128i b) { return _mm_unpackhi_epi32(a, b); }
};

// 16x16 byte transpose of registers: dst[c][r] = a[r][c].
inline void transpose16x16_regs(__m128i* a, uint8_t* dst, int64_t lddst) {
  __m128i b[16];
  transpose16x16_stages<SseUnpack>(a, b);
#pragma GCC unroll 8
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

// The work split of every pass that builds XT[k][mp] (the u8 transpose and the quantise-transposes of each
// path): one task = one 64-token tile (mp is a multiple of 64) x up to kTransposeCols columns, read row by row,
// so a task reads X forward and alone writes its 64-byte pieces of XT rows (whole cache lines). Tasks of 16
// columns x all tokens walked X down its columns, a new cache line per load (fp32 X, K = 1536, VNNI, one thread:
// ~24 cycles per 16 values).
constexpr int64_t kTransposeCols = 256;
inline int64_t transpose_tasks(int64_t mp, int64_t k) { return mp / 64 * ((k + kTransposeCols - 1) / kTransposeCols); }

// Task `task` of that split: rows(i, c) gives token i's 16 bytes for X columns c..c+15 (an __m128i), for real tokens (i < m); padding tokens are zero bytes, in the same 16 x 16 register transpose.
// Columns past the last multiple of 16 go element by element through one(i, c), padding tokens again zero.
// (Blocks with padding tokens stay vectorised: the engine's last layer quantises one token per sequence into a
// 64-token tile, and a scalar loop there took ~5% of a batch-1 run.)
template <class Rows, class One>
inline void transpose_span(int64_t task, int64_t m, int64_t mp, int64_t k, uint8_t* xt, int64_t ldxt, Rows rows,
                           One one) {
  const int64_t kchunks = (k + kTransposeCols - 1) / kTransposeCols;
  const int64_t mbeg = task / kchunks * 64, mend = std::min(mp, mbeg + 64);
  const int64_t kbeg = task % kchunks * kTransposeCols, kend = std::min(k, kbeg + kTransposeCols);
  // Columns outer, tokens inner: the 4 transposes of a 16-column strip fill their 16 XT lines (64 tokens) one
  // after the other, so each line is complete while it is in L1, and the 16 row addresses stay in registers.
  for (int64_t k0 = kbeg; k0 < kend; k0 += 16) {
    for (int64_t m0 = mbeg; m0 < mend; m0 += 16) {
      const int64_t k1 = std::min(kend, k0 + 16);
      if (k1 - k0 == 16) {
        __m128i a[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) a[i] = m0 + i < m ? rows(m0 + i, k0) : _mm_setzero_si128();
        transpose16x16_regs(a, xt + k0 * ldxt + m0, ldxt);
        continue;
      }
      for (int64_t t = k0; t < k1; ++t)
        for (int64_t i = m0; i < m0 + 16; ++i) xt[t * ldxt + i] = i < m ? one(i, t) : 0;
    }
  }
}

// Row stride for an XT the kernels build themselves: mp plus one cache line when mp is an even number of lines.
// The 4x1 kernels gather one 64-byte line per kept column per 64-token tile; at a stride of 2^j lines those lines
// fall into 1/2^j of L1's 64 sets (mp = 128: half of them, 24 KB of a 48 KB L1 for K = 384), so a tile's rows
// evict each other. (The native engine's transposed buffers use the same rule.)
inline int64_t xt_stride(int64_t mp) { return (mp / 64) % 2 == 0 ? mp + 64 : mp; }

// XT[k][ldxt] = X[m][k] transposed, tokens m..mp-1 zero (ldxt >= mp).
struct TransposeCtx {
  const uint8_t* x;
  int64_t ldx, m, k, mp;
  uint8_t* xt;
  int64_t ldxt;
  int64_t tasks() const { return transpose_tasks(mp, k); }
};

inline void transpose_task(int64_t task, void* p) {
  const TransposeCtx& c = *static_cast<TransposeCtx*>(p);
  transpose_span(
      task, c.m, c.mp, c.k, c.xt, c.ldxt,
      [&](int64_t i, int64_t col) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(c.x + i * c.ldx + col)); },
      [&](int64_t i, int64_t col) { return c.x[i * c.ldx + col]; });
}

// The fused quantise + transpose of x [m][k] (fp32) into XT[k][ldxt] (u8, tokens m..mp-1 zero): each ISA's task is a
// transpose_span whose rows(i, c) quantises 16 values.
struct QuantTCtx {
  const float* x;
  int64_t m, k, ldx, mp, ldxt;
  float scale;
  int32_t zp;
  uint8_t* xt;
};

template <void (*Task)(int64_t task, void* ctx)>
void quantize_t(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* xt, int64_t ldxt) {
  QuantTCtx c{x, m, k, ldx, (m + kTokenTile - 1) / kTokenTile * kTokenTile, ldxt, scale, zp, xt};
  parallel_for(transpose_tasks(c.mp, k), Task, &c);
}
}  // namespace
}  // namespace ek
