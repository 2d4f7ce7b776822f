// The engine's weights: tensors read through a TensorLookup (checked for dtype and shape), Linear layers packed
// for the kernels, and the buffers activations live in.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "edgekit/kernels.h"
#include "encoder.h"

namespace ek {
namespace engine {

[[noreturn]] void bad(const std::string& msg);  // throws std::invalid_argument(msg)

// Tensor `name` of shape `shape` and dtype T, copied out of the lookup.
template <typename T>
std::vector<T> take(const TensorLookup& t, const std::string& name, const std::vector<int64_t>& shape);

// A growable byte buffer from ek_alloc_buffer (2 MB pages when large: the 4x1 kernels gather a line per kept
// column from rows a stride apart, and with 4 KB pages those gathers miss the TLB at K = 1,536). Grows only; all
// zero after growing (old contents are dropped: each forward writes what it reads), unchanged otherwise.
class ByteBuffer {
 public:
  ByteBuffer() = default;
  ByteBuffer(const ByteBuffer&) = delete;
  ByteBuffer& operator=(const ByteBuffer&) = delete;
  ~ByteBuffer() { ek_free_buffer(p_); }
  void resize(size_t n);
  uint8_t* data() { return p_; }

 private:
  uint8_t* p_ = nullptr;
  size_t cap_ = 0;
};

struct Linear {
  bool int8 = false;
  bool sparse = false;  // packed as 4x1 blocks (the 4x1 kernels; on their paths, transposed activations)
  std::shared_ptr<ek_packed> w;
  std::vector<float> w_scale, bias;
  float x_scale = 1.f;
  int32_t x_zp = 0;
  int64_t n = 0, k = 0;
};

Linear load_linear(const TensorLookup& t, const std::string& name, int64_t n, int64_t k, ek_pattern pat);
// q, k and v of layer prefix p concatenated into one Linear when all three are int8 with the same input qparams.
bool fuse_qkv(const TensorLookup& t, const std::string& p, int64_t h, ek_pattern pat, Linear* out);

struct Layer {
  bool fused = false;
  Linear qkv, q, k, v, o, ffn_in, ffn_out;
  std::vector<float> ln1_w, ln1_b, ln2_w, ln2_b;
};
}  // namespace engine
}  // namespace ek
