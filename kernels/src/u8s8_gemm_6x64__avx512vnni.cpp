// AVX-512 VNNI int8 GEMM, dense: tiles of 6 rows x 64 outputs (24 zmm accumulators).
//
// W packed as [n/16][k/4][16 outputs][4 k] (pack_dense_k4) so one zmm holds 16 outputs x 4 k; a row of X is
// broadcast 4 bytes at a time and vpdpbusd adds 16 x 4 products.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "avx512_math.h"
#include "avx512vnni_int8.h"
#include "internal.h"
#include "ukernels.h"

namespace ek {
namespace {
// Every loop over r and b is fully unrolled so that acc stays in 24 registers (left as loops, GCC keeps acc
// in memory and stores each accumulator on every k step).
template <int MR, int NB>
void dense_tile(const Gemm& g, const uint8_t* x, int64_t ldx, int64_t m0, int64_t j16) {
  const ek_packed* w = g.w;
  const int64_t kq = w->kq;
  __m512i acc[MR][NB];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) acc[r][b] = _mm512_setzero_si512();
  const int8_t* wp = w->vnni.data() + j16 * kq * 64;
  const uint8_t* xr[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) xr[r] = x + (m0 + r) * ldx;
  for (int64_t q = 0; q < kq; ++q) {
    __m512i wv[NB];
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) wv[b] = _mm512_loadu_si512(wp + (b * kq + q) * 64);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      int32_t xs;
      std::memcpy(&xs, xr[r] + 4 * q, 4);
      const __m512i xv = _mm512_set1_epi32(xs);
#pragma GCC unroll 4
      for (int b = 0; b < NB; ++b) dpbusd(acc[r][b], xv, wv[b]);
    }
  }
  const int64_t n = w->info.n;
  if (!g.ep) {  // int32 accumulators, zero point applied
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) {
      const int64_t n0 = (j16 + b) * 16;
      const __mmask16 mask = n - n0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - n0)) - 1);
      const __m512i corr =
          _mm512_mullo_epi32(_mm512_maskz_loadu_epi32(mask, w->rowsum.data() + n0), _mm512_set1_epi32(g.x_zp));
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r)
        _mm512_mask_storeu_epi32(g.acc + (m0 + r) * n + n0, mask, _mm512_sub_epi32(acc[r][b], corr));
    }
    return;
  }
  // The per-output constants (zero-point correction, scale, bias) once per 16 outputs, not once per row; the
  // epilogue's fields read into locals once (stores through y may alias them as far as the compiler knows).
  const ek_epilogue* ep = g.ep;
  const bool gelu = ep->gelu, out_u8 = ep->out_u8;
  const __m512 inv = _mm512_set1_ps(out_u8 ? 1.0f / ep->out_scale : 0.f), zpf = _mm512_set1_ps((float)ep->out_zp);
  const __m512i zp = _mm512_set1_epi32(ep->x_zp);
  const __m512 xs = _mm512_set1_ps(ep->x_scale);
  const int64_t ldy = g.ldy;
#pragma GCC unroll 4
  for (int b = 0; b < NB; ++b) {
    const int64_t n0 = (j16 + b) * 16;
    const __mmask16 mask = n - n0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - n0)) - 1);
    RowConsts c{_mm512_mullo_epi32(_mm512_maskz_loadu_epi32(mask, w->rowsum.data() + n0), zp),
                _mm512_mul_ps(xs, _mm512_maskz_loadu_ps(mask, ep->w_scale + n0)),
                ep->bias ? _mm512_maskz_loadu_ps(mask, ep->bias + n0) : _mm512_setzero_ps()};
    if (out_u8 && !gelu) c = {c.corr, _mm512_mul_ps(c.scale, inv), _mm512_fmadd_ps(c.bias, inv, zpf)};  // row_consts4's fold
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      if (out_u8) {
        _mm_mask_storeu_epi8(static_cast<uint8_t*>(g.y) + (m0 + r) * ldy + n0, mask,
                             clamp_u8(quant_u8(g, acc[r][b], c, inv, zpf)));
        continue;
      }
      __m512 v = dequant512(acc[r][b], c.corr, c.scale, c.bias);
      if (gelu) v = gelu512(v);
      _mm512_mask_storeu_ps(static_cast<float*>(g.y) + (m0 + r) * ldy + n0, mask, v);
    }
  }
}

template <int NB>
void dense_rows(const Gemm& g, const uint8_t* x, int64_t ldx, int64_t m0, int64_t m1, int64_t j16) {
  int64_t m = m0;
  for (; m + 6 <= m1; m += 6) dense_tile<6, NB>(g, x, ldx, m, j16);
  switch (m1 - m) {
    case 5: dense_tile<5, NB>(g, x, ldx, m, j16); break;
    case 4: dense_tile<4, NB>(g, x, ldx, m, j16); break;
    case 3: dense_tile<3, NB>(g, x, ldx, m, j16); break;
    case 2: dense_tile<2, NB>(g, x, ldx, m, j16); break;
    case 1: dense_tile<1, NB>(g, x, ldx, m, j16); break;
    default: break;
  }
}

struct DenseCtx {
  const Gemm* g;
  const uint8_t* x;
  int64_t ldx, mtiles, mtile, npanels;
};

void dense_task(int64_t task, void* p) {
  const DenseCtx& c = *static_cast<DenseCtx*>(p);
  // panel-major: a thread's contiguous range of tasks (see parallel_for) covers whole panels, so each core reads
  // its share of the weights, not all of them
  const int64_t mt = task % c.mtiles, panel = task / c.mtiles;
  const int64_t m0 = mt * c.mtile, m1 = std::min(c.g->m, m0 + c.mtile);
  const int64_t j16 = panel * 4, left = c.g->w->n16 - j16;
  switch (left >= 4 ? 4 : left) {
    case 4: dense_rows<4>(*c.g, c.x, c.ldx, m0, m1, j16); break;
    case 3: dense_rows<3>(*c.g, c.x, c.ldx, m0, m1, j16); break;
    case 2: dense_rows<2>(*c.g, c.x, c.ldx, m0, m1, j16); break;
    default: dense_rows<1>(*c.g, c.x, c.ldx, m0, m1, j16); break;
  }
}
}  // namespace

void u8s8_gemm_6x64__avx512vnni(const Gemm& g) {
  const ek_packed* w = g.w;
  const int64_t k = w->info.k, kp = w->kq * 4;
  const uint8_t* x = g.x;
  int64_t ldx = g.ldx;
  if (kp != k) {  // K not a multiple of 4: copy X with zero padding so 4-byte reads stay in bounds
    uint8_t* padded = static_cast<uint8_t*>(scratch(0, g.m * kp));
    std::memset(padded, 0, g.m * kp);
    for (int64_t i = 0; i < g.m; ++i) std::memcpy(padded + i * kp, g.x + i * g.ldx, k);
    x = padded;
    ldx = kp;
  }
  DenseCtx c{&g, x, ldx, 0, 0, (w->n16 + 3) / 4};
  // Split rows into tiles of 48 (a multiple of 6) so both threads get work when N is small.
  c.mtile = std::max<int64_t>(6, std::min<int64_t>(48, (g.m + 5) / 6 * 6));
  c.mtiles = (g.m + c.mtile - 1) / c.mtile;
  parallel_for(c.mtiles * c.npanels, dense_task, &c);
}
}  // namespace ek
