// The encoder's state and steps (internal to libedgekit.so). encoder.cpp loads the weights and runs a forward;
// plan.cpp decides how a run is split (chunks of sequences, tile by tile or whole GEMMs, transposed q, k, v).
//
// Per run: drop padding tokens (GEMMs see only real tokens of all sequences, concatenated), embeddings +
// LayerNorm, then per layer: quantise -> fused QKV GEMM -> attention per (sequence, head) in fp32 ->
// quantise -> O GEMM -> add + LayerNorm -> quantise -> FFN-in GEMM with GELU and u8 requantisation fused
// in its epilogue (another activation: applied after the GEMM, then requantised) -> FFN-out GEMM -> add +
// LayerNorm; then pooling (mean, first token, max or none) and optional L2 norm, or a classifier head (on the
// pooled vector after an optional dense + tanh/ReLU, or on every token). Buffers grow once to the largest shape
// seen and are reused.
// On the token-tile path (4x1 sparse int8 on AVX-512 VNNI) the work is split so that data stays on the core that
// made it: each attention task computes its own head's q, k, v rows (attn_task), and the steps after attention
// run one 64-token tile per task (run_tile), so a layer is two parallel regions.
// Pre-LN encoders (ViT, image input) take their own, plainer loop (forward_pre): patch GEMM + prefix tokens +
// positions into the residual stream res_, then per layer x = LN1(res) -> the same attention step -> res += O(ctx),
// x = LN2(res) -> the same FFN step -> res += FFN(x); final LayerNorm, pooling and head as above.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "attention.h"
#include "encoder.h"
#include "weights.h"

namespace ek {
namespace engine {

// Wall time of a run's steps into a Profile; does nothing without one.
class StepTimer {
 public:
  using clock = std::chrono::steady_clock;
  explicit StepTimer(Profile* p) : p_(p) { restart(); }
  bool on() const { return p_ != nullptr; }
  void restart() {
    if (p_) t_ = clock::now();
  }
  double elapsed_us() const { return std::chrono::duration<double, std::micro>(clock::now() - t_).count(); }
  // The time since the last restart (or stop) into `step`; restarts.
  void stop(const char* step) {
    if (!p_) return;
    (*p_)[step] += elapsed_us();
    t_ = clock::now();
  }
  void add(const char* step, double us) {
    if (p_) (*p_)[step] += us;
  }

 private:
  Profile* p_;
  clock::time_point t_;
};

class EncoderImpl {
 public:
  EncoderImpl(const EncoderConfig& cfg, const TensorLookup& t, int threads, const std::string& attention);

  // ---- encoder.cpp: the steps of a run
  void set_input(const int64_t* ids, const int64_t* mask, const int64_t* types, int64_t B, int64_t S);  // types may be null
  void forward(float* out, Profile* prof);
  void embeddings(StepTimer& timer);
  void attention_layer(const Layer& L, bool cls_only, StepTimer& timer);
  void feed_forward(const Layer& L, const Linear* next, StepTimer& timer);
  void ffn(const Layer& L, StepTimer& timer);  // tmp_[T, H] = FFN-out(act(FFN-in(x_))) (both LayerNorm styles)
  void set_image_input(const float* px, int64_t B, int64_t P, int64_t K);
  void forward_pre(float* out, Profile* prof);  // pre-LN layers on image input
  void embed_image(StepTimer& timer);           // res_ = [prefix tokens; patch GEMM] + positions
  void pool(float* out, StepTimer& timer);
  void classify(const float* rows, int64_t n, float* out) const;  // classifier on n rows [n, H] -> [n, labels]
  void activate(float* y, int64_t n) const;  // the FFN activation on n values (when not fused in the GEMM)
  bool fused_act() const { return act_ == Activation::kGelu; }  // the GEMM epilogues apply GELU (erf) only
  // One 64-token tile of a layer after attention, or of the embeddings, on the calling thread (tile_task).
  int run_tile(const Layer& L, const Linear* next, int64_t tile, double* times);
  int embed_tile(const Linear* next, int64_t tile, double* times);
  void run_tiles(const Layer* L, const Linear* next, StepTimer& timer);
  int tile_tail(int64_t tile, const float* res, const std::vector<float>& w, const std::vector<float>& b,
                const Linear* next, double* times, int ln_slot, StepTimer::clock::time_point& t);
  void add_ln(float* x, const float* res, int64_t T, const std::vector<float>& w, const std::vector<float>& b,
              const Linear* next);
  std::pair<int64_t, bool> quant(const float* x, int64_t T, const Linear& l);
  void linear(const Linear& l, const float* x, int64_t T, float* y, bool gelu_on = false,
              const Linear* next_q = nullptr, uint8_t* yq = nullptr);
  void linear_u8(const Linear& l, const uint8_t* xq, int64_t ldx, bool x_t, int64_t T, float* y, bool gelu_on,
                 const Linear* next_q, uint8_t* yq);
  static void check(int rc);

