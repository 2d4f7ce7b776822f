// edgekit native engine: a BERT-family encoder (post-LN: BERT, DistilBERT, RoBERTa) or a Vision Transformer (pre-LN:
// ViT, DeiT; image patches in) on edgekit's int8 / 4x1-sparse kernels, as a C++ API of libedgekit.so (no Python here:
// kernels/python/engine_module.cpp binds it as edgekit._engine).
//
// Bad input (shapes, dtypes, ids, masks, options) throws std::invalid_argument with one readable line; a kernel
// failure std::runtime_error. The weights come through a TensorLookup, so the caller owns their storage.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#define EK_ENGINE_API __attribute__((visibility("default")))

namespace ek {
namespace engine {

enum class DType { kOther = 0, kInt8, kInt32, kFloat32 };

// A C-contiguous tensor owned by the caller, valid while the Encoder is being built.
struct Tensor {
  const void* data = nullptr;
  DType dtype = DType::kOther;
  std::vector<int64_t> shape;
};

// Finds tensor `name`. Returns false when there is none and `required` is false; with `required` the lookup
// reports a missing tensor itself (throws).
using TensorLookup = std::function<bool(const std::string& name, bool required, Tensor* out)>;

// The feed-forward activation: GELU (erf), GELU's tanh approximation (gelu_new), ReLU.
enum class Activation { kGelu = 0, kGeluTanh, kRelu };
// How token states become the output: mean over attended tokens, the first token, the per-channel max over
// attended tokens, or none (one output row per token: [batch, seq, width], zeros at padded positions).
enum class Pooling { kMean = 0, kCls, kMax, kNone };
// The classifier: none (the pooled vector is the output), on the pooled vector, or on every token's state.
enum class Head { kNone = 0, kSequence, kToken };
// What runs between the pooled vector and a sequence classifier: nothing, or a dense layer ("pooler.*" tensors)
// followed by tanh (BERT, RoBERTa) or ReLU (DistilBERT).
enum class HeadActivation { kNone = 0, kTanh, kRelu };

struct EncoderConfig {
  int64_t hidden = 0, heads = 0, layers = 0, intermediate = 0, vocab_size = 0, max_position = 0;
  int64_t type_vocab_size = 0, num_labels = 0;  // type_vocab_size 0: no token type embeddings; num_labels: heads
  // The first position id; > 0 (RoBERTa: padding index + 1) also makes position ids count attended tokens only.
  int64_t position_offset = 0;
  float layer_norm_eps = 1e-12f;
  Activation activation = Activation::kGelu;
  Pooling pooling = Pooling::kMean;
  bool normalize = true;  // L2-normalise the output rows (embeddings; ignored with a head)
  Head head = Head::kNone;
  HeadActivation head_activation = HeadActivation::kNone;
  bool sparse_4x1 = false;  // weights pruned in 4x1 blocks (else dense)
  // In a 4x1 model, the encoder Linears that run on the dense kernels instead (names "layers.<i>.<q|k|v|o|ffn_in|
  // ffn_out>"): those pruned too lightly for the 4x1 kernels to beat dense ones. q, k and v fuse into one 4x1
  // Linear unless all three are listed.
  std::vector<std::string> dense_linears;
  // Vision Transformers (ViT, DeiT): LayerNorm before attention and before the FFN, the residual added after each,
  // and a final LayerNorm ("final_ln.*") after the last layer. Needs the image input below.
  bool pre_ln = false;
  // Image input (patches > 0): each row of the input is one image as `patches` flattened patches of patch_dim
  // values (C * ph * pw, in the order of the patch Conv2d's weight), embedded by an fp32 GEMM ("embeddings.patch.*",
  // [hidden, patch_dim]) after prefix_tokens learned tokens ("embeddings.prefix", [prefix_tokens, hidden]: the class
  // token, DeiT's distillation token), plus "embeddings.position" [max_position, hidden] with max_position =
  // prefix_tokens + patches. Every token is attended; there is no embedding LayerNorm.
  int64_t patches = 0, patch_dim = 0, prefix_tokens = 0;
};

// Sets config's activation, pooling, normalize, head and head_activation from the native format's names
// (edgekit/formats/native.py). Empty strings and normalize < 0 mean "not given": a folder written before these
// fields existed, read as then: "mean" pooling normalised, "cls-pooler" a BERT classifier (cls pooling, tanh pooler,
// classifier). Throws std::invalid_argument naming the allowed values.
EK_ENGINE_API void set_architecture(EncoderConfig* config, const std::string& activation, const std::string& pooling,
                                    int normalize, const std::string& head, const std::string& head_activation);

// Per-stage wall time in microseconds, summed: embeddings, qkv, attention, o_proj, add_ln, ffn_in, ffn_out, pooling.
using Profile = std::map<std::string, double>;

class EncoderImpl;  // encoder_impl.h (hidden: not part of the API)

class EK_ENGINE_API Encoder {
 public:
  // threads >= 1; attention: "fp32", "bf16" (AVX512_BF16 CPUs), "int8" (AVX-512 VNNI, 4x1 sparse int8 models) or
  // "auto" (int8 where it runs, else fp32). Weights are packed for the kernel ISA active now.
  Encoder(const EncoderConfig& config, const TensorLookup& tensors, int threads, const std::string& attention);
  ~Encoder();
  Encoder(const Encoder&) = delete;
  Encoder& operator=(const Encoder&) = delete;

