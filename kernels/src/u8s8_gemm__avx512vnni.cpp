// AVX-512 VNNI int8 GEMMs: dense (u8s8_gemm_6x64) and 4x1 block-sparse (u8s8_spmm_4x1_64).
//
// Dense: W packed as [n/16][k/4][16 outputs][4 k] so one zmm holds 16 outputs x 4 k; a row of X is
// broadcast 4 bytes at a time and vpdpbusd adds 16 x 4 products. Tile: 6 rows x 64 outputs = 24 zmm
// accumulators.
// Sparse 4x1: X is transposed once to XT[k][m] (64-token padded). For a block-row (4 outputs), its kept
// columns come in quads (c0..c3). Loading XT rows c0..c3 for 64 tokens and a 4x4 byte transpose
// (8 unpacks) gives 4 zmm whose 32-bit lanes hold (x[t,c0], x[t,c1], x[t,c2], x[t,c3]) for 16 tokens
// each; each feeds 4 vpdpbusd (one per output, weights broadcast). Lane order is a fixed permutation
// of the tokens that the epilogue undoes.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "avx512_math.h"
#include "internal.h"
#include "transpose_sse.h"

namespace ek {
namespace vnni {
namespace {

// GELU(y) = y * Phi(y), Phi the standard normal CDF, piecewise quartic: [-5.5, 5.5] in 32 segments of 11/32, and in
// each Phi ~ c0 + c1 f + ... + c4 f^4 for the position f in [0, 1) within the segment (least squares at 400
// Chebyshev nodes per segment, in float64; the coefficients below). Outside the range the end segments give
// Phi(-5.5) ~ 2e-8 and Phi(5.5) ~ 1 - 2e-8, so y * Phi is 0 or y to float resolution. In float32 over -40..40 the
// result is within 7.6e-7 of float64 GELU (a cubic, 2 instructions fewer, was within 2.5e-6, and the bbc model's
// logits then matched torch's to a minimum cosine of 0.9990 instead of 0.9997). 15 instructions for 16 values:
// the segment's coefficients are picked from the tables by two-register permutes (32 entries each), then Horner.
// It replaced an erf by Abramowitz & Stegun 7.1.28 of 20 instructions: GELU was about half of the FFN-in GEMM's
// time at 80% sparsity.
alignas(64) const float kGeluC[5][32] = {
    {
     1.900266078e-08f, 1.260291782e-07f, 7.454830779e-07f, 3.934588676e-06f, 1.853861249e-05f, 7.802568871e-05f,
     2.935631492e-04f, 9.882304585e-04f, 2.979771700e-03f, 8.058611304e-03f, 1.958004944e-02f, 4.282990098e-02f,
     8.456566930e-02f, 1.512117833e-01f, 2.458838820e-01f, 3.655172288e-01f, 5.000000596e-01f, 6.344828606e-01f,
     7.541161180e-01f, 8.487881422e-01f, 9.154342413e-01f, 9.571700096e-01f, 9.804199338e-01f, 9.919413924e-01f,
     9.970202446e-01f, 9.990118146e-01f, 9.997064471e-01f, 9.999219775e-01f, 9.999814630e-01f, 9.999960661e-01f,
     9.999992251e-01f, 9.999998808e-01f,
    },
    {
     3.638367829e-08f, 2.283636462e-07f, 1.271845349e-06f, 6.287231372e-06f, 2.759359813e-05f, 1.075391338e-04f,
     3.722226829e-04f, 1.144384965e-03f, 3.125487827e-03f, 7.583571132e-03f, 1.634804904e-02f, 3.131220862e-02f,
     5.328820273e-02f, 8.058007061e-02f, 1.082703248e-01f, 1.292645931e-01f, 1.371320337e-01f, 1.292666346e-01f,
     1.082729325e-01f, 8.058162034e-02f, 5.328815058e-02f, 3.131117672e-02f, 1.634697802e-02f, 7.582981139e-03f,
     3.125374438e-03f, 1.144508366e-03f, 3.723798145e-04f, 1.076463450e-04f, 2.764740566e-05f, 6.308814136e-06f,
     1.279016033e-06f, 2.303754201e-07f,
    },
    {
     3.989347164e-08f, 2.262623013e-07f, 1.141542498e-06f, 5.116843568e-06f, 2.034822865e-05f, 7.167357398e-05f,
     2.231900144e-04f, 6.130300462e-04f, 1.480943174e-03f, 3.134807805e-03f, 5.783863366e-03f, 9.228657931e-03f,
     1.257082913e-02f, 1.427304372e-02f, 1.280781440e-02f, 7.670902647e-03f, 3.528689922e-05f, -7.619364187e-03f,
     -1.279953308e-02f, -1.430318411e-02f, -1.261447743e-02f, -9.261950850e-03f, -5.797611084e-03f, -3.133333521e-03f,
     -1.473175944e-03f, -6.054919213e-04f, -2.182795288e-04f, -6.918323197e-05f, -1.931236875e-05f, -4.754434940e-06f,
     -1.033343892e-06f, -1.984425779e-07f,
    },
    {
     8.505368854e-09f, 6.007341113e-08f, 3.452887256e-07f, 1.662803129e-06f, 6.799621133e-06f, 2.375622716e-05f,
     7.103769894e-05f, 1.814988791e-04f, 3.940134484e-04f, 7.185885916e-04f, 1.076677581e-03f, 1.261413447e-03f,
     9.968541563e-04f, 1.291147055e-04f, -1.160355750e-03f, -2.336911624e-03f, -2.800547983e-03f, -2.298610983e-03f,
     -1.111455145e-03f, 1.580491080e-04f, 9.957995499e-04f, 1.242047292e-03f, 1.056613633e-03f, 7.075801259e-04f,
     3.919316805e-04f, 1.838302123e-04f, 7.398107846e-05f, 2.575704639e-05f, 7.800880667e-06f, 2.063306056e-06f,
     4.779809615e-07f, 9.719397553e-08f,
    },
    {
     2.217217343e-08f, 1.044768894e-07f, 4.295043823e-07f, 1.534519356e-06f, 4.739356427e-06f, 1.255621191e-05f,
     2.819812835e-05f, 5.260820399e-05f, 7.839166938e-05f, 8.450626774e-05f, 4.134242772e-05f, -6.640348147e-05f,
     -2.097012475e-04f, -3.101424663e-04f, -2.845638082e-04f, -1.159090752e-04f, 1.159090752e-04f, 2.845638082e-04f,
     3.101424663e-04f, 2.097012475e-04f, 6.640348147e-05f, -4.134242772e-05f, -8.450626774e-05f, -7.839166938e-05f,
     -5.260820399e-05f, -2.819812835e-05f, -1.255621191e-05f, -4.739356427e-06f, -1.534519356e-06f, -4.295043254e-07f,
     -1.044768752e-07f, -2.217212547e-08f,
    },
};
inline __m512 gelu512(__m512 y) {
  const __m512 t = _mm512_min_ps(
      _mm512_max_ps(_mm512_fmadd_ps(y, _mm512_set1_ps(32.0f / 11.0f), _mm512_set1_ps(16.0f)), _mm512_setzero_ps()),
      _mm512_set1_ps(31.999998f));
  const __m512i seg = _mm512_cvttps_epi32(t);
  const __m512 f = _mm512_reduce_ps(t, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);  // t - trunc(t)
  const auto c = [&](int d) {
    return _mm512_permutex2var_ps(_mm512_load_ps(kGeluC[d]), seg, _mm512_load_ps(kGeluC[d] + 16));
  };
  __m512 p = _mm512_fmadd_ps(c(4), f, c(3));
  p = _mm512_fmadd_ps(p, f, c(2));
  p = _mm512_fmadd_ps(p, f, c(1));
  p = _mm512_fmadd_ps(p, f, c(0));
  return _mm512_mul_ps(y, p);
}


// Requantise to u8: round(y / out_scale) + zp clamped to [0, 255], with the division as a multiply by the
// reciprocal and the zero point added before the rounding, in one FMA: fma(y, 1/out_scale, zp). (This may differ
// from the reference by 1 where y / out_scale is within an ulp of a .5 boundary, or exactly on one when zp is odd.)
// Without GELU the dequantisation folds in too: y = a * scale + bias, so y / out_scale + zp = a * qa + qb with
// qa = scale / out_scale and qb = fma(bias, 1/out_scale, zp) per output: one FMA from the corrected accumulator
// a (exact int32) to the rounded value, instead of an FMA, a multiply and an integer add. cvtps rounds to nearest
// even like nearbyint; the upper clamp before it keeps huge values from converting to INT_MIN (the lower clamp comes
// after: clamp_u8's max and vpmovusdb's saturation, or the transposed epilogue's saturating packs; same bits).
inline __m512i round_clamp_hi(__m512 q) { return _mm512_cvtps_epi32(_mm512_min_ps(q, _mm512_set1_ps(1024.f))); }
inline __m128i clamp_u8(__m512i q) { return _mm512_cvtusepi32_epi8(_mm512_max_epi32(q, _mm512_setzero_si512())); }

// Dequantise: (acc - zero-point correction) * scale + bias in one rounding (a fused multiply-add), the same
// in every epilogue so that every layout gives the same bits.
inline __m512 dequant512(__m512i acc, __m512i corr, __m512 scale, __m512 bias) {
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc, corr)), scale, bias);
}

