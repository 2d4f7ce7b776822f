// AVX-512 VNNI int8 GEMM, 4x1 block-sparse: tiles of 4 outputs x 64 tokens (16 zmm accumulators).
//
// X is transposed once to XT[k][m] (64-token padded), or given so. For a block-row (4 outputs), its kept columns
// come in quads (c0..c3) (pack_4x1_quads). Loading XT rows c0..c3 for 64 tokens and a 4x4 byte transpose
// (8 unpacks) gives 4 zmm whose 32-bit lanes hold (x[t,c0], x[t,c1], x[t,c2], x[t,c3]) for 16 tokens
// each; each feeds 4 vpdpbusd (one per output, weights broadcast). Lane order is a fixed permutation
// of the tokens that the epilogue undoes.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "avx512_math.h"
#include "avx512vnni_int8.h"
#include "internal.h"
#include "transpose_sse.h"
#include "ukernels.h"

namespace ek {
namespace {
constexpr int TM = (int)kTokenTile;  // tokens per tile

struct SparseCtx {
  const Gemm* g;
  const uint8_t* xt;
  int64_t mp, mtiles, rows_per_task;
  bool by_rows;  // tasks ordered block-row range major (see sparse_task), else token tile major
};

// Epilogue of a full block-row (outputs 4r..4r+3) into a transposed y, from the accumulators in registers:
// block L of acc[i][gq] holds tokens 16L + 4gq + 0..3, so for fp32 a 4x4 transpose of 128-bit blocks across
// gq = 0..3 gives tokens 16L..16L+15 in order (u8: saturating packs, below). Every per-row constant is read
// once, into locals (stores through y may alias anything the compiler cannot prove otherwise).
// nl = 1 when the GEMM has at most 16 tokens (the engine's last layer runs on the CLS rows only: one token per
// sequence): fp32 GELU then runs on block 0 only; the other blocks hold padding tokens, stored without it.
// Output 4r + i's 64 tokens go to y0 + i * ldy (elements of the output type): g.y's rows, or a staging buffer.
inline void tile_epilogue_t(const Gemm& g, const __m512i (&acc)[4][4], int64_t r, int nl, void* y0, int64_t ldy) {
  const ek_epilogue* ep = g.ep;
  const bool gelu = ep->gelu, out_u8 = ep->out_u8;
  if (out_u8) {
    const __m512 inv = _mm512_set1_ps(1.0f / ep->out_scale), zpf = _mm512_set1_ps((float)ep->out_zp);
    // u8: the accumulators are requantised in their lane order, then two rounds of saturating packs (per 128-bit
    // block L: gq 0, 1 and 2, 3 to 16-bit words, then those to bytes) leave tokens 16L .. 16L + 15 in order and
    // clamp to 0..255 on the way: 3 shuffles for 64 tokens of an output, where the reordering below and
    // vpmovusdb take 16 (with GELU on all 64 tokens also when nl = 1).
    RowConsts4 c4;
    row_consts4(g, r, c4);
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const RowConsts c = c4.at(i);
      __m512i q[4];
#pragma GCC unroll 4
      for (int gq = 0; gq < 4; ++gq) q[gq] = quant_u8(g, acc[i][gq], c, inv, zpf);
      const __m512i b = _mm512_packus_epi16(_mm512_packs_epi32(q[0], q[1]), _mm512_packs_epi32(q[2], q[3]));
      _mm512_storeu_si512(static_cast<uint8_t*>(y0) + i * ldy, b);
    }
    return;
  }
  RowConsts4 c4;
  row_consts4(g, r, c4);
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    const __m512i t0 = _mm512_shuffle_i32x4(acc[i][0], acc[i][1], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i t1 = _mm512_shuffle_i32x4(acc[i][2], acc[i][3], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i t2 = _mm512_shuffle_i32x4(acc[i][0], acc[i][1], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i t3 = _mm512_shuffle_i32x4(acc[i][2], acc[i][3], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i ordered[4] = {_mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(2, 0, 2, 0)),
                                _mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(3, 1, 3, 1)),
                                _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(2, 0, 2, 0)),
                                _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(3, 1, 3, 1))};
    const RowConsts c = c4.at(i);
    __m512 v[4];
#pragma GCC unroll 4
    for (int L = 0; L < 4; ++L) v[L] = dequant512(ordered[L], c.corr, c.scale, c.bias);
    if (gelu && nl == 1) {
      v[0] = gelu512(v[0]);
    } else if (gelu) {
#pragma GCC unroll 4
      for (int L = 0; L < 4; ++L) v[L] = gelu512(v[L]);
    }
    float* y = static_cast<float*>(y0) + i * ldy;
#pragma GCC unroll 4
    for (int L = 0; L < 4; ++L) _mm512_storeu_ps(y + 16 * L, v[L]);
  }
}

