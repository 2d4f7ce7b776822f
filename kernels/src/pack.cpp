// Packing: done once per weight, for the active ISA: the generic blocks, then the layout of the microkernel its
// table pairs with the weight (config.h).
#include <algorithm>
#include <cstring>
#include <new>

#include "config.h"
#include "internal.h"

namespace {
bool block_kept(const int8_t* w8, const float* wf, int64_t n, int64_t k, int64_t r, int64_t c) {
  for (int i = 0; i < 4 && 4 * r + i < n; ++i) {
    const int64_t idx = (4 * r + i) * k + c;
    if (w8 ? w8[idx] != 0 : wf[idx] != 0.f) return true;
  }
  return false;
}

void build_blocks(ek_packed* p, const int8_t* w8, const float* wf) {
  const int64_t n = p->info.n, k = p->info.k;
  p->blk_ptr.assign(p->nb + 1, 0);
  for (int64_t r = 0; r < p->nb; ++r) {
    for (int64_t c = 0; c < k; ++c) {
      const bool dense = p->info.pattern == EK_DENSE;
      if (!dense && !block_kept(w8, wf, n, k, r, c)) continue;
      p->blk_cols.push_back((int32_t)c);
      for (int i = 0; i < 4; ++i) {
        const bool in = 4 * r + i < n;
        if (w8) p->blk_s8.push_back(in ? w8[(4 * r + i) * k + c] : 0);
        if (wf) p->blk_f32.push_back(in ? wf[(4 * r + i) * k + c] : 0.f);
      }
    }
    p->blk_ptr[r + 1] = (int64_t)p->blk_cols.size();
  }
  p->info.nnz_blocks = (int64_t)p->blk_cols.size();
}

}  // namespace

namespace ek {
void pack_dense_k4(ek_packed* p) {
  const int64_t n = p->info.n, k = p->info.k;
  p->n16 = (n + 15) / 16;
  p->kq = (k + 3) / 4;
  p->vnni.assign(p->n16 * p->kq * 64, 0);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t t = 0; t < k; ++t)
      p->vnni[((j / 16) * p->kq + t / 4) * 64 + (j % 16) * 4 + (t % 4)] = p->w_s8[j * k + t];
}

void pack_4x1_quads(ek_packed* p) {
  // The kept columns of each block-row, grouped in fours (last quad padded).
  p->n16 = (p->info.n + 15) / 16;
  p->kq = (p->info.k + 3) / 4;
  p->row_ptr.assign(p->nb + 1, 0);
  for (int64_t r = 0; r < p->nb; ++r) {
    const int64_t b0 = p->blk_ptr[r], b1 = p->blk_ptr[r + 1];
    for (int64_t b = b0; b < b1; b += 4) {
      for (int j = 0; j < 4; ++j) p->quad_cols.push_back(b + j < b1 ? p->blk_cols[b + j] : p->blk_cols[b0]);
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) p->quad_w.push_back(b + j < b1 ? p->blk_s8[4 * (b + j) + i] : 0);
    }
    p->row_ptr[r + 1] = (int64_t)p->quad_cols.size() / 4;
  }
}

void pack_dense_k2(ek_packed* p) {
  const int64_t n = p->info.n, k = p->info.k;
  p->n8 = (n + 7) / 8;
  p->kp2 = (k + 1) / 2;
  p->w16.assign(p->n8 * p->kp2 * 16, 0);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t t = 0; t < k; ++t)
      p->w16[((j / 8) * p->kp2 + t / 2) * 16 + (j % 8) * 2 + (t % 2)] = p->w_s8[j * k + t];
}

void pack_4x1_pairs(ek_packed* p) {
  p->pair_ptr.assign(p->nb + 1, 0);
  for (int64_t r = 0; r < p->nb; ++r) {
    const int64_t b0 = p->blk_ptr[r], b1 = p->blk_ptr[r + 1];
    for (int64_t b = b0; b < b1; b += 2) {
      const bool two = b + 1 < b1;
      p->pair_cols.push_back(p->blk_cols[b]);
      p->pair_cols.push_back(two ? p->blk_cols[b + 1] : p->blk_cols[b]);
      for (int i = 0; i < 4; ++i) {
        const uint16_t lo = (uint16_t)(int16_t)p->blk_s8[4 * b + i];
        const uint16_t hi = two ? (uint16_t)(int16_t)p->blk_s8[4 * (b + 1) + i] : 0;
        p->pair_w.push_back((int32_t)((uint32_t)lo | ((uint32_t)hi << 16)));
      }
    }
    p->pair_ptr[r + 1] = (int64_t)p->pair_cols.size() / 2;
  }
}
}  // namespace ek

