// The C ABI of the GEMMs and the quantisation: argument checks, then the microkernel the weights were packed for
// or the active ISA's entry of the table (config.h).
#include <algorithm>
#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "config.h"
#include "internal.h"
#include "transpose_sse.h"

namespace {
int check_common(const ek_packed* w, ek_wtype wt) {
  if (!w) return ek::fail(EK_EINVAL, "null packed weight");
  if (w->info.version != EK_PACK_VERSION)
    return ek::fail(EK_EMISMATCH, "packed weight has format version " + std::to_string(w->info.version) +
                                      ", expected " + std::to_string(EK_PACK_VERSION));
  if (w->info.wtype != wt) return ek::fail(EK_EMISMATCH, "packed weight has the wrong weight type for this GEMM");
  if (wt == EK_W_S8 && w->info.isa != ek_active_isa())
    return ek::fail(EK_EMISMATCH, std::string("weight was packed for ISA ") + ek_isa_name((ek_isa)w->info.isa) +
                                      " but the active ISA is " + ek_isa_name(ek_active_isa()) + "; repack it");
  return EK_OK;
}

// The 4x1 VNNI kernel addresses XT rows with 32-bit byte offsets (column x row stride): a transposed X, given or
// built from X, must stay below 2 GiB.
int check_xt(const ek_packed* w, int64_t m, int64_t ldxt, const char* fn) {
  if (w->info.pattern != EK_BLOCK_4X1) return EK_OK;
  if (ldxt < 0) ldxt = ek::xt_stride(ek_padded_m(m));
  if (w->info.k * ldxt > INT32_MAX)
    return ek::fail(EK_EINVAL, std::string(fn) + ": x too large for the 4x1 kernels (k x padded m must be < 2^31)");
  return EK_OK;
}

// The int8 microkernel of a checked weight (check_common: packed for the active ISA).
int run_u8s8(const ek::Gemm& g) {
  g.w->ukernel->run(g);
  return EK_OK;
}
}  // namespace

namespace ek {
// Quantise rows with the path's quantize_u8, then transpose: paths without a fused kernel.
void u8_quantize_t__generic(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* xt,
                            int64_t ldxt) {
  const int64_t mp = ek_padded_m(m);
  std::vector<uint8_t> row(k);
  for (int64_t i = 0; i < mp; ++i) {
    if (i < m) ek_quantize_u8(x + i * ldx, k, scale, zp, row.data());
    for (int64_t c = 0; c < k; ++c) xt[c * ldxt + i] = i < m ? row[c] : 0;
  }
}
}  // namespace ek

extern "C" {
int ek_gemm_u8s8(const ek_packed* w, const uint8_t* x, int64_t m, int64_t ldx, const ek_epilogue* ep, void* y,
                 int64_t ldy) {
  if (int rc = check_common(w, EK_W_S8)) return rc;
  if (!x || !ep || !y || !ep->w_scale || m < 0 || ldx < w->info.k || ldy < w->info.n)
    return ek::fail(EK_EINVAL, "gemm_u8s8: bad pointers or strides");
  if (ep->out_u8 && !(ep->out_scale > 0.f)) return ek::fail(EK_EINVAL, "gemm_u8s8: out_scale must be positive");
  if (m == 0) return EK_OK;
  if (int rc = check_xt(w, m, -1, "gemm_u8s8")) return rc;
  ek::Gemm g{w, x, m, ldx, ep, y, ldy, ep->x_zp, nullptr};
  return run_u8s8(g);
}

int64_t ek_padded_m(int64_t m) { return m <= 0 ? 0 : (m + ek::kTokenTile - 1) / ek::kTokenTile * ek::kTokenTile; }

int ek_gemm_u8s8_t(const ek_packed* w, const uint8_t* x, int64_t m, int64_t ldx, int32_t x_t, const ek_epilogue* ep,
                   void* y, int64_t ldy, int32_t y_t) {
  if (int rc = check_common(w, EK_W_S8)) return rc;
  const int64_t k = w->info.k, n = w->info.n, mp = ek_padded_m(m);
  if (!x || !ep || !y || !ep->w_scale || m < 0) return ek::fail(EK_EINVAL, "gemm_u8s8_t: bad pointers");
  if (x_t ? ldx < mp : ldx < k) return ek::fail(EK_EINVAL, "gemm_u8s8_t: x stride too small for its layout");
  if (y_t ? ldy < mp : ldy < n) return ek::fail(EK_EINVAL, "gemm_u8s8_t: y stride too small for its layout");
  if (ep->out_u8 && !(ep->out_scale > 0.f)) return ek::fail(EK_EINVAL, "gemm_u8s8_t: out_scale must be positive");
  if (m == 0) return EK_OK;
  if (int rc = check_xt(w, m, x_t ? ldx : -1, "gemm_u8s8_t")) return rc;
  ek::Gemm g{w, x, m, ldx, ep, y, ldy, ep->x_zp, nullptr};
  if (w->ukernel->transposed_io) {
    g.x_t = x_t != 0;
    g.y_t = y_t != 0;
    return run_u8s8(g);
  }
  // Other microkernels: bring the operands to the plain layout and back.
  std::vector<uint8_t> xr;
  if (x_t) {
    xr.resize(m * k);
    for (int64_t c = 0; c < k; ++c)
      for (int64_t i = 0; i < m; ++i) xr[i * k + c] = x[c * ldx + i];
    g.x = xr.data();
    g.ldx = k;
  }
  const size_t esize = ep->out_u8 ? 1 : 4;
  std::vector<unsigned char> yr;
  if (y_t) {
    yr.resize(m * n * esize);
    g.y = yr.data();
    g.ldy = n;
  }
  if (int rc = run_u8s8(g)) return rc;
  if (y_t)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j)
        std::memcpy(static_cast<unsigned char*>(y) + (j * ldy + i) * esize, &yr[(i * n + j) * esize], esize);
  return EK_OK;
}

