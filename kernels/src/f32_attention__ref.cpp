// Reference attention for one (sequence, head): plain loops, fp32, any head size. The source of truth and the
// last fallback.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ukernels.h"

void ek::f32_attention__ref(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t d,
                            float* ctx, int64_t ldc, int64_t nq) {
  std::vector<float> sc(n);
  std::vector<float> acc(d);
  const float scale = 1.0f / std::sqrt((float)d);
  for (int64_t i = 0; i < nq; ++i) {
    const float* qi = q + i * ld;
    float mx = -1e30f;
    for (int64_t j = 0; j < n; ++j) {
      const float* kj = k + j * ld;
      float s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t e = 0; e < d; ++e) s += qi[e] * kj[e];
      sc[j] = s * scale;
      mx = std::max(mx, sc[j]);
    }
    float sum = 0;
    for (int64_t j = 0; j < n; ++j) {
      sc[j] = std::exp(sc[j] - mx);
      sum += sc[j];
    }
    const float inv = 1.0f / sum;
    std::fill(acc.begin(), acc.end(), 0.f);
    for (int64_t j = 0; j < n; ++j) {
      const float pj = sc[j] * inv;
      const float* vj = v + j * ld;
#pragma omp simd
      for (int64_t e = 0; e < d; ++e) acc[e] += pj * vj[e];
    }
    std::memcpy(ctx + i * ldc, acc.data(), d * sizeof(float));
  }
}
