// The 4x1 VNNI kernel in the engine's layout (X transposed, u8 output transposed) reading its transposed X from
// 4 KB pages (malloc) or from ek_alloc_buffer's 2 MB pages, interleaved in one process: median and 10th
// percentile per call over 30 rounds of 50 calls, at 80%, 90% and 100% sparsity (100%: an all-zero weight, i.e. what
// the calls cost without any quad step). Built and run by xt_pages.sh. Usage: xt_pages K N THREADS [STRIDE]
// (STRIDE: bytes per transposed row, default 192 = 128 tokens padded to an odd number of lines, as the engine's).
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "edgekit/kernels.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: xt_pages K N THREADS [STRIDE]\n");
    return 2;
  }
  const int K = std::atoi(argv[1]), N = std::atoi(argv[2]);
  ek_set_num_threads(std::atoi(argv[3]));
  const int M = 128;
  const int64_t ld = argc > 4 ? std::atoi(argv[4]) : 192;
  if (ld < 128) {
    std::fprintf(stderr, "STRIDE must be >= 128 (the padded tokens)\n");
    return 2;
  }
  std::mt19937 rng(1);
  std::vector<int8_t> w0((size_t)N * K);
  for (auto& v : w0) v = (int8_t)(rng() % 256 - 128);
  const size_t xbytes = (size_t)K * ld;
  auto* small = static_cast<uint8_t*>(std::malloc(xbytes));  // glibc mmaps this size: 4 KB pages (THP "madvise")
  auto* huge = static_cast<uint8_t*>(ek_alloc_buffer(xbytes));
  for (size_t i = 0; i < xbytes; ++i) small[i] = huge[i] = (uint8_t)(rng() % 256);
  std::vector<uint8_t> yt((size_t)N * ld);
  std::vector<float> ws(N, 0.01f), bias(N, 0.5f);
  const ek_epilogue ep{0.02f, 3, ws.data(), bias.data(), 0, 1, 0.1f, 128};
  const double sps[] = {0.8, 0.9, 1.0};
  std::vector<ek_packed*> ps;
  std::uniform_real_distribution<double> u(0, 1);
  for (double s : sps) {
    std::vector<int8_t> w = w0;
    for (int r = 0; r < N / 4; ++r)
      for (int c = 0; c < K; ++c)
        if (u(rng) < s)
          for (int i = 0; i < 4; ++i) w[(size_t)(4 * r + i) * K + c] = 0;
    ps.push_back(ek_pack_s8(w.data(), N, K, EK_BLOCK_4X1));
  }
  const uint8_t* xs[2] = {small, huge};
  std::vector<double> t[3][2];
  for (int round = 0; round < 30; ++round)
    for (int i = 0; i < 3; ++i)
      for (int h = 0; h < 2; ++h) {
        for (int j = 0; j < 3; ++j) ek_gemm_u8s8_t(ps[i], xs[h], M, ld, 1, &ep, yt.data(), ld, 1);
        const int reps = 50;
        const auto a = std::chrono::steady_clock::now();
        for (int j = 0; j < reps; ++j) ek_gemm_u8s8_t(ps[i], xs[h], M, ld, 1, &ep, yt.data(), ld, 1);
        t[i][h].push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count() / reps * 1e6);
      }
  for (int i = 0; i < 3; ++i) {
    double med[2];
    for (int h = 0; h < 2; ++h) {
      auto v = t[i][h];
      std::sort(v.begin(), v.end());
      med[h] = v[v.size() / 2];
      std::printf("M=%d K=%d N=%d stride %ld 4x1 %.0f%% X^T on %s pages: median %.1f us, p10 %.1f us\n", M, K, N, (long)ld, 100 * sps[i],
                  h ? "2 MB" : "4 KB", med[h], v[v.size() / 10]);
    }
    std::printf("  4 KB / 2 MB time: %.2fx\n", med[0] / med[1]);
  }
  for (auto* p : ps) ek_packed_free(p);
  std::free(small);
  ek_free_buffer(huge);
  return 0;
}
