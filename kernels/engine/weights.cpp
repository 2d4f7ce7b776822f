#include "weights.h"

#include <new>
#include <stdexcept>

namespace ek {
namespace engine {
namespace {
template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<int8_t>() { return DType::kInt8; }
template <>
constexpr DType dtype_of<int32_t>() { return DType::kInt32; }
template <>
constexpr DType dtype_of<float>() { return DType::kFloat32; }

// The weight of Linear `name`, which must exist (the lookup reports it missing).
Tensor weight(const TensorLookup& t, const std::string& name) {
  Tensor w;
  t(name + ".weight", true, &w);
  return w;
}

std::shared_ptr<ek_packed> packed(ek_packed* p) {
  if (!p) bad(std::string("packing failed: ") + ek_last_error());
  return std::shared_ptr<ek_packed>(p, ek_packed_free);
}
}  // namespace

void bad(const std::string& msg) { throw std::invalid_argument(msg); }

template <typename T>
std::vector<T> take(const TensorLookup& t, const std::string& name, const std::vector<int64_t>& shape) {
  Tensor a;
  if (!t(name, false, &a)) bad("native model: missing tensor " + name);
  if (a.dtype != dtype_of<T>()) bad("native model: " + name + " has the wrong dtype");
  int64_t n = 1;
  if ((int64_t)a.shape.size() != (int64_t)shape.size()) bad("native model: " + name + " has the wrong rank");
  for (size_t i = 0; i < shape.size(); ++i) {
    if (a.shape[i] != shape[i]) bad("native model: " + name + " has the wrong shape");
    n *= shape[i];
  }
  const T* p = static_cast<const T*>(a.data);
  return std::vector<T>(p, p + n);
}
template std::vector<int8_t> take<int8_t>(const TensorLookup&, const std::string&, const std::vector<int64_t>&);
template std::vector<int32_t> take<int32_t>(const TensorLookup&, const std::string&, const std::vector<int64_t>&);
template std::vector<float> take<float>(const TensorLookup&, const std::string&, const std::vector<int64_t>&);

void ByteBuffer::resize(size_t n) {
  if (n <= cap_) return;
  void* q = ek_alloc_buffer(n);
  if (!q) throw std::bad_alloc();
  ek_free_buffer(p_);
  p_ = static_cast<uint8_t*>(q);
  cap_ = n;
}

Linear load_linear(const TensorLookup& t, const std::string& name, int64_t n, int64_t k, ek_pattern pat) {
  Linear l;
  l.n = n;
  l.k = k;
  l.sparse = pat == EK_BLOCK_4X1;
  const Tensor w = weight(t, name);
  l.bias = take<float>(t, name + ".bias", {n});
  if (w.dtype == DType::kInt8) {
    auto ws = take<int8_t>(t, name + ".weight", {n, k});
    l.int8 = true;
    l.w = packed(ek_pack_s8(ws.data(), n, k, pat));
    l.w_scale = take<float>(t, name + ".w_scale", {n});
    l.x_scale = take<float>(t, name + ".x_scale", {1})[0];
    l.x_zp = take<int32_t>(t, name + ".x_zp", {1})[0];
    if (!(l.x_scale > 0) || l.x_zp < 0 || l.x_zp > 255) bad("native model: bad activation qparams for " + name);
  } else {
    auto wf = take<float>(t, name + ".weight", {n, k});
    l.w = packed(ek_pack_f32(wf.data(), n, k, pat));
  }
  return l;
}

bool fuse_qkv(const TensorLookup& t, const std::string& p, int64_t h, ek_pattern pat, Linear* out) {
  std::vector<int8_t> w;
  std::vector<float> ws, b;
  float xs = 0;
  int32_t zp = 0;
  for (const char* part : {"q", "k", "v"}) {
    const std::string name = p + part;
    if (weight(t, name).dtype != DType::kInt8) return false;
    const float s = take<float>(t, name + ".x_scale", {1})[0];
    const int32_t z = take<int32_t>(t, name + ".x_zp", {1})[0];
    if (part[0] != 'q' && (s != xs || z != zp)) return false;
    xs = s;
    zp = z;
    auto wi = take<int8_t>(t, name + ".weight", {h, h});
    w.insert(w.end(), wi.begin(), wi.end());
    auto si = take<float>(t, name + ".w_scale", {h});
    ws.insert(ws.end(), si.begin(), si.end());
    auto bi = take<float>(t, name + ".bias", {h});
    b.insert(b.end(), bi.begin(), bi.end());
  }
  out->int8 = true;
  out->sparse = pat == EK_BLOCK_4X1;
  out->n = 3 * h;
  out->k = h;
  out->w = packed(ek_pack_s8(w.data(), 3 * h, h, pat));
  out->w_scale = ws;
  out->bias = b;
  out->x_scale = xs;
  out->x_zp = zp;
  return true;
}
}  // namespace engine
}  // namespace ek