  // The checks of the constructor that need no weights (threads and attention), first, as it makes them.
  static void check_options(int threads, const std::string& attention);

  int64_t out_width() const;  // hidden size (embeddings) or number of labels (classifier)
  bool per_token() const;     // one output row per input token (pooling none): [batch, seq, out_width()]
  bool fused_qkv() const;
  std::vector<std::string> kernels() const;  // the packed kernels of the encoder's Linears, e.g. "avx2-u8s7-4x1"
  std::string attention() const;             // "fp32", "bf16" or "int8"

  // One run in two steps: set_input checks ids and mask ([batch, seq], row-major; mask of 0 and 1) and keeps the
  // attended tokens; forward writes [batch, out_width()] (per_token(): [batch, seq, out_width()]) to out (no Python
  // involved: the caller may drop the GIL).
  void set_input(const int64_t* ids, const int64_t* mask, int64_t batch, int64_t seq);
  // The same with per-token segment ids (token_type_ids, [batch, seq], each within the model's token types; a model
  // without token type embeddings takes only 0). token_types may be null: every token is segment 0.
  void set_input(const int64_t* ids, const int64_t* mask, const int64_t* token_types, int64_t batch, int64_t seq);
  void forward(float* out, Profile* profile);
  // Image models (image_input()): set_image_input takes [batch, patches, patch_dim] fp32 (row-major, flattened
  // patches; copied) in place of ids and mask; forward then runs as above. The token set_input refuses image models
  // and this one the others.
  bool image_input() const;
  void set_image_input(const float* patches, int64_t batch, int64_t patches_per_image, int64_t patch_dim);

  // Run each layer's steps after attention one 64-token tile per task when that applies (results are identical
  // either way; false is for comparisons).
  bool tile_fusion() const;
  void set_tile_fusion(bool on);
  // Run the attention head tasks of a batch's 64-aligned chunks in one parallel region (identical results).
  bool merge_chunks() const;
  void set_merge_chunks(bool on);
  int64_t tile_fused_layers() const;  // layers of the last run that ran tile by tile


 private:
  std::unique_ptr<EncoderImpl> impl_;
};

// softmax(q k^T / sqrt(d)) v for one head [n, d] through the kernel the engine picks for the active ISA and d,
// for tests: nq = 1 (first query row only) or n; bf16: the bf16 kernel where it runs; transposed: the engine's
// transposed q, k, v (AVX-512); int8: int8 products (transposed, AVX-512 VNNI). out: [n, d], rows >= nq zero.
EK_ENGINE_API void attention_head(const float* q, const float* k, const float* v, int64_t n, int64_t d, int64_t nq,
                                  bool bf16, bool transposed, bool int8, float* out);
EK_ENGINE_API bool cpu_has_avx512_bf16();
}  // namespace engine
}  // namespace ek