// Epilogue of a full block-row into a row-major fp32 y (4 consecutive outputs of a token are 16 contiguous
// bytes). The dequantisation runs on the accumulators as they are; then for each gq the four output rows
// acc[0..3][gq] are transposed in registers (unpack ps / pd within 128-bit blocks), which leaves 128-bit block
// L of vector d holding outputs 4r..4r+3 of token 16L + 4gq + d, stored straight to y. No buffer, no
// un-permutation of the tokens.
inline void tile_epilogue_rowf32(const Gemm& g, const __m512i (&acc)[4][4], int64_t r, int64_t m0, int64_t mend) {
  const int64_t ldy = g.ldy;
  const bool gelu = g.ep->gelu;
  __m512 v[4][4];
  RowConsts4 c4;
  row_consts4(g, r, c4);
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    const RowConsts c = c4.at(i);
#pragma GCC unroll 4
    for (int gq = 0; gq < 4; ++gq) {
      v[i][gq] = dequant512(acc[i][gq], c.corr, c.scale, c.bias);
      if (gelu) v[i][gq] = gelu512(v[i][gq]);
    }
  }
  float* y = static_cast<float*>(g.y) + m0 * ldy + 4 * r;
#pragma GCC unroll 4
  for (int gq = 0; gq < 4; ++gq) {
    const __m512 ab0 = _mm512_unpacklo_ps(v[0][gq], v[1][gq]), ab1 = _mm512_unpackhi_ps(v[0][gq], v[1][gq]);
    const __m512 cd0 = _mm512_unpacklo_ps(v[2][gq], v[3][gq]), cd1 = _mm512_unpackhi_ps(v[2][gq], v[3][gq]);
    const __m512 t[4] = {
        _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab0), _mm512_castps_pd(cd0))),
        _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab0), _mm512_castps_pd(cd0))),
        _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab1), _mm512_castps_pd(cd1))),
        _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab1), _mm512_castps_pd(cd1)))};
#pragma GCC unroll 4
    for (int d = 0; d < 4; ++d) {
      const int64_t t0 = 4 * gq + d;  // token of block 0; block L is token t0 + 16L
      if (mend == TM) {
        _mm_storeu_ps(y + t0 * ldy, _mm512_castps512_ps128(t[d]));
        _mm_storeu_ps(y + (t0 + 16) * ldy, _mm512_extractf32x4_ps(t[d], 1));
        _mm_storeu_ps(y + (t0 + 32) * ldy, _mm512_extractf32x4_ps(t[d], 2));
        _mm_storeu_ps(y + (t0 + 48) * ldy, _mm512_extractf32x4_ps(t[d], 3));
      } else {
        if (t0 < mend) _mm_storeu_ps(y + t0 * ldy, _mm512_castps512_ps128(t[d]));
        if (t0 + 16 < mend) _mm_storeu_ps(y + (t0 + 16) * ldy, _mm512_extractf32x4_ps(t[d], 1));
        if (t0 + 32 < mend) _mm_storeu_ps(y + (t0 + 32) * ldy, _mm512_extractf32x4_ps(t[d], 2));
        if (t0 + 48 < mend) _mm_storeu_ps(y + (t0 + 48) * ldy, _mm512_extractf32x4_ps(t[d], 3));
      }
    }
  }
}

