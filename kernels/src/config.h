// The kernel configuration of each ISA (XNNPACK's config pattern): one table per path pairs every microkernel
// with the packing function that builds the weight layout it reads and its tile, and lists the attention and
// LayerNorm kernels with the head / hidden sizes they take. isa_config() is the only place that maps an ISA to
// code; the selectors below the tables are the only places that choose among a table's entries.
#pragma once
#include <cstdint>

#include "ukernels.h"

namespace ek {
// An int8 GEMM microkernel and the weight layout it reads.
struct GemmConfig {
  const char* name;           // the microkernel, e.g. "u8s8_gemm_6x16__avx2"
  const char* packed_kernel;  // what weights packed for it report (ek_packed_info.kernel), e.g. "avx2-u8s8-dense"
  void (*pack)(ek_packed* p); // builds its layout from p's row-major weights and generic blocks; null: none needed
  void (*run)(const Gemm& g);
  // Token tiles and output ranges on the calling thread (ek_gemm_u8s8_t_part); null: not supported.
  void (*run_part)(const Gemm& g, int64_t tile0, int64_t tile1, int64_t r0, int64_t r1);
  int mr, nr;                 // register tile: rows (tokens) x outputs; 4x1 kernels: tokens x 4 outputs
  bool transposed_io;         // reads a transposed x and writes a transposed y natively (ek_gemm_u8s8_t)
};

// An attention kernel and the head sizes it takes: d a multiple of d_multiple, at most d_max. The kernel is named
// by an enum, not a pointer, and called through attention_kernels.h: the engine's units then call it directly, as
// link-time optimisation of the engine and these kernels was tuned with.
struct AttentionConfig {
  const char* name;
  AttentionKernel kernel;
  int64_t d_multiple, d_max;
  bool takes(int64_t d) const { return kernel != AttentionKernel::kNone && d % d_multiple == 0 && d <= d_max; }
};

struct LayerNormConfig {
  LayerNormKernel kernel;
  int64_t h_multiple;
};

struct IsaConfig {
  ek_isa isa;
  GemmConfig u8s8_dense, u8s8_4x1;  // any int8 weights
  GemmConfig u8s7_dense, u8s7_4x1;  // weights in [-64, 64]; run == null: this path has no 7-bit kernels
  F32GemmFn f32_gemm;
  const char* f32_packed_kernel;
  QuantizeFn quantize_u8;
  QuantizeTFn quantize_u8_t;
  QuantizeTTileFn quantize_u8_t_tile;  // null: not supported on this path
  double (*peak_macs)(double seconds); // null: no measured peak
  // Row-major fp32 attention, best first (the first that takes d runs); the last one takes every d.
  AttentionConfig attention[3];
  AttentionConfig attention_bf16;      // attention='bf16' (needs AVX512_BF16 too)
  AttentionConfig attention_t;         // on transposed q, k, v
  AttentionConfig attention_t_int8;    // the same with int8 products (attention='int8')
  LayerNormConfig add_layer_norm[3];   // best first, as attention
  // Token-tile calls (ek_gemm_u8s8_t_part, ek_quantize_u8_t_tile): the engine's tile-by-tile layers.
  bool token_tiles;
};

// Weight layouts (pack.cpp), each built after the row-major copy, the row sums and the generic 4x1 blocks.
void pack_dense_k4(ek_packed* p);   // [n/16][k/4][16 outputs][4 k] bytes: vpdpbusd, vpmaddubsw
void pack_4x1_quads(ek_packed* p);  // the kept columns of each block-row in fours, 4x4 bytes of weights each
void pack_dense_k2(ek_packed* p);   // [n/8][k/2][8 outputs][2 k] int16: vpmaddwd
void pack_4x1_pairs(ek_packed* p);  // the kept columns in pairs, one int16 pair per output row

const IsaConfig& isa_config(ek_isa isa);
inline const IsaConfig& active_config() { return isa_config(ek_active_isa()); }

// The int8 microkernel for weights w [n, k] of a pattern on cfg's path (7-bit ones where the path has them and
// every weight fits).
const GemmConfig& select_gemm(const IsaConfig& cfg, ek_pattern pattern, const int8_t* w, int64_t n, int64_t k,
                              bool* w7);
// The row-major attention kernel for head size d (bf16: attention='bf16' asked for; it runs where it takes d).
const AttentionConfig& select_attention(const IsaConfig& cfg, int64_t d, bool bf16);
const LayerNormConfig& select_add_layer_norm(const IsaConfig& cfg, int64_t h);

bool cpu_has_avx512_bf16();
}  // namespace ek
