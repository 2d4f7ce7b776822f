// The encoder: loading (weights packed for the active kernel ISA) and the steps of a forward (see encoder_impl.h).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <stdexcept>

#include "../src/attention_kernels.h"
#include "../src/config.h"
#include "edgekit/kernels.h"
#include "encoder_impl.h"
#include "layer_norm.h"

namespace ek {
namespace engine {
namespace {
struct TileCtx {
  EncoderImpl* e;
  const Layer* L;      // null: the embeddings (embed_tile)
  const Linear* next;  // the Linear that reads the layer's output next (its input is quantised here), or null
  double* times;  // tile 0's step times (o_proj, add_ln, ffn_in, ffn_out, embeddings) when profiling, else null
  int rc;
};

void tile_task(int64_t tile, void* p) {
  TileCtx& c = *static_cast<TileCtx*>(p);
  double* times = tile == 0 ? c.times : nullptr;
  if (int rc = c.L ? c.e->run_tile(*c.L, c.next, tile, times) : c.e->embed_tile(c.next, tile, times)) c.rc = rc;
}

// Profiling of the tile tasks: time since t into times[i] (tile 0's task only), t restarted.
void lap(double* times, int i, StepTimer::clock::time_point& t) {
  if (!times) return;
  const auto now = StepTimer::clock::now();
  times[i] += std::chrono::duration<double, std::micro>(now - t).count();
  t = StepTimer::clock::now();
}
}  // namespace

void set_architecture(EncoderConfig* c, const std::string& activation, const std::string& pooling, int normalize,
                      const std::string& head, const std::string& head_activation) {
  if (activation.empty() || activation == "gelu") c->activation = Activation::kGelu;
  else if (activation == "gelu_tanh") c->activation = Activation::kGeluTanh;
  else if (activation == "relu") c->activation = Activation::kRelu;
  else bad("activation '" + activation + "' is not supported; allowed: gelu, gelu_tanh, relu");
  if (pooling == "cls-pooler") {  // written before pooling and head were separate fields: a BERT classifier
    c->pooling = Pooling::kCls;
    c->normalize = false;
    c->head = Head::kSequence;
    c->head_activation = HeadActivation::kTanh;
    return;
  }
  if (pooling == "mean") c->pooling = Pooling::kMean;
  else if (pooling == "cls") c->pooling = Pooling::kCls;
  else if (pooling == "max") c->pooling = Pooling::kMax;
  else if (pooling == "none") c->pooling = Pooling::kNone;
  else bad("pooling '" + pooling + "' is not supported; allowed: mean, cls, max, none");
  if (head.empty() || head == "none") c->head = Head::kNone;
  else if (head == "sequence") c->head = Head::kSequence;
  else if (head == "token") c->head = Head::kToken;
  else bad("head '" + head + "' is not supported; allowed: none, sequence, token");
  if (head_activation.empty() || head_activation == "none") c->head_activation = HeadActivation::kNone;
  else if (head_activation == "tanh") c->head_activation = HeadActivation::kTanh;
  else if (head_activation == "relu") c->head_activation = HeadActivation::kRelu;
  else bad("head_activation '" + head_activation + "' is not supported; allowed: none, tanh, relu");
  c->normalize = normalize < 0 ? (c->head == Head::kNone && c->pooling == Pooling::kMean) : normalize != 0;
  if ((c->head == Head::kToken) != (c->pooling == Pooling::kNone))
    bad("a token head needs pooling 'none' and pooling 'none' a token head or none");
  if (c->head != Head::kSequence && c->head_activation != HeadActivation::kNone)
    bad("head_activation applies to a sequence head only");
}

void Encoder::check_options(int threads, const std::string& attention) {
  if (threads < 1) bad("threads must be >= 1");
  if (attention == "bf16") {
    if (!ek::cpu_has_avx512_bf16()) bad("attention='bf16' needs a CPU with AVX512_BF16");
  } else if (attention == "int8") {
    if (active_config().attention_t_int8.kernel == AttentionKernel::kNone) bad("attention='int8' needs the AVX-512 VNNI kernel path");
  } else if (attention != "fp32" && attention != "auto") {
    bad("attention must be 'fp32', 'bf16', 'int8' or 'auto', not '" + attention + "'");
  }
}

EncoderImpl::EncoderImpl(const EncoderConfig& cfg, const TensorLookup& t, int threads, const std::string& attention) {
  Encoder::check_options(threads, attention);
  attn_bf16_ = attention == "bf16";
  attn_int8_ = attention == "int8";
  threads_ = threads;
  h_ = cfg.hidden;
  heads_ = cfg.heads;
  nl_ = cfg.layers;
  inter_ = cfg.intermediate;
  vocab_ = cfg.vocab_size;
  maxpos_ = cfg.max_position;
  eps_ = cfg.layer_norm_eps;
  act_ = cfg.activation;
  pooling_ = cfg.pooling;
  head_ = cfg.head;
  head_act_ = cfg.head_activation;
  normalize_ = cfg.normalize && head_ == Head::kNone;
  pos_off_ = cfg.position_offset;
  cls_ = pooling_ == Pooling::kCls;
  if (h_ <= 0 || heads_ <= 0 || h_ % heads_ || nl_ <= 0 || inter_ <= 0) bad("native model: bad config sizes");
  if (pos_off_ < 0 || pos_off_ >= maxpos_) bad("native model: position_offset must lie in 0..max_position - 1");
  if ((head_ == Head::kToken) != (pooling_ == Pooling::kNone))
    bad("native model: a token head needs pooling 'none' and pooling 'none' a token head or none");
  const ek_pattern pat = cfg.sparse_4x1 ? EK_BLOCK_4X1 : EK_DENSE;
  chain_t_ = pat == EK_BLOCK_4X1;  // the 4x1 kernels take and give transposed activations natively
  ek_set_num_threads(threads_);
  const int64_t tv = cfg.type_vocab_size;
  pre_ln_ = cfg.pre_ln;
  patches_ = cfg.patches;
  if (pre_ln_ != (patches_ > 0))
    bad("native model: pre-LayerNorm layers come with image input (a ViT) and image input with them");
  if (patches_ > 0) {  // a ViT: patch GEMM, prefix tokens and positions; the final LayerNorm after the last layer
    patch_dim_ = cfg.patch_dim;
    prefix_ = cfg.prefix_tokens;
    if (patch_dim_ < 1 || prefix_ < 0 || maxpos_ != prefix_ + patches_ || (cls_ && prefix_ < 1))
      bad("native model: bad image sizes (patch_dim >= 1, max_position = prefix_tokens + patches, a class token "
          "for cls pooling)");
    patch_ = load_linear(t, "embeddings.patch", h_, patch_dim_, EK_DENSE);
    if (patch_.int8) bad("native model: embeddings.patch must be fp32");
    prefix_emb_ = take<float>(t, "embeddings.prefix", {prefix_, h_});
    pos_ = take<float>(t, "embeddings.position", {maxpos_, h_});
    fln_w_ = take<float>(t, "final_ln.weight", {h_});
    fln_b_ = take<float>(t, "final_ln.bias", {h_});
  } else {
    word_ = take<float>(t, "embeddings.word", {vocab_, h_});
    pos_ = take<float>(t, "embeddings.position", {maxpos_, h_});
    if (tv > 0) {
      type_ = take<float>(t, "embeddings.token_type", {tv, h_});
      types_ = tv;
    } else {
      type_.assign(h_, 0.f);  // no token type embeddings (DistilBERT, RoBERTa-like): one zero row all tokens add
      types_ = 0;
    }
    eln_w_ = take<float>(t, "embeddings.ln.weight", {h_});
    eln_b_ = take<float>(t, "embeddings.ln.bias", {h_});
  }
  std::set<std::string> dense(cfg.dense_linears.begin(), cfg.dense_linears.end());
  for (const std::string& name : dense) {  // each an encoder Linear of this model
    const auto dot = name.rfind('.');
    const std::string kind = dot == std::string::npos ? "" : name.substr(dot + 1);
    const std::string layer = name.substr(0, dot == std::string::npos ? 0 : dot);
    bool known = false;
    for (int64_t i = 0; i < nl_ && !known; ++i) known = layer == "layers." + std::to_string(i);
    if (!known || !(kind == "q" || kind == "k" || kind == "v" || kind == "o" || kind == "ffn_in" || kind == "ffn_out"))
      bad("native model: dense_linears names '" + name + "', not an encoder Linear (layers.<i>.q, k, v, o, ffn_in, "
          "ffn_out)");
  }
  auto pat_of = [&](const std::string& name) { return dense.count(name) ? EK_DENSE : pat; };
  for (int64_t i = 0; i < nl_; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    Layer L;
    const bool qkv_dense = dense.count(p + "q") && dense.count(p + "k") && dense.count(p + "v");
    L.fused = fuse_qkv(t, p, h_, qkv_dense ? EK_DENSE : pat, &L.qkv);
    if (!L.fused) {
      L.q = load_linear(t, p + "q", h_, h_, pat_of(p + "q"));
      L.k = load_linear(t, p + "k", h_, h_, pat_of(p + "k"));
      L.v = load_linear(t, p + "v", h_, h_, pat_of(p + "v"));
    }
    L.o = load_linear(t, p + "o", h_, h_, pat_of(p + "o"));
    L.ffn_in = load_linear(t, p + "ffn_in", inter_, h_, pat_of(p + "ffn_in"));
    L.ffn_out = load_linear(t, p + "ffn_out", h_, inter_, pat_of(p + "ffn_out"));
    L.ln1_w = take<float>(t, p + "attn_ln.weight", {h_});
    L.ln1_b = take<float>(t, p + "attn_ln.bias", {h_});
    L.ln2_w = take<float>(t, p + "ffn_ln.weight", {h_});
    L.ln2_b = take<float>(t, p + "ffn_ln.bias", {h_});
    layers_.push_back(std::move(L));
  }
  const IsaConfig& isa = active_config();
  const bool int8_runs = isa.token_tiles && isa.attention_t_int8.takes(h_ / heads_) && chain_t_ && layers_[0].fused &&
                         layers_[0].qkv.int8 && layers_[0].qkv.sparse;
  if (attention == "auto") attn_int8_ = int8_runs;  // int8 where it runs, else fp32 (see attention())
  if (attn_int8_ && !int8_runs)
    bad("attention='int8' runs on the transposed q, k, v of a 4x1 sparse int8 model with a head size that is a "
        "multiple of 16 (up to 128)");
  if (head_ != Head::kNone) {
    labels_ = cfg.num_labels;
    if (labels_ < 1) bad("native model: a classifier needs num_labels >= 1");
    if (head_act_ != HeadActivation::kNone) pooler_ = load_linear(t, "pooler", h_, h_, EK_DENSE);
    cls_w_ = take<float>(t, "classifier.weight", {labels_, h_});
    cls_b_ = take<float>(t, "classifier.bias", {labels_});
  }
}

void EncoderImpl::set_input(const int64_t* id, const int64_t* mk, const int64_t* ty, int64_t B, int64_t S) {
  if (patches_ > 0) bad("this model takes images (pixel patches), not token ids");
  if (B == 0 || S == 0) bad("empty input: batch and seq must be at least 1");
  if (S + pos_off_ > maxpos_)
    bad("sequence length " + std::to_string(S) + " is longer than the model's maximum " + std::to_string(maxpos_ - pos_off_));
  seq_start_.assign(B, 0);
  seq_len_.assign(B, 0);
  tok_id_.clear();
  tok_pos_.clear();
  tok_col_.clear();
  tok_type_.clear();
  for (int64_t b = 0; b < B; ++b) {
    seq_start_[b] = (int64_t)tok_id_.size();
    if (cls_ && mk[b * S] == 0) bad("row " + std::to_string(b) + ": the first token must be attended (the output pools it)");
    for (int64_t s = 0; s < S; ++s) {
      const int64_t m = mk[b * S + s];
      if (m != 0 && m != 1) bad("attention_mask must hold only 0 and 1");
      if (!m) continue;
      const int64_t v = id[b * S + s];
      if (v < 0 || v >= vocab_) bad("token id " + std::to_string(v) + " is outside the vocabulary (size " + std::to_string(vocab_) + ")");
      // with an offset (RoBERTa) position ids count attended tokens from the offset, as RoBERTa counts non-padding
      // tokens; else they are the column (BERT, DistilBERT)
      tok_pos_.push_back(pos_off_ ? pos_off_ + (int64_t)tok_id_.size() - seq_start_[b] : s);
      // segment ids are packed with the ids (attended tokens only); none given, or a model without token type
      // embeddings: every token adds row 0 (for a model without them, a zero row)
      int64_t g = 0;
      if (ty) {
        g = ty[b * S + s];
        if (g < 0 || g >= std::max<int64_t>(types_, 1))
          bad("token type id " + std::to_string(g) + " is outside the model's token types (" +
              (types_ ? "0.." + std::to_string(types_ - 1) : std::string("it has none: only 0")) + ")");
      }
      tok_type_.push_back(g);
      tok_id_.push_back(v);
      tok_col_.push_back(s);
    }
    seq_len_[b] = (int64_t)tok_id_.size() - seq_start_[b];
    if (seq_len_[b] == 0) bad("row " + std::to_string(b) + " has no attended token");
  }
  B_ = B;
  S_ = S;
}

// An image batch: every image is prefix_ tokens then its patches_ patches, all attended; the token bookkeeping plan()
// and pool() read is filled as for unpadded sequences of that length.
void EncoderImpl::set_image_input(const float* px, int64_t B, int64_t P, int64_t K) {
  if (patches_ == 0) bad("this model takes token ids, not image patches");
  if (B < 1) bad("empty input: batch must be at least 1");
  if (P != patches_ || K != patch_dim_)
    bad("image patches must be [batch, " + std::to_string(patches_) + ", " + std::to_string(patch_dim_) + "]; got [" +
        std::to_string(B) + ", " + std::to_string(P) + ", " + std::to_string(K) + "]");
  const int64_t S = prefix_ + P;
  pix_.assign(px, px + B * P * K);
  seq_start_.resize(B);
  seq_len_.assign(B, S);
  for (int64_t b = 0; b < B; ++b) seq_start_[b] = b * S;
  tok_id_.assign(B * S, 0);
  tok_type_.assign(B * S, 0);
  tok_pos_.resize(B * S);
  for (int64_t i = 0; i < B * S; ++i) tok_pos_[i] = i % S;
  tok_col_ = tok_pos_;
  B_ = B;
  S_ = S;
}

void EncoderImpl::check(int rc) {
  if (rc) throw std::runtime_error(ek_last_error());
}

// LayerNorm(x + res), and when `next` (the Linear that reads these rows next, over all T of them) is a sparse
// int8 layer on the token-tile path, its transposed u8 input in the same pass (quant() then finds it ready).
void EncoderImpl::add_ln(float* x, const float* res, int64_t T, const std::vector<float>& w,
                           const std::vector<float>& b, const Linear* next) {
  pre_q_ = nullptr;
  if (next && takes_t(*next) && active_config().token_tiles && h_ % 16 == 0) {
    check(add_layer_norm_quantize_t(x, res, T, h_, w.data(), b.data(), eps_, next->x_scale, next->x_zp, xq(),
                                    t_stride(T)));
    pre_q_ = next;
    pre_q_x_ = x;
    pre_q_t_ = T;
    return;
  }
  add_layer_norm(x, res, T, h_, w.data(), b.data(), eps_);
}

// Quantises x [T, l.k] for l into xq_: transposed ([l.k][padded T], what the 4x1 kernels read natively) when l
// takes it (takes_t), else row-major. Returns the (stride, transposed) pair to pass to ek_gemm_u8s8_t. Rows add_ln has
// already quantised for l are not done again.
std::pair<int64_t, bool> EncoderImpl::quant(const float* x, int64_t T, const Linear& l) {
  if (pre_q_ == &l && pre_q_x_ == x && pre_q_t_ == T) {  // quantised by add_ln already
    pre_q_ = nullptr;
    return {t_stride(T), true};
  }
  pre_q_ = nullptr;
  if (takes_t(l)) {
    const int64_t ld = t_stride(T);
    check(ek_quantize_u8_t(x, T, l.k, l.k, l.x_scale, l.x_zp, xq(), ld));
    return {ld, true};
  }
  ek_quantize_u8(x, T * l.k, l.x_scale, l.x_zp, xq());
  return {l.k, false};
}

// y[T, l.n] = l(x) where x is fp32 [T, l.k]; int8 Linears quantise x first. gelu/out_u8 for FFN-in.
void EncoderImpl::linear(const Linear& l, const float* x, int64_t T, float* y, bool gelu_on, const Linear* next_q,
                           uint8_t* yq) {
  if (l.int8) {
    const auto [ldx, x_t] = quant(x, T, l);
    linear_u8(l, xq(), ldx, x_t, T, y, gelu_on, next_q, yq);
    return;
  }
  check(ek_gemm_f32(l.w.get(), x, T, l.k, l.bias.data(), gelu_on, y, l.n));
  if (next_q && next_q->int8) ek_quantize_u8(y, T * l.n, next_q->x_scale, next_q->x_zp, yq);
}

void EncoderImpl::linear_u8(const Linear& l, const uint8_t* xq, int64_t ldx, bool x_t, int64_t T, float* y,
                              bool gelu_on, const Linear* next_q, uint8_t* yq) {
  const bool req = next_q && next_q->int8;
  ek_epilogue ep{l.x_scale, l.x_zp, l.w_scale.data(), l.bias.data(), gelu_on, req, req ? next_q->x_scale : 1.f,
                 req ? next_q->x_zp : 0};
  check(ek_gemm_u8s8_t(l.w.get(), xq, T, ldx, x_t, &ep, req ? (void*)yq : (void*)y, l.n, 0));
}

void EncoderImpl::forward(float* out, Profile* prof) {
  if (pre_ln_) {
    forward_pre(out, prof);
    return;
  }
  plan(B_);
  StepTimer timer(prof);
  embeddings(timer);
  for (const Layer& L : layers_) {
    // CLS pooling reads one row per sequence, so after the last layer's attention (keys and values need
    // every token) only those rows go on: attention for the first query of each sequence, then the rows are
    // packed to the front and the rest of the layer runs on B tokens instead of T.
    const bool cls_only = cls_ && &L == &layers_.back();
    attention_layer(L, cls_only, timer);
    timer.restart();
    if (cls_only) {
      for (int64_t b = 0; b < B_; ++b) {  // seq_start[b] >= b: moving rows forward in order never overwrites a source
        std::memmove(ctx_.data() + b * h_, ctx_.data() + seq_start_[b] * h_, h_ * sizeof(float));
        std::memmove(x_.data() + b * h_, x_.data() + seq_start_[b] * h_, h_ * sizeof(float));
      }
      T_ = B_;
      tp_ = t_stride(T_);
    }
    timer.stop("attention");
    feed_forward(L, qkv_reader(&L - layers_.data() + 1), timer);
  }
  timer.restart();
  pool(out, timer);
  timer.stop("pooling");
}

void EncoderImpl::embeddings(StepTimer& timer) {
  if (tiles_share_out(T_)) {
    run_tiles(nullptr, qkv_reader(0), timer);
    return;
  }
  const int64_t H = h_;
  for (int64_t i = 0; i < T_; ++i) {
    const float* w = word_.data() + tok_id_[i] * H;
    const float* p = pos_.data() + tok_pos_[i] * H;
    const float* g = type_.data() + tok_type_[i] * H;
    float* xi = x_.data() + i * H;
    for (int64_t e = 0; e < H; ++e) xi[e] = w[e] + p[e] + g[e];
  }
  add_ln(x_.data(), nullptr, T_, eln_w_, eln_b_, qkv_reader(0));
  timer.stop("embeddings");
}

// QKV projection and attention run chunk by chunk of whole sequences (see chunks_), so the chunk's q, k, v are
// still in L2 when attention reads them: with the whole batch at once (8 x 128 tokens: 4.7 MB of fp32 q, k, v)
// they came back from L3 and attention took ~30% longer per sequence than at batch 1. Chunks whose QKV input the
// previous step quantised for the whole batch (64-aligned chunks) need no step of their own before attention:
// their head tasks then run in one parallel region, each task's q, k, v in its thread's buffer
// (AttnCtx::qkv_private), where a region per chunk put a barrier after every chunk.
void EncoderImpl::attention_layer(const Layer& L, bool cls_only, StepTimer& timer) {
  const int64_t H = h_, T = T_, ld = 3 * H;
  const bool qkv_t = qkv_transposed(L);
  const bool pre = qkv_t && pre_q_ == &L.qkv && pre_q_x_ == x_.data() && pre_q_t_ == T;
  // the q, k, v share of a head-task region: the tasks' q, k, v time over the threads
  auto qkv_share = [&] {
    double q = 0;
    for (double v : head_us_) q += v / threads_;
    return q;
  };
  if (pre && aligned_ && chunks_.size() > 1 && merge_chunks) {
    timer.restart();
    merged_.clear();
    for (const auto& [b0, b1] : chunks_) {
      const int64_t c0 = seq_start_[b0], cn = seq_start_[b1 - 1] + seq_len_[b1 - 1] - c0;
      AttnCtx ac = chunk_ctx(L, b0, b1, ek_padded_m(cn), cls_only);
      ac.qkv_l = &L.qkv;
      ac.qkv_x = xq() + c0;  // the whole batch's input, quantised by the previous step: this chunk's columns
      ac.qkv_ldx = t_stride(T);
      ac.cn = cn;
      ac.qkv_private = true;
      ac.qkv_floats = 3 * H * ac.ld + 64;  // + 64: whole 16-key blocks are read past the last token
      merged_.push_back(ac);
    }
    if (timer.on()) {
      head_us_.assign(merged_.size() * heads_, 0.0);
      for (size_t ci = 0; ci < merged_.size(); ++ci) merged_[ci].qkv_us = head_us_.data() + ci * heads_;
    }
    MergedAttn m{merged_.data(), heads_};
    ek_parallel_for((int64_t)merged_.size() * heads_, merged_attn_task, &m);
    for (const auto& ac : merged_) check(ac.rc);
    if (timer.on()) {
      const double q = qkv_share();
      timer.add("qkv", q);
      timer.add("attention", timer.elapsed_us() - q);
    }
    return;
  }
  for (const auto& [b0, b1] : chunks_) {
    timer.restart();
    const int64_t c0 = seq_start_[b0], cn = seq_start_[b1 - 1] + seq_len_[b1 - 1] - c0;
    const float* xc = x_.data() + c0 * H;
    // With q, k, v transposed ([3H][tokens]), the 4x1 kernel writes whole 64-byte rows, where row-major output
    // costs it 64 scattered 16-byte stores per block of 4 outputs; attention uses K^T as it is and transposes V
    // per head instead of K. Only the input is quantised here: each attention task computes its own head's q, k
    // and v (attn_task).
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
    timer.stop("qkv");
    AttnCtx ac = chunk_ctx(L, b0, b1, ldq, cls_only);
    if (qkv_t) {
      ac.qkv_l = &L.qkv;
      ac.qkv_x = head_x;
      ac.qkv_ldx = head_ldx;
      ac.cn = cn;
    }
    if (timer.on() && qkv_t) {
      head_us_.assign(heads_, 0.0);
      ac.qkv_us = head_us_.data();
    }
    ek_parallel_for(qkv_t ? heads_ : (b1 - b0) * heads_, attn_task, &ac);
    check(ac.rc);
    if (timer.on()) {
      const double q = qkv_t ? qkv_share() : 0.0;
      timer.add("qkv", q);
      timer.add("attention", timer.elapsed_us() - q);
    }
  }
}

// The steps after attention: O projection, add + LayerNorm, FFN-in, FFN-out, add + LayerNorm (quantised for
// `next`, the Linear that reads the layer's output), tile by tile where that applies.
void EncoderImpl::feed_forward(const Layer& L, const Linear* next, StepTimer& timer) {
  const int64_t T = T_;
  if (tiled(L, T)) {
    run_tiles(&L, next, timer);
    ++tile_fused_layers;
    return;
  }
  timer.restart();
  linear(L.o, ctx_.data(), T, tmp_.data());
  timer.stop("o_proj");
  add_ln(x_.data(), tmp_.data(), T, L.ln1_w, L.ln1_b, &L.ffn_in);
  timer.stop("add_ln");
  ffn(L, timer);
  add_ln(x_.data(), tmp_.data(), T, L.ln2_w, L.ln2_b, next);
  timer.stop("add_ln");
}

// The feed-forward block on the T rows of x_ (the LayerNorm before it has run) into tmp_.
void EncoderImpl::ffn(const Layer& L, StepTimer& timer) {
  const int64_t H = h_, T = T_, tp = tp_;
  // FFN-in: GELU and (when FFN-out is int8) requantisation to u8 are fused into the GEMM epilogue. With
  // both sparse int8, the hidden activations stay transposed ([inter][padded T]) between the two GEMMs,
  // which is the layout the sparse kernel consumes, so neither side transposes them.
  const bool fused_req = fused_act() && L.ffn_in.int8 && L.ffn_out.int8;
  const bool both_t = L.ffn_in.sparse && L.ffn_out.sparse;  // (a 4x1 model's Linears may run dense: dense_linears)
  if (fused_req && both_t) {
    const ek_epilogue ep{L.ffn_in.x_scale, L.ffn_in.x_zp, L.ffn_in.w_scale.data(), L.ffn_in.bias.data(), 1, 1,
                         L.ffn_out.x_scale, L.ffn_out.x_zp};
    const auto [ldx, x_t] = quant(x_.data(), T, L.ffn_in);
    check(ek_gemm_u8s8_t(L.ffn_in.w.get(), xq(), T, ldx, x_t, &ep, hq(), tp, 1));
  } else if (fused_req) {
    linear(L.ffn_in, x_.data(), T, nullptr, true, &L.ffn_out, hq());
  } else {
    std::vector<float> hid(T * inter_);
    linear(L.ffn_in, x_.data(), T, hid.data(), fused_act());
    if (!fused_act()) activate(hid.data(), T * inter_);
    if (L.ffn_out.int8) ek_quantize_u8(hid.data(), T * inter_, L.ffn_out.x_scale, L.ffn_out.x_zp, hq());
    else ffn_hidden_ = std::move(hid);
  }
  timer.stop("ffn_in");
  if (fused_req && both_t) {
    const ek_epilogue ep{L.ffn_out.x_scale, L.ffn_out.x_zp, L.ffn_out.w_scale.data(), L.ffn_out.bias.data(), 0, 0,
                         1.f, 0};
    check(ek_gemm_u8s8_t(L.ffn_out.w.get(), hq(), T, tp, 1, &ep, tmp_.data(), H, 0));
  } else if (L.ffn_out.int8) {
    linear_u8(L.ffn_out, hq(), inter_, false, T, tmp_.data(), false, nullptr, nullptr);
  } else {
    linear(L.ffn_out, ffn_hidden_.data(), T, tmp_.data());
  }
  timer.stop("ffn_out");
}

// A pre-LN encoder (ViT) on image input: the residual stream lives in res_, each LayerNorm writes its output to x_
// (which the attention and FFN steps read, as in the post-LN loop), and the sublayers' outputs are added back to
// res_. As there, CLS pooling lets the last layer go on with the class tokens only after attention.
void EncoderImpl::forward_pre(float* out, Profile* prof) {
  plan(B_);
  StepTimer timer(prof);
  const int64_t H = h_;
  res_.resize(T_ * H);
  embed_image(timer);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& L = layers_[i];
    const bool cls_only = cls_ && i + 1 == layers_.size();
    timer.restart();
    std::copy(res_.begin(), res_.begin() + T_ * H, x_.begin());
    add_ln(x_.data(), nullptr, T_, L.ln1_w, L.ln1_b, qkv_reader(i));
    timer.stop("add_ln");
    attention_layer(L, cls_only, timer);
    timer.restart();
    if (cls_only) {  // seq_start[b] >= b: moving rows forward in order never overwrites a source
      for (int64_t b = 0; b < B_; ++b) {
        std::memmove(ctx_.data() + b * H, ctx_.data() + seq_start_[b] * H, H * sizeof(float));
        std::memmove(res_.data() + b * H, res_.data() + seq_start_[b] * H, H * sizeof(float));
      }
      T_ = B_;
      tp_ = t_stride(T_);
    }
    timer.stop("attention");
    linear(L.o, ctx_.data(), T_, tmp_.data());
    timer.stop("o_proj");
    for (int64_t j = 0; j < T_ * H; ++j) res_[j] += tmp_[j];
    std::copy(res_.begin(), res_.begin() + T_ * H, x_.begin());
    add_ln(x_.data(), nullptr, T_, L.ln2_w, L.ln2_b, &L.ffn_in);
    timer.stop("add_ln");
    ffn(L, timer);
    timer.restart();
    for (int64_t j = 0; j < T_ * H; ++j) res_[j] += tmp_[j];
    timer.stop("add_ln");
  }
  std::copy(res_.begin(), res_.begin() + T_ * H, x_.begin());
  add_ln(x_.data(), nullptr, T_, fln_w_, fln_b_, nullptr);
  timer.stop("add_ln");
  pool(out, timer);
  timer.stop("pooling");
}

// res_ rows of image b: its prefix tokens, then its patches through the patch GEMM (all B * patches rows in one
// call, into tmp_), each plus its position's embedding.
void EncoderImpl::embed_image(StepTimer& timer) {
  const int64_t H = h_, P = patches_, S = prefix_ + P;
  timer.restart();
  linear(patch_, pix_.data(), B_ * P, tmp_.data());
  for (int64_t b = 0; b < B_; ++b)
    for (int64_t s = 0; s < S; ++s) {
      const float* src = s < prefix_ ? prefix_emb_.data() + s * H : tmp_.data() + (b * P + s - prefix_) * H;
      const float* p = pos_.data() + s * H;
      float* r = res_.data() + (b * S + s) * H;
      for (int64_t e = 0; e < H; ++e) r[e] = src[e] + p[e];
    }
  timer.stop("embeddings");
}

// The FFN activation on n values, for activations the GEMM epilogues do not fuse (they fuse GELU with erf).
void EncoderImpl::activate(float* y, int64_t n) const {
  if (act_ == Activation::kRelu) {
    for (int64_t i = 0; i < n; ++i) y[i] = y[i] > 0.f ? y[i] : 0.f;
  } else if (act_ == Activation::kGeluTanh) {  // 0.5 y (1 + tanh(sqrt(2 / pi) (y + 0.044715 y^3))), as gelu_new
    for (int64_t i = 0; i < n; ++i) {
      const float v = y[i];
      y[i] = 0.5f * v * (1.f + std::tanh(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    }
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = 0.5f * y[i] * (1.f + std::erf(y[i] * 0.70710678118654752f));
  }
}

// out[r, c] = classifier(rows[r]) for n rows of H values.
void EncoderImpl::classify(const float* rows, int64_t n, float* out) const {
  const int64_t H = h_;
  for (int64_t b = 0; b < n; ++b)
    for (int64_t c = 0; c < labels_; ++c) {
      const float* w = cls_w_.data() + c * H;
      const float* pv = rows + b * H;
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // 8 independent sums (no fast-math here to reorder one)
      int64_t e = 0;
      for (; e + 8 <= H; e += 8)
        for (int u = 0; u < 8; ++u) acc[u] += w[e + u] * pv[e + u];
      float s = cls_b_[c];
      for (; e < H; ++e) s += w[e] * pv[e];
      out[b * labels_ + c] = s + ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    }
}

// The output from the last hidden states x_. Pooling none: one row per token, written at its column of the input
// ([B, S, width], zeros at padded columns), through the token classifier when there is one. Else one vector per
// sequence: the first token (with cls pooling rows 0..B-1 of x_ are those rows already, see forward), the mean or
// the per-channel max over its tokens; then a sequence head (optional dense + tanh/ReLU, classifier) or, for
// embeddings, optional L2 normalisation.
void EncoderImpl::pool(float* out, StepTimer&) {
  const int64_t B = B_, H = h_, W = head_ == Head::kNone ? H : labels_;
  if (pooling_ == Pooling::kNone) {
    std::fill(out, out + B * S_ * W, 0.f);
    std::vector<float> row(W);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < seq_len_[b]; ++i) {
        const int64_t tok = seq_start_[b] + i;
        const float* xs = x_.data() + tok * H;
        float* o = out + (b * S_ + tok_col_[tok]) * W;
        if (head_ == Head::kToken) classify(xs, 1, o);
        else std::copy(xs, xs + H, o);
      }
  } else {
    pooled_.resize(B * H);
    float* pooled = head_ == Head::kNone ? out : pooled_.data();
    for (int64_t b = 0; b < B; ++b) {
      float* o = pooled + b * H;
      const float* xs = x_.data() + (cls_ ? b : seq_start_[b]) * H;
      if (pooling_ == Pooling::kCls) {
        std::copy(xs, xs + H, o);
      } else if (pooling_ == Pooling::kMax) {
        std::copy(xs, xs + H, o);
        for (int64_t i = 1; i < seq_len_[b]; ++i)
          for (int64_t e = 0; e < H; ++e) o[e] = std::max(o[e], xs[i * H + e]);
      } else {
        std::fill(o, o + H, 0.f);
        for (int64_t i = 0; i < seq_len_[b]; ++i)
          for (int64_t e = 0; e < H; ++e) o[e] += xs[i * H + e];
        for (int64_t e = 0; e < H; ++e) o[e] /= (float)seq_len_[b];
      }
    }
    if (head_ == Head::kSequence) {
      const float* rows = pooled;
      if (head_act_ != HeadActivation::kNone) {
        check(ek_gemm_f32(pooler_.w.get(), pooled, B, H, pooler_.bias.data(), 0, tmp_.data(), H));
        for (int64_t i = 0; i < B * H; ++i)
          tmp_[i] = head_act_ == HeadActivation::kTanh ? std::tanh(tmp_[i]) : std::max(tmp_[i], 0.f);
        rows = tmp_.data();
      }
      classify(rows, B, out);
      return;
    }
  }
  if (!normalize_) return;
  const int64_t rows = pooling_ == Pooling::kNone ? B * S_ : B;
  for (int64_t r = 0; r < rows; ++r) {
    float* o = out + r * W;
    double nrm = 0;
    for (int64_t e = 0; e < W; ++e) nrm += (double)o[e] * o[e];
    if (nrm == 0) continue;  // a padded position of a per-token output
    const float inv = 1.0f / std::max(1e-12, std::sqrt(nrm));
    for (int64_t e = 0; e < W; ++e) o[e] *= inv;
  }
}

// Runs the tile tasks (L: a layer after attention; null: the embeddings); `next`'s input is then quantised.
void EncoderImpl::run_tiles(const Layer* L, const Linear* next, StepTimer& timer) {
  double times[5] = {0, 0, 0, 0, 0};
  TileCtx c{this, L, next, timer.on() ? times : nullptr, 0};
  ek_parallel_for(ek_padded_m(T_) / 64, tile_task, &c);
  check(c.rc);
  pre_q_ = next;
  pre_q_x_ = x_.data();
  pre_q_t_ = T_;
  const char* names[5] = {"o_proj", "add_ln", "ffn_in", "ffn_out", "embeddings"};
  for (int i = 0; i < 5; ++i) timer.add(names[i], times[i]);
}

// After attention, one 64-token tile of the layer on the calling thread: quantise its attention output, O
// projection, add + LayerNorm (quantised for FFN-in), FFN-in with GELU and u8 requantisation, FFN-out, add +
// LayerNorm (quantised for `next`). Every step reads only this tile's tokens and writes only them, so the
// tiles run in parallel, one task each, with no hand-off between the steps: a tile's activations stay in
// one core's caches (split by output channels, as the whole-GEMM calls are, each GEMM's output went from
// both cores to the next step's tasks) and a layer has one parallel region after attention instead of six.
int EncoderImpl::run_tile(const Layer& L, const Linear* next, int64_t tile, double* times) {
  const int64_t H = h_, T = T_, tp = tp_;
  uint8_t* xq = this->xq();
  int rc = 0;
  auto t = StepTimer::clock::now();
  const Linear &o = L.o, &fi = L.ffn_in, &fo = L.ffn_out;
  rc = rc ? rc : ek_quantize_u8_t_tile(ctx_.data(), T, H, H, o.x_scale, o.x_zp, xq, tp, tile);
  const ek_epilogue ep_o{o.x_scale, o.x_zp, o.w_scale.data(), o.bias.data(), 0, 0, 1.f, 0};
  rc = rc ? rc : ek_gemm_u8s8_t_tile(o.w.get(), xq, T, tp, &ep_o, tmp_.data(), H, 0, tile);
  lap(times, 0, t);
  rc = rc ? rc : tile_tail(tile, tmp_.data(), L.ln1_w, L.ln1_b, &fi, times, 1, t);
  const ek_epilogue ep_in{fi.x_scale, fi.x_zp, fi.w_scale.data(), fi.bias.data(), 1, 1, fo.x_scale, fo.x_zp};
  rc = rc ? rc : ek_gemm_u8s8_t_tile(fi.w.get(), xq, T, tp, &ep_in, hq(), tp, 1, tile);
  lap(times, 2, t);
  const ek_epilogue ep_out{fo.x_scale, fo.x_zp, fo.w_scale.data(), fo.bias.data(), 0, 0, 1.f, 0};
  rc = rc ? rc : ek_gemm_u8s8_t_tile(fo.w.get(), hq(), T, tp, &ep_out, tmp_.data(), H, 0, tile);
  lap(times, 3, t);
  return rc ? rc : tile_tail(tile, tmp_.data(), L.ln2_w, L.ln2_b, next, times, 1, t);
}

// The embeddings of one tile's tokens (word + position + token type, LayerNorm), quantised for `next` as in
// run_tile: the first layer's input, tile by tile. (The word rows come from a 47 MB table for BERT's
// vocabulary, mostly cache misses: two threads overlap twice as many.)
int EncoderImpl::embed_tile(const Linear* next, int64_t tile, double* times) {
  const int64_t H = h_, r1 = std::min(T_, tile * 64 + 64);
  auto t = StepTimer::clock::now();
  for (int64_t i = tile * 64; i < r1; ++i) {
    const float* w = word_.data() + tok_id_[i] * H;
    const float* p = pos_.data() + tok_pos_[i] * H;
    const float* g = type_.data() + tok_type_[i] * H;
    float* xi = x_.data() + i * H;
    for (int64_t e = 0; e < H; ++e) xi[e] = w[e] + p[e] + g[e];
  }
  return tile_tail(tile, nullptr, eln_w_, eln_b_, next, times, 4, t);
}

// The rows of `tile`: x = LayerNorm(x + res) (res may be null), quantised for `next` when given (into xq(), as
// add_ln does).
int EncoderImpl::tile_tail(int64_t tile, const float* res, const std::vector<float>& w, const std::vector<float>& b,
                             const Linear* next, double* times, int ln_slot, StepTimer::clock::time_point& t) {
  const int64_t H = h_, T = T_;
  run_add_layer_norm(layer_norm_kernel(H), x_.data(), res, tile * 64, std::min(T, tile * 64 + 64), H, w.data(), b.data(),
                     eps_);
  const int rc = next ? ek_quantize_u8_t_tile(x_.data(), T, H, H, next->x_scale, next->x_zp, xq(), tp_, tile) : 0;
  lap(times, ln_slot, t);
  return rc;
}

// ---- the public API
Encoder::Encoder(const EncoderConfig& config, const TensorLookup& tensors, int threads, const std::string& attention)
    : impl_(new EncoderImpl(config, tensors, threads, attention)) {}
Encoder::~Encoder() = default;
int64_t Encoder::out_width() const { return impl_->head_ != Head::kNone ? impl_->labels_ : impl_->h_; }
bool Encoder::per_token() const { return impl_->pooling_ == Pooling::kNone; }
bool Encoder::fused_qkv() const { return !impl_->layers_.empty() && impl_->layers_[0].fused; }
std::vector<std::string> Encoder::kernels() const {
  std::set<std::string> names;
  for (const auto& L : impl_->layers_)
    for (const Linear* l : {&L.qkv, &L.q, &L.k, &L.v, &L.o, &L.ffn_in, &L.ffn_out}) {
      ek_packed_info info;
      if (l->w && ek_packed_get_info(l->w.get(), &info) == EK_OK && info.kernel) names.insert(info.kernel);
    }
  return {names.begin(), names.end()};
}
std::string Encoder::attention() const { return impl_->attn_bf16_ ? "bf16" : impl_->attn_int8_ ? "int8" : "fp32"; }
void Encoder::set_input(const int64_t* ids, const int64_t* mask, int64_t batch, int64_t seq) {
  impl_->set_input(ids, mask, nullptr, batch, seq);
}
void Encoder::set_input(const int64_t* ids, const int64_t* mask, const int64_t* token_types, int64_t batch,
                        int64_t seq) {
  impl_->set_input(ids, mask, token_types, batch, seq);
}
bool Encoder::image_input() const { return impl_->patches_ > 0; }
void Encoder::set_image_input(const float* patches, int64_t batch, int64_t patches_per_image, int64_t patch_dim) {
  impl_->set_image_input(patches, batch, patches_per_image, patch_dim);
}
void Encoder::forward(float* out, Profile* profile) {
  ek_set_num_threads(impl_->threads_);
  impl_->forward(out, profile);
}
bool Encoder::tile_fusion() const { return impl_->tile_fusion; }
void Encoder::set_tile_fusion(bool on) { impl_->tile_fusion = on; }
bool Encoder::merge_chunks() const { return impl_->merge_chunks; }
void Encoder::set_merge_chunks(bool on) { impl_->merge_chunks = on; }
int64_t Encoder::tile_fused_layers() const { return impl_->tile_fused_layers; }
}  // namespace engine
}  // namespace ek