// The quad step of the 4x1 kernel in asm blocks: one loads XT rows c0..c3 (64 tokens each) and interleaves them
// into u0..u3, 4 zmm of (x[t,c0], x[t,c1], x[t,c2], x[t,c3]) lanes (8 unpacks); two add 2 outputs x 4 token
// groups each (8 vpdpbusd, the output's 4 weights broadcast from memory). The accumulators are separate locals
// and asm operands: written with intrinsics on an array, GCC 12 kept 15 of the 16 on the stack through the loop
// (a load and a store around every vpdpbusd). (One block for all 16 would need 32 operands; GCC allows 30.)
#define EK_QUAD_OUT(i)                                                                                        \
  "vpbroadcastd " #i "*4(%[w]), %%zmm0\n\t"                                                                   \
  "vpdpbusd %%zmm0, %[u0], %[a" #i "0]\n\t"                                                                    \
  "vpdpbusd %%zmm0, %[u1], %[a" #i "1]\n\t"                                                                    \
  "vpdpbusd %%zmm0, %[u2], %[a" #i "2]\n\t"                                                                    \
  "vpdpbusd %%zmm0, %[u3], %[a" #i "3]\n\t"
#define EK_QUAD_OUTS(i, j)                                                                                    \
  asm(EK_QUAD_OUT(i) EK_QUAD_OUT(j)                                                                           \
      : [a##i##0] "+v"(a##i##0), [a##i##1] "+v"(a##i##1), [a##i##2] "+v"(a##i##2), [a##i##3] "+v"(a##i##3),     \
        [a##j##0] "+v"(a##j##0), [a##j##1] "+v"(a##j##1), [a##j##2] "+v"(a##j##2), [a##j##3] "+v"(a##j##3)      \
      : [u0] "v"(u0), [u1] "v"(u1), [u2] "v"(u2), [u3] "v"(u3), [w] "r"(wq + 4 * q)                          \
      : "xmm0", "memory")

// Row-major y through a staging buffer (sparse_task): 4 block-rows (16 outputs x 64 tokens) are written there in
// their transposed layout, then to y in 16 x 16 register transposes, a token's 16 outputs per store. Always for u8
// (else the block-row's bytes go out one token at a time from a buffer anyway); for fp32 when the tokens' rows
// would crowd L1 sets: stored straight from the registers (tile_epilogue_rowf32), the 64 tokens' 16-byte pieces
// land ldy * 4 bytes apart, and with N = 1536 that is 6 KB, so the 64 rows share 2 of the 64 sets (the sets repeat
// every 4 KB). M = 128, K = 384, N = 1536, 80%, 2 threads, old and new build in alternating processes (11 pairs,
// a noisy phase): fp32 rows ~0.9x the time (137-151 -> 135-137 us, medians), u8 rows 0.53-0.92x (146-172 ->
// 104-116 us); with N = 384 (8 rows a set) fp32 staging was slower (1.00-1.40x), so it is not used there.
inline bool stage_rows(const Gemm& g) {
  if (!g.ep || g.y_t) return false;
  if (g.ep->out_u8) return true;
  int64_t a = g.ldy * 4, b = 4096;  // rows per set = 64 * gcd(row stride, 4096) / 4096
  while (b) std::swap(a %= b, b);
  return 64 * a / 4096 > 8;
}

// stage (row-major y only): a [4][TM] buffer of the output type that takes the block-row transposed (see sparse_task).
// Output 4r + i's accumulators start at minus its zero-point correction, x_zp * rowsum, so that they end as the
// corrected sums (the same int32 values) and no epilogue subtracts it: 16 vpsubd fewer per block-row and tile.
void sparse_tile(const Gemm& g, const uint8_t* xt, int64_t mp, int64_t r, int64_t m0, void* stage = nullptr) {
  const ek_packed* w = g.w;
  const int32_t zp = g.ep ? g.ep->x_zp : g.x_zp;
  const int64_t left = w->info.n - 4 * r;
  const int32_t* rs = w->rowsum.data() + 4 * r;
  __m512i a00 = _mm512_set1_epi32(-zp * rs[0]), a01 = a00, a02 = a00, a03 = a00;
  __m512i a10 = _mm512_set1_epi32(left > 1 ? -zp * rs[1] : 0), a11 = a10, a12 = a10, a13 = a10;
  __m512i a20 = _mm512_set1_epi32(left > 2 ? -zp * rs[2] : 0), a21 = a20, a22 = a20, a23 = a20;
  __m512i a30 = _mm512_set1_epi32(left > 3 ? -zp * rs[3] : 0), a31 = a30, a32 = a30, a33 = a30;
  const int64_t q0 = w->row_ptr[r], q1 = w->row_ptr[r + 1];
  const int32_t* cols = w->quad_cols.data();
  const int32_t* wq = reinterpret_cast<const int32_t*>(w->quad_w.data());
  const uint8_t* x0 = xt + m0;
  // The quads' XT row offsets (column x stride, in bytes; below 2^31, checked at the entry) for this call's stride,
  // kChunk quads at a time, 16 per vpmulld, instead of 4 imul per quad on the loads' address path. Measured with
  // a standalone prototype (one thread): a first run gave 6.1 -> 5.1 ns per quad (K = 384, XT in L1) and
  // 9.1 -> 7.5 (K = 1536); four alternating pairs later gave 5.2-6.0 vs 4.9-6.8 and 6.8-9.2 vs 6.9-7.7, i.e.
  // within this VM's noise at K = 384 and at best a gain at K = 1536.
  constexpr int64_t kChunk = 64;
  alignas(64) int32_t offs[4 * kChunk];
  const __m512i stride = _mm512_set1_epi32((int32_t)mp);
  for (int64_t qc = q0; qc < q1; qc += kChunk) {
    const int64_t qe = std::min(q1, qc + kChunk), nc = 4 * (qe - qc);
    int64_t i = 0;
    for (; i + 16 <= nc; i += 16)
      _mm512_store_si512(offs + i, _mm512_mullo_epi32(_mm512_loadu_si512(cols + 4 * qc + i), stride));
    if (i < nc) {
      const __mmask16 mk = (__mmask16)((1u << (nc - i)) - 1);
      _mm512_store_si512(offs + i, _mm512_mullo_epi32(_mm512_maskz_loadu_epi32(mk, cols + 4 * qc + i), stride));
    }
    for (int64_t q = qc; q < qe; ++q) {
      const int32_t* c = offs + 4 * (q - qc);
      // u_gq holds tokens 4gq + 0..3 of each 16-token block (the lane permutation the epilogues undo)
      __m512i u0, u1, u2, u3;
      asm("vmovdqu64 (%[x0], %[o0]), %[u0]\n\t"
          "vmovdqu64 (%[x0], %[o1]), %[u1]\n\t"
          "vmovdqu64 (%[x0], %[o2]), %[u2]\n\t"
          "vmovdqu64 (%[x0], %[o3]), %[u3]\n\t"
          "vpunpcklbw %[u1], %[u0], %%zmm0\n\t"  // t0 = lo8(r0, r1)
          "vpunpckhbw %[u1], %[u0], %%zmm1\n\t"  // t1 = hi8(r0, r1)
          "vpunpcklbw %[u3], %[u2], %%zmm2\n\t"  // t2 = lo8(r2, r3)
          "vpunpckhbw %[u3], %[u2], %%zmm3\n\t"  // t3 = hi8(r2, r3)
          "vpunpcklwd %%zmm2, %%zmm0, %[u0]\n\t"  // u0 = lo16(t0, t2)
          "vpunpckhwd %%zmm2, %%zmm0, %[u1]\n\t"  // u1 = hi16(t0, t2)
          "vpunpcklwd %%zmm3, %%zmm1, %[u2]\n\t"  // u2 = lo16(t1, t3)
          "vpunpckhwd %%zmm3, %%zmm1, %[u3]"       // u3 = hi16(t1, t3)
          : [u0] "=&v"(u0), [u1] "=&v"(u1), [u2] "=&v"(u2), [u3] "=&v"(u3)
          : [x0] "r"(x0), [o0] "r"((int64_t)c[0]), [o1] "r"((int64_t)c[1]), [o2] "r"((int64_t)c[2]),
            [o3] "r"((int64_t)c[3])
          : "xmm0", "xmm1", "xmm2", "xmm3", "memory");
      EK_QUAD_OUTS(0, 1);
      EK_QUAD_OUTS(2, 3);
    }
  }
#undef EK_QUAD_OUTS
#undef EK_QUAD_OUT
  const __m512i acc[4][4] = {{a00, a01, a02, a03}, {a10, a11, a12, a13}, {a20, a21, a22, a23}, {a30, a31, a32, a33}};
  if (g.ep && 4 * r + 4 <= w->info.n) {  // full block-row: epilogue from the registers
    const int nl = g.m <= 16 ? 1 : 4;
    if (g.y_t) {
      const int64_t es = g.ep->out_u8 ? 1 : 4;
      tile_epilogue_t(g, acc, r, nl, static_cast<char*>(g.y) + (4 * r * g.ldy + m0) * es, g.ldy);
      return;
    }
    if (stage) {
      tile_epilogue_t(g, acc, r, nl, stage, TM);
      return;
    }
    if (!g.ep->out_u8) {
      tile_epilogue_rowf32(g, acc, r, m0, std::min<int64_t>(TM, g.m - m0));
      return;
    }
  }
  alignas(64) int32_t accbuf[4][4][16];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)
#pragma GCC unroll 4
    for (int gq = 0; gq < 4; ++gq) _mm512_store_si512(accbuf[i][gq], acc[i][gq]);
  // Undo the lane permutation with a 4x4 transpose of 128-bit blocks: block L of acc[i][gq] holds tokens
  // 16L + 4gq + 0..3, so gathering block L of gq = 0..3 gives tokens 16L..16L+15 in order. Then the
  // epilogue runs on 16 tokens at a time.
  alignas(64) int32_t tile[4][TM];
  alignas(64) float out[4][TM];
  const int64_t n = w->info.n, mend = std::min<int64_t>(TM, g.m - m0);
  const __m512 inv = _mm512_set1_ps(g.ep && g.ep->out_u8 ? 1.0f / g.ep->out_scale : 0.f),
               zpf = _mm512_set1_ps(g.ep ? (float)g.ep->out_zp : 0.f);
  RowConsts4 c4;
  if (g.ep) row_consts4(g, r, c4);
  for (int i = 0; i < 4; ++i) {
    const int64_t j = 4 * r + i;
    if (j >= n) break;
    const __m512i a0 = _mm512_load_si512(accbuf[i][0]), a1 = _mm512_load_si512(accbuf[i][1]),
                  a2 = _mm512_load_si512(accbuf[i][2]), a3 = _mm512_load_si512(accbuf[i][3]);
    const __m512i t0 = _mm512_shuffle_i32x4(a0, a1, _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i t1 = _mm512_shuffle_i32x4(a2, a3, _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i t2 = _mm512_shuffle_i32x4(a0, a1, _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i t3 = _mm512_shuffle_i32x4(a2, a3, _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i ordered[4] = {_mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(2, 0, 2, 0)),
                                _mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(3, 1, 3, 1)),
                                _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(2, 0, 2, 0)),
                                _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(3, 1, 3, 1))};
    for (int L = 0; L < 4; ++L) {
      const __m512i a = ordered[L];  // corrected already
      if (!g.ep) {
        _mm512_store_si512(tile[i] + 16 * L, a);
        continue;
      }
      const RowConsts c = c4.at(i);
      if (g.ep->out_u8) {
        const __m128i qb = clamp_u8(quant_u8(g, ordered[L], c, inv, zpf));
        if (g.y_t)  // 16 tokens of output j are contiguous in a transposed y
          _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint8_t*>(g.y) + j * g.ldy + m0 + 16 * L), qb);
        else
          _mm512_store_si512(tile[i] + 16 * L, _mm512_cvtepu8_epi32(qb));
        continue;
      }
      __m512 v = dequant512(a, c.corr, c.scale, c.bias);
      if (g.ep->gelu) v = gelu512(v);
      if (g.y_t) {
        _mm512_storeu_ps(static_cast<float*>(g.y) + j * g.ldy + m0 + 16 * L, v);
      } else {
        _mm512_store_ps(out[i] + 16 * L, v);
      }
    }
  }
  if (g.y_t) return;
  const int nout = (int)std::min<int64_t>(4, n - 4 * r);
  if (!g.ep) {
    for (int64_t t = 0; t < mend; ++t)
      for (int i = 0; i < nout; ++i) g.acc[(m0 + t) * n + 4 * r + i] = tile[i][t];
  } else if (!g.ep->out_u8) {
    float* y = static_cast<float*>(g.y);
    if (nout == 4) {
      for (int64_t t = 0; t < mend; t += 4) {  // 4x4 transposes: 4 outputs of a token are contiguous in y
        __m128 a = _mm_load_ps(out[0] + t), b = _mm_load_ps(out[1] + t), c = _mm_load_ps(out[2] + t),
               d = _mm_load_ps(out[3] + t);
        _MM_TRANSPOSE4_PS(a, b, c, d);
        const __m128 rows[4] = {a, b, c, d};
        for (int64_t u = 0; u < 4 && t + u < mend; ++u) _mm_storeu_ps(y + (m0 + t + u) * g.ldy + 4 * r, rows[u]);
      }
    } else {
      for (int64_t t = 0; t < mend; ++t)
        for (int i = 0; i < nout; ++i) y[(m0 + t) * g.ldy + 4 * r + i] = out[i][t];
    }
  } else {
    uint8_t* y = static_cast<uint8_t*>(g.y);
    if (nout == 4) {  // the 4 bytes of a token, in output order, as one 32-bit word per token
      alignas(64) uint32_t words[TM];
      for (int t = 0; t < TM; t += 16) {
        __m512i wv = _mm512_load_si512(tile[0] + t);
        wv = _mm512_or_si512(wv, _mm512_slli_epi32(_mm512_load_si512(tile[1] + t), 8));
        wv = _mm512_or_si512(wv, _mm512_slli_epi32(_mm512_load_si512(tile[2] + t), 16));
        wv = _mm512_or_si512(wv, _mm512_slli_epi32(_mm512_load_si512(tile[3] + t), 24));
        _mm512_store_si512(words + t, wv);
      }
      for (int64_t t = 0; t < mend; ++t) std::memcpy(y + (m0 + t) * g.ldy + 4 * r, &words[t], 4);
    } else {
      for (int64_t t = 0; t < mend; ++t)
        for (int i = 0; i < nout; ++i) y[(m0 + t) * g.ldy + 4 * r + i] = (uint8_t)tile[i][t];
    }
  }
}

