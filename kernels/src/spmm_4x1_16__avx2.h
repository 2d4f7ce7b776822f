// Shared by the AVX2 4x1 block-sparse microkernels (u8s8_spmm_4x1_16__avx2, u8s7_spmm_4x1_16__avx2): the epilogue
// of a 4-output x 16-token register tile and the driver (X transposed once to XT[k][m], 64-token padded as for
// the VNNI path; tasks of 64-token tiles x block-row ranges).
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "avx2_int8.h"
#include "internal.h"
#include "transpose_sse.h"

namespace ek {
namespace {
constexpr int TS = 16;  // tokens per register tile

// Epilogue of one block-row on tokens m0..m0+15: acc[i][h] holds tokens m0 + 8h .. m0 + 8h + 7 of output 4r+i.
// Out of line, as when both 4x1 kernels were in one file and called it (alone in its file now, each would get it
// inlined: a different register allocation of the tile).
__attribute__((noinline)) void sparse_epilogue(const Gemm& g, const __m256i (&acc)[4][2], int64_t r, int64_t m0) {
  const ek_packed* w = g.w;
  const int64_t n = w->info.n, mend = std::min<int64_t>(TS, g.m - m0);
  const int32_t zp = g.ep ? g.ep->x_zp : g.x_zp;
  const int nout = (int)std::min<int64_t>(4, n - 4 * r);
  alignas(32) int32_t tile[4][TS];
  alignas(32) float out[4][TS];
  for (int i = 0; i < nout; ++i) {
    const int64_t j = 4 * r + i;
    const __m256i corr = _mm256_set1_epi32(zp * w->rowsum[j]);
    const __m256i a[2] = {_mm256_sub_epi32(acc[i][0], corr), _mm256_sub_epi32(acc[i][1], corr)};
    if (!g.ep) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(tile[i]), a[0]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(tile[i] + 8), a[1]);
      continue;
    }
    const ek_epilogue* ep = g.ep;
    const __m256 s = _mm256_set1_ps(ep->x_scale * ep->w_scale[j]);
    __m256 v[2];
    for (int h = 0; h < 2; ++h) {
      v[h] = _mm256_mul_ps(_mm256_cvtepi32_ps(a[h]), s);
      if (ep->bias) v[h] = _mm256_add_ps(v[h], _mm256_set1_ps(ep->bias[j]));
      if (ep->gelu) v[h] = gelu256(v[h]);
    }
    if (ep->out_u8) {
      const __m256i q0 = _mm256_cvtps_epi32(requant_f(v[0], ep)), q1 = _mm256_cvtps_epi32(requant_f(v[1], ep));
      if (g.y_t) {  // 16 tokens of output j are contiguous in a transposed y
        _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint8_t*>(g.y) + j * g.ldy + m0), pack16_u8(q0, q1));
      } else {
        _mm256_store_si256(reinterpret_cast<__m256i*>(tile[i]), q0);
        _mm256_store_si256(reinterpret_cast<__m256i*>(tile[i] + 8), q1);
      }
    } else if (g.y_t) {
      float* y = static_cast<float*>(g.y) + j * g.ldy + m0;
      _mm256_storeu_ps(y, v[0]);
      _mm256_storeu_ps(y + 8, v[1]);
    } else {
      _mm256_store_ps(out[i], v[0]);
      _mm256_store_ps(out[i] + 8, v[1]);
    }
  }
  if (g.y_t && g.ep) return;
  if (!g.ep) {
    for (int64_t t = 0; t < mend; ++t)
      for (int i = 0; i < nout; ++i) g.acc[(m0 + t) * n + 4 * r + i] = tile[i][t];
  } else if (!g.ep->out_u8) {
    float* y = static_cast<float*>(g.y);
    if (nout == 4) {
      for (int64_t t = 0; t < mend; t += 4) {  // 4x4 transposes: the 4 outputs of a token are contiguous in y
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
      alignas(32) uint32_t words[TS];
      for (int t = 0; t < TS; t += 8) {
        __m256i wv = _mm256_load_si256(reinterpret_cast<const __m256i*>(tile[0] + t));
        wv = _mm256_or_si256(wv, _mm256_slli_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(tile[1] + t)), 8));
        wv = _mm256_or_si256(wv, _mm256_slli_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(tile[2] + t)), 16));
        wv = _mm256_or_si256(wv, _mm256_slli_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(tile[3] + t)), 24));
        _mm256_store_si256(reinterpret_cast<__m256i*>(words + t), wv);
      }
      for (int64_t t = 0; t < mend; ++t) std::memcpy(y + (m0 + t) * g.ldy + 4 * r, &words[t], 4);
    } else {
      for (int64_t t = 0; t < mend; ++t)
        for (int i = 0; i < nout; ++i) y[(m0 + t) * g.ldy + 4 * r + i] = (uint8_t)tile[i][t];
    }
  }
}

// A register tile: block-row r, tokens m0 .. m0 + 15 of XT (row stride ldxt).
using TileFn = void (*)(const Gemm& g, const uint8_t* xt, int64_t ldxt, int64_t r, int64_t m0);

struct SparseCtx {
  const Gemm* g;
  const uint8_t* xt;
  int64_t ldxt, rows_per_task, chunks;
};

template <TileFn Tile>
void sparse_task(int64_t task, void* p) {
  const SparseCtx& c = *static_cast<SparseCtx*>(p);
  const int64_t nb = c.g->w->nb;
  const int64_t mt = task / c.chunks, ch = task % c.chunks;
  const int64_t r0 = ch * c.rows_per_task, r1 = std::min(nb, r0 + c.rows_per_task);
  // Token sub-tiles wholly past m are skipped: a transposed y keeps whatever its padding held.
  const int64_t mend = std::min<int64_t>((mt + 1) * TM, c.g->m);
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t m0 = mt * TM; m0 < mend; m0 += TS) Tile(*c.g, c.xt, c.ldxt, r, m0);
}

template <TileFn Tile>
void spmm_4x1(const Gemm& g) {
  const ek_packed* w = g.w;
  const int64_t k = w->info.k, mp = (g.m + TM - 1) / TM * TM;
  const uint8_t* xt = g.x;
  int64_t ldxt = g.ldx;
  if (!g.x_t) {
    ldxt = xt_stride(mp);
    uint8_t* xt_buf = static_cast<uint8_t*>(scratch(1, k * ldxt));
    TransposeCtx tc{g.x, g.ldx, g.m, k, mp, xt_buf, ldxt};
    parallel_for(tc.tasks(), transpose_task, &tc);
    xt = xt_buf;
  }
  const int64_t mtiles = mp / TM;
  const int nt = num_threads();
  const int64_t rows = std::max<int64_t>(1, w->nb * mtiles / (8 * nt));
  SparseCtx c{&g, xt, ldxt, rows, (w->nb + rows - 1) / rows};
  parallel_for(mtiles * c.chunks, sparse_task<Tile>, &c);
}
}  // namespace
}  // namespace ek
