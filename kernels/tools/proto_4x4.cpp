// Prototype, not part of the library: a 4x4-block sparse int8 tile kernel on activations interleaved by groups of 4
// inputs (XT4: [k/4][64 tokens][4 bytes], the layout the 4x1 kernel's quad step builds with 8 byte/word unpacks on
// every quad), against the library's 4x1 kernel on the same weights (4x4-masked, packed as 4x1). One 64-token
// tile, one thread, fp32 transposed output; the two alternate within each round. Checks that both give the same
// values, prints the median times and the median per-round ratio. Build and run: kernels/tools/proto_4x4.sh.
//
// Per kept 4x4 block: 4 loads of 64 bytes (16 tokens x 4 inputs each, in token order), 4 weight broadcasts and 16
// vpdpbusd: 16 uops on the two 512-bit ports, 8 cycles per 1,024 MACs, against 24 uops (12 cycles) for a 4x1 quad.
// The accumulators come out in token order, so the epilogue needs no reordering either. (Broadcasting the weights
// inside each vpdpbusd, {1to16} from memory, made it 20 loads per block and slower than the 4x1 kernel.)
#include <edgekit/kernels.h>
#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>
#include <algorithm>

struct P44 { int n, k, nb; std::vector<int> row_ptr, grp; std::vector<int32_t> w; };  // w: per kept block 4 outputs x 4 bytes

#define QO(i) "vpbroadcastd " #i "*4(%[w]), %%zmm0\n\t" "vpdpbusd %%zmm0, %[u0], %[a" #i "0]\n\t" "vpdpbusd %%zmm0, %[u1], %[a" #i "1]\n\t" \
              "vpdpbusd %%zmm0, %[u2], %[a" #i "2]\n\t" "vpdpbusd %%zmm0, %[u3], %[a" #i "3]\n\t"
#define QOS(i, j) asm(QO(i) QO(j) : [a##i##0] "+v"(a##i##0), [a##i##1] "+v"(a##i##1), [a##i##2] "+v"(a##i##2), [a##i##3] "+v"(a##i##3), \
        [a##j##0] "+v"(a##j##0), [a##j##1] "+v"(a##j##1), [a##j##2] "+v"(a##j##2), [a##j##3] "+v"(a##j##3) \
      : [u0] "v"(u0), [u1] "v"(u1), [u2] "v"(u2), [u3] "v"(u3), [w] "r"(wp) : "xmm0", "memory")

