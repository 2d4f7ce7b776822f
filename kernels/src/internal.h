// Internal structures shared by the kernels' translation units (not part of the C ABI).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "edgekit/kernels.h"

namespace ek {
struct GemmConfig;
}

struct ek_packed {
  ek_packed_info info{};
  int64_t nb = 0;                  // block-rows of 4 outputs: ceil(n/4)
  std::vector<int8_t> w_s8;        // [n,k] row-major original (reference path + unpack)
  std::vector<float> w_f32;        // [n,k] row-major original (fp32 weights)
  std::vector<int32_t> rowsum;     // [n] sum_k W[n,k] (zero-point correction)
  // AVX-512 VNNI dense: [ceil(n/16)][ceil(k/4)][16][4] bytes, zero padded.
  std::vector<int8_t> vnni;
  int64_t n16 = 0, kq = 0;
  // 4x1 sparse, int8: block-row r owns quads row_ptr[r]..row_ptr[r+1]; quad q has columns
  // quad_cols[4q..4q+3] (padded with a zero-weight column) and weights quad_w[16q + 4i + j] = W[4r+i, c_j].
  std::vector<int64_t> row_ptr;
  std::vector<int32_t> quad_cols;
  std::vector<int8_t> quad_w;
  // AVX2 int8 (exact u8 x s8 through 16-bit vpmaddwd, no vpmaddubsw saturation):
  // dense: [ceil(n/8)][ceil(k/2)][8 outputs][2 k] int16, zero padded;
  std::vector<int16_t> w16;
  int64_t n8 = 0, kp2 = 0;
  // 4x1 sparse: the kept columns of block-row r in pairs pair_ptr[r]..pair_ptr[r+1]; pair p has columns
  // pair_cols[2p], pair_cols[2p+1] (padded with a zero-weight column) and one 32-bit word per output row,
  // pair_w[4p + i] = (int16 W[4r+i, c0]) | (int16 W[4r+i, c1]) << 16, ready to broadcast into vpmaddwd.
  std::vector<int64_t> pair_ptr;
  std::vector<int32_t> pair_cols;
  std::vector<int32_t> pair_w;
  // Every weight in [-64, 64] (checked for ISAs with 7-bit microkernels): vpmaddubsw cannot saturate
  // (2 * 255 * 64 < 32768), so the AVX2 u8s7 kernels read the VNNI layouts above instead of w16 / pair_*.
  bool w7 = false;
  // 4x1 sparse, generic paths (int8 and fp32): block b of block-row r at blk_ptr[r]..blk_ptr[r+1],
  // column blk_cols[b], weights blk_s8/blk_f32[4b + i] = W[4r+i, c].
  std::vector<int64_t> blk_ptr;
  std::vector<int32_t> blk_cols;
  std::vector<int8_t> blk_s8;
  std::vector<float> blk_f32;
  // The microkernel (and layout) it was packed for: an entry of the packing ISA's table (config.h). Last member,
  // so that the kernels' offsets into this struct stay what they were.
  const ek::GemmConfig* ukernel = nullptr;
};

namespace ek {
void set_error(const std::string& msg);
int fail(int code, const std::string& msg);
void parallel_for(int64_t n, void (*fn)(int64_t, void*), void* ctx);
int num_threads();
// Per-thread scratch memory, grown on demand, for the per-ISA translation units. Those must not instantiate
// std containers: an out-of-line std::vector member compiled with -mavx512f in one TU and with baseline flags
// in another is one linker symbol, and the linker may keep the AVX-512 copy for every caller (SIGILL on an
// AVX2 CPU). Contents are unspecified after a call with a larger size. Slots 0..7; a thread uses a slot for
// one buffer at a time (0 and 1 are the GEMMs'; the engine's attention units take others through ek_scratch).
void* scratch(int slot, size_t bytes);
constexpr int kMaxPeakThreads = 256;

// Per-ISA implementations. `acc_only` variants write int32 accumulators (zero point applied).
struct Gemm {
  const ek_packed* w;
  const uint8_t* x;
  int64_t m, ldx;
  const ek_epilogue* ep;  // null -> int32 accumulators into acc
  void* y;
  int64_t ldy;
  int32_t x_zp;
  int32_t* acc;
  bool x_t = false, y_t = false;  // transposed layouts (see ek_gemm_u8s8_t); set only for microkernels that read them
};
constexpr int64_t kTokenTile = 64;  // token tile of the 4x1 kernels; transposed operands are padded to it
float gelu_ref(float y);
// Scalar epilogue for one value (reference semantics; vector paths must match it).
inline void epilogue_store(const ek_epilogue* ep, int64_t n, int32_t acc, void* y, int64_t idx);
}  // namespace ek

#include <cmath>
inline void ek::epilogue_store(const ek_epilogue* ep, int64_t n, int32_t acc, void* y, int64_t idx) {
  float v = (float)acc * (ep->x_scale * ep->w_scale[n]);
  if (ep->bias) v += ep->bias[n];
  if (ep->gelu) v = gelu_ref(v);
  if (ep->out_u8) {
    float q = std::nearbyint(v / ep->out_scale) + (float)ep->out_zp;
    q = q < 0.f ? 0.f : (q > 255.f ? 255.f : q);
    static_cast<uint8_t*>(y)[idx] = (uint8_t)q;
  } else {
    static_cast<float*>(y)[idx] = v;
  }
}
