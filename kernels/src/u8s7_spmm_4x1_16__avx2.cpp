// AVX2 int8 GEMM, 4x1 block-sparse, for 7-bit weights (every weight in [-64, 64]): register tiles of 4 outputs x
// 16 tokens on vpmaddubsw + vpmaddwd(ones) + vpaddd (exact: see u8s7_gemm_6x16__avx2). The kept columns come in
// quads (pack_4x1_quads, the VNNI layout) whose 16-token XT rows are interleaved into (x[t,c0..c3]) 32-bit lanes.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "spmm_4x1_16__avx2.h"
#include "ukernels.h"

namespace ek {
namespace {

// 16 tokens of XT rows c0..c3 as two ymm of (x[t,c0], x[t,c1], x[t,c2], x[t,c3]) bytes per 32-bit lane:
// x0 holds tokens 0-3 | 8-11, x1 tokens 4-7 | 12-15 (in-lane shuffles only; the epilogue restores order).
inline void quad_x(const uint8_t* a, const uint8_t* b, const uint8_t* c, const uint8_t* d, __m256i& x0, __m256i& x1) {
  const __m256i va = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a)));
  const __m256i vb = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b)));
  const __m256i vc = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)));
  const __m256i vd = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(d)));
  const __m256i ab = _mm256_blend_epi32(_mm256_unpacklo_epi8(va, vb), _mm256_unpackhi_epi8(va, vb), 0xF0);
  const __m256i cd = _mm256_blend_epi32(_mm256_unpacklo_epi8(vc, vd), _mm256_unpackhi_epi8(vc, vd), 0xF0);
  x0 = _mm256_unpacklo_epi16(ab, cd);
  x1 = _mm256_unpackhi_epi16(ab, cd);
}

// One quad of the 4x1 kernel: acc[i][h] += vpmaddwd(vpmaddubsw(x_h, broadcast(w[i])), ones) for the 4 outputs,
// in one asm block so that the 8 accumulators stay in fixed registers.
inline void quad_step(__m256i& a00, __m256i& a01, __m256i& a10, __m256i& a11, __m256i& a20, __m256i& a21, __m256i& a30,
                      __m256i& a31, __m256i x0, __m256i x1, __m256i ones, const int8_t* w) {
  __m256i wv, t0, t1;
#define EK_OUT7(OFF, A0, A1)                     \
  "vpbroadcastd " OFF "(%[w]), %[wv]\n\t"        \
  "vpmaddubsw %[wv], %[x0], %[t0]\n\t"           \
  "vpmaddubsw %[wv], %[x1], %[t1]\n\t"           \
  "vpmaddwd %[o], %[t0], %[t0]\n\t"              \
  "vpmaddwd %[o], %[t1], %[t1]\n\t"              \
  "vpaddd %[t0], %[" A0 "], %[" A0 "]\n\t"       \
  "vpaddd %[t1], %[" A1 "], %[" A1 "]\n\t"
  asm(EK_OUT7("0", "a00", "a01") EK_OUT7("4", "a10", "a11") EK_OUT7("8", "a20", "a21") EK_OUT7("12", "a30", "a31")
      : [a00] "+x"(a00), [a01] "+x"(a01), [a10] "+x"(a10), [a11] "+x"(a11), [a20] "+x"(a20), [a21] "+x"(a21),
        [a30] "+x"(a30), [a31] "+x"(a31), [wv] "=&x"(wv), [t0] "=&x"(t0), [t1] "=&x"(t1)
      : [x0] "x"(x0), [x1] "x"(x1), [o] "x"(ones), [w] "r"(w), "m"(*reinterpret_cast<const int8_t(*)[16]>(w)));
#undef EK_OUT7
}

