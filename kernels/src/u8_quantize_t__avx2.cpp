// AVX2 fused quantise + transpose of activations into the 4x1 kernels' XT[k][m] layout (ek_quantize_u8_t).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "avx2_int8.h"
#include "transpose_sse.h"
#include "ukernels.h"

namespace ek {
namespace {
inline __m256i quant8(const float* x, __m256 vs, __m256 vz) {
  __m256 v = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, vz), _mm256_setzero_ps()), _mm256_set1_ps(255.f));
  return _mm256_cvtps_epi32(v);
}

void quant_t_task(int64_t task, void* p) {  // the split is transpose_span's (see transpose_sse.h)
  const QuantTCtx& c = *static_cast<QuantTCtx*>(p);
  const __m256 vs = _mm256_set1_ps(c.scale), vz = _mm256_set1_ps((float)c.zp);
  transpose_span(
      task, c.m, c.mp, c.k, c.xt, c.ldxt,
      [&](int64_t i, int64_t col) {
        const float* xr = c.x + i * c.ldx + col;
        return pack16_u8(quant8(xr, vs, vz), quant8(xr + 8, vs, vz));
      },
      [&](int64_t i, int64_t col) { return quant1(c.x[i * c.ldx + col], c.scale, c.zp); });
}
}  // namespace

void u8_quantize_t__avx2(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* xt,
                         int64_t ldxt) {
  quantize_t<quant_t_task>(x, m, k, ldx, scale, zp, xt, ldxt);
}
}  // namespace ek