// Per-output constants, broadcast: zero-point correction, scale and bias; for a u8 output without GELU, scale and
// bias are the folded qa and qb above (computed in this order in every layout).
struct RowConsts {
  __m512i corr;
  __m512 scale, bias;
};

// The RowConsts of block-row r's outputs 4r..4r+3 (those below n) for the 4x1 kernel, from one set of 4-lane
// operations stored so that each output's value is broadcast from memory (a load, no shuffle, no scalar division
// per output). It replaced a per-output scalar version; in-process A/B (2 threads, M 128, 6-16 interleaved rounds,
// engine layout, u8 out): the all-zero weight (the epilogue alone) 0.89-0.98x the time, 80% 0.96-0.99x; fp32
// outputs 0.93-1.03x. The zero-point correction is a constant 0: the 4x1 kernel's accumulators start at minus the
// correction (sparse_tile), so the subtraction folds away at compile time.
struct RowConsts4 {
  alignas(16) float scale[4];
  alignas(16) float bias[4];
  RowConsts at(int i) const { return {_mm512_setzero_si512(), _mm512_set1_ps(scale[i]), _mm512_set1_ps(bias[i])}; }
};
inline void row_consts4(const Gemm& g, int64_t r, RowConsts4& c) {
  const ek_epilogue* ep = g.ep;
  const int64_t j = 4 * r, left = g.w->info.n - j;
  const __mmask8 k = left >= 4 ? (__mmask8)0xf : (__mmask8)((1u << left) - 1);
  __m128 scale = _mm_mul_ps(_mm_set1_ps(ep->x_scale), _mm_maskz_loadu_ps(k, ep->w_scale + j));
  __m128 bias = ep->bias ? _mm_maskz_loadu_ps(k, ep->bias + j) : _mm_setzero_ps();
  if (ep->out_u8 && !ep->gelu) {
    const __m128 inv = _mm_set1_ps(1.0f / ep->out_scale);
    scale = _mm_mul_ps(scale, inv);
    bias = _mm_fmadd_ps(bias, inv, _mm_set1_ps((float)ep->out_zp));
  }
  _mm_store_ps(c.scale, scale);
  _mm_store_ps(c.bias, bias);
}

// The u8 value (before the lower clamp) of an output's accumulators under its RowConsts.
inline __m512i quant_u8(const Gemm& g, __m512i acc, const RowConsts& c, __m512 inv, __m512 zpf) {
  if (!g.ep->gelu) return round_clamp_hi(dequant512(acc, c.corr, c.scale, c.bias));  // the folded constants
  return round_clamp_hi(_mm512_fmadd_ps(gelu512(dequant512(acc, c.corr, c.scale, c.bias)), inv, zpf));
}

// ---------------------------------------------------------------- dense
// Every loop over r and b is fully unrolled so that acc stays in 24 registers (left as loops, GCC keeps acc
// in memory and stores each accumulator on every k step).
template <int MR, int NB>
void dense_tile(const Gemm& g, const uint8_t* x, int64_t ldx, int64_t m0, int64_t j16) {
  const ek_packed* w = g.w;
  const int64_t kq = w->kq;
  __m512i acc[MR][NB];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) acc[r][b] = _mm512_setzero_si512();
  const int8_t* wp = w->vnni.data() + j16 * kq * 64;
  const uint8_t* xr[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) xr[r] = x + (m0 + r) * ldx;
  for (int64_t q = 0; q < kq; ++q) {
    __m512i wv[NB];
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) wv[b] = _mm512_loadu_si512(wp + (b * kq + q) * 64);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      int32_t xs;
      std::memcpy(&xs, xr[r] + 4 * q, 4);
      const __m512i xv = _mm512_set1_epi32(xs);
