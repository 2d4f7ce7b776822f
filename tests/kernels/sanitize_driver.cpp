// ASan + UBSan check of the kernels through the C ABI: every ISA path vs the reference path on edge
// and random shapes (int32 accumulators bit-exact), plus the fused epilogue and fp32 GEMMs.
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "edgekit/kernels.h"

static int failures = 0, extra_checks = 0;

static void check(bool ok, const char* what, long m, long k, long n, int isa) {
  if (!ok) {
    std::printf("FAIL %s m=%ld k=%ld n=%ld isa=%s\n", what, m, k, n, ek_isa_name((ek_isa)isa));
    ++failures;
  }
}

// The pool runs every task index exactly once, for any number of tasks against threads (each thread's own range
// first, then the others').
static void check_pool() {
  const int before = ek_get_num_threads();
  for (int threads : {1, 2, 3, 5}) {
    ek_set_num_threads(threads);
    for (long n : {0L, 1L, 2L, 3L, 4L, 7L, 100L, 1001L}) {
      for (int rep = 0; rep < 20; ++rep) {
        std::vector<std::atomic<int>> hits(n);
        for (auto& h : hits) h.store(0);
        ek_parallel_for(n, [](int64_t i, void* c) { (*static_cast<std::vector<std::atomic<int>>*>(c))[i]++; }, &hits);
        bool once = true;
        for (auto& h : hits) once = once && h.load() == 1;
        if (!once) {
          std::printf("FAIL parallel_for ran a task other than once: %ld tasks, %d threads\n", n, threads);
          ++failures;
        }
        ++extra_checks;
      }
    }
  }
  ek_set_num_threads(before);
}

// ek_alloc_buffer: zeroed, 64-byte aligned, 2 MB aligned from 64 KB up, whole buffer writable (ASan sees any
// overrun), NULL only when memory runs out.
static void check_buffers() {
  for (size_t bytes : {size_t(0), size_t(1), size_t(100), size_t(65535), size_t(65536), size_t(300000), size_t(5) << 20}) {
    auto* p = static_cast<unsigned char*>(ek_alloc_buffer(bytes));
    bool ok = p != nullptr && reinterpret_cast<uintptr_t>(p) % (bytes >= 65536 ? (2u << 20) : 64u) == 0;
    for (size_t i = 0; ok && i < bytes; ++i) ok = p[i] == 0;
    if (ok && bytes) std::memset(p, 0xab, bytes);
    ek_free_buffer(p);
    if (!ok) {
      std::printf("FAIL ek_alloc_buffer(%zu): null, misaligned or not zeroed\n", bytes);
      ++failures;
    }
    ++extra_checks;
  }
  ek_free_buffer(nullptr);
}

