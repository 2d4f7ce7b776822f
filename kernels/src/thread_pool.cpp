// The kernels' thread pool: one per process (it lives in libedgekit.so, with the ISA state).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "internal.h"

namespace {
// A small persistent pool; the caller takes part in every job. Workers spin for a short while after a job
// (an encoder issues dozens of small GEMMs back to back, and waking a thread from a condition variable
// costs tens of microseconds), then sleep on a condition variable. The caller spins for completion.
// Tasks are split into one contiguous range per thread; a thread runs its own range first, then helps with the
// others' (taking from the same counters), so load stays balanced while, call after call, the same thread
// touches the same part of the output and of the weights and finds them in its own core's L2. (With one shared
// counter the tasks landed on either core at random: each core read all of a GEMM's weights and took the
// output's lines from the other core's cache. M = 128, K = 384, N = 1536 int8, 2 threads: see the README.)
// When another process holds a core, a worker is descheduled in the middle of a task now and then, and the caller,
// done with every other task, waits for that one for up to a scheduler slice; an encoder issues ~50 jobs per run, so
// those waits add up (2.5x the quiet latency measured with one core busy). The pool therefore watches that tail:
// the caller's wait for a worker that had started work, as a share of the job's time, over a window of jobs. When it
// stays over a threshold the caller runs the next jobs alone (the workers stay asleep), then tries the workers again.
class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop(); }
  int size() const { return nthreads_; }
  int64_t solo_jobs() const { return solo_jobs_.load(std::memory_order_relaxed); }
  void resize(int n) {
    if (n < 1) n = 1;
    if (n == nthreads_) return;
    std::lock_guard<std::mutex> serial(run_mu_);
    if (n == nthreads_) return;  // another caller resized to n while this one waited
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
    if (solo_left_ > 0) {  // the workers' cores were busy elsewhere lately: run this job on the caller alone
      --solo_left_;
      solo_jobs_.fetch_add(1, std::memory_order_relaxed);
      for (int64_t i = 0; i < n; ++i) fn(i, ctx);
      return;
    }
    const auto t0 = std::chrono::steady_clock::now();
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
    const int64_t mine = work(0);
    const auto t1 = std::chrono::steady_clock::now();
    for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
      if (spins < 4096) __builtin_ia32_pause();
      else std::this_thread::yield();
    }
    // The tail counts only when a worker took part (a worker still waking up took no task: no tail of ours).
    if (mine < n) {
      const auto t2 = std::chrono::steady_clock::now();
      window_tail_ += std::chrono::duration<double>(t2 - t1).count();
      window_total_ += std::chrono::duration<double>(t2 - t0).count();
    }
    if (++window_jobs_ == kWindowJobs) {
      // two windows in a row: a single slow window also happens on a quiet machine (an interrupt, a page fault)
      strikes_ = window_total_ > 0 && window_tail_ > kTailShare * window_total_ ? strikes_ + 1 : 0;
      if (strikes_ >= 2) {
        solo_left_ = kSoloJobs;
        strikes_ = 0;
      }
      window_jobs_ = 0;
      window_tail_ = window_total_ = 0;
    }
  }

 private:
  static constexpr double kSpinSeconds = 300e-6;
  // Solo mode: judged over kWindowJobs jobs; entered when the caller's wait for busy workers exceeds kTailShare of
  // those jobs' time in two windows in a row; lasts kSoloJobs jobs (a few encoder runs).
  static constexpr int kWindowJobs = 64;
  static constexpr double kTailShare = 0.25;
  static constexpr int kSoloJobs = 256;
  int64_t work(int self) {  // returns the number of tasks this thread ran
    int64_t done = 0;
    for (int d = 0; d < nthreads_; ++d) {
      Range& r = ranges_[(self + d) % nthreads_];
      for (int64_t i; (i = r.next.fetch_add(1, std::memory_order_relaxed)) < r.end; ++done) fn_(i, ctx_);
    }
    return done;
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
  int sleepers_ = 0;
  std::atomic<int64_t> solo_jobs_{0};  // jobs run on the caller alone, ever (read by solo_jobs())
  // solo-mode bookkeeping, touched by the caller under run_mu_ only
  int solo_left_ = 0, window_jobs_ = 0, strikes_ = 0;
  double window_tail_ = 0, window_total_ = 0;
  // Atomic: run()'s one-thread shortcut reads it without run_mu_ while another caller (an encoder with another
  // thread count) may be resizing; inside run_mu_ it cannot change.
  std::atomic<int> nthreads_{0};
};

Pool& pool() {
  static Pool p((int)std::max(1u, std::thread::hardware_concurrency()));
  return p;
}

}  // namespace

namespace ek {
void parallel_for(int64_t n, void (*fn)(int64_t, void*), void* ctx) { pool().run(n, fn, ctx); }
int num_threads() { return pool().size(); }
}  // namespace ek

extern "C" {
void ek_set_num_threads(int n) { pool().resize(n); }
int ek_get_num_threads(void) { return pool().size(); }
int64_t ek_pool_solo_jobs(void) { return pool().solo_jobs(); }
void ek_parallel_for(int64_t n, void (*fn)(int64_t, void*), void* ctx) { pool().run(n, fn, ctx); }
}