// The fp32 values of one block-row tile, v[2i + h] = output 4r+i, token group h (the quad kernel's token order:
// h = 0 holds tokens 0-3 | 8-11, h = 1 tokens 4-7 | 12-15), GELU applied when asked, to all 8 vectors in
// lockstep. Multiply then add (no fmadd): the same two roundings as sparse_epilogue and the reference. Outputs
// past n are left zero.
inline void dequant7(const Gemm& g, const __m256i (&acc)[4][2], int64_t r, int nout, __m256 (&v)[8]) {
  const ek_packed* w = g.w;
  const ek_epilogue* ep = g.ep;
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    if (i >= nout) {
      v[2 * i] = v[2 * i + 1] = _mm256_setzero_ps();
      continue;
    }
    const int64_t j = 4 * r + i;
    const __m256i corr = _mm256_set1_epi32(ep->x_zp * w->rowsum[j]);
    const __m256 s = _mm256_set1_ps(ep->x_scale * ep->w_scale[j]);
    for (int h = 0; h < 2; ++h) {
      v[2 * i + h] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(acc[i][h], corr)), s);
      if (ep->bias) v[2 * i + h] = _mm256_add_ps(v[2 * i + h], _mm256_set1_ps(ep->bias[j]));
    }
  }
  if (ep->gelu) gelu256_n<8>(v);
}

// Epilogue of one block-row into a transposed y (output j's tokens contiguous). For u8, packus_epi32(q0, q1)
// puts the quad kernel's token order right by itself (0-3, 4-7 | 8-11, 12-15); for fp32 the halves are stored
// where they belong. Tokens past m land in y's padding columns (as in sparse_epilogue).
void sparse7_epilogue_t(const Gemm& g, const __m256i (&acc)[4][2], int64_t r, int64_t m0) {
  const ek_epilogue* ep = g.ep;
  const int nout = (int)std::min<int64_t>(4, g.w->info.n - 4 * r);
  __m256 v[8];
  dequant7(g, acc, r, nout, v);
  for (int i = 0; i < nout; ++i) {
    const int64_t j = 4 * r + i;
    if (ep->out_u8) {
      const __m256i p16 = _mm256_packus_epi32(_mm256_cvtps_epi32(requant_f(v[2 * i], ep)),
                                              _mm256_cvtps_epi32(requant_f(v[2 * i + 1], ep)));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint8_t*>(g.y) + j * g.ldy + m0),
                       _mm_packus_epi16(_mm256_castsi256_si128(p16), _mm256_extracti128_si256(p16, 1)));
    } else {
      float* y = static_cast<float*>(g.y) + j * g.ldy + m0;
      _mm256_storeu2_m128(y + 8, y, v[2 * i]);
      _mm256_storeu2_m128(y + 12, y + 4, v[2 * i + 1]);
    }
  }
}

// Epilogue of a full block-row (4 outputs) into a plain fp32 y (a token's 4 outputs contiguous; the QKV
// projection's layout). A 4x4 transpose inside each 128-bit lane of the 4 outputs' vectors gives, per lane,
// one token's 4 values: tokens k | 8+k from group 0 and 4+k | 12+k from group 1, each stored straight to its
// row (rows past m are skipped).
void sparse7_epilogue_f32(const Gemm& g, const __m256i (&acc)[4][2], int64_t r, int64_t m0) {
  __m256 v[8];
  dequant7(g, acc, r, 4, v);
  float* y = static_cast<float*>(g.y) + 4 * r;
  for (int h = 0; h < 2; ++h) {
    const __m256 t0 = _mm256_unpacklo_ps(v[h], v[2 + h]), t1 = _mm256_unpackhi_ps(v[h], v[2 + h]);
    const __m256 t2 = _mm256_unpacklo_ps(v[4 + h], v[6 + h]), t3 = _mm256_unpackhi_ps(v[4 + h], v[6 + h]);
    const __m256 rows[4] = {_mm256_shuffle_ps(t0, t2, 0x44), _mm256_shuffle_ps(t0, t2, 0xEE),
                            _mm256_shuffle_ps(t1, t3, 0x44), _mm256_shuffle_ps(t1, t3, 0xEE)};
    for (int k = 0; k < 4; ++k) {
      const int64_t lo = m0 + 4 * h + k, hi = lo + 8;  // the tokens in lane 0 and lane 1
      if (lo < g.m) _mm_storeu_ps(y + lo * g.ldy, _mm256_castps256_ps128(rows[k]));
      if (hi < g.m) _mm_storeu_ps(y + hi * g.ldy, _mm256_extractf128_ps(rows[k], 1));
    }
  }
}