void sparse_task(int64_t task, void* p) {
  const SparseCtx& c = *static_cast<SparseCtx*>(p);
  const int64_t nb = c.g->w->nb;
  // A core's contiguous range of tasks (see parallel_for) is whole token tiles (those whose XT it transposed, and
  // only those tiles' XT in its caches), or with by_rows whole ranges of block-rows over all tiles (see sparse()).
  const int64_t chunks = (nb + c.rows_per_task - 1) / c.rows_per_task;
  const int64_t mt = c.by_rows ? task % c.mtiles : task / chunks, ch = c.by_rows ? task / c.mtiles : task % chunks;
  const int64_t r0 = ch * c.rows_per_task, r1 = std::min(nb, r0 + c.rows_per_task);
  const Gemm& g = *c.g;
  const int64_t m0 = mt * TM, n = g.w->info.n;
  int64_t r = r0;
  if (stage_rows(g)) {
    alignas(64) float stage[16][TM];  // as bytes for u8 y
    uint8_t* stage8 = reinterpret_cast<uint8_t*>(stage);
    const bool u8 = g.ep->out_u8;
    const int64_t mend = std::min<int64_t>(TM, g.m - m0), ldy = g.ldy;
    for (; r + 4 <= r1 && 4 * r + 16 <= n; r += 4) {
      for (int i = 0; i < 4; ++i) sparse_tile(g, c.xt, c.mp, r + i, m0, u8 ? (void*)(stage8 + 4 * i * TM) : stage[4 * i]);
      int64_t t = 0;
      if (u8) {
        uint8_t* y = static_cast<uint8_t*>(g.y) + m0 * ldy + 4 * r;
        for (; t + 16 <= mend; t += 16) {
          __m128i a[16];
#pragma GCC unroll 16
          for (int o = 0; o < 16; ++o) a[o] = _mm_load_si128(reinterpret_cast<const __m128i*>(stage8 + o * TM + t));
          transpose16x16_regs(a, y + t * ldy, ldy);
        }
        for (; t < mend; ++t)
          for (int o = 0; o < 16; ++o) y[t * ldy + o] = stage8[o * TM + t];
      } else {
        float* y = static_cast<float*>(g.y) + m0 * ldy + 4 * r;
        for (; t + 16 <= mend; t += 16) transpose16(stage[0] + t, TM, 16, y + t * ldy, ldy);
        for (; t < mend; ++t)
          for (int o = 0; o < 16; ++o) y[t * ldy + o] = stage[o][t];
      }
    }
  }
  for (; r < r1; ++r) sparse_tile(g, c.xt, c.mp, r, m0);
}