#pragma GCC unroll 4
      for (int b = 0; b < NB; ++b) dpbusd(acc[r][b], xv, wv[b]);
    }
  }
  const int64_t n = w->info.n;
  if (!g.ep) {  // int32 accumulators, zero point applied
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) {
      const int64_t n0 = (j16 + b) * 16;
      const __mmask16 mask = n - n0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - n0)) - 1);
      const __m512i corr =
          _mm512_mullo_epi32(_mm512_maskz_loadu_epi32(mask, w->rowsum.data() + n0), _mm512_set1_epi32(g.x_zp));
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r)
        _mm512_mask_storeu_epi32(g.acc + (m0 + r) * n + n0, mask, _mm512_sub_epi32(acc[r][b], corr));
    }
    return;
  }
  // The per-output constants (zero-point correction, scale, bias) once per 16 outputs, not once per row; the
  // epilogue's fields read into locals once (stores through y may alias them as far as the compiler knows).
  const ek_epilogue* ep = g.ep;
  const bool gelu = ep->gelu, out_u8 = ep->out_u8;
  const __m512 inv = _mm512_set1_ps(out_u8 ? 1.0f / ep->out_scale : 0.f), zpf = _mm512_set1_ps((float)ep->out_zp);
  const __m512i zp = _mm512_set1_epi32(ep->x_zp);
  const __m512 xs = _mm512_set1_ps(ep->x_scale);
  const int64_t ldy = g.ldy;
#pragma GCC unroll 4
  for (int b = 0; b < NB; ++b) {
    const int64_t n0 = (j16 + b) * 16;
    const __mmask16 mask = n - n0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - n0)) - 1);
    RowConsts c{_mm512_mullo_epi32(_mm512_maskz_loadu_epi32(mask, w->rowsum.data() + n0), zp),
                _mm512_mul_ps(xs, _mm512_maskz_loadu_ps(mask, ep->w_scale + n0)),
                ep->bias ? _mm512_maskz_loadu_ps(mask, ep->bias + n0) : _mm512_setzero_ps()};
    if (out_u8 && !gelu) c = {c.corr, _mm512_mul_ps(c.scale, inv), _mm512_fmadd_ps(c.bias, inv, zpf)};  // row_consts4's fold
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      if (out_u8) {
        _mm_mask_storeu_epi8(static_cast<uint8_t*>(g.y) + (m0 + r) * ldy + n0, mask,
                             clamp_u8(quant_u8(g, acc[r][b], c, inv, zpf)));
        continue;
      }
      __m512 v = dequant512(acc[r][b], c.corr, c.scale, c.bias);
      if (gelu) v = gelu512(v);
      _mm512_mask_storeu_ps(static_cast<float*>(g.y) + (m0 + r) * ldy + n0, mask, v);
    }
  }
}

template <int NB>
void dense_rows(const Gemm& g, const uint8_t* x, int64_t ldx, int64_t m0, int64_t m1, int64_t j16) {
  int64_t m = m0;
  for (; m + 6 <= m1; m += 6) dense_tile<6, NB>(g, x, ldx, m, j16);
  switch (m1 - m) {
    case 5: dense_tile<5, NB>(g, x, ldx, m, j16); break;
    case 4: dense_tile<4, NB>(g, x, ldx, m, j16); break;
    case 3: dense_tile<3, NB>(g, x, ldx, m, j16); break;
    case 2: dense_tile<2, NB>(g, x, ldx, m, j16); break;
    case 1: dense_tile<1, NB>(g, x, ldx, m, j16); break;
    default: break;
  }
}

struct DenseCtx {
  const Gemm* g;
  const uint8_t* x;
  int64_t ldx, mtiles, mtile, npanels;
};

void dense_task(int64_t task, void* p) {
  const DenseCtx& c = *static_cast<DenseCtx*>(p);
  // panel-major: a thread's contiguous range of tasks (see parallel_for) covers whole panels, so each core reads
  // its share of the weights, not all of them
  const int64_t mt = task % c.mtiles, panel = task / c.mtiles;
  const int64_t m0 = mt * c.mtile, m1 = std::min(c.g->m, m0 + c.mtile);
  const int64_t j16 = panel * 4, left = c.g->w->n16 - j16;
  switch (left >= 4 ? 4 : left) {
    case 4: dense_rows<4>(*c.g, c.x, c.ldx, m0, m1, j16); break;
    case 3: dense_rows<3>(*c.g, c.x, c.ldx, m0, m1, j16); break;
    case 2: dense_rows<2>(*c.g, c.x, c.ldx, m0, m1, j16); break;
    default: dense_rows<1>(*c.g, c.x, c.ldx, m0, m1, j16); break;
  }
}

void dense(const Gemm& g) {
  const ek_packed* w = g.w;
  const int64_t k = w->info.k, kp = w->kq * 4;
  const uint8_t* x = g.x;
  int64_t ldx = g.ldx;
  if (kp != k) {  // K not a multiple of 4: copy X with zero padding so 4-byte reads stay in bounds
    uint8_t* padded = static_cast<uint8_t*>(scratch(0, g.m * kp));
    std::memset(padded, 0, g.m * kp);
    for (int64_t i = 0; i < g.m; ++i) std::memcpy(padded + i * kp, g.x + i * g.ldx, k);
    x = padded;
    ldx = kp;
  }
  DenseCtx c{&g, x, ldx, 0, 0, (w->n16 + 3) / 4};
  // Split rows into tiles of 48 (a multiple of 6) so both threads get work when N is small.
  c.mtile = std::max<int64_t>(6, std::min<int64_t>(48, (g.m + 5) / 6 * 6));
  c.mtiles = (g.m + c.mtile - 1) / c.mtile;
  parallel_for(c.mtiles * c.npanels, dense_task, &c);
}

// ---------------------------------------------------------------- sparse 4x1
constexpr int TM = (int)kTokenTile;  // tokens per tile

// ---------------------------------------------------------------- fused quantise + transpose
struct QuantTCtx {
  const float* x;
  int64_t m, k, ldx, mp, ldxt;
  float scale;
  int32_t zp;
  uint8_t* xt;
};

void quant_t_task(int64_t task, void* p) {  // the split is transpose_span's (see transpose_sse.h)
  const QuantTCtx& c = *static_cast<QuantTCtx*>(p);
  const __m512 vs = _mm512_set1_ps(c.scale), vinv = _mm512_set1_ps(1.0f / c.scale), vz = _mm512_set1_ps((float)c.zp),
               hi = _mm512_set1_ps(255.f);
  transpose_span(
      task, c.m, c.mp, c.k, c.xt, c.ldxt,
      [&](int64_t i, int64_t col) {
        __m512 v = _mm512_roundscale_ps(div512_q(_mm512_loadu_ps(c.x + i * c.ldx + col), vs, vinv),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, vz), _mm512_setzero_ps()), hi);
        return _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v));
      },
      [&](int64_t i, int64_t col) { return quant1(c.x[i * c.ldx + col], c.scale, c.zp); });
}

