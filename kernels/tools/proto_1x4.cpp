// 1x4 blocks (1 output x 4 consecutive k) instead of 4x1: the same loop shape without unpacks, one thread, best of 300:
// ns per 1,024 MACs, to compare with proto_quad's ns per quad. Usage: proto_1x4 K DENSITY. Built by proto_quad.sh.
// X4 tile layout [k/4][64 tokens][4 bytes]: a block's 64 tokens are 4 zmm at offset g*256.
#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <vector>
#include <random>
__attribute__((noinline)) void row14(const uint8_t* x4, const int64_t* off, const int32_t* w, int64_t b0, int64_t b1, int32_t* sink) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, c0 = a0, c1 = a0, c2 = a0, c3 = a0;
  int64_t b = b0;
  for (; b + 2 <= b1; b += 2) {
    asm("vpbroadcastd (%[w]), %%zmm0\n\t"
        "vpbroadcastd 4(%[w]), %%zmm1\n\t"
        "vpdpbusd (%[x],%[o0]), %%zmm0, %[a0]\n\t"
        "vpdpbusd 64(%[x],%[o0]), %%zmm0, %[a1]\n\t"
        "vpdpbusd 128(%[x],%[o0]), %%zmm0, %[a2]\n\t"
        "vpdpbusd 192(%[x],%[o0]), %%zmm0, %[a3]\n\t"
        "vpdpbusd (%[x],%[o1]), %%zmm1, %[c0]\n\t"
        "vpdpbusd 64(%[x],%[o1]), %%zmm1, %[c1]\n\t"
        "vpdpbusd 128(%[x],%[o1]), %%zmm1, %[c2]\n\t"
        "vpdpbusd 192(%[x],%[o1]), %%zmm1, %[c3]\n\t"
        : [a0] "+v"(a0), [a1] "+v"(a1), [a2] "+v"(a2), [a3] "+v"(a3), [c0] "+v"(c0), [c1] "+v"(c1), [c2] "+v"(c2), [c3] "+v"(c3)
        : [x] "r"(x4), [o0] "r"(off[b]), [o1] "r"(off[b + 1]), [w] "r"(w + b)
        : "xmm0", "xmm1", "memory");
  }
  // (odd tail ignored in this timing harness)
  __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                               _mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3)));
  _mm512_storeu_si512(sink, _mm512_add_epi32(_mm512_loadu_si512(sink), s));
}
int main(int argc, char** argv) {
  const int K = atoi(argv[1]); const double dens = atof(argv[2]); const int N = 1536 * 384 / K;
  std::mt19937 rng(1);
  std::vector<uint8_t> x4(K / 4 * 256 + 64);
  for (auto& v : x4) v = rng() & 255;
  std::vector<int64_t> rp(N + 1), off; std::vector<int32_t> w;
  for (int j = 0; j < N; ++j) {
    rp[j] = off.size();
    for (int g = 0; g < K / 4; ++g) if ((rng() % 10000) < dens * 10000) { off.push_back(g * 256); w.push_back(rng()); }
    if ((off.size() - rp[j]) % 2) { off.push_back(off.back()); w.push_back(0); }
  }
  rp[N] = off.size();
  alignas(64) int32_t sink[16] = {};
  double best = 1e9;
  for (int rep = 0; rep < 300; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    for (int j = 0; j < N; ++j) row14(x4.data(), off.data(), w.data(), rp[j], rp[j + 1], sink);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s < best) best = s;
  }
  const double macs = (double)rp[N] * 256;
  printf("1x4 K %d N %d dens %.2f: blocks %ld, best %.1f us, %.2f ns per 1024 MAC (%d)\n", K, N, dens, (long)rp[N], best * 1e6, best * 1e9 / (macs / 1024), sink[0]);
}
