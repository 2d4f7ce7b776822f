// CPU feature detection (cpuid + xgetbv, once), the ISA selector, the thread pool and the C ABI.
#include <cpuid.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "internal.h"
#include "transpose_sse.h"

namespace {
thread_local std::string g_error;

uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((uint64_t)hi << 32) | lo;
}

ek_isa detect() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return EK_ISA_REF;
  const bool osxsave = c & (1u << 27);
  if (!osxsave) return EK_ISA_REF;
  const uint64_t xcr0 = xgetbv0();
  const bool ymm_os = (xcr0 & 0x6) == 0x6, zmm_os = (xcr0 & 0xe6) == 0xe6;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return EK_ISA_REF;
  const bool avx2 = (b & (1u << 5)) && ymm_os;
  const bool avx512f = (b & (1u << 16)) && zmm_os, avx512bw = b & (1u << 30), avx512vl = b & (1u << 31);
  const bool vnni = c & (1u << 11);
  if (avx512f && avx512bw && avx512vl && vnni) return EK_ISA_AVX512_VNNI;
  if (avx512f && avx512bw && avx512vl) return EK_ISA_AVX512;
  if (avx2) return EK_ISA_AVX2;
  return EK_ISA_REF;
}

ek_isa g_best = detect();

ek_isa from_env() {
  const char* s = std::getenv("EDGEKIT_ISA");
  if (!s || !*s) return g_best;
  ek_isa want = g_best;
  if (!std::strcmp(s, "ref")) want = EK_ISA_REF;
  else if (!std::strcmp(s, "avx2")) want = EK_ISA_AVX2;
  else if (!std::strcmp(s, "avx512")) want = EK_ISA_AVX512;
  else if (!std::strcmp(s, "avx512_vnni")) want = EK_ISA_AVX512_VNNI;
  return want <= g_best ? want : g_best;  // never run a path the CPU lacks
}

std::atomic<int> g_active{(int)from_env()};

// A small persistent pool; the caller takes part in every job. Workers spin for a short while after a job
// (an encoder issues dozens of small GEMMs back to back, and waking a thread from a condition variable
// costs tens of microseconds), then sleep on a condition variable. The caller spins for completion.
// Tasks are split into one contiguous range per thread; a thread runs its own range first, then helps with the
// others' (taking from the same counters), so load stays balanced while, call after call, the same thread
// touches the same part of the output and of the weights and finds them in its own core's L2. (With one shared
// counter the tasks landed on either core at random: each core read all of a GEMM's weights and took the
// output's lines from the other core's cache. M = 128, K = 384, N = 1536 int8, 2 threads: see the README.)
class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop(); }
  int size() const { return nthreads_; }
  void resize(int n) {
    if (n < 1) n = 1;
    if (n == nthreads_) return;
    std::lock_guard<std::mutex> serial(run_mu_);
    stop();
    nthreads_ = n;
    quit_.store(false);
    // A worker starts from the generation current now: a job published before it first runs is still its.
    const uint64_t g0 = gen_.load();
    ranges_.reset(new Range[n]);
    for (int i = 1; i < n; ++i) workers_.emplace_back([this, g0, i] { loop(g0, i); });
  }
  void run(int64_t n, void (*fn)(int64_t, void*), void* ctx) {
    if (n <= 0) return;
    if (nthreads_ == 1 || n == 1) {
      for (int64_t i = 0; i < n; ++i) fn(i, ctx);
      return;
    }
    std::lock_guard<std::mutex> serial(run_mu_);  // one job at a time
    fn_ = fn;
    ctx_ = ctx;
    for (int t = 0; t < nthreads_; ++t) {
      ranges_[t].next.store(n * t / nthreads_, std::memory_order_relaxed);
      ranges_[t].end = n * (t + 1) / nthreads_;
    }
    pending_.store((int)workers_.size(), std::memory_order_relaxed);
    gen_.fetch_add(1, std::memory_order_seq_cst);  // publishes the job
    {
      std::lock_guard<std::mutex> lk(mu_);  // wakes sleepers; see loop() for why this cannot be missed
      if (sleepers_) cv_.notify_all();
    }
    work(0);
    for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
      if (spins < 4096) __builtin_ia32_pause();
      else std::this_thread::yield();
    }
  }

 private:
  static constexpr double kSpinSeconds = 300e-6;
  void work(int self) {
    for (int d = 0; d < nthreads_; ++d) {
      Range& r = ranges_[(self + d) % nthreads_];
      for (int64_t i; (i = r.next.fetch_add(1, std::memory_order_relaxed)) < r.end;) fn_(i, ctx_);
    }
  }
  void loop(uint64_t seen, int self) {
    for (;;) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 1; gen_.load(std::memory_order_acquire) == seen && !quit_.load(std::memory_order_relaxed); ++i) {
        __builtin_ia32_pause();
        if (i % 256 == 0 &&
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > kSpinSeconds)
          break;
      }
      if (gen_.load(std::memory_order_acquire) == seen && !quit_.load()) {
        // The predicate is checked under mu_ after ++sleepers_, and run() bumps gen_ before taking mu_, so
        // either this thread sees the new job here or run() sees sleepers_ > 0 and notifies.
        std::unique_lock<std::mutex> lk(mu_);
        ++sleepers_;
        cv_.wait(lk, [&] { return quit_.load() || gen_.load(std::memory_order_acquire) != seen; });
        --sleepers_;
      }
      if (quit_.load()) return;
      seen = gen_.load(std::memory_order_acquire);
      work(self);
      pending_.fetch_sub(1, std::memory_order_release);
    }
  }
  void stop() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      quit_.store(true);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }
  std::vector<std::thread> workers_;
  std::mutex mu_, run_mu_;
  std::condition_variable cv_;
  void (*fn_)(int64_t, void*) = nullptr;
  void* ctx_ = nullptr;
  struct alignas(64) Range {  // one cache line each: the counters are hot in different cores
    std::atomic<int64_t> next{0};
    int64_t end = 0;
  };
  std::unique_ptr<Range[]> ranges_;
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> gen_{0};
  std::atomic<bool> quit_{false};
  int sleepers_ = 0, nthreads_ = 0;
};

