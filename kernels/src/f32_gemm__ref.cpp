// Reference fp32 GEMM and GELU: plain loops over the original row-major weights. The source of truth.
#include <cmath>

#include "internal.h"
#include "ukernels.h"

namespace ek {
float gelu_ref(float y) { return 0.5f * y * (1.0f + std::erf(y * 0.70710678118654752f)); }

void f32_gemm__ref(const ek_packed* w, const float* x, int64_t m, int64_t ldx, const float* bias, int gelu, float* y,
                   int64_t ldy) {
  const int64_t n = w->info.n, k = w->info.k;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const float* wr = w->w_f32.data() + j * k;
      double acc = 0;  // double: the reference should not depend on summation order
      for (int64_t t = 0; t < k; ++t) acc += (double)x[i * ldx + t] * (double)wr[t];
      float v = (float)acc + (bias ? bias[j] : 0.f);
      y[i * ldy + j] = gelu ? gelu_ref(v) : v;
    }
}
}  // namespace ek
