// Reference int8 GEMM: plain loops over the original row-major weights. The source of truth.
#include "internal.h"
#include "ukernels.h"

namespace ek {
void u8s8_gemm__ref(const Gemm& g) {
  const ek_packed* w = g.w;
  const int64_t n = w->info.n, k = w->info.k;
  const int32_t zp = g.ep ? g.ep->x_zp : g.x_zp;
  for (int64_t i = 0; i < g.m; ++i) {
    const uint8_t* xr = g.x + i * g.ldx;
    for (int64_t j = 0; j < n; ++j) {
      const int8_t* wr = w->w_s8.data() + j * k;
      int32_t acc = 0;
      for (int64_t t = 0; t < k; ++t) acc += ((int32_t)xr[t] - zp) * (int32_t)wr[t];
      if (g.ep)
        epilogue_store(g.ep, j, acc, g.y, i * g.ldy + j);
      else
        g.acc[i * n + j] = acc;
    }
  }
}

}  // namespace ek
