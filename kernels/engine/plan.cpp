// How a run is split: chunks of sequences for QKV + attention, buffer sizes, and which layers run tile by tile,
// with q, k, v transposed or whole GEMMs. Every choice that depends on the ISA asks the active ISA's table.
#include <algorithm>

#include "../src/config.h"
#include "encoder_impl.h"

namespace ek {
namespace engine {

void EncoderImpl::plan(int64_t B) {
  B_ = B;
  T_ = (int64_t)tok_id_.size();
  const int64_t T = T_, H = h_;
  x_.resize(T * H);
  // chunks of whole sequences of about kChunkTokens tokens for QKV + attention (a longer sequence is its own)
  chunks_.clear();
  for (int64_t b = 0, tok = 0, first = 0; b < B; ++b) {
    tok += seq_len_[b];
    if (tok >= kChunkTokens || b == B - 1) {
      chunks_.emplace_back(first, b + 1);
      first = b + 1;
      tok = 0;
    }
  }
  int64_t chunk_max = 0;
  for (const auto& [b0, b1] : chunks_)
    chunk_max = std::max(chunk_max, seq_start_[b1 - 1] + seq_len_[b1 - 1] - seq_start_[b0]);
  chunk_start_.resize(B);
  // + 64: attention on transposed q, k, v reads whole 16-key blocks past the last token (masked)
  qkv_.resize(std::max(chunk_max, ek_padded_m(chunk_max)) * 3 * H + 64);
  ctx_.resize(T * H);
  tmp_.resize(T * std::max(H, inter_));
  tp_ = t_stride(T);
  quant_t_ = chain_t_ && active_config().u8s8_4x1.transposed_io;
  xq_.resize(std::max(T * std::max(H, inter_), tp_ * H));
  hq_.resize(tp_ * inter_);
  tile_fused_layers = 0;
  aligned_ = true;
  for (const auto& ch : chunks_) aligned_ = aligned_ && seq_start_[ch.first] % 64 == 0;
}

// Layer `layer`'s fused QKV when its input can be quantised for all T rows at once by the step that makes them
// (add_ln, the tile tasks): with a single chunk, or with several that all start on a 64-token tile (batches of
// 128-token sequences), whose head tasks then read their chunk's columns of it.
const Linear* EncoderImpl::qkv_reader(size_t layer) const {
  if (layer >= layers_.size() || !layers_[layer].fused || !takes_t(layers_[layer].qkv)) return nullptr;
  const bool whole = chunks_.size() == 1 || (aligned_ && qkv_transposed(layers_[layer]));
  return whole ? &layers_[layer].qkv : nullptr;
}

// Whether the tiles of T tokens share out over the threads evenly enough for one task per tile (2 tiles on 2
// threads at batch 1 x 128 tokens); with fewer tiles than threads, or a remainder that would leave a thread
// idle for a large share of the work, the whole-GEMM calls (split by output channels) are used instead.
bool EncoderImpl::tiles_share_out(int64_t T) const {
  const int64_t tiles = ek_padded_m(T) / 64;
  return tile_fusion && chain_t_ && quant_t_ && active_config().token_tiles && h_ % 16 == 0 && tiles >= threads_ &&
         (tiles % threads_ == 0 || tiles >= 4 * threads_);
}

// Whether layer L's fused QKV runs in the attention tasks and writes q, k, v transposed (see attention_layer): a
// sparse int8 QKV on the token-tile path with the fp32 (or int8) attention on transposed q, k, v.
bool EncoderImpl::qkv_transposed(const Layer& L) const {
  const IsaConfig& cfg = active_config();
  return L.fused && L.qkv.int8 && L.qkv.sparse && chain_t_ && !attn_bf16_ && cfg.token_tiles && cfg.attention_t.takes(h_ / heads_);
}

// Whether layer L runs tile by tile after attention (run_tile) on T tokens: every Linear after attention
// sparse int8, the tiles sharing out over the threads and GELU (erf), the activation the tile's FFN-in fuses.
bool EncoderImpl::tiled(const Layer& L, int64_t T) const {
  return tiles_share_out(T) && L.o.int8 && L.ffn_in.int8 && L.ffn_out.int8 && L.o.sparse && L.ffn_in.sparse &&
         L.ffn_out.sparse && fused_act();
}

// The attention tasks' context for sequences [b0, b1) of layer L, q, k, v at row stride ldq.
AttnCtx EncoderImpl::chunk_ctx(const Layer& L, int64_t b0, int64_t b1, int64_t ldq, bool cls_only) {
  const int64_t H = h_, d = H / heads_, c0 = seq_start_[b0];
  for (int64_t b = b0; b < b1; ++b) chunk_start_[b] = seq_start_[b] - c0;
  const bool t = qkv_transposed(L);
  return AttnCtx{qkv_.data(), ldq, 0, H, 2 * H, ctx_.data() + c0 * H, chunk_start_.data() + b0, seq_len_.data() + b0,
                 b1 - b0, heads_, d, H, attention_kernel(d, attn_bf16_, t, t && attn_int8_), t, cls_only};
}

// Row stride of the transposed u8 operands ([k][stride], tokens along a row): T padded to 64 tokens, plus one
// more cache line when that is an even number of lines. The sparse kernels gather one 64-byte line per kept
// column per 64-token tile; at a stride of 2^j lines those lines fall into 1/2^j of the cache sets (at batch
// 8 x seq 128, a 1 KiB stride, 4 of L1's 64 sets), and conflict misses evict what the next tile reuses.
int64_t EncoderImpl::t_stride(int64_t T) {
  const int64_t tp = ek_padded_m(T);
  return (tp / 64) % 2 == 0 ? tp + 64 : tp;
}
}  // namespace engine
}  // namespace ek
