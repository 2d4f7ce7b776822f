// Standalone copy of the 4x1 VNNI quad loop (kernels/src/u8s8_gemm__avx512vnni.cpp), one thread, best of 200 passes
// over one 64-token tile: ns per quad (1,024 MACs). VARIANT 0 multiplies each XT row offset in the loop (4 imul per
// quad, the code before 70b5ce4); VARIANT 2 reads offsets multiplied beforehand (what the kernel does now).
// Usage: proto_quad K DENSITY [SAME]: SAME=1 keeps the same first columns in every block-row (XT rows stay in L1).
// Built and run by proto_quad.sh.
#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <vector>
#include <random>
#include <cstring>
#ifndef VARIANT
#define VARIANT 0
#endif
#define EK_QUAD_OUT(i)                                                                                        \
  "vpbroadcastd " #i "*4(%[w]), %%zmm0\n\t"                                                                   \
  "vpdpbusd %%zmm0, %[u0], %[a" #i "0]\n\t"                                                                    \
  "vpdpbusd %%zmm0, %[u1], %[a" #i "1]\n\t"                                                                    \
  "vpdpbusd %%zmm0, %[u2], %[a" #i "2]\n\t"                                                                    \
  "vpdpbusd %%zmm0, %[u3], %[a" #i "3]\n\t"
#define EK_QUAD_OUTS(i, j, WP)                                                                                    \
  asm(EK_QUAD_OUT(i) EK_QUAD_OUT(j)                                                                           \
      : [a##i##0] "+v"(a##i##0), [a##i##1] "+v"(a##i##1), [a##i##2] "+v"(a##i##2), [a##i##3] "+v"(a##i##3),     \
        [a##j##0] "+v"(a##j##0), [a##j##1] "+v"(a##j##1), [a##j##2] "+v"(a##j##2), [a##j##3] "+v"(a##j##3)      \
      : [u0] "v"(u0), [u1] "v"(u1), [u2] "v"(u2), [u3] "v"(u3), [w] "r"(WP)                          \
      : "xmm0", "memory")
#define LOADT(U0,U1,U2,U3,O0,O1,O2,O3) \
    asm("vmovdqu64 (%[x0], %[o0]), %[u0]\n\t" \
        "vmovdqu64 (%[x0], %[o1]), %[u1]\n\t" \
        "vmovdqu64 (%[x0], %[o2]), %[u2]\n\t" \
        "vmovdqu64 (%[x0], %[o3]), %[u3]\n\t" \
        "vpunpcklbw %[u1], %[u0], %%zmm1\n\t" \
        "vpunpckhbw %[u1], %[u0], %%zmm2\n\t" \
        "vpunpcklbw %[u3], %[u2], %%zmm3\n\t" \
        "vpunpckhbw %[u3], %[u2], %%zmm4\n\t" \
        "vpunpcklwd %%zmm3, %%zmm1, %[u0]\n\t" \
        "vpunpckhwd %%zmm3, %%zmm1, %[u1]\n\t" \
        "vpunpcklwd %%zmm4, %%zmm2, %[u2]\n\t" \
        "vpunpckhwd %%zmm4, %%zmm2, %[u3]" \
        : [u0] "=&v"(U0), [u1] "=&v"(U1), [u2] "=&v"(U2), [u3] "=&v"(U3) \
        : [x0] "r"(x0), [o0] "r"(O0), [o1] "r"(O1), [o2] "r"(O2), [o3] "r"(O3) \
        : "xmm1", "xmm2", "xmm3", "xmm4", "memory")

__attribute__((noinline)) void row(const uint8_t* x0, int64_t mp, const int32_t* cols, const int32_t* wq, int64_t q0, int64_t q1, int32_t* sink) {
  __m512i a00 = _mm512_setzero_si512(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00,
          a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
#if VARIANT == 0
  for (int64_t q = q0; q < q1; ++q) {
    const int32_t* c = cols + 4 * q;
    __m512i u0, u1, u2, u3;
    LOADT(u0,u1,u2,u3,(int64_t)c[0]*mp,(int64_t)c[1]*mp,(int64_t)c[2]*mp,(int64_t)c[3]*mp);
    EK_QUAD_OUTS(0, 1, wq + 4*q);
    EK_QUAD_OUTS(2, 3, wq + 4*q);
  }
#elif VARIANT == 2  // byte offsets precomputed
  for (int64_t q = q0; q < q1; ++q) {
    const int32_t* c = cols + 4 * q;   // here cols already hold byte offsets
    __m512i u0, u1, u2, u3;
    LOADT(u0,u1,u2,u3,(int64_t)c[0],(int64_t)c[1],(int64_t)c[2],(int64_t)c[3]);
    EK_QUAD_OUTS(0, 1, wq + 4*q);
    EK_QUAD_OUTS(2, 3, wq + 4*q);
  }
#endif
  __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a00,a01),_mm512_add_epi32(a02,a03)),_mm512_add_epi32(_mm512_add_epi32(a10,a11),_mm512_add_epi32(a12,a13)));
  s = _mm512_add_epi32(s,_mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a20,a21),_mm512_add_epi32(a22,a23)),_mm512_add_epi32(_mm512_add_epi32(a30,a31),_mm512_add_epi32(a32,a33))));
  _mm512_storeu_si512(sink, _mm512_add_epi32(_mm512_loadu_si512(sink), s));
}

int main(int argc, char** argv) {
  const int K = atoi(argv[1]); const double dens = atof(argv[2]); const int same = argc > 3 ? atoi(argv[3]) : 0;
  const int64_t mp = 192, nb = 384;
  std::mt19937 rng(1);
  std::vector<uint8_t> xt(K * mp + 64);
  for (auto& v : xt) v = rng() & 255;
  std::vector<int64_t> rp(nb + 1); std::vector<int32_t> cols; std::vector<int32_t> wq;
  for (int r = 0; r < nb; ++r) {
    rp[r] = cols.size() / 4;
    std::vector<int> keep;
    for (int c = 0; c < K; ++c) if ((same ? c < K * dens : (rng() % 10000) < dens * 10000)) keep.push_back(c);
    while (keep.size() % 4) keep.push_back(keep.back());
    for (int c : keep) cols.push_back(VARIANT == 2 ? c * mp : c);
    for (size_t i = 0; i < keep.size(); ++i) wq.push_back(rng());
  }
  rp[nb] = cols.size() / 4;
  alignas(64) int32_t sink[16] = {};
  const uint8_t* x0 = xt.data();
  double best = 1e9;
  for (int rep = 0; rep < 200; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < nb; ++r) row(x0, mp, cols.data(), wq.data(), rp[r], rp[r + 1], sink);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s < best) best = s;
  }
  printf("variant %d K %d dens %.2f same %d: quads %ld, best %.1f us, %.2f ns/quad (%d)\n", VARIANT, K, dens, same, (long)rp[nb], best * 1e6, best * 1e9 / rp[nb], sink[0]);
}
