// Attention for one (sequence, head) with AVX-512 BF16 dot products (vdpbf16ps: 32 products per instruction
// into 16 fp32 sums, twice the rate of fp32 FMAs). Q, K, V and the softmax probabilities are rounded to
// bf16 (round to nearest even); scores, the softmax itself and all sums stay fp32.
//
// Layouts: a bf16 row of Q or K read as 32-bit words holds feature pairs (2p, 2p+1), so a score block for
// 16 keys is sum_p dpbf16(broadcast(q word p), kt[p][16 keys]) with kt = K's word matrix transposed. For
// P V the pairs run over keys: vt[jp][c] = (v[2jp][c], v[2jp+1][c]), and p's bf16 row gives the matching
// (p[2jp], p[2jp+1]) words. Queries go in blocks of R rows as in the fp32 version. Compiled with
// -mavx512bf16; the engine calls it only when the CPU has AVX512_BF16 and the model asks for it.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "avx512_math.h"
#include "edgekit/kernels.h"
#include "ukernels.h"

using ek::exp512;

namespace {
struct Scratch {  // views of the kernels' per-thread scratch (no std containers in a unit built with ISA flags)
  uint32_t *q, *kt, *vt, *p, *krow;  // bf16 pairs
  float* sc;
};

// 16 fp32 -> 16 bf16 (round to nearest even) as 8 words.
inline __m256i to_bf16(__m512 v) { return (__m256i)_mm512_cvtneps_pbh(v); }

inline __m512 dp(__m512 acc, __m512i a, __m512i b) { return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b); }

// rows [R][d/2] words of q; kt [d/2][np]; sc [R][np] scaled, masked.
template <int R>
inline void scores(const uint32_t* q, int64_t dw, const uint32_t* kt, int64_t np, int64_t n, float scale, float* sc) {
  const __m512 vscale = _mm512_set1_ps(scale), neg = _mm512_set1_ps(-1e30f);
  for (int64_t j = 0; j < np; j += 32) {
    __m512 a0[R], a1[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) a0[r] = a1[r] = _mm512_setzero_ps();
    for (int64_t p = 0; p < dw; ++p) {
      const __m512i k0 = _mm512_loadu_si512(kt + p * np + j);
      const __m512i k1 = _mm512_loadu_si512(kt + p * np + j + 16);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512i qv = _mm512_set1_epi32((int)q[r * dw + p]);
        a0[r] = dp(a0[r], qv, k0);
        a1[r] = dp(a1[r], qv, k1);
      }
    }
    const int64_t left0 = n - j, left1 = n - j - 16;
    const __mmask16 m0 = left0 >= 16 ? (__mmask16)0xffff : left0 > 0 ? (__mmask16)((1u << left0) - 1) : (__mmask16)0;
    const __mmask16 m1 = left1 >= 16 ? (__mmask16)0xffff : left1 > 0 ? (__mmask16)((1u << left1) - 1) : (__mmask16)0;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      _mm512_storeu_ps(sc + r * np + j, _mm512_mask_blend_ps(m0, neg, _mm512_mul_ps(a0[r], vscale)));
      _mm512_storeu_ps(sc + r * np + j + 16, _mm512_mask_blend_ps(m1, neg, _mm512_mul_ps(a1[r], vscale)));
    }
  }
}

// row <- exp(row - max) (fp32 sum), its bf16 copy into pw (np/2 words; masked keys give 0); returns 1/sum.
inline float softmax_row(const float* row, int64_t np, uint32_t* pw) {
  __m512 mx = _mm512_set1_ps(-1e30f);
  for (int64_t j = 0; j < np; j += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(row + j));
  const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < np; j += 16) {
    const __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(row + j), m));
    sum = _mm512_add_ps(sum, e);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(pw + j / 2), to_bf16(e));
  }
  return 1.0f / _mm512_reduce_add_ps(sum);
}