int ek_gemm_u8s8_acc(const ek_packed* w, const uint8_t* x, int64_t m, int32_t x_zp, int32_t* acc) {
  if (int rc = check_common(w, EK_W_S8)) return rc;
  if (!x || !acc || m < 0) return ek::fail(EK_EINVAL, "gemm_u8s8_acc: bad pointers");
  if (m == 0) return EK_OK;
  if (int rc = check_xt(w, m, -1, "gemm_u8s8_acc")) return rc;
  ek::Gemm g{w, x, m, w->info.k, nullptr, nullptr, 0, x_zp, acc};
  return run_u8s8(g);
}

int ek_gemm_f32(const ek_packed* w, const float* x, int64_t m, int64_t ldx, const float* bias, int32_t gelu,
                float* y, int64_t ldy) {
  if (int rc = check_common(w, EK_W_F32)) return rc;
  if (!x || !y || m < 0 || ldx < w->info.k || ldy < w->info.n) return ek::fail(EK_EINVAL, "gemm_f32: bad pointers or strides");
  ek::active_config().f32_gemm(w, x, m, ldx, bias, gelu, y, ldy);
  return EK_OK;
}

void ek_quantize_u8(const float* x, int64_t n, float scale, int32_t zp, uint8_t* q) {
  ek::active_config().quantize_u8(x, n, scale, zp, q);
}

int ek_gemm_u8s8_t_part(const ek_packed* w, const uint8_t* xt, int64_t m, int64_t ldxt, const ek_epilogue* ep,
                        void* y, int64_t ldy, int32_t y_t, int64_t tile0, int64_t tile1, int64_t n0, int64_t n1) {
  if (int rc = check_common(w, EK_W_S8)) return rc;
  const int64_t mp = ek_padded_m(m), n = w->info.n;
  if (!xt || !ep || !y || !ep->w_scale || m <= 0 || ldxt < mp || (y_t ? ldy < mp : ldy < n) || tile0 < 0 ||
      tile1 <= tile0 || tile1 * ek::kTokenTile > mp || n0 < 0 || n1 <= n0 || n1 > n || n0 % 4 ||
      (n1 % 4 && n1 != n))
    return ek::fail(EK_EINVAL, "gemm_u8s8_t_part: bad pointers, strides, tiles or output range");
  if (ep->out_u8 && !(ep->out_scale > 0.f)) return ek::fail(EK_EINVAL, "gemm_u8s8_t_part: out_scale must be positive");
  if (!w->ukernel->run_part)
    return ek::fail(EK_EUNSUPPORTED, "gemm_u8s8_t_part: 4x1 sparse weights on the AVX-512 VNNI path only");
  if (int rc = check_xt(w, m, ldxt, "gemm_u8s8_t_part")) return rc;
  ek::Gemm g{w, xt, m, ldxt, ep, y, ldy, ep->x_zp, nullptr};
  g.x_t = true;
  g.y_t = y_t != 0;
  w->ukernel->run_part(g, tile0, tile1, n0 / 4, (n1 + 3) / 4);
  return EK_OK;
}

int ek_gemm_u8s8_t_tile(const ek_packed* w, const uint8_t* xt, int64_t m, int64_t ldxt, const ek_epilogue* ep,
                        void* y, int64_t ldy, int32_t y_t, int64_t tile) {
  if (!w) return ek::fail(EK_EINVAL, "null packed weight");
  return ek_gemm_u8s8_t_part(w, xt, m, ldxt, ep, y, ldy, y_t, tile, tile + 1, 0, w->info.n);
}

int ek_quantize_u8_t_tile(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* xt,
                          int64_t ldxt, int64_t tile) {
  const int64_t mp = ek_padded_m(m);
  if (!x || !xt || m < 0 || k < 0 || ldx < k || ldxt < mp || tile < 0 || tile * ek::kTokenTile >= std::max<int64_t>(mp, 1))
    return ek::fail(EK_EINVAL, "quantize_u8_t_tile: bad pointers, strides or tile");
  if (!(scale > 0.f) || zp < 0 || zp > 255) return ek::fail(EK_EINVAL, "quantize_u8_t_tile: scale must be > 0 and zp in 0..255");
  const ek::QuantizeTTileFn fn = ek::active_config().quantize_u8_t_tile;
  if (!fn) return ek::fail(EK_EUNSUPPORTED, "quantize_u8_t_tile: AVX-512 VNNI path only");
  fn(x, m, k, ldx, scale, zp, xt, ldxt, tile);
  return EK_OK;
}

int ek_quantize_u8_t(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* xt,
                     int64_t ldxt) {
  const int64_t mp = ek_padded_m(m);
  if (!x || !xt || m < 0 || k < 0 || ldx < k || ldxt < mp) return ek::fail(EK_EINVAL, "quantize_u8_t: bad pointers or strides");
  if (!(scale > 0.f) || zp < 0 || zp > 255) return ek::fail(EK_EINVAL, "quantize_u8_t: scale must be > 0 and zp in 0..255");
  ek::active_config().quantize_u8_t(x, m, k, ldx, scale, zp, xt, ldxt);
  return EK_OK;
}

double ek_peak_macs(double seconds) {
  double (*fn)(double) = ek::active_config().peak_macs;
  return fn ? fn(seconds) : 0.0;
}
}
