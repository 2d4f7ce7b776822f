// AVX2 int8 GEMMs for CPUs without VNNI: dense (6 rows x 16 outputs) and 4x1 block-sparse (4 outputs x
// 16 tokens), both exact.
//
// The usual AVX2 u8 x s8 instruction, vpmaddubsw, adds two products into a saturating int16, and
// 255 * 127 * 2 does not fit, so its results depend on the data (stock runtimes live with it or shrink the
// weights to 7 bits). Here both operands are widened to int16 and vpmaddwd adds each pair into an int32
// lane exactly (x0*w0 + x1*w1 <= 2 * 255 * 128), then vpaddd accumulates: 16 MACs in 2 uops.
//
// Dense: W packed [n/8][k/2][8 outputs][2 k] int16, one ymm = 8 outputs x 2 k. X is widened once per call
// to int16 rows; a row's (x[2q], x[2q+1]) pair is broadcast as one 32-bit word.
// Sparse 4x1: X transposed XT[k][m] (u8, 64-token padded, as for the VNNI path). A block-row's kept
// columns come in pairs (c0, c1): interleaving 16 tokens of XT rows c0 and c1 and widening gives, in
// each 32-bit lane, (x[t,c0], x[t,c1]) for 8 tokens in order; each such ymm feeds 4 vpmaddwd, one per
// output with that output's two weights broadcast. Accumulators stay in token order.
//
// 7-bit weights (every weight in [-64, 64], packed with w7 set): vpmaddubsw's pair sums stay within int16
// (2 * 255 * 64 = 32640), so it is exact, and vpmaddubsw + vpmaddwd(ones) + vpaddd gives 32 MACs in 3 uops
// (vpmaddwd + vpaddd above: 16 in 2). These kernels read the VNNI layouts: dense [n/16][k/4][16][4] bytes
// with 4 bytes of an X row broadcast (no widening), and 4x1 quads of kept columns whose 16-token XT rows
// are interleaved into (x[t,c0..c3]) 32-bit lanes. `ek_peak_macs` measures this 3-uop chain as the AVX2 peak
// (the fastest exact int8 sequence AVX2 has); the 8-bit kernels' own instruction peak is lower.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "internal.h"
#include "transpose_sse.h"

namespace ek {
namespace avx2 {
namespace {

constexpr int TM = (int)vnni::kTokenTile;  // tokens per task tile (the padding of transposed operands)

// GELU with the erf approximation of the VNNI path (Abramowitz & Stegun 7.1.28, |erf error| < 1e-6); the
// reciprocal is rcp_ps (12 bits) plus one Newton step.
inline __m256 gelu256(__m256 y) {
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  // clamped at 5.5 (1 - erf below float resolution): keeps p^16 finite and its reciprocal normal (subnormal
  // operands cost Intel cores a microcode assist each)
  const __m256 z = _mm256_min_ps(_mm256_andnot_ps(sign_mask, _mm256_mul_ps(y, _mm256_set1_ps(0.70710678118654752f))),
                                 _mm256_set1_ps(5.5f));
  __m256 p = _mm256_set1_ps(0.0000430638f);
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(0.0002765672f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(0.0001520143f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(0.0092705272f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(0.0422820123f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(0.0705230784f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(1.0f));
  p = _mm256_mul_ps(p, p);
  p = _mm256_mul_ps(p, p);
  p = _mm256_mul_ps(p, p);
  p = _mm256_mul_ps(p, p);  // ^16, at most ~3e13 after the clamp
  __m256 r = _mm256_rcp_ps(p);
  r = _mm256_mul_ps(r, _mm256_fnmadd_ps(p, r, _mm256_set1_ps(2.0f)));
  const __m256 neg = _mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_LT_OQ);
  const __m256 one_plus_erf = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), r), r, neg);
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), y), one_plus_erf);
}

// gelu256 on N vectors in lockstep (each step applied to all N before the next): the same arithmetic in the
// same order per lane, so the results equal gelu256's bit for bit, but N independent ~60-cycle dependency
// chains are laid out side by side for the core (one at a time left most of it waiting on latency).
template <int N>
inline void gelu256_n(__m256 (&y)[N]) {
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  __m256 p[N];
#pragma GCC unroll 8
  for (int i = 0; i < N; ++i) {
    const __m256 z = _mm256_min_ps(_mm256_andnot_ps(sign_mask, _mm256_mul_ps(y[i], _mm256_set1_ps(0.70710678118654752f))),
                                   _mm256_set1_ps(5.5f));
    p[i] = _mm256_fmadd_ps(_mm256_set1_ps(0.0000430638f), z, _mm256_set1_ps(0.0002765672f));
    p[i] = _mm256_fmadd_ps(p[i], z, _mm256_set1_ps(0.0001520143f));
    p[i] = _mm256_fmadd_ps(p[i], z, _mm256_set1_ps(0.0092705272f));
    p[i] = _mm256_fmadd_ps(p[i], z, _mm256_set1_ps(0.0422820123f));
    p[i] = _mm256_fmadd_ps(p[i], z, _mm256_set1_ps(0.0705230784f));
    p[i] = _mm256_fmadd_ps(p[i], z, _mm256_set1_ps(1.0f));
  }
#pragma GCC unroll 8
  for (int i = 0; i < N; ++i) {
    p[i] = _mm256_mul_ps(p[i], p[i]);
    p[i] = _mm256_mul_ps(p[i], p[i]);
    p[i] = _mm256_mul_ps(p[i], p[i]);
    p[i] = _mm256_mul_ps(p[i], p[i]);
  }
#pragma GCC unroll 8
  for (int i = 0; i < N; ++i) {
    __m256 r = _mm256_rcp_ps(p[i]);
    r = _mm256_mul_ps(r, _mm256_fnmadd_ps(p[i], r, _mm256_set1_ps(2.0f)));
    const __m256 neg = _mm256_cmp_ps(y[i], _mm256_setzero_ps(), _CMP_LT_OQ);
    const __m256 one_plus_erf = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), r), r, neg);
    y[i] = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), y[i]), one_plus_erf);
  }
}

// round(v * (1 / s)) + zp, clamped to 0..255 (as floats). A multiply, not a divide: vdivps costs several times
// a multiply and sat on every output; the two differ only where v / s is within an ulp of a .5 tie (one u8 step).
inline __m256 requant_f(__m256 v, const ek_epilogue* ep) {
  __m256 q = _mm256_round_ps(_mm256_mul_ps(v, _mm256_set1_ps(1.0f / ep->out_scale)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  q = _mm256_add_ps(q, _mm256_set1_ps((float)ep->out_zp));
  return _mm256_min_ps(_mm256_max_ps(q, _mm256_setzero_ps()), _mm256_set1_ps(255.f));
}

// 16 int32 (two ymm, values 0..255) -> 16 bytes in order.
inline __m128i pack16_u8(__m256i a, __m256i b) {
  const __m256i w = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), _MM_SHUFFLE(3, 1, 2, 0));
  return _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
}