// transpose_task with 512-bit registers for whole 64-token tiles of 16-column strips: lane L of register i holds
// token 16L + i's 16 bytes, so one 16 x 16 byte transpose per lane (the unpacks work within 128-bit lanes) leaves
// a column's 64 tokens in one register, stored as one cache line of XT. Tiles with padding tokens and column
// tails go through transpose_task. (The SSE transposes wrote each XT line in four 16-byte pieces, with the 16
// row addresses spilled to the stack: ~30% of a plain 4x1 call at K = 1,536, N = 384, 80%.)
struct ZmmUnpack {  // the unpacks of transpose16x16_stages on 512-bit registers (four 128-bit lanes side by side)
  static __m512i lo8(__m512i a, __m512i b) { return _mm512_unpacklo_epi8(a, b); }
  static __m512i hi8(__m512i a, __m512i b) { return _mm512_unpackhi_epi8(a, b); }
  static __m512i lo16(__m512i a, __m512i b) { return _mm512_unpacklo_epi16(a, b); }
  static __m512i hi16(__m512i a, __m512i b) { return _mm512_unpackhi_epi16(a, b); }
  static __m512i lo32(__m512i a, __m512i b) { return _mm512_unpacklo_epi32(a, b); }
  static __m512i hi32(__m512i a, __m512i b) { return _mm512_unpackhi_epi32(a, b); }
};