Pool& pool() {
  static Pool p((int)std::max(1u, std::thread::hardware_concurrency()));
  return p;
}

int check_common(const ek_packed* w, ek_wtype wt) {
  if (!w) return ek::fail(EK_EINVAL, "null packed weight");
  if (w->info.version != EK_PACK_VERSION)
    return ek::fail(EK_EMISMATCH, "packed weight has format version " + std::to_string(w->info.version) +
                                      ", expected " + std::to_string(EK_PACK_VERSION));
  if (w->info.wtype != wt) return ek::fail(EK_EMISMATCH, "packed weight has the wrong weight type for this GEMM");
  if (wt == EK_W_S8 && w->info.isa != ek_active_isa())
    return ek::fail(EK_EMISMATCH, std::string("weight was packed for ISA ") + ek_isa_name((ek_isa)w->info.isa) +
                                      " but the active ISA is " + ek_isa_name(ek_active_isa()) + "; repack it");
  return EK_OK;
}
}  // namespace

namespace ek {
void set_error(const std::string& msg) { g_error = msg; }
int fail(int code, const std::string& msg) {
  g_error = msg;
  return code;
}
void parallel_for(int64_t n, void (*fn)(int64_t, void*), void* ctx) { pool().run(n, fn, ctx); }
int num_threads() { return pool().size(); }
// Per-thread buffers from ek_alloc_buffer (64-byte aligned, so that transposed operands' 64-token rows fill whole
// cache lines; huge pages when large: the 4x1 kernels' gathers).
void* scratch(int slot, size_t bytes) {
  struct Buf {
    void* p = nullptr;
    size_t size = 0;
    ~Buf() { ek_free_buffer(p); }
  };
  static thread_local Buf bufs[8];
  Buf& b = bufs[slot & 7];
  if (b.size < bytes + 64) {
    ek_free_buffer(b.p);
    b.size = 0;
    b.p = ek_alloc_buffer(bytes + 64);
    if (!b.p) throw std::bad_alloc();
    b.size = bytes + 64;
  }
  return b.p;
}
}  // namespace ek

