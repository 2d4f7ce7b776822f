// AVX2 int8 GEMM, dense, exact for any int8 weights: tiles of 6 rows x 16 outputs.
//
// The usual AVX2 u8 x s8 instruction, vpmaddubsw, adds two products into a saturating int16, and
// 255 * 127 * 2 does not fit, so its results depend on the data (stock runtimes live with it or shrink the
// weights to 7 bits). Here both operands are widened to int16 and vpmaddwd adds each pair into an int32
// lane exactly (x0*w0 + x1*w1 <= 2 * 255 * 128), then vpaddd accumulates: 16 MACs in 2 uops.
//
// W packed [n/8][k/2][8 outputs][2 k] int16 (pack_dense_k2), one ymm = 8 outputs x 2 k. X is widened once per
// call to int16 rows; a row's (x[2q], x[2q+1]) pair is broadcast as one 32-bit word.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "avx2_int8.h"
#include "ukernels.h"

namespace ek {
namespace {

// acc += vpmaddwd(a, b). Inline asm ties acc to one register: with the intrinsics GCC 12 copies every
// accumulator through a scratch register (and one to the stack) on each pass of the sparse loop.
inline void madd_acc(__m256i& acc, __m256i a, __m256i b) {
  __m256i t;
  asm("vpmaddwd %[b], %[a], %[t]\n\tvpaddd %[t], %[acc], %[acc]" : [acc] "+x"(acc), [t] "=&x"(t) : [a] "x"(a), [b] "x"(b));
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
}  // namespace

void u8s8_gemm_6x16__avx2(const Gemm& g) {
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
}  // namespace ek
