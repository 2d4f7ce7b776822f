// edgekit native engine: BERT-family encoder (post-LN) on edgekit's int8 / 4x1-sparse kernels.
//
// Per run: drop padding tokens (GEMMs see only real tokens of all sequences, concatenated), embeddings +
// LayerNorm, then per layer: quantise -> fused QKV GEMM -> attention per (sequence, head) in fp32 ->
// quantise -> O GEMM -> add + LayerNorm -> quantise -> FFN-in GEMM with GELU and u8 requantisation fused
// in its epilogue -> FFN-out GEMM -> add + LayerNorm; then mean pooling + L2 norm, or BERT pooler +
// classifier. Buffers grow once to the largest shape seen and are reused. One call per run, GIL released.
// On the 4x1 VNNI path the work is split so that data stays on the core that made it: each attention task
// computes its own head's q, k, v rows (attn_task), and the steps after attention run one 64-token tile per
// task (run_tile), so a layer is two parallel regions.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <utility>
#include <vector>

#include "edgekit/kernels.h"

namespace py = pybind11;

void ek_attention_head_avx512(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t d,
                              float* ctx, int64_t ldc, int64_t nq);
void ek_attention_head_avx512_t(const float* q, const float* k, const float* v, int64_t ldt, int64_t n, int64_t d,
                                float* ctx, int64_t ldc, int64_t nq);
void ek_attention_head_vnni_t(const float* q, const float* k, const float* v, int64_t ldt, int64_t n, int64_t d,
                              float* ctx, int64_t ldc, int64_t nq);
void ek_attention_head_bf16(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t d,
                            float* ctx, int64_t ldc, int64_t nq);
bool ek_cpu_has_avx512_bf16();
void ek_attention_head_avx2(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t d,
                            float* ctx, int64_t ldc, int64_t nq);
void ek_add_layer_norm_avx2(float* x, const float* res, int64_t r0, int64_t r1, int64_t h, const float* w,
                            const float* b, float eps);
void ek_add_layer_norm_avx512(float* x, const float* res, int64_t r0, int64_t r1, int64_t h, const float* w,
                              const float* b, float eps);

namespace {
[[noreturn]] void bad(const std::string& m) { throw py::value_error(m); }

template <typename T>
std::vector<T> take(const py::dict& t, const std::string& name, std::vector<int64_t> shape) {
  if (!t.contains(name)) bad("native model: missing tensor " + name);
  py::array a = t[name.c_str()].cast<py::array>();
  if (!a.dtype().is(py::dtype::of<T>())) bad("native model: " + name + " has the wrong dtype");
  int64_t n = 1;
  if ((int64_t)a.ndim() != (int64_t)shape.size()) bad("native model: " + name + " has the wrong rank");
  for (size_t i = 0; i < shape.size(); ++i) {
    if (a.shape(i) != shape[i]) bad("native model: " + name + " has the wrong shape");
    n *= shape[i];
  }
  py::array_t<T, py::array::c_style | py::array::forcecast> c(a);
  return std::vector<T>(c.data(), c.data() + n);
}

// A growable byte buffer from ek_alloc_buffer (2 MB pages when large: the 4x1 kernels gather a line per kept
// column from rows a stride apart, and with 4 KB pages those gathers miss the TLB at K = 1,536). Grows only; all
// zero after growing (old contents are dropped: each forward writes what it reads), unchanged otherwise.
class ByteBuffer {
 public:
  ByteBuffer() = default;
  ByteBuffer(const ByteBuffer&) = delete;
  ByteBuffer& operator=(const ByteBuffer&) = delete;
  ~ByteBuffer() { ek_free_buffer(p_); }
  void resize(size_t n) {
    if (n <= cap_) return;
    void* q = ek_alloc_buffer(n);
    if (!q) throw std::bad_alloc();
    ek_free_buffer(p_);
    p_ = static_cast<uint8_t*>(q);
    cap_ = n;
  }
  uint8_t* data() { return p_; }

