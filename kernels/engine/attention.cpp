#include "attention.h"

#include <chrono>
#include <cstring>
#include <vector>

#include "../src/attention_kernels.h"
#include "../src/config.h"
#include "edgekit/kernels.h"
#include "encoder.h"

namespace ek {
namespace engine {
namespace {
void attn_one(AttnCtx& c, int64_t b, int64_t hd) {
  const int64_t t0 = c.seq_start[b], n = c.seq_len[b], d = c.d;
  if (c.transposed) {
    run_attention(c.kernel, c.qkv + (c.qo + hd * d) * c.ld + t0, c.qkv + (c.ko + hd * d) * c.ld + t0, c.qkv + (c.vo + hd * d) * c.ld + t0,
                  c.ld, n, d, c.ctx + t0 * c.h + hd * d, c.h, c.first_only ? 1 : n);
    return;
  }
  run_attention(c.kernel, c.qkv + t0 * c.ld + c.qo + hd * d, c.qkv + t0 * c.ld + c.ko + hd * d,
                c.qkv + t0 * c.ld + c.vo + hd * d, c.ld, n, d, c.ctx + t0 * c.h + hd * d, c.h, c.first_only ? 1 : n);
}
}  // namespace

AttentionKernel attention_kernel(int64_t d, bool bf16, bool transposed, bool int8) {
  const IsaConfig& cfg = active_config();
  if (transposed) {
    const AttentionConfig& a = int8 ? cfg.attention_t_int8 : cfg.attention_t;
    return a.takes(d) ? a.kernel : AttentionKernel::kNone;
  }
  return select_attention(cfg, d, bf16).kernel;
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

void merged_attn_task(int64_t task, void* p) {
  const MergedAttn& m = *static_cast<MergedAttn*>(p);
  attn_task(task % m.heads, &m.chunks[task / m.heads]);
}

void attention_head(const float* q, const float* k, const float* v, int64_t n, int64_t d, int64_t nq, bool bf16,
                    bool transposed, bool int8, float* out) {
  if (bf16 && !ek::cpu_has_avx512_bf16()) bad("bf16 attention needs AVX512_BF16");
  const IsaConfig& cfg = active_config();
  if (int8 && (!transposed || cfg.attention_t_int8.kernel == AttentionKernel::kNone)) bad("int8 attention is the transposed path on AVX-512 VNNI only");
  const int64_t start = 0, len = n;
  std::memset(out, 0, n * d * 4);
  if (transposed) {  // the engine's transposed layout: [3d][padded n], 16 finite columns past the end
    if (bf16 || !cfg.attention_t.takes(d))
      bad("transposed attention is the AVX-512 path only (d a multiple of 16, <= 128)");
    const int64_t ldt = ek_padded_m(n) + 16;
    std::vector<float> qkv(3 * d * ldt + 64, 7.0f);  // padding columns: finite garbage
    for (int64_t i = 0; i < n; ++i)
      for (int64_t e = 0; e < d; ++e) {
        qkv[e * ldt + i] = q[i * d + e];
        qkv[(d + e) * ldt + i] = k[i * d + e];
        qkv[(2 * d + e) * ldt + i] = v[i * d + e];
      }
    AttnCtx ac{qkv.data(), ldt, 0, d, 2 * d, out, &start, &len, 1, 1, d, d, attention_kernel(d, false, true, int8),
               true, nq == 1};
    attn_task(0, &ac);
    return;
  }
  std::vector<float> qkv(n * 3 * d);
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(&qkv[i * 3 * d], q + i * d, d * 4);
    std::memcpy(&qkv[i * 3 * d + d], k + i * d, d * 4);
    std::memcpy(&qkv[i * 3 * d + 2 * d], v + i * d, d * 4);
  }
  AttnCtx ac{qkv.data(), 3 * d, 0, d, 2 * d, out, &start, &len, 1, 1, d, d, attention_kernel(d, bf16, false, false),
             false, nq == 1};
  attn_task(0, &ac);
}

bool cpu_has_avx512_bf16() { return ek::cpu_has_avx512_bf16(); }
}  // namespace engine
}  // namespace ek