// acc += vpmaddwd(a, b). Inline asm ties acc to one register: with the intrinsics GCC 12 copies every
// accumulator through a scratch register (and one to the stack) on each pass of the sparse loop.
inline void madd_acc(__m256i& acc, __m256i a, __m256i b) {
  __m256i t;
  asm("vpmaddwd %[b], %[a], %[t]\n\tvpaddd %[t], %[acc], %[acc]" : [acc] "+x"(acc), [t] "=&x"(t) : [a] "x"(a), [b] "x"(b));
}

// One column pair of the 4x1 kernel: acc[i][h] += vpmaddwd(x_h, broadcast(w[i])) for the 4 outputs i and the
// two 8-token halves h, in one asm block so that the 8 accumulators stay in fixed registers.
inline void pair_step(__m256i& a00, __m256i& a01, __m256i& a10, __m256i& a11, __m256i& a20, __m256i& a21, __m256i& a30,
                      __m256i& a31, __m256i lo, __m256i hi, const int32_t* w) {
  __m256i wv, t;
  asm("vpbroadcastd (%[w]), %[wv]\n\t"
      "vpmaddwd %[wv], %[lo], %[t]\n\t"
      "vpaddd %[t], %[a00], %[a00]\n\t"
      "vpmaddwd %[wv], %[hi], %[t]\n\t"
      "vpaddd %[t], %[a01], %[a01]\n\t"
      "vpbroadcastd 4(%[w]), %[wv]\n\t"
      "vpmaddwd %[wv], %[lo], %[t]\n\t"
      "vpaddd %[t], %[a10], %[a10]\n\t"
      "vpmaddwd %[wv], %[hi], %[t]\n\t"
      "vpaddd %[t], %[a11], %[a11]\n\t"
      "vpbroadcastd 8(%[w]), %[wv]\n\t"
      "vpmaddwd %[wv], %[lo], %[t]\n\t"
      "vpaddd %[t], %[a20], %[a20]\n\t"
      "vpmaddwd %[wv], %[hi], %[t]\n\t"
      "vpaddd %[t], %[a21], %[a21]\n\t"
      "vpbroadcastd 12(%[w]), %[wv]\n\t"
      "vpmaddwd %[wv], %[lo], %[t]\n\t"
      "vpaddd %[t], %[a30], %[a30]\n\t"
      "vpmaddwd %[wv], %[hi], %[t]\n\t"
      "vpaddd %[t], %[a31], %[a31]"
      : [a00] "+x"(a00), [a01] "+x"(a01), [a10] "+x"(a10), [a11] "+x"(a11), [a20] "+x"(a20), [a21] "+x"(a21),
        [a30] "+x"(a30), [a31] "+x"(a31),
        [wv] "=&x"(wv), [t] "=&x"(t)
      : [lo] "x"(lo), [hi] "x"(hi), [w] "r"(w), "m"(*reinterpret_cast<const int32_t(*)[4]>(w)));
}

inline __m256i lanes_below(int cnt) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(cnt), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }

// ---------------------------------------------------------------- dense
// Epilogue on outputs n0..n0+cnt-1 (cnt <= 8) of one row.
inline void epilogue8(const Gemm& g, __m256i acc, int64_t row, int64_t n0, int cnt) {
  const ek_packed* w = g.w;
  const __m256i mask = lanes_below(cnt);
  const __m256i rs = _mm256_maskload_epi32(w->rowsum.data() + n0, mask);
  acc = _mm256_sub_epi32(acc, _mm256_mullo_epi32(rs, _mm256_set1_epi32(g.ep ? g.ep->x_zp : g.x_zp)));
  if (!g.ep) {
    _mm256_maskstore_epi32(g.acc + row * w->info.n + n0, mask, acc);
    return;
  }
  const ek_epilogue* ep = g.ep;
  __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_mul_ps(_mm256_set1_ps(ep->x_scale),
                                                                  _mm256_maskload_ps(ep->w_scale + n0, mask)));
  if (ep->bias) v = _mm256_add_ps(v, _mm256_maskload_ps(ep->bias + n0, mask));
  if (ep->gelu) v = gelu256(v);
  if (ep->out_u8) {
    const __m256i qi = _mm256_cvtps_epi32(requant_f(v, ep));
    const __m128i p16 = _mm_packus_epi32(_mm256_castsi256_si128(qi), _mm256_extracti128_si256(qi, 1));
    uint8_t* y = static_cast<uint8_t*>(g.y) + row * g.ldy + n0;
    if (cnt == 8) {
      _mm_storel_epi64(reinterpret_cast<__m128i*>(y), _mm_packus_epi16(p16, p16));
    } else {
      alignas(16) uint8_t b[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(b), _mm_packus_epi16(p16, p16));
      std::memcpy(y, b, cnt);
    }
  } else {
    _mm256_maskstore_ps(static_cast<float*>(g.y) + row * g.ldy + n0, mask, v);
  }
}

// acc[r][b] += X16[row r] . W16[block b], 8 outputs per block; loops fully unrolled so acc stays in registers.
template <int MR, int NB>
void dense_tile(const Gemm& g, const int16_t* x16, int64_t ldx16, int64_t m0, int64_t j8) {
  const ek_packed* w = g.w;
  const int64_t kp = w->kp2;
  __m256i acc[MR][NB];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) acc[r][b] = _mm256_setzero_si256();
  const int16_t* wp = w->w16.data() + j8 * kp * 16;
  const int16_t* xr[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) xr[r] = x16 + (m0 + r) * ldx16;
  for (int64_t q = 0; q < kp; ++q) {
    __m256i wv[NB];
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) wv[b] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + (b * kp + q) * 16));
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      int32_t xs;
      std::memcpy(&xs, xr[r] + 2 * q, 4);
      const __m256i xv = _mm256_set1_epi32(xs);
#pragma GCC unroll 4
      for (int b = 0; b < NB; ++b) madd_acc(acc[r][b], xv, wv[b]);
    }
  }
  const int64_t n = w->info.n;
#pragma GCC unroll 4
  for (int b = 0; b < NB; ++b) {
    const int64_t n0 = (j8 + b) * 8;
    if (n0 >= n) break;
    const int cnt = (int)std::min<int64_t>(8, n - n0);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) epilogue8(g, acc[r][b], m0 + r, n0, cnt);
  }
}