int main() {
  check_pool();
  check_buffers();
  std::mt19937 rng(7);
  const int best = ek_best_isa();
  const long shapes[][3] = {{1, 1, 1}, {1, 3, 4}, {2, 4, 5}, {6, 16, 16}, {7, 17, 15}, {65, 65, 67}, {130, 100, 20}};
  std::vector<std::vector<long>> all;
  for (auto& s : shapes) all.push_back({s[0], s[1], s[2]});
  for (int i = 0; i < 40; ++i) all.push_back({1 + (long)(rng() % 150), 1 + (long)(rng() % 200), 1 + (long)(rng() % 90)});
  for (auto& s : all) {
    const long m = s[0], k = s[1], n = s[2];
    std::vector<int8_t> w(n * k);
    std::vector<uint8_t> x(m * k);
    const float sp = (rng() % 100) / 100.0f;
    for (long r = 0; r < (n + 3) / 4; ++r)
      for (long c = 0; c < k; ++c) {
        const bool keep = (rng() % 1000) / 1000.0f >= sp;
        for (long i = 0; i < 4 && 4 * r + i < n; ++i) w[(4 * r + i) * k + c] = keep ? (int8_t)(rng() % 256 - 128) : 0;
      }
    for (auto& v : x) v = (uint8_t)(rng() % 256);
    const int32_t zp = rng() % 256;
    std::vector<float> ws(n, 1e-3f), bias(n, 0.5f), wf(n * k), xf(m * k);
    for (long i = 0; i < n * k; ++i) wf[i] = w[i] / 64.0f;
    for (long i = 0; i < m * k; ++i) xf[i] = x[i] / 128.0f - 1.0f;
    std::vector<int32_t> ref(m * n), got(m * n);
    std::vector<float> yref(m * n), y(m * n), fref(m * n), f(m * n);
    std::vector<uint8_t> qref(m * n), q(m * n);
    for (int isa = 0; isa <= best; ++isa) {
      ek_set_isa((ek_isa)isa);
      for (int pat = 0; pat < 2; ++pat) {
        ek_packed* p = ek_pack_s8(w.data(), n, k, (ek_pattern)pat);
        ek_packed* pf = ek_pack_f32(wf.data(), n, k, (ek_pattern)pat);
        ek_epilogue ep{0.02f, zp, ws.data(), bias.data(), 1, 0, 1.f, 0};
        ek_epilogue eq{0.02f, zp, ws.data(), bias.data(), 1, 1, 0.01f, 7};
        auto& acc = isa == 0 && pat == 0 ? ref : got;
        ek_gemm_u8s8_acc(p, x.data(), m, zp, acc.data());
        ek_gemm_u8s8(p, x.data(), m, k, &ep, (isa == 0 && pat == 0) ? yref.data() : y.data(), n);
        ek_gemm_u8s8(p, x.data(), m, k, &eq, (isa == 0 && pat == 0) ? qref.data() : q.data(), n);
        ek_gemm_f32(pf, xf.data(), m, k, bias.data(), 0, (isa == 0 && pat == 0) ? fref.data() : f.data(), n);
        if (!(isa == 0 && pat == 0)) {
          bool same = true, close = true, qclose = true, fclose = true;
          for (long i = 0; i < m * n; ++i) {
            same &= got[i] == ref[i];
            close &= std::fabs(y[i] - yref[i]) <= 1e-5f * (1 + std::fabs(yref[i]));
            qclose &= std::abs((int)q[i] - (int)qref[i]) <= 1;
            fclose &= std::fabs(f[i] - fref[i]) <= 1e-3f * (1 + std::fabs(fref[i]));
          }
          check(same, "int32 accumulators", m, k, n, isa);
          check(close, "fp32 epilogue", m, k, n, isa);
          check(qclose, "u8 epilogue", m, k, n, isa);
          check(fclose, "fp32 gemm", m, k, n, isa);
        }
        {  // transposed layouts: quantise-into-transposed, then the GEMM reading X^T and writing Y^T
          const long mp = ek_padded_m(m);
          std::vector<uint8_t> xq(m * k), xt(k * mp, 99), yp(m * n), yt(n * mp);
          ek_quantize_u8(xf.data(), m * k, 0.02f, zp, xq.data());
          ek_quantize_u8_t(xf.data(), m, k, k, 0.02f, zp, xt.data(), mp);
          bool tq = true, tg = true;
          for (long c = 0; c < k; ++c)
            for (long i = 0; i < mp; ++i) tq &= xt[c * mp + i] == (i < m ? xq[i * k + c] : 0);
          ek_gemm_u8s8(p, xq.data(), m, k, &eq, yp.data(), n);
          ek_gemm_u8s8_t(p, xt.data(), m, mp, 1, &eq, yt.data(), mp, 1);
          for (long i = 0; i < m; ++i)
            for (long j = 0; j < n; ++j) tg &= yt[j * mp + i] == yp[i * n + j];
          check(tq, "quantize_u8_t", m, k, n, isa);
          check(tg, "gemm_u8s8_t transposed in/out", m, k, n, isa);
          extra_checks += 2;
        }
        ek_packed_free(p);
        ek_packed_free(pf);
      }
    }
  }
  std::printf("%d passed, %d failed\n", (int)all.size() * (best + 1) * 2 + extra_checks - failures, failures);
  return failures ? 1 : 0;
}