struct SparseCtx {
  const Gemm* g;
  const uint8_t* xt;
  int64_t mp, mtiles, rows_per_task;
  bool by_rows;  // tasks ordered block-row range major (see sparse_task), else token tile major
};

// Epilogue of a full block-row (outputs 4r..4r+3) into a transposed y, from the accumulators in registers:
// block L of acc[i][gq] holds tokens 16L + 4gq + 0..3, so for fp32 a 4x4 transpose of 128-bit blocks across
// gq = 0..3 gives tokens 16L..16L+15 in order (u8: saturating packs, below). Every per-row constant is read
// once, into locals (stores through y may alias anything the compiler cannot prove otherwise).
// nl = 1 when the GEMM has at most 16 tokens (the engine's last layer runs on the CLS rows only: one token per
// sequence): fp32 GELU then runs on block 0 only; the other blocks hold padding tokens, stored without it.
// Output 4r + i's 64 tokens go to y0 + i * ldy (elements of the output type): g.y's rows, or a staging buffer.
inline void tile_epilogue_t(const Gemm& g, const __m512i (&acc)[4][4], int64_t r, int nl, void* y0, int64_t ldy) {
  const ek_epilogue* ep = g.ep;
  const bool gelu = ep->gelu, out_u8 = ep->out_u8;
  if (out_u8) {
    const __m512 inv = _mm512_set1_ps(1.0f / ep->out_scale), zpf = _mm512_set1_ps((float)ep->out_zp);
    // u8: the accumulators are requantised in their lane order, then two rounds of saturating packs (per 128-bit
    // block L: gq 0, 1 and 2, 3 to 16-bit words, then those to bytes) leave tokens 16L .. 16L + 15 in order and
    // clamp to 0..255 on the way: 3 shuffles for 64 tokens of an output, where the reordering below and
    // vpmovusdb take 16 (with GELU on all 64 tokens also when nl = 1).
    RowConsts4 c4;
    row_consts4(g, r, c4);
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const RowConsts c = c4.at(i);
      __m512i q[4];
#pragma GCC unroll 4
      for (int gq = 0; gq < 4; ++gq) q[gq] = quant_u8(g, acc[i][gq], c, inv, zpf);
      const __m512i b = _mm512_packus_epi16(_mm512_packs_epi32(q[0], q[1]), _mm512_packs_epi32(q[2], q[3]));
      _mm512_storeu_si512(static_cast<uint8_t*>(y0) + i * ldy, b);
    }
    return;
  }
  RowConsts4 c4;
  row_consts4(g, r, c4);
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    const __m512i t0 = _mm512_shuffle_i32x4(acc[i][0], acc[i][1], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i t1 = _mm512_shuffle_i32x4(acc[i][2], acc[i][3], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i t2 = _mm512_shuffle_i32x4(acc[i][0], acc[i][1], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i t3 = _mm512_shuffle_i32x4(acc[i][2], acc[i][3], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i ordered[4] = {_mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(2, 0, 2, 0)),
                                _mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(3, 1, 3, 1)),
                                _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(2, 0, 2, 0)),
                                _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(3, 1, 3, 1))};
    const RowConsts c = c4.at(i);
    __m512 v[4];
#pragma GCC unroll 4
    for (int L = 0; L < 4; ++L) v[L] = dequant512(ordered[L], c.corr, c.scale, c.bias);
    if (gelu && nl == 1) {
      v[0] = gelu512(v[0]);
    } else if (gelu) {
#pragma GCC unroll 4
      for (int L = 0; L < 4; ++L) v[L] = gelu512(v[L]);
    }
    float* y = static_cast<float*>(y0) + i * ldy;
#pragma GCC unroll 4
    for (int L = 0; L < 4; ++L) _mm512_storeu_ps(y + 16 * L, v[L]);
  }
}

// Epilogue of a full block-row into a row-major fp32 y (4 consecutive outputs of a token are 16 contiguous
// bytes). The dequantisation runs on the accumulators as they are; then for each gq the four output rows
// acc[0..3][gq] are transposed in registers (unpack ps / pd within 128-bit blocks), which leaves 128-bit block
// L of vector d holding outputs 4r..4r+3 of token 16L + 4gq + d, stored straight to y. No buffer, no
// un-permutation of the tokens.
inline void tile_epilogue_rowf32(const Gemm& g, const __m512i (&acc)[4][4], int64_t r, int64_t m0, int64_t mend) {
  const int64_t ldy = g.ldy;
  const bool gelu = g.ep->gelu;
  __m512 v[4][4];
  RowConsts4 c4;
  row_consts4(g, r, c4);
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    const RowConsts c = c4.at(i);
#pragma GCC unroll 4
    for (int gq = 0; gq < 4; ++gq) {
      v[i][gq] = dequant512(acc[i][gq], c.corr, c.scale, c.bias);
      if (gelu) v[i][gq] = gelu512(v[i][gq]);
    }
  }
  float* y = static_cast<float*>(g.y) + m0 * ldy + 4 * r;
#pragma GCC unroll 4
  for (int gq = 0; gq < 4; ++gq) {
    const __m512 ab0 = _mm512_unpacklo_ps(v[0][gq], v[1][gq]), ab1 = _mm512_unpackhi_ps(v[0][gq], v[1][gq]);
    const __m512 cd0 = _mm512_unpacklo_ps(v[2][gq], v[3][gq]), cd1 = _mm512_unpackhi_ps(v[2][gq], v[3][gq]);
    const __m512 t[4] = {
        _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab0), _mm512_castps_pd(cd0))),
        _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab0), _mm512_castps_pd(cd0))),
        _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab1), _mm512_castps_pd(cd1))),
        _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab1), _mm512_castps_pd(cd1)))};
#pragma GCC unroll 4
    for (int d = 0; d < 4; ++d) {
      const int64_t t0 = 4 * gq + d;  // token of block 0; block L is token t0 + 16L
      if (mend == TM) {
        _mm_storeu_ps(y + t0 * ldy, _mm512_castps512_ps128(t[d]));
        _mm_storeu_ps(y + (t0 + 16) * ldy, _mm512_extractf32x4_ps(t[d], 1));
        _mm_storeu_ps(y + (t0 + 32) * ldy, _mm512_extractf32x4_ps(t[d], 2));
        _mm_storeu_ps(y + (t0 + 48) * ldy, _mm512_extractf32x4_ps(t[d], 3));
      } else {
        if (t0 < mend) _mm_storeu_ps(y + t0 * ldy, _mm512_castps512_ps128(t[d]));
        if (t0 + 16 < mend) _mm_storeu_ps(y + (t0 + 16) * ldy, _mm512_extractf32x4_ps(t[d], 1));
        if (t0 + 32 < mend) _mm_storeu_ps(y + (t0 + 32) * ldy, _mm512_extractf32x4_ps(t[d], 2));
        if (t0 + 48 < mend) _mm_storeu_ps(y + (t0 + 48) * ldy, _mm512_extractf32x4_ps(t[d], 3));
      }
    }
  }
}

