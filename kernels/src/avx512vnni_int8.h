// Shared by the AVX-512 VNNI int8 GEMM microkernels: the epilogue (dequantisation, GELU, requantisation to u8) and
// its per-output constants, written once so that every layout gives the same bits. Internal linkage on purpose, as
// in avx512_math.h: each unit keeps its own copy, compiled for its own flags.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "internal.h"

namespace ek {
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
}  // namespace
}  // namespace ek
