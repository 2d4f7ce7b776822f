// The AVX-512 VNNI int8 instruction-rate peak (ek_peak_macs): vpdpbusd on 12 independent accumulators on every
// pool thread.
#include <immintrin.h>

#include <algorithm>
#include <chrono>

#include "internal.h"
#include "peak.h"
#include "ukernels.h"

namespace ek {
namespace {
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

double int8_peak__avx512vnni(double seconds) { return peak_macs<peak_task>(seconds); }
}  // namespace ek