void transpose_task_512(int64_t task, void* p) {
  const TransposeCtx& c = *static_cast<TransposeCtx*>(p);
  const int64_t kchunks = (c.k + kTransposeCols - 1) / kTransposeCols;
  const int64_t m0 = task / kchunks * 64;
  const int64_t kbeg = task % kchunks * kTransposeCols, kend = std::min(c.k, kbeg + kTransposeCols);
  if (m0 + 64 > c.m || (kend - kbeg) % 16) {
    transpose_task(task, p);
    return;
  }
  const int64_t ldx = c.ldx;
  for (int64_t k0 = kbeg; k0 < kend; k0 += 16) {
    __m512i a[16], b[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {
      const uint8_t* r = c.x + (m0 + i) * ldx + k0;
      __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r)));
      v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(r + 16 * ldx)), 1);
      v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(r + 32 * ldx)), 2);
      a[i] = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(r + 48 * ldx)), 3);
    }
    transpose16x16_stages<ZmmUnpack>(a, b);
    uint8_t* y = c.xt + k0 * c.ldxt + m0;
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      _mm512_storeu_si512(y + (2 * i) * c.ldxt, _mm512_unpacklo_epi64(b[i], b[8 + i]));
      _mm512_storeu_si512(y + (2 * i + 1) * c.ldxt, _mm512_unpackhi_epi64(b[i], b[8 + i]));
    }
  }
}