extern "C" {
ek_isa ek_best_isa(void) { return g_best; }
ek_isa ek_active_isa(void) { return (ek_isa)g_active.load(); }
int ek_set_isa(ek_isa isa) {
  if ((int)isa < 0 || isa > g_best) return ek::fail(EK_EUNSUPPORTED, std::string("this CPU cannot run ISA ") + ek_isa_name(isa));
  g_active.store((int)isa);
  return EK_OK;
}
const char* ek_isa_name(ek_isa isa) {
  switch (isa) {
    case EK_ISA_REF: return "ref";
    case EK_ISA_AVX2: return "avx2";
    case EK_ISA_AVX512: return "avx512";
    case EK_ISA_AVX512_VNNI: return "avx512_vnni";
  }
  return "unknown";
}
const char* ek_last_error(void) { return g_error.c_str(); }
void ek_set_num_threads(int n) { pool().resize(n); }
int ek_get_num_threads(void) { return pool().size(); }
void ek_parallel_for(int64_t n, void (*fn)(int64_t, void*), void* ctx) { pool().run(n, fn, ctx); }

// The 4x1 VNNI kernel addresses XT rows with 32-bit byte offsets (column x row stride): a transposed X, given or
// built from X, must stay below 2 GiB.
static int check_xt(const ek_packed* w, int64_t m, int64_t ldxt, const char* fn) {
  if (w->info.pattern != EK_BLOCK_4X1) return EK_OK;
  if (ldxt < 0) ldxt = ek::xt_stride(ek_padded_m(m));
  if (w->info.k * ldxt > INT32_MAX)
    return ek::fail(EK_EINVAL, std::string(fn) + ": x too large for the 4x1 kernels (k x padded m must be < 2^31)");
  return EK_OK;
}

static int run_u8s8(const ek::Gemm& g) {
  switch (ek_active_isa()) {
    case EK_ISA_AVX512_VNNI: ek::vnni::gemm_u8s8(g); break;
    case EK_ISA_AVX512: ek::generic_avx512::gemm_u8s8(g); break;
    case EK_ISA_AVX2: ek::avx2::gemm_u8s8(g); break;
    default: ek::ref::gemm_u8s8(g); break;
  }
  return EK_OK;
}

int ek_gemm_u8s8(const ek_packed* w, const uint8_t* x, int64_t m, int64_t ldx, const ek_epilogue* ep, void* y,
                 int64_t ldy) {
  if (int rc = check_common(w, EK_W_S8)) return rc;
  if (!x || !ep || !y || !ep->w_scale || m < 0 || ldx < w->info.k || ldy < w->info.n)
    return ek::fail(EK_EINVAL, "gemm_u8s8: bad pointers or strides");
  if (ep->out_u8 && !(ep->out_scale > 0.f)) return ek::fail(EK_EINVAL, "gemm_u8s8: out_scale must be positive");
  if (m == 0) return EK_OK;
  if (int rc = check_xt(w, m, -1, "gemm_u8s8")) return rc;
  ek::Gemm g{w, x, m, ldx, ep, y, ldy, ep->x_zp, nullptr};
  return run_u8s8(g);
}

int64_t ek_padded_m(int64_t m) { return m <= 0 ? 0 : (m + ek::vnni::kTokenTile - 1) / ek::vnni::kTokenTile * ek::vnni::kTokenTile; }

int ek_gemm_u8s8_t(const ek_packed* w, const uint8_t* x, int64_t m, int64_t ldx, int32_t x_t, const ek_epilogue* ep,
                   void* y, int64_t ldy, int32_t y_t) {
  if (int rc = check_common(w, EK_W_S8)) return rc;
  const int64_t k = w->info.k, n = w->info.n, mp = ek_padded_m(m);
  if (!x || !ep || !y || !ep->w_scale || m < 0) return ek::fail(EK_EINVAL, "gemm_u8s8_t: bad pointers");
  if (x_t ? ldx < mp : ldx < k) return ek::fail(EK_EINVAL, "gemm_u8s8_t: x stride too small for its layout");
  if (y_t ? ldy < mp : ldy < n) return ek::fail(EK_EINVAL, "gemm_u8s8_t: y stride too small for its layout");
  if (ep->out_u8 && !(ep->out_scale > 0.f)) return ek::fail(EK_EINVAL, "gemm_u8s8_t: out_scale must be positive");
  if (m == 0) return EK_OK;
  if (int rc = check_xt(w, m, x_t ? ldx : -1, "gemm_u8s8_t")) return rc;
  ek::Gemm g{w, x, m, ldx, ep, y, ldy, ep->x_zp, nullptr};
  const ek_isa isa = ek_active_isa();
  if ((isa == EK_ISA_AVX512_VNNI || isa == EK_ISA_AVX2) && w->info.pattern == EK_BLOCK_4X1) {
    g.x_t = x_t != 0;
    g.y_t = y_t != 0;
    return run_u8s8(g);
  }
  // Other paths: bring the operands to the plain layout and back.
  std::vector<uint8_t> xr;
  if (x_t) {
    xr.resize(m * k);
    for (int64_t c = 0; c < k; ++c)
      for (int64_t i = 0; i < m; ++i) xr[i * k + c] = x[c * ldx + i];
    g.x = xr.data();
    g.ldx = k;
  }
  const size_t esize = ep->out_u8 ? 1 : 4;
  std::vector<unsigned char> yr;
  if (y_t) {
    yr.resize(m * n * esize);
    g.y = yr.data();
    g.ldy = n;
  }
  if (int rc = run_u8s8(g)) return rc;
  if (y_t)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j)
        std::memcpy(static_cast<unsigned char*>(y) + (j * ldy + i) * esize, &yr[(i * n + j) * esize], esize);
  return EK_OK;
}

