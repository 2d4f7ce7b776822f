// AVX2 int8 GEMM, 4x1 block-sparse, exact for any int8 weights: register tiles of 4 outputs x 16 tokens.
//
// X transposed XT[k][m] (u8). A block-row's kept columns come in pairs (c0, c1) (pack_4x1_pairs): interleaving
// 16 tokens of XT rows c0 and c1 and widening gives, in each 32-bit lane, (x[t,c0], x[t,c1]) for 8 tokens in
// order; each such ymm feeds 4 vpmaddwd, one per output with that output's two weights broadcast (exact, as in
// u8s8_gemm_6x16__avx2). Accumulators stay in token order.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "spmm_4x1_16__avx2.h"
#include "ukernels.h"

namespace ek {
namespace {

// One column pair of the 4x1 kernel: acc[i][h] += vpmaddwd(x_h, broadcast(w[i])) for the 4 outputs i and the
// two 8-token halves h, in one asm block so that the 8 accumulators stay in fixed registers.
inline void pair_step(__m256i& a00, __m256i& a01, __m256i& a10, __m256i& a11, __m256i& a20, __m256i& a21, __m256i& a30,
                      __m256i& a31, __m256i lo, __m256i hi, const int32_t* w) {
  __m256i wv, t;
  asm("vpbroadcastd (%[w]), %[wv]\n\t"
      "vpmaddwd %[wv], %[lo], %[t]\n\t"
      "vpaddd %[t], %[a00], %[a00]\n\t"
      "vpmaddwd %[wv], %[hi], %[t]\n\t"
      "vpaddd %[t], %[a01], %[a01]\n\t"
      "vpbroadcastd 4(%[w]), %[wv]\n\t"
      "vpmaddwd %[wv], %[lo], %[t]\n\t"
      "vpaddd %[t], %[a10], %[a10]\n\t"
      "vpmaddwd %[wv], %[hi], %[t]\n\t"
      "vpaddd %[t], %[a11], %[a11]\n\t"
      "vpbroadcastd 8(%[w]), %[wv]\n\t"
      "vpmaddwd %[wv], %[lo], %[t]\n\t"
      "vpaddd %[t], %[a20], %[a20]\n\t"
      "vpmaddwd %[wv], %[hi], %[t]\n\t"
      "vpaddd %[t], %[a21], %[a21]\n\t"
      "vpbroadcastd 12(%[w]), %[wv]\n\t"
      "vpmaddwd %[wv], %[lo], %[t]\n\t"
      "vpaddd %[t], %[a30], %[a30]\n\t"
      "vpmaddwd %[wv], %[hi], %[t]\n\t"
      "vpaddd %[t], %[a31], %[a31]"
      : [a00] "+x"(a00), [a01] "+x"(a01), [a10] "+x"(a10), [a11] "+x"(a11), [a20] "+x"(a20), [a21] "+x"(a21),
        [a30] "+x"(a30), [a31] "+x"(a31),
        [wv] "=&x"(wv), [t] "=&x"(t)
      : [lo] "x"(lo), [hi] "x"(hi), [w] "r"(w), "m"(*reinterpret_cast<const int32_t(*)[4]>(w)));
}

// Out of line (called by spmm_4x1's task), as when both 4x1 kernels shared one file and one task.
__attribute__((noinline)) void sparse_tile(const Gemm& g, const uint8_t* xt, int64_t ldxt, int64_t r, int64_t m0) {
  const ek_packed* w = g.w;
  // Accumulators as plain locals (an array here would be stored to memory on every pass of the loop).
  __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
  const int64_t p0 = w->pair_ptr[r], p1 = w->pair_ptr[r + 1];
  const int32_t* cols = w->pair_cols.data();
  const int32_t* wp = w->pair_w.data();
  int64_t p = p0;
  for (; p + 2 <= p1; p += 2) {  // two pairs per pass: their loads are independent, which the core can overlap
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xt + (int64_t)cols[2 * p] * ldxt + m0));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xt + (int64_t)cols[2 * p + 1] * ldxt + m0));
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xt + (int64_t)cols[2 * p + 2] * ldxt + m0));
    const __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xt + (int64_t)cols[2 * p + 3] * ldxt + m0));
    const __m256i lo = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(a, b));
    const __m256i hi = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(a, b));
    const __m256i lo2 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(c, d));
    const __m256i hi2 = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(c, d));
    pair_step(a00, a01, a10, a11, a20, a21, a30, a31, lo, hi, wp + 4 * p);
    pair_step(a00, a01, a10, a11, a20, a21, a30, a31, lo2, hi2, wp + 4 * p + 4);
  }
  for (; p < p1; ++p) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xt + (int64_t)cols[2 * p] * ldxt + m0));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xt + (int64_t)cols[2 * p + 1] * ldxt + m0));
    // (x[t,c0], x[t,c1]) as two int16 per 32-bit lane: tokens 0..7 and 8..15.
    const __m256i lo = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(a, b));
    const __m256i hi = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(a, b));
    pair_step(a00, a01, a10, a11, a20, a21, a30, a31, lo, hi, wp + 4 * p);
  }
  const __m256i acc[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
  sparse_epilogue(g, acc, r, m0);
}
}  // namespace

void u8s8_spmm_4x1_16__avx2(const Gemm& g) { spmm_4x1<sparse_tile>(g); }
}  // namespace ek