  // ---- plan.cpp: how a run is split
  void plan(int64_t B);
  const Linear* qkv_reader(size_t layer) const;
  bool tiles_share_out(int64_t T) const;
  bool qkv_transposed(const Layer& L) const;
  // Whether l reads its u8 input transposed: an int8 4x1 Linear on a path whose 4x1 kernels take that layout.
  bool takes_t(const Linear& l) const { return quant_t_ && l.int8 && l.sparse; }
  bool tiled(const Layer& L, int64_t T) const;
  AttnCtx chunk_ctx(const Layer& L, int64_t b0, int64_t b1, int64_t ldq, bool cls_only);
  static int64_t t_stride(int64_t T);

  int threads_;
  bool chain_t_ = false, attn_bf16_ = false, attn_int8_ = false, quant_t_ = false;
  const Linear* pre_q_ = nullptr;  // the Linear whose input add_ln left quantised in xq(), for rows pre_q_x_[0, T)
  const float* pre_q_x_ = nullptr;
  int64_t pre_q_t_ = 0;
  int64_t h_, heads_, nl_, inter_, vocab_, maxpos_, labels_ = 0, pos_off_ = 0;
  float eps_;
  Activation act_ = Activation::kGelu;
  Pooling pooling_ = Pooling::kMean;
  Head head_ = Head::kNone;
  HeadActivation head_act_ = HeadActivation::kNone;
  bool normalize_ = true;
  bool cls_;  // the first token is all the output reads (cls pooling): the last layer goes on with those rows only
  int64_t types_ = 0;  // rows of type_ (the model's type_vocab_size; 0: none, type_ is one zero row)
  int64_t S_ = 0;  // the run's padded sequence length (per-token output)
  std::vector<float> word_, pos_, type_, eln_w_, eln_b_, cls_w_, cls_b_;
  Linear pooler_;
  // image input / pre-LN (zero / empty otherwise): patches per image, values per patch, prefix tokens
  bool pre_ln_ = false;
  int64_t patches_ = 0, patch_dim_ = 0, prefix_ = 0;
  Linear patch_;                                       // fp32 dense [H, patch_dim]
  std::vector<float> prefix_emb_, fln_w_, fln_b_, pix_, res_;  // pix_: the run's patches; res_: residual stream
  std::vector<Layer> layers_;
  bool merge_chunks = true;  // head tasks of several 64-aligned chunks in one region; false: one per chunk
  bool tile_fusion = true;   // run each layer's steps after attention tile by tile when that applies (run_tile)
  int64_t tile_fused_layers = 0;  // layers of the last run that went through run_tile

  // The run: its batch, tokens in flight (B after the last attention with CLS pooling) and the row stride of the
  // transposed u8 buffers.
  int64_t B_ = 0, T_ = 0, tp_ = 0;
  std::vector<int64_t> seq_start_, seq_len_, tok_id_, tok_pos_, tok_col_, tok_type_, chunk_start_;  // tok_col_: column in the input
  std::vector<std::pair<int64_t, int64_t>> chunks_;  // [first, last + 1) sequences per QKV + attention chunk
  bool aligned_ = true;  // every chunk starts on a 64-token tile
  // Tokens per QKV + attention chunk: q, k, v of 128 tokens x 384 x 3 fp32 = 590 KB, about the L2 of one core
  // plus the other's share of what attention reads; larger chunks measured slower at batch 8 (bench/native_ab.py).
  static constexpr int64_t kChunkTokens = 128;
  std::vector<float> x_, qkv_, ctx_, tmp_, ffn_hidden_, pooled_;
  std::vector<double> head_us_;  // profiling of the head tasks (AttnCtx::qkv_us)
  std::vector<AttnCtx> merged_;  // the chunks' contexts of a merged head-task region
  // The u8 activation buffers start on a cache line (ek_alloc_buffer): a transposed operand's 64-token rows then
  // each fill exactly one line, which the sparse kernels' gathers touch (misaligned, every row spanned two).
  ByteBuffer xq_, hq_;
  uint8_t* xq() { return xq_.data(); }
  uint8_t* hq() { return hq_.data(); }
};
}  // namespace engine
}  // namespace ek