// The quad step of the 4x1 kernel in asm blocks: one loads XT rows c0..c3 (64 tokens each) and interleaves them
// into u0..u3, 4 zmm of (x[t,c0], x[t,c1], x[t,c2], x[t,c3]) lanes (8 unpacks); two add 2 outputs x 4 token
// groups each (8 vpdpbusd, the output's 4 weights broadcast from memory). The accumulators are separate locals
// and asm operands: written with intrinsics on an array, GCC 12 kept 15 of the 16 on the stack through the loop
// (a load and a store around every vpdpbusd). (One block for all 16 would need 32 operands; GCC allows 30.)
#define EK_QUAD_OUT(i)                                                                                        \
  "vpbroadcastd " #i "*4(%[w]), %%zmm0\n\t"                                                                   \
  "vpdpbusd %%zmm0, %[u0], %[a" #i "0]\n\t"                                                                    \
  "vpdpbusd %%zmm0, %[u1], %[a" #i "1]\n\t"                                                                    \
  "vpdpbusd %%zmm0, %[u2], %[a" #i "2]\n\t"                                                                    \
  "vpdpbusd %%zmm0, %[u3], %[a" #i "3]\n\t"
#define EK_QUAD_OUTS(i, j)                                                                                    \
  asm(EK_QUAD_OUT(i) EK_QUAD_OUT(j)                                                                           \
      : [a##i##0] "+v"(a##i##0), [a##i##1] "+v"(a##i##1), [a##i##2] "+v"(a##i##2), [a##i##3] "+v"(a##i##3),     \
        [a##j##0] "+v"(a##j##0), [a##j##1] "+v"(a##j##1), [a##j##2] "+v"(a##j##2), [a##j##3] "+v"(a##j##3)      \
      : [u0] "v"(u0), [u1] "v"(u1), [u2] "v"(u2), [u3] "v"(u3), [w] "r"(wq + 4 * q)                          \
      : "xmm0", "memory")

// Row-major y through a staging buffer (sparse_task): 4 block-rows (16 outputs x 64 tokens) are written there in
// their transposed layout, then to y in 16 x 16 register transposes, a token's 16 outputs per store. Always for u8
// (else the block-row's bytes go out one token at a time from a buffer anyway); for fp32 when the tokens' rows
// would crowd L1 sets: stored straight from the registers (tile_epilogue_rowf32), the 64 tokens' 16-byte pieces
// land ldy * 4 bytes apart, and with N = 1536 that is 6 KB, so the 64 rows share 2 of the 64 sets (the sets repeat
// every 4 KB). M = 128, K = 384, N = 1536, 80%, 2 threads, old and new build in alternating processes (11 pairs,
// a noisy phase): fp32 rows ~0.9x the time (137-151 -> 135-137 us, medians), u8 rows 0.53-0.92x (146-172 ->
// 104-116 us); with N = 384 (8 rows a set) fp32 staging was slower (1.00-1.40x), so it is not used there.
inline bool stage_rows(const Gemm& g) {
  if (!g.ep || g.y_t) return false;
  if (g.ep->out_u8) return true;
  int64_t a = g.ldy * 4, b = 4096;  // rows per set = 64 * gcd(row stride, 4096) / 4096
  while (b) std::swap(a %= b, b);
  return 64 * a / 4096 > 8;
}

// stage (row-major y only): a [4][TM] buffer of the output type that takes the block-row transposed (see sparse_task).
// Output 4r + i's accumulators start at minus its zero-point correction, x_zp * rowsum, so that they end as the
// corrected sums (the same int32 values) and no epilogue subtracts it: 16 vpsubd fewer per block-row and tile.
void sparse_tile(const Gemm& g, const uint8_t* xt, int64_t mp, int64_t r, int64_t m0, void* stage = nullptr) {
  const ek_packed* w = g.w;
  const int32_t zp = g.ep ? g.ep->x_zp : g.x_zp;
  const int64_t left = w->info.n - 4 * r;
  const int32_t* rs = w->rowsum.data() + 4 * r;
  __m512i a00 = _mm512_set1_epi32(-zp * rs[0]), a01 = a00, a02 = a00, a03 = a00;
  __m512i a10 = _mm512_set1_epi32(left > 1 ? -zp * rs[1] : 0), a11 = a10, a12 = a10, a13 = a10;
  __m512i a20 = _mm512_set1_epi32(left > 2 ? -zp * rs[2] : 0), a21 = a20, a22 = a20, a23 = a20;
  __m512i a30 = _mm512_set1_epi32(left > 3 ? -zp * rs[3] : 0), a31 = a30, a32 = a30, a33 = a30;
  const int64_t q0 = w->row_ptr[r], q1 = w->row_ptr[r + 1];
  const int32_t* cols = w->quad_cols.data();
  const int32_t* wq = reinterpret_cast<const int32_t*>(w->quad_w.data());
  const uint8_t* x0 = xt + m0;
  // The quads' XT row offsets (column x stride, in bytes; below 2^31, checked at the entry) for this call's stride,
  // kChunk quads at a time, 16 per vpmulld, instead of 4 imul per quad on the loads' address path. Measured with
  // kernels/tools/proto_quad.sh (one thread): a first run gave 6.1 -> 5.1 ns per quad (K = 384, XT in L1) and
  // 9.1 -> 7.5 (K = 1536); four alternating pairs later gave 5.2-6.0 vs 4.9-6.8 and 6.8-9.2 vs 6.9-7.7, i.e.
  // within this VM's noise at K = 384 and at best a gain at K = 1536.
  constexpr int64_t kChunk = 64;
  alignas(64) int32_t offs[4 * kChunk];
  const __m512i stride = _mm512_set1_epi32((int32_t)mp);
  for (int64_t qc = q0; qc < q1; qc += kChunk) {
    const int64_t qe = std::min(q1, qc + kChunk), nc = 4 * (qe - qc);
    int64_t i = 0;
    for (; i + 16 <= nc; i += 16)
      _mm512_store_si512(offs + i, _mm512_mullo_epi32(_mm512_loadu_si512(cols + 4 * qc + i), stride));
    if (i < nc) {
      const __mmask16 mk = (__mmask16)((1u << (nc - i)) - 1);
      _mm512_store_si512(offs + i, _mm512_mullo_epi32(_mm512_maskz_loadu_epi32(mk, cols + 4 * qc + i), stride));
    }
    for (int64_t q = qc; q < qe; ++q) {
      const int32_t* c = offs + 4 * (q - qc);
      // u_gq holds tokens 4gq + 0..3 of each 16-token block (the lane permutation the epilogues undo)
      __m512i u0, u1, u2, u3;
      asm("vmovdqu64 (%[x0], %[o0]), %[u0]\n\t"
          "vmovdqu64 (%[x0], %[o1]), %[u1]\n\t"
          "vmovdqu64 (%[x0], %[o2]), %[u2]\n\t"
          "vmovdqu64 (%[x0], %[o3]), %[u3]\n\t"
          "vpunpcklbw %[u1], %[u0], %%zmm0\n\t"  // t0 = lo8(r0, r1)
          "vpunpckhbw %[u1], %[u0], %%zmm1\n\t"  // t1 = hi8(r0, r1)
          "vpunpcklbw %[u3], %[u2], %%zmm2\n\t"  // t2 = lo8(r2, r3)
          "vpunpckhbw %[u3], %[u2], %%zmm3\n\t"  // t3 = hi8(r2, r3)
          "vpunpcklwd %%zmm2, %%zmm0, %[u0]\n\t"  // u0 = lo16(t0, t2)
          "vpunpckhwd %%zmm2, %%zmm0, %[u1]\n\t"  // u1 = hi16(t0, t2)
          "vpunpcklwd %%zmm3, %%zmm1, %[u2]\n\t"  // u2 = lo16(t1, t3)
          "vpunpckhwd %%zmm3, %%zmm1, %[u3]"       // u3 = hi16(t1, t3)
          : [u0] "=&v"(u0), [u1] "=&v"(u1), [u2] "=&v"(u2), [u3] "=&v"(u3)
          : [x0] "r"(x0), [o0] "r"((int64_t)c[0]), [o1] "r"((int64_t)c[1]), [o2] "r"((int64_t)c[2]),
            [o3] "r"((int64_t)c[3])
          : "xmm0", "xmm1", "xmm2", "xmm3", "memory");
      EK_QUAD_OUTS(0, 1);
      EK_QUAD_OUTS(2, 3);
    }
  }
#undef EK_QUAD_OUTS
#undef EK_QUAD_OUT
  const __m512i acc[4][4] = {{a00, a01, a02, a03}, {a10, a11, a12, a13}, {a20, a21, a22, a23}, {a30, a31, a32, a33}};
  if (g.ep && 4 * r + 4 <= w->info.n) {  // full block-row: epilogue from the registers
    const int nl = g.m <= 16 ? 1 : 4;
    if (g.y_t) {
      const int64_t es = g.ep->out_u8 ? 1 : 4;
      tile_epilogue_t(g, acc, r, nl, static_cast<char*>(g.y) + (4 * r * g.ldy + m0) * es, g.ldy);
      return;
    }
    if (stage) {
      tile_epilogue_t(g, acc, r, nl, stage, TM);
      return;
    }
    if (!g.ep->out_u8) {
      tile_epilogue_rowf32(g, acc, r, m0, std::min<int64_t>(TM, g.m - m0));
      return;
    }
  }
  alignas(64) int32_t accbuf[4][4][16];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)
#pragma GCC unroll 4
    for (int gq = 0; gq < 4; ++gq) _mm512_store_si512(accbuf[i][gq], acc[i][gq]);
  // Undo the lane permutation with a 4x4 transpose of 128-bit blocks: block L of acc[i][gq] holds tokens
  // 16L + 4gq + 0..3, so gathering block L of gq = 0..3 gives tokens 16L..16L+15 in order. Then the
  // epilogue runs on 16 tokens at a time.
  alignas(64) int32_t tile[4][TM];
  alignas(64) float out[4][TM];
  const int64_t n = w->info.n, mend = std::min<int64_t>(TM, g.m - m0);
  const __m512 inv = _mm512_set1_ps(g.ep && g.ep->out_u8 ? 1.0f / g.ep->out_scale : 0.f),
               zpf = _mm512_set1_ps(g.ep ? (float)g.ep->out_zp : 0.f);
  RowConsts4 c4;
  if (g.ep) row_consts4(g, r, c4);
  for (int i = 0; i < 4; ++i) {
    const int64_t j = 4 * r + i;
    if (j >= n) break;
    const __m512i a0 = _mm512_load_si512(accbuf[i][0]), a1 = _mm512_load_si512(accbuf[i][1]),
                  a2 = _mm512_load_si512(accbuf[i][2]), a3 = _mm512_load_si512(accbuf[i][3]);
    const __m512i t0 = _mm512_shuffle_i32x4(a0, a1, _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i t1 = _mm512_shuffle_i32x4(a2, a3, _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i t2 = _mm512_shuffle_i32x4(a0, a1, _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i t3 = _mm512_shuffle_i32x4(a2, a3, _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i ordered[4] = {_mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(2, 0, 2, 0)),
                                _mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(3, 1, 3, 1)),
                                _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(2, 0, 2, 0)),
                                _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(3, 1, 3, 1))};
    for (int L = 0; L < 4; ++L) {
      const __m512i a = ordered[L];  // corrected already
      if (!g.ep) {
        _mm512_store_si512(tile[i] + 16 * L, a);
        continue;
      }
      const RowConsts c = c4.at(i);
      if (g.ep->out_u8) {
        const __m128i qb = clamp_u8(quant_u8(g, ordered[L], c, inv, zpf));
        if (g.y_t)  // 16 tokens of output j are contiguous in a transposed y
          _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint8_t*>(g.y) + j * g.ldy + m0 + 16 * L), qb);
        else
          _mm512_store_si512(tile[i] + 16 * L, _mm512_cvtepu8_epi32(qb));
        continue;
      }
      __m512 v = dequant512(a, c.corr, c.scale, c.bias);
      if (g.ep->gelu) v = gelu512(v);
      if (g.y_t) {
        _mm512_storeu_ps(static_cast<float*>(g.y) + j * g.ldy + m0 + 16 * L, v);
      } else {
        _mm512_store_ps(out[i] + 16 * L, v);
      }
    }
  }
  if (g.y_t) return;
  const int nout = (int)std::min<int64_t>(4, n - 4 * r);
  if (!g.ep) {
    for (int64_t t = 0; t < mend; ++t)
      for (int i = 0; i < nout; ++i) g.acc[(m0 + t) * n + 4 * r + i] = tile[i][t];
  } else if (!g.ep->out_u8) {
    float* y = static_cast<float*>(g.y);
    if (nout == 4) {
      for (int64_t t = 0; t < mend; t += 4) {  // 4x4 transposes: 4 outputs of a token are contiguous in y
        __m128 a = _mm_load_ps(out[0] + t), b = _mm_load_ps(out[1] + t), c = _mm_load_ps(out[2] + t),
               d = _mm_load_ps(out[3] + t);
        _MM_TRANSPOSE4_PS(a, b, c, d);
        const __m128 rows[4] = {a, b, c, d};
        for (int64_t u = 0; u < 4 && t + u < mend; ++u) _mm_storeu_ps(y + (m0 + t + u) * g.ldy + 4 * r, rows[u]);
      }
    } else {
      for (int64_t t = 0; t < mend; ++t)
        for (int i = 0; i < nout; ++i) y[(m0 + t) * g.ldy + 4 * r + i] = out[i][t];
    }
  } else {
    uint8_t* y = static_cast<uint8_t*>(g.y);
    if (nout == 4) {  // the 4 bytes of a token, in output order, as one 32-bit word per token
      alignas(64) uint32_t words[TM];
      for (int t = 0; t < TM; t += 16) {
        __m512i wv = _mm512_load_si512(tile[0] + t);
        wv = _mm512_or_si512(wv, _mm512_slli_epi32(_mm512_load_si512(tile[1] + t), 8));
        wv = _mm512_or_si512(wv, _mm512_slli_epi32(_mm512_load_si512(tile[2] + t), 16));
        wv = _mm512_or_si512(wv, _mm512_slli_epi32(_mm512_load_si512(tile[3] + t), 24));
        _mm512_store_si512(words + t, wv);
      }
      for (int64_t t = 0; t < mend; ++t) std::memcpy(y + (m0 + t) * g.ldy + 4 * r, &words[t], 4);
    } else {
      for (int64_t t = 0; t < mend; ++t)
        for (int i = 0; i < nout; ++i) y[(m0 + t) * g.ldy + 4 * r + i] = (uint8_t)tile[i][t];
    }
  }
}