// Out of line (called by spmm_4x1's task), as when both 4x1 kernels shared one file and one task.
__attribute__((noinline)) void sparse7_tile(const Gemm& g, const uint8_t* xt, int64_t ldxt, int64_t r, int64_t m0) {
  const ek_packed* w = g.w;
  __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
  const __m256i ones = ones16();
  const int64_t q0 = w->row_ptr[r], q1 = w->row_ptr[r + 1];
  const int32_t* cols = w->quad_cols.data();
  const int8_t* wq = w->quad_w.data();
  const uint8_t* base = xt + m0;
  int64_t q = q0;
  for (; q + 2 <= q1; q += 2) {  // two quads per pass: independent gathers the core can overlap
    const int32_t* c = cols + 4 * q;
    __m256i x0, x1, x2, x3;
    quad_x(base + (int64_t)c[0] * ldxt, base + (int64_t)c[1] * ldxt, base + (int64_t)c[2] * ldxt,
           base + (int64_t)c[3] * ldxt, x0, x1);
    quad_x(base + (int64_t)c[4] * ldxt, base + (int64_t)c[5] * ldxt, base + (int64_t)c[6] * ldxt,
           base + (int64_t)c[7] * ldxt, x2, x3);
    quad_step(a00, a01, a10, a11, a20, a21, a30, a31, x0, x1, ones, wq + 16 * q);
    quad_step(a00, a01, a10, a11, a20, a21, a30, a31, x2, x3, ones, wq + 16 * q + 16);
  }
  for (; q < q1; ++q) {
    const int32_t* c = cols + 4 * q;
    __m256i x0, x1;
    quad_x(base + (int64_t)c[0] * ldxt, base + (int64_t)c[1] * ldxt, base + (int64_t)c[2] * ldxt,
           base + (int64_t)c[3] * ldxt, x0, x1);
    quad_step(a00, a01, a10, a11, a20, a21, a30, a31, x0, x1, ones, wq + 16 * q);
  }
  if (g.y_t && g.ep) {  // the engine's chained layout: no reordering needed, see sparse7_epilogue_t
    const __m256i acc[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
    sparse7_epilogue_t(g, acc, r, m0);
    return;
  }
  if (g.ep && !g.ep->out_u8 && 4 * r + 4 <= w->info.n) {  // plain fp32 y, a full block-row
    const __m256i acc[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
    sparse7_epilogue_f32(g, acc, r, m0);
    return;
  }
  // Back to token order: (0-3 | 8-11), (4-7 | 12-15) -> (0-7), (8-15).
  const __m256i acc[4][2] = {
      {_mm256_permute2x128_si256(a00, a01, 0x20), _mm256_permute2x128_si256(a00, a01, 0x31)},
      {_mm256_permute2x128_si256(a10, a11, 0x20), _mm256_permute2x128_si256(a10, a11, 0x31)},
      {_mm256_permute2x128_si256(a20, a21, 0x20), _mm256_permute2x128_si256(a20, a21, 0x31)},
      {_mm256_permute2x128_si256(a30, a31, 0x20), _mm256_permute2x128_si256(a30, a31, 0x31)}};
  sparse_epilogue(g, acc, r, m0);
}
}  // namespace

void u8s7_spmm_4x1_16__avx2(const Gemm& g) { spmm_4x1<sparse7_tile>(g); }
}  // namespace ek
