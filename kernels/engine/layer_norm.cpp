#include "layer_norm.h"

#include <algorithm>

#include "../src/attention_kernels.h"
#include "../src/config.h"
#include "edgekit/kernels.h"

namespace ek {
namespace engine {
namespace {
struct LnCtx {
  float* x;
  const float* res;
  int64_t rows, h, chunk;
  const float *w, *b;
  float eps;
  LayerNormKernel kernel;
};

void ln_task(int64_t task, void* p) {
  const LnCtx& c = *static_cast<LnCtx*>(p);
  const int64_t r0 = task * c.chunk;
  const int64_t r1 = std::min(c.rows, r0 + c.chunk);
  run_add_layer_norm(c.kernel, c.x, c.res, r0, r1, c.h, c.w, c.b, c.eps);
}

struct LnQCtx {
  float* x;
  const float* res;
  int64_t rows, h;
  const float *w, *b;
  float eps, q_scale;
  int32_t q_zp;
  uint8_t* xt;
  int64_t ldxt;
  LayerNormKernel kernel;
  int rc;
};

void lnq_task(int64_t tile, void* p) {
  LnQCtx& c = *static_cast<LnQCtx*>(p);
  const int64_t r0 = tile * 64, r1 = std::min(c.rows, r0 + 64);
  if (r0 < r1) run_add_layer_norm(c.kernel, c.x, c.res, r0, r1, c.h, c.w, c.b, c.eps);
  if (int rc = ek_quantize_u8_t_tile(c.x, c.rows, c.h, c.h, c.q_scale, c.q_zp, c.xt, c.ldxt, tile)) c.rc = rc;
}
}  // namespace

LayerNormKernel layer_norm_kernel(int64_t h) { return select_add_layer_norm(active_config(), h).kernel; }

void add_layer_norm(float* x, const float* res, int64_t rows, int64_t h, const float* w, const float* b, float eps) {
  LnCtx c{x, res, rows, h, 16, w, b, eps, layer_norm_kernel(h)};
  ek_parallel_for((rows + c.chunk - 1) / c.chunk, ln_task, &c);
}

int add_layer_norm_quantize_t(float* x, const float* res, int64_t rows, int64_t h, const float* w, const float* b,
                              float eps, float q_scale, int32_t q_zp, uint8_t* xt, int64_t ldxt) {
  LnQCtx c{x, res, rows, h, w, b, eps, q_scale, q_zp, xt, ldxt, layer_norm_kernel(h), 0};
  ek_parallel_for(ek_padded_m(rows) / 64, lnq_task, &c);
  return c.rc;
}
}  // namespace engine
}  // namespace ek