void sparse_task(int64_t task, void* p) {
  const SparseCtx& c = *static_cast<SparseCtx*>(p);
  const int64_t nb = c.g->w->nb;
  // A core's contiguous range of tasks (see parallel_for) is whole token tiles (those whose XT it transposed, and
  // only those tiles' XT in its caches), or with by_rows whole ranges of block-rows over all tiles (see sparse()).
  const int64_t chunks = (nb + c.rows_per_task - 1) / c.rows_per_task;
  const int64_t mt = c.by_rows ? task % c.mtiles : task / chunks, ch = c.by_rows ? task / c.mtiles : task % chunks;
  const int64_t r0 = ch * c.rows_per_task, r1 = std::min(nb, r0 + c.rows_per_task);
  const Gemm& g = *c.g;
  const int64_t m0 = mt * TM, n = g.w->info.n;
  int64_t r = r0;
  if (stage_rows(g)) {
    alignas(64) float stage[16][TM];  // as bytes for u8 y
    uint8_t* stage8 = reinterpret_cast<uint8_t*>(stage);
    const bool u8 = g.ep->out_u8;
    const int64_t mend = std::min<int64_t>(TM, g.m - m0), ldy = g.ldy;
    for (; r + 4 <= r1 && 4 * r + 16 <= n; r += 4) {
      for (int i = 0; i < 4; ++i) sparse_tile(g, c.xt, c.mp, r + i, m0, u8 ? (void*)(stage8 + 4 * i * TM) : stage[4 * i]);
      int64_t t = 0;
      if (u8) {
        uint8_t* y = static_cast<uint8_t*>(g.y) + m0 * ldy + 4 * r;
        for (; t + 16 <= mend; t += 16) {
          __m128i a[16];
#pragma GCC unroll 16
          for (int o = 0; o < 16; ++o) a[o] = _mm_load_si128(reinterpret_cast<const __m128i*>(stage8 + o * TM + t));
          transpose16x16_regs(a, y + t * ldy, ldy);
        }
        for (; t < mend; ++t)
          for (int o = 0; o < 16; ++o) y[t * ldy + o] = stage8[o * TM + t];
      } else {
        float* y = static_cast<float*>(g.y) + m0 * ldy + 4 * r;
        for (; t + 16 <= mend; t += 16) transpose16(stage[0] + t, TM, 16, y + t * ldy, ldy);
        for (; t < mend; ++t)
          for (int o = 0; o < 16; ++o) y[t * ldy + o] = stage[o][t];
      }
    }
  }
  for (; r < r1; ++r) sparse_tile(g, c.xt, c.mp, r, m0);
}