// The main 6 x 16 tile: one asm block per k pair keeps the 12 accumulators in fixed registers; ymm12..15 hold
// the two weight vectors, the broadcast and the product (named, as operands would exceed asm's limit of 30).
void dense_tile62(const Gemm& g, const int16_t* x16, int64_t ldx16, int64_t m0, int64_t j8) {
  const ek_packed* w = g.w;
  const int64_t kp = w->kp2;
  __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00,
          a40 = a00, a41 = a00, a50 = a00, a51 = a00;
  const int16_t* w0 = w->w16.data() + j8 * kp * 16;
  const int16_t* w1 = w0 + kp * 16;
  const int16_t* x0 = x16 + m0 * ldx16;
  const int64_t ld = ldx16 * 2;  // bytes
  for (int64_t q = 0; q < kp; ++q) {
    const int16_t* xq = x0 + 2 * q;
    const int16_t* xq3 = xq + 3 * ldx16;
    asm("vmovdqu (%[w0]), %%ymm12\n\t"
        "vmovdqu (%[w1]), %%ymm13\n\t"
        "vpbroadcastd (%[x0]), %%ymm14\n\t"
        "vpmaddwd %%ymm12, %%ymm14, %%ymm15\n\t"
        "vpaddd %%ymm15, %[a00], %[a00]\n\t"
        "vpmaddwd %%ymm13, %%ymm14, %%ymm15\n\t"
        "vpaddd %%ymm15, %[a01], %[a01]\n\t"
        "vpbroadcastd (%[x0],%[ld]), %%ymm14\n\t"
        "vpmaddwd %%ymm12, %%ymm14, %%ymm15\n\t"
        "vpaddd %%ymm15, %[a10], %[a10]\n\t"
        "vpmaddwd %%ymm13, %%ymm14, %%ymm15\n\t"
        "vpaddd %%ymm15, %[a11], %[a11]\n\t"
        "vpbroadcastd (%[x0],%[ld],2), %%ymm14\n\t"
        "vpmaddwd %%ymm12, %%ymm14, %%ymm15\n\t"
        "vpaddd %%ymm15, %[a20], %[a20]\n\t"
        "vpmaddwd %%ymm13, %%ymm14, %%ymm15\n\t"
        "vpaddd %%ymm15, %[a21], %[a21]\n\t"
        "vpbroadcastd (%[x3]), %%ymm14\n\t"
        "vpmaddwd %%ymm12, %%ymm14, %%ymm15\n\t"
        "vpaddd %%ymm15, %[a30], %[a30]\n\t"
        "vpmaddwd %%ymm13, %%ymm14, %%ymm15\n\t"
        "vpaddd %%ymm15, %[a31], %[a31]\n\t"
        "vpbroadcastd (%[x3],%[ld]), %%ymm14\n\t"
        "vpmaddwd %%ymm12, %%ymm14, %%ymm15\n\t"
        "vpaddd %%ymm15, %[a40], %[a40]\n\t"
        "vpmaddwd %%ymm13, %%ymm14, %%ymm15\n\t"
        "vpaddd %%ymm15, %[a41], %[a41]\n\t"
        "vpbroadcastd (%[x3],%[ld],2), %%ymm14\n\t"
        "vpmaddwd %%ymm12, %%ymm14, %%ymm15\n\t"
        "vpaddd %%ymm15, %[a50], %[a50]\n\t"
        "vpmaddwd %%ymm13, %%ymm14, %%ymm15\n\t"
        "vpaddd %%ymm15, %[a51], %[a51]"
        : [a00] "+x"(a00), [a01] "+x"(a01), [a10] "+x"(a10), [a11] "+x"(a11), [a20] "+x"(a20), [a21] "+x"(a21),
          [a30] "+x"(a30), [a31] "+x"(a31), [a40] "+x"(a40), [a41] "+x"(a41), [a50] "+x"(a50), [a51] "+x"(a51)
        : [w0] "r"(w0 + q * 16), [w1] "r"(w1 + q * 16), [x0] "r"(xq), [x3] "r"(xq3), [ld] "r"(ld)
        : "xmm12", "xmm13", "xmm14", "xmm15", "memory");  // weights, broadcast, product; reads W and X rows
  }
  const int64_t n = w->info.n;
  const __m256i acc[6][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}, {a40, a41}, {a50, a51}};
  for (int b = 0; b < 2; ++b) {
    const int64_t n0 = (j8 + b) * 8;
    if (n0 >= n) break;
    const int cnt = (int)std::min<int64_t>(8, n - n0);
    for (int r = 0; r < 6; ++r) epilogue8(g, acc[r][b], m0 + r, n0, cnt);
  }
}

constexpr int kMR = 6, kNB = 2;

// The 0-5 rows a 6-row tile loop leaves: tile(row, std::integral_constant<int, R>) on at most 4 rows at a time
// (the intrinsic tiles hold up to 4 rows without spilling).
template <class Tile>
inline void edge_rows(int64_t m, int64_t m1, Tile tile) {
  switch (m1 - m) {
    case 5:
      tile(m, std::integral_constant<int, 4>{});
      tile(m + 4, std::integral_constant<int, 1>{});
      break;
    case 4: tile(m, std::integral_constant<int, 4>{}); break;
    case 3: tile(m, std::integral_constant<int, 3>{}); break;
    case 2: tile(m, std::integral_constant<int, 2>{}); break;
    case 1: tile(m, std::integral_constant<int, 1>{}); break;
    default: break;
  }
}

template <int NB>
void dense_rows(const Gemm& g, const int16_t* x16, int64_t ldx16, int64_t m0, int64_t m1, int64_t j8) {
  int64_t m = m0;
  for (; m + kMR <= m1; m += kMR) {
    if (NB == 2)  // the asm tile
      dense_tile62(g, x16, ldx16, m, j8);
    else
      dense_tile<kMR, NB>(g, x16, ldx16, m, j8);
  }
  edge_rows(m, m1, [&](int64_t row, auto rows) { dense_tile<decltype(rows)::value, NB>(g, x16, ldx16, row, j8); });
}

struct DenseCtx {
  const Gemm* g;
  const int16_t* x16;
  int64_t ldx16, mtile, npanels, panel_blocks, mtiles;
};

void dense_task(int64_t task, void* p) {
  const DenseCtx& c = *static_cast<DenseCtx*>(p);
  const int64_t mt = task % c.mtiles, panel = task / c.mtiles;  // panel-major, as the VNNI dense_task
  const int64_t m0 = mt * c.mtile, m1 = std::min(c.g->m, m0 + c.mtile);
  const int64_t jb0 = panel * c.panel_blocks, jb1 = std::min(c.g->w->n8, jb0 + c.panel_blocks);
  for (int64_t j8 = jb0; j8 < jb1; j8 += kNB) {
    if (jb1 - j8 >= kNB)
      dense_rows<kNB>(*c.g, c.x16, c.ldx16, m0, m1, j8);
    else
      dense_rows<1>(*c.g, c.x16, c.ldx16, m0, m1, j8);
  }
}

