// 4x1 block-sparse int8 GEMM for AVX-512 without VNNI: portable loops that GCC vectorises with this file's
// AVX-512BW flags; x is transposed once, then each task runs a range of block-rows over all tokens.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "internal.h"
#include "ukernels.h"

namespace ek {
namespace {
struct SparseCtx {
  const Gemm* g;
  const uint8_t* xt;  // [k][m]
  int64_t rows_per_task;
};

void sparse_task(int64_t task, void* p) {
  const SparseCtx& c = *static_cast<SparseCtx*>(p);
  const Gemm& g = *c.g;
  const ek_packed* w = g.w;
  const int64_t n = w->info.n, m = g.m;
  const int32_t zp = g.ep ? g.ep->x_zp : g.x_zp;
  int32_t* acc = static_cast<int32_t*>(scratch(1, 4 * m * sizeof(int32_t)));
  const int64_t r0 = task * c.rows_per_task, r1 = std::min(w->nb, r0 + c.rows_per_task);
  for (int64_t r = r0; r < r1; ++r) {
    std::memset(acc, 0, 4 * m * sizeof(int32_t));
    int32_t* __restrict a0 = acc;
    for (int64_t b = w->blk_ptr[r]; b < w->blk_ptr[r + 1]; ++b) {
      const uint8_t* __restrict xc = c.xt + (int64_t)w->blk_cols[b] * m;
      const int32_t w0 = w->blk_s8[4 * b], w1 = w->blk_s8[4 * b + 1], w2 = w->blk_s8[4 * b + 2],
                    w3 = w->blk_s8[4 * b + 3];
#pragma omp simd
      for (int64_t t = 0; t < m; ++t) {
        const int32_t xv = xc[t];
        a0[t] += xv * w0;
        a0[m + t] += xv * w1;
        a0[2 * m + t] += xv * w2;
        a0[3 * m + t] += xv * w3;
      }
    }
    for (int i = 0; i < 4 && 4 * r + i < n; ++i) {
      const int64_t j = 4 * r + i;
      const int32_t corr = zp * w->rowsum[j];
      for (int64_t t = 0; t < m; ++t) {
        const int32_t v = acc[i * m + t] - corr;
        if (g.ep)
          epilogue_store(g.ep, j, v, g.y, t * g.ldy + j);
        else
          g.acc[t * n + j] = v;
      }
    }
  }
}
}  // namespace

void u8s8_spmm_4x1__avx512(const Gemm& g) {
  const int nt = num_threads();
  const int64_t k = g.w->info.k, m = g.m;
  uint8_t* xt = static_cast<uint8_t*>(scratch(0, k * m));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t t = 0; t < k; ++t) xt[t * m + i] = g.x[i * g.ldx + t];
  SparseCtx c{&g, xt, std::max<int64_t>(1, (g.w->nb + 4 * nt - 1) / (4 * nt))};
  parallel_for((g.w->nb + c.rows_per_task - 1) / c.rows_per_task, sparse_task, &c);
}
}  // namespace ek