int ek_gemm_u8s8_acc(const ek_packed* w, const uint8_t* x, int64_t m, int32_t x_zp, int32_t* acc) {
  if (int rc = check_common(w, EK_W_S8)) return rc;
  if (!x || !acc || m < 0) return ek::fail(EK_EINVAL, "gemm_u8s8_acc: bad pointers");
  if (m == 0) return EK_OK;
  if (int rc = check_xt(w, m, -1, "gemm_u8s8_acc")) return rc;
  ek::Gemm g{w, x, m, w->info.k, nullptr, nullptr, 0, x_zp, acc};
  return run_u8s8(g);
}

int ek_gemm_f32(const ek_packed* w, const float* x, int64_t m, int64_t ldx, const float* bias, int32_t gelu,
                float* y, int64_t ldy) {
  if (int rc = check_common(w, EK_W_F32)) return rc;
  if (!x || !y || m < 0 || ldx < w->info.k || ldy < w->info.n) return ek::fail(EK_EINVAL, "gemm_f32: bad pointers or strides");
  switch (ek_active_isa()) {
    case EK_ISA_AVX512_VNNI:
    case EK_ISA_AVX512: ek::generic_avx512::gemm_f32(w, x, m, ldx, bias, gelu, y, ldy); break;
    case EK_ISA_AVX2: ek::generic_avx2::gemm_f32(w, x, m, ldx, bias, gelu, y, ldy); break;
    default: ek::ref::gemm_f32(w, x, m, ldx, bias, gelu, y, ldy); break;
  }
  return EK_OK;
}

void ek_quantize_u8(const float* x, int64_t n, float scale, int32_t zp, uint8_t* q) {
  switch (ek_active_isa()) {
    case EK_ISA_AVX512_VNNI:
    case EK_ISA_AVX512: ek::generic_avx512::quantize_u8(x, n, scale, zp, q); return;
    case EK_ISA_AVX2: ek::generic_avx2::quantize_u8(x, n, scale, zp, q); return;
    default: break;
  }
  for (int64_t i = 0; i < n; ++i) {
    float v = std::nearbyint(x[i] / scale) + (float)zp;
    q[i] = (uint8_t)(v < 0.f ? 0.f : (v > 255.f ? 255.f : v));
  }
}

int ek_gemm_u8s8_t_part(const ek_packed* w, const uint8_t* xt, int64_t m, int64_t ldxt, const ek_epilogue* ep,
                        void* y, int64_t ldy, int32_t y_t, int64_t tile0, int64_t tile1, int64_t n0, int64_t n1) {
  if (int rc = check_common(w, EK_W_S8)) return rc;
  const int64_t mp = ek_padded_m(m), n = w->info.n;
  if (!xt || !ep || !y || !ep->w_scale || m <= 0 || ldxt < mp || (y_t ? ldy < mp : ldy < n) || tile0 < 0 ||
      tile1 <= tile0 || tile1 * ek::vnni::kTokenTile > mp || n0 < 0 || n1 <= n0 || n1 > n || n0 % 4 ||
      (n1 % 4 && n1 != n))
    return ek::fail(EK_EINVAL, "gemm_u8s8_t_part: bad pointers, strides, tiles or output range");
  if (ep->out_u8 && !(ep->out_scale > 0.f)) return ek::fail(EK_EINVAL, "gemm_u8s8_t_part: out_scale must be positive");
  if (ek_active_isa() != EK_ISA_AVX512_VNNI || w->info.pattern != EK_BLOCK_4X1)
    return ek::fail(EK_EUNSUPPORTED, "gemm_u8s8_t_part: 4x1 sparse weights on the AVX-512 VNNI path only");
  if (int rc = check_xt(w, m, ldxt, "gemm_u8s8_t_part")) return rc;
  ek::Gemm g{w, xt, m, ldxt, ep, y, ldy, ep->x_zp, nullptr};
  g.x_t = true;
  g.y_t = y_t != 0;
  ek::vnni::gemm_u8s8_t_part(g, tile0, tile1, n0 / 4, (n1 + 3) / 4);
  return EK_OK;
}