struct WidenCtx {
  const uint8_t* x;
  int64_t ldx, m, k, ldx16;
  int16_t* x16;
};

void widen_task(int64_t task, void* p) {  // 16 rows per task: u8 -> int16, zero padded to an even k
  const WidenCtx& c = *static_cast<WidenCtx*>(p);
  for (int64_t i = task * 16; i < std::min(c.m, task * 16 + 16); ++i) {
    const uint8_t* s = c.x + i * c.ldx;
    int16_t* d = c.x16 + i * c.ldx16;
    int64_t t = 0;
    for (; t + 16 <= c.k; t += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + t),
                          _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + t))));
    for (; t < c.k; ++t) d[t] = s[t];
    for (; t < c.ldx16; ++t) d[t] = 0;
  }
}

void dense(const Gemm& g) {
  const ek_packed* w = g.w;
  const int64_t ldx16 = 2 * w->kp2;
  int16_t* x16 = static_cast<int16_t*>(scratch(0, g.m * ldx16 * sizeof(int16_t)));
  WidenCtx wc{g.x, g.ldx, g.m, w->info.k, ldx16, x16};
  parallel_for((g.m + 15) / 16, widen_task, &wc);
  // Panels of 64 outputs (a 64 x k int16 weight panel stays in L2 while a row tile streams past it);
  // row tiles of 48 (a multiple of kMR) so both threads get work when N is small.
  DenseCtx c{&g, x16, ldx16, 0, 0, 8};
  c.npanels = (w->n8 + c.panel_blocks - 1) / c.panel_blocks;
  c.mtile = std::max<int64_t>(kMR, std::min<int64_t>(48, (g.m + kMR - 1) / kMR * kMR));
  c.mtiles = (g.m + c.mtile - 1) / c.mtile;
  parallel_for(c.mtiles * c.npanels, dense_task, &c);
}

// ---------------------------------------------------------------- sparse 4x1
constexpr int TS = 16;  // tokens per register tile

// Epilogue of one block-row on tokens m0..m0+15: acc[i][h] holds tokens m0 + 8h .. m0 + 8h + 7 of output 4r+i.
void sparse_epilogue(const Gemm& g, const __m256i (&acc)[4][2], int64_t r, int64_t m0) {
  const ek_packed* w = g.w;
  const int64_t n = w->info.n, mend = std::min<int64_t>(TS, g.m - m0);
  const int32_t zp = g.ep ? g.ep->x_zp : g.x_zp;
  const int nout = (int)std::min<int64_t>(4, n - 4 * r);
  alignas(32) int32_t tile[4][TS];
  alignas(32) float out[4][TS];
  for (int i = 0; i < nout; ++i) {
    const int64_t j = 4 * r + i;
    const __m256i corr = _mm256_set1_epi32(zp * w->rowsum[j]);
    const __m256i a[2] = {_mm256_sub_epi32(acc[i][0], corr), _mm256_sub_epi32(acc[i][1], corr)};
    if (!g.ep) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(tile[i]), a[0]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(tile[i] + 8), a[1]);
      continue;
    }
    const ek_epilogue* ep = g.ep;
    const __m256 s = _mm256_set1_ps(ep->x_scale * ep->w_scale[j]);
    __m256 v[2];
    for (int h = 0; h < 2; ++h) {
      v[h] = _mm256_mul_ps(_mm256_cvtepi32_ps(a[h]), s);
      if (ep->bias) v[h] = _mm256_add_ps(v[h], _mm256_set1_ps(ep->bias[j]));
      if (ep->gelu) v[h] = gelu256(v[h]);
    }
    if (ep->out_u8) {
      const __m256i q0 = _mm256_cvtps_epi32(requant_f(v[0], ep)), q1 = _mm256_cvtps_epi32(requant_f(v[1], ep));
      if (g.y_t) {  // 16 tokens of output j are contiguous in a transposed y
        _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint8_t*>(g.y) + j * g.ldy + m0), pack16_u8(q0, q1));
      } else {
        _mm256_store_si256(reinterpret_cast<__m256i*>(tile[i]), q0);
        _mm256_store_si256(reinterpret_cast<__m256i*>(tile[i] + 8), q1);
      }
    } else if (g.y_t) {
      float* y = static_cast<float*>(g.y) + j * g.ldy + m0;
      _mm256_storeu_ps(y, v[0]);
      _mm256_storeu_ps(y + 8, v[1]);
    } else {
      _mm256_store_ps(out[i], v[0]);
      _mm256_store_ps(out[i] + 8, v[1]);
    }
  }
  if (g.y_t && g.ep) return;
  if (!g.ep) {
    for (int64_t t = 0; t < mend; ++t)
      for (int i = 0; i < nout; ++i) g.acc[(m0 + t) * n + 4 * r + i] = tile[i][t];
  } else if (!g.ep->out_u8) {
    float* y = static_cast<float*>(g.y);
    if (nout == 4) {
      for (int64_t t = 0; t < mend; t += 4) {  // 4x4 transposes: the 4 outputs of a token are contiguous in y
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
      alignas(32) uint32_t words[TS];
      for (int t = 0; t < TS; t += 8) {
        __m256i wv = _mm256_load_si256(reinterpret_cast<const __m256i*>(tile[0] + t));
        wv = _mm256_or_si256(wv, _mm256_slli_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(tile[1] + t)), 8));
        wv = _mm256_or_si256(wv, _mm256_slli_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(tile[2] + t)), 16));
        wv = _mm256_or_si256(wv, _mm256_slli_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(tile[3] + t)), 24));
        _mm256_store_si256(reinterpret_cast<__m256i*>(words + t), wv);
      }
      for (int64_t t = 0; t < mend; ++t) std::memcpy(y + (m0 + t) * g.ldy + 4 * r, &words[t], 4);
    } else {
      for (int64_t t = 0; t < mend; ++t)
        for (int i = 0; i < nout; ++i) y[(m0 + t) * g.ldy + 4 * r + i] = (uint8_t)tile[i][t];
    }
  }
}