// ctx rows = (P V) / rowsum; p: [R][pw] words, vt: [npairs][d] words (d = 16 DV).
template <int R, int DV>
inline void pv(const uint32_t* p, int64_t pw, const float* inv, const uint32_t* vt, int64_t d, int64_t npairs,
               float* ctx, int64_t ldc, int64_t i0) {
  __m512 acc[R][DV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < DV; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t jp = 0; jp < npairs; ++jp) {
    __m512i vv[DV];
#pragma GCC unroll 8
    for (int c = 0; c < DV; ++c) vv[c] = _mm512_loadu_si512(vt + jp * d + 16 * c);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512i pr = _mm512_set1_epi32((int)p[r * pw + jp]);
#pragma GCC unroll 8
      for (int c = 0; c < DV; ++c) acc[r][c] = dp(acc[r][c], pr, vv[c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < DV; ++c)
      _mm512_storeu_ps(ctx + (i0 + r) * ldc + 16 * c, _mm512_mul_ps(acc[r][c], _mm512_set1_ps(inv[r])));
}

template <int R, int DV>
void rows(Scratch& s, int64_t i0, int64_t dw, int64_t np, int64_t n, float scale, float* ctx, int64_t ldc) {
  scores<R>(s.q + i0 * dw, dw, s.kt, np, n, scale, s.sc);
  float inv[R];
  for (int r = 0; r < R; ++r) inv[r] = softmax_row(s.sc + r * np, np, s.p + r * (np / 2));
  pv<R, DV>(s.p, np / 2, inv, s.vt, 2 * dw, (n + 1) / 2, ctx, ldc, i0);
}

template <int RB, int DV>
void head(Scratch& s, int64_t dw, int64_t np, int64_t n, float scale, float* ctx, int64_t ldc, int64_t nq) {
  int64_t i = 0;
  for (; i + RB <= nq; i += RB) rows<RB, DV>(s, i, dw, np, n, scale, ctx, ldc);
  for (; i + 4 <= nq && RB > 4; i += 4) rows<4, DV>(s, i, dw, np, n, scale, ctx, ldc);
  for (; i < nq; ++i) rows<1, DV>(s, i, dw, np, n, scale, ctx, ldc);
}

// d fp32 values -> d/2 bf16-pair words.
inline void row_to_bf16(const float* x, int64_t d, uint32_t* out) {
  for (int64_t e = 0; e < d; e += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + e / 2), to_bf16(_mm512_loadu_ps(x + e)));
}
}  // namespace

// Same contract as f32_attention__avx512 (d % 16 == 0, d <= 128; query rows 0..nq-1 only).
void ek::bf16_attention__avx512bf16(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t d,
                                   float* ctx, int64_t ldc, int64_t nq) {
  const int64_t np = (n + 31) / 32 * 32, dw = d / 2, npairs = (n + 1) / 2;
  auto u32 = [](int slot, int64_t count) { return static_cast<uint32_t*>(ek_scratch(slot, count * sizeof(uint32_t))); };
  Scratch s{u32(2, n * dw), u32(3, dw * np), u32(4, npairs * d), u32(5, 8 * (np / 2)), u32(6, dw),
            static_cast<float*>(ek_scratch(7, 8 * np * sizeof(float)))};
  std::memset(s.kt, 0, dw * np * sizeof(uint32_t));
  std::memset(s.vt, 0, npairs * d * sizeof(uint32_t));
  for (int64_t j = 0; j < n; ++j) {
    row_to_bf16(q + j * ld, d, s.q + j * dw);
    row_to_bf16(k + j * ld, d, s.krow);
    for (int64_t p = 0; p < dw; ++p) s.kt[p * np + j] = s.krow[p];
  }
  // vt[jp][c] = bf16(v[2jp][c]) | bf16(v[2jp+1][c]) << 16 (a missing odd key is 0). From [a x16 | b x16]
  // (16-bit lanes), element 2i of the result takes a_i (index i) and element 2i+1 takes b_i (index 16 + i).
  const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5,
                                       20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  for (int64_t jp = 0; jp < npairs; ++jp) {
    const float* v0 = v + 2 * jp * ld;
    const bool has1 = 2 * jp + 1 < n;
    for (int64_t c = 0; c < d; c += 16) {
      const __m512 a = _mm512_loadu_ps(v0 + c), b = has1 ? _mm512_loadu_ps(v0 + ld + c) : _mm512_setzero_ps();
      const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(to_bf16(a)), to_bf16(b), 1);
      _mm512_storeu_si512(s.vt + jp * d + c, _mm512_permutexvar_epi16(idx, both));
    }
  }
  const float scale = 1.0f / std::sqrt((float)d);
  switch (d / 16) {
    case 1: head<8, 1>(s, dw, np, n, scale, ctx, ldc, nq); break;
    case 2: head<8, 2>(s, dw, np, n, scale, ctx, ldc, nq); break;
    case 3: head<4, 3>(s, dw, np, n, scale, ctx, ldc, nq); break;
    case 4: head<4, 4>(s, dw, np, n, scale, ctx, ldc, nq); break;
    case 5: head<2, 5>(s, dw, np, n, scale, ctx, ldc, nq); break;
    case 6: head<2, 6>(s, dw, np, n, scale, ctx, ldc, nq); break;
    case 7: head<2, 7>(s, dw, np, n, scale, ctx, ldc, nq); break;
    default: head<2, 8>(s, dw, np, n, scale, ctx, ldc, nq); break;
  }
}
