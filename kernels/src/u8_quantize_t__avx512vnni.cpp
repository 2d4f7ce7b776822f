// AVX-512 VNNI fused quantise + transpose of activations into the 4x1 kernels' XT[k][m] layout
// (ek_quantize_u8_t, and one 64-token tile at a time for the engine's tile tasks: ek_quantize_u8_t_tile).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "avx512_math.h"
#include "internal.h"
#include "transpose_sse.h"
#include "ukernels.h"

namespace ek {
namespace {
constexpr int TM = (int)kTokenTile;  // tokens per tile

void quant_t_task(int64_t task, void* p) {  // the split is transpose_span's (see transpose_sse.h)
  const QuantTCtx& c = *static_cast<QuantTCtx*>(p);
  const __m512 vs = _mm512_set1_ps(c.scale), vinv = _mm512_set1_ps(1.0f / c.scale), vz = _mm512_set1_ps((float)c.zp),
               hi = _mm512_set1_ps(255.f);
  transpose_span(
      task, c.m, c.mp, c.k, c.xt, c.ldxt,
      [&](int64_t i, int64_t col) {
        __m512 v = _mm512_roundscale_ps(div512_q(_mm512_loadu_ps(c.x + i * c.ldx + col), vs, vinv),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, vz), _mm512_setzero_ps()), hi);
        return _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v));
      },
      [&](int64_t i, int64_t col) { return quant1(c.x[i * c.ldx + col], c.scale, c.zp); });
}
}  // namespace

void u8_quantize_t__avx512vnni(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* xt,
                               int64_t ldxt) {
  quantize_t<quant_t_task>(x, m, k, ldx, scale, zp, xt, ldxt);
}

void u8_quantize_t_tile__avx512vnni(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* xt,
                                    int64_t ldxt, int64_t tile) {
  QuantTCtx c{x, m, k, ldx, (m + TM - 1) / TM * TM, ldxt, scale, zp, xt};
  const int64_t kchunks = transpose_tasks(TM, k);  // tasks of one tile
  for (int64_t kc = 0; kc < kchunks; ++kc) quant_t_task(tile * kchunks + kc, &c);
}
}  // namespace ek