void sparse_tile(const Gemm& g, const uint8_t* xt, int64_t ldxt, int64_t r, int64_t m0) {
  const ek_packed* w = g.w;
  // Accumulators as plain locals (an array here would be stored to memory on every pass of the loop).
  __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
  const int64_t p0 = w->pair_ptr[r], p1 = w->pair_ptr[r + 1];
  const int32_t* cols = w->pair_cols.data();
  const int32_t* wp = w->pair_w.data();
  int64_t p = p0;
  for (; p + 2 <= p1; p += 2) {  // two pairs per pass: their loads are independent, which the core can overlap
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xt + (int64_t)cols[2 * p] * ldxt + m0));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xt + (int64_t)cols[2 * p + 1] * ldxt + m0));
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xt + (int64_t)cols[2 * p + 2] * ldxt + m0));
    const __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xt + (int64_t)cols[2 * p + 3] * ldxt + m0));
    const __m256i lo = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(a, b));
    const __m256i hi = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(a, b));
    const __m256i lo2 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(c, d));
    const __m256i hi2 = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(c, d));
    pair_step(a00, a01, a10, a11, a20, a21, a30, a31, lo, hi, wp + 4 * p);
    pair_step(a00, a01, a10, a11, a20, a21, a30, a31, lo2, hi2, wp + 4 * p + 4);
  }
  for (; p < p1; ++p) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xt + (int64_t)cols[2 * p] * ldxt + m0));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xt + (int64_t)cols[2 * p + 1] * ldxt + m0));
    // (x[t,c0], x[t,c1]) as two int16 per 32-bit lane: tokens 0..7 and 8..15.
    const __m256i lo = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(a, b));
    const __m256i hi = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(a, b));
    pair_step(a00, a01, a10, a11, a20, a21, a30, a31, lo, hi, wp + 4 * p);
  }
  const __m256i acc[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
  sparse_epilogue(g, acc, r, m0);
}

void sparse7_tile(const Gemm& g, const uint8_t* xt, int64_t ldxt, int64_t r, int64_t m0);  // 7-bit weights, below

struct SparseCtx {
  const Gemm* g;
  const uint8_t* xt;
  int64_t ldxt, rows_per_task, chunks;
};

void sparse_task(int64_t task, void* p) {
  const SparseCtx& c = *static_cast<SparseCtx*>(p);
  const int64_t nb = c.g->w->nb;
  const int64_t mt = task / c.chunks, ch = task % c.chunks;
  const int64_t r0 = ch * c.rows_per_task, r1 = std::min(nb, r0 + c.rows_per_task);
  // Token sub-tiles wholly past m are skipped: a transposed y keeps whatever its padding held.
  const int64_t mend = std::min<int64_t>((mt + 1) * TM, c.g->m);
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t m0 = mt * TM; m0 < mend; m0 += TS) {
      if (c.g->w->w7)
        sparse7_tile(*c.g, c.xt, c.ldxt, r, m0);
      else
        sparse_tile(*c.g, c.xt, c.ldxt, r, m0);
    }
}

void sparse(const Gemm& g) {
  const ek_packed* w = g.w;
  const int64_t k = w->info.k, mp = (g.m + TM - 1) / TM * TM;
  const uint8_t* xt = g.x;
  int64_t ldxt = g.ldx;
  if (!g.x_t) {
    ldxt = xt_stride(mp);
    uint8_t* xt_buf = static_cast<uint8_t*>(scratch(1, k * ldxt));
    TransposeCtx tc{g.x, g.ldx, g.m, k, mp, xt_buf, ldxt};
    parallel_for(tc.tasks(), transpose_task, &tc);
    xt = xt_buf;
  }
  const int64_t mtiles = mp / TM;
  const int nt = num_threads();
  const int64_t rows = std::max<int64_t>(1, w->nb * mtiles / (8 * nt));
  SparseCtx c{&g, xt, ldxt, rows, (w->nb + rows - 1) / rows};
  parallel_for(mtiles * c.chunks, sparse_task, &c);
}

// ---------------------------------------------------------------- 7-bit weights: vpmaddubsw
alignas(32) const int16_t kOnes16[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

inline __m256i ones16() { return _mm256_load_si256(reinterpret_cast<const __m256i*>(kOnes16)); }

// acc += vpmaddwd(vpmaddubsw(xu8, ws8), ones): per 32-bit lane, the sum of 4 u8 x s7 products, exact.
inline void maddubs_acc(__m256i& acc, __m256i xu8, __m256i ws8, __m256i ones) {
  __m256i t;
  asm("vpmaddubsw %[w], %[x], %[t]\n\tvpmaddwd %[o], %[t], %[t]\n\tvpaddd %[t], %[acc], %[acc]"
      : [acc] "+x"(acc), [t] "=&x"(t) : [x] "x"(xu8), [w] "x"(ws8), [o] "x"(ones));
}

// Dense tile of MR rows x 16 outputs (one 16-output block j16 of the VNNI layout) over k quads.
template <int MR>
void dense7_tile(const Gemm& g, const uint8_t* x, int64_t ldx, int64_t m0, int64_t j16) {
  const ek_packed* w = g.w;
  const int64_t kq = w->kq;
  const __m256i ones = ones16();
  __m256i acc[MR][2];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  const int8_t* wp = w->vnni.data() + j16 * kq * 64;
  for (int64_t q = 0; q < kq; ++q) {
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + q * 64));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + q * 64 + 32));
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      int32_t xs;
      std::memcpy(&xs, x + (m0 + r) * ldx + 4 * q, 4);
      const __m256i xv = _mm256_set1_epi32(xs);
      maddubs_acc(acc[r][0], xv, w0, ones);
      maddubs_acc(acc[r][1], xv, w1, ones);
    }
  }
  const int64_t n = w->info.n;
  for (int b = 0; b < 2; ++b) {
    const int64_t n0 = j16 * 16 + b * 8;
    if (n0 >= n) break;
    const int cnt = (int)std::min<int64_t>(8, n - n0);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) epilogue8(g, acc[r][b], m0 + r, n0, cnt);
  }
}

