// The AVX2 int8 instruction-rate peak (ek_peak_macs): the 7-bit kernels' chain vpmaddubsw + vpmaddwd(ones) +
// vpaddd (32 exact MACs per 3 uops), the fastest exact int8 sequence AVX2 has; the 8-bit kernels' own
// instruction peak is lower.
#include <immintrin.h>

#include <algorithm>
#include <chrono>

#include "avx2_int8.h"
#include "peak.h"
#include "ukernels.h"

namespace ek {
namespace {
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

double int8_peak__avx2(double seconds) { return peak_macs<peak_task>(seconds); }
}  // namespace ek
