// AVX-512 math shared by the kernels and the engine (include only from files compiled with AVX-512 flags).
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace ek {
// e^x: range reduction x = n ln2 + r, degree-6 Taylor of e^r on |r| <= ln2/2 (relative error < 2e-7).
inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
  // e^r on |r| <= ln2/2: degree-6 Taylor, relative error < 2e-7.
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// x / s, rounded as vdivps rounds it, for quantisation: a multiply by inv = 1/s (rounded), then one Newton
// correction y + (x - y s) * inv with the residual exact in an FMA (Markstein's final step). Identical to vdivps on
// 77M random normal cases with |x / s| <= 1000, half of them within 4 ulp of a .5 rounding tie, at random scales
// (a scratch check; the kernel tests compare every path with the scalar division). The estimate is clamped to
// +-1e6 first, so huge quotients stay finite and non-NaN; any |x / s| > 1e6 ends up clamped to 0 or 255 by the
// caller exactly as the division's result would. vdivps on zmm issues once every ~16 cycles on Intel cores: the
// engine's activation quantisation spent most of its time there.
inline __m512 div512_q(__m512 x, __m512 s, __m512 inv) {
  const __m512 lim = _mm512_set1_ps(1e6f);
  const __m512 y = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(x, inv), _mm512_sub_ps(_mm512_setzero_ps(), lim)), lim);
  return _mm512_fmadd_ps(_mm512_fnmadd_ps(y, s, x), inv, y);
}

// Internal linkage (per-ISA units must not share weak copies; see tests/kernels/sanitize.sh).
namespace {
// (VNNI units only.) acc += u8 x s8 dot products of 4-byte groups. Inline asm instead of _mm512_dpbusd_epi32: with the
// intrinsic, GCC 12 copies every accumulator to a scratch register and to the stack around each
// vpdpbusd (48 extra moves per 24 vpdpbusd in the dense tile); tying acc to the instruction avoids that.
inline void dpbusd(__m512i& acc, __m512i u8, __m512i s8) { asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "v"(s8)); }

// dst[c * ldd + r] = src[r * lds + c] for r, c < 16, rows r >= nrows read as zeros: one 16 x 16 transpose in
// registers (unpack ps, unpack pd, then two rounds of 128-bit block shuffles).
inline void transpose16(const float* src, int64_t lds, int64_t nrows, float* dst, int64_t ldd) {
  __m512 r[16], t[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = i < nrows ? _mm512_loadu_ps(src + i * lds) : _mm512_setzero_ps();
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // r[4g + c], 128-bit block L: column 4L + c of rows 4g..4g+3
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) {
    const __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]),
                  c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
    r[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    const __m512 s0 = _mm512_shuffle_f32x4(r[c], r[4 + c], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512 s1 = _mm512_shuffle_f32x4(r[c], r[4 + c], _MM_SHUFFLE(3, 1, 3, 1));
    const __m512 s2 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512 s3 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], _MM_SHUFFLE(3, 1, 3, 1));
    _mm512_storeu_ps(dst + (c + 0) * ldd, _mm512_shuffle_f32x4(s0, s2, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_storeu_ps(dst + (c + 4) * ldd, _mm512_shuffle_f32x4(s1, s3, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_storeu_ps(dst + (c + 8) * ldd, _mm512_shuffle_f32x4(s0, s2, _MM_SHUFFLE(3, 1, 3, 1)));
    _mm512_storeu_ps(dst + (c + 12) * ldd, _mm512_shuffle_f32x4(s1, s3, _MM_SHUFFLE(3, 1, 3, 1)));
  }
}
}  // namespace
}  // namespace ek