// The main 6 x 16 tile in asm: 12 accumulators pinned; ymm12/13 weights, ymm14 the broadcast X quad,
// ymm15 the product; the int16 ones come from memory (no register left).
void dense7_tile6(const Gemm& g, const uint8_t* x, int64_t ldx, int64_t m0, int64_t j16) {
  const ek_packed* w = g.w;
  const int64_t kq = w->kq;
  __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00,
          a40 = a00, a41 = a00, a50 = a00, a51 = a00;
  const int8_t* wp = w->vnni.data() + j16 * kq * 64;
  const uint8_t* x0 = x + m0 * ldx;
  const uint8_t* x3 = x0 + 3 * ldx;
  for (int64_t q = 0; q < kq; ++q) {
#define EK_ROW7(ADDR, A0, A1)                      \
  "vpbroadcastd " ADDR ", %%ymm14\n\t"             \
  "vpmaddubsw %%ymm12, %%ymm14, %%ymm15\n\t"       \
  "vpmaddwd %[ones], %%ymm15, %%ymm15\n\t"         \
  "vpaddd %%ymm15, %[" A0 "], %[" A0 "]\n\t"       \
  "vpmaddubsw %%ymm13, %%ymm14, %%ymm15\n\t"       \
  "vpmaddwd %[ones], %%ymm15, %%ymm15\n\t"         \
  "vpaddd %%ymm15, %[" A1 "], %[" A1 "]\n\t"
    asm("vmovdqu (%[w]), %%ymm12\n\t"
        "vmovdqu 32(%[w]), %%ymm13\n\t"
        EK_ROW7("(%[x0])", "a00", "a01")
        EK_ROW7("(%[x0],%[ld])", "a10", "a11")
        EK_ROW7("(%[x0],%[ld],2)", "a20", "a21")
        EK_ROW7("(%[x3])", "a30", "a31")
        EK_ROW7("(%[x3],%[ld])", "a40", "a41")
        EK_ROW7("(%[x3],%[ld],2)", "a50", "a51")
        : [a00] "+x"(a00), [a01] "+x"(a01), [a10] "+x"(a10), [a11] "+x"(a11), [a20] "+x"(a20), [a21] "+x"(a21),
          [a30] "+x"(a30), [a31] "+x"(a31), [a40] "+x"(a40), [a41] "+x"(a41), [a50] "+x"(a50), [a51] "+x"(a51)
        : [w] "r"(wp + q * 64), [x0] "r"(x0 + 4 * q), [x3] "r"(x3 + 4 * q), [ld] "r"(ldx),
          [ones] "m"(*reinterpret_cast<const __m256i*>(kOnes16))
        : "xmm12", "xmm13", "xmm14", "xmm15", "memory");
#undef EK_ROW7
  }
  const int64_t n = w->info.n;
  const __m256i acc[6][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}, {a40, a41}, {a50, a51}};
  for (int b = 0; b < 2; ++b) {
    const int64_t n0 = j16 * 16 + b * 8;
    if (n0 >= n) break;
    const int cnt = (int)std::min<int64_t>(8, n - n0);
    for (int r = 0; r < 6; ++r) epilogue8(g, acc[r][b], m0 + r, n0, cnt);
  }
}

struct Dense7Ctx {
  const Gemm* g;
  const uint8_t* x;
  int64_t ldx, mtile, npanels, panel_blocks, mtiles;
};

void dense7_task(int64_t task, void* p) {
  const Dense7Ctx& c = *static_cast<Dense7Ctx*>(p);
  const int64_t mt = task % c.mtiles, panel = task / c.mtiles;  // panel-major, as the VNNI dense_task
  const int64_t m0 = mt * c.mtile, m1 = std::min(c.g->m, m0 + c.mtile);
  const int64_t jb0 = panel * c.panel_blocks, jb1 = std::min(c.g->w->n16, jb0 + c.panel_blocks);
  for (int64_t j16 = jb0; j16 < jb1; ++j16) {
    int64_t m = m0;
    for (; m + 6 <= m1; m += 6) dense7_tile6(*c.g, c.x, c.ldx, m, j16);
    edge_rows(m, m1, [&](int64_t row, auto rows) { dense7_tile<decltype(rows)::value>(*c.g, c.x, c.ldx, row, j16); });
  }
}

struct PadCtx {
  const uint8_t* x;
  int64_t ldx, m, k, ldp;
  uint8_t* xp;
};

void pad_task(int64_t task, void* p) {  // 64 rows per task, zero padded to a multiple of 4 columns
  const PadCtx& c = *static_cast<PadCtx*>(p);
  for (int64_t i = task * 64; i < std::min(c.m, task * 64 + 64); ++i) {
    std::memcpy(c.xp + i * c.ldp, c.x + i * c.ldx, c.k);
    std::memset(c.xp + i * c.ldp + c.k, 0, c.ldp - c.k);
  }
}

void dense7(const Gemm& g) {
  const ek_packed* w = g.w;
  const int64_t k = w->info.k;
  const uint8_t* x = g.x;
  int64_t ldx = g.ldx;
  if (k % 4) {  // the last quad of a row would read past k: copy X with zero padding
    const int64_t ldp = 4 * w->kq;
    uint8_t* xp = static_cast<uint8_t*>(scratch(0, g.m * ldp));
    PadCtx pc{g.x, g.ldx, g.m, k, ldp, xp};
    parallel_for((g.m + 63) / 64, pad_task, &pc);
    x = xp;
    ldx = ldp;
  }
  Dense7Ctx c{&g, x, ldx, 0, 0, 4};  // panels of 64 outputs, row tiles of up to 48 (as the 8-bit kernel)
  c.npanels = (w->n16 + c.panel_blocks - 1) / c.panel_blocks;
  c.mtile = std::max<int64_t>(6, std::min<int64_t>(48, (g.m + 5) / 6 * 6));
  c.mtiles = (g.m + c.mtile - 1) / c.mtile;
  parallel_for(c.mtiles * c.npanels, dense7_task, &c);
}

// 16 tokens of XT rows c0..c3 as two ymm of (x[t,c0], x[t,c1], x[t,c2], x[t,c3]) bytes per 32-bit lane:
// x0 holds tokens 0-3 | 8-11, x1 tokens 4-7 | 12-15 (in-lane shuffles only; the epilogue restores order).
inline void quad_x(const uint8_t* a, const uint8_t* b, const uint8_t* c, const uint8_t* d, __m256i& x0, __m256i& x1) {
  const __m256i va = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a)));
  const __m256i vb = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b)));
  const __m256i vc = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)));
  const __m256i vd = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(d)));
  const __m256i ab = _mm256_blend_epi32(_mm256_unpacklo_epi8(va, vb), _mm256_unpackhi_epi8(va, vb), 0xF0);
  const __m256i cd = _mm256_blend_epi32(_mm256_unpacklo_epi8(vc, vd), _mm256_unpackhi_epi8(vc, vd), 0xF0);
  x0 = _mm256_unpacklo_epi16(ab, cd);
  x1 = _mm256_unpackhi_epi16(ab, cd);
}

