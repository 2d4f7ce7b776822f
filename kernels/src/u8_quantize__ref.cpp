// Reference activation quantisation: q = clamp(round_half_even(x / scale) + zp, 0, 255).
#include <cmath>

#include "internal.h"
#include "ukernels.h"

namespace ek {
void u8_quantize__ref(const float* x, int64_t n, float scale, int32_t zp, uint8_t* q) {
  for (int64_t i = 0; i < n; ++i) {
    float v = std::nearbyint(x[i] / scale) + (float)zp;
    q[i] = (uint8_t)(v < 0.f ? 0.f : (v > 255.f ? 255.f : v));
  }
}
}  // namespace ek
