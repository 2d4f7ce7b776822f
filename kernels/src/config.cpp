// One kernel table per ISA, and the selectors over them (see config.h).
#include "config.h"

#include <algorithm>
#include <cstdint>

namespace ek {
namespace {
constexpr int64_t kAnyD = INT64_MAX;

constexpr AttentionConfig kAttentionRef{"f32_attention__ref", AttentionKernel::kRef, 1, kAnyD};
constexpr AttentionConfig kAttentionAvx2{"f32_attention__avx2", AttentionKernel::kAvx2, 8, 128};
constexpr AttentionConfig kAttentionAvx512{"f32_attention__avx512", AttentionKernel::kAvx512, 16, 128};
constexpr LayerNormConfig kLayerNormRef{LayerNormKernel::kRef, 1};
constexpr LayerNormConfig kLayerNormAvx2{LayerNormKernel::kAvx2, 8};
constexpr LayerNormConfig kLayerNormAvx512{LayerNormKernel::kAvx512, 16};

constexpr IsaConfig kRef{
    EK_ISA_REF,
    {"u8s8_gemm__ref", "ref", nullptr, u8s8_gemm__ref, nullptr, 1, 1, false},
    {"u8s8_gemm__ref", "ref", nullptr, u8s8_gemm__ref, nullptr, 1, 1, false},
    {},
    {},
    f32_gemm__ref,
    "ref-f32",
    u8_quantize__ref,
    u8_quantize_t__generic,
    nullptr,
    nullptr,
    {kAttentionRef, {}, {}},
    {},
    {},
    {},
    {kLayerNormRef, {}, {}},
    false,
};

// AVX2: exact int8 by widening both operands to int16 (vpmaddwd); vpmaddubsw where the weights fit in 7 bits.
constexpr IsaConfig kAvx2{
    EK_ISA_AVX2,
    {"u8s8_gemm_6x16__avx2", "avx2-u8s8-dense", pack_dense_k2, u8s8_gemm_6x16__avx2, nullptr, 6, 16, false},
    {"u8s8_spmm_4x1_16__avx2", "avx2-u8s8-4x1", pack_4x1_pairs, u8s8_spmm_4x1_16__avx2, nullptr, 16, 4, true},
    {"u8s7_gemm_6x16__avx2", "avx2-u8s7-dense", pack_dense_k4, u8s7_gemm_6x16__avx2, nullptr, 6, 16, false},
    {"u8s7_spmm_4x1_16__avx2", "avx2-u8s7-4x1", pack_4x1_quads, u8s7_spmm_4x1_16__avx2, nullptr, 16, 4, true},
    f32_gemm__avx2,
    "f32",
    u8_quantize__avx2,
    u8_quantize_t__avx2,
    nullptr,
    int8_peak__avx2,
    {kAttentionAvx2, kAttentionRef, {}},
    {},
    {},
    {},
    {kLayerNormAvx2, kLayerNormRef, {}},
    false,
};

// AVX-512 without VNNI: the portable loops compiled for AVX-512BW. AVX2 attention for head sizes that are a
// multiple of 8 but not of 16.
constexpr IsaConfig kAvx512{
    EK_ISA_AVX512,
    {"u8s8_gemm_1x1__avx512", "avx512bw-generic", nullptr, u8s8_gemm_1x1__avx512, nullptr, 1, 1, false},
    {"u8s8_spmm_4x1__avx512", "avx512bw-generic", nullptr, u8s8_spmm_4x1__avx512, nullptr, 1, 4, false},
    {},
    {},
    f32_gemm__avx512,
    "f32",
    u8_quantize__avx512,
    u8_quantize_t__generic,
    nullptr,
    nullptr,
    {kAttentionAvx512, kAttentionAvx2, kAttentionRef},
    {"bf16_attention__avx512bf16", AttentionKernel::kAvx512Bf16, 16, 128},
    {"f32_attention_t__avx512", AttentionKernel::kAvx512T, 16, 128},
    {},
    {kLayerNormAvx512, kLayerNormAvx2, kLayerNormRef},
    false,
};

constexpr IsaConfig kAvx512Vnni{
    EK_ISA_AVX512_VNNI,
    {"u8s8_gemm_6x64__avx512vnni", "vnni-dense", pack_dense_k4, u8s8_gemm_6x64__avx512vnni, nullptr, 6, 64, false},
    {"u8s8_spmm_4x1_64__avx512vnni", "vnni-4x1", pack_4x1_quads, u8s8_spmm_4x1_64__avx512vnni,
     u8s8_spmm_4x1_64_part__avx512vnni, 64, 4, true},
    {},
    {},
    f32_gemm__avx512,
    "f32",
    u8_quantize__avx512,
    u8_quantize_t__avx512vnni,
    u8_quantize_t_tile__avx512vnni,
    int8_peak__avx512vnni,
    {kAttentionAvx512, kAttentionAvx2, kAttentionRef},
    {"bf16_attention__avx512bf16", AttentionKernel::kAvx512Bf16, 16, 128},
    {"f32_attention_t__avx512", AttentionKernel::kAvx512T, 16, 128},
    {"u8s8_attention_t__avx512vnni", AttentionKernel::kAvx512VnniT, 16, 128},
    {kLayerNormAvx512, kLayerNormAvx2, kLayerNormRef},
    true,
};
}  // namespace

const IsaConfig& isa_config(ek_isa isa) {
  switch (isa) {
    case EK_ISA_AVX512_VNNI: return kAvx512Vnni;
    case EK_ISA_AVX512: return kAvx512;
    case EK_ISA_AVX2: return kAvx2;
    default: return kRef;
  }
}

const GemmConfig& select_gemm(const IsaConfig& cfg, ek_pattern pattern, const int8_t* w, int64_t n, int64_t k,
                              bool* w7) {
  const bool dense = pattern == EK_DENSE;
  *w7 = cfg.u8s7_dense.run && std::all_of(w, w + n * k, [](int8_t v) { return v >= -64 && v <= 64; });
  if (*w7) return dense ? cfg.u8s7_dense : cfg.u8s7_4x1;
  return dense ? cfg.u8s8_dense : cfg.u8s8_4x1;
}

const AttentionConfig& select_attention(const IsaConfig& cfg, int64_t d, bool bf16) {
  if (bf16 && cfg.attention_bf16.takes(d)) return cfg.attention_bf16;
  for (const AttentionConfig& a : cfg.attention)
    if (a.takes(d)) return a;
  return kAttentionRef;
}

const LayerNormConfig& select_add_layer_norm(const IsaConfig& cfg, int64_t h) {
  for (const LayerNormConfig& l : cfg.add_layer_norm)
    if (l.kernel != LayerNormKernel::kNone && h % l.h_multiple == 0) return l;
  return kLayerNormRef;
}
}  // namespace ek