// One quad of the 4x1 kernel: acc[i][h] += vpmaddwd(vpmaddubsw(x_h, broadcast(w[i])), ones) for the 4 outputs,
// in one asm block so that the 8 accumulators stay in fixed registers.
inline void quad_step(__m256i& a00, __m256i& a01, __m256i& a10, __m256i& a11, __m256i& a20, __m256i& a21, __m256i& a30,
                      __m256i& a31, __m256i x0, __m256i x1, __m256i ones, const int8_t* w) {
  __m256i wv, t0, t1;
#define EK_OUT7(OFF, A0, A1)                     \
  "vpbroadcastd " OFF "(%[w]), %[wv]\n\t"        \
  "vpmaddubsw %[wv], %[x0], %[t0]\n\t"           \
  "vpmaddubsw %[wv], %[x1], %[t1]\n\t"           \
  "vpmaddwd %[o], %[t0], %[t0]\n\t"              \
  "vpmaddwd %[o], %[t1], %[t1]\n\t"              \
  "vpaddd %[t0], %[" A0 "], %[" A0 "]\n\t"       \
  "vpaddd %[t1], %[" A1 "], %[" A1 "]\n\t"
  asm(EK_OUT7("0", "a00", "a01") EK_OUT7("4", "a10", "a11") EK_OUT7("8", "a20", "a21") EK_OUT7("12", "a30", "a31")
      : [a00] "+x"(a00), [a01] "+x"(a01), [a10] "+x"(a10), [a11] "+x"(a11), [a20] "+x"(a20), [a21] "+x"(a21),
        [a30] "+x"(a30), [a31] "+x"(a31), [wv] "=&x"(wv), [t0] "=&x"(t0), [t1] "=&x"(t1)
      : [x0] "x"(x0), [x1] "x"(x1), [o] "x"(ones), [w] "r"(w), "m"(*reinterpret_cast<const int8_t(*)[16]>(w)));
#undef EK_OUT7
}

// The fp32 values of one block-row tile, v[2i + h] = output 4r+i, token group h (the quad kernel's token order:
// h = 0 holds tokens 0-3 | 8-11, h = 1 tokens 4-7 | 12-15), GELU applied when asked, to all 8 vectors in
// lockstep. Multiply then add (no fmadd): the same two roundings as sparse_epilogue and the reference. Outputs
// past n are left zero.
inline void dequant7(const Gemm& g, const __m256i (&acc)[4][2], int64_t r, int nout, __m256 (&v)[8]) {
  const ek_packed* w = g.w;
  const ek_epilogue* ep = g.ep;
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    if (i >= nout) {
      v[2 * i] = v[2 * i + 1] = _mm256_setzero_ps();
      continue;
    }
    const int64_t j = 4 * r + i;
    const __m256i corr = _mm256_set1_epi32(ep->x_zp * w->rowsum[j]);
    const __m256 s = _mm256_set1_ps(ep->x_scale * ep->w_scale[j]);
    for (int h = 0; h < 2; ++h) {
      v[2 * i + h] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(acc[i][h], corr)), s);
      if (ep->bias) v[2 * i + h] = _mm256_add_ps(v[2 * i + h], _mm256_set1_ps(ep->bias[j]));
    }
  }
  if (ep->gelu) gelu256_n<8>(v);
}

// Epilogue of one block-row into a transposed y (output j's tokens contiguous). For u8, packus_epi32(q0, q1)
// puts the quad kernel's token order right by itself (0-3, 4-7 | 8-11, 12-15); for fp32 the halves are stored
// where they belong. Tokens past m land in y's padding columns (as in sparse_epilogue).
void sparse7_epilogue_t(const Gemm& g, const __m256i (&acc)[4][2], int64_t r, int64_t m0) {
  const ek_epilogue* ep = g.ep;
  const int nout = (int)std::min<int64_t>(4, g.w->info.n - 4 * r);
  __m256 v[8];
  dequant7(g, acc, r, nout, v);
  for (int i = 0; i < nout; ++i) {
    const int64_t j = 4 * r + i;
    if (ep->out_u8) {
      const __m256i p16 = _mm256_packus_epi32(_mm256_cvtps_epi32(requant_f(v[2 * i], ep)),
                                              _mm256_cvtps_epi32(requant_f(v[2 * i + 1], ep)));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint8_t*>(g.y) + j * g.ldy + m0),
                       _mm_packus_epi16(_mm256_castsi256_si128(p16), _mm256_extracti128_si256(p16, 1)));
    } else {
      float* y = static_cast<float*>(g.y) + j * g.ldy + m0;
      _mm256_storeu2_m128(y + 8, y, v[2 * i]);
      _mm256_storeu2_m128(y + 12, y + 4, v[2 * i + 1]);
    }
  }
}

// Epilogue of a full block-row (4 outputs) into a plain fp32 y (a token's 4 outputs contiguous; the QKV
// projection's layout). A 4x4 transpose inside each 128-bit lane of the 4 outputs' vectors gives, per lane,
// one token's 4 values: tokens k | 8+k from group 0 and 4+k | 12+k from group 1, each stored straight to its
// row (rows past m are skipped).
void sparse7_epilogue_f32(const Gemm& g, const __m256i (&acc)[4][2], int64_t r, int64_t m0) {
  __m256 v[8];
  dequant7(g, acc, r, 4, v);
  float* y = static_cast<float*>(g.y) + 4 * r;
  for (int h = 0; h < 2; ++h) {
    const __m256 t0 = _mm256_unpacklo_ps(v[h], v[2 + h]), t1 = _mm256_unpackhi_ps(v[h], v[2 + h]);
    const __m256 t2 = _mm256_unpacklo_ps(v[4 + h], v[6 + h]), t3 = _mm256_unpackhi_ps(v[4 + h], v[6 + h]);
    const __m256 rows[4] = {_mm256_shuffle_ps(t0, t2, 0x44), _mm256_shuffle_ps(t0, t2, 0xEE),
                            _mm256_shuffle_ps(t1, t3, 0x44), _mm256_shuffle_ps(t1, t3, 0xEE)};
    for (int k = 0; k < 4; ++k) {
      const int64_t lo = m0 + 4 * h + k, hi = lo + 8;  // the tokens in lane 0 and lane 1
      if (lo < g.m) _mm_storeu_ps(y + lo * g.ldy, _mm256_castps256_ps128(rows[k]));
      if (hi < g.m) _mm_storeu_ps(y + hi * g.ldy, _mm256_extractf128_ps(rows[k], 1));
    }
  }
}

