// Dense int8 GEMM for AVX-512 without VNNI: portable loops (u8 x s8 widened to int32, so no vpmaddubsw
// saturation) that GCC vectorises with this file's AVX-512BW flags; one task per block of rows, a reduction over k
// per output.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "internal.h"
#include "ukernels.h"

namespace ek {
namespace {
struct DenseCtx {
  const Gemm* g;
  int64_t rows_per_task;
};

void dense_task(int64_t task, void* p) {
  const DenseCtx& c = *static_cast<DenseCtx*>(p);
  const Gemm& g = *c.g;
  const ek_packed* w = g.w;
  const int64_t n = w->info.n, k = w->info.k;
  const int32_t zp = g.ep ? g.ep->x_zp : g.x_zp;
  const int64_t m0 = task * c.rows_per_task, m1 = std::min(g.m, m0 + c.rows_per_task);
  for (int64_t j = 0; j < n; ++j) {
    const int8_t* __restrict wr = w->w_s8.data() + j * k;
    const int32_t corr = zp * w->rowsum[j];
    for (int64_t i = m0; i < m1; ++i) {
      const uint8_t* __restrict xr = g.x + i * g.ldx;
      int32_t acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t t = 0; t < k; ++t) acc += (int32_t)xr[t] * (int32_t)wr[t];
      acc -= corr;
      if (g.ep)
        epilogue_store(g.ep, j, acc, g.y, i * g.ldy + j);
      else
        g.acc[i * n + j] = acc;
    }
  }
}

}  // namespace

void u8s8_gemm_1x1__avx512(const Gemm& g) {
  const int nt = num_threads();
  DenseCtx c{&g, std::max<int64_t>(1, (g.m + nt - 1) / nt)};
  parallel_for((g.m + c.rows_per_task - 1) / c.rows_per_task, dense_task, &c);
}
}  // namespace ek
