// Attention for one (sequence, head) with AVX-512, register-blocked (the blocks are in f32_attention__avx512.h).
//
// K is transposed once per head into kt[d][np] (np = keys rounded up to 16, zero padded). Compiled with
// AVX-512 flags; the engine calls it only when the active kernel ISA is avx512 or higher and d % 16 == 0.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "f32_attention__avx512.h"
#include "edgekit/kernels.h"
#include "ukernels.h"

// q, k, v: row i of the sequence at q + i*ld (d floats); ctx row i at ctx + i*ldc. d % 16 == 0, d <= 128.
// Only query rows 0..nq-1 are computed (all n keys and values take part).
void ek::f32_attention__avx512(const float* q, const float* k, const float* v, int64_t ld, int64_t n, int64_t d,
                               float* ctx, int64_t ldc, int64_t nq) {
  const int64_t np = (n + 15) / 16 * 16;
  // Buffers from the kernels' per-thread scratch (no std containers in a unit built with ISA flags).
  float* kt = static_cast<float*>(ek_scratch(2, d * np * sizeof(float)));
  float* sc = static_cast<float*>(ek_scratch(3, 8 * np * sizeof(float)));
  float* vc = static_cast<float*>(ek_scratch(4, n * d * sizeof(float)));
  for (int64_t j0 = 0; j0 < np; j0 += 16)
    for (int64_t e0 = 0; e0 < d; e0 += 16) transpose16(k + j0 * ld + e0, ld, n - j0, kt + e0 * np + j0, np);
  // V rows packed contiguously: in the engine they sit 3 x hidden floats apart (4.6 KB for MiniLM), a stride that
  // maps a head's 128 rows onto a few L1 sets, so P V (which reads all of V once per block of query rows) missed
  // L1 on most loads (n = 128, d = 32, 12 heads at the engine's strides, one thread: 28.4 -> 21.9 us per head, min of a
  // standalone C++ loop; the K transpose went from scalar to 16 x 16 register blocks in the same change).
  for (int64_t j = 0; j < n; ++j)
    for (int64_t e = 0; e < d; e += 16) _mm512_storeu_ps(vc + j * d + e, _mm512_loadu_ps(v + j * ld + e));
  run_head(QK{q, ld, 1, kt, np}, VF{vc, d}, np, n, d, sc, ctx, ldc, nq);
}

// The same on transposed q, k, v: element e of token j at q[e * ldt + j] (the 4x1 kernels' transposed fp32 output;
// columns n .. n + 15 must be readable and finite: they are read for whole 16-key blocks, then masked). K^T is
// used in place; V is transposed to rows in 16 x 16 blocks.
void ek::f32_attention_t__avx512(const float* q, const float* k, const float* v, int64_t ldt, int64_t n, int64_t d,
                                 float* ctx, int64_t ldc, int64_t nq) {
  const int64_t np = (n + 15) / 16 * 16;
  float* sc = static_cast<float*>(ek_scratch(3, 8 * np * sizeof(float)));
  float* vc = static_cast<float*>(ek_scratch(4, np * d * sizeof(float)));
  for (int64_t j0 = 0; j0 < np; j0 += 16)
    for (int64_t e0 = 0; e0 < d; e0 += 16) transpose16(v + e0 * ldt + j0, ldt, 16, vc + j0 * d + e0, d);
  run_head(QK{q, 1, ldt, k, ldt}, VF{vc, d}, np, n, d, sc, ctx, ldc, nq);
}