void sparse7_tile(const Gemm& g, const uint8_t* xt, int64_t ldxt, int64_t r, int64_t m0) {
  const ek_packed* w = g.w;
  __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
  const __m256i ones = ones16();
  const int64_t q0 = w->row_ptr[r], q1 = w->row_ptr[r + 1];
  const int32_t* cols = w->quad_cols.data();
  const int8_t* wq = w->quad_w.data();
  const uint8_t* base = xt + m0;
  int64_t q = q0;
  for (; q + 2 <= q1; q += 2) {  // two quads per pass: independent gathers the core can overlap
    const int32_t* c = cols + 4 * q;
    __m256i x0, x1, x2, x3;
    quad_x(base + (int64_t)c[0] * ldxt, base + (int64_t)c[1] * ldxt, base + (int64_t)c[2] * ldxt,
           base + (int64_t)c[3] * ldxt, x0, x1);
    quad_x(base + (int64_t)c[4] * ldxt, base + (int64_t)c[5] * ldxt, base + (int64_t)c[6] * ldxt,
           base + (int64_t)c[7] * ldxt, x2, x3);
    quad_step(a00, a01, a10, a11, a20, a21, a30, a31, x0, x1, ones, wq + 16 * q);
    quad_step(a00, a01, a10, a11, a20, a21, a30, a31, x2, x3, ones, wq + 16 * q + 16);
  }
  for (; q < q1; ++q) {
    const int32_t* c = cols + 4 * q;
    __m256i x0, x1;
    quad_x(base + (int64_t)c[0] * ldxt, base + (int64_t)c[1] * ldxt, base + (int64_t)c[2] * ldxt,
           base + (int64_t)c[3] * ldxt, x0, x1);
    quad_step(a00, a01, a10, a11, a20, a21, a30, a31, x0, x1, ones, wq + 16 * q);
  }
  if (g.y_t && g.ep) {  // the engine's chained layout: no reordering needed, see sparse7_epilogue_t
    const __m256i acc[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
    sparse7_epilogue_t(g, acc, r, m0);
    return;
  }
  if (g.ep && !g.ep->out_u8 && 4 * r + 4 <= w->info.n) {  // plain fp32 y, a full block-row
    const __m256i acc[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
    sparse7_epilogue_f32(g, acc, r, m0);
    return;
  }
  // Back to token order: (0-3 | 8-11), (4-7 | 12-15) -> (0-7), (8-15).
  const __m256i acc[4][2] = {
      {_mm256_permute2x128_si256(a00, a01, 0x20), _mm256_permute2x128_si256(a00, a01, 0x31)},
      {_mm256_permute2x128_si256(a10, a11, 0x20), _mm256_permute2x128_si256(a10, a11, 0x31)},
      {_mm256_permute2x128_si256(a20, a21, 0x20), _mm256_permute2x128_si256(a20, a21, 0x31)},
      {_mm256_permute2x128_si256(a30, a31, 0x20), _mm256_permute2x128_si256(a30, a31, 0x31)}};
  sparse_epilogue(g, acc, r, m0);
}

// ---------------------------------------------------------------- fused quantise + transpose
struct QuantTCtx {
  const float* x;
  int64_t m, k, ldx, mp, ldxt;
  float scale;
  int32_t zp;
  uint8_t* xt;
};

inline __m256i quant8(const float* x, __m256 vs, __m256 vz) {
  __m256 v = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, vz), _mm256_setzero_ps()), _mm256_set1_ps(255.f));
  return _mm256_cvtps_epi32(v);
}

void quant_t_task(int64_t task, void* p) {  // the split is transpose_span's (see transpose_sse.h)
  const QuantTCtx& c = *static_cast<QuantTCtx*>(p);
  const __m256 vs = _mm256_set1_ps(c.scale), vz = _mm256_set1_ps((float)c.zp);
  transpose_span(
      task, c.m, c.mp, c.k, c.xt, c.ldxt,
      [&](int64_t i, int64_t col) {
        const float* xr = c.x + i * c.ldx + col;
        return pack16_u8(quant8(xr, vs, vz), quant8(xr + 8, vs, vz));
      },
      [&](int64_t i, int64_t col) { return quant1(c.x[i * c.ldx + col], c.scale, c.zp); });
}

struct PeakCtx {
  double seconds;
  double* macs;
};

void peak_task(int64_t i, void* p) {  // the 7-bit kernels' chain: vpmaddubsw + vpmaddwd(ones) + vpaddd, 8 accumulators
  PeakCtx& c = *static_cast<PeakCtx*>(p);
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  const __m256i x = _mm256_set1_epi8(3), y = _mm256_set1_epi8(5), ones = ones16();
  int64_t iters = 0;
  const auto t0 = std::chrono::steady_clock::now();
  double el = 0;
#define EK_PEAK7(T, A) "vpmaddubsw %[y], %[x], %[" T "]\n\tvpmaddwd %[o], %[" T "], %[" T "]\n\tvpaddd %[" T "], %[" A "], %[" A "]\n\t"
  do {
    for (int rep = 0; rep < 1000; ++rep) {
      __m256i t0v, t1v;
      asm(EK_PEAK7("t0", "a0") EK_PEAK7("t1", "a1") EK_PEAK7("t0", "a2") EK_PEAK7("t1", "a3")
          EK_PEAK7("t0", "a4") EK_PEAK7("t1", "a5") EK_PEAK7("t0", "a6") EK_PEAK7("t1", "a7")
          : [a0] "+x"(a0), [a1] "+x"(a1), [a2] "+x"(a2), [a3] "+x"(a3), [a4] "+x"(a4), [a5] "+x"(a5), [a6] "+x"(a6),
            [a7] "+x"(a7), [t0] "=&x"(t0v), [t1] "=&x"(t1v)
          : [x] "x"(x), [y] "x"(y), [o] "x"(ones));
    }
    iters += 1000;
    el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } while (el < c.seconds);
#undef EK_PEAK7
  const __m256i s = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3)),
                                     _mm256_add_epi32(_mm256_add_epi32(a4, a5), _mm256_add_epi32(a6, a7)));
  c.macs[i] = (_mm256_extract_epi32(s, 0) == 42 ? 1.0 : 0.0) + (double)iters * 8 * 32 / el;
}
}  // namespace

void gemm_u8s8(const Gemm& g) {
  if (g.w->info.pattern == EK_DENSE && g.w->w7)
    dense7(g);
  else if (g.w->info.pattern == EK_DENSE)
    dense(g);
  else
    sparse(g);
}

void quantize_u8_t(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* xt,
                   int64_t ldxt) {
  QuantTCtx c{x, m, k, ldx, (m + TM - 1) / TM * TM, ldxt, scale, zp, xt};
  parallel_for(transpose_tasks(c.mp, k), quant_t_task, &c);
}

double peak_macs(double seconds) {
  const int nt = std::min(num_threads(), kMaxPeakThreads);
  double macs[kMaxPeakThreads] = {};
  PeakCtx c{seconds, macs};
  parallel_for(nt, peak_task, &c);
  double total = 0;
  for (int i = 0; i < nt; ++i) total += macs[i];
  return total;
}
}  // namespace avx2
}  // namespace ek