// transpose_task with 512-bit registers for whole 64-token tiles of 16-column strips: lane L of register i holds
// token 16L + i's 16 bytes, so one 16 x 16 byte transpose per lane (the unpacks work within 128-bit lanes) leaves
// a column's 64 tokens in one register, stored as one cache line of XT. Tiles with padding tokens and column
// tails go through transpose_task. (The SSE transposes wrote each XT line in four 16-byte pieces, with the 16
// row addresses spilled to the stack: ~30% of a plain 4x1 call at K = 1,536, N = 384, 80%.)
struct ZmmUnpack {  // the unpacks of transpose16x16_stages on 512-bit registers (four 128-bit lanes side by side)
  static __m512i lo8(__m512i a, __m512i b) { return _mm512_unpacklo_epi8(a, b); }
  static __m512i hi8(__m512i a, __m512i b) { return _mm512_unpackhi_epi8(a, b); }
  static __m512i lo16(__m512i a, __m512i b) { return _mm512_unpacklo_epi16(a, b); }
  static __m512i hi16(__m512i a, __m512i b) { return _mm512_unpackhi_epi16(a, b); }
  static __m512i lo32(__m512i a, __m512i b) { return _mm512_unpacklo_epi32(a, b); }
  static __m512i hi32(__m512i a, __m512i b) { return _mm512_unpackhi_epi32(a, b); }
};