namespace {
ek_packed* make(int64_t n, int64_t k, ek_pattern pattern, ek_wtype wt) {
  if (n <= 0 || k <= 0) {
    ek::set_error("pack: n and k must be positive");
    return nullptr;
  }
  if (pattern != EK_DENSE && pattern != EK_BLOCK_4X1) {
    ek::set_error("pack: pattern must be dense or 4x1");
    return nullptr;
  }
  ek_packed* p = new (std::nothrow) ek_packed();
  if (!p) return nullptr;
  p->info.version = EK_PACK_VERSION;
  p->info.n = n;
  p->info.k = k;
  p->info.pattern = pattern;
  p->info.wtype = wt;
  p->info.isa = ek_active_isa();
  p->nb = (n + 3) / 4;
  return p;
}
}  // namespace

extern "C" ek_packed* ek_pack_s8(const int8_t* w, int64_t n, int64_t k, ek_pattern pattern) {
  ek_packed* p = make(n, k, pattern, EK_W_S8);
  if (!p) return nullptr;
  try {
    p->w_s8.assign(w, w + n * k);
    p->rowsum.assign(n, 0);
    for (int64_t j = 0; j < n; ++j)
      for (int64_t t = 0; t < k; ++t) p->rowsum[j] += w[j * k + t];
    build_blocks(p, w, nullptr);
    const ek::GemmConfig& uk = ek::select_gemm(ek::isa_config((ek_isa)p->info.isa), pattern, w, n, k, &p->w7);
    if (uk.pack) uk.pack(p);
    p->ukernel = &uk;
    p->info.kernel = uk.packed_kernel;
  } catch (const std::bad_alloc&) {
    delete p;
    ek::set_error("pack: out of memory");
    return nullptr;
  }
  return p;
}

extern "C" ek_packed* ek_pack_f32(const float* w, int64_t n, int64_t k, ek_pattern pattern) {
  ek_packed* p = make(n, k, pattern, EK_W_F32);
  if (!p) return nullptr;
  try {
    p->w_f32.assign(w, w + n * k);
    build_blocks(p, nullptr, w);
    p->info.kernel = ek::isa_config((ek_isa)p->info.isa).f32_packed_kernel;
  } catch (const std::bad_alloc&) {
    delete p;
    ek::set_error("pack: out of memory");
    return nullptr;
  }
  return p;
}

extern "C" void ek_packed_free(ek_packed* p) { delete p; }

extern "C" int ek_packed_get_info(const ek_packed* p, ek_packed_info* info) {
  if (!p || !info) return ek::fail(EK_EINVAL, "null packed weight");
  *info = p->info;
  return EK_OK;
}

extern "C" int ek_unpack_s8(const ek_packed* p, int8_t* w) {
  if (!p || p->info.wtype != EK_W_S8) return ek::fail(EK_EINVAL, "unpack_s8: not an int8 packed weight");
  // Rebuild from the blocks (not from the kept original), so the round trip tests the packed layout.
  const int64_t n = p->info.n, k = p->info.k;
  std::memset(w, 0, n * k);
  for (int64_t r = 0; r < p->nb; ++r)
    for (int64_t b = p->blk_ptr[r]; b < p->blk_ptr[r + 1]; ++b)
      for (int i = 0; i < 4 && 4 * r + i < n; ++i) w[(4 * r + i) * k + p->blk_cols[b]] = p->blk_s8[4 * b + i];
  return EK_OK;
}

extern "C" int ek_unpack_f32(const ek_packed* p, float* w) {
  if (!p || p->info.wtype != EK_W_F32) return ek::fail(EK_EINVAL, "unpack_f32: not an fp32 packed weight");
  const int64_t n = p->info.n, k = p->info.k;
  std::memset(w, 0, n * k * sizeof(float));
  for (int64_t r = 0; r < p->nb; ++r)
    for (int64_t b = p->blk_ptr[r]; b < p->blk_ptr[r + 1]; ++b)
      for (int i = 0; i < 4 && 4 * r + i < n; ++i) w[(4 * r + i) * k + p->blk_cols[b]] = p->blk_f32[4 * b + i];
  return EK_OK;
}