 private:
  uint8_t* p_ = nullptr;
  size_t cap_ = 0;
};

struct Linear {
  bool int8 = false;
  std::shared_ptr<ek_packed> w;
  std::vector<float> w_scale, bias;
  float x_scale = 1.f;
  int32_t x_zp = 0;
  int64_t n = 0, k = 0;
};

std::shared_ptr<ek_packed> packed(ek_packed* p) {
  if (!p) bad(std::string("packing failed: ") + ek_last_error());
  return std::shared_ptr<ek_packed>(p, ek_packed_free);
}

Linear load_linear(const py::dict& t, const std::string& name, int64_t n, int64_t k, ek_pattern pat) {
  Linear l;
  l.n = n;
  l.k = k;
  py::array w = t[(name + ".weight").c_str()].cast<py::array>();
  l.bias = take<float>(t, name + ".bias", {n});
  if (w.dtype().is(py::dtype::of<int8_t>())) {
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

// Concatenate q, k, v into one Linear when all three are int8 with the same input qparams.
bool fuse_qkv(const py::dict& t, const std::string& p, int64_t h, ek_pattern pat, Linear* out) {
  std::vector<int8_t> w;
  std::vector<float> ws, b;
  float xs = 0;
  int32_t zp = 0;
  for (const char* part : {"q", "k", "v"}) {
    const std::string name = p + part;
    py::array a = t[(name + ".weight").c_str()].cast<py::array>();
    if (!a.dtype().is(py::dtype::of<int8_t>())) return false;
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
  out->n = 3 * h;
  out->k = h;
  out->w = packed(ek_pack_s8(w.data(), 3 * h, h, pat));
  out->w_scale = ws;
  out->bias = b;
  out->x_scale = xs;
  out->x_zp = zp;
  return true;
}

struct Layer {
  bool fused = false;
  Linear qkv, q, k, v, o, ffn_in, ffn_out;
  std::vector<float> ln1_w, ln1_b, ln2_w, ln2_b;
};

// x[r] = LayerNorm(x[r] + res[r]) for rows r0..r1 (res may be null). Two passes in float over one row.
void add_layer_norm_rows(float* x, const float* res, int64_t r0, int64_t r1, int64_t h, const float* w, const float* b,
                         float eps) {
  for (int64_t r = r0; r < r1; ++r) {
    float* v = x + r * h;
    if (res) {
      const float* a = res + r * h;
#pragma omp simd
      for (int64_t i = 0; i < h; ++i) v[i] += a[i];
    }
    float mean = 0, var = 0;
#pragma omp simd reduction(+ : mean)
    for (int64_t i = 0; i < h; ++i) mean += v[i];
    mean /= (float)h;
#pragma omp simd reduction(+ : var)
    for (int64_t i = 0; i < h; ++i) var += (v[i] - mean) * (v[i] - mean);
    const float inv = 1.0f / std::sqrt(var / (float)h + eps);
#pragma omp simd
    for (int64_t i = 0; i < h; ++i) v[i] = (v[i] - mean) * inv * w[i] + b[i];
  }
}

struct LnCtx {
  float* x;
  const float* res;
  int64_t rows, h, chunk;
  const float *w, *b;
  float eps;
  bool avx512, avx2;
};

void ln_task(int64_t task, void* p) {
  const LnCtx& c = *static_cast<LnCtx*>(p);
  const int64_t r0 = task * c.chunk;
  const int64_t r1 = std::min(c.rows, r0 + c.chunk);
  if (c.avx512)
    ek_add_layer_norm_avx512(c.x, c.res, r0, r1, c.h, c.w, c.b, c.eps);
  else if (c.avx2)
    ek_add_layer_norm_avx2(c.x, c.res, r0, r1, c.h, c.w, c.b, c.eps);
  else
    add_layer_norm_rows(c.x, c.res, r0, r1, c.h, c.w, c.b, c.eps);
}

// LayerNorm(x + res) then quantisation of the same rows into the transposed u8 operand of the next sparse GEMM,
// 64 tokens per task: each task quantises the rows it has just normalised (in its own cache), writing whole
// 64-byte pieces of XT rows, and the two steps share one pool hand-off instead of two.
struct LnQCtx {
  float* x;
  const float* res;
  int64_t rows, h;
  const float *w, *b;
  float eps, q_scale;
  int32_t q_zp;
  uint8_t* xt;
  int64_t ldxt;
  int rc;
};

void lnq_task(int64_t tile, void* p) {
  LnQCtx& c = *static_cast<LnQCtx*>(p);
  const int64_t r0 = tile * 64, r1 = std::min(c.rows, r0 + 64);
  if (r0 < r1) ek_add_layer_norm_avx512(c.x, c.res, r0, r1, c.h, c.w, c.b, c.eps);
  if (int rc = ek_quantize_u8_t_tile(c.x, c.rows, c.h, c.h, c.q_scale, c.q_zp, c.xt, c.ldxt, tile)) c.rc = rc;
}

// LayerNorm(x + res) over all rows, split across the kernel thread pool.
void add_layer_norm(float* x, const float* res, int64_t rows, int64_t h, const float* w, const float* b, float eps) {
  const ek_isa isa = ek_active_isa();
  LnCtx c{x, res, rows, h, 16, w, b, eps, isa >= EK_ISA_AVX512 && h % 16 == 0, isa >= EK_ISA_AVX2 && h % 8 == 0};
  ek_parallel_for((rows + c.chunk - 1) / c.chunk, ln_task, &c);
}

float gelu(float y) { return 0.5f * y * (1.0f + std::erf(y * 0.70710678118654752f)); }

struct AttnCtx {
  const float* qkv;  // [T, ld] with q at col qo, k at ko, v at vo; transposed ([3H, ld], q at row qo...) if qkv_t
  int64_t ld, qo, ko, vo;
  float* ctx;  // [T, H]
  const int64_t* seq_start;
  const int64_t* seq_len;
  int64_t nseq, heads, d, h;
  bool avx512, bf16, avx2;
  bool first_only;  // only the first query row of each sequence (CLS pooling in the last layer)
  bool qkv_t = false;  // q, k, v transposed (the 4x1 kernel's transposed output); AVX-512 path only
  bool int8_qk = false;  // with qkv_t: scores Q K^T in int8 (attention='int8', AVX-512 VNNI)
  // With qkv_l: one task per head (over every sequence of the chunk) that first computes the head's q, k, v rows
  // (transposed, into qkv) from qkv_x (the chunk's quantised input, transposed, stride qkv_ldx, cn tokens).
  const Linear* qkv_l = nullptr;
  const uint8_t* qkv_x = nullptr;
  int64_t qkv_ldx = 0, cn = 0;
  int rc = 0;
  double* qkv_us = nullptr;  // profiling: each head task's q, k, v time (microseconds), one slot per head
  // With qkv_l: q, k, v go to a buffer of the calling thread (qkv_floats floats, laid out as qkv would be)
  // instead of qkv, so that head tasks of several chunks can share one parallel region (merged_attn_task).
  bool qkv_private = false;
  int64_t qkv_floats = 0;
};

void attn_one(AttnCtx& c, int64_t b, int64_t hd) {
  const int64_t t0 = c.seq_start[b], n = c.seq_len[b], d = c.d;
  if (c.qkv_t) {
    (c.int8_qk ? ek_attention_head_vnni_t : ek_attention_head_avx512_t)(c.qkv + (c.qo + hd * d) * c.ld + t0, c.qkv + (c.ko + hd * d) * c.ld + t0,
                               c.qkv + (c.vo + hd * d) * c.ld + t0, c.ld, n, d, c.ctx + t0 * c.h + hd * d, c.h,
                               c.first_only ? 1 : n);
    return;
  }
  if (c.bf16) {
    ek_attention_head_bf16(c.qkv + t0 * c.ld + c.qo + hd * d, c.qkv + t0 * c.ld + c.ko + hd * d,
                           c.qkv + t0 * c.ld + c.vo + hd * d, c.ld, n, d, c.ctx + t0 * c.h + hd * d, c.h,
                           c.first_only ? 1 : n);
    return;
  }
  if (c.avx2 && !c.avx512) {
    ek_attention_head_avx2(c.qkv + t0 * c.ld + c.qo + hd * d, c.qkv + t0 * c.ld + c.ko + hd * d,
                           c.qkv + t0 * c.ld + c.vo + hd * d, c.ld, n, d, c.ctx + t0 * c.h + hd * d, c.h,
                           c.first_only ? 1 : n);
    return;
  }
  if (c.avx512) {
    ek_attention_head_avx512(c.qkv + t0 * c.ld + c.qo + hd * d, c.qkv + t0 * c.ld + c.ko + hd * d,
                             c.qkv + t0 * c.ld + c.vo + hd * d, c.ld, n, d, c.ctx + t0 * c.h + hd * d, c.h,
                             c.first_only ? 1 : n);
    return;
  }
  std::vector<float> sc(n);
  std::vector<float> acc(d);
  const float scale = 1.0f / std::sqrt((float)d);
  for (int64_t i = 0; i < (c.first_only ? 1 : n); ++i) {
    const float* q = c.qkv + (t0 + i) * c.ld + c.qo + hd * d;
    float mx = -1e30f;
    for (int64_t j = 0; j < n; ++j) {
      const float* k = c.qkv + (t0 + j) * c.ld + c.ko + hd * d;
      float s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t e = 0; e < d; ++e) s += q[e] * k[e];
      sc[j] = s * scale;
      mx = std::max(mx, sc[j]);
    }
    float sum = 0;
    for (int64_t j = 0; j < n; ++j) {
      sc[j] = std::exp(sc[j] - mx);
      sum += sc[j];
    }
    const float inv = 1.0f / sum;
    std::fill(acc.begin(), acc.end(), 0.f);
    for (int64_t j = 0; j < n; ++j) {
      const float pj = sc[j] * inv;
      const float* v = c.qkv + (t0 + j) * c.ld + c.vo + hd * d;
#pragma omp simd
      for (int64_t e = 0; e < d; ++e) acc[e] += pj * v[e];
    }
    std::memcpy(c.ctx + (t0 + i) * c.h + hd * d, acc.data(), d * sizeof(float));
  }
}

void attn_task(int64_t task, void* p) {
  AttnCtx& c = *static_cast<AttnCtx*>(p);
  if (!c.qkv_l) {
    attn_one(c, task / c.heads, task % c.heads);
    return;
  }
  // The head's q, k and v rows first, on this thread, so attention reads them from this core's cache (computed
  // tile by tile or split by all output channels, half of every head's q, k, v came from the other core).
  const Linear& l = *c.qkv_l;
  const int64_t hd = task, d = c.d;
  const ek_epilogue ep{l.x_scale, l.x_zp, l.w_scale.data(), l.bias.data(), 0, 0, 1.f, 0};
  const auto t0 = std::chrono::steady_clock::now();
  AttnCtx lc = c;
  if (c.qkv_private) {
    thread_local std::vector<float> buf;  // zeros when grown, finite ever after (read past the last token, masked)
    if ((int64_t)buf.size() < c.qkv_floats) buf.resize(c.qkv_floats);
    lc.qkv = buf.data();
  }
  for (const int64_t part : {c.qo, c.ko, c.vo}) {
    const int64_t n0 = part + hd * d;
    if (int rc = ek_gemm_u8s8_t_part(l.w.get(), c.qkv_x, c.cn, c.qkv_ldx, &ep, const_cast<float*>(lc.qkv), c.ld, 1, 0,
                                     ek_padded_m(c.cn) / 64, n0, n0 + d)) {
      c.rc = rc;
      return;
    }
  }
  if (c.qkv_us) c.qkv_us[hd] = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  for (int64_t b = 0; b < c.nseq; ++b) attn_one(lc, b, hd);
}

// The head tasks of several chunks in one parallel region: task = chunk * heads + head.
struct MergedAttn {
  AttnCtx* chunks;
  int64_t heads;
};
void merged_attn_task(int64_t task, void* p) {
  const MergedAttn& m = *static_cast<MergedAttn*>(p);
  attn_task(task % m.heads, &m.chunks[task / m.heads]);
}

class Encoder;
struct TileCtx {
  Encoder* e;
  const Layer* L;  // null: the embeddings (embed_tile)
  const Linear* next;  // the Linear that reads the layer's output next (its input is quantised here), or null
  int64_t T, tp;
  double* times;  // tile 0's step times (o_proj, add_ln, ffn_in, ffn_out, embeddings) when profiling, else null
  int rc;
};
void tile_task(int64_t tile, void* p);

class Encoder {
 public:
  Encoder(const py::dict& cfg, const py::dict& t, int threads, const std::string& attention) {
    if (threads < 1) bad("threads must be >= 1");
    if (attention == "bf16") {
      if (!ek_cpu_has_avx512_bf16()) bad("attention='bf16' needs a CPU with AVX512_BF16");
      attn_bf16_ = true;
    } else if (attention == "int8") {
      if (ek_active_isa() != EK_ISA_AVX512_VNNI) bad("attention='int8' needs the AVX-512 VNNI kernel path");
      attn_int8_ = true;
    } else if (attention != "fp32" && attention != "auto") {
      bad("attention must be 'fp32', 'bf16', 'int8' or 'auto', not '" + attention + "'");
    }
    threads_ = threads;
    h_ = cfg["hidden"].cast<int64_t>();
    heads_ = cfg["heads"].cast<int64_t>();
    nl_ = cfg["layers"].cast<int64_t>();
    inter_ = cfg["intermediate"].cast<int64_t>();
    vocab_ = cfg["vocab_size"].cast<int64_t>();
    maxpos_ = cfg["max_position"].cast<int64_t>();
    eps_ = cfg["layer_norm_eps"].cast<float>();
    cls_ = cfg["pooling"].cast<std::string>() == "cls-pooler";
    if (h_ <= 0 || heads_ <= 0 || h_ % heads_ || nl_ <= 0 || inter_ <= 0) bad("native model: bad config sizes");
    const ek_pattern pat = cfg["pattern"].cast<std::string>() == "4x1" ? EK_BLOCK_4X1 : EK_DENSE;
    chain_t_ = pat == EK_BLOCK_4X1;  // the 4x1 kernels take and give transposed activations natively
    ek_set_num_threads(threads_);
    const int64_t tv = cfg["type_vocab_size"].cast<int64_t>();
    word_ = take<float>(t, "embeddings.word", {vocab_, h_});
    pos_ = take<float>(t, "embeddings.position", {maxpos_, h_});
    type0_ = take<float>(t, "embeddings.token_type", {tv, h_});
    type0_.resize(h_);
    eln_w_ = take<float>(t, "embeddings.ln.weight", {h_});
    eln_b_ = take<float>(t, "embeddings.ln.bias", {h_});
    for (int64_t i = 0; i < nl_; ++i) {
      const std::string p = "layers." + std::to_string(i) + ".";
      Layer L;
      L.fused = fuse_qkv(t, p, h_, pat, &L.qkv);
      if (!L.fused) {
        L.q = load_linear(t, p + "q", h_, h_, pat);
        L.k = load_linear(t, p + "k", h_, h_, pat);
        L.v = load_linear(t, p + "v", h_, h_, pat);
      }
      L.o = load_linear(t, p + "o", h_, h_, pat);
      L.ffn_in = load_linear(t, p + "ffn_in", inter_, h_, pat);
      L.ffn_out = load_linear(t, p + "ffn_out", h_, inter_, pat);
      L.ln1_w = take<float>(t, p + "attn_ln.weight", {h_});
      L.ln1_b = take<float>(t, p + "attn_ln.bias", {h_});
      L.ln2_w = take<float>(t, p + "ffn_ln.weight", {h_});
      L.ln2_b = take<float>(t, p + "ffn_ln.bias", {h_});
      layers_.push_back(std::move(L));
    }
    const int64_t hd = h_ / heads_;
    const bool int8_runs = ek_active_isa() == EK_ISA_AVX512_VNNI && chain_t_ && layers_[0].fused &&
                           layers_[0].qkv.int8 && hd % 16 == 0 && hd <= 128;
    if (attention == "auto") attn_int8_ = int8_runs;  // int8 where it runs, else fp32 (see the attention property)
    if (attn_int8_ && !int8_runs)
      bad("attention='int8' runs on the transposed q, k, v of a 4x1 sparse int8 model with a head size that is a "
          "multiple of 16 (up to 128)");
    if (cls_) {
      labels_ = cfg["num_labels"].cast<int64_t>();
      pooler_ = load_linear(t, "pooler", h_, h_, EK_DENSE);
      cls_w_ = take<float>(t, "classifier.weight", {labels_, h_});
      cls_b_ = take<float>(t, "classifier.bias", {labels_});
    }
  }

  int64_t out_width() const { return cls_ ? labels_ : h_; }
  bool fused_qkv() const { return !layers_.empty() && layers_[0].fused; }
  // The distinct kernels the encoder Linears were packed for (e.g. "avx2-u8s7-4x1"), sorted.
  std::vector<std::string> kernels() const {
    std::set<std::string> names;
    for (const auto& L : layers_)
      for (const Linear* l : {&L.qkv, &L.q, &L.k, &L.v, &L.o, &L.ffn_in, &L.ffn_out}) {
        ek_packed_info info;
        if (l->w && ek_packed_get_info(l->w.get(), &info) == EK_OK && info.kernel) names.insert(info.kernel);
      }
    return {names.begin(), names.end()};
  }
  std::string attention() const { return attn_bf16_ ? "bf16" : attn_int8_ ? "int8" : "fp32"; }
  bool merge_chunks = true;  // head tasks of several 64-aligned chunks in one region (forward); False: one per chunk
  bool tile_fusion = true;  // run each layer's steps after attention tile by tile when that applies (run_tile)
  int64_t tile_fused_layers = 0;  // layers of the last run that went through run_tile

  // After attention, one 64-token tile of the layer on the calling thread: quantise its attention output, O
  // projection, add + LayerNorm (quantised for FFN-in), FFN-in with GELU and u8 requantisation, FFN-out, add +
  // LayerNorm (quantised for `next`). Every step reads only this tile's tokens and writes only them, so the
  // tiles run in parallel, one task each, with no hand-off between the steps: a tile's activations stay in
  // one core's caches (split by output channels, as the whole-GEMM calls are, each GEMM's output went from
  // both cores to the next step's tasks) and a layer has one parallel region after attention instead of six.
  int run_tile(const Layer& L, const Linear* next, int64_t T, int64_t tp, int64_t tile, double* times) {
    const int64_t H = h_;
    uint8_t* xq = this->xq();
    int rc = 0;
    auto t = clock::now();
    const Linear &o = L.o, &fi = L.ffn_in, &fo = L.ffn_out;
    rc = rc ? rc : ek_quantize_u8_t_tile(ctx_.data(), T, H, H, o.x_scale, o.x_zp, xq, tp, tile);
    const ek_epilogue ep_o{o.x_scale, o.x_zp, o.w_scale.data(), o.bias.data(), 0, 0, 1.f, 0};
    rc = rc ? rc : ek_gemm_u8s8_t_tile(o.w.get(), xq, T, tp, &ep_o, tmp_.data(), H, 0, tile);
    lap(times, 0, t);
    rc = rc ? rc : tile_tail(tile, T, tp, tmp_.data(), L.ln1_w, L.ln1_b, &fi, times, 1, t);
    const ek_epilogue ep_in{fi.x_scale, fi.x_zp, fi.w_scale.data(), fi.bias.data(), 1, 1, fo.x_scale, fo.x_zp};
    rc = rc ? rc : ek_gemm_u8s8_t_tile(fi.w.get(), xq, T, tp, &ep_in, hq(), tp, 1, tile);
    lap(times, 2, t);
    const ek_epilogue ep_out{fo.x_scale, fo.x_zp, fo.w_scale.data(), fo.bias.data(), 0, 0, 1.f, 0};
    rc = rc ? rc : ek_gemm_u8s8_t_tile(fo.w.get(), hq(), T, tp, &ep_out, tmp_.data(), H, 0, tile);
    lap(times, 3, t);
    return rc ? rc : tile_tail(tile, T, tp, tmp_.data(), L.ln2_w, L.ln2_b, next, times, 1, t);
  }

  // The embeddings of one tile's tokens (word + position + token type 0, LayerNorm), quantised for `next` and
  // as in run_tile: the first layer's input, tile by tile. (The word rows come from a
  // 47 MB table for BERT's vocabulary, mostly cache misses: two threads overlap twice as many.)
  int embed_tile(const Linear* next, int64_t T, int64_t tp, int64_t tile, double* times) {
    const int64_t H = h_, r1 = std::min(T, tile * 64 + 64);
    auto t = clock::now();
    for (int64_t i = tile * 64; i < r1; ++i) {
      const float* w = word_.data() + tok_id_[i] * H;
      const float* p = pos_.data() + tok_pos_[i] * H;
      float* xi = x_.data() + i * H;
      for (int64_t e = 0; e < H; ++e) xi[e] = w[e] + p[e] + type0_[e];
    }
    return tile_tail(tile, T, tp, nullptr, eln_w_, eln_b_, next, times, 4, t);
  }

  py::array_t<float> run(py::array_t<int64_t, py::array::c_style> ids, py::array_t<int64_t, py::array::c_style> mask,
                         py::object profile) {
    if (ids.ndim() != 2 || mask.ndim() != 2 || ids.shape(0) != mask.shape(0) || ids.shape(1) != mask.shape(1))
      bad("input_ids and attention_mask must both be [batch, seq]");
    const int64_t B = ids.shape(0), S = ids.shape(1);
    if (B == 0 || S == 0) bad("empty input: batch and seq must be at least 1");
    if (S > maxpos_) bad("sequence length " + std::to_string(S) + " is longer than the model's maximum " + std::to_string(maxpos_));
    const int64_t* id = ids.data();
    const int64_t* mk = mask.data();
    seq_start_.assign(B, 0);
    seq_len_.assign(B, 0);
    tok_id_.clear();
    tok_pos_.clear();
    for (int64_t b = 0; b < B; ++b) {
      seq_start_[b] = (int64_t)tok_id_.size();
      if (cls_ && mk[b * S] == 0) bad("row " + std::to_string(b) + ": the first token must be attended (classification pools it)");
      for (int64_t s = 0; s < S; ++s) {
        const int64_t m = mk[b * S + s];
        if (m != 0 && m != 1) bad("attention_mask must hold only 0 and 1");
        if (!m) continue;
        const int64_t v = id[b * S + s];
        if (v < 0 || v >= vocab_) bad("token id " + std::to_string(v) + " is outside the vocabulary (size " + std::to_string(vocab_) + ")");
        tok_id_.push_back(v);
        tok_pos_.push_back(s);
      }
      seq_len_[b] = (int64_t)tok_id_.size() - seq_start_[b];
      if (seq_len_[b] == 0) bad("row " + std::to_string(b) + " has no attended token");
    }
    py::array_t<float> out({B, out_width()});
    std::map<std::string, double> prof;
    {
      py::gil_scoped_release nogil;
      ek_set_num_threads(threads_);
      forward(B, out.mutable_data(), profile.is_none() ? nullptr : &prof);
    }
    if (!profile.is_none()) {
      py::dict d = profile.cast<py::dict>();
      for (auto& kv : prof) {
        const double before = d.contains(kv.first.c_str()) ? d[kv.first.c_str()].cast<double>() : 0.0;
        d[kv.first.c_str()] = before + kv.second;  // microseconds, summed over calls
      }
    }
    return out;
  }

 private:
  using clock = std::chrono::steady_clock;
  static double us(clock::time_point a) { return std::chrono::duration<double, std::micro>(clock::now() - a).count(); }

  // LayerNorm(x + res), and when `next` (the Linear that reads these rows next, over all T of them) is a sparse
  // int8 layer on the VNNI path, its transposed u8 input in the same pass (quant() then finds it ready).
  void add_ln(float* x, const float* res, int64_t T, const std::vector<float>& w, const std::vector<float>& b,
              const Linear* next) {
    pre_q_ = nullptr;
    if (next && next->int8 && quant_t_ && ek_active_isa() == EK_ISA_AVX512_VNNI && h_ % 16 == 0) {
      const int64_t ld = t_stride(T);
      LnQCtx c{x, res, T, h_, w.data(), b.data(), eps_, next->x_scale, next->x_zp, xq(), ld, 0};
      ek_parallel_for(ek_padded_m(T) / 64, lnq_task, &c);
      check(c.rc);
      pre_q_ = next;
      pre_q_x_ = x;
      pre_q_t_ = T;
      return;
    }
    add_layer_norm(x, res, T, h_, w.data(), b.data(), eps_);
  }

  // Quantises x [T, l.k] for l into xq_: transposed ([l.k][padded T], what the 4x1 VNNI and AVX2 kernels read) when
  // quant_t_, else row-major. Returns the (stride, transposed) pair to pass to ek_gemm_u8s8_t. Rows add_ln has
  // already quantised for l are not done again.
  std::pair<int64_t, bool> quant(const float* x, int64_t T, const Linear& l) {
    if (pre_q_ == &l && pre_q_x_ == x && pre_q_t_ == T) {  // quantised by add_ln already
      pre_q_ = nullptr;
      return {t_stride(T), true};
    }
    pre_q_ = nullptr;
    if (quant_t_) {
      const int64_t ld = t_stride(T);
      check(ek_quantize_u8_t(x, T, l.k, l.k, l.x_scale, l.x_zp, xq(), ld));
      return {ld, true};
    }
    ek_quantize_u8(x, T * l.k, l.x_scale, l.x_zp, xq());
    return {l.k, false};
  }

  // y[T, l.n] = l(x) where x is fp32 [T, l.k]; int8 Linears quantise x first. gelu/out_u8 for FFN-in.
  void linear(const Linear& l, const float* x, int64_t T, float* y, bool gelu_on = false, const Linear* next_q = nullptr,
              uint8_t* yq = nullptr) {
    int rc;
    if (l.int8) {
      const auto [ldx, x_t] = quant(x, T, l);
      linear_u8(l, xq(), ldx, x_t, T, y, gelu_on, next_q, yq);
      return;
    }
    rc = ek_gemm_f32(l.w.get(), x, T, l.k, l.bias.data(), gelu_on, y, l.n);
    if (rc) throw std::runtime_error(ek_last_error());
    if (next_q && next_q->int8) ek_quantize_u8(y, T * l.n, next_q->x_scale, next_q->x_zp, yq);
  }
  void linear_u8(const Linear& l, const uint8_t* xq, int64_t ldx, bool x_t, int64_t T, float* y, bool gelu_on,
                 const Linear* next_q, uint8_t* yq) {
    const bool req = next_q && next_q->int8;
    ek_epilogue ep{l.x_scale, l.x_zp, l.w_scale.data(), l.bias.data(), gelu_on, req, req ? next_q->x_scale : 1.f,
                   req ? next_q->x_zp : 0};
    check(ek_gemm_u8s8_t(l.w.get(), xq, T, ldx, x_t, &ep, req ? (void*)yq : (void*)y, l.n, 0));
  }

  void forward(int64_t B, float* out, std::map<std::string, double>* prof) {
    int64_t T = (int64_t)tok_id_.size();  // tokens in flight (B after the last attention with CLS pooling)
    const int64_t H = h_;
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
    int64_t tp = t_stride(T);  // row stride of the transposed u8 buffers
    quant_t_ = chain_t_ && (ek_active_isa() == EK_ISA_AVX512_VNNI || ek_active_isa() == EK_ISA_AVX2);
    xq_.resize(std::max(T * std::max(H, inter_), tp * H));
    hq_.resize(tp * inter_);
    tile_fused_layers = 0;

    auto t = clock::now();
    // qkv_reader(i): layer i's fused QKV when its input can be quantised for all T rows at once by the step that
    // makes them (add_ln, the tile tasks): with a single chunk, or with several that all start on a 64-token tile
    // (batches of 128-token sequences), whose head tasks then read their chunk's columns of it.
    bool aligned = true;
    for (const auto& ch : chunks_) aligned = aligned && seq_start_[ch.first] % 64 == 0;
    auto qkv_reader = [&](size_t li) -> const Linear* {
      if (li >= layers_.size() || !layers_[li].fused) return nullptr;
      const bool whole = chunks_.size() == 1 || (aligned && qkv_transposed(layers_[li]));
      return whole ? &layers_[li].qkv : nullptr;
    };
    // Runs the tile tasks (c.L: a layer after attention; null: the embeddings); `next`'s input is then quantised.
    auto run_tiles = [&](const Layer* L, const Linear* next) {
      double times[5] = {0, 0, 0, 0, 0};
      TileCtx c{this, L, next, T, tp, prof ? times : nullptr, 0};
      ek_parallel_for(ek_padded_m(T) / 64, tile_task, &c);
      check(c.rc);
      pre_q_ = next;
      pre_q_x_ = x_.data();
      pre_q_t_ = T;
      if (prof) {
        const char* names[5] = {"o_proj", "add_ln", "ffn_in", "ffn_out", "embeddings"};
        for (int i = 0; i < 5; ++i) (*prof)[names[i]] += times[i];
      }
    };
    if (tiles_share_out(T)) {
      run_tiles(nullptr, qkv_reader(0));
    } else {
      for (int64_t i = 0; i < T; ++i) {
        const float* w = word_.data() + tok_id_[i] * H;
        const float* p = pos_.data() + tok_pos_[i] * H;
        float* xi = x_.data() + i * H;
        for (int64_t e = 0; e < H; ++e) xi[e] = w[e] + p[e] + type0_[e];
      }
      add_ln(x_.data(), nullptr, T, eln_w_, eln_b_, qkv_reader(0));
      if (prof) (*prof)["embeddings"] += us(t);
    }
    for (auto& L : layers_) {
      const int64_t ld = 3 * H, qo = 0, ko = H, vo = 2 * H, d = H / heads_;
      // CLS pooling reads one row per sequence, so after the last layer's attention (keys and values need
      // every token) only those rows go on: attention for the first query of each sequence, then the rows are
      // packed to the front and the rest of the layer runs on B tokens instead of T.
      const bool cls_only = cls_ && &L == &layers_.back();
      // QKV projection and attention run chunk by chunk of whole sequences (see chunks_), so the chunk's q, k, v
      // are still in L2 when attention reads them: with the whole batch at once (8 x 128 tokens: 4.7 MB of fp32
      // q, k, v) they came back from L3 and attention took ~30% longer per sequence than at batch 1.
      // Chunks whose QKV input the previous step quantised for the whole batch (64-aligned chunks) need no step
      // of their own before attention: their head tasks then run in one parallel region, each task's q, k, v in
      // its thread's buffer (AttnCtx::qkv_private), where a region per chunk put a barrier after every chunk.
      const bool qkv_t = qkv_transposed(L);
      const bool pre = qkv_t && pre_q_ == &L.qkv && pre_q_x_ == x_.data() && pre_q_t_ == T;
      const bool merged = pre && aligned && chunks_.size() > 1 && merge_chunks;
      // AVX-512 when d % 16 == 0; otherwise the AVX2 kernels (also on AVX-512 CPUs: head sizes that are a
      // multiple of 8 but not 16 would else fall to the scalar loop); scalar last.
      auto chunk_ctx = [&](int64_t b0, int64_t b1, int64_t ldq) {
        const int64_t c0 = seq_start_[b0];
        for (int64_t b = b0; b < b1; ++b) chunk_start_[b] = seq_start_[b] - c0;
        return AttnCtx{qkv_.data(), ldq, qo, ko, vo, ctx_.data() + c0 * H, chunk_start_.data() + b0,
                       seq_len_.data() + b0, b1 - b0, heads_, d, H,
                       ek_active_isa() >= EK_ISA_AVX512 && d % 16 == 0 && d <= 128,
                       attn_bf16_ && ek_active_isa() >= EK_ISA_AVX512 && d % 16 == 0 && d <= 128,
                       ek_active_isa() >= EK_ISA_AVX2 && d % 8 == 0 && d <= 128, cls_only, qkv_t,
                       qkv_t && attn_int8_};
      };
      if (merged) {
        t = clock::now();
        merged_.clear();
        for (const auto& [b0, b1] : chunks_) {
          const int64_t c0 = seq_start_[b0], cn = seq_start_[b1 - 1] + seq_len_[b1 - 1] - c0;
          AttnCtx ac = chunk_ctx(b0, b1, ek_padded_m(cn));
          ac.qkv_l = &L.qkv;
          ac.qkv_x = xq() + c0;  // the whole batch's input, quantised by the previous step: this chunk's columns
          ac.qkv_ldx = t_stride(T);
          ac.cn = cn;
          ac.qkv_private = true;
          ac.qkv_floats = 3 * H * ac.ld + 64;  // + 64: whole 16-key blocks are read past the last token
          merged_.push_back(ac);
        }
        if (prof) {
          head_us_.assign(merged_.size() * heads_, 0.0);
          for (size_t ci = 0; ci < merged_.size(); ++ci) merged_[ci].qkv_us = head_us_.data() + ci * heads_;
        }
        MergedAttn m{merged_.data(), heads_};
        ek_parallel_for((int64_t)merged_.size() * heads_, merged_attn_task, &m);
        for (const auto& ac : merged_) check(ac.rc);
        if (prof) {
          double q = 0;
          for (double v : head_us_) q += v / threads_;
          (*prof)["qkv"] += q;
          (*prof)["attention"] += us(t) - q;
        }
      }
      for (size_t ci = 0; !merged && ci < chunks_.size(); ++ci) {
        const auto [b0, b1] = chunks_[ci];
        t = clock::now();
        const int64_t c0 = seq_start_[b0], cn = seq_start_[b1 - 1] + seq_len_[b1 - 1] - c0;
        const float* xc = x_.data() + c0 * H;
        // With a sparse int8 QKV on the VNNI path (qkv_transposed), q, k and v come out transposed ([3H][tokens]):
        // the 4x1 kernel writes whole 64-byte rows then, where row-major output costs it 64 scattered 16-byte
        // stores per block of 4 outputs; attention uses K^T as it is and transposes V per head instead of K.
        // Only the input is quantised here: each attention task computes its own head's q, k, v (attn_task).
        const int64_t ldq = qkv_t ? ek_padded_m(cn) : ld;
        int64_t head_ldx = 0;
        const uint8_t* head_x = xq();
        if (pre && c0 % 64 == 0) {
          head_x = xq() + c0;  // the whole batch's input, quantised by the previous step: this chunk's columns
          head_ldx = t_stride(T);
        } else if (qkv_t) {
          head_ldx = quant(xc, cn, L.qkv).first;
        } else if (L.fused) {
          linear(L.qkv, xc, cn, qkv_.data());
        } else {  // separate q, k, v written side by side
          for (int part = 0; part < 3; ++part) {
            const Linear& l = part == 0 ? L.q : part == 1 ? L.k : L.v;
            linear(l, xc, cn, tmp_.data());
            for (int64_t i = 0; i < cn; ++i) std::memcpy(qkv_.data() + i * ld + part * H, tmp_.data() + i * H, H * 4);
          }
        }
        if (prof) (*prof)["qkv"] += us(t);
        t = clock::now();
        AttnCtx ac = chunk_ctx(b0, b1, ldq);
        if (qkv_t) {
          ac.qkv_l = &L.qkv;
          ac.qkv_x = head_x;
          ac.qkv_ldx = head_ldx;
          ac.cn = cn;
        }
        if (prof && qkv_t) {
          head_us_.assign(heads_, 0.0);
          ac.qkv_us = head_us_.data();
        }
        ek_parallel_for(qkv_t ? heads_ : (b1 - b0) * heads_, attn_task, &ac);
        check(ac.rc);
        if (prof) {
          // head tasks: the q, k, v share of the region, estimated as the tasks' q, k, v time over the threads
          double q = 0;
          for (double v : head_us_) q += qkv_t ? v / threads_ : 0.0;
          (*prof)["qkv"] += q;
          (*prof)["attention"] += us(t) - q;
        }
      }
      t = clock::now();
      if (cls_only) {
        for (int64_t b = 0; b < B; ++b) {  // seq_start[b] >= b: moving rows forward in order never overwrites a source
          std::memmove(ctx_.data() + b * H, ctx_.data() + seq_start_[b] * H, H * sizeof(float));
          std::memmove(x_.data() + b * H, x_.data() + seq_start_[b] * H, H * sizeof(float));
        }
        T = B;
        tp = t_stride(T);
      }
      if (prof) (*prof)["attention"] += us(t);
      const Linear* next = qkv_reader(&L - layers_.data() + 1);
      if (tiled(L, T)) {
        run_tiles(&L, next);
        ++tile_fused_layers;
        continue;
      }
      t = clock::now();
      linear(L.o, ctx_.data(), T, tmp_.data());
      if (prof) (*prof)["o_proj"] += us(t);
      t = clock::now();
      add_ln(x_.data(), tmp_.data(), T, L.ln1_w, L.ln1_b, &L.ffn_in);
      if (prof) (*prof)["add_ln"] += us(t);
      t = clock::now();
      // FFN-in: GELU and (when FFN-out is int8) requantisation to u8 are fused into the GEMM epilogue. With
      // both sparse int8, the hidden activations stay transposed ([inter][padded T]) between the two GEMMs,
      // which is the layout the sparse kernel consumes, so neither side transposes them.
      const bool fused_req = L.ffn_in.int8 && L.ffn_out.int8;
      if (fused_req && chain_t_) {
        const ek_epilogue ep{L.ffn_in.x_scale, L.ffn_in.x_zp, L.ffn_in.w_scale.data(), L.ffn_in.bias.data(), 1, 1,
                             L.ffn_out.x_scale, L.ffn_out.x_zp};
        const auto [ldx, x_t] = quant(x_.data(), T, L.ffn_in);
        check(ek_gemm_u8s8_t(L.ffn_in.w.get(), xq(), T, ldx, x_t, &ep, hq(), tp, 1));
      } else if (fused_req) {
        linear(L.ffn_in, x_.data(), T, nullptr, true, &L.ffn_out, hq());
      } else {
        std::vector<float> hid(T * inter_);
        linear(L.ffn_in, x_.data(), T, hid.data(), true);
        if (L.ffn_out.int8) ek_quantize_u8(hid.data(), T * inter_, L.ffn_out.x_scale, L.ffn_out.x_zp, hq());
        else ffn_hidden_ = std::move(hid);
      }
      if (prof) (*prof)["ffn_in"] += us(t);
      t = clock::now();
      if (fused_req && chain_t_) {
        const ek_epilogue ep{L.ffn_out.x_scale, L.ffn_out.x_zp, L.ffn_out.w_scale.data(), L.ffn_out.bias.data(), 0, 0,
                             1.f, 0};
        check(ek_gemm_u8s8_t(L.ffn_out.w.get(), hq(), T, tp, 1, &ep, tmp_.data(), H, 0));
      } else if (L.ffn_out.int8) {
        linear_u8(L.ffn_out, hq(), inter_, false, T, tmp_.data(), false, nullptr, nullptr);
      } else {
        linear(L.ffn_out, ffn_hidden_.data(), T, tmp_.data());
      }
      if (prof) (*prof)["ffn_out"] += us(t);
      t = clock::now();
      add_ln(x_.data(), tmp_.data(), T, L.ln2_w, L.ln2_b, next);
      if (prof) (*prof)["add_ln"] += us(t);
    }
    t = clock::now();
    if (cls_) {  // rows 0..B-1 of x_ are the CLS rows (see cls_only): pooler as one fp32 GEMM, tanh, classifier
      check(ek_gemm_f32(pooler_.w.get(), x_.data(), B, H, pooler_.bias.data(), 0, tmp_.data(), H));
      for (int64_t i = 0; i < B * H; ++i) tmp_[i] = std::tanh(tmp_[i]);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t c = 0; c < labels_; ++c) {
          const float* w = cls_w_.data() + c * H;
          const float* pv = tmp_.data() + b * H;
          float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // 8 independent sums (no fast-math here to reorder one)
          int64_t e = 0;
          for (; e + 8 <= H; e += 8)
            for (int u = 0; u < 8; ++u) acc[u] += w[e + u] * pv[e + u];
          float s = cls_b_[c];
          for (; e < H; ++e) s += w[e] * pv[e];
          out[b * labels_ + c] = s + ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        }
    }
    for (int64_t b = 0; b < B && !cls_; ++b) {  // mean pooling over the real tokens, then L2 normalisation
      const float* xs = x_.data() + seq_start_[b] * H;
      float* o = out + b * H;
      std::fill(o, o + H, 0.f);
      for (int64_t i = 0; i < seq_len_[b]; ++i)
        for (int64_t e = 0; e < H; ++e) o[e] += xs[i * H + e];
      double nrm = 0;
      for (int64_t e = 0; e < H; ++e) {
        o[e] /= (float)seq_len_[b];
        nrm += (double)o[e] * o[e];
      }
      const float inv = 1.0f / std::max(1e-12, std::sqrt(nrm));
      for (int64_t e = 0; e < H; ++e) o[e] *= inv;
    }
    if (prof) (*prof)["pooling"] += us(t);
  }

  static void check(int rc) {
    if (rc) throw std::runtime_error(ek_last_error());
  }

  // Profiling of the tile tasks: time since t into times[i] (tile 0's task only), t restarted.
  static void lap(double* times, int i, clock::time_point& t) {
    if (times) times[i] += us(t), t = clock::now();
  }

  // The rows of `tile`: x = LayerNorm(x + res) (res may be null), quantised for `next` when given (into xq(), as
  // add_ln does).
  int tile_tail(int64_t tile, int64_t T, int64_t tp, const float* res, const std::vector<float>& w,
                const std::vector<float>& b, const Linear* next, double* times, int ln_slot, clock::time_point& t) {
    const int64_t H = h_;
    ek_add_layer_norm_avx512(x_.data(), res, tile * 64, std::min(T, tile * 64 + 64), H, w.data(), b.data(), eps_);
    const int rc = next ? ek_quantize_u8_t_tile(x_.data(), T, H, H, next->x_scale, next->x_zp, xq(), tp, tile) : 0;
    lap(times, ln_slot, t);
    return rc;
  }

  // Whether the tiles of T tokens share out over the threads evenly enough for one task per tile (2 tiles on 2
  // threads at batch 1 x 128 tokens); with fewer tiles than threads, or a remainder that would leave a thread
  // idle for a large share of the work, the whole-GEMM calls (split by output channels) are used instead.
  bool tiles_share_out(int64_t T) const {
    const int64_t tiles = ek_padded_m(T) / 64;
    return tile_fusion && chain_t_ && quant_t_ && ek_active_isa() == EK_ISA_AVX512_VNNI && h_ % 16 == 0 &&
           tiles >= threads_ && (tiles % threads_ == 0 || tiles >= 4 * threads_);
  }

  // Whether layer L's fused QKV runs in the attention tasks and writes q, k, v transposed (see forward): a
  // sparse int8 QKV on the VNNI path with the AVX-512 fp32 (or int8) attention.
  bool qkv_transposed(const Layer& L) const {
    const int64_t d = h_ / heads_;
    return L.fused && L.qkv.int8 && chain_t_ && !attn_bf16_ && ek_active_isa() == EK_ISA_AVX512_VNNI &&
           d % 16 == 0 && d <= 128;
  }

  // Whether layer L runs tile by tile after attention (run_tile) on T tokens: every Linear after attention
  // sparse int8 and the tiles sharing out over the threads.
  bool tiled(const Layer& L, int64_t T) const {
    return tiles_share_out(T) && L.o.int8 && L.ffn_in.int8 && L.ffn_out.int8;
  }

  int threads_;
  bool chain_t_ = false, attn_bf16_ = false, attn_int8_ = false, quant_t_ = false;
  const Linear* pre_q_ = nullptr;  // the Linear whose input add_ln left quantised in xq(), for rows pre_q_x_[0, T)
  const float* pre_q_x_ = nullptr;
  int64_t pre_q_t_ = 0;
  int64_t h_, heads_, nl_, inter_, vocab_, maxpos_, labels_ = 0;
  float eps_;
  bool cls_;
  std::vector<float> word_, pos_, type0_, eln_w_, eln_b_, cls_w_, cls_b_;
  Linear pooler_;
  std::vector<Layer> layers_;
  std::vector<int64_t> seq_start_, seq_len_, tok_id_, tok_pos_, chunk_start_;
  std::vector<std::pair<int64_t, int64_t>> chunks_;  // [first, last + 1) sequences per QKV + attention chunk
  // Tokens per QKV + attention chunk: q, k, v of 128 tokens x 384 x 3 fp32 = 590 KB, about the L2 of one core
  // plus the other's share of what attention reads; larger chunks measured slower at batch 8 (bench/native_ab.py).
  static constexpr int64_t kChunkTokens = 128;
  std::vector<float> x_, qkv_, ctx_, tmp_, ffn_hidden_;
  std::vector<double> head_us_;  // profiling of the head tasks (AttnCtx::qkv_us)
  std::vector<AttnCtx> merged_;  // the chunks' contexts of a merged head-task region
  // The u8 activation buffers start on a cache line (ek_alloc_buffer): a transposed operand's 64-token rows then
  // each fill exactly one line, which the sparse kernels' gathers touch (misaligned, every row spanned two).
  ByteBuffer xq_, hq_;
  uint8_t* xq() { return xq_.data(); }
  // Row stride of the transposed u8 operands ([k][stride], tokens along a row): T padded to 64 tokens, plus one
  // more cache line when that is an even number of lines. The sparse kernels gather one 64-byte line per kept
  // column per 64-token tile; at a stride of 2^j lines those lines fall into 1/2^j of the cache sets (at batch
  // 8 x seq 128, a 1 KiB stride, 4 of L1's 64 sets), and conflict misses evict what the next tile reuses.
  static int64_t t_stride(int64_t T) {
    const int64_t tp = ek_padded_m(T);
    return (tp / 64) % 2 == 0 ? tp + 64 : tp;
  }
  uint8_t* hq() { return hq_.data(); }
};
void tile_task(int64_t tile, void* p) {
  TileCtx& c = *static_cast<TileCtx*>(p);
  double* times = tile == 0 ? c.times : nullptr;
  if (int rc = c.L ? c.e->run_tile(*c.L, c.next, c.T, c.tp, tile, times)
                   : c.e->embed_tile(c.next, c.T, c.tp, tile, times))
    c.rc = rc;
}
}  // namespace

PYBIND11_MODULE(_engine, m) {
  m.doc() = "edgekit native engine: BERT encoders on edgekit's int8 / 4x1-sparse kernels";
  py::class_<Encoder>(m, "Encoder")
      .def(py::init<const py::dict&, const py::dict&, int, const std::string&>(), py::arg("config"), py::arg("tensors"),
           py::arg("threads"), py::arg("attention") = "fp32")
      .def_property_readonly("attention", &Encoder::attention)
      .def("run", &Encoder::run, py::arg("input_ids"), py::arg("attention_mask"), py::arg("profile") = py::none())
      .def_property_readonly("out_width", &Encoder::out_width)
      .def_property_readonly("fused_qkv", &Encoder::fused_qkv)
      .def_property_readonly("kernels", &Encoder::kernels)
      .def_readwrite("tile_fusion", &Encoder::tile_fusion,
                     "run each layer's steps after attention one 64-token tile per task when that applies "
                     "(results are identical either way; False is for comparisons)")
      .def_readwrite("merge_chunks", &Encoder::merge_chunks,
                     "run the attention head tasks of a batch's 64-aligned chunks in one parallel region "
                     "(results are identical either way; False is for comparisons)")
      .def_readonly("tile_fused_layers", &Encoder::tile_fused_layers, "layers of the last run that ran tile by tile");
  m.def("isa", [] { return std::string(ek_isa_name(ek_active_isa())); });
  // For tests: softmax(q k^T / sqrt(d)) v for one head through the path the engine picks for this ISA and d.
  m.def(
      "attention_head",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> q,
         py::array_t<float, py::array::c_style | py::array::forcecast> k,
         py::array_t<float, py::array::c_style | py::array::forcecast> v, int64_t nq, bool bf16, bool transposed,
         bool int8) {
        if (q.ndim() != 2 || k.ndim() != 2 || v.ndim() != 2) bad("q, k, v must be [n, d]");
        const int64_t n = q.shape(0), d = q.shape(1);
        if (n < 1 || d < 1 || k.shape(0) != n || v.shape(0) != n || k.shape(1) != d || v.shape(1) != d)
          bad("q, k, v must all be [n, d] with n, d >= 1");
        if (nq != 1 && nq != n) bad("nq must be 1 (first query row only) or n");
        if (bf16 && !ek_cpu_has_avx512_bf16()) bad("bf16 attention needs AVX512_BF16");
        const ek_isa isa = ek_active_isa();
        if (int8 && (!transposed || isa != EK_ISA_AVX512_VNNI))
          bad("int8 attention is the transposed path on AVX-512 VNNI only");
        if (transposed) {  // the engine's transposed layout: [3d][padded n], 16 finite columns past the end
          if (bf16 || isa < EK_ISA_AVX512 || d % 16 || d > 128)
            bad("transposed attention is the AVX-512 path only (d a multiple of 16, <= 128)");
          const int64_t ldt = ek_padded_m(n) + 16;
          std::vector<float> qkv(3 * d * ldt + 64, 7.0f);  // padding columns: finite garbage
          for (int64_t i = 0; i < n; ++i)
            for (int64_t e = 0; e < d; ++e) {
              qkv[e * ldt + i] = q.data()[i * d + e];
              qkv[(d + e) * ldt + i] = k.data()[i * d + e];
              qkv[(2 * d + e) * ldt + i] = v.data()[i * d + e];
            }
          py::array_t<float> out({n, d});
          std::memset(out.mutable_data(), 0, n * d * 4);
          const int64_t start = 0, len = n;
          AttnCtx ac{qkv.data(), ldt, 0, d, 2 * d, out.mutable_data(), &start, &len, 1, 1, d, d, true, false, true,
                     nq == 1, true, int8};
          attn_task(0, &ac);
          return out;
        }
        std::vector<float> qkv(n * 3 * d);
        for (int64_t i = 0; i < n; ++i) {
          std::memcpy(&qkv[i * 3 * d], q.data() + i * d, d * 4);
          std::memcpy(&qkv[i * 3 * d + d], k.data() + i * d, d * 4);
          std::memcpy(&qkv[i * 3 * d + 2 * d], v.data() + i * d, d * 4);
        }
        py::array_t<float> out({n, d});
        std::memset(out.mutable_data(), 0, n * d * 4);
        const int64_t start = 0, len = n;
        AttnCtx ac{qkv.data(), 3 * d, 0, d, 2 * d, out.mutable_data(), &start, &len, 1, 1, d, d,
                   isa >= EK_ISA_AVX512 && d % 16 == 0 && d <= 128, bf16 && isa >= EK_ISA_AVX512 && d % 16 == 0 && d <= 128,
                   isa >= EK_ISA_AVX2 && d % 8 == 0 && d <= 128, nq == 1};
        attn_task(0, &ac);
        return out;
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("nq"), py::arg("bf16") = false, py::arg("transposed") = false,
      py::arg("int8") = false);
  m.def("has_bf16", &ek_cpu_has_avx512_bf16, "whether the CPU has AVX512_BF16 (for attention='bf16')");
}