void k44_tile(const P44& p, const uint8_t* xt4, const float* scale, const float* bias, int zp, const int32_t* rowsum, float* y) {
  for (int r = 0; r < p.nb; ++r) {
    __m512i a00 = _mm512_setzero_si512(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00,
            a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
    for (int b = p.row_ptr[r]; b < p.row_ptr[r + 1]; ++b) {
      const uint8_t* x = xt4 + (size_t)p.grp[b] * 256;
      const int32_t* wp = p.w.data() + 4 * b;
      __m512i u0 = _mm512_loadu_si512(x), u1 = _mm512_loadu_si512(x + 64), u2 = _mm512_loadu_si512(x + 128), u3 = _mm512_loadu_si512(x + 192);
      QOS(0, 1);
      QOS(2, 3);
    }
    const __m512i acc[4][4] = {{a00, a01, a02, a03}, {a10, a11, a12, a13}, {a20, a21, a22, a23}, {a30, a31, a32, a33}};
    for (int i = 0; i < 4; ++i) {
      const int j = 4 * r + i;
      const __m512i corr = _mm512_set1_epi32(zp * rowsum[j]);
      const __m512 s = _mm512_set1_ps(scale[j]), bb = _mm512_set1_ps(bias[j]);
      for (int L = 0; L < 4; ++L)
        _mm512_storeu_ps(y + j * 64 + 16 * L, _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i][L], corr)), s, bb));
    }
  }
}

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: proto_4x4 K N SPARSITY [ROUNDS]\n");
    return 2;
  }
  int k = atoi(argv[1]), n = atoi(argv[2]); double sp = atof(argv[3]); int rounds = argc > 4 ? atoi(argv[4]) : 15;
  std::mt19937 rng(1); std::uniform_real_distribution<double> u(0, 1);
  std::vector<int8_t> w(n * k, 0);
  P44 p{n, k, n / 4}; p.row_ptr.push_back(0);
  for (int r = 0; r < n / 4; ++r) {
    for (int g = 0; g < k / 4; ++g) {
      if (u(rng) < sp) continue;
      p.grp.push_back(g);
      for (int i = 0; i < 4; ++i) {
        int32_t word = 0;
        for (int c = 0; c < 4; ++c) { int8_t v = (int8_t)((rng() % 255) - 127); w[(4 * r + i) * k + 4 * g + c] = v; word |= (uint8_t)v << (8 * c); }
        p.w.push_back(word);
      }
    }
    p.row_ptr.push_back((int)p.grp.size());
  }
  std::vector<int32_t> rowsum(n, 0);
  for (int j = 0; j < n; ++j) for (int c = 0; c < k; ++c) rowsum[j] += w[j * k + c];
  std::vector<uint8_t> x(64 * k); for (auto& v : x) v = rng() & 255;  // x[t][c]
  std::vector<uint8_t> xt(k * 64), xt4(k * 64);
  for (int t = 0; t < 64; ++t) for (int c = 0; c < k; ++c) { xt[c * 64 + t] = x[t * k + c]; xt4[((c / 4) * 64 + t) * 4 + c % 4] = x[t * k + c]; }
  std::vector<float> ws(n, 1e-3f), bias(n, 0.1f), sc(n, 0.02f * 1e-3f), y1(n * 64), y2(n * 64);
  ek_packed* pk = ek_pack_s8(w.data(), n, k, EK_BLOCK_4X1);
  ek_epilogue ep{0.02f, 3, ws.data(), bias.data(), 0, 0, 1.f, 0};
  ek_gemm_u8s8_t_part(pk, xt.data(), 64, 64, &ep, y1.data(), 64, 1, 0, 1, 0, n);
  k44_tile(p, xt4.data(), sc.data(), bias.data(), 3, rowsum.data(), y2.data());
  double md = 0; for (int i = 0; i < n * 64; ++i) md = std::max(md, (double)std::fabs(y1[i] - y2[i]));
  std::vector<double> t1, t2;
  for (int rd = 0; rd < rounds; ++rd) {
    double b1 = 1e9, b2 = 1e9;
    for (int rep = 0; rep < 20; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      for (int it = 0; it < 10; ++it) ek_gemm_u8s8_t_part(pk, xt.data(), 64, 64, &ep, y1.data(), 64, 1, 0, 1, 0, n);
      b1 = std::min(b1, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 10);
      t0 = std::chrono::steady_clock::now();
      for (int it = 0; it < 10; ++it) k44_tile(p, xt4.data(), sc.data(), bias.data(), 3, rowsum.data(), y2.data());
      b2 = std::min(b2, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 10);
    }
    t1.push_back(b1); t2.push_back(b2);
  }
  std::vector<double> r; for (int i = 0; i < rounds; ++i) r.push_back(t2[i] / t1[i]);
  std::sort(r.begin(), r.end()); std::sort(t1.begin(), t1.end()); std::sort(t2.begin(), t2.end());
  printf("K=%d N=%d sp=%.2f blocks=%zu: 4x1 kernel %.1f us, 4x4 prototype %.1f us, ratio %.3f (max |diff| %.2g)\n", k, n, sp,
         p.grp.size(), t1[rounds / 2] * 1e6, t2[rounds / 2] * 1e6, r[rounds / 2], md);
  ek_packed_free(pk);
  return md == 0 ? 0 : 1;  // both are exact integer sums with the same fp32 epilogue: any difference is a bug
}