void transpose_task_512(int64_t task, void* p) {
  const TransposeCtx& c = *static_cast<TransposeCtx*>(p);
  const int64_t kchunks = (c.k + kTransposeCols - 1) / kTransposeCols;
  const int64_t m0 = task / kchunks * 64;
  const int64_t kbeg = task % kchunks * kTransposeCols, kend = std::min(c.k, kbeg + kTransposeCols);
  if (m0 + 64 > c.m || (kend - kbeg) % 16) {
    transpose_task(task, p);
    return;
  }
  const int64_t ldx = c.ldx;
  for (int64_t k0 = kbeg; k0 < kend; k0 += 16) {
    __m512i a[16], b[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {
      const uint8_t* r = c.x + (m0 + i) * ldx + k0;
      __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r)));
      v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(r + 16 * ldx)), 1);
      v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(r + 32 * ldx)), 2);
      a[i] = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(r + 48 * ldx)), 3);
    }
    transpose16x16_stages<ZmmUnpack>(a, b);
    uint8_t* y = c.xt + k0 * c.ldxt + m0;
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      _mm512_storeu_si512(y + (2 * i) * c.ldxt, _mm512_unpacklo_epi64(b[i], b[8 + i]));
      _mm512_storeu_si512(y + (2 * i + 1) * c.ldxt, _mm512_unpackhi_epi64(b[i], b[8 + i]));
    }
  }
}

void sparse(const Gemm& g) {
  const ek_packed* w = g.w;
  const int64_t k = w->info.k, mp = (g.m + TM - 1) / TM * TM;
  const uint8_t* xt = g.x;
  int64_t ldxt = g.ldx;  // a transposed X comes with its own stride (>= mp)
  if (!g.x_t) {  // XT is built on every call, in a buffer kept per calling thread
    ldxt = xt_stride(mp);
    uint8_t* xt_buf = static_cast<uint8_t*>(scratch(1, k * ldxt));
    TransposeCtx tc{g.x, g.ldx, g.m, k, mp, xt_buf, ldxt};
    parallel_for(tc.tasks(), transpose_task_512, &tc);
    xt = xt_buf;
  }
  const int64_t mtiles = mp / TM;
  const int nt = num_threads();
  // Enough tasks per thread to balance block-rows of uneven density.
  int64_t rows = std::max<int64_t>(1, w->nb * mtiles / (8 * nt));
  if (stage_rows(g)) rows = (rows + 3) / 4 * 4;  // whole groups of 4 block-rows for the staging
  // Split by token tiles, a transposed y shares 128-byte line pairs between cores when a core's first tile is odd
  // (M = 128 on 2 threads: core 0 writes the first 64 bytes of every output's row, core 1 the second), and the
  // pair goes back and forth (the adjacent-line prefetch): with all-zero weights (the epilogue alone) 2 threads
  // took 1.3-1.4x the time of 1. Then the split is by block-rows over all tiles, as long as every core's XT (all
  // tiles) stays small: in-process A/B (kernels/tools/ab_builds.py, M 128, 2 threads, 21 rounds) 0.90-0.98x the
  // time at K = 384 and 768, but 1.02-1.03x at K = 3,072 (each core then reads 384 KB of XT instead of 192 KB).
  const bool by_rows = g.y_t && mtiles < 2 * nt && k * mp <= (128 << 10);
  SparseCtx c{&g, xt, ldxt, mtiles, rows, by_rows};
  parallel_for(mtiles * ((w->nb + rows - 1) / rows), sparse_task, &c);
}
}  // namespace

void quantize_u8_t(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* xt,
                   int64_t ldxt) {
  QuantTCtx c{x, m, k, ldx, (m + TM - 1) / TM * TM, ldxt, scale, zp, xt};
  parallel_for(transpose_tasks(c.mp, k), quant_t_task, &c);
}

void quantize_u8_t_tile(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* xt,
                        int64_t ldxt, int64_t tile) {
  QuantTCtx c{x, m, k, ldx, (m + TM - 1) / TM * TM, ldxt, scale, zp, xt};
  const int64_t kchunks = transpose_tasks(TM, k);  // tasks of one tile
  for (int64_t kc = 0; kc < kchunks; ++kc) quant_t_task(tile * kchunks + kc, &c);
}

void gemm_u8s8_t_part(const Gemm& g, int64_t tile0, int64_t tile1, int64_t r0, int64_t r1) {
  for (int64_t t = tile0; t < tile1; ++t)
    for (int64_t r = r0; r < r1; ++r) sparse_tile(g, g.x, g.ldx, r, t * TM);
}

void gemm_u8s8(const Gemm& g) {
  if (g.w->info.pattern == EK_DENSE)
    dense(g);
  else
    sparse(g);
}

namespace {
struct PeakCtx {
  double seconds;
  double* macs;
};
void peak_task(int64_t i, void* p) {
  PeakCtx& c = *static_cast<PeakCtx*>(p);
  // 12 independent accumulators as separate locals, updated by one asm block: with an array, the intrinsic or
  // a loop of dpbusd(), GCC keeps them in memory between repetitions and the stores set the pace.
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0,
          a9 = a0, a10 = a0, a11 = a0;
  const __m512i x = _mm512_set1_epi32(0x01010101), y = _mm512_set1_epi32(0x01020304);
  int64_t iters = 0;
  const auto t0 = std::chrono::steady_clock::now();
  double el = 0;
  do {
    for (int rep = 0; rep < 1000; ++rep)
      asm("vpdpbusd %13, %12, %0\n\tvpdpbusd %13, %12, %1\n\tvpdpbusd %13, %12, %2\n\tvpdpbusd %13, %12, %3\n\t"
          "vpdpbusd %13, %12, %4\n\tvpdpbusd %13, %12, %5\n\tvpdpbusd %13, %12, %6\n\tvpdpbusd %13, %12, %7\n\t"
          "vpdpbusd %13, %12, %8\n\tvpdpbusd %13, %12, %9\n\tvpdpbusd %13, %12, %10\n\tvpdpbusd %13, %12, %11"
          : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6), "+v"(a7), "+v"(a8), "+v"(a9),
            "+v"(a10), "+v"(a11)
          : "v"(x), "v"(y));
    iters += 1000;
    el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } while (el < c.seconds);
  const __m512i sum = _mm512_add_epi32(
      _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                       _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7))),
      _mm512_add_epi32(_mm512_add_epi32(a8, a9), _mm512_add_epi32(a10, a11)));
  c.macs[i] = (_mm512_reduce_add_epi32(sum) == 42 ? 1.0 : 0.0) + (double)iters * 12 * 64 / el;
}
}  // namespace

double peak_macs(double seconds) {
  const int nt = std::min(num_threads(), kMaxPeakThreads);
  double macs[kMaxPeakThreads] = {};
  PeakCtx c{seconds, macs};
  parallel_for(nt, peak_task, &c);
  double total = 0;
  for (int i = 0; i < nt; ++i) total += macs[i];
  return total;
}
}  // namespace vnni
}  // namespace ek