int ek_gemm_u8s8_t_tile(const ek_packed* w, const uint8_t* xt, int64_t m, int64_t ldxt, const ek_epilogue* ep,
                        void* y, int64_t ldy, int32_t y_t, int64_t tile) {
  if (!w) return ek::fail(EK_EINVAL, "null packed weight");
  return ek_gemm_u8s8_t_part(w, xt, m, ldxt, ep, y, ldy, y_t, tile, tile + 1, 0, w->info.n);
}

int ek_quantize_u8_t_tile(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* xt,
                          int64_t ldxt, int64_t tile) {
  const int64_t mp = ek_padded_m(m);
  if (!x || !xt || m < 0 || k < 0 || ldx < k || ldxt < mp || tile < 0 || tile * ek::vnni::kTokenTile >= std::max<int64_t>(mp, 1))
    return ek::fail(EK_EINVAL, "quantize_u8_t_tile: bad pointers, strides or tile");
  if (!(scale > 0.f) || zp < 0 || zp > 255) return ek::fail(EK_EINVAL, "quantize_u8_t_tile: scale must be > 0 and zp in 0..255");
  if (ek_active_isa() != EK_ISA_AVX512_VNNI) return ek::fail(EK_EUNSUPPORTED, "quantize_u8_t_tile: AVX-512 VNNI path only");
  ek::vnni::quantize_u8_t_tile(x, m, k, ldx, scale, zp, xt, ldxt, tile);
  return EK_OK;
}

int ek_quantize_u8_t(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, int32_t zp, uint8_t* xt,
                     int64_t ldxt) {
  const int64_t mp = ek_padded_m(m);
  if (!x || !xt || m < 0 || k < 0 || ldx < k || ldxt < mp) return ek::fail(EK_EINVAL, "quantize_u8_t: bad pointers or strides");
  if (!(scale > 0.f) || zp < 0 || zp > 255) return ek::fail(EK_EINVAL, "quantize_u8_t: scale must be > 0 and zp in 0..255");
  if (ek_active_isa() == EK_ISA_AVX512_VNNI) {  // vectorised in the VNNI unit (compiled for that ISA)
    ek::vnni::quantize_u8_t(x, m, k, ldx, scale, zp, xt, ldxt);
    return EK_OK;
  }
  if (ek_active_isa() == EK_ISA_AVX2) {
    ek::avx2::quantize_u8_t(x, m, k, ldx, scale, zp, xt, ldxt);
    return EK_OK;
  }
  std::vector<uint8_t> row(k);
  for (int64_t i = 0; i < mp; ++i) {
    if (i < m) ek_quantize_u8(x + i * ldx, k, scale, zp, row.data());
    for (int64_t c = 0; c < k; ++c) xt[c * ldxt + i] = i < m ? row[c] : 0;
  }
  return EK_OK;
}

void* ek_scratch(int slot, size_t bytes) { return ek::scratch(slot, bytes); }

void* ek_alloc_buffer(size_t bytes) {
  constexpr size_t kHuge = size_t(2) << 20, kLarge = size_t(64) << 10;
  const bool large = bytes >= kLarge;
  const size_t size = large ? (bytes + kHuge - 1) / kHuge * kHuge : std::max<size_t>(bytes, 64);
  void* p = nullptr;
  if (posix_memalign(&p, large ? kHuge : 64, size) != 0) return nullptr;
#ifdef MADV_HUGEPAGE
  if (large) madvise(p, size, MADV_HUGEPAGE);  // advice only: without THP the buffer simply has 4 KB pages
#endif
  std::memset(p, 0, size);
  return p;
}
void ek_free_buffer(void* p) { free(p); }

double ek_peak_macs(double seconds) {
  switch (ek_active_isa()) {
    case EK_ISA_AVX512_VNNI: return ek::vnni::peak_macs(seconds);
    case EK_ISA_AVX2: return ek::avx2::peak_macs(seconds);
    default: return 0.0;
  }
}
}
