// AVX2 int8 GEMM, dense, for 7-bit weights (every weight in [-64, 64]): tiles of 6 rows x 16 outputs.
//
// vpmaddubsw's pair sums stay within int16 (2 * 255 * 64 = 32640), so it is exact, and vpmaddubsw +
// vpmaddwd(ones) + vpaddd gives 32 MACs in 3 uops (the 8-bit kernels' vpmaddwd + vpaddd: 16 in 2). W in the VNNI
// layout [n/16][k/4][16][4] bytes (pack_dense_k4), 4 bytes of an X row broadcast (no widening).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "avx2_int8.h"
#include "ukernels.h"

namespace ek {
namespace {

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
}  // namespace

void u8s7_gemm_6x16__avx2(const Gemm& g) {
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
}  // namespace ek