void sparse(const Gemm& g) {
  const ek_packed* w = g.w;
  const int64_t k = w->info.k, mp = (g.m + TM - 1) / TM * TM;
  const uint8_t* xt = g.x;
  int64_t ldxt = g.ldx;  // a transposed X comes with its own stride (>= mp)
  if (!g.x_t) {  // XT is built on every call, in a buffer kept per calling thread
    ldxt = xt_stride(mp);
    uint8_t* xt_buf = static_cast<uint8_t*>(scratch(1, k * ldxt));
    TransposeCtx tc{g.x, g.ldx, g.m, k, mp, xt_buf, ldxt};
    parallel_for(tc.tasks(), transpose_task_512, &tc);
    xt = xt_buf;
  }
  const int64_t mtiles = mp / TM;
  const int nt = num_threads();
  // Enough tasks per thread to balance block-rows of uneven density.
  int64_t rows = std::max<int64_t>(1, w->nb * mtiles / (8 * nt));
  if (stage_rows(g)) rows = (rows + 3) / 4 * 4;  // whole groups of 4 block-rows for the staging
  // Split by token tiles, a transposed y shares 128-byte line pairs between cores when a core's first tile is odd
  // (M = 128 on 2 threads: core 0 writes the first 64 bytes of every output's row, core 1 the second), and the
  // pair goes back and forth (the adjacent-line prefetch): with all-zero weights (the epilogue alone) 2 threads
  // took 1.3-1.4x the time of 1. Then the split is by block-rows over all tiles, as long as every core's XT (all
  // tiles) stays small: in-process A/B (kernels/tools/ab_builds.py, M 128, 2 threads, 21 rounds) 0.90-0.98x the
  // time at K = 384 and 768, but 1.02-1.03x at K = 3,072 (each core then reads 384 KB of XT instead of 192 KB).
  const bool by_rows = g.y_t && mtiles < 2 * nt && k * mp <= (128 << 10);
  SparseCtx c{&g, xt, ldxt, mtiles, rows, by_rows};
  parallel_for(mtiles * ((w->nb + rows - 1) / rows), sparse_task, &c);
}
}  // namespace

void u8s8_spmm_4x1_64_part__avx512vnni(const Gemm& g, int64_t tile0, int64_t tile1, int64_t r0, int64_t r1) {
  for (int64_t t = tile0; t < tile1; ++t)
    for (int64_t r = r0; r < r1; ++r) sparse_tile(g, g.x, g.ldx, r, t * TM);
}

void u8s8_spmm_4x1_64__avx512vnni(const Gemm& g) { sparse(g); }
}  // namespace ek
